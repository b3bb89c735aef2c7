"""`vrpipe`, the operator's command: create, list, start, stop, recreate and destroy routers, add and remove
rules, apply a file of commands, replay, show health, state and settings, and upgrade routers in place.
`--json` prints machine-readable results; long work shows progress; every run ends with a one-line
summary on stderr and exits non-zero on failure (2 for a usage error). Commands that only read create
nothing: no state directory, key or database.
"""

import argparse
import contextlib
import json
import logging
import os
import re
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vr import __version__

from orchestration import completion
from orchestration.commands import BadCommand, Command, Query
from orchestration.fleet import for_each
from orchestration.manager import DEPLOYERS, Manager
from orchestration.settings import CONFIG_FILE, SETTINGS, ManagerConfig
from orchestration.store import Network, NotFound, Router
from orchestration.upgrade import cli as upgrade_cli
from vrpipe import log
from vrpipe.errors import VrpipeError

EXAMPLES = """examples:
  vrpipe --rootfs build/template/rootfs create r1 --network eth1=g-r1 --network eth2=pub --start
  vrpipe add r1 dhcp '{"mac": "02:00:00:00:00:05", "ip": "10.1.1.5", "hostname": "vm1"}'
  vrpipe apply r1 examples/commands.json          # many commands: one copy, one run on the router
  vrpipe list; vrpipe health r1; vrpipe state r1
  vrpipe upgrade --dry-run; vrpipe upgrade --canary r1 --batch 25%
  vrpipe config                                   # every setting, its value and where it came from
"""
DEVICE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}")
READ_ONLY = ("list", "state", "health", "config", "completion")


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _network(value: str) -> Network:
    device, sep, bridge = value.partition("=")
    if not sep or not DEVICE.fullmatch(device) or not DEVICE.fullmatch(bridge):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not DEVICE=BRIDGE (interface names: letters, digits, _ . -, at most 15)"
        )
    return Network(device, bridge)


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number >= 1")
    return int(value)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vrpipe",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"vrpipe {__version__}")
    SETTINGS.add_arguments(p)
    p.add_argument("--db", dest="database", help="the same as --database")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="log what is done, in detail")
    p.add_argument("--debug", action="store_true", help="show the traceback of a failure")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=text, description=text, formatter_class=argparse.ArgumentDefaultsHelpFormatter)

    create = command("create", "create a router (and boot it with --start)")
    create.add_argument("name", help="the router's name (also its hostname)")
    create.add_argument("--network", type=_network, action="append", default=[], help="a NIC: DEVICE=BRIDGE")
    create.add_argument("--jump", help="reach it through this hypervisor host: [user@]host[:port]")
    create.add_argument("--deployer", choices=DEPLOYERS, default="container", help="where the router runs")
    create.add_argument("--start", action="store_true", help="boot it and give it a full replay")
    command("list", "list routers: status, rules, package versions")
    for name, text in (
        ("start", "boot routers and give each a full replay of its desired state"),
        ("stop", "stop routers (their desired state stays in the store)"),
        ("recreate", "replace routers by new ones from the template, replaying their desired state"),
        ("replay", "send routers their whole desired state again"),
    ):
        each = command(name, text)
        each.add_argument("names", nargs="+", metavar="NAME")
        each.add_argument("--parallel", type=_positive, default=4, help="routers at a time")
    destroy = command("destroy", "stop and delete routers, and delete their desired state from the store")
    destroy.add_argument("names", nargs="+", metavar="NAME")
    destroy.add_argument("--parallel", type=_positive, default=4, help="routers at a time")
    for op in ("add", "remove"):
        rule = command(op, f"{op} one rule (one router run: per-command mode)")
        rule.add_argument("name", help="the router")
        rule.add_argument("type", help="dhcp, vm_data, port_forwarding, firewall, interfaces, ... (see README)")
        rule.add_argument("data", help="the rule as a JSON object (a remove needs its key fields only)")
    apply = command("apply", "apply a file of commands, aggregated: one copy and one run on the router")
    apply.add_argument("name", help="the router")
    apply.add_argument("file", type=Path, help="a JSON list of commands, or a batch document")
    apply.add_argument("--per-command", action="store_true", help="one router run per command instead")
    health = command("health", "the router's health report")
    health.add_argument("name", help="the router")
    state = command("state", "the router's desired state, from the store")
    state.add_argument("name", help="the router")
    command("config", "show every setting, its value and where it came from")
    shell = command("completion", "print a shell completion script: eval \"$(vrpipe completion bash)\"")
    shell.add_argument("shell", choices=completion.SHELLS)
    upgrade_cli.add_parser(sub)
    upgrade_cli.add_reboot_parser(sub)
    return p


