"""Retrieval quality: does the top hit name the genome (and species) a fragment came from?

    python benchmarks/bench_retrieval.py [--fragments 100] [--nt-tiny-fragments 10] [--seed 7]

The labelled set: S. aureus ATCC 12600 and BPH2947 from ../shared/data/staph (complete
genomes with their plasmids; the other two assemblies there are near-identical twins of
these, ANI >= 99.95 %, which no method can tell apart, so they are left out), or the example
excerpts when ../shared is missing; plus three synthetic species of distinct composition, three
genomes each (a 300 kb ancestor with 3 % substitutions per genome) with a 30 kb plasmid.
Fragments of 2, 10 and 50 kb are cut at random offsets, given 1 % substitutions, and half are
reverse-complemented. Each model is built three times: with anchored windows (the default),
with fixed windows, and with anchored windows and a ten times denser re-rank sketch
(--sketch-scaled 100). Each configuration queries every fragment once; the table gives top-1
species and exact-genome accuracy before and after the containment re-rank (the same order
`query --rerank` produces: the top 20 by embedding score, re-ordered by containment) and the
median query latency. For the default configuration it then lists every exact-genome miss
with how far the fragment's source region is from the genome ranked first: 21-mers of the
region (before substitutions) missing from that genome, over 21, about the SNPs between them.
`--genomes DIR... --labels FILE.csv [--label species]` runs the same evaluation on your own
genomes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from _machine import describe_machine
from make_examples import synthetic_sequence

from genome_index.anchors import kmer_hashes
from genome_index.api import GenomeIndex
from genome_index.embed import Embedder
from genome_index.evaluate import genome_labels
from genome_index.fasta import Genome, find_fasta_files, read_genome, reverse_complement
from genome_index.search import RERANK_CANDIDATES
from genome_index.settings import ModelOptions, QueryOptions, RunOptions, StoreOptions

ROOT = Path(__file__).resolve().parent.parent
STAPH = ROOT.parent / "shared" / "data" / "staph"
REAL = ["GCA_006094915.1_ASM609491v1_genomic.fna.gz", "GCA_900620245.1_BPH2947_genomic.fna.gz"]
LENGTHS = (2_000, 10_000, 50_000)
BASES = np.frombuffer(b"ACGT", np.uint8)


def mutate(rng: np.random.Generator, sequence: np.ndarray, rate: float) -> np.ndarray:
    out = sequence.copy()
    where = np.flatnonzero(rng.random(len(out)) < rate)
    out[where] = BASES[(np.searchsorted(BASES, out[where]) + rng.integers(1, 4, len(where))) % 4]
    return out


def make_set(folder: Path, rng: np.random.Generator) -> dict[Path, str]:
    """Genome files and their species."""
    species: dict[Path, str] = {}
    if STAPH.is_dir():
        for name in REAL:
            species[STAPH / name] = "S. aureus"
    else:
        for path in sorted((ROOT / "examples" / "genomes").glob("*.fna.gz"))[:2]:
            species[path] = "S. aureus"
    for s, (gc, skew) in enumerate([(0.40, 0.25), (0.55, -0.1), (0.66, 0.15)]):
        chromosome = np.frombuffer(synthetic_sequence(int(rng.integers(2**31)), gc, skew, 300_000), np.uint8)
        plasmid = np.frombuffer(synthetic_sequence(int(rng.integers(2**31)), gc, -skew, 30_000), np.uint8)
        for g in range(3):
            path = folder / f"synthetic{s}_{g}.fa"
            records = [("chromosome", mutate(rng, chromosome, 0.03)), ("plasmid", mutate(rng, plasmid, 0.03))]
            path.write_bytes(b"".join(b">" + n.encode() + b"\n" + seq.tobytes() + b"\n" for n, seq in records))
            species[path] = f"synthetic {s}"
    return species


def make_fragments(folder: Path, species: dict[Path, str], per_length: int, rng: np.random.Generator) -> list:
    """(file, length, source genome name, species, source region) for fragments with 1 % substitutions."""
    genomes = {path: read_genome(path) for path in species}
    fragments = []
    for length in LENGTHS:
        for i in range(per_length):
            path = list(genomes)[rng.integers(len(genomes))]
            records = [r for r in genomes[path].records if len(r.sequence) > length]
            weights = np.array([len(r.sequence) for r in records], dtype=float)
            record = records[rng.choice(len(records), p=weights / weights.sum())]
            start = int(rng.integers(0, len(record.sequence) - length))
            piece = mutate(rng, np.frombuffer(record.sequence[start : start + length], np.uint8), 0.01).tobytes()
            if i % 2:
                piece = reverse_complement(piece)
            file = folder / f"fragment_{length}_{i}.fa"
            file.write_bytes(b">fragment\n" + piece + b"\n")
            region = record.sequence[start : start + length]
            fragments.append((file, length, genomes[path].name, species[path], region))
    return fragments


def top1(rows: list[dict], rerank: bool) -> dict:
    """The top hit without re-rank (embedding order) or with it (containment first)."""
    if not rerank:
        return rows[0]
    head = rows[:RERANK_CANDIDATES]
    return sorted(head, key=lambda r: -1.0 if r["containment"] is None else r["containment"], reverse=True)[0]


def evaluate(
    index: GenomeIndex, embedder: Embedder, fragments: list, config: dict, species_of: dict, misses: list
) -> list[str]:
    """One line per fragment length; exact-genome misses after re-rank are appended to `misses`."""
    lines = []
    for length in LENGTHS:
        chosen = [f for f in fragments if f[1] == length]
        hits = {False: [0, 0], True: [0, 0]}
        latencies = []
        for file, _, source, species, region in chosen:
            start = time.perf_counter()
            rows = index.query(file, QueryOptions(k=RERANK_CANDIDATES, rerank=False, **config), embedder=embedder)
            latencies.append(time.perf_counter() - start)
            for rerank in (False, True):
                best = top1(rows, rerank)
                hits[rerank][0] += species_of[best["name"]] == species
                hits[rerank][1] += best["name"] == source
            if top1(rows, True)["name"] != source:
                misses.append((length, source, top1(rows, True)["name"], region))
        n = len(chosen)
        lines.append(
            f"{length // 1000:>4} kb  {100 * hits[False][0] / n:6.1f} {100 * hits[False][1] / n:6.1f}   "
            f"{100 * hits[True][0] / n:6.1f} {100 * hits[True][1] / n:6.1f}   {1000 * np.median(latencies):8.0f}"
        )
    return lines


def canonical_21mers(sequence: bytes) -> np.ndarray:
    """Every distinct canonical 21-mer without N, as the (one-to-one) 64-bit anchor hash of it."""
    hashes = kmer_hashes(sequence, 21)
    return np.unique(hashes[hashes != np.iinfo(np.uint64).max])


def report_misses(misses: list, paths: dict[str, Path]) -> None:
    """How close each missed fragment's source region is to the genome that was ranked first:
    its 21-mers missing from that genome, over 21 (about the SNPs between them)."""
    full: dict[str, np.ndarray] = {}
    for length, source, top, region in misses:
        if top not in full:
            full[top] = np.unique(
                np.concatenate([canonical_21mers(r.sequence) for r in read_genome(paths[top]).records])
            )
        mine = canonical_21mers(region)
        missing = int((~np.isin(mine, full[top])).sum())
        print(
            f"     miss {length // 1000} kb: from {source}, ranked first {top}: region ~{missing / 21:.1f} SNPs from it"
        )


PLAIN = {"frames": False, "window_overlap": 0.0, "center": False}
DEFAULTS = "chunks, frames, centred (the defaults for a fragment)"
STORES = [  # (title, build options, query configurations)
    (
        "anchored windows (the default)",
        {"chunking": "anchored"},
        [
            ("genome mode", {**PLAIN, "mode": "genome"}),
            ("genome mode, centred", {**PLAIN, "mode": "genome", "center": True}),
            ("chunks", {**PLAIN, "mode": "chunks"}),
            ("chunks, frames", {**PLAIN, "mode": "chunks", "frames": True}),
            (DEFAULTS, {"mode": "auto"}),
        ],
    ),
    (
        "fixed windows",
        {"chunking": "fixed"},
        [
            ("chunks", {**PLAIN, "mode": "chunks"}),
            ("chunks, overlap 0.5", {**PLAIN, "mode": "chunks", "window_overlap": 0.5}),
            ("chunks, frames", {**PLAIN, "mode": "chunks", "frames": True}),
            ("chunks, frames, centred", {"mode": "auto"}),
        ],
    ),
    (
        "anchored windows, --sketch-scaled 100",
        {"chunking": "anchored", "sketch_scaled": 100},
        [(DEFAULTS, {"mode": "auto"})],
    ),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fragments", type=int, default=100, help="fragments per length for kmer:6")
    parser.add_argument("--nt-tiny-fragments", type=int, default=10, help="fragments per length for nt-tiny")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--genomes", nargs="*", type=Path, help="your own FASTA files or folders instead")
    parser.add_argument("--labels", type=Path, help="with --genomes: CSV with file/name and --label columns")
    parser.add_argument("--label", default="species")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    print(f"machine: {describe_machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.genomes:
            files = find_fasta_files(args.genomes)
            species = dict(zip(files, genome_labels([Genome(f) for f in files], args.labels, args.label), strict=True))
        else:
            species = make_set(folder, rng)
        fragments = make_fragments(folder, species, max(args.fragments, args.nt_tiny_fragments), rng)
        species_of = {read_genome(p).name: s for p, s in species.items()}
        paths = {read_genome(p).name: p for p in species}
        print(
            f"set: {len(species)} genomes, {len(set(species.values()))} species; fragments per length: "
            f"kmer:6 {args.fragments}, nt-tiny {args.nt_tiny_fragments}; 1 % substitutions, half reverse strand"
        )
        for model, per_length in (("kmer:6", args.fragments), ("nt-tiny", args.nt_tiny_fragments)):
            if per_length < 1:
                continue
            for number, (title, options, configs) in enumerate(STORES):
                embedder = Embedder(ModelOptions(model, chunking=options["chunking"]), RunOptions(device="cpu"))
                index = GenomeIndex(folder / f"store-{model.replace(':', '')}-{number}")
                start = time.perf_counter()
                index.build(
                    list(species), store=StoreOptions(sketch_scaled=options.get("sketch_scaled")), embedder=embedder
                )
                built = f"{index.info()['counts']['chunks']} chunks, built in {time.perf_counter() - start:.0f} s"
                print(f"\n== {model}, {title}: {built}")
                chosen = [f for f in fragments if int(f[0].stem.split("_")[-1]) < per_length]
                for name, config in configs:
                    print(f"-- {name}\n  length  species exact | re-rank: species exact | median ms")
                    misses: list = []
                    for line in evaluate(index, embedder, chosen, config, species_of, misses):
                        print("  " + line, flush=True)
                    if name == DEFAULTS:
                        report_misses(misses, paths)


if __name__ == "__main__":
    main()
