"""The label snapshot (the manifest's sidecar file) and the private-mode cryptography.

A snapshot is an Arrow IPC file holding, in the data's row order, the ids
(``id``; integer ids as deltas, so sequential ids cost almost nothing), the
label codes (``code``, narrow unsigned ints), and any feature columns sealed
with ``--columns`` (``column:<name>``).  With integer ids the buffers are
LZ4-compressed; string ids are stored as they are (zstd would halve UUID text
but double the cost of a seal, and LZ4 cannot shrink it), so the snapshot is
about the size of the id column.
Its schema metadata (``flipguard``) lists the classes, so ``classes[code]``
is each row's label as text.  The manifest holds the snapshot's SHA-256.

Private mode
------------
The snapshot bytes are encrypted with AES-256-GCM (:mod:`cryptography`).
Keys come from a secret (``FLIPGUARD_SECRET`` or a file) through HKDF-SHA-256
with a random 16-byte salt kept in the manifest: 32 bytes for AES-GCM and 32
for the HMAC-SHA-256 that keys the manifest's row commitments.  The plaintext
is padded to a Padmé length (Nikitin et al., "Reducing Metadata Leakage from
Encrypted Files and Communication with PURBs", PoPETs 2019), so the file size
reveals only about ``log log`` bits about how compressible the labels are.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from .._arrow import from_numpy, to_numpy
from ..exceptions import IntegrityError
from ._columns import Ids, code_dtype

__all__ = ["read_secret"]

SECRET_ENV = "FLIPGUARD_SECRET"
MIN_SECRET_BYTES = 16
_MAGIC_ENC = b"FGSNAPE1"
_AAD = b"flipguard-snapshot-v1"
FEATURE_PREFIX = "column:"


@dataclass(frozen=True)
class Snapshot:
    """A decoded snapshot: ids, label codes over ``classes``, sealed feature columns."""

    ids: Ids
    codes: np.ndarray
    classes: list
    class_counts: np.ndarray
    features: dict = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return len(self.codes)


# -- secrets and keys -----------------------------------------------------------
def read_secret(secret_file: str | os.PathLike | None = None, *, env: str = SECRET_ENV) -> bytes | None:
    """The private-seal secret from ``secret_file`` or environment variable ``env``; ``None`` if neither.

    A secret file must be readable by its owner only (like a private key); a
    final newline is ignored.  Secrets shorter than 16 bytes are refused: use
    a random one, e.g. ``openssl rand -hex 32 > seal.secret``.
    """
    if secret_file is not None:
        path = Path(secret_file)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise IntegrityError(f"secret file {path}: no such file") from None
        if os.name == "posix" and stat.S_IMODE(st.st_mode) & 0o077:
            raise IntegrityError(f"secret file {path} is readable by group or others "
                                 f"(mode {stat.S_IMODE(st.st_mode):04o}); refusing to use it. "
                                 f"Fix: chmod 600 {path}")
        secret, what = path.read_bytes().rstrip(b"\r\n"), f"secret file {path}"
    elif os.environ.get(env):
        secret, what = os.environ[env].encode(), f"${env}"
    else:
        return None
    if len(secret) < MIN_SECRET_BYTES:
        raise IntegrityError(f"{what} is shorter than {MIN_SECRET_BYTES} bytes; use a random secret "
                             "(e.g. openssl rand -hex 32)")
    return secret


def derive_keys(secret: bytes, salt: bytes) -> tuple[bytes, bytes, str]:
    """``(aes_key, mac_key, key_check)`` from the secret (HKDF-SHA-256, RFC 5869)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    okm = HKDF(algorithm=hashes.SHA256(), length=64, salt=salt, info=b"flipguard seal v1").derive(secret)
    aes_key, mac_key = okm[:32], okm[32:]
    check = hmac.new(mac_key, b"flipguard key check", hashlib.sha256).hexdigest()[:32]
    return aes_key, mac_key, check


def padme(length: int) -> int:
    """Padmé padded length (at most ~12% overhead, leaks O(log log L) bits)."""
    if length < 2:
        return length
    e = length.bit_length() - 1
    s = e.bit_length()
    mask = (1 << (e - s)) - 1
    return (length + mask) & ~mask


def encrypt(data: bytes, aes_key: bytes) -> bytes:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    plain = struct.pack("<Q", len(data)) + data
    plain += b"\0" * (padme(len(plain)) - len(plain))
    nonce = os.urandom(12)
    try:
        sealed = AESGCM(aes_key).encrypt(nonce, plain, _AAD)
    except OverflowError:
        raise IntegrityError("the label snapshot is too large to encrypt in one piece "
                             "(over 2 GiB); seal without --private or split the data") from None
    return _MAGIC_ENC + nonce + sealed


def decrypt(data: bytes, aes_key: bytes, where: str) -> bytes:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    data = bytes(data)
    if not data.startswith(_MAGIC_ENC) or len(data) < len(_MAGIC_ENC) + 12 + 16 + 8:
        raise IntegrityError(f"{where}: not an encrypted flipguard snapshot")
    nonce = data[len(_MAGIC_ENC):len(_MAGIC_ENC) + 12]
    try:
        plain = AESGCM(aes_key).decrypt(nonce, data[len(_MAGIC_ENC) + 12:], _AAD)
    except InvalidTag:
        raise IntegrityError(f"{where}: cannot decrypt (wrong secret or modified file)") from None
    (n,) = struct.unpack("<Q", plain[:8])
    return plain[8:8 + n]


