"""Stored sequence: 2-bit packing with N runs, the SQL macro, and what the store keeps."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genome_index.api import GenomeIndex
from genome_index.io.fasta import read_genome
from genome_index.io.sequences import fasta_lines, pack, unpack
from genome_index.store.schema import SEQUENCES

sequences = st.text(alphabet="ACGTN", max_size=300).map(str.encode)


@given(sequences, st.data())
@settings(max_examples=150, deadline=None)
def test_unpack_gives_back_every_region_of_what_was_packed(sequence: bytes, data: st.DataObject) -> None:
    stored = pack(sequence)
    assert unpack(stored) == sequence
    start = data.draw(st.integers(0, len(sequence)))
    end = data.draw(st.integers(start, len(sequence)))
    assert unpack(stored, start, end) == sequence[start:end]


@pytest.mark.parametrize(
    "sequence, runs",
    [
        (b"", []),
        (b"N", [(0, 1)]),
        (b"ACGT", []),
        (b"NNACGTNN", [(0, 2), (6, 8)]),
        (b"ACNNNNNGTNA", [(2, 7), (9, 10)]),
    ],
)
def test_n_runs_are_kept_as_start_end_pairs(sequence: bytes, runs: list[tuple[int, int]]) -> None:
    stored = pack(sequence)
    assert list(zip(stored.n_starts.tolist(), stored.n_ends.tolist(), strict=True)) == runs
    assert len(stored.packed) == (len(sequence) + 3) // 4


def test_a_region_outside_the_sequence_is_refused() -> None:
    with pytest.raises(ValueError, match="outside"):
        unpack(pack(b"ACGT"), 2, 5)


@pytest.mark.parametrize("width, expected", [(0, b">r x\nACGTA\n"), (2, b">r x\nAC\nGT\nA\n"), (5, b">r x\nACGTA\n")])
def test_fasta_lines_wrap_at_the_width(width: int, expected: bytes) -> None:
    assert fasta_lines("r x", b"ACGTA", width) == expected


@given(sequences, st.data())
@settings(max_examples=60, deadline=None)
@pytest.mark.slow
def test_the_sql_macro_reads_what_python_unpacks(sequence: bytes, data: st.DataObject) -> None:
    con = duckdb.connect()
    con.execute(SEQUENCES)
    stored = pack(sequence)
    con.execute(
        "INSERT INTO sequences VALUES (1, 1, ?, 0, ?, ?, ?)",
        [stored.length, stored.packed, stored.n_starts.tolist(), stored.n_ends.tolist()],
    )
    start = data.draw(st.integers(0, len(sequence)))
    end = data.draw(st.integers(start, len(sequence) + 5))  # past the end: cut at the end, as substr does
    assert con.execute("SELECT subsequence(1, ?, ?)", [start, end]).fetchall()[0][0] == sequence[start:end].decode()


@pytest.fixture(scope="module")
def kmer_store(tmp_path_factory, example_genomes) -> Path:
    directory = tmp_path_factory.mktemp("sequences") / "index"
    GenomeIndex(directory).build(example_genomes, "kmer:4")
    return directory


def test_every_record_is_stored_at_about_a_quarter_byte_a_base(kmer_store: Path, example_genomes) -> None:
    index = GenomeIndex.open(kmer_store)
    _, rows = index.sql("SELECT sum(octet_length(packed)), sum(length), count(*) FROM sequences")
    packed, bases, records = rows[0]
    assert bases == sum(read_genome(f).length for f in example_genomes)
    assert records == sum(len(read_genome(f).records) for f in example_genomes)
    assert packed / bases <= 0.2501


def test_a_chunks_sequence_is_one_sql_call_away(kmer_store: Path, example_genomes) -> None:
    index = GenomeIndex.open(kmer_store)
    _, rows = index.sql(
        'SELECT g.file, r.idx, c.start, c."end", subsequence(c.record_id, c.start, c."end") FROM chunks c '
        "JOIN records r ON r.id = c.record_id JOIN genomes g ON g.id = c.genome_id ORDER BY c.id LIMIT 40"
    )
    genomes = {f: read_genome(f) for f in {row[0] for row in rows}}
    for file, record, start, end, sequence in rows:
        assert sequence.encode() == genomes[file].records[record].sequence[start:end]
