"""Mitigation: train robustly from noisy labels, clean datasets, certify predictions.

- :class:`RobustClassifier` -- audit, then drop / relabel / reweight suspects or
  correct the loss, with a no-harm guard that falls back to the plain model.
- :func:`clean_dataset` -- a cleaned copy of a :class:`~flipguard.data.LabeledDataset`
  and a log of every change.
- :class:`PartitionAggregationClassifier`, :func:`certify` -- Deep Partition
  Aggregation: predictions with a certified number of label flips they withstand.
"""

from ._certificate import Certificate
from ._cleaning import (
    CLEAN_MODES,
    WEIGHT_COLUMN,
    CleaningLog,
    clean_dataset,
    cleaned_table,
)
from ._evaluate import evaluate_mitigation
from ._forward import ForwardCorrectedLogisticRegression
from ._hashing import DEFAULT_HASH_KEY, hash_ids, partition_of
from ._partition import PartitionAggregationClassifier, certified_radius, certify
from ._robust import RobustClassifier
from ._strategies import STRATEGIES, Plan, strategy_names

__all__ = [
    "CLEAN_MODES",
    "Certificate",
    "CleaningLog",
    "DEFAULT_HASH_KEY",
    "ForwardCorrectedLogisticRegression",
    "PartitionAggregationClassifier",
    "Plan",
    "RobustClassifier",
    "STRATEGIES",
    "WEIGHT_COLUMN",
    "certified_radius",
    "certify",
    "clean_dataset",
    "cleaned_table",
    "evaluate_mitigation",
    "hash_ids",
    "partition_of",
    "strategy_names",
]
