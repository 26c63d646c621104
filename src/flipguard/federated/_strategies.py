"""Label-flip-aware server strategies for Flower: LFighter, Tolpegin's PCA filter, FLTrust.

Each class is a :class:`flwr.serverapp.strategy.FedAvg` subclass, so a Flower
user passes it to their own ``ServerApp`` exactly like Flower's ``FedAvg`` or
``Krum`` (``strategy.start(grid=grid, initial_arrays=..., num_rounds=...)``).
Only :meth:`aggregate_train` changes: it scores the clients' updates, names
the clients it suspects, and aggregates the rest.  What each round suspected
is kept in ``suspects_`` (server round -> list of node ids) and ``scores_``
(server round -> {node id: score}), and the count goes into the round's
aggregated train metrics as ``"flipguard-suspects"``.

An *update* is ``local - global`` for every array (the global arrays are the
ones the strategy sent in :meth:`configure_train`).  The **output layer** is
the ``ArrayRecord`` entry named ``output_layer`` (default: the last 2-D
array), its classes along ``class_axis`` (0 for PyTorch ``Linear.weight``
and flipguard's NumPy models, 1 for a Keras ``Dense`` kernel).

Every random choice (k-means initialisation) is seeded by ``random_state``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from logging import INFO

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords
from flwr.supercore import log

from ..exceptions import InvalidParameterError

__all__ = ["FLTrust", "LFighter", "LabelFlipStrategy", "TolpeginPCA"]

SUSPECTS_METRIC = "flipguard-suspects"


def _kmeans2(data: np.ndarray, random_state: int) -> np.ndarray:
    """Seeded k-means with k=2 (scikit-learn, 10 initialisations); cluster label per row."""
    from sklearn.cluster import KMeans

    if len(data) < 2 or np.allclose(data, data[0]):
        return np.zeros(len(data), dtype=int)
    return KMeans(n_clusters=2, n_init=10, random_state=random_state).fit(data).labels_.astype(int)


class LabelFlipStrategy(FedAvg):
    """Base class: FedAvg over the clients a scoring rule keeps, with per-round suspects.

    Subclasses implement ``_suspect(server_round, updates, weights)`` and
    return a boolean array, True for a suspected client (and optionally a
    score per client, higher = more suspicious).

    Parameters
    ----------
    output_layer : str, default=None
        Key of the output layer's weight matrix in the ``ArrayRecord``
        (default: the last 2-D array).
    class_axis : int, default=0
        Axis of that matrix that indexes classes.
    random_state : int, default=0
        Seeds the clustering.
    **fedavg_kwargs
        Passed to :class:`flwr.serverapp.strategy.FedAvg` (``fraction_train``,
        ``min_available_nodes``, ``weighted_by_key``, ...).

    Attributes
    ----------
    suspects_ : dict[int, list[int]]
        Server round -> node ids of the clients suspected (and left out).
    scores_ : dict[int, dict[int, float]]
        Server round -> node id -> suspicion score (higher = more suspicious).
    """

    def __init__(self, *, output_layer: str | None = None, class_axis: int = 0, random_state: int = 0,
                 **fedavg_kwargs):
        super().__init__(**fedavg_kwargs)
        self.output_layer = output_layer
        self.class_axis = class_axis
        self.random_state = random_state
        self.suspects_: dict[int, list[int]] = {}
        self.scores_: dict[int, dict[int, float]] = {}
        self._global: dict[str, np.ndarray] | None = None

    # -- Flower hooks -----------------------------------------------------------
    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self._global = {k: v.numpy() for k, v in arrays.items()}
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        valid, _ = self._check_and_log_replies(replies, is_train=True)
        if not valid:
            return None, None
        if self._global is None:
            raise RuntimeError(f"{type(self).__name__}: aggregate_train before configure_train")
        contents = [m.content for m in valid]
        nodes = [int(m.metadata.src_node_id) for m in valid]
        locals_ = [{k: v.numpy() for k, v in next(iter(c.array_records.values())).items()} for c in contents]
        updates = [{k: loc[k] - self._global[k] for k in self._global} for loc in locals_]
        weights = np.array([float(next(iter(c.metric_records.values()))[self.weighted_by_key])
                            for c in contents])
        flagged, scores = self._suspect(server_round, updates, weights)
        flagged = np.asarray(flagged, dtype=bool)
        self.suspects_[server_round] = [n for n, f in zip(nodes, flagged) if f]
        self.scores_[server_round] = {n: float(s) for n, s in zip(nodes, scores)}
        log(INFO, "%s: round %s suspects %s of %s clients", type(self).__name__, server_round,
            int(flagged.sum()), len(nodes))
        kept = [c for c, f in zip(contents, flagged) if not f]
        arrays = self._aggregate(kept, [u for u, f in zip(updates, flagged) if not f], scores, flagged)
        metrics = self.train_metrics_aggr_fn(kept or contents, self.weighted_by_key)
        metrics[SUSPECTS_METRIC] = int(flagged.sum())
        return arrays, metrics

    # -- helpers ------------------------------------------------------------------
    def _aggregate(self, kept_contents, kept_updates, scores, flagged) -> ArrayRecord | None:
        if not kept_contents:
            return None  # keep the global model this round
        return aggregate_arrayrecords(kept_contents, self.weighted_by_key)

    def _suspect(self, server_round, updates, weights):  # pragma: no cover - abstract
        raise NotImplementedError

    def _output_rows(self, updates: list[dict[str, np.ndarray]]) -> tuple[np.ndarray, np.ndarray | None]:
        """Output-layer updates as (clients, classes, fan-in), and the output bias updates (clients, classes)."""
        keys = list(updates[0])
        key = self.output_layer
        if key is None:
            two_d = [k for k in keys if updates[0][k].ndim == 2]
            if not two_d:
                raise InvalidParameterError(f"{type(self).__name__}: the model has no 2-D array to use as "
                                            "output layer; name it with output_layer=")
            key = two_d[-1]
        elif key not in updates[0]:
            raise InvalidParameterError(f"{type(self).__name__}: output_layer {key!r} is not in the model's "
                                        f"arrays ({', '.join(keys)})")
        W = np.stack([np.moveaxis(u[key], self.class_axis, 0) for u in updates])
        W = W.reshape(W.shape[0], W.shape[1], -1)
        bias = None
        pos = keys.index(key)
        if pos + 1 < len(keys) and updates[0][keys[pos + 1]].shape == (W.shape[1],):
            bias = np.stack([u[keys[pos + 1]] for u in updates])
        return W, bias


class LFighter(LabelFlipStrategy):
    """LFighter: cluster the output-layer updates of the two most-moved classes, drop the worse cluster.

    Jebreel et al. observe that an honest and a label-flipping client's
    updates are nearly parallel overall but point apart on the output
    neurons of the source and target classes, because the two fight over the
    source-class examples.  Each round the strategy follows the authors'
    aggregation (``LFD.aggregate`` in their released code):

    1. takes every client's output-layer update; with more than two
       classes it sums, over clients, the norm of each class's row plus the
       absolute bias update, and keeps the rows of the two largest (the
       likely source and target classes); with one or two output neurons it
       keeps the whole output layer;
    2. clusters the clients on those rows (k-means, k=2, seeded);
    3. scores each cluster ``C`` by its size share times its dissimilarity,
       ``|C| / m * (1 - mean_i min_j (cos(g_i, g_j) - [i = j]))``: the
       cosine-similarity matrix of the members minus the identity, so a
       member's own entry counts as 0 and the per-member minimum is at most
       0.  A cluster whose members all point the same way scores exactly
       its share (the attackers, who share one objective, and on iid data
       the honest clients too); members pointing against each other (honest
       clients with different data) raise it.
       The cluster with the **higher** score is kept (ties: the first);
    4. averages the kept clients' models (Flower's FedAvg, weighted by
       ``weighted_by_key``; the authors' code takes an unweighted mean).

    Because the dense cluster scores exactly its share, a coherent honest
    majority is never dropped for being dense; the smaller cluster is kept
    only when its members disagree among themselves more than the size gap.
    (Taking the minimum over the *other* members only, as flipguard did
    before, makes a dense honest majority score near 0, and on two-class
    data it dropped the honest majority every round: breast cancer, 40 %
    attackers, source recall 0.00.)

    It always drops one of the two clusters, also when nobody attacks.  On
    iid data that costs honest updates, not accuracy; on non-iid data with
    few attackers it can drop the honest clients that hold most of the
    source class (docs/federated.md, "Where each defence breaks").

    Parameters
    ----------
    See :class:`LabelFlipStrategy`.

    Attributes
    ----------
    cluster_scores_ : dict[int, tuple[float, float]]
        Server round -> (score of the kept cluster, score of the dropped one).

    References
    ----------
    N. M. Jebreel, J. Domingo-Ferrer, D. Sánchez, A. Blanco-Justicia,
    "LFighter: Defending against the label-flipping attack in federated
    learning", Neural Networks 170 (2024) 111-126 (arXiv:2207.01982);
    reference code https://github.com/NajeebJebreel/LFighter
    (``aggregation.py``, class ``LFD``).

    Examples
    --------
    >>> from flipguard.federated import LFighter
    >>> strategy = LFighter(fraction_evaluate=0.0, random_state=0)  # pass to your ServerApp
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.cluster_scores_: dict[int, tuple[float, float]] = {}

    def _suspect(self, server_round, updates, weights):
        W, bias = self._output_rows(updates)
        m, k = W.shape[0], W.shape[1]
        if m < 3:
            return np.zeros(m, dtype=bool), np.zeros(m)
        if k <= 2:
            data = W.reshape(m, -1)
        else:
            importance = np.linalg.norm(W, axis=2).sum(axis=0)
            if bias is not None:
                importance = importance + np.abs(bias).sum(axis=0)
            pair = np.argsort(importance, kind="stable")[-2:]
            data = W[:, pair].reshape(m, -1)
        labels = _kmeans2(data, self.random_state)
        if labels.min() == labels.max():
            return np.zeros(m, dtype=bool), np.zeros(m)
        score = [_lfighter_score(data[labels == c], m) for c in (0, 1)]
        good = 1 if score[0] < score[1] else 0
        self.cluster_scores_[server_round] = (score[good], score[1 - good])
        flagged = labels != good
        return flagged, flagged.astype(float)


