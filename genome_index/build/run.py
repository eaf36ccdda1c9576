"""The build: read, embed and commit genomes with the accelerator kept busy.

Three things run at once: a reader thread reads and tokenises the next genomes (in
`pipeline.embed_genomes`), the calling thread runs the model, and a writer thread commits
finished genomes to DuckDB and adds them to FAISS. A fourth thread reads every input once
up front to validate it; the writer commits nothing until that check has passed, so a bad
file anywhere in the inputs leaves the store unchanged. When the calling thread stops (an
error, Ctrl-C), every other thread stops with it: the validator after the file it is
reading, the reader without starting another, the writer after the transaction in hand.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from genome_index.embedding.embedder import Embedder
from genome_index.errors import GenomeIndexError
from genome_index.io.fasta import Genome, gc_fraction, summarise
from genome_index.io.labels import label_keys
from genome_index.progress import SILENT, Progress
from genome_index.io.sequences import pack
from genome_index.settings import StoreSettings
from genome_index.store import FAISS_FILES, Store, reads, writes
from genome_index.store.vectors import normalise, normalise_in_place
from genome_index.store.rows import NewGenome
from genome_index.embedding.tokenize import Chunk

log = logging.getLogger("genome_index")
FAISS_CHECKPOINT_SECONDS = 60.0  # FAISS files are brought up to date this often during a build ...
FAISS_WRITE_SHARE = 0.1  # ... or less often, so that writing them takes at most this share of the writer's time
COMMIT_SECONDS = 1.0  # the longest the writer holds the store file at a time (a group's commit may pass it)
COMMIT_GROUP_BYTES = 192 << 20  # genomes queued together are committed together, up to this much of vectors
READER_WINDOW = 0.1  # a pause between commit sessions, so a waiting reader gets the file
WRITER_QUEUE_BYTES = 1 << 30  # vectors waiting for the writer: several groups of genomes, so the model never waits


@dataclass
class BuildReport:
    """What a build did: genomes added, skipped as already stored, or duplicates of another file."""

    added: list[tuple[str, int, int]] = field(default_factory=list)  # name, genome id, chunks
    already: list[tuple[str, str]] = field(default_factory=list)  # file, stored genome name
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # file, name of the same sequence
    labels_ignored: list[str] = field(default_factory=list)  # duplicates whose labels were not applied
    labelled_ids: set[int] = field(default_factory=set)  # genomes whose labels this run set
    changed: list[str] = field(default_factory=list)  # inputs that changed after the check: not stored
    bases: int = 0
    seconds: float = 0.0

    @property
    def labelled(self) -> int:
        return len(self.labelled_ids)


class InputCheck:
    """Every input read once in a thread, keeping no sequence (`fasta.summarise`): `future` gives
    each file's SHA-256 once all are read, or fails on the first bad file (or file of reads,
    unless `reads_ok`); `sha_of` waits for one file's. Setting `stop` ends the check after the
    file in hand (the future then never completes)."""

    def __init__(self, files: list[Path], stop: threading.Event, reads_ok: bool = False) -> None:
        self.files, self.stop, self.reads_ok = files, stop, reads_ok
        self.hashes: dict[Path, str] = {}
        self.lengths: dict[Path, int] = {}
        self.future: Future = Future()
        self.changed = threading.Condition()
        threading.Thread(target=self._run, name="genome-index-validator", daemon=True).start()

    def _run(self) -> None:
        try:
            for path in self.files:
                if self.stop.is_set():
                    return
                summary = summarise(path, self.reads_ok)
                with self.changed:
                    self.hashes[path], self.lengths[path] = summary.sha256, summary.length
                    self.changed.notify_all()
        except BaseException as exc:
            self.future.set_exception(exc)
        else:
            self.future.set_result(dict(self.hashes))
        finally:
            with self.changed:
                self.changed.notify_all()

    def sha_of(self, path: Path) -> str:
        """The file's SHA-256 once the check has read it; the check's error if it failed first."""
        with self.changed:
            self.changed.wait_for(lambda: path in self.hashes or self.future.done() or self.stop.is_set())
            if path in self.hashes:
                return self.hashes[path]
        if self.future.done():
            self.future.result()  # raises the check's error
        raise GenomeIndexError("the build was stopped")


def check_label_names(label_rows: dict[str, dict[str, str]], files: list[Path], stored: set[str]) -> None:
    """Refuse labels that name neither an input nor a stored genome (name or file), or that name
    several inputs at once (the same file name in two folders). `files` are all the inputs, a
    shard's others included: one labels CSV serves every shard."""
    known: dict[str, list[Path]] = {}
    for path in files:
        for key in label_keys(Genome(path)):
            known.setdefault(key, []).append(path)
    unknown = sorted(set(label_rows) - set(known) - stored)
    if unknown:
        raise GenomeIndexError(
            f"labels name {len(unknown)} genome(s) neither in these inputs nor in the store, e.g. {unknown[0]!r}"
        )
    ambiguous = sorted(key for key in label_rows if len(set(known.get(key, []))) > 1)
    if ambiguous:
        paths = sorted(str(p) for p in set(known[ambiguous[0]]))
        raise GenomeIndexError(
            f"labels name {ambiguous[0]!r}, which fits {len(paths)} inputs ({', '.join(paths[:3])}): use their paths"
        )


