"""What verified hits cost: query latency with and without --align, and store disk with sequences.

    python benchmarks/bench_align.py [--repeats 5]

The store: the four S. aureus assemblies of ../shared/data/staph (the example excerpts when
it is missing), kmer:6, the default windows. Queries: fragments of 2, 10 and 50 kb of one of
them with 1 % substitutions, and a 5 Mbp genome (that assembly whole plus 2.2 Mbp of another
strain, 1 % substitutions), each with the model loaded once. Each query runs without
alignment, with it as a one-shot command does (the candidates' minimap2 indexes built for the
query), and with the indexes kept from the query before (as a resident searcher keeps them);
the median of --repeats runs is printed with the ratio to the query without alignment. Disk:
a fresh copy of metadata.duckdb against a fresh copy of every table but `sequences`. Memory:
the process's resident size before and after an `Aligners` indexes every stored genome.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine

from genome_index.api import GenomeIndex
from genome_index.embedding.embedder import Embedder
from genome_index.io.fasta import read_genome
from genome_index.search.align import Aligners
from genome_index.settings import ModelOptions, QueryOptions, RunOptions
from genome_index.store import TABLES

ROOT = Path(__file__).resolve().parent.parent
STAPH = ROOT.parent / "shared" / "data" / "staph"
BASES = np.frombuffer(b"ACGT", np.uint8)


def mutate(rng: np.random.Generator, sequence: bytes, rate: float = 0.01) -> bytes:
    out = np.frombuffer(sequence, np.uint8).copy()
    where = np.flatnonzero(rng.random(len(out)) < rate)
    out[where] = BASES[(np.searchsorted(BASES, out[where]) + rng.integers(1, 4, len(where))) % 4]
    return out.tobytes()


def queries(folder: Path, files: list[Path], rng: np.random.Generator) -> dict[str, Path]:
    """Fragments of 2, 10 and 50 kb of the first genome and a 5 Mbp genome, as FASTA files."""
    first, second = read_genome(files[0]), read_genome(files[-1])
    chromosome = max(first.records, key=lambda r: len(r.sequence)).sequence
    out = {}
    for length in (2_000, 10_000, 50_000):
        start = int(rng.integers(0, len(chromosome) - length))
        out[f"{length // 1000} kb"] = folder / f"fragment_{length}.fa"
        out[f"{length // 1000} kb"].write_bytes(b">q\n" + mutate(rng, chromosome[start : start + length]) + b"\n")
    records = [r.sequence for r in first.records]
    records.append(mutate(rng, max(second.records, key=lambda r: len(r.sequence)).sequence[: 5_000_000 - first.length]))
    big = folder / "genome_5mbp.fa"
    big.write_bytes(b"".join(b">r%d\n%s\n" % (i, mutate(rng, s)) for i, s in enumerate(records)))
    out[f"{sum(len(s) for s in records) / 1e6:.1f} Mbp genome"] = big
    return out


def timed(index: GenomeIndex, query: Path, embedder: Embedder, align: bool, aligners: Aligners | None) -> float:
    started = time.perf_counter()
    index.query(query, QueryOptions(align=align), embedder=embedder, aligners=aligners)
    return time.perf_counter() - started


def copied_size(db: Path, copy: Path, tables: list[str]) -> int:
    """Bytes of a fresh DuckDB file holding `tables` of `db` (both sizes compared are made so,
    since the store itself also holds space freed by its many short commits)."""
    con = duckdb.connect(str(copy))
    con.execute(f"ATTACH '{db}' AS source (READ_ONLY)")
    for table in tables:
        con.execute(f"CREATE TABLE {table} AS SELECT * FROM source.{table}")
    con.execute("DETACH source")
    con.execute("CHECKPOINT")
    con.close()
    return copy.stat().st_size


def rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 1e6


def index_memory(index: GenomeIndex) -> str:
    """Resident MB one kept minimap2 index takes, per Mbp of genome (asm10, the fragments' preset)."""
    from genome_index.io.sequences import unpack
    from genome_index.search.align import LONG_PRESET

    aligners = Aligners()
    before, bases = rss_mb(), 0
    with index.store.reading() as reader:
        for gid in reader.genome_names():
            records = [
                (name, unpack(p))
                for (name, _, _), p in zip(reader.records_of(gid), reader.packed_sequences(gid) or [], strict=True)
            ]
            bases += sum(len(sequence) for _, sequence in records)
            aligners.get(gid, LONG_PRESET, lambda records=records: records)
    per_mbp = (rss_mb() - before) / (bases / 1e6)
    return f"kept minimap2 indexes ({LONG_PRESET}): {per_mbp:.1f} MB per Mbp, {3 * per_mbp:.0f} MB for a 3 Mbp genome"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"machine: {describe_machine()}")
    files = sorted(STAPH.glob("GCA_*.fna.gz")) if STAPH.is_dir() else sorted((ROOT / "examples/genomes").glob("*.gz"))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        index = GenomeIndex(folder / "store")
        embedder = Embedder(ModelOptions("kmer:6"), RunOptions(device="cpu"))
        index.build(files, embedder=embedder)
        bases = index.info()["bases"]
        with_seq = copied_size(index.store.db_path, folder / "with.duckdb", list(TABLES))
        without = copied_size(index.store.db_path, folder / "without.duckdb", [t for t in TABLES if t != "sequences"])
        blob = index.sql("SELECT sum(octet_length(packed)) FROM sequences")[1][0][0]
        print(f"store: {len(files)} genomes, {bases / 1e6:.2f} Mbp, kmer:6")
        print(
            f"disk: metadata.duckdb (copied afresh) {with_seq / 1e6:.1f} MB with sequences, {without / 1e6:.1f} MB "
            "without: "
            f"{(with_seq - without) / bases:.3f} byte/bp on disk ({blob / bases:.3f} byte/bp of packed bases)"
        )
        print(index_memory(index))
        print("query                no align (s)   align, indexes built (s)   align, indexes kept (s)")
        for name, path in queries(folder, files, np.random.default_rng(5)).items():
            plain = np.median([timed(index, path, embedder, False, None) for _ in range(args.repeats)])
            cold = np.median([timed(index, path, embedder, True, Aligners()) for _ in range(args.repeats)])
            kept = Aligners()
            timed(index, path, embedder, True, kept)
            warm = np.median([timed(index, path, embedder, True, kept) for _ in range(args.repeats)])
            print(
                f"{name:<18} {plain:10.3f}     {cold:10.3f} ({cold / plain:4.1f}x)        "
                f"{warm:10.3f} ({warm / plain:4.1f}x)",
                flush=True,
            )


if __name__ == "__main__":
    main()
