"""Hugging Face ``transformers.Trainer`` adapter: train on a dynsel plan, epoch ``e`` on plan epoch ``e``.

:class:`PlanTrainer` is a ``Trainer`` whose training data loader draws this rank's share of the current
plan epoch, in plan order (a :class:`~dynsel_cli.integrations.torch.PlanSampler`; no reshuffling), and
whose step bookkeeping follows the plan instead of assuming that every epoch is as long as the first:

- the number of optimizer steps (``state.max_steps``, which sizes the LR schedule) is the sum over the
  trained epochs of ``ceil(batches_e / gradient_accumulation_steps)``; with the manifest's batch size,
  ``world_size`` and ``drop_last`` and no gradient accumulation it is ``manifest["total_steps"]``;
- each epoch runs exactly its own number of batches (epochs of a plan may differ in size), and an empty
  epoch is passed over instead of ending training;
- ``train(resume_from_checkpoint=...)`` maps the saved global step back to (plan epoch, batch in that
  epoch), so a resumed run feeds the ids that the interrupted one had not trained on.

The epochs trained are ``args.num_train_epochs`` (a whole number, at most ``plan.n_epochs``); build the
arguments with :func:`plan_training_arguments` to take the epoch count, batch size and ``drop_last`` from
the plan. ``max_steps`` must stay unset (-1): the plan fixes the steps.

This relies on ``Trainer`` internals (``set_initial_training_values``, ``_init_training_state``,
``_run_epoch``) that exist in transformers 5; it is tested with transformers 5.24 and accelerate 1.15.
"""

from __future__ import annotations

import inspect
import math
import os
from typing import Any

from torch.utils.data import IterableDataset
from transformers import Trainer, TrainingArguments

from ..formats.plan import Plan
from .torch import PlanSampler, PlanUsageError, _as_plan, steps_per_epoch

__all__ = ["PlanTrainer", "plan_training_arguments"]

_HOOKS = ("set_initial_training_values", "_init_training_state", "_run_epoch", "_get_train_sampler")
_INCOMPATIBLE_STRATEGIES = ("group_by_length", "batch_rebalance")


def plan_training_arguments(plan: Plan | str | os.PathLike[str], **kwargs: Any) -> TrainingArguments:
    """``TrainingArguments`` with ``num_train_epochs``, ``per_device_train_batch_size`` and
    ``dataloader_drop_last`` taken from the plan's manifest; ``kwargs`` set everything else (and may
    override those three, e.g. ``num_train_epochs=2`` to train only the plan's first two epochs)."""
    plan = _as_plan(plan)
    defaults = {
        "num_train_epochs": plan.n_epochs,
        "per_device_train_batch_size": int(plan.manifest["batch_size"]),
        "dataloader_drop_last": bool(plan.manifest.get("drop_last", False)),
    }
    return TrainingArguments(**{**defaults, **kwargs})


