"""Confident learning (Northcutt, Jiang & Chuang, JAIR 2021), vectorised.

Per-class thresholds, the calibrated confident joint and the
``prune_by_noise_rate`` rule, written to flag exactly the rows
``cleanlab.filter.find_label_issues(labels, pred_probs)`` flags with its
defaults (cleanlab 2.x), so results can be compared one to one.
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np

from .._validation import Interval
from ._base import BaseDetector, _Findings, _Inputs, best_other, register

__all__ = [
    "ConfidentLearning",
    "calibrate_confident_joint",
    "confident_joint",
    "confident_learning_issues",
    "confident_thresholds",
]

#: cleanlab's fuzzy-comparison tolerance and threshold floor.
_EPS = 1e-6
_THRESHOLD_FLOOR = 2 * _EPS
_TINY = 1e-100


def confident_thresholds(labels: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
    """Per-class threshold ``t_k``: the mean predicted probability of class ``k``
    over the rows labelled ``k`` (the expected self-confidence).

    Classes absent from ``labels`` get threshold 2, so no row is confidently
    counted into them.  Thresholds are floored at ``2e-6``.

    References
    ----------
    .. [1] C. Northcutt, L. Jiang, I. Chuang. "Confident Learning: Estimating
       Uncertainty in Dataset Labels". JAIR 70, 2021, eq. (2).
    """
    K = pred_probs.shape[1]
    t = np.empty(K, dtype=np.float64)
    for k in range(K):  # K passes over a column: vectorised per class
        member = labels == k
        t[k] = np.mean(pred_probs[:, k][member]) if member.any() else 2.0
    return np.clip(t, _THRESHOLD_FLOOR, None)


def confident_joint(labels: np.ndarray, pred_probs: np.ndarray, *, calibrate: bool = True,
                    thresholds: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The confident joint ``C[observed, true]`` and the confident "true class" guess of every row.

    A row is confidently counted into class ``j`` when ``p_j >= t_j``; with
    several such classes, the most probable one wins.  Rows confident about no
    class are left out (guess ``-1``).

    Parameters
    ----------
    labels : ndarray of int, shape (n_samples,)
    pred_probs : ndarray of shape (n_samples, K)
    calibrate : bool, default=True
        Rescale rows to the observed class counts and the total to
        ``n_samples``, then round preserving row totals (eq. (3) of [1]_).
    thresholds : ndarray of shape (K,), optional
        Defaults to :func:`confident_thresholds`.

    Returns
    -------
    joint : ndarray of int, shape (K, K)
        ``joint[i, j]``: rows observed as ``i`` whose true class is confidently ``j``.
        The diagonal is at least 1 before calibration.
    guess : ndarray of int, shape (n_samples,)
        Confident true-class guess, ``-1`` where no class passed its threshold.

    References
    ----------
    .. [1] Northcutt, Jiang, Chuang, JAIR 2021, section 3.1.
    """
    K = pred_probs.shape[1]
    if thresholds is None:
        thresholds = confident_thresholds(labels, pred_probs)
    above = pred_probs >= np.asarray(thresholds) - _EPS
    n_above = above.sum(axis=1)
    guess = np.where(n_above > 1, pred_probs.argmax(axis=1), above.argmax(axis=1))
    guess[n_above == 0] = -1
    sure = guess >= 0
    # Built as the (guess, observed) confusion matrix and transposed, so the memory
    # layout (and with it numpy's summation order) matches cleanlab's bit for bit.
    joint = np.bincount(guess[sure] * K + labels[sure], minlength=K * K).reshape(K, K).T
    np.fill_diagonal(joint, joint.diagonal().clip(min=1))
    if calibrate:
        joint = calibrate_confident_joint(joint, np.bincount(labels, minlength=K))
    return joint.astype(np.int64), guess


