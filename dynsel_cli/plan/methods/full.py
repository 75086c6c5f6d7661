"""full: every row in every epoch (the cost a plan saves is measured against it)."""

from __future__ import annotations

from .base import Chosen, Context, Method, all_rows


def select(context: Context) -> Chosen:
    return Chosen(all_rows(context.n, context.epochs))


METHOD = Method(name="full", help="every row in every epoch", select=select, position=3, quotas_apply=False)
