"""A trained `ivf-pq` store: quantizers trained once, write-once segments, lists read in place.

Stores of 4 inverted lists (`--ivf-lists 4`), with the floor of 10,000 vectors lowered, so that
the example genomes (about 317 windows each at 1,000-token kmer:4 windows) cross the threshold:
a store of one genome stays exact, two or more are trained.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pytest
from typer.testing import CliRunner

from genome_index.api import GenomeIndex
from genome_index.cli import app
from genome_index.errors import GenomeIndexError
from genome_index.settings import QueryOptions
from genome_index.store import Store, indexes
from genome_index.store import segments as segments_module
from genome_index.store.indexes import build_faiss, train_ivf_pq
from genome_index.store.segments import CURRENT, SEGMENTS_DIR, Segments, SegmentWriter, stacked
from genome_index.store.vectors import normalise

runner = CliRunner()
WINDOWS = ("--model", "kmer:4", "--chunk-tokens", "1000", "--index-type", "ivf-pq", "--ivf-lists", "4")


def run(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(autouse=True)
def small_floor(monkeypatch) -> None:
    """Train at 400 vectors (more than one example genome holds) into 4 lists (`--ivf-lists 4`):
    the floor of 10,000 vectors is lowered for the tests."""
    monkeypatch.setattr(indexes, "PQ_MIN_TRAINING", 400)


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.faiss"))}


def generation_folder(index: Path) -> Path:
    return index / SEGMENTS_DIR / (index / SEGMENTS_DIR / CURRENT).read_text().strip()


def chunk_count(index: Path) -> int:
    with Store(index).reading() as reader:
        return len(reader.ids("chunks"))


def test_a_store_is_exact_until_the_threshold_then_trained_once_and_grown_by_segments(
    tmp_path: Path, example_genomes
) -> None:
    """One genome: `chunks.faiss`, exact. Two: trained, segmented, `chunks.faiss` gone. Each
    later build adds a segment and leaves every file already written as it was."""
    index = tmp_path / "index"
    assert run("build", example_genomes[0], "--index", index, *WINDOWS).exit_code == 0
    assert (index / "chunks.faiss").exists() and not (index / SEGMENTS_DIR).exists()
    assert Store(index).check() == []

    assert run("build", example_genomes[1], "--index", index).exit_code == 0
    assert not (index / "chunks.faiss").exists()
    folder = generation_folder(index)
    before = digests(folder)
    assert set(before) == {"trained.faiss", "000001.faiss"}

    for n, genome in enumerate(example_genomes[2:], start=2):
        assert run("build", genome, "--index", index).exit_code == 0
        after = digests(generation_folder(index))
        assert {name: after[name] for name in before} == before  # nothing on disk rewritten
        assert len(after) == len(before) + 1 and f"{n:06d}.faiss" in after
        before = after
    assert Store(index).check() == []
    store = Store(index)
    with store.reading() as reader:
        loaded, rebuilt = store.load_faiss(reader, "chunks", store.settings())
    assert not rebuilt and isinstance(loaded, faiss.IndexIVFPQ) and loaded.ntotal == chunk_count(index)


def test_searching_the_segments_finds_what_one_index_of_them_all_finds() -> None:
    """Segments stacked as one index: the same ids and scores as one IVF-PQ holding every vector."""
    rng = np.random.default_rng(3)
    vectors = normalise(rng.normal(size=(3000, 32)).astype(np.float32))
    trained = train_ivf_pq(vectors[:1000], 8)
    whole = faiss.clone_index(trained)
    whole.add_with_ids(vectors, np.arange(3000) + 10)
    parts = []
    for lo in range(0, 3000, 700):
        part = faiss.clone_index(trained)
        part.add_with_ids(vectors[lo : lo + 700], np.arange(lo, min(lo + 700, 3000)) + 10)
        parts.append(part)
    joined = stacked(trained, parts)
    queries = normalise(vectors[::97] + 0.01)
    whole.nprobe = joined.nprobe
    expected, found = whole.search(queries, 10), joined.search(queries, 10)
    np.testing.assert_array_equal(found[1], expected[1])
    np.testing.assert_allclose(found[0], expected[0], rtol=1e-6)


def test_codes_made_elsewhere_with_the_codebook_are_the_codes_the_writer_makes(tmp_path: Path) -> None:
    """A Ray worker sent a store's `Codebook` encodes a genome's vectors; the driver adds the codes:
    the segment written is byte for byte the one encoding the vectors in the driver writes.
    Codes of another quantizer (a store retrained meanwhile) are refused and nothing is added."""
    rng = np.random.default_rng(8)
    vectors = normalise(rng.normal(size=(3000, 32)).astype(np.float32))
    trained = train_ivf_pq(vectors[:1000], 8)
    written = []
    for how in ("vectors", "codes"):
        (tmp_path / how).mkdir()
        segments = Segments(tmp_path / how)
        writer = SegmentWriter(segments, segments.begin(trained), trained)
        if how == "vectors":
            writer.add_with_ids(vectors, np.arange(3000) + 7)
        else:
            encode = pickle.loads(pickle.dumps(writer.codebook)).encoder()  # as Ray sends it to a worker
            for lo in range(0, 3000, 500):  # a genome at a time
                assert writer.add_codes(encode(vectors[lo : lo + 500]), np.arange(lo, lo + 500) + 7)
        writer.flush()
        written.append(segments.paths(writer.generation)[0].read_bytes())
    assert written[0] == written[1]

    other = SegmentWriter(Segments(tmp_path / "other"), 1, train_ivf_pq(vectors[1000:2000], 8))
    assert other.codebook.digest != writer.codebook.digest
    assert not other.add_codes(writer.codebook.encoder()(vectors[:10]), np.arange(10))
    assert other.ntotal == 0


@pytest.fixture(scope="module")
def big_segment(tmp_path_factory: pytest.TempPathFactory) -> Segments:
    """One published segment of 300,000 256-d vectors in 4 lists (about 12 MB of codes and ids),
    made once for the module's tests, which only read it (3 s to make)."""
    rng = np.random.default_rng(5)
    vectors = normalise(rng.normal(size=(300_000, 256)).astype(np.float32))
    trained = train_ivf_pq(vectors[:2000], 4)
    segments = Segments(tmp_path_factory.mktemp("big-segment"))
    writer = SegmentWriter(segments, segments.begin(trained), trained)
    writer.add_with_ids(vectors, np.arange(len(vectors)))
    del vectors
    writer.flush()
    segments.publish(writer.generation)
    return segments


