"""Command-line options generated from the stage config dataclasses.

Every field of a stage's config (``ExtractConfig``, ``SaeConfig``, ``FactorsConfig``, ``PlanConfig``) is
one option: ``--field-name``, its default the field's default, its help the field's ``help`` metadata, a
``--name/--no-name`` pair for booleans. A command declares which configs it takes; :func:`with_configs`
adds their options to the command's signature (Typer reads ``__signature__``) and hands the command the
built config objects. So an option is written once, in config.py, and ``dynsel run`` accepts every
option of the stages it runs without copying them.

When several configs of one command have a field of the same name, the first config listed keeps the
plain name and the others get their stage's prefix (``--sae-epochs``, ``--extract-batch-size``), unless
the name is *shared*, in which case one option sets the field in every config (``--device``, ``--seed``).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

import click
import typer

from .errors import DynselError


@dataclass(frozen=True)
class ConfigSpec:
    """One config a command takes: the keyword it is passed as, its class, and the stage prefix used on clashes."""

    keyword: str
    cls: type
    prefix: str = ""
    panel: str = ""  # the --help panel its options are listed in ("" = the command's own options)


#: help text prefix → the --help panel of a method's own options (see config.py's help strings)
METHOD_PANELS = {"dynsel:": "Method dynsel (the default)", "score:": "Method score"}


def _panel(spec: ConfigSpec, help_text: str) -> str | None:
    for prefix, panel in METHOD_PANELS.items():
        if help_text.startswith(prefix):
            return panel
    return spec.panel or None


def _option_type(annotation: Any) -> Any:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if (
        typing.get_origin(annotation) in (typing.Union, getattr(__import__("types"), "UnionType", ()))
        and len(args) == 1
    ):
        return Optional[args[0]]  # noqa: UP045 (a runtime annotation for Typer)
    return annotation


def _option(
    name: str, field: dataclasses.Field, annotation: Any, help_text: str, panel: str | None
) -> inspect.Parameter:
    flag = "--" + name.replace("_", "-")
    decls = [f"{flag}/--no-{flag[2:]}"] if annotation is bool else [flag]
    extra = {"metavar": ""} if annotation is bool else {}  # a flag pair needs no "<bool>" beside it
    return inspect.Parameter(
        name,
        inspect.Parameter.KEYWORD_ONLY,
        default=typer.Option(field.default, *decls, help=help_text, rich_help_panel=panel, **extra),
        annotation=_option_type(annotation),
    )


def _plan_names(specs: tuple[ConfigSpec, ...], shared: tuple[str, ...]) -> dict[str, list[tuple[ConfigSpec, str]]]:
    """option name → the (config, field) pairs it sets."""
    taken: dict[str, list[tuple[ConfigSpec, str]]] = {}
    for spec in specs:
        for field in dataclasses.fields(spec.cls):
            name = field.name
            if name in taken and name not in shared:
                name = f"{spec.prefix}_{field.name}"
            if name in taken and name not in shared:
                raise RuntimeError(f"option --{name} is defined twice")  # a programming error, caught by any test
            taken.setdefault(name, []).append((spec, field.name))
    return taken


def with_configs(
    *specs: ConfigSpec, shared: tuple[str, ...] = ()
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a command so that it takes one option per config field and receives the configs built."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        names = _plan_names(specs, shared)
        own = [p for p in inspect.signature(command).parameters.values() if p.name not in {s.keyword for s in specs}]
        generated = []
        for name, targets in names.items():
            spec, field_name = targets[0]
            field = next(f for f in dataclasses.fields(spec.cls) if f.name == field_name)
            hints = typing.get_type_hints(spec.cls)
            help_text = str(field.metadata.get("help", ""))
            if len(targets) > 1:
                help_text += " (Sets it for every stage: " + ", ".join(s.prefix for s, _ in targets) + ".)"
            generated.append(_option(name, field, hints[field_name], help_text, _panel(spec, help_text)))

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            values: dict[str, dict[str, Any]] = {spec.keyword: {} for spec in specs}
            for name, targets in names.items():
                value = kwargs.pop(name)
                for spec, field_name in targets:
                    values[spec.keyword][field_name] = value
            try:
                configs = {spec.keyword: spec.cls(**values[spec.keyword]) for spec in specs}
            except DynselError as exc:  # a setting the typed config refuses (NaN, infinity): a usage error
                raise click.BadParameter(str(exc)) from None
            return command(**kwargs, **configs)

        params = [
            p.replace(kind=inspect.Parameter.KEYWORD_ONLY) if p.kind == inspect.Parameter.POSITIONAL_OR_KEYWORD else p
            for p in own
        ]
        wrapper.__signature__ = inspect.Signature(params + generated)  # type: ignore[attr-defined]
        return wrapper

    return decorate
