"""Shared fixtures: the bundled nt-tiny model, example genomes, and the optional real data."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
STAPH = ROOT.parent / "shared" / "data" / "staph"


@pytest.fixture(scope="session")
def hf_tokenizer():
    from transformers import AutoTokenizer

    from genome_index.models import BUNDLED

    return AutoTokenizer.from_pretrained(BUNDLED["nt-tiny"])


@pytest.fixture(scope="session")
def tokenizer(hf_tokenizer):
    from genome_index.tokenize import make_tokenizer

    return make_tokenizer(hf_tokenizer)


@pytest.fixture(scope="session")
def embedder():
    from genome_index.embed import Embedder

    return Embedder("nt-tiny", device="cpu")


@pytest.fixture(scope="session")
def example_genomes() -> list[Path]:
    return sorted((EXAMPLES / "genomes").glob("*.fna.gz"))


@pytest.fixture(scope="session")
def staph_dir() -> Path:
    if not STAPH.is_dir():
        pytest.skip(f"real genomes not available ({STAPH} missing)")
    return STAPH


def write_fasta(path: Path, records: list[tuple[str, str]], gz: bool = False, eol: str = "\n") -> Path:
    """Write records as FASTA (optionally gzip, optionally CRLF) and return the path."""
    text = "".join(f">{header}{eol}{sequence}{eol}" for header, sequence in records)
    data = text.encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def synthetic_genome(path: Path, seed: int, gc: float, length: int = 60_000, skew: float = 0.0) -> Path:
    """A random genome of a chosen GC content; `skew` favours some dinucleotides (a composition
    signature of its own), so groups of synthetic genomes differ from S. aureus and each other."""
    import numpy as np

    rng = np.random.default_rng(seed)
    at, cg = (1 - gc) / 2, gc / 2
    base_p = np.array([at, cg, cg, at])  # A C G T
    transition = np.tile(base_p, (4, 1))
    transition[np.arange(4), (np.arange(4) + 1) % 4] += skew  # A->C, C->G, G->T, T->A preferred
    transition /= transition.sum(axis=1, keepdims=True)
    cumulative = transition.cumsum(axis=1)
    draws = rng.random(length)
    codes = np.empty(length, dtype=np.int64)
    codes[0] = 0
    for i in range(1, length):
        codes[i] = min(int(np.searchsorted(cumulative[codes[i - 1]], draws[i])), 3)
    sequence = np.frombuffer(b"ACGT", np.uint8)[codes].tobytes().decode()
    return write_fasta(path, [(path.stem, sequence)])


@pytest.fixture(scope="session")
def labelled_genomes(tmp_path_factory, example_genomes) -> tuple[list[Path], Path]:
    """The S. aureus examples plus two groups of synthetic genomes, with a labels CSV (species)."""
    folder = tmp_path_factory.mktemp("labelled")
    rows = [(p, "S. aureus") for p in example_genomes]
    for i in range(4):
        rows.append((synthetic_genome(folder / f"gc_rich_{i}.fa", 100 + i, gc=0.62, skew=0.3), "synthetic GC-rich"))
        rows.append((synthetic_genome(folder / f"balanced_{i}.fa", 200 + i, gc=0.5, skew=-0.15), "synthetic balanced"))
    labels = folder / "labels.csv"
    labels.write_text("file,species\n" + "".join(f"{p.name},{species}\n" for p, species in rows))
    return [p for p, _ in rows], labels
