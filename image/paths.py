"""Directories and files the build creates, with their mode set explicitly: under a umask such as 0077 a plain
mkdir would give 0700 folders in the rootfs (apt's download user could not use its cache) and a
rootfs that differs from other builds.
"""

from pathlib import Path

DIR_MODE = 0o755


def make_dirs(path: Path, mode: int = DIR_MODE) -> None:
    """`mkdir -p path`: every directory it makes gets mode, whatever the umask; existing ones stay."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        folder.mkdir()
        folder.chmod(mode)


def write_file(path: Path, text: str, mode: int = 0o644) -> None:
    """Write text to path (replacing a file or symlink there), its folders made as make_dirs does."""
    make_dirs(path.parent)
    path.unlink(missing_ok=True)  # mmdebstrap may leave a symlink (resolv.conf)
    path.write_text(text)
    path.chmod(mode)
