"""Search sharded on Ray: a trained store's segments spread over actors, one per machine or GPU.

A store past one machine's memory is an `ivf-pq` store of many segments (`store/segments.py`).
`ShardPool` (one per searcher opened with `ray=`) places the current generation's segment files,
in groups balanced by their vectors, on Ray actors (`SegmentShard`: each memory-maps its group's
lists as a local reader does, and copies them to its GPU where it was given one); `ShardedIndex`
sends each query to every shard, searches here what is committed but not yet a segment, and
merges the top-k by score (ties by id). The coarse quantizer and the probes are the same
everywhere and a vector's score does not depend on which lists sit beside it, so the merged
result is the single-process one.

Actors read the segment files at the store's own path: on a cluster, the store lies on a file
system that every machine mounts there. A group keeps its actor while the store grows (a new
segment joins the lightest group, so one actor is replaced per segment); a lost actor is
restarted by Ray, maps its files again, and the queries it had are retried (RESTARTS times); a
shard that does not answer within SHARD_TIMEOUT ends the query with an error, not a hang.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from genome_index.errors import GenomeIndexError, first_line
from genome_index.store.indexes import to_gpu
from genome_index.store.segments import Listed, Segments, best_k, search_stacked, stack_of, stacked

log = logging.getLogger("genome_index")
SHARD_TIMEOUT = 120.0  # seconds a query waits for every shard (restarting a lost one included)
INLINE_BYTES = 1 << 20  # queries up to this size go with each call; larger ones through Ray's object store
RESTARTS = 4  # times Ray restarts a lost shard actor, and retries the queries it had


class SegmentShard:
    """One shard (a Ray actor): some segments of a generation, memory-mapped and searched as one."""

    def __init__(self, directory: str, generation: int, names: Sequence[str], threads: int) -> None:
        faiss.omp_set_num_threads(threads)  # Ray gives a worker one thread unless told: a shard searches with several
        self.index = to_gpu(Segments(Path(directory)).open(generation, names)[0])  # to the GPU Ray gave it, if any

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) of normalised queries over this shard's segments."""
        return search_stacked(self.index, queries, k)  # its copy on a GPU too: ties decided by id there as well

    def info(self) -> dict[str, Any]:
        """Where the shard runs and what it holds: its process, machine and vectors."""
        return {"pid": os.getpid(), "node": os.uname().nodename, "vectors": int(self.index.ntotal)}


@functools.cache
def _actor_class() -> Any:
    import ray

    return ray.remote(SegmentShard)


def balanced(listed: Sequence[Listed], shards: int) -> list[list[Listed]]:
    """The segments in at most `shards` groups, each segment, in the order written, joining the
    group holding the fewest vectors so far (the first group on ties): groups stay even, and a
    segment added later changes one group, not all."""
    groups: list[list[Listed]] = [[] for _ in range(max(1, shards))]
    loads = [0] * len(groups)
    for item in listed:
        lightest = loads.index(min(loads))
        groups[lightest].append(item)
        loads[lightest] += item.count
    return [group for group in groups if group]


class ShardedIndex:
    """A chunk index searched on Ray actors (and here, for what is not yet a segment): what
    `store.indexes.search` needs of an index, `ntotal`, `d` and `search(queries, k)`."""

    def __init__(self, actors: list[Any], local: Any | None, ntotal: int, d: int) -> None:
        self.actors, self.local, self.ntotal, self.d = actors, local, ntotal, d

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) of normalised queries over every shard, merged by score."""
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

        queries = np.ascontiguousarray(queries, dtype=np.float32)
        sent = ray.put(queries) if queries.nbytes > INLINE_BYTES else queries  # large: stored once for every shard
        futures = [actor.search.remote(sent, k) for actor in self.actors]
        parts = [self.local.search(queries, k)] if self.local is not None else []
        try:
            parts += ray.get(futures, timeout=SHARD_TIMEOUT)
        except GetTimeoutError:
            raise GenomeIndexError(f"a search shard on Ray did not answer within {SHARD_TIMEOUT:.0f} s") from None
        except RayActorError as exc:
            raise GenomeIndexError(f"a search shard on Ray was lost for good ({lost_reason(exc)})") from None
        except RayTaskError as exc:
            raise GenomeIndexError(f"a search shard on Ray failed: {first_line(exc.cause or exc)}") from None
        return best_k(parts, k)

    def shard_info(self) -> list[dict[str, Any]]:
        """Each shard's `SegmentShard.info`."""
        import ray

        return ray.get([actor.info.remote() for actor in self.actors], timeout=SHARD_TIMEOUT)


