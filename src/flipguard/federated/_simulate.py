"""A label-flipping federation on Flower's own simulation engine (``flwr.simulation.run_simulation``, Ray backend).

One simulation starts Ray once and runs, inside one ``ServerApp``, the
no-attacker FedAvg baseline and then every requested defence against the
same clients, data split and attackers.  Each defence is a Flower strategy
driven by Flower's own ``Strategy.start`` loop; the clients are a Flower
``ClientApp`` whose malicious members train on flipped labels from
``attack_from`` on.  The global model is scored on a held-out clean test
split after every round.

Determinism: the data split, partitions, attackers, flips, client training
and clustering are all seeded from ``random_state``; the replies of each
round are put in client order before a strategy sees them (Flower's node
ids and message order are random), so the same seed gives the same numbers.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.utils import check_random_state

from .._registry import Registry
from ..exceptions import InvalidParameterError
from ._model import MODEL_NAMES, NumpyModel
from ._partition import dirichlet_partition, iid_partition
from ._result import FederatedResult, FederatedRun, RoundMetrics

__all__ = ["DEFENCES", "attacker_counts", "check_settings", "defence_names", "make_defence", "ray_backend_config",
           "simulate"]

ATTACK_KEY = "flipguard-attack"
PARTITION_KEY = "partition-id"

#: defence name -> small class building the Flower strategy.
DEFENCES = Registry("defence", "defence_name")
defence_names = DEFENCES.names


@dataclass
class DefenceContext:
    """What a defence may know: sizes, the expected number of attackers (for Krum/trimming), the root set."""

    n_clients: int
    n_malicious: int
    random_state: int
    root_update_fn: Any = None

    @property
    def common(self) -> dict[str, Any]:
        n = self.n_clients
        return {"fraction_train": 1.0, "fraction_evaluate": 0.0, "min_train_nodes": n,
                "min_available_nodes": n, "min_evaluate_nodes": 0}


class _Defence:
    names_suspects = False

    def build(self, ctx: DefenceContext):  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def check(cls, n_clients: int, n_malicious: int) -> None:
        """Refuse (before any simulation) a number of clients and attackers the defence cannot work with."""


@DEFENCES.register("fedavg")
class _FedAvg(_Defence):
    """Flower's FedAvg (McMahan et al., 2017): no defence."""

    def build(self, ctx):
        from flwr.serverapp.strategy import FedAvg
        return FedAvg(**ctx.common)


def _check_krum(name: str, n_clients: int, n_malicious: int) -> None:
    """Krum scores each update by its n - f - 2 nearest neighbours: at least one is needed.

    Blanchard et al.'s guarantee needs more, n > 2f + 2; 10 clients with 4
    attackers (the benchmark's 40 %) run Krum outside it, on purpose (where
    it breaks is part of the results; docs/federated.md).  Flower's Krum
    silently scores with one neighbour when n - f - 2 < 1; that is refused.
    """
    if n_malicious and n_clients - n_malicious - 2 < 1:
        raise InvalidParameterError(f"defence {name} needs --clients >= attackers + 3 (each update is scored "
                                    f"against its n - f - 2 nearest neighbours); got {n_clients} clients with "
                                    f"{n_malicious} attacker(s)")


@DEFENCES.register("krum")
class _Krum(_Defence):
    """Flower's Krum (Blanchard et al., 2017), told the true number of attackers."""

    @classmethod
    def check(cls, n_clients, n_malicious):
        _check_krum("krum", n_clients, n_malicious)

    def build(self, ctx):
        from flwr.serverapp.strategy import Krum
        return Krum(num_malicious_nodes=ctx.n_malicious, **ctx.common)


@DEFENCES.register("multikrum")
class _MultiKrum(_Defence):
    """Flower's Multi-Krum: averages the n - f best-scored updates."""

    @classmethod
    def check(cls, n_clients, n_malicious):
        _check_krum("multikrum", n_clients, n_malicious)

    def build(self, ctx):
        from flwr.serverapp.strategy import MultiKrum
        return MultiKrum(num_malicious_nodes=ctx.n_malicious,
                         num_nodes_to_select=max(1, ctx.n_clients - ctx.n_malicious), **ctx.common)


@DEFENCES.register("median")
class _Median(_Defence):
    """Flower's FedMedian (Yin et al., 2018): coordinate-wise median."""

    def build(self, ctx):
        from flwr.serverapp.strategy import FedMedian
        return FedMedian(**ctx.common)


@DEFENCES.register("trimmed_mean")
class _TrimmedMean(_Defence):
    """Flower's FedTrimmedAvg, trimming the share of attackers from each end (at least 10 %, below 50 %)."""

    def build(self, ctx):
        from flwr.serverapp.strategy import FedTrimmedAvg
        beta = min(0.45, max(0.1, ctx.n_malicious / ctx.n_clients))
        return FedTrimmedAvg(beta=beta, **ctx.common)


