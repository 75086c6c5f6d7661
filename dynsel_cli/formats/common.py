"""Shared plumbing of every artifact: atomic writes, checksums, manifests.

Every artifact is a directory. It is built in a temporary sibling directory and renamed into place only
when complete, so a reader never sees a half-written artifact and a crash leaves the previous version
intact. Every manifest is canonical JSON (sorted keys, no timestamps) so that the same inputs give
byte-identical artifacts.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import ArtifactError, DynselError
from .output import check_output_path, check_replaceable, listed_files  # noqa: F401 (listed_files: re-exported)
from .schema import check_schema

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: temporaries of killed runs are not swept
    fcntl = None  # type: ignore[assignment]

FORMAT_VERSION = 1
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and a trailing newline: stable bytes for stable inputs."""
    return json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def fingerprint(obj: Any) -> str:
    """A short, stable identity of a JSON-able value (settings, input fingerprints)."""
    return sha256_bytes(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode())[:32]


class IdRange:
    """Running min and max of the sample ids an artifact holds, for its manifest's id fields."""

    def __init__(self) -> None:
        self.low: int | None = None
        self.high: int | None = None

    def update(self, ids: Any) -> None:
        if len(ids):
            low, high = int(min(ids)), int(max(ids))
            self.low = low if self.low is None else min(self.low, low)
            self.high = high if self.high is None else max(self.high, high)

    def manifest_fields(self, n_samples: int) -> dict[str, Any]:
        """``id_min``, ``id_max`` and ``ids_dense``: whether the (unique) ids are exactly 0 … n_samples − 1, so
        an id is also the row position in the data set (docs/consumers.md, "Sizing the data set")."""
        dense = self.low == 0 and self.high == n_samples - 1
        return {"id_min": self.low, "id_max": self.high, "ids_dense": bool(dense)}


def id_fields(ids: Any) -> dict[str, Any]:
    """:meth:`IdRange.manifest_fields` of one array of unique ids."""
    span = IdRange()
    span.update(ids)
    return span.manifest_fields(len(ids))


def check_unique_ids(ids: Any, where: Any) -> None:
    """ArtifactError (exit 2) naming a repeated id: a plan lists ids, and one id for two rows is no plan."""
    import numpy as np  # this module stays import-light (the CLI's start-up reads manifests through it)

    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) > 1 and not bool(np.all(np.diff(ids) > 0)):
        values, counts = np.unique(ids, return_counts=True)
        if len(values) != len(ids):
            repeated = int(values[counts > 1][0])
            raise ArtifactError(
                f"{where}: sample id {repeated} appears {int(counts[counts > 1][0])} times; every row needs its "
                "own id: rebuild the features with unique ids"
            )


def write_json(path: Path, obj: Any) -> None:
    path.write_text(canonical_json(obj), encoding="utf-8")


def read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing; is this a {what}?{_inner_artifact_hint(path.parent, what)}") from None
    except OSError as exc:
        raise ArtifactError(f"{path}: not readable JSON ({exc}); rebuild the {what}") from None
    return parse_json(data, path, what)


_KIND_WORDS = {"plan": "dynsel.plan", "factor": "dynsel.factors", "feature": "dynsel.features", "sae": "dynsel.sae"}


def _inner_artifact_hint(folder: Path, what: str) -> str:
    """Where ``folder`` holds an artifact of the kind ``what`` names (a `dynsel run` directory does): ' pass it'."""
    kinds = [kind for word, kind in _KIND_WORDS.items() if word in what.lower()]
    if not kinds or not folder.is_dir():
        return ""
    try:
        children = sorted(child for child in folder.iterdir() if child.is_dir())
    except OSError:
        return ""
    for child in children:
        for name in ("manifest.json", "_manifest.json"):
            try:
                if json.loads((child / name).read_bytes()).get("format") == kinds[0]:
                    return f" {folder} holds one: pass {child}"
            except (OSError, ValueError, AttributeError):
                continue
    return ""


def parse_json(data: bytes, where: Path | str, what: str) -> dict[str, Any]:
    """The JSON object in ``data`` (read from ``where``); ArtifactError when it is not one."""
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{where}: not readable JSON ({exc}); rebuild the {what}") from None
    except RecursionError:
        raise ArtifactError(f"{where}: not readable JSON (nested too deeply); rebuild the {what}") from None
    if not isinstance(value, dict):
        raise ArtifactError(f"{where}: expected a JSON object; rebuild the {what}")
    return value


