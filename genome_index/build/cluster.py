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

import dataclasses
import logging
import os
import pickle
import shutil
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from genome_index.build.intake import CheckedInputs
from genome_index.errors import GenomeIndexError, first_line
from genome_index.io.fasta import Genome
from genome_index.progress import SILENT, Progress, Step
from genome_index.ray_session import RayWatch, connect
from genome_index.settings import ModelOptions, RunOptions, StoreOptions, StoreSettings, resolve
from genome_index.store.rows import NewGenome
from genome_index.store.segments import Codebook

log = logging.getLogger("genome_index")
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


@lru_cache(maxsize=4)
def _chunker(settings: StoreSettings, model: ModelOptions) -> Any:
    """A worker's chunker for the run's windows, its tokenizer loaded once per process."""
    from genome_index.embedding.backends import load_tokenizer
    from genome_index.embedding.chunker import Chunker

    return Chunker(
        load_tokenizer(model), settings.chunking, settings.chunk_tokens, settings.overlap, settings.anchor_radius,
        model=settings.model,
    )  # fmt: skip


def prepare(row: dict[str, Any], settings: StoreSettings, model: ModelOptions) -> dict[str, Any]:
    """Read one genome, cut it into windows and make its rows (all but the vectors): the CPU
    work of a genome, done in a Ray task beside the actors."""
    from genome_index.build.intake import changed_since_check
    from genome_index.build.rows import new_genome
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

    def __init__(
        self, model: ModelOptions, run: RunOptions, store: StoreOptions, expected: StoreSettings,
        codebook: Codebook | None = None,
    ) -> None:  # fmt: skip
        from genome_index.embedding.embedder import Embedder

        self.embedder = Embedder(model, run)
        if (difference := expected.difference(self.embedder.settings(store))) is not None:
            key, wanted, here = difference
            raise GenomeIndexError(f"a Ray worker's {key} is {here!r}, not the run's {wanted!r}")
        self.vector_dtype = np.float16 if expected.vector_dtype == "float16" else np.float32
        self.encode = codebook.encoder() if codebook is not None else None

    def __call__(self, batch: dict[str, np.ndarray]) -> Iterator[dict[str, list[Any]]]:
        """Embed the batch's genomes together; hand each one back as soon as all are done, its
        vectors in the store's dtype, their unit sum worked out and, for a trained store, their
        codes (work the driver is spared: it commits, and adds the codes as they are)."""
        from genome_index.store.vectors import normalise, unit_sum

        items = [pickle.loads(blob) for blob in batch["item"]]
        vectors = self.embedder.embed_chunks([c for _, chunks in items for c in chunks])
        offset = 0
        for new, chunks in items:
            new.vectors = vectors[offset : offset + len(chunks)].astype(self.vector_dtype)
            new.chunk_sum = unit_sum(new.vectors)
            if self.encode is not None:  # from the stored dtype, as the driver would encode them
                new.codes = self.encode(normalise(new.vectors))
            offset += len(chunks)
            yield {"sha256": [new.sha256], "item": [pickle.dumps(new, protocol=pickle.HIGHEST_PROTOCOL)]}


def embedded(
    rows: list[dict[str, Any]], settings: StoreSettings, model: ModelOptions, run: RunOptions, store: StoreOptions,
    pool: Pool, codebook: Codebook | None = None,
) -> Any:  # fmt: skip
    """The Ray Data pipeline: genome rows (path, file, name, sha256) in, embedded genomes out
    (sha256, pickled NewGenome; encoded with `codebook` where given), streamed as they finish."""
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
            fn_constructor_kwargs={
                "model": model, "run": run, "store": store, "expected": settings, "codebook": codebook,
            },
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


def embed_to_parquet(
    files: list[Path], out: Path, model: ModelOptions, run: RunOptions, pool: Pool, progress: Progress = SILENT
) -> tuple[int, StoreSettings]:
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
    return sum(pq.ParquetFile(part).metadata.num_rows for part in out.glob("*.parquet")), settings


class RayRunner:
    """A Ray actor pool embeds (one model per GPU, or `ray_actors` CPU actors) and this process
    commits: the inputs are checked in Ray tasks before anything is dispatched, meanwhile the
    model is loaded once to learn the store settings it gives; Ray Data then reads and cuts the
    genomes in tasks, the actors embed them, and each finished genome streams back."""

    step_name = "building on Ray"

    def __init__(
        self, address: str, model: ModelOptions, run: RunOptions, store: StoreOptions, actors: int | None
    ) -> None:
        connect(address)
        self.model, self.run, self.store_options = model, run, store
        self.pool = plan_pool(run, actors)
        self.described = describe(model, run, store, self.pool)  # loads beside the input check
        self.watch = RayWatch()

    def settings(self, store: StoreOptions) -> StoreSettings:
        self.store_settings = settings_from(self.described)
        return self.store_settings

    def check(self, files: list[Path], reads_ok: bool) -> CheckedInputs:
        self.checked = CheckedInputs(check_inputs(files, reads_ok))  # a bad file: refused before any dispatch
        return self.checked

    def embed(
        self, files: list[Path], want: Callable[[Path], bool], step: Step, codebook: Codebook | None = None
    ) -> Iterator[NewGenome]:
        rows = [
            {"path": str(path.absolute()), "file": str(path), "name": Genome(path).name,
             "sha256": self.checked.sha_of(path)}
            for path in files
            if want(path)
        ]  # fmt: skip
        if not rows:
            return
        queued: set[str] = set()
        with ActorWatch(step), self.watch:
            pipeline = embedded(
                rows, self.store_settings, self.model, self.run, self.store_options, self.pool, codebook
            )
            for out in pipeline.iter_rows():
                if out["sha256"] in queued:  # a retried task's repeat
                    continue
                queued.add(out["sha256"])
                new = pickle.loads(out["item"])
                step.advance(new.length, genomes=1)
                yield new

    def failed(self, exc: BaseException, report: Any) -> tuple[bool, BaseException | None]:
        if self.watch.lost is not None:
            return True, self.watch.error(len(report.added))
        if isinstance(exc, Exception) and not isinstance(exc, GenomeIndexError):
            return True, ray_error(exc)
        return not isinstance(exc, KeyboardInterrupt), None
