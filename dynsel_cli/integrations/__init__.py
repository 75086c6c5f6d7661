"""Trainer adapters for dynsel plans.

The adapters are optional imports so that ``dynsel_cli`` itself never needs the trainer's framework:

- :mod:`dynsel_cli.integrations.torch`: ``PlanSampler``, ``PlanBatchSampler``, ``steps_per_epoch``,
  ``total_steps`` for ``torch.utils.data.DataLoader`` (also in ``torchrun`` data-parallel processes).
- :mod:`dynsel_cli.integrations.transformers`: ``PlanTrainer``, a ``transformers.Trainer`` that trains
  epoch e on plan epoch e, and ``plan_training_arguments`` (extra ``trainers``).
- :mod:`dynsel_cli.integrations.lightning`: ``PlanDataModule``, a ``LightningDataModule`` serving the
  plan (extra ``trainers``).

Any other language reads the plan directory directly; see ``docs/consumers.md``.
"""
