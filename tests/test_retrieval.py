"""Retrieval options: views (strands, frames, tilings), auto mode, centring, sketches and re-rank."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from genome_index.api import GenomeIndex
from genome_index.embedding.anchors import cut_points
from genome_index.embedding.embedder import Embedder
from genome_index.errors import GenomeIndexError
from genome_index.io.fasta import Record, read_genome, reverse_complement
from genome_index.search import sketch
from genome_index.search.align import Alignment, GenomeAlignment
from genome_index.search.candidates import Candidate, Retriever
from genome_index.search.rerank import Plan, order_hits
from genome_index.search.views import AUTO_GENOME_MODE_FROM_BP, Query, resolve_mode, views
from genome_index.settings import ModelOptions, QueryOptions, RunOptions, StoreOptions
from genome_index.store.vectors import normalise
from tests.helpers import write_fasta


def query_of(length: int) -> Query:
    return Query("q", [Record("r", "r", b"ACGT" * (length // 4))])


def test_auto_mode_and_its_defaults() -> None:
    assert resolve_mode(QueryOptions(), query_of(20_000)) == ("chunks", 0.0, True)
    assert QueryOptions().center and QueryOptions().rerank
    assert resolve_mode(QueryOptions(), query_of(AUTO_GENOME_MODE_FROM_BP)) == ("genome", 0.0, False)
    forced = QueryOptions(mode="genome", window_overlap=0.5, frames=True)
    assert resolve_mode(forced, query_of(1000)) == ("genome", 0.5, True)


def test_fixed_window_views_cover_strands_frames_and_tilings() -> None:
    embedder = Embedder(ModelOptions("nt-tiny", chunking="fixed"), RunOptions(device="cpu"))
    query = query_of(20_000)
    assert len(views(embedder, query, 0.0, False)) == 2
    assert len(views(embedder, query, 0.0, True)) == 12
    assert len(views(embedder, query, 0.5, True)) == 24
    first = views(embedder, query, 0.5, False)[0]
    assert first[0].start == 0 and all(c.n_tokens <= 1000 for c in first)
    assert (
        len(views(Embedder(ModelOptions("kmer:6", chunking="fixed")), query, 0.0, True)) == 2
    )  # k-mer profiles have no frames


def test_anchored_views_differ_only_in_the_head(embedder) -> None:
    """Windows after the first cut start where the store's do, so only the head needs frames."""
    sequence = np.random.default_rng(5).choice(np.frombuffer(b"ACGT", np.uint8), 40_000).tobytes()
    query = Query("q", [Record("r", "r", sequence)])
    plain, with_frames = views(embedder, query, 0.0, False), views(embedder, query, 0.0, True)
    assert len(plain) == 2 and len(with_frames) == 12
    head_end = cut_points(sequence, embedder.chunker.anchor_radius)[0]
    forward = with_frames[:6]
    tails = {tuple((c.start, c.end) for c in view if c.start >= head_end) for view in forward}
    assert len(tails) == 1 and len(next(iter(tails))) >= 3
    heads = [view[0] for view in forward]
    assert [c.start for c in heads] == list(range(6)) and {c.end for c in heads} == {head_end}


RANDOM_30KB = np.random.default_rng(11).choice(np.frombuffer(b"ACGT", np.uint8), 30_000).tobytes()


@pytest.mark.parametrize("chunking", ["anchored", "fixed"])
@pytest.mark.parametrize("sequence", [(b"ACGGTACCTTGA" * 700)[:8000], RANDOM_30KB], ids=["repeat", "random"])
def test_views_of_a_query_and_its_reverse_complement_are_the_same(chunking: str, sequence: bytes) -> None:
    embedder = Embedder(ModelOptions("nt-tiny", chunking=chunking), RunOptions(device="cpu"))
    overlap = 0.5 if chunking == "fixed" else 0.0
    forward = views(embedder, Query("q", [Record("r", "", sequence)]), overlap, True)
    reverse = views(embedder, Query("q", [Record("r", "", reverse_complement(sequence))]), overlap, True)
    ids = lambda vs: sorted(tuple(tuple(c.input_ids) for c in v) for v in vs)  # noqa: E731
    assert ids(forward) == ids(reverse)