def _lfighter_score(members: np.ndarray, m: int) -> float:
    """LFighter's cluster score: share ``|C|/m`` times ``1 - mean_i min_j (cos_ij - [i = j])``; higher = kept.

    ``members`` holds one client's extracted output-layer update per row,
    ``m`` is the number of clients in the round.  As in the authors' code,
    the identity is subtracted from the cosine-similarity matrix, so each
    row's minimum is at most 0: a cluster whose members all have positive
    cosines scores exactly its share.
    """
    members = np.asarray(members, dtype=np.float64)
    n = len(members)
    norms = np.linalg.norm(members, axis=1)
    unit = members / np.where(norms > 0, norms, 1.0)[:, None]
    cos = unit @ unit.T - np.eye(n)
    return n / m * (1.0 - float(np.mean(cos.min(axis=1))))


class TolpeginPCA(LabelFlipStrategy):
    """Tolpegin et al.'s PCA on the output-layer updates of one class, turned into an automatic filter.

    Tolpegin et al. show that projecting the clients' updates of the
    *source class's* output neuron onto their principal components separates
    label-flipping clients from honest ones, and propose dropping them.  The
    paper leaves the separation to a human looking at the 2-D plot; here it
    is automatic: the updates of the class's output row are standardised,
    reduced with PCA to the components explaining 99 % of the variance, and
    split with seeded k-means (k=2); the **minority** cluster is suspected
    (the defence assumes fewer than half of the clients attack).  Without a
    known ``source_class`` every class is tried and the one whose two clusters
    separate best (highest silhouette) is used; Jebreel et al.'s
    re-implementation takes the largest distance between the two centres
    instead, which one outlying honest client can win.

    Like LFighter it always names a minority, also when nobody attacks.

    Parameters
    ----------
    source_class : int, default=None
        Index of the suspected source class in the output layer; ``None``:
        chosen each round as described.
    **kwargs
        See :class:`LabelFlipStrategy`.

    References
    ----------
    V. Tolpegin, S. Truex, M. E. Gursoy, L. Liu, "Data poisoning attacks
    against federated learning systems", ESORICS 2020, LNCS 12308, 480-501.
    """

    def __init__(self, *, source_class: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.source_class = source_class

    def _suspect(self, server_round, updates, weights):
        W, _ = self._output_rows(updates)
        m, k = W.shape[0], W.shape[1]
        if m < 3:
            return np.zeros(m, dtype=bool), np.zeros(m)
        if self.source_class is not None and not 0 <= self.source_class < k:
            raise InvalidParameterError(f"TolpeginPCA: source_class {self.source_class} is not one of the "
                                        f"{k} output classes")
        from sklearn.metrics import silhouette_score

        candidates = [self.source_class] if self.source_class is not None else range(k)
        best, best_labels = -1.0, np.zeros(m, dtype=int)
        for c in candidates:
            reduced = _pca99(W[:, c, :])
            labels = _kmeans2(reduced, self.random_state)
            if labels.min() == labels.max():
                continue
            gap = float(silhouette_score(reduced, labels))
            if gap > best:
                best, best_labels = gap, labels
        if best < 0:
            return np.zeros(m, dtype=bool), np.zeros(m)
        minority = 1 if np.sum(best_labels == 1) <= np.sum(best_labels == 0) else 0
        flagged = best_labels == minority
        return flagged, flagged.astype(float)


def _pca99(data: np.ndarray) -> np.ndarray:
    """Standardise columns and keep the principal components that explain 99 % of the variance."""
    sd = data.std(axis=0)
    z = (data - data.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    u, s, _ = np.linalg.svd(z, full_matrices=False)
    var = s ** 2
    if var.sum() <= 0:
        return z[:, :1] * 0.0
    keep = max(1, int(np.searchsorted(np.cumsum(var) / var.sum(), 0.99) + 1))
    return u[:, :keep] * s[:keep]


class FLTrust(LabelFlipStrategy):
    """FLTrust: trust each client by the cosine of its update with the server's own update on a small root set.

    Each round the server trains the current global model on its small
    clean *root* dataset (``root_update_fn``) and gets the server update
    ``g0``.  A client's trust score is ``ReLU(cos(g_i, g0))``; its update is
    rescaled to the norm of ``g0``; the new global model is the global model
    plus ``server_lr`` times the trust-weighted mean of the rescaled updates.
    Clients with trust score 0 (update at 90 degrees or more from the
    server's) contribute nothing and are the ones reported as suspects.

    Parameters
    ----------
    root_update_fn : callable
        ``root_update_fn(global_arrays, server_round) -> arrays``: the model
        the server gets by training ``global_arrays`` (a ``dict`` of NumPy
        arrays, same keys as the ``ArrayRecord``) on its root data, the same
        way clients train.  Required.
    server_lr : float, default=1.0
        Global learning rate (the paper's alpha).
    **kwargs
        See :class:`LabelFlipStrategy`.

    References
    ----------
    X. Cao, M. Fang, J. Liu, N. Z. Gong, "FLTrust: Byzantine-robust federated
    learning via trust bootstrapping", NDSS 2021.
    """

    def __init__(self, *, root_update_fn: Callable[[dict, int], dict] | None = None, server_lr: float = 1.0,
                 **kwargs):
        super().__init__(**kwargs)
        self.root_update_fn = root_update_fn
        self.server_lr = server_lr
        self.trust_: dict[int, dict[int, float]] = {}

    def _suspect(self, server_round, updates, weights):
        if self.root_update_fn is None:
            raise InvalidParameterError("FLTrust needs root_update_fn (the server's training on its root data)")
        root = self.root_update_fn({k: v.copy() for k, v in self._global.items()}, server_round)
        g0 = np.concatenate([np.ravel(root[k] - self._global[k]) for k in self._global])
        G = np.stack([np.concatenate([np.ravel(u[k]) for k in self._global]) for u in updates])
        n0 = float(np.linalg.norm(g0))
        norms = np.linalg.norm(G, axis=1)
        cos = (G @ g0) / np.where(norms * n0 > 0, norms * n0, np.inf)
        trust = np.maximum(cos, 0.0)
        self._trust, self._g_norms, self._n0 = trust, norms, n0
        return trust <= 0.0, 1.0 - trust

    def _aggregate(self, kept_contents, kept_updates, scores, flagged):
        trust = self._trust[~flagged]
        norms = self._g_norms[~flagged]
        if trust.sum() <= 0 or self._n0 <= 0:
            return None
        scale = trust * self._n0 / np.where(norms > 0, norms, np.inf) / trust.sum()
        out = ArrayRecord()
        for key, g in self._global.items():
            step = sum(s * u[key] for s, u in zip(scale, kept_updates))
            out[key] = Array(np.asarray(g + self.server_lr * step))
        return out
