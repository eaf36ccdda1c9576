"""`backfill-sequences`: store the sequences an older store lacks, from the genomes' own files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from genome_index.io.fasta import find_fasta_files, read_genome
from genome_index.io.sequences import pack
from genome_index.progress import SILENT, Progress
from genome_index.store import Store


def backfill_sequences(store: Store, paths: Sequence[str | Path], progress: Progress = SILENT) -> dict[str, list[str]]:
    """Store the sequences of genomes that have none (stores built before sequences were kept),
    read from their FASTA files: a file is used only when its sequence's SHA-256 is a stored
    genome's. Returns the names filled, the files that are no stored genome or whose genome has
    its sequence already, and the genomes still without one."""
    files = find_fasta_files(list(paths))
    report: dict[str, list[str]] = {"filled": [], "already": [], "unknown": [], "missing": []}
    store.require()
    with store.lock(), progress.step("storing sequences", len(files), "files") as step:
        for path in files:
            genome = read_genome(path)
            with store.reading() as reader:
                stored = reader.genome_with_sha(genome.sha256)
                kept = stored is not None and reader.has_sequence(stored[0])
            if stored is None:
                report["unknown"].append(str(path))
            elif kept:
                report["already"].append(str(path))
            else:
                packed = [pack(r.sequence, r.line_width) for r in genome.records]
                with store.session() as writer:  # a short session a genome: readers get in
                    writer.backfill_sequences(stored[0], packed)
                report["filled"].append(stored[1])
            step.advance(1)
        with store.reading() as reader:
            names = reader.genome_names()
            report["missing"] = sorted(names[gid] for gid in reader.genomes_without_sequences().values())
    return report
