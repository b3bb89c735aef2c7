"""`vrpipe`, the operator's command: create, list, start, stop, recreate and destroy routers, add and remove
rules, apply a file of commands, replay, show health, state and settings, watch health (recording it in
the store), and upgrade routers in place.
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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vr import __version__

from orchestration import completion
from orchestration.commands import BadCommand, Command, Query
from orchestration.fleet import for_each
from orchestration.manager import DEPLOYERS, Manager
from orchestration.settings import CONFIG_FILE, SETTINGS, ManagerConfig
from orchestration.store import Health, Network, NotFound, Router
from orchestration.upgrade import cli as upgrade_cli
from orchestration.upgrade import pairs
from orchestration.watch import ACTIONS, Watcher, WatchOptions
from vrpipe import log
from vrpipe.errors import VrpipeError, shown

EXAMPLES = """examples:
  vrpipe --rootfs build/template/rootfs create r1 --network eth1=g-r1 --network eth2=pub --start
  vrpipe add r1 dhcp '{"mac": "02:00:00:00:00:05", "ip": "10.1.1.5", "hostname": "vm1"}'
  vrpipe apply r1 examples/commands.json          # many commands: one copy, one run on the router
  vrpipe --image build/template/vr-router.qcow2 create r2 --deployer libvirt --host qemu+ssh://root@kvm1/system
  vrpipe plug r2 eth1=g-r2; vrpipe unplug r2 eth1 # NICs of a running libvirt router
  vrpipe list; vrpipe health r1; vrpipe state r1
  vrpipe watch --interval 10 --unhealthy-after 2  # record every router's health until Ctrl-C
  vrpipe upgrade --dry-run; vrpipe upgrade --canary r1 --batch 25%
  vrpipe config                                   # every setting, its value and where it came from