# -- encode / decode ------------------------------------------------------------
def encode(ids: Ids, codes: np.ndarray, classes: list, counts: np.ndarray,
           features: dict[str, pa.ChunkedArray]) -> bytes:
    """Snapshot bytes (see :func:`write`)."""
    sink = pa.BufferOutputStream()
    write(sink, ids, codes, classes, counts, features)
    return sink.getvalue().to_pybytes()


def write(sink, ids: Ids, codes: np.ndarray, classes: list, counts: np.ndarray,
          features: dict[str, pa.ChunkedArray]) -> None:
    """Write a snapshot to ``sink`` (a path or Arrow output stream) as an Arrow IPC file.

    Batches of 1M rows, so Arrow compresses buffers in parallel.
    """
    width = code_dtype(len(classes))
    if ids.kind == "int64":  # deltas: sequential or gapped ids compress to almost nothing, fast
        v = ids.numpy()
        delta = np.empty_like(v)
        delta[:1] = v[:1]
        np.subtract(v[1:], v[:-1], out=delta[1:])
        id_col, id_encoding, codec = from_numpy(delta), "delta", "lz4"
    else:  # zstd would halve hex ids at twice the cost of the whole seal; LZ4 cannot shrink them
        id_col, id_encoding, codec = ids.values, "plain", None
    cols = {"id": id_col, "code": from_numpy(np.ascontiguousarray(codes, dtype=width))}
    for name, col in features.items():
        cols[FEATURE_PREFIX + name] = col
    meta = {"format_version": 1, "classes": classes, "counts": [int(c) for c in counts], "rows": len(codes),
            "id_encoding": id_encoding}
    table = pa.table(cols).replace_schema_metadata({b"flipguard": json.dumps(meta).encode()})
    options = pa.ipc.IpcWriteOptions(compression=codec)
    with pa.ipc.new_file(sink, table.schema, options=options) as writer:
        writer.write_table(table, max_chunksize=1 << 20)


def decode(data: bytes, *, rows: int, columns: list[str], id_type: str, where: str) -> Snapshot:
    """Parse snapshot bytes, checking they fit the manifest (rows, id type, columns, codes)."""
    def bad(msg):
        raise IntegrityError(f"{where}: {msg} (corrupt, or the snapshot of another seal)")

    try:
        table = pa.ipc.open_file(pa.py_buffer(data)).read_all()
        meta = json.loads(table.schema.metadata[b"flipguard"])
    except (pa.ArrowInvalid, pa.ArrowIOError, pa.ArrowNotImplementedError, KeyError, TypeError,
            ValueError, OSError):
        bad("not a readable label snapshot")
    names = table.column_names
    expected = ["id", "code"] + [FEATURE_PREFIX + c for c in columns]
    if names != expected:
        bad(f"columns {names} do not match the manifest's {expected}")
    classes, counts = meta.get("classes"), meta.get("counts")
    if not (isinstance(classes, list) and isinstance(counts, list) and len(counts) == len(classes)
            and all(isinstance(c, int) for c in counts)):
        bad("class list missing")
    if meta.get("rows") != rows or table.num_rows != rows or sum(counts) != rows:
        bad(f"holds {table.num_rows} rows, the manifest says {rows}")
    id_col = table.column("id")
    kind = "int64" if pa.types.is_int64(id_col.type) else "string"
    if kind != id_type:
        bad(f"id type {id_col.type} does not match the manifest's {id_type}")
    if kind == "int64":
        values = to_numpy(id_col)
        if meta.get("id_encoding") == "delta":
            values = np.cumsum(values)
        ids = Ids("int64", values)
    else:
        ids = Ids("string", id_col)
    code_col = table.column("code")
    if code_col.null_count or not pa.types.is_unsigned_integer(code_col.type):
        bad("label codes are not unsigned integers")
    codes = to_numpy(code_col)
    if rows and int(codes.max()) >= len(classes):
        bad("a label code is out of range")
    features = {c: table.column(FEATURE_PREFIX + c) for c in columns}
    return Snapshot(ids=ids, codes=codes, classes=classes, class_counts=np.asarray(counts, np.int64),
                    features=features)


def check_bytes(data, snapshot_meta: dict, where: str) -> None:
    """The snapshot's size and SHA-256 must be the ones the (signed) manifest holds."""
    size = memoryview(data).nbytes
    if size != snapshot_meta["bytes"] or hashlib.sha256(data).hexdigest() != snapshot_meta["sha256"]:
        raise IntegrityError(f"{where}: does not match the manifest ({size} bytes, SHA-256 differs); "
                             "the snapshot was modified, truncated or replaced")


def is_encrypted(data) -> bool:
    return bytes(memoryview(data)[:len(_MAGIC_ENC)]) == _MAGIC_ENC
