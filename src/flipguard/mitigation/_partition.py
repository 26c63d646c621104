"""Deep Partition Aggregation: an ensemble whose predictions carry a certified radius.

Levine & Feizi, "Deep Partition Aggregation: Provable Defenses against General
Poisoning Attacks", ICLR 2021.
"""

from __future__ import annotations

import warnings
from numbers import Integral

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .._validation import HasMethods, Interval, StrOptions, validate_params
from ..exceptions import DataError
from ..models import MODEL_NAMES, make_model, model_name, single_threaded
from ._certificate import Certificate
from ._hashing import DEFAULT_HASH_KEY, hash_ids

__all__ = ["PartitionAggregationClassifier", "certify", "certified_radius"]

#: Below this many training rows per partition on average, the certificate warns.
SMALL_PARTITION = 10
#: Predict in parallel only for at least this many rows (below, worker start-up costs more).
PARALLEL_PREDICT_ROWS = 10_000


def certified_radius(votes: np.ndarray, *, unseen_rival: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Majority-vote prediction and its certified radius from per-class vote counts.

    Implements Theorem 1/2 of Levine & Feizi (2021).  With ``n_c`` the votes
    for class ``c`` and ties broken towards the **smaller** class index, the
    prediction is ``c = argmax_c n_c`` and its radius is::

        r = floor( (n_c - max_{c' != c} (n_{c'} + [c' < c])) / 2 )

    Each flipped training label changes at most one partition's model and so
    moves at most one vote, from ``c`` to some ``c'``: after ``r`` flips,
    ``c`` still has ``n_c - r`` votes and any rival at most ``n_{c'} + r``,
    and ``c`` keeps winning while ``n_c - r > n_{c'} + r`` or the two are
    equal and ``c < c'``.  The ``[c' < c]`` term is the tie-break
    disadvantage: a rival with a smaller index wins ties, so ``c`` needs one
    more vote of margin against it.  ``r + 1`` flips that each move a vote
    from ``c`` to the strongest rival do change the prediction, so the bound
    is tight for the vote counts (whether one flip can change a partition's
    vote depends on its model).

    The rivals are **every label the attacker can write**, not only the
    labels that happen to occur in the training data: a class of the task
    with no training row has 0 votes but is a rival all the same, and wins
    ties when its index is smaller (Theorem 1/2 of the paper range over all
    classes).  The columns of ``votes`` must therefore cover every class of
    the task; when they may not (the task's classes are unknown), pass
    ``unseen_rival=True``: one more class is assumed, with 0 votes, that
    wins every tie, so the runner-up term is at least ``0 + 1``.  This costs
    at most one flip of radius (only where every other listed class that
    wins ties against ``c`` has 0 votes, e.g. a unanimous vote for the first
    class, or for the only class of single-class training data) and makes
    the certificate hold whatever label an attacker writes.

    Parameters
    ----------
    votes : ndarray of shape (n_samples, n_classes)
        Vote counts; abstaining partitions are simply not counted.
    unseen_rival : bool, default=False
        Assume a further class with 0 votes exists that wins ties against
        every listed class (the conservative bound when the columns of
        ``votes`` may not be all the labels an attacker can write).

    Returns
    -------
    prediction : ndarray of int64, shape (n_samples,)
        Winning class index.
    radius : ndarray of int64, shape (n_samples,)
        Certified number of label flips, ``>= 0``.

    Examples
    --------
    >>> import numpy as np
    >>> from flipguard.mitigation import certified_radius
    >>> pred, r = certified_radius(np.array([[7, 3], [3, 7], [5, 5]]))
    >>> pred.tolist(), r.tolist()
    ([0, 1, 0], [2, 1, 0])
    >>> certified_radius(np.array([[4, 0]]))[1].tolist(), certified_radius(np.array([[4, 0]]), unseen_rival=True)[1].tolist()
    ([2], [1])
    """
    votes = np.asarray(votes, dtype=np.int64)
    n, n_classes = votes.shape
    pred = np.argmax(votes, axis=1)  # first maximum = smallest index wins ties
    rows = np.arange(n)
    top = votes[rows, pred]
    rival = votes + (np.arange(n_classes)[None, :] < pred[:, None])
    rival[rows, pred] = np.iinfo(np.int64).min
    second = rival.max(axis=1) if n_classes > 1 else np.zeros(n, dtype=np.int64)
    if unseen_rival:  # 0 votes, and it wins ties against every listed class
        second = np.maximum(second, 1)
    return pred.astype(np.int64), ((top - second) // 2).astype(np.int64)


def _fit_partitions(estimator, tasks) -> list:
    """Fit one model per ``(seed, X, y)`` task, BLAS/OpenMP pinned to one thread.

    A partition whose rows all have one label gets its class code instead of
    a model (it always votes that class).
    """
    out = []
    with warnings.catch_warnings(), single_threaded():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for seed, X, y in tasks:
            classes = np.unique(y)
            if len(classes) == 1:
                out.append(int(classes[0]))
            else:
                out.append(make_model(estimator, random_state=seed).fit(X, y))
    return out


def _predict_partitions(models, X) -> list[np.ndarray]:
    with single_threaded():
        return [np.asarray(m.predict(X), dtype=np.int64) for m in models]


def _chunks(items: list, n_jobs) -> list[list]:
    """Split work into a few chunks per worker (one thread-pool pin per chunk, not per model)."""
    from joblib import effective_n_jobs

    n = min(len(items), 4 * effective_n_jobs(n_jobs))
    return [[items[i] for i in idx] for idx in np.array_split(np.arange(len(items)), max(n, 1)) if len(idx)]


class PartitionAggregationClassifier(ClassifierMixin, BaseEstimator):
    """Deep Partition Aggregation (DPA): certified robustness to label flips.

    The training rows are split into ``n_partitions`` disjoint partitions by a
    keyed hash of their **id**; one model is trained per partition and a test
    point gets the class most partition models vote for (ties go to the
    smaller class index).  Since a row's partition does not depend on its
    label, flipping one training label changes at most one partition's model
    and so at most one vote.  Every prediction therefore comes with a
    certified radius ``r``: it cannot change unless more than ``r`` training
    labels are flipped (see :func:`certified_radius` for the formula with the
    tie-break).  This is the label-flipping variant (SS-DPA's partitioning by
    a hash of the unlabelled sample) of Levine & Feizi (2021).

    Parameters
    ----------
    estimator : str or scikit-learn classifier, default="logreg"
        Base model of each partition (``"logreg"``, ``"linsvm"``, ``"rf"``,
        ``"hgb"``, ``"knn"``, ``"mlp"`` or a classifier to clone).  The
        guarantee assumes it is a deterministic function of its partition's
        rows: randomised models are seeded per partition from ``random_state``
        (fix it), and rows inside a partition are ordered by their hash, so
        row order in the input does not matter.
    n_partitions : int, default=50
        Number of partitions ``k``.  More partitions give larger radii
        (at most ``k // 2``) but weaker models, each seeing about ``n / k`` rows.
    hash_key : str, bytes or int, default="flipguard-dpa-v1"
        Key of the id hash (:func:`hash_ids`); any fixed key is valid.
    random_state : int, RandomState instance or None, default=None
        Seeds the partition models (one seed per partition index, drawn
        before any data is seen).
    n_jobs : int or None, default=None
        Partitions trained (and predicted) in parallel with joblib.  Each
        partition model runs with BLAS/OpenMP pinned to one thread: models
        are small, and parallelism comes from the partitions.
    classes : array-like or None, default=None
        **Every** label of the task (what an attacker could write into a
        training label), a superset of the labels in ``y``.  The certificate
        counts each of them as a rival, also those with no training row
        (0 votes, but they win ties when their index is smaller).  Without
        it, ``classes_`` is ``np.unique(y)`` and the certificate assumes one
        more, unseen class that wins every tie (:func:`certified_radius`
        with ``unseen_rival=True``): valid whatever label is written, at
        most one flip smaller than the exact radius.  Single-class training
        data is certified that way too.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Label values (``classes`` sorted, when given); their order is the
        tie-break order.
    estimators_ : list of length n_partitions
        Fitted model of each partition; an ``int`` class code for a partition
        whose rows all have one label (it always votes that class); ``None``
        for an empty partition, which abstains.
    assumes_unseen_class_ : bool
        True when ``classes`` was not given: the certificate assumes a class
        outside ``classes_`` that wins every tie (see ``classes``).
    partition_sizes_ : ndarray of int64, shape (n_partitions,)
        Training rows per partition.
    n_empty_partitions_ : int
        Partitions that received no row.
    n_features_in_ : int
        Number of features seen in ``fit``.

    Notes
    -----
    Attack model: the attacker changes training **labels** (not features,
    not ids, not the partitioning key), possibly knowing the partitions.
    Inserting or deleting a whole row also touches a single partition, so the
    same radius covers any mix of ``r`` flips, insertions and deletions (the
    paper's general DPA theorem); flipguard's tests check label flips.

    References
    ----------
    .. [1] A. Levine and S. Feizi, "Deep Partition Aggregation: Provable
       Defenses against General Poisoning Attacks", ICLR 2021.

    Examples
    --------
    >>> from sklearn.datasets import make_classification
    >>> from flipguard.mitigation import PartitionAggregationClassifier
    >>> X, y = make_classification(600, random_state=0)
    >>> clf = PartitionAggregationClassifier(n_partitions=11, random_state=0).fit(X[:500], y[:500])
    >>> cert = clf.certify(X[500:], y[500:])
    >>> cert.max_radius <= 11 // 2
    True
    """

    _parameter_constraints: dict = {
        "estimator": [StrOptions(set(MODEL_NAMES)), HasMethods(["fit", "predict"])],
        "n_partitions": [Interval(Integral, 1, None, closed="left")],
        "hash_key": [str, bytes, Integral],
        "random_state": ["random_state"],
        "n_jobs": [Integral, None],
        "classes": ["array-like", None],
    }

    def __init__(self, estimator="logreg", *, n_partitions=50, hash_key=DEFAULT_HASH_KEY,
                 random_state=None, n_jobs=None, classes=None):
        self.estimator = estimator
        self.n_partitions = n_partitions
        self.hash_key = hash_key
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.classes = classes

    # -- fitting -------------------------------------------------------------
    def fit(self, X, y, ids=None):
        """Train one model per partition.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        ids : array-like of shape (n_samples,), optional
            Stable row ids used for partitioning.  Default: row positions,
            which makes the partitioning depend on row order; pass the id
            column for an assignment that survives re-ordering and appends.

        Returns
        -------
        self
        """
        validate_params(self)
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        if self.classes is None:
            self.classes_, codes = np.unique(y, return_inverse=True)
            self.assumes_unseen_class_ = True
        else:
            self.classes_ = _task_classes(self.classes, y)
            codes = np.searchsorted(self.classes_, y)
            self.assumes_unseen_class_ = False
        codes = codes.astype(np.int64)
        n = X.shape[0]
        if ids is None:
            ids = np.arange(n)
        elif len(ids) != n:
            raise DataError(f"ids has {len(ids)} values but X has {n} rows")
        k = int(self.n_partitions)
        h = hash_ids(ids, self.hash_key)
        part = (h % np.uint64(k)).astype(np.int64)
        order = np.lexsort((h, part))  # by partition, then by hash: independent of row order
        sizes = np.bincount(part, minlength=k)
        bounds = np.concatenate([[0], np.cumsum(sizes)])
        seeds = check_random_state(self.random_state).randint(np.iinfo(np.int32).max, size=k)
        jobs = [(i, order[bounds[i]:bounds[i + 1]]) for i in range(k) if sizes[i]]
        tasks = [(int(seeds[i]), X[rows], codes[rows]) for i, rows in jobs]
        if self.n_jobs in (None, 1):
            fitted = _fit_partitions(self.estimator, tasks)
        else:
            parts = Parallel(n_jobs=self.n_jobs)(
                delayed(_fit_partitions)(self.estimator, chunk) for chunk in _chunks(tasks, self.n_jobs))
            fitted = [m for part in parts for m in part]
        self.estimators_ = [None] * k
        for (i, _), model in zip(jobs, fitted):
            self.estimators_[i] = model
        self.partition_sizes_ = sizes.astype(np.int64)
        self.n_empty_partitions_ = int(np.sum(sizes == 0))
        return self

    # -- prediction ------------------------------------------------------------
    def vote_counts(self, X) -> np.ndarray:
        """Votes per class, shape (n_samples, n_classes); empty partitions abstain."""
        check_is_fitted(self, "estimators_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        n = X.shape[0]
        votes = np.zeros((n, len(self.classes_)), dtype=np.int64)
        models = [m for m in self.estimators_ if m is not None]
        consts = [m for m in models if isinstance(m, int)]
        if consts:
            votes += np.bincount(consts, minlength=len(self.classes_))[None, :]
        trained = [m for m in models if not isinstance(m, int)]
        if self.n_jobs in (None, 1) or len(trained) < 2 or n < PARALLEL_PREDICT_ROWS:
            preds = _predict_partitions(trained, X)
        else:
            parts = Parallel(n_jobs=self.n_jobs)(
                delayed(_predict_partitions)(chunk, X) for chunk in _chunks(trained, self.n_jobs))
            preds = [p for part in parts for p in part]
        rows = np.arange(n)
        for p in preds:
            votes[rows, p] += 1
        return votes

    def predict_proba(self, X) -> np.ndarray:
        """Vote shares: the fraction of voting partitions that chose each class."""
        votes = self.vote_counts(X)
        total = votes.sum(axis=1, keepdims=True)
        return votes / np.maximum(total, 1)

    def predict(self, X) -> np.ndarray:
        """Majority vote; ties go to the class with the smaller index in ``classes_``."""
        votes = self.vote_counts(X)
        return self.classes_[np.argmax(votes, axis=1)]

    def certify(self, X, y=None, ids=None) -> Certificate:
        """Predictions with their certified radii (and certified accuracy when ``y`` is given).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Points to certify.
        y : array-like of shape (n_samples,), optional
            Their true labels.
        ids : array-like of shape (n_samples,), optional
            Their ids, carried into the certificate.

        Returns
        -------
        Certificate
        """
        votes = self.vote_counts(X)
        # Without the task's classes, a label absent from y is still a rival (Levine & Feizi's
        # theorems range over every class): assume one that wins every tie.
        pred, radius = certified_radius(votes, unseen_rival=self.assumes_unseen_class_)
        y_true = None
        if y is not None:
            y_true = np.asarray(y)
            if y_true.shape != (votes.shape[0],):
                raise DataError(f"y has shape {y_true.shape} but X has {votes.shape[0]} rows")
        if ids is not None and len(ids) != votes.shape[0]:
            raise DataError(f"ids has {len(ids)} values but X has {votes.shape[0]} rows")
        k = int(self.n_partitions)
        notes = []
        n_train = int(self.partition_sizes_.sum())
        if n_train / k < SMALL_PARTITION:
            notes.append(f"{k} partitions of {n_train} training rows leave about {n_train / k:.1f} rows "
                         f"per partition model; fewer partitions give stronger models but smaller radii")
        if self.n_empty_partitions_:
            notes.append(f"{self.n_empty_partitions_} of {k} partitions are empty and abstain")
        return Certificate(
            predictions=self.classes_[pred], radii=radius, votes=votes, classes=self.classes_,
            n_partitions=k, n_empty_partitions=self.n_empty_partitions_, y_true=y_true,
            ids=None if ids is None else np.asarray(ids), estimator=model_name(self.estimator),
            hash_key=self.hash_key if isinstance(self.hash_key, str) else repr(self.hash_key),
            warnings=notes,
        )


def _task_classes(classes, y) -> np.ndarray:
    """``classes`` sorted and unique, checked to hold every label of ``y``."""
    out = np.unique(np.asarray(classes))
    if out.ndim != 1 or len(out) == 0:
        raise DataError("classes must be a non-empty list of the task's labels")
    seen = np.unique(y)
    try:
        pos = np.clip(np.searchsorted(out, seen), 0, len(out) - 1)
        missing = seen[out[pos] != seen]
    except TypeError:  # labels and classes of incomparable types
        missing = seen
    if len(missing):
        raise DataError(f"classes must include every label of y; missing "
                        f"{', '.join(map(str, missing[:5]))} (classes: {', '.join(map(str, out[:10]))})")
    return out


def certify(X_train, y_train, X_test, y_test=None, *, ids=None, test_ids=None, estimator="logreg",
            n_partitions: int = 50, hash_key=DEFAULT_HASH_KEY, random_state=None,
            n_jobs=None, classes=None) -> Certificate:
    """Train a :class:`PartitionAggregationClassifier` and certify its test predictions.

    Parameters
    ----------
    X_train, y_train : array-like
        Training data (labels possibly poisoned: the certificate says how many
        flips each prediction withstands).
    X_test : array-like of shape (n_test, n_features)
        Points to certify.
    y_test : array-like of shape (n_test,), optional
        Their true labels, for certified accuracy.
    ids, test_ids : array-like, optional
        Training ids (used for partitioning) and test ids (reported).
    estimator, n_partitions, hash_key, random_state, n_jobs, classes
        As in :class:`PartitionAggregationClassifier` (``classes``: every label
        of the task; without it an unseen class winning every tie is assumed).

    Returns
    -------
    Certificate

    References
    ----------
    .. [1] A. Levine and S. Feizi, "Deep Partition Aggregation: Provable
       Defenses against General Poisoning Attacks", ICLR 2021.

    Examples
    --------
    >>> from sklearn.datasets import make_classification
    >>> from flipguard.mitigation import certify
    >>> X, y = make_classification(600, random_state=0)
    >>> cert = certify(X[:500], y[:500], X[500:], y[500:], n_partitions=21, random_state=0)
    >>> [round(p["certified_accuracy"], 2) >= 0 for p in cert.curve()][:2]
    [True, True]
    """
    clf = PartitionAggregationClassifier(estimator, n_partitions=n_partitions, hash_key=hash_key,
                                         random_state=random_state, n_jobs=n_jobs, classes=classes)
    clf.fit(X_train, y_train, ids=ids)
    return clf.certify(X_test, y_test, ids=test_ids)
