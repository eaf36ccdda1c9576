"""Encoders: a batch of padded token ids in, one pooled vector per row and layer out.

Two kinds share one interface (`Encoder`), so the batching engine never asks which it has:
`TransformerEncoder` (a Hugging Face model cut at a layer, mean-pooled on its device) and
`kmer.KmerEncoder` (canonical K-mer profiles, no weights). `load_encoder` picks one by name.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch

from genome_index import config as permissions
from genome_index.embedding.backends import checkpoints as models
from genome_index.embedding.backends import kmer
from genome_index.embedding.backends.checkpoints import ModelSpec
from genome_index.embedding.devices import pick_device, pick_dtype
from genome_index.embedding.tokenize import Tokenizer
from genome_index.errors import GenomeIndexError
from genome_index.settings import ModelOptions, RunOptions, kmer_size


class Encoder(Protocol):
    """What the batching engine needs from a model."""

    spec: ModelSpec
    layer: int  # the deepest hidden state it computes
    tokenizer: Tokenizer
    device: torch.device
    dtype: torch.dtype
    compiled: bool
    pooling: str
    exact_lengths: bool  # padding changes vectors: batch windows of one length only
    own_code: bool  # the checkpoint's own Python code runs (it needed --trust-remote-code)
    default_chunk_tokens: int  # 0: the model states no limit
    default_batch_tokens: int

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor, layers: Sequence[int]) -> dict[int, torch.Tensor]:
        """Pooled float32 vectors of each row (its first `lengths` ids) at each of `layers`."""
        ...


POOLINGS = ("mean", "cls", "last")


def pool(hidden: torch.Tensor, lengths: torch.Tensor, how: str) -> torch.Tensor:
    """One float32 vector per row of `hidden` (batch, positions, dim), over its first `lengths`
    positions: their mean, the first (<cls>), or the last (a causal model's summary)."""
    if how == "cls":
        return hidden[:, 0].float()
    if how == "last":
        return hidden[torch.arange(len(lengths), device=hidden.device), lengths - 1].float()
    positions = torch.arange(hidden.shape[1], device=hidden.device)
    weights = (positions[None, :] < lengths[:, None]).to(hidden.dtype).unsqueeze(1)
    return torch.bmm(weights, hidden).squeeze(1).float() / lengths[:, None].float()


class TransformerEncoder:
    """A Hugging Face model on its device, pooling each wanted hidden state as it is computed.

    What a family does differently is found out once, by probing the loaded model with a short
    input, not by its name: whether it takes an attention mask, whether it returns hidden states
    (else forward hooks on its list of blocks give them), whether it is causal (then pooling
    defaults to the last token), and whether padding a row changes its vectors (models without
    an attention mask that see both ways: then batches hold windows of one length only).
    Layer L is the embedding output for 0, the output of block L below the last, and the
    model's own output (after any final norm) for the last.
    """

    def __init__(self, options: ModelOptions, run: RunOptions) -> None:
        name = options.model or ""
        trust = bool(options.trust_remote_code)
        package = options.model_package
        self.name = name
        self.spec = models.describe(name, trust, package)
        self.layer = models.resolve_layer(options.layer, self.spec.num_layers)
        self.device = pick_device(run.device)
        self.dtype = pick_dtype(run.dtype, self.device)
        config = models.load_config(name, trust, package)
        self.own_code = bool(getattr(config, "auto_map", None))  # the checkpoint's own classes run
        self.tokenizer: Tokenizer = models.load_tokenizer(name, config, trust)
        self.model = models.load_model(name, self.layer, self.device, self.dtype, trust, package)
        self._cut = models.is_truncatable(self.model)
        parameters = inspect.signature(self.model.forward).parameters
        self.takes_mask = "attention_mask" in parameters
        self.takes_states = "output_hidden_states" in parameters or any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
        )
        self.states_from: str = "model"
        self.blocks: torch.nn.ModuleList | None = None
        self.compiled = False
        self.causal, self.exact_lengths = self._probe(name)
        self.pooling = options.pooling or ("last" if self.causal else "mean")
        if self.pooling not in POOLINGS:
            raise GenomeIndexError(f"unknown pooling {self.pooling!r}: use {', '.join(POOLINGS)}")
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
        """Pooled float32 vectors of each row at each of `layers`."""
        return self._collect(ids, lengths, layers, lambda hidden: pool(hidden, lengths, self.pooling))

    def _collect(
        self, ids: torch.Tensor, lengths: torch.Tensor, layers: Sequence[int], reduce: Callable
    ) -> dict[int, torch.Tensor]:
        """`reduce(hidden state)` for each of `layers`, each taken as soon as it is computed."""
        positions = torch.arange(ids.shape[1], device=ids.device)
        kwargs: dict[str, Any] = {"input_ids": ids}
        if self.takes_mask:
            kwargs["attention_mask"] = (positions[None, :] < lengths[:, None]).to(torch.long)
        top = self.layer if self._cut else self.spec.num_layers
        inner = sorted(set(layers) - {top})
        if inner and self.states_from == "model":
            kwargs["output_hidden_states"] = True
            output = self.model(**kwargs)
            states = output.hidden_states
            out = {layer: reduce(states[layer]) for layer in inner}
            out[top] = reduce(_first_tensor(output))
            return {layer: out[layer] for layer in layers}
        taken: dict[int, torch.Tensor] = {}
        hooks = []
        for layer in inner:
            if self._cut:
                module = models.hidden_state_module(self.model, layer)
                hook = module.register_forward_hook(lambda _m, _i, o, layer=layer: taken.__setitem__(layer, reduce(o)))
            elif layer == 0:
                hook = self._blocks()[0].register_forward_pre_hook(
                    lambda _m, args, layer=layer: taken.__setitem__(layer, reduce(args[0]))
                )
            else:
                hook = self._blocks()[layer - 1].register_forward_hook(
                    lambda _m, _i, o, layer=layer: taken.__setitem__(layer, reduce(_first_tensor(o)))
                )
            hooks.append(hook)
        try:
            taken[top] = reduce(_first_tensor(self.model(**kwargs)))
        finally:
            for hook in hooks:
                hook.remove()
        return {layer: taken[layer] for layer in layers}

    def _blocks(self) -> torch.nn.ModuleList:
        """The model's list of blocks (one per layer) for hooks, found once: of the module
        lists as long as the model is deep, the one with the most weights."""
        if self.blocks is None:
            depth = self.spec.num_layers
            lists = [m for m in self.model.modules() if isinstance(m, torch.nn.ModuleList) and len(m) == depth]
            if not lists:
                raise GenomeIndexError(
                    f"model {self.name!r} returns no hidden states and has no list of {depth} blocks to take "
                    "them from: only its last layer can be embedded (--layer -1)"
                )
            self.blocks = max(lists, key=lambda m: sum(p.numel() for p in m.parameters()))
        return self.blocks

    def _probe(self, name: str) -> tuple[bool, bool]:
        """Run the model on a short input to learn how it behaves: (causal, exact_lengths).
        Any failure here is the model's first forward pass failing: one line, naming it."""
        body = list(self.tokenizer.tokenize(b"ACGTTGCAACGGTACCTTAGGCATCG").ids)
        prefix, suffix = list(self.tokenizer.prefix), list(self.tokenizer.suffix)
        changed = [*body[:-1], body[0] if body[-1] != body[0] else body[1]]
        rows = [prefix + body + suffix, prefix + changed + suffix]
        width, before = len(rows[0]), len(prefix) + len(body) - 1  # positions before the changed token
        top = self.layer if self._cut else self.spec.num_layers
        try:
            with torch.inference_mode():
                if not self._cut:
                    self.states_from = "model" if self._returns_states(rows[0]) else "hooks"
                ids = torch.tensor(rows, device=self.device)
                lengths = torch.tensor([width, width], device=self.device)
                states = self._collect(ids, lengths, [top], lambda h: h)[top].float()
                causal = bool(torch.allclose(states[0, :before], states[1, :before], **self._tolerance()))
                if self._cut:  # stock ESM, maybe cut to its embeddings, which mix no positions: an encoder
                    causal = bool(getattr(self.model.config, "is_decoder", False))
                padded = torch.tensor([rows[0] + [self.tokenizer.pad_id] * 5], device=self.device)
                alone = self._collect(padded, lengths[:1], [top], lambda h: h)[top].float()[0, :width]
                exact = bool(torch.allclose(alone, states[0], **self._tolerance()))
        except GenomeIndexError:
            raise
        except Exception as exc:
            raise GenomeIndexError(
                f"model {name!r} fails on its first input ({type(exc).__name__}: {str(exc).strip()[:200]}); "
                "it may need --trust-remote-code, another --model-package, or a newer transformers"
            ) from None
        return causal, not exact

    def _returns_states(self, row: list[int]) -> bool:
        """True when the model hands back every hidden state (else hooks on its blocks give them)."""
        if not self.takes_states:
            return False
        kwargs: dict[str, Any] = {"input_ids": torch.tensor([row], device=self.device), "output_hidden_states": True}
        if self.takes_mask:
            kwargs["attention_mask"] = torch.ones_like(kwargs["input_ids"])
        states = getattr(self.model(**kwargs), "hidden_states", None)
        return isinstance(states, tuple | list) and len(states) >= self.spec.num_layers + 1

    def _tolerance(self) -> dict[str, float]:
        return {"rtol": 1e-3, "atol": 1e-4} if self.dtype == torch.float32 else {"rtol": 3e-2, "atol": 3e-2}


