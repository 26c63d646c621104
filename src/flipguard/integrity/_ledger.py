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
* A seal older than the ledger's latest seal of the same dataset (a rollback
  of data and manifest together) is a finding when checked against the ledger.
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

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from .._io import atomic_write_bytes
from ..exceptions import IntegrityError, InvalidParameterError
from ._compare import Side, compare
from ._diff import diff_tables
from ._files import read_bytes
from ._keys import key_id, load_private_key, load_public_key
from ._manifest import (
    Manifest,
    canonical_json,
    check_signature,
    load_manifest,
    sign_body,
    strict_json,
)
from ._seal import now_utc, seal_table
from ._source import read_columns
from ._stats import transition_list
from ._verify import open_snapshot

__all__ = ["LedgerAppend", "LedgerReport", "ledger_append", "show_ledger", "verify_ledger"]

KIND = "flipguard.ledger-entry"
GENESIS = "0" * 64
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_FIELDS = {"format_version", "kind", "seq", "prev", "step", "time", "user", "host", "script", "label", "id",
           "input", "output", "changes", "expect_label_changes", "key_id", "signature"}


def snapshot_dir(ledger: str | os.PathLike) -> Path:
    """``LEDGER.snapshots/``: where a ledger keeps its label snapshots."""
    return Path(os.fspath(ledger) + ".snapshots")


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
                "findings": list(self.findings)}

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


def _parse_lines(data: bytes, where: str) -> tuple[list[_Parsed], list[str]]:
    findings = []
    if not data:
        return [], []
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    else:
        findings.append(f"{where}: the last line is incomplete (a truncated write or an edit)")
    parsed = []
    for i, line in enumerate(lines):
        h = hashlib.sha256(line).hexdigest()
        try:
            doc = strict_json(line, f"entry #{i}")
            _validate_entry(doc, f"entry #{i}")
            if canonical_json(doc) != line:
                raise IntegrityError(f"entry #{i}: not in canonical form (edited or re-formatted)")
            parsed.append(_Parsed(i, line, h, doc))
        except IntegrityError as exc:
            parsed.append(_Parsed(i, line, h, None, str(exc)))
    return parsed, findings


def _validate_entry(doc, where: str) -> None:
    def bad(msg):
        raise IntegrityError(f"{where}: {msg} (corrupt or not a flipguard ledger entry)")

    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        bad("not a ledger entry")
    if doc.get("format_version") != 1:
        bad(f"format_version {doc.get('format_version')!r} is not supported")
    if set(doc) != _FIELDS:
        bad("unexpected or missing fields")
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
    for side in ("input", "output"):
        ref = doc[side]
        if not (isinstance(ref, dict) and set(ref) == {"source", "manifest", "manifest_sha256"}):
            bad(f"{side} must be {{source, manifest, manifest_sha256}}")
        m = Manifest.from_dict(ref["manifest"], f"{where} {side} manifest")
        if m.digest() != ref["manifest_sha256"]:
            bad(f"{side} manifest digest does not match")


def _read(path: Path) -> bytes:
    return read_bytes(path, "ledger")


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
            "changes": d["changes"], "expect_label_changes": d["expect_label_changes"]}


def _ref_summary(ref: dict) -> dict:
    m = ref["manifest"]
    return {"source": ref["source"], "rows": m["rows"], "manifest_sha256": ref["manifest_sha256"],
            "commitment_root": m["commitment"]["root"], "snapshot": m["snapshot"]["file"], "created": m["created"]}


def _expectation(d: dict) -> str | None:
    exp, got = d["expect_label_changes"], d["changes"]["changed"]
    if exp is None or exp == got:
        return None
    pairs = ", ".join(f"{t['count']} {_txt(t['from'])} -> {_txt(t['to'])}" for t in d["changes"]["transitions"][:3])
    what = "label-preserving (0 changes)" if exp == 0 else f"to change {exp} label(s)"
    return (f"entry #{d['seq']}: step '{d['step']}' was declared {what} but changed {got} "
            f"label(s){f' ({pairs})' if pairs else ''}: check the script that ran it")


