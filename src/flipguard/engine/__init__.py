"""Where partitioned work runs: in-process (default) or on Ray; map over partitions, merge exactly.

:func:`get_engine` turns ``"local"`` / ``"ray"`` into an :class:`Engine`
whose :meth:`~Engine.map` runs one task per partition and returns the results
in partition order; callers merge them exactly (sums, counts, top-k), so
results do not depend on the engine.  Ray is imported only when the Ray engine
is used (``pip install 'flipguard[ray]'``).

The engine sits below the layers that use it: the lake-scale audit is
:func:`flipguard.detection.audit_partitioned` (confident learning with
out-of-fold probabilities per fold, thresholds and joint merged exactly), and
lake-scale seal/verify live in :mod:`flipguard.integrity`
(:func:`~flipguard.integrity.seal_lake`, :func:`~flipguard.integrity.verify_lake`).
"""

from ._base import ENGINE_NAMES, Engine, LocalEngine, get_engine

__all__ = [
    "ENGINE_NAMES",
    "Engine",
    "LocalEngine",
    "get_engine",
]
