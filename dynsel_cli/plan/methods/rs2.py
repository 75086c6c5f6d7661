"""rs2: repeated sampling without replacement (Okanovic et al., ICLR 2024), a fresh permutation walked ratio*N at a time."""

from __future__ import annotations

from ..rotation import rs2_epochs
from .base import Chosen, Context, Method


def select(context: Context) -> Chosen:
    return Chosen(
        rs2_epochs(context.n, context.budget, context.epochs, context.config.seed, context.labels, context.quotas)
    )


METHOD = Method(name="rs2", help="a fresh permutation walked ratio*N at a time", select=select, position=1)
