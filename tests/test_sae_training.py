"""fit-sae training internals: the recipe's invariants, streaming, resume after SIGKILL, per-epoch quality.

Small synthetic data with known sparse structure (tests/conftest.py: ``sparse_dictionary_data``); every
test here runs in seconds. tests/test_sae.py covers the stage's end results (FVU on sparse data,
checkpoint layout, determinism, bad settings).
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import REPO, assert_one_line_error, invoke, sparse_dictionary_data, subprocess_env, tree_digests

from dynsel_cli.config import SaeConfig
from dynsel_cli.errors import DynselError
from dynsel_cli.formats.common import atomic_directory, sha256_bytes, write_json
from dynsel_cli.formats.features import FeatureShardWriter
from dynsel_cli.sae import fit_sae, train_sae
from dynsel_cli.sae.data import FeatureStream
from dynsel_cli.sae.model import TopKSae
from dynsel_cli.sae.resume import resume_dir
from dynsel_cli.sae.train import _lr_at, _Trainer

D, ATOMS = 16, 32


def write_sharded(path: Path, vectors: np.ndarray, shard_rows: int) -> Path:
    """A features directory cut into shards of ``shard_rows`` rows (one Parquet row group each)."""
    with atomic_directory(path) as tmp:
        writer = FeatureShardWriter(tmp, vectors.shape[1], "float32", has_labels=False, shard_rows=shard_rows)
        writer.add(np.arange(len(vectors)), None, vectors)
        writer.finish({"classes": None})
    return path


def no_output(out: Path) -> None:
    assert not out.exists()
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")] == []


# ------------------------------------------------------------------------------------ the model's maths


def test_sparse_backward_equals_dense_autograd() -> None:
    """The TopK encoder's hand-written sparse backward (main and AuxK units) gives autograd's gradients."""
    torch.manual_seed(0)
    d, m, k, k_aux, batch = 12, 40, 3, 6, 24
    sae = TopKSae(d, m, k)
    sae.init_weights(torch.Generator().manual_seed(1), 0.1 * torch.randn(d))
    with torch.no_grad():
        sae.encoder.bias.normal_(0, 0.3)
    x = torch.randn(batch, d)
    dead = torch.zeros(m, dtype=torch.bool)
    dead[::2] = True

    def dense_loss(model: TopKSae) -> torch.Tensor:
        pre = F.linear(x - model.b_dec, model.encoder.weight, model.encoder.bias)
        values, indices = pre.topk(k, dim=1)
        values = values.clamp_min(0)
        alive_now = torch.zeros(m, dtype=torch.bool)
        alive_now[indices[values > 0]] = True
        aux_values, aux_indices = pre.masked_fill(~(dead & ~alive_now), float("-inf")).topk(k_aux, dim=1)
        recon = model.decode(values, indices)
        aux = model.decode(aux_values.clamp_min(0), aux_indices, with_bias=False)
        return (x - recon).pow(2).sum() + 0.5 * ((x - recon).detach() - aux).pow(2).sum()

    def sparse_loss(model: TopKSae) -> torch.Tensor:
        codes = model.encode_train(x, dead, k_aux)
        recon = model.decode(codes.values, codes.indices)
        aux = model.decode(codes.aux_values, codes.aux_indices, with_bias=False)
        return (x - recon).pow(2).sum() + 0.5 * ((x - recon).detach() - aux).pow(2).sum()

    a, b = copy.deepcopy(sae), copy.deepcopy(sae)
    la, lb = dense_loss(a), sparse_loss(b)
    torch.testing.assert_close(lb, la)
    la.backward()
    lb.backward()
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert q.grad is not None, name
        torch.testing.assert_close(q.grad, p.grad, atol=1e-5, rtol=1e-5, msg=name)
    # inference encoding picks the same codes as the training path
    enc = sae.encode(x)
    codes = sae.encode_train(x)
    torch.testing.assert_close(enc.values, codes.values.detach())
    assert torch.equal(enc.indices, codes.indices)


def test_parallel_gradient_removal_and_unit_norm() -> None:
    sae = TopKSae(8, 20, 2)
    sae.init_weights(torch.Generator().manual_seed(0), torch.zeros(8))
    sae.W_dec.grad = torch.randn(20, 8)
    sae.remove_parallel_grad()
    torch.testing.assert_close((sae.W_dec.grad * sae.W_dec).sum(dim=1), torch.zeros(20), atol=1e-6, rtol=0)
    with torch.no_grad():
        sae.W_dec.mul_(torch.rand(20, 1) * 3)
    sae.normalise_decoder()
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(20), atol=1e-6, rtol=0)
    # the encoder starts as the decoder's transpose (sparsify layout: both [m, d])
    fresh = TopKSae(8, 20, 2)
    fresh.init_weights(torch.Generator().manual_seed(0), torch.zeros(8))
    assert torch.equal(fresh.encoder.weight, fresh.W_dec)


class _NormWatch(TopKSae):
    """Records the largest deviation of decoder row norms from 1 after every normalise_decoder()."""

    deviations: list[float] = []

    def normalise_decoder(self) -> None:
        super().normalise_decoder()
        _NormWatch.deviations.append(float((self.W_dec.detach().norm(dim=1) - 1).abs().max()))


def test_unit_norm_decoder_after_every_step_and_exactly_k_codes(monkeypatch: pytest.MonkeyPatch) -> None:
    import dynsel_cli.sae.train as train_module

    monkeypatch.setattr(train_module, "TopKSae", _NormWatch)
    _NormWatch.deviations = []
    x = sparse_dictionary_data(1200, D, ATOMS)
    weights, metrics = train_sae(x, SaeConfig(width=64, k=4, epochs=4, batch_size=100, seed=0, device="cpu"))
    assert len(_NormWatch.deviations) == metrics["steps"] == 4 * 12  # 1140 training rows / 100 → 12 steps per epoch
    assert max(_NormWatch.deviations) < 1e-5
    # every sample's code has exactly k non-zero activations (ReLU leaves fewer only if < k units are positive)
    model = TopKSae(D, 64, 4)
    with torch.no_grad():
        model.encoder.weight.copy_(weights.encoder_weight)
        model.encoder.bias.copy_(weights.encoder_bias)
        model.W_dec.copy_(weights.decoder_weight)
        model.b_dec.copy_(weights.decoder_bias)
    codes = model.encode((torch.from_numpy(x) - weights.input_mean) / weights.input_scale)
    assert ((codes.values > 0).sum(dim=1) == 4).all()
    assert metrics["l0"] == 4.0


def test_auxk_revives_units_built_to_be_dead(monkeypatch: pytest.MonkeyPatch) -> None:
    """Half the units start with their encoder bias lowered by 2, so they never win the top-k. Without AuxK
    nothing ever gives them a gradient and they stay dead; AuxK trains them on the residual and revives them."""
    original = TopKSae.init_weights

    def crippled(self: TopKSae, generator: torch.Generator, b_dec: torch.Tensor) -> None:
        original(self, generator, b_dec)
        with torch.no_grad():
            self.encoder.bias[self.width // 2 :] -= 2.0

    monkeypatch.setattr(TopKSae, "init_weights", crippled)
    x = sparse_dictionary_data(2000, 32, 128, active=4)
    base = SaeConfig(width=128, k=4, epochs=6, batch_size=64, dead_samples=512, seed=0, device="cpu")
    _, without = train_sae(x, SaeConfig(**{**base.__dict__, "auxk_coef": 0.0}))
    _, with_auxk = train_sae(x, base)
    print(f"dead share without AuxK {without['dead_fraction']:.3f}, with AuxK {with_auxk['dead_fraction']:.3f}")
    assert without["dead_fraction"] > 0.15  # measured 0.25
    assert with_auxk["dead_fraction"] < 0.05  # measured 0.0
    assert with_auxk["dead_fraction"] < without["dead_fraction"] / 3


def test_lr_schedule() -> None:
    assert [_lr_at(s, 10, 1.0, 0.0, 0.0) for s in range(10)] == [1.0] * 10
    warm = [_lr_at(s, 10, 1.0, 0.2, 0.0) for s in range(4)]
    assert warm == pytest.approx([0.5, 1.0, 1.0, 1.0])
    decay = [_lr_at(s, 10, 1.0, 0.0, 0.3) for s in range(6, 10)]
    assert decay == pytest.approx([1.0, 1.0, 2 / 3, 1 / 3])


# ------------------------------------------------------------------------------------------ streaming


def test_epoch_stream_visits_every_training_row_once(tmp_path: Path) -> None:
    x = sparse_dictionary_data(1000, 4, 8)
    x[:, 0] = np.arange(1000)  # tag rows so they can be recognised in batches
    features = write_sharded(tmp_path / "features", x, shard_rows=128)  # 8 row groups (7 × 128 + 104)
    stream = FeatureStream(features, buffer_rows=300, cache=False, block_rows=128)
    assert len(stream.blocks) == 8 and len(stream.row_groups) == 8
    scan = stream.scan(0.1, torch.Generator().manual_seed(0))
    assert scan.train_cache is None and scan.stats == {"n_train": 900, "n_holdout": 100, "in_memory": False}
    holdout_tags = set(scan.holdout[:, 0].long().tolist())
    assert holdout_tags == set(scan.holdout_rows.tolist())
    generator = torch.Generator().manual_seed(5)
    batches = list(stream.epoch(64, generator))
    assert [len(b) for b in batches[:-1]] == [64] * (len(batches) - 1) and 0 < len(batches[-1]) <= 64
    tags = torch.cat(batches)[:, 0].long().tolist()
    assert sorted(tags) == sorted(set(range(1000)) - holdout_tags)  # each training row exactly once
    assert tags != sorted(tags)  # shuffled
    other = FeatureStream(features, 300, cache=False, block_rows=128)
    other.scan(0.1, torch.Generator().manual_seed(0))
    again = torch.cat(list(other.epoch(64, torch.Generator().manual_seed(5))))
    assert again[:, 0].long().tolist() == tags  # same seed, same order


def test_streaming_and_in_memory_train_identically(tmp_path: Path) -> None:
    """With the buffer as large as the data, reading from disk every epoch gives the very same weights
    as holding the data in memory; with a small buffer training still works (shuffled within the buffer)."""
    x = sparse_dictionary_data(900, D, ATOMS)
    features = write_sharded(tmp_path / "features", x, shard_rows=200)
    config = SaeConfig(width=48, k=3, epochs=3, batch_size=64, seed=0, device="cpu", buffer_rows=4096)
    memory_weights, memory_metrics = _Trainer(
        FeatureStream(features, config.buffer_rows, cache=True), config, lambda *a: None, lambda m: None
    ).run(None)
    disk_weights, disk_metrics = _Trainer(
        FeatureStream(features, config.buffer_rows, cache=False), config, lambda *a: None, lambda m: None
    ).run(None)
    assert torch.equal(memory_weights.encoder_weight, disk_weights.encoder_weight)
    assert torch.equal(memory_weights.decoder_weight, disk_weights.decoder_weight)
    assert memory_metrics == disk_metrics
    small = SaeConfig(**{**config.__dict__, "buffer_rows": 250, "epochs": 6})
    logs: list[str] = []
    _, streamed = _Trainer(FeatureStream(features, small.buffer_rows), small, lambda *a: None, logs.append).run(None)
    assert "streamed, shuffle buffer 250 rows" in logs[0]
    assert streamed["fvu"] < 0.5


# --------------------------------------------------------------------------- per-epoch quality reporting


def test_per_epoch_quality_is_logged_and_recorded(tmp_path: Path) -> None:
    features = write_sharded(tmp_path / "features", sparse_dictionary_data(800, D, ATOMS), shard_rows=10_000)
    logs: list[str] = []
    progress: list[tuple[str, int, int | None]] = []
    fit_sae(
        features,
        tmp_path / "sae",
        SaeConfig(width=48, k=3, epochs=3, batch_size=64, patience=5, device="cpu"),
        lambda *a: progress.append(a),
        log=logs.append,
    )
    epoch_lines = [line for line in logs if "/3: held-out FVU" in line]
    assert len(epoch_lines) == 3 and all("L0 3.0" in line and "dead " in line for line in epoch_lines)
    metrics = json.loads((tmp_path / "sae" / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3]
    for h in metrics["history"]:
        assert {"fvu", "l0", "dead_fraction_epoch", "train_loss", "lr"} <= set(h)
        assert 0 <= h["dead_fraction_epoch"] <= 1 and h["l0"] == 3.0
    assert progress[-1] == ("fit-sae", metrics["steps"], metrics["steps"])
    assert not resume_dir(tmp_path / "sae").exists()  # the epoch checkpoint is gone once the SAE is written


# --------------------------------------------------------------------------------- checkpoint + resume

RESUME_SCRIPT = """
import os, signal, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
from dynsel_cli.config import SaeConfig
from dynsel_cli.sae import fit_sae
features, out, kill_at = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
def log(message):
    print(message, flush=True)
    if kill_at and f"epoch {kill_at}/" in message:  # logged just before that epoch's checkpoint is saved
        os.kill(os.getpid(), signal.SIGKILL)
