"""``dynsel verify``: is a plan directory intact, valid, and made from the given factor tables / features?

Checks, in order (docs/reliability.md lists them with what each failure means):

- ``checksums``: every file a plan of its format version must have (indices.bin, offsets.bin, and the
  whole of each optional form it holds) exists and is listed in the manifest; every plan file on disk is
  listed; each one's size and sha256, computed from the file, match its entry; the manifest's ``sha256``
  is that of indices.bin.
- ``layout``: offsets.bin is a valid CSR over indices.bin and agrees with the manifest's counts.
- ``budget``: each epoch holds exactly the manifest's budget (all samples for ``full`` and annealing epochs).
- ``distinct``: no id appears twice within an epoch, and the plan never names more ids than the data set has.
- ``steps``: the manifest's steps per epoch follow from the counts, batch size and world size.
- ``copies``: the txt / npy / parquet forms on disk list the same epochs as indices.bin.

Given the factor tables (``--factors``): ``inputs`` (the plan names their fingerprint), ``ids`` (every id
is one of their sample ids) and ``reproduced`` (recomputing the plan from them with the manifest's
settings gives the epochs read from indices.bin / offsets.bin). Given the features (``--features``):
``features`` (the plan, or its factor tables, were made from them) and ``ids``; the geometric methods also
need them for ``reproduced``. A plan that cannot be recomputed from the inputs given fails ``reproduced``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .config import PlanConfig
from .errors import ArtifactError, DynselError
from .formats.common import check_manifest_kind, listed_files, read_json, safe_child, sha256_file
from .formats.factors import FactorTables, read_factor_tables
from .formats.features import Features, read_features
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

    files = _checksums(plan_dir, manifest)
    result.checks.append(files)
    if not files.ok:
        return result  # nothing else can be trusted
    try:
        plan = read_plan(plan_dir, verify=False)
    except (ArtifactError, KeyError, TypeError, ValueError) as exc:
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
        checks.append(("reproduced", _reproduced, (plan, epochs, tables, feature_table)))
    result.checks.extend(_guarded(name, check, args) for name, check, args in checks)
    return result


def _guarded(name: str, check: Callable[..., Check], args: tuple[Any, ...]) -> Check:
    """A check that trips over a malformed manifest fails with the reason instead of crashing verify."""
    try:
        return check(*args)
    except (KeyError, TypeError, ValueError) as exc:
        return Check(name, False, f"the manifest is malformed ({type(exc).__name__}: {exc})")


# The files of a version-1 plan, as formats/plan.py's PlanWriter writes them: the bin form always, each
# optional form whole (every epoch's text file; indices.npy with offsets.npy), weights.bin exactly when
# the manifest says has_weights, signals.parquet when the method computed signals.
_ALWAYS = ("indices.bin", "offsets.bin")
_OPTIONAL = ("weights.bin", "indices.npy", "offsets.npy", "plan.parquet", "signals.parquet")
_TEXT_DIR = "epochs"
_TEXT_NAME = re.compile(r"epochs/epoch-\d{4,}\.txt")


def _text_name(epoch: int) -> str:
    return f"{_TEXT_DIR}/epoch-{epoch:04d}.txt"


def _plan_files_on_disk(plan_dir: Path) -> set[str]:
    """The plan files present in ``plan_dir``: the names a plan has, and anything under epochs/."""
    found = {name for name in (*_ALWAYS, *_OPTIONAL) if (plan_dir / name).exists() or (plan_dir / name).is_symlink()}
    text_dir = plan_dir / _TEXT_DIR
    if text_dir.is_dir():
        found |= {f"{_TEXT_DIR}/{p.relative_to(text_dir).as_posix()}" for p in text_dir.rglob("*") if not p.is_dir()}
    return found


def _required_files(manifest: dict[str, Any], present: set[str]) -> set[str]:
    """Every file the plan must have and list, given the forms it holds (on disk or in its manifest)."""
    epochs = manifest["epochs"]
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 0:
        raise ValueError(f"epochs must be a non-negative integer, not {epochs!r}")
    required = set(_ALWAYS) | (present & set(_OPTIONAL))
    if manifest.get("has_weights"):
        required.add("weights.bin")
    if required & {"indices.npy", "offsets.npy"}:
        required |= {"indices.npy", "offsets.npy"}
    if any(name.startswith(f"{_TEXT_DIR}/") for name in present):
        required |= {_text_name(e) for e in range(epochs)}
    return required


def _checksums(plan_dir: Path, manifest: dict[str, Any]) -> Check:
    try:
        listed = listed_files(manifest, plan_dir / "manifest.json", WHAT)
        on_disk = _plan_files_on_disk(plan_dir)
        required = _required_files(manifest, on_disk | set(listed))
    except ArtifactError as exc:
        return Check("checksums", False, str(exc))
    except (KeyError, TypeError, ValueError) as exc:
        return Check("checksums", False, f"the manifest is malformed ({type(exc).__name__}: {exc})")
    n_epochs = int(manifest["epochs"])
    texts = {_text_name(e) for e in range(n_epochs)}
    known = on_disk | set(listed)
    mismatched: list[str] = []
    gone: list[str] = []
    digests: dict[str, str] = {}
    for name, entry in sorted(listed.items()):
        try:
            path = safe_child(plan_dir, name, WHAT)
        except ArtifactError as exc:
            return Check("checksums", False, str(exc))
        if not path.is_file():
            gone.append(name)
            continue
        digests[name] = sha256_file(path)
        if path.stat().st_size != entry["bytes"] or digests[name] != entry["sha256"]:
            mismatched.append(name)
    problems = [
        _named(mismatched, "checksum mismatch (modified or truncated)"),
        _named(
            sorted(required - on_disk) + [n for n in gone if n not in required],
            "missing (a plan always has indices.bin and offsets.bin, and every file of each form it holds)",
        ),
        _named(sorted(on_disk - set(listed)), "not listed in the manifest's files, so no checksum vouches for it"),
        _named(
            sorted(n for n in known if n.startswith(f"{_TEXT_DIR}/") and n not in texts),
            f"not a file of a plan of {n_epochs} epochs",
        ),
    ]
    if "weights.bin" in known and not manifest.get("has_weights"):
        problems.append("weights.bin: present, but the manifest says the plan has no weights")
    if "indices.bin" in digests and manifest.get("sha256") != digests["indices.bin"]:
        problems.append(
            f"the manifest's sha256 {str(manifest.get('sha256'))[:16]}… is not that of indices.bin ({digests['indices.bin'][:16]}…)"
        )
    problems = [p for p in problems if p]
    if problems:
        return Check("checksums", False, f"{plan_dir}: {'; '.join(problems)}; rebuild the {WHAT}")
    return Check("checksums", True, f"{len(listed)} files match their sha256, none missing or unlisted")


def _named(names: list[str], what: str, shown: int = 3) -> str:
    """``indices.bin, epochs/epoch-0000.txt: what``, the canonical files first, at most ``shown`` names."""
    if not names:
        return ""
    names = sorted(names, key=lambda n: (n not in _ALWAYS, n))
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return f"{', '.join(names[:shown])}{more}: {what}"


def _layout(plan: Plan, epochs: list[np.ndarray]) -> Check:
    counts = np.diff(plan.offsets.astype(np.int64))
    m = plan.manifest
    if (counts < 0).any():
        return Check("layout", False, "offsets.bin decreases: not a valid CSR offsets array")
    if len(plan.offsets) and int(plan.offsets[0]) != 0:
        return Check("layout", False, "offsets.bin does not start at 0: not a valid CSR offsets array")
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
        return Check(
            "budget",
            False,
            f"epoch {e} holds {len(epochs[e])} ids, expected {expected[e]} ({len(bad)} epoch(s) off budget)",
        )
    return Check("budget", True, f"every epoch holds its budget ({budget} of {n})")


def _distinct(plan: Plan, epochs: list[np.ndarray]) -> Check:
    for e, ids in enumerate(epochs):
        unique = np.unique(ids)
        if len(unique) != len(ids):
            return Check("distinct", False, f"epoch {e} lists {len(ids) - len(unique)} id(s) more than once")
    used = np.unique(np.concatenate(epochs)) if epochs else np.zeros(0, np.int64)
    if len(used) > plan.n_samples:
        return Check(
            "distinct", False, f"the plan names {len(used)} distinct ids but the data set has {plan.n_samples} samples"
        )
    return Check("distinct", True, f"no duplicates within an epoch; {len(used)} distinct ids used")


def _steps(plan: Plan, epochs: list[np.ndarray]) -> Check:
    m = plan.manifest
    expected = [steps_for(len(ids), int(m["batch_size"]), int(m["world_size"]), bool(m["drop_last"])) for ids in epochs]
    if [int(s) for s in m["steps_per_epoch"]] != expected or int(m["total_steps"]) != sum(expected):
        return Check("steps", False, "steps_per_epoch / total_steps in the manifest do not follow from the counts")
    return Check("steps", True, f"{sum(expected)} steps in all")


def _copies(plan: Plan, epochs: list[np.ndarray]) -> Check:
    """The other forms, read from the files on disk (the checksums check has tied them to the manifest)."""
    present = _plan_files_on_disk(plan.path)
    compared = []
    txt = [_text_name(e) for e in range(len(epochs))]
    if any(name.startswith(f"{_TEXT_DIR}/") for name in present):
        for e, name in enumerate(txt):
            path = safe_child(plan.path, name, WHAT)
            try:
                ids = np.array(path.read_text(encoding="ascii").split(), dtype=np.int64)
            except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
                return Check("copies", False, f"{name} is not one decimal sample id per line ({type(exc).__name__})")
            if not np.array_equal(ids, epochs[e]):
                return Check("copies", False, f"{name} differs from epoch {e} of indices.bin")
        compared.append("txt")
    flat = np.concatenate(epochs).astype(np.int64) if epochs else np.zeros(0, np.int64)
    if "indices.npy" in present or "offsets.npy" in present:
        try:
            npy = np.load(safe_child(plan.path, "indices.npy", WHAT), allow_pickle=False)
            offsets = np.load(safe_child(plan.path, "offsets.npy", WHAT), allow_pickle=False)
        except (OSError, ValueError) as exc:
            return Check("copies", False, f"indices.npy / offsets.npy are not readable .npy arrays ({exc})")
        if npy.ndim != 1 or not np.array_equal(npy.astype(np.int64), flat) or not np.array_equal(offsets, plan.offsets):
            return Check("copies", False, "indices.npy / offsets.npy differ from indices.bin / offsets.bin")
        compared.append("npy")
    if "plan.parquet" in present:
        try:
            table = pq.read_table(safe_child(plan.path, "plan.parquet", WHAT), columns=["epoch", "position", "index"])
            columns = {name: table.column(name).to_numpy() for name in ("epoch", "position", "index")}
        except (OSError, ValueError, KeyError, pa.ArrowException) as exc:
            return Check("copies", False, f"plan.parquet is not readable with columns epoch, position, index ({exc})")
        expected_epoch = np.repeat(np.arange(len(epochs)), [len(e) for e in epochs])
        expected_position = np.concatenate([np.arange(len(e)) for e in epochs]) if epochs else np.zeros(0, np.int64)
        same = (
            len(columns["index"]) == len(flat)
            and np.array_equal(columns["index"], flat)
            and np.array_equal(columns["epoch"], expected_epoch)
            and np.array_equal(columns["position"], expected_position)
        )
        if not same:
            return Check("copies", False, "plan.parquet differs from indices.bin")
        compared.append("parquet")
    return Check(
        "copies", True, f"{', '.join(compared)} agree with indices.bin" if compared else "no other forms written"
    )


def _inputs(plan: Plan, tables: FactorTables) -> Check:
    named = (plan.manifest.get("inputs") or {}).get("factors")
    if named != tables.fingerprint:
        return Check(
            "inputs",
            False,
            f"the plan was made from factor tables {str(named)[:16]}…, not {tables.path} ({tables.fingerprint[:16]}…)",
        )
    if tables.n_samples != plan.n_samples:
        return Check("inputs", False, f"the plan covers {plan.n_samples} samples, the factor tables {tables.n_samples}")
    return Check("inputs", True, f"made from {tables.path} (fingerprint {tables.fingerprint[:16]}…)")


def _ids_in(epochs: list[np.ndarray], known: np.ndarray, what: str) -> Check:
    used = np.unique(np.concatenate(epochs)) if epochs else np.zeros(0, np.int64)
    missing = np.setdiff1d(used, known)
    if len(missing):
        return Check(
            "ids", False, f"{len(missing)} id(s) in the plan are not sample ids of {what} (first: {int(missing[0])})"
        )
    return Check("ids", True, f"every id is a sample id of {what}")


def _features(plan: Plan, features: Features) -> Check:
    named = (plan.manifest.get("inputs") or {}).get("features") or plan.manifest.get("dataset_fingerprint")
    if named != features.fingerprint:
        return Check(
            "features",
            False,
            f"the plan's data set has fingerprint {str(named)[:16]}…, {features.path} has {features.fingerprint[:16]}…",
        )
    return Check("features", True, f"made from the data set in {features.path}")


# Manifest fields the other checks rely on that recomputation must give again.
_RECOMPUTED_FIELDS = ("method", "ratio", "seed", "budget")


def _reproduced(plan: Plan, epochs: list[np.ndarray], tables: FactorTables, features: Features | None) -> Check:
    """Recompute the plan from the inputs and compare it with the epochs read from indices.bin / offsets.bin.

    Asked for (--factors given), this check never skips: a plan verify cannot recompute fails it.
    """
    from .plan.methods import METHODS, NEEDS_FEATURES
    from .plan.planner import compute_plan

    def cannot(why: str) -> Check:
        return Check("reproduced", False, f"cannot recompute the plan: {why}")

    settings = plan.manifest.get("settings")
    if not isinstance(settings, dict) or not settings:
        return cannot("the manifest records no settings to recompute from")
    method = settings.get("method")
    if method not in METHODS:
        return cannot(f"unknown method {method!r} in the manifest's settings (this dynsel knows {', '.join(METHODS)})")
    if method in NEEDS_FEATURES and features is None:
        return cannot(f"method {method} needs --features; pass the features the plan was made from")
    if plan.manifest.get("has_weights"):
        return cannot("`dynsel plan` writes no weights.bin, so recomputation cannot vouch for this plan's weights")
    try:
        recomputed = compute_plan(tables, PlanConfig(**settings, device="cpu"), features=features)
    except (TypeError, DynselError) as exc:
        return cannot(f"the manifest's settings are not usable ({exc})")
    if len(recomputed.epochs) != len(epochs):
        return Check(
            "reproduced",
            False,
            f"recomputing from the factor tables gives {len(recomputed.epochs)} epochs, indices.bin holds {len(epochs)}",
        )
    for e, (again, on_disk) in enumerate(zip(recomputed.epochs, epochs)):
        if not np.array_equal(np.asarray(again, dtype=np.int64), on_disk.astype(np.int64)):
            return Check(
                "reproduced",
                False,
                f"recomputing from the factor tables gives another epoch {e} than indices.bin (edited, or made by another dynsel version: {plan.manifest.get('dynsel_version')})",
            )
    for name in _RECOMPUTED_FIELDS:
        if recomputed.manifest_extra.get(name) != plan.manifest.get(name):
            return Check(
                "reproduced",
                False,
                f"recomputing gives {name} {recomputed.manifest_extra.get(name)!r}, the manifest says {plan.manifest.get(name)!r}",
            )
    return Check("reproduced", True, f"recomputed from the factor tables: the same {len(epochs)} epochs as indices.bin")