def test_ties_are_decided_by_id_whatever_the_order_of_the_segments() -> None:
    """Near-identical windows get the same 8-bit codes, so their scores tie exactly: the same
    store answers the same whichever segment holds which (a reindex, a shard of a Ray search)."""
    rng = np.random.default_rng(4)
    vectors = normalise(rng.normal(size=(1200, 32)).astype(np.float32))
    trained = train_ivf_pq(vectors, 4)
    twins = np.repeat(vectors[:1], 8, axis=0)  # eight copies of one vector: eight exact ties
    parts = []
    for ids in (np.arange(100, 108), np.arange(10, 18)):
        part = faiss.clone_index(trained)
        part.add_with_ids(twins, ids)
        parts.append(part)
    for order in (parts, parts[::-1]):
        index = stacked(trained, order)
        index.nprobe = index.nlist
        scores, ids = indexes.search(index, vectors[:1], 5)
        assert ids.tolist() == [[10, 11, 12, 13, 14]] and len(set(scores[0].tolist())) == 1


OPEN_IN_A_FRESH_PROCESS = """
import json, sys
from pathlib import Path
from genome_index.store.segments import Segments

def anonymous():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024

def mapped(path):
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if "-" in line.split(" ")[0] and len(line.split()) >= 5:
            inside = line.split()[-1] == path
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1]) * 1024
    return total

segments = Segments(Path(sys.argv[1]))
path = str(segments.paths(segments.generation())[0].resolve())
before = anonymous()
index, listed = segments.open(segments.generation())
grown = anonymous() - before, mapped(path)
print(json.dumps({"grown": grown, "ntotal": index.ntotal, "listed": [[i.count, i.first, i.last] for i in listed]}))
"""


