"""Provenance ledger: an append-only, hash-chained, Ed25519-signed JSON-lines file.

Each pipeline step appends one entry recording seals of its input and output
(the full signed manifests), the SHA-256 of the script that ran, who ran it,
where and when, how many labels it changed (and from which class to which),
how many it was *declared* to change, and the SHA-256 of the previous entry's
line.  The label snapshots of both seals go into a content-addressed store
``LEDGER.snapshots/`` next to the ledger, so ``show`` can recompute every
step's changes row by row.

Guarantees (for an attacker without the private key)
-------------------------------------------------------
* An edited entry fails its signature; a removed, inserted or reordered
  entry breaks the ``seq`` numbering and the hash chain of the next one.
* A step declared label-preserving (``expect_label_changes=0``) that changed
  labels is a finding: this is how a compromised preprocessing script shows.
* A step declared to change *given rows* (``expect_changes``: ids and the new
  labels allowed) that changed any other row, or to another label, is a
  finding: an attacker inside the step cannot pick the rows.
* The seals an entry embeds are marked ``ledger-input`` / ``ledger-output``:
  copied out of the ledger, ``verify`` refuses them as standalone seals.
* A step whose input is not what an earlier step sealed as its output of the
  same dataset name (labels edited *between* steps, where no script ran) is
  a finding, with the rows.
* A seal older than the ledger's latest seal of the same dataset name (a
  rollback of data and manifest together, or a frozen old version) is a
  finding when checked against the ledger (``verify --ledger``).
* A ledger file or snapshot folder that is a symbolic link is refused; a
  refused append writes nothing.
* Removing entries from the *end* leaves a valid shorter chain: record the
  head hash (printed by ``verify``/``show``/``append``) somewhere the attacker
  cannot write and check it with ``head=``.

Appends are atomic and safe against concurrent appenders: the ledger is
locked (``fcntl.flock``), checked, and the complete line is written with one
``O_APPEND`` write and ``fsync``.

Public API
----------
``ledger_append(path, *, step, input, output, label, id, private_key, ...) -> LedgerAppend``
``verify_ledger(path, public_key, *, manifest=None, head=None) -> LedgerReport``
``show_ledger(path, public_key=None) -> LedgerReport``
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import json
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from .._io import atomic_write_bytes
from ..exceptions import DataError, IntegrityError, InvalidParameterError
from ._compare import Side, compare
from ._diff import diff_tables
from ._files import fsync_dirs, read_bytes, refuse_symlink
from ._keys import key_id, load_private_key, load_public_key
from ._manifest import (
    Manifest,
    _b64,
    canonical_json,
    check_signature,
    load_manifest,
    sign_body,
    strict_json,
)
from ._seal import now_utc, seal_table
from ._source import default_name, read_columns
from ._stats import label_text, transition_list
from ._verify import open_snapshot

__all__ = ["LedgerAppend", "LedgerReport", "ledger_append", "show_ledger", "verify_ledger"]

KIND = "flipguard.ledger-entry"
FORMAT_VERSION = 2
GENESIS = "0" * 64
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_FIELDS = {"format_version", "kind", "seq", "prev", "step", "time", "user", "host", "script", "label", "id",
           "input", "output", "changes", "expect_label_changes", "expect_changes", "key_id", "signature"}


def snapshot_dir(ledger: str | os.PathLike) -> Path:
    """``LEDGER.snapshots/``: where a ledger keeps its label snapshots (never followed if a link)."""
    store = Path(os.fspath(ledger) + ".snapshots")
    refuse_symlink(store, "snapshot folder")
    return store


# -- results -----------------------------------------------------------------------
@dataclass(frozen=True)
class LedgerAppend:
    """What :func:`ledger_append` recorded."""

    path: str
    seq: int
    hash: str
    entry: dict = field(repr=False)
    findings: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def to_dict(self) -> dict:
        e = self.entry
        return {"ok": self.ok, "ledger": self.path, "seq": self.seq, "hash": self.hash, "step": e["step"],
                "input": e["input"]["source"], "output": e["output"]["source"],
                "rows_input": e["input"]["manifest"]["rows"], "rows_output": e["output"]["manifest"]["rows"],
                "changes": e["changes"], "expect_label_changes": e["expect_label_changes"],
                "expect_changes": _declared_summary(e["expect_changes"]), "findings": list(self.findings)}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)


@dataclass(frozen=True)
class LedgerReport:
    """Outcome of :func:`verify_ledger` / :func:`show_ledger`.

    Attributes
    ----------
    path : str
    entries : list of dict
        One summary per readable entry: ``seq``, ``step``, ``time``, ``user``,
        ``host``, ``script``, ``input``/``output`` (source, rows, manifest
        digest), recorded ``changes``, ``expect_label_changes``, ``hash`` and,
        from :func:`show_ledger`, ``recomputed`` (row-exact changes from the snapshots).
    head : str or None
        Hash of the last entry (record it elsewhere to detect truncation).
    signatures_checked : bool
    findings : list of str
        Problems (exit 1): broken chain, bad signatures, violated expectations, rollbacks.
    notes : list of str
        Information that is not a problem.
    """

    path: str
    entries: list
    head: str | None
    signatures_checked: bool
    findings: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def to_dict(self) -> dict:
        return {"ok": self.ok, "ledger": self.path, "entries": self.entries, "n_entries": len(self.entries),
                "head": self.head, "signatures_checked": self.signatures_checked,
                "findings": list(self.findings), "notes": list(self.notes)}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, default=str)


# -- reading and checking ----------------------------------------------------------
@dataclass
class _Parsed:
    seq: int
    line: bytes
    hash: str
    doc: dict | None
    error: str | None = None
    canonical: bool = True  # False: a well-formed entry whose bytes were re-formatted (a finding)


def _parse_lines(data: bytes, where: str) -> tuple[list[_Parsed], list[str]]:
    findings = []
    if not data:
        return [], []
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    else:  # a finding, and the partial line is not parsed
        findings.append(f"{where}: the last line is incomplete (a truncated write or an edit)")
        lines.pop()
    parsed = []
    for i, line in enumerate(lines):
        h = hashlib.sha256(line).hexdigest()
        try:
            doc = strict_json(line, f"entry #{i}")
            _validate_entry(doc, f"entry #{i}")
            # re-spaced or re-ordered by an editor or jq: still readable, so a finding, not an error
            parsed.append(_Parsed(i, line, h, doc, canonical=canonical_json(doc) == line))
        except IntegrityError as exc:
            parsed.append(_Parsed(i, line, h, None, str(exc)))
    return parsed, findings


def _validate_entry(doc, where: str) -> None:
    def bad(msg):
        raise IntegrityError(f"{where}: {msg} (corrupt or not a flipguard ledger entry)")

    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        bad("not a ledger entry")
    if doc.get("format_version") == 1:
        raise IntegrityError(f"{where}: ledger format_version 1 was written by flipguard before ledger "
                             "seals were marked and bound to a dataset name; check it with the flipguard "
                             "that wrote it and start a new ledger")
    if doc.get("format_version") != FORMAT_VERSION:
        bad(f"format_version {doc.get('format_version')!r} is not supported")
    if set(doc) != _FIELDS:
        bad("unexpected or missing fields")
    sig = doc["signature"]
    if not (isinstance(sig, dict) and set(sig) == {"algorithm", "value"} and sig["algorithm"] == "ed25519"
            and isinstance(sig["value"], str)):
        bad("signature must be {algorithm: ed25519, value}")
    try:
        if len(_b64(sig["value"])) != 64:
            bad("signature must be 64 bytes")
    except (ValueError, TypeError):  # binascii.Error is a ValueError
        bad("signature is not canonical base64")
    if not (isinstance(doc["key_id"], str) and re.fullmatch(r"[0-9a-f]{16}", doc["key_id"])):
        bad("key_id must be 16 hex digits")
    if not (isinstance(doc["seq"], int) and not isinstance(doc["seq"], bool) and doc["seq"] >= 0):
        bad("seq must be a non-negative integer")
    if not (isinstance(doc["prev"], str) and _HEX64.match(doc["prev"])):
        bad("prev must be 64 hex digits")
    for name in ("step", "time", "user", "host", "label", "id", "key_id"):
        if not isinstance(doc[name], str):
            bad(f"{name} must be a string")
    script = doc["script"]
    if script is not None and not (isinstance(script, dict) and set(script) == {"path", "sha256"}
                                   and isinstance(script["path"], str) and isinstance(script["sha256"], str)):
        bad("script must be null or {path, sha256}")
    exp = doc["expect_label_changes"]
    if exp is not None and not (isinstance(exp, int) and not isinstance(exp, bool) and exp >= 0):
        bad("expect_label_changes must be null or a non-negative integer")
    ch = doc["changes"]
    if not (isinstance(ch, dict) and set(ch) == {"changed", "added", "removed", "duplicated", "transitions"}):
        bad("changes must be {changed, added, removed, duplicated, transitions}")
    if not all(_count(ch[k]) for k in ("changed", "added", "removed", "duplicated")):
        bad("changes counts must be non-negative integers")
    tr = ch["transitions"]
    if not (isinstance(tr, list) and all(isinstance(t, dict) and set(t) == {"from", "to", "count"}
                                         and _count(t["count"]) and _label(t["from"]) and _label(t["to"])
                                         for t in tr)):
        bad("transitions must be a list of {from, to, count}")
    _validate_declared(doc["expect_changes"], bad)
    for side in ("input", "output"):
        ref = doc[side]
        if not (isinstance(ref, dict) and set(ref) == {"source", "manifest", "manifest_sha256"}
                and isinstance(ref["source"], str)):
            bad(f"{side} must be {{source, manifest, manifest_sha256}}")
        m = Manifest.from_dict(ref["manifest"], f"{where} {side} manifest")
        if m.digest() != ref["manifest_sha256"]:
            bad(f"{side} manifest digest does not match")
        if m.purpose != f"ledger-{side}":
            bad(f"the {side} seal is not marked as a ledger {side} seal")


def _count(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _label(x) -> bool:
    return x is None or isinstance(x, str)


def _validate_declared(dec, bad) -> None:
    if dec is None:
        return
    if not (isinstance(dec, dict) and set(dec) == {"file", "sha256", "allowed"} and isinstance(dec["file"], str)
            and isinstance(dec["sha256"], str) and _HEX64.match(dec["sha256"])
            and isinstance(dec["allowed"], list)):
        bad("expect_changes must be null or {file, sha256, allowed}")
    if not all(isinstance(a, list) and len(a) == 2 and isinstance(a[0], str) and _label(a[1])
               for a in dec["allowed"]):
        bad("expect_changes allowed must be a list of [id, label or null]")


def _read(path: Path) -> bytes:
    return read_bytes(path, "ledger", follow_symlinks=False)


def _readable(parsed: list[_Parsed], where: str) -> None:
    """A line that is not a well-formed entry makes the ledger unreadable: one error line (exit 2).

    Well-formed entries whose signature, chain link or declaration fails are
    findings instead (exit 1).
    """
    for p in parsed:
        if p.doc is None:
            raise IntegrityError(f"{where}: {p.error}")


def _check_chain(parsed: list[_Parsed], public_key: Ed25519PublicKey | None) -> list[str]:
    """Sequence numbers, hash links and (with a key) signatures of every entry."""
    findings = []
    prev = GENESIS
    for p in parsed:
        if p.doc is None:
            findings.append(p.error)
        else:
            d = p.doc
            name = f"entry #{p.seq} ('{d['step']}')"
            if not p.canonical:
                findings.append(f"{name}: not in canonical form (the line was edited or re-formatted after "
                                "it was written)")
            if d["seq"] != p.seq:
                findings.append(f"{name} carries sequence number {d['seq']} at position {p.seq}: "
                                "entries were removed, inserted or reordered")
            if d["prev"] != prev:
                findings.append(f"{name}: the hash link to the previous entry is broken "
                                "(an entry before it was removed, edited or reordered)")
            if public_key is not None:
                sig = check_signature(d, public_key, name)
                if not sig.valid:
                    findings.append(sig.reason)
        prev = p.hash
    return findings


def _summary(p: _Parsed) -> dict:
    d = p.doc
    return {"seq": d["seq"], "hash": p.hash, "step": d["step"], "time": d["time"], "user": d["user"],
            "host": d["host"], "script": d["script"], "label": d["label"], "id": d["id"],
            "input": _ref_summary(d["input"]), "output": _ref_summary(d["output"]),
            "changes": d["changes"], "expect_label_changes": d["expect_label_changes"],
            "expect_changes": _declared_summary(d["expect_changes"])}


def _declared_summary(dec: dict | None) -> dict | None:
    if dec is None:
        return None
    return {"file": dec["file"], "sha256": dec["sha256"], "ids": len({a[0] for a in dec["allowed"]})}


def _ref_summary(ref: dict) -> dict:
    m = ref["manifest"]
    return {"source": ref["source"], "name": m["name"], "rows": m["rows"],
            "label_type": m["label_type"], "manifest_sha256": ref["manifest_sha256"],
            "commitment_root": m["commitment"]["root"], "snapshot": m["snapshot"]["file"], "created": m["created"]}


def _expectation(d: dict) -> str | None:
    exp, got = d["expect_label_changes"], d["changes"]["changed"]
    if exp is None or exp == got:
        return None
    pairs = ", ".join(f"{t['count']} {label_text(t['from'])} -> {label_text(t['to'])}" for t in d["changes"]["transitions"][:3])
    what = "label-preserving (0 changes)" if exp == 0 else f"to change {exp} label(s)"
    return (f"entry #{d['seq']}: step '{d['step']}' was declared {what} but changed {got} "
            f"label(s){f' ({pairs})' if pairs else ''}: check the script that ran it")


def _type_change(d: dict) -> str | None:
    """A step declared to keep labels (or to change given rows) that changed the label column's type."""
    if d["expect_label_changes"] is None and d["expect_changes"] is None:
        return None
    a, b = d["input"]["manifest"]["label_type"], d["output"]["manifest"]["label_type"]
    if a == b:
        return None
    return (f"entry #{d['seq']}: step '{d['step']}' changed the label column's type from {a} to {b}, "
            "though it was declared to change only label values")



