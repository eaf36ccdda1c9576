"""`kmer:K`: the classic baseline as an encoder: canonical K-mer frequency profile per chunk.

No weights: each chunk's vector is the frequency of every canonical K-mer (a K-mer and its
reverse complement counted as one, so strand does not matter) among the chunk's K-mers that
contain no N. It goes wherever a model name goes, so transformer layers are always compared
with it. Chunks are cut in bases (6,000 by default, about one NT chunk); a batch's padding is
N, which no counted K-mer contains, so padded rows count exactly their own bases.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

import numpy as np

from genome_index.embedding.backends import register
from genome_index.embedding.encoder import ModelSpec, resolve_layer
from genome_index.embedding.tokenize import Tokens, base_positions
from genome_index.errors import GenomeIndexError
from genome_index.settings import ModelOptions, RunOptions

KMER_MODEL = re.compile(r"^kmer:(\d+)$")
K_RANGE = range(3, 9)
DEFAULT_CHUNK_BP = 6000
MAX_CHUNK_BP = 1_000_000
REVISION = "builtin:canonical-kmer-frequency:v1"
BATCH_BASES = 1 << 16  # bases per batch: enough to amortise the overhead, small enough for the rows x columns counts
_TO_CODE = bytes(("ACGTN".index(chr(b)) if chr(b) in "ACGTN" else 255) for b in range(256))


def kmer_size(model: str) -> int | None:
    """K for a `kmer:K` model name, None for any other name; K outside 3-8 is an error."""
    match = KMER_MODEL.match(model)
    if not match:
        return None
    k = int(match.group(1))
    if k not in K_RANGE:
        raise GenomeIndexError(f"model {model!r}: K must be between {K_RANGE.start} and {K_RANGE.stop - 1}")
    return k


@functools.cache
def canonical_columns(k: int) -> tuple[np.ndarray, int]:
    """For every K-mer number (2 bits a base, A0 C1 G2 T3): its canonical column; and the count."""
    codes = np.arange(4**k, dtype=np.int64)
    reverse = np.zeros_like(codes)
    for position in range(k):
        base = (codes >> (2 * position)) & 3
        reverse |= (3 - base) << (2 * (k - 1 - position))
    canonical = np.minimum(codes, reverse)
    kept, columns = np.unique(canonical, return_inverse=True)
    return columns.astype(np.int64), len(kept)


class BaseTokenizer:
    """One token per base (A0 C1 G2 T3 N4): chunks of the k-mer embedder are cut in bases."""

    def __init__(self) -> None:
        self.name = "bases"
        self.prefix: list[int] = []
        self.suffix: list[int] = []
        self.pad_id = 4
        self.bases_per_token = 1.0
        self.max_tokens = MAX_CHUNK_BP
        self.frames = 1

    def tokenize(self, sequence: bytes, cuts: np.ndarray | None = None) -> Tokens:
        """One token per base; `cuts` change nothing, as there is no tiling to restart."""
        ids = np.frombuffer(sequence.translate(_TO_CODE), dtype=np.uint8)
        if ids.size and ids.max() > 4:
            raise ValueError("sequence is not normalised: only A, C, G, T and N are allowed")
        starts = base_positions(len(ids))
        return Tokens(ids.copy(), starts, starts + 1)  # one byte a base


def spec(model: str) -> ModelSpec:
    """The identity and shape of `kmer:K`: one "layer" (0), one column per canonical K-mer."""
    k = kmer_size(model)
    assert k is not None
    return ModelSpec(model, model, REVISION, 0, canonical_columns(k)[1], MAX_CHUNK_BP)


class KmerEncoder:
    """`kmer:K` behind the encoder interface: profiles of padded rows of base codes, in numpy on
    the host (`device` None), so a kmer:K build or query never imports torch."""

    def __init__(self, options: ModelOptions, run: RunOptions) -> None:
        self.spec = spec(options.model or "")
        self.k = kmer_size(self.spec.name) or 0
        self.layer = resolve_layer(options.layer, 0)
        self.tokenizer = BaseTokenizer()
        if run.device not in ("auto", "cpu"):  # a device asked for must exist, though profiles run on the host
            from genome_index.embedding.devices import pick_device  # torch: only to check that device

            pick_device(run.device)
        self.device, self.dtype = None, None
        self.compiled = False
        self.pooling = "mean"  # the profile: the mean of the chunk's one-hot K-mer counts
        self.exact_lengths = False
        self.own_code = False
        self.default_chunk_tokens = DEFAULT_CHUNK_BP
        self.default_batch_tokens = BATCH_BASES

    def forward(self, ids: np.ndarray, lengths: np.ndarray, layers: Sequence[int]) -> dict[int, np.ndarray]:
        return dict.fromkeys(layers, batch_profiles(ids, self.k))


def batch_profiles(codes: np.ndarray, k: int) -> np.ndarray:
    """Canonical K-mer frequencies of each row of base codes (rows sum to 1; all zero where a
    row has no N-free K-mer). Padding is N (4), so it adds nothing."""
    columns, dim = canonical_columns(k)
    rows, width = codes.shape
    out = np.zeros((rows, dim), dtype=np.float32)
    if width < k:
        return out
    starts = width - k + 1  # K-mers a row holds, built from contiguous slices (a strided window view: 2.8x slower)
    wide = codes.astype(np.int64)
    numbers = np.zeros((rows, starts), dtype=np.int64)
    for position in range(k):
        numbers <<= 2
        numbers |= wide[:, position : position + starts] & 3
    seen_n = np.cumsum(codes >= 4, axis=1, dtype=np.int32)  # N so far: a K-mer is clean where none is new in it
    clean = seen_n[:, k - 1 :] == np.concatenate([np.zeros((rows, 1), np.int32), seen_n[:, : starts - 1]], axis=1)
    row_of = np.broadcast_to(np.arange(rows)[:, None], numbers.shape)
    counts = np.bincount((row_of * dim + columns[numbers])[clean], minlength=rows * dim).reshape(rows, dim)
    totals = counts.sum(axis=1, keepdims=True)
    np.divide(counts, np.where(totals == 0, 1, totals), out=out, casting="unsafe")
    return out


class KmerBackend:
    """`kmer:K` (K from 3 to 8): named by what it is, with no weights and one "layer"."""

    name = "kmer"
    named_by_identity = True

    @staticmethod
    def accepts(model: str) -> bool:
        return kmer_size(model) is not None

    @staticmethod
    def describe(options: ModelOptions) -> ModelSpec:
        return spec(options.model or "")

    @staticmethod
    def load_encoder(options: ModelOptions, run: RunOptions) -> KmerEncoder:
        return KmerEncoder(options, run)

    @staticmethod
    def load_tokenizer(options: ModelOptions) -> BaseTokenizer:
        return BaseTokenizer()


register(KmerBackend())
