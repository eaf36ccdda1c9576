"""Kill real `genome-index` commands with SIGKILL at random instants; check the store each time.

    python benchmarks/stress_kill.py [--kills 20] [--seed 1] [--commands build,remove,reindex,merge,segments]

Eight small genomes (two 40 kb stretches of each example genome), nt-tiny. For each command,
`--kills` rounds: the command is started and killed with SIGKILL after a random delay (uniform
over the length of one full run of it), then the next commands must find a sound store: it
opens, a self-query in genome and chunk mode ranks the queried genome first, and `check`
reports every stored genome complete with FAISS holding exactly DuckDB's ids in the store's
index type. Each command also has its own all-or-nothing rule:

- build: rounds go on over one store, so kills land in later stages; a final build must
  complete it without duplicates;
- remove (three genomes of a complete store): either all three are gone or none is;
- reindex (flat to hnsw or back): the setting is one of the two and the file follows it;
- merge (two shards into a new store): whatever was merged is complete, and a final merge
  completes it without duplicates;
- segments: builds of a trained `ivf-pq` store (kmer:4, 50 bp windows, 16 inverted lists:
  about 12,800 windows in the eight halves of the example genomes, so that the build trains
  and writes segments part of the way through), rounds over one store as for build; every
  round's store must pass `check` (segments against DuckDB, each one's SHA-256), and a final
  build must complete it, segmented.

Prints the counts per command; exits 1 if any round found a problem.
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
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine

from genome_index.api import GenomeIndex
from genome_index.io.fasta import read_genome
from genome_index.settings import QueryOptions

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "genome_index.cli"]


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


def make_halves(folder: Path) -> list[Path]:
    """Eight genomes of about 80 kb: the halves of each example genome."""
    paths = []
    for source in sorted((ROOT / "examples" / "genomes").glob("*.fna.gz")):
        sequence = read_genome(source).records[0].sequence
        middle = len(sequence) // 2
        for part, (start, stop) in enumerate(((0, middle), (middle, len(sequence)))):
            path = folder / f"{source.name.split('.')[0]}_{part}.fa"
            path.write_text(f">{path.stem}\n{sequence[start:stop].decode()}\n")
            paths.append(path)
    return paths


SEGMENTED = ("--model", "kmer:4", "--chunk-tokens", "100", "--index-type", "ivf-pq", "--ivf-lists", "16")


def build(index: Path, inputs: list[Path] | Path, *extra: str, model: tuple[str, ...] = ("-m", "nt-tiny")) -> list[str]:
    return [*CLI, "build", *map(str, inputs if isinstance(inputs, list) else [inputs]), "-i", str(index),
            *model, "--device", "cpu", "--quiet", *extra]  # fmt: skip


def names_in(index: Path) -> list[str]:
    if not (index / "metadata.duckdb").exists():
        return []
    return sorted(name for (name,) in GenomeIndex.open(index).sql("SELECT name FROM genomes")[1])


def verify(index: Path, genomes: dict[str, Path]) -> list[str]:
    """The problems the next commands find (empty: all good)."""
    if not (index / "metadata.duckdb").exists():
        return []
    store = GenomeIndex.open(index)
    names = names_in(index)
    problems = []
    if names:
        probe = random.choice(names)
        for mode in ("genome", "chunks"):
            top = store.query(genomes[probe], QueryOptions(k=1, mode=mode, align=False))[0].name
            if top != probe:
                problems.append(f"self-query ({mode}) of {probe} ranked {top} first")
    return problems + store.check()


def duration(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def kill_after(command: list[str], delay: float) -> bool:
    """Run `command`, SIGKILL it after `delay` s; True if it was killed (False: it had finished)."""
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        child.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        child.send_signal(signal.SIGKILL)
        child.wait()
        return True


def rounds(
    name: str,
    kills: int,
    prepare: Callable[[int], tuple[list[str], Path]],
    full: float,
    genomes: dict[str, Path],
    rule: Callable[[Path], list[str]],
) -> tuple[int, int, int]:
    """(killed, finished, rounds with a problem) over `kills` rounds of one command."""
    killed = finished = failures = 0
    for number in range(1, kills + 1):
        command, index = prepare(number)
        delay = random.uniform(0.2, full)
        was_killed = kill_after(command, delay)
        killed += was_killed
        finished += not was_killed
        problems = rule(index) + verify(index, genomes)
        failures += bool(problems)
        status = "ok" if not problems else "; ".join(problems)
        print(f"{name} round {number:2d}: after {delay:5.2f} s, {len(names_in(index))} genome(s), {status}", flush=True)
    return killed, finished, failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--commands", default="build,remove,reindex,merge")
    args = parser.parse_args()
    random.seed(args.seed)
    summary = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        inputs = work / "genomes"
        inputs.mkdir()
        genomes = {p.stem: p for p in make_genomes(inputs)}
        complete = work / "complete"
        full_build = duration(build(complete, inputs))
        for part in (1, 2):
            subprocess.run(build(work / f"part{part}", inputs, "--shard", f"{part}/2"), check=True)

        def on_copy(*argv: str) -> Callable[[int], tuple[list[str], Path]]:
            """A round that runs `genome-index ARGV -i COPY` on a fresh copy of the complete store."""

            def prepare(number: int) -> tuple[list[str], Path]:
                target = work / f"round{number}"
                shutil.rmtree(target, ignore_errors=True)
                shutil.copytree(complete, target)
                return [*CLI, *argv, "-i", str(target), "-q"], target

            return prepare

        for command in args.commands.split(","):
            if command == "build":
                index = work / "building"

                def prepare(_: int, index: Path = index) -> tuple[list[str], Path]:
                    if len(names_in(index)) == len(genomes):
                        shutil.rmtree(index)  # complete: start over so kills keep landing mid-build
                    return build(index, inputs), index

                result = rounds("build", args.kills, prepare, full_build, genomes, lambda _: [])
                finished = subprocess.run(build(index, inputs), capture_output=True)
                final = finished.returncode == 0 and names_in(index) == sorted(genomes) and not verify(index, genomes)
            elif command == "segments":
                halves = work / "halves"
                halves.mkdir(exist_ok=True)
                pieces = {p.stem: p for p in make_halves(halves)}
                index = work / "segmented"
                full = duration(build(work / "segmented-once", halves, model=SEGMENTED))

                def prepare_segmented(
                    _: int, index: Path = index, halves: Path = halves, pieces: dict = pieces
                ) -> tuple[list[str], Path]:
                    if len(names_in(index)) == len(pieces):
                        shutil.rmtree(index)  # complete: start over so kills keep landing mid-build
                    return build(index, halves, model=SEGMENTED), index

                result = rounds("segments", args.kills, prepare_segmented, full, pieces, lambda _: [])
                finished = subprocess.run(build(index, halves, model=SEGMENTED), capture_output=True)
                final = (
                    finished.returncode == 0 and names_in(index) == sorted(pieces) and not verify(index, pieces)
                    and (index / "chunks.ivf" / "CURRENT").exists()
                )  # fmt: skip
            elif command == "remove":
                doomed = sorted(genomes)[:3]
                prepare = on_copy("remove", *doomed)
                full = duration(prepare(0)[0])

                def all_or_none(index: Path, doomed: list[str] = doomed) -> list[str]:
                    left = set(doomed) & set(names_in(index))
                    return [] if left in (set(), set(doomed)) else [f"remove left {sorted(left)} of {doomed}"]

                result = rounds("remove", args.kills, prepare, full, genomes, all_or_none)
                final = True
            elif command == "reindex":
                prepare = on_copy("reindex", "--index-type", "hnsw")
                full = duration(prepare(0)[0])

                def setting_is_one_of_the_two(index: Path) -> list[str]:
                    kind = GenomeIndex.open(index).settings().index_type
                    return [] if kind in ("flat", "hnsw") else [f"index_type is {kind}"]

                result = rounds("reindex", args.kills, prepare, full, genomes, setting_is_one_of_the_two)
                final = True
            elif command == "merge":
                full = duration([*CLI, "merge", str(work / "merged0"), str(work / "part1"), str(work / "part2"), "-q"])

                def prepare_merge(number: int) -> tuple[list[str], Path]:
                    target = work / f"merged{number}"
                    return [*CLI, "merge", str(target), str(work / "part1"), str(work / "part2"), "-q"], target

                result = rounds("merge", args.kills, prepare_merge, full, genomes, lambda _: [])
                last = work / f"merged{args.kills}"
                subprocess.run([*CLI, "merge", str(last), str(work / "part1"), str(work / "part2"), "-q"])
                final = names_in(last) == sorted(genomes) and not verify(last, genomes)
            else:
                raise SystemExit(f"unknown command {command}")
            summary.append((command, full_build if command == "build" else full, *result, final))
            shutil.rmtree(work / "segmented-once", ignore_errors=True)

    print(f"machine: {describe_machine()}")
    for command, seconds, killed, finished, failures, final in summary:
        print(
            f"{command:8}: one run {seconds:4.1f} s; {killed + finished} rounds, killed mid-run {killed}, finished "
            f"first {finished}; rounds with a problem afterwards: {failures}; completed afterwards: "
            f"{'yes' if final else 'NO'}"
        )
    sys.exit(1 if any(failures or not final for *_, failures, final in summary) else 0)


if __name__ == "__main__":
    main()