@pytest.fixture(scope="module")
def store(tmp_path_factory, example_genomes) -> GenomeIndex:
    index = GenomeIndex(tmp_path_factory.mktemp("retrieval") / "index")
    index.build(example_genomes, model="kmer:6")
    return index


def test_every_genome_keeps_a_sketch(store: GenomeIndex, example_genomes) -> None:
    rows = store.sql(
        "SELECT g.length, s.ksize, s.scaled, len(s.hashes) FROM sketches s JOIN genomes g ON g.id = s.genome_id"
    )[1]
    assert len(rows) == len(example_genomes)
    for length, ksize, scaled, hashes in rows:
        assert (ksize, scaled) == (21, 1000)
        assert 0.5 * length / scaled < hashes < 2 * length / scaled


def test_hits_carry_containment_and_ani(store: GenomeIndex, example_genomes) -> None:
    hits = store.query(example_genomes[2], QueryOptions(k=4))
    assert hits[0].name == read_genome(example_genomes[2]).name
    assert hits[0].containment == 1.0 and hits[0].ani_estimate == 1.0
    assert all(h.containment < 0.5 for h in hits[1:])


def hits_of(scores: dict[int, float]) -> dict[int, Candidate]:
    return {gid: Candidate(gid, score) for gid, score in scores.items()}


def sketches_of(query_hashes: list[int]) -> Callable[[list[int]], dict]:
    """Sketch estimates of a query against genomes 1-5, genome g holding hashes g*100..g*100+49."""
    genome = {gid: np.arange(gid * 100, gid * 100 + 50, dtype=np.uint64) for gid in range(1, 6)}
    query = np.unique(np.asarray(query_hashes, dtype=np.uint64))
    return lambda ids: {g: sketch.estimate(query, genome[g], 1000) for g in ids}


def no_alignment(ids: list[int]) -> None:
    return None


def reranker(figures: Callable[[list[int]], dict | None], attribute: str) -> Callable[[list[Candidate]], bool]:
    """A re-ranker from a function of genome ids to figures (None: it could not): it sets them on the candidates."""

    def rerank(candidates: list[Candidate]) -> bool:
        found = figures([c.genome_id for c in candidates])
        for candidate in candidates if found is not None else []:
            setattr(candidate, attribute, found.get(candidate.genome_id))
        return found is not None

    return rerank


def ordered(ranked, plan, sketches, alignments=no_alignment):  # type: ignore[no-untyped-def]
    return order_hits(ranked, plan, reranker(sketches, "sketch"), reranker(alignments, "alignment"))


def order(ranked, plan, sketches, alignments=no_alignment) -> list[tuple[int, int, bool]]:
    hits, _ = ordered(ranked, plan, sketches, alignments)
    return [(hit.genome_id, rank, tied) for rank, tied, hit in hits]


def test_rerank_orders_by_containment_and_keeps_score_order_on_ties() -> None:
    ranked = hits_of({1: 0.99, 2: 0.98, 3: 0.90})
    mostly_3 = sketches_of([*range(300, 340), *range(100, 105)])
    assert order(ranked, Plan(3, False, False, 10), mostly_3) == [(1, 1, False), (2, 2, False), (3, 3, False)]
    hits, ranked_by = ordered(hits_of({1: 0.99, 2: 0.98, 3: 0.90}), Plan(3, True, False, 10), mostly_3)
    assert [h.genome_id for _, _, h in hits] == [3, 1, 2] and ranked_by == ("containment", "score")
    assert hits[0][2].sketch.containment == pytest.approx(40 / 45) and hits[0][2].sketch.query_hashes == 45
    empty = sketches_of([])
    assert order(hits_of({1: 0.99, 2: 0.98, 3: 0.90}), Plan(3, True, False, 10), empty) == [
        (1, 1, False), (2, 2, False), (3, 3, False)
    ]  # fmt: skip


