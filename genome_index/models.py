"""Resolve a model name (`nt-tiny`, a local checkpoint folder, a Hub id) and load it.

Every model, the bundled one included, goes through the same `from_pretrained` calls. The
loaded model is cut after the chosen layer: the blocks above it are dropped before the weights
reach the device, so they cost neither memory nor time.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from genome_index.errors import GenomeIndexError
from genome_index.tokenize import Tokenizer, make_tokenizer

BUNDLED = {"nt-tiny": Path(__file__).parent / "assets" / "nt-tiny"}
DEFAULT_MODEL = "InstaDeepAI/nucleotide-transformer-2.5b-multi-species"


@dataclass(frozen=True)
class ModelSpec:
    """Where a model comes from and what identifies its exact weights."""

    name: str
    source: str
    revision: str
    num_layers: int
    dim: int
    max_tokens: int


def resolve(name: str) -> str:
    """The path or Hub id that `from_pretrained` should load for a user-given model name."""
    if name in BUNDLED:
        return str(BUNDLED[name])
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path.resolve())
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise GenomeIndexError(
            f"model {name!r}: not a checkpoint folder nor a Hub id (owner/name); "
            "use --model nt-tiny or a local checkpoint folder"
        )
    if not _cached(name) and not _hub_reachable():
        raise GenomeIndexError(
            f"model {name!r} is not cached here and the Hugging Face Hub is unreachable: "
            "use --model nt-tiny or a local checkpoint folder"
        )
    return name


def _cached(hub_id: str) -> bool:
    """True when the Hub model's config is already in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(hub_id, "config.json"), str)


@functools.cache
def _hub_reachable(timeout: float = 3.0) -> bool:
    """One quick TCP connect to the Hub, so an offline machine fails in seconds, not minutes."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or ""
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def _weights_hash(folder: Path) -> str:
    """SHA-256 of a local checkpoint's weight files: identifies exactly which weights built a store."""
    digest = hashlib.sha256()
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    for file in files:
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return "sha256:" + digest.hexdigest()


def _revision(source: str, config: Any) -> str:
    """Weights hash for a local folder; the Hub commit hash when the config came from the Hub."""
    if Path(source).is_dir():
        return _weights_hash(Path(source))
    return getattr(config, "_commit_hash", None) or "unknown"


def _load_error(name: str, exc: Exception) -> GenomeIndexError:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return GenomeIndexError(
        f"cannot load model {name!r} ({reason[:200]}); the Hugging Face Hub may be unreachable: "
        "use --model nt-tiny or a local checkpoint folder"
    )


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Keep transformers' load reports and progress bars off stderr while we load (we report
    ourselves), and give the process its own settings back afterwards."""
    from transformers.utils import logging

    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


def load_config(name: str, trust_remote_code: bool = False) -> Any:
    """The model's transformers config (small download for Hub ids)."""
    from transformers import AutoConfig

    try:
        with quiet_transformers():
            return AutoConfig.from_pretrained(resolve(name), trust_remote_code=trust_remote_code)
    except ValueError as exc:
        if "trust_remote_code" in str(exc):
            raise GenomeIndexError(
                f"model {name!r} runs its own code from the Hub: pass --trust-remote-code if you trust it"
            ) from None
        raise _load_error(name, exc) from None
    except OSError as exc:
        raise _load_error(name, exc) from None


def num_layers(config: Any) -> int:
    """Transformer blocks in the model (hidden states are this plus one)."""
    for attr in ("num_hidden_layers", "n_layer", "num_layers"):
        if isinstance(getattr(config, attr, None), int):
            return int(getattr(config, attr))
    raise GenomeIndexError("cannot tell how many layers the model has")


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


def load_tokenizer(name: str, config: Any, trust_remote_code: bool = False) -> Tokenizer:
    """The model's own HF tokenizer, wrapped in the fast k-mer tokenizer when that is exact."""
    from transformers import AutoTokenizer

    try:
        with quiet_transformers():
            hf = AutoTokenizer.from_pretrained(resolve(name), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise _load_error(name, exc) from None
    positions = getattr(config, "max_position_embeddings", None)
    if positions and getattr(config, "position_embedding_type", None) == "absolute":
        positions -= int(getattr(config, "pad_token_id", 0) or 0) + 1  # ESM positions start at pad+1
    return make_tokenizer(hf, positions)


def load_model(
    name: str,
    layer: int,
    device: torch.device,
    dtype: torch.dtype,
    trust_remote_code: bool = False,
) -> torch.nn.Module:
    """Load the encoder, keep only the blocks needed for hidden state `layer`, move to device."""
    from transformers import AutoModel, EsmModel

    config = load_config(name, trust_remote_code)
    attn = "sdpa" if device.type == "cuda" else None
    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": trust_remote_code}
    if attn:
        kwargs["attn_implementation"] = attn
    try:
        with quiet_transformers():
            if config.model_type == "esm":
                model = EsmModel.from_pretrained(resolve(name), add_pooling_layer=False, **kwargs)
            else:
                model = AutoModel.from_pretrained(resolve(name), **kwargs)
    except (OSError, ValueError) as exc:
        raise _load_error(name, exc) from None
    model.eval()
    truncate(model, layer)
    fuse_gelu(model)
    return model.to(device)


def truncate(model: torch.nn.Module, layer: int) -> None:
    """Drop the blocks above `layer` (ESM). Below the last layer the final norm goes too, since
    hidden_states[L] for L < num_layers is the raw block output."""
    if getattr(model.config, "model_type", None) != "esm":
        return
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


def is_truncatable(model: torch.nn.Module) -> bool:
    """True when `truncate` cut the model, so its last_hidden_state is the wanted layer."""
    return getattr(model.config, "model_type", None) == "esm"


def hidden_state_module(model: torch.nn.Module, layer: int) -> torch.nn.Module:
    """The module whose output is hidden_states[layer] of a cut ESM model (0: the embeddings)."""
    return model.embeddings if layer == 0 else model.encoder.layer[layer - 1]


def describe(name: str, trust_remote_code: bool = False) -> ModelSpec:
    """Identity and shape of a model, read from its config (no weights loaded)."""
    config = load_config(name, trust_remote_code)
    source = resolve(name)
    tokenizer_limit = None
    cfg_path = Path(source) / "tokenizer_config.json"
    if cfg_path.is_file():
        tokenizer_limit = json.loads(cfg_path.read_text()).get("model_max_length")
    return ModelSpec(
        name=name,
        source=source if name not in BUNDLED else name,
        revision=_revision(source, config),
        num_layers=num_layers(config),
        dim=int(config.hidden_size),
        max_tokens=int(tokenizer_limit or getattr(config, "max_position_embeddings", 0)),
    )
