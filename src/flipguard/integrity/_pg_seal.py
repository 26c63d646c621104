"""``pg verify`` with a seal, and the signed checkpoints of an audit trail.

Seal: verify the table read in the audit snapshot, then explain each change.

The table's sealed columns are read in the same ``REPEATABLE READ`` snapshot
as the audit trail, passed to :func:`flipguard.integrity.verify_table`, and
every changed, added or removed row is looked up in the trail.  A change is
**explained** when the trail records the row leaving its sealed state (a
change whose before-value is the sealed value, or a ``TRUNCATE``) and its last
recorded change leaves it exactly as it is now; otherwise it is
**unexplained**: the row changed while the trigger was not running.

Checkpoints: a checkpoint file holds one JSON line per signed checkpoint,
``{"checkpoint": {...}, "signature": {"algorithm": "ed25519", "key_id": ...,
"value": base64}}``; the signature covers the canonical JSON of
``checkpoint`` (sorted keys, compact, ASCII).  Appending rewrites the file
atomically (temporary file, then rename); links, FIFOs and devices are refused.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from pathlib import Path
from typing import Any

from ..exceptions import IntegrityError

__all__: list[str] = []


def seal_changes(snap, ref, manifest_path, public_key, secret: bytes | None = None, name: str | None = None
                 ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(seal report as a dict, changes)`` where each change is ``{id, kind, sealed, current}``.

    ``sealed``/``current`` are label texts (``None`` for a missing label);
    ``present_before``/``present_after`` say whether the row existed.  A seal
    made for another dataset name than this table (``name``, default: the
    table however it was written at seal time) is refused, like ``verify``
    refuses a seal copied from another file.
    """
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from ._keys import load_public_key
    from ._manifest import load_manifest
    from ._verify import read_snapshot_file, refusal, verify_table

    if public_key is None:
        raise IntegrityError("pg verify needs the signer's public key with the manifest (--pubkey)")
    key = public_key if isinstance(public_key, Ed25519PublicKey) else load_public_key(public_key)
    manifest = load_manifest(manifest_path)
    sig = manifest.verify_signature(key)
    where = f"{snap.where} table {ref}"
    if not sig.valid:  # read nothing for a manifest the key did not sign
        import pyarrow as pa

        report = verify_table(pa.table({}), manifest, key, snapshot=b"", source=where,
                              manifest_path=str(manifest_path))
        return report.to_dict(), []
    if name is None:  # the table as `seal --table` may have spelt it
        spellings = {str(ref), ref.name, f'"{ref.name}"', f'"{ref.schema}"."{ref.name}"', f'{ref.schema}."{ref.name}"'}
        name = manifest.name if manifest.name in spellings else str(ref)
    if refusal(manifest, name):  # read no data for a seal of another dataset
        import pyarrow as pa

        report = verify_table(pa.table({}), manifest, key, snapshot=b"", source=where,
                              manifest_path=str(manifest_path), name=name)
        return report.to_dict(), []
    from psycopg import sql

    data, _ = read_snapshot_file(manifest, Path(manifest_path))
    # ONLY: a child table's rows (inheritance) are not this table's (pg protect refuses a table with children)
    tbl = snap.read_select(sql.SQL("ONLY {}").format(ref.ident), where=f"{where}",
                           columns=list(dict.fromkeys([manifest.id, manifest.label, *manifest.columns])))
    report = verify_table(tbl, manifest, key, snapshot=data, secret=secret, source=where,
                          manifest_path=str(manifest_path), name=name)
    out = report.to_dict()
    changes: list[dict[str, Any]] = []
    ch = report.changes
    if ch is not None:
        for i, before, after in zip(ch.changed["id"], ch.changed["before"], ch.changed["after"]):
            changes.append({"id": _plain(i), "kind": "changed", "sealed": before, "current": after,
                            "present_before": True, "present_after": True})
        for i, label in zip(ch.added["id"], ch.added["label"]):
            changes.append({"id": _plain(i), "kind": "added", "sealed": None, "current": label,
                            "present_before": False, "present_after": True})
        for i, label in zip(ch.removed["id"], ch.removed["label"]):
            changes.append({"id": _plain(i), "kind": "removed", "sealed": label, "current": None,
                            "present_before": True, "present_after": False})
    out["summary"] = "; ".join(report.findings) if report.findings else "no change"
    return out, changes


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def explain_changes(conn, n, changes: list[dict[str, Any]], renames: dict[str, str] | None = None
                    ) -> tuple[list[dict], list[dict]]:
    """Split ``changes`` into (explained, unexplained) using the trail of ``n`` (a ``_Names``).

    ``renames`` maps values of the label's enum type renamed since protect (``ALTER TYPE ... RENAME
    VALUE``, which fires no trigger) to their new text: an unexplained change from one to the other
    says so.
    """
    from psycopg import sql

    from ._pg import _TRANSITIONS

    if not changes:
        return [], []
    keys = sorted({_text(c["id"]) for c in changes})
    who = ", ".join(f"e.{c}" for c in ("seq", "op", "session_user_name", "current_user_name",
                                          "application_name", "client_addr", "txid", "logged_at"))
    rows = conn.execute(sql.SQL(_TRANSITIONS + """
        SELECT rid, bp, b, ap, a, tr.trunc_epoch, cur.trunc_epoch, """ + who + """
        FROM tr JOIN {t} e ON e.seq = tr.seq, cur
        WHERE rid = ANY(%s) ORDER BY tr.seq, tr.ord, tr.k""").format(t=n.trail_ident),
        (keys,)).fetchall()
    by_id: dict[str, list] = {}
    for r in rows:
        by_id.setdefault(r[0], []).append(r)
    truncates = conn.execute(sql.SQL(_TRANSITIONS + """
        SELECT ev.trunc_epoch, """ + who + """
        FROM ev JOIN {t} e ON e.seq = ev.seq, cur
        WHERE ev.op = 'TRUNCATE' AND ev.prot_epoch = cur.prot_epoch ORDER BY ev.seq""").format(
            t=n.trail_ident)).fetchall()
    last_trunc = truncates[-1] if truncates else None

    key = _value_keys(conn, n, [v for r in rows for v in (r[2], r[4])]
                      + [_text(c[k]) for c in changes for k in ("sealed", "current")])
    explained, unexplained = [], []
    for c in changes:
        trs = by_id.get(_text(c["id"]), [])
        sealed_state = (c["present_before"], key(_text(c["sealed"])))
        current_state = (c["present_after"], key(_text(c["current"])))
        if trs:
            last = trs[-1]
            truncated_after = last[5] < last[6]
            final = (False, None) if truncated_after else (bool(last[3]), key(last[4]) if last[3] else None)
            left_sealed = any((bool(t[1]), key(t[2]) if t[1] else None) == sealed_state for t in trs) or (
                c["present_before"] and last_trunc is not None)
            by = last_trunc[1:] if truncated_after else last[7:]
            if final != current_state:
                why = (f"the trail's last change for this id (row {last[7]}) leaves it at "
                       f"{_state(final)}, the table has {_state(current_state)}")
            elif not left_sealed:
                why = f"the trail never records this row leaving its sealed state ({_state(sealed_state)})"
            else:
                explained.append({**c, **_who(by), "n_recorded": len(trs)})
                continue
        elif not c["present_after"] and last_trunc is not None:
            explained.append({**c, **_who(last_trunc[1:]), "n_recorded": 0})
            continue
        else:
            why = "no change to this row is recorded in the audit trail"
        sealed, current = _text(c["sealed"]), _text(c["current"])
        if c["present_before"] and c["present_after"] and sealed in (renames or {}) and renames[sealed] == current:
            unexplained.append({**c, "explanation": f"{why}: the label's enum type was altered (value "
                                                    f"{sealed!r} renamed to {current!r}; ALTER TYPE ... RENAME "
                                                    "VALUE fires no trigger)"})
            continue
        unexplained.append({**c, "explanation": why + " (trigger bypassed)"})
    return explained, unexplained


