"""The VPN sections: validation (each bad field named), what they render for swanctl and nftables, and
the parsing of swanctl's listings and charon's log that remote-access removal and health rely on."""

import base64
import copy
import json
from pathlib import Path

import pytest
from vr import nftables, vpn
from vr.document import Invalid, load_state, parse_document, state_document
from vr.layout import Layout
from vr.model import RouterState

CERT = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").decode()
KEY = base64.b64encode(b"-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n").decode()
INTERFACES = {
    "guests": [{"device": "eth1", "gateway": "10.1.1.1/24"}, {"device": "eth3", "gateway": "10.1.2.1/24"}],
    "public": [{"device": "eth2", "addresses": ["203.0.113.10/24"], "gateway": "203.0.113.1"}],
}


def vpn_state():
    return {
        "interfaces": copy.deepcopy(INTERFACES),
        "ipsec": {"backend": "libipsec"},
        "vpn_gateways": [
            {
                "name": "site-b",
                "local_address": "203.0.113.10",
                "remote_address": "198.51.100.20",
                "remote_cidrs": ["10.2.0.0/16"],
                "local_tiers": ["eth1"],
                "psk": "a-long-enough-secret-key",
                "dpd_seconds": 10,
            },
            {
                "name": "site-c",
                "local_address": "203.0.113.10",
                "remote_address": "198.51.100.30",
                "remote_cidrs": ["10.3.0.0/24", "10.4.0.0/24"],
                "local_tiers": ["eth1", "eth3"],
                "certificate": CERT,
                "private_key": KEY,
                "ca_certificate": CERT,
                "remote_id": "CN=site-c",
                "ike_proposals": ["aes256gcm16-prfsha256-ecp256"],
                "esp_proposals": ["aes256gcm16"],
            },
        ],
        "remote_access": {
            "local_address": "203.0.113.10",
            "pool": "10.99.0.0/24",
            "tiers": ["eth3"],
            "server_id": "vpn.example.org",
            "certificate": CERT,
            "private_key": KEY,
        },
        "vpn_users": [{"name": "alice", "password": "alice-password"}, {"name": "bob", "password": "bob-password"}],
    }


def doc(state):
    return {"schema": 1, "kind": "state", "state": state}


def parsed(state=None):
    return parse_document(doc(state or vpn_state()), RouterState()).state


def problems(document, current=None):
    with pytest.raises(Invalid) as caught:
        parse_document(document, current or RouterState())
    return {p.where: p.error for p in caught.value.problems}


def test_vpn_state_parses_and_round_trips():
    state = parsed()
    assert load_state(json.loads(json.dumps(state_document(state)))) == state
    assert state_document(RouterState())["state"]["remote_access"]["enabled"] is False
    assert load_state(state_document(RouterState())) == RouterState()


def _set(state, path, value):
    *parents, last = path.replace("]", "").replace("[", ".").split(".")
    target = state
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    target[int(last) if last.isdigit() else last] = value


BAD = [
    ("vpn_gateways[0].remote_cidrs", ["10.1.1.128/25"], "overlaps tier eth1"),
    ("vpn_gateways[1].remote_cidrs", ["10.2.5.0/24"], "overlaps 10.2.0.0/16"),
    ("vpn_gateways[0].ike_proposals", ["aes256-sha257-modp2048"], "unknown algorithm 'sha257'"),
    ("vpn_gateways[0].ike_proposals", ["aes256-sha256"], "needs a key exchange group"),
    ("vpn_gateways[0].esp_proposals", ["aes256"], "needs an integrity algorithm"),
    ("vpn_gateways[0].psk", "short-key", "at least 16"),
    ("vpn_gateways[0].local_address", "203.0.113.99", "not one of the router's public addresses"),
    ("vpn_gateways[0].local_tiers", ["eth9"], "not a tier"),
    ("vpn_gateways[0].remote_cidrs", [], "at least one"),
    ("vpn_gateways[1].certificate", base64.b64encode(b"not pem").decode(), "not a PEM certificate"),
    ("vpn_gateways[1].remote_id", None, "is required with certificates"),
    ("vpn_gateways[0].psk", None, "is required unless"),
    ("vpn_users[1].name", "alice", "duplicate vpn_users entry"),
    ("vpn_users[0].password", "short", "at least 8"),
    ("remote_access.pool", "10.1.2.0/25", "overlaps 10.1.2.0/24"),
    ("remote_access.pool", "10.2.1.0/24", "overlaps 10.2.0.0/16"),
    ("remote_access.server_id", None, "is required when remote access is enabled"),
    ("ipsec.backend", "xfrm", "not one of"),
]


@pytest.mark.parametrize(("path", "value", "message"), BAD, ids=[f"{p}={v}" for p, v, _ in BAD])
def test_bad_vpn_field_is_named(path, value, message):
    state = vpn_state()
    _set(state, path, value)
    found = problems(doc(state))
    where = "state.vpn_users[1]" if message.startswith("duplicate") else f"state.{path}"
    assert any(w.startswith(where) and message in e for w, e in found.items()), found


def test_a_batch_naming_an_overlapping_cidr_is_refused_and_names_the_command():
    current = parsed()
    gateway = {**vpn_state()["vpn_gateways"][0], "name": "site-d", "remote_cidrs": ["10.1.2.0/24"]}
    batch = {"schema": 1, "kind": "batch", "commands": [{"op": "add", "type": "vpn_gateways", "data": gateway}]}
    assert "overlaps tier eth3" in problems(batch, current)["commands[0].remote_cidrs"]