def test_exact_ties_share_a_rank_and_are_flagged() -> None:
    """Twins: the same containment and the same score (identical windows) cannot be told apart."""
    ranked = hits_of({1: 0.97, 2: 0.97, 3: 0.5})
    both = sketches_of([*range(100, 110)])  # in genome 1 only; genome 2 gets the same by the next line
    same = lambda ids: {g: both([1])[1] for g in ids}  # noqa: E731
    assert order(ranked, Plan(3, True, False, 10), same) == [(1, 1, True), (2, 1, True), (3, 3, False)]
    assert order(hits_of({1: 0.97, 2: 0.97, 3: 0.5}), Plan(3, False, False, 10), same) == [
        (1, 1, True), (2, 1, True), (3, 3, False)
    ]  # fmt: skip


def test_the_alignment_orders_its_candidates_and_decides_ties() -> None:
    def aligned(identity_and_coverage: dict[int, tuple[float, float]]) -> Callable:
        def run(ids: list[int]) -> dict[int, GenomeAlignment]:
            out = {}
            for gid in ids:
                identity, coverage = identity_and_coverage.get(gid, (0.0, 0.0))
                found = GenomeAlignment(10_000)
                if coverage:
                    bp = int(coverage * 10_000)
                    found.alignments.append(
                        Alignment("q", 0, bp, "r", 0, bp, "+", round(identity * bp), bp, 60, ((0, bp),))
                    )
                out[gid] = found
            return out

        return run

    ranked = hits_of({1: 0.97, 2: 0.97, 3: 0.5, 4: 0.4})
    twins = sketches_of([*range(100, 110)])
    result = order(ranked, Plan(2, True, True, 3), twins, aligned({1: (0.99, 1.0), 2: (0.995, 1.0), 3: (1.0, 0.5)}))
    assert result == [(2, 1, False), (1, 2, False)]  # the alignment sees the SNPs the sketch and the cosine cannot
    three = hits_of({1: 0.97, 2: 0.97, 3: 0.5})
    hits, ranked_by = ordered(three, Plan(3, True, True, 3), twins, aligned({3: (1.0, 1.0)}))
    assert ranked_by == ("explained_bp",) and [h.genome_id for _, _, h in hits] == [3, 1, 2]
    assert [(rank, tied) for rank, tied, _ in hits] == [(1, False), (2, True), (2, True)]  # neither aligns
    same_alignment = aligned({1: (0.99, 1.0), 2: (0.99, 1.0)})
    result = order(hits_of({1: 0.96, 2: 0.97, 3: 0.5}), Plan(3, True, True, 3), twins, same_alignment)
    assert result == [(2, 1, True), (1, 1, True), (3, 3, False)]  # the cosine sees flanks the query has not: a tie
    unaligned = order(hits_of({1: 0.9, 2: 0.8}), Plan(2, False, True, 3), twins, no_alignment)
    assert unaligned == [(1, 1, False), (2, 2, False)]  # no sequences stored: the present order stands


def test_no_sketch_ani_below_the_species_floor() -> None:
    partial = sketches_of([*range(100, 121), *range(1000, 1079)])([1])[1]  # 21 of 100 hashes: a plasmid's share
    assert partial.containment == pytest.approx(0.21) and partial.query_hashes == 100 and partial.ani is None
    whole = sketches_of([*range(100, 150)])([1])[1]
    assert whole.containment == 1.0 and whole.ani == 1.0 and whole.ani_low <= whole.ani <= whole.ani_high
    most = sketches_of([*range(100, 145), *range(1000, 1005)])([1])[1]
    assert most.ani == pytest.approx(0.9 ** (1 / 21), abs=1e-3) and most.ani_low < most.ani < most.ani_high


