"""Federated learning: label-flipping clients and label-flip-aware defences as Flower strategies.

Needs the optional extra ``pip install 'flipguard[federated]'`` (Flower with
its Ray simulation engine).  Importing this package imports Flower.

* :class:`LFighter` -- cluster the output-layer updates of the two classes
  that moved most and drop the cluster with the lower size-weighted
  dissimilarity (Jebreel et al., Neural Networks 2024);
* :class:`TolpeginPCA` -- PCA of one class's output-layer updates, the
  minority cluster dropped (Tolpegin et al., ESORICS 2020);
* :class:`FLTrust` -- trust scores from the server's own update on a small
  root set (Cao et al., NDSS 2021);
* :func:`simulate` -- clients, partitions, attackers and every defence on
  Flower's simulation engine, with per-round metrics (:class:`FederatedResult`).

Each strategy is a ``flwr.serverapp.strategy.FedAvg`` subclass: pass it to
your own ``ServerApp`` and read ``strategy.suspects_`` after each round.
"""

from ._model import NumpyModel
from ._partition import dirichlet_partition, iid_partition
from ._result import FederatedResult, FederatedRun, RoundMetrics
from ._simulate import DEFENCES, build_client_app, defence_names, make_defence, ray_backend_config, simulate
from ._strategies import FLTrust, LabelFlipStrategy, LFighter, TolpeginPCA

__all__ = [
    "DEFENCES",
    "FLTrust",
    "FederatedResult",
    "FederatedRun",
    "LFighter",
    "LabelFlipStrategy",
    "NumpyModel",
    "RoundMetrics",
    "TolpeginPCA",
    "build_client_app",
    "defence_names",
    "dirichlet_partition",
    "iid_partition",
    "make_defence",
    "ray_backend_config",
    "simulate",
]
