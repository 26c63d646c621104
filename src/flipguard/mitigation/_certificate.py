"""The result of a certification: per-row certified radii and certified accuracy vs radius."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Certificate"]


@dataclass(frozen=True, eq=False)
class Certificate:
    """Certified robustness of partition-aggregation predictions against label flips.

    A prediction with radius ``r`` cannot change, whatever the attacker does,
    unless **more than** ``r`` training labels were flipped (Levine & Feizi,
    2021, Theorem 2; see :class:`PartitionAggregationClassifier`).

    Attributes
    ----------
    predictions : ndarray of shape (n_samples,)
        Predicted labels (the user's label values).
    radii : ndarray of int64, shape (n_samples,)
        Certified radius of each prediction, ``>= 0``.  Higher = more robust.
    votes : ndarray of int64, shape (n_samples, n_classes)
        How many partition models voted for each class.
    classes : ndarray of shape (n_classes,)
        Label values, in vote-column order (the tie-break order).
    n_partitions : int
        Number of partitions ``k`` (empty partitions abstain).
    n_empty_partitions : int
        Partitions that received no training row (they never vote).
    y_true : ndarray of shape (n_samples,) or None
        True labels of the certified rows, when known.
    ids : ndarray of shape (n_samples,) or None
        Ids (or row positions) of the certified rows.
    estimator : str
        The base model of each partition.
    hash_key : str
        The partitioning key (the text form of it).
    warnings : list of str
        Anything that makes the certificate weak (e.g. tiny partitions).
    """

    predictions: np.ndarray
    radii: np.ndarray
    votes: np.ndarray
    classes: np.ndarray
    n_partitions: int
    n_empty_partitions: int = 0
    y_true: np.ndarray | None = None
    ids: np.ndarray | None = None
    estimator: str = "logreg"
    hash_key: str = ""
    warnings: list[str] = field(default_factory=list)

    # -- summaries ---------------------------------------------------------
    @property
    def n_samples(self) -> int:
        return len(self.radii)

    @property
    def correct(self) -> np.ndarray | None:
        """Boolean mask of correct predictions (None without ``y_true``)."""
        if self.y_true is None:
            return None
        return np.asarray(self.predictions) == np.asarray(self.y_true)

    @property
    def max_radius(self) -> int:
        return int(self.radii.max()) if self.n_samples else 0

    @property
    def median_radius(self) -> float:
        return float(np.median(self.radii)) if self.n_samples else float("nan")

    def fraction_certified(self, r: int) -> float:
        """Fraction of rows whose prediction is certified at radius ``r`` (``radius >= r``)."""
        return float(np.mean(self.radii >= r)) if self.n_samples else float("nan")

    def certified_accuracy(self, r: int) -> float | None:
        """Fraction of rows predicted correctly **and** certified at radius ``r``.

        At ``r = 0`` this is the ensemble's plain accuracy; it is a lower bound
        on the accuracy the same training set would give after any ``r`` label
        flips.  None when the true labels are unknown.
        """
        correct = self.correct
        if correct is None or not self.n_samples:
            return None
        return float(np.mean(correct & (self.radii >= r)))

    def curve(self) -> list[dict]:
        """Certified accuracy and fraction certified for ``r = 0 .. max_radius + 1``."""
        if not self.n_samples:
            return []
        r_max = self.max_radius + 1
        # One pass: counts of rows with radius exactly r, then a reverse cumulative sum.
        at_least = np.cumsum(np.bincount(self.radii, minlength=r_max + 1)[::-1])[::-1]
        correct = self.correct
        ok = (np.cumsum(np.bincount(self.radii[correct], minlength=r_max + 1)[::-1])[::-1]
              if correct is not None else None)
        n = self.n_samples
        return [{"radius": r,
                 "certified_accuracy": None if ok is None else float(ok[r] / n),
                 "fraction_certified": float(at_least[r] / n)}
                for r in range(r_max + 1)]

    # -- serialisation -----------------------------------------------------
    def to_dict(self, rows: bool = True) -> dict:
        """Plain-Python view (JSON-ready); ``rows=False`` leaves out the per-row arrays."""
        out = {
            "method": "deep partition aggregation (Levine & Feizi, ICLR 2021)",
            "threat_model": "label flips only; rows are partitioned by a keyed hash of their id",
            "n_samples": self.n_samples,
            "n_partitions": int(self.n_partitions),
            "n_empty_partitions": int(self.n_empty_partitions),
            "estimator": self.estimator,
            "hash_key": self.hash_key,
            "classes": [_py(c) for c in self.classes],
            "accuracy": self.certified_accuracy(0),
            "median_radius": self.median_radius if self.n_samples else None,
            "max_radius": self.max_radius,
            "curve": self.curve(),
            "warnings": list(self.warnings),
        }
        if rows:
            out["rows"] = {
                "id": None if self.ids is None else np.asarray(self.ids).tolist(),
                "label": None if self.y_true is None else np.asarray(self.y_true).tolist(),
                "prediction": np.asarray(self.predictions).tolist(),
                "radius": self.radii.tolist(),
            }
        return out

    def to_json(self, rows: bool = True, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(rows=rows), indent=indent)

    def to_arrow(self):
        """A pyarrow Table, one row per certified row: ``row, id, label, prediction, radius``
        (label values as the classifier was given them)."""
        import pyarrow as pa

        def col(values):
            values = np.asarray(values)
            return pa.array(values.tolist() if values.dtype == object else values)

        n = self.n_samples
        return pa.table({
            "row": pa.array(np.arange(n), type=pa.int64()),
            "id": col(self.ids) if self.ids is not None else pa.nulls(n),
            "label": col(self.y_true) if self.y_true is not None else pa.nulls(n),
            "prediction": col(self.predictions),
            "radius": pa.array(np.asarray(self.radii, dtype=np.int64)),
        })

    def to_pandas(self):
        """:meth:`to_arrow` as a pandas DataFrame (pandas is imported only here)."""
        return self.to_arrow().to_pandas()


def _py(value):
    return value.item() if hasattr(value, "item") else value
