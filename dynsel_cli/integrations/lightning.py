"""PyTorch Lightning adapter: a ``LightningDataModule`` whose epoch ``e`` is plan epoch ``e``, in plan order.

:class:`PlanDataModule` serves the training data through a
:class:`~dynsel_cli.integrations.torch.PlanBatchSampler` (this rank's share of the epoch, the plan's batch
size). Lightning fixes an epoch's number of batches when it builds the train loader, and a plan's epochs
may differ in size, so the Trainer must rebuild the loader every epoch::

    trainer = lightning.pytorch.Trainer(max_epochs=plan.n_epochs, reload_dataloaders_every_n_epochs=1,
                                        use_distributed_sampler=False)

``train_dataloader()`` selects the Trainer's ``current_epoch`` on the sampler before returning the loader
(Lightning also calls ``set_epoch`` on it), and refuses a Trainer without those two settings.
:meth:`PlanDataModule.total_steps` is the number of optimizer steps, to size an LR schedule (Lightning's
``estimated_stepping_batches`` assumes every epoch is as long as the first).

Tested with lightning 2.6.
"""

from __future__ import annotations

import math
import os
from typing import Any

from torch.utils.data import DataLoader, Dataset

from ..formats.plan import Plan
from .torch import PlanBatchSampler, PlanUsageError, _as_plan, steps_per_epoch

try:
    from lightning.pytorch import LightningDataModule
except ImportError:  # the standalone package
    from pytorch_lightning import LightningDataModule  # type: ignore[no-redef]

__all__ = ["PlanDataModule"]


class PlanDataModule(LightningDataModule):
    """Training data of a plan for a Lightning ``Trainer``.

    Args:
        plan: a :class:`~dynsel_cli.formats.plan.Plan` or the path of a plan directory.
        train_dataset: a map-style data set indexed by the plan's sample ids.
        batch_size, drop_last: as for :class:`~dynsel_cli.integrations.torch.PlanBatchSampler` (default
            the manifest's).
        **dataloader_kwargs: passed to every ``DataLoader`` (``num_workers``, ``collate_fn``,
            ``pin_memory``, ...; not ``batch_size``, ``shuffle``, ``sampler`` or ``batch_sampler``).

    Rank and world size are the Trainer's ``global_rank`` and ``world_size``. :attr:`batch_sampler` is
    created on the first ``train_dataloader()`` call and reused, so its state carries across epochs.
    """

    def __init__(
        self,
        plan: Plan | str | os.PathLike[str],
        train_dataset: Dataset[Any],
        *,
        batch_size: int | None = None,
        drop_last: bool | None = None,
        **dataloader_kwargs: Any,
    ) -> None:
        super().__init__()
        clash = {"batch_size", "shuffle", "sampler", "batch_sampler"} & set(dataloader_kwargs)
        if clash:
            raise PlanUsageError(f"the plan decides {', '.join(sorted(clash))}; do not pass them to PlanDataModule")
        self.plan: Plan = _as_plan(plan)
        self.train_dataset = train_dataset
        self.batch_size = int(self.plan.manifest["batch_size"] if batch_size is None else batch_size)
        self.drop_last = bool(self.plan.manifest.get("drop_last", False) if drop_last is None else drop_last)
        self.dataloader_kwargs = dataloader_kwargs
        self.batch_sampler: PlanBatchSampler | None = None

    def batches_per_epoch(self, world_size: int | None = None) -> list[int]:
        """Batches (steps without gradient accumulation) of every plan epoch on each rank."""
        if world_size is None:
            trainer = getattr(self, "trainer", None)
            world_size = trainer.world_size if trainer is not None else int(self.plan.manifest["world_size"])
        return steps_per_epoch(self.plan, self.batch_size, world_size, self.drop_last)

    def total_steps(
        self, max_epochs: int | None = None, accumulate_grad_batches: int = 1, world_size: int | None = None
    ) -> int:
        """Optimizer steps of the first ``max_epochs`` plan epochs (default all) on each rank.

        Lightning steps the optimizer every ``accumulate_grad_batches`` batches and at the end of each epoch,
        so each epoch takes ``ceil(batches / accumulate_grad_batches)`` steps. Call it in
        ``configure_optimizers`` as ``self.trainer.datamodule.total_steps(self.trainer.max_epochs,
        self.trainer.accumulate_grad_batches)``.
        """
        batches = self.batches_per_epoch(world_size)
        epochs = self.plan.n_epochs if max_epochs is None or max_epochs < 0 else int(max_epochs)
        if epochs > self.plan.n_epochs:
            raise PlanUsageError(f"max_epochs={epochs}, but the plan {self.plan.path} has {self.plan.n_epochs} epochs")
        return sum(math.ceil(b / max(1, int(accumulate_grad_batches))) for b in batches[:epochs])

    def _check_trainer(self) -> None:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            raise PlanUsageError("PlanDataModule.train_dataloader() is called by a Lightning Trainer (trainer.fit)")
        if trainer.reload_dataloaders_every_n_epochs != 1:
            raise PlanUsageError(
                "Trainer(reload_dataloaders_every_n_epochs=1) is needed: a plan's epochs differ in size and Lightning "
                f"fixes an epoch's batch count when it builds the loader (got {trainer.reload_dataloaders_every_n_epochs})"
            )
        connector = getattr(trainer, "_accelerator_connector", None)
        if getattr(connector, "use_distributed_sampler", False) and getattr(connector, "is_distributed", False):
            raise PlanUsageError(
                "Trainer(use_distributed_sampler=False) is needed: the plan's batch sampler already gives each rank "
                "its share"
            )
        epochs = trainer.max_epochs
        if epochs is None or epochs < 0 or epochs > self.plan.n_epochs:
            raise PlanUsageError(
                f"Trainer(max_epochs={epochs}): set it to at most the plan's {self.plan.n_epochs} epochs "
                f"(plan {self.plan.path})"
            )
        empty = [e for e, b in enumerate(self.batches_per_epoch(trainer.world_size)[:epochs]) if b == 0]
        if empty:
            raise PlanUsageError(
                f"plan epoch(s) {empty} have no batch on this rank, and Lightning ends fit() at an empty epoch; "
                "train on a plan without empty epochs"
            )

    def train_dataloader(self) -> DataLoader[Any]:
        self._check_trainer()
        if self.batch_sampler is None:
            self.batch_sampler = PlanBatchSampler(
                self.plan,
                self.batch_size,
                self.drop_last,
                rank=self.trainer.global_rank,
                world_size=self.trainer.world_size,
            )
        # Lightning may start iterating (prefetching) before it calls set_epoch: select the epoch first.
        self.batch_sampler.set_epoch(self.trainer.current_epoch)
        return DataLoader(self.train_dataset, batch_sampler=self.batch_sampler, **self.dataloader_kwargs)
