"""The process that runs one user SQL statement (started by `store.sql`; not imported).

It reads its job as JSON on stdin, caps its own data segment (RLIMIT_DATA: DuckDB then fails
with "Out of Memory" rather than the machine running out, planning included), opens the store
read-only with no file access, runs the one statement and writes its rows to stdout as an
Arrow IPC stream, batch by batch, stopping after `max_rows`. Errors go to stderr as one JSON
line. It imports only the standard library, DuckDB and pyarrow (and `vector_view` beside it,
for a store's vector files), so it starts in a fraction of a second; a spare (`--spare`,
started ahead by a process that runs one statement after another) imports them before it
waits for its job, so that its statement does not wait for them.
"""

from __future__ import annotations

import importlib
import json
import resource
import signal
import sys
import time
from pathlib import Path


def fail(kind: str, message: str) -> None:
    sys.stderr.write(json.dumps({"kind": kind, "message": message}) + "\n")
    sys.stderr.flush()
    sys.exit(3)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def connect(job: dict):
    import duckdb

    config = {
        "enable_external_access": False, "lock_configuration": True, "temp_directory": "",
        "memory_limit": job["memory_limit"], "threads": job["threads"],
    }  # fmt: skip
    deadline = time.monotonic() + job["wait"]
    while True:
        try:
            return duckdb.connect(job["database"], read_only=True, config=config)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                fail("damaged", first_line(exc))
            if time.monotonic() >= deadline:
                fail("busy", first_line(exc))
            time.sleep(0.05)
        except duckdb.Error as exc:
            fail("damaged", first_line(exc))


class RefusePandas:
    """pyarrow imports pandas where it is installed (pyarrow.dataset: 0.2 s and 40 MB) though
    nothing here needs it; refused, pyarrow works as where pandas is not installed."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name.partition(".")[0] == "pandas":
            raise ModuleNotFoundError(f"{name}: not used by the SQL worker", name=name)


def main() -> None:
    sys.meta_path.insert(0, RefusePandas())
    spare = "--spare" in sys.argv[1:]
    if spare:  # started ahead of its statement: it imports first, and a Ctrl-C meant for the
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # statements running now does not end it
        for module in ("duckdb", "pyarrow"):  # not pyarrow.dataset: it maps 1 GB, which the memory cap counts
            importlib.import_module(module)
    text = sys.stdin.read()
    if not text:  # a spare whose process ended, or no longer needs it
        return
    if spare:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    job = json.loads(text)
    limit = job["data_limit"]
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))  # what was imported counts against it either way
    import duckdb
    import pyarrow as pa

    con = connect(job)
    beside = "SELECT count(*) FROM information_schema.tables WHERE table_name = 'vector_files'"
    if "chunk_vectors" in job["statement"].lower() and con.execute(beside).fetchall()[0][0]:  # only then: importing
        from vector_view import register  # pyarrow.dataset: 0.05 s more; vector_view lies beside this file

        register(con, Path(job["database"]).parent)  # the store's chunk vectors, in files, as `chunk_vectors`
    try:
        statements = con.extract_statements(job["statement"])
    except duckdb.Error as exc:
        fail("sql", first_line(exc))
    if len(statements) != 1:
        fail("count", str(len(statements)))
    out = sys.stdout.buffer
    try:
        relation = con.sql(job["statement"])  # a query streams; anything else has run already
        if relation is None:  # a statement without a result (a transaction's BEGIN): no columns
            pa.ipc.new_stream(out, pa.schema([])).close()
            out.flush()
            return
        left = job["max_rows"]
        with relation.to_arrow_reader(batch_size=job["batch_rows"]) as reader:
            writer = pa.ipc.new_stream(out, reader.schema)
            for batch in reader:
                if left is not None and batch.num_rows >= left:
                    writer.write_batch(batch.slice(0, left))
                    break
                writer.write_batch(batch)
                if left is not None:
                    left -= batch.num_rows
            writer.close()
        out.flush()
    except BrokenPipeError:
        sys.exit(0)  # the reader stopped reading: it has what it wanted
    except MemoryError:
        fail("memory", "Out of Memory")
    except duckdb.Error as exc:
        fail("sql", first_line(exc))


if __name__ == "__main__":
    main()