def calibrate_confident_joint(joint: np.ndarray, label_counts: np.ndarray) -> np.ndarray:
    """Rows rescaled to the observed class counts, total to their sum, rounded per row
    preserving row totals (cleanlab's ``calibrate_confident_joint``)."""
    cal = (joint.T / np.clip(joint.sum(axis=1), _TINY, None) * label_counts).T
    cal = cal / np.clip(np.sum(cal), _TINY, None) * np.sum(label_counts)
    return _round_rows(cal)


def _round_preserving_sum(values: np.ndarray) -> np.ndarray:
    """Round to integers keeping the (rounded) total: the largest remainders move first."""
    floats = np.asarray(values, dtype=float)
    ints = floats.round()
    target = np.sum(floats).round()
    total = np.sum(ints).round()
    while abs(total - target) > _EPS:  # at most K iterations, K = number of classes
        diff = np.round(target - total)
        step = -1 if int(diff < 0.0) else 1
        n_change = min(int(abs(diff)), len(values))
        idx = np.argsort(floats - ints)[::-step][:n_change]
        ints[idx] += step
        total = np.sum(ints).round()
    return ints.astype(int)


def _round_rows(matrix: np.ndarray) -> np.ndarray:
    return np.vstack([_round_preserving_sum(row) for row in matrix]).astype(int)


def _prune_counts(joint: np.ndarray, min_examples_per_class: int, frac_noise: float) -> np.ndarray:
    """How many rows to remove per (true, observed) pair: ``joint.T`` with each
    column's diagonal raised to ``min_examples_per_class`` (taken evenly from the
    column's non-zero noise entries) and noise entries scaled by ``frac_noise``."""
    pcm = joint.T.astype(float)
    diag = np.diagonal(pcm)
    new_diag = np.maximum(diag, min_examples_per_class)
    diff = new_diag - diag
    per_col = np.maximum(np.count_nonzero(pcm, axis=0) - 1.0, 1.0)
    new = pcm - diff / per_col
    new[new < 0] = 0
    np.fill_diagonal(new, new_diag)
    reduced = new * frac_noise
    np.fill_diagonal(reduced, new.diagonal())
    np.fill_diagonal(reduced, new.diagonal() + np.sum(new - reduced, axis=0))
    return _round_rows(reduced.astype(int).astype(float))


def confident_learning_issues(labels, pred_probs, *, frac_noise: float = 1.0,
                              min_examples_per_class: int = 1) -> np.ndarray:
    """Boolean mask of label issues by confident learning's ``prune_by_noise_rate`` rule.

    For every observed class ``k`` and other class ``j``, remove the
    ``C[k, j]`` rows labelled ``k`` with the largest margin ``p_j - p_k``
    (``C`` the calibrated confident joint, scaled by ``frac_noise``); then
    keep every row whose given label is still the model's prediction
    (within ``1e-6``).  Classes with at most ``min_examples_per_class`` rows
    are not pruned.

    With the default arguments the mask equals
    ``cleanlab.filter.find_label_issues(labels, pred_probs)``.

    Parameters
    ----------
    labels : array-like of int, shape (n_samples,)
    pred_probs : array-like of shape (n_samples, K)
        Out-of-sample predicted probabilities.
    frac_noise : float in (0, 1], default=1.0
    min_examples_per_class : int, default=1

    Returns
    -------
    ndarray of bool, shape (n_samples,)

    References
    ----------
    .. [1] C. Northcutt, L. Jiang, I. Chuang. "Confident Learning: Estimating
       Uncertainty in Dataset Labels". JAIR 70, 1373-1411, 2021, section 3.2
       ("prune by noise rate").

    Examples
    --------
    >>> import numpy as np
    >>> from flipguard.detection import confident_learning_issues
    >>> labels = np.array([0, 0, 0, 1, 1, 1])
    >>> probs = np.array([[.9, .1], [.8, .2], [.1, .9], [.2, .8], [.1, .9], [.7, .3]])
    >>> np.flatnonzero(confident_learning_issues(labels, probs)).tolist()
    [2, 5]
    """
    labels = np.asarray(labels, dtype=np.int64)
    pred_probs = np.asarray(pred_probs)
    joint, _ = confident_joint(labels, pred_probs)
    return _prune_by_noise_rate(labels, pred_probs, joint, frac_noise, min_examples_per_class)


