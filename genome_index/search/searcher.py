"""`Searcher`: a store with its model, FAISS indexes and genome details loaded once, for many queries.

A one-shot `query` builds one and drops it; a program, a notebook or `serve` keeps one, so
the model (GBs for NT-2.5B) loads once and every query after it pays only for its own
windows. The searcher never holds the DuckDB file between queries (a build may commit in
between): what queries read is kept in memory (`resident`), a query opens a read-only
connection only when the store's files changed or a genome's sequence is first needed, and
when the store changed (genomes added or removed, labels set) everything kept is read again,
so new genomes are found without a restart. Queries may come from many threads at once: the model
runs one batch at a time, and `MicroBatcher` joins the windows of queries that arrive
together into one batch run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from genome_index import config
from genome_index.embedding.backends import refuse_other_model
from genome_index.errors import GenomeIndexError
from genome_index.io.fasta import QueryInput, as_genome
from genome_index.progress import SILENT, Progress, Step
from genome_index.search import sketch
from genome_index.search.align import LONG_PRESET, Aligners, Target
from genome_index.search.candidates import Retriever, matched_windows, named_rows, rank_chunk_mode
from genome_index.search.gather import GatherResult, Sample, gather
from genome_index.search.hits import Hit, make_hit
from genome_index.search.rerank import (
    NO_SEQUENCES,
    AlignmentReranker,
    Plan,
    SketchReranker,
    order_hits,
    stored_target,
)
from genome_index.search.resident import Resident, ResidentReader, file_stamp
from genome_index.search.shards import ShardPool
from genome_index.search.views import Query, embed_unique, queries_of, resolve_mode, views, wants_alignment
from genome_index.settings import GatherOptions, ModelOptions, QueryOptions, RunOptions, StoreSettings
from genome_index.store import Store
from genome_index.store.indexes import to_gpu

if TYPE_CHECKING:
    from genome_index.embedding.embedder import Embedder
    from genome_index.embedding.tokenize import Chunk

log = logging.getLogger("genome_index")
BATCH_WAIT = 0.005  # seconds a micro-batch waits at most, after its first, for queries begun meanwhile
STAGES = ("embed", "candidates", "rerank", "verify")
ANSWERING = 2  # queries of one call answered at once (see in_turn)
SEARCHING = os.cpu_count() or 1  # queries past their embedding searched and aligned at once (see Searcher)


@dataclasses.dataclass
class QueryTiming:
    """Where a query's time went, stage by stage (seconds, summed over its records), and the
    genomes each stage passed on to the next (names): a stage's recall is whether the source
    is still among them. embed: the query's windows and sketch; candidates: the FAISS search
    and the embedding's order, passing its best `Plan.candidates`; rerank: their sketch
    containment, passing those to verify; verify: minimap2, passing the hits."""

    seconds: dict[str, float] = dataclasses.field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    passed: dict[str, set[str]] = dataclasses.field(default_factory=dict)
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, stage: str, seconds: float, passed: set[str] | None = None) -> None:
        """`seconds` more in `stage`, and genomes it passed on (records may be answered in threads)."""
        with self._lock:
            self.seconds[stage] += seconds
            if passed is not None:
                self.passed.setdefault(stage, set()).update(passed)

    def timed(self, stage: str, work: Callable[..., Any], names: Callable[[Any], set[str]] | None = None) -> Callable:
        """`work` wrapped: its seconds added to `stage`; with `names`, what it was given recorded
        as what the stage before passed on."""

        def run(*args: Any) -> Any:
            started = time.perf_counter()
            try:
                return work(*args)
            finally:
                self.add(stage, time.perf_counter() - started)
                if names is not None:
                    self.add(STAGES[STAGES.index(stage) - 1], 0.0, names(args[0]))

        return run


@dataclasses.dataclass(frozen=True)
class Answering:
    """What the queries of one call share while each gets its hits (`Searcher._answer`)."""

    reader: ResidentReader
    retriever: Retriever
    resident: Resident
    genome_of: dict[int, int]  # chunk id -> genome id, of the chunks the queries' windows found
    options: QueryOptions
    timing: QueryTiming
    progress: Progress


def in_turn(work: list[Callable[[], list[Hit]]]) -> Iterator[list[Hit]]:
    """Each query's hits, in order. Several (`--per-record`) are answered ANSWERING at a time:
    one's Python (ranking, sketches) runs while minimap2 aligns another's, which releases the GIL."""
    if len(work) < 2:
        yield from (answer() for answer in work)
        return
    with ThreadPoolExecutor(ANSWERING, thread_name_prefix="genome-index-answer") as pool:
        yield from pool.map(lambda answer: answer(), work)


class MicroBatcher:
    """One thread that embeds the windows of concurrent queries together: a batch waits for the
    queries begun (`coming`) but not yet handed over, at most `wait` seconds after its first, and
    joins them into one call of `embed` (the engine sorts them by length and fills the
    accelerator's batches); each query gets its own rows back. A query alone waits for no one
    (one client at a time: 5 ms of its 20 ms were that wait)."""

    def __init__(self, embed: Callable[[list[Chunk], Step], np.ndarray], wait: float = BATCH_WAIT) -> None:
        self.embed, self.wait = embed, wait
        self.requests: queue.Queue[tuple[list[Chunk], Future] | None] = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="genome-index-batcher", daemon=True)
        self.thread.start()
        self.batches = 0  # embed calls made, for tests and benchmarks
        self._coming = 0  # queries begun that have not had their vectors yet
        self._coming_lock = threading.Lock()

    @contextlib.contextmanager
    def coming(self) -> Iterator[None]:
        """Around a query's work up to its embedding: the batch being gathered waits for it."""
        with self._coming_lock:
            self._coming += 1
        try:
            yield
        finally:
            with self._coming_lock:
                self._coming -= 1

    def __call__(self, chunks: list[Chunk], step: Step) -> np.ndarray:
        future: Future = Future()
        self.requests.put((chunks, future))
        vectors = future.result()
        step.advance(sum(c.end - c.start for c in chunks), windows=len(chunks))
        return vectors

    def _run(self) -> None:
        while (first := self.requests.get()) is not None:
            batch = [first]
            deadline = time.monotonic() + self.wait
            stop = False
            while len(batch) < self._coming and (left := deadline - time.monotonic()) > 0:
                try:
                    item = self.requests.get(timeout=left)
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._embed_batch(batch)
            if stop:
                return

    def _embed_batch(self, batch: list[tuple[list[Chunk], Future]]) -> None:
        try:
            vectors = self.embed([c for chunks, _ in batch for c in chunks], SILENT.step("micro-batch"))
            self.batches += 1
        except BaseException as exc:  # every waiting query gets the error; the thread keeps serving
            for _, future in batch:
                future.set_exception(exc)
            return
        offset = 0
        for chunks, future in batch:
            future.set_result(vectors[offset : offset + len(chunks)])
            offset += len(chunks)

    def close(self) -> None:
        self.requests.put(None)
        self.thread.join(timeout=10)


class Searcher:
    """A store ready to answer many queries with its model, FAISS indexes and details loaded.

    Made by `GenomeIndex.searcher()`; use it in a `with` block (or call `close()`), and query
    it from as many threads as you like. A query that must read the store waits
    `store.reader_wait` seconds while another process holds it (a build's commit), then raises
    `StoreBusy`; one answered from what the searcher keeps does not wait. Queries embed together
    (`MicroBatcher`), then SEARCHING of them at a time (one per core) search and align: more
    threads than cores only take turns at the GIL (`serve` under 32 clients, kmer:6: median
    84.5 queries/s unbounded, 98.6 bounded). On Ray shards (`shards`) a query mostly waits for
    the actors, and queries are not bounded.
    """

    def __init__(
        self,
        store: Store,
        embedder: Embedder | None,
        settings: StoreSettings,
        micro_batch: bool = False,
        shards: ShardPool | None = None,
    ) -> None:
        self.store, self.embedder, self.settings, self.shards = store, embedder, settings, shards
        self.aligners = Aligners()
        self.one_query = False  # set by a one-shot query: see `for_one_query`
        self._lock = threading.Lock()  # guards the loaded indexes and details
        self._embed_lock = threading.Lock()  # the model runs one call at a time
        self._resident: Resident | None = None  # the store as kept in memory (see search/resident.py)
        self._stamp: tuple | None = None  # its files when last looked at
        self._kept_lock = threading.Lock()  # guards the sketches and sequences a resident keeps as it reads them
        self._warned = False  # of genomes without sequences: once per searcher
        self.batcher = MicroBatcher(self._embed_locked) if micro_batch else None
        # queries past their embedding at once; on Ray shards a query mostly waits for the actors: no bound
        self._searching = threading.BoundedSemaphore(SEARCHING) if shards is None else contextlib.nullcontext()

    @classmethod
    def open(
        cls,
        store: Store,
        run: RunOptions | None = None,
        *,
        model: str | None = None,
        embedder: Embedder | None = None,
        micro_batch: bool = False,
        trust_remote_code: bool | None = None,
        model_package: str | None = None,
        with_model: bool = True,
        ray: str | None = None,
        ray_shards: int | None = None,
    ) -> Searcher:
        """A searcher of `store` (see `GenomeIndex.searcher`): its own model, or `embedder`, which
        must be the store's; its code and package only as the user grants them. Without
        `with_model` it loads no model: it gathers samples (sketches and minimap2) but cannot query.
        With `ray` (auto, or a cluster's address) the chunk index's segments are searched on Ray
        actors, `ray_shards` of them (default: one per GPU, else one per machine; `search/shards.py`)."""
        store.require()
        settings = store.settings()
        if not with_model:
            return cls(store, None, settings)
        if ray is not None and settings.index_type != "ivf-pq":
            raise GenomeIndexError(
                f"--ray searches the segments of an ivf-pq store on Ray; this store's chunk index is "
                f"{settings.index_type}: search it without --ray, or `genome-index reindex --index-type ivf-pq` first"
            )
        grants = ModelOptions(trust_remote_code=trust_remote_code, model_package=model_package)
        embedder = embedder or store_embedder(store, settings, model, run or RunOptions(), grants)
        if not settings.same_vectors(embedder.settings(settings.store_options())):
            raise GenomeIndexError("the embedder given is not this store's model, layer and chunking")
        shards = ShardPool(store.directory, ray, ray_shards) if ray is not None else None
        return cls(store, embedder, settings, micro_batch, shards)

    def for_one_query(self, queries: int = 1) -> Searcher:
        """Set up for the `queries` of one call (a one-shot `query`). For one query its FAISS files
        are mapped rather than read (19 ms against 150 ms to open a 290 MB flat index, and the
        query reads only its candidates' pages; a mapped index is slower to scan in full, 4 KB
        pages: 54 against 20 ms, so a searcher for many queries reads it) and no minimap2 index is
        kept, so a fragment is aligned to the stretches it matched (`align.regions`)."""
        if queries == 1:
            self.one_query = True
            self.aligners.capacity = 0
        return self

    def __enter__(self) -> Searcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.aligners.close()
        if self.batcher is not None:
            self.batcher.close()
        if self.shards is not None:
            self.shards.close()

    def _embed_locked(self, chunks: list[Chunk], step: Step) -> np.ndarray:
        with self._embed_lock:
            return self.embedder.embed_chunks(chunks, step)

    # -- the store's state ------------------------------------------------------------------

    def _current(self, kinds: set[str]) -> Resident:
        """The store as kept in memory, with the indexes of `kinds` (and the stored sketches with
        `sketches`): its files unchanged since the last query, as it was; else its signature is
        read, and everything again if that changed (genomes added or removed, labels set)."""
        stamp = file_stamp(self.store)
        with self._lock:
            resident = self._resident
            if resident is not None and stamp == self._stamp and resident.holds(kinds):
                return resident
            with self.store.reading() as reader:
                signature = reader.change_signature()
                if resident is None or signature != resident.signature:
                    resident = Resident.read(reader, self.settings.dim, signature)
                if "sketches" in kinds:
                    resident.add_sketches(reader)
                for kind in kinds - set(resident.indexes) - {"sketches"}:
                    index, rebuilt = self.store.load_faiss(reader, kind, self.settings, mapped=self.one_query)
                    if rebuilt:
                        self.store.save_repair(kind, index)
                    if index.ntotal == 0:
                        raise GenomeIndexError(f"{self.store.directory}: the store holds no genomes yet")
                    resident.add_index(kind, self._placed(kind, index), reader)
            self._resident, self._stamp = resident, stamp
            return resident

    def _placed(self, kind: str, index: Any) -> Any:
        """Where an index is searched: the chunk index on the Ray shards, if any; else on the GPU
        with a faiss GPU build; else here."""
        if kind == "chunks" and self.shards is not None:
            return self.shards.place(index)
        return to_gpu(index)

    def warm(self, progress: Progress = SILENT, genomes: int | None = None) -> int:
        """Read what queries read (the indexes, every stored window once with its centring
        figures, the genomes' sequences up to what is kept of them) and build the minimap2
        indexes (assembly preset: queries of 1 kb and up) of the stored genomes with sequences,
        `genomes` of them (default: as many as the aligners keep, CACHED_GENOMES), so that the
        first queries pay only for their own work (on 1,000 genomes, a query that is first to
        read its candidates' windows and sequences took 0.58 s p50, 0.1 s after warming:
        bench_latency-1000-2026-12-07.log); the number of genomes indexed. More than the
        aligners keep raises what they keep
        (an index takes about 3 bytes a base: 9 MB a 3 Mbp genome). Past the genomes kept, a
        fragment is aligned to an index of the stretches it matched (`align.regions`: about 2
        ms a genome for 10 kb, against 0.1 s to build a 3 Mbp genome's index, which a longer
        query still builds)."""
        if genomes is not None and genomes < 0:
            raise GenomeIndexError(f"warm: genomes must be 0 or more, not {genomes}")
        if genomes is not None:
            self.aligners.capacity = max(self.aligners.capacity, genomes)
        resident = self._current({"genomes", "chunks"})
        genome_ids = sorted(resident.with_sequence)[: genomes if genomes is not None else self.aligners.capacity]
        with ResidentReader(self.store, resident, self._kept_lock) as reader:
            centring = reader.centring(resident.indexes["chunks"])
            if centring is not None:
                with progress.step("reading the chunk index", 1, "indexes") as step:
                    centring.complete()
                    step.advance(1)
            with progress.step("reading sequences", len(resident.with_sequence), "genomes") as step:
                for gid in sorted(resident.with_sequence):
                    if not reader.keeps_more_sequences():
                        break
                    reader.packed_genome(gid)
                    step.advance(1)
            with progress.step("building minimap2 indexes", len(genome_ids), "genomes") as step:
                for gid in genome_ids:
                    self.aligners.get(gid, LONG_PRESET, functools.partial(stored_target, reader, gid))
                    step.advance(1)
        return len(genome_ids)

    # -- queries --------------------------------------------------------------------------

    def query(
        self, query: QueryInput, options: QueryOptions | None = None, progress: Progress = SILENT, **overrides: Any
    ) -> list[Hit]:
        """Hits of every query in `query` (one, or one per record with `per_record`), best first.
        `overrides` set QueryOptions fields (`k=5, mode="chunks"`)."""
        options = dataclasses.replace(options or QueryOptions(), **overrides)
        return self.query_timed(query, options, progress)[0]

    def query_timed(
        self, query: QueryInput, options: QueryOptions, progress: Progress = SILENT
    ) -> tuple[list[Hit], QueryTiming]:
        """Hits, and where the query's time went (`QueryTiming`: embed, candidates, rerank, verify)."""
        if self.embedder is None:
            raise GenomeIndexError("this searcher was opened without its model (for gather): it cannot embed a query")
        timing = QueryTiming()
        genome = as_genome(query)
        if options.window_overlap and self.settings.chunking != "fixed":
            raise GenomeIndexError(
                "--window-overlap applies to stores with fixed windows; this store's windows are anchored "
                "to the sequence, so a query's windows already line up with the stored ones"
            )
        started = time.perf_counter()
        with self.batcher.coming() if self.batcher is not None else contextlib.nullcontext():
            queries = queries_of(genome, options.per_record)
            plans = [resolve_mode(options, q) for q in queries]
            view_chunks = [
                views(self.embedder, q, overlap, frames) for q, (_, overlap, frames) in zip(queries, plans, strict=True)
            ]
            chunks = [c for chunk_lists in view_chunks for lists in chunk_lists for c in lists]
            vectors = embed_unique(self.embedder, chunks, progress, self.batcher or self._embed_locked)
        scaled = self.settings.sketch_scaled
        query_hashes = [sketch.sketch_records(q.records, scaled) for q in queries]
        timing.seconds["embed"] = time.perf_counter() - started
        with self._searching:
            hits = self._search(
                queries, plans, split_views(vectors, view_chunks), query_hashes, options, timing, progress
            )
        return hits, timing

    def _search(
        self,
        queries: list[Query],
        plans: list[tuple[str, float, bool]],
        per_query: list[list[np.ndarray]],
        query_hashes: list[np.ndarray],
        options: QueryOptions,
        timing: QueryTiming,
        progress: Progress,
    ) -> list[Hit]:
        """The hits of embedded queries (their views' vectors `per_query`): candidates from the
        chunk index (every chunk-mode query in one pass per set of rows searched), then each
        query's ranking, sketches and alignments (`_answer`)."""
        hits: list[Hit] = []
        resident = self._current({"genomes"} | {"chunks" for mode, _, _ in plans if mode != "genome"})
        with ResidentReader(self.store, resident, self._kept_lock) as reader:
            indexes = resident.indexes
            retriever = Retriever(reader, self.settings, options.center)
            windows = sum(len(v) for view_vectors in per_query for v in view_vectors)
            searching = progress.step("searching", windows, "windows", queries=len(queries))
            started = time.perf_counter()
            in_chunks, found_of = [i for i, plan in enumerate(plans) if plan[0] != "genome"], {}
            if in_chunks:  # chunk-mode queries searched together: one pass for each set of rows they search
                within = [within_rows(resident, retriever, query_hashes[i], per_query[i], options) for i in in_chunks]
                vectors_of = [np.concatenate(per_query[i]) for i in in_chunks]
                found, genome_of = retriever.neighbours(indexes["chunks"], vectors_of, within)
                found_of = dict(zip(in_chunks, found, strict=True))
            timing.seconds["candidates"] += time.perf_counter() - started
            call = Answering(reader, retriever, resident, genome_of if in_chunks else {}, options, timing, progress)
            work = [
                functools.partial(self._answer, call, one, mode, view_vectors, hashes, found_of.get(i))
                for i, (one, (mode, _, _), view_vectors, hashes) in enumerate(
                    zip(queries, plans, per_query, query_hashes, strict=True)
                )
            ]
            for made, view_vectors in zip(in_turn(work), per_query, strict=True):
                searching.advance(sum(len(v) for v in view_vectors), queries=1)
                hits.extend(made)
            searching.close()
        return hits

    def _answer(
        self,
        call: Answering,
        one: Query,
        mode: str,
        view_vectors: list[np.ndarray],
        hashes: np.ndarray,
        found: tuple[np.ndarray, ...] | None,
    ) -> list[Hit]:
        """One query's hits: its genomes ranked by the embedding (from `found`, its windows'
        neighbours, in chunks mode), then their sketches (rerank) and alignments (verify)."""
        options, timing, details = call.options, call.timing, call.resident.details
        started = time.perf_counter()
        plan = Plan(options.k, options.rerank, wants_alignment(options, one), options.align_top)
        matched = None
        if found is None:
            ranked = call.retriever.genome_mode(call.resident.indexes["genomes"], view_vectors)
        else:
            ranked = rank_chunk_mode(found, [len(v) for v in view_vectors], call.genome_of, call.retriever.center)
            matched = matched_windows(found, call.genome_of) if plan.align else None
        timing.add("candidates", time.perf_counter() - started)
        named = lambda given: {details[c.genome_id]["name"] for c in given}  # noqa: E731
        sketches = SketchReranker(call.reader, self.settings.sketch_scaled, hashes)
        alignments = AlignmentReranker(call.reader, one, self.aligners, call.progress, self._warn_no_sequences, matched)
        ordered, ranked_by = order_hits(
            ranked, plan, timing.timed("rerank", sketches, named), timing.timed("verify", alignments, named)
        )
        species = (options.species_ani, options.species_fraction)
        made = [
            make_hit(one.name, rank, tied, found_, mode, ranked_by, details[found_.genome_id], species)
            for rank, tied, found_ in ordered
        ]
        timing.add("verify", 0.0, {hit.name for hit in made})
        return made

    def gather(
        self,
        sample: Sample | str | Path | bytes | Sequence[str | Path],
        options: GatherOptions | None = None,
        progress: Progress = SILENT,
        **overrides: Any,
    ) -> GatherResult:
        """Which stored genomes `sample` (a FASTA/FASTQ path, several paths of one sample, or its
        bytes) holds, and how much of each (`search.gather`); `overrides` set GatherOptions fields."""
        options = dataclasses.replace(options or GatherOptions(), **overrides)
        sample = sample if isinstance(sample, Sample) else Sample.of(sample)
        resident = self._current({"sketches"})
        assert resident.sketch_index is not None
        sizes = {gid: len(hashes) for gid, hashes in resident.stored_sketches.items()}
        with ResidentReader(self.store, resident, self._kept_lock) as reader:

            def target(genome_id: int) -> Target | None:
                if not reader.has_sequence(genome_id):
                    return None
                return stored_target(reader, genome_id)

            return gather(
                sample, resident.sketch_index, sizes, resident.details, target, self.settings.sketch_scaled,
                options, self.aligners.threads, progress,
            )  # fmt: skip

    def _warn_no_sequences(self) -> None:
        """Once per searcher: hits of genomes without a stored sequence are not aligned."""
        if not self._warned:
            self._warned = True
            log.warning("%s", NO_SEQUENCES)


def within_rows(
    resident: Resident, retriever: Retriever, hashes: np.ndarray, view_vectors: list[np.ndarray], options: QueryOptions
) -> list[tuple[int, int]] | None:
    """The rows of the chunk index a chunks-mode query is compared with (`named_rows`); None: every row."""
    if options.exhaustive:
        return None
    nearest = functools.partial(retriever.genome_mode, resident.indexes["genomes"], view_vectors)
    return named_rows(resident, hashes, options.k, nearest)


def split_views(vectors: np.ndarray, view_chunks: list[list[list[Chunk]]]) -> list[list[np.ndarray]]:
    """The rows of `vectors` (every query's windows, view after view) as each query's views."""
    out, offset = [], 0
    for chunk_lists in view_chunks:
        views_of_query = []
        for lists in chunk_lists:
            views_of_query.append(vectors[offset : offset + len(lists)])
            offset += len(lists)
        out.append(views_of_query)
    return out


def store_embedder(
    store: Store, settings: StoreSettings, model: str | None, run: RunOptions, grants: ModelOptions
) -> Embedder:
    """The store's own model, layer and windows, with the code and package the user grants
    (`config.require`); a --model that is not the store's is refused."""
    from genome_index.embedding.embedder import Embedder

    grants = config.require(grants, settings, store.directory)
    stored = settings.model_options()
    if model is not None and model not in (settings.model, settings.model_source):
        refuse_other_model(model, settings)
    run = dataclasses.replace(run, batch_tokens=run.batch_tokens or settings.batch_tokens or None)
    embedder = Embedder(
        dataclasses.replace(
            stored, model=model or stored.model, trust_remote_code=grants.trust_remote_code,
            model_package=grants.model_package,
        ),
        run,
    )  # fmt: skip
    if embedder.spec.revision != settings.model_revision:
        raise GenomeIndexError(
            f"model {model or stored.model!r} is not the model this store was built with "
            f"({settings.model}, {settings.model_revision[:19]})"
        )
    return embedder
