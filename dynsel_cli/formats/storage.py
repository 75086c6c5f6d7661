"""Where artifacts live: a local path, or a prefix on an object store (``s3://``, ``gs://``, ``abfs://``, ...).

Stages read and write local directories only. This module stands between them and an object store:

- :func:`fetch_artifact` copies a published artifact into the local cache (checking every file's size and
  sha256 as it arrives) and returns the local directory; :func:`fetch_source` does the same for a source
  file or folder.
- :func:`artifact_output` gives a command a local staging directory to build into and publishes it to
  the ``--out`` prefix when the command succeeds (:func:`publish_artifact`).

A URI is opened with ``pyarrow.fs.FileSystem.from_uri`` (imported only when a URI is seen); endpoint and
credentials come from the standard AWS variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_SESSION_TOKEN``, ``AWS_ENDPOINT_URL``, ``AWS_DEFAULT_REGION``, ``~/.aws``) or the URI's query
(``?endpoint_override=HOST:PORT&scheme=http&region=...``). Messages show the URI without credentials
or query.

Publishing cannot be a rename on an object store, so it is a protocol instead (docs/formats.md, "Object
stores"): the manifest is deleted first and uploaded last, and a reader trusts only a manifest whose listed
files all exist with their recorded size and sha256. A marker object (:data:`MARKER`) names everything a
publish may leave behind, so that a prefix left by an interrupted publish is still known to be dynsel's.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence
from urllib.parse import urlsplit

from ..errors import ArtifactError, DynselError
from .common import canonical_json, check_manifest_kind, fingerprint, listed_files, safe_child, sha256_bytes
from .output import KIND_NAMES, MANIFEST_FILE, MANIFEST_NAMES, RUN_KIND, RUN_STAGES, check_kind, check_output

MARKER = ".dynsel-publishing.json"
PUBLISHING = "dynsel.publishing"
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+://")  # two letters at least: C:\\ is a Windows path, not a URI
_CHUNK = 8 << 20
_WORKERS = 8


def is_uri(location: str | Path) -> bool:
    """Whether ``location`` names a place on a file system other than the local one (``scheme://...``)."""
    return isinstance(location, str) and _URI.match(location) is not None


def shown(uri: str) -> str:
    """A URI as messages print it: without credentials, query or trailing slash."""
    parts = urlsplit(uri)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}".rstrip("/")


def describe(location: str | Path) -> str:
    """A path or URI as log lines show it: a URI through :func:`shown`, a path as ``Path`` spells it."""
    return shown(location) if is_uri(location) else str(Path(location))


