"""ESM (Nucleotide Transformer v1) beyond the generic path: cut after the chosen layer, GELU fused.

Stock `EsmModel` returns every hidden state; cut after layer L, the blocks above cost neither
memory nor time, and hidden state L is its own output. Registered as an adapter of the `hf`
backend, found by the loaded model's class.
"""

from __future__ import annotations

import torch

from genome_index.embedding.backends.hf import register_adapter


class EsmCut:
    """The adapter for stock `EsmModel`."""

    @staticmethod
    def applies(model: torch.nn.Module) -> bool:
        from transformers import EsmModel

        return type(model) is EsmModel

    @staticmethod
    def prepare(model: torch.nn.Module, layer: int) -> None:
        truncate(model, layer)
        fuse_gelu(model)

    @staticmethod
    def layer_module(model: torch.nn.Module, layer: int) -> torch.nn.Module:
        """The module whose output is hidden_states[layer] of the cut model (0: the embeddings)."""
        return model.embeddings if layer == 0 else model.encoder.layer[layer - 1]

    @staticmethod
    def causal(model: torch.nn.Module) -> bool:
        """What the config says: a cut model down to its embeddings mixes no positions to probe."""
        return bool(getattr(model.config, "is_decoder", False))


def truncate(model: torch.nn.Module, layer: int) -> None:
    """Drop the blocks above `layer` (stock ESM). Below the last layer the final norm goes too,
    since hidden_states[L] for L < num_layers is the raw block output."""
    encoder = model.encoder
    n_layers = len(encoder.layer)
    if layer < n_layers:
        encoder.layer = encoder.layer[:layer]
        encoder.emb_layer_norm_after = None
    if hasattr(model, "contact_head"):
        model.contact_head = None


class FusedGelu(torch.nn.Module):
    """ESM's feed-forward input layer with its exact (erf) GELU as one kernel.

    transformers' ESM spells GELU out as five elementwise operations, each a pass over the
    4x-wide activations: on an H100 those passes cost about a sixth of NT-2.5B's forward
    pass. `F.gelu` computes the same function (and in bf16 rounds once instead of five times).
    """

    def __init__(self, dense: torch.nn.Linear) -> None:
        super().__init__()
        self.dense = dense

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.gelu(self.dense(hidden_states))


def fuse_gelu(model: torch.nn.Module) -> None:
    """Swap stock ESM blocks' feed-forward input for `FusedGelu` (same weights, same names)."""
    from transformers.models.esm.modeling_esm import EsmIntermediate

    for block in getattr(getattr(model, "encoder", None), "layer", []):
        if type(getattr(block, "intermediate", None)) is EsmIntermediate:
            block.intermediate = FusedGelu(block.intermediate.dense)


register_adapter(EsmCut())
