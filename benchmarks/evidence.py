"""Train real models on dynsel plans and baselines; report accuracy and training time.

One command per experiment (see docs/results.md for the exact commands and the numbers):

    python benchmarks/evidence.py vision --quick                       # a few minutes: sample_data, 1 seed
    python benchmarks/evidence.py vision --quick --regime all --work runs/ev-quick   # every data regime in turn
    python benchmarks/evidence.py vision --data /work/bench/fashion_mnist.npz --work /work/bench/ev-vision \
        --ratios 0.3 0.5 0.7 --seeds 0 1 2 --epochs 8 --json results-vision.json

Vision: a small CNN trained from pixels (Fashion-MNIST), plans built from efficientnet-lite0 features;
``--vision-model mlp`` trains the text task's MLP on those efficientnet features instead (seconds per run
on a CPU; the test split's features are extracted once, into ``--test-features``).
Text: an MLP on sentence-embedding features (20 Newsgroups), plans built from the same features.
Every run uses a one-cycle learning rate over the plan's total steps (built once from the manifest).

Data regimes (``--regime``, benchmarks/regimes.py): the training split is made messy (redundant, noisy,
imbalanced and their variants) with a seeded transform, or kept clean (``clean``; ``long``: clean data,
30 epochs instead of 8). The test split is never transformed. The transformed training data is written
into the work directory (vision: ``regime-NAME-seedS.npz``; text: ``newsgroups-train-NAME.jsonl``) with
its ground truth beside it (``.truth.npz``: source_index, flipped) and goes through ``dynsel extract``
like any user's data; clean regimes use the input data itself. Text only: ``fine``, ``fine-noisy`` and
``fine-redundant`` relabel 20 Newsgroups into 80 sub-topic classes first (benchmarks/fine_labels.py;
their test features, with the refined labels, are in ``test-features-fine-ENCODER``).

Anchors (``--methods semdedup cleanlab semdedup+cleanlab``, benchmarks/anchors.py): SemDeDup and
cleanlab's find_label_issues on the encoder features, then RS2 over the kept rows at the same steps as
every method; each anchor's decision is cached in the work directory (``anchor-NAME.npz``).

Detection metrics (benchmarks/detection.py) are recorded in each run where they apply: the share of draws
that go to flipped rows, grouped and flagged shares, suspect precision/recall against the flipped rows,
and copy-pair precision/recall against the shared sources.

Work directory layout (one per regime; pass distinct ``--work`` folders): ``run/`` holds the dynsel run
(features, sae, factors, plan), ``precompute_seconds.json`` its stage times; the regime data and, for
text, the JSONL splits and the test features sit next to it.

Metrics (percent, on the test set): ``acc`` (top-1), ``balanced_acc`` (mean per-class recall) and
``worst_class_recall`` (the lowest per-class recall).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dynsel_cli.config import ExtractConfig, PlanConfig, SaeConfig
from dynsel_cli.formats.factors import read_factor_tables
from dynsel_cli.pipeline import RunConfig, run_pipeline
from dynsel_cli.plan import compute_plan

sys.path.insert(0, str(Path(__file__).resolve().parent))
from anchors import ANCHORS, anchor_decision, anchor_epochs  # noqa: E402
from detection import detection_metrics  # noqa: E402
from fine_labels import FINE_REGIMES, SUBCLASSES, refine_labels  # noqa: E402
from regimes import (
    IDENTITY_REGIMES,
    REGIMES,
    read_jsonl,
    read_truth,
    sha256_file,
    truth_path,
    write_text_regime,
    write_vision_regime,
)  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RUN_DIR = "run"  # the dynsel run directory inside --work
SAMPLE = REPO / "sample_data" / "fashion_mnist_2k.npz"
QUICK_METHODS = ["full", "rs2", "dynsel"]
#: Training epochs unless --epochs is given: (quick?, regime long?) → epochs.
DEFAULT_EPOCHS = {(False, False): 8, (False, True): 30, (True, False): 2, (True, True): 8}

#: The settings of the earlier default (until 2026-12-08): the neighbour vote and row-count class quotas.
#: The ablations of that default keep their names and spell these out, so their records stay what they were.
VOTE = {"label_trust": "vote", "class_quota": "proportional"}

#: Method name → how its plan differs from PlanConfig's defaults. Ablations change one thing each.
VARIANTS: dict[str, dict[str, Any]] = {
    "full": {"method": "full"},
    "random": {"method": "random"},
    # RS2 without replacement (Okanovic et al., ICLR 2024): a fresh permutation walked ratio*N at a time.
    "rs2": {"method": "rs2"},
    "static-random": {"method": "static-random"},
    # the default: --label-trust probe-checked --class-quota content (records before the change of default
    # are under dynsel-checked-content, the same settings)
    "dynsel": {},
    "dynsel-checked-content": {"label_trust": "probe-checked", "class_quota": "content"},
    # the default's ablations: each part off, or the other rule in its place
    "dynsel-checked": {"label_trust": "probe-checked", "class_quota": "proportional"},
    "dynsel-heldout-content": {"label_trust": "probe-heldout", "class_quota": "content"},
    "dynsel-heldout": {"label_trust": "probe-heldout", "class_quota": "proportional"},
    "dynsel-heldout-gap-content": {"label_trust": "probe-heldout", "class_quota": "content", "dup_rule": "gap"},
    "dynsel-checked-gap-content": {"label_trust": "probe-checked", "class_quota": "content", "dup_rule": "gap"},
    "dynsel-checked-no-dedup": {"dedup": False},
    "dynsel-checked-balanced": {"label_trust": "probe-checked", "class_quota": "balanced"},
    # the earlier default (the neighbour vote, row-count quotas) and its ablations
    "dynsel-vote": {**VOTE},
    "dynsel-balanced": {**VOTE, "class_quota": "balanced"},
    "rs2-balanced": {"method": "rs2", "class_quota": "balanced"},
    "dynsel-no-dedup": {**VOTE, "dedup": False},
    "dynsel-no-trust": {**VOTE, "trust": False},
    # confident learning's suspects leave the rotation unchecked, with row-count or content budgets
    "dynsel-probe": {**VOTE, "label_trust": "probe"},
    "dynsel-probe-content": {"label_trust": "probe", "class_quota": "content"},
    # near-duplicates must stand out from the row's own neighbours (--dup-rule gap)
    "dynsel-gap": {**VOTE, "dup_rule": "gap"},
    "dynsel-gap-probe-content": {"dup_rule": "gap", "label_trust": "probe", "class_quota": "content"},
    "dynsel-odds-content": {"label_trust": "probe-odds", "class_quota": "content"},
    "dynsel-content": {"label_trust": "vote", "class_quota": "content"},
    # the rotation with every signal off: uniform weights (the control that isolates what the signals add)
    "dynsel-no-signals": {"dedup": False, "trust": False, "class_quota": "proportional"},
    # how fast the vote's trust reaches full strength as separability grows (--trust-full 1.0 by default;
    # 0.5 was the first default: the records of its runs and of its ablations carry the "trust-0.5" names)
    "dynsel-trust-0.5": {**VOTE, "trust_full": 0.5},
    "dynsel-trust-0.25": {**VOTE, "trust_full": 0.25},
    "dynsel-trust-0.5-no-dedup": {**VOTE, "trust_full": 0.5, "dedup": False},
    "dynsel-trust-0.5-balanced": {**VOTE, "trust_full": 0.5, "class_quota": "balanced"},
    # The earlier default: representativeness/rarity score with a usage penalty.
    "score": {"method": "score"},
    # InfoBatch-style annealing: the last epoch trains on all samples (costs one extra full epoch of steps).
    "dynsel-anneal": {**VOTE, "full_epochs": 1},
    "random-anneal": {"method": "random", "full_epochs": 1},
}

#: Every --regime: the transforms of benchmarks/regimes.py, then the text-only fine-grained ones.
ALL_REGIMES: tuple[str, ...] = (*REGIMES, *FINE_REGIMES)
#: Every --methods name: the plan variants, then the anchor pipelines (benchmarks/anchors.py).
METHODS: tuple[str, ...] = (*VARIANTS, *ANCHORS)

#: Plan methods that never read the factor tables: their plans cost no precompute. ("usage-cycle": a
#: former control, kept so that old run logs summarise with the same accounting.)
NO_FACTOR_METHODS = frozenset({"full", "random", "rs2", "static-random", "usage-cycle"})


def needs_factors(variant: str) -> bool:
    """Whether ``variant``'s plan needs the factor tables (extract → fit-sae → factors)."""
    if variant in ANCHORS:  # the encoder's features only
        return False
    method = VARIANTS[variant].get("method", PlanConfig.method) if variant in VARIANTS else variant
    return method not in NO_FACTOR_METHODS


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
    """The CNN task on ``npz``'s x_train/y_train (first ``limit`` rows) and its untouched x_test/y_test."""
    with np.load(npz, allow_pickle=False) as data:
        x_train, y_train, x_test, y_test = data["x_train"], data["y_train"], data["x_test"], data["y_test"]
    if limit:
        x_train, y_train = x_train[:limit], y_train[:limit]
    to_x = lambda a: (torch.from_numpy(a).float().unsqueeze(1) / 255.0 - 0.286) / 0.353  # noqa: E731
    classes = int(max(y_train.max(), y_test.max())) + 1
    return Task(
        "vision",
        to_x(x_train),
        torch.from_numpy(y_train).long(),
        to_x(x_test),
        torch.from_numpy(y_test).long(),
        lambda: SmallCnn(classes),
        lr=0.05,
        batch_size=128,
    )


