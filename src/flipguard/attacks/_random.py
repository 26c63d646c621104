"""Uniform random flipping and source -> target flipping."""

from __future__ import annotations

import numpy as np

from ..exceptions import InvalidParameterError
from ._base import BaseFlipper, Budget, random_other_class, register

__all__ = ["RandomFlip", "TargetedFlip"]


@register("random")
class RandomFlip(BaseFlipper):
    """Flip uniformly chosen rows to a uniformly chosen other class.

    Binary labels swap 0 <-> 1; with more classes each flipped row moves to
    one of the other classes with equal probability.  The baseline attack of
    the literature ("random label noise").

    Parameters
    ----------
    rate : float in (0, 1] or dict, default=0.1
        Fraction of all rows (or per class with a dict) to flip.
    n_flips : int or dict, default=None
        Exact number of flips instead of a rate.
    random_state : int, RandomState instance or None, default=None

    Examples
    --------
    >>> import numpy as np
    >>> from flipguard.attacks import RandomFlip
    >>> y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    >>> _, y_bad = RandomFlip(n_flips=2, random_state=0).fit_resample(None, y)
    >>> int((y_bad != y).sum())
    2
    """

    def _flip(self, X, y, n_classes: int, budget: Budget, rng):
        if budget.per_class is None:
            rows = rng.choice(len(y), size=budget.total, replace=False)
        else:
            rows = np.concatenate([
                rng.choice(np.flatnonzero(y == c), size=k, replace=False)
                for c, k in enumerate(budget.per_class)
            ])
        return rows, random_other_class(y[rows], n_classes, rng)


@register("targeted")
class TargetedFlip(BaseFlipper):
    """Relabel a fraction of one source class as a target class (fraud -> legitimate).

    Parameters
    ----------
    source : label, default=None
        Class whose rows are relabelled.  Default: the least frequent class
        (the fraud / malignant / minority class in most attacks).
    target : label, default=None
        Class they become.  Default: the most frequent other class.
    rate : float in (0, 1], default=0.1
        Fraction **of the source class** to flip.
    n_flips : int, default=None
        Exact number of source rows to flip instead.
    random_state : int, RandomState instance or None, default=None

    Attributes
    ----------
    source_, target_ : label
        The classes actually used.
    """

    _parameter_constraints = {**BaseFlipper._parameter_constraints, "source": "no_validation",
                              "target": "no_validation"}

    def __init__(self, *, source=None, target=None, rate=0.1, n_flips=None, random_state=None):
        super().__init__(rate=rate, n_flips=n_flips, random_state=random_state)
        self.source = source
        self.target = target

    def _flip(self, X, y, n_classes: int, budget: Budget, rng):
        counts = np.bincount(y, minlength=n_classes)
        s = self._code(self.source, "source") if self.source is not None else int(np.argmin(counts))
        if self.target is not None:
            t = self._code(self.target, "target")
        else:
            others = np.argsort(-counts, kind="stable")
            t = int(others[others != s][0])
        if s == t:
            raise InvalidParameterError(f"TargetedFlip: source and target are the same class "
                                        f"({str(self.classes_[s])!r})")
        self.source_, self.target_ = self.classes_[s], self.classes_[t]
        if isinstance(self.rate if self.n_flips is None else self.n_flips, dict):
            raise InvalidParameterError("TargetedFlip: the budget is a fraction or count of the "
                                        "source class, not a per-class dict")
        budget = self._resolve_budget(y, n_classes, eligible=y == s)
        members = np.flatnonzero(y == s)
        rows = rng.choice(members, size=budget.total, replace=False)
        return rows, np.full(len(rows), t)

    def _code(self, label, name: str) -> int:
        hit = np.flatnonzero(self.classes_.astype(str) == str(label))
        if len(hit) == 0:
            raise InvalidParameterError(f"TargetedFlip: {name} class {label!r} is not in y "
                                        f"(classes: {', '.join(map(str, self.classes_))})")
        return int(hit[0])