def _canonical_id(value, id_type: str) -> str:
    return str(int(value)) if id_type == "int64" else str(value)


def _declared_violations(d: dict, changed: dict) -> str | None:
    """Changed rows an ``expect_changes`` declaration does not allow (``changed``: ids, before, after)."""
    dec = d["expect_changes"]
    if dec is None:
        return None
    id_type = d["output"]["manifest"]["id_type"]
    allowed: dict[str, set] = {}
    for i, lab in dec["allowed"]:
        allowed.setdefault(i, set()).add(lab)
    bad = []
    for i, old, new in zip(changed["id"], changed["before"], changed["after"]):
        ok = allowed.get(_canonical_id(i, id_type))
        if ok is None:
            bad.append(f"id {i} ({label_text(old)} -> {label_text(new)}, not declared)")
        elif None not in ok and new not in ok:
            bad.append(f"id {i} ({label_text(old)} -> {label_text(new)}, declared: "
                       + " or ".join(sorted(label_text(x) for x in ok)) + ")")
    if not bad:
        return None
    shown = ", ".join(bad[:5]) + (f", ... {len(bad) - 5} more" if len(bad) > 5 else "")
    return (f"entry #{d['seq']}: step '{d['step']}' changed {len(bad)} label(s) outside its declaration "
            f"({dec['file']}): {shown}")


