"""The repository's configuration: one settings table (SETTINGS) drives invoke.yaml's `repo:` section,
its defaults, its help and `invoke config`; RepoConfig is the validated result, so the rest of repo/ can
trust every field.
"""

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vrpipe.errors import VrpipeError, shown
from vrpipe.settings import Resolved, Setting, Table, text

from .render import PROJECT

CODENAME = re.compile(r"^[a-z][a-z0-9-]*$")
VALID_FOR = re.compile(r"^(\s*\d+\s*[dmy])+\s*$")  # reprepro's syntax: 7d, 1m, 1y 2d
VALID_FOR_PART = re.compile(r"(\d+)\s*([dmy])")
DAYS = {"d": 1, "m": 31, "y": 365}  # a month counts as its longest, so the limit holds for every month
MAX_VALID_DAYS = 90  # longer, and a stolen or frozen copy of the repository is trusted for too long
ADDRESS = re.compile(r"^(?P<host>\[[0-9a-fA-F:]+\]|[^:\s]+):(?P<port>\d+)$")
PREVIOUS = "-previous"
HISTORY_NAME = re.compile(r"-previous(-\d+)?$")  # the names the versions before a channel's current one take
MAX_KEEP = 10


@dataclass(frozen=True)
class RepoConfig:
    """Where the repository lives, what it publishes and with which key.

    dir: reprepro's base directory; `dir/public` is the served tree. channels: one codename each, the
    first is the default target of a publish. keep: how many versions of each channel stay installable:
    the current one in `<channel>`, the one before in `<channel>-previous`, older ones in
    `<channel>-previous-2`, `-previous-3`, ... (reprepro 5.3 keeps one version per distribution).
    key: a production key's fingerprint in gnupghome; key_file: a secret key to import first; neither:
    the development key. url: where routers fetch it (verify-repo --url default). listen: serve-repo.
    """

    dir: Path = PROJECT / "build" / "repo"
    channels: tuple[str, ...] = ("stable", "security")
    gnupghome: Path = PROJECT / ".gnupg"
    key: str = ""
    key_file: Path | None = None
    valid_for: str = "7d"
    keep: int = 3
    origin: str = "vrpipe"
    url: str = "http://127.0.0.1:8080/"
    listen: str = "127.0.0.1:8080"

    def __post_init__(self) -> None:
        if not self.channels:
            raise VrpipeError("repo.channels: name at least one channel")
        for channel in self.channels:
            if not CODENAME.match(channel) or HISTORY_NAME.search(channel):
                raise VrpipeError(f"repo.channels: {shown(channel)} is not a codename like 'stable'")
        valid_days(self.valid_for)
        if isinstance(self.keep, bool) or not isinstance(self.keep, int) or not 2 <= self.keep <= MAX_KEEP:
            raise VrpipeError(
                f"repo.keep: {shown(self.keep)} is not a number of versions from 2 (the current one and the one "
                f"a rollback takes) to {MAX_KEEP}"
            )
        if not self.url.startswith(("http://", "https://")) or not self.url.endswith("/"):
            raise VrpipeError(f"repo.url: {shown(self.url)} must be an http(s) URL ending in /")
        listen_address(self.listen)

    @property
    def codenames(self) -> list[str]:
        """Every distribution in conf/distributions: each channel and its history."""
        return [name for channel in self.channels for name in (channel, *self.history(channel))]

    def history(self, channel: str) -> list[str]:
        """Where a channel's older versions are, newest first: -previous, -previous-2, ..."""
        return [channel + PREVIOUS + (f"-{n}" if n > 1 else "") for n in range(1, self.keep)]

    @property
    def public(self) -> Path:
        return self.dir / "public"

    @property
    def keyring(self) -> Path:
        return self.dir / "vr-archive-keyring.gpg"

    def channel(self, name: str | None) -> str:
        """The channel to publish to: name, checked against the configured ones, or the first."""
        if name is None:
            return self.channels[0]
        if name not in self.channels:
            raise VrpipeError(f"channel {shown(name)} is not one of {', '.join(self.channels)}")
        return name


def valid_days(valid_for: str) -> int:
    """The days a Release stays valid ('7d', '1m 2d'); refuses 0 (reprepro would then write no
    Valid-Until at all, and apt trust a frozen copy forever) and more than MAX_VALID_DAYS."""
    if not VALID_FOR.match(valid_for):
        raise VrpipeError(f"repo.valid_for: {shown(valid_for)} is not like 7d, 1m or 1y")
    days = sum(int(n) * DAYS[unit] for n, unit in VALID_FOR_PART.findall(valid_for))
    if not 0 < days <= MAX_VALID_DAYS:
        raise VrpipeError(
            f"repo.valid_for: {shown(valid_for)} is {days} days; choose 1 to {MAX_VALID_DAYS} days "
            "(and re-sign in time with publish-repo --refresh)"
        )
    return days


def listen_address(text: str) -> tuple[str, int]:
    """'127.0.0.1:8080' or '[::1]:8080' -> (host, port); port 0 picks a free port."""
    found = ADDRESS.match(text)
    if not found or not 0 <= int(found["port"]) < 65536:
        raise VrpipeError(f"repo.listen: {shown(text)} is not HOST:PORT")
    return found["host"].strip("[]"), int(found["port"])


def _directory(value: Any) -> Path:
    if not text(value):
        raise ValueError("must name a directory")
    return PROJECT / Path(value)  # relative to the checkout; an absolute path stays as it is


def _optional_file(value: Any) -> Path | None:
    return PROJECT / Path(text(value)) if value else None


def _versions(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("expected a whole number")  # RepoConfig checks its range
    return value


def _channels(value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not all(isinstance(c, str) for c in value):
        raise ValueError("expected a list of channel names")
    return tuple(value)


SETTINGS = Table(
    "repo",
    [
        Setting("dir", "reprepro's base directory; DIR/public is the served tree", PROJECT / "build" / "repo",
                _directory),
        Setting("channels", "one distribution each (+ <channel>-previous); the first is where a publish goes",
                ("stable", "security"), _channels),
        Setting("gnupghome", "the archive key's GnuPG home (a development key is made there on demand)",
                PROJECT / ".gnupg", _directory),
        Setting("key", "a production key's fingerprint (its secret key in gnupghome)", "", text),
        Setting("key_file", "a secret key file imported into gnupghome before signing", None, _optional_file),
        Setting("keep", "versions of each channel kept installable (2 to 10): <channel>-previous, -previous-2, ...",
                3, _versions),
        Setting("valid_for", "Valid-Until = now + this: 1 to 90 days (7d, 1m 2d)", "7d", text),
        Setting("origin", "the Origin of every Release", "vrpipe", text),
        Setting("url", "where routers fetch the repository (verify-repo --url -)", "http://127.0.0.1:8080/", text),
        Setting("listen", "serve-repo's HOST:PORT", "127.0.0.1:8080", text),
    ],
    qualified=True,
)


def resolve(settings: dict[str, Any] | None) -> Resolved:
    """Every repository setting with its origin: invoke.yaml's `repo:` section, else the default."""
    return SETTINGS.resolve(settings, "invoke.yaml repo", env={})


def load(settings: dict[str, Any] | None) -> RepoConfig:
    """The config from invoke's `repo` settings; paths are relative to the checkout."""
    return RepoConfig(**resolve(settings).values)
