"""A PostgreSQL server of Debian's postgresql package for one test session: initdb in a temporary
directory, listening only on a unix socket there (no TCP), run as the postgres user, stopped afterwards.
"""

import glob
import shutil
import tempfile
from pathlib import Path

import pytest

from vrpipe.run import run


def _bin(name):
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        pytest.skip("Debian's postgresql package is not installed")
    return found[-1]


def _as_postgres(argv):
    return run(["runuser", "-u", "postgres", "--", *argv], timeout=120)


@pytest.fixture(scope="session")
def postgres_url():
    """An SQLAlchemy URL for a fresh PostgreSQL database on a unix socket."""
    # outside pytest's private (0700) temporary directory: the server runs as the postgres user
    base = Path(tempfile.mkdtemp(prefix="vrpipe-pg-"))
    data, socket_dir = base / "data", base / "socket"
    for directory in (data, socket_dir):
        directory.mkdir()
        shutil.chown(directory, "postgres", "postgres")
    base.chmod(0o755)
    _as_postgres([_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"])
    options = f"-k {socket_dir} -c listen_addresses=''"
    _as_postgres([_bin("pg_ctl"), "-D", str(data), "-o", options, "-l", str(data / "server.log"), "-w", "start"])
    try:
        yield f"postgresql+psycopg://postgres@/postgres?host={socket_dir}"
    finally:
        _as_postgres([_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"])
        shutil.rmtree(base)
