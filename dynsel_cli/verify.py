"""``dynsel verify``: is a plan directory intact, valid, and made from the given factor tables / features?

Checks, in order (docs/reliability.md lists them with what each failure means):

- ``checksums``: every file the manifest lists has its recorded size and sha256.
- ``layout``: offsets.bin is a valid CSR over indices.bin and agrees with the manifest's counts.
- ``budget``: each epoch holds exactly the manifest's budget (all samples for ``full`` and annealing epochs).
- ``distinct``: no id appears twice within an epoch, and the plan never names more ids than the data set has.
- ``steps``: the manifest's steps per epoch follow from the counts, batch size and world size.
- ``copies``: the optional txt / npy / parquet forms list the same ids as indices.bin.

Given the factor tables (``--factors``): ``inputs`` (the plan names their fingerprint), ``ids`` (every id
is one of their sample ids) and ``reproduced`` (recomputing the plan from them with the manifest's
settings gives the same bytes). Given the features (``--features``): ``features`` (the plan, or its factor
tables, were made from them) and ``ids``; the geometric methods also need them for ``reproduced``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow.parquet as pq

from .config import PlanConfig
from .errors import ArtifactError, DynselError
from .formats.common import check_manifest_kind, read_json, safe_child, sha256_bytes, verify_files
from .formats.features import Features, read_features
from .formats.factors import FactorTables, read_factor_tables
from .formats.plan import KIND, WHAT, Plan, read_plan, steps_for


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool | None  # None: not run (the reason is in detail)
    detail: str


@dataclass
class Verification:
    plan: Path
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok is not False for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.ok is False]

    def as_json(self) -> dict[str, Any]:
        return {"plan": str(self.plan), "ok": self.ok, "checks": [asdict(c) for c in self.checks]}


def verify_plan(plan_dir: Path, factors: Path | None = None, features: Path | None = None) -> Verification:
    """Run every check that applies; a failed check is recorded, not raised.

    Raises DynselError only when ``plan_dir`` is not a plan directory at all, or when ``--factors`` /
    ``--features`` cannot be read (those are the user's inputs to fix, not findings about the plan).
    """
    plan_dir = Path(plan_dir)
    result = Verification(plan_dir)
    if not plan_dir.is_dir():
        raise DynselError(f"{plan_dir}: not a plan directory (pass the directory `dynsel plan --out` wrote)")
    manifest = read_json(plan_dir / "manifest.json", WHAT)
    check_manifest_kind(manifest, KIND, plan_dir, WHAT)
    tables = read_factor_tables(Path(factors)) if factors is not None else None
    feature_table = read_features(Path(features)) if features is not None else None

    try:
        verify_files(plan_dir, manifest.get("files", {}), WHAT)
        result.checks.append(Check("checksums", True, f"{len(manifest.get('files', {}))} files match their sha256"))
    except ArtifactError as exc:
        result.checks.append(Check("checksums", False, str(exc)))
        return result  # nothing else can be trusted
    try:
        plan = read_plan(plan_dir, verify=False)
    except (ArtifactError, KeyError, ValueError) as exc:
        result.checks.append(Check("layout", False, str(exc)))
        return result
    epochs = [np.asarray(e) for e in plan.epochs]
    checks: list[tuple[str, Callable[..., Check], tuple[Any, ...]]] = [
        ("layout", _layout, (plan, epochs)),
        ("budget", _budget, (plan, epochs)),
        ("distinct", _distinct, (plan, epochs)),
        ("steps", _steps, (plan, epochs)),
        ("copies", _copies, (plan, epochs)),
    ]
    if tables is not None:
        checks.append(("inputs", _inputs, (plan, tables)))
        checks.append(("ids", _ids_in, (epochs, tables.samples.ids, f"the factor tables {tables.path}")))
    if feature_table is not None:
        checks.append(("features", _features, (plan, feature_table)))
        checks.append(("ids", _ids_in, (epochs, feature_table.ids, f"the features {feature_table.path}")))
    if tables is not None:
        checks.append(("reproduced", _reproduced, (plan, tables, feature_table)))
    result.checks.extend(_guarded(name, check, args) for name, check, args in checks)
    return result


def _guarded(name: str, check: Callable[..., Check], args: tuple[Any, ...]) -> Check:
    """A check that trips over a malformed manifest fails with the reason instead of crashing verify."""
    try:
        return check(*args)
    except (KeyError, TypeError, ValueError) as exc:
        return Check(name, False, f"the manifest is malformed ({type(exc).__name__}: {exc})")


def _layout(plan: Plan, epochs: list[np.ndarray]) -> Check:
    counts = np.diff(plan.offsets.astype(np.int64))
    m = plan.manifest
    if (counts < 0).any():
        return Check("layout", False, "offsets.bin decreases: not a valid CSR offsets array")
    if [int(c) for c in counts] != [int(c) for c in m["counts"]] or int(counts.sum()) != int(m["total_selected"]):
        return Check("layout", False, "epoch sizes in offsets.bin differ from the manifest's counts")
    return Check("layout", True, f"{len(epochs)} epochs, {int(counts.sum())} ids")


def _full_epoch_flags(plan: Plan) -> list[bool]:
    m = plan.manifest
    n_epochs = len(plan.offsets) - 1
    if m.get("method") == "full":
        return [True] * n_epochs
    full_epochs = int((m.get("settings") or {}).get("full_epochs", 0))
    return [e >= n_epochs - full_epochs for e in range(n_epochs)]


def _budget(plan: Plan, epochs: list[np.ndarray]) -> Check:
    budget, n = int(plan.manifest["budget"]), plan.n_samples
    expected = [n if full else budget for full in _full_epoch_flags(plan)]
    bad = [e for e, ids in enumerate(epochs) if len(ids) != expected[e]]
    if bad:
        e = bad[0]
        return Check("budget", False, f"epoch {e} holds {len(epochs[e])} ids, expected {expected[e]} ({len(bad)} epoch(s) off budget)")
    return Check("budget", True, f"every epoch holds its budget ({budget} of {n})")


def _distinct(plan: Plan, epochs: list[np.ndarray]) -> Check:
    for e, ids in enumerate(epochs):
        unique = np.unique(ids)
        if len(unique) != len(ids):
            return Check("distinct", False, f"epoch {e} lists {len(ids) - len(unique)} id(s) more than once")
    used = np.unique(np.concatenate(epochs)) if epochs else np.zeros(0, np.int64)
    if len(used) > plan.n_samples:
        return Check("distinct", False, f"the plan names {len(used)} distinct ids but the data set has {plan.n_samples} samples")
    return Check("distinct", True, f"no duplicates within an epoch; {len(used)} distinct ids used")


def _steps(plan: Plan, epochs: list[np.ndarray]) -> Check:
    m = plan.manifest
    expected = [steps_for(len(ids), int(m["batch_size"]), int(m["world_size"]), bool(m["drop_last"])) for ids in epochs]
    if [int(s) for s in m["steps_per_epoch"]] != expected or int(m["total_steps"]) != sum(expected):
        return Check("steps", False, "steps_per_epoch / total_steps in the manifest do not follow from the counts")
    return Check("steps", True, f"{sum(expected)} steps in all")


def _copies(plan: Plan, epochs: list[np.ndarray]) -> Check:
    files = plan.manifest.get("files", {})
    compared = []
    txt = sorted(name for name in files if name.startswith("epochs/"))
    if txt:
        if len(txt) != len(epochs):
            return Check("copies", False, f"{len(txt)} epoch text files for {len(epochs)} epochs")
        for e, name in enumerate(txt):
            text = safe_child(plan.path, name, WHAT).read_text(encoding="ascii")
            if not np.array_equal(np.array(text.split(), dtype=np.int64), epochs[e]):
                return Check("copies", False, f"{name} differs from epoch {e} of indices.bin")
        compared.append("txt")
    flat = np.concatenate(epochs).astype(np.int64) if epochs else np.zeros(0, np.int64)
    if "indices.npy" in files:
        npy = np.load(safe_child(plan.path, "indices.npy", WHAT), allow_pickle=False)
        offsets = np.load(safe_child(plan.path, "offsets.npy", WHAT), allow_pickle=False)
        if not np.array_equal(npy.astype(np.int64), flat) or not np.array_equal(offsets, plan.offsets):
            return Check("copies", False, "indices.npy / offsets.npy differ from indices.bin / offsets.bin")
        compared.append("npy")
    if "plan.parquet" in files:
        table = pq.read_table(safe_child(plan.path, "plan.parquet", WHAT), columns=["epoch", "index"])
        epoch_col = table.column("epoch").to_numpy()
        expected_epoch = np.repeat(np.arange(len(epochs)), [len(e) for e in epochs])
        if not np.array_equal(table.column("index").to_numpy(), flat) or not np.array_equal(epoch_col, expected_epoch):
            return Check("copies", False, "plan.parquet differs from indices.bin")
        compared.append("parquet")
    return Check("copies", True, f"{', '.join(compared)} agree with indices.bin" if compared else "no other forms written")


def _inputs(plan: Plan, tables: FactorTables) -> Check:
    named = (plan.manifest.get("inputs") or {}).get("factors")
    if named != tables.fingerprint:
        return Check("inputs", False, f"the plan was made from factor tables {str(named)[:16]}…, not {tables.path} ({tables.fingerprint[:16]}…)")
    if tables.n_samples != plan.n_samples:
        return Check("inputs", False, f"the plan covers {plan.n_samples} samples, the factor tables {tables.n_samples}")
    return Check("inputs", True, f"made from {tables.path} (fingerprint {tables.fingerprint[:16]}…)")


def _ids_in(epochs: list[np.ndarray], known: np.ndarray, what: str) -> Check:
    used = np.unique(np.concatenate(epochs)) if epochs else np.zeros(0, np.int64)
    missing = np.setdiff1d(used, known)
    if len(missing):
        return Check("ids", False, f"{len(missing)} id(s) in the plan are not sample ids of {what} (first: {int(missing[0])})")
    return Check("ids", True, f"every id is a sample id of {what}")


def _features(plan: Plan, features: Features) -> Check:
    named = (plan.manifest.get("inputs") or {}).get("features") or plan.manifest.get("dataset_fingerprint")
    if named != features.fingerprint:
        return Check("features", False, f"the plan's data set has fingerprint {str(named)[:16]}…, {features.path} has {features.fingerprint[:16]}…")
    return Check("features", True, f"made from the data set in {features.path}")


def _reproduced(plan: Plan, tables: FactorTables, features: Features | None) -> Check:
    from .plan.planner import compute_plan
    from .plan.methods import NEEDS_FEATURES

    settings = dict(plan.manifest.get("settings") or {})
    if not settings:
        return Check("reproduced", None, "the manifest records no settings to recompute from")
    if settings.get("method") in NEEDS_FEATURES and features is None:
        return Check("reproduced", None, f"method {settings['method']} needs --features to recompute")
    try:
        config = PlanConfig(**settings, device="cpu")
        recomputed = compute_plan(tables, config, features=features)
    except (TypeError, DynselError) as exc:
        return Check("reproduced", False, f"cannot recompute from the manifest's settings ({exc})")
    dtype = plan.manifest["index_dtype"]
    digest = sha256_bytes(b"".join(np.ascontiguousarray(e, dtype=dtype).tobytes() for e in recomputed.epochs))
    if digest != plan.sha256:
        return Check("reproduced", False, f"recomputing from the factor tables gives sha256 {digest[:16]}…, the plan has {plan.sha256[:16]}… (edited, or made by another dynsel version: {plan.manifest.get('dynsel_version')})")
    return Check("reproduced", True, f"recomputed from the factor tables: same sha256 {digest[:16]}…")
