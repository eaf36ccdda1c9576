"""Verified hits: minimap2 alignments say where a query sits in a genome and at what identity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from genome_index.api import GenomeIndex
from genome_index.io.fasta import Record, read_genome, reverse_complement
from genome_index.search.align import (
    LONG_GAP_BP,
    REGION_FLANK_BP,
    SHORT_PRESET,
    Aligners,
    align,
    preset_for,
    regions,
)
from genome_index.settings import QueryOptions

BASES = np.frombuffer(b"ACGT", dtype=np.uint8)


def random_sequence(rng: np.random.Generator, length: int) -> bytes:
    return BASES[rng.integers(0, 4, length)].tobytes()


def mutate(rng: np.random.Generator, sequence: bytes, rate: float) -> tuple[bytes, int]:
    """The sequence with substitutions at `rate`, and how many were made."""
    out = np.frombuffer(sequence, dtype=np.uint8).copy()
    where = np.flatnonzero(rng.random(len(out)) < rate)
    out[where] = BASES[(np.searchsorted(BASES, out[where]) + rng.integers(1, 4, len(where))) % 4]
    return out.tobytes(), len(where)


@pytest.fixture(scope="module")
def genomes() -> dict[int, list[tuple[str, bytes]]]:
    """Two unrelated random genomes of two records each."""
    rng = np.random.default_rng(3)
    return {gid: [(f"g{gid}_chr", random_sequence(rng, 60_000)), (f"g{gid}_plasmid", random_sequence(rng, 8_000))]
            for gid in (1, 2)}  # fmt: skip


def targets_of(genomes: dict[int, list[tuple[str, bytes]]]) -> dict:
    return {gid: (lambda records=records: records) for gid, records in genomes.items()}


@pytest.mark.parametrize("length", [300, 2_000, 10_000])
@pytest.mark.parametrize("strand", ["+", "-"])
def test_a_fragment_is_placed_where_it_came_from_at_its_identity(genomes, length: int, strand: str) -> None:
    rng = np.random.default_rng(length)
    start = 12_345
    source = genomes[1][0][1][start : start + length]
    piece, changed = mutate(rng, source, 0.01)
    piece = piece if strand == "+" else reverse_complement(piece)
    found = align([Record("q", "q", piece)], targets_of(genomes), Aligners())
    hit = found[1]
    assert found[2].alignments == [] and found[2].query_coverage == 0.0
    best = hit.best
    assert (best.target_record, best.strand) == ("g1_chr", strand)
    assert best.target_start < start + length and best.target_end > start  # overlaps the true region
    assert abs(best.target_start - start) <= 5 and abs(best.target_end - (start + length)) <= 5
    assert hit.query_coverage >= 0.98
    assert hit.identity == pytest.approx(1 - changed / length, abs=0.005)


def test_the_preset_follows_the_query_length() -> None:
    assert preset_for(999) == SHORT_PRESET and preset_for(1_000) != SHORT_PRESET


def test_a_long_indel_splits_the_alignment_instead_of_lowering_the_identity(genomes) -> None:
    """A 2 kb insertion in the genome: two aligned sides at full identity, as BLAST would report."""
    chromosome = genomes[1][0][1]
    insert = random_sequence(np.random.default_rng(9), 2_000)
    target = {7: lambda: [("with_insert", chromosome[:30_000] + insert + chromosome[30_000:])]}
    query = Record("q", "q", chromosome[25_000:35_000])
    found = align([query], target, Aligners())[7]
    assert found.identity == pytest.approx(1.0) and found.query_coverage == pytest.approx(1.0, abs=0.01)
    columns = sum(a.columns for a in found.alignments)
    assert columns < 10_000 + LONG_GAP_BP  # the 2 kb gap is in no column


def test_a_query_of_several_records_counts_each_base_once(genomes) -> None:
    chromosome, plasmid = genomes[2][0][1], genomes[2][1][1]
    query = [Record("a", "a", chromosome[:5_000]), Record("b", "b", plasmid[1_000:4_000]), Record("c", "c", b"A" * 200)]
    found = align(query, targets_of(genomes), Aligners())[2]
    assert found.aligned_bp == pytest.approx(8_000, abs=20) and found.query_coverage == pytest.approx(
        8_000 / 8_200, abs=0.01
    )
    assert {a.query_record for a in found.alignments} == {"a", "b"}


def test_indexes_are_built_once_and_kept(genomes) -> None:
    reads: list[int] = []

    def target(gid: int):
        def read():
            reads.append(gid)
            return genomes[gid]

        return read

    aligners = Aligners(capacity=1)
    query = [Record("q", "q", genomes[1][0][1][:3_000])]
    for _ in range(3):
        align(query, {1: target(1)}, aligners)
    assert reads == [1] and len(aligners) == 1
    align(query, {2: target(2)}, aligners)
    align(query, {1: target(1)}, aligners)
    assert reads == [1, 2, 1]  # capacity 1: genome 1 was dropped for genome 2


REACH = 1_000 + REGION_FLANK_BP  # how far a region reaches past a matched window for a 1 kb query


@pytest.mark.parametrize(
    ("windows", "expected"),
    [
        ([(0, 50_000, 53_000)], [(0, 50_000 - REACH, 53_000 + REACH)]),
        ([(0, 500, 3_500)], [(0, 0, 3_500 + REACH)]),  # clipped at the record's start
        ([(1, 6_000, 8_000)], [(1, 6_000 - REACH, 8_000)]),  # ... and at its end
        ([(0, 50_000, 53_000), (0, 53_000, 56_000)], [(0, 50_000 - REACH, 56_000 + REACH)]),  # neighbours merge
        ([(0, 50_000, 53_000), (0, 90_000, 93_000), (1, 1_000, 2_000)],  # apart, and on another record
         [(0, 50_000 - REACH, 53_000 + REACH), (0, 90_000 - REACH, 93_000 + REACH), (1, 0, 2_000 + REACH)]),
        ([(0, 90_000, 93_000), (0, 50_000, 53_000)],  # in any order
         [(0, 50_000 - REACH, 53_000 + REACH), (0, 90_000 - REACH, 93_000 + REACH)]),
        ([(0, 10_000, 13_000), (0, 40_000, 43_000), (0, 70_000, 73_000)],  # 21 kb of 108 kb: under REGION_SHARE
         [(0, 8_000, 15_000), (0, 38_000, 45_000), (0, 68_000, 75_000)]),
        ([(0, 10_000, 13_000), (0, 40_000, 43_000), (0, 70_000, 73_000), (0, 90_000, 93_000)], None),  # 28 kb: over
        ([], None),
    ],
)  # fmt: skip
def test_regions_widen_each_matched_window_by_the_query_and_merge(windows, expected) -> None:
    """A genome of a 100 kb record and an 8 kb one; a 1 kb query."""
    assert regions(windows, 1_000, [100_000, 8_000]) == expected


@pytest.fixture(scope="module")
def large_genome() -> list[tuple[str, bytes]]:
    """A 300 kb chromosome with a repeat (a 3 kb stretch copied 150 kb on) and a 9 kb plasmid."""
    rng = np.random.default_rng(5)
    chromosome = bytearray(random_sequence(rng, 300_000))
    chromosome[200_000:203_000] = chromosome[50_000:53_000]
    return [("chr", bytes(chromosome)), ("plasmid", random_sequence(rng, 9_000))]


@pytest.mark.parametrize("strand", ["+", "-"])
@pytest.mark.parametrize(("record", "start", "length"), [
    (0, 12_345, 2_000), (0, 0, 10_000), (0, 290_000, 10_000), (0, 49_000, 5_000),  # at the ends; across the repeat
    (1, 7_000, 1_000), (1, 500, 600), (1, 0, 9_000),  # the plasmid: a 600 bp query takes the short-read preset
])  # fmt: skip
def test_aligning_to_the_pieces_around_the_query_equals_aligning_to_the_whole_genome(
    large_genome, record: int, start: int, length: int, strand: str
) -> None:
    """The pieces `regions` cuts around a window the query matched hold every alignment: the same
    alignments, on the records' own coordinates, as from the whole genome's index, which is not built."""
    rng = np.random.default_rng(start + length)
    name, sequence = large_genome[record]
    piece, _ = mutate(rng, sequence[start : start + length], 0.01)
    query = [Record("q", "q", piece if strand == "+" else reverse_complement(piece))]
    window = (record, start + length // 3, start + length // 3 + 100)  # a matched window inside the source
    stretches = regions([window], length, [len(s) for _, s in large_genome])
    cut = [(large_genome[r][0], lo, large_genome[r][1][lo:hi]) for r, lo, hi in stretches]
    aligners = Aligners(capacity=0)  # it keeps no index (a one-shot query's), so pieces are cut
    pieces = align(query, {1: lambda: pytest.fail("the whole genome was read")}, aligners, {1: lambda: cut})[1]
    whole = align(query, {1: lambda: large_genome}, Aligners())[1]
    assert pieces.alignments == whole.alignments and pieces.best.target_record == name
    assert pieces.query_coverage > 0.95
    assert len(aligners) == 0  # an index of pieces is the query's own: nothing is kept


def test_a_kept_index_is_aligned_to_rather_than_pieces(large_genome) -> None:
    """Where the genome's whole index is kept (`Searcher.warm`, or an earlier long query), a
    fragment uses it: mapping to a kept index costs less than indexing pieces."""
    query = [Record("q", "q", large_genome[0][1][100_000:110_000])]
    aligners = Aligners()
    aligners.get(1, preset_for(10_000), lambda: large_genome)
    found = align(query, {1: lambda: large_genome}, aligners, {1: lambda: pytest.fail("pieces were cut")})[1]
    assert found.best.target_start == 100_000 and aligners.holds(1, preset_for(10_000))


def test_aligners_with_room_keep_whole_indexes_rather_than_cut_pieces(genomes) -> None:
    """Aligners that may keep one more index build the genome's whole index and keep it (a
    resident searcher's first queries pay once, later ones map to it); where the pieces would be
    most of the genome (`regions` gave None), or none were given, the whole index too."""
    query = [Record("q", "q", genomes[1][0][1][1_000:4_000])]
    aligners = Aligners(capacity=1)
    found = align(query, {1: lambda: genomes[1]}, aligners, {1: lambda: pytest.fail("pieces were cut")})[1]
    assert found.best.target_start == 1_000 and aligners.genomes() == {1}
    full = Aligners(capacity=0)
    found = align(query, targets_of(genomes), full, {1: lambda: None})
    assert found[1].best.target_start == 1_000 and found[2].alignments == []


@pytest.mark.slow
def test_a_query_fills_the_aligners_it_is_given(nt_tiny_store: Path) -> None:
    from tests.helpers import EXAMPLES

    aligners = Aligners()
    GenomeIndex.open(nt_tiny_store).query(EXAMPLES / "query.fa", QueryOptions(k=2), aligners=aligners)
    assert len(aligners) == 4  # all 4 candidates, kept: an empty Aligners is falsy and must still be used


@pytest.fixture(scope="module")
def staph_store(staph_dir: Path, tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    files = {p.name.split("_genomic")[0]: p for p in sorted(staph_dir.glob("GCA_*.fna.gz"))}
    directory = tmp_path_factory.mktemp("staph-align") / "index"
    GenomeIndex(directory).build(list(files.values()), "kmer:4")
    return directory, files


@pytest.mark.parametrize(
    "query, other",
    [
        ("GCA_900607265.1_BPH2003", "GCA_900620245.1_BPH2947"),  # twins, ANI >= 99.99 %
        ("GCA_006094915.1_ASM609491v1", "GCA_900620245.1_BPH2947"),  # two strains, about 99.4 %
    ],
)
@pytest.mark.slow
def test_a_whole_genome_query_reports_an_ani_by_alignment_close_to_skani(staph_store, query: str, other: str) -> None:
    import pyskani

    directory, files = staph_store
    rows = GenomeIndex.open(directory).query(files[query], QueryOptions(k=4, mode="genome", align=True))
    assert rows[0].name.startswith(query) and rows[0].identity == 1.0 and rows[0].query_coverage >= 0.999
    ours = next(row for row in rows if row.name.startswith(other))
    database = pyskani.Database()
    database.sketch(other, *[r.sequence for r in read_genome(files[other]).records])
    skani = database.query(query, *[r.sequence for r in read_genome(files[query]).records])[0]
    assert abs(ours.identity - skani.identity) <= 0.005, (ours.identity, skani.identity)
    assert abs(ours.query_coverage - skani.query_fraction) <= 0.05, (ours.query_coverage, skani.query_fraction)


@pytest.mark.parametrize("strand", ["+", "-"])
def test_of_two_near_identical_hosts_the_one_with_fewer_differences_wins(tmp_path: Path, strand: str) -> None:
    """A plasmid two hosts carry almost identically: the fragment's own host differs from it at
    its 1 % substitutions, the other host at 4 more positions inside the fragment, and its copy
    ends 200 bp before the fragment does (alignments of different lengths). The hosts are ranked
    by query bases explained less edits, so the source wins untied, by exactly what tells them
    apart."""
    rng = np.random.default_rng(11)
    plasmid = random_sequence(rng, 30_000)
    changed = bytearray(plasmid)
    for position in (12_000, 13_500, 15_000, 16_500):
        changed[position] = b"ACGT"[(b"ACGT".index(changed[position]) + 1) % 4]
    other_copy = bytes(changed[:19_800]) + random_sequence(rng, 10_200)  # its copy ends inside the fragment
    fragment, substitutions = mutate(rng, plasmid[10_000:20_000], 0.01)
    query = fragment if strand == "+" else reverse_complement(fragment)
    files = {}
    for name, records in (("source", [("chr", random_sequence(rng, 50_000)), ("p", plasmid)]),
                          ("other", [("chr", random_sequence(rng, 50_000)), ("p", other_copy)])):  # fmt: skip
        files[name] = tmp_path / f"{name}.fa"
        files[name].write_bytes(b"".join(b">%s\n%s\n" % (n.encode(), s) for n, s in records))
    index = GenomeIndex(tmp_path / "index")
    index.build(list(files.values()), "kmer:4")
    (tmp_path / "q.fa").write_bytes(b">q\n" + query + b"\n")
    first, second = index.query(tmp_path / "q.fa", QueryOptions(k=2))
    assert (first.name, first.rank, first.tied, second.name, second.rank) == ("source", 1, False, "other", 2)
    assert first.ranked_by == "explained_bp" and first.explained_bp == 10_000 - substitutions
    assert second.explained_bp < first.explained_bp - 4  # 4 differences and 200 bases it does not hold
