"""The writer: a thread that commits genomes to DuckDB and adds them to FAISS beside the model's work.

A build's runner (`run`) hands it typed messages: `Add` (an embedded genome, or the rows a Ray
task made of one), `Relabel` (labels for a stored genome) and `Stop`. Genomes queued together
are committed together; the FAISS files are brought up to date after the first commits and
then every minute (a trained `ivf-pq` store's codes as a new segment each time: `store.segments`).
Nothing is committed before the input check has passed.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from genome_index.build.rows import new_genome
from genome_index.errors import GenomeIndexError
from genome_index.settings import StoreSettings
from genome_index.store import FAISS_FILES, Store
from genome_index.store.indexes import train_threshold
from genome_index.store.rows import NewGenome
from genome_index.store.segments import SegmentWriter
from genome_index.store.vectors import normalise, normalise_in_place
from genome_index.store.writes import StoreWriter

if TYPE_CHECKING:
    from genome_index.build.run import BuildReport
    from genome_index.embedding.pipeline import EmbeddedGenome

FAISS_CHECKPOINT_SECONDS = 60.0  # FAISS files are brought up to date this often during a build ...
FAISS_WRITE_SHARE = 0.1  # ... or less often, so that writing them takes at most this share of the writer's time
COMMIT_SECONDS = 1.0  # the longest the writer holds the store file at a time (a group's commit may pass it)
COMMIT_GROUP_BYTES = 192 << 20  # genomes queued together are committed together, up to this much of vectors
READER_WINDOW = 0.1  # a pause between commit sessions, so a waiting reader gets the file
GROUP_LINGER = 0.5  # seconds the writer waits after a genome arrives for more to commit with it (a vector file a group)
WRITER_QUEUE_BYTES = 1 << 30  # vectors waiting for the writer: several groups of genomes, so the model never waits


@dataclass
class Add:
    """Commit this genome as `name` with `labels`: embedded here (`EmbeddedGenome`; the writer
    makes its rows, off the model's thread) or made into rows by a Ray task (`NewGenome`)."""

    item: EmbeddedGenome | NewGenome
    name: str
    labels: dict[str, str]

    @property
    def path(self) -> Path:
        return Path(self.item.file)

    @property
    def sha256(self) -> str:
        return self.item.sha256

    def rows(self, sketch_scaled: int) -> NewGenome:
        if isinstance(self.item, NewGenome):
            self.item.name, self.item.labels = self.name, self.labels
            return self.item
        item = self.item
        return new_genome(item.genome, item.chunks, item.vectors, self.name, self.labels, sketch_scaled)


@dataclass
class Relabel:
    """Set `labels` on the stored genome `genome_id`."""

    genome_id: int
    labels: dict[str, str]


@dataclass
class Stop:
    """No more messages: commit what is queued and end."""


Message = Add | Relabel | Stop
Queued = tuple[Message, int]  # a message and the bytes of vectors it holds


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
        self.dirty: set[str] = set()
        self.tasks: queue.Queue = queue.Queue()
        self.room = threading.Condition()  # guards queued_bytes and error; notified as tasks finish
        self.queued_bytes = 0
        self.error: BaseException | None = None
        self.stopping = threading.Event()
        self.finishing = threading.Event()  # set once the last message is queued: no more genomes to wait for
        self.wake = threading.Event()  # set when the input check ends or the writer is abandoned
        checked.add_done_callback(lambda _: self.wake.set())
        self.thread = threading.Thread(target=self._run, name="genome-index-writer", daemon=True)

    def start(self) -> Writer:
        self.thread.start()
        return self

    def put(self, task: Message) -> None:
        """Queue a message, waiting while WRITER_QUEUE_BYTES of vectors are queued already; raise
        the writer's error instead of waiting on a dead writer."""
        size = task.item.vectors.nbytes if isinstance(task, Add) else 0
        with self.room:
            self.room.wait_for(
                lambda: self.error or not self.queued_bytes or self.queued_bytes + size <= WRITER_QUEUE_BYTES
            )
            if self.error is not None:
                raise self.error
            self.queued_bytes += size
            if isinstance(task, Stop):
                self.finishing.set()
            self.room.notify_all()  # a lingering writer counts what is queued, and learns of the end
        self.tasks.put((task, size))

    def finish(self) -> None:
        """Wait for every queued task, write the FAISS files, and re-raise any error."""
        self.put(Stop())
        self.thread.join()
        if self.error is not None:
            raise self.error
        with self.store.session():  # closing it checkpoints the commits into the file
            pass
        self.write_indexes()

    def abandon(self, save: bool = True) -> None:
        """Stop after the task in progress (its transaction completes or rolls back); with
        `save`, bring the FAISS files up to what was committed (best effort: a later command
        rebuilds them anyway). Ctrl-C does not save: it must stop at once."""
        with self.room:
            self.stopping.set()
            self.room.notify_all()
        self.wake.set()
        while True:
            try:
                self.tasks.get_nowait()
            except queue.Empty:
                break
        self.tasks.put((Stop(), 0))
        if self.thread.is_alive():
            self.thread.join()
        if save and self.dirty:
            with contextlib.suppress(GenomeIndexError):
                self.write_indexes(train=False)

    def training_due(self) -> bool:
        """Whether the exact chunk index of an `ivf-pq` store now holds enough vectors to train on."""
        chunks = self.indexes["chunks"]
        return (
            self.settings.index_type == "ivf-pq"
            and not isinstance(chunks, SegmentWriter)
            and chunks.ntotal >= train_threshold(self.settings.ivf_lists)
        )

    def write_indexes(self, train: bool = True) -> float:
        """Write the changed FAISS files (a trained store's codes gathered since the last time
        as a new segment; with `train`, an `ivf-pq` store that reached the threshold is trained
        and segmented first, outside any commit session); if that fails, say what was committed
        nonetheless. The seconds spent writing, the training apart (it happens once: counted,
        it spaced a 10 M-vector build's later segments 43 minutes apart, their codes piling up
        in memory)."""
        try:
            if train and self.training_due():
                self.indexes["chunks"] = self.store.train_segments(self.indexes["chunks"], self.settings.ivf_lists)
                self.dirty.add("chunks")
            started = time.perf_counter()
            for kind in sorted(self.dirty):
                index = self.indexes[kind]
                if isinstance(index, SegmentWriter):
                    index.flush()
                else:
                    self.store.write_faiss(kind, index)
        except GenomeIndexError as exc:
            if not self.report.added:
                raise
            raise GenomeIndexError(
                f"{len(self.report.added)} genome(s) were added to {self.store.db_path}, but {exc}; "
                "`genome-index reindex` (or the next build) rebuilds the FAISS files from it"
            ) from None
        self.dirty.clear()
        return time.perf_counter() - started

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
            while not isinstance(queued[0], Stop):
                self._linger(queued)
                with self.store.session(checkpoint=False) as session:
                    opened = time.perf_counter()
                    while not isinstance(queued[0], Stop):
                        group, after = self._group(queued)
                        self._do(session, group, validated)
                        if after is not None:
                            queued = after
                        elif time.perf_counter() - opened > COMMIT_SECONDS or self.tasks.empty():
                            queued = None
                            break
                        else:
                            queued = self.tasks.get()
                if last_write is None or time.perf_counter() - last_write > pause or self.training_due():
                    writing = self.write_indexes()
                    last_write = time.perf_counter()
                    pause = max(FAISS_CHECKPOINT_SECONDS, writing / FAISS_WRITE_SHARE)
                if queued is None:
                    if not self.tasks.empty():
                        time.sleep(READER_WINDOW)  # the file is free: let a waiting reader in
                    queued = self.tasks.get()
        except BaseException as exc:  # handed to the building thread
            with self.room:
                self.error = exc
                self.room.notify_all()

    def _linger(self, first: Queued) -> None:
        """After a genome arrives, wait up to GROUP_LINGER for more (until COMMIT_GROUP_BYTES
        are queued, or the build ends), so that genomes arriving one by one, as from GPUs slower
        than the writer, are committed a group at a time: each commit writes one vector file,
        and a file a genome would mean a million files for a million genomes."""
        if not isinstance(first[0], Add):
            return
        with self.room:
            self.room.wait_for(
                lambda: self.stopping.is_set() or self.finishing.is_set() or self.queued_bytes >= COMMIT_GROUP_BYTES,
                timeout=GROUP_LINGER,
            )

    def _group(self, first: Queued) -> tuple[list[Queued], Queued | None]:
        """`first` and the genomes queued right behind it (up to COMMIT_GROUP_BYTES of vectors),
        taken without waiting; and the message that ended the group, if one was taken."""
        group = [first]
        if not isinstance(first[0], Add):
            return group, None
        size = first[1]
        while size < COMMIT_GROUP_BYTES:
            try:
                queued = self.tasks.get_nowait()
            except queue.Empty:
                return group, None
            if not isinstance(queued[0], Add):
                return group, queued
            group.append(queued)
            size += queued[1]
        return group, None

    def _do(self, session: StoreWriter, group: list[Queued], validated: dict[Path, str]) -> None:
        """One group of queued messages: commit genomes (in one transaction), or relabel a stored one."""
        task = group[0][0]
        if isinstance(task, Add):
            self._add(session, [new for task, _ in group if (new := self._new(task, validated)) is not None])
        elif isinstance(task, Relabel):
            session.relabel(task.genome_id, task.labels)
            self.report.labelled_ids.add(task.genome_id)
        with self.room:
            self.queued_bytes -= sum(size for _, size in group)
            self.room.notify_all()

    def _new(self, task: Add, validated: dict[Path, str]) -> NewGenome | None:
        """The rows of an `Add`; None, and noted in the report, if its file changed since the
        check (the build goes on, and fails at its end naming it)."""
        if validated.get(task.path) != task.sha256:
            self.report.changed.append(str(task.path))
            return None
        if self.settings.vector_dtype == "float16":  # FAISS gets what DuckDB keeps, so a rebuild gives the same index
            task.item.vectors = task.item.vectors.astype(np.float16, copy=False)
        return task.rows(self.settings.sketch_scaled)

    def _add(self, session: StoreWriter, group: list[NewGenome]) -> None:
        """Commit genomes in one transaction, then add their vectors to the FAISS indexes."""
        if not group:
            return
        for new, (genome_id, chunk_ids) in zip(
            group, session.add_genomes(group, self.settings.vector_dtype), strict=True
        ):
            self.report.added.append((new.name, genome_id, len(chunk_ids)))
            if new.labels:
                self.report.labelled_ids.add(genome_id)
            self.report.bases += new.length
            chunks = self.indexes["chunks"]
            if new.codes is None or not isinstance(chunks, SegmentWriter) or not chunks.add_codes(new.codes, chunk_ids):
                # committed: FAISS takes them normalised, in place (float16 once copied to float32)
                chunks.add_with_ids(normalise_in_place(np.ascontiguousarray(new.vectors, dtype=np.float32)), chunk_ids)
            self.indexes["genomes"].add_with_ids(normalise(new.chunk_sum), np.array([genome_id], dtype=np.int64))
        self.dirty.update(FAISS_FILES)


def open_store(store: Store) -> tuple[StoreSettings, dict[str, tuple[int, str, str]], dict[str, Any], set[str]]:
    """What a build starts from: the settings, the stored genomes by SHA-256 (id, name, file),
    the FAISS indexes, and which of those had to be rebuilt from DuckDB."""
    with store.session() as session:  # held for this look only: the writer opens one per commit group
        session.clean_vector_files()  # the build holds the lock: files a killed build never committed go
        settings = session.settings()
        stored = session.genomes_by_sha()
        indexes: dict[str, Any] = {}
        rebuilt = set()
        for kind in FAISS_FILES:
            load = store.chunk_writer if kind == "chunks" else store.load_faiss
            indexes[kind], was_rebuilt = load(session, kind, settings)
            if was_rebuilt:
                rebuilt.add(kind)
    return settings, stored, indexes, rebuilt