@contextlib.contextmanager
def atomic_directory(final: Path, kind: str | None = None, force: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary directory next to ``final``; on success, swap it into place.

    With ``kind`` (an artifact kind), an existing ``final`` is replaced only if the output-safety rule
    allows it (:func:`dynsel_cli.formats.output.check_replaceable`), checked again just before the swap
    so that a folder created meanwhile is not lost.

    On any exception the temporary directory is removed and ``final`` is left as it was. The temporary
    is ``artifact/`` inside a folder of dynsel's own, ``.NAME.tmp-<16 random hex digits>/``, that also holds
    dynsel's marker file (:data:`TEMPORARY_MARKER`) and is flock'ed while its writer lives; one left by a
    killed writer is removed by the next write of the same ``final`` (see :func:`sweep_stale_temporaries`),
    and a user's folder of a similar name never is. An existing ``final`` is replaced by one atomic
    exchange where the system has it (Linux), so it never disappears, even for an instant; elsewhere by
    two renames (the old version parked in a marked ``.NAME.old-*/artifact`` in between).
    """
    final = Path(final)
    parent = final.parent if str(final.parent) else Path(".")
    check_output_path(final)
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DynselError(
            f"{final}: cannot create output directory ({exc.strerror}); choose a writable --out"
        ) from None
    if kind is not None:
        check_replaceable(final, kind, force=force)
    sweep_stale_temporaries(final)
    try:
        holder, held = _held_temporary(parent, f".{final.name}{_TMP}", final.name)
    except OSError as exc:
        raise DynselError(f"{parent}: not writable ({exc.strerror}); choose a writable --out") from None
    try:
        tmp = holder / _PARKED
        os.mkdir(tmp, 0o700)
        _apply_umask(tmp)
        yield tmp
        for child in tmp.rglob("*"):
            _apply_umask(child)
        if kind is not None:
            check_replaceable(final, kind, force=force)
        if not final.exists():
            os.replace(tmp, final)
        elif not _exchange(tmp, final):  # else ``tmp`` is now the previous version, removed with ``holder``
            old, old_held = _held_temporary(parent, f".{final.name}{_OLD}", final.name)
            try:
                os.replace(final, old / _PARKED)
                os.replace(tmp, final)
                _remove_temporary(old)
            finally:
                _release(old_held)
        _remove_temporary(holder)
    except BaseException:
        _remove_temporary(holder)
        raise
    finally:
        _release(held)


_TMP, _OLD = ".tmp-", ".old-"
_PARKED = "artifact"  # the artifact inside a temporary: the one being written, or the previous version parked
TEMPORARY_MARKER = (
    ".dynsel-temporary"  # in every temporary folder dynsel makes: only folders holding it are ever removed or moved
)
TEMPORARY_FORMAT = "dynsel.temporary"
_RANDOM_SUFFIX = re.compile(r"[0-9a-f]{16}")


def hold_directory(path: Path) -> int | None:
    """Open ``path`` (a directory) and take an exclusive flock on it: the fd (close it to let go), or None
    if that fails (another process holds it, or the file system cannot lock)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return None
    if fcntl is None:  # pragma: no cover - not POSIX: held without a lock
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _discard(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def _release(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)


def _held_temporary(parent: Path, prefix: str, final_name: str) -> tuple[Path, int | None]:
    """A new folder ``PREFIX<16 random hex digits>`` in ``parent`` holding dynsel's marker file, flock'ed by
    this process while it writes (unlocked where flock is unavailable)."""
    for _ in range(100):
        tmp = parent / f"{prefix}{secrets.token_hex(8)}"
        try:
            os.mkdir(tmp, 0o700)
        except FileExistsError:  # pragma: no cover - 64 random bits
            continue
        fd: int | None = None
        if fcntl is not None:
            fd = os.open(tmp, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # a concurrent sweep took the empty folder for stale between mkdir and flock
                os.close(fd)
                continue
            except OSError:  # pragma: no cover - a file system without flock: write unlocked (nothing is swept there)
                pass
            else:
                if os.fstat(fd).st_nlink == 0:  # ... and removed it: make another
                    os.close(fd)
                    continue
        with open(tmp / TEMPORARY_MARKER, "x", encoding="utf-8") as handle:
            handle.write(canonical_json({"format": TEMPORARY_FORMAT, "for": final_name}))
        return tmp, fd
    raise OSError(errno.EAGAIN, "could not make a temporary directory", str(parent))  # pragma: no cover


def _remove_temporary(path: Path) -> None:
    """Remove one of dynsel's temporary folders, its marker last: a removal cut short by a kill leaves a
    folder the next sweep still knows as dynsel's (the marker is there, or nothing is)."""
    try:
        entries = [entry.name for entry in os.scandir(path) if entry.name != TEMPORARY_MARKER]
    except FileNotFoundError:
        return
    except OSError:
        entries = []
    for name in entries:
        _discard(path / name)
    try:
        if any(entry.name != TEMPORARY_MARKER for entry in os.scandir(path)):
            return  # something could not be removed: keep the marker, so the next sweep tries again
    except OSError:
        return
    with contextlib.suppress(FileNotFoundError):
        (path / TEMPORARY_MARKER).unlink()
    with contextlib.suppress(OSError):
        os.rmdir(path)


def is_dynsel_temporary(path: Path) -> bool:
    """Whether the folder ``path`` is one of dynsel's temporaries: it holds dynsel's marker file."""
    return (Path(path) / TEMPORARY_MARKER).is_file()


def sweep_stale_temporaries(final: Path) -> None:
    """Remove the temporary siblings of ``final`` (``.NAME.tmp-*``, ``.NAME.old-*``) whose writer is gone.

    Only dynsel's own are touched: a folder whose name is ``.NAME.tmp-`` or ``.NAME.old-`` and 16 random
    hex digits, holding dynsel's marker file (or nothing at all: a writer killed between making it and
    writing the marker), and that nobody holds. A writer holds an flock on its temporary folder, which the
    kernel drops when the process dies, so a folder nobody holds was left by a killed run. If a killed
    two-rename replacement left ``final`` missing, the previous version parked in ``.NAME.old-*/artifact``
    is put back first. Without flock (not POSIX) nothing is removed.
    """
    if fcntl is None:  # pragma: no cover - not POSIX
        return
    final = Path(final)
    parent = final.parent if str(final.parent) else Path(".")
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return
    for entry in entries:
        for marker in (_TMP, _OLD):
            head = f".{final.name}{marker}"
            if (
                entry.name.startswith(head)
                and _RANDOM_SUFFIX.fullmatch(entry.name[len(head) :])
                and entry.is_dir(follow_symlinks=False)
            ):
                break
        else:
            continue
        path = Path(entry.path)
        fd = hold_directory(path)
        if fd is None:
            continue  # a live writer's
        try:
            if is_dynsel_temporary(path):
                parked = path / _PARKED
                if marker == _OLD and parked.is_dir() and not final.exists():
                    os.replace(parked, final)
                _remove_temporary(path)
            else:
                os.rmdir(path)  # only when empty (made, not yet marked); a folder holding anything is not dynsel's
        except OSError:
            pass
        finally:
            _release(fd)


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2
_renameat2: Any = None


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths (Linux renameat2 RENAME_EXCHANGE); False where that is unavailable."""
    global _renameat2
    if not sys.platform.startswith("linux"):
        return False
    if _renameat2 is None:
        try:
            function = ctypes.CDLL(None, use_errno=True).renameat2
            function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            function.restype = ctypes.c_int
            _renameat2 = function
        except (AttributeError, OSError):  # pragma: no cover - glibc < 2.28, musl
            _renameat2 = False
    if _renameat2 is False:  # pragma: no cover
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):  # kernel or file system without it
        return False
    raise OSError(err, os.strerror(err), str(b))


def write_text_atomic(path: Path, text: str) -> None:
    """Write a text file by temporary file and rename, with the permissions a plain open() would give."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent if str(path.parent) else ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        _apply_umask(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _apply_umask(path: Path) -> None:
    """mkdtemp/mkstemp create owner-only entries; artifacts get the permissions a plain mkdir/open would."""
    umask = os.umask(0)
    os.umask(umask)
    mode = 0o777 if path.is_dir() else 0o666
    os.chmod(path, mode & ~umask)


def file_entry(path: Path) -> dict[str, Any]:
    """The manifest record of one file: its size and sha256."""
    return {"bytes": path.stat().st_size, "sha256": sha256_file(path)}


def verify_files(directory: Path, files: dict[str, dict[str, Any]], what: str) -> None:
    """Check every listed file's size and sha256; raise ArtifactError naming the first bad one."""
    for name, entry in sorted(files.items()):
        path = safe_child(directory, name, what)
        if not path.is_file():
            raise ArtifactError(f"{path}: missing from the {what}; rebuild it")
        if path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
            raise ArtifactError(f"{path}: checksum mismatch (modified or truncated); rebuild the {what}")


def safe_child(directory: Path, name: str, what: str) -> Path:
    """Resolve a manifest-relative file name, refusing names that escape the artifact directory."""
    candidate = (directory / name).resolve()
    root = directory.resolve()
    if root != candidate and root not in candidate.parents:
        raise ArtifactError(f"{directory}: manifest names a file outside the {what} ({name!r}); refusing")
    return candidate


def read_artifact_manifest(
    path: Path, kind: str, what: str, a_what: str, made_by: str, verify: bool = True, name: str = "manifest.json"
) -> dict[str, Any]:
    """Read an artifact directory's manifest, check its kind and version, and (by default) its files' checksums.

    ``what`` names the artifact in messages ("SAE checkpoint"); ``a_what`` with its article ("an SAE checkpoint directory").
    """
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"{path}: not {a_what} (run `{made_by}` to make one)")
    manifest = read_json(path / name, what)
    check_manifest_kind(manifest, kind, path, what)
    if verify:
        verify_files(path, manifest["files"], what)
    return manifest


def check_manifest_kind(manifest: dict[str, Any], kind: str, path: Path | str, what: str) -> None:
    if manifest.get("format") != kind:
        raise ArtifactError(f"{path}: not a dynsel {what} (format {manifest.get('format')!r}, expected {kind!r})")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: {what} format version {version!r} is not supported (this dynsel reads version {FORMAT_VERSION})"
        )
    check_schema(manifest, kind, path, what)
