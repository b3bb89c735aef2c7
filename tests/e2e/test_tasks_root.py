"""The invoke tasks that make namespaces, mounts and daemons say that they need root, and leave nothing
behind, when an unprivileged user runs them (issue: `invoke demo` and `invoke lab` ended in tracebacks
and left /tmp/vr-root-* behind)."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
PROJECT = Path(__file__).resolve().parents[2]
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]


@pytest.mark.parametrize("task", ["demo", "lab", "bench-engine", "bench-apply", "build-template", "lab-down"])
def test_a_task_that_needs_root_says_so_and_leaves_nothing(task):
    before = set(Path(tempfile.gettempdir()).glob("vr-root-*"))
    with tempfile.TemporaryDirectory() as home:
        os.chown(home, 65534, 65534)
        env = {**os.environ, "HOME": home, "TMPDIR": home}
        done = subprocess.run([*NOBODY, sys.executable, "-m", "invoke", task], cwd=PROJECT, env=env,
                              capture_output=True, text=True, timeout=120)
        left = list(Path(home).iterdir())
    assert done.returncode == 1, done.stderr
    assert f"{task}: needs root" in done.stderr and "Traceback" not in done.stderr
    assert set(Path(tempfile.gettempdir()).glob("vr-root-*")) == before
    assert left == []
