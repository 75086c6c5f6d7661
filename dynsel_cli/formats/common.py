"""Shared plumbing of every artifact: atomic writes, checksums, manifests.

Every artifact is a directory. It is built in a temporary sibling directory and renamed into place only
when complete, so a reader never sees a half-written artifact and a crash leaves the previous version
intact. Every manifest is canonical JSON (sorted keys, no timestamps) so that the same inputs give
byte-identical artifacts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from ..errors import ArtifactError, DynselError

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


def write_json(path: Path, obj: Any) -> None:
    path.write_text(canonical_json(obj), encoding="utf-8")


def read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing; is this a {what}?") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: not readable JSON ({exc}); rebuild the {what}") from None
    if not isinstance(value, dict):
        raise ArtifactError(f"{path}: expected a JSON object; rebuild the {what}")
    return value


@contextlib.contextmanager
def atomic_directory(final: Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a fresh temporary directory next to ``final``; on success, swap it into place.

    On any exception the temporary directory is removed and ``final`` is left as it was.
    """
    final = Path(final)
    parent = final.parent if str(final.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DynselError(f"{final}: cannot create output directory ({exc.strerror}); choose a writable --out") from None
    if final.exists() and not final.is_dir():
        raise DynselError(f"{final}: exists and is not a directory; choose another --out")
    if final.exists() and not overwrite:
        raise DynselError(f"{final}: already exists; remove it or pass --overwrite")
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=parent))
    except OSError as exc:
        raise DynselError(f"{parent}: not writable ({exc.strerror}); choose a writable --out") from None
    try:
        _apply_umask(tmp)
        yield tmp
        for child in tmp.rglob("*"):
            _apply_umask(child)
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=parent))
            os.replace(final, old / "artifact")
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
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


def read_artifact_manifest(path: Path, kind: str, what: str, a_what: str, made_by: str, verify: bool = True, name: str = "manifest.json") -> dict[str, Any]:
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


def check_manifest_kind(manifest: dict[str, Any], kind: str, path: Path, what: str) -> None:
    if manifest.get("format") != kind:
        raise ArtifactError(f"{path}: not a dynsel {what} (format {manifest.get('format')!r}, expected {kind!r})")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: {what} format version {version!r} is not supported (this dynsel reads version {FORMAT_VERSION})"
        )
