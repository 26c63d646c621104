"""Verification: does the data still hold the labels its signed manifest sealed?

Core API (in memory)::

    report = verify_table(table, manifest, public_key, snapshot=snapshot_bytes)
    report.ok            # signature valid and every sealed row unchanged
    report.check()       # raises IntegrityError unless ok

``verify(source, manifest_path, public_key)`` reads the manifest, the snapshot
next to it and only the needed columns of ``source``.

Order of checks: the manifest parses strictly (else :class:`IntegrityError`);
its signature must be by the given key (else a report with
``signature.valid = False`` and nothing else compared); it must be a
standalone seal (not one embedded in a ledger entry) made for this dataset's
name, and, with a ledger, not older than the ledger's latest seal of that
name (else a report whose findings say so, nothing else compared); the
snapshot's SHA-256 must match the manifest (else :class:`IntegrityError`);
then every row is compared by id, and the label column's type family with
the sealed one.  Reordered rows and unsealed columns do not matter.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .._arrow import to_numpy
from ..exceptions import DataError, IntegrityError
from . import _snapshot
from ._columns import label_codes, normalize_ids, type_family
from ._compare import LabelChanges, Side, column_changes, compare
from ._keys import load_public_key
from ._manifest import Manifest, SignatureCheck, load_manifest
from ._source import check_columns, default_name, describe, read_keyed

__all__ = ["VerifyReport", "open_snapshot", "verify", "verify_table"]


class SignedFindings:
    """``ok`` and ``check()`` for a report with a ``signature`` check and a list of ``findings``."""

    @property
    def ok(self) -> bool:
        """True when the signature is valid and no sealed row or value differs."""
        return self.signature.valid and not self.findings

    def check(self):
        """Return ``self`` when :attr:`ok`, else raise :class:`IntegrityError` listing the findings."""
        if not self.ok:
            raise IntegrityError(f"{self.source}: " + "; ".join(self.findings))
        return self


@dataclass(frozen=True)
class VerifyReport(SignedFindings):
    """Outcome of :func:`verify_table` / :func:`verify`.

    Attributes
    ----------
    source : str
        The data checked.
    manifest : dict
        Who sealed what: path, source, created, key id, rows, label, id, columns, private.
    signature : SignatureCheck
        Valid, and signed by the key given?  When not, nothing else is compared.
    changes : LabelChanges or None
        Row-exact label differences (``before`` = sealed, ``after`` = current).
    columns : dict
        For each sealed feature column: ``row``, ``id``, ``sealed``, ``current``
        of rows whose value changed.
    findings : list of str
        One plain line per problem; empty when the data is intact.
    label_type : dict
        ``{"sealed": ..., "current": ...}`` type families of the label column.
    notes : list of str
        Information that is not a problem (e.g. what a ledger says about this seal).
    """

    source: str
    manifest: dict
    signature: SignatureCheck
    changes: LabelChanges | None = None
    columns: dict = field(default_factory=dict)
    findings: list = field(default_factory=list)
    label_type: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)

    def to_dict(self) -> dict:
        out = {"ok": self.ok, "source": self.source, "manifest": self.manifest,
               "signature": self.signature.to_dict(), "findings": list(self.findings),
               "label_type": dict(self.label_type), "notes": list(self.notes)}
        if self.changes is not None:
            out.update(self.changes.to_dict("sealed", "current"))
        out["columns"] = {name: {"row": c["row"], "id": c["id"], "sealed": c["before"], "current": c["after"],
                                 **({"type": c["type"]} if c.get("type") else {})}
                          for name, c in self.columns.items()}
        return out

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False, default=str)


def open_snapshot(manifest: Manifest, data: bytes, *, secret: bytes | None = None,
                  where: str = "snapshot") -> _snapshot.Snapshot:
    """Check snapshot bytes against the manifest, decrypt a private one, decode it."""
    _snapshot.check_bytes(data, manifest.snapshot, where)
    if manifest.private:
        if secret is None:
            raise IntegrityError(f"{where}: the seal is private; give its secret "
                                 f"(--secret-file FILE or ${_snapshot.SECRET_ENV})")
        p = manifest.doc["private"]
        aes_key, _, check = _snapshot.derive_keys(secret, bytes.fromhex(p["salt"]))
        if check != p["key_check"]:
            raise IntegrityError(f"{where}: the secret given is not the one this private seal was made with")
        data = _snapshot.decrypt(data, aes_key, where)
    snap = _snapshot.decode(data, rows=manifest.rows, columns=manifest.columns,
                            id_type=manifest.doc["id_type"], where=where)
    counts = manifest.class_counts
    if counts is not None and (list(counts) != snap.classes or list(counts.values()) != snap.class_counts.tolist()):
        raise IntegrityError(f"{where}: class counts differ from the manifest's")
    return snap


def _info(manifest: Manifest, manifest_path) -> dict:
    return {"path": manifest_path, "name": manifest.name, "version": manifest.version,
            "purpose": manifest.purpose, "source": manifest.source, "created": manifest.created,
            "key_id": manifest.key_id, "rows": manifest.rows, "label": manifest.label, "id": manifest.id,
            "label_type": manifest.label_type, "columns": manifest.columns, "private": manifest.private}


def refusal(manifest: Manifest, name: str | None) -> str | None:
    """Why a correctly signed manifest cannot vouch for the data named ``name`` (``None``: it can)."""
    if not manifest.standalone:
        side = manifest.purpose.removeprefix("ledger-")
        return (f"the manifest is the {side} seal embedded in a ledger entry (dataset '{manifest.name}'), "
                "not a standalone seal: a ledger's seals record a step, they do not vouch for data "
                "(seal the data with flipguard seal)")
    if name is not None and manifest.name != name:
        return (f"the manifest seals dataset '{manifest.name}', not '{name}' (a seal of another dataset "
                "copied here?); if the data was renamed, pass --name '" + manifest.name + "'")
    return None


def verify_table(table: pa.Table, manifest: Manifest, public_key: Ed25519PublicKey, *,
                 snapshot: bytes, secret: bytes | None = None, source: str | None = None,
                 manifest_path: str | None = None, name: str | None = None) -> VerifyReport:
    """Verify an in-memory table against a manifest and its snapshot bytes.

    Parameters
    ----------
    table : pyarrow.Table
        Holds the sealed id and label columns (and sealed feature columns).
    manifest : Manifest
    public_key : Ed25519PublicKey
        The key the seal must be signed with.
    snapshot : bytes-like or Snapshot
        The sidecar's contents (``bytes``, ``memoryview`` or ``pyarrow.Buffer``),
        or what :func:`open_snapshot` made of them.
    secret : bytes, optional
        Needed for a private seal.
    source : str, optional
        Name of the data for messages.
    name : str, optional
        The dataset's name: a manifest sealed for another name is refused
        (a finding).  ``None`` skips that check (in-memory tables have no name).

    Returns
    -------
    VerifyReport
        ``ok`` is False when the signature fails or any row differs.

    Raises
    ------
    IntegrityError
        Snapshot modified, truncated or undecryptable.
    DataError
        The table lacks the manifest's columns (the manifest of another dataset?).
    """
    source = source or "<arrow table>"
    info = _info(manifest, manifest_path)
    sig = manifest.verify_signature(public_key)
    if not sig.valid:
        return VerifyReport(source, info, sig, findings=[sig.reason])
    refused = refusal(manifest, name)
    if refused:
        return VerifyReport(source, info, sig, findings=[refused])
    check_columns(table.column_names, [manifest.id, manifest.label, *manifest.columns], source,
                  hint=f"; the manifest seals columns '{manifest.id}' (id) and '{manifest.label}' (label) "
                       f"of {manifest.source} -- is it the manifest of another dataset?")
    snap_where = f"snapshot {manifest_path and Path(manifest_path).with_name(manifest.snapshot['file'])}" \
        if manifest_path else "snapshot"
    snap = snapshot if isinstance(snapshot, _snapshot.Snapshot) \
        else open_snapshot(manifest, snapshot, secret=secret, where=snap_where)

    findings: list[str] = []
    id_col = table.column(manifest.id)
    rows = None
    if id_col.null_count:
        valid = pc.is_valid(id_col)
        rows = to_numpy(pc.indices_nonzero(valid))
        findings.append(f"{id_col.null_count} row(s) have no id (rows "
                        f"{', '.join(map(str, pc.indices_nonzero(pc.invert(valid)).to_numpy()[:10].tolist()))})")
        table = table.filter(valid)
    ids = normalize_ids(table.column(manifest.id), what=f"{source}: id column '{manifest.id}'")
    values, codes = label_codes(table.column(manifest.label), snap.classes)
    before = Side(snap.ids, snap.codes, snap.classes, unique=True, counts=snap.class_counts)
    after = Side(ids, codes, values, rows=rows)
    changes, al = compare(before, after)
    findings[:0] = changes.findings("sealed", "current")
    current_type = type_family(table.column(manifest.label).type)
    if current_type != manifest.label_type:
        findings.append(f"the label column '{manifest.label}' changed type: sealed as {manifest.label_type}, "
                        f"now {current_type} (the values may read the same as text, but a model or a "
                        "reader that compares typed values sees different labels)")
    cols = {}
    for name in manifest.columns:
        c = column_changes(snap.features[name], table.column(name), al, before, after)
        cols[name] = c
        if c.get("type"):
            findings.append(f"sealed column '{name}' changed type: sealed as {c['type']['sealed']}, now "
                            f"{c['type']['current']} ({len(c['row'])} row(s); the values may read the same as "
                            "text, but a model or a reader that compares typed values sees different ones)")
        elif c["row"]:
            findings.append(f"{len(c['row'])} value(s) of sealed column '{name}' changed")
    return VerifyReport(source, info, sig, changes=changes, columns=cols, findings=findings,
                        label_type={"sealed": manifest.label_type, "current": current_type})


def read_snapshot_file(manifest: Manifest, manifest_path: str | os.PathLike) -> tuple[bytes, Path]:
    """The snapshot next to ``manifest_path``, read into memory.

    A private copy, not a memory map: the bytes that are hashed must be the
    bytes that are decoded, even if someone rewrites the file meanwhile.
    """
    from ._files import read_bytes

    path = Path(manifest_path).with_name(manifest.snapshot["file"])
    if not path.exists() and not path.is_symlink():
        raise IntegrityError(f"snapshot {path}: no such file (it belongs next to manifest "
                             f"{manifest_path})")
    return read_bytes(path, "snapshot"), path


def verify(source, manifest_path: str | os.PathLike | None = None, public_key=None, *,
           secret: bytes | None = None, table: str | None = None, query: str | None = None,
           name: str | None = None, ledger: str | os.PathLike | None = None,
           ledger_head: str | None = None) -> VerifyReport:
    """Verify a file, URL or database table against a manifest file.

    ``manifest_path`` defaults to ``DATA.flipguard.json``; ``public_key`` is a
    key or a ``.pub`` path.  The snapshot is read from next to the manifest.
    ``name`` is the dataset's name (default: as :func:`seal` derives it, the
    table or the file's name); a seal made for another name is refused.
    With ``ledger``, a seal older than the ledger's latest seal of this
    dataset that holds other labels is refused (rollback or freeze); the
    ledger must itself verify with ``public_key``.  ``ledger_head`` is the
    ledger's head hash recorded earlier (``ledger verify`` prints it): only
    against it are entries cut from the ledger's end detected (a shorter
    chain verifies, and vouches for an older seal).  See :func:`verify_table`.
    """
    from ._seal import default_manifest_path

    if public_key is None:
        raise IntegrityError("verify needs the signer's public key (--pubkey flipguard.pub)")
    key = public_key if isinstance(public_key, Ed25519PublicKey) else load_public_key(public_key)
    manifest_path = Path(manifest_path) if manifest_path is not None \
        else default_manifest_path(source, "--manifest / manifest_path=")
    manifest = load_manifest(manifest_path)
    name = name if name is not None else default_name(source, table)
    sig = manifest.verify_signature(key)
    if not sig.valid or refusal(manifest, name):  # read no data or snapshot for an untrusted manifest
        return verify_table(pa.table({}), manifest, key, snapshot=b"", source=describe(source),
                            manifest_path=str(manifest_path), name=name)
    notes: list[str] = []
    if ledger is not None:
        from ._ledger import rollback_check

        findings, notes = rollback_check(ledger, manifest, key, Path(manifest_path), head=ledger_head)
        if findings:
            return VerifyReport(describe(source), _info(manifest, str(manifest_path)), sig,
                                findings=findings, notes=notes)
    data, snap_path = read_snapshot_file(manifest, manifest_path)
    with ThreadPoolExecutor(max_workers=1) as pool:  # hash and decode the snapshot while the data is read
        opened = pool.submit(open_snapshot, manifest, data, secret=secret, where=f"snapshot {snap_path}")
        try:
            tbl, where = read_keyed(source, manifest.id, list(manifest.columns), label=manifest.label,
                                    table=table, query=query)
        except DataError as exc:
            if "not found" in str(exc):
                raise DataError(f"{exc}; the manifest seals columns '{manifest.id}' (id) and "
                                f"'{manifest.label}' (label) of {manifest.source} -- "
                                "is it the manifest of another dataset?") from None
            raise
        snap = opened.result()
    report = verify_table(tbl, manifest, key, snapshot=snap, secret=secret, source=where,
                          manifest_path=str(manifest_path), name=name)
    if notes:
        report.notes.extend(notes)
    return report