def test_swanctl_config_holds_each_connection_and_base64_secrets(tmp_path):
    layout = Layout(tmp_path)
    files = vpn.render(parsed(), layout)
    conf = files[tmp_path / vpn.SWANCTL]
    assert "gw-site-b {" in conf and "gw-site-c {" in conf and "remote-access {" in conf
    assert "remote_ts = 10.3.0.0/24,10.4.0.0/24" in conf and "local_ts = 10.1.1.0/24,10.1.2.0/24" in conf
    assert "dpd_delay = 10s" in conf and "encap = yes" in conf and "addrs = 10.99.0.0/24" in conf
    assert "a-long-enough-secret-key" not in conf  # secrets only as 0s<base64>
    assert f"secret = 0s{base64.b64encode(b'a-long-enough-secret-key').decode()}" in conf
    assert "id = alice" in conf and "id = bob" in conf
    key_file = tmp_path / "etc/swanctl/private/vr-gw-site-c.pem"
    assert files[key_file].startswith("-----BEGIN PRIVATE KEY-----")
    assert "load = yes" in files[tmp_path / vpn.STRONGSWAN]
    assert vpn.render(RouterState(), layout) == {}


def test_nftables_lets_tunnel_traffic_through_and_skips_source_nat_for_it(tmp_path):
    text = nftables.render(parsed(), Layout(tmp_path))[tmp_path / "etc/vr/nftables.nft"]
    for element in ("10.1.1.0/24 . 10.2.0.0/16", "10.1.2.0/24 . 10.4.0.0/24", "10.1.2.0/24 . 10.99.0.0/24"):
        assert element in text
    assert "10.1.2.0/24 . 10.2.0.0/16" not in text  # site-b reaches eth1 only
    assert 'oifname "ipsec0" ip saddr . ip daddr @vpn_routes accept' in text
    assert "ip saddr . ip daddr @vpn_routes return" in text
    assert "ip daddr @vpn_addresses udp dport { 500, 4500 } accept" in text and "esp accept" not in text
    assert "type ipv4_addr;\n\t\telements = {\n\t\t\t203.0.113.10\n" in text  # vpn_addresses
    kernel = parsed({**vpn_state(), "ipsec": {"backend": "kernel"}})
    text = nftables.render(kernel, Layout(tmp_path))[tmp_path / "etc/vr/nftables.nft"]
    assert "rt ipsec exists ip saddr . ip daddr @vpn_routes accept" in text and "meta l4proto esp accept" in text


LISTING = """\
remote-access: #7, ESTABLISHED, IKEv2, 5f1e2d3c4b5a6978_i 0123456789abcdef_r*
  local  'vpn.example.org' @ 203.0.113.10[4500]
  remote '198.51.100.5' @ 198.51.100.5[4500] EAP: 'alice' [10.99.0.1]
  AES_CBC-256/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/MODP_2048
  established 12s ago, rekeying in 13907s
  remote-access: #3, reqid 1, INSTALLED, TUNNEL-in-UDP, ESP:AES_CBC-256/HMAC_SHA2_256_128
    local  10.1.2.0/24
    remote 10.99.0.1/32
remote-access: #8, ESTABLISHED, IKEv2, 1111111111111111_i 2222222222222222_r*
  local  'vpn.example.org' @ 203.0.113.10[4500]
  remote 'bob' @ 198.51.100.6[4500] [10.99.0.2]
gw-site-b: #9, CONNECTING, IKEv2, 3333333333333333_i* 0000000000000000_r
  local  '203.0.113.10' @ 203.0.113.10[500]
"""


def test_sessions_and_established_tunnels_are_read_from_the_listing():
    assert vpn.sessions(LISTING) == {7: "alice", 8: "bob"}
    assert vpn.established(LISTING) == {"remote-access"}


def test_a_failed_tunnel_says_why_from_charons_log():
    log = "\n".join(
        [
            "Dec  1 16:00:01 09[IKE] <gw-site-b|1> initiating IKE_SA gw-site-b[1] to 198.51.100.20",
            "Dec  1 16:00:01 10[IKE] <gw-site-c|2> retransmit 1 of request with message ID 0",
            "Dec  1 16:00:02 11[ENC] <gw-site-b|1> parsed IKE_AUTH response 1 [ N(AUTH_FAILED) ]",
            "Dec  1 16:00:02 11[IKE] <gw-site-b|1> received AUTHENTICATION_FAILED notify error",
            "Dec  1 16:00:03 12[IKE] <gw-site-b|2> retransmit 1 of request with message ID 1",
        ]
    )
    assert vpn.failure_reason(log, "gw-site-b").startswith("authentication failed")
    assert vpn.failure_reason(log, "gw-site-c") == "the peer does not answer"
    assert vpn.failure_reason(log, "gw-site-x") == vpn.NOT_YET


def test_nft_file_of_a_vpn_state_loads(tmp_path):
    """The rendered table passes `nft -c` (skipped where nft cannot run)."""
    import shutil
    import subprocess

    if not shutil.which("nft"):
        pytest.skip("nft is not installed")
    path = Path(tmp_path / "t.nft")
    path.write_text(nftables.render(parsed(), Layout(tmp_path))[tmp_path / "etc/vr/nftables.nft"])
    result = subprocess.run(["nft", "-c", "-f", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr

