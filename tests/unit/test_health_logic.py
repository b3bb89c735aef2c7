"""Pure logic of health and metrics: reading DNS replies, replaced code, the apply log, haproxy and nftables
figures; the watch's verdict and the store's count of failed checks in a row (on an SQLite file)."""

import json
import socket
import struct

import pytest
from vr import health, metrics, services

from orchestration.cli import main as cli_main
from orchestration.deployers.hostnet import control_address
from orchestration.store import Store
from orchestration.watch import WatchOptions, verdict
from vrpipe.errors import SettingsError


def dns_reply(query_id, name, addresses):
    question = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack("!HH", 1, 1)
    header = struct.pack("!HHHHHH", query_id, 0x8180, 1, len(addresses), 0, 0)
    answers = b"".join(struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton(a) for a in addresses)
    return header + question + answers, len(header) + len(question)


def test_dns_answers_are_read_past_the_repeated_question():
    reply, offset = dns_reply(7, "vm1", ["10.1.1.5", "10.1.1.6"])
    assert health.parse_addresses(reply, offset) == ["10.1.1.5", "10.1.1.6"]
    reply, offset = dns_reply(7, "nothing.invalid", [])
    assert health.parse_addresses(reply, offset) == []


def test_replaced_libraries_are_found_in_maps_and_other_deleted_files_are_not():
    maps = (
        "7f00-7f01 r-xp 00000000 08:01 123 /usr/lib/x86_64-linux-gnu/libssl.so.3 (deleted)\n"
        "7f01-7f02 r-xp 00000000 08:01 124 /usr/lib/x86_64-linux-gnu/libc.so.6\n"
        "7f02-7f03 rw-s 00000000 00:01 125 /dev/shm/scratch (deleted)\n"
        "7f03-7f04 r-xp 00001000 08:01 123 /usr/lib/x86_64-linux-gnu/libssl.so.3 (deleted)\n"
    )
    assert health.stale_files(maps) == ["/usr/lib/x86_64-linux-gnu/libssl.so.3"]


def test_headroom_fails_then_warns_below_its_thresholds():
    assert [health.headroom_status(f, 0.05, 0.15) for f in (0.01, 0.10, 0.5)] == ["fail", "warn", "ok"]


def test_an_apply_log_line_gives_its_time_and_summary():
    when, summary = health.apply_line('2026-12-01 13:00:00,250 {"ok":true,"kind":"state"}')
    assert summary == {"ok": True, "kind": "state"} and when % 1 == pytest.approx(0.25)
    assert health.apply_line("garbage") is None


def test_the_apply_log_is_counted_as_it_grows_and_after_rotation(tmp_path):
    path = tmp_path / "apply.log"
    lines = [
        {"ok": True, "kind": "state", "timings": {"render": 0.02, "swap": 0.01}},
        {"ok": True, "kind": "state", "unchanged": True, "timings": {"unchanged": 0.01}},
        {"ok": False, "kind": "batch", "problems": [], "timings": {"validate": 0.3}},
    ]
    path.write_text("".join(f"2026-12-01 13:00:0{i},000 {json.dumps(line)}\n" for i, line in enumerate(lines)))
    log = metrics.ApplyLog(path)
    log.update()
    assert log.outcomes == {("state", "ok"): 1, ("state", "unchanged"): 1, ("batch", "invalid"): 1}
    assert log.durations[:4] == [2, 2, 2, 3] and log.seconds == pytest.approx(0.34)
    with path.open("a") as f:
        f.write('2026-12-01 13:00:05,000 {"ok":false,"kind":"batch","failed":{}}\n2026-12-01 13:00:06,000 {"ok"')
    log.update()
    assert log.outcomes[("batch", "failed")] == 1 and log.last[1] is False
    path.rename(tmp_path / "apply.log.1")
    path.write_text('2026-12-01 13:01:00,000 {"ok":true,"kind":"reapply"}\n')
    log.update()
    assert log.outcomes[("reapply", "ok")] == 1 and log.last[1] is True