def unique_names(files: list[Path], taken: set[str]) -> dict[Path, str]:
    """Each input's genome name: its file stem; where that stem is another input's too or a
    stored genome's, the fewest trailing folders that tell them apart (a/x, b/x), and where
    folders cannot (x.fa beside x.fna.gz), the file name with its suffixes."""
    stems = {path: Genome(path).name for path in files}
    clashes: dict[str, list[Path]] = {}
    for path, stem in stems.items():
        clashes.setdefault(stem, []).append(path)
    names: dict[Path, str] = {}
    for stem, group in clashes.items():
        if len(group) == 1 and stem not in taken:
            names[group[0]] = stem
            continue
        depth = max(len(p.parts) for p in group)
        for last, folders in [(last, folders) for last in ("stem", "file") for folders in range(depth)]:
            candidates = {
                p: "/".join([*p.parent.parts[len(p.parent.parts) - folders :], stems[p] if last == "stem" else p.name])
                for p in group
            }
            if len(set(candidates.values())) == len(group) and not set(candidates.values()) & taken:
                names.update(candidates)
                break
        else:
            names.update({p: str(p) for p in group})
    return names


def changed_since_check(path: Path | str, stored: int | None = None) -> GenomeIndexError:
    """The error for an input whose sequence is no longer what the input check read; `stored`
    says how many other genomes of the build were stored nonetheless (None: not known)."""
    others = "" if stored is None else f"; the build stored {stored} other new genome(s)"
    return GenomeIndexError(
        f"{path} changed while the build ran (it no longer holds what was checked); it was not stored{others}: "
        "build again to add it"
    )


def new_genome(
    genome: Genome, chunks: list[Chunk], vectors: np.ndarray, name: str, labels: dict[str, str], sketch_scaled: int
) -> NewGenome:
    """The rows a genome with its windows' vectors adds to the store, under `name`."""
    from genome_index.search.sketch import sketch_records  # here: sourmash (and scipy) take a second to import

    columns: dict[str, list[Any]] = {k: [] for k in ("record", "start", "end", "n_tokens", "gc", "n_count")}
    for chunk in chunks:
        piece = genome.records[chunk.record].sequence[chunk.start : chunk.end]
        for key, value in (
            ("record", chunk.record),
            ("start", chunk.start),
            ("end", chunk.end),
            ("n_tokens", chunk.n_tokens),
            ("gc", gc_fraction(piece)),
            ("n_count", piece.count(b"N")),
        ):
            columns[key].append(value)
    return NewGenome(
        name=name,
        file=str(genome.path),
        sha256=genome.sha256,
        length=genome.length,
        gc=genome.gc,
        n_count=genome.n_count,
        records=[
            {
                "name": r.id,
                "description": r.description,
                "length": len(r.sequence),
                "gc": gc_fraction(r.sequence),
                "n_count": r.sequence.count(b"N"),
            }
            for r in genome.records
        ],
        chunks={k: np.asarray(v) for k, v in columns.items()},
        vectors=vectors,
        labels=labels,
        sketch=sketch_records(genome.records, sketch_scaled),
        sketch_scaled=sketch_scaled,
        sequences=[pack(r.sequence, r.line_width) for r in genome.records],
    )


