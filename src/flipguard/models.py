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

__all__ = [
    "AUTO_CANDIDATES",
    "MODEL_NAMES",
    "auto_out_of_fold_proba",
    "make_model",
    "out_of_fold_proba",
    "predict_scores",
    "select_model",
    "single_threaded",
]


def make_model(model="logreg", random_state=None, *, sparse: bool = False):
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
    sparse : bool, default=False
        The model will see a scipy sparse matrix (e.g. TF-IDF): standardising
        models scale without centring (centring would make it dense), and
        ``"hgb"``, which needs dense input, densifies it first.
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
        if sparse and type(est).__name__.startswith("HistGradientBoosting"):  # dense input only
            from sklearn.preprocessing import FunctionTransformer

            return make_pipeline(FunctionTransformer(_dense, accept_sparse=True), est)
        return est
    if sparse and model == "hgb":
        from sklearn.preprocessing import FunctionTransformer

        return make_pipeline(FunctionTransformer(_dense, accept_sparse=True),
                             make_model("hgb", random_state=seed))
    if model == "logreg":
        from sklearn.linear_model import LogisticRegression

        return make_pipeline(StandardScaler(with_mean=not sparse), LogisticRegression(max_iter=1000))
    if model == "linsvm":
        from sklearn.svm import LinearSVC

        return make_pipeline(StandardScaler(with_mean=not sparse), LinearSVC(random_state=seed))
    if model == "rf":
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(n_estimators=100, n_jobs=1, random_state=seed)
    if model == "hgb":
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(random_state=seed)
    if model == "knn":
        from sklearn.neighbors import KNeighborsClassifier

        return make_pipeline(StandardScaler(with_mean=not sparse), KNeighborsClassifier(n_neighbors=15))
    if model == "mlp":
        from sklearn.neural_network import MLPClassifier

        return make_pipeline(StandardScaler(with_mean=not sparse), MLPClassifier(hidden_layer_sizes=(64,), max_iter=300,
                                                             early_stopping=True, random_state=seed))
    raise InvalidParameterError(f"Unknown model {model!r}; choose one of {', '.join(MODEL_NAMES)} "
                                "or pass a scikit-learn classifier.")


def _dense(X):
    return X.toarray() if hasattr(X, "toarray") else X


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
    est = make_model(model, random_state=rs.randint(np.iinfo(np.int32).max), sparse=_is_sparse(X))
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


def _is_sparse(X) -> bool:
    return not isinstance(X, np.ndarray) and hasattr(X, "tocsr")


#: Candidates of ``model="auto"`` (:func:`select_model`), cheapest first.
AUTO_CANDIDATES = ("logreg", "knn", "hgb")


