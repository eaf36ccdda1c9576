"""The FAISS files: derived from the stored vectors, written atomically, verified on open.

Inner-product indexes over L2-normalised vectors (so scores are cosines), wrapped in an id
map so that FAISS ids are the DuckDB ids. The chunk index has the store's index type; the
genome index is always exact.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from genome_index.errors import GenomeIndexError, first_line
from genome_index.progress import Step
from genome_index.settings import INDEX_TYPES, IVF_LISTS
from genome_index.store.vectors import normalise, normalise_in_place, pair_scores, rescore

HNSW_M, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH = 32, 80, 128
IVF_NPROBE = 40  # lists probed of 4,096: recall@10 0.964 at 10 M vectors, 0.949 at 32 (benchmarks/bench_segments.py)
RERANK = 4  # ivf-pq: candidates re-scored exactly per result wanted
PQ_MIN_TRAINING = 10_000  # fewer chunk vectors than this: ivf-pq falls back to exact search
TRAIN_PER_LIST = 39  # vectors per list FAISS's k-means asks for at least ...
TRAINING_SAMPLE_PER_LIST = 64  # ... and at most this many a list are trained on (k-means cost grows with them)
ADD_BLOCK = 65_536  # vectors added to an index at a time (progress between blocks)
FLAT_BLOCK = 262_144  # stored vectors scored at a time by `flat_search`
GEMM_ROWS = 1024  # ... in matrix products of this many stored vectors: OpenBLAS copies the whole block for a few
# query vectors (8 against 35,031 x 2,080: 43 ms in one product, 24 ms so; benchmarks/bench_latency.py)
CENTRED_ROWS = 4096  # rows whose centring figures are worked out together, the first time one is searched
SCORES_BYTES = 64 << 20  # scores `flat_search` holds at once (a block of queries x FLAT_BLOCK)


def make_faiss(index_type: str, dim: int, n_vectors: int) -> faiss.Index:
    """An empty FAISS index of one of INDEX_TYPES, inner product (cosine on normalised vectors),
    wrapped so that its ids are the DuckDB ids. ivf-pq must still be trained."""
    if index_type == "flat":
        inner = faiss.IndexFlatIP(dim)
    elif index_type == "hnsw":
        inner = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    elif index_type == "ivf-pq":
        nlist = max(1, min(int(np.sqrt(max(n_vectors, 1))), n_vectors // TRAIN_PER_LIST or 1))
        inner = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, nlist, pq_subvectors(dim), 8, faiss.METRIC_INNER_PRODUCT)
    else:
        raise GenomeIndexError(f"unknown index type {index_type!r}: use {', '.join(INDEX_TYPES)}")
    return faiss.IndexIDMap2(inner)


def pq_subvectors(dim: int) -> int:
    """Sub-quantizers of a product quantiser of `dim`: 8-d sub-vectors where `dim` allows (a
    byte a sub-vector: 128 bytes a 1,024-d vector). Against 4-d ones: half the disk, a 10-window
    query over 1 M vectors 10.7 ms against 15.1, recall@10 1.000 both
    (benchmarks/bench_pq_width.py)."""
    return next(m for m in (dim // 8, dim // 4, dim // 2, dim) if m and dim % m == 0)


def train_threshold(lists: int) -> int:
    """Chunk vectors from which an `ivf-pq` store of `lists` inverted lists is trained once and
    segmented (below: exact)."""
    return max(PQ_MIN_TRAINING, TRAIN_PER_LIST * lists)


def training_size(lists: int) -> int:
    """Vectors a store's quantizers are trained on, at most (a random sample of those stored)."""
    return max(PQ_MIN_TRAINING, TRAINING_SAMPLE_PER_LIST * lists)


def train_ivf_pq(sample: np.ndarray, lists: int) -> faiss.IndexIVFPQ:
    """An empty IVF-PQ (inner product, `lists` inverted lists, 8-bit codes) trained on the rows of
    `sample` (a float32 sample is normalised in place: it can be a quarter of a GB); its ids
    live in its lists (no id map)."""
    dim = sample.shape[1]
    index = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, lists, pq_subvectors(dim), 8, faiss.METRIC_INNER_PRODUCT)
    index.cp.min_points_per_centroid = index.pq.cp.min_points_per_centroid = 1  # train_threshold is the guard
    if sample.dtype != np.float32 or not sample.flags.writeable or not sample.flags.c_contiguous:
        sample = np.array(sample, dtype=np.float32, order="C")
    index.train(normalise_in_place(sample))
    return index


