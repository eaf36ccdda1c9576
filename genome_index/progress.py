"""Progress of long work: the library reports to a `Progress`, the command line shows it.

A step counts an amount (bases, windows, vectors, pairs) towards a total that may be learnt
late (a build knows its bases once every input is validated), plus named counters such as
genomes and windows. `Progress` itself is silent, so library code reports unconditionally;
`Shown` draws a tqdm bar with rate and ETA on a terminal, writes one line a minute to a log
file (stderr not a terminal), and nothing when quiet.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import IO, Any

LOG_EVERY = 60.0  # seconds between progress lines when stderr is not a terminal
BAR_DELAY = 2.0  # a step shorter than this never shows a bar


class Step:
    """One step of long work; this base ignores every report."""

    def set_total(self, total: float | None = None, **count_totals: int) -> None:
        """The amount the step will reach, and totals of its counters (genomes=12)."""

    def advance(self, amount: float = 0, **counts: int) -> None:
        """`amount` more done, and counters moved on (genomes=1, windows=64)."""

    def gauge(self, **values: int) -> None:
        """Counters that are read, not counted (actors=4): shown as given, replacing the last."""

    def close(self) -> None:
        """The step is over (finished or abandoned); closing twice is harmless."""

    def __enter__(self) -> Step:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Progress:
    """Where long work reports; this base shows nothing."""

    def step(self, name: str, total: float | None = None, unit: str = "bp", **count_totals: int) -> Step:
        """A new step called `name`, counting `unit`s towards `total` (None: not known yet)."""
        return Step()


SILENT = Progress()


def amount(value: float, unit: str, named: bool = True) -> str:
    """`value` of `unit` as a person reads it: bases in Mbp, everything else as a count."""
    text = f"{value / 1e6:.2f}" if unit == "bp" else f"{value:,.0f}"
    return f"{text} {'Mbp' if unit == 'bp' else unit}" if named else text


def duration(seconds: float) -> str:
    """1h02m, 3m05s or 12s."""
    seconds = round(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class ShownStep(Step):
    """A step shown as a tqdm bar (terminal) or as a line every LOG_EVERY seconds (log file).
    Reports may come from several threads (a build's validator sets the total)."""

    def __init__(self, name: str, total: float | None, unit: str, counts: dict[str, int], stream: IO[str]) -> None:
        self.name, self.unit, self.stream = name, unit, stream
        self.total = total
        self.count_totals = dict(counts)
        self.counts: dict[str, int] = {}
        self.done = 0.0
        self.started = self.last_line = time.monotonic()
        self.lines = 0
        self.closed = False
        self.lock = threading.Lock()
        self.bar: Any = None
        if stream.isatty():
            from tqdm import tqdm

            scale = 1e-6 if unit == "bp" else 1
            self.bar = tqdm(
                total=None if total is None else total * scale, desc=name, unit="Mbp" if unit == "bp" else f" {unit}",
                unit_scale=scale if unit == "bp" else True, file=stream, delay=BAR_DELAY, dynamic_ncols=True,
            )  # fmt: skip

    def set_total(self, total: float | None = None, **count_totals: int) -> None:
        with self.lock:
            if total is not None:
                self.total = total
                if self.bar is not None:
                    self.bar.total = total * (1e-6 if self.unit == "bp" else 1)
            self.count_totals.update(count_totals)

    def advance(self, amount: float = 0, **counts: int) -> None:
        with self.lock:
            self.done += amount
            for key, value in counts.items():
                self.counts[key] = self.counts.get(key, 0) + value
            if self.bar is not None:
                self.bar.set_postfix_str(self._counters(), refresh=False)
                self.bar.update(amount * (1e-6 if self.unit == "bp" else 1))
            elif time.monotonic() - self.last_line >= LOG_EVERY:
                self._line()

    def gauge(self, **values: int) -> None:
        with self.lock:
            self.counts.update(values)
            if self.bar is not None:
                self.bar.set_postfix_str(self._counters())

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
            if self.bar is not None:
                self.bar.close()
            elif self.lines:  # a log that saw this step under way also sees it end
                self._line(final=True)

    def _counters(self) -> str:
        """`3/12 genomes, 1,024 windows`: counters with a total first, in the order given."""
        parts = []
        for key in [*self.count_totals, *(k for k in self.counts if k not in self.count_totals)]:
            value, of = self.counts.get(key, 0), self.count_totals.get(key)
            parts.append(f"{value:,}/{of:,} {key}" if of is not None else f"{value:,} {key}")
        return ", ".join(parts)

    def _line(self, final: bool = False) -> None:
        """`name: done/total (pct), counters, rate, ETA` on the stream."""
        now = time.monotonic()
        elapsed = max(now - self.started, 1e-9)
        text = f"{self.name}: {amount(self.done, self.unit)}"
        if self.total:
            text = f"{self.name}: {amount(self.done, self.unit, named=False)} of {amount(self.total, self.unit)}"
            text += f" ({100 * self.done / self.total:.0f} %)"
        if counters := self._counters():
            text += f", {counters}"
        rate = self.done / elapsed
        text += f", {amount(rate, self.unit)}/s"
        if final:
            text += f", done in {duration(elapsed)}"
        elif self.total and rate > 0:
            text += f", {duration(max(self.total - self.done, 0) / rate)} left"
        print(text, file=self.stream, flush=True)
        self.last_line = now
        self.lines += 1


class Shown(Progress):
    """Progress on stderr for the command line: a bar on a terminal, a line a minute in a log,
    nothing when `quiet`."""

    def __init__(self, quiet: bool = False, stream: IO[str] | None = None) -> None:
        self.quiet = quiet
        self.stream = stream

    def step(self, name: str, total: float | None = None, unit: str = "bp", **count_totals: int) -> Step:
        if self.quiet:
            return Step()
        return ShownStep(name, total, unit, count_totals, self.stream or sys.stderr)
