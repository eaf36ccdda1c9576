"""Nothing lost, nothing half-written: kill -9, damaged files, locks, full disks, bad input."""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import json
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
from genome_index.errors import GenomeIndexError
from genome_index.io.fasta import read_genome
from genome_index.settings import QueryOptions
from genome_index.store import sql
from tests.helpers import ROOT, PeakMemory, alive, copy_store, interruptible, one_line_error, write_fasta

pytestmark = pytest.mark.slow  # crashes, signals and memory bounds of real processes: seconds each

runner = CliRunner()


def run(*args) -> object:
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def snapshot(index: Path) -> tuple:
    """Counts and a checksum of every stored vector: equal snapshots mean an unchanged store."""
    return tuple(GenomeIndex(index).sql(
        "SELECT (SELECT count(*) FROM genomes), (SELECT count(*) FROM chunks), "
        "(SELECT sum(list_sum(vector::FLOAT[])) FROM chunk_vectors), (SELECT count(*) FROM labels)"
    )[1][0])  # fmt: skip


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
            assert store.query(path, QueryOptions(k=1, mode=mode, align=False))[0].name == stored[0]
    assert store.check() == []
    store.build(genomes)
    assert store.check() == []
    names = [name for (name,) in store.sql("SELECT name FROM genomes")[1]]
    assert sorted(names) == sorted(p.stem for p in genomes)


@pytest.mark.parametrize(("phase", "when"), [("embed", 2), ("commit", 2), ("faiss", 2), ("faiss", 3)])
def test_kill_9_at_a_chosen_point(tmp_path: Path, genomes, phase: str, when: int) -> None:
    index = tmp_path / "index"
    child = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tests" / "kill_helper.py"),
            "KILL",
            phase,
            str(when),
            *build_cmd(index, genomes),  # SIGKILL ends any encoder alike: kmer:6 (several batches here)
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
def test_ctrl_c_stops_a_build_soon_and_leaves_it_consistent(tmp_path: Path, genomes, phase: str, when: int) -> None:
    index = tmp_path / "index"
    model = "nt-tiny" if phase == "embed" else "kmer:6"
    helper = [sys.executable, str(ROOT / "tests" / "kill_helper.py"), "INT", phase, str(when)]
    child = subprocess.run(
        [*helper, *build_cmd(index, genomes, model)],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=interruptible,
    )
    ended = time.monotonic()
    assert child.returncode == 130, child.stderr
    assert child.stderr.rstrip().endswith("genome-index: interrupted")
    signalled = float(re.search(r"signalled (\S+)", child.stderr).group(1))
    assert ended - signalled < 10.0  # bound for a loaded 2-core machine; benchmarks/bench_interrupt.py times it
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


def test_a_full_disk_names_the_file_it_could_not_write(tmp_path: Path, genomes, base_store: Path) -> None:
    """A merge's commit failed on its full target, and the line named the source store."""
    with tmpfs(tmp_path / "small", "1500k") as mount:
        result = run("merge", mount / "merged", base_store, "-q")
        one_line_error(result, f"{mount / 'merged'}/metadata.duckdb", "disk full")
        assert str(base_store) not in result.stderr


def test_read_only_filesystem(tmp_path: Path, genomes) -> None:
    with tmpfs(tmp_path / "ro", "4m", read_only=True) as mount:
        one_line_error(run(*build_cmd(mount / "index", genomes[:1])), "index")
        assert list(mount.iterdir()) == []


def test_full_disk_keeps_what_was_committed(tmp_path: Path, genomes) -> None:
    rng = random.Random(1)
    many = [
        write_fasta(tmp_path / f"m{i:02d}.fa", [(f"m{i}", "".join(rng.choices("ACGT", k=40_000)))]) for i in range(40)
    ]
    with tmpfs(tmp_path / "small", "8m") as mount:
        index = mount / "index"
        assert run(*build_cmd(index, genomes[:1])).exit_code == 0  # sized so that kmer:6 fills it half way
        genomes = [*genomes, *many]  # far more than the disk holds
        result = run(*build_cmd(index, genomes))
        assert result.exit_code == 1, result.output
        one_line_error(result, "cannot write", "disk full")  # metadata.duckdb, or a file of vectors beside it
        store = GenomeIndex.open(index)
        names = [n for (n,) in store.sql("SELECT name FROM genomes ORDER BY id")[1]]
        assert names == [p.stem for p in genomes[: len(names)]] and names
        lagging = store.check()  # FAISS files that could not catch up on the full disk: said, not hidden
        assert all("lacks" in problem for problem in lagging), lagging
        subprocess.run(["mount", "-o", "remount,size=64m", str(mount)], check=True)  # the user frees space
        assert run("reindex", "--index", index).exit_code == 0
        assert GenomeIndex.open(index).check() == []


