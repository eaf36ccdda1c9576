"""Search at scale: FAISS index types over synthetic vectors, and a real query on a big store.

    python benchmarks/bench_query.py                       # 1,000,000 vectors of dimension 1024
    python benchmarks/bench_query.py --n 100000            # quicker
    python benchmarks/bench_query.py --skip-index-types --store-genomes 1000

Index types: clustered synthetic vectors (a centre per 1,000 vectors plus noise), built with
genome-index's own `build_faiss` and searched with its `search` (ivf-pq re-scores
candidates with the exact vectors, as a store does from DuckDB). For each type: build time,
index size in memory, median and p99 latency of a 10-chunk query, recall@10 against exact
search. Then the recall cost of keeping vectors as float16.

Store query: a store of N genomes (3 Mbp each in windows of the default chunking's mean size,
chunk vectors drawn at random) is filled
through the store's own commit path; one 5 Mbp random genome is queried with nt-tiny on the
CPU, reporting the time spent embedding the query and searching, in both modes.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import faiss
from _machine import describe_machine

from genome_index.settings import INDEX_TYPES, QueryOptions, RunOptions, StoreOptions
from genome_index.store.indexes import build_faiss, search
from genome_index.store.vectors import normalise


def clustered(n: int, dim: int, rng: np.random.Generator, latent: int = 64) -> np.ndarray:
    """Clusters (a centre per 1,000 vectors) in a 64-d latent space, projected to `dim` with a
    little noise: like real embeddings, high-dimensional but of low intrinsic dimension."""
    centres = rng.normal(size=(max(n // 1000, 1), latent)).astype(np.float32)
    points = centres[rng.integers(len(centres), size=n)]
    points += 0.5 * rng.normal(size=(n, latent)).astype(np.float32)
    projection = rng.normal(size=(latent, dim)).astype(np.float32) / np.sqrt(latent)
    vectors = points @ projection
    vectors += 0.05 * rng.normal(size=(n, dim)).astype(np.float32)
    return normalise(vectors)


def recall_at_10(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth, strict=True)]))


def bench_index_types(n: int, dim: int, n_queries: int, types: list[str]) -> None:
    rng = np.random.default_rng(0)
    print(f"generating {n:,} clustered vectors of dimension {dim} ...", flush=True)
    vectors = clustered(n, dim, rng)
    ids = np.arange(1, n + 1, dtype=np.int64)
    picks = rng.integers(n, size=(n_queries, 10))
    queries = [normalise(vectors[p] + 0.05 * rng.normal(size=(10, dim)).astype(np.float32)) for p in picks]
    exact = faiss.IndexFlatIP(dim)
    exact.add(vectors)
    truth = [ids[exact.search(q, 10)[1]] for q in queries]
    del exact

    def fetch(wanted: np.ndarray) -> np.ndarray:
        return vectors[wanted - 1]

    print(f"\n{'index':8} {'build s':>9} {'memory MB':>10} {'median ms':>10} {'p99 ms':>8} {'recall@10':>10}")
    for index_type in types:
        start = time.perf_counter()
        index = build_faiss(ids, vectors, dim, index_type)
        built = time.perf_counter() - start
        size = faiss.serialize_index(index).nbytes / 1e6
        latencies, recalls = [], []
        for q, t in zip(queries, truth, strict=True):
            start = time.perf_counter()
            found = search(index, q, 10, fetch)[1]
            latencies.append((time.perf_counter() - start) * 1000)
            recalls.append(recall_at_10(found, t))
        print(
            f"{index_type:8} {built:9.1f} {size:10.0f} {np.median(latencies):10.2f} "
            f"{np.percentile(latencies, 99):8.2f} {np.mean(recalls):10.3f}",
            flush=True,
        )
        del index

    half = normalise(vectors.astype(np.float16).astype(np.float32))
    exact = faiss.IndexFlatIP(dim)
    exact.add(half)
    half_recall = np.mean([recall_at_10(ids[exact.search(q, 10)[1]], t) for q, t in zip(queries, truth, strict=True)])
    print(
        f"\nfloat16 vectors: recall@10 {half_recall:.4f} of exact float32 search; "
        f"{dim * 2} instead of {dim * 4} bytes per vector in DuckDB"
    )


def bench_store_query(n_genomes: int, query_mbp: float) -> None:
    from genome_index.api import GenomeIndex
    from genome_index.embedding.embedder import Embedder
    from genome_index.store.rows import NewGenome

    rng = np.random.default_rng(1)
    embedder = Embedder("nt-tiny", RunOptions(device="cpu"))
    # 3 Mbp per genome in windows of the default chunking's mean size (anchored: about half a full window)
    chunk_bp = 2997 if embedder.chunker.chunking == "anchored" else 5994
    dim, chunks_per_genome = embedder.dim, 3_000_000 // chunk_bp
    with tempfile.TemporaryDirectory() as tmp:
        index = GenomeIndex(Path(tmp) / "store")
        settings = embedder.settings(StoreOptions("flat", "float32", 1000))
        index.store.directory.mkdir()
        index.store.create(settings)
        start = time.perf_counter()
        with index.store.session() as writer:
            for g in range(n_genomes):
                starts = np.arange(chunks_per_genome) * chunk_bp
                genome = NewGenome(
                    name=f"genome{g:04d}",
                    file=f"genome{g:04d}.fna",
                    sha256=f"{g:064x}",
                    length=chunks_per_genome * chunk_bp,
                    gc=0.33,
                    n_count=0,
                    records=[
                        {
                            "name": "chr",
                            "description": "chr",
                            "length": chunks_per_genome * chunk_bp,
                            "gc": 0.33,
                            "n_count": 0,
                        }
                    ],
                    chunks={
                        "record": np.zeros(chunks_per_genome, int),
                        "start": starts,
                        "end": starts + chunk_bp,
                        "n_tokens": np.full(chunks_per_genome, chunk_bp // 6 + 1),
                        "gc": np.full(chunks_per_genome, 0.33),
                        "n_count": np.zeros(chunks_per_genome, int),
                    },
                    vectors=rng.normal(size=(chunks_per_genome, dim)).astype(np.float32),
                    labels={},
                    sketch=np.sort(rng.integers(0, 2**63, 3000, dtype=np.uint64)),
                    sketch_scaled=settings.sketch_scaled,
                    sequences=None,  # a scale test of the search: no sequences to align
                )
                writer.add_genome(genome, settings.vector_dtype)
            index.store.rewrite_faiss(writer, settings)
        filled = time.perf_counter() - start
        query = Path(tmp) / "query.fa"
        sequence = rng.choice(np.frombuffer(b"ACGT", np.uint8), int(query_mbp * 1e6)).tobytes()
        query.write_bytes(b">query\n" + sequence + b"\n")
        print(f"\nstore: {n_genomes:,} genomes, {n_genomes * chunks_per_genome:,} chunks (filled in {filled:.0f} s)")
        for mode in ("genome", "chunks"):
            timings: dict[str, float] = {}
            start = time.perf_counter()
            index.query(
                query, QueryOptions(k=10, mode=mode, frames=False, align=False), embedder=embedder, timings=timings
            )
            total = time.perf_counter() - start
            print(
                f"query {query_mbp:g} Mbp, {mode:6} mode: {total:6.1f} s = "
                f"embedding {timings['embed_s']:.1f} s "
                f"(both strands, nt-tiny on CPU) + search {timings['search_s'] * 1000:.0f} ms"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--queries", type=int, default=200, help="10-chunk queries per index type")
    parser.add_argument("--types", default=",".join(INDEX_TYPES))
    parser.add_argument("--skip-index-types", action="store_true")
    parser.add_argument("--store-genomes", type=int, default=1000)
    parser.add_argument("--query-mbp", type=float, default=5.0)
    args = parser.parse_args()
    print(f"machine: {describe_machine()}")
    if not args.skip_index_types:
        bench_index_types(args.n, args.dim, args.queries, args.types.split(","))
    if args.store_genomes:
        bench_store_query(args.store_genomes, args.query_mbp)
    print(f"\npeak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.1f} GB")


if __name__ == "__main__":
    main()
