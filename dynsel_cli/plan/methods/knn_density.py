"""knn-density: the rows of densest feature neighbourhoods, the same in every epoch."""

from __future__ import annotations

from ..geometric import knn_density
from ..scores import normalise
from .base import Chosen, Context, Method, repeat, top


def select(context: Context) -> Chosen:
    assert context.vectors is not None
    density = normalise(knn_density(context.vectors), "rank")
    return Chosen(repeat(lambda: top(density, context), context.epochs))


METHOD = Method(
    name="knn-density",
    help="the densest feature neighbourhoods (needs --features)",
    select=select,
    position=7,
    needs_features=True,
)