@DEFENCES.register("bulyan")
class _Bulyan(_Defence):
    """Flower's Bulyan (El Mhamdi et al., 2018); needs at least 4f + 3 clients."""

    @classmethod
    def check(cls, n_clients, n_malicious):
        if n_clients < 4 * n_malicious + 3:
            raise InvalidParameterError(f"defence bulyan needs --clients >= 4 x attackers + 3 "
                                        f"({4 * n_malicious + 3} for {n_malicious} attacker(s)); got {n_clients}")

    def build(self, ctx):
        from flwr.serverapp.strategy import Bulyan
        self.check(ctx.n_clients, ctx.n_malicious)
        return Bulyan(num_malicious_nodes=ctx.n_malicious, **ctx.common)


@DEFENCES.register("lfighter")
class _LFighter(_Defence):
    """flipguard's :class:`~flipguard.federated.LFighter`."""

    names_suspects = True

    def build(self, ctx):
        from ._strategies import LFighter
        return LFighter(random_state=ctx.random_state, **ctx.common)


@DEFENCES.register("tolpegin")
class _Tolpegin(_Defence):
    """flipguard's :class:`~flipguard.federated.TolpeginPCA` (source class found automatically)."""

    names_suspects = True

    def build(self, ctx):
        from ._strategies import TolpeginPCA
        return TolpeginPCA(random_state=ctx.random_state, **ctx.common)


@DEFENCES.register("fltrust")
class _FLTrust(_Defence):
    """flipguard's :class:`~flipguard.federated.FLTrust` with the server's root set."""

    names_suspects = True

    def build(self, ctx):
        from ._strategies import FLTrust
        return FLTrust(root_update_fn=ctx.root_update_fn, random_state=ctx.random_state, **ctx.common)


def make_defence(name: str, *, n_clients: int, n_malicious: int = 0, random_state: int = 0,
                 root_update_fn=None):
    """The Flower strategy registered as ``name``, configured for ``n_clients`` clients."""
    return DEFENCES.get_class(name)().build(DefenceContext(n_clients, n_malicious, random_state, root_update_fn))


# -- Ray and logging ------------------------------------------------------------
def ray_backend_config(num_cpus: int = 2, object_store_mb: int = 100) -> dict[str, Any]:
    """A small Ray backend: one CPU per client, ``num_cpus`` in total, a small object store, no dashboard."""
    return {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {"num_cpus": int(num_cpus), "num_gpus": 0, "address": "local",
                      "object_store_memory": int(object_store_mb) * 1024 * 1024,
                      "include_dashboard": False, "logging_level": logging.ERROR, "log_to_driver": False,
                      "configure_logging": True},
    }


def _init_ray(num_cpus: int) -> None:
    """Start the small local Ray instance ourselves (Flower's backend then reuses it and shuts it down).

    Flower would start Ray with a ``runtime_env`` that makes every actor
    start slowly; flipguard is installed in the interpreter Ray's workers
    use, so it needs none.  A start that times out (Ray waits 30 s for its
    raylet, which a loaded machine can exceed) is retried twice.
    """
    import ray

    if ray.is_initialized():
        return
    for attempt in range(3):
        try:
            ray.init(**ray_backend_config(num_cpus)["init_args"])
            return
        except Exception:  # Ray gives its raylet 30 s to register; a busy machine can miss that
            ray.shutdown()
            if attempt == 2:
                raise


@contextlib.contextmanager
def _quiet(verbose: bool):
    """Silence Flower's and Ray's loggers (and telemetry) unless ``verbose``."""
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    names = ("flwr", "ray")
    old = {n: logging.getLogger(n).level for n in names}
    if not verbose:
        for n in names:
            logging.getLogger(n).setLevel(logging.ERROR)
    try:
        yield
    finally:
        for n, lvl in old.items():
            logging.getLogger(n).setLevel(lvl)


# -- client side ------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def _client_data(path: str) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def _arrays_to_dict(record) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in record.items()}


def _dict_to_arrays(params: dict[str, np.ndarray]):
    from flwr.app import Array, ArrayRecord

    rec = ArrayRecord()
    for k, v in params.items():
        rec[k] = Array(np.ascontiguousarray(v))
    return rec


def build_client_app(data_path: str, model: NumpyModel, attack_from: int, random_state: int):
    """The simulation's ``ClientApp``: client ``partition-id`` trains ``model`` on its rows.

    The server's train config says how many attackers are active in the
    current run (``"flipguard-attack"``); client ``pid`` is one of them when
    its attacker rank is below that number, and then trains on its flipped
    labels from round ``attack_from`` on.
    The data live in an ``.npz`` file each Ray worker reads once.
    """
    from flwr.app import Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from threadpoolctl import threadpool_limits

    app = ClientApp()

    @app.train()
    def train(msg, context):
        pid = int(context.node_config[PARTITION_KEY])
        d = _client_data(data_path)
        lo, hi = int(d["offsets"][pid]), int(d["offsets"][pid + 1])
        cfg = msg.content["config"]
        rnd = int(cfg["server-round"])
        n_attackers = int(cfg.get(ATTACK_KEY, 0))
        poisoned = int(d["rank"][pid]) < n_attackers and rnd >= attack_from
        y = (d["y_poisoned"] if poisoned else d["y"])[lo:hi]
        with threadpool_limits(1):
            params = model.fit(_arrays_to_dict(msg.content["arrays"]), d["X"][lo:hi], y,
                               random_state=_seed(random_state, pid, rnd))
        content = RecordDict({"arrays": _dict_to_arrays(params),
                              "metrics": MetricRecord({"num-examples": hi - lo, PARTITION_KEY: pid})})
        return Message(content=content, reply_to=msg)

    return app


