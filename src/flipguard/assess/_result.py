"""Result objects of an impact assessment.  Plain dataclasses: the CLI prints them,
the report draws them, tests assert on them."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .._json import to_jsonable
from ..exceptions import InvalidParameterError

__all__ = ["Assessment", "BoundaryView", "RunResult"]


@dataclass
class RunResult:
    """One (strategy, rate, seed, model) run.

    ``clean_model`` and ``poisoned_model`` each map ``"poisoned_validation"``
    and ``"clean_holdout"`` to a :func:`flipguard.metrics.classification_report`
    dict (accuracy, precision, recall, f1, per_class, confusion_matrix).
    The clean model is trained on the true labels of the training split, the
    poisoned model on the attacked ones; both are scored on the same splits.
    """

    strategy: str
    rate: float
    seed: int
    model: str
    n_train: int
    n_validation: int
    n_holdout: int
    n_flipped: int
    flip_rate: float
    clean_model: dict[str, dict]
    poisoned_model: dict[str, dict]
    illusion_gap: float
    fit_seconds: float = 0.0
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def holdout_accuracy(self) -> float:
        return self.poisoned_model["clean_holdout"]["accuracy"]

    @property
    def validation_accuracy(self) -> float:
        return self.poisoned_model["poisoned_validation"]["accuracy"]

    @property
    def accuracy_drop(self) -> float:
        """Clean-holdout accuracy lost to the attack (clean model minus poisoned model)."""
        return self.clean_model["clean_holdout"]["accuracy"] - self.holdout_accuracy


@dataclass
class BoundaryView:
    """What the report needs to draw a clean vs poisoned decision boundary in 2-D.

    ``points`` are the training rows in the plotted plane (the raw features for
    2-D data, else a 2-D PCA projection; ``axis_names`` says which).
    ``clean_grid`` / ``poisoned_grid`` are the predicted label codes of the
    two models on the ``grid_x`` x ``grid_y`` mesh (shape ``(len(grid_y), len(grid_x))``).
    """

    title: str
    strategy: str
    rate: float
    model: str
    axis_names: list[str]
    class_names: list[str]
    points: np.ndarray
    y_true: np.ndarray
    y_poisoned: np.ndarray
    grid_x: np.ndarray
    grid_y: np.ndarray
    clean_grid: np.ndarray
    poisoned_grid: np.ndarray
    clean_holdout_accuracy: float
    poisoned_holdout_accuracy: float
    #: Training rows the view was drawn from; ``len(points)`` when every row is drawn.
    n_rows: int | None = None
    #: Flipped training rows among them.
    n_flipped: int | None = None
    #: How the plane was made, e.g. "PCA of the standardised features".
    projection: str = ""

    @property
    def flip_mask(self) -> np.ndarray:
        return self.y_true != self.y_poisoned


@dataclass
class Assessment:
    """Everything one assessment measured.

    Attributes
    ----------
    dataset : dict
        ``source``, ``n_samples``, ``n_features``, ``classes``, ``label``.
    config : dict
        Strategies, rates, seeds, models, split sizes and attack parameters.
    runs : list of RunResult
        One entry per (strategy, rate, seed, model); rate 0 / strategy
        ``"none"`` is the clean baseline.
    views : list of BoundaryView
        Decision-boundary pictures for the report (not part of ``to_dict``).
    seconds : float
        Wall time of the whole sweep.
    """

    dataset: dict[str, Any]
    config: dict[str, Any]
    runs: list[RunResult]
    views: list[BoundaryView] = field(default_factory=list)
    seconds: float = 0.0

    # -- aggregation -------------------------------------------------------
    def summary(self) -> list[dict[str, Any]]:
        """Mean and standard deviation over seeds, one row per (strategy, rate, model).

        Keys: ``strategy, rate, model, n_seeds, flip_rate, clean_holdout_accuracy``
        (clean model), ``poisoned_validation_accuracy``, ``poisoned_holdout_accuracy``,
        ``poisoned_holdout_f1``, ``accuracy_drop``, ``illusion_gap``, each metric
        as ``{"mean": .., "std": ..}``.  With detection, ``detection`` maps
        precision, recall, f1, auroc, average_precision, precision_at_true_count
        and estimated_flip_rate to the same; with mitigation, ``mitigation``
        maps each strategy to its clean-holdout ``accuracy`` and its ``gain``
        over the unmitigated poisoned model.
        """
        groups: dict[tuple, list[RunResult]] = {}
        for r in self.runs:
            groups.setdefault((r.strategy, r.rate, r.model), []).append(r)
        rows = []
        for (strategy, rate, model), rs in groups.items():
            rows.append({
                "strategy": strategy, "rate": rate, "model": model, "n_seeds": len(rs),
                "flip_rate": _stat([r.flip_rate for r in rs]),
                "clean_holdout_accuracy": _stat([r.clean_model["clean_holdout"]["accuracy"] for r in rs]),
                "poisoned_validation_accuracy": _stat([r.validation_accuracy for r in rs]),
                "poisoned_holdout_accuracy": _stat([r.holdout_accuracy for r in rs]),
                "poisoned_holdout_f1": _stat([r.poisoned_model["clean_holdout"]["f1"] for r in rs]),
                "accuracy_drop": _stat([r.accuracy_drop for r in rs]),
                "illusion_gap": _stat([r.illusion_gap for r in rs]),
            })
            det = [r.extras["detection"] for r in rs if "detection" in r.extras]
            if det:
                rows[-1]["detection"] = {m: _stat([d[m] for d in det]) for m in _DETECTION_METRICS}
            mit = [r.extras["mitigation"] for r in rs if "mitigation" in r.extras]
            if mit:
                rows[-1]["mitigation"] = {
                    name: {"accuracy": _stat([m[name]["accuracy"] for m in mit]),
                           "gain": _stat([m[name]["accuracy"] - r.holdout_accuracy
                                          for m, r in zip(mit, rs)])}
                    for name in mit[0]}
        return rows

    def find(self, strategy: str, rate: float, model: str | None = None) -> dict[str, Any]:
        """The summary row for ``strategy`` at ``rate`` (and ``model``, default the first)."""
        for row in self.summary():
            if row["strategy"] == strategy and math.isclose(row["rate"], rate) \
                    and (model is None or row["model"] == model):
                return row
        raise KeyError(f"no run for strategy={strategy!r} rate={rate} model={model!r}")

    def warnings(self) -> list[str]:
        """What the numbers do not show on their own: one line per (strategy, rate) whose attack
        flipped no row in some seed (that run measured the clean model twice, which a sweep over tiny
        rates may want but a typo does not), and the notes of runs whose attack left one class."""
        runs: dict[tuple, dict[int, int]] = {}
        for r in self.runs:
            if r.strategy != "none":
                runs.setdefault((r.strategy, r.rate), {})[r.seed] = r.n_flipped
        out = []
        for (strategy, rate), by_seed in runs.items():
            zero = sum(n == 0 for n in by_seed.values())
            if zero:
                out.append(f"rate {rate:g} flipped 0 rows with {strategy} in {zero} of {len(by_seed)} seed(s) "
                           "(the rate rounds to 0 flips of the rows it applies to): those runs measure no attack")
        return out + list(dict.fromkeys(r.extras["note"] for r in self.runs if r.extras.get("note")))

    # -- serialisation -----------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return to_jsonable({
            "dataset": self.dataset,
            "config": self.config,
            "seconds": self.seconds,
            "warnings": self.warnings(),
            "summary": self.summary(),
            "runs": [asdict(r) for r in self.runs],
        })

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def to_arrow(self, kind: str = "runs"):
        """A pyarrow Table: one row per run (``kind="runs"``) or per summary row (``"summary"``,
        each statistic as ``<metric>_mean`` / ``<metric>_std`` columns)."""
        import pyarrow as pa

        if kind == "runs":
            rows = [{"strategy": r.strategy, "rate": r.rate, "seed": r.seed, "model": r.model,
                     "n_train": r.n_train, "n_validation": r.n_validation, "n_holdout": r.n_holdout,
                     "n_flipped": r.n_flipped, "flip_rate": r.flip_rate,
                     "validation_accuracy": r.validation_accuracy, "holdout_accuracy": r.holdout_accuracy,
                     "clean_model_holdout_accuracy": r.clean_model["clean_holdout"]["accuracy"],
                     "accuracy_drop": r.accuracy_drop, "illusion_gap": r.illusion_gap,
                     "fit_seconds": r.fit_seconds} for r in self.runs]
        elif kind == "summary":
            rows = []
            for s in self.summary():
                flat: dict[str, Any] = {}
                for k, v in s.items():
                    if isinstance(v, dict) and "mean" in v:
                        flat[f"{k}_mean"], flat[f"{k}_std"] = v["mean"], v.get("std")
                    elif not isinstance(v, (dict, list)):
                        flat[k] = v
                rows.append(flat)
        else:
            raise InvalidParameterError(f"kind must be 'runs' or 'summary'; got {kind!r}")
        return pa.Table.from_pylist(rows)

    def to_pandas(self, kind: str = "runs"):
        """:meth:`to_arrow` as a pandas DataFrame (pandas is imported only here)."""
        return self.to_arrow(kind).to_pandas()


_DETECTION_METRICS = ("precision", "recall", "f1", "auroc", "average_precision",
                      "precision_at_true_count", "estimated_flip_rate")


def _stat(values) -> dict[str, float]:
    a = np.asarray(values, dtype=float)
    if np.all(np.isnan(a)):
        return {"mean": float("nan"), "std": float("nan")}
    a = a[~np.isnan(a)]
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0}
