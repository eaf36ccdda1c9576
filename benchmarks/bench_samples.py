"""Samples against their peers in the same run: `gather` beside sourmash gather, and whole-genome
queries of held-out genomes beside pyskani.

    python benchmarks/bench_samples.py                  # bench_latency's 38 genomes, kmer:6
    python benchmarks/bench_samples.py --work /tmp/lat  # reuse (and keep) its genomes and store
    python benchmarks/bench_samples.py --reads 300000   # quicker: the timed sample smaller
    python benchmarks/bench_samples.py --work /tmp/lat --memory-copies 1 33   # and a 10 GB sample

The store is bench_latency's (the S. aureus assemblies, the examples' excerpts, and five
synthetic species of six descendants each at 0.1-10 % from an ancestor: descendants 0 and 1 are
two strains at about 99.4 % ANI). Samples:

- reads (150 bp, 1 % substitutions, half reverse-complemented) of mixtures of 3, 10 and 20
  stored genomes, abundances (shares of the reads) spanning 100x, each holding one strain pair;
  the 20-genome sample has `--reads` reads (1 M) and is the timed one;
- contigs (5-50 kb pieces, without errors) of the 10-genome mixture, each genome a different
  share of its sequence.

For each: recall (every genome at 1 % or more found), precision (of the genomes reported above
0.5 %, those in the sample), the largest relative error of the abundance over the genomes at
1 % or more, and the strain pair's abundances, for genome-index gather and for sourmash gather
(its f_unique_weighted as abundance; sketching the sample and the database included in its
time, as genome-index's time includes its own sketching and mapping). Then the peak memory of
`genome-index gather` on the timed sample and on three times it (three files of one sample).

Held-out genomes: two descendants of each synthetic species (at 1 % and 10 % from their
ancestor) and one S. aureus assembly (with its excerpt) are removed from a copy of the store and
queried whole; pyskani (the same genomes) names the stored genome of highest ANI and its ANI and
aligned fraction. Printed: how often genome-index's rank-1 hit is that genome, and how often its
relation column agrees with pyskani's figures on the 95 % ANI / 50 % aligned-fraction line.
"""

from __future__ import annotations

import argparse
import csv
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _machine import describe_machine
from bench_latency import make_genomes

from genome_index.api import GenomeIndex
from genome_index.io.fasta import read_genome
from genome_index.search.relation import relation
from genome_index.store.schema import SKETCH_KSIZE
from tests.helpers import simulate_reads

STRAINS = [("species0_0", "species0_1"), ("species1_0", "species1_1"), ("species2_0", "species2_1")]
HELD_OUT = [f"species{s}_{d}" for s in range(5) for d in (2, 5)] + ["GCA_026167765.1_ASM2616776v1_genomic"]
HELD_OUT_EXCERPTS = ["DSM20231"]  # the examples' excerpt of the held-out S. aureus goes with it


def stored_names(index: GenomeIndex, genomes: list[Path]) -> dict[str, Path]:
    """Stored name -> its file (a file whose sequence the store holds under another name is left out)."""
    by_sha = dict(index.sql("SELECT sha256, name FROM genomes")[1])
    out = {}
    for path in genomes:
        name = by_sha.get(read_genome(path).sha256)
        if name is not None:
            out.setdefault(name, path)
    return out


def mixture(names: list[str], rng: np.random.Generator, pair: tuple[str, str]) -> dict[str, float]:
    """Shares of the reads: log-uniform weights spanning 100x, the strain pair among them."""
    members = [*pair, *[n for n in names if n not in pair]]
    weights = np.exp(rng.uniform(0, np.log(100), len(members)))
    weights[0], weights[-1] = weights.max() * 1.0, weights.max() / 100  # the span is 100x exactly
    weights[1] = weights.max() / 5  # the second strain well present: its abundance must come out apart
    return dict(zip(members, (weights / weights.sum()).tolist(), strict=True))


def write_reads(
    path: Path, shares: dict[str, float], files: dict[str, Path], total: int, rng: np.random.Generator
) -> dict:
    """A FASTQ sample of `total` reads drawn by `shares`; the true shares of bases back."""
    counts = rng.multinomial(total, list(shares.values()))
    quality = b"I" * 150
    with open(path, "wb") as out:
        number = 0
        for (name, _), count in zip(shares.items(), counts, strict=True):
            records = [r.sequence for r in read_genome(files[name]).records]
            for start in range(0, count, 100_000):
                block = simulate_reads(records, min(100_000, count - start), rng)
                out.write(
                    b"".join(b"@r%d\n%s\n+\n%s\n" % (number + i, row.tobytes(), quality) for i, row in enumerate(block))
                )
                number += len(block)
    return {name: count / total for name, count in zip(shares, counts, strict=True)}