class Writer:
    """A thread that commits genomes and updates the FAISS indexes beside the model's work."""

    def __init__(
        self,
        store: Store,
        indexes: dict[str, Any],
        settings: StoreSettings,
        checked: Future,
        report: BuildReport,
    ) -> None:
        self.store, self.indexes, self.checked, self.report = store, indexes, checked, report
        self.settings = settings
        # Exact and HNSW indexes take vectors one genome at a time; IVF-PQ is retrained at the end.
        self.incremental = settings.index_type in ("flat", "hnsw")
        self.dirty: set[str] = set()
        self.tasks: queue.Queue = queue.Queue()
        self.room = threading.Condition()  # guards queued_bytes and error; notified as tasks finish
        self.queued_bytes = 0
        self.error: BaseException | None = None
        self.stopping = threading.Event()
        self.wake = threading.Event()  # set when the input check ends or the writer is abandoned
        checked.add_done_callback(lambda _: self.wake.set())
        self.thread = threading.Thread(target=self._run, name="genome-index-writer", daemon=True)

    def start(self) -> Writer:
        self.thread.start()
        return self

    def put(self, task: tuple) -> None:
        """Queue a task, waiting while WRITER_QUEUE_BYTES of vectors are queued already; raise
        the writer's error instead of waiting on a dead writer."""
        size = task[1].vectors.nbytes if task[0] == "add" else 0
        with self.room:
            self.room.wait_for(
                lambda: self.error or not self.queued_bytes or self.queued_bytes + size <= WRITER_QUEUE_BYTES
            )
            if self.error is not None:
                raise self.error
            self.queued_bytes += size
        self.tasks.put((task, size))

    def finish(self) -> None:
        """Wait for every queued task, write the FAISS files, and re-raise any error."""
        self.put(("stop",))
        self.thread.join()
        if self.error is not None:
            raise self.error
        with self.store.connect(read_only=False) as con:  # closing it checkpoints the commits into the file
            if not self.incremental and self.report.added:
                self.indexes["chunks"] = self.store.rebuild_faiss(con, "chunks", self.settings)
                self.dirty.add("chunks")
        self.write_indexes()

    def abandon(self, save: bool = True) -> None:
        """Stop after the task in progress (its transaction completes or rolls back); with
        `save`, bring the FAISS files up to what was committed (best effort: a later command
        rebuilds them anyway). Ctrl-C does not save: it must stop at once."""
        self.stopping.set()
        self.wake.set()
        while True:
            try:
                self.tasks.get_nowait()
            except queue.Empty:
                break
        self.tasks.put((("stop",), 0))
        if self.thread.is_alive():
            self.thread.join()
        if save and self.dirty and (self.incremental or not self.report.added):
            with contextlib.suppress(GenomeIndexError):
                self.write_indexes()

    def write_indexes(self) -> None:
        """Write the changed FAISS files; if that fails, say what was committed nonetheless."""
        try:
            for kind in sorted(self.dirty):
                self.store.write_faiss(kind, self.indexes[kind])
        except GenomeIndexError as exc:
            if not self.report.added:
                raise
            raise GenomeIndexError(
                f"{len(self.report.added)} genome(s) were added to {self.store.db_path}, but {exc}; "
                "`genome-index reindex` (or the next build) rebuilds the FAISS files from it"
            ) from None
        self.dirty.clear()

    def _run(self) -> None:
        """Commit queued tasks in short sessions: the store file is opened for what is queued (at
        most COMMIT_SECONDS of it) and closed again, so other processes can read the store
        between commits. Genomes queued together are committed together, in groups of up to
        COMMIT_GROUP_BYTES of vectors (each genome still all or nothing). FAISS files are
        written after the first commits, then every FAISS_CHECKPOINT_SECONDS, or less often
        where writing them takes longer than FAISS_WRITE_SHARE of the time (a file of many GB);
        readers add what they lack from DuckDB."""
        try:
            self.wake.wait()  # nothing is written before every input has been read cleanly
            if self.stopping.is_set():
                return
            validated = self.checked.result()
            last_write, pause = None, FAISS_CHECKPOINT_SECONDS
            queued = self.tasks.get()
            while queued[0][0] != "stop":
                with self.store.connect(read_only=False, checkpoint=False) as con:
                    opened = time.perf_counter()
                    while queued[0][0] != "stop":
                        group, after = self._group(queued)
                        self._do(con, group, validated)
                        if after is not None:
                            queued = after
                        elif time.perf_counter() - opened > COMMIT_SECONDS or self.tasks.empty():
                            queued = None
                            break
                        else:
                            queued = self.tasks.get()
                if last_write is None or time.perf_counter() - last_write > pause:
                    started = time.perf_counter()
                    self.write_indexes()
                    last_write = time.perf_counter()
                    pause = max(FAISS_CHECKPOINT_SECONDS, (last_write - started) / FAISS_WRITE_SHARE)
                if queued is None:
                    if not self.tasks.empty():
                        time.sleep(READER_WINDOW)  # the file is free: let a waiting reader in
                    queued = self.tasks.get()
        except BaseException as exc:  # handed to the building thread
            with self.room:
                self.error = exc
                self.room.notify_all()

    def _group(self, first: tuple) -> tuple[list[tuple], tuple | None]:
        """`first` and the genomes queued right behind it (up to COMMIT_GROUP_BYTES of vectors),
        taken without waiting; and the task that ended the group, if one was taken."""
        group = [first]
        if first[0][0] != "add":
            return group, None
        size = first[1]
        while size < COMMIT_GROUP_BYTES:
            try:
                queued = self.tasks.get_nowait()
            except queue.Empty:
                return group, None
            if queued[0][0] != "add":
                return group, queued
            group.append(queued)
            size += queued[1]
        return group, None

    def _do(self, con: duckdb.DuckDBPyConnection, group: list[tuple], validated: dict[Path, str]) -> None:
        """One group of queued tasks: commit genomes (in one transaction), or relabel a stored one."""
        task = group[0][0]
        if task[0] == "add":
            self._add(con, [new for task, _ in group if (new := self._new(task, validated)) is not None])
        else:
            _, genome_id, labels = task
            writes.relabel(con, genome_id, labels)
            self.report.labelled_ids.add(genome_id)
        with self.room:
            self.queued_bytes -= sum(size for _, size in group)
            self.room.notify_all()

    def _new(self, task: tuple, validated: dict[Path, str]) -> NewGenome | None:
        """The rows of an `add` task: an embedded genome (made into rows here, off the model's
        thread) or rows made elsewhere (a Ray worker); None, and noted in the report, if its file
        changed since the check (the build goes on, and fails at its end naming it)."""
        _, item, name, labels = task
        path, sha = (
            (Path(item.file), item.sha256) if isinstance(item, NewGenome) else (item.genome.path, item.genome.sha256)
        )
        if validated.get(path) != sha:
            self.report.changed.append(str(path))
            return None
        if self.settings.vector_dtype == "float16":  # FAISS gets what DuckDB keeps, so a rebuild gives the same index
            item.vectors = item.vectors.astype(np.float16, copy=False)
        if isinstance(item, NewGenome):
            item.name, item.labels = name, labels
            return item
        return new_genome(item.genome, item.chunks, item.vectors, name, labels, self.settings.sketch_scaled)

    def _add(self, con: duckdb.DuckDBPyConnection, group: list[NewGenome]) -> None:
        """Commit genomes in one transaction, then add their vectors to the FAISS indexes."""
        if not group:
            return
        for new, (genome_id, chunk_ids) in zip(
            group, writes.add_genomes(con, group, self.settings.vector_dtype), strict=True
        ):
            self.report.added.append((new.name, genome_id, len(chunk_ids)))
            if new.labels:
                self.report.labelled_ids.add(genome_id)
            self.report.bases += new.length
            if self.incremental:  # committed: FAISS takes them normalised, in place (float16 once copied to float32)
                unit = normalise_in_place(np.ascontiguousarray(new.vectors, dtype=np.float32))
                self.indexes["chunks"].add_with_ids(unit, chunk_ids)
            self.indexes["genomes"].add_with_ids(normalise(new.chunk_sum), np.array([genome_id], dtype=np.int64))
        self.dirty.update(FAISS_FILES)


