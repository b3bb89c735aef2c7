"""IKEv2 remote access on a lab router (libipsec): two clients, each a system container from the same
template running charon as a client with EAP-MSCHAPv2, get addresses from the pool and reach a tier VM;
removing one user cuts that user off while the other user's session stays up.
"""

import base64
import subprocess
import time

import pytest

from orchestration.commands import Command
from orchestration.lab.lab import PUBLIC_GATEWAY
from vrpipe.run import run

from .engine_fixtures import serve, wait_for
from .orch_fixtures import orch_lab  # noqa: F401 - fixture

pytestmark = pytest.mark.e2e
SERVER_ID = "vpn.example.org"
ROUTER_PUBLIC, VM_IP, POOL = "203.0.113.11", "10.1.1.10", "10.99.0.0/28"
USERS = {"alice": ("alice-password", "203.0.113.21"), "bob": ("bob-password-2", "203.0.113.22")}
CLIENT_BACKEND = """\
charon-systemd {
	plugins {
		kernel-libipsec {
			load = yes
		}
	}
}
"""


def certificates(folder):
    """A CA and the router's certificate for SERVER_ID, made with openssl; PEM texts by name."""

    def openssl(*argv):
        subprocess.run(["openssl", *argv], cwd=folder, check=True, capture_output=True)

    curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *curve, "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=vr-test-ca", "-days", "2")
    openssl("req", *curve, "-keyout", "server.key", "-out", "server.csr", "-subj", f"/CN={SERVER_ID}")
    (folder / "san").write_text(f"subjectAltName=DNS:{SERVER_ID}\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-out", "server.pem",
            "-days", "2", "-extfile", "san")  # fmt: skip
    return {name: (folder / name).read_text() for name in ("ca.pem", "server.pem", "server.key")}


def b64(text):
    return base64.b64encode(text.encode()).decode()


def client_conf(user, password):
    return f"""\
connections {{
	ra {{
		version = 2
		remote_addrs = {ROUTER_PUBLIC}
		vips = 0.0.0.0
		encap = yes
		local {{
			auth = eap-mschapv2
			id = {user}
			eap_id = {user}
		}}
		remote {{
			auth = pubkey
			id = {SERVER_ID}
			cacerts = vr-test-ca.pem
		}}
		children {{
			ra {{
				remote_ts = 10.1.1.0/24
			}}
		}}
	}}
}}
secrets {{
	eap-{user} {{
		id = {user}
		secret = 0s{b64(password)}
	}}
}}
"""


@pytest.fixture(scope="module")
def access(orch_lab, tmp_path_factory):  # noqa: F811
    manager, lab = orch_lab
    pem = certificates(tmp_path_factory.mktemp("pki"))
    lab.create_router("r1")
    manager.start("r1")
    vm = lab.add_vm("r1", 1, 0)
    run(["ip", "address", "add", f"{VM_IP}/24", "dev", "eth0"], ns=vm.ns)
    run(["ip", "route", "add", "default", "via", "10.1.1.1"], ns=vm.ns)
    serve(vm.ns, 7000, "tier-vm")
    interfaces = {
        "guests": [{"device": "eth1", "gateway": "10.1.1.1/24"}],
        "public": [{"device": "eth2", "addresses": [f"{ROUTER_PUBLIC}/24"], "gateway": PUBLIC_GATEWAY}],
    }
    remote_access = {
        "local_address": ROUTER_PUBLIC,
        "pool": POOL,
        "tiers": ["eth1"],
        "server_id": SERVER_ID,
        "certificate": b64(pem["server.pem"]),
        "private_key": b64(pem["server.key"]),
    }
    users = [Command("add", "vpn_users", {"name": u, "password": p}) for u, (p, _) in USERS.items()]
    commands = [Command("add", "interfaces", interfaces), Command("add", "ipsec", {"backend": "libipsec"})]
    outcome = manager.apply("r1", [*commands, Command("add", "remote_access", remote_access), *users])
    assert outcome.ok, outcome.error
    clients = {
        user: _client(manager, lab, user, password, address, pem["ca.pem"])
        for user, (password, address) in USERS.items()
    }
    return manager, clients


def _client(manager, lab, user, password, address, ca):
    """A container from the template with only a public leg address and charon configured as a client."""
    name = f"c-{user}"
    lab.create_router(name)
    manager.start(name)
    router = manager.store.router(name)
    deployer = manager.deployer(router)

    def execute(*argv):
        status, out = deployer.execute(router, list(argv))
        assert status == 0, out
        return out

    execute("ip", "address", "add", f"{address}/24", "dev", "eth2")
    execute("ip", "link", "set", "eth2", "up")
    deployer.copy(router, CLIENT_BACKEND, "/etc/strongswan.d/vr-client.conf")
    deployer.copy(router, ca, "/etc/swanctl/x509ca/vr-test-ca.pem")
    deployer.copy(router, client_conf(user, password), "/etc/swanctl/conf.d/client.conf")
    execute("systemctl", "restart", "strongswan")
    execute("swanctl", "--initiate", "--child", "ra", "--timeout", "20")
    return execute


def client_reaches_vm(client, timeout=2):
    status_out = client("python3", "-c", CONNECT.format(host=VM_IP, timeout=timeout))
    return status_out.strip()


CONNECT = """
import socket
try:
    with socket.create_connection(("{host}", 7000), timeout={timeout}) as c:
        print(c.recv(200).decode().strip())
except OSError:
    pass
"""


def test_remote_access_clients_get_pool_addresses_and_reach_the_tier_vm(access):
    _, clients = access
    for user, client in clients.items():
        answer = wait_for(lambda c=client: client_reaches_vm(c), f"{user} reaching the tier VM", timeout=30)
        assert answer.startswith("tier-vm from 10.99.0."), answer  # the VM sees the pool address


def test_removing_a_user_cuts_that_user_off_and_keeps_the_other_session(access):
    manager, clients = access
    outcome = manager.apply("r1", [Command("remove", "vpn_users", {"name": "alice"})], aggregate=False)
    assert outcome[0].ok, outcome[0].error
    assert client_reaches_vm(clients["alice"], timeout=2) == ""
    assert client_reaches_vm(clients["bob"]).startswith("tier-vm")
    # alice cannot come back: her secret is gone from the router
    status, out = manager.deployer(manager.store.router("c-alice")).execute(
        manager.store.router("c-alice"), ["swanctl", "--initiate", "--child", "ra", "--timeout", "10"]
    )
    assert status != 0, out
    time.sleep(1)
    assert client_reaches_vm(clients["bob"]).startswith("tier-vm")