def test_a_segment_is_written_once_and_read_in_place(big_segment: Segments) -> None:
    """Opening segments maps their lists without reading them: the process's own memory grows by
    about their ids (FAISS copies them: 8 bytes a vector, of 40 here, 2.3 of 11.7 MiB), and none
    of the segment's pages are read (its mapping's resident pages, from /proc/self/smaps).
    Measured in a fresh process: in the test process, threads that other tests left allocate
    meanwhile (6.2 MiB was seen there once)."""
    size = big_segment.paths(big_segment.generation())[0].stat().st_size
    assert size > 300_000 * 32
    resident("RssAnon")  # skips where /proc/self/status has no such lines

    child = subprocess.run(
        [sys.executable, "-c", OPEN_IN_A_FRESH_PROCESS, str(big_segment.folder.parent)],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    opened = json.loads(child.stdout)
    grown = opened["grown"]
    assert opened["listed"] == [[300_000, 0, 299_999]]
    assert opened["ntotal"] == 300_000
    assert grown[0] < size / 2, f"{grown[0] >> 20} MiB of private memory for a {size >> 20} MiB segment"
    assert grown[1] < size / 8, f"{grown[1] >> 20} MiB of the {size >> 20} MiB segment read on opening it"
    index, _ = big_segment.open(big_segment.generation())
    queries = normalise(np.random.default_rng(6).normal(size=(2, 256)).astype(np.float32))
    assert index.search(queries, 5)[1].min() >= 0


def test_a_reader_lets_go_of_the_pages_its_queries_mapped(big_segment: Segments, monkeypatch) -> None:
    """A query probing every list maps the whole segment. Below MAPPED_BUDGET the pages stay
    mapped; past it the reader drops them after the query (the kernel's page cache keeps them),
    so its resident memory follows one query's lists, not every list it ever probed; the
    answers are the same."""
    size = big_segment.paths(big_segment.generation())[0].stat().st_size
    index, _ = big_segment.open(big_segment.generation())
    index.nprobe = index.nlist
    queries = normalise(np.random.default_rng(7).normal(size=(8, 256)).astype(np.float32))
    before = mapped_bytes()
    expected = indexes.search(index, queries, 5)
    assert mapped_bytes() - before > size / 2, "the query did not read the lists it probed"

    monkeypatch.setattr(segments_module, "MAPPED_BUDGET", size // 4)
    found = indexes.search(index, queries, 5)
    assert mapped_bytes() - before < size / 8, f"{(mapped_bytes() - before) >> 20} MiB still mapped"
    np.testing.assert_array_equal(found[1], expected[1])
    np.testing.assert_array_equal(found[0], expected[0])
    found = indexes.search(index, queries, 5)  # mapped again from the page cache
    np.testing.assert_array_equal(found[1], expected[1])


def resident(kind: str) -> int:
    """Bytes of this process's resident memory of one kind (RssAnon: its own; RssFile: pages of
    mapped files)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{kind}:"):
            return int(line.split()[1]) * 1024
    pytest.skip(f"no {kind} in /proc/self/status on this system")


def mapped_bytes() -> int:
    return resident("RssFile")


@pytest.fixture
def trained_store(tmp_path: Path, example_genomes) -> Path:
    index = tmp_path / "index"
    assert run("build", *example_genomes[:3], "--index", index, *WINDOWS).exit_code == 0
    assert (index / SEGMENTS_DIR / CURRENT).exists()
    return index


def test_queries_on_a_trained_store_find_what_an_exact_store_finds(tmp_path: Path, example_genomes, trained_store):
    exact = tmp_path / "exact"
    assert run("build", *example_genomes[:3], "--index", exact, "--model", "kmer:4", "--chunk-tokens", "1000")
    options = QueryOptions(k=3, mode="chunks", align=False)
    for genome in example_genomes[:3]:
        ours = [h.name for h in GenomeIndex.open(trained_store).query(genome, options)]
        assert ours[0] == GenomeIndex.open(exact).query(genome, options)[0].name


def test_a_rewrite_killed_before_it_was_published_is_never_read_and_is_cleaned_up(
    trained_store: Path, example_genomes
) -> None:
    """A generation without CURRENT naming it (a reindex killed half way) changes nothing:
    readers use the current one, and the next build removes it."""
    orphan = trained_store / SEGMENTS_DIR / "99"
    orphan.mkdir()
    (orphan / "trained.faiss").write_bytes(b"half a file")
    assert Store(trained_store).check() == []
    assert run("build", example_genomes[3], "--index", trained_store).exit_code == 0
    assert not orphan.exists() and Store(trained_store).check() == []


def test_segments_lacking_a_commit_are_completed_by_readers_and_the_next_build(
    trained_store: Path, example_genomes
) -> None:
    """A build killed after its commit but before its segment: readers add what is missing from
    DuckDB (and write it as a segment); `check` names it until then."""
    store = Store(trained_store)
    last = sorted(generation_folder(trained_store).glob("0*.faiss"))[-1]
    assert run("build", example_genomes[3], "--index", trained_store).exit_code == 0
    newest = sorted(generation_folder(trained_store).glob("0*.faiss"))[-1]
    assert newest != last
    manifest = newest.parent / "MANIFEST"  # as if killed before the segment was written
    manifest.write_text("".join(manifest.read_text().splitlines(keepends=True)[:-1]))
    newest.unlink()
    assert any("lacks" in problem for problem in store.check())
    hits = GenomeIndex.open(trained_store).query(example_genomes[3], QueryOptions(k=1, mode="chunks", align=False))
    assert hits[0].name == example_genomes[3].name.split(".")[0]
    assert store.check() == []  # the query wrote the missing segment


@pytest.mark.parametrize("damage", ["truncated", "flipped", "missing"])
def test_a_damaged_segment_is_named_by_check_and_rewritten_by_reindex(trained_store: Path, damage: str) -> None:
    """A segment cut short or gone is refused before FAISS maps it (a mapped file shorter than
    its lists would crash the process); a changed byte is found by `check`'s SHA-256."""
    segment = sorted(generation_folder(trained_store).glob("0*.faiss"))[0]
    data = bytearray(segment.read_bytes())
    if damage == "truncated":
        segment.write_bytes(data[:100])
    elif damage == "flipped":
        data[len(data) // 2] ^= 0xFF
        segment.write_bytes(data)
    else:
        segment.unlink()
    problems = Store(trained_store).check()
    assert len(problems) == 1 and segment.name in problems[0], problems
    assert {"truncated": "truncated (100 of", "flipped": "SHA-256", "missing": "missing"}[damage] in problems[0]
    result = run("reindex", "--index", trained_store)
    assert result.exit_code == 0, result.output
    assert Store(trained_store).check() == []
    assert generation_folder(trained_store).name != segment.parent.name  # a new generation


def test_reindex_retrains_and_compacts_remove_keeps_the_training(trained_store: Path, example_genomes) -> None:
    assert run("build", example_genomes[3], "--index", trained_store).exit_code == 0
    assert len(list(generation_folder(trained_store).glob("0*.faiss"))) == 2
    trained_before = (generation_folder(trained_store) / "trained.faiss").read_bytes()

    assert run("remove", "BPH2003", "--index", trained_store).exit_code == 0
    folder = generation_folder(trained_store)
    assert (folder / "trained.faiss").read_bytes() == trained_before  # remove keeps the quantizers
    assert len(list(folder.glob("0*.faiss"))) == 1
    assert Store(trained_store).check() == []
    assert len(Segments(trained_store).ids(int(folder.name))) == chunk_count(trained_store)

    assert run("reindex", "--index", trained_store).exit_code == 0
    assert generation_folder(trained_store) != folder and not folder.exists()
    assert Store(trained_store).check() == []


def test_reindex_to_another_type_leaves_no_segments(trained_store: Path) -> None:
    assert run("reindex", "--index", trained_store, "--index-type", "flat").exit_code == 0
    assert not (trained_store / SEGMENTS_DIR).exists() and (trained_store / "chunks.faiss").exists()
    assert Store(trained_store).check() == []
    assert run("reindex", "--index", trained_store, "--index-type", "ivf-pq").exit_code == 0
    assert (trained_store / SEGMENTS_DIR / CURRENT).exists() and not (trained_store / "chunks.faiss").exists()


@pytest.mark.parametrize("kind", ["ivf-pq", "flat"])
def test_a_store_trained_before_segments_keeps_opening_and_its_next_build_segments_it(
    trained_store: Path, example_genomes, kind: str
) -> None:
    """A store from before segments (one `chunks.faiss` holding a whole IVF-PQ), or one whose
    build was stopped before it trained (an exact `chunks.faiss` past the threshold). Queries
    use it as it is; the next build rewrites it as segments."""
    store = Store(trained_store)
    with store.reading() as reader:
        ids, vectors = reader.vectors("chunks", store.settings().dim)
    store.write_faiss("chunks", build_faiss(ids, vectors, store.settings().dim, kind))
    Segments(trained_store).discard()
    assert store.check() == []
    hits = GenomeIndex.open(trained_store).query(example_genomes[0], QueryOptions(k=1, mode="chunks", align=False))
    assert hits[0].name == "ATCC12600"
    assert run("build", example_genomes[3], "--index", trained_store).exit_code == 0
    assert (trained_store / SEGMENTS_DIR / CURRENT).exists() and not (trained_store / "chunks.faiss").exists()
    assert store.check() == []


def test_current_naming_no_number_is_one_clear_error(trained_store: Path) -> None:
    (trained_store / SEGMENTS_DIR / CURRENT).write_text("../../elsewhere\n")
    with pytest.raises(GenomeIndexError, match="not a generation number"):
        Segments(trained_store).generation()


def test_segments_holding_removed_genomes_are_rewritten_by_the_first_reader(trained_store: Path, example_genomes):
    """`remove` killed between its commit and its rewrite: the segments still hold the removed
    genome's windows. `check` names it; a query rewrites the segments (under the lock) rather
    than answer with windows of a genome the store no longer has."""
    store = Store(trained_store)
    with store.writing() as writer:
        writer.remove_genomes([writer.find_genome("BPH2003")])
    problems = store.check()
    assert any(p.startswith(f"{SEGMENTS_DIR}/") and "genomes removed" in p for p in problems), problems
    hits = GenomeIndex.open(trained_store).query(example_genomes[1], QueryOptions(k=3, mode="chunks", align=False))
    assert "BPH2003" not in {h.name for h in hits}
    assert store.check() == []


def test_the_number_of_lists_is_fixed_by_the_first_build(trained_store: Path, example_genomes) -> None:
    assert GenomeIndex.open(trained_store).settings().ivf_lists == 4
    assert faiss.read_index(str(generation_folder(trained_store) / "trained.faiss")).nlist == 4
    result = run("build", example_genomes[3], "--index", trained_store, "--ivf-lists", "8")
    assert result.exit_code == 1 and "ivf_lists '4', not '8'" in result.stderr
    result = run("build", example_genomes[3], "--index", trained_store.parent / "other", "--ivf-lists", "0")
    assert result.exit_code == 1 and "--ivf-lists must be at least 1" in result.stderr
