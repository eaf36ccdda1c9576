"""Render result rows as an aligned table, TSV, CSV or JSON on stdout."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

FORMATS = ("table", "tsv", "csv", "json")


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def render(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str = "table") -> str:
    """The rows in the chosen format, ending with a newline (empty table: just the header)."""
    if fmt == "json":
        return json.dumps([dict(zip(columns, row, strict=True)) for row in rows], indent=2, default=str) + "\n"
    if fmt in ("tsv", "csv"):
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter="\t" if fmt == "tsv" else ",", lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[_text(v) for v in row] for row in rows])
        return buffer.getvalue()
    if fmt != "table":
        raise ValueError(f"unknown format {fmt!r}")
    cells = [[_text(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    numeric = [all(_is_number(r[i]) for r in rows) and bool(rows) for i in range(len(columns))]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    out = [line(columns), line(["-" * w for w in widths])]
    out.extend(line(r) for r in cells)
    return "\n".join(out) + "\n"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def render_dicts(rows: Sequence[dict[str, Any]], fmt: str = "table") -> str:
    """Rows given as dicts (columns in first-seen order)."""
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    return render(columns, [[row.get(c) for c in columns] for row in rows], fmt)
