"""Nothing lost, nothing half-written: kill -9, damaged files, locks, full disks, bad input."""

from __future__ import annotations

import contextlib
import gzip
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from genome_index.api import GenomeIndex
from genome_index.cli import app
from genome_index.fasta import read_genome
from genome_index.settings import QueryOptions
from tests.conftest import ROOT, copy_store, write_fasta
from tests.test_cli import one_line_error

runner = CliRunner()


def run(*args) -> object:
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def snapshot(index: Path) -> tuple:
    """Counts and a checksum of every stored vector: equal snapshots mean an unchanged store."""
    con = duckdb.connect(str(index / "metadata.duckdb"), read_only=True)
    try:
        return con.execute(
            "SELECT (SELECT count(*) FROM genomes), (SELECT count(*) FROM chunks), "
            "(SELECT sum(list_sum(vector::FLOAT[])) FROM chunk_vectors), (SELECT count(*) FROM labels)"
        ).fetchall()[0]
    finally:
        con.close()


@pytest.fixture(scope="module")
def genomes(tmp_path_factory) -> list[Path]:
    """Five small genomes cut from the examples: quick to build, distinct sequences."""
    folder = tmp_path_factory.mktemp("genomes")
    paths = []
    for i, source in enumerate(sorted((ROOT / "examples" / "genomes").glob("*.fna.gz"))):
        records = read_genome(source).records
        for j, part in enumerate((records[0].sequence[:40_000], records[0].sequence[60_000:100_000])):
            if len(paths) < 5:
                paths.append(write_fasta(folder / f"g{i}{j}.fa", [(f"c{i}{j}", part.decode())]))
    return paths


@pytest.fixture(scope="module")
def base_store(tmp_path_factory, genomes) -> Path:
    index = tmp_path_factory.mktemp("base") / "index"
    GenomeIndex(index).build(genomes[:2], model="kmer:6")
    return index


@pytest.fixture
def store(base_store: Path, tmp_path: Path) -> Path:
    return copy_store(base_store, tmp_path)


def build_cmd(index: Path, genomes: list[Path], model: str = "kmer:6") -> list[str]:
    """A quiet build; kmer:6 unless the model matters (these tests are about the store)."""
    return ["build", *map(str, genomes), "--index", str(index), "--model", model, "-q"]


def assert_recovers(index: Path, genomes: list[Path]) -> None:
    """After a crash: the store opens, answers, and a new build completes it without duplicates."""
    store = GenomeIndex.open(index)
    for mode in ("genome", "chunks"):  # the next commands repair what the crash left stale
        stored = [name for (name,) in store.sql("SELECT name FROM genomes ORDER BY id")[1]]
        if stored:
            path = next(p for p in genomes if p.stem == stored[0])
            assert store.query(path, QueryOptions(k=1, mode=mode))[0]["name"] == stored[0]
    assert store.check() == []
    store.build(genomes)
    assert store.check() == []
    names = [name for (name,) in store.sql("SELECT name FROM genomes")[1]]
    assert sorted(names) == sorted(p.stem for p in genomes)


@pytest.mark.parametrize(("phase", "when"), [("embed", 3), ("commit", 2), ("faiss", 2), ("faiss", 3)])
def test_kill_9_at_a_chosen_point(tmp_path: Path, genomes, phase: str, when: int) -> None:
    index = tmp_path / "index"
    child = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tests" / "kill_helper.py"),
            "KILL",
            phase,
            str(when),
            *build_cmd(index, genomes, "nt-tiny" if phase == "embed" else "kmer:6"),
        ],
        capture_output=True,
        text=True,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert_recovers(index, genomes)


