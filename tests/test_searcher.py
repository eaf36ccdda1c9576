"""The resident Searcher: one load for many queries, any form of query, typed hits, live stores."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from genome_index.api import GenomeIndex
from genome_index.embedding.backends import checkpoints as models
from genome_index.errors import GenomeIndexError
from genome_index.io.fasta import read_genome
from genome_index.progress import SILENT
from genome_index.search import searcher as searcher_module
from genome_index.search.hits import HIT_COLUMNS, Hit
from genome_index.search.searcher import MicroBatcher, Searcher
from genome_index.settings import QueryOptions
from tests.helpers import EXAMPLES, copy_store


@pytest.fixture
def store(nt_tiny_store: Path, tmp_path: Path) -> GenomeIndex:
    return GenomeIndex.open(copy_store(nt_tiny_store, tmp_path))


def query_forms(path: Path) -> dict[str, object]:
    genome = read_genome(path)
    text = path.read_text()
    return {
        "a Path": path,
        "a path as str": str(path),
        "FASTA text": text,
        "a bare sequence": genome.records[0].sequence.decode(),
        "lower-case sequence": genome.records[0].sequence.decode().lower(),
        "(name, sequence) records": [(r.id, r.sequence.decode()) for r in genome.records],
        "a Genome": genome,
    }


@pytest.mark.parametrize("form", list(query_forms(EXAMPLES / "query.fa")))
@pytest.mark.slow
def test_every_form_of_query_gives_the_same_hits(store: GenomeIndex, form: str) -> None:
    query = query_forms(EXAMPLES / "query.fa")[form]
    with store.searcher() as searcher:
        hits = searcher.query(query, k=2)
    assert [type(h) for h in hits] == [Hit, Hit]
    assert hits[0].name == "DSM20231" and hits[0].identity == 1.0 and hits[0].target_start == 50_001


@pytest.mark.slow
def test_repeated_queries_load_and_hash_nothing_again(store: GenomeIndex, monkeypatch) -> None:
    with store.searcher() as searcher:
        first = searcher.query(EXAMPLES / "query.fa", k=1)

        def refuse(*args: object) -> None:
            raise AssertionError("loaded again")

        monkeypatch.setattr(models, "_weights_hash", refuse)
        monkeypatch.setattr(models, "load_model", refuse, raising=False)
        monkeypatch.setattr(searcher.store, "load_faiss", refuse)
        for _ in range(3):
            assert searcher.query(EXAMPLES / "query.fa", k=1) == first


@pytest.mark.slow
def test_hits_keep_labels_apart_and_rows_flatten_them(store: GenomeIndex, tmp_path: Path) -> None:
    hit = store.query(EXAMPLES / "query.fa", QueryOptions(k=1))[0]
    labelled = Hit(**{**hit.__dict__, "labels": {"species": "S. aureus", "score": 7}})
    row = labelled.row()
    assert list(row)[: len(HIT_COLUMNS)] == list(HIT_COLUMNS) and row["score"] == hit.score
    assert row["species"] == "S. aureus" and row["label.score"] == 7
    assert "alignments" not in row and labelled.row(alignments=True)["alignments"] == hit.alignments


@pytest.mark.parametrize("column", ["score", "rank", "identity", "labels", "abundance", "depth"])
def test_a_labels_csv_naming_a_row_field_is_refused(tmp_path: Path, example_genomes, column: str) -> None:
    """Fields of query hits and of gather rows alike: a label would stand beside them in a row."""
    labels = tmp_path / "labels.csv"
    labels.write_text(f"file,{column}\n{example_genomes[0].name},1\n")
    with pytest.raises(GenomeIndexError, match=f"label column '{column}' is the name of a field of query or gather"):
        GenomeIndex(tmp_path / "index").build(example_genomes[:1], "kmer:4", labels=labels)


@pytest.mark.slow
def test_a_searcher_sees_genomes_added_and_labels_set_while_it_lives(tmp_path: Path, example_genomes) -> None:
    index = GenomeIndex(tmp_path / "index")
    index.build(example_genomes[:2], "kmer:4")
    with index.searcher() as searcher:
        assert {h.name for h in searcher.query(example_genomes[3], k=10, mode="genome")} == {"ATCC12600", "BPH2003"}
        labels = tmp_path / "labels.csv"
        labels.write_text("name,species\nDSM20231,S. aureus\n")
        index.build(example_genomes, "kmer:4", labels=labels)
        hits = searcher.query(example_genomes[3], k=10, mode="genome")
        assert hits[0].name == "DSM20231" and hits[0].labels == {"species": "S. aureus"} and len(hits) == 4
        index.remove(["ATCC12600"])
        assert "ATCC12600" not in {h.name for h in searcher.query(example_genomes[3], k=10, mode="genome")}


@pytest.mark.slow
def test_concurrent_queries_share_micro_batches_and_get_their_own_hits(store: GenomeIndex, example_genomes):
    with store.searcher(micro_batch=True) as searcher:
        searcher.batcher.wait = 0.2  # a wide window, so the threads below surely meet in it
        results: dict[int, list[Hit]] = {}
        pieces = [[("q", read_genome(path).records[0].sequence[:6_000])] for path in example_genomes]

        def ask(i: int) -> None:
            results[i] = searcher.query(pieces[i % 4], k=1, mode="genome", align=False)

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert searcher.batcher.batches < 8
    for i, hits in results.items():
        assert hits[0].name == read_genome(example_genomes[i % 4]).name


def test_a_batch_waits_for_the_queries_begun_and_a_query_alone_for_no_one() -> None:
    """A query begun (`coming`) but not yet handed over is waited for, so concurrent queries
    share one embed call; a query alone is embedded at once, however long `wait` is."""
    calls = []

    def embed(chunks, step):
        calls.append(len(chunks))
        return np.zeros((len(chunks), 2), dtype=np.float32)

    batcher = MicroBatcher(embed, wait=30.0)
    window = SimpleNamespace(start=0, end=100)
    started = time.monotonic()
    with batcher.coming():
        assert batcher([window] * 3, SILENT.step("test")).shape == (3, 2)
    assert calls == [3] and time.monotonic() - started < 10  # not the 30 s wait
    got = []

    def first_query() -> None:
        with batcher.coming():
            got.append(batcher([window] * 3, SILENT.step("test")))

    with batcher.coming():  # a second query has begun: the first one's batch waits for it
        thread = threading.Thread(target=first_query)
        thread.start()
        time.sleep(0.3)
        assert calls == [3] and not got
        assert batcher([window] * 2, SILENT.step("test")).shape == (2, 2)
    thread.join()
    assert calls == [3, 5] and got[0].shape == (3, 2) and time.monotonic() - started < 10
    batcher.close()


def test_a_failed_batch_fails_its_queries_and_the_next_one_is_served() -> None:
    calls = []

    def embed(chunks, step):
        calls.append(len(chunks))
        if len(calls) == 1:
            raise RuntimeError("CUDA out of memory")
        import numpy as np

        return np.zeros((len(chunks), 2), dtype=np.float32)

    batcher = MicroBatcher(embed, wait=0.0)
    window = SimpleNamespace(start=0, end=100)
    with pytest.raises(RuntimeError, match="out of memory"):
        batcher([window] * 3, SILENT.step("test"))
    assert batcher([window] * 2, SILENT.step("test")).shape == (2, 2)
    batcher.close()
    assert not batcher.thread.is_alive()


def test_what_a_searcher_keeps_equals_what_the_store_reads(store: GenomeIndex) -> None:
    """The resident reads (chunk vectors from the FAISS index, chunk -> genome, means, sketches,
    sequences) against the slow, obvious ones: the store's own rows."""
    from genome_index.search.resident import ResidentReader
    from genome_index.store.vectors import normalise

    with store.searcher() as searcher, store.store.reading() as reader:
        dim = searcher.settings.dim
        resident, lock = searcher._current({"chunks", "genomes"}), threading.Lock()
        memory = ResidentReader(store.store, resident, lock)
        ids = reader.ids("chunks")[::7]
        np.testing.assert_allclose(memory.chunk_vectors(ids, dim), normalise(reader.chunk_vectors(ids, dim)), atol=1e-6)
        assert memory.genomes_of_chunks(ids.tolist()) == reader.genomes_of_chunks(ids.tolist())
        for kept, read in zip(memory.vector_means(dim), reader.vector_means(dim), strict=True):
            np.testing.assert_array_equal(kept, read)
        genomes = sorted(resident.details)
        stored = {gid: sorted(hashes) for gid, hashes in reader.sketch_hashes(genomes).items()}
        made = lambda memory: {g: hashes.tolist() for g, hashes in memory.sketches(genomes).items()}  # noqa: E731
        assert made(memory) == stored
        assert [memory.has_sequence(g) for g in genomes] == [reader.has_sequence(g) for g in genomes]
        assert memory.genome_count() == reader.genome_count()
        assert not memory.opened  # every sketch came with the chunk index
        genome_mode = dataclasses.replace(resident, stored_sketches={}, sketches=OrderedDict())
        with ResidentReader(store.store, genome_mode, lock) as first:
            assert made(first) == stored and first.opened  # read once ...
        with ResidentReader(store.store, genome_mode, lock) as again:
            assert made(again) == stored and not again.opened  # ... and kept since


