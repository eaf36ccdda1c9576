"""genome-index serve: the HTTP API, its guards, and a server that survives what clients do."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import httpx
import numpy as np
import pytest
import threadpoolctl
import uvicorn
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from genome_index import progress
from genome_index.api import GenomeIndex
from genome_index.cli import app as cli
from genome_index.errors import GenomeIndexError
from genome_index.io.fasta import read_genome
from genome_index.server.app import Serving, bind, create_app
from genome_index.server.auth import check_host
from genome_index.server.limits import Limits
from genome_index.settings import RunOptions
from tests.helpers import EXAMPLES, PeakMemory, alive, children_of, copy_store, free_port, rss_bytes, simulate_reads

pytestmark = pytest.mark.slow  # live servers under load: seconds each

TOKEN = "a-test-token-of-some-length"
FOREVER = "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t) SELECT count(*) FROM t"  # never ends
QUERY = (EXAMPLES / "query.fa").read_text()  # 20 kb of DSM20231
QUICK = QUERY[: QUERY.index("\n") + 1 + 3_000]  # its first 3 kb or so: a query that proves the server answers


@pytest.fixture(scope="module")
def served(nt_tiny_store: Path, tmp_path_factory) -> Iterator[tuple[GenomeIndex, TestClient]]:
    index = GenomeIndex.open(copy_store(nt_tiny_store, tmp_path_factory.mktemp("serve")))
    index.store.reader_wait = 1.0
    with index.searcher(micro_batch=True) as searcher:
        yield index, TestClient(create_app(index, searcher, Limits(max_query_bytes=1_000_000, sql_timeout=1.0)))


@pytest.fixture(scope="module")
def client(served) -> TestClient:
    return served[1]


def test_a_fasta_body_and_a_json_body_give_the_rows_of_query_json(client: TestClient, served) -> None:
    index = served[0]
    plain = client.post("/query?k=2", content=QUERY)
    as_json = client.post("/query", json={"fasta": QUERY, "k": 2})
    bases = QUERY.split("\n", 1)[1].replace("\n", "")
    records = client.post("/query", json={"records": [{"name": "q", "sequence": bases}], "k": 2})
    assert plain.status_code == as_json.status_code == records.status_code == 200
    expected = [hit.row(alignments=True) for hit in index.query(EXAMPLES / "query.fa", k_options(2))]
    assert plain.json() == as_json.json() == json.loads(json.dumps(expected))
    assert [r["name"] for r in records.json()] == [r["name"] for r in plain.json()]
    assert plain.json()[0]["name"] == "DSM20231" and plain.json()[0]["alignments"][0]["target_start"] == 50_001


def test_a_fastq_body_is_reads_not_protein(client: TestClient) -> None:
    """Reads sent as FASTQ text are a query (they were once called protein): the same genome
    first as for the FASTA they come from; a read whose qualities do not match is one line."""
    bases = QUERY.split("\n", 1)[1].replace("\n", "")
    reads = "".join(f"@r{i}\n{bases[i * 500 : i * 500 + 150]}\n+\n{'F' * 150}\n" for i in range(30))
    found = client.post("/query?k=1", content=reads)
    assert found.status_code == 200, found.text
    assert found.json()[0]["name"] == "DSM20231"
    bad = client.post("/query?k=1", content="@r1\nACGT\n+\nFF\n")
    assert bad.status_code == 400 and "query:4: a read with a different number of quality" in bad.json()["detail"]


def test_post_gather_answers_as_gather_json(client: TestClient, served) -> None:
    """A FASTQ body: the sample's genomes and summary, as the library gives them; JSON and bad
    reads are refused in one line."""
    rng = np.random.default_rng(1)
    records = [r.sequence for r in read_genome(EXAMPLES / "genomes" / "DSM20231.fna.gz").records]
    reads = simulate_reads(records, 2000, rng)
    body = b"".join(b"@r%d\n%s\n+\n%s\n" % (i, row.tobytes(), b"F" * 150) for i, row in enumerate(reads))
    found = client.post("/gather", content=body)
    assert found.status_code == 200, found.text
    expected = served[0].gather(body)
    assert found.json() == json.loads(
        json.dumps({"summary": expected.summary(), "genomes": [r.row() for r in expected.rows]})
    )
    assert [g["name"] for g in found.json()["genomes"]] == ["DSM20231"] and found.json()["summary"]["records"] == 2000
    sketch_only = client.post("/gather?verify=false", content=body).json()["genomes"][0]
    assert sketch_only["abundance"] is None and sketch_only["f_genome"] > 0.5
    assert client.post("/gather", json={"fasta": "ACGT"}).status_code == 415
    bad = client.post("/gather", content=b"@r1\nACGT\n+\nFF\n")
    assert bad.status_code == 400 and "sample:4:" in bad.json()["detail"]


def test_connections_send_without_waiting_for_acknowledgements() -> None:
    """Every accepted connection has TCP_NODELAY (without it each kept-alive request took 40 ms
    more: the body waited for the client's delayed ACK of the headers)."""
    listening = bind("127.0.0.1", 0)
    with listening, socket.create_connection(listening.getsockname()):
        accepted, _ = listening.accept()
        with accepted:
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def k_options(k: int):
    from genome_index.settings import QueryOptions

    return QueryOptions(k=k)


def test_store_pages(client: TestClient, example_genomes) -> None:
    assert client.get("/health").json() == {"status": "ok", "genomes": 4}
    info = client.get("/info").json()
    assert info["counts"]["genomes"] == 4 and info["settings"]["model"] == "nt-tiny" and info["compare"] == []
    page = client.get("/genomes", params={"offset": 1, "limit": 2}).json()
    assert page["total"] == 4 and [g["id"] for g in page["genomes"]] == [2, 3]
    one = client.get("/genomes/3").json()
    assert one["name"] == read_genome(example_genomes[2]).name and len(one["records"]) == 3
    assert client.get("/genomes/99").status_code == 404
    assert "genome-index" in client.get("/").text and client.get("/docs").status_code == 200


@pytest.mark.parametrize(
    "request_, status, detail",
    [
        (("post", "/query", {"content": b">p\nMKVLLEFIPQRSTWYMKVLLEFIPQ\n"}), 400, "looks like protein"),
        (("post", "/query", {"content": b"{not json", "headers": {"content-type": "application/json"}}), 422, "JSON"),
        (("post", "/query", {"json": {"sequence": "ACGT", "k": 0}}), 422, "-k must be at least 1"),
        (("post", "/query", {"json": {"sequence": "ACGT", "k": 5000}}), 422, "k is at most 1000"),
        (("post", "/query", {"json": {"sequence": "ACGT", "mode": "fast"}}), 422, "unknown mode 'fast'"),
        (("post", "/query", {"json": {"sequence": "ACGT", "window_overlap": 2}}), 422, "--window-overlap must be"),
        (("post", "/query", {"json": {"sequence": "A", "fasta": ">a\nA"}}), 422, "exactly one of"),
        (("post", "/query", {"json": {"sequence": "ACGT", "stray": 1}}), 422, "stray: Extra inputs"),
        (("post", "/query?k=many", {"content": QUERY}), 422, "k: Input should be a valid integer"),
        (("post", "/query", {"content": b"\x1f\x8b\x08\x00"}), 400, "not UTF-8"),
        (("post", "/query", {"content": b"A" * 1_000_001}), 413, "over 1,000,000 bytes"),
        (("post", "/sql", {"json": {"statement": "DROP TABLE genomes"}}), 400, "read-only"),
        (("post", "/sql", {"json": {"statement": FOREVER}}), 400, "stopped after 1"),
        (("post", "/sql", {"json": {}}), 422, "statement: Field required"),
        (("get", "/genomes?limit=0", {}), 422, "limit: Input should be greater than or equal to 1"),
        (("get", "/genomes?offset=1e20", {}), 422, "offset: Input should be a valid integer"),
        (("get", f"/genomes?offset={10**20}", {}), 422, "offset: Input should be less than or equal to"),
        (("get", "/genomes?offset=-1", {}), 422, "offset: Input should be greater than or equal to 0"),
        (("post", "/query?fasta=x", {"content": QUERY}), 422, "fasta: send the sequence as the body"),
        (("post", "/query", {"json": {"sequence": "ACGT\n>x\nACGT"}}), 422, "sequence: String should match"),
        (("post", "/query", {"json": {"sequence": "ACGT", "name": "two\nlines"}}), 422, "name: String should match"),
        (("post", "/query", {"json": {"records": [{"name": "a\rb", "sequence": "ACGT"}]}}), 422, "records.0.name"),
        (("get", "/compare/heatmap.png", {}), 404, "no compare figure"),
        (("get", "/genomes/1/fasta?record=nope", {}), 404, "has no record 'nope'"),
        (("get", "/genomes/1/fasta?start=5&end=9", {}), 422, "give record, then start and end together"),
        (("get", "/genomes/99/fasta", {}), 404, "no genome 99"),
    ],
)
def test_a_bad_request_gets_its_4xx_and_the_next_query_is_answered(client: TestClient, request_, status, detail):
    method, path, arguments = request_
    response = getattr(client, method)(path, **arguments)
    assert response.status_code == status, response.text
    assert detail in response.json()["detail"] and "\n" not in response.json()["detail"]
    assert client.post("/query?k=1&align=false", content=QUICK).json()[0]["name"] == "DSM20231"


def test_sql_comes_back_capped(served, nt_tiny_store: Path) -> None:
    index, _ = served
    with index.searcher() as searcher:
        capped = TestClient(create_app(index, searcher, Limits(sql_rows=3)))
        body = capped.post("/sql", json={"statement": "SELECT id FROM chunks ORDER BY id"}).json()
    assert body["columns"] == ["id"] and body["rows"] == [[1], [2], [3]] and body["truncated"] is True


def test_a_token_is_needed_when_one_is_set(served) -> None:
    index, _ = served
    with index.searcher() as searcher:
        guarded = TestClient(create_app(index, searcher, token=TOKEN))
        assert guarded.get("/health").status_code == 401
        assert guarded.get("/health", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert guarded.get("/health", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert guarded.get("/").status_code == 200  # the page itself asks for the token


@pytest.mark.parametrize(
    "host, token, insecure, refused",
    [("127.0.0.1", None, False, False), ("0.0.0.0", None, False, True), ("0.0.0.0", TOKEN, False, False),
     ("192.168.1.5", None, True, False)],
)  # fmt: skip
def test_listening_beyond_this_machine_needs_a_token(host: str, token, insecure: bool, refused: bool) -> None:
    if refused:
        with pytest.raises(GenomeIndexError, match="--token-file"):
            check_host(host, token, insecure)
    else:
        check_host(host, token, insecure)


def test_a_port_in_use_is_one_line_before_the_model_loads(nt_tiny_store: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        started = time.monotonic()
        result = CliRunner().invoke(cli, ["serve", "-i", str(nt_tiny_store), "--port", str(port)])
    assert result.exit_code == 1 and result.stderr.count("\n") == 1 and "serving" not in result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and "--port" in result.stderr
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "--warm"])
def test_serve_warm_builds_the_minimap2_indexes_before_the_first_request(
    nt_tiny_store: Path, monkeypatch, warm: bool
) -> None:
    """With --warm, the server has read what queries read and indexed every stored genome with
    minimap2 (the four examples: under the 64 kept) when it starts listening, and said so on
    stderr; without it, the first queries do that. Either way numpy's BLAS runs one thread."""
    seen = {}

    def listen(server: uvicorn.Server, sockets: list[socket.socket]) -> None:  # instead of serving until Ctrl-C
        searcher = server.config.app.state.served.searcher
        seen.update(indexed=sorted(searcher.aligners.genomes()), resident=searcher._resident is not None)
        seen["blas"] = {pool["num_threads"] for pool in threadpoolctl.threadpool_info() if pool["user_api"] == "blas"}
        for sock in sockets:
            sock.close()

    monkeypatch.setattr(uvicorn.Server, "run", listen)
    monkeypatch.setattr(progress, "LOG_EVERY", 0.0)  # a log line at every report
    args = ["serve", "-i", str(nt_tiny_store), "--port", str(free_port()), *(["--warm"] if warm else [])]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert seen.pop("blas") == {1}  # while it serves: a second thread only spins (see serve)
    assert seen == ({"indexed": [1, 2, 3, 4], "resident": True} if warm else {"indexed": [], "resident": False})
    assert ("building minimap2 indexes: 4 of 4 genomes" in result.stderr) == warm


def test_the_cli_refuses_an_open_host_before_loading(tmp_path: Path, nt_tiny_store: Path) -> None:
    result = CliRunner().invoke(cli, ["serve", "-i", str(nt_tiny_store), "--host", "0.0.0.0"])
    assert result.exit_code == 1 and "--token-file" in result.stderr
    missing = CliRunner().invoke(cli, ["serve", "-i", str(nt_tiny_store), "--compare", str(tmp_path / "none")])
    assert missing.exit_code == 1 and "no such folder" in missing.stderr
    short = tmp_path / "token"
    short.write_text("abc")
    result = CliRunner().invoke(cli, ["serve", "-i", str(nt_tiny_store), "--token-file", str(short)])
    assert result.exit_code == 1 and "at least 16 characters" in result.stderr


class Live(NamedTuple):
    """The served URL, its index, and the queries the searcher has begun and finished."""

    url: str
    index: GenomeIndex
    begun: list[int]
    finished: list[int]


@pytest.fixture(scope="module")
def live(example_genomes, tmp_path_factory) -> Iterator[Live]:
    """A real uvicorn server in a thread, on a kmer:4 store of the examples (quick to query)."""
    index = GenomeIndex(tmp_path_factory.mktemp("live") / "index")
    index.build(example_genomes, "kmer:4")
    port = free_port()
    index.store.reader_wait = 1.0
    begun: list[int] = []
    finished: list[int] = []
    with index.searcher(micro_batch=True) as searcher:
        answer = searcher.query

        def counted(genome, options):  # records that the server really worked on a query
            begun.append(options.k)
            hits = answer(genome, options)
            finished.append(options.k)
            return hits

        searcher.query = counted
        config = uvicorn.Config(create_app(index, searcher), host="127.0.0.1", port=port, log_level="warning")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        yield Live(f"http://127.0.0.1:{port}", index, begun, finished)
        server.should_exit = True
        thread.join(timeout=10)


def test_200_concurrent_requests_are_all_answered(live) -> None:
    url = live.url
    fragment = QUERY.split("\n", 1)[1].replace("\n", "")[:2_000]

    def ask(i: int) -> tuple[int, str]:  # one in ten a real query, the others refused
        body = {"sequence": fragment, "k": 1, "align": False} if i % 10 == 0 else {"sequence": "ACGT", "k": 0}
        response = httpx.post(f"{url}/query", json=body, timeout=120)
        return response.status_code, response.json()[0]["name"] if response.status_code == 200 else ""

    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(ask, range(200)))
    assert results[0::10] == [(200, "DSM20231")] * 20
    assert {status for i, (status, _) in enumerate(results) if i % 10} == {422}


def test_a_client_that_leaves_mid_query_does_not_hurt_the_server(live) -> None:
    url = live.url
    before = len(live.finished)
    with pytest.raises(httpx.TimeoutException):
        httpx.post(f"{url}/query?k=4&mode=chunks", content=QUERY * 20, timeout=0.05)
    deadline = time.monotonic() + 60
    while len(live.finished) == before and time.monotonic() < deadline:  # the server did the work ...
        time.sleep(0.05)
    assert live.begun[before:] == live.finished[before:] == [4]  # the k=4 query, begun and finished
    assert httpx.post(f"{url}/query?k=1", content=QUERY, timeout=60).json()[0]["name"] == "DSM20231"  # ... and goes on


def test_a_huge_body_is_refused_without_being_read(live) -> None:
    url = live.url

    def gigabyte() -> Iterator[bytes]:  # streamed, no length given: the server stops it at the limit
        block = b"ACGT" * 262_144
        for _ in range(1024):
            yield block

    started = time.monotonic()
    response = httpx.post(f"{url}/query", content=gigabyte(), timeout=60)
    assert response.status_code == 413 and time.monotonic() - started < 30
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:  # says 1 GB, sends nothing more
        sock.sendall(f"POST /query HTTP/1.1\r\nHost: x\r\nContent-Length: {1 << 30}\r\n\r\nACGT".encode())
        assert sock.recv(200).startswith(b"HTTP/1.1 413")
    assert httpx.post(f"{url}/query?k=1", content=QUERY, timeout=60).json()[0]["name"] == "DSM20231"


def test_genomes_built_while_serving_are_found_without_a_restart(live, tmp_path: Path) -> None:
    url, index = live.url, live.index
    novel = tmp_path / "novel.fa"
    sequence = "".join(random.Random(5).choices("ACGT", k=30_000))  # random: minimap2 skips repeats
    novel.write_text(f">novel\n{sequence}\n")
    before = httpx.post(f"{url}/query?k=10", content=novel.read_text(), timeout=60).json()
    assert "novel" not in {row["name"] for row in before}
    index.build([novel], "kmer:4")
    after = httpx.post(f"{url}/query?k=10", content=novel.read_text(), timeout=60).json()
    assert after[0]["name"] == "novel" and after[0]["identity"] == 1.0
    assert httpx.get(f"{url}/health", timeout=10).json()["genomes"] == 5


def test_a_store_held_by_another_process_gets_503_and_the_server_recovers(served) -> None:
    """What reads the store waits 1 s for a turn, then 503; a query the server can answer from
    what it keeps in memory (the store unchanged since its last query) is answered meanwhile."""
    index, client = served
    warm = client.post("/query?k=1", content=QUERY).json()
    holder = subprocess.Popen(  # as a build's commit session holds it, but for longer than a request waits
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('held', flush=True); "
         "time.sleep(30)", str(index.store.db_path)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        assert client.post("/query?k=1", content=QUERY).json() == warm  # from memory: the store is unchanged
        busy = client.get("/genomes")
        assert busy.status_code == 503 and "another process has held the store" in busy.json()["detail"]
    finally:
        holder.kill()
        holder.wait()
    assert client.post("/query?k=1", content=QUERY).json()[0]["name"] == "DSM20231"


def answering(
    url: str, running: Callable[[], bool] = lambda: True, ready: Callable[[], bool] = lambda: True
) -> bool:
    """Whether the server at `url` answers /health (and `ready()` holds) within 120 s, asked
    while `running()` holds."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and running():
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200 and ready():
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    return False


@pytest.fixture(scope="module")
def server_process(example_genomes, tmp_path_factory) -> Iterator[tuple[str, subprocess.Popen]]:
    """`genome-index serve` as users run it, in its own process (so its memory can be read), on a
    kmer:4 store, with 5 MB query bodies, 200 MB SQL statements and a 2 s wait for a turn."""
    index = tmp_path_factory.mktemp("hostile") / "index"
    GenomeIndex(index).build(example_genomes, "kmer:4")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "genome_index.cli", "serve", "-i", str(index), "--port", str(port),
         "--max-query-bytes", "5000000", "--query-bytes", "5000000", "--sql-timeout", "2",
         "--sql-memory-limit", "200MB", "--queue-wait", "2"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    answering(url)
    yield url, server
    server.terminate()
    server.wait(timeout=30)


def test_the_server_stays_up_and_bounded_whatever_it_is_sent(server_process) -> None:
    """Each request of the adversarial run, with the server's memory (and its SQL workers')
    sampled throughout: it stays within its resting size + 1 GB (+ 712 MB for each of the two
    statements that may run at once, each capped at --sql-memory-limit + 512 MB), and answers."""
    url, server = server_process
    client = httpx.Client(base_url=url, timeout=120)
    resting = rss_bytes(server.pid)
    bases = QUERY.split("\n", 1)[1].replace("\n", "")
    with PeakMemory(server.pid) as peak:
        injected = client.post("/query", json={"sequence": "ACGT\n>x\n" * 1_100_000})  # 9 MB of would-be records
        assert injected.status_code == 413 or "sequence" in injected.json()["detail"]
        many = client.post("/query", json={"records": [{"name": f"r{i}", "sequence": "ACGT"} for i in range(20_001)]})
        assert many.status_code == 422 and "at most 10,000 records" in many.json()["detail"]
        rows = client.post("/sql", json={"statement": "SELECT range, range + 1 FROM range(120000000)"}).json()
        assert len(rows["rows"]) == 10_000 and rows["truncated"] is True
        started = time.monotonic()
        unions = client.post("/sql", json={"statement": "SELECT 1" + " UNION ALL SELECT 1" * 14_000})
        assert unions.status_code == 400 and time.monotonic() - started < 8, unions.text
        assert "out of memory" in unions.json()["detail"] or "stopped after 2 s" in unions.json()["detail"]
        big = ">big\n" + "".join(random.Random(1).choices("ACGT", k=4_900_000))
        with ThreadPoolExecutor(15) as pool:  # fifteen bodies at the size limit, at once
            answers = list(pool.map(lambda _: client.post("/query?k=1&align=false", content=big), range(15)))
        assert {a.status_code for a in answers} <= {200, 503} and any(a.status_code == 200 for a in answers)
        assert all(a.headers.get("retry-after") for a in answers if a.status_code == 503)
        with ThreadPoolExecutor(64) as pool:  # sixty statements that never end, and the pages meanwhile
            slow = [pool.submit(client.post, "/sql", json={"statement": FOREVER}) for _ in range(60)]
            time.sleep(0.5)
            for _ in range(3):
                asked = time.monotonic()
                assert client.get("/health").status_code == 200 and time.monotonic() - asked < 1.0
            found = client.post("/query", json={"sequence": bases, "k": 1})
            assert found.status_code == 200 and found.json()[0]["name"] == "DSM20231"
            statuses = {future.result().status_code for future in slow}
        assert statuses <= {400, 503} and 503 in statuses
    assert client.get("/health").json()["status"] == "ok"
    assert peak.process - resting < 1 << 30, (resting, peak.process)
    assert peak.tree - resting < (1 << 30) + 2 * (712 << 20), (resting, peak.tree)


def start_workers(store: Path, workers: int = 2) -> tuple[str, subprocess.Popen]:
    """`genome-index serve --workers N` in its own process, answering."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "genome_index.cli", "serve", "-i", str(store), "--port", str(port),
         "--workers", str(workers)],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    if answering(url, lambda: server.poll() is None, lambda: len(children_of(server.pid)) == workers):
        return url, server
    server.kill()
    raise AssertionError(f"serve --workers {workers} did not answer: {server.stderr.read() if server.stderr else ''}")


