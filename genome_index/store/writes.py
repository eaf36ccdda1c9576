"""Writes: every change to a store happens inside `transaction()`, which rolls back on any error."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import numpy as np

from genome_index.io.sequences import PackedSequence
from genome_index.store.reads import StoreReader
from genome_index.store.rows import NewGenome
from genome_index.store.schema import SKETCH_KSIZE, VECTOR_FILES, upgrade
from genome_index.store.vector_files import VectorFile, VectorFiles
from genome_index.store.vectors import normalise, unit_sum, vectors_column

if TYPE_CHECKING:
    import pyarrow as pa


ADDED_TABLES = ("genomes", "records", "chunks", "chunk_vectors", "genome_vectors", "sketches", "sequences")


def _rows(
    genome: NewGenome, genome_id: int, first_record: int, first_chunk: int, added_at: datetime, vector_dtype: str
) -> dict[str, pa.Table]:
    """The Arrow rows one genome adds to each table (its sequences only where it keeps them)."""
    import pyarrow as pa

    n_chunks = len(genome.vectors)
    n_records = len(genome.records)
    record_ids = list(range(first_record, first_record + n_records))
    chunk_ids = np.arange(first_chunk, first_chunk + n_chunks, dtype=np.int64)
    c = genome.chunks
    if genome.chunk_sum is None:
        genome.chunk_sum = unit_sum(genome.vectors)
    chunk_sum = genome.chunk_sum
    rows = {
        "genomes": pa.table(
            {
                "id": pa.array([genome_id], pa.int32()), "name": [genome.name], "file": [genome.file],
                "sha256": [genome.sha256], "length": pa.array([genome.length], pa.int64()),
                "gc": pa.array([genome.gc], pa.float64()), "n_count": pa.array([genome.n_count], pa.int64()),
                "n_records": pa.array([n_records], pa.int32()), "n_chunks": pa.array([n_chunks], pa.int32()),
                "added_at": pa.array([added_at], pa.timestamp("us")),
            }
        ),
        "records": pa.table(
            {
                "id": pa.array(record_ids, pa.int32()),
                "genome_id": pa.array([genome_id] * n_records, pa.int32()),
                "idx": pa.array(range(n_records), pa.int32()),
                "name": pa.array([r["name"] for r in genome.records], pa.string()),
                "description": pa.array([r["description"] for r in genome.records], pa.string()),
                "length": pa.array([r["length"] for r in genome.records], pa.int64()),
                "gc": pa.array([r["gc"] for r in genome.records], pa.float64()),
                "n_count": pa.array([r["n_count"] for r in genome.records], pa.int64()),
            }
        ),
        "chunks": pa.table(
            {
                "id": chunk_ids,
                "genome_id": np.full(n_chunks, genome_id, dtype=np.int32),
                "record_id": (np.asarray(c["record"]) + first_record).astype(np.int32),
                "start": np.asarray(c["start"]).astype(np.int64),
                "end": np.asarray(c["end"]).astype(np.int64),
                "n_tokens": np.asarray(c["n_tokens"]).astype(np.int32),
                "gc": np.asarray(c["gc"]).astype(np.float64),
                "n_count": np.asarray(c["n_count"]).astype(np.int32),
            }
        ),
        "chunk_vectors": pa.table({"chunk_id": chunk_ids, "vector": vectors_column(genome.vectors, vector_dtype)}),
        "genome_vectors": pa.table(
            {
                "genome_id": pa.array([genome_id], pa.int32()),
                "vector": vectors_column(normalise(chunk_sum)),  # the genome vector: mean direction of its chunks
                "chunk_sum": vectors_column(chunk_sum),
            }
        ),
        "sketches": pa.table(
            {
                "genome_id": pa.array([genome_id], pa.int32()),
                "ksize": pa.array([SKETCH_KSIZE], pa.int32()),
                "scaled": pa.array([genome.sketch_scaled], pa.int32()),
                "hashes": pa.array([np.sort(genome.sketch).astype(np.uint64)], pa.list_(pa.uint64())),
            }
        ),
    }  # fmt: skip
    if genome.sequences is not None:
        rows["sequences"] = sequence_rows(genome_id, record_ids, genome.sequences)
    return rows


def sequence_rows(genome_id: int, record_ids: list[int], sequences: list[PackedSequence]) -> pa.Table:
    """The `sequences` rows of one genome's records."""
    import pyarrow as pa

    return pa.table(
        {
            "record_id": pa.array(record_ids, pa.int32()),
            "genome_id": pa.array([genome_id] * len(record_ids), pa.int32()),
            "length": pa.array([s.length for s in sequences], pa.int64()),
            "line_width": pa.array([s.line_width for s in sequences], pa.int32()),
            "packed": pa.array([s.packed for s in sequences], pa.binary()),
            "n_starts": pa.array([s.n_starts for s in sequences], pa.list_(pa.int64())),
            "n_ends": pa.array([s.n_ends for s in sequences], pa.list_(pa.int64())),
        }
    )