class PlanTrainer(Trainer):
    """A ``transformers.Trainer`` that trains epoch ``e`` on plan epoch ``e``, in plan order.

    Args:
        plan: a :class:`~dynsel_cli.formats.plan.Plan` or the path of a plan directory (keyword-only).
        *args, **kwargs: the ``Trainer``'s own. ``train_dataset`` must be a map-style data set indexed by
            the plan's sample ids.

    Rank and world size come from ``args.process_index`` / ``args.world_size`` (``torchrun`` sets them);
    each rank gets its share of every epoch, cut like ``DistributedSampler(shuffle=False)``, and
    Accelerate's own sharding of the loader is switched off (the share already is per rank). Batches are
    ``args.per_device_train_batch_size`` ids; ``args.dataloader_drop_last`` drops both the ranks' uneven
    tail and a partial last batch (the manifest's meaning of ``drop_last``).

    After ``train()`` starts, :attr:`plan_sampler` is the sampler in use and :attr:`plan_batches_per_epoch`
    the number of batches each trained epoch has on this rank.
    """

    def __init__(self, *args: Any, plan: Plan | str | os.PathLike[str], **kwargs: Any) -> None:
        missing = [name for name in _HOOKS if not callable(getattr(Trainer, name, None))]
        if missing:
            import transformers

            raise PlanUsageError(
                f"PlanTrainer needs Trainer.{', Trainer.'.join(missing)}, which transformers "
                f"{transformers.__version__} does not have; use transformers 5 (tested with 5.24)"
            )
        self.plan: Plan = _as_plan(plan)
        self.plan_sampler: PlanSampler | None = None
        self.plan_batches_per_epoch: list[int] = []
        self._plan_updates_per_epoch: list[int] = []
        super().__init__(*args, **kwargs)
        self._plan_epochs()  # fail at construction, not after the model was prepared

    # -- settings ----------------------------------------------------------------------------------

    def _plan_epochs(self) -> int:
        """How many plan epochs to train (``args.num_train_epochs``); refuses settings the plan cannot serve."""
        args = self.args
        if args.max_steps is not None and args.max_steps > 0:
            raise PlanUsageError(
                f"max_steps={args.max_steps}: the plan fixes the number of steps; leave max_steps at -1 and set "
                f"num_train_epochs (at most the plan's {self.plan.n_epochs} epochs)"
            )
        strategy = getattr(args, "train_sampling_strategy", None)
        if strategy in _INCOMPATIBLE_STRATEGIES:
            raise PlanUsageError(
                f"train_sampling_strategy={strategy!r} reorders the samples; the plan fixes their order "
                "(leave it at the default)"
            )
        epochs = args.num_train_epochs
        if epochs != int(epochs) or not 1 <= int(epochs) <= self.plan.n_epochs:
            raise PlanUsageError(
                f"num_train_epochs={epochs!r}: must be a whole number from 1 to the plan's {self.plan.n_epochs} "
                f"epochs (plan {self.plan.path}); plan_training_arguments(plan, ...) sets it to all of them"
            )
        if self.train_dataset is not None and isinstance(self.train_dataset, IterableDataset):
            raise PlanUsageError("the plan indexes its samples by id: train_dataset must be a map-style data set")
        return int(epochs)

    # -- data --------------------------------------------------------------------------------------

    def _get_train_sampler(self, *args: Any, **kwargs: Any) -> PlanSampler:
        """This rank's share of the current plan epoch, in plan order (replaces Trainer's random sampler)."""
        self.plan_sampler = PlanSampler(
            self.plan,
            rank=self.args.process_index,
            world_size=self.args.world_size,
            drop_last=self.args.dataloader_drop_last,
        )
        return self.plan_sampler

    def get_train_dataloader(self) -> Any:
        self._plan_epochs()
        loader = super().get_train_dataloader()
        if type(loader).__name__ == "DataLoaderDispatcher":
            raise PlanUsageError(
                "accelerator_config dispatch_batches=True makes rank 0 read for all ranks; every rank reads its own "
                "share of the plan (leave dispatch_batches unset)"
            )
        # With several processes Accelerate wraps the batches in a BatchSamplerShard that would shard them a
        # second time (and pad the last batch); make it a pass-through, as Trainer does for its own rank-aware
        # BatchRebalanceSampler.
        shard = getattr(loader, "batch_sampler", None)
        if shard is not None and hasattr(shard, "num_processes") and hasattr(shard, "batch_sampler"):
            shard.num_processes = 1
            shard.process_index = 0
            shard.even_batches = False
        return loader

    # -- step bookkeeping --------------------------------------------------------------------------

    def set_initial_training_values(self, args: TrainingArguments, dataloader: Any) -> tuple[Any, ...]:
        values = list(super().set_initial_training_values(args, dataloader))
        if len(values) != 7:
            raise PlanUsageError(
                "Trainer.set_initial_training_values returned an unexpected tuple; PlanTrainer is tested with "
                "transformers 5.24"
            )
        epochs = self._plan_epochs()
        sampler = self.plan_sampler
        assert sampler is not None, "get_train_dataloader() builds the plan sampler"
        batches = steps_per_epoch(
            self.plan,
            batch_size=self._train_batch_size,
            world_size=sampler.world_size,
            drop_last=bool(args.dataloader_drop_last),
        )[:epochs]
        accumulation = max(1, int(args.gradient_accumulation_steps))
        updates = [math.ceil(b / accumulation) for b in batches]
        if sum(updates) == 0:
            raise PlanUsageError(
                f"the plan's first {epochs} epoch(s) have no full batch of {self._train_batch_size} for this rank: "
                "nothing to train"
            )
        self.plan_batches_per_epoch = batches
        self._plan_updates_per_epoch = updates
        # (num_train_epochs, num_update_steps_per_epoch, num_examples, num_train_samples,
        #  total_train_batch_size, steps_in_epoch, max_steps)
        values[0] = epochs
        values[1] = max(updates)  # only a default: _run_epoch passes each epoch's own count
        values[3] = int(sum(self.plan.counts[:epochs]))
        values[5] = max(batches)
        values[6] = int(sum(updates))
        return tuple(values)

    def _init_training_state(
        self,
        max_steps: int,
        num_update_steps_per_epoch: int,
        num_train_epochs: int,
        resume_from_checkpoint: Any,
        trial: Any,
    ) -> tuple[int, int]:
        epochs_trained, steps_trained = super()._init_training_state(
            max_steps, num_update_steps_per_epoch, num_train_epochs, resume_from_checkpoint, trial
        )
        done = int(self.state.global_step)
        if resume_from_checkpoint is None or done == 0:
            return epochs_trained, steps_trained
        # Trainer divides by a fixed steps-per-epoch; a plan's epochs differ, so walk them.
        start = 0
        for epoch, updates in enumerate(self._plan_updates_per_epoch):
            if done < start + updates:
                in_epoch = 0 if self.args.ignore_data_skip else (done - start) * self.args.gradient_accumulation_steps
                return epoch, in_epoch
            start += updates
        return len(self._plan_updates_per_epoch), 0

    def _run_epoch(self, *args: Any, **kwargs: Any) -> Any:
        bound = inspect.signature(super()._run_epoch).bind(*args, **kwargs)
        epoch = int(bound.arguments["epoch"])
        assert self.plan_sampler is not None
        self.plan_sampler.set_epoch(epoch)
        batches = self.plan_batches_per_epoch[epoch]
        if batches == 0:  # Trainer would take an empty epoch for an exhausted data set and stop
            self.control = self.callback_handler.on_epoch_end(self.args, self.state, self.control)
            return None
        bound.arguments["steps_in_epoch"] = batches
        bound.arguments["num_update_steps_per_epoch"] = self._plan_updates_per_epoch[epoch]
        return super()._run_epoch(*bound.args, **bound.kwargs)
