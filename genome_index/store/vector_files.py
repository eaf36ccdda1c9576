"""Chunk vectors beside DuckDB: one Parquet file a commit group, listed in the `vector_files` table.

    vectors/000000012001-3f9c0a1e.parquet   chunk_id, vector of one commit group's chunks, by chunk id

Vectors are most of a store's bytes and SQL rarely reads them, yet inside DuckDB every
checkpoint, copy and backup carries them. A store made by this version keeps them in files
beside it instead. A commit writes its group's file (temporary name, fsync, rename) inside the
transaction that adds the group's rows and lists the file in `vector_files` (rows, chunk id
range, bytes, SHA-256): the commit makes rows and vectors visible together, a rollback deletes
the file, and a kill between the two leaves a file no row names, which the next writer
removes. A file is never changed: removing genomes writes their files again without them.

Every connection sees the files its snapshot lists as the `chunk_vectors` view, an Arrow
dataset registered on the connection (`register`): DuckDB itself opens no file, so users' SQL
keeps file access off and `SELECT ... FROM chunk_vectors` works as before. Point reads (the
vectors of given chunk ids) go to the files whose id range holds them, row groups skipped by
their statistics. Stores with a `chunk_vectors` table (made before) keep it until `migrate`
moves it out.
"""

from __future__ import annotations

import functools
import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from genome_index.errors import GenomeIndexError, first_line
from genome_index.store.files import replace_atomically, sha256_of
from genome_index.store.schema import has_table
from genome_index.store.vector_view import FOLDER, register, vector_schema

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

TABLE = "vector_files"
NAME = re.compile(r"^\d{12}-[0-9a-f]{8}\.parquet$")
ROW_GROUP = 1024  # rows a Parquet row group holds: a point read reads whole row groups (10 MB at most)
FILE_BYTES = 256 << 20  # bytes of vectors a file written by `migrate` holds, about


@dataclass(frozen=True)
class VectorFile:
    """One `vector_files` row: a file of chunk vectors and what it must be."""

    name: str
    rows: int
    first_chunk: int
    last_chunk: int
    bytes: int
    sha256: str

    def row(self) -> tuple:
        return (self.name, self.rows, self.first_chunk, self.last_chunk, self.bytes, self.sha256)