class StoreWriter(StoreReader):
    """A write session on a store: every change, each inside `transaction()`, which rolls back
    on any error; reads as a `StoreReader` does. Made by `Store.writing()` and `Store.session()`."""

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN ... COMMIT, rolled back on any exception (Ctrl-C included)."""
        self._con.execute("BEGIN")
        try:
            yield
            self._con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(duckdb.Error):  # a failed COMMIT has already ended it
                self._con.execute("ROLLBACK")
            raise

    def _next_ids(self, key: str, count: int) -> int:
        first = self._con.execute("SELECT value FROM state WHERE key = ?", [key]).fetchall()[0][0]
        self._con.execute("UPDATE state SET value = ? WHERE key = ?", [first + count, key])
        return int(first)

    def add_genome(self, genome: NewGenome, vector_dtype: str) -> tuple[int, np.ndarray]:
        """Commit one genome (rows, vectors, sketch, labels) in one transaction; its id and chunk ids."""
        return self.add_genomes([genome], vector_dtype)[0]

    def add_genomes(self, genomes: Sequence[NewGenome], vector_dtype: str) -> list[tuple[int, np.ndarray]]:
        """Commit several genomes in one transaction, all or none; each one's id and chunk ids.

        Each table gets one append for the whole group: one commit costs about as much for one
        genome as for many, so a writer fed by many GPUs commits groups (3.5x the genomes per
        second of one a transaction: benchmarks/bench_ray.py).
        """
        import pyarrow as pa  # here, not at the top: commands that only read start faster

        tables: dict[str, list[pa.Table]] = {name: [] for name in ADDED_TABLES}
        added: list[tuple[int, np.ndarray]] = []
        with self._vector_files_kept() as written, self.transaction():
            genome_id = self._next_ids("next_genome_id", len(genomes))
            record_id = self._next_ids("next_record_id", sum(len(g.records) for g in genomes))
            chunk_id = self._next_ids("next_chunk_id", sum(len(g.vectors) for g in genomes))
            added_at = datetime.now(timezone.utc).replace(tzinfo=None)
            for genome in genomes:
                rows = _rows(genome, genome_id, record_id, chunk_id, added_at, vector_dtype)
                for name, table in rows.items():
                    tables[name].append(table)
                added.append((genome_id, rows["chunks"].column("id").to_numpy()))
                genome_id, record_id = genome_id + 1, record_id + len(genome.records)
                chunk_id += len(genome.vectors)
            for name, parts in tables.items():
                if name == "chunk_vectors" and self.vector_files is not None and parts:
                    self._add_vector_file(pa.concat_tables(parts), written)
                elif parts:
                    self._append(name, pa.concat_tables(parts))
            for (genome_id, _), genome in zip(added, genomes, strict=True):
                self.set_labels(genome_id, genome.labels)
            chunk_sums = np.concatenate([g.chunk_sum for g in genomes]).astype(np.float64)
            self._add_to_sums("chunks", sum(len(g.vectors) for g in genomes), chunk_sums.sum(axis=0))
            self._add_to_sums("genomes", len(genomes), normalise(chunk_sums).sum(axis=0))
        return added

    def move_vectors_out(self, directory: Path) -> tuple[int, int]:
        """Move the chunk vectors of a store made before vector files out of its `chunk_vectors`
        table into files beside it (streamed, a file at a time), listed, and the table dropped,
        in one transaction: killed before it commits, the store is as it was and the files are
        removed by the next writer. (chunk vectors, files) moved; (0, 0) for a store done already."""
        import pyarrow as pa

        if self.vector_files is not None:
            return 0, 0
        settings = self.settings()
        files = VectorFiles(directory, settings.dim, settings.vector_dtype)
        files.clean([])  # a migration killed before it committed
        written: list[VectorFile] = []
        try:
            batches = self._con.sql("SELECT chunk_id, vector FROM chunk_vectors").to_arrow_reader(65_536)
            schema = files.schema
            written.extend(files.blocks(pa.RecordBatch.from_arrays(b.columns, schema=schema) for b in batches))
            with self.transaction():
                self._con.execute(VECTOR_FILES)
                self._list_vector_files(written)
                self._con.execute("DROP TABLE chunk_vectors")
        except BaseException:
            for item in written:
                (files.folder / item.name).unlink(missing_ok=True)
            raise
        self.vector_files, self._view_current = files, False
        return sum(item.rows for item in written), len(written)

    def clean_vector_files(self) -> None:
        """Remove the vector files no commit lists (a writer killed between writing a file and
        committing it, or after a removal committed); for a writer that holds the store's lock."""
        if self.vector_files is not None:
            self.vector_files.clean(self.vector_files.listed(self._con))

    @contextlib.contextmanager
    def _vector_files_kept(self) -> Iterator[list[str]]:
        """The names of the vector files a transaction writes: removed again if it does not
        commit; if it does, the connection's `chunk_vectors` shows them from its next read."""
        written: list[str] = []
        try:
            yield written
        except BaseException:
            for name in written:
                (self.vector_files.folder / name).unlink(missing_ok=True)
            raise
        self._view_current = False  # this connection's `chunk_vectors` is registered again when next read

    def _add_vector_file(self, rows: pa.Table, written: list[str]) -> None:
        """A commit group's chunk vectors as a file beside the store, listed in this transaction."""
        if rows.num_rows:
            made = self.vector_files.write(rows)
            written.append(made.name)
            self._list_vector_files([made])

    def _list_vector_files(self, files: list[VectorFile]) -> None:
        """Rows of `vector_files` for files written, in the caller's transaction."""
        for item in files:
            self._con.execute("INSERT INTO vector_files VALUES (?, ?, ?, ?, ?, ?)", list(item.row()))

    def backfill_sequences(self, genome_id: int, sequences: list[PackedSequence]) -> None:
        """Store the sequences of a genome that has none, in their own transaction."""
        with self.transaction():
            record_ids = [
                r
                for (r,) in self._con.execute(
                    "SELECT id FROM records WHERE genome_id = ? ORDER BY idx", [genome_id]
                ).fetchall()
            ]
            self._append("sequences", sequence_rows(genome_id, record_ids, sequences))

    def _append(self, name: str, rows: pa.Table) -> None:
        """Insert Arrow rows into a table, in the caller's transaction."""
        self._con.register("incoming", rows)
        self._con.execute(f"INSERT INTO {name} SELECT * FROM incoming")
        self._con.unregister("incoming")

    def set_labels(self, genome_id: int, labels: dict[str, str]) -> None:
        """Set (or replace) labels of one genome; inside the caller's transaction."""
        for key, value in labels.items():
            self._con.execute("INSERT OR REPLACE INTO labels VALUES (?, ?, ?)", [genome_id, key, value])

    def relabel(self, genome_id: int, labels: dict[str, str]) -> None:
        """Set labels of a stored genome in their own transaction."""
        with self.transaction():
            self.set_labels(genome_id, labels)

    def _add_to_sums(self, kind: str, count: int, total: np.ndarray) -> None:
        """Move the running sum of one kind's vectors (and their count) by `total` (and `count`)."""
        row = self._con.execute("SELECT n, total FROM vector_sums WHERE kind = ?", [kind]).fetchall()
        n, before = row[0] if row else (0, np.zeros(len(total)))
        self._con.execute(
            "INSERT OR REPLACE INTO vector_sums VALUES (?, ?, ?)", [kind, n + count, (before + total).tolist()]
        )

    def recount_vector_sums(self) -> None:
        """Work the running vector sums out again from the stored vectors (exact, where a long
        run of additions and removals drifted), in their own transaction."""
        with self.transaction():
            self._con.execute("DELETE FROM vector_sums")
            self._con.execute("DROP TABLE vector_sums")
            upgrade(self._con)

    def remove_genomes(self, genome_ids: list[int]) -> None:
        """Delete genomes with all their rows in one transaction (their vector files written
        again without them first; the old files go once it commits)."""
        replaced: list[str] = []
        with self._vector_files_kept() as written, self.transaction():
            if self.vector_files is not None:
                chunk_ids = self._con.execute(
                    "SELECT id FROM chunks WHERE genome_id IN (SELECT UNNEST(?)) ORDER BY id", [genome_ids]
                ).fetchnumpy()["id"]
                replaced, new = self.vector_files.without(self._con, chunk_ids)
                written.extend(item.name for item in new)
                self._con.execute("DELETE FROM vector_files WHERE name IN (SELECT UNNEST(?))", [replaced])
                self._list_vector_files(new)
            removed = self._con.execute(
                "SELECT v.chunk_sum, v.vector, g.n_chunks FROM genome_vectors v JOIN genomes g ON g.id = v.genome_id "
                "WHERE g.id IN (SELECT UNNEST(?))",
                [genome_ids],
            ).fetchall()
            if removed:
                chunk_sums = np.array([r[0] for r in removed], dtype=np.float64).sum(axis=0)
                self._add_to_sums("chunks", -sum(r[2] for r in removed), -chunk_sums)
                self._add_to_sums("genomes", -len(removed), -np.array([r[1] for r in removed], np.float64).sum(axis=0))
            if self.vector_files is None:
                self._con.execute(
                    "DELETE FROM chunk_vectors WHERE chunk_id IN "
                    "(SELECT id FROM chunks WHERE genome_id IN (SELECT UNNEST(?)))",
                    [genome_ids],
                )
            for table, column in (
                ("sequences", "genome_id"),
                ("chunks", "genome_id"),
                ("records", "genome_id"),
                ("genome_vectors", "genome_id"),
                ("sketches", "genome_id"),
                ("labels", "genome_id"),
                ("genomes", "id"),
            ):
                self._con.execute(f"DELETE FROM {table} WHERE {column} IN (SELECT UNNEST(?))", [genome_ids])
        for name in replaced:  # committed: no snapshot from now on lists them (a reader holding one may
            (self.vector_files.folder / name).unlink(missing_ok=True)  # fail; the next writer would remove them)

    def set_setting(self, key: str, value: str) -> None:
        """Change one stored setting (reindex changes the index type) in its own transaction."""
        with self.transaction():
            self._con.execute("UPDATE settings SET value = ? WHERE key = ?", [value, key])
