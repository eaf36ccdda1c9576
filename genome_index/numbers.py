"""How many decimals a set of numbers needs: enough to tell them apart, never a false whole number.

Similarities of close genomes differ in the fifth or sixth decimal (0.999995 beside a diagonal
of 1.0); a fixed number of decimals either hides that or prints noise. Tables, summaries and
heatmap cells all ask here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


def decimals_to_tell_apart(values: Iterable[float], least: int = 0, most: int = 10) -> int:
    """The fewest decimals, from `least` to `most`, at which distinct values read differently
    and no value that is not a whole number reads as one (0.999995 never as 1.00000)."""
    distinct = sorted({float(v) for v in values if math.isfinite(v)})
    for decimals in range(least, most + 1):
        texts = [f"{v:.{decimals}f}" for v in distinct]
        if len(set(texts)) == len(texts) and all(
            v == round(v) or float(text) != round(v) for v, text in zip(distinct, texts, strict=True)
        ):
            return decimals
    return most