def _declared_what(d: dict) -> str | None:
    """How a step was declared, for messages; None for an undeclared step."""
    exp, dec = d["expect_label_changes"], d["expect_changes"]
    parts = []
    if exp is not None:
        parts.append("label-preserving (0 changes)" if exp == 0 else f"to change {exp} label(s)")
    if dec is not None:
        parts.append(f"to change only the rows listed in {dec['file']}")
    return " and ".join(parts) or None


def _added_violations(d: dict, changes=None) -> str | None:
    """Rows a declared step *added* without declaring them: the other half of a relabelling.

    A step declared with ``expect_label_changes`` or ``expect_changes`` states
    which labels it writes; a row it adds brings a label into the data as
    surely as a changed row does, and changing a row's id together with its
    label shows as one removed and one added row, never as a changed label.
    So every added row is a finding unless the ``expect_changes`` file lists
    its id (and, with a label column, its label).  Removed rows are allowed:
    a cleaning step drops rows, and a dropped row puts no label into the
    data (the entry records them; an added row placed where a removed row
    was is named as its replacement).  ``changes`` is a LabelChanges
    (append, show, verify with snapshots); without it the recorded count is used.
    """
    what = _declared_what(d)
    if what is None:
        return None
    where = f"entry #{d['seq']}: step '{d['step']}' was declared {what}"
    if changes is None:
        n = d["changes"]["added"]
        if not n or d["expect_changes"] is not None:  # the rows are needed to check a declaration file
            return None
        return f"{where} but added {n} row(s) (ids not in its input), each with a label it did not declare"
    added, removed = changes.added, changes.removed
    if not len(added["row"]):
        return None
    id_type = d["output"]["manifest"]["id_type"]
    if d["expect_changes"] is None:  # nothing declared may be added: every added row
        undeclared, texts = np.arange(len(added["row"])), {}
    else:  # the declaration file lists ids (small); the added rows are checked against it
        allowed: dict[str, set] = {}
        for i, lab in d["expect_changes"]["allowed"]:
            allowed.setdefault(i, set()).add(lab)
        texts = {}
        for k, (i, lab) in enumerate(zip(added["id"], added["label"])):
            ok = allowed.get(_canonical_id(i, id_type))
            if ok is None:
                texts[k] = f"id {i} ({label_text(lab)}, not declared)"
            elif None not in ok and lab not in ok:
                texts[k] = (f"id {i} ({label_text(lab)}, declared: "
                            + " or ".join(sorted(label_text(x) for x in ok)) + ")")
        undeclared = np.fromiter(texts, dtype=np.int64, count=len(texts))
    if not len(undeclared):
        return None
    shown = ", ".join(texts.get(k) or f"id {added['id'][k]} ({label_text(added['label'][k])}, not declared)"
                      for k in undeclared[:5].tolist())
    shown += f", ... {len(undeclared) - 5} more" if len(undeclared) > 5 else ""
    msg = (f"{where} but added {len(undeclared)} row(s) with labels it did not declare "
           f"(ids not in its input): {shown}")
    renames = _replacements(added, removed, undeclared)
    if renames:
        eg = "; ".join(f"id {ri} ({label_text(rl)}) was removed and id {ai} ({label_text(al)}) added in its place"
                       + (" with another label" if rl != al else "") for ri, rl, ai, al in renames[:3])
        more = f" (and {len(renames) - 3} more)" if len(renames) > 3 else ""
        msg += f"; {eg}{more}" + (": a row whose id changed with its label is a label change hidden as a "
                                  "removal and an addition" if any(r[1] != r[3] for r in renames) else "")
    return msg + ": check the script that ran it"


def _replacements(added: dict, removed: dict, which: np.ndarray, limit: int = 1000) -> list[tuple]:
    """(removed id, its label, added id, its label) for added rows that took a removed row's place.

    The place of a row is the number of rows both sides share before it (its
    gap between matched rows); the j-th added and the j-th removed row of the
    same gap are paired.  Rows whose order the step kept pair exactly.
    Vectorised (a step may add millions of rows); the first ``limit`` pairs
    among the added rows ``which`` are returned, for the message.
    """
    if not len(removed["row"]) or not len(which):
        return []

    def places(rows):
        rows = np.asarray(rows, dtype=np.int64)
        order = np.argsort(rows, kind="stable")
        gap = rows[order] - np.arange(len(rows))  # rows of the other kind before it: its gap
        first = np.searchsorted(gap, gap, side="left")
        return order, gap, np.arange(len(rows)) - first  # rank within the gap

    a_order, a_gap, a_rank = places(added["row"])
    r_order, r_gap, r_rank = places(removed["row"])
    width = int(max(a_rank.max(initial=0), r_rank.max(initial=0))) + 1
    _, ai, ri = np.intersect1d(a_gap * width + a_rank, r_gap * width + r_rank, assume_unique=True,
                               return_indices=True)
    keep = np.isin(a_order[ai], which)
    a_idx, r_idx = a_order[ai][keep], r_order[ri][keep]
    first = np.argsort(a_idx, kind="stable")[:limit]
    pairs = zip(a_idx[first].tolist(), r_idx[first].tolist())
    return [(removed["id"][j], removed["label"][j], added["id"][k], added["label"][k]) for k, j in pairs]


def _load_snapshot(ledger: Path, manifest: Manifest):
    path = snapshot_dir(ledger) / manifest.snapshot["file"]
    if not path.exists() and not path.is_symlink():
        raise IntegrityError(f"snapshot {path} is missing")
    data = read_bytes(path, "snapshot", follow_symlinks=False)
    return open_snapshot(manifest, data, where=f"snapshot {path}")


def _recompute(ledger: Path, d: dict):
    before = _load_snapshot(ledger, Manifest(doc=d["input"]["manifest"]))
    after = _load_snapshot(ledger, Manifest(doc=d["output"]["manifest"]))
    changes, _ = compare(Side(before.ids, before.codes, before.classes, unique=True, counts=before.class_counts),
                         Side(after.ids, after.codes, after.classes, unique=True, counts=after.class_counts))
    return changes


