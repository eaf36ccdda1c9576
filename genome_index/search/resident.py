"""What a searcher keeps of its store in memory between queries, read again only when the store changes.

A warm query should cost its own work, not the store's: opening DuckDB (about 20 ms), point
reads of chunk vectors to re-score with (about 10 ms a query) and of which genome each found
chunk lies in. `Resident` holds the FAISS indexes, the genome details, the chunk -> genome map
and where each chunk lies, the vector means, which genomes have sequences, the stored sketches
(every one with the chunk index, else those used so far) and the packed sequences read so far
(up to KEPT_SEQUENCE_BYTES); the chunk
vectors a re-score needs come from the FAISS index itself where it holds them exactly (flat
and HNSW indexes keep every normalised vector; product-quantised ones do not, and are read
from DuckDB). Whether the store changed is first told by the size, time and inode of its
files (a commit writes the database or its write-ahead log), and only then by DuckDB's own
signature of genomes and labels. `ResidentReader` answers the searcher's reads from memory
and opens the store only for what is not kept (a genome's sequence, the first time it is
aligned): the read-only connection is then made on first use and closed with the query. The
searcher's lock guards what is kept as it grows (sketches and sequences).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
from collections import OrderedDict
from collections.abc import Container, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from genome_index.io.sequences import PackedSequence
from genome_index.search.sketch import SketchIndex
from genome_index.store import Store
from genome_index.store.indexes import Centring
from genome_index.store.reads import StoreReader

KEPT_SKETCHES = 4096  # genomes whose sketches a genome-mode searcher keeps once read (the most recently used)
KEPT_SEQUENCE_BYTES = 1 << 30  # packed sequences (a quarter byte a base) a searcher keeps once read, most recent first


def file_stamp(store: Store) -> tuple:
    """(inode, size, modification time) of the database and its write-ahead log: any commit changes one."""
    stamp = []
    for path in (store.db_path, Path(f"{store.db_path}.wal")):
        try:
            status = os.stat(path)
            stamp.append((status.st_ino, status.st_size, status.st_mtime_ns))
        except FileNotFoundError:
            stamp.append(None)
    return tuple(stamp)


@dataclass
class Resident:
    """A snapshot of what queries read, taken when the store's signature was `signature`."""

    signature: tuple
    details: dict[int, dict[str, Any]]
    genome_count: int
    means: tuple[np.ndarray, np.ndarray]
    with_sequence: frozenset[int]
    indexes: dict[str, faiss.Index] = field(default_factory=dict)
    chunk_ids: np.ndarray | None = None  # sorted; read with the chunk index (chunks mode only)
    chunk_genomes: np.ndarray | None = None  # the genome of each of chunk_ids
    chunk_windows: np.ndarray | None = None  # where each of chunk_ids lies: (record number, start, end) rows
    genome_rows: dict[int, list[tuple[int, int]]] | None = None  # a flat chunk index's row ranges of each genome
    genome_windows: dict[int, int] = field(default_factory=dict)  # rows of each genome there (0: none)
    fewest_first: list[int] = field(default_factory=list)  # the genomes by those rows, fewest first
    sketch_index: SketchIndex | None = None  # every stored sketch hash and its genome (chunks mode only)
    stored_sketches: dict[int, np.ndarray] = field(default_factory=dict)  # every genome's hashes (chunks mode)
    sketches: OrderedDict[int, np.ndarray] = field(default_factory=OrderedDict)  # hashes read for genome mode
    centring: Centring | None = None  # of the flat chunk index, made by the first centred query
    sequences: OrderedDict[int, list[tuple[str, PackedSequence]]] = field(default_factory=OrderedDict)  # read so far
    sequence_bytes: int = 0  # their packed bytes

    @classmethod
    def read(cls, reader: StoreReader, dim: int, signature: tuple) -> Resident:
        return cls(
            signature=signature,
            details=reader.genome_details(),
            genome_count=reader.genome_count(),
            means=reader.vector_means(dim),
            with_sequence=frozenset(reader.genomes_with_sequences()),
        )

    def add_index(self, kind: str, index: faiss.Index, reader: StoreReader) -> None:
        """Keep the index of `kind`; with the chunk index, the genome of every chunk, every
        stored sketch (which genomes a query's windows are worth comparing with) and, for a
        flat index in this process's memory, where each genome's windows lie in it."""
        if kind == "chunks":
            self.chunk_ids, self.chunk_genomes, self.chunk_windows = reader.chunk_genomes()
            self.add_sketches(reader)
            if flat_in_memory(index):
                rows = faiss.vector_to_array(index.id_map)
                self.genome_rows = row_runs(self.chunk_genomes[np.searchsorted(self.chunk_ids, rows)])
                self.genome_windows = {
                    gid: sum(stop - start for start, stop in self.genome_rows.get(gid, [])) for gid in self.details
                }
                self.fewest_first = sorted(self.genome_windows, key=lambda gid: (self.genome_windows[gid], gid))
        self.indexes[kind] = index

    def add_sketches(self, reader: StoreReader) -> None:
        """Keep every stored sketch, and their reverse index (for chunk search and `gather`)."""
        if self.sketch_index is None:
            read = reader.sketch_hashes(list(self.details))
            self.stored_sketches = {gid: np.asarray(hashes, dtype=np.uint64) for gid, hashes in read.items()}
            self.sketch_index = SketchIndex(self.stored_sketches)

    def holds(self, kinds: set[str]) -> bool:
        """Whether this snapshot has what `kinds` asks: FAISS indexes by kind, and `sketches`."""
        return kinds - {"sketches"} <= set(self.indexes) and ("sketches" not in kinds or self.sketch_index is not None)

    def fewest_windows(self, count: int, besides: Container[int]) -> int:
        """Rows of the flat chunk index held by the `count` genomes that hold fewest, those in
        `besides` left out: the least that adding `count` genomes adds."""
        return sum(self.genome_windows[gid] for gid in itertools.islice(
            (gid for gid in self.fewest_first if gid not in besides), count
        ))  # fmt: skip

    def rows_of(self, genome_ids: list[int]) -> list[tuple[int, int]] | None:
        """Row ranges of the given genomes' windows in the flat chunk index, in row order; None
        where the chunk index is not one (HNSW, IVF-PQ, on a GPU)."""
        if self.genome_rows is None:
            return None
        return sorted(run for gid in genome_ids for run in self.genome_rows.get(gid, []))


