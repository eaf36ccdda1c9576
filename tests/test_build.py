"""The build pipeline keeps the model busy: small first groups, halving last groups, and a
writer that takes a whole group of genomes without making the model wait."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest

from genome_index.api import GenomeIndex
from genome_index.build import writer as writer_module
from genome_index.build.run import BuildReport
from genome_index.build.writer import Add, Writer
from genome_index.embedding.embedder import Embedder
from genome_index.embedding.pipeline import FIRST_GROUP_BATCHES, GROUP_BATCHES, EmbeddedGenome
from genome_index.io.fasta import read_genome
from genome_index.settings import RunOptions
from genome_index.store import FAISS_FILES, Store


@pytest.fixture(scope="module")
def kmer_engine() -> Embedder:
    return Embedder("kmer:6")


def group_sizes(engine: Embedder, paths: list[Path], monkeypatch) -> list[int]:
    """Tokens in each group `embed_genomes` hands to the model, in order."""
    sizes: list[int] = []
    embed_chunks = engine.embed_chunks

    def spy(chunks, step=None):
        sizes.append(sum(c.n_tokens for c in chunks))
        return embed_chunks(chunks, step)

    monkeypatch.setattr(engine, "embed_chunks", spy)
    items = list(engine.embed_genomes(paths))
    assert [i.genome.path for i in items] == paths
    return sizes


def test_groups_start_small_double_and_end_halving(labelled_genomes, kmer_engine, monkeypatch) -> None:
    paths = labelled_genomes[0] * 4  # 48 genomes of 30-60 k tokens each
    tokens = [sum(c.n_tokens for c in kmer_engine.chunk(read_genome(p))) for p in paths]
    monkeypatch.setattr(kmer_engine.engine, "batch_tokens", max(tokens) // 2)
    sizes = group_sizes(kmer_engine, paths, monkeypatch)
    budget = kmer_engine.batch_tokens
    assert sum(sizes) == sum(tokens)
    assert FIRST_GROUP_BATCHES * budget <= sizes[0] < FIRST_GROUP_BATCHES * budget + max(tokens)
    assert sizes[1] >= 2 * FIRST_GROUP_BATCHES * budget  # the target doubles
    assert max(sizes) < GROUP_BATCHES * budget + max(tokens)
    assert sizes[-1] < FIRST_GROUP_BATCHES * budget + max(tokens)  # the model's last group is small
    assert sizes[-2] >= sizes[-1]


def test_one_small_genome_is_one_group(example_genomes, kmer_engine, monkeypatch) -> None:
    assert len(group_sizes(kmer_engine, example_genomes[:1], monkeypatch)) == 1


@pytest.fixture
def open_store(tmp_path, example_genomes):
    """A kmer:6 store holding the first example genome, open for writing."""
    GenomeIndex(tmp_path / "index").build(example_genomes[:1], model="kmer:6")
    store = Store(tmp_path / "index")
    with store.session() as session:
        settings = session.settings()
        indexes = {kind: store.load_faiss(session, kind, settings)[0] for kind in FAISS_FILES}
    return store, indexes, settings


def embedded(engine: Embedder, path: Path) -> EmbeddedGenome:
    genome = read_genome(path)
    chunks = engine.chunk(genome)
    return EmbeddedGenome(genome, chunks, engine.embed_chunks(chunks))


def validated(items: list[EmbeddedGenome]) -> dict[Path, str]:
    """What the input check hands the writer: each file's sequence hash."""
    return {item.genome.path: item.genome.sha256 for item in items}


@pytest.mark.slow
def test_writer_queues_a_whole_group_while_the_model_runs_on(open_store, labelled_genomes, kmer_engine) -> None:
    """Queueing is bounded by the bytes of waiting vectors, not by a handful of genomes: a
    group of genomes is handed over at once even while the writer is still busy."""
    checked: Future = Future()  # the writer waits on this, as on the input check in a build
    report = BuildReport()
    writer = Writer(*open_store, checked, report).start()
    items = [embedded(kmer_engine, p) for p in labelled_genomes[0][1:]]
    handing_over = threading.Thread(
        target=lambda: [writer.put(Add(item, item.genome.name, {})) for item in items], daemon=True
    )
    handing_over.start()
    handing_over.join(5)
    assert not handing_over.is_alive()  # eleven genomes queued while the writer has written none
    checked.set_result(validated(items))
    writer.finish()
    assert len(report.added) == len(items)


