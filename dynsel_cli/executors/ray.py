"""The Ray executor: a session on a Ray cluster and an ordered pool of actors that each build their worker once.

A stage hands :class:`OrderedPool` a *worker factory* (a picklable callable: a module-level class with its
arguments) and a list of tasks. Each actor calls the factory once (loading the encoder or the SAE once per
actor), then runs tasks; the pool yields the results in task order, so the driver commits them through
the stage's one writer exactly as the local executor does and the artifact is the same.

Why actors and not Ray Data: the driver must write shards in order through the existing writer and
journal (``FeatureShards``, ``WorkDir``), with the local executor's batch composition, so that the output is
the same artifact and a killed driver resumes from its journal. An ordered map over long-lived actors
gives exactly that; a Ray Data pipeline would own batching, ordering and output writing.

Failures: a killed actor is restarted (``max_restarts``), building its worker again, and the tasks it
held are retried (``max_task_retries``); a worker's :class:`DynselError` comes back as a value and is
raised on the driver as the same one-line error.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import ray
import ray.exceptions

from ..errors import DynselError

MAX_RESTARTS = 3  # per actor: a worker killed more often than this (e.g. out of memory on every try) ends the run
MAX_TASK_RETRIES = 3
QUEUED_PER_ACTOR = 2  # tasks queued on each actor, so it starts the next without waiting for the driver
CONNECT_TIMEOUT_S = 5.0


@contextlib.contextmanager
def session(address: str | None) -> Iterator[None]:
    """Be connected to Ray inside the block. An existing connection (a caller's ``ray.init``) is used as it
    is; otherwise ``address`` (None: Ray's own resolution: ``RAY_ADDRESS``, a cluster ``ray start`` runs on
    this machine, else a new local Ray) is connected to, and disconnected from (a local Ray stopped) after."""
    if ray.is_initialized():
        yield
        return
    _probe(address)
    try:
        ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False, include_dashboard=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise DynselError(
            f"--ray-address {address or 'auto'}: cannot connect to a Ray cluster ({_first_line(exc)}); start one with `ray start --head` or leave --ray-address out"
        ) from None
    try:
        yield
    finally:
        ray.shutdown()


def _probe(address: str | None) -> None:
    """Refuse an address where nothing listens (ray.init would wait for it for minutes)."""
    explicit = address is not None
    address = address if explicit else os.environ.get("RAY_ADDRESS")
    if not address or address == "auto":
        return
    option = "--ray-address" if explicit else "RAY_ADDRESS"
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise DynselError(
            f"{option} {address}: use HOST:PORT (the Ray head's GCS port, 6379 by default), ray://HOST:PORT or auto"
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise DynselError(
            f"{option} {address}: no Ray cluster answers there ({reason}); start one with `ray start --head` or fix the address"
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@ray.remote
class _Actor:
    """One worker: its factory's result, built once per actor (again after a restart)."""

    def __init__(self, factory: Callable[[], Any], cwd: str) -> None:
        import torch

        torch.set_num_threads(1)  # one actor per CPU: threads would only contend
        if os.path.isdir(cwd):  # relative paths (a user encoder's module, torchscript:PATH) resolve as on the driver
            os.chdir(cwd)
        self.worker: Any = None
        self.error: DynselError | None = None
        try:
            self.worker = factory()
        except DynselError as exc:  # reported by describe(); raising here would restart the actor in a loop
            self.error = exc

    def describe(self) -> Any:
        return self.error if self.error is not None else self.worker.describe()

    def run(self, *task: Any) -> Any:
        try:
            return self.worker(*task)
        except DynselError as exc:  # a value, not a RayTaskError: the driver raises it as it is
            return exc


class OrderedPool:
    """``workers`` actors of one factory, each reserving one CPU and ``gpus_per_worker`` GPUs."""

    def __init__(self, factory: Callable[[], Any], workers: int, gpus_per_worker: float) -> None:
        _check_fits(workers, gpus_per_worker)
        options = {
            "num_cpus": 1,
            "num_gpus": gpus_per_worker,
            "max_restarts": MAX_RESTARTS,
            "max_task_retries": MAX_TASK_RETRIES,
        }
        self.actors = [_Actor.options(**options).remote(factory, os.getcwd()) for _ in range(workers)]  # type: ignore[attr-defined]

    def describe(self) -> list[Any]:
        """What each actor's worker says about itself (its ``describe()``), in actor order; raises a worker's
        construction error (a missing extra, an unknown encoder, no GPU) as the DynselError it is."""
        answers = [self._get(a.describe.remote(), "starting") for a in self.actors]
        for answer in answers:
            if isinstance(answer, DynselError):
                raise answer
        return answers

    def map(self, tasks: Sequence[tuple[Any, ...]], what: Callable[[tuple[Any, ...]], str] = repr) -> Iterator[Any]:
        """Run ``worker(*task)`` for every task on the actors; yield the results in task order.

        Each actor holds up to ``QUEUED_PER_ACTOR`` tasks; a new task goes to the actor with the fewest, so a
        slow actor gets fewer. At most twice that many results wait for an earlier one (bounded memory).
        """
        load = [0] * len(self.actors)
        running: dict[Any, int] = {}  # task reference → actor index, until it completes
        refs: dict[int, Any] = {}
        limit = 2 * QUEUED_PER_ACTOR * len(self.actors)
        submitted = 0
        for index, task in enumerate(tasks):
            while True:
                while submitted < len(tasks) and submitted - index < limit and min(load) < QUEUED_PER_ACTOR:
                    actor = load.index(min(load))
                    ref = self.actors[actor].run.remote(*tasks[submitted])
                    refs[submitted], running[ref] = ref, actor
                    load[actor] += 1
                    submitted += 1
                if refs[index] not in running:
                    break
                ready, _ = ray.wait(list(running), num_returns=1)
                for ref in ready:
                    load[running.pop(ref)] -= 1
            result = self._get(refs.pop(index), what(task))
            if isinstance(result, DynselError):
                raise result
            yield result

    def _get(self, ref: Any, what: str) -> Any:
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:  # a bug in the worker: raise it as the local executor would
            cause = exc.cause if isinstance(exc.cause, BaseException) else exc
            raise cause from None
        except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError) as exc:
            raise DynselError(
                f"a Ray worker was lost {MAX_RESTARTS + 1} times {what} ({_first_line(exc)}); check the workers' memory and logs (`ray logs`), or use fewer --workers"
            ) from None

    def close(self) -> None:
        for actor in self.actors:
            ray.kill(actor)


