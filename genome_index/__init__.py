"""genome-index: transformer embeddings of genome assemblies, searchable with FAISS and SQL."""

from __future__ import annotations

from typing import Any

from genome_index.errors import GenomeIndexError

__version__ = "0.1.0"

__all__ = ["GenomeIndex", "GenomeIndexError", "__version__"]


def __getattr__(name: str) -> Any:
    """`GenomeIndex` is imported on first use, so `genome-index --help` needs no torch."""
    if name == "GenomeIndex":
        from genome_index.api import GenomeIndex

        return GenomeIndex
    raise AttributeError(name)
