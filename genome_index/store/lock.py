"""The write lock: an exclusive flock on build.lock, released by the kernel when its holder dies."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from genome_index.errors import GenomeIndexError
from genome_index.store.files import open_no_follow

LOCK_FILE = "build.lock"


@contextlib.contextmanager
def write_lock(directory: Path) -> Iterator[None]:
    """Hold the store's write lock for the block, or fail at once naming the holder."""
    path = directory / LOCK_FILE
    try:
        handle = os.fdopen(open_no_follow(path, os.O_RDWR | os.O_CREAT), "r+")
    except OSError as exc:
        raise GenomeIndexError(f"{directory}: cannot write here ({exc.strerror})") from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise GenomeIndexError(
                f"{directory}: another genome-index process (pid {holder}) is writing to this "
                f"store (lock {path}); wait for it to finish"
            ) from None
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
        except OSError as exc:
            raise GenomeIndexError(f"{directory}: cannot write the lock ({exc.strerror}); disk full?") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        handle.close()


def is_held(directory: Path) -> bool:
    """True while another process holds the write lock (a build is running)."""
    path = directory / LOCK_FILE
    try:
        handle = os.fdopen(open_no_follow(path, os.O_RDONLY), "r")
    except (OSError, GenomeIndexError):
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False
