"""`vrpipe`, the operator's command: create, list, start, stop and destroy routers, add and remove rules,
apply a file of commands, replay, and show health. `--json` prints machine-readable results; long work
prints progress; every run ends with a one-line summary and exits non-zero on failure.
"""

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from orchestration.commands import BadCommand, Command, Query
from orchestration.fleet import for_each
from orchestration.manager import Manager, ManagerConfig
from orchestration.store import Network
from orchestration.upgrade import cli as upgrade_cli

DEFAULT_STATE_DIR = "/var/lib/vrpipe"


def _network(text):
    device, sep, bridge = text.partition("=")
    if not sep or not device or not bridge:
        raise argparse.ArgumentTypeError(f"{text!r} is not DEVICE=BRIDGE")
    return Network(device, bridge)


def _parser():
    p = argparse.ArgumentParser(prog="vrpipe", description=__doc__.splitlines()[0])
    p.add_argument("--state-dir", default=os.environ.get("VRPIPE_STATE_DIR", DEFAULT_STATE_DIR))
    p.add_argument("--db", help="SQLAlchemy URL of the store (default: SQLite in the state directory)")
    p.add_argument("--rootfs", help="the template rootfs the container deployer boots")
    p.add_argument("--image", help="the template qcow2 the qemu deployer boots")
    p.add_argument("--accel", choices=("tcg", "kvm"), help="the qemu deployer's accelerator (default tcg)")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", help="create a router (and start it with --start)")
    create.add_argument("name")
    create.add_argument("--network", type=_network, action="append", default=[], help="DEVICE=BRIDGE")
    create.add_argument("--jump", help="reach it through this hypervisor host: [user@]host[:port]")
    create.add_argument("--deployer", choices=("container", "qemu"), default="container")
    create.add_argument("--start", action="store_true")
    sub.add_parser("list", help="list routers")
    for name, text in (
        ("start", "boot and fully replay"),
        ("stop", "stop"),
        ("destroy", "stop and delete"),
        ("replay", "send the whole desired state again"),
    ):
        each = sub.add_parser(name, help=f"{text} routers")
        each.add_argument("names", nargs="+")
        each.add_argument("--parallel", type=int, default=4)
    for op in ("add", "remove"):
        rule = sub.add_parser(op, help=f"{op} one rule")
        rule.add_argument("name")
        rule.add_argument("type", help="dhcp, vm_data, port_forwarding, firewall, interfaces, ...")
        rule.add_argument("data", help="the rule as a JSON object (a remove needs its key fields only)")
    apply = sub.add_parser("apply", help="apply a file: a JSON list of commands or a batch document")
    apply.add_argument("name")
    apply.add_argument("file", type=Path)
    apply.add_argument("--per-command", action="store_true", help="one router run per command")
    health = sub.add_parser("health", help="the router's health report")
    health.add_argument("name")
    state = sub.add_parser("state", help="the router's desired state, from the store")
    state.add_argument("name")
    upgrade_cli.add_parser(sub)
    return p


def _read_commands(path):
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise BadCommand(f"cannot read {path}: {err}") from None
    items = data.get("commands") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise BadCommand(f"{path}: expected a list of commands or a batch document with commands")
    return [Command.from_json(item, f"{path}: commands[{i}]") for i, item in enumerate(items)]


def _data(text):
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise BadCommand(f"data is not JSON: {err}") from None


class Output:
    def __init__(self, as_json):
        self.as_json = as_json

    def progress(self, message):
        print(f"vrpipe: {message}", file=sys.stderr, flush=True)

    def result(self, value, text):
        print(json.dumps(value, indent=1) if self.as_json else text)


