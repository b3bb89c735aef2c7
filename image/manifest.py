"""What a template build says about itself: manifest.json (every installed package, our versions, the Debian
suite and mirror, the build date, each output's size, format and sha256), SHA256SUMS over the outputs and
the manifest, and SHA256SUMS.sign, a detached signature by the archive key; `verify()` checks all three.
"""

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from vr import contract

from vrpipe.run import run

from .config import TemplateConfig
from .formats import sha256

OUR_PACKAGES = contract.PACKAGES


@dataclass(frozen=True)
class Output:
    path: Path
    format: str


def installed_packages(rootdir: Path) -> list[dict]:
    listing = run(
        ["dpkg-query", f"--admindir={rootdir / 'var/lib/dpkg'}", "--show",
         "--showformat=${Package}\t${Version}\t${Architecture}\n"],
    ).stdout
    rows = (line.split("\t") for line in sorted(listing.splitlines()))
    return [{"name": name, "version": version, "architecture": arch} for name, version, arch in rows]


def write_manifest(out: Path, config: TemplateConfig, packages: list[dict], outputs: list[Output], extra: dict,
                   digest: Callable[[Path], str] = sha256):
    """Only build inputs go in (the date is SOURCE_DATE_EPOCH), so a rebuild writes the same manifest."""
    versions = {p["name"]: p["version"] for p in packages}
    missing = [name for name in OUR_PACKAGES if name not in versions]
    if missing:
        raise ValueError(f"the rootfs lacks our package(s) {', '.join(missing)}")
    manifest = {
        "suite": config.suite,
        "mirror": config.mirror,
        "security_mirror": config.security_mirror,
        "build_date": datetime.fromtimestamp(config.source_date_epoch, UTC).isoformat(),
        "source_date_epoch": config.source_date_epoch,
        "vrpipe_packages": {name: versions[name] for name in OUR_PACKAGES},
        **extra,
        "outputs": [
            {"file": o.path.name, "format": o.format, "size": o.path.stat().st_size, "sha256": digest(o.path)}
            for o in outputs
        ],
        "packages": packages,
    }
    out.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def write_checksums(sums: Path, files: list[Path], manifest: dict) -> None:
    known = {o["file"]: o["sha256"] for o in manifest["outputs"]}
    lines = (f"{known.get(f.name) or sha256(f)}  {f.name}\n" for f in sorted(files, key=lambda f: f.name))
    sums.write_text("".join(lines))


def sign(sums: Path, gnupghome: Path, fingerprint: str) -> Path:
    signature = sums.with_name(sums.name + ".sign")
    run(["gpg", "--homedir", gnupghome, "--batch", "--yes", "--local-user", f"{fingerprint}!",
         "--armor", "--detach-sign", "--output", signature, sums])
    return signature


def verify(folder: Path, keyring: Path) -> int:
    """Check SHA256SUMS.sign against keyring and every file's sha256; return how many files were checked."""
    sums = folder / "SHA256SUMS"
    with tempfile.TemporaryDirectory() as home:
        run(["gpgv", "--homedir", home, "--keyring", keyring.resolve(), sums.with_name("SHA256SUMS.sign"), sums])
    lines = [line.split("  ", 1) for line in sums.read_text().splitlines()]
    wrong = [name for digest, name in lines if sha256(folder / name) != digest]
    if wrong:
        raise ValueError(f"sha256 mismatch in {folder}: {', '.join(wrong)}")
    return len(lines)
