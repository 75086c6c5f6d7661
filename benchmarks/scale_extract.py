"""`dynsel extract` through Ray (1 and 2 workers) against the local executor, side by side in one run.

Each configuration is the real command in a child process, on the same images and settings:

    python -m dynsel_cli extract DATA --out DIR --limit N --device cpu [--executor ray --workers W]

(default image encoder, efficientnet-lite0 at 112 px, batch 64). For each: wall time (start-up, Ray start
and stop, actor start, model loads, writing included), the loop's time and rate from the summary line, and
the features' fingerprint (the three must be equal). Reported: ray(2) / local wall time (target <= 1.3)
and the throughput of 2 workers / 1 worker (target >= 1.6), with the machine's CPUs and load average.

Usage (the ``extract`` subcommand of bench_scale.py):
    python benchmarks/bench_scale.py extract [--data /work/bench/fashion_mnist.npz] [--limit 10000] [--threads 1] [--json benchmarks/results/scale-extract.json]

The images: an .npz with Fashion-MNIST (``python benchmarks/fashion_mnist.py --out /work/bench/fashion_mnist.npz``,
which needs the Debian package ``dataset-fashion-mnist``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SUMMARY = re.compile(r"features: (\d+) × (\d+) .* in ([\d.]+) s \(([\d,.]+) samples/s\)")
RUNS = (
    ("ray-1", ["--executor", "ray", "--workers", "1"]),
    ("ray-2", ["--executor", "ray", "--workers", "2"]),
    ("local", []),
)


def _env(threads: int | None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("RAY_ADDRESS", None)  # a local Ray started for each run, as on a laptop
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def actor_rss_mib() -> list[float]:
    """Resident memory of each Ray actor process on this machine (process title ``ray::_Actor...``)."""
    sizes = []
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or not (proc / "cmdline").read_bytes().startswith(b"ray::_Actor"):
                continue
            rss = next(line for line in (proc / "status").read_text().splitlines() if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            continue
        sizes.append(int(rss.split()[1]) / 1024)
    return sizes


class ActorMemory:
    """The largest RSS any one actor reached, sampled every half second while a run goes on."""

    def __init__(self) -> None:
        self.peak_mib = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            self.peak_mib = max([self.peak_mib, *actor_rss_mib()])

    def __enter__(self) -> ActorMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_extract(data: Path, out: Path, limit: int, extra: list[str], threads: int | None) -> dict[str, Any]:
    """One `dynsel extract` child process: wall and loop seconds, loop rate, fingerprint."""
    command = [
        sys.executable,
        "-m",
        "dynsel_cli",
        "extract",
        str(data),
        "--out",
        str(out),
        "--limit",
        str(limit),
        "--device",
        "cpu",
        *extra,
    ]
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    with ActorMemory() as memory:
        proc = subprocess.run(command, cwd=REPO, env=_env(threads), capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    match = SUMMARY.search(proc.stderr)
    if match is None:
        raise SystemExit(f"no summary line in:\n{proc.stderr[-3000:]}")
    manifest = json.loads((out / "_manifest.json").read_text())
    return {
        "command": " ".join(command[1:]),
        "wall_s": round(wall, 2),
        "loop_s": float(match.group(3)),
        "loop_samples_per_s": float(match.group(4).replace(",", "")),
        "samples": int(match.group(1)),
        "fingerprint": manifest["fingerprint"],
        "executor": manifest["executor"],
        "peak_actor_rss_mib": round(memory.peak_mib, 1) if manifest["executor"] == "ray" else None,
        "load_avg_1m_before": round(load_before, 2),
        "load_avg_1m_after": round(os.getloadavg()[0], 2),
    }


def bench_extract(args: argparse.Namespace) -> dict[str, Any]:
    """Ray with 1 worker, Ray with 2 workers and local on the same images; returns (and writes) the results."""
    data = Path(args.data)
    if not data.exists():
        raise SystemExit(
            f"{data}: missing; make it with python benchmarks/fashion_mnist.py --out {data} (needs apt package dataset-fashion-mnist)"
        )
    runs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        for name, extra in RUNS:
            runs[name] = run_extract(data, Path(tmp) / name, args.limit, extra, args.threads)
            print(
                f"{name}: wall {runs[name]['wall_s']:.1f} s, loop {runs[name]['loop_s']:.1f} s ({runs[name]['loop_samples_per_s']:,.0f} samples/s)",
                file=sys.stderr,
            )
    result = {
        "data": str(data),
        "limit": args.limit,
        "cpus": os.cpu_count(),
        "threads": args.threads,
        "runs": runs,
        "same_features": len({r["fingerprint"] for r in runs.values()}) == 1,
        "ratio_wall_ray2_over_local": round(runs["ray-2"]["wall_s"] / runs["local"]["wall_s"], 3),
        "ratio_loop_ray2_over_local": round(runs["ray-2"]["loop_s"] / runs["local"]["loop_s"], 3),
        "throughput_2_over_1_wall": round(runs["ray-1"]["wall_s"] / runs["ray-2"]["wall_s"], 3),
        "throughput_2_over_1_loop": round(runs["ray-2"]["loop_samples_per_s"] / runs["ray-1"]["loop_samples_per_s"], 3),
    }
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default="/work/bench/fashion_mnist.npz", help="an .npz of images (x_train)")
    parser.add_argument("--limit", type=int, default=10_000)
    parser.add_argument(
        "--threads", type=int, default=None, help="OMP_NUM_THREADS for the child processes (default: torch's own)"
    )
    parser.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "scale-extract.json"))
