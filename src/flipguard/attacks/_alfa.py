"""ALFA: the adversarial label flip attack on linear classifiers (Xiao, Xiao & Eckert, 2012)."""

from __future__ import annotations

import warnings
from numbers import Integral, Real

import numpy as np
from scipy import sparse
from scipy.optimize import linprog
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import StandardScaler

from .._validation import Interval, StrOptions
from ..exceptions import FlipguardError, InvalidParameterError
from ._base import BaseFlipper, Budget, register, select_top

__all__ = ["ALFAFlip"]

_SEED_MAX = np.iinfo(np.int32).max


@register("alfa")
class ALFAFlip(BaseFlipper):
    """Adversarial Label Flip Attack (ALFA) against a linear classifier, binary labels.

    Xiao, Xiao and Eckert (2012) pose the attacker's problem as: choose at
    most ``C`` labels to flip so that the classifier trained on the tainted
    labels disagrees as much as possible with the classifier trained on the
    clean ones.  They relax it on the *doubled* training set ``U``: every row
    appears twice, once with its label and once with the flipped label, and
    an indicator ``q_i in [0, 1]`` says which copy is kept
    (``q_i + q_{i+n} = 1``), with ``sum_i q_{i+n} <= C``.  The attack
    alternates until ``q`` stops changing (or ``max_iter``):

    (a) with the current tainted model ``f`` fixed, the linear program
        ``min_q sum_i q_i (xi_i - eps_i)``, where ``xi_i`` is ``f``'s loss on
        the i-th copy and ``eps_i`` the clean model's loss on it, solved with
        :func:`scipy.optimize.linprog` (HiGHS);
    (b) with ``q`` fixed, refit the linear model on ``U`` with sample
        weights ``q``.

    The rows whose flipped copy has the largest weight ``q_{i+n}`` are
    flipped (ties: the larger loss reduction of step (a)).  As in the
    authors' reference implementation (ALFASVMLib), the first linear program
    starts from random tainted-model losses, which avoids the trivial
    starting point; the draw is seeded.

    Parameters
    ----------
    model : {"linsvm", "logreg"}, default="linsvm"
        Linear model attacked and refitted: a linear SVM (hinge loss, the
        paper's setting) or logistic regression (log loss).  Features are
        standardised first.
    max_iter : int, default=10
        Maximum number of alternations of (a) and (b).
    tol : float, default=1e-3
        Convergence: stop when no flip weight changes by more than ``tol``.
    rate : float in (0, 1] or dict, default=0.1
        Fraction of rows (or per class with a dict) to flip.
    n_flips : int or dict, default=None
        Exact number of flips (the paper's budget ``C``, unit costs).
    random_state : int, RandomState instance or None, default=None
        Seeds the starting losses and the models.

    Attributes
    ----------
    flip_weights_ : ndarray of shape (n_samples,)
        Final ``q_{i+n}``: the weight of each row's flipped copy (1 = flipped
        by the relaxed program).
    n_iter_ : int
        Alternations run.
    converged_ : bool
        Whether ``q`` stopped changing before ``max_iter``.
    (plus the attributes of :class:`BaseFlipper`)

    Notes
    -----
    Linear programs over ``2 n`` variables are solved at every iteration, so
    the attack suits thousands to tens of thousands of rows, not millions.

    References
    ----------
    .. [1] H. Xiao, H. Xiao, C. Eckert, "Adversarial Label Flips Attack on
       Support Vector Machines", ECAI 2012.
    .. [2] H. Xiao, B. Biggio, B. Nelson, H. Xiao, C. Eckert, F. Roli,
       "Support Vector Machines under Adversarial Label Contamination",
       Neurocomputing 160, 2015 (ALFASVMLib).

    Examples
    --------
    >>> from flipguard.attacks import ALFAFlip
    >>> from flipguard.data import make_sentiment_reviews
    >>> ds = make_sentiment_reviews(300, random_state=0)
    >>> flipper = ALFAFlip(n_flips=30, random_state=0)
    >>> _, y_bad = flipper.fit_resample(ds.X, ds.y)
    >>> int((y_bad != ds.y).sum())
    30
    """

    _parameter_constraints = {**BaseFlipper._parameter_constraints,
                              "model": [StrOptions({"linsvm", "logreg"})],
                              "max_iter": [Interval(Integral, 1, None, closed="left")],
                              "tol": [Interval(Real, 0, None, closed="neither")]}
    _needs_X = True

    def __init__(self, *, model="linsvm", max_iter=10, tol=1e-3, rate=0.1, n_flips=None,
                 random_state=None):
        super().__init__(rate=rate, n_flips=n_flips, random_state=random_state)
        self.model = model
        self.max_iter = max_iter
        self.tol = tol

    def _flip(self, X, y, n_classes: int, budget: Budget, rng):
        if n_classes != 2:
            raise InvalidParameterError(
                f"ALFAFlip: ALFA attacks binary classifiers, but y has {n_classes} classes "
                f"({', '.join(map(str, self.classes_))}); use another strategy or keep two classes")
        n = len(y)
        if budget.total == 0:
            self.flip_weights_, self.n_iter_, self.converged_ = np.zeros(n), 0, True
            return np.array([], dtype=np.int64), np.array([], dtype=np.int64)
        Z = StandardScaler().fit_transform(X)
        Zd = np.vstack([Z, Z])
        yd = np.concatenate([y, 1 - y])      # label of each copy: kept / flipped
        sd = 2.0 * yd - 1.0                  # the same in {-1, +1}
        seed = rng.randint(_SEED_MAX)

        clean = self._new_model(seed)
        self._fit(clean, Z, y, None)
        eps = self._loss(sd * clean.decision_function(Zd))
        xi = rng.random_sample(2 * n)       # random start, as in ALFASVMLib

        # Constraints: q_i + q_{i+n} = 1; budget on the flipped copies (per class if asked).
        eye = sparse.identity(n, format="csr")
        A_eq = sparse.hstack([eye, eye], format="csr")
        b_eq = np.ones(n)
        if budget.per_class is None:
            A_ub = sparse.csr_matrix(np.concatenate([np.zeros(n), np.ones(n)])[None, :])
            b_ub = np.array([float(budget.total)])
        else:
            onehot = sparse.csr_matrix((np.ones(n), (y, np.arange(n))), shape=(2, n))
            A_ub = sparse.hstack([sparse.csr_matrix((2, n)), onehot], format="csr")
            b_ub = budget.per_class.astype(np.float64)

        q = np.concatenate([np.ones(n), np.zeros(n)])
        tainted = self._new_model(seed)
        converged, it = False, 0
        for it in range(1, self.max_iter + 1):
            cost = xi - eps
            res = linprog(cost, A_ub=A_ub, b_ub=b_ub, A_eq=A_eq, b_eq=b_eq, bounds=(0.0, 1.0),
                          method="highs")
            if res.status != 0:  # pragma: no cover - the program is always feasible (q = clean labels)
                raise FlipguardError(f"ALFAFlip: the linear program failed: {res.message}")
            q_new = np.clip(res.x, 0.0, 1.0)
            self._fit(tainted, Zd, yd, q_new)
            xi = self._loss(sd * tainted.decision_function(Zd))
            change = np.max(np.abs(q_new - q))
            q = q_new
            if change <= self.tol:
                converged = True
                break
        flip_w = q[n:]
        # Order by flip weight, ties by how much the last program gained by flipping the row.
        gain = (xi[:n] - eps[:n]) - (xi[n:] - eps[n:])
        order = np.lexsort((gain, flip_w))
        rank = np.empty(n)
        rank[order] = np.arange(n, dtype=np.float64)
        self.flip_weights_ = flip_w
        self.n_iter_ = it
        self.converged_ = converged
        rows = select_top(rank, y, budget)
        return rows, 1 - y[rows]

    def _new_model(self, seed: int):
        if self.model == "linsvm":
            from sklearn.svm import LinearSVC

            return LinearSVC(random_state=seed)
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(max_iter=1000)

    @staticmethod
    def _fit(est, Z, y, weight) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(Z, y, sample_weight=weight)

    def _loss(self, margin: np.ndarray) -> np.ndarray:
        if self.model == "linsvm":
            return np.maximum(0.0, 1.0 - margin)
        return np.logaddexp(0.0, -margin)