def _handoffs(ledger: Path, docs: list[dict], *, last_only: bool = False) -> list[str]:
    """Labels changed *between* steps: an input that is not what an earlier step sealed as its output.

    A step's input is matched to the latest earlier entry whose output has the
    same dataset name (the file's name unless named otherwise) and the same
    id and label columns; when the two seals' commitments differ, the two
    snapshots are compared row by row.  With ``last_only``, only the last
    entry's input is checked (``append`` checks the entry it just wrote).
    """
    findings, outputs = [], {}
    for i, d in enumerate(docs):
        prev = outputs.get(d["input"]["manifest"]["name"])
        if prev is not None and (not last_only or i == len(docs) - 1) \
                and (prev["id"], prev["label"]) == (d["id"], d["label"]) \
                and prev["output"]["manifest"]["commitment"]["root"] != d["input"]["manifest"]["commitment"]["root"]:
            f = _handoff_finding(ledger, prev, d)
            if f:
                findings.append(f)
        outputs[d["output"]["manifest"]["name"]] = d
    return findings


def _handoff_finding(ledger: Path, prev: dict, d: dict) -> str | None:
    before = _load_snapshot(ledger, Manifest(doc=prev["output"]["manifest"]))
    after = _load_snapshot(ledger, Manifest(doc=d["input"]["manifest"]))
    changes, _ = compare(Side(before.ids, before.codes, before.classes, unique=True, counts=before.class_counts),
                         Side(after.ids, after.codes, after.classes, unique=True, counts=after.class_counts))
    what = changes.findings(before=f"output of #{prev['seq']}", after=f"input of #{d['seq']}")
    if not what:
        return None
    ch = changes.changed
    eg = ", ".join(f"id {i}: {label_text(a)} -> {label_text(b)}" for i, a, b in zip(ch["id"][:3], ch["before"], ch["after"]))
    return (f"entry #{d['seq']} ('{d['step']}'): its input '{d['input']['manifest']['name']}' is not what entry "
            f"#{prev['seq']} ('{prev['step']}') sealed as its output: {'; '.join(what)}"
            f"{f' (e.g. {eg})' if eg else ''}; the data was changed between the two steps, outside the pipeline")


def _check_snapshot_files(ledger: Path, parsed: list[_Parsed]) -> list[str]:
    findings = []
    for p in parsed:
        if p.doc is None:
            continue
        for side in ("input", "output"):
            meta = p.doc[side]["manifest"]["snapshot"]
            path = snapshot_dir(ledger) / meta["file"]
            if not path.exists() and not path.is_symlink():
                findings.append(f"entry #{p.seq}: {side} snapshot {path} is missing")
                continue
            try:
                data = read_bytes(path, "snapshot", follow_symlinks=False)
            except IntegrityError as exc:
                findings.append(f"entry #{p.seq}: {exc}")
                continue
            if len(data) != meta["bytes"] or hashlib.sha256(data).hexdigest() != meta["sha256"]:
                findings.append(f"entry #{p.seq}: {side} snapshot {path} was modified (SHA-256 differs)")
    return findings


def _key(public_key) -> Ed25519PublicKey | None:
    if public_key is None or isinstance(public_key, Ed25519PublicKey):
        return public_key
    return load_public_key(public_key)


# -- verify / show ------------------------------------------------------------------
def verify_ledger(path: str | os.PathLike, public_key, *, manifest: str | os.PathLike | Manifest | None = None,
                  head: str | None = None) -> LedgerReport:
    """Check a ledger: canonical entries, sequence, hash chain, signatures, declared changes, snapshots.

    Parameters
    ----------
    path : path
        The ledger file.
    public_key : Ed25519PublicKey or path
        Every entry must be signed by this key.
    manifest : path or Manifest, optional
        A seal to check against the ledger: presenting a seal older than the
        ledger's latest seal of the same dataset (a rollback) is a finding.
    head : str, optional
        A head hash (or a prefix of 12+ hex digits) recorded earlier; if no
        entry has it, entries were cut from the end.

    Returns
    -------
    LedgerReport
    """
    path = Path(path)
    key = _key(public_key)
    parsed, findings = _parse_lines(_read(path), f"ledger {path}")
    _readable(parsed, f"ledger {path}")
    findings += _check_chain(parsed, key)
    good = [p for p in parsed if p.doc is not None]
    findings += [f for p in good for f in (_expectation(p.doc), _type_change(p.doc)) if f]
    snap_findings = _check_snapshot_files(path, parsed)
    findings += snap_findings
    for p in good:  # declarations are re-checked row by row from the snapshots
        if _declared_what(p.doc) is None or (p.doc["expect_changes"] is None and not p.doc["changes"]["added"]):
            continue  # nothing to check row by row (the signed counts say no row was added)
        if snap_findings:  # a snapshot is missing or modified (a finding already): the recorded counts
            f = _added_violations(p.doc)
            findings += [f] if f else []
            continue
        changes = _recompute(path, p.doc)
        findings += [f for f in (_declared_violations(p.doc, changes.changed) if p.doc["expect_changes"]
                                 is not None else None, _added_violations(p.doc, changes)) if f]
    if not snap_findings:
        findings += _handoffs(path, [p.doc for p in good])
    notes = []
    if not parsed:
        notes.append("the ledger is empty")
    head_hash = parsed[-1].hash if parsed else None
    if head is not None:
        findings_head, note = _check_head(parsed, head)
        findings += findings_head
        notes += note
    if manifest is not None:
        f, n = _check_rollback(path, good, manifest, key)
        findings += f
        notes += n
    return LedgerReport(str(path), [_summary(p) for p in good], head_hash, True, findings, notes)


