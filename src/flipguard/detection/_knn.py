"""k-nearest-neighbour label consistency (Paudice, Munoz-Gonzalez & Lupu, 2018)."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from sklearn.neighbors import NearestNeighbors

from .._validation import Interval
from ..models import MAX_COPIES, duplicate_groups
from ._base import BaseDetector, _Findings, _Inputs, register

__all__ = ["KNNConsistency", "knn_label_probs"]


def knn_label_probs(X: np.ndarray, labels: np.ndarray, n_classes: int, *, n_neighbors: int = 10,
                    scale: bool = True, prior: float = 0.5, n_jobs=None, neighbours=None) -> np.ndarray:
    """Leave-one-out label frequencies among each row's nearest neighbours.

    ``P[i, c] = (#neighbours of i labelled c + prior / K) / (k + prior)``;
    row ``i`` itself is never its own neighbour, and neither are its exact
    duplicates (rows with the same features, :func:`flipguard.models.duplicate_groups`;
    at most 50 of them are skipped), so these are out-of-sample probabilities
    like out-of-fold model predictions: copies of a flipped row would
    otherwise vote for its flipped label.  Features are standardised first when ``scale``.
    Exact search with scikit-learn's :class:`~sklearn.neighbors.NearestNeighbors`
    (brute force, quadratic in the number of rows).

    ``neighbours`` (from :func:`knn_neighbours` on the same ``X``) skips the search: the
    neighbours do not depend on the labels, so an audit that judges other labels of the same
    rows (a retrain pass, a rehearsed attack) searches once.

    Returns
    -------
    ndarray of shape (n_samples, n_classes)
    """
    neigh = knn_neighbours(X, n_neighbors=n_neighbors, scale=scale, n_jobs=n_jobs) if neighbours is None \
        else neighbours
    n, k = neigh.shape
    rows = np.arange(n)
    counts = np.bincount((rows[:, None] * n_classes + labels[neigh]).ravel(),
                         minlength=n * n_classes).reshape(n, n_classes).astype(np.float64)
    return (counts + prior / n_classes) / (k + prior)


def knn_neighbours(X, *, n_neighbors: int = 10, scale: bool = True, n_jobs=None) -> np.ndarray:
    """Each row's ``n_neighbors`` nearest other rows (indices, nearest first), its exact copies
    left out as in :func:`knn_label_probs`."""
    if not isinstance(X, np.ndarray) and hasattr(X, "tocsr"):  # sparse (TF-IDF): scale, never centre
        from sklearn.utils.sparsefuncs import inplace_column_scale, mean_variance_axis

        Z = X.tocsr().astype(np.float32)
        if scale:
            sd = np.sqrt(mean_variance_axis(Z, axis=0)[1])
            sd[sd == 0] = 1.0
            inplace_column_scale(Z, (1.0 / sd).astype(np.float32))
        return _neighbours(Z, n_neighbors, n_jobs, duplicate_groups(X))
    X = np.asarray(X, dtype=np.float64)
    if scale:
        mu = X.mean(axis=0)
        sd = X.std(axis=0)
        sd[sd == 0] = 1.0
        Z = ((X - mu) / sd).astype(np.float32)
    else:
        Z = X.astype(np.float32)
    return _neighbours(Z, n_neighbors, n_jobs, duplicate_groups(X))


def _neighbours(Z, n_neighbors, n_jobs, groups=None) -> np.ndarray:
    n = Z.shape[0]
    rows = np.arange(n)
    extra = 0 if groups is None else int(min(MAX_SKIPPED_COPIES, np.bincount(groups).max() - 1))
    k = int(min(n_neighbors, n - 1 - extra))
    if k < 1:  # nearly every row is a copy of one row: nothing else to ask
        k, extra = int(min(n_neighbors, n - 1)), 0
    nn = NearestNeighbors(n_neighbors=k + 1 + extra, algorithm="brute", n_jobs=n_jobs).fit(Z)
    idx = nn.kneighbors(Z, return_distance=False)
    # Drop the row itself and its copies (ties may put the row anywhere among them); keep the
    # first k of the others, nearest first.
    mine = idx == rows[:, None]
    if groups is not None:
        mine |= groups[idx] == groups[:, None]
    if groups is None:
        has_self = mine.any(axis=1)
        drop = np.where(has_self, np.argmax(mine, axis=1), k)  # no self found: drop the farthest
        keep = np.ones_like(idx, dtype=bool)
        keep[rows, drop] = False
        neigh = idx[keep].reshape(n, k)
    else:
        order = np.argsort(mine, axis=1, kind="stable")[:, :k]  # the others first, in distance order
        neigh = np.take_along_axis(idx, order, axis=1)
    return neigh


#: Copies of a row (exact duplicates) skipped at most among its neighbours.
MAX_SKIPPED_COPIES = MAX_COPIES


@register("knn")
class KNNConsistency(BaseDetector):
    """Flag labels that disagree with the majority of their nearest neighbours.

    The label sanitisation defence of Paudice et al. (2018): for each row,
    look at its ``k`` nearest neighbours (standardised features, the row
    itself excluded); if the most common neighbour label differs from the
    row's label and holds at least a fraction ``eta`` of the neighbours, the
    label is suspect and that majority label is suggested.

    Score: the fraction of the ``k`` neighbours whose label differs from the
    row's (higher = more likely flipped).  Suggested label: the neighbour
    majority (the row's own label on ties).  The estimate is the number of
    flagged rows.  Needs ``X``; no model and no probabilities.

    Exact neighbour search is quadratic in the number of rows (about 2 s for
    20,000 rows here); for very large tables prefer ``method="auto"``, which
    uses neighbours only up to its ``knn_max_samples``.

    Parameters
    ----------
    n_neighbors : int, default=10
        ``k``.
    eta : float in [0.5, 1], default=0.5
        Minimum share of the neighbours that must agree on another label.
    scale : bool, default=True
        Standardise features before measuring distances.

    References
    ----------
    .. [1] A. Paudice, L. Munoz-Gonzalez, E. C. Lupu. "Label Sanitization
       against Label Flipping Poisoning Attacks". ECML PKDD Workshops
       (Nemesis), 2018.

    Examples
    --------
    >>> import numpy as np
    >>> from flipguard.detection import KNNConsistency
    >>> X = np.array([[0.0], [0.1], [0.2], [0.3], [5.0], [5.1], [5.2], [5.3]])
    >>> labels = np.array([0, 0, 1, 0, 1, 1, 1, 1])
    >>> KNNConsistency(n_neighbors=3).audit(labels, X=X).flags.nonzero()[0].tolist()
    [2]
    """

    _parameter_constraints = {
        "n_neighbors": [Interval(Integral, 1, None, closed="left")],
        "eta": [Interval(Real, 0.5, 1, closed="both")],
        "scale": ["boolean"],
    }
    needs_pred_probs = False
    needs_X = True

    def __init__(self, *, n_neighbors=10, eta=0.5, scale=True):
        self.n_neighbors = n_neighbors
        self.eta = eta
        self.scale = scale

    def _audit(self, inputs: _Inputs) -> _Findings:
        labels, K = inputs.labels, inputs.n_classes
        rows = np.arange(len(labels))
        probs = knn_label_probs(inputs.X, labels, K, n_neighbors=self.n_neighbors,
                                scale=self.scale, prior=0.0)
        own = probs[rows, labels]
        masked = probs.copy()
        masked[rows, labels] = -1.0
        other = np.argmax(masked, axis=1)
        share = masked[rows, other]
        flags = (share > own) & (share >= self.eta)
        suggested = np.where(flags, other, labels)  # an unflagged row keeps its label
        scores = 1.0 - own
        return _Findings(scores=scores, flags=flags, suggested=suggested,
                         components={"knn": scores}, quality_probs=probs,
                         quality_name=f"{self.n_neighbors}-nearest neighbours (leave-one-out)")
