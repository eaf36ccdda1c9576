"""`genome-index serve`: the store behind an HTTP API (FastAPI), with a web page at `/`.

One resident `Searcher` answers every request (the model loads once; concurrent queries
are embedded in shared micro-batches). Requests never hold the store: a build may run
beside the server, and its genomes are served as they are committed; while a build holds
the file longer than `BUSY_WAIT` seconds a request gets 503 with one line and the next one
is served. Safe by default: it listens on 127.0.0.1, any other host needs a bearer token
(`--token-file`, compared in constant time) unless `--insecure`; every error is JSON with a
one-line `detail`, never a traceback.

Bounded whatever it is sent: bodies, records, k and SQL rows are capped; a JSON sequence holds
bases only; the queries handled at once hold at most `Limits.query_bytes` of bodies (a body is
read only once its query has its turn; many small queries share a batch, large ones take turns)
and at most `Limits.sql` statements run at once; the others wait up to `Limits.queue_wait`
seconds and then get 503 with Retry-After; SQL runs in a worker process of its own (`store.sql`),
held to `Limits.sql_memory` and `Limits.sql_timeout`, its planning included, and fetched
only up to the row cap. The light pages (`/health`, `/info`, `/genomes`) never wait on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from genome_index import ASSETS
from genome_index.api import GenomeIndex
from genome_index.errors import GenomeIndexError, StoreBusy, first_line
from genome_index.io.fasta import genome_of, parse_fasta
from genome_index.search.searcher import Searcher
from genome_index.settings import QUERY_MODES, QueryOptions
from genome_index.store.sql import check_timeout, parse_size

log = logging.getLogger("genome_index")
WEB = ASSETS / "web"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
BUSY_WAIT = 5.0  # seconds a request waits for a store a build holds, then 503
QUERY_OVERHEAD = 65_536  # bytes a query costs beside its body, in the query budget
PUBLIC = ("/", "/favicon.ico", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json")  # no token needed
COMPARE_FILES = ("heatmap.png", "pca.png", "umap.png", "heatmap.svg", "pca.svg", "umap.svg")


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


BASES = r"^[A-Za-z]*$"  # a JSON sequence: letters only (no newline, no '>', so no records of its own)
ONE_LINE = r"^[^\x00-\x1f\x7f]*$"  # a name: no newline or other control character


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=ONE_LINE, max_length=1000)
    sequence: str = Field(pattern=BASES)


class QueryBody(BaseModel):
    """A query as JSON: one of `sequence`, `fasta` or `records`, and the query's options."""

    model_config = ConfigDict(extra="forbid")
    sequence: str | None = Field(None, pattern=BASES)
    fasta: str | None = None
    records: list[Record] | None = None
    name: str = Field("query", pattern=ONE_LINE, max_length=1000)
    k: int = Field(10, ge=1)
    mode: str = "auto"
    per_record: bool = False
    rerank: bool = True
    align: bool | None = None
    align_top: int = Field(10, ge=1)


class SqlBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    statement: str = Field(max_length=1_000_000)


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


def explain(exc: ValidationError) -> str:
    """The first problem pydantic found, in one line: `k: Input should be greater than or equal to 1`."""
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error.get("loc", ()))
    return f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg", "invalid"))


def check_host(host: str, token: str | None, insecure: bool) -> None:
    """Refuse to listen beyond this machine without a token, unless told it is fine."""
    if host not in LOCAL_HOSTS and token is None and not insecure:
        raise GenomeIndexError(
            f"--host {host} makes the store reachable from other machines: give --token-file FILE "
            "(clients send `Authorization: Bearer TOKEN`), or --insecure if the network is yours"
        )


