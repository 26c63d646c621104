"""Entry points: ``find_flipped_labels``, ``LabelAuditor``, ``audit_dataset``, ``evaluate_detection``."""

from __future__ import annotations

import time
import warnings
from numbers import Integral
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state

from .._validation import HasMethods, Interval, StrOptions, validate_params
from ..exceptions import DataError, InvalidParameterError
from ..models import (
    AUTO_CANDIDATES,
    MODEL_NAMES,
    auto_model,
    auto_out_of_fold_proba,
    make_model,
    model_name,
    out_of_fold_proba,
    predict_scores,
    select_model,
    single_threaded,
    stack_out_of_fold_proba,
)
from ._audit import LabelAudit
from ._base import (
    LabelSource,
    TrustedLabels,
    check_pred_probs,
    is_sparse,
    make_detector,
    summarise_sources,
)

__all__ = ["LabelAuditor", "audit_dataset", "embed_2d", "evaluate_detection", "find_flipped_labels"]

_SEED_MAX = np.iinfo(np.int32).max


def find_flipped_labels(labels, pred_probs=None, *, method: str = "auto", X=None,
                        trusted: TrustedLabels | None = None, sources=(), classes=None, ids=None,
                        random_state=None, **params) -> LabelAudit:
    """Which labels look flipped, given out-of-sample predicted probabilities.

    The function-style entry point, like ``cleanlab.filter.find_label_issues``:
    no model is trained here (except by detectors that need one, e.g. the
    trusted model); bring probabilities from any model, computed out-of-fold
    (:func:`flipguard.models.out_of_fold_proba`) so no row is judged by a
    model that saw its label.

    Parameters
    ----------
    labels : array-like of int, shape (n_samples,)
        Observed label codes ``0 .. K-1``.
    pred_probs : array-like of shape (n_samples, K), optional
        Out-of-sample class probabilities (required by most methods).
    method : str, default="auto"
        A registered detector: ``"auto"``, ``"confident_learning"``,
        ``"self_confidence"``, ``"margin"``, ``"knn"``, ``"disagreement"``,
        ``"trusted"``, ``"rules"`` (see :func:`detector_names`).
    X : array-like of shape (n_samples, n_features), optional
        Features: enables neighbour evidence in ``"auto"``; required by
        ``"knn"``, ``"disagreement"`` and ``"trusted"``.
    trusted : TrustedLabels, optional
        Verified labels for a few rows.
    sources : sequence of LabelSource
        Rules and reference labellers (see :func:`rule_sources`,
        :func:`reference_source`).
    classes, ids : array-like, optional
        The user's label values (for codes) and row ids, kept on the result
        so its output speaks the user's vocabulary.
    random_state : int, RandomState instance or None
    **params
        Parameters of the chosen detector (e.g. ``n_neighbors=10``).

    Returns
    -------
    LabelAudit
        ``scores`` (higher = more likely flipped), ``flags``, ``suggested``,
        ``estimated_flips``, ``transitions`` (rows = true class, columns =
        observed label), model quality and warnings.

    Examples
    --------
    >>> import numpy as np
    >>> from flipguard.detection import find_flipped_labels
    >>> true = np.repeat([0, 1], 50)
    >>> probs = np.where(true[:, None] == [0, 1], 0.9, 0.1)  # out-of-fold, say
    >>> labels = true.copy()
    >>> labels[[3, 60, 61]] = [1, 0, 0]
    >>> audit = find_flipped_labels(labels, probs, classes=["ham", "spam"], random_state=0)
    >>> audit.flagged_indices.tolist(), audit.suggested[[3, 60, 61]].tolist()
    ([3, 60, 61], ['ham', 'spam', 'spam'])
    """
    detector = make_detector(method, **params)
    return detector.audit(labels, pred_probs, X=X, trusted=trusted, sources=sources, classes=classes,
                          ids=ids, random_state=random_state)


