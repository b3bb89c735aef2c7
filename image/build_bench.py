"""`invoke bench-build`: in one run, a cold build (no base layer kept, the .debs cached), a warm one (the
layer kept: what every build after a change to vr-scripts does, our packages installed again on top), each
into its own folder under build/bench-build, then the warm build's qcow2 and raw images booted; one line of
figures at the end.
"""

import shutil
import time

from repo.config import load as load_repo_config
from vrpipe.run import run

from .boot_bench import boot_images
from .build import build_template
from .config import load_config
from .paths import make_dirs


def bench_build(template_settings: dict | None, repo_settings: dict | None) -> bool:
    """False if an image did not boot. The .debs are hard-linked from the package cache, the layers not."""
    configured = load_config(template_settings)
    folder = configured.output_dir.parent / "bench-build"
    shutil.rmtree(folder, ignore_errors=True)
    cache = folder / "cache"
    make_dirs(cache)
    debs = configured.cache_dir / configured.suite
    if debs.is_dir():
        run(["cp", "-al", debs, cache / configured.suite])
    repo_config = load_repo_config(repo_settings)
    seconds = {}
    for kind in ("cold", "warm"):
        config = load_config(template_settings, output_dir=folder / kind, cache_dir=cache)
        started = time.monotonic()
        template = build_template(config, repo_config)
        seconds[kind] = time.monotonic() - started
        print(f"bench-build: {kind} build in {seconds[kind]:.1f} s", flush=True)
    ready = boot_images(template, folder / "boot")
    shown = " ".join(f"{suffix}_boot_ready_s={'none' if s is None else f'{s:.1f}'}" for suffix, s in ready.items())
    print(f"cold_s={seconds['cold']:.1f} warm_s={seconds['warm']:.1f} {shown}")
    return None not in ready.values()
