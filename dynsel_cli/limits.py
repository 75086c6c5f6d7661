"""The bounds dynsel puts on options and data, so that what cannot fit is refused before it is allocated.

Each bound sits well above real use and well below what would exhaust a machine; docs/reliability.md
("Limits") lists them. The checks raise :class:`DynselError` (one line, exit 2) naming the limit.
"""

from __future__ import annotations

from .errors import DynselError

#: plan --epochs: the plan keeps a few numbers per epoch (budget, λ, steps) in memory and in its manifest
MAX_EPOCHS = 100_000
#: extract --image-size, in pixels per side
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 32, 4096
#: extract, image sources: --batch-size × --image-size² pixels go through the image encoder at once
MAX_BATCH_PIXELS = 2**27
#: factors: the per-class statistics hold (largest class id + 1) × SAE width counts
MAX_CLASS_CELLS = 2**27


def check_epochs(epochs: int, option: str = "--epochs") -> None:
    if epochs < 1:
        raise DynselError(f"{option} {epochs}: must be at least 1")
    if epochs > MAX_EPOCHS:
        raise DynselError(
            f"{option} {epochs}: must be at most {MAX_EPOCHS:,} (a plan holds a manifest entry per epoch)"
        )


def check_image_size(image_size: int) -> None:
    if not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE:
        raise DynselError(f"--image-size {image_size}: must be between {MIN_IMAGE_SIZE} and {MAX_IMAGE_SIZE} pixels")


def check_batch_pixels(batch_size: int, image_size: int) -> None:
    """An image batch of ``batch_size`` images of ``image_size``² pixels must stay within :data:`MAX_BATCH_PIXELS`."""
    pixels = batch_size * image_size * image_size
    if pixels > MAX_BATCH_PIXELS:
        fits = max(1, MAX_BATCH_PIXELS // (image_size * image_size))
        raise DynselError(
            f"--batch-size {batch_size} × --image-size {image_size}: {pixels:,} pixels per batch, over the limit of {MAX_BATCH_PIXELS:,} (2^27); "
            f"pass --batch-size {fits} or less, or a smaller --image-size"
        )


def check_class_ids(largest: int, width: int, where: str) -> None:
    """Per-class statistics of class ids 0..``largest`` over ``width`` units must stay within :data:`MAX_CLASS_CELLS`."""
    if (largest + 1) * width > MAX_CLASS_CELLS:
        most = MAX_CLASS_CELLS // max(width, 1) - 1
        raise DynselError(
            f"{where}: label {largest} is above the largest class id {most:,} that per-class statistics of {width} units can hold "
            f"((id + 1) × width ≤ 2^27); number the classes 0..C-1"
        )
