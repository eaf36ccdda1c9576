"""How many GPUs one `build --ray` driver can feed, and what a Ray actor embeds, in one run.

    python benchmarks/bench_ray.py [--genomes 48] [--dim 2560] [--windows 1000] [--model nt-tiny]

1. The driver's commit ceiling. Every genome of a Ray build ends in the driver, which
   unpickles it and commits it with the build's writer (DuckDB rows, then FAISS). This feeds
   the real `build.writer.Writer` pickled genomes as a Ray worker sends them: 3 Mbp genomes of
   1,000 windows (the anchored default's mean of 3 kb) with float16 vectors of NT-2.5B
   width (2,560) for a float16 store, their unit sum, packed sequences and sketches. It runs
   twice, genomes committed in groups (the default) and one genome a transaction (as
   before), and prints genomes/s and vectors/s while streaming (FAISS file writes apart:
   the writer bounds them to a share of its time) and what the end of the build costs once,
   then how many H100s at the engine rate of ../shared/DESIGN.md (105,700 tokens/s, 6 bp a
   token: a 3 Mbp genome every 4.7 s) the driver keeps up with.
2. The per-actor embedding rate. A real `--ray` build of the example genomes on a local Ray
   (one CPU actor) against a local build with the same model in this process, pinned to
   one thread as the actor is (Ray gives a one-CPU actor one thread).
"""

from __future__ import annotations

import argparse
import logging
import pickle
import shutil
import sys
import tempfile
import time
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine

from genome_index.api import GenomeIndex
from genome_index.build import writer as writer_module
from genome_index.build.run import BuildReport
from genome_index.build.writer import Add, Stop, Writer
from genome_index.io.sequences import pack
from genome_index.progress import Progress, Step
from genome_index.settings import StoreSettings
from genome_index.store import FAISS_FILES, Store
from genome_index.store.indexes import build_faiss
from genome_index.store.rows import NewGenome
from genome_index.store.vectors import unit_sum

ROOT = Path(__file__).resolve().parent.parent
H100_TOKENS_PER_S = 105_700  # ../shared/DESIGN.md, NT-2.5B shape, bf16 + SDPA + torch.compile
BP_PER_TOKEN = 6
GENOME_BP = 3_000_000
TARGET_GPUS = 64
COMMIT_GROUP_BYTES = writer_module.COMMIT_GROUP_BYTES
FAISS_SHARE = 1 - writer_module.FAISS_WRITE_SHARE  # of a long build's writer time left for commits


def genome(rng: np.random.Generator, number: int, windows: int, dim: int) -> NewGenome:
    """A 3 Mbp genome's rows as a Ray worker sends them to a float16 store: random float16
    vectors and their unit sum."""
    size = GENOME_BP // windows
    starts = np.arange(windows) * size
    sequence = np.frombuffer(b"ACGT", np.uint8)[rng.integers(0, 4, GENOME_BP)].tobytes()
    return NewGenome(
        name=f"genome{number:05d}", file=f"genome{number:05d}.fna", sha256=f"{number:064x}", length=GENOME_BP,
        gc=0.33, n_count=0,
        records=[{"name": "chr", "description": "chr", "length": GENOME_BP, "gc": 0.33, "n_count": 0}],
        chunks={
            "record": np.zeros(windows, int), "start": starts, "end": starts + size,
            "n_tokens": np.full(windows, size // BP_PER_TOKEN + 1), "gc": np.full(windows, 0.33),
            "n_count": np.zeros(windows, int),
        },
        vectors=(vectors := rng.normal(size=(windows, dim)).astype(np.float16)), chunk_sum=unit_sum(vectors), labels={},
        sketch=np.sort(rng.integers(0, 2**63, 3000, dtype=np.uint64)), sketch_scaled=1000,
        sequences=[pack(sequence, 80)],
    )  # fmt: skip


class TimedWriter(Writer):
    """The build's writer, timing its FAISS file writes apart from its commits."""

    faiss_seconds = 0.0

    def write_indexes(self, train: bool = True) -> float:
        started = time.perf_counter()
        writing = super().write_indexes(train)
        self.faiss_seconds += time.perf_counter() - started
        return writing


def commit_rates(blobs: list[bytes], dim: int, group_bytes: int) -> tuple[float, float, float]:
    """The writer fed pickled genomes as fast as it takes them: (genomes/s while streaming,
    FAISS writes excluded; seconds of FAISS writes while streaming; seconds the end of the
    build takes: DuckDB checkpoint and the final FAISS files)."""
    settings = StoreSettings(
        model="bench", model_source="bench", model_revision="bench", layer=0, chunk_tokens=1000, chunking="anchored",
        anchor_radius=1498, overlap=0, dim=dim, index_type="flat", vector_dtype="float16", sketch_scaled=1000,
    )  # fmt: skip
    writer_module.COMMIT_GROUP_BYTES = group_bytes
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "store")
        store.directory.mkdir()
        store.create(settings)
        indexes = {kind: build_faiss(np.zeros(0, np.int64), np.zeros((0, dim)), dim, "flat") for kind in FAISS_FILES}
        checked: Future = Future()
        checked.set_result({Path(f"genome{i:05d}.fna"): f"{i:064x}" for i in range(len(blobs))})
        started = time.perf_counter()
        writer = TimedWriter(store, indexes, settings, checked, BuildReport()).start()
        for blob in blobs:
            new = pickle.loads(blob)
            writer.put(Add(new, new.name, {}))
        writer.put(Stop())
        writer.thread.join()
        streamed = time.perf_counter()
        during = writer.faiss_seconds
        writer.finish()
        return len(blobs) / (streamed - started - during), during, time.perf_counter() - streamed


