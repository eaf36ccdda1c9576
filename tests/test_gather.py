"""`gather`: which stored genomes a sample holds and how much of each (search/gather.py), through
the library, the command line and HTTP; the greedy cover and the sharing of ambiguous reads
against their obvious references."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from genome_index.api import GenomeIndex
from genome_index.cli import app
from genome_index.io.fasta import read_genome
from genome_index.search.align import LONG_PRESET, SHORT_PRESET
from genome_index.search.gather import LONG_READ_PRESET, Mapped, Verified, greedy_cover, share_ambiguous
from genome_index.search.sketch import SketchIndex
from genome_index.settings import GatherOptions
from tests.helpers import EXAMPLES, copy_store, make_old, simulate_reads, write_fasta, write_fastq

runner = CliRunner()
MAIN, MINOR = "ATCC12600", "BPH2947"  # 3,000 and 1,000 reads below: abundances 0.75 and 0.25 (of bases)


def genome_records(name: str) -> list[bytes]:
    return [r.sequence for r in read_genome(EXAMPLES / "genomes" / f"{name}.fna.gz").records]


@pytest.fixture(scope="module")
def two_genome_reads() -> np.ndarray:
    """4,000 reads, 1 % errors: 3,000 of ATCC12600 (depth 2.8), 1,000 of BPH2947 (depth 0.9)."""
    rng = np.random.default_rng(7)
    reads = np.concatenate(
        [simulate_reads(genome_records(MAIN), 3000, rng), simulate_reads(genome_records(MINOR), 1000, rng)]
    )
    return reads[rng.permutation(len(reads))]


def store_state(directory: Path) -> dict[str, str]:
    """Every file of a store and its SHA-256: a gather must change none."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def by_name(result) -> dict[str, object]:
    return {row.name: row for row in result.rows}


# -- the sample's forms: each gives the same genomes ----------------------------------------


def fastq_files(tmp_path: Path, reads: np.ndarray) -> list[Path]:
    return [write_fastq(tmp_path / "reads.fq", reads)]


def fastq_gzip(tmp_path: Path, reads: np.ndarray) -> list[Path]:
    return [write_fastq(tmp_path / "reads.fq.gz", reads, gz=True)]


def paired_files(tmp_path: Path, reads: np.ndarray) -> list[Path]:
    half = len(reads) // 2
    return [write_fastq(tmp_path / "R1.fq.gz", reads[:half], gz=True), write_fastq(tmp_path / "R2.fq", reads[half:])]


def fasta_reads(tmp_path: Path, reads: np.ndarray) -> list[Path]:
    return [write_fasta(tmp_path / "reads.fa", [(f"r{i}", row.tobytes().decode()) for i, row in enumerate(reads)])]


@pytest.mark.parametrize("form", [fastq_files, fastq_gzip, paired_files, fasta_reads])
def test_reads_of_two_stored_genomes_are_found_with_their_abundances(
    tmp_path: Path, nt_tiny_store: Path, two_genome_reads: np.ndarray, form
) -> None:
    """FASTQ (plain, gzip, a pair of files) or FASTA reads: both genomes found, nothing else; the
    abundance (share of mapped bases) within 10 % of the truth, most of each genome covered."""
    before = store_state(nt_tiny_store)
    result = GenomeIndex(nt_tiny_store).gather(form(tmp_path, two_genome_reads))
    found = by_name(result)
    assert set(found) == {MAIN, MINOR}
    assert found[MAIN].rank == 1
    for name, truth in ((MAIN, 0.75), (MINOR, 0.25)):
        assert abs(found[name].abundance - truth) <= 0.1 * truth, (name, found[name].abundance)
        assert 0.985 <= found[name].identity <= 0.995  # 1 % errors
    assert found[MAIN].breadth > 0.9 and 0.5 < found[MINOR].breadth < found[MAIN].breadth
    assert found[MAIN].depth == pytest.approx(3000 * 150 / 160_000, rel=0.1)
    assert sum(row.reads for row in result.rows) == pytest.approx(4000, abs=5)
    assert result.records == 4000 and result.preset == SHORT_PRESET and result.unmapped <= 5
    assert store_state(nt_tiny_store) == before


