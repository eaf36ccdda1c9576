"""Every setting in one place: what a store fixes, what a run chooses, and how they resolve.

Each option is one dataclass field, written once with its name, type, default and help text
(the CLI, the TOML file and the library all read them from here):

- `ModelOptions`: what decides the vectors (model, layer, windows), fixed by a store's first build;
- `StoreOptions`: how a store keeps them (index type, vector dtype, sketch density), fixed too;
- `RunOptions`: how this process computes (device, dtype, batch size, compile), never stored.

`StoreSettings` is what a store holds: every fixed value resolved and typed, plus what the
model says of itself (source, weights revision, dimension). `resolve` fills the options a run
left out: from the store when there is one, else from each option's fallback; the embedder
then fills what only the model knows (the last layer, its window size).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, get_args, get_type_hints

from genome_index.errors import GenomeIndexError

DEFAULT_MODEL = "InstaDeepAI/nucleotide-transformer-2.5b-multi-species"
CHUNKINGS = ("anchored", "fixed")
INDEX_TYPES = ("flat", "hnsw", "ivf-pq")
VECTOR_DTYPES = ("float32", "float16")
IVF_LISTS = 4096  # inverted lists of a trained ivf-pq store: about 4 sqrt(N) for 1-10 M vectors (FAISS's guideline)
DEVICES_HELP = "auto, cpu, cuda or cuda:N"
DTYPES = ("auto", "float32", "bfloat16", "float16")
QUERY_MODES = ("auto", "genome", "chunks")
POOLING = "mean"  # mean over attention_mask == 1: <cls> included, padding excluded (model card)
METRIC = "cosine"
FORMAT_VERSION = "1"


def option(help: str, fallback: Any = None, default: Any = None, cli: bool = True, shown: str | None = None) -> Any:
    """A settings field: `help` for the CLI, `fallback` used when neither the run nor the store
    gives a value (None: the model decides), `default` the field's own default, `shown` what
    the help says the default is where no single value is (`the model's maximum`)."""
    return field(default=default, metadata={"help": help, "fallback": fallback, "cli": cli, "shown": shown})


@dataclass(frozen=True)
class ModelOptions:
    """What decides the vectors; None means the store's value, else the fallback."""

    model: str | None = option(
        "nt-tiny (bundled, for trying things), kmer:K (K-mer profile, K 3-8, no weights), a checkpoint folder, "
        "or a Hugging Face Hub id",
        fallback=DEFAULT_MODEL,
    )
    layer: int | None = option(
        "Hidden state to pool: 0 is the embedding output, negative counts from the end", shown="the last"
    )
    chunk_tokens: int | None = option("Tokens per window, special tokens included", shown="the model's maximum")
    chunking: str | None = option(
        "anchored (cut where the sequence says, so shared sequence gets the same windows) or fixed",
        fallback="anchored",
    )
    overlap: int | None = option("Tokens shared by consecutive fixed windows", fallback=0)
    trust_remote_code: bool | None = option("Allow a Hub model to run its own Python code", fallback=False)
    anchor_radius: int | None = option("anchor radius in bp (a store's own; else derived from the window)", cli=False)
    pooling: str | None = option(
        "mean (over the attention mask), cls (first token) or last (last token)",
        shown="last for causal models, else mean",
    )
    model_package: str | None = option(
        "What registers a model's classes: module:function to call (GPN: gpn:register_auto_classes), or a "
        "module to import (whose register_auto_classes is called if it has one)"
    )


@dataclass(frozen=True)
class StoreOptions:
    """How a store keeps its vectors; None means the store's value, else the fallback."""

    index_type: str | None = option("Chunk index: flat (exact), hnsw or ivf-pq", fallback="flat")
    vector_dtype: str | None = option(
        "Vectors kept in DuckDB as float32 or float16 (half the disk)", fallback="float32"
    )
    sketch_scaled: int | None = option(
        "The re-rank sketch keeps 1 in N canonical 21-mers (smaller: finer, more disk)", fallback=1000
    )
    ivf_lists: int | None = option(
        "Inverted lists of an ivf-pq store, trained once it holds 39 vectors a list (and 10,000); "
        "about 4 x the square root of the vectors it will hold",
        fallback=IVF_LISTS,
    )


@dataclass(frozen=True)
class RunOptions:
    """How this process computes; never stored, never compared."""

    device: str = option(DEVICES_HELP, default="auto")
    dtype: str = option("auto (bfloat16 on CUDA, float32 on CPU), float32, bfloat16 or float16", default="auto")
    batch_tokens: int | None = option(
        "Tokens per batch (at least one window)", shown="65536 on CUDA, 8192 on CPU, or the store's build"
    )
    compile: bool = option("torch.compile the model (CUDA only)", default=False)


