"""The apply pipeline: validate -> render -> check -> swap -> activate -> persist, with rollback.
Each subsystem is rendered whole from the desired state; changed files are checked by their own tool,
swapped in by rename, and their service reloaded once. If anything fails after the swap began, the
previous files and rules are put back and re-activated, and the result says which step failed and why.
"""

import contextlib
import fcntl
import functools
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from . import __version__, dnsmasq, haproxy, interfaces, metadata, nftables, persist, redundancy, vpn
from .document import CheckedCommand, Parsed, parse_document
from .fields import Invalid
from .layout import Layout
from .model import SECTIONS, RouterState
from .run import CommandFailed
from .services import Services

if TYPE_CHECKING:
    from .engine import Memory  # the resident engine's; importing it here would cost every apply

# Activation order matters: addresses before the rules and daemons that bind to them; the rules before
# keepalived and conntrackd, whose traffic they let in; vpn last, since the certificate files it removes
# are not put back by a rollback.
SUBSYSTEMS: "tuple[Subsystem, ...]" = (interfaces, nftables, redundancy, dnsmasq, haproxy, metadata, vpn)
SERVICES = (dnsmasq.SERVICE, haproxy.SERVICE, metadata.SERVICE, *redundancy.SERVICES, vpn.SERVICE)


@dataclass
class Activation:
    """What one activation works from: the state before and after, and which files were replaced."""

    old: RouterState
    new: RouterState
    layout: Layout
    services: Services
    changed: set[Path] = field(default_factory=set)
    force: bool = False  # re-apply kernel state (addresses, rules) even if no file changed
    # path -> text before this apply (None: absent), of changed files
    previous: dict[Path, str | None] = field(default_factory=dict)
    plans: dict[str, str] = field(default_factory=dict)  # subsystem name -> what its check worked out for its activate


class Subsystem(Protocol):
    """What each module of SUBSYSTEMS provides."""

    NAME: str

    def render(self, state: RouterState, layout: Layout) -> dict[Path, str]: ...
    def check(self, staged: Mapping[Path, Path], change: Activation) -> None: ...
    def activate(self, change: Activation) -> str | None: ...


class ApplyFailed(Exception):
    def __init__(self, phase: str, subsystem: str, error: object) -> None:
        super().__init__(f"{phase} of {subsystem} failed: {error}")
        self.phase, self.subsystem, self.error = phase, subsystem, str(error)

    def to_json(self) -> dict[str, str]:
        return {"phase": self.phase, "subsystem": self.subsystem, "error": self.error}


