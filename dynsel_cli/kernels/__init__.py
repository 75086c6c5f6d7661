"""Fused scoring/selection hot loop of dynsel: a numpy (CPU) path and a Triton (CUDA) path.

Both paths perform the same float32 operations in the same order and rank with the same exact integer
keys, so they select bit-identical plans (``docs/kernels.md`` states the arithmetic, the Philox layout and
the tie rule). Plain numpy in, numpy out.

Devices: ``"cpu"`` (numpy), ``"cuda"`` (Triton + torch on the GPU), ``"auto"`` (cuda when usable). For
tests there is also ``"triton-cpu"``: the Triton kernels on CPU torch tensors under ``TRITON_INTERPRET=1``
(which must be set before triton is first imported).

Triton and torch are imported lazily: this package imports with numpy alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from .. import devices
from ._common import check_factor_inputs, check_scalar_params, check_selection_inputs
from .cpu import factor_scores_cpu, select_epochs_cpu

__all__ = ["SelectionParams", "resolve_device", "factor_scores", "select_epochs", "DEVICES"]

#: Device names accepted by :func:`factor_scores` and :func:`select_epochs` ("triton-cpu" is for tests).
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "triton-cpu")


@dataclass(frozen=True)
class SelectionParams:
    """Settings of the per-epoch selection simulation (validated on construction).

    Per epoch ``t`` (0-based): ``B = R + λ_t·(D − R)``; penalty on the counts ``c`` of earlier selections
    normalised by ``r·max(t, 1)``; optional Gumbel noise; the ``n_select`` largest keys win.
    """

    n_select: int
    """Per-epoch budget (exact number of selected samples)."""
    lambdas: Sequence[float]
    """Scheduler weight λ(t) per selection epoch; its length is the number of epochs simulated."""
    ratio: float
    """Selection ratio r (> 0), used for the penalty normaliser r·t."""
    beta: float = 1.0
    """Usage-frequency penalty strength (>= 0; 0 disables the penalty)."""
    penalty: str = "additive"
    """``"additive"``: S = B − β·c/(r·max(t,1)); ``"multiplicative"``: S = B / (1 + β·c/(r·max(t,1)))."""
    decay: float = 1.0
    """Counts update c ← decay·c + 1[selected], decay in [0, 1] (1.0 = plain counts)."""
    tau: float = 0.0
    """Gumbel temperature (>= 0): key = S + τ·G; 0 gives a deterministic top-k."""
    seed: int = 0
    """Seed of the Philox stream, 0 <= seed < 2**32."""
    labels: np.ndarray | None = field(default=None, compare=False)
    """int64 [N] class ids 0..C-1; used only with ``class_quota``."""
    class_quota: np.ndarray | None = field(default=None, compare=False)
    """int64 [C] per-class budgets summing to ``n_select``, each at most the class size."""

    def __post_init__(self) -> None:
        check_scalar_params(
            self.n_select, self.lambdas, self.ratio, self.beta, self.penalty, self.decay, self.tau, self.seed
        )


def resolve_device(device: str) -> str:
    """Map ``"auto" | "cpu" | "cuda"`` to ``"cpu"`` or ``"cuda"`` for the scoring kernels (which need triton
    on CUDA); raises :class:`~dynsel_cli.errors.DeviceError` (a ValueError) when that device is not usable."""
    return devices.resolve_device(device, needs_triton=True)


def _resolve(device: str) -> str:
    if device == "triton-cpu":
        if not devices.triton_importable():
            raise ValueError("device 'triton-cpu' needs the triton package (pip install triton)")
        return device
    return resolve_device(device)


def factor_scores(
    units: np.ndarray, acts: np.ndarray, unit_freq: np.ndarray, device: str = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """Raw per-sample representativeness ``R`` and rarity ``D`` from SAE codes.

    Args:
        units: int32 [N, k] SAE unit ids; ``-1`` marks padding (weight 0).
        acts: float32 [N, k] activations, >= 0.
        unit_freq: float32 [m] share of samples using each unit, in [0, 1]; a unit with frequency 0
            contributes 0.
        device: ``"cpu"``, ``"cuda"``, ``"auto"`` (or ``"triton-cpu"`` in tests).

    Returns:
        ``(R_raw, D_raw)``, float32 [N] each: ``a_ij = acts_ij / Σ_j acts_ij`` (0 for an all-zero row),
        ``R_i = Σ_j a_ij·f[u_ij]``, ``D_i = Σ_j a_ij·L[u_ij]`` with ``L = float32(-log(float64(f)))``,
        accumulated sequentially over j in float32 (identical on every device).

    Raises:
        ValueError: on bad shapes, dtypes or values, or an unusable device.
    """
    units, acts, unit_freq = check_factor_inputs(units, acts, unit_freq)
    dev = _resolve(device)
    if dev == "cpu":
        return factor_scores_cpu(units, acts, unit_freq)
    from .triton_kernels import factor_scores_triton

    return factor_scores_triton(units, acts, unit_freq, torch_device="cpu" if dev == "triton-cpu" else "cuda")


def select_epochs(
    r_score: np.ndarray,
    d_score: np.ndarray,
    params: SelectionParams,
    device: str = "cpu",
    progress: Callable[[int], None] | None = None,
) -> Iterator[np.ndarray]:
    """Simulate the selection epochs and yield each epoch's selected sample indices.

    Args:
        r_score: float32 [N] representativeness, normalised to [0, 1] by the caller.
        d_score: float32 [N] rarity, normalised to [0, 1] by the caller.
        params: the selection settings.
        device: ``"cpu"``, ``"cuda"``, ``"auto"`` (or ``"triton-cpu"`` in tests).
        progress: called with the number of finished epochs after each epoch.

    Yields:
        For t = 0..len(params.lambdas)-1: int64 indices of the samples selected in epoch t, sorted
        ascending (exactly ``n_select`` of them; the caller shuffles). Identical on every device.

    Raises:
        ValueError: on bad inputs (checked before the first epoch is computed, i.e. on this call) or an
            unusable device.
    """
    r, d, labels, quota = check_selection_inputs(r_score, d_score, params)
    dev = _resolve(device)
    if dev == "cpu":
        return select_epochs_cpu(r, d, params, labels, quota, progress)
    from .triton_kernels import select_epochs_triton

    return select_epochs_triton(
        r, d, params, labels, quota, progress, torch_device="cpu" if dev == "triton-cpu" else "cuda"
    )
