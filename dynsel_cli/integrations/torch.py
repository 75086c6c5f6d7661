"""PyTorch adapters: feed a dynsel plan to ``torch.utils.data.DataLoader``.

A plan fixes, before training, which sample ids every epoch trains on and in which order. These
adapters only *read* it:

- :class:`PlanSampler` yields this rank's share of epoch ``e``'s sample ids in plan order. The share is
  cut exactly like ``DistributedSampler(shuffle=False)`` cuts ``range(len(epoch))``: the epoch's list is
  padded to a multiple of ``world_size`` by wrapping around from its start (or truncated to one when
  ``drop_last``), and rank ``r`` takes items ``r, r + world_size, ...``.
- :class:`PlanBatchSampler` groups that share into batches of the plan's ``batch_size``, so that
  ``len(batch_sampler)`` equals ``manifest["steps_per_epoch"][e]`` for the plan's ``world_size``.
- :func:`steps_per_epoch` and :func:`total_steps` count the steps *this rank* takes, with the world size
  found the way the samplers find it (so, under ``torchrun``, call them after ``init_process_group``),
  so that an LR scheduler is built once, before the first epoch. The manifest's ``steps_per_epoch`` and
  ``total_steps`` stay what ``dynsel plan`` wrote: the counts for the manifest's ``world_size``
  (``--world-size``, 1 by default).

Both samplers can be checkpointed mid-epoch (``state_dict`` / ``load_state_dict``). Do not shard them a
second time (no ``DistributedSampler`` around them, no framework re-sharding): they already are per rank.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch.distributed as dist
from torch.utils.data import BatchSampler, Sampler

from ..errors import DynselError
from ..formats.plan import Plan, read_plan, steps_for

__all__ = [
    "PlanBatchSampler",
    "PlanSampler",
    "PlanUsageError",
    "rank_share",
    "steps_per_epoch",
    "total_steps",
]

_CHUNK = 1 << 16  # ids converted to Python ints at a time while iterating


class PlanUsageError(DynselError, ValueError):
    """A plan adapter was used in a way the plan cannot serve (epoch out of range, mismatched state)."""


def _as_plan(plan: Plan | str | os.PathLike[str]) -> Plan:
    """A :class:`Plan`, reading (and checksum-verifying) it when given a path."""
    if isinstance(plan, Plan):
        return plan
    if isinstance(plan, (str, os.PathLike)):
        return read_plan(Path(plan))
    raise TypeError(f"expected a Plan or a plan directory path, got {type(plan).__name__}")


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < minimum:
        raise PlanUsageError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _distributed_defaults(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """``(rank, world_size)``: the given values, else torch.distributed's when initialised, else (0, 1)."""
    initialised = dist.is_available() and dist.is_initialized()
    if world_size is None:
        world_size = dist.get_world_size() if initialised else 1
    if rank is None:
        rank = dist.get_rank() if initialised else 0
    world_size = _check_int("world_size", world_size, 1)
    rank = _check_int("rank", rank, 0)
    if rank >= world_size:
        raise PlanUsageError(f"rank {rank} is not below world_size {world_size}")
    return rank, world_size


def _check_epoch(plan: Plan, epoch: Any) -> int:
    """``epoch`` as an int if the plan has it; otherwise a PlanUsageError naming the plan's epoch count."""
    n = plan.n_epochs
    if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or not 0 <= int(epoch) < n:
        last = f"epochs 0..{n - 1}" if n else "no epochs"
        raise PlanUsageError(
            f"epoch {epoch!r} is not in the plan {plan.path}, which has {n} epoch(s) ({last}); "
            f"train for at most {n} epochs or make a plan with more (dynsel plan --epochs)"
        )
    return int(epoch)


def _share_length(count: int, world_size: int, drop_last: bool) -> int:
    """How many ids each rank gets from an epoch of ``count`` ids (DistributedSampler's num_samples)."""
    return count // world_size if drop_last else -(-count // world_size)


