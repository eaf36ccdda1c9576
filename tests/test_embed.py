"""The batched engine equals the one-chunk-at-a-time reference; padding and order change nothing."""

from __future__ import annotations

import dataclasses
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModel

from genome_index.embedding.backends.checkpoints import BUNDLED
from genome_index.embedding.backends.esm import FusedGelu
from genome_index.embedding.devices import pick_device, pick_dtype
from genome_index.embedding.embedder import Embedder
from genome_index.embedding.reference import embed_reference
from genome_index.embedding.testing import random_checkpoint
from genome_index.errors import GenomeIndexError
from genome_index.io.fasta import read_genome
from genome_index.settings import ModelOptions, RunOptions
from tests.helpers import write_fasta

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def full_model():
    return AutoModel.from_pretrained(BUNDLED["nt-tiny"]).eval()


@pytest.fixture(scope="module")
def mixed_chunks(tokenizer, example_genomes):
    """Chunks of very different lengths (2..600 tokens), some with N runs, from a real excerpt."""
    genome = read_genome(example_genomes[0])
    sequence = genome.records[0].sequence[:40_000]
    sequence = sequence[:1000] + b"N" * 37 + sequence[1000:]
    from genome_index.embedding.tokenize import chunk_tokens

    chunks = chunk_tokens(tokenizer.tokenize(sequence), tokenizer, 0, 600)
    lengths = [2, 600, 17, 333, 600, 5, 128, 599, 64, 250, 1, 450]
    mixed = []
    for chunk, keep in zip(chunks, lengths, strict=False):
        mixed.append(dataclasses.replace(chunk, input_ids=chunk.input_ids[: keep + 1]))
    return mixed


@pytest.mark.parametrize("layer", [0, 2, 4])
def test_engine_equals_reference(layer, mixed_chunks, full_model, hf_tokenizer) -> None:
    engine = Embedder(ModelOptions("nt-tiny", layer=layer), RunOptions(device="cpu", batch_tokens=1800))
    vectors = engine.embed_chunks(mixed_chunks)
    sequences = ["".join(hf_tokenizer.convert_ids_to_tokens(c.input_ids[1:].tolist())) for c in mixed_chunks]
    reference = embed_reference(full_model, hf_tokenizer, sequences, layer)
    assert vectors.shape == (len(mixed_chunks), 128)
    assert np.abs(vectors - reference).max() < 1e-4


def test_engine_runs_only_the_blocks_it_needs() -> None:
    engine = Embedder(ModelOptions("nt-tiny", layer=2), RunOptions(device="cpu"))
    model = engine.encoder.model
    assert len(model.encoder.layer) == 2
    assert all(isinstance(block.intermediate, FusedGelu) for block in model.encoder.layer)
    assert model.encoder.emb_layer_norm_after is None
    last = Embedder("nt-tiny", RunOptions(device="cpu")).encoder.model
    assert len(last.encoder.layer) == 4
    assert last.encoder.emb_layer_norm_after is not None


def test_fused_gelu_computes_what_esm_spells_out(full_model) -> None:
    stock = full_model.encoder.layer[0].intermediate
    fused = FusedGelu(stock.dense)
    x = torch.randn(3, 50, 128) * 4
    torch.testing.assert_close(fused(x), stock(x), atol=1e-6, rtol=1e-6)
    from transformers.models.esm.modeling_esm import gelu as spelled_out

    h = (torch.randn(4096) * 4).bfloat16()
    truth = spelled_out(h.double())
    one_rounding = (torch.nn.functional.gelu(h).double() - truth).abs().max()
    assert one_rounding <= (spelled_out(h).double() - truth).abs().max()


def test_padding_and_batching_change_no_vector(embedder, mixed_chunks) -> None:
    alone = np.stack([embedder.embed_chunks([c])[0] for c in mixed_chunks])
    batched = embedder.embed_chunks(mixed_chunks)
    assert np.abs(alone - batched).max() < 1e-5


def test_order_is_restored(embedder, mixed_chunks) -> None:
    forward = embedder.embed_chunks(mixed_chunks)
    backward = embedder.embed_chunks(mixed_chunks[::-1])
    assert np.abs(forward - backward[::-1]).max() < 1e-5


