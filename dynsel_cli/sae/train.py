"""Training a TopK SAE on features (Gao et al. 2024's recipe; docs/sae.md says what and why).

Per step: normalised batch → sparse TopK encode → decode → loss = FVU + auxk_coef · AuxK → backward (only
the selected units get encoder gradients) → remove the decoder gradient parallel to each decoder row →
Adam → renormalise decoder rows. Per epoch: held-out FVU, L0 and the epoch's dead share are logged and
recorded, the best weights (lowest held-out FVU) are kept, training stops when the held-out FVU has not
improved for ``patience`` epochs, and the whole state is checkpointed so a killed run resumes.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import SaeConfig
from ..devices import torch_device
from ..errors import DynselError
from ..formats.common import atomic_directory, fingerprint
from ..formats.features import read_features_manifest
from ..formats.output import check_output
from ..formats.sae import KIND as SAE_KIND
from ..formats.sae import SaeWeights, write_sae
from ..progress import LogFn, ProgressFn, null_log, null_progress
from ..provenance import provenance
from . import resume as ckpt
from .data import FeatureStream, holdout_size
from .model import TopKSae, fvu, geometric_median

ADAM_EPS = 6.25e-10  # Gao et al. 2024
EVAL_ROWS = 4096  # rows encoded at once when evaluating
SAMPLES_SEEN = 1_750_000  # training samples the auto epoch count aims at (30 epochs of Fashion-MNIST's 57k)


def auto_width(n_samples: int) -> int:
    """Default width: the power of two nearest N/4, within [256, 4096] (enough samples per unit)."""
    return int(min(4096, max(256, 2 ** round(math.log2(max(n_samples, 1) / 4)))))


def default_lr(width: int, batch_size: int = 256) -> float:
    """Gao et al. 2024's lr = 2e-4 / sqrt(width / 2^14), times sqrt(batch_size / 256) (measured: docs/sae.md)."""
    return 2e-4 / math.sqrt(width / 2**14) * math.sqrt(batch_size / 256)


def auto_batch_size(n_train: int) -> int:
    """Default batch: the power of two nearest N_train / 64, within [128, 1024] (≥ 64 steps per epoch when N allows)."""
    return int(min(1024, max(128, 2 ** round(math.log2(max(n_train, 1) / 64)))))


def auto_epochs(n_train: int) -> int:
    """Default epochs: 30, or fewer so that about 1.75M samples are seen (1 epoch from 1.75M samples on)."""
    return int(min(30, max(1, math.ceil(SAMPLES_SEEN / max(n_train, 1)))))


def check_config(config: SaeConfig, n: int, d: int) -> int:
    """Validate the settings against the data; returns the width. Raises DynselError (one line) if unusable."""
    if n == 0:
        raise DynselError("the features hold no samples; extract a non-empty data set first")
    if n < 4:
        raise DynselError(f"the features hold {n} samples; an SAE needs at least 4")
    if config.width < 0:
        raise DynselError(f"--width {config.width}: must be positive (or 0 for auto)")
    width = config.width if config.width > 0 else auto_width(n)
    if config.k < 1 or config.k > width:
        raise DynselError(f"--k {config.k}: must be between 1 and the width ({width}); lower --k or raise --width")
    if config.epochs is not None and config.epochs < 1:
        raise DynselError(f"--epochs {config.epochs}: must be at least 1")
    if config.batch_size is not None and config.batch_size < 1:
        raise DynselError(f"--batch-size {config.batch_size}: must be at least 1")
    if config.lr is not None and not (config.lr > 0 and math.isfinite(config.lr)):
        raise DynselError(f"--lr {config.lr}: must be a positive number")
    if not 0 <= config.lr_warmup < 1 or not 0 <= config.lr_decay < 1 or config.lr_warmup + config.lr_decay > 1:
        raise DynselError(
            f"--lr-warmup {config.lr_warmup} / --lr-decay {config.lr_decay}: shares of the steps in [0, 1) that add up to at most 1"
        )
    if not (config.auxk_coef >= 0 and math.isfinite(config.auxk_coef)):
        raise DynselError(f"--auxk-coef {config.auxk_coef}: must be >= 0")
    if config.k_aux < 0 or config.dead_samples < 0:
        raise DynselError("--k-aux and --dead-samples must be >= 0 (0 = default)")
    if not 0 < config.holdout < 0.5:
        raise DynselError(f"--holdout {config.holdout}: must be in (0, 0.5)")
    if config.patience < 1:
        raise DynselError(f"--patience {config.patience}: must be at least 1")
    if config.buffer_rows < 1:
        raise DynselError(f"--buffer-rows {config.buffer_rows}: must be at least 1")
    return width


