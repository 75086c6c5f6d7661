"""The streaming plan stage gives the bytes of a straightforward in-memory computation.

The references here hold everything at once, the way the plan stage used to: the whole factor table,
np.unique ranks, a full argpartition (score) or stable argsort (rotation) per epoch, np.isin for RS2's
pass change, and one ``pq.write_table`` / ``np.save`` / ``str`` join per plan file. The plan stage reads
the table in record batches, ranks with a sort and ``searchsorted``, selects by thresholds and writes each
epoch as it is selected; every file must come out byte for byte the same.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dynsel_cli import kernels
from dynsel_cli.config import PlanConfig
from dynsel_cli.factors import unit_statistics
from dynsel_cli.formats.common import atomic_directory
from dynsel_cli.formats.factors import SampleFactors, SampleTableWriter, read_factor_tables, write_factor_tables
from dynsel_cli.formats.plan import decimal_blocks, write_plan
from dynsel_cli.kernels.cpu import composite_keys, epoch_keys_cpu
from dynsel_cli.plan import build_plan, print_plan, streams
from dynsel_cli.plan.budget import class_floors, content_class_quotas, epoch_budget, quotas_for
from dynsel_cli.plan.inputs import scan_factor_tables
from dynsel_cli.plan.schedule import scheduler_weights
from dynsel_cli.plan.scores import normalise
from dynsel_cli.plan.signals import compute_signals

FORMATS = ("bin", "txt", "npy", "parquet")


# --------------------------------------------------------------------------------------------- references


def reference_rank(values: np.ndarray) -> np.ndarray:
    """normalise(..., "rank") as it was: np.unique's first ranks and counts."""
    x = np.asarray(values, dtype=np.float64)
    if x.min() == x.max():
        return np.full(len(x), 0.5, dtype=np.float32)
    unique, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    first_rank = np.concatenate([[0], np.cumsum(counts)[:-1]])
    mean_rank = first_rank + (counts - 1) / 2.0
    return (mean_rank[inverse] / (len(x) - 1)).astype(np.float32)


def reference_normalise(values: np.ndarray, how: str) -> np.ndarray:
    if how == "rank":
        return reference_rank(values)
    x = np.asarray(values, dtype=np.float64)
    return (
        np.full(len(x), 0.5, np.float32)
        if x.min() == x.max()
        else ((x - x.min()) / (x.max() - x.min())).astype(np.float32)
    )


def reference_score_epochs(r: np.ndarray, d: np.ndarray, params: kernels.SelectionParams) -> list[np.ndarray]:
    """The selection loop over whole arrays: a full argpartition of the composite keys per epoch (per class)."""
    n = len(r)
    counts = np.zeros(n, dtype=np.float32)
    members = None
    if params.class_quota is not None:
        labels = np.asarray(params.labels, dtype=np.int64)
        members = [np.flatnonzero(labels == c) for c in range(len(params.class_quota))]
    out = []
    for t in range(len(params.lambdas)):
        comp = composite_keys(epoch_keys_cpu(r, d, counts, params, t))
        picked = np.zeros(n, dtype=bool)
        groups = [(np.arange(n), params.n_select)] if members is None else zip(members, params.class_quota)
        for m, q in groups:
            if q:
                picked[m[np.argpartition(comp[m], len(m) - q)[len(m) - q :]]] = True
        counts = np.float32(params.decay) * counts + picked
        out.append(np.flatnonzero(picked))
    return out


def reference_rs2(
    n: int, budget: int, epochs: int, seed: int, labels: np.ndarray | None, quotas: np.ndarray | None
) -> list[np.ndarray]:
    """RS2 as first written: row permutations, np.isin at a pass change."""
    parts = (
        [(np.arange(n), -1, budget)]
        if quotas is None
        else [(np.flatnonzero(labels == c), c, int(q)) for c, q in enumerate(quotas)]
    )
    walks = []
    for members, c, quota in parts:
        perm = lambda passes, members=members, c=c: members[
            np.random.default_rng([seed, passes, streams.RS2, c + 1]).permutation(len(members))
        ]  # noqa: E731
        walks.append({"perm": perm, "passes": 0, "order": perm(0), "position": 0, "quota": quota})
    out = []
    for _ in range(epochs):
        taken_all = []
        for w in walks:
            taken = w["order"][w["position"] : w["position"] + w["quota"]]
            w["position"] += len(taken)
            if len(taken) < w["quota"]:
                w["passes"] += 1
                fresh = w["perm"](w["passes"])
                just = np.isin(fresh, taken)
                w["order"] = np.concatenate([fresh[~just], fresh[just]])
                need = w["quota"] - len(taken)
                taken = np.concatenate([taken, w["order"][:need]])
                w["position"] = need
            taken_all.append(taken)
        out.append(np.sort(np.concatenate(taken_all)))
    return out


