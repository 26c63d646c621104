"""The signed seal manifest: canonical JSON, Ed25519 signature, strict parsing.

A manifest is one JSON object written in **canonical form**: keys sorted, no
insignificant whitespace, ASCII only (``json.dumps(sort_keys=True,
separators=(",", ":"), ensure_ascii=True)``) and one final newline.  The
Ed25519 signature covers the canonical bytes of every field except
``signature`` itself.  Parsing is strict: a file whose bytes differ in any way
from the canonical serialisation of what it parses to is rejected, so no
byte of a manifest can change without being noticed (a changed value breaks
the signature; a changed spelling of the same value breaks canonical form).

Fields (``format_version`` 2)
-----------------------------
``kind``           ``"flipguard.seal"``
``name``           the dataset the seal is for (``seal --name``; default: the
                   file's name or the table's); ``verify`` refuses a seal made
                   for another name (mix-and-match)
``version``        the dataset version this seal records (an integer >= 1; by
                   default one more than the seal it replaces)
``purpose``        ``"seal"`` for a standalone seal; ``"ledger-input"`` /
                   ``"ledger-output"`` for the seals a ledger entry embeds,
                   which ``verify`` refuses as standalone seals
``created``        UTC time of sealing, ISO 8601 with microseconds
``source``         the data as named when sealed (path, URL, redacted DSN)
``label``, ``id``  label and id column names; ``id_type`` ``"int64"`` or ``"string"``
``label_type``     the label column's type family (``"integer"``, ``"string"``,
                   ``"boolean"``, ``"float64"``, ``"float32"``, ``"decimal(scale=2)"``...);
                   a different family when verifying is a finding
``columns``        feature columns sealed as well (``--columns``)
``rows``           number of rows
``classes``        ``[{"label": value, "count": n}, ...]`` (``null`` in private manifests)
``commitment``     block digests and root over every (id, label) pair in row
                   order (see :func:`flipguard.integrity._columns.commit`)
``snapshot``       the sidecar file: name (next to the manifest), SHA-256,
                   size, format (Arrow IPC, LZ4/zstd buffers; AES-256-GCM when private)
``private``        ``null``, or the key-derivation parameters of a private seal
``key_id``         the signer's key id; ``tool`` the flipguard version
``signature``      ``{"algorithm": "ed25519", "value": base64}``

Public API
----------
``Manifest.from_bytes(data, where=...)``, ``load_manifest(path)``,
``Manifest.to_bytes()``, ``Manifest.verify_signature(public_key) -> SignatureCheck``,
``Manifest.digest()`` (SHA-256 of the file bytes).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from ..exceptions import IntegrityError
from ._columns import SCHEME_KEYED, SCHEME_PLAIN
from ._files import read_bytes
from ._keys import key_id as _key_id

__all__ = ["Manifest", "SignatureCheck", "canonical_json", "load_manifest"]

FORMAT_VERSION = 2
KIND = "flipguard.seal"
#: ``purpose`` values: a standalone seal, and the two seals each ledger entry embeds.
PURPOSES = ("seal", "ledger-input", "ledger-output")
#: Nesting deeper than this in a manifest or ledger line is refused before parsing.
MAX_DEPTH = 64
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_HEX16 = re.compile(r"[0-9a-f]{16}\Z")
_HEX32 = re.compile(r"[0-9a-f]{32}\Z")


def canonical_json(obj: Any) -> bytes:
    """Canonical bytes of a JSON value: sorted keys, compact separators, ASCII, no NaN."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def strict_json(data: bytes, where: str) -> Any:
    """Parse JSON, refusing duplicate keys, NaN/Infinity and non-UTF-8 bytes."""
    def pairs(items):
        out = {}
        for k, v in items:
            if k in out:
                raise ValueError(f"duplicate key {k!r}")
            out[k] = v
        return out

    def constant(name):
        raise ValueError(f"{name} is not allowed")

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise IntegrityError(f"{where}: not valid UTF-8 (corrupt or not a flipguard file)") from None
    if _too_deep(data):
        raise IntegrityError(f"{where}: JSON nested more than {MAX_DEPTH} levels deep "
                             "(corrupt or not a flipguard file)")
    try:
        return json.loads(text, object_pairs_hook=pairs, parse_constant=constant)
    except RecursionError:  # pragma: no cover - _too_deep refuses these first
        raise IntegrityError(f"{where}: JSON nested too deeply (corrupt or not a flipguard file)") from None
    except ValueError as exc:  # JSONDecodeError is a ValueError
        raise IntegrityError(f"{where}: not valid JSON ({exc}); corrupt or truncated") from None