def lost_reason(exc: BaseException) -> str:
    """The line of a Ray actor error that says why (an error raised opening its segments, most often)."""
    text = str(exc)
    for marker in ("GenomeIndexError: ", "Error: "):
        if marker in text:
            return first_line(text.split(marker, 1)[1])
    return first_line(text)


class ShardPool:
    """The Ray actors a searcher's queries go to, kept per group of segments across reloads."""

    def __init__(self, directory: Path, address: str, shards: int | None = None) -> None:
        from genome_index.ray_session import connect

        if shards is not None and shards < 1:
            raise GenomeIndexError("--ray-shards must be 1 or more")
        connect(address)
        self.directory = Path(directory).resolve()
        self.nodes, self.gpus = cluster_shape()  # [(node id, CPUs)], GPUs
        self.shards = shards or self.gpus or len(self.nodes)
        self._actors: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._lock = threading.Lock()
        log.info("searching on Ray: %d shard(s) over %d machine(s), %d GPU(s)", self.shards, len(self.nodes), self.gpus)

    def place(self, index: Any) -> Any:
        """`index` (a store's chunk index) searched on the shards when it is segmented: a
        `ShardedIndex`; any other (an `ivf-pq` store not yet trained) is searched here as it is."""
        stack = stack_of(index)
        if stack is None or not stack.listed:
            log.info("the chunk index is not segmented yet (an untrained store): searched in this process")
            return index
        groups = balanced(stack.listed, self.shards)
        with self._lock:
            kept = {}
            for number, group in enumerate(groups):
                key = (stack.generation, tuple(item.path.name for item in group))
                kept[key] = self._actors.get(key) or self._start(number, *key)
            self._actors = kept
        memory_only = stack.parts[len(stack.listed) :]  # committed since the last segment
        local = stacked(stack.trained, memory_only) if memory_only else None
        return ShardedIndex(list(kept.values()), local, index.ntotal, index.d)

    def _start(self, number: int, generation: int, names: tuple[str, ...]) -> Any:
        """A shard actor of some segments: on a GPU of its own where the cluster has GPUs, else on
        machine `number` (round the machines) with its share of that machine's CPUs."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        options: dict[str, Any] = {"max_restarts": RESTARTS, "max_task_retries": RESTARTS, "num_cpus": 0}
        if self.gpus:
            options["num_gpus"] = 1  # Ray places them
            threads = sum(cpus for _, cpus in self.nodes) // self.gpus
        else:  # elsewhere when its machine is gone
            node, cpus = self.nodes[number % len(self.nodes)]
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node, soft=True)
            threads = cpus // -(-self.shards // len(self.nodes))  # shards a machine, rounded up
        return _actor_class().options(**options).remote(str(self.directory), generation, list(names), max(1, threads))

    def close(self) -> None:
        """Stop every shard actor (those a query still holds end with it)."""
        import ray

        with self._lock:
            actors, self._actors = list(self._actors.values()), {}
        for actor in actors:
            ray.kill(actor, no_restart=True)


def cluster_shape() -> tuple[list[tuple[str, int]], int]:
    """The Ray cluster's live machines (node id, CPUs) and its GPUs."""
    import ray

    nodes = [(node["NodeID"], int(node["Resources"].get("CPU", 1))) for node in ray.nodes() if node.get("Alive")]
    return nodes, int(ray.cluster_resources().get("GPU", 0))