def _txt(c) -> str:
    return "<missing>" if c is None else str(c)


def _load_snapshot(ledger: Path, manifest: Manifest):
    path = snapshot_dir(ledger) / manifest.snapshot["file"]
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise IntegrityError(f"snapshot {path} is missing") from None
    return open_snapshot(manifest, data, where=f"snapshot {path}")


def _check_snapshot_files(ledger: Path, parsed: list[_Parsed]) -> list[str]:
    findings = []
    for p in parsed:
        if p.doc is None:
            continue
        for side in ("input", "output"):
            meta = p.doc[side]["manifest"]["snapshot"]
            path = snapshot_dir(ledger) / meta["file"]
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                findings.append(f"entry #{p.seq}: {side} snapshot {path} is missing")
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
    findings += _check_chain(parsed, key)
    good = [p for p in parsed if p.doc is not None]
    findings += [f for f in (_expectation(p.doc) for p in good) if f]
    findings += _check_snapshot_files(path, parsed)
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


def _same_dataset(a: str, b: str) -> bool:
    return os.path.normpath(a) == os.path.normpath(b) or os.path.basename(a) == os.path.basename(b)


def _same_labels(ledger: Path, latest: Manifest, m: Manifest, manifest_path: Path | None) -> bool:
    """Do two seals hold the same (id, label) pairs?  Roots first, snapshots if row order differs."""
    if latest.rows != m.rows:
        return False
    if latest.commitment["root"] == m.commitment["root"]:
        return True
    if manifest_path is None or m.private:
        return False
    try:
        a = _load_snapshot(ledger, latest)
        data = manifest_path.with_name(m.snapshot["file"]).read_bytes()
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
    seals = [(p.doc["seq"], side, p.doc["step"], Manifest(doc=p.doc[side]["manifest"]), p.doc[side]["source"])
             for p in good for side in ("input", "output")]
    mine = [s for s in seals if _same_dataset(s[4], m.source) or _same_dataset(s[3].source, m.source)]
    if not mine:
        return [], [f"the ledger holds no seal of {m.source}"]
    seq, side, step, latest, src = max(mine, key=lambda s: (s[0], s[1] == "output", s[3].created))
    if _same_labels(ledger, latest, m, manifest_path):
        notes.append(f"the manifest's labels match the ledger's latest seal of {src} "
                     f"(entry #{seq} '{step}', {side})")
    elif m.created < latest.created or any(s[3].digest() == m.digest() for s in mine):
        findings.append(f"rollback: the manifest of {m.source} (sealed {m.created}) is older than the "
                        f"ledger's latest seal of it (entry #{seq} '{step}', {side}, sealed {latest.created}) "
                        "and holds other labels")
    else:
        notes.append(f"the manifest of {m.source} is newer than the ledger's latest seal of it "
                     f"(entry #{seq}); it is not recorded in the ledger")
    return findings, notes


def show_ledger(path: str | os.PathLike, public_key=None) -> LedgerReport:
    """Which step changed which labels: every entry's changes recomputed from its snapshots.

    Without ``public_key`` the hash chain is still checked but signatures are
    not (a note says so).  Findings: broken chain, a step whose recomputed
    changes differ from what it recorded, a declared label-preserving step
    that changed labels, a missing or modified snapshot.
    """
    path = Path(path)
    key = _key(public_key)
    parsed, findings = _parse_lines(_read(path), f"ledger {path}")
    findings += _check_chain(parsed, key)
    notes = [] if key is not None else ["signatures not checked (give --pubkey to check them)"]
    entries = []
    for p in parsed:
        if p.doc is None:
            continue
        d = p.doc
        s = _summary(p)
        try:
            before = _load_snapshot(path, Manifest(doc=d["input"]["manifest"]))
            after = _load_snapshot(path, Manifest(doc=d["output"]["manifest"]))
        except IntegrityError as exc:
            findings.append(f"entry #{d['seq']} ('{d['step']}'): {exc}")
            entries.append(s)
            continue
        changes, _ = compare(Side(before.ids, before.codes, before.classes, unique=True, counts=before.class_counts),
                             Side(after.ids, after.codes, after.classes, unique=True, counts=after.class_counts))
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
        entries.append(s)
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
    if target.exists() and hashlib.sha256(target.read_bytes()).hexdigest() == manifest.snapshot["sha256"]:
        return
    atomic_write_bytes(target, data)


