"""scikit-learn's k-nearest neighbours and MLP, made to fit on very small training sets.

``assess`` trains its victim models on class-stratified splits that a small
table or a large ``--holdout`` can make tiny; scikit-learn's classifiers then
refuse to fit (fewer rows than neighbours, an early-stopping split without a
row of every class).  These two fall back to what still works there and are
otherwise the same estimators.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier


class CappedKNeighborsClassifier(KNeighborsClassifier):
    """:class:`~sklearn.neighbors.KNeighborsClassifier` that asks for at most as many neighbours as it has rows.

    With fewer training rows than ``n_neighbors`` it votes over all of them
    where scikit-learn's raises ``Expected n_neighbors <= n_samples_fit``.
    """

    def kneighbors(self, X=None, n_neighbors=None, return_distance=True):  # noqa: N803 - scikit-learn's names
        if n_neighbors is None:
            n_neighbors = max(1, min(self.n_neighbors, self.n_samples_fit_ - (X is None)))
        return super().kneighbors(X, n_neighbors, return_distance)


class SmallDataMLPClassifier(MLPClassifier):
    """:class:`~sklearn.neural_network.MLPClassifier` that skips early stopping when it cannot split.

    Early stopping holds out ``validation_fraction`` of the rows, stratified
    by class; when that split cannot hold a row of every class (or leaves
    fewer than two rows), this fit trains on all rows for up to ``max_iter``
    epochs instead of raising "The validation set is too small".
    """

    def fit(self, X, y, **fit_params):
        if self.early_stopping and not _can_split(np.asarray(y), self.validation_fraction):
            self.early_stopping = False
            try:
                return super().fit(X, y, **fit_params)
            finally:
                self.early_stopping = True
        return super().fit(X, y, **fit_params)


def _can_split(y: np.ndarray, fraction: float) -> bool:
    n = len(y)
    counts = np.unique(y, return_counts=True)[1]
    n_val = math.ceil(fraction * n)
    return n_val >= max(2, len(counts)) and n - n_val >= len(counts) and counts.min() >= 2
