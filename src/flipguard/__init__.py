"""flipguard: defend supervised machine learning against label-flipping attacks.

Subpackages: :mod:`flipguard.data`, :mod:`flipguard.attacks`,
:mod:`flipguard.assess`, :mod:`flipguard.detection`,
:mod:`flipguard.mitigation`, :mod:`flipguard.integrity`,
:mod:`flipguard.report`.
"""

from .exceptions import DataError, FlipguardError, IntegrityError, InvalidParameterError


def __getattr__(name: str):
    # The version is looked up on first use: importlib.metadata costs ~50 ms at start-up.
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            value = version("flipguard")
        except PackageNotFoundError:  # pragma: no cover - running from a source tree
            value = "0.0.0"
        globals()["__version__"] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["DataError", "FlipguardError", "IntegrityError", "InvalidParameterError", "__version__"]