def test_center_uses_the_means_every_write_keeps(store: GenomeIndex, tmp_path: Path, example_genomes) -> None:
    """The means are running sums kept by each build, merge and removal: they equal the means of
    the stored vectors, read in full."""
    copy = GenomeIndex(tmp_path / "copy")
    copy.merge([store.directory])
    copy.remove(["2"])
    for index in (store, copy):
        with index.store.reading() as reader:
            settings = reader.settings()
            _, chunks = reader.vectors("chunks", settings.dim)
            _, genomes = reader.vectors("genomes", settings.dim)
            chunk_mean, genome_mean = Retriever(reader, settings, center=True).means()
        assert np.allclose(chunk_mean, normalise(chunks).mean(axis=0), atol=1e-6)
        assert np.allclose(genome_mean, genomes.mean(axis=0), atol=1e-6)


def test_genome_mode_centring_equals_the_reference_over_every_stored_vector(store: GenomeIndex, example_genomes):
    """Centred genome-mode scores come from the genome index in memory and the stored mean; the
    slow, obvious reference reads every genome vector and centres it."""
    from genome_index.search.candidates import centred_scores

    with store.searcher() as searcher, store.store.reading() as reader:
        index = searcher._current({"genomes"}).indexes["genomes"]
        settings = reader.settings()
        ids, stored = reader.vectors("genomes", settings.dim)
        mean = stored.astype(np.float64).mean(axis=0).astype(np.float32)
        queries = normalise(stored[:2] + 0.01 * np.random.default_rng(0).standard_normal(stored[:2].shape))
        reference = (normalise(queries - mean) @ normalise(stored - mean).T).max(axis=0)
        fast = centred_scores(index, queries, mean)
    assert sorted(fast) == sorted(int(i) for i in ids)
    assert np.allclose([fast[int(i)] for i in ids], reference, atol=1e-5)


def test_centred_query_still_finds_a_fragment(store: GenomeIndex, example_genomes, tmp_path: Path) -> None:
    genome = read_genome(example_genomes[3])
    fragment = genome.records[0].sequence[33_333:63_333]
    query = write_fasta(tmp_path / "frag.fa", [("frag", reverse_complement(fragment).decode())])
    for center in (False, True):
        assert store.query(query, QueryOptions(k=1, center=center))[0].name == genome.name


@pytest.mark.slow
def test_merge_copies_sketches(store: GenomeIndex, tmp_path: Path) -> None:
    merged = GenomeIndex(tmp_path / "merged")
    merged.merge([store.directory])
    query = "SELECT g.sha256, s.hashes FROM sketches s JOIN genomes g ON g.id = s.genome_id ORDER BY 1"
    assert merged.sql(query)[1] == store.sql(query)[1]


@pytest.mark.slow
def test_sketch_density_is_a_build_setting(tmp_path: Path, example_genomes) -> None:
    fine = GenomeIndex(tmp_path / "fine")
    fine.build(example_genomes[:2], model="kmer:6", store=StoreOptions(sketch_scaled=100))
    assert fine.settings().sketch_scaled == 100
    for length, scaled, hashes in fine.sql(
        "SELECT g.length, s.scaled, len(s.hashes) FROM sketches s JOIN genomes g ON g.id = s.genome_id"
    )[1]:
        assert scaled == 100 and 0.5 * length / 100 < hashes < 2 * length / 100
    assert fine.query(example_genomes[1], QueryOptions(k=1))[0].containment == 1.0
    with pytest.raises(GenomeIndexError, match="sketch_scaled"):
        fine.build(example_genomes[2:3], store=StoreOptions(sketch_scaled=1000))


def test_window_overlap_is_for_fixed_windows(store: GenomeIndex, example_genomes) -> None:
    with pytest.raises(GenomeIndexError, match="--window-overlap applies to stores with fixed windows"):
        store.query(example_genomes[0], QueryOptions(window_overlap=0.5))


