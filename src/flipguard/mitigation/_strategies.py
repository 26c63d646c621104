"""Mitigation strategies: what to do with the rows an audit suspects.

Each strategy is a small class in a registry (``drop``, ``relabel``,
``weight``, ``loss_correction``).  ``plan`` turns a
:class:`~flipguard.detection.LabelAudit` into a :class:`Plan` (which rows to
drop, relabel or down-weight, or which transition matrix to correct with);
``fit`` trains a model from a plan.  :class:`~flipguard.mitigation.RobustClassifier`
adds the caps and the no-harm guard around them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import has_fit_parameter

from .._registry import Registry
from ..exceptions import InvalidParameterError
from ..models import make_model, model_name
from ._forward import ForwardCorrectedLogisticRegression, check_transition

__all__ = ["STRATEGIES", "Plan", "flip_budget", "make_strategy", "register_strategy", "strategy_names"]

#: name -> strategy class; filled by :func:`register_strategy`.
STRATEGIES = Registry("mitigation strategy", "name")
register_strategy = STRATEGIES.register
strategy_names = STRATEGIES.names


def make_strategy(name: str) -> "BaseStrategy":
    return STRATEGIES.make(name)


@dataclass
class Plan:
    """What a strategy does to the training rows (all arrays aligned with them).

    Attributes
    ----------
    keep : ndarray of bool
        Rows used for training (False = dropped).
    y : ndarray of int
        Training label codes after relabelling.
    weight : ndarray of float or None
        Per-row sample weights (``weight`` strategy).
    transition : ndarray or None
        ``T[true, observed]`` for forward loss correction.
    changed : ndarray of bool
        Rows dropped, relabelled or down-weighted.
    """

    keep: np.ndarray
    y: np.ndarray
    weight: np.ndarray | None = None
    transition: np.ndarray | None = None
    changed: np.ndarray | None = None

    def restrict(self, rows: np.ndarray) -> Plan:
        """The plan for a subset of the rows (guard folds)."""
        return Plan(keep=self.keep[rows], y=self.y[rows],
                    weight=None if self.weight is None else self.weight[rows],
                    transition=self.transition,
                    changed=None if self.changed is None else self.changed[rows])


def flip_budget(audit, y: np.ndarray, n_classes: int, max_fraction: float) -> np.ndarray:
    """How many rows of each **observed** class a strategy may touch.

    The audit's estimate of how many rows observed as class ``c`` really
    belong to another class (column ``c`` of its transition matrix, off the
    diagonal), and never more than ``max_fraction`` of the class: a minority
    class is never cleaned beyond its estimated flip share, and no class is
    ever emptied.
    """
    counts = np.bincount(y, minlength=n_classes)
    t = np.asarray(audit.transitions, dtype=np.int64)
    into = t.sum(axis=0) - np.diagonal(t)
    return np.minimum(into, np.floor(max_fraction * counts)).astype(np.int64).clip(min=0)


def select_within_budget(candidates: np.ndarray, scores: np.ndarray, y: np.ndarray,
                         budget: np.ndarray) -> np.ndarray:
    """Mask of the most suspicious candidate rows, at most ``budget[c]`` per observed class."""
    rows = np.flatnonzero(candidates)
    if len(rows) == 0:
        return np.zeros(len(y), dtype=bool)
    order = rows[np.lexsort((rows, -scores[rows], y[rows]))]  # by class, most suspicious first
    cls = y[order]
    first = np.searchsorted(cls, cls, side="left")
    rank = np.arange(len(order)) - first
    chosen = np.zeros(len(y), dtype=bool)
    chosen[order[rank < budget[cls]]] = True
    return chosen


def fit_model(estimator, X, y, sample_weight=None, random_state=None):
    """Fit a fresh copy of ``estimator`` (name or classifier), routing ``sample_weight``.

    Training rows of a single class (a tiny guard fold after cleaning) give a
    constant classifier instead of an error.
    """
    if len(np.unique(y)) < 2:
        from sklearn.dummy import DummyClassifier

        return DummyClassifier(strategy="most_frequent").fit(X, y)
    model = make_model(estimator, random_state=random_state)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if sample_weight is None:
            return model.fit(X, y)
        if isinstance(model, Pipeline):
            last = model.steps[-1][0]
            return model.fit(X, y, **{f"{last}__sample_weight": sample_weight})
        return model.fit(X, y, sample_weight=sample_weight)


def accepts_sample_weight(estimator) -> bool:
    model = make_model(estimator)
    final = model.steps[-1][1] if isinstance(model, Pipeline) else model
    return has_fit_parameter(final, "sample_weight")


class BaseStrategy:
    """A mitigation strategy: ``plan`` from an audit, ``fit`` from a plan."""

    name = "base"

    def check(self, estimator) -> None:
        """Raise :class:`InvalidParameterError` if the strategy cannot work with ``estimator``."""

    def plan(self, y, audit, *, protected, n_classes, max_fraction, transition=None) -> Plan:
        raise NotImplementedError  # pragma: no cover - abstract

    def fit(self, estimator, X, plan: Plan, random_state=None):
        return fit_model(estimator, X[plan.keep], plan.y[plan.keep],
                         None if plan.weight is None else plan.weight[plan.keep], random_state)


@register_strategy("drop")
class DropStrategy(BaseStrategy):
    """Drop flagged rows (the most suspicious first, within each class's flip budget).

    The classic data-sanitisation defence (e.g. Paudice et al., "Label
    Sanitization against Label Flipping Poisoning Attacks", ECML 2018).
    """

    def plan(self, y, audit, *, protected, n_classes, max_fraction, transition=None) -> Plan:
        budget = flip_budget(audit, y, n_classes, max_fraction)
        chosen = select_within_budget(np.asarray(audit.flags, bool) & ~protected, audit.scores, y, budget)
        return Plan(keep=~chosen, y=y.copy(), changed=chosen)


@register_strategy("relabel")
class RelabelStrategy(BaseStrategy):
    """Give flagged rows the audit's suggested label (within each class's flip budget)."""

    def plan(self, y, audit, *, protected, n_classes, max_fraction, transition=None) -> Plan:
        suggested = np.asarray(audit.suggested_codes, dtype=np.int64)
        cand = np.asarray(audit.flags, bool) & ~protected & (suggested != y)
        chosen = select_within_budget(cand, audit.scores, y, flip_budget(audit, y, n_classes, max_fraction))
        y_new = np.where(chosen, suggested, y)
        return Plan(keep=np.ones(len(y), dtype=bool), y=y_new, changed=chosen)


@register_strategy("weight")
class WeightStrategy(BaseStrategy):
    """Down-weight rows in proportion to their suspicion score.

    Within each observed class ``c``, a row's excess suspicion is its score
    above the class's median score, ``e_i = max(0, score_i - median_c)``,
    and its weight is ``1 - min(1, lambda_c * e_i)`` with ``lambda_c`` chosen
    so the class loses exactly its flip budget of weight
    (:func:`flip_budget`): a class estimated to hold 30 flipped labels gives
    up 30 rows' worth of weight, from its most suspicious rows first.  Rows
    at or below the median, and trusted rows, keep weight 1.
    A soft version of dropping in the spirit of importance reweighting for
    noisy labels (Liu & Tao, "Classification with Noisy Labels by Importance
    Reweighting", IEEE TPAMI 2016).
    """

    def check(self, estimator) -> None:
        if not accepts_sample_weight(estimator):
            raise InvalidParameterError(
                f"strategy='weight' needs an estimator whose fit accepts sample_weight; "
                f"{model_name(estimator)} does not. Use 'drop' or 'relabel'.")

    def plan(self, y, audit, *, protected, n_classes, max_fraction, transition=None) -> Plan:
        budget = flip_budget(audit, y, n_classes, max_fraction)
        scores = np.clip(np.asarray(audit.scores, dtype=np.float64), 0.0, 1.0)
        weight = np.ones(len(y))
        for c in range(n_classes):  # one vectorised pass per class
            rows = np.flatnonzero((y == c) & ~protected)
            if budget[c] <= 0 or len(rows) == 0:
                continue
            excess = np.clip(scores[rows] - np.median(scores[rows]), 0.0, None)
            weight[rows] = 1.0 - _spread(excess, float(budget[c]))
        return Plan(keep=np.ones(len(y), dtype=bool), y=y.copy(), weight=weight, changed=weight < 1.0)


def _spread(s: np.ndarray, r: float) -> np.ndarray:
    """``min(1, lam * s)`` with ``lam`` such that the values sum to ``r`` (or as close as possible)."""
    r = min(r, float(np.count_nonzero(s > 0)))
    if r <= 0:
        return np.zeros_like(s)
    desc = np.sort(s)[::-1]
    suffix = np.cumsum(desc[::-1])[::-1]  # suffix[m] = sum of desc[m:]
    m = np.arange(int(np.floor(r)) + 1)
    m = m[m < len(desc)]
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = (r - m) / suffix[m]
    prev_sat = np.where(m > 0, lam * desc[np.maximum(m - 1, 0)] >= 1 - 1e-12, True)
    valid = np.isfinite(lam) & (lam * desc[m] <= 1 + 1e-12) & prev_sat
    if not valid.any():
        return (s > 0).astype(np.float64)
    return np.minimum(1.0, lam[np.argmax(valid)] * s)


@register_strategy("loss_correction")
class LossCorrectionStrategy(BaseStrategy):
    """Forward loss correction with the audit's transition matrix (Patrini et al., CVPR 2017).

    No row is dropped or relabelled: a
    :class:`ForwardCorrectedLogisticRegression` is trained on all rows through
    ``T[true, observed]``, the audit's transition counts normalised per true
    class (or the ``transition`` given).  Whatever ``estimator`` is, the
    corrected model is a multinomial logistic regression; ``estimator`` still
    produces the audit's out-of-fold probabilities and the plain baseline.
    """

    def plan(self, y, audit, *, protected, n_classes, max_fraction, transition=None) -> Plan:
        if transition is not None:
            T = check_transition(transition, n_classes)
        else:
            T = check_transition(np.asarray(audit.transitions, dtype=np.float64), n_classes,
                                 who="the audit's transition matrix")
        noisy = not np.allclose(T, np.eye(n_classes))
        return Plan(keep=np.ones(len(y), dtype=bool), y=y.copy(), transition=T,
                    changed=np.full(len(y), noisy))

    def fit(self, estimator, X, plan: Plan, random_state=None):
        present = np.unique(plan.y)
        if len(present) < 2:
            return fit_model(estimator, X, plan.y)
        T = plan.transition[np.ix_(present, present)]
        model = ForwardCorrectedLogisticRegression(T / T.sum(axis=1, keepdims=True))
        return model.fit(X, plan.y, sample_weight=plan.weight)


def diagonally_dominant(T: np.ndarray) -> bool:
    """Every true class is most often observed as itself (forward correction's working condition)."""
    off = T - np.diag(np.diagonal(T))
    return bool(np.all(np.diagonal(T) > off.max(axis=1)))