@pytest.fixture(scope="module")
def kmer_examples(example_genomes, tmp_path_factory) -> GenomeIndex:
    index = GenomeIndex(tmp_path_factory.mktemp("workers") / "index")
    index.build(example_genomes, "kmer:4")
    return index


def test_workers_answer_on_one_port_and_stop_together(kmer_examples: GenomeIndex) -> None:
    """`serve --workers 2`: two processes answer on the one port, each query as one searcher
    answers it; SIGTERM (as Ctrl-C) stops the server and both workers, with exit status 0."""
    url, server = start_workers(kmer_examples.directory)
    workers = children_of(server.pid)
    expected = [hit.row(alignments=True) for hit in kmer_examples.query(EXAMPLES / "query.fa", k_options(2))]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: httpx.post(f"{url}/query?k=2", content=QUERY, timeout=120), range(16)))
    assert {response.status_code for response in answers} == {200}
    assert all(response.json() == json.loads(json.dumps(expected)) for response in answers)
    server.terminate()
    assert server.wait(timeout=60) == 0
    assert not any(alive(pid) for pid in workers)
    assert "starting 2 workers" in server.stderr.read()


@pytest.mark.parametrize("killed", ["a worker", "the parent"])
def test_a_killed_worker_stops_the_server_and_a_killed_parent_its_workers(kmer_examples: GenomeIndex, killed) -> None:
    """A worker killed outright: the parent stops the other and ends with one line and status 1.
    The parent killed outright (no chance to stop them): each worker sees it gone and stops."""
    _, server = start_workers(kmer_examples.directory)
    workers = children_of(server.pid)
    os.kill(workers[0] if killed == "a worker" else server.pid, signal.SIGKILL)
    code = server.wait(timeout=60)
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in workers)
    if killed == "a worker":
        last = server.stderr.read().strip().splitlines()[-1]
        assert code == 1 and "was killed by signal 9; the server stopped" in last, last