def test_contigs_are_gathered_with_the_assembly_preset(tmp_path: Path, nt_tiny_store: Path) -> None:
    """A contig mixture (FASTA of 5-20 kb pieces of two genomes): both found by contig bases."""
    pieces = [(f"a{i}", genome_records("DSM20231")[0][i : i + 20_000]) for i in range(0, 120_000, 20_000)]
    pieces += [(f"b{i}", genome_records("BPH2003")[0][i : i + 5_000]) for i in range(0, 40_000, 5_000)]
    sample = write_fasta(tmp_path / "contigs.fa", [(n, s.decode()) for n, s in pieces])
    result = GenomeIndex(nt_tiny_store).gather(sample)
    found = by_name(result)
    assert set(found) == {"DSM20231", "BPH2003"} and result.preset == LONG_PRESET
    assert found["DSM20231"].abundance == pytest.approx(120 / 160, abs=0.01)
    assert found["DSM20231"].identity == 1.0 and found["BPH2003"].mapped_bp == 40_000


def test_long_reads_are_mapped_with_the_nanopore_preset(tmp_path: Path, nt_tiny_store: Path) -> None:
    """FASTQ of 5 kb reads at 5 % errors: minimap2's map-ont, the identity the reads' own."""
    reads = simulate_reads(genome_records(MAIN), 150, np.random.default_rng(1), length=5_000, error=0.05)
    result = GenomeIndex(nt_tiny_store).gather(write_fastq(tmp_path / "long.fq", reads))
    assert result.preset == LONG_READ_PRESET and [row.name for row in result.rows] == [MAIN]
    assert 0.94 < result.rows[0].identity < 0.96 and result.rows[0].breadth > 0.95


@pytest.fixture(scope="module")
def strain_store(tmp_path_factory) -> tuple[Path, dict[str, bytes]]:
    """A kmer:4 store of two strains of one species at 99.5 % identity, a twin of the first that
    differs from it at 30 bases (its sketch the same but for a hash or so), and an unrelated genome."""
    rng = np.random.default_rng(11)
    bases = np.frombuffer(b"ACGT", dtype=np.uint8)
    strain_a = bases[rng.integers(0, 4, 300_000)]
    strain_b = strain_a.copy()
    where = rng.choice(len(strain_b), 1_500, replace=False)
    strain_b[where] = bases[(np.searchsorted(bases, strain_b[where]) + rng.integers(1, 4, len(where))) % 4]
    twin = strain_a.copy()
    where = rng.choice(len(twin), 30, replace=False)
    twin[where] = bases[(np.searchsorted(bases, twin[where]) + 1) % 4]
    genomes = {
        "strain_a": strain_a.tobytes(),
        "strain_b": strain_b.tobytes(),
        "twin_a": twin.tobytes(),
        "other": bases[rng.integers(0, 4, 200_000)].tobytes(),
    }
    folder = tmp_path_factory.mktemp("strains")
    for name, sequence in genomes.items():
        write_fasta(folder / f"{name}.fa", [(name, sequence.decode())])
    directory = folder / "index"
    GenomeIndex(directory).build(sorted(folder.glob("*.fa")), model="kmer:4")
    return directory, genomes


def test_two_strains_at_99_5_percent_are_told_apart(tmp_path: Path, strain_store) -> None:
    """80 % / 20 % of two strains that differ at 1 base in 200: both found, abundances apart and
    within 10 % (reads that fit both are shared by depth), the unrelated genome not reported."""
    directory, genomes = strain_store
    rng = np.random.default_rng(3)
    reads = np.concatenate(
        [simulate_reads([genomes["strain_a"]], 8000, rng), simulate_reads([genomes["strain_b"]], 2000, rng)]
    )
    found = by_name(GenomeIndex(directory).gather(write_fastq(tmp_path / "mix.fq", reads)))
    assert set(found) == {"strain_a", "strain_b"}
    assert found["strain_a"].abundance == pytest.approx(0.8, rel=0.1)
    assert found["strain_b"].abundance == pytest.approx(0.2, rel=0.1)


