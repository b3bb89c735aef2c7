"""The router's contract with the build and management sides: the SSH port, where the router's commands
and files are, the names of our packages and the archive keyring. image/, repo/ and orchestration/ read
these from here, so that the template, the packages and the manager cannot disagree.
"""

SSH_PORT = 3922  # the manager's SSH, on the control interface only
METRICS_PORT = 9185  # vr-metrics (Prometheus format), on the control interface only
BIN_DIR = "/opt/vr/bin"  # vr-apply, vr-cmd, vr-state, vr-health, vr-metadata, vr-metrics, vr-boot
LIB_DIR = "/opt/vr/lib"  # the engine (vr/)
BASE_PACKAGE = "vr-base"  # the Debian packages a router needs
ENGINE_PACKAGE = "vr-scripts"  # the engine and its commands
PACKAGES = (BASE_PACKAGE, ENGINE_PACKAGE)  # they carry the engine's version: what upgrades install and record
KEYRING_PACKAGE = "vr-archive-keyring"  # our archive's public keys, versioned by key changes (vr-base needs it)
ARCHIVE_KEYRING = "/etc/apt/keyrings/vrpipe-archive-keyring.gpg"  # what our apt sources' Signed-By names
PACKAGED_KEYRING = "/usr/share/keyrings/vr-archive-keyring.gpg"  # the keyring package's file; the above links to it
READY_FILE = "/run/vr/ready"  # written by vr-boot once the router is configured
BOOT_PARAMS_FILE = "/etc/vr/boot-params"  # boot parameters of a container router
FW_CFG_NAME = "opt/vr/cmdline"  # boot parameters of a VM, over qemu's fw_cfg
STATE_FILE = "/var/lib/vr/state.json"  # the persisted desired state
APPLY_LOG = "/var/log/vr/apply.log"
LEASES_FILE = "/var/lib/misc/dnsmasq.leases"


def command(name: str) -> str:
    """The path of one router command, e.g. command("vr-health")."""
    return f"{BIN_DIR}/{name}"
