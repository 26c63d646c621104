"""Labelled data over time: sequential detection of label flipping, guarded online learning, watching a store.

:class:`LabelMonitor` is fitted once on a trusted reference set and judges
each arriving batch (:class:`BatchVerdict`), raising an alarm with a stated
false-alarm rate when labels start disagreeing with the evidence, naming the
class pair and the batch where it began.  Stream attacks
(:func:`make_stream_attack`) poison batches of a stream; :class:`GuardedLearner`
quarantines doubted labels before ``partial_fit``; :func:`compare_prequential`
measures what an attack and the guard do to an online learner.
:func:`watch_once` processes new batch files or table rows exactly once
(what ``flipguard monitor`` runs).
"""

from ._monitor import BatchVerdict, LabelMonitor
from ._online import GuardedLearner, PrequentialResult, Quarantine, compare_prequential, prequential_evaluation
from ._stream import (
    STREAM_ATTACKS,
    BaseStreamAttack,
    BurstStreamFlip,
    RandomStreamFlip,
    SwapStreamFlip,
    TargetedStreamFlip,
    iter_batches,
    make_stream_attack,
)
from ._watch import BatchFailed, FolderSource, PostgresSource, open_source, watch_once, write_metrics

__all__ = [
    "BaseStreamAttack",
    "BatchFailed",
    "BatchVerdict",
    "BurstStreamFlip",
    "FolderSource",
    "GuardedLearner",
    "LabelMonitor",
    "PostgresSource",
    "PrequentialResult",
    "Quarantine",
    "RandomStreamFlip",
    "STREAM_ATTACKS",
    "SwapStreamFlip",
    "TargetedStreamFlip",
    "compare_prequential",
    "iter_batches",
    "make_stream_attack",
    "open_source",
    "prequential_evaluation",
    "watch_once",
    "write_metrics",
]
