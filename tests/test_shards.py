"""Search sharded on Ray: a trained store's segments searched by Ray actors give what one process
gives, stay with their actors as the store grows, and survive a lost actor.

A kmer:4 store of the four example genomes, one build each, with 4 inverted lists and the
training floor lowered (as in test_segments.py): three segments, spread over up to three actors
of a local Ray started by the test.
"""

from __future__ import annotations

import dataclasses
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from genome_index.api import GenomeIndex
from genome_index.cli import app
from genome_index.errors import GenomeIndexError
from genome_index.io.fasta import read_genome
from genome_index.search.searcher import Searcher
from genome_index.search.shards import ShardedIndex, balanced
from genome_index.server.app import create_app
from genome_index.settings import QueryOptions
from genome_index.store import Store, indexes
from genome_index.store.segments import Listed, Segments, best_k
from genome_index.store.vectors import normalise
from tests.helpers import copy_store

runner = CliRunner()
WINDOWS = ("--model", "kmer:4", "--chunk-tokens", "1000", "--index-type", "ivf-pq", "--ivf-lists", "4")
OPTIONS = QueryOptions(k=4, mode="chunks", align=False)


def run(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def listed(*counts: int) -> list[Listed]:
    return [Listed(Path(f"{n + 1:06d}.faiss"), 0, "0" * 64, count, 0, 0) for n, count in enumerate(counts)]


def names(groups: list[list[Listed]]) -> list[list[str]]:
    return [[item.path.name for item in group] for group in groups]


def test_segments_are_grouped_evenly_and_a_new_segment_changes_one_group() -> None:
    assert names(balanced(listed(500, 100, 100, 300), 2)) == [["000001.faiss"], ["000002.faiss", "000003.faiss",
                                                                                "000004.faiss"]]  # fmt: skip
    assert names(balanced(listed(5, 5), 4)) == [["000001.faiss"], ["000002.faiss"]]  # no actor without segments
    before = names(balanced(listed(40, 30, 20, 10), 3))
    after = names(balanced(listed(40, 30, 20, 10, 25), 3))
    assert sum(a != b for a, b in zip(before, after, strict=True)) == 1


def test_merged_results_are_the_best_k_by_score_then_id_with_unfilled_places_last() -> None:
    first = (np.array([[0.9, 0.5, -3.4e38]], dtype=np.float32), np.array([[7, 3, -1]]))
    second = (np.array([[0.7, 0.5, 0.1]], dtype=np.float32), np.array([[4, 2, 9]]))
    scores, ids = best_k([first, second], 4)
    assert ids.tolist() == [[7, 4, 2, 3]] and scores[0].tolist() == pytest.approx([0.9, 0.7, 0.5, 0.5])
    scores, ids = best_k([first, (second[0][:, :0], second[1][:, :0])], 3)
    assert ids.tolist() == [[7, 3, -1]]


def test_ray_is_refused_for_a_store_without_segments_before_ray_is_joined(nt_tiny_store: Path) -> None:
    with pytest.raises(GenomeIndexError, match=r"--ray searches the segments of an ivf-pq store.*flat"):
        Searcher.open(Store(nt_tiny_store), ray="127.0.0.1:1")  # no cluster there: refused before trying it
    result = runner.invoke(app, ["serve", "--index", str(nt_tiny_store), "--ray-shards", "2"])
    assert result.exit_code != 0 and "--ray-shards applies with --ray" in result.output


@pytest.fixture(scope="module")
def segmented(tmp_path_factory, example_genomes) -> Path:
    """The four examples, one build each: exact, then trained (segment 1), then segments 2 and 3."""
    index = tmp_path_factory.mktemp("shards") / "index"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(indexes, "PQ_MIN_TRAINING", 400)
        assert run("build", example_genomes[0], "--index", index, *WINDOWS).exit_code == 0
        for genome in example_genomes[1:]:
            assert run("build", genome, "--index", index).exit_code == 0
    assert len(Segments(index).listed(Segments(index).generation())) == 3
    return index


@pytest.fixture(autouse=True)
def small_floor(monkeypatch) -> None:
    monkeypatch.setattr(indexes, "PQ_MIN_TRAINING", 400)


def queries(example_genomes) -> list:
    """Each example genome whole, and a 4 kb stretch of each (chunks mode)."""
    genomes = [read_genome(path) for path in example_genomes]
    stretches = [[(f"{g.name}_part", g.records[0].sequence[50_000:54_000])] for g in genomes]
    return [*example_genomes, *stretches]


def comparable(hits) -> list[dict]:
    return [dataclasses.asdict(hit) for hit in hits]


def canonical(scores: np.ndarray, ids: np.ndarray) -> list[tuple[list[float], list[tuple[float, int]]]]:
    """Each row's scores, and its (score, id) pairs above the k-th score in order: of the ids
    tied with the k-th score, which made the cut is FAISS's heap's choice."""
    rows = []
    for row_scores, row_ids in zip(scores.tolist(), ids.tolist(), strict=True):
        above = sorted((s, i) for s, i in zip(row_scores, row_ids, strict=True) if s > row_scores[-1])
        rows.append((row_scores, above))
    return rows


@pytest.mark.slow
@pytest.mark.parametrize("shards", [1, 2, 3])
def test_a_search_on_ray_shards_equals_the_search_in_one_process(
    ray_address, segmented: Path, example_genomes, shards: int
) -> None:
    store = Store(segmented)
    with Searcher.open(store) as alone, Searcher.open(store, ray=ray_address, ray_shards=shards) as spread:
        for query in queries(example_genomes):
            assert comparable(spread.query(query, OPTIONS)) == comparable(alone.query(query, OPTIONS))
        sharded, local = spread._resident.indexes["chunks"], alone._resident.indexes["chunks"]
        assert isinstance(sharded, ShardedIndex) and len(sharded.actors) == shards and sharded.local is None
        assert sum(shard["vectors"] for shard in sharded.shard_info()) == local.ntotal == sharded.ntotal
        probe = normalise(np.random.default_rng(1).normal(size=(40, store.settings().dim)).astype(np.float32))
        assert canonical(*sharded.search(probe, 25)) == canonical(*local.search(probe, 25))


@pytest.mark.slow
def test_what_is_committed_but_not_yet_a_segment_is_searched_beside_the_shards(
    ray_address, segmented: Path, example_genomes, tmp_path: Path
) -> None:
    """A build killed after its commit, before its segment: the searcher holds those vectors in
    memory and searches them itself, beside the actors (and writes them as a segment for later)."""
    index = copy_store(segmented, tmp_path)
    folder = index / "chunks.ivf" / (index / "chunks.ivf" / "CURRENT").read_text().strip()
    manifest = folder / "MANIFEST"
    lines = manifest.read_text().splitlines(keepends=True)
    manifest.write_text("".join(lines[:-1]))
    (folder / lines[-1].split()[0]).unlink()
    with Searcher.open(Store(index), ray=ray_address, ray_shards=2) as spread:
        hits = spread.query(queries(example_genomes)[-1], OPTIONS)
        sharded = spread._resident.indexes["chunks"]
        assert isinstance(sharded, ShardedIndex) and sharded.local is not None and sharded.local.ntotal > 0
    assert hits[0].name == example_genomes[3].name.split(".")[0]
    with Searcher.open(Store(index)) as alone:
        assert comparable(hits) == comparable(alone.query(queries(example_genomes)[-1], OPTIONS))


@pytest.mark.slow
def test_a_growing_store_keeps_the_actors_of_unchanged_groups_and_finds_new_genomes(
    ray_address, segmented: Path, example_genomes, tmp_path: Path
) -> None:
    index = tmp_path / "index"
    assert run("build", *example_genomes[:2], "--index", index, *WINDOWS).exit_code == 0
    assert run("build", example_genomes[2], "--index", index).exit_code == 0
    with Searcher.open(Store(index), ray=ray_address, ray_shards=3) as spread:
        first = spread.query(example_genomes[0], OPTIONS)
        before = {shard["pid"] for shard in spread._resident.indexes["chunks"].shard_info()}
        assert run("build", example_genomes[3], "--index", index).exit_code == 0
        hits = spread.query(example_genomes[3], OPTIONS)
        after = {shard["pid"] for shard in spread._resident.indexes["chunks"].shard_info()}
    assert first[0].name == example_genomes[0].name.split(".")[0]
    assert hits[0].name == example_genomes[3].name.split(".")[0]
    assert len(before) == 2 and len(after) == 3 and before < after  # the two groups kept, one actor more


@pytest.mark.slow
def test_a_lost_shard_is_restarted_by_ray_and_the_query_retried(ray_address, segmented: Path, example_genomes):
    store = Store(segmented)
    with Searcher.open(store) as alone, Searcher.open(store, ray=ray_address, ray_shards=2) as spread:
        expected = comparable(alone.query(example_genomes[1], OPTIONS))
        assert comparable(spread.query(example_genomes[1], OPTIONS)) == expected
        sharded = spread._resident.indexes["chunks"]
        victim = sharded.shard_info()[0]["pid"]
        os.kill(victim, signal.SIGKILL)
        assert comparable(spread.query(example_genomes[1], OPTIONS)) == expected
        assert victim not in {shard["pid"] for shard in sharded.shard_info()}


@pytest.mark.slow
def test_serve_answers_from_ray_shards_as_from_one_process(ray_address, segmented: Path, example_genomes) -> None:
    index = GenomeIndex.open(segmented)
    genome = read_genome(example_genomes[0])
    request = {"sequence": genome.records[0].sequence[10_000:16_000].decode(), "k": 3, "mode": "chunks", "align": False}
    with index.searcher(micro_batch=True) as alone, index.searcher(micro_batch=True, ray=ray_address) as spread:
        answers = [TestClient(create_app(index, s)).post("/query", json=request) for s in (alone, spread)]
        assert isinstance(spread._resident.indexes["chunks"], ShardedIndex)
    assert [a.status_code for a in answers] == [200, 200]
    assert answers[0].json() == answers[1].json() and answers[0].json()[0]["name"] == genome.name
