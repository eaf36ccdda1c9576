"""FASTA reading: formats, normalisation, per-genome figures and one clear error per bad input."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genome_index.errors import GenomeIndexError
from genome_index.io.fasta import (
    FASTA_SUFFIXES,
    find_fasta_files,
    is_fasta_path,
    iter_records,
    parse_fasta,
    read_genome,
)
from tests.helpers import write_fasta


@pytest.mark.parametrize("suffix", FASTA_SUFFIXES)
@pytest.mark.parametrize("gz", [False, True])
def test_every_suffix_plain_and_gzip(tmp_path: Path, suffix: str, gz: bool) -> None:
    path = tmp_path / f"g{suffix}{'.gz' if gz else ''}"
    write_fasta(path, [("chr1 first", "ACGT" * 10), ("plasmid", "GGCC")], gz=gz)
    genome = read_genome(path)
    assert [r.id for r in genome.records] == ["chr1", "plasmid"]
    assert genome.records[0].description == "chr1 first"
    assert genome.length == 44
    assert genome.name == "g"
    assert is_fasta_path(path)


def test_normalisation_uppercase_iupac_crlf_whitespace(tmp_path: Path) -> None:
    path = write_fasta(tmp_path / "g.fa", [("r", "acgtRYKMSWBDHVn AC\tGU")], eol="\r\n")
    assert read_genome(path).records[0].sequence == b"ACGTNNNNNNNNNNNACGT"


def test_multiline_records_and_figures(tmp_path: Path) -> None:
    path = tmp_path / "g.fa"
    path.write_text(">a\nGGCC\nAATT\n>b\nNNNN\nGC\n")
    genome = read_genome(path)
    assert [r.sequence for r in genome.records] == [b"GGCCAATT", b"NNNNGC"]
    assert genome.length == 14
    assert genome.n_count == 4
    assert genome.gc == pytest.approx(6 / 10)


def test_identity_ignores_names_but_not_sequence(tmp_path: Path) -> None:
    a = read_genome(write_fasta(tmp_path / "a.fa", [("x", "ACGT"), ("y", "GG")]))
    b = read_genome(write_fasta(tmp_path / "b.fa.gz", [("other", "acgt"), ("names", "gg")], gz=True))
    c = read_genome(write_fasta(tmp_path / "c.fa", [("x", "ACGTG"), ("y", "G")]))
    assert a.sha256 == b.sha256
    assert a.sha256 != c.sha256


def test_streaming_yields_records_one_by_one(tmp_path: Path) -> None:
    path = tmp_path / "g.fa"
    path.write_text(">a\nAC\n>b\nGT\n>c\n")
    records = iter_records(path)
    assert next(records).id == "a"
    assert next(records).id == "b"
    with pytest.raises(GenomeIndexError, match="has no sequence"):
        next(records)


BAD_INPUTS = {
    "not fasta": (b"hello world\nthis is text\n", "not FASTA"),
    "empty": (b"", "empty file"),
    "blank lines only": (b"\n\n  \n", "empty file"),
    "header without sequence": (b">only a header\n", "has no sequence"),
    "protein": (b">p\nMKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ\n", "protein"),
    "protein in iupac letters": (b">p\nMKVRSWDHMKVRSWDHMKVRSWDH\n", "protein"),
    "binary": (bytes(range(256)) * 4, "binary"),
    "undecodable header": (b">\xff\xfename\nACGT\n", "not valid UTF-8"),
    "nul in the header": (b">\x00name\nACGT\n", "binary data"),
    "binary in sequence": (b">r\nACGT\x00\x01\x02ACGT\n", "binary"),
    "digits in sequence": (b">r\nACGT123\n", "not nucleotide letters"),
}


def fastq_of(reads: list[tuple[str, str]]) -> bytes:
    return b"".join(b"@%s\n%s\n+\n%s\n" % (n.encode(), s.encode(), b"I" * len(s)) for n, s in reads)


BAD_FASTQ = {
    "quality shorter than the read": (b"@r1\nACGT\n+\nIII\n", "bad.fq:4: a read with a different number of quality"),
    "truncated inside a read": (fastq_of([("r1", "ACGT")]) + b"@r2\nACGT\n", "bad.fq:5: truncated FASTQ"),
    "no '+' line (multi-line FASTQ)": (b"@r1\nACGT\nACGT\nIIII\n", "bad.fq:3: expected the '+' line of a read"),
    "a '+' line naming another read": (b"@r1\nACGT\n+r2\nIIII\n", "bad.fq:3: Sequence descriptions don't match"),
    "a header that is not text": ("@r1 \u00e9\nACGT\n+\nIIII\n".encode(), "bad.fq: read 1: a read's header"),
    "a truncated gzip file": (gzip.compress(fastq_of([("r1", "ACGT")] * 500))[:-30], "bad.fq: damaged or truncated"),
    "a FASTA record after reads": (fastq_of([("r1", "ACGT")]) + b">c\nACGT\n>d\nA\n", "bad.fq:5: expected a FASTQ '@'"),
    "protein reads": (fastq_of([("p", "MKTAYIAKQRQISFV")]), "bad.fq:2: looks like protein"),
    "an empty read": (b"@r1\n\n+\n\n", "bad.fq:2: read 'r1' has no sequence"),
}


@pytest.mark.parametrize(("name", "fastq"), [(n, False) for n in BAD_INPUTS] + [(n, True) for n in BAD_FASTQ])
def test_bad_input_is_one_clear_error_naming_the_file(tmp_path: Path, name: str, fastq: bool) -> None:
    """FASTA (a genome or a query) and FASTQ (a query): one line naming the file (and for reads the line)."""
    data, message = (BAD_FASTQ if fastq else BAD_INPUTS)[name]
    path = tmp_path / ("bad.fq" if fastq else "bad.fa")
    path.write_bytes(data)
    with pytest.raises(GenomeIndexError, match=re.escape(message)) as info:
        read_genome(path, fastq=fastq)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.fa"
    path.write_text(">r\nACGT\nACGT\nAC!T\n")
    with pytest.raises(GenomeIndexError, match=r"bad\.fa:4:"):
        read_genome(path)


def test_truncated_gzip(tmp_path: Path) -> None:
    data = gzip.compress(b">r\n" + b"ACGT" * 50_000 + b"\n")
    path = tmp_path / "cut.fa.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(GenomeIndexError, match="truncated gzip"):
        read_genome(path)


def test_gzip_detected_by_content_not_suffix(tmp_path: Path) -> None:
    path = tmp_path / "really_gzip.fa"
    path.write_bytes(gzip.compress(b">r\nACGT\n"))
    assert read_genome(path).records[0].sequence == b"ACGT"


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(GenomeIndexError, match="no such file"):
        read_genome(tmp_path / "absent.fa")
    with pytest.raises(GenomeIndexError, match="is a directory"):
        read_genome(tmp_path)


def test_find_fasta_files_recursive_sorted_unique(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    a = write_fasta(tmp_path / "sub" / "a.fna.gz", [("r", "A")], gz=True)
    b = write_fasta(tmp_path / "b.fasta", [("r", "A")])
    (tmp_path / "notes.txt").write_text("not a genome")
    assert find_fasta_files([tmp_path, b]) == [b.resolve(), a.resolve()]


def test_find_fasta_files_errors(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(GenomeIndexError, match="no FASTA files"):
        find_fasta_files([tmp_path])
    with pytest.raises(GenomeIndexError, match="no such file or folder"):
        find_fasta_files([tmp_path / "missing"])


def test_real_genome_figures(staph_dir: Path) -> None:
    genome = read_genome(staph_dir / "GCA_900620245.1_BPH2947_genomic.fna.gz")
    assert [r.id for r in genome.records] == ["LR130515.1", "LR130516.1", "LR130517.1"]
    assert 2_700_000 < genome.length < 3_100_000
    assert 0.30 < genome.gc < 0.35


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(max_size=300), st.text(alphabet=">ACGTNacgtn \r\n\tXEP*-1", max_size=300)))
def test_fuzz_reader_returns_records_or_raises_own_error(tmp_path: Path, data: bytes | str) -> None:
    path = tmp_path / "fuzz.fa"
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    try:
        records = list(iter_records(path))
    except GenomeIndexError:
        return
    assert records and all(set(r.sequence) <= set(b"ACGTN") and r.sequence for r in records)


def peak_bytes(call) -> tuple[object, int]:
    """What `call()` returned or raised, and the peak of Python's allocations while it ran."""
    import tracemalloc

    tracemalloc.start()
    try:
        try:
            outcome: object = call()
        except GenomeIndexError as exc:
            outcome = exc
        return outcome, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("gz", [False, True])