# -- server side ----------------------------------------------------------------------
class _OrderedGrid:
    """A Grid that hands replies to the strategy in client order and fails loudly on a client error."""

    def __init__(self, grid):
        self._grid = grid
        self.partition_of: dict[int, int] = {}

    def __getattr__(self, name):
        return getattr(self._grid, name)

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        if not messages:
            return []
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        for r in replies:
            if r.has_error():
                raise RuntimeError(f"a federated client failed: {r.error.reason}")
        if len(replies) != len(messages):
            raise RuntimeError(f"only {len(replies)} of {len(messages)} clients replied")
        for r in replies:
            self.partition_of[int(r.metadata.src_node_id)] = int(r.content["metrics"][PARTITION_KEY])
        return sorted(replies, key=lambda r: self.partition_of[int(r.metadata.src_node_id)])


def _score(model, params, X, y, source, target) -> tuple[float, float | None, float | None]:
    pred = model.predict(params, X)
    acc = float(np.mean(pred == y))
    if source is None:
        return acc, None, None
    rows = y == source
    recall = float(np.mean(pred[rows] == source))
    asr = float(np.mean(pred[rows] == target)) if target is not None else None
    return acc, recall, asr


def _detection(suspects, malicious) -> tuple[float | None, float | None]:
    if suspects is None:
        return None, None
    s, m = set(suspects), set(malicious)
    precision = len(s & m) / len(s) if s else None
    recall = len(s & m) / len(m) if m else None
    return precision, recall


# -- settings, checked before any work ---------------------------------------------------
def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def attacker_counts(fractions, n_clients: int) -> list[int]:
    """Attackers for each ``--malicious`` fraction of ``n_clients``, refusing a fraction that gives none or half.

    A fraction ``m`` gives ``round(m x n)`` attackers (halves round up).
    ``m = 0`` means nobody attacks; any other fraction must give at least
    one attacker and fewer than half of the clients (the defences assume an
    honest majority), and two fractions must not give the same attackers.
    The run reports the share it simulated, ``attackers / n_clients``.
    """
    counts = []
    for m in fractions:
        if not 0 <= m < 0.5:
            raise InvalidParameterError(f"--malicious must be a fraction in [0, 0.5); got {m}")
        k = int(np.floor(m * n_clients + 0.5 + 1e-9))
        if m > 0 and (k < 1 or 2 * k >= n_clients):
            raise InvalidParameterError(f"--malicious {m} gives {k} of {n_clients} clients; "
                                        f"{_possible_fractions(n_clients)}")
        counts.append(k)
    if len(set(counts)) != len(counts):
        raise InvalidParameterError(f"--malicious {','.join(map(str, fractions))} give the same number of "
                                    f"attackers twice ({','.join(map(str, counts))} of {n_clients} clients); "
                                    "give fractions that differ by at least one client")
    return counts


def _possible_fractions(n_clients: int) -> str:
    top = (n_clients - 1) // 2  # fewer than half of the clients
    if top < 1:
        return f"with --clients {n_clients} only 0 (nobody attacks) is possible"
    shares = [f"{k / n_clients:.3g}" for k in range(1, top + 1)]
    if top == 1:
        return f"with --clients {n_clients} it can be 0 (nobody attacks) or 1/{n_clients} ({shares[0]})"
    listed = ", ".join(shares) if top <= 8 else f"{shares[0]}, {shares[1]}, ..., {shares[-1]}"
    return (f"with --clients {n_clients} it can be 0 (nobody attacks) or k/{n_clients} for k = 1..{top} "
            f"({listed})")