class Phases:
    """Times each phase of an apply, for the result."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0) + time.perf_counter() - started, 4)


@contextmanager
def apply_lock(layout: Layout) -> Iterator[None]:
    """One apply at a time per router: a second one waits for the first."""
    layout.make_directories()
    with open(layout.lock, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def apply_document(data: Any, layout: Layout, services: Services, memory: "Memory | None" = None) -> dict[str, Any]:
    """Apply a state or batch document; return the JSON result (its "ok" says whether it was applied).
    `memory` (the resident engine's) holds the persisted state, saving the read."""
    phases = Phases()
    with apply_lock(layout):
        with phases("unchanged"):
            unchanged = _same_state_again(data, layout, services)
        if unchanged:
            return {**unchanged, "timings": phases.seconds}
        with phases("validate"):
            current = memory.read() if memory else persist.read(layout)
            try:
                parsed = parse_document(data, current)
            except Invalid as invalid:
                return _invalid_result(data, invalid, phases)
        selected = [s for s in SUBSYSTEMS if s.NAME in parsed.subsystems]
        state = parsed.kind == "state"
        if state:
            save = functools.partial(persist.write, layout, parsed.state, data)
        else:
            save = functools.partial(persist.append, layout, parsed.state, data["commands"])
        try:
            actions, files = converge(current, parsed.state, layout, services, selected, state, phases, save)
        except ApplyFailed as failed:
            return _result(parsed, phases, failed=failed)
        if state:
            with phases("persist"):
                persist.record_applied(layout, files, [n for n in SERVICES if services.is_active(n)])
        if memory:
            memory.keep(parsed.state)
    return _result(parsed, phases, actions=actions)


def _same_state_again(data: Any, layout: Layout, services: Services) -> dict[str, Any] | None:
    """The result of a state document that is the one last applied, when nothing it made has changed since
    (persisted state, rendered files, its table and services still there); None otherwise. `--reapply`
    is the way to put everything in force again regardless."""
    if not isinstance(data, dict) or data.get("kind") != "state":
        return None
    record = persist.applied(layout, data)
    if record is None or not nftables.loaded() or not all(services.is_active(n) for n in record["services"]):
        return None
    items = data.get("state") or {}
    sections = {n: {"ok": True, "items": len(items.get(n) or ())} for n, s in SECTIONS.items() if s.key_fields}
    result = {"ok": True, "kind": "state", "version": __version__, "sections": sections, "actions": {}}
    return {**result, "unchanged": True}


def reapply(layout: Layout, services: Services) -> dict[str, Any]:
    """Re-apply the persisted state whole (at boot, and after an upgrade of the engine)."""
    phases = Phases()
    with apply_lock(layout):
        with phases("validate"):
            state = persist.read(layout)
        try:
            save = functools.partial(persist.write, layout, state)
            actions, _ = converge(state, state, layout, services, SUBSYSTEMS, True, phases, save)
        except ApplyFailed as failed:
            return {"ok": False, "kind": "reapply", "failed": failed.to_json(), "timings": phases.seconds}
    return {"ok": True, "kind": "reapply", "actions": actions, "timings": phases.seconds, "version": __version__}


def converge(
    old: RouterState,
    new: RouterState,
    layout: Layout,
    services: Services,
    selected: Sequence[Subsystem],
    force: bool,
    phases: Phases,
    save: Callable[[], None],
) -> tuple[dict[str, str], dict[Path, str]]:
    """Make the router run `new`, then `save()` it; on failure put `old` back and raise ApplyFailed.
    Return the actions taken and the files rendered."""
    with phases("render"):
        rendered = {s: s.render(new, layout) for s in selected}
        files = {path: text for texts in rendered.values() for path, text in texts.items()}
        previous = {path: _read(path) for path in files}
        changed = {path: text for path, text in files.items() if previous[path] != text}
    change = Activation(old, new, layout, services, set(changed), force, {p: previous[p] for p in changed})
    with phases("check"):
        staged = _stage(changed)
        try:
            for subsystem, texts in rendered.items():
                if changed.keys() & texts.keys():
                    _check(subsystem, staged, change)
        except ApplyFailed:
            _unstage(staged)
            raise
    actions: dict[str, str] = {}
    try:
        with phases("swap"):
            for path, staged_path in staged.items():
                os.replace(staged_path, path)
        with phases("activate"):
            for subsystem in selected:
                _activate(subsystem, change, actions)
    except ApplyFailed:
        _roll_back(change.previous, Activation(new, old, layout, services, set(changed), force), selected)
        raise
    with phases("persist"):
        save()
    return actions, files


def _check(subsystem: Subsystem, staged: dict[Path, Path], change: Activation) -> None:
    try:
        subsystem.check(_StagedView(staged), change)
    except (CommandFailed, ValueError) as err:  # ValueError: the state does not fit this router
        raise ApplyFailed("check", subsystem.NAME, err) from err


class _StagedView(dict[Path, Path]):
    """Staged paths by final path; a file that did not change is checked where it already is."""

    def __missing__(self, path: Path) -> Path:
        return path


def _activate(subsystem: Subsystem, change: Activation, actions: dict[str, str]) -> None:
    try:
        action = subsystem.activate(change)
    except (CommandFailed, OSError, TimeoutError) as err:
        raise ApplyFailed("activate", subsystem.NAME, err) from err
    if action:
        actions[subsystem.NAME] = action


def _roll_back(previous: Mapping[Path, str | None], change: Activation, selected: Sequence[Subsystem]) -> None:
    """Put the previous files back and re-activate them; keep going past errors, the old state is the goal."""
    for path, text in previous.items():
        if text is None:
            path.unlink(missing_ok=True)
        else:
            persist.write_atomically(path, text)
    for subsystem in selected:
        with contextlib.suppress(CommandFailed, OSError, TimeoutError):
            subsystem.activate(change)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def _stage(changed: Mapping[Path, str]) -> dict[Path, Path]:
    staged = {}
    for path, text in changed.items():
        staged_path = path.with_name(f".{path.name}.new")
        persist.write_durably(staged_path, text)
        staged[path] = staged_path
    return staged


def _unstage(staged: Mapping[Path, Path]) -> None:
    for staged_path in staged.values():
        staged_path.unlink(missing_ok=True)


def _invalid_result(data: Any, invalid: Invalid, phases: Phases) -> dict[str, Any]:
    problems = [p.to_json() for p in invalid.problems]
    result: dict[str, Any] = {"ok": False, "error": "invalid document", "problems": problems, "timings": phases.seconds}
    commands = data.get("commands") if isinstance(data, dict) else None
    if isinstance(commands, list):
        bad: dict[int, list[dict[str, str]]] = {}
        for problem in problems:
            if problem["where"].startswith("commands["):
                bad.setdefault(int(problem["where"][9:].split("]")[0]), []).append(problem)
        result["results"] = [
            {"index": i, "ok": False, "problems": bad[i]}
            if i in bad
            else {"index": i, "ok": False, "error": "not applied"}
            for i in range(len(commands))
        ]
    return result


def _result(
    parsed: Parsed, phases: Phases, actions: dict[str, str] | None = None, failed: ApplyFailed | None = None
) -> dict[str, Any]:
    result: dict[str, Any] = {"ok": failed is None, "kind": parsed.kind, "version": __version__}
    if parsed.kind == "batch":
        result["results"] = [_command_result(c, failed) for c in parsed.commands]
    else:
        result["sections"] = {
            name: _section_result(name, parsed.state, failed)
            for name, section in SECTIONS.items()
            if section.key_fields
        }
    if failed:
        result["failed"] = failed.to_json()
    else:
        result["actions"] = actions
    result["timings"] = phases.seconds
    return result


def _command_result(command: CheckedCommand, failed: ApplyFailed | None) -> dict[str, object]:
    return {
        "index": command.index,
        "type": command.section,
        "op": command.op,
        **_command_result_error(command.section, failed),
    }


def _command_result_error(section: str, failed: ApplyFailed | None) -> dict[str, object]:
    """ok, or the failure: named in full where this section feeds the failed subsystem."""
    if failed is None:
        return {"ok": True}
    if failed.subsystem in SECTIONS[section].subsystems:
        return {"ok": False, "error": f"{failed.subsystem} {failed.phase} failed: {failed.error}"}
    return {"ok": False, "error": f"not applied: {failed.subsystem} {failed.phase} failed"}


def _section_result(name: str, state: RouterState, failed: ApplyFailed | None) -> dict[str, object]:
    return {**_command_result_error(name, failed), "items": len(getattr(state, name))}
