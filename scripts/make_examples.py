"""Cut the small example genomes in examples/ from the real assemblies in ../shared/data/staph.

Each example genome is a gzip FASTA excerpt: 150 kb of the chromosome (from a different
offset per strain, so the examples differ) plus the first 10 kb of each plasmid. The query
is a 20 kb stretch of one example genome; examples/sample.fq.gz, a sample of 4,000 simulated
150 bp reads (1 % errors) of two example genomes, 3:1, for `gather`. examples/labelled/ holds
eight synthetic genomes of two distinct compositions, and examples/labels.csv labels all twelve
by species. Deterministic: run it again and get the same files.

    python scripts/make_examples.py [SHARED_STAPH_DIR]
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import numpy as np

from genome_index.io.fasta import iter_records

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.helpers import simulate_reads  # noqa: E402  (the tests' read simulator, so the example is what they test)

SOURCES = {
    "ATCC12600": "GCA_006094915.1_ASM609491v1_genomic.fna.gz",
    "DSM20231": "GCA_026167765.1_ASM2616776v1_genomic.fna.gz",
    "BPH2003": "GCA_900607265.1_BPH2003_genomic.fna.gz",
    "BPH2947": "GCA_900620245.1_BPH2947_genomic.fna.gz",
}
CHROMOSOME_BP = 150_000
PLASMID_BP = 10_000
QUERY_FROM, QUERY_BP = "DSM20231", 20_000
# Synthetic genomes of distinct composition (GC content, dinucleotide bias), two groups of four,
# so that comparisons and evaluations have labels to separate beside the four S. aureus.
SYNTHETIC = {"synthetic GC-rich": (0.62, 0.3, 100), "synthetic balanced": (0.5, -0.15, 200)}
SYNTHETIC_BP = 60_000
SAMPLE = {"ATCC12600": 3_000, "BPH2947": 1_000}  # reads of each example genome in examples/sample.fq.gz


def synthetic_sequence(seed: int, gc: float, skew: float, length: int) -> bytes:
    """First-order Markov sequence: chosen GC content, with the A->C, C->G, G->T, T->A steps
    made more (skew > 0) or less likely than chance."""
    rng = np.random.default_rng(seed)
    at, cg = (1 - gc) / 2, gc / 2
    transition = np.tile([at, cg, cg, at], (4, 1))
    transition[np.arange(4), (np.arange(4) + 1) % 4] += skew
    transition /= transition.sum(axis=1, keepdims=True)
    cumulative = transition.cumsum(axis=1)
    draws = rng.random(length)
    codes = np.zeros(length, dtype=np.int64)
    for i in range(1, length):
        codes[i] = min(int(np.searchsorted(cumulative[codes[i - 1]], draws[i])), 3)
    return np.frombuffer(b"ACGT", np.uint8)[codes].tobytes()


def write_fasta(path: Path, records: list[tuple[str, bytes]]) -> None:
    """Write records as gzip FASTA with 80-column lines and a fixed mtime (stable bytes)."""
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as handle:
        for header, sequence in records:
            handle.write(b">" + header.encode() + b"\n")
            for i in range(0, len(sequence), 80):
                handle.write(sequence[i : i + 80] + b"\n")


def main(staph: Path) -> None:
    out = ROOT / "examples" / "genomes"
    out.mkdir(parents=True, exist_ok=True)
    query = None
    for number, (strain, file) in enumerate(SOURCES.items()):
        records = list(iter_records(staph / file))
        offset = 300_000 * (number + 1)
        chromosome = records[0]
        excerpt = [
            (
                f"{chromosome.id}:{offset}-{offset + CHROMOSOME_BP} {strain} chromosome excerpt",
                chromosome.sequence[offset : offset + CHROMOSOME_BP],
            )
        ]
        for plasmid in records[1:]:
            excerpt.append((f"{plasmid.id}:0-{PLASMID_BP} {strain} plasmid excerpt", plasmid.sequence[:PLASMID_BP]))
        write_fasta(out / f"{strain}.fna.gz", excerpt)
        if strain == QUERY_FROM:
            query = (
                f"{strain}_fragment {chromosome.id}:{offset + 50_000}-{offset + 50_000 + QUERY_BP}",
                chromosome.sequence[offset + 50_000 : offset + 50_000 + QUERY_BP],
            )
    labelled = ROOT / "examples" / "labelled"
    labelled.mkdir(exist_ok=True)
    labels = [(f"{strain}.fna.gz", "S. aureus") for strain in SOURCES]
    for species, (gc, skew, seed) in SYNTHETIC.items():
        stem = species.split()[1].replace("-", "_").lower()
        for i in range(4):
            name = f"{stem}_{i}.fa.gz"
            write_fasta(
                labelled / name, [(f"{stem}_{i} {species}", synthetic_sequence(seed + i, gc, skew, SYNTHETIC_BP))]
            )
            labels.append((name, species))
    (ROOT / "examples" / "labels.csv").write_text("file,species\n" + "".join(f"{f},{s}\n" for f, s in labels))
    assert query is not None
    with open(ROOT / "examples" / "query.fa", "wb") as handle:
        handle.write(b">" + query[0].encode() + b"\n")
        for i in range(0, len(query[1]), 80):
            handle.write(query[1][i : i + 80] + b"\n")
    write_sample(out)


def write_sample(genomes: Path) -> None:
    """examples/sample.fq.gz: SAMPLE's reads of the example genomes, shuffled, as gzip FASTQ."""
    rng = np.random.default_rng(29)
    reads = []
    for strain, count in SAMPLE.items():
        records = [r.sequence for r in iter_records(genomes / f"{strain}.fna.gz")]
        reads.extend((strain, row.tobytes()) for row in simulate_reads(records, count, rng))
    order = rng.permutation(len(reads))
    with open(ROOT / "examples" / "sample.fq.gz", "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as out:
        for number, i in enumerate(order):
            strain, bases = reads[i]
            out.write(b"@read%d %s\n%s\n+\n%s\n" % (number, strain.encode(), bases, b"I" * len(bases)))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "data" / "staph")
