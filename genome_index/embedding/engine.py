"""The batching engine: chunks in, one pooled vector per chunk out, in the order given.

In the manner of sentence-transformers' `encode`: sort chunks by length, batch them under a
token budget, run under `torch.inference_mode()`, pool on the device, restore the input order.
An encoder that computes on the host in numpy (`device` None: `kmer:K`) gets the same batches
in a plain loop, and torch is not imported.
Where the batches are cut is planned (`plan_batches`), so that windows of varied lengths
carry little padding.
A producer thread pads (and on CUDA pins) the next batches while the encoder runs this one;
it stops as soon as the consumer does, error or not, and drops what it holds.
"""

from __future__ import annotations

import bisect
import queue
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from genome_index.embedding.encoder import Encoder
from genome_index.embedding.tokenize import Chunk
from genome_index.errors import GenomeIndexError
from genome_index.progress import Step

if TYPE_CHECKING:
    import torch

AHEAD = 3  # batches padded ahead of the encoder
IN_FLIGHT = 2  # batches whose vectors stay on the device before they are copied out (the GPU stays busy)
BATCH_COST = 1 / 32  # what one more batch costs, as a share of a full batch's tokens (launches, smaller matmuls)


def plan_batches(widths: Sequence[int], budget: int, batch_cost: float) -> list[tuple[int, int]]:
    """Cut windows sorted widest first into batches [start, stop) of at most `budget` padded
    tokens (rows x the first row's width; one row may exceed it), with the fewest padded tokens
    plus `batch_cost` tokens per batch. Filling every batch to the budget instead pads the
    short windows of a varied set heavily: anchored windows of 48 genomes cut in the build's
    groups carry 11 % padding that way, 5 % so. A shortest path over the sorted widths, hand
    written because batching libraries pack for tokens, not for this padded-plus-count cost.

    A batch need only start where a new width starts or as far back as the budget allows:
    moving a start back over a window of its own width adds that width to this batch and
    takes at least as much from the one before. So each stop weighs a few starts, not every
    row a batch may hold, and 200,000 one-read records plan in a fraction of a second."""
    widths = [int(width) for width in widths]
    new_width = [i for i in range(len(widths)) if i == 0 or widths[i] != widths[i - 1]]
    best = [0.0] * (len(widths) + 1)  # best[stop]: the cheapest plan of the first `stop` windows
    start_of = [0] * (len(widths) + 1)
    widest = 0  # the first start whose batch fits the budget; it only moves on as `stop` does
    for stop in range(1, len(widths) + 1):
        while stop - widest > 1 and (stop - widest) * widths[widest] > budget:
            widest += 1
        pick, cost = widest, best[widest] + (stop - widest) * widths[widest]
        for start in new_width[bisect.bisect_right(new_width, widest) : bisect.bisect_left(new_width, stop)]:
            if best[start] + (stop - start) * widths[start] < cost:
                pick, cost = start, best[start] + (stop - start) * widths[start]
        best[stop], start_of[stop] = cost + batch_cost, pick
    cuts, stop = [], len(widths)
    while stop:
        cuts.append((start_of[stop], stop))
        stop = start_of[stop]
    return cuts[::-1]


