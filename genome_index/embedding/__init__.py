"""Sequence to vectors: tokenizers with base-pair spans (`tokenize`), where windows are cut
(`anchors`, `chunker`), the model backends (`backends`: `kmer:K`, Hugging Face checkpoints),
the batching engine (`engine`), genomes streamed through it (`pipeline`), and `Embedder`, which
puts them together for one model at one layer. `reference` holds the slow obvious versions the
fast paths are tested against."""
