"""The routing resource: executes commands on routers, one `vr-cmd` run each (per-command mode), or
aggregated: `start` opens a queue, commands are then accepted at once, `finish` sends the queue as one
batch document (one copy, one `vr-apply`) and answers per command, `cleanup` drops the queue.
"""

import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vr import contract

from orchestration.commands import Command, Query, batch_document, state_document
from orchestration.transports import Transport
from vrpipe.errors import VrpipeError

log = logging.getLogger("vrpipe.resource")
VR_BIN = contract.BIN_DIR
BATCH_FILE = "/run/vrpipe-batch.json"  # one per router; the router's lock makes it single-writer


class QueueOpen(VrpipeError):
    """A query, or a second start, on a router whose aggregation queue is open."""


class NoQueue(VrpipeError):
    """finish or cleanup without a start."""


class RouterError(VrpipeError):
    """The router answered with something that is not the engine's JSON result."""


@dataclass(frozen=True)
class Answer:
    """The result of one command: accepted (queued), ok, or failed with the engine's reason."""

    command: Command
    ok: bool
    error: str | None = None
    accepted: bool = False

    def to_json(self) -> dict[str, Any]:
        result: dict[str, Any] = {"command": self.command.describe(), "ok": self.ok}
        if self.accepted:
            result["accepted"] = True
        if self.error:
            result["error"] = self.error
        return result


@dataclass(frozen=True)
class ApplyOutcome:
    """What one apply (a finish, a full replay) did: ok, the per-command answers, the engine's result."""

    ok: bool
    answers: tuple[Answer, ...]
    result: dict[str, Any]

    @property
    def error(self) -> str | None:
        failed = [a for a in self.answers if not a.ok and a.error and not a.error.startswith("not applied")]
        if failed:
            return "; ".join(f"command {self.answers.index(a)} ({a.command.describe()}): {a.error}" for a in failed)
        if self.result.get("failed"):
            return json.dumps(self.result["failed"])
        return self.result.get("error")


class RoutingResource:
    """`transport(router)` gives the transport (execute, copy) that reaches a router by name."""

    def __init__(self, transport: Callable[[str], Transport]):
        self._transport = transport
        self._queues: dict[str, list[Command]] = {}
        self._guard = threading.Lock()

    # per-command mode, or queued while aggregating

    def execute(self, router: str, command: Command) -> Answer:
        with self._guard:
            queue = self._queues.get(router)
            if queue is not None:
                queue.append(command)
                return Answer(command, ok=True, accepted=True)
        argv = [f"{VR_BIN}/vr-cmd", command.type, command.op, json.dumps(command.data, separators=(",", ":"))]
        return _answers([command], self._run(router, argv))[0]

    def query(self, router: str, query: Query) -> dict[str, Any]:
        with self._guard:
            if router in self._queues:
                raise QueueOpen(f"router {router}: {query.name.lower()} refused, an aggregation queue is open")
        return self._run(router, query.argv)

    # aggregation

    def start(self, router: str) -> None:
        with self._guard:
            if router in self._queues:
                raise QueueOpen(f"router {router}: an aggregation queue is already open")
            self._queues[router] = []

    def is_open(self, router: str) -> bool:
        with self._guard:
            return router in self._queues

    def queued(self, router: str) -> list[Command]:
        with self._guard:
            return list(self._queues.get(router, ()))

    def cleanup(self, router: str) -> None:
        with self._guard:
            if self._queues.pop(router, None) is None:
                raise NoQueue(f"router {router}: no aggregation queue to clean up")

    def finish(self, router: str) -> ApplyOutcome:
        """Send the queue as one batch; the queue is dropped once the router answered, and kept when the
        connection failed (TransportError), so that finish can be retried: every command is idempotent."""
        commands = self.queued(router)
        with self._guard:
            if router not in self._queues:
                raise NoQueue(f"router {router}: finish without start")
        result = self._apply(router, batch_document(commands))
        with self._guard:
            self._queues.pop(router, None)
        return ApplyOutcome(bool(result.get("ok")), tuple(_answers(commands, result)), result)

    def apply_state(self, router: str, state: Mapping[str, Any]) -> ApplyOutcome:
        """A full replay: the whole desired state as one `state` document."""
        result = self._apply(router, state_document(state))
        return ApplyOutcome(bool(result.get("ok")), (), result)

    def _apply(self, router: str, document: Mapping[str, Any]) -> dict[str, Any]:
        transport = self._transport(router)
        transport.copy(json.dumps(document, separators=(",", ":")), BATCH_FILE)
        return self._run(router, [f"{VR_BIN}/vr-apply", BATCH_FILE])

    def _run(self, router: str, argv: Sequence[str]) -> dict[str, Any]:
        reply = self._transport(router).run(argv)
        try:
            result = json.loads(reply.out)
        except json.JSONDecodeError:
            said = (reply.err or reply.out).strip()[-300:]
            raise RouterError(
                f"router {router}: {argv[0]} exited {reply.status} without a JSON result: {said}"
            ) from None
        log.debug("router %s: %s -> %d", router, argv[0], reply.status)
        return result


def _answers(commands: Sequence[Command], result: Mapping[str, Any]) -> list[Answer]:
    """One Answer per command from the engine's batch result (applied, failed, or invalid)."""
    entries = {r.get("index"): r for r in result.get("results") or ()}
    answers = []
    for index, command in enumerate(commands):
        entry = entries.get(index)
        if entry is None:
            answers.append(Answer(command, bool(result.get("ok")), None if result.get("ok") else _error(result)))
        elif entry.get("ok"):
            answers.append(Answer(command, True))
        else:
            answers.append(Answer(command, False, _error(entry)))
    return answers


def _error(entry: Mapping[str, Any]) -> str:
    if entry.get("problems"):
        return "; ".join(f"{p['where']}: {p['error']}" for p in entry["problems"])
    if entry.get("error"):
        return entry["error"]
    return json.dumps(entry.get("failed") or entry)