def write_contigs(path: Path, members: list[str], files: dict[str, Path], rng: np.random.Generator) -> dict:
    """Contigs of 5-50 kb covering 10-100 % of each genome; the true shares of contig bases back."""
    bases, records = {}, []
    for name in members:
        genome = read_genome(files[name])
        share = rng.uniform(0.1, 1.0)
        bases[name] = 0
        for record in genome.records:
            position = 0
            while position < len(record.sequence) * share:
                size = int(rng.integers(5_000, 50_000))
                piece = record.sequence[position : position + size]
                if len(piece) >= 5_000:
                    records.append(b">%s_%d\n%s\n" % (name.encode(), len(records), piece))
                    bases[name] += len(piece)
                position += size + int(rng.integers(1_000, 20_000))
    path.write_bytes(b"".join(records[i] for i in rng.permutation(len(records))))
    total = sum(bases.values())
    return {name: count / total for name, count in bases.items()}


def sourmash_database(files: dict[str, Path], folder: Path, scaled: int) -> Path:
    """One signature a stored genome, named as the store names it (a zip collection)."""
    import sourmash
    from sourmash.save_load import SaveSignaturesToLocation

    database = folder / "stored.sig.zip"
    if not database.exists():
        with SaveSignaturesToLocation(str(database)) as saved:
            for name, path in files.items():
                minhash = sourmash.MinHash(n=0, ksize=SKETCH_KSIZE, scaled=scaled)
                for record in read_genome(path).records:
                    minhash.add_sequence(record.sequence.decode(), force=True)
                saved.add(sourmash.SourmashSignature(minhash, name=name))
    return database


def sourmash_gather(sample: Path, database: Path, folder: Path, scaled: int) -> tuple[dict[str, float], float]:
    """sourmash's own CLI: sketch the sample (with abundances), gather against the database;
    each genome's f_unique_weighted, and the seconds of both steps."""
    signature, table = folder / f"{sample.name}.sig.zip", folder / f"{sample.name}.gather.csv"
    started = time.perf_counter()
    quiet = {"check": True, "capture_output": True}
    subprocess.run(
        [
            "sourmash",
            "sketch",
            "dna",
            "-p",
            f"k={SKETCH_KSIZE},scaled={scaled},abund",
            str(sample),
            "-o",
            str(signature),
        ],
        **quiet,
    )
    subprocess.run(["sourmash", "gather", str(signature), str(database), "-o", str(table)], **quiet)
    seconds = time.perf_counter() - started
    with open(table, newline="") as handle:
        found = {row["name"]: float(row["f_unique_weighted"]) for row in csv.DictReader(handle)}
    return found, seconds


def scores(found: dict[str, float], truth: dict[str, float], pair: tuple[str, str]) -> str:
    """Recall (truth at 1 % or more), precision (reported above 0.5 %), the worst relative
    abundance error (truth at 1 % or more), and the strain pair's abundances (truth in brackets)."""
    wanted = {n for n, share in truth.items() if share >= 0.01}
    reported = {n for n, share in found.items() if share is not None and share > 0.005}
    recall = len(wanted & set(found)) / len(wanted)
    precision = len(reported & set(truth)) / len(reported) if reported else 1.0
    errors = [abs((found.get(n) or 0.0) - truth[n]) / truth[n] for n in wanted]
    strains = ", ".join(f"{n} {found.get(n) or 0:.3f} ({truth[n]:.3f})" for n in pair)
    return f"recall {recall:.3f}, precision {precision:.3f}, worst abundance error {max(errors):.1%}; strains {strains}"


def parse_seconds(sample: Path) -> tuple[float, float]:
    """Seconds to read a FASTQ sample through genome-index's reader (dnaio and its own checks of
    the bases) and through dnaio alone."""
    import dnaio

    from genome_index.io.fasta import iter_records

    started = time.perf_counter()
    for _ in iter_records(sample, fastq=True):
        pass
    ours = time.perf_counter() - started
    started = time.perf_counter()
    with dnaio.open(sample, fileformat="fastq", open_threads=0) as reads:
        for _ in reads:
            pass
    return ours, time.perf_counter() - started


def peak_rss(store: Path, samples: list[Path]) -> tuple[float, float]:
    """Seconds and peak resident memory (MiB) of `genome-index gather` on one sample, in a process of its own."""
    code = (
        "import resource, sys; from genome_index.api import GenomeIndex; "
        "GenomeIndex(sys.argv[1]).gather(sys.argv[2:]); "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code, str(store), *map(str, samples)], check=True, capture_output=True, text=True
    )
    return time.perf_counter() - started, int(done.stdout.split()[-1]) / 1024


