"""Kill real `genome-index build` processes with SIGKILL at random instants; check the store each time.

    python benchmarks/stress_kill.py [--kills 20] [--seed 1]

Each round starts `genome-index build` over the same 8 small genomes (cut from examples/) into
one store, kills it with SIGKILL after a random delay (uniform over the length of a full
build), then checks what the next commands find: the store opens, a self-query in genome and
chunk mode ranks the queried genome first, and `check` reports every stored genome complete
(chunks covering its whole length, a vector per chunk) with FAISS holding exactly DuckDB's
ids. Rounds go on over the same store, so later kills land in later stages of the build; a
final build must complete the store without duplicates. Prints the counts.
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine

from genome_index.api import GenomeIndex
from genome_index.fasta import read_genome
from genome_index.settings import QueryOptions

ROOT = Path(__file__).resolve().parent.parent


def make_genomes(folder: Path) -> list[Path]:
    """Eight 40 kb genomes: two stretches of each example genome."""
    paths = []
    for source in sorted((ROOT / "examples" / "genomes").glob("*.fna.gz")):
        sequence = read_genome(source).records[0].sequence
        for part, start in enumerate((0, 70_000)):
            path = folder / f"{source.name.split('.')[0]}_{part}.fa"
            path.write_text(f">{path.stem}\n{sequence[start : start + 40_000].decode()}\n")
            paths.append(path)
    return paths


def build_command(index: Path, inputs: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "genome_index.cli",
        "build",
        str(inputs),
        "--index",
        str(index),
        "--model",
        "nt-tiny",
        "--device",
        "cpu",
        "--quiet",
    ]


def verify(index: Path, genomes: dict[str, Path]) -> tuple[int, list[str]]:
    """Stored genome count and the problems the next commands find (empty: all good)."""
    if not (index / "metadata.duckdb").exists():
        return 0, []
    store = GenomeIndex.open(index)
    names = [name for (name,) in store.sql("SELECT name FROM genomes ORDER BY id")[1]]
    problems = []
    if names:
        probe = random.choice(names)
        for mode in ("genome", "chunks"):
            top = store.query(genomes[probe], QueryOptions(k=1, mode=mode))[0]["name"]
            if top != probe:
                problems.append(f"self-query ({mode}) of {probe} ranked {top} first")
    problems += store.check()
    return len(names), problems


def verify_count(index: Path) -> int:
    if not (index / "metadata.duckdb").exists():
        return 0
    return len(GenomeIndex.open(index).sql("SELECT id FROM genomes")[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    random.seed(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp) / "genomes"
        inputs.mkdir()
        genomes = {p.stem: p for p in make_genomes(inputs)}
        timing = Path(tmp) / "timing"
        start = time.perf_counter()
        subprocess.run(build_command(timing, inputs), check=True)
        full = time.perf_counter() - start
        shutil.rmtree(timing)

        index = Path(tmp) / "index"
        killed = finished = failures = 0
        stored_after_kill = []
        for round_ in range(1, args.kills + 1):
            if verify_count(index) == len(genomes):
                shutil.rmtree(index)  # complete: start over so kills keep landing mid-build
            child = subprocess.Popen(build_command(index, inputs), stderr=subprocess.DEVNULL)
            delay = random.uniform(0.2, full)
            try:
                child.wait(timeout=delay)
                finished += 1
            except subprocess.TimeoutExpired:
                child.send_signal(signal.SIGKILL)
                child.wait()
                killed += 1
            stored, problems = verify(index, genomes)
            stored_after_kill.append(stored)
            failures += bool(problems)
            status = "ok" if not problems else "; ".join(problems)
            print(f"round {round_:2d}: after {delay:5.2f} s, {stored} genome(s) stored, {status}", flush=True)

        result = subprocess.run(build_command(index, inputs), capture_output=True, text=True)
        stored, problems = verify(index, genomes)
        names = [n for (n,) in GenomeIndex.open(index).sql("SELECT name FROM genomes")[1]]
        complete = result.returncode == 0 and sorted(names) == sorted(genomes) and not problems

    print(f"machine: {describe_machine()}")
    print(f"full build: {full:.1f} s for {len(genomes)} genomes")
    print(f"rounds: {args.kills}, killed mid-build: {killed}, finished before the kill: {finished}")
    print(f"genomes stored at the kills: {sorted(set(stored_after_kill))}")
    print(f"rounds with a problem found afterwards: {failures}")
    print(f"final build completes the store without duplicates: {'yes' if complete else 'NO'}")
    sys.exit(1 if failures or not complete else 0)


if __name__ == "__main__":
    main()
