"""vr-restart-stale's logic on a made-up /proc: which processes run replaced code, their units, and the way
each unit is renewed (the e2e test test_upgrade_restarts.py does it on a router)."""

import os

from vr import restarts

HAPROXY_MAPS = """\
55d0 r-xp 00000000 08:01 1234   /usr/sbin/haproxy
7f00 r-xp 00000000 08:01 2345   /usr/lib/x86_64-linux-gnu/libssl.so.3 (deleted)
7f10 r--p 00000000 08:01 2346   /lab/r1/merged/usr/lib/x86_64-linux-gnu/libcrypto.so.3 (deleted)
7f20 rw-s 00000000 00:01 99     /dev/shm/haproxy-stats (deleted)
7f30 rw-p 00000000 00:00 0
"""
CLEAN_MAPS = "55d0 r-xp 00000000 08:01 1 /usr/sbin/dnsmasq\n"


def fake_process(proc, pid, command, cgroup, maps, exe="/usr/bin/true"):
    folder = proc / str(pid)
    folder.mkdir()
    (folder / "comm").write_text(command + "\n")
    (folder / "cgroup").write_text(f"0::{cgroup}\n")
    (folder / "maps").write_text(maps)
    os.symlink(exe, folder / "exe")


def test_finds_deleted_code_and_its_unit_but_not_deleted_data(tmp_path):
    fake_process(tmp_path, 1, "systemd", "/init.scope", CLEAN_MAPS, exe="/usr/lib/systemd/systemd (deleted)")
    fake_process(tmp_path, 40, "haproxy", "/lab/r1/system.slice/haproxy.service", HAPROXY_MAPS)
    fake_process(tmp_path, 41, "dnsmasq", "/system.slice/dnsmasq.service", CLEAN_MAPS)
    fake_process(tmp_path, 42, "bash", "/user.slice/session-3.scope", HAPROXY_MAPS)
    found = {p.pid: p for p in restarts.scan(str(tmp_path))}
    assert sorted(found) == [1, 40, 42]
    assert found[1].unit == restarts.PID1 and found[1].files == ("/usr/lib/systemd/systemd",)
    assert found[40].unit == "haproxy.service"  # the host's part of a container's cgroup path does not matter
    # a sandboxed unit's maps may name a file by its path from the machine's root
    libs = ("/lab/r1/merged/usr/lib/x86_64-linux-gnu/libcrypto.so.3", "/usr/lib/x86_64-linux-gnu/libssl.so.3")
    assert found[40].files == libs


def test_each_unit_is_renewed_its_least_disruptive_way(tmp_path):
    libssl = ("/usr/lib/x86_64-linux-gnu/libssl.so.3",)
    stale = [
        restarts.Stale(40, "haproxy", "haproxy.service", libssl),
        restarts.Stale(41, "haproxy", "haproxy.service", libssl),
        restarts.Stale(50, "sshd", "ssh.service", libssl),
        restarts.Stale(60, "cron", "cron.service", libssl),
        restarts.Stale(70, "dbus-daemon", "dbus.service", libssl),
        restarts.Stale(80, "bash", "session-3.scope", libssl),
        restarts.Stale(1, "systemd", restarts.PID1, libssl),
    ]
    renewals = {r.unit: r for r in restarts.plan(stale)}
    assert restarts.plan(stale)[0].unit == restarts.PID1  # systemd first: it then restarts the others
    assert {u: r.action for u, r in renewals.items()} == {
        restarts.PID1: "daemon-reexec",
        "cron.service": "restart",
        "dbus.service": "none",
        "haproxy.service": "reload",
        "session-3.scope": "none",
        "ssh.service": "restart",
    }
    assert renewals["haproxy.service"].why == f"haproxy[40], haproxy[41] map old {libssl[0]}"
    assert "sessions survive" in renewals["ssh.service"].how and "reboot" in renewals["dbus.service"].how


def test_what_still_runs_old_code_after_the_renewals():
    acted = {"haproxy.service", "ssh.service", restarts.PID1}
    mains = {"haproxy.service": 40, "ssh.service": 50, restarts.PID1: 1}
    now = 0.0
    assert restarts._failed(restarts.Stale(40, "haproxy", "haproxy.service", ()), acted, mains, now)
    assert restarts._failed(restarts.Stale(1, "systemd", restarts.PID1, ()), acted, mains, now)
    assert restarts._failed(restarts.Stale(70, "dbus-daemon", "dbus.service", ()), acted, mains, now)
    assert not restarts._failed(restarts.Stale(80, "bash", "session-3.scope", ()), acted, mains, now)
    assert not restarts._failed(restarts.Stale(2**22 + 1, "sshd-session", "ssh.service", ()), acted, mains, 1e12)