SKETCHED = {  # sequences whose k-mers sourmash must see as we do
    "random": np.random.default_rng(5).choice(np.frombuffer(b"ACGT", np.uint8), 30_000).tobytes(),
    "lower case, N and IUPAC codes": np.random.default_rng(6)
    .choice(np.frombuffer(b"ACGTacgtNRY", np.uint8), 30_000, p=[0.24] * 4 + [0.01] * 3 + [0.005, 0.003, 0.001, 0.001])
    .tobytes(),
    "palindromes and repeats": b"ACGT" * 400 + b"AAAAAAAAAAAAAAAAAAAAAAAAA" + b"GAATTC" * 300,
    "shorter than k": b"ACGTACGTACGTACGTACGT",
    "exactly k": b"ACGTACGTACGTACGTACGTA",
}


@pytest.mark.parametrize("scaled", [1, 10, 1000])
@pytest.mark.parametrize("name", SKETCHED)
def test_numpy_sketch_gives_sourmash_hashes(name: str, scaled: int) -> None:
    """The query path's numpy FracMinHash against sourmash's own sketcher (the build's)."""
    minhash = sketch.new_minhash(scaled)
    minhash.add_sequence(SKETCHED[name].decode(), force=True)
    ours = sketch.fracminhash(SKETCHED[name], sketch.SKETCH_KSIZE, scaled)
    assert ours.tolist() == sorted(minhash.hashes)
    assert ours.dtype == np.uint64
    if scaled == 1:  # every k-mer kept: both empty only for a sequence shorter than k
        assert (len(ours) > 0) == (len(SKETCHED[name]) >= sketch.SKETCH_KSIZE)


def test_long_queries_are_sketched_by_sourmash_alike() -> None:
    """Past NUMPY_SKETCH_BP a query is sketched by sourmash: the same hashes either way."""
    sequence = np.random.default_rng(7).choice(np.frombuffer(b"ACGT", np.uint8), sketch.NUMPY_SKETCH_BP + 1).tobytes()
    records = [Record("a", "", sequence), Record("b", "", sequence[:50_000])]
    joined = np.unique(np.concatenate([sketch.fracminhash(r.sequence, 21, 100) for r in records]))
    assert sketch.sketch_records(records, 100).tolist() == joined.tolist() and len(joined) > 1000


@pytest.mark.parametrize("query_hashes", [3, 10, 50, 400, 3000])
@pytest.mark.parametrize("containment", [0.34, 0.5, 0.8, 0.95, 0.999])
def test_ani_interval_is_sourmashs(query_hashes: int, containment: float) -> None:
    """The ANI and its 95 % interval from containment, against sourmash's containment_ani."""
    from sourmash.distance_utils import containment_to_distance

    scaled = 1000
    theirs = containment_to_distance(containment, 21, scaled, n_unique_kmers=query_hashes * scaled, estimate_ci=True)
    ani, low, high = sketch.containment_ani(containment, query_hashes * scaled, scaled)
    assert ani == pytest.approx(1 - theirs.dist, abs=1e-12)
    if theirs.dist_high is None:
        assert low is None and high is None
    else:
        assert low == pytest.approx(1 - theirs.dist_high, abs=1e-9)
        assert high == pytest.approx(1 - theirs.dist_low, abs=1e-9)
        assert low < ani < high


def test_sketch_ignores_strand_and_n() -> None:
    sequence = bytes(np.random.default_rng(3).choice(np.frombuffer(b"ACGT", np.uint8), 50_000))
    a = sketch.sketch_records([Record("a", "", sequence)], 1000)
    b = sketch.sketch_records([Record("b", "", reverse_complement(sequence))], 1000)
    assert np.array_equal(a, b) and len(a) > 10
    assert len(sketch.sketch_records([Record("n", "", b"N" * 5000)], 1000)) == 0