def open_store(store: Store) -> tuple[StoreSettings, dict[str, tuple[int, str, str]], dict[str, Any], set[str]]:
    """What a build starts from: the settings, the stored genomes by SHA-256 (id, name, file),
    the FAISS indexes, and which of those had to be rebuilt from DuckDB."""
    with store.connect(read_only=False) as con:  # held for this look only: the writer opens it per commit
        settings = reads.settings(con)
        stored = reads.genomes_by_sha(con)
        indexes: dict[str, Any] = {}
        rebuilt = set()
        for kind in FAISS_FILES:
            indexes[kind], was_rebuilt = store.load_faiss(con, kind, settings)
            if was_rebuilt:
                rebuilt.add(kind)
    return settings, stored, indexes, rebuilt


class Intake:
    """Which inputs a build embeds: the first file of each sequence not stored yet. The others
    are reported (already stored, or a duplicate of another file) and the labels given for a
    stored genome are queued as a relabel (a duplicate's only with `labels_from_duplicates`).
    The same for a local and a Ray build."""

    def __init__(
        self,
        files: list[Path],
        stored: dict[str, tuple[int, str, str]],
        label_rows: dict[str, dict[str, str]],
        all_inputs: list[Path],
        report: BuildReport,
        labels_from_duplicates: bool = False,
    ) -> None:
        names = {name for _, name, _ in stored.values()}
        stored_files = {key for _, _, file in stored.values() for key in (file, Path(file).name)}
        check_label_names(label_rows, all_inputs, names | stored_files)
        self.files = files
        self.names = unique_names(files, names)
        self.stored, self.label_rows, self.report = stored, label_rows, report
        self.labels_from_duplicates = labels_from_duplicates
        self.seen: dict[str, str] = {}  # SHA-256 -> name, of this run's genomes to embed
        self.relabels: list[tuple[int, dict[str, str]]] = []  # (stored genome id, labels) for the writer

    def preview(self, hashes: dict[Path, str]) -> tuple[list[Path], list[tuple[str, str, bool, bool]]]:
        """What `want` will decide for every input, worked out up front from the input check
        (nothing changes): the files to embed, and each duplicate of another file or of a
        stored genome as (file, the genome it repeats, whether its labels are ignored, whether
        that genome is stored already)."""
        new: list[Path] = []
        duplicates = []
        seen = {sha: name for sha, (_, name, _) in self.stored.items()}
        for path in self.files:
            sha = hashes[path]
            if sha not in seen:
                seen[sha] = self.names[path]
                new.append(path)
            elif sha not in self.stored or seen[sha] not in (Genome(path).name, self.names[path]):
                ignored = bool(self.labels_of(path)) and not self.labels_from_duplicates
                duplicates.append((str(path), seen[sha], ignored, sha in self.stored))
        return new, duplicates

    def labels_of(self, path: Path) -> dict[str, str]:
        keys = label_keys(Genome(path), self.names.get(path))
        return next((self.label_rows[k] for k in keys if k in self.label_rows), {})

    def want(self, path: Path, sha: str) -> bool:
        """Whether to embed this input (called in input order); if not, it is reported."""
        if sha not in self.stored and sha not in self.seen:
            self.seen[sha] = self.names[path]
            return True
        labels = self.labels_of(path)
        if sha in self.stored:
            genome_id, stored_name, _ = self.stored[sha]
            again = stored_name in (Genome(path).name, self.names[path])
            (self.report.already if again else self.report.duplicates).append((str(path), stored_name))
            if labels and (again or self.labels_from_duplicates):
                self.relabels.append((genome_id, labels))
            elif labels:
                self.report.labels_ignored.append(str(path))
        else:
            self.report.duplicates.append((str(path), self.seen[sha]))
            if labels:
                self.report.labels_ignored.append(str(path))
        return False


