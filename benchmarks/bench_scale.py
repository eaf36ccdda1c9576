"""Disk and memory per genome, measured on small stores, and what they come to at GTDB scale.

    python benchmarks/bench_scale.py [--genomes 12]

For two model shapes, NT-2.5B (2,560-d, 1000-token windows: about 1,000 anchored windows per
3 Mbp genome) and a 500M-class model such as NT v2 500M (1,024-d, 2048-token windows: about
500), and both vector dtypes, this commits synthetic 3 Mbp genomes (random vectors, packed
sequence, sketch) to real stores, in groups as a busy build's writer does (one genome a
transaction leaves DuckDB's file up to 1.5x larger), and measures metadata.duckdb, the vector
files beside it and each FAISS chunk index type (flat, hnsw, ivf-pq: the index a query holds
in memory; FAISS keeps float32 whatever the store's dtype) at N and 2N genomes (N = --genomes, at least 12,000
vectors so that ivf-pq trains). The difference is the cost of one more genome; what is left
of the size at N is fixed (ivf-pq's codebooks). It prints both, then fixed + per genome x
genomes for 10 k, 100 k and 1 M genomes (hnsw: measured at N only, its links are per vector).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine
from bench_ray import genome

from genome_index.build.writer import COMMIT_GROUP_BYTES
from genome_index.settings import StoreSettings
from genome_index.store import Store
from genome_index.store.indexes import build_faiss

SHAPES = {"NT-2.5B (2,560-d)": (2560, 1000), "500M-class (1,024-d)": (1024, 500)}
SIZES = (10_000, 100_000, 1_000_000)


def human(size: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size / 1e3:.0f} kB"


def store_size(genomes: int, dim: int, windows: int, dtype: str) -> tuple[int, int]:
    """metadata.duckdb's bytes beyond an empty store's, checkpointed, and the vector files' beside
    it, once `genomes` are committed as a build's writer commits genomes that queue up: in
    groups of COMMIT_GROUP_BYTES."""
    settings = StoreSettings(
        model="bench", model_source="bench", model_revision="bench", layer=0, chunk_tokens=1000, chunking="anchored",
        anchor_radius=1498, overlap=0, dim=dim, index_type="flat", vector_dtype=dtype, sketch_scaled=1000,
    )  # fmt: skip
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "store")
        store.directory.mkdir()
        store.create(settings)
        empty = store.db_path.stat().st_size
        group: list = []
        with store.session() as writer:
            for i in range(genomes):
                new = genome(rng, i, windows, dim)
                # float32 drawn as float32: float16 values widened would leave zero bits that compress
                new.vectors, new.chunk_sum = rng.normal(size=new.vectors.shape).astype(np.float32), None
                group.append(new)
                if sum(g.vectors.nbytes for g in group) >= COMMIT_GROUP_BYTES or i == genomes - 1:
                    writer.add_genomes(group, dtype)
                    group = []
        vectors = sum(path.stat().st_size for path in (store.directory / "vectors").glob("*"))
        return store.db_path.stat().st_size - empty, vectors


def faiss_size(genomes: int, dim: int, windows: int, kind: str) -> int:
    """Bytes of a chunk index of `kind` over the vectors of `genomes` genomes, as a file (what a
    query loads into memory)."""
    vectors = np.random.default_rng(1).normal(size=(genomes * windows, dim)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "index.faiss")
        faiss.write_index(build_faiss(np.arange(len(vectors), dtype=np.int64), vectors, dim, kind), path)
        return Path(path).stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--genomes", type=int, default=12, help="N: stores of N and 2N genomes are measured")
    args = parser.parse_args()
    print(f"machine: {describe_machine()}")
    for shape, (dim, windows) in SHAPES.items():
        n = max(args.genomes, -(-12_000 // windows))
        print(f"\n{shape}, {windows} windows per 3 Mbp genome, measured at {n} and {2 * n} genomes:")
        sizes: dict[str, tuple[float, float]] = {}  # what: (fixed bytes, bytes per genome)
        for dtype in ("float32", "float16"):
            measured = store_size(n, dim, windows, dtype), store_size(2 * n, dim, windows, dtype)
            for part, what in enumerate(("metadata.duckdb", f"vector files, {dtype}")):
                one, two = measured[0][part], measured[1][part]
                sizes[what] = (one - (two - one), (two - one) / n)
        for kind in ("flat", "ivf-pq"):
            one, two = faiss_size(n, dim, windows, kind), faiss_size(2 * n, dim, windows, kind)
            sizes[f"FAISS chunk index, {kind}"] = (one - (two - one), (two - one) / n)
        sizes["FAISS chunk index, hnsw"] = (0, faiss_size(n, dim, windows, "hnsw") / n)
        sizes["FAISS genome index (flat)"] = (0, dim * 4 + 16)
        print(f"   {'':<28}{'fixed':>10}{'per genome':>12}" + "".join(f"{f'{k:,} genomes':>18}" for k in SIZES))
        for what, (fixed, per) in sizes.items():
            totals = "".join(f"{human(max(fixed, 0) + per * k):>18}" for k in SIZES)
            print(f"   {what:<28}{human(max(fixed, 0)):>10}{human(per):>12}{totals}")


if __name__ == "__main__":
    main()
