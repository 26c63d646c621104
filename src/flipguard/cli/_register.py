"""Importing this module registers every command group with the app."""

from . import _attack, _assess, _demo  # noqa: F401
