"""vrpipe as a real package: a wheel built from this checkout, installed (not editable) into a fresh venv,
runs `vrpipe` from outside the checkout, with its templates, migrations and files from the package."""

import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
PROJECT = Path(__file__).resolve().parents[2]
PACKAGE_DATA = (
    "vr/templates/nftables.nft.j2",
    "repo/templates/distributions.j2",
    "image/templates/fstab.j2",
    "image/files/vr-esp",
    "orchestration/templates/ssh_config.j2",
    "orchestration/lab/files/dhclient-script",
    "orchestration/migrations/env.py",
    "orchestration/migrations/versions/0001_routers_and_rules.py",
)


def run(argv, cwd):
    done = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{argv}: {done.stderr[-2000:]}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"  # the checkout's files only: a build must not write into the checkout
    listed = run(["git", "-C", PROJECT, "ls-files", "-z", "--cached", "--others", "--exclude-standard"], work)
    for name in filter(None, listed.stdout.split("\0")):
        if (PROJECT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(PROJECT / name, source / name)
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", work, source], work)
    (wheel,) = work.glob("vrpipe-*.whl")
    venv.create(work / "venv", with_pip=True)
    run([work / "venv/bin/pip", "install", "-q", wheel], work)
    return wheel, work / "venv/bin"


def test_the_wheel_carries_every_template_and_migration(installed):
    wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    assert [f for f in PACKAGE_DATA if f not in names] == []


def test_vrpipe_runs_from_the_installed_package(installed, tmp_path):
    _, bin_dir = installed
    assert run([bin_dir / "vrpipe", "--version"], tmp_path).stdout.startswith("vrpipe ")
    listed = run([bin_dir / "vrpipe", "--state-dir", tmp_path / "state", "list"], tmp_path)
    assert "no routers" in listed.stderr
    code = (
        "import sys, image, orchestration, repo, vr; from pathlib import Path;"
        "from orchestration.store import Store;"
        f"Store('sqlite:///{tmp_path}/v.db').close();"
        "parts = {'image': image, 'orchestration': orchestration, 'repo': repo, 'vr': vr};"
        "missing = [f for f in sys.argv[1:] if not (Path(parts[f.split('/')[0]].__file__).parent.parent / f).exists()];"
        "sys.exit(f'missing {missing}' if missing else 'site-packages' not in orchestration.__file__)"
    )
    run([bin_dir / "python", "-c", code, *PACKAGE_DATA], tmp_path)
    listed = run([bin_dir / "vrpipe", "--state-dir", tmp_path, "--db", f"sqlite:///{tmp_path}/v.db", "list"], tmp_path)
    assert "0 routers" in listed.stderr
