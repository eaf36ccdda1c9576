"""`merge`: copy the genomes of stores built with the same settings into one."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

from genome_index import __version__
from genome_index.build.intake import unique_names
from genome_index.build.run import BuildReport, undone_on_failure
from genome_index.errors import GenomeIndexError
from genome_index.progress import SILENT, Progress, Step
from genome_index.settings import StoreSettings, differs
from genome_index.store import Store
from genome_index.store.writes import StoreWriter


def merge(store: Store, sources: Sequence[str | Path], progress: Progress = SILENT) -> BuildReport:
    """Copy every genome of other stores built with the same settings into `store` (see
    `GenomeIndex.merge`): ids renumbered, FAISS files rebuilt, a new store created if need be."""
    started = time.perf_counter()
    stores = [Store(source) for source in sources]
    if any(s.directory.resolve() == store.directory.resolve() for s in stores):
        raise GenomeIndexError(f"{store.directory} cannot be merged into itself")
    first = same_settings(stores)
    winners, genomes, bases = first_copies(stores)
    made_directory = store.prepare_directory()
    new_store = not store.exists()
    report = BuildReport()
    with undone_on_failure(store, new_store, made_directory), store.lock():
        if new_store:
            store.create(dataclasses.replace(first, tool_version=__version__))
        elif (difference := store.settings().difference(first)) is not None:
            raise GenomeIndexError(differs(difference))
        with store.session() as writer, progress.step("merging", bases, genomes=genomes) as step:
            settings = writer.settings()
            copy_genomes(writer, settings, stores, winners, report, step)
            step.close()  # before the indexing steps begin
            store.rewrite_faiss_after(writer, settings, f"{len(report.added)} genome(s) were merged into", progress)
    report.seconds = time.perf_counter() - started
    return report


def same_settings(stores: list[Store]) -> StoreSettings:
    """The sources' common settings; sources built with different ones are refused, naming the first difference."""
    first = stores[0].settings()
    for other in stores[1:]:
        if (difference := first.difference(other.settings())) is not None:
            name, have, want = difference
            raise GenomeIndexError(
                f"{stores[0].directory} was built with {name} {have!r}, {other.directory} with {want!r}; "
                "only stores built with the same settings merge"
            )
    return first


def first_copies(stores: list[Store]) -> tuple[dict[str, tuple[str, int]], int, int]:
    """Of each sequence, the copy kept: the one whose file sorts first, as a single build of all
    the inputs would keep it (sha -> (file, source number)); and the genomes and bases in all."""
    winners: dict[str, tuple[str, int]] = {}
    genomes = bases = 0
    for number, source in enumerate(stores):
        with source.reading() as reader:
            for sha, (_, _, file) in reader.genomes_by_sha().items():
                winners[sha] = min(winners.get(sha, (file, number)), (file, number))
            genomes, bases = genomes + reader.genome_count(), bases + reader.summary()[1]
    return winners, genomes, bases


def copy_genomes(
    writer: StoreWriter, settings: StoreSettings, stores: list[Store], winners: dict[str, tuple[str, int]],
    report: BuildReport, step: Step,
) -> None:  # fmt: skip
    """Add each source's genomes that are first copies and not stored yet (a taken name gets the
    folders that tell it apart, as in a build); the others are reported as duplicates."""
    here = {sha: name for sha, (_, name, _) in writer.genomes_by_sha().items()}
    names = set(here.values())
    for number, source in enumerate(stores):
        with source.reading() as reader:
            for genome in reader.stored_genomes(settings.dim):
                kept = here.get(genome.sha256)
                if kept is None and winners[genome.sha256][1] == number:
                    name = unique_names([Path(genome.file)], names)[Path(genome.file)]
                    genome = dataclasses.replace(genome, name=name) if name != genome.name else genome
                    gid, chunk_ids = writer.add_genome(genome, settings.vector_dtype)
                    here[genome.sha256] = genome.name
                    names.add(genome.name)
                    report.added.append((genome.name, gid, len(chunk_ids)))
                    report.bases += genome.length
                else:
                    same = kept or Path(winners[genome.sha256][0]).name
                    report.duplicates.append((f"{source.directory}:{genome.name}", same))
                step.advance(genome.length, genomes=1)
