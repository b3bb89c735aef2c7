"""Fixtures for the orchestration tests: a manager with its own store and state directory, and a lab around
it (hypervisor-host namespace, public namespace, VMs) whose routers are system containers booted from the
template rootfs. Names carry this process's id so that tests never touch a lab or another run.
"""

import os

import pytest

from orchestration.commands import Query
from orchestration.lab.lab import Lab
from orchestration.manager import Manager
from orchestration.settings import ManagerConfig

from .orch_rootfs import router_rootfs


def assert_healthy(client, name):
    """The router's health is ok; a failure names its problems. client: anything with query(name, Query)."""
    health = client.query(name, Query.HEALTH)
    assert health["ok"], health["problems"]


def manager_config(state_dir, database="", tag="a", **settings):
    prefix = f"vo{os.getpid() % 100000}{tag}"
    defaults = dict(host_netns=f"{prefix}hv", ssh_netns=f"{prefix}hv", netns_prefix=f"{prefix}-")
    return ManagerConfig(state_dir, database=database, rootfs=router_rootfs(), **{**defaults, **settings})


def open_lab(state_dir, database="", tag="a", **settings):
    """A manager and its lab (public namespace up); the caller closes both with `close_lab`."""
    config = manager_config(state_dir, database, tag, **settings)
    manager = Manager(config)
    lab = Lab(manager, config.netns_prefix)
    try:
        lab.up_public()
    except Exception:
        close_lab(manager, lab)
        raise
    return manager, lab


def close_lab(manager, lab):
    try:
        lab.down()
    finally:
        manager.close()


@pytest.fixture(scope="module")
def orch_lab(tmp_path_factory):
    """(manager, lab) for one test module; everything it made is removed afterwards."""
    manager, lab = open_lab(tmp_path_factory.mktemp("manager"))
    yield manager, lab
    close_lab(manager, lab)
