"""The commit ceiling of one writer: how many GPUs' worth of genomes one process can store.

    python benchmarks/bench_commit.py [--genomes 40] [--dim 2560] [--windows 1000]

Any multi-GPU build (shards, or one driver fed by many GPUs) ends in one process that
commits genomes to DuckDB and adds them to FAISS, one transaction a genome. This feeds that
path precomputed vectors of NT-2.5B width (2,560, float16, the store's --vector-dtype
float16) for 3 Mbp genomes (1,000 windows each, the anchored default's mean of 3 kb; with
their packed sequence and sketch), and prints genomes/s, vectors/s and MB/s of vectors
committed, then how many GPUs at the H100 engine rate of ../shared/DESIGN.md (105,700
tokens/s with torch.compile, 6 bp a token: 0.63 Mbp/s, one 3 Mbp genome every 4.7 s) one
such process keeps up with.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine

from genome_index.sequences import pack
from genome_index.settings import StoreSettings
from genome_index.store import Store
from genome_index.store.indexes import build_faiss
from genome_index.store.vectors import normalise
from genome_index.store.writes import NewGenome, add_genome

H100_TOKENS_PER_S = 105_700  # ../shared/DESIGN.md, NT-2.5B shape, bf16 + SDPA + torch.compile
BP_PER_TOKEN = 6
GENOME_BP = 3_000_000


def genome(rng: np.random.Generator, number: int, windows: int, dim: int) -> NewGenome:
    """A 3 Mbp genome's rows as a build would commit them, with random vectors."""
    size = GENOME_BP // windows
    starts = np.arange(windows) * size
    sequence = np.frombuffer(b"ACGT", np.uint8)[rng.integers(0, 4, GENOME_BP)].tobytes()
    return NewGenome(
        name=f"genome{number:05d}", file=f"genome{number:05d}.fna", sha256=f"{number:064x}", length=GENOME_BP,
        gc=0.33, n_count=0,
        records=[{"name": "chr", "description": "chr", "length": GENOME_BP, "gc": 0.33, "n_count": 0}],
        chunks={
            "record": np.zeros(windows, int), "start": starts, "end": starts + size,
            "n_tokens": np.full(windows, size // BP_PER_TOKEN + 1), "gc": np.full(windows, 0.33),
            "n_count": np.zeros(windows, int),
        },
        vectors=rng.normal(size=(windows, dim)).astype(np.float32), labels={},
        sketch=np.sort(rng.integers(0, 2**63, 3000, dtype=np.uint64)), sketch_scaled=1000,
        sequences=[pack(sequence, 80)],
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--genomes", type=int, default=40)
    parser.add_argument("--dim", type=int, default=2560)
    parser.add_argument("--windows", type=int, default=1000, help="windows per 3 Mbp genome")
    args = parser.parse_args()
    print(f"machine: {describe_machine()}")
    rng = np.random.default_rng(0)
    made = [genome(rng, i, args.windows, args.dim) for i in range(args.genomes)]  # made before the clock starts
    settings = StoreSettings(
        model="bench", model_source="bench", model_revision="bench", layer=0, chunk_tokens=1000, chunking="anchored",
        anchor_radius=1498, overlap=0, dim=args.dim, index_type="flat", vector_dtype="float16", sketch_scaled=1000,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "store")
        store.directory.mkdir()
        store.create(settings)
        index = build_faiss(np.zeros(0, np.int64), np.zeros((0, args.dim), np.float32), args.dim, "flat")
        started = time.perf_counter()
        with store.connect(read_only=False) as con:
            for new in made:
                _, ids = add_genome(con, new, "float16")
                index.add_with_ids(normalise(new.vectors), ids)
        store.write_faiss("chunks", index)
        seconds = time.perf_counter() - started
    vectors = args.genomes * args.windows
    rate = args.genomes / seconds
    gpu_genomes_per_s = H100_TOKENS_PER_S * BP_PER_TOKEN / GENOME_BP
    print(
        f"committed {args.genomes} genomes of 3 Mbp ({vectors:,} vectors of {args.dim} float16, with sequences and "
        f"sketches) in {seconds:.1f} s: {rate:.2f} genomes/s, {vectors / seconds:,.0f} vectors/s, "
        f"{vectors * args.dim * 2 / seconds / 1e6:.0f} MB/s of vectors"
    )
    print(
        f"one H100 embeds a 3 Mbp genome every {1 / gpu_genomes_per_s:.1f} s: this writer keeps up with "
        f"{rate / gpu_genomes_per_s:.0f} GPUs"
    )


if __name__ == "__main__":
    main()
