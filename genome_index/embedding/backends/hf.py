"""Hugging Face checkpoints as a backend: any model name that is no other backend's.

`TransformerEncoder` runs a checkpoint's encoder (loaded by `checkpoints`, right or not at
all) and pools each wanted hidden state as it is computed. What a family does beyond the
generic path is an `Adapter`, found by the loaded model's class (`esm`: stock ESM cut after
the chosen layer); everything else is found out by probing the model once.
"""

from __future__ import annotations

import inspect
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch

from genome_index.embedding.backends import checkpoints
from genome_index.embedding.devices import pick_device, pick_dtype
from genome_index.embedding.encoder import POOLINGS, Encoder, ModelSpec, resolve_layer
from genome_index.embedding.tokenize import Tokenizer
from genome_index.errors import GenomeIndexError
from genome_index.settings import ModelOptions, RunOptions


class Adapter(Protocol):
    """What one family of models does beyond the generic path."""

    def applies(self, model: torch.nn.Module) -> bool: ...

    def prepare(self, model: torch.nn.Module, layer: int) -> None:
        """Make the loaded model compute up to `layer` only (and faster), before it moves to its device."""
        ...

    def layer_module(self, model: torch.nn.Module, layer: int) -> torch.nn.Module:
        """The module whose output is hidden state `layer` of the prepared model."""
        ...

    def causal(self, model: torch.nn.Module) -> bool: ...


ADAPTERS: list[Adapter] = []
TRITON_ATTENTION = "flash_attn_qkvpacked_func"  # DNABERT-2's module-level Triton kernel (None: PyTorch attention)
logger = logging.getLogger(__name__)


def register_adapter(adapter: Adapter) -> Adapter:
    ADAPTERS.append(adapter)
    return adapter


def adapter_for(model: torch.nn.Module) -> Adapter | None:
    return next((adapter for adapter in ADAPTERS if adapter.applies(model)), None)


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
        self.spec = checkpoints.describe(name, trust, package)
        self.layer = resolve_layer(options.layer, self.spec.num_layers)
        self.device = pick_device(run.device)
        self.dtype = pick_dtype(run.dtype, self.device)
        config = checkpoints.load_config(name, trust, package)
        self.own_code = bool(getattr(config, "auto_map", None))  # the checkpoint's own classes run
        self.tokenizer: Tokenizer = checkpoints.load_tokenizer(name, config, trust)
        self.adapter: Adapter | None = None

        def prepare(model: torch.nn.Module) -> None:  # the family's own steps, before the model moves
            self.adapter = adapter_for(model)
            if self.adapter is not None:
                self.adapter.prepare(model, self.layer)

        self.model = checkpoints.load_model(name, self.device, self.dtype, trust, package, prepare)
        self._cut = self.adapter is not None
        parameters = inspect.signature(self.model.forward).parameters
        self.takes_mask = "attention_mask" in parameters
        self.takes_states = "output_hidden_states" in parameters or any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
        )
        self.states_from: str = "model"
        self.blocks: torch.nn.ModuleList | torch.nn.Sequential | None = None
        self.compiled = False
        if self.device.type != "cuda":
            self._pytorch_attention("its Triton kernels need a CUDA GPU")
        try:
            self.causal, self.exact_lengths = self._probe(name)
        except GenomeIndexError as exc:  # on a GPU the Triton path may still fail: then once without it
            if not self._pytorch_attention(f"its Triton attention failed on the first input: {exc}"):
                raise
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
        """`reduce(hidden state)` for each of `layers`, each taken as soon as it is computed; a
        state the model hands over unpadded (DNABERT-2: its real tokens only, (tokens, dim)) is
        padded back to (rows, width, dim) first."""
        mask = torch.arange(ids.shape[1], device=ids.device)[None, :] < lengths[:, None]
        return self._states(ids, mask, layers, lambda hidden: reduce(repad(hidden, mask)))

    def _states(
        self, ids: torch.Tensor, mask: torch.Tensor, layers: Sequence[int], reduce: Callable
    ) -> dict[int, torch.Tensor]:
        """`reduce(hidden state)` for each of `layers`: from the model's own list of states, or
        from hooks on its blocks."""
        kwargs: dict[str, Any] = {"input_ids": ids}
        if self.takes_mask:
            kwargs["attention_mask"] = mask.to(torch.long)
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
            if self.adapter is not None:
                module = self.adapter.layer_module(self.model, layer)
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

    def _blocks(self) -> torch.nn.ModuleList | torch.nn.Sequential:
        """The model's list of blocks (one per layer) for hooks, found once: of the module lists
        and sequences (GPN keeps its blocks in an `nn.Sequential`) as long as the model is deep,
        the one with the most weights."""
        if self.blocks is None:
            depth = self.spec.num_layers
            kinds = (torch.nn.ModuleList, torch.nn.Sequential)
            lists = [m for m in self.model.modules() if isinstance(m, kinds) and len(m) == depth]
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
                ids = torch.tensor(rows, dtype=torch.long, device=self.device)  # as the engine
                lengths = torch.tensor([width, width], device=self.device)
                states = self._collect(ids, lengths, [top], lambda h: h)[top].float()
                causal = bool(torch.allclose(states[0, :before], states[1, :before], **self._tolerance()))
                if self.adapter is not None:  # a cut model (to its embeddings, maybe) says what it is
                    causal = self.adapter.causal(self.model)
                padded = torch.tensor([rows[0] + [self.tokenizer.pad_id] * 5], dtype=torch.long, device=self.device)
                alone = self._collect(padded, lengths[:1], [top], lambda h: h)[top].float()[0, :width]
                exact = bool(torch.allclose(alone, states[0], **self._tolerance()))
        except GenomeIndexError:
            raise
        except Exception as exc:
            stock = type(self.model).__module__.startswith("transformers.")
            whose = "it" if stock else "its own code"
            raise GenomeIndexError(
                f"model {name!r} fails on its first input ({type(exc).__name__}: {str(exc).strip()[:200]}): "
                f"{whose} raised this; try another --dtype or --device, or the versions of torch and transformers "
                "the model's authors name"
            ) from None
        return causal, not exact

    def _pytorch_attention(self, why: str) -> bool:
        """Switch a model's code from its Triton attention to its own PyTorch attention. DNABERT-2
        (MosaicBERT) takes its Triton flash-attention path whenever `triton` imports, which on
        the CPU fails on an assertion; the switch is that code's module-level kernel, and the
        code itself falls back to PyTorch attention when it is None. True if one was switched."""
        modules = {sys.modules.get(type(m).__module__) for m in self.model.modules()}
        switched = [m for m in modules if getattr(m, TRITON_ATTENTION, None) is not None]
        for module in switched:
            setattr(module, TRITON_ATTENTION, None)
        if switched:
            logger.info("model %r runs its PyTorch attention, not Triton's: %s", self.name, why)
        return bool(switched)

    def _returns_states(self, row: list[int]) -> bool:
        """True when the model hands back every hidden state (else hooks on its blocks give them)."""
        if not self.takes_states:
            return False
        ids = torch.tensor([row], dtype=torch.long, device=self.device)
        kwargs: dict[str, Any] = {"input_ids": ids, "output_hidden_states": True}
        if self.takes_mask:
            kwargs["attention_mask"] = torch.ones_like(kwargs["input_ids"])
        states = getattr(self.model(**kwargs), "hidden_states", None)
        return isinstance(states, tuple | list) and len(states) >= self.spec.num_layers + 1

    def _tolerance(self) -> dict[str, float]:
        return {"rtol": 1e-3, "atol": 1e-4} if self.dtype == torch.float32 else {"rtol": 3e-2, "atol": 3e-2}