def test_binary_data_is_refused_from_its_first_megabyte(tmp_path: Path, gz: bool) -> None:
    """64 MB of NULs (512 MB of them once peaked at 2.3 GB, read as one line before the check)."""
    data = b"\x00" * (64 << 20)
    path = tmp_path / "nul.fa"
    path.write_bytes(gzip.compress(data, 1) if gz else data)
    outcome, peak = peak_bytes(lambda: read_genome(path))
    assert isinstance(outcome, GenomeIndexError) and "binary data, not a FASTA file" in str(outcome)
    assert peak < 4 << 20, peak


def test_a_utf8_byte_order_mark_is_text(tmp_path: Path) -> None:
    path = tmp_path / "bom.fa"
    path.write_bytes(b"\xef\xbb\xbf>r one\nACGT\n")
    assert read_genome(path).records[0].description == "r one"


@pytest.mark.slow
def test_a_file_of_reads_is_refused_at_its_thousandth_record_unless_forced(tmp_path: Path) -> None:
    """A million 1 bp records once passed 6 GB on their way into a store; here 200,000."""
    from genome_index.io.fasta import READ_LIKE_RECORDS, summarise

    path = tmp_path / "reads.fa"
    with open(path, "w") as handle:
        handle.writelines(f">read{i}\n{'ACGT'[i % 4]}\n" for i in range(200_000))
    outcome, peak = peak_bytes(lambda: summarise(path))
    assert isinstance(outcome, GenomeIndexError) and f"{READ_LIKE_RECORDS:,}+ records, median 1 bp" in str(outcome)
    assert "--force" in str(outcome) and "genome-index query" in str(outcome) and peak < 4 << 20
    forced = summarise(path, reads_ok=True)
    assert forced.records == forced.length == 200_000
    assert forced.sha256 == read_genome(path).sha256