def _check_head(parsed: list[_Parsed], head: str) -> tuple[list[str], list[str]]:
    head = head.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{12,64}", head):
        raise InvalidParameterError(f"head must be 12 to 64 hex digits of an entry hash, got {head!r}")
    for p in parsed:
        if p.hash.startswith(head):
            after = len(parsed) - 1 - p.seq
            return [], [f"head {head[:12]} is entry #{p.seq}" + (f"; {after} entr(ies) appended since" if after else "")]
    finding = (f"no entry has head hash {head[:12]}...: entries were removed from the end of the ledger "
               "(or it is another ledger)")
    return [finding], []


def _same_labels(ledger: Path, latest: Manifest, m: Manifest, manifest_path: Path | None) -> bool:
    """Do two seals hold the same (id, label) pairs?  Roots first, snapshots if row order differs."""
    if latest.rows != m.rows:
        return False
    if latest.commitment["root"] == m.commitment["root"] and not m.private and not latest.private:
        return True
    if manifest_path is None or m.private:
        return False
    try:
        a = _load_snapshot(ledger, latest)
        data = read_bytes(manifest_path.with_name(m.snapshot["file"]), "snapshot")
        b = open_snapshot(m, data, where=f"snapshot of {manifest_path}")
    except (IntegrityError, OSError):
        return False
    changes, _ = compare(Side(a.ids, a.codes, a.classes, unique=True, counts=a.class_counts),
                         Side(b.ids, b.codes, b.classes, unique=True, counts=b.class_counts))
    return changes.identical


def _check_rollback(ledger: Path, good: list[_Parsed], manifest, key) -> tuple[list[str], list[str]]:
    manifest_path = None if isinstance(manifest, Manifest) else Path(manifest)
    m = manifest if isinstance(manifest, Manifest) else load_manifest(manifest)
    findings, notes = [], []
    if key is not None:
        sig = m.verify_signature(key)
        if not sig.valid:
            return [sig.reason], []
    seals = [(p.doc["seq"], side, p.doc["step"], Manifest(doc=p.doc[side]["manifest"]))
             for p in good for side in ("input", "output")]
    mine = [s for s in seals if s[3].name == m.name]
    if not mine:
        return [], [f"the ledger holds no seal of dataset '{m.name}': it cannot say whether this seal "
                    "is the latest (inconclusive)"]
    seq, side, step, latest = max(mine, key=lambda s: (s[0], s[1] == "output"))
    where = f"entry #{seq} '{step}', {side}, version {latest.version}, sealed {latest.created}"
    if _same_labels(ledger, latest, m, manifest_path):
        notes.append(f"the seal's labels match the ledger's latest seal of '{m.name}' ({where})")
    elif m.created <= latest.created:
        findings.append(f"rollback: the seal of '{m.name}' (version {m.version}, sealed {m.created}) is older "
                        f"than the ledger's latest seal of it ({where}) and holds other labels: the data and "
                        "its seal were rolled back, or a newer version is being withheld")
    else:
        notes.append(f"the seal of '{m.name}' is newer than the ledger's latest seal of it ({where}); "
                     "the ledger does not record it")
    return findings, notes


def rollback_check(ledger, manifest: Manifest, key: Ed25519PublicKey, manifest_path: Path | None,
                   head: str | None = None) -> tuple[list[str], list[str]]:
    """For ``verify --ledger``: ``(findings, notes)`` about ``manifest`` against a ledger.

    The ledger must verify with ``key`` first (an unverifiable ledger says
    nothing about which seal is the latest).  A ledger whose last entries
    were cut off still verifies, and then vouches for an older seal: only a
    ``head`` recorded earlier (an entry hash, 12+ hex digits) detects that;
    without one, a note says so and names the head checked against.
    """
    path = Path(ledger)
    report = verify_ledger(path, key, head=head)
    if not report.ok:
        return [f"the ledger {path} fails verification, so it cannot vouch for this seal: "
                f"{report.findings[0]}"], []
    parsed, _ = _parse_lines(_read(path), f"ledger {path}")
    findings, notes = _check_rollback(path, [p for p in parsed if p.doc is not None], manifest_path or manifest,
                                      key)
    if head is None:
        notes.append(f"checked against the ledger's {len(parsed)} entries (head "
                     f"{report.head[:16] if report.head else 'none'}); entries cut from the end of the ledger "
                     "are only detected with a head recorded earlier (ledger verify --head)")
    return findings, notes