class Timed(Progress):
    """Records when the build step starts and when each genome is done."""

    def __init__(self) -> None:
        self.started = 0.0
        self.done: list[float] = []

    def step(self, name: str, total: float | None = None, unit: str = "bp", **counts: int) -> Step:
        self.started = time.perf_counter()
        outer = self

        class Recording(Step):
            def advance(self, amount: float = 0, **counts: int) -> None:
                if counts.get("genomes"):
                    outer.done.append(time.perf_counter())

        return Recording()


def actor_rate(model: str) -> tuple[float, float, float]:
    """(local build Mbp/s on one thread, Ray actor Mbp/s, the Ray build's whole seconds)."""
    import ray

    genomes = sorted((ROOT / "examples" / "genomes").glob("*.fna.gz"))
    bases = 0
    with tempfile.TemporaryDirectory() as tmp:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            report = GenomeIndex(Path(tmp) / "local").build(genomes, model)
        finally:
            torch.set_num_threads(threads)
        bases = report.bases
        local = bases / report.seconds / 1e6
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
        try:
            GenomeIndex(Path(tmp) / "warm").build(genomes[:1], model, ray_address="auto")  # workers start once
            shutil.rmtree(Path(tmp) / "warm")
            timed = Timed()
            started = time.perf_counter()
            GenomeIndex(Path(tmp) / "ray").build(genomes, model, ray_address="auto", progress=timed)
            whole = time.perf_counter() - started
        finally:
            ray.shutdown()
    return local, bases / (timed.done[-1] - timed.started) / 1e6, whole


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--genomes", type=int, default=240)
    parser.add_argument("--dim", type=int, default=2560)
    parser.add_argument("--windows", type=int, default=1000, help="windows per 3 Mbp genome")
    parser.add_argument("--model", default="nt-tiny", help="model of the per-actor measurement")
    args = parser.parse_args()
    print(f"machine: {describe_machine()}")
    rng = np.random.default_rng(0)
    distinct = [genome(rng, i, args.windows, args.dim) for i in range(8)]  # vectors reused: made quickly
    blobs = []
    for i in range(args.genomes):
        new = distinct[i % len(distinct)]
        new.name, new.file, new.sha256 = f"genome{i:05d}", f"genome{i:05d}.fna", f"{i:064x}"
        blobs.append(pickle.dumps(new))
    gpu_genomes_per_s = H100_TOKENS_PER_S * BP_PER_TOKEN / GENOME_BP
    index_gb = args.genomes * args.windows * args.dim * 4 / 1e9
    print(
        f"1. driver commit ceiling: {args.genomes} genomes of 3 Mbp, {args.windows} float16 vectors of {args.dim} "
        f"each, with sequences and sketches, unpickled and committed by build.writer.Writer to a flat store "
        f"(chunk index {index_gb:.1f} GB)"
    )
    rates = {}
    for label, group_bytes in (("one genome a transaction", 1), ("grouped commits (default)", COMMIT_GROUP_BYTES)):
        rate, during, end = commit_rates(blobs, args.dim, group_bytes)
        rates[label] = rate
        fed = FAISS_SHARE * rate / gpu_genomes_per_s
        print(
            f"   {label:<26}: {rate:6.2f} genomes/s, {rate * args.windows:9,.0f} vectors/s while streaming "
            f"(+{during:.1f} s of FAISS file writes, at most {1 - FAISS_SHARE:.0%} of a long build; "
            f"end of build {end:.1f} s) -> keeps up with {fed:.0f} H100s"
        )
    grouped = rates["grouped commits (default)"]
    print(f"   ratio grouped / one a transaction: {grouped / rates['one genome a transaction']:.1f}x")
    fed = FAISS_SHARE * grouped / gpu_genomes_per_s
    verdict = "enough" if fed >= TARGET_GPUS else "NOT enough"
    print(
        f"   one H100 embeds a 3 Mbp genome every {1 / gpu_genomes_per_s:.1f} s; one driver feeds {fed:.0f} of them "
        f"(its rate less the FAISS writes' {1 - FAISS_SHARE:.0%}): {verdict} for {TARGET_GPUS}"
    )
    local, actor, whole = actor_rate(args.model)
    print(f"2. per-actor embedding rate, {args.model}, the 4 example genomes (0.63 Mbp), one CPU actor on local Ray:")
    print(f"   local build, one thread : {local:.3f} Mbp/s")
    print(f"   Ray actor               : {actor:.3f} Mbp/s (whole --ray build {whole:.1f} s, Ray's start included)")
    print(f"   ratio actor / local     : {actor / local:.2f}")


if __name__ == "__main__":
    main()