@dataclass(frozen=True)
class QueryOptions:
    """How a query is embedded and ranked; None means the measured default for the mode."""

    k: int = option("Genomes to report per query", default=10)
    mode: str = option(
        "genome (the query's mean vector against genome vectors), chunks (chunk-by-chunk votes) or auto "
        "(genome for queries of 1 Mbp or more, else chunks)",
        default="auto",
    )
    per_record: bool = option("Each record is its own query", default=False)
    window_overlap: float | None = option(
        "Overlap of query windows as a fraction of a window (stores with fixed windows)", shown="0"
    )
    frames: bool | None = option("Embed all k frames of a k-mer model", shown="on in chunks mode")
    center: bool = option("Subtract the store's mean vector before the cosine", default=True)
    rerank: bool = option("Re-order the best 20 hits by k-mer containment", default=True)
    align: bool | None = option(
        "Align the query to the best candidates with minimap2 and rank them by the query bases each explains "
        "less the edits it takes",
        shown="on for queries up to 6 Mbp",
    )
    align_top: int = option("Candidate genomes to align (never fewer than -k)", default=10)
    exhaustive: bool = option(
        "Compare the query's windows with every stored window, not only with those of the genomes that "
        "share sketch hashes with it (chunks mode, queries of about 10 kb and up)",
        default=False,
    )
    species_ani: float = option(
        "Identity from which an aligned hit is the same species as the query (relation column)", default=0.95
    )
    species_fraction: float = option("... over at least this fraction of the query aligned to the genome", default=0.5)

    def __post_init__(self) -> None:
        if not 0 < self.species_ani <= 1 or not 0 < self.species_fraction <= 1:
            raise GenomeIndexError("--species-ani and --species-fraction are fractions above 0, at most 1")
        if self.mode not in QUERY_MODES:
            raise GenomeIndexError(f"unknown mode {self.mode!r}: use {', '.join(QUERY_MODES)}")
        if self.k < 1:
            raise GenomeIndexError("-k must be at least 1")
        if self.align_top < 1:
            raise GenomeIndexError("--align-top must be at least 1")
        if self.window_overlap is not None and not 0 <= self.window_overlap < 1:
            raise GenomeIndexError("--window-overlap must be at least 0 and below 1")


@dataclass(frozen=True)
class GatherOptions:
    """How a sample is gathered: when the greedy cover stops, and whether it is verified."""

    threshold_bp: int | None = option(
        "Stop when no stored genome holds this many more of the sample's bases (its sketch hashes x "
        "the sketch's scaled)",
        shown="0.1 % of the sample's sketch",
    )
    verify: bool = option(
        "Map the sample with minimap2 to the genomes found and give each its reads, abundance, depth, breadth "
        "and identity",
        default=True,
    )

    def __post_init__(self) -> None:
        if self.threshold_bp is not None and self.threshold_bp < 1:
            raise GenomeIndexError("--threshold-bp must be at least 1")


def _field(name: str) -> dataclasses.Field:
    for cls in (ModelOptions, StoreOptions, RunOptions, QueryOptions, GatherOptions):
        for f in dataclasses.fields(cls):
            if f.name == name:
                return f
    raise KeyError(name)


def help_of(name: str) -> str:
    """The help text of an option, as written once here."""
    return _field(name).metadata["help"] + "."


def shown_default(name: str) -> str | None:
    """What the help says an option's default is: its fallback, or the words for a default
    the model or device decides; None where the option's own default says it (or it is off)."""
    metadata = _field(name).metadata
    fallback = metadata["fallback"]
    if fallback is None:
        return metadata["shown"]
    return None if fallback is False else str(fallback)


def option_types() -> dict[str, type]:
    """Every option a user may set (on the command line or in genome-index.toml), with the
    type of its value (int for `int | None`)."""
    types = {}
    for cls in (ModelOptions, StoreOptions, RunOptions):
        hints = get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.metadata["cli"]:
                kinds = (hints[f.name], *get_args(hints[f.name]))
                types[f.name] = next(t for t in (bool, int, float, str) if t in kinds)
    return types


def _fill(options: Any, stored: Any | None) -> Any:
    """`options` with each None replaced by the stored value, else by the field's fallback."""
    values = {}
    for f in dataclasses.fields(options):
        value = getattr(options, f.name)
        if value is None and stored is not None:
            value = getattr(stored, f.name)
        values[f.name] = f.metadata["fallback"] if value is None else value
    return type(options)(**values)


