"""The ``dynsel`` command line: options → config objects → stage functions; rich output on stderr.

Exit codes: 0 success, 1 internal error (a bug: rerun with --debug for the traceback), 2 bad input or
usage (one line on stderr saying what is wrong and how to fix it).
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from . import __version__
from .config import ExtractConfig, FactorsConfig, PlanConfig, SaeConfig, help_for
from .errors import DynselError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode="markdown",
    help="Precompute dynamic data-selection plans: features → TopK SAE factors → per-epoch index lists any trainer reads.",
    epilog="Example: `dynsel run sample_data/fashion_mnist_2k.npz --out runs/fm --epochs 10 --ratio 0.5 --seed 0`, then `dynsel report runs/fm/plan`.",
)
stderr = Console(stderr=True)
_state = {"debug": False}
FORCE_HELP = "Let --out replace a dynsel artifact of another kind. A folder dynsel did not write is never replaced."


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dynsel {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    _state["debug"] = debug


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """Turn DynselError into one line and exit 2; anything else into exit 1 (traceback with --debug)."""
    try:
        yield
    except DynselError as exc:
        if _state["debug"]:
            raise
        stderr.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=2) from None
    except KeyboardInterrupt:
        stderr.print("[red]interrupted[/red]; no output was written or changed (resumable work, if any, is kept in a hidden directory beside it)")
        raise typer.Exit(code=130) from None
    except (typer.Exit, typer.Abort):
        raise
    except Exception as exc:  # a bug: say so plainly
        if _state["debug"]:
            raise
        stderr.print(f"[red]internal error:[/red] {type(exc).__name__}: {escape(str(exc))} (rerun with --debug for the traceback)", highlight=False, soft_wrap=True)
        raise typer.Exit(code=1) from None


@contextlib.contextmanager
def _progress() -> Iterator[Callable[[str, int, Optional[int]], None]]:
    """Progress on stderr behind the stages' plain ``progress(task, done, total)`` callback.

    On a terminal: rich progress bars. Otherwise (logs, CI, batch jobs): a plain line at most every 15 s
    and when a task completes, with the rate, so long runs are visibly alive.
    """
    if not stderr.is_terminal:
        yield _PlainProgress()
        return
    columns = (TextColumn("{task.description:>8}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=stderr, transient=True) as bar:
        tasks: dict[str, Any] = {}

        def update(task: str, done: int, total: Optional[int]) -> None:
            if task not in tasks:
                tasks[task] = bar.add_task(task, total=total)
            bar.update(tasks[task], completed=done, total=total)

        yield update


class _PlainProgress:
    """Throttled one-line progress for non-terminal stderr."""

    interval_s = 15.0

    def __init__(self) -> None:
        self._started: dict[str, float] = {}
        self._last: dict[str, float] = {}

    def __call__(self, task: str, done: int, total: Optional[int]) -> None:
        now = time.monotonic()
        start = self._started.setdefault(task, now)
        finished = total is not None and done >= total
        if not finished and now - self._last.get(task, start) < self.interval_s:
            return
        self._last[task] = now
        elapsed = now - start
        of_total = f"/{total}" if total is not None else ""
        rate = f"{done / elapsed:.1f}/s, " if elapsed >= 1.0 else ""
        stderr.print(f"{task}: {done}{of_total} ({rate}{elapsed:.0f}s)", highlight=False, soft_wrap=True)


def _log(message: str) -> None:
    stderr.print(escape(message), highlight=False, soft_wrap=True)


@app.command(epilog="Examples: `dynsel extract sample_data/fashion_mnist_2k.npz --out runs/fm/features`; `dynsel extract photos/ --out feats` (class subfolders); `dynsel extract sample_data/sms_spam_1k.csv --encoder minilm --out feats`. See docs/extract.md.")
def extract(
    source: Path = typer.Argument(..., help="An image folder (class subfolders, or flat with a labels CSV), a .npy/.npz array (images [N,H,W(,C)] or vectors [N,D]), or a Parquet/CSV/TSV/JSONL table with a text or vector column."),
    out: Path = typer.Option(..., "--out", "-o", help="Features directory to write (a killed run resumes from .OUT.partial/ next to it)."),
    encoder: str = typer.Option(ExtractConfig.encoder, help=help_for(ExtractConfig, "encoder")),
    allow_user_code: bool = typer.Option(ExtractConfig.allow_user_code, "--allow-user-code", help=help_for(ExtractConfig, "allow_user_code")),
    array: Optional[str] = typer.Option(None, help=help_for(ExtractConfig, "array")),
    labels: Optional[str] = typer.Option(None, help=help_for(ExtractConfig, "labels")),
    text_column: str = typer.Option(ExtractConfig.text_column, help=help_for(ExtractConfig, "text_column")),
    label_column: Optional[str] = typer.Option(None, help=help_for(ExtractConfig, "label_column")),
    id_column: Optional[str] = typer.Option(None, help=help_for(ExtractConfig, "id_column")),
    vector_column: Optional[str] = typer.Option(None, help=help_for(ExtractConfig, "vector_column")),
    labels_csv: Optional[str] = typer.Option(None, help=help_for(ExtractConfig, "labels_csv")),
    image_size: int = typer.Option(ExtractConfig.image_size, help=help_for(ExtractConfig, "image_size")),
    mixed_sizes: str = typer.Option(ExtractConfig.mixed_sizes, help=help_for(ExtractConfig, "mixed_sizes")),
    batch_size: int = typer.Option(ExtractConfig.batch_size, help=help_for(ExtractConfig, "batch_size")),
    shard_size: int = typer.Option(ExtractConfig.shard_size, help=help_for(ExtractConfig, "shard_size")),
    dtype: str = typer.Option(ExtractConfig.dtype, help=help_for(ExtractConfig, "dtype")),
    device: str = typer.Option(ExtractConfig.device, help=help_for(ExtractConfig, "device")),
    workers: Optional[int] = typer.Option(None, help=help_for(ExtractConfig, "workers")),
    on_error: str = typer.Option(ExtractConfig.on_error, help=help_for(ExtractConfig, "on_error")),
    limit: Optional[int] = typer.Option(None, help=help_for(ExtractConfig, "limit")),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
) -> None:
    """Encode every sample of SOURCE into feature vectors (sharded Parquet)."""
    import time

    from .extract import extract as run_extract

    config = ExtractConfig(
        encoder=encoder, allow_user_code=allow_user_code, array=array, labels=labels, text_column=text_column, label_column=label_column, id_column=id_column,
        vector_column=vector_column, labels_csv=labels_csv, image_size=image_size, mixed_sizes=mixed_sizes, batch_size=batch_size, shard_size=shard_size,
        dtype=dtype, device=device, workers=workers, on_error=on_error, limit=limit,
    )
    # The stage reports (done, total); on a terminal the bar adds samples/s (elsewhere _progress prints plain lines with the rate).
    clock: dict[str, Any] = {"first": None, "first_done": 0, "done": 0}
    with _errors(), contextlib.ExitStack() as stack:
        plain = None if stderr.is_terminal else stack.enter_context(_progress())
        columns = (TextColumn("{task.description:>8}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn())
        bar = stack.enter_context(Progress(*columns, console=stderr, transient=True, disable=plain is not None))
        task = bar.add_task("extract", total=None, rate="")

        def progress(name: str, done: int, total: Optional[int]) -> None:
            now = time.perf_counter()
            if clock["first"] is None:  # the rate counts from the first report: model loading and resumed shards excluded
                clock["first"], clock["first_done"] = now, done
            clock["done"] = done
            rate = (done - clock["first_done"]) / max(now - clock["first"], 1e-9)
            bar.update(task, completed=done, total=total, rate=f"{rate:,.0f} samples/s" if done > clock["first_done"] else "")
            if plain is not None:
                plain(name, done, total)

        try:
            manifest = run_extract(source, out, config, progress, log=_log, force=force)
        except KeyboardInterrupt:
            from .extract.work import work_dir_for

            if work_dir_for(out).is_dir():
                _log(f"extract: completed shards are kept in {work_dir_for(out)} (not an artifact); rerun the same command to resume")
            raise
    seconds = time.perf_counter() - (clock["first"] or time.perf_counter())
    rate = (clock["done"] - clock["first_done"]) / max(seconds, 1e-9)
    skipped = ""
    if manifest["n_skipped"]:
        reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(manifest["skipped_reasons"].items()))
        skipped = f"; skipped {manifest['n_skipped']} of {manifest['n_read']} ({reasons}; listed in {out}/_manifest.json)"
    _log(f"features: {manifest['n_samples']} × {manifest['dim']} ({manifest['encoder']['name']}) → {out} in {seconds:.1f} s ({rate:,.0f} samples/s){skipped}")


@app.command("fit-sae", epilog="Example: `dynsel fit-sae runs/fm/features --out runs/fm/sae --k 32`  (a killed run resumes from its last epoch when rerun with the same settings)")
def fit_sae_command(
    features: Path = typer.Argument(..., help="Features directory (from `dynsel extract`)."),
    out: Path = typer.Option(..., "--out", "-o", help="SAE checkpoint directory to write."),
    width: int = typer.Option(SaeConfig.width, help=help_for(SaeConfig, "width")),
    k: int = typer.Option(SaeConfig.k, help=help_for(SaeConfig, "k")),
    epochs: Optional[int] = typer.Option(None, help=help_for(SaeConfig, "epochs")),
    batch_size: Optional[int] = typer.Option(None, help=help_for(SaeConfig, "batch_size")),
    lr: Optional[float] = typer.Option(None, help=help_for(SaeConfig, "lr")),
    lr_warmup: float = typer.Option(SaeConfig.lr_warmup, help=help_for(SaeConfig, "lr_warmup")),
    lr_decay: float = typer.Option(SaeConfig.lr_decay, help=help_for(SaeConfig, "lr_decay")),
    auxk_coef: float = typer.Option(SaeConfig.auxk_coef, help=help_for(SaeConfig, "auxk_coef")),
    k_aux: int = typer.Option(SaeConfig.k_aux, help=help_for(SaeConfig, "k_aux")),
    dead_samples: int = typer.Option(SaeConfig.dead_samples, help=help_for(SaeConfig, "dead_samples")),
    holdout: float = typer.Option(SaeConfig.holdout, help=help_for(SaeConfig, "holdout")),
    patience: int = typer.Option(SaeConfig.patience, help=help_for(SaeConfig, "patience")),
    buffer_rows: int = typer.Option(SaeConfig.buffer_rows, help=help_for(SaeConfig, "buffer_rows")),
    seed: int = typer.Option(SaeConfig.seed, help=help_for(SaeConfig, "seed")),
    device: str = typer.Option(SaeConfig.device, help=help_for(SaeConfig, "device")),
    restart: bool = typer.Option(False, "--restart", help="Ignore the saved state of an interrupted run and train from scratch."),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
) -> None:
    """Train a TopK sparse autoencoder on FEATURES; its units are the data set's factors. Quality is logged after every epoch."""
    from .sae import fit_sae

    config = SaeConfig(
        width=width, k=k, epochs=epochs, batch_size=batch_size, lr=lr, lr_warmup=lr_warmup, lr_decay=lr_decay, auxk_coef=auxk_coef, k_aux=k_aux,
        dead_samples=dead_samples, holdout=holdout, patience=patience, buffer_rows=buffer_rows, seed=seed, device=device,
    )
    with _errors(), _progress() as progress:
        manifest = fit_sae(features, out, config, progress, log=_log, resume=not restart, force=force)
    m = manifest["metrics"]
    _log(f"sae: width {manifest['width']}, k {manifest['k']}: held-out FVU {m['fvu']:.3f}, L0 {m['l0']:.1f}, dead {m['dead_fraction']:.1%} → {out}")