@pytest.mark.parametrize("mode", ["chunks", "genome"])
def test_a_warm_query_of_an_unchanged_store_does_not_open_it(store: GenomeIndex, monkeypatch, mode: str) -> None:
    """Once the store's indexes, details and the candidates' minimap2 indexes are in memory, a
    query of an unchanged store is answered without a DuckDB connection; a change is seen."""
    with store.searcher() as searcher:
        first = searcher.query(EXAMPLES / "query.fa", k=2, mode=mode)
        opened = []
        reading = type(store.store).reading
        counted = lambda self, *a, **k: opened.append(1) or reading(self, *a, **k)  # noqa: E731
        monkeypatch.setattr(type(store.store), "reading", counted)
        assert searcher.query(EXAMPLES / "query.fa", k=2, mode=mode) == first
        assert opened == []
        store.store.db_path.touch()  # as a commit would change it: the signature is read, nothing reloads
        assert searcher.query(EXAMPLES / "query.fa", k=2, mode=mode) == first
        assert opened == [1]


def test_records_searched_together_equal_each_searched_alone(
    store: GenomeIndex, example_genomes, tmp_path, monkeypatch
) -> None:
    """--per-record searches every record's windows in one pass over the index and answers the
    records two at a time (one's Python runs while minimap2 aligns another's); each record's
    hits equal those of the record queried on its own, in the records' order."""
    answered_in, answer = [], Searcher._answer

    def spy(self, *args):
        answered_in.append(threading.current_thread().name)
        return answer(self, *args)

    monkeypatch.setattr(Searcher, "_answer", spy)
    records = []
    for number, path in enumerate(example_genomes[:3]):
        sequence = read_genome(path).records[0].sequence[10_000 + 7_000 * number : 22_000 + 7_000 * number]
        records.append((f"r{number}", sequence.decode()))
    together_file = tmp_path / "together.fa"
    together_file.write_text("".join(f">{name}\n{sequence}\n" for name, sequence in records))
    with store.searcher() as searcher:
        together = searcher.query(together_file, k=3, mode="chunks", per_record=True)
        alone = [hit for record in records for hit in searcher.query([record], k=3, mode="chunks")]
    assert [{**hit.row(), "query": None} for hit in together] == [{**hit.row(), "query": None} for hit in alone]
    assert [hit.query for hit in together] == ["r0"] * 3 + ["r1"] * 3 + ["r2"] * 3
    assert all(name.startswith("genome-index-answer") for name in answered_in[:3])  # together: in threads
    assert not any(name.startswith("genome-index-answer") for name in answered_in[3:])  # alone: in place


