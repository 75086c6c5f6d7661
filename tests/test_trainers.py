"""Plans in real trainers: transformers.Trainer, PyTorch Lightning, and torchrun data-parallel processes.

Each test trains a tiny model on random tensors whose data set also hands out the sample id, records the
ids the trainer actually fed in each epoch, and compares them with the plan: epoch e must be plan epoch e
(this rank's DistributedSampler-style share of it), in plan order, with the plan's step counts.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from conftest import invoke, sparse_dictionary_data, write_features_dir, write_random_plan
from torch.utils.data import Dataset, DistributedSampler, TensorDataset

from dynsel_cli.config import FactorsConfig, SaeConfig
from dynsel_cli.factors import build_factor_tables
from dynsel_cli.formats.plan import Plan, read_plan
from dynsel_cli.integrations.torch import PlanUsageError, steps_per_epoch, total_steps
from dynsel_cli.sae import fit_sae

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "consumers.md"
N_SAMPLES = 60
COUNTS = (10, 7, 1, 12, 5)  # unequal epochs, one shorter than a batch
COUNTS_WITH_EMPTY = (10, 7, 0, 12, 5)


def make_plan(root: Path, counts: Sequence[int] = COUNTS, **options: Any) -> Plan:
    """A plan of random epochs over range(N_SAMPLES) (options: batch_size, world_size, drop_last, weights, name, seed)."""
    return write_random_plan(root, counts, N_SAMPLES, ratio=0.2, **options)


def doc_block(name: str) -> str:
    """The ```python block of docs/consumers.md after the ``<!-- trainer-tested: NAME`` comment."""
    lines = DOCS.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if line.startswith(f"<!-- trainer-tested: {name}") and lines[i + 1] == "```python":
            return "\n".join(lines[i + 2 : lines.index("```", i + 2)])
    raise AssertionError(f"no '<!-- trainer-tested: {name}' block in {DOCS}")


def run_doc_block(name: str, plan: Plan, directory: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    assert plan.path == directory / "plan"
    monkeypatch.chdir(directory)
    namespace: dict[str, Any] = {"__name__": f"consumers_md_{name}"}
    exec(compile(doc_block(name), str(DOCS), "exec"), namespace)
    return namespace


def shares(plan: Plan, world_size: int, drop_last: bool) -> list[list[list[int]]]:
    """[rank][epoch] -> the ids DistributedSampler(shuffle=False) gives that rank, as plan ids."""
    out = []
    for rank in range(world_size):
        per_epoch = []
        for ids in plan.epochs:
            oracle = DistributedSampler(
                range(len(ids)),
                num_replicas=world_size,
                rank=rank,
                shuffle=False,
                drop_last=drop_last,  # type: ignore[arg-type]
            )
            per_epoch.append([int(ids[p]) for p in oracle])
        out.append(per_epoch)
    return out


def features(n: int = N_SAMPLES) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)


# -- transformers.Trainer ------------------------------------------------------------------------------


class IdDataset(Dataset):
    """Map-style data set indexed by sample id; items carry their id so the model can record it."""

    def __init__(self, n: int = N_SAMPLES) -> None:
        self.x, self.y = features(n)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, sample_id: int) -> dict[str, Any]:
        return {"x": self.x[sample_id], "labels": self.y[sample_id], "sample_id": sample_id}


