"""Static name lists for help texts and cheap checks, importable without scikit-learn.

The command-line interface lists these names in ``--help`` and checks a
user's choice before loading anything heavy.  ``tests/test_cli_core.py``
checks that every list equals its registry.
"""

from __future__ import annotations

__all__ = ["ASSESS_MITIGATIONS", "ATTACK_NAMES", "CLEAN_MODES", "MITIGATION_NAMES", "MODEL_NAMES", "SECRET_ENV"]

#: Built-in model shortcuts (:func:`flipguard.models.make_model`).
MODEL_NAMES = ("logreg", "linsvm", "rf", "hgb", "knn", "mlp")

#: Registered attack strategies (:data:`flipguard.attacks.FLIPPERS`), in the order help texts list them.
ATTACK_NAMES = ("random", "targeted", "noise_matrix", "boundary", "entropy", "cluster", "alfa")

#: Registered mitigation strategies (:data:`flipguard.mitigation.STRATEGIES`).
MITIGATION_NAMES = ("drop", "relabel", "weight", "loss_correction")

#: ``assess(mitigate=...)`` / ``--mitigate`` choices: the strategies plus the two comparison
#: baselines of :data:`flipguard.mitigation.BASELINES` (blind_drop: drop every flagged row;
#: none: the plain model).
ASSESS_MITIGATIONS = MITIGATION_NAMES + ("blind_drop", "none")

#: ``flipguard clean --mode`` choices (:data:`flipguard.mitigation.CLEAN_MODES`).
CLEAN_MODES = ("drop", "relabel", "weight")

#: Environment variable holding the secret of private seals (:mod:`flipguard.integrity`).
SECRET_ENV = "FLIPGUARD_SECRET"
