"""Client models small enough to train in seconds on a laptop: softmax regression and a one-hidden-layer MLP.

Plain NumPy, float64, mini-batch SGD with a seeded shuffle, so a local update
is a pure function of (global parameters, local data, seed) and a simulation
is reproducible bit for bit.  Parameters travel as an ordered ``dict`` of
arrays (an ``ArrayRecord`` on the wire); the **output layer** is the last 2-D
array and its rows are the classes (PyTorch's ``(out, in)`` convention), which
is what the label-flip-aware defences read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..exceptions import InvalidParameterError

__all__ = ["NumpyModel", "MODEL_NAMES"]

MODEL_NAMES = ("logreg", "mlp")


@dataclass(frozen=True)
class NumpyModel:
    """Multinomial logistic regression (``"logreg"``) or a ReLU MLP (``"mlp"``) trained with SGD.

    Parameters
    ----------
    kind : {"logreg", "mlp"}, default="logreg"
    n_features, n_classes : int
    hidden : int, default=32
        Hidden units of the MLP.
    epochs : int, default=5
        Local epochs per federated round.  Five epochs of batches of 16 give
        a digits client (about 134 rows) 45 SGD steps per round, close
        to the local work of Jebreel et al.'s MNIST clients (3 epochs of
        batches of 64 over about 600 rows).  With 2 epochs (flipguard's
        earlier default) a client of a dozen rows took 2 steps per round, too
        few for a client that flipped few rows to move away from the honest
        ones (``benchmarks/bench_federated.py``, docs/federated.md).
    lr : float, default=0.1
        SGD step size.
    batch_size : int, default=16
    l2 : float, default=1e-4
        Weight decay.
    """

    kind: str = "logreg"
    n_features: int = 1
    n_classes: int = 2
    hidden: int = 32
    epochs: int = 5
    lr: float = 0.1
    batch_size: int = 16
    l2: float = 1e-4

    def __post_init__(self):
        if self.kind not in MODEL_NAMES:
            raise InvalidParameterError(f"--model must be one of {', '.join(MODEL_NAMES)}; got {self.kind!r}")

    # -- parameters ----------------------------------------------------------
    def init(self, random_state: int = 0) -> dict[str, np.ndarray]:
        """Initial global parameters (zeros for logreg, scaled Gaussian for the MLP's hidden layer)."""
        k, d = self.n_classes, self.n_features
        if self.kind == "logreg":
            return {"W": np.zeros((k, d)), "b": np.zeros(k)}
        rng = np.random.RandomState(random_state)
        return {"W1": rng.normal(0.0, np.sqrt(2.0 / d), size=(self.hidden, d)), "b1": np.zeros(self.hidden),
                "W2": rng.normal(0.0, np.sqrt(1.0 / self.hidden), size=(k, self.hidden)), "b2": np.zeros(k)}

    # -- forward / backward --------------------------------------------------
    def decision_function(self, params: dict[str, np.ndarray], X: np.ndarray) -> np.ndarray:
        if self.kind == "logreg":
            return X @ params["W"].T + params["b"]
        h = np.maximum(X @ params["W1"].T + params["b1"], 0.0)
        return h @ params["W2"].T + params["b2"]

    def predict(self, params: dict[str, np.ndarray], X: np.ndarray) -> np.ndarray:
        return np.argmax(self.decision_function(params, X), axis=1)

    def _grads(self, p, X, y):
        n = len(y)
        if self.kind == "logreg":
            z = X @ p["W"].T + p["b"]
        else:
            a = X @ p["W1"].T + p["b1"]
            h = np.maximum(a, 0.0)
            z = h @ p["W2"].T + p["b2"]
        z -= z.max(axis=1, keepdims=True)
        prob = np.exp(z)
        prob /= prob.sum(axis=1, keepdims=True)
        prob[np.arange(n), y] -= 1.0
        dz = prob / n
        if self.kind == "logreg":
            return {"W": dz.T @ X + self.l2 * p["W"], "b": dz.sum(axis=0)}
        dh = (dz @ p["W2"]) * (a > 0)
        return {"W1": dh.T @ X + self.l2 * p["W1"], "b1": dh.sum(axis=0),
                "W2": dz.T @ h + self.l2 * p["W2"], "b2": dz.sum(axis=0)}

    def fit(self, params: dict[str, np.ndarray], X: np.ndarray, y: np.ndarray,
            random_state: int = 0) -> dict[str, np.ndarray]:
        """``epochs`` of mini-batch SGD from ``params`` (not modified); returns the new parameters."""
        p = {k: np.array(v, dtype=np.float64, copy=True) for k, v in params.items()}
        n = len(y)
        if n == 0:
            return p
        rng = np.random.RandomState(random_state)
        for _ in range(self.epochs):
            order = rng.permutation(n)
            for start in range(0, n, self.batch_size):
                rows = order[start:start + self.batch_size]
                g = self._grads(p, X[rows], y[rows])
                for k in p:
                    p[k] -= self.lr * g[k]
        return p
