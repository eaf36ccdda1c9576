"""`Embedder`: a model at one layer with its windows and batching; the parts put together.

An encoder (`encoders`: a transformer cut at the layer, or `kmer:K`), the chunker that cuts
genomes into the encoder's windows (`chunker`), the batching engine (`engine`), and the
genome pipeline (`pipeline`). Built from a `ModelOptions` (what decides the vectors) and a
`RunOptions` (how this process computes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from genome_index import __version__, config
from genome_index.embedding.backends import load_encoder
from genome_index.embedding.chunker import Chunker
from genome_index.embedding.encoder import Encoder, ModelSpec
from genome_index.embedding.engine import BatchEngine
from genome_index.embedding.pipeline import EmbeddedGenome, embed_genomes
from genome_index.embedding.tokenize import Chunk, Tokenizer
from genome_index.errors import GenomeIndexError
from genome_index.io.fasta import Genome
from genome_index.progress import Step
from genome_index.settings import IVF_LISTS, ModelOptions, RunOptions, StoreOptions, StoreSettings, resolve


class Embedder:
    """A model cut at one layer (or the built-in `kmer:K`), with its windows and batching."""

    def __init__(self, model: ModelOptions | str | None = None, run: RunOptions | None = None) -> None:
        asked = ModelOptions(model=model) if isinstance(model, str) else model or ModelOptions()
        options, _ = resolve(config.granted(asked), StoreOptions(), None)
        run = run or RunOptions()
        if options.chunk_tokens is not None and options.chunk_tokens < 2:
            raise GenomeIndexError(f"--chunk-tokens {options.chunk_tokens}: a window holds at least 2 tokens")
        if run.batch_tokens is not None and run.batch_tokens < 1:
            raise GenomeIndexError(f"--batch-tokens {run.batch_tokens}: must be at least 1")
        self.encoder: Encoder = load_encoder(options, run)
        self.chunker = Chunker(
            self.encoder.tokenizer,
            options.chunking or "anchored",
            options.chunk_tokens or self.encoder.default_chunk_tokens,
            options.overlap or 0,
            options.anchor_radius,
            model=self.encoder.spec.name,
        )
        batch_tokens = run.batch_tokens or max(self.encoder.default_batch_tokens, self.chunker.chunk_tokens)
        if batch_tokens < self.chunker.chunk_tokens:
            raise GenomeIndexError(
                f"--batch-tokens {batch_tokens} is smaller than one window ({self.chunker.chunk_tokens} tokens)"
            )
        self.engine = BatchEngine(self.encoder, batch_tokens)
        self.trust_remote_code = self.encoder.own_code  # recorded: a later run must grant it again
        self.model_package = options.model_package or ""
        self.asked_batch_tokens = run.batch_tokens or 0

    # what the parts say of the model and its windows
    @property
    def spec(self) -> ModelSpec:
        return self.encoder.spec

    @property
    def layer(self) -> int:
        return self.encoder.layer

    @property
    def dim(self) -> int:
        return self.encoder.spec.dim

    @property
    def tokenizer(self) -> Tokenizer:
        return self.encoder.tokenizer

    @property
    def batch_tokens(self) -> int:
        return self.engine.batch_tokens

    @property
    def compiled(self) -> bool:
        return self.encoder.compiled

    @property
    def model_class(self) -> str:
        """The class that runs: `module.Class` of a transformer, `builtin` for kmer:K."""
        model = getattr(self.encoder, "model", None)
        if model is None:
            return "builtin"
        model = getattr(model, "_orig_mod", model)  # compiled
        return f"{type(model).__module__}.{type(model).__name__}"

    def settings(self, store: StoreOptions) -> StoreSettings:
        """The fixed settings of a store built with this embedder and these store options."""
        assert store.index_type and store.vector_dtype and store.sketch_scaled
        return StoreSettings(
            model=self.spec.name, model_source=self.spec.source, model_revision=self.spec.revision,
            layer=self.layer, chunk_tokens=self.chunker.chunk_tokens, chunking=self.chunker.chunking,
            anchor_radius=self.chunker.anchor_radius, overlap=self.chunker.overlap, dim=self.dim,
            index_type=store.index_type, vector_dtype=store.vector_dtype, sketch_scaled=store.sketch_scaled,
            ivf_lists=store.ivf_lists or IVF_LISTS,
            trust_remote_code=self.trust_remote_code, pooling=self.encoder.pooling, model_package=self.model_package,
            model_class=self.model_class, batch_tokens=self.asked_batch_tokens, tool_version=__version__,
        )  # fmt: skip

    # the work
    def chunk(self, genome: Genome) -> list[Chunk]:
        """Tokenise every record and cut it into model-sized windows (never across records)."""
        return self.chunker.chunk(genome)

    def embed_chunks(self, chunks: Sequence[Chunk], step: Step | None = None) -> np.ndarray:
        """One float32 vector per chunk, in the order given, at the embedder's layer; `step`
        hears of each batch's bases and windows."""
        return self.engine.embed(chunks, [self.layer], step)[self.layer]

    def embed_chunks_at(
        self, chunks: Sequence[Chunk], layers: Sequence[int], step: Step | None = None
    ) -> dict[int, np.ndarray]:
        """Vectors of the chunks at several layers (each <= the embedder's), in one forward pass."""
        return self.engine.embed(chunks, layers, step)

    def embed_genomes(
        self, paths: Iterable[Path], want: Callable[[Path], bool] | None = None, step: Step | None = None
    ) -> Iterator[EmbeddedGenome]:
        """Read, chunk and embed genomes in order (see `pipeline.embed_genomes`)."""
        return embed_genomes(self, paths, want, step=step)
