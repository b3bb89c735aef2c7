"""The per-router lock holds across manager processes: on SQLite (a file lock beside the database) and on
PostgreSQL (an advisory lock; the test starts Debian's postgresql server itself), two processes that send
to the same router take turns, and a router's lock does not hold up another router. The store's schema
migrations and its rules also work on PostgreSQL.
"""

import select
import subprocess
import sys
from pathlib import Path

import pytest

from orchestration.commands import Command, validate
from orchestration.deployers.hostnet import control_address
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


class Holder:
    """Another manager process that takes router's lock and holds it until released."""

    def __init__(self, url, router):
        argv = [sys.executable, str(HOLDER), url, router]
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=PROJECT
        )

    def said(self, word, timeout):
        """Whether the process said `word` within `timeout` seconds."""
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        return bool(ready) and self.proc.stdout.readline().strip() == word

    def release(self):
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        assert self.said("released", 30)
        self.proc.wait(30)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def holders():
    started = []
    yield lambda url, router: started.append(Holder(url, router)) or started[-1]
    for holder in started:
        holder.kill()


def test_two_processes_take_turns_on_one_router(store_url, holders):
    Store(store_url).close()  # migrate once, so that neither process races to create the schema
    first = holders(store_url, "r1")
    assert first.said("acquired", 60)
    second = holders(store_url, "r1")
    assert not second.said("acquired", 5), "a second process took router r1's lock while the first held it"
    first.release()
    assert second.said("acquired", 60)
    second.release()


def test_another_routers_lock_is_not_held_up(store_url, holders):
    Store(store_url).close()
    first = holders(store_url, "r1")
    assert first.said("acquired", 60)
    second = holders(store_url, "r2")
    assert second.said("acquired", 60), "router r2 waited for router r1's lock"
    second.release()
    first.release()


def test_store_keeps_rules_on_postgresql(postgres_url):  # noqa: F811
    store = Store(postgres_url)
    try:
        store.add_router("pg1", "container", control_address)
        guests = Command("add", "interfaces", {"guests": [{"device": "eth1", "gateway": "10.1.1.1/24"}]})
        dhcp = Command("add", "dhcp", {"mac": "02:00:00:00:00:01", "ip": "10.1.1.5", "hostname": "vm1"})
        store.record("pg1", validate([guests, dhcp], {}))
        assert store.state("pg1")["dhcp"] == [{**dhcp.data, "options": {}}]
        store.record("pg1", validate([Command("remove", "dhcp", {"mac": "02:00:00:00:00:01"})], store.state("pg1")))
        assert store.state("pg1")["dhcp"] == []
    finally:
        store.remove_router("pg1")
        store.close()
