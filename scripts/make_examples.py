"""Cut the small example genomes in examples/ from the real assemblies in ../shared/data/staph.

Each example genome is a gzip FASTA excerpt: 150 kb of the chromosome (from a different
offset per strain, so the examples differ) plus the first 10 kb of each plasmid. The query
is a 20 kb stretch of one example genome. Deterministic: run it again and get the same files.

    python scripts/make_examples.py [SHARED_STAPH_DIR]
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

from genome_index.fasta import iter_records

ROOT = Path(__file__).resolve().parent.parent
SOURCES = {
    "ATCC12600": "GCA_006094915.1_ASM609491v1_genomic.fna.gz",
    "DSM20231": "GCA_026167765.1_ASM2616776v1_genomic.fna.gz",
    "BPH2003": "GCA_900607265.1_BPH2003_genomic.fna.gz",
    "BPH2947": "GCA_900620245.1_BPH2947_genomic.fna.gz",
}
CHROMOSOME_BP = 150_000
PLASMID_BP = 10_000
QUERY_FROM, QUERY_BP = "DSM20231", 20_000


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
            excerpt.append(
                (f"{plasmid.id}:0-{PLASMID_BP} {strain} plasmid excerpt", plasmid.sequence[:PLASMID_BP])
            )
        write_fasta(out / f"{strain}.fna.gz", excerpt)
        if strain == QUERY_FROM:
            query = (
                f"{strain}_fragment {chromosome.id}:{offset + 50_000}-{offset + 50_000 + QUERY_BP}",
                chromosome.sequence[offset + 50_000 : offset + 50_000 + QUERY_BP],
            )
    assert query is not None
    with open(ROOT / "examples" / "query.fa", "wb") as handle:
        handle.write(b">" + query[0].encode() + b"\n")
        for i in range(0, len(query[1]), 80):
            handle.write(query[1][i : i + 80] + b"\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "data" / "staph")
