"""The store: settings fixed by the first build, one transaction per genome, FAISS derived from DuckDB."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import faiss
import numpy as np
import pytest
from typer.testing import CliRunner

from genome_index.api import GenomeIndex
from genome_index.cli import app
from genome_index.errors import GenomeIndexError
from genome_index.io.labels import read_labels
from genome_index.settings import ModelOptions, QueryOptions, StoreOptions
from genome_index.store import FAISS_FILES, Store
from genome_index.store.indexes import build_faiss
from genome_index.store.lock import write_lock
from genome_index.store.rows import NewGenome
from genome_index.store.vectors import genome_vector, normalise
from tests.helpers import copy_store, vectors_in_table, write_fasta


@pytest.fixture(scope="module")
def built(nt_tiny_store: Path) -> Path:
    """The session's nt-tiny store of the example genomes; tests copy it before changing it."""
    return nt_tiny_store


@pytest.fixture
def store_copy(built: Path, tmp_path: Path) -> Path:
    return copy_store(built, tmp_path)


def counts(directory: Path) -> dict[str, int]:
    """Rows of each table, read as users read them (`sql`: the vector files as `chunk_vectors`)."""
    tables = ("genomes", "records", "chunks", "chunk_vectors", "genome_vectors")
    row = GenomeIndex(directory).sql("SELECT " + ", ".join(f"(SELECT count(*) FROM {t})" for t in tables))[1][0]
    return dict(zip(tables, row, strict=True))


def test_build_stores_every_genome_completely(built: Path, example_genomes) -> None:
    n = counts(built)
    assert n["genomes"] == len(example_genomes) == n["genome_vectors"]
    assert n["chunks"] == n["chunk_vectors"] > 0
    con = duckdb.connect(str(built / "metadata.duckdb"), read_only=True)
    coverage = con.execute(
        'SELECT g.length, sum(c."end" - c.start) FROM genomes g JOIN chunks c ON c.genome_id = g.id '
        "GROUP BY g.id, g.length"
    ).fetchall()
    con.close()
    assert all(length == covered for length, covered in coverage)