def check_settings(*, n_clients=10, malicious=0.4, rounds=20, attack_from=1, defences=("fedavg", "lfighter"),
                   partition="iid", alpha=0.5, model="logreg", epochs=5, lr=0.1, batch_size=16, hidden=32,
                   attacker_pool="source", test_size=0.2, root_size=100) -> tuple[list[str], list[float], list[int]]:
    """Check every setting of :func:`simulate` that does not need the data; ``(defences, fractions, attackers)``.

    The CLI calls it before it reads the data, :func:`simulate` before it
    splits them; a bad setting raises :class:`InvalidParameterError` with
    one line naming the option.  ``defences`` may be a list of names or one
    string of comma-separated names.
    """
    if not _is_int(n_clients) or n_clients < 3:
        raise InvalidParameterError(f"--clients must be a whole number, at least 3; got {n_clients}")
    if isinstance(defences, str):
        defences = [d.strip() for d in defences.split(",") if d.strip()]
    else:
        defences = list(defences)
    if not defences or not all(isinstance(d, str) for d in defences):
        raise InvalidParameterError(f"defences must be a list of defence names (or one comma-separated string: "
                                    f"{', '.join(defence_names())}); got {defences!r}")
    for name in defences:
        DEFENCES.get_class(name)
    if len(set(defences)) != len(defences):
        raise InvalidParameterError(f"--defence lists a defence twice: {','.join(defences)}")
    try:
        fractions = [float(m) for m in np.atleast_1d(np.asarray(malicious, dtype=object))]
    except (TypeError, ValueError):
        raise InvalidParameterError(f"--malicious must be fractions in [0, 0.5); got {malicious!r}") from None
    if not fractions:
        raise InvalidParameterError(f"--malicious: give distinct fractions; got {malicious}")
    if len(set(fractions)) != len(fractions):
        raise InvalidParameterError(f"--malicious: give distinct fractions; got {malicious}")
    counts = attacker_counts(fractions, int(n_clients))
    for name in defences:
        for k in counts:
            DEFENCES.get_class(name).check(int(n_clients), k)
    if not _is_int(rounds) or rounds < 1:
        raise InvalidParameterError(f"--rounds must be a whole number, at least 1; got {rounds}")
    if not _is_int(attack_from) or attack_from < 1:
        raise InvalidParameterError(f"--attack-from must be a whole number, at least 1; got {attack_from}")
    if max(counts) > 0 and attack_from > rounds:
        raise InvalidParameterError(f"--attack-from {attack_from} is after the last round (--rounds {rounds}): "
                                    "nobody would attack; give --attack-from <= --rounds or --malicious 0")
    if not _is_int(epochs) or epochs < 1:
        raise InvalidParameterError(f"--epochs must be a whole number, at least 1 (local epochs per round); "
                                    f"got {epochs}")
    if not _is_int(batch_size) or batch_size < 1:
        raise InvalidParameterError(f"batch_size must be a whole number, at least 1; got {batch_size}")
    if not _is_int(hidden) or hidden < 1:
        raise InvalidParameterError(f"hidden must be a whole number, at least 1; got {hidden}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float, np.number)) or not (np.isfinite(lr) and lr > 0):
        raise InvalidParameterError(f"lr must be a positive number; got {lr}")
    if partition not in ("iid", "dirichlet"):
        raise InvalidParameterError(f"--partition must be iid or dirichlet; got {partition!r}")
    if partition == "dirichlet" and (isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.number))
                                     or not (np.isfinite(alpha) and alpha > 0)):
        raise InvalidParameterError(f"--alpha must be a positive number; got {alpha}")
    if attacker_pool not in ("source", "any"):
        raise InvalidParameterError(f"attacker_pool must be 'source' or 'any'; got {attacker_pool!r}")
    if model not in MODEL_NAMES:
        raise InvalidParameterError(f"--model must be one of {', '.join(MODEL_NAMES)}; got {model!r}")
    if _is_int(test_size):
        if test_size < 1:
            raise InvalidParameterError(f"test_size must be a fraction in (0, 1) or a number of rows >= 1; "
                                        f"got {test_size}")
    elif isinstance(test_size, bool) or not isinstance(test_size, (float, np.floating)) or not 0 < test_size < 1:
        raise InvalidParameterError(f"test_size must be a fraction in (0, 1) or a number of rows >= 1; got {test_size}")
    if not _is_int(root_size) or root_size < 0:
        raise InvalidParameterError(f"root_size must be a whole number of rows, at least 0; got {root_size}")
    return defences, fractions, counts


