"""dynsel (the default): a rotation weighted by near-duplicate groups and label trust (docs/method.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..budget import class_floors, content_class_quotas
from ..rotation import weighted_rotation_epochs
from ..signals import compute_signals
from .base import Chosen, Context, Method

if TYPE_CHECKING:
    from ...config import PlanConfig


def select(context: Context) -> Chosen:
    config, inputs, labels = context.config, context.inputs, context.labels
    units, acts = inputs.codes if inputs.codes is not None else (None, None)
    signals = compute_signals(
        units, acts, int(inputs.manifest.get("width", 0)), labels,
        n=context.n,
        dedup=config.dedup,
        trust=config.trust,
        dup_cosine=config.dup_cosine,
        dup_rule=config.dup_rule,
        trust_full=config.trust_full,
        neighbours=config.neighbours,
        label_trust=config.label_trust,
    )  # fmt: skip
    quotas = context.quotas
    if config.class_quota == "content" and labels is not None:
        quotas = content_class_quotas(
            labels, signals.weights, context.budget, class_floors(labels, signals.groups, context.budget)
        )
    rows = weighted_rotation_epochs(
        signals.rotation_weights, context.budget, context.epochs, config.seed, labels, quotas, n=context.n
    )
    return Chosen(rows, signals=signals)


def _needs_codes(config: PlanConfig) -> bool:
    return config.dedup or config.trust


METHOD = Method(
    name="dynsel",
    help="rotation weighted by near-duplicate groups and label trust",
    select=select,
    position=0,
    needs_codes=_needs_codes,
)
