"""Tokenizers with base-pair coordinates, and chunking in token space.

`KmerTokenizer` reproduces, with numpy, what the Hugging Face tokenizer of the Nucleotide
Transformer does (split on N, non-overlapping k-mers left to right, a leftover of < k bases as
single-base tokens, each N its own token), with its id tables read from that tokenizer's own
vocabulary. It is ~1000x faster on whole genomes; `HFTokenizer` wraps any other vocabulary.
`make_tokenizer` picks the fast one only when it agrees with the HF tokenizer on a probe.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from genome_index.embedding.anchors import cut_points

_BASES = "ACGT"
_N_CODE = 4
# Byte -> base code (A0 C1 G2 T3 N4); anything else -> 255, rejected.
_TO_CODE = bytes((_BASES + "N").index(chr(b)) if chr(b) in _BASES + "N" else 255 for b in range(256))
# Segments with at least this many k-mers are packed by reshape instead of by gather.
_LONG_SEGMENT = 256


def base_positions(n: int) -> np.ndarray:
    """0..n-1 in the narrowest integer type that holds them (a 50 Mbp query: 200 MB, not 400)."""
    return np.arange(n, dtype=np.int32 if n < 2**31 - 1 else np.int64)


@dataclass(frozen=True)
class Tokens:
    """Token ids of one sequence (no special tokens) with each token's bp span [starts, ends)."""

    ids: np.ndarray
    starts: np.ndarray
    ends: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class Chunk:
    """One model input: tokens of one record, its 0-based half-open bp span, and its full ids."""

    record: int
    start: int
    end: int
    input_ids: np.ndarray

    @property
    def n_tokens(self) -> int:
        """Tokens the model sees, special tokens (<cls>) included."""
        return len(self.input_ids)


class Tokenizer(Protocol):
    """What the chunker and engine need from a tokenizer."""

    name: str
    max_tokens: int
    prefix: list[int]
    suffix: list[int]
    pad_id: int
    bases_per_token: float
    frames: int  # reading frames of a query's head: k where fixed k-mers are cut from the start, else 1

    def tokenize(self, sequence: bytes, cuts: np.ndarray | None = None) -> Tokens: ...


def _special_ids(hf: Any) -> tuple[list[int], list[int]]:
    """The ids the HF tokenizer puts before and after any sequence (e.g. [<cls>], [])."""
    empty = hf("", add_special_tokens=True)["input_ids"]
    plain = hf("A", add_special_tokens=True)["input_ids"]
    body = hf("A", add_special_tokens=False)["input_ids"]
    cut = next(i for i in range(len(plain)) if plain[i : i + len(body)] == body)
    prefix, suffix = plain[:cut], plain[cut + len(body) :]
    assert prefix + suffix == empty, "tokenizer adds different specials to empty input"
    return prefix, suffix


def _single_id(hf: Any, text: str) -> int | None:
    """The one known token `text` becomes, as written or lower-cased; None if neither."""
    for form in (text, text.lower()):
        ids = hf(form, add_special_tokens=False)["input_ids"]
        if len(ids) == 1 and ids[0] != hf.unk_token_id:
            return int(ids[0])
    return None


def _unknown_id(hf: Any) -> int:
    if hf.unk_token_id is None:
        raise ValueError("the vocabulary has no N and no unknown token")
    return int(hf.unk_token_id)


