"""The slow, obvious embeddings the fast paths must reproduce.

`embed_reference` is the original research-code loop: HF tokenizer, one chunk at a time, the
full model with all hidden states, masked mean of `hidden_states[layer]`. `kmer_profiles`
counts each chunk's K-mers one window at a time. `filled_batches` is the plain batch cut the
engine's plan must beat. Used by the tests and as the baseline in benchmarks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def embed_reference(
    model: Any, hf_tokenizer: Any, sequences: Sequence[str], layer: int, pooling: str = "mean"
) -> np.ndarray:
    """Each sequence on its own: hidden_states[layer] (the model's own output for the last
    layer), pooled as the mean over the attention mask, the first token or the last."""
    device = next(model.parameters()).device
    vectors = []
    with torch.no_grad():
        for sequence in sequences:
            encoded = hf_tokenizer(sequence, return_tensors="pt")
            ids = encoded["input_ids"].to(device)
            mask = encoded["attention_mask"].to(device)
            output = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
            last = len(output.hidden_states) - 1
            hidden = output.last_hidden_state if layer == last else output.hidden_states[layer]
            if pooling == "cls":
                vector = hidden[0, 0]
            elif pooling == "last":
                vector = hidden[0, -1]
            else:
                weights = mask.unsqueeze(-1).to(hidden.dtype)
                vector = ((hidden * weights).sum(1) / weights.sum(1))[0]
            vectors.append(vector.float().cpu().numpy())
    return np.stack(vectors)


def kmer_profiles(chunks: Sequence[Any], k: int) -> np.ndarray:
    """Canonical K-mer frequencies of each chunk on its own, K-mer by K-mer."""
    from genome_index.embedding.backends.kmer import canonical_columns

    columns, dim = canonical_columns(k)
    out = np.zeros((len(chunks), dim), dtype=np.float32)
    for row, chunk in enumerate(chunks):
        counts = np.zeros(dim)
        codes = chunk.input_ids.tolist()
        for start in range(len(codes) - k + 1):
            window = codes[start : start + k]
            if max(window) < 4:
                counts[columns[int("".join(map(str, window)), 4)]] += 1
        if counts.sum():
            out[row] = counts / counts.sum()
    return out


def filled_batches(widths: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """Windows sorted widest first cut into batches [start, stop), each filled to `budget`
    padded tokens (one row at least)."""
    cuts, start = [], 0
    while start < len(widths):
        stop = min(len(widths), start + max(1, budget // int(widths[start])))
        cuts.append((start, stop))
        start = stop
    return cuts
