"""Atomic publishing: reprepro rewrites its index files one by one, so its own tree is never served.
Each publish copies it into a new tree beside the served one (pool hard-linked, indexes copied, by-hash
copies of the indexes of this and the last trees), checks it, and swaps the served symlink with one
rename.
An apt client reads InRelease from one tree and fetches indexes by hash, so it never sees a mix.
"""

import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

from debian.deb822 import Release

from vrpipe.errors import VrpipeError
from vrpipe.log import step

KEEP = 3  # older trees kept (and their indexes served by hash) for clients in the middle of an update


def differs(work: Path, public: Path, codenames: Iterable[str]) -> bool:
    """True when reprepro's tree has signed indexes the served tree does not have yet."""
    for codename in codenames:
        served = public / "dists" / codename / "InRelease"
        if not served.exists() or served.read_bytes() != (work / "dists" / codename / "InRelease").read_bytes():
            return True
    return False


def publish_tree(work: Path, public: Path, keyring: Path, check: Callable[[Path], None]) -> Path:
    """Make the next tree from reprepro's work tree, check it (check raises VrpipeError to refuse it),
    and serve it; returns the new tree. A refused tree is deleted and the served one stays."""
    older = _trees(public.parent / "trees")
    tree = public.parent / "trees" / str(int(older[-1].name) + 1 if older else 1)
    with step(f"make tree {tree.name}"):
        shutil.rmtree(tree, ignore_errors=True)
        shutil.copytree(work / "pool", tree / "pool", copy_function=os.link)
        shutil.copytree(work / "dists", tree / "dists")
        shutil.copy2(keyring, tree / keyring.name)
        for source in [tree, *older[-KEEP:]]:
            _add_by_hash(tree, source)
    try:
        with step(f"check tree {tree.name}"):
            check(tree)
    except VrpipeError:
        shutil.rmtree(tree)
        raise
    _swap(public, tree)
    for old in older[:-KEEP]:
        shutil.rmtree(old)
    return tree


def _trees(trees: Path) -> list[Path]:
    """The trees made so far, oldest first."""
    trees.mkdir(exist_ok=True)
    return sorted((t for t in trees.iterdir() if t.name.isdigit()), key=lambda t: int(t.name))


def _add_by_hash(tree: Path, source: Path) -> None:
    """Link every index the Release files of source list into tree's by-hash folders."""
    for release_file in sorted((source / "dists").glob("*/Release")):
        codename = release_file.parent.name
        if not (tree / "dists" / codename).is_dir():
            continue
        for entry in Release(release_file.read_text())["SHA256"]:
            index = release_file.parent / entry["name"]
            by_hash = tree / "dists" / codename / Path(entry["name"]).parent / "by-hash" / "SHA256"
            if index.exists() and not (by_hash / entry["sha256"]).exists():
                by_hash.mkdir(parents=True, exist_ok=True)
                os.link(index, by_hash / entry["sha256"])


def _swap(public: Path, tree: Path) -> None:
    """Point the served symlink at tree with one rename: a reader sees the old tree or the new one."""
    link = public.with_name(public.name + ".new")
    link.unlink(missing_ok=True)
    link.symlink_to(tree.relative_to(public.parent))
    os.replace(link, public)