def reference_rotation(
    weights: np.ndarray, budget: int, epochs: int, seed: int, labels: np.ndarray | None, quotas: np.ndarray | None
) -> list[np.ndarray]:
    """dynsel's rotation with a stable argsort of every turn per epoch."""
    n = len(weights)
    rows = np.arange(n)
    counts = np.zeros(n, dtype=np.int64)
    parts = (
        [(rows, budget)] if quotas is None else [(np.flatnonzero(labels == c), int(q)) for c, q in enumerate(quotas)]
    )
    out = []
    for _ in range(epochs):
        turn = (counts + streams.hashed_uniform(seed, streams.ROTATION, rows, counts)) / weights
        epoch = np.sort(np.concatenate([m[np.argsort(turn[m], kind="stable")[:q]] for m, q in parts if q]))
        counts[epoch] += 1
        out.append(epoch)
    return out


def reference_uniform(
    n: int, budget: int, rng: np.random.Generator, labels: np.ndarray | None, quotas: np.ndarray | None
) -> np.ndarray:
    if quotas is None:
        return np.sort(rng.choice(n, size=budget, replace=False))
    return np.sort(
        np.concatenate(
            [rng.choice(np.flatnonzero(labels == c), size=int(q), replace=False) for c, q in enumerate(quotas)]
        )
    )


def reference_epochs(factors: Path, config: PlanConfig) -> list[np.ndarray]:
    """Every epoch's ids in training order, from the whole factor table in memory."""
    tables = read_factor_tables(factors)
    n = tables.n_samples
    labels = tables.samples.labels
    budget = epoch_budget(config.ratio, n)
    quotas = quotas_for(config.class_quota, labels, budget)
    selecting = config.epochs - config.full_epochs
    if config.method == "full" or budget == n:
        rows = [np.arange(n)] * selecting
    elif config.method in ("score", "static-top"):
        r, d = kernels.factor_scores(
            tables.samples.units, tables.samples.acts, tables.units.frequency.astype(np.float32)
        )
        r, d = reference_normalise(r, config.normalise), reference_normalise(d, config.normalise)
        if config.method == "static-top":
            d, lambdas, beta, tau = r, [0.0], 0.0, 0.0
        else:
            lambdas, beta, tau = (
                scheduler_weights(config.schedule, config.lambda_start, config.lambda_end, selecting),
                config.beta,
                config.tau,
            )
        params = kernels.SelectionParams(
            n_select=budget,
            lambdas=lambdas,
            ratio=max(config.ratio, 1.0 / n),
            beta=beta,
            penalty=config.penalty,
            decay=config.decay,
            tau=tau,
            seed=config.seed,
            labels=labels if quotas is not None else None,
            class_quota=quotas,
        )
        rows = reference_score_epochs(r, d, params)
        rows = rows * selecting if config.method == "static-top" else rows
    elif config.method == "rs2":
        rows = reference_rs2(n, budget, selecting, config.seed, labels, quotas)
    elif config.method == "dynsel":
        signals = compute_signals(
            tables.samples.units,
            tables.samples.acts,
            int(tables.manifest["width"]),
            labels,
            dedup=config.dedup,
            trust=config.trust,
            dup_cosine=config.dup_cosine,
            trust_full=config.trust_full,
            label_trust=config.label_trust,
            dup_rule=config.dup_rule,
        )
        if config.class_quota == "content" and labels is not None:  # budgets over content (tested on their own)
            quotas = content_class_quotas(labels, signals.weights, budget, class_floors(labels, signals.groups, budget))
        rows = reference_rotation(signals.weights, budget, selecting, config.seed, labels, quotas)
    elif config.method == "random":
        rows = [
            reference_uniform(n, budget, np.random.default_rng([config.seed, t, streams.RANDOM]), labels, quotas)
            for t in range(selecting)
        ]
    else:  # static-random
        rows = [
            reference_uniform(n, budget, np.random.default_rng([config.seed, 0, streams.RANDOM]), labels, quotas)
        ] * selecting
    rows = list(rows) + [np.arange(n)] * config.full_epochs
    ids = tables.samples.ids
    return [
        ids[r[np.random.default_rng([config.seed, t, streams.ORDER]).permutation(len(r))]] for t, r in enumerate(rows)
    ]


