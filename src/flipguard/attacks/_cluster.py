"""Flip whole coherent regions: k-means clusters of a class, relabelled together."""

from __future__ import annotations

from numbers import Integral

import numpy as np
from sklearn.cluster import KMeans, MiniBatchKMeans

from .._validation import Interval
from ..exceptions import InvalidParameterError
from ..models import single_threaded
from ._base import BaseFlipper, Budget, register

__all__ = ["ClusterFlip"]

_SEED_MAX = np.iinfo(np.int32).max
#: Classes with more rows than this are clustered with MiniBatchKMeans.
MINIBATCH_ABOVE = 50_000


@register("cluster")
class ClusterFlip(BaseFlipper):
    """Relabel whole clusters of a class, so the flipped labels form coherent regions.

    The rows of each class (or of ``source`` only) are clustered with k-means
    on standardised features.  Clusters are visited in a seeded random order
    and flipped whole until the budget is spent; the last one is flipped
    partially, taking its rows nearest to its centroid, so the flipped region
    stays one compact blob.  A flipped cluster becomes ``target`` when given,
    else the class whose centroid is nearest to the cluster's centroid.

    This is the attack behind the seeds' "illusion of high validation
    accuracy": random flips are unlearnable noise, but a region consistently
    relabelled is a *pattern* a flexible model learns.  A validation split
    drawn from the same poisoned store agrees with it, so validation accuracy
    stays high, while on clean data the model is wrong on the whole region.
    The same reasoning underlies cluster-based and "correlated cluster" label
    flips against SVMs (Xiao et al., 2015, whose ALFASVMLib ships a
    correlated-clusters attacker).

    Parameters
    ----------
    n_clusters : int, default=8
        Clusters per class (fewer when a class has fewer rows).
    max_fit_samples : int, default=100_000
        k-means is fitted on at most this many rows of a class (a seeded
        random subsample); every row is then assigned to its nearest centroid.
    source : label, default=None
        Only cluster and flip this class; the budget (``rate`` /
        ``n_flips``) then counts rows of this class, as in
        :class:`TargetedFlip`.  Default: every class (except ``target``).
    target : label, default=None
        Class every flipped cluster becomes.  Default: per cluster, the
        nearest other class centroid.  When given without ``source``, the
        target class's own rows are not flipped and the budget counts the
        other rows.
    rate : float in (0, 1] or dict, default=0.1
        Fraction of rows (or per class with a dict) to flip.
    n_flips : int or dict, default=None
        Exact number of flips instead of a rate.
    random_state : int, RandomState instance or None, default=None
        Seeds k-means and the order in which clusters are visited.

    Attributes
    ----------
    clusters_ : list of dict
        One entry per flipped cluster, in visiting order: ``label`` (its
        class), ``cluster`` (index within the class's k-means), ``size``,
        ``n_flipped`` (``< size`` only for the last, partial one),
        ``new_label``.
    (plus the attributes of :class:`BaseFlipper`)

    Notes
    -----
    Classes with more than 50,000 rows are clustered with
    :class:`~sklearn.cluster.MiniBatchKMeans` (seeded), smaller ones with
    :class:`~sklearn.cluster.KMeans` (seeded, one k-means++ start), in
    both cases on at most ``max_fit_samples`` rows and single-threaded
    (k-means' OpenMP threads slow down badly on a busy machine).  A class is
    only clustered when the visit order reaches one of its clusters.

    References
    ----------
    .. [1] H. Xiao, B. Biggio, B. Nelson, H. Xiao, C. Eckert, F. Roli,
       "Support Vector Machines under Adversarial Label Contamination",
       Neurocomputing 160, 2015.

    Examples
    --------
    >>> from flipguard.attacks import ClusterFlip
    >>> from flipguard.data import make_sentiment_reviews
    >>> ds = make_sentiment_reviews(400, random_state=0)
    >>> flipper = ClusterFlip(rate=0.2, n_clusters=4, random_state=0)
    >>> _, y_bad = flipper.fit_resample(ds.X, ds.y)
    >>> flipper.n_flips_, sum(c["n_flipped"] for c in flipper.clusters_)
    (80, 80)
    """

    _parameter_constraints = {**BaseFlipper._parameter_constraints,
                              "n_clusters": [Interval(Integral, 1, None, closed="left")],
                              "max_fit_samples": [Interval(Integral, 1, None, closed="left")],
                              "source": "no_validation", "target": "no_validation"}
    _needs_X = True

    def __init__(self, *, n_clusters=8, source=None, target=None, max_fit_samples=100_000, rate=0.1,
                 n_flips=None, random_state=None):
        super().__init__(rate=rate, n_flips=n_flips, random_state=random_state)
        self.n_clusters = n_clusters
        self.max_fit_samples = max_fit_samples
        self.source = source
        self.target = target

    def _flip(self, X, y, n_classes: int, budget: Budget, rng):
        K = n_classes
        s = self._code(self.source, "source") if self.source is not None else None
        t = self._code(self.target, "target") if self.target is not None else None
        if s is not None and s == t:
            raise InvalidParameterError(f"ClusterFlip: source and target are the same class "
                                        f"({self.classes_[s:s + 1].tolist()[0]!r})")
        if s is not None:
            attacked = [s]
        else:
            attacked = [c for c in range(K) if c != t]
        if len(attacked) < K:
            budget = self._resolve_budget(y, K, eligible=np.isin(y, attacked))
        counts = np.bincount(y, minlength=K)

        mu = X.mean(axis=0)
        sd = X.std(axis=0)
        sd[sd == 0] = 1.0
        class_centroids = (_class_means(X, y, K) - mu) / sd
        seeds = rng.randint(_SEED_MAX, size=K)
        pairs = np.array([(c, k) for c in attacked for k in range(self._k(counts[c]))])
        visit = pairs[rng.permutation(len(pairs))]

        pooled = budget.per_class is None
        left = budget.total if pooled else budget.per_class.astype(np.int64).copy()
        fitted: dict[int, tuple] = {}
        rows_out, new_out, record = [], [], []
        for c, k in visit:
            c, k = int(c), int(k)
            want = left if pooled else int(left[c])
            if want <= 0:
                if pooled:
                    break
                continue
            if c not in fitted:
                fitted[c] = self._cluster_class(X, y, c, mu, sd, int(seeds[c]))
            members, assign, Z, centers = fitted[c]
            in_k = assign == k
            rows = members[in_k]
            if len(rows) == 0:  # an empty (mini-batch) cluster
                continue
            if len(rows) > want:  # partial: the rows nearest the centroid
                dist = ((Z[in_k] - centers[k]) ** 2).sum(axis=1)
                rows = rows[np.argsort(dist, kind="stable")[:want]]
            if t is not None:
                dest = t
            else:
                d2 = ((class_centroids - centers[k]) ** 2).sum(axis=1)
                d2[c] = np.inf
                dest = int(np.argmin(d2))
            rows_out.append(rows)
            new_out.append(np.full(len(rows), dest, dtype=np.int64))
            record.append({"label": self.classes_[c:c + 1].tolist()[0], "cluster": k,
                           "size": int(in_k.sum()), "n_flipped": int(len(rows)),
                           "new_label": self.classes_[dest:dest + 1].tolist()[0]})
            if pooled:
                left -= len(rows)
            else:
                left[c] -= len(rows)
        self.clusters_ = record
        if not rows_out:
            return np.array([], dtype=np.int64), np.array([], dtype=np.int64)
        return np.concatenate(rows_out), np.concatenate(new_out)

    def _cluster_class(self, X, y, c: int, mu, sd, seed: int):
        members = np.flatnonzero(y == c)
        Z = (X[members] - mu) / sd
        k = self._k(len(members))
        rs = np.random.RandomState(seed)
        if len(members) > MINIBATCH_ABOVE:
            km = MiniBatchKMeans(n_clusters=k, random_state=rs.randint(_SEED_MAX), n_init=1,
                                 batch_size=4096)
        else:
            km = KMeans(n_clusters=k, random_state=rs.randint(_SEED_MAX), n_init=1)
        fit_on = Z
        if len(members) > self.max_fit_samples:
            fit_on = Z[np.sort(rs.choice(len(members), size=self.max_fit_samples, replace=False))]
        with single_threaded():
            km.fit(fit_on)
            assign = km.predict(Z)
        return members, assign, Z, km.cluster_centers_

    def _k(self, n_rows: int) -> int:
        return int(min(self.n_clusters, n_rows, self.max_fit_samples))

    def _code(self, label, name: str) -> int:
        hit = np.flatnonzero(self.classes_.astype(str) == str(label))
        if len(hit) == 0:
            raise InvalidParameterError(f"ClusterFlip: {name} class {label!r} is not in y "
                                        f"(classes: {', '.join(map(str, self.classes_))})")
        return int(hit[0])


def _class_means(X: np.ndarray, y: np.ndarray, K: int) -> np.ndarray:
    """Per-class feature means, shape (K, n_features), one pass per feature."""
    counts = np.bincount(y, minlength=K).astype(np.float64)
    sums = np.column_stack([np.bincount(y, weights=X[:, j], minlength=K) for j in range(X.shape[1])])
    return sums / counts[:, None]
