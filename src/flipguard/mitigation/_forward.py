"""Forward loss correction for a multinomial logistic model (Patrini et al., CVPR 2017)."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from scipy.optimize import minimize
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (
    _check_sample_weight,
    check_is_fitted,
    validate_data,
)

from .._validation import Interval, validate_params
from ..exceptions import InvalidParameterError

__all__ = ["ForwardCorrectedLogisticRegression", "check_transition"]

_EPS = 1e-12


def check_transition(transition, n_classes: int, *, who: str = "transition") -> np.ndarray:
    """A row-stochastic ``(n_classes, n_classes)`` matrix ``T[true, observed]`` or an error.

    Rows are normalised to sum to one; a row of zeros (a class never seen as
    the true class) becomes the identity row.
    """
    T = np.asarray(transition, dtype=np.float64)
    if T.shape != (n_classes, n_classes):
        raise InvalidParameterError(f"{who} must be a ({n_classes}, {n_classes}) matrix "
                                    f"T[true, observed]; got shape {T.shape}")
    if not np.all(np.isfinite(T)) or T.min() < 0:
        raise InvalidParameterError(f"{who} must hold non-negative finite probabilities")
    sums = T.sum(axis=1, keepdims=True)
    T = np.where(sums > 0, T / np.where(sums > 0, sums, 1.0), np.eye(n_classes))
    return T


class ForwardCorrectedLogisticRegression(ClassifierMixin, BaseEstimator):
    """Multinomial logistic regression trained through a label-noise transition matrix.

    With ``T[i, j] = P(observed label j | true class i)``, the model's clean
    posterior ``p(y | x) = softmax(W x + b)`` is pushed through the noise
    process, ``q(y~ | x) = T^T p(y | x)``, and the cross-entropy is computed
    between ``q`` and the **observed** labels: the *forward correction* of
    Patrini et al. (2017).  The minimiser of the corrected loss on noisy
    labels is the minimiser of the ordinary loss on clean labels (their
    Theorem 2), so ``predict`` / ``predict_proba`` estimate the clean class.

    scikit-learn's models do not expose their loss, so flipguard implements
    the corrected objective for a logistic model directly: features are
    standardised, the L2-penalised objective
    ``mean_n(-log q[n, y~_n]) + ||W||^2 / (2 C n)`` (the scaling of
    :class:`sklearn.linear_model.LogisticRegression`) is minimised with
    L-BFGS (:func:`scipy.optimize.minimize`) from its analytic gradient.
    With ``T`` the identity this is plain multinomial logistic regression.

    Parameters
    ----------
    transition : array-like of shape (n_classes, n_classes) or None, default=None
        ``T[true, observed]``, rows in ``classes_`` order (normalised to sum to
        one).  None means no noise (the identity).
    C : float, default=1.0
        Inverse regularisation strength, as in ``LogisticRegression``.
    max_iter : int, default=500
        L-BFGS iterations.
    tol : float, default=1e-6
        L-BFGS gradient tolerance.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    coef_ : ndarray of shape (n_classes, n_features)
        Weights on the original (unstandardised) features.
    intercept_ : ndarray of shape (n_classes,)
    transition_ : ndarray of shape (n_classes, n_classes)
        The row-normalised matrix used.
    n_iter_ : int
        L-BFGS iterations run.
    n_features_in_ : int

    References
    ----------
    .. [1] G. Patrini, A. Rozza, A. K. Menon, R. Nock, L. Qu. "Making Deep
       Neural Networks Robust to Label Noise: a Loss Correction Approach".
       CVPR 2017.

    Examples
    --------
    >>> import numpy as np
    >>> from flipguard.mitigation import ForwardCorrectedLogisticRegression
    >>> X = np.array([[0.0], [1.0], [2.0], [3.0]]); y = np.array([0, 0, 1, 1])
    >>> T = [[0.8, 0.2], [0.2, 0.8]]
    >>> ForwardCorrectedLogisticRegression(T).fit(X, y).predict([[0.2], [2.8]]).tolist()
    [0, 1]
    """

    _parameter_constraints: dict = {
        "transition": ["array-like", None],
        "C": [Interval(Real, 0, None, closed="neither")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
    }

    def __init__(self, transition=None, *, C=1.0, max_iter=500, tol=1e-6):
        self.transition = transition
        self.C = C
        self.max_iter = max_iter
        self.tol = tol

    def fit(self, X, y, sample_weight=None, clean=None):
        """Minimise the forward-corrected, L2-penalised cross-entropy on the observed labels.

        ``clean``: optional boolean mask of rows whose labels are verified.  Such a row's loss is
        the plain cross-entropy ``-log p[n, y_n]`` (an identity row of ``T``), the other rows'
        ``-log (T^T p)[n, y~_n]``: verified rows are not noisy, so correcting them would bias
        the fit.  All rows clean is plain logistic regression; none, the forward correction.
        """
        validate_params(self)
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        K = len(self.classes_)
        d = X.shape[1]
        sw = _check_sample_weight(sample_weight, X, dtype=np.float64)
        if sw.sum() <= 0:
            raise InvalidParameterError("sample_weight must have a positive sum")
        T = np.eye(K) if self.transition is None else check_transition(self.transition, K)
        self.transition_ = T
        mean = np.average(X, axis=0, weights=sw)  # weighted, so a weight of 2 = a repeated row
        scale = np.sqrt(np.average((X - mean) ** 2, axis=0, weights=sw))
        scale[scale <= 1e-12 * np.maximum(1.0, np.abs(mean))] = 1.0
        if K == 1:
            self.coef_ = np.zeros((1, d))
            self.intercept_ = np.zeros(1)
            self.n_iter_ = 0
            return self
        Z = (X - mean) / scale
        a = sw / sw.sum()
        alpha = 1.0 / (self.C * sw.sum())
        Ty = T[:, codes].T  # (n, K): T[k, y_n], how likely true class k shows up as y_n
        if clean is not None:
            clean = np.asarray(clean, dtype=bool)
            Ty[clean] = np.eye(K)[codes[clean]]  # verified rows: no correction

        def objective(theta):
            W = theta[: d * K].reshape(d, K)
            b = theta[d * K:]
            logits = Z @ W + b
            logits -= logits.max(axis=1, keepdims=True)
            S = np.exp(logits)
            S /= S.sum(axis=1, keepdims=True)
            q = np.einsum("nk,nk->n", S, Ty) + _EPS  # q[n, y_n] = sum_k S[n, k] T[k, y_n]
            loss = -np.dot(a, np.log(q)) + 0.5 * alpha * np.sum(W * W)
            G = -(a / q)[:, None] * Ty  # dL/dS
            dZ = S * (G - np.einsum("nk,nk->n", G, S)[:, None])
            grad_W = Z.T @ dZ + alpha * W
            grad_b = dZ.sum(axis=0)
            return loss, np.concatenate([grad_W.ravel(), grad_b])

        res = minimize(objective, np.zeros(d * K + K), jac=True, method="L-BFGS-B",
                       options={"maxiter": int(self.max_iter), "gtol": float(self.tol)})
        W = res.x[: d * K].reshape(d, K)
        b = res.x[d * K:]
        self.coef_ = (W / scale[:, None]).T
        self.intercept_ = b - (mean / scale) @ W
        self.n_iter_ = int(res.nit)
        return self

    def decision_function(self, X) -> np.ndarray:
        check_is_fitted(self, "coef_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        scores = X @ self.coef_.T + self.intercept_
        return scores[:, 1] - scores[:, 0] if len(self.classes_) == 2 else scores

    def predict_proba(self, X) -> np.ndarray:
        """Estimated **clean** class probabilities ``p(y | x)``."""
        check_is_fitted(self, "coef_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        logits = X @ self.coef_.T + self.intercept_
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def predict_noisy_proba(self, X) -> np.ndarray:
        """Probabilities of the **observed** labels, ``T^T p(y | x)``."""
        return self.predict_proba(X) @ self.transition_

    def predict(self, X) -> np.ndarray:
        p = self.predict_proba(X)
        return self.classes_[np.argmax(p, axis=1)]
