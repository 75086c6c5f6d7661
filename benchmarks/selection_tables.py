"""Tables of the selection sweep (benchmarks/run_selection.sh), from its run records.

Usage: python benchmarks/selection_tables.py benchmarks/results/selection-*.runs.jsonl [--out FILE]

Markdown on stdout (and into FILE with --out). The modality is the record's ``modality`` field, else the
file name's ``-text-``/``-vision-``. A seed recorded twice for one method counts once (the later record).

Per modality, regime and ratio:

- every method's mean ± sample std over seeds of the regime's metric: top-1 accuracy, or balanced
  accuracy on the imbalanced regimes (imbalanced, imbalanced-redundant); ``full`` (ratio 1) is shown in
  every ratio's table for reference;
- dynsel's difference from rs2 and from the best anchor (the anchor with the highest mean at that ratio),
  PAIRED by seed: mean ± std of the per-seed differences, over the n seeds both have;
- whether the targets hold, on those paired means:

  - messy regimes (every regime not listed below, and imbalanced-redundant): dynsel >= best anchor - 0.2
    and dynsel >= rs2 + 2.0;
  - clean regimes (clean, long, paraphrase, fine): dynsel >= rs2 - 0.1;
  - imbalanced regimes (imbalanced, imbalanced-redundant): dynsel-balanced >= rs2-balanced, on
    balanced accuracy;

- the detection metrics (means over seeds; benchmarks/detection.py): grouped and flagged shares (what
  dynsel flags on clean data is its false-alarm rate), suspect precision/recall and flipped_draw_share
  beside cleanlab's, copy-pair precision/recall beside semdedup's.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

ANCHORS = ("semdedup", "cleanlab", "semdedup+cleanlab")
ORDER = [
    "full",
    "random",
    "rs2",
    "rs2-balanced",
    "dynsel",
    "dynsel-balanced",
    "dynsel-no-dedup",
    "dynsel-no-trust",
    *ANCHORS,
]
CLEAN_REGIMES = ("clean", "long", "paraphrase", "fine")
IMBALANCED_REGIMES = ("imbalanced", "imbalanced-redundant")
REGIME_ORDER = [
    "clean",
    "long",
    "paraphrase",
    "fine",
    "noisy",
    "noisy-pair",
    "redundant",
    "redundant-exact",
    "redundant-uniform",
    "redundant-noisy",
    "imbalanced",
    "imbalanced-redundant",
    "fine-noisy",
    "fine-redundant",
]
DETECTION = [
    ("grouped_share", "grouped"),
    ("flagged_share", "flagged"),
    ("suspect_precision", "suspect P"),
    ("suspect_recall", "suspect R"),
    ("flipped_draw_share", "draws on flipped"),
    ("copy_pair_precision", "copy-pair P"),
    ("copy_pair_recall", "copy-pair R"),
]
MESSY_VS_ANCHOR, MESSY_VS_RS2, CLEAN_VS_RS2 = -0.2, 2.0, -0.1

Seeds = dict[int, dict[str, Any]]


def metric_of(regime: str) -> str:
    return "balanced_acc" if regime in IMBALANCED_REGIMES else "acc"


def read_runs(paths: list[Path]) -> list[dict[str, Any]]:
    runs = []
    for path in paths:
        guess = "vision" if "-vision-" in path.name else "text" if "-text-" in path.name else "?"
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                run = json.loads(line)
                runs.append({"modality": guess, **run})
    return runs


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def paired(a: Seeds, b: Seeds, metric: str) -> tuple[float, float, int] | None:
    """Mean and std of (a − b) over the seeds both have, and their number; None without common seeds."""
    common = sorted(set(a) & set(b))
    diffs = [
        float(a[s][metric]) - float(b[s][metric])
        for s in common
        if a[s].get(metric) is not None and b[s].get(metric) is not None
    ]
    if not diffs:
        return None
    mean, std = _mean_std(diffs)
    return mean, std, len(diffs)


def best_anchor(methods: dict[str, Seeds], metric: str) -> str | None:
    means = {a: statistics.mean(float(r[metric]) for r in methods[a].values()) for a in ANCHORS if methods.get(a)}
    return max(means, key=lambda a: (means[a], -ANCHORS.index(a))) if means else None


def targets(
    regime: str, methods: dict[str, Seeds], default: str = "dynsel"
) -> list[tuple[str, tuple[float, float, int] | None, float]]:
    """(target, paired difference, threshold) for each target of ``regime``; holds when mean >= threshold.
    ``default``: the method the targets are for (dynsel's default settings)."""
    metric = metric_of(regime)
    out: list[tuple[str, tuple[float, float, int] | None, float]] = []
    dynsel, rs2 = methods.get(default, {}), methods.get("rs2", {})
    if regime in CLEAN_REGIMES:
        out.append(("dynsel − rs2 >= −0.1", paired(dynsel, rs2, metric), CLEAN_VS_RS2))
    elif regime != "imbalanced":
        anchor = best_anchor(methods, metric)
        out.append(
            (
                f"dynsel − best anchor ({anchor or '–'}) >= −0.2",
                paired(dynsel, methods[anchor], metric) if anchor else None,
                MESSY_VS_ANCHOR,
            )
        )
        out.append(("dynsel − rs2 >= +2.0", paired(dynsel, rs2, metric), MESSY_VS_RS2))
    if regime in IMBALANCED_REGIMES:
        out.append(
            (
                "dynsel-balanced − rs2-balanced >= 0 (balanced acc)",
                paired(methods.get("dynsel-balanced", {}), methods.get("rs2-balanced", {}), "balanced_acc"),
                0.0,
            )
        )
    return out


def by_setting(runs: list[dict[str, Any]]) -> dict[tuple[str, str, float], dict[str, Seeds]]:
    """(modality, regime, ratio) → method → seed → run record (a later record of a seed replaces an earlier)."""
    by: dict[tuple[str, str, float], dict[str, Seeds]] = defaultdict(lambda: defaultdict(dict))
    for run in runs:
        by[(run["modality"], run["regime"], float(run["ratio"]))][run["method"]][int(run["seed"])] = run
    return by


def _regime_key(regime: str) -> tuple[int, str]:
    return (REGIME_ORDER.index(regime) if regime in REGIME_ORDER else len(REGIME_ORDER), regime)


def _signed(value: tuple[float, float, int] | None) -> str:
    return "–" if value is None else f"{value[0]:+.2f} ± {value[1]:.2f} (n={value[2]})"


def _order(method: str) -> tuple[int, str]:
    return (ORDER.index(method) if method in ORDER else len(ORDER), method)


def tables(runs: list[dict[str, Any]], default: str = "dynsel") -> str:
    by = by_setting(runs)
    summary = ["| modality | regime | ratio | target | paired difference | holds |", "|---|---|---|---|---|---|"]
    body: list[str] = []
    for modality, regime in sorted({(k[0], k[1]) for k in by}, key=lambda k: (k[0], _regime_key(k[1]))):
        metric = metric_of(regime)
        full = by.get((modality, regime, 1.0), {}).get("full", {})
        for ratio in sorted(r for m, g, r in by if (m, g) == (modality, regime) and r < 1.0):
            methods = dict(by[(modality, regime, ratio)])
            anchor = best_anchor(methods, metric)
            label = "balanced accuracy" if metric == "balanced_acc" else "top-1 accuracy"
            body.append(f"### {modality}: {regime}, ratio {ratio}\n")
            body.append(f"| method | seeds | {label} % (mean ± std) | dynsel − method (paired) |")
            body.append("|---|---|---|---|")
            rows = ([("full", full)] if full else []) + sorted(methods.items(), key=lambda kv: _order(kv[0]))
            for method, seeds in rows:
                values = [float(r[metric]) for r in seeds.values() if r.get(metric) is not None]
                mean, std = _mean_std(values) if values else (float("nan"), 0.0)
                delta = "–" if method == default else _signed(paired(methods.get(default, {}), seeds, metric))
                name = f"{method} (best anchor)" if method == anchor else method
                body.append(f"| {name} | {len(seeds)} | {mean:.2f} ± {std:.2f} | {delta} |")
            body.append("")
            for target, diff, threshold in targets(regime, methods, default):
                holds = "–" if diff is None else ("yes" if diff[0] >= threshold else "no")
                summary.append(f"| {modality} | {regime} | {ratio} | {target} | {_signed(diff)} | {holds} |")
            detection = _detection(methods)
            if detection:
                body += detection + [""]
    return "\n".join(["## Targets\n", *summary, "", "## Per regime\n", *body])


def compact(runs: list[dict[str, Any]], default: str, earlier: str) -> str:
    """One row per modality, regime and ratio: RS2, the best anchor, the earlier default and the default
    (means over their seeds), and the default's paired differences from each."""
    by = by_setting(runs)
    lines = [
        f"| modality | regime | r | rs2 | best anchor | {earlier} | {default} | − rs2 | − best anchor | − {earlier} |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for modality, regime, ratio in sorted((k for k in by if k[2] < 1.0), key=lambda k: (k[0], _regime_key(k[1]), k[2])):
        methods, metric = by[(modality, regime, ratio)], metric_of(regime)
        if default not in methods:
            continue

        def mean(name: str | None, methods: dict[str, Seeds] = methods, metric: str = metric) -> str:
            seeds = methods.get(name or "", {})
            values = [float(r[metric]) for r in seeds.values() if r.get(metric) is not None]
            return f"{statistics.mean(values):.2f} (n={len(values)})" if values else "–"

        anchor = best_anchor(methods, metric)
        ours = methods[default]
        cells = [
            modality,
            regime,
            f"{ratio:g}",
            mean("rs2"),
            f"{anchor}: {mean(anchor)}" if anchor else "–",
            mean(earlier),
            mean(default),
            _signed(paired(ours, methods.get("rs2", {}), metric)),
            _signed(paired(ours, methods[anchor], metric)) if anchor else "–",
            _signed(paired(ours, methods.get(earlier, {}), metric)),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ablation(runs: list[dict[str, Any]], default: str, others: list[str]) -> str:
    """One row per modality, regime and ratio: the default's paired difference from each of ``others``."""
    by = by_setting(runs)
    lines = [
        "| modality | regime | r | " + " | ".join(f"− {o}" for o in others) + " |",
        "|---" * (3 + len(others)) + "|",
    ]
    for key in sorted(
        (k for k in by if k[2] < 1.0 and default in by[k]), key=lambda k: (k[0], _regime_key(k[1]), k[2])
    ):
        methods, metric = by[key], metric_of(key[1])
        cells = [_signed(paired(methods[default], methods[o], metric)) if o in methods else "–" for o in others]
        lines.append(f"| {key[0]} | {key[1]} | {key[2]:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _detection(methods: dict[str, Seeds]) -> list[str]:
    columns = [
        (key, title)
        for key, title in DETECTION
        if any(r.get(key) is not None for seeds in methods.values() for r in seeds.values())
    ]
    if not columns:
        return []
    lines = ["| method | " + " | ".join(title for _, title in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for method, seeds in sorted(methods.items(), key=lambda kv: _order(kv[0])):
        cells = []
        for key, _ in columns:
            values = [float(r[key]) for r in seeds.values() if r.get(key) is not None]
            cells.append(f"{statistics.mean(values):.3f}" if values else "–")
        if any(c != "–" for c in cells):
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return ["Detection (means over seeds):\n", *lines]


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="selection-MODALITY-REGIME.runs.jsonl files")
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown here")
    parser.add_argument("--compact", action="store_true", help="one summary row per regime and ratio instead")
    parser.add_argument("--earlier", default="dynsel-vote", help="--compact: the earlier default to compare with")
    parser.add_argument(
        "--ablation",
        nargs="+",
        default=None,
        metavar="METHOD",
        help="the default's paired differences from these methods instead",
    )
    parser.add_argument(
        "--default",
        default="dynsel",
        help="the method the targets and the paired column are for (e.g. dynsel-checked-content: the default's "
        "settings, recorded before they became the default)",
    )
    args = parser.parse_args(argv)
    runs = read_runs(args.runs)
    if args.ablation:
        text = ablation(runs, args.default, args.ablation)
    elif args.compact:
        text = compact(runs, args.default, args.earlier)
    else:
        text = tables(runs, args.default)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n", encoding="utf-8")
    return text


if __name__ == "__main__":
    main()
