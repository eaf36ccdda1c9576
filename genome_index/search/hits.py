"""`Hit`: one stored genome found for one query, as every interface returns it.

The fields are the query's columns in order (`HIT_COLUMNS`); the genome's labels are a dict
of their own, so a label can never overwrite a field, and `row()` flattens both for tables,
TSV, CSV, JSON and HTTP (a label of a stored genome named like a field, from before such
labels were refused, comes out as `label.NAME`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


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
        for key, value in self.labels.items():
            out[label_column(key)] = value
        return out


RESERVED = {f.name for f in dataclasses.fields(Hit)}  # no label may be called so
HIT_COLUMNS = tuple(f.name for f in dataclasses.fields(Hit) if f.name not in ("labels", "alignments"))


def label_column(key: str) -> str:
    """The column a label takes in a flat row."""
    return f"label.{key}" if key in RESERVED else key