def _check_fits(workers: int, gpus_per_worker: float) -> None:
    """Refuse actors the cluster can never place: Ray would wait for them forever."""
    total = ray.cluster_resources()
    for name, each, option in (("CPU", 1.0, "--workers"), ("GPU", gpus_per_worker, "--gpus-per-worker")):
        need, have = workers * each, float(total.get(name, 0.0))
        if need > have:
            raise DynselError(
                f"--workers {workers} with {each:g} {name} each needs {need:g} {name}s; the Ray cluster has {have:g}; lower {option} or add nodes"
            )


def default_workers(gpus_per_worker: float) -> int:
    """Actors when --workers is not given: one per CPU of the cluster, or as many as its GPUs hold."""
    total = ray.cluster_resources()
    if gpus_per_worker > 0:
        return max(1, int(float(total.get("GPU", 0.0)) / gpus_per_worker))
    return max(1, int(float(total.get("CPU", 1.0))))


@contextlib.contextmanager
def pool(
    address: str | None, factory: Callable[[], Any], workers: int | None, gpus_per_worker: float, most: int
) -> Iterator[OrderedPool]:
    """A session and an :class:`OrderedPool` of ``workers`` actors (default: :func:`default_workers`; never
    more than ``most``, the number of tasks); the actors are ended after the block."""
    with session(address):
        count = max(1, min(workers or default_workers(gpus_per_worker), most))
        actors = OrderedPool(factory, count, gpus_per_worker)
        try:
            yield actors
        finally:
            actors.close()