def test_haproxy_rows_become_up_and_session_figures():
    rows = [
        {"pxname": "be_web", "svname": "vm1", "status": "UP", "scur": "3", "stot": "40"},
        {"pxname": "be_web", "svname": "BACKEND", "status": "DOWN", "scur": "", "stot": "41"},
    ]
    up, current, total = metrics.haproxy_families(rows)
    assert up.samples == [(("be_web", "vm1"), 1), (("be_web", "BACKEND"), 0)]
    assert current.samples[0] == (("be_web", "vm1"), 3.0) and total.samples[1] == (("be_web", "BACKEND"), 41.0)


def test_nftables_counters_are_summed_by_chain_and_verdict():
    counter = {"counter": {"packets": 5, "bytes": 300}}
    listing = {"nftables": [
        {"table": {"name": "vr"}},
        {"rule": {"chain": "input", "expr": [counter, {"drop": None}]}},
        {"rule": {"chain": "input", "expr": [{"match": {}}, {"accept": None}]}},
        {"rule": {"chain": "forward", "expr": [counter, {"drop": None}]}},
        {"rule": {"chain": "forward", "expr": [counter, {"drop": None}]}},
    ]}
    packets, octets = metrics.nftables_families(listing)
    assert packets.samples == [(("forward", "drop"), 10), (("input", "drop"), 5)]
    assert octets.samples[0] == (("forward", "drop"), 600)


def test_the_watch_verdict_names_the_failed_checks():
    assert verdict({"ok": True}) == (True, None)
    assert verdict({"ok": False, "problems": ["dnsmasq: not running", "dns: no answer"]}) == (
        False, "dnsmasq: not running; dns: no answer")
    assert verdict({"ok": False, "error": "vr-health: internal error"}) == (False, "vr-health: internal error")


def test_bad_watch_options_are_refused():
    for options in ({"interval": 0}, {"unhealthy_after": 0}, {"action": "reboot"}):
        with pytest.raises(SettingsError):
            WatchOptions(**options)


def test_a_router_turns_unhealthy_after_n_failures_in_a_row_and_healthy_at_once(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'vrpipe.db'}")
    try:
        store.add_router("r1", "container", control_address)
        assert store.router("r1").health.state is None
        assert store.record_health("r1", True, None, 2).state == "healthy"
        first = store.record_health("r1", False, "dnsmasq: not running", 2)
        assert (first.state, first.failures) == ("healthy", 1)
        second = store.record_health("r1", False, "dnsmasq: not running", 2)
        assert (second.state, second.failures, second.detail) == ("unhealthy", 2, "dnsmasq: not running")
        kept = store.router("r1").health
        assert kept == second and kept.at is not None and kept.at.tzinfo is not None
        assert store.record_health("r1", True, None, 2).state == "healthy"
        assert store.router("r1").health.failures == 0
    finally:
        store.close()


def test_vrpipe_watch_on_an_empty_store_ends_after_its_rounds(tmp_path, capsys):
    Store(f"sqlite:///{tmp_path / 'vrpipe.db'}").close()  # a store without routers (no store: nothing is made)
    assert cli_main(["--state-dir", str(tmp_path), "watch", "--rounds", "1", "--interval", "0.1"]) == 0
    assert "watch: 0/0 routers healthy" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:
        cli_main(["--state-dir", str(tmp_path), "watch", "--interval", "0"])
    assert refused.value.code == 2 and "'0' is not a number of seconds above 0" in capsys.readouterr().err


def test_a_unit_reloading_counts_as_active_as_systemctls_exit_status_has_it(monkeypatch):
    printed = "active\nreloading\nfailed\ninactive\n"
    monkeypatch.setattr(services, "run", lambda argv, check=True: printed)
    up = services.SystemdServices().active(["haproxy", "dnsmasq", "vr-metadata", "strongswan"])
    assert up == {"haproxy": True, "dnsmasq": True, "vr-metadata": False, "strongswan": False}
