"""flipguard: defend supervised machine learning against label-flipping attacks.

Subpackages: :mod:`flipguard.data`, :mod:`flipguard.attacks`,
:mod:`flipguard.assess`, :mod:`flipguard.detection`,
:mod:`flipguard.mitigation`, :mod:`flipguard.integrity`,
:mod:`flipguard.report`.
"""

from importlib.metadata import PackageNotFoundError, version

from .exceptions import DataError, FlipguardError, IntegrityError, InvalidParameterError

try:
    __version__ = version("flipguard")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = ["DataError", "FlipguardError", "IntegrityError", "InvalidParameterError", "__version__"]