@app.command("factors", epilog="Example: `dynsel factors runs/fm/features --sae runs/fm/sae --out runs/fm/factors`")
def factors_command(
    features: Path = typer.Argument(..., help="Features directory (from `dynsel extract`)."),
    sae: Path = typer.Option(..., "--sae", help="SAE checkpoint directory (from `dynsel fit-sae`)."),
    out: Path = typer.Option(..., "--out", "-o", help="Factor tables directory to write."),
    batch_size: int = typer.Option(FactorsConfig.batch_size, help=help_for(FactorsConfig, "batch_size")),
    device: str = typer.Option(FactorsConfig.device, help=help_for(FactorsConfig, "device")),
    allow_foreign_sae: bool = typer.Option(False, "--allow-foreign-sae", help="Use an SAE trained on other features of the same width (recorded in the manifest as sae_trained_on_these_features: false)."),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
) -> None:
    """Encode every sample with the SAE: the sample and unit factor tables (Parquet)."""
    from .factors import build_factor_tables

    with _errors(), _progress() as progress:
        manifest = build_factor_tables(features, sae, out, FactorsConfig(batch_size=batch_size, device=device), progress, allow_foreign_sae=allow_foreign_sae, force=force)
    _log(f"factors: {manifest['n_samples']} samples, {manifest['width']} units ({manifest['dead_units']} dead) → {out}")


