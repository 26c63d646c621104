"""Label-flipping attacks: flippers that poison labels and record exactly which rows changed.

Every flipper follows the imbalanced-learn sampler protocol:
``fit_resample(X, y) -> (X, y_poisoned)`` with ``flip_mask_``,
``flipped_indices_``, ``original_labels_`` and ``new_labels_`` set afterwards.
"""

from ._base import FLIPPERS, BaseFlipper, Budget, flipper_names, make_flipper, register
from ._random import RandomFlip, TargetedFlip

__all__ = [
    "FLIPPERS",
    "BaseFlipper",
    "Budget",
    "RandomFlip",
    "TargetedFlip",
    "flipper_names",
    "make_flipper",
    "register",
]
