"""Where options come from, decided in one place: the caller, `genome-index.toml`, the environment.

The command line, `GenomeIndex`, `Searcher` and `serve` all read them here, the same way:

- an option the caller gives (a flag, a Python argument) wins;
- else `./genome-index.toml` gives it (a file that may travel with data: see below);
- else the environment: `GENOME_INDEX` (the store folder), `GENOME_INDEX_CACHE` (the cache);
- else the option's own default (`settings`).

What a run may do beyond reading data is granted by the user only: a store's `settings`, a
`genome-index.toml` and an HTTP request travel with data, so they may record what was used or
ask for a query, never switch on running a checkpoint's own Python code
(`--trust-remote-code` / GENOME_INDEX_TRUST_REMOTE_CODE=1), importing a package that registers
a model (`--model-package P` / GENOME_INDEX_MODEL_PACKAGE=P) or joining a Ray cluster
(`--ray ADDRESS` / RAY_ADDRESS / GENOME_INDEX_RAY). `granted` gives a model's options with
exactly the user's grants, and `require` refuses, in one line naming the flag, a store whose
model needs more; every model load goes through `granted` (`embedding.backends`).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genome_index.errors import GenomeIndexError
from genome_index.settings import ModelOptions, RunOptions, StoreOptions, StoreSettings, option_types

CONFIG_FILE = "genome-index.toml"
DEFAULT_INDEX = "genome-index"
TRUST_ENV = "GENOME_INDEX_TRUST_REMOTE_CODE"
PACKAGE_ENV = "GENOME_INDEX_MODEL_PACKAGE"
TRUST_HOW = f"pass --trust-remote-code (or set {TRUST_ENV}=1) if you trust it"
_TRUE = ("1", "true", "yes", "y", "on")
TYPE_NAMES = {str: "string", int: "whole number", float: "number", bool: "true or false", list: "list of paths"}
FILE_ONLY_TYPES = {  # TOML keys besides the settings
    "inputs": list, "index": str, "labels": str, "shard": str, "ray_actors": int,
}  # fmt: skip
# Options that run code or reach other machines: a file that travels with data (a cloned
# folder) must never turn them on.
NOT_FROM_FILES = {
    "trust_remote_code": f"pass --trust-remote-code (or set {TRUST_ENV}=1) yourself",
    "model_package": f"pass --model-package (or set {PACKAGE_ENV}) yourself",
    "ray": "pass --ray (or set RAY_ADDRESS) yourself",
}


@dataclass(frozen=True)
class Config:
    """The options `genome-index.toml` gives (checked: known keys, right types, nothing that
    grants), and where it was read from (None: there is none)."""

    values: dict[str, Any] = dataclasses.field(default_factory=dict)
    path: Path | None = None

    def index(self, given: str | Path | None = None) -> Path:
        """The store folder: the one given, else the file's `index`, else $GENOME_INDEX, else ./genome-index."""
        chosen = given if given is not None else self.values.get("index") or os.environ.get("GENOME_INDEX")
        return Path(chosen or DEFAULT_INDEX)

    def fill(self, options: Any) -> Any:
        """`options` (a settings dataclass) with each field left out (None) taken from the file."""
        values = {
            f.name: self.values[f.name]
            for f in dataclasses.fields(options)
            if getattr(options, f.name) is None and f.name in self.values
        }
        return dataclasses.replace(options, **values) if values else options

    def run_options(self, run: RunOptions | None) -> RunOptions:
        """The caller's RunOptions, else one made from the file's device, dtype and batch size."""
        if run is not None:
            return run
        fields = {f.name for f in dataclasses.fields(RunOptions)}
        return RunOptions(**{key: value for key, value in self.values.items() if key in fields})

    def model_options(self, model: ModelOptions) -> ModelOptions:
        return self.fill(model)

    def store_options(self, store: StoreOptions) -> StoreOptions:
        return self.fill(store)


def load(folder: str | Path = ".") -> Config:
    """`genome-index.toml` of `folder` (the working folder), checked; an empty Config where there
    is none. A key that grants (trust_remote_code, model_package, ray) is refused in one line."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        return Config()
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    try:
        values = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise GenomeIndexError(f"{path}: not valid TOML ({exc})") from None
    types = {**option_types(), **FILE_ONLY_TYPES}
    for key, value in values.items():
        if key in NOT_FROM_FILES:
            raise GenomeIndexError(
                f"{path}: {key} cannot come from a file that travels with data; {NOT_FROM_FILES[key]}"
            )
        if key not in types:
            known = sorted(set(types) - set(NOT_FROM_FILES))
            raise GenomeIndexError(f"{path}: unknown option {key!r}; known: {known}")
        if key == "inputs" and isinstance(value, str):
            values[key] = value = [value]
        if not _of_type(value, types[key]):
            raise GenomeIndexError(f"{path}: {key} = {value!r} should be a {TYPE_NAMES[types[key]]}")
    return Config(values, path)


def _of_type(value: Any, wanted: type) -> bool:
    """A TOML value of the option's type (true/false is no number, a whole number is a number)."""
    if wanted is list:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if wanted is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, wanted) and isinstance(value, bool) == (wanted is bool)


def cache_dir() -> Path:
    """Where genome-index caches what is costly to recompute: $GENOME_INDEX_CACHE, else
    $XDG_CACHE_HOME/genome-index, else ~/.cache/genome-index."""
    if os.environ.get("GENOME_INDEX_CACHE"):
        return Path(os.environ["GENOME_INDEX_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "genome-index"


def ray_address(given: str | None) -> str | None:
    """The Ray cluster to join for `--ray auto`: $RAY_ADDRESS; any other value names it itself."""
    return os.environ.get("RAY_ADDRESS") if given == "auto" else given


# -- what only the user grants -------------------------------------------------------------


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
