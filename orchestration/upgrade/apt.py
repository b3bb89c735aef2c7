"""What an in-place upgrade runs on a router, as argv lists: the apt sources it upgrades from (rendered
into a directory of their own, so the router's own sources stay untouched), apt-get update, the simulated
upgrade and its parsing into planned changes, and the detached install or downgrade of exact versions.
"""

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from fnmatch import fnmatch
from typing import Any

from debian.deb822 import Release as Deb822Release
from vr import contract

from orchestration.render import render
from vrpipe.errors import SettingsError, shown

SOURCES_DIR = "/etc/vr/upgrade/sources.list.d"
SOURCES_FILE = f"{SOURCES_DIR}/vrpipe-upgrade.sources"
OS_RELEASE = "/etc/os-release"
LISTS_DIR = "/var/lib/apt/lists"
APT_ESCAPES = set('\\|{}[]<>"^~_=!@#$%&*')  # what apt writes as %xx in a list file's name
DEBIAN_SECURITY = "http://deb.debian.org/debian-security/"
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
LOG_FILE = "/var/log/vr/upgrade.log"
LOCK_FILE = "/run/vrpipe-upgrade.lock"  # held while an upgrade runs on the router
OUR_PACKAGES = contract.PACKAGES
# Packages whose new version only takes effect after a reboot: reported, never acted on.
REBOOT_PACKAGES = ("linux-image-*", "libc6", "libc-bin")
SIMULATED_INSTALL = re.compile(r"^Inst (?P<package>\S+) (?:\[(?P<from>[^\]]+)\] )?\((?P<to>\S+) ")
SERVICE_UNIT = re.compile(r"/systemd/system/[^/]+\.service$")
APT_PROBLEM = re.compile(r"^(?:E: |W: |dpkg: error)")


@dataclass(frozen=True)
class AptSource:
    """One signed repository as a router reaches it; keyring is a path on the router."""

    url: str
    suites: tuple[str, ...]
    keyring: str

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")) or not self.url.endswith("/"):
            raise SettingsError(f"apt source {shown(self.url)}: must be an http(s) URL ending in /")
        if not self.suites or any(not re.fullmatch(r"[a-z0-9][a-z0-9.+-]*", s) for s in self.suites):
            raise SettingsError(f"apt source {self.url}: suites {shown(self.suites)} must be Debian codenames")
        if not self.keyring.startswith("/"):
            raise SettingsError(f"apt source {self.url}: keyring {shown(self.keyring)} must be an absolute path")


@dataclass(frozen=True)
class SecuritySource:
    """Debian's security suite. Its suite follows the router's release (a bookworm router needs
    bookworm-security), unless `suite` names one for every router."""

    url: str = DEBIAN_SECURITY
    suite: str | None = None
    keyring: str = DEBIAN_KEYRING

    def __post_init__(self) -> None:
        self.for_release("trixie")  # a bad URL, suite or keyring fails now, before any router is touched

    def for_release(self, codename: str) -> AptSource:
        return AptSource(self.url, (self.suite or f"{codename}-security",), self.keyring)


def served_query(url: str) -> list[str]:
    """Exits 0 when the router can fetch url (the router has python3, not always curl); the code is
    fixed, the URL is its argument."""
    probe = "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=10)"
    return ["python3", "-c", probe, url]


def release_codename(os_release: str) -> str:
    """VERSION_CODENAME from the text of /etc/os-release ("trixie"), or "" when it names none."""
    for line in os_release.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "VERSION_CODENAME":
            return value.strip().strip("'\"")
    return ""


@dataclass(frozen=True)
class PackageChange:
    """One package the upgrade installs: `old` is "" for a package new to the router."""

    package: str
    old: str
    new: str

    def to_json(self) -> dict[str, Any]:
        return {"package": self.package, "from": self.old or None, "to": self.new}

    def __str__(self) -> str:
        return f"{self.package} {self.old or '(new)'} -> {self.new}"


