"""Trainer adapters for dynsel plans.

The adapters are optional imports so that ``dynsel_cli`` itself never needs the trainer's framework:

- :mod:`dynsel_cli.integrations.torch`: ``PlanSampler``, ``PlanBatchSampler``, ``steps_per_epoch``,
  ``total_steps`` for ``torch.utils.data.DataLoader``.

Any other language reads the plan directory directly; see ``docs/consumers.md``.
"""
