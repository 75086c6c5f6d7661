"""The scheduler: the weight λ(t) on rarity (vs representativeness) at each selection epoch."""

from __future__ import annotations

import math

from ..errors import DynselError

SCHEDULES = ("cosine", "linear", "step", "constant")


def scheduler_weights(kind: str, start: float, end: float, n_epochs: int) -> list[float]:
    """λ for t = 0..n_epochs-1.

    cosine: end + (start - end)(1 + cos(π t / (n - 1))) / 2 (slow at both ends);
    linear: start + (end - start) t / (n - 1);
    step: start for t < n / 2, end afterwards;
    constant: start throughout (end is ignored).
    With one epoch every shape gives ``start``.
    """
    if kind not in SCHEDULES:
        raise DynselError(f"--schedule {kind!r}: use one of {', '.join(SCHEDULES)}")
    for name, value in (("--lambda-start", start), ("--lambda-end", end)):
        if not 0.0 <= value <= 1.0:
            raise DynselError(f"{name} {value}: must be in [0, 1]")
    if n_epochs <= 1:
        return [float(start)] * max(n_epochs, 0)
    weights = []
    for t in range(n_epochs):
        progress = t / (n_epochs - 1)
        if kind == "cosine":
            value = end + (start - end) * (1 + math.cos(math.pi * progress)) / 2
        elif kind == "linear":
            value = start + (end - start) * progress
        elif kind == "step":
            value = start if t < n_epochs / 2 else end
        else:
            value = start
        weights.append(float(value))
    return weights
