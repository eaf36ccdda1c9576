"""Encoders: a batch of padded token ids in, one pooled vector per row and layer out.

Two kinds share one interface (`Encoder`), so the batching engine never asks which it has:
`TransformerEncoder` (a Hugging Face model cut at a layer, mean-pooled on its device) and
`kmer.KmerEncoder` (canonical K-mer profiles, no weights). `load_encoder` picks one by name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch

from genome_index import kmer, models
from genome_index.errors import GenomeIndexError
from genome_index.models import ModelSpec
from genome_index.settings import DEVICES_HELP, DTYPES, ModelOptions, RunOptions
from genome_index.tokenize import Tokenizer

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class Encoder(Protocol):
    """What the batching engine needs from a model."""

    spec: ModelSpec
    layer: int  # the deepest hidden state it computes
    tokenizer: Tokenizer
    device: torch.device
    dtype: torch.dtype
    compiled: bool
    default_chunk_tokens: int
    default_batch_tokens: int

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor, layers: Sequence[int]) -> dict[int, torch.Tensor]:
        """Pooled float32 vectors of each row (its first `lengths` ids) at each of `layers`."""
        ...


def pick_device(device: str = "auto") -> torch.device:
    """`auto` -> the first CUDA device when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError:
        raise GenomeIndexError(f"unknown device {device!r}: use {DEVICES_HELP}") from None
    if chosen.type not in ("cpu", "cuda"):
        raise GenomeIndexError(f"unsupported device {device!r}: use {DEVICES_HELP}")
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise GenomeIndexError(f"device {device!r} asked for, but no CUDA GPU is available")
    return chosen


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """`auto` -> bfloat16 on CUDA (float16 where bf16 is missing), float32 on the CPU."""
    if dtype == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if dtype not in TORCH_DTYPES:
        raise GenomeIndexError(f"unknown dtype {dtype!r}: use {', '.join(DTYPES)}")
    return TORCH_DTYPES[dtype]


class TransformerEncoder:
    """A Hugging Face model cut after the chosen layer, on its device, pooling as it goes."""

    def __init__(self, options: ModelOptions, run: RunOptions) -> None:
        name = options.model or ""
        trust = bool(options.trust_remote_code)
        self.spec = models.describe(name, trust)
        self.layer = models.resolve_layer(options.layer, self.spec.num_layers)
        self.device = pick_device(run.device)
        self.dtype = pick_dtype(run.dtype, self.device)
        config = models.load_config(name, trust)
        self.tokenizer: Tokenizer = models.load_tokenizer(name, config, trust)
        self.model = models.load_model(name, self.layer, self.device, self.dtype, trust)
        self._cut = models.is_truncatable(self.model)
        self.compiled = False
        self.default_chunk_tokens = self.tokenizer.max_tokens
        self.default_batch_tokens = 65536 if self.device.type == "cuda" else 8192
        if run.compile and self.device.type == "cuda":  # on the CPU it costs more than it saves
            self.compile()

    def compile(self, backend: str | Callable = "inductor") -> None:
        """`torch.compile` with dynamic shapes: batch widths and row counts vary with every
        group, and one graph for all of them costs one compilation, not one per shape."""
        self.model = torch.compile(self.model, dynamic=True, backend=backend)
        self.compiled = True

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor, layers: Sequence[int]) -> dict[int, torch.Tensor]:
        """Mean of each wanted hidden state over the attention mask (<cls> in, padding out),
        each pooled as soon as it is computed (hooks): no stack of hidden states is kept."""
        positions = torch.arange(ids.shape[1], device=ids.device)
        mask = (positions[None, :] < lengths[:, None]).to(torch.long)

        def pool(hidden: torch.Tensor) -> torch.Tensor:
            weights = mask.to(hidden.dtype).unsqueeze(1)
            return torch.bmm(weights, hidden).squeeze(1).float() / lengths[:, None].float()

        if not self._cut:
            hidden_states = self.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
            return {layer: pool(hidden_states[layer]) for layer in layers}
        pooled: dict[int, torch.Tensor] = {}
        hooks = [
            models.hidden_state_module(self.model, layer).register_forward_hook(
                lambda _m, _i, out, layer=layer: pooled.__setitem__(layer, pool(out))
            )
            for layer in set(layers) - {self.layer}  # the top layer is the model's own output
        ]
        try:
            pooled[self.layer] = pool(self.model(input_ids=ids, attention_mask=mask).last_hidden_state)
        finally:
            for hook in hooks:
                hook.remove()
        return {layer: pooled[layer] for layer in layers}


def load_encoder(options: ModelOptions, run: RunOptions) -> Encoder:
    """The encoder for a model name: `kmer:K` or a transformer checkpoint."""
    if kmer.kmer_size(options.model or "") is not None:
        return kmer.KmerEncoder(options, run)
    return TransformerEncoder(options, run)


def describe(name: str, trust_remote_code: bool = False) -> ModelSpec:
    """A model's identity and shape without loading its weights."""
    if kmer.kmer_size(name) is not None:
        return kmer.spec(name)
    return models.describe(name, trust_remote_code)
