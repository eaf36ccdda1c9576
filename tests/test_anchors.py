"""Anchored windows: cut points follow the sequence, so shared sequence is cut the same way."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from genome_index.embedding.anchors import ANCHOR_K, cut_points, kmer_hashes, sliding_min
from genome_index.embedding.backends.kmer import BaseTokenizer
from genome_index.embedding.tokenize import anchor_radius, anchored_chunks
from genome_index.io.fasta import reverse_complement


def random_dna(length: int, seed: int = 3) -> bytes:
    return np.random.default_rng(seed).choice(np.frombuffer(b"ACGT", np.uint8), length).tobytes()


def brute_force_cuts(sequence: bytes, radius: int) -> list[int]:
    """The definition, one k-mer at a time: a strict minimum of its whole neighbourhood."""
    hashes = [int(h) for h in kmer_hashes(sequence)]
    cuts = []
    for p in range(radius, len(hashes) - radius):
        others = hashes[p - radius : p] + hashes[p + 1 : p + radius + 1]
        if "N" not in sequence[p : p + ANCHOR_K].decode() and all(hashes[p] < h for h in others):
            cuts.append(p + ANCHOR_K // 2)
    return cuts


@pytest.mark.parametrize("radius", [1, 2, 5, 8, 33])
def test_cuts_match_the_definition(radius: int) -> None:
    sequence = random_dna(3000, seed=radius) + b"NNNN" + random_dna(500, seed=99)
    assert cut_points(sequence, radius).tolist() == brute_force_cuts(sequence, radius)


def reference_hash(kmer: bytes) -> int:
    """One k-mer at a time: pack both strands 2 bits a base, keep the smaller, mix as anchors does."""
    if b"N" in kmer:
        return 2**64 - 1
    forward = int("".join("ACGT".index(chr(b)).__format__("02b") for b in kmer), 2)
    reverse = int("".join("ACGT".index(chr(b)).__format__("02b") for b in reverse_complement(kmer)), 2)
    value, mask, mix = min(forward, reverse), 2**64 - 1, 0x9E3779B97F4A7C15
    value = (value * mix) & mask
    value ^= value >> 29
    value = (value * mix) & mask
    return value ^ (value >> 32)


@pytest.mark.parametrize("k", [1, 2, 5, 16, 21, 31, 32])
def test_kmer_hashes_equal_a_kmer_by_kmer_reference(k: int) -> None:
    sequence = random_dna(300, seed=k) + b"N" + random_dna(40, seed=k + 1)
    expected = [reference_hash(sequence[i : i + k]) for i in range(len(sequence) - k + 1)]
    assert kmer_hashes(sequence, k).tolist() == expected
    assert kmer_hashes(sequence[: k - 1], k).tolist() == []


def test_a_canonical_kmer_has_the_hash_of_its_reverse_complement() -> None:
    sequence = random_dna(200)
    forward, reverse = kmer_hashes(sequence), kmer_hashes(reverse_complement(sequence))
    assert forward.tolist() == reverse[::-1].tolist()


@pytest.mark.parametrize("radius", [50, 301, 1500])
def test_cuts_are_mirrored_on_the_reverse_strand(radius: int) -> None:
    sequence = random_dna(60_000)
    forward = cut_points(sequence, radius)
    reverse = cut_points(reverse_complement(sequence), radius)
    assert len(forward) > 0
    assert sorted((len(sequence) - reverse).tolist()) == forward.tolist()


def test_a_fragment_cuts_exactly_where_its_genome_cuts() -> None:
    radius, genome = 300, random_dna(80_000)
    cuts = cut_points(genome, radius)
    for start, end in [(0, 80_000), (1234, 30_000), (40_001, 79_999), (5, 6000)]:
        fragment = cut_points(genome[start:end], radius) + start
        # A genome cut is checkable inside the fragment when its k-mer's neighbourhood lies inside.
        half = ANCHOR_K // 2
        visible = [c for c in cuts if c - half - radius >= start and c - half + radius + ANCHOR_K <= end]
        assert fragment.tolist() == visible


def test_a_substitution_moves_only_nearby_cuts() -> None:
    radius, genome = 200, bytearray(random_dna(40_000))
    before = cut_points(bytes(genome), radius)
    genome[20_000] = ord("A") if genome[20_000] != ord("A") else ord("C")
    after = cut_points(bytes(genome), radius)
    far = radius + ANCHOR_K + 1
    assert [c for c in before if abs(c - 20_000) > far] == [c for c in after if abs(c - 20_000) > far]


def test_cut_spacing_and_ends() -> None:
    radius, sequence = 500, random_dna(400_000)
    cuts = cut_points(sequence, radius)
    gaps = np.diff(cuts)
    assert gaps.min() > radius
    assert 0.8 * (2 * radius + 1) < gaps.mean() < 1.2 * (2 * radius + 1)
    assert cuts[0] >= radius + ANCHOR_K // 2 and cuts[-1] <= len(sequence) - radius - ANCHOR_K // 2


@pytest.mark.parametrize(
    "sequence",
    [b"", b"ACGT", b"N" * 5000, b"A" * 5000, random_dna(600)],
    ids=["empty", "shorter than a k-mer", "all N", "one repeated k-mer", "shorter than a neighbourhood"],
)
def test_no_cut_where_nothing_can_anchor(sequence: bytes) -> None:
    assert cut_points(sequence, 300).tolist() == []


def test_kmers_with_n_never_anchor() -> None:
    sequence = b"".join(random_dna(700, seed=s) + b"N" * (s % 5 + 1) for s in range(40))
    for cut in cut_points(sequence, 20):
        assert b"N" not in sequence[cut - ANCHOR_K // 2 : cut + ANCHOR_K // 2]


def test_radius_must_be_positive() -> None:
    with pytest.raises(ValueError, match="radius"):
        cut_points(random_dna(100), 0)


N_RICH = b"".join(random_dna(900, seed=s) + b"N" * (s % 7 + 1) for s in range(30))


@pytest.mark.parametrize(
    "sequence", [random_dna(50_000), N_RICH, random_dna(7), b"N" * 3000], ids=["random", "N-rich", "7 bp", "all N"]
)
@pytest.mark.parametrize("max_tokens", [1000, 120])
@pytest.mark.slow
def test_anchored_windows_cover_every_base_once_with_the_tokenizers_own_ids(
    hf_tokenizer, tokenizer, sequence: bytes, max_tokens: int
) -> None:
    chunks = anchored_chunks(sequence, tokenizer, 0, max_tokens)
    assert chunks[0].start == 0 and chunks[-1].end == len(sequence)
    assert all(a.end == b.start for a, b in itertools.pairwise(chunks))
    for chunk in chunks:
        assert chunk.n_tokens <= max_tokens
        piece = sequence[chunk.start : chunk.end].decode()
        assert chunk.input_ids.tolist() == hf_tokenizer(piece)["input_ids"]  # <cls> + the piece's own tokens


def test_a_fragments_inner_windows_are_the_genomes_windows(tokenizer) -> None:
    genome = random_dna(120_000)
    stored = {(c.start, c.end): c.input_ids.tolist() for c in anchored_chunks(genome, tokenizer)}
    start, end = 31_337, 71_000
    fragment = anchored_chunks(genome[start:end], tokenizer)
    cuts = cut_points(genome[start:end], anchor_radius(tokenizer, 1000))
    inner = [c for c in fragment if c.start >= cuts[0] and c.end <= cuts[-1]]
    assert len(inner) >= 3
    for chunk in inner:
        assert stored[(chunk.start + start, chunk.end + start)] == chunk.input_ids.tolist()


def test_radius_is_a_quarter_of_a_full_window(tokenizer) -> None:
    assert anchor_radius(tokenizer, 1000) == 999 * 6 // 4
    assert anchor_radius(BaseTokenizer(), 6000) == 1500


@pytest.mark.parametrize("width", [1, 2, 3, 7, 8, 9, 100])
def test_sliding_min_is_exact_for_64_bit_values(width: int) -> None:
    values = np.random.default_rng(width).integers(0, 2**64 - 1, 300, dtype=np.uint64, endpoint=True)
    values[::17] = 2**64 - 1
    values[5] = 2**63 + 1
    values[6] = 2**63 + 2
    expected = [values[i : i + width].min() for i in range(len(values) - width + 1)]
    assert sliding_min(values, width).tolist() == [int(v) for v in expected]


def test_long_records_are_cut_in_passes_with_the_same_cuts(monkeypatch) -> None:
    from genome_index.embedding import anchors

    sequence = bytes(
        np.random.default_rng(11).choice(np.frombuffer(b"ACGTN", np.uint8), 60_000, p=[0.249] * 4 + [0.004])
    )
    whole = anchors.cut_points(sequence, 150)
    monkeypatch.setattr(anchors, "CUT_BLOCK", 700)  # passes far shorter than the record
    assert np.array_equal(anchors.cut_points(sequence, 150), whole) and len(whole) > 100


def test_a_querys_reverse_strand_view_is_its_reverse_complement_cut_on_its_own() -> None:
    """The reverse strand's cuts are the forward ones mirrored (ANCHOR_K is even), not worked
    out again: its windows equal those of the reverse complement queried as given, two records
    and an N run included."""
    from genome_index.embedding.embedder import Embedder
    from genome_index.io.fasta import Record
    from genome_index.search.views import Query, anchored_views
    from genome_index.settings import RunOptions

    rng = np.random.default_rng(5)
    sequences = [rng.choice(np.frombuffer(b"ACGT", np.uint8), n).tobytes() for n in (30_000, 7_000)]
    sequences[0] = sequences[0][:12_000] + b"N" * 40 + sequences[0][12_040:]
    embedder = Embedder("kmer:6", RunOptions(device="cpu"))
    assert embedder.chunker.chunking == "anchored"
    given = Query("q", [Record(f"r{i}", f"r{i}", s) for i, s in enumerate(sequences)])
    turned = Query("q", [Record(f"r{i}", f"r{i}", reverse_complement(s)) for i, s in enumerate(sequences)])
    reverse_view, as_given = anchored_views(embedder, given, False)[1], anchored_views(embedder, turned, False)[0]
    assert len(reverse_view) > 10
    assert [(c.record, c.start, c.end, c.input_ids.tolist()) for c in reverse_view] == [
        (c.record, c.start, c.end, c.input_ids.tolist()) for c in as_given
    ]