def packed_bytes(records: list[tuple[str, PackedSequence]]) -> int:
    """The packed bytes of a genome's records."""
    return sum(len(stored.packed) for _, stored in records)


def flat_in_memory(index: faiss.Index) -> bool:
    """Whether `index` is an id map over an exact flat index in this process's memory."""
    return isinstance(index, faiss.IndexIDMap2) and isinstance(faiss.downcast_index(index.index), faiss.IndexFlatIP)


def row_runs(genome_of_row: np.ndarray) -> dict[int, list[tuple[int, int]]]:
    """Genome id -> the [start, stop) row ranges it holds, from the genome of each row."""
    starts = np.flatnonzero(np.diff(genome_of_row, prepend=-1) != 0)
    stops = np.append(starts[1:], len(genome_of_row))[: len(starts)]
    runs: dict[int, list[tuple[int, int]]] = {}
    for start, stop in zip(starts.tolist(), stops.tolist(), strict=True):
        runs.setdefault(int(genome_of_row[start]), []).append((start, stop))
    return runs


def exact_vectors(index: faiss.Index) -> bool:
    """Whether `index` (an id map in this process's memory) holds every vector exactly."""
    if not isinstance(index, faiss.IndexIDMap2):
        return False
    inner = faiss.downcast_index(index.index)
    return isinstance(inner, faiss.IndexFlat | faiss.IndexHNSWFlat)


