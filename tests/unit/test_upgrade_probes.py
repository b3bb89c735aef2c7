"""The logic of an upgrade watched while it runs: a conntrack table flushed between two rounds (not entries
expiring a few at a time), the probes' counts as the outcome shows them, and the policy that fails the upgrade."""

import pytest
from vr.probes import Conntrack

from orchestration.upgrade.probes import ProbeCounts, ProbePolicy, problems
from vrpipe.errors import SettingsError


def test_a_flush_is_a_drop_by_more_than_half_and_by_at_least_ten_entries():
    table = Conntrack()
    for count in (40, 38, 35, 2, 3, 30, 21, 12, 8):  # 35 -> 2 is a flush; the rest expire or grow
        table.note(count)
    assert (table.first, table.low, table.high, table.last, table.flushes) == (40, 2, 40, 8, 1)
    small = Conntrack()
    for count in (9, 0, 5):  # too few entries to tell a flush from entries ending
        small.note(count)
    assert small.flushes == 0


def report(failed=0, flushes=0):
    target = {"probes": 50, "failed": failed, "first_error": "[Errno 111] Connection refused" if failed else ""}
    conntrack = {"first": 40, "low": 1, "high": 45, "last": 30, "flushes": flushes}
    return {"rounds": 50, "failures": failed + flushes, "targets": {"load-balancer web 192.0.2.1:80": target,
            "dns 10.1.1.1": {"probes": 50, "failed": 0, "first_error": ""}},
            "skipped": {"metadata 10.1.1.1": "timed out"}, "conntrack": conntrack}  # fmt: skip


def test_counts_name_the_targets_that_failed_and_the_policy_fails_the_upgrade_beyond_its_allowance():
    counts = ProbeCounts.from_report(report(failed=9, flushes=1))
    assert counts.failed == {"load-balancer web 192.0.2.1:80": 9}
    assert counts.text() == ("probes: 50 rounds, 10 failed (load-balancer web 192.0.2.1:80 9); "
                             "conntrack 40 -> 30 entries (low 1, 1 flush)")  # fmt: skip
    (problem,) = problems(counts, ProbePolicy(failures=3))
    assert problem.startswith("10 probes failed during the upgrade, more than the 3 allowed (load-balancer web")
    assert "Connection refused" in problem and "flushed 1x" in problem
    assert problems(counts, ProbePolicy(failures=10)) == []
    assert problems(ProbeCounts.from_report(report()), ProbePolicy()) == []


@pytest.mark.parametrize("interval, failures", [(0.01, 0), (11, 0), (0.2, -1)])
def test_a_bad_probe_policy_is_refused(interval, failures):
    with pytest.raises(SettingsError):
        ProbePolicy(interval, failures)
