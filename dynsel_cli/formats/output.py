"""Output safety: which existing paths ``--out`` may replace.

dynsel writes every artifact into a temporary sibling and then swaps it into place, so whatever was at the
output path before is gone afterwards. That is only acceptable for a path that holds nothing a user can
lose. The rule, applied by every stage before any work and again just before the swap:

- a path that does not exist, or an empty directory: written;
- a dynsel artifact of the same kind (its manifest says so): replaced;
- a dynsel artifact of another kind: refused, unless ``force`` (``--force``);
- anything else (a file, a directory dynsel did not write, a damaged artifact whose manifest cannot be
  read): refused, ``--force`` or not;
- the current directory or a directory holding it, an input of the same command, a directory holding an
  input, or a path inside an input directory: refused.

A run directory (``dynsel run --out``) is not one artifact but a folder of them: it may be replaced into
when it holds only the stage artifacts (``features/``, ``sae/``, ``factors/``, ``plan/``) and their hidden
work files, each stage folder passing the same rule for its own kind.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

from ..errors import DynselError

MANIFEST_NAMES = ("manifest.json", "_manifest.json")
RUN_KIND = "dynsel.run"
RUN_STAGES = {"features": "dynsel.features", "sae": "dynsel.sae", "factors": "dynsel.factors", "plan": "dynsel.plan"}
MANIFEST_FILE = {kind: "_manifest.json" if kind == "dynsel.features" else "manifest.json" for kind in RUN_STAGES.values()}
KIND_NAMES = {
    "dynsel.features": "features directory",
    "dynsel.sae": "SAE checkpoint",
    "dynsel.factors": "factor tables directory",
    "dynsel.plan": "plan",
    RUN_KIND: "run directory",
}


def check_output_path(final: Path, option: str = "--out") -> None:
    """Fail early when ``final`` cannot become a directory at all (a file in the way, an unwritable parent)."""
    final = Path(final)
    if final.exists() and not final.is_dir():
        raise DynselError(f"{final}: exists and is not a directory; choose another {option}")
    ancestor = final.parent if str(final.parent) else Path(".")
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise DynselError(f"{final}: cannot be created because {ancestor} is not a directory; choose another {option}")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise DynselError(f"{final}: cannot be created because {ancestor} is not writable; choose another {option}")


def check_output(final: Path, kind: str, *, inputs: Iterable[Path | None] = (), force: bool = False, option: str = "--out") -> None:
    """Refuse, with one line, any ``--out`` whose replacement could lose a user's data (see the module doc).

    ``kind`` is the artifact kind the command writes (``dynsel.plan``, ... or :data:`RUN_KIND`);
    ``inputs`` are the paths the same command reads.
    """
    final = Path(final)
    _check_not_cwd(final, option)
    if final.name in ("", ".", ".."):
        raise DynselError(f"{final}: does not name a directory of its own; spell {option} without a trailing '.' or '..'")
    if final.is_symlink():
        raise DynselError(f"{final}: is a symbolic link; pass the directory it points to as {option}")
    check_output_path(final, option)
    _check_not_input(final, [Path(p) for p in inputs if p is not None], option)
    check_replaceable(final, kind, force=force, option=option)


def check_replaceable(final: Path, kind: str, *, force: bool = False, option: str = "--out") -> None:
    """The ownership part of :func:`check_output`: may an existing ``final`` be replaced by a ``kind``?"""
    final = Path(final)
    if not final.exists() or not final.is_dir() or _is_empty(final):
        return
    if kind == RUN_KIND:
        _check_run_directory(final, force, option)
        return
    check_kind(final, artifact_kind(final), kind, force=force, option=option)


def check_kind(where: Path | str, found: str | None, kind: str, *, force: bool = False, option: str = "--out") -> None:
    """The ownership rule once the kind of what is at ``where`` is known: ``found`` is its dynsel kind, or None
    when it is not a dynsel artifact. Shared by local directories and object-store prefixes."""
    if found == kind:
        return
    what = KIND_NAMES.get(kind, kind)
    if found is None:
        raise DynselError(
            f"{where}: exists and is not a dynsel {what}; dynsel replaces only its own artifacts: choose a new {option} or remove it yourself"
        )
    if not force:
        raise DynselError(f"{where}: holds a dynsel {KIND_NAMES.get(found, found)}, not {'an' if what[0] in 'AEIOUS' else 'a'} {what}; choose another {option}, or pass --force to replace it")


def check_output_file(path: Path, marker: str, *, inputs: Iterable[Path | None] = (), option: str) -> None:
    """The same rule for a single-file output (``report --html``): an existing file is replaced only when
    dynsel wrote it, i.e. its first kilobyte holds ``marker``."""
    path = Path(path)
    if path.is_dir():
        raise DynselError(f"{path}: is a directory; choose a file name for {option}")
    _check_not_input(path, [Path(p) for p in inputs if p is not None], option)
    if path.exists():
        try:
            with open(path, "rb") as handle:
                head = handle.read(1024)
        except OSError as exc:
            raise DynselError(f"{path}: cannot be read ({exc.strerror}); choose another {option}") from None
        if marker.encode() not in head:
            raise DynselError(f"{path}: exists and was not written by dynsel; choose another {option} or remove it yourself")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise DynselError(f"{path}: cannot be written because {parent} is not a writable directory; choose another {option}")


def artifact_kind(directory: Path) -> str | None:
    """The ``format`` of the dynsel manifest in ``directory`` (``dynsel.plan``, ...), or None if there is none."""
    for name in MANIFEST_NAMES:
        try:
            manifest = json.loads((Path(directory) / name).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            continue
        fmt = manifest.get("format") if isinstance(manifest, dict) else None
        if isinstance(fmt, str) and fmt in KIND_NAMES:
            return fmt
    return None


def _is_empty(directory: Path) -> bool:
    try:
        with os.scandir(directory) as entries:
            return next(entries, None) is None
    except OSError:
        return False


def _check_not_cwd(final: Path, option: str) -> None:
    resolved, cwd = final.resolve(), Path.cwd().resolve()
    if resolved == cwd:
        raise DynselError(f"{final}: is the current directory; choose a new directory for {option} (dynsel replaces the whole {option} directory)")
    if resolved in cwd.parents:
        raise DynselError(f"{final}: holds the current directory; choose a new directory for {option} (dynsel replaces the whole {option} directory)")


def _check_not_input(final: Path, inputs: list[Path], option: str) -> None:
    resolved = final.resolve()
    for source in inputs:
        src = source.resolve()
        if src == resolved:
            raise DynselError(f"{final}: is an input of this command; choose another {option}")
        if resolved in src.parents:
            raise DynselError(f"{final}: holds the input {source}; choose another {option}")
        if src in resolved.parents:
            raise DynselError(f"{final}: lies inside the input {source}; choose an {option} outside it")


def _check_run_directory(final: Path, force: bool, option: str) -> None:
    """A run directory holds only stage artifacts and their hidden work files (``.features.partial``, ...)."""
    for entry in sorted(os.listdir(final)):
        if entry in RUN_STAGES:
            path = final / entry
            if not path.is_dir():
                raise DynselError(f"{path}: exists and is not a directory; the run directory {final} is not dynsel's: choose a new {option}")
            check_replaceable(path, RUN_STAGES[entry], force=force, option=option)
        elif not any(entry.startswith(f".{stage}.") for stage in RUN_STAGES):
            raise DynselError(
                f"{final}: exists and is not a dynsel run directory (it holds {entry!r}); dynsel replaces only its own artifacts: choose a new {option}"
            )
