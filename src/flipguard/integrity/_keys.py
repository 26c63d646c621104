"""Ed25519 signing keys: generate, store safely, load, name by key id.

Keys come from :mod:`cryptography` (Ed25519, RFC 8032).  The private key is a
PEM/PKCS8 file created with mode 0600 from its first byte (no window in which
another user could read it); loading one that group or others can read is
refused, as OpenSSH refuses an unprotected private key.  A key is named by its
**key id**: the first 16 hex digits of the SHA-256 of the raw 32-byte public
key.  Key material never appears in messages.

Public API
----------
``generate_keypair() -> Ed25519PrivateKey``
``write_keypair(directory, *, force=False) -> KeyPaths``
``load_private_key(path) -> Ed25519PrivateKey``
``load_public_key(path) -> Ed25519PublicKey``
``key_id(key) -> str``
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from ..exceptions import IntegrityError
from ._files import read_bytes

__all__ = [
    "KeyPaths",
    "generate_keypair",
    "key_id",
    "load_private_key",
    "load_public_key",
    "write_keypair",
]

PRIVATE_NAME = "flipguard.key"
PUBLIC_NAME = "flipguard.pub"


@dataclass(frozen=True)
class KeyPaths:
    """Where :func:`write_keypair` put a key pair, and the pair's key id."""

    private: Path
    public: Path
    key_id: str

    def to_dict(self) -> dict:
        return {"private": str(self.private), "public": str(self.public), "key_id": self.key_id}


def generate_keypair() -> Ed25519PrivateKey:
    """A fresh Ed25519 private key (its public half is ``key.public_key()``)."""
    return Ed25519PrivateKey.generate()


def key_id(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """First 16 hex digits of SHA-256 over the raw 32-byte public key.

    Examples
    --------
    >>> from flipguard.integrity import generate_keypair, key_id
    >>> len(key_id(generate_keypair()))
    16
    """
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    if not isinstance(public, Ed25519PublicKey):
        raise IntegrityError(f"expected an Ed25519 key, got {type(key).__name__}")
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def write_keypair(directory: str | os.PathLike, *, force: bool = False) -> KeyPaths:
    """Generate a key pair and write ``flipguard.key`` (0600) and ``flipguard.pub`` in ``directory``.

    The private key is written to a temporary file created with mode 0600
    (``O_CREAT | O_EXCL``), flushed to disk, then renamed into place, so it is
    never readable by others and never half-written.

    Parameters
    ----------
    directory : path
        Created (mode 0700) if it does not exist.
    force : bool, default=False
        Replace existing key files.  Without it an existing file is an error.

    Returns
    -------
    KeyPaths
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise IntegrityError(f"{directory}: exists and is not a directory")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    private_path, public_path = directory / PRIVATE_NAME, directory / PUBLIC_NAME
    for p in (private_path, public_path):
        if p.is_dir():
            raise IntegrityError(f"{p} is a folder; remove it or choose another --out")
    if not force:
        existing = [str(p) for p in (private_path, public_path) if p.exists() or p.is_symlink()]
        if existing:
            verb = "already exist" if len(existing) == 2 else "already exists"
            raise IntegrityError(f"{' and '.join(existing)} {verb}; "
                                 "pass --force to replace the key pair")
    key = generate_keypair()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    _write_new(private_path, private_pem, 0o600, replace=force)
    _write_new(public_path, public_pem, 0o644, replace=force)
    return KeyPaths(private_path, public_path, key_id(key))


def _write_new(path: Path, data: bytes, mode: int, *, replace: bool) -> None:
    """Write ``data`` to a temp file created with ``mode``, fsync, then rename (or link) onto ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
    try:
        try:
            os.fchmod(fd, mode)  # the umask may have removed bits from a 0644 public key
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if path appeared meanwhile: never overwrite silently
            except FileExistsError:
                raise IntegrityError(f"{path} already exists; pass --force "
                                     "to replace the key pair") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def load_private_key(path: str | os.PathLike) -> Ed25519PrivateKey:
    """Load an Ed25519 private key from a PEM/PKCS8 file only its owner can read.

    Raises
    ------
    IntegrityError
        Missing file, a file group or others can read (like OpenSSH's
        "UNPROTECTED PRIVATE KEY FILE"), or not an unencrypted Ed25519 private key.
    """
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise IntegrityError(f"private key {path}: no such file") from None
    if not stat.S_ISREG(st.st_mode):
        raise IntegrityError(f"private key {path}: not a regular file")
    data = read_bytes(path, "private key")
    if b"PUBLIC KEY-----" in data and b"PRIVATE KEY-----" not in data:
        raise IntegrityError(f"{path} is a public key; signing needs the private key "
                             f"(--key {path.with_name(PRIVATE_NAME)} from flipguard keygen, not the .pub file)")
    perms = stat.S_IMODE(st.st_mode)
    if os.name == "posix" and perms & 0o077:
        raise IntegrityError(f"private key {path} is readable by group or others "
                             f"(mode {perms:04o}); refusing to use it. Fix: chmod 600 {path}")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise IntegrityError(f"private key {path} is encrypted; flipguard needs an unencrypted "
                             "key file protected by its mode (0600)") from None
    except (ValueError, UnsupportedAlgorithm):
        raise IntegrityError(f"private key {path}: not a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise IntegrityError(f"private key {path}: not an Ed25519 key "
                             "(make one with: flipguard keygen --out DIR)")
    return key


def load_public_key(path: str | os.PathLike) -> Ed25519PublicKey:
    """Load an Ed25519 public key (PEM SubjectPublicKeyInfo, as ``flipguard keygen`` writes)."""
    path = Path(path)
    data = read_bytes(path, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        hint = " (that is a private key: give the .pub file)" if b"PRIVATE KEY" in data else ""
        raise IntegrityError(f"public key {path}: not a PEM public key{hint}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise IntegrityError(f"public key {path}: not an Ed25519 key")
    return key
