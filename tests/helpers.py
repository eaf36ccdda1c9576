"""Helpers the tests share: paths, writing FASTA and reads, copying a store, one-line errors, a free port."""

from __future__ import annotations

import gzip
import shutil
import signal
import socket
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
STAPH = ROOT.parent / "shared" / "data" / "staph"


def copy_store(built: Path, tmp_path: Path) -> Path:
    """A private copy of a store built once per module, for a test that changes it."""
    copy = tmp_path / "index"
    shutil.copytree(built, copy)
    return copy


def vectors_in_table(store: Path) -> Path:
    """The store as a version before vector files would have left it: its chunk vectors in the
    `chunk_vectors` table of metadata.duckdb, no `vector_files`, no `vectors/` folder."""
    import duckdb

    from genome_index.store.vector_view import register

    con = duckdb.connect(str(store / "metadata.duckdb"))
    register(con, store)
    settings = dict(con.execute("SELECT key, value FROM settings").fetchall())
    kind = "BLOB" if settings["vector_dtype"] == "float16" else f"FLOAT[{settings['dim']}]"
    con.execute("CREATE TABLE moved AS SELECT chunk_id, vector FROM chunk_vectors ORDER BY chunk_id")
    con.unregister("chunk_vectors")
    con.execute(f"CREATE TABLE chunk_vectors (chunk_id BIGINT PRIMARY KEY, vector {kind} NOT NULL)")
    con.execute("INSERT INTO chunk_vectors SELECT * FROM moved")
    con.execute("DROP TABLE moved")
    con.execute("DROP TABLE vector_files")
    con.close()
    shutil.rmtree(store / "vectors")
    return store


def make_old(store: Path) -> Path:
    """The store as a version before sequences were kept would have left it."""
    import duckdb

    con = duckdb.connect(str(store / "metadata.duckdb"))
    con.execute("DROP MACRO subsequence")
    con.execute("DROP TABLE sequences")
    con.close()
    return store


def write_fasta(path: Path, records: list[tuple[str, str]], gz: bool = False, eol: str = "\n") -> Path:
    """Write records as FASTA (optionally gzip, optionally CRLF) and return the path."""
    text = "".join(f">{header}{eol}{sequence}{eol}" for header, sequence in records)
    data = text.encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def one_line_error(result, *fragments: str) -> None:
    """A CliRunner result that failed with exit 1 and one `genome-index: error:` line holding each fragment."""
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("genome-index: error:")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output


def interruptible() -> None:
    """For a child process (`preexec_fn`): Ctrl-C (SIGINT) at its default, as from a terminal.
    A test run started in the background (`cmd &`) has SIGINT ignored, and its children inherit
    that, so they would never see the Ctrl-C the tests send them."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_bytes(pid: int) -> int:
    """Resident memory of one process (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, ended but not yet reaped, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def children_of(pid: int) -> list[int]:
    """Every process below `pid` (children, their children...), from /proc."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class PeakMemory:
    """Samples, every 20 ms in a thread, the resident memory of a process alone and with every
    process below it; `.process` and `.tree` are the peaks (in bytes) while the block runs."""

    def __init__(self, pid: int) -> None:
        import threading

        self.pid, self.process, self.tree = pid, 0, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakMemory:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    def _run(self) -> None:
        while not self.stop.wait(0.02):
            own = rss_bytes(self.pid)
            self.process = max(self.process, own)
            self.tree = max(self.tree, own + sum(rss_bytes(child) for child in children_of(self.pid)))


_BASES = np.frombuffer(b"ACGT", dtype=np.uint8)
_COMPLEMENT = np.zeros(256, dtype=np.uint8)
_COMPLEMENT[np.frombuffer(b"ACGTN", dtype=np.uint8)] = np.frombuffer(b"TGCAN", dtype=np.uint8)


def simulate_reads(
    records: list[bytes], count: int, rng: np.random.Generator, length: int = 150, error: float = 0.01
) -> np.ndarray:
    """`count` reads (rows of a uint8 array) from a genome's records (ACGTN), placed uniformly,
    each base wrong with probability `error` (another base), every other read reverse-complemented:
    a small short-read simulator for gather's tests and benchmark."""
    usable = [np.frombuffer(r, dtype=np.uint8) for r in records if len(r) > length]
    sizes = np.array([len(r) - length for r in usable], dtype=float)
    per_record = rng.multinomial(count, sizes / sizes.sum())
    reads = []
    for record, n in zip(usable, per_record, strict=True):
        starts = rng.integers(0, len(record) - length, n)
        reads.append(record[starts[:, None] + np.arange(length)])
    out = np.concatenate(reads)[rng.permutation(count)]
    wrong = rng.random(out.shape) < error
    out[wrong] = _BASES[(np.searchsorted(_BASES, out[wrong]) + rng.integers(1, 4, wrong.sum())) % 4]
    out[1::2] = _COMPLEMENT[out[1::2, ::-1]]
    return out


def write_fastq(path: Path, reads: np.ndarray, prefix: str = "read", gz: bool = False) -> Path:
    """Reads (rows of bases) as FASTQ with constant qualities, optionally gzip."""
    quality = b"I" * reads.shape[1]
    data = b"".join(b"@%s%d\n%s\n+\n%s\n" % (prefix.encode(), i, row.tobytes(), quality) for i, row in enumerate(reads))
    path.write_bytes(gzip.compress(data, compresslevel=1) if gz else data)
    return path
