"""Label-flipping attacks: flippers that poison labels and record exactly which rows changed.

Every flipper follows the imbalanced-learn sampler protocol:
``fit_resample(X, y) -> (X, y_poisoned)`` with ``flip_mask_``,
``flipped_indices_``, ``original_labels_`` and ``new_labels_`` set afterwards.

Strategies (registry name -> class):

* ``random`` -- :class:`RandomFlip`: uniformly chosen rows, to a random other class;
* ``targeted`` -- :class:`TargetedFlip`: rows of one source class, to one target class;
* ``noise_matrix`` -- :class:`NoiseMatrixFlip`: class-conditional noise from a transition matrix;
* ``boundary`` -- :class:`BoundaryFlip`: rows a surrogate model is least (or most) sure about;
* ``entropy`` -- :class:`EntropyFlip`: rows of highest surrogate predictive entropy;
* ``cluster`` -- :class:`ClusterFlip`: whole k-means clusters, coherent flipped regions;
* ``alfa`` -- :class:`ALFAFlip`: ALFA (Xiao, Xiao & Eckert, 2012), binary, linear models.
"""

from ._alfa import ALFAFlip
from ._base import FLIPPERS, BaseFlipper, Budget, flipper_names, make_flipper, register
from ._cluster import ClusterFlip
from ._confidence import BoundaryFlip, EntropyFlip
from ._noise import NoiseMatrixFlip
from ._random import RandomFlip, TargetedFlip

__all__ = [
    "ALFAFlip",
    "BaseFlipper",
    "BoundaryFlip",
    "Budget",
    "ClusterFlip",
    "EntropyFlip",
    "FLIPPERS",
    "NoiseMatrixFlip",
    "RandomFlip",
    "TargetedFlip",
    "flipper_names",
    "make_flipper",
    "register",
]
