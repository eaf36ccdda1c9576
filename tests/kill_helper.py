"""Run `genome-index build ...` and SIGKILL itself at a chosen point: the crash tests' driver.

    python tests/kill_helper.py PHASE N build ARGS...

PHASE is where the process dies, on the N-th time it gets there:
  embed   inside the engine, between two batches of a genome
  commit  inside a genome's DuckDB transaction, after its rows are inserted, before COMMIT
  faiss   after a file is written in full, before it is renamed into place (the N-th rename:
          the first creates metadata.duckdb, later ones replace FAISS files)
"""

from __future__ import annotations

import os
import signal
import sys

from genome_index import embed, store
from genome_index.cli import main

PHASE, WHEN = sys.argv[1], int(sys.argv[2])
calls = {"n": 0}


def die_on_nth(func):  # type: ignore[no-untyped-def]
    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == WHEN:
            os.kill(os.getpid(), signal.SIGKILL)
        return func(*args, **kwargs)

    return wrapper


if PHASE == "embed":
    embed.Embedder._forward = die_on_nth(embed.Embedder._forward)
elif PHASE == "commit":
    store.Store.set_labels = staticmethod(die_on_nth(store.Store.set_labels))
elif PHASE == "faiss":
    real_replace = os.replace

    def replace_then_maybe_die(src, dst):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == WHEN:
            os.kill(os.getpid(), signal.SIGKILL)
        real_replace(src, dst)

    os.replace = replace_then_maybe_die
else:
    raise SystemExit(f"unknown phase {PHASE}")

sys.argv = ["genome-index", *sys.argv[3:]]
main()
