"""Query through the Python API: self-queries, strand, per-record, chunk mode, model checks."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from genome_index.api import GenomeIndex
from genome_index.errors import GenomeIndexError
from genome_index.io.fasta import read_genome, reverse_complement
from genome_index.settings import QueryOptions
from tests.helpers import copy_store, write_fasta


@pytest.fixture(scope="module")
def index(nt_tiny_store: Path, tmp_path_factory) -> GenomeIndex:
    return GenomeIndex(copy_store(nt_tiny_store, tmp_path_factory.mktemp("search")))


@pytest.fixture(scope="module")
def fragment(example_genomes, tmp_path_factory) -> Path:
    """The first example genome's two records cut to 20 kb at most: a query that is quick to
    embed where its size does not matter."""
    records = [(r.id, r.sequence[:20_000].decode()) for r in read_genome(example_genomes[0]).records]
    assert len(records) == 2
    return write_fasta(tmp_path_factory.mktemp("fragment") / "f.fa", records)


def write_reverse_complement(source: Path, target: Path) -> Path:
    genome = read_genome(source)
    return write_fasta(target, [(r.id, reverse_complement(r.sequence).decode()) for r in reversed(genome.records)])


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "excerpt"), [("genome", None), ("chunks", 40_000)])
def test_every_genome_finds_itself_first(index: GenomeIndex, example_genomes, tmp_path, mode, excerpt) -> None:
    """Whole genomes in genome mode (made for them); in chunks mode, made for fragments, 40 kb
    from inside each genome, whose windows but the first and last are stored ones."""
    genomes = [read_genome(path) for path in example_genomes]
    queries = example_genomes if excerpt is None else [
        write_fasta(tmp_path / f"{g.name}.fa", [("part", g.records[0].sequence[50_000 : 50_000 + excerpt].decode())])
        for g in genomes
    ]  # fmt: skip
    with index.searcher() as searcher:  # the model loaded once for the four queries
        found = [searcher.query(query, QueryOptions(k=3, mode=mode, align=False)) for query in queries]
    for genome, hits in zip(genomes, found, strict=True):  # the embedding alone
        assert hits[0].name == genome.name and hits[0].score >= (0.999 if excerpt is None else 0.98)
        assert hits[0].rank == 1 and not hits[0].tied and hits[0].identity is None
        ranks = [h.rank for h in hits]
        assert ranks == sorted(ranks)  # the others: ranked, or tied where neither aligns


@pytest.mark.parametrize("mode", ["genome", "chunks"])
@pytest.mark.slow
def test_reverse_complement_gives_the_same_hits(index: GenomeIndex, example_genomes, tmp_path, mode) -> None:
    records = read_genome(example_genomes[1]).records  # two contigs' worth: quick to embed
    source = write_fasta(tmp_path / "fw.fa", [(r.id, r.sequence[:20_000].decode()) for r in records[:2]])
    flipped = write_reverse_complement(source, tmp_path / "rc.fa")
    forward = index.query(source, QueryOptions(k=4, mode=mode, align=False))  # the embedding's own invariance
    reverse = index.query(flipped, QueryOptions(k=4, mode=mode, align=False))
    assert [h.name for h in forward] == [h.name for h in reverse]
    for a, b in zip(forward, reverse, strict=True):
        assert a.score == pytest.approx(b.score, abs=1e-4)


def test_fragment_of_reverse_strand_in_chunk_mode(index: GenomeIndex, example_genomes, tmp_path) -> None:
    """A contig cut where a stored chunk starts, reverse complemented, names its genome first:
    its reverse strand reproduces the stored windows exactly. (Fragments at arbitrary offsets
    depend on the model; with random-weight nt-tiny they are not expected to.)"""
    genome = read_genome(example_genomes[2])
    window = 999 * 6  # bp in one full chunk of N-free sequence
    fragment = genome.records[0].sequence[window * 5 : window * 7 + 500]
    query = write_fasta(tmp_path / "frag.fa", [("frag", reverse_complement(fragment).decode())])
    hits = index.query(query, QueryOptions(k=2, mode="chunks"))
    assert hits[0].name == genome.name
    assert hits[0].support >= 1


@pytest.mark.slow
def test_per_record_queries(index: GenomeIndex, fragment: Path) -> None:
    records = read_genome(fragment).records
    hits = index.query(fragment, QueryOptions(k=2, per_record=True))
    assert [h.query for h in hits] == [r.id for r in records for _ in range(2)]
    assert [h.rank for h in hits] == [1, 2] * len(records)


@pytest.mark.slow
def test_k_larger_than_the_store(index: GenomeIndex, example_genomes, fragment: Path) -> None:
    assert len(index.query(fragment, QueryOptions(k=50))) == len(example_genomes)


def test_bad_query_arguments(index: GenomeIndex, example_genomes, tmp_path) -> None:
    with pytest.raises(GenomeIndexError, match="unknown mode"):
        index.query(example_genomes[0], QueryOptions(mode="fast"))
    with pytest.raises(GenomeIndexError, match="at least 1"):
        index.query(example_genomes[0], QueryOptions(k=0))
    bad = tmp_path / "p.fa"
    bad.write_text(">p\nMKTAYIAKQRQISFVKSHFSRQLEE\n")
    with pytest.raises(GenomeIndexError, match="protein"):
        index.query(bad)


@pytest.mark.slow
def test_query_with_another_model_is_refused(index: GenomeIndex, fragment: Path, tmp_path) -> None:
    other = tmp_path / "other-model"
    shutil.copytree(Path(__file__).parent.parent / "genome_index" / "assets" / "nt-tiny", other)
    weights = other / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # different weights, same shape
    weights.write_bytes(bytes(data))
    with pytest.raises(GenomeIndexError, match="not the model this store was built with"):
        index.query(fragment, model=str(other))
    assert index.query(fragment, QueryOptions(k=1), model="nt-tiny")[0].rank == 1


def test_empty_store_has_no_answers(tmp_path) -> None:
    fasta = write_fasta(tmp_path / "g.fa", [("r", "ACGTTGCAAC" * 100)])
    store = GenomeIndex(tmp_path / "index")
    store.build([fasta], model="nt-tiny")
    store.remove(["g"])
    with pytest.raises(GenomeIndexError, match="holds no genomes"):
        store.query(fasta)


def test_identical_genomes_share_the_support_of_a_window(tmp_path: Path, example_genomes) -> None:
    """The true source got support 0 and its identical twin 7: a tied best match went to one."""
    records = [(r.id, r.sequence[:30_000].decode()) for r in read_genome(example_genomes[0]).records]
    source = write_fasta(tmp_path / "source.fa", records)
    twin = write_fasta(tmp_path / "twin.fa", [*records, ("extra", "ACGTTGCA" * 100)])  # the same windows, and more
    store = GenomeIndex(tmp_path / "index")
    store.build([source, twin], "kmer:4")
    query = write_fasta(tmp_path / "q.fa", [("q", records[0][1][5_000:25_000])])
    hits = {h.name: h for h in store.query(query, QueryOptions(k=2, mode="chunks", align=False))}
    assert hits["source"].support == hits["twin"].support > 0


def random_bases(rng, length: int) -> str:
    return "".join(rng.choice(list("ACGT"), length))


@pytest.fixture(scope="module")
def species_store(tmp_path_factory) -> tuple[GenomeIndex, str]:
    """Eight unrelated 60 kb genomes (kmer:6) and a 12 kb fragment of the third with 1 %
    substitutions: its sketch names the third genome alone, a quarter of the store's windows."""
    import numpy as np

    folder = tmp_path_factory.mktemp("species")
    rng = np.random.default_rng(29)
    genomes = [write_fasta(folder / f"g{i}.fa", [(f"g{i}", random_bases(rng, 60_000))]) for i in range(8)]
    source = list(read_genome(genomes[2]).records[0].sequence[20_000:32_000].decode())
    for position in rng.choice(len(source), 120, replace=False):
        source[position] = "ACGT"[("ACGT".index(source[position]) + 1) % 4]
    query = write_fasta(folder / "q.fa", [("q", "".join(source))])
    store = GenomeIndex(folder / "index")
    store.build(genomes, "kmer:6")
    return store, str(query)