def check_root_set(n_rows: int, n_classes: int, *, test_size=0.2, root_size: int = 100) -> None:
    """Refuse data too small for FLTrust's root set of at least one row per class, saying how many rows it needs.

    :func:`split_rows` gives the root set ``root_size`` rows, at most a fifth
    of what the test split leaves, and no root set when that is fewer rows
    than there are classes; FLTrust then has no server update and would
    give every client trust 0 in every round.
    """
    def n_root(n):
        n_test = int(test_size) if _is_int(test_size) else int(np.ceil(float(test_size) * n))
        return min(int(root_size), (n - n_test) // 5)

    if n_root(n_rows) >= n_classes:
        return
    if root_size < n_classes:
        raise InvalidParameterError(f"defence fltrust needs a root set of at least one row per class "
                                    f"({n_classes} classes); root_size is {root_size}")
    need = n_rows
    while n_root(need) < n_classes:
        need += 1
    raise InvalidParameterError(f"defence fltrust needs a root set of at least one row per class ({n_classes} "
                                f"classes), which the server takes from a fifth of the rows left after the test "
                                f"split: the data has {n_rows} rows and needs at least {need}; give more rows "
                                "or leave fltrust out")


# -- the public entry point ------------------------------------------------------------
def simulate(X, y, *, attack=None, n_clients: int = 10, malicious=0.4, attack_from: int = 1,
             partition: str = "iid", alpha: float = 0.5, rounds: int = 20,
             defences=("fedavg", "lfighter"), model: str = "logreg", source=None, target=None,
             test_size: float = 0.2, root_size: int = 100, epochs: int = 5, lr: float = 0.1,
             batch_size: int = 16, hidden: int = 32, random_state: int = 0, num_cpus: int = 2,
             verbose: bool = False, dataset: str | None = None, attacker_pool: str = "source") -> FederatedResult:
    """Simulate label-flipping clients against each defence on Flower's simulation engine.

    The rows are split (stratified, seeded) into a clean test split
    (``test_size``), a small clean root set the server keeps
    (``root_size`` rows, used only by FLTrust) and the clients' rows, which
    are partitioned iid or with a Dirichlet(``alpha``) prior.  A fraction
    ``malicious`` of the clients flips its labels with ``attack`` (any
    flipguard flipper, cloned and seeded per client; see
    :func:`flip_client` for what each attacker's flipper is shown) from round
    ``attack_from`` on.  A ``TargetedFlip`` without a source or target gets
    them once, from all the clients' rows (:func:`resolve_pair`), so every
    attacker flips the pair the metrics score.  Features are standardised
    with the clients' pooled mean and deviation (a simulation shortcut).
    The no-attacker FedAvg baseline always runs first.

    Every setting is checked before any work (:func:`check_settings`,
    then the data's class sizes and, with ``"fltrust"``, the root set), so
    a bad one raises :class:`~flipguard.exceptions.InvalidParameterError`
    before Ray starts.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
        Labels (any values).
    attack : flipper, default=None
        A :mod:`flipguard.attacks` flipper, e.g. ``TargetedFlip(source=3,
        target=8, rate=1.0)``.  ``None`` with ``malicious > 0`` is an error.
    n_clients : int, default=10
    malicious : float in [0, 0.5) or sequence of them, default=0.4
        Fraction of clients that attack: ``round(malicious x n_clients)``
        attackers (halves up); a fraction giving none, or half of the
        clients or more, is refused (:func:`attacker_counts`).  Runs and
        settings report the share that ran, attackers / ``n_clients``
        (``malicious_requested`` keeps the fraction asked).  With several
        fractions every defence runs once per fraction against the same
        clients, with nested attacker sets (the 10 % attackers are among
        the 20 %).
    attacker_pool : {"source", "any"}, default="source"
        Where the attackers are drawn (at random, seeded).  ``"source"``:
        first among the clients that hold at least one row of the attack's
        ``source`` class, as Jebreel et al.'s experiment code picks its
        label-flipping peers (``environment_federated.py``); only when fewer
        clients hold that class do others (who flip nothing) fill the
        count.  On iid data every client holds the source class and both
        pools give the same attackers; on non-iid data ``"any"`` can make an
        "attacker" of a client with nothing to flip.  An attack without a
        ``source`` (random flips) draws from every client either way.
    attack_from : int, default=1
        First round in which the attackers flip labels (at most ``rounds``
        when anyone attacks).
    partition : {"iid", "dirichlet"}, default="iid"
    alpha : float, default=0.5
        Dirichlet concentration (smaller = less iid).
    rounds : int, default=20
    defences : sequence of str or str, default=("fedavg", "lfighter")
        Names from :func:`defence_names`; one string is one name or several,
        comma-separated.  Each defence's needs (Bulyan n >= 4f + 3, Krum
        n >= f + 3, FLTrust a root set) are checked before the simulation.
    model : {"logreg", "mlp"}, default="logreg"
    epochs, lr, batch_size, hidden : default=5, 0.1, 16, 32
        Local training of every client each round (see :class:`NumpyModel`);
        whole numbers >= 1, ``lr`` a positive number.
    source, target : label, default=None
        Classes for source recall and attack success; default: the
        attack's own source and target (``TargetedFlip``, resolved as
        above), otherwise none.  They also fill a ``TargetedFlip``'s missing
        source or target, so the attackers flip the pair scored.
    random_state : int, default=0
        Seeds everything; the same seed gives the same result.
    num_cpus : int, default=2
        CPUs Ray may use (one per concurrently training client).
    verbose : bool, default=False
        Let Flower and Ray log.

    Returns
    -------
    FederatedResult

    References
    ----------
    V. Tolpegin et al., "Data poisoning attacks against federated learning
    systems", ESORICS 2020 (the attack and its metrics).
    """
    try:
        import flwr  # noqa: F401
        import ray  # noqa: F401
    except ImportError:
        raise InvalidParameterError("federated simulation needs Flower: pip install 'flipguard[federated]'") \
            from None
    # every check before any work (and long before Ray starts)
    defences, fractions, counts = check_settings(
        n_clients=n_clients, malicious=malicious, rounds=rounds, attack_from=attack_from, defences=defences,
        partition=partition, alpha=alpha, model=model, epochs=epochs, lr=lr, batch_size=batch_size,
        hidden=hidden, attacker_pool=attacker_pool, test_size=test_size, root_size=root_size)
    n_clients = int(n_clients)
    n_malicious = max(counts)
    if n_malicious > 0 and attack is None:
        raise InvalidParameterError("--malicious > 0 needs an --attack")
    X = np.asarray(X, dtype=np.float64)
    labels = np.asarray(y)
    if X.ndim != 2 or len(X) != len(labels):
        raise InvalidParameterError(f"X must be 2-D with one row per label; got {X.shape} and {labels.shape}")
    classes, codes = np.unique(labels, return_inverse=True)
    codes = codes.astype(np.int64)
    if len(classes) < 2:
        raise InvalidParameterError("the label column has a single class; federated training needs two or more")

    check_class_sizes(classes, codes, test_size)
    if "fltrust" in defences:
        check_root_set(len(codes), len(classes), test_size=test_size, root_size=root_size)
    if source is not None:
        _code_of(classes, source, "--source")
    if target is not None:
        _code_of(classes, target, "--target")

    rng = check_random_state(random_state)
    rest, test, root = split_rows(codes, test_size=test_size, root_size=root_size, random_state=rng)
    mu, sd = X[rest].mean(axis=0), X[rest].std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    Z = (X - mu) / sd

    if partition == "iid":
        parts = iid_partition(len(rest), n_clients, random_state=rng.randint(2**31 - 1))
    else:
        parts = dirichlet_partition(codes[rest], n_clients, alpha, random_state=rng.randint(2**31 - 1))
    parts = [rest[p] for p in parts]
    order = rng.permutation(n_clients)  # the attackers' draw (attacker_ranks, below)

    # A targeted flip without a source or target picks them from the labels it is given: resolved ONCE on
    # all the clients' rows, so every attacker flips the pair the metrics score (each client would pick its
    # own rarest class otherwise).
    attack = resolve_pair(attack, classes[codes[rest]], source=source, target=target)
    # source / target for the metrics: as given, else the attack's own
    src_code = tgt_code = None
    if attack is not None and hasattr(attack, "get_params"):
        params = attack.get_params()
        source = params.get("source") if source is None else source
        target = params.get("target") if target is None else target
    if source is not None:
        src_code = _code_of(classes, source, "--source")
        tgt_code = _code_of(classes, target, "--target") if target is not None else None

    # the attackers: the first k ranks attack in a run with k attackers
    attack_source = _attack_source(attack, classes) if attacker_pool == "source" else None
    holds = None if attack_source is None else [bool(np.any(codes[p] == attack_source)) for p in parts]
    rank = attacker_ranks(order, holds)
    bad = rank < n_malicious

    # the attackers' labels, flipped once (they switch them on from attack_from)
    y_clean = np.concatenate([codes[p] for p in parts])
    y_bad = y_clean.copy()
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in parts])])
    n_flipped = {}
    for i in np.flatnonzero(bad):
        new = flip_client(attack, Z[parts[i]], codes[parts[i]], classes, _seed(random_state, 7, i))
        y_bad[offsets[i]:offsets[i + 1]] = new
        n_flipped[int(i)] = int(np.sum(new != codes[parts[i]]))

    net = NumpyModel(kind=model, n_features=X.shape[1], n_classes=len(classes), hidden=int(hidden),
                     epochs=int(epochs), lr=float(lr), batch_size=int(batch_size))
    init = net.init(_seed(random_state, 11))
    X_root, y_root = Z[root], codes[root]
    X_test, y_test = Z[test], codes[test]

    def root_update(params, server_round):
        return net.fit(params, X_root, y_root, random_state=_seed(random_state, 13, server_round))

    runs: list[FederatedRun] = []
    plan = [("fedavg", 0.0, 0)] + [(name, m, k) for m, k in zip(fractions, counts) for name in defences]
    share = {k: k / n_clients for k in counts}  # what is simulated and reported: attackers / clients
    attackers = {k: sorted(int(i) for i in np.flatnonzero(rank < k)) for k in counts}

    def server_main(grid, context):
        from flwr.app import ConfigRecord
        from threadpoolctl import threadpool_limits

        ordered = _OrderedGrid(grid)
        for name, fraction, k in plan:
            spec = DEFENCES.get_class(name)()
            strategy = spec.build(DefenceContext(n_clients, k, int(random_state), root_update))
            run = FederatedRun(defence="baseline" if not runs else name, malicious=share.get(k, 0.0),
                               attacked=k > 0, malicious_requested=fraction)

            def evaluate(server_round, arrays, strategy=strategy, run=run, spec=spec, k=k):
                if server_round == 0:
                    return None
                with threadpool_limits(1):
                    acc, rec, asr = _score(net, _arrays_to_dict(arrays), X_test, y_test, src_code, tgt_code)
                active = attackers.get(k, []) if k > 0 and server_round >= attack_from else []
                suspects = None
                if spec.names_suspects:
                    suspects = sorted(ordered.partition_of[n] for n in strategy.suspects_.get(server_round, []))
                prec, recl = _detection(suspects, active)
                run.rounds.append(RoundMetrics(server_round, acc, rec, asr, list(active), suspects, prec, recl))
                return None

            strategy.start(grid=ordered, initial_arrays=_dict_to_arrays(init), num_rounds=rounds,
                           train_config=ConfigRecord({ATTACK_KEY: k}), evaluate_fn=evaluate)
            runs.append(run)

    from flwr.serverapp import ServerApp
    from flwr.simulation import run_simulation

    server_app = ServerApp()
    server_app.main()(server_main)
    with tempfile.TemporaryDirectory(prefix="flipguard-fl-") as tmp, _quiet(verbose):
        path = str(Path(tmp) / "clients.npz")
        np.savez(path, X=Z[np.concatenate(parts)], y=y_clean, y_poisoned=y_bad, offsets=offsets, rank=rank)
        client_app = build_client_app(path, net, attack_from, int(random_state))
        _init_ray(num_cpus)
        run_simulation(server_app=server_app, client_app=client_app, num_supernodes=n_clients,
                       backend_config=ray_backend_config(num_cpus), verbose_logging=verbose)
        _client_data.cache_clear()
    if len(runs) != len(plan):
        raise RuntimeError(f"the federated simulation stopped early ({len(runs)} of {len(plan)} runs finished)")

    settings = {
        "dataset": dataset, "n_rows": int(len(codes)), "n_features": int(X.shape[1]),
        "classes": [str(c) for c in classes], "n_clients": n_clients,
        "malicious": share[counts[0]] if len(counts) == 1 else [share[k] for k in counts],
        "malicious_requested": fractions[0] if len(fractions) == 1 else fractions,
        "malicious_counts": counts[0] if len(counts) == 1 else counts,
        "malicious_clients": attackers[n_malicious] if n_malicious else [], "attacker_pool": attacker_pool,
        "flipped_rows": {str(k): v for k, v in n_flipped.items()},
        "attack": getattr(attack, "strategy_name", type(attack).__name__) if attack is not None else None,
        "attack_params": _attack_params(attack), "attack_from": attack_from,
        "source": None if src_code is None else str(classes[src_code]),
        "target": None if tgt_code is None else str(classes[tgt_code]),
        "partition": partition, "alpha": alpha if partition == "dirichlet" else None, "rounds": rounds,
        "model": model, "epochs": int(epochs), "lr": float(lr), "batch_size": int(batch_size), "seed": random_state,
        "n_test": int(len(test)), "n_root": int(len(root)),
        "client_rows": [int(len(p)) for p in parts],
        "client_source_rows": None if src_code is None else [int(np.sum(codes[p] == src_code)) for p in parts],
        "defences": defences,
    }
    return FederatedResult(runs=runs, settings=settings)