class KmerTokenizer:
    """Vectorised tokenizer for k-mer vocabularies (Nucleotide Transformer style)."""

    def __init__(self, hf: Any, max_tokens: int) -> None:
        vocab: dict[str, int] = hf.get_vocab()
        dna = [tok for tok in vocab if tok and set(tok) <= set("ACGTN")]
        self.k = max((len(tok) for tok in dna), default=0)
        self.frames = self.k
        if self.k < 2:
            raise ValueError("not a k-mer vocabulary")
        missing = [b for b in "ACGTN" if b not in vocab]
        if missing:
            raise ValueError(f"vocabulary lacks single-base tokens {missing}")
        self.kmer_ids = np.empty(4**self.k, dtype=np.int32)
        for code, letters in enumerate(itertools.product(_BASES, repeat=self.k)):
            token = "".join(letters)
            if token not in vocab:
                raise ValueError(f"vocabulary lacks k-mer {token}")
            self.kmer_ids[code] = vocab[token]
        self.single_ids = np.array([vocab[b] for b in _BASES + "N"], dtype=np.int32)
        self.name = f"kmer{self.k}"
        self.bases_per_token = float(self.k)
        self.prefix, self.suffix = _special_ids(hf)
        self.pad_id = int(hf.pad_token_id)
        self.max_tokens = max_tokens

    def tokenize(self, sequence: bytes, cuts: np.ndarray | None = None) -> Tokens:
        """Tokenize a normalised (A/C/G/T/N) sequence; ids equal the HF tokenizer's, no specials.

        `cuts` (sorted bp positions) restart the k-mer tiling: the tokens equal those of each
        piece between cuts tokenised on its own, in one vectorised pass.
        """
        k = self.k
        code = np.frombuffer(sequence.translate(_TO_CODE), dtype=np.uint8)
        if code.size and code.max() > _N_CODE:
            raise ValueError("sequence is not normalised: only A, C, G, T and N are allowed")
        n_pos = np.flatnonzero(code == _N_CODE) if b"N" in sequence else np.empty(0, np.int64)
        # Segments between breaks: an N (followed by its own token) or a cut (by nothing). A cut
        # on an N changes nothing, since an N restarts the tiling anyway.
        breaks, is_n = n_pos, np.ones(len(n_pos), dtype=bool)
        if cuts is not None and len(cuts):
            cuts = np.asarray(cuts, dtype=np.int64)
            cuts = cuts[(cuts > 0) & (cuts < len(code))]
            cuts = cuts[code[cuts] != _N_CODE]
            breaks = np.concatenate((n_pos, cuts))
            is_n = np.concatenate((is_n, np.zeros(len(cuts), dtype=bool)))
            order = np.argsort(breaks, kind="stable")
            breaks, is_n = breaks[order], is_n[order]
        seg_start = np.concatenate(([0], breaks + is_n))
        seg_len = np.concatenate((breaks, [len(code)])) - seg_start
        n_kmers, n_left = seg_len // k, seg_len % k
        seg_tokens = n_kmers + n_left
        # First output index of each segment: all tokens of earlier segments plus their Ns.
        seg_first = np.concatenate(([0], np.cumsum(seg_tokens[:-1] + is_n)))
        total = int(seg_tokens.sum()) + len(n_pos)
        ids = np.empty(total, dtype=np.int32)
        starts = np.empty(total, dtype=np.int64)
        ends = np.empty(total, dtype=np.int64)

        # k-mers of long segments: a reshape per segment (few of them, most of the bases).
        long = n_kmers >= _LONG_SEGMENT
        for seg in np.flatnonzero(long):
            lo, n, out = int(seg_start[seg]), int(n_kmers[seg]), int(seg_first[seg])
            ids[out : out + n] = self.kmer_ids[_pack(code[lo : lo + n * k].reshape(n, k))]
            starts[out : out + n] = np.arange(lo, lo + n * k, k)
            ends[out : out + n] = starts[out : out + n] + k
        # k-mers of short segments: one gather over all of them (many segments, few bases).
        seg_of_kmer, j = _expand(np.where(long, 0, n_kmers))
        kmer_start = seg_start[seg_of_kmer] + k * j
        out = seg_first[seg_of_kmer] + j
        ids[out] = self.kmer_ids[_pack(code[kmer_start[:, None] + np.arange(k)])]
        starts[out], ends[out] = kmer_start, kmer_start + k

        seg_of_left, i = _expand(n_left)
        left_start = seg_start[seg_of_left] + k * n_kmers[seg_of_left] + i
        out = seg_first[seg_of_left] + n_kmers[seg_of_left] + i
        ids[out], starts[out], ends[out] = self.single_ids[code[left_start]], left_start, left_start + 1

        out = (seg_first[:-1] + seg_tokens[:-1])[is_n]
        ids[out], starts[out], ends[out] = self.single_ids[_N_CODE], n_pos, n_pos + 1
        return Tokens(ids, starts, ends)