def reference_files(epochs: list[np.ndarray], index_dtype: str) -> dict[str, bytes]:
    """The plan files of ``epochs``, each written in one go."""
    counts = [len(e) for e in epochs]
    offsets = np.zeros(len(epochs) + 1, dtype="<u8")
    np.cumsum(counts, out=offsets[1:])
    flat = np.concatenate(epochs).astype(index_dtype)
    files = {"indices.bin": flat.tobytes(), "offsets.bin": offsets.tobytes()}
    for e, epoch in enumerate(epochs):
        files[f"epochs/epoch-{e:04d}.txt"] = "".join(f"{v}\n" for v in epoch.tolist()).encode()
    for name, array in (("indices.npy", flat), ("offsets.npy", offsets)):
        buffer = io.BytesIO()
        np.save(buffer, array)
        files[name] = buffer.getvalue()
    table = pa.table(
        {
            "epoch": pa.array(np.repeat(np.arange(len(epochs), dtype=np.int32), counts)),
            "position": pa.array(np.concatenate([np.arange(c, dtype=np.int64) for c in counts])),
            "index": pa.array(np.concatenate(epochs).astype(np.int64)),
        }
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    files["plan.parquet"] = buffer.getvalue()
    return files


# --------------------------------------------------------------------------------------------- fixtures


def write_tables(path: Path, n: int, k: int, width: int, classes: int | None, ids: str, ties: bool, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    sample_ids = {
        "dense": np.arange(n),
        "permuted": rng.permutation(n),
        "sparse": rng.choice(2**40, size=n, replace=False),
    }[ids].astype(np.int64)
    labels = rng.choice(classes, size=n, p=rng.dirichlet(np.ones(classes))).astype(np.int64) if classes else None
    if ties:  # few distinct codes: many tied scores, zero activations and padding
        units = np.sort(rng.choice(8, size=(n, k)), axis=1).astype(np.int32)
        units = (units + np.arange(k) * 8).astype(np.int32) % width
        acts = -np.sort(-np.round(rng.random((n, k)) * 2).astype(np.float32) / 2, axis=1)
        units[rng.random(n) < 0.05, -1] = -1
    else:
        units = np.argsort(rng.random((n, width)), axis=1)[:, :k].astype(np.int32)
        acts = -np.sort(-rng.random((n, k), dtype=np.float32), axis=1)
    stats = unit_statistics(units, acts, width, labels, classes)
    with atomic_directory(path) as tmp:
        write_factor_tables(
            tmp,
            SampleFactors(ids=sample_ids, labels=labels, units=units, acts=acts),
            stats,
            {"inputs": {"features": path.name, "sae": "s"}, "classes": None},
        )
    return path


TABLES = {
    "labelled": dict(n=1500, k=6, width=64, classes=4, ids="dense", ties=False, seed=1),
    "permuted-ids": dict(n=900, k=4, width=32, classes=3, ids="permuted", ties=False, seed=2),
    "sparse-ids": dict(n=800, k=5, width=40, classes=None, ids="sparse", ties=False, seed=3),
    "ties": dict(n=1000, k=4, width=32, classes=3, ids="dense", ties=True, seed=4),
    "chunked": dict(n=70_000, k=3, width=48, classes=5, ids="dense", ties=False, seed=5),  # > one key/turn chunk
}


@pytest.fixture(scope="module")
def tables_dir(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("streaming")
    return {name: write_tables(root / name, **spec) for name, spec in TABLES.items()}


BASE = PlanConfig(epochs=5, ratio=0.5, seed=3, device="cpu")
CASES = [
    ("labelled", replace(BASE, method="score")),
    ("labelled", replace(BASE, method="score", class_quota="none", full_epochs=2)),
    (
        "labelled",
        replace(
            BASE,
            method="score",
            class_quota="balanced",
            tau=0.2,
            penalty="multiplicative",
            schedule="cosine",
            ratio=0.3,
        ),
    ),
    ("labelled", replace(BASE, method="static-top")),
    ("labelled", replace(BASE, method="rs2", ratio=0.3, epochs=8)),
    ("labelled", replace(BASE, method="dynsel")),
    ("labelled", replace(BASE, method="dynsel", class_quota="none", full_epochs=1)),
    ("labelled", replace(BASE, method="random")),
    ("labelled", replace(BASE, method="static-random", class_quota="balanced")),
    ("labelled", replace(BASE, method="full")),
    ("permuted-ids", replace(BASE, method="score")),
    ("permuted-ids", replace(BASE, method="rs2")),
    ("sparse-ids", replace(BASE, method="score", normalise="minmax")),
    ("sparse-ids", replace(BASE, method="dynsel")),
    ("sparse-ids", replace(BASE, method="rs2", epochs=7)),
    ("ties", replace(BASE, method="score")),
    ("ties", replace(BASE, method="static-top", class_quota="none")),
    ("ties", replace(BASE, method="dynsel")),
    ("chunked", replace(BASE, method="score", epochs=3, tau=0.5)),
    ("chunked", replace(BASE, method="score", epochs=3, class_quota="none")),
    ("chunked", replace(BASE, method="rs2", epochs=3)),
    ("chunked", replace(BASE, method="dynsel", epochs=3, dedup=False, trust=False)),
]


# --------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize(("table", "config"), CASES, ids=[f"{t}-{c.method}-{i}" for i, (t, c) in enumerate(CASES)])
def test_streamed_plan_has_the_bytes_of_the_in_memory_reference(
    tables_dir: dict[str, Path], tmp_path: Path, table: str, config: PlanConfig
) -> None:
    out = tmp_path / "plan"
    manifest = build_plan(tables_dir[table], out, config, formats=FORMATS)
    epochs = reference_epochs(tables_dir[table], config)
    expected = reference_files(epochs, manifest["index_dtype"])
    for name, data in expected.items():
        assert (out / name).read_bytes() == data, name
    assert manifest["sha256"] == hashlib.sha256(expected["indices.bin"]).hexdigest()
    assert manifest["counts"] == [len(e) for e in epochs]
    handle = io.StringIO()
    print_plan(tables_dir[table], handle, config)
    assert handle.getvalue() == "".join(" ".join(map(str, e.tolist())) + "\n" for e in epochs)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rank_normalisation_is_bit_identical_to_unique_ranks(dtype: type) -> None:
    rng = np.random.default_rng(0)
    cases = [
        rng.random(5000),
        np.round(rng.random(5000) * 20) / 20,  # heavy ties
        np.array([3.0, 1.0, 2.0, 1.0, 3.0, 3.0]),  # ties at both ends
        np.array([0.0, -0.0, 1.0, 0.0]),  # -0.0 ties with 0.0
        np.array([1.0, 2.0]),
        np.array([1e-30, 1e30, 1e-30]),
        rng.standard_normal(3_000_001 // 3),  # more than one block
    ]
    for values in cases:
        x = values.astype(dtype)
        got = normalise(x, "rank")
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got.view(np.int32), reference_rank(x).view(np.int32))


def test_rank_normalisation_of_constants_and_tiny_inputs() -> None:
    np.testing.assert_array_equal(normalise(np.full(7, 2.5, np.float32)), np.full(7, 0.5, np.float32))
    np.testing.assert_array_equal(normalise(np.array([4.0], np.float32)), [0.5])
    assert normalise(np.zeros(0, np.float32)).shape == (0,)
    np.testing.assert_array_equal(normalise(np.array([2, 1, 3])), [0.5, 0.0, 1.0])  # integers rank like floats


def test_minmax_matches_the_whole_array_formula() -> None:
    x = np.random.default_rng(1).random(2_500_000).astype(np.float32)
    x64 = x.astype(np.float64)
    expected = ((x64 - x64.min()) / (x64.max() - x64.min())).astype(np.float32)
    np.testing.assert_array_equal(normalise(x, "minmax").view(np.int32), expected.view(np.int32))


def test_scan_holds_narrow_labels_and_no_ids_when_ids_are_rows(tables_dir: dict[str, Path]) -> None:
    dense = scan_factor_tables(tables_dir["labelled"], ("R", "D"))
    tables = read_factor_tables(tables_dir["labelled"])
    assert dense.ids is None and dense.labels is not None and dense.labels.dtype == np.uint8
    np.testing.assert_array_equal(dense.labels, tables.samples.labels)
    r, d = kernels.factor_scores(tables.samples.units, tables.samples.acts, tables.units.frequency.astype(np.float32))
    np.testing.assert_array_equal(dense.representativeness, reference_rank(r))
    np.testing.assert_array_equal(dense.rarity, reference_rank(d))
    permuted = scan_factor_tables(tables_dir["permuted-ids"])
    np.testing.assert_array_equal(
        permuted.ids, read_factor_tables(tables_dir["permuted-ids"]).samples.ids
    )  # dense but not the rows
    assert permuted.representativeness is None and permuted.id_fields()["ids_dense"] is True
    assert scan_factor_tables(tables_dir["sparse-ids"]).labels is None


def test_wide_labels_widen_the_column(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 200_000  # several scan batches; a label > 255 first appears in the last one
    labels = rng.integers(0, 3, n).astype(np.int64)
    labels[-1] = 300
    units = rng.integers(0, 8, (n, 1)).astype(np.int32)
    acts = np.ones((n, 1), np.float32)
    with atomic_directory(tmp_path / "f") as tmp:
        write_factor_tables(
            tmp, SampleFactors(np.arange(n), labels, units, acts), unit_statistics(units, acts, 8, labels), {}
        )
    scanned = scan_factor_tables(tmp_path / "f")
    assert scanned.labels is not None and scanned.labels.dtype == np.uint16
    np.testing.assert_array_equal(scanned.labels, labels)


@pytest.mark.parametrize(
    "values",
    [
        np.array([0, 1, 9, 10, 99, 100, 4294967295], dtype=np.uint32),
        np.array([0, 2**32, 2**63 - 1, 10**18, 7], dtype=np.int64),
        np.array([-5, 3, 0], dtype=np.int64),
        np.random.default_rng(0).integers(0, 2**31, 2_100_000),
        np.zeros(0, dtype=np.int64),
    ],
)
def test_decimal_blocks_match_str(values: np.ndarray) -> None:
    for terminator in (b"\n", b" "):
        expected = "".join(f"{v}{terminator.decode()}" for v in values.tolist()).encode()
        assert b"".join(decimal_blocks(values, terminator)) == expected


def test_plan_writer_matches_one_shot_files_across_row_groups(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    epochs = [rng.permutation(2_000_000)[:c] for c in (1_048_000, 700, 1_500_000)]  # row groups straddle epochs
    weights = [rng.random(len(e)).astype(np.float32) for e in epochs]
    with atomic_directory(tmp_path / "p") as tmp:
        manifest = write_plan(tmp, epochs, 2_000_000, 32, 1, False, {}, weights=weights, formats=FORMATS)
    expected = reference_files(epochs, "<u4")
    for name in ("indices.bin", "offsets.bin", "indices.npy", "offsets.npy", "epochs/epoch-0001.txt"):
        assert (tmp_path / "p" / name).read_bytes() == expected[name], name
    assert (tmp_path / "p" / "weights.bin").read_bytes() == np.concatenate(weights).astype("<f4").tobytes()
    table = pa.table(
        {
            "epoch": pa.array(np.repeat(np.arange(3, dtype=np.int32), [len(e) for e in epochs])),
            "position": pa.array(np.concatenate([np.arange(len(e), dtype=np.int64) for e in epochs])),
            "index": pa.array(np.concatenate(epochs).astype(np.int64)),
            "weight": pa.array(np.concatenate(weights)),
        }
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    assert (tmp_path / "p" / "plan.parquet").read_bytes() == buffer.getvalue()
    for name, entry in manifest["files"].items():  # sizes and sha256s computed while writing
        data = (tmp_path / "p" / name).read_bytes()
        assert entry == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}, name


def test_chunked_sample_table_has_the_bytes_of_one_write(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n, k = 1_100_000, 2
    samples = SampleFactors(
        np.arange(n),
        rng.integers(0, 4, n),
        rng.integers(0, 9, (n, k)).astype(np.int32),
        rng.random((n, k), dtype=np.float32),
    )
    table = pa.table(
        {
            "id": pa.array(samples.ids, pa.int64()),
            "label": pa.array(samples.labels, pa.int64()),
            "units": pa.FixedSizeListArray.from_arrays(pa.array(samples.units.ravel()), k),
            "acts": pa.FixedSizeListArray.from_arrays(pa.array(samples.acts.ravel()), k),
        }
    )
    pq.write_table(table, tmp_path / "one.parquet", compression="zstd")
    writer = SampleTableWriter(tmp_path / "chunked.parquet", k, has_labels=True)
    for start in range(0, n, 300_007):
        stop = min(n, start + 300_007)
        writer.add(
            SampleFactors(
                samples.ids[start:stop], samples.labels[start:stop], samples.units[start:stop], samples.acts[start:stop]
            )
        )
    assert writer.close() == {"id_min": 0, "id_max": n - 1, "ids_dense": True}
    assert (tmp_path / "chunked.parquet").read_bytes() == (tmp_path / "one.parquet").read_bytes()