def test_an_error_in_the_forward_pass_stops_the_batch_thread(mixed_chunks, monkeypatch) -> None:
    """CUDA out of memory or any other error: the producer thread ends and drops its batches."""
    engine = Embedder(ModelOptions("nt-tiny", chunk_tokens=600), RunOptions(device="cpu", batch_tokens=600))
    calls = {"n": 0}
    forward = engine.encoder.forward

    def failing(*args):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("CUDA out of memory (simulated)")
        return forward(*args)

    monkeypatch.setattr(engine.encoder, "forward", failing)
    for _ in range(3):
        calls["n"] = 0
        with pytest.raises(RuntimeError, match="out of memory"):
            engine.embed_chunks(mixed_chunks)
    assert not [t for t in threading.enumerate() if t.name == "genome-index-batches"]
    monkeypatch.setattr(engine.encoder, "forward", forward)
    assert engine.embed_chunks(mixed_chunks).shape == (len(mixed_chunks), 128)


def test_empty_input(embedder) -> None:
    assert embedder.embed_chunks([]).shape == (0, 128)


@pytest.mark.slow
def test_embed_genomes_streams_every_genome(embedder, example_genomes) -> None:
    items = list(embedder.embed_genomes(example_genomes[:2]))
    assert [i.genome.path for i in items] == example_genomes[:2]
    for item in items:
        assert item.vectors.shape == (len(item.chunks), 128)
        assert np.isfinite(item.vectors).all()
        assert sum(c.end - c.start for c in item.chunks) == item.genome.length


