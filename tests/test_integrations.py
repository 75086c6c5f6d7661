"""PyTorch adapters of plans: dynsel_cli.integrations.torch."""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import write_random_plan
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from dynsel_cli.formats.plan import Plan, steps_for
from dynsel_cli.integrations import torch as dt
from dynsel_cli.integrations.torch import PlanBatchSampler, PlanSampler, PlanUsageError, steps_per_epoch, total_steps

N_SAMPLES = 100
COUNTS = (10, 7, 1, 0, 12, 5)  # includes an empty epoch and one shorter than any world size


def make_plan(root: Path, counts: Sequence[int] = COUNTS, **options: Any) -> Plan:
    """A plan of random epochs over range(N_SAMPLES) (options: batch_size, world_size, drop_last, weights, name, seed)."""
    return write_random_plan(root, counts, N_SAMPLES, ratio=0.1, **options)


@pytest.fixture(scope="module")
def plan(tmp_path_factory: pytest.TempPathFactory) -> Plan:
    return make_plan(tmp_path_factory.mktemp("plan"))


def test_world_size_one_yields_each_epoch_in_plan_order(plan: Plan) -> None:
    sampler = PlanSampler(plan)
    assert (sampler.rank, sampler.world_size, sampler.drop_last) == (0, 1, False)
    for e in range(plan.n_epochs):
        sampler.set_epoch(e)
        got = list(sampler)
        assert got == plan.epochs[e].tolist()
        assert len(sampler) == len(got) == COUNTS[e]
        assert all(type(i) is int for i in got)
    # the default epoch is 0, and a path works as well as a Plan
    assert list(PlanSampler(str(plan.path))) == plan.epochs[0].tolist()