@functools.cache
def hf() -> SimpleNamespace:
    """The transformers adapter and test classes; skips the calling test without transformers/accelerate."""
    pytest.importorskip("transformers", reason="transformers is in the test extra")
    pytest.importorskip("accelerate", reason="transformers.Trainer needs accelerate (in the test extra)")
    from transformers import TrainerCallback

    from dynsel_cli.integrations.transformers import PlanTrainer, plan_training_arguments

    class EpochRecorder(TrainerCallback):
        """ids[e]: the ids the model's forward saw in the e-th epoch Trainer ran; steps[e]: optimizer steps."""

        def __init__(self) -> None:
            self.ids: list[list[int]] = []
            self.steps: list[int] = []

        def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.ids.append([])
            self.steps.append(0)

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.steps[-1] += 1

    class RecordingClassifier(torch.nn.Module):
        def __init__(self, recorder: EpochRecorder) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.linear = torch.nn.Linear(4, 3)
            self.recorder = recorder

        def forward(self, x: torch.Tensor, labels: torch.Tensor, sample_id: torch.Tensor) -> dict[str, torch.Tensor]:
            if self.training:
                self.recorder.ids[-1].extend(sample_id.tolist())
            logits = self.linear(x)
            return {"loss": torch.nn.functional.cross_entropy(logits, labels), "logits": logits}

    return SimpleNamespace(
        PlanTrainer=PlanTrainer,
        plan_training_arguments=plan_training_arguments,
        EpochRecorder=EpochRecorder,
        RecordingClassifier=RecordingClassifier,
    )


def hf_trainer(plan: Plan, out: Path, recorder: Any, **kwargs: Any) -> Any:
    settings = {
        "output_dir": str(out),
        "use_cpu": True,
        "report_to": [],
        "save_strategy": "no",
        "logging_strategy": "no",
        "disable_tqdm": True,
        "learning_rate": 0.05,
        **kwargs,
    }
    args = hf().plan_training_arguments(plan, **settings)
    return hf().PlanTrainer(
        model=hf().RecordingClassifier(recorder), args=args, train_dataset=IdDataset(), callbacks=[recorder], plan=plan
    )


def test_hf_trainer_feeds_each_plan_epoch_in_order(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, COUNTS_WITH_EMPTY)
    recorder = hf().EpochRecorder()
    trainer = hf_trainer(plan, tmp_path / "out", recorder)
    trainer.train()
    assert recorder.ids == [ids.tolist() for ids in plan.epochs]  # the empty epoch is passed over, not the end
    assert recorder.steps == plan.manifest["steps_per_epoch"] == trainer.plan_batches_per_epoch
    assert trainer.state.global_step == trainer.state.max_steps == total_steps(plan) == plan.manifest["total_steps"]
    assert trainer.lr_scheduler.last_epoch == total_steps(plan)  # the schedule spans exactly the plan's steps
    assert trainer.state.epoch == pytest.approx(plan.n_epochs)


def test_hf_trainer_gradient_accumulation_and_fewer_epochs(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, COUNTS, batch_size=2)
    recorder = hf().EpochRecorder()
    trainer = hf_trainer(plan, tmp_path / "out", recorder, gradient_accumulation_steps=2, num_train_epochs=4)
    trainer.train()
    batches = steps_per_epoch(plan)[:4]  # 5, 4, 1, 6 batches of 2
    assert recorder.ids == [plan.epochs[e].tolist() for e in range(4)]
    assert recorder.steps == [math.ceil(b / 2) for b in batches] == [3, 2, 1, 3]  # each epoch ends on a step
    assert trainer.state.global_step == trainer.state.max_steps == 9


def test_hf_trainer_resumes_mid_epoch_from_a_checkpoint(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, COUNTS_WITH_EMPTY)  # steps per epoch 3, 2, 0, 3, 2
    out = tmp_path / "out"
    full = hf().EpochRecorder()
    first = hf_trainer(plan, out, full, save_strategy="steps", save_steps=7)  # step 7: 2 of epoch 3's 3 steps
    first.train()
    assert (out / "checkpoint-7").is_dir()
    resumed_rec = hf().EpochRecorder()
    resumed = hf_trainer(plan, out, resumed_rec)
    resumed.train(resume_from_checkpoint=str(out / "checkpoint-7"))
    assert resumed_rec.ids == [plan.epochs[3][8:].tolist(), plan.epochs[4].tolist()]
    assert resumed.state.global_step == plan.manifest["total_steps"]
    for a, b in zip(first.model.parameters(), resumed.model.parameters()):
        torch.testing.assert_close(a, b)  # the resumed run ends where the uninterrupted one did


