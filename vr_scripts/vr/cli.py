"""The router's commands: vr-apply (a state or batch document), vr-cmd (one command, the per-command
mode), vr-state (the persisted state), vr-health and vr-engine (the resident engine vr-apply and vr-cmd
hand documents to when it runs). Each prints one JSON document; exit status 0 means ok, 1 the apply
failed and the previous state is still in force, 2 the input was invalid. The engine itself is imported
only by the commands that need it: handing a document to the resident engine stays cheap.
"""

import argparse
import json
import resource
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from . import SCHEMA_VERSION, resident
from .layout import Layout

if TYPE_CHECKING:
    from .services import Services

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


def _router() -> "tuple[Layout, Services]":
    from . import services

    layout = Layout.from_env()
    return layout, services.for_layout(layout)


def _record(layout: Layout, result: dict[str, Any]) -> None:
    """Where an apply ran: note its peak RSS in the result and append one line to the apply log."""
    import logging.handlers

    result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    layout.log.parent.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger("vr.apply-log")
    if not logger.handlers:
        handler = logging.handlers.RotatingFileHandler(layout.log, maxBytes=5_000_000, backupCount=5)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    summary = {k: v for k, v in result.items() if k not in ("results", "sections")}
    if "results" in result:
        summary["commands"] = len(result["results"])
    logger.info(json.dumps(summary, separators=(",", ":")))


def _finish(result: dict[str, Any]) -> int:
    json.dump(result, sys.stdout, indent=1)
    sys.stdout.write("\n")
    if result["ok"]:
        return EXIT_OK
    return EXIT_INVALID if "problems" in result else EXIT_FAILED


def _invalid(message: str) -> int:
    json.dump(
        {"ok": False, "error": "invalid document", "problems": [{"where": "document", "error": message}]}, sys.stdout
    )
    sys.stdout.write("\n")
    return EXIT_INVALID


def apply_document(data: Any) -> int:
    result = resident.send(data)
    if result is None:
        from .apply import apply_document as apply_here

        layout, router_services = _router()
        result = apply_here(data, layout, router_services)
        _record(layout, result)
    return _finish(result)


def reapply(layout: Layout) -> dict[str, Any]:
    """Re-apply the persisted state in this process, noted in the apply log (vr-apply --reapply, vr-boot)."""
    from . import services
    from .apply import reapply as reapply_state

    result = reapply_state(layout, services.for_layout(layout))
    _record(layout, result)
    return result


def main_apply(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vr-apply", description="Apply a state or batch document to this router.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("file", nargs="?", help="the JSON document, or - for standard input")
    source.add_argument("--reapply", action="store_true", help="re-apply the persisted state (boot, upgrade)")
    args = parser.parse_args(argv)
    if args.reapply:
        return _finish(reapply(Layout.from_env()))
    try:
        # Bytes, decoded strictly: text-mode stdin would turn undecodable bytes into lone surrogates.
        raw = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
        data = json.loads(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return _invalid(f"cannot read {args.file}: {err}")
    return apply_document(data)


def main_cmd(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vr-cmd", description="Apply one command (the per-command mode).")
    parser.add_argument("type", help="section: dhcp, vm_data, port_forwarding, firewall, ...")
    parser.add_argument("op", choices=("add", "remove"))
    parser.add_argument("data", help="the command's data as a JSON object")
    args = parser.parse_args(argv)
    try:
        data = json.loads(args.data)
    except json.JSONDecodeError as err:
        return _invalid(f"data is not JSON: {err}")
    command = {"op": args.op, "type": args.type, "data": data}
    return apply_document({"schema": SCHEMA_VERSION, "kind": "batch", "commands": [command]})


def main_state(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="vr-state", description="Print the persisted desired state.").parse_args(argv)
    from . import persist
    from .document import state_document

    json.dump(state_document(persist.read(Layout.from_env())), sys.stdout, indent=1)
    sys.stdout.write("\n")
    return EXIT_OK


def main_health(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="vr-health", description="Print this router's health as JSON.").parse_args(argv)
    from . import health, persist  # the launcher asked the resident engine first (vr/resident.py)

    layout, router_services = _router()
    result = health.report(layout, router_services, persist.read(layout))
    json.dump(result, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return EXIT_OK if result["ok"] else EXIT_FAILED


def main_metadata(argv: list[str] | None = None) -> None:
    from .metadata_server import main

    return main(argv)


def main_metrics(argv: list[str] | None = None) -> NoReturn:
    from .metrics_server import main

    main(argv)


def main_restart_stale(argv: list[str] | None = None) -> int:
    from .restarts import main

    return main(argv)


def main_vrrp(argv: list[str] | None = None) -> int:
    from .vrrp import main

    return main(argv)


def main_probe(argv: list[str] | None = None) -> int:
    from .probes import main

    return main(argv)


def main_boot() -> int:
    from .boot import main

    return main()


def main_engine(argv: list[str] | None = None) -> NoReturn:
    argparse.ArgumentParser(
        prog="vr-engine", description="Run the resident engine: apply what vr-apply and vr-cmd hand it."
    ).parse_args(argv)
    layout, router_services = _router()
    from . import engine

    engine.serve(layout, router_services, _record)


COMMANDS = {
    "vr-boot": main_boot,
    "vr-apply": main_apply,
    "vr-cmd": main_cmd,
    "vr-state": main_state,
    "vr-health": main_health,
    "vr-metadata": main_metadata,
    "vr-engine": main_engine,
    "vr-metrics": main_metrics,
    "vr-restart-stale": main_restart_stale,
    "vr-vrrp": main_vrrp,
    "vr-probe": main_probe,
}
