"""Does dropping the probe's suspects help a model learn the labels the data keeps? (--label-trust probe-checked)

For each selection-sweep cache given, runs the code probe with its filter check and prints one JSON line:
the probe's held-out accuracy, that of probes trained without the flagged rows, how many rows confident
learning flagged, whether the check kept them, and (where the regime planted flips) their precision and
recall against the flips.

Usage: python benchmarks/filter_check_study.py /work/bench/sel-text-noisy /work/bench/sel-text-fine ...
(each a ``--work`` folder of benchmarks/evidence.py, holding run/factors and the regime's .truth.npz).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from dynsel_cli.formats.factors import read_factor_tables
from dynsel_cli.plan.probe import label_trust


def planted_flips(work: Path, ids: np.ndarray) -> np.ndarray | None:
    """The regime's flipped-label truth for the factor rows (by id), or None where it planted none."""
    truths = sorted(work.glob("*.truth.npz"))
    if not truths:
        return None
    flipped = np.load(truths[0])["flipped"]
    return flipped[ids] if flipped.any() else None


def study(work: Path) -> dict[str, object]:
    tables = read_factor_tables(work / "run" / "factors")
    labels = np.unique(tables.samples.labels.astype(np.int64), return_inverse=True)[1]
    start = time.perf_counter()
    verdict = label_trust(tables.samples.units, tables.samples.acts, int(tables.manifest["width"]), labels, check_filter=True)
    record: dict[str, object] = {
        "work": work.name,
        "rows": len(labels),
        "classes": int(labels.max()) + 1,
        "accuracy": round(verdict.accuracy, 4),
        "filtered_accuracy": None if verdict.filtered_accuracy is None else round(verdict.filtered_accuracy, 4),
        "flagged_share": round(verdict.candidates / len(labels), 4),
        "kept": bool(verdict.suspects.any()),
        "seconds": round(time.perf_counter() - start, 1),
    }
    flips = planted_flips(work, tables.samples.ids.astype(np.int64))
    if flips is not None and verdict.filtered_accuracy is not None:
        flagged = verdict.suspects if verdict.suspects.any() else None
        if flagged is not None:
            record["precision"] = round(float((flagged & flips).sum() / max(flagged.sum(), 1)), 3)
            record["recall"] = round(float((flagged & flips).sum() / flips.sum()), 3)
    return record


def main(works: list[str]) -> None:
    for work in works:
        print(json.dumps(study(Path(work))), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
