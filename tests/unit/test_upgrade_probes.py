"""The logic of an upgrade watched while it runs: a conntrack table flushed between two rounds (not entries
expiring a few at a time), a target's longest outage, the probes' counts as the outcome shows them, and the
policy that fails the upgrade."""

import pytest
from vr.probes import Conntrack, Watched

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


def test_an_outage_lasts_from_the_first_failed_probe_to_the_next_that_passed():
    target = Watched()
    for now, error in ((0.0, ""), (0.2, "refused"), (0.4, "refused"), (0.6, ""), (0.8, "refused"), (0.9, "")):
        target.note(error, now)
    assert (target.probes, target.failed, target.first_error, target.longest_outage) == (6, 3, "refused", 0.4)
    target.note("timed out", 1.0)
    target.end_outage(3.5)  # still down when the watch ended
    assert target.longest_outage == 2.5 and "down_since" not in target.to_json()


def report(failed=0, outage=0.0, flushes=0):
    target = {"probes": 50, "failed": failed, "first_error": "[Errno 111] Connection refused" if failed else "",
              "longest_outage": outage}  # fmt: skip
    conntrack = {"first": 40, "low": 1, "high": 45, "last": 30, "flushes": flushes}
    return {"rounds": 50, "failures": failed + flushes, "targets": {"load-balancer web 192.0.2.1:80": target,
            "dns 10.1.1.1": {"probes": 50, "failed": 0, "first_error": "", "longest_outage": 0.0}},
            "skipped": {"metadata 10.1.1.1": "timed out"}, "conntrack": conntrack}  # fmt: skip


def test_counts_name_the_targets_that_failed_and_the_policy_fails_an_outage_or_a_flush_beyond_its_allowance():
    counts = ProbeCounts.from_report(report(failed=9, outage=2.2, flushes=1))
    assert counts.failed == {"load-balancer web 192.0.2.1:80": 9}
    assert counts.text() == ("probes: 50 rounds, 10 failed (load-balancer web 192.0.2.1:80 9, 2.2s); "
                             "conntrack 40 -> 30 entries (low 1, 1 flush)")  # fmt: skip
    outage, flush = problems(counts, ProbePolicy(outage=1.0))
    assert outage == ("load-balancer web 192.0.2.1:80 unanswered for 2.2s during the upgrade, more than the 1s "
                      "allowed (9 probes failed: [Errno 111] Connection refused)")  # fmt: skip
    assert flush == "the conntrack table was flushed 1x during the upgrade (0 allowed)"
    assert problems(counts, ProbePolicy(outage=3.0, flushes=1)) == []
    assert problems(ProbeCounts.from_report(report(failed=2, outage=0.4)), ProbePolicy()) == []


@pytest.mark.parametrize(
    "interval, outage, flushes, timeout",
    [(0.01, 1, 0, 1), (11, 1, 0, 1), (0.2, -1, 0, 1), (0.2, 1, -1, 1), (0.2, 1, 0, 0), (0.2, 1, 0, 31)],
)
def test_a_bad_probe_policy_is_refused(interval, outage, flushes, timeout):
    with pytest.raises(SettingsError):
        ProbePolicy(interval, outage, flushes, timeout)
