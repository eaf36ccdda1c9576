"""The store folder's own files, written without ever following a link.

A store is a folder that travels (copied, unpacked, shared): a symbolic link placed where one of
its files belongs (`build.lock` pointing at a file outside) must not turn a write into a write
elsewhere. Every file this tool writes in a store is opened here with O_NOFOLLOW, and a command
that writes refuses a store whose own file names are links, in one line, before it writes.
DuckDB opens its file itself, so for `metadata.duckdb` the refusal is the guard.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from genome_index.errors import GenomeIndexError

_NO_FOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC


def link_refused(path: Path) -> GenomeIndexError:
    return GenomeIndexError(
        f"{path} is a symbolic link: genome-index never writes through a link in a store; remove it "
        "(the store's files must be its own)"
    )


def open_no_follow(path: Path, flags: int, mode: int = 0o644) -> int:
    """os.open that refuses a link at `path` (one line), for a file of the store."""
    try:
        return os.open(path, flags | _NO_FOLLOW, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise link_refused(path) from None
        raise


def create_new(path: Path) -> int:
    """A new, empty file at `path` for writing: whatever was there (a stale file, a link) is
    removed first (unlinking a link removes the link, not its target), then created exclusively."""
    path.unlink(missing_ok=True)
    return open_no_follow(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)


def replace_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Replace `path` with what `write` writes to a new temp file beside it (never through a
    link): flushed, fsynced, renamed over `path`, and the folder fsynced."""
    tmp = path.with_name(path.name + ".tmp")
    with os.fdopen(create_new(tmp), "wb", buffering=1 << 20) as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def touch(path: Path) -> None:
    """Create `path` or bring its time up to now, never through a link."""
    handle = open_no_follow(path, os.O_WRONLY | os.O_CREAT)
    try:
        os.utime(handle)
    finally:
        os.close(handle)


def refuse_links(directory: Path, names: set[str]) -> None:
    """Fail with one line when any of the store's own file names in `directory` is a link."""
    for name in sorted(names):
        if (directory / name).is_symlink():
            raise link_refused(directory / name)


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file, read in blocks (what a store lists for the files it writes once)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
