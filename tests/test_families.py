"""Every model family loads right or is refused: tiny random checkpoints of each, built here.

For each family: the windows' ids equal its Hugging Face tokenizer's, batched vectors equal
one window at a time at every layer, stock classes equal an independent HF forward pass, and
a store built with it covers every base, answers a query and its reverse complement alike,
and `evaluate` scores every layer. Then the refusals: wrong weights, own code without
--trust-remote-code, unknown classes, no length limit, a failing first forward pass.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import shutil
import sys
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer
from typer.testing import CliRunner

from genome_index.analysis.evaluate import evaluate
from genome_index.api import GenomeIndex
from genome_index.build import cluster
from genome_index.build.export import embed_settings
from genome_index.cli import app
from genome_index.embedding.embedder import Embedder
from genome_index.embedding.reference import embed_reference
from genome_index.errors import GenomeIndexError
from genome_index.io.fasta import read_genome, reverse_complement
from genome_index.settings import ModelOptions, QueryOptions, RunOptions
from tests import families
from tests.helpers import write_fasta

CPU = RunOptions(device="cpu")
# family: (how its checkpoint is made, options beyond the model, pooling expected, compare with stock HF)
FAMILIES = {
    "nt-v1": (None, {}, "mean", True),
    "esm-rotary": ("stock", {}, "mean", True),
    "bert-bpe": ("stock", {}, "mean", True),
    "modernbert-char": ("stock", {}, "mean", True),
    "modernbert-bpe": ("stock", {}, "mean", True),
    "llama-char": ("stock", {}, "last", True),
    "roformer-lower": ("stock", {}, "mean", True),
    "t5": ("stock", {}, "mean", False),
    "ntv2": ("custom", {"trust_remote_code": True}, "mean", False),
    "dnabert2": ("custom", {"trust_remote_code": True}, "mean", False),
    "hyenadna": ("custom", {"trust_remote_code": True}, "last", False),
    "caduceus": ("custom", {"trust_remote_code": True, "chunk_tokens": 300}, "mean", False),
    "gpn": ("gpn", {"model_package": "gpn_double"}, "mean", False),
}


@pytest.fixture(scope="session", autouse=True)
def doubles_importable():
    """The GPN double's package, importable as a user's installed `gpn` would be."""
    sys.path.insert(0, str(families.DOUBLES))
    yield
    sys.path.remove(str(families.DOUBLES))


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("families")
    made = {"nt-v1": "nt-tiny"}
    for family, (kind, _, _, _) in FAMILIES.items():
        if kind == "stock":
            made[family] = str(families.stock(family, folder / family))
        elif kind == "custom":
            made[family] = str(families.custom(family, folder / family))
        elif kind == "gpn":
            made[family] = str(families.gpn(folder / family))
    return made


def options(family: str, checkpoints: dict[str, str], **extra: object) -> ModelOptions:
    return ModelOptions(model=checkpoints[family], **{**FAMILIES[family][1], **extra})


def random_dna(length: int, seed: int, gc: float = 0.5) -> str:
    rng = np.random.default_rng(seed)
    return "".join(rng.choice(list("ACGT"), length, p=[(1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2]))


@pytest.fixture(scope="module")
def genomes(tmp_path_factory) -> tuple[list[Path], Path]:
    """Four small genomes of two compositions (with N runs), and a labels CSV."""
    folder = tmp_path_factory.mktemp("genomes")
    paths = []
    for i, gc in enumerate((0.3, 0.3, 0.7, 0.7)):
        sequence = random_dna(1500, i, gc) + "N" * 7 + random_dna(900, 10 + i, gc)
        paths.append(write_fasta(folder / f"g{i}.fa", [(f"r{i}", sequence), (f"p{i}", random_dna(300, 20 + i, gc))]))
    labels = folder / "labels.csv"
    labels.write_text("file,group\n" + "".join(f"g{i}.fa,{'low' if i < 2 else 'high'}\n" for i in range(4)))
    return paths, labels


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.slow
def test_windows_are_the_hf_tokenizers_and_batching_changes_no_vector(family: str, checkpoints, tmp_path) -> None:
    embedder = Embedder(options(family, checkpoints), CPU)
    hf = AutoTokenizer.from_pretrained(embedder.spec.source if family != "nt-v1" else checkpoints[family].replace(
        "nt-tiny", str(Path(__file__).parent.parent / "genome_index" / "assets" / "nt-tiny")))  # fmt: skip
    sequence = (random_dna(700, 1) + "NNNN" + random_dna(500, 2)).encode()
    chunks = embedder.chunker.chunk_sequence(sequence)
    tokenizer = embedder.tokenizer
    for chunk in chunks:
        piece = sequence[chunk.start : chunk.end].decode()
        text = piece.lower() if getattr(tokenizer, "lower", False) else piece
        expected = hf(text)["input_ids"] if family != "gpn" else hf(text, add_special_tokens=False)["input_ids"]
        if not getattr(tokenizer, "split_n", False) or "N" not in piece:
            assert chunk.input_ids.tolist() == expected, family
    layers = list(range(embedder.layer + 1))
    batched = embedder.embed_chunks_at(chunks, layers)
    for layer in layers:
        alone = np.concatenate([embedder.embed_chunks_at([c], [layer])[layer] for c in chunks])
        np.testing.assert_allclose(batched[layer], alone, atol=6e-6, rtol=1e-5, err_msg=f"{family} layer {layer}")
        assert np.isfinite(batched[layer]).all()
    assert embedder.encoder.pooling == FAMILIES[family][2]
    # a Ray task cuts windows with the tokenizer alone (no weights): the same windows
    fasta = write_fasta(tmp_path / "g.fa", [("r", sequence.decode())])
    genome = read_genome(fasta)
    row = {"path": str(fasta), "file": str(fasta), "name": "g", "sha256": genome.sha256}
    _, cut = pickle.loads(cluster.prepare(row, embed_settings(embedder), options(family, checkpoints))["item"])
    assert [(c.start, c.end, c.input_ids.tolist()) for c in cut] == [
        (c.start, c.end, c.input_ids.tolist()) for c in embedder.chunk(genome)
    ], family


@pytest.mark.parametrize("family", [f for f, spec in FAMILIES.items() if spec[3]])
@pytest.mark.slow
def test_stock_classes_equal_an_independent_hf_forward_pass(family: str, checkpoints) -> None:
    embedder = Embedder(options(family, checkpoints), CPU)
    source = (
        embedder.spec.source
        if family != "nt-v1"
        else str(Path(__file__).parent.parent / "genome_index" / "assets" / "nt-tiny")
    )
    hf = AutoTokenizer.from_pretrained(source)
    model = AutoModel.from_pretrained(source).eval()
    chunks = embedder.chunker.chunk_sequence((random_dna(900, 3) + "NN" + random_dna(300, 4)).encode())
    prefix, suffix = len(embedder.tokenizer.prefix), len(embedder.tokenizer.suffix)
    texts = [
        "".join(hf.convert_ids_to_tokens(c.input_ids[prefix : len(c.input_ids) - suffix].tolist())) for c in chunks
    ]
    for layer in (0, embedder.layer):
        reference = embed_reference(model, hf, texts, layer, embedder.encoder.pooling)
        np.testing.assert_allclose(embedder.embed_chunks_at(chunks, [layer])[layer], reference, atol=6e-6, rtol=1e-4)


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.slow
def test_a_store_of_every_family_covers_every_base_and_ignores_strand(
    family: str, checkpoints, genomes, tmp_path: Path
) -> None:
    paths, _ = genomes
    store = GenomeIndex(tmp_path / "index")
    store.build(paths, options(family, checkpoints), run=CPU)
    assert store.check() == []
    settings = store.settings()
    assert settings.pooling == FAMILIES[family][2] and settings.model_class
    sequence = "".join(line for line in paths[2].read_text().splitlines()[1:2])
    forward = write_fasta(tmp_path / "q.fa", [("q", sequence[200:1300])])
    backward = write_fasta(tmp_path / "rc.fa", [("rc", reverse_complement(sequence[200:1300].encode()).decode())])
    query = QueryOptions(k=4, mode="chunks", rerank=False)
    extra = FAMILIES[family][1]
    grants = {key: extra[key] for key in ("trust_remote_code", "model_package") if key in extra}
    with pytest.raises(GenomeIndexError, match=r"--trust-remote-code|--model-package") if grants else nullcontext():
        store.searcher(CPU)  # what the store records of the model's code, only the user grants
    hits, flipped = store.query(forward, query, CPU, **grants), store.query(backward, query, CPU, **grants)
    assert [(h.name, h.score) for h in hits] == [(h.name, h.score) for h in flipped]


@pytest.mark.parametrize("family", ["bert-bpe", "llama-char", "dnabert2", "hyenadna", "gpn"])
def test_evaluate_scores_every_layer(family: str, checkpoints, genomes) -> None:
    paths, labels = genomes
    windows = dataclasses.replace(options(family, checkpoints), model=None)
    rows = evaluate(paths, labels, "group", [checkpoints[family]], "all", windows, CPU)
    depth = Embedder(options(family, checkpoints), CPU).spec.num_layers
    assert [r["layer"] for r in rows] == list(range(depth + 1))
    assert all(np.isfinite(r["within"]) for r in rows)


def test_what_ran_is_recorded_and_the_encoder_of_an_encoder_decoder(checkpoints, genomes, tmp_path: Path) -> None:
    paths, _ = genomes
    store = GenomeIndex(tmp_path / "t5")
    store.build(paths[:1], options("t5", checkpoints), run=RunOptions(device="cpu", batch_tokens=5000))
    settings = store.settings()
    assert settings.model_class.endswith("T5EncoderModel")  # the encoder alone: no decoder loads or runs
    assert settings.batch_tokens == 5000
    llama = Embedder(options("llama-char", checkpoints, pooling="mean"), CPU)
    assert llama.encoder.causal and llama.encoder.pooling == "mean"


def test_an_encoder_only_checkpoint_of_an_encoder_decoder_family(checkpoints, tmp_path: Path) -> None:
    from transformers import T5EncoderModel

    folder = tmp_path / "t5-encoder"
    shutil.copytree(checkpoints["t5"], folder, ignore=shutil.ignore_patterns("model.safetensors"))
    T5EncoderModel.from_pretrained(checkpoints["t5"]).save_pretrained(folder)
    full = Embedder(options("t5", checkpoints), CPU)
    encoder_only = Embedder(ModelOptions(model=str(folder)), CPU)
    chunks = full.chunker.chunk_sequence(random_dna(600, 7).encode())
    np.testing.assert_allclose(encoder_only.embed_chunks(chunks), full.embed_chunks(chunks), atol=1e-6)


def test_padding_sensitive_models_batch_one_length_at_a_time(checkpoints) -> None:
    """Models whose vectors padding changes get batches of one width; the others share batches
    across widths (padded), as the same windows show."""
    for family, exact in (("caduceus", True), ("gpn", True), ("hyenadna", False), ("bert-bpe", False)):
        embedder = Embedder(options(family, checkpoints), CPU)
        assert embedder.encoder.exact_lengths is exact, family
        chunks = embedder.chunker.chunk_sequence((random_dna(3000, 5) + "N" + random_dna(1333, 6)).encode())
        widths = [{len(chunks[i].input_ids) for i in index} for index, _, _ in embedder.engine.batches(chunks)]
        assert len({len(c.input_ids) for c in chunks}) > 1, family  # windows of several widths to batch
        assert all(len(w) == 1 for w in widths) is exact, (family, widths)


# -- refusals ---------------------------------------------------------------------------


def without_auto_map(folder: str, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    config = json.loads((copy / "config.json").read_text())
    config.pop("auto_map")
    (copy / "config.json").write_text(json.dumps(config))
    return copy


@pytest.mark.parametrize(
    ("family", "message"),
    [
        ("dnabert2", "weight(s) of BertModel missing from the checkpoint (e.g. embeddings.LayerNorm.bias)"),
        ("ntv2", "does not load into EsmModel"),
    ],
)
def test_weights_that_would_stay_random_are_refused(family: str, message: str, checkpoints, tmp_path: Path) -> None:
    """A DNABERT-2 or NT v2 checkpoint without its code would load into the stock class with
    fresh random weights: refused in one line naming some of them."""
    stripped = without_auto_map(checkpoints[family], tmp_path)
    with pytest.raises(GenomeIndexError, match="random weights") as refused:
        Embedder(ModelOptions(model=str(stripped)), CPU)
    assert message in str(refused.value)
    fasta = write_fasta(tmp_path / "g.fa", [("r", random_dna(500, 9))])
    result = CliRunner().invoke(app, ["embed", str(fasta), "--model", str(stripped), "--out", str(tmp_path / "e.pq")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert [line for line in result.stderr.splitlines() if line] == [f"genome-index: error: {refused.value}"]


@pytest.mark.parametrize("family", ["ntv2", "dnabert2", "hyenadna", "caduceus"])
def test_own_code_needs_trust_remote_code(family: str, checkpoints) -> None:
    with pytest.raises(GenomeIndexError, match=r"runs its own code .*--trust-remote-code"):
        Embedder(ModelOptions(model=checkpoints[family]), CPU)


@pytest.mark.slow
def test_a_class_registered_on_import_needs_its_package(checkpoints, tmp_path: Path) -> None:
    """In a fresh process (this one has imported the package already), the model_type is unknown
    until --model-package imports what registers it."""
    import subprocess

    fasta = write_fasta(tmp_path / "g.fa", [("r", random_dna(500, 9))])
    command = [sys.executable, "-m", "genome_index.cli", "embed", fasta, "--model", checkpoints["gpn"], "-o", "x.pq"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert result.returncode == 1
    assert (
        result.stderr.count("\n") == 1
        and "model_type 'ConvNet'" in result.stderr
        and "--model-package" in result.stderr
    )
    with pytest.raises(GenomeIndexError, match="--model-package 'no_such_package' cannot be imported"):
        Embedder(ModelOptions(model=checkpoints["gpn"], model_package="no_such_package"), CPU)


def test_no_length_limit_asks_for_chunk_tokens(checkpoints) -> None:
    with pytest.raises(GenomeIndexError, match=r"states no maximum input length: .*--chunk-tokens"):
        Embedder(ModelOptions(model=checkpoints["caduceus"], trust_remote_code=True), CPU)


def test_the_window_limit_is_the_smallest_stated(tmp_path: Path) -> None:
    import transformers as t

    folder = families.stock("bert-bpe", tmp_path / "bert")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["model_max_length"] = 1024  # above the position table's 512
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    embedder = Embedder(ModelOptions(model=str(folder)), CPU)
    assert embedder.tokenizer.max_tokens == 512 and embedder.chunker.chunk_tokens == 512
    assert embedder.embed_chunks(embedder.chunker.chunk_sequence(random_dna(3000, 8).encode())).shape[1] == 32
    assert isinstance(t.AutoConfig.from_pretrained(folder), t.BertConfig)


def test_a_long_context_model_gets_a_budget_of_at_least_one_window(tmp_path: Path) -> None:
    folder = families.custom("hyenadna", tmp_path / "long", max_seq_len=20_000)
    embedder = Embedder(ModelOptions(model=str(folder), trust_remote_code=True), CPU)
    assert embedder.chunker.chunk_tokens == 20_000 > 8192
    assert embedder.batch_tokens >= 20_000


def test_a_failing_first_forward_pass_is_one_line(tmp_path: Path) -> None:
    folder = families.custom("hyenadna", tmp_path / "broken", vocab_size=4)  # the tokenizer's ids run past it
    with pytest.raises(GenomeIndexError, match="fails on its first input"):
        Embedder(ModelOptions(model=str(folder), trust_remote_code=True), CPU)


def test_buffers_built_in_init_survive_loading(checkpoints) -> None:
    """DNABERT-2's ALiBi buffer is computed by its own __init__ (meta-device init cannot)."""
    from transformers import dynamic_module_utils

    embedder = Embedder(options("dnabert2", checkpoints), CPU)
    model = embedder.encoder.model
    module = dynamic_module_utils.get_class_from_dynamic_module("dnabert2_modeling.BertModel", checkpoints["dnabert2"])
    expected = sys.modules[module.__module__].alibi(model.config.num_attention_heads, model.config.alibi_starting_size)
    assert torch.equal(model.alibi, expected)
