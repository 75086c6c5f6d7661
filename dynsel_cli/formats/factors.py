"""Factor tables (spec: docs/formats.md, "Factor tables").

Layout::

    FACTORS/
      samples.parquet   id int64, [label int64], units fixed_size_list<int32>[k], acts fixed_size_list<float32>[k]
                        (one row per sample in feature order; units sorted by activation, largest first;
                        an activation of 0 means the unit did not fire)
      units.parquet     unit int32, count int64, frequency float64, mass float64, mean_act float64,
                        max_act float64, dead bool, [class_frequency fixed_size_list<float64>[C]]
      manifest.json     settings, input fingerprints (features, SAE), checksums, content fingerprint
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import ArtifactError
from .common import FORMAT_VERSION, file_entry, id_fields, read_artifact_manifest, write_json

KIND = "dynsel.factors"
WHAT = "factor tables directory"


@dataclass(frozen=True)
class SampleFactors:
    """Per-sample SAE codes: the k largest units of each sample and their activations."""

    ids: np.ndarray  # int64 [N]
    labels: np.ndarray | None  # int64 [N]
    units: np.ndarray  # int32 [N, k]
    acts: np.ndarray  # float32 [N, k]


@dataclass(frozen=True)
class UnitStats:
    """Per-unit statistics over the data set."""

    count: np.ndarray  # int64 [m] samples in which the unit fired
    frequency: np.ndarray  # float64 [m] count / N
    mass: np.ndarray  # float64 [m] total activation
    mean_act: np.ndarray  # float64 [m] mass / count (0 for dead units)
    max_act: np.ndarray  # float64 [m]
    class_frequency: np.ndarray | None  # float64 [m, C] share of class-c samples in which the unit fired

    @property
    def dead(self) -> np.ndarray:
        return self.count == 0


@dataclass(frozen=True)
class FactorTables:
    path: Path
    manifest: dict[str, Any]
    samples: SampleFactors
    units: UnitStats

    @property
    def fingerprint(self) -> str:
        return str(self.manifest["fingerprint"])

    @property
    def n_samples(self) -> int:
        return int(len(self.samples.ids))


def _fixed_list(values: np.ndarray, dtype: pa.DataType) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), dtype), values.shape[1])


def write_factor_tables(directory: Path, samples: SampleFactors, units: UnitStats, extra: dict[str, Any]) -> dict[str, Any]:
    """Write both tables and the manifest into ``directory`` (a temporary directory of an atomic write)."""
    sample_columns: dict[str, pa.Array] = {"id": pa.array(samples.ids, pa.int64())}
    if samples.labels is not None:
        sample_columns["label"] = pa.array(samples.labels, pa.int64())
    sample_columns["units"] = _fixed_list(samples.units.astype(np.int32), pa.int32())
    sample_columns["acts"] = _fixed_list(samples.acts.astype(np.float32), pa.float32())
    pq.write_table(pa.table(sample_columns), directory / "samples.parquet", compression="zstd")

    width = len(units.count)
    unit_columns: dict[str, pa.Array] = {
        "unit": pa.array(np.arange(width, dtype=np.int32)),
        "count": pa.array(units.count.astype(np.int64)),
        "frequency": pa.array(units.frequency.astype(np.float64)),
        "mass": pa.array(units.mass.astype(np.float64)),
        "mean_act": pa.array(units.mean_act.astype(np.float64)),
        "max_act": pa.array(units.max_act.astype(np.float64)),
        "dead": pa.array(units.dead),
    }
    if units.class_frequency is not None:
        unit_columns["class_frequency"] = _fixed_list(units.class_frequency.astype(np.float64), pa.float64())
    pq.write_table(pa.table(unit_columns), directory / "units.parquet", compression="zstd")

    files = {name: file_entry(directory / name) for name in ("samples.parquet", "units.parquet")}
    manifest = {
        "format": KIND,
        "format_version": FORMAT_VERSION,
        "n_samples": int(len(samples.ids)),
        "k": int(samples.units.shape[1]),
        "width": width,
        "has_labels": samples.labels is not None,
        **id_fields(samples.ids),
        "files": files,
        "fingerprint": files["samples.parquet"]["sha256"],
        **extra,
    }
    write_json(directory / "manifest.json", manifest)
    return manifest


def read_factors_manifest(path: Path, verify: bool = True) -> dict[str, Any]:
    return read_artifact_manifest(path, KIND, WHAT, "a factor tables directory", "dynsel factors", verify)


def _fixed_list_to_numpy(column: pa.ChunkedArray, dtype: type, path: Path, name: str) -> np.ndarray:
    array = column.combine_chunks()
    if not pa.types.is_fixed_size_list(array.type):
        raise ArtifactError(f"{path}: column {name!r} must be a fixed-size list")
    return np.asarray(array.flatten().to_numpy(zero_copy_only=False), dtype=dtype).reshape(len(array), array.type.list_size)


def read_factor_tables(path: Path, verify: bool = True) -> FactorTables:
    """Load both tables (checksums verified)."""
    path = Path(path)
    manifest = read_factors_manifest(path, verify=verify)
    try:
        sample_table = pq.read_table(path / "samples.parquet")
        unit_table = pq.read_table(path / "units.parquet")
    except (pa.ArrowInvalid, OSError) as exc:
        raise ArtifactError(f"{path}: unreadable Parquet ({exc}); rebuild the factor tables") from None
    labels = None
    if "label" in sample_table.column_names:
        labels = sample_table.column("label").to_numpy().astype(np.int64)
    samples = SampleFactors(
        ids=sample_table.column("id").to_numpy().astype(np.int64),
        labels=labels,
        units=_fixed_list_to_numpy(sample_table.column("units"), np.int32, path, "units"),
        acts=_fixed_list_to_numpy(sample_table.column("acts"), np.float32, path, "acts"),
    )
    class_frequency = None
    if "class_frequency" in unit_table.column_names:
        class_frequency = _fixed_list_to_numpy(unit_table.column("class_frequency"), np.float64, path, "class_frequency")
    units = UnitStats(
        count=unit_table.column("count").to_numpy().astype(np.int64),
        frequency=unit_table.column("frequency").to_numpy().astype(np.float64),
        mass=unit_table.column("mass").to_numpy().astype(np.float64),
        mean_act=unit_table.column("mean_act").to_numpy().astype(np.float64),
        max_act=unit_table.column("max_act").to_numpy().astype(np.float64),
        class_frequency=class_frequency,
    )
    return FactorTables(path=path, manifest=manifest, samples=samples, units=units)