class LabelAuditor(BaseEstimator):
    """Estimator wrapper: out-of-fold probabilities from ``model``, then a detector.

    ``fit(X, y)`` computes out-of-fold probabilities with
    :func:`flipguard.models.out_of_fold_proba` (seeded, stratified folds,
    BLAS pinned to one thread) when the method needs them (or takes the
    ``pred_probs`` you bring), runs the detector, and stores the
    :class:`LabelAudit` as ``audit_`` with 2-D coordinates of every row for
    plotting.

    ``X`` may be a dense array or a scipy sparse matrix (TF-IDF): sparse
    input stays sparse (models scale it without centring, neighbours are
    searched on it directly).

    Classes with fewer rows than ``cv`` cannot be judged out-of-fold (a
    fold's model would never see them).  Their rows are set aside: the other
    rows are audited without them, and they come back **flagged for review**
    with score 1, the model's best other class as suggested label, and a
    warning naming the class (``details["rare_classes"]``).  They are not
    counted in ``estimated_flips``.  When fewer than two classes have
    ``cv`` rows, nothing can be judged: nothing is flagged, scores are NaN
    and a warning says the audit is inconclusive.

    Warnings raised by scikit-learn or numpy while fitting are caught and
    kept in ``audit_.warnings`` (one line each), never printed.

    Parameters
    ----------
    model : str or scikit-learn classifier, default="auto"
        Model for the out-of-fold probabilities (logreg, linsvm, rf, hgb,
        knn, mlp, or any classifier).  ``"auto"`` stacks the out-of-fold
        probabilities of logreg, knn and hgb, as many as fit a time budget,
        with the convex weights of least log-loss
        (:func:`flipguard.models.select_model`): the single model that best
        fits possibly flipped labels is often the one that learnt the
        flips; the members, weights and why are in ``audit_.model_quality``
        (``model``, ``members``, ``weights``, ``selection``).
    method : str, default="auto"
        Detector name (see :func:`find_flipped_labels`).
    cv : int, default=5
        Folds.
    method_params : dict, optional
        Parameters of the detector.
    n_jobs : int, default=None
        Parallel folds.
    random_state : int, RandomState instance or None, default=None
        Seeds the folds, the model and the detector.

    Attributes
    ----------
    classes_ : ndarray
        Label values seen in ``y`` (codes are positions in it).
    pred_probs_ : ndarray of shape (n_samples, n_classes) or None
        The out-of-fold probabilities (columns follow ``classes_``; NaN
        rows for set-aside rows of rare classes).
    audit_ : LabelAudit
    detector_ : BaseDetector
    model_used_ : str or classifier
        The model whose out-of-fold probabilities were used (with
        ``model="auto"`` and several members, a soft-voting
        :class:`~sklearn.ensemble.VotingClassifier` of them).
    model_selection_ : dict or None
        With ``model="auto"``: the :func:`flipguard.models.select_model` report.
    n_features_in_ : int

    Examples
    --------
    >>> from sklearn.datasets import load_breast_cancer
    >>> from flipguard.attacks import RandomFlip
    >>> from flipguard.detection import LabelAuditor
    >>> X, y = load_breast_cancer(return_X_y=True)
    >>> _, y_bad = RandomFlip(rate=0.1, random_state=0).fit_resample(X, y)
    >>> auditor = LabelAuditor(random_state=0).fit(X, y_bad)
    >>> 40 < auditor.audit_.estimated_flips < 80
    True
    """

    _parameter_constraints = {
        "model": [StrOptions(set(MODEL_NAMES) | {"auto"}), HasMethods(["fit", "predict"])],
        "method": [str],
        "cv": [Interval(Integral, 2, None, closed="left")],
        "method_params": [dict, None],
        "n_jobs": [Integral, None],
        "random_state": ["random_state"],
    }

    def __init__(self, *, model="auto", method="auto", cv=5, method_params=None, n_jobs=None,
                 random_state=None):
        self.model = model
        self.method = method
        self.cv = cv
        self.method_params = method_params
        self.n_jobs = n_jobs
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        tags.input_tags.sparse = True
        return tags

    def fit(self, X, y, *, trusted: TrustedLabels | None = None, sources=(), ids=None,
            pred_probs=None, embed: bool = True):
        """Audit the labels ``y`` of ``X``.

        Parameters
        ----------
        X : array-like or scipy sparse matrix of shape (n_samples, n_features), or None
            ``None`` only with ``pred_probs``: the labels are judged by those
            probabilities alone (no neighbour votes, no trusted model).
        y : array-like of shape (n_samples,)
            Class labels in any vocabulary (strings, integers, booleans);
            continuous values are refused.
        trusted : TrustedLabels, optional
            Verified labels; ``trusted.y`` are codes into ``numpy.unique(y)``.
        sources : sequence of LabelSource
        ids : array-like, optional
            Row ids for the result.
        pred_probs : array-like of shape (n_samples, n_classes), optional
            Out-of-fold probabilities computed elsewhere (columns in the
            order of ``numpy.unique(y)``); no model is trained then.
        embed : bool, default=True
            Compute 2-D coordinates (``audit_.embedding``).
        """
        validate_params(self)
        if X is None and pred_probs is None:
            raise DataError("LabelAuditor needs X unless pred_probs (out-of-fold probabilities) are given")
        if X is None and trusted is not None:
            raise DataError("trusted rows need features: without X the labels are judged by pred_probs alone")
        X, y_arr = _check_X_y(self, X, y)
        classes, codes = np.unique(y_arr, return_inverse=True)
        codes = codes.astype(np.int64)
        if len(classes) < 2:
            raise DataError("y has one class; auditing needs at least two")
        self.classes_ = classes
        rng = check_random_state(self.random_state)
        detector = make_detector(self.method, **(self.method_params or {}))
        if "random_state" in detector.get_params() and detector.get_params()["random_state"] is None:
            detector.set_params(random_state=rng.randint(_SEED_MAX))
        self.detector_ = detector
        oof_seed = rng.randint(_SEED_MAX)
        K = len(classes)
        if pred_probs is not None:
            pred_probs = check_pred_probs(pred_probs, len(codes))
            if pred_probs.shape[1] != K:
                raise DataError(f"pred_probs has {pred_probs.shape[1]} columns but y has {K} classes")
        quality = {"model": "pred_probs" if pred_probs is not None else model_name(self.model),
                   "cv": None if pred_probs is not None else self.cv}

        counts = np.bincount(codes, minlength=K)
        judged_classes = np.flatnonzero(counts >= self.cv)
        rare_classes = np.flatnonzero(counts < self.cv)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if len(judged_classes) < 2:
                audit = _inconclusive(detector.detector_name, codes, classes, ids, self.cv, counts)
                self.pred_probs_ = pred_probs
            elif len(rare_classes) == 0:
                self.pred_probs_ = pred_probs
                refit = None
                singles = None
                alternatives = None
                if detector.needs_pred_probs and pred_probs is None:
                    with single_threaded():
                        self.pred_probs_ = self._oof(X, codes, oof_seed, quality)
                    refit = self._refitter(X, codes, oof_seed)
                    singles = self._singles
                    if self.model != "auto":
                        alternatives = self._alternatives(X, codes, oof_seed)
                audit = detector.audit(codes, self.pred_probs_, X=X, trusted=trusted, sources=sources,
                                       classes=classes, ids=ids, quality=quality, refit=refit,
                                       single_models=singles, alternatives=alternatives)
            else:
                audit = self._audit_without_rare(X, codes, classes, counts, judged_classes, detector,
                                                 pred_probs, trusted, sources, ids, quality, oof_seed)
        audit.warnings.extend(_warning_notes(caught))
        judged = classes[judged_classes]
        pairs = [(b, a) for i, a in enumerate(judged) for b in _look_alikes([a], judged[:i]).values()]
        if pairs:
            audit.warnings.append(
                "classes " + ", ".join(f"'{_py(a)}' and '{_py(b)}'" for a, b in pairs[:5])
                + " differ only in spaces or case: one class written two ways? The audit treats them as "
                "different classes, so rows moved between them look like flips")
        self.n_features_in_ = 0 if X is None else X.shape[1]
        if pred_probs is None and getattr(self, "_check_columns", True):
            _determining_columns_caveat(audit, X, codes, len(classes))
        if embed and X is not None:
            audit.embedding, audit.embedding_axes = embed_2d(X)
        self.audit_ = audit
        return self

    def _oof(self, X, codes, seed, quality: dict) -> np.ndarray:
        """Out-of-fold probabilities of ``self.model``; ``"auto"`` stacks the candidates that fit
        the time budget (:func:`flipguard.models.select_model`) and records them in ``quality``."""
        if self.model != "auto":
            self.model_used_ = self.model
            self.model_selection_ = None
            probs = out_of_fold_proba(self.model, X, codes, cv=self.cv, random_state=seed, n_jobs=self.n_jobs)
            self._singles = (np.arange(len(codes)), {model_name(self.model): probs})
            return probs
        probs, choice = auto_out_of_fold_proba(X, codes, cv=self.cv, random_state=seed,
                                               n_jobs=self.n_jobs)
        # Each candidate's own probabilities (on the selection's rows): the detector checks that
        # evidence read off the stack is also there in a single model's (see AutoDetector).
        self._singles = (choice.pop("sample_rows"), choice.pop("candidate_probs"))
        members = choice["members"]
        self.model_used_ = members[0] if len(members) == 1 else auto_model(
            members, choice["weights"], random_state=seed, sparse=is_sparse(X))
        self.model_selection_ = choice
        quality.update({"model": choice["model"], "members": members, "weights": choice["weights"],
                        "selected_by": "auto",
                        "selection": choice["reason"], "candidates": choice["candidates"]})
        return probs

    def _alternatives(self, X, codes, seed):
        """``alternatives()``: the ``model="auto"`` candidates other than the named model, each
        cross-validated on model selection's subsample (within its time budget); the detector
        asks only when it needs them (see ``BaseDetector.audit``)."""
        others = tuple(c for c in AUTO_CANDIDATES if not (isinstance(self.model, str) and c == self.model))

        def alternatives():
            choice = select_model(X, codes, candidates=others, cv=self.cv, random_state=seed,
                                  n_jobs=self.n_jobs)
            # With no candidate eligible select_model names logreg without probabilities.
            return choice["sample_rows"], {k: v for k, v in choice["candidate_probs"].items()
                                           if v is not None}
        return alternatives

    def _refitter(self, X, codes, seed):
        """``refit(drop, labels=None)``: out-of-fold probabilities of the model just used, every
        fold trained without the ``drop`` rows (the detector's suspects; ``None``: none), on
        ``labels`` instead of the audited ones when given (the detector's rehearsal of an
        attack); see ``BaseDetector.audit``."""
        def refit(drop, labels=None):
            y = codes if labels is None else labels
            with single_threaded():
                if self.model_selection_ is None:
                    return out_of_fold_proba(self.model, X, y, cv=self.cv, random_state=seed,
                                             n_jobs=self.n_jobs, exclude=drop)
                choice = self.model_selection_
                return stack_out_of_fold_proba(choice["members"], choice["weights"], X, y, cv=self.cv,
                                               random_state=seed, n_jobs=self.n_jobs, exclude=drop)
        # What one refit is projected to cost (model selection timed every member on a
        # subsample); unknown for a named model.
        choice = self.model_selection_
        refit.seconds = (None if choice is None else
                         sum(choice["candidates"].get(m, {}).get("projected_seconds") or 0.0
                             for m in choice["members"]))
        return refit

    def _audit_without_rare(self, X, codes, classes, counts, judged_classes, detector, pred_probs,
                            trusted, sources, ids, quality, oof_seed) -> LabelAudit:
        """Audit the rows of classes with at least ``cv`` rows; flag the others for review."""
        K = len(classes)
        keep = np.isin(codes, judged_classes)
        new_code = np.full(K, -1, dtype=np.int64)
        new_code[judged_classes] = np.arange(len(judged_classes))
        sub_codes = new_code[codes[keep]]
        Xs = X[keep] if X is not None else None
        if pred_probs is not None:
            sub_probs = pred_probs[keep][:, judged_classes]
            total = sub_probs.sum(axis=1, keepdims=True)
            sub_probs = np.divide(sub_probs, total, out=np.full_like(sub_probs, 1.0 / len(judged_classes)),
                                  where=total > 0)
            rare_probs = pred_probs[~keep][:, judged_classes]
        refit = singles = None
        if pred_probs is None:
            sub_probs = rare_probs = None
            if detector.needs_pred_probs:
                with single_threaded():
                    sub_probs = self._oof(Xs, sub_codes, oof_seed, quality)
                # the judged rows get every pass a full audit gets (retrain, rehearsal, replication):
                # one stray row must not switch the rehearsal off and let "consistent" through
                refit, singles = self._refitter(Xs, sub_codes, oof_seed), self._singles
            with single_threaded():  # rare rows are unseen by a model fitted on the judged rows
                est = make_model(getattr(self, "model_used_", None) or _fixed(self.model), random_state=oof_seed, sparse=is_sparse(X)).fit(Xs, sub_codes)
                rare_probs = predict_scores(est, X[~keep], len(judged_classes))
        position = np.full(len(codes), -1, dtype=np.int64)
        position[keep] = np.arange(int(keep.sum()))
        sub_trusted = None
        if trusted is not None:
            ty = np.asarray(trusted.y, dtype=np.int64)
            ok = np.isin(ty, judged_classes)
            rows = None
            if trusted.rows is not None:
                r = np.asarray(trusted.rows, dtype=np.int64)[ok]
                rows = np.where(r >= 0, position[np.maximum(r, 0)], -1)
            sub_trusted = TrustedLabels(X=trusted.X[ok], y=new_code[ty[ok]], rows=rows)
        sub_sources = []
        for src in sources:
            exp = np.asarray(src.expected, dtype=np.int64)[keep]
            sub_sources.append(LabelSource(src.name, np.where(exp >= 0, new_code[np.maximum(exp, 0)], -1),
                                           src.kind))
        sub_ids = (np.arange(len(codes)) if ids is None else np.asarray(ids))[keep]
        alternatives = (self._alternatives(Xs, sub_codes, oof_seed)
                        if pred_probs is None and detector.needs_pred_probs and self.model != "auto" else None)
        sub = detector.audit(sub_codes, sub_probs, X=Xs, trusted=sub_trusted, sources=sub_sources,
                             classes=classes[judged_classes], ids=sub_ids, quality=quality, refit=refit,
                             single_models=singles, alternatives=alternatives)

        full_probs = None
        if sub_probs is not None:
            full_probs = np.full((len(codes), K), np.nan)
            full_probs[np.ix_(keep, judged_classes)] = sub_probs
            full_probs[np.ix_(~keep, judged_classes)] = rare_probs
            if pred_probs is not None:
                full_probs = pred_probs
        self.pred_probs_ = full_probs
        audit = _expand(sub, keep, judged_classes, codes, classes, ids, sources, trusted,
                        rare_suggested=judged_classes[np.argmax(rare_probs, axis=1)])
        rare = [(classes[c], int(counts[c])) for c in np.flatnonzero((counts < self.cv) & (counts > 0))]
        alike = _look_alikes([c for c, _ in rare], classes[judged_classes])
        named = ", ".join(f"'{_py(c)}' ({n} row{'s' if n != 1 else ''}"
                          + (f"; '{alike[c]}' but for spaces or case" if c in alike else "") + ")"
                          for c, n in rare[:5])
        more = f" and {len(rare) - 5} more" if len(rare) > 5 else ""
        n_rare = int((~keep).sum())
        audit.warnings.insert(0, (
            f"class{'es' if len(rare) > 1 else ''} {named}{more} "
            f"{'have' if len(rare) > 1 else 'has'} fewer rows than the {self.cv} folds and cannot be "
            f"judged out-of-fold: {'their' if n_rare > 1 else 'its'} {n_rare} row{'s are' if n_rare > 1 else ' is'} "
            "flagged for review (a stray value or a typo?) and left out of the flip estimate; "
            "the other rows were audited without them"))
        audit.details["rare_classes"] = {str(_py(c)): n for c, n in rare}
        audit.details["unjudged_rows"] = np.flatnonzero(~keep).tolist()
        return audit


