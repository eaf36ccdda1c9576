"""The rows one genome adds to a store: what a build hands to the writer, and what a merge reads back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from genome_index.io.sequences import PackedSequence

if TYPE_CHECKING:
    from genome_index.store.segments import Codes


@dataclass
class NewGenome:
    """Everything one genome adds to the store, ready to commit in one transaction."""

    name: str
    file: str
    sha256: str
    length: int
    gc: float
    n_count: int
    records: list[dict[str, Any]]
    chunks: dict[str, np.ndarray]  # record (index), start, end, n_tokens, gc, n_count
    vectors: np.ndarray  # float32, or float16 for a float16 store
    labels: dict[str, str]
    sketch: np.ndarray  # FracMinHash hashes (uint64) of the genome's canonical k-mers
    sketch_scaled: int
    sequences: list[PackedSequence] | None  # one per record; None: not kept (a store built before sequences)
    chunk_sum: np.ndarray | None = None  # (1, dim) sum of the unit chunk vectors; None: worked out at commit
    codes: Codes | None = None  # of the chunk vectors, made by a Ray worker; None: encoded at commit