#: Rows every class needs: the stratified test split needs two of a class (one may go to the test
#: split), and the stratified split of the server's root set needs two of it again in what is left.
MIN_CLASS_ROWS = 3


def check_class_sizes(classes: np.ndarray, codes: np.ndarray, test_size: float = 0.2) -> None:
    """Refuse labels the stratified splits of :func:`split_rows` cannot split, naming the classes.

    Every class needs :data:`MIN_CLASS_ROWS` rows: scikit-learn's stratified
    split needs two rows of a class, and a class of two can lose one to the
    test split (depending on the other classes' sizes) and then fail the
    root-set split; with three, the default 20 % test split always leaves
    two.  The test split also needs a row of every class.
    """
    counts = np.bincount(np.asarray(codes, dtype=np.int64), minlength=len(classes))
    small = np.flatnonzero(counts < MIN_CLASS_ROWS)
    if len(small):
        named = [f"'{classes[c]}' has {counts[c]} row(s)" for c in small[:5]]
        more = f" and {len(small) - 5} more" if len(small) > 5 else ""
        raise InvalidParameterError(f"class{'es' if len(small) > 1 else ''} {', '.join(named)}{more}; every class "
                                    f"needs at least {MIN_CLASS_ROWS} rows to split into clients and a test set")
    n = len(codes)
    n_test = int(test_size) if isinstance(test_size, (int, np.integer)) else int(np.ceil(float(test_size) * n))
    if n_test < len(classes):
        raise InvalidParameterError(f"the test split ({n_test} of {n} rows) cannot hold a row of each of the "
                                    f"{len(classes)} classes; give more rows")


