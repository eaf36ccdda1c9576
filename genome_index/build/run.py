"""The build: one path for every build, wherever its genomes are embedded.

`build` resolves the settings (the store's, or the first build's), picks the runner once and
calls `run_build`, which does the rest the same way for both runners: each input is checked
once before anything is committed (a bad file leaves the store unchanged), `Intake` decides
which genomes to embed, and the runner's embedded genomes go to the `Writer` as typed messages.

Runners: `LocalRunner` (this process: a reader thread reads and cuts the next genomes while
the model runs, `embedding.pipeline`) and `cluster.RayRunner` (a Ray actor pool; this process
commits). When the build stops (an error, Ctrl-C), every thread stops with it: the check after
the file in hand, the reader without starting another, the writer after its transaction.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from genome_index import config
from genome_index.build.intake import InputCheck, Intake, announce_duplicates, changed_since_check
from genome_index.build.writer import Add, Relabel, Writer, open_store
from genome_index.embedding.backends import refuse_other_model
from genome_index.embedding.embedder import Embedder
from genome_index.errors import GenomeIndexError
from genome_index.io.fasta import find_fasta_files
from genome_index.progress import SILENT, Progress, Step
from genome_index.settings import ModelOptions, RunOptions, StoreOptions, StoreSettings, differs, resolve
from genome_index.store import Store
from genome_index.store.segments import Codebook, SegmentWriter


@dataclass
class BuildReport:
    """What a build did: genomes added, skipped as already stored, or duplicates of another file."""

    added: list[tuple[str, int, int]] = field(default_factory=list)  # name, genome id, chunks
    already: list[tuple[str, str]] = field(default_factory=list)  # file, stored genome name
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # file, name of the same sequence
    labels_ignored: list[str] = field(default_factory=list)  # duplicates whose labels were not applied
    labelled_ids: set[int] = field(default_factory=set)  # genomes whose labels this run set
    changed: list[str] = field(default_factory=list)  # inputs that changed after the check: not stored
    bases: int = 0
    seconds: float = 0.0

    @property
    def labelled(self) -> int:
        return len(self.labelled_ids)


class Checked(Protocol):
    """The input check a runner made: each file's SHA-256 (`sha_of`, waiting for the file where
    the check still runs) and bases, and a future of all the hashes that the writer waits for."""

    future: Any
    lengths: dict[Path, int]

    def sha_of(self, path: Path) -> str: ...

    def stop(self) -> None: ...


class Runner(Protocol):
    """Where a build's genomes are checked and embedded."""

    step_name: str  # what the progress line calls the build

    def settings(self, store: StoreOptions) -> StoreSettings:
        """What a store built by this runner fixes (its model's, layer's and windows')."""
        ...

    def check(self, files: list[Path], reads_ok: bool) -> Checked:
        """Start (or do) the input check of `files`."""
        ...

    def embed(
        self, files: list[Path], want: Callable[[Path], bool], step: Step, codebook: Codebook | None = None
    ) -> Iterator[Any]:  # EmbeddedGenome | NewGenome
        """The embedded genomes of the `files` that `want` takes (asked in input order); a
        runner whose workers are not this process encodes them with `codebook` (a trained
        store's quantizer), so that the writer adds codes."""
        ...

    def failed(self, exc: BaseException, report: BuildReport) -> tuple[bool, BaseException | None]:
        """After `exc` stopped the build: whether to save the FAISS files, and the error to raise
        instead of `exc` (None: `exc` itself)."""
        ...


class LocalRunner:
    """This process embeds: a reader thread reads and cuts the next genomes while the calling
    thread runs the model (`Embedder.embed_genomes`); a thread checks the inputs meanwhile."""

    step_name = "building"

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder

    def settings(self, store: StoreOptions) -> StoreSettings:
        return self.embedder.settings(store)

    def check(self, files: list[Path], reads_ok: bool) -> Checked:
        return InputCheck(files, reads_ok)

    def embed(
        self, files: list[Path], want: Callable[[Path], bool], step: Step, codebook: Codebook | None = None
    ) -> Iterator[Any]:
        return self.embedder.embed_genomes(files, want=want, step=step)  # encoded by the writer, in this process

    def failed(self, exc: BaseException, report: BuildReport) -> tuple[bool, BaseException | None]:
        return not isinstance(exc, KeyboardInterrupt), None  # Ctrl-C must stop at once: no FAISS write


