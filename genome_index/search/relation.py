"""How a query relates to a genome it was aligned to: the same genome, the same species, related,
or no close relative, from the alignment of the whole query (not from sampled 21-mers).

The figures are the hit's own: `identity` (matching bases over aligned columns, an ANI by
alignment over a whole genome), `query_coverage` (the query's aligned fraction) and
`reference_coverage` (the genome's). The species line is the field's (ANI 95 % over at least
half the query, as GTDB and skani draw it) and can be moved per query (`QueryOptions.species_ani`,
`species_fraction`); the others are fixed here.
"""

from __future__ import annotations

SAME_GENOME_ANI = 0.9999  # ... and both aligned fractions at least SAME_GENOME_FRACTION
SAME_GENOME_FRACTION = 0.99
RELATED_FRACTION = 0.10  # below this aligned share of the query: no close relative
RELATIONS = ("same genome", "same species", "related", "no close relative")


def relation(
    identity: float | None,
    query_coverage: float,
    reference_coverage: float,
    species_ani: float = 0.95,
    species_fraction: float = 0.5,
) -> str:
    """One of RELATIONS for an aligned hit (identity None: nothing aligned)."""
    if identity is None or query_coverage < RELATED_FRACTION:
        return "no close relative"
    if identity >= SAME_GENOME_ANI and min(query_coverage, reference_coverage) >= SAME_GENOME_FRACTION:
        return "same genome"
    if identity >= species_ani and query_coverage >= species_fraction:
        return "same species"
    return "related"
