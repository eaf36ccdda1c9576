"""The store's files and DuckDB schema, and the creation of an empty store."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import duckdb
import numpy as np

from genome_index.settings import StoreSettings

# The files that hold a store's chunk vectors beside it (`vector_files.py`).
VECTOR_FILES = """CREATE TABLE vector_files (name VARCHAR PRIMARY KEY, rows BIGINT NOT NULL,
    first_chunk BIGINT NOT NULL, last_chunk BIGINT NOT NULL, bytes BIGINT NOT NULL, sha256 VARCHAR NOT NULL);"""

DB_FILE = "metadata.duckdb"
FAISS_FILES = {"chunks": "chunks.faiss", "genomes": "genomes.faiss"}
SKETCH_KSIZE = 21  # FracMinHash of canonical 21-mers

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
{chunk_vectors}
CREATE TABLE genome_vectors (genome_id INTEGER PRIMARY KEY, vector FLOAT[{dim}] NOT NULL,
    chunk_sum FLOAT[{dim}] NOT NULL);
CREATE TABLE sketches (genome_id INTEGER PRIMARY KEY, ksize INTEGER NOT NULL, scaled INTEGER NOT NULL,
    hashes UBIGINT[] NOT NULL);
CREATE TABLE labels (genome_id INTEGER NOT NULL, key VARCHAR NOT NULL, value VARCHAR,
    PRIMARY KEY (genome_id, key));
{sequences}
{vector_sums}
INSERT INTO state VALUES ('next_genome_id', 1), ('next_record_id', 1), ('next_chunk_id', 1);
"""

# Where stores made before vector files kept their chunk vectors (`migrate` moves them out).
CHUNK_VECTORS_TABLE = "CREATE TABLE chunk_vectors (chunk_id BIGINT PRIMARY KEY, vector {vector_type} NOT NULL);"

# Running sums of the unit chunk vectors (their count: the chunks) and of the genome vectors,
# kept by every write: the store's mean vectors, which centring subtracts, without a pass over
# every vector per query.
VECTOR_SUMS = """
CREATE TABLE vector_sums (kind VARCHAR PRIMARY KEY, n BIGINT NOT NULL, total DOUBLE[] NOT NULL);
"""


# Every record's sequence, 2 bits a base (see `genome_index.io.sequences`), and a macro that reads
# bases [start, end) of a record in SQL: subsequence(chunks.record_id, chunks.start, chunks."end"). A zero
# byte is appended before the cast to BIT, which refuses an empty blob.
SEQUENCES = """
CREATE TABLE sequences (record_id INTEGER PRIMARY KEY, genome_id INTEGER NOT NULL, length BIGINT NOT NULL,
    line_width INTEGER NOT NULL, packed BLOB NOT NULL, n_starts BIGINT[] NOT NULL, n_ends BIGINT[] NOT NULL);
CREATE MACRO subsequence(record, start_, end_) AS (
    SELECT array_to_string(list_transform(range(greatest(start_, 0), least(end_, length)), lambda i:
        CASE WHEN list_bool_or(list_transform(range(len(n_starts)),
                                              lambda j: i >= n_starts[j + 1] AND i < n_ends[j + 1]))
        THEN 'N' ELSE ['A', 'C', 'G', 'T'][1 + 2 * get_bit(bits, (2 * i)::INTEGER)
                                           + get_bit(bits, (2 * i + 1)::INTEGER)] END), '')
    FROM (SELECT CAST(packed || '\\x00'::BLOB AS BIT) AS bits, length, n_starts, n_ends
          FROM sequences WHERE record_id = record));
"""


def has_sequences(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the store has the sequences table (stores built before it have not)."""
    query = "SELECT count(*) FROM information_schema.tables WHERE table_name = 'sequences'"
    return bool(con.execute(query).fetchall()[0][0])


def is_store(con: duckdb.DuckDBPyConnection) -> bool:
    """A DuckDB file with genome-index's `settings` table."""
    query = "SELECT count(*) FROM information_schema.tables WHERE table_name = 'settings'"
    return bool(con.execute(query).fetchall()[0][0])


def has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    query = "SELECT count(*) FROM information_schema.tables WHERE table_name = ?"
    return bool(con.execute(query, [name]).fetchall()[0][0])


def upgrade(con: duckdb.DuckDBPyConnection) -> None:
    """Add what newer versions keep to a store built by an older one (on a writable connection):
    the sequences table, and the vector sums, worked out once from the stored vectors."""
    if not has_sequences(con):
        con.execute(SEQUENCES)
    if not has_table(con, "vector_sums"):
        dim = int(con.execute("SELECT value FROM settings WHERE key = 'dim'").fetchall()[0][0])
        con.execute(VECTOR_SUMS)
        chunks = con.execute("SELECT count(*) FROM chunks").fetchall()[0][0]
        sums = np.zeros((2, dim))
        for chunk_sum, vector in con.execute("SELECT chunk_sum, vector FROM genome_vectors").fetchall():
            sums += np.array([chunk_sum, vector], dtype=np.float64)
        genomes = con.execute("SELECT count(*) FROM genomes").fetchall()[0][0]
        rows = [("chunks", chunks, sums[0].tolist()), ("genomes", genomes, sums[1].tolist())]
        con.executemany("INSERT INTO vector_sums VALUES (?, ?, ?)", rows)


def create_database(
    path: Path, settings: StoreSettings, fill: Callable[[duckdb.DuckDBPyConnection], None] | None = None
) -> None:
    """An empty store database with its fixed settings, appearing complete or not at all; with
    `fill`, the database of today's schema that `fill` fills instead (every table's rows, the
    settings and state included: `migrate` copies a store into it)."""
    tmp = path.with_name(path.name + ".creating")
    for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):  # from a build killed while creating
        leftover.unlink(missing_ok=True)
    con = duckdb.connect(str(tmp), config={"enable_external_access": False})
    try:
        con.execute("BEGIN")
        vector_type = "BLOB" if settings.vector_dtype == "float16" else f"FLOAT[{settings.dim}]"
        schema = SCHEMA.format(
            dim=settings.dim, vector_type=vector_type, sequences=SEQUENCES, vector_sums=VECTOR_SUMS,
            chunk_vectors=VECTOR_FILES,
        )  # fmt: skip
        con.execute(schema)
        if fill is not None:
            con.execute("DELETE FROM state")
            fill(con)
        else:
            zeros = [0.0] * settings.dim
            con.executemany("INSERT INTO vector_sums VALUES (?, 0, ?)", [("chunks", zeros), ("genomes", zeros)])
            con.executemany("INSERT INTO settings VALUES (?, ?)", sorted(settings.rows().items()))
        con.execute("COMMIT")
        con.execute("CHECKPOINT")
    finally:
        con.close()
    os.replace(tmp, path)
