"""The streamOptimized VMDK (what an OVA carries), written here instead of by qemu-img: its grains are
compressed on every core, and a grain the last build compressed (most of the disk when only our packages
changed) is taken from that build's VMDK, checked, instead of compressed again. The bytes are the same either way.

The layout is VMware's stream-optimized sparse extent as qemu-img writes it: header, descriptor, redundant
grain directory and tables, grain directory and tables, then each grain holding data as a marker (its first
sector, its compressed size) followed by its zlib stream, and an end-of-stream marker.
"""

import hashlib
import json
import logging
import os
import re
import struct
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .render import render

log = logging.getLogger("image")

SECTOR = 512
GRAIN_SECTORS = 128  # 64 KiB grains
GRAIN = GRAIN_SECTORS * SECTOR
TABLE_ENTRIES = 512  # grains per grain table
TABLE_SECTORS = TABLE_ENTRIES * 4 // SECTOR
DESCRIPTOR_SECTORS = 20
LEVEL = 6  # zlib's default, as qemu-img uses
WINDOW = 256  # grains read and compressed at a time: 16 MiB of the raw disk
ZERO = bytes(GRAIN)
# magic, version, flags, capacity, grain size, descriptor offset and size, entries per grain table, redundant
# directory offset, directory offset, overhead (sectors), unclean shutdown, the four newline test characters,
# compression algorithm; then padding to one sector
HEADER = struct.Struct("<4sIIQQQQIQQQB4sH")
FLAGS = 1 << 0 | 1 << 1 | 1 << 16 | 1 << 17  # newline test, redundant directory, compressed grains, markers
DEFLATE = 1
GRAIN_MARKER = struct.Struct("<QI")  # the grain's first sector, its compressed size
PACK = re.compile(r"grains-[0-9a-f]{16}\.vmdk")  # the cached VMDK's name in the cache folder


