"""Builds and embeddings on Ray: Ray Data streams genomes to one loaded model per GPU.

The driver (this process) first checks every input in Ray tasks, so a bad file stops the
build before anything is dispatched, and meanwhile has the model loaded once (by a GPU
worker, or itself for CPU actors) to learn the store settings it gives (the same resolution
as a local build). Then Ray Data reads the new
genomes and cuts them into windows in tasks (`prepare`), an actor pool embeds them
(`EmbedActor`: one `Embedder` loaded once per actor, one actor per GPU, or `--ray-actors N`
on CPUs), and each finished genome streams back to the driver, whose `build.Writer` commits
it as a local build does: all or nothing, FAISS after. Ray restarts lost actors and retries
their work; the driver drops a genome it has queued already, so a retry never stores one
twice, and a new build after a lost driver adds only what is missing (by SHA-256).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import pickle
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from genome_index.errors import GenomeIndexError, first_line
from genome_index.progress import SILENT, Progress, Step
from genome_index.settings import ModelOptions, RunOptions, StoreOptions, StoreSettings, resolve

if TYPE_CHECKING:
    from genome_index.build.run import BuildReport
    from genome_index.store import Store

log = logging.getLogger("genome_index")
RAY_MISSING = "--ray needs Ray: pip install 'genome-index[ray]' (or pip install 'ray[data]')"
READS_PER_ACTOR = 2  # genomes read and cut at once for each actor
GENOMES_PER_CALL = 4  # genomes an actor embeds together: their windows share length-sorted batches
ACTORS_EVERY = 5.0  # seconds between counts of the actors alive, for the progress line
ACTOR_CLASS = "EmbedActor"


@dataclass(frozen=True)
class Pool:
    """The actors of a run: how many, and whether each holds a GPU."""

    actors: int
    gpus: bool

    @property
    def resources(self) -> dict[str, float]:
        return {"num_gpus": 1, "num_cpus": 1} if self.gpus else {"num_cpus": 1}


def connect(address: str = "auto") -> None:
    """Join or start Ray. `auto`: the cluster at RAY_ADDRESS when set, else one started on this
    machine with `ray start`, else a new local Ray with this machine's CPUs and GPUs (Ray's own
    search); any other value is a cluster's address. A Ray already started in this process (a
    notebook, a test) is used as it is."""
    try:
        import ray
    except ImportError:
        raise GenomeIndexError(RAY_MISSING) from None
    if not ray.is_initialized():
        join = os.environ.get("RAY_ADDRESS") if address == "auto" else address
        if join and not _answers(join):  # Ray itself retries a wrong address for minutes
            raise GenomeIndexError(
                f"cannot reach a Ray cluster at {join}: nothing answers there (start one with `ray start --head`)"
            )
        options: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR}  # errors reach us raised
        if not join:
            options["include_dashboard"] = False
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")  # nor its core's log lines (a user's setting wins)
        _quiet_ray_prints()
        try:
            ray.init(address=join or None, **options)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise GenomeIndexError(f"cannot reach a Ray cluster at {join}: {exc}") from None
        LOCAL_RAY.update(_started_here())
        if LOCAL_RAY:
            _stop_with_this_process(LOCAL_RAY)
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    for name in ("ray", "ray.data"):  # Ray's own progress lines would interleave with ours
        logging.getLogger(name).setLevel(logging.ERROR)


# -- a local Ray this process started: stopped with it, watched while it works -------------

LOCAL_RAY: dict[str, Any] = {}  # Ray's processes this process started (name -> pid) and its session folder
_KEEP_OPEN: list[int] = []  # the watchdog's pipe: open for as long as this process lives
WATCHDOG = """
import os, signal, sys, time
ended = sys.stdin.buffer.read()  # end of file: the process that started Ray has ended, however it ended
message, session, raylet = sys.argv[1], sys.argv[2], int(sys.argv[3])
targets = {int(pid) for pid in sys.argv[3:]}
def parent(pid):
    with open(f"/proc/{pid}/stat") as handle:
        return int(handle.read().rsplit(")", 1)[1].split()[1])
