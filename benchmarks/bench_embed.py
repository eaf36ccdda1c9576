"""Embedding engine vs the research-code loop, same chunks, same process.

    python benchmarks/bench_embed.py --shape nt-tiny          # CPU is fine
    python benchmarks/bench_embed.py --shape nt-2.5b          # needs a GPU (random weights)

The research loop is how the original code embedded: fp32, one chunk at a time, the whole
model with all hidden states returned. The engine is genome-index's: length-sorted batches,
bf16 on CUDA, only the blocks up to the layer, pooled on the device. Chunks are full
1000-token windows of random sequence. Prints tokens/s of both and the ratio.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer, EsmConfig, EsmForMaskedLM

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine

from genome_index.embed import Embedder
from genome_index.models import BUNDLED
from genome_index.reference import embed_reference
from genome_index.tokenize import chunk_tokens

SHAPES = {
    "nt-tiny": None,
    "nt-2.5b": {
        "hidden_size": 2560,
        "num_hidden_layers": 32,
        "num_attention_heads": 20,
        "intermediate_size": 10240,
    },
    "nt-500m": {
        "hidden_size": 1280,
        "num_hidden_layers": 24,
        "num_attention_heads": 20,
        "intermediate_size": 5120,
    },
}


def make_checkpoint(shape: str, folder: Path, device: str) -> Path:
    """nt-tiny itself, or a random-weight checkpoint of a real NT shape with nt-tiny's tokenizer."""
    if SHAPES[shape] is None:
        return BUNDLED["nt-tiny"]
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(BUNDLED["nt-tiny"] / name, folder / name)
    config = EsmConfig.from_pretrained(BUNDLED["nt-tiny"], **SHAPES[shape])
    with torch.device(device):
        model = EsmForMaskedLM(config).to(torch.bfloat16)
    model.save_pretrained(folder)
    del model
    return folder


def random_chunks(embedder: Embedder, count: int) -> list:
    rng = np.random.default_rng(0)
    sequence = rng.choice(np.frombuffer(b"ACGT", np.uint8), 6000 * count).tobytes()
    tokens = embedder.tokenizer.tokenize(sequence)
    return chunk_tokens(tokens, embedder.tokenizer, 0, 1000)[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="nt-tiny")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--chunks", type=int, default=None, help="chunks for the engine")
    parser.add_argument("--reference-chunks", type=int, default=None, help="chunks for the research loop")
    parser.add_argument("--layer", type=int, default=None)
    parser.add_argument("--batch-tokens", type=int, default=None)
    args = parser.parse_args()
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = "cuda" if cuda else "cpu"
    n_engine = args.chunks or (1024 if cuda else 64)
    n_reference = args.reference_chunks or (32 if cuda else 16)

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = make_checkpoint(args.shape, Path(tmp), device)
        engine = Embedder(str(checkpoint), args.layer, device, "auto", args.batch_tokens)
        chunks = random_chunks(engine, n_engine)
        engine.embed_chunks(chunks[: max(4, n_engine // 16)])  # warm-up: kernels, allocator
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        engine.embed_chunks(chunks)
        if cuda:
            torch.cuda.synchronize()
        t_engine = time.perf_counter() - start
        tokens = sum(c.n_tokens for c in chunks)
        engine_rate = tokens / t_engine
        layer, dtype = engine.layer, engine.dtype
        del engine
        if cuda:
            torch.cuda.empty_cache()

        hf = AutoTokenizer.from_pretrained(checkpoint)
        model = AutoModel.from_pretrained(checkpoint, dtype=torch.float32, add_pooling_layer=False).eval()
        model = model.to(device)
        torch.backends.cuda.matmul.allow_tf32 = False
        sequences = ["".join(hf.convert_ids_to_tokens(c.input_ids[1:].tolist())) for c in chunks[:n_reference]]
        embed_reference(model, hf, sequences[:2], layer)
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        embed_reference(model, hf, sequences, layer)
        if cuda:
            torch.cuda.synchronize()
        reference_rate = sum(c.n_tokens for c in chunks[:n_reference]) / (time.perf_counter() - start)

    print(f"machine: {describe_machine()}")
    print(f"shape: {args.shape}, layer {layer}, 1000-token chunks, engine dtype {dtype}")
    print(f"research loop (fp32, 1 chunk, all hidden states): {reference_rate:12,.0f} tokens/s")
    print(
        f"engine ({n_engine} chunks)                        : {engine_rate:12,.0f} tokens/s "
        f"({engine_rate * 5.994 / 1e6:.2f} Mbp/s)"
    )
    print(f"ratio engine / research loop                    : {engine_rate / reference_rate:12.1f}x")


if __name__ == "__main__":
    main()