"""
DEVICE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}")
# Commands that only read: on a machine without a store yet they answer without making one. (`watch` writes
# health records, but only about routers, of which there are none yet.)
READ_ONLY = ("list", "state", "health", "watch")
ROLE_PARALLEL = 16  # members asked for their VRRP role at a time by `vrpipe list`


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _network(value: str) -> Network:
    device, sep, bridge = value.partition("=")
    if not sep or not DEVICE.fullmatch(device) or not DEVICE.fullmatch(bridge):
        raise argparse.ArgumentTypeError(
            f"{shown(value)} is not DEVICE=BRIDGE (interface names: letters, digits, _ . -, at most 15)"
        )
    return Network(device, bridge)


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{shown(value)} is not a whole number >= 1")
    return int(value)


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{shown(value)} is not a number of seconds above 0")
    return seconds


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
    create.add_argument("--host", metavar="URI",
                        help="a libvirt router's host, e.g. qemu+ssh://root@HOST/system (default: libvirt_uri)")
    create.add_argument("--start", action="store_true", help="boot it and give it a full replay")
    create.add_argument("--redundant", action="store_true",
                        help="a redundant pair: members NAME-a and NAME-b, a sync link, VRRP (see README)")
    command("list", "list routers: status, rules, package versions")
    for name, text in (
        ("start", "boot routers and give each a full replay of its desired state"),
        ("stop", "stop routers (their desired state stays in the store)"),
        ("recreate", "replace routers by new ones from the template, replaying their desired state "
                     "(a pair: one member at a time, NAME-a or NAME-b, while the other serves)"),
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
        rule.add_argument("type", help="dhcp, port_forwarding, firewall, interfaces, network_acls, ... (see README)")
        rule.add_argument("data", help="the rule as a JSON object (a remove needs its key fields only)")
    apply = command("apply", "apply a file of commands, aggregated: one copy and one run on the router")
    apply.add_argument("name", help="the router")
    apply.add_argument("file", type=Path, help="a JSON list of commands, or a batch document")
    apply.add_argument("--per-command", action="store_true", help="one router run per command instead")
    plug = command("plug", "give a router a NIC on a host bridge (live on a libvirt router)")
    plug.add_argument("name", help="the router")
    plug.add_argument("network", type=_network, help="the NIC: DEVICE=BRIDGE")
    unplug = command("unplug", "take a NIC off a router (live on a libvirt router; waits for the guest)")
    unplug.add_argument("name", help="the router")
    unplug.add_argument("device", help="the NIC's device, e.g. eth3")
    health = command("health", "the router's health report")
    health.add_argument("name", help="the router")
    watch = command("watch", "check every running router's health on an interval and record it in the store")
    watch.add_argument("names", nargs="*", metavar="NAME", help="only these routers (default: every running one)")
    watch.add_argument("--interval", type=_seconds, default=10.0, help="seconds between rounds of checks")
    watch.add_argument("--unhealthy-after", type=_positive, default=2, help="failed checks in a row")
    watch.add_argument("--timeout", type=_seconds, default=8.0, help="seconds one check may take")
    watch.add_argument("--parallel", type=_positive, default=16, help="routers checked at a time")
    watch.add_argument("--action", choices=ACTIONS, default="none", help="what to do with an unhealthy router")
    watch.add_argument("--rounds", type=_positive, help="stop after this many rounds (default: until Ctrl-C)")
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
        return _create(args, manager, out)
    if args.command == "list":
        return _list(manager, out)
    if args.command in ("start", "stop", "destroy", "recreate", "replay"):
        return _each(args, manager, out)
    if args.command in ("add", "remove"):
        command = Command(args.command, args.type, _data(args.data))
        answer = manager.apply(args.name, [command], aggregate=False)[0]
        out.result(answer.to_json(), f"{command.describe()}: {'ok' if answer.ok else answer.error}")
        return answer.ok, f"{command.describe()} on {args.name}: {'applied' if answer.ok else 'refused'}"
    if args.command in ("plug", "unplug"):
        return _plug(args, manager, out)
    if args.command == "apply":
        return _apply(manager, args, _read_commands(args.file), out)
    if args.command == "health":
        return _health(args.name, manager, out)
    if args.command == "upgrade":
        return upgrade_cli.run(args, manager, out)
    if args.command == "watch":
        return _watch(args, manager, out)
    if args.command == "reboot":
        return upgrade_cli.reboot(args, manager, out)
    if args.command == "state":
        state = manager.store.state(args.name)
        out.result(state, json.dumps(state, indent=1))
        return True, f"{args.name}: desired state with {plural(manager.rule_count(args.name), 'rule')}"
    raise AssertionError(args.command)


def _create(args: argparse.Namespace, manager: Manager, out: Output) -> tuple[bool, str]:
    where = {"deployer": args.deployer, "jump_host": args.jump, "host": args.host}
    if args.redundant:
        pair = manager.create_pair(args.name, args.network, **where)
        members = [manager.store.router(m) for m in pair.members]
        made = {"name": pair.name, "members": [{"name": m.name, "control_address": m.control_address} for m in members],
                "sync_bridge": pair.sync_bridge, "sync_network": pair.sync_network}
        done = f"created the pair {pair.name}: " + ", ".join(f"{m.name} at {m.control_address}" for m in members)
    else:
        router = manager.create(args.name, args.network, **where)
        made = {"name": router.name, "control_address": router.control_address}
        done = f"created {args.name} at {router.control_address}"
    out.result(made, f"{args.name} created")
    if args.start:
        manager.start(args.name, out.progress)
    return True, done + (" and started it" if args.start else "")


def _health(name: str, manager: Manager, out: Output) -> tuple[bool, str]:
    """One router's health report; a pair's: each member's, healthy when both are and one is MASTER."""
    members = manager.members(name)
    reports = {member: _report(manager, member) for member in members}
    if len(members) == 1:
        report = reports[name]
        out.result(report, json.dumps(report, indent=1))
        return bool(report.get("ok")), f"{name}: {_verdict(report)}"
    out.result(reports, json.dumps(reports, indent=1))
    masters = [m for m, r in reports.items() if r.get("vrrp") == "MASTER"]
    ok = all(r.get("ok") for r in reports.values()) and len(masters) == 1
    return ok, f"{name}: " + ", ".join(f"{m} {_verdict(r)}" for m, r in reports.items())


def _report(manager: Manager, name: str) -> dict[str, Any]:
    try:
        return manager.query(name, Query.HEALTH)
    except VrpipeError as err:  # a member that does not answer is part of a pair's report, not its end
        return {"ok": False, "error": str(err)}


def _verdict(report: dict[str, Any]) -> str:
    role = f" (VRRP {report['vrrp']})" if report.get("vrrp") else ""  # a member of a redundant pair
    said = "healthy" if report.get("ok") else "unhealthy" if "error" not in report else "not answering"
    return said + role


def _list(manager: Manager, out: Output) -> tuple[bool, str]:
    routers = manager.store.routers()
    roles = _roles(manager, [r.name for r in routers if r.pair and r.status == "running"])
    rows = upgrade_cli.versions_columns(manager, [_listing(manager, r, roles.get(r.name)) for r in routers])
    lines = [
        f"{r['name']:<16} {r['control_address']:<16} {r['status']:<8} {plural(r['rules'], 'rule'):<10} "
        f"{_health_text(r):<24} " + upgrade_cli.version_text(r) + _pair_text(r)
        for r in rows
    ]
    out.result(rows, "\n".join(lines))
    return True, plural(len(rows), "router")


