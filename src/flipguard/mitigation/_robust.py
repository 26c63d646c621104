"""``RobustClassifier``: audit the training labels, mitigate, and never do harm."""

from __future__ import annotations

from dataclasses import replace
from numbers import Integral, Real

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from sklearn.model_selection import StratifiedKFold
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from .._validation import HasMethods, Interval, StrOptions, validate_params
from ..detection import BaseDetector, TrustedLabels, make_detector
from ..exceptions import DataError, InvalidParameterError
from ..models import MODEL_NAMES, out_of_fold_proba, predict_scores
from ._forward import _EPS, ForwardCorrectedLogisticRegression
from ._strategies import STRATEGIES, Plan, accepts_sample_weight, diagonally_dominant, fit_model, make_strategy

__all__ = ["RobustClassifier"]

#: Default detector (a name in :data:`flipguard.detection.DETECTORS`).
DEFAULT_DETECTOR = "auto"
#: Fewer rows than this in the smallest class: no audit, the plain model is trained.
MIN_CLASS_ROWS = 4
#: A trusted set needs at least this many rows (and two classes) to judge the guard alone.
MIN_TRUSTED_FOR_GUARD = 20

_METRICS = {"balanced_accuracy": balanced_accuracy_score, "accuracy": accuracy_score}


class RobustClassifier(ClassifierMixin, BaseEstimator):
    """Train from possibly flipped labels: audit, mitigate, and fall back when that does not help.

    ``fit`` computes out-of-fold probabilities with ``estimator``, audits the
    labels with ``detector`` (a :class:`~flipguard.detection.LabelAudit`), then
    applies ``strategy``:

    - ``"drop"``: drop flagged rows;
    - ``"relabel"``: give flagged rows the audit's suggested label;
    - ``"weight"``: down-weight rows in proportion to their suspicion;
    - ``"loss_correction"``: forward loss correction with the audit's
      estimated transition matrix (Patrini et al., CVPR 2017), through
      :class:`ForwardCorrectedLogisticRegression`.

    **No-harm guard.**  Cleaning on unreliable flags (a weak model, a tiny
    class whose rows all look "suspicious") can cost accuracy.  So:

    1. within each observed class, at most the audit's estimated number of
       flipped labels in that class and at most ``max_fraction`` of the
       class are touched, the most suspicious rows first; trusted rows never
       (a minority class is never cleaned beyond its estimated flip share,
       and no class is ever emptied);
    2. forward correction is only used when the estimated transition matrix
       is diagonally dominant (each class is mostly observed as itself);
    3. with ``guard=True``, mitigated and plain training are compared on
       held-out data before anything is kept: on the trusted rows when at
       least 20 extra trusted rows are given, otherwise by ``guard_cv``-fold
       cross-validation scored on the held-out folds' **observed** labels
       (the only evidence that does not depend on the detector being
       right).  The mitigation is kept only if its balanced accuracy is at
       least the plain model's minus ``tolerance`` (this catches cleaning
       that sacrifices a minority class) **and** its accuracy is not
       significantly lower: at least the plain model's minus ``tolerance``
       minus two paired standard errors of the difference.  The allowance
       exists because observed labels are biased against a right
       mitigation (a correctly fixed flip counts as an error there); a
       mitigation that is wrong on the rows where it changes predictions
       loses accuracy well beyond it (see ``docs/mitigation.md``).
       ``loss_correction`` is also judged **through its matrix**: the
       corrected model's prediction of the *observed* label,
       ``T^T p(y | x)``, against the plain model's, by log-loss, accuracy
       and balanced accuracy, each allowed ``tolerance`` plus two paired
       standard errors (unbiased when ``T`` is right, unlike its clean
       predictions scored on observed labels).  A ``transition`` you give
       is judged that way alone; an estimated one must pass both, and its
       log-loss through ``T`` may not exceed the plain model's by more than
       ``tolerance``.

    The guard's folds reuse the one audit of all rows (the audit's
    out-of-fold models saw the held-out fold's labels); this keeps its cost
    at ``2 * guard_cv`` extra fits instead of a nested audit per fold.

    When a check fails the plain estimator is trained on all rows,
    ``fallback_`` is True and ``reason_`` says why.

    Parameters
    ----------
    estimator : str or scikit-learn classifier, default="logreg"
        Model trained (and used for the audit's out-of-fold probabilities).
    strategy : {"drop", "relabel", "weight", "loss_correction"}, default="drop"
    detector : str or BaseDetector, default="auto"
        A detector name from :data:`flipguard.detection.DETECTORS` or an instance.
    transition : array-like of shape (n_classes, n_classes), default=None
        ``loss_correction`` only: a known ``T[true, observed]`` instead of
        the audit's estimate.
    guard : bool, default=True
        Compare cleaned and plain training on held-out data (step 3).
    guard_cv : int, default=3
        Folds of the guard's cross-validation.
    tolerance : float, default=0.0
        How much worse than plain the mitigation may score on the guard
        (balanced accuracy; accuracy on top of two standard errors) and
        still be kept.
    max_fraction : float in (0, 1), default=0.5
        Never drop, relabel or remove weight from more than this share of a class.
    cv : int, default=5
        Folds of the audit's out-of-fold probabilities.
    random_state : int, RandomState instance or None, default=None
        Seeds folds, the detector and the models.
    n_jobs : int or None, default=None
        Parallel model fits (out-of-fold and guard folds).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    estimator_ : fitted classifier
        The model actually used by ``predict`` (trained on label codes).
    audit_ : LabelAudit or None
        The audit of the training labels (None if there were too few rows).
    fallback_ : bool
        True when the plain estimator was trained instead of the mitigated one.
    reason_ : str
        Why the mitigation was kept or why it fell back.
    n_dropped_, n_relabelled_, n_reweighted_ : int
        Rows dropped, relabelled, down-weighted in the final training set
        (0 after a fallback).
    dropped_, relabelled_ : ndarray of int
        Their row positions.
    new_labels_ : ndarray
        Labels given to ``relabelled_`` rows (values of ``classes_``).
    sample_weight_ : ndarray of shape (n_samples,) or None
        ``weight`` strategy: the weights the mitigation gave (the final model
        trains with these times the ``sample_weight`` passed to ``fit``).
    transition_ : ndarray of shape (n_classes, n_classes) or None
        ``loss_correction``: the transition matrix used.
    proposed_ : dict
        What the strategy proposed before the guard decided (counts).
    guard_scores_ : dict or None
        ``{"on": "cv" | "trusted", "plain": {"accuracy": a, "balanced_accuracy": b},
        "mitigated": {...}, "disagreement": share of rows the two predict differently,
        "accuracy_se": paired standard error, "allowed_drop": {...}}``; for
        ``loss_correction`` on held-out folds also ``"through_transition"``
        (``plain``, ``mitigated`` with ``log_loss`` too, ``se``,
        ``allowed_drop``: the scores of the predicted observed label) and
        ``"judged_by"`` (the checks that decided).
    n_features_in_ : int

    References
    ----------
    .. [1] G. Patrini, A. Rozza, A. K. Menon, R. Nock, L. Qu. "Making Deep
       Neural Networks Robust to Label Noise: a Loss Correction Approach".
       CVPR 2017.
    .. [2] C. Northcutt, L. Jiang, I. Chuang. "Confident Learning: Estimating
       Uncertainty in Dataset Labels". JAIR 70, 2021.
    .. [3] A. Paudice, L. Munoz-Gonzalez, E. C. Lupu. "Label Sanitization
       against Label Flipping Poisoning Attacks". ECML PKDD workshops, 2018.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import make_classification
    >>> from flipguard.attacks import TargetedFlip
    >>> from flipguard.mitigation import RobustClassifier
    >>> X, y = make_classification(1500, random_state=0)
    >>> flipper = TargetedFlip(source=1, target=0, rate=0.4, random_state=0)
    >>> _, y_bad = flipper.fit_resample(X[:1000], y[:1000])
    >>> clf = RobustClassifier(strategy="relabel", random_state=0).fit(X[:1000], y_bad)
    >>> clf.fallback_, clf.n_relabelled_ > 200
    (False, True)
    >>> round(float(np.mean(clf.predict(X[1000:]) == y[1000:])), 2)  # plain model: 0.69
    0.81
    """

    _parameter_constraints: dict = {
        "estimator": [StrOptions(set(MODEL_NAMES)), HasMethods(["fit", "predict"])],
        "strategy": [StrOptions(set(STRATEGIES))],
        "detector": [str, HasMethods(["audit"])],
        "transition": ["array-like", None],
        "guard": ["boolean"],
        "guard_cv": [Interval(Integral, 2, None, closed="left")],
        "tolerance": [Interval(Real, 0, 1, closed="both")],
        "max_fraction": [Interval(Real, 0, 1, closed="neither")],
        "cv": [Interval(Integral, 2, None, closed="left")],
        "random_state": ["random_state"],
        "n_jobs": [Integral, None],
    }

    def __init__(self, estimator="logreg", *, strategy="drop", detector=DEFAULT_DETECTOR,
                 transition=None, guard=True, guard_cv=3, tolerance=0.0, max_fraction=0.5, cv=5, random_state=None, n_jobs=None):
        self.estimator = estimator
        self.strategy = strategy
        self.detector = detector
        self.transition = transition
        self.guard = guard
        self.guard_cv = guard_cv
        self.tolerance = tolerance
        self.max_fraction = max_fraction
        self.cv = cv
        self.random_state = random_state
        self.n_jobs = n_jobs

    # -- fit ---------------------------------------------------------------------------
    def fit(self, X, y, trusted=None, audit=None, sample_weight=None):
        """Audit the labels, mitigate, check the mitigation helps, and train.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            Observed, possibly flipped, labels.
        trusted : optional
            Labels known to be right, in one of three forms:

            - a boolean mask or integer positions of rows of ``X`` whose
              labels were verified (never dropped, relabelled or down-weighted;
              evidence for the detector);
            - a pair ``(X_trusted, y_trusted)`` of extra verified rows (label
              values as in ``y``): evidence for the detector, the guard's
              validation set when there are at least 20 of them, and extra
              training rows of the final model (with ``loss_correction``
              uncorrected: their row of ``T`` is the identity);
            - a :class:`flipguard.detection.TrustedLabels` (label codes).
        audit : LabelAudit, optional
            An audit of exactly these rows already made (e.g. by
            :func:`flipguard.detection.audit_dataset`, what ``flipguard
            audit`` runs), used instead of auditing again, so the cleaning
            acts on the same numbers the audit reported.
        sample_weight : array-like of shape (n_samples,), optional
            Your weights of the rows (importance, class balance), passed
            through to every model trained here: the guard's plain and
            mitigated models and the final one (multiplied by the ``weight``
            strategy's weights; extra trusted rows weigh 1).  The audit's
            out-of-fold probabilities are unweighted: whether a label agrees
            with its features does not depend on the row's importance.  The
            estimator must accept ``sample_weight`` (``knn`` does not).

        Returns
        -------
        self
        """
        validate_params(self)
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        codes = codes.astype(np.int64)
        K = len(self.classes_)
        strategy = make_strategy(self.strategy)
        strategy.check(self.estimator)
        detector = make_detector(self.detector) if isinstance(self.detector, str) else self.detector
        if not isinstance(detector, BaseDetector) and not hasattr(detector, "audit"):
            raise DataError(f"detector must be a detector name or object; got {detector!r}")
        rs = check_random_state(self.random_state)
        seeds = rs.randint(np.iinfo(np.int32).max, size=4)
        tl, protected, extra = self._trusted(trusted, X, codes)
        sw = None
        if sample_weight is not None:
            sw = _check_sample_weight(sample_weight, X, dtype=np.float64, ensure_non_negative=True)
            if not accepts_sample_weight(self.estimator):
                raise InvalidParameterError(f"sample_weight needs an estimator whose fit accepts it; "
                                            f"{_name(self.estimator)} does not")

        self.audit_ = None
        self.guard_scores_ = None
        self.proposed_ = {}
        self._set_plan(None, codes)
        counts = np.bincount(codes, minlength=K)
        if K < 2 or (counts.min() < MIN_CLASS_ROWS and audit is None):  # a given audit set small classes aside
            return self._fallback(X, codes, extra, sw, seeds[3],
                                  f"too few rows to audit (smallest class has {counts.min()}; "
                                  f"at least {MIN_CLASS_ROWS} needed)")

        if audit is None:
            probs = out_of_fold_proba(self.estimator, X, codes, cv=self.cv, random_state=int(seeds[0]),
                                      n_jobs=self.n_jobs)
            audit = detector.audit(codes, probs, X=X, trusted=tl, classes=self.classes_,
                                   random_state=int(seeds[1]))
        elif len(audit.scores) != len(codes):
            raise DataError(f"audit covers {len(audit.scores)} rows but X has {len(codes)}")
        self.audit_ = audit
        plan = strategy.plan(codes, audit, protected=protected, n_classes=K,
                             max_fraction=float(self.max_fraction), transition=self.transition)
        self.proposed_ = _plan_counts(self.strategy, plan, codes)
        if not np.any(plan.changed):
            return self._fallback(X, codes, extra, sw, seeds[3], "no label looks flipped within the caps "
                                  f"({audit.n_flagged} flagged, {audit.estimated_flips} estimated)")
        if plan.transition is not None and not diagonally_dominant(plan.transition):
            return self._fallback(X, codes, extra, sw, seeds[3],
                                  "the estimated transition matrix is not diagonally dominant "
                                  "(a class observed more often as another label than as itself); "
                                  "loss correction would be unreliable")
        train = plan if sw is None else replace(plan, weight=sw if plan.weight is None else sw * plan.weight)
        if self.guard:
            g = self._guard(X, codes, train, strategy, extra, sw, int(seeds[2]))
            tol = float(self.tolerance)
            g["allowed_drop"] = {"balanced_accuracy": tol, "accuracy": float(tol + 2.0 * g["accuracy_se"])}
            through = g.get("through_transition")
            if through is not None:
                # Both models predict the *observed* label (the corrected one through T), so for
                # a right T the comparison is unbiased: only noise is allowed, on every score.
                through["allowed_drop"] = {m: tol + 2.0 * through["se"][m] for m in through["plain"]}
                # A matrix you give is judged through itself alone (its clean predictions scored on
                # observed labels are biased against it).  An estimated one must also pass the
                # observed-label checks, and explain the observed labels at least as well as no
                # correction (log-loss through T not higher, no noise allowance): on a weak model
                # the prediction of the observed label barely depends on T, and a wrong estimate
                # passes every check that allows for noise.
                if self.transition is not None:
                    g["judged_by"] = ["through_transition"]
                else:
                    g["judged_by"] = ["observed", "through_transition"]
                    through["allowed_drop"]["log_loss"] = tol
            self.guard_scores_ = g
            if _failed_checks(g):
                return self._fallback(X, codes, extra, sw, seeds[3],
                                      f"{self.strategy} did not help on {_guard_text(self.guard_scores_)}")
        if self.strategy == "loss_correction" and extra is not None:
            # Extra trusted rows are clean: trained with them, their loss not corrected.
            self.estimator_ = _fit_corrected_with_trusted(X, train, extra)
        else:
            Xf, plan_f = _with_extra(X, train, extra, self.strategy)
            self.estimator_ = strategy.fit(self.estimator, Xf, plan_f, int(seeds[3]))
        self.fallback_ = False
        self._set_plan(plan, codes)
        kept = f"{self.strategy} kept: {_describe(self.proposed_)}"
        if self.guard_scores_ is not None:
            kept += f"; on {_guard_text(self.guard_scores_)}"
        self.reason_ = kept
        return self

    # -- predict -------------------------------------------------------------------------
    def predict(self, X):
        check_is_fitted(self, "estimator_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return self.classes_[np.asarray(self.estimator_.predict(X), dtype=np.int64)]

    def predict_proba(self, X):
        """Class probabilities in ``classes_`` order (clean posterior for ``loss_correction``)."""
        check_is_fitted(self, "estimator_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return predict_scores(self.estimator_, X, len(self.classes_))

    # -- internals -----------------------------------------------------------------------
    def _trusted(self, trusted, X, codes):
        """-> (TrustedLabels for the detector or None, protected row mask, extra rows (X, codes) or None)."""
        n = len(codes)
        protected = np.zeros(n, dtype=bool)
        if trusted is None:
            return None, protected, None
        if isinstance(trusted, TrustedLabels):
            rows = None if trusted.rows is None else np.asarray(trusted.rows, dtype=np.int64)
            if rows is not None:
                protected[rows[rows >= 0]] = True
            Xt = np.asarray(trusted.X, dtype=np.float64)
            yt = np.asarray(trusted.y, dtype=np.int64)
            extra_mask = np.ones(len(yt), bool) if rows is None else rows < 0
            extra = (Xt[extra_mask], yt[extra_mask]) if extra_mask.any() else None
            return trusted, protected, extra
        if isinstance(trusted, tuple):
            if len(trusted) != 2:
                raise DataError("trusted must be a row mask, row positions, (X_trusted, y_trusted) "
                                "or a TrustedLabels")
            Xt = np.asarray(trusted[0], dtype=np.float64)
            yt = np.asarray(trusted[1])
            if Xt.ndim != 2 or Xt.shape[1] != X.shape[1] or len(yt) != len(Xt):
                raise DataError(f"trusted rows must have {X.shape[1]} features and one label each; "
                                f"got X {Xt.shape}, y {yt.shape}")
            pos = np.clip(np.searchsorted(self.classes_, yt), 0, len(self.classes_) - 1)
            unknown = self.classes_[pos] != yt
            if np.any(unknown):
                raise DataError(f"trusted labels {sorted({str(v) for v in yt[unknown]})[:5]} are not "
                                f"classes of y ({', '.join(map(str, self.classes_))})")
            ytc = pos.astype(np.int64)
            return TrustedLabels(X=Xt, y=ytc, rows=np.full(len(ytc), -1)), protected, (Xt, ytc)
        arr = np.asarray(trusted)
        if arr.dtype == bool:
            if arr.shape != (n,):
                raise DataError(f"a trusted mask needs one value per row ({n}); got shape {arr.shape}")
            rows = np.flatnonzero(arr)
        elif arr.dtype.kind in "iu":
            rows = np.unique(arr)
            if len(rows) and (rows.min() < 0 or rows.max() >= n):
                raise DataError(f"trusted row positions must be in 0 .. {n - 1}")
        else:
            raise DataError("trusted must be a row mask, row positions, (X_trusted, y_trusted) "
                            "or a TrustedLabels")
        protected[rows] = True
        return TrustedLabels(X=X[rows], y=codes[rows], rows=rows), protected, None

    def _guard(self, X, codes, plan: Plan, strategy, extra, sw, seed: int) -> dict:
        """Scores of plain and mitigated training on held-out data (trusted rows, else CV folds)."""
        K = len(self.classes_)
        through = False
        if extra is not None and len(extra[1]) >= MIN_TRUSTED_FOR_GUARD and len(np.unique(extra[1])) >= 2:
            # Verified labels are clean: the corrected model is judged by its clean predictions.
            plain = fit_model(self.estimator, X, codes, sw, random_state=seed)
            mitigated = strategy.fit(self.estimator, X, plan, seed)
            Xt, truth = extra
            pred_plain = np.asarray(plain.predict(Xt), dtype=np.int64)
            pred_mit = np.asarray(mitigated.predict(Xt), dtype=np.int64)
            on = "trusted"
        else:
            # Rows of a class too small to judge (a stray value the audit set aside) train in
            # every fold and are never scored: one row would swing the balanced accuracy.
            counts = np.bincount(codes)
            judged = counts[codes] >= MIN_CLASS_ROWS
            idx, rare = np.flatnonzero(judged), np.flatnonzero(~judged)
            smallest = int(counts[counts >= MIN_CLASS_ROWS].min())
            folds = StratifiedKFold(n_splits=max(2, min(self.guard_cv, smallest)), shuffle=True,
                                    random_state=seed)
            splits = [(np.concatenate([idx[tr], rare]), idx[te]) for tr, te in folds.split(idx, codes[idx])]
            # Forward loss correction is judged through its transition matrix: the held-out
            # labels are the observed ones, so the corrected model's prediction of the observed
            # label, T^T p(y | x), is compared with the plain model's (an unbiased comparison
            # when T is right; scoring its clean predictions against observed labels is not).
            through = plan.transition is not None
            if self.n_jobs in (None, 1):
                results = [_guard_fold(self.estimator, strategy, X, codes, plan, tr, te, seed, sw, through, K)
                           for tr, te in splits]
            else:
                results = Parallel(n_jobs=self.n_jobs)(
                    delayed(_guard_fold)(self.estimator, strategy, X, codes, plan, tr, te, seed, sw, through, K)
                    for tr, te in splits)
            pred_plain = np.empty(len(codes), dtype=np.int64)
            pred_mit = np.empty(len(codes), dtype=np.int64)
            prob_plain = np.zeros((len(codes), K)) if through else None
            prob_mit = np.zeros((len(codes), K)) if through else None
            for (_, te), (pp, pm, qp, qm) in zip(splits, results):
                pred_plain[te] = pp
                pred_mit[te] = pm
                if through:
                    prob_plain[te] = qp
                    prob_mit[te] = qm
            truth, pred_plain, pred_mit, on = codes[idx], pred_plain[idx], pred_mit[idx], "cv"
        # Paired standard error of the accuracy difference (per-row differences in {-1, 0, 1}).
        diff = (pred_mit == truth).astype(float) - (pred_plain == truth).astype(float)
        out = {"on": on,
               "plain": {m: float(f(truth, pred_plain)) for m, f in _METRICS.items()},
               "mitigated": {m: float(f(truth, pred_mit)) for m, f in _METRICS.items()},
               "disagreement": float(np.mean(pred_mit != pred_plain)),
               "accuracy_se": _se(diff)}
        if through:
            rows = np.arange(len(truth))
            qp, qm = prob_plain[idx], prob_mit[idx]
            tp, tm = np.argmax(qp, axis=1), np.argmax(qm, axis=1)
            ll_plain = -np.log(np.clip(qp[rows, truth], _EPS, 1.0))
            ll_mit = -np.log(np.clip(qm[rows, truth], _EPS, 1.0))
            tdiff = (tm == truth).astype(float) - (tp == truth).astype(float)
            out["through_transition"] = {
                "plain": {**{m: float(f(truth, tp)) for m, f in _METRICS.items()}, "log_loss": float(ll_plain.mean())},
                "mitigated": {**{m: float(f(truth, tm)) for m, f in _METRICS.items()},
                              "log_loss": float(ll_mit.mean())},
                "se": {"balanced_accuracy": _balanced_se(tdiff, truth), "accuracy": _se(tdiff),
                       "log_loss": _se(ll_mit - ll_plain)}}
        return out

    def _fallback(self, X, codes, extra, sw, seed, reason: str):
        Xf, yf, wf = X, codes, sw
        if extra is not None:
            Xf, yf = np.vstack([X, extra[0]]), np.concatenate([codes, extra[1]])
            wf = None if wf is None else np.concatenate([wf, np.ones(len(extra[1]))])
        self.estimator_ = fit_model(self.estimator, Xf, yf, wf, random_state=int(seed))
        self.fallback_ = True
        self.reason_ = f"fell back to the plain {_name(self.estimator)}: {reason}"
        self._set_plan(None, codes)
        return self

    def _set_plan(self, plan: Plan | None, codes: np.ndarray) -> None:
        empty = np.array([], dtype=np.int64)
        self.dropped_, self.relabelled_ = empty, empty
        self.new_labels_ = self.classes_[empty]
        self.sample_weight_ = None
        self.transition_ = None
        if plan is not None:
            self.dropped_ = np.flatnonzero(~plan.keep)
            self.relabelled_ = np.flatnonzero(plan.keep & (plan.y != codes))
            self.new_labels_ = self.classes_[plan.y[self.relabelled_]]
            self.sample_weight_ = plan.weight
            self.transition_ = plan.transition
        self.n_dropped_ = len(self.dropped_)
        self.n_relabelled_ = len(self.relabelled_)
        self.n_reweighted_ = 0 if self.sample_weight_ is None else int(np.count_nonzero(self.sample_weight_ < 1))


def _guard_fold(estimator, strategy, X, codes, plan, tr, te, seed, sample_weight=None, through=False,
                n_classes=None):
    """Held-out predictions of plain and mitigated training on one fold.

    ``through``: forward loss correction, whose predictions of the **observed** label
    (``T^T p(y | x)``) are returned, with both models' probabilities of the observed labels.
    """
    plain = fit_model(estimator, X[tr], codes[tr], None if sample_weight is None else sample_weight[tr],
                      random_state=seed)
    mitigated = strategy.fit(estimator, X[tr], plan.restrict(tr), seed)
    if not through:
        return (np.asarray(plain.predict(X[te]), dtype=np.int64),
                np.asarray(mitigated.predict(X[te]), dtype=np.int64), None, None)
    q_plain = predict_scores(plain, X[te], n_classes)
    q_mit = _observed_label_proba(mitigated, X[te], n_classes)
    return (np.asarray(plain.predict(X[te]), dtype=np.int64),
            np.asarray(mitigated.predict(X[te]), dtype=np.int64), q_plain, q_mit)


def _observed_label_proba(model, X, n_classes: int) -> np.ndarray:
    """A corrected model's probabilities of the observed labels, ``T^T p(y | x)``, in columns
    ``0 .. n_classes - 1`` (a model without a transition: its own probabilities)."""
    if not hasattr(model, "predict_noisy_proba"):
        return predict_scores(model, X, n_classes)
    q = model.predict_noisy_proba(X)
    full = np.zeros((q.shape[0], n_classes))
    full[:, np.asarray(model.classes_, dtype=np.int64)] = q
    return full


def _se(diff: np.ndarray) -> float:
    """Standard error of the mean of paired per-row differences."""
    return float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0


def _balanced_se(diff: np.ndarray, truth: np.ndarray) -> float:
    """Standard error of a balanced-accuracy difference: the mean over classes of the per-class
    mean of the paired differences, ``sqrt(sum_c var_c / n_c) / K``."""
    classes = np.unique(truth)
    var = sum(_se(diff[truth == c]) ** 2 for c in classes)
    return float(np.sqrt(var) / len(classes))


def _fit_corrected_with_trusted(X, plan: Plan, extra):
    """Final ``loss_correction`` model with the extra trusted rows: corrected on the data's rows,
    uncorrected on the verified ones (identity rows of ``T``), which weigh 1."""
    Xt, yt = extra
    Xf = np.vstack([X, Xt])
    yf = np.concatenate([plan.y, yt])
    clean = np.concatenate([np.zeros(len(plan.y), bool), np.ones(len(yt), bool)])
    w = np.ones(len(yf)) if plan.weight is None else np.concatenate([plan.weight, np.ones(len(yt))])
    present = np.unique(yf)
    if len(present) < 2:
        return fit_model("logreg", Xf, yf)
    T = plan.transition[np.ix_(present, present)]
    return ForwardCorrectedLogisticRegression(T / T.sum(axis=1, keepdims=True)).fit(
        Xf, yf, sample_weight=w, clean=clean)


def _with_extra(X, plan: Plan, extra, strategy_name: str):
    """Append extra trusted rows (weight 1, never dropped) to the final training set
    (``loss_correction``: :func:`_fit_corrected_with_trusted`)."""
    if extra is None:
        return X, plan
    Xt, yt = extra
    m = len(yt)
    return np.vstack([X, Xt]), Plan(
        keep=np.concatenate([plan.keep, np.ones(m, bool)]), y=np.concatenate([plan.y, yt]),
        weight=None if plan.weight is None else np.concatenate([plan.weight, np.ones(m)]),
        transition=plan.transition,
        changed=None if plan.changed is None else np.concatenate([plan.changed, np.zeros(m, bool)]))


def _plan_counts(strategy: str, plan: Plan, codes: np.ndarray) -> dict:
    out = {"n_dropped": int(np.count_nonzero(~plan.keep)),
           "n_relabelled": int(np.count_nonzero(plan.keep & (plan.y != codes)))}
    if plan.weight is not None:
        out["n_reweighted"] = int(np.count_nonzero(plan.weight < 1))
        out["weight_removed"] = float(np.sum(1.0 - plan.weight))
    if plan.transition is not None:
        out["estimated_noise"] = float(1.0 - np.mean(np.diagonal(plan.transition)))
    return out


def _describe(counts: dict) -> str:
    parts = []
    if counts.get("n_dropped"):
        parts.append(f"{counts['n_dropped']} rows dropped")
    if counts.get("n_relabelled"):
        parts.append(f"{counts['n_relabelled']} rows relabelled")
    if counts.get("n_reweighted"):
        parts.append(f"{counts['n_reweighted']} rows down-weighted "
                     f"({counts['weight_removed']:.1f} rows' worth of weight)")
    if "estimated_noise" in counts:
        parts.append(f"forward correction, mean estimated flip rate {counts['estimated_noise']:.3f}")
    return ", ".join(parts) or "no change"


#: Guard scores where lower is better (the others: higher is better).
_LOWER_IS_BETTER = ("log_loss",)


def _worse_by(g: dict, m: str) -> float:
    """How much worse the mitigated model scored than the plain one on ``m`` (<= 0: not worse)."""
    d = g["mitigated"][m] - g["plain"][m]
    return d if m in _LOWER_IS_BETTER else -d


def _checks(g: dict) -> list[tuple[str, dict, str]]:
    """``(label, scores, metric)`` of every check the guard judged: the observed-label scores
    (``scores`` is ``g``) and, for loss correction, the scores through ``T``."""
    judged = g.get("judged_by") or ["observed"]
    out = []
    if "observed" in judged:
        out += [(m, g, m) for m in g["plain"]]
    t = g.get("through_transition")
    if t is not None and "through_transition" in judged:
        out += [(f"{m} through T", t, m) for m in t["plain"]]
    return out


def _failed_checks(g: dict) -> list[str]:
    """Labels of the guard's checks the mitigation failed (empty: kept)."""
    return [label for label, sc, m in _checks(g) if _worse_by(sc, m) > (sc.get("allowed_drop") or {}).get(m, 0.0)]


def _guard_text(g: dict) -> str:
    """The guard's scores in words.

    When a check failed, the failed ones come first (``failed: balanced_accuracy
    0.658 with it vs 0.660 without: lower by 0.002, more than the allowed
    0.000``), then the passed ones.  When a kept mitigation scored worse on a
    check, the text says by how much and the allowance it is within.  Loss
    correction judged through its transition matrix is labelled ``... through T``.
    """
    where = "the trusted rows" if g["on"] == "trusted" else "held-out folds (observed labels)"
    checks = _checks(g)
    failed = set(_failed_checks(g))

    def scores(label, sc, m):
        return f"{label} {sc['mitigated'][m]:.3f} with it vs {sc['plain'][m]:.3f} without"

    def by(sc, m):
        return f"{'higher' if m in _LOWER_IS_BETTER else 'lower'} by {_worse_by(sc, m):.3f}"

    def allowed(sc, m):
        return (sc.get("allowed_drop") or {}).get(m, 0.0)

    passed = [c for c in checks if c[0] not in failed]
    worse = [(label, sc, m) for label, sc, m in passed if _worse_by(sc, m) > 0]
    within = ", ".join(f"{label} {by(sc, m)}, within the allowed {allowed(sc, m):.3f}" for label, sc, m in worse)
    if failed:
        text = (where + ": failed: " + "; ".join(
            f"{scores(label, sc, m)}: {by(sc, m)}, more than the allowed {allowed(sc, m):.3f}"
            for label, sc, m in checks if label in failed)
            + ("; passed: " + ", ".join(scores(*c) for c in passed) if passed else ""))
        return text + (f" ({within})" if within else "")
    text = where + ": " + ", ".join(scores(*c) for c in passed)
    if within:  # kept although worse: say why that is not harm
        text += "; " + within
        if g["on"] == "cv" and any(sc is g for _, sc, _ in worse):
            text += (" (two standard errors: scored against labels that may themselves be flipped, a "
                     "correct fix counts as an error)")
        elif g["on"] == "cv":
            text += " (two paired standard errors: the noise of the comparison)"
    return text


def _name(estimator) -> str:
    """A model's name in messages; a soft-voting stack of named members reads ``stack(0.5 knn+0.5 hgb)``."""
    if isinstance(estimator, str):
        return estimator
    members = getattr(estimator, "estimators", None)
    if type(estimator).__name__ == "VotingClassifier" and members and all(isinstance(m, tuple) for m in members):
        from ..models import auto_model_name

        return auto_model_name([m[0] for m in members], estimator.weights)
    return type(estimator).__name__
