"""What the invoke tasks publish-repo, rotate-key, verify-repo and serve-repo do: read the `repo` settings, show
progress, end with a one-line summary, and turn a RepoError into its message and a failure status.
"""

import logging
import sys
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from . import config, publish, rotation, serve, verify
from .run import RepoError

log = logging.getLogger("repo")
REFRESH_OVERDUE = timedelta(days=2)  # the daily refresh has then failed at least once


def publish_repo(settings: Mapping[str, Any] | None, version: str | None, channel: str | None, refresh: bool) -> bool:
    """Build and publish the packages; the summary gives the time it took."""
    return _main(lambda: publish.publish(config.load(settings), version, channel, refresh).summary())


def rotate_key(settings: Mapping[str, Any] | None, key: str | None, retire: bool) -> bool:
    """Start a key rotation (a new key signs beside the old one) or retire the old key."""
    return _main(lambda: rotation.rotate_key(config.load(settings), key, retire).summary())


def verify_repo(settings: Mapping[str, Any] | None, url: str | None, keyring: str | None) -> bool:
    """Verify the served directory, or what routers see at url (`-` for the configured url)."""

    def check() -> str:
        cfg = config.load(settings)
        where = (cfg.url if url == "-" else url) if url else cfg.public
        report = verify.verify(where, Path(keyring) if keyring else cfg.keyring, cfg.codenames)
        for problem in report.problems:
            print(f"verify: {problem}", file=sys.stderr)
        if report.problems:
            raise RepoError(report.summary())
        if report.expires_within(REFRESH_OVERDUE):
            print(f"verify: warning: valid for less than {REFRESH_OVERDUE.days} days: is the daily refresh running?")
        return report.summary()

    return _main(check)


def serve_repo(settings: Mapping[str, Any] | None, listen: str | None) -> bool:
    """Serve the published tree until interrupted."""

    def run_server() -> str:
        cfg = config.load(settings)
        serve.serve(cfg.public, listen or cfg.listen)
        return "serve-repo: stopped"

    return _main(run_server)


def _main(job: Callable[[], str]) -> bool:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        print(job())
    except RepoError as e:
        print(f"error: {e}", file=sys.stderr)
        return False
    return True