def test_genomes_the_sketch_cannot_tell_apart_are_told_apart_by_the_mapping(tmp_path: Path, strain_store) -> None:
    """The twin as one contig: in the sketch it ties with strain_a (either could be taken), so both
    are mapped; the twin explains every base without an edit and alone is reported."""
    directory, genomes = strain_store
    sample = write_fasta(tmp_path / "twin.fa", [("contig", genomes["twin_a"].decode())])
    for verify, names in ((True, ["twin_a"]), (False, None)):
        rows = GenomeIndex(directory).gather(sample, GatherOptions(verify=verify)).rows
        if names is not None:
            assert [r.name for r in rows] == names and rows[0].identity == 1.0
        else:
            assert len(rows) == 1 and rows[0].name in ("twin_a", "strain_a")  # the sketch's pick


def test_without_verification_the_cover_alone_is_given(tmp_path: Path, nt_tiny_store: Path, two_genome_reads) -> None:
    result = GenomeIndex(nt_tiny_store).gather(
        write_fastq(tmp_path / "r.fq", two_genome_reads), GatherOptions(verify=False)
    )
    assert {row.name for row in result.rows} == {MAIN, MINOR}
    assert all(row.abundance is None and row.reads is None for row in result.rows) and result.preset is None
    assert result.rows[0].unique_bp == result.rows[0].shared_bp > 0 and 0 < result.rows[0].f_genome <= 1


def test_a_store_without_sequences_gives_the_cover_and_says_how_to_verify(
    tmp_path: Path, nt_tiny_store: Path, two_genome_reads
) -> None:
    old = make_old(copy_store(nt_tiny_store, tmp_path))
    sample = write_fastq(tmp_path / "r.fq", two_genome_reads)
    result = runner.invoke(app, ["gather", str(sample), "-i", str(old), "--format", "json"])
    assert result.exit_code == 0, result.output
    assert [row["name"] for row in json.loads(result.stdout)] == [MAIN, MINOR]
    assert json.loads(result.stdout)[0]["abundance"] is None and "backfill-sequences" in result.stderr


def test_a_threshold_above_a_genome_leaves_it_out(tmp_path: Path, nt_tiny_store: Path, two_genome_reads) -> None:
    """--threshold-bp: the minor genome (about 100 kb of sketch) is left out at 130 kb."""
    sample = write_fastq(tmp_path / "r.fq", two_genome_reads)
    found = GenomeIndex(nt_tiny_store).gather(sample, GatherOptions(threshold_bp=130_000))
    assert [row.name for row in found.rows] == [MAIN]
    assert found.rows[0].abundance > 0.99  # the minor genome's reads map to no genome reported


def test_gather_rows_keep_labels_apart_from_their_fields(nt_tiny_store: Path, tmp_path: Path) -> None:
    """A label named like a gather column (stored before such labels were refused) comes out as
    `label.NAME`, beside the field, never over it."""
    row = GenomeIndex(nt_tiny_store).gather(EXAMPLES / "sample.fq.gz").rows[0]
    flat = dataclasses.replace(row, labels={"depth": "deep", "species": "S. aureus"}).row()
    assert flat["depth"] == row.depth and flat["label.depth"] == "deep" and flat["species"] == "S. aureus"


# -- the greedy cover and the sharing, against their obvious references ----------------------


