"""``LabelMonitor``: sequential detection of label flipping in batches that keep arriving.

Fitted once on a trusted reference set, then ``update(X_batch, y_batch)`` per
batch.  Per-example evidence is the out-of-sample disagreement between a
row's label and (i) a logistic-regression reference model and (ii) the votes
of its nearest reference neighbours (the kNN label-consistency evidence of
Paudice et al., 2018).  Suspects are counted per class pair (labelled ``b``,
evidence says ``a``) and fed to binomial CUSUM charts (Page, 1954) whose
clean-batch rates were calibrated on the reference set *out of fold*, so the
count expected on a clean batch is known and the threshold bounds the
false-alarm rate (see :mod:`flipguard.monitor._sequential`).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils import check_array, check_random_state

from .._json import to_jsonable
from .._validation import Interval, validate_params
from ..exceptions import DataError, InvalidParameterError
from ._sequential import cusum_step, log_ratio_weights, pooled_upper_rate, threshold_for_arl, upper_rate
from ._state import read_state, write_state

__all__ = ["BatchVerdict", "BlindChartWarning", "LabelMonitor"]


class BlindChartWarning(UserWarning):
    """Some flips cannot be seen: a pair's chart is switched off at ``fit`` and nothing else covers it.

    Batches carrying the label of such a pair are ``"inconclusive"`` rather than ``"no_alarm"``.
    """

_PRIOR = 0.5  # pseudo-count of the neighbour vote, shared out over the classes
_MAX_UNKNOWN_VALUES = 10  # unknown label values listed per batch (most frequent first)


@dataclass
class BatchVerdict:
    """What :meth:`LabelMonitor.update` concluded about one batch.

    Attributes
    ----------
    batch : str
        The batch's name (file name, id range, or its 0-based position).
    index : int
        0-based position of the batch in the monitored stream.
    rows : int
        Rows in the batch, all of them.
    judged : int
        Rows judged: those whose label is one of the reference's classes.
    status : {"alarm", "unknown_labels", "label_shift", "inconclusive", "no_alarm"}
        ``"alarm"``: a CUSUM chart crossed its threshold at this batch.
        ``"unknown_labels"``: no chart crossed, but some rows carry a label the
        reference never saw or no label at all; those rows were not judged, so
        an attacker could hide flips there (relabel to ``'Benign'`` instead of
        ``'benign'``): a finding, not a clean batch.  ``"label_shift"``: no
        chart crossed, but the batch's class shares differ from the reference's
        at the monitor's level (``label_shift_pvalue < alpha``): e.g. every
        minority row relabelled as the majority, which the charts may not see.
        ``"inconclusive"``: the batch has no rows, or it carries a label whose
        flips the monitor cannot see (``blind_pairs``: a pair whose chart was
        switched off at ``fit`` and that no other chart covers).
        ``"no_alarm"``: every row was judged, no chart crossed, the class
        shares agree with the reference and every chart the batch needs is on;
        at the configured false-alarm rate the evidence so far does not show
        flipping.  The first status that applies, in this order, is reported.
    alarm : bool
        ``status == "alarm"``: the sequential test found flipping.
    finding : bool
        ``status != "no_alarm"``: the batch needs a look (an alarm, labels
        outside the reference's classes or missing, or nothing to judge).
    score : float
        Largest CUSUM statistic over the charts divided by the threshold;
        ``>= 1`` means alarm.  Higher = more evidence of flipping.
    suspects : int
        Rows whose label the evidence doubts (label probability below
        ``suspect_threshold`` and another class preferred).
    expected_suspects : float
        Upper bound of the number of suspects expected on a clean batch of the
        same class mix (calibrated out of fold on the reference set).
    pair : tuple or None
        On alarm, ``(true_class, labelled_as)`` of the chart with the most
        evidence: rows that look like ``true_class`` carry the label ``labelled_as``.
    pairs : list of tuple
        Every pair whose chart crossed at this batch (a swap shows both directions).
    start_batch, start_index : str/int or None
        On alarm, the batch where the change most likely began (Page's estimate:
        the batch after the chart last stood at zero).
    cause : str or None
        ``"label_flipping"`` (alarm, inputs look like the reference),
        ``"feature_drift"`` (inputs moved, no label alarm),
        ``"feature_drift_and_label_alarm"`` (both: the label evidence may be
        distorted by the drift, review before concluding), or ``None``.
    feature_drift : bool
        The batch's distances to their nearest reference rows differ from the
        reference's own (two-sample Kolmogorov-Smirnov test at ``drift_alpha``).
    feature_pvalue, label_shift_pvalue : float
        p-values of that test and of the test of the batch's class shares
        against the reference's (two-sample, Fisher's exact test per class,
        Bonferroni over the classes; it cannot see flips that keep class shares).
    label_shift : bool
        ``label_shift_pvalue`` is below the monitor's level (``drift_alpha``,
        default ``1 / expected_run_length``): a finding.
    label_shares : list of dict
        Per reference class: ``{"label", "rows", "share", "reference_share"}``
        of the judged rows.
    blind_pairs : list of tuple
        ``(true_class, labelled_as)`` pairs whose chart is switched off (and not
        covered by the all-rows chart) while the batch has rows labelled
        ``labelled_as``: flips into those labels cannot be seen in this batch.
    missing_features : dict
        Feature columns whose share of missing (or infinite) values in the batch
        is far above the reference's (given by the caller, e.g. ``flipguard
        monitor``), column -> share; they make ``feature_drift`` true.
    unknown_labels : int
        Rows with a label that is not one of the reference's classes (not
        judged; missing labels are counted apart).
    missing_labels : int
        Rows without a label (null, NaN, empty or blank text; not judged).
    unknown_values : list of dict
        The most frequent unknown label values (at most 10), most frequent
        first: ``{"value", "rows", "looks_like"}``, where ``looks_like`` is the
        reference class equal to the value up to case and whitespace
        (``'Benign'`` -> ``'benign'``), else ``None``.
    unknown_rows, unknown_ids, missing_rows, missing_ids : ndarray
        Positions (in the batch) and ids of the rows with an unknown label and of
        the rows with a missing label, in batch order.
    statistics : dict
        ``"true->labelled"`` -> CUSUM statistic / threshold for every chart,
        plus ``"all"`` for the chart over all rows.
    suspect_rows, suspect_ids : ndarray
        Positions (in the batch) and ids of the suspects, most suspicious first.
    suggested_labels : ndarray
        The label the evidence prefers for each suspect.
    suspect_scores : ndarray
        ``1 - P(given label)`` for each suspect (higher = more suspicious).
    """

    batch: str
    index: int
    rows: int
    status: str
    score: float
    suspects: int
    expected_suspects: float
    pair: tuple | None = None
    pairs: list = field(default_factory=list)
    start_batch: str | None = None
    start_index: int | None = None
    cause: str | None = None
    feature_drift: bool = False
    feature_pvalue: float = float("nan")
    label_shift_pvalue: float = float("nan")
    unknown_labels: int = 0
    judged: int | None = None
    label_shift: bool = False
    label_shares: list = field(default_factory=list)
    blind_pairs: list = field(default_factory=list)
    missing_features: dict = field(default_factory=dict)
    missing_labels: int = 0
    unknown_values: list = field(default_factory=list)
    statistics: dict = field(default_factory=dict)
    suspect_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64), repr=False)
    suspect_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64), repr=False)
    suggested_labels: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    suspect_scores: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    unknown_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64), repr=False)
    unknown_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64), repr=False)
    missing_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64), repr=False)
    missing_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64), repr=False)

    def __post_init__(self):
        if self.judged is None:
            self.judged = self.rows - self.unknown_labels - self.missing_labels

    @property
    def alarm(self) -> bool:
        return self.status == "alarm"

    @property
    def finding(self) -> bool:
        return self.status != "no_alarm"

    def to_dict(self, rows: bool = True) -> dict[str, Any]:
        """Plain JSON-able dict; ``rows=False`` leaves out the per-suspect lists."""
        out = {
            "batch": self.batch, "index": self.index, "rows": self.rows, "judged": self.judged,
            "status": self.status, "alarm": self.alarm, "finding": self.finding, "score": self.score,
            "suspects": self.suspects,
            "expected_suspects": self.expected_suspects,
            "pair": list(self.pair) if self.pair is not None else None,
            "pairs": [list(p) for p in self.pairs],
            "start_batch": self.start_batch, "start_index": self.start_index, "cause": self.cause,
            "feature_drift": self.feature_drift, "feature_pvalue": self.feature_pvalue,
            "label_shift_pvalue": self.label_shift_pvalue, "unknown_labels": self.unknown_labels,
            "missing_labels": self.missing_labels, "unknown_values": self.unknown_values,
            "label_shift": self.label_shift, "label_shares": self.label_shares,
            "blind_pairs": [list(p) for p in self.blind_pairs], "missing_features": self.missing_features,
            "statistics": self.statistics,
        }
        if rows:
            out["suspect_list"] = [
                {"row": r, "id": i, "suggested_label": s, "score": sc}
                for r, i, s, sc in zip(self.suspect_rows.tolist(), self.suspect_ids.tolist(),
                                       self.suggested_labels.tolist(), self.suspect_scores.tolist())
            ]
            out["unknown_label_ids"] = self.unknown_ids.tolist()
            out["missing_label_ids"] = self.missing_ids.tolist()
        return to_jsonable(out)

    def to_json(self, rows: bool = True) -> str:
        return json.dumps(self.to_dict(rows=rows))


class LabelMonitor(BaseEstimator):
    """Watch labelled batches for label flipping, river-style: ``fit`` once, ``update`` per batch.

    Parameters
    ----------
    expected_run_length : float, default=1000
        Expected number of clean batches between two false alarms.  The CUSUM
        threshold is ``log(n_charts * expected_run_length)``, which bounds the
        expected false alarms by one per ``expected_run_length`` clean batches
        over all charts together (Lorden, 1971), as long as clean batches come
        from the reference's distribution.
    min_flip_rate : float in (0, 1), default=0.1
        Design point of the charts: the share of a class's rows carrying a
        flipped label that the charts are tuned to detect fastest.  Larger
        shifts are caught faster, smaller ones slower.
    suspect_threshold : float in (0, 1), default=0.3
        A row is a suspect when the evidence gives its label a probability below
        this and prefers another class.
    n_neighbors : int, default=10
        Reference neighbours voting on each row.
    cv : int, default=5
        Folds of the out-of-fold calibration on the reference set.
    C : float, default=1.0
        Inverse regularisation of the logistic-regression reference model.
    drift_alpha : float or None, default=None
        Per-batch level of the feature-drift test; ``None`` uses
        ``1 / expected_run_length``.
    random_state : int, RandomState instance or None, default=0
        Seeds the calibration folds.

    Attributes
    ----------
    classes_ : ndarray
        Label values of the reference set.
    pairs_ : ndarray of shape (n_pairs, 2)
        ``(true, labelled)`` class codes of the pair charts.
    p0_, p1_ : ndarray of shape (n_pairs + 1,)
        Clean (upper 99% bounds, out of fold) and design suspect rates per chart;
        the last entry is the chart over all rows.
    active_ : ndarray of bool, shape (n_pairs + 1,)
        Charts that are on: a chart whose clean and design rates cannot differ
        (the evidence cannot tell its flips from clean rows, e.g. a class whose
        clean rows look like another class most of the time) is switched off.
    watched_ : ndarray of bool, shape (n_pairs + 1,)
        Charts on, or pair charts switched off whose flips the all-rows chart
        still sees (a flip of ``min_flip_rate`` of the true class's rows raises
        the overall suspect rate by at least half of that chart's design rise).
        A batch with rows labelled ``b`` of an unwatched pair ``(a, b)`` is
        ``"inconclusive"``; ``fit`` warns (:class:`BlindChartWarning`).
    threshold_ : float
        CUSUM alarm threshold ``h``.
    statistic_ : ndarray of shape (n_pairs + 1,)
        Current CUSUM statistics.
    n_batches_ : int
        Batches seen since ``fit`` or ``reset``.
    alarms_ : list of dict
        Every alarm so far (batch, pair, start).
    history_ : list of dict
        One summary per batch (for reports and metrics).

    References
    ----------
    E. S. Page (1954). Continuous inspection schemes. Biometrika 41, 100-115.
    G. Lorden (1971). Procedures for reacting to a change in distribution.
    Ann. Math. Statist. 42, 1897-1908.
    A. Paudice, L. Munoz-Gonzalez, E. C. Lupu (2018). Label sanitization against
    label flipping poisoning attacks. ECML PKDD workshops.

    Examples
    --------
    >>> import numpy as np
    >>> from flipguard.monitor import LabelMonitor
    >>> rng = np.random.RandomState(0)
    >>> X = np.r_[rng.normal(0, 1, (200, 2)), rng.normal(4, 1, (200, 2))]
    >>> y = np.r_[np.zeros(200, int), np.ones(200, int)]
    >>> mon = LabelMonitor(random_state=0).fit(X, y)
    >>> mon.update(X[::8], y[::8]).status
    'no_alarm'
    """

    _parameter_constraints: dict = {
        "expected_run_length": [Interval(Real, 1, None, closed="left")],
        "min_flip_rate": [Interval(Real, 0, 1, closed="neither")],
        "suspect_threshold": [Interval(Real, 0, 1, closed="neither")],
        "n_neighbors": [Interval(Integral, 1, None, closed="left")],
        "cv": [Interval(Integral, 2, None, closed="left")],
        "C": [Interval(Real, 0, None, closed="neither")],
        "drift_alpha": [Interval(Real, 0, 1, closed="neither"), None],
        "random_state": ["random_state"],
    }

    def __init__(self, *, expected_run_length=1000, min_flip_rate=0.1, suspect_threshold=0.3,
                 n_neighbors=10, cv=5, C=1.0, drift_alpha=None, random_state=0):
        self.expected_run_length = expected_run_length
        self.min_flip_rate = min_flip_rate
        self.suspect_threshold = suspect_threshold
        self.n_neighbors = n_neighbors
        self.cv = cv
        self.C = C
        self.drift_alpha = drift_alpha
        self.random_state = random_state

    # -- fitting -------------------------------------------------------------
    def fit(self, X, y):
        """Fit the reference model and calibrate the clean suspect rates out of fold.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Reference features (trusted or sealed labels).
        y : array-like of shape (n_samples,)
            Reference labels (any values; at least two classes, two rows each).
        """
        validate_params(self)
        X = check_array(X, dtype=np.float64)
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != X.shape[0]:
            raise DataError(f"reference: X has {X.shape[0]} rows but y has {len(y)} labels")
        missing = _missing_labels(y)
        if missing.any():
            rows = np.flatnonzero(missing)
            more = ", ..." if len(rows) > 5 else ""
            raise DataError(f"reference: label column has {len(rows)} missing/NaN value(s) (rows "
                            f"{', '.join(map(str, rows[:5].tolist()))}{more}; 0-based); a reference needs "
                            "every label")
        try:
            classes, codes = np.unique(y, return_inverse=True)
        except TypeError:
            kinds = sorted({type(v).__name__ for v in y.tolist()})
            raise DataError(f"reference: labels of mixed types ({', '.join(kinds)}); give labels of one "
                            "type") from None
        counts = np.bincount(codes)
        if len(classes) < 2 or counts.min() < 2:
            raise DataError("reference: needs at least two classes with two rows each")
        K = len(classes)
        self.classes_ = classes
        self.n_features_in_ = X.shape[1]
        self.mean_ = X.mean(axis=0)
        scale = X.std(axis=0)
        scale[scale == 0] = 1.0
        self.scale_ = scale
        Z = (X - self.mean_) / self.scale_
        self.reference_ = Z
        self.reference_labels_ = codes.astype(np.int64)
        self.reference_shares_ = counts / counts.sum()

        rs = check_random_state(self.random_state)
        P_model = self._oof_model(Z, codes, K, rs)
        P_knn, dist = self._knn(Z, leave_one_out=True)
        P = 0.5 * (P_model + P_knn)
        suggested, suspect = self._suspects(P, codes)

        # Clean rates per (true a, labelled b): reference rows labelled b that the evidence puts in a.
        n_b = counts.astype(np.float64)
        hits = np.bincount(suggested[suspect] * K + codes[suspect], minlength=K * K).reshape(K, K)
        # Sensitivity: a row of class a given label b is a suspect with suggestion a when the
        # evidence prefers a and gives b little probability (the evidence never sees the label).
        ok = suggested == codes
        sens = np.zeros((K, K))
        for b in range(K):
            flag = ok & (P[:, b] < self.suspect_threshold)
            sens[:, b] = np.bincount(codes, weights=flag.astype(np.float64), minlength=K) / counts
        a_idx, b_idx = np.nonzero(~np.eye(K, dtype=bool))
        self.pairs_ = np.column_stack([a_idx, b_idx]).astype(np.int64)
        # Upper 99% bounds: the false-alarm bound needs each chart's clean rate to be at most its p0
        # (a chart only drifts up on clean data if the true rate exceeds a point between p0 and p1).
        # Pair rates are sparse (many pairs, few rows each): their bounds borrow strength from
        # each other (empirical Bayes), see pooled_upper_rate.
        conf = 0.99
        p0_pairs = pooled_upper_rate(hits[a_idx, b_idx], n_b[b_idx], confidence=conf)
        sens_pairs = sens[a_idx, b_idx]
        rho = float(self.min_flip_rate)
        p0_all = upper_rate(np.array([suspect.sum()]), np.array([len(codes)]), confidence=conf)
        # A random flip of a row of class a goes to any of the other classes: average sensitivity.
        sens_all = float(np.sum(sens_pairs * self.reference_shares_[a_idx]) / (K - 1))
        self.p0_ = np.r_[p0_pairs, p0_all]
        self.p1_ = np.minimum((1 - rho) * self.p0_ + rho * np.r_[sens_pairs, sens_all], 0.99)
        self.active_ = self.p1_ > self.p0_ * 1.05  # a pair the evidence cannot tell apart is blind
        p1 = np.where(self.active_, self.p1_, self.p0_)  # a chart switched off gets zero weights
        self.w_hit_, self.w_miss_ = log_ratio_weights(self.p0_, p1)
        self.threshold_ = threshold_for_arl(self.expected_run_length, int(self.active_.sum()))
        # A pair chart switched off still has its flips seen when the all-rows chart is on and flipping
        # min_flip_rate of the true class's rows to the label raises the overall suspect rate by at least
        # half of the rise that chart is designed for (a majority class flipped into a minority).
        p0a, p1a = self.p0_[-1], self.p1_[-1]
        rise = rho * self.reference_shares_[a_idx] * (sens_pairs - p0a)
        covered = bool(self.active_[-1]) & (rise >= 0.5 * (p1a - p0a))
        self.watched_ = np.r_[self.active_[:-1] | covered, self.active_[-1]]
        self.reference_counts_ = counts.astype(np.int64)
        self.reference_distances_ = np.sort(dist)
        self.reset()
        msg = self.blind_warning()
        if msg is not None:
            warnings.warn(msg, BlindChartWarning, stacklevel=2)
        return self

    def blind_warning(self) -> str | None:
        """The warning ``fit`` gives when some flips cannot be seen (``None`` when every pair is watched)."""
        self._check_fitted()
        watched = getattr(self, "watched_", self.active_)
        blind = np.flatnonzero(~watched[:-1])
        if not len(blind):
            return None
        names = [f"{_py(self.classes_[a])!r} labelled {_py(self.classes_[b])!r}" for a, b in self.pairs_[blind]]
        head = ("every chart is switched off: the reference's labels do not agree with its features well "
                "enough to see any flip (a noisy or poisoned reference?)" if not self.active_.any() else
                f"{len(blind)} of {len(self.pairs_)} class-pair charts are switched off (the evidence cannot "
                f"tell those flips from clean rows): {', '.join(names[:10])}"
                + (f" and {len(names) - 10} more" if len(names) > 10 else ""))
        return (f"{head}; batches with those labels will be 'inconclusive', never 'no_alarm' "
                "(a class-share test still runs)")

    def reset(self):
        """Forget every batch seen (statistics, alarms, history); keep the fitted reference."""
        self._check_fitted()
        m = len(self.p0_)
        self.statistic_ = np.zeros(m)
        self.last_zero_ = np.full(m, -1, dtype=np.int64)
        self.episode_start_ = np.full(m, -1, dtype=np.int64)
        self.n_batches_ = 0
        self.alarms_ = []
        self.history_ = []
        self._last_alarm = False
        return self

    @property
    def drift_detected(self) -> bool:
        """Whether the last :meth:`update` raised an alarm (read-only, as in river)."""
        return bool(getattr(self, "_last_alarm", False))

    # -- evidence --------------------------------------------------------------
    def _oof_model(self, Z, codes, K, rs) -> np.ndarray:
        from sklearn.model_selection import StratifiedKFold

        n_splits = int(max(2, min(self.cv, np.bincount(codes).min())))
        folds = StratifiedKFold(n_splits=n_splits, shuffle=True,
                                random_state=rs.randint(np.iinfo(np.int32).max))
        P = np.zeros((len(codes), K))
        for train, test in folds.split(Z, codes):
            coef, icpt = self._fit_logreg(Z[train], codes[train], K)
            P[test] = _proba(Z[test], coef, icpt)
        self.coef_, self.intercept_ = self._fit_logreg(Z, codes, K)
        return P

    def _fit_logreg(self, Z, codes, K):
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            m = LogisticRegression(C=self.C, max_iter=500).fit(Z, codes)
        coef = np.zeros((K, Z.shape[1])) if K > 2 else np.zeros((1, Z.shape[1]))
        icpt = np.zeros(coef.shape[0])
        if K > 2:
            seen = m.classes_.astype(np.int64)
            coef[seen], icpt[seen] = m.coef_, m.intercept_
            missing = np.setdiff1d(np.arange(K), seen)
            icpt[missing] = -30.0  # a class absent from a fold gets ~zero probability
        else:
            coef[:], icpt[:] = m.coef_, m.intercept_
        return coef, icpt

    def _knn(self, Z, leave_one_out: bool = False):
        """Neighbour vote probabilities against the reference and mean neighbour distance."""
        K = len(self.classes_)
        k = int(min(self.n_neighbors, len(self.reference_) - 1))
        idx, dist = _neighbours(Z, self.reference_, k, leave_one_out=leave_one_out)
        n = len(Z)
        labels = self.reference_labels_[idx]
        counts = np.bincount((np.arange(n)[:, None] * K + labels).ravel(), minlength=n * K).reshape(n, K)
        return (counts + _PRIOR / K) / (k + _PRIOR), dist.mean(axis=1)

    def _suspects(self, P, codes):
        suggested = np.argmax(P, axis=1)
        p_label = P[np.arange(len(codes)), codes]
        return suggested, (suggested != codes) & (p_label < self.suspect_threshold)

    def evidence(self, X) -> np.ndarray:
        """Combined out-of-sample class probabilities of batch rows, shape (n, n_classes)."""
        self._check_fitted()
        Z = (check_array(X, dtype=np.float64) - self.mean_) / self.scale_
        return 0.5 * (_proba(Z, self.coef_, self.intercept_) + self._knn(Z)[0])

    # -- updating ------------------------------------------------------------
    def update(self, X, y, *, ids=None, name: str | None = None,
               missing_features: dict | None = None) -> BatchVerdict:
        """Judge one batch and advance the sequential test.

        Parameters
        ----------
        X : array-like of shape (n_rows, n_features)
            The batch's features, encoded like the reference's.
        y : array-like of shape (n_rows,)
            The batch's labels as received.  Rows whose label is not one of
            ``classes_`` or is missing (None, NaN, empty or blank text) are not
            judged: they are counted apart, listed in the verdict and make the
            batch's status ``"unknown_labels"`` (unless it alarms).
        ids : array-like, optional
            Row identifiers reported for the suspects (default: positions).
        name : str, optional
            The batch's name in verdicts and history (default: its position).
        missing_features : dict, optional
            Feature columns the caller imputed because far more of their values
            were missing than in the reference (column -> missing share); they
            are reported and make ``feature_drift`` true.

        Returns
        -------
        BatchVerdict
        """
        self._check_fitted()
        t = int(self.n_batches_)
        name = str(t) if name is None else str(name)
        y = np.asarray(y)
        n_rows = len(y)
        X = check_array(X, dtype=np.float64, ensure_min_samples=0) if n_rows else \
            np.zeros((0, self.n_features_in_))
        if X.shape[0] != n_rows:
            raise DataError(f"batch {name}: X has {X.shape[0]} rows but y has {n_rows} labels")
        if n_rows and X.shape[1] != self.n_features_in_:
            raise DataError(f"batch {name}: {X.shape[1]} feature columns, the reference has "
                            f"{self.n_features_in_}")
        ids = np.arange(n_rows) if ids is None else np.asarray(ids)
        if len(ids) != n_rows:
            raise DataError(f"batch {name}: {len(ids)} ids for {n_rows} rows")
        codes, known = self._encode(y)
        missing = _missing_labels(y)
        known &= ~missing
        unknown = ~(known | missing)
        # Rows whose label is not a reference class (or is missing) cannot be judged; they are reported,
        # never dropped silently: relabelling rows to an unseen spelling would otherwise hide flips.
        label_problems = self._label_problems(y, ids, unknown, missing)
        bad_labels = bool(unknown.any() or missing.any())
        K = len(self.classes_)
        Xk, ck, idk = X[known], codes[known], ids[known]
        n = len(ck)
        verdict_extra: dict[str, Any] = {}
        missing_features = {str(k): float(v) for k, v in (missing_features or {}).items()}
        if n == 0:
            self.n_batches_ = t + 1
            self._last_alarm = False
            v = BatchVerdict(batch=name, index=t, rows=n_rows, judged=0,
                             status="unknown_labels" if bad_labels else "inconclusive",
                             score=self._score(), suspects=0, expected_suspects=0.0,
                             feature_drift=bool(missing_features), missing_features=missing_features,
                             cause="feature_drift" if missing_features else None,
                             statistics=self._stat_dict(), **label_problems)
            self._record(v)
            return v
        Z = (Xk - self.mean_) / self.scale_
        P_knn, dist = self._knn(Z)
        P = 0.5 * (_proba(Z, self.coef_, self.intercept_) + P_knn)
        suggested, suspect = self._suspects(P, ck)
        n_b = np.bincount(ck, minlength=K)
        hits = np.bincount(suggested[suspect] * K + ck[suspect], minlength=K * K).reshape(K, K)
        a_idx, b_idx = self.pairs_[:, 0], self.pairs_[:, 1]
        x = np.r_[hits[a_idx, b_idx], suspect.sum()]
        trials = np.r_[n_b[b_idx], n]
        stat = cusum_step(self.statistic_, x, trials, self.w_hit_, self.w_miss_)
        stat[~self.active_] = 0.0
        self.last_zero_[stat == 0] = t
        self.episode_start_[stat == 0] = -1  # back to zero: any alarm episode of that chart is over
        crossed = np.flatnonzero(self.active_ & (stat >= self.threshold_))
        self.statistic_ = stat
        expected = float(np.sum(self.p0_[:-1] * n_b[b_idx]))

        pair = start_idx = start_name = None
        pairs: list[tuple] = []
        if len(crossed):
            pair_charts = crossed[crossed < len(self.pairs_)]
            ratios = stat[: len(self.pairs_)] / self.threshold_
            # Name the pair with most evidence; if only the all-rows chart crossed, the strongest pair.
            best = pair_charts[np.argmax(ratios[pair_charts])] if len(pair_charts) else int(np.argmax(ratios))
            a, b = self.pairs_[best]
            pair = (_py(self.classes_[a]), _py(self.classes_[b]))
            pairs = [(_py(self.classes_[i]), _py(self.classes_[j])) for i, j in self.pairs_[pair_charts]]
            # Page's estimate of the change point, kept for as long as the chart has not returned to zero
            # since its last alarm (an attack that goes on is one episode, with one start).
            starts = np.where(self.episode_start_[crossed] >= 0, self.episode_start_[crossed],
                              self.last_zero_[crossed] + 1)
            self.episode_start_[crossed] = starts
            start_idx = int(starts.min())
            start_name = self.history_[start_idx]["batch"] if start_idx < len(self.history_) else name
            verdict_extra["score"] = float(stat.max() / self.threshold_)
            self.statistic_ = stat.copy()
            self.statistic_[crossed] = 0.0  # restart the charts that alarmed
            self.last_zero_[crossed] = t
        score = verdict_extra.get("score", self._score())
        stats = self._stat_dict(stat)

        from scipy.stats import ks_2samp

        fp = float(ks_2samp(dist, self.reference_distances_).pvalue)
        alpha = self.drift_alpha if self.drift_alpha is not None else 1.0 / float(self.expected_run_length)
        drift = fp < alpha or bool(missing_features)
        ref_counts = getattr(self, "reference_counts_", None)
        if ref_counts is None or len(ref_counts) != K:  # a state from before reference_counts_ was kept
            ref_counts = np.round(self.reference_shares_ * len(self.reference_labels_)).astype(np.int64)
        lp = label_shift_pvalue(n_b, ref_counts)
        shift = lp < alpha
        shares = [{"label": _py(c), "rows": int(m), "share": float(m / n), "reference_share": float(r)}
                  for c, m, r in zip(self.classes_, n_b, self.reference_shares_)]
        # A batch with rows labelled b of a pair (a, b) whose chart is off (and not covered by the all-rows
        # chart) cannot show flips a -> b: it is not clean, it is inconclusive for that pair.
        watched = getattr(self, "watched_", self.active_)
        blind_idx = np.flatnonzero(~watched[: len(self.pairs_)] & (n_b[b_idx] > 0))
        blind = [(_py(self.classes_[i]), _py(self.classes_[j])) for i, j in self.pairs_[blind_idx]]
        alarm = pair is not None
        cause = ("feature_drift_and_label_alarm" if alarm and drift else "label_flipping" if alarm
                 else "feature_drift" if drift else None)
        order = np.flatnonzero(suspect)
        scores = 1.0 - P[order, ck[order]]
        rank = np.argsort(-scores, kind="stable")
        order, scores = order[rank], scores[rank]
        rows_in_batch = np.flatnonzero(known)[order]
        status = ("alarm" if alarm else "unknown_labels" if bad_labels else "label_shift" if shift
                  else "inconclusive" if blind else "no_alarm")
        v = BatchVerdict(
            batch=name, index=t, rows=n_rows, judged=n, status=status, score=score,
            suspects=int(suspect.sum()), expected_suspects=expected, pair=pair, pairs=pairs,
            start_batch=start_name, start_index=start_idx, cause=cause, feature_drift=bool(drift),
            feature_pvalue=fp, label_shift_pvalue=lp, label_shift=bool(shift), label_shares=shares,
            blind_pairs=blind, missing_features=missing_features, statistics=stats,
            suspect_rows=rows_in_batch, suspect_ids=idk[order], suggested_labels=self.classes_[suggested[order]],
            suspect_scores=scores, **label_problems)
        self.n_batches_ = t + 1
        self._last_alarm = alarm
        if alarm:
            self.alarms_.append({"batch": name, "index": t, "pair": list(pair), "pairs": [list(p) for p in pairs],
                                 "start_batch": start_name, "start_index": start_idx, "cause": cause})
        self._record(v)
        return v

    def _encode(self, y):
        """Batch labels -> reference codes; values the reference never saw are marked unknown."""
        return _encode_labels(self.classes_, y)

    def _label_problems(self, y, ids, unknown, missing) -> dict[str, Any]:
        """Counts, positions, ids and the most frequent values of unknown labels; missing labels apart."""
        unknown_rows, missing_rows = np.flatnonzero(unknown), np.flatnonzero(missing)
        values: list[dict[str, Any]] = []
        if len(unknown_rows):
            vals = y[unknown_rows]
            try:
                uniq, counts = np.unique(vals, return_counts=True)
            except TypeError:  # mixed types (e.g. ints and strings): group as text
                uniq, counts = np.unique(vals.astype(str), return_counts=True)
            top = np.argsort(-counts, kind="stable")[:_MAX_UNKNOWN_VALUES]
            plain = [_py(u) for u in uniq[top]]
            alike: dict = {}
            if any(isinstance(u, str) for u in plain):
                from ..detection._api import _look_alikes

                alike = _look_alikes(plain, [_py(c) for c in self.classes_])
            values = [{"value": u, "rows": int(c), "looks_like": alike.get(u) if isinstance(u, str) else None}
                      for u, c in zip(plain, counts[top].tolist())]
        return {"unknown_labels": len(unknown_rows), "missing_labels": len(missing_rows),
                "unknown_values": values, "unknown_rows": unknown_rows, "unknown_ids": ids[unknown_rows],
                "missing_rows": missing_rows, "missing_ids": ids[missing_rows]}

    def _score(self, stat=None) -> float:
        stat = self.statistic_ if stat is None else stat
        return float(stat.max() / self.threshold_) if len(stat) else 0.0

    def _stat_dict(self, stat=None) -> dict[str, float]:
        stat = self.statistic_ if stat is None else stat
        names = [f"{self.classes_[a]}->{self.classes_[b]}" for a, b in self.pairs_] + ["all"]
        return {n: float(s / self.threshold_) for n, s in zip(names, stat)}

    def _record(self, v: BatchVerdict) -> None:
        self.history_.append({
            "batch": v.batch, "index": v.index, "rows": v.rows, "judged": v.judged,
            "unknown_labels": v.unknown_labels, "missing_labels": v.missing_labels,
            "unknown_values": to_jsonable(v.unknown_values), "status": v.status, "score": v.score,
            "suspects": v.suspects, "expected_suspects": v.expected_suspects,
            "pair": list(v.pair) if v.pair else None, "feature_drift": v.feature_drift,
            "feature_pvalue": v.feature_pvalue, "label_shift_pvalue": v.label_shift_pvalue,
            "label_shift": v.label_shift, "blind_pairs": [list(p) for p in v.blind_pairs],
            "missing_features": dict(v.missing_features),
        })

    def _check_fitted(self):
        if not hasattr(self, "p0_"):
            raise InvalidParameterError("This LabelMonitor is not fitted yet; call fit(X_reference, y_reference) first.")

    # -- persistence -----------------------------------------------------------
    _ARRAYS = ("mean_", "scale_", "reference_", "reference_labels_", "reference_shares_", "coef_", "intercept_",
               "pairs_", "p0_", "p1_", "active_", "w_hit_", "w_miss_", "reference_distances_", "statistic_",
               "last_zero_", "episode_start_")
    _OPTIONAL_ARRAYS = ("watched_", "reference_counts_")  # absent from states of older versions

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """``(arrays, meta)``: everything needed to restore this monitor exactly."""
        self._check_fitted()
        arrays = {k: getattr(self, k) for k in self._ARRAYS}
        arrays.update({k: getattr(self, k) for k in self._OPTIONAL_ARRAYS if hasattr(self, k)})
        classes = self.classes_
        meta = {
            "params": to_jsonable(self.get_params()) if not hasattr(self.random_state, "rand")
            else {**to_jsonable({k: v for k, v in self.get_params().items() if k != "random_state"}),
                  "random_state": None},
            "classes": to_jsonable(classes.tolist()), "classes_dtype": classes.dtype.str,
            "threshold": self.threshold_, "n_features_in": int(self.n_features_in_),
            "n_batches": int(self.n_batches_), "alarms": to_jsonable(self.alarms_),
            "history": to_jsonable(self.history_), "last_alarm": bool(self._last_alarm),
        }
        if classes.dtype == object:
            meta["classes_dtype"] = "object"
        return arrays, meta

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> LabelMonitor:
        """Rebuild a monitor from :meth:`state` output."""
        try:
            mon = cls(**meta["params"])
            for k in cls._ARRAYS:
                setattr(mon, k, np.array(arrays[k]))
            for k in cls._OPTIONAL_ARRAYS:
                if k in arrays:
                    setattr(mon, k, np.array(arrays[k]))
            if not hasattr(mon, "watched_"):
                mon.watched_ = mon.active_.copy()
            dt = meta["classes_dtype"]
            mon.classes_ = np.array(meta["classes"], dtype=object if dt == "object" else np.dtype(dt))
            mon.threshold_ = float(meta["threshold"])
            mon.n_features_in_ = int(meta["n_features_in"])
            mon.n_batches_ = int(meta["n_batches"])
            mon.alarms_ = list(meta["alarms"])
            mon.history_ = list(meta["history"])
            mon._last_alarm = bool(meta["last_alarm"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"monitor state is incomplete or malformed ({exc})") from None
        return mon

    def save(self, path, extra: dict[str, Any] | None = None) -> None:
        """Write the monitor's state (and JSON-able ``extra``) atomically; see :mod:`._state`."""
        arrays, meta = self.state()
        write_state(path, arrays, {"monitor": meta, "extra": to_jsonable(extra or {})})

    @classmethod
    def load(cls, path, *, with_extra: bool = False):
        """Read a state file written by :meth:`save`; no pickle, digest checked."""
        arrays, meta = read_state(path)
        if "monitor" not in meta:
            raise DataError(f"{path}: not a LabelMonitor state file")
        mon = cls.from_state(arrays, meta["monitor"])
        return (mon, meta.get("extra", {})) if with_extra else mon


def _encode_labels(classes: np.ndarray, y: np.ndarray):
    """Labels -> codes in ``classes`` (sorted) and whether each label is one of them."""
    y = np.asarray(y)
    try:
        pos = np.searchsorted(classes, y)
        pos = np.clip(pos, 0, len(classes) - 1)
        known = classes[pos] == y
    except TypeError:  # mixed types (e.g. ints vs strings): compare as text
        text = classes.astype(str)
        order = np.argsort(text)
        yt = y.astype(str)
        p = np.clip(np.searchsorted(text[order], yt), 0, len(text) - 1)
        pos = order[p]
        known = text[pos] == yt
    return np.asarray(pos, dtype=np.int64), np.asarray(known, dtype=bool)


def label_shift_pvalue(counts, reference_counts) -> float:
    """p-value of "the batch's class shares are the reference's": two-sample, exact, for any batch size.

    For each class, Fisher's exact test of (rows of the class, other rows) in
    the batch against the reference; the smallest p-value times the number of
    classes (Bonferroni; one test for two classes, whose two tables are the
    same).  Exact tests are never anti-conservative, unlike the chi-square
    approximation with a rare class in a small batch, so rejecting at level
    ``alpha`` happens on at most ``alpha`` of the clean batches; and comparing
    with the reference's counts (not its shares taken as exact) keeps that true
    for batches far larger than the reference.
    """
    from scipy.stats import fisher_exact

    c = np.asarray(counts, dtype=np.int64)
    r = np.asarray(reference_counts, dtype=np.int64)
    n, m = int(c.sum()), int(r.sum())
    if n == 0 or m == 0:
        return 1.0
    tests = range(1) if len(c) == 2 else range(len(c))
    p = min(float(fisher_exact([[c[k], n - c[k]], [r[k], m - r[k]]]).pvalue) for k in tests)
    return float(min(1.0, p * len(tests)))


def _missing_labels(y: np.ndarray) -> np.ndarray:
    """Rows without a label: None, NaN, pandas NA/NaT, or text that is empty or only whitespace.

    Vectorised (``pandas.isna`` and pandas' string methods): no Python call per row.
    """
    kind = y.dtype.kind
    if kind == "f":
        return np.isnan(y)
    if kind in "US":
        return np.char.str_len(np.char.strip(y)) == 0
    if kind == "O":
        if not len(y):
            return np.zeros(0, dtype=bool)
        import pyarrow as pa
        import pyarrow.compute as pc

        try:  # text and nulls (the usual case): in Arrow, no Python call per row
            arr = pa.array(y, type=pa.string(), from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, ValueError):
            arr = None
        if arr is not None:
            blank = pc.or_kleene(pc.is_null(arr), pc.equal(pc.utf8_trim_whitespace(arr), ""))
            return np.asarray(pc.fill_null(blank, True).to_numpy(zero_copy_only=False), dtype=bool)
        import pandas as pd  # mixed types (numbers and text, pandas NA): pandas' vectorised checks

        missing = np.asarray(pd.isna(y), dtype=bool)
        s = pd.Series(y, dtype=object, copy=False)
        try:
            blank = np.asarray((s.str.strip().str.len() == 0).to_numpy(), dtype=bool)
        except AttributeError:  # no text at all (numbers, None): nothing can be blank
            blank = np.zeros(len(y), dtype=bool)
        return missing | blank
    return np.zeros(len(y), dtype=bool)


def short_value(value, max_len: int = 40) -> str:
    """A label value for a text line or table cell: strings quoted, long ones cut."""
    s = repr(value) if isinstance(value, str) else str(value)
    return s if len(s) <= max_len else s[: max_len - 1] + "\u2026"


def _py(value):
    """A numpy scalar as the plain Python value (object-array items are already plain)."""
    return value.item() if hasattr(value, "item") else value


def _proba(Z, coef, intercept) -> np.ndarray:
    """Logistic-regression probabilities from stored coefficients (binary: sigmoid; else softmax)."""
    d = Z @ coef.T + intercept
    if coef.shape[0] == 1:
        p1 = 1.0 / (1.0 + np.exp(-d[:, 0]))
        return np.column_stack([1.0 - p1, p1])
    d = d - d.max(axis=1, keepdims=True)
    e = np.exp(d)
    return e / e.sum(axis=1, keepdims=True)


def _neighbours(Q, R, k: int, *, leave_one_out: bool = False, chunk: int = 2048):
    """Indices and distances of the ``k`` nearest rows of ``R`` for each row of ``Q`` (exact, numpy only).

    With ``leave_one_out`` (``Q is R``) a row is never its own neighbour; exact
    duplicates of it still count.  Plain matrix products instead of
    scikit-learn's threaded search: predictable on a busy machine.
    """
    rn = np.einsum("ij,ij->i", R, R)
    idx = np.empty((len(Q), k), dtype=np.int64)
    dist = np.empty((len(Q), k))
    for s in range(0, len(Q), chunk):
        q = Q[s:s + chunk]
        d2 = np.einsum("ij,ij->i", q, q)[:, None] + rn[None, :] - 2.0 * (q @ R.T)
        np.maximum(d2, 0.0, out=d2)
        if leave_one_out:
            d2[np.arange(len(q)), np.arange(s, s + len(q))] = np.inf
        part = np.argpartition(d2, k - 1, axis=1)[:, :k]
        idx[s:s + chunk] = part
        dist[s:s + chunk] = np.sqrt(np.take_along_axis(d2, part, axis=1))
    return idx, dist