def build_faiss(
    ids: np.ndarray, vectors: np.ndarray, dim: int, index_type: str = "flat", step: Step | None = None
) -> faiss.Index:
    """An index of `index_type` over the normalised vectors, ids as given, trained if needed;
    added in blocks, each reported to `step` (an HNSW graph of millions takes minutes)."""
    if index_type == "ivf-pq" and len(ids) < PQ_MIN_TRAINING:
        index_type = "flat"  # too few vectors to train product quantisers; exact is fast here
    index = make_faiss(index_type, dim, len(ids))
    vectors = normalise(vectors) if len(ids) else np.empty((0, dim), dtype=np.float32)
    if not index.is_trained:
        rng = np.random.default_rng(0)
        sample = vectors[rng.choice(len(vectors), min(len(vectors), 256 * 256), replace=False)]
        index.train(sample)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    for lo in range(0, len(ids), ADD_BLOCK):
        index.add_with_ids(vectors[lo : lo + ADD_BLOCK], ids[lo : lo + ADD_BLOCK])
        if step is not None:
            step.advance(len(ids[lo : lo + ADD_BLOCK]))
    return tune(index)


def tune(index: faiss.Index) -> faiss.Index:
    """Set the search-time accuracy knobs of an approximate index (not all are saved in files)."""
    inner = faiss.downcast_index(index.index) if hasattr(index, "index") else index
    if isinstance(inner, faiss.IndexHNSW):
        inner.hnsw.efSearch = HNSW_EF_SEARCH
    elif isinstance(inner, faiss.IndexIVF):
        inner.nprobe = min(IVF_NPROBE, inner.nlist)
    return index