class ShardsHere:
    """Stands in for a `ShardPool`: the chunk index is searched in this process."""

    def place(self, index: object) -> object:
        return index

    def close(self) -> None:
        pass


@pytest.mark.parametrize("shards", [None, ShardsHere()], ids=["here", "on Ray shards"])
def test_queries_past_their_embedding_search_and_align_a_core_at_a_time(
    example_genomes, tmp_path: Path, monkeypatch, shards: ShardsHere | None
) -> None:
    """Eight threads query a kmer:6 store at once (their embedding takes milliseconds); at most
    SEARCHING of them (one per core) search and align at a time, as more threads than cores only
    take turns at the GIL, except on Ray shards, where a query mostly waits for the actors; each
    gets the hits of the query asked alone."""
    store = GenomeIndex(tmp_path / "index")
    store.build(example_genomes, "kmer:6")
    monkeypatch.setattr(searcher_module, "SEARCHING", 2)
    inside, most, lock = 0, 0, threading.Lock()
    search = Searcher._search

    def counting(self, *args):
        nonlocal inside, most
        with lock:
            inside += 1
            most = max(most, inside)
        try:
            time.sleep(0.2)  # long enough for the other threads to be waiting meanwhile, even on a loaded machine
            return search(self, *args)
        finally:
            with lock:
                inside -= 1

    monkeypatch.setattr(Searcher, "_search", counting)
    with (
        store.searcher() as opened,
        Searcher(opened.store, opened.embedder, opened.settings, shards=shards) as searcher,
    ):
        alone = [hit.row() for hit in searcher.query(EXAMPLES / "query.fa", k=2)]
        with ThreadPoolExecutor(8) as pool:
            together = list(pool.map(lambda _: searcher.query(EXAMPLES / "query.fa", k=2), range(8)))
    assert most == 2 if shards is None else most > 2
    assert all([hit.row() for hit in hits] == alone for hits in together)


IDLE_CPU = """
import genome_index, os, time
import numpy as np
matrix = np.random.default_rng(0).random((300, 300), dtype=np.float32)
for _ in range(20):
    matrix @ matrix
started = time.process_time()
time.sleep(0.3)
print(os.environ.get("OPENBLAS_THREAD_TIMEOUT"), time.process_time() - started)
"""


@pytest.mark.parametrize(("given", "expected"), [(None, "4"), ("6", "6")], ids=["default", "the user's"])
def test_openblas_threads_sleep_soon_after_a_product(given, expected, monkeypatch) -> None:
    """Importing the package before numpy shortens OpenBLAS's spinning (2^28 cycles, about 0.1 s
    of a core after every call, which slowed the aligners that follow a query's products) unless
    the user chose a value: the process idles at no CPU right after its products."""
    import subprocess
    import sys

    monkeypatch.delenv("OPENBLAS_THREAD_TIMEOUT", raising=False)
    if given is not None:
        monkeypatch.setenv("OPENBLAS_THREAD_TIMEOUT", given)
    value, idle = subprocess.run(
        [sys.executable, "-c", IDLE_CPU], capture_output=True, text=True, check=True
    ).stdout.split()
    assert value == expected and float(idle) < 0.04
