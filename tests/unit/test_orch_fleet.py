"""Work on many routers at once: every router's outcome, in the order given, failures included."""

import threading

import pytest

from orchestration.fleet import for_each


def test_every_router_gets_its_outcome_and_failures_do_not_stop_the_others():
    def action(name):
        if name == "r2":
            raise TimeoutError("did not answer")

    messages = []
    results = for_each(["r1", "r2", "r3"], action, 2, messages.append)
    assert results == {"r1": None, "r2": "TimeoutError: did not answer", "r3": None}
    assert len(messages) == 3 and all(m.startswith("[") for m in messages)


def test_at_most_parallel_actions_run_at_once():
    running, peak, guard = [0], [0], threading.Lock()
    release = threading.Event()

    def action(name):
        with guard:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        release.wait(0.05)
        with guard:
            running[0] -= 1

    for_each([f"r{i}" for i in range(8)], action, 3)
    assert peak[0] <= 3


def test_an_interrupt_leaves_the_routers_not_begun_alone():
    """Ctrl-C in `vrpipe upgrade` or a 200-router bench used to work through every queued router first."""
    begun = []

    def progress(message):
        raise KeyboardInterrupt  # the operator's Ctrl-C, arriving in the main thread after the first router

    with pytest.raises(KeyboardInterrupt):
        for_each([f"r{i}" for i in range(50)], begun.append, 1, progress)
    assert len(begun) < 5
