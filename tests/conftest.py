"""Shared fixtures: the bundled nt-tiny model, example genomes, and the optional real data."""

from __future__ import annotations

import logging
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


@pytest.fixture(scope="module")
def ray_address() -> str:
    """A local Ray of two CPUs for one module (builds and searches on Ray; stopped after it, so
    that no later test counts its processes as this one's children): one CPU actor
    embeds, the other CPU reads. Its workers may use every core for torch (Ray gives a one-CPU
    actor one thread unless OMP_NUM_THREADS is set): these tests are about results, and the
    actor is the only heavy worker."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]')")
    threads = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(os.cpu_count() or 1)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
    if threads is None:
        del os.environ["OMP_NUM_THREADS"]
    else:
        os.environ["OMP_NUM_THREADS"] = threads
