"""What a resident model buys: cold `query` against a warm searcher, and a server under load.

    python benchmarks/bench_serve.py [--model nt-tiny] [--clients 32] [--leak-queries 1000] [--workers 2]

On an nt-tiny store of the example genomes (or --model kmer:6), with 10 kb fragments (1 %
substitutions) of them as queries, one run prints:
- a cold `genome-index query` (a new process: imports, model load, one query) against the
  same query on a warm `Searcher` (medians), and their ratio;
- a `genome-index serve` process answering the same queries one at a time, then from
  `--clients` concurrent HTTP clients: queries/s of each and their ratio (micro-batching
  lets concurrent queries share the model's batches), and p50/p99 latency under that load;
- the server's resident memory before and after `--leak-queries` 2 kb queries;
- `serve --workers N` under the same concurrent load, and its ratio to the one process.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine

from genome_index.api import GenomeIndex
from genome_index.io.fasta import read_genome

ROOT = Path(__file__).resolve().parent.parent
BASES = np.frombuffer(b"ACGT", np.uint8)


def fragments(count: int, length: int, rng: np.random.Generator) -> list[str]:
    """FASTA texts of fragments of the example genomes with 1 % substitutions."""
    genomes = [read_genome(p) for p in sorted((ROOT / "examples" / "genomes").glob("*.fna.gz"))]
    out = []
    for i in range(count):
        record = genomes[i % len(genomes)].records[0].sequence
        start = int(rng.integers(0, len(record) - length))
        piece = np.frombuffer(record[start : start + length], np.uint8).copy()
        where = np.flatnonzero(rng.random(length) < 0.01)
        piece[where] = BASES[(np.searchsorted(BASES, piece[where]) + 1) % 4]
        out.append(f">fragment_{i}\n{piece.tobytes().decode()}\n")
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="nt-tiny")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--queries", type=int, default=640, help="queries in the throughput runs")
    parser.add_argument("--leak-queries", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2, help="then `serve --workers N` under the same load")
    args = parser.parse_args()
    print(f"machine: {describe_machine()}")
    rng = np.random.default_rng(3)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        index = GenomeIndex(folder / "store")
        index.build([ROOT / "examples" / "genomes"], args.model)
        queries = fragments(args.queries, 10_000, rng)
        first = folder / "query.fa"
        first.write_text(queries[0])
        print(f"store: {index.info()['counts']['genomes']} genomes, {args.model}; queries: 10 kb fragments")

        cold = []
        for _ in range(3):
            started = time.perf_counter()
            command = [sys.executable, "-m", "genome_index.cli", "query", str(first), "-i", str(index.directory)]
            subprocess.run([*command, "-q"], check=True, capture_output=True)
            cold.append(time.perf_counter() - started)
        with index.searcher() as searcher:
            searcher.query(queries[0])
            warm = []
            for _ in range(10):
                started = time.perf_counter()
                searcher.query(queries[0])
                warm.append(time.perf_counter() - started)
        print(
            f"one query: cold `genome-index query` {np.median(cold):.2f} s, warm searcher {np.median(warm):.3f} s: "
            f"{np.median(cold) / np.median(warm):.0f}x"
        )

        with Server(index.directory, args.clients) as server:
            server.ask(queries[0])
            started = time.perf_counter()
            for text in queries:
                server.ask(text)
            serial = len(queries) / (time.perf_counter() - started)
            concurrent, latencies = server.under_load(queries)
            print(
                f"server: one at a time {serial:.2f} queries/s, {args.clients} concurrent clients {concurrent:.2f} "
                f"queries/s: {concurrent / serial:.2f}x; under load p50 {np.median(latencies):.2f} s, "
                f"p99 {np.percentile(latencies, 99):.2f} s"
            )
            small = fragments(50, 2_000, rng)
            for text in small:
                server.ask(text)
            before = rss_mb(server.process.pid)
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(server.ask, [small[i % len(small)] for i in range(args.leak_queries)]))
            after = rss_mb(server.process.pid)
            print(f"server memory: {before:.0f} MB before {args.leak_queries} queries, {after:.0f} MB after")
        if args.workers > 1:
            with Server(index.directory, args.clients, args.workers) as server:
                server.ask(queries[0])
                spread, latencies = server.under_load(queries)
            print(
                f"serve --workers {args.workers}: {args.clients} concurrent clients {spread:.2f} queries/s: "
                f"{spread / concurrent:.2f}x one process; under load p50 {np.median(latencies):.2f} s, "
                f"p99 {np.percentile(latencies, 99):.2f} s"
            )


class Server:
    """`genome-index serve` in its own process (`workers` of them), with `clients` kept-alive connections."""

    def __init__(self, store: Path, clients: int, workers: int = 1) -> None:
        port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "genome_index.cli", "serve", "-i", str(store), "--port", str(port),
             "--workers", str(workers)],
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.url, self.clients = f"http://127.0.0.1:{port}", clients
        connections = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        self.client = httpx.Client(timeout=300, limits=connections)  # each client keeps its connection open

    def __enter__(self) -> Server:
        for _ in range(600):
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)

    def ask(self, text: str) -> float:
        started = time.perf_counter()
        response = self.client.post(f"{self.url}/query?k=5", content=text)
        response.raise_for_status()
        return time.perf_counter() - started

    def under_load(self, queries: list[str]) -> tuple[float, list[float]]:
        """Queries/s with every query asked by `clients` concurrent clients, and their latencies."""
        started = time.perf_counter()
        with ThreadPoolExecutor(self.clients) as pool:
            latencies = list(pool.map(self.ask, queries))
        return len(queries) / (time.perf_counter() - started), latencies


if __name__ == "__main__":
    main()
