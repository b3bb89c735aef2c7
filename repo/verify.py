"""Checks a published repository the way an apt client trusts it: InRelease and Release.gpg with gpgv
against the keyring, every index against the SHA256 sums in the signed Release, every .deb against its
Packages entry, and Valid-Until. Works on the served directory or on a URL (fetched with requests).
"""

import email.utils
import hashlib
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from urllib.parse import urljoin

import requests
from debian.deb822 import Packages, Release

from vrpipe.errors import VrpipeError
from vrpipe.run import run

GOOD_SIGNATURE = re.compile(r"^\[GNUPG:\] VALIDSIG ", re.MULTILINE)
BAD_SIGNATURE = re.compile(r"^\[GNUPG:\] (BADSIG|EXPSIG|EXPKEYSIG|REVKEYSIG) ", re.MULTILINE)
Fetch = Callable[[str], bytes | None]  # path inside the repository -> its bytes, None when missing


@dataclass
class VerifyReport:
    """What verify found: the problems (empty when all is well), how much it checked, and when each
    distribution's Release stops being valid (what the daily refresh must renew in time)."""

    where: str
    problems: list[str] = field(default_factory=list)
    indexes: int = 0
    packages: int = 0
    valid_until: dict[str, datetime] = field(default_factory=dict)  # dists/<codename> -> Valid-Until
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    def summary(self) -> str:
        checked = f"{self.indexes} indexes and {self.packages} packages in {self.where}"
        if self.problems:
            return f"verify: {len(self.problems)} problem(s) with {checked}"
        return f"verify: {checked} are signed, consistent and valid{self.time_left()}"

    def expires_within(self, window: timedelta) -> bool:
        """True when some Release stops being valid within window (the refresh is overdue)."""
        return any(until - self.now < window for until in self.valid_until.values())

    def time_left(self) -> str:
        """'; valid for 6 d 23 h more (dists/stable first)', from the earliest Valid-Until."""
        if not self.valid_until:
            return ""
        dist, until = min(self.valid_until.items(), key=lambda item: item[1])
        hours = max(0, int((until - self.now).total_seconds() // 3600))
        return f"; valid for {hours // 24} d {hours % 24} h more ({dist} first, until {until:%Y-%m-%d %H:%M} UTC)"


def verify(where: str | Path, keyring: Path, codenames: list[str], now: datetime | None = None) -> VerifyReport:
    """Verify each distribution of the repository at where (a directory or an http(s) URL)."""
    report = VerifyReport(str(where), now=now or datetime.now(UTC))
    fetch = _fetcher(where)
    if not keyring.is_file():
        raise VrpipeError(f"keyring {keyring} does not exist (publish once, or pass the routers' keyring)")
    for codename in codenames:
        _verify_distribution(fetch, keyring, f"dists/{codename}", report)
    return report


def _verify_distribution(fetch: Fetch, keyring: Path, dist: str, report: VerifyReport) -> None:
    files = {name: fetch(f"{dist}/{name}") for name in ("InRelease", "Release", "Release.gpg")}
    missing = [name for name, data in files.items() if data is None]
    if missing:
        report.problems.append(f"{dist}: {', '.join(missing)} missing (unsigned or not published)")
        return
    inrelease, release, release_gpg = (files[name] or b"" for name in ("InRelease", "Release", "Release.gpg"))
    try:
        signed = _gpgv(keyring, inrelease)
        _gpgv(keyring, release_gpg, release)
    except VrpipeError as e:
        report.problems.append(f"{dist}: bad signature: {str(e).splitlines()[-1]}")
        return
    if signed != release:
        report.problems.append(f"{dist}: InRelease and Release say different things")
    fields = Release(signed.decode())
    _check_valid_until(fields, dist, report)
    for entry in fields["SHA256"]:
        _check_index(fetch, dist, entry, fields.get("Acquire-By-Hash") == "yes", report)
        if PurePosixPath(entry["name"]).name == "Packages":
            _check_debs(fetch, fetch(f"{dist}/{entry['name']}") or b"", report)


def _check_valid_until(fields: Release, dist: str, report: VerifyReport) -> None:
    if "Valid-Until" not in fields:
        report.problems.append(f"{dist}: Release has no Valid-Until, a frozen copy would be trusted forever")
        return
    report.valid_until[dist] = email.utils.parsedate_to_datetime(fields["Valid-Until"])
    if report.valid_until[dist] < report.now:
        report.problems.append(f"{dist}: Release expired on {fields['Valid-Until']}")


def _check_index(fetch: Fetch, dist: str, entry: dict[str, str], by_hash: bool, report: VerifyReport) -> None:
    report.indexes += 1
    name = f"{dist}/{entry['name']}"
    copies = [name]
    if by_hash:
        copies.append(f"{PurePosixPath(name).parent}/by-hash/SHA256/{entry['sha256']}")
    for path in copies:
        data = fetch(path)
        if data is None:
            report.problems.append(f"{path}: missing, Release lists it")
        elif len(data) != int(entry["size"]) or hashlib.sha256(data).hexdigest() != entry["sha256"]:
            report.problems.append(f"{path}: size or SHA256 differs from Release")


def _check_debs(fetch: Fetch, packages: bytes, report: VerifyReport) -> None:
    for entry in Packages.iter_paragraphs(packages.decode(), use_apt_pkg=False):
        report.packages += 1
        data = fetch(entry["Filename"])
        if data is None:
            report.problems.append(f"{entry['Filename']}: missing, Packages lists it")
        elif len(data) != int(entry["Size"]) or hashlib.sha256(data).hexdigest() != entry["SHA256"]:
            report.problems.append(f"{entry['Filename']}: size or SHA256 differs from its Packages entry")


def _gpgv(keyring: Path, signature: bytes, signed: bytes | None = None) -> bytes:
    """Check a signature (inline, or detached over signed) against keyring; returns the signed text.
    Like apt, one good signature by a key of keyring is enough (during a key rotation a Release is
    also signed by a key the routers do not know yet), and any bad signature refuses."""
    with tempfile.TemporaryDirectory() as tmp:
        sig, data, out = Path(tmp, "sig"), Path(tmp, "data"), Path(tmp, "out")
        sig.write_bytes(signature)
        argv: list[str | Path] = ["gpgv", "--homedir", tmp, "--status-fd", "1", "--keyring", keyring.resolve()]
        if signed is not None:
            data.write_bytes(signed)
            done = run([*argv, sig, data], check=False)
        else:
            done = run([*argv, "--output", out, sig], check=False)
        if not GOOD_SIGNATURE.search(done.stdout) or BAD_SIGNATURE.search(done.stdout):
            raise VrpipeError(done.stderr.strip() or "gpgv: no signature")
        return signed if signed is not None else out.read_bytes()


def _fetcher(where: str | Path) -> Fetch:
    if isinstance(where, str) and where.startswith(("http://", "https://")):
        base = where if where.endswith("/") else where + "/"
        return lambda path: _get(urljoin(base, path))
    root = Path(where)
    if not (root / "dists").is_dir():
        raise VrpipeError(f"{root} is not a published repository (no dists/)")
    return lambda path: (root / path).read_bytes() if (root / path).is_file() else None


def _get(url: str) -> bytes | None:
    try:
        response = requests.get(url, timeout=30)
    except requests.RequestException as e:
        raise VrpipeError(f"cannot fetch {url}: {e}") from e
    if response.status_code == 404:
        return None
    if response.status_code != 200:
        raise VrpipeError(f"{url}: HTTP {response.status_code}")
    return response.content
