"""extract gives back stored sequence byte for byte; backfill-sequences fills older stores."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from typer.testing import CliRunner

from genome_index.api import GenomeIndex
from genome_index.cli import app
from genome_index.errors import GenomeIndexError
from genome_index.io.fasta import read_genome, reverse_complement
from tests.helpers import copy_store, make_old

runner = CliRunner()


def run(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def wrapped(sequence: str, width: int) -> str:
    return "".join(sequence[i : i + width] + "\n" for i in range(0, len(sequence), width))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """Genomes in the formats users bring: wrapped at 60 or 80, one line, gzip, lower case,
    N runs, IUPAC codes, CRLF line ends, names with colons."""
    folder = tmp_path_factory.mktemp("inputs")
    chromosome = ("ACGTTGCA" * 40 + "NNNNN" + "GATTACA" * 30)[:500]
    plasmid = "TTGACCGA" * 25
    files = {
        "w60": (f">chr1 first genome\n{wrapped(chromosome, 60)}>p1 plasmid\n{wrapped(plasmid, 60)}", False),
        "oneline": (f">contig_1\n{chromosome[::-1]}\n", True),
        "lower": (f">c1 lower case\n{wrapped(chromosome.lower()[7:], 80)}", False),
        "iupac": (f">c1\n{wrapped(plasmid[:40] + 'RYKM' + plasmid[44:], 70)}", False),
        "crlf": (f">c1:100-200 crlf\r\n{wrapped(chromosome[3:303], 50).replace(chr(10), chr(13) + chr(10))}", False),
    }
    paths = {}
    for name, (text, gz) in files.items():
        path = folder / (name + (".fa.gz" if gz else ".fa"))
        path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
        paths[name] = path
    return paths


@pytest.fixture(scope="module")
def built(inputs: dict[str, Path], tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("extract") / "index"
    GenomeIndex(directory).build(list(inputs.values()), "kmer:4")
    return directory


def normalised_file(path: Path) -> bytes:
    """The input as FASTA of its normalised records at its own line width."""
    genome = read_genome(path)
    out = b""
    for record in genome.records:
        width = record.line_width
        lines = [record.sequence[i : i + width] for i in range(0, len(record.sequence), width)]
        out += b">" + record.description.encode() + b"\n" + b"".join(line + b"\n" for line in lines)
    return out


@pytest.mark.parametrize("name", ["w60", "oneline", "lower", "iupac", "crlf"])
def test_a_whole_genome_comes_back_as_its_normalised_input(built: Path, inputs: dict[str, Path], name: str) -> None:
    result = run("extract", name, "--index", built)
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == normalised_file(inputs[name])
    if name in ("w60", "oneline"):  # already upper case with even lines: the file itself
        raw = inputs[name].read_bytes()
        assert result.stdout_bytes == (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)


def test_every_example_genome_comes_back_byte_identical(nt_tiny_store: Path, example_genomes) -> None:
    for path in example_genomes:
        out = GenomeIndex.open(nt_tiny_store).extract([read_genome(path).name])
        assert out == gzip.decompress(path.read_bytes())


@pytest.mark.parametrize(
    "region, header, sequence",
    [
        ("w60:p1", "p1 plasmid", "TTGACCGA" * 25),
        ("w60:2", "p1 plasmid", "TTGACCGA" * 25),
        ("w60:chr1:1-8", "chr1:1-8", "ACGTTGCA"),
        ("w60:chr1:319-327", "chr1:319-327", "CANNNNNGA"),  # N at 321-325
        ("oneline:1-5", "contig_1:1-5", ("ACGTTGCA" * 40 + "NNNNN" + "GATTACA" * 30)[:500][::-1][:5]),
        ("crlf:c1:100-200:2-4", "c1:100-200:2-4", "TGC"),  # its record starts TTGCA
        ("crlf:c1:100-200", "c1:100-200 crlf", None),
        ("id:1:p1:1,001-1,001", None, None),
    ],
)
def test_regions_are_one_based_and_inclusive_like_samtools(
    built: Path, region: str, header: str | None, sequence: str | None
) -> None:
    result = run("extract", region, "--index", built, "--width", "0")
    if header is None:
        assert result.exit_code == 1 and "is outside it" in result.stderr
        return
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == ">" + header and len(lines) == 2
    if sequence is not None:
        assert lines[1] == sequence


def test_rc_reverse_complements_and_marks_the_name(built: Path) -> None:
    plain = run("extract", "w60:chr1:300-340", "--index", built, "--width", "0").stdout.splitlines()
    rc = run("extract", "w60:chr1:300-340", "--index", built, "--width", "0", "--rc").stdout.splitlines()
    assert rc[0] == ">chr1:300-340/rc" and rc[1].encode() == reverse_complement(plain[1].encode())
    whole = run("extract", "w60:p1", "--index", built, "--rc").stdout.splitlines()
    assert whole[0] == ">p1/rc plasmid" and all(len(line) == 60 for line in whole[1:-1])


@pytest.mark.parametrize(
    "region, message",
    [
        ("nope", "no such genome"),
        ("w60:chr9", "no record 'chr9'"),
        ("w60:1-5", "has 2 records; name one"),
        ("w60:chr1:9-3", "1 <= START <= END"),
        ("w60:chr1:0-3", "1 <= START <= END"),
        ("w60:chr1:400-501", "is 500 bp"),
    ],
)
def test_a_bad_region_is_one_line(built: Path, region: str, message: str) -> None:
    result = run("extract", region, "--index", built)
    assert result.exit_code == 1 and message in result.stderr and len(result.stderr.splitlines()) == 1


def test_output_goes_to_a_file(built: Path, tmp_path: Path, inputs: dict[str, Path]) -> None:
    out = tmp_path / "out.fa"
    assert run("extract", "w60", "--index", built, "-o", out).exit_code == 0
    assert out.read_bytes() == inputs["w60"].read_bytes()


def test_an_older_store_answers_and_says_how_to_get_sequences(built: Path, tmp_path: Path, inputs) -> None:
    old = make_old(copy_store(built, tmp_path))
    assert GenomeIndex.open(old).check() == []
    refused = run("extract", "w60", "--index", old)
    assert refused.exit_code == 1 and "genome-index backfill-sequences" in refused.stderr
    query = run("query", inputs["w60"], "--index", old, "-k", "1", "-f", "json")
    assert query.exit_code == 0 and "backfill-sequences" in query.stderr and '"identity": null' in query.stdout


@pytest.mark.slow
def test_backfill_verifies_each_file_and_fills_what_is_missing(built: Path, tmp_path: Path, inputs, example_genomes):
    old = make_old(copy_store(built, tmp_path))
    partial = run("backfill-sequences", inputs["w60"], inputs["lower"], example_genomes[0], "--index", old)
    assert partial.exit_code == 1
    assert "stored the sequences of 2 genome(s); 1 file(s) are no genome of this store" in partial.stderr
    assert "3 genome(s) still have no sequence: crlf, iupac, oneline" in partial.stderr
    assert GenomeIndex.open(old).extract(["w60"]) == inputs["w60"].read_bytes()
    inputs["w60"].with_name("changed.fa").write_text(">chr1\nACGT\n")
    done = run("backfill-sequences", inputs["w60"].parent, "--index", old)
    assert done.exit_code == 0, done.output
    assert "stored the sequences of 3 genome(s); 2 file(s) had theirs already; 1 file(s) are no genome" in done.stderr
    assert GenomeIndex.open(old).check() == []
    for name, path in inputs.items():
        assert GenomeIndex.open(old).extract([name]) == normalised_file(path)


def test_merge_carries_the_sequences(built: Path, tmp_path: Path, inputs) -> None:
    merged = tmp_path / "merged"
    GenomeIndex(merged).merge([built])
    assert GenomeIndex.open(merged).extract(["w60"]) == inputs["w60"].read_bytes()
    assert GenomeIndex.open(merged).check() == []


def test_remove_takes_the_sequences_too(built: Path, tmp_path: Path) -> None:
    store = GenomeIndex.open(copy_store(built, tmp_path))
    store.remove(["w60"])
    assert store.sql("SELECT count(*) FROM sequences s JOIN genomes g ON g.id = s.genome_id")[1] == [(4,)]
    assert store.sql("SELECT count(*) FROM sequences")[1] == [(4,)]
    with pytest.raises(GenomeIndexError, match="no such genome"):
        store.extract(["w60"])


@pytest.mark.slow
def test_a_region_two_readings_fit_is_refused_naming_both(tmp_path: Path) -> None:
    """`G:r1:1-5` with a genome G holding record `r1:1-5` and a genome `G:r1`: once one reading
    was taken in silence."""
    from tests.helpers import one_line_error, write_fasta

    folder = tmp_path / "in"
    folder.mkdir()
    write_fasta(folder / "G.fa", [("r1:1-5", "ACGTTGCAAC" * 30)])
    write_fasta(folder / "G:r1.fa", [("chr", "TTGACCGGAT" * 30)])
    index = tmp_path / "index"
    assert run("build", folder, "-i", index, "-m", "kmer:4").exit_code == 0
    one_line_error(
        run("extract", "G:r1:1-5", "-i", index),
        "reads two ways", "genome 'G:r1' bases 1-5", "genome 'G' record 'r1:1-5'", "id:N",
    )  # fmt: skip
    ids = dict(GenomeIndex.open(index).sql("SELECT name, id FROM genomes")[1])
    assert run("extract", f"id:{ids['G:r1']}:1-5", "-i", index).stdout == ">chr:1-5\nTTGAC\n"
    assert run("extract", "G:1", "-i", index).stdout.startswith(">r1:1-5\n")
