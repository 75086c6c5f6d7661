"""Fuzzing the manifests every stage reads: whatever a manifest holds (wrong JSON types, nulls, missing or
extra fields, deep nesting, huge numbers, not JSON at all), a command answers exit 0 or exit 2 with a
message, never exit 1 (an internal error)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import invoke, sparse_dictionary_data
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from dynsel_cli.config import ExtractConfig, PlanConfig
    from dynsel_cli.extract import extract
    from dynsel_cli.factors import build_factor_tables
    from dynsel_cli.plan import build_plan

    root = tmp_path_factory.mktemp("fuzz")
    vectors = sparse_dictionary_data(400, d=16, seed=3)
    np.savez(root / "v.npz", x=vectors, y=np.arange(400) % 4)
    extract(root / "v.npz", root / "features", ExtractConfig(encoder="identity", device="cpu"))
    fit_sae(root)
    build_factor_tables(root / "features", root / "sae", root / "factors")
    build_plan(root / "factors", root / "plan", PlanConfig(epochs=2, ratio=0.5, device="cpu"))
    return root


def fit_sae(root: Path) -> None:
    from dynsel_cli.config import SaeConfig
    from dynsel_cli.sae import fit_sae as fit

    fit(root / "features", root / "sae", SaeConfig(width=32, k=4, epochs=1, device="cpu"))


def manifest_of(stage: Path) -> Path:
    return stage / ("_manifest.json" if (stage / "_manifest.json").exists() else "manifest.json")


def paths_in(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path of a JSON value (dict keys and list positions), the root included."""
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths_in(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value[:4]):
            found += paths_in(item, (*prefix, index))
    return found


def mutated(manifest: Any, path: tuple, replacement: Any, delete: bool) -> Any:
    if not path:
        return replacement
    copy = json.loads(json.dumps(manifest))
    parent = copy
    for key in path[:-1]:
        parent = parent[key]
    if delete and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = replacement
    return copy


COMMANDS = {
    "features": lambda d, out: (
        "fit-sae",
        d / "features",
        "--out",
        out,
        "--width",
        "32",
        "--k",
        "4",
        "--epochs",
        "1",
        "--device",
        "cpu",
    ),
    "sae": lambda d, out: ("factors", d / "features", "--sae", d / "sae", "--out", out, "--device", "cpu"),
    "factors": lambda d, out: ("plan", d / "factors", "--out", out, "--epochs", "2", "--device", "cpu"),
    "plan": lambda d, out: ("verify", d / "plan"),
    "plan-report": lambda d, out: ("report", d / "plan"),
}


@pytest.mark.parametrize("kind", list(COMMANDS))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_manifest_gets_exit_0_or_2(
    kind: str, artifacts: Path, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    stage_name = kind.split("-")[0]
    work = tmp_path_factory.mktemp("case")
    for stage in ("features", "sae", "factors", "plan"):
        shutil.copytree(artifacts / stage, work / stage)
    target = manifest_of(work / stage_name)
    manifest = json.loads(target.read_text())
    how = data.draw(st.sampled_from(["replace", "delete", "not-json", "deep"]))
    if how == "not-json":
        target.write_text(data.draw(st.sampled_from(["", "{", "[1, 2", "\x00\xff", "null", "NaN"])))
    elif how == "deep":
        target.write_text("[" * 100_000 + "]" * 100_000)
    else:
        path = data.draw(st.sampled_from(paths_in(manifest)))
        target.write_text(json.dumps(mutated(manifest, path, data.draw(json_values), how == "delete")))
    result = invoke(*COMMANDS[kind](work, work / "out"))
    assert result.exit_code in (0, 2), (
        f"exit {result.exit_code} for {how} of {target.name}: {result.exception!r}\n{result.output[-2000:]}"
    )