def beside(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether a store keeps its chunk vectors in files (else in its `chunk_vectors` table)."""
    return has_table(con, TABLE)


class VectorFiles:
    """The `vectors/` folder of one store and the `vector_files` rows that list it."""

    def __init__(self, store_directory: Path, dim: int, vector_dtype: str) -> None:
        self.folder = Path(store_directory) / FOLDER
        self.dim, self.vector_dtype = dim, vector_dtype

    @functools.cached_property
    def schema(self) -> pa.Schema:
        return vector_schema(self.dim, self.vector_dtype)

    def listed(self, con: duckdb.DuckDBPyConnection) -> list[VectorFile]:
        """The files the connection's snapshot lists, by first chunk id."""
        rows = con.execute(f"SELECT * FROM {TABLE} ORDER BY first_chunk").fetchall()
        return [VectorFile(*row) for row in rows]

    def register(self, con: duckdb.DuckDBPyConnection) -> None:
        """`chunk_vectors` on this connection: the files its snapshot lists (`vector_view`)."""
        register(con, self.folder.parent)

    def write(self, table: pa.Table) -> VectorFile:
        """`table` (chunk_id, vector; ascending ids) as a new file, in place once this returns;
        listing it is the caller's commit."""
        import pyarrow.parquet as pq

        ids = table.column("chunk_id")
        first, last = int(ids[0].as_py()), int(ids[-1].as_py())
        self.folder.mkdir(exist_ok=True)
        path = self.folder / f"{first:012d}-{secrets.token_hex(4)}.parquet"
        table = table.cast(self.schema)
        try:
            replace_atomically(
                path, lambda handle: pq.write_table(table, handle, row_group_size=ROW_GROUP, compression="none")
            )
        except OSError as exc:
            path.with_name(path.name + ".tmp").unlink(missing_ok=True)
            raise GenomeIndexError(
                f"{path}: cannot write ({exc.strerror or first_line(exc)}); disk full or read-only? "
                "The store keeps every genome committed before this one"
            ) from None
        return VectorFile(path.name, table.num_rows, first, last, path.stat().st_size, sha256_of(path))

    def read(self, con: duckdb.DuckDBPyConnection, chunk_ids: np.ndarray) -> pa.Table:
        """The rows of the given chunk ids (ascending), in that order: only the files whose id
        range holds some are opened, and of those only the row groups that may hold them."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        ids = np.asarray(chunk_ids, dtype=np.int64)
        parts = []
        for item in self.listed(con):
            lo, hi = np.searchsorted(ids, [item.first_chunk, item.last_chunk + 1])
            if hi > lo:
                wanted = pa.array(ids[lo:hi])
                try:
                    part = pq.read_table(self.folder / item.name, filters=pc.field("chunk_id").isin(wanted))
                except (OSError, pa.ArrowException) as exc:
                    raise GenomeIndexError(f"{self.folder / item.name}: unreadable ({first_line(exc)})") from None
                parts.append(part.cast(self.schema))
        table = pa.concat_tables(parts) if parts else self.schema.empty_table()
        return table.take(pc.sort_indices(table.column("chunk_id")))

    def without(self, con: duckdb.DuckDBPyConnection, chunk_ids: np.ndarray) -> tuple[list[str], list[VectorFile]]:
        """The files holding some of `chunk_ids` (ascending), and new files of their other rows:
        the caller swaps the rows of `vector_files` in its transaction, then removes the old files."""
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        ids = np.asarray(chunk_ids, dtype=np.int64)
        old, new = [], []
        for item in self.listed(con):
            lo, hi = np.searchsorted(ids, [item.first_chunk, item.last_chunk + 1])
            if hi > lo:
                table = pq.read_table(self.folder / item.name)
                kept = table.filter(pc.invert(pc.field("chunk_id").isin(ids[lo:hi])))
                old.append(item.name)
                if kept.num_rows:
                    new.append(self.write(kept))
        return old, new

    def blocks(self, batches: Iterable[pa.RecordBatch]) -> Iterator[VectorFile]:
        """Batches of (chunk_id, vector) rows written as files of about FILE_BYTES each, sorted
        by id within a file: what `migrate` moves out of an old store's table, one file held
        in memory at a time."""
        import pyarrow as pa

        pending: list[pa.RecordBatch] = []
        held = 0
        for batch in batches:
            pending.append(batch)
            held += batch.nbytes
            if held >= FILE_BYTES:
                yield self._write_sorted(pa.Table.from_batches(pending))
                pending, held = [], 0
        if pending:
            yield self._write_sorted(pa.Table.from_batches(pending))

    def _write_sorted(self, table: pa.Table) -> VectorFile:
        import pyarrow.compute as pc

        return self.write(table.take(pc.sort_indices(table.column("chunk_id"))))

    def clean(self, listed: Iterable[VectorFile]) -> None:
        """Remove the files no row lists (a build killed before its commit, files replaced by a
        removal); only a writer holding the store's lock calls this."""
        if not self.folder.is_dir():
            return
        keep = {item.name for item in listed}
        for path in self.folder.iterdir():
            ours = NAME.match(path.name) or path.name.endswith(".parquet.tmp")
            if ours and path.name not in keep and not path.is_symlink():
                path.unlink(missing_ok=True)

    def damaged(self, listed: Iterable[VectorFile], exact: bool = True) -> list[str]:
        """Listed files that are missing, of another size, or (with `exact`, reading them) of
        other bytes than their SHA-256 says."""
        problems = []
        for item in listed:
            path = self.folder / item.name
            where = f"{FOLDER}/{item.name}"
            if not path.is_file():
                problems.append(f"{where} is missing ({item.rows} chunk vectors)")
            elif path.stat().st_size != item.bytes:
                problems.append(f"{where} is {path.stat().st_size} bytes, {TABLE} says {item.bytes}")
            elif exact and sha256_of(path) != item.sha256:
                problems.append(f"{where} differs from its SHA-256 in {TABLE}")
        return problems