def _plan_config(**values: Any) -> PlanConfig:
    return PlanConfig(**values)


@app.command("plan", epilog="Example: `dynsel plan runs/fm/factors --out runs/fm/plan --epochs 10 --ratio 0.5 --seed 0`  (use `--out -` to print one line of ids per epoch)")
def plan_command(
    factors: Path = typer.Argument(..., help="Factor tables directory (from `dynsel factors`)."),
    out: str = typer.Option(..., "--out", "-o", help="Plan directory to write, or - for one line of sample ids per epoch on stdout."),
    epochs: int = typer.Option(PlanConfig.epochs, help=help_for(PlanConfig, "epochs")),
    ratio: float = typer.Option(PlanConfig.ratio, help=help_for(PlanConfig, "ratio")),
    seed: int = typer.Option(PlanConfig.seed, help=help_for(PlanConfig, "seed")),
    method: str = typer.Option(PlanConfig.method, help=help_for(PlanConfig, "method")),
    normalise: str = typer.Option(PlanConfig.normalise, help=help_for(PlanConfig, "normalise")),
    schedule: str = typer.Option(PlanConfig.schedule, help=help_for(PlanConfig, "schedule")),
    lambda_start: float = typer.Option(PlanConfig.lambda_start, help=help_for(PlanConfig, "lambda_start")),
    lambda_end: float = typer.Option(PlanConfig.lambda_end, help=help_for(PlanConfig, "lambda_end")),
    penalty: str = typer.Option(PlanConfig.penalty, help=help_for(PlanConfig, "penalty")),
    beta: float = typer.Option(PlanConfig.beta, help=help_for(PlanConfig, "beta")),
    decay: float = typer.Option(PlanConfig.decay, help=help_for(PlanConfig, "decay")),
    tau: float = typer.Option(PlanConfig.tau, help=help_for(PlanConfig, "tau")),
    class_quota: str = typer.Option(PlanConfig.class_quota, help=help_for(PlanConfig, "class_quota")),
    dedup: bool = typer.Option(PlanConfig.dedup, "--dedup/--no-dedup", help=help_for(PlanConfig, "dedup")),
    trust: bool = typer.Option(PlanConfig.trust, "--trust/--no-trust", help=help_for(PlanConfig, "trust")),
    dup_cosine: float = typer.Option(PlanConfig.dup_cosine, help=help_for(PlanConfig, "dup_cosine")),
    trust_full: float = typer.Option(PlanConfig.trust_full, help=help_for(PlanConfig, "trust_full")),
    full_epochs: int = typer.Option(PlanConfig.full_epochs, help=help_for(PlanConfig, "full_epochs")),
    batch_size: int = typer.Option(PlanConfig.batch_size, help=help_for(PlanConfig, "batch_size")),
    world_size: int = typer.Option(PlanConfig.world_size, help=help_for(PlanConfig, "world_size")),
    drop_last: bool = typer.Option(PlanConfig.drop_last, "--drop-last/--no-drop-last", help=help_for(PlanConfig, "drop_last")),
    formats: str = typer.Option("bin,txt,parquet", help="Plan files to write besides the manifest: any of bin (always), txt, npy, parquet."),
    features: Optional[Path] = typer.Option(None, "--features", help="The features FACTORS was made from; needed by --method knn-density and kcenter."),
    device: str = typer.Option(PlanConfig.device, help=help_for(PlanConfig, "device")),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
) -> None:
    """Compute the per-epoch selection plan from FACTORS."""
    from .formats.factors import read_factor_tables
    from .formats.features import read_features
    from .formats.plan import check_formats, write_plan_stream
    from .plan import build_plan, compute_plan

    config = PlanConfig(
        epochs=epochs, ratio=ratio, seed=seed, method=method, normalise=normalise, schedule=schedule, lambda_start=lambda_start, lambda_end=lambda_end,
        penalty=penalty, beta=beta, decay=decay, tau=tau, class_quota=class_quota, dedup=dedup, trust=trust, dup_cosine=dup_cosine, trust_full=trust_full, full_epochs=full_epochs, batch_size=batch_size, world_size=world_size,
        drop_last=drop_last, device=device,
    )
    with _errors(), _progress() as progress:
        if out == "-":
            feature_table = read_features(features) if features else None
            result = compute_plan(read_factor_tables(factors), config, progress, feature_table)
            write_plan_stream(sys.stdout, result.epochs)
            return
        wanted = tuple(f.strip() for f in formats.split(",") if f.strip())
        check_formats(wanted)
        manifest = build_plan(factors, Path(out), config, progress, formats=wanted, features=features, force=force)
    _log(f"plan: {manifest['epochs']} epochs × {manifest['budget']} of {manifest['n_samples']} ({method}), {manifest['total_steps']} steps at batch {batch_size} → {out}")