def select_model(X, y, *, candidates=AUTO_CANDIDATES, cv: int = 5, max_samples: int = 4000,
                 time_budget: float = 15.0, random_state=None, n_jobs=None) -> dict:
    """Choose the model whose out-of-fold probabilities fit the labels best (``model="auto"``).

    Every candidate is scored by its out-of-fold log-loss (a proper scoring
    rule, so the choice rewards calibrated as well as accurate
    probabilities; Gneiting & Raftery 2007) on a seeded, stratified
    subsample of at most ``max_samples`` rows, with the same folds for all.
    A candidate whose projected cost on all rows (its subsample time scaled
    by the number of rows; squared for neighbours) exceeds ``time_budget``
    seconds is not chosen, except ``logreg``, the fallback.  Candidates
    that fail (e.g. ``hgb`` on very wide sparse input) are skipped, and so
    is every candidate once ``logreg`` (the cheapest, tried first) already
    projects beyond the budget.

    Returns
    -------
    dict
        ``model`` (the name chosen), ``reason`` (one sentence),
        ``candidates`` (name -> ``log_loss``, ``seconds``, ``projected_seconds``,
        ``eligible``), ``rows`` (the subsample size) and ``pred_probs``: the
        chosen model's out-of-fold probabilities when the subsample is the
        whole data (else None; compute them with :func:`out_of_fold_proba`).

    References
    ----------
    .. [1] T. Gneiting, A. E. Raftery. "Strictly proper scoring rules,
       prediction, and estimation". JASA 102, 2007.
    """

    y = np.asarray(y, dtype=np.int64)
    n = len(y)
    rs = check_random_state(random_state)
    seed = rs.randint(np.iinfo(np.int32).max)
    if n > max_samples:
        # Stratified: every class keeps its share, and at least cv rows where it has them.
        counts = np.bincount(y)
        take = np.maximum(np.round(counts * max_samples / n).astype(int), np.minimum(counts, cv))
        order = rs.permutation(n)
        ranks = np.empty(n, dtype=np.int64)
        ys = y[order]
        # rank of each row within its class in the permuted order (vectorised)
        sort = np.argsort(ys, kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        within = np.empty(n, dtype=np.int64)
        within[sort] = np.arange(n) - np.repeat(starts, counts)
        ranks[order] = within
        rows = np.flatnonzero(ranks < take[y])
    else:
        rows = np.arange(n)
    Xs = X[rows]
    ys = y[rows]
    m = len(rows)
    wide_sparse = _is_sparse(X) and X.shape[1] > 1000
    with single_threaded():  # candidates run one after another; BLAS/OpenMP pools only fight the load
        report, best, best_loss, best_probs = _score_candidates(
            candidates, Xs, ys, n, m, cv, seed, n_jobs, time_budget, wide_sparse)
    if best is None:
        best = "logreg"
    others = {k: v["log_loss"] for k, v in report.items() if k != best and v.get("log_loss") is not None}
    reason = (f"lowest out-of-fold log-loss ({best_loss:.4f}) on {m:,} rows"
              + (f" against {', '.join(f'{k} {v:.4f}' for k, v in others.items())}" if others else ""))
    skipped = [k for k, v in report.items() if not v["eligible"]]
    if skipped:
        reason += f"; not eligible: {', '.join(skipped)} (time budget {time_budget:g} s or input)"
    return {"model": best, "reason": reason, "candidates": report, "rows": int(m),
            "pred_probs": best_probs if m == n else None}


def _score_candidates(candidates, Xs, ys, n, m, cv, seed, n_jobs, time_budget, wide_sparse):
    import time

    report: dict = {}
    best, best_loss, best_probs = None, np.inf, None
    cheapest_projection = 0.0
    for name in candidates:
        if cheapest_projection > time_budget:
            # Candidates come cheapest first: when a cheaper one already overruns the
            # budget on all rows, a costlier one cannot fit it; do not even try.
            report[name] = {"log_loss": None, "seconds": 0.0, "projected_seconds": None,
                            "eligible": False, "note": "skipped: a cheaper candidate already overruns the budget"}
            continue
        if name == "hgb" and wide_sparse:
            report[name] = {"log_loss": None, "seconds": 0.0, "projected_seconds": None,
                            "eligible": False, "note": "skipped: wide sparse input"}
            continue
        start = time.perf_counter()
        try:
            probs = out_of_fold_proba(_auto_model(name), Xs, ys, cv=cv, random_state=seed, n_jobs=n_jobs)
        except (ValueError, MemoryError) as exc:  # a candidate that cannot fit this data
            report[name] = {"log_loss": None, "seconds": time.perf_counter() - start,
                            "projected_seconds": None, "eligible": False, "note": str(exc)[:120]}
            continue
        seconds = time.perf_counter() - start
        scale = n / m
        projected = seconds * (scale ** 2 if name == "knn" else scale)
        loss = float(-np.mean(np.log(np.clip(probs[np.arange(m), ys], 1e-6, 1.0))))
        eligible = name == "logreg" or projected <= time_budget
        cheapest_projection = max(cheapest_projection, projected) if name == "logreg" else cheapest_projection
        report[name] = {"log_loss": round(loss, 5), "seconds": round(seconds, 3),
                        "projected_seconds": round(projected, 2), "eligible": bool(eligible)}
        if eligible and loss < best_loss - 1e-9:
            best, best_loss, best_probs = name, loss, probs
    return report, best, best_loss, best_probs


def _auto_model(name: str):
    """The candidate estimators of ``model="auto"``: the built-in shortcuts, with early stopping
    for gradient boosting so small tables do not pay for 100 boosting rounds."""
    if name == "hgb":
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(early_stopping=True)
    return name


def auto_out_of_fold_proba(X, y, *, cv: int = 5, random_state=None, n_jobs=None,
                           time_budget: float = 15.0) -> tuple[np.ndarray, dict]:
    """``model="auto"``: :func:`select_model`, then the chosen model's out-of-fold probabilities.

    Returns ``(pred_probs, selection)`` where ``selection`` is the dict of
    :func:`select_model` without ``pred_probs``.
    """
    rs = check_random_state(random_state)
    choice = select_model(X, y, cv=cv, random_state=rs.randint(np.iinfo(np.int32).max),
                          n_jobs=n_jobs, time_budget=time_budget)
    probs = choice.pop("pred_probs")
    if probs is None:
        with single_threaded():
                probs = out_of_fold_proba(_auto_model(choice["model"]), X, y, cv=cv,
                                      random_state=rs.randint(np.iinfo(np.int32).max), n_jobs=n_jobs)
    return probs, choice
