"""genome-index: transformer embeddings of genome assemblies, searchable with FAISS and SQL."""

from genome_index.errors import GenomeIndexError

__version__ = "0.1.0"

__all__ = ["GenomeIndexError", "__version__"]
