"""Summarise the per-run JSON lines that benchmarks/evidence.py appends (``--json X`` → ``X.runs.jsonl``).

Usage: python benchmarks/summarise_runs.py RUNS.jsonl [RUNS2.jsonl ...] [--precompute-s SECONDS]
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
    runs = [json.loads(line) for path in args.runs for line in path.read_text().splitlines() if line.strip()]
    print(markdown(summarise(runs, args.precompute_s)))


if __name__ == "__main__":
    main()
