"""Anchored against fixed windows: how many, how long, what cutting costs, and batch padding.

    python benchmarks/bench_windows.py [--batch-tokens 65536]

On the S. aureus assemblies in ../shared/data/staph (the example excerpts when it is missing),
with nt-tiny's tokenizer (the NT 6-mer vocabulary, 1,000-token windows), for each chunking:
windows per genome and their mean length, the time to cut and tokenise a genome (median, in
the same run for both), and the padding of length-sorted batches of --batch-tokens (the GPU
default) for one genome alone and for all of them sorted together, as `build` groups them:
as the engine plans the batches (`engine.plan_batches`) and, for comparison, with every batch
filled to the budget. Last, what the plan saves in time: nt-tiny on this machine's CPU (its
default budget) embeds each example genome in its own call, as a query does, with planned and
with filled batches, alternating, best of three; and what planning itself costs for 200,000
one-read records (4-8 tokens each, the CPU budget).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from unittest.mock import patch

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine

from genome_index.embedding import engine
from genome_index.embedding.embedder import Embedder
from genome_index.embedding.reference import filled_batches
from genome_index.io.fasta import read_genome
from genome_index.settings import ModelOptions, RunOptions

ROOT = Path(__file__).resolve().parent.parent
STAPH = ROOT.parent / "shared" / "data" / "staph"


def padding(embedder: Embedder, chunks: list, planned: bool = True) -> float:
    """Padded tokens over real tokens of length-sorted batches of `chunks`: the engine's own
    (planned) or each filled to the token budget."""
    if planned:
        padded = sum(ids.size for _, ids, _ in embedder.engine.batches(chunks))
    else:
        widths = np.sort([c.n_tokens for c in chunks])[::-1]
        padded = sum((stop - start) * widths[start] for start, stop in filled_batches(widths, embedder.batch_tokens))
    return padded / sum(c.n_tokens for c in chunks) - 1


def time_plans() -> None:
    """Seconds to embed each example genome in its own call, planned against filled batches."""
    embedder = Embedder("nt-tiny", RunOptions(device="cpu"))
    per_genome = [embedder.chunk(read_genome(p)) for p in sorted((ROOT / "examples" / "genomes").glob("*.fna.gz"))]
    embedder.embed_chunks(per_genome[0])  # warm-up
    best = {"planned": np.inf, "filled": np.inf}
    for _ in range(3):
        for name, cut in (
            ("planned", engine.plan_batches),
            ("filled", lambda widths, budget, _: filled_batches(widths, budget)),
        ):
            with patch.object(engine, "plan_batches", cut):
                start = time.perf_counter()
                for chunks in per_genome:
                    embedder.embed_chunks(chunks)
                best[name] = min(best[name], time.perf_counter() - start)
    widths = np.sort(np.random.default_rng(0).integers(4, 9, 200_000))[::-1]
    start = time.perf_counter()
    engine.plan_batches(widths, embedder.batch_tokens, embedder.batch_tokens * engine.BATCH_COST)
    print(f"planning the batches of 200,000 one-read records: {time.perf_counter() - start:.2f} s")
    planned, full = best["planned"], best["filled"]
    print(
        f"nt-tiny, CPU, --batch-tokens {embedder.batch_tokens}, 4 example genomes one call each: planned "
        f"{planned:.2f} s, filled {full:.2f} s: planned batches {full / planned:.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-tokens", type=int, default=65536)
    args = parser.parse_args()
    folder = STAPH if STAPH.is_dir() else ROOT / "examples" / "genomes"
    genomes = [read_genome(p) for p in sorted(folder.glob("*.fna.gz"))]
    print(f"machine: {describe_machine()}")
    print(f"genomes: {len(genomes)} from {folder}, {np.mean([g.length for g in genomes]) / 1e6:.2f} Mbp on average")
    print("padding: planned batches (batches filled to the budget)")
    print("chunking  windows/genome  mean bp  cut+tokenise s/genome  padding: one genome     all sorted together")
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
        alone = [np.mean([padding(embedder, chunks, planned) for chunks in per_genome]) for planned in (True, False)]
        together = [padding(embedder, windows, planned) for planned in (True, False)]
        print(
            f"{chunking:8}  {len(windows) / len(genomes):14.0f}  {mean_bp:7.0f}  {np.median(seconds):21.2f}  "
            f"{alone[0]:13.1%} ({alone[1]:5.1%})  {together[0]:13.1%} ({together[1]:5.1%})"
        )
    time_plans()


if __name__ == "__main__":
    main()
