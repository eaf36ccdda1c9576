"""`GenomeIndex`: the Python API behind every command (build, query, sql, info, remove, reindex)."""

from __future__ import annotations

import csv
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import faiss
import numpy as np

from genome_index import __version__
from genome_index.embed import POOLING, EmbeddedGenome, Embedder
from genome_index.errors import GenomeIndexError
from genome_index.fasta import Genome, find_fasta_files, gc_fraction, read_genome
from genome_index.models import DEFAULT_MODEL
from genome_index.search import MODES, queries_of, rank_chunk_mode, rank_genome_mode, strand_chunks
from genome_index.store import (
    DB_FILE,
    FAISS_FILES,
    FORMAT_VERSION,
    LOCK_FILE,
    BuildLock,
    NewGenome,
    Store,
    genome_vector,
    normalise,
)

log = logging.getLogger("genome_index")

DEFAULT_INDEX = "genome-index"
FAISS_CHECKPOINT_SECONDS = 60.0


def default_index_dir() -> Path:
    """`$GENOME_INDEX`, else ./genome-index."""
    return Path(os.environ.get("GENOME_INDEX") or DEFAULT_INDEX)


@dataclass
class BuildReport:
    """What a build did: genomes added, skipped as already stored, or duplicates of another file."""

    added: list[tuple[str, int, int]] = field(default_factory=list)  # name, genome id, chunks
    already: list[tuple[str, str]] = field(default_factory=list)  # file, stored genome name
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # file, name of the same sequence
    labelled: int = 0
    bases: int = 0
    seconds: float = 0.0


