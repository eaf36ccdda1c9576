"""Index types, float16 vectors, shards that merge: the same answers at every size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from genome_index.api import GenomeIndex
from genome_index.build.run import shard_files
from genome_index.cli import app
from genome_index.embedding.embedder import Embedder
from genome_index.errors import GenomeIndexError
from genome_index.settings import INDEX_TYPES, ModelOptions, QueryOptions, RunOptions, StoreOptions
from genome_index.store.indexes import PQ_MIN_TRAINING, build_faiss, faiss_gpus, make_faiss, search, to_gpu
from genome_index.store.vectors import normalise

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def clustered(n: int, dim: int, seed: int = 0, latent: int = 16) -> np.ndarray:
    """Clusters in a low-dimensional latent space projected to `dim`, as real embeddings are."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(n // 100, 1), latent))
    points = centres[rng.integers(len(centres), size=n)] + 0.5 * rng.normal(size=(n, latent))
    vectors = points @ rng.normal(size=(latent, dim)) + 0.05 * rng.normal(size=(n, dim))
    return vectors.astype(np.float32)


@pytest.mark.parametrize("index_type", INDEX_TYPES)
@pytest.mark.slow
def test_every_index_type_finds_the_true_neighbours(index_type: str) -> None:
    vectors = clustered(PQ_MIN_TRAINING + 2000, 64)
    ids = np.arange(5, 5 + len(vectors), dtype=np.int64)
    index = build_faiss(ids, vectors, 64, index_type)
    exact = build_faiss(ids, vectors, 64, "flat")
    queries = normalise(vectors[:50] + 0.05)
    found = search(index, queries, 10, lambda wanted: vectors[wanted - 5])[1]
    truth = exact.search(queries, 10)[1]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth, strict=True)])
    assert recall >= (0.99 if index_type != "ivf-pq" else 0.9)
    assert set(found.ravel()) <= set(ids)


@pytest.mark.parametrize(("block", "queries_at_once"), [(None, None), (333, 3)])
def test_exact_search_equals_faisss_own_on_a_flat_index(block: int | None, queries_at_once: int | None, monkeypatch):
    """The matrix-product search of a flat index against FAISS's own search: the same scores and
    ids (twins' identical vectors listed in id order), whatever the blocks of stored vectors and
    of queries it is computed in."""
    from genome_index.store import indexes

    if block is not None:
        monkeypatch.setattr(indexes, "FLAT_BLOCK", block)
        monkeypatch.setattr(indexes, "SCORES_BYTES", 4 * block * queries_at_once)
    rng = np.random.default_rng(4)
    vectors = rng.random((3000, 48), dtype=np.float32)
    vectors[2000] = vectors[100]  # twins: one score, two ids
    index = build_faiss(np.arange(5, 3005, dtype=np.int64), vectors, 48)
    queries = normalise(np.concatenate([vectors[100:101], rng.random((9, 48), dtype=np.float32)]))
    scores, ids = search(index, queries, 40)
    reference_scores, reference_ids = index.search(queries, 40)
    np.testing.assert_allclose(scores, reference_scores, atol=1e-6)
    assert [set(row) for row in ids] == [set(row) for row in reference_ids]
    assert ids[0][:2].tolist() == [105, 2005] and scores[0][0] == scores[0][1]


@pytest.mark.parametrize("gemm_rows", [1024, 7])
@pytest.mark.parametrize(
    "runs",
    [[(0, 3000)], [(10, 400), (1900, 2100)], [(2999, 3000)], [(5, 6), (7, 9)]],
    ids=["all", "two", "last", "few"],
)
def test_an_exact_search_over_row_ranges_equals_the_obvious_one(monkeypatch, runs, gemm_rows: int) -> None:
    """A flat index searched over some row ranges (a query's named genomes) against the plain
    top-k of the same rows' scores; fewer rows than k leave FAISS's id -1 and score -inf."""
    from genome_index.store import indexes

    monkeypatch.setattr(indexes, "GEMM_ROWS", gemm_rows)
    rng = np.random.default_rng(6)
    vectors = normalise(rng.random((3000, 24), dtype=np.float32))
    index = build_faiss(np.arange(100, 3100, dtype=np.int64), vectors, 24)
    queries = normalise(rng.random((5, 24), dtype=np.float32))
    scores, ids = search(index, queries, 20, runs=runs)
    rows = np.concatenate([np.arange(lo, hi) for lo, hi in runs])
    everything = queries @ vectors[rows].T
    for q in range(len(queries)):
        order = np.argsort(-everything[q], kind="stable")[:20]
        kept = len(order)
        np.testing.assert_allclose(scores[q, :kept], everything[q, order], atol=1e-6)
        assert ids[q, :kept].tolist() == (rows[order] + 100).tolist()
        assert (ids[q, kept:] == -1).all() and np.isneginf(scores[q, kept:]).all()