class ResidentReader:
    """The reads of one query: from `resident` where it holds them, else from a read session of
    `store` opened on first use (thread-safe: aligning threads may be first) and closed by `close`."""

    def __init__(self, store: Store, resident: Resident, lock: threading.Lock) -> None:
        self.store, self.resident, self._kept_lock = store, resident, lock
        self._stack = contextlib.ExitStack()
        self._reader: StoreReader | None = None
        self._open_lock = threading.Lock()

    def __enter__(self) -> ResidentReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _store(self) -> StoreReader:
        with self._open_lock:
            if self._reader is None:
                self._reader = self._stack.enter_context(self.store.reading())
            return self._reader

    @property
    def opened(self) -> bool:
        """Whether this query had to read the store."""
        return self._reader is not None

    def genome_count(self) -> int:
        return self.resident.genome_count

    def vector_means(self, dim: int) -> tuple[np.ndarray, np.ndarray]:
        return self.resident.means

    def centring(self, index: faiss.Index) -> Centring | None:
        """For the kept chunk index, when flat in this process's memory, what centres its scores
        in the search itself (`indexes.Centring`), made on first use and kept; None otherwise."""
        if index is not self.resident.indexes.get("chunks") or not flat_in_memory(index):
            return None
        if self.resident.centring is None:  # two first queries may both make it: the same either way
            self.resident.centring = Centring.of(faiss.downcast_index(index.index), self.resident.means[0])
        return self.resident.centring

    def chunk_vectors(self, chunk_ids: np.ndarray, dim: int) -> np.ndarray:
        """Normalised vectors of the given chunk ids (sorted), from the index where it keeps them exactly."""
        index = self.resident.indexes.get("chunks")
        if index is not None and exact_vectors(index):
            return index.reconstruct_batch(np.ascontiguousarray(chunk_ids, dtype=np.int64))
        return self._store().chunk_vectors(chunk_ids, dim)

    def genomes_of_chunks(self, chunk_ids: list[int]) -> dict[int, int]:
        kept, genomes = self.resident.chunk_ids, self.resident.chunk_genomes
        assert kept is not None and genomes is not None  # read with the chunk index that found these chunks
        where = np.searchsorted(kept, np.asarray(chunk_ids, dtype=np.int64))
        return dict(zip(chunk_ids, genomes[where].tolist(), strict=True))

    def sketches(self, genome_ids: list[int]) -> dict[int, np.ndarray]:
        """The sorted sketch hashes of the given genomes (those with one): from every stored
        sketch where they are kept (chunks mode), else read once and kept (the KEPT_SKETCHES
        most recently used)."""
        stored, kept = self.resident.stored_sketches, self.resident.sketches
        found = {gid: stored[gid] for gid in genome_ids if gid in stored}
        with self._kept_lock:
            for gid in genome_ids:
                if gid not in found and gid in kept:
                    found[gid] = kept[gid]
                    kept.move_to_end(gid)
        unread = [gid for gid in genome_ids if gid not in found]
        read = self._store().sketch_hashes(unread) if unread else {}
        made = {gid: np.asarray(hashes, dtype=np.uint64) for gid, hashes in read.items()}
        with self._kept_lock:
            kept.update(made)
            while len(kept) > KEPT_SKETCHES:
                kept.popitem(last=False)
        return found | made

    def has_sequence(self, genome_id: int) -> bool:
        return genome_id in self.resident.with_sequence

    def windows_of(self, chunk_ids: list[int]) -> list[tuple[int, int, int]]:
        """(record number in its genome, start, end) of each of the given chunks (found by the kept chunk index)."""
        kept, windows = self.resident.chunk_ids, self.resident.chunk_windows
        assert kept is not None and windows is not None  # read with the chunk index that found these chunks
        return [tuple(row) for row in windows[np.searchsorted(kept, np.asarray(chunk_ids, dtype=np.int64))].tolist()]

    def packed_genome(self, genome_id: int) -> list[tuple[str, PackedSequence]]:
        """A stored genome's records as (name, packed sequence), in order: kept once read (up to
        KEPT_SEQUENCE_BYTES, the most recently used), so a warm query need not open the store."""
        kept = self.resident.sequences
        with self._kept_lock:
            if genome_id in kept:
                kept.move_to_end(genome_id)
                return kept[genome_id]
        with self.cursor() as reader:
            names = [name for name, _, _ in reader.records_of(genome_id)]
            packed = reader.packed_sequences(genome_id) or []
        records = list(zip(names, packed, strict=True))
        with self._kept_lock:
            if genome_id not in kept:
                kept[genome_id] = records
                self.resident.sequence_bytes += packed_bytes(records)
            while len(kept) > 1 and self.resident.sequence_bytes > KEPT_SEQUENCE_BYTES:
                self.resident.sequence_bytes -= packed_bytes(kept.popitem(last=False)[1])
        return records

    def keeps_more_sequences(self) -> bool:
        """Whether another genome's sequence would be kept without dropping one."""
        return self.resident.sequence_bytes < KEPT_SEQUENCE_BYTES

    @contextlib.contextmanager
    def cursor(self) -> Iterator[StoreReader]:
        """The store's own reader, for a thread of its own (an aligning thread reads a sequence)."""
        with self._store().cursor() as reader:
            yield reader
