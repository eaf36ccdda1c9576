"""Data never grants permission: a store, genome-index.toml or an HTTP request cannot switch on
running a checkpoint's code, importing a package or joining a Ray cluster; only the user's own
flag or environment variable in this run can. Checked per command, through the CLI and HTTP."""

from __future__ import annotations

import sys
from pathlib import Path

import duckdb
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from genome_index.api import GenomeIndex
from genome_index.cli import app
from genome_index.config import PACKAGE_ENV, TRUST_ENV
from genome_index.errors import GenomeIndexError
from genome_index.server.app import create_app
from genome_index.settings import ModelOptions, RunOptions
from tests import families
from tests.helpers import copy_store, one_line_error, write_fasta

CPU = RunOptions(device="cpu")


def run(*args: object, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], env=env, catch_exceptions=False)


@pytest.fixture(autouse=True)
def no_grants_in_the_environment(monkeypatch) -> None:
    monkeypatch.delenv(TRUST_ENV, raising=False)
    monkeypatch.delenv(PACKAGE_ENV, raising=False)


@pytest.fixture(scope="module")
def own_code_store(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A store built with a checkpoint that ships its own code (an NT v2 double), the user
    granting it at build time; and a genome to add and a query."""
    folder = tmp_path_factory.mktemp("own-code")
    checkpoint = families.custom("ntv2", folder / "ntv2")
    genome = write_fasta(folder / "g.fa", [("r", "ACGTTGCAAGGCTTAACGGT" * 60)])
    more = write_fasta(folder / "h.fa", [("r", "TTGACCGGATACAGTTCAGA" * 60)])
    index = folder / "index"
    GenomeIndex(index).build([genome], ModelOptions(model=str(checkpoint), trust_remote_code=True), run=CPU)
    return index, more, genome


def test_the_store_records_that_its_model_ran_its_own_code(own_code_store) -> None:
    index, _, _ = own_code_store
    settings = GenomeIndex.open(index).settings()
    assert settings.trust_remote_code is True and "ntv2_modeling" in settings.model_class


@pytest.mark.parametrize("command", ["query", "build", "serve"])
def test_each_command_needs_the_users_own_flag_for_a_store_of_own_code(command: str, own_code_store) -> None:
    index, more, query = own_code_store
    argument = {"query": [query], "build": [more], "serve": []}[command]
    one_line_error(run(command, *argument, "-i", index), "runs its own code", "--trust-remote-code", TRUST_ENV)


@pytest.mark.parametrize("grant", ["flag", "environment"])
@pytest.mark.slow
def test_the_flag_or_the_environment_variable_grants_it(grant: str, own_code_store, tmp_path: Path) -> None:
    built, more, query = own_code_store
    index = copy_store(built, tmp_path)
    flag, env = (["--trust-remote-code"], None) if grant == "flag" else ([], {TRUST_ENV: "1"})
    found = run("query", query, "-i", index, "-k", "1", "--no-align", "-f", "tsv", "-c", "genome_id", *flag, env=env)
    assert found.exit_code == 0, found.output
    assert found.stdout.splitlines() == ["genome_id", "1"]
    added = run("build", more, "-i", index, *flag, env=env)
    assert added.exit_code == 0 and "added 1 genome" in added.stderr, added.output


@pytest.mark.slow
def test_the_python_api_needs_the_grant_too(own_code_store) -> None:
    index, _, query = own_code_store
    store = GenomeIndex.open(index)
    with pytest.raises(GenomeIndexError, match="runs its own code"):
        store.searcher(CPU)
    hits = store.query(query, run=CPU, trust_remote_code=True)
    assert hits[0].genome_id == 1


def test_an_http_request_cannot_ask_for_code(own_code_store) -> None:
    index = GenomeIndex.open(own_code_store[0])
    with index.searcher(CPU, trust_remote_code=True) as searcher:
        client = TestClient(create_app(index, searcher))
        asked = client.post("/query", json={"sequence": "ACGT" * 100, "trust_remote_code": True})
        assert asked.status_code == 422 and "trust_remote_code" in asked.json()["detail"]
        assert client.post("/query?trust_remote_code=true", content=">q\n" + "ACGT" * 100).status_code == 422


def evil_checkpoint(folder: Path, marker: Path) -> Path:
    """A checkpoint folder whose configuration module writes `marker` when it is imported."""
    folder.mkdir()
    (folder / "config.json").write_text(
        '{"model_type": "evil", "auto_map": {"AutoConfig": "configuration_evil.EvilConfig", '
        '"AutoModel": "modeling_evil.EvilModel"}}'
    )
    (folder / "configuration_evil.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        "from transformers import PretrainedConfig\n\n\nclass EvilConfig(PretrainedConfig):\n    model_type = 'evil'\n"
    )
    (folder / "modeling_evil.py").write_text("EvilModel = None\n")
    return folder


def tamper(index: Path, **settings: str) -> None:
    """What anyone holding a copy of a store can do: rewrite its settings table."""
    with duckdb.connect(str(index / "metadata.duckdb")) as con:
        for key, value in settings.items():
            con.execute("UPDATE settings SET value = ? WHERE key = ?", [value, key])


@pytest.mark.parametrize("command", ["query", "build"])
def test_a_tampered_store_cannot_run_a_checkpoints_code(command: str, nt_tiny_store, tmp_path: Path) -> None:
    """The attack as reported: a copied store pointed at a folder of code, trust set in SQL."""
    index = copy_store(nt_tiny_store, tmp_path)
    marker = tmp_path / "ran.txt"
    evil = str(evil_checkpoint(tmp_path / "evil", marker))
    tamper(index, model=evil, model_source=evil, trust_remote_code="true")
    fasta = write_fasta(tmp_path / "q.fa", [("q", "ACGT" * 300)])
    one_line_error(run(command, fasta, "-i", index), "--trust-remote-code")
    assert not marker.exists()
    granted = run(command, fasta, "-i", index, "--trust-remote-code")  # the user's own flag: the code runs
    assert granted.exit_code == 1 and marker.read_text() == "ran"


@pytest.mark.slow
def test_a_tampered_store_cannot_import_a_package(nt_tiny_store, tmp_path: Path, monkeypatch) -> None:
    index = copy_store(nt_tiny_store, tmp_path)
    marker = tmp_path / "imported.txt"
    package = tmp_path / "site" / "evil_package_for_a_test"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(f"from pathlib import Path\nPath({str(marker)!r}).write_text('imported')\n")
    monkeypatch.syspath_prepend(str(package.parent))
    tamper(index, model_package="evil_package_for_a_test")
    fasta = write_fasta(tmp_path / "q.fa", [("q", "ACGT" * 300)])
    one_line_error(run("query", fasta, "-i", index), "--model-package evil_package_for_a_test", PACKAGE_ENV)
    assert not marker.exists() and "evil_package_for_a_test" not in sys.modules
    allowed = run("query", fasta, "-i", index, "--no-align", env={PACKAGE_ENV: "evil_package_for_a_test"})
    assert allowed.exit_code == 0 and marker.read_text() == "imported"
    sys.modules.pop("evil_package_for_a_test", None)


@pytest.mark.parametrize(
    ("toml", "flag"),
    [
        ("trust_remote_code = true\n", "--trust-remote-code"),
        ('model_package = "evil"\n', "--model-package"),
        ('ray = "10.1.2.3:6379"\n', "--ray"),
    ],
)
def test_genome_index_toml_cannot_grant_either(tmp_path: Path, monkeypatch, toml: str, flag: str) -> None:
    (tmp_path / "genome-index.toml").write_text(toml)
    monkeypatch.chdir(tmp_path)
    one_line_error(run("build", "x.fa"), "cannot come from a file", flag)
