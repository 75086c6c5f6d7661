"""Resumable extraction state: completed shards in a hidden work directory next to the output.

``OUT`` is built in ``.OUT.partial/`` (same parent, so renames stay on one file system)::

    .OUT.partial/
      lock                  flock'ed while a run owns the directory (a second run refuses to start)
      journal.json          {key, shard_size, n, shards: [{index, start, stop, file, rows, bytes, sha256, skipped}]}
      shard-00000.parquet   positions [0, shard_size) of the source (bad samples left out, listed in ``skipped``)
      ...

A shard file is written under a temporary name and renamed; the journal is rewritten (temporary file, then
rename) after each shard. On restart with the same ``key`` (a fingerprint of the source content, the
encoder and every output-determining setting), the longest prefix of journalled shards whose files still
match their size and sha256 is kept and extraction continues after it; anything else is removed. With a
different key the directory is emptied and the run starts over. The directory is not an artifact (no
``_manifest.json``, a dot name), so no later stage reads it; it is deleted once ``OUT`` is in place.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DynselError
from ..formats.common import canonical_json, file_entry, read_json
from ..progress import LogFn, null_log

JOURNAL = "journal.json"
JOURNAL_KIND = "dynsel.extract-journal"


@dataclass
class ShardRecord:
    index: int
    start: int
    stop: int
    file: str | None  # None when every sample of the range was skipped
    rows: int
    bytes: int = 0
    sha256: str = ""
    skipped: list[dict[str, Any]] = field(default_factory=list)


def work_dir_for(out: Path) -> Path:
    out = Path(out)
    return (out.parent if str(out.parent) else Path(".")) / f".{out.name}.partial"


def _try_lock(handle: Any) -> bool | None:
    """Take an exclusive, non-blocking flock on an open file: True, False if another process holds it,
    None where flock does not exist (not POSIX)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return None
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def remove_abandoned(out: Path) -> None:
    """Remove ``out``'s work directory unless a live run holds its lock (`dynsel run`, when ``out`` is up to date:
    a run killed after ``out`` was renamed into place but before its work directory was removed left it)."""
    path = work_dir_for(out)
    if not path.is_dir():
        return
    try:
        handle = open(path / "lock", "a+")
    except OSError:
        return
    with handle:
        if _try_lock(handle):  # False: another dynsel extract is writing it; None: cannot tell, keep it
            shutil.rmtree(path, ignore_errors=True)


class WorkDir:
    """Owns ``.OUT.partial/`` for one run: lock, journal, resume."""

    def __init__(self, out: Path, key: str, shard_size: int, n: int, log: LogFn = null_log) -> None:
        self.path = work_dir_for(out)
        self.key = key
        self.shard_size = shard_size
        self.n = n
        self.log = log
        self.records: list[ShardRecord] = []
        self._lock: Any = None

    @contextlib.contextmanager
    def locked(self) -> Iterator[WorkDir]:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DynselError(
                f"{self.path}: cannot create the work directory ({exc.strerror}); choose a writable --out"
            ) from None
        handle = open(self.path / "lock", "a+")
        try:
            if _try_lock(handle) is False:  # None (not POSIX): run unlocked
                raise DynselError(
                    f"{self.path}: another dynsel extract is writing this output; wait for it to finish or stop it"
                )
            self._lock = handle
            yield self
        finally:
            handle.close()

    def resume(self) -> list[ShardRecord]:
        """Load the journal; keep the valid prefix of completed shards (same key), remove everything else."""
        journal_path = self.path / JOURNAL
        kept: list[ShardRecord] = []
        journal: dict[str, Any] | None = None
        if journal_path.exists():
            try:
                journal = read_json(journal_path, "extract journal")
            except DynselError:
                journal = None
        if (
            journal
            and journal.get("format") == JOURNAL_KIND
            and journal.get("key") == self.key
            and journal.get("shard_size") == self.shard_size
            and journal.get("n") == self.n
        ):
            for index, raw in enumerate(journal.get("shards", [])):
                try:
                    record = ShardRecord(**raw)
                except TypeError:
                    break
                if record.index != index or record.start != index * self.shard_size or not self._intact(record):
                    break
                kept.append(record)
        elif journal is not None:
            self.log(f"extract: {self.path} was left by a run with other inputs or settings; starting over")
        keep_files = {"lock", JOURNAL} | {r.file for r in kept if r.file}
        for entry in self.path.iterdir():
            if entry.name not in keep_files:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
        self.records = kept
        self._write_journal()
        return list(kept)

    def _intact(self, record: ShardRecord) -> bool:
        if record.file is None:
            return record.rows == 0
        path = self.path / record.file
        if "/" in record.file or not path.is_file():
            return False
        return file_entry(path) == {"bytes": record.bytes, "sha256": record.sha256}

    def shard_path(self, index: int) -> Path:
        return self.path / f"shard-{index:05d}.parquet"

    def temporary_path(self, index: int) -> Path:
        return self.path / f".shard-{index:05d}.parquet.tmp"

    def commit(self, record: ShardRecord) -> None:
        """Record a completed shard (its file already renamed into place, its size and sha256 given or read)."""
        if record.index != len(self.records):
            raise AssertionError(f"shard {record.index} committed out of order")
        if record.file is not None and not record.sha256:
            entry = file_entry(self.path / record.file)
            record.bytes, record.sha256 = entry["bytes"], entry["sha256"]
        self.records.append(record)
        self._write_journal()

    def _write_journal(self) -> None:
        body = {
            "format": JOURNAL_KIND,
            "key": self.key,
            "shard_size": self.shard_size,
            "n": self.n,
            "shards": [asdict(r) for r in self.records],
        }
        tmp = self.path / f".{JOURNAL}.tmp"
        tmp.write_text(canonical_json(body), encoding="utf-8")
        os.replace(tmp, self.path / JOURNAL)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
