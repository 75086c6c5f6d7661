"""Artifact formats (docs/formats.md): round-trips, atomic writes, checksums, manifests."""

from __future__ import annotations

import io
import json
import os
import stat
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import sha256_of
from safetensors import safe_open

from dynsel_cli import read_plan as public_read_plan
from dynsel_cli.errors import ArtifactError, DynselError
from dynsel_cli.formats.common import (
    FORMAT_VERSION,
    atomic_directory,
    canonical_json,
    safe_child,
    sha256_file,
    verify_files,
)
from dynsel_cli.formats.factors import SampleFactors, UnitStats, read_factor_tables, write_factor_tables
from dynsel_cli.formats.features import FeatureShardWriter, read_features
from dynsel_cli.formats.plan import (
    index_dtype_for,
    read_plan,
    steps_for,
    write_index_lines,
    write_plan,
    write_plan_stream,
)
from dynsel_cli.formats.sae import SaeWeights, read_sae, write_sae


def leftovers(parent: Path, name: str) -> list[str]:
    """Temporary siblings an atomic write might leave behind."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}."))


# ---------------------------------------------------------------------------------------------- features


def write_features(
    path: Path,
    ids: np.ndarray,
    labels: np.ndarray | None,
    vectors: np.ndarray,
    dtype: str = "float32",
    shard_rows: int = 262_144,
) -> dict:
    with atomic_directory(path) as tmp:
        writer = FeatureShardWriter(tmp, vectors.shape[1], dtype, has_labels=labels is not None, shard_rows=shard_rows)
        for start in range(0, len(ids), 7):  # several small batches, as the extract loop does
            sl = slice(start, start + 7)
            writer.add(ids[sl], None if labels is None else labels[sl], vectors[sl])
        return writer.finish({"classes": None})


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_features_round_trip(tmp_path: Path, dtype: str) -> None:
    rng = np.random.default_rng(0)
    n, dim = 50, 6
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    labels = rng.integers(0, 3, n)
    ids = np.arange(n)
    manifest = write_features(tmp_path / "feat", ids, labels, vectors, dtype=dtype)
    assert manifest["n_samples"] == n and manifest["dim"] == dim and manifest["dtype"] == dtype

    features = read_features(tmp_path / "feat")
    assert features.vectors.dtype == np.float32
    np.testing.assert_array_equal(features.ids, ids)
    np.testing.assert_array_equal(features.labels, labels)
    np.testing.assert_array_equal(features.vectors, vectors.astype(dtype).astype(np.float32))

    # Any Arrow tool reads the directory as one table (the manifest's leading "_" hides it).
    table = pq.read_table(tmp_path / "feat")
    assert table.num_rows == n
    assert table.column_names == ["id", "label", "vector"]
    vector_type = table.schema.field("vector").type
    assert pa.types.is_fixed_size_list(vector_type) and vector_type.list_size == dim
    assert vector_type.value_type == (pa.float16() if dtype == "float16" else pa.float32())
    stored = np.asarray(table.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)).reshape(
        n, dim
    )
    np.testing.assert_array_equal(stored.astype(np.float32), vectors.astype(dtype).astype(np.float32))


def test_features_without_labels_and_fingerprint_independent_of_sharding(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(40, 3)).astype(np.float32)
    one = write_features(tmp_path / "one", np.arange(40), None, vectors)
    many = write_features(tmp_path / "many", np.arange(40), None, vectors, shard_rows=16)
    assert len(one["shards"]) == 1 and [s["rows"] for s in many["shards"]] == [16, 16, 8]
    assert one["fingerprint"] == many["fingerprint"]
    assert pq.read_table(tmp_path / "many").num_rows == 40
    assert pq.read_table(tmp_path / "many").column_names == ["id", "vector"]
    features = read_features(tmp_path / "many")
    assert features.labels is None
    np.testing.assert_array_equal(features.vectors, vectors)

    changed = vectors.copy()
    changed[5, 1] += 1.0
    assert write_features(tmp_path / "changed", np.arange(40), None, changed)["fingerprint"] != one["fingerprint"]


def test_features_tampered_shard_is_refused(tmp_path: Path) -> None:
    write_features(tmp_path / "feat", np.arange(10), None, np.ones((10, 2), np.float32))
    shard = tmp_path / "feat" / "part-00000.parquet"
    with open(shard, "ab") as handle:
        handle.write(b"x")
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        read_features(tmp_path / "feat")


@pytest.mark.parametrize(("dtype", "with_labels"), [("float32", True), ("float16", False)])
def test_features_fingerprint_is_the_one_docs_formats_defines(tmp_path: Path, dtype: str, with_labels: bool) -> None:
    """sha256 over the rows in order: id int64 LE, label int64 LE (if any), the vector's bytes in the stored
    dtype. Written here from the spec alone: the writer must never drift from it (artifacts keep their identity)."""
    import hashlib

    rng = np.random.default_rng(4)
    ids = np.asarray([3, 1, 70_000, 5, 2**40])
    labels = rng.integers(0, 4, len(ids)) if with_labels else None
    vectors = rng.normal(size=(len(ids), 3)).astype(np.float32)
    manifest = write_features(tmp_path / "feat", ids, labels, vectors, dtype=dtype, shard_rows=2)
    digest = hashlib.sha256()
    for row in range(len(ids)):
        digest.update(int(ids[row]).to_bytes(8, "little", signed=True))
        if labels is not None:
            digest.update(int(labels[row]).to_bytes(8, "little", signed=True))
        digest.update(vectors[row].astype(np.dtype(dtype).newbyteorder("<")).tobytes())
    assert manifest["fingerprint"] == digest.hexdigest()
    assert (manifest["id_min"], manifest["id_max"], manifest["ids_dense"]) == (1, 2**40, False)
    assert [s["file"] for s in manifest["shards"]] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]


def test_feature_writer_refuses_unknown_dtype(tmp_path: Path) -> None:
    with pytest.raises(DynselError, match="float32"):
        FeatureShardWriter(tmp_path, 4, "float64", has_labels=False)


# --------------------------------------------------------------------------------------------------- SAE


def random_sae(d: int = 5, m: int = 12, k: int = 3, seed: int = 0) -> SaeWeights:
    g = torch.Generator().manual_seed(seed)
    w_dec = torch.randn(m, d, generator=g)
    w_dec /= w_dec.norm(dim=1, keepdim=True)
    return SaeWeights(
        encoder_weight=torch.randn(m, d, generator=g),
        encoder_bias=torch.randn(m, generator=g),
        decoder_weight=w_dec,
        decoder_bias=torch.randn(d, generator=g),
        input_mean=torch.randn(d, generator=g),
        input_scale=torch.tensor([2.5]),
        k=k,
    )


def test_sae_round_trip_and_sparsify_layout(tmp_path: Path) -> None:
    weights = random_sae()
    metrics = {"fvu": 0.1, "l0": 3.0, "dead_fraction": 0.0}
    with atomic_directory(tmp_path / "sae") as tmp:
        write_sae(tmp, weights, metrics, {"inputs": {"features": "abc"}})
    loaded, manifest = read_sae(tmp_path / "sae")
    for name in ("encoder_weight", "encoder_bias", "decoder_weight", "decoder_bias", "input_mean", "input_scale"):
        torch.testing.assert_close(
            getattr(loaded, name), getattr(weights, name).reshape(getattr(loaded, name).shape), rtol=0, atol=0
        )
    assert loaded.k == 3 and loaded.width == 12 and loaded.dim == 5
    assert manifest["inputs"] == {"features": "abc"}
    assert manifest["fingerprint"] == sha256_of(tmp_path / "sae" / "sae.safetensors")

    with safe_open(str(tmp_path / "sae" / "sae.safetensors"), framework="pt") as handle:
        keys = set(handle.keys())
        shapes = {k: tuple(handle.get_tensor(k).shape) for k in keys}
        dtypes = {handle.get_tensor(k).dtype for k in keys}
    assert keys == {"encoder.weight", "encoder.bias", "W_dec", "b_dec"}
    assert shapes == {"encoder.weight": (12, 5), "encoder.bias": (12,), "W_dec": (12, 5), "b_dec": (5,)}
    assert dtypes == {torch.float32}

    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    assert cfg["activation"] == "topk" and cfg["k"] == 3 and cfg["num_latents"] == 12 and cfg["d_in"] == 5
    assert {"expansion_factor", "normalize_decoder", "multi_topk", "skip_connection", "transcode"} <= set(cfg)
    assert json.loads((tmp_path / "sae" / "metrics.json").read_text()) == metrics


def test_sae_with_k_above_width_is_refused(tmp_path: Path) -> None:
    with atomic_directory(tmp_path / "sae") as tmp:
        write_sae(tmp, random_sae(), {}, {})
    cfg_path = tmp_path / "sae" / "cfg.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["k"] = 99
    cfg_path.write_text(json.dumps(cfg))
    # cfg.json is checksummed: a hand edit is caught first; without verification the k check still refuses it.
    with pytest.raises(ArtifactError, match="cfg.json"):
        read_sae(tmp_path / "sae")
    with pytest.raises(ArtifactError, match="k=99 exceeds the SAE width 12"):
        read_sae(tmp_path / "sae", verify=False)


# ----------------------------------------------------------------------------------------- factor tables


@pytest.mark.parametrize("with_labels", [True, False])
def test_factor_tables_round_trip(tmp_path: Path, with_labels: bool) -> None:
    units = np.array([[3, 1, -1], [0, 2, 1], [2, -1, -1]], dtype=np.int32)
    acts = np.array([[2.0, 1.0, 0.0], [3.0, 2.5, 0.5], [1.0, 0.0, 0.0]], dtype=np.float32)
    labels = np.array([0, 1, 1]) if with_labels else None
    samples = SampleFactors(ids=np.array([10, 11, 12]), labels=labels, units=units, acts=acts)
    stats = UnitStats(
        count=np.array([1, 2, 2, 1]),
        frequency=np.array([1, 2, 2, 1]) / 3,
        mass=np.array([3.0, 1.5, 3.5, 2.0]),
        mean_act=np.array([3.0, 0.75, 1.75, 2.0]),
        max_act=np.array([3.0, 1.0, 2.5, 2.0]),
        class_frequency=np.array([[0, 1], [1, 0.5], [0, 1], [1, 0]], dtype=np.float64) if with_labels else None,
    )
    with atomic_directory(tmp_path / "factors") as tmp:
        manifest = write_factor_tables(tmp, samples, stats, {"inputs": {"features": "f", "sae": "s"}})
    assert manifest["n_samples"] == 3 and manifest["k"] == 3 and manifest["width"] == 4
    tables = read_factor_tables(tmp_path / "factors")
    assert tables.n_samples == 3 and tables.fingerprint == sha256_of(tmp_path / "factors" / "samples.parquet")
    np.testing.assert_array_equal(tables.samples.ids, samples.ids)
    np.testing.assert_array_equal(tables.samples.units, units)
    np.testing.assert_array_equal(tables.samples.acts, acts)
    assert tables.samples.units.dtype == np.int32 and tables.samples.acts.dtype == np.float32
    for name in ("count", "frequency", "mass", "mean_act", "max_act"):
        np.testing.assert_array_equal(getattr(tables.units, name), getattr(stats, name))
    if with_labels:
        np.testing.assert_array_equal(tables.samples.labels, labels)
        np.testing.assert_array_equal(tables.units.class_frequency, stats.class_frequency)
    else:
        assert tables.samples.labels is None and tables.units.class_frequency is None
    unit_table = pq.read_table(tmp_path / "factors" / "units.parquet")
    assert unit_table.column("dead").to_pylist() == [False, False, False, False]
    assert unit_table.column("unit").to_pylist() == [0, 1, 2, 3]


# -------------------------------------------------------------------------------------------------- plan


def make_epochs(n: int = 30, counts: tuple[int, ...] = (10, 10, 0, 7, 30), seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.permutation(n)[:c].astype(np.int64) for c in counts]


def write_test_plan(
    path: Path,
    epochs: list[np.ndarray],
    n: int = 30,
    weights: list[np.ndarray] | None = None,
    formats=("bin", "txt", "npy", "parquet"),
    batch_size: int = 4,
) -> dict:
    with atomic_directory(path) as tmp:
        return write_plan(
            tmp, epochs, n, batch_size, 1, False, {"ratio": 0.5, "seed": 7}, weights=weights, formats=formats
        )


def test_plan_all_formats_agree(tmp_path: Path) -> None:
    epochs = make_epochs()
    weights = [np.linspace(0, 1, len(e), dtype=np.float32) for e in epochs]
    manifest = write_test_plan(tmp_path / "plan", epochs, weights=weights)
    root = tmp_path / "plan"
    counts = [len(e) for e in epochs]
    assert manifest["counts"] == counts and manifest["total_selected"] == sum(counts)
    assert manifest["index_dtype"] == "<u4" and manifest["offsets_dtype"] == "<u8"
    assert manifest["sha256"] == sha256_of(root / "indices.bin")
    assert manifest["steps_per_epoch"] == [3, 3, 0, 2, 8] and manifest["total_steps"] == 16

    # bin: flat little-endian arrays, CSR offsets
    flat = np.fromfile(root / "indices.bin", dtype="<u4")
    offsets = np.fromfile(root / "offsets.bin", dtype="<u8")
    np.testing.assert_array_equal(offsets, np.concatenate([[0], np.cumsum(counts)]))
    np.testing.assert_array_equal(flat, np.concatenate(epochs))
    np.testing.assert_array_equal(np.fromfile(root / "weights.bin", dtype="<f4"), np.concatenate(weights))
    # npy: the same arrays
    np.testing.assert_array_equal(np.load(root / "indices.npy"), flat)
    np.testing.assert_array_equal(np.load(root / "offsets.npy"), offsets)
    assert np.load(root / "indices.npy").dtype == np.dtype("<u4")
    # parquet: epoch, position, index, weight
    table = pq.read_table(root / "plan.parquet").to_pydict()
    assert set(table) == {"epoch", "position", "index", "weight"}
    # txt: one id per line, no library needed
    plan = read_plan(root)
    for e, epoch in enumerate(epochs):
        text = (root / "epochs" / f"epoch-{e:04d}.txt").read_text()
        assert text == "".join(f"{i}\n" for i in epoch)
        assert [int(line) for line in text.splitlines()] == epoch.tolist()
        rows = [(p, i) for ep, p, i in zip(table["epoch"], table["position"], table["index"]) if ep == e]
        assert [p for p, _ in rows] == list(range(len(epoch)))
        assert [i for _, i in rows] == epoch.tolist()
        got = plan.epochs[e]
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, epoch)
        np.testing.assert_array_equal(flat[offsets[e] : offsets[e + 1]], epoch)
        np.testing.assert_array_equal(plan.epoch_weights(e), weights[e])
    assert len(plan.epochs) == plan.n_epochs == 5 and plan.counts == counts
    assert plan.sha256 == manifest["sha256"] and plan.seed == 7 and plan.ratio == 0.5
    np.testing.assert_array_equal(plan.epochs[-1], epochs[-1])
    with pytest.raises(IndexError):
        plan.epochs[5]
    # slices and iteration work as for a list of epochs
    assert [e.tolist() for e in plan.epochs[:4]] == [e.tolist() for e in epochs[:4]]
    assert [e.tolist() for e in plan.epochs[::-2]] == [e.tolist() for e in epochs[::-2]]
    assert plan.epochs[7:] == [] and len(list(plan.epochs)) == 5


def test_plan_bin_only_and_public_reader(tmp_path: Path) -> None:
    epochs = make_epochs()
    write_test_plan(tmp_path / "plan", epochs, formats=("bin",))
    assert sorted(p.name for p in (tmp_path / "plan").iterdir()) == ["indices.bin", "manifest.json", "offsets.bin"]
    plan = public_read_plan(tmp_path / "plan")
    assert plan.weights is None and plan.epoch_weights(0) is None
    assert [e.tolist() for e in plan.epochs] == [e.tolist() for e in epochs]


def test_plan_unknown_format_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DynselError, match="unknown plan format"):
        write_test_plan(tmp_path / "plan", make_epochs(), formats=("bin", "csv"))
    assert not (tmp_path / "plan").exists() and leftovers(tmp_path, "plan") == []


def test_plan_with_ids_beyond_32_bits_uses_u8(tmp_path: Path) -> None:
    big = 2**32 + 5
    epochs = [np.array([big, 3, 2**32 - 1], dtype=np.int64), np.array([0], dtype=np.int64)]
    manifest = write_test_plan(tmp_path / "plan", epochs, n=big + 1)
    assert manifest["index_dtype"] == "<u8"
    plan = read_plan(tmp_path / "plan")
    assert plan.epochs[0].tolist() == [big, 3, 2**32 - 1]
    assert np.fromfile(tmp_path / "plan" / "indices.bin", dtype="<u8").tolist() == [big, 3, 2**32 - 1, 0]
    assert index_dtype_for(2**32 - 1) == "<u4" and index_dtype_for(2**32) == "<u8"


def test_write_plan_stream_and_index_lines() -> None:
    buffer = io.StringIO()
    write_plan_stream(buffer, [np.array([3, 1, 2]), np.array([], dtype=np.int64), np.array([7])])
    assert buffer.getvalue() == "3 1 2\n\n7\n"
    lines = io.StringIO()
    write_index_lines(lines, np.array([5, 0, 12], dtype=np.uint32))
    assert lines.getvalue() == "5\n0\n12\n"
    empty = io.StringIO()
    write_index_lines(empty, np.array([], dtype=np.int64))
    assert empty.getvalue() == ""


def test_tampered_plan_is_refused(tmp_path: Path) -> None:
    write_test_plan(tmp_path / "plan", make_epochs())
    indices = tmp_path / "plan" / "indices.bin"
    data = bytearray(indices.read_bytes())
    data[0] ^= 0x01  # same size, different content
    indices.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"indices\.bin: checksum mismatch"):
        read_plan(tmp_path / "plan")
    read_plan(tmp_path / "plan", verify=False)  # the caller can opt out of verification

    write_test_plan(tmp_path / "plan2", make_epochs())
    (tmp_path / "plan2" / "epochs" / "epoch-0001.txt").unlink()
    with pytest.raises(ArtifactError, match="missing"):
        read_plan(tmp_path / "plan2")


def test_plan_manifest_of_wrong_kind_or_version_is_refused(tmp_path: Path) -> None:
    write_test_plan(tmp_path / "plan", make_epochs())
    manifest_path = tmp_path / "plan" / "manifest.json"
    original = json.loads(manifest_path.read_text())

    manifest_path.write_text(json.dumps({**original, "format": "dynsel.factors"}))
    with pytest.raises(
        ArtifactError, match=r"not a dynsel plan directory \(format 'dynsel.factors', expected 'dynsel.plan'\)"
    ):
        read_plan(tmp_path / "plan")

    manifest_path.write_text(json.dumps({**original, "format_version": FORMAT_VERSION + 1}))
    with pytest.raises(ArtifactError, match=f"format version {FORMAT_VERSION + 1} is not supported"):
        read_plan(tmp_path / "plan")

    manifest_path.write_text("{not json")
    with pytest.raises(ArtifactError, match="not readable JSON"):
        read_plan(tmp_path / "plan")

    manifest_path.write_text(json.dumps({**original, "files": {"../outside.bin": {"bytes": 0, "sha256": ""}}}))
    with pytest.raises(ArtifactError, match="outside"):
        read_plan(tmp_path / "plan")

    with pytest.raises(ArtifactError, match="not a plan directory"):
        read_plan(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="manifest.json: missing"):
        read_plan(tmp_path / "empty")


def test_plan_offsets_inconsistent_with_indices_are_refused(tmp_path: Path) -> None:
    write_test_plan(tmp_path / "plan", make_epochs(), formats=("bin",))
    manifest_path = tmp_path / "plan" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["epochs"] = 3
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="offsets.bin does not match"):
        read_plan(tmp_path / "plan")


@pytest.mark.parametrize(
    ("count", "batch", "world", "drop_last", "steps"),
    [
        (1000, 128, 1, False, 8),
        (1000, 128, 1, True, 7),
        (1024, 128, 1, True, 8),
        (1000, 128, 3, False, 3),  # ceil(1000/3) = 334 per rank → 3 batches
        (1000, 128, 3, True, 2),  # floor(1000/3) = 333 per rank → 2 full batches
        (600, 128, 1, False, 5),
        (2000, 128, 8, False, 2),
        (0, 128, 1, False, 0),
        (1, 128, 4, False, 1),
        (1, 128, 4, True, 0),
    ],
)
def test_steps_for(count: int, batch: int, world: int, drop_last: bool, steps: int) -> None:
    assert steps_for(count, batch, world, drop_last) == steps


# --------------------------------------------------------------------------------- atomic writes, checks


def test_atomic_directory_exception_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_directory(tmp_path / "art") as tmp:
            (tmp / "half.bin").write_bytes(b"partial")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_directory_exception_keeps_the_old_artifact(tmp_path: Path) -> None:
    with atomic_directory(tmp_path / "art") as tmp:
        (tmp / "data.txt").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_directory(tmp_path / "art") as tmp:
            (tmp / "data.txt").write_text("new, half-written")
            raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]
    assert [p.name for p in (tmp_path / "art").iterdir()] == ["data.txt"]
    assert (tmp_path / "art" / "data.txt").read_text() == "old"


def test_atomic_directory_replaces_on_success_and_refuses_what_it_may_not_replace(tmp_path: Path) -> None:
    with atomic_directory(tmp_path / "art") as tmp:
        (tmp / "a.txt").write_text("1")
        (tmp / "stale.txt").write_text("stale")
    with atomic_directory(tmp_path / "art") as tmp:
        (tmp / "a.txt").write_text("2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]
    assert [p.name for p in (tmp_path / "art").iterdir()] == ["a.txt"]  # nothing of the old version survives
    assert (tmp_path / "art" / "a.txt").read_text() == "2"
    with pytest.raises(DynselError, match="not a dynsel plan"):  # no manifest: not dynsel's to replace
        with atomic_directory(tmp_path / "art", "dynsel.plan"):
            pass
    assert (tmp_path / "art" / "a.txt").read_text() == "2"
    (tmp_path / "file").write_text("x")
    with pytest.raises(DynselError, match="not a directory"):
        with atomic_directory(tmp_path / "file"):
            pass


def test_atomic_directory_respects_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        with atomic_directory(tmp_path / "art") as tmp:
            (tmp / "a.txt").write_text("1")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "art").stat().st_mode)
    assert mode == 0o755, oct(mode)


def test_safe_child_and_verify_files(tmp_path: Path) -> None:
    (tmp_path / "ok.bin").write_bytes(b"abc")
    assert safe_child(tmp_path, "ok.bin", "plan") == (tmp_path / "ok.bin").resolve()
    assert safe_child(tmp_path, "epochs/epoch-0000.txt", "plan") == (tmp_path / "epochs" / "epoch-0000.txt").resolve()
    for bad in ("../x", "epochs/../../x", "/etc/passwd"):
        with pytest.raises(ArtifactError, match="outside the plan"):
            safe_child(tmp_path, bad, "plan")
    entry = {"bytes": 3, "sha256": sha256_file(tmp_path / "ok.bin")}
    verify_files(tmp_path, {"ok.bin": entry}, "plan")
    (tmp_path / "ok.bin").write_bytes(b"abd")
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        verify_files(tmp_path, {"ok.bin": entry}, "plan")
    with pytest.raises(ArtifactError, match="outside"):
        verify_files(tmp_path, {"../ok.bin": entry}, "plan")


def test_canonical_json_is_stable() -> None:
    assert canonical_json({"b": 1, "a": [1, 2]}) == canonical_json({"a": [1, 2], "b": 1})
    assert canonical_json({"a": 1}).endswith("\n")
