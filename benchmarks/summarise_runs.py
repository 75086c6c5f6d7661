"""Summarise the per-run JSON lines that benchmarks/evidence.py appends (``--json X`` → ``X.runs.jsonl``),
or the ``--json X`` files themselves (their ``runs`` list).

Usage: python benchmarks/summarise_runs.py RUNS.jsonl|RESULTS.json [...] [--precompute-s SECONDS]
Sweeps split over several processes (e.g. one per ratio) are merged into one table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from evidence import markdown, summarise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--precompute-s", type=float, default=0.0, help="extract + fit-sae + factors seconds")
    args = parser.parse_args()
    runs = [run for path in args.runs for run in read_runs(path)]
    print(markdown(summarise(runs, args.precompute_s)))


def read_runs(path: Path) -> list[dict]:
    if path.suffix == ".json":
        return list(json.loads(path.read_text())["runs"])
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


if __name__ == "__main__":
    main()
