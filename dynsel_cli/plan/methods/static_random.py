"""static-random: one uniform subset, the same in every epoch (a static-pruning control)."""

from __future__ import annotations

import numpy as np

from .. import streams
from .base import Chosen, Context, Method, repeat, uniform


def select(context: Context) -> Chosen:
    rng = np.random.default_rng([context.config.seed, 0, streams.RANDOM])
    return Chosen(
        repeat(lambda: uniform(context.n, context.budget, rng, context.labels, context.quotas), context.epochs)
    )


METHOD = Method(name="static-random", help="one uniform subset in every epoch", select=select, position=5)