@app.command(epilog="Example: `dynsel report runs/fm/plan --factors runs/fm/factors --compare runs/fm/plan-random --html report.html`")
def report(
    plan: Path = typer.Argument(..., help="Plan directory (from `dynsel plan` or `dynsel run`)."),
    factors: Optional[Path] = typer.Option(None, "--factors", help="Factor tables of the plan's data set: adds representativeness/rarity and class views."),
    compare: Optional[Path] = typer.Option(None, "--compare", help="A second plan to show side by side (e.g. the random baseline)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout instead of tables."),
    html: Optional[Path] = typer.Option(None, "--html", help="Also write a self-contained HTML page with charts."),
) -> None:
    """Summarise what a plan does: budgets, coverage, usage, overlap, schedule, classes."""
    from .formats.factors import read_factor_tables
    from .formats.plan import read_plan
    from .formats.common import write_text_atomic
    from .formats.output import check_output_file
    from .report import build_report, compare_reports, render_html, render_terminal
    from .report.html import GENERATOR

    with _errors():
        if html:
            check_output_file(html, GENERATOR, inputs=[plan, factors, compare], option="--html")
        tables = read_factor_tables(factors) if factors else None
        main_report = build_report(read_plan(plan), tables)
        other = build_report(read_plan(compare), tables) if compare else None
        if html:
            write_text_atomic(html, render_html(main_report, compare=other))
            _log(f"report: HTML page written to {html}")
        if as_json:
            payload = main_report if other is None else compare_reports(main_report, other)
            sys.stdout.write(json.dumps(payload, sort_keys=True) + "\n")
        else:
            render_terminal(main_report, Console(), compare=other)