def _cached(
    out: Path, key: dict[str, Any], build: Callable[[], dict[str, Any]], also: tuple[Path, ...] = ()
) -> dict[str, Any]:
    """Reuse ``out`` when its sidecar (``out``.json) records the same ``key`` and the files ``also`` exist;
    else rebuild it. Returns info."""
    sidecar = out.with_name(out.name + ".json")
    if out.exists() and sidecar.exists() and all(p.exists() for p in also):
        try:
            recorded = json.loads(sidecar.read_text())
        except ValueError:
            recorded = {}
        if recorded.get("key") == key:
            return dict(recorded["info"])
    info = build()
    sidecar.write_text(json.dumps({"key": key, "info": info}, indent=2))
    return info


def vision_regime_source(
    data: Path, work: Path, regime: str, seed: int, limit: int | None
) -> tuple[Path, int | None, dict[str, Any]]:
    """The file the pipeline and the task read for ``regime``, the limit still to apply to it, and its info.

    Clean regimes use ``data`` itself (with ``limit``), so a run on the same file is reused as it is; the
    others write ``work``/regime-NAME-seedS.npz from the first ``limit`` training images.
    """
    if regime in IDENTITY_REGIMES:
        return data, limit, {"regime": regime}
    out = work / f"regime-{regime}-seed{seed}.npz"
    key = {"data_sha256": sha256_file(data), "regime": regime, "seed": seed, "limit": limit}
    work.mkdir(parents=True, exist_ok=True)
    return (
        out,
        None,
        _cached(out, key, lambda: write_vision_regime(data, out, regime, seed, limit), also=(truth_path(out),)),
    )


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


