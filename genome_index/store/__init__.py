"""The on-disk store: DuckDB (source of truth: settings, metadata, vectors) plus FAISS files.

Layout of an index directory:

    metadata.duckdb   tables settings, state, genomes, records, chunks, vector_files,
                      genome_vectors, sketches, labels, sequences (the public SQL surface,
                      see docs/store.md) and the macro subsequence()
    vectors/          the chunk vectors, one Parquet file a commit group, seen in SQL as the
                      view chunk_vectors (`vector_files`; stores made before: a table)
    chunks.faiss      inner-product index over L2-normalised chunk vectors, ids = chunks.id
    chunks.ivf/       instead, once an `ivf-pq` store is trained: write-once segments (`segments`)
    genomes.faiss     the same over genome vectors, ids = genomes.id
    build.lock        held (flock) by the one process allowed to write

A genome is committed to DuckDB in one transaction (`writes`); the FAISS files (`indexes`)
are derived, written atomically after commits, checked against DuckDB on open and rebuilt
from the stored vectors when they disagree. `Store` ties the files of one directory together.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np

from genome_index.errors import GenomeIndexError, StoreBusy, first_line
from genome_index.progress import SILENT, Progress
from genome_index.settings import INDEX_TYPES, StoreSettings
from genome_index.store.files import refuse_links, touch
from genome_index.store.lock import LOCK_FILE, is_held, write_lock
from genome_index.store.reads import StoreReader
from genome_index.store.schema import DB_FILE, FAISS_FILES, create_database, is_store, upgrade
from genome_index.store.segments import MANIFEST, SEGMENTS_DIR, Segments, stack_of
from genome_index.store.sql import SqlResult, run_sql
from genome_index.store.vector_view import FOLDER as VECTORS_DIR
from genome_index.store.writes import StoreWriter

if TYPE_CHECKING:  # FAISS is imported by what uses it: `info` and `sql` start without it
    import faiss

log = logging.getLogger("genome_index")
WANTED_FILE = DB_FILE + ".wanted"  # touched by a writer waiting for the file
# What this tool leaves in a folder that holds no store yet (a first build killed or failed):
# a folder of nothing else is still ours to build in.
LEFTOVERS = {
    LOCK_FILE, DB_FILE, DB_FILE + ".wal", DB_FILE + ".tmp", DB_FILE + ".creating", DB_FILE + ".creating.wal",
    WANTED_FILE, SEGMENTS_DIR, VECTORS_DIR,
    *(name + suffix for name in FAISS_FILES.values() for suffix in ("", ".tmp")),
}  # fmt: skip
UNWRITABLE = re.compile(r'Could not write file "([^"]+)": ([^"\n]+)')  # DuckDB's words for a failed write
WRITER_MEMORY = "1GB"  # DuckDB's own cache while writing; it spills or writes out past this
WRITER_FIRST = 1.0  # seconds a reader defers to a waiting writer, at most
READER_WAIT, WRITER_WAIT = 30.0, 600.0  # seconds to wait for a file another process holds (a commit, a query)
TABLES = (
    "settings", "state", "genomes", "records", "chunks", "chunk_vectors", "genome_vectors", "sketches", "labels",
    "sequences", "vector_sums",
)  # fmt: skip

BESIDE_TABLES = tuple("vector_files" if table == "chunk_vectors" else table for table in TABLES)  # files: SHA-256
__all__ = ["DB_FILE", "FAISS_FILES", "LOCK_FILE", "SEGMENTS_DIR", "Store"]


class Store:
    """One index directory: its connections, its write lock, its FAISS files."""

    def __init__(self, directory: str | Path, reader_wait: float | None = None) -> None:
        self.directory = Path(directory)
        self.db_path = self.directory / DB_FILE
        # seconds a reader waits for the file; a server answers sooner (then 503) than a command
        self.reader_wait = READER_WAIT if reader_wait is None else reader_wait

    def exists(self) -> bool:
        return self.db_path.is_file()

    def require(self) -> None:
        """Fail with one clear line when the directory holds no store."""
        if not self.directory.exists():
            raise GenomeIndexError(f"no genome-index store at {self.directory} (create one with `genome-index build`)")
        if not self.exists():
            raise GenomeIndexError(f"{self.directory} is not a genome-index store (no {DB_FILE})")

    @contextlib.contextmanager
    def _connection(
        self,
        read_only: bool = True,
        memory_limit: str | None = None,
        wait: float | None = None,
        checkpoint: bool = True,
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection to metadata.duckdb that cannot touch other files; errors become one line.
        With `memory_limit` (for users' SQL), it also has no temporary folder to spill into or
        to reach, and cannot use more memory than that. While another process holds the file
        (a build commits, a long query reads), it waits up to `wait` seconds (readers 30 s by
        default, writers 10 minutes). Without `checkpoint`, closing it leaves the commits in the
        write-ahead log (a build's short commit sessions; DuckDB checkpoints past 16 MB of log)."""
        if not read_only:
            self.refuse_links()
        config: dict[str, Any] = {"enable_external_access": False, "lock_configuration": read_only}
        if memory_limit is not None:
            config.update(temp_directory="", memory_limit=memory_limit)
        elif not read_only:
            config.update(memory_limit=WRITER_MEMORY)
        con = self._open(
            read_only, config, wait if wait is not None else self.reader_wait if read_only else WRITER_WAIT
        )
        if not checkpoint:
            con.execute("PRAGMA disable_checkpoint_on_shutdown")
        if not read_only:  # vectors and packed bases do not compress; trying costs a build 3x its commit time
            con.execute("SET force_compression = 'uncompressed'")
        try:
            if not is_store(con):
                raise GenomeIndexError(f"{self.db_path}: a DuckDB file, but not a genome-index store")
            if not read_only:
                upgrade(con)
            yield con
        except duckdb.Error as exc:
            unwritable = UNWRITABLE.search(str(exc))  # named by DuckDB: maybe another store's (a merge's target)
            if unwritable is not None:
                raise GenomeIndexError(
                    f"{unwritable.group(1)}: cannot write ({unwritable.group(2)}); disk full or read-only? "
                    "The store keeps every genome committed before this one"
                ) from None
            if isinstance(exc, duckdb.IOException) and (read_only or _is_read_error(exc)):
                raise GenomeIndexError(f"{self.db_path}: cannot read ({first_line(exc)}); is it damaged?") from None
            if isinstance(exc, duckdb.IOException):
                raise GenomeIndexError(
                    f"{self.db_path}: cannot write ({first_line(exc)}); disk full or read-only? "
                    "The store keeps every genome committed before this one"
                ) from None
            raise GenomeIndexError(f"{self.db_path}: database error ({first_line(exc)})") from None
        finally:
            con.close()

    def _open(self, read_only: bool, config: dict[str, Any], wait: float) -> duckdb.DuckDBPyConnection:
        """duckdb.connect, retried for `wait` seconds while another process holds the file. A
        writer kept waiting says so in WANTED_FILE, and readers let it in first: without that,
        readers querying in a loop can hold the file so often that a build never commits."""
        wanted = self.directory / WANTED_FILE
        if read_only:
            _defer_to_writer(wanted)
        try:
            return self._connect(read_only, config, wait, wanted)
        finally:
            if not read_only:
                with contextlib.suppress(OSError):
                    wanted.unlink(missing_ok=True)

    def _connect(self, read_only: bool, config: dict[str, Any], wait: float, wanted: Path) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + wait
        while True:
            try:
                return duckdb.connect(str(self.db_path), read_only=read_only, config=config)
            except duckdb.InvalidInputException as exc:
                if config.get("memory_limit") and "memory" in str(exc).lower():
                    raise GenomeIndexError(f"--memory-limit {config['memory_limit']!r}: {first_line(exc)}") from None
                raise GenomeIndexError(f"{self.db_path}: not a readable DuckDB database ({first_line(exc)})") from None
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower():
                    raise GenomeIndexError(f"{self.db_path}: cannot open ({first_line(exc)}); is it damaged?") from None
                if time.monotonic() >= deadline:
                    raise StoreBusy(
                        f"{self.directory}: another process has held the store for {wait:g} s (a long query or "
                        "commit?); try again later"
                    ) from None
                if not read_only:
                    with contextlib.suppress(OSError, GenomeIndexError):  # a full disk, a read-only folder,
                        touch(wanted)  # or a link where the file belongs: wait unannounced
                time.sleep(0.05)
            except duckdb.Error as exc:
                raise GenomeIndexError(f"{self.db_path}: not a readable DuckDB database ({first_line(exc)})") from None

    @contextlib.contextmanager
    def reading(self, wait: float | None = None) -> Iterator[StoreReader]:
        """A read session (its own read-only connection, closed after the block): what a
        query, a page or a check reads, consistent within the block. Waits up to `wait` seconds
        (the store's reader wait by default) while a build commits."""
        self.require()
        with self._connection(wait=wait) as con:
            yield StoreReader(con, self.directory)

    @contextlib.contextmanager
    def session(self, checkpoint: bool = True) -> Iterator[StoreWriter]:
        """A write session without the lock (a build's writer, which holds the lock itself, opens
        one per group of commits); without `checkpoint`, closing it leaves the commits in the
        write-ahead log."""
        with self._connection(read_only=False, checkpoint=checkpoint) as con:
            yield StoreWriter(con, self.directory)

    @contextlib.contextmanager
    def writing(self) -> Iterator[StoreWriter]:
        """The write lock and a write session, for one command that changes the store (vector
        files no commit lists, left by a killed writer, removed first)."""
        self.require()
        with self.lock(), self.session() as writer:
            writer.clean_vector_files()
            yield writer

    def lock(self) -> contextlib.AbstractContextManager[None]:
        """The write lock alone (a build holds it before the store exists)."""
        self.refuse_links()
        return write_lock(self.directory)

    def refuse_links(self) -> None:
        """One line, before anything is written, when one of the store's own files is a symbolic
        link: writes never follow links out of the store (`files`)."""
        refuse_links(self.directory, LEFTOVERS)

    def sql(
        self, statement: str, timeout: float, memory_limit: str, max_rows: int | None = None
    ) -> contextlib.AbstractContextManager[SqlResult]:
        """A user's read-only statement, run in a worker process with its own memory and time
        limits (`store.sql`); a build waiting for the file goes first."""
        self.require()
        _defer_to_writer(self.directory / WANTED_FILE)
        return run_sql(self.db_path, statement, timeout, memory_limit, max_rows, self.reader_wait)

    def settings(self) -> StoreSettings:
        with self.reading() as reader:
            return reader.settings()

    # -- creating -------------------------------------------------------------------------

    def prepare_directory(self) -> bool:
        """Make the store's folder, refusing an unrelated non-empty one; True if it was made."""
        folder = self.directory
        if folder.exists() and not folder.is_dir():
            raise GenomeIndexError(f"{folder}: exists and is not a folder")
        if folder.is_dir() and not self.exists():
            others = [p.name for p in folder.iterdir() if p.name not in LEFTOVERS]
            if others:
                raise GenomeIndexError(
                    f"{folder} is not a genome-index store and not empty (has {others[0]!r}); choose another --index"
                )
        made = not folder.exists()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise GenomeIndexError(f"{folder}: cannot create ({exc.strerror})") from None
        return made

    def create(self, settings: StoreSettings) -> None:
        """An empty store with its fixed settings (the folder must exist)."""
        if self.db_path.exists():
            raise GenomeIndexError(f"{self.db_path} exists already")
        self.refuse_links()
        try:
            create_database(self.db_path, settings)
        except (duckdb.Error, OSError) as exc:
            raise GenomeIndexError(
                f"{self.db_path}: cannot create ({first_line(exc)}); disk full or read-only?"
            ) from None

    def discard_if_empty(self, made_directory: bool) -> None:
        """After a failed first build that committed no genome, leave no trace of the store."""
        if self.exists():
            try:
                with self.reading() as reader:
                    if reader.genome_count():
                        return  # genomes were committed: keep them, complete, for the next build
            except GenomeIndexError:
                return
        for name in LEFTOVERS - ({LOCK_FILE} if not made_directory else set()):
            path = self.directory / name
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        if made_directory:
            with contextlib.suppress(OSError):
                self.directory.rmdir()

    # -- FAISS files ----------------------------------------------------------------------

    def faiss_path(self, kind: str) -> Path:
        return self.directory / FAISS_FILES[kind]

    def segments(self) -> Segments:
        return Segments(self.directory)

    def rebuild_faiss(
        self, reader: StoreReader, kind: str, settings: StoreSettings, progress: Progress = SILENT
    ) -> faiss.Index:
        """The index of one kind built afresh in memory from the vectors stored in DuckDB (an
        `ivf-pq` store's exact `chunks.faiss` until it is trained)."""
        from genome_index.store.indexes import build_faiss, expected_kind

        ids, vectors = reader.vectors(kind, settings.dim)
        index_type = expected_kind(settings.index_type, len(ids), settings.ivf_lists) if kind == "chunks" else "flat"
        with progress.step(f"indexing {FAISS_FILES[kind]}", len(ids), "vectors") as step:
            return build_faiss(ids, vectors, settings.dim, index_type, step)

    def write_faiss(self, kind: str, index: faiss.Index) -> None:
        from genome_index.store.indexes import write_atomically

        self.refuse_links()
        write_atomically(self.faiss_path(kind), index)

    def segmented(self, reader: StoreReader, settings: StoreSettings) -> bool:
        """Whether the chunk index is (or, rewritten now, would be) segments: an `ivf-pq` store
        that was trained, or holds enough vectors to be."""
        from genome_index.store.indexes import train_threshold

        if settings.index_type != "ivf-pq":
            return False
        held = len(reader.ids("chunks"))
        return self.segments().generation() is not None or held >= train_threshold(settings.ivf_lists)

    def write_segments(
        self, reader: StoreReader, settings: StoreSettings, retrain: bool = False, progress: Progress = SILENT
    ) -> int:
        """The chunk index of a trained `ivf-pq` store rewritten from DuckDB as a new generation of
        segments, streamed (one block of vectors and one segment's codes in memory), trained
        afresh with `retrain` or where no generation is current; then published, and the exact
        `chunks.faiss` of before training removed. The vectors written."""
        from genome_index.store.indexes import train_ivf_pq, training_size
        from genome_index.store.segments import ADD_BLOCK, SEGMENT_VECTORS, SegmentWriter
        from genome_index.store.vectors import normalise

        self.refuse_links()
        segments = self.segments()
        current = segments.generation()
        if retrain or current is None:
            with progress.step("training the IVF-PQ quantizers", 1, "indexes") as step:
                sample = reader.sample_vectors("chunks", training_size(settings.ivf_lists), settings.dim)
                trained = train_ivf_pq(sample, settings.ivf_lists)
                step.advance(1)
        else:
            trained = segments.trained(current)
        writer = SegmentWriter(segments, segments.begin(trained), trained)
        total = len(reader.ids("chunks"))
        with progress.step(f"indexing {SEGMENTS_DIR}", total, "vectors") as step:
            for ids, vectors in reader.vector_blocks("chunks", settings.dim, ADD_BLOCK):
                writer.add_with_ids(normalise(vectors), ids)
                if writer.pending.ntotal >= SEGMENT_VECTORS:
                    writer.flush()
                step.advance(len(ids))
            writer.flush()
        segments.publish(writer.generation)
        self.faiss_path("chunks").unlink(missing_ok=True)
        return writer.ntotal

    def rewrite_faiss(
        self, reader: StoreReader, settings: StoreSettings, progress: Progress = SILENT, retrain: bool = False
    ) -> dict[str, int]:
        """Every FAISS file rebuilt from DuckDB and written (a trained `ivf-pq` store's chunk
        index as a new generation of segments, retrained with `retrain`); the vectors in each."""
        sizes = {}
        for kind in FAISS_FILES:
            if kind == "chunks" and self.segmented(reader, settings):
                sizes[kind] = self.write_segments(reader, settings, retrain, progress)
                continue
            index = self.rebuild_faiss(reader, kind, settings, progress)
            self.write_faiss(kind, index)
            if kind == "chunks":
                self.segments().discard()
            sizes[kind] = index.ntotal
        return sizes

    def verify_faiss(
        self, reader: StoreReader, kind: str, settings: StoreSettings, exact: bool = False, mapped: bool = False
    ) -> tuple[faiss.Index | None, np.ndarray, str | None]:
        """The FAISS index of one kind (a trained `ivf-pq` store's segments, searched as one),
        the DuckDB ids it lacks, and what is wrong with it (None: nothing; it holds no id DuckDB
        does not, in the store's index type; `exact`: segments' ids read and compared; `mapped`:
        a file's vectors mapped, not read, `indexes.read_verified`)."""
        from genome_index.store.indexes import read_verified

        if kind == "chunks" and settings.index_type == "ivf-pq":
            generation = self.segments().generation()
            if generation is not None:
                return self._verify_segments(reader, generation, exact)
        index_type = settings.index_type if kind == "chunks" else "flat"
        return read_verified(
            self.faiss_path(kind), reader.ids(kind), settings.dim, index_type, settings.ivf_lists, mapped
        )

    def _verify_segments(
        self, reader: StoreReader, generation: int, exact: bool = False
    ) -> tuple[faiss.Index | None, np.ndarray, str | None]:
        """Segments opened (lists mapped, not read), the DuckDB ids they lack, and what is wrong:
        each segment must hold as many ids as DuckDB has in its range, no two ranges overlapping,
        as its MANIFEST line says; with `exact` (for `check`), their ids are read and compared."""
        nothing = np.empty(0, dtype=np.int64)
        segments = self.segments()
        try:
            index, listed = segments.open(generation)
            held = segments.ids(generation) if exact else None
        except GenomeIndexError as exc:
            return None, nothing, str(exc).replace(str(self.directory) + "/", "")
        expected = reader.ids("chunks")
        covered = np.zeros(len(expected), dtype=bool)
        for item in listed:
            start, stop = np.searchsorted(expected, [item.first, item.last + 1])
            if stop - start != item.count or covered[start:stop].any():
                name = item.path.relative_to(self.directory)
                return None, nothing, f"{name} holds {item.count} ids from {item.first} to {item.last}, {DB_FILE} " \
                    f"{stop - start} (genomes removed, or segments of another store?)"  # fmt: skip
            covered[start:stop] = True
        if held is not None and not np.array_equal(np.sort(held), expected[covered]):
            return None, nothing, f"holds other ids than its {MANIFEST} says"
        return index, expected[~covered], None

    def load_faiss(
        self, reader: StoreReader, kind: str, settings: StoreSettings, mapped: bool = False
    ) -> tuple[faiss.Index, bool]:
        """The FAISS index of one kind, holding exactly DuckDB's ids: a file that lags (a build
        is writing; its next FAISS write catches up) gets the newer vectors added here; a file
        that disagrees is rebuilt from DuckDB. Returns the index and whether it was rebuilt
        (and so should be written). Segments that disagree are rewritten here, under the
        store's lock (a query can wait for that: they are derived, and `reindex` does the same).
        `mapped` (a searcher's): a file that holds every id is mapped, not read."""
        from genome_index.store.vectors import normalise

        index, missing, problem = self.verify_faiss(reader, kind, settings, mapped=mapped)
        if mapped and index is not None and len(missing):  # vectors are added below: read it whole
            index, missing, problem = self.verify_faiss(reader, kind, settings)
        if index is not None:
            if not len(missing):
                return index, False
            vectors = normalise(reader.vectors_of(kind, missing, settings.dim))
            segmented = stack_of(index) is not None
            if segmented:  # segments: what they lack, as one more segment in memory
                index = self._with_tail(index, vectors, missing)
            else:
                index.add_with_ids(vectors, missing)
            if is_held(self.directory):
                return index, False  # a build is writing: its next FAISS write holds these too
            log.warning("%s lacks %d of the ids in %s; rebuilt from the stored vectors",
                        SEGMENTS_DIR if segmented else FAISS_FILES[kind], len(missing), DB_FILE)  # fmt: skip
            return index, True
        if reader.genome_count() or self.faiss_path(kind).exists():
            log.warning("%s %s; rebuilt from the stored vectors", FAISS_FILES[kind], problem)
        if kind == "chunks" and self.segmented(reader, settings):
            with self.lock():
                self.write_segments(reader, settings)
            index, _, problem = self._verify_segments(reader, self.segments().generation())
            if index is None:
                raise GenomeIndexError(f"{self.directory / SEGMENTS_DIR}: {problem} after rewriting it")
            return index, False
        return self.rebuild_faiss(reader, kind, settings), True

    def chunk_writer(self, reader: StoreReader, kind: str, settings: StoreSettings) -> tuple[Any, bool]:
        """What a build adds chunk vectors to (`kind` is "chunks"), and whether it must be
        written: the loaded index, or for a trained `ivf-pq` store a `SegmentWriter` of the
        current generation holding what its segments lack. Generations left by a killed rewrite
        are removed; a store trained before segments existed (one `chunks.faiss`), or whose
        segments disagree with DuckDB, is rewritten as segments first."""
        from genome_index.store.segments import SegmentWriter
        from genome_index.store.vectors import normalise

        segments = self.segments()
        if not self.segmented(reader, settings):
            return self.load_faiss(reader, kind, settings)
        segments.clean()
        generation = segments.generation()
        index, missing, problem = (
            (None, None, "missing") if generation is None else self._verify_segments(reader, generation)
        )
        if index is None:
            if generation is not None or reader.genome_count():
                log.warning("%s %s; rewritten from the stored vectors", SEGMENTS_DIR, problem)
            self.write_segments(reader, settings)
            generation, missing = segments.generation(), np.empty(0, dtype=np.int64)
        self.faiss_path(kind).unlink(missing_ok=True)  # the exact index of before training, if a kill left it
        writer = SegmentWriter(segments, generation)
        if len(missing):
            writer.add_with_ids(normalise(reader.vectors_of(kind, missing, settings.dim)), missing)
        return writer, bool(len(missing))

    def train_segments(self, exact: faiss.Index, lists: int) -> Any:
        """A build's exact chunk index of an `ivf-pq` store that reached the threshold, trained
        on a sample of its vectors, written as the first segment of a new generation and
        published (`chunks.faiss` removed after): the `SegmentWriter` the build goes on with."""
        import faiss

        from genome_index.store.indexes import flat_vectors, train_ivf_pq, training_size
        from genome_index.store.segments import SegmentWriter

        self.refuse_links()
        vectors = flat_vectors(faiss.downcast_index(exact.index))
        ids = faiss.vector_to_array(exact.id_map)
        draw = np.random.default_rng(7).choice(len(ids), min(len(ids), training_size(lists)), replace=False)
        trained = train_ivf_pq(vectors[np.sort(draw)], lists)
        segments = self.segments()
        writer = SegmentWriter(segments, segments.begin(trained), trained)
        writer.add_with_ids(vectors, ids)
        writer.flush()
        segments.publish(writer.generation)
        self.faiss_path("chunks").unlink(missing_ok=True)
        return writer

    def _with_tail(self, index: faiss.Index, vectors: np.ndarray, ids: np.ndarray) -> faiss.Index:
        """Segments searched with the vectors they lack (committed after their last segment),
        as one more part, in memory: the last (`_save_tail` writes it)."""
        from genome_index.store.segments import empty_like, stacked

        stack = stack_of(index)
        tail = empty_like(stack.trained)
        tail.add_with_ids(vectors, ids)
        return stacked(stack.trained, [*stack.parts, tail], stack.generation, stack.listed)

    def _save_tail(self, index: faiss.Index) -> None:
        """Write the vectors segments lacked as their next segment, if they are still current."""
        segments, stack = self.segments(), stack_of(index)
        if stack is not None and stack.parts and segments.generation() == stack.generation:
            segments.write(stack.generation, stack.parts[-1])

    def save_repair(self, kind: str, index: faiss.Index) -> None:
        """Persist a FAISS file repaired during a read (segments: what they lacked, as one more
        segment), unless a writer holds the store."""
        try:
            with self.lock():
                if stack_of(index) is not None:
                    self._save_tail(index)
                else:
                    self.write_faiss(kind, index)
        except GenomeIndexError as exc:
            if "another genome-index process" not in str(exc):
                log.warning("%s", exc)

    def rewrite_faiss_after(
        self, reader: StoreReader, settings: StoreSettings, committed: str, progress: Progress = SILENT
    ) -> dict[str, int]:
        """`rewrite_faiss` after a change was committed: if writing fails, the error says what
        was committed anyway (`committed`: "genome(s) X were removed from") and what repairs it."""
        try:
            return self.rewrite_faiss(reader, settings, progress)
        except GenomeIndexError as exc:
            raise GenomeIndexError(
                f"{committed} {self.db_path}, but {exc}; `genome-index reindex` (or the next build) rebuilds "
                "the FAISS files from it"
            ) from None

    # -- commands on a store ------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """Settings, counts, stored bases and disk use."""
        with self.reading() as reader:
            settings = reader.settings()
            counts, bases = reader.summary()
        files = [self.db_path] + [self.faiss_path(kind) for kind in FAISS_FILES]
        disk = {path.name: path.stat().st_size for path in files if path.exists()}
        if segments := self.segments().disk_bytes():
            disk[SEGMENTS_DIR] = segments
        vectors = self.directory / VECTORS_DIR
        if vectors.is_dir():
            disk[VECTORS_DIR] = sum(p.stat().st_size for p in vectors.iterdir() if p.is_file() and not p.is_symlink())
        return {
            "directory": str(self.directory), "settings": settings.rows(), "counts": counts, "bases": bases,
            "disk_bytes": disk,
        }  # fmt: skip

    def genome_id(self, reader: StoreReader, ident: str) -> int:
        """The genome `ident` means (`StoreReader.find_genome`); one clear error where there is none."""
        found = reader.find_genome(ident)
        if found is None:
            raise GenomeIndexError(f"no genome {ident!r} in {self.directory} (give a name, an id, name:X or id:N)")
        return found

    def remove(self, genomes: list[str]) -> list[tuple[int, str]]:
        """Remove genomes with their rows, vectors and FAISS entries; each named by its name or
        id, or explicitly `name:X` / `id:N`. The (id, name) pairs removed."""
        with self.writing() as writer:
            names = writer.genome_names()
            chosen = {gid: names[gid] for gid in (self.genome_id(writer, ident) for ident in genomes)}
            writer.remove_genomes(list(chosen))
            removed = ", ".join(f"{gid} {name}" for gid, name in sorted(chosen.items()))
            self.rewrite_faiss_after(writer, writer.settings(), f"genome(s) {removed} were removed from")
        return sorted(chosen.items())

    def reindex(self, index_type: str | None = None, progress: Progress = SILENT) -> dict[str, int]:
        """Rebuild every FAISS file from the stored vectors, optionally as another index type
        (a trained `ivf-pq` store's quantizers trained afresh, its segments compacted into few),
        and the vector sums from the vectors; the vectors in each file."""
        if index_type is not None and index_type not in INDEX_TYPES:
            raise GenomeIndexError(f"unknown index type {index_type!r}: use {', '.join(INDEX_TYPES)}")
        with self.writing() as writer:
            settings = writer.settings()
            if index_type is not None:  # the file first: killed in between, file and setting disagree: it is rebuilt
                settings = dataclasses.replace(settings, index_type=index_type)
            sizes = self.rewrite_faiss(writer, settings, progress, retrain=True)
            if index_type is not None:
                writer.set_setting("index_type", index_type)
            writer.recount_vector_sums()
            return sizes

    def migrate(self) -> dict[str, int]:
        """Move the chunk vectors of a store made before vector files out of metadata.duckdb into
        files beside it (`vector_files`, one transaction), then write the database again without
        the space they took (a copy of every other table, renamed over it: DuckDB reuses freed
        blocks but seldom gives them back). Chunk vectors and files moved, and the database's
        bytes before and after (0 moved: nothing to do)."""
        self.require()
        before = self.db_path.stat().st_size
        with self.lock():
            with self.session() as writer:
                writer.clean_vector_files()
                moved, files = writer.move_vectors_out(self.directory)
                settings = writer.settings()
            if moved or (self.directory / f"{DB_FILE}.creating").exists():  # or a compaction was killed
                with self.reading() as reader:  # read-only: the old file gets no log to leave behind
                    create_database(self.db_path, settings, functools.partial(reader.copy_rows, tables=BESIDE_TABLES))
        return {"vectors": moved, "files": files, "bytes_before": before, "bytes_after": self.db_path.stat().st_size}

    def extract(self, regions: list[str], reverse: bool = False, width: int | None = None) -> bytes:
        """FASTA of stored sequence: each of `regions` is GENOME[:RECORD[:START-END]] (1-based,
        inclusive; see `extract`), reverse-complemented with `reverse`, in lines of `width` bases
        (0: one line; None: as the input file had them)."""
        from genome_index.store.extract import parse_region, region_fasta

        with self.reading() as reader:
            names = reader.genome_names()

            def record_names(gid: int) -> list[str]:
                return [name for name, _, _ in reader.records_of(gid)]

            chosen = [parse_region(spec, reader.find_genome, record_names) for spec in regions]
            return b"".join(region_fasta(reader, region, names[region.genome_id], reverse, width) for region in chosen)

    # -- checking -------------------------------------------------------------------------

    def check(self, quick: bool = False) -> list[str]:
        """Every inconsistency found (empty: consistent). Repairs nothing. Every table is read in
        full first, so DuckDB verifies the checksum of every block of the file; `quick` runs
        only the consistency queries (seconds on a large store, and fine during a build)."""
        with self.reading() as reader:
            if quick:
                return reader.vector_file_problems(exact=False) + reader.inconsistencies(reader.settings())
            damaged = reader.unreadable_table(TABLES if reader.vector_files is None else BESIDE_TABLES)
            if damaged is not None:
                return [f"{DB_FILE} is damaged: {damaged}"]
            settings = reader.settings()
            problems = reader.vector_file_problems(exact=True) + reader.inconsistencies(settings)
            mismatched = reader.sequence_mismatches()
            if mismatched:
                problems.append(f"{len(mismatched)} genomes whose stored sequence differs from their sha256 "
                                f"({', '.join(mismatched[:3])})")  # fmt: skip
            generation = self.segments().generation() if settings.index_type == "ivf-pq" else None
            if generation is not None:
                with contextlib.suppress(GenomeIndexError):  # an unreadable list of segments: named below
                    problems += self.segments().damaged(generation)
            building = is_held(self.directory)  # a build commits first and writes FAISS after
            for kind in FAISS_FILES:
                if not len(reader.ids(kind)) and (building or not self.faiss_path(kind).exists()):
                    continue  # no genome committed yet: no index is owed yet
                _, missing, problem = self.verify_faiss(reader, kind, settings, exact=True)
                if problem is None and len(missing) and not building:
                    problem = f"lacks {len(missing)} of the ids in {DB_FILE}"
                if problem is not None:
                    name = SEGMENTS_DIR if kind == "chunks" and generation is not None else FAISS_FILES[kind]
                    problems.append(problem if problem.startswith(name) else f"{name} {problem}")
        return problems


def _defer_to_writer(wanted: Path) -> None:
    """Wait, at most WRITER_FIRST seconds, while a writer says it is waiting for the file (a file
    older than that is a writer that gave up or died)."""
    deadline = time.monotonic() + WRITER_FIRST
    while time.monotonic() < deadline:
        try:
            if time.time() - wanted.stat().st_mtime > WRITER_FIRST:
                return
        except OSError:
            return
        time.sleep(0.02)


def _is_read_error(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(word in text for word in ("checksum", "corrupt", "could not read", "read ", "truncated"))
