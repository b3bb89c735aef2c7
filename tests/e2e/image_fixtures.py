"""The router template the image tests (and orchestration's container tests) share: built once per test
session into build/template (git-ignored), reused as long as its sources and configuration are unchanged,
from a throw-away signed repository that publishes this checkout's packages.
"""

import functools
import logging
import shutil

from image.build import Template, build_template, is_built
from image.config import PROJECT, load_config
from repo.config import RepoConfig

TEST_CACHE = PROJECT / "build" / "cache" / "image-tests"


def template_config(**overrides):
    return load_config({}, **overrides)


def repo_config():
    """A repository and key of the tests' own, so they never meet a version published by hand."""
    return RepoConfig(dir=TEST_CACHE / "repo", gnupghome=TEST_CACHE / "gnupg")


@functools.cache
def shared_template() -> Template:
    logging.basicConfig(level=logging.INFO)
    config, repo = template_config(), repo_config()
    if not is_built(config, repo):
        # the packages of this checkout may carry the version of different, earlier ones: publish afresh
        shutil.rmtree(repo.dir, ignore_errors=True)
    return build_template(config, repo, reuse=True)
