"""The flipper protocol: ``fit_resample(X, y) -> (X, y_poisoned)`` plus exactly which rows changed.

Modelled on imbalanced-learn's samplers: the public :meth:`BaseFlipper.fit_resample`
validates parameters and data, resolves the budget, and calls the subclass's
private ``_flip`` hook, which only picks rows and their new label codes.
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils import check_array, check_random_state

from .._registry import Registry
from .._validation import Interval, validate_params
from ..exceptions import DataError, InvalidParameterError

__all__ = ["BaseFlipper", "Budget", "FLIPPERS", "flipper_names", "make_flipper", "register"]

#: name -> flipper class; filled by :func:`register`.
FLIPPERS = Registry("attack strategy", "strategy_name")
register = FLIPPERS.register
flipper_names = FLIPPERS.names


def make_flipper(name: str, **params) -> "BaseFlipper":
    """An unfitted flipper by registry name, e.g. ``make_flipper("random", rate=0.2)``."""
    return FLIPPERS.make(name, **params)


class Budget:
    """How many labels to flip: a total, or a count per class (label code order)."""

    def __init__(self, total: int, per_class: np.ndarray | None = None):
        self.total = int(total)
        self.per_class = per_class

    def __repr__(self) -> str:
        return f"Budget(total={self.total}, per_class={self.per_class})"


class BaseFlipper(BaseEstimator):
    """Base class of every label-flipping attack.

    Parameters shared by all flippers
    ---------------------------------
    rate : float in (0, 1] or dict, default=0.1
        Fraction of rows to flip; a dict ``{label: fraction}`` flips that
        fraction of each named class.  Ignored when ``n_flips`` is given.
    n_flips : int or dict, default=None
        Exact number of rows to flip; a dict ``{label: count}`` per class.
    random_state : int, RandomState instance or None, default=None
        Seeds every random choice; the same seed flips the same rows.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Label values seen in ``y``.
    flip_mask_ : ndarray of bool, shape (n_samples,)
        True where the label was flipped.
    flipped_indices_ : ndarray of int
        Sorted row positions of the flipped labels.
    original_labels_ : ndarray
        Label each flipped row had before, aligned with ``flipped_indices_``.
    new_labels_ : ndarray
        Label each flipped row has now, aligned with ``flipped_indices_``;
        always different from ``original_labels_``.
    n_flips_ : int
        Number of flipped labels.
    """

    _parameter_constraints: dict = {
        "rate": [Interval(Real, 0, 1, closed="right"), dict, None],
        "n_flips": [Interval(Integral, 0, None, closed="left"), dict, None],
        "random_state": ["random_state"],
    }
    #: Whether ``_flip`` uses the features (otherwise X may be anything row-indexable).
    _needs_X = False
    strategy_name = "base"

    def __init__(self, *, rate=0.1, n_flips=None, random_state=None):
        self.rate = rate
        self.n_flips = n_flips
        self.random_state = random_state

    # -- public ------------------------------------------------------------
    def fit_resample(self, X, y):
        """Flip labels of ``y``; ``X`` is returned unchanged.

        Returns
        -------
        X : as given
        y_poisoned : same container type as ``y`` (ndarray, list or pandas Series)
        """
        validate_params(self)
        y_values = _as_1d(y)
        n = len(y_values)
        if self._needs_X:
            X_arr = check_array(X, dtype=np.float64)
        else:
            X_arr = X
        if X is not None and _n_rows(X) != n:
            raise DataError(f"X has {_n_rows(X)} rows but y has {n} labels")
        classes, codes = np.unique(y_values, return_inverse=True)
        codes = codes.astype(np.int64)
        if len(classes) < 2:
            raise DataError("y has a single class; flipping needs at least two")
        self.classes_ = classes
        rng = check_random_state(self.random_state)
        budget = self._resolve_budget(codes, len(classes))
        rows, new = self._flip(X_arr, codes, len(classes), budget, rng)
        rows = np.asarray(rows, dtype=np.int64)
        new = np.asarray(new, dtype=np.int64)
        order = np.argsort(rows, kind="stable")
        rows, new = rows[order], new[order]
        if len(np.unique(rows)) != len(rows) or np.any(new == codes[rows]):
            raise RuntimeError(f"{type(self).__name__} produced an invalid flip set")  # a bug
        poisoned = codes.copy()
        poisoned[rows] = new
        self.flip_mask_ = poisoned != codes
        self.flipped_indices_ = rows
        self.original_labels_ = classes[codes[rows]]
        self.new_labels_ = classes[new]
        self.n_flips_ = int(len(rows))
        return X, _restore(y, classes[poisoned])

    # -- for subclasses ----------------------------------------------------
    def _flip(self, X, y, n_classes: int, budget: Budget, rng):  # pragma: no cover - abstract
        """Return ``(rows, new_codes)``: which rows to flip and their new label codes."""
        raise NotImplementedError

    def _resolve_budget(self, y: np.ndarray, n_classes: int, eligible: np.ndarray | None = None) -> Budget:
        """Turn ``rate``/``n_flips`` into a :class:`Budget` over ``eligible`` rows (default all)."""
        counts = np.bincount(y if eligible is None else y[eligible], minlength=n_classes)
        n = int(counts.sum())
        spec = self.n_flips if self.n_flips is not None else self.rate
        if spec is None:
            raise InvalidParameterError(f"{type(self).__name__}: give rate or n_flips")
        if isinstance(spec, dict):
            per = np.zeros(n_classes, dtype=np.int64)
            for label, amount in spec.items():
                idx = np.flatnonzero(self.classes_ == np.asarray(label, dtype=self.classes_.dtype))
                if len(idx) == 0:
                    raise InvalidParameterError(f"{type(self).__name__}: budget names class {label!r}, "
                                                f"which is not in y (classes: {', '.join(map(str, self.classes_))})")
                c = idx[0]
                per[c] = int(amount) if self.n_flips is not None else int(round(float(amount) * counts[c]))
                if per[c] > counts[c]:
                    raise InvalidParameterError(f"{type(self).__name__}: cannot flip {per[c]} rows of class "
                                                f"{label!r}, which has {counts[c]}")
            return Budget(int(per.sum()), per)
        total = int(spec) if self.n_flips is not None else int(round(float(spec) * n))
        if total > n:
            raise InvalidParameterError(f"{type(self).__name__}: cannot flip {total} of {n} eligible rows")
        return Budget(total)


def select_top(scores: np.ndarray, y: np.ndarray, budget: Budget, eligible: np.ndarray | None = None) -> np.ndarray:
    """Rows with the highest ``scores`` within the budget (per class when it has one).

    Ties are broken by row order (stable), so the choice is deterministic.
    """
    scores = np.asarray(scores, dtype=np.float64)
    pool = np.arange(len(y)) if eligible is None else np.flatnonzero(eligible) \
        if np.asarray(eligible).dtype == bool else np.asarray(eligible)
    if budget.per_class is None:
        k = min(budget.total, len(pool))
        order = np.argsort(-scores[pool], kind="stable")[:k]
        return pool[order]
    chosen = []
    for c, k in enumerate(budget.per_class):
        if k <= 0:
            continue
        members = pool[y[pool] == c]
        order = np.argsort(-scores[members], kind="stable")[:k]
        chosen.append(members[order])
    return np.concatenate(chosen) if chosen else np.array([], dtype=np.int64)


def random_other_class(y: np.ndarray, n_classes: int, rng) -> np.ndarray:
    """For each code in ``y``, a uniformly random *different* class code."""
    return (y + rng.randint(1, n_classes, size=len(y))) % n_classes


def _n_rows(X) -> int:
    return X.shape[0] if hasattr(X, "shape") else len(X)


def _as_1d(y) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise DataError(f"y must be 1-D, got shape {arr.shape}")
    if arr.dtype.kind == "f" and np.isnan(arr).any():
        raise DataError(f"y has {int(np.isnan(arr).sum())} NaN label(s)")
    if arr.dtype.kind == "O" and any(v is None for v in arr):
        raise DataError("y has missing (None) labels")
    return arr


def _restore(y_in, values: np.ndarray):
    """Return ``values`` in the container type of ``y_in``."""
    if hasattr(y_in, "iloc") and hasattr(y_in, "index"):  # pandas Series
        return type(y_in)(values, index=y_in.index, name=getattr(y_in, "name", None)).astype(y_in.dtype)
    if isinstance(y_in, list):
        return values.tolist()
    return values.astype(np.asarray(y_in).dtype, copy=False)
