"""static-top: the most representative rows, the same in every epoch."""

from __future__ import annotations

from .base import Chosen, Context, Method, repeat, scores_of, top


def select(context: Context) -> Chosen:
    r = scores_of(context.inputs)[0]
    return Chosen(repeat(lambda: top(r, context), context.epochs))


METHOD = Method(
    name="static-top",
    help="the most representative rows in every epoch",
    select=select,
    position=6,
    needs_triton=True,
    scores=("R",),
)
