"""Progress bar for long work: genomes done/total, Mbp/s and ETA on a terminal, silent when piped."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm


class GenomeProgress:
    """A tqdm bar counting genomes, with throughput in Mbp/s; off for --quiet or a non-terminal.

    Callable as `progress(bases, total)`, the shape of the library's `on_progress` callbacks.
    """

    def __init__(self, desc: str, quiet: bool = False, total: int | None = None) -> None:
        enabled = not quiet and sys.stderr.isatty()
        self.bar = tqdm(total=total, desc=desc, unit="genome", disable=not enabled, file=sys.stderr)
        self.bases = 0
        self.started = time.perf_counter()

    def __call__(self, bases: int, total: int | None = None) -> None:
        if total is not None and self.bar.total != total:
            self.bar.total = total
        self.bases += bases
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        self.bar.set_postfix_str(f"{self.bases / elapsed / 1e6:.2f} Mbp/s", refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> GenomeProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
