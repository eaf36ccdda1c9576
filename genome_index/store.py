"""The on-disk store: DuckDB (source of truth: settings, metadata, vectors) plus FAISS files.

Layout of an index directory:

    metadata.duckdb   tables settings, state, genomes, records, chunks, chunk_vectors,
                      genome_vectors, labels (the public SQL surface, see README)
    chunks.faiss      inner-product index over L2-normalised chunk vectors, ids = chunks.id
    genomes.faiss     the same over genome vectors, ids = genomes.id
    build.lock        held (flock) by the one process allowed to write

A genome is committed to DuckDB in one transaction; the FAISS files are derived, written
atomically (temp file, fsync, rename) after commits, checked against DuckDB on open and
rebuilt from the stored vectors when they disagree.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import faiss
import numpy as np
import pyarrow as pa

from genome_index.errors import GenomeIndexError

log = logging.getLogger("genome_index")

DB_FILE = "metadata.duckdb"
LOCK_FILE = "build.lock"
FAISS_FILES = {"chunks": "chunks.faiss", "genomes": "genomes.faiss"}
FORMAT_VERSION = "1"
# Settings fixed by the first build; a later build must match every one of them.
FIXED_SETTINGS = (
    "model_revision",
    "layer",
    "pooling",
    "chunk_tokens",
    "chunking",
    "anchor_radius",
    "overlap",
    "dim",
    "metric",
    "index_type",
    "vector_dtype",
    "sketch_scaled",
)
INDEX_TYPES = ("flat", "hnsw", "ivf-pq")
VECTOR_DTYPES = ("float32", "float16")
HNSW_M, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH = 32, 80, 128
IVF_NPROBE = 32
SKETCH_KSIZE, SKETCH_SCALED = 21, 1000  # FracMinHash of canonical 21-mers, 1 hash kept per ~1,000
# What a store made before these settings existed was built with.
LEGACY_SETTINGS = {"chunking": "fixed", "anchor_radius": "0", "sketch_scaled": str(SKETCH_SCALED)}
RERANK = 4  # ivf-pq: candidates re-scored exactly per result wanted
PQ_MIN_TRAINING = 10_000  # fewer chunk vectors than this: ivf-pq falls back to exact search

SCHEMA = """
CREATE TABLE settings (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);
CREATE TABLE state (key VARCHAR PRIMARY KEY, value BIGINT NOT NULL);
CREATE TABLE genomes (
    id INTEGER PRIMARY KEY, name VARCHAR NOT NULL, file VARCHAR NOT NULL,
    sha256 VARCHAR NOT NULL UNIQUE, length BIGINT NOT NULL, gc DOUBLE NOT NULL,
    n_count BIGINT NOT NULL, n_records INTEGER NOT NULL, n_chunks INTEGER NOT NULL,
    added_at TIMESTAMP NOT NULL);
CREATE TABLE records (
    id INTEGER PRIMARY KEY, genome_id INTEGER NOT NULL, idx INTEGER NOT NULL,
    name VARCHAR NOT NULL, description VARCHAR NOT NULL, length BIGINT NOT NULL,
    gc DOUBLE NOT NULL, n_count BIGINT NOT NULL);
CREATE TABLE chunks (
    id BIGINT PRIMARY KEY, genome_id INTEGER NOT NULL, record_id INTEGER NOT NULL,
    start BIGINT NOT NULL, "end" BIGINT NOT NULL, n_tokens INTEGER NOT NULL,
    gc DOUBLE NOT NULL, n_count INTEGER NOT NULL);
CREATE TABLE chunk_vectors (chunk_id BIGINT PRIMARY KEY, vector {vector_type} NOT NULL);
CREATE TABLE genome_vectors (genome_id INTEGER PRIMARY KEY, vector FLOAT[{dim}] NOT NULL,
    chunk_sum FLOAT[{dim}] NOT NULL);
CREATE TABLE sketches (genome_id INTEGER PRIMARY KEY, ksize INTEGER NOT NULL, scaled INTEGER NOT NULL,
    hashes UBIGINT[] NOT NULL);
CREATE TABLE labels (genome_id INTEGER NOT NULL, key VARCHAR NOT NULL, value VARCHAR,
    PRIMARY KEY (genome_id, key));
