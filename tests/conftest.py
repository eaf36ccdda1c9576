"""Shared fixtures: the bundled nt-tiny model, example genomes, and the optional real data."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from tests.helpers import EXAMPLES, STAPH

os.environ.setdefault("GENOME_INDEX_CACHE", tempfile.mkdtemp(prefix="genome-index-test-cache-"))  # not ~/.cache


@pytest.fixture(scope="session")
def hf_tokenizer():
    from transformers import AutoTokenizer

    from genome_index.embedding.backends.checkpoints import BUNDLED

    return AutoTokenizer.from_pretrained(BUNDLED["nt-tiny"])


@pytest.fixture(scope="session")
def tokenizer(hf_tokenizer):
    from genome_index.embedding.tokenize import make_tokenizer

    return make_tokenizer(hf_tokenizer)


@pytest.fixture(scope="session")
def embedder():
    from genome_index.embedding.embedder import Embedder
    from genome_index.settings import RunOptions

    return Embedder("nt-tiny", RunOptions(device="cpu"))


@pytest.fixture(scope="session")
def example_genomes() -> list[Path]:
    return sorted((EXAMPLES / "genomes").glob("*.fna.gz"))


@pytest.fixture(scope="session")
def staph_dir() -> Path:
    if not STAPH.is_dir():
        pytest.skip(f"real genomes not available ({STAPH} missing)")
    return STAPH


@pytest.fixture(scope="session")
def nt_tiny_store(tmp_path_factory, example_genomes) -> Path:
    """The four example genomes embedded with nt-tiny, built once for the whole session: tests
    read it as it is, or `copy_store` it before changing anything."""
    from genome_index.api import GenomeIndex

    directory = tmp_path_factory.mktemp("nt-tiny-store") / "index"
    GenomeIndex(directory).build(example_genomes, model="nt-tiny")
    return directory


@pytest.fixture(scope="session")
def labelled_genomes(example_genomes) -> tuple[list[Path], Path]:
    """The four S. aureus examples and eight synthetic genomes of two other compositions, with
    examples/labels.csv giving each one's species."""
    synthetic = sorted((EXAMPLES / "labelled").glob("*.fa.gz"))
    return [*example_genomes, *synthetic], EXAMPLES / "labels.csv"
