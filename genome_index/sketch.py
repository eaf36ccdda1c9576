"""FracMinHash sketches (sourmash) for re-ranking hits by k-mer containment, with an ANI estimate.

Each stored genome keeps the hashes of its canonical 21-mers below 1/1000 of the hash range
(sourmash's scaled=1000; `build --sketch-scaled` sets another density); a query's sketch,
compared with them, gives containment (the share of the query's k-mers found in the genome)
and the Mash-style ANI estimate C^(1/k).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import sourmash

from genome_index.fasta import Record
from genome_index.store.schema import SKETCH_KSIZE


def new_minhash(scaled: int) -> sourmash.MinHash:
    return sourmash.MinHash(n=0, ksize=SKETCH_KSIZE, scaled=scaled)


def sketch_records(records: Sequence[Record], scaled: int) -> np.ndarray:
    """Sorted uint64 hashes of the records' canonical k-mers (k-mers with N are skipped)."""
    minhash = new_minhash(scaled)
    for record in records:
        minhash.add_sequence(record.sequence.decode("ascii"), force=True)
    return np.array(sorted(minhash.hashes), dtype=np.uint64)


def from_hashes(hashes: Sequence[int] | np.ndarray, scaled: int) -> sourmash.MinHash:
    minhash = new_minhash(scaled)
    minhash.add_many([int(h) for h in hashes])
    return minhash


def containment(query: sourmash.MinHash, genome: sourmash.MinHash) -> tuple[float | None, float | None]:
    """(containment of the query in the genome, ANI estimate); None when the query has no hashes."""
    if len(query) == 0:
        return None, None
    contained = query.contained_by(genome)
    return float(contained), float(contained ** (1 / SKETCH_KSIZE))