def _first_tensor(output: Any) -> torch.Tensor:
    """The sequence output of whatever a model or block returns (a ModelOutput, a tuple, a tensor)."""
    if isinstance(output, torch.Tensor):
        return output
    hidden = getattr(output, "last_hidden_state", None)
    if isinstance(hidden, torch.Tensor):
        return hidden
    return output[0]


def load_encoder(options: ModelOptions, run: RunOptions) -> Encoder:
    """The encoder for a model name: `kmer:K` or a transformer checkpoint (its code and package
    as the user grants them, `permissions.granted`)."""
    if kmer_size(options.model or "") is not None:
        return kmer.KmerEncoder(options, run)
    return TransformerEncoder(permissions.granted(options), run)


def load_tokenizer(options: ModelOptions) -> Tokenizer:
    """A model's tokenizer without its weights: what a worker that only cuts windows needs."""
    name = options.model or ""
    if kmer_size(name) is not None:
        return kmer.BaseTokenizer()
    options = permissions.granted(options)
    trust = bool(options.trust_remote_code)
    return models.load_tokenizer(name, models.load_config(name, trust, options.model_package), trust)


def describe(options: ModelOptions) -> ModelSpec:
    """A model's identity and shape without loading its weights."""
    name = options.model or ""
    if kmer_size(name) is not None:
        return kmer.spec(name)
    options = permissions.granted(options)
    return models.describe(name, bool(options.trust_remote_code), options.model_package)