def cover_by_sets(sample: set[int], genomes: dict[int, set[int]], min_hashes: int) -> list[tuple[int, int]]:
    """Greedy set cover with Python sets: (genome, hashes it explained), the near-tie rule as documented."""
    left, taken = set(sample), []
    while True:
        counts = {g: len(h & left) for g, h in genomes.items()}
        top = max(counts.values(), default=0)
        if top < max(min_hashes, 1):
            return taken
        near = [g for g, c in counts.items() if c >= 0.95 * top]
        best = min(near, key=lambda g: (-len(genomes[g] & sample) / len(genomes[g]), -counts[g], g))
        taken.append((best, counts[best]))
        left -= genomes[best]


@pytest.mark.parametrize("seed", range(6))
def test_greedy_cover_is_the_set_cover_of_python_sets(seed: int) -> None:
    rng = np.random.default_rng(seed)
    universe = rng.choice(2**60, 3_000, replace=False).astype(np.uint64)
    genomes = {gid: set(rng.choice(universe, int(rng.integers(50, 800)), replace=False).tolist()) for gid in range(12)}
    sample = set(rng.choice(universe, 1_500, replace=False).tolist())
    index = SketchIndex({gid: sorted(h) for gid, h in genomes.items()})
    fast = greedy_cover(np.array(sorted(sample), dtype=np.uint64), index, {g: len(h) for g, h in genomes.items()}, 20)
    assert [(g.genome_id, g.unique) for g in fast if not g.rival] == cover_by_sets(sample, genomes, 20)
    assert all(g.shared == len(genomes[g.genome_id] & sample) for g in fast)


def test_reads_that_fit_several_genomes_are_shared_by_their_depths() -> None:
    """Genome 0 has 300 reads of its own, genome 1 100 (same length): 200 that fit both go 3:1."""
    reads, bases = share_ambiguous({(0,): [300, 300], (1,): [100, 100], (0, 1): [200, 200]}, [1000, 1000])
    assert reads == pytest.approx([450, 150], rel=1e-6) and bases == pytest.approx([450, 150], rel=1e-6)
    reads, _ = share_ambiguous({(0,): [300, 300], (1,): [100, 100], (0, 1): [200, 200]}, [1000, 3000])
    depths = reads / [1000, 3000]  # genome 1 is three times as long: shallower, so it gets less of the shared
    assert (reads[0] - 300) / (reads[1] - 100) == pytest.approx(depths[0] / depths[1], rel=1e-6)
    assert reads.sum() == pytest.approx(600) and reads[1] - 100 < 50


def mapped(classes: dict[tuple[int, ...], list[int]], identity: float = 0.99) -> Mapped:
    figures = [Verified(matches=round(identity * 1000), columns=1000, length=1000) for _ in range(2)]
    return Mapped(figures, classes, 0)


def test_a_near_tie_keeps_a_genome_only_on_more_reads_than_errors_give() -> None:
    """Genome 1 differs from genome 0 at a few bases: 2 reads fitting it better against 130
    fitting 0 better is what 1 % errors give (dropped); 40 is not (kept); genomes no read tells
    apart (identical) both stay, for the reads to be shared."""
    shared = {(0, 1): [8000, 8000 * 150]}
    assert mapped({**shared, (0,): [130, 0], (1,): [2, 0]}).outfitted([0, 1]) == {1}
    assert mapped({**shared, (0,): [130, 0], (1,): [40, 0]}).outfitted([0, 1]) == set()
    assert mapped({**shared, (1,): [5, 0]}, identity=1.0).outfitted([0, 1]) == {0}  # contigs: no errors
    assert mapped(shared).outfitted([0, 1]) == set()


# -- bad samples: one line, nothing changed ---------------------------------------------


BAD_SAMPLES = {
    "an empty file": (b"", "empty file"),
    "reads shorter than k": (
        b"".join(b"@r%d\nACGTACGTACGTACGT\n+\nIIIIIIIIIIIIIIII\n" % i for i in range(50)),
        "sketch is empty",
    ),
    "protein reads": (b"@p\nMKTAYIAKQRQISFVKSHFSRQLEE\n+\nIIIIIIIIIIIIIIIIIIIIIIIII\n", "protein"),
    "a truncated read": (b"@r1\nACGT\n+\nIIII\n@r2\nACGT\n", "truncated FASTQ"),
    "qualities shorter than bases": (b"@r1\nACGTAC\n+\nIII\n", "quality values"),
}