def test_serve_with_workers_runs_from_a_thread_of_a_program(kmer_examples: GenomeIndex) -> None:
    """`server.app.serve(..., workers=2)` called from a thread that is not the main one (where
    no signal handler may be set) serves, and a worker killed ends it with the one-line error."""
    from genome_index.server.app import serve

    port, ended = free_port(), []

    def run() -> None:
        try:
            serve(GenomeIndex.open(kmer_examples.directory), port=port, workers=2)
        except GenomeIndexError as exc:
            ended.append(str(exc))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert answering(f"http://127.0.0.1:{port}", thread.is_alive)
    workers = children_of(os.getpid())
    worker = next(pid for pid in workers if "genome_index.server.workers" in Path(f"/proc/{pid}/cmdline").read_text())
    os.kill(worker, signal.SIGKILL)
    thread.join(timeout=60)
    assert len(ended) == 1 and "was killed by signal 9; the server stopped" in ended[0], ended


def test_a_worker_is_sent_what_the_server_was_asked() -> None:
    """What `serve` passes each worker of --workers (JSON on its stdin) comes back whole."""
    serving = Serving(
        Limits(max_query_bytes=5_000, sql=3, queue_wait=1.5), TOKEN, Path("compare-out"),
        RunOptions(device="cpu", batch_tokens=4096), warm=True,
        grants={"trust_remote_code": True, "model_package": "some_package"},
    )  # fmt: skip
    assert Serving.from_json(serving.to_json()) == serving
    assert Serving.from_json(Serving().to_json()) == Serving()


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--workers", "0"], "--workers must be 1 or more"), (["--workers", "2", "--ray", "auto"], "without --ray")],
)
def test_workers_below_one_or_with_ray_are_one_line(kmer_examples: GenomeIndex, args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["serve", "-i", str(kmer_examples.directory), "--port", str(free_port()), *args])
    assert result.exit_code == 1 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def test_every_query_option_reaches_http_from_query_options_itself(client: TestClient) -> None:
    """The request body is built from QueryOptions' fields: center, frames and window_overlap too."""
    import dataclasses

    from genome_index.server.schemas import QueryBody
    from genome_index.settings import QueryOptions

    assert {f.name for f in dataclasses.fields(QueryOptions)} <= set(QueryBody.model_fields)
    bases = QUERY.split("\n", 1)[1].replace("\n", "")
    body = {"sequence": bases, "k": 1, "center": False, "frames": False, "mode": "chunks", "align": False}
    found = client.post("/query", json=body).json()
    assert found[0]["name"] == "DSM20231" and found[0]["centred_score"] is None