def _look_alikes(rare, judged) -> dict:
    """``{rare value: judged value}`` for string labels equal but for whitespace and case
    (``'benign '``, ``'Benign'``: a typo in the data, not a class)."""
    key = lambda v: " ".join(v.split()).casefold()  # noqa: E731
    known = {key(v): v for v in judged if isinstance(v, str)}
    return {r: known[key(r)] for r in rare if isinstance(r, str) and key(r) in known}


def _check_X_y(estimator, X, y):
    """scikit-learn's input checks (sparse kept as CSR, complex and NaN/inf refused, at least
    two rows), then the label checks: one label per row, class labels only."""
    from sklearn.utils.multiclass import type_of_target
    from sklearn.utils.validation import validate_data

    if y is None:
        raise DataError(f"{type(estimator).__name__} requires y to be passed, but the target y is None "
                        "(the labels to audit)")
    if X is not None:
        try:
            X = validate_data(estimator, X, accept_sparse="csr", dtype=np.float64, ensure_min_samples=2,
                              reset=True)
        except ValueError as exc:
            raise DataError(str(exc)) from None
    y_arr = np.asarray(y)
    if y_arr.ndim == 2 and y_arr.shape[1] == 1:
        y_arr = y_arr.ravel()
    if y_arr.ndim != 1 or (X is not None and len(y_arr) != X.shape[0]):
        raise DataError(f"X must be 2-D and y 1-D with one label per row (got X {X.shape}, "
                        f"y {y_arr.shape})")
    if y_arr.dtype.kind == "f" or y_arr.dtype == object:
        missing = (np.isnan(y_arr) if y_arr.dtype.kind == "f"
                   else np.frompyfunc(lambda v: v is None or v != v, 1, 1)(y_arr).astype(bool))
        if missing.any():
            where = np.flatnonzero(missing)
            raise DataError(f"y has {len(where)} missing label(s) (None/NaN) at rows "
                            f"{', '.join(map(str, where[:10]))}{' ...' if len(where) > 10 else ''} (0-based): "
                            "drop those rows or give them a label first")
    if y_arr.dtype.kind in "fc" or y_arr.dtype == object:
        try:
            kind = type_of_target(y_arr)
        except ValueError:
            kind = "unknown"
        if kind == "continuous" or (y_arr.dtype.kind == "f" and not np.all(np.isfinite(y_arr))):
            raise DataError("y looks continuous (non-integer numbers); auditing needs class labels: "
                            "bin the values into classes first")
        if y_arr.dtype.kind == "c":
            raise DataError("Complex data not supported for y")
    return X, y_arr


