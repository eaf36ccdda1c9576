"""Reads: every query the library runs against a store, on an open connection."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from genome_index.errors import GenomeIndexError, first_line
from genome_index.io.sequences import PackedSequence, unpack
from genome_index.settings import StoreSettings
from genome_index.store.rows import NewGenome
from genome_index.store.schema import has_sequences, has_table
from genome_index.store.vector_files import VectorFiles, beside
from genome_index.store.vectors import to_matrix

KINDS = {"chunks": ("chunks", "chunk_vectors", "chunk_id"), "genomes": ("genomes", "genome_vectors", "genome_id")}


GENOME_COLUMNS = ("id", "name", "file", "length", "gc", "n_count", "n_records", "n_chunks", "added_at")


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
# The running sums centring reads (`vector_sums`, where the store has them): derived from the
# vectors, so `reindex` recounts them.
VECTOR_SUMS = "running vector sums that count other than the store's chunks or genomes"
VECTOR_SUMS_CHECK = """SELECT count(*) FROM vector_sums s WHERE s.n <> CASE s.kind
    WHEN 'chunks' THEN (SELECT count(*) FROM chunks) ELSE (SELECT count(*) FROM genomes) END"""
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


class StoreReader:
    """A read session on a store: every query the library runs against it, on one connection
    that no code above `store` sees. Made by `Store.reading()`, `Store.writing()` and `Store.session()`."""

    def __init__(self, con: duckdb.DuckDBPyConnection, directory: Path | None = None) -> None:
        """A reader of the connection `con` to the store in `directory`; where the store keeps
        its chunk vectors in files, the files of this snapshot are its `chunk_vectors`."""
        self._con, self._directory = con, directory
        self.vector_files: VectorFiles | None = None
        self._view_current = False  # whether `chunk_vectors` is registered for this snapshot
        try:
            if directory is not None and beside(con):
                settings = self.settings()
                self.vector_files = VectorFiles(directory, settings.dim, settings.vector_dtype)
        except duckdb.Error:  # a damaged database: `check` reads every table and names it
            self.vector_files = None

    def _table(self, name: str) -> str:
        """`name`, for SQL about to read it: where it is the view of the vector files, registered
        first (on first use only: pyarrow.dataset takes a quarter of a second to import)."""
        if name == "chunk_vectors" and self.vector_files is not None and not self._view_current:
            self.vector_files.register(self._con)
            self._view_current = True
        return name

    @contextlib.contextmanager
    def cursor(self) -> Iterator[StoreReader]:
        """A reader on its own cursor of the same connection: what another thread reads with."""
        with self._con.cursor() as cursor:
            yield StoreReader(cursor, self._directory)

    def settings(self) -> StoreSettings:
        """The store's fixed settings (stores older than a setting read with its old value)."""
        return StoreSettings.from_rows(dict(self._con.execute("SELECT key, value FROM settings").fetchall()))

    def scalar(self, statement: str, params: list[Any] | None = None) -> Any:
        return self._con.execute(statement, params or []).fetchall()[0][0]

    def genome_count(self) -> int:
        return int(self.scalar("SELECT count(*) FROM genomes"))

    def genomes_by_sha(self) -> dict[str, tuple[int, str, str]]:
        """SHA-256 -> (id, name, file) of every stored genome."""
        rows = self._con.execute("SELECT sha256, id, name, file FROM genomes").fetchall()
        return {sha: (gid, name, file) for sha, gid, name, file in rows}

    def genome_with_sha(self, sha256: str) -> tuple[int, str] | None:
        """(id, name) of the stored genome with this sequence hash, if any."""
        rows = self._con.execute("SELECT id, name FROM genomes WHERE sha256 = ?", [sha256]).fetchall()
        return (int(rows[0][0]), rows[0][1]) if rows else None

    def genome_files(self) -> dict[str, tuple[str, str]]:
        """Genome name -> (file it was read from, SHA-256 of its sequence)."""
        return {
            name: (file, sha)
            for name, file, sha in self._con.execute("SELECT name, file, sha256 FROM genomes").fetchall()
        }

    def find_genome(self, ident: str) -> int | None:
        """The genome `ident` means: `id:N`, `name:X`, or a bare name or id that is not both
        (a bare text that is one genome's id and another's name is refused, naming both)."""
        names = self.genome_names()
        kind, _, value = ident.partition(":") if ident.startswith(("id:", "name:")) else ("", "", ident)
        as_id = int(value) if value.isdigit() and int(value) in names and kind != "name" else None
        as_name = next((gid for gid, name in names.items() if name == value), None) if kind != "id" else None
        if as_id is not None and as_name is not None and as_id != as_name:
            raise GenomeIndexError(
                f"{ident!r} is the id of genome {names[as_id]!r} and the name of genome {as_name}: "
                f"write id:{value} or name:{value}"
            )
        return as_id if as_id is not None else as_name

    def genome_names(self) -> dict[int, str]:
        return dict(self._con.execute("SELECT id, name FROM genomes ORDER BY id").fetchall())

    def ids(self, kind: str) -> np.ndarray:
        """The sorted DuckDB ids of one kind ('chunks' or 'genomes'): what its FAISS file must hold."""
        table = KINDS[kind][0]
        return np.asarray(self._con.execute(f"SELECT id FROM {table} ORDER BY id").fetchnumpy()["id"], dtype=np.int64)

    def vectors(self, kind: str, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """All ids and vectors of one kind, ordered by id."""
        _, table, column = KINDS[kind]
        result = self._con.sql(f"SELECT {column} AS id, vector FROM {self._table(table)} ORDER BY id").to_arrow_table()
        return result.column("id").to_numpy().astype(np.int64), to_matrix(result.column("vector"), dim)

    def vector_blocks(self, kind: str, dim: int, rows: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every id and vector of one kind, in the table's order, `rows` at a time (streamed: a
        rewrite of a store of millions holds one block; sorting them would hold them all)."""
        import pyarrow as pa

        _, table, column = KINDS[kind]
        batches = self._con.sql(f"SELECT {column} AS id, vector FROM {self._table(table)}").to_arrow_reader(rows)
        for batch in batches:
            ids = batch.column("id").to_numpy().astype(np.int64)
            yield ids, to_matrix(pa.chunked_array([batch.column("vector")]), dim)

    def sample_vectors(self, kind: str, n: int, dim: int) -> np.ndarray:
        """Up to `n` stored vectors of one kind drawn at random (the same draw for the same
        table): what quantizers are trained on."""
        _, table, _ = KINDS[kind]
        result = self._con.sql(
            f"SELECT vector FROM {self._table(table)} USING SAMPLE reservoir({int(n)} ROWS) REPEATABLE (7)"
        ).to_arrow_table()
        return to_matrix(result.column("vector"), dim)

    def vectors_of(self, kind: str, ids: np.ndarray, dim: int) -> np.ndarray:
        """Stored vectors of the given ids (sorted ascending) of one kind, in that order."""
        if kind == "chunks" and self.vector_files is not None:
            return to_matrix(self.vector_files.read(self._con, ids).column("vector"), dim)
        _, table, column = KINDS[kind]
        result = self._con.sql(
            f"SELECT vector FROM {table} WHERE {column} IN (SELECT UNNEST($1)) ORDER BY {column}",
            params=[np.asarray(ids).tolist()],
        ).to_arrow_table()
        return to_matrix(result.column("vector"), dim)

    def chunk_vectors(self, chunk_ids: np.ndarray, dim: int) -> np.ndarray:
        """Stored vectors of the given chunk ids (sorted ascending), in that order."""
        return self.vectors_of("chunks", chunk_ids, dim)

    def chunk_genomes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every chunk id (ascending), the genome each lies in, and where in it: rows of (record's
        number in its genome, start, end). What a searcher keeps in memory."""
        table = self._con.execute(
            """SELECT c.id, c.genome_id, r.number, c.start, c."end" FROM chunks c
               JOIN (SELECT id, row_number() OVER (PARTITION BY genome_id ORDER BY idx) - 1 AS number FROM records) r
               ON r.id = c.record_id ORDER BY c.id"""
        ).fetchnumpy()
        windows = np.stack([np.asarray(table[name], dtype=np.int64) for name in ("number", "start", "end")], axis=1)
        return np.asarray(table["id"], dtype=np.int64), np.asarray(table["genome_id"], dtype=np.int64), windows

    def genomes_with_sequences(self) -> list[int]:
        """Ids of the genomes whose sequences the store keeps."""
        if not has_sequences(self._con):
            return []
        return [gid for (gid,) in self._con.execute("SELECT DISTINCT genome_id FROM sequences").fetchall()]

    def genomes_of_chunks(self, chunk_ids: list[int]) -> dict[int, int]:
        """chunk id -> genome id."""
        rows = self._con.execute("SELECT id, genome_id FROM chunks WHERE id IN (SELECT UNNEST(?))", [chunk_ids])
        return dict(rows.fetchall())

    def vector_means(self, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """Mean of all normalised chunk vectors, and mean of the genome vectors (for centring):
        from the running sums every write keeps; a store older than them is read in full."""
        if has_table(self._con, "vector_sums"):
            sums = {kind: (n, total) for kind, n, total in self._con.execute("SELECT * FROM vector_sums").fetchall()}
            chunks, genomes = (
                (np.asarray(sums[kind][1], np.float64) / max(sums[kind][0], 1)).astype(np.float32)
                for kind in ("chunks", "genomes")
            )
            return chunks, genomes
        table = self._con.sql("SELECT vector, chunk_sum FROM genome_vectors").to_arrow_table()
        sums = to_matrix(table.column("chunk_sum"), dim).astype(np.float64)
        count = self.scalar("SELECT count(*) FROM chunks")
        genome_mean = to_matrix(table.column("vector"), dim).astype(np.float64).mean(axis=0)
        return (sums.sum(axis=0) / max(count, 1)).astype(np.float32), genome_mean.astype(np.float32)

    def sketch_hashes(self, genome_ids: list[int]) -> dict[int, list[int]]:
        rows = self._con.execute(
            "SELECT genome_id, hashes FROM sketches WHERE genome_id IN (SELECT UNNEST(?))", [genome_ids]
        )
        return dict(rows.fetchall())

    def packed_sequences(self, genome_id: int) -> list[PackedSequence] | None:
        """The stored sequences of one genome's records in order; None where the store keeps none."""
        if not has_sequences(self._con):
            return None
        rows = self._con.execute(  # record ids follow the records' order in their genome
            "SELECT length, packed, n_starts, n_ends, line_width FROM sequences WHERE genome_id = ? ORDER BY record_id",
            [genome_id],
        ).fetchall()
        if not rows:
            return None
        return [
            PackedSequence(length, packed, np.asarray(starts, np.int64), np.asarray(ends, np.int64), width)
            for length, packed, starts, ends, width in rows
        ]

    def has_sequence(self, genome_id: int) -> bool:
        """Whether the store keeps this genome's sequence."""
        if not has_sequences(self._con):
            return False
        return bool(self.scalar("SELECT count(*) FROM sequences WHERE genome_id = ?", [genome_id]))

    def records_of(self, genome_id: int) -> list[tuple[str, str, int]]:
        """(name, description, length) of one genome's records, in file order."""
        rows = self._con.execute(
            "SELECT name, description, length FROM records WHERE genome_id = ? ORDER BY idx", [genome_id]
        )
        return rows.fetchall()

    def genomes_without_sequences(self) -> dict[str, int]:
        """SHA-256 -> id of the genomes whose sequences the store does not keep (built before it did)."""
        if not has_sequences(self._con):
            return {sha: gid for sha, gid in self._con.execute("SELECT sha256, id FROM genomes").fetchall()}
        rows = self._con.execute("SELECT sha256, id FROM genomes WHERE id NOT IN (SELECT genome_id FROM sequences)")
        return dict(rows.fetchall())

    def sequence_mismatches(self) -> list[str]:
        """Names of the genomes whose stored sequences do not hash to their sha256 (read one at a time)."""
        import hashlib

        if not has_sequences(self._con):
            return []
        bad = []
        genomes = "SELECT id, name, sha256 FROM genomes WHERE id IN (SELECT genome_id FROM sequences) ORDER BY id"
        for gid, name, sha in self._con.execute(genomes).fetchall():
            digest = hashlib.sha256()
            for stored in self.packed_sequences(gid) or []:
                digest.update(unpack(stored))
                digest.update(b">")
            if digest.hexdigest() != sha:
                bad.append(name)
        return bad

    def label_keys(self) -> list[str]:
        return [k for (k,) in self._con.execute("SELECT DISTINCT key FROM labels ORDER BY key").fetchall()]

    def label_values(self, key: str) -> dict[str, str]:
        """Genome name -> its value of one label (genomes without it are left out)."""
        rows = self._con.execute(
            "SELECT g.name, l.value FROM labels l JOIN genomes g ON g.id = l.genome_id WHERE l.key = ?", [key]
        )
        return dict(rows.fetchall())

    def change_signature(self) -> tuple:
        """What changes when genomes are added or removed or labels set: a searcher reloads its
        indexes and details when this does."""
        return self._con.execute(
            "SELECT (SELECT count(*) FROM genomes), (SELECT coalesce(max(id), 0) FROM genomes), "
            "(SELECT count(*) FROM labels), (SELECT coalesce(sum(hash(genome_id, key, value)), 0) FROM labels)"
        ).fetchall()[0]

    def genome_details(self) -> dict[int, dict[str, Any]]:
        """Genome id -> name, file, length and every label key (None where the genome has none)."""
        keys = self.label_keys()
        details = {
            gid: {"name": name, "file": file, "length": length, "labels": dict.fromkeys(keys)}
            for gid, name, file, length in self._con.execute("SELECT id, name, file, length FROM genomes").fetchall()
        }
        for gid, key, value in self._con.execute("SELECT genome_id, key, value FROM labels").fetchall():
            details[gid]["labels"][key] = value
        return details

    def genome_page(self, offset: int, limit: int) -> tuple[int, list[dict[str, Any]]]:
        """The number of genomes, and `limit` of them from `offset` (by id), each with its labels."""
        total = self.genome_count()
        rows = self._con.execute(
            f"SELECT {', '.join(GENOME_COLUMNS)} FROM genomes ORDER BY id LIMIT ? OFFSET ?", [limit, offset]
        ).fetchall()
        genomes = [dict(zip(GENOME_COLUMNS, row, strict=True)) for row in rows]
        labels = self._labels_of([g["id"] for g in genomes])
        for genome in genomes:
            genome["added_at"] = genome["added_at"].isoformat()
            genome["labels"] = labels.get(genome["id"], {})
        return total, genomes

    def genome_record(self, genome_id: int) -> dict[str, Any] | None:
        """One genome with its labels and records (None if there is no such genome)."""
        row = self._con.execute(f"SELECT {', '.join(GENOME_COLUMNS)} FROM genomes WHERE id = ?", [genome_id]).fetchall()
        if not row:
            return None
        genome = dict(zip(GENOME_COLUMNS, row[0], strict=True))
        genome["added_at"] = genome["added_at"].isoformat()
        genome["labels"] = self._labels_of([genome_id]).get(genome_id, {})
        columns = ("idx", "name", "description", "length", "gc", "n_count")
        records = self._con.execute(
            f"SELECT {', '.join(columns)} FROM records WHERE genome_id = ? ORDER BY idx", [genome_id]
        )
        genome["records"] = [dict(zip(columns, r, strict=True)) for r in records.fetchall()]
        genome["sequence_stored"] = self.has_sequence(genome_id)
        return genome

    def _labels_of(self, genome_ids: list[int]) -> dict[int, dict[str, str]]:
        rows = self._con.execute(
            "SELECT genome_id, key, value FROM labels WHERE genome_id IN (SELECT UNNEST(?))", [genome_ids]
        )
        out: dict[int, dict[str, str]] = {}
        for gid, key, value in rows.fetchall():
            out.setdefault(gid, {})[key] = value
        return out

    def named_genome_vectors(self, dim: int, label: str | None) -> tuple[list[str], np.ndarray, list[str]]:
        """Genome names (sorted), their genome vectors, and each one's value of `label` ('' if none)."""
        table = self._con.sql(
            "SELECT g.name, v.vector, l.value FROM genomes g JOIN genome_vectors v ON v.genome_id = g.id "
            "LEFT JOIN labels l ON l.genome_id = g.id AND l.key = $1 ORDER BY g.name",
            params=[label or ""],
        ).to_arrow_table()
        values = [v or "" for v in table.column("value").to_pylist()]
        return table.column("name").to_pylist(), to_matrix(table.column("vector"), dim), values

    def summary(self) -> tuple[dict[str, int], int]:
        """Row counts of genomes, records, chunks and stored sequences (records), and the stored bases."""
        counts = {
            table: int(self.scalar(f"SELECT count(*) FROM {table}")) for table in ("genomes", "records", "chunks")
        }
        counts["sequences"] = int(self.scalar("SELECT count(*) FROM sequences")) if has_sequences(self._con) else 0
        return counts, int(self.scalar("SELECT coalesce(sum(length), 0) FROM genomes"))

    def stored_genomes(self, dim: int) -> Iterator[NewGenome]:
        """Every genome of a store, with its records, chunks, vectors, sketch and labels, one at a time."""
        genomes = self._con.execute(
            "SELECT id, name, file, sha256, length, gc, n_count FROM genomes ORDER BY id"
        ).fetchall()
        for gid, name, file, sha, length, gc, n_count in genomes:
            records = [
                {"name": n, "description": d, "length": ln, "gc": g, "n_count": nc}
                for n, d, ln, g, nc in self._con.execute(
                    "SELECT name, description, length, gc, n_count FROM records WHERE genome_id = ? ORDER BY idx", [gid]
                ).fetchall()
            ]
            chunks = self._con.execute(
                'SELECT c.id, r.idx AS record, c.start, c."end" AS "end", c.n_tokens, c.gc, c.n_count FROM chunks c '
                "JOIN records r ON r.id = c.record_id WHERE c.genome_id = ? ORDER BY c.id",
                [gid],
            ).fetchnumpy()
            vectors = self.vectors_of("chunks", np.asarray(chunks.pop("id"), dtype=np.int64), dim)
            labels = dict(self._con.execute("SELECT key, value FROM labels WHERE genome_id = ?", [gid]).fetchall())
            hashes, scaled = self._con.execute(
                "SELECT hashes, scaled FROM sketches WHERE genome_id = ?", [gid]
            ).fetchall()[0]
            yield NewGenome(
                name, file, sha, length, gc, n_count, records, {k: np.asarray(v) for k, v in chunks.items()},
                vectors, labels, np.asarray(hashes, dtype=np.uint64), scaled,
                self.packed_sequences(gid),
            )  # fmt: skip

    # What `check` verifies in DuckDB: each problem and the count of rows that have it.

    def unreadable_table(self, tables: tuple[str, ...]) -> str | None:
        """Read every row of `tables` (DuckDB checks every block's checksum on the way): what
        failed, or None when all of them read."""
        for table in (t for t in tables if has_table(self._con, t)):  # older stores lack some
            try:
                for _ in self._con.sql(f"SELECT * FROM {table}").to_arrow_reader(65_536):
                    pass
            except duckdb.Error as exc:
                return f"reading {table} fails ({first_line(exc)})"
        return None

    def copy_rows(self, target: duckdb.DuckDBPyConnection, tables: tuple[str, ...]) -> None:
        """Every row of `tables` into the same tables of `target` (columns by name), streamed."""
        for table in tables:
            rows = self._con.sql(f"SELECT * FROM {table}").to_arrow_reader(65_536)
            target.register("incoming", rows)
            target.execute(f"INSERT INTO {table} BY NAME SELECT * FROM incoming")
            target.unregister("incoming")

    def vector_file_problems(self, exact: bool) -> list[str]:
        """The store's vector files that are missing, of another size or (`exact`: read in full)
        other bytes than listed; none where the store keeps its vectors in its table."""
        if self.vector_files is None:
            return []
        return self.vector_files.damaged(self.vector_files.listed(self._con), exact)

    def inconsistencies(self, settings: StoreSettings) -> list[str]:
        """'<count> <problem>' for each problem of CONSISTENCY (COVERAGE, SEQUENCES) that some rows have."""
        sequences = SEQUENCES if has_sequences(self._con) else {}
        checks = {**CONSISTENCY, **(COVERAGE if settings.overlap == 0 else {}), **sequences}
        if has_table(self._con, "vector_sums"):
            checks[VECTOR_SUMS] = VECTOR_SUMS_CHECK
        dim = settings.dim
        width = f"octet_length(vector) <> {2 * dim}" if settings.vector_dtype == "float16" else f"len(vector) <> {dim}"
        checks["chunk vectors of another width than the store's"] = f"SELECT count(*) FROM chunk_vectors WHERE {width}"
        self._table("chunk_vectors")
        problems = []
        for problem, statement in checks.items():
            count = self.scalar(statement)
            if count:
                problems.append(f"{count} {problem}")
        return problems
