"""Manager settings, control addresses, jump hosts and the rendered ssh_config."""

import pytest

from orchestration.deployers.hostnet import control_address
from orchestration.render import render
from orchestration.settings import ManagerConfig
from orchestration.transports import JumpHost, SshOptions, SshTarget
from vrpipe.errors import SettingsError


def test_control_addresses_are_link_local_and_distinct():
    addresses = [control_address(i) for i in range(1, 1001)]
    assert len(set(addresses)) == 1000
    assert addresses[0] == "169.254.1.2" and all(a.startswith("169.254.") for a in addresses)
    assert "169.254.0.1" not in addresses
    with pytest.raises(ValueError):
        control_address(0)


def test_jump_hosts_parse_with_defaults():
    assert JumpHost.parse("10.0.0.1") == JumpHost("10.0.0.1", 22, "root")
    assert JumpHost.parse("admin@hv1:2222") == JumpHost("hv1", 2222, "admin")
    with pytest.raises(ValueError, match="not \\[user@\\]host\\[:port\\]"):
        JumpHost.parse("hv1:ssh")


def test_saved_settings_load_and_unknown_ones_are_named(tmp_path):
    ManagerConfig(tmp_path, host_netns="hv9").save()
    assert ManagerConfig.load(tmp_path, env={}).host_netns == "hv9"
    assert ManagerConfig.load(tmp_path, env={}).database == f"sqlite:///{tmp_path / 'vrpipe.db'}"
    (tmp_path / "config.json").write_text('{"colour": "red"}')
    with pytest.raises(SettingsError, match="unknown setting"):
        ManagerConfig.load(tmp_path, env={})
    (tmp_path / "config.json").write_text("[1]")
    with pytest.raises(SettingsError, match="expected a JSON object"):
        ManagerConfig.load(tmp_path, env={})
    (tmp_path / "config.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(SettingsError, match="cannot read"):
        ManagerConfig.load(tmp_path, env={})


def test_settings_precedence_and_origins(tmp_path):
    (tmp_path / "config.json").write_text('{"accel": "kvm", "lock_timeout": 5}')
    config = ManagerConfig.load(tmp_path, env={"VRPIPE_LOCK_TIMEOUT": "7"}, netns_prefix="x-")
    assert (config.accel, config.lock_timeout, config.netns_prefix) == ("kvm", 7.0, "x-")
    origins = config.resolved.origins
    assert origins["accel"].startswith("config file") and origins["lock_timeout"] == "environment VRPIPE_LOCK_TIMEOUT"
    assert origins["netns_prefix"] == "command line" and origins["host_netns"] == "default"
    assert config.host_netns is None and config.ssh_netns is None  # outside the lab: this host's network


@pytest.mark.parametrize(
    ("setting", "value", "complaint"),
    [
        ("database", "mysql://x", "database: .*sqlite"),
        ("accel", "hvf", "accel: .*not one of tcg, kvm"),
        ("lock_timeout", "-1", "lock_timeout: .*>= 0"),
        ("lock_timeout", "nan", "lock_timeout"),
        ("replay_health_wait", "1e308", "replay_health_wait: .*0 to 600 seconds"),
        ("replay_health_wait", "-0.5", "replay_health_wait: .*>= 0"),
        ("host_netns", "a\nb", "host_netns: .*control characters"),
        ("rootfs", "/x\x1b[31m", "rootfs: .*control characters"),
        ("host_netns", "../etc", "host_netns: .*namespace"),
    ],
)
def test_bad_settings_are_named(tmp_path, setting, value, complaint):
    with pytest.raises(SettingsError, match=complaint):
        ManagerConfig.load(tmp_path, env={}, **{setting: value})


def ssh_config(pinned, jump=None):
    target = SshTarget("r1", "169.254.1.2", jump=jump)
    return render(
        "ssh_config.j2",
        pinned=pinned,
        name="r1",
        target=target,
        key="/k",
        known_hosts="/kh",
        hypervisor_known_hosts="/hk",
        control_dir="/c",
        options=SshOptions(),
    )


def test_ssh_config_pins_the_host_key_once_known():
    assert "StrictHostKeyChecking accept-new" in ssh_config(pinned=False)
    config = ssh_config(pinned=True)
    assert "StrictHostKeyChecking yes" in config and "HostKeyAlias vr-r1" in config
    assert "PasswordAuthentication no" in config and "ProxyJump" not in config


def test_ssh_config_goes_through_the_jump_host():
    config = ssh_config(pinned=True, jump=JumpHost("198.51.100.2", 22, "root"))
    assert "ProxyJump hypervisor" in config
    assert "Host hypervisor\n  HostName 198.51.100.2\n  Port 22" in config
