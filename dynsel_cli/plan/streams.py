"""Named random streams: every random draw of a plan comes from one of these, keyed by the plan's seed.

A new method takes a new stream number here, so it can never reuse another's draws by accident. numpy
streams are ``np.random.default_rng([seed, epoch_or_pass, STREAM])``; hashed streams (one uniform per
sample and per value of a counter, independent of N and of the order samples are visited) come from
:func:`hashed_uniform`. The Gumbel noise of ``--method score`` is Philox keyed by (seed, epoch, sample) in
the kernels, outside these streams.
"""

from __future__ import annotations

import numpy as np

RANDOM = 0  # --method random: the subset of each epoch; static-random: epoch 0's
ORDER = 1  # the training order within every epoch (all methods)
RS2 = 2  # --method rs2: one permutation per pass (per class under quotas)
ROTATION = 3  # --method dynsel: the phase of each sample's next turn (hashed)
PROJECTION = 4  # --method dynsel: the fixed random projection of factor codes (not seeded by the plan seed)
PROBE = 5  # --method dynsel: the label probe's folds (hashed) and batch orders
# --method kcenter (plan/geometric.py) keys its two draws [seed, 2] (the PCA sample) and [seed, 3] (the first
# center). numpy pads a key with zeros, so these equal --method random's keys for epochs 2 and 3
# ([seed, 2, RANDOM], [seed, 3, RANDOM]); harmless, since a plan uses one method, but a new stream must end
# its key with a number of its own from this list.

_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection of uint64 that scrambles every input bit into every output bit."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def hashed_uniform(seed: int, stream: int, rows: np.ndarray, counter: np.ndarray) -> np.ndarray:
    """One uniform in [0, 1) per (seed, stream, row, counter): the same value whatever else is drawn."""
    with np.errstate(over="ignore"):
        key = _mix(np.uint64(seed) * _GOLDEN + np.uint64(stream))
        x = _mix(key ^ (np.asarray(rows, dtype=np.uint64) * _GOLDEN))
        x = _mix(x ^ (np.asarray(counter, dtype=np.uint64) + _GOLDEN))
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