def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
if ended != b"clean" and not alive(raylet):  # Ray's core ended it for its dead raylet, before it could say so
    sys.stderr.write(message + chr(10))
    sys.stderr.flush()
os.close(2)
def in_session(pid):  # Ray's agents rename themselves, but keep their logs open in the session folder
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}").startswith(session) for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False
pids = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()]
for pid in pids:
    if in_session(pid):
        targets.add(pid)
grown = True
while grown:
    grown = False
    for pid in pids:
        try:
            if pid not in targets and parent(pid) in targets:
                targets.add(pid)
                grown = True
        except (OSError, ValueError, IndexError):
            pass
targets = {pid for pid in targets if alive(pid)}
for sig, pause in ((signal.SIGTERM, 3.0 if targets else 0.0), (signal.SIGKILL, 0.0)):
    for pid in targets:
        try:
            os.kill(pid, sig)
        except OSError:
            pass
    time.sleep(pause)
"""
RAYLET_DIED = (
    "Ray's {process} process on this machine died mid-run, taking the local Ray with it; {committed}: run it "
    "again to add the rest"
)


def _quiet_ray_prints() -> None:
    """Ray's driver prints the errors its cluster publishes (a dead raylet's last log lines) on
    stdout, where results go: they go to this package's debug log instead; the error itself
    reaches the user raised, as one line."""
    from ray._private import worker

    if hasattr(worker, "print_to_stdstream"):
        worker.print_to_stdstream = lambda data, ignore_prefix=False: log.debug("ray: %s", data.get("lines"))


def _started_here() -> dict[str, int]:
    """The Ray processes `ray.init` just started in this process (none when it joined a cluster),
    and its session folder (as `session`)."""
    try:
        from ray._private import worker  # Ray's record of the processes it launched

        node = worker._global_node
        processes = node.all_processes if node is not None else {}
        started = {name: infos[0].process.pid for name, infos in processes.items() if infos}
        return {**started, "session": node.get_session_dir_path()} if started else {}
    except Exception:
        return {}


def _stop_with_this_process(processes: dict[str, Any]) -> None:
    """A watchdog process (in a session of its own) that waits for this one to end, by exit,
    crash or kill -9 (its pipe then closes), and stops the local Ray's processes, their workers
    and agents: they otherwise outlive a killed driver (about 170 MB). Where Ray's core ended
    this process itself, for a raylet that died (it exits at once, before any Python runs), the
    watchdog says so in this process's one line."""
    import atexit
    import subprocess
    import sys

    message = "genome-index: error: " + RAYLET_DIED.format(process="raylet", committed="what was committed stays")
    others = [str(pid) for name, pid in processes.items() if name not in ("session", "raylet")]
    read, write = os.pipe()
    subprocess.Popen(
        [sys.executable, "-c", WATCHDOG, message, str(processes["session"]), str(processes["raylet"]), *others],
        stdin=read, start_new_session=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    os.close(read)
    _KEEP_OPEN.append(write)

    def clean_exit() -> None:  # Python ran its exit: any error was said already
        with contextlib.suppress(OSError):
            os.write(write, b"clean")

    atexit.register(clean_exit)


class RayWatch:
    """While a build or embedding runs on a local Ray this process started, checks twice a
    second that Ray's raylet here lives; when it dies, the main thread is interrupted and `lost`
    names it, so the run ends in one line, not in Ray's traceback (where Ray's core ends the
    process first, the watchdog of `_stop_with_this_process` says it instead)."""

    def __init__(self) -> None:
        self.lost: str | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="genome-index-ray-watch", daemon=True)

    def __enter__(self) -> RayWatch:
        if "raylet" in LOCAL_RAY:
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()

    def _run(self) -> None:
        import _thread

        while not self.stop.wait(0.5):
            if not _alive(LOCAL_RAY["raylet"]):
                self.lost = "raylet"
                _thread.interrupt_main()
                return

    def error(self, committed: int) -> GenomeIndexError:
        stays = f"{committed} genome(s) were committed and stay"
        return GenomeIndexError(RAYLET_DIED.format(process=self.lost, committed=stays))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a process that died but was not reaped yet
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _answers(address: str, timeout: float = 5.0) -> bool:
    """Whether something listens at a host:port address (other forms are left to Ray)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or "://" in address:
        return True
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError:
        return False
    return True


def plan_pool(run: RunOptions, actors: int | None) -> Pool:
    """One actor per GPU of the cluster (or `actors` of them); on a cluster without GPUs, or with
    --device cpu, `actors` CPU actors (default: half the CPUs; the other half read and cut)."""
    import ray

    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
    if actors is not None and actors < 1:
        raise GenomeIndexError(f"--ray-actors {actors}: must be at least 1")
    if run.device.startswith("cuda") and not gpus:
        raise GenomeIndexError(f"--device {run.device}, but the Ray cluster has no GPU")
    if gpus and run.device != "cpu":
        if actors is not None and actors > gpus:
            raise GenomeIndexError(f"--ray-actors {actors}: the Ray cluster has {gpus} GPU(s), one per actor")
        return Pool(actors or gpus, gpus=True)
    if cpus < 2:
        raise GenomeIndexError(f"the Ray cluster has {cpus} CPU(s): CPU actors need at least 2 (one reads)")
    if actors is not None and actors > cpus - 1:
        raise GenomeIndexError(f"--ray-actors {actors}: the Ray cluster has {cpus} CPUs, and reading needs one")
    return Pool(actors or max(1, cpus // 2), gpus=False)


def ray_error(exc: BaseException) -> GenomeIndexError:
    """The user's one line for an error a Ray run ended in: our own (from a task or actor), else
    Ray's, named by its first line (a lost node, a dead worker) instead of its traceback."""
    found = unwrap(exc)
    if isinstance(found, GenomeIndexError):
        return found
    return GenomeIndexError(f"the Ray run failed ({type(exc).__name__}: {first_line(exc)[:300]})")


