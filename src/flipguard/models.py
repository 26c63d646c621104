"""Model names -> scikit-learn estimators, and out-of-fold probabilities.

Shared by attacks (surrogate models), detectors (out-of-sample probabilities)
and the assessment (victim models).  Any scikit-learn classifier can be passed
wherever a name is accepted.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import clone, is_classifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import check_random_state
from threadpoolctl import threadpool_limits

from ._names import MODEL_NAMES
from .exceptions import InvalidParameterError

__all__ = ["MODEL_NAMES", "make_model", "out_of_fold_proba", "predict_scores", "single_threaded"]


def make_model(model="logreg", random_state=None):
    """A fresh, unfitted classifier.

    Parameters
    ----------
    model : str or scikit-learn classifier, default="logreg"
        ``"logreg"`` (standardised logistic regression), ``"linsvm"``
        (standardised linear SVM), ``"rf"`` (random forest, 100 trees),
        ``"hgb"`` (histogram gradient boosting), ``"knn"`` (standardised
        15-nearest neighbours), ``"mlp"`` (standardised multi-layer
        perceptron), or any classifier, which is cloned.
    random_state : int, RandomState instance or None
        Seeds the model's own randomness where it has any.
    """
    seed = check_random_state(random_state).randint(np.iinfo(np.int32).max) \
        if random_state is not None else None
    if not isinstance(model, str):
        if not (is_classifier(model) or hasattr(model, "predict")):
            raise InvalidParameterError(f"model must be one of {', '.join(MODEL_NAMES)} or a "
                                        f"scikit-learn classifier. Got {model!r} instead.")
        est = clone(model)
        if seed is not None and "random_state" in est.get_params():
            est.set_params(random_state=seed)
        return est
    if model == "logreg":
        from sklearn.linear_model import LogisticRegression

        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    if model == "linsvm":
        from sklearn.svm import LinearSVC

        return make_pipeline(StandardScaler(), LinearSVC(random_state=seed))
    if model == "rf":
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(n_estimators=100, n_jobs=1, random_state=seed)
    if model == "hgb":
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(random_state=seed)
    if model == "knn":
        from sklearn.neighbors import KNeighborsClassifier

        return make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=15))
    if model == "mlp":
        from sklearn.neural_network import MLPClassifier

        return make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(64,), max_iter=300,
                                                             early_stopping=True, random_state=seed))
    raise InvalidParameterError(f"Unknown model {model!r}; choose one of {', '.join(MODEL_NAMES)} "
                                "or pass a scikit-learn classifier.")


def model_name(model) -> str:
    return model if isinstance(model, str) else type(model).__name__


def single_threaded():
    """Context manager pinning BLAS/OpenMP pools to one thread (for parallel workers)."""
    return threadpool_limits(limits=1)


def predict_scores(estimator, X, n_classes: int) -> np.ndarray:
    """Class probabilities of a fitted classifier, shape (n_samples, n_classes).

    Uses ``predict_proba`` when available, else a softmax of ``decision_function``
    (a logistic of it for two classes).  Columns follow codes ``0..n_classes-1``
    even if the model saw fewer classes during fitting.
    """
    if hasattr(estimator, "predict_proba"):
        p = estimator.predict_proba(X)
    else:
        d = estimator.decision_function(X)
        if d.ndim == 1:
            p1 = 1.0 / (1.0 + np.exp(-d))
            p = np.column_stack([1.0 - p1, p1])
        else:
            e = np.exp(d - d.max(axis=1, keepdims=True))
            p = e / e.sum(axis=1, keepdims=True)
    seen = np.asarray(estimator.classes_, dtype=np.int64)
    if p.shape[1] == n_classes and np.array_equal(seen, np.arange(n_classes)):
        return p
    full = np.zeros((p.shape[0], n_classes))
    full[:, seen] = p
    return full


def out_of_fold_proba(model, X, y, *, cv: int = 5, random_state=None, n_jobs=None) -> np.ndarray:
    """Out-of-fold predicted probabilities (each row predicted by a model that never saw it).

    Stratified, shuffled, seeded folds; the number of folds shrinks to the
    smallest class size when a class has fewer than ``cv`` rows.

    Returns
    -------
    ndarray of shape (n_samples, n_classes)
        Columns in label-code order ``0 .. n_classes - 1``.
    """
    y = np.asarray(y)
    n_classes = int(y.max()) + 1
    smallest = np.bincount(y, minlength=n_classes)
    smallest = smallest[smallest > 0].min()
    n_splits = int(max(2, min(cv, smallest)))
    rs = check_random_state(random_state)
    folds = StratifiedKFold(n_splits=n_splits, shuffle=True,
                            random_state=rs.randint(np.iinfo(np.int32).max))
    est = make_model(model, random_state=rs.randint(np.iinfo(np.int32).max))
    method = "predict_proba" if hasattr(est, "predict_proba") else "decision_function"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if n_jobs not in (None, 1):
            with single_threaded():
                raw = cross_val_predict(est, X, y, cv=folds, method=method, n_jobs=n_jobs)
        else:
            raw = cross_val_predict(est, X, y, cv=folds, method=method)
    if method == "predict_proba":
        return raw
    if raw.ndim == 1:
        p1 = 1.0 / (1.0 + np.exp(-raw))
        return np.column_stack([1.0 - p1, p1])
    e = np.exp(raw - raw.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)