def test_hf_trainer_refuses_settings_the_plan_cannot_serve(tmp_path: Path) -> None:
    plan = make_plan(tmp_path)
    bad: list[tuple[dict[str, Any], str]] = [
        ({"max_steps": 5}, "max_steps=5"),
        ({"num_train_epochs": 6}, "num_train_epochs=6"),
        ({"num_train_epochs": 2.5}, "whole number"),
        ({"train_sampling_strategy": "group_by_length"}, "reorders"),
    ]
    for kwargs, message in bad:
        with pytest.raises(PlanUsageError, match=message):
            hf_trainer(plan, tmp_path / "out", hf().EpochRecorder(), **kwargs)


def test_hf_consumers_doc_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = make_plan(tmp_path, (40, 37, 64), batch_size=8)
    namespace = run_doc_block("transformers", plan, tmp_path, monkeypatch)
    trainer = namespace["trainer"]
    assert trainer.state.global_step == plan.manifest["total_steps"] == 5 + 5 + 8


# -- PyTorch Lightning ---------------------------------------------------------------------------------


@functools.cache
def lightning() -> SimpleNamespace:
    """lightning.pytorch, the Lightning adapter and a recording module; skips the calling test without lightning."""
    pl = pytest.importorskip("lightning.pytorch", reason="lightning is in the test extra")
    from dynsel_cli.integrations.lightning import PlanDataModule

    class RecordingModule(pl.LightningModule):
        """Records the ids of each epoch's batches; steps an OneCycleLR that raises past the plan's steps."""

        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.linear = torch.nn.Linear(4, 3)
            self.seen: list[list[int]] = []

        def on_train_epoch_start(self) -> None:
            self.seen.append([])

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y, sample_id = batch
            self.seen[-1].extend(sample_id.tolist())
            return torch.nn.functional.cross_entropy(self.linear(x), y)

        def configure_optimizers(self) -> Any:
            optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
            trainer = self.trainer
            steps = trainer.datamodule.total_steps(trainer.max_epochs, trainer.accumulate_grad_batches)
            scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=steps)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    return SimpleNamespace(pl=pl, PlanDataModule=PlanDataModule, RecordingModule=RecordingModule)


def id_tensors() -> TensorDataset:
    x, y = features()
    return TensorDataset(x, y, torch.arange(N_SAMPLES))


def pl_trainer(plan: Plan, **kwargs: Any) -> Any:
    settings = {
        "max_epochs": plan.n_epochs,
        "reload_dataloaders_every_n_epochs": 1,
        "use_distributed_sampler": False,
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        **kwargs,
    }
    return lightning().pl.Trainer(**settings)


@pytest.mark.parametrize("accumulate", [1, 2])
def test_lightning_datamodule_feeds_each_plan_epoch_in_order(tmp_path: Path, accumulate: int) -> None:
    plan = make_plan(tmp_path, COUNTS, batch_size=2)
    module, datamodule = lightning().RecordingModule(), lightning().PlanDataModule(plan, id_tensors())
    trainer = pl_trainer(plan, accumulate_grad_batches=accumulate)
    trainer.fit(module, datamodule=datamodule)
    assert module.seen == [ids.tolist() for ids in plan.epochs]
    expected = sum(math.ceil(s / accumulate) for s in plan.manifest["steps_per_epoch"])
    assert trainer.global_step == datamodule.total_steps(plan.n_epochs, accumulate) == expected
    if accumulate == 1:
        assert expected == plan.manifest["total_steps"]


