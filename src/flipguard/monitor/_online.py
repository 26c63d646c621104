"""Online learning under label flipping: a guarded ``partial_fit`` and prequential evaluation.

:class:`GuardedLearner` wraps any scikit-learn estimator with ``partial_fit``.
Before each update it quarantines the rows whose label it doubts:

* a sliding-window version of the kNN label sanitisation of Paudice et al.
  (2018): a row whose ``n_neighbors`` nearest recently accepted rows mostly
  (at least ``eta``) carry another label is doubted;
* the suspects of a fitted :class:`~flipguard.monitor.LabelMonitor` (label
  disagrees with the reference model and reference neighbours).

Quarantined rows are kept (:attr:`GuardedLearner.quarantine_`) for review: a
person can release them with their given or a corrected label, or discard them.

:func:`prequential_evaluation` runs the test-then-train protocol (each batch
is first predicted by the current model, then learned; Gama et al., 2013) and
records accuracy against the labels as received and against the true labels;
their difference is the streaming illusion gap.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, clone

from .._json import to_jsonable
from .._validation import HasMethods, Interval, validate_params
from ..exceptions import InvalidParameterError
from ._monitor import LabelMonitor, _encode_labels, _missing_labels, _neighbours
from ._stream import iter_batches

__all__ = ["GuardedLearner", "PrequentialResult", "Quarantine", "compare_prequential", "prequential_evaluation"]


@dataclass
class Quarantine:
    """Rows held back from learning, for review.

    Attributes
    ----------
    X : ndarray of shape (n, n_features)
    y : ndarray of shape (n,)
        Labels as received.
    suggested : ndarray of shape (n,)
        Label the evidence prefers.
    batch : ndarray of int
        Batch number each row arrived in.
    reason : ndarray of str
        ``"knn"`` (window neighbours), ``"monitor"`` (reference evidence), ``"both"``,
        ``"unknown"`` (a label outside the learner's classes) or ``"missing"`` (no label):
        rows nobody could judge are always held, never learned.
    """

    X: np.ndarray
    y: np.ndarray
    suggested: np.ndarray
    batch: np.ndarray
    reason: np.ndarray

    def __len__(self) -> int:
        return int(len(self.y))

    def review(self) -> list[dict[str, Any]]:
        """One dict per quarantined row: position, batch, label as received, suggested label, reason."""
        return to_jsonable([{"position": i, "batch": b, "label": lab, "suggested": s, "reason": r}
                            for i, (b, lab, s, r) in enumerate(zip(self.batch, self.y, self.suggested,
                                                                   self.reason))])

    def _take(self, keep: np.ndarray) -> None:
        for name in ("X", "y", "suggested", "batch", "reason"):
            setattr(self, name, getattr(self, name)[keep])

    def _add(self, X, y, suggested, batch, reason) -> None:
        self.X = np.concatenate([self.X, X]) if len(self.y) else np.asarray(X, dtype=np.float64)
        self.y = np.concatenate([self.y, y])
        self.suggested = np.concatenate([self.suggested, suggested])
        self.batch = np.concatenate([self.batch, np.full(len(y), batch, dtype=np.int64)])
        self.reason = np.concatenate([self.reason, reason])


class GuardedLearner(BaseEstimator):
    """``partial_fit`` that quarantines doubted labels first (Paudice et al. 2018, over a sliding window).

    Parameters
    ----------
    estimator : scikit-learn estimator with ``partial_fit``
        The online model (cloned at the first ``partial_fit``).
    monitor : LabelMonitor or None, default=None
        A fitted monitor whose suspects are quarantined too; it is copied and
        updated with every batch (its verdicts are kept in ``verdicts_``).
    window : int, default=2000
        Recently accepted rows the kNN check compares against.
    n_neighbors : int, default=10
    eta : float in (0.5, 1], default=0.6
        A row is doubted when at least this share of its window neighbours
        carry one other label.
    min_window : int, default=50
        The kNN check starts once the window holds this many rows.

    Attributes
    ----------
    estimator_ : the fitted estimator
    quarantine_ : Quarantine
    monitor_ : LabelMonitor or None
    verdicts_ : list of BatchVerdict
    n_batches_ : int

    References
    ----------
    A. Paudice, L. Munoz-Gonzalez, E. C. Lupu (2018). Label sanitization against
    label flipping poisoning attacks. ECML PKDD 2018 workshops, LNCS 11329.
    """

    _parameter_constraints: dict = {
        "estimator": [HasMethods(["partial_fit", "predict"])],
        "monitor": [LabelMonitor, None],
        "window": [Interval(Integral, 1, None, closed="left")],
        "n_neighbors": [Interval(Integral, 1, None, closed="left")],
        "eta": [Interval(Real, 0.5, 1, closed="right")],
        "min_window": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, estimator=None, *, monitor=None, window=2000, n_neighbors=10, eta=0.6, min_window=50):
        self.estimator = estimator
        self.monitor = monitor
        self.window = window
        self.n_neighbors = n_neighbors
        self.eta = eta
        self.min_window = min_window

    def partial_fit(self, X, y, classes=None):
        """Quarantine doubted rows of this batch, learn the rest."""
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y)
        if not hasattr(self, "estimator_"):
            validate_params(self)
            if self.estimator is None:
                raise InvalidParameterError("GuardedLearner needs an estimator with partial_fit")
            self.estimator_ = clone(self.estimator)
            self.monitor_ = copy.deepcopy(self.monitor).reset() if self.monitor is not None else None
            if classes is None and self.monitor_ is not None:
                classes = self.monitor_.classes_
            if classes is None:
                raise InvalidParameterError("give classes= at the first partial_fit (or a fitted monitor)")
            self.classes_ = np.asarray(classes)
            self.quarantine_ = Quarantine(np.zeros((0, X.shape[1])), np.zeros(0, dtype=y.dtype),
                                          np.zeros(0, dtype=y.dtype), np.zeros(0, dtype=np.int64),
                                          np.zeros(0, dtype="<U7"))
            self._win_X = np.zeros((0, X.shape[1]))
            self._win_y = np.zeros(0, dtype=y.dtype)
            self.verdicts_ = []
            self.n_batches_ = 0
            if self.monitor_ is not None:
                self._mu, self._sd = self.monitor_.mean_, self.monitor_.scale_
            else:
                self._mu, self._sd = X.mean(axis=0), np.where(X.std(axis=0) > 0, X.std(axis=0), 1.0)
        # Rows without a label or with a label outside the classes cannot be judged (nor learned): held.
        missing = _missing_labels(y)
        _, known = _encode_labels(self.classes_, y)
        known &= ~missing
        doubt_knn = np.zeros(len(y), dtype=bool)
        sugg = y.astype(object) if y.dtype.kind in "US" else y.copy()
        if known.any():
            dk, sk = self._knn_doubt(X[known], y[known])
            doubt_knn[known] = dk
            sugg[known] = sk
        doubt_mon = np.zeros(len(y), dtype=bool)
        if self.monitor_ is not None:
            v = self.monitor_.update(X, y, name=str(self.n_batches_))
            self.verdicts_.append(v)
            doubt_mon[v.suspect_rows] = True
            sugg[v.suspect_rows] = v.suggested_labels
        doubted = doubt_knn | doubt_mon | ~known
        if doubted.any():
            reason = np.where(missing, "missing", np.where(~known, "unknown", np.where(
                doubt_knn & doubt_mon, "both", np.where(doubt_knn, "knn", "monitor"))))
            self.quarantine_._add(X[doubted], y[doubted], sugg[doubted], self.n_batches_, reason[doubted])
        keep = ~doubted
        if keep.any():
            self._learn(X[keep], y[keep])
            self._win_X = np.concatenate([self._win_X, X[keep]])[-self.window:]
            self._win_y = np.concatenate([self._win_y, y[keep]])[-self.window:]
        self.n_batches_ += 1
        self.last_doubted_ = doubted
        return self

    def _learn(self, X, y) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.estimator_.partial_fit(X, y, classes=self.classes_)

    def _knn_doubt(self, X, y):
        sugg = y.copy()
        if len(self._win_y) < max(self.min_window, self.n_neighbors):
            return np.zeros(len(y), dtype=bool), sugg
        classes = self.classes_
        Zw = (self._win_X - self._mu) / self._sd
        Zb = (X - self._mu) / self._sd
        idx, _ = _neighbours(Zb, Zw, int(self.n_neighbors))
        codes_w = np.searchsorted(classes, self._win_y)
        K = len(classes)
        counts = np.bincount((np.arange(len(y))[:, None] * K + codes_w[idx]).ravel(),
                             minlength=len(y) * K).reshape(len(y), K)
        top = counts.argmax(axis=1)
        share = counts.max(axis=1) / idx.shape[1]
        doubt = (classes[top] != y) & (share >= self.eta)
        sugg[doubt] = classes[top[doubt]]
        return doubt, sugg

    def release(self, positions=None, labels: str | np.ndarray = "given"):
        """Learn quarantined rows and remove them from the quarantine.

        Parameters
        ----------
        positions : array-like of int or None
            Positions in :meth:`Quarantine.review` (default: all).
        labels : "given", "suggested" or array-like
            Learn them with the label as received, the suggested one, or labels
            a reviewer supplies (one per position).
        """
        q = self.quarantine_
        pos = np.arange(len(q)) if positions is None else np.asarray(positions, dtype=np.int64)
        if len(pos) and (pos.min() < 0 or pos.max() >= len(q)):
            raise InvalidParameterError(f"quarantine positions must be in [0, {len(q)}); got {pos.tolist()}")
        if isinstance(labels, str):
            if labels not in ("given", "suggested"):
                raise InvalidParameterError(f"labels must be 'given', 'suggested' or an array; got {labels!r}")
            lab = (q.y if labels == "given" else q.suggested)[pos]
        else:
            lab = np.asarray(labels)
            if len(lab) != len(pos):
                raise InvalidParameterError(f"give one label per released row ({len(pos)}); got {len(lab)}")
        _, ok = _encode_labels(self.classes_, lab)
        ok &= ~_missing_labels(lab)
        if not ok.all():
            bad = [p for p, o in zip(pos.tolist(), ok.tolist()) if not o]
            raise InvalidParameterError(f"quarantined rows {bad[:10]} have no label among the classes "
                                        f"{self.classes_.tolist()}; release them with labels=[...] you supply")
        if len(pos):
            self._learn(q.X[pos], lab)
        self.discard(pos)
        return self

    def discard(self, positions=None):
        """Drop quarantined rows without learning them."""
        q = self.quarantine_
        keep = np.ones(len(q), dtype=bool)
        keep[np.arange(len(q)) if positions is None else np.asarray(positions, dtype=np.int64)] = False
        q._take(keep)
        return self

    def predict(self, X):
        return self.estimator_.predict(X)

    def score(self, X, y):
        return float(np.mean(self.predict(X) == np.asarray(y)))


@dataclass
class PrequentialResult:
    """Per-batch test-then-train accuracies of one run.

    Attributes
    ----------
    name : str
    accuracy_true : ndarray
        Accuracy of the model (before learning the batch) against the true labels.
    accuracy_stream : ndarray
        Against the labels as received (poisoned where attacked): what the victim sees.
    flipped : ndarray of int
        Flipped rows per batch.
    quarantined : ndarray of int
        Rows held back per batch (guarded runs).
    alarms : list of int
        Batches where the guard's monitor raised an alarm.
    attack_start : int or None
    """

    name: str
    accuracy_true: np.ndarray
    accuracy_stream: np.ndarray
    flipped: np.ndarray
    quarantined: np.ndarray
    alarms: list = field(default_factory=list)
    attack_start: int | None = None

    @property
    def illusion_gap(self) -> np.ndarray:
        """``accuracy_stream - accuracy_true`` per batch (positive: the victim is fooled)."""
        return self.accuracy_stream - self.accuracy_true

    def mean_accuracy(self, start: int = 0, stop: int | None = None) -> float:
        """Mean true-label accuracy over batches ``start .. stop - 1`` (skips the untested first batch)."""
        a = self.accuracy_true[start:stop]
        return float(np.nanmean(a)) if np.isfinite(a).any() else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable({"name": self.name, "accuracy_true": self.accuracy_true,
                            "accuracy_stream": self.accuracy_stream, "illusion_gap": self.illusion_gap,
                            "flipped": self.flipped, "quarantined": self.quarantined,
                            "alarms": self.alarms, "attack_start": self.attack_start})


def prequential_evaluation(estimator, X, y, *, attack=None, guard: bool = False, monitor=None,
                           batch_size: int = 200, n_batches: int = 200, name: str | None = None,
                           random_state=0, guard_params: dict | None = None) -> PrequentialResult:
    """Test-then-train over a stream drawn from ``(X, y)``, optionally attacked and guarded.

    Each batch is predicted by the current model (scored against the true and
    the received labels), then learned: by ``estimator.partial_fit`` directly,
    or through a :class:`GuardedLearner` (with ``monitor``) when ``guard``.
    The same ``random_state`` gives the same batches in every run, so runs
    with and without attack or guard are comparable batch by batch.

    References
    ----------
    J. Gama, R. Sebastiao, P. P. Rodrigues (2013). On evaluating stream learning
    algorithms. Machine Learning 90, 317-346.
    """
    y = np.asarray(y)
    classes = np.unique(y)
    learner = GuardedLearner(estimator, monitor=monitor, **(guard_params or {})) if guard else clone(estimator)
    acc_t = np.full(n_batches, np.nan)
    acc_s = np.full(n_batches, np.nan)
    flipped = np.zeros(n_batches, dtype=np.int64)
    quarantined = np.zeros(n_batches, dtype=np.int64)
    fitted = False
    for i, (xb, yb, _) in enumerate(iter_batches(X, y, batch_size=batch_size, n_batches=n_batches,
                                                 random_state=random_state)):
        # the stream's classes: a random flip in a batch of one class still has another class to write
        yp, mask = attack.poison(yb, i, classes=classes) if attack is not None else \
            (yb, np.zeros(len(yb), dtype=bool))
        flipped[i] = int(mask.sum())
        if fitted:
            pred = learner.predict(xb)
            acc_t[i] = np.mean(pred == yb)
            acc_s[i] = np.mean(pred == yp)
        if guard:
            learner.partial_fit(xb, yp, classes=classes)
            quarantined[i] = int(learner.last_doubted_.sum())
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                learner.partial_fit(xb, yp, classes=classes)
        fitted = True
    alarms = [v.index for v in learner.verdicts_ if v.alarm] if guard and learner.monitor_ is not None else []
    return PrequentialResult(name or ("guarded" if guard else "unguarded"), acc_t, acc_s, flipped, quarantined,
                             alarms, getattr(attack, "start", None) if attack is not None else None)


def compare_prequential(estimator, X, y, *, attack, monitor=None, batch_size: int = 200, n_batches: int = 200,
                        random_state=0, guard_params: dict | None = None) -> dict[str, PrequentialResult]:
    """Three runs on the same batches: ``"clean"`` (no attack), ``"attacked"`` and ``"guarded"`` (attacked)."""
    kw = dict(batch_size=batch_size, n_batches=n_batches, random_state=random_state)
    return {
        "clean": prequential_evaluation(estimator, X, y, name="clean", **kw),
        "attacked": prequential_evaluation(estimator, X, y, attack=attack, name="attacked", **kw),
        "guarded": prequential_evaluation(estimator, X, y, attack=attack, guard=True, monitor=monitor,
                                          name="guarded", guard_params=guard_params, **kw),
    }
