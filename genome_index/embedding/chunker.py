"""The chunker: a genome's records cut into model-sized windows, never across records."""

from __future__ import annotations

from genome_index.embedding.tokenize import Chunk, Tokenizer, anchor_radius, anchored_chunks, chunk_tokens
from genome_index.errors import GenomeIndexError
from genome_index.io.fasta import Genome
from genome_index.settings import CHUNKINGS


class Chunker:
    """Windows of `chunk_tokens` model tokens: anchored (cut where the sequence says) or fixed
    (every `chunk_tokens - specials - overlap` tokens)."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        chunking: str,
        chunk_tokens: int,
        overlap: int = 0,
        radius: int | None = None,
        model: str = "",
    ) -> None:
        if chunking not in CHUNKINGS:
            raise GenomeIndexError(f"unknown chunking {chunking!r}: use {', '.join(CHUNKINGS)}")
        if overlap and chunking != "fixed":
            raise GenomeIndexError("--overlap applies to fixed windows: add --chunking fixed")
        limit = tokenizer.max_tokens  # 0: the model states none
        if not chunk_tokens:
            raise GenomeIndexError(
                f"model {model!r} states no maximum input length: give the window size with --chunk-tokens N"
            )
        if chunk_tokens < 2 or (limit and chunk_tokens > limit):
            raise GenomeIndexError(f"--chunk-tokens {chunk_tokens}: this model takes 2..{limit or 'any'} tokens")
        self.tokenizer = tokenizer
        self.chunking = chunking
        self.chunk_tokens = chunk_tokens
        self.overlap = overlap
        self.anchor_radius = 0
        if chunking == "anchored":  # a store's own radius (`radius`) wins over today's rule
            self.anchor_radius = radius or anchor_radius(tokenizer, chunk_tokens)

    def chunk(self, genome: Genome) -> list[Chunk]:
        """Every record's windows, in record order."""
        chunks: list[Chunk] = []
        for index, record in enumerate(genome.records):
            try:
                chunks.extend(self.chunk_sequence(record.sequence, index))
            except ValueError as exc:
                raise GenomeIndexError(f"{genome.path}: record {record.id}: {exc}") from None
        return chunks

    def chunk_sequence(self, sequence: bytes, record: int = 0) -> list[Chunk]:
        """One record's windows."""
        if self.chunking == "anchored":
            return anchored_chunks(sequence, self.tokenizer, record, self.chunk_tokens, self.anchor_radius)
        tokens = self.tokenizer.tokenize(sequence)
        return chunk_tokens(tokens, self.tokenizer, record, self.chunk_tokens, self.overlap)
