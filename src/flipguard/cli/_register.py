"""Command name -> the module that defines it.  A new command group = one line in COMMANDS.

:func:`flipguard.cli.main` imports only the module of the command being run,
so a command that trains nothing never loads scikit-learn; ``flipguard --help``
(and an unknown command) imports them all.
"""

from __future__ import annotations

import importlib

COMMANDS = {
    "assess": "_assess",
    "attack": "_attack",
    "audit": "_audit",
    "certify": "_certify",
    "clean": "_clean",
    "demo": "_demo",
    "diff": "_integrity",
    "federated": "_federated",
    "keygen": "_integrity",
    "ledger": "_ledger",
    "monitor": "_monitor",
    "pg": "_pg",
    "seal": "_integrity",
    "verify": "_integrity",
}


def load(command: str | None = None) -> None:
    """Register ``command``'s module with the app; every module when ``command`` is None or unknown."""
    modules = [COMMANDS[command]] if command in COMMANDS else sorted(set(COMMANDS.values()))
    for module in modules:
        importlib.import_module(f"{__package__}.{module}")
