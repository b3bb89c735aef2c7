"""The template's disk images boot in qemu from their own bootloaders: the qcow2 image (BIOS) is checked over
SSH with the key from its boot parameters (version, services, health, host key, console, apt source, password
login, applying a state document) while the raw (BIOS and UEFI), vhd and vmdk images boot to ready next to it,
two at a time, each checked by a test of its own at the end.
"""

import json
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from image.boot_test import SLIRP_ADDRESS, accelerator, booted, console_failures, make_key, router_params
from vrpipe.errors import CommandError
from vrpipe.run import run

from .image_fixtures import TEST_CACHE, scratch, shared_template

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
# Three TCG VMs at once at most: the qcow2 router and two of the other images.
OTHERS_AT_ONCE = 2
# booted()'s allowance for one VM, stretched by how many VMs share each core
BOOT_TIMEOUT = 400 * max(1.0, (OTHERS_AT_ONCE + 1) / (os.cpu_count() or 1))
GUEST_MAC = "52:54:00:12:34:56"
STATE = {
    "schema": 1,
    "kind": "state",
    "state": {
        "interfaces": {
            "control": {"device": "eth0", "address": SLIRP_ADDRESS},
            "public": [{"device": "eth1", "addresses": ["203.0.113.10/24"], "gateway": "203.0.113.1"}],
            "guests": [{"device": "eth2", "gateway": "10.1.1.1/24", "domain": "cloud.internal"}],
        },
        "firewall": [
            {"direction": "ingress", "public_ip": "203.0.113.10", "protocol": "tcp", "ports": 2201,
             "cidrs": ["198.51.100.0/24"]}
        ],
        "dhcp": [{"mac": GUEST_MAC, "ip": "10.1.1.5", "hostname": "vm1"}],
    },
}


@pytest.fixture(scope="module")
def template():
    return shared_template()


@pytest.fixture(scope="module")
def key():
    return make_key(scratch("ssh"))


def record(name, seconds):
    """Boot-to-ready times, for the build's report (measured with the other boots running alongside)."""
    path = TEST_CACHE / "boot-seconds.json"
    times = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**times, name: round(seconds)}, indent=1))


# name -> (file suffix, qemu format, UEFI)
OTHER_IMAGES = {
    "raw": ("raw", "raw", False),
    "raw-uefi": ("raw", "raw", True),
    "vhd": ("vhd", "vpc", False),
    "vmdk": ("vmdk", "vmdk", False),
}


@dataclass(frozen=True)
class Boot:
    """What one image's boot to ready left behind."""

    seconds: float
    serial: str


def boot_to_ready(template, key, name) -> Boot:
    suffix, fmt, uefi = OTHER_IMAGES[name]
    private, public = key
    with booted(template.output(suffix), fmt, router_params(public, f"r-{name}"), private, scratch(name),
                accel=accelerator(template.kernel), uefi=uefi, timeout=BOOT_TIMEOUT) as vm:
        return Boot(vm.seconds_to_ready, vm.serial.read_text(errors="replace"))


@pytest.fixture(scope="module")
def other_boots(template, key) -> dict[str, Future[Boot]]:
    """The other images' boots, all started now in threads (OTHERS_AT_ONCE at a time); each image's test
    waits for its own. Boots not yet begun are dropped if the module ends first."""
    accelerator(template.kernel)  # probed once, before the threads
    pool = ThreadPoolExecutor(max_workers=OTHERS_AT_ONCE, thread_name_prefix="boot")
    try:
        yield {name: pool.submit(boot_to_ready, template, key, name) for name in OTHER_IMAGES}
    finally:
        pool.shutdown(cancel_futures=True)


@pytest.fixture(scope="module")
def router(template, key, other_boots):
    """The qcow2 image booted once for this module, while the other images boot (other_boots starts them
    first); NICs 2 and 3 stand for the public and guest networks."""
    private, public = key
    with booted(template.output("qcow2"), "qcow2", router_params(public, "r1"), private, scratch("qcow2"),
                accel=accelerator(template.kernel), nics=3, timeout=BOOT_TIMEOUT) as vm:
        record("qcow2", vm.seconds_to_ready)
        vm.wait_for_ssh(timeout=BOOT_TIMEOUT / 4)
        yield vm