def repad(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(rows, width, dim) from a state given as its real tokens only, (tokens, dim) in row-major
    order (DNABERT-2 drops the padding between its blocks); any other state as it is."""
    if hidden.dim() != 2:
        return hidden
    flat = mask.reshape(-1)
    if hidden.shape[0] != int(flat.sum()):
        raise GenomeIndexError(
            f"a hidden state of shape {tuple(hidden.shape)} is neither (rows, width, dim) nor one vector per real token"
        )
    full = hidden.new_zeros(flat.shape[0], hidden.shape[1])
    full[flat] = hidden
    return full.reshape(*mask.shape, hidden.shape[1])


def _first_tensor(output: Any) -> torch.Tensor:
    """The sequence output of whatever a model or block returns (a ModelOutput, a tuple, a tensor)."""
    if isinstance(output, torch.Tensor):
        return output
    hidden = getattr(output, "last_hidden_state", None)
    if isinstance(hidden, torch.Tensor):
        return hidden
    return output[0]


class HfBackend:
    """Any Hugging Face checkpoint: a local folder, a Hub id, or the bundled nt-tiny."""

    name = "hf"
    named_by_identity = False  # compared by its weights' hash: a copied folder is the same model

    @staticmethod
    def accepts(model: str) -> bool:
        return True

    @staticmethod
    def describe(options: ModelOptions) -> ModelSpec:
        return checkpoints.describe(options.model or "", bool(options.trust_remote_code), options.model_package)

    @staticmethod
    def load_encoder(options: ModelOptions, run: RunOptions) -> Encoder:
        return TransformerEncoder(options, run)

    @staticmethod
    def load_tokenizer(options: ModelOptions) -> Tokenizer:
        name, trust = options.model or "", bool(options.trust_remote_code)
        return checkpoints.load_tokenizer(name, checkpoints.load_config(name, trust, options.model_package), trust)


BACKEND = HfBackend()  # the catch-all: `backends.backend_for` asks it last
