"""Stored sequence back as FASTA: a genome, a record or a region, like `samtools faidx`.

A region is written GENOME[:RECORD[:START-END]]: GENOME a name or id (or `name:X`, `id:N`),
RECORD a record's name (the first word of its header) or its 1-based number, START-END
1-based and inclusive as samtools and BLAST write them (a query hit's target_start and
target_end can be pasted as they are). A genome with one record may leave the record out of
a region. A whole genome or record keeps its header and the input's line width, so it comes
back byte-identical to the normalised input.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from genome_index.errors import GenomeIndexError
from genome_index.io.fasta import reverse_complement
from genome_index.io.sequences import fasta_lines, unpack
from genome_index.store.reads import StoreReader

RANGE = re.compile(r"^(\d[\d,]*)-(\d[\d,]*)$")
NO_SEQUENCE = (
    "genome {name}: this store keeps no sequence for it (it was built before sequences were kept); run "
    "`genome-index backfill-sequences FILES` with its FASTA file, or rebuild"
)


@dataclass(frozen=True)
class Region:
    """A genome id, optionally one record (its 0-based index) and a 1-based inclusive range."""

    genome_id: int
    record: int | None = None
    start: int | None = None
    end: int | None = None


def parse_region(spec: str, genome_id: Callable[[str], int | None], records: Callable[[int], list[str]]) -> Region:
    """The region `spec` names. `genome_id(text)` resolves a genome name or id (None: no such
    genome); `records(id)` lists a genome's record names in order. Names may hold ':' (NCBI
    record names such as `CP035101.1:300000-450000` do), so every reading is tried: the last
    part as a range or as part of a record name, the genome name as long or as short as fits.
    A spec that two readings fit is refused, naming both, as a bare name that is also an id is."""
    parts = spec.split(":")
    span = RANGE.match(parts[-1]) if len(parts) > 1 else None
    readings = ([(parts[:-1], span)] if span else []) + [(parts, None)]
    found: dict[Region, str] = {}
    problem = None
    for head, this_span in readings:
        for cut in range(len(head), 0, -1):
            genome = ":".join(head[:cut])
            gid = genome_id(genome)
            if gid is None:
                continue
            record = ":".join(head[cut:]) or None
            try:
                region = _region(spec, gid, record, records(gid), this_span)
            except GenomeIndexError as exc:
                problem = problem or exc
                continue
            found.setdefault(region, _reading(genome, record, this_span))
    if len(found) > 1:
        first, second = list(found.values())[:2]
        raise GenomeIndexError(
            f"{spec!r} reads two ways: {first}, or {second}; name the genome as id:N or the record by its number"
        )
    if found:
        return next(iter(found))
    if problem is not None:
        raise problem
    raise GenomeIndexError(f"{spec!r}: no such genome in this store (give a name or id, then :RECORD and :START-END)")


def _reading(genome: str, record: str | None, span: re.Match | None) -> str:
    """One reading of a region, in words: `genome 'G' record 'r1' bases 1-5`."""
    words = f"genome {genome!r}" + (f" record {record!r}" if record else "")
    return words + (f" bases {span.group(0)}" if span else "")


def _region(spec: str, gid: int, record: str | None, names: list[str], span: re.Match | None) -> Region:
    """The region of one reading of `spec`: genome `gid`, a record name or None, a range or None."""
    start = end = None
    if span:
        start, end = (int(x.replace(",", "")) for x in span.groups())
        if not 1 <= start <= end:
            raise GenomeIndexError(f"{spec!r}: START-END must have 1 <= START <= END (1-based, inclusive)")
    if record is None:
        if span and len(names) != 1:
            raise GenomeIndexError(f"{spec!r}: the genome has {len(names)} records; name one (GENOME:RECORD:START-END)")
        return Region(gid, 0 if span else None, start, end)
    return Region(gid, _record_index(spec, record, names), start, end)


def _record_index(spec: str, name: str, names: list[str]) -> int:
    if name in names:
        return names.index(name)
    if name.isdigit() and 1 <= int(name) <= len(names):
        return int(name) - 1
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    raise GenomeIndexError(
        f"{spec!r}: the genome has no record {name!r} (records: {shown}, or a number 1-{len(names)})"
    )


def region_fasta(
    reader: StoreReader, region: Region, genome_name: str, reverse: bool = False, width: int | None = None
) -> bytes:
    """FASTA of a region: a genome's records, one record, or bases START-END of one record;
    reverse-complemented with `reverse` (its name then ends in /rc, as samtools marks it).
    Lines are `width` bases (0: one line; None: the input's own width)."""
    stored = reader.packed_sequences(region.genome_id)
    if stored is None:
        raise GenomeIndexError(NO_SEQUENCE.format(name=genome_name))
    records = reader.records_of(region.genome_id)
    chosen = range(len(records)) if region.record is None else [region.record]
    out = []
    for index in chosen:
        name, description, length = records[index]
        packed = stored[index]
        header = description
        if region.start is not None and region.end is not None:
            if region.end > length:
                raise GenomeIndexError(
                    f"{genome_name}:{name} is {length:,} bp; {region.start}-{region.end} is outside it"
                )
            sequence = unpack(packed, region.start - 1, region.end)
            header = f"{name}:{region.start}-{region.end}"
        else:
            sequence = unpack(packed)
        if reverse:
            sequence = reverse_complement(sequence)
            first, _, rest = header.partition(" ")
            header = f"{first}/rc" + (f" {rest}" if rest else "")
        out.append(fasta_lines(header, sequence, packed.line_width if width is None else width))
    return b"".join(out)
