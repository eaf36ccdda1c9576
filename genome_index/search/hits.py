"""The rows every interface returns: `Hit`, one stored genome found for one query, and
`GatherRow`, one stored genome found in a sample.

The fields are the columns in order (`HIT_COLUMNS`, `GATHER_COLUMNS`); the genome's labels are
a dict of their own, so a label can never overwrite a field, and `row()` flattens both for
tables, TSV, CSV, JSON and HTTP (a label of a stored genome named like a field of either, from
before such labels were refused, comes out as `label.NAME`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from genome_index.io.labels import typed
from genome_index.search.relation import relation

if TYPE_CHECKING:
    from genome_index.search.candidates import Candidate


@dataclass(frozen=True)
class Hit:
    """A ranked genome: its cosine, sketch and alignment figures (None where not computed)."""

    query: str
    rank: int
    tied: bool
    genome_id: int
    name: str
    file: str
    score: float
    centred_score: float | None
    mode: str
    support: int | None
    containment: float | None
    query_hashes: int | None
    ani_estimate: float | None
    ani_low: float | None
    ani_high: float | None
    identity: float | None
    aligned_bp: int | None
    query_coverage: float | None
    match: float | None
    explained_bp: int | None
    reference_coverage: float | None
    relation: str | None
    target_record: str | None
    target_start: int | None
    target_end: int | None
    strand: str | None
    ranked_by: str
    labels: dict[str, Any] = field(default_factory=dict)
    alignments: list[dict[str, Any]] | None = None  # every alignment of the query to the genome

    def row(self, alignments: bool = False) -> dict[str, Any]:
        """The hit as one flat row: HIT_COLUMNS, `alignments` if asked, then the labels."""
        out = {name: getattr(self, name) for name in HIT_COLUMNS}
        if alignments:
            out["alignments"] = self.alignments
        return with_labels(out, self.labels)


@dataclass(frozen=True)
class GatherRow:
    """One genome found in a sample: the cover's figures (bases as sketch hashes x scaled) and,
    when verified, the mapping's (None where the genome has no stored sequence, or with --no-verify)."""

    sample: str
    rank: int
    genome_id: int
    name: str
    file: str
    unique_bp: int  # sample bases this genome explained first (its unique hashes x scaled)
    shared_bp: int  # sample bases it holds at all
    f_sample: float  # unique hashes / the sample's hashes
    f_genome: float  # the genome's hashes found in the sample / its hashes
    reads: float | None
    mapped_bp: int | None
    abundance: float | None  # share of the sample's mapped bases
    depth: float | None
    breadth: float | None
    identity: float | None
    labels: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        """The genome as one flat row: GATHER_COLUMNS, then the labels."""
        return with_labels({name: getattr(self, name) for name in GATHER_COLUMNS}, self.labels)


HIT_COLUMNS = tuple(f.name for f in dataclasses.fields(Hit) if f.name not in ("labels", "alignments"))
GATHER_COLUMNS = tuple(f.name for f in dataclasses.fields(GatherRow) if f.name != "labels")
RESERVED = {f.name for row in (Hit, GatherRow) for f in dataclasses.fields(row)}  # no label may be called so


def label_column(key: str) -> str:
    """The column a label takes in a flat row."""
    return f"label.{key}" if key in RESERVED else key


def with_labels(fields: dict[str, Any], labels: dict[str, Any]) -> dict[str, Any]:
    """A row's fields, then each label under its column (`label_column`)."""
    return fields | {label_column(key): value for key, value in labels.items()}


def typed_labels(details: dict[str, Any]) -> dict[str, Any]:
    """A genome's labels as rows give them: numbers as numbers, missing ones None."""
    return {key: None if value is None else typed(value) for key, value in details["labels"].items()}


DIGITS = 6  # figures are shown, and compared for ties, to this many decimals


def make_hit(
    query: str,
    rank: int,
    tied: bool,
    found: Candidate,
    mode: str,
    ranked_by: tuple[str, ...],
    details: dict[str, Any],
    species: tuple[float, float] = (0.95, 0.5),
) -> Hit:
    """The Hit of a ranked candidate, figures rounded to DIGITS, labels typed (numbers as numbers);
    an aligned one says how the query relates to the genome, by the species line `species`
    (ANI, aligned fraction of the query)."""
    figures, aligned = found.sketch, found.alignment
    best = aligned.best if aligned else None
    reference = aligned.target_bp / details["length"] if aligned else None
    return Hit(
        query=query,
        rank=rank,
        tied=tied,
        genome_id=found.genome_id,
        name=details["name"],
        file=details["file"],
        score=round(found.score, DIGITS),
        centred_score=rounded(found.centred_score),
        mode=mode,
        support=found.support if mode == "chunks" else None,
        containment=rounded(figures.containment if figures else None),
        query_hashes=figures.query_hashes if figures else None,
        ani_estimate=rounded(figures.ani if figures else None),
        ani_low=rounded(figures.ani_low if figures else None),
        ani_high=rounded(figures.ani_high if figures else None),
        identity=rounded(aligned.identity if aligned else None),
        aligned_bp=aligned.aligned_bp if aligned else None,
        query_coverage=rounded(aligned.query_coverage if aligned else None),
        match=rounded(aligned.match if aligned else None),
        explained_bp=aligned.explained_bp if aligned else None,
        reference_coverage=rounded(reference),
        relation=relation(aligned.identity, aligned.query_coverage, reference, *species) if aligned else None,
        target_record=best.target_record if best else None,
        target_start=best.target_start + 1 if best else None,
        target_end=best.target_end if best else None,
        strand=best.strand if best else None,
        ranked_by=", ".join(ranked_by),
        labels=typed_labels(details),
        alignments=[a.as_dict() for a in aligned.alignments] if aligned else None,
    )


def rounded(value: float | None) -> float | None:
    """A figure as shown: DIGITS decimals (None stays None)."""
    return None if value is None else round(value, DIGITS)
