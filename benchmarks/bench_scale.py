"""Stages at scale: `dynsel plan` on large synthetic factor tables, and `dynsel extract` through Ray.

Usage:
    python benchmarks/bench_scale.py extract --data /work/bench/fashion_mnist.npz --limit 10000 --threads 1

    python benchmarks/bench_scale.py plan --factors /work/bench/f10m --n 10000000 --epochs 100 \
        --method score --formats bin --json benchmarks/results/scale-plan-10m.json

``extract`` (benchmarks/scale_extract.py) runs Ray with 1 and 2 workers and the local executor on the same
images, side by side in one invocation. ``plan`` writes the factor tables into ``--factors`` once (skipped when a table of that N is there), then
runs `dynsel plan` in a subprocess per ``--method`` and appends one JSON record per run to ``--json``
(JSON lines). Peak RSS is the child's own ``ru_maxrss`` (``os.wait4``); per-epoch time comes from
watching the plan's indices.bin grow (one epoch is ``budget × itemsize`` bytes), so the run is not slowed
by extra instrumentation.

The tables are synthetic: k units per sample out of ``--width``, starting at a skewed random unit (so unit
frequencies vary, as in real codes) with a random stride; activations uniform, sorted largest first;
labels uniform over ``--classes`` when given. They are written in chunks of 2^20 rows
(:class:`dynsel_cli.formats.factors.SampleTableWriter`), with unit statistics accumulated per chunk, so
writing 100M rows never holds N × k.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from dynsel_cli.formats.common import atomic_directory
from dynsel_cli.formats.factors import (
    SampleFactors,
    SampleTableWriter,
    UnitStats,
    finish_factor_tables,
    read_factors_manifest,
)
from dynsel_cli.plan.budget import epoch_budget

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scale_extract  # noqa: E402  (benchmarks/ is not a package)

CHUNK = 1 << 20


class _UnitCounts:
    """Per-unit count, activation mass and max (and per-class counts), accumulated chunk by chunk."""

    def __init__(self, width: int, classes: int | None) -> None:
        self.width, self.classes = width, classes
        self.count = np.zeros(width, np.int64)
        self.mass = np.zeros(width, np.float64)
        self.max_act = np.zeros(width, np.float64)
        self.joint = np.zeros((classes, width), np.int64) if classes else None
        self.class_sizes = np.zeros(classes, np.int64) if classes else None
        self.n = 0

    def add(self, units: np.ndarray, acts: np.ndarray, labels: np.ndarray | None) -> None:
        flat_units, flat_acts = units.ravel().astype(np.int64), acts.ravel().astype(np.float64)
        self.count += np.bincount(flat_units, minlength=self.width)
        self.mass += np.bincount(flat_units, weights=flat_acts, minlength=self.width)
        np.maximum.at(self.max_act, flat_units, flat_acts)
        if labels is not None and self.joint is not None and self.class_sizes is not None:
            keys = np.repeat(labels, units.shape[1]) * self.width + flat_units
            self.joint += np.bincount(keys, minlength=self.joint.size).reshape(self.joint.shape)
            self.class_sizes += np.bincount(labels, minlength=len(self.class_sizes))
        self.n += len(units)

    def stats(self) -> UnitStats:
        mean = np.divide(self.mass, self.count, out=np.zeros(self.width), where=self.count > 0)
        class_frequency = None
        if self.joint is not None and self.class_sizes is not None:
            sizes = self.class_sizes.astype(np.float64)[:, None]
            class_frequency = np.divide(self.joint, sizes, out=np.zeros(self.joint.shape), where=sizes > 0).T
        return UnitStats(self.count, self.count / max(self.n, 1), self.mass, mean, self.max_act, class_frequency)


def synthetic_chunk(
    rng: np.random.Generator, start: int, rows: int, k: int, width: int, classes: int | None
) -> SampleFactors:
    first = (width * rng.random(rows) ** 2).astype(np.int64)  # skewed: low unit ids fire more often
    stride = rng.integers(1, max(2, width // k), rows)
    units = ((first[:, None] + stride[:, None] * np.arange(k)) % width).astype(np.int32)  # k distinct units
    acts = -np.sort(-rng.random((rows, k), dtype=np.float32), axis=1)
    labels = rng.integers(0, classes, rows) if classes else None
    return SampleFactors(ids=np.arange(start, start + rows, dtype=np.int64), labels=labels, units=units, acts=acts)


def write_tables(path: Path, n: int, k: int, width: int, classes: int | None, seed: int) -> dict[str, Any]:
    """Synthetic factor tables of ``n`` rows at ``path``, chunk by chunk; returns the manifest."""
    rng = np.random.default_rng(seed)
    counts = _UnitCounts(width, classes)
    with atomic_directory(path) as tmp:
        writer = SampleTableWriter(tmp / "samples.parquet", k, classes is not None)
        for start in range(0, n, CHUNK):
            chunk = synthetic_chunk(rng, start, min(CHUNK, n - start), k, width, classes)
            counts.add(chunk.units, chunk.acts, chunk.labels)
            writer.add(chunk)
        extra = {
            "inputs": {"features": f"synthetic-{n}-{k}-{width}-{classes}-{seed}", "sae": "synthetic"},
            "classes": None,
            "synthetic": True,
        }
        return finish_factor_tables(tmp, writer, counts.stats(), extra)


class _Watch(threading.Thread):
    """Polls the plan's growing indices.bin: the time each epoch's bytes were complete."""

    def __init__(self, out: Path, epoch_bytes: int, epochs: int) -> None:
        super().__init__(daemon=True)
        self.out, self.epoch_bytes, self.epochs = out, epoch_bytes, epochs
        self.start_time = time.perf_counter()
        self.times: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set() and len(self.times) < self.epochs:
            for candidate in self.out.parent.glob(f".{self.out.name}.tmp-*/indices.bin"):
                try:
                    done = candidate.stat().st_size // self.epoch_bytes
                except OSError:
                    continue
                now = time.perf_counter() - self.start_time
                self.times.extend([now] * (min(done, self.epochs) - len(self.times)))
            time.sleep(0.05)


def run_plan(
    factors: Path, out: Path, method: str, epochs: int, ratio: float, formats: str, extra: list[str]
) -> dict[str, Any]:
    """Run `dynsel plan` once in a child process; wall time, peak RSS, per-epoch times."""
    manifest = read_factors_manifest(factors, verify=False)
    n = int(manifest["n_samples"])
    budget = epoch_budget(ratio, n)
    itemsize = 4 if n < 2**32 else 8
    argv = [
        sys.executable,
        "-m",
        "dynsel_cli",
        "plan",
        str(factors),
        "--out",
        str(out),
        "--method",
        method,
        "--epochs",
        str(epochs),
        "--ratio",
        str(ratio),
        "--formats",
        formats,
        "--device",
        "cpu",
        *extra,
    ]
    watch = _Watch(out, budget * itemsize, epochs)
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    watch.start()
    stderr = proc.stderr.read() if proc.stderr else b""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    watch.stop.set()
    watch.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    times = watch.times
    per_epoch = (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else None
    return {
        "command": " ".join(argv[1:]),
        "n_samples": n,
        "k": int(manifest["k"]),
        "method": method,
        "epochs": epochs,
        "ratio": ratio,
        "formats": formats,
        "extra_args": extra,
        "returncode": proc.returncode,
        "wall_s": round(wall, 2),
        "peak_rss_bytes": usage.ru_maxrss * 1024,
        "peak_rss_bytes_per_sample": round(usage.ru_maxrss * 1024 / n, 2),
        "user_s": round(usage.ru_utime, 2),
        "sys_s": round(usage.ru_stime, 2),
        "first_epoch_written_s": round(times[0], 2) if times else None,
        "per_epoch_s": round(per_epoch, 3) if per_epoch is not None else None,
        "epochs_observed": len(times),
        "plan_bytes": sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) if out.exists() else None,
        "stderr_tail": stderr.decode(errors="replace")[-2000:] if proc.returncode else "",
    }


def plan_command(args: argparse.Namespace) -> None:
    factors = Path(args.factors)
    if not (factors / "manifest.json").exists():
        started = time.perf_counter()
        write_tables(factors, args.n, args.k, args.width, args.classes, args.seed)
        print(
            json.dumps(
                {
                    "wrote_tables": str(factors),
                    "n": args.n,
                    "k": args.k,
                    "seconds": round(time.perf_counter() - started, 1),
                }
            ),
            flush=True,
        )
    elif int(read_factors_manifest(factors, verify=False)["n_samples"]) != args.n:
        raise SystemExit(f"{factors} holds factor tables of another N; choose an empty --factors")
    out_root = Path(args.plan_dir) if args.plan_dir else Path(tempfile.mkdtemp(prefix="plan-", dir=factors.parent))
    for method in args.method:
        extra = ["--no-dedup", "--no-trust"] if method == "dynsel-uniform" else []
        name = "dynsel" if method == "dynsel-uniform" else method
        out = out_root / f"plan-{method}"
        if out.exists():  # the plan is deleted after its run: never a folder this benchmark did not make
            raise SystemExit(f"{out} exists; pass a --plan-dir without plan-* folders")
        record = run_plan(factors, out, name, args.epochs, args.ratio, args.formats, extra + list(args.extra or []))
        record["label"] = method
        record["machine"] = {
            "cpus": os.cpu_count(),
            "load_average_1m_after": round(os.getloadavg()[0], 2),  # the machine may be shared: wall time vs CPU time
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "dynsel_num_threads": os.environ.get("DYNSEL_NUM_THREADS"),
        }
        line = json.dumps(record, sort_keys=True)
        print(line, flush=True)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            with open(args.json, "a", encoding="utf-8") as handle:
                handle.write(line + "\n")
        shutil.rmtree(out, ignore_errors=True)
    if not args.plan_dir:
        shutil.rmtree(out_root, ignore_errors=True)


def extract_command(args: argparse.Namespace) -> None:
    result = scale_extract.bench_extract(args)
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    plan = commands.add_parser("plan", help="time `dynsel plan` on synthetic factor tables (written once)")
    plan.add_argument(
        "--factors", required=True, help="factor tables directory: written when missing, reused otherwise"
    )
    plan.add_argument("--n", type=int, required=True, help="samples")
    plan.add_argument("--k", type=int, default=32, help="units per sample")
    plan.add_argument("--width", type=int, default=4096, help="SAE width (units)")
    plan.add_argument("--classes", type=int, default=None, help="label the samples uniformly over this many classes")
    plan.add_argument("--seed", type=int, default=0)
    plan.add_argument(
        "--method", nargs="+", default=["score"], help="methods to time; dynsel-uniform is dynsel --no-dedup --no-trust"
    )
    plan.add_argument("--epochs", type=int, default=100)
    plan.add_argument("--ratio", type=float, default=0.5)
    plan.add_argument("--formats", default="bin,txt,parquet")
    plan.add_argument(
        "--plan-dir", default=None, help="where the plans go (each removed after its run); default: next to --factors"
    )
    plan.add_argument("--json", default=None, help="append one JSON line per run here")
    plan.add_argument("--extra", nargs=argparse.REMAINDER, help="further `dynsel plan` arguments")
    plan.set_defaults(run=plan_command)
    extract = commands.add_parser(
        "extract", help="time `dynsel extract` through Ray (1 and 2 workers) against the local executor"
    )
    scale_extract.add_arguments(extract)
    extract.set_defaults(run=extract_command)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
