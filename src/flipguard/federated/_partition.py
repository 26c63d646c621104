"""Split training rows among federated clients: iid, or non-iid with a Dirichlet prior on class shares."""

from __future__ import annotations

import numpy as np
from sklearn.utils import check_random_state

from ..exceptions import InvalidParameterError

__all__ = ["dirichlet_partition", "iid_partition"]


def iid_partition(n_rows: int, n_clients: int, *, random_state=None) -> list[np.ndarray]:
    """Shuffle the rows and deal them out in ``n_clients`` nearly equal parts (sorted row indices each)."""
    if n_clients < 1 or n_clients > n_rows:
        raise InvalidParameterError(f"--clients must be between 1 and the number of training rows ({n_rows}); "
                                    f"got {n_clients}")
    rng = check_random_state(random_state)
    return [np.sort(part) for part in np.array_split(rng.permutation(n_rows), n_clients)]


def dirichlet_partition(y: np.ndarray, n_clients: int, alpha: float, *, min_rows: int = 5,
                        random_state=None, max_tries: int = 100) -> list[np.ndarray]:
    """Non-iid split: for each class, its rows go to clients in shares drawn from ``Dirichlet(alpha)``.

    Small ``alpha`` (0.1) gives each client a few dominant classes; large
    ``alpha`` (100) approaches an iid split.  Draws are repeated (seeded)
    until every client holds at least ``min_rows`` rows, as in Hsu et al.
    (2019), "Measuring the effects of non-identical data distribution for
    federated visual classification", arXiv:1909.06335.
    """
    y = np.asarray(y)
    if not alpha > 0:
        raise InvalidParameterError(f"--alpha must be a positive number; got {alpha}")
    if n_clients < 1 or n_clients * min_rows > len(y):
        raise InvalidParameterError(f"--clients {n_clients} is too many for {len(y)} training rows "
                                    f"(each client needs at least {min_rows})")
    rng = check_random_state(random_state)
    classes = np.unique(y)
    for _ in range(max_tries):
        parts: list[list[np.ndarray]] = [[] for _ in range(n_clients)]
        for c in classes:
            rows = rng.permutation(np.flatnonzero(y == c))
            shares = rng.dirichlet(np.full(n_clients, float(alpha)))
            cuts = (np.cumsum(shares)[:-1] * len(rows)).astype(int)
            for i, chunk in enumerate(np.split(rows, cuts)):
                parts[i].append(chunk)
        out = [np.sort(np.concatenate(p)) for p in parts]
        if min(len(p) for p in out) >= min_rows:
            return out
    raise InvalidParameterError(f"--alpha {alpha} with --clients {n_clients}: could not give every client "
                                f"{min_rows} rows in {max_tries} draws; use fewer clients or a larger --alpha")
