"""random: a fresh uniform subset each epoch (stratified by class under a class quota)."""

from __future__ import annotations

import numpy as np

from .. import streams
from .base import Chosen, Context, Method, uniform


def select(context: Context) -> Chosen:
    seed = context.config.seed
    rows = (
        uniform(
            context.n, context.budget, np.random.default_rng([seed, t, streams.RANDOM]), context.labels, context.quotas
        )
        for t in range(context.epochs)
    )
    return Chosen(rows)


METHOD = Method(name="random", help="a fresh uniform subset each epoch", select=select, position=4)
