"""Progress: a bar on a terminal, a line a minute in a log file, nothing when quiet; every
long command reports its steps (bases, windows, genomes, vectors) on stderr."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from typer.testing import CliRunner

import genome_index.progress as progress
from genome_index.api import GenomeIndex
from genome_index.cli import app
from genome_index.progress import Shown, duration
from tests.helpers import EXAMPLES, copy_store


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_lines_with_totals_learnt_late_counters_rate_and_time_left(monkeypatch) -> None:
    monkeypatch.setattr(progress, "LOG_EVERY", 0.0)
    log = io.StringIO()
    with Shown(stream=log).step("building", None, "bp", genomes=3) as step:
        step.advance(1_500_000, windows=10)
        step.set_total(6_000_000)
        step.advance(1_500_000, windows=10, genomes=1)
    lines = log.getvalue().splitlines()
    assert lines[0].startswith("building: 1.50 Mbp, 0/3 genomes, 10 windows, ")  # no total yet: no ETA
    assert lines[1].startswith("building: 3.00 of 6.00 Mbp (50 %), 1/3 genomes, 20 windows, ")
    assert lines[1].endswith(" left") and " Mbp/s" in lines[1]
    assert lines[2].startswith("building: 3.00 of 6.00 Mbp (50 %)") and "done in" in lines[2]
    assert len(lines) == 3


def test_a_gauge_shows_its_latest_value_beside_the_counters(monkeypatch) -> None:
    monkeypatch.setattr(progress, "LOG_EVERY", 0.0)
    log = io.StringIO()
    with Shown(stream=log).step("building on Ray", 2_000_000, "bp", genomes=2) as step:
        step.gauge(actors=4)
        step.advance(1_000_000, genomes=1)
        step.gauge(actors=3)
        step.advance(1_000_000, genomes=1)
    lines = log.getvalue().splitlines()
    assert lines[0].startswith("building on Ray: 1.00 of 2.00 Mbp (50 %), 1/2 genomes, 4 actors, ")
    assert lines[1].startswith("building on Ray: 2.00 of 2.00 Mbp (100 %), 2/2 genomes, 3 actors, ")


def test_a_log_hears_nothing_of_a_step_shorter_than_a_minute() -> None:
    log = io.StringIO()
    with Shown(stream=log).step("indexing", 1000, "vectors") as step:
        step.advance(1000)
    assert log.getvalue() == ""


def test_a_terminal_gets_a_bar_once_a_step_outlasts_the_delay(monkeypatch) -> None:
    monkeypatch.setattr(progress, "BAR_DELAY", 0.0)
    terminal = Terminal()
    with Shown(stream=terminal).step("building", 2_000_000, "bp", genomes=2) as step:
        step.advance(1_000_000, windows=5, genomes=1)
    shown = terminal.getvalue()
    assert "building" in shown and "50%" in shown and "Mbp" in shown and "1/2 genomes, 5 windows" in shown


@pytest.mark.parametrize("stream", [io.StringIO, Terminal])
def test_quiet_shows_nothing(monkeypatch, stream) -> None:
    monkeypatch.setattr(progress, "LOG_EVERY", 0.0)
    monkeypatch.setattr(progress, "BAR_DELAY", 0.0)
    out = stream()
    with Shown(quiet=True, stream=out).step("building", 10, "bp") as step:
        step.advance(5)
    assert out.getvalue() == ""


@pytest.mark.parametrize(("seconds", "text"), [(12.4, "12s"), (185, "3m05s"), (3720, "1h02m")])
def test_durations_read_like_a_clock(seconds: float, text: str) -> None:
    assert duration(seconds) == text


# -- every long command reports its steps ------------------------------------------------


@pytest.fixture(scope="module")
def kmer_store(tmp_path_factory, example_genomes) -> Path:
    directory = tmp_path_factory.mktemp("progress") / "index"
    GenomeIndex(directory).build(example_genomes, model="kmer:4")
    return directory


def commands(store: Path, tmp_path: Path, example_genomes: list[Path]) -> dict[str, tuple[list, list[str]]]:
    """Each command and the progress lines (their starts) it must write."""
    labelled = EXAMPLES / "labelled"
    return {
        "build": (
            ["build", *example_genomes, "-i", tmp_path / "new", "-m", "kmer:4"],
            ["building: 0.", "/4 genomes", "windows"],
        ),
        "query": (
            ["query", EXAMPLES / "query.fa", "-i", store, "--mode", "chunks"],
            ["embedding the query", "searching"],
        ),
        "evaluate": (
            ["evaluate", labelled, "--labels", EXAMPLES / "labels.csv", "--label", "species", "-m", "kmer:4"],
            ["reading the genomes", "embedding with kmer:4"],
        ),
        "compare --ani": (["compare", "-i", store, "-o", tmp_path / "cmp", "--ani"], ["ANI with skani"]),
        "merge": (
            ["merge", tmp_path / "merged", store],
            ["merging", "indexing chunks.faiss", "indexing genomes.faiss"],
        ),
        "reindex": (["reindex", "-i", store], ["indexing chunks.faiss", "indexing genomes.faiss"]),
    }


@pytest.mark.parametrize("command", ["build", "query", "evaluate", "compare --ani", "merge", "reindex"])
@pytest.mark.parametrize("quiet", [False, True], ids=["shown", "quiet"])
@pytest.mark.slow
def test_every_long_command_reports_its_steps_unless_quiet(
    kmer_store: Path, tmp_path: Path, example_genomes, monkeypatch, command: str, quiet: bool
) -> None:
    monkeypatch.setattr(progress, "LOG_EVERY", 0.0)  # a log line at every report
    store = copy_store(kmer_store, tmp_path)
    args, expected = commands(store, tmp_path, example_genomes)[command]
    result = CliRunner().invoke(app, [str(a) for a in args] + (["-q"] if quiet else []))
    assert result.exit_code == 0, result.output
    progress_lines = [line for line in result.stderr.splitlines() if "%" in line or "done in" in line]
    if quiet:
        assert progress_lines == []
    else:
        for fragment in expected:
            assert any(fragment in line for line in progress_lines), (fragment, result.stderr)


def test_a_build_names_its_duplicates_up_front_and_leaves_them_out_of_its_totals(
    kmer_store: Path, tmp_path: Path, example_genomes, monkeypatch
) -> None:
    """The report read "14.78 of 14.78 Mbp, 5/5 genomes", then "added 4 genome(s) ... 11.70 Mbp"."""
    import shutil

    from genome_index.io.fasta import read_genome

    monkeypatch.setattr(progress, "LOG_EVERY", 0.0)
    twin = tmp_path / "in" / "twin.fna.gz"
    twin.parent.mkdir()
    shutil.copy(example_genomes[1], twin)
    inputs = [*example_genomes, twin]
    result = CliRunner().invoke(app, ["build", *map(str, inputs), "-i", str(tmp_path / "new"), "-m", "kmer:4"])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    named = next(i for i, line in enumerate(lines) if line.startswith(f"duplicate: {twin}"))
    assert named < next(i for i, line in enumerate(lines) if "done in" in line)  # named before the build ends
    bases = sum(read_genome(p).length for p in example_genomes) / 1e6
    final = next(line for line in lines if "done in" in line)
    assert f"{bases:.2f} of {bases:.2f} Mbp (100 %), 4/4 genomes" in final
    assert "added 4 genome(s), " in lines[-1] and f"{bases:.2f} Mbp" in lines[-1] and "1 duplicate(s)" in lines[-1]


def test_labels_for_stored_genomes_read_each_input_once(kmer_store: Path, tmp_path: Path, example_genomes, monkeypatch):
    """Setting labels with nothing to add once read every input twice (the check, then to embed)."""
    from genome_index.embedding import pipeline
    from genome_index.io import fasta

    store = copy_store(kmer_store, tmp_path)
    labels = tmp_path / "labels.csv"
    labels.write_text("file,host\n" + "".join(f"{p.name},human\n" for p in example_genomes))
    opened: list[str] = []
    real = fasta._open_lines
    monkeypatch.setattr(fasta, "_open_lines", lambda path: opened.append(Path(path).name) or real(path))
    monkeypatch.setattr(pipeline, "read_genome", lambda path: pytest.fail(f"{path} read again to embed"))
    report = GenomeIndex.open(store).build(example_genomes, labels=labels)
    assert report.labelled == 4 and not report.added and len(report.already) == 4
    assert sorted(opened) == sorted(p.name for p in example_genomes)
