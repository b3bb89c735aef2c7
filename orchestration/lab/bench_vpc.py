"""`invoke bench-engine --vpc`: a VPC router namespace with 20 tiers, each with its own network ACL list.
It applies 20 lists x 100 rules x 10 CIDRs as one state and times it, then counts connections per second
from a VM in the first tier to one in the second (through both tiers' lists) in a bounded loop, with 10
rules in all and with 2,000, in one run (the sizes take turns, five times each: the medians are reported).
"""

import json
import statistics
import sys
import time
from typing import Any

from orchestration.lab.bench_engine import start_engine
from orchestration.lab.netlab import RouterNet, make_router_net
from orchestration.lab.netns import Namespaces
from orchestration.lab.vpclab import add_tier, add_vm_on, bench_acls, rule, tier, vpc_interfaces
from vrpipe.run import run, spawn

TIERS, RULES, CIDRS = 20, 100, 10
SMALL_RULES = 5  # per list of the two tiers the traffic crosses (the other lists are empty): 10 in all
LOOP_SECONDS = 3.0
ROUNDS = 5  # loops per size, the median reported
PORT = 7000


def _gateway(t: int) -> str:
    return f"10.2.{t}.1/24"


def vpc_document(net: RouterNet, acls: list[dict[str, Any]]) -> dict[str, Any]:
    """Tier t on bridge vt<t>, network 10.2.t.0/24, with list tier<t>."""
    tiers = [tier(f"vt{t}", _gateway(t), f"tier{t}") for t in range(TIERS)]
    return {"schema": 1, "kind": "state", "state": {"interfaces": vpc_interfaces(net, tiers), "network_acls": acls}}


def _passing(acl: dict[str, Any]) -> dict[str, Any]:
    """The list with two rules after its own that let the benchmark's traffic (tcp 7000 inside
    10.2.0.0/16, among CIDRS CIDRs) out of and into its tier."""
    last = max((r["number"] for r in acl["rules"]), default=0)
    inside = ["10.2.0.0/16", *(f"100.127.{i}.0/28" for i in range(CIDRS - 1))]
    out = rule(last + 1, "allow", "tcp", "egress", inside, PORT)
    into = rule(last + 2, "allow", "tcp", "ingress", inside, PORT)
    return {**acl, "rules": [*acl["rules"], out, into]}


def _small_acls() -> list[dict[str, Any]]:
    """10 rules in all: the two lists the traffic crosses have SMALL_RULES each, the others none."""
    crossed = [_passing(acl) for acl in bench_acls(2, SMALL_RULES - 2, CIDRS)]
    return crossed + [{"name": f"tier{t}", "rules": []} for t in range(2, TIERS)]


def _large_acls() -> list[dict[str, Any]]:
    """TIERS x RULES rules in all, each of CIDRS CIDRs."""
    return [_passing(acl) for acl in bench_acls(TIERS, RULES - 2, CIDRS)]


def _rules(document: dict[str, Any]) -> int:
    return sum(len(acl["rules"]) for acl in document["state"]["network_acls"])


def _connections_per_second(client: str, server_ip: str) -> tuple[float, int]:
    """Connections answered per second in a loop of LOOP_SECONDS, and how many failed."""
    argv = [sys.executable, "-m", "orchestration.lab.traffic", "loop", str(LOOP_SECONDS), "0", f"{server_ip}:{PORT}"]
    started = time.perf_counter()
    result = json.loads(run(argv, ns=client, timeout=LOOP_SECONDS + 60).stdout)
    elapsed = time.perf_counter() - started
    return (result["attempts"] - result["failed"]) / elapsed, result["failed"]


def _apply(net: RouterNet, document: dict[str, Any]) -> tuple[float, str]:
    """The wall time of one apply, and the engine's phases."""
    started = time.perf_counter()
    code, result = net.apply(document)
    seconds = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"vpc benchmark: the apply failed: {json.dumps(result)[:2000]}")
    return seconds, " ".join(f"{k}={v:.3f}" for k, v in result["timings"].items())


def bench_vpc() -> bool:
    with Namespaces("vrb") as namespaces:
        net = make_router_net(namespaces)
        start_engine(net)  # as on a router: vr-engine.service is enabled by the package
        for t in range(TIERS):
            add_tier(net, f"vt{t}")
        client = add_vm_on(net, "vt0", "c0", "02:00:0a:02:00:05", "10.2.0.5", _gateway(0))
        server = add_vm_on(net, "vt1", "s1", "02:00:0a:02:01:05", "10.2.1.5", _gateway(1))
        serve = [sys.executable, "-m", "orchestration.lab.traffic", "serve", str(PORT), "s1"]
        spawn(serve, ns=server.ns, new_session=True)
        time.sleep(0.5)
        documents = (vpc_document(net, _small_acls()), vpc_document(net, _large_acls()))
        rates: dict[int, list[float]] = {_rules(d): [] for d in documents}
        seconds: dict[int, list[float]] = {_rules(d): [] for d in documents}
        failed = 0
        # Other work on the machine moves a loop's rate by up to 2x: the sizes take turns, ROUNDS times each.
        for _ in range(ROUNDS):
            for document in documents:
                rules = _rules(document)
                took, timings = _apply(net, document)
                seconds[rules].append(took)
                rate, errors = _connections_per_second(client.ns, server.ip)
                rates[rules].append(rate)
                failed += errors
                print(f"{rules:>5} rules: applied in {took:.3f} s ({timings}), {rate:.0f} connections/s")
        large = documents[1]
        cidrs = sum(len(r["cidrs"]) for acl in large["state"]["network_acls"] for r in acl["rules"])
        print(f"vpc: {TIERS} tiers, {_rules(large)} rules, {cidrs} CIDR entries; {failed} connections failed")
        small, most = _rules(documents[0]), _rules(large)
        print(f"vpc_apply_s={statistics.median(seconds[most]):.3f} "
              f"conn_per_s_{small}_rules={statistics.median(rates[small]):.0f} "
              f"conn_per_s_{most}_rules={statistics.median(rates[most]):.0f}")
        return failed == 0
