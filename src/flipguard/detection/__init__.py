"""Finding flipped labels without ground truth (provisional: being written)."""

from ._audit import LabelAudit
from ._base import DETECTORS, BaseDetector, LabelSource, TrustedLabels, detector_names, make_detector, register
from ._confident import ConfidentLearning, confident_learning_issues

__all__ = [
    "DETECTORS",
    "BaseDetector",
    "ConfidentLearning",
    "LabelAudit",
    "LabelSource",
    "TrustedLabels",
    "confident_learning_issues",
    "detector_names",
    "make_detector",
    "register",
]
