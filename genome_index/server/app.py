"""`genome-index serve`: the store behind an HTTP API (FastAPI), with a web page at `/`.

One resident `Searcher` answers every request (the model loads once; concurrent queries are
embedded in shared micro-batches). Requests never hold the store: a build may run beside the
server, and its genomes are served as they are committed; while a build holds the file longer
than `BUSY_WAIT` seconds a request gets 503 with one line and the next one is served. Safe by
default: it listens on 127.0.0.1, any other host needs a bearer token (`auth`); every error is
JSON with a one-line `detail`, never a traceback; and it stays bounded whatever it is sent
(`limits`). The endpoints are in `routes`, what a request may send in `schemas`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import socket
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from threadpoolctl import threadpool_limits

from genome_index.api import GenomeIndex
from genome_index.errors import GenomeIndexError, StoreBusy, first_line
from genome_index.progress import SILENT, Progress
from genome_index.search.searcher import Searcher
from genome_index.server.auth import allowed, check_host
from genome_index.server.limits import BUSY_WAIT, Limits
from genome_index.server.routes import Served, pages, search, store
from genome_index.settings import RunOptions

log = logging.getLogger("genome_index")


def create_app(
    index: GenomeIndex,
    searcher: Searcher,
    limits: Limits | None = None,
    token: str | None = None,
    compare_dir: Path | None = None,
) -> FastAPI:
    """The app serving one store through one searcher, within `limits` (the defaults by default)."""
    limits = limits or Limits()
    app = FastAPIOffline(  # Swagger UI's files come from the package, not a CDN: /docs works offline
        title="genome-index", description="Search stored genomes by sequence; read the store with SQL.",
        static_url="/static-docs", favicon_url="/favicon.ico",
    )  # fmt: skip
    app.state.served = Served(index, searcher, limits, compare_dir)
    for router in (store, search, pages):
        app.include_router(router)

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Any:
        if not allowed(request.url.path, request.headers.get("authorization", ""), token):
            return JSONResponse({"detail": "a bearer token is needed (Authorization: Bearer TOKEN)"}, 401)
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limits.max_query_bytes):
            return JSONResponse({"detail": f"the body is over {limits.max_query_bytes:,} bytes"}, 413)
        try:
            return await call_next(request)
        except Exception as exc:  # a failure of ours: one line to the client and the log, and keep serving
            log.warning("%s %s failed: %s", request.method, request.url.path, first_line(exc))
            return JSONResponse({"detail": f"internal error: {first_line(exc)}"}, 500)

    app.add_exception_handler(GenomeIndexError, user_error)
    app.add_exception_handler(RequestValidationError, bad_request)
    return app


async def user_error(request: Request, exc: Exception) -> JSONResponse:
    status = 503 if isinstance(exc, StoreBusy) else 400
    return JSONResponse({"detail": first_line(exc)}, status)


async def bad_request(request: Request, exc: Exception) -> JSONResponse:
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    where = ".".join(str(part) for part in errors[0].get("loc", ())[1:]) if errors else ""
    message = errors[0].get("msg", "invalid request") if errors else "invalid request"
    return JSONResponse({"detail": f"{where}: {message}" if where else message}, 422)


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, made before the model loads: a port in use is one line at once. Its
    connections send at once (TCP_NODELAY, which they inherit): else a response's body waits for
    the client's delayed acknowledgement of its headers, 40 ms a request on a kept-alive connection."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise GenomeIndexError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port") from None
    sock.listen(2048)
    return sock


@dataclasses.dataclass(frozen=True)
class Serving:
    """How the server answers, the same in one process and in each worker of `--workers`: the
    bounds, the token, the --compare folder, how the model runs, the Ray shards, --warm, and
    the grants (trust_remote_code, model_package) the user gave."""

    limits: Limits = dataclasses.field(default_factory=Limits)
    token: str | None = None
    compare_dir: Path | None = None
    run: RunOptions = dataclasses.field(default_factory=RunOptions)
    ray: str | None = None
    ray_shards: int | None = None
    warm: bool = False
    grants: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> str:
        """What a worker is sent on its stdin (the token never on a command line)."""
        values = dataclasses.asdict(self)
        values["compare_dir"] = None if self.compare_dir is None else str(self.compare_dir)
        return json.dumps(values)

    @classmethod
    def from_json(cls, text: str) -> Serving:
        values = json.loads(text)
        compare_dir = values.pop("compare_dir")
        return cls(
            limits=Limits(**values.pop("limits")), run=RunOptions(**values.pop("run")),
            compare_dir=None if compare_dir is None else Path(compare_dir), **values,
        )  # fmt: skip


def serve(
    index: GenomeIndex,
    host: str = "127.0.0.1",
    port: int = 8000,
    limits: Limits | None = None,
    token: str | None = None,
    insecure: bool = False,
    compare_dir: Path | None = None,
    run: RunOptions | None = None,
    ray: str | None = None,
    ray_shards: int | None = None,
    warm: bool = False,
    progress: Progress = SILENT,
    workers: int = 1,
    **grants: Any,
) -> None:
    """Serve `index` until Ctrl-C (uvicorn). Everything a user can get wrong (an open host
    without a token, a missing --compare folder, a port in use) is refused before the model
    loads; `grants` (trust_remote_code, model_package) are the user's, as for `searcher`, and
    so are `ray` and `ray_shards` (the segments searched on Ray actors). With `warm`, the
    searcher reads what queries read and builds its minimap2 indexes (`Searcher.warm`, shown
    on `progress`) before the first request, so that the first queries are no slower than later
    ones. With `workers` above 1, that many processes answer on the one socket (`workers`)."""
    check_host(host, token, insecure)
    if workers < 1:
        raise GenomeIndexError(f"--workers must be 1 or more, not {workers}")
    if workers > 1 and ray is not None:
        raise GenomeIndexError("--workers applies without --ray: on Ray, the cluster's actors share the search")
    if compare_dir is not None and not compare_dir.is_dir():
        raise GenomeIndexError(f"--compare {compare_dir}: no such folder (an output folder of `genome-index compare`)")
    serving = Serving(limits or Limits(), token, compare_dir, run or RunOptions(), ray, ray_shards, warm, grants)
    sock = bind(host, port)
    if workers == 1:
        answer(index, sock, serving, progress)
        return
    from genome_index.server.workers import supervise

    log.info("starting %d workers on http://%s:%s (Ctrl-C stops them)", workers, host, port)
    with contextlib.closing(sock):
        supervise(sock, workers, index.directory, serving)


def answer(
    index: GenomeIndex,
    sock: socket.socket,
    serving: Serving,
    progress: Progress = SILENT,
    announce: str = "(Ctrl-C stops)",
) -> None:
    """Answer requests on the listening `sock` in this process until Ctrl-C (see `serve`), and
    once ready say so, ending with `announce`."""
    import uvicorn

    index.store.reader_wait = BUSY_WAIT  # a request answers 503 rather than wait out a long commit
    # BLAS on one thread: a query's matrix products are small, and OpenBLAS's second thread gains
    # them nothing but spins after each, taking the core other requests and minimap2 need (CPU a
    # query under 32 clients 25 -> 17 ms, 70 -> 80 queries/s: bench_serve)
    with (
        threadpool_limits(1, user_api="blas"),
        index.searcher(
            serving.run, micro_batch=True, ray=serving.ray, ray_shards=serving.ray_shards, **serving.grants
        ) as searcher,
    ):
        if serving.warm:
            searcher.warm(progress)
        host, port = sock.getsockname()[:2]
        log.info("serving %s on http://%s:%s %s", index.directory, host, port, announce)
        app = create_app(index, searcher, serving.limits, serving.token, serving.compare_dir)
        uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
