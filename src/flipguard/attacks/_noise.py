"""Class-conditional label noise drawn from a transition matrix."""

from __future__ import annotations

import numpy as np

from .._validation import StrOptions
from ..exceptions import InvalidParameterError
from ._base import BaseFlipper, Budget, flips_for_rate, register

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
    * ``kind="pair"``: each class is relabelled as one partner class -- the
      "pair flipping" of Han et al. (2018), where each class is confused with
      one neighbour.  ``pairs`` names the partners (``{"cat": "dog"}``);
      by default class ``i`` goes to class ``i + 1`` (mod K) in the classes'
      own order: numeric labels in numeric order, string labels in the order
      they first appear in ``y`` (never alphabetical, which would pair
      ``"zero"`` with ``"eight"``);
    * ``T``: any K x K row-stochastic matrix.  Class ``c`` flips a fraction
      ``1 - T[c, c]`` of its rows and the flipped rows go to class ``j`` in
      proportion to ``T[c, j]``.

    Counts are exact, not sampled: the total is the budget (a ``rate`` is
    rounded down to whole rows), split over the classes and destinations in
    proportion to the expected counts (largest-remainder rounding, seeded
    tie-breaks); with ``T`` each class flips ``1 - T[c, c]`` of its rows
    rounded to the nearest whole row.  Which rows flip is
    uniformly random within each class.

    Parameters
    ----------
    kind : {"symmetric", "pair"}, default="symmetric"
        Shape of the noise when ``T`` is not given.
    pairs : dict or sequence of (source, target), default=None
        ``kind="pair"`` only: which class each class is flipped into, by
        label value.  Classes not named keep their labels, and a float
        ``rate`` is then a fraction of the named classes' rows.
    T : array-like of shape (n_classes, n_classes), default=None
        Explicit transition matrix; rows and columns follow the sorted label
        values (``classes_``), each row sums to 1.  When given it replaces
        ``kind`` and sets the amount of noise itself, so ``rate`` and
        ``n_flips`` are ignored.
    rate : float in (0, 1] or dict, default=0.1
        Fraction of rows to flip (``kind`` only).  A float is spread over the
        classes in proportion to their sizes, so each class loses about
        ``rate`` of its rows and the total is ``floor(rate * n)`` (rounded down,
        as every flipper's budget); a dict
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
                              "T": ["array-like", None],
                              "pairs": [dict, list, tuple, None]}

    def __init__(self, *, kind="symmetric", T=None, pairs=None, rate=0.1, n_flips=None, random_state=None):
        super().__init__(rate=rate, n_flips=n_flips, random_state=random_state)
        self.kind = kind
        self.T = T
        self.pairs = pairs

    def _flip(self, X, y, n_classes: int, budget: Budget, rng):
        K = n_classes
        counts = np.bincount(y, minlength=K)
        if self.T is not None:
            T = self._check_T(K)
            per_class = np.minimum(np.rint((1.0 - np.diag(T)) * counts).astype(np.int64), counts)
            weights = T.copy()
            np.fill_diagonal(weights, 0.0)
        else:
            if self.pairs is not None and self.kind != "pair":
                raise InvalidParameterError("NoiseMatrixFlip: pairs needs kind='pair'")
            dest = self._partners(y, K) if self.kind == "pair" else np.full(K, -2)
            eligible = dest != -1  # -2: symmetric, every class
            if budget.per_class is not None:
                per_class = budget.per_class.astype(np.int64)
                if np.any(per_class[~eligible] > 0):
                    c = int(np.flatnonzero((per_class > 0) & ~eligible)[0])
                    raise InvalidParameterError(f"NoiseMatrixFlip: the budget names class "
                                                f"{self.classes_[c]!r}, which has no pair")
            else:
                total = budget.total
                if self.n_flips is None and not isinstance(self.rate, dict) and not eligible.all():
                    total = flips_for_rate(self.rate, counts[eligible].sum())
                if total > counts[eligible].sum():
                    raise InvalidParameterError(f"NoiseMatrixFlip: cannot flip {total} of "
                                                f"{int(counts[eligible].sum())} rows of the paired classes")
                per_class = _apportion(total, counts * eligible.astype(np.float64), rng)
            weights = np.zeros((K, K))
            if self.kind == "symmetric":
                weights[:] = 1.0
                np.fill_diagonal(weights, 0.0)
            else:  # pair
                src = np.flatnonzero(eligible)
                weights[src, dest[src]] = 1.0
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

    def _partners(self, y: np.ndarray, K: int) -> np.ndarray:
        """Destination code of each class (-1: not flipped)."""
        if self.pairs is None:
            if self.classes_.dtype.kind in "iufb":
                order = np.arange(K)  # numeric labels: numeric order
            else:  # string labels: order of first appearance
                _, first = np.unique(y, return_index=True)
                order = np.argsort(first, kind="stable")
            dest = np.empty(K, dtype=np.int64)
            dest[order] = np.roll(order, -1)
            return dest
        items = list(self.pairs.items()) if isinstance(self.pairs, dict) else list(self.pairs)
        dest = np.full(K, -1, dtype=np.int64)
        by_text = {str(c): i for i, c in enumerate(self.classes_)}
        for item in items:
            if len(item) != 2:
                raise InvalidParameterError(f"NoiseMatrixFlip: pairs must be (source, target) pairs; got {item!r}")
            codes = []
            for label in item:
                hit = np.flatnonzero(self.classes_ == label) if not isinstance(label, str) or \
                    self.classes_.dtype.kind in "OSU" else np.array([by_text.get(label, -1)])
                if not len(hit) or hit[0] < 0:
                    raise InvalidParameterError(f"NoiseMatrixFlip: pairs names class {label!r}, which is not "
                                                f"in y (classes: {', '.join(map(str, self.classes_))})")
                codes.append(int(hit[0]))
            if codes[0] == codes[1]:
                raise InvalidParameterError(f"NoiseMatrixFlip: pair {item!r} maps a class onto itself")
            if dest[codes[0]] >= 0:
                raise InvalidParameterError(f"NoiseMatrixFlip: class {item[0]!r} is paired twice")
            dest[codes[0]] = codes[1]
        return dest

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