@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("drop_last", [False, True])
def test_ranks_cut_like_distributed_sampler(plan: Plan, world_size: int, drop_last: bool) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # plan made for world_size 1
        samplers = [PlanSampler(plan, rank=r, world_size=world_size, drop_last=drop_last) for r in range(world_size)]
    for e in range(plan.n_epochs):
        ids = plan.epochs[e]
        shares = []
        for r, sampler in enumerate(samplers):
            sampler.set_epoch(e)
            share = list(sampler)
            oracle = DistributedSampler(
                range(len(ids)),
                num_replicas=world_size,
                rank=r,
                shuffle=False,
                drop_last=drop_last,  # type: ignore[arg-type]
            )
            assert share == [int(ids[p]) for p in oracle], (e, r)
            assert len(sampler) == len(oracle) == len(share)
            shares.append(share)
        flat = [i for share in shares for i in share]
        n = len(ids)
        if drop_last:
            kept = n // world_size * world_size
            assert sorted(flat) == sorted(ids[:kept].tolist())  # disjoint, tail dropped
        elif n % world_size == 0:
            assert sorted(flat) == sorted(ids.tolist())  # a partition of the epoch
        else:
            total = -(-n // world_size) * world_size
            assert set(flat) == set(ids.tolist())  # union is the epoch
            padding = np.resize(ids, total)[n:] if n else np.zeros(0, np.int64)
            assert sorted(flat) == sorted(ids.tolist() + padding.tolist())  # only the wrapped ids repeat
            assert len({len(s) for s in shares}) == 1  # every rank takes the same number of steps


def test_padding_longer_than_epoch_wraps_cyclically(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, counts=(2,), world_size=5)
    ids = plan.epochs[0].tolist()
    shares = [list(PlanSampler(plan, rank=r, world_size=5)) for r in range(5)]
    assert shares == [[ids[0]], [ids[1]], [ids[0]], [ids[1]], [ids[0]]]
    assert [list(PlanSampler(plan, rank=r, world_size=5, drop_last=True)) for r in range(5)] == [[]] * 5


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("drop_last", [False, True])
def test_batch_sampler_length_is_manifest_steps(tmp_path: Path, world_size: int, drop_last: bool) -> None:
    counts = (0, 1, 5, 12, 13, 31, 64)
    for batch_size in (1, 3, 4, 7):
        plan = make_plan(
            tmp_path, counts, batch_size=batch_size, world_size=world_size, drop_last=drop_last, name=f"p{batch_size}"
        )
        manifest = plan.manifest
        assert steps_per_epoch(plan, world_size=world_size) == manifest["steps_per_epoch"]
        assert steps_per_epoch(plan.path, world_size=world_size) == manifest["steps_per_epoch"]
        assert total_steps(plan, world_size=world_size) == manifest["total_steps"] == sum(manifest["steps_per_epoch"])
        for r in range(world_size):
            batches = PlanBatchSampler(plan, rank=r, world_size=world_size)
            assert (batches.batch_size, batches.drop_last) == (batch_size, drop_last)
            for e, count in enumerate(counts):
                batches.set_epoch(e)
                got = list(batches)
                expected = manifest["steps_per_epoch"][e]
                assert expected == steps_for(count, batch_size, world_size, drop_last)
                assert len(batches) == len(got) == expected, (batch_size, r, e)
                assert all(len(b) == batch_size for b in got[:-1])
                if drop_last and got:
                    assert len(got[-1]) == batch_size
                flat = [i for b in got for i in b]
                sampler = PlanSampler(plan, rank=r, world_size=world_size)
                sampler.set_epoch(e)
                share = list(sampler)
                assert flat == (share[: len(share) // batch_size * batch_size] if drop_last else share)


def test_step_counts_default_to_the_samplers_world_size(tmp_path: Path) -> None:
    # Without a process group the samplers read a plan as one process, whatever world size it was made
    # for; the step counts must count what they yield, not the manifest's (the torchrun case is in
    # tests/test_trainers.py).
    plan = make_plan(tmp_path, (11, 7, 1, 12), batch_size=2, world_size=2)
    with pytest.warns(UserWarning, match="total_steps"):
        batches = PlanBatchSampler(plan)
    lengths = []
    for e in range(plan.n_epochs):
        batches.set_epoch(e)
        lengths.append(len(list(batches)))
    assert lengths == [6, 4, 1, 6] != plan.manifest["steps_per_epoch"] == [3, 2, 1, 3]
    assert steps_per_epoch(plan) == lengths
    assert total_steps(plan) == sum(lengths) == 17
    assert total_steps(plan, world_size=2) == plan.manifest["total_steps"] == 9


def test_step_overrides_match_batch_sampler_lengths(plan: Plan) -> None:
    for batch_size, world_size, drop_last in [(5, 1, False), (3, 2, True), (2, 3, False), (4, 1, True)]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            batches = PlanBatchSampler(plan, batch_size, drop_last, rank=0, world_size=world_size)
        lengths = []
        for e in range(plan.n_epochs):
            batches.set_epoch(e)
            lengths.append(len(batches))
        assert steps_per_epoch(plan, batch_size, world_size, drop_last) == lengths
        assert total_steps(plan, batch_size, world_size, drop_last) == sum(lengths)


def test_sampler_resumes_mid_epoch(plan: Plan) -> None:
    sampler = PlanSampler(plan)
    sampler.set_epoch(4)
    full = list(sampler)
    sampler.set_epoch(4)
    it = iter(sampler)
    head = [next(it) for _ in range(5)]
    state = sampler.state_dict()
    assert state["epoch"] == 4 and state["consumed"] == 5
    state = json.loads(json.dumps(state))  # plain, JSON-able (goes into any checkpoint)

    fresh = PlanSampler(plan)
    fresh.load_state_dict(state)
    assert fresh.remaining == len(full) - 5 and len(fresh) == len(full)
    assert fresh.state_dict() == state
    fresh.set_epoch(4)  # the usual loop calls set_epoch(start_epoch) first: keeps the restored position
    assert head + list(fresh) == full
    fresh.set_epoch(4)  # after the resumed pass, the epoch starts over
    assert list(fresh) == full
    assert fresh.state_dict()["consumed"] == len(full)

    other = PlanSampler(plan)
    other.load_state_dict(state)
    other.set_epoch(5)  # moving to another epoch drops the resume
    assert list(other) == plan.epochs[5].tolist()


@pytest.mark.parametrize("rank", [0, 1])
def test_batch_sampler_resumes_at_batch_granularity(tmp_path: Path, rank: int) -> None:
    plan = make_plan(tmp_path, counts=(9, 23, 17), batch_size=3, world_size=2)
    batches = PlanBatchSampler(plan, rank=rank, world_size=2)
    batches.set_epoch(1)
    full = list(batches)
    it = iter(batches)
    head = [next(it) for _ in range(2)]
    state = batches.state_dict()
    assert (state["epoch"], state["batches"], state["consumed"], state["batch_size"]) == (1, 2, 6, 3)
    resumed = PlanBatchSampler(plan, rank=rank, world_size=2)
    resumed.load_state_dict(state)
    resumed.set_epoch(1)
    assert head + list(resumed) == full
    # a state saved on rank 0 by step count alone resumes every rank
    by_steps = PlanBatchSampler(plan, rank=rank, world_size=2)
    by_steps.load_state_dict({"epoch": 1, "batches": 3})
    assert list(by_steps) == full[3:]
    # an explicit step count (prefetching DataLoader) overrides what the sampler handed out
    assert batches.state_dict(batches=1)["consumed"] == 3
    # finished epoch: resuming yields nothing more of it
    done = PlanBatchSampler(plan, rank=rank, world_size=2)
    done.set_epoch(1)
    list(done)
    finished = PlanBatchSampler(plan, rank=rank, world_size=2)
    finished.load_state_dict(done.state_dict())
    assert list(finished) == []


def test_bad_states_are_refused(tmp_path: Path, plan: Plan) -> None:
    other = make_plan(tmp_path, counts=(3, 3), name="other", seed=7)
    with pytest.raises(ValueError, match="another plan"):
        PlanSampler(plan).load_state_dict(PlanSampler(other).state_dict())
    with pytest.raises(ValueError, match="world_size"):
        PlanSampler(plan).load_state_dict({**PlanSampler(plan).state_dict(), "world_size": 2})
    with pytest.raises(ValueError, match="only 10"):
        PlanSampler(plan).load_state_dict({"epoch": 0, "consumed": 11})
    with pytest.raises(ValueError, match="6 epoch"):
        PlanSampler(plan).load_state_dict({"epoch": 6, "consumed": 0})


def test_epochs_outside_the_plan_error(plan: Plan, tmp_path: Path) -> None:
    sampler = PlanSampler(plan)
    batches = PlanBatchSampler(plan)
    for bad in (6, 100, -1):
        with pytest.raises(ValueError, match=r"has 6 epoch\(s\)"):
            sampler.set_epoch(bad)
        with pytest.raises(PlanUsageError, match="6 epoch"):
            batches.set_epoch(bad)
    assert sampler.epoch == 0  # unchanged by the failed calls
    empty = make_plan(tmp_path, counts=(), name="empty")
    with pytest.raises(ValueError, match="0 epoch"):
        list(PlanSampler(empty))
    with pytest.raises(ValueError, match="rank 2 is not below world_size 2"):
        PlanSampler(plan, rank=2, world_size=2)


def test_defaults_come_from_torch_distributed(plan: Plan, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dt.dist, "is_available", lambda: True)
    monkeypatch.setattr(dt.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dt.dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dt.dist, "get_world_size", lambda: 2)
    with pytest.warns(UserWarning, match="world_size 1 but is read with world_size 2"):
        sampler = PlanSampler(plan)
    assert (sampler.rank, sampler.world_size) == (1, 2)
    assert list(sampler) == plan.epochs[0].tolist()[1::2]


def test_weights_follow_the_rank_share(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, counts=(7, 4), weights=True, world_size=2)
    for r in range(2):
        sampler = PlanSampler(plan, rank=r, world_size=2)
        ids, weights = sampler.rank_indices(0), sampler.rank_weights(0)
        assert weights is not None and weights.dtype == np.float32 and len(weights) == len(ids)
        lookup = dict(zip(plan.epochs[0].tolist(), plan.epoch_weights(0).tolist()))  # type: ignore[union-attr]
        assert weights.tolist() == [lookup[i] for i in ids.tolist()]
    assert PlanSampler(make_plan(tmp_path, counts=(3,), name="nw")).rank_weights() is None


@pytest.mark.parametrize("num_workers", [0, 2])
def test_real_dataloader_over_tensor_dataset(plan: Plan, num_workers: int) -> None:
    features = torch.arange(N_SAMPLES, dtype=torch.float32).unsqueeze(1) * 10
    labels = torch.arange(N_SAMPLES)
    batches = PlanBatchSampler(plan)
    loader = DataLoader(TensorDataset(features, labels), batch_sampler=batches, num_workers=num_workers)
    assert len(loader) == plan.manifest["steps_per_epoch"][0]
    steps = 0
    for e in range(plan.n_epochs):
        batches.set_epoch(e)
        seen = []
        for x, y in loader:
            assert torch.equal(x[:, 0], y.float() * 10)
            seen += y.tolist()
            steps += 1
        assert seen == plan.epochs[e].tolist()
    assert steps == total_steps(plan)

    # a plain sampler works too, with the DataLoader doing the batching
    sampler = PlanSampler(plan)
    sampler.set_epoch(4)
    loader = DataLoader(TensorDataset(labels), sampler=sampler, batch_size=5)
    assert torch.cat([b for (b,) in loader]).tolist() == plan.epochs[4].tolist()


def _tested_blocks(markdown: str) -> list[str]:
    """The ```python blocks of a Markdown file that follow a ``<!-- tested`` comment, in order."""
    blocks = []
    lines = markdown.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("<!-- tested") and i + 1 < len(lines) and lines[i + 1] == "```python":
            end = lines.index("```", i + 2)
            blocks.append("\n".join(lines[i + 2 : end]))
    return blocks


def test_consumers_doc_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = Path(__file__).resolve().parent.parent / "docs" / "consumers.md"
    blocks = _tested_blocks(docs.read_text(encoding="utf-8"))
    assert len(blocks) == 5  # training loop, checkpoint, weights, numpy, pyarrow
    plan = make_plan(tmp_path, counts=(40, 37, 100), batch_size=8, weights=True)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    for block in blocks:
        exec(compile(block, str(docs), "exec"), namespace)
    # the training loop took exactly the manifest's steps (OneCycleLR would have raised past them)
    assert namespace["scheduler"].last_epoch == plan.manifest["total_steps"]  # type: ignore[attr-defined]
    assert namespace["ids"].tolist() == plan.epochs[1].tolist()  # type: ignore[attr-defined]
    with pytest.warns(UserWarning, match="made for world_size 1"):
        rank0 = PlanSampler(plan, rank=0, world_size=2)
    rank0.set_epoch(1)
    assert namespace["share"].tolist() == list(rank0)  # type: ignore[attr-defined]