#: Built-in label types whose values have several texts: ``(SQL text of the value of t)`` per base type name.
#: Floats and times go through their type and back (under the canonical settings of the session);
#: ``numeric`` loses the trailing zeros of its scale (``0.25`` and ``0.25000000000000000000`` are equal).
_VALUE_KEYS = {
    **{name: f"((t)::pg_catalog.{name})::text" for name in (
        "float4", "float8", "timestamp", "timestamptz", "date", "time", "timetz", "interval", "bool",
        "int2", "int4", "int8")},
    "numeric": ("(SELECT CASE WHEN pg_catalog.strpos(v, '.') > 0 THEN pg_catalog.rtrim(pg_catalog.rtrim(v, '0'), '.') "
                "ELSE v END FROM (SELECT ((t)::pg_catalog.numeric)::text AS v) x)"),
}


def _value_keys(conn, n, texts):
    """A function mapping each label text to a key that is equal for equal values of the label's type.

    The seal holds labels as the reader's Arrow values turned into text (``2031-05-05 01:02:03.000000``,
    ``0.25``, ``nan``, ``1234567``), the trail as PostgreSQL's canonical text (``2031-05-05 01:02:03``,
    ``0.25000000000000000000``, ``NaN``, ``1.234567e+06``).  Comparing texts called a recorded change of
    such a label a bypass; PostgreSQL parses each text into the column's type (its base type for a
    domain) and prints it back, so both sides go through the same input and output functions.  Only
    built-in types are parsed (``pg_catalog`` input functions, no cast of the owner's runs); a text that
    does not parse, and every other type, stays itself.
    """
    import psycopg

    distinct = sorted({t for t in texts if t is not None})
    base = conn.execute("""
        WITH RECURSIVE d(oid, typtype, base) AS (
          SELECT t.oid, t.typtype, t.typbasetype FROM pg_catalog.pg_attribute a
            JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
          WHERE a.attrelid = %s AND a.attname = %s AND NOT a.attisdropped
          UNION ALL
          SELECT t.oid, t.typtype, t.typbasetype FROM d JOIN pg_catalog.pg_type t ON t.oid = d.base
          WHERE d.typtype = 'd')
        SELECT t.typname FROM d JOIN pg_catalog.pg_type t ON t.oid = d.oid
        WHERE d.typtype <> 'd' AND t.typnamespace = 'pg_catalog'::regnamespace""",
        (n.ref.oid, n.label_col)).fetchone()
    expr = _VALUE_KEYS.get(base[0]) if base is not None else None
    if expr is None or not distinct:
        return lambda t: t
    conn.execute("SAVEPOINT value_keys")
    try:
        mapping = dict(conn.execute(f"SELECT t, {expr} FROM pg_catalog.unnest(%s::text[]) t", (distinct,)).fetchall())
        conn.execute("RELEASE SAVEPOINT value_keys")
    except psycopg.Error:  # some text is not a value of the type: compare the texts as they are
        conn.execute("ROLLBACK TO SAVEPOINT value_keys")
        mapping = {}
    return lambda t: None if t is None else mapping.get(t, t)