def _too_deep(data: bytes) -> bool:
    """Nesting depth above :data:`MAX_DEPTH`, counted on the bytes with strings blanked out.

    Counted before parsing, so a hostile file cannot make the parser recurse
    (or a later step walk the structure) thousands of levels deep.
    """
    if data.count(b"[") + data.count(b"{") <= MAX_DEPTH:
        return False
    import numpy as np

    bare = _STRING.sub(b'""', data)
    b = np.frombuffer(bare, dtype=np.uint8)
    step = ((b == 0x5B) | (b == 0x7B)).astype(np.int32) - ((b == 0x5D) | (b == 0x7D)).astype(np.int32)
    return bool(np.cumsum(step).max(initial=0) > MAX_DEPTH)


_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


@dataclass(frozen=True)
class SignatureCheck:
    """Outcome of checking a manifest's (or ledger entry's) signature against a public key."""

    valid: bool
    signed_by: str
    checked_with: str
    reason: str = ""

    def to_dict(self) -> dict:
        return {"valid": self.valid, "signed_by": self.signed_by,
                "checked_with": self.checked_with, "reason": self.reason}


def sign_body(body: dict, private_key: Ed25519PrivateKey) -> dict:
    """``body`` plus an Ed25519 ``signature`` over its canonical bytes."""
    value = private_key.sign(canonical_json(body))
    return {**body, "signature": {"algorithm": "ed25519", "value": base64.b64encode(value).decode()}}


def check_signature(doc: dict, public_key: Ed25519PublicKey, what: str) -> SignatureCheck:
    """Check ``doc["signature"]`` over the canonical bytes of ``doc`` without it."""
    given = _key_id(public_key)
    signer = doc.get("key_id", "?")
    if signer != given:
        return SignatureCheck(False, signer, given,
                              f"{what} was signed by key {signer}, not by the public key given ({given})")
    body = {k: v for k, v in doc.items() if k != "signature"}
    try:
        public_key.verify(_b64(doc["signature"]["value"]), canonical_json(body))
    except InvalidSignature:
        return SignatureCheck(False, signer, given,
                              f"{what}'s signature does not match its contents: it was modified after signing")
    return SignatureCheck(True, signer, given)


def _b64(text: str) -> bytes:
    raw = base64.b64decode(text, validate=True)
    if base64.b64encode(raw).decode() != text:
        raise binascii.Error("non-canonical base64")
    return raw


@dataclass(frozen=True)
class Manifest:
    """A signed seal of a dataset's labels (see the module docstring for every field).

    Build one with :func:`flipguard.integrity.seal_table`; read one with
    :func:`load_manifest` or :meth:`from_bytes`.  ``doc`` holds the JSON object.
    """

    doc: dict = field(repr=False)

    # -- convenient views of the signed fields ------------------------------
    @property
    def name(self) -> str:
        """The dataset this seal is for."""
        return self.doc["name"]

    @property
    def version(self) -> int:
        """The dataset version this seal records."""
        return self.doc["version"]

    @property
    def purpose(self) -> str:
        """``"seal"`` (standalone) or ``"ledger-input"`` / ``"ledger-output"`` (embedded in a ledger entry)."""
        return self.doc["purpose"]

    @property
    def standalone(self) -> bool:
        return self.doc["purpose"] == "seal"

    @property
    def label_type(self) -> str:
        """The label column's type family when sealed (see :func:`flipguard.integrity._columns.type_family`)."""
        return self.doc["label_type"]

    @property
    def label(self) -> str:
        return self.doc["label"]

    @property
    def id(self) -> str:
        return self.doc["id"]

    @property
    def columns(self) -> list[str]:
        return list(self.doc["columns"])

    @property
    def rows(self) -> int:
        return self.doc["rows"]

    @property
    def source(self) -> str:
        return self.doc["source"]

    @property
    def created(self) -> str:
        return self.doc["created"]

    @property
    def key_id(self) -> str:
        return self.doc["key_id"]

    @property
    def private(self) -> bool:
        return self.doc["private"] is not None

    @property
    def snapshot(self) -> dict:
        return dict(self.doc["snapshot"])

    @property
    def commitment(self) -> dict:
        return dict(self.doc["commitment"])

    @property
    def class_counts(self) -> dict[str | None, int] | None:
        """``{label: count}`` as sealed, or ``None`` for a private manifest."""
        if self.doc["classes"] is None:
            return None
        return {c["label"]: c["count"] for c in self.doc["classes"]}

    # -- bytes ---------------------------------------------------------------
    def to_dict(self) -> dict:
        return json.loads(canonical_json(self.doc))

    def to_bytes(self) -> bytes:
        """The manifest file's exact bytes (canonical JSON and a newline)."""
        return canonical_json(self.doc) + b"\n"

    def to_json(self) -> str:
        return self.to_bytes().decode("ascii")

    def digest(self) -> str:
        """SHA-256 of :meth:`to_bytes` (how a ledger refers to this seal)."""
        return hashlib.sha256(self.to_bytes()).hexdigest()

    def verify_signature(self, public_key: Ed25519PublicKey) -> SignatureCheck:
        return check_signature(self.doc, public_key, "the manifest")

    @classmethod
    def from_dict(cls, doc: dict, where: str = "<manifest>") -> Manifest:
        """Validate a parsed manifest object (types, formats, version)."""
        _validate(doc, where)
        return cls(doc=doc)

    @classmethod
    def from_bytes(cls, data: bytes, where: str = "<manifest>") -> Manifest:
        """Parse manifest bytes strictly; :class:`IntegrityError` names what is wrong."""
        if not data:
            raise IntegrityError(f"{where}: empty file (not a flipguard manifest)")
        doc = strict_json(data, where)
        manifest = cls.from_dict(doc, where)
        if manifest.to_bytes() != data:
            raise IntegrityError(f"{where}: not in canonical form (the file was edited or re-formatted "
                                 "after sealing; a manifest must be byte-for-byte as flipguard wrote it)")
        return manifest