def read_labels(path: Path) -> dict[str, dict[str, str]]:
    """Labels CSV -> {file name or genome name: {column: value}}; needs a `file` or `name` column."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            key = "file" if "file" in columns else "name" if "name" in columns else None
            if key is None:
                raise GenomeIndexError(f"{path}: labels CSV needs a 'file' or 'name' column (has {columns})")
            rows = list(reader)
    except OSError as exc:
        raise GenomeIndexError(f"{path}: cannot read labels ({exc.strerror})") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise GenomeIndexError(f"{path}: not a readable CSV file ({exc})") from None
    labels = {}
    for line, row in enumerate(rows, start=2):
        ident = (row.get(key) or "").strip()
        if not ident:
            raise GenomeIndexError(f"{path}:{line}: empty {key!r}")
        labels[ident] = {k: v for k, v in row.items() if k not in ("file", "name") and k is not None}
    return labels


Progress = Callable[[str, int, int], None]


def check_inputs(files: list[Path], on_progress: Progress | None = None) -> list[str]:
    """Read and validate every FASTA file (raising on the first bad one); their SHA-256s."""
    shas = []
    for path in files:
        genome = read_genome(path)
        shas.append(genome.sha256)
        if on_progress:
            on_progress("check", genome.length, len(files))
    return shas


def _label_keys(genome: Genome) -> list[str]:
    """The names a labels CSV may use for a genome: file name, path, and genome name."""
    return [genome.path.name, str(genome.path), genome.name]


def _chunk_table(genome: Genome, item: EmbeddedGenome) -> dict[str, np.ndarray]:
    columns: dict[str, list[Any]] = {k: [] for k in ("record", "start", "end", "n_tokens", "gc", "n_count")}
    for chunk in item.chunks:
        piece = genome.records[chunk.record].sequence[chunk.start : chunk.end]
        for key, value in (
            ("record", chunk.record),
            ("start", chunk.start),
            ("end", chunk.end),
            ("n_tokens", chunk.n_tokens),
            ("gc", gc_fraction(piece)),
            ("n_count", piece.count(b"N")),
        ):
            columns[key].append(value)
    return {k: np.asarray(v) for k, v in columns.items()}


def _new_genome(item: EmbeddedGenome, labels: dict[str, str]) -> NewGenome:
    genome = item.genome
    return NewGenome(
        name=genome.name,
        file=str(genome.path),
        sha256=genome.sha256,
        length=genome.length,
        gc=genome.gc,
        n_count=genome.n_count,
        records=[
            {
                "name": r.id,
                "description": r.description,
                "length": len(r.sequence),
                "gc": gc_fraction(r.sequence),
                "n_count": r.sequence.count(b"N"),
            }
            for r in genome.records
        ],
        chunks=_chunk_table(genome, item),
        vectors=item.vectors,
        labels=labels,
    )


class GenomeIndex:
    """One store on disk. Every method opens what it needs and closes it again."""

    def __init__(self, directory: str | Path | None = None) -> None:
        self.store = Store(directory if directory is not None else default_index_dir())

    @classmethod
    def open(cls, directory: str | Path | None = None) -> GenomeIndex:
        """An existing store (one clear error when there is none)."""
        index = cls(directory)
        index.store.require()
        return index

    @property
    def directory(self) -> Path:
        return self.store.directory

    def settings(self) -> dict[str, str]:
        self.store.require()
        with self.store.connect() as con:
            return Store.settings(con)

    # -- build ----------------------------------------------------------------------------

    def _check_directory(self) -> None:
        """Refuse to turn an unrelated, non-empty folder into a store."""
        folder = self.directory
        if folder.exists() and not folder.is_dir():
            raise GenomeIndexError(f"{folder}: exists and is not a folder")
        if folder.is_dir() and not self.store.exists():
            ours = {LOCK_FILE, DB_FILE + ".creating", *FAISS_FILES.values()}
            others = [p.name for p in folder.iterdir() if p.name not in ours]
            if others:
                raise GenomeIndexError(
                    f"{folder} is not a genome-index store and not empty (has {others[0]!r}); "
                    "choose another --index"
                )

    def build(
        self,
        paths: Sequence[str | Path],
        *,
        model: str | None = None,
        layer: int | None = None,
        chunk_tokens: int | None = None,
        overlap: int | None = None,
        device: str = "auto",
        dtype: str = "auto",
        batch_tokens: int | None = None,
        labels: str | Path | None = None,
        trust_remote_code: bool = False,
        on_progress: Progress | None = None,
    ) -> BuildReport:
        """Embed and add every new genome under `paths`; the first build fixes the settings.

        Every input is read and checked before the store is touched, so a bad file changes
        nothing. `on_progress(stage, bases, total)` is called per genome checked ("check")
        and per genome embedded ("embed"), with the number of genomes in that stage.
        """
        started = time.perf_counter()
        files = find_fasta_files(list(paths))
        label_rows = read_labels(Path(labels)) if labels else {}
        self._check_directory()
        shas = check_inputs(files, on_progress)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise GenomeIndexError(f"{self.directory}: cannot create ({exc.strerror})") from None
        lock = BuildLock(self.directory)
        lock.acquire()
        try:
            stored = self.settings() if self.store.exists() else {}
            if stored:  # unspecified options follow the store
                model = model or stored["model_source"]
                layer = int(stored["layer"]) if layer is None else layer
                chunk_tokens = int(stored["chunk_tokens"]) if chunk_tokens is None else chunk_tokens
                overlap = int(stored["overlap"]) if overlap is None else overlap
            embedder = Embedder(
                model or DEFAULT_MODEL,
                layer,
                device,
                dtype,
                batch_tokens,
                chunk_tokens,
                overlap or 0,
                trust_remote_code,
            )
            wanted = self._settings_for(embedder, trust_remote_code)
            if stored:
                Store.check_settings(stored, wanted)
            else:
                self.store.create(wanted)
            return self._build_locked(files, shas, embedder, label_rows, on_progress, started)
        finally:
            lock.release()

    @staticmethod
    def _settings_for(embedder: Embedder, trust_remote_code: bool) -> dict[str, str]:
        """The settings a build with this embedder fixes (or must match) in the store."""
        return {
            "model": embedder.spec.name,
            "model_source": embedder.spec.source,
            "model_revision": embedder.spec.revision,
            "layer": str(embedder.layer),
            "pooling": POOLING,
            "chunk_tokens": str(embedder.chunk_tokens),
            "overlap": str(embedder.overlap),
            "dim": str(embedder.dim),
            "metric": "cosine",
            "index_type": "flat",
            "trust_remote_code": str(trust_remote_code).lower(),
            "tool_version": __version__,
            "format_version": FORMAT_VERSION,
        }

    def _build_locked(
        self,
        files: list[Path],
        shas: list[str],
        embedder: Embedder,
        label_rows: dict[str, dict[str, str]],
        on_progress: Progress | None,
        started: float,
    ) -> BuildReport:
        report = BuildReport()
        dim = embedder.dim
        with self.store.connect(read_only=False) as con:
            by_sha = dict(con.execute("SELECT sha256, name FROM genomes").fetchall())
            by_name = dict(con.execute("SELECT name, id FROM genomes").fetchall())
            by_file = dict(con.execute("SELECT file, id FROM genomes").fetchall())
            self._check_label_names(label_rows, files, by_name, by_file)
            indexes = {}
            dirty = set()
            for kind in FAISS_FILES:
                indexes[kind], rebuilt = self.store.load_faiss(con, kind, dim)
                if rebuilt:
                    dirty.add(kind)
            seen_in_run: dict[str, str] = {}
            last_write = time.perf_counter()
            to_embed = len({sha for sha in shas if sha not in by_sha})

            def want(genome: Genome) -> bool:
                sha = genome.sha256
                if sha in by_sha:
                    target = report.already if by_sha[sha] == genome.name else report.duplicates
                    target.append((str(genome.path), by_sha[sha]))
                    self._relabel(con, label_rows, genome, by_name.get(by_sha[sha]), report)
                    return False
                if sha in seen_in_run:
                    report.duplicates.append((str(genome.path), seen_in_run[sha]))
                    return False
                seen_in_run[sha] = genome.name
                return True

            for item in embedder.embed_genomes(files, want=want):
                genome = item.genome
                labels = next((label_rows[k] for k in _label_keys(genome) if k in label_rows), {})
                genome_id, chunk_ids = self.store.add_genome(con, _new_genome(item, labels))
                by_sha[genome.sha256] = genome.name
                by_name[genome.name] = genome_id
                report.added.append((genome.name, genome_id, len(chunk_ids)))
                report.labelled += bool(labels)
                report.bases += genome.length
                indexes["chunks"].add_with_ids(normalise(item.vectors), chunk_ids)
                indexes["genomes"].add_with_ids(
                    genome_vector(item.vectors)[None, :], np.array([genome_id], dtype=np.int64)
                )
                dirty.update(FAISS_FILES)
                if on_progress:
                    on_progress("embed", genome.length, to_embed)
                if time.perf_counter() - last_write > FAISS_CHECKPOINT_SECONDS:
                    self._write_indexes(indexes, dirty)
                    last_write = time.perf_counter()
            self._write_indexes(indexes, dirty)
        report.seconds = time.perf_counter() - started
        return report

    def _write_indexes(self, indexes: dict[str, Any], dirty: set[str]) -> None:
        for kind in sorted(dirty):
            self.store.write_faiss(kind, indexes[kind])
        dirty.clear()

    @staticmethod
    def _check_label_names(
        label_rows: dict[str, dict[str, str]], files: list[Path], by_name: dict, by_file: dict
    ) -> None:
        known = set(by_name) | set(by_file)
        for path in files:
            known.update(_label_keys(Genome(path)))
            known.add(str(path.resolve()))
        unknown = sorted(set(label_rows) - known)
        if unknown:
            raise GenomeIndexError(
                f"labels name {len(unknown)} genome(s) neither in this build nor in the store, "
                f"e.g. {unknown[0]!r}"
            )

    def _relabel(
        self,
        con: duckdb.DuckDBPyConnection,
        label_rows: dict,
        genome: Genome,
        genome_id: int | None,
        report: BuildReport,
    ) -> None:
        """Labels given for a genome that is already stored update its labels."""
        labels = next((label_rows[k] for k in _label_keys(genome) if k in label_rows), None)
        if labels and genome_id is not None:
            con.execute("BEGIN")
            Store.set_labels(con, genome_id, labels)
            con.execute("COMMIT")
            report.labelled += 1

    # -- reading --------------------------------------------------------------------------

    def query(
        self,
        fasta: str | Path,
        k: int = 10,
        mode: str = "genome",
        per_record: bool = False,
        device: str = "auto",
        dtype: str = "auto",
        model: str | None = None,
        batch_tokens: int | None = None,
    ) -> list[dict[str, Any]]:
        """Nearest stored genomes to the sequence(s) in `fasta`, best first, `k` per query."""
        if mode not in MODES:
            raise GenomeIndexError(f"unknown mode {mode!r}: use {' or '.join(MODES)}")
        if k < 1:
            raise GenomeIndexError("-k must be at least 1")
        self.store.require()
        genome = read_genome(fasta)
        settings = self.settings()
        embedder = self._embedder(settings, model, device, dtype, batch_tokens)
        queries = queries_of(genome, per_record)
        chunk_sets = [strand_chunks(embedder, q) for q in queries]
        flat = [c for strands in chunk_sets for chunks in strands for c in chunks]
        vectors = embedder.embed_chunks(flat)
        dim = int(settings["dim"])
        rows: list[dict[str, Any]] = []
        with self.store.connect() as con:
            kind = "genomes" if mode == "genome" else "chunks"
            index, rebuilt = self.store.load_faiss(con, kind, dim)
            if rebuilt:
                self._save_repair(kind, index)
            if index.ntotal == 0:
                raise GenomeIndexError(f"{self.directory}: the store holds no genomes yet")
            offset = 0
            ranked_per_query = []
            for strands in chunk_sets:
                strand_vectors = []
                for chunks in strands:
                    strand_vectors.append(vectors[offset : offset + len(chunks)])
                    offset += len(chunks)
                if mode == "genome":
                    ranked_per_query.append(rank_genome_mode(index, strand_vectors, k))
                else:
                    ranked_per_query.append((strand_vectors, None))
            if mode == "chunks":
                ranked_per_query = [
                    rank_chunk_mode(index, sv, lambda ids: self._genome_of(con, ids))
                    for sv, _ in ranked_per_query
                ]
            details = self._genome_details(con)
        for query, ranked in zip(queries, ranked_per_query, strict=True):
            order = sorted(ranked.items(), key=lambda item: (-item[1][0], -item[1][1], item[0]))[:k]
            for rank, (gid, (score, support)) in enumerate(order, start=1):
                row: dict[str, Any] = {"query": query.name} if per_record else {}
                row.update(
                    {
                        "rank": rank,
                        "genome_id": gid,
                        "name": details[gid]["name"],
                        "file": details[gid]["file"],
                        "score": round(score, 6),
                    }
                )
                if mode == "chunks":
                    row["support"] = support
                row.update(details[gid]["labels"])
                rows.append(row)
        return rows

    def _save_repair(self, kind: str, index: Any) -> None:
        """Persist a FAISS file repaired during a read, unless a writer holds the store."""
        lock = BuildLock(self.directory)
        try:
            lock.acquire()
        except GenomeIndexError:
            return
        try:
            self.store.write_faiss(kind, index)
        except GenomeIndexError as exc:
            log.warning("notice: %s", exc)
        finally:
            lock.release()

    def _embedder(
        self, settings: dict[str, str], model: str | None, device: str, dtype: str, batch_tokens: int | None
    ) -> Embedder:
        """The store's own model, layer and chunking; a --model that is not the store's is refused."""
        source = settings["model_source"]
        embedder = Embedder(
            model or source,
            int(settings["layer"]),
            device,
            dtype,
            batch_tokens,
            int(settings["chunk_tokens"]),
            int(settings["overlap"]),
            settings.get("trust_remote_code") == "true",
        )
        if embedder.spec.revision != settings["model_revision"]:
            raise GenomeIndexError(
                f"model {model or source!r} is not the model this store was built with "
                f"({settings['model']}, {settings['model_revision'][:19]})"
            )
        return embedder

    @staticmethod
    def _genome_of(con: duckdb.DuckDBPyConnection, chunk_ids: np.ndarray) -> dict[int, int]:
        """chunk id -> genome id for the chunks a search returned."""
        wanted = sorted({int(i) for i in chunk_ids.ravel() if i >= 0})
        result = con.execute(
            "SELECT id, genome_id FROM chunks WHERE id IN (SELECT UNNEST(?))", [wanted]
        ).fetchall()
        return dict(result)

    @staticmethod
    def _genome_details(con: duckdb.DuckDBPyConnection) -> dict[int, dict[str, Any]]:
        details = {
            gid: {"name": name, "file": file, "labels": {}}
            for gid, name, file in con.execute("SELECT id, name, file FROM genomes").fetchall()
        }
        keys = [k for (k,) in con.execute("SELECT DISTINCT key FROM labels ORDER BY key").fetchall()]
        for gid in details:
            details[gid]["labels"] = dict.fromkeys(keys, "")
        for gid, key, value in con.execute("SELECT genome_id, key, value FROM labels").fetchall():
            details[gid]["labels"][key] = value
        return details

    def sql(self, statement: str) -> tuple[list[str], list[tuple]]:
        """Run one read-only SQL statement; writes and access to other files are refused."""
        self.store.require()
        with self.store.connect(read_only=True) as con:
            try:
                cursor = con.execute(statement)
            except duckdb.Error as exc:
                message = str(exc).strip().splitlines()[0]
                if "read-only" in message or "read only" in message:
                    raise GenomeIndexError(f"the store is read-only through `sql`: {message}") from None
                raise GenomeIndexError(f"SQL error: {message}") from None
            columns = [d[0] for d in cursor.description or []]
            return columns, cursor.fetchall() if columns else []

    def info(self) -> dict[str, Any]:
        """Settings, counts and disk use."""
        self.store.require()
        with self.store.connect() as con:
            settings = Store.settings(con)
            counts = {
                table: con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for table in ("genomes", "records", "chunks")
            }
            bases = con.execute("SELECT coalesce(sum(length), 0) FROM genomes").fetchone()[0]
        files = [self.store.db_path] + [self.store.faiss_path(k) for k in FAISS_FILES]
        disk = {p.name: p.stat().st_size for p in files if p.exists()}
        return {
            "directory": str(self.directory),
            "settings": settings,
            "counts": counts,
            "bases": int(bases),
            "disk_bytes": disk,
        }

    def check(self) -> list[str]:
        """Verify the store's invariants; an empty list means consistent. Repairs nothing.

        Every genome has its records, every record is covered base for base by its chunks
        (for stores built without overlap), every chunk has a vector, every genome a genome
        vector, and each FAISS file holds exactly DuckDB's ids.
        """
        self.store.require()
        problems = []
        with self.store.connect() as con:
            settings = Store.settings(con)
            checks = {
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
                "rows of genomes that do not exist": """SELECT (SELECT count(*) FROM records WHERE
                    genome_id NOT IN (SELECT id FROM genomes)) + (SELECT count(*) FROM chunks WHERE
                    genome_id NOT IN (SELECT id FROM genomes))""",
            }
            if settings.get("overlap") == "0":
                checks["records not covered exactly once by their chunks"] = """
                    SELECT count(*) FROM records r LEFT JOIN (SELECT record_id,
                    sum("end" - start) AS bp, min(start) AS lo, max("end") AS hi FROM chunks
                    GROUP BY record_id) c ON c.record_id = r.id
                    WHERE c.bp IS DISTINCT FROM r.length OR c.lo <> 0 OR c.hi <> r.length"""
            for problem, statement in checks.items():
                count = con.execute(statement).fetchone()[0]
                if count:
                    problems.append(f"{count} {problem}")
            dim = int(settings["dim"])
            for kind, table in (("chunks", "chunks"), ("genomes", "genomes")):
                path = self.store.faiss_path(kind)
                expected = np.asarray(con.execute(f"SELECT id FROM {table} ORDER BY id").fetchnumpy()["id"])
                try:
                    index = faiss.read_index(str(path))
                    ids = np.sort(faiss.vector_to_array(index.id_map))
                except (RuntimeError, AttributeError):
                    problems.append(f"{path.name} is missing or unreadable")
                    continue
                if index.d != dim or not np.array_equal(ids, expected.astype(np.int64)):
                    problems.append(f"{path.name} does not hold exactly the ids in {DB_FILE}")
        return problems

    # -- changes --------------------------------------------------------------------------

    def remove(self, genomes: Sequence[str]) -> list[tuple[int, str]]:
        """Remove genomes (by id or name) with their rows, vectors and FAISS entries."""
        self.store.require()
        lock = BuildLock(self.directory)
        lock.acquire()
        try:
            with self.store.connect(read_only=False) as con:
                rows = con.execute("SELECT id, name FROM genomes").fetchall()
                by_name = {name: gid for gid, name in rows}
                names = {gid: name for gid, name in rows}
                chosen: dict[int, str] = {}
                for ident in genomes:
                    gid = int(ident) if ident.isdigit() and int(ident) in names else by_name.get(ident)
                    if gid is None:
                        raise GenomeIndexError(f"no genome {ident!r} in {self.directory} (give a name or id)")
                    chosen[gid] = names[gid]
                dim = int(Store.settings(con)["dim"])
                chunk_ids = con.execute(
                    "SELECT id FROM chunks WHERE genome_id IN (SELECT UNNEST(?))", [list(chosen)]
                ).fetchnumpy()["id"]
                indexes = {kind: self.store.load_faiss(con, kind, dim)[0] for kind in FAISS_FILES}
                Store.remove_genomes(con, list(chosen))
                indexes["chunks"].remove_ids(np.asarray(chunk_ids, dtype=np.int64))
                indexes["genomes"].remove_ids(np.array(list(chosen), dtype=np.int64))
                self._write_indexes(indexes, set(FAISS_FILES))
            return sorted(chosen.items())
        finally:
            lock.release()

    def reindex(self) -> dict[str, int]:
        """Rebuild every FAISS file from the vectors in DuckDB."""
        self.store.require()
        lock = BuildLock(self.directory)
        lock.acquire()
        try:
            with self.store.connect(read_only=False) as con:
                dim = int(Store.settings(con)["dim"])
                sizes = {}
                for kind in FAISS_FILES:
                    ids, vectors = Store.stored_vectors(con, kind, dim)
                    index = Store.build_faiss(ids, vectors, dim)
                    self.store.write_faiss(kind, index)
                    sizes[kind] = index.ntotal
            return sizes
        finally:
            lock.release()
