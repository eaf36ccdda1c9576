"""Labels: a CSV of label columns for genomes, named by file or genome name; label text as typed values."""

from __future__ import annotations

import csv
import re
from collections.abc import Collection
from pathlib import Path
from typing import Any

from genome_index.errors import GenomeIndexError
from genome_index.io.fasta import Genome

NUMBER = re.compile(r"-?(0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)?")  # no leading zeros: "007" stays text


def read_labels(path: Path, reserved: Collection[str] = ()) -> dict[str, dict[str, str]]:
    """Labels CSV -> {file name or genome name: {column: value}}; needs a `file` or `name` column.
    A column named like one of `reserved` (the fields of a query's or a gather's rows) is refused."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            key = "file" if "file" in columns else "name" if "name" in columns else None
            if key is None:
                raise GenomeIndexError(f"{path}: labels CSV needs a 'file' or 'name' column (has {columns})")
            clashes = [c for c in columns if c in reserved and c not in ("file", "name")]
            if clashes:
                raise GenomeIndexError(
                    f"{path}: label column {clashes[0]!r} is the name of a field of query or gather rows; rename it "
                    f"(fields: {', '.join(sorted(reserved))})"
                )
            rows = list(reader)
    except OSError as exc:
        raise GenomeIndexError(f"{path}: cannot read labels ({exc.strerror})") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise GenomeIndexError(f"{path}: not a readable CSV file ({exc})") from None
    labels = {}
    for line, row in enumerate(rows, start=2):
        ident = (row.get(key) or "").strip()
        if not ident:
            raise GenomeIndexError(f"{path}:{line}: empty {key!r}")
        labels[ident] = {k: v for k, v in row.items() if k not in ("file", "name") and k is not None}
    return labels


def label_keys(genome: Genome, name: str | None = None) -> list[str]:
    """The names a labels CSV may use for a genome: file name, path, its name in the store
    (`name`, where it differs from the file stem) and its file stem."""
    return list(dict.fromkeys([genome.path.name, str(genome.path), *([name] if name else []), genome.name]))


def typed(value: str) -> Any:
    """A label's text as a number where it is one (`3079932`, `0.5`), else the text itself
    (identifiers such as `007` or `1e` stay text)."""
    if not NUMBER.fullmatch(value):
        return value
    number = float(value)
    return int(value) if re.fullmatch(r"-?\d+", value) else number