def test_a_folder_or_a_missing_file_is_one_line(tmp_path: Path, nt_tiny_store: Path) -> None:
    for given, message in ((tmp_path, "a folder; give the sample's"), (tmp_path / "nope.fq", "no such file")):
        result = runner.invoke(app, ["gather", str(given), "-i", str(nt_tiny_store)])
        assert result.exit_code == 1 and message in result.output and result.output.count("\n") == 1


@pytest.mark.parametrize("name", BAD_SAMPLES)
def test_a_bad_sample_is_one_line_and_changes_nothing(tmp_path: Path, nt_tiny_store: Path, name: str) -> None:
    data, message = BAD_SAMPLES[name]
    before = store_state(nt_tiny_store)
    sample = tmp_path / "sample.fq"
    sample.write_bytes(data)
    result = runner.invoke(app, ["gather", str(sample), "-i", str(nt_tiny_store)])
    assert result.exit_code == 1
    assert message in result.output and result.output.count("\n") == 1, result.output
    assert store_state(nt_tiny_store) == before


def test_a_sample_of_nothing_stored_finds_nothing(tmp_path: Path, nt_tiny_store: Path) -> None:
    rng = np.random.default_rng(5)
    unrelated = np.frombuffer(b"ACGT", dtype=np.uint8)[rng.integers(0, 4, 200_000)].tobytes()
    sample = write_fastq(tmp_path / "other.fq", simulate_reads([unrelated], 2000, rng))
    result = runner.invoke(app, ["gather", str(sample), "-i", str(nt_tiny_store), "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == []
    assert "0 stored genome(s) found" in result.stderr


def test_memory_does_not_grow_with_the_sample(tmp_path: Path, nt_tiny_store: Path, monkeypatch) -> None:
    """Reads stream through both passes in bounded batches (made small here: 500 reads to map,
    100 kb to sketch): Python's peak allocation for 18,000 reads is that for 6,000 give or take
    1 MB (the 12,000 more reads held in a list would be 2.3 MB)."""
    import tracemalloc

    from genome_index.search import gather

    monkeypatch.setattr(gather, "MAP_BATCH", 500)
    monkeypatch.setattr(gather, "SKETCH_BATCH_BP", 100_000)
    rng = np.random.default_rng(2)
    records = genome_records(MAIN)
    peaks = []
    for count in (6_000, 18_000):
        sample = write_fastq(tmp_path / f"r{count}.fq.gz", simulate_reads(records, count, rng), gz=True)
        tracemalloc.start()
        try:
            GenomeIndex(nt_tiny_store).gather(sample)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    assert peaks[1] < peaks[0] + (1 << 20), peaks


# -- the command line ---------------------------------------------------------------------


def test_cli_gathers_a_pair_of_files_and_stdin(tmp_path: Path, nt_tiny_store: Path, two_genome_reads) -> None:
    r1, r2 = paired_files(tmp_path, two_genome_reads)
    result = runner.invoke(app, ["gather", str(r1), str(r2), "-i", str(nt_tiny_store), "--format", "tsv"])
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert header.split("\t")[:6] == ["sample", "rank", "genome_id", "name", "file", "unique_bp"]
    assert [row.split("\t")[3] for row in rows] == [MAIN, MINOR]
    assert "4,000 reads or contigs" in result.stderr and "minimap2 -x sr" in result.stderr
    piped = runner.invoke(
        app, ["gather", "-", "-i", str(nt_tiny_store), "-c", "name,abundance", "--format", "csv"],
        input=gzip.decompress(r1.read_bytes()) + r2.read_bytes(),
    )  # fmt: skip
    assert piped.exit_code == 0, piped.output
    assert [line.split(",")[0] for line in piped.stdout.splitlines()] == ["name", MAIN, MINOR]
