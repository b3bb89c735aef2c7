"""The fair per-router lock with real processes and real flocks: waiters are served in the order they came,
a process that lets go and asks again queues behind them, and a killed waiter does not block the queue."""

import multiprocessing
import os
import signal
import time

import pytest

from orchestration.locks import Timeout, fair_lock


def _take(folder, log, hold, times=1):
    for _ in range(times):
        with fair_lock(folder, timeout=30):
            log.put(os.getpid())
            time.sleep(hold)


def _wait_until(predicate, seconds=10):
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_waiters_are_served_in_order_and_a_greedy_holder_queues(tmp_path):
    log = multiprocessing.Queue()
    greedy = multiprocessing.Process(target=_take, args=(tmp_path, log, 1.0, 3))
    greedy.start()
    first = log.get(timeout=10)
    waiters = []
    for queued in range(2, 5):
        waiter = multiprocessing.Process(target=_take, args=(tmp_path, log, 0.05))
        waiter.start()
        _wait_until(lambda n=queued: len(list(tmp_path.glob("*.ticket"))) >= n)
        waiters.append(waiter)
    order = [first, *(log.get(timeout=20) for _ in range(5))]
    for process in (greedy, *waiters):
        process.join(10)
    # The greedy process re-asked at once each time, yet every waiter that was queued went before it.
    assert order[:4] == [greedy.pid, *(w.pid for w in waiters)]
    assert order[4:] == [greedy.pid, greedy.pid]


def test_a_killed_waiter_does_not_block_and_a_timeout_is_raised(tmp_path):
    log = multiprocessing.Queue()
    holder = multiprocessing.Process(target=_take, args=(tmp_path, log, 1.0))
    holder.start()
    log.get(timeout=10)
    doomed = multiprocessing.Process(target=_take, args=(tmp_path, log, 0))
    doomed.start()
    _wait_until(lambda: len(list(tmp_path.glob("*.ticket"))) == 2)
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.join()
    with pytest.raises(Timeout), fair_lock(tmp_path, timeout=0.2):
        pass
    started = time.monotonic()
    with fair_lock(tmp_path, timeout=10):
        assert time.monotonic() - started < 5
    holder.join(10)


def test_a_ticket_is_visible_before_a_later_number_can_be_drawn(tmp_path, monkeypatch):
    """Two processes once both held a router's lock (one vrpipe's batch file then overwrote the other's):
    the first drew its number, the second drew the next and saw no lower ticket yet. A ticket must be
    made visible while the counter is still locked."""
    import fcntl
    from pathlib import Path

    rename = Path.rename
    counter_was_free = []

    def checked_rename(self, target):
        with open(tmp_path / ".counter") as other:  # a second open file: flock conflicts with our own
            try:
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
                counter_was_free.append(True)
            except BlockingIOError:
                counter_was_free.append(False)
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", checked_rename)
    with fair_lock(tmp_path, timeout=1):
        pass
    assert counter_was_free == [False]


def _exclusive(folder, rounds, failures):
    marker = folder / "holder"
    for _ in range(rounds):
        with fair_lock(folder, timeout=60):
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                failures.put(os.getpid())
                continue
            os.close(fd)
            marker.unlink()


def test_only_one_process_holds_the_lock_at_a_time(tmp_path):
    failures = multiprocessing.Queue()
    workers = [multiprocessing.Process(target=_exclusive, args=(tmp_path, 40, failures)) for _ in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    assert failures.empty()
