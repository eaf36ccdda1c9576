"""Render result rows as an aligned table, TSV, CSV or JSON on stdout.

TSV, CSV and JSON carry every column; JSON keeps numbers as numbers. The table is for
reading: it shows a command's few most useful columns (and label columns while the line
stays within TABLE_WIDTH), with long names shortened in the middle. `--columns` chooses for
every format.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence
from typing import Any

from genome_index.errors import GenomeIndexError

FORMATS = ("table", "tsv", "csv", "json")
TABLE_WIDTH = 120  # characters a table line may take when it adds optional columns
CELL_WIDTH = 36  # longer table cells are shortened in the middle
# The table's columns (labels added while they fit): aligned hits, and hits without alignment.
HIT_TABLE_COLUMNS = ("rank", "name", "identity", "query_coverage", "target_record", "target_start", "strand")
HIT_TABLE_UNALIGNED = ("rank", "name", "score", "support", "containment", "ani_estimate")
NUMBER = re.compile(r"-?(0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)?")  # no leading zeros: "007" stays text


def typed(value: str) -> Any:
    """A label's text as a number where it is one (`3079932`, `0.5`), else the text itself
    (identifiers such as `007` or `1e` stay text)."""
    if not NUMBER.fullmatch(value):
        return value
    number = float(value)
    return int(value) if re.fullmatch(r"-?\d+", value) else number


def human_bytes(size: int) -> str:
    """Bytes in binary units as `ls -h` shows them: 512 B, 4.8 MiB, 1.2 GiB."""
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    value, unit = float(size), 0
    while value >= 1024 and unit < len(units) - 1:
        value, unit = value / 1024, unit + 1
    return f"{size} B" if unit == 0 else f"{value:.1f} {units[unit]}"


def _text(value: Any, table: bool) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}" if table else repr(value)
    return str(value)


def shorten(text: str, width: int = CELL_WIDTH) -> str:
    """`text` cut to `width` characters by an ellipsis in the middle (both ends kept: NCBI
    names differ at the start, file names at the end)."""
    if len(text) <= width:
        return text
    head = (width - 1) // 2
    return f"{text[:head]}…{text[len(text) - (width - 1 - head) :]}"


def render(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str = "table") -> str:
    """The rows in the chosen format, ending with a newline (empty table: just the header)."""
    if fmt == "json":
        return json.dumps([dict(zip(columns, row, strict=True)) for row in rows], indent=2, default=str) + "\n"
    if fmt in ("tsv", "csv"):
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter="\t" if fmt == "tsv" else ",", lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[_text(v, table=False) for v in row] for row in rows])
        return buffer.getvalue()
    if fmt != "table":
        raise ValueError(f"unknown format {fmt!r}")
    cells = [[shorten(_text(v, table=True)) for v in row] for row in rows]
    widths = _widths(columns, cells)
    numeric = [all(_is_number(r[i]) or r[i] is None for r in rows) and bool(rows) for i in range(len(columns))]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    out = [line(columns), line(["-" * w for w in widths])]
    out.extend(line(r) for r in cells)
    return "\n".join(out) + "\n"


def _widths(columns: Sequence[str], cells: Sequence[Sequence[str]]) -> list[int]:
    return [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def column_names(rows: Sequence[dict[str, Any]], known: Sequence[str] = ()) -> list[str]:
    """`known` columns first, then every other key in first-seen order."""
    columns = list(known)
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    return columns


def choose(
    columns: Sequence[str],
    rows: Sequence[dict[str, Any]],
    fmt: str,
    wanted: str | None = None,
    brief: Sequence[str] = (),
    optional: Sequence[str] = (),
) -> list[str]:
    """The columns to print: `wanted` (comma-separated, any format) if given; every column in
    tsv, csv and json; in a table, the `brief` ones plus each of `optional` (labels) while the
    line stays within TABLE_WIDTH."""
    if wanted:
        chosen = [c.strip() for c in wanted.split(",") if c.strip()]
        unknown = [c for c in chosen if c not in columns]
        if unknown:
            raise GenomeIndexError(f"--columns: no column {unknown[0]!r}; choose from {', '.join(columns)}")
        return chosen
    if fmt != "table" or not brief:
        return list(columns)
    chosen = [c for c in brief if c in columns]
    for extra in optional:
        trial = [*chosen, extra]
        cells = [[shorten(_text(row.get(c), table=True)) for c in trial] for row in rows]
        if sum(_widths(trial, cells)) + 2 * (len(trial) - 1) > TABLE_WIDTH:
            break
        chosen = trial
    return chosen


def render_dicts(
    rows: Sequence[dict[str, Any]],
    fmt: str = "table",
    columns: Sequence[str] | None = None,
) -> str:
    """Rows given as dicts, with `columns` (default: every key, in first-seen order)."""
    columns = list(columns) if columns is not None else column_names(rows)
    return render(columns, [[row.get(c) for c in columns] for row in rows], fmt)
