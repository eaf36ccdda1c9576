"""genome-index: transformer embeddings of genome assemblies, searchable with FAISS and SQL."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from genome_index.errors import GenomeIndexError

# OpenBLAS's idle threads spin for 2^28 cycles after each call before they sleep; a query's
# products are small and followed by minimap2, whose threads that spinning slowed. Read when
# numpy loads, so set here, before it does (a value of the user's stands): on the 38-genome
# store, warm p50 38.4 -> 34.9 ms, verify 19.5 -> 14.3 ms (performance page).
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

__version__ = "0.1.0"
ASSETS = Path(__file__).parent / "assets"  # the bundled model (nt-tiny) and the web page

__all__ = ["GenomeIndex", "GenomeIndexError", "__version__"]


def __getattr__(name: str) -> Any:
    """`GenomeIndex` is imported on first use, so `genome-index --help` needs no torch."""
    if name == "GenomeIndex":
        from genome_index.api import GenomeIndex

        return GenomeIndex
    raise AttributeError(name)
