"""Anchored against fixed windows: how many, how long, what cutting costs, and batch padding.

    python benchmarks/bench_windows.py [--batch-tokens 65536]

On the S. aureus assemblies in ../shared/data/staph (the example excerpts when it is missing),
with nt-tiny's tokenizer (the NT 6-mer vocabulary, 1,000-token windows), for each chunking:
windows per genome and their mean length, the time to cut and tokenise a genome (median, in
the same run for both), and the padding of length-sorted batches of --batch-tokens (the GPU
default) for one genome alone and for all of them sorted together, as `build` groups them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine

from genome_index.embed import Embedder
from genome_index.fasta import read_genome
from genome_index.settings import ModelOptions, RunOptions

ROOT = Path(__file__).resolve().parent.parent
STAPH = ROOT.parent / "shared" / "data" / "staph"


def padding(embedder: Embedder, chunks: list) -> float:
    """Padded tokens over real tokens of the engine's own batches of `chunks`."""
    real = sum(c.n_tokens for c in chunks)
    return sum(ids.size for _, ids in embedder._batches(chunks)) / real - 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-tokens", type=int, default=65536)
    args = parser.parse_args()
    folder = STAPH if STAPH.is_dir() else ROOT / "examples" / "genomes"
    genomes = [read_genome(p) for p in sorted(folder.glob("*.fna.gz"))]
    print(f"machine: {describe_machine()}")
    print(f"genomes: {len(genomes)} from {folder}, {np.mean([g.length for g in genomes]) / 1e6:.2f} Mbp on average")
    print("chunking  windows/genome  mean bp  cut+tokenise s/genome  padding: one genome  all sorted together")
    for chunking in ("fixed", "anchored"):
        embedder = Embedder(
            ModelOptions("nt-tiny", chunking=chunking), RunOptions(device="cpu", batch_tokens=args.batch_tokens)
        )
        per_genome, seconds = [], []
        for genome in genomes:
            start = time.perf_counter()
            per_genome.append(embedder.chunk(genome))
            seconds.append(time.perf_counter() - start)
        windows = [c for chunks in per_genome for c in chunks]
        mean_bp = np.mean([c.end - c.start for c in windows])
        alone = np.mean([padding(embedder, chunks) for chunks in per_genome])
        print(
            f"{chunking:8}  {len(windows) / len(genomes):14.0f}  {mean_bp:7.0f}  {np.median(seconds):21.2f}  "
            f"{100 * alone:18.1f} %  {100 * padding(embedder, windows):18.1f} %"
        )


if __name__ == "__main__":
    main()
