"""Peak memory of the edge cases that used to blow up: many tiny records, binary data, one huge query.

    python benchmarks/bench_memory.py [--records 200000] [--query-mbp 50] [--nul-mb 512]

Each figure is the peak RSS of a fresh `genome-index` process (its own `ru_maxrss`):
- a build of one file of a million 1 bp records, refused as reads (it once passed 6 GB);
- a build of one file of N records of 20 bp with --force (kmer:6 and nt-tiny);
- a build of a file of NUL bytes, refused as binary (512 MB of them once peaked at 2.3 GB);
- a query of a random sequence of Q Mbp in chunks mode against a kmer:6 store of the four
  example genomes.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "genomes"


def peak_of(*args: object, check: bool = True) -> tuple[float, float]:
    """(peak RSS in GB, seconds) of one `genome-index` command run in a child process."""
    code = (
        "import resource, sys; from genome_index.cli import main; sys.argv = ['genome-index', *sys.argv[1:]]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)"
    )
    started = time.perf_counter()
    child = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, check=check)
    return int(child.stderr.strip().splitlines()[-1]) / 1e6, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--query-mbp", type=float, default=50.0)
    parser.add_argument("--nul-mb", type=int, default=512)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        tiny = folder / "tiny.fa"
        with open(tiny, "w") as handle:
            for i, row in enumerate(rng.choice(np.frombuffer(b"ACGT", np.uint8), (args.records, 20))):
                handle.write(f">r{i}\n{row.tobytes().decode()}\n")
        query = folder / "query.fa"
        query.write_bytes(b">q\n" + rng.choice(np.frombuffer(b"ACGT", np.uint8), int(args.query_mbp * 1e6)).tobytes())
        reads = folder / "reads.fa"
        with open(reads, "w") as handle:
            handle.writelines(f">read{i}\n{'ACGT'[i % 4]}\n" for i in range(1_000_000))
        nul = folder / "nul.fa"
        with open(nul, "wb") as handle:
            for _ in range(args.nul_mb):
                handle.write(bytes(1 << 20))
        print(f"machine: {describe_machine()}")
        gb, seconds = peak_of("build", reads, "--index", folder / "reads", "--model", "kmer:6", "-q", check=False)
        print(f"build of 1,000,000 records of 1 bp, refused as reads: peak RSS {gb:.2f} GB ({seconds:.1f} s)")
        gb, seconds = peak_of("build", nul, "--index", folder / "nul", "--model", "kmer:6", "-q", check=False)
        print(f"build of {args.nul_mb} MB of NUL bytes, refused as binary: peak RSS {gb:.2f} GB ({seconds:.1f} s)")
        for model in ("kmer:6", "nt-tiny"):
            index = folder / model.replace(":", "")
            gb, seconds = peak_of("build", tiny, "--index", index, "--model", model, "-q", "--force")
            print(f"build of {args.records:,} records of 20 bp with --force, {model:8}: peak RSS {gb:.2f} GB "
                  f"({seconds:.0f} s)")  # fmt: skip
        peak_of("build", EXAMPLES, "--index", folder / "store", "--model", "kmer:6", "-q")
        gb, seconds = peak_of("query", query, "--index", folder / "store", "--mode", "chunks", "-k", "3")
        print(f"query of {args.query_mbp:g} Mbp in chunks mode, kmer:6 store: peak RSS {gb:.2f} GB ({seconds:.0f} s)")


if __name__ == "__main__":
    main()
