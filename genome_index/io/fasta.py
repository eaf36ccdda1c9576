"""Read genome FASTA files (plain or gzip): stream records, validate, normalise.

One file is one genome. Sequence is normalised for the k-mer tokenizers: uppercase, IUPAC
ambiguity letters and U handled (ambiguity -> N, U -> T), whitespace and CR removed. A query
may also be FASTQ (reads: `fastq=True`): four lines a read, qualities checked and dropped; a
genome to store may not.
FASTA is read by hand because its error cases (protein, binary, truncated gzip) must each
become one clear line naming the file and line, which general parsers do not give; FASTQ's
layout is dnaio's to check (2.5x faster), and its bases are checked here as FASTA's are.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from genome_index.errors import GenomeIndexError

FASTA_SUFFIXES = (".fa", ".fasta", ".fna", ".ffn", ".fas")
GZIP_MAGIC = b"\x1f\x8b"

_NUCLEOTIDES = b"ACGTN"
_AMBIGUOUS = b"RYKMSWBDHV"
_SEQUENCE_OK = _NUCLEOTIDES + _AMBIGUOUS + b"U" + _NUCLEOTIDES.lower() + _AMBIGUOUS.lower() + b"u"
# Upper-case everything, ambiguity codes -> N, U -> T (RNA written as DNA).
_NORMALISE = bytes.maketrans(
    _SEQUENCE_OK,
    b"ACGTN" + b"N" * len(_AMBIGUOUS) + b"T" + b"ACGTN" + b"N" * len(_AMBIGUOUS) + b"T",
)
_WHITESPACE = b" \t\r\n\v\f"
SNIFF_BYTES = 1 << 20  # checked for binary data before any line is read
UTF8_BOM = b"\xef\xbb\xbf"
_TEXT_BYTES = bytes(range(32, 256)) + _WHITESPACE  # control bytes (NUL included) are none of these
# Letters that occur in protein but never in nucleotide FASTA.
_PROTEIN_ONLY = set(b"EFILPQXZJOefilpqxzjo*")


def is_fasta_path(path: Path) -> bool:
    """True when the file name has a FASTA suffix, optionally followed by `.gz`."""
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return name.endswith(FASTA_SUFFIXES)


@dataclass(frozen=True)
class Record:
    """One FASTA record: its id (first word of the header), full header, normalised sequence,
    and the bases on its first sequence line (the file's line width; kept to write it back)."""

    id: str
    description: str
    sequence: bytes
    line_width: int = 0


@dataclass
class Genome:
    """All records of one FASTA file, with the per-genome figures the store keeps."""

    path: Path
    records: list[Record] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The file name without FASTA and gzip suffixes."""
        name = self.path.name
        if name.lower().endswith(".gz"):
            name = name[:-3]
        stem, dot, suffix = name.rpartition(".")
        return stem if dot and ("." + suffix.lower()) in FASTA_SUFFIXES else name

    @property
    def length(self) -> int:
        return sum(len(r.sequence) for r in self.records)

    @property
    def n_count(self) -> int:
        return sum(r.sequence.count(b"N") for r in self.records)

    @property
    def gc(self) -> float:
        """GC fraction of the called (non-N) bases; 0 when there are none."""
        gc = sum(r.sequence.count(b"G") + r.sequence.count(b"C") for r in self.records)
        called = self.length - self.n_count
        return gc / called if called else 0.0

    @property
    def sha256(self) -> str:
        """Identity of the genome: SHA-256 of its normalised records in order (names ignored)."""
        digest = hashlib.sha256()
        for record in self.records:
            digest.update(record.sequence)
            digest.update(b">")
        return digest.hexdigest()


_COMPLEMENT = bytes.maketrans(b"ACGTN", b"TGCAN")


def reverse_complement(sequence: bytes) -> bytes:
    """Reverse complement of a normalised (A/C/G/T/N) sequence."""
    return sequence.translate(_COMPLEMENT)[::-1]


def gc_fraction(sequence: bytes) -> float:
    """GC fraction of the called (non-N) bases of a normalised sequence."""
    called = len(sequence) - sequence.count(b"N")
    return (sequence.count(b"G") + sequence.count(b"C")) / called if called else 0.0


def _open_lines(path: Path) -> Iterator[bytes]:
    """Yield the raw lines of a plain or gzip file (detected by magic bytes, not by suffix),
    after its first SNIFF_BYTES have been checked: binary data is refused before a line of it
    is read whole, and a UTF-8 byte-order mark is dropped."""
    try:
        with open(path, "rb") as handle:
            magic = handle.read(2)
    except IsADirectoryError:
        raise GenomeIndexError(f"{path}: is a directory, not a FASTA file") from None
    except FileNotFoundError:
        raise GenomeIndexError(f"{path}: no such file") from None
    except OSError as exc:
        raise GenomeIndexError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if magic == GZIP_MAGIC:
        raw: io.BufferedIOBase = gzip.open(path, "rb")  # type: ignore[assignment]
    else:
        raw = open(path, "rb")
    with raw:
        try:
            head = raw.read(SNIFF_BYTES)
            _sniff(path, head)
            head = head.removeprefix(UTF8_BOM)
            if head and not head.endswith(b"\n"):
                head += raw.readline()  # the head's last line, whole (a sequence line: bounded by the file)
            yield from io.BytesIO(head)
            yield from raw
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise GenomeIndexError(f"{path}: damaged or truncated gzip file ({exc})") from None


def _sniff(path: Path, head: bytes) -> None:
    """Refuse binary data from the file's first bytes: NUL or other control bytes outside the
    FASTA text's white space (a header's UTF-8 letters are text)."""
    if head.translate(None, _TEXT_BYTES)[:1]:
        raise GenomeIndexError(f"{path}: binary data, not a FASTA file")


def _check_sequence_line(path: Path, lineno: int, line: bytes) -> None:
    """Raise a clear error for a sequence line with bytes that cannot be nucleotides."""
    bad = line.translate(None, _SEQUENCE_OK + _WHITESPACE)
    if not bad:
        return
    if any(b < 32 or b > 126 for b in bad):
        raise GenomeIndexError(f"{path}:{lineno}: binary or undecodable bytes, not FASTA text")
    if any(b in _PROTEIN_ONLY for b in bad):
        raise GenomeIndexError(
            f"{path}:{lineno}: looks like protein sequence (letters such as "
            f"{sorted({chr(b) for b in bad if b in _PROTEIN_ONLY})[:5]}); genome-index needs nucleotides"
        )
    shown = "".join(sorted({chr(b) for b in bad}))[:10]
    raise GenomeIndexError(f"{path}:{lineno}: characters {shown!r} are not nucleotide letters")


def iter_records(path: str | Path, lines: io.BytesIO | None = None, fastq: bool = False) -> Iterator[Record]:
    """Stream the records of one FASTA file (or, with `fastq`, FASTQ file), normalised; raise
    GenomeIndexError on bad input. With `lines`, read those bytes instead of the file (`path`
    then only names them in errors)."""
    path = Path(path)
    header: str | None = None
    header_line = 0
    parts: list[bytes] = []
    width = 0
    seen_any = False

    def finish() -> Record:
        assert header is not None
        raw = b"".join(parts).translate(None, _WHITESPACE)
        if not raw:
            raise GenomeIndexError(f"{path}:{header_line}: record {header.strip()!r} has no sequence")
        _check_not_protein(path, header_line, raw)
        description = header.strip()
        record_id = description.split(maxsplit=1)[0] if description else f"record_{header_line}"
        return Record(record_id, description, raw.translate(_NORMALISE), width)

    numbered = enumerate(_open_lines(path) if lines is None else lines, start=1)
    for lineno, line in numbered:
        if header is None and line.startswith(b"@"):
            if not fastq:
                raise GenomeIndexError(
                    f"{path}:{lineno}: FASTQ reads, not a genome assembly: reads are a query (genome-index query), "
                    "not a genome to store"
                )
            if isinstance(lines, io.BytesIO):
                lines.seek(0)
            yield from _fastq_records(path, lines if isinstance(lines, io.BytesIO) else path)
            return
        if line.startswith(b">"):
            if header is not None:
                yield finish()
            try:
                header = line[1:].decode("utf-8")
            except UnicodeDecodeError:
                raise GenomeIndexError(f"{path}:{lineno}: header is not valid UTF-8 text (binary file?)") from None
            header_line = lineno
            parts = []
            width = 0
            seen_any = True
            continue
        if header is None:
            if not line.strip():
                continue
            if b"\x00" in line or any(b > 126 for b in line[:200]):
                raise GenomeIndexError(f"{path}: binary data, not a FASTA file")
            raise GenomeIndexError(f"{path}:{lineno}: not FASTA (expected a '>' header line)")
        _check_sequence_line(path, lineno, line)
        if not width:
            width = len(line.translate(None, _WHITESPACE))
        parts.append(line)
    if header is not None:
        yield finish()
    if not seen_any:
        raise GenomeIndexError(f"{path}: empty file, no FASTA records")


def _fastq_records(path: Path, source: Path | BinaryIO) -> Iterator[Record]:
    """The reads of a FASTQ file (`source`: the file, or its bytes in memory), parsed by dnaio
    (17x this module's line reader: 0.32 s for a million 150 bp reads), which checks the
    format (four lines a read, '+' line, as many qualities as bases, truncation); bases are
    checked and normalised here as a FASTA record's are. Multi-line FASTQ is refused."""
    import dnaio

    done = 0  # reads read whole: the next one starts at line 4 * done + 1
    try:
        with dnaio.open(source, fileformat="fastq", open_threads=0) as reads:
            for read in reads:
                line = 4 * done + 2  # its sequence line
                bases = read.sequence.encode("ascii")
                if not bases:
                    raise GenomeIndexError(f"{path}:{line}: read {read.id!r} has no sequence")
                if bases.translate(None, b"ACGTN"):  # anything but normalised bases: checked, then normalised
                    _check_sequence_line(path, line, bases)
                    bases = bases.translate(None, _WHITESPACE)
                    _check_not_protein(path, line, bases)
                    bases = bases.translate(_NORMALISE)
                yield Record(read.id or f"read_{done + 1}", read.name.strip(), bases, len(bases))
                done += 1
    except dnaio.FastqFormatError as exc:
        truncated = exc.message.startswith("Premature end")
        if truncated and exc.message.endswith("was: '\\n'"):
            return  # a blank line after the last read
        if truncated or exc.line is None:
            where = f"{path}:{4 * done + 1}" if truncated else f"{path}: read {done + 1}"
        else:
            where = f"{path}:{exc.line + 1}"
        raise GenomeIndexError(f"{where}: {_fastq_problem(exc.message)}") from None
    except (EOFError, OSError, zlib.error) as exc:
        raise GenomeIndexError(f"{path}: damaged or truncated gzip file ({exc})") from None


def _fastq_problem(message: str) -> str:
    """dnaio's description of a FASTQ error in this module's words."""
    if message.startswith("Length of sequence and qualities differ"):
        return "a read with a different number of quality values than bases"
    if message.startswith("Premature end of file"):
        return "truncated FASTQ: the file ends inside a read"
    if message.startswith("Line expected to start with '+'"):
        return "expected the '+' line of a read (FASTQ of one sequence line a read)"
    if message.startswith("Line expected to start with '@'"):
        return "expected a FASTQ '@' header line"
    if message.startswith("Non-ASCII"):
        return "a read's header or bases are not ASCII text (binary file?)"
    return message.split("\n")[0]


def _check_not_protein(path: Path, lineno: int, raw: bytes) -> None:
    """Reject protein written only in letters that are also IUPAC codes (e.g. 'MKVRSWD')."""
    ambiguous = len(raw) - len(raw.translate(None, _AMBIGUOUS + _AMBIGUOUS.lower()))
    if len(raw) >= 20 and ambiguous > 0.5 * len(raw):
        raise GenomeIndexError(f"{path}:{lineno}: mostly IUPAC ambiguity codes, not A/C/G/T/N: protein sequence?")


READ_LIKE_RECORDS = 1_000  # a file of at least this many records ...
READ_LIKE_MEDIAN = 300  # ... half of them shorter than this (bp) holds reads (50-300 bp), not an assembly


@dataclass(frozen=True)
class Summary:
    """What the input check learns of a genome file in one pass: its SHA-256 (as `Genome.sha256`),
    bases and records."""

    sha256: str
    length: int
    records: int


def summarise(path: str | Path, reads_ok: bool = False) -> Summary:
    """Read a FASTA file once, keeping no sequence: its `Summary`. A file that looks like reads
    (READ_LIKE_RECORDS records or more, their median shorter than READ_LIKE_MEDIAN) is refused
    as soon as that shows, unless `reads_ok`: reads are no genome, and as one they make a store
    hundreds of times the input's size."""
    path = Path(path)
    digest = hashlib.sha256()
    lengths: list[int] = []
    for record in iter_records(path):
        digest.update(record.sequence)
        digest.update(b">")
        lengths.append(len(record.sequence))
        if len(lengths) == READ_LIKE_RECORDS and not reads_ok:
            _refuse_reads(path, lengths)
    if not reads_ok:
        _refuse_reads(path, lengths)
    return Summary(digest.hexdigest(), sum(lengths), len(lengths))


def _refuse_reads(path: Path, lengths: list[int]) -> None:
    if len(lengths) < READ_LIKE_RECORDS:
        return
    median = sorted(lengths)[len(lengths) // 2]
    if median < READ_LIKE_MEDIAN:
        raise GenomeIndexError(
            f"{path}: looks like reads, not a genome ({len(lengths):,}+ records, median {median} bp): query reads "
            "against a store with `genome-index query`, or pass --force to store the file as one genome"
        )


def read_genome(path: str | Path, fastq: bool = False) -> Genome:
    """Read one FASTA file (or, with `fastq`, FASTQ file) as one genome (all its records)."""
    path = Path(path)
    return Genome(path, list(iter_records(path, fastq=fastq)))


def parse_fasta(text: str | bytes, name: str = "query") -> Genome:
    """A query from FASTA or FASTQ text in memory (a pasted query, an HTTP body), checked as a
    file is; bare sequence without a header is one record called `name`."""
    data = text.encode() if isinstance(text, str) else bytes(text)
    if data[:2] == GZIP_MAGIC:
        raise GenomeIndexError(f"{name}: gzip data; send FASTA or FASTQ text")
    if data.strip() and not data.lstrip().startswith((b">", b"@")):
        data = b">" + name.encode() + b"\n" + data
    return Genome(Path(name), list(iter_records(name, io.BytesIO(data), fastq=True)))


def genome_of(records: Iterable[tuple[str, str | bytes]], name: str = "query") -> Genome:
    """A genome from (name, sequence) pairs: each name one line of text, each sequence nucleotide
    letters (white space dropped), checked and normalised as a file's are. A sequence is never
    read as FASTA: a '>' or a newline in it cannot start a record of its own."""
    made = []
    for number, (record, sequence) in enumerate(records, start=1):
        where = f"{name}: record {number}"
        if not record.strip() or any(ord(c) < 32 or ord(c) == 127 for c in record):
            raise GenomeIndexError(f"{where}: its name must be one line of text")
        data = sequence.encode() if isinstance(sequence, str) else bytes(sequence)
        bad = data.translate(None, _SEQUENCE_OK + _WHITESPACE)
        if bad:
            shown = "".join(sorted({chr(b) if 32 <= b < 127 else f"\\x{b:02x}" for b in bad}))[:20]
            raise GenomeIndexError(f"{where}: characters '{shown}' are not nucleotide letters")
        raw = data.translate(None, _WHITESPACE)
        if not raw:
            raise GenomeIndexError(f"{where} ({record.strip()!r}) has no sequence")
        _check_not_protein(Path(name), number, raw)
        made.append(Record(record.split(maxsplit=1)[0], record.strip(), raw.translate(_NORMALISE), len(raw)))
    if not made:
        raise GenomeIndexError(f"{name}: no records")
    return Genome(Path(name), made)


QueryInput = str | Path | Genome | Iterable[tuple[str, str | bytes]]


def as_genome(query: QueryInput, name: str = "query") -> Genome:
    """A query as a Genome: a FASTA or FASTQ path (a Path, or a str naming an existing file),
    FASTA or FASTQ text or bare sequence (a str), (name, sequence) records, or a Genome as it is."""
    if isinstance(query, Genome):
        return query
    if isinstance(query, Path):
        return read_genome(query, fastq=True)
    if isinstance(query, str):
        text = query.strip()
        if not text.startswith((">", "@")) and "\n" not in text and _is_file(text):
            return read_genome(text, fastq=True)
        return parse_fasta(query, name)
    return genome_of(query, name)


def _is_file(text: str) -> bool:
    try:
        return Path(text).is_file()
    except (OSError, ValueError):  # too long for a path, or a NUL in it: a sequence
        return False


def find_fasta_files(paths: list[str | Path]) -> list[Path]:
    """Expand files and folders (searched recursively) into a sorted, de-duplicated FASTA list."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and is_fasta_path(p))
            if not files:
                raise GenomeIndexError(
                    f"{path}: no FASTA files in this folder (looked for {', '.join(FASTA_SUFFIXES)}, optionally .gz)"
                )
            found.extend(files)
        elif path.is_file():
            found.append(path)
        elif path.exists():
            raise GenomeIndexError(f"{path}: not a regular file or folder")
        else:
            raise GenomeIndexError(f"{path}: no such file or folder")
    unique: dict[Path, None] = {}
    for path in found:
        unique.setdefault(path.resolve(), None)
    return list(unique)
