"""What one request may ask and how many run at once: the server's bounds, whatever it is sent.

The queries handled at once hold at most `Limits.query_bytes` of bodies (a body is read only
once its query has its turn, so many small queries share a micro-batch and large ones take
turns) and at most `Limits.sql` statements run at once; the others wait up to
`Limits.queue_wait` seconds (`Gate`) and then get 503 with Retry-After. SQL runs in a worker
process of its own (`store.sql`), held to `Limits.sql_memory` and `Limits.sql_timeout`, its
planning included, and fetched only up to the row cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import HTTPException, Request

from genome_index.errors import GenomeIndexError
from genome_index.store.sql import check_timeout, parse_size

BUSY_WAIT = 5.0  # seconds a request waits for a store a build holds, then 503
QUERY_OVERHEAD = 65_536  # bytes a query costs beside its body, in the query budget


@dataclass(frozen=True)
class Limits:
    """What one request may ask, and how many run at once."""

    max_query_bytes: int = 50_000_000
    max_records: int = 10_000
    max_k: int = 1_000
    sql_timeout: float = 10.0
    sql_rows: int = 10_000
    sql_memory: str = "500MB"
    query_bytes: int = 50_000_000  # bodies of the queries handled at once, in bytes (one always runs)
    sql: int = 2  # statements at once (each a worker process of up to sql_memory + 512 MB)
    queue_wait: float = 5.0  # seconds a request waits for its turn, then 503

    def __post_init__(self) -> None:
        check_timeout(self.sql_timeout, "--sql-timeout")
        parse_size(self.sql_memory, "--sql-memory-limit")
        if min(self.query_bytes, self.sql, self.max_query_bytes) < 1:
            raise GenomeIndexError("--query-bytes, --max-sql and --max-query-bytes must be at least 1")


class Gate:
    """A budget that requests of one kind share: a request runs once its cost fits beside those
    running (one always runs), else it waits up to `wait` seconds and gets 503 with Retry-After.
    Thread-safe and free of any event loop, so one gate serves every loop that runs requests."""

    def __init__(self, what: str, budget: int, wait: float) -> None:
        self.what, self.budget, self.wait = what, budget, wait
        self.used = 0
        self.lock = threading.Lock()

    def _take(self, cost: int) -> bool:
        with self.lock:
            if self.used and self.used + cost > self.budget:
                return False
            self.used += cost
            return True

    @contextlib.asynccontextmanager
    async def turn(self, cost: int = 1) -> AsyncIterator[None]:
        deadline = time.monotonic() + self.wait
        while not self._take(cost):
            if time.monotonic() >= deadline:
                raise HTTPException(
                    503, f"too many {self.what} at once; try again shortly", headers={"Retry-After": "2"}
                )
            await asyncio.sleep(0.02)
        try:
            yield
        finally:
            with self.lock:
                self.used -= cost


async def body_of(request: Request, limit: int) -> bytes:
    """The body, read up to `limit` bytes (a chunked upload has no length to check first)."""
    parts, size = [], 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise HTTPException(413, f"the body is over {limit:,} bytes")
        parts.append(part)
    return b"".join(parts)
