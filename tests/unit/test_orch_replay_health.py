"""The replay's health gate: a router that becomes healthy within replay_health_wait passes it; one
still unhealthy then fails the replay with the problems of its last answer."""

import pytest

from orchestration.commands import Query
from orchestration.manager import Manager, ReplayFailed
from orchestration.resource import ApplyOutcome
from orchestration.settings import ManagerConfig


class LateRouter:
    """A routing resource whose router answers health with a problem `unhealthy` times, then ok."""

    def __init__(self, unhealthy: int):
        self.unhealthy, self.asked = unhealthy, 0

    def apply_state(self, name, state):
        return ApplyOutcome(ok=True, answers=(), result={"ok": True})

    def query(self, name, query):
        assert query is Query.HEALTH
        self.asked += 1
        if self.asked <= self.unhealthy:
            return {"ok": False, "problems": ["dns: no answer from 10.1.1.1:53"]}
        return {"ok": True, "problems": []}


def manager(tmp_path, monkeypatch, wait, router):
    m = Manager(ManagerConfig(tmp_path, replay_health_wait=wait))
    m.resource = router
    monkeypatch.setattr(m, "member_state", lambda name: {})
    monkeypatch.setattr("orchestration.manager.time.sleep", lambda seconds: None)
    return m


def test_a_router_healthy_a_moment_after_its_replay_passes(tmp_path, monkeypatch):
    router = LateRouter(unhealthy=2)
    assert manager(tmp_path, monkeypatch, 30.0, router)._replay_one("r1").ok
    assert router.asked == 3


def test_a_router_still_unhealthy_after_the_wait_fails_the_replay_naming_the_check(tmp_path, monkeypatch):
    router = LateRouter(unhealthy=10**6)
    with pytest.raises(ReplayFailed, match="unhealthy after replay: dns: no answer"):
        manager(tmp_path, monkeypatch, 0.0, router)._replay_one("r1")
    assert router.asked == 1