fit_sae(features, out, SaeConfig(width=48, k=3, epochs=5, batch_size=64, patience=10, seed=3, device="cpu"), log=log)
"""


def _run_fit(features: Path, out: Path, kill_at: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", RESUME_SCRIPT, str(features), str(out), str(kill_at)],
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_sigkilled_fit_resumes_to_identical_output(tmp_path: Path) -> None:
    features = write_sharded(tmp_path / "features", sparse_dictionary_data(700, D, ATOMS), shard_rows=300)
    straight = _run_fit(features, tmp_path / "straight", 0)
    assert straight.returncode == 0, straight.stderr

    killed = _run_fit(features, tmp_path / "resumed", 3)
    assert killed.returncode == -9  # SIGKILL: no chance to clean up
    no_artifact = tmp_path / "resumed"
    assert not no_artifact.exists()
    state = resume_dir(no_artifact)
    assert json.loads((state / "state.json").read_text())["step"] == 2 * 11  # after epoch 2 (665 rows / 64 → 11 steps)

    resumed = _run_fit(features, tmp_path / "resumed", 0)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after epoch 2 of 5" in resumed.stdout
    assert "epoch 1/5" not in resumed.stdout  # epochs 1–2 were not trained again
    assert tree_digests(tmp_path / "resumed") == tree_digests(tmp_path / "straight")
    assert not state.exists()


def test_state_of_other_settings_is_ignored_and_restart_flag(tmp_path: Path) -> None:
    features = write_sharded(tmp_path / "features", sparse_dictionary_data(400, D, ATOMS), shard_rows=1000)
    out = tmp_path / "sae"
    state = resume_dir(out)
    state.mkdir()
    write_json(state / "state.json", {"state_version": 1, "key": "from another run", "history": []})
    logs: list[str] = []
    fit_sae(features, out, SaeConfig(width=32, k=2, epochs=2, batch_size=64, device="cpu"), log=logs.append)
    assert not any("resuming" in line for line in logs)
    assert not state.exists() and (out / "sae.safetensors").exists()
    result = invoke(
        "fit-sae",
        features,
        "--out",
        tmp_path / "cli",
        "--width",
        "32",
        "--k",
        "2",
        "--epochs",
        "1",
        "--restart",
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.output
    assert "epoch 1/1: held-out FVU" in result.stderr


# --------------------------------------------------------------------------------------- bad input


def _empty_features(path: Path, dim: int = 8) -> Path:
    path.mkdir()
    manifest = {
        "format": "dynsel.features",
        "format_version": 1,
        "n_samples": 0,
        "dim": dim,
        "dtype": "float32",
        "has_labels": False,
        "shards": [],
        "fingerprint": sha256_bytes(b""),
        "classes": None,
    }
    write_json(path / "_manifest.json", manifest)
    return path


def test_bad_input_gives_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    empty = _empty_features(tmp_path / "empty")
    with pytest.raises(DynselError, match="no samples"):
        fit_sae(empty, tmp_path / "sae", SaeConfig(device="cpu"))
    no_output(tmp_path / "sae")
    with pytest.raises(DynselError, match="no samples"):
        train_sae(np.zeros((0, 8), np.float32), SaeConfig(device="cpu"))

    x = sparse_dictionary_data(300, D, ATOMS)
    features = write_sharded(tmp_path / "features", x, shard_rows=100)
    for bad, message in (
        (SaeConfig(width=-1), "--width -1"),
        (SaeConfig(width=16, k=17), "--k 17"),
        (SaeConfig(width=16, k=2, lr=-1.0), "--lr"),
        (SaeConfig(width=16, k=2, buffer_rows=0), "--buffer-rows"),
        (SaeConfig(width=16, k=2, lr_warmup=0.6, lr_decay=0.6), "--lr-warmup"),
        (SaeConfig(width=16, k=2, device="tpu"), "--device"),
    ):
        with pytest.raises(DynselError, match=message):
            fit_sae(features, tmp_path / "sae", bad)
        no_output(tmp_path / "sae")

    # Inf in the last shard: found in the scan before any training or writing
    x[250, 5] = np.inf
    write_sharded(tmp_path / "inf", x, shard_rows=100)
    result = invoke(
        "fit-sae", tmp_path / "inf", "--out", tmp_path / "sae", "--width", "16", "--k", "2", "--device", "cpu"
    )
    assert result.exit_code == 2
    line = assert_one_line_error(result.stderr)
    assert "NaN or Inf (first at row 250)" in line
    no_output(tmp_path / "sae")
