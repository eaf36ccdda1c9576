"""`GenomeIndex`: the Python API behind every command (build, query, sql, info, remove, reindex)."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import duckdb
import faiss
import numpy as np

from genome_index import __version__, sketch
from genome_index.build import BuildReport, Progress, read_labels, run_build
from genome_index.embed import POOLING, Embedder
from genome_index.errors import GenomeIndexError
from genome_index.fasta import find_fasta_files, read_genome
from genome_index.models import DEFAULT_MODEL
from genome_index.search import (
    MODES,
    QueryOptions,
    Ranker,
    embed_unique,
    order_hits,
    queries_of,
    rank_chunk_mode,
    resolve_mode,
    views,
)
from genome_index.store import (
    DB_FILE,
    FAISS_FILES,
    FORMAT_VERSION,
    INDEX_TYPES,
    LOCK_FILE,
    SKETCH_SCALED,
    VECTOR_DTYPES,
    BuildLock,
    NewGenome,
    Store,
    to_gpu,
    to_matrix,
)
from genome_index.tokenize import DEFAULT_CHUNKING

log = logging.getLogger("genome_index")

DEFAULT_INDEX = "genome-index"
# Settings a query's embedder must share with the store for its vectors to be comparable.
EMBEDDER_SETTINGS = ("model_revision", "layer", "chunk_tokens", "chunking", "anchor_radius")


def shard_files(files: list[Path], i: int, n: int) -> list[Path]:
    """The i-th (1-based) of n interleaved slices of the sorted inputs: every n-th file."""
    if not 1 <= i <= n:
        raise GenomeIndexError(f"--shard {i}/{n}: need 1 <= I <= N")
    return sorted(files)[i - 1 :: n]


def default_index_dir() -> Path:
    """`$GENOME_INDEX`, else ./genome-index."""
    return Path(os.environ.get("GENOME_INDEX") or DEFAULT_INDEX)


def _stored_genomes(con: duckdb.DuckDBPyConnection, dim: int) -> Iterator[NewGenome]:
    """Every genome of a store, with its records, chunks, vectors and labels, one at a time."""
    genomes = con.execute("SELECT id, name, file, sha256, length, gc, n_count FROM genomes ORDER BY id").fetchall()
    for gid, name, file, sha, length, gc, n_count in genomes:
        records = [
            {"name": n, "description": d, "length": ln, "gc": g, "n_count": nc}
            for n, d, ln, g, nc in con.execute(
                "SELECT name, description, length, gc, n_count FROM records WHERE genome_id = ? ORDER BY idx",
                [gid],
            ).fetchall()
        ]
        chunks = con.execute(
            'SELECT r.idx AS record, c.start, c."end" AS "end", c.n_tokens, c.gc, c.n_count FROM chunks c '
            "JOIN records r ON r.id = c.record_id WHERE c.genome_id = ? ORDER BY c.id",
            [gid],
        ).fetchnumpy()
        vectors = to_matrix(
            con.sql(
                "SELECT v.vector FROM chunk_vectors v JOIN chunks c ON c.id = v.chunk_id "
                f"WHERE c.genome_id = {int(gid)} ORDER BY c.id"
            )
            .to_arrow_table()
            .column("vector"),
            dim,
        )
        labels = dict(con.execute("SELECT key, value FROM labels WHERE genome_id = ?", [gid]).fetchall())
        hashes, scaled = con.execute("SELECT hashes, scaled FROM sketches WHERE genome_id = ?", [gid]).fetchall()[0]
        chunk_columns = {k: np.asarray(v) for k, v in chunks.items()}
        sketch = np.asarray(hashes, dtype=np.uint64)
        yield NewGenome(name, file, sha, length, gc, n_count, records, chunk_columns, vectors, labels, sketch, scaled)


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
                    f"{folder} is not a genome-index store and not empty (has {others[0]!r}); choose another --index"
                )

    def build(
        self,
        paths: Sequence[str | Path],
        *,
        model: str | None = None,
        layer: int | None = None,
        chunk_tokens: int | None = None,
        overlap: int | None = None,
        chunking: str | None = None,
        sketch_scaled: int | None = None,
        device: str = "auto",
        dtype: str = "auto",
        batch_tokens: int | None = None,
        labels: str | Path | None = None,
        trust_remote_code: bool = False,
        index_type: str | None = None,
        vector_dtype: str | None = None,
        shard: tuple[int, int] | None = None,
        compile: bool = False,
        embedder: Embedder | None = None,
        on_progress: Progress | None = None,
    ) -> BuildReport:
        """Embed and add every new genome under `paths`; the first build fixes the settings.

        Every input is read and checked before anything is committed, so a bad file changes
        nothing. `on_progress(bases, total)` is called once per input genome. `shard=(i, n)`
        takes only the i-th (1-based) of n deterministic slices of the sorted inputs. An
        `embedder` given reuses a loaded model and its settings (model, layer, chunking...).
        """
        started = time.perf_counter()
        files = find_fasta_files(list(paths))
        if shard is not None:
            files = shard_files(files, *shard)
        label_rows = read_labels(Path(labels)) if labels else {}
        self._check_directory()
        made_directory = not self.directory.exists()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise GenomeIndexError(f"{self.directory}: cannot create ({exc.strerror})") from None
        lock = BuildLock(self.directory)
        lock.acquire()
        new_store = not self.store.exists()
        try:
            stored = {} if new_store else self.settings()
            if stored:  # unspecified options follow the store
                model = model or stored["model_source"]
                layer = int(stored["layer"]) if layer is None else layer
                chunk_tokens = int(stored["chunk_tokens"]) if chunk_tokens is None else chunk_tokens
                overlap = int(stored["overlap"]) if overlap is None else overlap
                chunking = chunking or stored["chunking"]
                sketch_scaled = int(stored["sketch_scaled"]) if sketch_scaled is None else sketch_scaled
                index_type = index_type or stored.get("index_type")
                vector_dtype = vector_dtype or stored.get("vector_dtype")
            index_type, vector_dtype = index_type or "flat", vector_dtype or "float32"
            if index_type not in INDEX_TYPES:
                raise GenomeIndexError(f"unknown index type {index_type!r}: use {', '.join(INDEX_TYPES)}")
            if vector_dtype not in VECTOR_DTYPES:
                raise GenomeIndexError(f"unknown vector dtype {vector_dtype!r}: use {', '.join(VECTOR_DTYPES)}")
            sketch_scaled = SKETCH_SCALED if sketch_scaled is None else sketch_scaled
            if sketch_scaled < 1:
                raise GenomeIndexError(f"--sketch-scaled must be at least 1, got {sketch_scaled}")
            if embedder is None:
                embedder = Embedder(
                    model or DEFAULT_MODEL, layer, device, dtype, batch_tokens, chunk_tokens, overlap or 0,
                    trust_remote_code, compile, chunking or DEFAULT_CHUNKING,
                )  # fmt: skip
            wanted = self._settings_for(embedder, trust_remote_code, index_type, vector_dtype, sketch_scaled)
            if stored:
                Store.check_settings(stored, wanted)
            else:
                self.store.create(wanted)
            report = run_build(self.store, files, embedder, label_rows, on_progress)
            report.seconds = time.perf_counter() - started
            return report
        except BaseException:
            if new_store:
                self._discard_empty_store(made_directory)
            raise
        finally:
            lock.release()

    def _discard_empty_store(self, made_directory: bool) -> None:
        """After a failed first build that committed no genome, leave no trace of the store."""
        if self.store.exists():
            try:
                with self.store.connect() as con:
                    if con.execute("SELECT count(*) FROM genomes").fetchall()[0][0]:
                        return  # genomes were committed: keep them, complete, for the next build
            except GenomeIndexError:
                return
        names = [DB_FILE, DB_FILE + ".wal", DB_FILE + ".creating", DB_FILE + ".creating.wal"]
        names += [n + suffix for n in FAISS_FILES.values() for suffix in ("", ".tmp")]
        if made_directory:
            names.append(LOCK_FILE)
        for name in names:
            (self.directory / name).unlink(missing_ok=True)
        if made_directory:
            with contextlib.suppress(OSError):
                self.directory.rmdir()

    @staticmethod
    def _settings_for(
        embedder: Embedder, trust_remote_code: bool, index_type: str, vector_dtype: str, sketch_scaled: int
    ) -> dict[str, str]:
        """The settings a build with this embedder fixes (or must match) in the store."""
        return {
            "model": embedder.spec.name,
            "model_source": embedder.spec.source,
            "model_revision": embedder.spec.revision,
            "layer": str(embedder.layer),
            "pooling": POOLING,
            "chunk_tokens": str(embedder.chunk_tokens),
            "chunking": embedder.chunking,
            "anchor_radius": str(embedder.anchor_radius),
            "overlap": str(embedder.overlap),
            "dim": str(embedder.dim),
            "metric": "cosine",
            "index_type": index_type,
            "vector_dtype": vector_dtype,
            "sketch_scaled": str(sketch_scaled),
            "trust_remote_code": str(trust_remote_code).lower(),
            "tool_version": __version__,
            "format_version": FORMAT_VERSION,
        }

    # -- reading --------------------------------------------------------------------------

    def query(
        self,
        fasta: str | Path,
        k: int = 10,
        mode: str = "auto",
        per_record: bool = False,
        window_overlap: float | None = None,
        frames: bool | None = None,
        center: bool = True,
        rerank: bool = True,
        device: str = "auto",
        dtype: str = "auto",
        model: str | None = None,
        batch_tokens: int | None = None,
        embedder: Embedder | None = None,
        timings: dict[str, float] | None = None,
    ) -> list[dict[str, Any]]:
        """Nearest stored genomes to the sequence(s) in `fasta`, best first, `k` per query.

        See `search.QueryOptions` for the options; None picks the measured default for the
        mode. `embedder` reuses a loaded model (it must be the store's); `timings`, if given,
        receives the seconds spent embedding the query and searching.
        """
        options = QueryOptions(k, mode, per_record, window_overlap, frames, center, rerank)
        if mode not in MODES:
            raise GenomeIndexError(f"unknown mode {mode!r}: use {', '.join(MODES)}")
        if k < 1:
            raise GenomeIndexError("-k must be at least 1")
        if window_overlap is not None and not 0 <= window_overlap < 1:
            raise GenomeIndexError("--window-overlap must be at least 0 and below 1")
        self.store.require()
        genome = read_genome(fasta)
        settings = self.settings()
        if window_overlap and settings["chunking"] != "fixed":
            raise GenomeIndexError(
                "--window-overlap applies to stores with fixed windows; this store's windows are anchored "
                "to the sequence, so a query's windows already line up with the stored ones"
            )
        if embedder is None:
            embedder = self._embedder(settings, model, device, dtype, batch_tokens)
        else:
            given = self._settings_for(embedder, False, "", "", 0)
            if any(given[key] != settings[key] for key in EMBEDDER_SETTINGS):
                raise GenomeIndexError("the embedder given is not this store's model, layer and chunking")
        started = time.perf_counter()
        queries = queries_of(genome, per_record)
        plans = [resolve_mode(options, q) for q in queries]
        view_chunks = [
            views(embedder, q, overlap, use_frames) for q, (_, overlap, use_frames) in zip(queries, plans, strict=True)
        ]
        flat = [c for chunk_lists in view_chunks for chunks in chunk_lists for c in chunks]
        vectors = embed_unique(embedder, flat)
        scaled = int(settings["sketch_scaled"])
        query_sketches = [sketch.from_hashes(sketch.sketch_records(q.records, scaled), scaled) for q in queries]
        embedded = time.perf_counter()
        rows: list[dict[str, Any]] = []
        with self.store.connect() as con:
            ranker = Ranker(self.store, con, settings, center)
            indexes = {}
            for kind in {"genomes" if m == "genome" else "chunks" for m, _, _ in plans}:
                indexes[kind], rebuilt = self.store.load_faiss(con, kind, settings)
                if rebuilt:
                    self._save_repair(kind, indexes[kind])
                if indexes[kind].ntotal == 0:
                    raise GenomeIndexError(f"{self.directory}: the store holds no genomes yet")
                indexes[kind] = to_gpu(indexes[kind])  # searches run on the GPU with a faiss GPU build
            offset = 0
            details = self._genome_details(con)
            for query, (query_mode, _, _), chunk_lists, query_sketch in zip(
                queries, plans, view_chunks, query_sketches, strict=True
            ):
                view_vectors = []
                for chunks in chunk_lists:
                    view_vectors.append(vectors[offset : offset + len(chunks)])
                    offset += len(chunks)
                if query_mode == "genome":
                    ranked = ranker.genome_mode(indexes["genomes"], view_vectors)
                else:
                    ranked = rank_chunk_mode(ranker.chunk_search(indexes["chunks"]), view_vectors, ranker.genome_of)
                hits = order_hits(ranked, query_sketch, ranker.sketches, k, rerank)
                for rank, (gid, score, support, contained, ani) in enumerate(hits, start=1):
                    row: dict[str, Any] = {"query": query.name} if per_record else {}
                    row.update({
                        "rank": rank, "genome_id": gid, "name": details[gid]["name"], "file": details[gid]["file"],
                        "score": round(score, 6), "mode": query_mode,
                    })  # fmt: skip
                    if query_mode == "chunks":
                        row["support"] = support
                    row["containment"] = None if contained is None else round(contained, 4)
                    row["ani_estimate"] = None if ani is None else round(ani, 4)
                    row.update(details[gid]["labels"])
                    rows.append(row)
        if timings is not None:
            timings.update(embed_s=embedded - started, search_s=time.perf_counter() - embedded)
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
            chunking=settings["chunking"],
            radius=int(settings["anchor_radius"]),
        )
        if embedder.spec.revision != settings["model_revision"]:
            raise GenomeIndexError(
                f"model {model or source!r} is not the model this store was built with "
                f"({settings['model']}, {settings['model_revision'][:19]})"
            )
        return embedder

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
                table: con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
                for table in ("genomes", "records", "chunks")
            }
            bases = con.execute("SELECT coalesce(sum(length), 0) FROM genomes").fetchall()[0][0]
        files = [self.store.db_path] + [self.store.faiss_path(k) for k in FAISS_FILES]
        disk = {p.name: p.stat().st_size for p in files if p.exists()}
        return {
            "directory": str(self.directory),
            "settings": settings,
            "counts": counts,
            "bases": int(bases),
            "disk_bytes": disk,
        }

    def merge(self, sources: Sequence[str | Path], on_progress: Progress | None = None) -> BuildReport:
        """Copy every genome of other stores built with the same settings into this one.

        Ids are renumbered, genomes already here (same SHA-256) are skipped, and the FAISS
        files are rebuilt from the merged vectors. This store is created if it does not exist.
        """
        started = time.perf_counter()
        stores = [GenomeIndex.open(source) for source in sources]
        if any(s.directory.resolve() == self.directory.resolve() for s in stores):
            raise GenomeIndexError(f"{self.directory} cannot be merged into itself")
        source_settings = [s.settings() for s in stores]
        for other, settings in zip(stores[1:], source_settings[1:], strict=True):
            try:
                Store.check_settings(source_settings[0], settings)
            except GenomeIndexError as exc:
                raise GenomeIndexError(f"{other.directory}: {exc}") from None
        self._check_directory()
        self.directory.mkdir(parents=True, exist_ok=True)
        lock = BuildLock(self.directory)
        lock.acquire()
        try:
            if self.store.exists():
                Store.check_settings(self.settings(), source_settings[0])
            else:
                self.store.create({**source_settings[0], "tool_version": __version__})
            report = BuildReport()
            total = sum(int(s.sql("SELECT count(*) FROM genomes")[1][0][0]) for s in stores)
            with self.store.connect(read_only=False) as con:
                settings = Store.settings(con)
                by_sha = dict(con.execute("SELECT sha256, name FROM genomes").fetchall())
                for source in stores:
                    with source.store.connect() as src:
                        for genome in _stored_genomes(src, int(settings["dim"])):
                            if genome.sha256 in by_sha:
                                where = f"{source.directory}:{genome.name}"
                                report.duplicates.append((where, by_sha[genome.sha256]))
                            else:
                                gid, chunk_ids = self.store.add_genome(con, genome, settings["vector_dtype"])
                                by_sha[genome.sha256] = genome.name
                                report.added.append((genome.name, gid, len(chunk_ids)))
                                report.bases += genome.length
                            if on_progress:
                                on_progress(genome.length, total)
                for kind in FAISS_FILES:
                    self.store.write_faiss(kind, self.store.rebuild_faiss(con, kind, settings))
        finally:
            lock.release()
        report.seconds = time.perf_counter() - started
        return report

    def compare(self, out: str | Path, label: str | None = None) -> dict[str, Any]:
        """Write the genome-by-genome cosine matrix (TSV), a clustered heatmap, a PCA map (and
        UMAP when umap-learn is installed) coloured by `label`, and a within/between summary."""
        from genome_index import compare

        self.store.require()
        with self.store.connect() as con:
            settings = Store.settings(con)
            dim, model = int(settings["dim"]), settings["model"]
            table = con.sql(
                "SELECT g.name, v.vector FROM genomes g JOIN genome_vectors v ON v.genome_id = g.id ORDER BY g.name"
            ).to_arrow_table()
            names = table.column("name").to_pylist()
            vectors = to_matrix(table.column("vector"), dim)
            keys = [k for (k,) in con.execute("SELECT DISTINCT key FROM labels ORDER BY key").fetchall()]
            values = dict(
                con.execute(
                    "SELECT g.name, l.value FROM labels l JOIN genomes g ON g.id = l.genome_id WHERE l.key = ?",
                    [label or ""],
                ).fetchall()
            )
        if len(names) < 2:
            raise GenomeIndexError(f"{self.directory}: compare needs at least 2 genomes")
        if label is not None and label not in keys:
            raise GenomeIndexError(f"no label {label!r} in this store (labels: {', '.join(keys) or 'none'})")
        groups = [values.get(name, "") for name in names] if label else [""] * len(names)
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        similarity = compare.cosine_matrix(vectors)
        files = {"matrix": out / "similarity.tsv", "heatmap": out / "heatmap.png", "pca": out / "pca.png"}
        compare.write_matrix(files["matrix"], names, similarity)
        compare.plot_heatmap(files["heatmap"], names, similarity, f"Cosine similarity of genome vectors ({model})")
        coords, axes = compare.pca_coords(vectors)
        what = f"coloured by {label}" if label else "all genomes"
        compare.plot_map(files["pca"], coords, names, groups, f"PCA of genome vectors ({model}), {what}", axes)
        umap = compare.umap_coords(vectors)
        if umap is not None:
            files["umap"] = out / "umap.png"
            compare.plot_map(files["umap"], umap, names, groups, f"UMAP ({model}), {what}", ("UMAP 1", "UMAP 2"))
        summary = compare.group_summary(similarity, groups)
        compare.write_summary(out / "summary.tsv", summary)
        files["summary"] = out / "summary.tsv"
        return {"files": {k: str(v) for k, v in files.items()}, "summary": summary}

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
                count = con.execute(statement).fetchall()[0][0]
                if count:
                    problems.append(f"{count} {problem}")
            dim = int(settings["dim"])
            for kind, table in (("chunks", "chunks"), ("genomes", "genomes")):
                path = self.store.faiss_path(kind)
                expected = np.asarray(con.execute(f"SELECT id FROM {table} ORDER BY id").fetchnumpy()["id"])
                if not expected.size and not path.exists():
                    continue  # a store killed before its first genome committed: no index is owed yet
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
                settings = Store.settings(con)
                Store.remove_genomes(con, list(chosen))
                for kind in FAISS_FILES:  # rebuilt from what DuckDB now holds: right for every index type
                    self.store.write_faiss(kind, self.store.rebuild_faiss(con, kind, settings))
            return sorted(chosen.items())
        finally:
            lock.release()

    def reindex(self, index_type: str | None = None) -> dict[str, int]:
        """Rebuild every FAISS file from the vectors in DuckDB, optionally as another index type."""
        self.store.require()
        if index_type is not None and index_type not in INDEX_TYPES:
            raise GenomeIndexError(f"unknown index type {index_type!r}: use {', '.join(INDEX_TYPES)}")
        lock = BuildLock(self.directory)
        lock.acquire()
        try:
            with self.store.connect(read_only=False) as con:
                if index_type is not None:
                    con.execute("UPDATE settings SET value = ? WHERE key = 'index_type'", [index_type])
                settings = Store.settings(con)
                sizes = {}
                for kind in FAISS_FILES:
                    index = self.store.rebuild_faiss(con, kind, settings)
                    self.store.write_faiss(kind, index)
                    sizes[kind] = index.ntotal
            return sizes
        finally:
            lock.release()
