"""Serve a published repository tree from inside a network namespace (where routers reach it):
`python -m tests.e2e.repo_in_netns DIRECTORY HOST:PORT`, run with `ip netns exec`, stops on SIGTERM."""

import sys
from pathlib import Path

from repo.serve import serve

if __name__ == "__main__":
    serve(Path(sys.argv[1]), sys.argv[2])