def announce_duplicates(duplicates: list[tuple[str, str, bool, bool]]) -> None:
    """Name, before the embedding gets far, each input that repeats a sequence (not embedded):
    (file, the genome it repeats, whether its labels are ignored, whether that genome is stored)."""
    for file, name, labels_ignored, stored in duplicates:
        note = ", its labels ignored (--labels-from-duplicates applies them)" if labels_ignored else ""
        which = "stored genome" if stored else "genome"
        log.info("duplicate: %s has the same sequence as %s %r; not embedded again%s", file, which, name, note)


def run_build(
    store: Store,
    files: list[Path],
    embedder: Embedder,
    label_rows: dict[str, dict[str, str]],
    progress: Progress = SILENT,
    all_inputs: list[Path] | None = None,
    labels_from_duplicates: bool = False,
    reads_ok: bool = False,
) -> BuildReport:
    """Embed every new genome of `files` into `store` (whose lock the caller holds).

    `all_inputs` (a sharded build's every input) may be named by the labels too. A stored
    genome built again takes the labels given for it; a duplicate (another file with a stored
    sequence) does not, unless `labels_from_duplicates`. A file of reads is refused unless
    `reads_ok` (`fasta.summarise`).
    """
    started = time.perf_counter()
    report = BuildReport()
    stop = threading.Event()
    step = progress.step("building", None, "bp", genomes=len(files))
    check = InputCheck(files, stop, reads_ok)
    try:
        settings, stored, indexes, rebuilt = open_store(store)
        intake = Intake(files, stored, label_rows, all_inputs or files, report, labels_from_duplicates)

        def checked(future: Future) -> None:  # the totals leave out what will not be embedded
            if future.exception() is None:
                new, duplicates = intake.preview(future.result())
                step.set_total(sum(check.lengths[path] for path in new), genomes=len(new))
                announce_duplicates(duplicates)

        check.future.add_done_callback(checked)
        writer = Writer(store, indexes, settings, check.future, report).start()
        writer.dirty.update(rebuilt)

        def want(path: Path) -> bool:
            if intake.want(path, check.sha_of(path)):
                return True
            for genome_id, labels in intake.relabels:
                writer.put(("relabel", genome_id, labels))
            intake.relabels.clear()
            return False

        try:
            for item in embedder.embed_genomes(files, want=want, step=step):
                path = item.genome.path
                writer.put(("add", item, intake.names[path], intake.labels_of(path)))
            writer.finish()
        except BaseException as exc:
            writer.abandon(save=not isinstance(exc, KeyboardInterrupt))
            raise
        if report.changed:
            raise changed_since_check(", ".join(report.changed), len(report.added))
    finally:
        stop.set()
        with check.changed:
            check.changed.notify_all()
        step.close()
    report.seconds = time.perf_counter() - started
    return report
