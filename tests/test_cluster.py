"""`build --ray` and `embed --ray`: on a local Ray started here, the same store and rows as a
local run, through a killed worker and a killed driver; a bad input is refused first."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from genome_index.api import GenomeIndex
from genome_index.build import cluster
from genome_index.cli import app
from genome_index.errors import GenomeIndexError
from genome_index.progress import Progress, Step
from genome_index.settings import RunOptions, StoreOptions
from genome_index.store import indexes
from genome_index.store.segments import CURRENT, SEGMENTS_DIR, SegmentWriter
from tests.helpers import EXAMPLES, ROOT, alive, children_of, write_fasta

pytestmark = pytest.mark.slow  # a local Ray and builds on it: seconds each

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]')")
runner = CliRunner()


def contents(directory: Path) -> dict[str, list]:
    """What a store holds, independent of ids and order: genomes, chunks, labels, vectors (one
    statement: each table's rows as one sorted list)."""
    store = GenomeIndex(directory)
    assert store.check() == []
    tables = {
        "genomes": ("(name, file, sha256, length, n_records, n_chunks)", "genomes", None),
        "chunks": ('(g.name, r.name, c.start, c."end", c.n_tokens, c.gc, c.n_count)',
                   "chunks c JOIN genomes g ON g.id = c.genome_id JOIN records r ON r.id = c.record_id", None),
        "labels": ("(g.name, l.key, l.value)", "labels l JOIN genomes g ON g.id = l.genome_id", None),
        "sequences": ("(g.name, s.length, md5(s.packed))", "sequences s JOIN genomes g ON g.id = s.genome_id", None),
        "sketches": ("(g.name, s.hashes)", "sketches s JOIN genomes g ON g.id = s.genome_id", None),
        "vectors": ("v.vector", "chunk_vectors v JOIN chunks c ON c.id = v.chunk_id JOIN genomes g ON g.id = "
                    "c.genome_id JOIN records r ON r.id = c.record_id", "g.name, r.idx, c.start"),  # records start at 0
    }  # fmt: skip
    lists = [f"(SELECT list({row} ORDER BY {order or row}) FROM {source})" for row, source, order in tables.values()]
    found = dict(zip(tables, store.sql("SELECT " + ", ".join(lists))[1][0], strict=True))
    found["vectors"] = np.array(  # FLOAT[dim], or a float16 BLOB
        [np.frombuffer(v, "<f2") if isinstance(v, bytes) else v for v in found["vectors"]], dtype=np.float32
    )
    return found


def assert_same_store(ray_store: Path, local_store: Path, tolerance: float) -> None:
    a, b = contents(ray_store), contents(local_store)
    for key in a:
        if key == "vectors":
            assert a[key].shape == b[key].shape
            assert np.abs(a[key] - b[key]).max() <= tolerance
        else:
            assert a[key] == b[key], key
    assert GenomeIndex(ray_store).settings() == GenomeIndex(local_store).settings()


class KillActorOnFirstGenome(Progress):
    """Kills the embedding actor's process when the driver receives the first genome."""

    def __init__(self) -> None:
        self.killed: list[int] = []

    def step(self, name: str, total: float | None = None, unit: str = "bp", **counts: int) -> Step:
        outer = self

        class Killing(Step):
            def advance(self, amount: float = 0, **counts: int) -> None:
                if counts.get("genomes") and not outer.killed:
                    outer.killed.extend(embedding_actor_pids())
                    for pid in outer.killed:
                        os.kill(pid, signal.SIGKILL)

        return Killing()


def embedding_actors() -> list[dict]:
    from ray._private import state

    return [a for a in state.actors().values() if cluster.ACTOR_CLASS in a["ActorClassName"]]


def embedding_actor_pids() -> list[int]:
    return [a["Pid"] for a in embedding_actors() if a["State"] == "ALIVE"]


def test_a_ray_build_with_a_worker_killed_equals_the_local_build(
    ray_address, nt_tiny_store, example_genomes, tmp_path, monkeypatch
) -> None:
    """nt-tiny on a CPU actor, one genome a call: the actor is killed when the first genome is
    back; Ray restarts it and retries its genomes, and the store equals the local build's."""
    monkeypatch.setattr(cluster, "GENOMES_PER_CALL", 1)
    progress = KillActorOnFirstGenome()
    report = GenomeIndex(tmp_path / "index").build(example_genomes, "nt-tiny", ray_address="auto", progress=progress)
    assert progress.killed, "no actor was alive to kill"
    assert any(a["NumRestarts"] >= 1 for a in embedding_actors())
    assert len(report.added) == 4
    assert_same_store(tmp_path / "index", nt_tiny_store, tolerance=1e-5)


def test_on_a_trained_store_the_workers_encode_and_the_segment_equals_the_local_one(
    ray_address, example_genomes, tmp_path, monkeypatch
) -> None:
    """A trained `ivf-pq` store (three genomes, 4 lists, the training floor lowered) grows by a
    fourth genome locally and on Ray: the Ray workers encode its windows with the store's
    quantizer, the driver adds those codes (none of its vectors are encoded there), and the new
    segment is byte for byte the local build's."""
    monkeypatch.setattr(indexes, "PQ_MIN_TRAINING", 400)
    trained = tmp_path / "trained"
    windows = ["-m", "kmer:4", "--chunk-tokens", "1000", "--index-type", "ivf-pq", "--ivf-lists", "4"]
    assert runner.invoke(app, ["build", *map(str, example_genomes[:3]), "-i", str(trained), *windows]).exit_code == 0
    added, encoded = [], []  # what the driver's writer did: add codes it was sent, or encode vectors
    add_codes, add_with_ids = SegmentWriter.add_codes, SegmentWriter.add_with_ids

    def spy_codes(self, codes, ids):
        added.append(add_codes(self, codes, ids))
        return added[-1]

    def spy_vectors(self, vectors, ids):
        encoded.append(len(ids))
        add_with_ids(self, vectors, ids)

    monkeypatch.setattr(SegmentWriter, "add_codes", spy_codes)
    monkeypatch.setattr(SegmentWriter, "add_with_ids", spy_vectors)
    segments = {}
    for how in ("local", "ray"):
        store = tmp_path / how
        shutil.copytree(trained, store)
        more = ["--ray", "auto"] if how == "ray" else []
        result = runner.invoke(app, ["build", str(example_genomes[3]), "-i", str(store), *more])
        assert result.exit_code == 0, result.output
        folder = store / SEGMENTS_DIR / (store / SEGMENTS_DIR / CURRENT).read_text().strip()
        segments[how] = sorted(folder.glob("0*.faiss"))[-1].read_bytes()
        if how == "local":
            assert encoded and not added, "a local build encodes in the driver"
            encoded.clear()
    assert added == [True] and not encoded, "the driver encoded what the workers should have"
    assert segments["ray"] == segments["local"]
    assert GenomeIndex(tmp_path / "ray").check() == []


def test_a_bad_input_is_refused_before_anything_is_dispatched(ray_address, tmp_path, monkeypatch) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for genome in sorted((EXAMPLES / "genomes").glob("*.fna.gz"))[:2]:
        (folder / genome.name).write_bytes(genome.read_bytes())
    (folder / "broken.fa").write_text("this is not FASTA\n")
    dispatched = []
    monkeypatch.setattr(cluster, "embedded", lambda *args, **kwargs: dispatched.append(args))
    result = runner.invoke(app, ["build", str(folder), "-i", str(tmp_path / "index"), "-m", "kmer:6", "--ray", "auto"])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "broken.fa" in result.output
    assert dispatched == []
    assert not (tmp_path / "index").exists()


def test_embed_on_ray_writes_the_rows_embed_writes(ray_address, example_genomes, tmp_path) -> None:
    local = tmp_path / "local.parquet"
    assert runner.invoke(app, ["embed", *map(str, example_genomes), "-o", str(local), "-m", "kmer:6"]).exit_code == 0
    result = runner.invoke(app, ["embed", *map(str, example_genomes), "-o", str(tmp_path / "ds"), "-m", "kmer:6",
                                 "--ray", "auto"])  # fmt: skip
    assert result.exit_code == 0, result.output
    parts = sorted((tmp_path / "ds").glob("*.parquet"))
    assert parts
    mine = pq.read_table(local)
    theirs = pq.ParquetDataset(str(tmp_path / "ds")).read()
    assert theirs.schema.remove_metadata() == mine.schema.remove_metadata()
    order = ["file", "start"]
    assert (
        theirs.sort_by([(c, "ascending") for c in order]).to_pylist()
        == mine.sort_by([(c, "ascending") for c in order]).to_pylist()
    )
    for part in parts:
        metadata = pq.read_schema(part).metadata
        assert metadata[b"genome_index.model"] == b"kmer:6"
        assert metadata == pq.read_schema(local).metadata
    assert f"wrote {mine.num_rows} chunk embeddings of 4 genome(s)" in result.output


@pytest.mark.parametrize(
    ("run", "actors", "message"),
    [
        (RunOptions(), 0, "--ray-actors 0: must be at least 1"),
        (RunOptions(), 2, "--ray-actors 2: the Ray cluster has 2 CPUs, and reading needs one"),
        (RunOptions(device="cuda"), None, "--device cuda, but the Ray cluster has no GPU"),
    ],
)
def test_an_actor_pool_the_cluster_cannot_hold_is_refused(ray_address, run, actors, message) -> None:
    with pytest.raises(GenomeIndexError, match=message):
        cluster.plan_pool(run, actors)


def test_the_default_pool_leaves_a_cpu_to_read(ray_address) -> None:
    assert cluster.plan_pool(RunOptions(), None) == cluster.Pool(actors=1, gpus=False)


def test_ray_options_need_ray(tmp_path, monkeypatch) -> None:
    fasta = write_fasta(tmp_path / "g.fa", [("r", "ACGT" * 100)])
    result = runner.invoke(app, ["build", str(fasta), "-i", str(tmp_path / "i"), "--ray-actors", "2"])
    assert result.exit_code == 1 and "--ray-actors applies with --ray" in result.output
    monkeypatch.chdir(tmp_path)
    (tmp_path / "genome-index.toml").write_text("ray_actors = 2\n")  # the file feeds the option too
    result = runner.invoke(app, ["build", str(fasta), "-i", str(tmp_path / "i")])
    assert result.exit_code == 1 and "--ray-actors applies with --ray" in result.output
    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # as if this process had not started Ray
    with pytest.raises(GenomeIndexError, match=r"cannot reach a Ray cluster at 127\.0\.0\.1:1: nothing answers"):
        cluster.connect("127.0.0.1:1")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(GenomeIndexError, match=r"pip install 'genome-index\[ray\]'"):
        cluster.connect("auto")


def test_a_model_error_on_a_worker_is_one_line(ray_address, example_genomes, tmp_path) -> None:
    result = runner.invoke(
        app, ["build", str(example_genomes[0]), "-i", str(tmp_path / "index"), "-m", "nt-tiny", "--layer", "99",
              "--ray", "auto"],
    )  # fmt: skip
    assert result.exit_code == 1
    assert result.output.startswith("genome-index: error: ") and result.output.count("\n") == 1
    assert "layer 99" in result.output
    assert not (tmp_path / "index").exists()


def ray_processes_below(pid: int) -> dict[int, str]:
    """The processes under `pid` with their command names (a local Ray's raylet, GCS, workers)."""
    found = {}
    for child in children_of(pid):
        try:
            found[child] = Path(f"/proc/{child}/comm").read_text().strip()
        except OSError:
            continue
    return found


def test_a_killed_driver_takes_its_local_ray_along_and_the_next_build_resumes(ray_address, tmp_path) -> None:
    """kmer:6 with labels, float16 vectors: a `build --ray auto` that started a local Ray of its
    own is killed with -9 once two genomes are committed. Ray's processes it started (they
    outlived the driver, about 170 MB) are stopped; the next `--ray` build adds only the other
    two, and every row and vector is identical to a local build's."""
    genomes = EXAMPLES / "genomes"
    labels = tmp_path / "labels.csv"
    labels.write_text("file,isolate\n" + "".join(f"{p.name},{i}\n" for i, p in enumerate(sorted(genomes.iterdir()))))
    args = ["build", str(genomes), "-i", str(tmp_path / "ray"), "-m", "kmer:6", "--labels", str(labels),
            "--vector-dtype", "float16"]  # fmt: skip
    child = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "kill_helper.py"), "KILL", "committed", "2", *args, "--ray", "auto"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    started: dict[int, str] = {}
    while child.poll() is None:
        started.update(ray_processes_below(child.pid))
        time.sleep(0.1)
    assert child.returncode == -signal.SIGKILL, child.stderr.read()
    assert "raylet" in started.values() and "gcs_server" in started.values()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(alive(pid) for pid in started):
        time.sleep(0.2)
    assert not [name for pid, name in started.items() if alive(pid)]
    assert GenomeIndex(tmp_path / "ray").sql("SELECT count(*) FROM genomes")[1] == [(2,)]
    result = runner.invoke(app, [*args, "--ray", "auto"])  # joins this module's Ray
    assert result.exit_code == 0, result.output
    assert "added 2 genome(s)" in result.output and "2 already stored" in result.output
    local = GenomeIndex(tmp_path / "local")
    local.build([genomes], "kmer:6", StoreOptions(vector_dtype="float16"), labels=labels)
    assert_same_store(tmp_path / "ray", tmp_path / "local", tolerance=0.0)