def test_settings_are_recorded(built: Path) -> None:
    settings = GenomeIndex.open(built).settings()
    assert settings.model == "nt-tiny"
    assert settings.model_revision.startswith("sha256:")
    assert (settings.layer, settings.pooling, settings.chunk_tokens) == (4, "mean", 1000)
    assert (settings.dim, settings.metric, settings.index_type) == (128, "cosine", "flat")
    assert (settings.chunking, settings.anchor_radius) == ("anchored", 999 * 6 // 4)
    assert settings.tool_version
    stored = dict(
        duckdb.connect(str(built / "metadata.duckdb"), read_only=True).sql("SELECT * FROM settings").fetchall()
    )
    assert stored["layer"] == "4" and stored["trust_remote_code"] == "false"  # the SQL surface: text


@pytest.mark.parametrize("chunking", ["anchored", "fixed"])
@pytest.mark.slow
def test_either_chunking_covers_every_base_once_and_finds_itself(tmp_path: Path, example_genomes, chunking) -> None:
    store = GenomeIndex(tmp_path / "index")
    store.build(example_genomes[:2], model=ModelOptions("kmer:6", chunking=chunking))
    assert store.settings().chunking == chunking
    assert store.check() == []
    for path in example_genomes[:2]:
        assert store.query(path, QueryOptions(k=1, mode="chunks", align=False))[0].file == str(path.resolve())


def test_overlap_needs_fixed_windows(tmp_path: Path, example_genomes) -> None:
    with pytest.raises(GenomeIndexError, match="--overlap applies to fixed windows"):
        GenomeIndex(tmp_path / "index").build(example_genomes[:1], model=ModelOptions("kmer:6", overlap=10))
    assert not (tmp_path / "index").exists()
    GenomeIndex(tmp_path / "index").build(
        example_genomes[:1], model=ModelOptions("kmer:6", overlap=10, chunking="fixed")
    )


@pytest.mark.slow
def test_a_store_from_before_anchored_windows_keeps_fixed_windows(tmp_path: Path, example_genomes) -> None:
    store = GenomeIndex(tmp_path / "index")
    store.build(example_genomes[:1], model=ModelOptions("kmer:6", chunking="fixed"))
    con = duckdb.connect(str(store.store.db_path))
    con.execute("DELETE FROM settings WHERE key IN ('chunking', 'anchor_radius', 'sketch_scaled')")  # as before
    con.close()
    settings = store.settings()
    assert (settings.chunking, settings.anchor_radius, settings.sketch_scaled) == ("fixed", 0, 1000)
    store.build(example_genomes[1:2])
    assert store.check() == []
    starts = [s for (s,) in store.sql("SELECT start FROM chunks WHERE start > 0")[1]]
    assert starts and all(s % 6000 == 0 for s in starts)


@pytest.mark.parametrize(
    ("option", "value", "named"),
    [("layer", 2, "layer"), ("chunk_tokens", 500, "chunk_tokens"), ("chunking", "fixed", "chunking")],
)
@pytest.mark.slow
def test_different_settings_are_refused_naming_the_difference(
    store_copy: Path, tmp_path: Path, option: str, value: int, named: str
) -> None:
    fasta = write_fasta(tmp_path / "new.fa", [("r", "ACGTTGCA" * 200)])
    before = counts(store_copy)
    with pytest.raises(GenomeIndexError, match=f"built with {named}"):
        GenomeIndex(store_copy).build([fasta], ModelOptions(**{option: value}))
    assert counts(store_copy) == before


def test_faiss_ids_equal_duckdb_ids_and_vectors_are_normalised(built: Path) -> None:
    with Store(built).reading() as reader:
        for kind in ("chunks", "genomes"):
            index = faiss.read_index(str(built / FAISS_FILES[kind]))
            ids = np.sort(faiss.vector_to_array(index.id_map))
            assert np.array_equal(ids, reader.ids(kind))
            stored_ids, vectors = reader.vectors(kind, 128)
            rebuilt = build_faiss(stored_ids, vectors, 128)
            assert np.allclose(rebuilt.reconstruct_batch(stored_ids), index.reconstruct_batch(stored_ids))
            assert np.allclose(np.linalg.norm(index.reconstruct_batch(stored_ids), axis=1), 1, atol=1e-5)


def test_genome_vector_is_normalised_mean_of_normalised_chunks() -> None:
    chunks = np.array([[3.0, 4.0], [0.0, 2.0]], dtype=np.float32)
    expected = np.array([0.3, 0.9]) / np.linalg.norm([0.3, 0.9])
    assert np.allclose(genome_vector(chunks), expected)
    assert np.allclose(np.linalg.norm(normalise(chunks), axis=1), 1)


@pytest.mark.parametrize("damage", ["delete", "truncate", "garbage", "stale"])
def test_damaged_faiss_file_is_rebuilt_from_duckdb(store_copy: Path, damage: str, caplog) -> None:
    path = store_copy / FAISS_FILES["chunks"]
    if damage == "delete":
        path.unlink()
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "garbage":
        path.write_bytes(b"not a faiss index at all" * 10)
    else:
        faiss.write_index(faiss.IndexIDMap2(faiss.IndexFlatIP(128)), str(path))
    store = Store(store_copy)
    with store.reading() as reader, caplog.at_level("WARNING", logger="genome_index"):
        index, rebuilt = store.load_faiss(reader, "chunks", reader.settings())
    assert rebuilt
    assert index.ntotal == counts(store_copy)["chunks"]
    assert "rebuilt from the stored vectors" in caplog.text


@pytest.mark.parametrize("mapped", [False, True], ids=["read", "mapped"])
@pytest.mark.parametrize("lagging", [False, True], ids=["whole", "lagging"])
def test_a_faiss_file_loads_the_same_read_or_mapped(store_copy: Path, mapped: bool, lagging: bool) -> None:
    """A searcher maps the flat file (`mapped`); a file that lags DuckDB (a build is writing)
    is read instead, to add what it lacks: either way the index holds every stored vector."""
    from genome_index.store.indexes import flat_vectors

    path = store_copy / FAISS_FILES["chunks"]
    whole = faiss.read_index(str(path))
    if lagging:
        ids = faiss.vector_to_array(whole.id_map)
        shorter = faiss.read_index(str(path))
        shorter.remove_ids(ids[len(ids) // 2 :])
        faiss.write_index(shorter, str(path))
    store = Store(store_copy)
    with store.reading() as reader:
        index, rebuilt = store.load_faiss(reader, "chunks", reader.settings(), mapped=mapped)
    assert rebuilt == lagging and index.ntotal == whole.ntotal  # no build holds the lock: it is to be saved
    order = np.argsort(faiss.vector_to_array(index.id_map))
    expected = np.argsort(faiss.vector_to_array(whole.id_map))
    inner, reference = faiss.downcast_index(index.index), faiss.downcast_index(whole.index)
    np.testing.assert_array_equal(flat_vectors(inner)[order], flat_vectors(reference)[expected])


def test_write_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    with write_lock(tmp_path):
        with pytest.raises(GenomeIndexError, match=r"another genome-index process \(pid \d+\)"), write_lock(tmp_path):
            pass
    with write_lock(tmp_path):
        pass


def test_not_a_store(tmp_path: Path) -> None:
    (tmp_path / "something.txt").write_text("hello")
    with pytest.raises(GenomeIndexError, match="not a genome-index store"):
        GenomeIndex.open(tmp_path)
    with pytest.raises(GenomeIndexError, match="no genome-index store"):
        GenomeIndex.open(tmp_path / "absent")
    fasta = write_fasta(tmp_path / "g.fa", [("r", "ACGT" * 50)])
    with pytest.raises(GenomeIndexError, match="not a genome-index store and not empty"):
        GenomeIndex(tmp_path).build([fasta], model="nt-tiny")


def test_foreign_duckdb_file_is_refused(tmp_path: Path) -> None:
    con = duckdb.connect(str(tmp_path / "metadata.duckdb"))
    con.execute("CREATE TABLE t (x INTEGER)")
    con.close()
    with pytest.raises(GenomeIndexError, match="not a genome-index store"):
        GenomeIndex.open(tmp_path).info()


def test_labels_csv_needs_file_or_name_column(tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_text("file,species,host\na.fa,S. aureus,human\n")
    assert read_labels(good) == {"a.fa": {"species": "S. aureus", "host": "human"}}
    bad = tmp_path / "bad.csv"
    bad.write_text("genome,species\na.fa,x\n")
    with pytest.raises(GenomeIndexError, match="'file' or 'name' column"):
        read_labels(bad)


@pytest.fixture(scope="module")
def kmer_store(tmp_path_factory, example_genomes) -> Path:
    """A kmer:6 store of two genomes (float16 vectors, so a wrong-width vector can be planted)."""
    directory = tmp_path_factory.mktemp("check") / "index"
    GenomeIndex(directory).build(example_genomes[:2], "kmer:6", StoreOptions(vector_dtype="float16"))
    return directory


DAMAGE = {  # what is done to a consistent store, and exactly what `check` must say of it (patterns)
    "a missing chunk row": (
        "DELETE FROM chunks WHERE id = 3",
        ["1 genomes whose chunk count differs from n_chunks", "1 vectors without a chunk",
         "1 records not covered exactly once by their chunks",
         "1 running vector sums that count other than the store's chunks or genomes",
         r"chunks.faiss holds (\d+) ids, metadata.duckdb \d+"],
    ),
    "a missing chunk vector (vectors in the table)": (
        "DELETE FROM chunk_vectors WHERE chunk_id = 3", ["1 chunks without a vector"]
    ),
    "a vector of the wrong width (vectors in the table)": (
        "UPDATE chunk_vectors SET vector = '\\x00\\x3c'::BLOB WHERE chunk_id = 3",
        ["1 chunk vectors of another width than the store's"],
    ),
    "a genome with no genome vector": (
        "DELETE FROM genome_vectors WHERE genome_id = 2", ["1 genomes without a genome vector"]
    ),
    "a missing sketch": ("DELETE FROM sketches WHERE genome_id = 1", ["1 genomes without a sketch"]),
    "a missing record": (
        "DELETE FROM records WHERE genome_id = 1",
        ["1 genomes whose records do not add up to their length",
         r"\d+ sequences without their record, or of another length"],
    ),
    "a missing sequence": (
        "DELETE FROM sequences WHERE record_id = (SELECT max(record_id) FROM sequences)",
        ["1 genomes whose sequences cover only some of their records",
         r"1 genomes whose stored sequence differs from their sha256 \(BPH2003\)"],
    ),
    "a sequence of another length": (
        "UPDATE sequences SET length = length - 1 WHERE record_id = 1",
        ["1 sequences without their record, or of another length",
         r"1 genomes whose stored sequence differs from their sha256 \(ATCC12600\)"],
    ),
    "a sequence whose bases changed": (
        "UPDATE sequences SET n_starts = [10], n_ends = [11] WHERE record_id = 1",
        [r"1 genomes whose stored sequence differs from their sha256 \(ATCC12600\)"],
    ),
    "rows of a deleted genome": (
        "DELETE FROM genomes WHERE id = 2",
        [r"\d+ rows of genomes that do not exist", "1 running vector sums that count other than the store's "
         "chunks or genomes", "genomes.faiss holds 2 ids, metadata.duckdb 1"],
    ),
    "vector sums that miss a genome": (
        "UPDATE vector_sums SET n = n - 1 WHERE kind = 'genomes'",
        ["1 running vector sums that count other than the store's chunks or genomes"],
    ),
    "a chunk that loses bases": (
        'UPDATE chunks SET "end" = "end" - 5 WHERE id = 2',
        ["1 records not covered exactly once by their chunks"],
    ),
}  # fmt: skip


def damaged(store: Path, statement: str) -> Path:
    if "chunk_vectors" in statement:  # a store made before vector files: its vectors in a table
        vectors_in_table(store)
    con = duckdb.connect(str(store / "metadata.duckdb"))
    con.execute(statement)
    con.close()
    return store


@pytest.mark.parametrize("damage", list(DAMAGE))
@pytest.mark.slow
def test_check_reports_exactly_what_is_wrong(kmer_store: Path, tmp_path: Path, damage: str) -> None:
    statement, expected = DAMAGE[damage]
    store = damaged(copy_store(kmer_store, tmp_path), statement)
    problems = GenomeIndex.open(store).check()
    assert len(problems) == len(expected), problems
    assert all(re.fullmatch(pattern, problem) for pattern, problem in zip(expected, problems, strict=True)), problems
    result = CliRunner().invoke(app, ["check", "--index", str(store)])
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines[:-1] == [f"problem: {p}" for p in problems]
    assert lines[-1].startswith(f"genome-index: error: {store}: {len(problems)} problem(s)")
    in_duckdb = [problem for problem in problems if ".faiss" not in problem and "sha256" not in problem]
    assert GenomeIndex.open(store).check(quick=True) == in_duckdb  # --quick: the same queries, no FAISS, no hashing


def first_vector_file(store: Path) -> tuple[Path, int]:
    """The store's first vector file and the chunk vectors it holds."""
    name, rows = GenomeIndex(store).sql("SELECT name, rows FROM vector_files ORDER BY first_chunk LIMIT 1")[1][0]
    return store / "vectors" / name, rows


@pytest.mark.parametrize("damage", ["missing", "truncated", "flipped"])
def test_check_names_a_damaged_vector_file(kmer_store: Path, tmp_path: Path, damage: str) -> None:
    """A file gone or cut short leaves its chunks without vectors (SQL reads the others); a
    changed byte is found by the file's SHA-256. `--quick` compares sizes, not bytes."""
    store = copy_store(kmer_store, tmp_path)
    path, rows = first_vector_file(store)
    data = path.read_bytes()
    if damage == "missing":
        path.unlink()
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(data[: len(data) // 2] + bytes([data[len(data) // 2] ^ 1]) + data[len(data) // 2 + 1 :])
    said = {
        "missing": [f"vectors/{path.name} is missing ({rows} chunk vectors)", f"{rows} chunks without a vector"],
        "truncated": [f"vectors/{path.name} is {len(data) // 2} bytes, vector_files says {len(data)}",
                      f"{rows} chunks without a vector"],
        "flipped": [f"vectors/{path.name} differs from its SHA-256 in vector_files"],
    }[damage]  # fmt: skip
    assert GenomeIndex.open(store).check() == said
    assert GenomeIndex.open(store).check(quick=True) == ([] if damage == "flipped" else said)


def test_a_vector_file_no_commit_lists_is_ignored_and_removed_by_the_next_writer(kmer_store: Path, tmp_path) -> None:
    """A build killed between writing a group's file and committing its rows leaves a file no
    row names: readers never see it, and the next command that writes removes it."""
    store = copy_store(kmer_store, tmp_path)
    path, _ = first_vector_file(store)
    orphan = path.with_name("000099999999-0badf00d.parquet")
    orphan.write_bytes(path.read_bytes())
    (store / "vectors" / "x.parquet.tmp").write_bytes(b"half a file")
    index = GenomeIndex.open(store)
    before = index.sql("SELECT count(*) FROM chunk_vectors")[1][0][0]
    assert before == index.sql("SELECT count(*) FROM chunks")[1][0][0] and index.check() == []
    index.remove(["BPH2003"])
    assert sorted(p.name for p in (store / "vectors").iterdir()) == [
        name for (name,) in index.sql("SELECT name FROM vector_files ORDER BY name")[1]
    ]
    assert index.check() == []


def run(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_a_store_with_its_vectors_in_a_table_keeps_working_until_migrate_moves_them_out(
    kmer_store: Path, tmp_path: Path, example_genomes
) -> None:
    """A store made before vector files: it opens, answers, grows and shrinks as it is (its
    vectors stay in its table); `migrate` moves them into files, the same rows in SQL, and the
    database file shrinks; a second `migrate` has nothing to do."""
    store = vectors_in_table(copy_store(kmer_store, tmp_path))
    index = GenomeIndex.open(store)
    nearest = QueryOptions(k=1, align=False)
    assert index.check() == [] and index.query(example_genomes[0], nearest)[0].name == "ATCC12600"
    assert run("build", example_genomes[2], "--index", store).exit_code == 0
    assert run("remove", "BPH2003", "--index", store).exit_code == 0
    assert not (store / "vectors").exists() and index.check() == []
    vectors = index.sql("SELECT chunk_id, vector FROM chunk_vectors ORDER BY chunk_id")[1]
    before = (store / "metadata.duckdb").stat().st_size
    result = run("migrate", "--index", store)
    assert result.exit_code == 0, result.output
    assert re.fullmatch(rf"moved {len(vectors)} chunk vectors into 1 file\(s\) under vectors/; metadata.duckdb "
                        r"[\d.]+ MB -> [\d.]+ MB\n", result.stderr), result.stderr  # fmt: skip
    assert (store / "metadata.duckdb").stat().st_size < before
    assert index.sql("SELECT chunk_id, vector FROM chunk_vectors ORDER BY chunk_id")[1] == vectors
    assert index.sql("SELECT count(*) FROM information_schema.tables WHERE table_name = 'chunk_vectors' "
                     "AND table_type = 'BASE TABLE'")[1] == [(0,)]  # fmt: skip
    assert index.check() == [] and index.query(example_genomes[0], nearest)[0].name == "ATCC12600"
    assert "nothing to move" in run("migrate", "--index", store).stderr


def test_a_migration_that_fails_before_it_commits_leaves_the_store_as_it_was(
    kmer_store: Path, tmp_path: Path, monkeypatch
) -> None:
    store = vectors_in_table(copy_store(kmer_store, tmp_path))
    vectors = GenomeIndex(store).sql("SELECT chunk_id, vector FROM chunk_vectors ORDER BY chunk_id")[1]
    monkeypatch.setattr("genome_index.store.writes.VECTOR_FILES", "CREATE TABLE vector_files (")  # fails in the commit
    with pytest.raises(GenomeIndexError, match="database error"):
        GenomeIndex.open(store).migrate()
    assert not list((store / "vectors").glob("*"))  # the files it wrote are gone again
    assert GenomeIndex(store).sql("SELECT chunk_id, vector FROM chunk_vectors ORDER BY chunk_id")[1] == vectors
    assert GenomeIndex.open(store).check() == []


def test_removing_a_genome_writes_its_files_again_without_it(kmer_store: Path, tmp_path: Path) -> None:
    store = copy_store(kmer_store, tmp_path)
    index = GenomeIndex.open(store)
    kept = index.sql("SELECT c.id, v.vector FROM chunks c JOIN chunk_vectors v ON v.chunk_id = c.id "
                     "JOIN genomes g ON g.id = c.genome_id WHERE g.name <> 'BPH2003' ORDER BY c.id")[1]  # fmt: skip
    holding = {name for (name,) in index.sql(
        "SELECT f.name FROM vector_files f, genomes g JOIN chunks c ON c.genome_id = g.id WHERE g.name = 'BPH2003' "
        "AND c.id BETWEEN f.first_chunk AND f.last_chunk")[1]}  # fmt: skip
    assert holding
    index.remove(["BPH2003"])
    assert index.sql("SELECT chunk_id, vector FROM chunk_vectors ORDER BY chunk_id")[1] == kept
    assert not holding & {path.name for path in (store / "vectors").iterdir()}  # written again, never changed
    assert index.check() == []


@pytest.mark.parametrize(
    ("damage", "expected"),
    [("delete", "chunks.faiss missing"), ("other ids", "chunks.faiss holds 1 ids, metadata.duckdb")],
)
def test_check_reports_a_faiss_file_that_disagrees(
    kmer_store: Path, tmp_path: Path, damage: str, expected: str
) -> None:
    store = copy_store(kmer_store, tmp_path)
    path = store / FAISS_FILES["chunks"]
    if damage == "delete":
        path.unlink()
    else:
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(2080))
        index.add_with_ids(np.ones((1, 2080), dtype=np.float32), np.array([999], dtype=np.int64))
        faiss.write_index(index, str(path))
    problems = GenomeIndex.open(store).check()
    assert len(problems) == 1 and problems[0].startswith(expected)


@pytest.mark.parametrize(
    ("statement", "remedy"),
    [
        ("UPDATE vector_sums SET n = 0", "`genome-index reindex` rebuilds"),
        ("DELETE FROM sketches WHERE genome_id = 1", "which `reindex` cannot repair"),
    ],
)
def test_check_suggests_reindex_only_for_what_reindex_repairs(
    kmer_store: Path, tmp_path: Path, statement: str, remedy: str
) -> None:
    store = damaged(copy_store(kmer_store, tmp_path), statement)
    result = CliRunner().invoke(app, ["check", "--index", str(store)])
    assert result.exit_code == 1 and remedy in result.stderr.splitlines()[-1]
    if "rebuilds" in remedy:
        assert CliRunner().invoke(app, ["reindex", "--index", str(store)]).exit_code == 0
        assert GenomeIndex.open(store).check() == []


def test_check_of_a_consistent_store(kmer_store: Path) -> None:
    assert GenomeIndex.open(kmer_store).check() == []
    result = CliRunner().invoke(app, ["check", "--index", str(kmer_store)])
    assert result.exit_code == 0 and result.stdout.strip().endswith("consistent")


@pytest.mark.slow
def test_readers_let_a_waiting_writer_in_first(kmer_store: Path, tmp_path: Path) -> None:
    """A build kept waiting for the file says so; readers in a loop then step aside (at most 1 s)
    instead of holding the file so often that the build never commits."""
    import os
    import time

    from genome_index.store import WANTED_FILE

    store = copy_store(kmer_store, tmp_path)
    wanted = store / WANTED_FILE
    wanted.touch()
    started = time.monotonic()
    assert GenomeIndex.open(store).sql("SELECT count(*) FROM genomes")[1] == [(2,)]
    assert 0.9 <= time.monotonic() - started < 5
    os.utime(wanted, (time.time() - 10, time.time() - 10))  # a writer that gave up: ignored
    started = time.monotonic()
    GenomeIndex.open(store).sql("SELECT 1")
    assert time.monotonic() - started < 0.9
    GenomeIndex.open(store).remove(["1"])  # a writer that got the file clears the sign
    assert not wanted.exists()


def new_genome(number: int, windows: int, dim: int = 8, sha: str | None = None) -> NewGenome:
    """A genome's rows as a build commits them, with random vectors."""
    rng = np.random.default_rng(number)
    starts = np.arange(windows) * 100
    return NewGenome(
        name=f"g{number}", file=f"g{number}.fa", sha256=sha or f"{number:064x}", length=100 * windows, gc=0.5,
        n_count=0, records=[{"name": "r", "description": "r", "length": 100 * windows, "gc": 0.5, "n_count": 0}],
        chunks={
            "record": np.zeros(windows, int), "start": starts, "end": starts + 100, "n_tokens": np.full(windows, 100),
            "gc": np.full(windows, 0.5), "n_count": np.zeros(windows, int),
        },
        vectors=rng.normal(size=(windows, dim)).astype(np.float32), labels={"n": str(number)},
        sketch=np.arange(3, dtype=np.uint64), sketch_scaled=1000, sequences=None,
    )  # fmt: skip


@pytest.fixture
def empty_store(tmp_path: Path) -> Store:
    from genome_index.settings import StoreSettings

    store = Store(tmp_path / "index")
    store.directory.mkdir()
    store.create(
        StoreSettings(
            model="t", model_source="t", model_revision="t", layer=0, chunk_tokens=100, chunking="fixed",
            anchor_radius=0, overlap=0, dim=8, index_type="flat", vector_dtype="float16", sketch_scaled=1000,
        )
    )  # fmt: skip
    return store


def test_genomes_committed_as_a_group_get_the_rows_and_ids_of_one_at_a_time(empty_store: Store, tmp_path) -> None:
    genomes = [new_genome(i, windows=3 + i) for i in range(3)]
    with empty_store.session() as writer:
        grouped = writer.add_genomes(genomes, "float16")
    rows = table_rows(empty_store, ("chunks", "labels", "records"))
    vectors = table_rows(empty_store, ("chunk_vectors",))["chunk_vectors"]
    assert [gid for gid, _ in grouped] == [1, 2, 3]
    assert [ids.tolist() for _, ids in grouped] == [[1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11, 12]]
    stored = np.frombuffer(b"".join(v for _, v in vectors), "<f2").reshape(-1, 8)
    assert np.array_equal(stored, np.concatenate([g.vectors for g in genomes]).astype("<f2"))
    other = Store(tmp_path / "one-by-one")
    other.directory.mkdir()
    other.create(empty_store.settings())
    with other.session() as writer:
        assert [writer.add_genome(g, "float16")[0] for g in genomes] == [1, 2, 3]
    assert rows == table_rows(other, tuple(rows))
    assert GenomeIndex(empty_store.directory).check(quick=True) == []


def table_rows(store: Store, tables: tuple[str, ...]) -> dict[str, list[tuple]]:
    index = GenomeIndex(store.directory)
    return {t: [tuple(row) for row in index.sql(f"SELECT * FROM {t} ORDER BY ALL")[1]] for t in tables}


def test_a_group_that_fails_commits_none_of_its_genomes(empty_store: Store) -> None:
    with empty_store.session() as writer:
        writer.add_genomes([new_genome(0, 2)], "float16")
        again = [new_genome(1, 2), new_genome(2, 2, sha=f"{0:064x}")]  # the second repeats a stored sequence
        with pytest.raises(duckdb.ConstraintException):
            writer.add_genomes(again, "float16")
        assert list(writer.genome_names().values()) == ["g0"] and writer.summary()[0]["chunks"] == 2
        assert writer.add_genomes([new_genome(1, 2)], "float16")[0][0] == 2  # ids were not used up


@pytest.fixture(scope="module")
def small_store(tmp_path_factory, example_genomes) -> Path:
    """A kmer:4 store of two examples (quick to rebuild), for tests that break it."""
    index = tmp_path_factory.mktemp("links") / "index"
    GenomeIndex(index).build(example_genomes[:2], "kmer:4")
    return index


@pytest.mark.parametrize(
    ("link", "command"),
    [
        ("build.lock", "remove"),
        ("build.lock", "build"),
        ("chunks.faiss.tmp", "reindex"),
        ("chunks.faiss", "reindex"),
        ("metadata.duckdb", "build"),
        ("metadata.duckdb.wal", "remove"),
        ("chunks.faiss.tmp", "query"),  # a query that repairs a stale FAISS file
    ],
)
def test_writes_never_follow_a_link_in_the_store(
    link: str, command: str, small_store: Path, example_genomes, tmp_path: Path
) -> None:
    index = copy_store(small_store, tmp_path)
    outside = tmp_path / "outside"
    if link == "metadata.duckdb":  # the link leads to a working copy of the database
        (index / link).rename(outside)
    else:
        (index / link).unlink(missing_ok=True)
        outside.write_bytes(b"precious")
    before = outside.read_bytes()
    (index / link).symlink_to(outside)
    args = {
        "remove": ["remove", "1"],
        "build": ["build", example_genomes[2]],
        "reindex": ["reindex"],
        "query": ["query", example_genomes[0], "--no-align", "-k", "1"],
    }[command]
    if command == "query":
        (index / "chunks.faiss").unlink()  # stale: the query rebuilds it and would save it
    result = CliRunner().invoke(app, [*map(str, args), "-i", str(index)])
    assert outside.read_bytes() == before
    if command == "query":
        assert result.exit_code == 0 and "symbolic link" in result.stderr
    else:
        assert result.exit_code == 1 and result.stderr.count("\n") == 1
        assert f"{index / link} is a symbolic link" in result.stderr