def test_lightning_resumes_from_an_end_of_epoch_checkpoint(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, COUNTS)
    checkpoints = lightning().pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1)
    first = lightning().RecordingModule()
    pl_trainer(plan, enable_checkpointing=True, callbacks=[checkpoints]).fit(
        first, datamodule=lightning().PlanDataModule(plan, id_tensors())
    )
    after_epoch_1 = sorted((tmp_path / "ckpt").glob("epoch=1-*.ckpt"))
    assert len(after_epoch_1) == 1
    resumed = lightning().RecordingModule()
    trainer = pl_trainer(plan)
    trainer.fit(resumed, datamodule=lightning().PlanDataModule(plan, id_tensors()), ckpt_path=after_epoch_1[0])
    assert resumed.seen == [plan.epochs[e].tolist() for e in range(2, plan.n_epochs)]
    assert trainer.global_step == plan.manifest["total_steps"]


def test_lightning_refuses_settings_the_plan_cannot_serve(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, COUNTS)
    for kwargs, message in [
        ({"reload_dataloaders_every_n_epochs": 0}, "reload_dataloaders_every_n_epochs=1"),
        ({"max_epochs": 6}, "max_epochs=6"),
    ]:
        with pytest.raises(PlanUsageError, match=message):
            pl_trainer(plan, **kwargs).fit(
                lightning().RecordingModule(), datamodule=lightning().PlanDataModule(plan, id_tensors())
            )
    empty = make_plan(tmp_path, COUNTS_WITH_EMPTY, name="with-empty")
    with pytest.raises(PlanUsageError, match=r"epoch\(s\) \[2\] have no batch"):
        pl_trainer(empty).fit(lightning().RecordingModule(), datamodule=lightning().PlanDataModule(empty, id_tensors()))
    with pytest.raises(PlanUsageError, match="the plan decides sampler, shuffle"):
        lightning().PlanDataModule(plan, id_tensors(), shuffle=True, sampler=None)


def test_lightning_consumers_doc_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = make_plan(tmp_path, (40, 37, 64), batch_size=8)
    namespace = run_doc_block("lightning", plan, tmp_path, monkeypatch)
    assert namespace["trainer"].global_step == plan.manifest["total_steps"]  # OneCycleLR raises past it


# -- torchrun ------------------------------------------------------------------------------------------

# Each script trains on the plans given as arguments and writes OUT/<name>-rank-<r>.json:
# {"world_size", "epochs": [[ids fed in epoch e]], "steps": [optimizer steps in epoch e]}.

# torch 2.13's gloo backend sometimes aborts a DDP process at interpreter exit, after
# destroy_process_group and after all work is done ("terminate called without an active exception",
# SIGABRT; about 1 run in 10 on a busy 2-core machine, also with a bare all-reduce + DDP script). The
# scripts therefore leave without interpreter finalization once every rank has written its results.
EXIT = """
import os, sys, torch.distributed
if torch.distributed.is_initialized():
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)
"""

PLAIN_SCRIPT = (
    """
import json, sys
from pathlib import Path
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, TensorDataset
from dynsel_cli.formats.plan import read_plan
from dynsel_cli.integrations.torch import PlanBatchSampler, total_steps

torch.set_num_threads(1)
dist.init_process_group("gloo")
rank, world_size = dist.get_rank(), dist.get_world_size()
out = Path(sys.argv[1])
for plan_dir in sys.argv[2:]:
    plan = read_plan(plan_dir)
    torch.manual_seed(0)
    dataset = TensorDataset(torch.randn(plan.n_samples, 4), torch.randint(0, 3, (plan.n_samples,)), torch.arange(plan.n_samples))
    batches = PlanBatchSampler(plan)  # rank and world size from torch.distributed
    loader = DataLoader(dataset, batch_sampler=batches)
    model = DistributedDataParallel(torch.nn.Linear(4, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=max(1, total_steps(plan)))
    seen, steps = [], []
    for epoch in range(plan.n_epochs):
        batches.set_epoch(epoch)
        seen.append([])
        steps.append(0)
        for x, y, sample_id in loader:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()  # an all-reduce: ranks with different step counts would hang here
            optimizer.step()
            scheduler.step()
            seen[-1].extend(sample_id.tolist())
            steps[-1] += 1
    name = Path(plan_dir).name
    (out / f"{name}-rank-{rank}.json").write_text(json.dumps({"world_size": world_size, "epochs": seen, "steps": steps}))
dist.destroy_process_group()
"""
    + EXIT
)

