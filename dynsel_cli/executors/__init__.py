"""Where a stage's work runs: ``local`` (this machine, the default) or ``ray`` (actors on a Ray cluster).

``dynsel extract`` and ``dynsel factors`` take ``--executor local|ray`` with ``--ray-address``,
``--workers`` and ``--gpus-per-worker``; how a stage runs never changes what it writes (docs/formats.md,
"Executors"). The Ray code is in :mod:`dynsel_cli.executors.ray`, imported only by :func:`ray_executor`:
importing ray is slow, and ``import dynsel_cli`` and ``dynsel --help`` must stay fast.
"""

from __future__ import annotations

from types import ModuleType
from typing import Protocol

from ..errors import DynselError, install_hint

EXECUTORS = ("local", "ray")


class ExecutorSettings(Protocol):
    """The config fields every stage with ``--executor`` has."""

    executor: str
    ray_address: str | None
    workers: int | None
    gpus_per_worker: float


def check_executor(config: ExecutorSettings, *, local_workers: bool) -> None:
    """Refuse executor settings that cannot work, before any work. ``local_workers``: whether the stage's
    local executor has workers of its own (extract's DataLoader processes; factors has none)."""
    if config.executor not in EXECUTORS:
        raise DynselError(f"--executor {config.executor!r}: use local or ray")
    if config.gpus_per_worker < 0:
        raise DynselError(f"--gpus-per-worker {config.gpus_per_worker}: must be 0 or more")
    if config.executor == "local":
        for name, value, default in (
            ("ray-address", config.ray_address, None),
            ("gpus-per-worker", config.gpus_per_worker, 0.0),
        ):
            if value != default:
                raise DynselError(f"--{name} applies to --executor ray; add --executor ray or leave --{name} out")
        if config.workers is not None and not local_workers:
            raise DynselError(
                "--workers sets the Ray actors of --executor ray; the local executor encodes in this process, so leave --workers out"
            )
        return
    if config.workers is not None and config.workers < 1:
        raise DynselError(f"--workers {config.workers}: --executor ray needs at least 1 actor")
    ray_executor()


def ray_executor() -> ModuleType:
    """:mod:`dynsel_cli.executors.ray`, or a one-line error naming the extra to install."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise DynselError(f"--executor ray needs the ray extra: {install_hint('ray')}") from None
    from . import ray as module

    return module
