"""Finding flipped labels without ground truth.

A *detector* takes observed labels plus out-of-sample predicted
probabilities (and optionally the features, a trusted set of verified
labels, business rules or a second labeller) and returns a
:class:`LabelAudit`: a suspicion score per row (higher = more likely
flipped), flags, suggested labels, the estimated number of flipped labels
and the estimated class-to-class transitions.

Entry points: :func:`find_flipped_labels` (labels + probabilities, like
cleanlab), :class:`LabelAuditor` (an estimator computing out-of-fold
probabilities itself), :func:`audit_dataset` (a loaded dataset, what
``flipguard audit`` runs) and :func:`evaluate_detection` (against known flips).
"""

from ._api import (
    LabelAuditor,
    audit_dataset,
    embed_2d,
    evaluate_detection,
    find_flipped_labels,
)
from ._audit import LabelAudit
from ._auto import AutoDetector, stack_weight
from ._base import (
    DETECTORS,
    BaseDetector,
    LabelSource,
    TrustedLabels,
    detector_names,
    make_detector,
    model_quality,
    register,
)
from ._confident import (
    ConfidentLearning,
    calibrate_confident_joint,
    confident_joint,
    confident_learning_issues,
    confident_thresholds,
)
from ._family import ModelDisagreement
from ._io import load_trusted
from ._knn import KNNConsistency, knn_label_probs
from ._partitioned import PartitionedAudit, audit_partitioned
from ._ranking import NormalizedMargin, SelfConfidence, adjusted_probs
from ._rules import Rule, RuleEvidence, load_rules, reference_source, rule_sources
from ._trusted import RoniResult, TrustedModel, roni_test, trusted_model_probs, verified_neighbour_flags
from ._verdict import (
    BoundaryTest,
    NoiseFit,
    boundary_test,
    confident_count_null,
    f1_selection,
    fdr_selection,
    fit_noise_model,
)

__all__ = [
    "AutoDetector",
    "BaseDetector",
    "BoundaryTest",
    "ConfidentLearning",
    "DETECTORS",
    "KNNConsistency",
    "LabelAudit",
    "LabelAuditor",
    "LabelSource",
    "ModelDisagreement",
    "NoiseFit",
    "NormalizedMargin",
    "PartitionedAudit",
    "RoniResult",
    "Rule",
    "RuleEvidence",
    "SelfConfidence",
    "TrustedLabels",
    "TrustedModel",
    "adjusted_probs",
    "audit_dataset",
    "audit_partitioned",
    "boundary_test",
    "calibrate_confident_joint",
    "confident_count_null",
    "confident_joint",
    "confident_learning_issues",
    "confident_thresholds",
    "detector_names",
    "embed_2d",
    "evaluate_detection",
    "f1_selection",
    "fdr_selection",
    "find_flipped_labels",
    "fit_noise_model",
    "knn_label_probs",
    "load_rules",
    "load_trusted",
    "make_detector",
    "model_quality",
    "reference_source",
    "register",
    "roni_test",
    "rule_sources",
    "stack_weight",
    "trusted_model_probs",
    "verified_neighbour_flags",
]