HF_SCRIPT = (
    """
import json, sys
from pathlib import Path
import torch
from torch.utils.data import Dataset
from transformers import TrainerCallback
from dynsel_cli.formats.plan import read_plan
from dynsel_cli.integrations.transformers import PlanTrainer, plan_training_arguments

torch.set_num_threads(1)
out, plan = Path(sys.argv[1]), read_plan(sys.argv[2])

class Recorder(TrainerCallback):
    def __init__(self):
        self.epochs, self.steps = [], []
    def on_epoch_begin(self, args, state, control, **kwargs):
        self.epochs.append([])
        self.steps.append(0)
    def on_step_end(self, args, state, control, **kwargs):
        self.steps[-1] += 1

class Model(torch.nn.Module):
    def __init__(self, recorder):
        super().__init__()
        self.linear, self.recorder = torch.nn.Linear(4, 3), recorder
    def forward(self, x, labels, sample_id):
        self.recorder.epochs[-1].extend(sample_id.tolist())
        logits = self.linear(x)
        return {"loss": torch.nn.functional.cross_entropy(logits, labels), "logits": logits}

class Data(Dataset):
    def __init__(self, n):
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)
    def __len__(self):
        return len(self.x)
    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.y[i], "sample_id": i}

recorder = Recorder()
args = plan_training_arguments(plan, output_dir=str(out / "hf"), use_cpu=True, report_to=[], save_strategy="no",
                               logging_strategy="no", disable_tqdm=True)
trainer = PlanTrainer(model=Model(recorder), args=args, train_dataset=Data(plan.n_samples), callbacks=[recorder], plan=plan)
trainer.train()
assert type(trainer.model_wrapped).__name__ == "DistributedDataParallel"
(out / f"hf-rank-{args.process_index}.json").write_text(
    json.dumps({"world_size": args.world_size, "epochs": recorder.epochs, "steps": recorder.steps})
)
"""
    + EXIT
)

LIGHTNING_SCRIPT = (
    """
import json, sys
from pathlib import Path
import torch
from torch.utils.data import TensorDataset
import lightning.pytorch as pl
from dynsel_cli.formats.plan import read_plan
from dynsel_cli.integrations.lightning import PlanDataModule

torch.set_num_threads(1)
out, plan = Path(sys.argv[1]), read_plan(sys.argv[2])

class Module(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.linear, self.epochs, self.steps = torch.nn.Linear(4, 3), [], []
    def on_train_epoch_start(self):
        self.epochs.append([])
        self.steps.append(0)
    def training_step(self, batch, batch_idx):
        x, y, sample_id = batch
        self.epochs[-1].extend(sample_id.tolist())
        self.steps[-1] += 1
        return torch.nn.functional.cross_entropy(self.linear(x), y)
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

g = torch.Generator().manual_seed(0)
n = plan.n_samples
dataset = TensorDataset(torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g), torch.arange(n))
module = Module()
trainer = pl.Trainer(max_epochs=plan.n_epochs, reload_dataloaders_every_n_epochs=1, use_distributed_sampler=False,
                     accelerator="cpu", devices=2, strategy="ddp", logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False)
trainer.fit(module, datamodule=PlanDataModule(plan, dataset))
(out / f"lightning-rank-{trainer.global_rank}.json").write_text(
    json.dumps({"world_size": trainer.world_size, "epochs": module.epochs, "steps": module.steps})
)
"""
    + EXIT
)


