"""Fashion-MNIST from the Debian package `dataset-fashion-mnist` as an .npz dynsel can extract.

Usage: python benchmarks/fashion_mnist.py --out data/fashion_mnist.npz
Writes x_train uint8 [60000,28,28], y_train, x_test uint8 [10000,28,28], y_test, class_names.
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

import numpy as np

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def read_idx(path: Path) -> np.ndarray:
    """Parse an idx (ubyte) file: magic 0x0000 08 NDIM, big-endian dims, then uint8 data."""
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    if data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ValueError(f"{path}: not a ubyte idx file")
    ndim = data[3]
    dims = np.frombuffer(data, dtype=">u4", count=ndim, offset=4)
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(tuple(int(d) for d in dims))


def load(directory: Path = DEFAULT_DIR) -> dict[str, np.ndarray]:
    if not directory.is_dir():
        raise SystemExit(f"{directory}: missing; install it with `apt-get install dataset-fashion-mnist`")
    return {
        "x_train": read_idx(directory / "train-images-idx3-ubyte.gz"),
        "y_train": read_idx(directory / "train-labels-idx1-ubyte.gz").astype(np.int64),
        "x_test": read_idx(directory / "t10k-images-idx3-ubyte.gz"),
        "y_test": read_idx(directory / "t10k-labels-idx1-ubyte.gz").astype(np.int64),
        "class_names": np.array(CLASS_NAMES),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, **load(args.dir))
    print(args.out)


if __name__ == "__main__":
    main()
