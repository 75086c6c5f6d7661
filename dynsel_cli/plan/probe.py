"""Label trust from a cross-validated probe: which given labels the data itself contradicts, confidently.

A label is judged by a model that never saw it. The rows are split into ``FOLDS`` folds by a hash of
their row number; for each fold a multinomial logistic regression on the SAE codes (each code is k
active units with their activations, L2-normalised; the probe's logits are a gather over those k units,
an embedding bag) is trained on the other folds and predicts the fold's class probabilities. So every
row gets *out-of-sample* probabilities p_i(c), and nothing N × C is kept: each probability is
recomputed from the fold models when a pass needs it.

From them, confident learning (Northcutt, Jiang, Chuang, "Confident Learning: Estimating Uncertainty in
Dataset Labels", JAIR 2021; the rule cleanlab's ``find_label_issues`` applies by default):

- **Thresholds.** t_c = the mean of p_i(c) over rows labelled c: how sure the probe typically is of a
  correct c.
- **Confident joint.** A row is counted in cell (given y, class j) when p_i(j) ≥ t_j, for the j with the
  largest p_i(j) among those; the counts are calibrated so that each given class's row sums to its size.
  Off-diagonal cells estimate how many rows labelled y are really j.
- **Prune by noise rate.** For each off-diagonal cell (y, j), the Q[y, j] rows labelled y with the
  largest margin p_i(j) − p_i(y) are suspects; a row competes in the cell of its most likely other
  class (so only that margin is kept per row). A row the probe predicts as its given label is never a
  suspect.
- **Evidence gate.** The probe must predict the given labels better than always guessing the largest
  class, beyond sampling error (accuracy > chance + 3·sqrt(chance·(1 − chance)/N)). A probe that
  cannot do that knows nothing about the labels, and then nobody is a suspect.
- **Filter check** (``check_filter``). Confident learning flags rows whose labels disagree with the
  probe; on fine-grained data many of those are correct but hard, and removing them costs accuracy. So
  the verdict is tested the way it will be used: for each fold, a second probe is trained on the other
  folds *without* their suspects, and both probes predict the fold's given labels. The suspects stand
  only if the probes trained without them predict held-out labels better, class-balanced (each row's hit
  weighs 1 / its class size), by more than two standard errors of the paired difference (McNemar's,
  weighted: sqrt of Σ w² over the rows exactly one of the two gets right):
  dropping them helps a model learn the labels the data keeps. Otherwise nobody is a suspect. This
  costs a second set of fold models.
- **Held-out cut** (:func:`held_out_cut`, ``--label-trust probe-heldout``; with the filter check
  first, :func:`checked_removal`, ``--label-trust probe-checked``). Instead of confident
  learning's count, the rows are ranked by the odds of their given label against the probe's best class,
  p_i(y_i) / max_c p_i(c) (lowest first; a row whose given label is the probe's guess has odds 1 and is
  never cut), and the cut is the share of rows whose removal lets fold probes trained without them
  predict held-out given labels best: shares 0.1, 0.2, … 0.5 are tried in turn until accuracy falls
  twice in a row, then the best one's neighbours ±0.05. If the best cut does not beat keeping every row
  by the same two standard errors, nobody is a suspect.

Everything is deterministic for a seed: numpy only (no threads in the arithmetic), folds and batch
orders from named streams.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from . import streams

FOLDS = 5
BATCH = 256
LEARNING_RATE = 0.05
WEIGHT_DECAY = 1e-4
TARGET_STEPS = 1000  # optimiser steps per fold model on small data (at least one pass over larger data)
_CHUNK = 1 << 15  # rows per chunk of every prediction pass
OTHERS = 3  # most likely other classes kept per row (the cells of the confident joint a row competes in)


@dataclass(frozen=True)
class LabelTrust:
    """Per-row verdicts of the probe (all [N]) and what they rest on."""

    suspects: np.ndarray  # bool: the label is confidently contradicted
    label_probability: np.ndarray  # float32: out-of-sample p_i(y_i)
    best_probability: np.ndarray  # float32: out-of-sample max_c p_i(c)
    accuracy: float  # out-of-sample accuracy of the probe against the given labels
    chance: float  # the largest class's share
    gate_open: bool  # the probe beats chance beyond sampling error (else no suspects)
    filtered_accuracy: float | None = None  # check_filter: class-balanced held-out accuracy without the suspects
    candidates: int = 0  # rows confident learning flagged, before the filter check (== suspects.sum() without it)
    correct: np.ndarray | None = None  # bool [N]: the out-of-fold prediction equals the given label
    filter_passed: bool | None = None  # check_filter: removal helped beyond the paired noise (None: not checked)

    @property
    def filter_rejected(self) -> bool:
        """The filter check ran and found no gain beyond noise from training without the flagged rows."""
        return self.filter_passed is False

    @property
    def separability(self) -> float:
        """(accuracy − chance) / (1 − chance), clipped to [0, 1]."""
        return (
            float(np.clip((self.accuracy - self.chance) / (1.0 - self.chance), 0.0, 1.0)) if self.chance < 1.0 else 0.0
        )


@dataclass
class _Probe:
    """One fold's softmax regression on codes: logits = Σ_k a_ik W[u_ik] + b."""

    weights: np.ndarray  # float32 [width, C]
    bias: np.ndarray  # float32 [C]

    def logits(self, units: np.ndarray, acts: np.ndarray) -> np.ndarray:
        return np.einsum("nk,nkc->nc", acts, self.weights[units]) + self.bias

    def probabilities(self, units: np.ndarray, acts: np.ndarray) -> np.ndarray:
        return _softmax(self.logits(units, acts))


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fold_of(n: int, seed: int, folds: int = FOLDS) -> np.ndarray:
    """Each row's fold (uint8 [N]), from a hash of (seed, row): independent of N and of the row order."""
    u = streams.hashed_uniform(seed, streams.PROBE, np.arange(n, dtype=np.uint64), np.zeros(n, dtype=np.uint64))
    return np.minimum((u * folds).astype(np.uint8), folds - 1)