@pytest.mark.parametrize("batch_tokens", [1000, 12_000], ids=["a genome per group", "all in one group"])
@pytest.mark.slow
def test_embedding_genomes_in_groups_equals_one_at_a_time(tmp_path, batch_tokens: int) -> None:
    """Grouping genomes to cut fuller batches changes no vector; a declined genome is skipped."""
    rng = np.random.default_rng(3)
    genomes = [  # four of 30 kb (5,000 tokens: more than a first group of 1000-token batches), the first in two records
        write_fasta(tmp_path / f"g{i}.fa", [(f"r{i}{j}", "".join(rng.choice(list("ACGT"), 30_000 // (1 + (i == 0)))))
                                            for j in range(1 + (i == 0))])
        for i in range(4)
    ]  # fmt: skip
    engine = Embedder("nt-tiny", RunOptions(device="cpu", batch_tokens=batch_tokens))
    items = list(engine.embed_genomes(genomes, want=lambda path: path.stem != "g1"))
    assert [i.genome.name for i in items] == ["g0", "g2", "g3"]
    for item in items:
        alone = engine.embed_chunks(engine.chunk(item.genome))
        np.testing.assert_allclose(item.vectors, alone, atol=1e-5)


def test_device_and_dtype_choice() -> None:
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_dtype("auto", torch.device("cpu")) == torch.float32
    assert pick_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(GenomeIndexError, match="unknown dtype"):
        pick_dtype("int8", torch.device("cpu"))
    with pytest.raises(GenomeIndexError, match="unknown device"):
        pick_device("tpu:banana")


@pytest.mark.parametrize(
    ("gpu", "bf16", "device", "dtype"),
    [
        (True, True, "cuda", torch.bfloat16),
        (True, False, "cuda", torch.float16),
        (False, False, "cpu", torch.float32),
    ],
    ids=["Ampere or newer", "older GPU", "no GPU"],
)
def test_auto_picks_the_gpu_and_its_fastest_exact_enough_dtype(monkeypatch, gpu, bf16, device, dtype) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: bf16)
    chosen = pick_device("auto")
    assert chosen.type == device
    assert pick_dtype("auto", chosen) == dtype
    assert pick_dtype("float32", chosen) == torch.float32


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_requested_without_gpu() -> None:
    with pytest.raises(GenomeIndexError, match="no CUDA GPU"):
        pick_device("cuda")


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@cuda
def test_cuda_agrees_with_cpu(embedder, mixed_chunks) -> None:
    gpu = Embedder("nt-tiny", RunOptions(device="cuda"))
    assert gpu.encoder.dtype == torch.bfloat16
    a, b = embedder.embed_chunks(mixed_chunks), gpu.embed_chunks(mixed_chunks)
    assert cosines(a, b).min() >= 0.999


@pytest.mark.slow
def test_bfloat16_at_nt_2_5b_width_matches_the_float32_reference_on_cpu(tmp_path, mixed_chunks, hf_tokenizer) -> None:
    """The GPU's arithmetic (bf16 weights and activations) at the real model's width, one block:
    every chunk's vector within cosine 0.999 of the float32 one-chunk-at-a-time reference."""
    checkpoint = random_checkpoint("nt-2.5b", tmp_path / "nt-2.5b-1", num_layers=1)
    chunks = [c for c in mixed_chunks if c.n_tokens <= 260]  # 1 to 251 tokens: bf16 on a CPU is slow
    engine = Embedder(str(checkpoint), RunOptions(device="cpu", dtype="bfloat16"))
    vectors = engine.embed_chunks(chunks)
    reference_model = AutoModel.from_pretrained(checkpoint, dtype=torch.float32, add_pooling_layer=False).eval()
    sequences = ["".join(hf_tokenizer.convert_ids_to_tokens(c.input_ids[1:].tolist())) for c in chunks]
    reference = embed_reference(reference_model, hf_tokenizer, sequences, 1)
    assert engine.encoder.dtype == torch.bfloat16 and vectors.shape == (len(chunks), 2560)
    assert cosines(vectors, reference).min() >= 0.999


@pytest.fixture(scope="module")
def nt_2_5b(tmp_path_factory):
    """A random-weight checkpoint of NT-2.5B's exact shape, and its float32 model on the GPU.
    Kept under $GENOME_INDEX_CHECKPOINTS where set, so the GPU check's benchmarks reuse it."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    shared = os.environ.get("GENOME_INDEX_CHECKPOINTS")
    folder = Path(shared) / "nt-2.5b" if shared else tmp_path_factory.mktemp("nt-2.5b")
    checkpoint = random_checkpoint("nt-2.5b", folder, device="cuda")
    reference = AutoModel.from_pretrained(checkpoint, dtype=torch.float32, add_pooling_layer=False)
    return checkpoint, reference.eval().to("cuda")


@cuda
@pytest.mark.parametrize("layer", [20, 32])
def test_cuda_bfloat16_engine_matches_float32_reference_at_nt_2_5b_shape(layer, nt_2_5b, hf_tokenizer) -> None:
    """bf16, SDPA, length-sorted padded batches and pooling on the device, at a cut layer and at
    the last: every chunk within cosine 0.999 of the float32 one-chunk reference."""
    checkpoint, reference_model = nt_2_5b
    rng = np.random.default_rng(layer)
    sequence = rng.choice(np.frombuffer(b"ACGT", np.uint8), 200_000).tobytes()
    sequence = sequence[:5000] + b"N" * 13 + sequence[5000:]
    engine = Embedder(ModelOptions(str(checkpoint), layer=layer), RunOptions(device="cuda"))
    from genome_index.embedding.tokenize import chunk_tokens

    windows = chunk_tokens(engine.tokenizer.tokenize(sequence), engine.tokenizer, 0, 1000)
    chunks = [
        dataclasses.replace(c, input_ids=c.input_ids[:keep])
        for c, keep in zip(windows, [1000, 7, 640, 999, 333, 90, 1000, 512], strict=False)
    ]
    vectors = engine.embed_chunks(chunks)
    sequences = ["".join(hf_tokenizer.convert_ids_to_tokens(c.input_ids[1:].tolist())) for c in chunks]
    torch.backends.cuda.matmul.allow_tf32 = False
    reference = embed_reference(reference_model, hf_tokenizer, sequences, layer)
    similarity = cosines(vectors, reference)
    print(f"layer {layer}: min cosine {similarity.min():.6f} over {len(chunks)} chunks")
    assert engine.encoder.dtype == torch.bfloat16 and len(engine.encoder.model.encoder.layer) == layer
    assert similarity.min() >= 0.999


@pytest.mark.slow
def test_compile_traces_one_graph_for_every_batch_shape(mixed_chunks) -> None:
    """--compile traces one dynamic-shape graph (here with a counting backend, not inductor):
    batches of other widths and row counts, one row included, reuse it; vectors do not change."""
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    engine = Embedder("nt-tiny", RunOptions(device="cpu", batch_tokens=1800))
    plain = engine.embed_chunks(mixed_chunks)
    counter = CompileCounter()
    engine.encoder.compile(backend=counter)
    compiled = engine.embed_chunks(mixed_chunks[:4])
    assert counter.frame_count == 1
    rest = engine.embed_chunks(mixed_chunks[4:])
    alone = [engine.embed_chunks([c]) for c in mixed_chunks[:3]]
    np.testing.assert_allclose(np.concatenate([compiled, rest]), plain, atol=1e-5)
    np.testing.assert_allclose(np.concatenate(alone), plain[:3], atol=1e-5)
    assert counter.frame_count == 1
    torch._dynamo.reset()


def test_bad_settings_are_clear_errors() -> None:
    with pytest.raises(GenomeIndexError, match="chunk-tokens"):
        Embedder(ModelOptions("nt-tiny", chunk_tokens=5000), RunOptions(device="cpu"))
    with pytest.raises(GenomeIndexError, match="batch-tokens"):
        Embedder("nt-tiny", RunOptions(device="cpu", batch_tokens=10))
