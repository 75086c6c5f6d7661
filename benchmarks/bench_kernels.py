#!/usr/bin/env python
"""Benchmark of dynsel's fused scoring/selection kernels: numpy (cpu) vs Triton (cuda), side by side.

Synthetic SAE codes (seeded), then per device:
  * factor_scores: wall time (cuda: including host→device copies of the codes and the copy back),
  * select_epochs: time per epoch over the simulated epochs (cuda: after a warm-up that compiles the
    kernel variants), plus on cuda the fused epoch kernel alone (CUDA events),
  * bytes moved per epoch (model below) → achieved GB/s and the fraction of the device memory bandwidth,
and checks that the selections of the first --check-epochs epochs are identical on every device, and
(on cuda) that the device Gumbel map equals numpy's on all 2**24 possible inputs.

Byte model per epoch (N samples, K = n_select), a lower bound on HBM traffic:
  epoch kernel  read r, d, counts (3 × 4 B) + previous-selection mask (1 B), write counts (4 B),
                write composite keys (8 B)                                 = 25 B · N
  top-k         read the composite keys at least once                      =  8 B · N
                write K values + K indices                                 = 16 B · K
  sort winners  read + write K int64 indices (one pass)                    = 16 B · K
  mask          zero N bytes, scatter K bytes reading K int64 indices      =  1 B · N + 9 B · K
  total                                                                    = 34 B · N + 41 B · K
The device→host copy of the K indices (8 B · K) goes over PCIe/NVLink-C2C and is not counted.

Examples:
  python benchmarks/bench_kernels.py --n 200000 --epochs 3 --device cpu
  python benchmarks/bench_kernels.py                       # 10M samples, 100 epochs, cpu + cuda if present
  python benchmarks/bench_kernels.py --device cuda --json bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import numpy as np

BYTES_PER_SAMPLE = 34
BYTES_PER_SELECTED = 41
KERNEL_BYTES_PER_SAMPLE = 25


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=10_000_000, help="number of samples N")
    p.add_argument("--epochs", type=int, default=100, help="epochs simulated on the fast device(s)")
    p.add_argument("--cpu-epochs", type=int, default=None, help="epochs timed on cpu (default: min(epochs, 10))")
    p.add_argument("--k", type=int, default=32, help="SAE codes per sample")
    p.add_argument("--units", type=int, default=4096, help="SAE units m")
    p.add_argument("--ratio", type=float, default=0.5, help="selection ratio r (n_select = ceil(r·N))")
    p.add_argument("--tau", type=float, default=0.3, help="Gumbel temperature (0: no noise)")
    p.add_argument("--beta", type=float, default=1.0, help="usage-frequency penalty strength")
    p.add_argument("--penalty", choices=("additive", "multiplicative"), default="additive")
    p.add_argument("--decay", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--device",
        nargs="+",
        default=None,
        choices=("cpu", "cuda", "triton-cpu"),
        help="devices to compare (default: cpu, plus cuda when available); triton-cpu = Triton interpreter",
    )
    p.add_argument("--check-epochs", type=int, default=3, help="epochs whose selections must agree across devices")
    p.add_argument(
        "--bandwidth-gbs",
        type=float,
        default=None,
        help="device memory bandwidth in GB/s (default: from the device properties, H200 ≈ 4800)",
    )
    p.add_argument("--json", metavar="OUT", default=None, help="write the results as JSON to OUT ('-' = stdout)")
    return p.parse_args(argv)


def synthetic_codes(n: int, k: int, m: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded SAE-like codes: skewed unit usage (u = ⌊m·U²⌋), exponential activations, 2% padding."""
    rng = np.random.default_rng(seed)
    units = np.empty((n, k), dtype=np.int32)
    acts = np.empty((n, k), dtype=np.float32)
    step = 1 << 20
    for s in range(0, n, step):
        e = min(n, s + step)
        u = rng.random((e - s, k), dtype=np.float32)
        units[s:e] = np.minimum((u * u * m).astype(np.int32), m - 1)
        acts[s:e] = rng.exponential(1.0, (e - s, k)).astype(np.float32)
        units[s:e][rng.random((e - s, k), dtype=np.float32) < 0.02] = -1
    counts = np.bincount(units[units >= 0].ravel(), minlength=m)  # ~ rows using the unit (dups are rare)
    freq = np.minimum(counts / max(n, 1), 1.0).astype(np.float32)
    return units, acts, freq


def minmax(x: np.ndarray) -> np.ndarray:
    lo, hi = float(x.min()), float(x.max())
    return ((x - lo) / (hi - lo if hi > lo else 1.0)).astype(np.float32)


