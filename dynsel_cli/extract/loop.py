"""The extraction loop: source → encoded batches (``encoding.py``: local or Ray) → Parquet shards → features.

Shard s holds source positions [s * shard_size, (s + 1) * shard_size); batches never cross a shard
boundary, so a resumed run forms exactly the batches an uninterrupted one forms, whichever executor
encodes them, and writes the same bytes.
Completed shards live in ``.OUT.partial/`` (see ``work.py``) until the last one is done; then the
features directory is assembled in a temporary sibling and renamed into place.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..config import ExtractConfig, artifact_settings
from ..errors import DynselError
from ..executors import check_executor
from ..formats.common import atomic_directory, fingerprint
from ..formats.features import KIND, VECTOR_DTYPES, FeatureShards, shard_name
from ..formats.output import check_output
from ..limits import check_batch_pixels, check_image_size
from ..progress import LogFn, ProgressFn, null_log, null_progress
from .encoding import EncodedBatch, Encoding, local_encoding, ray_encoding
from .sources import SampleProblem, Source, SourceOptions, open_source
from .work import ShardRecord, WorkDir

ON_ERROR = ("stop", "skip")
MIXED_SIZES = ("error", "resize")
_NOT_IN_KEY = ("on_error",)  # what to do on bad samples (where and how it runs is not in the settings at all)


def source_options(config: ExtractConfig) -> SourceOptions:
    return SourceOptions(
        array=config.array,
        labels=config.labels,
        text_column=config.text_column,
        label_column=config.label_column,
        id_column=config.id_column,
        vector_column=config.vector_column,
        labels_csv=config.labels_csv,
        mixed_sizes=config.mixed_sizes,
        split=config.split,
    )


def _check(config: ExtractConfig) -> None:
    for name in ("batch_size", "shard_size", "limit"):
        value = getattr(config, name)
        if value is not None and value < 1:
            raise DynselError(f"--{name.replace('_', '-')} {value}: must be at least 1")
    if config.workers is not None and config.workers < 0:
        raise DynselError(f"--workers {config.workers}: must be 0 or more")
    if config.on_error not in ON_ERROR:
        raise DynselError(f"--on-error {config.on_error!r}: use stop or skip")
    if config.mixed_sizes not in MIXED_SIZES:
        raise DynselError(f"--mixed-sizes {config.mixed_sizes!r}: use error or resize")
    if config.dtype not in VECTOR_DTYPES:
        raise DynselError(f"--dtype {config.dtype!r}: use one of {', '.join(VECTOR_DTYPES)}")
    check_image_size(config.image_size)
    check_executor(config, local_workers=True)


def _problem_record(source: Source, problem: SampleProblem) -> dict[str, Any]:
    sample_id = int(source.sample_ids(np.asarray([problem.position]))[0])
    return {
        "id": sample_id if sample_id >= 0 else None,
        "position": problem.position,
        "source": problem.where,
        "reason": problem.reason,
        "detail": problem.detail,
    }


def _stop_error(source: Source, record: dict[str, Any]) -> DynselError:
    ident = f"sample id {record['id']}" if record["id"] is not None else f"position {record['position']}"
    return DynselError(
        f"{source.full_where(record['source'])}: {record['detail']} ({ident}); fix or remove it, or pass --on-error skip"
    )


# what a group of bad samples has, by reason: (one sample, several samples)
_HAVE = {
    "missing-text": ("has no text (null)", "have no text (null)"),
    "empty-text": ("has empty text", "have empty text"),
    "non-utf8": ("is not valid UTF-8", "are not valid UTF-8"),
    "not-text": ("holds a value that is not text", "hold values that are not text"),
    "bad-json": ("is not a JSON object", "are not JSON objects"),
    "missing-label": ("has no label", "have no label"),
    "bad-vector": ("has a missing or malformed vector", "have missing or malformed vectors"),
    "non-finite": ("contains NaN or Inf", "contain NaN or Inf"),
}
_SHOWN = 5  # bad samples named in a summary


def _numbered(wheres: list[str]) -> tuple[str, list[int] | None]:
    """``rows 12, 40`` (or ``x_train rows 3, 7``) when every place is ``[PREFIX ]row N`` with one prefix, else the places."""
    parsed = [w.rpartition("row ") for w in wheres]
    prefixes = {head for head, sep, tail in parsed}
    if all(sep and tail.isdigit() for _, sep, tail in parsed) and len(prefixes) == 1:
        numbers = [int(tail) for _, _, tail in parsed]
        return f"{prefixes.pop()}{'row' if len(numbers) == 1 else 'rows'} {', '.join(map(str, numbers))}", numbers
    return ", ".join(wheres), None


def bad_samples_summary(src: Source, problems: list[SampleProblem]) -> str:
    """One line about the bad samples found before encoding: ``posts.jsonl: 37 rows have empty text (rows 12,
    40, 41, 97, 130, …)``; per reason, with at most five samples named (and one per reason beyond them)."""
    groups: dict[str, list[SampleProblem]] = {}
    for problem in problems:
        groups.setdefault(problem.reason, []).append(problem)
    shown = {p.position for p in problems[:_SHOWN]} | {group[0].position for group in groups.values()}
    parts = []
    for reason, group in groups.items():
        named = [p for p in group if p.position in shown]
        places, numbers = _numbered([p.where for p in named])
        ids = src.sample_ids(np.asarray([p.position for p in named], dtype=np.int64)).tolist()
        more = ", …" if len(named) < len(group) else ""
        places += more
        if numbers is not None and ids != numbers:  # ids of their own (--id-column, --split): name them too
            places += f"; sample ids {', '.join(str(i) if i >= 0 else '?' for i in ids)}{more}"
        verb = _HAVE.get(reason, (f"is bad ({reason})", f"are bad ({reason})"))[len(group) > 1]
        parts.append(f"{len(group)} {src.unit[len(group) > 1]} {verb} ({places})")
    total = f"{len(problems)} bad {src.unit[1]}: " if len(groups) > 1 else ""
    return f"{src.path}: {total}{', '.join(parts)}"


def _bad_samples_error(src: Source, problems: list[SampleProblem]) -> DynselError:
    if len(problems) == 1:
        return _stop_error(src, _problem_record(src, problems[0]))
    return DynselError(f"{bad_samples_summary(src, problems)}; fix or remove them, or pass --on-error skip")


def extract(
    source: Path,
    out: Path,
    config: ExtractConfig = ExtractConfig(),
    progress: ProgressFn = null_progress,
    log: LogFn = null_log,
    *,
    force: bool = False,
    source_name: str | None = None,
) -> dict[str, Any]:
    """Encode every sample of ``source`` and write the features directory ``out``; returns its manifest.

    Resumes a killed run of the same source and settings from its last completed shard. ``force`` lets
    ``out`` replace a dynsel artifact of another kind (never a folder dynsel did not write).
    ``source_name``: where the source came from, recorded as the manifest's ``source.path`` when ``source``
    is a local copy (of an object-store URI, say).
    """
    _check(config)
    out = Path(out)
    check_output(out, KIND, inputs=[Path(source), Path(config.labels_csv) if config.labels_csv else None], force=force)
    src = open_source(Path(source), source_options(config))
    if src.kind == "images":
        check_batch_pixels(config.batch_size, config.image_size)
    n = len(src) if config.limit is None else min(config.limit, len(src))
    bad = src.check(n)  # before loading the encoder: what can be found without encoding is found first
    if bad and config.on_error == "stop":
        raise _bad_samples_error(src, bad)
    if bad:
        log(f"extract: {bad_samples_summary(src, bad)}; skipping {'it' if len(bad) == 1 else 'them'} (--on-error skip)")
    shard_size = config.shard_size
    bounds = [(s, min(s + shard_size, n)) for s in range(0, n, shard_size)]
    with _encoding(Path(source), src, config, n, len(_batch_ranges(bounds, config.batch_size)), log) as encoding:
        return _extract(src, out, config, encoding, bounds, n, progress, log, force, source_name)


def _encoding(
    source: Path, src: Source, config: ExtractConfig, n: int, batches: int, log: LogFn
) -> contextlib.AbstractContextManager[Encoding]:
    if config.executor == "ray":
        return ray_encoding(source, src, source_options(config), config, n, batches, log)
    return local_encoding(src, config)


def _batch_ranges(bounds: list[tuple[int, int]], batch_size: int) -> list[tuple[int, int]]:
    """The batches of these shards: ``batch_size`` positions at a time, the last of a shard shorter."""
    return [(b, min(b + batch_size, stop)) for start, stop in bounds for b in range(start, stop, batch_size)]


def _extract(
    src: Source,
    out: Path,
    config: ExtractConfig,
    encoding: Encoding,
    bounds: list[tuple[int, int]],
    n: int,
    progress: ProgressFn,
    log: LogFn,
    force: bool,
    source_name: str | None,
) -> dict[str, Any]:
    source_info = {**src.describe(), **({"path": source_name} if source_name else {})}
    encoder_info = encoding.encoder.manifest()
    settings = artifact_settings(config)
    has_labels = src.labels is not None
    dim = encoding.encoder.dim
    key = fingerprint(
        {
            "dynsel_version": __version__,
            "source": source_info,
            "encoder": encoder_info,
            "settings": {k: v for k, v in settings.items() if k not in _NOT_IN_KEY},
            "device": encoding.encoder.device,
            "dim": dim,
            "has_labels": has_labels,
        }
    )
    work = WorkDir(out, key, config.shard_size, n, log)
    with work.locked():
        done = work.resume()
        shards = FeatureShards(dim, config.dtype, has_labels)
        if done:
            log(
                f"extract: resuming after {len(done)} of {len(bounds)} completed shards ({done[-1].stop} of {n} samples)"
            )
        try:
            for record in done:
                if config.on_error == "stop" and record.skipped:  # a fresh run would have stopped here too
                    raise _stop_error(src, record.skipped[0])
                if record.file:
                    shards.reuse(
                        work.path / record.file, {"rows": record.rows, "bytes": record.bytes, "sha256": record.sha256}
                    )
            _run(encoding, src, config, work, shards, bounds[len(done) :], n, progress)
        except DynselError as exc:
            if not work.records:  # nothing worth resuming: leave no trace
                work.remove()
                raise
            raise DynselError(
                f"{exc} [{len(work.records)} completed shards kept in {work.path}; a rerun resumes]"
            ) from None
        manifest = _assemble(
            out,
            work,
            shards,
            n,
            src,
            {"source": source_info, "encoder": encoder_info, "settings": settings, "executor": encoding.executor},
            force,
        )
        work.remove()
    return manifest


def _run(
    encoding: Encoding,
    src: Source,
    config: ExtractConfig,
    work: WorkDir,
    shards: FeatureShards,
    bounds: list[tuple[int, int]],
    n: int,
    progress: ProgressFn,
) -> None:
    done = bounds[0][0] if bounds else n
    progress("extract", done, n)
    if not bounds:
        return
    writer = _ShardBuffer(work, src, config, shards)
    shard_iter = iter(bounds)
    current = next(shard_iter)
    batch: EncodedBatch
    for batch in encoding.batches(_batch_ranges(bounds, config.batch_size)):
        for problem in batch.problems:
            writer.problem(problem)
        if batch.vectors is not None:
            writer.add(batch.positions, batch.vectors)
        if batch.stop == current[1]:
            writer.flush(len(work.records), current)
            current = next(shard_iter, (n, n))
        progress("extract", batch.stop, n)


class _ShardBuffer:
    """Rows of the shard being built; ``flush`` writes it through :class:`FeatureShards` (temporary file,
    rename) and journals it."""

    def __init__(self, work: WorkDir, src: Source, config: ExtractConfig, shards: FeatureShards) -> None:
        self.work, self.src, self.config, self.shards = work, src, config, shards
        self.positions: list[np.ndarray] = []
        self.vectors: list[np.ndarray] = []
        self.skipped: list[dict[str, Any]] = []

    def problem(self, problem: SampleProblem) -> None:
        record = _problem_record(self.src, problem)
        if self.config.on_error == "stop":
            raise _stop_error(self.src, record)
        self.skipped.append(record)

    def add(self, positions: np.ndarray, vectors: np.ndarray) -> None:
        vectors = np.asarray(vectors)
        dim = self.shards.dim
        if vectors.shape != (len(positions), dim):
            raise DynselError(
                f"encoder {self.config.encoder} returned shape {vectors.shape} for {len(positions)} samples, expected ({len(positions)}, {dim})"
            )
        stored = vectors.astype(self.shards.np_dtype)
        finite = np.isfinite(stored).all(axis=1)
        if not finite.all():
            for position, ok_raw in zip(positions[~finite], np.isfinite(vectors[~finite]).all(axis=1)):
                reason, detail = (
                    ("float16-overflow", "a feature value exceeds the float16 range; use --dtype float32")
                    if ok_raw
                    else ("non-finite-output", "the encoder produced NaN or Inf for this sample; check its values")
                )
                self.problem(SampleProblem(int(position), self.src.where(int(position)), reason, detail))
            positions, stored = positions[finite], stored[finite]
        self.positions.append(positions)
        self.vectors.append(stored)

    def flush(self, index: int, bounds: tuple[int, int]) -> None:
        positions = np.concatenate(self.positions) if self.positions else np.zeros(0, np.int64)
        record = ShardRecord(
            index=index,
            start=bounds[0],
            stop=bounds[1],
            file=None,
            rows=len(positions),
            skipped=sorted(self.skipped, key=lambda r: r["position"]),
        )
        if len(positions):
            labels = self.src.labels[positions] if self.src.labels is not None else None
            tmp = self.work.temporary_path(index)
            entry = self.shards.write(tmp, self.src.sample_ids(positions), labels, np.concatenate(self.vectors))
            final = self.work.shard_path(index)
            os.replace(tmp, final)
            record.file, record.bytes, record.sha256 = final.name, entry["bytes"], entry["sha256"]
        self.work.commit(record)
        self.positions, self.vectors, self.skipped = [], [], []


def _assemble(
    out: Path, work: WorkDir, shards: FeatureShards, n: int, src: Source, recorded: dict[str, Any], force: bool
) -> dict[str, Any]:
    """Link the completed shards into a fresh features directory with its manifest; rename it into place.
    ``recorded``: the manifest's source, encoder, settings and executor."""
    records = work.records
    skipped = [s for r in records for s in r.skipped]
    if shards.n_rows == 0:
        reasons = ", ".join(sorted({s["reason"] for s in skipped}))
        raise DynselError(f"{src.path}: every one of the {n} samples read was skipped ({reasons}); nothing to write")
    reasons_count: dict[str, int] = {}
    for s in skipped:
        reasons_count[s["reason"]] = reasons_count.get(s["reason"], 0) + 1
    with atomic_directory(out, KIND, force) as tmp:
        for index, record in enumerate(r for r in records if r.file):  # the order FeatureShards saw them in
            try:
                os.link(work.path / record.file, tmp / shard_name(index))  # type: ignore[operator]
            except OSError:
                shutil.copyfile(work.path / record.file, tmp / shard_name(index))  # type: ignore[operator]
        manifest = shards.write_manifest(
            tmp,
            {
                "dynsel_version": __version__,
                "created_by": "dynsel extract",
                **recorded,
                "classes": src.classes,
                "n_read": n,
                "n_skipped": len(skipped),
                "skipped_reasons": reasons_count,
                "skipped": [{k: s[k] for k in ("id", "source", "reason", "detail")} for s in skipped],
            },
        )
    return manifest