def split_rows(codes: np.ndarray, *, test_size: float = 0.2, root_size: int = 100,
               random_state=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stratified, seeded split of row positions into (clients' rows, test split, server's root set).

    The root set has ``root_size`` rows, at most a fifth of what the test
    split leaves, and is empty when that is fewer rows than there are
    classes.  Call :func:`check_class_sizes` first.
    """
    from sklearn.model_selection import train_test_split

    codes = np.asarray(codes)
    rng = check_random_state(random_state)
    n_classes = len(np.unique(codes))
    idx = np.arange(len(codes))
    rest, test = train_test_split(idx, test_size=test_size, stratify=codes, random_state=rng.randint(2**31 - 1))
    root_size = min(int(root_size), len(rest) // 5)
    if root_size >= n_classes:
        rest, root = train_test_split(rest, test_size=root_size, stratify=codes[rest],
                                      random_state=rng.randint(2**31 - 1))
    else:
        root = rest[:0]
    return rest, test, root


def attacker_ranks(order: np.ndarray, holds=None) -> np.ndarray:
    """Attacker rank of every client: in a run with ``k`` attackers, the clients ranked below ``k`` attack.

    ``order`` is a seeded permutation of the clients.  With ``holds`` (one
    bool per client: it holds rows of the attack's source class) the
    holders come first, each group in ``order``: attackers are drawn at
    random among the clients that can flip something, and the sets stay
    nested (the 10 % attackers are among the 20 %).
    """
    order = np.asarray(order, dtype=np.int64)
    if holds is not None:
        holds = np.asarray(holds, dtype=bool)
        order = np.concatenate([order[holds[order]], order[~holds[order]]])
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank


def resolve_pair(attack, labels: np.ndarray, *, source=None, target=None):
    """``attack`` with its source and target fixed, when it is a :class:`~flipguard.attacks.TargetedFlip` missing one.

    A ``TargetedFlip`` without ``source`` flips the least frequent class of
    the labels it is given into the most frequent other one (without
    ``target``, the most frequent other class).  Shown one client's rows,
    every attacker would pick its own pair (on non-iid data, its own rarest
    class), and none of them the pair the metrics score.  The pair is
    therefore chosen once, from ``labels`` (all the clients' rows), and
    given to every attacker; ``source`` / ``target`` (the classes
    :func:`simulate` is told to score) fill the attack's missing ones first.
    Other attacks are returned as they are.
    """
    from ..attacks import TargetedFlip

    if not isinstance(attack, TargetedFlip) or (attack.source is not None and attack.target is not None):
        return attack
    attack = clone(attack).set_params(source=attack.source if attack.source is not None else source,
                                      target=attack.target if attack.target is not None else target)
    if attack.source is not None and attack.target is not None:
        return attack
    probe = clone(attack).set_params(random_state=0, rate=1.0, n_flips=None)
    probe.fit_resample(None, labels)
    return clone(attack).set_params(source=_py(probe.source_), target=_py(probe.target_))


def _py(v):
    return v.item() if hasattr(v, "item") else v


def flip_client(attack, X: np.ndarray, codes: np.ndarray, classes: np.ndarray, seed: int) -> np.ndarray:
    """One attacker's labels (class codes) after ``attack`` flips them, with the client's features.

    A flipguard flipper knows only the classes in the labels it is given.
    **Targeted attacks** (a ``source`` or ``target`` class): on non-iid data
    a client without the target class could not flip its source rows
    (Tolpegin et al.'s attackers relabel every source row as the target
    whatever else they hold), so the flipper sees one extra row of each
    class the client lacks (features at the clients' pooled mean, i.e.
    zeros after standardising); those rows are dropped again.  They never
    use the budget, which counts source rows: a padding row is of the source
    class only when the client holds none, and then nothing is flipped.
    **Other attacks** (random, noise_matrix, boundary, ...) count their
    ``rate`` over all rows and choose which: they see the client's own rows
    only, so the budget is the client's rows and every flip is a real row
    (padding rows, at the data's centre, would be chosen first by boundary
    or entropy flips).  They relabel among the classes the client holds; a
    client holding a single class also sees one padding row of every other
    class (a flipper needs two), with its budget pinned to its own rows.
    """
    codes = np.asarray(codes, dtype=np.int64)
    n = len(codes)
    flipper = clone(attack)
    if "random_state" in flipper.get_params():
        flipper.set_params(random_state=seed)
    params = flipper.get_params()
    held = np.unique(codes)
    targeted = params.get("source") is not None or params.get("target") is not None
    if targeted:
        absent = np.setdiff1d(np.arange(len(classes)), codes)
    elif len(held) >= 2:
        absent = np.array([], dtype=np.int64)
        for key in ("rate", "n_flips"):  # a per-class budget: only the classes this client holds
            if isinstance(params.get(key), dict):
                mine = {k: v for k, v in params[key].items() if str(k) in {str(classes[c]) for c in held}}
                if not mine:
                    return codes.copy()
                flipper.set_params(**{key: mine})
    else:
        absent = np.setdiff1d(np.arange(len(classes)), codes)
        label = classes[held[0]]
        flipper.set_params(n_flips={_py(label): _own_budget(params, label, n)})
    X_pad = np.vstack([X, np.zeros((len(absent), X.shape[1]))])
    _, flipped = flipper.fit_resample(X_pad, classes[np.concatenate([codes, absent])])
    return np.searchsorted(classes, np.asarray(flipped, dtype=classes.dtype))[:n].astype(np.int64)


def _own_budget(params: dict, label, n: int) -> int:
    """Rows a flipper's ``rate`` / ``n_flips`` asks of ``n`` rows of the single class ``label``."""
    spec = params.get("n_flips") if params.get("n_flips") is not None else params.get("rate")
    if isinstance(spec, dict):
        spec = next((v for k, v in spec.items() if str(k) == str(label)), 0)
        return min(n, int(spec) if params.get("n_flips") is not None else int(round(float(spec) * n)))
    if spec is None:
        return 0
    return min(n, int(spec) if params.get("n_flips") is not None else int(round(float(spec) * n)))


def _attack_source(attack, classes: np.ndarray) -> int | None:
    """Class code of the attack's ``source`` parameter (None: the attack has no fixed source class)."""
    if attack is None or not hasattr(attack, "get_params"):
        return None
    source = attack.get_params().get("source")
    if source is None:
        return None
    return _code_of(classes, source, "the attack's source")


def _attack_params(attack) -> dict[str, Any] | None:
    if attack is None or not hasattr(attack, "get_params"):
        return None
    return {k: (v if isinstance(v, (int, float, str, bool, type(None))) else str(v))
            for k, v in attack.get_params().items() if k != "random_state"}


def _code_of(classes: np.ndarray, label, flag: str) -> int:
    hit = np.flatnonzero(classes.astype(str) == str(label))
    if len(hit) == 0:
        raise InvalidParameterError(f"{flag} {label!r} is not a class of the label column "
                                    f"(classes: {', '.join(map(str, classes))})")
    return int(hit[0])
