"""The ``dynsel`` command line: options → config objects → stage functions; rich output on stderr.

Exit codes: 0 success, 1 internal error (a bug: rerun with --debug for the traceback), 2 bad input or
usage (one line on stderr saying what is wrong and how to fix it).
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import typer
from rich.console import Console
from rich.markup import escape

from . import __version__
from .cli_config import ConfigSpec, with_configs
from .cli_progress import ProgressDisplay
from .config import ExtractConfig, FactorsConfig, PlanConfig, SaeConfig
from .errors import DynselError
from .formats.output import RUN_STAGES
from .printable import printable

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode="markdown",
    help="Precompute dynamic data-selection plans: features → TopK SAE factors → per-epoch index lists any trainer reads.",
    epilog="Example: `dynsel run sample_data/fashion_mnist_2k.npz --out runs/fm --epochs 10 --ratio 0.5 --seed 0`, then `dynsel report runs/fm/plan`.",
)
stderr = Console(stderr=True, emoji=False)  # emoji codes (":warning:") in a path or class name stay text
_state = {"debug": False}
SOURCE_HELP = (
    "An image folder (class subfolders, or flat with a labels CSV), a .npy/.npz array (images [N,H,W(,C)] or vectors [N,D]), "
    "or a Parquet/CSV/TSV/JSONL table with a text or vector column; local, or a URI such as s3://bucket/data.npz."
)
URI_NOTE = " Local, or a URI (s3://bucket/prefix, ...)."
LOCATION = "PATH|URI"
FEATURES, SAE, FACTORS, PLAN = RUN_STAGES["features"], RUN_STAGES["sae"], RUN_STAGES["factors"], RUN_STAGES["plan"]
DEFAULT_FORMATS = "bin,txt,parquet"
FORMATS_HELP = "Plan files to write besides the manifest: any of bin (always), txt, npy, parquet."
RESTART_HELP = "Ignore the saved state of an interrupted fit-sae and train from scratch."
FORCE_HELP = "Let --out replace a dynsel artifact of another kind. A folder dynsel did not write is never replaced."


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dynsel {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(
        False, "--version", metavar="", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(False, "--debug", metavar="", help="Show full tracebacks on errors."),
) -> None:
    _state["debug"] = debug


@contextlib.contextmanager
def _errors(out: str | None = None) -> Iterator[None]:
    """Turn DynselError into one line and exit 2; anything else into exit 1 (traceback with --debug).
    ``out`` is the command's ``--out``, for the message of an interrupted command."""
    try:
        yield
    except DynselError as exc:
        if _state["debug"]:
            raise
        stderr.print(f"[red]error:[/red] {_shown(exc)}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=2) from None
    except BrokenPipeError:
        _quiet_broken_pipe()
    except KeyboardInterrupt:
        stderr.print(f"[red]interrupted[/red]; {_shown(_interrupted(out))}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=130) from None
    except (typer.Exit, typer.Abort):
        raise
    except Exception as exc:  # a bug: say so plainly
        if _state["debug"]:
            raise
        stderr.print(
            f"[red]internal error:[/red] {type(exc).__name__}: {_shown(exc)} (rerun with --debug for the traceback)",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(code=1) from None


BROKEN_PIPE_EXIT = 141  # what a shell reports for a process killed by SIGPIPE


def _silence_stdout() -> None:
    """The reader of stdout went away (``| head``): point stdout at /dev/null so the interpreter's final
    flush does not fail again; the caller then exits quietly with :data:`BROKEN_PIPE_EXIT`."""
    import os

    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _quiet_broken_pipe() -> None:
    _silence_stdout()
    raise typer.Exit(code=BROKEN_PIPE_EXIT)


class _StdoutConsole(Console):
    """stdout for tables: a closed pipe ends the command quietly with 141, like any other write to stdout."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        _quiet_broken_pipe()


def _shown(value: object) -> str:
    """Data (a path, a class name, a message quoting them) for a rich markup string: shown as typed."""
    return escape(printable(value))


def _progress() -> ProgressDisplay:
    return ProgressDisplay(stderr)


def _log(message: str) -> None:
    stderr.print(_shown(message), highlight=False, soft_wrap=True)


def _interrupted(out: str | None) -> str:
    """What an interrupted command left at ``out``: a publish to a URI may have deleted the old manifest."""
    from .formats.storage import describe, is_uri

    if out is not None and is_uri(out):
        return f"{describe(out)} is unchanged or, if publishing had begun, the prefix stays unpublished until you rerun the command (resumable work, if any, is kept in the dynsel cache)"
    return "no output was written or changed (resumable work, if any, is kept in a hidden directory beside it)"


@app.command(
    epilog="Examples: `dynsel extract sample_data/fashion_mnist_2k.npz --out runs/fm/features`; `dynsel extract photos/ --out feats` (class subfolders); `dynsel extract sample_data/sms_spam_1k.csv --encoder minilm --out feats`. See docs/extract.md."
)
@with_configs(ConfigSpec("config", ExtractConfig))
def extract(
    source: str = typer.Argument(..., help=SOURCE_HELP),
    out: str = typer.Option(
        ...,
        "--out",
        "-o",
        help="Features directory to write (a killed run resumes from .OUT.partial/ next to it)." + URI_NOTE,
        metavar=LOCATION,
    ),
    force: bool = typer.Option(False, "--force", metavar="", help=FORCE_HELP),
    config: ExtractConfig = ExtractConfig(),
) -> None:
    """Encode every sample of SOURCE into feature vectors (sharded Parquet)."""
    from .extract import extract as run_extract
    from .formats.storage import artifact_output, describe, is_uri, local_source

    with _errors(out), _progress() as progress:
        with artifact_output(out, FEATURES, force=force, inputs=[source]) as target:
            try:
                manifest = run_extract(
                    local_source(source),
                    target,
                    config,
                    progress,
                    log=_log,
                    force=force,
                    source_name=describe(source) if is_uri(source) else None,
                )
            except KeyboardInterrupt:
                from .extract.work import work_dir_for

                if work_dir_for(target).is_dir():
                    _log(
                        f"extract: completed shards are kept in {work_dir_for(target)} (not an artifact); rerun the same command to resume"
                    )
                raise
    seconds, rate = progress.throughput("extract")
    skipped = ""
    if manifest["n_skipped"]:
        reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(manifest["skipped_reasons"].items()))
        skipped = f"; skipped {manifest['n_skipped']} of {manifest['n_read']} ({reasons}; listed in {describe(out)}/_manifest.json)"
    _log(
        f"features: {manifest['n_samples']} × {manifest['dim']} ({manifest['encoder']['name']}) → {describe(out)} in {seconds:.1f} s ({rate:,.0f} samples/s){skipped}"
    )


@app.command(
    "fit-sae",
    epilog="Example: `dynsel fit-sae runs/fm/features --out runs/fm/sae --k 32`  (a killed run resumes from its last epoch when rerun with the same settings)",
)
@with_configs(ConfigSpec("config", SaeConfig))
def fit_sae_command(
    features: str = typer.Argument(..., help="Features directory (from `dynsel extract`)." + URI_NOTE),
    out: str = typer.Option(..., "--out", "-o", help="SAE checkpoint directory to write." + URI_NOTE, metavar=LOCATION),
    restart: bool = typer.Option(False, "--restart", metavar="", help=RESTART_HELP),
    force: bool = typer.Option(False, "--force", metavar="", help=FORCE_HELP),
    config: SaeConfig = SaeConfig(),
) -> None:
    """Train a TopK sparse autoencoder on FEATURES; its units are the data set's factors. Quality is logged after every epoch."""
    from .formats.storage import artifact_output, describe, local_input
    from .sae import fit_sae

    with _errors(out), _progress() as progress, artifact_output(out, SAE, force=force, inputs=[features]) as target:
        manifest = fit_sae(
            local_input(features, FEATURES), target, config, progress, log=_log, resume=not restart, force=force
        )
    m = manifest["metrics"]
    _log(
        f"sae: width {manifest['width']}, k {manifest['k']}: held-out FVU {m['fvu']:.3f}, L0 {m['l0']:.1f}, dead {m['dead_fraction']:.1%} → {describe(out)}"
    )


@app.command("factors", epilog="Example: `dynsel factors runs/fm/features --sae runs/fm/sae --out runs/fm/factors`")
@with_configs(ConfigSpec("config", FactorsConfig))
def factors_command(
    features: str = typer.Argument(..., help="Features directory (from `dynsel extract`)." + URI_NOTE),
    sae: str = typer.Option(
        ..., "--sae", help="SAE checkpoint directory (from `dynsel fit-sae`)." + URI_NOTE, metavar=LOCATION
    ),
    out: str = typer.Option(..., "--out", "-o", help="Factor tables directory to write." + URI_NOTE, metavar=LOCATION),
    allow_foreign_sae: bool = typer.Option(
        False,
        "--allow-foreign-sae",
        metavar="",
        help="Use an SAE trained on other features of the same width (recorded in the manifest as sae_trained_on_these_features: false).",
    ),
    force: bool = typer.Option(False, "--force", metavar="", help=FORCE_HELP),
    config: FactorsConfig = FactorsConfig(),
) -> None:
    """Encode every sample with the SAE: the sample and unit factor tables (Parquet)."""
    from .factors import build_factor_tables
    from .formats.storage import artifact_output, describe, local_input

    with (
        _errors(out),
        _progress() as progress,
        artifact_output(out, FACTORS, force=force, inputs=[features, sae]) as target,
    ):
        inputs = local_input(features, FEATURES), local_input(sae, SAE)
        manifest = build_factor_tables(
            *inputs, target, config, progress, allow_foreign_sae=allow_foreign_sae, force=force
        )
    _log(
        f"factors: {manifest['n_samples']} samples, {manifest['width']} units ({manifest['dead_units']} dead) → {describe(out)}"
    )


@app.command(
    "plan",
    epilog="Example: `dynsel plan runs/fm/factors --out runs/fm/plan --epochs 10 --ratio 0.5 --seed 0`  (use `--out -` to print one line of ids per epoch)",
)
@with_configs(ConfigSpec("config", PlanConfig))
def plan_command(
    factors: str = typer.Argument(..., help="Factor tables directory (from `dynsel factors`)." + URI_NOTE),
    out: str = typer.Option(
        ...,
        "--out",
        "-o",
        help="Plan directory to write, or - for one line of sample ids per epoch on stdout." + URI_NOTE,
        metavar=LOCATION,
    ),
    formats: str = typer.Option(DEFAULT_FORMATS, help=FORMATS_HELP),
    features: str | None = typer.Option(
        None,
        "--features",
        help="The features FACTORS was made from; needed by --method knn-density and kcenter." + URI_NOTE,
        metavar=LOCATION,
    ),
    force: bool = typer.Option(False, "--force", metavar="", help=FORCE_HELP),
    config: PlanConfig = PlanConfig(),
) -> None:
    """Compute the per-epoch selection plan from FACTORS.

    **Choosing a method:** start with the default, `--method dynsel`, and compare it with `--method rs2` (plain
    rotation, the strongest simple baseline) at the same `--ratio`; the other methods are for studies. Each
    method's own options are in its panel below.
    """
    from .formats.plan import parse_formats
    from .formats.storage import artifact_output, describe, local_input
    from .plan import build_plan, print_plan

    with _errors(out), _progress() as progress:
        if out == "-":
            print_plan(
                local_input(factors, FACTORS), sys.stdout, config, progress, features=local_input(features, FEATURES)
            )
            return
        plan_formats = parse_formats(formats)
        with artifact_output(out, PLAN, force=force, inputs=[factors, features]) as target:
            inputs = local_input(factors, FACTORS), local_input(features, FEATURES)
            manifest = build_plan(
                inputs[0], target, config, progress, formats=plan_formats, features=inputs[1], force=force
            )
    _log(
        f"plan: {manifest['epochs']} epochs × {manifest['budget']} of {manifest['n_samples']} ({config.method}), {manifest['total_steps']} steps at batch {config.batch_size} → {describe(out)}"
    )


def _check_html_target(path: Path) -> None:
    """``--html`` names a regular file or a new path; a FIFO, a device or ``/dev/stdout`` is refused by its
    ``stat`` alone: reading one (to see whether dynsel wrote it) would block for ever."""
    import stat

    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return
    except OSError:
        return  # unreadable or dangling: check_output_file says what is wrong
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return
    kind = (
        "a named pipe (FIFO)"
        if stat.S_ISFIFO(mode)
        else "a socket"
        if stat.S_ISSOCK(mode)
        else "a device (a terminal, /dev/stdout, /dev/null, ...)"
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "a special file"
    )
    raise DynselError(
        f"{path}: is {kind}, not a regular file; give --html a file name (the page is written to a file, never streamed)"
    )


@app.command(
    epilog="Example: `dynsel report runs/fm/plan --factors runs/fm/factors --compare runs/fm/plan-random --html report.html`"
)
def report(
    plan: str = typer.Argument(..., help="Plan directory (from `dynsel plan` or `dynsel run`)." + URI_NOTE),
    factors: str | None = typer.Option(
        None,
        "--factors",
        help="Factor tables of the plan's data set: adds representativeness/rarity and class views." + URI_NOTE,
        metavar=LOCATION,
    ),
    compare: str | None = typer.Option(
        None,
        "--compare",
        help="A second plan to show side by side (e.g. the random baseline)." + URI_NOTE,
        metavar=LOCATION,
    ),
    as_json: bool = typer.Option(
        False, "--json", metavar="", help="Print one JSON object on stdout instead of tables."
    ),
    html: Path | None = typer.Option(None, "--html", help="Also write a self-contained HTML page with charts."),
) -> None:
    """Summarise what a plan does: budgets, coverage, usage, overlap, schedule, classes."""
    from .formats.common import write_text_atomic
    from .formats.output import check_output_file
    from .formats.plan import read_plan
    from .formats.storage import describe, is_uri, local_input
    from .report import build_report, compare_reports, render_html, render_terminal
    from .report.html import GENERATOR

    with _errors():
        if html:
            _check_html_target(html)
            check_output_file(
                html,
                GENERATOR,
                inputs=[Path(p) for p in (plan, factors, compare) if p and not is_uri(p)],
                option="--html",
            )
        tables = None
        if factors:
            from .formats.factors import read_factor_tables  # pyarrow: only when the tables are asked for

            tables = read_factor_tables(local_input(factors, FACTORS))

        def report_of(location: str) -> dict[str, Any]:
            summary = build_report(read_plan(local_input(location, PLAN)), tables)
            return (
                {**summary, "path": describe(location)} if is_uri(location) else summary
            )  # the URI, not the cached copy

        main_report = report_of(plan)
        other = report_of(compare) if compare else None
        if html:
            write_text_atomic(html, render_html(main_report, compare=other))
            _log(f"report: HTML page written to {html}")
        if as_json:
            payload = main_report if other is None else compare_reports(main_report, other)
            sys.stdout.write(json.dumps(payload, sort_keys=True) + "\n")
        else:
            render_terminal(main_report, _StdoutConsole(), compare=other)


@app.command(
    epilog="Example: `dynsel verify runs/fm/plan --factors runs/fm/factors`  (exit 0: every check passed; 2: a check failed)"
)
def verify(
    plan: str = typer.Argument(..., help="Plan directory to check." + URI_NOTE),
    factors: str | None = typer.Option(
        None,
        "--factors",
        help="Factor tables the plan should come from: checks its inputs and recomputes it." + URI_NOTE,
        metavar=LOCATION,
    ),
    features: str | None = typer.Option(
        None,
        "--features",
        help="Features the plan's data set should be (needed to recompute knn-density and kcenter plans)." + URI_NOTE,
        metavar=LOCATION,
    ),
    as_json: bool = typer.Option(False, "--json", metavar="", help="Print the checks as one JSON object on stdout."),
) -> None:
    """Check a plan: checksums, budgets, duplicates, steps, copies; with --factors, that it belongs to them."""
    from .formats.storage import describe, is_uri, local_input
    from .verify import verify_plan

    with _errors():
        result = verify_plan(local_input(plan, PLAN), local_input(factors, FACTORS), local_input(features, FEATURES))
    if as_json:
        shown = {"plan": describe(plan)} if is_uri(plan) else {}  # not the local cache copy's path
        sys.stdout.write(json.dumps({**result.as_json(), **shown}, sort_keys=True) + "\n")
    else:
        marks = {True: "[green]ok[/green]  ", False: "[red]FAIL[/red]", None: "[yellow]skip[/yellow]"}
        for check in result.checks:
            stderr.print(f"{marks[check.ok]} {check.name:<10} {_shown(check.detail)}", highlight=False, soft_wrap=True)
    if not result.ok:
        names = ", ".join(dict.fromkeys(c.name for c in result.failed))
        stderr.print(
            f"[red]error:[/red] {_shown(describe(plan))}: failed {_shown(names)}; rebuild the plan with `dynsel plan` (see docs/reliability.md)",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(code=2)


@app.command(
    epilog="Example: `dynsel run sample_data/fashion_mnist_2k.npz --out runs/fm --epochs 10 --ratio 0.5 --seed 0`. Every option of extract, fit-sae, factors and plan is accepted; where two stages share a name, plan keeps it and the other gets its stage prefix (`--sae-epochs`, `--extract-batch-size`); `--device` and `--seed` set every stage."
)
@with_configs(
    ConfigSpec("plan_config", PlanConfig, "plan", "Plan"),
    ConfigSpec("extract_config", ExtractConfig, "extract", "Extract"),
    ConfigSpec("sae_config", SaeConfig, "sae", "SAE"),
    ConfigSpec("factors_config", FactorsConfig, "factors", "Factors"),
    shared=("device", "seed", "executor", "ray_address"),
)
def run(
    source: str = typer.Argument(..., help=SOURCE_HELP),
    out: str = typer.Option(
        ...,
        "--out",
        "-o",
        help="Run directory: features/, sae/, factors/, plan/ go inside." + URI_NOTE,
        metavar=LOCATION,
    ),
    as_json: bool = typer.Option(False, "--json", metavar="", help="Print the plan report as JSON on stdout."),
    force: bool = typer.Option(False, "--force", metavar="", help=FORCE_HELP),
    formats: str = typer.Option(DEFAULT_FORMATS, help=FORMATS_HELP),
    restart: bool = typer.Option(False, "--restart", metavar="", help=RESTART_HELP),
    extract_config: ExtractConfig = ExtractConfig(),
    sae_config: SaeConfig = SaeConfig(),
    factors_config: FactorsConfig = FactorsConfig(),
    plan_config: PlanConfig = PlanConfig(),
) -> None:
    """Run every stage (extract → fit-sae → factors → plan) into OUT and print the report; up-to-date stages are skipped."""
    from .formats.factors import read_factor_tables
    from .formats.plan import parse_formats, read_plan
    from .formats.storage import is_uri
    from .pipeline import RunConfig, run_pipeline
    from .report import build_report, render_terminal

    config = RunConfig(extract=extract_config, sae=sae_config, factors=factors_config, plan=plan_config)
    with _errors(out), _progress() as progress:
        result = run_pipeline(
            source, out, config, progress, _log, force=force, formats=parse_formats(formats), restart=restart
        )
        summary = build_report(read_plan(result.plan), read_factor_tables(result.artifacts["factors"]))
        if is_uri(str(result.out)):  # a run prefix: show the plan's URI, not its cached copy
            summary["path"] = f"{result.out}/plan"
    if as_json:
        sys.stdout.write(json.dumps(summary, sort_keys=True) + "\n")
    else:
        render_terminal(summary, _StdoutConsole())


def main() -> None:
    """The ``dynsel`` entry point: Typer, with usage errors as one line and a closed stdout as a quiet exit."""
    try:
        code = app(prog_name="dynsel", standalone_mode=False)
    except typer.Abort:
        stderr.print("[red]interrupted[/red]", soft_wrap=True)
        sys.exit(130)
    except (
        typer.TyperException,
        click.ClickException,
    ) as exc:  # usage errors (Typer's own click): bad value, unknown option, missing argument
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:  # bare `dynsel CMD`: the help is the answer
            typer.echo(ctx.get_help(), err=True)
            sys.exit(2)
        where = ctx.command_path if ctx is not None else "dynsel"
        message = (
            " ".join(str(exc.format_message()).split()).rstrip(".") if hasattr(exc, "format_message") else str(exc)
        )
        stderr.print(
            f"[red]error:[/red] {_shown(message)}; see `{_shown(where)} --help`", highlight=False, soft_wrap=True
        )
        sys.exit(int(getattr(exc, "exit_code", 2)))
    except BrokenPipeError:
        _silence_stdout()
        sys.exit(BROKEN_PIPE_EXIT)
    sys.exit(code if isinstance(code, int) else 0)
