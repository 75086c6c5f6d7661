"""Output safety: which existing paths ``--out`` may replace.

dynsel writes every artifact into a temporary sibling and then swaps it into place, so whatever was at the
output path before is gone afterwards. That is only acceptable for a path that holds nothing a user can
lose. The rule, applied by every stage before any work and again just before the swap:

- a path that does not exist, or an empty directory: written;
- a dynsel artifact of the same kind (its manifest says so): replaced;
- a dynsel artifact of another kind: refused, unless ``force`` (``--force``);
- a dynsel artifact holding anything its manifest does not list (the user's notes, checkpoints, ...):
  refused, ``--force`` or not, since replacing the artifact would delete them;
- anything else (a file, a directory dynsel did not write, a damaged artifact whose manifest cannot be
  read or does not validate as its kind's manifest): refused, ``--force`` or not;
- the current directory or a directory holding it, an input of the same command, a directory holding an
  input, or a path inside an input directory: refused.

A run directory (``dynsel run --out``) is not one artifact but a folder of them: it may be replaced into
when it holds only the stage artifacts (``features/``, ``sae/``, ``factors/``, ``plan/``) and their hidden
work files, each stage folder passing the same rule for its own kind.

What counts as a dynsel artifact is decided by :func:`manifest_listing`, for a local directory and an
object-store prefix alike: a manifest whose ``format`` is a dynsel kind, under that kind's manifest name,
with the kind's required fields and a well-formed list of its files. The artifact is the manifest and
those files; anything else in the directory is the user's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path, PurePath
from typing import Any

from ..errors import ArtifactError, DynselError

MANIFEST_NAMES = ("manifest.json", "_manifest.json")
RUN_KIND = "dynsel.run"
RUN_STAGES = {"features": "dynsel.features", "sae": "dynsel.sae", "factors": "dynsel.factors", "plan": "dynsel.plan"}
MANIFEST_FILE = {
    kind: "_manifest.json" if kind == "dynsel.features" else "manifest.json" for kind in RUN_STAGES.values()
}
KIND_NAMES = {
    "dynsel.features": "features directory",
    "dynsel.sae": "SAE checkpoint",
    "dynsel.factors": "factor tables directory",
    "dynsel.plan": "plan",
    RUN_KIND: "run directory",
}
# The fields every manifest of a kind has (besides ``format``, ``format_version`` and its file list): a
# manifest without one of them was not written by dynsel, whatever its ``format`` says.
REQUIRED_FIELDS = {
    "dynsel.features": ("n_samples", "dim", "dtype", "fingerprint"),
    "dynsel.sae": ("d_in", "width", "k", "fingerprint"),
    "dynsel.factors": ("n_samples", "k", "width", "fingerprint"),
    "dynsel.plan": ("n_samples", "epochs", "counts", "sha256"),
}


def check_output_path(final: Path, option: str = "--out") -> None:
    """Fail early when ``final`` cannot become a directory at all (a file in the way, an unwritable parent)."""
    final = Path(final)
    ancestor = _check_spelling(final, option)
    if final.exists() and not final.is_dir():
        raise DynselError(f"{final}: exists and is not a directory; choose another {option}")
    if not ancestor.is_dir():
        raise DynselError(f"{final}: cannot be created because {ancestor} is not a directory; choose another {option}")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise DynselError(f"{final}: cannot be created because {ancestor} is not writable; choose another {option}")


def _check_spelling(final: Path, option: str) -> Path:
    """Refuse a path no artifact can live at (not UTF-8, a name over the file system's limit) before
    anything touches it; return its nearest existing ancestor."""
    try:
        os.fsencode(final).decode("utf-8")
    except UnicodeError:
        raise DynselError(
            f"{final}: the path is not valid UTF-8 (manifests record it as text); choose another {option}"
        ) from None
    ancestor = final.parent if str(final.parent) else Path(".")
    while not _exists(ancestor) and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    _check_name_lengths(final, ancestor, option)
    return ancestor


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # a component too long to look up: it does not exist either
        return False


TEMPORARY_SUFFIX = len(".tmp-") + 16 + 1  # what a temporary sibling ".NAME.tmp-<16 hex>" adds to NAME


def _check_name_lengths(final: Path, ancestor: Path, option: str) -> None:
    """Every folder still to be made fits the file system's name limit, and ``final`` leaves room for
    the temporary sibling it is written into first (an OSError mid-write otherwise)."""
    try:
        limit = os.pathconf(ancestor, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    name = len(os.fsencode(final.name))
    if name + TEMPORARY_SUFFIX > limit:
        raise DynselError(
            f"{final.name[:40]}…: the name is {name} bytes; with the temporary name it is written under first it "
            f"must stay within {limit - TEMPORARY_SUFFIX} bytes here; choose a shorter {option}"
        )
    for part in final.parent.parts:
        if len(os.fsencode(part)) > limit:
            raise DynselError(
                f"{part[:40]}…: a folder name of {len(os.fsencode(part))} bytes, over this file system's {limit}; choose another {option}"
            )


def check_output(
    final: Path, kind: str, *, inputs: Iterable[Path | None] = (), force: bool = False, option: str = "--out"
) -> None:
    """Refuse, with one line, any ``--out`` whose replacement could lose a user's data (see the module doc).

    ``kind`` is the artifact kind the command writes (``dynsel.plan``, ... or :data:`RUN_KIND`);
    ``inputs`` are the paths the same command reads.
    """
    final = Path(final)
    _check_spelling(final, option)
    _check_not_cwd(final, option)
    if final.name in ("", ".", ".."):
        raise DynselError(
            f"{final}: does not name a directory of its own; spell {option} without a trailing '.' or '..'"
        )
    if final.is_symlink():
        raise DynselError(f"{final}: is a symbolic link; pass the directory it points to as {option}")
    check_output_path(final, option)
    check_not_input(final, [Path(p) for p in inputs if p is not None], option)
    check_replaceable(final, kind, force=force, option=option)


def check_replaceable(final: Path, kind: str, *, force: bool = False, option: str = "--out") -> None:
    """The ownership part of :func:`check_output`: may an existing ``final`` be replaced by a ``kind``?"""
    final = Path(final)
    if not final.exists() or not final.is_dir() or _is_empty(final):
        return
    if kind == RUN_KIND:
        _check_run_directory(final, force, option)
        return
    found, owned = local_ownership(final)
    if found is not None:
        foreign = sorted(set(_tree_files(final)) - owned)
        if foreign:
            raise DynselError(
                f"{final}: holds files dynsel did not write ({foreign[0]!r}{', …' if len(foreign) > 1 else ''}); dynsel replaces only its own artifacts: choose a new {option} or remove them yourself"
            )
    check_kind(final, found, kind, force=force, option=option)


def local_ownership(directory: Path) -> tuple[str | None, set[str]]:
    """The dynsel kind of ``directory`` and the names (relative, ``/``-separated) of the files its manifest
    accounts for: the manifest and every file it lists. ``(None, set())`` when no manifest validates."""
    found, owned = None, set()
    for name in MANIFEST_NAMES:
        try:
            data = (Path(directory) / name).read_bytes()
        except OSError:
            continue
        listing = manifest_listing(json_object(data), name, Path(directory) / name)
        if listing is not None:
            found, files = listing
            owned |= {name, *files}
    return found, owned


def manifest_listing(manifest: dict[str, Any], name: str, where: Path | str) -> tuple[str, set[str]] | None:
    """The kind and the listed file names of ``manifest`` (read from the file ``name`` at ``where``) when it
    validates as a dynsel manifest of that kind; None when it does not (another format, the wrong manifest
    name, a required field missing). A file list that is there but malformed is an ArtifactError: the
    manifest claims to be dynsel's and is damaged, which is refused too, with its own message."""
    kind = dynsel_kind(manifest)
    if kind is None or kind == RUN_KIND:
        return None
    field = "shards" if kind == "dynsel.features" else "files"
    if field not in manifest:
        return None
    files = listed_files(manifest, where, KIND_NAMES[kind])
    version = manifest.get("format_version")
    if name != MANIFEST_FILE[kind] or not isinstance(version, int) or isinstance(version, bool):
        return None
    if any(manifest.get(key) is None for key in REQUIRED_FIELDS[kind]):
        return None
    return kind, set(files)


def listed_files(manifest: dict[str, Any], where: Path | str, what: str) -> dict[str, dict[str, Any]]:
    """Every file a manifest vouches for, by name, with its ``bytes`` and ``sha256``: a features manifest
    lists its ``shards``, every other kind its ``files``. A malformed list is an ArtifactError naming ``where``."""
    field = "shards" if "shards" in manifest else "files"
    entries: Any = manifest.get(field)
    if (
        field == "shards"
        and isinstance(entries, list)
        and all(isinstance(shard, dict) and isinstance(shard.get("file"), str) for shard in entries)
    ):
        entries = {shard.get("file"): shard for shard in entries}
    if not isinstance(entries, dict) or not all(_is_file_entry(name, entry) for name, entry in entries.items()):
        raise ArtifactError(
            f"{where}: malformed manifest ({field!r} must give every file's bytes and sha256); not a usable dynsel {what}"
        )
    return dict(entries)


def _is_file_entry(name: Any, entry: Any) -> bool:
    size = entry.get("bytes") if isinstance(entry, dict) else None
    return (
        isinstance(name, str)
        and bool(name)
        and isinstance(size, int)
        and not isinstance(size, bool)
        and isinstance(entry.get("sha256"), str)
    )


def _tree_files(directory: Path, prefix: str = "") -> Iterable[str]:
    """Every entry under ``directory`` that is not a directory (files, symbolic links, ...), by relative
    ``/``-separated name; empty directories hold nothing and yield nothing. A subdirectory that cannot be
    read is yielded itself: what it holds cannot be shown to be dynsel's."""
    try:
        with os.scandir(directory) as found:
            entries = list(found)
    except OSError:
        yield prefix.rstrip("/") or "."
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            yield from _tree_files(Path(entry.path), f"{prefix}{entry.name}/")
        else:
            yield f"{prefix}{entry.name}"


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
        raise DynselError(
            f"{where}: holds a dynsel {KIND_NAMES.get(found, found)}, not {'an' if what[0] in 'AEIOUS' else 'a'} {what}; choose another {option}, or pass --force to replace it"
        )


def check_output_file(path: Path, marker: str, *, inputs: Iterable[Path | None] = (), option: str) -> None:
    """The same rule for a single-file output (``report --html``): an existing file is replaced only when
    dynsel wrote it, i.e. its first kilobyte holds ``marker``."""
    path = Path(path)
    if path.is_dir():
        raise DynselError(f"{path}: is a directory; choose a file name for {option}")
    check_not_input(path, [Path(p) for p in inputs if p is not None], option)
    if path.exists():
        try:
            with open(path, "rb") as handle:
                head = handle.read(1024)
        except OSError as exc:
            raise DynselError(f"{path}: cannot be read ({exc.strerror}); choose another {option}") from None
        if marker.encode() not in head:
            raise DynselError(
                f"{path}: exists and was not written by dynsel; choose another {option} or remove it yourself"
            )
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise DynselError(
            f"{path}: cannot be written because {parent} is not a writable directory; choose another {option}"
        )


def artifact_kind(directory: Path) -> str | None:
    """The kind of the dynsel artifact in ``directory`` (``dynsel.plan``, ...): the ``format`` of a manifest
    that validates (:func:`manifest_listing`), or None if there is none."""
    try:
        return local_ownership(Path(directory))[0]
    except ArtifactError:
        return None


def json_object(data: bytes | None) -> dict[str, Any]:
    """The JSON object ``data`` holds, or ``{}`` when it holds none (missing, not UTF-8, not JSON, not an object)."""
    try:
        value = json.loads((data or b"").decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def dynsel_kind(manifest: dict[str, Any]) -> str | None:
    """The artifact kind a manifest names in its ``format``, or None when that is not a dynsel kind."""
    found = manifest.get("format")
    return found if isinstance(found, str) and found in KIND_NAMES else None


def _is_empty(directory: Path) -> bool:
    try:
        with os.scandir(directory) as entries:
            return next(entries, None) is None
    except OSError:
        return False


def _check_not_cwd(final: Path, option: str) -> None:
    resolved, cwd = final.resolve(), Path.cwd().resolve()
    if resolved == cwd:
        raise DynselError(
            f"{final}: is the current directory; choose a new directory for {option} (dynsel replaces the whole {option} directory)"
        )
    if resolved in cwd.parents:
        raise DynselError(
            f"{final}: holds the current directory; choose a new directory for {option} (dynsel replaces the whole {option} directory)"
        )


def check_not_input(
    final: PurePath | str,
    inputs: Iterable[PurePath | str],
    option: str,
    resolve: Callable[[Any], PurePath] = lambda p: Path(p).resolve(),
) -> None:
    """Refuse an ``--out`` that is, holds or lies inside an input of the same command. ``resolve`` gives a
    location's identity (a local path resolved; a URI as :func:`dynsel_cli.formats.storage.shown` spells it)."""
    resolved = resolve(final)
    for source in inputs:
        src = resolve(source)
        if src == resolved:
            raise DynselError(f"{final}: is an input of this command; choose another {option}")
        if resolved in src.parents:
            raise DynselError(f"{final}: holds the input {source}; choose another {option}")
        if src in resolved.parents:
            raise DynselError(f"{final}: lies inside the input {source}; choose an {option} outside it")


def check_run_entries(
    where: Path | str,
    entries: Iterable[tuple[str, bool]],
    check_stage: Callable[[str], None],
    *,
    own: Callable[[str], bool],
    what: str,
    option: str,
) -> None:
    """A run directory or prefix holds only the stage artifacts (``features/``, ``sae/``, ``factors/``,
    ``plan/``) and dynsel's own work files (``own``). ``entries`` are its (name, is a folder) pairs;
    ``check_stage(name)`` applies the rule to one stage folder."""
    for name, is_folder in sorted(set(entries)):
        if name in RUN_STAGES and is_folder:
            check_stage(name)
        elif name in RUN_STAGES:
            raise DynselError(
                f"{where}/{name}: exists and is not a directory; the {what} {where} is not dynsel's: choose a new {option}"
            )
        elif not own(name):
            raise DynselError(
                f"{where}: exists and is not a dynsel {what} (it holds {name!r}); dynsel replaces only its own artifacts: choose a new {option}"
            )


def _check_run_directory(final: Path, force: bool, option: str) -> None:
    """A run directory holds only stage artifacts and their hidden work files (``.features.partial``, ...)."""
    with os.scandir(final) as found:
        entries = [(entry.name, entry.is_dir()) for entry in found]
    check_run_entries(
        final,
        entries,
        lambda name: check_replaceable(final / name, RUN_STAGES[name], force=force, option=option),
        own=lambda name: any(name.startswith(f".{stage}.") for stage in RUN_STAGES),
        what="run directory",
        option=option,
    )