def rank_share(ids: np.ndarray, rank: int, world_size: int, drop_last: bool) -> np.ndarray:
    """Rank ``rank``'s share of ``ids``, cut like ``DistributedSampler(shuffle=False)``.

    Without ``drop_last`` the list is padded to a multiple of ``world_size`` by repeating it from its
    start (cyclically, if the padding is longer than the list); with ``drop_last`` it is truncated to a
    multiple. The share is every ``world_size``-th item from position ``rank``; its dtype is ``ids``'s.
    """
    n = len(ids)
    total = _share_length(n, world_size, drop_last) * world_size
    if total <= n:
        padded = ids[:total]
    else:
        padded = np.resize(np.asarray(ids), total)  # np.resize repeats cyclically: DistributedSampler's padding
    return np.ascontiguousarray(padded[rank::world_size])


def steps_per_epoch(
    plan: Plan | str | os.PathLike[str],
    batch_size: int | None = None,
    world_size: int | None = None,
    drop_last: bool | None = None,
) -> list[int]:
    """Optimizer steps this rank takes in each epoch of the plan: ``len(PlanBatchSampler(...))`` per epoch.

    ``world_size`` defaults as for :class:`PlanSampler`: ``torch.distributed.get_world_size()`` when a
    process group is initialised, else 1. ``batch_size`` and ``drop_last`` default to the manifest's.
    The result is ``manifest["steps_per_epoch"]`` exactly when these settings are the manifest's; for
    the manifest's own counts whatever the process group, read ``plan.manifest["steps_per_epoch"]``.
    """
    plan = _as_plan(plan)
    m = plan.manifest
    _, ws = _distributed_defaults(0, world_size)
    bs = _check_int("batch_size", m["batch_size"] if batch_size is None else batch_size, 1)
    dl = bool(m["drop_last"] if drop_last is None else drop_last)
    return [steps_for(int(c), bs, ws, dl) for c in plan.counts]


def total_steps(
    plan: Plan | str | os.PathLike[str],
    batch_size: int | None = None,
    world_size: int | None = None,
    drop_last: bool | None = None,
) -> int:
    """Optimizer steps this rank takes over the whole plan: the sum of :func:`steps_per_epoch`.

    Build the LR scheduler once from this number (e.g. ``OneCycleLR(opt, max_lr, total_steps=...)``);
    under ``torchrun``, after ``init_process_group``, so that it counts this rank's share. The
    manifest's ``total_steps`` is the count for the manifest's ``world_size`` (``dynsel plan
    --world-size``, 1 by default).
    """
    return int(sum(steps_per_epoch(plan, batch_size, world_size, drop_last)))


