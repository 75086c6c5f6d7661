"""score: the paper's representativeness → rarity schedule with the usage-frequency penalty."""

from __future__ import annotations

from ..schedule import scheduler_weights
from .base import Chosen, Context, Method, score_epochs, scores_of


def select(context: Context) -> Chosen:
    config = context.config
    r, d = scores_of(context.inputs)
    weights = scheduler_weights(config.schedule, config.lambda_start, config.lambda_end, context.epochs)
    beta = 0.0 if config.penalty == "none" else config.beta
    return Chosen(score_epochs(r, d, weights, context, beta, config.tau), lambdas=list(weights))


METHOD = Method(
    name="score",
    help="the paper's representativeness/rarity score with a usage penalty",
    select=select,
    position=2,
    needs_triton=True,
    scores=("R", "D"),
)