@pytest.mark.parametrize("runs", [None, [(10, 400), (1900, 2100)], [(5, 6), (7, 9)]], ids=["all", "two", "few"])
def test_a_centred_flat_search_equals_the_obvious_one(monkeypatch, runs) -> None:
    """Centred neighbours from the matrix product itself (`Centring`) against the obvious way:
    every row and query less the mean, normalised, compared; the plain cosines beside them,
    whatever block of queries they come in, and twins listed in id order."""
    from genome_index.store import indexes

    monkeypatch.setattr(indexes, "GEMM_ROWS", 97)
    monkeypatch.setattr(indexes, "CENTRED_ROWS", 256)
    rng = np.random.default_rng(8)
    vectors = normalise(rng.random((3000, 24), dtype=np.float32) + 2)  # near one another: centring matters
    vectors[2500] = vectors[300]
    vectors[2999] = 0  # a zero row stays zero, as `normalise` leaves it
    index = build_faiss(np.arange(100, 3100, dtype=np.int64), vectors, 24)
    inner = indexes.faiss.downcast_index(index.index)
    ids, mean = indexes.faiss.vector_to_array(index.id_map), vectors.mean(axis=0)
    queries = normalise(np.concatenate([vectors[300:301], rng.random((6, 24), dtype=np.float32) + 2]))
    centring = indexes.Centring.of(inner, mean)
    scores, found, plain = indexes.flat_search(inner, ids, queries, 20, runs, centring)
    if runs is not None:  # only the blocks of rows searched are worked out (a cold query's share)
        blocks = {row // 256 for lo, hi in runs for row in range(lo, hi)}
        assert set(np.flatnonzero(centring.ready) // 256) == blocks
    rows = np.arange(3000) if runs is None else np.concatenate([np.arange(lo, hi) for lo, hi in runs])
    centred = normalise(queries - mean) @ normalise(vectors[rows] - mean).T
    for q in range(len(queries)):
        order = np.lexsort((rows, -np.round(centred[q], 5)))[:20]
        kept = len(order)
        np.testing.assert_allclose(scores[q, :kept], centred[q, order], atol=1e-5)
        np.testing.assert_allclose(plain[q, :kept], queries[q] @ vectors[rows[order]].T, atol=1e-5)
        assert found[q, :kept].tolist() == (rows[order] + 100).tolist()
        assert (found[q, kept:] == -1).all() and np.isneginf(scores[q, kept:]).all()
    if runs is None:  # the twins: one score, two ids, in id order; and the same scores searched alone
        assert found[0][:2].tolist() == [400, 2600] and scores[0][0] == scores[0][1]
        alone = indexes.flat_search(inner, ids, queries[3:4], 20, runs, centring)
        assert [part[0].tolist() for part in alone] == [scores[3].tolist(), found[3].tolist(), plain[3].tolist()]


def test_exact_search_of_a_long_query_holds_a_bounded_block_of_scores(monkeypatch) -> None:
    """8,000 query windows against 8,000 stored vectors: all their scores at once would be 256 MB
    (a 50 Mbp chunks-mode query against a 100 Mbp store held 20 GB so); scored a block of
    queries at a time, the search's peak allocation stays near the block."""
    import tracemalloc

    from genome_index.store import indexes

    monkeypatch.setattr(indexes, "SCORES_BYTES", 1 << 20)
    rng = np.random.default_rng(5)
    index = build_faiss(np.arange(8000, dtype=np.int64), rng.random((8000, 32), dtype=np.float32), 32)
    queries = normalise(rng.random((8000, 32), dtype=np.float32))
    tracemalloc.start()
    try:
        scores, ids = search(index, queries, 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert scores.shape == ids.shape == (8000, 20)
    assert peak < 24 << 20, f"peak {peak / 2**20:.0f} MiB"


def test_ivf_pq_falls_back_to_exact_for_few_vectors() -> None:
    vectors = clustered(500, 32)
    index = build_faiss(np.arange(500), vectors, 32, "ivf-pq")
    assert isinstance(index.index, type(make_faiss("flat", 32, 0).index))


def test_unknown_index_type(tmp_path: Path, example_genomes) -> None:
    with pytest.raises(GenomeIndexError, match="unknown index type"):
        GenomeIndex(tmp_path / "i").build(example_genomes[:1], model="nt-tiny", store=StoreOptions(index_type="lsh"))


@pytest.mark.slow
def test_hnsw_store_and_reindex_to_another_type(tmp_path: Path, example_genomes) -> None:
    index = tmp_path / "index"
    assert run("build", *example_genomes, "--index", index, "--model", "kmer:6", "--index-type", "hnsw").exit_code == 0
    store = GenomeIndex.open(index)
    assert store.settings().index_type == "hnsw"
    assert store.query(example_genomes[2], QueryOptions(k=1, mode="chunks", align=False))[0].name == "BPH2947"
    result = run("reindex", "--index", index, "--index-type", "flat")
    assert result.exit_code == 0, result.output
    assert store.settings().index_type == "flat"
    assert store.check() == []
    result = run("build", example_genomes[0], "--index", index, "--index-type", "hnsw")
    assert result.exit_code == 1 and "built with index_type" in result.stderr


@pytest.mark.slow
def test_float16_vectors_half_the_bytes_same_answers(tmp_path: Path, example_genomes) -> None:
    half, full = GenomeIndex(tmp_path / "half"), GenomeIndex(tmp_path / "full")
    half.build(example_genomes, model="kmer:4", store=StoreOptions(vector_dtype="float16"))
    full.build(example_genomes, model="kmer:4")
    kind, size = half.sql("SELECT typeof(vector), octet_length(vector) FROM chunk_vectors LIMIT 1")[1][0]
    assert (kind, size) == ("BLOB", 136 * 2)
    with half.store.reading() as reader:
        _, vectors16 = reader.vectors("chunks", 136)
    with full.store.reading() as reader:
        _, vectors32 = reader.vectors("chunks", 136)
    assert np.allclose(vectors16, vectors32, rtol=1e-3, atol=1e-5)
    assert half.check() == []
    for path in example_genomes:
        assert (
            half.query(path, QueryOptions(k=1, align=False))[0].name
            == full.query(path, QueryOptions(k=1, align=False))[0].name
        )
    half.reindex()
    assert half.check() == []


def test_shards_partition_the_inputs(example_genomes) -> None:
    shards = [shard_files(example_genomes, i, 3) for i in (1, 2, 3)]
    assert sorted(p for shard in shards for p in shard) == sorted(example_genomes)
    assert shard_files(list(reversed(example_genomes)), 1, 3) == shards[0]
    with pytest.raises(GenomeIndexError, match="1 <= I <= N"):
        shard_files(example_genomes, 4, 3)


@pytest.mark.slow
def test_shards_merge_into_the_store_a_single_build_makes(tmp_path: Path, example_genomes) -> None:
    folder = example_genomes[0].parent
    for i in (1, 2):
        result = run("build", folder, "--index", tmp_path / f"shard{i}", "--model", "kmer:6", "--shard", f"{i}/2")
        assert result.exit_code == 0, result.output
    result = run("merge", tmp_path / "merged", tmp_path / "shard1", tmp_path / "shard2")
    assert result.exit_code == 0, result.output
    assert "merged 4 genome(s)" in result.stderr
    GenomeIndex(tmp_path / "single").build([folder], model="kmer:6")

    def content(name: str):
        rows = GenomeIndex(tmp_path / name).sql(
            'SELECT g.sha256, r.name, c.start, c."end", c.n_tokens, v.vector FROM chunks c '
            "JOIN genomes g ON g.id = c.genome_id JOIN records r ON r.id = c.record_id "
            "JOIN chunk_vectors v ON v.chunk_id = c.id ORDER BY 1, 2, 3"
        )[1]
        return rows

    merged, single = content("merged"), content("single")
    assert [r[:5] for r in merged] == [r[:5] for r in single]
    assert np.allclose(np.array([r[5] for r in merged]), np.array([r[5] for r in single]), atol=1e-5)
    assert GenomeIndex.open(tmp_path / "merged").check() == []
    again = run("merge", tmp_path / "merged", tmp_path / "shard1")
    assert "merged 0 genome(s)" in again.stderr and "already there" in again.stderr


def test_merge_refuses_different_settings(tmp_path: Path, example_genomes) -> None:
    GenomeIndex(tmp_path / "a").build(example_genomes[:1], model=ModelOptions("kmer:6", chunking="fixed"))
    GenomeIndex(tmp_path / "b").build(example_genomes[1:2], model="kmer:6")
    result = run("merge", tmp_path / "out", tmp_path / "a", tmp_path / "b")
    one_line = f"{tmp_path / 'a'} was built with chunking 'fixed', {tmp_path / 'b'} with 'anchored'"
    assert result.exit_code == 1 and one_line in result.stderr
    assert not (tmp_path / "out").exists()


def test_compile_is_ignored_on_cpu() -> None:
    assert not Embedder("nt-tiny", RunOptions(device="cpu", compile=True)).compiled


def test_without_a_faiss_gpu_build_indexes_stay_on_the_cpu() -> None:
    index = build_faiss(np.arange(10), clustered(10, 8), 8)
    if faiss_gpus():
        pytest.skip("a faiss GPU build sees a GPU here; the GPU test covers this machine")
    assert to_gpu(index) is index


@pytest.mark.skipif(not faiss_gpus(), reason="needs a faiss GPU build and a GPU")
def test_gpu_search_equals_cpu_search() -> None:
    vectors = clustered(5000, 64)
    ids = np.arange(3, 5003)
    cpu = build_faiss(ids, vectors, 64)
    gpu = to_gpu(cpu)
    assert gpu is not cpu
    queries = normalise(vectors[:20])
    assert np.array_equal(cpu.search(queries, 10)[1], gpu.search(queries, 10)[1])
