"""The sha256 of the build's outputs, computed on a worker thread as soon as each one is written, so that
hashing gigabytes overlaps with qemu-img compressing the VMDK on the other core; a fixed VHD is the raw
disk plus a 512-byte footer, so its digest continues the raw disk's instead of reading it all again.
"""

import hashlib
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

CHUNK = 4 * 1024 * 1024


def _hash_file(path: Path, digest: Any, start: int = 0) -> Any:
    with path.open("rb") as f:
        f.seek(start)
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest


class Digests:
    """add() each output when it is complete; [path] waits for its hex digest."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sha256")
        self._pending: dict[Path, Future[Any]] = {}

    def add(self, path: Path) -> None:
        self._pending[path] = self._pool.submit(_hash_file, path, hashlib.sha256())

    def add_extension(self, path: Path, prefix: Path) -> None:
        """path is prefix's bytes followed by more (checked by size only: the caller knows the format)."""
        size = prefix.stat().st_size
        if path.stat().st_size <= size:
            raise ValueError(f"{path} is not {prefix} with bytes appended")
        before = self._pending[prefix]
        self._pending[path] = self._pool.submit(lambda: _hash_file(path, before.result().copy(), size))

    def __getitem__(self, path: Path) -> str:
        return str(self._pending[path].result().hexdigest())

    def close(self) -> None:
        self._pool.shutdown(cancel_futures=True)
