"""Entry points: ``find_flipped_labels``, ``LabelAuditor``, ``audit_dataset``, ``evaluate_detection``."""

from __future__ import annotations

import time
from numbers import Integral
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state

from .._validation import HasMethods, Interval, StrOptions, validate_params
from ..exceptions import DataError, InvalidParameterError
from ..models import MODEL_NAMES, model_name, out_of_fold_proba, single_threaded
from ._audit import LabelAudit
from ._base import TrustedLabels, make_detector

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
    >>> audit = find_flipped_labels(labels, probs, classes=["ham", "spam"])
    >>> audit.flagged_indices.tolist(), audit.transition_list()
    ([3, 60, 61], [{'from': 'spam', 'to': 'ham', 'count': 2}, {'from': 'ham', 'to': 'spam', 'count': 1}])
    """
    detector = make_detector(method, **params)
    return detector.audit(labels, pred_probs, X=X, trusted=trusted, sources=sources, classes=classes,
                          ids=ids, random_state=random_state)


class LabelAuditor(BaseEstimator):
    """Estimator wrapper: out-of-fold probabilities from ``model``, then a detector.

    ``fit(X, y)`` computes out-of-fold probabilities with
    :func:`flipguard.models.out_of_fold_proba` (seeded, stratified folds,
    BLAS pinned to one thread) when the method needs them, runs the
    detector, and stores the :class:`LabelAudit` as ``audit_`` with 2-D
    coordinates of every row for plotting.

    Parameters
    ----------
    model : str or scikit-learn classifier, default="logreg"
        Model for the out-of-fold probabilities (logreg, linsvm, rf, hgb,
        knn, mlp, or any classifier).
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
        The out-of-fold probabilities.
    audit_ : LabelAudit
    detector_ : BaseDetector
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
        "model": [StrOptions(set(MODEL_NAMES)), HasMethods(["fit", "predict"])],
        "method": [str],
        "cv": [Interval(Integral, 2, None, closed="left")],
        "method_params": [dict, None],
        "n_jobs": [Integral, None],
        "random_state": ["random_state"],
    }

    def __init__(self, *, model="logreg", method="auto", cv=5, method_params=None, n_jobs=None,
                 random_state=None):
        self.model = model
        self.method = method
        self.cv = cv
        self.method_params = method_params
        self.n_jobs = n_jobs
        self.random_state = random_state

    def fit(self, X, y, *, trusted: TrustedLabels | None = None, sources=(), ids=None,
            embed: bool = True):
        """Audit the labels ``y`` of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            Labels in any vocabulary (strings, integers, booleans).
        trusted : TrustedLabels, optional
            Verified labels; ``trusted.y`` are codes into ``numpy.unique(y)``.
        sources : sequence of LabelSource
        ids : array-like, optional
            Row ids for the result.
        embed : bool, default=True
            Compute 2-D coordinates (``audit_.embedding``).
        """
        validate_params(self)
        X = np.asarray(X, dtype=np.float64)
        y_arr = np.asarray(y)
        if X.ndim != 2 or y_arr.ndim != 1 or X.shape[0] != y_arr.shape[0]:
            raise DataError(f"X must be 2-D and y 1-D with one label per row (got X {X.shape}, "
                            f"y {y_arr.shape})")
        classes, codes = np.unique(y_arr, return_inverse=True)
        if len(classes) < 2:
            raise DataError("y has a single class; auditing needs at least two")
        self.classes_ = classes
        self.n_features_in_ = X.shape[1]
        rng = check_random_state(self.random_state)
        detector = make_detector(self.method, **(self.method_params or {}))
        if "random_state" in detector.get_params() and detector.get_params()["random_state"] is None:
            detector.set_params(random_state=rng.randint(_SEED_MAX))
        self.detector_ = detector
        oof_seed = rng.randint(_SEED_MAX)
        self.pred_probs_ = None
        if detector.needs_pred_probs:
            with single_threaded():
                self.pred_probs_ = out_of_fold_proba(self.model, X, codes, cv=self.cv,
                                                     random_state=oof_seed, n_jobs=self.n_jobs)
        audit = detector.audit(codes, self.pred_probs_, X=X, trusted=trusted, sources=sources,
                               classes=classes, ids=ids,
                               quality={"model": model_name(self.model), "cv": self.cv})
        if embed:
            audit.embedding, audit.embedding_axes = embed_2d(X)
        self.audit_ = audit
        return self


def audit_dataset(dataset, *, method: str = "auto", model="logreg", cv: int = 5,
                  trusted: TrustedLabels | None = None, sources=(), method_params=None,
                  n_jobs=None, random_state=None, embed: bool = True) -> LabelAudit:
    """Audit a :class:`~flipguard.data.LabeledDataset` (what ``flipguard audit`` runs).

    The result speaks the dataset's label values and ids; see
    :class:`LabelAuditor` for the parameters.
    """
    counts = np.bincount(dataset.y, minlength=dataset.n_classes)
    if np.count_nonzero(counts) < 2:
        raise DataError(f"{dataset.source}: label column '{dataset.label_name}' has a single class; "
                        "auditing needs at least two")
    if counts.min() == 0:
        raise DataError(f"{dataset.source}: every class must have at least one row "
                        f"(no rows labelled {dataset.classes[np.argmin(counts)]!r})")
    auditor = LabelAuditor(model=model, method=method, cv=cv, method_params=method_params,
                           n_jobs=n_jobs, random_state=random_state)
    # Fit on codes so trusted codes and sources line up with dataset.classes.
    auditor.fit(dataset.X, dataset.y, trusted=trusted, sources=sources, ids=dataset.ids, embed=False)
    audit = auditor.audit_
    audit.classes = np.asarray(dataset.classes)
    if embed:
        audit.embedding, audit.embedding_axes = embed_2d(dataset.X, dataset.feature_names)
    return audit


def embed_2d(X, feature_names=None) -> tuple[np.ndarray, list[str]]:
    """2-D coordinates of every row for plotting: the two features themselves when
    there are two, else the first two principal components of the standardised
    features (computed from the correlation matrix, without copying ``X``)."""
    X = np.asarray(X, dtype=np.float64)
    n, d = X.shape
    names = list(feature_names) if feature_names is not None else [f"x{j}" for j in range(d)]
    if d == 1:
        return np.column_stack([X[:, 0], np.zeros(n)]), [names[0], "-"]
    if d == 2:
        return X.copy(), names[:2]
    with single_threaded():
        mu = X.mean(axis=0)
        sd = X.std(axis=0)
        sd[sd == 0] = 1.0
        gram = X.T @ X / n - np.outer(mu, mu)
        corr = gram / np.outer(sd, sd)
        vals, vecs = np.linalg.eigh(corr)
        order = np.argsort(vals)[::-1][:2]
        V = vecs[:, order]
        V *= np.where(V[np.argmax(np.abs(V), axis=0), [0, 1]] < 0, -1.0, 1.0)  # deterministic signs
        share = vals[order] / max(vals.sum(), 1e-300)
        coords = X @ (V / sd[:, None]) - (mu / sd) @ V
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

