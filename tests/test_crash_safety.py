"""Crash safety of every long-running command: SIGKILL at seeded-random points, then rerun.

Each test starts the real command (``python -m dynsel_cli ...``) as a subprocess on small synthetic vectors
(``--encoder identity``), kills its process group with SIGKILL at points drawn from a seeded RNG — a random
delay after an event that marks a phase of the run (the resume state or a temporary output directory
appears, the extract journal or the SAE epoch checkpoint has grown by a random amount, or just the process
start) — and checks after every kill that

* no reader sees a partial artifact: the --out path is absent (only when nothing was there before), or it
  is the complete previous version, or the complete new one, and the package's reader verifies its
  checksums; an --out that existed before never disappears while the run is alive (where directories can
  be swapped atomically, i.e. Linux; elsewhere it may be missing between two renames, and the next write
  puts it back);
* rerunning the same command completes, and the directory holding the output is byte-identical — every
  file's sha256, manifests included, and every entry, hidden ones included (no temporary or resume state
  is left behind) — to an uninterrupted run into another directory.

Delays are relative to events, not to wall time alone, so the kill points cover the same phases on a fast
or a busy machine; whichever point a kill lands on, every assertion must hold, so the tests do not depend
on timing. ``test_killed_at_every_filesystem_step_of_an_overwrite`` adds the points a random kill almost
never hits: it stops an overwriting ``plan`` right after each single filesystem change (the commit rename
included; in-process, with every later change refused, which leaves the disk as SIGKILL would) and checks
the same two things, for the atomic swap and for the two-rename fallback.

The existing kill tests (tests/test_extract_resume.py, tests/test_sae_training.py) kill extract and
fit-sae at one fixed point of a fresh output; these extend that to random points, repeated kills (a resume
of a resume), an output that already exists, and the factors, plan and run commands.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import REPO, invoke, sha256_of, sparse_dictionary_data, subprocess_env

from dynsel_cli.config import ExtractConfig, FactorsConfig, PlanConfig, SaeConfig
from dynsel_cli.extract import extract
from dynsel_cli.extract.work import JOURNAL, work_dir_for
from dynsel_cli.factors import build_factor_tables
from dynsel_cli.formats import common, read_factor_tables, read_features, read_plan, read_sae
from dynsel_cli.plan import build_plan
from dynsel_cli.sae import fit_sae
from dynsel_cli.sae.resume import resume_dir

SEED = 2024
TIMEOUT_S = 180.0
BIG_N, SMALL_N, DIM = 60_000, 3_000, 32

pytestmark = pytest.mark.skipif(not hasattr(os, "killpg"), reason="needs POSIX process groups")


# ------------------------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Inputs:
    root: Path
    big: Path  # BIG_N x DIM vectors (.npy)
    small: Path  # SMALL_N x DIM vectors (.npy)
    big_features: Path
    small_features: Path
    sae: Path  # trained on big_features
    big_factors: Path
    small_factors: Path
    exchange: bool  # an existing output is replaced in one atomic step here (else: two renames)


def has_exchange(root: Path) -> bool:
    """Whether common._exchange really swaps two directories on this file system."""
    if not hasattr(common, "_exchange"):
        return False
    a, b = root / "exchange-a", root / "exchange-b"
    a.mkdir()
    b.mkdir()
    (a / "marker").touch()
    try:
        return common._exchange(a, b) and (b / "marker").exists() and not (a / "marker").exists()
    finally:
        shutil.rmtree(a)
        shutil.rmtree(b)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Inputs:
    """Synthetic vectors and the artifacts made from them (in-process: no interpreter start-up)."""
    root = tmp_path_factory.mktemp("crash-inputs")
    np.save(root / "big.npy", sparse_dictionary_data(BIG_N, DIM, 64, seed=1))
    np.save(root / "small.npy", sparse_dictionary_data(SMALL_N, DIM, 64, seed=2))
    config = ExtractConfig(encoder="identity", shard_size=5_000, device="cpu")
    extract(root / "big.npy", root / "big_features", config)
    extract(root / "small.npy", root / "small_features", config)
    fit_sae(root / "big_features", root / "sae", SaeConfig(width=64, k=4, epochs=1, seed=0, device="cpu"))
    fit_sae(root / "small_features", root / "small_sae", SaeConfig(width=64, k=4, epochs=2, seed=0, device="cpu"))
    build_factor_tables(root / "big_features", root / "sae", root / "big_factors", FactorsConfig(device="cpu"))
    build_factor_tables(
        root / "small_features", root / "small_sae", root / "small_factors", FactorsConfig(device="cpu")
    )
    return Inputs(
        root,
        root / "big.npy",
        root / "small.npy",
        root / "big_features",
        root / "small_features",
        root / "sae",
        root / "big_factors",
        root / "small_factors",
        has_exchange(root),
    )


# ------------------------------------------------------------------------------------------ helpers


def listing(root: Path) -> dict[str, str]:
    """Every entry under ``root``, hidden ones included: files by sha256, directories as '<dir>'."""
    root = Path(root)
    return {
        str(p.relative_to(root)): ("<dir>" if p.is_dir() and not p.is_symlink() else sha256_of(p))
        for p in sorted(root.rglob("*"))
    }


def visible(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) if root.is_dir() else []


RUN_READERS: dict[str, Callable[[Path], Any]] = {
    "features": read_features,
    "sae": read_sae,
    "factors": read_factor_tables,
    "plan": read_plan,
}


@dataclass
class Trigger:
    """When to kill: ``delay`` seconds after ``condition()`` first holds (polled every millisecond)."""

    what: str
    condition: Callable[[], bool]
    delay: float


def started() -> Callable[[], bool]:
    return lambda: True


def appears(parent: Path, prefix: str) -> Callable[[], bool]:
    """A new entry whose name starts with ``prefix`` appears in ``parent`` (one there already does not count)."""
    before = {p.name for p in parent.iterdir()} if parent.is_dir() else set()

    def condition() -> bool:
        try:
            return any(name.startswith(prefix) and name not in before for name in os.listdir(parent))
        except OSError:
            return False

    return condition


def renamed_into_place(path: Path) -> Callable[[], bool]:
    """A directory is renamed to ``path`` (it appears, or another one replaces the one there now)."""

    def inode() -> int | None:
        try:
            return path.stat().st_ino
        except OSError:
            return None

    before = inode()
    return lambda: inode() not in (None, before)


def json_count(path: Path, key: str, at_least: int) -> Callable[[], bool]:
    def condition() -> bool:
        try:
            return len(json.loads(path.read_text())[key]) >= at_least
        except (OSError, ValueError, KeyError, TypeError):
            return False

    return condition


def json_len(path: Path, key: str) -> int:
    try:
        return len(json.loads(path.read_text())[key])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def kill_during(argv: list[str], trigger: Trigger, must_exist: list[Path]) -> bool:
    """Start ``dynsel ARGV``; SIGKILL its process group at the trigger. True if it was killed, False if it finished.

    While it runs, every path in ``must_exist`` (outputs that existed before) must stay visible.
    """
    with tempfile.TemporaryFile("w+") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dynsel_cli", *argv],
            cwd=REPO,
            env=subprocess_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
        start, fired, vanished = time.monotonic(), None, set()
        try:
            while proc.poll() is None:
                now = time.monotonic()
                assert now - start < TIMEOUT_S, f"dynsel {' '.join(argv)} did not finish in {TIMEOUT_S} s"
                vanished.update(p for p in must_exist if not p.exists())
                if fired is None and trigger.condition():
                    fired = now
                if fired is not None and now - fired >= trigger.delay:
                    break
                time.sleep(0.001)
        finally:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:  # pragma: no cover - it just exited
                    pass
            proc.wait()
        stderr.seek(0)
        assert not vanished, (
            f"{sorted(vanished)[0]} disappeared while `dynsel {argv[0]}` ran (killed at: {trigger.what})"
        )
        assert proc.returncode in (0, -signal.SIGKILL), (
            f"dynsel {argv[0]} failed (exit {proc.returncode}):\n{stderr.read()[-3000:]}"
        )
    return proc.returncode == -signal.SIGKILL


def check_artifacts(
    parent: Path,
    allowed: dict[str, list[dict[str, str] | None]],
    readers: dict[str, Callable[[Path], Any]],
    trigger: Trigger,
    exchange: bool,
) -> None:
    """Every visible entry of ``parent`` is a known artifact, complete in one of its allowed versions (None: absent).

    Without an atomic exchange, a kill between the two renames of a replacement leaves the old version
    parked in ``.NAME.old-*``; the next write puts it back first, which is done here before looking.
    """
    if not exchange:
        for name in allowed:
            common.sweep_stale_temporaries(parent / name)
    assert set(visible(parent)) <= set(allowed), (
        f"unexpected entries in {parent} after a kill at {trigger.what}: {visible(parent)}"
    )
    for name, versions in allowed.items():
        path = parent / name
        if not path.exists():
            assert None in versions, f"{path} is gone after a kill at {trigger.what}; the previous version must stay"
            continue
        assert listing(path) in [v for v in versions if v is not None], (
            f"{path} is neither the previous nor the new complete version after a kill at {trigger.what}"
        )
        readers[name](path)  # and its checksums verify


def dynsel_ok(argv: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "dynsel_cli", *argv],
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert proc.returncode == 0, f"rerun of dynsel {argv[0]} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}"


def reference(argv: list[str]) -> None:
    """The uninterrupted run, through the real command line in this process (same code, same thread count)."""
    result = invoke(*argv)
    assert result.exit_code == 0, result.output


def with_out(argv: list[str], out: Path) -> list[str]:
    return [str(out) if a == "{out}" else a for a in argv]


def kill_rerun_compare(
    argv: list[str],
    parent: Path,
    ref_parent: Path,
    readers: dict[str, Callable[[Path], Any]],
    triggers: Callable[[random.Random, Path], list[Trigger]],
    rng: random.Random,
    attempts: int,
    exchange: bool,
    deck: list[int] | None = None,
) -> int:
    """Kill ``argv`` (--out under ``parent``) ``attempts`` times, checking after each, then rerun and compare.

    ``readers``: the artifacts under ``parent`` (and ``ref_parent``) and their readers. Returns how many
    attempts were killed. Each attempt uses another kind of trigger (in a shuffled order) until all have
    been used (``deck``: the order still to use, shared between calls). ``exchange``: an existing output
    must stay visible throughout (see check_artifacts).
    """
    assert "{out}" not in argv
    names = sorted(readers)
    parent.mkdir(parents=True, exist_ok=True)
    previous = {name: (listing(parent / name) if (parent / name).exists() else None) for name in names}
    new = {name: listing(ref_parent / name) for name in names}
    allowed = {name: [previous[name], new[name]] for name in names}
    must_exist = [parent / name for name in names if previous[name] is not None and exchange]
    killed, deck = 0, [] if deck is None else deck
    for _ in range(attempts):
        options = triggers(rng, parent)
        deck[:] = deck or rng.sample(range(len(options)), len(options))
        trigger = options[deck.pop()]
        killed += kill_during(argv, trigger, must_exist)
        check_artifacts(parent, allowed, readers, trigger, exchange)
        # what is there now must stay until replaced by the new version
        must_exist = [parent / name for name in names if (parent / name).exists() and exchange]
        allowed = {name: [listing(parent / name) if (parent / name).exists() else None, new[name]] for name in names}
    dynsel_ok(argv)
    got, want = listing(parent), listing(ref_parent)
    differing = sorted(p for p in set(got) | set(want) if got.get(p) != want.get(p))
    assert not differing, f"after the kills, the rerun's {parent} differs from an uninterrupted run's in {differing}"
    return killed


# --------------------------------------------------------------------------------------- the stages


EXTRACT = [
    "extract",
    "{big}",
    "--out",
    "{out}",
    "--encoder",
    "identity",
    "--shard-size",
    "2000",
    "--batch-size",
    "500",
    "--device",
    "cpu",
]


def test_extract_killed_at_random_points_over_an_older_version(inputs: Inputs, tmp_path: Path) -> None:
    rng = random.Random(SEED + 1)
    argv = [str(inputs.big) if a == "{big}" else a for a in EXTRACT]
    reference(with_out(argv, tmp_path / "ref" / "feats"))
    parent, out = tmp_path / "killed", tmp_path / "killed" / "feats"
    # an earlier version with other settings
    reference(with_out(argv, out) + ["--dtype", "float16"])
    shards = BIG_N // 2000
    journal = work_dir_for(out) / JOURNAL

    def triggers(rng: random.Random, parent: Path) -> list[Trigger]:
        done = json_len(journal, "shards")
        grow = rng.randint(1, max(1, shards - done))
        return [
            Trigger("start", started(), rng.uniform(0.5, 3.0)),
            Trigger(f"journal +{grow} shards", json_count(journal, "shards", done + grow), rng.uniform(0, 0.01)),
            Trigger("assembly", appears(parent, ".feats.tmp-"), rng.uniform(0, 0.01)),
        ]

    killed = kill_rerun_compare(
        with_out(argv, out), parent, tmp_path / "ref", {"feats": read_features}, triggers, rng, 3, inputs.exchange
    )
    assert killed >= 1
    assert not work_dir_for(out).exists()


def test_fit_sae_killed_at_random_epochs_over_an_older_version(inputs: Inputs, tmp_path: Path) -> None:
    rng = random.Random(SEED + 2)
    epochs = 12
    argv = [
        "fit-sae",
        str(inputs.small_features),
        "--out",
        "{out}",
        "--width",
        "64",
        "--k",
        "4",
        "--epochs",
        str(epochs),
        "--patience",
        str(epochs),
        "--seed",
        "5",
        "--device",
        "cpu",
    ]
    reference(with_out(argv, tmp_path / "ref" / "out_sae"))
    parent, out = tmp_path / "killed", tmp_path / "killed" / "out_sae"
    reference(
        [
            "fit-sae",
            str(inputs.small_features),
            "--out",
            str(out),
            "--width",
            "64",
            "--k",
            "4",
            "--epochs",
            "2",
            "--seed",
            "1",
            "--device",
            "cpu",
        ]
    )
    state = resume_dir(out) / "state.json"

    def triggers(rng: random.Random, parent: Path) -> list[Trigger]:
        done = json_len(state, "history")
        grow = rng.randint(1, max(1, epochs - done))
        return [
            Trigger("start", started(), rng.uniform(0.5, 3.0)),
            Trigger(f"epoch checkpoint +{grow}", json_count(state, "history", done + grow), rng.uniform(0, 0.05)),
            Trigger("writing the checkpoint", appears(parent, ".out_sae.tmp-"), rng.uniform(0, 0.01)),
        ]

    killed = kill_rerun_compare(
        with_out(argv, out), parent, tmp_path / "ref", {"out_sae": read_sae}, triggers, rng, 3, inputs.exchange
    )
    assert killed >= 1


def _write_phase_triggers(prefix: str) -> Callable[[random.Random, Path], list[Trigger]]:
    """Anywhere in the run, early in the write phase (~60 ms here), or anywhere in and after it."""

    def triggers(rng: random.Random, parent: Path) -> list[Trigger]:
        return [
            Trigger("start", started(), rng.uniform(0.5, 2.5)),
            Trigger("writing (early)", appears(parent, prefix), rng.uniform(0, 0.01)),
            Trigger("writing", appears(parent, prefix), rng.uniform(0, 0.08)),
        ]

    return triggers


def test_factors_killed_at_random_points_fresh_and_over_an_older_version(inputs: Inputs, tmp_path: Path) -> None:
    rng = random.Random(SEED + 3)
    argv = ["factors", str(inputs.big_features), "--sae", str(inputs.sae), "--out", "{out}", "--device", "cpu"]
    reference(with_out(argv, tmp_path / "ref" / "tables"))
    triggers, deck = _write_phase_triggers(".tables.tmp-"), []  # each of the three triggers once
    # no output yet
    killed = kill_rerun_compare(
        with_out(argv, tmp_path / "fresh" / "tables"),
        tmp_path / "fresh",
        tmp_path / "ref",
        {"tables": read_factor_tables},
        triggers,
        rng,
        1,
        inputs.exchange,
        deck,
    )
    # an earlier version with other settings
    out = tmp_path / "killed" / "tables"
    reference(with_out(argv, out) + ["--batch-size", "1000"])
    killed += kill_rerun_compare(
        with_out(argv, out),
        tmp_path / "killed",
        tmp_path / "ref",
        {"tables": read_factor_tables},
        triggers,
        rng,
        2,
        inputs.exchange,
        deck,
    )
    assert killed >= 1


@pytest.mark.slow  # about 1 min of SIGKILLed plan processes: CI runs it (.ci/run)
def test_plan_killed_at_random_points_fresh_and_over_an_older_version(inputs: Inputs, tmp_path: Path) -> None:
    rng = random.Random(SEED + 4)
    argv = [
        "plan",
        str(inputs.big_factors),
        "--out",
        "{out}",
        "--epochs",
        "6",
        "--seed",
        "3",
        "--formats",
        "bin,txt,npy,parquet",
        "--device",
        "cpu",
    ]
    other = ["plan", str(inputs.big_factors), "--out", "{out}", "--epochs", "4", "--seed", "1", "--device", "cpu"]
    reference(with_out(argv, tmp_path / "ref" / "out_plan"))
    triggers, deck = _write_phase_triggers(".out_plan.tmp-"), []
    killed = kill_rerun_compare(
        with_out(argv, tmp_path / "fresh" / "out_plan"),
        tmp_path / "fresh",
        tmp_path / "ref",
        {"out_plan": read_plan},
        triggers,
        rng,
        1,
        inputs.exchange,
        deck,
    )
    out = tmp_path / "killed" / "out_plan"
    reference(with_out(other, out))
    killed += kill_rerun_compare(
        with_out(argv, out),
        tmp_path / "killed",
        tmp_path / "ref",
        {"out_plan": read_plan},
        triggers,
        rng,
        2,
        inputs.exchange,
        deck,
    )
    assert killed >= 1


RUN = ["--encoder", "identity", "--width", "64", "--k", "4", "--epochs", "4", "--device", "cpu"]


def test_run_killed_at_random_points_fresh_and_over_an_older_run(inputs: Inputs, tmp_path: Path) -> None:
    rng = random.Random(SEED + 5)
    stages = sorted(RUN_READERS)
    argv = ["run", str(inputs.small), "--out", "{out}", *RUN, "--seed", "2"]
    reference(with_out(argv, tmp_path / "ref"))
    deck: list[int] = []  # each of the five triggers once

    def triggers(rng: random.Random, run_dir: Path) -> list[Trigger]:
        state = resume_dir(run_dir / "sae") / "state.json"
        epochs = rng.randint(min(json_len(state, "history") + 1, 30), 30)
        return [
            Trigger("start", started(), rng.uniform(1.0, 5.0)),
            Trigger("extracting", appears(run_dir, ".features.partial"), rng.uniform(0, 0.05)),
            Trigger(f"SAE epoch checkpoint {epochs}", json_count(state, "history", epochs), rng.uniform(0, 0.02)),
            Trigger(
                "a temporary directory appears", appears(run_dir, f".{rng.choice(stages)}.tmp-"), rng.uniform(0, 0.005)
            ),
            Trigger(
                "a stage directory is renamed into place",
                renamed_into_place(run_dir / rng.choice(stages)),
                rng.uniform(0, 0.02),
            ),
        ]

    killed = kill_rerun_compare(
        with_out(argv, tmp_path / "fresh"),
        tmp_path / "fresh",
        tmp_path / "ref",
        RUN_READERS,
        triggers,
        rng,
        3,
        inputs.exchange,
        deck,
    )
    # an earlier run with other settings: every stage is rebuilt (--image-size is an extract setting)
    old = tmp_path / "killed"
    reference(["run", str(inputs.small), "--out", str(old), *RUN, "--seed", "1", "--image-size", "96"])
    killed += kill_rerun_compare(
        with_out(argv, old), old, tmp_path / "ref", RUN_READERS, triggers, rng, 2, inputs.exchange, deck
    )
    assert killed >= 1


# ------------------------------------------------------------- every filesystem step of an overwrite


class _Killed(BaseException):
    """Stands for SIGKILL: from this point on the 'dead' process changes nothing on disk."""


_MUTATIONS = ("mkdir", "rmdir", "unlink", "remove", "rename", "replace", "link", "symlink", "chmod", "truncate")


def _instrument(monkeypatch: pytest.MonkeyPatch, kill_after: int | None) -> list[str]:
    """Count every filesystem change made through ``os``; after the ``kill_after``-th one, refuse them all.

    A raised _Killed unwinds like a signal would stop the process: cleanup handlers run, but none of their
    changes reach the disk, so the disk is left exactly as a SIGKILL right after that change leaves it.
    """
    calls: list[str] = []
    dead = False

    def wrap(name: str) -> None:
        real = getattr(os, name)

        def patched(*args: Any, **kwargs: Any) -> Any:
            nonlocal dead
            if dead:
                raise _Killed
            result = real(*args, **kwargs)
            calls.append(f"os.{name}{tuple(str(a) for a in args)}")
            if kill_after is not None and len(calls) >= kill_after:
                dead = True
                raise _Killed
            return result

        monkeypatch.setattr(os, name, patched)

    for name in _MUTATIONS:
        if hasattr(os, name):
            wrap(name)
    # an atomic exchange of two paths is a single filesystem change
    if hasattr(common, "_exchange"):
        real_exchange = common._exchange

        def exchange(a: Path, b: Path) -> bool:
            nonlocal dead
            if dead:
                raise _Killed
            result = real_exchange(a, b)
            calls.append(f"exchange({a}, {b})")
            if kill_after is not None and len(calls) >= kill_after:
                dead = True
                raise _Killed
            return result

        monkeypatch.setattr(common, "_exchange", exchange)
    return calls


@pytest.mark.parametrize("swap", ["exchange", "two-renames"])
def test_killed_at_every_filesystem_step_of_an_overwrite(
    inputs: Inputs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, swap: str
) -> None:
    """`plan` replacing an older plan, stopped right after each single filesystem change (in-process, see _Killed).

    ``exchange``: the old plan is swapped out in one atomic step (Linux renameat2), so it is there after
    every step. ``two-renames`` (systems without it): right after the first rename the output is missing
    for an instant; the old version is parked in ``.plan.old-*`` and put back by the next write.
    """
    if swap == "exchange" and not inputs.exchange:
        pytest.skip("no atomic exchange (renameat2) on this system")
    if swap == "two-renames":
        monkeypatch.setattr(common, "_exchange", lambda a, b: False, raising=False)
    config = PlanConfig(epochs=3, seed=7, device="cpu")
    formats = ("bin", "txt", "npy", "parquet")
    build_plan(inputs.small_factors, tmp_path / "ref" / "plan", config, formats=formats)
    new = {"plan": "<dir>", **{f"plan/{k}": v for k, v in listing(tmp_path / "ref" / "plan").items()}}
    build_plan(
        inputs.small_factors, tmp_path / "old" / "plan", PlanConfig(epochs=2, seed=1, device="cpu"), formats=formats
    )
    old = listing(tmp_path / "old" / "plan")

    parent, out = tmp_path / "killed", tmp_path / "killed" / "plan"
    step, total, parked = 0, None, 0
    while total is None or step <= total:
        step += 1
        shutil.rmtree(parent, ignore_errors=True)
        shutil.copytree(tmp_path / "old", parent)
        with monkeypatch.context() as patch:
            calls = _instrument(patch, step)
            try:
                build_plan(inputs.small_factors, out, config, formats=formats)
                total = len(calls)  # finished before the kill point: every step has been tried
            except _Killed:
                pass
        what = f"step {step}: {calls[-1] if calls else '-'}"
        if swap == "two-renames" and not out.exists():
            parked += 1
            assert any(p.name.startswith(".plan.old-") for p in parent.iterdir()), f"after {what}: the old plan is lost"
            common.sweep_stale_temporaries(out)  # what the next write does first: the old plan is back
        assert visible(parent) == ["plan"], f"after {what}: {visible(parent)}"
        assert listing(out) in (old, {k[len("plan/") :]: v for k, v in new.items() if k != "plan"}), (
            f"after {what}: the plan is neither the old nor the new complete version"
        )
        read_plan(out)
        # the rerun completes and leaves exactly what an uninterrupted run leaves: no temporaries
        build_plan(inputs.small_factors, out, config, formats=formats)
        assert listing(parent) == new, f"after {what}: left {sorted(set(listing(parent)) - set(new))}"
    assert total is not None and total >= 3
    assert parked == (1 if swap == "two-renames" else 0)
