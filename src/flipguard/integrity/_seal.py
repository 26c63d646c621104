"""Sealing: a signed manifest and a label snapshot for a table's (id, label) pairs.

Core API (in memory, used by the file wrapper and by PostgreSQL protection)::

    manifest, snapshot = seal_table(table, label="y", id="row_id", private_key=key)

``table`` is any pyarrow Table holding the id and label columns (and the
``columns`` to seal as well); ``snapshot`` is the sidecar's bytes, to store
next to the manifest under ``manifest.snapshot["file"]``.  The file wrapper
:func:`seal` reads only the needed columns of a CSV/Parquet file, URL or DSN
and writes ``DATA.flipguard.json`` and ``DATA.flipguard.snapshot`` atomically.

A seal does not depend on other columns, and verification does not depend on
row order: rows are matched by id.  Sealing costs one read of the id and label
columns, one pass of SHA-256 over them and one LZ4 (zstd for string ids)
compression; no sort.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..exceptions import DataError, IntegrityError, InvalidParameterError
from . import _snapshot
from ._columns import (
    SCHEME_KEYED,
    SCHEME_PLAIN,
    block_rows_for,
    class_counts,
    code_dtype,
    commit,
    drop_unused,
    duplicated,
    label_codes,
    normalize_ids,
    type_family,
)
from ._files import write_files_atomically
from ._keys import key_id, load_private_key
from ._manifest import FORMAT_VERSION, KIND, PURPOSES, Manifest, load_manifest, sign_body
from ._source import (
    ROW_ID,
    check_columns,
    check_positional,
    default_name,
    describe,
    is_local_path,
    read_keyed,
)

__all__ = ["SealResult", "default_manifest_path", "seal", "seal_table", "snapshot_path_for"]

MANIFEST_SUFFIX = ".flipguard.json"


def _tool() -> str:
    from .. import __version__

    return f"flipguard {__version__}"


def now_utc() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def seal_table(table: pa.Table, *, label: str, id: str, private_key: Ed25519PrivateKey,
               columns: list[str] | None = None, source: str = "<arrow table>",
               secret: bytes | None = None, snapshot_name: str = "labels.snapshot",
               created: str | None = None, name: str | None = None, version: int = 1,
               purpose: str = "seal") -> tuple[Manifest, bytes]:
    """Seal the labels of an in-memory table.

    Parameters
    ----------
    table : pyarrow.Table
        Holds the ``id`` and ``label`` columns (and ``columns``); other columns are ignored.
    label, id : str
        Label column and unique-id column.  Ids must be unique and non-missing.
    private_key : Ed25519PrivateKey
        Signs the manifest (:func:`flipguard.integrity.load_private_key`).
    columns : list of str, optional
        Feature columns to seal as well (their values go into the snapshot).
    source : str
        Name of the data recorded in the manifest.
    secret : bytes, optional
        Make a **private** seal: snapshot encrypted (AES-256-GCM), class counts
        left out of the manifest, row commitments keyed (HMAC-SHA-256).
    snapshot_name : str
        File name of the snapshot next to the manifest; ``"{sha256}"`` in it is
        replaced by the snapshot's digest (content-addressed stores).
    created : str, optional
        Timestamp to record (default: now, UTC).
    name : str, optional
        The dataset the seal is for (default: ``source``).  Verifying data
        under another name is refused (mix-and-match).
    version : int, default=1
        The dataset version this seal records.
    purpose : {"seal", "ledger-input", "ledger-output"}, default="seal"
        Seals a ledger entry embeds are marked so they cannot be used as
        standalone seals.

    Returns
    -------
    manifest : Manifest
    snapshot : bytes
        The sidecar file's contents; ``manifest.snapshot["sha256"]`` is its SHA-256.

    Raises
    ------
    DataError
        Missing columns, missing or duplicated ids.

    Examples
    --------
    >>> import pyarrow as pa
    >>> from flipguard.integrity import generate_keypair, seal_table
    >>> t = pa.table({"id": [1, 2, 3], "y": ["cat", "dog", "cat"]})
    >>> manifest, snapshot = seal_table(t, label="y", id="id", private_key=generate_keypair())
    >>> manifest.class_counts
    {'cat': 2, 'dog': 1}
    """
    ident = _identity(name if name is not None else source, version, purpose)
    with ThreadPoolExecutor(max_workers=1) as pool:
        prep = _prepare(table, label=label, id=id, columns=columns, source=source, secret=secret, pool=pool)
        data = _snapshot.encode(prep.ids, prep.codes, prep.classes, prep.counts, prep.features)
        if prep.aes_key is not None:
            data = _snapshot.encrypt(data, prep.aes_key)
        digest = hashlib.sha256(data).hexdigest()
        return _sign(prep, digest, len(data), snapshot_name, private_key, created, ident), data


def _identity(name, version, purpose) -> dict:
    if not isinstance(name, str) or not name.strip():
        raise InvalidParameterError("--name must be a non-empty dataset name")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InvalidParameterError(f"--dataset-version must be an integer >= 1. Got {version!r} instead.")
    if purpose not in PURPOSES:
        raise InvalidParameterError(f"purpose must be one of {', '.join(PURPOSES)}. Got {purpose!r} instead.")
    return {"name": name, "version": version, "purpose": purpose}


@dataclass(frozen=True)
class _Prepared:
    label: str
    id: str
    columns: list
    source: str
    label_type: str
    ids: object
    codes: np.ndarray
    classes: list
    counts: np.ndarray
    features: dict
    private: dict | None
    aes_key: bytes | None
    commitment: Future  # -> dict, computed in the worker thread while the snapshot is written


def _prepare(table: pa.Table, *, label: str, id: str, columns, source: str,  # noqa: A002
             secret: bytes | None, pool: ThreadPoolExecutor) -> _Prepared:
    """Everything but the snapshot's digest and the signature: checks, label codes, commitment.

    Work is split over two threads (numpy, Arrow and hashlib release the GIL):
    the worker proves the ids unique and then hashes the commitment, while the
    calling thread codes the labels and (after return) writes the snapshot.
    """
    columns = list(columns or [])
    if label == id:
        raise InvalidParameterError(f"label and id must be different columns (both are '{label}')")
    clash = [c for c in columns if c in (label, id)]
    if clash:
        raise InvalidParameterError(f"columns must not repeat the label or id column ({', '.join(clash)})")
    check_columns(table.column_names, [id, label, *columns], source)
    ids = normalize_ids(table.column(id), what=f"{source}: id column '{id}'")
    dup_check = pool.submit(duplicated, ids)
    values, codes = label_codes(table.column(label))
    classes, codes, counts = drop_unused(values, codes, class_counts(codes, len(values)))
    width = code_dtype(len(classes))
    mac_key = aes_key = private = None
    if secret is not None:
        salt = os.urandom(16)
        aes_key, mac_key, check = _snapshot.derive_keys(secret, salt)
        private = {"kdf": "hkdf-sha256", "salt": salt.hex(), "cipher": "aes-256-gcm", "key_check": check}
    n_dup, examples = dup_check.result()
    if n_dup:
        raise DataError(f"{source}: id column '{id}' has {n_dup} duplicated value(s) "
                        f"(e.g. {', '.join(map(str, examples))}); a seal needs unique ids")
    block_rows = block_rows_for(len(codes))

    def commitment() -> dict:
        blocks, root = commit(ids, codes, width, block_rows=block_rows, mac_key=mac_key)
        return {"scheme": SCHEME_KEYED if private else SCHEME_PLAIN, "block_rows": block_rows,
                "code_bytes": width.itemsize, "blocks": blocks, "root": root}

    return _Prepared(label, id, columns, source, type_family(table.column(label).type), ids, codes, classes, counts,
                     {c: table.column(c) for c in columns}, private, aes_key, pool.submit(commitment))


def _sign(prep: _Prepared, digest: str, size: int, snapshot_name: str, private_key: Ed25519PrivateKey,
          created: str | None, ident: dict) -> Manifest:
    body = {
        "format_version": FORMAT_VERSION,
        "kind": KIND,
        **ident,
        "label_type": prep.label_type,
        "created": created or now_utc(),
        "source": prep.source,
        "label": prep.label,
        "id": prep.id,
        "id_type": prep.ids.kind,
        "rows": len(prep.codes),
        "columns": prep.columns,
        "classes": None if prep.private else [{"label": c, "count": int(n)}
                                              for c, n in zip(prep.classes, prep.counts)],
        "commitment": prep.commitment.result(),
        "snapshot": {"file": snapshot_name.replace("{sha256}", digest), "sha256": digest, "bytes": size,
                     "format": "aes-256-gcm+arrow-ipc" if prep.private else "arrow-ipc"},
        "private": prep.private,
        "key_id": key_id(private_key),
        "tool": _tool(),
    }
    return Manifest(doc=sign_body(body, private_key))


class _HashingWriter:
    """A write-only file object for :class:`pyarrow.PythonFile` that hashes what it passes on."""

    def __init__(self, fh):
        self.fh, self.size, self.closed = fh, 0, False
        self._h = hashlib.sha256()

    def write(self, data) -> int:
        view = memoryview(data)
        self._h.update(view)
        self.fh.write(view)
        self.size += view.nbytes
        return view.nbytes

    def flush(self) -> None:
        self.fh.flush()

    def close(self) -> None:
        self.closed = True

    def tell(self) -> int:
        return self.size

    def writable(self) -> bool:
        return True

    def hexdigest(self) -> str:
        return self._h.hexdigest()


@dataclass(frozen=True)
class SealResult:
    """What :func:`seal` wrote."""

    manifest: Manifest
    manifest_path: Path
    snapshot_path: Path

    def to_dict(self) -> dict:
        m = self.manifest
        return {"manifest": str(self.manifest_path), "snapshot": str(self.snapshot_path),
                "name": m.name, "version": m.version, "label_type": m.label_type,
                "source": m.source, "label": m.label, "id": m.id, "columns": m.columns,
                "rows": m.rows, "class_counts": m.class_counts, "private": m.private,
                "key_id": m.key_id, "created": m.created, "commitment_root": m.commitment["root"]}


def default_manifest_path(source, option: str = "--out / out=") -> Path:
    """``DATA.flipguard.json`` next to a local file; URLs and DSNs need an explicit path."""
    if not is_local_path(source):
        raise InvalidParameterError(f"{describe(source)} is not a local file: give the manifest path "
                                    f"({option})")
    return Path(os.fspath(source) + MANIFEST_SUFFIX)


def snapshot_path_for(manifest_path: str | os.PathLike) -> Path:
    """``X.snapshot`` for manifest ``X.json`` (``X.json.snapshot`` for any other name)."""
    p = Path(manifest_path)
    stem = p.name.removesuffix(".json")
    return p.with_name(stem + ".snapshot")


def seal(source, *, label: str, id: str | None, private_key,
         out: str | os.PathLike | None = None, columns: list[str] | str | None = None,
         secret: bytes | None = None, table: str | None = None, query: str | None = None,
         name: str | None = None, version: int | None = None) -> SealResult:
    """Seal a file, URL or database table and write the manifest and its snapshot.

    Reads only the id, label and ``columns`` columns (Parquet labels as a
    dictionary, CSV as exact text), calls :func:`seal_table`, then writes the
    snapshot and the manifest: both go to temporary files first and are
    renamed into place only when both are complete, so a failed re-seal
    leaves the previous seal valid.  ``private_key`` is a key or a key file path.

    Parameters
    ----------
    id : str or None
        The column of unique row ids.  ``None`` (files only): each row's
        0-based position, recorded as the id ``"(row)"``; verify then matches
        rows by position, so inserting, deleting or reordering rows shows as
        changed, added and removed rows.
    columns : list of str or "all", optional
        Feature columns to seal as well; ``"all"`` seals every column but the
        id and the label.
    name : str, optional
        The dataset's name (default: the table given, else the file's name).
    version : int, optional
        The dataset version (default: one more than the version of the seal
        already at the manifest path, if it is this dataset's and signed by
        this key; else 1).

    Returns
    -------
    SealResult
    """
    key = private_key if isinstance(private_key, Ed25519PrivateKey) else load_private_key(private_key)
    manifest_path = Path(out) if out is not None else default_manifest_path(source)
    snap_path = snapshot_path_for(manifest_path)
    for target, what in ((manifest_path, "--out"), (snap_path, "snapshot")):
        if target.is_dir():
            raise InvalidParameterError(f"{what} {target} is a directory; give a file name for the manifest "
                                        "(e.g. --out data.flipguard.json)")
    if is_local_path(source):
        src = Path(os.fspath(source)).resolve()
        for target in (manifest_path, snap_path):
            if target.resolve() == src:
                raise InvalidParameterError(f"{target} is the data file itself; choose another manifest path")
    if not manifest_path.parent.is_dir():
        raise InvalidParameterError(f"--out {manifest_path}: folder {manifest_path.parent} does not exist")
    name = name if name is not None else default_name(source, table)
    if name is None:
        raise InvalidParameterError("give the dataset's name (--name / name=)")
    if version is None:
        version = _next_version(manifest_path, name, key)
    ident = _identity(name, version, "seal")
    if isinstance(columns, str):
        if columns != "all":
            raise InvalidParameterError(f"--columns must be a list of column names or 'all'. Got {columns!r}.")
        columns = None
        read_all = True
    else:
        read_all = False
    if id is None:  # each row's position in the file: see read_keyed
        check_positional(source, table, query)
        id = ROW_ID  # noqa: A001
    tbl, where = read_keyed(source, id, None if read_all else list(columns or []), label=label, table=table,
                            query=query)
    if read_all:
        columns = tbl.column_names[2:]
    if secret is not None:
        manifest, data = seal_table(tbl, label=label, id=id, private_key=key, columns=columns,
                                    source=where, secret=secret, snapshot_name=snap_path.name, **ident)
        write_files_atomically([(snap_path, data), (manifest_path, manifest.to_bytes())])
    else:  # stream the snapshot straight into its temporary file: no copy of it in memory
        import tempfile

        with ThreadPoolExecutor(max_workers=1) as pool:
            prep = _prepare(tbl, label=label, id=id, columns=columns, source=where, secret=None, pool=pool)
            del tbl
            fd, tmp_name = tempfile.mkstemp(prefix=f".{snap_path.name}.", suffix=".tmp", dir=snap_path.parent)
            tmp = Path(tmp_name)
            try:
                # Hash the bytes as they are written, never re-read: whoever can write the
                # directory must not be able to swap the file between writing and signing.
                with open(fd, "wb") as fh:
                    os.fchmod(fh.fileno(), 0o644 & ~_umask())
                    hashing = _HashingWriter(fh)
                    with pa.PythonFile(hashing, mode="w") as sink:
                        _snapshot.write(sink, prep.ids, prep.codes, prep.classes, prep.counts, prep.features)
                    fh.flush()
                    os.fsync(fh.fileno())
                manifest = _sign(prep, hashing.hexdigest(), hashing.size, snap_path.name, key, None, ident)
                write_files_atomically([(snap_path, tmp), (manifest_path, manifest.to_bytes())])
            finally:
                if tmp.exists():
                    tmp.unlink()
    return SealResult(manifest, manifest_path, snap_path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _next_version(manifest_path: Path, name: str, key: Ed25519PrivateKey) -> int:
    """One more than the version of the seal being replaced (same dataset, same key); else 1."""
    if not manifest_path.is_file():
        return 1
    try:
        old = load_manifest(manifest_path)
    except IntegrityError:
        return 1
    if old.name != name or not old.verify_signature(key.public_key()).valid:
        return 1
    return old.version + 1
