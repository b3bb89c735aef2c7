"""What one template build is made from: a frozen, typed TemplateConfig, read once from the `template:`
section of invoke.yaml (and SOURCE_DATE_EPOCH), validated here so the build steps can trust it.
"""

import os
import re
from dataclasses import dataclass, fields
from pathlib import Path
from urllib.parse import urlparse

from .run import run

PROJECT = Path(__file__).resolve().parent.parent
SUITES = ("bookworm", "trixie")


class ConfigError(ValueError):
    """The template configuration is wrong; the message names the key and what is wrong with it."""


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


def load_config(values: dict | None = None, **overrides) -> TemplateConfig:
    """Build a TemplateConfig from invoke.yaml's `template:` mapping plus overrides (None = not given)."""
    merged = {**(values or {}), **{k: v for k, v in overrides.items() if v is not None}}
    known = {f.name: f for f in fields(TemplateConfig)}
    unknown = sorted(set(merged) - set(known))
    if unknown:
        raise ConfigError(f"unknown template setting(s) {', '.join(unknown)}; known: {', '.join(known)}")
    merged.setdefault("source_date_epoch", _default_epoch())
    typed = {name: _convert(name, known[name].type, value) for name, value in merged.items()}
    return _validate(TemplateConfig(**typed))


def _default_epoch() -> int:
    """SOURCE_DATE_EPOCH from the environment, else the last commit's time: same checkout, same bytes."""
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value is None:
        value = run(["git", "-C", PROJECT, "log", "-1", "--format=%ct"], capture=True).strip()
    return value


def _convert(name, kind, value):
    try:
        if kind is Path:
            return PROJECT / Path(value)  # an absolute value stays as it is
        return kind(value)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"template.{name}: {value!r} is not a valid {kind}") from e


def _validate(config: TemplateConfig) -> TemplateConfig:
    if config.suite not in SUITES:
        raise ConfigError(f"template.suite: {config.suite!r} is not one of {', '.join(SUITES)}")
    for name in ("mirror", "security_mirror"):
        url = urlparse(getattr(config, name))
        if url.scheme not in ("http", "https") or not url.netloc:
            raise ConfigError(f"template.{name}: {getattr(config, name)!r} is not an http(s) URL")
    if config.source_date_epoch <= 0:
        raise ConfigError(f"SOURCE_DATE_EPOCH: {config.source_date_epoch} is not seconds after 1970")
    if not 64 <= config.esp_size_mib <= config.disk_size_mib // 4:
        raise ConfigError(f"template.esp_size_mib: {config.esp_size_mib} must be 64..disk_size_mib/4")
    # mmdebstrap's sync-in hook (its source is under output_dir) splits its arguments on blanks.
    for name in ("cache_dir", "output_dir"):
        if re.search(r"\s", str(getattr(config, name))):
            raise ConfigError(f"template.{name}: {getattr(config, name)} must not contain blanks")
    return config
