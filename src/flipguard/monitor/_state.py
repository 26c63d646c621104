"""State files: NumPy arrays plus canonical JSON, no pickle, checked by a SHA-256 digest.

A state file is read back from disk, so it is input that could be damaged or
edited.  It is a plain ``.npz`` archive loaded with ``allow_pickle=False``
(no code can run on load); one member, ``__meta__``, holds canonical JSON
(format version, parameters, history) and the SHA-256 digest of that JSON and
of every other member's name, dtype, shape and bytes.  A truncated, corrupted or edited file
fails the digest and raises :class:`~flipguard.exceptions.IntegrityError`.
The digest is not a signature: someone who can write the file can recompute
it.  Protect the file like any other configuration (permissions), or seal it
with ``flipguard seal``/the ledger when that matters.

Files are written atomically (temporary file, then rename), so a crash at
any moment leaves either the old state or the new one, never a mix.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from typing import Any

import numpy as np

from .._io import atomic_write_bytes
from ..exceptions import DataError, IntegrityError

__all__ = ["read_state", "write_state"]

FORMAT = "flipguard.monitor-state"
VERSION = 1


def _digest(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(meta, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8"))
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(json.dumps([name, a.dtype.str, list(a.shape)]).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def write_state(path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Write ``arrays`` and JSON-able ``meta`` to ``path`` atomically."""
    for name, a in arrays.items():
        if name.startswith("__") or np.asarray(a).dtype == object:
            raise ValueError(f"state array {name!r} must be a plain numeric/string array")  # a bug
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    doc = {"format": FORMAT, "version": VERSION, "meta": meta, "sha256": _digest(arrays, meta)}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False)
    buf = io.BytesIO()
    np.savez(buf, __meta__=np.frombuffer(text.encode("utf-8"), dtype=np.uint8), **arrays)
    atomic_write_bytes(path, buf.getvalue())


def read_state(path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a state file; :class:`IntegrityError` when it is damaged or edited."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise DataError(f"{path}: is a directory, not a state file; give the state file's name")
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such state file")
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise DataError(f"{path}: cannot read the state file ({exc.strerror or exc})") from None
    if magic != b"PK\x03\x04":  # not an .npz (zip) archive; never let numpy try it as a pickle
        raise IntegrityError(f"{path}: not a flipguard monitor state file")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        if "pickle" in str(exc):  # Python objects inside: a state file never holds any (numpy's advice misleads)
            raise IntegrityError(f"{path}: not a flipguard monitor state file (it holds Python objects, "
                                 "which a state file never does)") from None
        raise IntegrityError(f"{path}: not a readable flipguard monitor state file ({exc})") from None
    raw = arrays.pop("__meta__", None)
    try:
        doc = json.loads(bytes(raw).decode("utf-8")) if raw is not None else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        doc = None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise IntegrityError(f"{path}: not a flipguard monitor state file")
    if doc.get("version") != VERSION:
        raise IntegrityError(f"{path}: state format version {doc.get('version')} is not supported "
                             f"(this flipguard reads version {VERSION})")
    if not isinstance(doc.get("meta"), dict) or doc.get("sha256") != _digest(arrays, doc["meta"]):
        raise IntegrityError(f"{path}: state file digest mismatch (damaged or edited); "
                             "restore it from a backup or start a new state")
    return arrays, doc["meta"]
