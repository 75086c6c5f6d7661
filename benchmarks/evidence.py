"""Train real models on dynsel plans and baselines; report accuracy and training time.

One command per experiment (see docs/results.md for the exact commands and the numbers):

    python benchmarks/evidence.py vision --quick                       # < 5 min: sample_data, 1 seed
    python benchmarks/evidence.py vision --data /work/bench/fashion_mnist.npz --work /work/bench/ev-vision \
        --ratios 0.3 0.5 0.7 --seeds 0 1 2 --epochs 8 --json results-vision.json

Vision: a small CNN trained from pixels (Fashion-MNIST), plans built from efficientnet-lite0 features.
Text: an MLP on sentence-embedding features (20 Newsgroups), plans built from the same features.
Every run uses a one-cycle learning rate over the plan's total steps (built once from the manifest).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dynsel_cli import read_plan
from dynsel_cli.config import ExtractConfig, PlanConfig, SaeConfig
from dynsel_cli.formats.factors import read_factor_tables
from dynsel_cli.pipeline import RunConfig, run_pipeline
from dynsel_cli.plan import compute_plan

REPO = Path(__file__).resolve().parent.parent

#: Method name → how its plan differs from PlanConfig's defaults. Ablations change one thing each.
VARIANTS: dict[str, dict[str, Any]] = {
    "full": {"method": "full"},
    "random": {"method": "random"},
    "static-random": {"method": "static-random"},
    "dynsel": {},
    "no-penalty": {"penalty": "none"},
    "no-scheduler": {"schedule": "constant", "lambda_start": 0.5},
    "repr-only": {"schedule": "constant", "lambda_start": 0.0},
    "rarity-only": {"schedule": "constant", "lambda_start": 1.0},
    # The first default: representativeness first, moving to rarity over the run (cosine 0 → 1).
    "cosine": {"schedule": "cosine", "lambda_start": 0.0, "lambda_end": 1.0},
    # Candidate defaults: a weaker penalty lets the scores, not the rotation, decide; noise diversifies.
    "beta-0.2": {"beta": 0.2},
    "beta-0.2-tau-0.3": {"beta": 0.2, "tau": 0.3},
    # InfoBatch-style annealing: the last epoch trains on all samples (costs one extra full epoch of steps).
    "dynsel-anneal": {"full_epochs": 1},
    "random-anneal": {"method": "random", "full_epochs": 1},
    # Control, not a dynsel method: least-used samples first, ties in a fresh random order every epoch.
    # It rotates like the usage penalty but ignores the factors: does the factor score matter at all?
    "usage-cycle": {"method": "random"},
    # Probe, not a dynsel method: a process-level diversity term (method.md, "why the factors do not help").
    "coverage-memory": {"method": "random"},
}


def usage_cycle_epochs(n: int, budget: int, epochs: int, seed: int) -> list[np.ndarray]:
    """Each epoch takes the ``budget`` least-used samples, ties broken by a seeded random order."""
    counts = np.zeros(n, dtype=np.int64)
    chosen = []
    for t in range(epochs):
        tie_break = np.random.default_rng([seed, t, 7]).permutation(n)
        order = np.lexsort((tie_break, counts))
        rows = order[:budget]
        counts[rows] += 1
        chosen.append(rows[np.random.default_rng([seed, t, 1]).permutation(budget)])
    return chosen


class SmallCnn(nn.Module):
    """Two conv blocks and an MLP head (~0.2 M parameters), trained from pixels; sized for a 2-core CPU."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 7 * 7, 128)
        self.fc2 = nn.Linear(128, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


class Mlp(nn.Module):
    def __init__(self, dim: int, classes: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, 512), nn.ReLU(), nn.Dropout(0.2), nn.Linear(512, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@dataclasses.dataclass
class Task:
    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    make_model: Callable[[], nn.Module]
    lr: float
    batch_size: int


def vision_task(npz: Path, limit: int | None) -> Task:
    data = np.load(npz)
    x_train, y_train = data["x_train"], data["y_train"]
    if limit:
        x_train, y_train = x_train[:limit], y_train[:limit]
    to_x = lambda a: (torch.from_numpy(a).float().unsqueeze(1) / 255.0 - 0.286) / 0.353  # noqa: E731
    classes = int(y_train.max()) + 1
    return Task("vision", to_x(x_train), torch.from_numpy(y_train).long(), to_x(data["x_test"]), torch.from_numpy(data["y_test"]).long(), lambda: SmallCnn(classes), lr=0.05, batch_size=128)


def prepare_newsgroups(work: Path) -> tuple[Path, Path]:
    """20 Newsgroups from ../shared/data as train/test JSONL (text, integer label); empty posts dropped."""
    import gzip

    train_path, test_path = work / "newsgroups-train.jsonl", work / "newsgroups-test.jsonl"
    if train_path.exists() and test_path.exists():
        return train_path, test_path
    source = REPO.parent / "shared" / "data" / "20newsgroups.jsonl.gz"
    rows = [json.loads(line) for line in gzip.open(source, "rt", encoding="utf-8")]
    classes = sorted({r["label"] for r in rows})
    work.mkdir(parents=True, exist_ok=True)
    for split, path in (("train", train_path), ("test", test_path)):
        with open(path, "w", encoding="utf-8") as handle:
            for r in rows:
                if r["split"] == split and r["text"].strip():
                    handle.write(json.dumps({"text": r["text"], "label": classes.index(r["label"])}) + "\n")
    return train_path, test_path


def text_task(work: Path, encoder: str, limit: int | None) -> tuple[Task, Path, ExtractConfig]:
    """MLP on sentence embeddings; the same encoder's features feed dynsel. Returns the task and its source."""
    from dynsel_cli.extract import extract
    from dynsel_cli.formats.features import read_features

    train_path, test_path = prepare_newsgroups(work)
    config = ExtractConfig(encoder=encoder, limit=limit)
    test_dir = work / f"test-features-{encoder}"
    if not (test_dir / "_manifest.json").exists():
        extract(test_path, test_dir, dataclasses.replace(config, limit=None))
    return Task("text", torch.empty(0), torch.empty(0), torch.empty(0), torch.empty(0), lambda: nn.Identity(), lr=0.0, batch_size=128), train_path, config


def finish_text_task(task: Task, work: Path, encoder: str) -> Task:
    from dynsel_cli.formats.features import read_features

    train = read_features(work / "features")
    test = read_features(work / f"test-features-{encoder}")
    assert np.array_equal(train.ids, np.arange(len(train.ids))), "ids index the feature rows"
    mean, std = train.vectors.mean(0), train.vectors.std(0) + 1e-6
    x_train = torch.from_numpy((train.vectors - mean) / std)
    x_test = torch.from_numpy((test.vectors - mean) / std)
    classes = int(train.labels.max()) + 1
    dim = x_train.shape[1]
    return Task("text", x_train, torch.from_numpy(train.labels), x_test, torch.from_numpy(test.labels), lambda: Mlp(dim, classes), lr=0.05, batch_size=128)


def train_and_evaluate(task: Task, epochs: list[np.ndarray], total_steps: int, seed: int) -> tuple[float, float]:
    """Train on the plan's epochs (ids index task.x_train); returns (test accuracy %, training seconds)."""
    torch.manual_seed(seed)
    model = task.make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=task.lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=task.lr, total_steps=max(total_steps, 1))
    steps = 0
    start = time.perf_counter()
    model.train()
    for ids in epochs:
        ids_t = torch.from_numpy(np.asarray(ids, dtype=np.int64))
        for b in range(0, len(ids_t), task.batch_size):
            batch = ids_t[b : b + task.batch_size]
            loss = F.cross_entropy(model(task.x_train[batch]), task.y_train[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if steps < total_steps - 1:
                scheduler.step()
            steps += 1
    seconds = time.perf_counter() - start
    model.eval()
    correct = 0
    with torch.no_grad():
        for b in range(0, len(task.x_test), 1024):
            correct += int((model(task.x_test[b : b + 1024]).argmax(1) == task.y_test[b : b + 1024]).sum())
    return 100.0 * correct / len(task.x_test), seconds


def precompute(source: Path, work: Path, extract: ExtractConfig, sae: SaeConfig) -> dict[str, float]:
    """Run extract → fit-sae → factors once (cached in ``work``); returns each stage's wall time."""
    timings_file = work / "precompute_seconds.json"
    stamps: dict[str, float] = {}
    last = [time.perf_counter()]

    def log(message: str) -> None:
        now = time.perf_counter()
        stage = message.split(":")[0]
        if message.endswith("built") or message.endswith("up to date"):
            return
        stamps[stage] = now
        print(f"  {message}", file=sys.stderr)
        last[0] = now

    t0 = time.perf_counter()
    run_pipeline(source, work, RunConfig(extract=extract, sae=sae, plan=PlanConfig(epochs=1)), log=log)
    if stamps:  # something was (re)built: turn start stamps into durations and cache them
        order = [s for s in ("extract", "fit-sae", "factors", "plan") if s in stamps]
        ends = [stamps[s] for s in order[1:]] + [time.perf_counter()]
        timings = {s: e - stamps[s] for s, e in zip(order, ends)}
        if timings_file.exists():
            timings = {**json.loads(timings_file.read_text()), **timings}
        timings_file.write_text(json.dumps(timings, indent=2))
    print(f"  precompute ready in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return json.loads(timings_file.read_text()) if timings_file.exists() else {}


def precompute_from_features(features: Path, work: Path, sae: SaeConfig, extract_seconds: float) -> dict[str, float]:
    """fit-sae and factors on features extracted earlier (``--features``); extract time is given, not measured."""
    from dynsel_cli.factors import build_factor_tables
    from dynsel_cli.sae import fit_sae

    timings_file = work / "precompute_seconds.json"
    if (work / "factors" / "manifest.json").exists() and timings_file.exists():
        return json.loads(timings_file.read_text())
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    manifest = fit_sae(features, work / "sae", sae)
    fit_s = time.perf_counter() - start
    print(f"  sae: {manifest['metrics']}", file=sys.stderr)
    start = time.perf_counter()
    build_factor_tables(features, work / "sae", work / "factors")
    timings = {"extract": extract_seconds, "fit-sae": fit_s, "factors": time.perf_counter() - start}
    timings_file.write_text(json.dumps(timings, indent=2))
    return timings


def coverage_memory_epochs(tables: Any, budget: int, epochs: int, seed: int, rounds: int = 8) -> list[np.ndarray]:
    """Prefer samples whose factors the trajectory has covered least so far.

    Unit u's coverage C_u is the share of its activation mass trained on so far (summed over epochs). A
    sample's score is its activation-weighted mean of 1 / (1 + C_u) over its k units. Each epoch is filled
    in ``rounds`` slices, coverage updated after each, so one epoch does not take many samples of the same
    uncovered factor; within a slice, the top scores per class (class quotas), ties broken at random.
    """
    from dynsel_cli.plan.budget import class_quotas

    units = np.asarray(tables.samples.units)
    acts = np.asarray(tables.samples.acts, dtype=np.float64)
    labels = tables.samples.labels
    n = len(units)
    active = units >= 0
    safe_units = np.where(active, units, 0)
    width = int(safe_units.max()) + 1
    weights = np.where(active, acts, 0.0)
    mass = np.bincount(safe_units.ravel(), weights=weights.ravel(), minlength=width)
    mass[mass == 0] = 1.0
    row_mass = weights.sum(axis=1)
    row_mass[row_mass == 0] = 1.0
    coverage = np.zeros(width)
    chosen = []
    for t in range(epochs):
        taken = np.zeros(n, dtype=bool)
        noise = np.random.default_rng([seed, t, 11]).random(n) * 1e-9
        rows_epoch = []
        for r in range(rounds):
            want = budget * (r + 1) // rounds - budget * r // rounds
            score = (weights / (1.0 + coverage[safe_units])).sum(axis=1) / row_mass + noise
            score[taken] = -np.inf
            if labels is None:
                picked = np.argpartition(-score, want - 1)[:want] if want else np.zeros(0, np.int64)
            else:
                quota = class_quotas(labels, want)
                picked = np.concatenate([np.flatnonzero(labels == c)[np.argsort(-score[labels == c], kind="stable")[:q]] for c, q in enumerate(quota) if q])
            taken[picked] = True
            np.add.at(coverage, safe_units[picked].ravel(), (weights[picked] / mass[safe_units[picked]]).ravel())
            rows_epoch.append(picked)
        rows = np.concatenate(rows_epoch)
        chosen.append(rows[np.random.default_rng([seed, t, 1]).permutation(len(rows))])
    return chosen


def plan_for(tables: Any, variant: str, ratio: float, seed: int, epochs: int, batch_size: int) -> tuple[list[np.ndarray], int, float]:
    overrides = VARIANTS[variant]
    config = dataclasses.replace(PlanConfig(), epochs=epochs, ratio=1.0 if variant == "full" else ratio, seed=seed, batch_size=batch_size, device="cpu", **overrides)
    start = time.perf_counter()
    if variant == "usage-cycle":
        from dynsel_cli.plan.budget import epoch_budget

        epochs_ids = usage_cycle_epochs(tables.n_samples, epoch_budget(ratio, tables.n_samples), epochs, seed)
    elif variant == "coverage-memory":
        from dynsel_cli.plan.budget import epoch_budget

        epochs_ids = [tables.samples.ids[rows] for rows in coverage_memory_epochs(tables, epoch_budget(ratio, tables.n_samples), epochs, seed)]
    else:
        epochs_ids = compute_plan(tables, config).epochs
    seconds = time.perf_counter() - start
    steps = sum(math.ceil(len(e) / batch_size) for e in epochs_ids)
    return epochs_ids, steps, seconds


def summarise(runs: list[dict[str, Any]], precompute_s: float) -> list[dict[str, Any]]:
    full_time = statistics.mean([r["train_s"] for r in runs if r["method"] == "full"] or [float("nan")])
    full_steps = statistics.mean([r["steps"] for r in runs if r["method"] == "full"] or [float("nan")])
    rows = []
    keys = sorted({(r["method"], r["ratio"]) for r in runs}, key=lambda k: (k[1], list(VARIANTS).index(k[0])))
    for method, ratio in keys:
        group = [r for r in runs if r["method"] == method and r["ratio"] == ratio]
        acc = [r["acc"] for r in group]
        train_s = statistics.mean(r["train_s"] for r in group)
        plan_s = statistics.mean(r["plan_s"] for r in group)
        extra = 0.0 if method in ("full", "random", "static-random", "usage-cycle") else precompute_s + plan_s
        rows.append(
            {
                "method": method,
                "ratio": ratio,
                "seeds": len(group),
                "acc_mean": statistics.mean(acc),
                "acc_std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
                "train_s": train_s,
                "steps": statistics.mean(r["steps"] for r in group),
                "speedup_steps": full_steps / statistics.mean(r["steps"] for r in group),
                "speedup_train": full_time / train_s,
                "speedup_with_precompute": full_time / (train_s + extra),
            }
        )
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| ratio | method | seeds | accuracy % (mean ± std) | steps | speedup (steps) | train s | speedup (train s) | speedup (incl. precompute) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['ratio']} | {r['method']} | {r['seeds']} | {r['acc_mean']:.2f} ± {r['acc_std']:.2f} | {r['steps']:.0f} | {r['speedup_steps']:.2f}x | {r['train_s']:.1f} | {r['speedup_train']:.2f}x | {r['speedup_with_precompute']:.2f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=["vision", "text"])
    parser.add_argument("--encoder", default="wordllama", help="text task: the sentence encoder (wordllama or minilm)")
    parser.add_argument("--quick", action="store_true", help="sample_data, 1 seed, ratio 0.5, 4 epochs, 3 methods: under 5 minutes")
    parser.add_argument("--data", type=Path, default=REPO / "sample_data" / "fashion_mnist_2k.npz")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "evidence")
    parser.add_argument("--methods", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--ratios", nargs="+", type=float, default=[0.3, 0.5, 0.7])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N training samples")
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--features", type=Path, default=None, help="vision: use features extracted earlier (skips extract)")
    parser.add_argument("--extract-seconds", type=float, default=0.0, help="with --features: the measured extract time, for the precompute cost")
    parser.add_argument("--sae-epochs", type=int, default=None, help="override fit-sae's epoch cap")
    parser.add_argument("--json", type=Path, default=None, help="write all runs and the summary here")
    args = parser.parse_args(argv)
    if args.quick:
        args.methods, args.ratios, args.seeds, args.epochs = ["full", "random", "dynsel"], [0.5], [0], 4
    torch.set_num_threads(args.threads)

    sae_config = SaeConfig() if args.sae_epochs is None else dataclasses.replace(SaeConfig(), epochs=args.sae_epochs)
    if args.task == "vision" and args.features is not None:
        task = vision_task(args.data, args.limit)
        timings = precompute_from_features(args.features, args.work, sae_config, args.extract_seconds)
    elif args.task == "vision":
        task = vision_task(args.data, args.limit)
        timings = precompute(args.data, args.work, ExtractConfig(image_size=args.image_size, limit=args.limit), sae_config)
    else:
        args.work.mkdir(parents=True, exist_ok=True)
        task, source, extract_config = text_task(args.work, args.encoder, args.limit)
        timings = precompute(source, args.work, extract_config, sae_config)
        task = finish_text_task(task, args.work, args.encoder)
    precompute_s = sum(timings.get(s, 0.0) for s in ("extract", "fit-sae", "factors"))
    tables = read_factor_tables(args.work / "factors")
    runs: list[dict[str, Any]] = []
    for ratio in args.ratios:
        for method in args.methods:
            if method == "full" and any(r["method"] == "full" for r in runs):
                continue  # full data does not depend on the ratio
            for seed in args.seeds:
                epochs, steps, plan_s = plan_for(tables, method, ratio, seed, args.epochs, task.batch_size)
                acc, train_s = train_and_evaluate(task, epochs, steps, seed)
                run = {"method": method, "ratio": 1.0 if method == "full" else ratio, "seed": seed, "acc": acc, "train_s": train_s, "plan_s": plan_s, "steps": steps}
                runs.append(run)
                print(json.dumps(run), file=sys.stderr, flush=True)
                if args.json:  # every finished run is kept, even if the sweep is stopped early
                    with open(args.json.with_suffix(".runs.jsonl"), "a", encoding="utf-8") as handle:
                        handle.write(json.dumps(run) + "\n")
    rows = summarise(runs, precompute_s)
    table = markdown(rows)
    print(table)
    result = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "precompute_s": timings, "runs": runs, "summary": rows}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