def torchrun(script: str, tmp_path: Path, *args: str, timeout: float = 240) -> Path:
    """Run ``script`` in 2 CPU processes with torchrun (gloo); returns the directory it writes to."""
    path = tmp_path / "script.py"
    path.write_text(script, encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(path),
        str(out),
        *args,
    ]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return out


# The docs' torchrun recipe, as written, in 2 processes. The harness records, per rank, what the recipe
# trained: it runs at the recipe's os._exit (after its teardown), or when the block ends without one.
DOC_RECIPE_HARNESS = """
import json, os, sys
from pathlib import Path

out, block = Path(sys.argv[1]), Path(sys.argv[2]).read_text(encoding="utf-8")
namespace = {"__name__": "__main__"}
leave = os._exit

def record():
    if (out / f"recipe-rank-{os.environ['RANK']}.json").exists():
        return
    from dynsel_cli.integrations.torch import total_steps
    plan, batches, scheduler = namespace["plan"], namespace["batches"], namespace["scheduler"]
    lengths = []
    for epoch in range(plan.n_epochs):
        batches.set_epoch(epoch)
        lengths.append(sum(1 for _ in batches))
    result = {
        "world_size": batches.sampler.world_size,
        "scheduler_total": scheduler.total_steps,
        "steps_taken": scheduler.last_epoch,  # one scheduler.step() per batch
        "final_lr": scheduler.get_last_lr()[0],
        "batches_yielded": lengths,
        "total_steps_explicit": total_steps(plan, world_size=int(os.environ["WORLD_SIZE"])),
    }
    (out / f"recipe-rank-{os.environ['RANK']}.json").write_text(json.dumps(result))

def record_then_leave(code):
    record()
    leave(code)

os._exit = record_then_leave
exec(compile(block, "docs/consumers.md", "exec"), namespace)
record()
"""