def _inconclusive(method, codes, classes, ids, cv, counts) -> LabelAudit:
    n, K = len(codes), len(classes)
    audit = LabelAudit(method=method, labels=codes, scores=np.full(n, np.nan), flags=np.zeros(n, bool),
                       suggested_codes=codes.copy(), estimated_flips=0,
                       transitions=np.diag(np.bincount(codes, minlength=K)).astype(np.int64),
                       classes=np.asarray(classes), ids=None if ids is None else np.asarray(ids))
    audit.warnings.append(f"no two classes have at least {cv} rows (one per fold; the largest has "
                          f"{int(counts.max())}): no label can be judged out-of-fold, the audit is "
                          "inconclusive. Lower the number of folds or add rows.")
    audit.details["unjudged_rows"] = list(range(n))
    return audit


def _expand(sub: LabelAudit, keep, judged_classes, codes, classes, ids, sources, trusted, *,
            rare_suggested) -> LabelAudit:
    """A sub-audit of the rows ``keep`` (classes ``judged_classes`` recoded ``0..K'-1``) as an
    audit of every row: set-aside rows flagged for review with score 1."""
    n, K = len(codes), len(classes)
    scores = np.ones(n)
    scores[keep] = sub.scores
    flags = np.ones(n, dtype=bool)
    flags[keep] = sub.flags
    suggested = np.empty(n, dtype=np.int64)
    suggested[keep] = judged_classes[sub.suggested_codes]
    suggested[~keep] = rare_suggested
    transitions = np.zeros((K, K), dtype=np.int64)
    transitions[np.ix_(judged_classes, judged_classes)] = sub.transitions
    rare_counts = np.bincount(codes[~keep], minlength=K)
    transitions[np.arange(K), np.arange(K)] += rare_counts
    position = np.flatnonzero(keep)
    sources = list(sources)
    if trusted is not None and len(trusted.in_data()[0]):
        rows, verified = trusted.in_data()
        expected = np.full(n, -1, dtype=np.int64)
        expected[rows] = verified
        sources.append(LabelSource("trusted rows", expected, "trusted"))
    components = {}
    for name, values in sub.components.items():
        full = np.full(n, np.nan)
        full[keep] = values
        components[name] = full
    evidence, disagreements = summarise_sources(codes, sources)
    likely = None
    if sub.likely is not None:  # set-aside rows are for review, not "likely flipped"
        likely = np.zeros(n, dtype=bool)
        likely[keep] = sub.likely
    reason_names = list(sub.reason_names) or [sub.method]
    reason_codes = np.full(n, 1 << len(reason_names), dtype=np.int64)
    reason_codes[keep] = sub.reason_codes if sub.reason_codes is not None else 1
    reason_names.append(RARE_CLASS_REASON)
    audit = LabelAudit(method=sub.method, labels=codes, scores=scores, flags=flags,
                       suggested_codes=suggested, estimated_flips=sub.estimated_flips,
                       transitions=transitions, classes=np.asarray(classes),
                       ids=None if ids is None else np.asarray(ids), model_quality=sub.model_quality,
                       warnings=list(sub.warnings), evidence=evidence, disagreements=disagreements,
                       components=components, params=sub.params, details=dict(sub.details),
                       verdict=dict(sub.verdict), likely=likely, reason_codes=reason_codes,
                       reason_names=reason_names)
    for key in ("verified_rows", "trusted_rows"):
        if isinstance(audit.details.get(key), list):
            audit.details[key] = [int(position[r]) for r in audit.details[key]]
    return audit


