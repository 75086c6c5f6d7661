"""The C++ and Rust plan readers in docs/examples build and agree with the manifest.

Each reader is compiled once per test session (the Rust build is the slow part) into a temporary
directory; a missing toolchain skips that reader's tests.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from dynsel_cli.formats.common import atomic_directory
from dynsel_cli.formats.plan import read_plan, write_plan

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"
CPP_SOURCE = EXAMPLES / "cpp" / "read_plan.cpp"
RUST_PROJECT = EXAMPLES / "rust"


def _compile(command: list[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        pytest.fail(f"{what} failed to build:\n{' '.join(command)}\n{result.stdout}\n{result.stderr}")


def _build_cpp(tmp_path_factory: pytest.TempPathFactory, name: str, *defines: str) -> Path:
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("g++ not installed")
    binary = tmp_path_factory.mktemp(name) / "read_plan"
    _compile(
        [compiler, "-O2", "-std=c++17", "-Wall", "-Wextra", "-Werror", *defines, "-o", str(binary), str(CPP_SOURCE)],
        f"C++ example {' '.join(defines)}".strip(),
    )
    return binary


@pytest.fixture(scope="session")
def cpp_reader(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build_cpp(tmp_path_factory, "cpp")


@pytest.fixture(scope="session")
def cpp_sha256(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The C++ reader built with its test hook: `read_plan --sha256 FILE` prints FILE's sha256."""
    return _build_cpp(tmp_path_factory, "cpp_hook", "-DREAD_PLAN_SHA256_HOOK")