class PlanSampler(Sampler[int]):
    """Yields this rank's sample ids for the current epoch of a dynsel plan, in plan order.

    Args:
        plan: a :class:`~dynsel_cli.formats.plan.Plan` or the path of a plan directory (read and
            checksum-verified; pass ``read_plan(path, verify=False)`` to skip hashing on start).
        rank: this process's rank; default ``torch.distributed.get_rank()`` when a process group is
            initialised, else 0.
        world_size: number of ranks; default ``torch.distributed.get_world_size()`` when initialised,
            else 1. A value other than the manifest's ``world_size`` works, but the manifest's step
            counts then no longer apply (a warning says so; :func:`total_steps` and
            :func:`steps_per_epoch` find the same world size and count this rank's steps).
        drop_last: truncate each epoch to a multiple of ``world_size`` instead of padding it; default
            the manifest's ``drop_last``.

    Call :meth:`set_epoch` before each epoch, as with ``DistributedSampler``. ``len(sampler)`` is the
    length of this rank's full share of the current epoch (also right after a mid-epoch resume; see
    :attr:`remaining` for what is left).
    """

    def __init__(
        self,
        plan: Plan | str | os.PathLike[str],
        rank: int | None = None,
        world_size: int | None = None,
        drop_last: bool | None = None,
    ) -> None:
        self.plan: Plan = _as_plan(plan)
        self.rank, self.world_size = _distributed_defaults(rank, world_size)
        self.drop_last: bool = bool(self.plan.manifest.get("drop_last", False) if drop_last is None else drop_last)
        self.epoch: int = 0
        self._start = 0  # ids of self.epoch to skip on the next iteration (set by load_state_dict)
        self._position = 0  # ids of self.epoch handed out so far, including skipped ones
        self._token: object | None = None  # identifies the iteration allowed to update _position
        planned = self.plan.manifest.get("world_size")
        if planned is not None and int(planned) != self.world_size:
            warnings.warn(
                f"plan {self.plan.path} was made for world_size {planned} but is read with world_size "
                f"{self.world_size}: the manifest's steps_per_epoch/total_steps do not apply; "
                f"total_steps(plan) counts this rank's steps for the LR schedule",
                stacklevel=2,
            )

    # -- epochs ------------------------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch the next iteration yields. Raises PlanUsageError (a ValueError) past the plan.

        Setting the epoch that a :meth:`load_state_dict` just restored keeps the restored position, so
        the usual ``for epoch in range(start, n): sampler.set_epoch(epoch); ...`` loop resumes correctly.
        """
        epoch = _check_epoch(self.plan, epoch)
        if epoch != self.epoch:
            self.epoch = epoch
            self._start = 0
            self._position = 0
            self._token = None

    def rank_indices(self, epoch: int | None = None) -> np.ndarray:
        """This rank's full share of ``epoch`` (default: the current epoch) as an int64 array."""
        epoch = _check_epoch(self.plan, self.epoch if epoch is None else epoch)
        share = rank_share(self.plan.epochs[epoch], self.rank, self.world_size, self.drop_last)
        return share.astype(np.int64, copy=False)

    def rank_weights(self, epoch: int | None = None) -> np.ndarray | None:
        """Per-sample weights (float32) aligned with :meth:`rank_indices`, or None if the plan has none."""
        epoch = _check_epoch(self.plan, self.epoch if epoch is None else epoch)
        weights = self.plan.epoch_weights(epoch)
        if weights is None:
            return None
        return rank_share(weights, self.rank, self.world_size, self.drop_last).astype(np.float32, copy=False)

    def __len__(self) -> int:
        epoch = _check_epoch(self.plan, self.epoch)
        return _share_length(self.plan.counts[epoch], self.world_size, self.drop_last)

    @property
    def remaining(self) -> int:
        """Ids of the current epoch not yet handed out (after a resume: not handed out before it)."""
        return len(self) - self._position

    # -- iteration ---------------------------------------------------------------------------------

    def _begin(self) -> tuple[np.ndarray, int, object]:
        """Start an iteration of the current epoch: (share, first position, token); consumes a resume."""
        share = self.rank_indices(self.epoch)
        start, self._start = self._start, 0
        self._position = start
        token = self._token = object()
        return share, start, token

    def _advance(self, token: object, position: int) -> None:
        if self._token is token:
            self._position = position

    def __iter__(self) -> Iterator[int]:
        share, start, token = self._begin()
        position = start
        for chunk_start in range(start, len(share), _CHUNK):
            for sample_id in share[chunk_start : chunk_start + _CHUNK].tolist():
                position += 1
                self._advance(token, position)  # counted as handed out before the consumer sees it
                yield sample_id

    # -- checkpointing -----------------------------------------------------------------------------

    def state_dict(self, consumed: int | None = None) -> dict[str, Any]:
        """Where this sampler is: ``{"epoch", "consumed", "world_size", "plan_sha256"}``.

        ``consumed`` is how many of this rank's ids of ``epoch`` were handed out. A DataLoader with
        ``num_workers > 0`` pulls ids ahead of the training loop (prefetching), so for an exact resume in
        that case pass ``consumed`` yourself (samples this rank actually trained on this epoch). Every
        rank's share has the same length, so a state saved on rank 0 can be loaded on every rank.
        """
        position = self._position if consumed is None else _check_int("consumed", consumed, 0)
        return {
            "epoch": self.epoch,
            "consumed": int(position),
            "world_size": self.world_size,
            "drop_last": self.drop_last,
            "plan_sha256": self.plan.manifest.get("sha256"),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`: the next iteration continues exactly after the last id handed out.

        Raises PlanUsageError if the state belongs to another plan, another world size or drop_last, or
        points outside the plan.
        """
        sha = state.get("plan_sha256")
        if sha is not None and sha != self.plan.manifest.get("sha256"):
            raise PlanUsageError(
                f"sampler state is for another plan (sha256 {str(sha)[:12]}…, this plan {self.plan.path} has "
                f"{str(self.plan.manifest.get('sha256'))[:12]}…); resume with the plan the run started with"
            )
        for key, mine in (("world_size", self.world_size), ("drop_last", self.drop_last)):
            if key in state and state[key] != mine:
                raise PlanUsageError(
                    f"sampler state was saved with {key}={state[key]!r} but this sampler has {key}={mine!r}; "
                    "positions are per rank and do not carry over"
                )
        epoch = _check_epoch(self.plan, state.get("epoch"))
        length = _share_length(self.plan.counts[epoch], self.world_size, self.drop_last)
        consumed = _check_int("consumed", state.get("consumed", 0), 0)
        if consumed > length:
            raise PlanUsageError(
                f"sampler state says {consumed} ids of epoch {epoch} were consumed, but this rank's share "
                f"of that epoch has only {length}"
            )
        self.epoch = epoch
        self._start = consumed
        self._position = consumed
        self._token = None


class PlanBatchSampler(BatchSampler):
    """Batches of a :class:`PlanSampler`'s ids; pass it as ``DataLoader(dataset, batch_sampler=...)``.

    Args:
        plan: a plan, a plan directory path, or an existing :class:`PlanSampler` (whose rank, world size
            and drop_last are then used).
        batch_size: samples per batch on each rank; default the manifest's ``batch_size``.
        drop_last: drop both the ranks' uneven tail of an epoch and a partial last batch (the manifest's
            meaning, and what ``steps_for`` counts); default the manifest's ``drop_last`` (or, given a
            sampler, the sampler's).
        rank, world_size: as for :class:`PlanSampler` (only when ``plan`` is not a sampler).

    With the manifest's batch_size, world_size and drop_last, ``len(batch_sampler)`` equals
    ``manifest["steps_per_epoch"][epoch]``.
    """

    sampler: PlanSampler

    def __init__(
        self,
        plan: PlanSampler | Plan | str | os.PathLike[str],
        batch_size: int | None = None,
        drop_last: bool | None = None,
        *,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        if isinstance(plan, PlanSampler):
            if (rank is not None and rank != plan.rank) or (world_size is not None and world_size != plan.world_size):
                raise PlanUsageError("rank/world_size are taken from the given PlanSampler; do not pass others")
            sampler = plan
        else:
            sampler = PlanSampler(plan, rank=rank, world_size=world_size, drop_last=drop_last)
        batch = sampler.plan.manifest.get("batch_size") if batch_size is None else batch_size
        batch = _check_int("batch_size", batch, 1)
        super().__init__(sampler, batch, bool(sampler.drop_last if drop_last is None else drop_last))

    @property
    def plan(self) -> Plan:
        """The plan being read."""
        return self.sampler.plan

    @property
    def epoch(self) -> int:
        """The current epoch (shared with the underlying sampler)."""
        return self.sampler.epoch

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch of the next iteration (see :meth:`PlanSampler.set_epoch`)."""
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        share, start, token = self.sampler._begin()
        stop = len(share)
        if self.drop_last:
            stop = start + (stop - start) // self.batch_size * self.batch_size
        for lo in range(start, stop, self.batch_size):
            hi = min(lo + self.batch_size, stop)
            self.sampler._advance(token, hi)
            yield share[lo:hi].tolist()

    def state_dict(self, batches: int | None = None) -> dict[str, Any]:
        """The sampler's state plus ``batch_size`` and ``batches`` (batches of this epoch handed out).

        With a prefetching DataLoader (``num_workers > 0``) pass ``batches`` yourself: the number of
        optimizer steps done in the current epoch.
        """
        if batches is None:
            state = self.sampler.state_dict()
        else:
            batches = _check_int("batches", batches, 0)
            state = self.sampler.state_dict(consumed=min(batches * self.batch_size, len(self.sampler)))
        state["batch_size"] = self.batch_size
        state["batches"] = math.ceil(state["consumed"] / self.batch_size)
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` (or a sampler's); the next iteration starts at the next batch.

        A state with ``batches`` but no ``consumed`` resumes after ``batches * batch_size`` ids.
        """
        state = dict(state)
        if "consumed" not in state and "batches" in state:
            batches = _check_int("batches", state["batches"], 0)
            epoch = _check_epoch(self.plan, state.get("epoch"))
            length = _share_length(self.plan.counts[epoch], self.sampler.world_size, self.sampler.drop_last)
            state["consumed"] = min(batches * self.batch_size, length)
        self.sampler.load_state_dict(state)