def run_build(
    store: Store,
    files: list[Path],
    runner: Runner,
    label_rows: dict[str, dict[str, str]],
    progress: Progress = SILENT,
    all_inputs: list[Path] | None = None,
    labels_from_duplicates: bool = False,
    reads_ok: bool = False,
) -> BuildReport:
    """Embed every new genome of `files` into `store` (whose lock the caller holds) on `runner`.

    `all_inputs` (a sharded build's every input) may be named by the labels too. A stored
    genome built again takes the labels given for it; a duplicate (another file with a stored
    sequence) does not, unless `labels_from_duplicates`. A file of reads is refused unless
    `reads_ok` (`fasta.summarise`).
    """
    started = time.perf_counter()
    report = BuildReport()
    step = progress.step(runner.step_name, None, "bp", genomes=len(files))
    check = runner.check(files, reads_ok)
    try:
        settings, stored, indexes, rebuilt = open_store(store)
        intake = Intake(files, stored, label_rows, all_inputs or files, report, labels_from_duplicates)

        def checked(future: Any) -> None:  # the totals leave out what will not be embedded
            if future.exception() is None:
                new, duplicates = intake.preview(future.result())
                step.set_total(sum(check.lengths[path] for path in new), genomes=len(new))
                announce_duplicates(duplicates)

        check.future.add_done_callback(checked)
        writer = Writer(store, indexes, settings, check.future, report).start()
        writer.dirty.update(rebuilt)

        def want(path: Path) -> bool:
            wanted = intake.want(path, check.sha_of(path))
            for genome_id, labels in intake.relabels:
                writer.put(Relabel(genome_id, labels))
            intake.relabels.clear()
            return wanted

        try:
            chunks = indexes["chunks"]
            codebook = chunks.codebook if isinstance(chunks, SegmentWriter) else None  # a trained store
            for item in runner.embed(files, want, step, codebook):
                path = Path(item.file)
                writer.put(Add(item, intake.names[path], intake.labels_of(path)))
            writer.finish()
        except BaseException as exc:
            save, instead = runner.failed(exc, report)
            writer.abandon(save=save)
            if instead is not None:
                raise instead from None
            raise
        if report.changed:
            raise changed_since_check(", ".join(report.changed), len(report.added))
    finally:
        check.stop()
        step.close()
    report.seconds = time.perf_counter() - started
    return report


# -- the build command -----------------------------------------------------------------------


def build(
    store: Store,
    paths: Sequence[str | Path],
    model: ModelOptions,
    store_options: StoreOptions,
    run: RunOptions,
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
    """Embed and add every new genome under `paths` (see `GenomeIndex.build`): the settings are
    resolved against the store's, the runner picked once, and `run_build` does the rest."""
    from genome_index.io.labels import read_labels
    from genome_index.search.hits import RESERVED

    if ray_address is not None and shard is not None:
        raise GenomeIndexError("--ray spreads the whole build over the cluster: leave out --shard")
    if ray_address is not None and embedder is not None:
        raise GenomeIndexError("a build on Ray loads the model on its workers: give no embedder")
    started = time.perf_counter()
    inputs = find_fasta_files(list(paths))
    files = shard_files(inputs, *shard) if shard is not None else inputs
    label_rows = read_labels(Path(labels), RESERVED) if labels else {}
    made_directory = store.prepare_directory()
    new_store = not store.exists()
    with undone_on_failure(store, new_store, made_directory), store.lock():
        stored = None if new_store else store.settings()
        asked = config.require(model, stored, store.directory) if stored else config.granted(model)
        asked, options = resolve(asked, store_options, stored)
        if stored is not None and asked.model not in (stored.model, stored.model_source):
            refuse_other_model(asked.model or "", stored)
        runner: Runner
        if ray_address is not None:
            from genome_index.build.cluster import RayRunner

            runner = RayRunner(ray_address, asked, run, options, ray_actors)
        else:
            runner = LocalRunner(embedder or Embedder(asked, run))
        wanted = runner.settings(options)
        if stored is None:
            store.create(wanted)
        elif (difference := stored.difference(wanted)) is not None:
            raise GenomeIndexError(differs(difference))
        report = run_build(store, files, runner, label_rows, progress, inputs, labels_from_duplicates, force)
    report.seconds = time.perf_counter() - started
    return report


def shard_files(files: list[Path], i: int, n: int) -> list[Path]:
    """The i-th (1-based) of n interleaved slices of the sorted inputs: every n-th file."""
    if not 1 <= i <= n:
        raise GenomeIndexError(f"--shard {i}/{n}: need 1 <= I <= N")
    return sorted(files)[i - 1 :: n]


@contextlib.contextmanager
def undone_on_failure(store: Store, new_store: bool, made_directory: bool) -> Iterator[None]:
    """A first build or merge that fails leaves no store behind (nor the folder it made)."""
    try:
        yield
    except BaseException:
        if new_store:
            store.discard_if_empty(made_directory)
        raise