@pytest.fixture(scope="session")
def rust_reader(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rust")
    cargo, rustc = shutil.which("cargo"), shutil.which("rustc")
    if cargo is not None:
        # --locked: the committed Cargo.lock is used as is, so the build writes nothing into docs/.
        command = [cargo, "build", "--release", "--offline", "--locked", "--quiet", "--target-dir", str(out),
                   "--manifest-path", str(RUST_PROJECT / "Cargo.toml")]  # fmt: skip
        _compile(command, "Rust example (cargo)")
        return out / "release" / "read_plan"
    if rustc is not None:
        binary = out / "read_plan"
        _compile(
            [rustc, "-O", "--edition", "2021", "-o", str(binary), str(RUST_PROJECT / "src" / "main.rs")], "Rust example"
        )
        return binary
    pytest.skip("neither cargo nor rustc installed")


@pytest.fixture(params=["cpp", "rust"])
def reader(request: pytest.FixtureRequest) -> Path:
    return request.getfixturevalue(f"{request.param}_reader")


def _write(root: Path, name: str, epochs: Sequence[np.ndarray], n_samples: int, weights: bool = False) -> Path:
    path = root / name
    w = [np.linspace(0, 1, len(e), dtype=np.float32) for e in epochs] if weights else None
    with atomic_directory(path) as tmp:
        write_plan(tmp, list(epochs), n_samples, 8, 1, False, {"ratio": 0.5, "seed": 0}, weights=w)
    return path


@pytest.fixture(scope="module")
def plans(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("plans")
    rng = np.random.default_rng(0)

    def epochs(counts: Sequence[int], n: int) -> list[np.ndarray]:
        return [rng.permutation(n)[:c].astype(np.int64) for c in counts]

    big = 2**32 + 1000  # ids past 2**32 force index_dtype "<u8"
    return {
        "u4": _write(root, "u4", epochs((10, 7, 0, 12, 1), 100), 100),
        # indices.bin of 52, 56 and 64 bytes: the SHA-256 padding edge cases
        "u4_52": _write(root, "u4_52", epochs((13,), 50), 50),
        "u4_56": _write(root, "u4_56", epochs((6, 8), 50), 50),
        "u4_64": _write(root, "u4_64", epochs((16,), 50), 50),
        "u4_weights": _write(root, "u4_weights", epochs((5, 9), 40), 40, weights=True),
        "u4_large": _write(root, "u4_large", epochs((60_000, 45_000, 30_000), 100_000), 100_000),
        "u8": _write(root, "u8", [np.array([big - 1, 3, 2**32, 7], np.int64), np.array([5, big - 2], np.int64)], big),
        "empty_epochs": _write(root, "empty_epochs", [np.zeros(0, np.int64)] * 2, 10),
        "no_epochs": _write(root, "no_epochs", [], 10),
    }


def _run(binary: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    "name", ["u4", "u4_52", "u4_56", "u4_64", "u4_weights", "u4_large", "u8", "empty_epochs", "no_epochs"]
)
def test_summary_matches_manifest(reader: Path, plans: dict[str, Path], name: str) -> None:
    path = plans[name]
    manifest = read_plan(path).manifest
    assert manifest["index_dtype"] == ("<u8" if name == "u8" else "<u4")
    result = _run(reader, str(path))
    assert result.returncode == 0, result.stderr
    expected = [f"epoch {e} count {c}" for e, c in enumerate(manifest["counts"])]
    expected.append(f"sha256 {manifest['sha256']}")
    assert result.stdout.splitlines() == expected
    assert manifest["sha256"] == hashlib.sha256((path / "indices.bin").read_bytes()).hexdigest()


@pytest.mark.parametrize("name", ["u4", "u8", "u4_large"])
def test_epoch_dump_matches_text_files(reader: Path, plans: dict[str, Path], name: str) -> None:
    path = plans[name]
    plan = read_plan(path)
    for e in range(plan.n_epochs):
        result = _run(reader, str(path), str(e))
        assert result.returncode == 0, result.stderr
        assert result.stdout == (path / "epochs" / f"epoch-{e:04d}.txt").read_text()
        assert [int(line) for line in result.stdout.split()] == plan.epochs[e].tolist()


def test_bad_input_exits_2_with_a_message(reader: Path, plans: dict[str, Path], tmp_path: Path) -> None:
    result = _run(reader, str(plans["u4"]), "5")
    assert result.returncode == 2 and "has 5 epochs" in result.stderr
    result = _run(reader, str(tmp_path / "missing"))
    assert result.returncode == 2 and "manifest.json" in result.stderr
    result = _run(reader)
    assert result.returncode == 2 and "usage" in result.stderr
    broken = tmp_path / "broken"
    shutil.copytree(plans["u4"], broken)
    with open(broken / "indices.bin", "ab") as handle:
        handle.write(b"\0\0\0\0")  # one id more than offsets.bin accounts for
    result = _run(reader, str(broken))
    assert result.returncode == 2 and "offsets.bin" in result.stderr


def _flip_byte(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


# u4's offsets.bin is [0, 10, 17, 17, 29, 30]: its byte 8 is offsets[1], and 10 -> 11 keeps the offsets
# non-decreasing and spanning indices.bin, so only the checksum tells.
@pytest.mark.parametrize("name, at", [("indices.bin", 0), ("indices.bin", 57), ("offsets.bin", 8)])
def test_tampered_file_exits_2_naming_it(
    reader: Path, plans: dict[str, Path], tmp_path: Path, name: str, at: int
) -> None:
    tampered = tmp_path / "tampered"
    shutil.copytree(plans["u4"], tampered)
    _flip_byte(tampered / name, at)
    for args in ([], ["0"]):  # the summary and an epoch's ids both check before printing anything
        result = _run(reader, str(tampered), *args)
        assert result.returncode == 2, result.stdout
        assert result.stdout == ""
        assert len(result.stderr.splitlines()) == 1 and f"{tampered / name}: checksum mismatch" in result.stderr


def test_size_in_manifest_is_checked(reader: Path, plans: dict[str, Path], tmp_path: Path) -> None:
    edited = tmp_path / "edited"
    shutil.copytree(plans["u4"], edited)
    manifest = (edited / "manifest.json").read_text()
    size = (edited / "indices.bin").stat().st_size
    record = f'"bytes": {size},'
    assert manifest.count(record) == 1
    (edited / "manifest.json").write_text(manifest.replace(record, f'"bytes": {size + 4},'))
    result = _run(reader, str(edited))
    assert result.returncode == 2
    expected = f"{edited}/indices.bin: {size} bytes, manifest.json says {size + 4} (modified or truncated)"
    assert result.stderr == f"read_plan: {expected}; rebuild the plan\n"
    (edited / "manifest.json").write_text(manifest.replace('"offsets.bin"', '"offsets.old"'))
    result = _run(reader, str(edited))
    assert result.returncode == 2 and 'no "files" entry' in result.stderr and "offsets.bin" in result.stderr


def test_cpp_sha256_matches_hashlib(cpp_sha256: Path, tmp_path: Path) -> None:
    inputs = {
        "empty": b"",
        "abc": b"abc",
        "two_blocks": b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",  # 56 bytes: FIPS 180-4's example
        "random_1mb": np.random.default_rng(1).bytes(1 << 20),
    }
    for name, data in inputs.items():
        path = tmp_path / name
        path.write_bytes(data)
        result = _run(cpp_sha256, "--sha256", str(path))
        assert result.returncode == 0, result.stderr
        assert result.stdout == hashlib.sha256(data).hexdigest() + "\n", name