def _pack(bases: np.ndarray) -> np.ndarray:
    """Rows of k base codes (0-3) -> their k-mer numbers, first base most significant."""
    value = bases[:, 0].astype(np.int32)
    for column in range(1, bases.shape[1]):
        value <<= 2
        value |= bases[:, column]
    return value


def _expand(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For counts [2, 0, 3]: owner [0, 0, 2, 2, 2] and rank within owner [0, 1, 0, 1, 2]."""
    owner = np.repeat(np.arange(len(counts)), counts)
    first = np.concatenate(([0], np.cumsum(counts)[:-1]))
    return owner, np.arange(len(owner)) - first[owner]


class CharTokenizer:
    """One token per base, for character vocabularies (HyenaDNA, Caduceus, GPN, character
    ModernBERT): each base looked up in the case the vocabulary uses; an N where the
    vocabulary has none becomes its unknown token, one per N."""

    def __init__(self, hf: Any, max_tokens: int) -> None:
        ids = {base: _single_id(hf, base) for base in "ACGTN"}
        if any(ids[base] is None for base in "ACGT"):
            raise ValueError("not a character vocabulary")
        self.lower = _single_id(hf, "A") != hf("A", add_special_tokens=False)["input_ids"][0]
        self.code_ids = np.array([*(ids[b] for b in "ACGT"), ids["N"] if ids["N"] is not None else _unknown_id(hf)])
        self.name = "char"
        self.bases_per_token = 1.0
        self.prefix, self.suffix = _special_ids(hf)
        self.pad_id = int(hf.pad_token_id if hf.pad_token_id is not None else 0)
        self.max_tokens = max_tokens
        self.frames = 1

    def tokenize(self, sequence: bytes, cuts: np.ndarray | None = None) -> Tokens:
        """One token per base; `cuts` change nothing, as there is no tiling to restart."""
        code = np.frombuffer(sequence.translate(_TO_CODE), dtype=np.uint8)
        if code.size and code.max() > _N_CODE:
            raise ValueError("sequence is not normalised: only A, C, G, T and N are allowed")
        starts = base_positions(len(code))
        return Tokens(self.code_ids[code].astype(np.int32), starts, starts + 1)

    def text(self, sequence: bytes) -> str:
        """The sequence as the HF tokenizer should see it (the vocabulary's case)."""
        text = sequence.decode("ascii")
        return text.lower() if self.lower else text


class HFTokenizer:
    """Any Hugging Face tokenizer (BPE, single characters...), with bp spans from token strings.
    Sequence goes in the vocabulary's case; where the vocabulary has no N, N-free stretches are
    tokenised apart and each N becomes one unknown token."""

    def __init__(self, hf: Any, max_tokens: int) -> None:
        self.hf = hf
        self.name = "hf"
        self.prefix, self.suffix = _special_ids(hf)
        self.pad_id = int(hf.pad_token_id if hf.pad_token_id is not None else 0)
        self.max_tokens = max_tokens
        self.frames = 1
        upper = hf("ACGT", add_special_tokens=False)["input_ids"]
        self.lower = hf.unk_token_id is not None and hf.unk_token_id in upper
        self.n_id = _single_id(hf, "N")
        if self.n_id is None:
            self.n_id = _unknown_id(hf)
            self.split_n = True
        else:
            self.split_n = False
        probe = np.random.default_rng(0).choice(np.frombuffer(b"ACGT", np.uint8), 6000).tobytes()
        self.bases_per_token = len(probe) / max(1, len(self.tokenize(probe)))

    def tokenize(self, sequence: bytes, cuts: np.ndarray | None = None) -> Tokens:
        """Tokens of `sequence`, or with `cuts` of each piece between cuts on its own."""
        bounds = [0, *(int(c) for c in cuts), len(sequence)] if cuts is not None and len(cuts) else []
        if self.split_n and b"N" in sequence:
            n_runs = [m.span() for m in re.finditer(rb"N+", sequence)]
            bounds = sorted({0, len(sequence), *bounds, *(p for span in n_runs for p in span)})
        if bounds:
            pieces = [(lo, self._piece(sequence[lo:hi])) for lo, hi in itertools.pairwise(bounds) if hi > lo]
            return Tokens(
                np.concatenate([t.ids for _, t in pieces]),
                np.concatenate([t.starts + lo for lo, t in pieces]),
                np.concatenate([t.ends + lo for lo, t in pieces]),
            )
        return self._piece(sequence)

    def _piece(self, sequence: bytes) -> Tokens:
        """Tokens of a stretch that is all N (where N is unknown: one token each) or tokenised whole."""
        if self.split_n and sequence[:1] == b"N":
            starts = np.arange(len(sequence), dtype=np.int64)
            return Tokens(np.full(len(sequence), self.n_id, dtype=np.int32), starts, starts + 1)
        text = sequence.decode("ascii")
        ids = self.hf(text.lower() if self.lower else text, add_special_tokens=False, verbose=False)["input_ids"]
        pieces = self.hf.convert_ids_to_tokens(ids)
        lengths = np.array([len(p.lstrip("#").lstrip("Ġ▁")) for p in pieces], dtype=np.int64)
        if int(lengths.sum()) != len(sequence):
            raise ValueError(f"cannot map the tokens of {self.hf.name_or_path} back to bases")
        ends = np.cumsum(lengths)
        return Tokens(np.asarray(ids, dtype=np.int32), ends - lengths, ends)


# A probe with leftovers, N runs of several lengths and every base, checked at load time.
_PROBE = b"ACGTACGTTGCA" + b"N" + b"ACGTA" + b"NNN" + b"GGCATTACGATC" + b"NN" + b"T" + b"ACGTTGCAACGTAC"


def make_tokenizer(hf: Any, max_tokens: int | None = None) -> Tokenizer:
    """A fast exact tokenizer (k-mer or character) when it reproduces `hf` on a probe, else the
    HF one. `max_tokens` is the model's input limit (0: none stated; None: the tokenizer's)."""
    if max_tokens is None:
        stated = getattr(hf, "model_max_length", None) or 0
        max_tokens = int(stated) if 0 < stated < 10_000_000 else 0
    try:
        kmer = KmerTokenizer(hf, max_tokens)
        if kmer.tokenize(_PROBE).ids.tolist() == list(hf(_PROBE.decode(), add_special_tokens=False)["input_ids"]):
            return kmer
    except ValueError:
        pass
    try:
        char = CharTokenizer(hf, max_tokens)
        reference = hf(char.text(_PROBE), add_special_tokens=False)["input_ids"]
        if char.tokenize(_PROBE).ids.tolist() == list(reference):
            return char
    except ValueError:
        pass
    return HFTokenizer(hf, max_tokens)


def window_room(tokenizer: Tokenizer, max_tokens: int | None) -> int:
    """Sequence tokens a window of `max_tokens` model tokens holds (specials take the rest)."""
    limit = tokenizer.max_tokens if max_tokens is None else max_tokens
    if tokenizer.max_tokens and limit > tokenizer.max_tokens:
        raise ValueError(f"chunk size {limit} exceeds the model's maximum of {tokenizer.max_tokens} tokens")
    room = limit - len(tokenizer.prefix) - len(tokenizer.suffix)
    if room < 1:
        raise ValueError(f"chunk size {limit} leaves no room for sequence tokens")
    return room


def chunk_tokens(
    tokens: Tokens, tokenizer: Tokenizer, record: int = 0, max_tokens: int | None = None, overlap: int = 0
) -> list[Chunk]:
    """Cut one record's tokens into windows of at most `max_tokens` model tokens (specials counted).

    Windows start every `max_tokens - specials - overlap` tokens; without overlap they cover each
    base exactly once. Nothing is dropped: the last window ends at the record's last token.
    """
    room = window_room(tokenizer, max_tokens)
    if not 0 <= overlap < room:
        raise ValueError(f"overlap must be between 0 and {room - 1} tokens, got {overlap}")
    prefix = np.asarray(tokenizer.prefix, dtype=tokens.ids.dtype)
    suffix = np.asarray(tokenizer.suffix, dtype=tokens.ids.dtype)
    chunks = []
    step = room - overlap
    lo = 0
    while True:
        hi = min(lo + room, len(tokens))
        chunks.append(
            Chunk(
                record=record,
                start=int(tokens.starts[lo]),
                end=int(tokens.ends[hi - 1]),
                input_ids=np.concatenate((prefix, tokens.ids[lo:hi], suffix)),
            )
        )
        if hi >= len(tokens):
            return chunks
        lo += step


def anchor_radius(tokenizer: Tokenizer, max_tokens: int | None) -> int:
    """Anchor radius for windows of `max_tokens`: a quarter of the bases a full window holds,
    so anchored windows average about half a full window (measured best for fragments)."""
    return max(1, int(window_room(tokenizer, max_tokens) * tokenizer.bases_per_token) // 4)


def anchored_chunks(
    sequence: bytes,
    tokenizer: Tokenizer,
    record: int = 0,
    max_tokens: int | None = None,
    radius: int | None = None,
    cuts: np.ndarray | None = None,
) -> list[Chunk]:
    """Cut one record at its content-defined cut points (`anchors.cut_points`, or `cuts` when the
    caller has them), tokenising each piece from its own first base, and split a piece longer than
    `max_tokens` model tokens into equal parts in token space. A piece shared with another
    sequence therefore gives the same model input in both, whatever the offsets of the two
    sequences. Nothing is dropped."""
    room = window_room(tokenizer, max_tokens)
    if cuts is None:
        cuts = cut_points(sequence, anchor_radius(tokenizer, max_tokens) if radius is None else radius)
    tokens = tokenizer.tokenize(sequence, cuts)
    bounds = np.searchsorted(tokens.starts, np.concatenate(([0], cuts, [len(sequence)])))
    chunks = []
    for lo, hi in itertools.pairwise(bounds.tolist()):
        chunks.extend(_split(tokens, lo, hi, tokenizer, record, room))
    return chunks


def piece_chunks(sequence: bytes, lo: int, hi: int, tokenizer: Tokenizer, record: int, max_tokens: int) -> list[Chunk]:
    """Windows of the piece sequence[lo:hi], tokenised from its first base: one window, or equal
    parts in token space where the piece holds more than `max_tokens` model tokens."""
    tokens = tokenizer.tokenize(sequence[lo:hi])
    shifted = Tokens(tokens.ids, tokens.starts + lo, tokens.ends + lo)
    return _split(shifted, 0, len(tokens), tokenizer, record, window_room(tokenizer, max_tokens))


def _split(tokens: Tokens, lo: int, hi: int, tokenizer: Tokenizer, record: int, room: int) -> list[Chunk]:
    """Tokens lo..hi as one window, or as equal parts when they are more than `room`."""
    prefix = np.asarray(tokenizer.prefix, dtype=tokens.ids.dtype)
    suffix = np.asarray(tokenizer.suffix, dtype=tokens.ids.dtype)
    parts = -(-(hi - lo) // room)
    edges = [lo + (hi - lo) * j // parts for j in range(parts + 1)]
    return [
        Chunk(
            record=record,
            start=int(tokens.starts[a]),
            end=int(tokens.ends[b - 1]),
            input_ids=np.concatenate((prefix, tokens.ids[a:b], suffix)),
        )
        for a, b in itertools.pairwise(edges)
    ]