def show_ledger(path: str | os.PathLike, public_key=None) -> LedgerReport:
    """Which step changed which labels: every entry's changes recomputed from its snapshots.

    Without ``public_key`` the hash chain is still checked but signatures are
    not (a note says so).  Findings: broken chain, a step whose recomputed
    changes differ from what it recorded, a declared label-preserving step
    that changed labels, labels changed between two steps, a missing or
    modified snapshot.
    """
    path = Path(path)
    key = _key(public_key)
    parsed, findings = _parse_lines(_read(path), f"ledger {path}")
    _readable(parsed, f"ledger {path}")
    findings += _check_chain(parsed, key)
    notes = [] if key is not None else ["signatures not checked (give --pubkey to check them)"]
    entries = []
    for p in parsed:
        if p.doc is None:
            continue
        d = p.doc
        s = _summary(p)
        try:
            changes = _recompute(path, d)
        except IntegrityError as exc:
            findings.append(f"entry #{d['seq']} ('{d['step']}'): {exc}")
            entries.append(s)
            continue
        s["recomputed"] = changes.to_dict("input", "output")
        recorded = d["changes"]
        if (recorded["changed"], recorded["added"], recorded["removed"]) != \
                (changes.n_changed, changes.n_added, changes.n_removed):
            findings.append(f"entry #{d['seq']} ('{d['step']}'): the snapshots show {changes.n_changed} changed, "
                            f"{changes.n_added} added, {changes.n_removed} removed rows but the entry recorded "
                            f"{recorded['changed']}, {recorded['added']}, {recorded['removed']}")
        exp = d["expect_label_changes"]
        if exp is not None and exp != changes.n_changed:
            findings.append(_expectation({**d, "changes": {**recorded, "changed": changes.n_changed,
                                                           "transitions": transition_list(changes.transitions,
                                                                                          changes.classes)}}))
        findings += [f for f in (_type_change(d), _declared_violations(d, changes.changed),
                                 _added_violations(d, changes)) if f]
        entries.append(s)
    with contextlib.suppress(IntegrityError):  # a missing or modified snapshot is a finding above already
        findings += _handoffs(path, [p.doc for p in parsed if p.doc is not None])
    head_hash = parsed[-1].hash if parsed else None
    return LedgerReport(str(path), entries, head_hash, key is not None, findings, notes)


# -- append -------------------------------------------------------------------------
def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid()) if hasattr(os, "getuid") else "unknown"


def _script(script) -> dict | None:
    if script is None:
        return None
    data = read_bytes(script, "script")
    return {"path": os.fspath(script), "sha256": hashlib.sha256(data).hexdigest()}


def _write_snapshot(store: Path, manifest: Manifest, data: bytes) -> None:
    target = store / manifest.snapshot["file"]
    if target.is_file() and not target.is_symlink():
        try:
            if hashlib.sha256(read_bytes(target, "snapshot", follow_symlinks=False)).hexdigest() \
                    == manifest.snapshot["sha256"]:
                return
        except IntegrityError:
            pass
    atomic_write_bytes(target, data)