@app.command(epilog="Example: `dynsel verify runs/fm/plan --factors runs/fm/factors`  (exit 0: every check passed; 2: a check failed)")
def verify(
    plan: Path = typer.Argument(..., help="Plan directory to check."),
    factors: Optional[Path] = typer.Option(None, "--factors", help="Factor tables the plan should come from: checks its inputs and recomputes it."),
    features: Optional[Path] = typer.Option(None, "--features", help="Features the plan's data set should be (needed to recompute knn-density and kcenter plans)."),
    as_json: bool = typer.Option(False, "--json", help="Print the checks as one JSON object on stdout."),
) -> None:
    """Check a plan: checksums, budgets, duplicates, steps, copies; with --factors, that it belongs to them."""
    from .verify import verify_plan

    with _errors():
        result = verify_plan(plan, factors, features)
    if as_json:
        sys.stdout.write(json.dumps(result.as_json(), sort_keys=True) + "\n")
    else:
        marks = {True: "[green]ok[/green]  ", False: "[red]FAIL[/red]", None: "[yellow]skip[/yellow]"}
        for check in result.checks:
            stderr.print(f"{marks[check.ok]} {check.name:<10} {escape(check.detail)}", highlight=False, soft_wrap=True)
    if not result.ok:
        names = ", ".join(dict.fromkeys(c.name for c in result.failed))
        stderr.print(f"[red]error:[/red] {escape(str(plan))}: failed {names}; rebuild the plan with `dynsel plan` (see docs/reliability.md)", highlight=False, soft_wrap=True)
        raise typer.Exit(code=2)


