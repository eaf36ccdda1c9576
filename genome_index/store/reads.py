"""Reads: every query the library runs against a store, on an open connection."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import duckdb
import numpy as np

from genome_index.io.sequences import PackedSequence, unpack
from genome_index.settings import StoreSettings
from genome_index.store.rows import NewGenome
from genome_index.store.schema import has_sequences
from genome_index.store.vectors import to_matrix

KINDS = {"chunks": ("chunks", "chunk_vectors", "chunk_id"), "genomes": ("genomes", "genome_vectors", "genome_id")}


def settings(con: duckdb.DuckDBPyConnection) -> StoreSettings:
    """The store's fixed settings (stores older than a setting read with its old value)."""
    return StoreSettings.from_rows(dict(con.execute("SELECT key, value FROM settings").fetchall()))


def scalar(con: duckdb.DuckDBPyConnection, statement: str, params: list[Any] | None = None) -> Any:
    return con.execute(statement, params or []).fetchall()[0][0]


def genome_count(con: duckdb.DuckDBPyConnection) -> int:
    return int(scalar(con, "SELECT count(*) FROM genomes"))


def genomes_by_sha(con: duckdb.DuckDBPyConnection) -> dict[str, tuple[int, str, str]]:
    """SHA-256 -> (id, name, file) of every stored genome."""
    rows = con.execute("SELECT sha256, id, name, file FROM genomes").fetchall()
    return {sha: (gid, name, file) for sha, gid, name, file in rows}


def genome_with_sha(con: duckdb.DuckDBPyConnection, sha256: str) -> tuple[int, str] | None:
    """(id, name) of the stored genome with this sequence hash, if any."""
    rows = con.execute("SELECT id, name FROM genomes WHERE sha256 = ?", [sha256]).fetchall()
    return (int(rows[0][0]), rows[0][1]) if rows else None


def genome_files(con: duckdb.DuckDBPyConnection) -> dict[str, tuple[str, str]]:
    """Genome name -> (file it was read from, SHA-256 of its sequence)."""
    return {name: (file, sha) for name, file, sha in con.execute("SELECT name, file, sha256 FROM genomes").fetchall()}


def genome_names(con: duckdb.DuckDBPyConnection) -> dict[int, str]:
    return dict(con.execute("SELECT id, name FROM genomes ORDER BY id").fetchall())


def ids(con: duckdb.DuckDBPyConnection, kind: str) -> np.ndarray:
    """The sorted DuckDB ids of one kind ('chunks' or 'genomes'): what its FAISS file must hold."""
    table = KINDS[kind][0]
    return np.asarray(con.execute(f"SELECT id FROM {table} ORDER BY id").fetchnumpy()["id"], dtype=np.int64)