def read_expect_changes(path: str | os.PathLike, *, id: str, label: str, id_type: str) -> dict:  # noqa: A002
    """Read an ``--expect-changes`` file: a CSV of the ids a step may change and the new labels allowed.

    Columns: ``id`` (or the data's id column name) and, optionally, ``label``
    (or the data's label column name) holding the one new label allowed for
    that row (several rows per id allow several labels).  Without a label
    column any new label is allowed for the listed ids.  Values are read as
    exact text; with integer ids, ``0104`` and ``104.0`` are id 104.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    from ._columns import integer_text_ids

    data = read_bytes(path, "--expect-changes file")
    tbl, _ = read_columns(os.fspath(path), None)
    names = tbl.column_names
    id_col = "id" if "id" in names else id if id in names else None
    if id_col is None:
        raise DataError(f"--expect-changes file {path}: needs an 'id' column (or '{id}'), "
                        f"and optionally 'label' (or '{label}'); it has: {', '.join(names)}")
    label_col = "label" if "label" in names else label if label in names else None
    ids = tbl.column(id_col)
    if id_type == "int64" and len(ids):
        as_int = integer_text_ids(ids)
        if not pa.types.is_int64(as_int.type):
            bad = pc.filter(ids, pc.invert(pc.match_substring_regex(ids, r"^[+-]?[0-9]+(\.0*)?$")))
            raise DataError(f"--expect-changes file {path}: id {bad[0].as_py()!r} is not an integer, "
                            "but the data's ids are integers")
        id_text = [str(v) for v in as_int.to_pylist()]
    else:
        id_text = ids.to_pylist()
    labels = tbl.column(label_col).to_pylist() if label_col else [None] * len(id_text)
    allowed = sorted({(i, lab) for i, lab in zip(id_text, labels)}, key=lambda a: (a[0], a[1] is None, a[1] or ""))
    return {"file": os.fspath(path), "sha256": hashlib.sha256(data).hexdigest(),
            "allowed": [list(a) for a in allowed]}


def ledger_append(path: str | os.PathLike, *, step: str, input, output, label: str,
                  id: str, private_key, script: str | os.PathLike | None = None,
                  expect_label_changes: int | None = None, table: str | None = None,
                  input_name: str | None = None, output_name: str | None = None,
                  expect_changes: str | os.PathLike | None = None) -> LedgerAppend:
    """Seal a step's input and output and append a signed, hash-chained entry.

    Parameters
    ----------
    path : path
        The ledger (created if absent; never a symbolic link).  Snapshots go to ``PATH.snapshots/``.
    step : str
        Name of the pipeline step.
    input, output : path, URL, DSN or pyarrow.Table
        The step's data before and after (only id and label columns are read).
    label, id : str
        Label and unique-id columns.
    private_key : Ed25519PrivateKey or path
        Signs the seals and the entry.
    script : path, optional
        The script that ran the step; its SHA-256 is recorded.
    expect_label_changes : int, optional
        Declared number of label changes (0 = label-preserving step).  A
        different number is recorded as a finding.
    input_name, output_name : str, optional
        Dataset names of the two seals (default: the files' names, or the
        table).  ``verify --ledger`` finds a dataset's latest seal by name.
    expect_changes : path, optional
        A CSV of the ids this step may change and the new labels allowed
        (:func:`read_expect_changes`); any other change is a finding.

    Returns
    -------
    LedgerAppend
        ``findings`` lists a violated declaration (the entry is appended anyway:
        the ledger records what happened).

    Raises
    ------
    IntegrityError
        The existing ledger fails verification with this key, or is a symbolic
        link (nothing is written: no entry, no snapshot, no folder).
    """
    if not isinstance(step, str) or not step.strip():
        raise InvalidParameterError("--step must be a non-empty name")
    if expect_label_changes is not None and (isinstance(expect_label_changes, bool)
                                             or not isinstance(expect_label_changes, int)
                                             or expect_label_changes < 0):
        raise InvalidParameterError(f"--expect-label-changes must be an integer >= 0. "
                                    f"Got {expect_label_changes!r} instead.")
    path = Path(path)
    refuse_symlink(path, "ledger")
    store = snapshot_dir(path)
    if path.exists() and not path.is_file():
        raise IntegrityError(f"ledger {path}: is not a regular file")
    key = private_key if isinstance(private_key, Ed25519PrivateKey) else load_private_key(private_key)
    script_ref = _script(script)
    in_tbl, in_where = read_columns(input, [id, label], dictionary=[label], table=table, id_column=id)
    out_tbl, out_where = read_columns(output, [id, label], dictionary=[label], table=table, id_column=id)
    in_name = input_name or default_name(input, table) or in_where
    out_name = output_name or default_name(output, table) or out_where
    in_m, in_data = seal_table(in_tbl, label=label, id=id, private_key=key, source=in_where,
                               snapshot_name="{sha256}.snapshot", name=in_name, purpose="ledger-input")
    out_m, out_data = seal_table(out_tbl, label=label, id=id, private_key=key, source=out_where,
                                 snapshot_name="{sha256}.snapshot", name=out_name, purpose="ledger-output")
    declared = None if expect_changes is None else read_expect_changes(
        expect_changes, id=id, label=label, id_type=out_m.doc["id_type"])
    changes = diff_tables(in_tbl, out_tbl, label=label, id=id, old_name=in_where, new_name=out_where).changes
    body = {
        "format_version": FORMAT_VERSION, "kind": KIND, "seq": 0, "prev": GENESIS, "step": step,
        "time": now_utc(), "user": _user(), "host": socket.gethostname(), "script": script_ref,
        "label": label, "id": id,
        "input": {"source": in_where, "manifest": in_m.doc, "manifest_sha256": in_m.digest()},
        "output": {"source": out_where, "manifest": out_m.doc, "manifest_sha256": out_m.digest()},
        "changes": {"changed": changes.n_changed, "added": changes.n_added, "removed": changes.n_removed,
                    "duplicated": changes.n_duplicated,
                    "transitions": transition_list(changes.transitions, changes.classes)},
        "expect_label_changes": expect_label_changes, "expect_changes": declared, "key_id": key_id(key),
    }

    def write_snapshots() -> None:  # under the ledger's lock, after its chain checked out
        created = not store.exists()
        try:
            store.mkdir(exist_ok=True)
            refuse_symlink(store, "snapshot folder")
            _write_snapshot(store, in_m, in_data)
            _write_snapshot(store, out_m, out_data)
        except BaseException:
            if created:
                with contextlib.suppress(OSError):
                    for f in store.iterdir():
                        f.unlink()
                    store.rmdir()
            raise

    seq, digest, doc, earlier = _locked_append(path, body, key, write_snapshots)
    findings = [f for f in (_expectation(doc), _type_change(doc), _declared_violations(doc, changes.changed),
                            _added_violations(doc, changes)) if f]
    findings += _handoffs(path, [*earlier, doc], last_only=True)
    return LedgerAppend(str(path), seq, digest, doc, findings)


def _locked_append(path: Path, body: dict, key: Ed25519PrivateKey,
                   before_write) -> tuple[int, str, dict, list[dict]]:
    import fcntl

    if not path.parent.is_dir():
        raise IntegrityError(f"ledger {path}: folder {path.parent} does not exist")
    created = not os.path.lexists(path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0)
                     | getattr(os, "O_NONBLOCK", 0), 0o644)
    except OSError as exc:
        if os.path.islink(path):
            raise IntegrityError(f"ledger {path}: is a symbolic link; flipguard does not follow links "
                                 "for ledgers (give the real path)") from None
        raise IntegrityError(f"ledger {path}: cannot open ({exc.strerror or exc})") from None
    ok = False
    try:
        import stat as _stat

        if not _stat.S_ISREG(os.fstat(fd).st_mode):
            raise IntegrityError(f"ledger {path}: is not a regular file")
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            size = os.fstat(fd).st_size
            data = os.pread(fd, size, 0) if size else b""
            parsed, findings = _parse_lines(data, f"ledger {path}")
            findings += _check_chain(parsed, key.public_key())
            if findings:
                raise IntegrityError(f"ledger {path} fails verification, not appending: {findings[0]}")
            seq = len(parsed)
            doc = sign_body({**body, "seq": seq, "prev": parsed[-1].hash if parsed else GENESIS}, key)
            line = canonical_json(doc)
            before_write()
            view = memoryview(line + b"\n")
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
            if size == 0:
                fsync_dirs([path.parent])
            ok = True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
        if not ok and created:
            with contextlib.suppress(OSError):
                if os.path.getsize(path) == 0:
                    os.unlink(path)
    return seq, hashlib.sha256(line).hexdigest(), doc, [p.doc for p in parsed]