#: The reason given for rows of a class too small to be judged out-of-fold.
RARE_CLASS_REASON = "class_too_small"


def _fixed(model):
    """The model to refit for set-aside rows when ``model="auto"`` never ran (logreg)."""
    return "logreg" if model == "auto" else model


def _warning_notes(caught) -> list[str]:
    """Caught library warnings as one deduplicated line each."""
    notes: list[str] = []
    for w in caught:
        text = str(w.message).strip().splitlines()[0] if str(w.message).strip() else ""
        note = f"{w.category.__name__} during the audit: {text}"
        if note not in notes:
            notes.append(note)
    return notes[:5]


def _py(value):
    return value.item() if hasattr(value, "item") else value


def audit_dataset(dataset, *, method: str = "auto", model="auto", cv: int = 5,
                  trusted: TrustedLabels | None = None, sources=(), method_params=None,
                  n_jobs=None, random_state=None, pred_probs=None, features=None,
                  embed: bool = True) -> LabelAudit:
    """Audit a :class:`~flipguard.data.LabeledDataset` (what ``flipguard audit`` runs).

    The result speaks the dataset's label values and ids; see
    :class:`LabelAuditor` for the parameters.  The dataset's ``X`` may be
    sparse (``load(..., sparse=True)``, TF-IDF).

    Parameters
    ----------
    pred_probs : array-like of shape (n_samples, n_classes), optional
        Out-of-fold probabilities computed elsewhere, columns in the order
        of ``dataset.classes`` (see :func:`read_pred_probs` for a file).
    features : array-like or sparse matrix of shape (n_samples, d), optional
        Features to judge the labels by instead of ``dataset.X`` (for
        instance embeddings from an image or text model; see
        :func:`read_features` for a file).
    """
    counts = np.bincount(dataset.y, minlength=dataset.n_classes)
    if np.count_nonzero(counts) < 2:
        raise DataError(f"{dataset.source}: label column '{dataset.label_name}' has a single class; "
                        "auditing needs at least two")
    if counts.min() == 0:
        raise DataError(f"{dataset.source}: every class must have at least one row "
                        f"(no rows labelled {dataset.classes[np.argmin(counts)]!r})")
    if np.count_nonzero(counts >= cv) < 2:
        raise DataError(f"{dataset.source}: label column '{dataset.label_name}' has fewer than two "
                        f"classes with at least {cv} rows (one per fold; counts: "
                        f"{_counts_text(dataset.classes, counts)}); lower --cv or add rows")
    X = dataset.X if features is None else features
    if X is not None and X.shape[1] == 0:  # a file of ids and labels: judged by pred_probs alone
        if pred_probs is None:
            raise DataError(f"{dataset.source}: no feature columns to judge the labels by (give "
                            "--pred-probs or --features)")
        X = None
    auditor = LabelAuditor(model=model, method=method, cv=cv, method_params=method_params,
                           n_jobs=n_jobs, random_state=random_state)
    auditor._check_columns = False  # the loader's columns are checked below, by name (_label_columns_caveat)
    # Fit on the label values (so warnings name them); numpy.unique orders them like
    # dataset.classes, so trusted codes and sources line up.
    auditor.fit(X, dataset.labels(), trusted=trusted, sources=sources, ids=dataset.ids,
                pred_probs=pred_probs, embed=False)
    if not np.array_equal(auditor.classes_, dataset.classes):  # pragma: no cover - defensive
        raise DataError(f"{dataset.source}: cannot order the classes of label column '{dataset.label_name}'")
    audit = auditor.audit_
    audit.classes = np.asarray(dataset.classes)
    _label_columns_caveat(audit, dataset.encoding, used=features is None and pred_probs is None)
    if embed and X is not None:
        audit.embedding, audit.embedding_axes = embed_2d(X, dataset.feature_names if features is None
                                                         else None)
    return audit


