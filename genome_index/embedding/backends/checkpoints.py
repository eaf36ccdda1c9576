"""Hugging Face checkpoints: resolve a name (`nt-tiny`, a local folder, a Hub id) and load it, right or not at all.

Three ways a checkpoint's classes are found, and each is loaded so that no weight is ever
left random without a word:

- a class that ships with transformers (`model_type` known to it): `from_pretrained`, and the
  load report is read: a weight of the encoder that is missing, unused or of another shape
  refuses the checkpoint in one line (heads such as `lm_head` may be unused);
- the checkpoint's own code (`auto_map` in config.json): only with `--trust-remote-code`,
  whatever its `model_type`; built on the CPU the ordinary way (their `__init__` often builds
  buffers that transformers' meta-device initialisation breaks) and then filled with
  `load_state_dict`, read the same strict way;
- classes a package registers (GPN: `--model-package gpn:register_auto_classes`): as custom code.

Encoder-decoder families load their encoder class only (T5EncoderModel); a family's adapter
(`esm`: stock ESM cut after the chosen layer) prepares the loaded model.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import json
import logging
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from genome_index import ASSETS
from genome_index.config import cache_dir
from genome_index.embedding.encoder import ModelSpec
from genome_index.embedding.tokenize import Tokenizer, make_tokenizer
from genome_index.errors import GenomeIndexError

BUNDLED = {"nt-tiny": ASSETS / "nt-tiny"}
logger = logging.getLogger(__name__)
# Modules of a checkpoint that may go unused when only the encoder is loaded, and modules of
# the encoder class that may be missing from a checkpoint because we never run them.
HEADS = ("lm_head", "cls", "classifier", "pooler", "qa_outputs", "score", "contact_head", "predictions", "head",
         "decoder")  # fmt: skip
NEVER_RUN = ("pooler", "contact_head")
# Config attributes that bound the input length, and those that give the width and depth.
LENGTH_LIMITS = ("max_position_embeddings", "n_positions", "max_seq_len", "max_sequence_length", "seq_length")
WIDTHS = ("hidden_size", "d_model", "n_embd", "dim", "embed_dim")
DEPTHS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
SANE_LENGTH = 10_000_000  # tokenizers say 1e30 when they know no limit


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


def _weights_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))


def _weights_hash(folder: Path) -> str:
    """SHA-256 of a local checkpoint's weight files: identifies exactly which weights built a
    store. Hashing 10 GB takes about a minute, so the result is cached (weights-sha256.json in
    `cache_dir()`) under the folder's path with each file's name, size and mtime, and computed
    again only when one of those changed."""
    files = _weights_files(folder)
    stamp = [[file.name, file.stat().st_size, file.stat().st_mtime_ns] for file in files]
    cache = cache_dir() / "weights-sha256.json"
    key = str(folder.resolve())
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    entry = known.get(key) if isinstance(known, dict) else None
    if isinstance(entry, dict) and entry.get("files") == stamp and str(entry.get("sha256", "")).startswith("sha256:"):
        return entry["sha256"]
    digest = hashlib.sha256()
    for file in files:
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    value = "sha256:" + digest.hexdigest()
    known = known if isinstance(known, dict) else {}
    known[key] = {"files": stamp, "sha256": value}
    with contextlib.suppress(OSError):  # a read-only home only costs the next hash
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
        partial.write_text(json.dumps(known, indent=1))
        os.replace(partial, cache)
    return value


def _revision(source: str, config: Any) -> str:
    """Weights hash for a local folder; the Hub commit hash when the config came from the Hub."""
    if Path(source).is_dir():
        return _weights_hash(Path(source))
    return getattr(config, "_commit_hash", None) or "unknown"


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:240]


def _load_error(name: str, exc: Exception) -> GenomeIndexError:
    return GenomeIndexError(
        f"cannot load model {name!r} ({_reason(exc)}); the Hugging Face Hub may be unreachable: "
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


def _no_head_pruning(*_args: Any, **_kwargs: Any) -> Any:
    """Stands in for transformers 4's `find_pruneable_heads_and_indices`, which transformers 5
    removed: code written for 4.x (NT v2's) imports it for head pruning, which embedding never does."""
    raise NotImplementedError("pruning attention heads is not supported by genome-index")


def _removed_helpers() -> dict[str, Any]:
    """transformers 4 helpers that models' own code imports from `transformers.modeling_utils`."""
    from transformers import pytorch_utils

    return {
        "find_pruneable_heads_and_indices": _no_head_pruning,
        "prune_linear_layer": pytorch_utils.prune_linear_layer,
        "apply_chunking_to_forward": pytorch_utils.apply_chunking_to_forward,
    }


# Packages a model's own code may import that build only where CUDA is.
CUDA_ONLY = ("mamba_ssm", "causal_conv1d", "flash_attn")


@contextlib.contextmanager
def own_code_imports(name: str) -> Iterator[None]:
    """While a checkpoint's own code is imported: the transformers 4 helpers that 5 removed are
    lent to `transformers.modeling_utils` (and taken back after, so only that code holds them),
    and a package the code needs that is not installed is one line naming it."""
    from transformers import modeling_utils

    lent = {key: value for key, value in _removed_helpers().items() if not hasattr(modeling_utils, key)}
    for key, value in lent.items():
        setattr(modeling_utils, key, value)
    try:
        yield
    except ImportError as exc:
        text, marker = str(exc), "not found in your environment:"
        packages = [exc.name.split(".")[0]] if isinstance(exc, ModuleNotFoundError) and exc.name else []
        if marker in text:  # transformers' check of the code's imports, before it runs
            packages = [p.strip() for p in text.split(marker, 1)[1].split(".")[0].split(",") if p.strip()]
        if packages:
            cuda = [p for p in packages if p in CUDA_ONLY]
            note = f" ({', '.join(cuda)} builds only with CUDA: it needs an NVIDIA GPU)" if cuda else ""
            raise GenomeIndexError(
                f"model {name!r}: its own code needs {', '.join(packages)}, not installed here: "
                f"pip install {' '.join(packages)}{note}"
            ) from None
        raise GenomeIndexError(f"model {name!r}: its own code cannot be imported ({_reason(exc)})") from None
    finally:
        for key in lent:
            delattr(modeling_utils, key)


def import_package(package: str | None) -> None:
    """Run what registers a model's classes with transformers: `module:function` calls that
    function (PyPI gpn 0.9: `gpn:register_auto_classes`); a plain module is imported, and its
    `register_auto_classes` called when it has one (older gpn registered on `import gpn.model`)."""
    if not package:
        return
    module_name, _, function = package.partition(":")
    try:
        module = importlib.import_module(module_name)
    except (ImportError, ValueError) as exc:  # ValueError: an empty or relative name (":f", ".x")
        raise GenomeIndexError(f"--model-package {package!r} cannot be imported ({_reason(exc)})") from None
    register = getattr(module, function or "register_auto_classes", None)
    if function and not callable(register):
        raise GenomeIndexError(f"--model-package {package!r}: {module_name} has no function {function!r}")
    if callable(register):
        try:
            register()
        except Exception as exc:
            reason = _reason(exc)
            raise GenomeIndexError(f"--model-package {package!r}: registering its classes failed ({reason})") from None


def raw_config(name: str) -> dict[str, Any]:
    """config.json as written, before any class reads it."""
    from transformers import PretrainedConfig

    try:
        with quiet_transformers():
            return PretrainedConfig.get_config_dict(resolve(name))[0]
    except (OSError, ValueError) as exc:
        raise _load_error(name, exc) from None


def load_config(name: str, trust_remote_code: bool = False, package: str | None = None) -> Any:
    """The model's transformers config; a config that names its own code needs --trust-remote-code."""
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    import_package(package)
    raw = raw_config(name)
    if raw.get("auto_map") and not trust_remote_code:
        raise GenomeIndexError(
            f"model {name!r} runs its own code (auto_map in its config.json): pass --trust-remote-code if you trust it"
        )
    model_type = raw.get("model_type")
    if not raw.get("auto_map") and model_type not in CONFIG_MAPPING:
        hint = (
            f"--model-package {package!r} registered no such class: name its registration function (module:function)"
            if package
            else "if a package registers it (GPN: gpn), name it with --model-package"
        )
        raise GenomeIndexError(f"model {name!r}: transformers does not know model_type {model_type!r}; {hint}")
    try:
        with quiet_transformers(), own_code_imports(name):
            return AutoConfig.from_pretrained(resolve(name), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise _load_error(name, exc) from None


def _first_int(config: Any, names: tuple[str, ...]) -> int | None:
    for attr in names:
        value = getattr(config, attr, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def num_layers(config: Any) -> int:
    """Blocks in the model (hidden states 0..num_layers)."""
    depth = _first_int(config, DEPTHS)
    if depth is None:
        raise GenomeIndexError(f"cannot tell how many layers the model has (its config has none of {DEPTHS})")
    return depth


def position_limit(config: Any) -> int | None:
    """The longest input the model's position table or config allows (None: no limit stated)."""
    limits = [v for v in (getattr(config, attr, None) for attr in LENGTH_LIMITS) if isinstance(v, int) and v > 0]
    if not limits:
        return None
    limit = min(limits)
    if getattr(config, "model_type", None) == "esm" and getattr(config, "position_embedding_type", None) == "absolute":
        limit -= int(getattr(config, "pad_token_id", 0) or 0) + 1  # ESM positions start at pad+1
    return limit


def window_limit(tokenizer_limit: int | None, config: Any) -> int:
    """The smallest of the tokenizer's, the position table's and the config's limits; 0 if none."""
    known = [v for v in (tokenizer_limit, position_limit(config)) if v and 0 < v < SANE_LENGTH]
    return min(known) if known else 0


def load_tokenizer(name: str, config: Any, trust_remote_code: bool = False) -> Tokenizer:
    """The model's own HF tokenizer, wrapped in a fast exact tokenizer where one reproduces it."""
    from transformers import AutoTokenizer

    try:
        with quiet_transformers():
            hf = AutoTokenizer.from_pretrained(resolve(name), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise _load_error(name, exc) from None
    return make_tokenizer(hf, window_limit(getattr(hf, "model_max_length", None), config))


def describe(name: str, trust_remote_code: bool = False, package: str | None = None) -> ModelSpec:
    """Identity and shape of a model, read from its config (no weights loaded). `dim` is 0
    where the config does not say; the loaded model tells."""
    config = load_config(name, trust_remote_code, package)
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
        dim=_first_int(config, WIDTHS) or 0,
        max_tokens=window_limit(tokenizer_limit, config),
    )


# -- the model's classes and weights -----------------------------------------------------

AUTO_CLASSES = ("AutoModel", "AutoModelForMaskedLM", "AutoModelForCausalLM", "AutoModelForSeq2SeqLM",
                "AutoModelForPreTraining", "AutoModelForTokenClassification")  # fmt: skip


def model_class(name: str, config: Any, trust_remote_code: bool) -> type:
    """The class that holds this checkpoint's weights: its own (auto_map), a registered one, or stock."""
    from transformers import dynamic_module_utils
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    auto_map = getattr(config, "auto_map", None) or {}
    entry = next((auto_map[key] for key in AUTO_CLASSES if key in auto_map), None)
    if entry is not None:
        reference = entry[0] if isinstance(entry, list | tuple) else entry
        with quiet_transformers(), own_code_imports(name):
            return dynamic_module_utils.get_class_from_dynamic_module(reference, resolve(name))
    try:
        cls = MODEL_MAPPING[type(config)]
    except KeyError:
        raise GenomeIndexError(
            f"model {name!r}: no model class for model_type {config.model_type!r}; if it ships its own code, "
            "its config.json needs auto_map (and --trust-remote-code)"
        ) from None
    import transformers

    # An encoder-decoder family's encoder alone (T5Model -> T5EncoderModel): no decoder loads or runs.
    return getattr(transformers, cls.__name__.replace("Model", "EncoderModel"), cls)


def _check_weights(name: str, cls: type, missing: list[str], unexpected: list[str], mismatched: list[Any]) -> None:
    """Refuse a load that left encoder weights random or dropped some of the checkpoint's."""
    missing = sorted(k for k in missing if k.split(".")[0] not in NEVER_RUN)
    unexpected = sorted(k for k in unexpected if k.split(".")[0] not in HEADS)
    problems = []
    if missing:
        problems.append(f"{len(missing)} weight(s) of {cls.__name__} missing from the checkpoint (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} of the checkpoint's weights unused (e.g. {unexpected[0]})")
    if mismatched:
        first = mismatched[0][0] if isinstance(mismatched[0], tuple | list) else mismatched[0]
        problems.append(f"{len(mismatched)} weight(s) of another shape (e.g. {first})")
    if problems:
        raise GenomeIndexError(
            f"model {name!r} does not load into {cls.__name__}: {'; '.join(problems)}. It would run with random "
            "weights; if the checkpoint ships its own code, its config.json needs auto_map (and --trust-remote-code)"
        )


def _state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint folder (safetensors or PyTorch files, sharded or not)."""
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for file in _weights_files(folder):
        if file.suffix == ".safetensors":
            state.update(load_file(str(file)))
        else:
            state.update(torch.load(file, map_location="cpu", weights_only=True))
    if not state:
        raise GenomeIndexError(f"{folder}: no weight files (*.safetensors or *.bin)")
    return state


def _local_folder(name: str) -> Path:
    """The checkpoint as a folder: itself, or the Hub snapshot in the local cache."""
    source = resolve(name)
    if Path(source).is_dir():
        return Path(source)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(source))
    except Exception as exc:
        raise _load_error(name, exc) from None


def fill_config(cls: type, config: Any) -> None:
    """Give a config the attributes the class's transformers base expects and it lacks, at
    their defaults. DNABERT-2's config class derives from `PretrainedConfig`, which in
    transformers 5 no longer carries BERT's `pad_token_id`, `is_decoder`, `add_cross_attention`;
    its model class (a `BertPreTrainedModel`) reads them while it is built."""
    from transformers import PreTrainedConfig

    expected = next(
        (
            base.config_class
            for base in cls.__mro__
            if base.__module__.startswith("transformers.")
            and isinstance(getattr(base, "config_class", None), type)
            and base.config_class is not PreTrainedConfig
        ),
        None,
    )
    if expected is None or isinstance(config, expected):
        return
    defaults = expected().to_dict()
    filled = sorted(key for key in defaults if not hasattr(config, key))
    for key in filled:
        setattr(config, key, defaults[key])
    if filled:
        logger.debug("config of %s lacks %s: %s's defaults used", cls.__name__, ", ".join(filled), expected.__name__)


def _truly_missing(model: torch.nn.Module, state: dict[str, torch.Tensor], missing: list[str]) -> list[str]:
    """The missing keys no loaded tensor backs. A key whose tensor is the very storage of a
    loaded one (HyenaDNA's shared `freq`, tied embeddings) was loaded under its other name: the
    Hub's safetensors files keep one name of each shared tensor, and classes list the others in
    `_keys_to_ignore_on_load_missing` / `_tied_weights_keys`. Those lists are taken as hints,
    never as leave to run a random weight: a listed key that nothing loaded still counts."""
    own = model.state_dict(keep_vars=True)
    loaded = {own[key].data_ptr() for key in state if key in own and own[key].numel()}
    return [key for key in missing if key not in own or own[key].data_ptr() not in loaded]


def _load_own_code(name: str, cls: type, config: Any) -> torch.nn.Module:
    """A class that is not transformers' own: built the ordinary way on the CPU (its buffers
    computed by its own `__init__`), then filled from the checkpoint, strictly."""
    fill_config(cls, config)
    try:
        with quiet_transformers():
            model = cls(config)
    except Exception as exc:
        raise GenomeIndexError(f"model {name!r}: its own code fails to build the model ({_reason(exc)})") from None
    state = _state_dict(_local_folder(name))
    own = set(model.state_dict())
    prefix = getattr(cls, "base_model_prefix", "") + "."
    if prefix != "." and not own & set(state) and any(k.startswith(prefix) for k in state):
        state = {k.removeprefix(prefix): v for k, v in state.items()}
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise GenomeIndexError(f"model {name!r} does not load into {cls.__name__}: {_reason(exc)}") from None
    missing = _truly_missing(model, state, list(result.missing_keys))
    _check_weights(name, cls, missing, list(result.unexpected_keys), [])
    return model


def load_model(
    name: str,
    device: torch.device,
    dtype: torch.dtype,
    trust_remote_code: bool = False,
    package: str | None = None,
    prepare: Callable[[torch.nn.Module], None] | None = None,
) -> torch.nn.Module:
    """The encoder with every weight from the checkpoint, in eval mode on `device`; `prepare`
    (a family's adapter: cut it after the chosen layer) runs before it moves there."""
    config = load_config(name, trust_remote_code, package)
    cls = model_class(name, config, trust_remote_code)
    if cls.__module__.startswith("transformers."):
        kwargs: dict[str, Any] = {"dtype": dtype}
        if device.type == "cuda" and getattr(cls, "_supports_sdpa", False):
            kwargs["attn_implementation"] = "sdpa"
        try:
            with quiet_transformers():
                model, info = cls.from_pretrained(resolve(name), output_loading_info=True, **kwargs)
        except (OSError, ValueError, RuntimeError) as exc:
            raise _load_error(name, exc) from None
        report = [list(info[key]) for key in ("missing_keys", "unexpected_keys", "mismatched_keys")]
        _check_weights(name, cls, *report)
    else:
        model = _load_own_code(name, cls, config).to(dtype)
    base = getattr(model, "base_model", model)
    if isinstance(base, torch.nn.Module):  # a head class (auto_map named no AutoModel): its encoder
        model = base
    model.eval()
    if getattr(model, "pooler", None) is not None:
        model.pooler = None
    if prepare is not None:
        prepare(model)
    return model.to(device)
