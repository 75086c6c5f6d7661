"""The shape every manifest kind must have before any stage reads a field of it.

A manifest is JSON that anyone can edit, so every reader checks it here first: each field the code uses
has a JSON type (and, for counts, a range), and a manifest that does not match is refused with one line
naming the field. Fields not listed are provenance (versions, creators) and are not read back.
"""

from __future__ import annotations

from typing import Any

from ..errors import ArtifactError
from .output import listed_files

INT64 = 2**63 - 1
DIM_LIMIT = 2**24  # widths and dimensions: far beyond any real encoder or SAE, far below an allocation that hangs

#: type names: "int" (not bool), "bool", "str", "number" (int or float, not bool), "dict", "list", "null"
_TYPES = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "dict": lambda v: isinstance(v, dict),
    "list": lambda v: isinstance(v, list),
    "null": lambda v: v is None,
}

Field = tuple[str, ...]  # allowed type names; a leading "?" in a name makes the field optional
_COUNT = ("int",)
_FILES = ("dict",)
_ROWS = ("int", 0, INT64 + 1)  # a row count: indices run 0..n-1, so n may be one past the largest int64

SCHEMAS: dict[str, dict[str, Any]] = {
    "dynsel.features": {
        "dim": ("int", 1, DIM_LIMIT),
        "n_samples": _ROWS,
        "?dtype": ("str",),
        "fingerprint": ("str",),
        "?has_labels": ("bool",),
        "shards": ("list",),
        "?encoder": ("dict",),
        "?classes": ("list", "null"),
        "?id_min": ("int", -INT64, INT64),
        "?id_max": ("int", -INT64, INT64),
        "?ids_dense": ("bool",),
        "?settings": ("dict",),
        "?source": ("dict",),
        "?skipped": ("list",),
        "?skipped_reasons": ("dict",),
        "?n_read": ("int", 0, INT64),
        "?n_skipped": ("int", 0, INT64),
        "?executor": ("str",),
    },
    "dynsel.sae": {
        "d_in": ("int", 1, DIM_LIMIT),
        "width": ("int", 1, DIM_LIMIT),
        "k": ("int", 1, DIM_LIMIT),
        "files": _FILES,
        "fingerprint": ("str",),
        "?inputs": ("dict",),
        "?metrics": ("dict",),
        "?settings": ("dict",),
        "?reproducible_with": ("dict",),
    },
    "dynsel.factors": {
        "width": ("int", 1, DIM_LIMIT),
        "k": ("int", 1, DIM_LIMIT),
        "n_samples": _ROWS,
        "files": _FILES,
        "fingerprint": ("str",),
        "?inputs": ("dict",),
        "?has_labels": ("bool",),
        "?classes": ("list", "null"),
        "?dead_units": ("int", 0, DIM_LIMIT),
        "?id_min": ("int", -INT64, INT64),
        "?id_max": ("int", -INT64, INT64),
        "?ids_dense": ("bool",),
        "?settings": ("dict",),
        "?executor": ("str",),
        "?sae_trained_on_these_features": ("bool",),
    },
    "dynsel.plan": {
        "epochs": ("int", 0, INT64),
        "n_samples": _ROWS,
        "files": _FILES,
        "counts": ("list",),
        "?method": ("str",),
        "?sha256": ("str",),
        "?settings": ("dict",),
        "?inputs": ("dict",),
        "?index_dtype": ("str",),
        "?offsets_dtype": ("str",),
        "?budget": ("int", 0, INT64),
        "?batch_size": ("int", 1, INT64),
        "?world_size": ("int", 1, INT64),
        "?drop_last": ("bool",),
        "?ratio": ("number",),
        "?seed": ("int", 0, INT64),
        "?steps_per_epoch": ("list",),
        "?total_steps": ("int", 0, INT64),
        "?total_selected": ("int", 0, INT64),
        "?has_weights": ("bool",),
        "?classes": ("list", "null"),
        "?signals": ("dict", "null"),
        "?schedule": ("dict", "list", "null"),
        "?class_quota_applied": ("bool",),
        "?dataset_fingerprint": ("str",),
        "?id_min": ("int", -INT64, INT64),
        "?id_max": ("int", -INT64, INT64),
        "?ids_dense": ("bool",),
    },
}


def check_schema(manifest: dict[str, Any], kind: str, where: Any, what: str) -> None:
    """ArtifactError (exit 2, one line) unless ``manifest`` has the fields of ``kind`` with their types."""
    schema = SCHEMAS.get(kind)
    if schema is None:
        return
    if "files" in manifest or "shards" in manifest:
        listed_files(manifest, where, what)  # every entry has a name, bytes and a sha256
    for key, spec in schema.items():
        optional, name = key.startswith("?"), key.lstrip("?")
        if name not in manifest:
            if optional:
                continue
            raise ArtifactError(f"{where}: the {what}'s manifest has no {name!r}; rebuild the {what}")
        value = manifest[name]
        types = [t for t in spec if isinstance(t, str)]
        if not any(_TYPES[t](value) for t in types):
            raise ArtifactError(
                f"{where}: the {what}'s manifest field {name!r} must be {' or '.join(types)}, not {type(value).__name__}; rebuild the {what}"
            )
        bounds = [b for b in spec if not isinstance(b, str)]
        if bounds and _TYPES["int"](value) and not bounds[0] <= value <= bounds[1]:
            raise ArtifactError(
                f"{where}: the {what}'s manifest field {name!r} is {value}, outside [{bounds[0]}, {bounds[1]}]; rebuild the {what}"
            )
    for shard in manifest.get("shards", []) if kind == "dynsel.features" else []:
        if not (
            isinstance(shard, dict)
            and isinstance(shard.get("file"), str)
            and isinstance(shard.get("sha256"), str)
            and _TYPES["int"](shard.get("rows"))
            and _TYPES["int"](shard.get("bytes"))
        ):
            raise ArtifactError(
                f"{where}: the {what}'s manifest lists a shard without file, rows, bytes and sha256; rebuild the {what}"
            )
    if isinstance(manifest.get("classes"), list) and not all(isinstance(c, str) for c in manifest["classes"]):
        raise ArtifactError(f"{where}: the {what}'s manifest field 'classes' must list strings; rebuild the {what}")
    for name in ("counts", "steps_per_epoch"):
        if isinstance(manifest.get(name), list) and not all(
            _TYPES["int"](c) and 0 <= c <= INT64 for c in manifest[name]
        ):
            raise ArtifactError(f"{where}: the {what}'s manifest field {name!r} must list counts; rebuild the {what}")
