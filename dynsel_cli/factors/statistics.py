"""Per-unit statistics of SAE codes (units.parquet), accumulated chunk by chunk in row order.

Counts, per-class counts and maxima are exact whatever the chunking. The activation mass is a float64 sum,
whose rounding depends on the order of the additions: it is added one activation at a time, in row order
(``np.add.at``, unbuffered and sequential, as ``np.bincount(weights=...)`` over the whole table adds), so
the bytes of units.parquet do not depend on how the rows arrive (feature shards, encoding batches,
executors) nor on N.
"""

from __future__ import annotations

import numpy as np

from ..errors import DynselError
from ..formats.factors import UnitStats
from ..limits import check_class_ids


class UnitStatsAccumulator:
    """Running per-unit count, activation mass and max, and per-class counts when labelled.

    Memory: O(width × classes), classes = the largest class id + 1 (units.parquet's class_frequency is
    indexed by class id), so class ids are refused beyond :data:`~dynsel_cli.limits.MAX_CLASS_CELLS`
    before anything is allocated. :meth:`add` takes codes of any number of rows, in row order.
    """

    def __init__(
        self, width: int, has_labels: bool, n_classes: int | None = None, source: str = "the features"
    ) -> None:
        if has_labels and n_classes:
            check_class_ids(n_classes - 1, width, f"{source} (its class names)")
        self.width, self.has_labels, self.n_rows, self.source = width, has_labels, 0, source
        self.count = np.zeros(width, dtype=np.int64)
        self.mass = np.zeros(width, dtype=np.float64)
        self.max_act = np.zeros(width, dtype=np.float64)
        self._min_classes = n_classes or 0
        self._joint = np.zeros((0, width), dtype=np.int64)  # [classes seen, width], grown as labels appear
        self._class_sizes = np.zeros(0, dtype=np.int64)

    def add(self, units: np.ndarray, acts: np.ndarray, labels: np.ndarray | None = None) -> None:
        """Fold in the codes of the next rows: units int32 [rows, k] (−1 where nothing fired), acts [rows, k]."""
        if (labels is not None) != self.has_labels:
            raise ValueError("labels must be given exactly when the statistics are per class")
        fired = units >= 0
        ids = units[fired].astype(np.int64)
        values = acts[fired].astype(np.float64)
        self.count += np.bincount(ids, minlength=self.width)
        np.add.at(self.mass, ids, values)
        np.maximum.at(self.max_act, ids, values)
        if labels is not None and len(labels):
            self._add_classes(np.asarray(labels, dtype=np.int64), fired, ids)
        self.n_rows += len(units)

    def _add_classes(self, labels: np.ndarray, fired: np.ndarray, ids: np.ndarray) -> None:
        low, high = int(labels.min()), int(labels.max())
        if low < 0:
            raise DynselError(f"the features have a negative label ({low}); labels must be class ids 0..C-1")
        check_class_ids(high, self.width, self.source)
        classes = max(high + 1, len(self._class_sizes))
        if classes > len(self._class_sizes):
            self._joint = np.vstack([self._joint, np.zeros((classes - len(self._joint), self.width), dtype=np.int64)])
            self._class_sizes = np.concatenate(
                [self._class_sizes, np.zeros(classes - len(self._class_sizes), dtype=np.int64)]
            )
        row_labels = np.broadcast_to(labels[:, None], fired.shape)[fired]
        self._joint += np.bincount(row_labels * self.width + ids, minlength=self._joint.size).reshape(self._joint.shape)
        self._class_sizes += np.bincount(labels, minlength=classes)

    def finish(self) -> UnitStats:
        """The statistics of all rows added so far."""
        count, mass, width = self.count.copy(), self.mass.copy(), self.width
        mean_act = np.divide(mass, count, out=np.zeros(width), where=count > 0)
        class_frequency = None
        if self.has_labels and self.n_rows:
            classes = max(len(self._class_sizes), self._min_classes)
            joint = np.zeros((classes, width), dtype=np.int64)
            joint[: len(self._joint)] = self._joint
            sizes = np.zeros(classes, dtype=np.float64)
            sizes[: len(self._class_sizes)] = self._class_sizes
            class_frequency = np.divide(joint, sizes[:, None], out=np.zeros(joint.shape), where=sizes[:, None] > 0).T
        return UnitStats(
            count=count,
            frequency=count / max(self.n_rows, 1),
            mass=mass,
            mean_act=mean_act,
            max_act=self.max_act.copy(),
            class_frequency=class_frequency,
        )


def unit_statistics(
    units: np.ndarray, acts: np.ndarray, width: int, labels: np.ndarray | None = None, n_classes: int | None = None
) -> UnitStats:
    """Per-unit count, frequency, activation mass, mean and max; per-class frequency when labelled."""
    stats = UnitStatsAccumulator(width, labels is not None, n_classes)
    stats.add(units, acts, labels)
    return stats.finish()