def run_command(args, manager, out):
    """Do one subcommand; return (ok, summary)."""
    if args.command == "create":
        router = manager.create(args.name, args.network, deployer=args.deployer, jump_host=args.jump)
        out.result({"name": router.name, "control_address": router.control_address}, f"{router.name} created")
        if args.start:
            manager.start(args.name, out.progress)
        return True, f"created {args.name} at {router.control_address}" + (" and started it" if args.start else "")
    if args.command == "list":
        rows = upgrade_cli.versions_columns(manager, [_listing(manager, r) for r in manager.store.routers()])
        out.result(
            rows,
            "\n".join(
                f"{r['name']:<16} {r['control_address']:<16} {r['status']:<8} {r['rules']} rules  "
                + upgrade_cli.version_text(r)
                for r in rows
            ),
        )
        return True, f"{len(rows)} routers"
    if args.command in ("start", "stop", "destroy", "replay"):
        action = {
            "start": lambda n: manager.start(n, out.progress),
            "stop": manager.stop,
            "destroy": manager.destroy,
            "replay": manager.replay,
        }[args.command]
        results = for_each(args.names, action, args.parallel, out.progress)
        failed = {name: error for name, error in results.items() if error}
        out.result(
            {n: e or "ok" for n, e in results.items()}, "\n".join(f"{n}: {e or 'ok'}" for n, e in results.items())
        )
        return not failed, f"{args.command}: {len(results) - len(failed)}/{len(results)} routers ok"
    if args.command in ("add", "remove"):
        command = Command(args.command, args.type, _data(args.data))
        answer = manager.apply(args.name, [command], aggregate=False)[0]
        out.result(answer.to_json(), f"{command.describe()}: {'ok' if answer.ok else answer.error}")
        return answer.ok, f"{command.describe()} on {args.name}: {'applied' if answer.ok else 'refused'}"
    if args.command == "apply":
        commands = _read_commands(args.file)
        return _apply(manager, args, commands, out)
    if args.command == "health":
        report = manager.query(args.name, Query.HEALTH)
        out.result(report, json.dumps(report, indent=1))
        return bool(report.get("ok")), f"{args.name}: {'healthy' if report.get('ok') else 'unhealthy'}"
    if args.command == "upgrade":
        return upgrade_cli.run(args, manager, out)
    if args.command == "state":
        state = manager.store.state(args.name)
        out.result(state, json.dumps(state, indent=1))
        return (
            True,
            f"{args.name}: desired state with {sum(len(v) for v in state.values() if isinstance(v, list))} rules",
        )
    raise AssertionError(args.command)


def _apply(manager, args, commands, out):
    out.progress(f"{args.name}: sending {len(commands)} commands {'one by one' if args.per_command else 'aggregated'}")
    if args.per_command:
        answers = manager.apply(args.name, commands, aggregate=False)
        ok = all(a.ok for a in answers)
        out.result(
            [a.to_json() for a in answers],
            "\n".join(f"{i}: {a.command.describe()}: {a.error or 'ok'}" for i, a in enumerate(answers) if not a.ok),
        )
        return ok, f"{sum(a.ok for a in answers)}/{len(answers)} commands applied to {args.name}"
    outcome = manager.apply(args.name, commands)
    out.result(
        {"ok": outcome.ok, "results": [a.to_json() for a in outcome.answers], "error": outcome.error},
        "ok" if outcome.ok else f"refused: {outcome.error}",
    )
    return outcome.ok, f"{len(commands)} commands {'applied to' if outcome.ok else 'refused by'} {args.name}"


def _listing(manager, router):
    state = manager.store.state(router.name)
    rules = sum(len(v) for v in state.values() if isinstance(v, list))
    status = "running" if manager.running(router.name) else "stopped"
    return {
        "name": router.name,
        "deployer": router.deployer,
        "control_address": router.control_address,
        "jump_host": router.jump_host,
        "status": status,
        "rules": rules,
    }


def main(argv=None):
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    started = time.monotonic()
    try:
        overrides = dict(database=args.db, rootfs=args.rootfs, image=args.image, accel=args.accel)
        config = ManagerConfig.load(args.state_dir, **overrides)
        with Manager(config) as manager:
            ok, summary = run_command(args, manager, Output(args.json))
    except (BadCommand, LookupError, ValueError, OSError, RuntimeError) as err:
        ok, summary = False, f"{args.command} failed: {err}"
    print(f"vrpipe: {summary} ({time.monotonic() - started:.1f}s)", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
