"""Start-up time of the `dynsel` command: `dynsel --help` and `dynsel report PLAN` (the target is < 0.5 s).

Usage: python benchmarks/bench_startup.py PLAN_DIR [--runs 15] [--json OUT.json]

Each command runs ``--runs`` times as a fresh process; the median and the fastest wall times are
reported (the fastest is the least disturbed by other jobs on a shared machine), with the modules each
command imports that it should not need (torch, faiss, pyarrow) as a regression check.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HEAVY = ("torch", "faiss", "pyarrow")


def timed(argv: list[str], runs: int) -> dict[str, float]:
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        seconds.append(time.perf_counter() - start)
    return {"median_s": statistics.median(seconds), "min_s": min(seconds), "runs": runs}


def heavy_imports(args: list[str]) -> list[str]:
    """Which of HEAVY the command imports (python -X importtime lists every module imported)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "dynsel_cli", *args], capture_output=True, text=True
    )
    names = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    return sorted(h for h in HEAVY if h in names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("plan", type=Path)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    base = [sys.executable, "-m", "dynsel_cli"]
    result = {
        "python_only": timed([sys.executable, "-c", "pass"], args.runs),
        "help": {**timed([*base, "--help"], args.runs), "heavy_imports": heavy_imports(["--help"])},
        "report": {
            **timed([*base, "report", str(args.plan)], args.runs),
            "heavy_imports": heavy_imports(["report", str(args.plan)]),
        },
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
