"""How soon Ctrl-C ends a build (in each phase) and a never-ending SQL statement.

    python benchmarks/bench_interrupt.py [--repeat 3]

A build of five 40 kb genomes is sent SIGINT by `tests/kill_helper.py` at a chosen point
(input check, reader, between two encoder batches, inside a genome's transaction, before a
FAISS file's rename); `sql` gets it three seconds into an unbounded recursive query. Each
figure is the time from the signal to the process's exit, beside the floor measured in the
same run: a bare `python -c` sleeping in `time.sleep`, interrupted the same way. The tests
hold these to 10 s (a loaded 2-core machine); the tight figure is this one.
"""

from __future__ import annotations

import argparse
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine

ROOT = Path(__file__).resolve().parent.parent
PHASES = {"validate": 2, "read": 2, "embed": 2, "commit": 1, "faiss": 2}
FOREVER = "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t) SELECT count(*) FROM t"


def cut_genomes(folder: Path) -> list[Path]:
    """Five 40 kb genomes cut from the examples, as the reliability tests use."""
    from genome_index.io.fasta import read_genome

    paths = []
    for i, source in enumerate(sorted((ROOT / "examples" / "genomes").glob("*.fna.gz"))):
        sequence = read_genome(source).records[0].sequence
        for j, part in enumerate((sequence[:40_000], sequence[60_000:100_000])):
            if len(paths) < 5:
                path = folder / f"g{i}{j}.fa"
                path.write_text(f">c{i}{j}\n{part.decode()}\n")
                paths.append(path)
    return paths


def build_stop(folder: Path, genomes: list[Path], phase: str, run: int) -> float:
    """Seconds from the signal to the exit of a build interrupted in `phase`."""
    model = "nt-tiny" if phase == "embed" else "kmer:6"
    index = folder / f"{phase}-{run}"
    helper = [sys.executable, str(ROOT / "tests" / "kill_helper.py"), "INT", phase, str(PHASES[phase])]
    build = ["build", *map(str, genomes), "--index", str(index), "--model", model, "-q"]
    child = subprocess.run([*helper, *build], capture_output=True, text=True, timeout=300)
    ended = time.monotonic()
    if child.returncode != 130:
        raise SystemExit(f"{phase}: exit {child.returncode}\n{child.stderr}")
    return ended - float(re.search(r"signalled (\S+)", child.stderr).group(1))


def signal_after(args: list[str], wait: float) -> float:
    """Seconds from SIGINT, sent `wait` seconds after the start, to the exit of `args`."""
    child = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(wait)
    signalled = time.monotonic()
    child.send_signal(signal.SIGINT)
    child.wait(timeout=60)
    return time.monotonic() - signalled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    repeat = parser.parse_args().repeat
    print(describe_machine())
    floor = [signal_after([sys.executable, "-c", "import time; time.sleep(60)"], 1.0) for _ in range(repeat)]
    base = statistics.median(floor)
    print(f"floor (python in time.sleep): median {base:.3f} s")
    print(f"{'what':<16} {'median s':>9} {'max s':>7} {'x floor':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        genomes = cut_genomes(folder)
        figures = {f"build, {p}": [build_stop(folder, genomes, p, i) for i in range(repeat)] for p in PHASES}
        store = folder / "sql-store"
        cli = [sys.executable, "-m", "genome_index.cli"]
        subprocess.run([*cli, "build", *map(str, genomes), "-i", str(store), "-m", "kmer:4", "-q"], check=True)
        sql = [*cli, "sql", FOREVER, "-i", str(store)]
        figures["sql, forever"] = [signal_after(sql, 3.0) for _ in range(repeat)]
    for what, times in figures.items():
        median = statistics.median(times)
        print(f"{what:<16} {median:>9.3f} {max(times):>7.3f} {median / base:>8.1f}")


if __name__ == "__main__":
    main()
