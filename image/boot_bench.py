"""`invoke bench-boot`: boot the template's qcow2 and raw images one after the other (one VM at a time)
and print each one's boot-to-ready time (qemu start to vr-boot's ready line), when SSH first answered
(at most 2 s late: it is tried every 2 s), the five slowest units of `systemd-analyze blame` and any unit
failure shown on the serial console.
"""

import os
import time
from pathlib import Path

from repo.config import load as load_repo_config
from vrpipe.errors import VrpipeError

from .boot_test import accelerator, booted, console_failures, make_key, router_params
from .build import STAMP, Template, is_built
from .config import load_config

IMAGES = (("qcow2", "qcow2"), ("raw", "raw"))  # (file suffix, qemu format)


def bench_boot(template_settings: dict | None, repo_settings: dict | None) -> bool:
    """Boot each image of the template finished in template.output_dir (whichever build made it, the
    tests' included: this builds nothing); False if there is none or an image does not boot."""
    config = load_config(template_settings)
    template = Template(config.output_dir)
    if not (template.folder / STAMP).exists():
        raise VrpipeError(f"no finished template in {template.folder}", hint="run invoke build-template first")
    current = "current" if is_built(config, load_repo_config(repo_settings)) else "NOT current (other inputs)"
    print(f"bench-boot: {template.folder}, {current}")
    return None not in boot_images(template, template.folder.parent / "bench-boot").values()


def boot_images(template: Template, folder: Path) -> dict[str, float | None]:
    """Boot each of IMAGES, printing its figures; {suffix: seconds to ready, None if it did not boot}."""
    os.sync()  # a build's gigabytes of images still being written out would slow the boots down
    folder.mkdir(exist_ok=True)
    private, public = make_key(folder)
    accel = accelerator(template.kernel)
    ready: dict[str, float | None] = {}
    for suffix, fmt in IMAGES:
        params = router_params(public, f"bench-{suffix}")
        try:
            with booted(template.output(suffix), fmt, params, private, folder, accel=accel) as vm:
                at_ready = time.monotonic()
                vm.wait_for_ssh()
                ssh_s = vm.seconds_to_ready + time.monotonic() - at_ready
                # blame answers only once systemd has finished starting up
                blame = vm.ssh("sh", "-c", "systemctl is-system-running --wait >/dev/null; systemd-analyze blame")
                failures = console_failures(vm.serial.read_text(errors="replace"))
                ready[suffix] = vm.seconds_to_ready
                print(f"{suffix}: boot_ready_s={vm.seconds_to_ready:.1f} ssh_s={ssh_s:.1f} accel={accel}")
        except Exception as e:  # one image failing to boot is a result: report it, go on with the next
            print(f"{suffix}: did not boot: {e}")
            ready[suffix] = None
            continue
        print("  slowest units: " + ", ".join(" ".join(line.split()[::-1]) for line in blame.splitlines()[:5]))
        print(f"  console failures: {len(failures)}" + "".join(f"\n    {line}" for line in failures))
    return ready
