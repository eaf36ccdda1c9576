"""Which layer tracks relatedness: `evaluate --ani` on copies of one genome with 0-10 % substitutions.

    python benchmarks/bench_ani.py [--models kmer:6,nt-tiny] [--layers 0,2,4]

Eight copies of the first example genome (150 kb) with 0, 0.5, 1, 2, 3, 5, 8 and 10 % random
substitutions (skani ANI about 87-100 %), two label groups; prints evaluate's table with the
Spearman correlation of each layer's cosine with skani's ANI over the 28 pairs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine

from genome_index.analysis.evaluate import evaluate
from genome_index.cli.output import render_dicts
from genome_index.io.fasta import read_genome

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "genomes"
RATES = (0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="kmer:6,nt-tiny")
    parser.add_argument("--layers", default="0,2,4")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    base = np.frombuffer(read_genome(sorted(EXAMPLES.glob("*.fna.gz"))[0]).records[0].sequence, np.uint8)
    bases = np.frombuffer(b"ACGT", np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        lines = ["file,group"]
        for i, rate in enumerate(RATES):
            sequence = base.copy()
            where = rng.random(len(sequence)) < rate
            sequence[where] = rng.choice(bases, int(where.sum()))
            (folder / f"copy{i}.fa").write_bytes(b">c%d\n" % i + sequence.tobytes() + b"\n")
            lines.append(f"copy{i}.fa,{'near' if i < 4 else 'far'}")
        (folder / "labels.csv").write_text("\n".join(lines) + "\n")
        files = sorted(folder.glob("copy*.fa"))
        rows = evaluate(files, folder / "labels.csv", "group", args.models.split(","), args.layers, ani=True)
    print(f"machine: {describe_machine()}")
    print(render_dicts(rows, "table"), end="")


if __name__ == "__main__":
    main()
