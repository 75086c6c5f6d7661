"""kcenter: a greedy k-center cover of the feature space, the same in every epoch."""

from __future__ import annotations

from ..geometric import kcenter_greedy
from .base import Chosen, Context, Method, repeat


def select(context: Context) -> Chosen:
    assert context.vectors is not None
    vectors = context.vectors
    return Chosen(repeat(lambda: kcenter_greedy(vectors, context.budget, context.config.seed), context.epochs))


METHOD = Method(
    name="kcenter",
    help="a greedy k-center cover of the features (needs --features)",
    select=select,
    position=8,
    needs_features=True,
    quotas_apply=False,
)
