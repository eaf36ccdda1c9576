"""What a build takes in: every input checked once (`InputCheck`), each one's name in the store,
which to embed and which are duplicates or stored already (`Intake`), and their labels."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING

from genome_index.errors import GenomeIndexError
from genome_index.io.fasta import Genome, summarise
from genome_index.io.labels import label_keys

if TYPE_CHECKING:
    from genome_index.build.run import BuildReport

log = logging.getLogger("genome_index")


class InputCheck:
    """Every input read once in a thread, keeping no sequence (`fasta.summarise`): `future` gives
    each file's SHA-256 once all are read, or fails on the first bad file (or file of reads,
    unless `reads_ok`); `sha_of` waits for one file's. `stop` ends the check after the file in
    hand (the future then never completes)."""

    def __init__(self, files: list[Path], reads_ok: bool = False) -> None:
        self.files, self.reads_ok = files, reads_ok
        self.stopping = threading.Event()
        self.hashes: dict[Path, str] = {}
        self.lengths: dict[Path, int] = {}
        self.future: Future = Future()
        self.changed = threading.Condition()
        threading.Thread(target=self._run, name="genome-index-validator", daemon=True).start()

    def stop(self) -> None:
        self.stopping.set()
        with self.changed:
            self.changed.notify_all()

    def _run(self) -> None:
        try:
            for path in self.files:
                if self.stopping.is_set():
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
            self.changed.wait_for(lambda: path in self.hashes or self.future.done() or self.stopping.is_set())
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


class CheckedInputs:
    """Inputs checked already (by Ray tasks, before anything is dispatched), behind the same
    interface as `InputCheck`."""

    def __init__(self, checked: dict[Path, tuple[str, int]]) -> None:
        self.hashes = {path: sha for path, (sha, _) in checked.items()}
        self.lengths = {path: length for path, (_, length) in checked.items()}
        self.future: Future = Future()
        self.future.set_result(dict(self.hashes))

    def sha_of(self, path: Path) -> str:
        return self.hashes[path]

    def stop(self) -> None:
        """Nothing runs: nothing to stop."""


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
