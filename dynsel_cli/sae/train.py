"""Training a TopK SAE on features: normalisation, AuxK, decoder-norm constraint, early stopping."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..config import SaeConfig, as_settings
from ..devices import torch_device
from ..errors import DynselError
from ..formats.common import atomic_directory
from ..formats.features import read_features
from ..formats.sae import SaeWeights, write_sae
from ..progress import ProgressFn, null_progress
from .model import TopKSae, fvu, geometric_median


def auto_width(n_samples: int) -> int:
    """Default width: the power of two nearest N/4, within [256, 4096] (enough samples per unit)."""
    return int(min(4096, max(256, 2 ** round(math.log2(max(n_samples, 1) / 4)))))


def default_lr(width: int) -> float:
    """Gao et al. 2024: lr = 2e-4 / sqrt(width / 2^14)."""
    return 2e-4 / math.sqrt(width / 2**14)


@dataclass
class _Normaliser:
    mean: torch.Tensor
    scale: torch.Tensor

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.scale


def _check_config(config: SaeConfig, n: int, d: int) -> int:
    width = config.width if config.width > 0 else auto_width(n)
    if config.k < 1 or config.k > width:
        raise DynselError(f"--k {config.k}: must be between 1 and the width ({width})")
    if config.epochs < 1:
        raise DynselError(f"--epochs {config.epochs}: must be at least 1")
    if config.batch_size < 1:
        raise DynselError(f"--batch-size {config.batch_size}: must be at least 1")
    if not 0 < config.holdout < 0.5:
        raise DynselError(f"--holdout {config.holdout}: must be in (0, 0.5)")
    if n < 4:
        raise DynselError(f"the features hold {n} samples; an SAE needs at least 4")
    return width


def train_sae(vectors: np.ndarray, config: SaeConfig, progress: ProgressFn = null_progress) -> tuple[SaeWeights, dict[str, Any]]:
    """Train on float32 vectors [N, d]; returns the best (lowest held-out FVU) weights and the metrics."""
    if not np.isfinite(vectors).all():
        raise DynselError("the features contain NaN or Inf; re-extract or clean them")
    n, d = vectors.shape
    width = _check_config(config, n, d)
    device = torch_device(config.device)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(n, generator=generator)
    n_holdout = max(1, round(config.holdout * n))
    holdout_rows, train_rows = order[:n_holdout], order[n_holdout:]
    data = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
    train = data[train_rows]
    mean = train.mean(dim=0)
    scale = ((train - mean).pow(2).sum(dim=1).mean() / d).sqrt().clamp_min(1e-12)
    norm = _Normaliser(mean, scale)
    train_x = norm(train).to(device)
    holdout_x = norm(data[holdout_rows]).to(device)

    model = TopKSae(d, width, config.k)
    median_sample = train_x[torch.randperm(len(train_x), generator=generator)[:8192].to(device)]
    model.init_weights(generator, geometric_median(median_sample.cpu()))
    model.to(device)
    lr = config.lr if config.lr is not None else default_lr(width)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr, eps=6.25e-10)
    steps_since_fired = torch.zeros(width, dtype=torch.long, device=device)
    k_aux = max(1, d // 2)

    history: list[dict[str, float]] = []
    best_fvu, best_state, stale = math.inf, None, 0
    steps_per_epoch = math.ceil(len(train_x) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    step = 0
    for epoch in range(config.epochs):
        perm = torch.randperm(len(train_x), generator=generator).to(device)
        epoch_loss, epoch_fired = 0.0, torch.zeros(width, dtype=torch.bool, device=device)
        for batch_start in range(0, len(train_x), config.batch_size):
            x = train_x[perm[batch_start : batch_start + config.batch_size]]
            encoded = model.encode(x)
            reconstruction = model.decode(encoded.values, encoded.indices)
            loss = fvu(x, reconstruction)
            fired = torch.zeros(width, dtype=torch.bool, device=device)
            fired[encoded.indices[encoded.values > 0]] = True
            epoch_fired |= fired
            steps_since_fired = torch.where(fired, 0, steps_since_fired + 1)
            dead = steps_since_fired > config.dead_steps
            if config.auxk_coef > 0 and bool(dead.any()):
                loss = loss + config.auxk_coef * _auxk_loss(model, x, reconstruction, encoded.pre_acts, dead, k_aux)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            model.remove_parallel_grad()
            optimiser.step()
            model.normalise_decoder()
            epoch_loss += float(loss.detach()) * len(x)
            step += 1
            progress("fit-sae", step, total_steps)
        held_out = evaluate(model, holdout_x)
        record = {
            "epoch": epoch + 1,
            "train_loss": epoch_loss / len(train_x),
            "fvu": held_out["fvu"],
            "l0": held_out["l0"],
            "dead_fraction_epoch": 1.0 - float(epoch_fired.float().mean()),
        }
        history.append(record)
        if held_out["fvu"] < best_fvu * (1 - 1e-3):
            best_fvu, stale = held_out["fvu"], 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if stale >= config.patience:
                break
    assert best_state is not None
    model.load_state_dict(best_state)
    all_x = norm(data).to(device)
    final = evaluate(model, holdout_x)
    dead_fraction = _dead_fraction(model, all_x, config.batch_size * 16)
    weights = SaeWeights(
        encoder_weight=model.encoder.weight.detach().cpu(),
        encoder_bias=model.encoder.bias.detach().cpu(),
        decoder_weight=model.W_dec.detach().cpu(),
        decoder_bias=model.b_dec.detach().cpu(),
        input_mean=mean,
        input_scale=scale.reshape(1),
        k=config.k,
    )
    metrics = {
        "fvu": final["fvu"],
        "l0": final["l0"],
        "dead_fraction": dead_fraction,
        "width": width,
        "k": config.k,
        "lr": lr,
        "epochs_run": len(history),
        "steps": step,
        "n_train": int(len(train_x)),
        "n_holdout": int(n_holdout),
        "history": history,
    }
    return weights, metrics


def _auxk_loss(model: TopKSae, x: torch.Tensor, reconstruction: torch.Tensor, pre_acts: torch.Tensor, dead: torch.Tensor, k_aux: int) -> torch.Tensor:
    """Reconstruct the residual with the top dead units only (revives them); normalised like FVU."""
    k = min(k_aux, int(dead.sum()))
    values, indices = (pre_acts * dead).topk(k, dim=1)
    residual = (x - reconstruction).detach()
    residual_hat = model.decode(values, indices, with_bias=False)
    return fvu(residual, residual_hat)


@torch.no_grad()
def evaluate(model: TopKSae, x: torch.Tensor) -> dict[str, float]:
    encoded = model.encode(x)
    reconstruction = model.decode(encoded.values, encoded.indices)
    return {"fvu": float(fvu(x, reconstruction)), "l0": float((encoded.values > 0).sum(dim=1).float().mean())}


@torch.no_grad()
def _dead_fraction(model: TopKSae, x: torch.Tensor, batch: int) -> float:
    fired = torch.zeros(model.width, dtype=torch.bool, device=x.device)
    for start in range(0, len(x), batch):
        encoded = model.encode(x[start : start + batch])
        fired[encoded.indices[encoded.values > 0]] = True
    return 1.0 - float(fired.float().mean())


def fit_sae(features: Path, out: Path, config: SaeConfig = SaeConfig(), progress: ProgressFn = null_progress) -> dict[str, Any]:
    """The fit-sae stage: read features, train, write the checkpoint atomically; returns its manifest."""
    table = read_features(Path(features))
    weights, metrics = train_sae(table.vectors, config, progress)
    settings = as_settings(config)
    settings.pop("device")
    with atomic_directory(Path(out)) as tmp:
        manifest = write_sae(
            tmp,
            weights,
            metrics,
            {
                "dynsel_version": __version__,
                "created_by": "dynsel fit-sae",
                "inputs": {"features": table.fingerprint},
                "settings": settings,
                "metrics": {k: metrics[k] for k in ("fvu", "l0", "dead_fraction")},
            },
        )
    return manifest
