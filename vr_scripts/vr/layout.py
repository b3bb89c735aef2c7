"""Where the engine keeps everything it writes: one root (VR_ROOT, `/` on a router) under which every
config file, the persisted state, the DHCP leases, pid files and the apply log live, so that several
routers can share one machine in tests.
"""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from .resident import ENGINE_SOCKET


@dataclass(frozen=True)
class Layout:
    root: Path

    @classmethod
    def from_env(cls) -> Self:
        return cls(Path(os.environ.get("VR_ROOT", "/")))

    def _at(self, path: str) -> Path:
        return self.root / path

    @property
    def nftables(self) -> Path:
        return self._at("etc/vr/nftables.nft")

    @property
    def dnsmasq_conf(self) -> Path:
        return self._at("etc/dnsmasq.d/vr.conf")

    @property
    def dhcp_hosts(self) -> Path:
        return self._at("etc/vr/dhcp-hosts")

    @property
    def dhcp_options(self) -> Path:
        return self._at("etc/vr/dhcp-options")

    @property
    def dns_hosts(self) -> Path:
        return self._at("etc/vr/hosts")

    @property
    def leases(self) -> Path:
        return self._at("var/lib/misc/dnsmasq.leases")

    @property
    def haproxy_cfg(self) -> Path:
        return self._at("etc/haproxy/haproxy.cfg")

    @property
    def haproxy_socket(self) -> Path:
        return self._at("run/haproxy-vr.sock")  # haproxy's stats socket (vr-health, vr-metrics)

    @property
    def metadata(self) -> Path:
        return self._at("var/lib/vr/metadata.json")

    @property
    def passwords_served(self) -> Path:
        return self._at("var/lib/vr/passwords-served.json")

    @property
    def state(self) -> Path:
        return self._at("var/lib/vr/state.json")

    @property
    def journal(self) -> Path:
        return self._at("var/lib/vr/state.journal")

    @property
    def state_cache(self) -> Path:
        return self._at("var/lib/vr/state.cache")

    @property
    def applied(self) -> Path:
        return self._at("var/lib/vr/applied.json")

    @property
    def log(self) -> Path:
        return self._at("var/log/vr/apply.log")

    @property
    def engine_socket(self) -> Path:
        return self._at(ENGINE_SOCKET)

    @property
    def lock(self) -> Path:
        return self._at("run/vr/apply.lock")

    @property
    def template_cache(self) -> Path:
        return self._at("run/vr/templates")  # compiled Jinja2 templates, for this boot

    @property
    def hostname(self) -> Path:
        return self._at("etc/hostname")  # written by vr-boot: names this router's member of a redundant pair

    @property
    def keepalived_conf(self) -> Path:
        return self._at("etc/vr/keepalived.conf")

    @property
    def conntrackd_conf(self) -> Path:
        return self._at("etc/vr/conntrackd.conf")

    @property
    def conntrackd_socket(self) -> Path:
        return self._at("run/vr/conntrackd.ctl")

    @property
    def conntrackd_lock(self) -> Path:
        return self._at("run/vr/conntrackd.lock")

    @property
    def vrrp_addresses(self) -> Path:
        return self._at("etc/vr/vrrp.json")  # what the MASTER holds, for vr-vrrp

    @property
    def vrrp_state(self) -> Path:
        return self._at("run/vr/vrrp-state")  # MASTER or BACKUP, as vr-vrrp last made it

    @property
    def vrrp_lock(self) -> Path:
        return self._at("run/vr/vrrp.lock")  # held while the virtual addresses are taken or given up

    @property
    def vrrp_handover(self) -> Path:
        return self._at("run/vr/vrrp-handover")  # keepalived's track file: 1 gives mastership away

    @property
    def vrrp_fifo(self) -> Path:
        return self._at("run/vr/keepalived.fifo")

    @property
    def probe_pid(self) -> Path:
        return self._at("run/vr/probe.pid")  # vr-probe's watcher

    @property
    def probe_report(self) -> Path:
        return self._at("run/vr/probe.json")  # what it counted, written when it ends

    def make_directories(self) -> None:
        """The directories the engine writes into; a fresh router root has none of them."""
        files = (self.nftables, self.dnsmasq_conf, self.leases, self.haproxy_cfg, self.state, self.log, self.lock)
        for path in files:
            path.parent.mkdir(parents=True, exist_ok=True)

    def pid_file(self, service: str) -> Path:
        return self._at(f"run/vr/{service}.pid")
