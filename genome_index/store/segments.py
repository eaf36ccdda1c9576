"""The chunk index of a large `ivf-pq` store: write-once segment files over one trained quantizer.

An `ivf-pq` store keeps an exact `chunks.faiss` until it holds `train_threshold(ivf_lists)`
chunk vectors (FAISS asks for at least 39 training vectors per inverted list); the build that reaches
it trains the coarse quantizer and the product quantiser once, on the vectors it holds, and from
then on adds each commit group's codes (not its vectors) to a segment:

    chunks.ivf/CURRENT           the generation readers use ("3"), replaced atomically
    chunks.ivf/3/trained.faiss   the trained IVF-PQ, empty: coarse centroids and PQ codebooks
    chunks.ivf/3/000001.faiss    the codes and ids of a block of committed chunks, written once
    chunks.ivf/3/MANIFEST        the segments finished: bytes, SHA-256, how many ids and their range

A segment file, once renamed into place, is never changed: a build writes the codes it gathered
since its last FAISS checkpoint as the next segment, so its memory follows one block's codes, and
a commit never rewrites what is on disk. A reader memory-maps every segment of the current
generation (FAISS's IO_FLAG_MMAP_IFC: a query reads only the lists it probes) and searches them
as one index (`HStackInvertedLists`: each probed list is that list in every segment, one after
the other), so results come merged by score. The pages a query maps stay the process's own until it
lets go of them: once MAPPED_BUDGET more are resident than after the last time, it drops them all
(`Stack.trim`; they stay in the kernel's page cache, so the next query maps them again without
reading the disk), so a reader's memory follows what it probes, not the store's size.

`reindex`, `remove` and `merge` write a whole new generation (`reindex` trains it afresh), switch
CURRENT to it, then delete the old one; a reader that still maps the old files keeps them until it
lets go.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import mmap
import os
import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from genome_index.errors import GenomeIndexError, first_line
from genome_index.store.files import replace_atomically, sha256_of
from genome_index.store.indexes import tune, write_atomically

SEGMENTS_DIR = "chunks.ivf"
CURRENT = "CURRENT"
TRAINED = "trained.faiss"
MANIFEST = "MANIFEST"  # a generation's segments: name, bytes, SHA-256, a line each
SEGMENT_VECTORS = 1 << 20  # a rewrite (`reindex`) writes segments of at most this many vectors
ADD_BLOCK = 65_536  # vectors encoded at a time
SEGMENT_NAME = re.compile(r"^(\d{6,})\.faiss$")
MAPPED_BUDGET = 512 << 20  # bytes of segment pages a reader maps before it lets go of them all (`Stack.trim`)
PAGE = os.sysconf("SC_PAGE_SIZE")
TIE_ROOM = 16  # results asked of FAISS beyond those wanted, so that ties at the cut are decided by id


def empty_like(trained: faiss.IndexIVFPQ) -> faiss.IndexIVFPQ:
    """A copy of a trained index with no vectors (where codes are gathered)."""
    index = faiss.clone_index(trained)
    index.reset()
    return index


class Segments:
    """The `chunks.ivf` folder of one store: its generations, their trained index and segments."""

    def __init__(self, store_directory: Path) -> None:
        self.folder = Path(store_directory) / SEGMENTS_DIR

    def generation(self) -> int | None:
        """The generation readers use; None when the store is not segmented."""
        try:
            text = (self.folder / CURRENT).read_text().strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise GenomeIndexError(f"{self.folder / CURRENT}: cannot read ({exc.strerror})") from None
        if not text.isdigit():
            raise GenomeIndexError(f"{self.folder / CURRENT}: not a generation number ({text[:40]!r})")
        return int(text)

    def trained(self, generation: int) -> faiss.IndexIVFPQ:
        """The trained, empty index of `generation`."""
        return self._read(self.folder / str(generation) / TRAINED, 0)

    def listed(self, generation: int) -> list[Listed]:
        """The segments of `generation` in the order they were written, as its MANIFEST lists
        them (a file not listed there was never finished)."""
        manifest = self.folder / str(generation) / MANIFEST
        try:
            lines = manifest.read_text().splitlines()
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as exc:
            raise GenomeIndexError(f"{manifest}: unreadable ({exc})") from None
        listed = []
        for line in lines:
            fields = line.split()
            if (
                len(fields) != 6 or not SEGMENT_NAME.match(fields[0]) or len(fields[2]) != 64
                or not all(f.lstrip("-").isdigit() for f in (fields[1], *fields[3:]))
            ):  # fmt: skip
                raise GenomeIndexError(f"{manifest}: not a list of segments ({line[:60]!r})")
            name, size, digest, count, first, last = fields
            listed.append(Listed(manifest.parent / name, int(size), digest, int(count), int(first), int(last)))
        return listed

    def paths(self, generation: int) -> list[Path]:
        """The segment files of `generation`, in the order they were written."""
        return [segment.path for segment in self.listed(generation)]

    def begin(self, trained: faiss.IndexIVFPQ) -> int:
        """A new generation folder holding `trained` (empty); readers see it once `publish`ed."""
        self.folder.mkdir(exist_ok=True)
        numbers = [int(p.name) for p in self.folder.iterdir() if p.name.isdigit()]
        generation = max([*numbers, self.generation() or 0]) + 1
        (self.folder / str(generation)).mkdir()
        write_atomically(self.folder / str(generation) / TRAINED, empty_like(trained))
        return generation

    def write(self, generation: int, codes: faiss.IndexIVFPQ) -> Path:
        """`codes` (vectors added to a copy of the generation's trained index) as its next
        segment, written once: the lists alone, beside an empty coarse quantizer; then listed,
        with its size and SHA-256, in the generation's MANIFEST (replaced atomically)."""
        folder = self.folder / str(generation)
        listed = self.listed(generation)
        names = [item.path.name for item in listed] + [p.name for p in folder.iterdir() if SEGMENT_NAME.match(p.name)]
        number = max((int(SEGMENT_NAME.match(name).group(1)) for name in names), default=0) + 1
        shell = faiss.IndexIVFPQ(faiss.IndexFlatIP(codes.d), codes.d, codes.nlist, codes.pq.M, codes.pq.nbits,
                                 faiss.METRIC_INNER_PRODUCT)  # fmt: skip
        shell.is_trained = True
        shell.replace_invlists(codes.invlists, False)
        shell.ntotal = codes.ntotal
        path = folder / f"{number:06d}.faiss"
        write_atomically(path, shell)
        ids = list_ids(codes)
        listed.append(Listed(path, path.stat().st_size, sha256_of(path), len(ids), int(ids.min()), int(ids.max())))
        replace_text(folder / MANIFEST, "".join(item.line() for item in listed))
        return path

    def damaged(self, generation: int) -> list[str]:
        """Segments of `generation` whose bytes are not those listed (read in full: for `check`)."""
        return [
            f"{item.path.relative_to(self.folder.parent)} differs from its SHA-256 in {MANIFEST}"
            for item in self.listed(generation)  # a file missing or of another size: `open` says
            if item.path.is_file() and item.path.stat().st_size == item.size and sha256_of(item.path) != item.sha256
        ]

    def ids(self, generation: int) -> np.ndarray:
        """Every id the generation's segments hold (read from every list: for `check`)."""
        parts = [self._read(item.path, faiss.IO_FLAG_MMAP_IFC) for item in self.listed(generation)]
        return np.concatenate([list_ids(part) for part in parts] or [np.empty(0, dtype=np.int64)])

    def publish(self, generation: int) -> None:
        """Make `generation` the one readers use (CURRENT replaced atomically), then remove the others."""
        replace_text(self.folder / CURRENT, f"{generation}\n")
        self.clean()

    def clean(self) -> None:
        """Remove every generation but the current one (a rewrite killed before it was published,
        or one replaced); only a writer holding the store's lock calls this."""
        if not self.folder.is_dir():
            return
        current = self.generation()
        for path in self.folder.iterdir():
            if path.name.isdigit() and int(path.name) != current and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
        if current is not None:
            listed = set(self.paths(current))
            for path in (self.folder / str(current)).glob("*.faiss"):
                if SEGMENT_NAME.match(path.name) and path not in listed:
                    path.unlink()  # written by a build killed before it listed it

    def discard(self) -> None:
        """The store is no longer segmented (rewritten exact, or as another index type)."""
        (self.folder / CURRENT).unlink(missing_ok=True)
        shutil.rmtree(self.folder, ignore_errors=True)

    def disk_bytes(self) -> int:
        """Bytes of every file in the folder."""
        if not self.folder.is_dir():
            return 0
        return sum(p.stat().st_size for p in self.folder.rglob("*") if p.is_file() and not p.is_symlink())

    def open(self, generation: int, names: Iterable[str] | None = None) -> tuple[faiss.IndexIVFPQ, list[Listed]]:
        """The generation's segments (those of `names` alone, where given: a shard of a search
        on Ray) as one searchable index, their lists memory-mapped and not read (a query reads
        the lists it probes), and what the MANIFEST says of each."""
        trained = self.trained(generation)
        listed = self.listed(generation)
        if names is not None:
            wanted = set(names)
            listed = [item for item in listed if item.path.name in wanted]
            if len(listed) != len(wanted):
                raise GenomeIndexError(f"{self.folder / str(generation)}: {MANIFEST} lacks segments asked for")
        for item in listed:  # a mapped file shorter than FAISS expects would crash the process
            found = item.path.stat().st_size if item.path.is_file() else None
            if found != item.size:
                what = "missing" if found is None else f"truncated ({found} of {item.size} bytes)"
                raise GenomeIndexError(f"{item.path}: {what}")
        parts = [self._read(item.path, faiss.IO_FLAG_MMAP_IFC) for item in listed]
        for item, part in zip(listed, parts, strict=True):
            if part.nlist != trained.nlist or part.code_size != trained.code_size or part.ntotal != item.count:
                raise GenomeIndexError(f"{item.path}: not the segment its {MANIFEST} line describes")
        return stacked(trained, parts, generation, listed), listed

    def _read(self, path: Path, flags: int) -> faiss.IndexIVFPQ:
        try:
            index = faiss.read_index(str(path), flags)
        except (RuntimeError, MemoryError) as exc:
            raise GenomeIndexError(f"{path}: unreadable ({first_line(exc)})") from None
        if not isinstance(index, faiss.IndexIVFPQ):
            raise GenomeIndexError(f"{path}: not an IVF-PQ index")
        return index


@dataclass(frozen=True)
class Listed:
    """One MANIFEST line: a finished segment, its bytes and SHA-256, and the ids it holds (how
    many, the smallest, the largest: a build's block of commits is a run of ids), so that
    opening a store checks the segments against DuckDB without reading their ids."""

    path: Path
    size: int
    sha256: str
    count: int
    first: int
    last: int

    def line(self) -> str:
        return f"{self.path.name} {self.size} {self.sha256} {self.count} {self.first} {self.last}\n"


@dataclass
class Stack:
    """What a stacked index is made of: FAISS does not own the parts' lists, so this (kept in the
    index's `referenced_objects`) keeps them alive, and says which generation they are of."""

    trained: faiss.IndexIVFPQ  # empty
    parts: list[faiss.IndexIVFPQ]
    lists: Any
    generation: int | None
    listed: tuple[Listed, ...] = ()  # the MANIFEST lines of the first parts; any after them are in memory only
    mapped: tuple[tuple[int, int], ...] = ()  # (address, bytes) where this process maps those files
    kept: int = 0  # bytes of mapped files resident after the last `trim`

    def trim(self) -> None:
        """Let go of the segments' mapped pages (MADV_DONTNEED) once the process holds
        MAPPED_BUDGET more bytes of mapped files than after the last time. The files are
        read-only and shared, so nothing is lost: a later query maps them again from the page
        cache. Without this, a reader's resident memory grows to every list it ever probed."""
        if not self.mapped or resident_file_bytes() - self.kept <= MAPPED_BUDGET:
            return
        for address, size in self.mapped:
            _LIBC.madvise(ctypes.c_void_p(address), ctypes.c_size_t(size), mmap.MADV_DONTNEED)
        self.kept = resident_file_bytes()


def stacked(
    trained: faiss.IndexIVFPQ,
    parts: Iterable[faiss.IndexIVFPQ],
    generation: int | None = None,
    listed: Iterable[Listed] = (),
) -> Any:
    """A copy of `trained` whose lists are those of every part, one after the other: a search
    of it is a search of all the parts with the results merged (`stack_of` tells its parts;
    `listed`: the segment files the first of them were read from)."""
    parts = list(parts)
    index = empty_like(trained)
    joined = None
    if parts:
        lists = faiss.InvertedListsPtrVector()
        for part in parts:
            lists.push_back(part.invlists)
        joined = faiss.HStackInvertedLists(lists.size(), lists.data())
        index.replace_invlists(joined, False)
        index.ntotal = sum(part.ntotal for part in parts)
    listed = tuple(listed)
    mapped = mapped_ranges(item.path for item in listed)
    index.referenced_objects = [Stack(trained, parts, joined, generation, listed, mapped, resident_file_bytes())]
    return tune(index)


_LIBC = ctypes.CDLL(None, use_errno=True)


def mapped_ranges(paths: Iterable[Path]) -> tuple[tuple[int, int], ...]:
    """(address, bytes) of every mapping of `paths` in this process (FAISS maps a segment whole),
    from /proc/self/maps; none where there is no such file (not Linux)."""
    wanted = {os.path.realpath(path) for path in paths}
    try:
        lines = Path("/proc/self/maps").read_text().splitlines() if wanted else []
    except OSError:
        return ()
    found = []
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5] in wanted:
            low, high = (int(bound, 16) for bound in fields[0].split("-"))
            found.append((low, high - low))
    return tuple(found)