def _label_columns_caveat(audit, encoding: dict, *, used: bool) -> None:
    """Name the columns the loader left out or marked because they carry the observed label
    (:mod:`flipguard.data._leaks`), and never call labels clean that such a column explains:
    the model reads the labels off it, flips included, so no test has power against them."""
    from ..data._leaks import label_columns, leak_notes
    from ._auto import CLEAN, INCONCLUSIVE

    audit.warnings[:0] = leak_notes(encoding)
    cols = label_columns(encoding) if used else []
    if cols and audit.verdict.get("status") in (CLEAN, INCONCLUSIVE):
        # Named whatever else made the verdict inconclusive: it is the first thing to fix.
        names = ", ".join(f"'{c}'" for c in cols)
        _not_clean_for_columns(audit, cols, f"column {names} determines the observed "
                               "label on its own, so the model reads the labels off it and no test can see flips it "
                               "carries")


def _not_clean_for_columns(audit, cols: list, why: str) -> None:
    """The verdict made inconclusive because of the label-determining ``cols``, the tests' own
    reason kept after ``why``."""
    from ._auto import INCONCLUSIVE

    audit.verdict["status"] = INCONCLUSIVE
    audit.verdict["reason"] = f"{why} (the tests alone said: {audit.verdict.get('reason', '')})"
    audit.verdict["label_columns"] = cols