def load_manifest(path: str | os.PathLike) -> Manifest:
    """Read and strictly parse a manifest file (the signature is checked separately)."""
    return Manifest.from_bytes(read_bytes(path, "manifest"), where=f"manifest {Path(path)}")


# -- validation ---------------------------------------------------------------
_FIELDS = {"format_version", "kind", "name", "version", "purpose", "created", "source", "label", "id",
           "id_type", "label_type", "rows", "columns", "classes", "commitment", "snapshot", "private", "key_id",
           "tool", "signature"}


def _validate(doc: Any, where: str) -> None:
    def bad(msg: str):
        raise IntegrityError(f"{where}: {msg} (corrupt or not a flipguard manifest)")

    if not isinstance(doc, dict):
        bad("not a JSON object")
    if doc.get("kind") != KIND:
        bad(f"kind is {doc.get('kind')!r}, expected {KIND!r}")
    version = doc.get("format_version")
    if not _is_int(version):
        bad("format_version missing")
    if version == 1:
        raise IntegrityError(f"{where}: manifest format_version 1 was written by flipguard before seals "
                             "named their dataset and version; it cannot be checked for mix-and-match "
                             "or rollback. Check it with the flipguard that wrote it, then seal the data "
                             "again (flipguard seal ... --name NAME)")
    if version != FORMAT_VERSION:
        raise IntegrityError(f"{where}: manifest format_version {version} is not supported "
                             f"(this flipguard reads version {FORMAT_VERSION})")
    if set(doc) != _FIELDS:
        extra, missing = sorted(set(doc) - _FIELDS), sorted(_FIELDS - set(doc))
        bad("unexpected field(s) " + ", ".join(extra) if extra else "missing field(s) " + ", ".join(missing))
    for name in ("created", "source", "label", "id", "tool", "name", "label_type"):
        if not isinstance(doc[name], str):
            bad(f"{name} must be a string")
    if not doc["name"]:
        bad("name must not be empty")
    if not _is_int(doc["version"]) or doc["version"] < 1:
        bad("version must be an integer >= 1")
    if doc["purpose"] not in PURPOSES:
        bad("purpose must be one of " + ", ".join(PURPOSES))
    if not doc["label"] or not doc["id"]:
        bad("label and id column names must not be empty")
    if doc["id_type"] not in ("int64", "string"):
        bad("id_type must be 'int64' or 'string'")
    if not _is_int(doc["rows"]) or doc["rows"] < 0:
        bad("rows must be a non-negative integer")
    if not (isinstance(doc["columns"], list) and all(isinstance(c, str) and c for c in doc["columns"])):
        bad("columns must be a list of column names")
    if not (isinstance(doc["key_id"], str) and _HEX16.match(doc["key_id"])):
        bad("key_id must be 16 hex digits")
    _validate_classes(doc, bad)
    _validate_commitment(doc, bad)
    _validate_snapshot(doc, bad)
    _validate_private(doc, bad)
    sig = doc["signature"]
    if not (isinstance(sig, dict) and set(sig) == {"algorithm", "value"} and isinstance(sig["value"], str)):
        bad("signature must be {algorithm, value}")
    if sig["algorithm"] != "ed25519":
        bad(f"signature algorithm {sig['algorithm']!r} is not supported (ed25519 only)")
    try:
        if len(_b64(sig["value"])) != 64:
            bad("signature must be 64 bytes")
    except (binascii.Error, ValueError):
        bad("signature is not canonical base64")


