"""What bounds a query on this machine, stage by stage, where no code of ours is left to cut.

    python benchmarks/bench_latency.py --work /tmp/lat --searcher-only   # first: the store and fragments
    python benchmarks/bench_floors.py --work /tmp/lat

On bench_latency's store (its genomes and 10 kb fragments, reused from --work), one run prints,
with the machine:
- the candidate stage's exact scan: the rows of 2,080-d float32 vectors each 10 kb fragment's
  windows meet, the seconds of that matrix product, and the bytes a second it reads (a full
  scan where a fragment has too few sketch hashes to name its genomes); and what reading half
  the bytes from a float16 copy would cost first (numpy widening them to float32);
- minimap2 (asm10, as `search.align`) for 10 kb fragments against every synthetic genome,
  per setting: ms a pair where it aligns and where it chains but finds no alignment, whether
  any alignment changed, and how many short elements (150 bp to 2 kb at 0, 2 and 5 %
  divergence, inside an unrelated 10 kb) each setting still finds;
- a whole synthetic genome against each genome of its species: seconds a pair.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # before numpy loads, as genome_index sets it
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine
from bench_retrieval import mutate

import genome_index.store.indexes as indexes
from genome_index.api import GenomeIndex
from genome_index.io.fasta import read_genome

SETTINGS: dict[str, dict[str, int]] = {
    "defaults": {}, "min_chain_score=200": {"min_chain_score": 200}, "min_chain_score=500": {"min_chain_score": 500},
    "min_chain_score=1000": {"min_chain_score": 1000}, "best_n=1": {"best_n": 1}, "bw=200": {"bw": 200},
    "bw_long=1000": {"bw_long": 1000},
}  # fmt: skip
ELEMENTS = [(length, rate) for length in (150, 200, 300, 500, 1_000, 2_000) for rate in (0.0, 0.02, 0.05)]


def scan_figures(store: Path, fragments: list[Path]) -> str:
    """Rows, ms and GB/s of the exact chunk scans of warm queries of `fragments` (--no-align)."""
    scans: list[tuple[int, int, float]] = []
    top_k = indexes._flat_top_k

    def timed(stored: np.ndarray, blocks: list[tuple[int, int]], queries: np.ndarray, *rest: Any) -> Any:
        started = time.perf_counter()
        found = top_k(stored, blocks, queries, *rest)
        scans.append((sum(hi - lo for lo, hi in blocks), len(queries), time.perf_counter() - started))
        return found

    indexes._flat_top_k = timed
    try:
        with GenomeIndex(store).searcher() as searcher:
            for path in fragments[:5]:
                searcher.query(path, align=False)
            scans.clear()
            for path in fragments:
                searcher.query(path, align=False)
    finally:
        indexes._flat_top_k = top_k
    chunk = [s for s in scans if s[0] > 1_000]  # the genome index's own few rows aside
    full = max(rows for rows, _, _ in chunk)
    lines = []
    for name, every in (("named genomes", False), ("every window", True)):
        if kept := [scan for scan in chunk if (scan[0] == full) == every]:
            rows, vectors, seconds = (np.array(column, dtype=float) for column in zip(*kept, strict=True))
            rate = (rows * 2_080 * 4 / seconds).mean() / 1e9
            lines.append(
                f"{name}: {len(kept)} scans, {rows.mean():,.0f} rows x {vectors.mean():.1f} query vectors, "
                f"{seconds.mean() * 1000:.1f} ms, {rate:.1f} GB/s of vectors read"
            )
    return "; ".join(lines)


def float16_figures(store: Path, rows: int = 10_252, repeats: int = 5) -> str:
    """What a float16 copy of the vectors would cost: widening `rows` of them to float32 (numpy,
    as BLAS needs) against scanning them in float32 with 4 query vectors."""
    import faiss

    index = faiss.read_index(str(store / "chunks.faiss"))
    stored = indexes.flat_vectors(faiss.downcast_index(index.index))[:rows]
    half, queries = stored.astype(np.float16), np.ascontiguousarray(stored[:4].T)
    timed = []
    for work in (lambda: half.astype(np.float32), lambda: stored @ queries):
        work()
        started = time.perf_counter()
        for _ in range(repeats):
            work()
        timed.append((time.perf_counter() - started) / repeats * 1000)
    return f"widening {len(stored):,} float16 rows {timed[0]:.1f} ms, scanning them in float32 {timed[1]:.1f} ms"


def aligner(records: list[bytes], **options: int) -> Any:
    import mappy

    with tempfile.NamedTemporaryFile(suffix=".fa") as handle:
        handle.write(b"".join(b">%d\n%s\n" % (i, sequence) for i, sequence in enumerate(records)))
        handle.flush()
        return mappy.Aligner(handle.name, preset="asm10", **options)


def explained(hits: list[Any]) -> int:
    return sum(hit.q_en - hit.q_st - hit.NM for hit in hits if hit.is_primary)


def minimap2_settings(genomes: dict[str, list[bytes]], fragments: list[bytes], seed: int) -> list[str]:
    """Per setting: ms a pair (aligned; chained but unaligned), alignments changed, elements found."""
    kinds: dict[tuple[int, str], str] = {}
    reference: dict[tuple[int, str], int] = {}
    lines = []
    for setting, options in SETTINGS.items():
        mappers = {name: aligner(records, **options) for name, records in genomes.items()}
        spent: dict[str, list[float]] = {"aligned": [], "unaligned": []}
        changed = 0
        for number, fragment in enumerate(fragments):
            for name, mapper in mappers.items():
                started = time.perf_counter()
                hits = list(mapper.map(fragment))
                seconds = time.perf_counter() - started
                if setting == "defaults":
                    kinds[number, name] = "aligned" if hits else ("unaligned" if seconds > 1e-3 else "unrelated")
                    reference[number, name] = explained(hits)
                if kinds[number, name] != "unrelated":
                    spent[kinds[number, name]].append(seconds)
                    changed += explained(hits) != reference[number, name]
        found = elements(mappers, genomes, np.random.default_rng(seed))  # the same elements for every setting
        lines.append(
            f"{setting:<21} aligned {np.mean(spent['aligned']) * 1000:.2f} ms (n={len(spent['aligned'])}), "
            f"chained but unaligned {np.mean(spent['unaligned']) * 1000:.2f} ms (n={len(spent['unaligned'])}), "
            f"pairs changed {changed}; short elements found {found}"
        )
    return lines


def elements(mappers: dict[str, Any], genomes: dict[str, list[bytes]], rng: np.random.Generator) -> str:
    """How many of 5 elements of each (length, divergence) of ELEMENTS a setting aligns (100 bp
    or more, as `search.align` lists), each cut from one genome into 10 kb of an unrelated one."""
    names = sorted(genomes)
    host, target = genomes[names[-1]][0], names[0]  # two species apart: no shared sequence
    counts = []
    for length, rate in ELEMENTS:
        hits = 0
        for _ in range(5):
            source = genomes[target][0]
            start, at = int(rng.integers(len(source) - length)), int(rng.integers(len(host) - 10_000))
            piece = mutate(rng, np.frombuffer(source[start : start + length], np.uint8), rate).tobytes()
            query = host[at : at + 5_000] + piece + host[at + 5_000 : at + 10_000 - length]
            hits += any(hit.is_primary and hit.q_en - hit.q_st >= 100 for hit in mappers[target].map(query))
        counts.append(f"{length}/{rate:.0%} {hits}")
    return ", ".join(counts)


def whole_genomes(genomes: dict[str, list[bytes]], query: str) -> str:
    """Seconds of minimap2 (asm10) mapping the genome `query` to each genome of its species."""
    species = query.rsplit("_", 1)[0]
    timings = []
    for name, records in sorted(genomes.items()):
        if name.startswith(species + "_"):
            mapper = aligner(records)
            started = time.perf_counter()
            hits = [hit for sequence in genomes[query] for hit in mapper.map(sequence) if hit.is_primary]
            aligned = sum(hit.q_en - hit.q_st for hit in hits)
            timings.append(f"{name} {time.perf_counter() - started:.2f} s ({aligned / 1e6:.2f} Mbp aligned)")
    return "; ".join(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="bench_latency.py's --work folder")
    parser.add_argument("--fragments", type=int, default=20, help="10 kb fragments to time minimap2 on")
    args = parser.parse_args()
    print(describe_machine())
    fragments = sorted(args.work.glob("f10000_*.fa"))
    scans = scan_figures(args.work / "index", fragments)
    print(f"candidates, the exact scan of {len(fragments)} 10 kb fragments: {scans}")
    print(f"a float16 copy: {float16_figures(args.work / 'index')}")
    genomes = {
        path.stem: [record.sequence for record in read_genome(path).records]
        for path in sorted((args.work / "genomes").glob("species*_*.fa"))
    }
    queries = [read_genome(path).records[0].sequence for path in fragments[: args.fragments]]
    print(f"minimap2, {len(queries)} 10 kb fragments x {len(genomes)} synthetic genomes:")
    for line in minimap2_settings(genomes, queries, seed=5):
        print(f"  {line}")
    for query in ("species0_0", "species0_3"):
        print(f"a whole genome, {query}, against its species: {whole_genomes(genomes, query)}")


if __name__ == "__main__":
    main()