def test_the_store_answers_while_a_build_runs(tmp_path: Path, embedder) -> None:
    """query, sql, info, check --quick and compare answer from what is committed while a build
    runs in another process; each answer is consistent and the build still completes."""
    rng = random.Random(7)
    sequences = ["".join(rng.choices("ACGT", k=60_000)) for _ in range(4)]
    inputs = [  # each takes the model longer than a commit takes, so commits come one by one even under load
        write_fasta(tmp_path / f"r{i:02d}.fa", [(f"r{i}", sequence)]) for i, sequence in enumerate(sequences)
    ]
    fragment = write_fasta(tmp_path / "fragment.fa", [("f", sequences[0][:3000])])  # quick: the build keeps the CPU
    index = tmp_path / "index"
    GenomeIndex(index).build(inputs[:1], model="nt-tiny")
    build = ["build", *map(str, inputs), "-i", str(index), "-q", "--batch-tokens", "2048"]  # small groups
    child = subprocess.Popen([sys.executable, "-m", "genome_index.cli", *build], stderr=subprocess.PIPE, text=True)
    store, stems = GenomeIndex.open(index), {p.stem for p in inputs}
    counts, compared = [], False
    try:
        while child.poll() is None:
            names = {name for (name,) in store.sql("SELECT name FROM genomes")[1]}
            assert names <= stems and inputs[0].stem in names
            counts.append(len(names))
            hits = store.query(fragment, QueryOptions(k=3, mode="genome", align=False), embedder=embedder)
            assert hits[0].name == inputs[0].stem and {hit.name for hit in hits} <= stems
            assert len(hits) == min(3, len(names)) or len(hits) > len(names)  # more committed meanwhile
            assert store.info()["counts"]["genomes"] >= len(names)
            assert store.check(quick=True) == []
            if len(names) >= 2 and not compared:
                assert run("compare", "--index", index, "--out", tmp_path / "compare").exit_code == 0
                compared = True
    finally:
        child.wait(timeout=120)
    assert child.returncode == 0, child.stderr.read() if child.stderr else ""
    assert any(1 < count < len(inputs) for count in counts), counts  # seen half way, not only before or after
    assert counts == sorted(counts)  # what was committed stays committed
    assert {name for (name,) in store.sql("SELECT name FROM genomes")[1]} == stems
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
    assert store.query(fasta, QueryOptions(k=1))[0].name == name


def test_ten_thousand_tiny_records_need_force_and_a_unicode_file_name(tmp_path: Path) -> None:
    records = [(f"contig_{i}", "ACGTTGCAAGGT"[: 1 + i % 12]) for i in range(10_000)]
    fasta = write_fasta(tmp_path / "génome_株.fa", records)
    index = tmp_path / "index"
    one_line_error(run(*build_cmd(index, [fasta], "kmer:3")), "looks like reads", "--force")
    assert not index.exists()
    result = run(*build_cmd(index, [fasta], "kmer:3"), "--force")  # 32 columns: the self-query stays quick
    assert result.exit_code == 0, result.output
    store = GenomeIndex.open(index)
    assert store.sql("SELECT count(*) FROM records")[1] == [(10_000,)]
    assert store.check() == []
    assert store.query(fasta, QueryOptions(k=1))[0].name == "génome_株"


# -- issue 13: labels, messages, shards, names, limits, leftovers, changed inputs ------


def twins(folder: Path, genomes: list[Path]) -> list[Path]:
    """a.fa and b.fa hold the same sequence under other names (a GenBank/RefSeq pair); c.fa another."""
    folder.mkdir(exist_ok=True)
    first, other = (read_genome(p).records[0].sequence.decode() for p in genomes[:2])
    return [
        write_fasta(folder / f"{name}.fa", [(f"rec_{name}", seq)])
        for name, seq in zip("abc", (first, first, other), strict=True)
    ]


