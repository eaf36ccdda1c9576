"""Retrieval quality: does the top hit name the genome (and species) a fragment came from, and where?

    python benchmarks/bench_retrieval.py [--fragments 100] [--nt-tiny-fragments 10] [--seeds 7 1 2]
                                         [--configurations defaults|all]

The default run queries every fragment with the defaults (windows, frames, centring, the
containment re-rank and the minimap2 alignment of the best 10 candidates) and prints, per
length: species and exact-genome top-1 (the source at rank 1; exact ties share it, which the
alignment leaves only where the fragment's region is identical in two genomes) and the same
without a tie, whether the top hit's
coordinates overlap the fragment's source region, how close its identity is to the truth
(1 - substitutions / length), candidate recall (the source among the aligned genomes: the
embedding's part), and the median latency with minimap2 indexes kept between queries (as a
resident searcher keeps them). `--configurations all` adds the embedding-only table below.

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from _machine import describe_machine
from make_examples import synthetic_sequence

from genome_index.analysis.evaluate import genome_labels
from genome_index.api import GenomeIndex
from genome_index.embedding.anchors import kmer_hashes
from genome_index.embedding.embedder import Embedder
from genome_index.io.fasta import Genome, find_fasta_files, read_genome, reverse_complement
from genome_index.search.align import Aligners
from genome_index.search.hits import Hit
from genome_index.search.rerank import RERANK_CANDIDATES
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


@dataclass(frozen=True)
class Fragment:
    """A query cut from a genome, and the truth about it."""

    file: Path
    length: int
    source: str  # genome name
    species: str
    record: str
    start: int  # 0-based
    identity: float  # 1 - substitutions / length
    region: bytes  # the source region before substitutions

    @property
    def number(self) -> int:
        return int(self.file.stem.split("_")[-1])


def make_fragments(folder: Path, species: dict[Path, str], per_length: int, rng: np.random.Generator) -> list:
    """Fragments with 1 % substitutions, half of them reverse-complemented."""
    genomes = {path: read_genome(path) for path in species}
    fragments = []
    for length in LENGTHS:
        for i in range(per_length):
            path = list(genomes)[rng.integers(len(genomes))]
            records = [r for r in genomes[path].records if len(r.sequence) > length]
            weights = np.array([len(r.sequence) for r in records], dtype=float)
            record = records[rng.choice(len(records), p=weights / weights.sum())]
            start = int(rng.integers(0, len(record.sequence) - length))
            region = record.sequence[start : start + length]
            piece = mutate(rng, np.frombuffer(region, np.uint8), 0.01).tobytes()
            identity = sum(a == b for a, b in zip(piece, region, strict=True)) / length
            if i % 2:
                piece = reverse_complement(piece)
            file = folder / f"fragment_{length}_{i}.fa"
            file.write_bytes(b">fragment\n" + piece + b"\n")
            fragments.append(
                Fragment(file, length, genomes[path].name, species[path], record.id, start, identity, region)
            )
    return fragments


def top1(rows: list[Hit], rerank: bool) -> Hit:
    """The top hit without re-rank (embedding order) or with it (containment first)."""
    if not rerank:
        return rows[0]
    head = rows[:RERANK_CANDIDATES]
    return sorted(head, key=lambda r: -1.0 if r.containment is None else r.containment, reverse=True)[0]


def evaluate(
    index: GenomeIndex, embedder: Embedder, fragments: list, config: dict, species_of: dict, misses: list
) -> list[str]:
    """One line per fragment length; exact-genome misses after re-rank are appended to `misses`."""
    lines = []
    for length in LENGTHS:
        chosen = [f for f in fragments if f.length == length]
        hits = {False: [0, 0], True: [0, 0]}
        latencies = []
        for fragment in chosen:
            source, species, region = fragment.source, fragment.species, fragment.region
            start = time.perf_counter()
            options = QueryOptions(k=RERANK_CANDIDATES, rerank=False, align=False, **config)
            rows = index.query(fragment.file, options, embedder=embedder)
            latencies.append(time.perf_counter() - start)
            for rerank in (False, True):
                best = top1(rows, rerank)
                hits[rerank][0] += species_of[best.name] == species
                hits[rerank][1] += best.name == source
            if top1(rows, True).name != source:
                misses.append((length, source, top1(rows, True).name, region))
        n = len(chosen)
        lines.append(
            f"{length // 1000:>4} kb  {100 * hits[False][0] / n:6.1f} {100 * hits[False][1] / n:6.1f}   "
            f"{100 * hits[True][0] / n:6.1f} {100 * hits[True][1] / n:6.1f}   {1000 * np.median(latencies):8.0f}"
        )
    return lines


def evaluate_aligned(index: GenomeIndex, embedder: Embedder, fragments: list, species_of: dict) -> list[str]:
    """One line per fragment length for the defaults with alignment (see the module's docstring)."""
    aligners = Aligners()
    lines = []
    for length in LENGTHS:
        chosen = [f for f in fragments if f.length == length]
        counts = dict.fromkeys(("species", "exact", "alone", "placed", "identity", "recall"), 0)
        errors, latencies = [], []
        for fragment in chosen:
            started = time.perf_counter()
            rows = index.query(fragment.file, QueryOptions(k=10), embedder=embedder, aligners=aligners)
            latencies.append(time.perf_counter() - started)
            first = [row for row in rows if row.rank == 1]  # several where exact ties share the first rank
            top = next((row for row in first if row.name == fragment.source), rows[0])
            counts["species"] += species_of[top.name] == fragment.species
            counts["exact"] += top.name == fragment.source
            counts["alone"] += top.name == fragment.source and not top.tied
            counts["recall"] += any(row.name == fragment.source for row in rows)
            placed = (
                top.name == fragment.source and top.target_record == fragment.record
                and top.target_start <= fragment.start + length and top.target_end > fragment.start
            )  # fmt: skip
            counts["placed"] += placed
            if top.identity is not None and top.name == fragment.source:
                errors.append(abs(top.identity - fragment.identity))
                counts["identity"] += errors[-1] <= 0.005
        n = len(chosen)
        shown = {key: f"{100 * value / n:6.1f}" for key, value in counts.items()}
        lines.append(
            f"{length // 1000:>4} kb  {shown['species']} {shown['exact']} {shown['alone']}   {shown['placed']}"
            f"  {shown['identity']} {100 * np.median(errors) if errors else float('nan'):9.3f}"
            f" {100 * max(errors, default=float('nan')):7.3f}   {shown['recall']}  {1000 * np.median(latencies):8.0f}"
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


ALIGNED_HEADER = (
    "  length  species exact untied | top hit placed | identity within 0.5 pt, median and max error (pt) | "
    "candidate recall | median ms"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fragments", type=int, default=100, help="fragments per length for kmer:6")
    parser.add_argument("--nt-tiny-fragments", type=int, default=10, help="fragments per length for nt-tiny")
    parser.add_argument("--seeds", type=int, nargs="+", default=[7], help="draws of the set and the fragments")
    parser.add_argument("--configurations", choices=["defaults", "all"], default="defaults")
    parser.add_argument("--genomes", nargs="*", type=Path, help="your own FASTA files or folders instead")
    parser.add_argument("--labels", type=Path, help="with --genomes: CSV with file/name and --label columns")
    parser.add_argument("--label", default="species")
    args = parser.parse_args()
    print(f"machine: {describe_machine()}")
    for seed in args.seeds:
        run_draw(args, seed)


def run_draw(args: argparse.Namespace, seed: int) -> None:
    """Every model and configuration on one draw of the set and the fragments."""
    rng = np.random.default_rng(seed)
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
            f"\n#### seed {seed}. set: {len(species)} genomes, {len(set(species.values()))} species; fragments per "
            f"length: kmer:6 {args.fragments}, nt-tiny {args.nt_tiny_fragments}; 1 % substitutions, half reverse strand"
        )
        for model, per_length in (("kmer:6", args.fragments), ("nt-tiny", args.nt_tiny_fragments)):
            if per_length < 1:
                continue
            chosen = [f for f in fragments if f.number < per_length]
            stores = STORES if args.configurations == "all" else STORES[:1]
            for number, (title, options, configs) in enumerate(stores):
                embedder = Embedder(ModelOptions(model, chunking=options["chunking"]), RunOptions(device="cpu"))
                index = GenomeIndex(folder / f"store-{model.replace(':', '')}-{number}")
                start = time.perf_counter()
                index.build(
                    list(species), store=StoreOptions(sketch_scaled=options.get("sketch_scaled")), embedder=embedder
                )
                built = f"{index.info()['counts']['chunks']} chunks, built in {time.perf_counter() - start:.0f} s"
                print(f"\n== {model}, {title}: {built}")
                if number == 0:
                    print(f"-- the defaults with alignment\n{ALIGNED_HEADER}")
                    for line in evaluate_aligned(index, embedder, chosen, species_of):
                        print("  " + line, flush=True)
                if args.configurations != "all":
                    continue
                for name, config in configs:
                    print(f"-- {name}, no alignment\n  length  species exact | re-rank: species exact | median ms")
                    misses: list = []
                    for line in evaluate(index, embedder, chosen, config, species_of, misses):
                        print("  " + line, flush=True)
                    if name == DEFAULTS:
                        report_misses(misses, paths)


if __name__ == "__main__":
    main()
