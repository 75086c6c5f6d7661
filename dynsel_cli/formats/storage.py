"""Where artifacts live: a local path, or a prefix on an object store (``s3://``, ``gs://``, ``abfs://``, ...).

Stages read and write local directories only. This module stands between them and an object store:
:func:`local_input` and :func:`local_source` give the local copy of an input artifact or a source,
fetched into the cache (:func:`cache_root`) and checked as it arrives; :func:`artifact_output` gives a
command a local staging directory to build into and publishes it to the ``--out`` prefix when the command
succeeds (:func:`publish_artifact`).

A URI is opened with ``pyarrow.fs.FileSystem.from_uri`` (imported only when a URI is seen); endpoint and
credentials come from the standard AWS variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_SESSION_TOKEN``, ``AWS_ENDPOINT_URL``, ``AWS_DEFAULT_REGION``, ``~/.aws``) or the URI's query
(``?endpoint_override=HOST:PORT&scheme=http&region=...``). Messages show the URI without credentials
or query.

Every URI, ``--out`` or input, goes through :func:`canonical_uri` once, in :func:`open_location` and in
the input-identity check: a path with a ``.``, ``..`` or empty segment is refused (object stores do not
resolve them as a file system does: the listing would see one prefix and the writes land in another),
and percent-escapes are decoded as pyarrow decodes them, so the listing, the ownership rule, the
input-identity check and the writes all name the same keys.

Publishing cannot be a rename on an object store, so it is a protocol instead (docs/formats.md, "Object
stores"): the manifest is deleted first and uploaded last, and a reader trusts only a manifest whose listed
files all exist with their recorded size and sha256. A marker object (:data:`MARKER`) names everything a
publish may leave behind, so that a prefix left by an interrupted publish is still known to be dynsel's.
Empty ``KEY/`` directory objects (pyarrow leaves one when it deletes the last object under a prefix) are
not files: every listing here leaves them out.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO
from urllib.parse import unquote, urlsplit

from ..errors import ArtifactError, DynselError
from .common import (
    canonical_json,
    check_manifest_kind,
    fingerprint,
    hold_directory,
    listed_files,
    parse_json,
    safe_child,
    sha256_bytes,
)
from .output import (
    KIND_NAMES,
    MANIFEST_FILE,
    MANIFEST_NAMES,
    RUN_KIND,
    RUN_STAGES,
    check_kind,
    check_not_input,
    check_run_entries,
    dynsel_kind,
    json_object,
    manifest_listing,
)

MARKER = ".dynsel-publishing.json"
PUBLISHING = "dynsel.publishing"
PROBE = (
    ".dynsel-write-check-"  # the test object of :func:`check_writable`; one left by a killed command is dynsel's too
)
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+://")  # two letters at least: C:\\ is a Windows path, not a URI
_CHUNK = 8 << 20
_WORKERS = 8
_SECOND = 1_000_000_000


def is_uri(location: str | Path) -> bool:
    """Whether ``location`` names a place on a file system other than the local one (``scheme://...``)."""
    return isinstance(location, str) and _URI.match(location) is not None


def shown(uri: str) -> str:
    """A URI as messages print it, and its identity: without credentials (``KEY:SECRET@``), query or
    trailing slash. A user part without a password stays: ``abfs://container@account`` names the container."""
    parts = urlsplit(uri)
    host = parts.netloc.rpartition("@")[2] if parts.password is not None else parts.netloc
    return f"{parts.scheme}://{host}{parts.path}".rstrip("/")


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

    def child(self, name: str) -> Location:
        return Location(self.fs, self.key(name), self.at(name))

    def key(self, name: str) -> str:
        """The store's key of ``name`` under the prefix (the prefix itself for ``""``)."""
        return f"{self.path}/{name}" if name else self.path

    def at(self, name: str) -> str:
        """The URI of ``name`` under the prefix, as messages show it."""
        return f"{self.uri}/{name}" if name else self.uri


def canonical_uri(uri: str) -> str:
    """The identity of ``uri``: :func:`shown`'s spelling with its path percent-decoded (as pyarrow decodes
    it), after refusing a path with a ``.``, ``..`` or empty segment (trailing slashes are dropped, as
    before). No request is made: the input-identity check uses it on every URI a command reads."""
    parts = urlsplit(uri)
    host = parts.netloc.rpartition("@")[2] if parts.password is not None else parts.netloc
    path = unquote(parts.path.rstrip("/"))
    segments = path.split("/")[1:] if path else []
    bad = [segment for segment in segments if segment in ("", ".", "..")]
    if bad:
        kinds = " and ".join(dict.fromkeys("an empty segment ('//')" if b == "" else f"a {b!r} segment" for b in bad))
        resolved = _resolve_segments(segments)
        fix = f"write it as {parts.scheme}://{host}/{resolved}" if resolved else "write the path without them"
        raise DynselError(
            f"{shown(uri)}: has {kinds} in its path, which dynsel does not resolve (an object store reads keys literally); {fix}"
        )
    return f"{parts.scheme}://{host}{path}"


def _resolve_segments(segments: Sequence[str]) -> str:
    """The path ``segments`` name when '.', '..' and empty segments are resolved as a file system would;
    '' when that is the bucket itself or above it."""
    kept: list[str] = []
    for segment in segments:
        if segment == "..":
            if not kept:
                return ""
            kept.pop()
        elif segment not in ("", "."):
            kept.append(segment)
    return "/".join(kept)


def open_location(uri: str) -> Location:
    """Open the file system behind ``uri``; a URI pyarrow cannot open, or one :func:`canonical_uri` refuses,
    is a one-line error."""
    where = canonical_uri(uri)  # before pyarrow: it may make a request (the bucket's region)
    from pyarrow import fs as pafs  # only here: `dynsel --help` and local runs never load it

    try:
        filesystem, path = pafs.FileSystem.from_uri(uri)
    except (OSError, ValueError) as exc:  # ArrowInvalid is a ValueError
        raise DynselError(
            f'{shown(uri)}: cannot open this URI ({_first_line(exc)}); see docs/scale.md, "Object stores"'
        ) from None
    path = path.rstrip("/")
    if any(segment in ("", ".", "..") for segment in path.split("/")[1:]):  # what pyarrow made of it: the keys used
        raise DynselError(f"{shown(uri)}: names a key with a '.', '..' or empty segment; write the path without them")
    if "/" not in path and type(filesystem).__name__ != "LocalFileSystem":
        raise DynselError(f"{where}: names a whole bucket; add a prefix for the artifact (e.g. {where}/run)")
    return Location(filesystem, path, where)


# --- failures: one line that says what to fix -------------------------------------------------------------

_HINTS = (
    ("NO_SUCH_BUCKET", "the bucket {bucket!r} does not exist; create it or fix the URI"),
    (
        "INVALID_ACCESS_KEY_ID",
        "the object store refused the credentials (unknown access key); check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
    ),
    (
        "SIGNATURE_DOES_NOT_MATCH",
        "the object store refused the credentials (wrong secret key); check AWS_SECRET_ACCESS_KEY",
    ),
    ("ACCESS_DENIED", "access denied while {doing}; check the credentials' permissions and the bucket policy"),
    (
        "NETWORK_CONNECTION",
        "cannot connect to the object store; check the endpoint (AWS_ENDPOINT_URL or ?endpoint_override=) and the network",
    ),
)


def _failure(exc: OSError, loc: Location, doing: str) -> DynselError:
    text = str(exc)
    for code, hint in _HINTS:
        if code in text:
            return DynselError(f"{loc.uri}: {hint.format(bucket=loc.path.split('/')[0], doing=doing)}")
    return DynselError(
        f"{loc.uri}: {doing} failed ({_first_line(exc)}); check the URI, the endpoint and the credentials"
    )


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


@contextlib.contextmanager
def _storage(loc: Location, doing: str) -> Iterator[None]:
    """Turn the store's OSErrors into one line; FileNotFoundError passes through for the caller to word."""
    try:
        yield
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise _failure(exc, loc, doing) from None


# --- object-level operations ---------------------------------------------------------------------------


def _file_infos(loc: Location) -> dict[str, Any]:
    """pyarrow's FileInfo of every object under the prefix, by name relative to it (directory objects left out)."""
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


def delete_object(loc: Location, name: str, doing: str = "") -> None:
    """Delete one object; one that is already gone is fine."""
    try:
        with _storage(loc, doing or f"deleting {name}"):
            loc.fs.delete_file(loc.key(name))
    except FileNotFoundError:
        pass


def upload_file(source: Path, loc: Location, name: str) -> None:
    try:
        with (
            _storage(loc, f"uploading {name}"),
            open(source, "rb") as handle,
            loc.fs.open_output_stream(loc.key(name)) as stream,
        ):
            _copy(handle, stream)
    except FileNotFoundError as exc:  # the staged file went away under us
        raise DynselError(f"{loc.at(name)}: uploading failed ({_first_line(exc)}); rerun the command") from None


def _download(loc: Location, name: str, target: Path) -> tuple[int, str]:
    """Copy one object to the file ``target``; its size and sha256."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with (
        _storage(loc, f"reading {name or 'the source'}"),
        loc.fs.open_input_stream(loc.key(name)) as stream,
        open(target, "wb") as handle,
    ):
        return _copy(stream, handle)


def _copy(source: BinaryIO, target: BinaryIO) -> tuple[int, str]:
    """Copy a stream in blocks; the size and sha256 of what went through."""
    digest, size = hashlib.sha256(), 0
    for block in iter(lambda: source.read(_CHUNK), b""):
        digest.update(block)
        size += len(block)
        target.write(block)
    return size, digest.hexdigest()


def _each(function: Callable[[str], None], names: Iterable[str]) -> None:
    """``function`` over ``names`` on a few threads (object stores are slow per request, fast in parallel).
    The first failure is raised as soon as it happens; work not yet started is cancelled."""
    pool = ThreadPoolExecutor(max_workers=_WORKERS)
    try:
        for done in as_completed([pool.submit(function, name) for name in sorted(names)]):
            done.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# --- reading: fetch into the cache ---------------------------------------------------------------------


def read_manifest(loc: Location, kind: str) -> tuple[bytes, dict[str, Any]]:
    """The bytes and content of the ``kind`` manifest published at ``loc`` (its kind and version checked)."""
    what, name = KIND_NAMES[kind], MANIFEST_FILE[kind]
    data = read_object(loc, name)
    if data is None:
        raise ArtifactError(
            f"{loc.uri}: no {name}, so not a published dynsel {what} (or its publishing was interrupted: rerun the command that writes it)"
        )
    manifest = parse_json(data, loc.at(name), what)
    check_manifest_kind(manifest, kind, loc.uri, what)
    return data, manifest


def fetch_artifact(where: str | Location, kind: str) -> Path:
    """The local copy of the ``kind`` artifact published at ``where``, downloaded into the cache unless it is there.

    The cache is keyed by the manifest's sha256 (which pins every file's sha256), so a rerun reads one
    object. Files are checked against the manifest as they arrive; objects the manifest does not list
    are ignored.
    """
    loc = where if isinstance(where, Location) else open_location(where)
    data, manifest = read_manifest(loc, kind)
    target = _artifact_entry(data, loc.name)
    if target.is_dir():
        return target
    what = KIND_NAMES[kind]
    files = listed_files(manifest, loc.at(MANIFEST_FILE[kind]), what)
    with _cache_entry(target) as tmp:
        _each(lambda name: _fetch_file(loc, name, safe_child(tmp, name, what), files[name], what), files)
        (tmp / MANIFEST_FILE[kind]).write_bytes(data)
    return target


def _fetch_file(loc: Location, name: str, target: Path, entry: dict[str, Any], what: str) -> None:
    try:
        found = _download(loc, name, target)
    except FileNotFoundError:
        raise ArtifactError(f"{loc.at(name)}: missing from the {what}; rebuild it") from None
    if found != (entry["bytes"], entry["sha256"]):
        raise ArtifactError(
            f"{loc.at(name)}: checksum mismatch (modified, truncated, or being replaced right now); rerun, or rebuild the {what}"
        )


def _artifact_entry(manifest: bytes, name: str) -> Path:
    return cache_root() / "artifacts" / sha256_bytes(manifest)[:32] / name


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


def fetch_source(uri: str) -> Path:
    """The local copy of a source file or folder at ``uri``, downloaded into the cache unless it is there.

    The cache key is the URI and every object's name, size and modification time. Object stores keep
    modification times in whole seconds, so a source replaced within the second keeps its key: an entry is
    reused only when its download started at least a second after the newest object's modification time
    (git's racy-clean rule); the entry's own mtime records when its download started.
    """
    from pyarrow import fs as pafs

    loc = open_location(uri)
    with _storage(loc, "reading the source"):
        info = loc.fs.get_file_info(loc.path)
    infos = {"": info} if info.type == pafs.FileType.File else _file_infos(loc)
    if not infos:
        raise DynselError(f"{loc.uri}: no such object or prefix; pass the data set to read")
    objects = sorted((name, int(i.size), i.mtime_ns) for name, i in infos.items())
    target = cache_root() / "sources" / fingerprint({"uri": loc.uri, "objects": objects}) / loc.name
    newest = max(i.mtime_ns or 0 for i in infos.values())
    with contextlib.suppress(FileNotFoundError):
        if target.stat().st_mtime_ns >= newest + _SECOND:
            return target
    started = time.time_ns()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        _each(
            lambda name: _fetch_source_object(loc, name, infos[name], safe_child(tmp, name, "source") if name else tmp),
            infos,
        )
        os.utime(tmp, ns=(started, started))
        if target.is_dir():  # a racy folder entry: replaced (a file entry is replaced by the rename itself)
            shutil.rmtree(target, ignore_errors=True)
        _rename_unless_there(tmp, target)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
    return target


def _fetch_source_object(loc: Location, name: str, info: Any, target: Path) -> None:
    """Download one object of a source; one replaced or deleted while it was read (whose bytes could be
    stitched from two versions) is refused."""
    changed = DynselError(f"{loc.at(name)}: changed while downloading; rerun")
    try:
        size, _ = _download(loc, name, target)
        with _storage(loc, "reading the source"):
            now = loc.fs.get_file_info(loc.key(name))
    except FileNotFoundError:
        raise changed from None
    if size != info.size or (now.type, now.size, now.mtime_ns) != (info.type, info.size, info.mtime_ns):
        raise changed


def local_input(location: str | Path | None, kind: str) -> Path | None:
    """The local directory of an input artifact: ``location`` itself, or its cached copy for a URI."""
    if location is None:
        return None
    return fetch_artifact(str(location), kind) if is_uri(str(location)) else Path(location)


def local_source(location: str | Path) -> Path:
    """The local path of a source: ``location`` itself, or its cached copy for a URI."""
    return fetch_source(str(location)) if is_uri(str(location)) else Path(location)


# --- writing: the replacement rule and the publish protocol ---------------------------------------------


def check_remote_output(loc: Location, kind: str, *, force: bool = False, option: str = "--out") -> set[str]:
    """The rule of :mod:`dynsel_cli.formats.output` for a prefix; returns the names of the objects under it.

    An empty prefix is written; a dynsel artifact of the same kind (its manifest, or the marker of an
    interrupted publish, says so) replaced; another kind only with ``force``; a prefix holding any object
    that its manifest or marker does not account for is refused, ``force`` or not. Test objects
    (:data:`PROBE`) are dynsel's own wherever they are found.
    """
    objects = set(_file_infos(loc))
    if kind == RUN_KIND:
        check_run_entries(
            loc.uri,
            [(name.partition("/")[0], "/" in name) for name in objects],
            lambda name: check_remote_output(loc.child(name), RUN_STAGES[name], force=force, option=option),
            own=_is_probe,
            what="run prefix",
            option=option,
        )
        return objects
    theirs = {name for name in objects if not _is_probe(name)}
    if theirs:
        found, owned = _ownership(loc, theirs)
        foreign = sorted(theirs - owned)
        if foreign:
            raise DynselError(
                f"{loc.uri}: holds objects dynsel did not write ({foreign[0]!r}{', …' if len(foreign) > 1 else ''}); dynsel replaces only its own artifacts: choose a new {option} or remove them yourself"
            )
        check_kind(loc.uri, found, kind, force=force, option=option)
    return objects


def _is_probe(name: str) -> bool:
    return name.startswith(PROBE)


def _ownership(loc: Location, objects: set[str]) -> tuple[str | None, set[str]]:
    """The dynsel kind at the prefix (manifest first, else the marker of an interrupted publish) and the
    names its manifest and marker account for. A manifest counts only when it validates as its kind's
    (:func:`dynsel_cli.formats.output.manifest_listing`, the rule of local directories too)."""
    found, owned = None, set()
    if MARKER in objects:
        marker = json_object(read_object(loc, MARKER))
        files = marker.get("files")
        if (
            marker.get("format") == PUBLISHING
            and dynsel_kind({"format": marker.get("kind")})
            and isinstance(files, list)
        ):
            found, owned = marker["kind"], {MARKER, *map(str, files)}
    for name in MANIFEST_NAMES:
        listing = manifest_listing(json_object(read_object(loc, name)), name, loc.at(name)) if name in objects else None
        if listing is not None:
            found, files = listing
            owned |= {name, *files}
    return found, owned


def publish_artifact(local: Path, loc: Location, kind: str, *, force: bool = False) -> bytes:
    """Publish the artifact directory ``local`` at ``loc``; returns the manifest's bytes.

    Every check that can fail comes before anything at ``loc`` is touched:

    1. the staged copy: every file its manifest lists is there, inside it, with its recorded size;
    2. the rule again (something may have appeared since the command started);
    3. write and delete a test object (credentials or a bucket policy may have changed meanwhile);
    4. write the marker: the kind and every name this publish may leave (the new files and what is there).
       A failure up to here leaves the previous artifact published and unchanged.

    Then the point of no return:

    5. delete the old manifest(s): from here the prefix is not a published artifact;
    6. upload every file the new manifest lists;
    7. upload the manifest, last: from here the prefix is the new artifact;
    8. delete the objects the new manifest does not list, then the marker.

    A failure in 5-7 (the network dies, a policy refuses one upload) is an error line saying that the
    previous artifact at ``loc`` is unpublished and that a rerun completes the publish; one in 8 says the
    new artifact is published and a rerun removes what is left. A crash anywhere leaves either no
    manifest (readers refuse the prefix; the marker lets the next publish replace it) or a manifest whose
    files are all in place.
    """
    manifest_name, what = MANIFEST_FILE[kind], KIND_NAMES[kind]
    data = (local / manifest_name).read_bytes()
    files = listed_files(parse_json(data, local / manifest_name, what), local / manifest_name, what)
    sources = {name: safe_child(local, name, what) for name in files}
    for name in sorted(files):
        if not sources[name].is_file() or sources[name].stat().st_size != files[name]["bytes"]:
            raise DynselError(
                f"{loc.uri}: the staged {what} lacks {name!r} or it changed after it was built, so nothing at {loc.uri} was changed; rerun the command"
            )
    present = check_remote_output(loc, kind, force=force)
    check_writable(loc, present)  # also deletes the test objects a killed command left
    present = {name for name in present if not _is_probe(name)}
    keep = set(files) | {manifest_name}
    write_object(
        loc, MARKER, canonical_json({"format": PUBLISHING, "kind": kind, "files": sorted(present | keep)}).encode()
    )
    unpublished = False
    try:
        for name in MANIFEST_NAMES:
            if name in present:
                delete_object(loc, name)
                unpublished = True
        _each(lambda name: upload_file(sources[name], loc, name), files)
        write_object(loc, manifest_name, data)
    except (DynselError, OSError) as exc:
        if unpublished:
            left = f"the previous artifact at {loc.uri} was unpublished (its manifest deleted) and nothing is published there until a rerun of the command completes the publish"
        elif present & set(MANIFEST_NAMES):
            left = f"the previous artifact at {loc.uri} is still published, unchanged; rerun the command"
        else:
            left = f"nothing is published at {loc.uri} until a rerun of the command completes the publish"
        raise DynselError(f"{loc.uri}: publishing failed ({_first_line(exc)}); {left}") from None
    try:
        _each(lambda name: delete_object(loc, name), present - keep - {MARKER})
        delete_object(loc, MARKER)
    except (DynselError, OSError) as exc:
        raise DynselError(
            f"{loc.uri}: the new {what} is published, but removing the objects of the previous one failed ({_first_line(exc)}); rerun the command to remove them"
        ) from None
    return data


def adopt(local: Path, manifest: bytes) -> Path:
    """Move a just-published artifact into the cache, where :func:`fetch_artifact` finds it; returns its new path."""
    target = _artifact_entry(manifest, local.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    _rename_unless_there(local, target)
    shutil.rmtree(local, ignore_errors=True)  # still here when the cache had it already
    return target


def staging_dir(loc: Location) -> Path:
    """Where an artifact bound for ``loc`` is built: one folder per URI, so resume state survives a rerun."""
    return cache_root() / "staging" / sha256_bytes(loc.uri.encode())[:16] / loc.name


def check_writable(loc: Location, present: Iterable[str] = ()) -> None:
    """Write and delete a test object, so that refused credentials or a read-only bucket are found before
    any work; test objects a killed command left (among ``present``) go too."""
    probe = f"{PROBE}{os.getpid()}"
    with _storage(loc, "writing a test object"), loc.fs.open_output_stream(loc.key(probe)):
        pass
    for name in sorted({probe, *filter(_is_probe, present)}):
        delete_object(loc, name, "deleting a test object")


@contextlib.contextmanager
def remote_output(
    out: str, kind: str, *, force: bool = False, inputs: Sequence[str | Path | None] = ()
) -> Iterator[tuple[Location, Path]]:
    """Check the ``--out`` URI before any work (not an input, the replacement rule, writable) and yield it
    opened, with the local staging directory to build in. The staging folder is locked while the command
    runs, so a second dynsel command writing the same URI from this machine is refused."""
    uris = [str(p) for p in inputs if p is not None and is_uri(str(p))]
    check_not_input(canonical_uri(out), [canonical_uri(uri) for uri in uris], "--out", resolve=PurePosixPath)
    loc = open_location(out)
    staged = staging_dir(loc)
    with _writer_lock(staged.parent, loc.uri):
        check_writable(loc, check_remote_output(loc, kind, force=force))
        try:
            yield loc, staged
        finally:
            with contextlib.suppress(OSError):
                staged.rmdir()  # an empty one; resume state and a run's unpublished stages stay


@contextlib.contextmanager
def _writer_lock(folder: Path, uri: str) -> Iterator[None]:
    """An flock on ``folder`` while a command writes ``uri``; the folder (empty once the command is done)
    stays as the lock of that URI."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = hold_directory(folder)
    if fd is None:
        raise DynselError(f"another dynsel command is writing {uri}; wait for it")
    try:
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def artifact_output(
    out: str | Path, kind: str, *, force: bool = False, inputs: Sequence[str | Path | None] = ()
) -> Iterator[Path]:
    """The directory a command writes its ``kind`` artifact into.

    A local ``out`` is itself. For a URI (:func:`remote_output`), the command builds into a local staging
    directory, published to the prefix when the command succeeds; a failed command publishes nothing. The
    staged copy is deleted either way: only the resume state beside it (an interrupted extract's or
    fit-sae's) stays for a rerun.
    """
    if not is_uri(str(out)):
        yield Path(out)
        return
    with remote_output(str(out), kind, force=force, inputs=inputs) as (loc, staged):
        try:
            yield staged
            publish_artifact(staged, loc, kind, force=force)
        finally:
            shutil.rmtree(staged, ignore_errors=True)