def unwrap(exc: BaseException) -> BaseException:
    """The error a Ray task or actor raised, out of Ray's wrappers (whose own text starts with
    where it ran): the innermost GenomeIndexError, else `exc` itself."""
    chain = [exc]
    while (inner := getattr(chain[-1], "cause", None) or chain[-1].__cause__) is not None and inner not in chain:
        chain.append(inner)
    return next((e for e in reversed(chain) if isinstance(e, GenomeIndexError)), exc)


def describe(model: ModelOptions, run: RunOptions, store: StoreOptions, pool: Pool) -> Any:
    """Load the model as an actor will, to learn the store settings it gives, beside the input
    check; `settings_from` waits for them. For a GPU pool a Ray task with one GPU loads it (the
    driver's machine may have none); on CPUs this process does, in a thread: a worker would
    take as long, and would load its libraries first."""
    if not pool.gpus:
        described: Future = Future()
        on_cpu = dataclasses.replace(run, device="cpu", compile=False)

        def load() -> None:
            try:
                described.set_result(_settings_of(model, on_cpu, store))
            except BaseException as exc:
                described.set_exception(exc)

        threading.Thread(target=load, name="genome-index-describe", daemon=True).start()  # never holds up exit
        return described
    import ray

    return ray.remote(**pool.resources)(_settings_of).remote(model, run, store)


def _settings_of(model: ModelOptions, run: RunOptions, store: StoreOptions) -> StoreSettings:
    from genome_index.embedding.embedder import Embedder

    return Embedder(model, run).settings(store)


