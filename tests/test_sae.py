"""The fit-sae stage: a TopK SAE that finds the factors of truly sparse data, deterministically."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import sha256_of, sparse_dictionary_data, tree_digests, write_features_dir
from safetensors.torch import load_file

from dynsel_cli.config import SaeConfig
from dynsel_cli.errors import DynselError
from dynsel_cli.formats.sae import read_sae
from dynsel_cli.sae import fit_sae, train_sae
from dynsel_cli.sae.train import auto_width, default_lr

# 2000 samples in 32-d, each a positive mix of 3 of 64 unit directions plus 1% noise.
N, D, ATOMS = 2000, 32, 64
SMALL = SaeConfig(width=64, k=4, epochs=40, batch_size=128, seed=0, device="cpu")


def no_output(out: Path) -> None:
    assert not out.exists()
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")] == []


@pytest.fixture(scope="module")
def sparse_features(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sae")
    write_features_dir(root / "features", sparse_dictionary_data(N, D, ATOMS))
    return root / "features"


@pytest.fixture(scope="module")
def fitted(sparse_features: Path) -> Path:
    out = sparse_features.parent / "sae"
    fit_sae(sparse_features, out, SMALL)
    return out


def heldout_fvu(sae_dir: Path, x: np.ndarray) -> tuple[float, float]:
    """FVU and mean L0 on fresh samples, computed from the files alone (sparsify semantics + input_norm)."""
    tensors = load_file(str(sae_dir / "sae.safetensors"))
    norm = load_file(str(sae_dir / "input_norm.safetensors"))
    k = json.loads((sae_dir / "cfg.json").read_text())["k"]
    xn = (torch.from_numpy(x).double() - norm["mean"].double()) / norm["scale"].double()
    pre = torch.relu(
        (xn - tensors["b_dec"].double()) @ tensors["encoder.weight"].double().T + tensors["encoder.bias"].double()
    )
    values, indices = pre.topk(k, dim=1)
    recon = torch.zeros_like(xn).index_add_(
        0,
        torch.arange(len(xn)).repeat_interleave(k),
        values.reshape(-1, 1) * tensors["W_dec"].double()[indices.reshape(-1)],
    )
    recon += tensors["b_dec"].double()
    fvu = float((xn - recon).pow(2).sum() / (xn - xn.mean(0)).pow(2).sum())
    return fvu, float((values > 0).sum(dim=1).double().mean())


def test_sae_learns_truly_sparse_data(fitted: Path) -> None:
    metrics = json.loads((fitted / "metrics.json").read_text())
    print(
        f"held-out FVU {metrics['fvu']:.4f} after {metrics['epochs_run']} epochs, dead {metrics['dead_fraction']:.3f}"
    )
    assert metrics["fvu"] < 0.2  # measured ~0.09
    assert metrics["l0"] == pytest.approx(4.0)
    # Independently, on fresh samples of the same distribution, from the checkpoint files only:
    fvu, l0 = heldout_fvu(fitted, sparse_dictionary_data(500, D, ATOMS, seed=99))
    print(f"fresh-sample FVU {fvu:.4f}")
    assert fvu < 0.2
    assert fvu == pytest.approx(metrics["fvu"], abs=0.05)
    assert l0 == pytest.approx(4.0)


def test_dense_data_is_not_sparse_for_the_sae() -> None:
    """The control: Gaussian data has no sparse structure, so the same SAE explains far less of it."""
    dense = np.random.default_rng(1).normal(size=(N, D)).astype(np.float32)
    _, metrics = train_sae(dense, SaeConfig(width=64, k=4, epochs=10, batch_size=128, seed=0, device="cpu"))
    print(f"dense FVU {metrics['fvu']:.3f}")
    assert metrics["fvu"] > 0.4  # measured ~0.6


def test_decoder_rows_are_unit_norm_and_layout(fitted: Path, sparse_features: Path) -> None:
    weights, manifest = read_sae(fitted)
    norms = weights.decoder_weight.norm(dim=1)
    torch.testing.assert_close(norms, torch.ones(64), atol=1e-5, rtol=0)
    assert tuple(weights.encoder_weight.shape) == (64, D) and tuple(weights.decoder_bias.shape) == (D,)
    assert weights.input_scale.shape == (1,) and float(weights.input_scale) > 0
    cfg = json.loads((fitted / "cfg.json").read_text())
    assert cfg["d_in"] == D and cfg["num_latents"] == 64 and cfg["k"] == 4 and cfg["activation"] == "topk"
    features_fp = json.loads((sparse_features / "_manifest.json").read_text())["fingerprint"]
    assert manifest["inputs"] == {"features": features_fp}
    assert manifest["width"] == 64 and manifest["k"] == 4 and manifest["d_in"] == D
    assert manifest["fingerprint"] == sha256_of(fitted / "sae.safetensors")


def test_metrics_file(fitted: Path) -> None:
    metrics = json.loads((fitted / "metrics.json").read_text())
    assert {"fvu", "l0", "dead_fraction", "width", "k", "epochs_run", "history"} <= set(metrics)
    assert 0 <= metrics["dead_fraction"] <= 1 and 0 <= metrics["fvu"]
    assert metrics["width"] == 64 and metrics["k"] == 4
    assert 1 <= metrics["epochs_run"] <= 40 and len(metrics["history"]) == metrics["epochs_run"]
    assert [h["epoch"] for h in metrics["history"]] == list(range(1, metrics["epochs_run"] + 1))
    assert all({"fvu", "l0", "train_loss"} <= set(h) for h in metrics["history"])
    # the kept weights are the best epoch's: no epoch's held-out FVU beats the final one
    assert metrics["fvu"] <= min(h["fvu"] for h in metrics["history"]) + 1e-6
    manifest = json.loads((fitted / "manifest.json").read_text())
    assert manifest["metrics"] == {k: metrics[k] for k in ("fvu", "l0", "dead_fraction")}
    assert manifest["reproducible_with"] == {
        "torch": torch.__version__.split("+")[0],
        "torch_threads": torch.get_num_threads(),
    }


@pytest.fixture(scope="module")
def fitted_again(sparse_features: Path) -> Path:
    out = sparse_features.parent / "sae-again"
    fit_sae(sparse_features, out, SMALL)
    return out


def test_fit_is_deterministic_per_seed(fitted: Path, fitted_again: Path, sparse_features: Path, tmp_path: Path) -> None:
    for name in ("sae.safetensors", "input_norm.safetensors", "cfg.json"):
        assert sha256_of(fitted_again / name) == sha256_of(fitted / name), name
    fit_sae(
        sparse_features, tmp_path / "seed1", SaeConfig(width=64, k=4, epochs=3, batch_size=128, seed=1, device="cpu")
    )
    fit_sae(
        sparse_features, tmp_path / "seed0", SaeConfig(width=64, k=4, epochs=3, batch_size=128, seed=0, device="cpu")
    )
    assert sha256_of(tmp_path / "seed1" / "sae.safetensors") != sha256_of(tmp_path / "seed0" / "sae.safetensors")


def test_fit_output_is_byte_identical(fitted: Path, fitted_again: Path) -> None:
    """Same inputs and seed give byte-identical outputs — the whole checkpoint directory."""
    assert tree_digests(fitted_again) == tree_digests(fitted)


def test_k_above_width_is_refused(sparse_features: Path, tmp_path: Path) -> None:
    with pytest.raises(DynselError, match=r"--k 65: must be between 1 and the width \(64\)"):
        fit_sae(sparse_features, tmp_path / "sae", SaeConfig(width=64, k=65, epochs=1, device="cpu"))
    no_output(tmp_path / "sae")
    with pytest.raises(DynselError, match="--k 0"):
        train_sae(np.zeros((10, 4), np.float32), SaeConfig(width=8, k=0, epochs=1, device="cpu"))


def test_nan_features_are_refused(tmp_path: Path) -> None:
    vectors = sparse_dictionary_data(64, 8, 16)
    vectors[10, 3] = np.nan
    with pytest.raises(DynselError, match="NaN"):
        train_sae(vectors, SaeConfig(width=16, k=2, epochs=1, device="cpu"))
    # features on disk with a NaN (written by another tool): fit-sae refuses and writes nothing
    write_features_dir(tmp_path / "features", vectors)
    with pytest.raises(DynselError, match="NaN"):
        fit_sae(tmp_path / "features", tmp_path / "sae", SaeConfig(width=16, k=2, epochs=1, device="cpu"))
    no_output(tmp_path / "sae")


def test_too_few_samples_and_bad_settings(tmp_path: Path) -> None:
    with pytest.raises(DynselError, match="at least 4"):
        train_sae(np.ones((3, 4), np.float32), SaeConfig(width=8, k=2, device="cpu"))
    for bad in (
        SaeConfig(width=8, k=2, epochs=0),
        SaeConfig(width=8, k=2, holdout=0.7),
        SaeConfig(width=8, k=2, batch_size=0),
    ):
        with pytest.raises(DynselError):
            train_sae(np.ones((32, 4), np.float32), bad)


def test_auto_width_and_default_lr() -> None:
    assert auto_width(2000) == 512  # 2000 / 4 = 500 → 512
    assert auto_width(10) == 256 and auto_width(10**7) == 4096
    assert auto_width(60_000) == 4096 and auto_width(4000) == 1024
    assert default_lr(16384) == pytest.approx(2e-4) and default_lr(4096) == pytest.approx(4e-4)
