"""Comparison and evaluation: matrices, plots, layer scores, and the kmer:K baseline embedder."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from typer.testing import CliRunner

from genome_index.analysis.compare import cosine_matrix, label_scores
from genome_index.analysis.evaluate import evaluate, parse_layers
from genome_index.api import GenomeIndex
from genome_index.cli import app
from genome_index.embedding.backends.kmer import batch_profiles, canonical_columns
from genome_index.embedding.embedder import Embedder
from genome_index.errors import GenomeIndexError
from genome_index.io.fasta import Genome, Record, read_genome, reverse_complement
from genome_index.settings import QueryOptions
from tests.helpers import one_line_error, write_fasta

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.parametrize(("k", "columns"), [(3, 32), (4, 136), (6, 2080), (8, 32896)])
def test_canonical_kmer_columns(k: int, columns: int) -> None:
    assert canonical_columns(k)[1] == columns


@pytest.mark.parametrize(("rows", "width", "k"), [(6, 700, 6), (3, 90, 3), (2, 300, 8), (2, 6, 6), (2, 5, 6)])
def test_kmer_profiles_equal_a_kmer_by_kmer_count(rows: int, width: int, k: int) -> None:
    """The vectorised profile against counting each K-mer in turn: N (code 4, also padding)
    breaks a K-mer; a row of N only, or shorter than K, is all zero."""
    rng = np.random.default_rng(k * width)
    codes = rng.integers(0, 4, size=(rows, width)).astype(np.uint8)
    codes[rng.random(codes.shape) < 0.02] = 4
    codes[0, width // 2 :] = 4  # padding after a short row
    codes[-1] = 4
    columns, dim = canonical_columns(k)
    expected = np.zeros((rows, dim))
    for row in range(rows):
        for start in range(width - k + 1):
            kmer = codes[row, start : start + k]
            if (kmer < 4).all():
                expected[row, columns[int("".join(str(int(c)) for c in kmer), 4)]] += 1
        expected[row] /= max(expected[row].sum(), 1)
    assert np.allclose(batch_profiles(codes, k), expected, atol=1e-7)


def test_kmer_profiles_ignore_strand_and_n(example_genomes) -> None:
    embedder = Embedder("kmer:6")
    record = read_genome(example_genomes[0]).records[0]
    piece = record.sequence[:6000]
    forward = embedder.embed_chunks(embedder.chunk(Genome(Path("f"), [Record("r", "", piece)])))
    reverse = embedder.embed_chunks(embedder.chunk(Genome(Path("r"), [Record("r", "", reverse_complement(piece))])))
    assert len(forward) > 1 and np.allclose(forward, reverse[::-1])  # mirrored windows, same profiles
    assert forward.sum(axis=1) == pytest.approx(1.0)
    with_n = embedder.embed_chunks(embedder.chunk(Genome(Path("n"), [Record("r", "", b"ACGTAC" + b"N" * 10)])))
    assert with_n[0].sum() == pytest.approx(1.0) and with_n[0].max() == 1.0  # the one N-free 6-mer


@pytest.mark.parametrize("name", ["kmer:2", "kmer:9"])
def test_kmer_size_out_of_range(name: str) -> None:
    with pytest.raises(GenomeIndexError, match="between 3 and 8"):
        Embedder(name)


@pytest.mark.slow
def test_kmer_model_builds_and_queries(tmp_path: Path, example_genomes) -> None:
    store = GenomeIndex(tmp_path / "index")
    store.build(example_genomes, model="kmer:5")
    settings = store.settings()
    assert (settings.model, settings.dim, settings.layer) == ("kmer:5", 512, 0)
    for path in example_genomes:
        assert store.query(path, QueryOptions(k=1, mode="chunks", align=False))[0].name == read_genome(path).name


def test_parse_layers() -> None:
    assert parse_layers("all", 4) == [0, 1, 2, 3, 4]
    assert parse_layers("0,2,-1", 4) == [0, 2, 4]
    with pytest.raises(GenomeIndexError):
        parse_layers("one,two", 4)
    with pytest.raises(GenomeIndexError, match="does not exist"):
        parse_layers("7", 4)


def test_label_scores_on_a_known_matrix() -> None:
    similarity = np.array([[1, 0.9, 0.1, 0.2], [0.9, 1, 0.2, 0.1], [0.1, 0.2, 1, 0.8], [0.2, 0.1, 0.8, 1]])
    scores = label_scores(similarity, ["a", "a", "b", "b"])
    assert scores.nn_accuracy == 1.0
    assert scores.within == pytest.approx(0.85) and scores.between == pytest.approx(0.15)
    assert scores.gap == pytest.approx(0.7) and scores.silhouette > 0.7
    flipped = label_scores(similarity, ["a", "b", "a", "b"])
    assert flipped.nn_accuracy == 0.0 and flipped.gap < 0


def test_cosine_matrix_is_symmetric_with_unit_diagonal() -> None:
    matrix = cosine_matrix(np.random.default_rng(0).normal(size=(7, 16)))
    assert np.array_equal(matrix, matrix.T) and np.all(np.diag(matrix) == 1.0)


@pytest.mark.slow
def test_evaluate_kmer6_separates_the_groups(labelled_genomes) -> None:
    files, labels = labelled_genomes
    synthetic = [f for f in files if f.name.startswith(("balanced_0", "balanced_1", "gc_rich_0", "gc_rich_1"))]
    rows = evaluate(synthetic, labels, "species", ["kmer:6", "nt-tiny"], layers="0,2,-1")  # small: quick
    assert [(r["model"], r["layer"]) for r in rows] == [("kmer:6", 0), ("nt-tiny", 0), ("nt-tiny", 2), ("nt-tiny", 4)]
    assert all(r["genomes"] == 4 for r in rows)
    (kmer,) = evaluate(files, labels, "species", ["kmer:6"])  # every group, the S. aureus included
    assert kmer["genomes"] == len(files)
    assert kmer["nn_accuracy"] == 1.0
    assert kmer["gap"] > 0.3 and kmer["silhouette"] > 0.5


def test_evaluate_needs_labels_for_every_genome(labelled_genomes, tmp_path: Path) -> None:
    files, _ = labelled_genomes
    partial = tmp_path / "partial.csv"
    partial.write_text(f"file,species\n{files[0].name},x\n{files[1].name},y\n")
    with pytest.raises(GenomeIndexError, match="no row for genome"):
        evaluate(files, partial, "species", ["kmer:4"])
    with pytest.raises(GenomeIndexError, match="no column 'host'"):
        evaluate(files, labelled_genomes[1], "host", ["kmer:4"])


def test_evaluate_cli_table_json_and_plot(labelled_genomes, tmp_path: Path) -> None:
    files, labels = labelled_genomes
    plot = tmp_path / "layers.png"
    args = ["evaluate", *files, "--labels", labels, "--label", "species", "--model", "kmer:4", "--model", "kmer:5"]
    result = run(*args, "--layers", "0", "--format", "json", "--plot", plot, "--device", "cpu")  # layers: see above
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert {r["model"] for r in rows} == {"kmer:4", "kmer:5"}
    assert set(rows[0]) == {"model", "layer", "genomes", "nn_accuracy", "within", "between", "gap", "silhouette"}
    assert matplotlib.image.imread(plot).shape[2] in (3, 4)


@pytest.fixture(scope="module")
def labelled_store(tmp_path_factory, labelled_genomes) -> Path:
    files, labels = labelled_genomes
    index = tmp_path_factory.mktemp("compare") / "index"
    GenomeIndex(index).build(files, model="kmer:6", labels=labels)
    return index


@pytest.mark.slow
def test_compare_writes_matrix_plots_and_summary(labelled_store: Path, labelled_genomes, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run("compare", "--index", labelled_store, "--label", "species", "--out", out, "--format", "json")
    assert result.exit_code == 0, result.output
    with open(out / "similarity.tsv") as handle:
        rows = list(csv.reader(handle, delimiter="\t"))
    names = rows[0][1:]
    matrix = np.array([[float(v) for v in row[1:]] for row in rows[1:]])
    assert len(names) == len(labelled_genomes[0]) == matrix.shape[0] == matrix.shape[1]
    assert [row[0] for row in rows[1:]] == names
    assert np.allclose(matrix, matrix.T) and np.allclose(np.diag(matrix), 1.0)
    for png in ("heatmap.png", "pca.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert matplotlib.image.imread(out / png).shape[0] > 300
    summary = {r["label"]: r for r in json.loads(result.stdout)}
    assert summary["S. aureus"]["genomes"] == 4
    assert summary["(all)"]["within"] > summary["(all)"]["between"] + 0.3


def test_the_summary_has_no_nan_no_copy_of_all_and_decimals_that_tell_values_apart() -> None:
    from genome_index.analysis.compare import group_summary
    from genome_index.cli.output import render_dicts

    similarity = np.array([[1.0, 0.99999, 0.99990], [0.99999, 1.0, 0.99991], [0.99990, 0.99991, 1.0]])
    rows = {r["label"]: r for r in group_summary(similarity, ["x", "x", "y"])}
    assert rows["y"]["genomes"] == 1 and rows["y"]["within"] is None  # a group of one: no pair, no nan
    assert rows["x"]["within"] == pytest.approx(0.99999) and rows["(all)"]["between"] == pytest.approx(0.999905)
    unlabelled = group_summary(similarity, ["", "", ""])
    assert [r["label"] for r in unlabelled] == ["(all)"]  # not a "(none)" row equal to it
    table = render_dicts(group_summary(similarity, ["x", "x", "y"]), "table")
    assert "nan" not in table and "0.99999" in table and " 1.0000 " not in table


def test_compare_unknown_label(labelled_store: Path, tmp_path: Path) -> None:
    result = run("compare", "--index", labelled_store, "--label", "host", "--out", tmp_path)
    assert result.exit_code == 1 and "no label 'host'" in result.stderr and "species" in result.stderr


def test_unwritable_outputs_are_one_line(labelled_store: Path, labelled_genomes, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = run("compare", "--index", labelled_store, "--out", blocker / "out")
    assert result.exit_code == 1 and len(result.stderr.strip().splitlines()) == 1 and "a-file" in result.stderr
    files, labels = labelled_genomes
    result = run("evaluate", *files, "--labels", labels, "--label", "species", "--model", "kmer:3",
                 "--plot", blocker / "plot.png")  # fmt: skip
    assert result.exit_code == 1 and len(result.stderr.strip().splitlines()) == 1 and "a-file" in result.stderr


@pytest.fixture(scope="module")
def relatives(tmp_path_factory, example_genomes) -> tuple[list[Path], Path]:
    """One genome, four copies with 1-10 % substitutions (skani ANI about 99 to 93 %), and an
    unrelated random genome (no ANI: below skani's range); labels split them in two."""
    folder = tmp_path_factory.mktemp("relatives")
    rng = np.random.default_rng(0)
    base = np.frombuffer(read_genome(example_genomes[0]).records[0].sequence, np.uint8)
    bases = np.frombuffer(b"ACGT", np.uint8)
    paths = []
    for i, rate in enumerate((0.0, 0.01, 0.03, 0.06, 0.10)):
        sequence = base.copy()
        where = rng.random(len(sequence)) < rate
        sequence[where] = rng.choice(bases, int(where.sum()))
        paths.append(write_fasta(folder / f"copy{i}.fa", [(f"c{i}", sequence.tobytes().decode())]))
    paths.append(write_fasta(folder / "other.fa", [("o", rng.choice(bases, len(base)).tobytes().decode())]))
    labels = folder / "labels.csv"
    labels.write_text("file,group\n" + "".join(f"{p.name},{'near' if i < 3 else 'far'}\n" for i, p in enumerate(paths)))
    return paths, labels


def test_ani_of_relatives_falls_with_their_substitutions(relatives) -> None:
    from genome_index.analysis.ani import ani_matrix

    ani = ani_matrix(len(relatives[0]), lambda i: read_genome(relatives[0][i]))
    assert np.allclose(np.diag(ani), 1.0) and np.allclose(ani[:5, :5], ani[:5, :5].T)
    assert list(ani[0, 1:5]) == sorted(ani[0, 1:5], reverse=True) and 0.90 < ani[0, 4] < ani[0, 1] < 1.0
    assert np.isnan(ani[5, :5]).all()  # unrelated: below skani's range


@pytest.mark.slow
def test_evaluate_ani_correlates_cosine_with_ani_over_the_pairs_skani_sees(relatives, tmp_path: Path) -> None:
    paths, labels = relatives
    pairs: dict = {}
    rows = evaluate(paths, labels, "group", ["kmer:6"], ani=True, pairs=pairs)
    assert rows[0]["ani_pairs"] == 10  # the five relatives' pairs; none with the unrelated genome
    assert rows[0]["ani_spearman"] > 0.7  # kmer:6 profiles track ANI (measured 0.83 here)
    cosines, anis = pairs[("kmer:6", 0)]
    assert len(cosines) == len(anis) == 15
    args = ["evaluate", *paths, "--labels", labels, "--label", "group", "--model", "kmer:6", "--ani"]
    result = run(*args, "--plot", tmp_path / "layers.png", "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["ani_pairs"] == 10
    assert (tmp_path / "layers-ani.png").stat().st_size > 10_000


@pytest.mark.slow
def test_compare_ani_writes_the_matrix_beside_the_cosines(relatives, tmp_path: Path) -> None:
    paths, _ = relatives
    index = tmp_path / "index"
    GenomeIndex(index).build(paths, model="kmer:6")
    result = run("compare", "--index", index, "--out", tmp_path / "out", "--ani")
    assert result.exit_code == 0, result.output
    rows = (tmp_path / "out" / "ani.tsv").read_text().splitlines()
    assert rows[0].split("\t") == ["genome", *sorted(p.stem for p in paths)]
    assert rows[1].split("\t")[1] == "1.000000" and rows[1].endswith("\t")  # copy0 vs other: no ANI
    paths[5].rename(tmp_path / "moved.fa")
    try:
        one_line_error(run("compare", "--index", index, "--out", tmp_path / "again", "--ani"), "other.fa", "is gone")
    finally:
        (tmp_path / "moved.fa").rename(paths[5])