def test_a_query_whose_sketch_names_its_genomes_is_compared_with_their_windows_alone(species_store, monkeypatch):
    """The query's sketch hashes name the source; topped up to -k by genome vector, the search
    covers 2 of 8 genomes, and the hits' figures equal those of a search of every window."""
    from genome_index.search import candidates

    store, query = species_store
    searched = []
    named_rows = candidates.named_rows
    monkeypatch.setattr(
        "genome_index.search.searcher.named_rows", lambda *a: searched.append(named_rows(*a)) or searched[-1]
    )
    options = QueryOptions(k=2, mode="chunks", align=False)
    with store.searcher() as searcher:
        named = searcher.query(query, options)
        everything = searcher.query(query, options, exhaustive=True)
    assert searched[0] is not None and len(searched) == 1  # the exhaustive query never asked
    rows = sum(stop - start for start, stop in searched[0])
    assert 0 < rows <= 0.3 * store.info()["counts"]["chunks"]
    assert named[0].name == everything[0].name == "g2"
    assert (named[0].score, named[0].support, named[0].containment) == (
        everything[0].score, everything[0].support, everything[0].containment,
    )  # fmt: skip
    assert len(named) == 2


def test_records_whose_sketches_name_the_same_genomes_are_searched_in_one_pass(
    species_store, tmp_path, monkeypatch
) -> None:
    """--per-record: the records naming the same genomes (two 12 kb fragments of g2) meet those
    windows in one pass, a record naming others (g5) and one naming none (2 kb: every window)
    in a pass each; every record's hits equal those of the record queried on its own."""
    from genome_index.search.candidates import Retriever

    store, query = species_store
    g2 = read_genome(query).records[0].sequence.decode()
    g5 = read_genome(store.directory.parent / "g5.fa").records[0].sequence.decode()
    records = [("a", g2), ("b", g5[30_000:42_000]), ("c", g2[:2_000]), ("d", reverse_complement(g2.encode()).decode())]
    together = write_fasta(tmp_path / "together.fa", records)
    passes = []
    chunk_search = Retriever.chunk_search
    monkeypatch.setattr(
        Retriever, "chunk_search", lambda self, index, runs=None: passes.append(runs) or chunk_search(self, index, runs)
    )
    options = QueryOptions(k=3, mode="chunks")
    with store.searcher() as searcher:
        both = searcher.query(together, options, per_record=True)
        assert len(passes) == 3 and passes.count(None) == 1 and passes[0] != passes[1]
        alone = [hit for record in records for hit in searcher.query([record], options)]
    assert len(passes) == 3 + 4
    assert [{**hit.row(), "query": None} for hit in both] == [{**hit.row(), "query": None} for hit in alone]
    assert [hit.name for hit in both if hit.rank == 1] == ["g2", "g5", "g2", "g2"]