def equal_length_batches(lengths: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """Cuts of windows sorted longest first into batches of one length each, full to `budget`."""
    cuts, start = [], 0
    while start < len(lengths):
        same = start + int(np.searchsorted(-lengths[start:], -lengths[start], side="right"))
        stop = min(same, start + max(1, budget // int(lengths[start])))
        cuts.append((start, stop))
        start = stop
    return cuts


class BatchEngine:
    """Embeds chunks with an encoder in length-sorted batches of at most `batch_tokens` tokens."""

    def __init__(self, encoder: Encoder, batch_tokens: int) -> None:
        self.encoder = encoder
        self.batch_tokens = batch_tokens
        self.width_multiple = 1  # batch widths rounded up to a multiple of this (fewer distinct shapes)

    def batches(self, chunks: Sequence[Chunk]) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(chunk indices, padded ids, lengths) of length-sorted batches, longest first."""
        order = np.argsort([-c.n_tokens for c in chunks], kind="stable")
        sorted_lengths = np.array([chunks[i].n_tokens for i in order], dtype=np.int64)
        if self.encoder.exact_lengths:  # padding would change the vectors: one length a batch
            widths = sorted_lengths
            cuts = equal_length_batches(sorted_lengths, self.batch_tokens)
        else:
            widths = -(-sorted_lengths // self.width_multiple) * self.width_multiple
            cuts = plan_batches(widths, self.batch_tokens, self.batch_tokens * BATCH_COST)
        pad_id = self.encoder.tokenizer.pad_id
        for start, stop in cuts:
            index = order[start:stop]
            ids = np.full((len(index), widths[start]), pad_id, dtype=np.int64)
            for row, i in enumerate(index):
                ids[row, : chunks[i].n_tokens] = chunks[i].input_ids
            lengths = sorted_lengths[start:stop]
            if self.encoder.compiled and len(index) == 1:  # a size-1 dimension would compile a second graph
                ids, lengths = np.repeat(ids, 2, axis=0), np.repeat(lengths, 2)
            yield index, ids, lengths

    def embed(self, chunks: Sequence[Chunk], layers: Sequence[int], step: Step | None = None) -> dict[int, np.ndarray]:
        """float32 vectors of the chunks at each of `layers` (all <= the encoder's), in order;
        `step` hears of the bases and windows of each batch as its vectors arrive."""
        step = step or Step()
        encoder = self.encoder
        bad = [layer for layer in layers if not 0 <= layer <= encoder.layer]
        if bad:
            raise GenomeIndexError(f"layer {bad[0]} is not computed by an embedder cut at layer {encoder.layer}")
        out = {layer: np.empty((len(chunks), encoder.spec.dim), dtype=np.float32) for layer in layers}
        if not chunks:
            return out
        if encoder.device is None:  # numpy on the host: nothing to pad ahead of a device
            for index, ids, lengths in self.batches(chunks):
                for layer, vectors in encoder.forward(ids, lengths, layers).items():
                    out[layer][index] = vectors[: len(index)]
                step.advance(sum(chunks[i].end - chunks[i].start for i in index), windows=len(index))
            return out
        return self._embed_on_device(chunks, layers, step, out)

    def _embed_on_device(
        self, chunks: Sequence[Chunk], layers: Sequence[int], step: Step, out: dict[int, np.ndarray]
    ) -> dict[int, np.ndarray]:
        """`embed` with a torch encoder: a producer thread pads (and on CUDA pins) batches ahead."""
        import torch

        encoder = self.encoder
        pin = encoder.device.type == "cuda"
        pending: queue.Queue = queue.Queue(maxsize=AHEAD)
        stop = threading.Event()

        def produce() -> None:
            try:
                for index, ids, lengths in self.batches(chunks):
                    tensors = torch.from_numpy(ids), torch.from_numpy(lengths)
                    if pin:
                        tensors = tuple(t.pin_memory() for t in tensors)
                    if stop.is_set():
                        return
                    pending.put((index, tensors))
                pending.put(None)
            except BaseException as exc:  # handed to the consumer, which re-raises it
                pending.put(exc)

        producer = threading.Thread(target=produce, name="genome-index-batches", daemon=True)
        producer.start()
        results: deque[tuple[np.ndarray, dict[int, torch.Tensor]]] = deque()

        def copy_out(index: np.ndarray, pooled: dict[int, torch.Tensor]) -> None:
            for layer, vectors in pooled.items():
                out[layer][index] = vectors[: len(index)].cpu().numpy()
            step.advance(sum(chunks[i].end - chunks[i].start for i in index), windows=len(index))

        try:
            with torch.inference_mode():
                while (item := pending.get()) is not None:
                    if isinstance(item, BaseException):
                        raise item
                    index, (ids, lengths) = item
                    ids = ids.to(encoder.device, non_blocking=True)
                    lengths = lengths.to(encoder.device, non_blocking=True)
                    results.append((index, encoder.forward(ids, lengths, layers)))
                    while len(results) > IN_FLIGHT:  # an older batch, long done: memory stays bounded
                        copy_out(*results.popleft())
                while results:
                    copy_out(*results.popleft())
        finally:
            stop.set()
            while producer.is_alive():  # make room, so a producer blocked on a full queue sees `stop`
                try:
                    pending.get(timeout=0.05)
                except queue.Empty:
                    pass
        return out
