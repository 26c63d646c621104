"""Importing this module registers every command group with the app."""

from . import (  # noqa: F401
    _assess,
    _attack,
    _audit,
    _certify,
    _clean,
    _demo,
    _integrity,
    _ledger,
    _pg,
)
