"""The batched embedding engine: chunks in, one pooled vector per chunk out.

In the manner of sentence-transformers' `encode`: sort chunks by length, batch them under a
token budget, run under `torch.inference_mode()`, pool on the device, restore the input order.
A background thread pads (and pins) the next batches while the model runs the current one, and
`embed_genomes` reads and tokenises the next genome while the current one is on the model.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from genome_index import kmer, models
from genome_index.errors import GenomeIndexError
from genome_index.fasta import Genome, read_genome
from genome_index.tokenize import (
    CHUNKINGS,
    DEFAULT_CHUNKING,
    Chunk,
    Tokenizer,
    anchor_radius,
    anchored_chunks,
    chunk_tokens,
)

GROUP_BATCHES = 48  # embed_genomes sorts up to this many batches' worth of windows together (padding ~2 %)
FIRST_GROUP_BATCHES = 4  # ... and starts with groups this small, so the model starts early
POOLING = "mean"  # mean over attention_mask == 1: <cls> included, padding excluded (model card)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_device(device: str = "auto") -> torch.device:
    """`auto` -> the first CUDA device when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError:
        raise GenomeIndexError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise GenomeIndexError(f"device {device!r} asked for, but no CUDA GPU is available")
    if chosen.type not in ("cpu", "cuda"):
        raise GenomeIndexError(f"unsupported device {device!r}: use auto, cpu, cuda or cuda:N")
    return chosen


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """`auto` -> bfloat16 on CUDA (float16 where bf16 is missing), float32 on the CPU."""
    if dtype == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if dtype not in DTYPES:
        raise GenomeIndexError(f"unknown dtype {dtype!r}: use auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


@dataclass
class EmbeddedGenome:
    """One genome with its chunks and their vectors (row i of `vectors` is chunk i)."""

    genome: Genome
    chunks: list[Chunk]
    vectors: np.ndarray


class Embedder:
    """A model cut at one layer (or the built-in `kmer:K`), with its tokenizer and batching."""

    def __init__(
        self,
        model: str = "nt-tiny",
        layer: int | None = None,
        device: str = "auto",
        dtype: str = "auto",
        batch_tokens: int | None = None,
        chunk_tokens: int | None = None,
        overlap: int = 0,
        trust_remote_code: bool = False,
        compile: bool = False,
        chunking: str = DEFAULT_CHUNKING,
        radius: int | None = None,
    ) -> None:
        if chunking not in CHUNKINGS:
            raise GenomeIndexError(f"unknown chunking {chunking!r}: use {', '.join(CHUNKINGS)}")
        if overlap and chunking != "fixed":
            raise GenomeIndexError("--overlap applies to fixed windows: add --chunking fixed")
        self.kmer = kmer.kmer_size(model)
        self.overlap = overlap
        self.chunking = chunking
        self.compiled = False
        self.width_multiple = 1  # batch widths are rounded up to a multiple of this
        self.model: torch.nn.Module | None = None
        if self.kmer is not None:
            self._init_kmer(model, layer)
        else:
            self._init_transformer(model, layer, device, dtype, trust_remote_code)
        limit = self.tokenizer.max_tokens
        default = kmer.DEFAULT_CHUNK_BP if self.kmer else limit
        self.chunk_tokens = chunk_tokens or default
        if not 1 < self.chunk_tokens <= limit:
            raise GenomeIndexError(f"--chunk-tokens {self.chunk_tokens}: this model takes 2..{limit} tokens")
        self.anchor_radius = 0
        if chunking == "anchored":  # a store's own radius (`radius`) wins over today's rule
            self.anchor_radius = radius or anchor_radius(self.tokenizer, self.chunk_tokens)
        self.batch_tokens = batch_tokens or (65536 if self.device.type == "cuda" else 8192)
        if self.model is not None and self.batch_tokens < self.chunk_tokens:
            raise GenomeIndexError(
                f"--batch-tokens {self.batch_tokens} is smaller than one chunk ({self.chunk_tokens} tokens)"
            )
        if self.model is not None and compile and self.device.type == "cuda":  # on CPU it costs more than it saves
            self.compile()

    def _init_kmer(self, model: str, layer: int | None) -> None:
        assert self.kmer is not None
        dim = kmer.canonical_columns(self.kmer)[1]
        self.spec = models.ModelSpec(model, model, kmer.REVISION, 0, dim, kmer.MAX_CHUNK_BP)
        self.layer = models.resolve_layer(layer, 0)
        self.device, self.dtype = torch.device("cpu"), torch.float32
        self.tokenizer: Tokenizer = kmer.BaseTokenizer()

    def _init_transformer(
        self, model: str, layer: int | None, device: str, dtype: str, trust_remote_code: bool
    ) -> None:
        self.spec = models.describe(model, trust_remote_code)
        self.layer = models.resolve_layer(layer, self.spec.num_layers)
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        config = models.load_config(model, trust_remote_code)
        self.tokenizer = models.load_tokenizer(model, config, trust_remote_code)
        self.model = models.load_model(model, self.layer, self.device, self.dtype, trust_remote_code)
        self._cut = models.is_truncatable(self.model)

    def compile(self, backend: str | Callable = "inductor") -> None:
        """`torch.compile` the model with dynamic shapes: batch widths and row counts vary with
        every group, and one graph for all of them costs one compilation, not one per shape."""
        assert self.model is not None
        self.model = torch.compile(self.model, dynamic=True, backend=backend)
        self.compiled = True

    @property
    def dim(self) -> int:
        return self.spec.dim

    def chunk(self, genome: Genome) -> list[Chunk]:
        """Tokenise every record and cut it into model-sized windows (never across records)."""
        chunks: list[Chunk] = []
        for index, record in enumerate(genome.records):
            try:
                chunks.extend(self.chunk_sequence(record.sequence, index))
            except ValueError as exc:
                raise GenomeIndexError(f"{genome.path}: record {record.id}: {exc}") from None
        return chunks

    def chunk_sequence(self, sequence: bytes, record: int = 0) -> list[Chunk]:
        """One record's windows: anchored (cut where the sequence says) or fixed (every window)."""
        if self.chunking == "anchored":
            return anchored_chunks(sequence, self.tokenizer, record, self.chunk_tokens, self.anchor_radius)
        tokens = self.tokenizer.tokenize(sequence)
        return chunk_tokens(tokens, self.tokenizer, record, self.chunk_tokens, self.overlap)

    def _batches(self, chunks: Sequence[Chunk]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Indices of length-sorted batches (longest first) that fit the token budget."""
        order = np.argsort([-c.n_tokens for c in chunks], kind="stable")
        start = 0
        while start < len(order):
            width = -(-chunks[order[start]].n_tokens // self.width_multiple) * self.width_multiple
            rows = max(1, self.batch_tokens // width)
            index = order[start : start + rows]
            yield index, self._collate([chunks[i] for i in index], width)
            start += rows

    def _collate(self, batch: list[Chunk], width: int) -> np.ndarray:
        ids = np.full((len(batch), width), self.tokenizer.pad_id, dtype=np.int64)
        for row, chunk in enumerate(batch):
            ids[row, : chunk.n_tokens] = chunk.input_ids
        return ids

    def _forward(self, ids: torch.Tensor, lengths: torch.Tensor, layers: Sequence[int]) -> dict[int, torch.Tensor]:
        """Pooled hidden states `layers` of one padded batch, each pooled on the device as soon as
        it is computed (hooks), so no full stack of hidden states is ever kept."""
        assert self.model is not None
        positions = torch.arange(ids.shape[1], device=ids.device)
        mask = (positions[None, :] < lengths[:, None]).to(torch.long)

        def pool(hidden: torch.Tensor) -> torch.Tensor:
            weights = mask.to(hidden.dtype).unsqueeze(1)
            return torch.bmm(weights, hidden).squeeze(1).float() / lengths[:, None].float()

        pooled: dict[int, torch.Tensor] = {}
        if not self._cut:
            hidden_states = self.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
            return {layer: pool(hidden_states[layer]) for layer in layers}
        hooks = []
        for layer in set(layers) - {self.layer}:  # the top layer is the model's own output
            module = self.model.embeddings if layer == 0 else self.model.encoder.layer[layer - 1]
            hooks.append(
                module.register_forward_hook(lambda _m, _i, out, layer=layer: pooled.__setitem__(layer, pool(out)))
            )
        try:
            pooled[self.layer] = pool(self.model(input_ids=ids, attention_mask=mask).last_hidden_state)
        finally:
            for hook in hooks:
                hook.remove()
        return {layer: pooled[layer] for layer in layers}

    def embed_chunks(self, chunks: Sequence[Chunk]) -> np.ndarray:
        """One float32 vector per chunk, in the order given, at the embedder's layer."""
        return self.embed_chunks_at(chunks, [self.layer])[self.layer]

    def embed_chunks_at(self, chunks: Sequence[Chunk], layers: Sequence[int]) -> dict[int, np.ndarray]:
        """Vectors of the chunks at several layers (each <= the embedder's), in one forward pass."""
        bad = [layer for layer in layers if not 0 <= layer <= self.layer]
        if bad:
            raise GenomeIndexError(f"layer {bad[0]} is not computed by an embedder cut at layer {self.layer}")
        if self.kmer is not None:
            vectors = kmer.profiles(chunks, self.kmer)
            return dict.fromkeys(layers, vectors)
        out = {layer: np.empty((len(chunks), self.dim), dtype=np.float32) for layer in layers}
        if not chunks:
            return out
        pinned = self.device.type == "cuda"
        pending: queue.Queue = queue.Queue(maxsize=3)

        def produce() -> None:
            try:
                for index, ids in self._batches(chunks):
                    lengths = np.array([chunks[i].n_tokens for i in index])
                    if self.compiled and len(index) == 1:  # a size-1 dimension would compile a second graph
                        ids, lengths = np.repeat(ids, 2, axis=0), np.repeat(lengths, 2)
                    tensors = torch.from_numpy(ids), torch.from_numpy(lengths)
                    if pinned:
                        tensors = tuple(t.pin_memory() for t in tensors)
                    pending.put((index, tensors))
            except BaseException as exc:  # handed to the consumer, which re-raises it
                pending.put(exc)
                return
            pending.put(None)

        threading.Thread(target=produce, daemon=True).start()
        results: list[tuple[np.ndarray, dict[int, torch.Tensor]]] = []
        with torch.inference_mode():
            while (item := pending.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                index, (ids, lengths) = item
                ids = ids.to(self.device, non_blocking=True)
                lengths = lengths.to(self.device, non_blocking=True)
                results.append((index, self._forward(ids, lengths, layers)))
            for index, pooled in results:
                for layer, vectors in pooled.items():
                    out[layer][index] = vectors[: len(index)].cpu().numpy()
        return out

    def embed_genomes(
        self, paths: Iterable[Path], want: Callable[[Genome], bool] | None = None, lookahead: int = 2
    ) -> Iterator[EmbeddedGenome]:
        """Read, chunk and embed genomes in order; the next ones are read while these run.

        Genomes are embedded in groups, so the length-sorted batches are cut from many windows
        and carry little padding even when the genomes are small or their windows vary in
        length. The first group is FIRST_GROUP_BATCHES batches' worth of tokens, so the model
        starts once a few genomes are read; each next group doubles up to GROUP_BATCHES. The
        last genomes go in halving groups, so the caller's work on one group (commits) overlaps
        the model's on the next and little of it is left when the model is done. Read-ahead
        grows to two groups' worth of genomes; memory follows the group size, not the number
        of genomes. `want`, called in order before a genome is embedded, may decline it.
        """
        paths = list(paths)
        ahead: deque[Future] = deque()
        submitted = 0

        def prepare(path: Path) -> tuple[Genome, list[Chunk]]:
            genome = read_genome(path)
            return genome, self.chunk(genome)

        def read_ahead(pool: ThreadPoolExecutor) -> None:
            nonlocal submitted
            while len(ahead) < lookahead and submitted < len(paths):
                ahead.append(pool.submit(prepare, paths[submitted]))
                submitted += 1

        with ThreadPoolExecutor(max_workers=1) as pool:
            read_ahead(pool)
            group: list[tuple[Genome, list[Chunk]]] = []
            tokens, target = 0, FIRST_GROUP_BATCHES
            for i in range(len(paths)):
                genome, chunks = ahead.popleft().result()
                read_ahead(pool)
                if want is None or want(genome):
                    group.append((genome, chunks))
                    tokens += sum(c.n_tokens for c in chunks)
                if group and tokens >= target * self.batch_tokens:
                    lookahead = max(lookahead, 2 * len(group))
                    read_ahead(pool)
                    yield from self._embed_group(group)
                    group, tokens, target = [], 0, min(2 * target, GROUP_BATCHES)
                elif group and i == len(paths) - 1:
                    yield from self._embed_last(group)

    def _embed_group(self, group: list[tuple[Genome, list[Chunk]]]) -> Iterator[EmbeddedGenome]:
        """Embed the windows of several genomes together and hand back each genome's share."""
        vectors = self.embed_chunks([c for _, chunks in group for c in chunks])
        offset = 0
        for genome, chunks in group:
            yield EmbeddedGenome(genome, chunks, vectors[offset : offset + len(chunks)])
            offset += len(chunks)

    def _embed_last(self, group: list[tuple[Genome, list[Chunk]]]) -> Iterator[EmbeddedGenome]:
        """The final genomes in groups of about half of what is left, down to the first size."""
        sizes = [sum(c.n_tokens for c in chunks) for _, chunks in group]
        left = sum(sizes)
        while group:
            half = max(left // 2, FIRST_GROUP_BATCHES * self.batch_tokens)
            cut, tokens = 0, 0
            while cut < len(group) and tokens < half:
                tokens += sizes[cut]
                cut += 1
            yield from self._embed_group(group[:cut])
            group, sizes, left = group[cut:], sizes[cut:], left - tokens
