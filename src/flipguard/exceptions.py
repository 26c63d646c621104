"""One exception family for flipguard.

Every error flipguard raises on purpose derives from :class:`FlipguardError`.
Subclasses also inherit the builtin they mean, so ``except ValueError`` keeps
working for callers who do not know flipguard.
"""

from __future__ import annotations

__all__ = [
    "DataError",
    "FlipguardError",
    "IntegrityError",
    "InvalidParameterError",
    "OutputError",
]


class FlipguardError(Exception):
    """Base class of every error flipguard raises on purpose."""


class InvalidParameterError(FlipguardError, ValueError):
    """A parameter has a value or type flipguard cannot use."""


class DataError(FlipguardError, ValueError):
    """Input data is missing, unreadable or unusable (names file and column)."""


class IntegrityError(FlipguardError):
    """A seal, signature, manifest or ledger check failed."""


class OutputError(FlipguardError, OSError):
    """An output file could not be written; the message names the file and the reason."""
