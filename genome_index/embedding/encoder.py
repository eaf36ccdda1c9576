"""The encoder interface: a batch of padded token ids in, one pooled vector per row and layer out.

Every backend's encoder (`backends`: a Hugging Face model cut at a layer, `kmer:K` profiles)
has this shape, so the batching engine never asks which it has; a `ModelSpec` says where a
model comes from and its shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from genome_index.embedding.tokenize import Tokenizer
from genome_index.errors import GenomeIndexError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class ModelSpec:
    """Where a model comes from, what identifies its exact weights, and its shape."""

    name: str
    source: str
    revision: str
    num_layers: int
    dim: int
    max_tokens: int  # 0: the checkpoint states no limit
    model_class: str = ""


class Encoder(Protocol):
    """What the batching engine needs from a model."""

    spec: ModelSpec
    layer: int  # the deepest hidden state it computes
    tokenizer: Tokenizer
    device: torch.device | None  # None: computes on the host in numpy (ids, lengths, vectors as arrays)
    dtype: torch.dtype | None
    compiled: bool
    pooling: str
    exact_lengths: bool  # padding changes vectors: batch windows of one length only
    own_code: bool  # the checkpoint's own Python code runs (it needed --trust-remote-code)
    default_chunk_tokens: int  # 0: the model states no limit
    default_batch_tokens: int

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor, layers: Sequence[int]) -> dict[int, torch.Tensor]:
        """Pooled float32 vectors of each row (its first `lengths` ids) at each of `layers`: torch
        tensors on `device`, or numpy arrays where `device` is None."""
        ...


POOLINGS = ("mean", "cls", "last")


def resolve_layer(layer: int | None, n_layers: int) -> int:
    """Hidden-state index: None = last, negative counts from the end, 0 = embedding output."""
    if layer is None:
        return n_layers
    resolved = layer + n_layers + 1 if layer < 0 else layer
    if not 0 <= resolved <= n_layers:
        raise GenomeIndexError(
            f"layer {layer} does not exist: this model has hidden states 0..{n_layers} (or -{n_layers + 1}..-1)"
        )
    return resolved
