"""SAE checkpoints (spec: docs/formats.md, "SAE checkpoint").

Layout, following EleutherAI sparsify's ``SparseCoder.save_to_disk`` so sparsify and other SAE tools can
load the weights::

    SAE/
      cfg.json               sparsify's config keys (activation, k, num_latents, expansion_factor, d_in, ...)
      sae.safetensors        encoder.weight [m, d], encoder.bias [m], W_dec [m, d], b_dec [d]  (float32)
      input_norm.safetensors mean [d], scale [1]: the SAE sees (x - mean) / scale
      metrics.json           training and held-out quality (fvu, l0, dead_fraction, per-epoch history)

A half-finished ``fit-sae`` keeps its epoch checkpoint beside the output, in ``.SAE.fit-sae-resume/``
(see ``dynsel_cli/sae/resume.py``); it is not part of the artifact and is removed once SAE/ is written.
      manifest.json          dynsel's record: settings, input fingerprint, checksums
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import ArtifactError
from .common import FORMAT_VERSION, file_entry, read_artifact_manifest, read_json, write_json

KIND = "dynsel.sae"
WHAT = "SAE checkpoint"
WEIGHT_KEYS = ("encoder.weight", "encoder.bias", "W_dec", "b_dec")


@dataclass(frozen=True)
class SaeWeights:
    """The tensors of a TopK SAE and the input normalisation it was trained with."""

    encoder_weight: torch.Tensor  # [m, d]
    encoder_bias: torch.Tensor  # [m]
    decoder_weight: torch.Tensor  # [m, d], unit-norm rows
    decoder_bias: torch.Tensor  # [d]
    input_mean: torch.Tensor  # [d]
    input_scale: torch.Tensor  # [1]
    k: int

    @property
    def width(self) -> int:
        return int(self.encoder_weight.shape[0])

    @property
    def dim(self) -> int:
        return int(self.encoder_weight.shape[1])


def sparsify_cfg(d_in: int, width: int, k: int) -> dict[str, Any]:
    """cfg.json in sparsify's SparseCoderConfig layout."""
    return {
        "activation": "topk",
        "d_in": d_in,
        "expansion_factor": max(1, width // d_in),
        "k": k,
        "multi_topk": False,
        "normalize_decoder": True,
        "num_latents": width,
        "skip_connection": False,
        "transcode": False,
    }


def write_sae(directory: Path, weights: SaeWeights, metrics: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Write a complete checkpoint into ``directory`` (a temporary directory of an atomic write)."""
    tensors = {
        "encoder.weight": weights.encoder_weight,
        "encoder.bias": weights.encoder_bias,
        "W_dec": weights.decoder_weight,
        "b_dec": weights.decoder_bias,
    }
    save_file(
        {k: v.detach().to(torch.float32).contiguous().cpu() for k, v in tensors.items()},
        str(directory / "sae.safetensors"),
    )
    norm = {"mean": weights.input_mean, "scale": weights.input_scale.reshape(1)}
    save_file(
        {k: v.detach().to(torch.float32).contiguous().cpu() for k, v in norm.items()},
        str(directory / "input_norm.safetensors"),
    )
    write_json(directory / "cfg.json", sparsify_cfg(weights.dim, weights.width, weights.k))
    write_json(directory / "metrics.json", metrics)
    files = {
        name: file_entry(directory / name)
        for name in ("cfg.json", "sae.safetensors", "input_norm.safetensors", "metrics.json")
    }
    manifest = {
        "format": KIND,
        "format_version": FORMAT_VERSION,
        "d_in": weights.dim,
        "width": weights.width,
        "k": weights.k,
        "files": files,
        "fingerprint": files["sae.safetensors"]["sha256"],
        **extra,
    }
    write_json(directory / "manifest.json", manifest)
    return manifest


def read_sae_manifest(path: Path, verify: bool = True) -> dict[str, Any]:
    return read_artifact_manifest(path, KIND, WHAT, "an SAE checkpoint directory", "dynsel fit-sae", verify)


def read_sae(path: Path, verify: bool = True) -> tuple[SaeWeights, dict[str, Any]]:
    """Load a checkpoint's tensors (safetensors: never unpickles) and its manifest."""
    path = Path(path)
    manifest = read_sae_manifest(path, verify=verify)
    cfg = read_json(path / "cfg.json", WHAT)
    try:
        tensors = load_file(str(path / "sae.safetensors"))
        norm = load_file(str(path / "input_norm.safetensors"))
    except (SafetensorError, OSError) as exc:
        raise ArtifactError(f"{path}: unreadable safetensors ({exc}); rebuild the SAE") from None
    missing = [k for k in WEIGHT_KEYS if k not in tensors]
    if missing:
        raise ArtifactError(f"{path}/sae.safetensors: missing tensors {missing}; not a TopK SAE checkpoint")
    for name, found in (("cfg.json", cfg), ("manifest.json", manifest)):
        if not isinstance(found.get("k"), int) or found["k"] < 1:
            raise ArtifactError(
                f"{path}/{name}: k must be a positive integer (found {found.get('k')!r}); rebuild the SAE"
            )
    if "mean" not in norm or "scale" not in norm:
        raise ArtifactError(f"{path}/input_norm.safetensors: needs tensors 'mean' and 'scale'; rebuild the SAE")
    m, d = (tuple(tensors["encoder.weight"].shape) + (-1, -1))[:2]
    expected = {"encoder.weight": (m, d), "encoder.bias": (m,), "W_dec": (m, d), "b_dec": (d,)}
    shapes = {
        **{k: tuple(tensors[k].shape) for k in WEIGHT_KEYS},
        "mean": tuple(norm["mean"].shape),
        "scale": tuple(norm["scale"].shape),
    }
    expected.update({"mean": (d,), "scale": (1,)})
    wrong = [f"{k} {list(shapes[k])} (expected {list(v)})" for k, v in expected.items() if shapes[k] != v]
    if tensors["encoder.weight"].dim() != 2 or wrong:
        raise ArtifactError(
            f"{path}: tensor shapes do not fit together: {', '.join(wrong) or 'encoder.weight is not 2-D'}; rebuild the SAE"
        )
    if cfg.get("num_latents") != m or cfg.get("d_in") != d or manifest.get("width") != m or manifest.get("d_in") != d:
        raise ArtifactError(
            f"{path}: cfg.json/manifest.json say width {cfg.get('num_latents')}, d_in {cfg.get('d_in')} but the weights are {m} × {d}; rebuild the SAE"
        )
    weights = SaeWeights(
        encoder_weight=tensors["encoder.weight"],
        encoder_bias=tensors["encoder.bias"],
        decoder_weight=tensors["W_dec"],
        decoder_bias=tensors["b_dec"],
        input_mean=norm["mean"],
        input_scale=norm["scale"],
        k=int(cfg["k"]),
    )
    if weights.k > weights.width:
        raise ArtifactError(f"{path}: k={weights.k} exceeds the SAE width {weights.width}")
    return weights, manifest
