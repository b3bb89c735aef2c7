"""Every command example of the README, run as written, in order, in a fresh copy of this checkout: the
first command sets the copy up and builds its template (`./bootstrap.sh && .venv/bin/invoke build-template`),
then every ```sh block runs in one bash session, so that what a block exports holds for the next.
Left out, and said here: the lines that run the test suite itself (`invoke lint test`, `invoke test-image`)."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
PROJECT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"^```sh\n(.*?)^```$", re.S | re.M)
THE_SUITE = re.compile(r"invoke (lint )?(test|test-image)(\s|$)")


def blocks(readme: str) -> list[str]:
    return [b for b in BLOCK.findall(readme)]


def runnable(block: str) -> list[str]:
    return [line for line in block.splitlines() if line.strip() and not THE_SUITE.search(line)]


def copy_of_checkout(target: Path) -> Path:
    listed = subprocess.run(
        ["git", "-C", PROJECT, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True, text=True, check=True,
    ).stdout
    for name in filter(None, listed.split("\0")):
        if (PROJECT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(PROJECT / name, target / name)
    return target


def test_the_readme_blocks_are_found():
    found = blocks((PROJECT / "README.md").read_text())
    assert len(found) >= 4
    assert runnable(found[0]) == ["./bootstrap.sh && .venv/bin/invoke build-template   "
                                  "# set up, then build the router template (the main job)"]


def test_every_command_example_runs_as_written(tmp_path):
    checkout = copy_of_checkout(tmp_path / "vrpipe")
    # The copy starts with this checkout's .deb cache (linked, not copied): the same build, fewer downloads.
    cache = PROJECT / "build" / "cache" / "debs"
    (checkout / "build" / "cache").mkdir(parents=True)
    if cache.is_dir():
        subprocess.run(["cp", "-al", cache, checkout / "build" / "cache" / "debs"], check=True)
    subprocess.run(["git", "init", "-q"], cwd=checkout, check=True)  # the build dates itself by git
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy", "--allow-empty"],
                   cwd=checkout, check=True)
    script = "\n".join(["set -euxo pipefail", *(line for b in blocks((checkout / "README.md").read_text())
                                                 for line in runnable(b))])
    done = subprocess.run(["bash", "-c", script], cwd=checkout, capture_output=True, text=True, timeout=3600)
    try:
        assert done.returncode == 0, f"README example failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    finally:
        subprocess.run([checkout / ".venv/bin/invoke", "lab-down"], cwd=checkout, capture_output=True, timeout=600)
