"""Vectors as the store keeps them: normalised for cosine, FLOAT[dim] or float16 BLOB columns."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # imported where used: commands that only read start faster
    import pyarrow as pa


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), float32 and contiguous for FAISS."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1, norms)


def normalise_in_place(vectors: np.ndarray, block: int = 16_384) -> np.ndarray:
    """`vectors` (float32, C order) scaled to unit rows in place, a block at a time: no copy."""
    for lo in range(0, len(vectors), block):
        part = vectors[lo : lo + block]
        norms = np.linalg.norm(part, axis=1, keepdims=True)
        part /= np.where(norms == 0, 1, norms)
    return vectors


def genome_vector(chunk_vectors: np.ndarray) -> np.ndarray:
    """Mean of the normalised chunk vectors, normalised (the original research method)."""
    return normalise(unit_sum(chunk_vectors))[0]


def unit_sum(vectors: np.ndarray, block: int = 16_384) -> np.ndarray:
    """(1, dim) sum of the rows scaled to unit length, a block at a time: no normalised copy
    of all the rows is ever made."""
    total = np.zeros((1, vectors.shape[1]), dtype=np.float64)
    for lo in range(0, len(vectors), block):
        total += normalise(vectors[lo : lo + block]).sum(axis=0, keepdims=True, dtype=np.float64)
    return total.astype(np.float32)


def vectors_column(vectors: np.ndarray, dtype: str = "float32") -> pa.Array:
    """(n, dim) vectors as an Arrow column: FLOAT[dim] for float32, one float16 BLOB per row."""
    import pyarrow as pa

    if dtype == "float16":  # the rows' bytes handed to Arrow as one buffer: no copy per row
        half = np.ascontiguousarray(vectors, dtype="<f2")
        offsets = np.arange(len(half) + 1, dtype=np.int64) * (half.shape[1] * 2)
        return pa.Array.from_buffers(pa.large_binary(), len(half), [None, pa.py_buffer(offsets), pa.py_buffer(half)])
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), vectors.shape[1])


def to_matrix(column: pa.ChunkedArray, dim: int) -> np.ndarray:
    """A vector column fetched from DuckDB (FLOAT[dim] or float16 BLOB) as (n, dim) float32."""
    import pyarrow as pa

    if len(column) == 0:
        return np.empty((0, dim), dtype=np.float32)
    array = column.combine_chunks()
    if pa.types.is_binary(array.type) or pa.types.is_large_binary(array.type):  # rows of equal width: one buffer
        _, offsets, data = array.buffers()
        width = np.int64 if pa.types.is_large_binary(array.type) else np.int32
        ends = np.frombuffer(offsets, dtype=width)[array.offset : array.offset + len(array) + 1]
        half = np.frombuffer(data, dtype=np.uint8)[ends[0] : ends[-1]].view("<f2")
        return half.reshape(-1, dim).astype(np.float32)
    return array.values.to_numpy(zero_copy_only=False).reshape(-1, dim)


RESCORE_BYTES = 64 << 20  # the candidate vectors gathered at once while re-scoring


def pair_scores(queries: np.ndarray, ids: np.ndarray, fetch: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """The inner product of each query with each of its ids (-1: none, scored -inf): `fetch(ids)`
    gives the vectors of the sorted unique ids, in the space of the queries. Done a block of
    queries at a time, so memory stays bounded however long the query is."""
    exact = np.full(ids.shape, -np.inf, dtype=np.float32)
    block = max(1, RESCORE_BYTES // (4 * max(1, ids.shape[1]) * queries.shape[1]))
    for lo in range(0, len(queries), block):
        part = ids[lo : lo + block]
        unique = np.unique(part[part >= 0])
        if len(unique):
            vectors = fetch(unique)
            position = np.searchsorted(unique, np.where(part >= 0, part, unique[0]))
            scored = np.einsum("qd,qcd->qc", queries[lo : lo + block], vectors[position])
            exact[lo : lo + block] = np.where(part >= 0, scored, -np.inf)
    return exact


def rescore(
    queries: np.ndarray, candidates: np.ndarray, fetch: Callable[[np.ndarray], np.ndarray], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, ids) of each query among its candidate ids (-1: none), scored exactly
    by `pair_scores`."""
    exact = pair_scores(queries, candidates, fetch)
    order = np.argsort(-exact, axis=1, kind="stable")[:, : min(k, candidates.shape[1])]
    return np.take_along_axis(exact, order, 1), np.take_along_axis(candidates, order, 1)