def test_an_assembly_of_many_contigs_is_no_reads(tmp_path: Path) -> None:
    path = write_fasta(tmp_path / "draft.fa", [(f"contig{i}", "ACGT" * 100) for i in range(1_500)])  # 400 bp each
    assert summarise_of(path).records == 1_500


def summarise_of(path: Path):
    from genome_index.io.fasta import summarise

    return summarise(path)


@pytest.mark.parametrize("gz", [False, True])
def test_a_query_may_be_fastq_its_qualities_dropped(tmp_path: Path, gz: bool) -> None:
    """Reads as a query, plain or gzip, from a file or text: each read a record, normalised."""
    data = fastq_of([("r1 first", "acgtnRy"), ("r2", "ACGT")]) + b"\n"
    path = tmp_path / "reads.fq"
    path.write_bytes(gzip.compress(data) if gz else data)
    for genome in (read_genome(path, fastq=True), parse_fasta(data.decode())):
        assert [(r.id, r.description, r.sequence) for r in genome.records] == [
            ("r1", "r1 first", b"ACGTNNN"), ("r2", "r2", b"ACGT"),
        ]  # fmt: skip


def test_reads_are_no_genome_to_store(tmp_path: Path) -> None:
    path = tmp_path / "reads.fq"
    path.write_bytes(fastq_of([("r1", "ACGT")]))
    with pytest.raises(GenomeIndexError, match=r"reads\.fq:1: FASTQ reads, not a genome assembly"):
        read_genome(path)
