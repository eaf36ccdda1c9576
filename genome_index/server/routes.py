"""The endpoints, one router a concern: the store's pages, queries, SQL, and the web page.

Every route reads what it serves from `Served` (the app's state: the store, its searcher, the
limits and the turns), so a router needs no closure over the app that mounts it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool

from genome_index import ASSETS
from genome_index.api import GenomeIndex
from genome_index.search.gather import Sample
from genome_index.search.searcher import Searcher
from genome_index.server.limits import QUERY_OVERHEAD, Gate, Limits, body_of
from genome_index.server.schemas import SqlBody, query_of
from genome_index.settings import GatherOptions

WEB = ASSETS / "web"
COMPARE_FILES = ("heatmap.png", "pca.png", "umap.png", "heatmap.svg", "pca.svg", "umap.svg")


@dataclass
class Served:
    """What the routes serve: one store through one searcher, within the limits."""

    index: GenomeIndex
    searcher: Searcher
    limits: Limits
    compare_dir: Path | None = None

    def __post_init__(self) -> None:
        self.query_gate = Gate("queries", self.limits.query_bytes, self.limits.queue_wait)
        self.sql_gate = Gate("SQL statements", self.limits.sql, self.limits.queue_wait)


def served(request: Request) -> Served:
    return request.app.state.served


store = APIRouter(tags=["store"])


@store.get("/health")
def health(request: Request) -> dict[str, Any]:
    """Alive, and how many genomes the store holds."""
    return {"status": "ok", "genomes": served(request).index.info()["counts"]["genomes"]}


@store.get("/info")
def info(request: Request) -> dict[str, Any]:
    """Settings, counts, labels, disk use, and the compare figures served."""
    state = served(request)
    details = state.index.info()
    details["labels"] = state.index.label_names()
    details["compare"] = [name for name in COMPARE_FILES if state.compare_dir and (state.compare_dir / name).is_file()]
    return details


@store.get("/genomes")
def genomes(
    request: Request, offset: int = Query(0, ge=0, le=1 << 62), limit: int = Query(100, ge=1, le=1_000)
) -> dict[str, Any]:
    """Stored genomes by id, `limit` (at most 1,000) from `offset`, with their labels."""
    total, page = served(request).index.genomes(offset, limit)
    return {"total": total, "offset": offset, "genomes": page}


@store.get("/genomes/{genome_id}")
def genome(request: Request, genome_id: int) -> dict[str, Any]:
    """One genome: its figures, labels and records."""
    found = served(request).index.genome(genome_id)
    if found is None:
        raise HTTPException(404, f"no genome {genome_id}")
    return found


@store.get("/genomes/{genome_id}/fasta", response_class=PlainTextResponse)
def genome_fasta(
    request: Request, genome_id: int, record: str | None = None, start: int | None = Query(None, ge=1),
    end: int | None = Query(None, ge=1), rc: bool = False,
) -> PlainTextResponse:  # fmt: skip
    """Stored sequence as FASTA, as `genome-index extract` writes it: the genome, one record (its
    name), or bases start-end of it (1-based, inclusive), reverse-complemented with rc."""
    index = served(request).index
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


search = APIRouter(tags=["search"])


@search.post("/query")
async def query(request: Request) -> list[dict[str, Any]]:
    """FASTA text (any content type but JSON; options as query parameters), or JSON with
    `sequence`, `fasta` or `records` and the options. The same rows as `query --format json`."""
    state = served(request)
    length = request.headers.get("content-length")  # checked by the app's guard; none: a chunked upload
    cost = QUERY_OVERHEAD + (int(length) if length else state.limits.max_query_bytes)
    async with state.query_gate.turn(cost):  # the body is read only once the query has its turn
        genome, options = query_of(await body_of(request, state.limits.max_query_bytes), request, state.limits)
        hits = await run_in_threadpool(state.searcher.query, genome, options)
    return [hit.row(alignments=True) for hit in hits]


@search.post("/gather")
async def gather(request: Request, threshold_bp: int | None = Query(None, ge=1), verify: bool = True) -> dict[str, Any]:
    """A sample as FASTA or FASTQ text (reads or contigs; any content type but JSON), options as
    query parameters: which stored genomes it holds, as `gather --format json` answers (`genomes`,
    the rows) with `summary`, the sample's reads, bases and sketch and the reads mapped."""
    state = served(request)
    if request.headers.get("content-type", "").startswith("application/json"):
        raise HTTPException(415, "send the sample as FASTA or FASTQ text, not JSON")
    length = request.headers.get("content-length")
    cost = QUERY_OVERHEAD + (int(length) if length else state.limits.max_query_bytes)
    async with state.query_gate.turn(cost):
        sample = Sample.of(await body_of(request, state.limits.max_query_bytes))
        found = await run_in_threadpool(state.searcher.gather, sample, GatherOptions(threshold_bp, verify))
    return {"summary": found.summary(), "genomes": [row.row() for row in found.rows]}


@search.post("/sql")
async def sql(request: Request, body: SqlBody) -> dict[str, Any]:
    """One read-only statement, as `genome-index sql` runs it, in a process of its own held to the
    server's memory and time limits; at most the row cap comes back (`truncated` says when more
    matched)."""
    state = served(request)
    limits = state.limits

    def run() -> tuple[list[str], list[tuple]]:
        return state.index.sql(body.statement, limits.sql_timeout, limits.sql_memory, max_rows=limits.sql_rows + 1)

    async with state.sql_gate.turn():
        columns, rows = await run_in_threadpool(run)
    return {"columns": columns, "rows": rows[: limits.sql_rows], "truncated": len(rows) > limits.sql_rows}


pages = APIRouter(include_in_schema=False)


@pages.get("/", response_class=HTMLResponse)
def page() -> HTMLResponse:
    """The web page: the store at a glance, a query box, ranked hits, genome pages."""
    return HTMLResponse((WEB / "index.html").read_text(encoding="utf-8"))


@pages.get("/static/{name}")
def static(name: str) -> FileResponse:
    if name not in ("app.js", "style.css", "favicon.svg"):
        raise HTTPException(404, f"no file {name!r}")
    return FileResponse(WEB / name)


@pages.get("/favicon.ico")
def favicon() -> FileResponse:
    return FileResponse(WEB / "favicon.svg", media_type="image/svg+xml")


@pages.get("/compare/{name}")
def compare_figure(request: Request, name: str) -> FileResponse:
    """A figure of `genome-index compare` (served with --compare DIR)."""
    folder = served(request).compare_dir
    if folder is None or name not in COMPARE_FILES or not (folder / name).is_file():
        raise HTTPException(404, f"no compare figure {name!r}")
    return FileResponse(folder / name)
