"""Model backends: one module and one registration each.

A backend says which model names it takes and makes their encoder, tokenizer and description;
nothing outside a backend asks which family a model is. Two ship: `kmer` (`kmer:K`, K-mer
profiles, no weights) and `hf` (any Hugging Face checkpoint; what one family does beyond the
generic path is an adapter registered beside it, such as ESM's cut after the chosen layer in
`esm`). A new family is a new module calling `register`. `hf` is the catch-all, asked after
every registered backend and imported only then: `kmer:K` never loads torch (about a second of
a cold start: `python -X importtime -c 'import torch'`). Every load goes through
`config.granted`: a checkpoint's own code or a model package only as the user grants them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from genome_index import config
from genome_index.errors import GenomeIndexError
from genome_index.settings import ModelOptions, RunOptions, StoreSettings, differs

if TYPE_CHECKING:
    from genome_index.embedding.encoder import Encoder, ModelSpec
    from genome_index.embedding.tokenize import Tokenizer


class Backend(Protocol):
    """A family of models behind the encoder interface."""

    name: str
    named_by_identity: bool  # a model's name says what it is (kmer:6): two names are two models

    def accepts(self, model: str) -> bool:
        """Whether `model` (a name given by the user) is this backend's."""
        ...

    def describe(self, options: ModelOptions) -> ModelSpec:
        """The model's identity and shape, without loading its weights."""
        ...

    def load_encoder(self, options: ModelOptions, run: RunOptions) -> Encoder: ...

    def load_tokenizer(self, options: ModelOptions) -> Tokenizer:
        """The model's tokenizer alone: what a worker that only cuts windows needs."""
        ...


BACKENDS: list[Backend] = []  # the last registered is asked first; the catch-all (`hf`) after them all


def register(backend: Backend) -> Backend:
    BACKENDS.insert(0, backend)
    return backend


def backend_for(model: str) -> Backend:
    """The backend of a model name; the catch-all (`hf`) takes what no other does."""
    for backend in BACKENDS:
        if backend.accepts(model):
            return backend
    from genome_index.embedding.backends import esm, hf  # noqa: F401  (torch: imported for checkpoints only)

    return hf.BACKEND


def load_encoder(options: ModelOptions, run: RunOptions) -> Encoder:
    """The encoder of `options.model`, with its code and package as the user grants them."""
    return backend_for(options.model or "").load_encoder(config.granted(options), run)


def load_tokenizer(options: ModelOptions) -> Tokenizer:
    return backend_for(options.model or "").load_tokenizer(config.granted(options))


def describe(options: ModelOptions) -> ModelSpec:
    return backend_for(options.model or "").describe(config.granted(options))


def named_by_identity(model: str) -> bool:
    return backend_for(model).named_by_identity


def refuse_other_model(asked: str, stored: StoreSettings) -> None:
    """Refuse, before anything loads, a model that cannot be the store's: one named by what it is
    (`kmer:K`) asked of a store of another model, or the other way round. Checkpoints are compared
    by their weights once loaded (a copied folder is the same model)."""
    if named_by_identity(asked) or named_by_identity(stored.model):
        raise GenomeIndexError(differs(("model", stored.model, asked)))


from genome_index.embedding.backends import kmer  # noqa: E402  (registers itself)

__all__ = ["BACKENDS", "Backend", "backend_for", "describe", "kmer", "load_encoder", "load_tokenizer",
           "named_by_identity", "refuse_other_model", "register"]  # fmt: skip