def settings_from(described: Any) -> StoreSettings:
    """What `describe` found, its error as the user's one line."""
    if isinstance(described, Future):
        return described.result()
    import ray

    try:
        return ray.get(described)
    except Exception as exc:
        raise ray_error(exc) from None


# -- checking inputs ---------------------------------------------------------------------


def check_inputs(files: list[Path], reads_ok: bool = False) -> dict[Path, tuple[str, int]]:
    """Read every input in Ray tasks: each file's (SHA-256, bases), or the first bad file's
    error (in input order; a file of reads is one unless `reads_ok`), before anything is dispatched."""
    import ray.data

    rows = [{"path": str(path.absolute()), "index": i, "reads_ok": reads_ok} for i, path in enumerate(files)]
    checked = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), 256))).map(_check).take_all()
    by_index = {row["index"]: row for row in checked}
    for i in range(len(files)):
        if by_index[i]["error"]:
            raise GenomeIndexError(by_index[i]["error"])
    return {path: (by_index[i]["sha256"], by_index[i]["length"]) for i, path in enumerate(files)}


def _check(row: dict[str, Any]) -> dict[str, Any]:
    from genome_index.io.fasta import summarise

    try:
        summary = summarise(Path(row["path"]), row["reads_ok"])
        return {**row, "sha256": summary.sha256, "length": summary.length, "error": ""}
    except GenomeIndexError as exc:
        return {**row, "sha256": "", "length": 0, "error": str(exc)}


# -- the work: read and cut, embed ------------------------------------------------------


@lru_cache(maxsize=4)
def _chunker(settings: StoreSettings, model: ModelOptions) -> Any:
    """A worker's chunker for the run's windows, its tokenizer loaded once per process."""
    from genome_index.embedding.chunker import Chunker
    from genome_index.embedding.encoders import load_tokenizer

    return Chunker(
        load_tokenizer(model), settings.chunking, settings.chunk_tokens, settings.overlap, settings.anchor_radius,
        model=settings.model,
    )  # fmt: skip


def prepare(row: dict[str, Any], settings: StoreSettings, model: ModelOptions) -> dict[str, Any]:
    """Read one genome, cut it into windows and make its rows (all but the vectors): the CPU
    work of a genome, done in a Ray task beside the actors."""
    from genome_index.build.run import changed_since_check, new_genome
    from genome_index.io.fasta import read_genome

    genome = read_genome(Path(row["path"]))
    if genome.sha256 != row["sha256"]:
        raise changed_since_check(row["file"])
    chunks = _chunker(settings, model).chunk(genome)
    new = new_genome(genome, chunks, np.empty((0, settings.dim), np.float32), row["name"], {}, settings.sketch_scaled)
    new.file = row["file"]
    return {"sha256": row["sha256"], "item": pickle.dumps((new, chunks), protocol=pickle.HIGHEST_PROTOCOL)}


class EmbedActor:
    """One model loaded once, embedding the windows of the genomes handed to it. It checks that
    it embeds exactly as the driver was told (a node with other weights or libraries)."""

    def __init__(self, model: ModelOptions, run: RunOptions, store: StoreOptions, expected: StoreSettings) -> None:
        from genome_index.embedding.embedder import Embedder

        self.embedder = Embedder(model, run)
        if (difference := expected.difference(self.embedder.settings(store))) is not None:
            key, wanted, here = difference
            raise GenomeIndexError(f"a Ray worker's {key} is {here!r}, not the run's {wanted!r}")
        self.vector_dtype = np.float16 if expected.vector_dtype == "float16" else np.float32

    def __call__(self, batch: dict[str, np.ndarray]) -> Iterator[dict[str, list[Any]]]:
        """Embed the batch's genomes together; hand each one back as soon as all are done, its
        vectors in the store's dtype and their unit sum worked out (work the driver is spared)."""
        from genome_index.store.vectors import unit_sum

        items = [pickle.loads(blob) for blob in batch["item"]]
        vectors = self.embedder.embed_chunks([c for _, chunks in items for c in chunks])
        offset = 0
        for new, chunks in items:
            new.vectors = vectors[offset : offset + len(chunks)].astype(self.vector_dtype)
            new.chunk_sum = unit_sum(new.vectors)
            offset += len(chunks)
            yield {"sha256": [new.sha256], "item": [pickle.dumps(new, protocol=pickle.HIGHEST_PROTOCOL)]}