def _prune_by_noise_rate(labels, pred_probs, joint, frac_noise, min_examples_per_class):
    K = pred_probs.shape[1]
    n = len(labels)
    pcm = _prune_counts(joint, min_examples_per_class, frac_noise)
    mask = np.zeros(n, dtype=bool)
    for k in range(K):  # per observed class; each pass is vectorised over its rows
        rows = np.flatnonzero(labels == k)
        if len(rows) <= min_examples_per_class:
            continue
        probs_k = pred_probs[rows]
        local = np.zeros(len(rows), dtype=bool)
        for j in range(K):
            count = int(pcm[j, k])
            if j == k or count <= 0:
                continue
            margin = probs_k[:, j] - probs_k[:, k]
            local[np.argsort(-margin)[:count]] = True
        mask[rows] = local
    # Keep rows whose given label is (within 1e-6) the model's prediction.
    bumped = np.array(pred_probs, copy=True)
    bumped[np.arange(n), labels] += _EPS
    mask[bumped.argmax(axis=1) == labels] = False
    return mask


@register("confident_learning")
class ConfidentLearning(BaseDetector):
    """Confident learning: thresholds, the calibrated confident joint, prune by noise rate.

    Flags exactly the rows ``cleanlab.filter.find_label_issues(labels,
    pred_probs)`` flags with its defaults.  The estimated number of flips is
    the off-diagonal mass of the calibrated confident joint, and
    ``transitions`` is that joint transposed (rows = true class, columns =
    observed label).

    Score: ``1 - p[given label]`` (one minus the self-confidence), higher =
    more likely flipped.  Suggested label: the most probable other class for
    flagged rows, the predicted class elsewhere.

    Known weakness (measured in ``docs/performance.md``): the ranking is good
    but the cut-off is conservative, so flips near the decision boundary are
    mostly missed; ``method="auto"`` addresses this.

    Parameters
    ----------
    frac_noise : float in (0, 1], default=1.0
        Flag only this fraction of the estimated issues.
    min_examples_per_class : int, default=1
        Never prune a class down below this many rows.

    References
    ----------
    .. [1] C. Northcutt, L. Jiang, I. Chuang. "Confident Learning: Estimating
       Uncertainty in Dataset Labels". Journal of Artificial Intelligence
       Research 70, 1373-1411, 2021.

    Examples
    --------
    >>> import numpy as np
    >>> from flipguard.detection import ConfidentLearning
    >>> labels = np.array([0, 0, 0, 1, 1, 1])
    >>> probs = np.array([[.9, .1], [.8, .2], [.1, .9], [.2, .8], [.1, .9], [.7, .3]])
    >>> audit = ConfidentLearning().audit(labels, probs)
    >>> audit.flags.nonzero()[0].tolist(), audit.suggested[[2, 5]].tolist()
    ([2, 5], [1, 0])
    """

    _parameter_constraints = {
        "frac_noise": [Interval(Real, 0, 1, closed="right")],
        "min_examples_per_class": [Interval(Integral, 0, None, closed="left")],
    }

    def __init__(self, *, frac_noise=1.0, min_examples_per_class=1):
        self.frac_noise = frac_noise
        self.min_examples_per_class = min_examples_per_class

    def _audit(self, inputs: _Inputs) -> _Findings:
        labels, p = inputs.labels, inputs.pred_probs
        joint, _ = confident_joint(labels, p)
        flags = _prune_by_noise_rate(labels, p, joint, self.frac_noise, self.min_examples_per_class)
        given = p[np.arange(len(labels)), labels]
        suggested = np.where(flags, best_other(p, labels), labels)  # an unflagged row keeps its label
        transitions = joint.T.copy()
        return _Findings(scores=1.0 - given.astype(np.float64), flags=flags, suggested=suggested,
                         transitions=transitions,
                         estimated_flips=int(transitions.sum() - np.trace(transitions)),
                         components={"model": 1.0 - given.astype(np.float64)})