def ledger_append(path: str | os.PathLike, *, step: str, input, output, label: str,
                  id: str, private_key, script: str | os.PathLike | None = None,
                  expect_label_changes: int | None = None, table: str | None = None,
                  input_name: str | None = None, output_name: str | None = None) -> LedgerAppend:
    """Seal a step's input and output and append a signed, hash-chained entry.

    Parameters
    ----------
    path : path
        The ledger (created if absent).  Snapshots go to ``PATH.snapshots/``.
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
        Names to record for in-memory tables.

    Returns
    -------
    LedgerAppend
        ``findings`` lists a violated expectation (the entry is appended anyway:
        the ledger records what happened).

    Raises
    ------
    IntegrityError
        The existing ledger fails verification with this key (nothing is appended).
    """
    if not isinstance(step, str) or not step.strip():
        raise InvalidParameterError("step must be a non-empty name")
    if expect_label_changes is not None and (isinstance(expect_label_changes, bool)
                                             or not isinstance(expect_label_changes, int)
                                             or expect_label_changes < 0):
        raise InvalidParameterError(f"expect_label_changes must be an int >= 0. Got {expect_label_changes!r} instead.")
    path = Path(path)
    key = private_key if isinstance(private_key, Ed25519PrivateKey) else load_private_key(private_key)
    script_ref = _script(script)
    in_tbl, in_where = read_columns(input, [id, label], dictionary=[label], table=table)
    out_tbl, out_where = read_columns(output, [id, label], dictionary=[label], table=table)
    in_where, out_where = input_name or in_where, output_name or out_where
    in_m, in_data = seal_table(in_tbl, label=label, id=id, private_key=key, source=in_where,
                               snapshot_name="{sha256}.snapshot")
    out_m, out_data = seal_table(out_tbl, label=label, id=id, private_key=key, source=out_where,
                                 snapshot_name="{sha256}.snapshot")
    changes = diff_tables(in_tbl, out_tbl, label=label, id=id, old_name=in_where, new_name=out_where).changes
    store = snapshot_dir(path)
    _write_snapshot(store, in_m, in_data)
    _write_snapshot(store, out_m, out_data)
    body = {
        "format_version": 1, "kind": KIND, "seq": 0, "prev": GENESIS, "step": step, "time": now_utc(),
        "user": _user(), "host": socket.gethostname(), "script": script_ref, "label": label, "id": id,
        "input": {"source": in_where, "manifest": in_m.doc, "manifest_sha256": in_m.digest()},
        "output": {"source": out_where, "manifest": out_m.doc, "manifest_sha256": out_m.digest()},
        "changes": {"changed": changes.n_changed, "added": changes.n_added, "removed": changes.n_removed,
                    "duplicated": changes.n_duplicated,
                    "transitions": transition_list(changes.transitions, changes.classes)},
        "expect_label_changes": expect_label_changes, "key_id": key_id(key),
    }
    seq, digest, doc = _locked_append(path, body, key)
    finding = _expectation(doc)
    return LedgerAppend(str(path), seq, digest, doc, [finding] if finding else [])


def _locked_append(path: Path, body: dict, key: Ed25519PrivateKey) -> tuple[int, str, dict]:
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
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
            view = memoryview(line + b"\n")
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
            if size == 0:
                _fsync_dir(path.parent)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    return seq, hashlib.sha256(line).hexdigest(), doc


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