#: Most feature columns :func:`_determining_columns_caveat` checks (one sort of a row sample each).
_MAX_CHECKED_COLUMNS = 256


def _determining_columns_caveat(audit, X, codes: np.ndarray, n_classes: int) -> None:
    """The loader's rule for arrays: labels a single feature column determines (a copy of the
    label, a row number of a label-sorted table) are never called clean, since the model reads
    them off that column, flips included.  Dense ``X`` of at most ``_MAX_CHECKED_COLUMNS``
    columns, on the loader's row sample (:mod:`flipguard.data._leaks`); only a clean verdict
    is at stake (the CLI names the columns whatever the verdict)."""
    from ..data._leaks import determines_label, sample_rows
    from ._auto import CLEAN

    if (audit.verdict or {}).get("status") != CLEAN or X is None or hasattr(X, "tocsr") \
            or X.shape[1] > _MAX_CHECKED_COLUMNS:
        return
    rows = sample_rows(len(codes))
    cols = [j for j in range(X.shape[1]) if determines_label(np.asarray(X[rows, j]), codes[rows], n_classes)]
    if cols:
        _not_clean_for_columns(audit, cols, f"feature column(s) {', '.join(str(j) for j in cols[:5])} (0-based) "
                               "determine the observed label on their own, so the model reads the labels off them "
                               "and no test can see flips they carry")


def _counts_text(classes, counts, limit: int = 6) -> str:
    parts = [f"{_py(c)} {int(n)}" for c, n in zip(classes, counts)]
    return ", ".join(parts[:limit]) + (", ..." if len(parts) > limit else "")


