"""Query latency against skani in the same run: a warm `Searcher`, per stage, and the CLI.

    python benchmarks/bench_latency.py                  # 35 genomes, about 105 Mbp, kmer:6
    python benchmarks/bench_latency.py --work /tmp/lat  # keep (and reuse) the genomes and the store
    python benchmarks/bench_latency.py --per-length 20 --synthetic-length 1000000   # quicker
    python benchmarks/bench_latency.py --work /tmp/lat --model nt-tiny   # the embedding's share, on nt-tiny
    python benchmarks/bench_latency.py --work /tmp/lat1000 --species 165 --searcher-only   # about 1,000 genomes
    python benchmarks/bench_latency.py --work /tmp/lat1000 --species 165 --searcher-only --warm-genomes 1000
    python benchmarks/bench_latency.py --work /tmp/lat1000 --species 165 --searcher-only --sketch-scaled 100

The set: the S. aureus assemblies of ../shared/data/staph (the examples' excerpts without
it), and five synthetic species (distinct composition), each an ancestor with six
descendants at 0.1, 0.5, 1, 3, 5 and 10 % substitutions, each with a 40 kb plasmid (with
--species, more species: congeners of those five at 30 %). Queries:
2, 10 and 50 kb fragments with 1 % substitutions, half reverse-complemented.

Printed, with the machine: the store build; skani (pyskani: a database of every genome, each
fragment sketched and queried) per query; a `Searcher` warmed (`Searcher.warm`: its indexes
and a minimap2 index of every genome) with the defaults, per query
(p50, p99) and per stage (embed, candidates, re-rank, verify) with each stage's recall (the
source genome still among what the stage passes on), and top-1 (the source in the rank-1
tie); their ratio to skani; the same queries with --no-align; minimap2's time on each
genome of the five base species for 10 kb fragments (aligned, chained without an alignment, unrelated, and
the second kind with a minimum chain score of 1,000); then the CLI: every fragment in one
`query --per-record` call, and cold `query` processes of one 10 kb fragment each; a whole
synthetic genome as a warm query; and FAISS's own exact search of 8 query vectors on the chunk
index against genome-index's matrix-product search.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # before numpy loads, as genome_index sets it in the CLI
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from _machine import describe_machine
from bench_retrieval import mutate
from make_examples import synthetic_sequence

from genome_index.api import GenomeIndex
from genome_index.io.fasta import find_fasta_files, read_genome, reverse_complement
from genome_index.settings import QueryOptions, StoreOptions

ROOT = Path(__file__).resolve().parent.parent
STAPH = ROOT.parent / "shared" / "data" / "staph"
LENGTHS = (2_000, 10_000, 50_000)
DIVERGENCE = (0.001, 0.005, 0.01, 0.03, 0.05, 0.10)
SPECIES = [(0.33, 0.25), (0.45, -0.1), (0.55, 0.1), (0.66, 0.15), (0.50, -0.2)]


def make_genomes(folder: Path, length: int, rng: np.random.Generator, species: int = len(SPECIES)) -> list[Path]:
    """The real assemblies (linked) and the synthetic species' descendants, written once. Species
    past the five of SPECIES are congeners: the first descendant of one of the five with 30 % of
    its bases changed, drawn from a generator of their own (a Markov chain of 3 Mbp takes
    seconds in Python; this, milliseconds), so the first five and the fragments stay as they were."""
    folder.mkdir(parents=True, exist_ok=True)
    source = STAPH if STAPH.is_dir() else ROOT / "examples" / "genomes"
    real = sorted(source.glob("*.fna.gz"))
    for path in real:
        link = folder / path.name
        if not link.exists():
            link.symlink_to(path)
    for s in range(species):
        if all((folder / f"species{s}_{d}.fa").exists() for d in range(len(DIVERGENCE))):
            continue
        if s < len(SPECIES):
            gc, skew = SPECIES[s]
            chromosome = np.frombuffer(synthetic_sequence(int(rng.integers(2**31)), gc, skew, length), np.uint8)
            plasmid = np.frombuffer(synthetic_sequence(int(rng.integers(2**31)), gc, -skew, 40_000), np.uint8)
            draw = rng
        else:
            draw = np.random.default_rng(s)
            kin = read_genome(folder / f"species{s % len(SPECIES)}_0.fa").records
            chromosome, plasmid = (mutate(draw, np.frombuffer(r.sequence, np.uint8), 0.30) for r in kin)
        for d, rate in enumerate(DIVERGENCE):
            records = [("chromosome", mutate(draw, chromosome, rate)), ("plasmid", mutate(draw, plasmid, rate))]
            text = b"".join(b">" + n.encode() + b"\n" + seq.tobytes() + b"\n" for n, seq in records)
            (folder / f"species{s}_{d}.fa").write_bytes(text)
    return find_fasta_files([folder])


def make_fragments(
    genomes: list[Path], per_length: int, rng: np.random.Generator, stored: dict[str, str]
) -> list[tuple[str, bytes, str]]:
    """(name, sequence, source genome's name in the store) for each fragment. A file whose
    genome the store already holds under another name (a GCF copy of a GCA assembly) is the
    same genome: `stored` maps each SHA-256 to the stored name."""
    loaded = [read_genome(path) for path in genomes]
    fragments = []
    for length in LENGTHS:
        for i in range(per_length):
            genome = loaded[rng.integers(len(loaded))]
            records = [r for r in genome.records if len(r.sequence) > length]
            weights = np.array([len(r.sequence) for r in records], dtype=float)
            record = records[rng.choice(len(records), p=weights / weights.sum())]
            start = int(rng.integers(0, len(record.sequence) - length))
            piece = mutate(rng, np.frombuffer(record.sequence[start : start + length], np.uint8), 0.01).tobytes()
            source = stored[genome.sha256]
            fragments.append((f"f{length}_{i}", reverse_complement(piece) if i % 2 else piece, source))
    return fragments


def skani_per_query(
    genomes: list[Path], fragments: list[tuple[str, bytes, str]], stored: dict[str, str]
) -> tuple[float, float]:
    """Seconds per query of skani (sketching the query included), and its top-1 accuracy, over
    the genomes the store holds (each once, by its stored name)."""
    import pyskani

    database, seen = pyskani.Database(), set()
    for path in genomes:
        genome = read_genome(path)
        if genome.sha256 not in seen:
            seen.add(genome.sha256)
            database.sketch(stored[genome.sha256], *[r.sequence for r in genome.records])
    right = 0
    started = time.perf_counter()
    for name, sequence, source in fragments:
        hits = database.query(name, sequence)
        right += bool(hits) and max(hits, key=lambda h: h.identity).reference_name == source
    return (time.perf_counter() - started) / len(fragments), right / len(fragments)


def searcher_figures(
    index: GenomeIndex, folder: Path, fragments: list[tuple[str, bytes, str]], warm_genomes: int | None = None
) -> dict:
    """Per-query seconds, per-stage seconds and recall, and top-1, of a warm searcher (minimap2
    indexes of `warm_genomes` genomes kept; default: as many as the aligners keep)."""
    files = []
    for name, sequence, _ in fragments:
        files.append(folder / f"{name}.fa")
        files[-1].write_bytes(b">" + name.encode() + b"\n" + sequence + b"\n")
    times, stages, recall, answers = [], {}, {}, []
    with index.searcher() as searcher:
        started = time.perf_counter()
        indexed = searcher.warm(genomes=warm_genomes)  # what queries read, and minimap2 indexes
        print(f"Searcher.warm(): {time.perf_counter() - started:.1f} s ({indexed} minimap2 indexes)")
        searcher.query(files[0], QueryOptions())
        for file, (_, _, source) in zip(files, fragments, strict=True):
            started = time.perf_counter()
            hits, timing = searcher.query_timed(file, QueryOptions())
            times.append(time.perf_counter() - started)
            answers.append(hits)
            if isinstance(timing, float):  # before stages were timed (up to 7fc691b): embedding only
                stages.setdefault("embed", []).append(timing)
                continue
            for stage, seconds in timing.seconds.items():
                stages.setdefault(stage, []).append(seconds)
            for stage, names in timing.passed.items():
                recall.setdefault(stage, []).append(source in names)
        unaligned = []  # the same queries without the verify stage: what minimap2 costs them
        for file in files:
            started = time.perf_counter()
            searcher.query(file, QueryOptions(align=False))
            unaligned.append(time.perf_counter() - started)
    top1 = sum(any(h.name == f[2] and h.rank == 1 for h in hits) for hits, f in zip(answers, fragments, strict=True))
    return {
        "times": times, "stages": stages, "recall": recall, "top1": top1 / len(fragments), "files": files,
        "unaligned": unaligned,
    }  # fmt: skip


def minimap2_costs(genomes: list[Path], fragments: list[tuple[str, bytes, str]], count: int = 20) -> str:
    """mappy's time (asm10, as `search.align`) for each of `count` 10 kb fragments on each
    synthetic genome: where it aligns, where it chains but scores no alignment (a relative at
    about 12 % divergence: over 1 ms) and the rest; and the second kind again with a minimum
    chain score of 1,000, with how many alignments that setting loses."""
    import mappy

    def aligner(path: Path, **options: int) -> Any:
        with tempfile.NamedTemporaryFile(suffix=".fa") as handle:
            handle.write(b"".join(b">%d\n%s\n" % (i, r.sequence) for i, r in enumerate(read_genome(path).records)))
            handle.flush()
            return mappy.Aligner(handle.name, preset="asm10", **options)

    base = tuple(f"species{number}_" for number in range(len(SPECIES)))  # congeners too would need ~9 GB
    synthetic = [path for path in genomes if path.name.startswith(base)]
    default = {path: aligner(path) for path in synthetic}
    strict: dict[Path, Any] = {}

    def stricter(path: Path) -> Any:
        if path not in strict:
            strict[path] = aligner(path, min_chain_score=1000)
        return strict[path]

    found, hopeless, rest, strict_times, lost = [], [], [], [], 0
    for _, sequence, _ in [f for f in fragments if f[0].startswith("f10000_")][:count]:
        for path, mapper in default.items():
            started = time.perf_counter()
            hits = list(mapper.map(sequence))
            seconds = time.perf_counter() - started
            if hits:
                found.append(seconds)
                lost += not list(stricter(path).map(sequence))
            elif seconds > 1e-3:
                hopeless.append(seconds)
                mapper = stricter(path)  # built before the clock starts
                started = time.perf_counter()
                list(mapper.map(sequence))
                strict_times.append(time.perf_counter() - started)
            else:
                rest.append(seconds)
    mean = lambda values: f"{np.mean(values) * 1000:.2f} ms (n={len(values)})" if values else "none"  # noqa: E731
    return (
        f"aligned {mean(found)}; chained but no alignment {mean(hopeless)}, with min_chain_score 1000 "
        f"{mean(strict_times)}; unrelated {mean(rest)}; alignments lost with min_chain_score 1000: {lost}"
    )


def exact_search_seconds(index_file: Path, rows: int = 8, repeats: int = 5) -> tuple[float, float]:
    """Seconds of one exact top-100 search of `rows` query vectors (stored windows, a little
    moved) on the store's flat chunk index: FAISS's own search, and genome-index's `search`."""
    import faiss

    from genome_index.store.indexes import search
    from genome_index.store.vectors import normalise

    index = faiss.read_index(str(index_file))
    rng = np.random.default_rng(0)
    queries = normalise(index.reconstruct_batch(faiss.vector_to_array(index.id_map)[:rows]))
    queries = normalise(queries + 0.01 * rng.random(queries.shape, dtype=np.float32))
    timed = []
    for run in (index.search, lambda q, k: search(index, q, k)):
        run(queries, 100)
        started = time.perf_counter()
        for _ in range(repeats):
            run(queries, 100)
        timed.append((time.perf_counter() - started) / repeats)
    return timed[0], timed[1]


def whole_genome(index: GenomeIndex, genome: Path) -> str:
    """A whole genome as a warm query (the second of two): seconds, where they went, its top hit."""
    with index.searcher() as searcher:
        searcher.query(genome, QueryOptions())
        started = time.perf_counter()
        hits, timing = searcher.query_timed(genome, QueryOptions())
        seconds = time.perf_counter() - started
    stages = ", ".join(f"{stage} {spent:.2f} s" for stage, spent in timing.seconds.items())
    return f"{seconds:.2f} s ({stages}); top hit {hits[0].name}"


def cli_seconds(args: list[str]) -> float:
    """Wall seconds of one `genome-index` process, its modules' bytecode cached as an installed
    package has it (PYTHONDONTWRITEBYTECODE, which some environments set, would have every run
    compile them: about 0.1 s)."""
    environment = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "genome_index.cli", *args], check=True, capture_output=True, env=environment)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, help="folder to keep (and reuse) the genomes and the store in")
    parser.add_argument("--per-length", type=int, default=85, help="fragments per length (85: 255 queries)")
    parser.add_argument("--synthetic-length", type=int, default=3_000_000, help="bp of each synthetic chromosome")
    parser.add_argument("--model", default="kmer:6", help="the store's model (nt-tiny: what embedding costs)")
    parser.add_argument("--species", type=int, default=len(SPECIES), help="synthetic species of six genomes each")
    parser.add_argument("--searcher-only", action="store_true", help="the warm searcher and skani alone (large stores)")
    parser.add_argument("--warm-genomes", type=int, help="minimap2 indexes to build and keep (default 64)")
    parser.add_argument("--sketch-scaled", type=int, help="the store's sketch density (build --sketch-scaled)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-latency-"))
    rng = np.random.default_rng(27)
    print(describe_machine())
    genomes = make_genomes(work / "genomes", args.synthetic_length, rng, args.species)
    store = work / ("index" if args.model == "kmer:6" else "index-" + args.model.replace(":", "-"))
    store = store.with_name(store.name + (f"-scaled{args.sketch_scaled}" if args.sketch_scaled else ""))
    index = GenomeIndex(store)
    started = time.perf_counter()
    index.build(genomes, model=args.model, store=StoreOptions(sketch_scaled=args.sketch_scaled))
    info = index.info()
    counts, built = info["counts"], time.perf_counter() - started
    print(f"store: {counts['genomes']} genomes, {info['bases'] / 1e6:.1f} Mbp, {counts['chunks']:,} windows, "
          f"{args.model} (built or brought up to date in {built:.1f} s)")  # fmt: skip
    stored = dict(index.sql("SELECT sha256, name FROM genomes")[1])
    fragments = make_fragments(genomes, args.per_length, rng, stored)
    skani, skani_top1 = skani_per_query(genomes, fragments, stored)
    print(f"skani (pyskani): {skani * 1000:.2f} ms a query, top-1 {skani_top1:.3f}")
    ours = searcher_figures(index, work, fragments, args.warm_genomes)
    times = np.array(ours["times"])
    p50, p99 = np.percentile(times, 50), np.percentile(times, 99)
    print(f"warm Searcher, defaults: p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
          f"mean {times.mean() * 1000:.1f} ms a query ({times.mean() / skani:.1f}x skani's); "
          f"top-1 {ours['top1']:.3f}")  # fmt: skip
    for stage, seconds in ours["stages"].items():
        kept = ours["recall"].get(stage)
        recall = f", recall {np.mean(kept):.3f}" if kept else ""
        median, mean = statistics.median(seconds) * 1000, np.mean(seconds) * 1000
        print(f"  {stage:<11} p50 {median:7.2f} ms, mean {mean:7.2f} ms{recall}")
    for length in LENGTHS:  # where each length's time goes
        mine = [i for i, (name, _, _) in enumerate(fragments) if name.startswith(f"f{length}_")]
        stages = ", ".join(
            f"{stage} {np.mean([ours['stages'][stage][i] for i in mine]) * 1000:.1f}" for stage in ours["stages"]
        )
        print(f"  {length // 1000} kb: p50 {np.median(times[mine]) * 1000:.1f} ms; stage means (ms): {stages}")
    bare = np.array(ours["unaligned"]) * 1000
    p50, p99 = np.percentile(bare, [50, 99])
    print(f"warm Searcher, --no-align: p50 {p50:.1f} ms, p99 {p99:.1f} ms, mean {bare.mean():.1f} ms a query")
    print(f"minimap2 on a 10 kb fragment, each synthetic genome: {minimap2_costs(genomes, fragments)}")
    if args.searcher_only:
        return
    every = work / "all.fa"
    every.write_bytes(b"".join(f.read_bytes() for f in ours["files"]))
    base = ["query", "-i", str(store)]
    seconds = cli_seconds([*base, str(every), "--per-record"])
    print(f"CLI, {len(fragments)} fragments in one `query --per-record`: {seconds:.1f} s")
    synthetic = next(path for path in genomes if path.name.startswith("species"))
    print(f"a whole genome ({synthetic.stem}) as a warm query: {whole_genome(index, synthetic)}")
    own, ours_exact = exact_search_seconds(store / "chunks.faiss")
    print(f"exact search of 8 query vectors on the chunk index: FAISS {own * 1000:.0f} ms, "
          f"genome-index's matrix product {ours_exact * 1000:.0f} ms ({own / ours_exact:.1f}x)")  # fmt: skip
    ten_kb = [f for f in ours["files"] if f.stem.startswith("f10000")][:6]
    cold = [cli_seconds([*base, str(path)]) for path in ten_kb]  # the first also writes the bytecode
    print(f"CLI, one cold `query` of a 10 kb fragment (a fresh process each, {len(cold)} fragments): "
          f"median {statistics.median(cold):.2f} s, first {cold[0]:.2f} s")  # fmt: skip


if __name__ == "__main__":
    main()