def _validate_classes(doc, bad) -> None:
    classes = doc["classes"]
    if classes is None:
        if doc["private"] is None:
            bad("classes may only be omitted in a private manifest")
        return
    if doc["private"] is not None:
        bad("a private manifest must not list classes")
    if not isinstance(classes, list):
        bad("classes must be a list")
    seen = set()
    for c in classes:
        if not (isinstance(c, dict) and set(c) == {"label", "count"} and (c["label"] is None or isinstance(c["label"], str))
                and _is_int(c["count"]) and c["count"] >= 0):
            bad("each class must be {label, count}")
        if c["label"] in seen:
            bad(f"class {c['label']!r} listed twice")
        seen.add(c["label"])
    if sum(c["count"] for c in classes) != doc["rows"]:
        bad("class counts do not add up to rows")


def _validate_commitment(doc, bad) -> None:
    c = doc["commitment"]
    keys = {"scheme", "block_rows", "code_bytes", "blocks", "root"}
    if not (isinstance(c, dict) and set(c) == keys):
        bad("commitment must be {" + ", ".join(sorted(keys)) + "}")
    expected = SCHEME_KEYED if doc["private"] is not None else SCHEME_PLAIN
    if c["scheme"] != expected:
        bad(f"commitment scheme must be {expected!r}")
    if not (_is_int(c["block_rows"]) and c["block_rows"] > 0) or c["code_bytes"] not in (1, 2, 4):
        bad("commitment block_rows/code_bytes invalid")
    n_blocks = max(1, -(-doc["rows"] // c["block_rows"]))
    if not (isinstance(c["blocks"], list) and len(c["blocks"]) == n_blocks
            and all(isinstance(b, str) and _HEX64.match(b) for b in c["blocks"])):
        bad(f"commitment must list {n_blocks} block digest(s) of 64 hex digits")
    if not (isinstance(c["root"], str) and _HEX64.match(c["root"])):
        bad("commitment root must be 64 hex digits")


def _validate_snapshot(doc, bad) -> None:
    s = doc["snapshot"]
    if not (isinstance(s, dict) and set(s) == {"file", "sha256", "bytes", "format"}):
        bad("snapshot must be {file, sha256, bytes, format}")
    name = s["file"]
    if not (isinstance(name, str) and name and os.path.basename(name) == name and name not in (".", "..")
            and "/" not in name and "\\" not in name):
        bad("snapshot file must be a plain file name next to the manifest")
    if not (isinstance(s["sha256"], str) and _HEX64.match(s["sha256"])):
        bad("snapshot sha256 must be 64 hex digits")
    if not (_is_int(s["bytes"]) and s["bytes"] > 0):
        bad("snapshot bytes must be a positive integer")
    expected = "aes-256-gcm+arrow-ipc" if doc["private"] is not None else "arrow-ipc"
    if s["format"] != expected:
        bad(f"snapshot format must be {expected!r}")


def _validate_private(doc, bad) -> None:
    p = doc["private"]
    if p is None:
        return
    if not (isinstance(p, dict) and set(p) == {"kdf", "salt", "cipher", "key_check"}):
        bad("private must be {kdf, salt, cipher, key_check}")
    if p["kdf"] != "hkdf-sha256" or p["cipher"] != "aes-256-gcm":
        bad("private kdf/cipher must be hkdf-sha256 / aes-256-gcm")
    if not (isinstance(p["salt"], str) and _HEX32.match(p["salt"])):
        bad("private salt must be 32 hex digits")
    if not (isinstance(p["key_check"], str) and _HEX32.match(p["key_check"])):
        bad("private key_check must be 32 hex digits")


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)