@pytest.fixture(scope="module")
def applied(router):
    """A state with a guest network, applied over SSH with vr-apply reading it from standard input."""
    return json.loads(router.ssh("/opt/vr/bin/vr-apply", "-", input_text=json.dumps(STATE)))


def test_qcow2_boots_to_ready_with_its_boot_parameters(router):
    assert router.ssh("cat", "/etc/hostname").strip() == "r1"
    assert router.ssh("hostname").strip() == "r1"
    ready = json.loads(router.ssh("cat", "/run/vr/ready"))
    assert ready["hostname"] == "r1"


def test_vr_scripts_is_the_version_in_our_repository(router, template):
    installed = router.ssh("dpkg-query", "-W", "-f", "${Version}", "vr-scripts").strip()
    manifest = json.loads((template.folder / "manifest.json").read_text())
    published = run(["reprepro", "-b", str(TEST_CACHE / "repo"), "list", "stable", "vr-scripts"]).stdout
    assert installed == manifest["vrpipe_packages"]["vr-scripts"]
    assert f"vr-scripts {installed}" in published


def test_ssh_dnsmasq_and_metadata_are_active_and_nothing_failed(router, applied):
    for unit in ("ssh", "dnsmasq", "vr-metadata", "vr-boot"):
        assert router.ssh("systemctl", "is-active", unit).strip() == "active", unit
    assert router.ssh("systemctl", "--failed", "--no-legend", "--plain").strip() == ""


def test_no_driver_for_the_emulated_pcs_legacy_devices_is_loaded(router):
    loaded = {line.split()[0] for line in router.ssh("cat", "/proc/modules").splitlines()}
    assert loaded.isdisjoint({"floppy", "parport_pc", "pcspkr", "kvm", "i2c_piix4"}), sorted(loaded)
    assert "virtio_net" in loaded  # the NIC drivers still load


def test_vr_health_is_ok(router, applied):
    health = json.loads(router.ssh("/opt/vr/bin/vr-health"))
    assert health["ok"], health


def test_first_boot_made_its_own_machine_id_and_one_ed25519_host_key(router):
    machine_id = router.ssh("cat", "/etc/machine-id").strip()
    assert len(machine_id) == 32 and machine_id != "uninitialized"
    # committed to the disk, no longer systemd's transient bind mount: the next boot keeps it
    assert router.ssh("sh", "-c", "findmnt --noheadings /etc/machine-id || true").strip() == ""
    keys = router.ssh("sh", "-c", "ls /etc/ssh | grep ^ssh_host_").split()
    assert keys == ["ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"]


def test_no_unit_or_generator_fails_on_the_console(router, applied):
    assert console_failures(router.serial.read_text(errors="replace")) == []


def test_apt_source_uses_signed_by_with_our_keyring(router):
    source = router.ssh("cat", "/etc/apt/sources.list.d/vrpipe.sources")
    assert "Signed-By: /etc/apt/keyrings/vrpipe-archive-keyring.gpg" in source
    assert router.ssh("test", "-s", "/etc/apt/keyrings/vrpipe-archive-keyring.gpg") == ""


def test_password_login_is_refused(router):
    argv = ["ssh", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
            "-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password,keyboard-interactive",
            "-p", str(router.ssh_port), "root@127.0.0.1", "true"]
    with pytest.raises(CommandError) as refused:
        run(argv, timeout=60)
    assert "Permission denied (publickey)" in refused.value.output


def test_a_state_document_applied_over_ssh_reaches_nftables(router, applied):
    assert applied["ok"], applied
    ruleset = router.ssh("nft", "list", "ruleset")
    assert "203.0.113.10 . tcp . 2201 . 198.51.100.0/24" in ruleset


@pytest.mark.parametrize("name", OTHER_IMAGES)
def test_image_boots_to_ready_with_its_boot_parameters(other_boots, name):
    boot = other_boots[name].result()
    record(name, boot.seconds)
    assert f"vr-boot: ready: r-{name} " in boot.serial
    assert console_failures(boot.serial) == []
