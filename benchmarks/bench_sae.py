"""dynsel's TopK SAE vs sae-lens's TopK SAE on the same features: wall time and held-out FVU, one run.

Both sides get the same data: dynsel's held-out split and input normalisation (seeded), the same width,
k, batch size, epochs and learning rate, the same number of CPU threads, one after the other. dynsel trains
through its own trainer (``_Trainer``, i.e. exactly what ``dynsel fit-sae`` runs, with early stopping off);
sae-lens trains with its ``SAETrainer`` and ``TopKTrainingSAE`` in a *separate* virtual environment (it pins
its own dependencies), fed the same normalised training rows as a plain tensor through its
``data_provider`` iterator, reshuffled every epoch. Both are scored by the same function here: FVU over
the held-out rows (one sum, not a mean of batches), mean L0, and the share of units that fire on no sample.

Usage (docs/sae.md has the numbers)::

    python3 -m venv /work/venv-saelens
    /work/venv-saelens/bin/pip install torch==2.13.0 && /work/venv-saelens/bin/pip install sae-lens
    /work/venv/bin/python benchmarks/bench_sae.py /work/bench/fm60k-features --width 4096 --k 32 \\
        --batch-size 1024 --epochs 10 --threads 1 --saelens-python /work/venv-saelens/bin/python --json /work/bench/sae-bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dynsel_cli.config import SaeConfig  # noqa: E402
from dynsel_cli.sae.data import FeatureStream  # noqa: E402
from dynsel_cli.sae.train import _Trainer, default_lr  # noqa: E402

SAELENS_SIDE = r"""
import json, sys, time
import numpy as np, torch
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
torch.manual_seed(args["seed"])
from sae_lens import __version__ as saelens_version
from sae_lens.config import SAETrainerConfig
from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
from sae_lens.training.sae_trainer import SAETrainer

train = torch.from_numpy(np.load(args["train"]))
holdout = torch.from_numpy(np.load(args["holdout"]))
n, d = train.shape
batch, epochs = args["batch_size"], args["epochs"]

def provider():
    generator = torch.Generator().manual_seed(args["seed"])
    pending = train[:0]
    while True:  # epochs back to back, each a fresh permutation; every batch full
        shuffled = torch.cat([pending, train[torch.randperm(n, generator=generator)]])
        full = len(shuffled) - len(shuffled) % batch
        for start in range(0, full, batch):
            yield shuffled[start : start + batch]
        pending = shuffled[full:]

sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=d, d_sae=args["width"], k=args["k"], device="cpu", dtype="float32", normalize_activations="none"))
trainer_config = SAETrainerConfig(
    total_training_samples=epochs * n, train_batch_size_samples=batch, lr=args["lr"], lr_end=args["lr"], device="cpu",
    lr_decay_steps=int(args["lr_decay"] * (epochs * n // batch)),
    dead_feature_window=max(1, n // batch), feature_sampling_window=10**9,
)
trainer = SAETrainer(cfg=trainer_config, sae=sae, data_provider=provider())
started = time.perf_counter()
trainer.fit()
seconds = time.perf_counter() - started

@torch.no_grad()
def score(x):
    err = tot = 0.0
    active = 0
    centre = x.mean(0)
    for part in torch.split(x, 4096):
        acts = sae.encode(part)
        recon = sae.decode(acts)
        err += float((part - recon).double().pow(2).sum())
        tot += float((part - centre).double().pow(2).sum())
        active += int((acts > 0).sum())
    return err / tot, active / len(x)

@torch.no_grad()
def dead(xs):
    fired = torch.zeros(args["width"], dtype=torch.bool)
    for x in xs:
        for part in torch.split(x, 4096):
            fired |= (sae.encode(part) > 0).any(0)
    return 1 - float(fired.float().mean())

fvu, l0 = score(holdout)
print(json.dumps({"seconds": seconds, "fvu": fvu, "l0": l0, "dead_fraction": dead([train, holdout]), "steps": trainer.n_training_steps, "version": saelens_version}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("features", type=Path, help="features directory (dynsel extract)")
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=None, help="default: dynsel's default for the width")
    parser.add_argument(
        "--lr-decay",
        type=float,
        default=SaeConfig.lr_decay,
        help="share of the last steps with linear decay to 0 (both sides)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--saelens-python", default="/work/venv-saelens/bin/python", help="python of the venv with sae-lens"
    )
    parser.add_argument("--skip-saelens", action="store_true")
    parser.add_argument(
        "--skip-dynsel", action="store_true", help="only the sae-lens side (same split and normalisation)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lr = args.lr if args.lr is not None else default_lr(args.width, args.batch_size)
    config = SaeConfig(
        width=args.width,
        k=args.k,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=lr,
        lr_decay=args.lr_decay,
        patience=args.epochs + 1,
        seed=args.seed,
        device="cpu",
    )

    # dynsel: its own trainer, on the features directory. Its time includes the scan (reading, checking and
    # normalising the features, the geometric median), every epoch's held-out evaluation and the final
    # dead-unit pass; sae-lens's covers only fit(). torch's first optimiser imports torch._dynamo (seconds):
    # done here, before the clock, as sae-lens's side does it while building its trainer.
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    results: dict = {
        "features": str(args.features),
        "settings": {
            "width": args.width,
            "k": args.k,
            "batch_size": args.batch_size,
            "epochs": args.epochs,
            "lr": lr,
            "lr_decay": args.lr_decay,
            "seed": args.seed,
            "threads": args.threads,
        },
    }
    trainer = _Trainer(
        FeatureStream(args.features, config.buffer_rows), config, lambda *a: None, lambda m: print(m, file=sys.stderr)
    )
    if args.skip_dynsel:  # only the data preparation both sides share
        trainer.stream.scan(config.holdout, torch.Generator().manual_seed(config.seed))
    else:
        started = time.perf_counter()
        weights, metrics = trainer.run(None)
        results["dynsel"] = {
            "seconds": time.perf_counter() - started,
            "fvu": metrics["fvu"],
            "fvu_last_epoch": metrics["history"][-1]["fvu"],
            "l0": metrics["l0"],
            "dead_fraction": metrics["dead_fraction"],
            "steps": metrics["steps"],
            "best_epoch": metrics["best_epoch"],
        }

    if not args.skip_saelens:
        stream = trainer.stream
        scan = stream.scan_result
        assert scan is not None and scan.train_cache is not None, "the benchmark needs the training split in memory"
        with tempfile.TemporaryDirectory(prefix="bench-sae-") as tmp:
            train_path, holdout_path = Path(tmp) / "train.npy", Path(tmp) / "holdout.npy"
            np.save(train_path, ((scan.train_cache - scan.mean) / scan.scale).numpy())
            np.save(holdout_path, ((scan.holdout - scan.mean) / scan.scale).numpy())
            side_args = {
                "train": str(train_path),
                "holdout": str(holdout_path),
                "width": args.width,
                "k": args.k,
                "batch_size": args.batch_size,
                "epochs": args.epochs,
                "lr": lr,
                "lr_decay": args.lr_decay,
                "seed": args.seed,
                "threads": args.threads,
            }
            env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
            proc = subprocess.run(
                [args.saelens_python, "-c", SAELENS_SIDE, json.dumps(side_args)],
                capture_output=True,
                text=True,
                env=env,
            )
            if proc.returncode != 0:
                raise SystemExit(f"sae-lens side failed:\n{proc.stderr[-3000:]}")
            results["sae_lens"] = json.loads(proc.stdout.strip().splitlines()[-1])

    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
