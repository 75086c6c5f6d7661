"""Peak memory of `dynsel extract` on text: it must not follow N or the longest text (docs/extract.md).

Reads 20 Newsgroups (``../shared/data/20newsgroups.jsonl.gz``: gzip JSONL with text/label/split), drops
empty texts, writes the first N training rows as JSONL (text, label) to a temporary folder, and for each
N runs the real command in its own child process:

    python -m dynsel_cli extract posts-N.jsonl --out DIR --encoder wordllama --device cpu

For each run it records the wall time, the loop time and rate (from the summary line; model loading
excluded), the peak RSS of the largest process (``os.wait4`` on the child: the child and its reaped
DataLoader workers, the largest of them) and the peak of the whole process tree's summed RSS (sampled
from /proc every 0.1 s, Linux only). Prints one JSON object and writes it with ``--json``.

Usage:
    OMP_NUM_THREADS=1 python benchmarks/bench_text_memory.py --json text-memory.json
    python benchmarks/bench_text_memory.py --sizes 200 3000 --encoder minilm
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "20newsgroups.jsonl.gz"


def write_posts(data: Path, sizes: list[int], folder: Path) -> dict[int, dict[str, Any]]:
    """posts-N.jsonl with the first N non-empty training rows, for each N; their size and longest text."""
    rows: list[dict[str, str]] = []
    wanted = max(sizes)
    with gzip.open(data, "rt", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            if row["split"] == "train" and row["text"].strip():
                rows.append({"text": row["text"], "label": row["label"]})
                if len(rows) == wanted:
                    break
    if len(rows) < wanted:
        raise SystemExit(f"{data}: only {len(rows)} non-empty training rows; asked for {wanted}")
    info = {}
    for n in sizes:
        path = folder / f"posts-{n}.jsonl"
        with path.open("w", encoding="utf-8") as fh:
            for row in rows[:n]:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        lengths = [len(r["text"]) for r in rows[:n]]
        info[n] = {
            "path": path,
            "bytes": path.stat().st_size,
            "longest_chars": max(lengths),
            "mean_chars": sum(lengths) / n,
        }
    return info


def _tree_rss_kib(root: int) -> int:
    """Summed VmRSS (KiB) of ``root`` and its descendants, from /proc (0 where /proc is not there)."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return 0
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as fh:
                status = fh.read()
        except OSError:
            continue
        ppid = re.search(r"^PPid:\s+(\d+)", status, re.M)
        vm = re.search(r"^VmRSS:\s+(\d+)", status, re.M)
        if ppid:
            parents[int(entry)] = int(ppid.group(1))
            rss[int(entry)] = int(vm.group(1)) if vm else 0
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in tree:
                tree.add(pid)
                frontier.append(pid)
    return sum(rss.get(pid, 0) for pid in tree)


def run_extract(source: Path, out: Path, encoder: str, batch_size: int | None, workers: int | None) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "dynsel_cli",
        "extract",
        str(source),
        "--out",
        str(out),
        "--encoder",
        encoder,
        "--device",
        "cpu",
    ]
    if batch_size is not None:
        command += ["--batch-size", str(batch_size)]
    if workers is not None:
        command += ["--workers", str(workers)]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.setdefault("OMP_NUM_THREADS", "1")
    peak_tree = [0]
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=log)
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak_tree[0] = max(peak_tree[0], _tree_rss_kib(proc.pid))
                done.wait(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage: the largest of it and its reaped workers
        wall = time.perf_counter() - start
        done.set()
        sampler.join()
        log.seek(0)
        text = log.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"dynsel extract failed:\n{text}")
    match = re.search(r"in ([\d.]+) s \(([\d,]+) samples/s\)", text)
    manifest = json.loads((out / "_manifest.json").read_text())
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "loop_s": float(match.group(1)) if match else None,
        "samples_per_s": float(match.group(2).replace(",", "")) if match else None,
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "peak_tree_rss_mib": round(peak_tree[0] / 1024, 1) if peak_tree[0] else None,
        "n_samples": manifest.get("n_samples"),
        "encoder_settings": manifest["encoder"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA, help="20newsgroups.jsonl.gz (default: ../shared/data/)")
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[1000, 10000], help="N values, run in this order (default: 1000 10000)"
    )
    parser.add_argument("--encoder", default="wordllama")
    parser.add_argument("--batch-size", type=int, default=None, help="dynsel's --batch-size (default: dynsel's, 64)")
    parser.add_argument("--workers", type=int, default=None, help="dynsel's --workers (default: dynsel's)")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-text-memory-") as tmp:
        folder = Path(tmp)
        posts = write_posts(args.data, args.sizes, folder)
        runs = []
        for n in args.sizes:
            result = run_extract(
                posts[n]["path"], folder / f"features-{n}", args.encoder, args.batch_size, args.workers
            )
            run = {
                "n": n,
                "jsonl_bytes": posts[n]["bytes"],
                "longest_chars": posts[n]["longest_chars"],
                "mean_chars": round(posts[n]["mean_chars"], 1),
                **result,
            }
            runs.append(run)
            print(
                f"n={n}: wall {run['wall_s']} s, peak RSS {run['peak_rss_mib']} MiB (tree {run['peak_tree_rss_mib']} MiB)",
                file=sys.stderr,
                flush=True,
            )
    first, last = runs[0], runs[-1]
    report = {
        "benchmark": "bench_text_memory",
        "encoder": args.encoder,
        "data": str(args.data),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "runs": runs,
        "peak_rss_ratio_last_vs_first": round(last["peak_rss_mib"] / first["peak_rss_mib"], 3),
        "peak_tree_rss_ratio_last_vs_first": round(last["peak_tree_rss_mib"] / first["peak_tree_rss_mib"], 3)
        if first["peak_tree_rss_mib"] and last["peak_tree_rss_mib"]
        else None,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