def test_a_query_with_few_sketch_hashes_is_compared_with_every_window(species_store) -> None:
    """Below SKETCH_NAMED_FROM hashes (a 2 kb fragment holds about 2), or with no hash shared,
    nothing is named: the query meets every stored window."""
    import numpy as np

    from genome_index.search.candidates import SKETCH_NAMED_FROM, named_rows

    store, _ = species_store
    with store.searcher() as searcher:
        resident = searcher._current({"chunks", "genomes"})
        hashes = np.sort(np.concatenate(list(resident.stored_sketches.values())))
        nowhere = lambda: {}  # noqa: E731
        assert named_rows(resident, hashes[: SKETCH_NAMED_FROM - 1], 1, nowhere) is None
        assert named_rows(resident, hashes[:SKETCH_NAMED_FROM] * 0 + 1, 1, nowhere) is None  # shared by none
        one_genome = resident.stored_sketches[min(resident.stored_sketches)]
        assert named_rows(resident, one_genome, 1, nowhere) == resident.rows_of([min(resident.stored_sketches)])
        assert named_rows(resident, hashes, 1, nowhere) is None  # every genome named: the whole store


def test_a_top_up_past_half_the_store_searches_every_window_without_asking_the_genome_index(species_store) -> None:
    """A query whose sketch names one of the 8 equal genomes, asked for 5: however the top-up
    chose, 5 genomes hold more than NAMED_SHARE of the windows, so every window is searched and
    the genome index is never asked (on a store of a few genomes that search was 9 % of a
    server's busy time); asked for 2, the top-up asks it once and adds one genome."""
    from genome_index.search.candidates import Candidate, named_rows

    store, _ = species_store
    with store.searcher() as searcher:
        resident = searcher._current({"chunks", "genomes"})
        first = min(resident.stored_sketches)
        asked = []

        def nearest() -> dict:
            asked.append(True)
            return {gid: Candidate(gid, -float(gid)) for gid in resident.details}

        assert named_rows(resident, resident.stored_sketches[first], 5, nearest) is None
        assert asked == []
        runs = named_rows(resident, resident.stored_sketches[first], 2, nearest)
        second = min(gid for gid in resident.details if gid != first)  # the nearest by the stand-in's scores
        assert asked == [True] and runs == resident.rows_of([first, second])


