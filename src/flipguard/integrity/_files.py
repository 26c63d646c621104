"""Reading the small files integrity works with (keys, manifests, ledgers, scripts)."""

from __future__ import annotations

import os
from pathlib import Path

from ..exceptions import IntegrityError

__all__ = ["read_bytes"]


def read_bytes(path: str | os.PathLike, what: str) -> bytes:
    """The bytes of ``path``; a missing file or a directory is one :class:`IntegrityError` line.

    ``what`` names the file in the message, e.g. ``"manifest"`` gives
    ``"manifest keys/x.json: no such file"``.
    """
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise IntegrityError(f"{what} {path}: no such file") from None
    except IsADirectoryError:
        raise IntegrityError(f"{what} {path}: is a directory") from None