def _read_commands(path: Path) -> list[Command]:
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BadCommand(f"cannot read {path}: {err}") from None
    items = data.get("commands") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise BadCommand(f"{path}: expected a list of commands or a batch document with commands")
    return [Command.from_json(item, f"{path}: commands[{i}]") for i, item in enumerate(items)]


def _data(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise BadCommand(f"data is not JSON: {err}") from None


class Output:
    def __init__(self, as_json: bool):
        self.as_json = as_json

    def progress(self, message: str) -> None:
        print(f"vrpipe: {message}", file=sys.stderr, flush=True)

    def result(self, value: object, text: str) -> None:
        print(json.dumps(value, indent=1) if self.as_json else text, flush=True)


def run_command(args: argparse.Namespace, manager: Manager, out: Output) -> tuple[bool, str]:
    """Do one subcommand; return (ok, summary)."""
    if args.command == "create":
        router = manager.create(args.name, args.network, deployer=args.deployer, jump_host=args.jump)
        out.result({"name": router.name, "control_address": router.control_address}, f"{router.name} created")
        if args.start:
            manager.start(args.name, out.progress)
        return True, f"created {args.name} at {router.control_address}" + (" and started it" if args.start else "")
    if args.command == "list":
        return _list(manager, out)
    if args.command in ("start", "stop", "destroy", "recreate", "replay"):
        return _each(args, manager, out)
    if args.command in ("add", "remove"):
        command = Command(args.command, args.type, _data(args.data))
        answer = manager.apply(args.name, [command], aggregate=False)[0]
        out.result(answer.to_json(), f"{command.describe()}: {'ok' if answer.ok else answer.error}")
        return answer.ok, f"{command.describe()} on {args.name}: {'applied' if answer.ok else 'refused'}"
    if args.command == "apply":
        return _apply(manager, args, _read_commands(args.file), out)
    if args.command == "health":
        report = manager.query(args.name, Query.HEALTH)
        out.result(report, json.dumps(report, indent=1))
        return bool(report.get("ok")), f"{args.name}: {'healthy' if report.get('ok') else 'unhealthy'}"
    if args.command == "upgrade":
        return upgrade_cli.run(args, manager, out)
    if args.command == "reboot":
        return upgrade_cli.reboot(args, manager, out)
    if args.command == "state":
        state = manager.store.state(args.name)
        out.result(state, json.dumps(state, indent=1))
        return True, f"{args.name}: desired state with {plural(manager.rule_count(args.name), 'rule')}"
    raise AssertionError(args.command)


def _list(manager: Manager, out: Output) -> tuple[bool, str]:
    rows = upgrade_cli.versions_columns(manager, [_listing(manager, r) for r in manager.store.routers()])
    lines = [
        f"{r['name']:<16} {r['control_address']:<16} {r['status']:<8} {plural(r['rules'], 'rule'):<10} "
        + upgrade_cli.version_text(r)
        for r in rows
    ]
    out.result(rows, "\n".join(lines))
    return True, plural(len(rows), "router")


def _each(args: argparse.Namespace, manager: Manager, out: Output) -> tuple[bool, str]:
    def destroy(name: str) -> None:
        rules = manager.destroy(name)
        out.progress(f"{name}: destroyed, its desired state deleted from the store ({plural(rules, 'rule')})")

    action = {
        "start": lambda n: manager.start(n, out.progress),
        "stop": manager.stop,
        "destroy": destroy,
        "recreate": lambda n: manager.recreate(n, out.progress),
        "replay": manager.replay,
    }[args.command]
    for name in args.names:
        manager.store.router(name)  # an unknown name fails here, before any router is touched
    with log.progress(len(args.names), f"vrpipe: {args.command}") as done:
        results = for_each(args.names, action, args.parallel, done)
    failed = {name: error for name, error in results.items() if error}
    out.result({n: e or "ok" for n, e in results.items()}, "\n".join(f"{n}: {e or 'ok'}" for n, e in results.items()))
    return not failed, f"{args.command}: {len(results) - len(failed)}/{plural(len(results), 'router')} ok"


def _apply(manager: Manager, args: argparse.Namespace, commands: list[Command], out: Output) -> tuple[bool, str]:
    out.progress(f"{args.name}: sending {plural(len(commands), 'command')} "
                 + ("one by one" if args.per_command else "aggregated"))
    if args.per_command:
        answers = manager.apply(args.name, commands, aggregate=False)
        ok = all(a.ok for a in answers)
        out.result(
            [a.to_json() for a in answers],
            "\n".join(f"{i}: {a.command.describe()}: {a.error or 'ok'}" for i, a in enumerate(answers) if not a.ok),
        )
        return ok, f"{sum(a.ok for a in answers)}/{plural(len(answers), 'command')} applied to {args.name}"
    outcome = manager.apply(args.name, commands)
    out.result(
        {"ok": outcome.ok, "results": [a.to_json() for a in outcome.answers], "error": outcome.error},
        "ok" if outcome.ok else f"refused: {outcome.error}",
    )
    return outcome.ok, f"{plural(len(commands), 'command')} {'applied to' if outcome.ok else 'refused by'} {args.name}"


def _listing(manager: Manager, router: Router) -> dict[str, Any]:
    return {
        "name": router.name,
        "deployer": router.deployer,
        "control_address": router.control_address,
        "jump_host": router.jump_host,
        "status": router.status,
        "rules": manager.rule_count(router.name),
    }


def _config(config: ManagerConfig, out: Output) -> tuple[bool, str]:
    resolved = config.resolved
    assert resolved is not None, "ManagerConfig.load resolves every setting"
    out.result(resolved.to_json(), "\n".join(resolved.lines()))
    return True, f"{plural(len(resolved.values), 'setting')} (config file: {config.state_dir / CONFIG_FILE})"


def _without_store(args: argparse.Namespace, config: ManagerConfig, out: Output) -> tuple[bool, str]:
    """A read-only command on a machine with no store yet: answer without creating one."""
    if args.command == "list":
        out.result([], "")
        return True, f"no routers (no store yet at {config.sqlite_file})"
    raise NotFound(f"no router named {args.name!r}: there is no store yet at {config.sqlite_file}",
                   hint="create a router first (vrpipe create)")


def _run(args: argparse.Namespace, out: Output) -> tuple[bool, str]:
    cli = {name: getattr(args, name) for name in SETTINGS.settings}
    config = ManagerConfig.load(cli.pop("state_dir"), **cli)
    if args.command == "config":
        return _config(config, out)
    if args.command == "completion":
        print(completion.script(_parser(), args.shell))
        return True, f"{args.shell} completion script"
    reads_only = args.command in READ_ONLY or (args.command == "upgrade" and args.dry_run)
    if reads_only and config.sqlite_file is not None and not config.sqlite_file.exists():
        return _without_store(args, config, out)
    with Manager(config) as manager:
        return run_command(args, manager, out)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    log.setup(verbose=args.verbose, level=logging.WARNING)
    started, hint = time.monotonic(), ""
    try:
        ok, summary = _run(args, Output(args.json))
    except BrokenPipeError:
        # The reader went away (`vrpipe state r1 | head`): nothing more to say, and nothing at exit either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except VrpipeError as err:
        if args.debug:
            traceback.print_exc()
        ok, summary = False, f"{args.command} failed: {err}"
        hint = err.hint
    except Exception as err:  # a bug: say so in one line, the traceback with --debug
        if args.debug:
            raise
        ok, summary = False, f"{args.command} failed: internal error: {type(err).__name__}: {err} (--debug shows more)"
    with contextlib.suppress(BrokenPipeError):
        print(f"vrpipe: {summary} ({time.monotonic() - started:.1f}s)", file=sys.stderr)
        if hint:
            print(f"vrpipe: hint: {hint}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
