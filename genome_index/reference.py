"""The slow, obvious embeddings the fast paths must reproduce.

`embed_reference` is the original research-code loop: HF tokenizer, one chunk at a time, the
full model with all hidden states, masked mean of `hidden_states[layer]`. `kmer_profiles`
counts each chunk's K-mers one window at a time. Used by the parity tests and as the baseline
in benchmarks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def embed_reference(model: Any, hf_tokenizer: Any, sequences: Sequence[str], layer: int) -> np.ndarray:
    """Mean of hidden_states[layer] over the attention mask, for each sequence separately."""
    device = next(model.parameters()).device
    vectors = []
    with torch.no_grad():
        for sequence in sequences:
            encoded = hf_tokenizer(sequence, return_tensors="pt")
            ids = encoded["input_ids"].to(device)
            mask = encoded["attention_mask"].to(device)
            hidden = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[layer]
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            vectors.append(((hidden * weights).sum(1) / weights.sum(1)).float().cpu().numpy()[0])
    return np.stack(vectors)


def kmer_profiles(chunks: Sequence[Any], k: int) -> np.ndarray:
    """Canonical K-mer frequencies of each chunk on its own, K-mer by K-mer."""
    from genome_index.kmer import canonical_columns

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
