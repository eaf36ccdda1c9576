"""`serve --workers N`: N processes answer requests on one listening socket.

One process answers about one core's worth of queries: its Python (HTTP, ranking, sketches)
holds the GIL, so on two cores 32 clients got 84-102 queries/s of 10 kb fragments from one
process and 142-174 from two in the same runs (kmer:6, bench_serve). The parent binds the
socket, starts N workers (`python -m genome_index.server.workers FD I/N`) that inherit it, each
with its own searcher and its own copy of the store's indexes in memory, and the kernel hands
each connection to one of them. What a worker needs (the store, and `app.Serving`) comes as
JSON on its stdin. The parent only watches: Ctrl-C or SIGTERM stops every worker, and a worker
that dies stops the server with one line.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genome_index.errors import GenomeIndexError

if TYPE_CHECKING:
    from genome_index.server.app import Serving

log = logging.getLogger("genome_index")
WATCH_EVERY = 0.2  # seconds between looks at the workers
STOP_WAIT = 30.0  # seconds a worker has to finish its requests once told to stop, then it is killed


def supervise(sock: socket.socket, workers: int, store: Path, serving: Serving) -> None:
    """Start `workers` processes answering on `sock` as `serving` says for the store at `store`,
    and watch them until Ctrl-C or SIGTERM (then each is stopped as uvicorn stops: requests
    under way are finished, and this returns), or until one ends by itself: then the others are
    stopped too and the error is one line."""
    started: list[subprocess.Popen] = []
    main = threading.current_thread() is threading.main_thread()  # only there may a signal handler be set
    previous = signal.signal(signal.SIGTERM, _interrupt) if main else None
    try:
        for number in range(1, workers + 1):
            worker = subprocess.Popen(
                [sys.executable, "-m", "genome_index.server.workers", str(sock.fileno()), f"{number}/{workers}"],
                stdin=subprocess.PIPE, pass_fds=(sock.fileno(),),
            )  # fmt: skip
            started.append(worker)
            assert worker.stdin is not None
            worker.stdin.write(json.dumps([str(store), serving.to_json()]).encode())
            worker.stdin.close()
        while True:
            for number, worker in enumerate(started, start=1):
                if (code := worker.poll()) is not None:
                    how = f"was killed by signal {-code}" if code < 0 else f"ended with exit status {code}"
                    raise GenomeIndexError(f"worker {number} (pid {worker.pid}) {how}; the server stopped")
            time.sleep(WATCH_EVERY)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: stopped as asked, as one process stops
        pass
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
        stop(started)


def _interrupt(signum: int, frame: Any) -> None:
    """SIGTERM to the parent: stop as Ctrl-C stops it (Python's default would leave the workers)."""
    raise KeyboardInterrupt


def stop(workers: list[subprocess.Popen]) -> None:
    """Ask every worker still running to stop (SIGTERM: uvicorn finishes the requests under way,
    where a second SIGINT after Ctrl-C's would cut them), and kill those that have not within
    STOP_WAIT seconds."""
    for worker in workers:
        if worker.poll() is None:
            worker.terminate()
    deadline = time.monotonic() + STOP_WAIT
    for worker in workers:
        try:
            worker.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


class _Lines(logging.Handler):
    """A worker's log records as lines on stderr, as the command line writes them."""

    def __init__(self, worker: str) -> None:
        super().__init__()
        self.worker = worker

    def emit(self, record: logging.LogRecord) -> None:
        prefix = "notice: " if record.levelno >= logging.WARNING else ""
        print(f"{prefix}[worker {self.worker}] {self.format(record)}", file=sys.stderr, flush=True)


def main() -> None:
    """A worker: serve the store its parent named on the socket it inherited, until stopped."""
    from genome_index.api import GenomeIndex
    from genome_index.server.app import Serving, answer

    descriptor, number = int(sys.argv[1]), sys.argv[2]
    logger = logging.getLogger("genome_index")
    logger.addHandler(_Lines(number))
    logger.setLevel(logging.INFO)
    store, serving = json.loads(sys.stdin.read())
    sock = socket.socket(fileno=descriptor)
    threading.Thread(target=_orphaned, args=(os.getppid(),), name="genome-index-parent", daemon=True).start()
    try:
        answer(GenomeIndex.open(Path(store)), sock, Serving.from_json(serving), announce=f"as worker {number}")
    except KeyboardInterrupt:
        pass
    except GenomeIndexError as exc:
        log.error("%s", exc)
        sys.exit(1)


def _orphaned(parent: int) -> None:
    """Stop this worker as SIGTERM would once its parent is gone (killed outright: it had no
    chance to stop its workers), rather than serve on unwatched."""
    while os.getppid() == parent:
        time.sleep(WATCH_EVERY * 5)
    os.kill(os.getpid(), signal.SIGTERM)


if __name__ == "__main__":
    main()
