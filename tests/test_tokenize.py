"""The fast k-mer tokenizer gives exactly the HF tokenizer's ids; chunking covers every base once."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from genome_index.embedding.backends.checkpoints import BUNDLED
from genome_index.embedding.tokenize import CharTokenizer, HFTokenizer, KmerTokenizer, chunk_tokens, make_tokenizer
from genome_index.io.fasta import read_genome


def hf_ids(hf, sequence: bytes) -> list[int]:
    return hf(sequence.decode(), add_special_tokens=False)["input_ids"]


def random_sequences(count: int, seed: int = 7) -> list[bytes]:
    """Sequences built from runs: bases and N runs of every length 1-13, lengths 0-13 and longer."""
    rng = np.random.default_rng(seed)
    out = [b"", b"N", b"N" * 13, b"A" * 6, b"ACGTA"]
    while len(out) < count:
        parts = []
        for _ in range(rng.integers(1, 8)):
            if rng.random() < 0.4:
                parts.append(b"N" * int(rng.integers(1, 14)))
            else:
                length = int(rng.integers(0, 14) if rng.random() < 0.7 else rng.integers(14, 3000))
                parts.append(rng.choice(np.frombuffer(b"ACGT", np.uint8), length).tobytes())
        out.append(b"".join(parts))
    return out


def test_nt_tiny_gets_the_fast_tokenizer(tokenizer) -> None:
    assert isinstance(tokenizer, KmerTokenizer)
    assert tokenizer.k == 6
    assert tokenizer.max_tokens == 1000
    assert tokenizer.suffix == []


@pytest.mark.slow
def test_thousands_of_random_sequences_match_hf(hf_tokenizer, tokenizer) -> None:
    for sequence in random_sequences(3000):
        tokens = tokenizer.tokenize(sequence)
        assert tokens.ids.tolist() == hf_ids(hf_tokenizer, sequence), sequence


def test_every_length_0_to_13_all_n_and_all_bases(hf_tokenizer, tokenizer) -> None:
    for length in range(14):
        for sequence in (b"N" * length, b"A" * length, (b"ACGTT" * 3)[:length], (b"ACN" * 5)[:length]):
            assert tokenizer.tokenize(sequence).ids.tolist() == hf_ids(hf_tokenizer, sequence)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="ACGTN", max_size=200))
def test_property_ids_and_spans_match_hf(hf_tokenizer, tokenizer, text: str) -> None:
    sequence = text.encode()
    tokens = tokenizer.tokenize(sequence)
    assert tokens.ids.tolist() == hf_ids(hf_tokenizer, sequence)
    pieces = hf_tokenizer.convert_ids_to_tokens(tokens.ids.tolist())
    assert [sequence[s:e].decode() for s, e in zip(tokens.starts, tokens.ends, strict=True)] == pieces


def test_real_genome_matches_hf(hf_tokenizer, tokenizer, example_genomes) -> None:
    record = read_genome(example_genomes[0]).records[0]
    sequence = record.sequence[:60_000]
    assert tokenizer.tokenize(sequence).ids.tolist() == hf_ids(hf_tokenizer, sequence)


def test_tables_come_from_the_vocabulary_not_hard_coded(tmp_path: Path, hf_tokenizer) -> None:
    """Shuffle the k-mer lines of vocab.txt: the fast tokenizer must follow the new ids."""
    folder = tmp_path / "shuffled"
    shutil.copytree(BUNDLED["nt-tiny"], folder)
    lines = (folder / "vocab.txt").read_text().splitlines()
    kmers = lines[6:4102]
    np.random.default_rng(1).shuffle(kmers)
    (folder / "vocab.txt").write_text("\n".join(lines[:6] + kmers + lines[4102:]) + "\n")
    shuffled = AutoTokenizer.from_pretrained(folder)
    fast = make_tokenizer(shuffled)
    assert isinstance(fast, KmerTokenizer)
    for sequence in random_sequences(200, seed=3):
        assert fast.tokenize(sequence).ids.tolist() == hf_ids(shuffled, sequence)
    assert fast.tokenize(b"ACGTAC").ids.tolist() != make_tokenizer(hf_tokenizer).tokenize(b"ACGTAC").ids.tolist()


def test_single_character_vocabulary_gets_the_character_tokenizer(tmp_path: Path) -> None:
    folder = tmp_path / "chars"
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(["<unk>", "<pad>", "<mask>", "<cls>", "<eos>", *"ACGTN"]))
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "EsmTokenizer", "model_max_length": 64, "eos_token": "<eos>"})
    )
    hf = AutoTokenizer.from_pretrained(folder)
    tokenizer = make_tokenizer(hf)
    assert isinstance(tokenizer, CharTokenizer)
    assert tokenizer.suffix == [hf.eos_token_id]
    rng = np.random.default_rng(5)
    for _ in range(200):
        sequence = bytes(rng.choice(np.frombuffer(b"ACGTN", np.uint8), rng.integers(1, 300)))
        assert tokenizer.tokenize(sequence).ids.tolist() == hf_ids(hf, sequence)
    tokens = tokenizer.tokenize(b"ACGNNT")
    assert tokens.ids.tolist() == hf_ids(hf, b"ACGNNT")
    assert tokens.starts.tolist() == [0, 1, 2, 3, 4, 5]
    chunks = chunk_tokens(tokens, tokenizer, max_tokens=4)
    assert [c.input_ids[-1] for c in chunks] == [hf.eos_token_id] * 3


def test_rejects_unnormalised_sequence(tokenizer) -> None:
    with pytest.raises(ValueError, match="not normalised"):
        tokenizer.tokenize(b"ACGTR")


def covered(chunks, length: int) -> np.ndarray:
    counts = np.zeros(length, dtype=int)
    for chunk in chunks:
        counts[chunk.start : chunk.end] += 1
    return counts


@pytest.mark.parametrize("max_tokens", [2, 7, 100, 1000])
def test_chunks_cover_every_base_once_even_full_of_n(tokenizer, max_tokens: int) -> None:
    for sequence in random_sequences(150, seed=max_tokens):
        if not sequence:
            continue
        chunks = chunk_tokens(tokenizer.tokenize(sequence), tokenizer, 0, max_tokens)
        assert (covered(chunks, len(sequence)) == 1).all()
        assert all(c.n_tokens <= max_tokens for c in chunks)
        assert all(c.input_ids[0] == tokenizer.prefix[0] for c in chunks)


def test_chunk_tokens_equal_hf_on_the_chunk_sequence(hf_tokenizer, tokenizer) -> None:
    """Each chunk is exactly what the HF tokenizer makes of its bp span: nothing shifted or lost."""
    for sequence in random_sequences(100, seed=11):
        if not sequence:
            continue
        for chunk in chunk_tokens(tokenizer.tokenize(sequence), tokenizer, 0, 50):
            span = sequence[chunk.start : chunk.end].decode()
            assert chunk.input_ids.tolist() == hf_tokenizer(span)["input_ids"]


def test_overlapping_chunks(tokenizer) -> None:
    sequence = b"ACGTAC" * 500 + b"NNN" + b"GATTACA" * 100
    tokens = tokenizer.tokenize(sequence)
    chunks = chunk_tokens(tokens, tokenizer, 0, 101, overlap=20)
    assert chunks[0].start == 0 and chunks[-1].end == len(sequence)
    for a, b in itertools.pairwise(chunks):
        assert b.start < a.end  # consecutive windows share sequence
    assert (covered(chunks, len(sequence)) >= 1).all()


@pytest.mark.parametrize(
    ("max_tokens", "overlap", "message"), [(1, 0, "no room"), (1001, 0, "exceeds"), (10, 9, "overlap")]
)
def test_bad_chunk_settings(tokenizer, max_tokens: int, overlap: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        chunk_tokens(tokenizer.tokenize(b"ACGTACGT"), tokenizer, 0, max_tokens, overlap)


def test_real_genomes_chunked_without_loss(tokenizer, staph_dir: Path) -> None:
    for path in sorted(staph_dir.glob("GCA_*.fna.gz"))[:2]:
        genome = read_genome(path)
        for index, record in enumerate(genome.records):
            chunks = chunk_tokens(tokenizer.tokenize(record.sequence), tokenizer, index)
            assert (covered(chunks, len(record.sequence)) == 1).all()
            assert {c.record for c in chunks} == {index}


def tokenize_piece_by_piece(tokenizer, sequence: bytes, cuts: list[int]) -> tuple[list, list, list]:
    """The obvious reference: tokenise each piece between cuts on its own and shift its spans."""
    ids, starts, ends = [], [], []
    bounds = [0, *cuts, len(sequence)]
    for lo, hi in itertools.pairwise(bounds):
        tokens = tokenizer.tokenize(sequence[lo:hi])
        ids += tokens.ids.tolist()
        starts += (tokens.starts + lo).tolist()
        ends += (tokens.ends + lo).tolist()
    return ids, starts, ends


@pytest.mark.parametrize("fast", [True, False], ids=["kmer tokenizer", "HF tokenizer"])
@pytest.mark.slow
def test_cuts_restart_the_tiling_like_separate_pieces(hf_tokenizer, tokenizer, fast: bool) -> None:
    chosen = tokenizer if fast else HFTokenizer(hf_tokenizer, 1000)
    rng = np.random.default_rng(17)
    for sequence in random_sequences(300, seed=17):
        if len(sequence) < 2:
            continue
        cuts = sorted(set(rng.integers(1, len(sequence), int(rng.integers(1, 6))).tolist()))
        if sequence.find(b"N") > 0:  # a cut on an N and one right after it
            cuts = sorted({*cuts, sequence.find(b"N"), min(sequence.find(b"N") + 1, len(sequence) - 1)})
        tokens = chosen.tokenize(sequence, np.array(cuts))
        assert (tokens.ids.tolist(), tokens.starts.tolist(), tokens.ends.tolist()) == tokenize_piece_by_piece(
            chosen, sequence, cuts
        ), (sequence, cuts)