def held_out(index_dir: Path, work: Path, files: dict[str, Path]) -> None:
    """Held-out genomes queried whole against a store without them, beside pyskani."""
    import pyskani

    copy = work / "held-out-index"
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(index_dir, copy)
    index = GenomeIndex(copy)
    index.remove([*HELD_OUT, *HELD_OUT_EXCERPTS])
    database = pyskani.Database()
    kept = {name: path for name, path in files.items() if name not in HELD_OUT and name not in HELD_OUT_EXCERPTS}
    for name, path in kept.items():
        database.sketch(name, *[r.sequence for r in read_genome(path).records])
    top = agree = line = 0
    seconds = []
    with index.searcher() as searcher:
        for name in HELD_OUT:
            genome = read_genome(files[name])
            hits = database.query(name, *[r.sequence for r in genome.records])
            best = max(hits, key=lambda h: h.identity) if hits else None
            if best is None:
                theirs = "no close relative"
            else:
                theirs = relation(best.identity, best.query_fraction, best.reference_fraction)
            started = time.perf_counter()
            ours = searcher.query(files[name], k=1)[0]
            seconds.append(time.perf_counter() - started)
            top += best is not None and ours.name == best.reference_name
            agree += ours.relation == theirs
            line += (ours.relation in ("same genome", "same species")) == (theirs in ("same genome", "same species"))
            skani = f"{best.reference_name} ANI {best.identity:.4f} AF {best.query_fraction:.3f}" if best else "none"
            print(f"  {name}: ours {ours.name} ({ours.relation}, identity {ours.identity}, "
                  f"coverage {ours.query_coverage}); pyskani {skani} ({theirs})")  # fmt: skip
    n = len(HELD_OUT)
    print(f"held-out genomes ({n}): rank-1 is pyskani's highest-ANI genome for {top}/{n} ({top / n:.1%}); "
          f"relation agrees with pyskani's for {agree}/{n} ({agree / n:.1%}), on the species line for "
          f"{line}/{n} ({line / n:.1%}); {np.mean(seconds):.2f} s a whole-genome query")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--work", type=Path, help="folder to keep (and reuse) the genomes, the store and the samples in"
    )
    parser.add_argument("--reads", type=int, default=1_000_000, help="reads of the timed 20-genome sample")
    parser.add_argument("--synthetic-length", type=int, default=3_000_000, help="bp of each synthetic chromosome")
    parser.add_argument(
        "--memory-copies", type=int, nargs="+", default=[1, 3],
        help="peak memory of gather on this many copies of the timed sample, as files of one sample (33: 10 GB)",
    )  # fmt: skip
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-samples-"))
    print(describe_machine())
    genomes = make_genomes(work / "genomes", args.synthetic_length, np.random.default_rng(27))
    index = GenomeIndex(work / "index")
    index.build(genomes, model="kmer:6")
    scaled = index.settings().sketch_scaled
    files = stored_names(index, genomes)
    whole = [n for n in files if n.startswith(("species", "GCA_"))]  # not the examples' excerpts
    print(f"store: {len(files)} genomes, kmer:6, sketches at scaled {scaled}")
    rng = np.random.default_rng(31)
    samples_dir = work / "samples"
    samples_dir.mkdir(exist_ok=True)
    database = sourmash_database(files, samples_dir, scaled)
    plans = [(3, 300_000, STRAINS[0]), (10, 300_000, STRAINS[1]), (20, args.reads, STRAINS[2])]
    for size, reads, pair in plans:
        others = [n for n in whole if n not in pair and n.split("_")[0] != pair[0].split("_")[0]]
        chosen = [str(n) for n in rng.choice(others, size - 2, replace=False)]
        shares = mixture(chosen, rng, pair)
        sample = samples_dir / f"mix{size}.fq"
        truth = write_reads(sample, shares, files, reads, rng)
        started = time.perf_counter()
        result = index.gather(sample)
        ours_seconds = time.perf_counter() - started
        ours = {row.name: row.abundance for row in result.rows}
        theirs, their_seconds = sourmash_gather(sample, database, samples_dir, scaled)
        print(f"{size} genomes, {reads:,} reads: genome-index gather {ours_seconds:.1f} s, sourmash gather "
              f"{their_seconds:.1f} s (sketching included)")  # fmt: skip
        print(f"  genome-index: {scores(ours, truth, pair)}")
        print(f"  sourmash:     {scores(theirs, truth, pair)}")
        if size == 10:
            contigs = samples_dir / "mix10-contigs.fa"
            truth = write_contigs(contigs, list(shares), files, rng)
            ours = {row.name: row.abundance for row in index.gather(contigs).rows}
            theirs, _ = sourmash_gather(contigs, database, samples_dir, scaled)
            print(f"10 genomes, contigs ({contigs.stat().st_size / 1e6:.1f} MB):")
            print(f"  genome-index: {scores(ours, truth, pair)}")
            print(f"  sourmash:     {scores(theirs, truth, pair)}")
    timed = samples_dir / "mix20.fq"
    ours, bare = parse_seconds(timed)
    print(f"reading the 20-genome sample's FASTQ: genome-index {ours:.2f} s, dnaio alone {bare:.2f} s")
    for copies in args.memory_copies:
        seconds, peak = peak_rss(work / "index", [timed] * copies)
        size = timed.stat().st_size * copies / 1e9
        print(f"memory: genome-index gather of {copies} x the 20-genome sample ({size:.2f} GB of FASTQ): "
              f"peak RSS {peak:.0f} MiB, {seconds:.1f} s")  # fmt: skip
    held_out(work / "index", work, files)
    print(f"(ru_maxrss of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB)")


if __name__ == "__main__":
    main()
