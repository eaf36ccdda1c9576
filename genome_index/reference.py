"""The slow, obvious embedding the engine must reproduce (the original research-code loop).

HF tokenizer, one chunk at a time, the full model with all hidden states, masked mean of
`hidden_states[layer]`. Used by the parity tests and as the baseline in benchmarks.
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