def text_test_features(work: Path, encoder: str, regime: str) -> Path:
    """The test split's features for ``regime``: the fine regimes' carry the refined labels."""
    return work / (f"test-features-fine-{encoder}" if regime in FINE_REGIMES else f"test-features-{encoder}")


def text_regime_source(
    work: Path, encoder: str, regime: str, seed: int, limit: int | None
) -> tuple[Path, ExtractConfig, dict[str, Any]]:
    """Training JSONL for ``regime`` and its extract settings; the test split's features are extracted too."""
    from dynsel_cli.extract import extract

    train_path, test_path = prepare_newsgroups(work)
    config = ExtractConfig(encoder=encoder, limit=limit)
    test_dir = work / f"test-features-{encoder}"
    if not (test_dir / "_manifest.json").exists():
        extract(test_path, test_dir, dataclasses.replace(config, limit=None))
    if regime in FINE_REGIMES:
        return fine_text_source(work, config, regime, seed)
    if regime in IDENTITY_REGIMES:
        return train_path, config, {"regime": regime}
    out = work / f"newsgroups-train-{regime}.jsonl"
    key = {"train_sha256": sha256_file(train_path), "regime": regime, "seed": seed, "limit": limit}
    info = _cached(out, key, lambda: write_text_regime(train_path, out, regime, seed, limit), also=(truth_path(out),))
    return out, dataclasses.replace(config, limit=None), info