def read_token(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise GenomeIndexError(f"{path}: cannot read the token ({exc.strerror})") from None
    if len(token) < 16:
        raise GenomeIndexError(f"{path}: the token must be at least 16 characters")
    return token


def query_of(raw: bytes, request: Request, limits: Limits) -> tuple[Any, QueryOptions]:
    """The query a /query request sends (JSON, or FASTA with options as query parameters),
    checked against the limits; a bad one is a 4xx with one line."""
    params = dict(request.query_params)
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            body = QueryBody.model_validate_json(raw)
        except ValidationError as exc:
            raise HTTPException(422, f"not a valid query body: {explain(exc)}") from None
    else:
        sent = sorted({"sequence", "fasta", "records"} & set(params))
        if sent:
            raise HTTPException(422, f"{sent[0]}: send the sequence as the body, not as a query parameter")
        try:
            body = QueryBody(fasta=raw.decode("utf-8"), **params)
        except UnicodeDecodeError:
            raise HTTPException(400, "the body is not UTF-8 text (send FASTA, not gzip)") from None
        except ValidationError as exc:
            raise HTTPException(422, f"bad query parameters: {explain(exc)}") from None
    given = [x for x in (body.sequence, body.fasta, body.records) if x is not None]
    if len(given) != 1:
        raise HTTPException(422, "give exactly one of sequence, fasta or records")
    if body.k > limits.max_k:
        raise HTTPException(422, f"k is at most {limits.max_k}")
    if body.mode not in QUERY_MODES:
        raise HTTPException(422, f"mode must be one of {', '.join(QUERY_MODES)}")
    if body.records is not None:
        if len(body.records) > limits.max_records:
            raise HTTPException(422, f"at most {limits.max_records:,} records a query")
        genome = genome_of([(r.name, r.sequence) for r in body.records], body.name)
    elif body.sequence is not None:
        genome = genome_of([(body.name, body.sequence)], body.name)
    else:
        if (body.fasta or "").count(">") > limits.max_records:
            raise HTTPException(422, f"at most {limits.max_records:,} records a query")
        genome = parse_fasta(body.fasta or "", body.name)
    options = QueryOptions(
        k=body.k, mode=body.mode, per_record=body.per_record, rerank=body.rerank, align=body.align,
        align_top=body.align_top,
    )  # fmt: skip
    return genome, options


def create_app(
    index: GenomeIndex,
    searcher: Searcher,
    limits: Limits = Limits(),
    token: str | None = None,
    compare_dir: Path | None = None,
) -> FastAPI:
    """The app serving one store through one searcher."""
    app = FastAPIOffline(  # Swagger UI's files come from the package, not a CDN: /docs works offline
        title="genome-index", description="Search stored genomes by sequence; read the store with SQL.",
        static_url="/static-docs", favicon_url="/favicon.ico",
    )  # fmt: skip
    query_gate = Gate("queries", limits.query_bytes, limits.queue_wait)
    sql_gate = Gate("SQL statements", limits.sql, limits.queue_wait)

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Any:
        path = request.url.path
        public = path in PUBLIC or path.startswith(("/static/", "/static-docs/"))
        if token is not None and not public:
            sent = request.headers.get("authorization", "")
            if not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
                return JSONResponse({"detail": "a bearer token is needed (Authorization: Bearer TOKEN)"}, 401)
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limits.max_query_bytes):
            return JSONResponse({"detail": f"the body is over {limits.max_query_bytes:,} bytes"}, 413)
        try:
            return await call_next(request)
        except Exception as exc:  # a failure of ours: one line to the client and the log, and keep serving
            log.warning("%s %s failed: %s", request.method, path, first_line(exc))
            return JSONResponse({"detail": f"internal error: {first_line(exc)}"}, 500)

    @app.exception_handler(GenomeIndexError)
    async def user_error(request: Request, exc: GenomeIndexError) -> JSONResponse:
        status = 503 if isinstance(exc, StoreBusy) else 400
        return JSONResponse({"detail": first_line(exc)}, status)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        where = ".".join(str(part) for part in errors[0].get("loc", ())[1:]) if errors else ""
        message = errors[0].get("msg", "invalid request") if errors else "invalid request"
        return JSONResponse({"detail": f"{where}: {message}" if where else message}, 422)

    async def body_of(request: Request) -> bytes:
        """The body, read up to the limit (a chunked upload has no length to check first)."""
        parts, size = [], 0
        async for part in request.stream():
            size += len(part)
            if size > limits.max_query_bytes:
                raise HTTPException(413, f"the body is over {limits.max_query_bytes:,} bytes")
            parts.append(part)
        return b"".join(parts)

    @app.get("/health")
    def health() -> dict[str, Any]:
        """Alive, and how many genomes the store holds."""
        return {"status": "ok", "genomes": index.info()["counts"]["genomes"]}

    @app.get("/info")
    def info() -> dict[str, Any]:
        """Settings, counts, labels, disk use, and the compare figures served."""
        details = index.info()
        details["labels"] = index.label_names()
        details["compare"] = [name for name in COMPARE_FILES if compare_dir and (compare_dir / name).is_file()]
        return details

    @app.get("/genomes")
    def genomes(offset: int = Query(0, ge=0, le=1 << 62), limit: int = Query(100, ge=1, le=1_000)) -> dict[str, Any]:
        """Stored genomes by id, `limit` (at most 1,000) from `offset`, with their labels."""
        total, page = index.genomes(offset, limit)
        return {"total": total, "offset": offset, "genomes": page}

    @app.get("/genomes/{genome_id}")
    def genome(genome_id: int) -> dict[str, Any]:
        """One genome: its figures, labels and records."""
        found = index.genome(genome_id)
        if found is None:
            raise HTTPException(404, f"no genome {genome_id}")
        return found

    @app.post("/query")
    async def query(request: Request) -> list[dict[str, Any]]:
        """FASTA text (any content type but JSON; options as query parameters), or JSON with
        `sequence`, `fasta` or `records` and the options. The same rows as `query --format json`."""
        length = request.headers.get("content-length")  # checked by `guard`; none: a chunked upload
        cost = QUERY_OVERHEAD + (int(length) if length else limits.max_query_bytes)
        async with query_gate.turn(cost):  # the body is read only once the query has its turn
            genome, options = query_of(await body_of(request), request, limits)
            hits = await run_in_threadpool(searcher.query, genome, options)
        return [hit.row(alignments=True) for hit in hits]

    @app.post("/sql")
    async def sql(body: SqlBody) -> dict[str, Any]:
        """One read-only statement, as `genome-index sql` runs it, in a process of its own held to
        the server's memory and time limits; at most the row cap comes back (`truncated` says
        when more matched)."""

        def run() -> tuple[list[str], list[tuple]]:
            return index.sql(body.statement, limits.sql_timeout, limits.sql_memory, max_rows=limits.sql_rows + 1)

        async with sql_gate.turn():
            columns, rows = await run_in_threadpool(run)
        return {"columns": columns, "rows": rows[: limits.sql_rows], "truncated": len(rows) > limits.sql_rows}

    @app.get("/compare/{name}")
    def compare_figure(name: str) -> FileResponse:
        """A figure of `genome-index compare` (served with --compare DIR)."""
        if compare_dir is None or name not in COMPARE_FILES or not (compare_dir / name).is_file():
            raise HTTPException(404, f"no compare figure {name!r}")
        return FileResponse(compare_dir / name)

    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        """The web page: the store at a glance, a query box, ranked hits, genome pages."""
        return HTMLResponse((WEB / "index.html").read_text(encoding="utf-8"))

    @app.get("/static/{name}")
    def static(name: str) -> FileResponse:
        if name not in ("app.js", "style.css", "favicon.svg"):
            raise HTTPException(404, f"no file {name!r}")
        return FileResponse(WEB / name)

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:
        return FileResponse(WEB / "favicon.svg", media_type="image/svg+xml")

    @app.get("/genomes/{genome_id}/fasta", response_class=PlainTextResponse)
    def genome_fasta(
        genome_id: int, record: str | None = None, start: int | None = Query(None, ge=1),
        end: int | None = Query(None, ge=1), rc: bool = False,
    ) -> PlainTextResponse:  # fmt: skip
        """Stored sequence as FASTA, as `genome-index extract` writes it: the genome, one record
        (its name), or bases start-end of it (1-based, inclusive), reverse-complemented with rc."""
        found = index.genome(genome_id)
        if found is None:
            raise HTTPException(404, f"no genome {genome_id}")
        spec = f"id:{genome_id}"
        if record is not None:
            numbers = {r["name"]: r["idx"] + 1 for r in found["records"]}
            if record not in numbers:
                raise HTTPException(404, f"genome {genome_id} has no record {record!r}")
            spec += f":{numbers[record]}"
        if (start is None) != (end is None) or (start is not None and record is None):
            raise HTTPException(422, "give record, then start and end together")
        if start is not None:
            spec += f":{start}-{end}"
        return PlainTextResponse(index.extract([spec], reverse=rc).decode(), media_type="text/plain")

    return app


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, made before the model loads: a port in use is one line at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise GenomeIndexError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port") from None
    sock.listen(2048)
    return sock


def serve(
    index: GenomeIndex,
    host: str = "127.0.0.1",
    port: int = 8000,
    searcher: Searcher | None = None,
    limits: Limits = Limits(),
    token: str | None = None,
    insecure: bool = False,
    compare_dir: Path | None = None,
    sock: socket.socket | None = None,
) -> None:
    """Run the server until Ctrl-C (uvicorn), on `sock` if given (see `bind`)."""
    import uvicorn

    check_host(host, token, insecure)
    sock = sock or bind(host, port)
    index.store.reader_wait = BUSY_WAIT
    searcher = searcher or index.searcher(micro_batch=True)
    with searcher:
        app = create_app(index, searcher, limits, token, compare_dir)
        uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
