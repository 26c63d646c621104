"""Rankings from out-of-fold probabilities: self-confidence and normalised margin.

Both flag the rows whose *class-adjusted* prediction differs from the given
label.  The adjustment divides each class's probability by that class's
confident-learning threshold (its mean self-confidence) before renormalising,
so a rare class the model is generally unsure about is not flagged wholesale.
"""

from __future__ import annotations

import numpy as np

from ._base import BaseDetector, _Findings, _Inputs, register
from ._confident import confident_thresholds

__all__ = ["NormalizedMargin", "SelfConfidence", "adjusted_probs", "margin_scores"]


def adjusted_probs(labels: np.ndarray, pred_probs: np.ndarray, *, robust: bool = False) -> np.ndarray:
    """Probabilities divided by each class's mean self-confidence, rows renormalised.

    ``q_ik = (p_ik / t_k) / sum_j (p_ij / t_j)`` with ``t_k`` the mean of
    ``p_ik`` over rows labelled ``k`` (:func:`confident_thresholds`).  A class
    whose rows the model is typically only 40% sure about is judged against
    40%, not against 50%: the same idea as the per-class thresholds of
    confident learning (Northcutt et al., 2021) and the threshold adjustment
    of Kuan & Mueller (2022, "Model-agnostic label quality scoring").

    With ``robust=True``, ``t_k`` is the mean over the rows labelled ``k``
    whose most probable class *is* ``k``: how sure the model is about the
    class's undisputed members.  A class with no undisputed row is not
    adjusted (``t_k = 1``): nothing tells how sure the model would be of
    its genuine members.
    The disputed rows are the flip candidates, and must not set the bar they
    are judged by: when flips dominate a class (20% random flips of a 95/5
    table make most rows labelled with the rare class flipped), their low
    self-confidence drags the plain threshold down, the adjustment lifts
    them back, and the ranking's AUROC fell to 0.63 where the unadjusted
    probabilities reach 0.96.
    """
    if robust:
        p = np.asarray(pred_probs, dtype=np.float64)
        K = p.shape[1]
        agree = np.argmax(p, axis=1) == labels
        rows = np.arange(len(labels))
        given = p[rows, labels]
        n_agree = np.bincount(labels, weights=agree, minlength=K)
        mean_agree = np.bincount(labels, weights=given * agree, minlength=K) / np.maximum(n_agree, 1)
        t = np.where(n_agree > 0, np.maximum(mean_agree, 2e-6), 1.0)
    else:
        t = confident_thresholds(labels, pred_probs)
    t = np.where(t > 1.0, 1.0, t)  # absent classes (threshold 2) keep their probability
    q = np.asarray(pred_probs, dtype=np.float64) / t
    q /= np.clip(q.sum(axis=1, keepdims=True), 1e-300, None)
    return q


def margin_scores(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(margin, best_other)``: the best other class's probability minus the
    given label's (in ``[-1, 1]``, positive = the model prefers another class)
    and that other class."""
    n = len(labels)
    rows = np.arange(n)
    masked = np.array(probs, dtype=np.float64, copy=True)
    given = masked[rows, labels].copy()
    masked[rows, labels] = -np.inf
    other = np.argmax(masked, axis=1)
    return masked[rows, other] - given, other


class _ProbabilityRanking(BaseDetector):
    _parameter_constraints = {"adjust": ["boolean"]}

    def __init__(self, *, adjust=True):
        self.adjust = adjust

    def _score(self, labels, q, margin) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _audit(self, inputs: _Inputs) -> _Findings:
        labels = inputs.labels
        q = adjusted_probs(labels, inputs.pred_probs) if self.adjust else inputs.pred_probs
        margin, other = margin_scores(labels, q)
        flags = margin > 0
        suggested = np.where(flags, other, labels)
        scores = self._score(labels, q, margin)
        return _Findings(scores=scores, flags=flags, suggested=suggested,
                         components={"model": scores})


@register("self_confidence")
class SelfConfidence(_ProbabilityRanking):
    """Rank by one minus the probability of the given label; flag where another class wins.

    Score: ``1 - q[given]`` where ``q`` are the (class-adjusted)
    out-of-fold probabilities; higher = more likely flipped.  Flags: rows
    whose adjusted prediction is another class (that class is the
    suggested label).  The estimate is the number of flagged rows.

    Parameters
    ----------
    adjust : bool, default=True
        Divide each class's probability by its mean self-confidence first
        (see :func:`adjusted_probs`); False uses the raw probabilities,
        which is cleanlab's ``"self_confidence"`` label-quality ranking.

    References
    ----------
    .. [1] J. Kuan, J. Mueller. "Model-agnostic label quality scoring to detect
       real-world label errors". ICML DataPerf workshop, 2022.

    Examples
    --------
    >>> import numpy as np
    >>> from flipguard.detection import SelfConfidence
    >>> labels = np.array([0, 0, 1, 1])
    >>> probs = np.array([[.9, .1], [.2, .8], [.3, .7], [.1, .9]])
    >>> SelfConfidence().audit(labels, probs).flags.tolist()
    [False, True, False, False]
    """

    def _score(self, labels, q, margin):
        return 1.0 - q[np.arange(len(labels)), labels]


@register("margin")
class NormalizedMargin(_ProbabilityRanking):
    """Rank by the margin of the best other class over the given label.

    Score: ``(q[best other] - q[given] + 1) / 2`` in ``[0, 1]``; above 0.5
    means another class is more probable.  Flags and suggested labels as in
    :class:`SelfConfidence`; for two classes both rank rows identically.

    Parameters
    ----------
    adjust : bool, default=True
        Use class-adjusted probabilities (see :func:`adjusted_probs`).

    References
    ----------
    .. [1] J. Kuan, J. Mueller. "Model-agnostic label quality scoring to detect
       real-world label errors". ICML DataPerf workshop, 2022 ("normalized margin").
    """

    def _score(self, labels, q, margin):
        return (margin + 1.0) / 2.0