def embed_2d(X, feature_names=None) -> tuple[np.ndarray, list[str]]:
    """2-D coordinates of every row for plotting: the two features themselves when
    there are two, else the first two principal components of the standardised
    features (computed from the correlation matrix, without copying ``X``; a
    sparse ``X`` stays sparse)."""
    sparse = is_sparse(X)
    X = X.tocsr().astype(np.float64) if sparse else np.asarray(X, dtype=np.float64)
    n, d = X.shape
    names = list(feature_names) if feature_names is not None else [f"x{j}" for j in range(d)]
    if d <= 2:
        dense = X.toarray() if sparse else X
        if d == 1:
            return np.column_stack([dense[:, 0], np.zeros(n)]), [names[0], "-"]
        return dense.copy(), names[:2]
    with single_threaded():
        if sparse:
            from sklearn.utils.sparsefuncs import mean_variance_axis

            mu, var = mean_variance_axis(X, axis=0)
            sd = np.sqrt(var)
            gram = np.asarray((X.T @ X).toarray()) / n - np.outer(mu, mu)
        else:
            mu = X.mean(axis=0)
            sd = X.std(axis=0)
            gram = X.T @ X / n - np.outer(mu, mu)
        sd[sd == 0] = 1.0
        corr = gram / np.outer(sd, sd)
        vals, vecs = np.linalg.eigh(corr)
        order = np.argsort(vals)[::-1][:2]
        V = vecs[:, order]
        V *= np.where(V[np.argmax(np.abs(V), axis=0), [0, 1]] < 0, -1.0, 1.0)  # deterministic signs
        share = vals[order] / max(vals.sum(), 1e-300)
        coords = np.asarray(X @ (V / sd[:, None])) - (mu / sd) @ V
    return coords, [f"PC1 ({share[0]:.0%} of variance)", f"PC2 ({share[1]:.0%} of variance)"]


def evaluate_detection(data, flip_mask, *, method: str = "auto", model="logreg", cv: int = 5,
                       trusted: TrustedLabels | None = None, sources=(), random_state=None,
                       n_jobs=None, **method_params) -> dict[str, Any]:
    """Audit poisoned data whose flipped rows are known, and score the audit.

    Parameters
    ----------
    data : LabeledDataset or tuple (X, y)
        The *poisoned* data.
    flip_mask : array-like of bool, shape (n_samples,)
        True where the label was flipped (e.g. a flipper's ``flip_mask_``).
    method, model, cv, trusted, sources, random_state, n_jobs, **method_params
        As for :class:`LabelAuditor`.

    Returns
    -------
    dict
        :func:`flipguard.metrics.detection_report` (``precision``, ``recall``,
        ``f1``, ``auroc``, ``average_precision``, ``precision_at_true_count``,
        ``n_true_flips``, ``n_flagged``) plus ``method``, ``model``,
        ``estimated_flips``, ``estimated_flip_rate``, ``true_flip_rate``,
        ``model_quality``, ``warnings`` and ``seconds``.

    Examples
    --------
    >>> from sklearn.datasets import load_breast_cancer
    >>> from flipguard.attacks import RandomFlip
    >>> from flipguard.detection import evaluate_detection
    >>> X, y = load_breast_cancer(return_X_y=True)
    >>> flipper = RandomFlip(rate=0.2, random_state=0)
    >>> _, y_bad = flipper.fit_resample(X, y)
    >>> report = evaluate_detection((X, y_bad), flipper.flip_mask_, random_state=0)
    >>> report["f1"] > 0.8
    True
    """
    from ..metrics import detection_report

    if isinstance(data, tuple):
        if len(data) != 2:
            raise DataError("data must be a LabeledDataset or a pair (X, y)")
        X, y = data
        ids = None
    else:
        X, y, ids = data.X, data.y, data.ids
    mask = np.asarray(flip_mask, dtype=bool)
    if mask.ndim != 1 or len(mask) != len(np.asarray(y)):
        raise InvalidParameterError("flip_mask must be a boolean array with one entry per row")
    start = time.perf_counter()
    auditor = LabelAuditor(model=model, method=method, cv=cv, method_params=method_params or None,
                           n_jobs=n_jobs, random_state=random_state)
    auditor.fit(X, y, trusted=trusted, sources=sources, ids=ids, embed=False)
    seconds = time.perf_counter() - start
    audit = auditor.audit_
    report = detection_report(mask, audit.scores, audit.flags)
    return {
        "method": method,
        "model": model_name(model),
        **report,
        "estimated_flips": int(audit.estimated_flips),
        "estimated_flip_rate": audit.estimated_flip_rate,
        "true_flip_rate": float(mask.mean()),
        "model_quality": audit.model_quality,
        "warnings": list(audit.warnings),
        "seconds": seconds,
    }