def resident_file_bytes() -> int:
    """Bytes of this process's resident memory that are shared pages of files (statm's third
    field: what `trim` lets go of and the kernel can take back); 0 where unknown."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[2]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def search_stacked(index: Any, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, ids) of normalised queries over a stacked index (or its copy on a GPU),
    ties decided by id: FAISS is asked for TIE_ROOM more, so that the same store gives the same
    answer whatever its segments or shards (8-bit codes of near-identical windows tie exactly);
    then the reader lets go of mapped pages past its budget (`Stack.trim`)."""
    scores, ids = index.search(queries, min(k + TIE_ROOM, index.ntotal))
    if (stack := stack_of(index)) is not None:
        stack.trim()
    return best_k([(scores, ids)], k)


def best_k(parts: Iterable[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The top k (scores, ids) of each query over several searches' results, best first, ties in
    id order, places no search filled (id -1) last."""
    parts = list(parts)
    scores = np.concatenate([part[0] for part in parts], axis=1)
    ids = np.concatenate([part[1] for part in parts], axis=1)
    order = np.lexsort((ids, -scores, ids < 0), axis=1)[:, :k]
    return np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)


def stack_of(index: faiss.Index) -> Stack | None:
    """The parts of an index made by `stacked`; None for any other."""
    kept = getattr(index, "referenced_objects", None) or []
    return next((item for item in kept if isinstance(item, Stack)), None)


def list_ids(index: faiss.IndexIVF) -> np.ndarray:
    """Every id in an IVF index's lists (a copy)."""
    lists = index.invlists
    out = [
        faiss.rev_swig_ptr(lists.get_ids(i), size).copy() for i in range(index.nlist) if (size := lists.list_size(i))
    ]
    return np.concatenate(out) if out else np.empty(0, dtype=np.int64)


@dataclass(frozen=True)
class Codebook:
    """A generation's trained quantizer, as bytes a Ray worker can be sent and encode with (the
    driver then adds codes, not vectors: the coarse assignment is most of a commit's CPU), and
    their SHA-256, by which the driver takes only codes made with its own quantizer."""

    data: np.ndarray  # uint8: faiss.serialize_index of the trained, empty index
    digest: str
    code_size: int  # bytes of a vector's code: its list number, then its PQ code

    @classmethod
    def of(cls, trained: faiss.IndexIVFPQ) -> Codebook:
        data = faiss.serialize_index(empty_like(trained))
        return cls(data, hashlib.sha256(data.tobytes()).hexdigest(), trained.sa_code_size())

    def encoder(self) -> Callable[[np.ndarray], Codes]:
        """A function of normalised float32 vectors to their `Codes` (the quantizer read once)."""
        index = faiss.deserialize_index(self.data)
        return lambda unit: Codes(self.digest, index.sa_encode(np.ascontiguousarray(unit, dtype=np.float32)))


@dataclass(frozen=True)
class Codes:
    """A genome's chunk vectors encoded by the quantizer of `digest` (FAISS's standalone codes:
    each its list number, then its PQ code), in the order of its chunks."""

    digest: str
    codes: np.ndarray  # uint8 (chunks, sa_code_size)


class SegmentWriter:
    """A build's side of the segments: the codes of what it commits, gathered in memory and
    written as the generation's next segment at each `flush` (the writer's FAISS checkpoints)."""

    def __init__(self, segments: Segments, generation: int, trained: faiss.IndexIVFPQ | None = None) -> None:
        self.segments, self.generation = segments, generation
        self.template = empty_like(trained if trained is not None else segments.trained(generation))
        self.pending = empty_like(self.template)
        self.written = 0  # vectors in the segments this writer wrote

    @functools.cached_property
    def codebook(self) -> Codebook:
        """The generation's quantizer as sent to Ray workers (serialised once, when first asked)."""
        return Codebook.of(self.template)

    @property
    def ntotal(self) -> int:
        return self.written + self.pending.ntotal

    def add_with_ids(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        """Encode normalised vectors; their codes wait in memory for the next `flush`."""
        for lo in range(0, len(ids), ADD_BLOCK):
            self.pending.add_with_ids(vectors[lo : lo + ADD_BLOCK], np.ascontiguousarray(ids[lo : lo + ADD_BLOCK]))

    def add_codes(self, codes: Codes, ids: np.ndarray) -> bool:
        """Add codes made elsewhere (a Ray worker) with this generation's quantizer; False, and
        nothing added, when they were made with another (the caller encodes the vectors)."""
        if codes.digest != self.codebook.digest or len(codes.codes) != len(ids):
            return False
        self.pending.add_sa_codes(codes.codes, np.ascontiguousarray(ids, dtype=np.int64))
        return True

    def flush(self) -> None:
        """Write what was gathered as a new segment (nothing when nothing was)."""
        if self.pending.ntotal:
            self.segments.write(self.generation, self.pending)
            self.written += self.pending.ntotal
            self.pending = empty_like(self.template)


def replace_text(path: Path, text: str) -> None:
    """Replace a small text file atomically, never through a link."""
    replace_atomically(path, lambda handle: handle.write(text.encode()))
