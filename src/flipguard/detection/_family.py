"""Disagreement across several model families."""

from __future__ import annotations

from numbers import Integral

import numpy as np

from .._validation import Interval
from ..exceptions import InvalidParameterError
from ..models import MODEL_NAMES, out_of_fold_proba, single_threaded
from ._base import BaseDetector, _Findings, _Inputs, register
from ._ranking import margin_scores

__all__ = ["ModelDisagreement"]

_SEED_MAX = np.iinfo(np.int32).max


@register("disagreement")
class ModelDisagreement(BaseDetector):
    """Flag labels that most of several different model families reject.

    Each family (by default a linear model, gradient-boosted trees and
    nearest neighbours) predicts every row out-of-fold; families err in
    different places, so a label several of them reject independently is
    more likely flipped than one a single model rejects (Brodley & Friedl's
    consensus filter).  If ``pred_probs`` is given it joins as one more family.

    Score: one minus the mean out-of-fold probability of the given label
    across families (higher = more likely flipped).  Flags: rows whose label
    is not the prediction of at least ``min_votes`` families (default: a
    strict majority).  Suggested label: the most probable other class under
    the mean probabilities.  ``components`` holds the number of families
    disagreeing per row (``"votes"``, as a fraction of the families).
    Needs ``X``.

    Parameters
    ----------
    models : sequence of str or classifiers, default=("logreg", "hgb", "knn")
    min_votes : int, default=None
        Families that must disagree to flag a row; default ``F // 2 + 1``.
    cv : int, default=5
    n_jobs : int, default=None
        Parallel folds per family (BLAS pinned to one thread meanwhile).
    random_state : int, RandomState instance or None, default=None

    References
    ----------
    .. [1] C. E. Brodley, M. A. Friedl. "Identifying Mislabeled Training
       Data". JAIR 11, 131-167, 1999 (majority and consensus filters).
    """

    _parameter_constraints = {
        "models": [list, tuple],
        "min_votes": [Interval(Integral, 1, None, closed="left"), None],
        "cv": [Interval(Integral, 2, None, closed="left")],
        "n_jobs": [Integral, None],
        "random_state": ["random_state"],
    }
    needs_pred_probs = False
    needs_X = True

    def __init__(self, *, models=("logreg", "hgb", "knn"), min_votes=None, cv=5, n_jobs=None,
                 random_state=None):
        self.models = models
        self.min_votes = min_votes
        self.cv = cv
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _audit(self, inputs: _Inputs) -> _Findings:
        labels, K = inputs.labels, inputs.n_classes
        if not self.models:
            raise InvalidParameterError("ModelDisagreement: give at least one model")
        for m in self.models:
            if isinstance(m, str) and m not in MODEL_NAMES:
                raise InvalidParameterError(f"ModelDisagreement: unknown model {m!r}; choose from "
                                            f"{', '.join(MODEL_NAMES)} or pass classifiers")
        families = []
        for m in self.models:
            seed = inputs.rng.randint(_SEED_MAX)
            with single_threaded():
                p = out_of_fold_proba(m, inputs.X, labels, cv=self.cv, random_state=seed,
                                      n_jobs=self.n_jobs)
            families.append(_pad(p, K))
        if inputs.pred_probs is not None:
            families.append(inputs.pred_probs)
        F = len(families)
        need = self.min_votes if self.min_votes is not None else F // 2 + 1
        if need > F:
            raise InvalidParameterError(f"ModelDisagreement: min_votes={need} but only {F} families")
        rows = np.arange(len(labels))
        mean = np.mean(families, axis=0)
        votes = np.sum([np.argmax(p, axis=1) != labels for p in families], axis=0)
        flags = votes >= need
        _, other = margin_scores(labels, mean)
        suggested = np.where(flags, other, labels)
        scores = 1.0 - mean[rows, labels]
        return _Findings(scores=scores, flags=flags, suggested=suggested,
                         components={"model": scores, "votes": votes / F}, quality_probs=mean,
                         quality_name="mean of " + ", ".join(_name(m) for m in self.models)
                         + f" ({self.cv}-fold out-of-fold)")


def _pad(p: np.ndarray, K: int) -> np.ndarray:
    if p.shape[1] == K:
        return p
    out = np.zeros((p.shape[0], K))
    out[:, : p.shape[1]] = p
    return out


def _name(model) -> str:
    return model if isinstance(model, str) else type(model).__name__
