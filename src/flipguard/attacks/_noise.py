"""Class-conditional label noise drawn from a transition matrix."""

from __future__ import annotations

import numpy as np

from .._validation import StrOptions
from ..exceptions import InvalidParameterError
from ._base import BaseFlipper, Budget, register

__all__ = ["NoiseMatrixFlip"]


@register("noise_matrix")
class NoiseMatrixFlip(BaseFlipper):
    """Class-conditional label noise: class ``c`` becomes class ``j`` with probability ``T[c, j]``.

    The standard model of label noise in the learning-with-noisy-labels
    literature (Natarajan et al., 2013; Patrini et al., 2017).  The noise
    depends on the class only, not on the features, so it is what a careless
    annotator or a crude relabelling script produces.  Three forms:

    * ``kind="symmetric"``: every class loses the same fraction (``rate``) of
      its rows, spread evenly over all other classes;
    * ``kind="pair"``: class ``i`` is relabelled as class ``i + 1`` (mod K,
      in sorted label order) -- the "pair flipping" of Han et al. (2018),
      where each class is confused with one neighbour;
    * ``T``: any K x K row-stochastic matrix.  Class ``c`` flips a fraction
      ``1 - T[c, c]`` of its rows and the flipped rows go to class ``j`` in
      proportion to ``T[c, j]``.

    Counts are exact, not sampled: the number of flipped rows of each class
    and the number sent to each destination are the expected counts, rounded
    (largest-remainder rounding, seeded tie-breaks).  Which rows flip is
    uniformly random within each class.

    Parameters
    ----------
    kind : {"symmetric", "pair"}, default="symmetric"
        Shape of the noise when ``T`` is not given.
    T : array-like of shape (n_classes, n_classes), default=None
        Explicit transition matrix; rows and columns follow the sorted label
        values (``classes_``), each row sums to 1.  When given it replaces
        ``kind`` and sets the amount of noise itself, so ``rate`` and
        ``n_flips`` are ignored.
    rate : float in (0, 1] or dict, default=0.1
        Fraction of rows to flip (``kind`` only).  A float is spread over the
        classes in proportion to their sizes, so each class loses about
        ``rate`` of its rows and the total is ``round(rate * n)``; a dict
        ``{label: fraction}`` sets each class's fraction.
    n_flips : int or dict, default=None
        Exact number of flips instead of a rate, spread the same way.
    random_state : int, RandomState instance or None, default=None
        Seeds the choice of rows and the rounding ties.

    Attributes
    ----------
    transition_matrix_ : ndarray of shape (n_classes, n_classes)
        The row-stochastic matrix whose expected counts were applied
        (diagonal: the fraction of each class that kept its label).
    transition_counts_ : ndarray of int, shape (n_classes, n_classes)
        ``transition_counts_[c, j]``: rows moved from class ``c`` to ``j``.
    (plus the attributes of :class:`BaseFlipper`)

    References
    ----------
    .. [1] N. Natarajan, I. S. Dhillon, P. Ravikumar, A. Tewari, "Learning
       with Noisy Labels", NeurIPS 2013.
    .. [2] G. Patrini, A. Rozza, A. K. Menon, R. Nock, L. Qu, "Making Deep
       Neural Networks Robust to Label Noise: a Loss Correction Approach",
       CVPR 2017.
    .. [3] B. Han, Q. Yao, X. Yu, G. Niu, M. Xu, W. Hu, I. Tsang, M. Sugiyama,
       "Co-teaching: Robust Training of Deep Neural Networks with Extremely
       Noisy Labels", NeurIPS 2018.

    Examples
    --------
    >>> import numpy as np
    >>> from flipguard.attacks import NoiseMatrixFlip
    >>> y = np.repeat([0, 1, 2], 100)
    >>> T = [[0.8, 0.2, 0.0], [0.0, 1.0, 0.0], [0.1, 0.1, 0.8]]
    >>> flipper = NoiseMatrixFlip(T=T, random_state=0)
    >>> _, y_bad = flipper.fit_resample(None, y)
    >>> flipper.transition_counts_.tolist()
    [[0, 20, 0], [0, 0, 0], [10, 10, 0]]
    """

    _parameter_constraints = {**BaseFlipper._parameter_constraints,
                              "kind": [StrOptions({"symmetric", "pair"})],
                              "T": ["array-like", None]}

    def __init__(self, *, kind="symmetric", T=None, rate=0.1, n_flips=None, random_state=None):
        super().__init__(rate=rate, n_flips=n_flips, random_state=random_state)
        self.kind = kind
        self.T = T

    def _flip(self, X, y, n_classes: int, budget: Budget, rng):
        K = n_classes
        counts = np.bincount(y, minlength=K)
        if self.T is not None:
            T = self._check_T(K)
            per_class = np.minimum(np.rint((1.0 - np.diag(T)) * counts).astype(np.int64), counts)
            weights = T.copy()
            np.fill_diagonal(weights, 0.0)
        else:
            if budget.per_class is not None:
                per_class = budget.per_class.astype(np.int64)
            else:
                per_class = _apportion(budget.total, counts.astype(np.float64), rng)
            weights = np.zeros((K, K))
            if self.kind == "symmetric":
                weights[:] = 1.0
                np.fill_diagonal(weights, 0.0)
            else:  # pair
                weights[np.arange(K), (np.arange(K) + 1) % K] = 1.0
        # Exact destination counts per source class (largest remainder).
        moves = np.zeros((K, K), dtype=np.int64)
        for c in range(K):  # one pass per class, not per row
            if per_class[c] > 0:
                moves[c] = _apportion(int(per_class[c]), weights[c], rng)
        # Rows grouped by class, in random order within each class.
        perm = rng.permutation(len(y))
        order = perm[np.argsort(y[perm], kind="stable")]
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        rows = np.concatenate([order[s:s + m] for s, m in zip(starts, per_class)])
        # moves.ravel() runs source by source, destination by destination,
        # matching the class-by-class layout of ``rows``.
        new = np.repeat(np.tile(np.arange(K), K), moves.ravel())
        rates = np.divide(moves, counts[:, None], out=np.zeros((K, K)), where=counts[:, None] > 0)
        np.fill_diagonal(rates, 1.0 - rates.sum(axis=1))
        self.transition_matrix_ = rates
        self.transition_counts_ = moves
        return rows, new

    def _check_T(self, K: int) -> np.ndarray:
        try:
            T = np.asarray(self.T, dtype=np.float64)
        except (TypeError, ValueError):
            raise InvalidParameterError("NoiseMatrixFlip: T must be a numeric K x K matrix") from None
        if T.shape != (K, K):
            raise InvalidParameterError(f"NoiseMatrixFlip: T has shape {T.shape} but y has {K} classes "
                                        f"({', '.join(map(str, self.classes_))}); give a {K} x {K} matrix "
                                        "in sorted label order")
        if not np.all(np.isfinite(T)) or np.any(T < 0):
            raise InvalidParameterError("NoiseMatrixFlip: T must have finite, non-negative entries")
        sums = T.sum(axis=1)
        if not np.allclose(sums, 1.0, atol=1e-6):
            bad = int(np.flatnonzero(~np.isclose(sums, 1.0, atol=1e-6))[0])
            label = self.classes_[bad:bad + 1].tolist()[0]
            raise InvalidParameterError(f"NoiseMatrixFlip: each row of T must sum to 1; row {bad} "
                                        f"(class {label!r}) sums to {sums[bad]:.6g}")
        return T


def _apportion(total: int, weights: np.ndarray, rng) -> np.ndarray:
    """Split ``total`` into integers proportional to ``weights`` (largest remainder, seeded ties).

    The parts never exceed ``ceil(total * w / sum(w))`` and add up to ``total``.
    """
    weights = np.asarray(weights, dtype=np.float64)
    out = np.zeros(len(weights), dtype=np.int64)
    s = weights.sum()
    if total <= 0 or s <= 0:
        return out
    exact = total * weights / s
    out = np.floor(exact).astype(np.int64)
    left = int(total - out.sum())
    if left > 0:
        frac = exact - out
        # Random order first, then a stable sort on the remainder: ties are broken by the seed.
        shuffle = rng.permutation(len(weights))
        pick = shuffle[np.argsort(-frac[shuffle], kind="stable")[:left]]
        out[pick] += 1
    return out