def test_kill_9_at_a_random_moment(tmp_path: Path, genomes) -> None:
    """SIGKILL at a random instant after the store appears: the next build completes it."""
    index = tmp_path / "index"
    child = subprocess.Popen(
        [sys.executable, "-m", "genome_index.cli", *build_cmd(index, genomes)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not (index / "metadata.duckdb").exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(random.uniform(0, 1.5))
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert (index / "metadata.duckdb").exists()
    assert_recovers(index, genomes)


@pytest.mark.parametrize(("phase", "when"), [("validate", 2), ("read", 2), ("embed", 2), ("commit", 1), ("faiss", 2)])
def test_ctrl_c_stops_a_build_within_two_seconds_and_leaves_it_consistent(
    tmp_path: Path, genomes, phase: str, when: int
) -> None:
    index = tmp_path / "index"
    model = "nt-tiny" if phase == "embed" else "kmer:6"
    helper = [sys.executable, str(ROOT / "tests" / "kill_helper.py"), "INT", phase, str(when)]
    child = subprocess.run(
        [*helper, *build_cmd(index, genomes, model)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    ended = time.monotonic()
    assert child.returncode == 130, child.stderr
    assert child.stderr.rstrip().endswith("genome-index: interrupted")
    signalled = float(re.search(r"signalled (\S+)", child.stderr).group(1))
    assert ended - signalled < 2.0
    if (index / "metadata.duckdb").exists():
        assert_recovers(index, genomes)
    else:  # stopped before its first commit: a first build leaves nothing behind
        assert not index.exists()


def test_stale_lock_of_a_killed_process_does_not_block(store: Path, genomes) -> None:
    holder_code = (
        "import pathlib, sys, time\n"
        "from genome_index.store.lock import write_lock\n"
        "with write_lock(pathlib.Path(sys.argv[1])):\n"
        "    print('locked', flush=True)\n"
        "    time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", holder_code, str(store)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    one_line_error(run(*build_cmd(store, genomes[2:3])), "build.lock", f"pid {holder.pid}")
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    result = run(*build_cmd(store, genomes[2:3]))
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_damaged_metadata_is_one_line_and_left_alone(store: Path, damage: str, genomes) -> None:
    db = store / "metadata.duckdb"
    data = db.read_bytes()
    db.write_bytes({"garbage": os.urandom(5000), "truncated": data[:3000], "empty": b""}[damage])
    before = db.read_bytes()
    for args in (
        ("info", "--index", store),
        ("query", genomes[0], "--index", store),
        ("sql", "SELECT 1", "--index", store),
        build_cmd(store, genomes[2:3]),
    ):
        one_line_error(run(*args), "metadata.duckdb")
    assert db.read_bytes() == before


def test_foreign_duckdb_and_non_store_folders(tmp_path: Path, genomes) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    con = duckdb.connect(str(foreign / "metadata.duckdb"))
    con.execute("CREATE TABLE mine (x INTEGER)")
    con.close()
    one_line_error(run("info", "--index", foreign), "not a genome-index store")
    one_line_error(run(*build_cmd(foreign, genomes[:1])), "not a genome-index store")
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"\xff\xd8")
    one_line_error(run(*build_cmd(other, genomes[:1])), "not a genome-index store")
    assert sorted(p.name for p in other.iterdir()) == ["cat.jpg"]


def test_index_path_that_cannot_be_created(tmp_path: Path, genomes) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    one_line_error(run(*build_cmd(blocker / "index", genomes[:1])), "a-file")


@contextlib.contextmanager
def tmpfs(path: Path, size: str, read_only: bool = False):
    path.mkdir()
    options = f"size={size}" + (",ro" if read_only else "")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_read_only_filesystem(tmp_path: Path, genomes) -> None:
    with tmpfs(tmp_path / "ro", "4m", read_only=True) as mount:
        one_line_error(run(*build_cmd(mount / "index", genomes[:1])), "index")
        assert list(mount.iterdir()) == []


def test_full_disk_keeps_what_was_committed(tmp_path: Path, genomes) -> None:
    with tmpfs(tmp_path / "small", "1500k") as mount:
        index = mount / "index"
        assert run(*build_cmd(index, genomes[:1], "nt-tiny")).exit_code == 0  # the tmpfs is sized for nt-tiny
        result = run(*build_cmd(index, genomes, "nt-tiny"))
        assert result.exit_code == 1, result.output
        one_line_error(result, "metadata.duckdb")
        store = GenomeIndex.open(index)
        names = [n for (n,) in store.sql("SELECT name FROM genomes ORDER BY id")[1]]
        assert names == [p.stem for p in genomes[: len(names)]] and names
        assert store.check() == []


BAD_FILES = {
    "not_fasta.fa": b"just some text\n",
    "empty.fa": b"",
    "header_only.fa": b">lonely header\n",
    "protein.fa": b">p\nMKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ\n",
    "binary.fa": bytes(range(256)),
    "truncated.fa.gz": gzip.compress(b">r\n" + bytes(random.Random(0).choices(b"ACGT", k=200_000)))[:20_000],
}


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_bad_input_leaves_the_store_unchanged(store: Path, genomes, tmp_path: Path, name: str) -> None:
    bad = tmp_path / name
    bad.write_bytes(BAD_FILES[name])
    before = snapshot(store)
    one_line_error(run(*build_cmd(store, [genomes[2], bad, genomes[3]])), name)
    assert snapshot(store) == before


@pytest.mark.parametrize("name", ["protein.fa", "truncated.fa.gz"])
def test_bad_input_in_a_first_build_leaves_no_store(genomes, tmp_path: Path, name: str) -> None:
    bad = tmp_path / name
    bad.write_bytes(BAD_FILES[name])
    index = tmp_path / "new-index"
    one_line_error(run(*build_cmd(index, [genomes[0], bad])), name)
    assert not index.exists()


def test_unknown_model_in_a_first_build_leaves_no_store(tmp_path: Path, genomes) -> None:
    index = tmp_path / "new-index"
    one_line_error(run("build", genomes[0], "--index", index, "--model", "./no-such-model"), "no-such-model")
    assert not index.exists()


def test_missing_paths_and_empty_folders(store: Path, tmp_path: Path) -> None:
    before = snapshot(store)
    one_line_error(run(*build_cmd(store, [tmp_path / "nope.fa"])), "nope.fa", "no such file")
    (tmp_path / "empty").mkdir()
    one_line_error(run(*build_cmd(store, [tmp_path / "empty"])), "no FASTA files")
    assert snapshot(store) == before


@pytest.mark.parametrize("csv", ["species,host\nS. aureus,cow\n", "file,species\nnot-in-store.fa,x\n"])
def test_bad_labels_leave_the_store_unchanged(store: Path, genomes, tmp_path: Path, csv: str) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text(csv)
    before = snapshot(store)
    one_line_error(run(*build_cmd(store, genomes[2:3]), "--labels", labels), "labels")
    assert snapshot(store) == before


ACCEPTED = {
    "soft_masked": [("r", "acgtacgttgcaACGTACGTTGCAacgt" * 40)],
    "iupac": [("r", "ACGTACGTTGCARYACGTTGCAKMSWACGTTGCABDHVACGTAC" * 40)],
    "long_n_runs": [("r", "ACGTAC" * 50 + "N" * 20_000 + "GGCATT" * 50)],
    "one_line_genome": [("r", "ACGTTGCAAC" * 5000)],
    "short_records": [(f"r{i}", "ACG"[: 1 + i % 3]) for i in range(20)],
    "long_header": [("r " + "x" * 5000, "ACGTACGT" * 30)],
    "unicode_header": [("r \u03c3-faktor \u682a \U0001f9ec", "ACGTTGCA" * 30)],
}


@pytest.mark.parametrize("name", list(ACCEPTED))
def test_accepted_inputs_are_built_and_found(tmp_path: Path, name: str) -> None:
    fasta = write_fasta(tmp_path / f"{name}.fa", ACCEPTED[name], eol="\r\n" if name == "iupac" else "\n")
    index = tmp_path / "index"
    result = run(*build_cmd(index, [fasta]))
    assert result.exit_code == 0, result.output
    store = GenomeIndex.open(index)
    assert store.check() == []
    assert store.query(fasta, QueryOptions(k=1))[0]["name"] == name


def test_ten_thousand_tiny_records_and_a_unicode_file_name(tmp_path: Path) -> None:
    records = [(f"contig_{i}", "ACGTTGCAAGGT"[: 1 + i % 12]) for i in range(10_000)]
    fasta = write_fasta(tmp_path / "génome_株.fa", records)
    index = tmp_path / "index"
    result = run(*build_cmd(index, [fasta], "kmer:3"))  # 32 columns: the self-query of 10,000 records stays quick
    assert result.exit_code == 0, result.output
    store = GenomeIndex.open(index)
    assert store.sql("SELECT count(*) FROM records")[1] == [(10_000,)]
    assert store.check() == []
    assert store.query(fasta, QueryOptions(k=1))[0]["name"] == "génome_株"