# Compared between a store and a build, and between stores that merge (the model by its weights).
FIXED_SETTINGS = (
    "model_revision", "layer", "pooling", "chunk_tokens", "chunking", "anchor_radius", "overlap", "dim",
    "metric", "index_type", "vector_dtype", "sketch_scaled", "ivf_lists",
)  # fmt: skip
# What a store made before a setting existed was built with.
LEGACY_SETTINGS = {
    "chunking": "fixed", "anchor_radius": "0", "sketch_scaled": "1000", "index_type": "flat",
    "vector_dtype": "float32", "trust_remote_code": "false", "ivf_lists": str(IVF_LISTS),
}  # fmt: skip


@dataclass(frozen=True)
class StoreSettings:
    """The settings a store fixes at its first build (the `settings` table, typed)."""

    model: str
    model_source: str
    model_revision: str
    layer: int
    chunk_tokens: int
    chunking: str
    anchor_radius: int
    overlap: int
    dim: int
    index_type: str
    vector_dtype: str
    sketch_scaled: int
    ivf_lists: int = IVF_LISTS
    trust_remote_code: bool = False
    pooling: str = POOLING
    model_package: str = ""
    model_class: str = ""  # the class that ran, e.g. transformers.models.esm.modeling_esm.EsmModel
    batch_tokens: int = 0  # the build's batch size, a query's default (0: the device's default)
    metric: str = METRIC
    tool_version: str = ""
    format_version: str = FORMAT_VERSION

    @classmethod
    def from_rows(cls, rows: dict[str, str]) -> StoreSettings:
        """From the `settings` table's key/value text rows; unknown keys are ignored."""
        rows = {**LEGACY_SETTINGS, **rows}
        types = get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in rows:
                continue
            text = rows[f.name]
            kind = types[f.name]
            values[f.name] = int(text) if kind is int else text == "true" if kind is bool else text
        return cls(**values)

    def rows(self) -> dict[str, str]:
        """The key/value text rows of the `settings` table."""
        return {
            key: ("true" if value else "false") if isinstance(value, bool) else str(value)
            for key, value in dataclasses.asdict(self).items()
        }

    def model_options(self) -> ModelOptions:
        """The options that rebuild this store's embedder (its own model, layer and windows).
        Never what the store records of code it ran (`trust_remote_code`, `model_package`): only
        the user grants those (`config.granted`)."""
        return ModelOptions(
            model=self.model_source, layer=self.layer, chunk_tokens=self.chunk_tokens, chunking=self.chunking,
            overlap=self.overlap, anchor_radius=self.anchor_radius, pooling=self.pooling,
        )  # fmt: skip

    def store_options(self) -> StoreOptions:
        return StoreOptions(self.index_type, self.vector_dtype, self.sketch_scaled, self.ivf_lists)

    def difference(self, other: StoreSettings, keys: tuple[str, ...] = FIXED_SETTINGS) -> tuple[str, str, str] | None:
        """The first fixed setting that differs: (name, this store's value, the other's), with the
        model named by name rather than by its weights hash; None when they agree."""
        for key in keys:
            if getattr(self, key) != getattr(other, key):
                if key == "model_revision":
                    return "model", self.model, other.model
                return key, str(getattr(self, key)), str(getattr(other, key))
        return None

    def same_vectors(self, other: StoreSettings) -> bool:
        """True when `other` embeds exactly as this store does (model, layer, windows)."""
        keys = ("model_revision", "layer", "pooling", "chunk_tokens", "chunking", "anchor_radius", "overlap")
        return self.difference(other, keys) is None


def differs(setting: tuple[str, str, str]) -> str:
    """The error for a run whose settings are not the store's: `(name, the store's, asked)`."""
    name, have, want = setting
    return f"this store was built with {name} {have!r}, not {want!r}; use another --index for different settings"


def resolve(
    asked: ModelOptions, store: StoreOptions, stored: StoreSettings | None
) -> tuple[ModelOptions, StoreOptions]:
    """Fill what a run left out, from the store when there is one, else the fallbacks; and
    refuse values that are not one of their choices. The layer, window size and anchor radius
    may stay None: the model decides them."""
    model = _fill(asked, stored.model_options() if stored else None)
    options = _fill(store, stored.store_options() if stored else None)
    _choose("chunking", model.chunking, CHUNKINGS)
    _choose("index type", options.index_type, INDEX_TYPES)
    _choose("vector dtype", options.vector_dtype, VECTOR_DTYPES)
    if options.sketch_scaled < 1:
        raise GenomeIndexError(f"--sketch-scaled must be at least 1, got {options.sketch_scaled}")
    if options.ivf_lists < 1:
        raise GenomeIndexError(f"--ivf-lists must be at least 1, got {options.ivf_lists}")
    if model.overlap and model.chunking != "fixed":
        raise GenomeIndexError("--overlap applies to fixed windows: add --chunking fixed")
    return model, options


def _choose(what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise GenomeIndexError(f"unknown {what} {value!r}: use {', '.join(choices)}")
