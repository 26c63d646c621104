"""Clean-holdout accuracy before and after each mitigation."""

from __future__ import annotations

import time

import numpy as np
from sklearn.metrics import balanced_accuracy_score, f1_score
from sklearn.utils import check_random_state

from ..detection import make_detector
from ..exceptions import DataError, InvalidParameterError
from ..models import model_name, out_of_fold_proba
from ._robust import DEFAULT_DETECTOR, RobustClassifier
from ._strategies import STRATEGIES, accepts_sample_weight, fit_model

__all__ = ["BASELINES", "evaluate_mitigation"]

#: Entries of ``strategies`` that are not mitigation strategies.
BASELINES = {
    "none": "the plain model trained on the poisoned labels",
    "blind_drop": "drop every flagged row: no caps, no usability check, no guard (naive sanitisation)",
}


def evaluate_mitigation(X_train, y_train_poisoned, X_holdout, y_holdout, *,
                        strategies=("none", "drop", "relabel", "weight", "loss_correction"),
                        model="logreg", detector=DEFAULT_DETECTOR, guard: bool = True, trusted=None,
                        random_state=None, n_jobs=None) -> dict[str, dict]:
    """Train with each mitigation on poisoned labels and score on a clean holdout.

    Parameters
    ----------
    X_train, y_train_poisoned : array-like
        Training data with possibly flipped labels.
    X_holdout, y_holdout : array-like
        A holdout with **clean** labels (the truth).
    strategies : sequence of str
        Any of ``"none"`` (plain model), ``"blind_drop"`` (drop every flagged
        row without caps or guard, for comparison), ``"drop"``,
        ``"relabel"``, ``"weight"``, ``"loss_correction"``
        (:class:`RobustClassifier` strategies).
    model : str or classifier, default="logreg"
    detector : str or detector, default="auto"
    guard : bool, default=True
        Passed to :class:`RobustClassifier`.
    trusted : optional
        Passed to :meth:`RobustClassifier.fit`.
    random_state : int, RandomState instance or None
        One seed for every strategy (each gets the same folds and models).
    n_jobs : int or None

    Returns
    -------
    dict
        ``{strategy: {"accuracy", "balanced_accuracy", "f1_macro",
        "delta_accuracy" (vs "none" when evaluated), "fallback", "reason",
        "n_dropped", "n_relabelled", "n_reweighted", "skipped", "seconds"}}``
        in the order of ``strategies``.  ``"weight"`` with a model whose fit
        takes no sample weights is skipped (metrics None).

    Examples
    --------
    >>> from sklearn.datasets import make_classification
    >>> from flipguard.attacks import TargetedFlip
    >>> from flipguard.mitigation import evaluate_mitigation
    >>> X, y = make_classification(1500, random_state=0)
    >>> _, y_bad = TargetedFlip(source=1, target=0, rate=0.4, random_state=0).fit_resample(X[:1000], y[:1000])
    >>> res = evaluate_mitigation(X[:1000], y_bad, X[1000:], y[1000:], strategies=("none", "relabel"),
    ...                           random_state=0)
    >>> res["relabel"]["accuracy"] > res["none"]["accuracy"]
    True
    """
    unknown = [s for s in strategies if s not in STRATEGIES and s not in BASELINES]
    if unknown:
        raise InvalidParameterError(f"Unknown mitigation strategy {unknown[0]!r}; choose from "
                                    f"{', '.join(sorted(set(STRATEGIES) | set(BASELINES)))}.")
    X_train = np.asarray(X_train, dtype=np.float64)
    X_holdout = np.asarray(X_holdout, dtype=np.float64)
    y_train = np.asarray(y_train_poisoned)
    y_holdout = np.asarray(y_holdout)
    if len(X_train) != len(y_train) or len(X_holdout) != len(y_holdout):
        raise DataError("X and y must have the same number of rows (training and holdout)")
    seed = int(check_random_state(random_state).randint(np.iinfo(np.int32).max))
    labels = np.unique(np.concatenate([y_train, y_holdout]))
    results: dict[str, dict] = {}
    for name in strategies:
        t0 = time.perf_counter()
        info = {"fallback": False, "reason": BASELINES.get(name, ""), "n_dropped": 0,
                "n_relabelled": 0, "n_reweighted": 0}
        if name == "none":
            classes, codes = np.unique(y_train, return_inverse=True)
            est = fit_model(model, X_train, codes, random_state=seed)
            pred = classes[np.asarray(est.predict(X_holdout), dtype=np.int64)]
        elif name == "blind_drop":
            pred, info["n_dropped"] = _blind_drop(X_train, y_train, X_holdout, model, detector, seed, n_jobs)
        elif name == "weight" and not accepts_sample_weight(model):
            results[name] = {"accuracy": None, "balanced_accuracy": None, "f1_macro": None,
                             **info, "skipped": True,
                             "reason": f"{model_name(model)} does not accept sample weights",
                             "seconds": 0.0}
            continue
        else:
            clf = RobustClassifier(model, strategy=name, detector=detector, guard=guard,
                                   random_state=seed, n_jobs=n_jobs).fit(X_train, y_train, trusted=trusted)
            pred = clf.predict(X_holdout)
            info.update(fallback=bool(clf.fallback_), reason=clf.reason_, n_dropped=clf.n_dropped_,
                        n_relabelled=clf.n_relabelled_, n_reweighted=clf.n_reweighted_)
        results[name] = {
            "accuracy": float(np.mean(pred == y_holdout)),
            "balanced_accuracy": float(balanced_accuracy_score(y_holdout, pred)),
            "f1_macro": float(f1_score(y_holdout, pred, labels=labels, average="macro", zero_division=0)),
            **info,
            "skipped": False,
            "seconds": time.perf_counter() - t0,
        }
    if "none" in results:
        base = results["none"]["accuracy"]
        for r in results.values():
            r["delta_accuracy"] = None if r["accuracy"] is None else r["accuracy"] - base
    return results


def _blind_drop(X, y, X_holdout, model, detector, seed, n_jobs):
    classes, codes = np.unique(y, return_inverse=True)
    probs = out_of_fold_proba(model, X, codes, random_state=seed, n_jobs=n_jobs)
    det = make_detector(detector) if isinstance(detector, str) else detector
    audit = det.audit(codes, probs, X=X, random_state=seed)
    keep = ~np.asarray(audit.flags, dtype=bool)
    if len(np.unique(codes[keep])) < 2:
        keep[:] = True
    est = fit_model(model, X[keep], codes[keep], random_state=seed)
    return classes[np.asarray(est.predict(X_holdout), dtype=np.int64)], int(np.count_nonzero(~keep))
