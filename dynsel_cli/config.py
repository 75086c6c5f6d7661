"""One dataclass per stage. Each field's ``help`` is the CLI help text and the field values go into the
artifact's manifest (``settings``), so a run is reproducible from its manifest alone."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .extract.registry import encoder_help


class _FiniteNumbers:
    """Refuses NaN and infinite numeric settings when a config is made, whoever makes it (the command
    line, a Python caller, a manifest read back): every range check downstream compares numbers, and
    NaN passes every comparison."""

    def __post_init__(self) -> None:
        import math

        from .errors import DynselError

        for item in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, item.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise DynselError(f"--{item.name.replace('_', '-')} {value}: must be a finite number")


def _opt(default: Any, help: str, artifact: bool = True) -> Any:
    """A config field: its default, its help text (the CLI's), and whether it defines the artifact (goes
    into the manifest's settings and the is-it-current check); ``device`` does not: CPU and CUDA agree."""
    return field(default=default, metadata={"help": help, "artifact": artifact})


RAY_ADDRESS_HELP = (
    "--executor ray: the Ray cluster to run on (HOST:PORT of its head, ray://HOST:PORT, or auto). Default: $RAY_ADDRESS, "
    "else a cluster `ray start` runs on this machine, else a local Ray started for this run and stopped after it."
)
GPUS_PER_WORKER_HELP = "--executor ray: GPUs each Ray actor reserves (0: CPU actors; 0.5: two actors share a GPU)."


def as_settings(config: Any) -> dict[str, Any]:
    """Every field of a config, JSON-able."""
    return dataclasses.asdict(config)


def artifact_settings(config: Any) -> dict[str, Any]:
    """The settings that define a stage's artifact: every field but those marked ``artifact=False``.
    They are recorded in the manifest and decide whether an existing artifact is current."""
    keep = {f.name for f in dataclasses.fields(config) if f.metadata.get("artifact", True)}
    return {k: v for k, v in as_settings(config).items() if k in keep}


@dataclass(frozen=True)
class ExtractConfig(_FiniteNumbers):
    encoder: str = _opt("auto", encoder_help())
    allow_user_code: bool = _opt(False, "Allow --encoder MODULE:FACTORY, which imports and runs your Python code.")
    array: str | None = _opt(None, "Key of the sample array in an .npz (default: x_train, x, data or the only array).")
    labels: str | None = _opt(
        None, "Key of the label array in an .npz (default: y_train for x_train, y for x; none if absent)."
    )
    text_column: str = _opt("text", "Table sources: the column holding the text.")
    label_column: str | None = _opt(
        None,
        "Table sources: the label column (default: 'label' when present). Integers are class ids; strings are class names, numbered in sorted order.",
    )
    id_column: str | None = _opt(
        None,
        "Table sources: a column of unique non-negative integer sample ids (default: ids are row positions 0, 1, 2, ...).",
    )
    vector_column: str | None = _opt(
        None,
        "Table sources: a column of ready-made embeddings (lists of numbers) to pass through (default: 'vector' or 'embedding' when there is no text column).",
    )
    split: str | None = _opt(
        None,
        "Which split to read: of a Hugging Face DatasetDict directory (needed when it has several), or of a table with a 'split' column (only rows whose 'split' equals it; ids are positions after this filter).",
    )
    labels_csv: str | None = _opt(
        None,
        "Flat image folders: a CSV with columns 'file' (path relative to the folder) and 'label' (default: labels.csv in the folder, if any).",
    )
    image_size: int = _opt(
        112, "Side in pixels images are resized to before the image encoder (224 is ImageNet's; 112 is 4x cheaper)."
    )
    mixed_sizes: str = _opt(
        "error",
        "Image folders whose images differ in size: error (a bad sample, see --on-error) or resize (each image is resized to --image-size on its own).",
    )
    batch_size: int = _opt(64, "Samples per encoder forward pass.")
    shard_size: int = _opt(8192, "Samples per Parquet shard; a shard is also the unit a killed run resumes from.")
    dtype: str = _opt("float32", "Stored vector dtype: float32 or float16.")
    device: str = _opt("auto", "Where the encoder runs: auto, cpu or cuda.", artifact=False)
    workers: int | None = _opt(
        None,
        "Parallel workers. --executor local: DataLoader processes that read and preprocess samples while this process encodes "
        "(default: 0 for arrays, else min(4, CPUs - 1)). --executor ray: Ray actors, each reading the source and encoding whole "
        "batches with its own copy of the encoder (default: the cluster's CPUs, or its GPUs / --gpus-per-worker).",
        artifact=False,
    )
    on_error: str = _opt(
        "stop",
        "Bad samples (corrupt images, empty or non-UTF-8 text, NaN/Inf vectors, ...): stop with an error naming the file and row, or skip them and record them in the manifest.",
    )
    limit: int | None = _opt(None, "Read only the first N samples (for quick trials).")
    executor: str = _opt(
        "local",
        "Where encoding runs: local (this machine) or ray (Ray actors; see --workers, --gpus-per-worker, --ray-address; "
        "needs pip install 'dynsel[ray]', and every Ray node must read SOURCE at the same path). The features are the same either way.",
        artifact=False,
    )
    ray_address: str | None = _opt(None, RAY_ADDRESS_HELP, artifact=False)
    gpus_per_worker: float = _opt(0.0, GPUS_PER_WORKER_HELP, artifact=False)


@dataclass(frozen=True)
class SaeConfig(_FiniteNumbers):
    width: int = _opt(0, "Number of SAE units (factors); 0 = auto: the power of two nearest N/4, within [256, 4096].")
    k: int = _opt(32, "Active units per sample (TopK).")
    epochs: int | None = _opt(
        None,
        "Maximum passes over the training split (default: 30, or fewer so that about 1.75M samples are seen; at least 1).",
    )
    batch_size: int | None = _opt(
        None, "Samples per optimiser step (default: the power of two nearest N/64, within [128, 1024])."
    )
    lr: float | None = _opt(
        None, "Adam learning rate (default: 2e-4 / sqrt(width / 16384) (Gao et al. 2024) x sqrt(batch / 256))."
    )
    lr_warmup: float = _opt(0.0, "Share of the steps over which the learning rate warms up linearly from 0.")
    lr_decay: float = _opt(0.3, "Share of the last steps over which the learning rate decays linearly to 0.")
    auxk_coef: float = _opt(1 / 32, "Weight of the AuxK loss that revives dead units (0 = off).")
    k_aux: int = _opt(0, "Dead units AuxK reconstructs the residual with; 0 = half the input dimension (Gao et al.).")
    dead_samples: int = _opt(
        0,
        "A unit that has not fired for this many training samples counts as dead for AuxK; 0 = one epoch, at most 10M.",
    )
    holdout: float = _opt(0.05, "Share of samples held out to measure FVU and stop early (at most 65,536 samples).")
    patience: int = _opt(3, "Stop after this many epochs without held-out FVU improving by 0.1%.")
    buffer_rows: int = _opt(
        262_144,
        "Training rows held in memory: a training split this small is loaded once; a larger one streams from disk, shuffled within a buffer of this many rows.",
    )
    seed: int = _opt(0, "Seed for initialisation, batching and the held-out split.")
    device: str = _opt("auto", "Where training runs: auto, cpu or cuda.", artifact=False)


@dataclass(frozen=True)
class FactorsConfig(_FiniteNumbers):
    batch_size: int = _opt(4096, "Samples encoded per batch.")
    device: str = _opt("auto", "Where encoding runs: auto, cpu or cuda.", artifact=False)
    executor: str = _opt(
        "local",
        "Where encoding runs: local (this process) or ray (Ray actors, one feature shard at a time; see --workers, --gpus-per-worker, "
        "--ray-address; needs pip install 'dynsel[ray]', and every Ray node must read the features at the same path). The tables are the same either way.",
        artifact=False,
    )
    ray_address: str | None = _opt(None, RAY_ADDRESS_HELP, artifact=False)
    workers: int | None = _opt(
        None,
        "--executor ray: Ray actors, each holding the SAE (default: the cluster's CPUs, or its GPUs / --gpus-per-worker). "
        "The local executor encodes in this process and takes no --workers.",
        artifact=False,
    )
    gpus_per_worker: float = _opt(0.0, GPUS_PER_WORKER_HELP, artifact=False)


@dataclass(frozen=True)
class PlanConfig(_FiniteNumbers):
    epochs: int = _opt(10, "Training epochs the plan covers (including --full-epochs).")
    ratio: float = _opt(
        0.5, "Share of the data set selected per epoch, in (0, 1]; each epoch holds exactly ceil(ratio*N)."
    )
    seed: int = _opt(
        0,
        "Seed of every random choice: the rotation order (dynsel, rs2), the samples drawn (random), the order within each epoch, and score's Gumbel noise.",
    )
    method: str = _opt(
        "dynsel",
        "Selection method: dynsel (rotation weighted by near-duplicate groups and label trust), rs2 (a fresh permutation walked ratio*N at a time), score (the paper's representativeness/rarity score with a usage penalty), full, random, static-random, static-top, knn-density, kcenter (the last two need --features).",
    )
    dedup: bool = _opt(True, "dynsel: near-duplicates (factor-code cosine >= --dup-cosine) share one sample's turn.")
    trust: bool = _opt(
        True,
        "dynsel: samples whose factor neighbours carry another label come around less often, as far as the data's own separability allows.",
    )
    trust_full: float = _opt(
        1.0,
        "dynsel: separability at or above which a suspect's turn rate is its relative label support alone; below it the hold-back shrinks in proportion (1 = in proportion to separability, the default; 0.5 holds suspects back harder: more gain on noisy labels, a small loss on clean text, see docs/results.md).",
    )
    label_trust: str = _opt(
        "probe-checked",
        "dynsel: how suspected mislabels are found: probe-checked (the default: confident learning on a cross-validated linear probe of the SAE codes, and its suspects leave the rotation only if probes trained without them predict held-out labels significantly better; then as many rows as help most), probe (confident learning's suspects leave, unchecked), probe-heldout (the held-out cut alone), probe-odds (suspects keep turns in proportion to the odds of their label) or vote (the earlier default: a factor-neighbour vote; a suspect comes around less often). See docs/method.md.",
    )
    dup_rule: str = _opt(
        "fixed",
        "dynsel: which close pairs are near-duplicates: fixed (every pair at code cosine >= --dup-cosine) or gap (such a pair must also stand out: the next neighbour of the row at least 3x farther, so a cloud of paraphrases forms no group; see docs/method.md).",
    )
    dup_cosine: float = _opt(0.9, "dynsel: factor-code cosine at or above which two samples count as near-duplicates.")
    neighbours: str = _opt(
        "auto",
        "dynsel: how the factor neighbours are searched: exact (O(N^2) time), ivf (approximate: inverted lists, scanning the 16 of about 4*sqrt(N) cells nearest each sample; cosines stay exact, a few true neighbours can be missed) or auto (exact up to 200,000 samples, ivf above; see docs/method.md).",
    )
    normalise: str = _opt("rank", "score: how representativeness and rarity are scaled to [0, 1]: rank or minmax.")
    schedule: str = _opt(
        "constant",
        "score: scheduler shape of the weight on rarity: constant (default, chosen by docs/results.md), cosine, linear or step.",
    )
    lambda_start: float = _opt(
        0.5,
        "score: weight on rarity at the first selection epoch (0 = representativeness only); the weight throughout with --schedule constant.",
    )
    lambda_end: float = _opt(1.0, "score: weight on rarity at the last selection epoch (cosine, linear, step).")
    penalty: str = _opt("additive", "score: usage-frequency penalty form: additive, multiplicative or none.")
    beta: float = _opt(1.0, "score: usage-frequency penalty strength.")
    decay: float = _opt(1.0, "score: usage counts decay per epoch (1 = plain counts).")
    tau: float = _opt(0.0, "score: Gumbel temperature (0 = deterministic top-k; > 0 = sampling without replacement).")
    class_quota: str = _opt(
        "content",
        "With labels, per-class budgets of every epoch: content (the default: each class its share of the data's distinct, trusted content, so a class of copies or suspects gets less; for methods without near-duplicate and trust signals that is its row share), proportional (each class its share of the rows), balanced (equal shares, capped by class size; see docs/method.md for when) or none.",
    )
    full_epochs: int = _opt(0, "Final epochs that train on all samples (annealing), counted within --epochs.")
    batch_size: int = _opt(128, "Trainer batch size, for steps per epoch in the manifest.")
    world_size: int = _opt(1, "Trainer data-parallel ranks, for steps per epoch in the manifest.")
    drop_last: bool = _opt(False, "Whether the trainer drops the last partial batch (steps in the manifest).")
    device: str = _opt("auto", "Where scoring runs: auto, cpu or cuda (same plan either way).", artifact=False)
