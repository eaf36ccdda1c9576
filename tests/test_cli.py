"""The command line end to end, through typer's CliRunner, on real files in tmp_path."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from genome_index.cli import app
from tests.conftest import write_fasta

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("genome-index: error:")
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in result.output


def test_version() -> None:
    result = run("--version")
    assert result.exit_code == 0 and result.stdout.startswith("genome-index ")


def test_embed_writes_one_row_per_chunk(tmp_path: Path, example_genomes) -> None:
    out = tmp_path / "emb.parquet"
    result = run("embed", *example_genomes[:2], "--model", "nt-tiny", "--layer", "2", "--out", out)
    assert result.exit_code == 0, result.output
    table = pq.read_table(out)
    assert table.column_names == ["file", "genome", "record", "start", "end", "n_tokens", "embedding"]
    rows = table.to_pylist()
    assert {r["genome"] for r in rows} == {p.name.removesuffix(".fna.gz") for p in example_genomes[:2]}
    assert all(len(r["embedding"]) == 128 and 1 < r["n_tokens"] <= 1000 for r in rows)
    assert "layer 2" in result.stderr


def test_embed_quiet_prints_nothing(tmp_path: Path) -> None:
    fasta = write_fasta(tmp_path / "g.fa", [("r", "ACGT" * 100)])
    result = run("embed", fasta, "--out", tmp_path / "e.parquet", "--quiet")
    assert result.exit_code == 0
    assert result.stderr == "" and result.stdout == ""


@pytest.mark.parametrize(
    ("content", "fragment"),
    [(b"not fasta\n", "not FASTA"), (b"", "empty file"), (b">p\nMKTAYIAKQRQISFVKSHFSRQ\n", "protein")],
)
def test_embed_bad_input_one_line_and_no_output(tmp_path: Path, content: bytes, fragment: str) -> None:
    bad = tmp_path / "bad.fa"
    bad.write_bytes(content)
    out = tmp_path / "e.parquet"
    one_line_error(run("embed", bad, "--out", out), fragment, "bad.fa")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [bad]


def test_embed_bad_layer(tmp_path: Path) -> None:
    fasta = write_fasta(tmp_path / "g.fa", [("r", "ACGT" * 10)])
    one_line_error(run("embed", fasta, "--out", tmp_path / "e.parquet", "--layer", "9"), "layer 9")
