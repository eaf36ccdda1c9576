"""genome-index: transformer embeddings of genome assemblies, searchable with FAISS and SQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from genome_index.errors import GenomeIndexError

__version__ = "0.1.0"
ASSETS = Path(__file__).parent / "assets"  # the bundled model (nt-tiny) and the web page

__all__ = ["GenomeIndex", "GenomeIndexError", "__version__"]


def __getattr__(name: str) -> Any:
    """`GenomeIndex` is imported on first use, so `genome-index --help` needs no torch."""
    if name == "GenomeIndex":
        from genome_index.api import GenomeIndex

        return GenomeIndex
    raise AttributeError(name)
