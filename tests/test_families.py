"""Every model family loads right or is refused: tiny random checkpoints of each, built here.

For each family: the windows' ids equal its Hugging Face tokenizer's, batched vectors equal
one window at a time at every layer, stock classes equal an independent HF forward pass, and
a store built with it covers every base, answers a query and its reverse complement alike,
and `evaluate` scores every layer. Then the refusals: wrong weights, own code without
--trust-remote-code, unknown classes, no length limit, a failing first forward pass.
"""

from __future__ import annotations

import dataclasses
import importlib.abc
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
    "gpn": ("gpn", {"model_package": "gpn", "chunk_tokens": 512}, "mean", False),
}


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
    config.setdefault("model_type", "bert")  # DNABERT-2's names none: as a BERT it would load
    (copy / "config.json").write_text(json.dumps(config))
    return copy


@pytest.mark.parametrize(
    ("family", "message"),
    [
        ("dnabert2", "weight(s) of BertModel missing from the checkpoint (e.g. embeddings.position_embeddings"),
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


@pytest.mark.parametrize("family", ["caduceus", "gpn"])
def test_no_length_limit_asks_for_chunk_tokens(family: str, checkpoints) -> None:
    """Neither Caduceus nor GPN states a maximum input length (GPN's tokenizer and config say
    none): the user chooses the windows."""
    grants = {k: v for k, v in FAMILIES[family][1].items() if k != "chunk_tokens"}
    with pytest.raises(GenomeIndexError, match=r"states no maximum input length: .*--chunk-tokens"):
        Embedder(ModelOptions(model=checkpoints[family], **grants), CPU)


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
    with pytest.raises(GenomeIndexError, match="fails on its first input") as failed:
        Embedder(ModelOptions(model=str(folder), trust_remote_code=True), CPU)
    assert "its own code raised this" in str(failed.value)
    assert "--trust-remote-code" not in str(failed.value)  # it was given: no advice to give it


def test_buffers_built_in_init_survive_loading(checkpoints) -> None:
    """DNABERT-2's ALiBi tensor is computed by its own __init__ (meta-device init cannot)."""
    encoder = Embedder(options("dnabert2", checkpoints), CPU).encoder.model.encoder
    loaded = encoder.alibi.clone()
    encoder.rebuild_alibi_tensor(size=loaded.shape[-1])
    assert loaded.abs().sum() > 0 and torch.equal(loaded, encoder.alibi)


# -- the authors' own code: each family as its code behaves (issue 26) ------------------


def own_model(folder: str, reference: str, **fill: object) -> torch.nn.Module:
    """A checkpoint's own class built by hand, the way its authors' examples do, and filled from
    its weight file: independent of genome-index's loader. `fill`: config attributes the
    authors' transformers gave every config."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, dynamic_module_utils

    cls = dynamic_module_utils.get_class_from_dynamic_module(reference, folder)
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    for key, value in fill.items():
        setattr(config, key, value)
    model = cls(config).eval()
    prefix = cls.base_model_prefix + "."
    state = {k.removeprefix(prefix): v for k, v in load_file(str(Path(folder) / "model.safetensors")).items()}
    result = model.load_state_dict(state, strict=False)
    assert not [k for k in result.missing_keys if not k.startswith("pooler") and "freq" not in k]
    return model


def dnabert2_states(model: torch.nn.Module, ids: torch.Tensor) -> list[torch.Tensor]:
    """Every hidden state of one window through DNABERT-2's own API: the embeddings, then the
    blocks' states from `output_all_encoded_layers=True` (unpadded: one window has no padding;
    its pooler would read them as padded, so it goes, as in its masked-LM class)."""
    model.pooler = None
    blocks, _ = model(ids, output_all_encoded_layers=True)
    return [model.embeddings(ids, torch.zeros_like(ids))[0], *blocks]


def gpn_states(model: torch.nn.Module, ids: torch.Tensor) -> list[torch.Tensor]:
    """GPN's one-hot embedding, then each block of its `nn.Sequential` in turn."""
    states = [model.embedding(input_ids=ids)]
    for block in model.encoder:
        states.append(block(states[-1]))
    return [state[0] for state in states]


def hyena_states(model: torch.nn.Module, ids: torch.Tensor) -> list[torch.Tensor]:
    return [state[0] for state in model(ids, output_hidden_states=True, return_dict=True).hidden_states[:-2]] + [
        model(ids, return_dict=True).last_hidden_state[0]
    ]


OWN_CODE = {
    "dnabert2": ("bert_layers.BertModel", {"pad_token_id": 0, "is_decoder": False, "add_cross_attention": False}),
    "hyenadna": ("hyena_modeling.HyenaDNAModel", {}),
}


@pytest.mark.parametrize("family", ["dnabert2", "hyenadna", "gpn"])
def test_every_layer_equals_the_authors_code_one_window_at_a_time(family: str, checkpoints) -> None:
    """Batched windows of several lengths at every layer equal each window alone through the
    family's own code: DNABERT-2's unpadded block states padded back, HyenaDNA with its shared
    `freq` loaded once, GPN's `nn.Sequential` blocks counted like every family's."""
    embedder = Embedder(options(family, checkpoints), CPU)
    if family == "gpn":
        from gpn.legacy import ConvNetModel

        model, states = ConvNetModel.from_pretrained(checkpoints[family]).eval(), gpn_states
    else:
        reference, fill = OWN_CODE[family]
        model = own_model(checkpoints[family], reference, **fill)
        states = dnabert2_states if family == "dnabert2" else hyena_states
    chunks = embedder.chunker.chunk_sequence((random_dna(1400, 11) + "N" + random_dna(700, 12)).encode())
    assert len({len(c.input_ids) for c in chunks}) > 1  # a batch holds several lengths
    layers = list(range(embedder.spec.num_layers + 1))
    batched = embedder.embed_chunks_at(chunks, layers)
    with torch.inference_mode():
        alone = [states(model, torch.tensor(c.input_ids[None], dtype=torch.long)) for c in chunks]
    for layer in layers:
        pooled = [s[layer][-1] if embedder.encoder.pooling == "last" else s[layer].mean(0) for s in alone]
        np.testing.assert_allclose(
            batched[layer], torch.stack(pooled).numpy(), atol=2e-5, rtol=1e-4, err_msg=str(layer)
        )


def test_dnabert2_below_its_last_layer_through_the_cli(checkpoints, tmp_path: Path) -> None:
    fasta = write_fasta(tmp_path / "g.fa", [("r", random_dna(900, 13))])
    for layer in ("0", "1"):
        out = tmp_path / f"e{layer}.pq"
        args = ["embed", str(fasta), "--model", checkpoints["dnabert2"], "--trust-remote-code", "--layer", layer]
        result = CliRunner().invoke(app, [*args, "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert out.stat().st_size > 0


def test_a_config_without_berts_attributes_gets_berts_defaults(checkpoints, caplog) -> None:
    """DNABERT-2's config.json names no model_type and its class derives from PretrainedConfig,
    which in transformers 5 lacks pad_token_id: filled with BERT's defaults, said at debug level."""
    config = json.loads((Path(checkpoints["dnabert2"]) / "config.json").read_text())
    assert "model_type" not in config and "pad_token_id" not in config
    with caplog.at_level("DEBUG", logger="genome_index.embedding.backends.checkpoints"):
        embedder = Embedder(options("dnabert2", checkpoints), CPU)
    assert embedder.encoder.model.config.pad_token_id == 0
    assert any("pad_token_id" in r.getMessage() and "BertConfig" in r.getMessage() for r in caplog.records)


def test_shared_weights_load_once_and_a_weight_nothing_backs_is_refused(checkpoints, tmp_path: Path) -> None:
    """HyenaDNA's Hub files keep one name of its shared `freq`; the other names are loaded with
    it. A `freq` the file lacks altogether would run at its initial value: refused, although the
    class lists `freq` among the keys it lets go missing."""
    from safetensors.torch import load_file, save_file

    folder = Path(checkpoints["hyenadna"])
    stored = load_file(str(folder / "model.safetensors"))
    names = sorted(k for k in stored if "freq" in k)
    assert names == ["layers.0.implicit_filter.1.freq", "layers.1.implicit_filter.1.freq"]  # .3 left out
    model = Embedder(options("hyenadna", checkpoints), CPU).encoder.model
    block = model.layers[0].implicit_filter
    assert block[1].freq is block[3].freq and torch.equal(block[3].freq, stored[names[0]])
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    save_file({k: v for k, v in stored.items() if k != names[0]}, str(broken / "model.safetensors"))
    with pytest.raises(
        GenomeIndexError, match=r"2 weight\(s\) of HyenaDNAModel missing .*layers.0.implicit_filter.1.freq"
    ):
        Embedder(ModelOptions(model=str(broken), trust_remote_code=True), CPU)


def test_the_probe_feeds_int64_ids(checkpoints) -> None:
    """GPN one-hot encodes its ids, which torch allows for int64 only."""
    with pytest.raises(RuntimeError):
        torch.nn.functional.one_hot(torch.tensor([1, 2], dtype=torch.int32), 8)
    embedder = Embedder(options("gpn", checkpoints), CPU)
    assert embedder.encoder.exact_lengths and embedder.spec.num_layers == 3


def test_a_package_registers_its_classes_by_a_function_it_names(checkpoints, monkeypatch) -> None:
    """PyPI gpn 0.9 registers nothing on import: `--model-package gpn:register_auto_classes`
    (or plain `gpn`, whose `register_auto_classes` is called) registers it; a module that
    registers nothing says which form to use. transformers' registries are emptied of what this
    process registered before (and given back after), as in a fresh process."""
    import gpn._registration
    from transformers.models.auto import configuration_auto, modeling_auto

    monkeypatch.setattr(gpn._registration, "_registered_families", set())
    monkeypatch.setattr(configuration_auto.CONFIG_MAPPING, "_extra_content", {})
    for mapping in (getattr(modeling_auto, name) for name in dir(modeling_auto) if name.startswith("MODEL_")):
        if hasattr(mapping, "_extra_content"):
            monkeypatch.setattr(mapping, "_extra_content", {})
    windows = {"model": checkpoints["gpn"], "chunk_tokens": 200}
    with pytest.raises(GenomeIndexError, match=r"name its registration function \(module:function\)"):
        Embedder(ModelOptions(**windows, model_package="gpn.legacy"), CPU)  # imported: registers nothing
    with pytest.raises(GenomeIndexError, match="gpn has no function 'nope'"):
        Embedder(ModelOptions(**windows, model_package="gpn:nope"), CPU)
    with pytest.raises(GenomeIndexError, match="--model-package ':register_auto_classes' cannot be imported"):
        Embedder(ModelOptions(**windows, model_package=":register_auto_classes"), CPU)
    embedder = Embedder(ModelOptions(**windows, model_package="gpn:register_auto_classes"), CPU)
    assert type(embedder.encoder.model).__name__ == "ConvNetModel"


def test_a_missing_package_of_a_models_code_is_one_line(checkpoints, tmp_path: Path, monkeypatch) -> None:
    """DNABERT-S without einops, Caduceus without mamba_ssm (whose real code imports it at the
    top: upstream kuleshov-group/caduceus caduceus/modeling_caduceus.py): one line naming it."""

    class NotInstalled(importlib.abc.MetaPathFinder):
        def find_spec(self, name: str, path: object = None, target: object = None) -> None:
            if name.split(".")[0] == "einops":
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    for name in [m for m in sys.modules if m.split(".")[0] == "einops"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [NotInstalled(), *sys.meta_path])  # as if einops were not installed
    fresh = tmp_path / "dnabert-s"
    shutil.copytree(checkpoints["dnabert2"], fresh)
    with pytest.raises(GenomeIndexError, match=r"its own code needs einops, not installed here: pip install einops$"):
        Embedder(ModelOptions(model=str(fresh), trust_remote_code=True), CPU)
    caduceus = tmp_path / "caduceus"
    shutil.copytree(checkpoints["caduceus"], caduceus)
    code = caduceus / "caduceus_modeling.py"
    code.write_text("from mamba_ssm.modules.mamba_simple import Mamba  # noqa: F401\n" + code.read_text())
    fasta = write_fasta(tmp_path / "g.fa", [("r", random_dna(500, 9))])
    args = ["embed", str(fasta), "--model", str(caduceus), "--trust-remote-code", "--chunk-tokens", "300"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "e.pq")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line]
    assert len(lines) == 1 and "pip install mamba_ssm (mamba_ssm builds only with CUDA" in lines[0]


def test_with_triton_importable_dnabert2_runs_its_pytorch_attention_on_the_cpu(
    checkpoints, tmp_path: Path, monkeypatch, caplog
) -> None:
    """As on CUDA builds of torch, `triton` imports: the real code then takes its Triton path,
    whose kernels assert CUDA tensors. On the CPU the loader switches it to the code's own
    PyTorch attention, says so, and the vectors are those of the PyTorch path."""
    fake = tmp_path / "site" / "triton"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "language.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    fresh = tmp_path / "dnabert2-triton"  # a new folder: its code is imported afresh, with triton
    shutil.copytree(checkpoints["dnabert2"], fresh)
    reference, fill = OWN_CODE["dnabert2"]
    model = own_model(str(fresh), reference, **fill)
    module = sys.modules[type(model).__module__]
    assert module.flash_attn_qkvpacked_func is not None  # the Triton path is live
    ids = torch.tensor([[2, 7, 8, 9, 3]])
    with pytest.raises(AssertionError):
        model(ids)  # what a user met: "fails on its first input (AssertionError: )"
    with caplog.at_level("INFO", logger="genome_index.embedding.backends.hf"):
        triton = Embedder(ModelOptions(model=str(fresh), trust_remote_code=True), CPU)
    assert module.flash_attn_qkvpacked_func is None
    assert any("PyTorch attention, not Triton's" in r.getMessage() for r in caplog.records)
    chunks = triton.chunker.chunk_sequence(random_dna(600, 14).encode())
    plain = Embedder(options("dnabert2", checkpoints), CPU)
    np.testing.assert_allclose(triton.embed_chunks(chunks), plain.embed_chunks(chunks), atol=1e-6)


def test_nt_v2s_code_for_transformers_4_loads_and_leaves_transformers_as_it_was(checkpoints) -> None:
    """NT v2's modeling file imports two helpers transformers 5 removed: lent while it imports."""
    from transformers import modeling_utils

    code = (Path(checkpoints["ntv2"]) / "ntv2_modeling.py").read_text()
    assert "find_pruneable_heads_and_indices, prune_linear_layer" in code
    assert not hasattr(modeling_utils, "find_pruneable_heads_and_indices")
    Embedder(options("ntv2", checkpoints), CPU)
    assert not hasattr(modeling_utils, "find_pruneable_heads_and_indices")


@pytest.mark.parametrize("load", ["describe", "load_config", "load_tokenizer", "load_model"])
def test_every_loading_path_asks_for_trust_before_running_a_models_code(load: str, checkpoints) -> None:
    """Loading the config, the tokenizer, the shape or the weights: each refuses code the user did
    not trust (the one check is `load_config`'s, which each goes through)."""
    from genome_index.embedding.backends import checkpoints as loading
    from genome_index.embedding.backends.hf import HfBackend

    name = checkpoints["dnabert2"]
    calls = {
        "describe": lambda: loading.describe(name),
        "load_config": lambda: loading.load_config(name),
        "load_tokenizer": lambda: HfBackend.load_tokenizer(ModelOptions(model=name)),
        "load_model": lambda: loading.load_model(name, torch.device("cpu"), torch.float32),
    }
    with pytest.raises(GenomeIndexError, match="--trust-remote-code"):
        calls[load]()
