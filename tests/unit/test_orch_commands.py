"""Commands are typed and checked with the engine's own model before anything is queued or stored."""

import pytest

from orchestration.commands import BadCommand, Command, validate

GUESTS = Command("add", "interfaces", {"guests": [{"device": "eth1", "gateway": "10.1.1.1/24"}]})


def dhcp(mac="02:00:00:00:00:05", ip="10.1.1.5"):
    return Command("add", "dhcp", {"mac": mac, "ip": ip, "hostname": "vm1"})


def test_a_command_needs_a_known_op_and_type():
    with pytest.raises(BadCommand, match="op 'replace'"):
        Command("replace", "dhcp", {})
    with pytest.raises(BadCommand, match="type 'dhcpv6'"):
        Command("add", "dhcpv6", {})


def test_from_json_names_where_the_bad_command_is():
    with pytest.raises(BadCommand, match=r"file.json: commands\[3\]: must be an object with exactly op, type and data"):
        Command.from_json({"op": "add", "type": "dhcp"}, "file.json: commands[3]")


def test_validate_returns_the_engines_commands_with_their_keys():
    parsed = validate([GUESTS, dhcp()], {})
    assert [(c.section, c.key) for c in parsed] == [("interfaces", ()), ("dhcp", ("02:00:00:00:00:05",))]


def test_validate_names_the_bad_command_and_field():
    with pytest.raises(BadCommand, match=r"command 2 \(dhcp add \(mac=zz\)\): commands\[2\]\.data\.mac"):
        validate([GUESTS, dhcp(), dhcp(mac="zz")], {})


def test_validate_checks_against_the_desired_state():
    with pytest.raises(BadCommand, match="not in any guest network"):
        validate([dhcp()], {})
    state = {"interfaces": {"guests": [{"device": "eth1", "gateway": "10.1.1.1/24"}]}}
    assert len(validate([dhcp()], state)) == 1


def test_describe_shows_the_key_fields():
    assert dhcp().describe() == "dhcp add (mac=02:00:00:00:00:05)"
    assert GUESTS.describe() == "interfaces add"
