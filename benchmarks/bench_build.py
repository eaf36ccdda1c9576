"""End-to-end `build` against the bare engine on the same chunks, in one run; and peak memory.

    python benchmarks/bench_build.py                          # nt-tiny on CPU
    python benchmarks/bench_build.py --shape nt-2.5b --genomes 48 --compile --no-rss   # on a GPU

The engine figure is `Embedder.embed_chunks` on every chunk of the genomes, already
tokenised: the model's pace. The build figure is `GenomeIndex.build` over the same FASTA
files with the same loaded model: reading, validating, tokenising, embedding, DuckDB
commits and FAISS adds, start to finish. Their ratio says how busy the build keeps the
model. The warm-up call before the engine figure is timed too: with --compile it is the
compilation. Each pass is timed batch by batch (`Timeline`), to say where a build loses time
against the engine: before the model first runs, between batches, after the last one, or in
padding. Then (unless --no-rss) peak RSS of a whole `build` process for 5 and 20 genomes.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine

from genome_index.api import GenomeIndex
from genome_index.embedding.embedder import Embedder
from genome_index.embedding.testing import SHAPES, random_checkpoint
from genome_index.io.fasta import read_genome
from genome_index.settings import ModelOptions, RunOptions

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "genomes"


def make_genomes(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """`count` distinct genomes: the example genomes with 1% random substitutions each."""
    rng = np.random.default_rng(seed)
    sources = [read_genome(p) for p in sorted(EXAMPLES.glob("*.fna.gz"))]
    bases = np.frombuffer(b"ACGT", np.uint8)
    paths = []
    for i in range(count):
        source = sources[i % len(sources)]
        path = folder / f"genome{i:03d}.fa"
        with open(path, "wb") as handle:
            for record in source.records:
                sequence = np.frombuffer(record.sequence, np.uint8).copy()
                where = rng.random(len(sequence)) < 0.01
                sequence[where] = rng.choice(bases, int(where.sum()))
                handle.write(b">" + record.id.encode() + b"\n" + sequence.tobytes() + b"\n")
        paths.append(path)
    return paths


def synchronize(cuda: bool) -> None:
    if cuda:
        torch.cuda.synchronize()


class Timeline:
    """Times every encoder call of one pass: on CUDA by events in the stream (the calls are
    asynchronous), on the CPU by the clock. Also counts padded against real tokens."""

    def __init__(self, embedder: Embedder, cuda: bool) -> None:
        self.encoder, self.cuda = embedder.encoder, cuda
        self.forward = self.encoder.forward
        self.marks: list = []  # (before, after) of each call: CUDA events or clock readings
        self.lengths: list[torch.Tensor] = []
        self.padded = 0

    def now(self):
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def __enter__(self) -> Timeline:
        def timed(ids: torch.Tensor, lengths: torch.Tensor, layers):
            before = self.now()
            out = self.forward(ids, lengths, layers)
            self.marks.append((before, self.now()))
            self.padded += ids.numel()
            self.lengths.append(lengths)  # summed after the pass: reading a CUDA tensor now would wait for it
            return out

        self.start = self.now()
        self.encoder.forward = timed
        return self

    def __exit__(self, *exc) -> None:
        del self.encoder.forward  # the class's own again
        synchronize(self.cuda)
        self.end = self.now()
        synchronize(self.cuda)

    def seconds(self, mark) -> float:
        """Seconds from the start of the pass to `mark`."""
        return self.start.elapsed_time(mark) / 1000 if self.cuda else mark - self.start

    def summary(self) -> str:
        spans = [(self.seconds(a), self.seconds(b)) for a, b in self.marks]
        real = sum(int(lengths.sum()) for lengths in self.lengths)
        wall = self.seconds(self.end)
        busy = sum(b - a for a, b in spans)
        gaps = sum(max(0.0, spans[i + 1][0] - spans[i][1]) for i in range(len(spans) - 1))
        return (
            f"{len(spans)} batches, padding {1 - real / self.padded:.1%}; model running {busy:.2f} s of "
            f"{wall:.2f} s ({busy / wall:.0%}): first batch at {spans[0][0]:.2f} s, idle between batches "
            f"{gaps:.2f} s, after the last batch {wall - spans[-1][1]:.2f} s"
        )


def peak_rss_of_build(count: int, shape: str) -> float:
    """Peak RSS (MB) of a child process that builds a store of `count` genomes."""
    child = subprocess.run(
        [sys.executable, __file__, "--rss-child", str(count), "--shape", shape],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return float(child.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="nt-tiny")
    parser.add_argument("--genomes", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--batch-tokens", type=int, default=None, help="token budget (default: the device's)")
    parser.add_argument("--layer", type=int, default=None)
    parser.add_argument("--checkpoint", type=Path, default=None, help="folder to keep (or reuse) the checkpoint in")
    parser.add_argument("--no-rss", action="store_true", help="skip the peak-RSS child builds")
    parser.add_argument("--chunking", choices=["anchored", "fixed"], default="anchored")
    parser.add_argument("--rss-child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        (tmp_path / "genomes").mkdir()
        files = make_genomes(tmp_path / "genomes", args.rss_child or args.genomes)
        cuda = args.device != "cpu" and torch.cuda.is_available()
        checkpoint = random_checkpoint(args.shape, args.checkpoint or tmp_path / "model", "cuda" if cuda else "cpu")
        embedder = Embedder(
            ModelOptions(str(checkpoint), args.layer, chunking=args.chunking),
            RunOptions(args.device, compile=args.compile, batch_tokens=args.batch_tokens),
        )
        if args.rss_child:
            GenomeIndex(tmp_path / "store").build(files, embedder=embedder)
            print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
            return

        chunks = [c for f in files for c in embedder.chunk(read_genome(f))]
        tokens = sum(c.n_tokens for c in chunks)
        bases = sum(c.end - c.start for c in chunks)
        start = time.perf_counter()
        embedder.embed_chunks(chunks[: max(8, len(chunks) // 20)])  # warm-up (and compile)
        synchronize(cuda)
        warm_up = time.perf_counter() - start
        start = time.perf_counter()
        with Timeline(embedder, cuda) as engine_timeline:
            embedder.embed_chunks(chunks)
        engine = time.perf_counter() - start

        start = time.perf_counter()
        with Timeline(embedder, cuda) as build_timeline:
            report = GenomeIndex(tmp_path / "store").build(files, embedder=embedder)
        build = time.perf_counter() - start
        assert len(report.added) == len(files)

    print(f"machine: {describe_machine()}")
    print(
        f"model: {args.shape} ({embedder.encoder.device}, {embedder.encoder.dtype}, compile={embedder.compiled}), "
        f"{len(files)} genomes, {bases / 1e6:.2f} Mbp, {len(chunks):,} {args.chunking} windows, {tokens:,} tokens"
    )
    print(f"bare engine : {tokens / engine:12,.0f} tokens/s  {bases / engine / 1e6:8.3f} Mbp/s")
    print(f"whole build : {tokens / build:12,.0f} tokens/s  {bases / build / 1e6:8.3f} Mbp/s")
    print(f"ratio build / engine: {engine / build:.2f}")
    print(f"  engine: {engine_timeline.summary()}")
    print(f"  build : {build_timeline.summary()}")
    print(f"warm-up call before the engine figure{' (compilation)' if embedder.compiled else ''}: {warm_up:.1f} s")
    if args.no_rss:
        return
    rss = {count: peak_rss_of_build(count, args.shape) for count in (5, 20)}
    print(f"peak RSS of build: {rss[5]:.0f} MB for 5 genomes, {rss[20]:.0f} MB for 20 genomes")


if __name__ == "__main__":
    main()
