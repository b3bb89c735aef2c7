"""The manager's settings: one table (SETTINGS) drives `STATE_DIR/config.json`, the VRPIPE_* environment,
`vrpipe`'s global options with their help, and `vrpipe config`; ManagerConfig is the validated result.
Outside the lab the manager reaches routers from where it runs: no namespace is assumed.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestration.transports import SshOptions
from vrpipe.errors import SettingsError
from vrpipe.settings import Resolved, Setting, Table, count, number, optional_text, path, text

CONFIG_FILE = "config.json"
DEFAULT_STATE_DIR = Path("/var/lib/vrpipe")
ACCELERATORS = ("tcg", "kvm")


def _database(value: Any) -> str:
    url = text(value)
    if url and not url.startswith(("sqlite:", "postgresql")):
        raise ValueError("use sqlite:///PATH or postgresql+psycopg://USER@HOST/DB")
    return url


def _replay_wait(value: Any) -> float:
    seconds = number(value)
    if seconds > 600:
        raise ValueError("give 0 to 600 seconds")
    return seconds


def _netns(value: Any) -> str | None:
    name = optional_text(value)
    if name and (len(name) > 64 or "/" in name or name in (".", "..")):
        raise ValueError("not a network namespace name")
    return name


SETTINGS = Table(
    "manager",
    [
        Setting("state_dir", "where the manager keeps its store, SSH key and router files",
                DEFAULT_STATE_DIR, path),
        Setting("database", "SQLAlchemy URL of the store (empty: SQLite in the state directory)", "", _database),
        Setting("rootfs", "the template rootfs new container routers boot", None, path),
        Setting("image", "the template qcow2 new qemu and libvirt routers boot (a libvirt host's own path)",
                None, path),
        Setting("accel", "the qemu and libvirt deployers' accelerator", "tcg", text, ACCELERATORS),
        Setting("libvirt_uri", "the libvirt host new libvirt routers run on (create --host)", "qemu:///system", text),
        Setting("libvirt_pool", "the libvirt storage pool holding the routers' disks", "vrpipe", text),
        Setting("libvirt_pool_dir", "where that pool is made on a host that lacks it",
                Path("/var/lib/libvirt/images/vrpipe"), path),
        Setting("host_netns", "network namespace holding the routers' host bridges (empty: this host's own)",
                None, _netns),
        Setting("ssh_netns", "network namespace ssh runs in (empty: this host's own)", None, _netns),
        Setting("netns_prefix", "prefix of the container routers' network namespaces", "vrp-", text),
        Setting("lock_timeout", "seconds to wait for a router's lock held by another vrpipe", 120.0, number),
        Setting("upgrade_probe_interval", "seconds between the probes of what a router serves while it upgrades "
                "(0: not watched)", 0.2, number),
        Setting("upgrade_probe_outage", "seconds any service of a router may stay unanswered while it upgrades; "
                "longer fails the upgrade, which is rolled back", 2.0, number),
        Setting("upgrade_probe_flushes", "conntrack flushes tolerated while a router upgrades; more fail it",
                0, count),
        Setting("upgrade_probe_timeout", "seconds one probe waits for its answer; a slower answer counts as none",
                1.0, number),
        Setting("replay_health_wait", "seconds a router just replayed may take to pass its health checks (a booting "
                "router's daemons bind their addresses a little late); still unhealthy then fails the replay",
                30.0, _replay_wait),
    ],
    env_prefix="VRPIPE_",
)


@dataclass(frozen=True)
class ManagerConfig:
    """Where the manager keeps things and how it reaches routers; validated once, by SETTINGS."""

    state_dir: Path
    database: str = ""
    rootfs: Path | None = None
    image: Path | None = None
    accel: str = "tcg"
    libvirt_uri: str = "qemu:///system"
    libvirt_pool: str = "vrpipe"
    libvirt_pool_dir: Path = Path("/var/lib/libvirt/images/vrpipe")
    host_netns: str | None = None
    ssh_netns: str | None = None
    netns_prefix: str = "vrp-"
    lock_timeout: float = 120.0
    upgrade_probe_interval: float = 0.2
    upgrade_probe_outage: float = 2.0
    upgrade_probe_flushes: int = 0
    upgrade_probe_timeout: float = 1.0
    replay_health_wait: float = 30.0
    ssh: SshOptions = field(default_factory=SshOptions)
    resolved: Resolved | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "state_dir", Path(self.state_dir))
        if not self.database:
            object.__setattr__(self, "database", f"sqlite:///{self.state_dir / 'vrpipe.db'}")

    @property
    def sqlite_file(self) -> Path | None:
        """The store's file when it is SQLite (read-only commands look for it before opening it)."""
        prefix = "sqlite:///"
        return Path(self.database[len(prefix):]) if self.database.startswith(prefix) else None

    @classmethod
    def load(
        cls, state_dir: Path | str | None = None, env: dict[str, str] | None = None, **cli: Any
    ) -> "ManagerConfig":
        """The settings of SETTINGS: defaults, then STATE_DIR/config.json, the environment, then `cli`."""
        first = SETTINGS.resolve(cli={"state_dir": state_dir}, env=env)
        directory = first.values["state_dir"]
        config_file = directory / CONFIG_FILE
        try:
            saved = json.loads(config_file.read_text()) if config_file.is_file() else {}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise SettingsError(f"cannot read {config_file}: {e}") from None
        if not isinstance(saved, dict):
            raise SettingsError(f"{config_file}: expected a JSON object of settings")
        if "state_dir" in saved:
            raise SettingsError(f"{config_file}: state_dir is where this file is, not a setting in it")
        resolved = SETTINGS.resolve(saved, str(config_file), {**cli, "state_dir": state_dir}, env)
        if not resolved.values["database"]:
            resolved.values["database"] = f"sqlite:///{directory / 'vrpipe.db'}"
            resolved.origins["database"] = "default (SQLite in the state directory)"
        return cls(**resolved.values, resolved=resolved)

    def save(self) -> None:
        """Write the settings that differ from the defaults into STATE_DIR/config.json (the lab does)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        values = {
            s.name: str(getattr(self, s.name))
            for s in SETTINGS.settings.values()
            if s.name != "state_dir" and getattr(self, s.name) not in (None, "", s.default)
        }
        if values.get("database") == f"sqlite:///{self.state_dir / 'vrpipe.db'}":
            del values["database"]
        (self.state_dir / CONFIG_FILE).write_text(json.dumps(values, indent=1) + "\n")
