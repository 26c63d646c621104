"""Attacks guided by a surrogate model's confidence: boundary and entropy flipping."""

from __future__ import annotations

import warnings
from numbers import Integral

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from .._validation import HasMethods, Interval, StrOptions
from ..models import MODEL_NAMES, make_model, predict_scores
from ._base import BaseFlipper, Budget, register, select_top

__all__ = ["BoundaryFlip", "EntropyFlip"]

_SEED_MAX = np.iinfo(np.int32).max


class _SurrogateFlipper(BaseFlipper):
    """Shared machinery: fit a surrogate on (a subsample of) the clean labels, score every row."""

    _parameter_constraints = {**BaseFlipper._parameter_constraints,
                              "model": [StrOptions(set(MODEL_NAMES)), HasMethods(["fit", "predict"])],
                              "max_fit_samples": [Interval(Integral, 2, None, closed="left")]}
    _needs_X = True

    def __init__(self, *, model="logreg", max_fit_samples=100_000, rate=0.1, n_flips=None,
                 random_state=None):
        super().__init__(rate=rate, n_flips=n_flips, random_state=random_state)
        self.model = model
        self.max_fit_samples = max_fit_samples

    def _surrogate_proba(self, X, y, n_classes: int, rng) -> np.ndarray:
        """Fit the surrogate on at most ``max_fit_samples`` seeded rows; probabilities for all rows."""
        est = make_model(self.model, random_state=rng.randint(_SEED_MAX))
        n = len(y)
        if n > self.max_fit_samples:
            fit_rows = rng.choice(n, size=self.max_fit_samples, replace=False)
            missing = np.setdiff1d(np.arange(n_classes), y[fit_rows])
            if len(missing):  # a rare class the subsample missed: give it all its rows
                fit_rows = np.concatenate([fit_rows, np.flatnonzero(np.isin(y, missing))])
            fit_rows.sort()
            X_fit, y_fit = X[fit_rows], y[fit_rows]
        else:
            X_fit, y_fit = X, y
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(X_fit, y_fit)
        self.surrogate_ = est
        return predict_scores(est, X, n_classes)


