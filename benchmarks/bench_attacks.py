"""The adversarial requests of issue 24 against `genome-index serve` with its default limits:
what each costs in time and memory, and that the server answers afterwards.

    python benchmarks/bench_attacks.py [--model kmer:4]

A `genome-index serve` process (defaults: 50 MB bodies, 50 MB of bodies at once, two SQL
statements at once of 500 MB each, 10 s, a 5 s wait for a turn) on a store of the example
genomes. Its resident memory and that of its SQL workers are sampled every 20 ms; each line
gives one attack's answers, its wall time, and the peak of the server alone and with its
workers above its resting size.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _machine import describe_machine

from genome_index.api import GenomeIndex
from tests.helpers import PeakMemory, free_port, rss_bytes

ROOT = Path(__file__).resolve().parent.parent
FOREVER = "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t) SELECT count(*) FROM t"


def statuses(responses: list[httpx.Response]) -> str:
    counts: dict[int, int] = {}
    for response in responses:
        counts[response.status_code] = counts.get(response.status_code, 0) + 1
    return ", ".join(f"{n} x {status}" for status, n in sorted(counts.items()))


def probe(client: httpx.Client, done: threading.Event, times: list[float]) -> None:
    """/health, asked every 0.25 s until `done`: how long each answer took."""
    while not done.wait(0.25):
        asked = time.perf_counter()
        client.get("/health")
        times.append(time.perf_counter() - asked)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="kmer:4")
    args = parser.parse_args()
    print(f"machine: {describe_machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        index = Path(tmp) / "store"
        GenomeIndex(index).build([ROOT / "examples" / "genomes"], args.model)
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "genome_index.cli", "serve", "-i", str(index), "--port", str(port)],
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        client = httpx.Client(base_url=url, timeout=300)
        try:
            while True:
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            resting = rss_bytes(server.pid)
            print(f"server resting: {resting / 2**20:.0f} MiB ({args.model} store of the 4 examples)")
            big = ">big\n" + "".join(random.Random(1).choices("ACGT", k=49_000_000))
            records = [{"name": f"r{i}", "sequence": "ACGT"} for i in range(20_001)]
            attacks = {
                "9 MB JSON sequence of would-be records": lambda: [
                    client.post("/query", json={"sequence": "ACGT\n>x\n" * 1_100_000})
                ],
                "20,001 JSON records": lambda: [client.post("/query", json={"records": records})],
                "SQL: 120 M rows of two columns": lambda: [
                    client.post("/sql", json={"statement": "SELECT range, range + 1 FROM range(120000000)"})
                ],
                "SQL: 1 UNION ALL 14,000 times (0.3 MB)": lambda: [
                    client.post("/sql", json={"statement": "SELECT 1" + " UNION ALL SELECT 1" * 14_000})
                ],
                "fifteen 49 MB FASTA bodies at once": lambda: list(
                    ThreadPoolExecutor(15).map(lambda _: client.post("/query?k=1&align=false", content=big), range(15))
                ),
                "sixty never-ending SQL statements at once": lambda: list(
                    ThreadPoolExecutor(60).map(lambda _: client.post("/sql", json={"statement": FOREVER}), range(60))
                ),
            }
            for name, attack in attacks.items():
                health: list[float] = []
                done = threading.Event()
                prober = threading.Thread(target=probe, args=(client, done, health), daemon=True)
                with PeakMemory(server.pid) as peak:
                    started = time.perf_counter()
                    prober.start()
                    answers = attack()
                    seconds = time.perf_counter() - started
                    done.set()
                    prober.join()
                ok = client.get("/health").status_code == 200
                print(
                    f"{name}: {statuses(answers)} in {seconds:.1f} s; peak above resting: server "
                    f"{(peak.process - resting) / 2**20:.0f} MiB, with SQL workers {(peak.tree - resting) / 2**20:.0f} "
                    f"MiB; /health meanwhile at most {max(health, default=0):.2f} s; answers after: {ok}"
                )
        finally:
            server.terminate()
            server.wait(timeout=60)


if __name__ == "__main__":
    main()
