"""Render result rows as an aligned table, TSV, CSV or JSON on stdout, in batches where they stream.

TSV, CSV and JSON carry every column and every digit; JSON keeps numbers as numbers. The table
is for reading: it shows a command's few most useful columns (and label columns while the
line fits the terminal), each column of numbers with one number of decimals, and cuts long
cells in the middle only where the table would not fit the terminal ($COLUMNS, else the
terminal's width, else TABLE_WIDTH). `--columns` chooses for every format.
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from genome_index.errors import GenomeIndexError
from genome_index.numbers import decimals_to_tell_apart

FORMATS = ("table", "tsv", "csv", "json")
TABLE_WIDTH = 120  # a table's width where no terminal says (piped, or $COLUMNS unset)
MIN_CELL = 8  # a column cut to fit the terminal keeps at least this many characters
MAX_DECIMALS = 10
# The table's columns (labels added while they fit): aligned hits, and hits without alignment.
HIT_TABLE_COLUMNS = ("rank", "name", "identity", "query_coverage", "target_record", "target_start", "target_end",
                     "strand")  # fmt: skip
HIT_TABLE_UNALIGNED = ("rank", "name", "score", "support", "containment", "ani_estimate")
GATHER_TABLE_COLUMNS = ("rank", "name", "f_sample", "f_genome", "abundance", "depth", "breadth", "identity")


def human_bytes(size: int) -> str:
    """Bytes in binary units as `ls -h` shows them: 512 B, 4.8 MiB, 1.2 GiB."""
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    value, unit = float(size), 0
    while value >= 1024 and unit < len(units) - 1:
        value, unit = value / 1024, unit + 1
    return f"{size} B" if unit == 0 else f"{value:.1f} {units[unit]}"


def terminal_width() -> int:
    """The width a table may take: $COLUMNS, else the terminal's, else TABLE_WIDTH."""
    return shutil.get_terminal_size((TABLE_WIDTH, 24)).columns


def shorten(text: str, width: int) -> str:
    """`text` cut to `width` characters by an ellipsis in the middle (both ends kept: NCBI
    names differ at the start, file names at the end)."""
    if len(text) <= width:
        return text
    head = (width - 1) // 2
    return f"{text[:head]}…{text[len(text) - (width - 1 - head) :]}"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _decimals(values: Sequence[Any]) -> int | None:
    """The fixed decimals a column of numbers is shown with: as many as its most precise value
    needs at six significant digits (so 1 and 0.9995 read 1.0000 and 0.9995), more where values
    would otherwise read alike or as a whole number they are not; None for a column of whole
    numbers, text, or values too large or small for fixed decimals."""
    floats = [v for v in values if isinstance(v, float) and math.isfinite(v)]
    if not floats or not all(_is_number(v) or v is None or isinstance(v, float) for v in values):
        return None
    places = 0
    for value in floats:
        text = f"{value:.6g}"
        if "e" in text:
            return None
        places = max(places, len(text.partition(".")[2]))
    return decimals_to_tell_apart(floats, least=min(places, MAX_DECIMALS), most=MAX_DECIMALS)


class TableLayout:
    """How a table shows its columns: each column's decimals and width, cut to fit `width`
    characters only where the natural widths do not fit (the widest columns are cut first,
    none below MIN_CELL). Made from a sample of rows, so rows streamed later fit it too."""

    def __init__(self, columns: Sequence[str], sample: Sequence[Sequence[Any]], width: int | None = None) -> None:
        self.columns = list(columns)
        self.decimals = [_decimals([row[i] for row in sample]) for i in range(len(columns))]
        self.numeric = [
            bool(sample) and all(_is_number(row[i]) or row[i] is None for row in sample) for i in range(len(columns))
        ]
        natural = [max([len(name)] + [len(self.text(i, row[i])) for row in sample]) for i, name in enumerate(columns)]
        self.widths = _fit(natural, terminal_width() if width is None else width)

    def text(self, i: int, value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, float) and self.decimals[i] is not None:
            return f"{value:.{self.decimals[i]}f}"
        if isinstance(value, float):
            return f"{value:.6g}"
        return str(value)

    def line(self, values: Sequence[Any], cells: bool = True) -> str:
        texts = [self.text(i, v) if cells else str(v) for i, v in enumerate(values)]
        parts = [
            shorten(t, w).rjust(w) if num and cells else shorten(t, w).ljust(w)
            for t, w, num in zip(texts, self.widths, self.numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    def head(self) -> str:
        return self.line(self.columns, cells=False) + "\n" + self.line(["-" * w for w in self.widths], cells=False)


def _fit(natural: list[int], width: int) -> list[int]:
    """Column widths within `width` characters (two spaces between columns): the natural ones
    where they fit, else every column wider than a cap cut to it (the largest cap that fits, not
    below MIN_CELL)."""
    room = width - 2 * (len(natural) - 1)
    if sum(natural) <= room:
        return natural
    cap = max(natural)
    while cap > MIN_CELL and sum(min(w, cap) for w in natural) > room:
        cap -= 1
    return [min(w, cap) for w in natural]


def render(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str = "table", width: int | None = None) -> str:
    """The rows in the chosen format, ending with a newline (empty table: just the header)."""
    out = io.StringIO()
    write_rows(columns, [rows], fmt, out.write, width)
    return out.getvalue()


def write_rows(
    columns: Sequence[str],
    batches: Iterable[Sequence[Sequence[Any]]],
    fmt: str,
    write: Callable[[str], Any],
    width: int | None = None,
) -> int:
    """Write rows that come in batches, each batch as it comes (memory bounded by a batch); a
    table takes its layout from the first batch. Returns the rows written."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}")
    count = 0
    if fmt in ("tsv", "csv"):
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter="\t" if fmt == "tsv" else ",", lineterminator="\n")
        writer.writerow(columns)
        for batch in batches:
            writer.writerows([[_text(v) for v in row] for row in batch])
            count += len(batch)
            write(buffer.getvalue())
            buffer.seek(0)
            buffer.truncate()
        write(buffer.getvalue())
        return count
    if fmt == "json":
        for batch in batches:
            for row in batch:
                item = json.dumps(dict(zip(columns, row, strict=True)), indent=2, default=str)
                write(("[\n" if not count else ",\n") + "  " + item.replace("\n", "\n  "))
                count += 1
        write("\n]\n" if count else "[]\n")
        return count
    layout = None
    for batch in batches:
        if layout is None:
            layout = TableLayout(columns, batch, width)
            write(layout.head() + "\n")
        write("".join(layout.line(row) + "\n" for row in batch))
        count += len(batch)
    if layout is None:
        write(TableLayout(columns, [], width).head() + "\n")
    return count


def _text(value: Any) -> str:
    """A value in TSV and CSV: every digit kept."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


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
    line fits the terminal uncut."""
    if wanted:
        chosen = [c.strip() for c in wanted.split(",") if c.strip()]
        unknown = [c for c in chosen if c not in columns]
        if unknown:
            raise GenomeIndexError(f"--columns: no column {unknown[0]!r}; choose from {', '.join(columns)}")
        return chosen
    if fmt != "table" or not brief:
        return list(columns)
    chosen = [c for c in brief if c in columns]
    room = terminal_width()
    for extra in optional:
        trial = [*chosen, extra]
        layout = TableLayout(trial, [[row.get(c) for c in trial] for row in rows], width=1 << 30)
        if sum(layout.widths) + 2 * (len(trial) - 1) > room:
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