def stored_labels(index: Path) -> dict[str, dict[str, str]]:
    rows = GenomeIndex.open(index).sql(
        "SELECT g.name, l.key, l.value FROM labels l JOIN genomes g ON g.id = l.genome_id"
    )
    out: dict[str, dict[str, str]] = {}
    for name, key, value in rows[1]:
        out.setdefault(name, {})[key] = value
    return out


def test_a_duplicates_labels_never_overwrite_the_stored_genomes(tmp_path: Path, genomes) -> None:
    files = twins(tmp_path / "in", genomes)
    csv = tmp_path / "labels.csv"
    csv.write_text("file,accession,source\na.fa,GCA_1,GenBank\nb.fa,GCF_1,RefSeq\nc.fa,GCA_2,GenBank\n")
    index = tmp_path / "index"
    for _ in range(2):
        result = run(*build_cmd(index, files)[:-1], "--labels", csv)
        assert result.exit_code == 0, result.output
        assert "labels set on 2" in result.stderr
        assert re.search(r"b.fa has the same sequence as (stored )?genome 'a'; not embedded again, its labels ignored",
                         result.stderr)  # fmt: skip
    assert stored_labels(index)["a"] == {"accession": "GCA_1", "source": "GenBank"}
    report = GenomeIndex.open(index).build(files[1:2], labels=csv, labels_from_duplicates=True)
    assert report.labelled == 1 and stored_labels(index)["a"] == {"accession": "GCF_1", "source": "RefSeq"}


def test_one_labels_csv_serves_every_shard_and_a_merge_keeps_the_first_sorted_copy(tmp_path: Path, genomes) -> None:
    files = twins(tmp_path / "in", genomes)
    csv = tmp_path / "labels.csv"
    csv.write_text("file,group\na.fa,x\nb.fa,y\nc.fa,z\n")
    for i in (1, 2):
        result = run(*build_cmd(tmp_path / f"part{i}", files)[:-1], "--labels", csv, "--shard", f"{i}/2")
        assert result.exit_code == 0, result.output
    assert run("merge", tmp_path / "merged", tmp_path / "part2", tmp_path / "part1").exit_code == 0
    names = sorted(n for (n,) in GenomeIndex.open(tmp_path / "merged").sql("SELECT name FROM genomes")[1])
    assert names == ["a", "c"]  # b.fa (part2, merged first) holds a's sequence; a.fa sorts first and stays
    assert stored_labels(tmp_path / "merged") == {"a": {"group": "x"}, "c": {"group": "z"}}


def test_a_model_that_is_not_the_stores_is_named_before_anything_else(store: Path, genomes) -> None:
    for args in (build_cmd(store, genomes[2:3], "nt-tiny"), ["query", genomes[0], "--index", store, "-m", "nt-tiny"]):
        one_line_error(run(*args), "built with model 'kmer:6', not 'nt-tiny'")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the no-GPU refusal")
def test_a_missing_gpu_is_refused_for_kmer_stores_too(store: Path, genomes) -> None:
    one_line_error(run(*build_cmd(store, genomes[2:3]), "--device", "cuda"), "no CUDA GPU")


def test_sql_reaches_no_file_not_even_duckdbs_temp_folder(store: Path) -> None:
    (store / "metadata.duckdb.tmp").mkdir()
    for statement in (
        f"COPY (SELECT * FROM genomes) TO '{store}/metadata.duckdb.tmp/x.csv'",
        f"SELECT * FROM glob('{store}/metadata.duckdb.tmp/*')",
    ):
        one_line_error(run("sql", statement, "--index", store))
    assert list((store / "metadata.duckdb.tmp").iterdir()) == []


def test_sql_that_reads_the_vector_files_reaches_no_other_file_nor_writes_beside_them(store: Path) -> None:
    """`chunk_vectors` is the store's Parquet files registered by Python: DuckDB gets no access to
    their folder, so a statement naming them can neither write a file there (which the view would
    then show) nor read the files, or anything else, by path."""
    listed = sorted(name for (name,) in GenomeIndex(store).sql("SELECT name FROM vector_files")[1])
    for statement in (
        f"COPY (SELECT * FROM chunk_vectors) TO '{store}/vectors/000000000099-0badf00d.parquet'",
        f"SELECT (SELECT count(*) FROM chunk_vectors), (SELECT count(*) FROM read_parquet('{store}/vectors/*'))",
        f"SELECT (SELECT count(*) FROM chunk_vectors), (SELECT count(*) FROM read_csv('{store}/../x.csv'))",
    ):
        one_line_error(run("sql", statement, "--index", store), "file system operations are disabled")
    assert sorted(p.name for p in (store / "vectors").iterdir()) == listed


