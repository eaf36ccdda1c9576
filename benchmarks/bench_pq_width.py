"""PQ sub-vector width: recall@10 and time of a 10-window query, 4-d against 8-d sub-vectors.

    python benchmarks/bench_pq_width.py [M ...]     # default: 128 256 (8-d and 4-d of 1,024-d)

1 M synthetic vectors (`bench_segments.genome_vectors`: 1,000 genomes of 1,000 1,024-d
windows), an in-memory IVF-PQ of 4,096 lists trained on a random sample of 159,744 of them (the
size a store trains on) for each M, searched with 100 queries of 10 windows (`bench_segments.queries`)
at several probes; recall@10 against exact search of the same vectors. What it decides:
`store.indexes.pq_subvectors`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine
from bench_segments import QUERY_WINDOWS, K, genome_vectors, queries

from genome_index.store.vectors import normalise

GENOMES, WINDOWS, DIM, LISTS, SAMPLE = 1000, 1000, 1024, 4096, 159_744


def main() -> None:
    widths = [int(m) for m in sys.argv[1:]] or [128, 256]
    print(f"machine: {describe_machine()}")
    vectors = normalise(np.concatenate([genome_vectors(g, WINDOWS, DIM) for g in range(GENOMES)]).astype(np.float32))
    wanted, _ = queries(GENOMES, WINDOWS, DIM)
    started = time.time()
    exact = np.zeros((len(wanted), K), dtype=np.int64)
    for lo in range(0, len(wanted), 100):
        exact[lo : lo + 100] = np.argsort(-(wanted[lo : lo + 100] @ vectors.T), axis=1)[:, :K]
    print(f"exact top-{K} of {len(wanted)} windows: {time.time() - started:.0f} s")
    sample = vectors[np.sort(np.random.default_rng(7).choice(len(vectors), SAMPLE, replace=False))]
    for m in widths:
        index = faiss.IndexIVFPQ(faiss.IndexFlatIP(DIM), DIM, LISTS, m, 8, faiss.METRIC_INNER_PRODUCT)
        index.cp.min_points_per_centroid = index.pq.cp.min_points_per_centroid = 1
        started = time.time()
        index.train(sample.copy())
        trained = time.time() - started
        started = time.time()
        index.add_with_ids(vectors, np.arange(len(vectors)))
        added = time.time() - started
        print(f"M={m} ({DIM // m}-d sub-vectors, {m} bytes a code): train {trained:.0f} s, add {added:.0f} s")
        for nprobe in (24, 32, 40, 48, 64):
            index.nprobe = nprobe
            seconds, found = [], []
            for lo in range(0, len(wanted), QUERY_WINDOWS):
                started = time.perf_counter()
                found.append(index.search(wanted[lo : lo + QUERY_WINDOWS], K)[1])
                seconds.append(time.perf_counter() - started)
            found = np.concatenate(found)
            recall = np.mean([len(set(a) & set(b)) / K for a, b in zip(found.tolist(), exact.tolist(), strict=True)])
            print(f"M={m} nprobe {nprobe}: p50 {1000 * np.median(seconds):.1f} ms, recall@{K} {recall:.4f}")


if __name__ == "__main__":
    main()