def cuda_bandwidth_gbs() -> tuple[float | None, str]:
    """Peak memory bandwidth from the device properties (2 · bus width · memory clock), or None."""
    import torch

    props = torch.cuda.get_device_properties(0)
    bus = getattr(props, "memory_bus_width", None)
    clock_khz = getattr(props, "memory_clock_rate", None)
    if bus and clock_khz:
        return 2.0 * clock_khz * 1e3 * (bus / 8) / 1e9, props.name
    if "H200" in props.name:
        return 4800.0, props.name
    return None, props.name


def sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def time_epoch_kernel(r: np.ndarray, d: np.ndarray, params: Any, reps: int = 20) -> float:
    """Seconds per launch of the fused epoch kernel alone (cuda events, after warm-up)."""
    import torch

    from dynsel_cli.kernels.triton_kernels import epoch_composite_triton

    n = r.shape[0]
    rt, dt = torch.from_numpy(r).cuda(), torch.from_numpy(d).cuda()
    counts = torch.zeros(n, dtype=torch.float32, device="cuda")
    prev = torch.zeros(n, dtype=torch.uint8, device="cuda")
    comp = torch.empty(n, dtype=torch.int64, device="cuda")
    epoch_composite_triton(rt, dt, counts, prev, comp, params, 1, update=True)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for i in range(reps):
        epoch_composite_triton(rt, dt, counts, prev, comp, params, 1 + i, update=True)
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1e3 / reps


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    devices = args.device
    if devices and "triton-cpu" in devices:
        os.environ.setdefault("TRITON_INTERPRET", "1")
    from dynsel_cli.kernels import SelectionParams, factor_scores, resolve_device, select_epochs

    if devices is None:
        devices = ["cpu"] + (["cuda"] if resolve_device("auto") == "cuda" else [])
    if "cuda" in devices:
        try:
            resolve_device("cuda")
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    n, epochs = args.n, args.epochs
    cpu_epochs = min(epochs, args.cpu_epochs if args.cpu_epochs is not None else 10)
    n_select = int(np.ceil(args.ratio * n))
    lambdas = [float(0.5 - 0.5 * np.cos(np.pi * t / max(epochs - 1, 1))) for t in range(epochs)]
    params = SelectionParams(
        n_select=n_select,
        lambdas=lambdas,
        ratio=args.ratio,
        beta=args.beta,
        penalty=args.penalty,
        decay=args.decay,
        tau=args.tau,
        seed=args.seed,
    )
    bytes_per_epoch = BYTES_PER_SAMPLE * n + BYTES_PER_SELECTED * n_select

    t0 = time.perf_counter()
    units, acts, freq = synthetic_codes(n, args.k, args.units, args.seed)
    log(f"synthetic codes: N={n:,} k={args.k} m={args.units} in {time.perf_counter() - t0:.1f}s")

    results: dict[str, Any] = {
        "config": {**vars(args), "device": devices, "n_select": n_select, "cpu_epochs": cpu_epochs},
        "bytes_per_epoch_model": bytes_per_epoch,
        "byte_model": f"{BYTES_PER_SAMPLE} B * N + {BYTES_PER_SELECTED} B * n_select",
        "devices": {},
    }
    bandwidth = args.bandwidth_gbs
    if "cuda" in devices:
        import torch

        dev_bw, name = cuda_bandwidth_gbs()
        results["cuda_device"] = name
        results["cuda_torch"] = torch.__version__
        bandwidth = bandwidth or dev_bw or 4800.0
    results["bandwidth_gbs"] = bandwidth
    try:
        import triton

        results["triton"] = triton.__version__
    except ImportError:
        results["triton"] = None

    scores: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    firsts: dict[str, list[np.ndarray]] = {}
    for device in devices:
        res: dict[str, Any] = {}
        if device != "cpu":  # compile the kernels outside the timings
            list(
                select_epochs(
                    minmax(np.arange(64, dtype=np.float32)),
                    np.zeros(64, np.float32),
                    SelectionParams(n_select=8, lambdas=[0.0, 0.5], ratio=0.1, tau=args.tau, penalty=args.penalty),
                    device=device,
                )
            )
            factor_scores(units[:64], acts[:64], freq, device=device)
        sync(device)
        t0 = time.perf_counter()
        r_raw, d_raw = factor_scores(units, acts, freq, device=device)
        sync(device)
        res["factor_scores_s"] = time.perf_counter() - t0
        scores[device] = (r_raw, d_raw)
        r, d = minmax(r_raw), minmax(d_raw)

        n_ep = cpu_epochs if device == "cpu" else epochs
        run_params = SelectionParams(**{**params.__dict__, "lambdas": lambdas[:n_ep]})
        sel_first: list[np.ndarray] = []
        t0 = time.perf_counter()
        for t, sel in enumerate(select_epochs(r, d, run_params, device=device)):
            if t < args.check_epochs:
                sel_first.append(sel)
        sync(device)
        total = time.perf_counter() - t0
        firsts[device] = sel_first
        per_epoch = total / max(n_ep, 1)
        res.update(
            epochs=n_ep,
            select_total_s=total,
            select_per_epoch_s=per_epoch,
            achieved_gbs=bytes_per_epoch / per_epoch / 1e9 if per_epoch > 0 else None,
        )
        if device == "cuda":
            k_s = time_epoch_kernel(r, d, params)
            res["epoch_kernel_s"] = k_s
            res["epoch_kernel_gbs"] = KERNEL_BYTES_PER_SAMPLE * n / k_s / 1e9
            res["epoch_kernel_bandwidth_fraction"] = res["epoch_kernel_gbs"] / bandwidth
            res["bandwidth_fraction"] = res["achieved_gbs"] / bandwidth
            from dynsel_cli.kernels.philox import gumbel_from_uint32
            from dynsel_cli.kernels.triton_kernels import gumbel_from_uint32_triton

            x = (np.arange(1 << 24, dtype=np.uint32) << np.uint32(8)) | np.uint32(0x5A)
            g_dev = gumbel_from_uint32_triton(x, torch_device="cuda")
            res["gumbel_table_mismatches"] = int((g_dev.view(np.uint32) != gumbel_from_uint32(x).view(np.uint32)).sum())
        results["devices"][device] = res
        log(
            f"[{device}] factor_scores {res['factor_scores_s']:.3f}s; select {per_epoch * 1e3:.2f} ms/epoch "
            f"over {n_ep} epochs ({res['achieved_gbs']:.1f} GB/s by the byte model)"
        )

    ref = devices[0]
    checks = {}
    for device in devices[1:]:
        same_scores = all(
            np.array_equal(a.view(np.uint32), b.view(np.uint32)) for a, b in zip(scores[ref], scores[device])
        )
        m = min(len(firsts[ref]), len(firsts[device]))
        same_sel = all(np.array_equal(a, b) for a, b in zip(firsts[ref][:m], firsts[device][:m]))
        checks[f"{ref}_vs_{device}"] = {
            "factor_scores_identical": same_scores,
            "epochs_compared": m,
            "selections_identical": same_sel,
        }
    results["checks"] = checks
    if "cpu" in results["devices"] and "cuda" in results["devices"]:
        results["speedup_cuda_over_cpu"] = {
            "factor_scores": results["devices"]["cpu"]["factor_scores_s"]
            / results["devices"]["cuda"]["factor_scores_s"],
            "select_per_epoch": results["devices"]["cpu"]["select_per_epoch_s"]
            / results["devices"]["cuda"]["select_per_epoch_s"],
        }

    # human summary (stderr) and JSON
    log(f"\nN={n:,} n_select={n_select:,} k={args.k} m={args.units} tau={args.tau} penalty={args.penalty}")
    log(f"bytes/epoch (model {results['byte_model']}): {bytes_per_epoch / 1e6:.1f} MB")
    log(
        f"{'device':<11}{'factor_scores s':>16}{'ms/epoch':>11}{'GB/s':>9}{'BW frac':>9}{'kernel ms':>11}{'kernel frac':>13}"
    )
    for device, res in results["devices"].items():
        frac = res.get("bandwidth_fraction")
        kms = res.get("epoch_kernel_s")
        kfrac = res.get("epoch_kernel_bandwidth_fraction")
        log(
            f"{device:<11}{res['factor_scores_s']:>16.3f}{res['select_per_epoch_s'] * 1e3:>11.2f}"
            f"{res['achieved_gbs']:>9.2f}{(f'{frac:.3f}' if frac is not None else '-'):>9}"
            f"{(f'{kms * 1e3:.3f}' if kms is not None else '-'):>11}{(f'{kfrac:.3f}' if kfrac is not None else '-'):>13}"
        )
    if "speedup_cuda_over_cpu" in results:
        sp = results["speedup_cuda_over_cpu"]
        log(
            f"speedup cuda/cpu: factor_scores ×{sp['factor_scores']:.1f}, select per epoch ×{sp['select_per_epoch']:.1f}"
        )
    for name, c in checks.items():
        log(
            f"check {name}: factor scores identical={c['factor_scores_identical']}, "
            f"selections identical over {c['epochs_compared']} epochs={c['selections_identical']}"
        )
    if "cuda" in results["devices"]:
        log(
            f"gumbel map mismatches on cuda over all 2**24 inputs: {results['devices']['cuda']['gumbel_table_mismatches']}"
        )
    if args.json:
        text = json.dumps(results, indent=2, default=float)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w") as fh:
                fh.write(text + "\n")
    ok = all(c["factor_scores_identical"] and c["selections_identical"] for c in checks.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
