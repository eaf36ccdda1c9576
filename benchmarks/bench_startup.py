"""How long each light command takes to start and answer, against `python -c pass`.

    python benchmarks/bench_startup.py [--repeat 5]

Each figure is the median wall time of a fresh `python -m genome_index.cli ...` process on a
kmer:4 store of the four example genomes, beside the median of `python -c pass` measured in
the same run; the heavy modules (torch, transformers, sourmash) each command imported are
listed (none is the goal).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "genomes"
HEAVY = ("torch", "transformers", "sourmash")
CHILD = (
    "import sys; from genome_index.cli import main; sys.argv = ['genome-index', *sys.argv[1:]]\n"
    "try:\n    main()\nexcept SystemExit:\n    pass\n"
    f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules) or '-', file=sys.__stderr__)"
)


def timed(args: list[str], repeat: int) -> tuple[float, str]:
    """(median seconds, heavy modules imported) of `repeat` fresh processes."""
    times, heavy = [], "-"
    for _ in range(repeat):
        started = time.perf_counter()
        child = subprocess.run(args, capture_output=True, text=True)
        times.append(time.perf_counter() - started)
        heavy = child.stderr.strip().splitlines()[-1] if child.stderr.strip() else "-"
    return statistics.median(times), heavy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    repeat = parser.parse_args().repeat
    with tempfile.TemporaryDirectory() as tmp:
        store = str(Path(tmp) / "index")
        subprocess.run(
            [sys.executable, "-m", "genome_index.cli", "build", str(EXAMPLES), "-m", "kmer:4", "-i", store, "-q"],
            check=True,
        )
        commands = {
            "--help": ["--help"],
            "--version": ["--version"],
            "sql": ["sql", "SELECT count(*) FROM genomes", "-i", store],
            "info": ["info", "-i", store],
            "check --quick": ["check", "--quick", "-i", store],
            "remove (unknown name)": ["remove", "nope", "-i", store],
            "argument error": ["query", "--no-such-option"],
        }
        baseline, _ = timed([sys.executable, "-c", "pass"], repeat)
        print(describe_machine())
        print(f"python -c pass: {baseline:.3f} s (median of {repeat})")
        print(f"{'command':<24} {'seconds':>8} {'minus python':>13}  heavy modules imported")
        for name, args in commands.items():
            seconds, heavy = timed([sys.executable, "-c", CHILD, *args], repeat)
            print(f"{name:<24} {seconds:>8.3f} {seconds - baseline:>13.3f}  {heavy}")


if __name__ == "__main__":
    main()