@pytest.fixture(scope="module")
def cli_plans(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Plans made by `dynsel plan` over 401 samples: for one process (the default) and with --world-size 2."""
    root = tmp_path_factory.mktemp("cli-plans")
    write_features_dir(
        root / "features", sparse_dictionary_data(401, 16, 32), np.arange(401) % 3, classes=["a", "b", "c"]
    )
    fit_sae(root / "features", root / "sae", SaeConfig(width=32, k=3, epochs=3, batch_size=64, seed=0, device="cpu"))
    build_factor_tables(root / "features", root / "sae", root / "factors", FactorsConfig(device="cpu"))
    plans = {}
    for name, extra in (("one-process", ()), ("world-size-2", ("--world-size", "2"))):
        plans[name] = root / name
        args = ("--epochs", "4", "--full-epochs", "1", "--ratio", "0.5", "--batch-size", "16", "--seed", "0", *extra)
        result = invoke("plan", root / "factors", "--out", plans[name], *args)
        assert result.exit_code == 0, result.output
    return plans


@pytest.mark.parametrize("made_for", ["one-process", "world-size-2"])
def test_torchrun_recipe_schedules_the_steps_each_rank_takes(
    cli_plans: dict[str, Path], made_for: str, tmp_path: Path
) -> None:
    shutil.copytree(cli_plans[made_for], tmp_path / "plan")
    plan = read_plan(tmp_path / "plan")
    assert plan.manifest["world_size"] == (1 if made_for == "one-process" else 2)
    (tmp_path / "recipe.py").write_text(doc_block("torchrun"), encoding="utf-8")
    out = torchrun(DOC_RECIPE_HARNESS, tmp_path, str(tmp_path / "recipe.py"))  # asserts both processes exit 0
    # 201 ids in the ratio-0.5 epochs, 401 in the full one: 101 and 201 per rank, batches of 16
    per_rank = [math.ceil(math.ceil(int(c) / 2) / 16) for c in plan.counts]
    assert per_rank == [7, 7, 7, 13]
    for rank in range(2):
        result = json.loads((out / f"recipe-rank-{rank}.json").read_text())
        assert result["world_size"] == 2
        assert result["batches_yielded"] == per_rank
        assert result["scheduler_total"] == result["steps_taken"] == result["total_steps_explicit"] == sum(per_rank)
        assert result["final_lr"] < 1e-3  # annealed to about 0 (max_lr 0.1), not stopped halfway down the cycle
    if made_for == "one-process":
        assert plan.manifest["total_steps"] == sum(math.ceil(int(c) / 16) for c in plan.counts) != sum(per_rank)
    else:
        assert plan.manifest["total_steps"] == sum(per_rank)


def check_rank_shares(plan: Plan, out: Path, name: str, drop_last: bool) -> None:
    """Every rank got its DistributedSampler share of every epoch, in plan order, with the manifest's steps;
    together the shares are the epoch (plus wrap-around padding; with drop_last, minus the ranks' uneven
    tail and each rank's partial last batch: the manifest's meaning of drop_last)."""
    world_size, batch_size = 2, int(plan.manifest["batch_size"])
    assert int(plan.manifest["world_size"]) == world_size and bool(plan.manifest["drop_last"]) == drop_last
    results = [json.loads((out / f"{name}-rank-{r}.json").read_text()) for r in range(world_size)]
    expected = shares(plan, world_size, drop_last)
    if drop_last:
        expected = [[share[: len(share) // batch_size * batch_size] for share in rank] for rank in expected]
    for rank, result in enumerate(results):
        assert result["world_size"] == world_size
        assert result["epochs"] == expected[rank], (name, rank)
        assert result["steps"] == plan.manifest["steps_per_epoch"], (name, rank)  # the same on every rank
    for e, ids in enumerate(plan.epochs):
        fed = results[0]["epochs"][e] + results[1]["epochs"][e]
        n = len(ids)
        if drop_last:
            per_rank = n // world_size // batch_size * batch_size
            assert len(fed) == len(set(fed)) == per_rank * world_size  # disjoint, nothing padded
            assert set(fed) <= set(ids.tolist())
            assert sorted(fed) == sorted(ids[: per_rank * world_size].tolist())  # the epoch's head, tail dropped
        else:
            assert set(fed) == set(ids.tolist())  # the union over ranks is the epoch
            padding = np.resize(ids, -(-n // world_size) * world_size)[n:].tolist() if n else []
            assert sorted(fed) == sorted(ids.tolist() + padding)  # only the wrapped-around ids repeat


def test_torchrun_plain_loop_gives_each_rank_its_share(tmp_path: Path) -> None:
    counts = (11, 7, 1, 12, 5, 0)  # odd counts pad by wrapping around; 1 id pads rank 1 with rank 0's
    padded = make_plan(tmp_path, counts, batch_size=2, world_size=2, name="padded")
    dropped = make_plan(tmp_path, counts, batch_size=2, world_size=2, drop_last=True, name="dropped", seed=1)
    out = torchrun(PLAIN_SCRIPT, tmp_path, str(padded.path), str(dropped.path))
    check_rank_shares(padded, out, "padded", drop_last=False)
    check_rank_shares(dropped, out, "dropped", drop_last=True)
    assert padded.manifest["steps_per_epoch"] == [3, 2, 1, 3, 2, 0]
    assert dropped.manifest["steps_per_epoch"] == [2, 1, 0, 3, 1, 0]


def test_torchrun_hf_trainer_gives_each_rank_its_share(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, (11, 7, 1, 12, 5), batch_size=2, world_size=2)
    out = torchrun(HF_SCRIPT, tmp_path, str(plan.path))
    check_rank_shares(plan, out, "hf", drop_last=False)


def test_torchrun_lightning_gives_each_rank_its_share(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, (11, 7, 1, 12, 5), batch_size=2, world_size=2)
    out = torchrun(LIGHTNING_SCRIPT, tmp_path, str(plan.path))
    check_rank_shares(plan, out, "lightning", drop_last=False)
