"""What one template build is made from: a frozen, typed TemplateConfig, read once from the `template:`
section of invoke.yaml (and SOURCE_DATE_EPOCH), validated here so the build steps can trust it.
"""

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from vrpipe.errors import SettingsError, shown
from vrpipe.run import run
from vrpipe.settings import Resolved, Setting, Table, count, text

PROJECT = Path(__file__).resolve().parent.parent
SUITES = ("bookworm", "trixie")


@dataclass(frozen=True)
class TemplateConfig:
    suite: str = "trixie"
    mirror: str = "http://deb.debian.org/debian"
    security_mirror: str = "http://deb.debian.org/debian-security"
    output_dir: Path = PROJECT / "build" / "template"
    cache_dir: Path = PROJECT / "build" / "cache" / "debs"
    disk_size_mib: int = 2048
    esp_size_mib: int = 160
    source_date_epoch: int = 0


def _project_path(value: Any) -> Path:
    return PROJECT / Path(text(str(value)))  # relative to the checkout; an absolute path stays as it is


def _mib(value: Any) -> int:
    size = count(value)
    if size == 0:
        raise ValueError("expected a size in MiB > 0")
    return size


SETTINGS = Table(
    "template",
    [
        Setting("suite", "the router's Debian release", "trixie", text, SUITES),
        Setting("mirror", "Debian's archive the rootfs is installed from", "http://deb.debian.org/debian", text),
        Setting("security_mirror", "Debian's security archive", "http://deb.debian.org/debian-security", text),
        Setting("output_dir", "where the outputs go (rootfs/ in it is what router containers overlay)",
                PROJECT / "build" / "template", _project_path),
        Setting("cache_dir", ".debs kept between builds (one folder per suite)", PROJECT / "build" / "cache" / "debs",
                _project_path),
        Setting("disk_size_mib", "the raw disk's size", 2048, _mib),
        Setting("esp_size_mib", "the boot partition's size: kernel, initrd, syslinux, GRUB", 160, _mib),
        Setting("source_date_epoch", "the build's date (env SOURCE_DATE_EPOCH; default: the last commit's time)",
                0, count, flag=False),
    ],
    qualified=True,
)


def resolve(values: dict | None = None, **overrides: Any) -> Resolved:
    """Every template setting with its origin: the task's options, SOURCE_DATE_EPOCH, invoke.yaml's
    `template:` section, else the default."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    cli = {"source_date_epoch": epoch, **overrides}
    resolved = SETTINGS.resolve(values, "invoke.yaml template", cli, env={})
    if epoch is not None and "source_date_epoch" not in overrides:
        resolved.origins["source_date_epoch"] = "environment SOURCE_DATE_EPOCH"
    elif resolved.origins["source_date_epoch"] == "default":
        resolved.values["source_date_epoch"] = _last_commit_time()
        resolved.origins["source_date_epoch"] = "the last commit's time"
    return resolved


def load_config(values: dict | None = None, **overrides: Any) -> TemplateConfig:
    """A TemplateConfig from invoke.yaml's `template:` mapping plus the task's options (None: not given)."""
    return _validate(TemplateConfig(**resolve(values, **overrides).values))


def _last_commit_time() -> int:
    """The last commit's time: same checkout, same bytes (0, refused below, outside a git checkout)."""
    done = run(["git", "-C", PROJECT, "log", "-1", "--format=%ct"], check=False)
    value = done.stdout.strip()
    return int(value) if value.isdigit() else 0


def _validate(config: TemplateConfig) -> TemplateConfig:
    if config.suite not in SUITES:
        raise SettingsError(f"template.suite: {shown(config.suite)} is not one of {', '.join(SUITES)}")
    for name in ("mirror", "security_mirror"):
        url = urlparse(getattr(config, name))
        if url.scheme not in ("http", "https") or not url.netloc:
            raise SettingsError(f"template.{name}: {shown(getattr(config, name))} is not an http(s) URL")
    if config.source_date_epoch <= 0:
        raise SettingsError(f"SOURCE_DATE_EPOCH: {config.source_date_epoch} is not seconds after 1970")
    if not 64 <= config.esp_size_mib <= config.disk_size_mib // 4:
        raise SettingsError(f"template.esp_size_mib: {config.esp_size_mib} must be 64..disk_size_mib/4")
    # mmdebstrap's sync-in hook (its source is under output_dir) splits its arguments on blanks.
    for name in ("cache_dir", "output_dir"):
        if re.search(r"\s", str(getattr(config, name))):
            raise SettingsError(f"template.{name}: {getattr(config, name)} must not contain blanks")
    return config
