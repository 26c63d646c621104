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

Before any scoring every reply is checked against the global model the
strategy sent.  A reply whose arrays have other keys or shapes than the global
model's, are not real numbers or hold NaN or infinity, or whose example count
is missing, not finite or negative, is **refused**: never aggregated, named in
``suspects_`` with its reason in ``refused_`` (server round -> node id ->
reason), and the round goes on with the other replies.  (Flower's ``FedAvg``
stops the round on mismatched keys, fails on mismatched shapes and averages
NaN into the model.)

Every random choice (k-means initialisation) is seeded by ``random_state``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from logging import INFO, WARNING

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords, validate_message_reply_consistency
from flwr.supercore import log

from ..exceptions import InvalidParameterError

__all__ = ["FLTrust", "LFighter", "LabelFlipStrategy", "TolpeginPCA"]

SUSPECTS_METRIC = "flipguard-suspects"

#: Values above this are scaled down before norms, k-means and PCA, whose squares would overflow to
#: infinity: a finite update of 1e200 is a legal reply and must not break a round.
_HUGE = 1e100


def _tame_rows(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, scale)``: each row of ``data`` whose values are huge divided by its largest |value|.

    Rows of ordinary size are divided by 1.0 (returned bit for bit), so nothing moves for them;
    ``row_norm = norm(rows[i]) * scale[i]`` without overflow, and cosines are unchanged.
    """
    data = np.asarray(data, dtype=np.float64)
    if data.size == 0:
        return data, np.ones(len(data))
    peak = np.max(np.abs(data.reshape(len(data), -1)), axis=1)
    scale = np.where(peak > _HUGE, peak, 1.0)
    return data / scale.reshape((-1,) + (1,) * (data.ndim - 1)), scale


def _shrink(data: np.ndarray) -> np.ndarray:
    """``data`` divided by its largest |value| when that is huge (keeps relative sizes for k-means / PCA)."""
    data = np.asarray(data, dtype=np.float64)
    peak = float(np.max(np.abs(data), initial=0.0))
    return data / peak if peak > _HUGE else data


def _kmeans2(data: np.ndarray, random_state: int) -> np.ndarray:
    """Seeded k-means with k=2 (scikit-learn, 10 initialisations); cluster label per row."""
    from sklearn.cluster import KMeans

    data = _shrink(data)
    if len(data) < 2 or np.allclose(data, data[0]):
        return np.zeros(len(data), dtype=int)
    return KMeans(n_clusters=2, n_init=10, random_state=random_state).fit(data).labels_.astype(int)


class LabelFlipStrategy(FedAvg):
    """Base class: FedAvg over the clients a scoring rule keeps, with per-round suspects.

    Subclasses implement ``_suspect(server_round, updates, weights)`` and
    return a boolean array, True for a suspected client (and optionally a
    score per client, higher = more suspicious).  They only ever see
    accepted updates: a reply whose arrays do not match the global model
    (other keys or shapes, not real numbers), hold NaN or infinity, or whose
    example count is missing, not finite or negative is refused first,
    suspected with its reason in ``refused_`` and never aggregated.  What
    Flower's ``FedAvg`` checks beyond that (one MetricRecord with the same
    keys in every accepted reply) it still checks, and stops the round as
    ``FedAvg`` does.

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
    Every attribute has an entry for every round :meth:`aggregate_train`
    ran (also a round without replies: empty list / dict).

    suspects_ : dict[int, list[int]]
        Server round -> node ids of the clients suspected (and left out),
        the refused ones included.
    scores_ : dict[int, dict[int, float]]
        Server round -> node id -> suspicion score (higher = more
        suspicious); a refused update scores 1.0, the top of every
        strategy's scale.
    refused_ : dict[int, dict[int, str]]
        Server round -> node id -> why its update was refused (wrong keys or
        shapes, NaN or infinity, a bad example count).
    """

    def __init__(self, *, output_layer: str | None = None, class_axis: int = 0, random_state: int = 0,
                 **fedavg_kwargs):
        super().__init__(**fedavg_kwargs)
        self.output_layer = output_layer
        self.class_axis = class_axis
        self.random_state = random_state
        self.suspects_: dict[int, list[int]] = {}
        self.scores_: dict[int, dict[int, float]] = {}
        self.refused_: dict[int, dict[int, str]] = {}
        self._global: dict[str, np.ndarray] | None = None

    # -- Flower hooks -----------------------------------------------------------
    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self._global = {k: v.numpy() for k, v in arrays.items()}
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        # Flower's consistency check (same keys in every reply, ...) would stop the whole round for one
        # bad reply; each reply is checked against the global model below instead.
        valid, _ = self._check_and_log_replies(replies, is_train=True, validate=False)
        if self._global is None:
            raise RuntimeError(f"{type(self).__name__}: aggregate_train before configure_train")
        self.suspects_[server_round], self.scores_[server_round] = [], {}
        self.refused_[server_round] = {}
        self._begin_round(server_round)
        if not valid:
            self._end_round(server_round, [], [])
            return None, None
        nodes = [int(m.metadata.src_node_id) for m in valid]
        read = [self._read_reply(m.content) for m in valid]
        ok = [i for i, (reason, _, _) in enumerate(read) if reason is None]
        for n, (reason, _, _) in zip(nodes, read):
            if reason is not None:
                self.refused_[server_round][n] = reason
                log(WARNING, "%s: round %s refuses the update of node %s: %s", type(self).__name__, server_round,
                    n, reason)
        contents = [valid[i].content for i in ok]
        updates = [read[i][1] for i in ok]
        weights = np.array([read[i][2] for i in ok], dtype=np.float64)
        if contents:
            # the arrays now all match the global model; Flower's remaining checks (one MetricRecord with
            # the same keys in every reply) apply as in its FedAvg
            validate_message_reply_consistency(contents, self.weighted_by_key, check_arrayrecord=True)
            flagged_ok, scores_ok = self._suspect(server_round, updates, weights)
            flagged_ok = np.asarray(flagged_ok, dtype=bool)
            scores_ok = np.asarray(scores_ok, dtype=np.float64)
        else:
            flagged_ok, scores_ok = np.zeros(0, dtype=bool), np.zeros(0)
        flagged = np.ones(len(nodes), dtype=bool)
        scores = np.ones(len(nodes))
        flagged[ok], scores[ok] = flagged_ok, scores_ok
        self.suspects_[server_round] = [n for n, f in zip(nodes, flagged) if f]
        self.scores_[server_round] = {n: float(s) for n, s in zip(nodes, scores)}
        self._end_round(server_round, nodes, ok)
        log(INFO, "%s: round %s suspects %s of %s clients (%s refused)", type(self).__name__, server_round,
            int(flagged.sum()), len(nodes), len(nodes) - len(ok))
        kept = [c for c, f in zip(contents, flagged_ok) if not f]
        kept_w = float(sum(w for w, f in zip(weights, flagged_ok) if not f))
        if kept and kept_w > 0:
            arrays = self._aggregate(kept, [u for u, f in zip(updates, flagged_ok) if not f], scores_ok, flagged_ok)
            metrics = self.train_metrics_aggr_fn(kept, self.weighted_by_key)
        else:  # nothing aggregated: the global model stays as it is this round
            arrays, metrics = None, MetricRecord()
        metrics[SUSPECTS_METRIC] = int(flagged.sum())
        return arrays, metrics

    # -- helpers ------------------------------------------------------------------
    def _read_reply(self, content) -> tuple[str | None, dict[str, np.ndarray] | None, float]:
        """``(reason, update, weight)``: ``reason`` is None for an acceptable reply, else why it is refused."""
        arecs, mrecs = content.array_records, content.metric_records
        if len(arecs) != 1:
            return f"it holds {len(arecs)} ArrayRecords, not one", None, 0.0
        if len(mrecs) != 1:
            return f"it holds {len(mrecs)} MetricRecords, not one", None, 0.0
        metrics = next(iter(mrecs.values()))
        if self.weighted_by_key not in metrics:
            return f"its MetricRecord has no {self.weighted_by_key!r}", None, 0.0
        w = metrics[self.weighted_by_key]
        if isinstance(w, (list, bool)) or not isinstance(w, (int, float)) or not np.isfinite(w) or w < 0:
            return f"its {self.weighted_by_key!r} is {w!r}, not a finite number >= 0", None, 0.0
        record = next(iter(arecs.values()))
        keys = list(record.keys())
        missing = [k for k in self._global if k not in record]
        extra = [k for k in keys if k not in self._global]
        if missing or extra:
            said = ([f"missing {', '.join(map(repr, missing))}"] if missing else []) + \
                   ([f"unexpected {', '.join(map(repr, extra))}"] if extra else [])
            return f"its arrays do not match the global model's ({'; '.join(said)})", None, 0.0
        update = {}
        for k, g in self._global.items():
            try:
                a = record[k].numpy()
            except Exception as exc:  # noqa: BLE001  (a reply Flower cannot even decode)
                return f"array {k!r} cannot be read ({type(exc).__name__})", None, 0.0
            if a.shape != g.shape:
                return f"array {k!r} has shape {a.shape}, the global model's has {g.shape}", None, 0.0
            if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
                return f"array {k!r} holds {a.dtype}, not real numbers", None, 0.0
            if not np.all(np.isfinite(a)):
                return f"array {k!r} holds NaN or infinity", None, 0.0
            with np.errstate(over="ignore", invalid="ignore"):
                u = a - g
            if not np.all(np.isfinite(u)):
                return f"array {k!r} minus the global model's overflows", None, 0.0
            update[k] = u
        return None, update, float(w)

    def _begin_round(self, server_round: int) -> None:
        """Give the subclass's per-round attributes their default entry for ``server_round``."""

    def _end_round(self, server_round: int, nodes: list[int], accepted: list[int]) -> None:
        """After scoring: ``nodes`` of the round's replies, ``accepted`` the positions of those scored."""

    def _aggregate(self, kept_contents, kept_updates, scores, flagged) -> ArrayRecord | None:
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
    cluster_scores_ : dict[int, tuple[float, float] | None]
        Server round -> (score of the kept cluster, score of the dropped
        one); ``None`` for a round in which nothing was clustered (fewer
        than three accepted replies, or k-means found a single cluster) and
        nobody but the refused replies was left out.  Every aggregated
        round has an entry, like ``suspects_``.

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
        self.cluster_scores_: dict[int, tuple[float, float] | None] = {}

    def _begin_round(self, server_round):
        self.cluster_scores_[server_round] = None

    def _suspect(self, server_round, updates, weights):
        W, bias = self._output_rows(updates)
        m, k = W.shape[0], W.shape[1]
        if m < 3:
            return np.zeros(m, dtype=bool), np.zeros(m)
        if k <= 2:
            data = W.reshape(m, -1)
        else:
            with np.errstate(over="ignore"):  # a huge (finite) update makes its rows' norms inf: still the largest
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
    members, _ = _tame_rows(members)  # only directions matter here; huge rows would overflow the norm
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
    data = _shrink(data)
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

    The server update must be usable: if ``root_update_fn`` returns the
    global model unchanged (norm 0: an empty root set, a learning rate of 0)
    or NaN / infinity, there is nothing to measure the clients against, and
    :meth:`aggregate_train` raises :class:`~flipguard.exceptions.InvalidParameterError`
    naming the round rather than giving every client trust 0 and never
    training (which is what the formula does with ``g0 = 0``).

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

    Attributes
    ----------
    trust_ : dict[int, dict[int, float]]
        Server round -> node id -> trust score in [0, 1] (0 for a suspected
        or refused update).  Every aggregated round has an entry.

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

    def _begin_round(self, server_round):
        self.trust_[server_round] = {}
        self._trust = np.zeros(0)

    def _end_round(self, server_round, nodes, accepted):
        trust = {n: 0.0 for n in nodes}
        for i, t in zip(accepted, self._trust):
            trust[nodes[i]] = float(t)
        self.trust_[server_round] = trust

    def _server_update(self, server_round) -> np.ndarray:
        if self.root_update_fn is None:
            raise InvalidParameterError("FLTrust needs root_update_fn (the server's training on its root data)")
        root = self.root_update_fn({k: v.copy() for k, v in self._global.items()}, server_round)
        bad = [k for k in self._global if k not in root or np.shape(root[k]) != self._global[k].shape]
        if bad:
            raise InvalidParameterError(f"FLTrust: root_update_fn returned arrays that do not match the global "
                                        f"model's ({', '.join(map(repr, bad))})")
        with np.errstate(over="ignore", invalid="ignore"):
            g0 = np.concatenate([np.ravel(np.asarray(root[k], dtype=np.float64) - self._global[k])
                                 for k in self._global])
        if not np.all(np.isfinite(g0)):
            raise InvalidParameterError(f"FLTrust: the server's update on its root set holds NaN or infinity in "
                                        f"round {server_round}; there is nothing to weigh the clients against")
        if not np.any(g0):
            raise InvalidParameterError(f"FLTrust: the server's update on its root set is zero in round "
                                        f"{server_round} (root_update_fn returned the global model unchanged: "
                                        "an empty root set?); there is nothing to weigh the clients against")
        return g0

    def _suspect(self, server_round, updates, weights):
        g0 = self._server_update(server_round)
        G = np.stack([np.concatenate([np.ravel(u[k]) for k in self._global]) for u in updates])
        # huge (finite) rows are scaled before norms and dot products, which would overflow; for rows of
        # ordinary size this is the plain formula, to the last bit
        Gt, g_scale = _tame_rows(G)
        g0t, g0_scale = _tame_rows(g0[None, :])
        n0t = float(np.linalg.norm(g0t[0]))
        n0 = n0t * float(g0_scale[0])
        normt = np.linalg.norm(Gt, axis=1)
        norms = normt * g_scale
        cos = (Gt @ g0t[0]) / np.where(normt * n0t > 0, normt * n0t, np.inf)
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
