"""Progress reporting without a UI dependency.

Stages accept an optional :data:`ProgressFn`; the CLI passes one that drives a rich progress bar, tests
and library users pass nothing. Keeping rich out of the stages lets them run anywhere (a worker, a test).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class ProgressFn(Protocol):
    def __call__(self, task: str, done: int, total: int | None) -> None:
        """Report that ``done`` of ``total`` units of ``task`` are finished (total None: unknown)."""


def null_progress(task: str, done: int, total: int | None) -> None:
    """The default: report nothing."""


LogFn = Callable[[str], None]


def null_log(message: str) -> None:
    """The default logger: say nothing."""
