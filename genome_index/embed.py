"""The batched embedding engine: chunks in, one pooled vector per chunk out.

In the manner of sentence-transformers' `encode`: sort chunks by length, batch them under a
token budget, run under `torch.inference_mode()`, pool on the device, restore the input order.
A background thread pads (and pins) the next batches while the model runs the current one, and
`embed_genomes` reads and tokenises the next genome while the current one is on the model.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from genome_index import models
from genome_index.errors import GenomeIndexError
from genome_index.fasta import Genome, read_genome
from genome_index.tokenize import Chunk, chunk_tokens

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
    """A model cut at one layer, with its tokenizer and batching settings."""

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
    ) -> None:
        self.spec = models.describe(model, trust_remote_code)
        self.layer = models.resolve_layer(layer, self.spec.num_layers)
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        config = models.load_config(model, trust_remote_code)
        self.tokenizer = models.load_tokenizer(model, config, trust_remote_code)
        self.chunk_tokens = chunk_tokens or self.tokenizer.max_tokens
        if not 1 < self.chunk_tokens <= self.tokenizer.max_tokens:
            raise GenomeIndexError(
                f"--chunk-tokens {self.chunk_tokens}: this model takes 2..{self.tokenizer.max_tokens} tokens"
            )
        self.overlap = overlap
        self.batch_tokens = batch_tokens or (65536 if self.device.type == "cuda" else 8192)
        if self.batch_tokens < self.chunk_tokens:
            raise GenomeIndexError(
                f"--batch-tokens {self.batch_tokens} is smaller than one chunk ({self.chunk_tokens} tokens)"
            )
        self.model = models.load_model(model, self.layer, self.device, self.dtype, trust_remote_code)
        self._cut = models.is_truncatable(self.model)
        self.compiled = compile and self.device.type == "cuda"  # on CPU compiling costs more than it saves
        if self.compiled:
            self.model = torch.compile(self.model, dynamic=True)

    @property
    def dim(self) -> int:
        return self.spec.dim

    def chunk(self, genome: Genome) -> list[Chunk]:
        """Tokenise every record and cut it into model-sized windows (never across records)."""
        chunks: list[Chunk] = []
        for index, record in enumerate(genome.records):
            try:
                tokens = self.tokenizer.tokenize(record.sequence)
                chunks.extend(chunk_tokens(tokens, self.tokenizer, index, self.chunk_tokens, self.overlap))
            except ValueError as exc:
                raise GenomeIndexError(f"{genome.path}: record {record.id}: {exc}") from None
        return chunks

    def _batches(self, chunks: Sequence[Chunk]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Indices of length-sorted batches (longest first) that fit the token budget."""
        order = np.argsort([-c.n_tokens for c in chunks], kind="stable")
        start = 0
        while start < len(order):
            width = chunks[order[start]].n_tokens
            rows = max(1, self.batch_tokens // width)
            index = order[start : start + rows]
            yield index, self._collate([chunks[i] for i in index], width)
            start += rows

    def _collate(self, batch: list[Chunk], width: int) -> np.ndarray:
        ids = np.full((len(batch), width), self.tokenizer.pad_id, dtype=np.int64)
        for row, chunk in enumerate(batch):
            ids[row, : chunk.n_tokens] = chunk.input_ids
        return ids

    def _forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Pooled hidden state `self.layer` of one padded batch, computed on the device."""
        positions = torch.arange(ids.shape[1], device=ids.device)
        mask = (positions[None, :] < lengths[:, None]).to(torch.long)
        if self._cut:
            hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        else:
            hidden = self.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[
                self.layer
            ]
        weights = mask.to(hidden.dtype).unsqueeze(1)
        summed = torch.bmm(weights, hidden).squeeze(1).float()
        return summed / lengths[:, None].float()

    def embed_chunks(self, chunks: Sequence[Chunk]) -> np.ndarray:
        """One float32 vector per chunk, in the order given."""
        out = np.empty((len(chunks), self.dim), dtype=np.float32)
        if not chunks:
            return out
        pinned = self.device.type == "cuda"
        pending: queue.Queue = queue.Queue(maxsize=3)

        def produce() -> None:
            try:
                for index, ids in self._batches(chunks):
                    lengths = np.array([chunks[i].n_tokens for i in index])
                    tensors = torch.from_numpy(ids), torch.from_numpy(lengths)
                    if pinned:
                        tensors = tuple(t.pin_memory() for t in tensors)
                    pending.put((index, tensors))
            except BaseException as exc:  # handed to the consumer, which re-raises it
                pending.put(exc)
                return
            pending.put(None)

        threading.Thread(target=produce, daemon=True).start()
        results: list[tuple[np.ndarray, torch.Tensor]] = []
        with torch.inference_mode():
            while (item := pending.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                index, (ids, lengths) = item
                ids = ids.to(self.device, non_blocking=True)
                lengths = lengths.to(self.device, non_blocking=True)
                results.append((index, self._forward(ids, lengths)))
            for index, pooled in results:
                out[index] = pooled.cpu().numpy()
        return out

    def embed_genomes(
        self, paths: Iterable[Path], want: Callable[[Genome], bool] | None = None, lookahead: int = 2
    ) -> Iterator[EmbeddedGenome]:
        """Read, chunk and embed genomes one by one; the next ones are read while this one runs.

        `want`, called in order before a genome is embedded, may decline it (e.g. a duplicate).
        """
        paths = list(paths)

        def prepare(path: Path) -> tuple[Genome, list[Chunk]]:
            genome = read_genome(path)
            return genome, self.chunk(genome)

        with ThreadPoolExecutor(max_workers=1) as pool:
            ahead: list[Future] = [pool.submit(prepare, p) for p in paths[:lookahead]]
            for i in range(len(paths)):
                genome, chunks = ahead.pop(0).result()
                if i + lookahead < len(paths):
                    ahead.append(pool.submit(prepare, paths[i + lookahead]))
                if want is None or want(genome):
                    yield EmbeddedGenome(genome, chunks, self.embed_chunks(chunks))
