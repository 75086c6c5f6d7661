"""Build the JSON-able report of a plan (schema and metric definitions: docs/report.md).

``build_report(plan, factors)`` reads the plan epoch by epoch and carries small per-sample state
(membership, usage counts, current and longest runs) from one epoch to the next; every per-sample step
is a vectorised numpy operation (see :mod:`dynsel_cli.report.metrics`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..formats.plan import Plan, steps_for
from . import metrics as m
from .messy import messy_data_summary, read_plan_signals, signals_from_factors

if TYPE_CHECKING:
    from ..formats.factors import FactorTables

SCHEMA_VERSION = 1
KIND = "dynsel.report"
COMPARE_KIND = "dynsel.report-comparison"

#: Scalar per-epoch fields, in display order (every per-epoch record has all of them; null = n/a).
EPOCH_FIELDS = (
    "epoch",
    "count",
    "unique",
    "duplicates",
    "budget_share",
    "steps",
    "new",
    "cumulative_seen",
    "overlap_prev",
    "jaccard_prev",
    "overlap_lag2",
    "repeats_epoch",
    "lambda",
    "usage_min",
    "usage_median",
    "usage_max",
    "usage_mean",
    "usage_gini",
    "usage_never_selected_share",
    "usage_longest_run_max",
    "usage_longest_run_mean",
    "r_mean",
    "d_mean",
    "frequent_covered",
    "rare_covered",
    "live_covered",
    "class_worst_deviation",
    "class_worst",
)


def _finite(value: float | None) -> float | None:
    """JSON has no NaN/inf: map them to null."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _schedule_lambda(manifest: dict[str, Any]) -> list[float | None] | None:
    schedule = manifest.get("schedule")
    if not isinstance(schedule, dict):
        return None
    values = schedule.get("lambda")
    if not isinstance(values, (list, tuple)):
        return None
    out: list[float | None] = []
    for v in values:
        try:
            out.append(_finite(float(v)))
        except (TypeError, ValueError):
            out.append(None)
    return out


def _steps(manifest: dict[str, Any], counts: list[int]) -> list[int | None]:
    steps = manifest.get("steps_per_epoch")
    if isinstance(steps, list) and len(steps) == len(counts):
        return [int(s) for s in steps]
    batch_size = manifest.get("batch_size")
    if isinstance(batch_size, int) and batch_size > 0:
        world = manifest.get("world_size") or 1
        drop_last = bool(manifest.get("drop_last", False))
        return [steps_for(c, batch_size, int(world), drop_last) for c in counts]
    return [None] * len(counts)


def _rows_mapper(plan: Plan, factors: FactorTables | None, warnings: list[str]):
    """(n, to_rows): the size of the sample universe and a function mapping an epoch's ids to rows."""
    n_plan = int(plan.manifest.get("n_samples", 0))
    if factors is not None:
        universe = np.asarray(factors.samples.ids, dtype=np.int64)
        if n_plan != len(universe):
            warnings.append(
                f"the plan is over {n_plan} samples but the factor tables hold {len(universe)}; "
                "usage and coverage are over the factor tables' samples"
            )
        return len(universe), m.IdIndex(universe, "plan")
    flat = np.asarray(plan.indices)
    lo = int(flat.min()) if len(flat) else 0
    hi = int(flat.max()) if len(flat) else -1
    if lo >= 0 and hi < n_plan:
        return n_plan, lambda ids: np.asarray(ids, dtype=np.int64)
    universe = np.unique(flat.astype(np.int64))
    n = max(n_plan, len(universe))
    warnings.append(
        "sample ids are not 0..n_samples-1; samples never selected are counted from n_samples "
        "(pass --factors for exact id bookkeeping)"
    )
    return n, lambda ids: np.searchsorted(universe, np.asarray(ids, dtype=np.int64))


