"""The hypervisor host's network when it has no namespace of its own (host_netns unset, the default): the
control bridge and a NIC's host end go into the network the manager runs in. That side runs here inside a
namespace the test made, standing in for this host's own network.
"""

import sys

import pytest

from orchestration.deployers.hostnet import CONTROL_BRIDGE, CONTROL_GATEWAY
from orchestration.lab.netns import Namespaces
from vrpipe.run import run

pytestmark = pytest.mark.e2e
HOST_SIDE = """
import sys
from orchestration.deployers.hostnet import CONTROL_BRIDGE, ensure_host, plug
ensure_host(None)
ensure_host(None)  # idempotent
plug(None, CONTROL_BRIDGE, sys.argv[1], sys.argv[2], "eth0", "0a:00:00:01:00:00")
"""


def test_without_a_host_namespace_the_control_bridge_and_nics_are_in_this_hosts_network():
    with Namespaces(prefix="voh") as namespaces:
        host, router = namespaces.add("host"), namespaces.add("r")
        run([sys.executable, "-c", HOST_SIDE, "voh0", router], ns=host)

        assert "None" not in run(["ip", "netns", "list"]).stdout.split()
        assert f"{CONTROL_GATEWAY}/16" in run(["ip", "-br", "address", "show", "dev", CONTROL_BRIDGE], ns=host).stdout
        assert f"master {CONTROL_BRIDGE}" in run(["ip", "link", "show", "voh0"], ns=host).stdout
        run(["ip", "address", "add", "169.254.1.2/16", "dev", "eth0"], ns=router)
        assert run(["ping", "-c", "1", "-W", "2", CONTROL_GATEWAY], ns=router, check=False).returncode == 0