@pytest.mark.slow
def test_writer_waits_when_the_byte_bound_is_reached_and_resumes(
    open_store, example_genomes, kmer_engine, monkeypatch
) -> None:
    monkeypatch.setattr(writer_module, "WRITER_QUEUE_BYTES", 1)
    checked: Future = Future()
    report = BuildReport()
    writer = Writer(*open_store, checked, report).start()
    first, second = (embedded(kmer_engine, p) for p in example_genomes[1:3])
    writer.put(Add(first, first.genome.name, {}))  # an empty queue always takes one task
    blocked = threading.Thread(target=writer.put, args=(Add(second, second.genome.name, {}),))
    blocked.start()
    blocked.join(0.3)
    assert blocked.is_alive()
    checked.set_result(validated([first, second]))
    blocked.join(10)
    assert not blocked.is_alive()
    writer.finish()
    assert [name for name, _, _ in report.added] == [first.genome.name, second.genome.name]


@pytest.mark.slow
def test_genomes_arriving_one_by_one_are_committed_a_group_at_a_time(open_store, labelled_genomes, kmer_engine):
    """Genomes handed over one at a time, more slowly than the writer commits (as from GPUs):
    the writer waits up to GROUP_LINGER after each for more, so they share commits and vector
    files (a file a genome would be a million files for a million genomes)."""
    store = open_store[0]
    before = set((store.directory / "vectors").glob("*.parquet"))
    checked: Future = Future()
    report = BuildReport()
    items = [embedded(kmer_engine, p) for p in labelled_genomes[0][1:]]
    checked.set_result(validated(items))
    writer = Writer(*open_store, checked, report).start()
    for item in items:
        writer.put(Add(item, item.genome.name, {}))
        time.sleep(0.05)
    writer.finish()
    assert len(report.added) == len(items) > 8
    written = set((store.directory / "vectors").glob("*.parquet")) - before
    assert 1 <= len(written) <= 3, f"{len(written)} vector files for {len(items)} genomes"
    assert store.check() == []


def test_a_dead_writer_raises_in_put_instead_of_hanging(open_store, example_genomes, kmer_engine, monkeypatch) -> None:
    monkeypatch.setattr(writer_module, "WRITER_QUEUE_BYTES", 1)
    checked: Future = Future()
    writer = Writer(*open_store, checked, BuildReport()).start()
    item = embedded(kmer_engine, example_genomes[1])
    writer.put(Add(item, item.genome.name, {}))
    checked.set_exception(ValueError("input 3 is not FASTA"))
    with pytest.raises(ValueError, match="not FASTA"):
        writer.put(Add(item, item.genome.name, {}))
    writer.abandon()


@pytest.mark.parametrize("new", [True, False], ids=["with a new genome", "with nothing new"])
@pytest.mark.slow
def test_a_build_repairs_a_missing_faiss_file(open_store, example_genomes, kmer_engine, new: bool, caplog) -> None:
    """A FAISS file lost since the last build is rebuilt from DuckDB and written, whether or not
    the build adds anything."""
    store, _, _ = open_store
    (store.directory / "chunks.faiss").unlink()
    with caplog.at_level("WARNING", logger="genome_index"):
        report = GenomeIndex(store.directory).build(example_genomes[: 2 if new else 1], embedder=kmer_engine)
    assert len(report.added) == int(new)
    assert "rebuilt from the stored vectors" in caplog.text
    assert GenomeIndex(store.directory).check() == []


@pytest.mark.slow
def test_rounded_batch_widths_change_no_vector(example_genomes) -> None:
    engine = Embedder("nt-tiny", RunOptions(device="cpu", batch_tokens=4000))
    chunks = engine.chunk(read_genome(example_genomes[0]))[:12]
    plain = engine.embed_chunks(chunks)
    engine.engine.width_multiple = 64
    assert {ids.shape[1] % 64 for _, ids, _ in engine.engine.batches(chunks)} == {0}
    np.testing.assert_allclose(engine.embed_chunks(chunks), plain, atol=1e-5)