INSERT INTO state VALUES ('next_genome_id', 1), ('next_record_id', 1), ('next_chunk_id', 1);
"""


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), float32 and contiguous for FAISS."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1, norms)


def genome_vector(chunk_vectors: np.ndarray) -> np.ndarray:
    """Mean of the normalised chunk vectors, normalised (the original research method)."""
    return normalise(normalise(chunk_vectors).mean(axis=0, keepdims=True))[0]


def vectors_column(vectors: np.ndarray, dtype: str = "float32") -> pa.Array:
    """(n, dim) vectors as an Arrow column: FLOAT[dim] for float32, one float16 BLOB per row."""
    if dtype == "float16":
        half = np.ascontiguousarray(vectors, dtype="<f2")
        return pa.array([row.tobytes() for row in half], pa.binary())
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), vectors.shape[1])


def to_matrix(column: pa.ChunkedArray, dim: int) -> np.ndarray:
    """A vector column fetched from DuckDB (FLOAT[dim] or float16 BLOB) as (n, dim) float32."""
    if len(column) == 0:
        return np.empty((0, dim), dtype=np.float32)
    array = column.combine_chunks()
    if pa.types.is_binary(array.type):
        return np.frombuffer(b"".join(array.to_pylist()), dtype="<f2").reshape(-1, dim).astype(np.float32)
    return array.values.to_numpy(zero_copy_only=False).reshape(-1, dim)


def make_faiss(index_type: str, dim: int, n_vectors: int) -> faiss.Index:
    """An empty FAISS index of one of INDEX_TYPES, inner product (cosine on normalised vectors),
    wrapped so that its ids are the DuckDB ids. ivf-pq must still be trained."""
    if index_type == "flat":
        inner = faiss.IndexFlatIP(dim)
    elif index_type == "hnsw":
        inner = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    elif index_type == "ivf-pq":
        nlist = max(1, min(int(np.sqrt(max(n_vectors, 1))), n_vectors // 39 or 1))
        m = next(m for m in (dim // 4, dim // 2, dim) if m and dim % m == 0)  # 4-d sub-vectors
        inner = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, nlist, m, 8, faiss.METRIC_INNER_PRODUCT)
    else:
        raise GenomeIndexError(f"unknown index type {index_type!r}: use {', '.join(INDEX_TYPES)}")
    return faiss.IndexIDMap2(inner)


def search(
    index: faiss.Index,
    queries: np.ndarray,
    k: int,
    fetch: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, ids) for normalised queries. For a product-quantised index, `fetch`
    (ids -> their exact vectors) re-scores RERANK x k candidates exactly: the compressed codes
    pick candidates, the stored vectors decide."""
    k = min(k, index.ntotal)
    inner = faiss.downcast_index(index.index) if hasattr(index, "index") else index
    if fetch is None or not isinstance(inner, faiss.IndexIVFPQ):
        return index.search(queries, k)
    _, candidates = index.search(queries, min(k * RERANK, index.ntotal))
    unique = np.unique(candidates[candidates >= 0])
    exact = normalise(fetch(unique))
    position = np.searchsorted(unique, np.where(candidates >= 0, candidates, unique[0]))
    scores = np.einsum("qd,qcd->qc", queries, exact[position])
    scores[candidates < 0] = -np.inf
    order = np.argsort(-scores, axis=1)[:, :k]
    return np.take_along_axis(scores, order, 1), np.take_along_axis(candidates, order, 1)


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


def tune(index: faiss.Index) -> faiss.Index:
    """Set the search-time accuracy knobs of an approximate index (not all are saved in files)."""
    inner = faiss.downcast_index(index.index) if hasattr(index, "index") else index
    if isinstance(inner, faiss.IndexHNSW):
        inner.hnsw.efSearch = HNSW_EF_SEARCH
    elif isinstance(inner, faiss.IndexIVF):
        inner.nprobe = min(IVF_NPROBE, inner.nlist)
    return index


@dataclass
class NewGenome:
    """Everything one genome adds to the store, ready to commit in one transaction."""

    name: str
    file: str
    sha256: str
    length: int
    gc: float
    n_count: int
    records: list[dict[str, Any]]
    chunks: dict[str, np.ndarray]  # record (index), start, end, n_tokens, gc, n_count
    vectors: np.ndarray
    labels: dict[str, str]
    sketch: np.ndarray  # FracMinHash hashes (uint64) of the genome's canonical k-mers
    sketch_scaled: int = SKETCH_SCALED


