"""The router template the image tests (and orchestration's container tests) share: built once per test
session into build/template (git-ignored), reused as long as its sources and configuration are unchanged,
from a throw-away signed repository that publishes this checkout's packages.
"""

import functools
import logging
import shutil
import sys
from pathlib import Path

from image.build import Template, build_template
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


if __name__ == "__main__":
    # `python image_fixtures.py OUTPUT_DIR`: what a second clone sharing the tests' key does (publish this
    # checkout into a repository of its own next to OUTPUT_DIR, build from it) in a process of its own,
    # so that a test can give it another environment (time zone, locale, umask, working directory).
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    output = Path(sys.argv[1])
    build_template(template_config(output_dir=output), repo_config(output.parent / "repo"), republish=True)