def vectors(con: duckdb.DuckDBPyConnection, kind: str, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """All ids and vectors of one kind, ordered by id."""
    _, table, column = KINDS[kind]
    result = con.sql(f"SELECT {column} AS id, vector FROM {table} ORDER BY id").to_arrow_table()
    return result.column("id").to_numpy().astype(np.int64), to_matrix(result.column("vector"), dim)


def vectors_of(con: duckdb.DuckDBPyConnection, kind: str, ids: np.ndarray, dim: int) -> np.ndarray:
    """Stored vectors of the given ids (sorted ascending) of one kind, in that order."""
    _, table, column = KINDS[kind]
    result = con.sql(
        f"SELECT vector FROM {table} WHERE {column} IN (SELECT UNNEST($1)) ORDER BY {column}",
        params=[np.asarray(ids).tolist()],
    ).to_arrow_table()
    return to_matrix(result.column("vector"), dim)


def chunk_vectors(con: duckdb.DuckDBPyConnection, chunk_ids: np.ndarray, dim: int) -> np.ndarray:
    """Stored vectors of the given chunk ids (sorted ascending), in that order."""
    return vectors_of(con, "chunks", chunk_ids, dim)


def genomes_of_chunks(con: duckdb.DuckDBPyConnection, chunk_ids: list[int]) -> dict[int, int]:
    """chunk id -> genome id."""
    rows = con.execute("SELECT id, genome_id FROM chunks WHERE id IN (SELECT UNNEST(?))", [chunk_ids])
    return dict(rows.fetchall())


def vector_means(con: duckdb.DuckDBPyConnection, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean of all normalised chunk vectors, and mean of the genome vectors (for centring)."""
    table = con.sql("SELECT vector, chunk_sum FROM genome_vectors").to_arrow_table()
    sums = to_matrix(table.column("chunk_sum"), dim).astype(np.float64)
    count = scalar(con, "SELECT count(*) FROM chunks")
    genome_mean = to_matrix(table.column("vector"), dim).astype(np.float64).mean(axis=0)
    return (sums.sum(axis=0) / max(count, 1)).astype(np.float32), genome_mean.astype(np.float32)


def sketch_hashes(con: duckdb.DuckDBPyConnection, genome_ids: list[int]) -> dict[int, list[int]]:
    rows = con.execute("SELECT genome_id, hashes FROM sketches WHERE genome_id IN (SELECT UNNEST(?))", [genome_ids])
    return dict(rows.fetchall())


def packed_sequences(con: duckdb.DuckDBPyConnection, genome_id: int) -> list[PackedSequence] | None:
    """The stored sequences of one genome's records in order; None where the store keeps none."""
    if not has_sequences(con):
        return None
    rows = con.execute(  # record ids follow the records' order in their genome
        "SELECT length, packed, n_starts, n_ends, line_width FROM sequences WHERE genome_id = ? ORDER BY record_id",
        [genome_id],
    ).fetchall()
    if not rows:
        return None
    return [
        PackedSequence(length, packed, np.asarray(starts, np.int64), np.asarray(ends, np.int64), width)
        for length, packed, starts, ends, width in rows
    ]


def has_sequence(con: duckdb.DuckDBPyConnection, genome_id: int) -> bool:
    """Whether the store keeps this genome's sequence."""
    if not has_sequences(con):
        return False
    return bool(scalar(con, "SELECT count(*) FROM sequences WHERE genome_id = ?", [genome_id]))


def records_of(con: duckdb.DuckDBPyConnection, genome_id: int) -> list[tuple[str, str, int]]:
    """(name, description, length) of one genome's records, in file order."""
    rows = con.execute("SELECT name, description, length FROM records WHERE genome_id = ? ORDER BY idx", [genome_id])
    return rows.fetchall()


def genomes_without_sequences(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """SHA-256 -> id of the genomes whose sequences the store does not keep (built before it did)."""
    if not has_sequences(con):
        return {sha: gid for sha, gid in con.execute("SELECT sha256, id FROM genomes").fetchall()}
    rows = con.execute("SELECT sha256, id FROM genomes WHERE id NOT IN (SELECT genome_id FROM sequences)")
    return dict(rows.fetchall())


def sequence_mismatches(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Names of the genomes whose stored sequences do not hash to their sha256 (read one at a time)."""
    import hashlib

    if not has_sequences(con):
        return []
    bad = []
    genomes = "SELECT id, name, sha256 FROM genomes WHERE id IN (SELECT genome_id FROM sequences) ORDER BY id"
    for gid, name, sha in con.execute(genomes).fetchall():
        digest = hashlib.sha256()
        for stored in packed_sequences(con, gid) or []:
            digest.update(unpack(stored))
            digest.update(b">")
        if digest.hexdigest() != sha:
            bad.append(name)
    return bad


def label_keys(con: duckdb.DuckDBPyConnection) -> list[str]:
    return [k for (k,) in con.execute("SELECT DISTINCT key FROM labels ORDER BY key").fetchall()]


def label_values(con: duckdb.DuckDBPyConnection, key: str) -> dict[str, str]:
    """Genome name -> its value of one label (genomes without it are left out)."""
    rows = con.execute(
        "SELECT g.name, l.value FROM labels l JOIN genomes g ON g.id = l.genome_id WHERE l.key = ?", [key]
    )
    return dict(rows.fetchall())


def change_signature(con: duckdb.DuckDBPyConnection) -> tuple:
    """What changes when genomes are added or removed or labels set: a searcher reloads its
    indexes and details when this does."""
    return con.execute(
        "SELECT (SELECT count(*) FROM genomes), (SELECT coalesce(max(id), 0) FROM genomes), "
        "(SELECT count(*) FROM labels), (SELECT coalesce(sum(hash(genome_id, key, value)), 0) FROM labels)"
    ).fetchall()[0]


def genome_details(con: duckdb.DuckDBPyConnection) -> dict[int, dict[str, Any]]:
    """Genome id -> name, file and every label key (None where the genome has none)."""
    keys = label_keys(con)
    details = {
        gid: {"name": name, "file": file, "labels": dict.fromkeys(keys)}
        for gid, name, file in con.execute("SELECT id, name, file FROM genomes").fetchall()
    }
    for gid, key, value in con.execute("SELECT genome_id, key, value FROM labels").fetchall():
        details[gid]["labels"][key] = value
    return details


GENOME_COLUMNS = ("id", "name", "file", "length", "gc", "n_count", "n_records", "n_chunks", "added_at")


def genome_page(con: duckdb.DuckDBPyConnection, offset: int, limit: int) -> tuple[int, list[dict[str, Any]]]:
    """The number of genomes, and `limit` of them from `offset` (by id), each with its labels."""
    total = genome_count(con)
    rows = con.execute(
        f"SELECT {', '.join(GENOME_COLUMNS)} FROM genomes ORDER BY id LIMIT ? OFFSET ?", [limit, offset]
    ).fetchall()
    genomes = [dict(zip(GENOME_COLUMNS, row, strict=True)) for row in rows]
    labels = _labels_of(con, [g["id"] for g in genomes])
    for genome in genomes:
        genome["added_at"] = genome["added_at"].isoformat()
        genome["labels"] = labels.get(genome["id"], {})
    return total, genomes


def genome_record(con: duckdb.DuckDBPyConnection, genome_id: int) -> dict[str, Any] | None:
    """One genome with its labels and records (None if there is no such genome)."""
    row = con.execute(f"SELECT {', '.join(GENOME_COLUMNS)} FROM genomes WHERE id = ?", [genome_id]).fetchall()
    if not row:
        return None
    genome = dict(zip(GENOME_COLUMNS, row[0], strict=True))
    genome["added_at"] = genome["added_at"].isoformat()
    genome["labels"] = _labels_of(con, [genome_id]).get(genome_id, {})
    columns = ("idx", "name", "description", "length", "gc", "n_count")
    records = con.execute(f"SELECT {', '.join(columns)} FROM records WHERE genome_id = ? ORDER BY idx", [genome_id])
    genome["records"] = [dict(zip(columns, r, strict=True)) for r in records.fetchall()]
    genome["sequence_stored"] = has_sequence(con, genome_id)
    return genome


def _labels_of(con: duckdb.DuckDBPyConnection, genome_ids: list[int]) -> dict[int, dict[str, str]]:
    rows = con.execute("SELECT genome_id, key, value FROM labels WHERE genome_id IN (SELECT UNNEST(?))", [genome_ids])
    out: dict[int, dict[str, str]] = {}
    for gid, key, value in rows.fetchall():
        out.setdefault(gid, {})[key] = value
    return out


def named_genome_vectors(
    con: duckdb.DuckDBPyConnection, dim: int, label: str | None
) -> tuple[list[str], np.ndarray, list[str]]:
    """Genome names (sorted), their genome vectors, and each one's value of `label` ('' if none)."""
    table = con.sql(
        "SELECT g.name, v.vector, l.value FROM genomes g JOIN genome_vectors v ON v.genome_id = g.id "
        "LEFT JOIN labels l ON l.genome_id = g.id AND l.key = $1 ORDER BY g.name",
        params=[label or ""],
    ).to_arrow_table()
    values = [v or "" for v in table.column("value").to_pylist()]
    return table.column("name").to_pylist(), to_matrix(table.column("vector"), dim), values


def summary(con: duckdb.DuckDBPyConnection) -> tuple[dict[str, int], int]:
    """Row counts of genomes, records, chunks and stored sequences (records), and the stored bases."""
    counts = {table: int(scalar(con, f"SELECT count(*) FROM {table}")) for table in ("genomes", "records", "chunks")}
    counts["sequences"] = int(scalar(con, "SELECT count(*) FROM sequences")) if has_sequences(con) else 0
    return counts, int(scalar(con, "SELECT coalesce(sum(length), 0) FROM genomes"))


def stored_genomes(con: duckdb.DuckDBPyConnection, dim: int) -> Iterator[NewGenome]:
    """Every genome of a store, with its records, chunks, vectors, sketch and labels, one at a time."""
    genomes = con.execute("SELECT id, name, file, sha256, length, gc, n_count FROM genomes ORDER BY id").fetchall()
    for gid, name, file, sha, length, gc, n_count in genomes:
        records = [
            {"name": n, "description": d, "length": ln, "gc": g, "n_count": nc}
            for n, d, ln, g, nc in con.execute(
                "SELECT name, description, length, gc, n_count FROM records WHERE genome_id = ? ORDER BY idx", [gid]
            ).fetchall()
        ]
        chunks = con.execute(
            'SELECT r.idx AS record, c.start, c."end" AS "end", c.n_tokens, c.gc, c.n_count FROM chunks c '
            "JOIN records r ON r.id = c.record_id WHERE c.genome_id = ? ORDER BY c.id",
            [gid],
        ).fetchnumpy()
        table = con.sql(
            "SELECT v.vector FROM chunk_vectors v JOIN chunks c ON c.id = v.chunk_id "
            "WHERE c.genome_id = $1 ORDER BY c.id",
            params=[gid],
        ).to_arrow_table()
        labels = dict(con.execute("SELECT key, value FROM labels WHERE genome_id = ?", [gid]).fetchall())
        hashes, scaled = con.execute("SELECT hashes, scaled FROM sketches WHERE genome_id = ?", [gid]).fetchall()[0]
        yield NewGenome(
            name, file, sha, length, gc, n_count, records, {k: np.asarray(v) for k, v in chunks.items()},
            to_matrix(table.column("vector"), dim), labels, np.asarray(hashes, dtype=np.uint64), scaled,
            packed_sequences(con, gid),
        )  # fmt: skip


# What `check` verifies in DuckDB: each problem and the count of rows that have it.
CONSISTENCY = {
    "genomes whose records do not add up to their length": """
        SELECT count(*) FROM genomes g LEFT JOIN (SELECT genome_id, sum(length) AS bp,
        count(*) AS n FROM records GROUP BY genome_id) r ON r.genome_id = g.id
        WHERE r.bp IS DISTINCT FROM g.length OR r.n IS DISTINCT FROM g.n_records""",
    "genomes whose chunk count differs from n_chunks": """
        SELECT count(*) FROM genomes g LEFT JOIN (SELECT genome_id, count(*) AS n
        FROM chunks GROUP BY genome_id) c ON c.genome_id = g.id
        WHERE c.n IS DISTINCT FROM g.n_chunks""",
    "chunks without a vector": """SELECT count(*) FROM chunks c
        LEFT JOIN chunk_vectors v ON v.chunk_id = c.id WHERE v.chunk_id IS NULL""",
    "vectors without a chunk": """SELECT count(*) FROM chunk_vectors v
        LEFT JOIN chunks c ON c.id = v.chunk_id WHERE c.id IS NULL""",
    "genomes without a genome vector": """SELECT count(*) FROM genomes g
        LEFT JOIN genome_vectors v ON v.genome_id = g.id WHERE v.genome_id IS NULL""",
    "genomes without a sketch": """SELECT count(*) FROM genomes g
        LEFT JOIN sketches s ON s.genome_id = g.id WHERE s.genome_id IS NULL""",
    "rows of genomes that do not exist": """SELECT (SELECT count(*) FROM records WHERE
        genome_id NOT IN (SELECT id FROM genomes)) + (SELECT count(*) FROM chunks WHERE
        genome_id NOT IN (SELECT id FROM genomes)) + (SELECT count(*) FROM genome_vectors WHERE
        genome_id NOT IN (SELECT id FROM genomes)) + (SELECT count(*) FROM sketches WHERE
        genome_id NOT IN (SELECT id FROM genomes)) + (SELECT count(*) FROM labels WHERE
        genome_id NOT IN (SELECT id FROM genomes))""",
}
COVERAGE = {  # only for stores without overlapping windows
    "records not covered exactly once by their chunks": """
        SELECT count(*) FROM records r LEFT JOIN (SELECT record_id,
        sum("end" - start) AS bp, min(start) AS lo, max("end") AS hi FROM chunks
        GROUP BY record_id) c ON c.record_id = r.id
        WHERE c.bp IS DISTINCT FROM r.length OR c.lo <> 0 OR c.hi <> r.length""",
}


SEQUENCES = {  # only for stores that keep sequences
    "genomes whose sequences cover only some of their records": """
        SELECT count(*) FROM (SELECT g.id FROM genomes g JOIN records r ON r.genome_id = g.id
        LEFT JOIN sequences s ON s.record_id = r.id GROUP BY g.id
        HAVING count(s.record_id) NOT IN (0, count(*)))""",
    "sequences without their record, or of another length": """
        SELECT count(*) FROM sequences s LEFT JOIN records r ON r.id = s.record_id
        WHERE r.length IS DISTINCT FROM s.length OR r.genome_id IS DISTINCT FROM s.genome_id
        OR octet_length(s.packed) <> (s.length + 3) // 4 OR len(s.n_starts) <> len(s.n_ends)""",
}


def inconsistencies(con: duckdb.DuckDBPyConnection, settings: StoreSettings) -> list[str]:
    """'<count> <problem>' for each problem of CONSISTENCY (COVERAGE, SEQUENCES) that some rows have."""
    checks = {
        **CONSISTENCY, **(COVERAGE if settings.overlap == 0 else {}), **(SEQUENCES if has_sequences(con) else {})
    }  # fmt: skip
    dim = settings.dim
    width = f"octet_length(vector) <> {2 * dim}" if settings.vector_dtype == "float16" else f"len(vector) <> {dim}"
    checks["chunk vectors of another width than the store's"] = f"SELECT count(*) FROM chunk_vectors WHERE {width}"
    problems = []
    for problem, statement in checks.items():
        count = scalar(con, statement)
        if count:
            problems.append(f"{count} {problem}")
    return problems