def _lr_at(step: int, total: int, base: float, warmup: float, decay: float) -> float:
    """Linear warm-up over the first ``warmup`` share of the steps, linear decay to 0 over the last ``decay`` share."""
    factor = 1.0
    warm = warmup * total
    if warm > 0 and step < warm:
        factor = (step + 1) / warm
    cool = decay * total
    if cool > 0 and step >= total - cool:
        factor = min(factor, (total - step) / cool)
    return base * factor


class _Trainer:
    def __init__(self, stream: FeatureStream, config: SaeConfig, progress: ProgressFn, log: LogFn) -> None:
        self.stream, self.config, self.progress, self.log = stream, config, progress, log
        self.n, self.d = stream.n, stream.dim
        self.width = check_config(config, self.n, self.d)
        self.device = torch_device(config.device)
        self.k_aux = min(config.k_aux or max(1, self.d // 2), self.width)
        n_train = self.n - holdout_size(self.n, config.holdout)
        self.batch_size = config.batch_size if config.batch_size is not None else auto_batch_size(n_train)
        self.epochs = config.epochs if config.epochs is not None else auto_epochs(n_train)
        self.lr = config.lr if config.lr is not None else default_lr(self.width, self.batch_size)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x.to(self.device, non_blocking=True) - self.mean) / self.scale

    @torch.no_grad()
    def evaluate(self, model: TopKSae, x: torch.Tensor) -> dict[str, float]:
        """FVU over all of x (one sum, not a mean of batch FVUs) and mean L0."""
        err = total = 0.0
        active = 0
        centre = x.mean(dim=0)
        for part in torch.split(x, EVAL_ROWS):
            encoded = model.encode(part)
            reconstruction = model.decode(encoded.values, encoded.indices)
            err += float((part - reconstruction).double().pow(2).sum())
            total += float((part - centre).double().pow(2).sum())
            active += int((encoded.values > 0).sum())
        return {"fvu": err / max(total, 1e-12), "l0": active / max(len(x), 1)}

    @torch.no_grad()
    def dead_fraction(self, model: TopKSae) -> float:
        fired = torch.zeros(self.width, dtype=torch.bool, device=self.device)
        for raw in self.stream.all_rows(EVAL_ROWS):
            encoded = model.encode(self.normalise(raw))
            fired[encoded.indices[encoded.values > 0]] = True
        return 1.0 - float(fired.float().mean())

    def run(self, checkpoint: tuple[Path, str] | None) -> tuple[SaeWeights, dict[str, Any]]:
        config, device, width = self.config, self.device, self.width
        generator = torch.Generator().manual_seed(config.seed)
        scan = self.stream.scan(config.holdout, generator)
        n_train, n_holdout = scan.stats["n_train"], scan.stats["n_holdout"]
        self.mean, self.scale = scan.mean.to(device), scan.scale.to(device)
        holdout_x = self.normalise(scan.holdout)
        dead_samples = config.dead_samples or min(n_train, 10_000_000)

        model = TopKSae(self.d, width, config.k)
        model.init_weights(generator, geometric_median((scan.median_sample - scan.mean) / scan.scale))
        model.to(device)
        optimiser = _adam(model, self.lr, device)
        since_fired = torch.zeros(width, dtype=torch.long, device=device)  # training samples since each unit last fired

        steps_per_epoch = math.ceil(n_train / self.batch_size)
        total_steps = steps_per_epoch * self.epochs
        history: list[dict[str, Any]] = []
        best_fvu, best_epoch, stale, step, start_epoch, stopped = math.inf, 0, 0, 0, 0, False
        best_state: dict[str, torch.Tensor] = {}

        if checkpoint is not None:
            saved = ckpt.load_state(*checkpoint)
            if saved is not None:
                tensors, info = saved
                model.load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")})
                best_state = {k[len("best.") :]: v.to(device) for k, v in tensors.items() if k.startswith("best.")}
                ckpt.load_optimiser(optimiser, tensors)
                since_fired = tensors["since_fired"].to(device)
                generator.set_state(tensors["generator"])
                history, best_fvu, best_epoch, stale, step, stopped = (
                    info["history"],
                    info["best_fvu"],
                    info["best_epoch"],
                    info["stale"],
                    info["step"],
                    info["stopped"],
                )
                start_epoch = len(history)
                self.log(f"fit-sae: resuming after epoch {start_epoch} of {self.epochs} from {checkpoint[0]}")
        self.log(
            f"fit-sae: {self.n} samples × {self.d} ({n_train} train, {n_holdout} held out, "
            f"{'in memory' if scan.train_cache is not None else f'streamed, shuffle buffer {self.stream.buffer_rows} rows'}), "
            f"width {width}, k {config.k}, batch {self.batch_size}, lr {self.lr:.3g}, up to {self.epochs} epochs on {device.type}"
        )

        epoch = start_epoch
        while epoch < self.epochs and not stopped:
            started = time.perf_counter()
            loss_sum = 0.0
            fired_epoch = torch.zeros(width, dtype=torch.bool, device=device)
            for raw in self.stream.epoch(self.batch_size, generator):
                x = self.normalise(raw)
                dead = since_fired >= dead_samples if config.auxk_coef > 0 else None
                codes = model.encode_train(x, dead if dead is not None and bool(dead.any()) else None, self.k_aux)
                reconstruction = model.decode(codes.values, codes.indices)
                loss = fvu(x, reconstruction)
                fired = torch.zeros(width, dtype=torch.bool, device=device)
                fired[codes.indices[codes.values > 0]] = True
                fired_epoch |= fired
                since_fired = torch.where(fired, 0, since_fired + len(x))
                if codes.aux_values is not None and codes.aux_indices is not None:
                    residual = (x - reconstruction).detach()
                    loss = loss + config.auxk_coef * fvu(
                        residual, model.decode(codes.aux_values, codes.aux_indices, with_bias=False)
                    )
                for group in optimiser.param_groups:
                    group["lr"] = _lr_at(step, total_steps, self.lr, config.lr_warmup, config.lr_decay)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                model.remove_parallel_grad()
                optimiser.step()
                model.normalise_decoder()
                loss_sum += float(loss.detach()) * len(x)
                step += 1
                self.progress("fit-sae", step, total_steps)
            if not math.isfinite(loss_sum):
                raise DynselError(f"fit-sae diverged in epoch {epoch + 1} (loss is not finite); lower --lr")
            held_out = self.evaluate(model, holdout_x)
            record = {
                "epoch": epoch + 1,
                "train_loss": loss_sum / n_train,
                "fvu": held_out["fvu"],
                "l0": held_out["l0"],
                "dead_fraction_epoch": 1.0 - float(fired_epoch.float().mean()),
                "lr": _lr_at(step - 1, total_steps, self.lr, config.lr_warmup, config.lr_decay),
            }
            history.append(record)
            if held_out["fvu"] < best_fvu * (1 - 1e-3):
                best_fvu, best_epoch, stale = held_out["fvu"], epoch + 1, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                stale += 1
                stopped = stale >= config.patience
            epoch += 1
            self.log(
                f"fit-sae: epoch {epoch}/{self.epochs}: held-out FVU {record['fvu']:.4f}, L0 {record['l0']:.1f}, "
                f"dead {record['dead_fraction_epoch']:.1%}, train loss {record['train_loss']:.4f} "
                f"({time.perf_counter() - started:.1f} s){'; stopping: no improvement for ' + str(stale) + ' epochs' if stopped else ''}"
            )
            if checkpoint is not None:
                tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
                tensors.update({f"best.{k}": v for k, v in best_state.items()})
                tensors.update(ckpt.optimiser_tensors(optimiser))
                tensors["since_fired"] = since_fired
                tensors["generator"] = generator.get_state()
                info = {
                    "key": checkpoint[1],
                    "history": history,
                    "best_fvu": best_fvu,
                    "best_epoch": best_epoch,
                    "stale": stale,
                    "step": step,
                    "stopped": stopped,
                }
                ckpt.save_state(checkpoint[0], tensors, info)

        model.load_state_dict(best_state)
        final = self.evaluate(model, holdout_x)
        dead_fraction = self.dead_fraction(model)
        weights = SaeWeights(
            encoder_weight=model.encoder.weight.detach().cpu(),
            encoder_bias=model.encoder.bias.detach().cpu(),
            decoder_weight=model.W_dec.detach().cpu(),
            decoder_bias=model.b_dec.detach().cpu(),
            input_mean=scan.mean,
            input_scale=scan.scale.reshape(1),
            k=config.k,
        )
        metrics = {
            "fvu": final["fvu"],
            "l0": final["l0"],
            "dead_fraction": dead_fraction,
            "width": width,
            "k": config.k,
            "k_aux": self.k_aux,
            "batch_size": self.batch_size,
            "epochs": self.epochs,
            "dead_samples": dead_samples,
            "lr": self.lr,
            "epochs_run": len(history),
            "best_epoch": best_epoch,
            "stopped_early": len(history) < self.epochs,
            "steps": step,
            "n_train": int(n_train),
            "n_holdout": int(n_holdout),
            "history": history,
        }
        return weights, metrics


def _adam(model: TopKSae, lr: float, device: torch.device) -> torch.optim.Adam:
    try:  # the fused kernel is several times faster than the default on the CPU, and the same maths
        return torch.optim.Adam(model.parameters(), lr=lr, eps=ADAM_EPS, fused=True)
    except (RuntimeError, TypeError):  # a device or build without fused Adam
        return torch.optim.Adam(model.parameters(), lr=lr, eps=ADAM_EPS)


def train_sae(
    vectors: np.ndarray, config: SaeConfig = SaeConfig(), progress: ProgressFn = null_progress, log: LogFn = null_log
) -> tuple[SaeWeights, dict[str, Any]]:
    """Train on in-memory float vectors [N, d]; returns the best (lowest held-out FVU) weights and the metrics."""
    vectors = np.asarray(vectors)
    if vectors.ndim != 2:
        raise DynselError(f"expected vectors of shape [N, d], got {vectors.shape}")
    stream = FeatureStream.from_array(vectors, config.buffer_rows)
    return _Trainer(stream, config, progress, log).run(None)


def fit_sae(
    features: Path,
    out: Path,
    config: SaeConfig = SaeConfig(),
    progress: ProgressFn = null_progress,
    *,
    log: LogFn = null_log,
    resume: bool = True,
    force: bool = False,
) -> dict[str, Any]:
    """The fit-sae stage: stream the features, train (resuming a killed run), write the checkpoint atomically.

    Returns the checkpoint's manifest. ``resume=False`` ignores (and replaces) a saved training state.
    """
    features, out = Path(features), Path(out)
    check_output(out, SAE_KIND, inputs=[features], force=force)
    manifest = read_features_manifest(features)
    stream = FeatureStream(features, config.buffer_rows, manifest)
    trainer = _Trainer(stream, config, progress, log)  # validates the settings before anything is written
    made = provenance("fit-sae", config, {"features": manifest["fingerprint"]})
    state_dir = ckpt.resume_dir(out)
    key = fingerprint(
        {"features": manifest["fingerprint"], "settings": made["settings"], "dynsel_version": made["dynsel_version"]}
    )
    if not resume:
        ckpt.remove_state(state_dir)
    try:
        weights, metrics = trainer.run((state_dir, key))
    except DynselError:
        ckpt.remove_state(state_dir)  # bad input or divergence: resuming would not help
        raise
    with atomic_directory(out, SAE_KIND, force) as tmp:
        result = write_sae(
            tmp,
            weights,
            metrics,
            {
                **made,
                "metrics": {k: metrics[k] for k in ("fvu", "l0", "dead_fraction")},
                # float reductions split differently across thread counts: the weights are bit-reproducible
                # only with the same torch version and thread count (docs/reliability.md)
                "reproducible_with": {
                    "torch": torch.__version__.split("+")[0],
                    "torch_threads": torch.get_num_threads(),
                },
            },
        )
    ckpt.remove_state(state_dir)
    return result
