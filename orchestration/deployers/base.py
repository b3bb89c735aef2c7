"""What every deployer does (CloudStack's VirtualRouterDeployer): create, start, stop and destroy a router,
plug (`prepare`) and unplug (`cleanup`) its networks, and run a router program (`execute`) or put a file on
it (`copy`) through the transport that reaches it. Routers always have eth0 on the control network.
"""

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from vr.boot import BootParams, format_params

from orchestration.store import Network, Router
from orchestration.transports import Transport

CONTROL_DEVICE = "eth0"
CONTROL_PREFIX = 16  # control addresses are link-local, 169.254.0.0/16


@dataclass(frozen=True)
class Boot:
    """What a router is told at boot: its name, control address and the manager's public key."""

    hostname: str
    control_address: str
    authorized_key: str

    def params(self) -> BootParams:
        return BootParams(
            hostname=self.hostname,
            control=f"{self.control_address}/{CONTROL_PREFIX}",
            control_if=CONTROL_DEVICE,
            authorized_key=self.authorized_key,
        )

    def text(self) -> str:
        """The boot parameters as the router's vr-boot reads them (key=value words)."""
        return format_params(self.params())


class Deployer(abc.ABC):
    """`transport(router)` is how `execute` and `copy` reach a running router."""

    kind = ""
    boot_timeout = 90.0  # seconds from start until the router answers
    hot_plug = False  # whether `prepare`/`cleanup` can change the NICs of a running router

    def __init__(self, transport: Callable[[str], Transport]):
        self._transport = transport

    @abc.abstractmethod
    def create(self, router: Router, boot: Boot) -> None: ...

    @abc.abstractmethod
    def start(self, router: Router) -> None: ...

    @abc.abstractmethod
    def stop(self, router: Router) -> None: ...

    @abc.abstractmethod
    def destroy(self, router: Router) -> None: ...

    @abc.abstractmethod
    def running(self, router: Router) -> bool: ...

    @abc.abstractmethod
    def prepare(self, router: Router, network: Network) -> None:
        """Plug the NIC of `network` (one of `router.networks`) into the router."""

    @abc.abstractmethod
    def cleanup(self, router: Router, network: Network) -> None:
        """Unplug the NIC of `network` (`router.networks` still holds it); it returns once the NIC is gone."""

    def execute(self, router: Router, argv: Sequence[str], input: str | None = None) -> tuple[int, str]:
        """Run a router program; return (exit status, stdout)."""
        return self._transport(router.name).execute(argv, input=input)

    def copy(self, router: Router, text: str, path: str) -> None:
        self._transport(router.name).copy(text, path)