def normalised_codes(units: np.ndarray, acts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(units int64 with padding → unit 0 at activation 0, activations float32 L2-normalised per row)."""
    units = np.asarray(units, dtype=np.int64)
    a = np.where(units >= 0, np.maximum(np.asarray(acts, dtype=np.float32), 0.0), 0.0).astype(np.float32)
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    a = np.divide(a, norms, out=np.zeros_like(a), where=norms > 0)
    return np.maximum(units, 0), a


def train_probe(
    units: np.ndarray,
    acts: np.ndarray,
    labels: np.ndarray,
    rows: np.ndarray,
    width: int,
    classes: int,
    seed: int,
    fold: int,
) -> _Probe:
    """Softmax regression on the codes of ``rows`` by mini-batch Adam (deterministic for a seed and fold)."""
    probe = _Probe(np.zeros((width, classes), np.float32), np.zeros(classes, np.float32))
    moments = [
        np.zeros_like(probe.weights),
        np.zeros_like(probe.weights),
        np.zeros_like(probe.bias),
        np.zeros_like(probe.bias),
    ]
    batches_per_pass = max(1, math.ceil(len(rows) / BATCH))
    passes = max(1, math.ceil(TARGET_STEPS / batches_per_pass))
    step = 0
    for p in range(passes):
        order = rows[np.random.default_rng([seed, p, streams.PROBE, fold]).permutation(len(rows))]
        for start in range(0, len(order), BATCH):
            batch = order[start : start + BATCH]
            step += 1
            _adam_step(probe, moments, units[batch], acts[batch], labels[batch], step)
    return probe


def _adam_step(
    probe: _Probe, moments: list[np.ndarray], units: np.ndarray, acts: np.ndarray, labels: np.ndarray, step: int
) -> None:
    residual = probe.probabilities(units, acts)
    residual[np.arange(len(labels)), labels] -= 1.0
    residual /= len(labels)
    grad_w = WEIGHT_DECAY * probe.weights
    flat_units, flat_acts = units.ravel(), acts.ravel()
    width = probe.weights.shape[0]
    for c in range(residual.shape[1]):  # one bincount per class: the sparse product codesᵀ · residual
        grad_w[:, c] += np.bincount(
            flat_units, weights=flat_acts * np.repeat(residual[:, c], units.shape[1]), minlength=width
        )
    grad_b = residual.sum(axis=0)
    beta1, beta2 = 0.9, 0.999
    for value, grad, m, v in (
        (probe.weights, grad_w, moments[0], moments[1]),
        (probe.bias, grad_b, moments[2], moments[3]),
    ):
        m *= beta1
        m += (1 - beta1) * grad
        v *= beta2
        v += (1 - beta2) * grad * grad
        m_hat = m / (1 - beta1**step)
        v_hat = v / (1 - beta2**step)
        value -= (LEARNING_RATE * m_hat / (np.sqrt(v_hat) + 1e-8)).astype(value.dtype)


def _out_of_fold(
    probes: list[_Probe], folds: np.ndarray, units: np.ndarray, acts: np.ndarray
) -> Iterator[tuple[int, int, np.ndarray]]:
    """(start, stop, p [rows, C]) in chunks: every row's probabilities from the probe that did not see it."""
    n = len(folds)
    for start in range(0, n, _CHUNK):
        stop = min(start + _CHUNK, n)
        p = np.empty((stop - start, probes[0].bias.shape[0]), dtype=np.float32)
        for f, probe in enumerate(probes):
            mine = np.flatnonzero(folds[start:stop] == f)
            if len(mine):
                p[mine] = probe.probabilities(units[start + mine], acts[start + mine])
        yield start, stop, p


def label_trust(
    units: np.ndarray, acts: np.ndarray, width: int, labels: np.ndarray, seed: int = 0, check_filter: bool = False
) -> LabelTrust:
    """Suspected mislabels by confident learning on a cross-validated code probe (see the module doc).

    ``labels``: class ids 0..C−1 (renumber first). ``seed``: folds and batch orders. ``check_filter``: keep
    the suspects only if probes trained without them predict held-out given labels at least as well.
    """
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    classes = int(labels.max()) + 1 if n else 1
    sizes = np.bincount(labels, minlength=classes)
    chance = float(sizes.max() / n) if n else 1.0
    nothing = LabelTrust(np.zeros(n, bool), np.ones(n, np.float32), np.ones(n, np.float32), chance, chance, False)
    if n < 2 * FOLDS or np.count_nonzero(sizes) < 2:
        return nothing
    units, acts = normalised_codes(units, acts)
    width = max(int(width), int(units.max()) + 1)
    folds = fold_of(n, seed)
    probes = [
        train_probe(units, acts, labels, np.flatnonzero(folds != f), width, classes, seed, f) for f in range(FOLDS)
    ]

    # pass 1: thresholds t_c and accuracy
    sums = np.zeros(classes, np.float64)
    correct = np.empty(n, bool)
    for start, stop, p in _out_of_fold(probes, folds, units, acts):
        y = labels[start:stop]
        np.add.at(sums, y, p[np.arange(len(y)), y].astype(np.float64))
        correct[start:stop] = p.argmax(axis=1) == y
    thresholds = sums / np.maximum(sizes, 1)
    accuracy = float(np.count_nonzero(correct)) / n
    # pass 2: each row's confident-joint class, its label probability, and its most likely other classes
    joint_class = np.full(n, -1, np.int32)
    others = min(OTHERS, classes - 1)
    other = np.empty((n, others), np.int32)
    margin = np.empty((n, others), np.float32)
    given = np.empty(n, np.float32)
    best_p = np.empty(n, np.float32)
    predicted_given = np.empty(n, bool)
    for start, stop, p in _out_of_fold(probes, folds, units, acts):
        rows = np.arange(stop - start)
        y = labels[start:stop]
        given[start:stop] = p[rows, y]
        best_p[start:stop] = p.max(axis=1)
        above = np.where(p >= thresholds[None, :].astype(np.float32), p, -1.0)
        best = above.argmax(axis=1)
        joint_class[start:stop] = np.where(above[rows, best] >= 0, best, -1)
        predicted_given[start:stop] = p.argmax(axis=1) == y
        p[rows, y] = -np.inf
        top = np.argsort(-p, axis=1, kind="stable")[:, :others]
        other[start:stop] = top
        margin[start:stop] = np.take_along_axis(p, top, axis=1) - given[start:stop, None]
    gate_open = accuracy > chance + 3.0 * math.sqrt(chance * (1.0 - chance) / n)
    if not gate_open:
        return LabelTrust(np.zeros(n, bool), given, best_p, accuracy, chance, False, correct=correct)
    noise = _calibrated_joint(labels, joint_class, sizes)
    suspects = _prune_by_noise_rate(labels, other, margin, noise) & ~predicted_given
    candidates = int(np.count_nonzero(suspects))
    if not check_filter or candidates == 0:
        return LabelTrust(suspects, given, best_p, accuracy, chance, True, None, candidates, correct)
    without = _held_out_correct(units, acts, labels, folds, ~suspects, width, classes, seed)
    weights = class_balanced_weights(labels)
    passed = significantly_better(without, correct, weights)
    if not passed:
        suspects = np.zeros(n, bool)
    return LabelTrust(
        suspects, given, best_p, accuracy, chance, True, _balanced(without, weights), candidates, correct, passed
    )


SIGNIFICANCE = 2.0  # standard errors a gain in held-out hits must exceed (paired, as in McNemar's test)


def significantly_better(candidate: np.ndarray, reference: np.ndarray, weights: np.ndarray | None = None) -> bool:
    """Whether the per-row correctness ``candidate`` beats ``reference`` on the same rows beyond noise:
    the gain in hits exceeds SIGNIFICANCE × sqrt(rows where exactly one of them is right) (McNemar's
    standard error). On 11,296 rows a gain of 4 hits is noise; one of 250 is not. ``weights``: per-row
    weights of the hits (class-balanced: 1 / the row's class size); the standard error is then
    sqrt(Σ w² over the discordant rows)."""
    w = np.ones(len(candidate)) if weights is None else np.asarray(weights, dtype=np.float64)
    gain = float(np.sum(w * candidate) - np.sum(w * reference))
    discordant = candidate != reference
    return gain > SIGNIFICANCE * math.sqrt(float(np.sum(w[discordant] ** 2)))


def class_balanced_weights(labels: np.ndarray) -> np.ndarray:
    """1 / (the row's class size): every class weighs the same in a held-out comparison, so removing the
    hard rows of small classes cannot pass for a gain because the large classes got easier."""
    sizes = np.bincount(labels)
    return 1.0 / sizes[labels].astype(np.float64)


def _balanced(correct: np.ndarray, weights: np.ndarray) -> float:
    return float(np.sum(weights * correct) / np.sum(weights))


CUT_SHARES = (0.1, 0.2, 0.3, 0.4, 0.5)  # shares of rows the held-out cut tries, in turn
CUT_REFINE = 0.05  # then the best share's neighbours at this distance


def held_out_cut(
    units: np.ndarray, acts: np.ndarray, width: int, labels: np.ndarray, seed: int = 0, base: LabelTrust | None = None
) -> tuple[LabelTrust, float]:
    """(verdict, chosen share): the suspects are the lowest-odds rows up to the share whose removal best
    helps fold probes predict held-out given labels (module doc, "Held-out cut"); none if no share helps.

    ``base``: the probe's verdict on these inputs when already computed (it is not computed again)."""
    labels = np.asarray(labels, dtype=np.int64)
    verdict = base if base is not None else label_trust(units, acts, width, labels, seed)
    n = len(labels)
    if not verdict.gate_open:
        return verdict, 0.0
    units, acts = normalised_codes(units, acts)
    width = max(int(width), int(units.max()) + 1)
    classes = int(labels.max()) + 1
    folds = fold_of(n, seed)
    odds = verdict.label_probability.astype(np.float64) / np.maximum(verdict.best_probability.astype(np.float64), 1e-12)
    order = np.argsort(odds, kind="stable")
    cuttable = int(np.count_nonzero(odds < 1.0))
    base_correct = verdict.correct if verdict.correct is not None else np.ones(n, bool)
    tried: dict[int, np.ndarray] = {0: base_correct}

    def cut_of(share: float) -> int:
        return min(round(share * n), cuttable)

    def accuracy_without(share: float) -> float:
        cut = cut_of(share)
        if cut not in tried:
            keep = np.ones(n, bool)
            keep[order[:cut]] = False
            tried[cut] = _held_out_correct(units, acts, labels, folds, keep, width, classes, seed)
        return _balanced(tried[cut], weights)

    weights = class_balanced_weights(labels)
    base_accuracy = _balanced(base_correct, weights)
    best, best_accuracy, previous, falls = 0.0, base_accuracy, base_accuracy, 0
    for share in CUT_SHARES:  # until accuracy falls twice in a row (one fall can be the probes' noise)
        accuracy = accuracy_without(share)
        if accuracy > best_accuracy:
            best, best_accuracy = share, accuracy
        falls = falls + 1 if accuracy < previous else 0
        if falls == 2:
            break
        previous = accuracy
    if best:
        for share in (best - CUT_REFINE, best + CUT_REFINE):
            if 0 < share <= CUT_SHARES[-1] and accuracy_without(share) > best_accuracy:
                best, best_accuracy = share, accuracy_without(share)
    cut = cut_of(best) if best else 0
    if cut and not significantly_better(tried[cut], base_correct, weights):  # the best cut's gain is within noise
        cut = 0
    suspects = np.zeros(n, bool)
    suspects[order[:cut]] = True
    chosen = LabelTrust(
        suspects,
        verdict.label_probability,
        verdict.best_probability,
        verdict.accuracy,
        verdict.chance,
        True,
        _balanced(tried[cut], weights),
        cut,
        base_correct,
        cut > 0,
    )
    return chosen, cut / n if n else 0.0


def checked_removal(units: np.ndarray, acts: np.ndarray, width: int, labels: np.ndarray, seed: int = 0) -> LabelTrust:
    """``--label-trust probe-checked``: remove rows only where the labels are noisy, as many as help most.

    Confident learning's flags decide *whether*: they must pass the filter check (probes trained without
    them predict held-out given labels at least as well), else nobody is a suspect. Where they pass, the
    suspects are whichever of confident learning's set and the held-out cut's lowest-odds rows lets
    held-out probes predict best (a tiny noise rate is below the cut's smallest share; a large one is
    where confident learning's count is least sure).
    """
    labels = np.asarray(labels, dtype=np.int64)
    checked = label_trust(units, acts, width, labels, seed, check_filter=True)
    if not checked.suspects.any():  # the check rejected the flags, or there were none, or the gate is shut
        return checked
    cut, _ = held_out_cut(units, acts, width, labels, seed, base=checked)
    if cut.suspects.any() and cut.filtered_accuracy is not None and checked.filtered_accuracy is not None:
        if cut.filtered_accuracy > checked.filtered_accuracy:
            return cut
    return checked


def _held_out_correct(
    units: np.ndarray,
    acts: np.ndarray,
    labels: np.ndarray,
    folds: np.ndarray,
    keep: np.ndarray,
    width: int,
    classes: int,
    seed: int,
) -> np.ndarray:
    """Whether each row's given label is predicted (bool [N]) by fold probes trained on the other folds'
    ``keep`` rows only."""
    probes = [
        train_probe(units, acts, labels, np.flatnonzero((folds != f) & keep), width, classes, seed, f)
        for f in range(FOLDS)
    ]
    correct = np.empty(len(labels), bool)
    for start, stop, p in _out_of_fold(probes, folds, units, acts):
        correct[start:stop] = p.argmax(axis=1) == labels[start:stop]
    return correct


def _calibrated_joint(labels: np.ndarray, joint_class: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """The confident joint [C, C], each given class's row rescaled to its size (confident learning's calibration)."""
    classes = len(sizes)
    counted = joint_class >= 0
    joint = np.zeros((classes, classes), np.float64)
    np.add.at(joint, (labels[counted], joint_class[counted]), 1.0)
    row_sums = joint.sum(axis=1, keepdims=True)
    return np.divide(joint * sizes[:, None], row_sums, out=np.zeros_like(joint), where=row_sums > 0)


def _prune_by_noise_rate(labels: np.ndarray, other: np.ndarray, margin: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """For each off-diagonal cell (y, j): the round(noise[y, j]) rows labelled y with the largest margin
    p(j) − p(y), largest first (ties to the lower row), among the rows that have j among their ``OTHERS``
    most likely other classes. A row may be chosen by several cells; it is one suspect."""
    classes = noise.shape[0]
    rows = np.repeat(np.arange(len(labels)), other.shape[1])
    cell = labels[rows] * classes + other.ravel()
    order = np.lexsort((rows, -margin.ravel(), cell))  # by cell, then margin descending, then row
    cells_sorted = cell[order]
    starts = np.searchsorted(cells_sorted, np.arange(classes * classes), side="left")
    ends = np.searchsorted(cells_sorted, np.arange(classes * classes), side="right")
    want = np.rint(noise).astype(np.int64)
    np.fill_diagonal(want, 0)
    take = np.minimum(want.ravel(), ends - starts)
    flagged = np.zeros(len(labels), bool)
    chosen = [order[s : s + t] for s, t in zip(starts, take) if t > 0]
    if chosen:
        flagged[rows[np.concatenate(chosen)]] = True
    return flagged
