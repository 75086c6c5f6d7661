"""dynsel's neighbour search, exact vs inverted lists (IVF), on synthetic factor codes.

Codes: k = 32 active units of width 4096. Each distinct sample belongs to one of N/200 topics (24 units
among the first 2048; the sample keeps 16 of them) and adds 16 noise units among the last 2048 (a random
start and random gaps: distinct); activations are exponential, sorted. Topic t belongs to class t mod 10. Planted
near-duplicates: 20% of the rows are copies of a random distinct sample with activations scaled by
1 + 0.05·N(0, 1), half of them with their two weakest units replaced. Label noise: 10% of the rows get
another class. Rows are shuffled.

Measured per size (one faiss thread, ``OMP_NUM_THREADS=1``; times are the process's CPU seconds):

- ``sweep``: recall of the exact 24 nearest neighbours (after the exact-cosine re-ranking) per nprobe;
- ``compare``: exact vs IVF signals at the default nprobe: recall, planted duplicate pairs grouped,
  suspects agreement, weights equal, CPU time of each;
- ``time``: IVF signals alone (1M); ``build``: the index build plus the search of the first ``--queries``
  rows only, extrapolated to N (10M).

    OMP_NUM_THREADS=1 python benchmarks/bench_neighbours.py --sweep 100000 --compare 100000 200000 --time 1000000
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np

from dynsel_cli.plan import neighbour_index
from dynsel_cli.plan.signals import PROJECTION_DIM, _normalised, _projector, code_neighbours, compute_signals

WIDTH, K, CLASSES = 4096, 32, 10
RESULTS = Path(__file__).parent / "results" / "neighbours.json"


def synthetic(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Codes with topics, planted near-duplicates and label noise (see the module docstring)."""
    rng = np.random.default_rng(seed)
    copies = round(0.2 * n)
    distinct = n - copies
    topics = max(1, n // 200)
    topic_units = np.stack([rng.choice(WIDTH // 2, size=24, replace=False) for _ in range(topics)])
    topic = rng.integers(0, topics, size=distinct)
    keep = np.argsort(rng.random((distinct, 24)), axis=1)[:, :16]
    gaps = rng.integers(1, WIDTH // 32, size=(distinct, 16))  # 16 gaps below 128 sum to < 2048: distinct units
    noise_units = WIDTH // 2 + (rng.integers(0, WIDTH // 2, size=(distinct, 1)) + np.cumsum(gaps, axis=1)) % (
        WIDTH // 2
    )
    units = np.concatenate([np.take_along_axis(topic_units[topic], keep, axis=1), noise_units], axis=1)
    units = units[:, rng.permutation(K)].astype(np.int32)  # topic and noise units interleaved in strength
    acts = -np.sort(-rng.exponential(1.0, size=(distinct, K)), axis=1).astype(np.float32)
    labels = (topic % CLASSES).astype(np.int64)
    source = rng.integers(0, distinct, size=copies)
    copy_units, copy_acts = (
        units[source].copy(),
        acts[source] * (1 + 0.05 * rng.standard_normal((copies, K))).astype(np.float32),
    )
    swap = rng.random(copies) < 0.5
    copy_units[swap, -2:] = rng.integers(WIDTH // 2, WIDTH, size=(int(swap.sum()), 2))  # rarely one of its own units
    units, acts = np.concatenate([units, copy_units]), np.maximum(np.concatenate([acts, copy_acts]), 1e-3)
    labels = np.concatenate([labels, labels[source]])
    flip = rng.random(n) < 0.1
    labels[flip] = (labels[flip] + rng.integers(1, CLASSES, size=int(flip.sum()))) % CLASSES
    order = rng.permutation(n)
    where = np.argsort(order)  # row of each original sample after the shuffle
    pairs = np.stack([where[distinct + np.arange(copies)], where[source]], axis=1)
    return {"units": units[order], "acts": acts[order], "labels": labels[order], "pairs": pairs}


def _cpu() -> float:
    return time.process_time()


def _recall(exact: np.ndarray, approx: np.ndarray) -> float:
    """Mean share of each row's exact neighbours that the approximate list holds."""
    hits = (exact[:, :, None] == approx[:, None, :]).any(axis=2)
    return float(hits.mean())


def sweep(n: int, nprobes: list[int]) -> dict[str, Any]:
    data = synthetic(n)
    t = _cpu()
    exact, _ = code_neighbours(data["units"], data["acts"], WIDTH, neighbours="exact")
    out: dict[str, Any] = {
        "n": n,
        "nlist": neighbour_index.cells_for(n),
        "exact_cpu_s": round(_cpu() - t, 1),
        "nprobe": {},
    }
    default = neighbour_index.NPROBE
    for nprobe in nprobes:
        neighbour_index.NPROBE = nprobe
        t = _cpu()
        approx, _ = code_neighbours(data["units"], data["acts"], WIDTH, neighbours="ivf")
        out["nprobe"][str(nprobe)] = {"recall_at_24": round(_recall(exact, approx), 4), "cpu_s": round(_cpu() - t, 1)}
        print(json.dumps({"n": n, "nprobe": nprobe, **out["nprobe"][str(nprobe)]}), flush=True)
    neighbour_index.NPROBE = default
    return out


def _grouped(group: np.ndarray, pairs: np.ndarray) -> float:
    return float(np.mean(group[pairs[:, 0]] == group[pairs[:, 1]]))


def compare(n: int) -> dict[str, Any]:
    data = synthetic(n)
    runs = {}
    for mode in ("exact", "ivf"):
        t = _cpu()
        found, _ = code_neighbours(data["units"], data["acts"], WIDTH, neighbours=mode)
        search_s = _cpu() - t
        t = _cpu()
        signals = compute_signals(data["units"], data["acts"], WIDTH, data["labels"], neighbours=mode)
        runs[mode] = (found, signals, search_s, _cpu() - t)
    (ef, es, ets, etotal), (af, as_, ats, atotal) = runs["exact"], runs["ivf"]
    both = np.count_nonzero(es.suspect & as_.suspect)
    either = np.count_nonzero(es.suspect | as_.suspect)
    out = {
        "n": n,
        "nlist": neighbour_index.cells_for(n),
        "nprobe": neighbour_index.NPROBE,
        "recall_at_24": round(_recall(ef, af), 4),
        "planted_pairs": len(data["pairs"]),
        "planted_pairs_grouped": {
            "exact": round(_grouped(es.group, data["pairs"]), 4),
            "ivf": round(_grouped(as_.group, data["pairs"]), 4),
        },
        "rows_in_groups": {
            "exact": int(np.count_nonzero(es.group_size > 1)),
            "ivf": int(np.count_nonzero(as_.group_size > 1)),
        },
        "group_size_equal_share": round(float(np.mean(es.group_size == as_.group_size)), 5),
        "suspects": {
            "exact": int(es.suspect.sum()),
            "ivf": int(as_.suspect.sum()),
            "jaccard": round(both / max(either, 1), 4),
            "flag_agreement": round(float(np.mean(es.suspect == as_.suspect)), 5),
        },
        "separability": {"exact": round(float(es.separability or 0), 4), "ivf": round(float(as_.separability or 0), 4)},
        "weights_equal_share": round(float(np.mean(es.weights == as_.weights)), 5),
        "weights_max_abs_diff": float(np.max(np.abs(es.weights - as_.weights))),
        "cpu_s": {
            "exact_search": round(ets, 1),
            "ivf_search": round(ats, 1),
            "exact_signals": round(etotal, 1),
            "ivf_signals": round(atotal, 1),
        },
    }
    print(json.dumps(out), flush=True)
    return out


def time_ivf(n: int) -> dict[str, Any]:
    data = synthetic(n)
    t, wall = _cpu(), time.perf_counter()
    signals = compute_signals(data["units"], data["acts"], WIDTH, data["labels"], neighbours="ivf")
    out = {
        "n": n,
        "nlist": neighbour_index.cells_for(n),
        "nprobe": neighbour_index.NPROBE,
        "ivf_signals_cpu_s": round(_cpu() - t, 1),
        "wall_s": round(time.perf_counter() - wall, 1),
        "planted_pairs_grouped": round(_grouped(signals.group, data["pairs"]), 4),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }
    print(json.dumps(out), flush=True)
    return out


def build_and_sample(n: int, queries: int) -> dict[str, Any]:
    """The IVF build over n rows and the search of the first ``queries`` of them, extrapolated to n."""
    data = synthetic(n)
    units = np.asarray(data.pop("units"), dtype=np.int64)
    a = _normalised(data.pop("acts"))
    project = _projector(units, a, WIDTH)
    t = _cpu()
    neighbour_index.ivf_search(project, n, PROJECTION_DIM, 25, queries=0)
    build = _cpu() - t
    t = _cpu()
    neighbour_index.ivf_search(project, n, PROJECTION_DIM, 25, queries=queries)
    search = (_cpu() - t - build) / queries * n
    out = {
        "n": n,
        "nlist": neighbour_index.cells_for(n),
        "nprobe": neighbour_index.NPROBE,
        "queries_timed": queries,
        "build_cpu_s": round(build, 1),
        "search_cpu_s_extrapolated": round(search, 1),
        "total_cpu_s_estimate": round(build + search, 1),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", type=int, nargs="*", default=[])
    parser.add_argument("--nprobes", type=int, nargs="*", default=[4, 8, 16, 32])
    parser.add_argument("--compare", type=int, nargs="*", default=[])
    parser.add_argument("--time", type=int, nargs="*", default=[])
    parser.add_argument("--build", type=int, nargs="*", default=[])
    parser.add_argument("--queries", type=int, default=100_000)
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args()
    results = json.loads(args.json.read_text()) if args.json.is_file() else {}
    for key, sizes, run in (
        ("sweep", args.sweep, lambda n: sweep(n, args.nprobes)),
        ("compare", args.compare, compare),
        ("time", args.time, time_ivf),
        ("build", args.build, lambda n: build_and_sample(n, args.queries)),
    ):
        for n in sizes:
            results.setdefault(key, {})[str(n)] = run(n)
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
