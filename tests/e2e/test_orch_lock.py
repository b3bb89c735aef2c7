"""The per-router lock holds across manager processes: on SQLite (a file lock beside the database) and on
PostgreSQL (an advisory lock; the test starts Debian's postgresql server itself), two processes that send
to the same router take turns, and a router's lock does not hold up another router. The store's schema
migrations and its rules also work on PostgreSQL.
"""

import subprocess
import sys
from pathlib import Path

import pytest

from orchestration.commands import Command, validate
from orchestration.store import Store

from .orch_postgres import postgres_url  # noqa: F401 - fixture

pytestmark = pytest.mark.e2e
HOLDER = Path(__file__).with_name("orch_lock_holder.py")
PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'vrpipe.db'}"
    return request.getfixturevalue("postgres_url")


def hold(url, router, seconds):
    argv = [sys.executable, str(HOLDER), url, router, str(seconds)]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=PROJECT)


def interval(proc):
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    times = dict(line.split() for line in out.splitlines())
    return float(times["acquired"]), float(times["released"])


def test_two_processes_take_turns_on_one_router(store_url):
    Store(store_url).close()  # migrate once, so that neither process races to create the schema
    first, second = hold(store_url, "r1", 1.0), hold(store_url, "r1", 1.0)
    a, b = sorted([interval(first), interval(second)])
    assert a[1] <= b[0], f"both processes held router r1's lock at once: {a} and {b}"


def test_another_routers_lock_is_not_held_up(store_url):
    Store(store_url).close()
    first, second = hold(store_url, "r1", 2.0), hold(store_url, "r2", 2.0)
    a, b = sorted([interval(first), interval(second)])
    assert b[0] < a[1], "router r2 waited for router r1's lock"


def test_store_keeps_rules_on_postgresql(postgres_url):  # noqa: F811
    store = Store(postgres_url)
    try:
        store.add_router("pg1", "container", "169.254.1.9")
        guests = Command("add", "interfaces", {"guests": [{"device": "eth1", "gateway": "10.1.1.1/24"}]})
        dhcp = Command("add", "dhcp", {"mac": "02:00:00:00:00:01", "ip": "10.1.1.5", "hostname": "vm1"})
        store.record("pg1", validate([guests, dhcp], {}))
        assert store.state("pg1")["dhcp"] == [{**dhcp.data, "options": {}}]
        store.record("pg1", validate([Command("remove", "dhcp", {"mac": "02:00:00:00:00:01"})], store.state("pg1")))
        assert store.state("pg1")["dhcp"] == []
    finally:
        store.remove_router("pg1")
        store.close()
