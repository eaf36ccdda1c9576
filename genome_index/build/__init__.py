"""Filling a store: inputs checked once (`intake`), genomes embedded by a local or a Ray runner
(`cluster`; joining Ray is `genome_index.ray_session`) into one `run_build` (`run`), committed
by the writer thread (`writer`); also `merge`, `backfill`, and raw embeddings to Parquet (`export`)."""
