"""Output: tables that fit a terminal, machine formats that carry everything, numbers kept numbers."""

from __future__ import annotations

import json

import pytest

from genome_index.cli.output import TABLE_WIDTH, choose, human_bytes, render, render_dicts, shorten, write_rows
from genome_index.errors import GenomeIndexError
from genome_index.io.labels import typed


@pytest.mark.parametrize(
    ("text", "value"),
    [("3079932", 3079932), ("-4", -4), ("0.5", 0.5), ("1e-3", 0.001), ("007", "007"), ("1e", "1e"),
     ("nan", "nan"), ("S. aureus", "S. aureus"), ("", ""), ("0", 0)],
)  # fmt: skip
def test_label_text_becomes_a_number_only_where_it_is_one(text: str, value) -> None:
    assert typed(text) == value and type(typed(text)) is type(value)


def test_json_keeps_numbers_numbers_and_missing_values_null() -> None:
    rows = [{"rank": 1, "score": 0.5, "size": typed("3079932"), "st": typed("007"), "host": None}]
    assert json.loads(render_dicts(rows, "json")) == rows


@pytest.mark.parametrize("fmt", ["tsv", "csv"])
def test_machine_formats_keep_full_precision(fmt: str) -> None:
    text = render(["x"], [[0.123456789]], fmt)
    assert text.splitlines()[1] == "0.123456789"


def test_a_long_name_is_shortened_in_the_middle() -> None:
    name = "GCA_006094915.1_ASM609491v1_genomic_with_a_very_long_strain_name"
    short = shorten(name, 36)
    assert len(short) == 36 and short.startswith("GCA_006094915") and short.endswith("strain_name") and "…" in short
    assert shorten("short", 36) == "short"


@pytest.mark.parametrize("width", [60, 100, 200])
def test_a_table_is_cut_only_where_it_does_not_fit_the_terminal(width: int, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", str(width))
    name = "GCA_006094915.1_ASM609491v1_genomic_with_a_very_long_strain_name"  # 63 characters
    rows = [[1, name, "Staphylococcus aureus subsp. aureus"], [2, "short", "x"]]
    lines = render(["rank", "name", "species"], rows).splitlines()
    assert max(len(line) for line in lines) <= width
    assert (name in lines[2]) == (width >= 4 + 63 + 35 + 2 * 2)  # the widest column is cut first ...
    assert ("Staphylococcus aureus subsp. aureus" in lines[2]) == (width >= 4 + 35 + 35 + 2 * 2)  # ... to the next
    assert lines[3].split() == ["2", "short", "x"]  # short cells are never cut


def test_a_column_of_numbers_shows_one_number_of_decimals() -> None:
    lines = render(["identity", "n", "tiny"], [[1.0, 3, 1.5e-9], [0.9995, 12, 2.0], [None, 7, 0.5]]).splitlines()
    assert [line.split()[0] for line in lines[2:4]] == ["1.0000", "0.9995"]  # not "1" beside "0.9995"
    assert lines[4].split()[0] == "7" and lines[2].split()[-1] == "1.5e-09"  # blanks stay blank; no fixed 0.000000


@pytest.mark.parametrize("fmt", ["table", "tsv", "csv", "json"])
def test_rows_in_batches_read_as_rows_at_once(fmt: str) -> None:
    rows = [[i, f"name {i}", i / 7] for i in range(25)]
    parts: list[str] = []
    written = write_rows(["id", "name", "x"], [rows[:10], rows[10:20], rows[20:]], fmt, parts.append, width=200)
    lines = "".join(parts).splitlines()
    if fmt == "table":  # laid out by the first batch: a later, wider cell is cut to its column
        assert written == 25 and len(lines) == 27 and lines[12].split() == ["10", "na…", "10", "1.428571"]
    else:
        assert written == 25 and "".join(parts) == render(["id", "name", "x"], rows, fmt)
    if fmt == "json":
        assert json.loads("".join(parts))[24] == {"id": 24, "name": "name 24", "x": 24 / 7}
        assert render(["a"], [], "json") == "[]\n"


def test_the_table_adds_label_columns_while_it_fits() -> None:
    rows = [
        {"rank": i, "name": f"genome_{i}_" + "x" * 40, "score": 0.9, **{f"label{j}": "value " * 4 for j in range(10)}}
        for i in range(3)
    ]
    columns = list(rows[0])
    chosen = choose(columns, rows, "table", brief=["rank", "name", "score"], optional=columns[3:])
    assert chosen[:3] == ["rank", "name", "score"] and 0 < len(chosen) - 3 < 10
    lines = render_dicts(rows, "table", chosen).splitlines()
    assert max(len(line) for line in lines) <= TABLE_WIDTH
    for fmt in ("tsv", "csv", "json"):
        assert choose(columns, rows, fmt, brief=["rank"], optional=columns[3:]) == columns


def test_columns_choose_in_any_format_and_unknown_ones_are_named() -> None:
    columns = ["rank", "name", "file", "score"]
    assert choose(columns, [], "json", "name, score") == ["name", "score"]
    with pytest.raises(GenomeIndexError, match="no column 'nmae'; choose from rank, name, file, score"):
        choose(columns, [], "table", "nmae")


@pytest.mark.parametrize(("size", "text"), [(0, "0 B"), (512, "512 B"), (4993024, "4.8 MiB"), (3 << 30, "3.0 GiB")])
def test_sizes_read_like_ls_h(size: int, text: str) -> None:
    assert human_bytes(size) == text