def embedded(
    rows: list[dict[str, Any]], settings: StoreSettings, model: ModelOptions, run: RunOptions, store: StoreOptions,
    pool: Pool,
) -> Any:  # fmt: skip
    """The Ray Data pipeline: genome rows (path, file, name, sha256) in, embedded genomes out
    (sha256, pickled NewGenome), streamed as they finish."""
    import ray.data

    return (
        ray.data.from_items(rows, override_num_blocks=len(rows))
        # Reads capped at READS_PER_ACTOR per actor: memory stays bounded, and a cap other than the
        # pool's size keeps Ray from fusing the reads into the actors, which would then read too.
        .map(
            prepare,
            fn_kwargs={"settings": settings, "model": model},
            num_cpus=1,
            compute=ray.data.TaskPoolStrategy(size=READS_PER_ACTOR * pool.actors),
        )
        .map_batches(
            EmbedActor,
            fn_constructor_kwargs={"model": model, "run": run, "store": store, "expected": settings},
            batch_size=GENOMES_PER_CALL,
            compute=ray.data.ActorPoolStrategy(size=pool.actors),
            **pool.resources,
        )
    )


def actors_alive() -> int | None:
    """How many embedding actors are alive now, from Ray's actor table (None: not known)."""
    try:
        from ray._private import state  # the state API proper needs the dashboard, which is optional

        return sum(
            1
            for actor in state.actors().values()
            if actor.get("State") == "ALIVE" and ACTOR_CLASS in actor.get("ActorClassName", "")
        )
    except Exception:
        return None


class ActorWatch:
    """Shows the actors alive (and the Parquet files written to `folder`) on the progress line
    every ACTORS_EVERY seconds, from a thread."""

    def __init__(self, step: Step, folder: Path | None = None) -> None:
        self.step, self.folder, self.stop = step, folder, threading.Event()
        self.thread = threading.Thread(target=self._run, name="genome-index-ray-actors", daemon=True)

    def __enter__(self) -> ActorWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()

    def _run(self) -> None:
        while not self.stop.wait(ACTORS_EVERY):
            if (alive := actors_alive()) is not None:
                self.step.gauge(actors=alive)
            if self.folder is not None and self.folder.is_dir():
                self.step.gauge(files=sum(1 for _ in self.folder.glob("*.parquet")))


# -- build and embed ----------------------------------------------------------------------


