"""`vrpipe` as a new operator meets it, run in-process on a real SQLite store (no routers, no root):
read-only commands create nothing, a bad setting or database is one clear line, help is whole."""

import json
import re
from pathlib import Path

import pytest

from orchestration.cli import _parser, main
from orchestration.commands import Command, validate
from orchestration.deployers.hostnet import control_address
from orchestration.store import Store


def vrpipe(capsys, *argv):
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_read_only_commands_create_nothing(tmp_path, capsys):
    state = tmp_path / "state"
    status, _, err = vrpipe(capsys, "--state-dir", str(state), "list")
    assert status == 0 and "no routers" in err
    status, _, err = vrpipe(capsys, "--state-dir", str(state), "state", "r1")
    assert status == 1 and "no router named 'r1'" in err and "NotFound" not in err
    for command in (["upgrade", "--dry-run"], ["watch", "--rounds", "1"]):
        status, _, err = vrpipe(capsys, "--state-dir", str(state), *command)
        assert status == 0 and "no routers (no store yet" in err, err
    status, _, err = vrpipe(capsys, "--state-dir", str(state), "upgrade", "--dry-run", "r1")
    assert status == 1 and "no router named 'r1'" in err
    for command in (["health", "r1"], ["config"]):
        vrpipe(capsys, "--state-dir", str(state), *command)
    assert not state.exists()


@pytest.mark.parametrize(
    ("db", "complaint"),
    [
        ("sqlite:///{tmp}/missing/vrpipe.db", "unable to open database file"),
        ("sqlite:///{tmp}/notes.txt", "file is not a database"),
        ("postgresql+psycopg://vrpipe@127.0.0.1:1/vrpipe", "Connection refused"),
        ("mysql://x", "database: .*sqlite"),
    ],
)
def test_a_bad_database_is_one_line_and_a_hint(tmp_path, capsys, db, complaint):
    (tmp_path / "notes.txt").write_text("not a database\n" * 100)
    rootfs = tmp_path / "rootfs"
    (rootfs / "sbin").mkdir(parents=True)
    (rootfs / "sbin/init").touch()
    argv = ["--state-dir", str(tmp_path), "--db", db.format(tmp=tmp_path), "--rootfs", str(rootfs), "create", "r1"]
    status, _, err = vrpipe(capsys, *argv)
    assert status == 1
    lines = err.strip().splitlines()
    assert len(lines) <= 2 and "Traceback" not in err and lines[-1].startswith("vrpipe: hint:")
    assert re.search(complaint, lines[0]), lines[0]


@pytest.mark.parametrize("name", ["../x", "R1", "a" * 25, "a\nb", "-r", "r_1", "r1 ", "r\udcff", "a" * 100_000])
def test_a_bad_router_name_changes_nothing(tmp_path, capsys, name):
    status, _, err = vrpipe(capsys, "--state-dir", str(tmp_path / "s"), "--rootfs", "/", "create", "--", name)
    assert status == 1 and "is not valid" in err
    assert len(err) < 400 and "\n" not in err.splitlines()[0]  # a huge name is clipped, not echoed whole
    assert not (tmp_path / "s").exists()


def test_a_bad_network_argument_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as usage:
        main(["--state-dir", str(tmp_path), "create", "r1", "--network", "eth1=bad\nbridge"])
    assert usage.value.code == 2
    assert "is not DEVICE=BRIDGE" in capsys.readouterr().err


def test_help_is_whole_and_every_option_says_what_it_does(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "send routers their whole desired state again" in text and "examples:" in text
    assert "and upgrade routers in place." in text  # the description is not cut at a comma
    parser = _parser()
    undocumented = [a.dest for a in parser._actions if a.help is None and a.dest not in ("command",)]
    assert undocumented == []


def test_listing_counts_in_words(tmp_path, capsys):
    store = Store(f"sqlite:///{tmp_path / 'vrpipe.db'}")
    store.add_router("r1", "container", control_address, settings={"rootfs": "/nonexistent"})
    store.close()
    status, out, err = vrpipe(capsys, "--state-dir", str(tmp_path), "--json", "list")
    assert status == 0 and "1 router (" in err
    (row,) = json.loads(out)
    assert (row["name"], row["status"], row["rules"]) == ("r1", "created", 0)


def test_version_config_and_completion(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.startswith("vrpipe ")
    status, out, _ = vrpipe(capsys, "--state-dir", str(tmp_path), "--json", "--accel", "kvm", "config")
    settings = json.loads(out)
    assert settings["accel"] == {"value": "kvm", "origin": "command line"}
    assert settings["host_netns"]["origin"] == "default"
    status, out, _ = vrpipe(capsys, "completion", "bash")
    assert status == 0 and "complete -o default -F _vrpipe vrpipe" in out and "recreate" in out


def test_the_lock_timeout_is_the_routers_and_the_dpkg_timeout_apts():
    args = _parser().parse_args(["--lock-timeout", "5", "upgrade", "--dry-run"])
    assert (args.lock_timeout, args.dpkg_timeout) == ("5", 120)


def test_vpc_commands_that_the_engine_refuses_are_named_and_change_nothing(tmp_path, capsys):
    """`vrpipe add/remove` of VPC sections are checked against the stored VPC before any router is reached."""
    store = Store(f"sqlite:///{tmp_path / 'vrpipe.db'}")
    store.add_router("r1", "container", control_address, settings={"rootfs": "/nonexistent"})
    example = Path(__file__).resolve().parents[2] / "examples" / "vpc-3-tier.json"
    store.record("r1", validate([Command.from_json(c) for c in json.loads(example.read_text())], {}))
    store.close()
    before = vrpipe(capsys, "--state-dir", str(tmp_path), "state", "r1")[1]
    twice = {"name": "db", "rules": [{"number": 10, "action": "deny", "protocol": "all", "traffic_type": "ingress",
                                      "cidrs": ["0.0.0.0/0"]}] * 2}
    refused = [
        (["add", "r1", "network_acls", json.dumps(twice)], "commands[0].data.rules[1].number: 10 is already"),
        (["remove", "r1", "network_acls", '{"name": "db"}'], "network ACL list db is still used by tier eth4"),
        (["add", "r1", "static_routes", '{"cidr": "10.9.0.0/16", "next_hop": "172.17.0.1"}'], "not in any network"),
        (["add", "r1", "static_routes", '{"cidr": "2001:db8::/64", "next_hop": "172.16.0.2"}'], "is IPv6"),
    ]
    for argv, complaint in refused:
        status, _, err = vrpipe(capsys, "--state-dir", str(tmp_path), *argv)
        assert status == 1 and complaint in err, err
    assert vrpipe(capsys, "--state-dir", str(tmp_path), "state", "r1")[1] == before
