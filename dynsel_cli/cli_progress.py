"""Progress on stderr for the command line, behind the stages' plain ``progress(task, done, total)`` callback.

On a terminal: one rich bar per task, with the rate since the task's first report (model loading and
resumed work excluded). Elsewhere (logs, CI, batch jobs): a plain line at most every 15 s and when a task
completes, with the rate, so long runs are visibly alive. Stages never import this (nor rich).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .printable import printable


@dataclass
class _Clock:
    first: float
    first_done: int
    done: int = 0
    last_print: float = field(default=0.0)

    def rate(self, now: float) -> float:
        return (self.done - self.first_done) / max(now - self.first, 1e-9)


class ProgressDisplay:
    """A context manager that is the ``progress`` callback the stages call."""

    plain_interval_s = 15.0

    def __init__(self, console: Console) -> None:
        self.console = console
        self._clocks: dict[str, _Clock] = {}
        self._tasks: dict[str, Any] = {}
        self._bar: Progress | None = None

    def __enter__(self) -> ProgressDisplay:
        if self.console.is_terminal:
            columns = (
                TextColumn("{task.description:>8}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
            )
            self._bar = Progress(*columns, console=self.console, transient=True)
            self._bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def __call__(self, task: str, done: int, total: int | None) -> None:
        now = time.perf_counter()
        clock = self._clocks.setdefault(task, _Clock(first=now, first_done=done, last_print=now))
        clock.done = done
        rate = f"{clock.rate(now):,.1f}/s" if done > clock.first_done else ""
        if self._bar is not None:
            if task not in self._tasks:
                self._tasks[task] = self._bar.add_task(
                    escape(printable(task)), total=total, rate=""
                )  # the description is markup
            self._bar.update(self._tasks[task], completed=done, total=total, rate=rate)
            return
        finished = total is not None and done >= total
        if not finished and now - clock.last_print < self.plain_interval_s:
            return
        clock.last_print = now
        of_total = f"/{total}" if total is not None else ""
        self.console.print(
            f"{escape(printable(task))}: {done}{of_total} ({rate + ', ' if rate else ''}{now - clock.first:.0f}s)",
            highlight=False,
            soft_wrap=True,
        )

    def throughput(self, task: str) -> tuple[float, float]:
        """(seconds since the task's first report, units per second over that time) for a summary line."""
        clock = self._clocks.get(task)
        if clock is None:
            return 0.0, 0.0
        now = time.perf_counter()
        return now - clock.first, clock.rate(now)
