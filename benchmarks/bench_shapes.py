"""Bare engine on anchored windows (every batch a new width): SDPA backends and width rounding.

    python benchmarks/bench_shapes.py --shape nt-2.5b --checkpoint DIR     # on a GPU

Fixed 1000-token windows give every batch one shape; anchored windows give nearly every
batch its own width. This times the same windows three ways in one process: as is, with
SDPA's cuDNN backend excluded, and with batch widths rounded up to a multiple of 64.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine
from bench_build import make_genomes

from genome_index.embedding.embedder import Embedder
from genome_index.embedding.testing import SHAPES, random_checkpoint
from genome_index.io.fasta import read_genome
from genome_index.settings import RunOptions


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def rate(engine: Embedder, chunks: list, backends: list | None) -> float:
    tokens = sum(c.n_tokens for c in chunks)
    with sdpa_kernel(backends) if backends else torch.inference_mode():
        synchronize()
        start = time.perf_counter()
        engine.embed_chunks(chunks)
        synchronize()
    return tokens / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="nt-2.5b")
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--genomes", type=int, default=24)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "g").mkdir()
        files = make_genomes(Path(tmp) / "g", args.genomes, seed=1)
        device = "cuda" if torch.cuda.is_available() else "cpu"  # the CPU only to try the script out
        checkpoint = random_checkpoint(args.shape, args.checkpoint or Path(tmp) / "model", device)
        engine = Embedder(str(checkpoint), RunOptions(device=device))
        chunks = [c for f in files for c in engine.chunk(read_genome(f))]
        no_cudnn = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
        print(f"machine: {describe_machine()}")
        print(f"{len(chunks):,} anchored windows, {sum(c.n_tokens for c in chunks):,} tokens")
        for label, multiple, backends in [
            ("as is (first pass, new shapes)", 1, None),
            ("as is (second pass, same shapes)", 1, None),
            ("no cuDNN attention", 1, no_cudnn),
            ("widths rounded to 64", 64, None),
            ("widths rounded to 64, second pass", 64, None),
        ]:
            engine.width_multiple = multiple
            print(f"{label:36s}: {rate(engine, chunks, backends):10,.0f} tokens/s")


if __name__ == "__main__":
    main()
