"""Fast k-mer tokenizer vs the model's own Hugging Face tokenizer on a ~3 Mbp genome.

    python benchmarks/bench_tokenize.py [FASTA]

Default genome: the largest S. aureus assembly in ../shared/data/staph, else a random 3 Mbp
sequence. Both tokenizers run on the same sequence in this process; the ids are compared.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from transformers import AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine

from genome_index.embedding.backends.checkpoints import BUNDLED
from genome_index.embedding.tokenize import make_tokenizer
from genome_index.io.fasta import read_genome

STAPH = Path(__file__).resolve().parents[2] / "shared" / "data" / "staph"


def load_sequence(argv: list[str]) -> tuple[str, bytes]:
    if argv:
        genome = read_genome(argv[0])
        return genome.name, b"".join(r.sequence for r in genome.records)
    files = sorted(STAPH.glob("*.fna.gz"), key=lambda p: p.stat().st_size)
    if files:
        genome = read_genome(files[-1])
        return genome.name, genome.records[0].sequence
    rng = np.random.default_rng(0)
    return "random", rng.choice(np.frombuffer(b"ACGT", np.uint8), 3_000_000).tobytes()


def best_of(repeats: int, func) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    name, sequence = load_sequence(sys.argv[1:])
    hf = AutoTokenizer.from_pretrained(BUNDLED["nt-tiny"])
    fast = make_tokenizer(hf)
    text = sequence.decode()
    hf_ids = hf(text, add_special_tokens=False, verbose=False)["input_ids"]
    assert fast.tokenize(sequence).ids.tolist() == hf_ids, "ids differ from the HF tokenizer"
    t_hf = best_of(2, lambda: hf(text, add_special_tokens=False, verbose=False))
    t_fast = best_of(10, lambda: fast.tokenize(sequence))
    mbp = len(sequence) / 1e6
    print(f"machine: {describe_machine()}")
    print(f"genome: {name}, {mbp:.2f} Mbp, {len(hf_ids):,} tokens (ids identical)")
    print(f"HF tokenizer   : {t_hf * 1000:9.1f} ms  {mbp / t_hf:9.1f} Mbp/s")
    print(f"fast tokenizer : {t_fast * 1000:9.1f} ms  {mbp / t_fast:9.1f} Mbp/s")
    print(f"speed-up       : {t_hf / t_fast:9.0f}x")


if __name__ == "__main__":
    main()