def search(
    index: faiss.Index,
    queries: np.ndarray,
    k: int,
    fetch: Callable[[np.ndarray], np.ndarray] | None = None,
    runs: list[tuple[int, int]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, ids) for normalised queries. For a product-quantised index in memory,
    `fetch` (ids -> their exact vectors) re-scores RERANK x k candidates exactly: the compressed
    codes pick candidates, the stored vectors decide. A trained store's segments are scored by
    their codes alone: fetching the candidates' vectors from DuckDB reads (and caches) most of
    its file over a few hundred queries (2.4 GB of memory at a million vectors, against 0.7 GB
    without; recall@10 0.96 either way at the default probes: benchmarks/bench_segments.py).
    `runs` (row ranges of a flat index) limits the search to those rows."""
    k = min(k, index.ntotal)
    inner = faiss.downcast_index(index.index) if hasattr(index, "index") else index
    if isinstance(inner, faiss.IndexFlatIP) and hasattr(index, "id_map") and k > 0:
        return flat_search(inner, faiss.vector_to_array(index.id_map), queries, k, runs)
    if runs is not None:
        raise ValueError("row ranges apply to a flat index in memory")
    from genome_index.store.segments import search_stacked, stack_of  # segments build on this module

    if stack_of(index) is not None:
        return search_stacked(index, queries, k)
    if fetch is None or not isinstance(inner, faiss.IndexIVFPQ):
        return index.search(queries, k)
    _, candidates = index.search(queries, min(k * RERANK, index.ntotal))
    return rescore(queries, candidates, lambda ids: normalise(fetch(ids)), k)


def flat_vectors(inner: faiss.IndexFlat) -> np.ndarray:
    """The vectors of a flat index in this process's memory, as they lie (a view, not a copy)."""
    return faiss.rev_swig_ptr(inner.get_xb(), inner.ntotal * inner.d).reshape(inner.ntotal, inner.d)


@dataclass(frozen=True)
class Centring:
    """What turns a flat index's inner products into centred cosines, cos(q - m, x - m), inside
    the same matrix product: the store's mean chunk vector m, and each row's product with it
    and distance from it, worked out for a block of rows the first time it is searched (a cold
    query that reads ten genomes' windows pays for theirs, not the store's). Centred neighbours
    are then exact and cost nothing beyond the plain search, where re-scoring fetched twice k
    vectors."""

    stored: np.ndarray  # the index's rows as they lie
    mean: np.ndarray  # (dim,) float32
    row_dot: np.ndarray  # x . m for each row
    row_norm: np.ndarray  # |x - m| for each row (1 where 0, as `normalise` leaves zero rows)
    ready: np.ndarray  # bool: whether a row's two figures are worked out yet

    @classmethod
    def of(cls, inner: faiss.IndexFlat, mean: np.ndarray) -> Centring:
        stored, rows = flat_vectors(inner), inner.ntotal
        mean = np.ascontiguousarray(mean, dtype=np.float32).reshape(-1)
        return cls(stored, mean, np.empty(rows, np.float32), np.empty(rows, np.float32), np.zeros(rows, bool))

    def _work_out(self, rows: slice) -> None:
        """The figures of `rows`, where not yet worked out, in fixed blocks of CENTRED_ROWS rows (a
        row's figures never depend on which search came first; two threads may both work one
        block out: the same values)."""
        for lo in range(rows.start - rows.start % CENTRED_ROWS, rows.stop, CENTRED_ROWS):
            block = slice(lo, min(lo + CENTRED_ROWS, len(self.ready)))
            if self.ready[block].all():
                continue
            part = self.stored[block]
            dot = part @ self.mean
            square = np.einsum("ij,ij->i", part, part)
            norm = np.sqrt(np.maximum(square - 2 * dot + float(self.mean @ self.mean), 0))
            self.row_dot[block], self.row_norm[block] = dot, np.where(norm == 0, 1, norm)
            self.ready[block] = True

    def complete(self) -> None:
        """Every row's figures worked out (and so every row read once: `Searcher.warm`)."""
        self._work_out(slice(0, len(self.ready)))

    def scores(self, plain: np.ndarray, rows: slice, query_dot: np.ndarray, query_norm: np.ndarray) -> np.ndarray:
        """Centred cosines of stored `rows` (plain scores: rows x queries) with the queries."""
        self._work_out(rows)
        shared = float(self.mean @ self.mean)
        centred = plain - query_dot[None, :] - self.row_dot[rows, None] + shared
        return centred / (self.row_norm[rows, None] * query_norm[None, :])


def flat_search(
    inner: faiss.IndexFlatIP,
    ids: np.ndarray,
    queries: np.ndarray,
    k: int,
    runs: list[tuple[int, int]] | None = None,
    centring: Centring | None = None,
) -> tuple[np.ndarray, ...]:
    """Exact top-k by inner product over a flat index's vectors as they lie in memory (only the
    row ranges `runs`, where given), by matrix products of a block of queries against a block of
    FLAT_BLOCK stored vectors, so the scores held at once stay under SCORES_BYTES however long
    the query. A few query vectors against a flat index take FAISS's one-query-at-a-time path:
    90 ms against this 24 ms for 8 on a 35,031 x 2,080 index, 2-core VM
    (benchmarks/bench_latency.py); results are the same, ties listed in id order. Fewer than k
    rows in `runs`: the missing places hold id -1 and score -inf, as FAISS fills them. With
    `centring`, the neighbours are the top k by centred cosine: (centred scores, ids, plain
    scores) are returned."""
    stored = flat_vectors(inner)
    runs = [(0, inner.ntotal)] if runs is None else runs
    blocks = [(lo, min(lo + FLAT_BLOCK, hi)) for start, hi in runs for lo in range(start, hi, FLAT_BLOCK)]
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    rows_at_once = max(1, SCORES_BYTES // (4 * min(FLAT_BLOCK, max(inner.ntotal, 1))))
    scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    found = np.full((len(queries), k), -1, dtype=np.int64)
    for start in range(0, len(queries), rows_at_once):
        part = slice(start, start + rows_at_once)
        top_scores, top_rows = _flat_top_k(stored, blocks, queries[part], k, centring)
        scores[part, : top_rows.shape[1]], found[part, : top_rows.shape[1]] = top_scores, top_rows
    if centring is None:
        return scores, np.where(found >= 0, ids[np.maximum(found, 0)], -1)
    # the neighbours' scores again, pair by pair: the same whatever else was searched with them
    # (a centred score from the product carries its rounding, magnified by the centring)
    plain = pair_scores(queries, found, lambda rows: normalise(stored[rows]))
    centred = pair_scores(
        normalise(queries - centring.mean), found, lambda rows: normalise(normalise(stored[rows]) - centring.mean)
    )
    order = np.lexsort((np.where(found >= 0, found, np.iinfo(np.int64).max), -centred), axis=1)
    found = np.take_along_axis(found, order, 1)
    found_ids = np.where(found >= 0, ids[np.maximum(found, 0)], -1)
    return np.take_along_axis(centred, order, 1), found_ids, np.take_along_axis(plain, order, 1)


def _flat_top_k(
    stored: np.ndarray, blocks: list[tuple[int, int]], queries: np.ndarray, k: int, centring: Centring | None
) -> tuple[np.ndarray, np.ndarray]:
    """(scores, row numbers) of the top k vectors of `blocks` (row ranges of `stored`) for each
    query, best first: by centred cosine with `centring`, else by the plain inner product."""
    best_scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_rows = np.empty((len(queries), 0), dtype=np.int64)
    by_column = np.ascontiguousarray(queries.T)
    if centring is not None:
        query_dot = queries @ centring.mean
        query_norm = np.linalg.norm(queries - centring.mean, axis=1)
        query_norm[query_norm == 0] = 1
    for lo, hi in blocks:
        scores = np.empty((hi - lo, len(queries)), dtype=np.float32)
        for start in range(lo, hi, GEMM_ROWS):  # BLAS handles few queries faster against short slices
            stop = min(start + GEMM_ROWS, hi)
            np.matmul(stored[start:stop], by_column, out=scores[start - lo : stop - lo])
        if centring is not None:
            scores = centring.scores(scores, slice(lo, hi), query_dot, query_norm)
        scores = scores.T
        keep = min(k, scores.shape[1])
        rows = np.argpartition(-scores, keep - 1, axis=1)[:, :keep]
        best_scores = np.concatenate([best_scores, np.take_along_axis(scores, rows, 1)], axis=1)
        best_rows = np.concatenate([best_rows, rows + lo], axis=1)
        if best_scores.shape[1] > k:
            top = np.argpartition(-best_scores, k - 1, axis=1)[:, :k]
            best_scores, best_rows = np.take_along_axis(best_scores, top, 1), np.take_along_axis(best_rows, top, 1)
    order = np.lexsort((best_rows, -best_scores), axis=1)
    return np.take_along_axis(best_scores, order, 1), np.take_along_axis(best_rows, order, 1)


def faiss_gpus() -> int:
    """GPUs a faiss GPU build can use (0 with faiss-cpu)."""
    return faiss.get_num_gpus() if hasattr(faiss, "StandardGpuResources") else 0


@functools.cache
def gpu_resources() -> Any:
    """One faiss GPU workspace for the process: it must outlive every GPU index made with it."""
    return faiss.StandardGpuResources()


def to_gpu(index: faiss.Index) -> faiss.Index:
    """The index copied to the first GPU when a faiss GPU build sees one (flat and IVF indexes;
    others, such as HNSW, stay on the CPU); otherwise the index itself."""
    if not faiss_gpus():
        return index
    try:
        return faiss.index_cpu_to_gpu(gpu_resources(), 0, index)
    except RuntimeError:  # an index type without a GPU implementation
        return index


def index_kind(index: faiss.Index) -> str:
    """Which of INDEX_TYPES an index is."""
    inner = faiss.downcast_index(index.index) if hasattr(index, "index") else index
    if isinstance(inner, faiss.IndexHNSW):
        return "hnsw"
    return "ivf-pq" if isinstance(inner, faiss.IndexIVFPQ) else "flat"


def expected_kind(index_type: str, n_vectors: int, lists: int) -> str:
    """The kind of `chunks.faiss` a store of `index_type` keeps with `n_vectors`: an `ivf-pq`
    store is exact until it is trained (then its chunk index is `segments`, not this file)."""
    return "flat" if index_type == "ivf-pq" and n_vectors < train_threshold(lists) else index_type


def read_verified(
    path: Path,
    expected_ids: np.ndarray,
    dim: int,
    index_type: str = "flat",
    lists: int = IVF_LISTS,
    mapped: bool = False,
) -> tuple[faiss.Index | None, np.ndarray, str | None]:
    """The index in `path`, the ids of `expected_ids` (sorted) it lacks, and None when it holds
    nothing else, at `dim`, of the kind the store's `index_type` makes (a file that only lags
    behind DuckDB, as during a build, is still usable); else None, and what is wrong with it.
    `mapped`: the stored vectors are mapped from the file, not read (a one-shot query's: it
    reads the pages it searches; a write replaces the file, so a mapping keeps the old one
    whole). Nothing may be added to a mapped index."""
    nothing = np.empty(0, dtype=np.int64)
    if not path.exists():
        return None, nothing, "missing"
    try:
        index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC if mapped else 0)
    except (RuntimeError, MemoryError) as exc:
        return None, nothing, f"unreadable: {first_line(exc)}"
    if not hasattr(index, "id_map") or index.d != dim:
        return None, nothing, "not an index of this store"
    ids = np.sort(faiss.vector_to_array(index.id_map))
    expected = np.asarray(expected_ids, dtype=np.int64)
    if not np.isin(ids, expected).all():
        return None, nothing, f"holds {len(ids)} ids, metadata.duckdb {len(expected_ids)}"
    kind, wanted = index_kind(index), expected_kind(index_type, len(expected_ids), lists)
    untrained = kind == "flat" and index_type == "ivf-pq"  # exact until its build trains it (or was stopped first)
    if kind != wanted and kind != expected_kind(index_type, len(ids), lists) and not untrained:
        return None, nothing, f"is a {kind} index, the store's index_type says {wanted}"
    return tune(index), np.setdiff1d(expected, ids), None


def write_atomically(path: Path, index: faiss.Index) -> None:
    """Replace one FAISS file atomically: write a new temp file (never through a link), fsync,
    rename, fsync the folder."""
    from genome_index.store.files import replace_atomically

    tmp = path.with_name(path.name + ".tmp")

    def write(handle: Any) -> None:
        faiss.write_index(index, faiss.PyCallbackIOWriter(handle.write, 1 << 20))

    try:
        replace_atomically(path, write)
    except (OSError, RuntimeError) as exc:
        if not tmp.is_symlink():
            tmp.unlink(missing_ok=True)
        raise GenomeIndexError(f"{path}: cannot write the FAISS index ({first_line(exc)})") from None