def fine_text_source(
    work: Path, config: ExtractConfig, regime: str, seed: int
) -> tuple[Path, ExtractConfig, dict[str, Any]]:
    """The fine regimes (benchmarks/fine_labels.py): relabel by per-class k-means, then the base transform."""
    import shutil

    from dynsel_cli.extract import extract
    from dynsel_cli.formats.features import read_features

    encoder, limit = config.encoder, config.limit
    train_path, test_path = work / "newsgroups-train.jsonl", work / "newsgroups-test.jsonl"
    clean_train_dir, test_dir = work / f"train-features-{encoder}", work / f"test-features-{encoder}"
    fine_train, fine_test = work / "newsgroups-train-fine.jsonl", work / "newsgroups-test-fine.jsonl"
    fine_test_dir = text_test_features(work, encoder, regime)

    def build() -> dict[str, Any]:
        if not (clean_train_dir / "_manifest.json").exists():
            extract(train_path, clean_train_dir, config)
        train, test = read_features(clean_train_dir), read_features(test_dir)
        train_y, test_y, info = refine_labels(train.vectors, train.labels, test.vectors, test.labels, seed)
        for rows, labels, path in (
            (read_jsonl(train_path)[: limit or None], train_y, fine_train),
            (read_jsonl(test_path), test_y, fine_test),
        ):
            if len(rows) != len(labels):
                raise SystemExit(f"{path}: {len(rows)} rows but {len(labels)} features; use a fresh --work")
            path.write_text(
                "".join(
                    json.dumps({"text": r["text"], "label": int(v)}) + "\n"
                    for r, v in zip(rows, labels.tolist())
                    if v >= 0
                ),
                encoding="utf-8",
            )
        shutil.rmtree(fine_test_dir, ignore_errors=True)  # made from the previous labels
        return info

    key = {
        "train_sha256": sha256_file(train_path),
        "test_sha256": sha256_file(test_path),
        "seed": seed,
        "limit": limit,
        "encoder": encoder,
        "subclasses": SUBCLASSES,
    }
    fine_info = _cached(fine_train, key, build, also=(fine_test,))
    if not (fine_test_dir / "_manifest.json").exists():
        extract(fine_test, fine_test_dir, dataclasses.replace(config, limit=None))
    base = FINE_REGIMES[regime]
    if base in IDENTITY_REGIMES:
        return fine_train, dataclasses.replace(config, limit=None), {"regime": regime, "fine": fine_info}
    out = work / f"newsgroups-train-{regime}.jsonl"
    key = {"train_sha256": sha256_file(fine_train), "regime": base, "seed": seed}
    info = _cached(out, key, lambda: write_text_regime(fine_train, out, base, seed), also=(truth_path(out),))
    return out, dataclasses.replace(config, limit=None), {**info, "regime": regime, "base": base, "fine": fine_info}


def text_task(run: Path, work: Path, encoder: str, test_dir: Path | None = None) -> Task:
    """MLP on sentence embeddings: the run's training features, the test split's (default: the clean one's)."""
    return feature_task(
        "text", run / "features", test_dir if test_dir is not None else work / f"test-features-{encoder}"
    )


def feature_task(name: str, train_dir: Path, test_dir: Path) -> Task:
    """The MLP on extracted features (standardised by the training split's statistics)."""
    from dynsel_cli.formats.features import read_features

    train = read_features(train_dir)
    test = read_features(test_dir)
    assert np.array_equal(train.ids, np.arange(len(train.ids))), "ids index the feature rows"
    mean, std = train.vectors.mean(0), train.vectors.std(0) + 1e-6
    x_train = torch.from_numpy(((train.vectors - mean) / std).astype(np.float32))
    x_test = torch.from_numpy(((test.vectors - mean) / std).astype(np.float32))
    classes = int(max(train.labels.max(), test.labels.max())) + 1
    dim = x_train.shape[1]
    return Task(
        name,
        x_train,
        torch.from_numpy(train.labels.astype(np.int64)),
        x_test,
        torch.from_numpy(test.labels.astype(np.int64)),
        lambda: Mlp(dim, classes),
        lr=0.05,
        batch_size=128,
    )


def vision_feature_task(run: Path, source: Path, test_dir: Path, image_size: int) -> Task:
    """``--vision-model mlp``: the MLP on the run's efficientnet features; the test images extracted once."""
    from dynsel_cli.extract import extract

    if not (test_dir / "_manifest.json").exists():
        extract(source, test_dir, ExtractConfig(image_size=image_size, array="x_test", labels="y_test"))
    task = feature_task("vision", run / "features", test_dir)
    with np.load(source, allow_pickle=False) as data:
        if not np.array_equal(data["y_test"], task.y_test.numpy()):
            raise SystemExit(f"{test_dir}: not the test split of {source}; remove it or pass another --test-features")
    return task