@app.command(epilog="Example: `dynsel run sample_data/fashion_mnist_2k.npz --out runs/fm --epochs 10 --ratio 0.5 --seed 0`")
def run(
    source: Path = typer.Argument(..., help="A .npy or .npz array file (images or vectors)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory: features/, sae/, factors/, plan/ go inside."),
    epochs: int = typer.Option(PlanConfig.epochs, help=help_for(PlanConfig, "epochs")),
    ratio: float = typer.Option(PlanConfig.ratio, help=help_for(PlanConfig, "ratio")),
    seed: int = typer.Option(PlanConfig.seed, help="Seed of the SAE and of the plan."),
    method: str = typer.Option(PlanConfig.method, help=help_for(PlanConfig, "method")),
    encoder: str = typer.Option(ExtractConfig.encoder, help=help_for(ExtractConfig, "encoder")),
    image_size: int = typer.Option(ExtractConfig.image_size, help=help_for(ExtractConfig, "image_size")),
    width: int = typer.Option(SaeConfig.width, help=help_for(SaeConfig, "width")),
    k: int = typer.Option(SaeConfig.k, help=help_for(SaeConfig, "k")),
    batch_size: int = typer.Option(PlanConfig.batch_size, help=help_for(PlanConfig, "batch_size")),
    device: str = typer.Option("auto", help="Where every stage runs: auto, cpu or cuda."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan report as JSON on stdout."),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
) -> None:
    """Run every stage (extract → fit-sae → factors → plan) into OUT and print the report; up-to-date stages are skipped."""
    from .formats.factors import read_factor_tables
    from .formats.plan import read_plan
    from .pipeline import RunConfig, run_pipeline
    from .report import build_report, render_terminal

    config = RunConfig(
        extract=ExtractConfig(encoder=encoder, image_size=image_size, device=device),
        sae=SaeConfig(width=width, k=k, seed=seed, device=device),
        factors=FactorsConfig(device=device),
        plan=PlanConfig(epochs=epochs, ratio=ratio, seed=seed, method=method, batch_size=batch_size, device=device),
    )
    with _errors(), _progress() as progress:
        result = run_pipeline(source, out, config, progress, _log, force=force)
        summary = build_report(read_plan(result.plan), read_factor_tables(out / "factors"))
    if as_json:
        sys.stdout.write(json.dumps(summary, sort_keys=True) + "\n")
    else:
        render_terminal(summary, Console())


def main() -> None:
    app(prog_name="dynsel")
