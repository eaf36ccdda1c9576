"""Embedding engine vs the research-code loop, same chunks, same process; GPU memory by budget.

    python benchmarks/bench_embed.py --shape nt-tiny          # CPU is fine
    python benchmarks/bench_embed.py --shape nt-2.5b          # needs a GPU (random weights)
    python benchmarks/bench_embed.py --shape nt-2.5b --layer 20 --reference-chunks 0 --probe-budgets

The research loop is how the original code embedded: fp32, one chunk at a time, the whole
model with all hidden states returned. The engine is genome-index's: length-sorted batches,
bf16 on CUDA, only the blocks up to the layer, pooled on the device. Chunks are full
1000-token windows of random sequence. Prints tokens/s of both and the ratio; on a GPU also
the engine's peak memory, and with --probe-budgets the peak memory of one batch at each
doubling of --batch-tokens until the card runs out.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine

from genome_index.embedding.embedder import Embedder
from genome_index.embedding.reference import embed_reference
from genome_index.embedding.testing import SHAPES, random_checkpoint
from genome_index.embedding.tokenize import chunk_tokens
from genome_index.settings import ModelOptions, RunOptions

BP_PER_TOKEN = 5.994  # bases per token of a 1000-token window of N-free sequence (999 6-mers + <cls>)


def random_chunks(embedder: Embedder, count: int) -> list:
    rng = np.random.default_rng(0)
    sequence = rng.choice(np.frombuffer(b"ACGT", np.uint8), 6000 * count).tobytes()
    tokens = embedder.tokenizer.tokenize(sequence)
    return chunk_tokens(tokens, embedder.tokenizer, 0, 1000)[:count]


def synchronize(cuda: bool) -> None:
    if cuda:
        torch.cuda.synchronize()


def time_engine(engine: Embedder, chunks: list, cuda: bool) -> tuple[float, float]:
    """Tokens/s of one call over `chunks`, and the seconds of the warm-up call before it
    (kernel selection, allocator, and with --compile the compilation)."""
    start = time.perf_counter()
    engine.embed_chunks(chunks[: max(4, len(chunks) // 16)])
    synchronize(cuda)
    warm_up = time.perf_counter() - start
    start = time.perf_counter()
    engine.embed_chunks(chunks)
    synchronize(cuda)
    return sum(c.n_tokens for c in chunks) / (time.perf_counter() - start), warm_up


def probe_budgets(engine: Embedder, start: int, limit: int) -> list[tuple[int, float | None]]:
    """Peak GiB of one full batch at each doubling of the token budget; None where it ran out."""
    results: list[tuple[int, float | None]] = []
    budget = start
    while budget <= limit:
        engine.engine.batch_tokens = budget
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        try:
            engine.embed_chunks(random_chunks(engine, budget // 1000))
            torch.cuda.synchronize()
        except torch.OutOfMemoryError:
            results.append((budget, None))
            break
        results.append((budget, torch.cuda.max_memory_allocated() / 2**30))
        budget *= 2
    torch.cuda.empty_cache()
    return results


def research_loop_rate(checkpoint: Path, chunks: list, layer: int, device: str) -> float:
    """Tokens/s of the original loop: fp32 (no TF32), one chunk at a time, every hidden state."""
    hf = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModel.from_pretrained(checkpoint, dtype=torch.float32, add_pooling_layer=False).eval()
    model = model.to(device)
    torch.backends.cuda.matmul.allow_tf32 = False
    sequences = ["".join(hf.convert_ids_to_tokens(c.input_ids[1:].tolist())) for c in chunks]
    embed_reference(model, hf, sequences[:2], layer)
    synchronize(device == "cuda")
    start = time.perf_counter()
    embed_reference(model, hf, sequences, layer)
    synchronize(device == "cuda")
    return sum(c.n_tokens for c in chunks) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="nt-tiny")
    parser.add_argument("--checkpoint", type=Path, default=None, help="folder to keep (or reuse) the checkpoint in")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--chunks", type=int, default=None, help="chunks for the engine")
    parser.add_argument("--reference-chunks", type=int, default=None, help="chunks for the research loop (0: skip)")
    parser.add_argument("--layer", type=int, default=None)
    parser.add_argument("--batch-tokens", type=int, default=None)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--probe-budgets", action="store_true", help="GPU: peak memory per budget until it runs out")
    args = parser.parse_args()
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = "cuda" if cuda else "cpu"
    n_engine = args.chunks or (1024 if cuda else 64)
    n_reference = (32 if cuda else 16) if args.reference_chunks is None else args.reference_chunks

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = random_checkpoint(args.shape, args.checkpoint or Path(tmp), device)
        started = time.perf_counter()
        engine = Embedder(
            ModelOptions(str(checkpoint), args.layer), RunOptions(device, "auto", args.batch_tokens, args.compile)
        )
        loaded = time.perf_counter() - started
        chunks = random_chunks(engine, n_engine)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        engine_rate, warm_up = time_engine(engine, chunks, cuda)
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
        layer, dtype, budget, compiled = engine.layer, engine.encoder.dtype, engine.batch_tokens, engine.compiled
        budgets = probe_budgets(engine, budget, 8 * 2**20) if cuda and args.probe_budgets else []
        del engine
        if cuda:
            torch.cuda.empty_cache()
        reference_rate = research_loop_rate(checkpoint, chunks[:n_reference], layer, device) if n_reference else None

    print(f"machine: {describe_machine()}")
    print(f"shape: {args.shape}, layer {layer}, 1000-token chunks, engine dtype {dtype}, compile={compiled}")
    print(f"model load {loaded:.1f} s; warm-up call (kernels{', compile' if compiled else ''}) {warm_up:.1f} s")
    if reference_rate:
        print(f"research loop (fp32, 1 chunk, all hidden states): {reference_rate:12,.0f} tokens/s")
    print(
        f"engine ({n_engine} chunks)                        : {engine_rate:12,.0f} tokens/s "
        f"({engine_rate * BP_PER_TOKEN / 1e6:.2f} Mbp/s)"
    )
    if reference_rate:
        print(f"ratio engine / research loop                    : {engine_rate / reference_rate:12.1f}x")
    if peak is not None:
        print(f"peak GPU memory at --batch-tokens {budget:,}: {peak:.1f} GiB")
    for tokens, gib in budgets:
        print(f"  one batch of {tokens:>9,} tokens: " + (f"peak {gib:.1f} GiB" if gib else "out of memory"))


if __name__ == "__main__":
    main()