@dataclass(frozen=True)
class Release:
    """The dates of one suite's Release file, as apt on the router accepted it."""

    date: datetime
    valid_until: datetime | None


def list_file(url: str, suite: str, name: str = "InRelease") -> str:
    """Where apt keeps a suite's Release file on the router: the URL without its scheme, with the
    characters apt escapes as %xx, and every / as _ (apt's URItoFileName)."""
    uri = f"{url.split('://', 1)[1]}dists/{suite}/{name}"
    escaped = "".join(f"%{ord(c):02x}" if c in APT_ESCAPES else c for c in uri)
    return f"{LISTS_DIR}/{escaped.replace('/', '_')}"


def parse_release(text: str) -> Release:
    """Date and Valid-Until of a Release or InRelease file (a Release without a Date is refused)."""
    fields = Deb822Release(text)
    if "Date" not in fields:
        raise ValueError("no Date in it" if text else "no such file")
    valid_until = fields.get("Valid-Until")
    return Release(parsedate_to_datetime(fields["Date"]), parsedate_to_datetime(valid_until) if valid_until else None)


def sources_text(sources: Sequence[AptSource]) -> str:
    return render("upgrade.sources.j2", sources=sources)


def _apt_options(lock_timeout: int) -> list[str]:
    """apt reads only our sources file, keeps existing config files, and waits for a busy dpkg lock."""
    return [
        "-o", "Dir::Etc::SourceList=/dev/null",
        "-o", f"Dir::Etc::SourceParts={SOURCES_DIR}",
        "-o", f"DPkg::Lock::Timeout={lock_timeout}",
        "-o", "Dpkg::Options::=--force-confold",
        "-o", "Dpkg::Options::=--force-confdef",
        "-o", "APT::Get::Assume-Yes=true",
        "-q",
    ]  # fmt: skip


def with_stderr(argv: Sequence[str]) -> list[str]:
    """argv with its error output in stdout (the transport returns stdout only). The shell code is fixed;
    the words of argv reach it as positional parameters, never as code."""
    return ["sh", "-c", 'exec "$@" 2>&1', "sh", *argv]


def update(lock_timeout: int) -> list[str]:
    """Fetch the indexes; any repository that cannot be fetched or verified is an error."""
    return with_stderr(["apt-get", *_apt_options(lock_timeout), "--error-on=any", "update"])


def simulate(lock_timeout: int) -> list[str]:
    """What an upgrade would install, new dependencies included, without changing anything."""
    return with_stderr(["apt-get", *_apt_options(lock_timeout), "--simulate", "--with-new-pkgs", "upgrade"])


def parse_simulation(text: str) -> list[PackageChange]:
    """The Inst lines of `apt-get --simulate` as Changes, in apt's order."""
    found = (SIMULATED_INSTALL.match(line) for line in text.splitlines())
    return [PackageChange(m["package"], m["from"] or "", m["to"]) for m in found if m]


def install(changes: Iterable[PackageChange], lock_timeout: int, downgrade: bool = False) -> list[str]:
    """Install exactly these versions (the planned ones, or on rollback the previous ones). Each version is
    pinned, and may be older than the installed one: a rollback, or `vrpipe upgrade --to`."""
    versions = [f"{c.package}={c.old if downgrade else c.new}" for c in changes if (c.old if downgrade else c.new)]
    options = [*_apt_options(lock_timeout), "--allow-downgrades", "--no-install-recommends"]
    return detached(["apt-get", *options, "install", *versions])


def configure_pending() -> list[str]:
    """Finish what an interrupted dpkg left unconfigured."""
    return detached(["dpkg", "--force-confold", "--force-confdef", "--configure", "-a"])


def detached(argv: Sequence[str]) -> list[str]:
    """Run argv in a session of its own, holding LOCK_FILE, with its output in LOG_FILE, and wait for it:
    if the SSH connection breaks, dpkg goes on to the end instead of dying half-way. (The shell code is
    fixed; the log file and argv reach it as positional parameters.)"""
    env = ["env", "DEBIAN_FRONTEND=noninteractive", "APT_LISTCHANGES_FRONTEND=none"]
    redirect = ["sh", "-c", 'log=$1; shift; exec "$@" </dev/null >"$log" 2>&1', "sh", LOG_FILE]
    return with_stderr(["setsid", "--wait", "flock", LOCK_FILE, *redirect, *env, *argv])