def run_build(
    store: Store,
    files: list[Path],
    settings: StoreSettings,
    model: ModelOptions,
    run: RunOptions,
    store_options: StoreOptions,
    pool: Pool,
    label_rows: dict[str, dict[str, str]],
    checked: dict[Path, tuple[str, int]],
    progress: Progress = SILENT,
    labels_from_duplicates: bool = False,
) -> BuildReport:
    """Embed every new genome of `files` into `store` (whose lock the caller holds, and whose
    settings are `settings`) on the Ray actor pool; the driver commits. `checked` is what
    `check_inputs` gave: every input was read cleanly before this is called."""
    from genome_index.build.run import BuildReport, Intake, Writer, announce_duplicates, open_store

    started = time.perf_counter()
    report = BuildReport()
    _, stored, indexes, rebuilt = open_store(store)
    intake = Intake(files, stored, label_rows, files, report, labels_from_duplicates)
    rows = [
        {"path": str(path.absolute()), "file": str(path), "name": intake.names[path], "sha256": checked[path][0]}
        for path in files
        if intake.want(path, checked[path][0])
    ]
    ignored = set(report.labels_ignored)
    stored_names = {name for _, name, _ in stored.values()}
    announce_duplicates([(file, name, file in ignored, name in stored_names) for file, name in report.duplicates])
    by_sha = {row["sha256"]: Path(row["file"]) for row in rows}
    validated: Future = Future()
    validated.set_result({path: sha for path, (sha, _) in checked.items()})
    writer = Writer(store, indexes, settings, validated, report).start()
    writer.dirty.update(rebuilt)
    total = sum(checked[path][1] for path in by_sha.values())
    step = progress.step("building on Ray", total, "bp", genomes=len(rows))
    watch = RayWatch()
    try:
        for genome_id, labels in intake.relabels:
            writer.put(("relabel", genome_id, labels))
        queued: set[str] = set()
        with ActorWatch(step), watch:
            if rows:
                for out in embedded(rows, settings, model, run, store_options, pool).iter_rows():
                    sha = out["sha256"]
                    if sha in queued:  # a retried task's repeat
                        continue
                    queued.add(sha)
                    new = pickle.loads(out["item"])
                    path = by_sha[sha]
                    writer.put(("add", new, intake.names[path], intake.labels_of(path)))
                    step.advance(new.length, genomes=1)
        writer.finish()
    except BaseException as exc:
        writer.abandon(save=watch.lost is not None or not isinstance(exc, KeyboardInterrupt))
        if watch.lost is not None:
            raise watch.error(len(report.added)) from None
        if isinstance(exc, Exception) and not isinstance(exc, GenomeIndexError):
            raise ray_error(exc) from None
        raise
    finally:
        step.close()
    report.seconds = time.perf_counter() - started
    return report


def embed_to_parquet(
    files: list[Path], out: Path, model: ModelOptions, run: RunOptions, pool: Pool, progress: Progress = SILENT
) -> int:
    """`embed --ray`: the chunk vectors of every input as a Parquet dataset in the folder `out`
    (the columns of `embed`, the model in each file's metadata); the rows written. Ray writes
    into a hidden folder beside `out`, renamed to `out` once complete."""
    import pyarrow.parquet as pq

    from genome_index.build.export import file_metadata, schema, stored_table
    from genome_index.io.fasta import Genome

    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise GenomeIndexError(f"{out}: give a new or empty folder for the Parquet dataset")
    if not out.absolute().parent.is_dir():
        raise GenomeIndexError(f"{out}: folder {out.absolute().parent} does not exist")
    model, store_options = resolve(model, StoreOptions(), None)
    described = describe(model, run, store_options, pool)
    checked = check_inputs(files)
    settings = settings_from(described)
    metadata = file_metadata(settings)
    rows = [
        {"path": str(path.absolute()), "file": str(path), "name": Genome(path).name, "sha256": sha}
        for path, (sha, _) in checked.items()
    ]
    bases = sum(length for _, length in checked.values())
    step = progress.step("embedding on Ray", bases, "bp", genomes=len(rows))

    def to_table(batch: dict[str, np.ndarray]) -> Any:
        import pyarrow as pa

        tables = [stored_table(pickle.loads(blob), settings.dim) for blob in batch["item"]]
        return pa.concat_tables([schema(settings.dim).empty_table(), *tables]).replace_schema_metadata(metadata)

    partial = out.absolute().parent / f".{out.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    watch = RayWatch()
    try:
        with ActorWatch(step, partial), watch:
            embedded(rows, settings, model, run, store_options, pool).map_batches(to_table).write_parquet(str(partial))
        os.replace(partial, out)  # an empty folder is replaced too
        step.advance(bases, genomes=len(rows))
    except BaseException as exc:
        if watch.lost is not None:
            raise watch.error(0) from None
        if isinstance(exc, Exception):
            raise ray_error(exc) from None
        raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
        step.close()
    return sum(pq.ParquetFile(part).metadata.num_rows for part in out.glob("*.parquet"))