def _best_other(proba: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Probability of the given label, and the most probable *other* class and its probability."""
    rows = np.arange(len(y))
    p_true = proba[rows, y].copy()
    masked = proba.copy()
    masked[rows, y] = -np.inf
    other = np.argmax(masked, axis=1)
    return p_true, other, masked[rows, other]


@register("boundary")
class BoundaryFlip(_SurrogateFlipper):
    """Flip the rows a surrogate model is least (or most) sure about, to its runner-up class.

    A surrogate classifier is trained on the clean labels; each row's margin
    is the surrogate's probability of the row's label minus its largest
    probability of any other class.  ``mode="least"`` flips the smallest
    margins first -- rows on or across the decision boundary, the flips a
    human reviewer is least likely to question and the ones that move a
    margin-based model's boundary; confident-learning detectors find them
    hardest to tell from honest ambiguity.  ``mode="most"`` flips the most
    confident rows first: blatant, easily caught flips that hurt most per
    flip when they are not caught.  Each flipped row gets the surrogate's
    most probable other class.

    For speed on large tables the surrogate is fitted on a seeded random
    subsample of at most ``max_fit_samples`` rows and then scores every row.

    Parameters
    ----------
    mode : {"least", "most"}, default="least"
        Flip the least confident (smallest margin) or the most confident rows first.
    model : str or scikit-learn classifier, default="logreg"
        Surrogate: a name accepted by :func:`flipguard.models.make_model`
        (logreg, linsvm, rf, hgb, knn, mlp) or any classifier (cloned).
    max_fit_samples : int, default=100_000
        The surrogate is fitted on at most this many rows (a seeded random
        subsample); all rows are scored.
    rate : float in (0, 1] or dict, default=0.1
        Fraction of rows (or per class with a dict) to flip.
    n_flips : int or dict, default=None
        Exact number of flips instead of a rate.
    random_state : int, RandomState instance or None, default=None
        Seeds the subsample and the surrogate.

    Attributes
    ----------
    surrogate_ : fitted classifier
        The surrogate model (fitted on label codes ``0 .. K-1``).
    margins_ : ndarray of shape (n_samples,)
        Surrogate probability of the original label minus the best other
        class probability (negative: the surrogate disagrees with the label).
    (plus the attributes of :class:`BaseFlipper`)

    References
    ----------
    .. [1] B. Biggio, B. Nelson, P. Laskov, "Support Vector Machines Under
       Adversarial Label Noise", ACML 2011 (label noise chosen against a
       margin-based learner; this class is the simple margin heuristic).

    Examples
    --------
    >>> from flipguard.attacks import BoundaryFlip
    >>> from flipguard.data import make_sentiment_reviews
    >>> ds = make_sentiment_reviews(400, random_state=0)
    >>> flipper = BoundaryFlip(rate=0.1, random_state=0)
    >>> _, y_bad = flipper.fit_resample(ds.X, ds.y)
    >>> flipper.n_flips_
    40
    """

    _parameter_constraints = {**_SurrogateFlipper._parameter_constraints,
                              "mode": [StrOptions({"least", "most"})]}

    def __init__(self, *, mode="least", model="logreg", max_fit_samples=100_000, rate=0.1,
                 n_flips=None, random_state=None):
        super().__init__(model=model, max_fit_samples=max_fit_samples, rate=rate, n_flips=n_flips,
                         random_state=random_state)
        self.mode = mode

    def _flip(self, X, y, n_classes: int, budget: Budget, rng):
        proba = self._surrogate_proba(X, y, n_classes, rng)
        p_true, other, p_other = _best_other(proba, y)
        margin = p_true - p_other
        self.margins_ = margin
        rows = select_top(-margin if self.mode == "least" else margin, y, budget)
        return rows, other[rows]


@register("entropy")
class EntropyFlip(_SurrogateFlipper):
    """Flip the rows with the highest predictive entropy under a surrogate model.

    The idea of the entropy-based label-flipping attack of Li, Cheng and
    Zhang (2021, as cited in the flipguard issue): the rows whose predicted
    class distribution is most uncertain (highest Shannon entropy
    ``-sum_k p_k log p_k``) are the ones whose labels the learner relies on
    least to be consistent, so flipping them shifts the decision surface
    while each flip stays plausible to a reviewer.  Unlike
    :class:`BoundaryFlip` (margin against the row's own label), entropy
    ignores which label the row carries: with many classes it also targets
    rows spread over several classes, not only those between two.  Each
    flipped row gets the surrogate's most probable other class.

    For speed on large tables the surrogate is fitted on a seeded random
    subsample of at most ``max_fit_samples`` rows and then scores every row.

    Parameters
    ----------
    model : str or scikit-learn classifier, default="logreg"
        Surrogate: a name accepted by :func:`flipguard.models.make_model` or
        any classifier (cloned).
    max_fit_samples : int, default=100_000
        The surrogate is fitted on at most this many rows (a seeded random
        subsample); all rows are scored.
    rate : float in (0, 1] or dict, default=0.1
        Fraction of rows (or per class with a dict) to flip.
    n_flips : int or dict, default=None
        Exact number of flips instead of a rate.
    random_state : int, RandomState instance or None, default=None
        Seeds the subsample and the surrogate.

    Attributes
    ----------
    surrogate_ : fitted classifier
        The surrogate model (fitted on label codes ``0 .. K-1``).
    entropy_ : ndarray of shape (n_samples,)
        Predictive entropy of each row in nats (higher = flipped first).
    (plus the attributes of :class:`BaseFlipper`)

    References
    ----------
    .. [1] Li, Cheng and Zhang (2021), entropy-guided label flipping, as
       cited in the flipguard issue.

    Examples
    --------
    >>> from flipguard.attacks import EntropyFlip
    >>> from flipguard.data import make_sentiment_reviews
    >>> ds = make_sentiment_reviews(400, random_state=0)
    >>> _, y_bad = EntropyFlip(n_flips=25, random_state=0).fit_resample(ds.X, ds.y)
    >>> int((y_bad != ds.y).sum())
    25
    """

    def _flip(self, X, y, n_classes: int, budget: Budget, rng):
        proba = self._surrogate_proba(X, y, n_classes, rng)
        with np.errstate(divide="ignore", invalid="ignore"):
            plogp = np.where(proba > 0, proba * np.log(proba), 0.0)
        entropy = -plogp.sum(axis=1)
        self.entropy_ = entropy
        _, other, _ = _best_other(proba, y)
        rows = select_top(entropy, y, budget)
        return rows, other[rows]
