"""Does dropping the probe's suspects help a model learn the labels the data keeps?
(--label-trust probe-checked and probe-heldout)

For each selection-sweep cache given, runs the code probe with its filter check and its held-out cut, and
prints one JSON line: the probe's held-out accuracy, that of probes trained without confident learning's
flags, how many rows it flagged and whether the check kept them; the share the held-out cut chose and
the accuracy it reached; and (where the regime planted flips) precision and recall of what each removes.

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
from dynsel_cli.plan.probe import held_out_cut, label_trust


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
    verdict = label_trust(
        tables.samples.units, tables.samples.acts, int(tables.manifest["width"]), labels, check_filter=True
    )
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
    start = time.perf_counter()
    cut, share = held_out_cut(tables.samples.units, tables.samples.acts, int(tables.manifest["width"]), labels)
    record.update(
        {
            "cut_share": round(share, 3),
            "cut_accuracy": None if cut.filtered_accuracy is None else round(cut.filtered_accuracy, 4),
            "cut_seconds": round(time.perf_counter() - start, 1),
        }
    )
    flips = planted_flips(work, tables.samples.ids.astype(np.int64))
    for name, removed in (("checked", verdict.suspects), ("cut", cut.suspects)):
        if flips is not None and removed.any():
            record[f"{name}_precision"] = round(float((removed & flips).sum() / removed.sum()), 3)
            record[f"{name}_recall"] = round(float((removed & flips).sum() / flips.sum()), 3)
    return record


def main(works: list[str]) -> None:
    for work in works:
        print(json.dumps(study(Path(work))), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