def _factor_scores(tables: FactorTables, settings: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """R and D per factor-table row, normalised to [0, 1] the way the plan's settings say (default rank)."""
    from ..plan.scores import (  # imported late: plan/ may pull in torch
        NORMALISERS,
        representativeness_and_rarity,
    )

    how = settings.get("normalise")
    r, d = representativeness_and_rarity(tables, how=how if how in NORMALISERS else "rank")
    return np.asarray(r, dtype=np.float64), np.asarray(d, dtype=np.float64)


def build_report(plan: Plan, factors: FactorTables | None = None) -> dict[str, Any]:
    """The report of ``plan`` as a JSON-able dict (schema: docs/report.md, "JSON schema").

    With ``factors`` (the factor tables the plan was built from) the report adds the representativeness
    and rarity of the selected samples, factor coverage and, when the tables carry labels, class shares.
    Raises :class:`~dynsel_cli.errors.DynselError` if a plan id is not in the factor tables.
    """
    manifest = plan.manifest
    warnings: list[str] = []
    n_epochs = len(plan.epochs)
    counts = [int(plan.offsets[e + 1] - plan.offsets[e]) for e in range(n_epochs)]
    steps = _steps(manifest, counts)
    lambdas = _schedule_lambda(manifest)
    if lambdas is not None and len(lambdas) != n_epochs:
        warnings.append(f"the schedule has {len(lambdas)} weights for {n_epochs} epochs")
    n, to_rows = _rows_mapper(plan, factors, warnings)
    n_plan = int(manifest.get("n_samples", n))

    # factor-side state
    r = d = None
    fired = None
    frequent = rare = live = None
    width = 0
    labels_codes = classes = dataset_share = None
    factors_info: dict[str, Any] | None = None
    if factors is not None:
        settings = manifest.get("settings") if isinstance(manifest.get("settings"), dict) else {}
        r, d = _factor_scores(factors, settings)
        frequency = np.asarray(factors.units.frequency, dtype=np.float64)
        width = len(frequency)
        fired = m.fired_codes(factors.samples.units, factors.samples.acts, width)
        frequent, rare = m.frequent_rare_units(frequency)
        live = frequency > 0
        plan_fp = (manifest.get("inputs") or {}).get("factors") if isinstance(manifest.get("inputs"), dict) else None
        tables_fp = factors.manifest.get("fingerprint")
        matches = None if plan_fp is None or tables_fp is None else plan_fp == tables_fp
        if matches is False:
            warnings.append("the plan was built from other factor tables (fingerprints differ)")
        factors_info = {
            "fingerprint": tables_fp,
            "plan_input_fingerprint": plan_fp,
            "matches_plan": matches,
            "n_units": int(width),
            "n_live_units": int(live.sum()),
            "n_frequent_units": int(frequent.sum()),
            "n_rare_units": int(rare.sum()),
            "has_labels": factors.samples.labels is not None,
        }
        if factors.samples.labels is not None:
            classes, labels_codes = m.class_index(factors.samples.labels)
            dataset_share = m.class_shares(labels_codes, len(classes))

    # per-sample state carried across epochs
    usage = np.zeros(n, dtype=np.int64)
    current = np.zeros(n, dtype=np.int64)
    longest = np.zeros(n, dtype=np.int64)
    seen = np.zeros(n, dtype=bool)
    prev_member: np.ndarray | None = None
    prev2_member: np.ndarray | None = None
    first_epoch_of_set: dict[str, int] = {}  # an epoch's set (hash of its membership) → the first epoch that had it
    covered_all = np.zeros(width, dtype=bool)
    pooled_class_counts = np.zeros(len(classes), dtype=np.int64) if classes is not None else None

    per_epoch: list[dict[str, Any]] = []
    for e in range(n_epochs):
        rows = to_rows(plan.epochs[e])
        member = m.membership(rows, n)
        unique = int(member.sum())
        new = int((member & ~seen).sum())
        seen |= member
        usage += member
        current, longest = m.update_runs(current, longest, member)
        stats = m.usage_stats(usage, longest)
        overlap_prev, jaccard_prev = m.overlap(prev_member, member) if prev_member is not None else (None, None)
        overlap_lag2 = m.overlap(prev2_member, member)[0] if prev2_member is not None else None
        set_key = m.set_key(member)
        repeats = first_epoch_of_set.setdefault(set_key, e)
        prev2_member, prev_member = prev_member, member
        rec: dict[str, Any] = {
            "epoch": e,
            "count": counts[e],
            "unique": unique,
            "duplicates": counts[e] - unique,
            "budget_share": counts[e] / n_plan if n_plan else None,
            "steps": steps[e],
            "new": new,
            "cumulative_seen": float(seen.mean()) if n else 0.0,
            "overlap_prev": overlap_prev,
            "jaccard_prev": jaccard_prev,
            "overlap_lag2": overlap_lag2,
            "repeats_epoch": repeats if repeats != e else None,
            "lambda": lambdas[e] if lambdas is not None and e < len(lambdas) else None,
            **stats.as_dict("usage_"),
            "r_mean": None,
            "d_mean": None,
            "frequent_covered": None,
            "rare_covered": None,
            "live_covered": None,
            "class_share": None,
            "class_worst_deviation": None,
            "class_worst": None,
        }
        if factors is not None:
            sel = np.flatnonzero(member)
            rec["r_mean"] = _finite(r[sel].mean()) if len(sel) else None
            rec["d_mean"] = _finite(d[sel].mean()) if len(sel) else None
            covered = m.covered_units(fired, member, width)
            covered_all |= covered
            rec["frequent_covered"] = m.covered_share(covered, frequent)
            rec["rare_covered"] = m.covered_share(covered, rare)
            rec["live_covered"] = m.covered_share(covered, live)
            if classes is not None:
                codes = labels_codes[sel]
                pooled_class_counts += np.bincount(codes, minlength=len(classes))
                share = m.class_shares(codes, len(classes))
                dev, worst = m.worst_deviation(share, dataset_share)
                rec["class_share"] = [float(x) for x in share]
                rec["class_worst_deviation"] = dev if unique else None
                rec["class_worst"] = int(classes[worst]) if unique and worst >= 0 else None
        per_epoch.append({k: (_finite(v) if isinstance(v, float) else v) for k, v in rec.items()})

    overall = _overall(per_epoch, usage, longest, n_epochs, counts, steps, factors is not None)
    overall["distinct_epoch_sets"] = len(first_epoch_of_set)
    overall["repeated_epoch_sets"] = sum(1 for rec in per_epoch if rec["repeats_epoch"] is not None)
    overall["overlap_lag2_mean"] = _mean([rec["overlap_lag2"] for rec in per_epoch])
    if factors is not None:
        overall["frequent_covered"] = m.covered_share(covered_all, frequent)
        overall["rare_covered"] = m.covered_share(covered_all, rare)
        overall["live_covered"] = m.covered_share(covered_all, live)
        if classes is not None:
            total = pooled_class_counts.sum()
            pooled = pooled_class_counts / total if total else pooled_class_counts.astype(np.float64)
            overall["class_share"] = [float(x) for x in pooled]
            devs = [
                (rec["class_worst_deviation"], rec["epoch"], rec["class_worst"])
                for rec in per_epoch
                if rec["class_worst_deviation"] is not None
            ]
            if devs:
                worst = max(devs, key=lambda t: t[0])
                overall["class_worst_deviation"] = worst[0]
                overall["class_worst_epoch"] = worst[1]
                overall["class_worst"] = worst[2]
                overall["class_worst_deviation_mean"] = float(np.mean([t[0] for t in devs]))

    # signals.parquet lists every sample: it maps to rows only through the factor tables or dense ids (the
    # fallback mapping knows only the ids the plan selected)
    ids_exact = factors is not None or plan.manifest.get("ids_dense") is True
    signals = read_plan_signals(plan.path, to_rows, n) if ids_exact else None
    if signals is None and factors is not None:
        signals = signals_from_factors(
            factors, manifest.get("settings") if isinstance(manifest.get("settings"), dict) else {}
        )
    messy = messy_data_summary(usage, signals, factors.samples.labels if factors is not None else None)

    class_names = None
    if factors is not None and classes is not None:
        # class names: the factor tables' manifest ("classes", as dynsel factors writes it), else the plan's
        names = factors.manifest.get("classes") or factors.manifest.get("class_names") or manifest.get("classes")
        if isinstance(names, list) and names and all(0 <= int(c) < len(names) for c in classes):
            class_names = [str(names[int(c)]) for c in classes]

    return {
        "schema_version": SCHEMA_VERSION,
        "kind": KIND,
        "path": str(plan.path),
        "name": Path(plan.path).name,
        "method": manifest.get("method"),
        "n_samples": n_plan,
        "epochs": n_epochs,
        "ratio": _finite(manifest["ratio"]) if manifest.get("ratio") is not None else None,
        "counts": counts,
        "seed": manifest.get("seed"),
        "sha256": manifest.get("sha256"),
        "batch_size": manifest.get("batch_size"),
        "world_size": manifest.get("world_size"),
        "drop_last": manifest.get("drop_last"),
        "steps_per_epoch": steps,
        "total_steps": int(manifest["total_steps"])
        if manifest.get("total_steps") is not None
        else (int(sum(s for s in steps if s is not None)) if steps and all(s is not None for s in steps) else None),
        "has_weights": bool(manifest.get("has_weights", plan.weights is not None)),
        "settings": manifest.get("settings") if isinstance(manifest.get("settings"), dict) else {},
        "inputs": manifest.get("inputs") if isinstance(manifest.get("inputs"), dict) else {},
        "schedule": {"kind": manifest["schedule"].get("kind"), "lambda": lambdas} if lambdas is not None else None,
        "factors": factors_info,
        "classes": [int(c) for c in classes] if classes is not None else None,
        "class_names": class_names,
        "class_share_dataset": [float(x) for x in dataset_share] if dataset_share is not None else None,
        "per_epoch": per_epoch,
        "overall": overall,
        "messy_data": messy,
        "warnings": warnings,
    }


def _mean(values: list[Any]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def _overall(
    per_epoch: list[dict[str, Any]],
    usage: np.ndarray,
    longest: np.ndarray,
    n_epochs: int,
    counts: list[int],
    steps: list[int | None],
    with_factors: bool,
) -> dict[str, Any]:
    stats = m.usage_stats(usage, longest)
    full = next(
        (rec["epoch"] for rec in per_epoch if rec["cumulative_seen"] is not None and rec["cumulative_seen"] >= 1.0),
        None,
    )
    overall: dict[str, Any] = {
        "total_selected": int(sum(counts)),
        "total_steps": int(sum(s for s in steps if s is not None))
        if steps and all(s is not None for s in steps)
        else None,
        "count_mean": float(np.mean(counts)) if counts else None,
        "count_min": int(min(counts)) if counts else None,
        "count_max": int(max(counts)) if counts else None,
        "cumulative_seen": per_epoch[-1]["cumulative_seen"] if per_epoch else 0.0,
        "epochs_to_full_coverage": full,
        **{k: _finite(v) if isinstance(v, float) else v for k, v in stats.as_dict("usage_").items()},
        "usage_histogram": m.usage_histogram(usage, n_epochs),
        "overlap_prev_mean": _mean([rec["overlap_prev"] for rec in per_epoch]),
        "jaccard_prev_mean": _mean([rec["jaccard_prev"] for rec in per_epoch]),
        "lambda_first": per_epoch[0]["lambda"] if per_epoch else None,
        "lambda_last": per_epoch[-1]["lambda"] if per_epoch else None,
        "r_mean": None,
        "d_mean": None,
        "frequent_covered": None,
        "rare_covered": None,
        "live_covered": None,
        "frequent_covered_mean": None,
        "rare_covered_mean": None,
        "class_share": None,
        "class_worst_deviation": None,
        "class_worst_epoch": None,
        "class_worst": None,
        "class_worst_deviation_mean": None,
    }
    if with_factors:
        overall["r_mean"] = _mean([rec["r_mean"] for rec in per_epoch])
        overall["d_mean"] = _mean([rec["d_mean"] for rec in per_epoch])
        overall["frequent_covered_mean"] = _mean([rec["frequent_covered"] for rec in per_epoch])
        overall["rare_covered_mean"] = _mean([rec["rare_covered"] for rec in per_epoch])
    return overall


def _delta(a: Any, b: Any) -> Any:
    if isinstance(a, bool) or isinstance(b, bool):
        return None
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return _finite(float(b) - float(a)) if isinstance(a, float) or isinstance(b, float) else int(b) - int(a)
    return None


def _pairs(a: dict[str, Any], b: dict[str, Any], keys: list[str]) -> dict[str, dict[str, Any]]:
    return {k: {"a": a.get(k), "b": b.get(k), "delta": _delta(a.get(k), b.get(k))} for k in keys}


def compare_reports(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Side-by-side comparison of two reports (from :func:`build_report`), JSON-able.

    ``diff.overall[k]`` and ``diff.per_epoch[e][k]`` are ``{"a", "b", "delta"}`` with delta = b − a for
    every scalar field (null where either side is null or not a number). Per-epoch rows cover the epochs
    both plans have.
    """
    warnings: list[str] = []
    if a.get("n_samples") != b.get("n_samples"):
        warnings.append(
            f"the plans are over different data sets ({a.get('n_samples')} vs {b.get('n_samples')} samples)"
        )
    if a.get("epochs") != b.get("epochs"):
        warnings.append(
            f"the plans have different epoch counts ({a.get('epochs')} vs {b.get('epochs')}); per-epoch rows cover the common ones"
        )
    if a.get("sha256") and a.get("sha256") == b.get("sha256"):
        warnings.append("the two plans are identical (same sha256)")
    overall_keys = [k for k, v in a.get("overall", {}).items() if not isinstance(v, (list, dict))]
    header_keys = ["n_samples", "epochs", "ratio", "seed", "total_steps", "method"]
    common = min(len(a.get("per_epoch", [])), len(b.get("per_epoch", [])))
    per_epoch = [
        _pairs(a["per_epoch"][e], b["per_epoch"][e], [k for k in EPOCH_FIELDS if k != "epoch"]) | {"epoch": e}
        for e in range(common)
    ]
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": COMPARE_KIND,
        "a": a,
        "b": b,
        "diff": {
            "header": _pairs(a, b, header_keys),
            "overall": _pairs(a.get("overall", {}), b.get("overall", {}), overall_keys),
            "per_epoch": per_epoch,
        },
        "same_data_set": a.get("n_samples") == b.get("n_samples"),
        "warnings": warnings,
    }
