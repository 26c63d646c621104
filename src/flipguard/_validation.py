"""Parameter validation shared by flipguard's estimator-like classes.

flipguard reuses scikit-learn's declarative parameter constraints
(``_parameter_constraints`` class attribute, checked by ``_validate_params``)
so its messages follow scikit-learn's template::

    The 'rate' parameter of RandomFlip must be a float in the range (0.0, 1.0).
    Got 1.5 instead.

scikit-learn's own error is re-raised as flipguard's
:class:`~flipguard.exceptions.InvalidParameterError`.
"""

from __future__ import annotations

from sklearn.utils._param_validation import (  # noqa: F401  (re-exported)
    HasMethods,
    Interval,
    StrOptions,
)
from sklearn.utils._param_validation import InvalidParameterError as _SkInvalid

from .exceptions import InvalidParameterError

__all__ = ["HasMethods", "Interval", "StrOptions", "validate_params"]


def validate_params(estimator) -> None:
    """Check ``estimator.get_params()`` against its ``_parameter_constraints``."""
    try:
        estimator._validate_params()
    except _SkInvalid as exc:
        raise InvalidParameterError(str(exc)) from None