def test_a_kmer_store_is_queried_without_torch(species_store) -> None:
    """`kmer:K` profiles are numpy: a fresh process queries (and builds) without importing torch
    or transformers (about a second of a cold start: benchmarks/bench_latency.py's cold query),
    and the query's sketch needs no sourmash, so no scipy (0.9 s more)."""
    import subprocess
    import sys

    store, query = species_store
    code = (
        "import sys\n"
        "from genome_index.api import GenomeIndex\n"
        f"hits = GenomeIndex({str(store.directory)!r}).query({query!r})\n"
        "print(hits[0].name, sorted(m for m in ('torch', 'transformers', 'sourmash', 'scipy') if m in sys.modules))\n"
    )
    root = Path(__file__).parent.parent
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root)
    assert done.stdout.split() == ["g2", "[]"], done.stderr


def test_a_warmed_searcher_builds_no_minimap2_index_for_a_query(species_store) -> None:
    """`Searcher.warm` indexes every stored genome with minimap2 ahead of the queries, reads
    their sequences and every window's centring figures: a query then opens nothing."""
    store, query = species_store
    with store.searcher() as searcher:
        assert searcher.warm() == len(searcher.aligners) == 8
        assert searcher._resident.centring.ready.all() and len(searcher._resident.sequences) == 8
        built, reading = searcher.aligners.build, searcher.store.reading
        searcher.aligners.build = lambda *a: pytest.fail("a minimap2 index was built for a query")
        searcher.store.reading = lambda: pytest.fail("the query read the store")
        hits = searcher.query(query, k=3)
        searcher.aligners.build, searcher.store.reading = built, reading
    assert hits[0].name == "g2" and hits[0].identity > 0.98


def test_the_sequences_a_searcher_keeps_stay_under_their_bound(species_store, monkeypatch) -> None:
    """Packed sequences are kept up to KEPT_SEQUENCE_BYTES, the most recently used: with room for
    three 60 kb genomes (15 KB each), warming reads three and every later read drops the oldest."""
    from genome_index.search import resident

    monkeypatch.setattr(resident, "KEPT_SEQUENCE_BYTES", 3 * 15_000 + 100)
    store, query = species_store
    with store.searcher() as searcher:
        searcher.warm(genomes=0)
        kept = searcher._resident
        assert len(kept.sequences) == 3 and kept.sequence_bytes <= resident.KEPT_SEQUENCE_BYTES
        searcher.query(query, k=8)  # aligns all eight
        assert len(kept.sequences) == 3 and kept.sequence_bytes <= resident.KEPT_SEQUENCE_BYTES
        assert kept.sequence_bytes == sum(resident.packed_bytes(records) for records in kept.sequences.values())


def test_warming_more_genomes_than_the_aligners_keep_keeps_them_all(species_store) -> None:
    """`warm(genomes=N)` past what the aligners keep raises what they keep: all N stay."""
    store, _ = species_store
    with store.searcher() as searcher:
        searcher.aligners.capacity = 3
        assert searcher.warm(genomes=2) == 2 and searcher.aligners.capacity == 3
        assert searcher.warm(genomes=6) == len(searcher.aligners) == 6 and searcher.aligners.capacity == 6
        with pytest.raises(GenomeIndexError, match="genomes must be 0 or more, not -1"):
            searcher.warm(genomes=-1)


@pytest.mark.parametrize(
    ("figures", "expected"),
    [
        ((1.0, 1.0, 1.0), "same genome"),
        ((0.99995, 0.995, 0.99), "same genome"),
        ((0.99995, 0.995, 0.98), "same species"),  # the genome has more than the query holds
        ((0.95, 0.5, 0.01), "same species"),  # the field's line, met exactly
        ((0.9499, 0.9, 0.9), "related"),
        ((0.99, 0.49, 0.9), "related"),
        ((0.99, 0.09, 0.9), "no close relative"),
        ((None, 0.0, 0.0), "no close relative"),
    ],
)
def test_relation_follows_the_documented_lines(figures, expected: str) -> None:
    from genome_index.search.relation import relation

    assert relation(*figures) == expected