def wait_idle(timeout: int) -> list[str]:
    """Exits 0 once no upgrade holds the lock (waiting up to timeout seconds), 1 if one still does."""
    return ["flock", "--wait", str(timeout), LOCK_FILE, "true"]


def problems(text: str) -> list[str]:
    """apt's and dpkg's error and warning lines (with the indented line that explains a dpkg error), or
    the last lines of the output when there are none: what a report quotes to say why it failed."""
    lines = text.strip().splitlines()
    found = []
    for i, line in enumerate(lines):
        if APT_PROBLEM.match(line):
            follow = lines[i + 1].strip() if line.endswith(":") and i + 1 < len(lines) else ""
            found.append(f"{line.strip()} {follow}".strip())
    return found or lines[-2:]


def reboot_required(changes: Iterable[PackageChange]) -> list[str]:
    return sorted(c.package for c in changes if any(fnmatch(c.package, p) for p in REBOOT_PACKAGES))


def versions_query(packages: Iterable[str]) -> list[str]:
    """Installed versions: one line `package status version` per package dpkg knows."""
    return ["dpkg-query", "-W", "-f=${Package} ${db:Status-Abbrev} ${Version}\n", *packages]


# dpkg's package states (the second letter of db:Status-Abbrev) in which a version is on the router.
UNFINISHED = {"H": "half-installed", "U": "unpacked", "F": "half-configured", "W": "triggers-awaited",
              "t": "triggers-pending"}  # fmt: skip


def parse_versions(text: str) -> dict[str, str]:
    """{package: version} of the packages dpkg has a version of: "1.0.1" when installed, "1.0.1
    (half-configured)" and the like when dpkg left it unfinished (removed ones are left out)."""
    versions = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) == 3 and words[1][1:2] == "i":
            versions[words[0]] = words[2]
        elif len(words) == 3 and words[1][1:2] in UNFINISHED:
            versions[words[0]] = f"{words[2]} ({UNFINISHED[words[1][1]]})"
    return versions


def bare_version(text: str) -> str:
    """The version of what parse_versions says, without its state ("1.0.1 (unpacked)" -> "1.0.1")."""
    return text.split()[0]


def available_query(packages: Iterable[str]) -> list[str]:
    """The versions of these packages our sources have: `apt-cache madison`."""
    return with_stderr(["apt-cache", *_apt_options(1), "madison", *packages])


def parse_available(text: str) -> dict[str, set[str]]:
    """{package: {version, ...}} from `apt-cache madison` lines `package | version | source`."""
    available: dict[str, set[str]] = {}
    for line in text.splitlines():
        words = [w.strip() for w in line.split("|")]
        if len(words) == 3 and words[0] and words[1]:
            available.setdefault(words[0], set()).add(words[1])
    return available


def unit_files_query(packages: Iterable[str]) -> list[str]:
    return ["dpkg-query", "-L", *packages]


def units_state(units: Iterable[str]) -> list[str]:
    return ["systemctl", "show", "--property=Id,Type,ActiveState", *units]


def restartable(shown: str) -> list[str]:
    """From `systemctl show` blocks: the active units that are not oneshot."""
    blocks = [dict(line.split("=", 1) for line in block.splitlines() if "=" in line) for block in shown.split("\n\n")]
    return [b["Id"] for b in blocks if b.get("ActiveState") == "active" and b.get("Type") != "oneshot"]


def service_units(file_list: str) -> list[str]:
    """The systemd service units among the files `dpkg-query -L` listed."""
    units = {line.rsplit("/", 1)[1] for line in file_list.splitlines() if SERVICE_UNIT.search(line)}
    return sorted(u for u in units if "@" not in u)