def class_metrics(predictions: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Top-1 accuracy, balanced accuracy (mean per-class recall) and the worst class's recall, in percent.

    Classes are those present in ``labels`` (the test set).
    """
    predictions, labels = predictions.numpy(), labels.numpy()
    hit = predictions == labels
    classes = np.unique(labels)
    recall = np.array([hit[labels == c].mean() for c in classes])
    return {
        "acc": 100.0 * float(hit.mean()),
        "balanced_acc": 100.0 * float(recall.mean()),
        "worst_class_recall": 100.0 * float(recall.min()),
    }


def train_and_evaluate(
    task: Task, epochs: list[np.ndarray], total_steps: int, seed: int
) -> tuple[dict[str, float], float]:
    """Train on the plan's epochs (ids index task.x_train); returns (test metrics, training seconds)."""
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
    with torch.no_grad():
        predictions = torch.cat([model(task.x_test[b : b + 1024]).argmax(1) for b in range(0, len(task.x_test), 1024)])
    return class_metrics(predictions, task.y_test), seconds


def precompute(source: Path, work: Path, extract: ExtractConfig, sae: SaeConfig) -> dict[str, float]:
    """Run extract → fit-sae → factors once (cached in ``work``/run); returns each stage's wall time."""
    timings_file = work / "precompute_seconds.json"
    stamps: dict[str, float] = {}

    def log(message: str) -> None:
        stage = message.split(":")[0]
        if message.endswith("built") or message.endswith("up to date"):
            return
        stamps[stage] = time.perf_counter()
        print(f"  {message}", file=sys.stderr)

    t0 = time.perf_counter()
    run_pipeline(source, work / RUN_DIR, RunConfig(extract=extract, sae=sae, plan=PlanConfig(epochs=1)), log=log)
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

    run = work / RUN_DIR
    timings_file = work / "precompute_seconds.json"
    if (run / "factors" / "manifest.json").exists() and timings_file.exists():
        return json.loads(timings_file.read_text())
    run.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    manifest = fit_sae(features, run / "sae", sae)
    fit_s = time.perf_counter() - start
    print(f"  sae: {manifest['metrics']}", file=sys.stderr)
    start = time.perf_counter()
    build_factor_tables(features, run / "sae", run / "factors")
    timings = {"extract": extract_seconds, "fit-sae": fit_s, "factors": time.perf_counter() - start}
    timings_file.write_text(json.dumps(timings, indent=2))
    return timings


def _digest(values: np.ndarray) -> tuple[str, str, tuple[int, ...]]:
    values = np.ascontiguousarray(values)
    return hashlib.sha256(values.tobytes()).hexdigest(), values.dtype.str, values.shape


def _memoised_probe_trust() -> None:
    """The probe's verdict is a function of the codes, the labels and the --label-trust mode only (not of
    the plan's seed or ratio), and it is most of a probe plan's time: compute it once per cache and mode
    in this process instead of once per run. The plans are the same bytes either way."""
    from dynsel_cli.plan import signals

    compute = signals._probe_trust
    memo: dict[tuple[Any, ...], Any] = {}

    def memoised(units: np.ndarray, acts: np.ndarray, width: int, labels: np.ndarray, mode: str = "probe") -> Any:
        key = (*(_digest(a) for a in (units, acts, labels)), int(width), mode)
        if key not in memo:
            memo[key] = compute(units, acts, width, labels, mode)
        return tuple(np.copy(x) if isinstance(x, np.ndarray) else x for x in memo[key])

    signals._probe_trust = memoised


_memoised_probe_trust()


def plan_for(
    tables: Any, variant: str, ratio: float, seed: int, epochs: int, batch_size: int
) -> tuple[list[np.ndarray], int, float]:
    epochs_ids, steps, seconds, _ = plan_with_signals(tables, variant, ratio, seed, epochs, batch_size)
    return epochs_ids, steps, seconds


def plan_with_signals(
    tables: Any, variant: str, ratio: float, seed: int, epochs: int, batch_size: int
) -> tuple[list[np.ndarray], int, float, Any]:
    """A plan variant's epochs, steps, planning seconds and signals table (None unless dynsel)."""
    overrides = VARIANTS[variant]
    config = dataclasses.replace(
        PlanConfig(),
        epochs=epochs,
        ratio=1.0 if variant == "full" else ratio,
        seed=seed,
        batch_size=batch_size,
        device="cpu",
        **overrides,
    )
    start = time.perf_counter()
    result = compute_plan(tables, config)
    seconds = time.perf_counter() - start
    steps = sum(math.ceil(len(e) / batch_size) for e in result.epochs)
    return result.epochs, steps, seconds, getattr(result, "signals", None)


def anchor_plan(
    work: Path, name: str, labels: np.ndarray, ratio: float, seed: int, epochs: int, batch_size: int
) -> tuple[list[np.ndarray], int, float, Any]:
    """An anchor's epochs over its kept rows (decision cached in ``work``), steps, seconds and decision."""
    from dynsel_cli.formats.features import read_features

    features_dir = work / RUN_DIR / "features"
    key = {
        "anchor": name,
        "features_manifest_sha256": sha256_file(features_dir / "_manifest.json"),
        "labels_sha256": _sha256_array(labels),
    }
    start = time.perf_counter()
    cache = work / f"anchor-{name.replace('+', '-')}.npz"
    decision = anchor_decision(name, read_features(features_dir).vectors, labels, cache, key)
    epochs_ids = anchor_epochs(decision.kept, labels, ratio, epochs, seed)
    seconds = time.perf_counter() - start
    steps = sum(math.ceil(len(e) / batch_size) for e in epochs_ids)
    return epochs_ids, steps, seconds, decision


def _sha256_array(values: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(values, dtype=np.int64).tobytes()).hexdigest()


METRICS = ("acc", "balanced_acc", "worst_class_recall")


def _mean_std(values: list[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample std; None when a run lacks the metric (logs written before it was recorded)."""
    if not values or any(v is None for v in values):
        return None, None
    numbers = [float(v) for v in values if v is not None]
    return statistics.mean(numbers), (statistics.stdev(numbers) if len(numbers) > 1 else 0.0)


def summarise(runs: list[dict[str, Any]], precompute_s: float | dict[str, float]) -> list[dict[str, Any]]:
    """One row per (regime, ratio, method): metrics' mean ± std over seeds, steps, times and speedups.

    ``precompute_s``: extract + fit-sae + factors seconds, one number or one per regime; it counts only for
    methods whose plan needs the factors (:func:`needs_factors`). Runs without a regime are ``clean``.
    """
    order = list(VARIANTS)
    regime_of = lambda r: r.get("regime", "clean")  # noqa: E731
    rows = []
    keys = sorted(
        {(regime_of(r), r["method"], r["ratio"]) for r in runs},
        key=lambda k: (
            REGIMES.index(k[0]) if k[0] in REGIMES else len(REGIMES),
            k[0],
            k[2],
            order.index(k[1]) if k[1] in order else len(order),
            k[1],
        ),
    )
    for regime, method, ratio in keys:
        in_regime = [r for r in runs if regime_of(r) == regime]
        full_time = statistics.mean([r["train_s"] for r in in_regime if r["method"] == "full"] or [float("nan")])
        full_steps = statistics.mean([r["steps"] for r in in_regime if r["method"] == "full"] or [float("nan")])
        group = [r for r in in_regime if r["method"] == method and r["ratio"] == ratio]
        train_s = statistics.mean(r["train_s"] for r in group)
        plan_s = statistics.mean(r["plan_s"] for r in group)
        pre = precompute_s.get(regime, 0.0) if isinstance(precompute_s, dict) else precompute_s
        extra = pre + plan_s if needs_factors(method) else 0.0
        steps = statistics.mean(r["steps"] for r in group)
        row: dict[str, Any] = {"regime": regime, "method": method, "ratio": ratio, "seeds": len(group)}
        for metric in METRICS:
            row[f"{metric}_mean"], row[f"{metric}_std"] = _mean_std([r.get(metric) for r in group])
        row.update(
            {
                "train_s": train_s,
                "steps": steps,
                "speedup_steps": full_steps / steps,
                "speedup_train": full_time / train_s,
                "speedup_with_precompute": full_time / (train_s + extra),
            }
        )
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    def pm(row: dict[str, Any], metric: str) -> str:
        mean, std = row.get(f"{metric}_mean"), row.get(f"{metric}_std")
        return "–" if mean is None else f"{mean:.2f} ± {std:.2f}"

    lines = [
        "| regime | ratio | method | seeds | accuracy % (mean ± std) | balanced acc % | worst-class recall % | steps | speedup (steps) | train s | speedup (train s) | speedup (incl. precompute) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.get('regime', 'clean')} | {r['ratio']} | {r['method']} | {r['seeds']} | {pm(r, 'acc')} | {pm(r, 'balanced_acc')} | {pm(r, 'worst_class_recall')} | {r['steps']:.0f} | {r['speedup_steps']:.2f}x | {r['train_s']:.1f} | {r['speedup_train']:.2f}x | {r['speedup_with_precompute']:.2f}x |"
        )
    return "\n".join(lines)


def _recorded_runs(
    json_path: Path | None, regime: str, regime_seed: int, epochs: int, vision_model: str = "cnn"
) -> dict[tuple[str, float, int], dict[str, Any]]:
    """Runs already in ``json_path``'s .runs.jsonl for this regime, keyed by (method, ratio, seed)."""
    if json_path is None or not json_path.with_suffix(".runs.jsonl").exists():
        return {}
    done = {}
    for line in json_path.with_suffix(".runs.jsonl").read_text(encoding="utf-8").splitlines():
        run = json.loads(line) if line.strip() else None
        if (
            run
            and run.get("regime") == regime
            and run.get("regime_seed") == regime_seed
            and run.get("epochs") == epochs
            and run.get("vision_model", "cnn") == vision_model
        ):
            done[(run["method"], float(run["ratio"]), int(run["seed"]))] = run
    return done


def run_regime(
    args: argparse.Namespace, regime: str, work: Path, sae_config: SaeConfig
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Precompute and train every (ratio, method, seed) of one regime in ``work``; returns runs and details."""
    print(f"regime {regime}: {work}", file=sys.stderr, flush=True)
    epochs = args.epochs if args.epochs is not None else DEFAULT_EPOCHS[(args.quick, regime == "long")]
    if args.task == "vision":
        if regime in FINE_REGIMES:
            raise SystemExit(f"--regime {regime}: text only")
        source, limit, info = vision_regime_source(args.data, work, regime, args.regime_seed, args.limit)
        if args.features is not None:
            timings = precompute_from_features(args.features, work, sae_config, args.extract_seconds)
        else:
            timings = precompute(source, work, ExtractConfig(image_size=args.image_size, limit=limit), sae_config)
        if args.vision_model == "mlp":
            test_dir = (
                args.test_features
                if args.test_features is not None
                else work / f"test-features-vision-{args.image_size}"
            )
            task = vision_feature_task(work / RUN_DIR, source, test_dir, args.image_size)
        else:
            task = vision_task(source, limit)
    else:
        work.mkdir(parents=True, exist_ok=True)
        source, extract_config, info = text_regime_source(work, args.encoder, regime, args.regime_seed, args.limit)
        timings = precompute(source, work, extract_config, sae_config)
        task = text_task(work / RUN_DIR, work, args.encoder, text_test_features(work, args.encoder, regime))
    print(f"  regime data: {json.dumps(info)}", file=sys.stderr)
    tables = read_factor_tables(work / RUN_DIR / "factors")
    if tables.n_samples != len(task.y_train):
        raise SystemExit(
            f"{work / RUN_DIR}: factors cover {tables.n_samples} samples, the training data {len(task.y_train)}; use a fresh --work"
        )
    truth_source, truth_flipped = read_truth(source, len(task.y_train))
    labels = task.y_train.numpy()
    runs: list[dict[str, Any]] = []
    vision_model = args.vision_model if args.task == "vision" else "cnn"
    done = _recorded_runs(args.json, regime, args.regime_seed, epochs, vision_model)
    for ratio in args.ratios:
        for method in args.methods:
            if method == "full" and any(r["method"] == "full" for r in runs):
                continue  # full data does not depend on the ratio
            for seed in args.seeds:
                key = (method, 1.0 if method == "full" else ratio, seed)
                if key in done:  # a rerun of a stopped sweep continues where it stopped
                    runs.append(done[key])
                    continue
                extra: dict[str, Any] = {}
                if method in ANCHORS:
                    plan_epochs, steps, plan_s, decision = anchor_plan(
                        work, method, labels, ratio, seed, epochs, task.batch_size
                    )
                    detected = detection_metrics(
                        plan_epochs,
                        truth_source,
                        truth_flipped,
                        duplicate=decision.duplicate if method.startswith("semdedup") else None,
                        issue=decision.issue if method.endswith("cleanlab") else None,
                        anchor_group=decision.group,
                    )
                    extra = {"anchor_s": decision.seconds, "kept_share": float(decision.kept.mean())}
                else:
                    plan_epochs, steps, plan_s, signals = plan_with_signals(
                        tables, method, ratio, seed, epochs, task.batch_size
                    )
                    detected = detection_metrics(plan_epochs, truth_source, truth_flipped, signals=signals)
                metrics, train_s = train_and_evaluate(task, plan_epochs, steps, seed)
                run = {
                    "modality": args.task,
                    **({"vision_model": vision_model} if args.task == "vision" else {}),
                    "regime": regime,
                    "regime_seed": args.regime_seed,
                    "method": method,
                    "ratio": 1.0 if method == "full" else ratio,
                    "seed": seed,
                    **metrics,
                    "train_s": train_s,
                    "plan_s": plan_s,
                    "steps": steps,
                    "epochs": epochs,
                    "n_train": len(task.y_train),
                    **extra,
                    **detected,
                }
                runs.append(run)
                print(json.dumps(run), file=sys.stderr, flush=True)
                if args.json:  # every finished run is kept, even if the sweep is stopped early
                    with open(args.json.with_suffix(".runs.jsonl"), "a", encoding="utf-8") as handle:
                        handle.write(json.dumps(run) + "\n")
    return runs, {"work": str(work), "epochs": epochs, "info": info, "precompute_s": timings}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=["vision", "text"])
    parser.add_argument("--encoder", default="wordllama", help="text task: the sentence encoder (wordllama or minilm)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="defaults: sample_data, 1 seed, ratio 0.5, 2 epochs, methods full, rs2, dynsel",
    )
    parser.add_argument(
        "--regime",
        default="clean",
        choices=[*ALL_REGIMES, "all"],
        help="training-data regime (benchmarks/regimes.py; fine*: text only, benchmarks/fine_labels.py); all: every regimes.py regime in turn, in WORK/NAME (--quick only)",
    )
    parser.add_argument("--regime-seed", type=int, default=0, help="seed of the regime transform")
    parser.add_argument("--data", type=Path, default=SAMPLE)
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "evidence")
    parser.add_argument(
        "--methods",
        nargs="+",
        default=None,
        choices=list(METHODS),
        help="default: every plan variant (--quick: full rs2 dynsel); the anchors semdedup, cleanlab, semdedup+cleanlab only when named",
    )
    parser.add_argument("--ratios", nargs="+", type=float, default=None, help="default: 0.3 0.5 0.7 (--quick: 0.5)")
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="default: 0 1 2 (--quick: 0)")
    parser.add_argument("--epochs", type=int, default=None, help="default: 8, regime long 30 (--quick: 2, long 8)")
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        help="use only the first N training samples (taken before the regime transform)",
    )
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument(
        "--vision-model",
        default="cnn",
        choices=["cnn", "mlp"],
        help="vision: the CNN on pixels, or the MLP on the extracted efficientnet features",
    )
    parser.add_argument(
        "--test-features",
        type=Path,
        default=None,
        help="vision --vision-model mlp: where the test split's features are (extracted there when missing; default WORK/test-features-vision-SIZE)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--features",
        type=Path,
        default=None,
        help="vision, clean regimes: use features extracted earlier (skips extract)",
    )
    parser.add_argument(
        "--extract-seconds",
        type=float,
        default=0.0,
        help="with --features: the measured extract time, for the precompute cost",
    )
    parser.add_argument("--sae-epochs", type=int, default=None, help="override fit-sae's epoch cap")
    parser.add_argument("--json", type=Path, default=None, help="write all runs and the summary here")
    args = parser.parse_args(argv)
    if args.methods is None:
        args.methods = QUICK_METHODS if args.quick else list(VARIANTS)
    if args.ratios is None:
        args.ratios = [0.5] if args.quick else [0.3, 0.5, 0.7]
    if args.seeds is None:
        args.seeds = [0] if args.quick else [0, 1, 2]
    if args.regime == "all" and not args.quick:
        parser.error("--regime all runs only with --quick; run one --regime per --work otherwise")
    if args.features is not None and (args.task != "vision" or args.regime not in IDENTITY_REGIMES):
        parser.error("--features: only for the vision task on a clean regime (clean, long)")
    torch.set_num_threads(args.threads)

    sae_config = SaeConfig() if args.sae_epochs is None else dataclasses.replace(SaeConfig(), epochs=args.sae_epochs)
    regimes = list(REGIMES) if args.regime == "all" else [args.regime]
    runs: list[dict[str, Any]] = []
    details: dict[str, Any] = {}
    for regime in regimes:
        regime_runs, details[regime] = run_regime(
            args, regime, args.work / regime if args.regime == "all" else args.work, sae_config
        )
        runs += regime_runs
    precompute_s = {
        r: sum(d["precompute_s"].get(s, 0.0) for s in ("extract", "fit-sae", "factors")) for r, d in details.items()
    }
    rows = summarise(runs, precompute_s)
    table = markdown(rows)
    print(table)
    result = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "precompute_s": details[regimes[0]]["precompute_s"]
        if len(regimes) == 1
        else {r: d["precompute_s"] for r, d in details.items()},
        "regimes": details,
        "runs": runs,
        "summary": rows,
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
