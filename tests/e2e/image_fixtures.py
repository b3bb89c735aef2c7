"""The router template the image tests (and orchestration's container tests) share: built once per test
session into build/template (git-ignored), reused as long as its sources and configuration are unchanged,
from a throw-away signed repository that publishes this checkout's packages.
"""

import functools
import hashlib
import json
import logging
import os
import shutil
import sys
from pathlib import Path

from image.build import Rebuild, Template, build_template, config_for
from image.config import PROJECT, load_config
from repo.config import RepoConfig

TEST_CACHE = PROJECT / "build" / "cache" / "image-tests"


def scratch(name):
    """An empty folder for one VM's logs and firmware variables: under build/cache rather than pytest's
    tmp_path, which a concurrent pytest run on the same machine may prune while a VM still boots."""
    folder = TEST_CACHE / "scratch" / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def template_config(**overrides):
    return load_config({}, **overrides)


def repo_config(folder: Path = TEST_CACHE / "repo") -> RepoConfig:
    """A repository and key of the tests' own, so they never meet a version published by hand."""
    return RepoConfig(dir=folder, gnupghome=TEST_CACHE / "gnupg")


@functools.cache
def shared_template() -> Template:
    logging.basicConfig(level=logging.INFO)
    # republish: this checkout's packages may carry the version of different, earlier ones
    return build_template(template_config(), repo_config(), reuse=True, republish=True)


def offline_cache(folder: Path, manifest: Path, suite: str = "trixie") -> Path:
    """A package cache holding the .debs of `manifest` (hard links) but no base layer: a rebuild from it
    must make its base layer again from the .debs. Each .deb is the one with the manifest's digest, from
    the build's package cache or the shared repository's pool: a later build that republishes writes other
    bytes under the same name (our packages keep their version while this checkout changes)."""
    shutil.rmtree(folder, ignore_errors=True)
    (folder / suite).mkdir(parents=True)
    candidates = [*(template_config().cache_dir / suite).glob("*.deb"), *(repo_config().public / "pool").rglob("*.deb")]
    by_digest = {hashlib.sha256(deb.read_bytes()).hexdigest(): deb for deb in candidates}
    for package in json.loads(manifest.read_text())["packages"]:
        deb = by_digest.get(package.get("sha256", ""))
        if deb is not None:
            os.link(deb, folder / suite / deb.name)
    return folder


if __name__ == "__main__":
    # `python image_fixtures.py OUTPUT_DIR`: what a second clone sharing the tests' key does (publish this
    # checkout into a repository of its own next to OUTPUT_DIR, build from it) in a process of its own,
    # so that a test can give it another environment (time zone, locale, umask, working directory).
    # `python image_fixtures.py OUTPUT_DIR MANIFEST CACHE_DIR`: rebuild MANIFEST's template from CACHE_DIR
    # (a test runs it in a network namespace with nothing but loopback: offline).
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    output = Path(sys.argv[1])
    if len(sys.argv) == 4:
        rebuild = Rebuild.read(Path(sys.argv[2]))
        config = config_for({"cache_dir": sys.argv[3]}, rebuild, output_dir=output)
        build_template(config, repo_config(), rebuild=rebuild)
    else:
        build_template(template_config(output_dir=output), repo_config(output.parent / "repo"), republish=True)
