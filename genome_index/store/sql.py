"""Users' SQL: one read-only statement in a process of its own, held to a memory limit and a
time limit (its planning included), its rows streamed back in batches.

Run in the caller's process, DuckDB's `memory_limit` bounds its buffer manager but not a
statement's planning (14,000 `UNION ALL`s planned into 5.5 GB), an interrupt goes unseen while
it plans, results are fetched whole, and a connection opened with a statement's own settings
makes every other connection of the process to the same file fail. The worker process
(`sql_worker.py`, DuckDB's own engine) has none of that: its data segment is capped at the
memory limit plus what the interpreter needs, it is killed at the deadline, and it stops after
the rows asked for.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from genome_index.errors import GenomeIndexError, StoreBusy

WORKER = Path(__file__).with_name("sql_worker.py")
OVERHEAD = 512 << 20  # the worker's interpreter, DuckDB's threads and Arrow beside the statement's memory
BATCH_ROWS = 10_000  # rows a batch: memory stays bounded whatever a statement returns
THREADS = max(1, min(4, os.cpu_count() or 1))
SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)b?", re.IGNORECASE)


def parse_size(text: str, option: str = "--memory-limit") -> int:
    """Bytes in a size such as 512MB, 2GB, 1.5GiB or 100MiB (DuckDB's units); one line otherwise."""
    match = SIZE.fullmatch(str(text).strip())
    if not match or float(match.group(1)) <= 0:
        raise GenomeIndexError(f"{option} {text!r}: give a size such as 512MB or 2GB")
    number, unit, binary = match.groups()
    return int(float(number) * (1024 if binary else 1000) ** " kmgt".index(unit.lower() or " "))


def check_timeout(timeout: float, option: str = "--timeout") -> None:
    if not (isinstance(timeout, int | float) and math.isfinite(timeout) and timeout > 0):
        raise GenomeIndexError(f"{option} {timeout!r}: give a number of seconds above 0")


class SqlResult:
    """A running statement: its column names, and its rows as they come, in batches."""

    def __init__(self, process: subprocess.Popen, reader: object, columns: list[str], fail: object) -> None:
        self.process, self.reader, self.columns, self._fail = process, reader, columns, fail

    def batches(self) -> Iterator[list[tuple]]:
        """The rows, BATCH_ROWS at a time, as tuples of Python values."""
        import pyarrow as pa

        try:
            for batch in self.reader:  # type: ignore[attr-defined]
                yield list(zip(*(column.to_pylist() for column in batch.columns), strict=True))
        except (pa.ArrowInvalid, OSError):
            self._fail()  # the worker stopped mid-stream: its reason
        if self.process.wait() != 0:
            self._fail()

    def rows(self) -> list[tuple]:
        return [row for batch in self.batches() for row in batch]


@contextlib.contextmanager
def run_sql(
    database: Path, statement: str, timeout: float, memory_limit: str, max_rows: int | None = None, wait: float = 30.0
) -> Iterator[SqlResult]:
    """Run `statement` read-only on `database` in a worker process: at most `memory_limit`
    (a DuckDB size), stopped after `timeout` seconds, at most `max_rows` rows. Errors are one
    line: an SQL error, a write refused, out of memory, out of time, or a store held by a writer
    for longer than `wait` seconds (StoreBusy)."""
    import pyarrow as pa

    check_timeout(timeout)
    limit = parse_size(memory_limit)
    job = {  # the path absolute: a spare worker started in the working directory of its time
        "database": str(database.absolute()), "statement": statement, "memory_limit": f"{limit}B", "threads": THREADS,
        "data_limit": limit + OVERHEAD, "max_rows": max_rows, "batch_rows": BATCH_ROWS, "wait": wait,
    }  # fmt: skip
    process = SPARE.take()
    errors: list[bytes] = []
    timed_out = threading.Event()

    def stop_at_deadline() -> None:
        timed_out.set()
        with contextlib.suppress(OSError):
            process.kill()

    def read_errors() -> None:  # drained beside the rows, so a chatty worker never blocks
        assert process.stderr is not None
        errors.append(process.stderr.read(1 << 16))

    deadline = threading.Timer(timeout, stop_at_deadline)
    deadline.daemon = True
    drain = threading.Thread(target=read_errors, daemon=True)

    def fail() -> None:
        process.wait()
        drain.join()
        raise _error(process.returncode, b"".join(errors), timed_out.is_set(), timeout, memory_limit, database)

    try:
        deadline.start()
        drain.start()
        assert process.stdin is not None and process.stdout is not None
        with contextlib.suppress(BrokenPipeError):
            process.stdin.write(json.dumps(job).encode())
            process.stdin.close()
        try:
            reader = pa.ipc.open_stream(process.stdout)
        except (pa.ArrowInvalid, OSError):
            fail()
        yield SqlResult(process, reader, list(reader.schema.names), fail)
    finally:
        deadline.cancel()
        if process.poll() is None:
            process.kill()
        process.wait()
        for pipe in (process.stdout, process.stdin):
            if pipe is not None:
                pipe.close()


def start_worker(spare: bool = False) -> subprocess.Popen:
    """A worker process, waiting for its job on stdin (a spare imports DuckDB and pyarrow first)."""
    return subprocess.Popen(
        [sys.executable, str(WORKER), *(["--spare"] if spare else [])],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def let_go(process: subprocess.Popen) -> None:
    """End a worker that was given no job (a spare no longer wanted, or found dead): its pipes
    closed, the process killed and reaped."""
    with contextlib.suppress(OSError):
        for pipe in (process.stdin, process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()
    process.kill()
    process.wait()


class Spare:
    """The next statement's worker, started ahead once this process has run a statement (a
    server, a notebook, a test run), so that later statements skip the worker's imports (0.2 s
    of a 0.27 s statement); a process that runs one (`genome-index sql`) starts none. Each
    worker still runs one statement; the spare ends with this process (its stdin closes)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ready: subprocess.Popen | None = None
        self._taken = 0
        atexit.register(self.close)

    def take(self) -> subprocess.Popen:
        """The spare, if one is ready and alive, else a new worker; and the next spare started."""
        with self._lock:
            ready, self._ready = self._ready, None
            self._taken += 1
            ahead = self._taken > 1
        if ready is not None and ready.poll() is not None:
            let_go(ready)
            ready = None
        process = ready or start_worker()
        if ahead:
            following = start_worker(spare=True)
            with self._lock:
                if self._ready is None:
                    self._ready, following = following, None
            if following is not None:  # another thread's is ready already
                let_go(following)
        return process

    def close(self) -> None:
        with self._lock:
            ready, self._ready = self._ready, None
        if ready is not None:
            let_go(ready)


SPARE = Spare()


def _error(
    returncode: int, stderr: bytes, timed_out: bool, timeout: float, memory_limit: str, database: Path
) -> GenomeIndexError:
    """The one line for a worker that did not finish."""
    if timed_out:
        return GenomeIndexError(f"SQL stopped after {timeout:g} s (allow longer with --timeout)")
    try:
        report = json.loads(stderr.decode("utf-8", "replace").strip().splitlines()[-1])
        kind, message = report["kind"], report["message"]
    except (ValueError, IndexError, KeyError, TypeError):
        if returncode == -signal.SIGINT:
            return GenomeIndexError("SQL interrupted")
        kind, message = "crash", f"its process ended with status {returncode}"
    if kind == "count":
        if message == "0":
            return GenomeIndexError("no SQL statement given")
        return GenomeIndexError(f"one SQL statement at a time (got {message})")
    if kind == "busy":
        return StoreBusy(f"{database.parent}: a build holds the store (a long commit?); try again later")
    if kind == "damaged":
        return GenomeIndexError(f"{database}: cannot read ({message}); is it damaged?")
    if "read-only" in message or "read only" in message:
        return GenomeIndexError(f"the store is read-only through `sql`: {message}")
    if kind in ("memory", "crash") or "Out of Memory" in message or "bad_alloc" in message:
        return GenomeIndexError(
            f"SQL ran out of memory ({message}); allow more than {memory_limit} with --memory-limit"
        )
    return GenomeIndexError(f"SQL error: {message}")
