"""Run `genome-index build ...` and signal itself at a chosen point: the crash and Ctrl-C tests' driver.

    python tests/kill_helper.py SIGNAL PHASE N build ARGS...

SIGNAL is KILL (the process dies on the spot) or INT (Ctrl-C). PHASE is where, on the N-th
time the process gets there:
  validate  in the input check, before it reads an input file
  read      in the reader, before it reads a genome to embed
  embed     inside the encoder (transformer or kmer:K), between two batches
  commit    inside a genome's DuckDB transaction, after its rows are inserted, before COMMIT
  faiss     after a file is written in full, before it is renamed into place (the N-th rename:
            the first creates metadata.duckdb, later ones replace FAISS files)
  committed after the N-th transaction of genomes is committed, each genome committed alone
            (so N genomes are in the store and the others are not)
With INT, the moment of the signal (time.monotonic) is printed to stderr as `signalled T`, so
the test can time how long the build takes to stop.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from genome_index.build import intake, writer
from genome_index.cli import main
from genome_index.embedding import pipeline
from genome_index.embedding.backends import hf, kmer
from genome_index.store.writes import StoreWriter

SIGNAL = {"KILL": signal.SIGKILL, "INT": signal.SIGINT}[sys.argv[1]]
PHASE, WHEN = sys.argv[2], int(sys.argv[3])
calls = {"n": 0}


def maybe_signal() -> None:
    calls["n"] += 1
    if calls["n"] == WHEN:
        print(f"signalled {time.monotonic()}", file=sys.stderr, flush=True)
        os.kill(os.getpid(), SIGNAL)
        if SIGNAL == signal.SIGINT:
            time.sleep(0.2)  # where the signal arrives in another thread, let the main thread take it


def signal_on_nth(func):  # type: ignore[no-untyped-def]
    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        maybe_signal()
        return func(*args, **kwargs)

    return wrapper


if PHASE == "validate":
    intake.summarise = signal_on_nth(intake.summarise)
elif PHASE == "read":
    pipeline.read_genome = signal_on_nth(pipeline.read_genome)
elif PHASE == "embed":
    for encoder in (hf.TransformerEncoder, kmer.KmerEncoder):
        encoder.forward = signal_on_nth(encoder.forward)
elif PHASE == "commit":
    StoreWriter.set_labels = signal_on_nth(StoreWriter.set_labels)
elif PHASE == "faiss":
    real_replace = os.replace

    def replace_then_maybe_signal(src, dst):  # type: ignore[no-untyped-def]
        maybe_signal()
        real_replace(src, dst)

    os.replace = replace_then_maybe_signal
elif PHASE == "committed":
    writer.COMMIT_GROUP_BYTES = 1
    real_add = StoreWriter.add_genomes

    def add_then_maybe_signal(*args, **kwargs):  # type: ignore[no-untyped-def]
        added = real_add(*args, **kwargs)
        maybe_signal()
        return added

    StoreWriter.add_genomes = add_then_maybe_signal
else:
    raise SystemExit(f"unknown phase {PHASE}")

sys.argv = ["genome-index", *sys.argv[4:]]
main()
