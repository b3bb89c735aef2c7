"""Manager settings, control addresses, jump hosts and the rendered ssh_config."""

import pytest

from orchestration.deployers.hostnet import control_address
from orchestration.manager import ManagerConfig
from orchestration.render import render
from orchestration.transports import JumpHost, SshOptions, SshTarget


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
    assert ManagerConfig.load(tmp_path).host_netns == "hv9"
    assert ManagerConfig.load(tmp_path).database == f"sqlite:///{tmp_path / 'vrpipe.db'}"
    with pytest.raises(ValueError, match="unknown setting"):
        ManagerConfig.load(tmp_path, colour="red")
    with pytest.raises(ValueError, match="database"):
        ManagerConfig(tmp_path, database="mysql://x")


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