@dataclass(frozen=True)
class Geometry:
    """Where each part of the file starts, in sectors, for a disk of `capacity` sectors."""

    capacity: int

    @property
    def grains(self) -> int:
        return self.capacity // GRAIN_SECTORS

    @property
    def tables(self) -> int:
        return -(-self.grains // TABLE_ENTRIES)

    @property
    def directory_sectors(self) -> int:
        return -(-self.tables * 4 // SECTOR)

    @property
    def redundant_directory(self) -> int:
        return 1 + DESCRIPTOR_SECTORS

    @property
    def directory(self) -> int:
        return self.redundant_directory + self.directory_sectors + self.tables * TABLE_SECTORS

    @property
    def overhead(self) -> int:
        """The first grain's sector: the metadata, rounded up to a whole grain."""
        end = self.directory + self.directory_sectors + self.tables * TABLE_SECTORS
        return -(-end // GRAIN_SECTORS) * GRAIN_SECTORS


class GrainCache:
    """The last build's compressed grains: a hard link to its VMDK and an index {grain sha256: (offset,
    size)}, for this zlib and level only. A grain taken from it must decompress to the grain itself."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.index: dict[str, list[int]] = {}
        self.fd: int | None = None
        try:
            saved = json.loads((folder / "index.json").read_text())
            usable = saved["zlib"] == zlib.ZLIB_RUNTIME_VERSION and saved["level"] == LEVEL
            if usable and PACK.fullmatch(saved["pack"]) and _valid_index(saved["grains"]):
                self.fd = os.open(folder / saved["pack"], os.O_RDONLY)
                self.index = saved["grains"]
        except (OSError, ValueError, KeyError, TypeError):
            self.index = {}  # no cache yet, or one this build cannot use: every grain is compressed

    def get(self, digest: str, grain: bytes) -> bytes | None:
        where = self.index.get(digest)
        if where is None or self.fd is None:
            return None
        data = os.pread(self.fd, where[1], where[0])
        try:
            return data if zlib.decompress(data) == grain else None
        except zlib.error:
            return None

    def save(self, vmdk: Path, grains: dict[str, list[int]]) -> None:
        """Make vmdk the cache (the index switches over by one rename; a kill leaves the old or the new)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        pack = f"grains-{hashlib.sha256(json.dumps(grains, sort_keys=True).encode()).hexdigest()[:16]}.vmdk"
        (self.folder / pack).unlink(missing_ok=True)
        try:
            os.link(vmdk, self.folder / pack)
        except OSError:  # another file system: a copy
            (self.folder / pack).write_bytes(vmdk.read_bytes())
        saved = {"zlib": zlib.ZLIB_RUNTIME_VERSION, "level": LEVEL, "pack": pack, "grains": grains}
        (self.folder / "index.json.tmp").write_text(json.dumps(saved))
        (self.folder / "index.json.tmp").replace(self.folder / "index.json")
        for old in self.folder.glob("grains-*.vmdk"):
            if old.name != pack:
                old.unlink()

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)


def _valid_index(grains: object) -> bool:
    """{digest: [offset, size]} with sizes a compressed grain can have (the file is the cache's, not trusted)."""
    return isinstance(grains, dict) and all(
        isinstance(where, list) and len(where) == 2 and all(type(n) is int and n >= 0 for n in where)
        and where[1] <= 2 * GRAIN
        for where in grains.values()
    )


def write(raw: Path, out: Path, epoch: int, cache_folder: Path) -> None:
    """Write raw (a whole number of grains) as a streamOptimized VMDK, the descriptor's CID derived from epoch."""
    size = raw.stat().st_size
    if size % GRAIN:
        raise ValueError(f"{raw} is not a whole number of {GRAIN // 1024} KiB grains")
    geometry = Geometry(size // SECTOR)
    cache = GrainCache(cache_folder)
    tables = [0] * geometry.grains  # each grain's marker sector (0: all zeros, not stored)
    kept: dict[str, list[int]] = {}
    hits = stored = 0
    out.unlink(missing_ok=True)  # never truncate in place: the cache may hold this very file as its pack
    try:
        with out.open("wb") as f, ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            f.write(bytes(geometry.overhead * SECTOR))
            for index, digest, data, hit in _encoded(raw, cache, pool):
                tables[index] = f.tell() // SECTOR
                kept[digest] = [f.tell() + GRAIN_MARKER.size, len(data)]
                record = GRAIN_MARKER.pack(index * GRAIN_SECTORS, len(data)) + data
                f.write(record + bytes(-len(record) % SECTOR))
                hits, stored = hits + hit, stored + 1
            f.write(bytes(SECTOR))  # the end-of-stream marker
            f.seek(0)
            f.write(_metadata(geometry, tables, out.name, epoch))
    finally:
        cache.close()
    log.info("vmdk: %d of %d grains with data taken from the last build's", hits, stored)
    cache.save(out, kept)


def _encoded(raw: Path, cache: GrainCache, pool: ThreadPoolExecutor) -> Iterator[tuple[int, str, bytes, bool]]:
    """(grain number, sha256, compressed bytes, taken from the cache) of each grain that is not all zeros."""
    def encode(grain: bytes) -> tuple[str, bytes, bool]:
        digest = hashlib.sha256(grain).hexdigest()
        cached = cache.get(digest, grain)
        return (digest, cached, True) if cached is not None else (digest, zlib.compress(grain, LEVEL), False)

    with raw.open("rb") as f:
        first = 0
        while window := f.read(GRAIN * WINDOW):
            grains = [(first + n, window[n * GRAIN:(n + 1) * GRAIN]) for n in range(len(window) // GRAIN)]
            data = [(index, grain) for index, grain in grains if grain != ZERO]
            for (index, _), result in zip(data, pool.map(encode, [grain for _, grain in data]), strict=True):
                yield index, *result
            first += len(grains)


def _metadata(geometry: Geometry, tables: list[int], name: str, epoch: int) -> bytes:
    """Everything before the first grain: header, descriptor, both directories and both copies of the tables."""
    header = HEADER.pack(b"KDMV", 3, FLAGS, geometry.capacity, GRAIN_SECTORS, 1, DESCRIPTOR_SECTORS,
                         TABLE_ENTRIES, geometry.redundant_directory, geometry.directory, geometry.overhead, 0,
                         b"\n \r\n", DEFLATE)
    descriptor = descriptor_text(geometry.capacity, name, epoch).encode()
    if len(descriptor) > DESCRIPTOR_SECTORS * SECTOR:
        raise ValueError("the VMDK descriptor does not fit its sectors")
    table_bytes = struct.pack(f"<{len(tables)}I", *tables).ljust(geometry.tables * TABLE_SECTORS * SECTOR, b"\0")

    def directory(start: int) -> bytes:
        first_table = start + geometry.directory_sectors
        entries = [first_table + n * TABLE_SECTORS for n in range(geometry.tables)]
        return struct.pack(f"<{len(entries)}I", *entries).ljust(geometry.directory_sectors * SECTOR, b"\0")

    parts = [header.ljust(SECTOR, b"\0"), descriptor.ljust(DESCRIPTOR_SECTORS * SECTOR, b"\0"),
             directory(geometry.redundant_directory), table_bytes, directory(geometry.directory), table_bytes]
    return b"".join(parts).ljust(geometry.overhead * SECTOR, b"\0")


def descriptor_text(capacity: int, name: str, epoch: int) -> str:
    """The embedded descriptor; its content id is derived from the epoch, not drawn at random."""
    cid = hashlib.sha256(f"vrpipe-vmdk:{epoch}".encode()).hexdigest()[:8]
    cylinders = min(capacity // (16 * 63), 16383)
    return render("vmdk-descriptor.j2", cid=cid, capacity=capacity, name=name, cylinders=cylinders)