class BuildLock:
    """An exclusive flock on build.lock: released by the kernel when the holder dies."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / LOCK_FILE
        self.handle: Any = None

    def acquire(self) -> None:
        try:
            handle = open(self.path, "a+")
        except OSError as exc:
            raise GenomeIndexError(f"{self.path.parent}: cannot write here ({exc.strerror})") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise GenomeIndexError(
                f"{self.path.parent}: another genome-index process (pid {holder}) is writing to this "
                f"store (lock {self.path}); wait for it to finish"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self.handle = handle

    def release(self) -> None:
        if self.handle is not None:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None


class Store:
    """One index directory: DuckDB connection management, commits, FAISS files."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.db_path = self.directory / DB_FILE

    def exists(self) -> bool:
        return self.db_path.is_file()

    def require(self) -> None:
        """Fail with one clear line when the directory holds no store."""
        if not self.directory.exists():
            raise GenomeIndexError(f"no genome-index store at {self.directory} (create one with `genome-index build`)")
        if not self.exists():
            raise GenomeIndexError(f"{self.directory} is not a genome-index store (no {DB_FILE})")

    @contextlib.contextmanager
    def connect(self, read_only: bool = True) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection to metadata.duckdb that cannot touch other files; errors become one line."""
        config = {"enable_external_access": False, "lock_configuration": True}
        try:
            con = duckdb.connect(str(self.db_path), read_only=read_only, config=config)
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise GenomeIndexError(
                    f"{self.directory}: the store is being written by another process (a running build?); "
                    "try again when it has finished"
                ) from None
            raise GenomeIndexError(f"{self.db_path}: cannot open ({_first_line(exc)})") from None
        except duckdb.Error as exc:
            raise GenomeIndexError(f"{self.db_path}: not a readable DuckDB database ({_first_line(exc)})") from None
        try:
            if not _table_exists(con, "settings"):
                raise GenomeIndexError(f"{self.db_path}: a DuckDB file, but not a genome-index store")
            yield con
        except duckdb.IOException as exc:
            raise GenomeIndexError(
                f"{self.db_path}: cannot write ({_first_line(exc)}); disk full or read-only? "
                "The store keeps every genome committed before this one"
            ) from None
        except duckdb.Error as exc:
            raise GenomeIndexError(f"{self.db_path}: database error ({_first_line(exc)})") from None
        finally:
            con.close()

    def create(self, settings: dict[str, str]) -> None:
        """Make the directory and an empty store with its fixed settings."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise GenomeIndexError(f"{self.directory}: cannot create ({exc.strerror})") from None
        if self.db_path.exists():
            raise GenomeIndexError(f"{self.db_path} exists already")
        tmp = self.directory / (DB_FILE + ".creating")
        for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):  # from a build killed while creating
            leftover.unlink(missing_ok=True)
        con = duckdb.connect(str(tmp), config={"enable_external_access": False})
        try:
            con.execute("BEGIN")
            dim = int(settings["dim"])
            vector_type = "BLOB" if settings.get("vector_dtype") == "float16" else f"FLOAT[{dim}]"
            con.execute(SCHEMA.format(dim=dim, vector_type=vector_type))
            con.executemany("INSERT INTO settings VALUES (?, ?)", sorted(settings.items()))
            con.execute("COMMIT")
            con.execute("CHECKPOINT")
        finally:
            con.close()
        os.replace(tmp, self.db_path)  # a store appears complete or not at all

    @staticmethod
    def settings(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
        """The store's settings; stores made before anchored windows existed read as fixed windows."""
        return {**LEGACY_SETTINGS, **dict(con.execute("SELECT key, value FROM settings").fetchall())}

    @staticmethod
    def check_settings(stored: dict[str, str], wanted: dict[str, str]) -> None:
        """Refuse a build whose settings differ from the store's, naming the first difference."""
        for key in FIXED_SETTINGS:
            if key in wanted and stored.get(key) != wanted[key]:
                shown = "model" if key == "model_revision" else key
                have = stored.get("model") if key == "model_revision" else stored.get(key)
                want = wanted.get("model") if key == "model_revision" else wanted[key]
                raise GenomeIndexError(
                    f"this store was built with {shown} {have!r}, not {want!r}; "
                    "use another --index for different settings"
                )

    # -- writes ---------------------------------------------------------------------------

    @staticmethod
    def _next_ids(con: duckdb.DuckDBPyConnection, key: str, count: int) -> int:
        first = con.execute("SELECT value FROM state WHERE key = ?", [key]).fetchall()[0][0]
        con.execute("UPDATE state SET value = ? WHERE key = ?", [first + count, key])
        return int(first)

    def add_genome(
        self, con: duckdb.DuckDBPyConnection, genome: NewGenome, vector_dtype: str = "float32"
    ) -> tuple[int, np.ndarray]:
        """Commit one genome (rows, vectors, labels) in one transaction; return its id and chunk ids."""
        n_chunks = len(genome.vectors)
        con.execute("BEGIN")
        try:
            genome_id = self._next_ids(con, "next_genome_id", 1)
            first_record = self._next_ids(con, "next_record_id", len(genome.records))
            first_chunk = self._next_ids(con, "next_chunk_id", n_chunks)
            con.execute(
                "INSERT INTO genomes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    genome_id,
                    genome.name,
                    genome.file,
                    genome.sha256,
                    genome.length,
                    genome.gc,
                    genome.n_count,
                    len(genome.records),
                    n_chunks,
                    datetime.now(timezone.utc).replace(tzinfo=None),
                ],
            )
            records = pa.table(
                {
                    "id": pa.array(range(first_record, first_record + len(genome.records)), pa.int32()),
                    "genome_id": pa.array([genome_id] * len(genome.records), pa.int32()),
                    "idx": pa.array(range(len(genome.records)), pa.int32()),
                    "name": [r["name"] for r in genome.records],
                    "description": [r["description"] for r in genome.records],
                    "length": pa.array([r["length"] for r in genome.records], pa.int64()),
                    "gc": pa.array([r["gc"] for r in genome.records], pa.float64()),
                    "n_count": pa.array([r["n_count"] for r in genome.records], pa.int64()),
                }
            )
            chunk_ids = np.arange(first_chunk, first_chunk + n_chunks, dtype=np.int64)
            c = genome.chunks
            chunks = pa.table(
                {
                    "id": chunk_ids,
                    "genome_id": np.full(n_chunks, genome_id, dtype=np.int32),
                    "record_id": (c["record"] + first_record).astype(np.int32),
                    "start": c["start"].astype(np.int64),
                    "end": c["end"].astype(np.int64),
                    "n_tokens": c["n_tokens"].astype(np.int32),
                    "gc": c["gc"].astype(np.float64),
                    "n_count": c["n_count"].astype(np.int32),
                }
            )
            vectors = pa.table({"chunk_id": chunk_ids, "vector": vectors_column(genome.vectors, vector_dtype)})
            gvec = pa.table(
                {
                    "genome_id": pa.array([genome_id], pa.int32()),
                    "vector": vectors_column(genome_vector(genome.vectors)[None, :]),
                    "chunk_sum": vectors_column(normalise(genome.vectors).sum(axis=0, keepdims=True)),
                }
            )
            sketch = pa.table(
                {
                    "genome_id": pa.array([genome_id], pa.int32()),
                    "ksize": pa.array([SKETCH_KSIZE], pa.int32()),
                    "scaled": pa.array([genome.sketch_scaled], pa.int32()),
                    "hashes": pa.array([np.sort(genome.sketch).astype(np.uint64)], pa.list_(pa.uint64())),
                }
            )
            for name, table in (
                ("records", records),
                ("chunks", chunks),
                ("chunk_vectors", vectors),
                ("genome_vectors", gvec),
                ("sketches", sketch),
            ):
                con.register("incoming", table)
                con.execute(f"INSERT INTO {name} SELECT * FROM incoming")
                con.unregister("incoming")
            self.set_labels(con, genome_id, genome.labels)
            con.execute("COMMIT")
        except BaseException:
            _rollback(con)
            raise
        return genome_id, chunk_ids

    @staticmethod
    def set_labels(con: duckdb.DuckDBPyConnection, genome_id: int, labels: dict[str, str]) -> None:
        for key, value in labels.items():
            con.execute("INSERT OR REPLACE INTO labels VALUES (?, ?, ?)", [genome_id, key, value])

    @staticmethod
    def remove_genomes(con: duckdb.DuckDBPyConnection, genome_ids: list[int]) -> None:
        """Delete genomes with all their rows in one transaction."""
        con.execute("BEGIN")
        try:
            con.execute(
                "DELETE FROM chunk_vectors WHERE chunk_id IN "
                "(SELECT id FROM chunks WHERE genome_id IN (SELECT UNNEST(?)))",
                [genome_ids],
            )
            for table, column in (
                ("chunks", "genome_id"),
                ("records", "genome_id"),
                ("genome_vectors", "genome_id"),
                ("sketches", "genome_id"),
                ("labels", "genome_id"),
                ("genomes", "id"),
            ):
                con.execute(f"DELETE FROM {table} WHERE {column} IN (SELECT UNNEST(?))", [genome_ids])
            con.execute("COMMIT")
        except BaseException:
            _rollback(con)
            raise

    # -- FAISS ----------------------------------------------------------------------------

    def faiss_path(self, kind: str) -> Path:
        return self.directory / FAISS_FILES[kind]

    @staticmethod
    def stored_vectors(con: duckdb.DuckDBPyConnection, kind: str, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """All ids and vectors of one kind ('chunks' or 'genomes'), from DuckDB, ordered by id."""
        table, column = ("chunk_vectors", "chunk_id") if kind == "chunks" else ("genome_vectors", "genome_id")
        result = con.sql(f"SELECT {column} AS id, vector FROM {table} ORDER BY id").to_arrow_table()
        ids = result.column("id").to_numpy().astype(np.int64)
        return ids, to_matrix(result.column("vector"), dim)

    @staticmethod
    def index_type(settings: dict[str, str], kind: str) -> str:
        """The chunk index has the store's index type; the genome index is always exact."""
        return settings.get("index_type", "flat") if kind == "chunks" else "flat"

    @staticmethod
    def build_faiss(ids: np.ndarray, vectors: np.ndarray, dim: int, index_type: str = "flat") -> faiss.Index:
        """An index of `index_type` over the normalised vectors, ids as given, trained if needed."""
        if index_type == "ivf-pq" and len(ids) < PQ_MIN_TRAINING:
            index_type = "flat"  # too few vectors to train product quantisers; exact is fast here
        index = make_faiss(index_type, dim, len(ids))
        vectors = normalise(vectors) if len(ids) else np.empty((0, dim), dtype=np.float32)
        if not index.is_trained:
            rng = np.random.default_rng(0)
            sample = vectors[rng.choice(len(vectors), min(len(vectors), 256 * 256), replace=False)]
            index.train(sample)
        if len(ids):
            index.add_with_ids(vectors, np.ascontiguousarray(ids, dtype=np.int64))
        return tune(index)

    @staticmethod
    def fetch_chunk_vectors(con: duckdb.DuckDBPyConnection, ids: np.ndarray, dim: int) -> np.ndarray:
        """Stored vectors of the given chunk ids (sorted ascending), in that order."""
        result = con.sql(
            "SELECT vector FROM chunk_vectors WHERE chunk_id IN (SELECT UNNEST($1)) ORDER BY chunk_id",
            params=[ids.tolist()],
        ).to_arrow_table()
        return to_matrix(result.column("vector"), dim)

    def rebuild_faiss(self, con: duckdb.DuckDBPyConnection, kind: str, settings: dict[str, str]) -> faiss.Index:
        """The index of one kind built afresh from the vectors stored in DuckDB."""
        dim = int(settings["dim"])
        ids, vectors = self.stored_vectors(con, kind, dim)
        return self.build_faiss(ids, vectors, dim, self.index_type(settings, kind))

    def write_faiss(self, kind: str, index: faiss.Index) -> None:
        """Replace one FAISS file atomically: write a temp file, fsync, rename, fsync the folder."""
        path = self.faiss_path(kind)
        tmp = path.with_name(path.name + ".tmp")
        try:
            faiss.write_index(index, str(tmp))
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, path)
            folder = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
        except (OSError, RuntimeError) as exc:
            tmp.unlink(missing_ok=True)
            raise GenomeIndexError(f"{path}: cannot write the FAISS index ({_first_line(exc)})") from None

    def load_faiss(
        self, con: duckdb.DuckDBPyConnection, kind: str, settings: dict[str, str]
    ) -> tuple[faiss.Index, bool]:
        """The FAISS index of one kind, checked against DuckDB's ids; rebuilt from it when they
        disagree. Returns the index and whether it was rebuilt (and so should be written)."""
        path = self.faiss_path(kind)
        dim = int(settings["dim"])
        table, column = ("chunks", "id") if kind == "chunks" else ("genomes", "id")
        expected = con.execute(f"SELECT {column} FROM {table} ORDER BY {column}").fetchnumpy()[column]
        expected = np.asarray(expected, dtype=np.int64)
        problem = None
        if not path.exists():
            problem = "missing"
        else:
            try:
                index = faiss.read_index(str(path))
                ids = np.sort(faiss.vector_to_array(index.id_map)) if hasattr(index, "id_map") else None
                if ids is None or index.d != dim:
                    problem = "not an index of this store"
                elif not np.array_equal(ids, expected):
                    problem = f"holds {len(ids)} ids, metadata.duckdb {len(expected)}"
            except (RuntimeError, MemoryError) as exc:
                problem = f"unreadable: {_first_line(exc)}"
        if problem is None:
            return tune(index), False
        if len(expected) or path.exists():
            log.warning("notice: %s %s; rebuilt from the vectors in %s", path.name, problem, DB_FILE)
        return self.rebuild_faiss(con, kind, settings), True


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    """Roll back if a transaction is still open (a failed COMMIT has already ended it)."""
    with contextlib.suppress(duckdb.Error):
        con.execute("ROLLBACK")


def _table_exists(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(
        con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]).fetchall()[0][0]
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
