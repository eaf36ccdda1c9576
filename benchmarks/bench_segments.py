"""A trained `ivf-pq` store past one machine's memory: build and query memory, speed and recall.

    python benchmarks/bench_segments.py [--genomes 1000] [--windows 1000] [--dim 1024] [--work DIR] [--ray-shards 2]

Writes a store of synthetic genomes at vector level through the build's real writer
(`build.writer.Writer`, as a Ray driver commits what its workers send): float16 vectors of a
500M-class width, each genome a centre plus per-window spread, genomes of a family near one
another (ten a family: `genome_vectors`), no sequences. The `ivf-pq` store is exact until it holds
`train_threshold(ivf_lists)` vectors, is then trained once on a sample and grows by segments. In the
same run, the same genomes go to a `flat` store (the writer's rate as `bench_ray.py` measures
it), and exact search gives the true neighbours. Each phase runs in a process of its own, so
its peak resident memory is its own:

1. build the `ivf-pq` store, in two builds as a large store grows: the first commits the genomes
   that reach the training threshold and trains once; the second commits the rest on the
   trained store, their codes made beforehand as a Ray build's workers make them (`--encode
   workers`, the default; `--encode driver`: the writer encodes, as a local build does):
   genomes/s of each (the training apart), peak RSS, the training's seconds, disk per part;
2. build a `flat` store of the same genomes: genomes/s (the baseline of the writer's rate;
   `--no-flat` where its index would not fit in memory);
3. exact top-10 of 1,000 query windows (stored windows plus noise), streamed from the vectors;
4. query: the store opened as a query opens it (segments memory-mapped), 100 queries of 10
   windows at the default probes, twice (the first pass maps the lists it probes, reading them
   from disk where the page cache lacks them; p50 and p99 are the second pass's): by the codes
   alone (as queries of a trained store are), then with the exact re-score of the candidates
   (their vectors read from the vector files), then on `--ray-shards` Ray actors of a local Ray
   (0: not): p50 and p99 per query, recall@10 against phase 3, peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from concurrent.futures import Future
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine

from genome_index.build.run import BuildReport
from genome_index.build.writer import Add, Writer, open_store
from genome_index.settings import IVF_LISTS, StoreSettings
from genome_index.store import Store
from genome_index.store.indexes import RERANK, search, train_threshold
from genome_index.store.rows import NewGenome
from genome_index.store.segments import Codes, Segments, SegmentWriter
from genome_index.store.vectors import normalise, rescore, unit_sum

FAMILY = 10  # genomes per family (near one another)
QUERIES, QUERY_WINDOWS, K = 1000, 10, 10


def genome_vectors(number: int, windows: int, dim: int) -> np.ndarray:
    """Genome `number`'s window vectors. Its family (FAMILY genomes) has a centre and, for each
    window, a direction of its own; each genome's window is that direction plus the centre plus
    its own spread. So a window's nearest stored windows are the same window in the genomes of
    its family (cosine about 0.93), well apart from the rest (0.19 within the family, 0 beyond),
    as homologous windows of related strains are, and none are ties made of pure noise."""
    family = np.random.default_rng(number // FAMILY)
    centre = family.normal(size=dim)
    directions = family.normal(size=(windows, dim))
    spread = np.random.default_rng(1_000_003 + number).normal(size=(windows, dim))
    return (0.5 * centre + directions + 0.3 * spread).astype(np.float16)


def new_genome(number: int, windows: int, dim: int) -> NewGenome:
    size = 3_000_000 // windows
    starts = np.arange(windows) * size
    vectors = genome_vectors(number, windows, dim)
    return NewGenome(
        name=f"genome{number:06d}", file=f"genome{number:06d}.fna", sha256=f"{number:064x}", length=3_000_000,
        gc=0.5, n_count=0,
        records=[{"name": "chr", "description": "chr", "length": 3_000_000, "gc": 0.5, "n_count": 0}],
        chunks={
            "record": np.zeros(windows, int), "start": starts, "end": starts + size, "n_tokens": np.full(windows, 500),
            "gc": np.full(windows, 0.5), "n_count": np.zeros(windows, int),
        },
        vectors=vectors, chunk_sum=unit_sum(vectors), labels={}, sketch=np.arange(3, dtype=np.uint64) + number * 8,
        sketch_scaled=1000, sequences=None,
    )  # fmt: skip


def settings(dim: int, index_type: str) -> StoreSettings:
    return StoreSettings(
        model="bench", model_source="bench", model_revision="bench", layer=0, chunk_tokens=2048, chunking="anchored",
        anchor_radius=3000, overlap=0, dim=dim, index_type=index_type, vector_dtype="float16", sketch_scaled=1000,
    )  # fmt: skip


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def resident_mb(kind: str) -> float:
    """This process's resident memory of one kind now: RssAnon (its own) or RssFile (pages of
    mapped files: the segments' lists a query has probed, which the kernel may drop at will)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{kind}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def build(folder: Path, index_type: str, genomes: int, windows: int, dim: int, encode: str = "workers") -> dict:
    """Commit the genomes with the build's writer, as fast as it takes them. An `ivf-pq` store is
    built in two builds, as a large store grows: the first commits the genomes that reach the
    training threshold and trains; the second commits the rest on the trained store. With
    `encode` "workers", the second build's genomes come with their codes, as a Ray build's
    workers send them (encoded beforehand with the store's `Codebook`, timed apart: on a real
    cluster the GPUs' machines do it); with "driver", the writer encodes them as a local build does."""
    shutil.rmtree(folder, ignore_errors=True)
    store = Store(folder)
    folder.mkdir(parents=True)
    store.create(settings(dim, index_type))
    first = genomes if index_type == "flat" else min(genomes, -(-train_threshold(IVF_LISTS) // windows))
    training = []
    train_segments = store.train_segments

    def timed_training(*given):  # the one-off training, timed apart from the commits
        began = time.perf_counter()
        try:
            return train_segments(*given)
        finally:
            training.append(time.perf_counter() - began)

    store.train_segments = timed_training
    started = time.perf_counter()
    commit(store, range(first), windows, dim)
    seconds = [time.perf_counter() - started - sum(training)]
    result = {"first_genomes": first, "training_s": sum(training), "encoding_s": 0.0}
    if first < genomes:
        rest = range(first, genomes)
        codes_file = folder.parent / "codes.bin"
        if encode == "workers":
            began = time.perf_counter()
            encode_beforehand(store, rest, windows, dim, codes_file)
            result["encoding_s"] = time.perf_counter() - began
        started = time.perf_counter()
        commit(store, rest, windows, dim, codes_file if encode == "workers" else None)
        seconds.append(time.perf_counter() - started)
        codes_file.unlink(missing_ok=True)
    streaming = seconds[-1]
    return {**result, "seconds": sum(seconds), "genomes_per_s": (genomes - first if first < genomes else genomes)
            / streaming, "first_genomes_per_s": first / seconds[0], "peak_rss_mb": peak_rss_mb(),
            "disk": disk(folder)}  # fmt: skip


def commit(store: Store, numbers: range, windows: int, dim: int, codes_file: Path | None = None) -> None:
    """One build: the genomes `numbers` committed by a `Writer` over the store as it stands (with
    their codes read from `codes_file`, where given, as a Ray worker sends them)."""
    _, _, indexes, _ = open_store(store)
    checked: Future = Future()
    checked.set_result({Path(f"genome{i:06d}.fna"): f"{i:064x}" for i in numbers})
    writer = Writer(store, indexes, store.settings(), checked, BuildReport()).start()
    codebook = indexes["chunks"].codebook if codes_file is not None else None
    for n, number in enumerate(numbers):
        new = new_genome(number, windows, dim)
        if codebook is not None:
            size = windows * codebook.code_size
            raw = np.fromfile(codes_file, dtype=np.uint8, count=size, offset=n * size)
            new.codes = Codes(codebook.digest, raw.reshape(windows, -1))
        writer.put(Add(new, new.name, {}))
    writer.finish()


def encode_beforehand(store: Store, numbers: range, windows: int, dim: int, codes_file: Path) -> None:
    """What a Ray build's workers do on a trained store: encode each genome's vectors (from the
    stored float16, normalised) with the store's `Codebook`; written to `codes_file` in order."""
    segments = Segments(store.directory)
    encode = SegmentWriter(segments, segments.generation()).codebook.encoder()
    with codes_file.open("wb") as handle:
        for number in numbers:
            vectors = genome_vectors(number, windows, dim)
            handle.write(encode(normalise(vectors.astype(np.float32))).codes.tobytes())


def disk(folder: Path) -> dict:
    segments = folder / "chunks.ivf"
    trained = sum(p.stat().st_size for p in segments.rglob("trained.faiss"))
    codes = sum(p.stat().st_size for p in segments.rglob("0*.faiss"))
    files = {p.name: p.stat().st_size for p in folder.glob("*.faiss")}
    vectors = list((folder / "vectors").glob("*.parquet"))
    return {"duckdb": (folder / "metadata.duckdb").stat().st_size, "trained": trained, "segments": codes,
            "segment_files": len(list(segments.rglob("0*.faiss"))), "vectors": sum(p.stat().st_size for p in vectors),
            "vector_files": len(vectors), **files}  # fmt: skip


def queries(genomes: int, windows: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """QUERIES stored windows (10 each of QUERIES/10 genomes) with noise, and their genomes."""
    rng = np.random.default_rng(11)
    chosen = rng.choice(genomes, QUERIES // QUERY_WINDOWS, replace=False)
    rows = []
    for number in chosen:
        vectors = genome_vectors(int(number), windows, dim).astype(np.float32)
        rows.append(vectors[rng.choice(windows, QUERY_WINDOWS, replace=False)] + 0.3 * rng.normal(size=(1, dim)))
    return normalise(np.concatenate(rows)), chosen


def exact(folder: Path, genomes: int, windows: int, dim: int) -> dict:
    """The true top-K of every query window, streamed through the stored vectors a block at a time."""
    wanted, _ = queries(genomes, windows, dim)
    best_scores = np.full((len(wanted), 0), -np.inf, dtype=np.float32)
    best_ids = np.empty((len(wanted), 0), dtype=np.int64)
    with Store(folder).reading() as reader:
        for ids, vectors in reader.vector_blocks("chunks", dim, 16_384):
            scores = wanted @ normalise(vectors).T
            best_scores = np.concatenate([best_scores, scores], axis=1)
            best_ids = np.concatenate([best_ids, np.broadcast_to(ids, scores.shape)], axis=1)
            top = np.argsort(-best_scores, axis=1)[:, :K]
            best_scores, best_ids = np.take_along_axis(best_scores, top, 1), np.take_along_axis(best_ids, top, 1)
    return {"ids": best_ids.tolist(), "peak_rss_mb": peak_rss_mb()}


def query(folder: Path, genomes: int, windows: int, dim: int, truth: list, how: str, shards: int = 2) -> dict:
    """Open the chunk index as a query does and search QUERIES/10 queries of 10 windows: by the
    codes alone (`how` "codes", what a query of a trained store does), with "rescore" as an
    in-memory IVF-PQ is searched (RERANK x k candidates re-scored with their vectors read from
    DuckDB), or with "ray" on `shards` Ray actors of a local Ray started here (the segments
    spread over them, as `serve --ray` searches; their peak RSS reported apart)."""
    wanted, _ = queries(genomes, windows, dim)
    store = Store(folder)
    started = time.perf_counter()
    with store.reading() as reader:
        index, _ = store.load_faiss(reader, "chunks", store.settings())
        nprobe, nlist = int(index.nprobe), int(index.nlist)
        if how == "ray":
            from genome_index.search.shards import ShardPool

            index = ShardPool(folder, "auto", shards).place(index)
            actors = [shard["pid"] for shard in index.shard_info()]  # waits for the actors to map their segments
        opened = time.perf_counter() - started
        passes, private = [], [resident_mb("RssAnon")]
        for _ in range(2):  # the first pass maps (and maybe reads) the lists it probes; the second finds them cached
            seconds, found = [], []
            for lo in range(0, len(wanted), QUERY_WINDOWS):
                started = time.perf_counter()
                batch = wanted[lo : lo + QUERY_WINDOWS]
                if how == "rescore":
                    _, candidates = index.search(batch, K * RERANK)
                    _, ids = rescore(batch, candidates, lambda ids: normalise(reader.chunk_vectors(ids, dim)), K)
                else:
                    _, ids = search(index, batch, K, lambda ids: reader.chunk_vectors(ids, dim))
                seconds.append(time.perf_counter() - started)
                found.append(ids)
                private.append(resident_mb("RssAnon"))
            passes.append((seconds, np.concatenate(found)))
    (first, found), (seconds, _) = passes
    recall = float(np.mean([len(set(a) & set(b)) / K for a, b in zip(found.tolist(), truth, strict=True)]))
    result = {"open_s": opened, "p50_ms": 1000 * float(np.percentile(seconds, 50)),
              "p99_ms": 1000 * float(np.percentile(seconds, 99)),
              "first_p50_ms": 1000 * float(np.percentile(first, 50)),
              "first_p99_ms": 1000 * float(np.percentile(first, 99)), "recall": recall, "nprobe": nprobe,
              "nlist": nlist, "ntotal": int(index.ntotal), "peak_rss_mb": peak_rss_mb(),
              "peak_private_mb": max(private), "mapped_mb": resident_mb("RssFile")}  # fmt: skip
    if how == "ray":
        result["actor_peak_rss_mb"] = [peak_of(pid) for pid in actors]
    return result


def peak_of(pid: int) -> float:
    """Peak resident memory of another process of this machine (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def phase(args: argparse.Namespace, name: str, *extra: str) -> dict:
    """Run one phase in a process of its own; its JSON result."""
    command = [sys.executable, __file__, "--phase", name, "--genomes", str(args.genomes), "--windows",
               str(args.windows), "--dim", str(args.dim), "--work", str(args.work), "--encode", args.encode,
               *extra]  # fmt: skip
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--genomes", type=int, default=1000)
    parser.add_argument("--windows", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-segments"))
    parser.add_argument("--phase", choices=["build", "flat", "exact", "query", "query-rescore", "query-ray"])
    parser.add_argument("--ray-shards", type=int, default=2, help="Ray actors of the query-ray phase")
    parser.add_argument("--truth", type=Path, help="the exact phase's truth.json of an earlier run of the same shape")
    parser.add_argument(
        "--encode",
        choices=["workers", "driver"],
        default="workers",
        help="who encodes the genomes committed to the trained store: a Ray build's workers, or the writer",
    )
    parser.add_argument(
        "--flat",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also build a flat store of the same genomes (its index is 4 bytes x dim a vector)",
    )
    args = parser.parse_args()
    ivf, flat = args.work / "ivf-pq", args.work / "flat"
    shape = (args.genomes, args.windows, args.dim)
    if args.phase == "build":
        print(json.dumps(build(ivf, "ivf-pq", *shape, args.encode)))
    elif args.phase == "flat":
        result = build(flat, "flat", *shape)
        shutil.rmtree(flat)
        print(json.dumps(result))
    elif args.phase == "exact":
        print(json.dumps(exact(ivf, *shape)))
    elif args.phase in ("query", "query-rescore", "query-ray"):
        truth = json.loads(args.truth.read_text())["ids"]
        how = {"query": "codes", "query-rescore": "rescore", "query-ray": "ray"}[args.phase]
        print(json.dumps(query(ivf, *shape, truth, how, args.ray_shards)))
    else:
        report(args)


def report(args: argparse.Namespace) -> None:
    vectors = args.genomes * args.windows
    print(f"machine: {describe_machine()}")
    print(f"{args.genomes:,} genomes x {args.windows:,} windows = {vectors:,} vectors of {args.dim}, float16; "
          f"ivf-pq trained at {train_threshold(IVF_LISTS):,} vectors into {IVF_LISTS:,} lists")  # fmt: skip
    args.work.mkdir(parents=True, exist_ok=True)
    built = phase(args, "build")
    who = "the codes from the workers (encoded beforehand in" if args.encode == "workers" else "encoded by the writer ("
    print(f"1. build, ivf-pq: the first {built['first_genomes']:,} genomes at {built['first_genomes_per_s']:.2f} "
          f"genomes/s, then {built['training_s']:.0f} s of training once; the rest on the trained store: "
          f"{built['genomes_per_s']:.2f} genomes/s committed, {who} {built['encoding_s']:.0f} s); "
          f"peak RSS {built['peak_rss_mb']:,.0f} MB")  # fmt: skip
    if args.flat:
        baseline = phase(args, "flat")
        ratio = built["genomes_per_s"] / baseline["genomes_per_s"]
        print(f"2. build, flat (the writer's rate before): {baseline['genomes_per_s']:.2f} genomes/s, peak RSS "
              f"{baseline['peak_rss_mb']:,.0f} MB; ivf-pq / flat: {ratio:.2f}")  # fmt: skip
    else:
        print("2. build, flat: left out (--no-flat: its index would not fit this machine's memory)")
    if args.truth is not None:  # the same genomes and queries give the same truth: an earlier run's, reused
        truth_file = args.truth
        print(f"3. exact top-{K} of {QUERIES} query windows: reused from {truth_file}")
    else:
        truth = phase(args, "exact")
        truth_file = args.work / "truth.json"
        truth_file.write_text(json.dumps(truth))
        print(f"3. exact top-{K} of {QUERIES} query windows (streamed): peak RSS {truth['peak_rss_mb']:,.0f} MB")
    ways = [("query", "by the codes alone, the default"), ("query-rescore", "exact re-score from the vector files")]
    if args.ray_shards:
        ways.append(("query-ray", f"on {args.ray_shards} Ray actors of a local Ray"))
    for name, how in ways:
        found = phase(args, name, "--truth", str(truth_file), "--ray-shards", str(args.ray_shards))
        print(f"4. query, {how} (segments memory-mapped, nprobe {found['nprobe']} of {found['nlist']}): "
              f"open {found['open_s']:.2f} s, p50 {found['p50_ms']:.1f} ms, p99 {found['p99_ms']:.1f} ms per "
              f"{QUERY_WINDOWS}-window query (first pass: {found['first_p50_ms']:.1f} / "
              f"{found['first_p99_ms']:.1f} ms); "
              f"recall@{K} {found['recall']:.3f}; "
              f"peak RSS {found['peak_rss_mb']:,.0f} MB, of it private {found['peak_private_mb']:,.0f} MB "
              f"(the rest pages of mapped files: {found['mapped_mb']:,.0f} MB at the end)")  # fmt: skip
        if "actor_peak_rss_mb" in found:
            print(f"   the actors' peak RSS: {', '.join(f'{mb:,.0f} MB' for mb in found['actor_peak_rss_mb'])}")
    sizes = built["disk"]
    print(f"disk: metadata.duckdb {sizes['duckdb'] / 1e9:.2f} GB, {sizes['vector_files']} vector files "
          f"{sizes['vectors'] / 1e9:.2f} GB, trained {sizes['trained'] / 1e6:.1f} MB, "
          f"{sizes['segment_files']} segments {sizes['segments'] / 1e9:.3f} GB, genomes.faiss "
          f"{sizes.get('genomes.faiss', 0) / 1e6:.1f} MB")  # fmt: skip
    per = {part: sizes[key] / args.genomes for part, key in
           (("DuckDB rows (no sequences here)", "duckdb"), ("vector files beside DuckDB", "vectors"),
            ("segments (codes and ids)", "segments"))}  # fmt: skip
    print("| per genome | this store | 100 k genomes | 1 M genomes |")
    print("| --- | --- | --- | --- |")
    for part, size in per.items():
        print(f"| {part} | {size / 1e6:.2f} MB | {size * 1e5 / 1e9:.0f} GB | {size * 1e6 / 1e12:.2f} TB |")


if __name__ == "__main__":
    main()
