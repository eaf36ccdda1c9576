"""The README and the docs say what is true: generated parts are current, every command line
they show parses, the tours and the Python examples run as written, the SQL examples answer,
and the README's query output is what the query prints."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from genome_index.api import GenomeIndex
from genome_index.cli import app
from tests.helpers import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import docs  # scripts/docs.py: the generator the docs' cog blocks call

README = ROOT / "README.md"
PAGES = docs.pages()


def fenced(text: str, language: str) -> list[str]:
    """The fenced blocks of `language` in a page's text, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def section(path: Path, heading: str) -> str:
    """One section of a page: from `heading` to the next heading of its level."""
    text = path.read_text()
    start = text.index(heading + "\n")
    end = text.find("\n" + heading.split(" ")[0] + " ", start + len(heading))
    return text[start : end if end > 0 else len(text)]


def command_lines(block: str) -> list[list[str]]:
    """The arguments of each `genome-index` command in a shell block (continuations joined,
    comments, redirections and pipes left out)."""
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if "|" in words or not words or words[0] != "genome-index":
            continue
        cut = [i for i, word in enumerate(words) if word in {">", ">>"}]
        commands.append(words[1 : cut[0] if cut else None])
    return commands


def every_command() -> list[tuple[str, list[str]]]:
    return [
        (f"{page.relative_to(ROOT)}: {' '.join(args)}", args)
        for page in PAGES
        for block in fenced(page.read_text(), "bash")
        for args in command_lines(block)
    ]


def test_the_generated_parts_of_the_docs_are_current() -> None:
    assert docs.run_cog(check=True) == 0, "run `python scripts/docs.py` and commit what it changes"


@pytest.mark.parametrize(("where", "args"), every_command(), ids=[where for where, _ in every_command()])
def test_every_command_the_docs_show_parses(where: str, args: list[str]) -> None:
    command = typer.main.get_command(app)
    name, *rest = args
    assert name in command.commands, f"{where}: no command {name}"
    command.commands[name].make_context(name, rest)  # a wrong option or argument raises a usage error


def run_tour(folder: Path, *blocks: str) -> dict[str, str]:
    """Run every `genome-index` command of `blocks` in `folder`, as a user at a 120-column
    terminal would; the output of each, by its command line (the first, where one runs twice)."""
    outputs = {}
    for block in blocks:
        for args in command_lines(block):
            result = CliRunner().invoke(app, args, env={"COLUMNS": "120", "GENOME_INDEX": None})
            assert result.exit_code == 0, f"genome-index {' '.join(args)}: {result.output}"
            outputs.setdefault(" ".join(args), result.stdout)
    return outputs


@pytest.fixture
def in_examples_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder that holds the repository's examples, as a clone's root does."""
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.slow
def test_the_readme_runs_as_written_and_prints_what_it_shows(in_examples_folder: Path) -> None:
    outputs = run_tour(in_examples_folder, *fenced(section(README, "## Four commands"), "bash"))
    shown = fenced(README.read_text(), "text")[0].split("\n", 1)[1]  # its `$ ...` line left out
    assert outputs["query examples/query.fa -k 5"] == shown
    assert (ROOT / "docs" / "index.md").read_text().count(shown) == 1  # the docs' home page shows it too
    gathered = outputs["gather examples/sample.fq.gz"]
    assert gathered.count("\n") == 4 and gathered in (ROOT / "docs" / "commands" / "search.md").read_text()


@pytest.mark.slow
def test_getting_started_runs_as_written(in_examples_folder: Path) -> None:
    tour = fenced(section(ROOT / "docs" / "getting-started.md", "## A first store"), "bash")
    outputs = run_tour(in_examples_folder, *tour)
    species = next(output for line, output in outputs.items() if "FROM labels" in line)
    assert "S. aureus" in species and "synthetic GC-rich" in species
    assert outputs["query examples/query.fa -k 5"].splitlines()[2].split()[:2] == ["1", "DSM20231"]
    assert (in_examples_folder / "compare-out" / "heatmap.png").is_file()


@pytest.mark.slow
def test_the_python_api_examples_run_as_written(in_examples_folder: Path) -> None:
    for block in fenced((ROOT / "docs" / "python-api.md").read_text(), "python"):
        exec(compile(block, "docs/python-api.md", "exec"), {})  # our own docs' examples
    assert GenomeIndex.open("merged").sql("SELECT count(*) FROM genomes")[1] == [(12,)]


def test_the_sql_examples_answer(nt_tiny_store: Path) -> None:
    statements = [
        s for block in fenced((ROOT / "docs" / "store.md").read_text(), "sql") for s in block.split(";") if s.strip()
    ]
    assert len(statements) >= 5
    index = GenomeIndex.open(nt_tiny_store)
    for statement in statements:
        index.sql(statement)  # a statement the docs show that no longer runs raises here


def test_the_readme_stays_a_screenful_or_two() -> None:
    assert len(README.read_text().splitlines()) <= 120


def test_readme_links_lead_to_pages() -> None:
    for target in re.findall(r"\]\(([^)#]+)", README.read_text()):
        assert (ROOT / target).exists(), target
