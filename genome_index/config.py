"""What a run may do beyond reading data, decided in one place: only the user grants it.

A store's `settings` table, a `genome-index.toml` and an HTTP request travel with data: they
may record which model ran or ask for a query, but none of them can switch on running a
checkpoint's own Python code, importing a package that registers a model, or joining a Ray
cluster. Those come from this run's own flags or environment:

- `--trust-remote-code` or GENOME_INDEX_TRUST_REMOTE_CODE=1: run a checkpoint's own code;
- `--model-package P` or GENOME_INDEX_MODEL_PACKAGE=P: import P before loading the model;
- `--ray ADDRESS` or RAY_ADDRESS: join a Ray cluster (the TOML file is refused in `config`).

`granted` gives a model's options with exactly the user's grants, and `require` refuses, in one
line naming the flag, a store whose model needs more than the user granted. Every model load
(`encoders.load_encoder`, `load_tokenizer`, `describe`) goes through `granted`.
"""

from __future__ import annotations

import dataclasses
import os

from genome_index.errors import GenomeIndexError
from genome_index.settings import ModelOptions, StoreSettings

TRUST_ENV = "GENOME_INDEX_TRUST_REMOTE_CODE"
PACKAGE_ENV = "GENOME_INDEX_MODEL_PACKAGE"
_TRUE = ("1", "true", "yes", "y", "on")
TRUST_HOW = f"pass --trust-remote-code (or set {TRUST_ENV}=1) if you trust it"


def trust_from_environment() -> bool:
    """GENOME_INDEX_TRUST_REMOTE_CODE set to 1, true, yes or on."""
    return os.environ.get(TRUST_ENV, "").strip().lower() in _TRUE


def package_from_environment() -> str | None:
    return os.environ.get(PACKAGE_ENV, "").strip() or None


def granted(options: ModelOptions) -> ModelOptions:
    """`options` with `trust_remote_code` and `model_package` as this run's user gives them: the
    value the caller passed (a flag, a Python argument), else the environment; nothing else."""
    trust = options.trust_remote_code if options.trust_remote_code is not None else trust_from_environment()
    package = options.model_package if options.model_package is not None else package_from_environment()
    return dataclasses.replace(options, trust_remote_code=bool(trust), model_package=package or None)


def require(options: ModelOptions, stored: StoreSettings, where: object = "this store") -> ModelOptions:
    """The user's grants (see `granted`), refused where the store's model needs what they do not
    allow: a store records that its model ran its own code or came from a package; it cannot
    allow either."""
    options = granted(options)
    if stored.trust_remote_code and not options.trust_remote_code:
        raise GenomeIndexError(
            f"{where}: its model {stored.model!r} runs its own code, which a store cannot allow: {TRUST_HOW}"
        )
    if stored.model_package and not options.model_package:
        raise GenomeIndexError(
            f"{where}: its model is registered by the package {stored.model_package!r}, which a store cannot "
            f"import: pass --model-package {stored.model_package} (or set {PACKAGE_ENV}) if you trust it"
        )
    return options