def test_sql_over_the_vector_files_is_held_to_its_memory_limit(store: Path) -> None:
    """The vectors come through an Arrow dataset, outside DuckDB's own accounting: a statement
    that would hold every pair of them with a long list is still stopped, and the command and
    its worker stay bounded (measured, not only the message)."""
    pairs = "SELECT a.vector, b.vector, range(200) FROM chunk_vectors a, chunk_vectors b, range(50) ORDER BY 1, 2"
    child = subprocess.Popen(
        [sys.executable, "-m", "genome_index.cli", "sql", pairs, "-i", str(store), "--memory-limit", "64MB"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    with PeakMemory(child.pid) as peak:
        assert child.wait(timeout=120) == 1
    assert "out of memory" in child.stderr.read().lower()
    assert peak.tree < 450 << 20, peak.tree  # 290 MB measured


def test_the_sql_worker_imports_only_duckdb_pyarrow_and_the_standard_library(store: Path) -> None:
    """Its start is every statement's wait: on the vector files pyarrow.dataset would also import
    pandas where it is installed (0.2 s of a 0.55 s statement, 40 MB); the worker refuses it,
    and it imports nothing of this package either."""
    job = {
        "database": str(store / "metadata.duckdb"), "statement": "SELECT count(*) FROM chunk_vectors",
        "memory_limit": "1GB", "threads": 1, "data_limit": 2 << 30, "max_rows": None, "batch_rows": 100, "wait": 5,
    }  # fmt: skip
    worker = subprocess.run(
        [sys.executable, "-X", "importtime", str(ROOT / "genome_index" / "store" / "sql_worker.py")],
        input=json.dumps(job).encode(), capture_output=True, check=True,
    )  # fmt: skip
    imported = {line.rsplit("|", 1)[1].strip() for line in worker.stderr.decode().splitlines() if "|" in line}
    assert {"duckdb", "pyarrow", "pyarrow.dataset", "vector_view"} <= imported  # the vector files were read
    assert not {name for name in imported if name.startswith(("pandas.", "genome_index", "torch"))}  # pandas: refused


@pytest.mark.parametrize(
    ("statement", "message"),
    [("", "no SQL statement"), (";", "no SQL statement"), ("/* c */", "no SQL statement"),
     ("SELECT 1; SELECT 2", "one SQL statement at a time (got 2)")],
)  # fmt: skip
def test_sql_takes_exactly_one_statement(store: Path, statement: str, message: str) -> None:
    one_line_error(run("sql", statement, "--index", store), message)


FOREVER = "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t) SELECT count(*) FROM t"  # never ends


def test_sql_has_a_time_and_a_memory_limit(store: Path) -> None:
    started = time.monotonic()
    one_line_error(run("sql", FOREVER, "--index", store, "--timeout", "1"), "stopped after 1 s")
    assert time.monotonic() - started < 5
    cross = "SELECT a.range FROM range(100000) a, range(100000) b ORDER BY 1"
    one_line_error(run("sql", cross, "--index", store, "--memory-limit", "64MB", "--timeout", "60"), "out of memory")


def test_statements_after_the_first_take_a_spare_worker_held_to_the_same_limits(store: Path, monkeypatch) -> None:
    """A process that runs one statement after another starts the next one's worker ahead (its
    imports, 0.2 s of a 0.27 s statement, happen while nothing waits); the first statement
    starts none (a one-shot `genome-index sql` leaves no spare). A spare answers as a new
    worker does, the vector files included, and its statement keeps the time and memory limits."""
    spare = sql.Spare()
    monkeypatch.setattr(sql, "SPARE", spare)
    taken, take = [], spare.take
    monkeypatch.setattr(spare, "take", lambda: taken.append(take()) or taken[-1])
    index = GenomeIndex(store)
    statement = "SELECT count(*), sum(list_sum(vector::FLOAT[])) FROM chunk_vectors"
    first = index.sql(statement)
    assert spare._ready is None
    assert index.sql(statement) == first
    ready = spare._ready
    assert ready is not None and ready.poll() is None and ready not in taken
    assert index.sql(statement) == first and taken[-1] is ready
    monkeypatch.chdir(store.parent)  # after the spare started: a relative path is still this directory's
    ready = spare._ready
    assert GenomeIndex(Path(store.name)).sql(statement) == first and taken[-1] is ready
    for limits, message in (({"timeout": 1}, "stopped after 1 s"), ({"memory_limit": "64MB"}, "out of memory")):
        ready = spare._ready
        with pytest.raises(GenomeIndexError, match=message):
            index.sql("SELECT a.range FROM range(100000) a, range(100000) b ORDER BY 1", **limits)
        assert taken[-1] is ready
    ready = spare._ready
    spare.close()
    assert ready.poll() is not None and spare._ready is None


def ignores_ctrl_c(pid: int) -> bool:
    """Whether process `pid` has set SIGINT aside (its SigIgn mask, from /proc)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    ignored = int(next(line for line in status.splitlines() if line.startswith("SigIgn:")).split()[1], 16)
    return bool(ignored & (1 << (signal.SIGINT - 1)))


def test_a_spare_worker_ignores_ctrl_c_and_ends_with_its_process(store: Path) -> None:
    """A Ctrl-C for the statements running (the terminal's, to the whole process group) leaves
    an idle spare alone; a process killed outright takes its spare along (its stdin closes)."""
    code = (
        "import sys, time\nfrom genome_index.api import GenomeIndex\nfrom genome_index.store import sql\n"
        "index = GenomeIndex(sys.argv[1])\nindex.sql('SELECT 1')\nprint(sql.SPARE._ready, flush=True)\n"
        "index.sql('SELECT 1')\nprint(sql.SPARE._ready.pid, flush=True)\ntime.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code, str(store)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "None"  # after one statement: no spare
        spare = int(child.stdout.readline())
        deadline = time.monotonic() + 30
        while not ignores_ctrl_c(spare) and time.monotonic() < deadline:  # its first act, however loaded the machine
            time.sleep(0.02)
        os.kill(spare, signal.SIGINT)
        time.sleep(0.5)
        assert alive(spare)
    finally:
        child.kill()
        child.wait()
    deadline = time.monotonic() + 10
    while alive(spare) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(spare)


def test_a_statement_that_plans_forever_is_held_to_both_limits(store: Path) -> None:
    """14,000 UNION ALLs took 5.5 GB and 16 s past the timeout while DuckDB planned them."""
    unions = "SELECT 1" + " UNION ALL SELECT 1" * 14_000
    started = time.monotonic()
    one_line_error(run("sql", unions, "-i", store, "--memory-limit", "100MB", "--timeout", "3"), "SQL")
    assert time.monotonic() - started < 6


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [("--memory-limit", "abc", "--memory-limit 'abc': give a size"), ("--timeout", "-1", "--timeout -1.0: give"),
     ("--timeout", "nan", "--timeout nan: give a number of seconds above 0")],
)  # fmt: skip
def test_sql_limits_are_checked_before_the_store(store: Path, option: str, value: str, message: str) -> None:
    one_line_error(run("sql", "SELECT 1", "-i", store, option, value), message)


def test_sql_streams_its_rows_in_bounded_memory(store: Path, tmp_path: Path) -> None:
    """Two million rows to a file: the command and its SQL worker stay near their resting size
    (before, every row was fetched, then rendered whole: 620 MB)."""
    out = tmp_path / "rows.tsv"
    with open(out, "w") as handle:
        child = subprocess.Popen(
            [sys.executable, "-m", "genome_index.cli", "sql", "SELECT range FROM range(2000000)", "-i", store,
             "--memory-limit", "100MB", "-f", "tsv"],
            stdout=handle,
        )  # fmt: skip
        with PeakMemory(child.pid) as peak:
            assert child.wait(timeout=120) == 0
    with open(out) as handle:
        assert sum(1 for _ in handle) == 2_000_001
    assert peak.tree < 350 << 20, peak.tree


def test_sql_into_a_pipe_that_closes_early_ends_quietly(store: Path) -> None:
    shell = f"{sys.executable} -m genome_index.cli sql 'SELECT range FROM range(1000000)' -i {store} -f tsv | head -2"
    result = subprocess.run(shell, shell=True, capture_output=True, text=True, timeout=60)
    assert result.stdout == "range\n0\n" and result.stderr == ""


def test_ctrl_c_stops_a_long_sql_statement(store: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-m", "genome_index.cli", "sql", FOREVER, "-i", store],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=interruptible,
    )  # fmt: skip
    time.sleep(3)
    signalled = time.monotonic()
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=30)
    assert time.monotonic() - signalled < 10.0  # benchmarks/bench_interrupt.py times it
    assert child.returncode == 130 and stderr.strip() == "genome-index: interrupted"


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("inputs = 5\n", "inputs = 5 should be a list of paths"),
        ("model = 7\n", "model = 7 should be a string"),
        ('layer = "x"\n', "layer = 'x' should be a whole number"),
    ],
)
def test_the_config_files_types_are_checked(tmp_path: Path, monkeypatch, toml, message) -> None:
    (tmp_path / "genome-index.toml").write_text(toml)
    monkeypatch.chdir(tmp_path)
    one_line_error(run("info"), message)


def test_the_leftovers_of_a_killed_first_build_are_ours_to_clear(tmp_path: Path, genomes) -> None:
    index = tmp_path / "index"
    index.mkdir()
    for name in ("build.lock", "metadata.duckdb.creating", "metadata.duckdb.creating.wal", "chunks.faiss.tmp"):
        (index / name).write_bytes(b"half")
    result = run(*build_cmd(index, genomes[:1]))
    assert result.exit_code == 0, result.output
    assert GenomeIndex.open(index).check() == []
    assert sorted(p.name for p in index.iterdir()) == [
        "build.lock", "chunks.faiss", "genomes.faiss", "metadata.duckdb", "vectors"
    ]


def test_a_reindex_killed_between_file_and_setting_is_noticed_and_repaired(store: Path, genomes, monkeypatch) -> None:
    from genome_index.store.writes import StoreWriter

    def killed(*_args):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    monkeypatch.setattr(StoreWriter, "set_setting", killed)
    with pytest.raises(KeyboardInterrupt):
        GenomeIndex.open(store).reindex("hnsw")
    monkeypatch.undo()
    index = GenomeIndex.open(store)
    assert index.settings().index_type == "flat"
    assert index.check() == ["chunks.faiss is a hnsw index, the store's index_type says flat"]
    index.query(genomes[0], QueryOptions(k=1, mode="chunks", align=False))  # a read repairs the derived file
    assert index.check() == []


@pytest.mark.parametrize("command", ["remove", "build"])
def test_a_faiss_write_that_fails_says_what_was_committed(store: Path, genomes, monkeypatch, command: str) -> None:
    from genome_index.errors import GenomeIndexError
    from genome_index.store import Store

    def full_disk(self, kind, index):  # type: ignore[no-untyped-def]
        raise GenomeIndexError(f"{self.faiss_path(kind)}: cannot write the FAISS index (No space left on device)")

    monkeypatch.setattr(Store, "write_faiss", full_disk)
    index = GenomeIndex.open(store)
    if command == "remove":
        with pytest.raises(
            GenomeIndexError, match=r"genome\(s\) 1 g00 were removed from \S*metadata.duckdb, but .*No space"
        ):
            index.remove(["g00"])
    else:
        with pytest.raises(GenomeIndexError, match=r"1 genome\(s\) were added to \S*metadata.duckdb, but .*No space"):
            index.build(genomes[2:3])
    monkeypatch.undo()
    index.reindex()  # as the message says
    assert index.check() == []


def test_an_input_changed_after_validation_is_refused_and_the_others_are_stored(
    store: Path, genomes, monkeypatch
) -> None:
    from genome_index.build import intake
    from genome_index.errors import GenomeIndexError

    real = intake.summarise

    def validated_before_an_edit(path, reads_ok=False):  # type: ignore[no-untyped-def]
        summary = real(path, reads_ok)
        if Path(path).name == genomes[3].name:  # the validator saw another version of this file
            return dataclasses.replace(summary, sha256="0" * 64)
        return summary

    monkeypatch.setattr(intake, "summarise", validated_before_an_edit)
    message = f"{genomes[3].name} changed while the build ran .*; it was not stored; the build stored 2 other"
    with pytest.raises(GenomeIndexError, match=message):
        GenomeIndex.open(store).build(genomes[2:5])
    monkeypatch.undo()
    index = GenomeIndex.open(store)
    assert index.check() == []  # committed genomes complete, FAISS files brought up to them
    names = [n for (n,) in index.sql("SELECT name FROM genomes")[1]]
    assert genomes[3].stem not in names and genomes[4].stem in names  # the genome after it was not dropped


def test_check_reads_every_block_and_a_damaged_file_is_called_damaged(tmp_path: Path, example_genomes) -> None:
    """Random bytes in the second half of the data blocks (sequences, chunks, sketches): `check`
    must read them all to see it, where counting rows does not."""
    index = tmp_path / "index"
    GenomeIndex(index).build(example_genomes, model="kmer:6")
    db = index / "metadata.duckdb"
    data = bytearray(db.read_bytes())
    blocks = len(data) // 262_144  # DuckDB's block size, after a 12 kB header
    for block in range(blocks // 2, blocks - 1):
        start = 12_288 + block * 262_144 + 1000
        data[start : start + 4096] = os.urandom(4096)
    db.write_bytes(bytes(data))
    problems = GenomeIndex.open(index).check()
    assert len(problems) == 1 and problems[0].startswith("metadata.duckdb is damaged: reading ")
    checked = run("check", "-i", index)  # and says what repairs it: not reindex, which reads this very file
    assert checked.exit_code == 1 and "restore the store from a copy" in checked.stderr.splitlines()[-1]
    (index / "chunks.faiss").write_bytes(b"junk")
    db.write_bytes(bytes(data[: len(data) // 8]))
    one_line_error(run("info", "--index", index), "damaged")


def test_files_of_one_name_in_several_folders_get_names_that_tell_them_apart(tmp_path: Path, genomes) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    sequences = [read_genome(p).records[0].sequence.decode() for p in genomes[:3]]
    files = [
        write_fasta(tmp_path / "a" / "x.fa", [("r", sequences[0])]),
        write_fasta(tmp_path / "b" / "x.fa", [("r", sequences[1])]),
        write_fasta(tmp_path / "b" / "x.fna.gz", [("r", sequences[2])], gz=True),
    ]
    index = GenomeIndex(tmp_path / "index")
    index.build(files, "kmer:6")
    assert sorted(n for (n,) in index.sql("SELECT name FROM genomes")[1]) == ["a/x.fa", "b/x.fa", "b/x.fna.gz"]
    csv = tmp_path / "labels.csv"
    csv.write_text("file,group\nx.fa,1\n")
    one_line_error(run("build", *files, "--index", tmp_path / "index", "--labels", csv), "'x.fa', which fits 2 inputs")
    assert index.remove(["b/x.fa"]) == [(2, "b/x.fa")]


def test_an_id_that_is_also_a_name_must_say_which(tmp_path: Path, genomes) -> None:
    named_one = write_fasta(tmp_path / "1.fa", [("r", read_genome(genomes[1]).records[0].sequence.decode())])
    index = GenomeIndex(tmp_path / "index")
    index.build([genomes[0], named_one], "kmer:6")  # ids 1 (g00) and 2 (named "1")
    one_line_error(run("remove", "1", "--index", tmp_path / "index"), "write id:1 or name:1")
    assert index.remove(["name:1"]) == [(2, "1")]
    assert index.remove(["id:1"]) == [(1, "g00")]


def test_a_one_genome_store_answers_itself_uncentred(tmp_path: Path, genomes, caplog) -> None:
    index = GenomeIndex(tmp_path / "index")
    index.build(genomes[:1], "kmer:6")
    with caplog.at_level("WARNING", logger="genome_index"):
        hit = index.query(genomes[0], QueryOptions(k=1, mode="genome", align=False))[0]
    assert hit.score > 0.999 and "not centred" in caplog.text


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--chunk-tokens", "0"], "--chunk-tokens 0"), (["--batch-tokens", "0"], "--batch-tokens 0"),
     (["--index"], "requires an argument")],
)  # fmt: skip
def test_zero_sizes_and_a_missing_argument_are_one_line(tmp_path: Path, genomes, args, message) -> None:
    result = run(
        "build", genomes[0], "--model", "kmer:6", *([] if args == ["--index"] else ["-i", tmp_path / "i"]), *args
    )
    assert result.exit_code in (1, 2)
    lines = [line for line in result.stderr.splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("genome-index: error:") and message in lines[0]