def cache_root() -> Path:
    """``$DYNSEL_CACHE``, else ``$XDG_CACHE_HOME/dynsel``, else ``~/.cache/dynsel``."""
    if os.environ.get("DYNSEL_CACHE"):
        return Path(os.environ["DYNSEL_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dynsel"


@dataclass(frozen=True)
class Location:
    """A prefix on an object store: the file system, the prefix in its terms (``bucket/key``), and the URI to show."""

    fs: Any  # pyarrow.fs.FileSystem
    path: str
    uri: str

    @property
    def name(self) -> str:
        return self.path.rpartition("/")[2]

    def child(self, name: str) -> "Location":
        return Location(self.fs, f"{self.path}/{name}", f"{self.uri}/{name}")

    def key(self, name: str) -> str:
        return f"{self.path}/{name}"


def locate(where: str | Location) -> Location:
    return where if isinstance(where, Location) else open_location(where)


def open_location(uri: str) -> Location:
    """Open the file system behind ``uri``; a URI pyarrow cannot open is a one-line error."""
    from pyarrow import fs as pafs  # only here: `dynsel --help` and local runs never load it

    where = shown(uri)
    try:
        filesystem, path = pafs.FileSystem.from_uri(uri)
    except (OSError, ValueError) as exc:  # ArrowInvalid is a ValueError
        raise DynselError(f"{where}: cannot open this URI ({_first_line(exc)}); see docs/scale.md, \"Object stores\"") from None
    path = path.rstrip("/")
    if "/" not in path and type(filesystem).__name__ != "LocalFileSystem":
        raise DynselError(f"{where}: names a whole bucket; add a prefix for the artifact (e.g. {where}/run)")
    return Location(filesystem, path, where)


# --- failures: one line that says what to fix -------------------------------------------------------------

_HINTS = (
    ("NO_SUCH_BUCKET", "the bucket {bucket!r} does not exist; create it or fix the URI"),
    ("INVALID_ACCESS_KEY_ID", "the object store refused the credentials (unknown access key); check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
    ("SIGNATURE_DOES_NOT_MATCH", "the object store refused the credentials (wrong secret key); check AWS_SECRET_ACCESS_KEY"),
    ("ACCESS_DENIED", "access denied while {doing}; check the credentials' permissions and the bucket policy"),
    ("NETWORK_CONNECTION", "cannot connect to the object store; check the endpoint (AWS_ENDPOINT_URL or ?endpoint_override=) and the network"),
)


def _failure(exc: OSError, loc: Location, doing: str) -> DynselError:
    text = str(exc)
    for code, hint in _HINTS:
        if code in text:
            return DynselError(f"{loc.uri}: {hint.format(bucket=loc.path.split('/')[0], doing=doing)}")
    return DynselError(f"{loc.uri}: {doing} failed ({_first_line(exc)}); check the URI, the endpoint and the credentials")


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


@contextlib.contextmanager
def _storage(loc: Location, doing: str) -> Iterator[None]:
    try:
        yield
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise _failure(exc, loc, doing) from None


# --- object-level operations ---------------------------------------------------------------------------


def list_objects(loc: Location) -> dict[str, int]:
    """Every object under the prefix, by name relative to it, with its size (directory markers left out)."""
    return {name: int(info.size) for name, info in _file_infos(loc).items()}


def _file_infos(loc: Location) -> dict[str, Any]:
    """pyarrow's FileInfo of every object under the prefix, by name relative to it."""
    from pyarrow import fs as pafs

    with _storage(loc, "listing"):
        infos = loc.fs.get_file_info(pafs.FileSelector(loc.path, recursive=True, allow_not_found=True))
    head = len(loc.path) + 1
    return {info.path[head:]: info for info in infos if info.type == pafs.FileType.File}


def read_object(loc: Location, name: str) -> bytes | None:
    """The bytes of one object, or None when it does not exist."""
    try:
        with _storage(loc, f"reading {name}"), loc.fs.open_input_stream(loc.key(name)) as stream:
            return stream.read()
    except FileNotFoundError:
        return None


def write_object(loc: Location, name: str, data: bytes) -> None:
    with _storage(loc, f"writing {name}"), loc.fs.open_output_stream(loc.key(name)) as stream:
        stream.write(data)


def delete_object(loc: Location, name: str) -> None:
    """Delete one object; one that is already gone is fine."""
    try:
        with _storage(loc, f"deleting {name}"):
            loc.fs.delete_file(loc.key(name))
    except FileNotFoundError:
        pass


def upload_file(source: Path, loc: Location, name: str) -> None:
    with _storage(loc, f"uploading {name}"), open(source, "rb") as handle, loc.fs.open_output_stream(loc.key(name)) as stream:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            stream.write(block)


def download_file(loc: Location, name: str, target: Path, entry: dict[str, Any], what: str) -> None:
    """Copy one listed file of an artifact to ``target``, checking its recorded size and sha256 on the way."""
    digest, size = hashlib.sha256(), 0
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _storage(loc, f"reading {name}"), loc.fs.open_input_stream(loc.key(name)) as stream, open(target, "wb") as handle:
            for block in iter(lambda: stream.read(_CHUNK), b""):
                digest.update(block)
                size += len(block)
                handle.write(block)
    except FileNotFoundError:
        raise ArtifactError(f"{loc.uri}/{name}: missing from the {what}; rebuild it") from None
    if size != entry.get("bytes") or digest.hexdigest() != entry.get("sha256"):
        raise ArtifactError(f"{loc.uri}/{name}: checksum mismatch (modified, truncated, or being replaced right now); rerun, or rebuild the {what}")


def _each(function: Callable[[str], None], names: Iterable[str]) -> None:
    """``function`` over ``names`` on a few threads (object stores are slow per request, fast in parallel)."""
    with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
        for _ in pool.map(function, sorted(names)):
            pass


# --- reading: fetch into the cache ---------------------------------------------------------------------


def fetch_artifact(where: str | Location, kind: str) -> Path:
    """The local copy of the ``kind`` artifact published at ``where`` (a URI or an opened location), downloaded into the cache unless it is there.

    The cache is keyed by the manifest's sha256 (which pins every file's sha256), so a rerun reads one
    object. Files are checked against the manifest as they arrive; objects the manifest does not list
    are ignored.
    """
    loc = locate(where)
    what = KIND_NAMES[kind]
    manifest_name = MANIFEST_FILE[kind]
    data = read_object(loc, manifest_name)
    if data is None:
        raise ArtifactError(
            f"{loc.uri}: no {manifest_name}, so not a published dynsel {what} (or its publishing was interrupted: rerun the command that writes it)"
        )
    manifest = _parse_manifest(data, loc, what)
    check_manifest_kind(manifest, kind, loc.uri, what)
    target = cache_root() / "artifacts" / sha256_bytes(data)[:32] / loc.name
    if target.is_dir():
        return target
    files = listed_files(manifest)
    with _cache_entry(target) as tmp:
        _each(lambda name: download_file(loc, name, safe_child(tmp, name, what), files[name], what), files)
        (tmp / manifest_name).write_bytes(data)
    return target


@contextlib.contextmanager
def _cache_entry(target: Path) -> Iterator[Path]:
    """A temporary folder beside ``target``, renamed to it when complete. Entries never change once made,
    so when another process made ``target`` meanwhile, its copy stays (it may be being read) and ours goes."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.fetch-", dir=target.parent))
    try:
        yield tmp
        _rename_unless_there(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _rename_unless_there(source: Path, target: Path) -> None:
    try:
        os.rename(source, target)
    except OSError:
        if not target.is_dir():
            raise


def fetch_published(where: str | Location, kind: str) -> Path | None:
    """:func:`fetch_artifact`, or None when no intact ``kind`` artifact is published at ``where``."""
    try:
        return fetch_artifact(where, kind)
    except ArtifactError:
        return None


def fetch_source(uri: str) -> Path:
    """The local copy of a source file or folder at ``uri``, downloaded into the cache unless it is there.

    The cache key is the URI and every object's name, size and modification time, so a changed source is
    downloaded again.
    """
    from pyarrow import fs as pafs

    loc = open_location(uri)
    with _storage(loc, "reading the source"):
        info = loc.fs.get_file_info(loc.path)
    single = info.type == pafs.FileType.File
    infos = {"": info} if single else _file_infos(loc)
    if not infos:
        raise DynselError(f"{loc.uri}: no such object or prefix; pass the data set to read")
    objects = sorted((name, int(i.size), i.mtime_ns) for name, i in infos.items())
    target = cache_root() / "sources" / fingerprint({"uri": loc.uri, "objects": objects}) / loc.name
    if target.exists():
        return target
    if single:
        _download_source_file(loc, target)
    else:
        with _cache_entry(target) as tmp:
            _each(lambda name: _copy_object(loc, name, safe_child(tmp, name, "source")), infos)
    return target


def _download_source_file(loc: Location, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        with _storage(loc, "reading the source"), loc.fs.open_input_stream(loc.path) as stream, open(partial, "wb") as handle:
            shutil.copyfileobj(stream, handle, _CHUNK)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def _copy_object(loc: Location, name: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with _storage(loc, f"reading {name}"), loc.fs.open_input_stream(loc.key(name)) as stream, open(target, "wb") as handle:
        shutil.copyfileobj(stream, handle, _CHUNK)


def _parse_manifest(data: bytes, loc: Location, what: str) -> dict[str, Any]:
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{loc.uri}: its manifest is not readable JSON ({exc}); rebuild the {what}") from None
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{loc.uri}: its manifest is not a JSON object; rebuild the {what}")
    return manifest


# --- writing: the replacement rule and the publish protocol ---------------------------------------------


def check_remote_output(loc: Location, kind: str, *, force: bool = False, option: str = "--out") -> dict[str, int]:
    """The rule of :mod:`dynsel_cli.formats.output` for a prefix; returns the objects found under it.

    An empty prefix is written; a dynsel artifact of the same kind (its manifest, or the marker of an
    interrupted publish, says so) replaced; another kind only with ``force``; a prefix holding any object
    that its manifest or marker does not account for is refused, ``force`` or not.
    """
    objects = list_objects(loc)
    if kind == RUN_KIND:
        _check_run_prefix(loc, objects, force, option)
    elif objects:
        found, owned = _ownership(loc, objects)
        foreign = sorted(set(objects) - owned)
        if foreign:
            raise DynselError(
                f"{loc.uri}: holds objects dynsel did not write ({foreign[0]!r}{', …' if len(foreign) > 1 else ''}); dynsel replaces only its own artifacts: choose a new {option} or remove them yourself"
            )
        check_kind(loc.uri, found, kind, force=force, option=option)
    return objects


def _ownership(loc: Location, objects: dict[str, int]) -> tuple[str | None, set[str]]:
    """The dynsel kind at the prefix (manifest first, else the marker of an interrupted publish) and the
    names its manifest and marker account for."""
    found, owned = None, set()
    if MARKER in objects:
        marker = _json_object(read_object(loc, MARKER))
        if marker.get("format") == PUBLISHING and marker.get("kind") in KIND_NAMES and isinstance(marker.get("files"), list):
            found, owned = marker["kind"], {MARKER, *map(str, marker["files"])}
    for name in MANIFEST_NAMES:
        if name in objects:
            manifest = _json_object(read_object(loc, name))
            if manifest.get("format") in KIND_NAMES:
                found = manifest["format"]
                owned |= {name, *listed_files(manifest)}
    return found, owned


def _json_object(data: bytes | None) -> dict[str, Any]:
    try:
        value = json.loads((data or b"").decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def _check_run_prefix(loc: Location, objects: dict[str, int], force: bool, option: str) -> None:
    """A run prefix holds only the stage artifacts (``features/``, ``sae/``, ``factors/``, ``plan/``)."""
    for entry in sorted({name.split("/")[0] for name in objects}):
        if entry not in RUN_STAGES or entry in objects:
            raise DynselError(
                f"{loc.uri}: exists and is not a dynsel run prefix (it holds {entry!r}); dynsel replaces only its own artifacts: choose a new {option}"
            )
        check_remote_output(loc.child(entry), RUN_STAGES[entry], force=force, option=option)


def check_not_input(out: str, inputs: Sequence[str | Path | None], option: str = "--out") -> None:
    """Refuse an ``--out`` URI that is, holds or lies inside a URI the same command reads."""
    target = shown(out)
    for source in inputs:
        if source is None or not is_uri(str(source)):
            continue
        read = shown(str(source))
        if read == target:
            raise DynselError(f"{target}: is an input of this command; choose another {option}")
        if read.startswith(target + "/"):
            raise DynselError(f"{target}: holds the input {read}; choose another {option}")
        if target.startswith(read + "/"):
            raise DynselError(f"{target}: lies inside the input {read}; choose an {option} outside it")


def publish_artifact(local: Path, loc: Location, kind: str, *, force: bool = False) -> bytes:
    """Publish the artifact directory ``local`` at ``loc``; returns the manifest's bytes.

    1. check the rule again (something may have appeared since the command started);
    2. write the marker: the kind and every name this publish may leave (the new files and what is there);
    3. delete the old manifest(s): from here the prefix is not a published artifact;
    4. upload every file the new manifest lists;
    5. upload the manifest, last: from here the prefix is the new artifact;
    6. delete the objects the new manifest does not list, then the marker.

    A crash anywhere leaves either no manifest (readers refuse the prefix; the marker lets the next
    publish replace it) or a manifest whose files are all in place.
    """
    manifest_name = MANIFEST_FILE[kind]
    data = (local / manifest_name).read_bytes()
    files = listed_files(json.loads(data))
    present = check_remote_output(loc, kind, force=force)
    keep = set(files) | {manifest_name}
    write_object(loc, MARKER, canonical_json({"format": PUBLISHING, "kind": kind, "files": sorted(set(present) | keep)}).encode())
    for name in MANIFEST_NAMES:
        if name in present:
            delete_object(loc, name)
    _each(lambda name: upload_file(safe_child(local, name, KIND_NAMES[kind]), loc, name), files)
    write_object(loc, manifest_name, data)
    _each(lambda name: delete_object(loc, name), set(present) - keep - {MARKER})
    delete_object(loc, MARKER)
    return data


def adopt(local: Path, manifest: bytes) -> Path:
    """Move a just-published artifact into the cache, where :func:`fetch_artifact` finds it; returns its new path."""
    target = cache_root() / "artifacts" / sha256_bytes(manifest)[:32] / local.name
    target.parent.mkdir(parents=True, exist_ok=True)
    _rename_unless_there(local, target)
    shutil.rmtree(local, ignore_errors=True)  # still here when the cache had it already
    for folder in (local.parent, local.parent.parent):  # the staging folders, once nothing is left in them
        with contextlib.suppress(OSError):
            folder.rmdir()
    return target


def staging_dir(loc: Location) -> Path:
    """Where an artifact bound for ``loc`` is built: one folder per URI, so resume state survives a rerun."""
    return cache_root() / "staging" / sha256_bytes(loc.uri.encode())[:16] / loc.name


@contextlib.contextmanager
def artifact_output(out: str | Path, kind: str, *, force: bool = False, inputs: Sequence[str | Path | None] = ()) -> Iterator[Path]:
    """The directory a command writes its ``kind`` artifact into.

    A local ``out`` is itself. For a URI, the prefix is checked before any work (the replacement rule,
    and that it can be written), the command builds into a local staging directory, and that is published
    to the prefix when the command succeeds; a failed command publishes nothing.
    """
    if not is_uri(str(out)):
        yield Path(out)
        return
    check_not_input(str(out), inputs)
    loc = open_location(str(out))
    check_remote_output(loc, kind, force=force)
    check_writable(loc)
    staged = staging_dir(loc)
    yield staged
    adopt(staged, publish_artifact(staged, loc, kind, force=force))


def check_writable(loc: Location) -> None:
    """Write and delete a probe object, so that refused credentials or a read-only bucket are found before any work."""
    probe = loc.key(f".dynsel-write-check-{os.getpid()}")
    with _storage(loc, "writing a test object"):
        with loc.fs.open_output_stream(probe):
            pass
        loc.fs.delete_file(probe)


def local_input(location: str | Path | None, kind: str) -> Path | None:
    """The local directory of an input artifact: ``location`` itself, or its cached copy for a URI."""
    if location is None:
        return None
    return fetch_artifact(str(location), kind) if is_uri(str(location)) else Path(location)


def local_source(location: str | Path) -> Path:
    """The local path of a source: ``location`` itself, or its cached copy for a URI."""
    return fetch_source(str(location)) if is_uri(str(location)) else Path(location)


# --- a run's destination: a local run directory or a run prefix ---------------------------------------------


@dataclass(frozen=True)
class LocalRun:
    """A run directory: each stage builds straight into ``root``/ARTIFACT."""

    root: Path

    @property
    def out(self) -> Path:
        return self.root

    def existing(self, artifact: str, kind: str) -> Path | None:
        return self.root / artifact

    def shown(self, artifact: str) -> str:
        return str(self.root / artifact)

    def publish(self, artifact: str, kind: str, *, force: bool = False) -> Path:
        return self.root / artifact


@dataclass(frozen=True)
class RemoteRun:
    """A run prefix: each stage builds into the staging directory ``root``/ARTIFACT and is published to
    ``loc``/ARTIFACT as it finishes; what is published already is fetched (once) to be checked."""

    loc: Location
    root: Path

    @property
    def out(self) -> str:
        return self.loc.uri

    def existing(self, artifact: str, kind: str) -> Path | None:
        return fetch_published(self.loc.child(artifact), kind)

    def shown(self, artifact: str) -> str:
        return self.loc.child(artifact).uri

    def publish(self, artifact: str, kind: str, *, force: bool = False) -> Path:
        built = self.root / artifact
        return adopt(built, publish_artifact(built, self.loc.child(artifact), kind, force=force))


def run_destination(out: str | Path, *, inputs: Sequence[str | Path | None] = (), force: bool = False) -> LocalRun | RemoteRun:
    """Where ``dynsel run --out OUT`` puts its artifacts, after checking that ``out`` may be written."""
    if not is_uri(str(out)):
        check_output(Path(out), RUN_KIND, inputs=[Path(p) for p in inputs if p is not None and not is_uri(str(p))], force=force)
        return LocalRun(Path(out))
    check_not_input(str(out), inputs)
    loc = open_location(str(out))
    check_remote_output(loc, RUN_KIND, force=force)
    check_writable(loc)
    return RemoteRun(loc, staging_dir(loc))
