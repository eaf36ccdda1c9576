"""`GenomeIndex`: the Python API behind every command, a short facade over the library.

Settings come as the dataclasses of `settings` (`ModelOptions`, `StoreOptions`, `RunOptions`,
`QueryOptions`); the store's own reads and writes are in `store`, the build in `build`, the
query in `search`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genome_index import __version__
from genome_index import config as permissions
from genome_index.errors import GenomeIndexError
from genome_index.io.fasta import Genome, QueryInput, as_genome, find_fasta_files, read_genome
from genome_index.progress import SILENT, Progress
from genome_index.settings import (
    INDEX_TYPES,
    ModelOptions,
    QueryOptions,
    RunOptions,
    StoreOptions,
    StoreSettings,
    kmer_size,
    resolve,
)
from genome_index.store import FAISS_FILES, Store, reads, writes
from genome_index.store.sql import SqlResult

if TYPE_CHECKING:  # the model's and the build's modules load torch: imported where they run
    from genome_index.build.run import BuildReport
    from genome_index.embedding.embedder import Embedder
    from genome_index.search.align import Aligners
    from genome_index.search.hits import Hit
    from genome_index.search.searcher import Searcher

DEFAULT_INDEX = "genome-index"


def shard_files(files: list[Path], i: int, n: int) -> list[Path]:
    """The i-th (1-based) of n interleaved slices of the sorted inputs: every n-th file."""
    if not 1 <= i <= n:
        raise GenomeIndexError(f"--shard {i}/{n}: need 1 <= I <= N")
    return sorted(files)[i - 1 :: n]


def default_index_dir() -> Path:
    """`$GENOME_INDEX`, else ./genome-index."""
    return Path(os.environ.get("GENOME_INDEX") or DEFAULT_INDEX)


def as_model_options(model: ModelOptions | str | None) -> ModelOptions:
    """A model name is shorthand for ModelOptions(model=name)."""
    return ModelOptions(model=model) if isinstance(model, str) else model or ModelOptions()


def differs(setting: tuple[str, str, str]) -> str:
    name, have, want = setting
    return f"this store was built with {name} {have!r}, not {want!r}; use another --index for different settings"


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

    def settings(self) -> StoreSettings:
        return self.store.settings()

    # -- build ----------------------------------------------------------------------------

    def build(
        self,
        paths: Sequence[str | Path],
        model: ModelOptions | str | None = None,
        store: StoreOptions | None = None,
        run: RunOptions | None = None,
        *,
        labels: str | Path | None = None,
        labels_from_duplicates: bool = False,
        shard: tuple[int, int] | None = None,
        embedder: Embedder | None = None,
        progress: Progress = SILENT,
        ray_address: str | None = None,
        ray_actors: int | None = None,
        force: bool = False,
    ) -> BuildReport:
        """Embed and add every new genome under `paths`; the first build fixes the settings.

        Options left out follow the store (or their defaults for a new one); options that
        disagree with the store are refused, naming the difference. Every input is read and
        checked before anything is committed, so a bad file changes nothing. `progress` hears of
        the bases, windows and genomes done. `shard=(i, n)` takes only the i-th (1-based) of
        n deterministic slices of the sorted inputs; one labels CSV may serve every shard. An
        `embedder` reuses a loaded model. A duplicate's labels (another file holding a stored
        sequence) are ignored unless `labels_from_duplicates`. `ray_address` (`auto` or a
        cluster's address) embeds on a Ray actor pool instead (`cluster`), `ray_actors` of them.
        A file that looks like reads (many records, most shorter than 300 bp) is refused unless
        `force`: reads are no genome (query them instead).
        """
        from genome_index.build.run import run_build
        from genome_index.embedding.embedder import Embedder
        from genome_index.io.labels import read_labels
        from genome_index.search.hits import RESERVED

        if ray_address is not None and shard is not None:
            raise GenomeIndexError("--ray spreads the whole build over the cluster: leave out --shard")
        if ray_address is not None and embedder is not None:
            raise GenomeIndexError("a build on Ray loads the model on its workers: give no embedder")
        started = time.perf_counter()
        run = run or RunOptions()
        inputs = find_fasta_files(list(paths))
        files = shard_files(inputs, *shard) if shard is not None else inputs
        label_rows = read_labels(Path(labels), RESERVED) if labels else {}
        made_directory = self.store.prepare_directory()
        new_store = not self.store.exists()
        with self._undone_on_failure(new_store, made_directory):
            with self.store.lock():
                stored = None if new_store else self.store.settings()
                asked = as_model_options(model)
                asked = permissions.require(asked, stored, self.directory) if stored else permissions.granted(asked)
                asked, store_options = resolve(asked, store or StoreOptions(), stored)
                if stored is not None and asked.model not in (stored.model, stored.model_source):
                    self._refuse_other_model(asked, stored)
                if ray_address is not None:
                    from genome_index.build import cluster

                    cluster.connect(ray_address)
                    pool = cluster.plan_pool(run, ray_actors)
                    described = cluster.describe(asked, run, store_options, pool)  # loads beside the check
                    checked = cluster.check_inputs(files, force)  # a bad file: refused before anything is dispatched
                    wanted = cluster.settings_from(described)
                else:
                    embedder = embedder or Embedder(asked, run)
                    wanted = embedder.settings(store_options)
                if stored is None:
                    self.store.create(wanted)
                elif (difference := stored.difference(wanted)) is not None:
                    raise GenomeIndexError(differs(difference))
                if ray_address is not None:
                    report = cluster.run_build(
                        self.store, files, wanted, asked, run, store_options, pool, label_rows, checked, progress,
                        labels_from_duplicates,
                    )  # fmt: skip
                else:
                    report = run_build(
                        self.store, files, embedder, label_rows, progress, inputs, labels_from_duplicates, force
                    )
        report.seconds = time.perf_counter() - started
        return report

    @contextlib.contextmanager
    def _undone_on_failure(self, new_store: bool, made_directory: bool) -> Iterator[None]:
        """A first build or merge that fails leaves no store behind (nor the folder it made)."""
        try:
            yield
        except BaseException:
            if new_store:
                self.store.discard_if_empty(made_directory)
            raise

    @staticmethod
    def _refuse_other_model(asked: ModelOptions, stored: StoreSettings) -> None:
        """Refuse, before anything loads, a model that cannot be the store's: `kmer:K` asked of
        a store of another model, or another model asked of a `kmer:K` store. Checkpoints are
        compared by their weights once loaded (a copied folder is the same model)."""
        if kmer_size(asked.model or "") is not None or kmer_size(stored.model) is not None:
            raise GenomeIndexError(differs(("model", stored.model, asked.model or "")))

    # -- reading --------------------------------------------------------------------------

    def searcher(
        self,
        run: RunOptions | None = None,
        *,
        model: str | None = None,
        embedder: Embedder | None = None,
        micro_batch: bool = False,
        trust_remote_code: bool | None = None,
        model_package: str | None = None,
    ) -> Searcher:
        """A `Searcher`: this store's model, FAISS indexes and genome details loaded once, for
        many queries (use it in a `with` block). `model`, if given, must be the store's;
        `embedder` reuses a loaded one (it must be the store's). With `micro_batch`, queries
        from several threads are embedded together (what `serve` uses). A store whose model
        runs its own code, or comes from a package, loads only with `trust_remote_code` or
        `model_package` given here (or their environment variables, see `permissions`)."""
        from genome_index.search.searcher import Searcher

        self.store.require()
        settings = self.settings()
        grants = ModelOptions(trust_remote_code=trust_remote_code, model_package=model_package)
        embedder = embedder or self._embedder(settings, model, run or RunOptions(), grants)
        if not settings.same_vectors(embedder.settings(settings.store_options())):
            raise GenomeIndexError("the embedder given is not this store's model, layer and chunking")
        return Searcher(self.store, embedder, settings, micro_batch)

    def query(
        self,
        query: QueryInput,
        options: QueryOptions | None = None,
        run: RunOptions | None = None,
        *,
        model: str | None = None,
        embedder: Embedder | None = None,
        timings: dict[str, float] | None = None,
        progress: Progress = SILENT,
        aligners: Aligners | None = None,
        trust_remote_code: bool | None = None,
        model_package: str | None = None,
    ) -> list[Hit]:
        """Nearest stored genomes to `query` (a FASTA path, FASTA text or sequence, (name,
        sequence) records or a Genome), best first, `options.k` per query.

        One query: a searcher is made and dropped (keep `searcher()` for many). `timings`, if
        given, receives the seconds spent embedding the query and searching (alignment
        included); `aligners` keeps the candidates' minimap2 indexes between calls;
        `trust_remote_code` and `model_package` as for `searcher`.
        """
        options = options or QueryOptions()
        query = as_genome(query)  # a bad query is refused before the model loads
        with self.searcher(
            run, model=model, embedder=embedder, trust_remote_code=trust_remote_code, model_package=model_package
        ) as searcher:
            if aligners is not None:
                searcher.aligners = aligners
            started = time.perf_counter()
            hits, embed_seconds = searcher.query_timed(query, options, progress)
        if timings is not None:
            timings.update(embed_s=embed_seconds, search_s=time.perf_counter() - started - embed_seconds)
        return hits

    def _embedder(self, settings: StoreSettings, model: str | None, run: RunOptions, grants: ModelOptions) -> Embedder:
        """The store's own model, layer and windows, with the code and package the user grants
        (`permissions.require`); a --model that is not the store's is refused."""
        from genome_index.embedding.embedder import Embedder

        grants = permissions.require(grants, settings, self.directory)
        stored = settings.model_options()
        if model is not None and model not in (settings.model, settings.model_source):
            self._refuse_other_model(ModelOptions(model=model), settings)
        run = dataclasses.replace(run, batch_tokens=run.batch_tokens or settings.batch_tokens or None)
        embedder = Embedder(
            dataclasses.replace(
                stored, model=model or stored.model, trust_remote_code=grants.trust_remote_code,
                model_package=grants.model_package,
            ),
            run,
        )  # fmt: skip
        if embedder.spec.revision != settings.model_revision:
            raise GenomeIndexError(
                f"model {model or stored.model!r} is not the model this store was built with "
                f"({settings.model}, {settings.model_revision[:19]})"
            )
        return embedder

    def extract(self, regions: Sequence[str], reverse: bool = False, width: int | None = None) -> bytes:
        """FASTA of stored sequence: each of `regions` is GENOME[:RECORD[:START-END]] (1-based,
        inclusive; see `extract`), reverse-complemented with `reverse`, in lines of `width`
        bases (0: one line; None: as the input file had them)."""
        from genome_index.store.extract import parse_region, region_fasta

        self.store.require()
        with self.store.connect() as con:
            names = reads.genome_names(con)
            by_name = {name: gid for gid, name in names.items()}

            def record_names(gid: int) -> list[str]:
                return [name for name, _, _ in reads.records_of(con, gid)]

            chosen = [
                parse_region(spec, lambda text: self._find_genome(text, names, by_name), record_names)
                for spec in regions
            ]
            return b"".join(region_fasta(con, region, names[region.genome_id], reverse, width) for region in chosen)

    def sql(
        self, statement: str, timeout: float = 60.0, memory_limit: str = "2GB", max_rows: int | None = None
    ) -> tuple[list[str], list[tuple]]:
        """Run one read-only SQL statement: writes, files and a temporary folder are out of its
        reach, it may use `memory_limit` of memory (its planning included), is stopped after
        `timeout` seconds and returns at most `max_rows` rows. See `sql_stream` for rows in batches."""
        with self.sql_stream(statement, timeout, memory_limit, max_rows) as result:
            return result.columns, result.rows()

    def sql_stream(
        self, statement: str, timeout: float = 60.0, memory_limit: str = "2GB", max_rows: int | None = None
    ) -> contextlib.AbstractContextManager[SqlResult]:
        """`sql` with the rows as they come: `with index.sql_stream(s) as result:` gives
        `result.columns` and `result.batches()`; memory stays bounded whatever the row count."""
        return self.store.sql(statement, timeout, memory_limit, max_rows)

    def label_names(self) -> list[str]:
        """The label columns of this store (the keys of its `labels` table), sorted."""
        self.store.require()
        with self.store.connect() as con:
            return reads.label_keys(con)

    def info(self) -> dict[str, Any]:
        """Settings, counts and disk use."""
        self.store.require()
        with self.store.connect() as con:
            settings = reads.settings(con)
            counts, bases = reads.summary(con)
        files = [self.store.db_path] + [self.store.faiss_path(k) for k in FAISS_FILES]
        return {
            "directory": str(self.directory),
            "settings": settings.rows(),
            "counts": counts,
            "bases": bases,
            "disk_bytes": {p.name: p.stat().st_size for p in files if p.exists()},
        }

    def genomes(self, offset: int = 0, limit: int = 100) -> tuple[int, list[dict[str, Any]]]:
        """How many genomes the store holds, and `limit` of them from `offset` (by id) with labels."""
        self.store.require()
        with self.store.connect() as con:
            return reads.genome_page(con, offset, limit)

    def genome(self, genome_id: int) -> dict[str, Any] | None:
        """One genome with its figures, labels and records; None if there is no such id."""
        self.store.require()
        with self.store.connect() as con:
            return reads.genome_record(con, genome_id)

    def compare(
        self,
        out: str | Path,
        label: str | None = None,
        ani: bool = False,
        progress: Progress = SILENT,
        *,
        name_column: str | None = None,
        plot_format: str = "png",
    ) -> dict[str, Any]:
        """Write the genome-by-genome cosine matrix (TSV), a clustered heatmap, a PCA map (and
        UMAP when umap-learn is installed) coloured by `label`, and a within/between summary;
        with `ani`, also skani's whole-genome ANI matrix (ani.tsv), from the genome files.
        Plots name genomes by the `name_column` label where a genome has it, and are written
        as `plot_format` (png, svg or pdf)."""
        from genome_index.analysis import compare
        from genome_index.analysis.ani import ani_matrix

        self.store.require()
        with self.store.connect() as con:
            settings = reads.settings(con)
            names, vectors, groups = reads.named_genome_vectors(con, settings.dim, label)
            keys = reads.label_keys(con)
            files = reads.genome_files(con)
            shown = reads.label_values(con, name_column) if name_column else {}
        if len(names) < 2:
            raise GenomeIndexError(f"{self.directory}: compare needs at least 2 genomes")
        for option, key in (("--label", label), ("--name-column", name_column)):
            if key is not None and key not in keys:
                raise GenomeIndexError(
                    f"{option}: no label {key!r} in this store (labels: {', '.join(keys) or 'none'})"
                )
        identity = None
        if ani:
            identity = ani_matrix(len(names), lambda i: self._stored_file(names[i], *files[names[i]]), progress)
        return compare.write_comparison(
            Path(out), names, vectors, groups, label, settings.model, identity,
            shown_names=[shown.get(name) or name for name in names], plot_format=plot_format,
        )  # fmt: skip

    @staticmethod
    def _stored_file(name: str, file: str, sha256: str) -> Genome:
        """A stored genome read again from its file, which must still hold the same sequence."""
        if not Path(file).is_file():
            raise GenomeIndexError(f"genome {name}: its file {file} is gone (ANI reads the genome files)")
        genome = read_genome(file)
        if genome.sha256 != sha256:
            raise GenomeIndexError(f"genome {name}: {file} no longer holds the sequence that was stored")
        return genome

    def check(self, quick: bool = False) -> list[str]:
        """Every inconsistency of the store (empty: consistent); repairs nothing.

        Every genome has its records, every record is covered base for base by its chunks
        (for stores built without overlap), every chunk has a vector of the store's width, every
        genome a genome vector and a sketch, stored sequences cover every record of their
        genome and hash to its SHA-256, no row belongs to a genome that does not exist, and
        each FAISS file holds exactly DuckDB's ids. `quick` runs only the DuckDB
        consistency queries: it neither reads every block nor loads the FAISS files.
        """
        return self.store.check(quick)

    # -- changes --------------------------------------------------------------------------

    def merge(self, sources: Sequence[str | Path], progress: Progress = SILENT) -> BuildReport:
        """Copy every genome of other stores built with the same settings into this one.

        Ids are renumbered and the FAISS files rebuilt from the merged vectors; this store is
        created if it does not exist. Genomes already here (same SHA-256) are skipped; of one
        sequence in several sources, the copy whose file sorts first is kept (as a single build
        of all the inputs keeps the first), however the inputs were split. A name already taken
        gets the folders that tell it apart (a/x), as in a build.
        """
        from genome_index.build.run import BuildReport, unique_names

        started = time.perf_counter()
        stores = [Store(source) for source in sources]
        if any(s.directory.resolve() == self.directory.resolve() for s in stores):
            raise GenomeIndexError(f"{self.directory} cannot be merged into itself")
        source_settings = [s.settings() for s in stores]
        first = source_settings[0]
        for other, settings in zip(stores[1:], source_settings[1:], strict=True):
            if (difference := first.difference(settings)) is not None:
                name, have, want = difference
                raise GenomeIndexError(
                    f"{stores[0].directory} was built with {name} {have!r}, {other.directory} with {want!r}; "
                    "only stores built with the same settings merge"
                )
        winners: dict[str, tuple[str, int]] = {}  # sha -> (file, source) of the copy kept
        genomes, bases = 0, 0
        for number, source in enumerate(stores):
            with source.connect() as src:
                for sha, (_, _, file) in reads.genomes_by_sha(src).items():
                    winners[sha] = min(winners.get(sha, (file, number)), (file, number))
                genomes, bases = genomes + reads.genome_count(src), bases + reads.summary(src)[1]
        made_directory = self.store.prepare_directory()
        new_store = not self.store.exists()
        report = BuildReport()
        with self._undone_on_failure(new_store, made_directory):
            with self.store.lock():
                if new_store:
                    self.store.create(dataclasses.replace(first, tool_version=__version__))
                elif (difference := self.store.settings().difference(first)) is not None:
                    raise GenomeIndexError(differs(difference))
                with (
                    self.store.connect(read_only=False) as con,
                    progress.step("merging", bases, genomes=genomes) as step,
                ):
                    settings = reads.settings(con)
                    here = {sha: name for sha, (_, name, _) in reads.genomes_by_sha(con).items()}
                    names = set(here.values())
                    for number, source in enumerate(stores):
                        with source.connect() as src:
                            for genome in reads.stored_genomes(src, settings.dim):
                                kept = here.get(genome.sha256)
                                if kept is None and winners[genome.sha256][1] == number:
                                    name = unique_names([Path(genome.file)], names)[Path(genome.file)]
                                    genome = dataclasses.replace(genome, name=name) if name != genome.name else genome
                                    gid, chunk_ids = writes.add_genome(con, genome, settings.vector_dtype)
                                    here[genome.sha256] = genome.name
                                    names.add(genome.name)
                                    report.added.append((genome.name, gid, len(chunk_ids)))
                                    report.bases += genome.length
                                else:
                                    same = kept or Path(winners[genome.sha256][0]).name
                                    report.duplicates.append((f"{source.directory}:{genome.name}", same))
                                step.advance(genome.length, genomes=1)
                    step.close()  # before the indexing steps begin
                    self._rewrite_faiss(con, settings, f"{len(report.added)} genome(s) were merged into", progress)
        report.seconds = time.perf_counter() - started
        return report

    def _rewrite_faiss(
        self, con: Any, settings: StoreSettings, committed: str, progress: Progress = SILENT
    ) -> dict[str, int]:
        """Rebuild and write every FAISS file; if writing fails, say what was committed anyway."""
        try:
            return self.store.rewrite_faiss(con, settings, progress)
        except GenomeIndexError as exc:
            raise GenomeIndexError(
                f"{committed} {self.store.db_path}, but {exc}; `genome-index reindex` (or the next build) rebuilds "
                "the FAISS files from it"
            ) from None

    def remove(self, genomes: Sequence[str]) -> list[tuple[int, str]]:
        """Remove genomes with their rows, vectors and FAISS entries. Each is named by its name
        or its id, or explicitly `name:X` / `id:N` (needed where a name is also another genome's id)."""
        with self.store.writing() as con:
            names = reads.genome_names(con)
            by_name = {name: gid for gid, name in names.items()}
            chosen: dict[int, str] = {}
            for ident in genomes:
                gid = self._genome_id(ident, names, by_name)
                chosen[gid] = names[gid]
            writes.remove_genomes(con, list(chosen))
            removed = ", ".join(f"{gid} {name}" for gid, name in sorted(chosen.items()))
            self._rewrite_faiss(con, reads.settings(con), f"genome(s) {removed} were removed from")
        return sorted(chosen.items())

    def _genome_id(self, ident: str, names: dict[int, str], by_name: dict[str, int]) -> int:
        """The genome `ident` means (see `_find_genome`); one clear error where there is none."""
        found = self._find_genome(ident, names, by_name)
        if found is None:
            raise GenomeIndexError(f"no genome {ident!r} in {self.directory} (give a name, an id, name:X or id:N)")
        return found

    @staticmethod
    def _find_genome(ident: str, names: dict[int, str], by_name: dict[str, int]) -> int | None:
        """The genome `ident` means: `id:N`, `name:X`, or a bare name or id that is not both."""
        kind, _, value = ident.partition(":") if ident.startswith(("id:", "name:")) else ("", "", ident)
        as_id = int(value) if value.isdigit() and int(value) in names and kind != "name" else None
        as_name = by_name.get(value) if kind != "id" else None
        if as_id is not None and as_name is not None and as_id != as_name:
            raise GenomeIndexError(
                f"{ident!r} is the id of genome {names[as_id]!r} and the name of genome {as_name}: "
                f"write id:{value} or name:{value}"
            )
        return as_id if as_id is not None else as_name

    def backfill_sequences(self, paths: Sequence[str | Path], progress: Progress = SILENT) -> dict[str, list[str]]:
        """Store the sequences of genomes that have none (stores built before sequences were
        kept), read from their FASTA files: a file is used only when its sequence's SHA-256 is
        a stored genome's. Returns the names filled, the files that are no stored genome or
        whose genome has its sequence already, and the genomes still without one."""
        from genome_index.io.sequences import pack

        files = find_fasta_files(list(paths))
        report: dict[str, list[str]] = {"filled": [], "already": [], "unknown": [], "missing": []}
        self.store.require()
        with self.store.lock(), progress.step("storing sequences", len(files), "files") as step:
            for path in files:
                genome = read_genome(path)
                with self.store.connect() as con:
                    stored = reads.genome_with_sha(con, genome.sha256)
                    kept = stored is not None and reads.has_sequence(con, stored[0])
                if stored is None:
                    report["unknown"].append(str(path))
                elif kept:
                    report["already"].append(str(path))
                else:
                    packed = [pack(r.sequence, r.line_width) for r in genome.records]
                    with self.store.connect(read_only=False) as con:  # a short session a genome: readers get in
                        writes.backfill_sequences(con, stored[0], packed)
                    report["filled"].append(stored[1])
                step.advance(1)
            with self.store.connect() as con:
                names = reads.genome_names(con)
                report["missing"] = sorted(names[gid] for gid in reads.genomes_without_sequences(con).values())
        return report

    def reindex(self, index_type: str | None = None, progress: Progress = SILENT) -> dict[str, int]:
        """Rebuild every FAISS file from the vectors in DuckDB, optionally as another index type."""
        if index_type is not None and index_type not in INDEX_TYPES:
            raise GenomeIndexError(f"unknown index type {index_type!r}: use {', '.join(INDEX_TYPES)}")
        with self.store.writing() as con:
            settings = reads.settings(con)
            if index_type is not None:  # the file first: killed in between, file and setting disagree: it is rebuilt
                settings = dataclasses.replace(settings, index_type=index_type)
            sizes = self.store.rewrite_faiss(con, settings, progress)
            if index_type is not None:
                writes.set_setting(con, "index_type", index_type)
            return sizes