def _text(value):
    """The canonical text PostgreSQL records for a value read back into Python (None stays None)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value).removesuffix(".0") if value.is_integer() and abs(value) < 1e16 else repr(value)
    return str(value)


def _state(state) -> str:
    present, label = state
    if not present:
        return "absent"
    return "label <missing>" if label is None else f"label {label!r}"


def _who(r) -> dict[str, Any]:
    seq, op, sess, usr, app, addr, txid, at = r
    return {"seq": seq, "op": op, "session_user": sess, "current_user": usr, "application_name": app,
            "client_addr": addr, "txid": txid, "at": at.isoformat() if at is not None else None}


# --------------------------------------------------------------------------- checkpoints
_FIELDS = {"kind": str, "format_version": int, "database": str, "audit_schema": str, "trail": str, "table": str,
           "head_seq": int, "head_hash": str, "n_events": int, "identity": (dict, type(None)), "created": str,
           "key_id": str}


def _canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def sign_checkpoint(body: dict, private_key) -> dict:
    """``{"checkpoint": body, "signature": {...}}`` signed with the Ed25519 ``private_key``."""
    from ._keys import key_id

    sig = private_key.sign(_canonical(body))
    return {"checkpoint": body, "signature": {"algorithm": "ed25519", "key_id": key_id(private_key),
                                              "value": base64.b64encode(sig).decode("ascii")}}


def load_checkpoints(path, public_key) -> list[dict]:
    """The checkpoints in ``path``, oldest first, each signature checked with ``public_key``.

    Raises :class:`IntegrityError` (one line naming the file and line) for an
    unreadable file, a malformed line, or a signature that does not verify.
    """
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from ._files import read_bytes
    from ._keys import load_public_key

    key = public_key if isinstance(public_key, Ed25519PublicKey) else load_public_key(public_key)
    data = read_bytes(path, "checkpoint file", follow_symlinks=False)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise IntegrityError(f"checkpoint file {path}: not UTF-8 text") from None
    out = []
    for no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"checkpoint file {path} line {no}"
        try:
            doc = json.loads(line)
        except (ValueError, RecursionError):
            raise IntegrityError(f"{where}: not a JSON object") from None
        if not isinstance(doc, dict) or set(doc) != {"checkpoint", "signature"}:
            raise IntegrityError(f"{where}: expected an object with 'checkpoint' and 'signature'")
        body, sig = doc["checkpoint"], doc["signature"]
        if not isinstance(body, dict) or set(body) != set(_FIELDS):
            raise IntegrityError(f"{where}: not a flipguard PostgreSQL checkpoint")
        for name, typ in _FIELDS.items():
            if not isinstance(body[name], typ) or (typ is int and isinstance(body[name], bool)):
                raise IntegrityError(f"{where}: field '{name}' has the wrong type")
        if body["kind"] != "flipguard.pg-checkpoint" or body["format_version"] != 1:
            raise IntegrityError(f"{where}: not a flipguard PostgreSQL checkpoint (format 1)")
        if not isinstance(sig, dict) or sig.get("algorithm") != "ed25519" or not isinstance(sig.get("value"), str):
            raise IntegrityError(f"{where}: signature must be {{'algorithm': 'ed25519', 'value': base64}}")
        try:
            raw = base64.b64decode(sig["value"], validate=True)
            key.verify(raw, _canonical(body))
        except (binascii.Error, ValueError, InvalidSignature):
            raise IntegrityError(f"{where}: the signature is not valid for this public key "
                                 "(checkpoint forged, edited or signed with another key)") from None
        if out and body["head_seq"] < out[-1]["head_seq"]:
            raise IntegrityError(f"{where}: checkpoint seq {body['head_seq']} is older than the line before "
                                 f"({out[-1]['head_seq']}); lines out of order")
        out.append(body)
    return out


def append_checkpoint(path, record: dict) -> None:
    """Append one signed checkpoint line to ``path`` atomically (the old lines are kept as they were)."""
    from ._files import read_bytes, refuse_symlink, write_files_atomically

    path = Path(path)
    refuse_symlink(path, "checkpoint file")
    old = read_bytes(path, "checkpoint file", follow_symlinks=False) if os.path.lexists(path) else b""
    if old and not old.endswith(b"\n"):
        old += b"\n"
    if path.is_dir():
        raise IntegrityError(f"checkpoint file {path}: is a directory")
    write_files_atomically([(path, old + _canonical(record) + b"\n")])
