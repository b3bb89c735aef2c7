"""What the invoke tasks publish-repo, mirror-security, rotate-key, verify-repo and serve-repo do: read the
`repo` settings, do the job with progress on the log, and return its one-line summary (a failure raises
VrpipeError).
"""

import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from vrpipe.errors import VrpipeError

from . import config, mirror, publish, rotation, serve, verify

REFRESH_OVERDUE = timedelta(days=2)  # the daily refresh has then failed at least once


def publish_repo(settings: dict[str, Any] | None, version: str | None, channel: str | None, refresh: bool) -> str:
    """Build and publish the packages; the summary gives the time it took."""
    return publish.publish(config.load(settings), version, channel, refresh).summary()


def mirror_security(settings: dict[str, Any] | None, manifest: Path, upstream: str | None, keyring: Path) -> str:
    """Mirror Debian's security suite of the template's release (packages from its manifest)."""
    return mirror.mirror_security(config.load(settings), mirror.template_mirror(manifest, upstream, keyring)).summary()


def rotate_key(settings: dict[str, Any] | None, key: str | None, retire: bool) -> str:
    """Start a key rotation (a new key signs beside the old one) or retire the old key."""
    return rotation.rotate_key(config.load(settings), key, retire).summary()


def verify_repo(settings: dict[str, Any] | None, url: str | None, keyring: str | None) -> str:
    """Verify the served directory, or what routers see at url (`-` for the configured url)."""
    cfg = config.load(settings)
    where = (cfg.url if url == "-" else url) if url else cfg.public
    report = verify.verify(where, Path(keyring) if keyring else cfg.keyring, publish.served(cfg))
    for problem in report.problems:
        print(f"verify: {problem}", file=sys.stderr)
    if report.problems:
        raise VrpipeError(report.summary())
    if report.expires_within(REFRESH_OVERDUE):
        print(f"verify: warning: valid for less than {REFRESH_OVERDUE.days} days: is the daily refresh running?")
    return report.summary()


def serve_repo(settings: dict[str, Any] | None, listen: str | None) -> str:
    """Serve the published tree until interrupted."""
    cfg = config.load(settings)
    serve.serve(cfg.public, listen or cfg.listen)
    return "serve-repo: stopped"
