"""The bad-input suite: every command, fed what users get wrong, answers with exit 2 and one line.

Each case builds one bad input in a fresh directory (next to the session pipeline run's good artifacts,
which it only reads), runs the command in-process, and checks what a user relies on:

- exit code 2 and exactly one line on stderr, ``error: ...``, without a traceback;
- the line names the offending file or option (``expect``);
- nothing was created or modified: the work directory and the good artifacts are byte-for-byte and
  mtime-for-mtime as before, and the output path does not exist.

docs/reliability.md carries the table of every case and the line users see; the last test keeps that
table equal to what the commands really print (regenerate it with DYNSEL_WRITE_DOCS=1).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import (
    REPO,
    SAMPLE,
    PipelineRun,
    assert_one_line_error,
    invoke,
    tree_digests,
    tree_mtimes,
    write_features_dir,
)

DOC = REPO / "docs" / "reliability.md"
BEGIN, END = "<!-- bad-inputs:begin -->", "<!-- bad-inputs:end -->"
SEEN: dict[str, str] = {}  # case id → the error line, paths made relative (filled as the cases run)


@dataclass(frozen=True)
class Case:
    id: str
    what: str  # the bad input, as the docs table says it
    make: Callable[[Path, PipelineRun], list[str]]  # builds the input under the work dir; returns the argv
    expect: str  # a fragment the error line must contain (the file or option it names)


# --- helpers that build bad inputs ------------------------------------------------------------------


def _copy(src: Path, work: Path, name: str) -> Path:
    dst = work / name
    shutil.copytree(src, dst)
    return dst


def _rewrite_manifest(directory: Path, name: str, change: Callable[[dict], None]) -> None:
    path = directory / name
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def _flip_byte(path: Path, offset: int = 3) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _vectors(work: Path, name: str, vectors: np.ndarray) -> Path:
    path = work / name
    np.save(path, vectors)
    return path


def _table(work: Path, name: str, table: pa.Table) -> Path:
    path = work / name
    pq.write_table(table, path)
    return path


def _images(work: Path, sizes: list[tuple[int, int]], corrupt: bool = False) -> Path:
    from PIL import Image

    root = work / "images"
    for i, size in enumerate(sizes):
        (root / f"class{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, (i * 40, 80, 120)).save(root / f"class{i % 2}" / f"img{i}.png")
    if corrupt:
        (root / "class0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    return root


def _repeated_id_features(work: Path, run: PipelineRun) -> Path:
    """Features written elsewhere with one id twice (rows 4 and 5 both say 4), in an order the writer keeps."""
    from dynsel_cli.formats.common import atomic_directory
    from dynsel_cli.formats.features import FeatureShardWriter

    dim = json.loads((run.features / "_manifest.json").read_text())["dim"]
    ids = np.arange(64)
    ids[5] = 4
    with atomic_directory(work / "repeated-id-features") as tmp:
        writer = FeatureShardWriter(tmp, dim, "float32", has_labels=False)
        writer.add(ids, None, np.random.default_rng(5).normal(size=(64, dim)).astype(np.float32))
        writer.finish({})
    return work / "repeated-id-features"


def _other_features(work: Path, run: PipelineRun) -> Path:
    dim = json.loads((run.features / "_manifest.json").read_text())["dim"]
    rng = np.random.default_rng(7)
    write_features_dir(work / "other-features", rng.normal(size=(64, dim)).astype(np.float32))
    return work / "other-features"


def _huge_label_features(work: Path, run: PipelineRun) -> Path:
    dim = json.loads((run.features / "_manifest.json").read_text())["dim"]
    labels = np.zeros(64, dtype=np.int64)
    labels[5] = 10**8
    write_features_dir(
        work / "labelled-features", np.random.default_rng(3).normal(size=(64, dim)).astype(np.float32), labels
    )
    return work / "labelled-features"


def _tampered_plan(work: Path, run: PipelineRun) -> Path:
    plan = _copy(run.plan, work, "plan-copy")
    _flip_byte(plan / "indices.bin")
    return plan


def _bomb(work: Path) -> Path:
    """A 2-image folder where one PNG claims 15,000 × 15,000 pixels (225 M): a decompression bomb."""
    from PIL import Image

    root = _images(work, [(32, 32), (32, 32)])
    big = Image.new("1", (15_000, 15_000))  # 1-bit: a small file that would decode to 675 MB of RGB
    big.save(root / "class1" / "bomb.png", optimize=True)
    return root


def _unwritable_parent(work: Path) -> Path:
    blocker = work / "a-file"
    blocker.write_text("not a directory\n")
    return blocker / "features"


_CUDA = __import__("torch").cuda.is_available()  # the no-GPU case is a bad input only where there is none
OUT = "OUTPUT"  # stands for the output path; each case's output is work/"out"


CASES: list[Case] = [
    # extract: sources
    Case(
        "extract-missing-source",
        "source path does not exist",
        lambda w, r: ["extract", w / "nope.npz", "--out", OUT],
        "nope.npz",
    ),
    Case(
        "extract-unknown-suffix",
        "source file of an unknown kind (`.xyz`)",
        lambda w, r: ["extract", _write(w / "d.xyz", b"1,2\n"), "--out", OUT],
        "d.xyz",
    ),
    Case(
        "extract-truncated-npy",
        "truncated `.npy` file",
        lambda w, r: [
            "extract",
            _truncate(_vectors(w, "v.npy", np.ones((50, 8), np.float32)), 100),
            "--out",
            OUT,
            "--encoder",
            "identity",
        ],
        "v.npy",
    ),
    Case(
        "extract-pickled-npy",
        "`.npy` holding pickled Python objects (never unpickled)",
        lambda w, r: ["extract", _pickled_npy(w), "--out", OUT, "--encoder", "identity"],
        "obj.npy",
    ),
    Case(
        "extract-not-parquet",
        "a `.parquet` file that is not Parquet",
        lambda w, r: ["extract", _write(w / "t.parquet", b"id,text\n1,hello\n"), "--out", OUT],
        "t.parquet",
    ),
    Case(
        "extract-missing-text-column",
        "table without the text column",
        lambda w, r: [
            "extract",
            _table(w, "t.parquet", pa.table({"body": ["a", "b"]})),
            "--out",
            OUT,
            "--encoder",
            "wordllama",
        ],
        "text",
    ),
    Case(
        "extract-missing-named-column",
        "`--label-column` that is not in the table",
        lambda w, r: [
            "extract",
            _table(w, "t.parquet", pa.table({"text": ["a", "b"]})),
            "--out",
            OUT,
            "--encoder",
            "wordllama",
            "--label-column",
            "topic",
        ],
        "topic",
    ),
    Case(
        "extract-empty-table",
        "table with no rows",
        lambda w, r: ["extract", _write(w / "e.csv", b"text,label\n"), "--out", OUT, "--encoder", "wordllama"],
        "e.csv",
    ),
    Case(
        "extract-empty-text",
        "empty text in a row",
        lambda w, r: [
            "extract",
            _write(w / "t.csv", b"text,label\nhello,0\n,1\n"),
            "--out",
            OUT,
            "--encoder",
            "wordllama",
        ],
        "row 1",
    ),
    Case(
        "extract-many-bad-rows",
        "JSONL with empty posts and a missing label (found before encoding)",
        lambda w, r: ["extract", _posts(w), "--out", OUT, "--encoder", "wordllama"],
        "rows have empty text",
    ),
    Case(
        "extract-split-no-column",
        "`--split` on a table without a `split` column",
        lambda w, r: [
            "extract",
            _write(w / "t.csv", b"text\nhello\n"),
            "--out",
            OUT,
            "--encoder",
            "wordllama",
            "--split",
            "train",
        ],
        "--split train",
    ),
    Case(
        "extract-dataset-dict-no-split",
        "Hugging Face DatasetDict directory without `--split`",
        lambda w, r: ["extract", _dataset_dict(w), "--out", OUT],
        "--split",
    ),
    Case(
        "extract-non-utf8",
        "text file that is not UTF-8",
        lambda w, r: [
            "extract",
            _write(w / "t.jsonl", b'{"text": "caf\xe9"}\n'),
            "--out",
            OUT,
            "--encoder",
            "wordllama",
        ],
        "t.jsonl",
    ),
    Case(
        "extract-nan-vectors",
        "NaN in ready-made embeddings",
        lambda w, r: [
            "extract",
            _vectors(w, "v.npy", _with(np.ones((20, 4), np.float32), (5, 2), np.nan)),
            "--out",
            OUT,
            "--encoder",
            "identity",
        ],
        "NaN",
    ),
    Case(
        "extract-inf-vectors",
        "Inf in an embeddings column",
        lambda w, r: [
            "extract",
            _table(w, "e.parquet", pa.table({"vector": [[1.0, 2.0], [np.inf, 0.0]]})),
            "--out",
            OUT,
            "--encoder",
            "identity",
        ],
        "Inf",
    ),
    Case(
        "extract-ragged-vectors",
        "embeddings of different widths",
        lambda w, r: [
            "extract",
            _table(w, "e.parquet", pa.table({"vector": [[1.0, 2.0], [1.0, 2.0, 3.0]]})),
            "--out",
            OUT,
            "--encoder",
            "identity",
        ],
        "e.parquet",
    ),
    Case(
        "extract-duplicate-ids",
        "duplicate ids in `--id-column`",
        lambda w, r: [
            "extract",
            _table(w, "e.parquet", pa.table({"id": [3, 3], "vector": [[1.0, 2.0], [3.0, 4.0]]})),
            "--out",
            OUT,
            "--encoder",
            "identity",
            "--id-column",
            "id",
        ],
        "id",
    ),
    Case(
        "extract-zero-width-vectors",
        "ready-made embeddings of width 0 (shape [N, 0])",
        lambda w, r: [
            "extract",
            _vectors(w, "v.npy", np.ones((8, 0), np.float32)),
            "--out",
            OUT,
            "--encoder",
            "identity",
        ],
        "at least one value",
    ),
    Case(
        "extract-duplicate-column",
        "CSV whose header names a column twice",
        lambda w, r: [
            "extract",
            _write(w / "t.csv", b"text,text,label\na,b,0\nc,d,1\n"),
            "--out",
            OUT,
            "--encoder",
            "wordllama",
        ],
        "more than once",
    ),
    Case(
        "extract-id-beyond-int64",
        "an id of 2^70 in `--id-column`",
        lambda w, r: [
            "extract",
            _write(w / "t.jsonl", b'{"text": "a", "id": 1180591620717411303424}\n{"text": "b", "id": 1}\n'),
            "--out",
            OUT,
            "--encoder",
            "wordllama",
            "--id-column",
            "id",
        ],
        "64-bit",
    ),
    Case(
        "extract-label-beyond-int64",
        "a label of 2^70",
        lambda w, r: [
            "extract",
            _write(w / "t.jsonl", b'{"text": "a", "label": 1180591620717411303424}\n{"text": "b", "label": 0}\n'),
            "--out",
            OUT,
            "--encoder",
            "wordllama",
        ],
        "64-bit",
    ),
    Case(
        "extract-deeply-nested-json",
        "a JSON line nested 100,000 deep",
        lambda w, r: [
            "extract",
            _write(w / "t.jsonl", b'{"text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n"),
            "--out",
            OUT,
            "--encoder",
            "wordllama",
        ],
        "nested too deeply",
    ),
    Case(
        "extract-corrupt-image",
        "corrupt image in a folder",
        lambda w, r: ["extract", _images(w, [(32, 32), (32, 32)], corrupt=True), "--out", OUT],
        "broken.png",
    ),
    Case(
        "extract-mixed-sizes",
        "image folder with mixed image sizes",
        lambda w, r: ["extract", _images(w, [(32, 32), (48, 40)]), "--out", OUT],
        "--mixed-sizes",
    ),
    Case(
        "extract-decompression-bomb",
        "image claiming 225 M pixels (decompression bomb)",
        lambda w, r: ["extract", _bomb(w), "--out", OUT],
        "bomb.png",
    ),
    Case(
        "extract-unknown-encoder",
        "unknown `--encoder`",
        lambda w, r: ["extract", SAMPLE, "--out", OUT, "--encoder", "clip"],
        "--encoder",
    ),
    Case(
        "extract-image-size-too-large",
        "`--image-size 20000` (above 4096)",
        lambda w, r: ["extract", SAMPLE, "--out", OUT, "--image-size", "20000"],
        "--image-size",
    ),
    Case(
        "extract-batch-too-many-pixels",
        "`--image-size 4096` at the default `--batch-size 64` (1.07 G pixels a batch)",
        lambda w, r: ["extract", SAMPLE, "--out", OUT, "--image-size", "4096"],
        "--batch-size",
    ),
    Case(
        "extract-user-code-no-flag",
        "user Python encoder without `--allow-user-code`",
        lambda w, r: ["extract", SAMPLE, "--out", OUT, "--encoder", "os:getcwd"],
        "--allow-user-code",
    ),
    Case(
        "extract-unwritable-out",
        "`--out` under a regular file",
        lambda w, r: [
            "extract",
            _vectors(w, "v.npy", np.ones((8, 4), np.float32)),
            "--out",
            _unwritable_parent(w),
            "--encoder",
            "identity",
        ],
        "--out",
    ),
    # fit-sae
    Case(
        "fit-sae-not-features",
        "input is not a features directory",
        lambda w, r: ["fit-sae", r.sae, "--out", OUT],
        "features directory",
    ),
    Case(
        "fit-sae-truncated-shard",
        "features shard truncated",
        lambda w, r: ["fit-sae", _truncated_shard(w, r), "--out", OUT],
        "part-00000.parquet",
    ),
    Case(
        "fit-sae-nan-features",
        "features with NaN written by another tool",
        lambda w, r: ["fit-sae", _nan_features(w), "--out", OUT],
        "NaN",
    ),
    Case(
        "fit-sae-zero-epochs",
        "`--epochs 0`",
        lambda w, r: ["fit-sae", r.features, "--out", OUT, "--epochs", "0"],
        "--epochs",
    ),
    Case(
        "fit-sae-k-too-large",
        "`--k` larger than `--width`",
        lambda w, r: ["fit-sae", r.features, "--out", OUT, "--width", "64", "--k", "100"],
        "--k",
    ),
    # factors
    Case(
        "factors-other-width",
        "SAE of another width than the features",
        lambda w, r: ["factors", _narrow_features(w), "--sae", r.sae, "--out", OUT],
        "dimension",
    ),
    Case(
        "factors-foreign-sae",
        "SAE trained on another data set (fingerprint mismatch)",
        lambda w, r: ["factors", _other_features(w, r), "--sae", r.sae, "--out", OUT],
        "--allow-foreign-sae",
    ),
    Case(
        "factors-tampered-sae",
        "SAE weights modified after training",
        lambda w, r: ["factors", r.features, "--sae", _tampered_sae(w, r), "--out", OUT],
        "sae.safetensors",
    ),
    Case(
        "factors-not-sae",
        "`--sae` is not an SAE checkpoint",
        lambda w, r: ["factors", r.features, "--sae", r.factors, "--out", OUT],
        "SAE",
    ),
    Case(
        "factors-label-too-large",
        "a label of 10^8 (per-class statistics are indexed by class id)",
        lambda w, r: ["factors", _huge_label_features(w, r), "--sae", r.sae, "--allow-foreign-sae", "--out", OUT],
        "label 100000000",
    ),
    Case(
        "factors-repeated-id",
        "third-party features with one id on two rows",
        lambda w, r: ["factors", _repeated_id_features(w, r), "--sae", r.sae, "--allow-foreign-sae", "--out", OUT],
        "sample id 4 appears 2 times",
    ),
    # plan
    Case("plan-ratio-zero", "`--ratio 0`", lambda w, r: ["plan", r.factors, "--out", OUT, "--ratio", "0"], "--ratio"),
    Case(
        "plan-ratio-above-one",
        "`--ratio 1.5`",
        lambda w, r: ["plan", r.factors, "--out", OUT, "--ratio", "1.5"],
        "--ratio",
    ),
    Case(
        "plan-zero-epochs", "`--epochs 0`", lambda w, r: ["plan", r.factors, "--out", OUT, "--epochs", "0"], "--epochs"
    ),
    Case(
        "plan-negative-epochs",
        "`--epochs -3`",
        lambda w, r: ["plan", r.factors, "--out", OUT, "--epochs", "-3"],
        "--epochs",
    ),
    Case(
        "plan-too-many-epochs",
        "`--epochs 2147483648` (above 100,000)",
        lambda w, r: ["plan", r.factors, "--out", OUT, "--epochs", "2147483648"],
        "--epochs",
    ),
    Case(
        "plan-unknown-method",
        "unknown `--method`",
        lambda w, r: ["plan", r.factors, "--out", OUT, "--method", "coreset"],
        "--method",
    ),
    Case(
        "plan-unknown-format",
        "unknown `--formats`",
        lambda w, r: ["plan", r.factors, "--out", OUT, "--formats", "csv"],
        "--formats",
    ),
    Case(
        "plan-truncated-table",
        "factor table truncated",
        lambda w, r: ["plan", _truncated_table(w, r), "--out", OUT],
        "samples.parquet",
    ),
    Case(
        "plan-not-factors",
        "input is not a factor-tables directory",
        lambda w, r: ["plan", r.features, "--out", OUT],
        "factor",
    ),
    Case(
        "plan-features-other-data",
        "`--features` of another data set",
        lambda w, r: ["plan", r.factors, "--out", OUT, "--method", "knn-density", "--features", _other_features(w, r)],
        "--features",
    ),
    Case(
        "plan-out-name-too-long",
        "`--out` whose name is 300 bytes (over NAME_MAX)",
        lambda w, r: ["plan", r.factors, "--out", w / ("n" * 300)],
        "choose a shorter --out",
    ),
    Case(
        "plan-out-not-utf8",
        "`--out` whose name is not valid UTF-8",
        lambda w, r: ["plan", r.factors, "--out", w / "bad\udcff"],
        "not valid UTF-8",
    ),
    Case(
        "plan-out-is-file",
        "`--out` is an existing file",
        lambda w, r: ["plan", r.factors, "--out", _write(w / "plan.txt", b"keep me\n")],
        "plan.txt",
    ),
    Case(
        "plan-manifest-path-escape",
        "manifest naming a file outside its artifact (`../`)",
        lambda w, r: ["plan", _escaping_factors(w, r), "--out", OUT],
        "outside",
    ),
    Case(
        "plan-unknown-class-quota",
        "unknown `--class-quota`",
        lambda w, r: ["plan", r.factors, "--out", OUT, "--class-quota", "equal"],
        "--class-quota",
    ),
    Case(
        "plan-bad-dup-cosine",
        "`--dup-cosine 0`",
        lambda w, r: ["plan", r.factors, "--out", OUT, "--dup-cosine", "0"],
        "--dup-cosine",
    ),
    Case(
        "plan-unknown-neighbours",
        "`--neighbours annoy`",
        lambda w, r: ["plan", r.factors, "--out", OUT, "--neighbours", "annoy"],
        "--neighbours",
    ),
    Case(
        "plan-unknown-device",
        "`--device gpu`",
        lambda w, r: ["plan", r.factors, "--out", OUT, "--device", "gpu"],
        "--device",
    ),
    *(
        [
            Case(
                "plan-cuda-without-gpu",
                "`--device cuda` on a machine without a usable GPU",
                lambda w, r: ["plan", r.factors, "--out", OUT, "--device", "cuda"],
                "--device cuda",
            )
        ]
        if not _CUDA
        else []
    ),
    Case(
        "fit-sae-unknown-device",
        "`fit-sae --device gpu`",
        lambda w, r: ["fit-sae", r.features, "--out", OUT, "--device", "gpu"],
        "--device",
    ),
    # output safety: --out replaces only dynsel's own artifacts of the same kind
    Case(
        "plan-out-user-folder",
        "`--out` is an existing folder dynsel did not write",
        lambda w, r: ["plan", r.factors, "--out", _user_folder(w)],
        "mydata",
    ),
    Case(
        "plan-out-user-folder-force",
        "`--out` is a folder dynsel did not write, with `--force`",
        lambda w, r: ["plan", r.factors, "--out", _user_folder(w), "--force"],
        "not a dynsel plan",
    ),
    Case(
        "plan-out-other-kind",
        "`--out` is a dynsel artifact of another kind (features), no `--force`",
        lambda w, r: ["plan", r.factors, "--out", _copy(r.features, w, "feats")],
        "--force",
    ),
    Case(
        "plan-out-damaged-manifest",
        "`--out` is a plan whose manifest is unreadable",
        lambda w, r: ["plan", r.factors, "--out", _damaged_plan(w, r)],
        "not a dynsel plan",
    ),
    Case(
        "plan-out-current-dir",
        "`--out .` (the current directory)",
        lambda w, r: ["plan", r.factors, "--out", "."],
        "current directory",
    ),
    Case(
        "plan-out-parent-dir",
        "`--out ..` (a directory holding the current one)",
        lambda w, r: ["plan", r.factors, "--out", ".."],
        "current directory",
    ),
    Case(
        "plan-out-is-input",
        "`--out` is the command's own input",
        lambda w, r: ["plan", _copy(r.factors, w, "factors"), "--out", w / "factors"],
        "input",
    ),
    Case(
        "plan-out-holds-input",
        "`--out` is a folder holding the input",
        lambda w, r: ["plan", _nested_factors(w, r), "--out", w / "data"],
        "holds the input",
    ),
    Case(
        "plan-out-inside-input",
        "`--out` inside the input directory",
        lambda w, r: ["plan", r.factors, "--out", r.factors / "plan"],
        "inside the input",
    ),
    Case(
        "factors-out-user-folder",
        "`factors --out` is an existing folder dynsel did not write",
        lambda w, r: ["factors", r.features, "--sae", r.sae, "--out", _user_folder(w)],
        "mydata",
    ),
    Case(
        "fit-sae-out-other-kind",
        "`fit-sae --out` is a plan, no `--force`",
        lambda w, r: ["fit-sae", r.features, "--out", _copy(r.plan, w, "a-plan")],
        "--force",
    ),
    Case(
        "extract-out-inside-source",
        "`extract --out` inside the image folder it reads",
        lambda w, r: ["extract", _images(w, [(32, 32), (32, 32)]), "--out", w / "images" / "feats"],
        "inside the input",
    ),
    Case(
        "run-out-user-folder",
        "`run --out` is an existing folder dynsel did not write",
        lambda w, r: ["run", SAMPLE, "--out", _user_folder(w)],
        "notes.txt",
    ),
    Case(
        "report-html-user-file",
        "`report --html` is an existing file dynsel did not write",
        lambda w, r: ["report", r.plan, "--html", _write(w / "notes.html", b"<html>mine</html>\n")],
        "notes.html",
    ),
    # report and verify
    Case(
        "report-tampered-plan",
        "plan whose `indices.bin` was modified",
        lambda w, r: ["report", _tampered_plan(w, r)],
        "indices.bin",
    ),
    Case("report-not-plan", "report of a directory that is not a plan", lambda w, r: ["report", r.factors], "plan"),
    Case("verify-not-plan", "verify of a directory that is not a plan", lambda w, r: ["verify", r.sae], "plan"),
    # run
    Case(
        "run-missing-source",
        "`run` on a missing source",
        lambda w, r: ["run", w / "nope.npz", "--out", OUT],
        "nope.npz",
    ),
    Case(
        "run-out-is-file",
        "`run --out` is an existing file",
        lambda w, r: ["run", SAMPLE, "--out", _write(w / "runs.txt", b"keep me\n")],
        "runs.txt",
    ),
    Case(
        "run-bad-ratio",
        "`run --ratio 0` (refused before any stage starts)",
        lambda w, r: ["run", SAMPLE, "--out", OUT, "--ratio", "0"],
        "--ratio",
    ),
]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _posts(work: Path) -> Path:
    rows = [
        {"text": "" if i in (3, 9, 10, 17, 22, 40) else f"post {i}", "label": None if i == 30 else i % 2}
        for i in range(50)
    ]
    return _write(work / "posts.jsonl", "".join(json.dumps(row) + "\n" for row in rows).encode())


def _dataset_dict(work: Path) -> Path:
    """The layout `DatasetDict.save_to_disk` writes (the error comes before any data is read)."""
    root = work / "hf"
    for split in ("train", "test"):
        (root / split).mkdir(parents=True)
        (root / split / "state.json").write_text('{"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}')
        (root / split / "dataset_info.json").write_text('{"features": {"text": {"dtype": "string", "_type": "Value"}}}')
    (root / "dataset_dict.json").write_text('{"splits": ["train", "test"]}')
    return root


def _user_folder(work: Path) -> Path:
    folder = work / "mydata"
    (folder / "raw").mkdir(parents=True)
    (folder / "notes.txt").write_text("keep me\n")
    (folder / "raw" / "table.csv").write_text("a,b\n1,2\n")
    return folder


def _damaged_plan(work: Path, run: PipelineRun) -> Path:
    plan = _copy(run.plan, work, "plan-copy")
    (plan / "manifest.json").write_text("{ truncated")
    return plan


def _nested_factors(work: Path, run: PipelineRun) -> Path:
    (work / "data").mkdir()
    return _copy(run.factors, work / "data", "factors")


def _truncate(path: Path, keep: int) -> Path:
    path.write_bytes(path.read_bytes()[:keep])
    return path


def _with(array: np.ndarray, where: tuple[int, int], value: float) -> np.ndarray:
    array[where] = value
    return array


def _pickled_npy(work: Path) -> Path:
    path = work / "obj.npy"
    np.save(path, np.array([{"a": 1}, {"b": 2}], dtype=object), allow_pickle=True)
    return path


def _truncated_shard(work: Path, run: PipelineRun) -> Path:
    features = _copy(run.features, work, "features-copy")
    shard = features / "part-00000.parquet"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    return features


def _nan_features(work: Path) -> Path:
    """Checksums intact, content bad: what a features directory from a buggy third-party writer looks like."""
    vectors = np.random.default_rng(0).normal(size=(200, 8)).astype(np.float32)
    vectors[17, 3] = np.nan
    write_features_dir(work / "nan-features", vectors)
    return work / "nan-features"


def _narrow_features(work: Path) -> Path:
    write_features_dir(work / "narrow-features", np.random.default_rng(1).normal(size=(64, 8)).astype(np.float32))
    return work / "narrow-features"


def _tampered_sae(work: Path, run: PipelineRun) -> Path:
    sae = _copy(run.sae, work, "sae-copy")
    _flip_byte(sae / "sae.safetensors", offset=4096)
    return sae


def _truncated_table(work: Path, run: PipelineRun) -> Path:
    factors = _copy(run.factors, work, "factors-copy")
    table = factors / "samples.parquet"
    table.write_bytes(table.read_bytes()[:1000])
    return factors


def _escaping_factors(work: Path, run: PipelineRun) -> Path:
    factors = _copy(run.factors, work, "factors-copy")

    def escape(manifest: dict) -> None:
        manifest["files"]["../../etc/passwd"] = manifest["files"].pop("units.parquet")

    _rewrite_manifest(factors, "manifest.json", escape)
    return factors


# --- the suite --------------------------------------------------------------------------------------


def test_there_are_at_least_thirty_cases_with_unique_ids() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) >= 30 and len(set(ids)) == len(ids)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_exits_2_with_one_line_and_changes_nothing(
    case: Case, pipeline_run: PipelineRun, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    out = work / "out"
    argv = [str(out) if a == OUT else str(a) for a in case.make(work, pipeline_run)]
    before = _snapshot(work, pipeline_run.out)

    result = invoke(*argv)

    assert result.exit_code == 2, f"{argv}: exit {result.exit_code}\n{result.stderr}\n{result.stdout}"
    line = assert_one_line_error(result.stderr, only_line=argv[0] != "run")
    assert case.expect in line, line
    assert not out.exists() and not [p for p in work.iterdir() if p.name.startswith(".out")]
    assert _snapshot(work, pipeline_run.out) == before, "a failed command created or modified files"
    SEEN[case.id] = _relative(line, work, pipeline_run.out)


def _snapshot(work: Path, run: Path) -> tuple[dict[str, str], dict[str, int], dict[str, str], dict[str, int]]:
    """Contents and mtimes of everything under both trees; the work directory's own mtime is left out
    (a stage that fails mid-way created and removed its temporary directory there, which is invisible)."""
    work_mtimes = tree_mtimes(work)
    del work_mtimes["."]
    return tree_digests(work), work_mtimes, tree_digests(run), tree_mtimes(run)


def _relative(line: str, work: Path, run: Path) -> str:
    """The error line with this test's temporary paths replaced by stable names (for the docs table)."""
    for root, name in ((work.resolve(), "WORK"), (work, "WORK"), (run.resolve(), "RUN"), (run, "RUN"), (REPO, ".")):
        line = line.replace(str(root), name)
    return re.sub(r"[0-9a-f]{16}…", "…", line)


def _doc_table() -> str:
    rows = ["| case | command | bad input | what the user sees (stderr; exit code 2) |", "|---|---|---|---|"]
    for case in CASES:
        command = "fit-sae" if case.id.startswith("fit-sae") else case.id.split("-")[0]
        seen = SEEN[case.id].replace("|", "\\|")
        rows.append(f"| `{case.id}` | `dynsel {command}` | {case.what} | `{seen}` |")
    return "\n".join(rows)


def test_docs_table_matches_what_users_see() -> None:
    if set(SEEN) != {case.id for case in CASES}:
        pytest.skip("runs after the whole bad-input suite in the same session")
    table = _doc_table()
    text = DOC.read_text(encoding="utf-8")
    start, stop = text.index(BEGIN) + len(BEGIN), text.index(END)
    if os.environ.get("DYNSEL_WRITE_DOCS"):
        DOC.write_text(text[:start] + "\n" + table + "\n" + text[stop:], encoding="utf-8")
        return
    assert text[start:stop].strip() == table, "docs/reliability.md is out of date: rerun with DYNSEL_WRITE_DOCS=1"