def test_a_dead_raylet_mid_build_is_one_line_and_the_store_stays_consistent(tmp_path) -> None:
    """Killing Ray's own raylet ended in a LocalRayletDiedError traceback, or in a Ray log line
    and a folder holding just build.lock."""
    index = tmp_path / "index"
    args = ["build", str(EXAMPLES / "genomes"), "-i", str(index), "-m", "nt-tiny", "--ray", "auto"]
    child = subprocess.Popen(
        [sys.executable, "-m", "genome_index.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    raylet = None
    while child.poll() is None and raylet is None:
        if (index / "metadata.duckdb").exists():  # Ray runs, the store is made: the embedding is under way
            raylet = next((pid for pid, name in ray_processes_below(child.pid).items() if name == "raylet"), None)
        time.sleep(0.1)
    assert raylet is not None, "the build ended before its raylet could be killed"
    os.kill(raylet, signal.SIGKILL)
    stdout, stderr = child.communicate(timeout=120)
    ours = [line for line in stderr.splitlines() if not line.startswith("[")]  # Ray's core: its level line only
    assert child.returncode == 1 and stdout == "" and "Traceback" not in stderr
    assert len(ours) == 1 and "Ray's raylet process on this machine died mid-run" in ours[0], stderr
    if index.exists():
        assert GenomeIndex.open(index).check() == []  # what was committed is whole
