"""The batched engine equals the one-chunk-at-a-time reference; padding and order change nothing."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from transformers import AutoModel

from genome_index.embed import Embedder, pick_device, pick_dtype
from genome_index.errors import GenomeIndexError
from genome_index.fasta import read_genome
from genome_index.models import BUNDLED
from genome_index.reference import embed_reference


@pytest.fixture(scope="module")
def full_model():
    return AutoModel.from_pretrained(BUNDLED["nt-tiny"]).eval()


@pytest.fixture(scope="module")
def mixed_chunks(tokenizer, example_genomes):
    """Chunks of very different lengths (2..600 tokens), some with N runs, from a real excerpt."""
    genome = read_genome(example_genomes[0])
    sequence = genome.records[0].sequence[:40_000]
    sequence = sequence[:1000] + b"N" * 37 + sequence[1000:]
    from genome_index.tokenize import chunk_tokens

    chunks = chunk_tokens(tokenizer.tokenize(sequence), tokenizer, 0, 600)
    lengths = [2, 600, 17, 333, 600, 5, 128, 599, 64, 250, 1, 450]
    mixed = []
    for chunk, keep in zip(chunks, lengths, strict=False):
        mixed.append(dataclasses.replace(chunk, input_ids=chunk.input_ids[: keep + 1]))
    return mixed


@pytest.mark.parametrize("layer", [0, 2, 4])
def test_engine_equals_reference(layer, mixed_chunks, full_model, hf_tokenizer) -> None:
    engine = Embedder("nt-tiny", layer=layer, device="cpu", batch_tokens=1800)
    vectors = engine.embed_chunks(mixed_chunks)
    sequences = ["".join(hf_tokenizer.convert_ids_to_tokens(c.input_ids[1:].tolist())) for c in mixed_chunks]
    reference = embed_reference(full_model, hf_tokenizer, sequences, layer)
    assert vectors.shape == (len(mixed_chunks), 128)
    assert np.abs(vectors - reference).max() < 1e-4


def test_engine_runs_only_the_blocks_it_needs() -> None:
    engine = Embedder("nt-tiny", layer=2, device="cpu")
    assert len(engine.model.encoder.layer) == 2
    assert engine.model.encoder.emb_layer_norm_after is None
    last = Embedder("nt-tiny", device="cpu")
    assert len(last.model.encoder.layer) == 4
    assert last.model.encoder.emb_layer_norm_after is not None


def test_padding_and_batching_change_no_vector(embedder, mixed_chunks) -> None:
    alone = np.stack([embedder.embed_chunks([c])[0] for c in mixed_chunks])
    batched = embedder.embed_chunks(mixed_chunks)
    assert np.abs(alone - batched).max() < 1e-5


def test_order_is_restored(embedder, mixed_chunks) -> None:
    forward = embedder.embed_chunks(mixed_chunks)
    backward = embedder.embed_chunks(mixed_chunks[::-1])
    assert np.abs(forward - backward[::-1]).max() < 1e-5


def test_empty_input(embedder) -> None:
    assert embedder.embed_chunks([]).shape == (0, 128)


def test_embed_genomes_streams_every_genome(embedder, example_genomes) -> None:
    items = list(embedder.embed_genomes(example_genomes[:2]))
    assert [i.genome.path for i in items] == example_genomes[:2]
    for item in items:
        assert item.vectors.shape == (len(item.chunks), 128)
        assert np.isfinite(item.vectors).all()
        assert sum(c.end - c.start for c in item.chunks) == item.genome.length


@pytest.mark.parametrize("batch_tokens", [1000, 1_000_000], ids=["a genome per group", "all in one group"])
def test_embedding_genomes_in_groups_equals_one_at_a_time(example_genomes, batch_tokens: int) -> None:
    """Grouping genomes to cut fuller batches changes no vector; a declined genome is skipped."""
    engine = Embedder("nt-tiny", device="cpu", batch_tokens=batch_tokens)
    declined = read_genome(example_genomes[1]).name
    items = list(engine.embed_genomes(example_genomes, want=lambda g: g.name != declined))
    assert [i.genome.name for i in items] == [read_genome(p).name for p in example_genomes if p != example_genomes[1]]
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


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_requested_without_gpu() -> None:
    with pytest.raises(GenomeIndexError, match="no CUDA GPU"):
        pick_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_agrees_with_cpu(embedder, mixed_chunks) -> None:
    gpu = Embedder("nt-tiny", device="cuda")
    a, b = embedder.embed_chunks(mixed_chunks), gpu.embed_chunks(mixed_chunks)
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() >= 0.999


def test_bad_settings_are_clear_errors() -> None:
    with pytest.raises(GenomeIndexError, match="chunk-tokens"):
        Embedder("nt-tiny", device="cpu", chunk_tokens=5000)
    with pytest.raises(GenomeIndexError, match="batch-tokens"):
        Embedder("nt-tiny", device="cpu", batch_tokens=10)