def test_whole_genomes_say_how_they_relate_to_their_hits(species_store, tmp_path: Path) -> None:
    """A stored genome is the same genome; a 2 %-diverged copy the same species (or related
    with the line moved above its identity); a genome the store does not hold has no close
    relative."""
    import numpy as np

    store, _ = species_store
    stored = read_genome(store.directory.parent / "g3.fa").records[0].sequence.decode()
    rng = np.random.default_rng(31)
    copy = list(stored)
    for position in rng.choice(len(copy), len(copy) // 50, replace=False):
        copy[position] = "ACGT"[("ACGT".index(copy[position]) + 1) % 4]
    queries = {
        "itself": write_fasta(tmp_path / "itself.fa", [("g3", stored)]),
        "copy": write_fasta(tmp_path / "copy.fa", [("copy", "".join(copy))]),
        "stranger": write_fasta(tmp_path / "stranger.fa", [("s", random_bases(rng, 60_000))]),
    }
    top = {name: store.query(path, QueryOptions(k=1))[0] for name, path in queries.items()}
    assert top["itself"].relation == "same genome" and top["itself"].reference_coverage == 1.0
    assert top["copy"].relation == "same species" and 0.97 < top["copy"].identity < 0.99
    assert store.query(queries["copy"], QueryOptions(k=1, species_ani=0.99))[0].relation == "related"
    assert top["stranger"].relation == "no close relative"


def test_the_sketch_index_counts_shared_hashes_as_the_obvious_way_does() -> None:
    """Which genomes share how many query hashes: one `searchsorted` against a set test per genome
    (hashes in several genomes, queries sharing none, an empty query)."""
    import numpy as np

    from genome_index.search.sketch import SketchIndex

    rng = np.random.default_rng(8)
    sketches = {gid: np.unique(rng.integers(0, 500, 60).astype(np.uint64)) for gid in (3, 7, 11, 12)}
    index = SketchIndex(sketches)
    for size in [0, 1, 5, 40, 200]:
        query = np.unique(rng.integers(0, 700, size).astype(np.uint64))
        obvious = {gid: int(np.isin(query, hashes).sum()) for gid, hashes in sketches.items()}
        assert index.shared(query) == {gid: n for gid, n in obvious.items() if n}


@pytest.fixture(scope="module")
def relatives_store(tmp_path_factory) -> tuple[GenomeIndex, list[Path]]:
    """Three 300 kb genomes (kmer:6): an ancestor, a relative at 2 % substitutions that also
    carries a 20 kb plasmid, and an unrelated one; queries of 0.8-10 kb cut from the first two
    with 1 % substitutions, on either strand, and one that spans the relative's two records."""
    import numpy as np

    folder = tmp_path_factory.mktemp("relatives")
    rng = np.random.default_rng(41)
    ancestor = random_bases(rng, 300_000)
    relative = "".join(b if rng.random() > 0.02 else "ACGT"[("ACGT".index(b) + 1) % 4] for b in ancestor)
    plasmid = random_bases(rng, 20_000)
    genomes = [
        write_fasta(folder / "ancestor.fa", [("a", ancestor)]),
        write_fasta(folder / "relative.fa", [("r", relative), ("r_plasmid", plasmid)]),
        write_fasta(folder / "other.fa", [("o", random_bases(rng, 300_000))]),
    ]

    def mutated(bases: str) -> str:
        return "".join(b if rng.random() > 0.01 else "ACGT"[("ACGT".index(b) + 2) % 4] for b in bases)

    pieces = [ancestor[1_000:3_000], ancestor[150_000:160_000], relative[295_000:], plasmid[4_000:4_800],
              relative[-3_000:] + plasmid[:3_000], plasmid[12_000:20_000]]  # fmt: skip
    queries = []
    for number, piece in enumerate(pieces):
        piece = mutated(piece)
        if number % 2:
            piece = reverse_complement(piece.encode()).decode()
        queries.append(write_fasta(folder / f"q{number}.fa", [(f"q{number}", piece)]))
    store = GenomeIndex(folder / "index")
    store.build(genomes, "kmer:6")
    return store, queries


def test_fragments_are_aligned_to_the_regions_they_matched_as_to_whole_genomes(relatives_store, monkeypatch) -> None:
    """A fragment is aligned to the stretches of each candidate around the windows it matched
    (`align.regions`): every hit, alignments included, equals that of aligning to the whole
    genomes (those of a searcher whose aligners keep every genome's index)."""
    from genome_index.search import rerank

    store, queries = relatives_store
    cut, pieces = [], rerank.stored_pieces
    monkeypatch.setattr(rerank, "stored_pieces", lambda *args: cut.append(pieces(*args)) or cut[-1])
    with store.searcher() as searcher:
        searcher.for_one_query()  # as a one-shot query's: it maps the index and keeps no minimap2 index
        regional = [[h.row(alignments=True) for h in searcher.query(q, k=3)] for q in queries]
    assert len(cut) == 18 and sum(c is not None for c in cut) >= 12  # the unrelated genome's would be most of it
    with store.searcher() as searcher:
        whole = [[h.row(alignments=True) for h in searcher.query(q, k=3)] for q in queries]
        assert searcher.aligners.genomes() == {1, 2, 3}
    assert regional == whole
    sources = [hits[0]["name"] for hits in regional]
    assert sources == ["ancestor", "ancestor", "relative", "relative", "relative", "relative"]
    assert all(hits[0]["query_coverage"] > 0.95 for hits in regional)