def _pair_text(row: dict[str, Any]) -> str:
    """A member's pair and VRRP role, e.g. ` pair r1 MASTER` (`-` while it is not running)."""
    return f" pair {row['pair']} {row['vrrp'] or '-'}" if row["pair"] else ""


def _health_text(row: dict[str, Any]) -> str:
    """health and its age, e.g. `healthy 4s ago`; `unhealthy 12s ago`; `-` before the first check."""
    if row["health"] is None:
        return "-"
    return f"{row['health']} {row['health_age_s']:.0f}s ago"


def _health_columns(health: Health) -> dict[str, Any]:
    age = None if health.at is None else max(0.0, (datetime.now(UTC) - health.at).total_seconds())
    return {
        "health": health.state,
        "health_at": health.at.isoformat() if health.at else None,
        "health_age_s": age,
        "health_failures": health.failures,
        "health_detail": health.detail,
    }


def _watch(args: argparse.Namespace, manager: Manager, out: Output) -> tuple[bool, str]:
    options = WatchOptions(args.interval, args.unhealthy_after, args.parallel, args.timeout, args.action)
    manager.store.check_known(args.names)
    names = args.names or None
    out.progress(f"watching {'every running router' if names is None else ', '.join(names)} "
                 f"every {options.interval:g}s (unhealthy after {plural(options.unhealthy_after, 'failed check')})")
    watcher = Watcher(manager, options, out.progress)
    try:
        last = watcher.run(names, args.rounds)
    except KeyboardInterrupt:
        last = []
    finally:
        watcher.close()
    checked = {c.name: c.health for c in last} or {r.name: r.health for r in manager.store.routers()}
    unhealthy = sorted(n for n, h in checked.items() if h.state == "unhealthy")
    out.result({n: _health_columns(h) for n, h in checked.items()},
               "\n".join(f"{n}: {h.state or '-'}" + (f" ({h.detail})" if h.detail else "") for n, h in checked.items()))
    summary = f"watch: {len(checked) - len(unhealthy)}/{plural(len(checked), 'router')} healthy"
    return not unhealthy, summary + (f"; unhealthy: {', '.join(unhealthy)}" if unhealthy else "")


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
    manager.store.check_known(args.names)
    with log.progress(len(args.names), f"vrpipe: {args.command}") as done:
        results = for_each(args.names, action, args.parallel, done)
    failed = {name: error for name, error in results.items() if error}
    out.result({n: e or "ok" for n, e in results.items()}, "\n".join(f"{n}: {e or 'ok'}" for n, e in results.items()))
    return not failed, f"{args.command}: {len(results) - len(failed)}/{plural(len(results), 'router')} ok"


def _plug(args: argparse.Namespace, manager: Manager, out: Output) -> tuple[bool, str]:
    if args.command == "plug":
        router = manager.plug(args.name, args.network)
        done = f"{args.network.device} plugged into {args.network.bridge} on {args.name}"
    else:
        router = manager.unplug(args.name, args.device)
        done = f"{args.device} unplugged from {args.name}"
    nics = [{"device": n.device, "bridge": n.bridge} for n in router.networks]
    out.result({"name": router.name, "networks": nics}, done)
    return True, done


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


def _roles(manager: Manager, members: list[str]) -> dict[str, str]:
    """The VRRP role of each of these running members of pairs, asked in parallel."""
    found: dict[str, str] = {}
    for_each(members, lambda member: found.__setitem__(member, pairs.role(manager, member)), ROLE_PARALLEL)
    return found


def _listing(manager: Manager, router: Router, role: str | None) -> dict[str, Any]:
    return {
        "name": router.name,
        "deployer": router.deployer,
        "control_address": router.control_address,
        "jump_host": router.jump_host,
        "status": router.status,
        "rules": manager.rule_count(router.name),
        **_health_columns(router.health),
        "pair": router.pair,
        "vrrp": role,  # MASTER, BACKUP or down; None for a stopped member or a single router
    }


def _config(config: ManagerConfig, out: Output) -> tuple[bool, str]:
    resolved = config.resolved
    assert resolved is not None, "ManagerConfig.load resolves every setting"
    out.result(resolved.to_json(), "\n".join(resolved.lines()))
    return True, f"{plural(len(resolved.values), 'setting')} (config file: {config.state_dir / CONFIG_FILE})"


def _without_store(args: argparse.Namespace, config: ManagerConfig, out: Output) -> tuple[bool, str]:
    """A read-only command on a machine with no store yet: answer without creating one."""
    named = [args.name] if "name" in args else getattr(args, "names", [])
    if named:
        raise NotFound(f"no router named {shown(named[0])}: there is no store yet at {config.sqlite_file}",
                       hint="create a router first (vrpipe create)")
    out.result([], "")
    return True, f"no routers (no store yet at {config.sqlite_file})"


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
