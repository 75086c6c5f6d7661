"""The regime tables of docs/results.md, from the run records of benchmarks/run_regimes.sh.

Usage: python benchmarks/regime_tables.py benchmarks/results/regimes-*.runs.jsonl [--write docs/results.md]

With --write, the tables replace the text between the regime-tables markers of that file.

One table per modality and regime: every method's mean ± sample std over seeds (top-1; balanced accuracy
and worst-class recall too), and its difference from RS2 at the same ratio, paired by seed (the seed
sets the model's initialisation and the plan's, so pairing removes the initialisation's share of the
spread): mean ± std of (method − rs2) over the seeds both have.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

ORDER = [
    "full",
    "random",
    "rs2",
    "rs2-balanced",
    "dynsel",
    "dynsel-balanced",
    "dynsel-no-dedup",
    "dynsel-no-trust",
    "dynsel-trust-0.5",
    "dynsel-trust-0.5-no-dedup",
    "dynsel-trust-0.5-balanced",
    "dynsel-trust-0.25",
    "score",
]


def _mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {std:.2f}"


def tables(runs: list[dict[str, Any]]) -> str:
    by_key: dict[tuple[str, str, float, str], dict[int, dict[str, Any]]] = defaultdict(dict)
    modality_of = {}
    for run in runs:
        modality = run.get("modality", "?")
        by_key[(modality, run["regime"], float(run["ratio"]), run["method"])][int(run["seed"])] = (
            run  # a rerun of a seed replaces it
        )
        modality_of[run["regime"]] = modality
    out = []
    for modality, regime in sorted({(k[0], k[1]) for k in by_key}):
        keys = sorted(
            (k for k in by_key if k[0] == modality and k[1] == regime),
            key=lambda k: (k[2] if k[3] != "full" else 0.0, ORDER.index(k[3]) if k[3] in ORDER else 99),
        )
        out.append(f"#### {modality}: {regime}\n")
        out.append(
            "| ratio | method | seeds | steps | top-1 % | vs rs2 (paired) | balanced acc % | worst-class recall % |"
        )
        out.append("|---|---|---|---|---|---|---|---|")
        for key in keys:
            seeds = by_key[key]
            base = by_key.get((modality, regime, key[2], "rs2"), {})
            common = sorted(set(seeds) & set(base))
            delta = (
                "–"
                if key[3] in ("rs2", "full") or not common
                else _signed([seeds[s]["acc"] - base[s]["acc"] for s in common])
            )
            rows = list(seeds.values())
            out.append(
                f"| {key[2]} | {key[3]} | {len(rows)} | {rows[0]['steps']} | {_mean_std([r['acc'] for r in rows])} | {delta} | "
                f"{_mean_std([r['balanced_acc'] for r in rows if r.get('balanced_acc') is not None])} | "
                f"{_mean_std([r['worst_class_recall'] for r in rows if r.get('worst_class_recall') is not None])} |"
            )
        out.append("")
    return "\n".join(out)


def _signed(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):+.2f} ± {std:.2f}"


BEGIN, END = "<!-- regime-tables:begin -->", "<!-- regime-tables:end -->"


def main(argv: list[str]) -> None:
    write = None
    if "--write" in argv:
        at = argv.index("--write")
        write, argv = Path(argv[at + 1]), argv[:at] + argv[at + 2 :]
    runs = []
    for path in map(Path, argv):
        modality = "vision" if "-vision-" in path.name else "text" if "-text-" in path.name else "?"
        for line in path.read_text().splitlines():
            if line.strip():
                runs.append({"modality": modality, **json.loads(line)})
    text = tables(runs)
    if write is None:
        print(text)
        return
    doc = write.read_text(encoding="utf-8")
    start, stop = doc.index(BEGIN) + len(BEGIN), doc.index(END)
    write.write_text(doc[:start] + "\n" + text + "\n" + doc[stop:], encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
