"""`GenomeIndex`: the Python API behind every command, a short facade over the library.

Settings come as the dataclasses of `settings` (`ModelOptions`, `StoreOptions`, `RunOptions`,
`QueryOptions`); options a caller leaves out come from `genome-index.toml` and the environment
as on the command line (`config`). The work is done where it belongs: `store` (reads, changes,
SQL), `build` (builds, merges, backfills), `search` (queries) and `analysis` (comparisons).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genome_index import config as configuration
from genome_index.config import Config
from genome_index.io.fasta import QueryInput, as_genome
from genome_index.progress import SILENT, Progress
from genome_index.settings import GatherOptions, ModelOptions, QueryOptions, RunOptions, StoreOptions, StoreSettings
from genome_index.store import Store
from genome_index.store.sql import SqlResult

if TYPE_CHECKING:  # the model's and the build's modules load torch: imported where they run
    from genome_index.build.run import BuildReport
    from genome_index.embedding.embedder import Embedder
    from genome_index.search.align import Aligners
    from genome_index.search.gather import GatherResult
    from genome_index.search.hits import Hit
    from genome_index.search.searcher import Searcher


def as_model_options(model: ModelOptions | str | None) -> ModelOptions:
    """A model name is shorthand for ModelOptions(model=name)."""
    return ModelOptions(model=model) if isinstance(model, str) else model or ModelOptions()


class GenomeIndex:
    """One store on disk. Every method opens what it needs and closes it again. `directory`
    defaults to genome-index.toml's `index`, else $GENOME_INDEX, else ./genome-index; `config`
    (read from the working folder by default) gives the options a call leaves out."""

    def __init__(self, directory: str | Path | None = None, config: Config | None = None) -> None:
        self.config = config if config is not None else configuration.load()
        self.store = Store(self.config.index(directory))

    @classmethod
    def open(cls, directory: str | Path | None = None, config: Config | None = None) -> GenomeIndex:
        """An existing store (one clear error when there is none)."""
        index = cls(directory, config)
        index.store.require()
        return index

    @property
    def directory(self) -> Path:
        return self.store.directory

    def settings(self) -> StoreSettings:
        return self.store.settings()

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
        cluster's address) embeds on a Ray actor pool instead (`build.cluster`), `ray_actors` of
        them. A file that looks like reads (many records, most shorter than 300 bp) is refused
        unless `force`: reads are no genome (query them instead).
        """
        from genome_index.build.run import build

        return build(
            self.store, paths, self.config.model_options(as_model_options(model)),
            self.config.store_options(store or StoreOptions()), self.config.run_options(run), labels=labels,
            labels_from_duplicates=labels_from_duplicates, shard=shard, embedder=embedder, progress=progress,
            ray_address=ray_address, ray_actors=ray_actors, force=force,
        )  # fmt: skip

    def searcher(
        self,
        run: RunOptions | None = None,
        *,
        model: str | None = None,
        embedder: Embedder | None = None,
        micro_batch: bool = False,
        trust_remote_code: bool | None = None,
        model_package: str | None = None,
        ray: str | None = None,
        ray_shards: int | None = None,
    ) -> Searcher:
        """A `Searcher`: this store's model, FAISS indexes and genome details loaded once, for
        many queries (use it in a `with` block). `model`, if given, must be the store's;
        `embedder` reuses a loaded one (it must be the store's). With `micro_batch`, queries
        from several threads are embedded together (what `serve` uses). A store whose model
        runs its own code, or comes from a package, loads only with `trust_remote_code` or
        `model_package` given here (or their environment variables, see `config`). With `ray`
        (auto, or a cluster's address), an `ivf-pq` store's segments are searched on Ray
        actors (`ray_shards` of them; default one per GPU, else one per machine)."""
        from genome_index.search.searcher import Searcher

        return Searcher.open(
            self.store, self.config.run_options(run), model=model, embedder=embedder, micro_batch=micro_batch,
            trust_remote_code=trust_remote_code, model_package=model_package, ray=ray, ray_shards=ray_shards,
        )  # fmt: skip

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
            searcher.for_one_query(len(query.records) if options.per_record else 1)
            searcher.aligners = searcher.aligners if aligners is None else aligners  # an empty one is falsy
            started = time.perf_counter()
            hits, timing = searcher.query_timed(query, options, progress)
        if timings is not None:
            embed_seconds = timing.seconds["embed"]
            timings.update(embed_s=embed_seconds, search_s=time.perf_counter() - started - embed_seconds)
            timings.update({f"{stage}_s": seconds for stage, seconds in timing.seconds.items()})
            timings.update({f"{stage}_genomes": len(names) for stage, names in timing.passed.items()})
        return hits

    def gather(
        self,
        sample: str | Path | bytes | Sequence[str | Path],
        options: GatherOptions | None = None,
        *,
        progress: Progress = SILENT,
    ) -> GatherResult:
        """Which stored genomes a sample holds and how much of each: `sample` is a FASTA or FASTQ
        file (reads or contigs, plain or gzip), several files of one sample (a read pair), or
        the sample's bytes. The sample's sketch is covered greedily by the stored sketches, then
        mapped with minimap2 to the genomes found (see `search.gather`). No model is loaded."""
        from genome_index.search.searcher import Searcher

        with Searcher.open(self.store, with_model=False) as searcher:
            return searcher.gather(sample, options or GatherOptions(), progress)

    # -- reading --------------------------------------------------------------------------

    def extract(self, regions: Sequence[str], reverse: bool = False, width: int | None = None) -> bytes:
        """FASTA of stored sequence: each of `regions` is GENOME[:RECORD[:START-END]] (1-based,
        inclusive; see `extract`), reverse-complemented with `reverse`, in lines of `width`
        bases (0: one line; None: as the input file had them)."""
        return self.store.extract(list(regions), reverse, width)

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
        with self.store.reading() as reader:
            return reader.label_keys()

    def info(self) -> dict[str, Any]:
        """Settings, counts and disk use."""
        return self.store.info()

    def genomes(self, offset: int = 0, limit: int = 100) -> tuple[int, list[dict[str, Any]]]:
        """How many genomes the store holds, and `limit` of them from `offset` (by id) with labels."""
        with self.store.reading() as reader:
            return reader.genome_page(offset, limit)

    def genome(self, genome_id: int) -> dict[str, Any] | None:
        """One genome with its figures, labels and records; None if there is no such id."""
        with self.store.reading() as reader:
            return reader.genome_record(genome_id)

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
        from genome_index.analysis.compare import compare_store

        return compare_store(self.store, out, label, ani, progress, name_column=name_column, plot_format=plot_format)

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
        from genome_index.build.merge import merge

        return merge(self.store, sources, progress)

    def remove(self, genomes: Sequence[str]) -> list[tuple[int, str]]:
        """Remove genomes with their rows, vectors and FAISS entries. Each is named by its name
        or its id, or explicitly `name:X` / `id:N` (needed where a name is also another genome's id)."""
        return self.store.remove(list(genomes))

    def backfill_sequences(self, paths: Sequence[str | Path], progress: Progress = SILENT) -> dict[str, list[str]]:
        """Store the sequences of genomes that have none (stores built before sequences were
        kept), read from their FASTA files (see `build.backfill`)."""
        from genome_index.build.backfill import backfill_sequences

        return backfill_sequences(self.store, paths, progress)

    def migrate(self) -> dict[str, int]:
        """Move the chunk vectors of a store made before vector files out of DuckDB (`Store.migrate`)."""
        return self.store.migrate()

    def reindex(self, index_type: str | None = None, progress: Progress = SILENT) -> dict[str, int]:
        """Rebuild every FAISS file from the stored vectors, optionally as another index type."""
        return self.store.reindex(index_type, progress)
