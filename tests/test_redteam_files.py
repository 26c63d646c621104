"""Red team against files and the ledger: an attacker who can write the bucket, not the signing key.

Every tampering case is either *prevented* (exit 2: the input is refused and
nothing is trusted) or *detected* (exit 1, with the finding named); every
harmless change verifies clean (exit 0, no false alarm); every hostile input
gives exit 2 with one ``Error:`` line and leaves every earlier file valid.
The rows of docs/threat-model.md point at the cases here.

One sealed world is built once per module (keys, a sealed CSV, an old seal
of it, another dataset's seal, a ledger with a declared step) and copied
into each test's temporary folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import no_hang as _no_hang

from flipguard.integrity import generate_keypair, seal_table
from flipguard.integrity._manifest import canonical_json

ROWS = [  # id, f1 (sealed), f2 (not sealed), label: null words are distinct labels
    (101, "0.5", "a", "cat"), (102, "1.5", "b", "dog"), (103, "2.5", "c", "cat"), (104, "3.5", "d", "dog"),
    (105, "4.5", "e", "bird"), (106, "5.5", "f", "1"), (107, "6.5", "g", "true"), (108, "7.5", "h", "NA"),
    (109, "8.5", "i", "N/A"), (110, "9.5", "j", "null"), (111, "10.5", "k", "NaN"), (112, "11.5", "l", "nan"),
    (113, "12.5", "m", "#N/A"), (114, "13.5", "n", ""), (115, "14.5", "o", "cat"), (116, "15.5", "p", "dog"),
]
NULL_WORDS = ["NA", "N/A", "null", "NaN", "nan", "#N/A", ""]


def _csv_text(rows, header="id,f1,f2,label", eol="\n") -> str:
    return eol.join([header] + [",".join(map(str, r)) for r in rows]) + eol


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The sealed world every case starts from (built once, copied per test)."""
    from conftest import run_cli as cli

    base = tmp_path_factory.mktemp("world")
    assert cli("keygen", "--out", base / "keys").exit_code == 0
    key = base / "keys" / "flipguard.key"
    (base / "old").mkdir()
    old_rows = list(ROWS)
    (base / "old" / "data.csv").write_text(_csv_text(old_rows))
    r = cli("seal", base / "old" / "data.csv", "--label", "label", "--id", "id", "--key", key, "--columns", "f1")
    assert r.exit_code == 0, r.stderr
    new_rows = [(101, "0.5", "a", "dog")] + old_rows[1:]  # the relabel step: 101 cat -> dog, declared
    (base / "data.csv").write_text(_csv_text(new_rows))
    (base / "allow.csv").write_text("id,label\n101,dog\n")
    r = cli("ledger", "append", base / "pipeline.ledger", "--step", "relabel", "--input", base / "old" / "data.csv",
            "--output", base / "data.csv", "--label", "label", "--id", "id", "--key", key,
            "--expect-changes", base / "allow.csv", "--expect-label-changes", "1")
    assert r.exit_code == 0, r.stdout + r.stderr
    r = cli("ledger", "append", base / "pipeline.ledger", "--step", "dedupe", "--input", base / "data.csv",
            "--output", base / "data.csv", "--label", "label", "--id", "id", "--key", key,
            "--expect-label-changes", "0")
    assert r.exit_code == 0, r.stdout + r.stderr
    r = cli("seal", base / "data.csv", "--label", "label", "--id", "id", "--key", key, "--columns", "f1")
    assert r.exit_code == 0 and "version 1" in r.stdout, r.stdout + r.stderr
    (base / "other").mkdir()
    (base / "other" / "data.csv").write_text(_csv_text([(201, "1", "x", "cat"), (202, "2", "y", "dog")]))
    assert cli("seal", base / "other" / "data.csv", "--label", "label", "--id", "id", "--key", key,
               "--columns", "f1", "--name", "other-dataset").exit_code == 0
    (base / "same").mkdir()  # another dataset that happens to have the same file name, sealed unnamed
    (base / "same" / "data.csv").write_text(_csv_text([(201, "1", "x", "cat"), (202, "2", "y", "dog")]))
    assert cli("seal", base / "same" / "data.csv", "--label", "label", "--id", "id", "--key", key,
               "--columns", "f1").exit_code == 0
    (base / "else").mkdir()
    (base / "else" / "else.csv").write_text(_csv_text(new_rows))
    assert cli("seal", base / "else" / "else.csv", "--label", "label", "--id", "id", "--key", key,
               "--columns", "f1").exit_code == 0
    assert cli("keygen", "--out", base / "evil").exit_code == 0
    return base


@pytest.fixture
def w(world, tmp_path):
    d = tmp_path / "w"
    shutil.copytree(world, d, symlinks=True)
    return d


def _verify(cli, d, *extra):
    return cli("verify", d / "data.csv", "--pubkey", d / "keys" / "flipguard.pub", *extra)


def _ledger_verify(cli, d, *extra):
    return cli("ledger", "verify", d / "pipeline.ledger", "--pubkey", d / "keys" / "flipguard.pub", *extra)


# -- helpers that play the attacker ---------------------------------------------------------
def _lines(d) -> list[str]:
    return (d / "data.csv").read_text().splitlines()


def _set_lines(d, lines) -> None:
    (d / "data.csv").write_text("\n".join(lines) + "\n")


def _set_label(rid, value):
    def go(d):
        lines = _lines(d)
        for i, line in enumerate(lines):
            if line.startswith(f"{rid},"):
                lines[i] = line.rsplit(",", 1)[0] + "," + value
        _set_lines(d, lines)
    return go


def _edit_manifest(edit, path="data.csv.flipguard.json"):
    def go(d):
        p = d / path
        doc = json.loads(p.read_bytes())
        edit(doc)
        p.write_bytes(canonical_json(doc) + b"\n")
    return go


def _edit_entry(seq, edit):
    def go(d):
        p = d / "pipeline.ledger"
        lines = p.read_bytes().splitlines()
        doc = json.loads(lines[seq])
        edit(doc)
        lines[seq] = canonical_json(doc)
        p.write_bytes(b"".join(x + b"\n" for x in lines))
    return go


def _set(path, value):
    def edit(doc):
        *head, last = path
        for k in head:
            doc = doc[k]
        doc[last] = value
    return edit


def _snapshot(d) -> Path:
    return d / "data.csv.flipguard.snapshot"


def _flip_byte(path_fn, offset):
    def go(d):
        p = path_fn(d)
        b = bytearray(p.read_bytes())
        b[offset % len(b)] ^= 0x01
        p.write_bytes(bytes(b))
    return go


def _copy_other_seal(d):
    """Mix-and-match: another dataset's file and its valid seal copied over this one."""
    for suffix in ("", ".flipguard.json", ".flipguard.snapshot"):
        shutil.copy(d / "other" / f"data.csv{suffix}", d / f"data.csv{suffix}")


def _copy_else_seal(d):
    """Another dataset (else.csv) with the same rows: its seal copied under this name."""
    shutil.copy(d / "else" / "else.csv.flipguard.json", d / "data.csv.flipguard.json")
    shutil.copy(d / "else" / "else.csv.flipguard.snapshot", d / "else.csv.flipguard.snapshot")


def _rollback(d):
    """Old data and its genuine, older seal put back."""
    for suffix in ("", ".flipguard.json", ".flipguard.snapshot"):
        shutil.copy(d / "old" / f"data.csv{suffix}", d / f"data.csv{suffix}")


def _ledger_seal_out(d):
    """The ledger entry's embedded (fully signed) output seal copied out as a standalone seal."""
    entry = json.loads((d / "pipeline.ledger").read_bytes().splitlines()[0])
    m = entry["output"]["manifest"]
    (d / "data.csv.flipguard.json").write_bytes(canonical_json(m) + b"\n")
    shutil.copy(d / "pipeline.ledger.snapshots" / m["snapshot"]["file"], d / m["snapshot"]["file"])


def _ledger_seal_in_poisoned(d):
    """The ledger's *input* seal (old labels) copied out, data rolled back to match it."""
    entry = json.loads((d / "pipeline.ledger").read_bytes().splitlines()[0])
    m = entry["input"]["manifest"]
    shutil.copy(d / "old" / "data.csv", d / "data.csv")
    (d / "data.csv.flipguard.json").write_bytes(canonical_json(m) + b"\n")
    shutil.copy(d / "pipeline.ledger.snapshots" / m["snapshot"]["file"], d / m["snapshot"]["file"])


def _resign_with(evil_dir):
    """Re-seal tampered data with the attacker's own key."""
    def go(d):
        from conftest import run_cli as cli

        _set_label(103, "dog")(d)
        assert cli("seal", d / "data.csv", "--label", "label", "--id", "id", "--key",
                   d / evil_dir / "flipguard.key", "--columns", "f1").exit_code == 0
    return go


def _append_line(text):
    def go(d):
        with open(d / "data.csv", "a") as fh:
            fh.write(text + "\n")
    return go


def _swap_labels(a, b):
    def go(d):
        lines = _lines(d)
        ia = next(i for i, x in enumerate(lines) if x.startswith(f"{a},"))
        ib = next(i for i, x in enumerate(lines) if x.startswith(f"{b},"))
        la, lb = lines[ia].rsplit(",", 1), lines[ib].rsplit(",", 1)
        lines[ia], lines[ib] = la[0] + "," + lb[1], lb[0] + "," + la[1]
        _set_lines(d, lines)
    return go


def _drop_row(rid):
    def go(d):
        _set_lines(d, [x for x in _lines(d) if not x.startswith(f"{rid},")])
    return go


def _change_id(old, new):
    def go(d):
        _set_lines(d, [f"{new}," + x.split(",", 1)[1] if x.startswith(f"{old},") else x for x in _lines(d)])
    return go


def _second_label_column(d):
    lines = _lines(d)
    flipped = {"cat": "dog", "dog": "cat"}
    out = [lines[0] + ",label"] + [x + "," + flipped.get(x.rsplit(",", 1)[1], "cat") for x in lines[1:]]
    _set_lines(d, out)


def _rename_header(old, new):
    def go(d):
        lines = _lines(d)
        lines[0] = ",".join(new if c == old else c for c in lines[0].split(","))
        _set_lines(d, lines)
    return go


def _set_f1(rid, value):
    def go(d):
        _set_lines(d, [x.split(",")[0] + f",{value}," + ",".join(x.split(",")[2:]) if x.startswith(f"{rid},") else x
                       for x in _lines(d)])
    return go


def _ledger_lines(d):
    return (d / "pipeline.ledger").read_bytes().splitlines(keepends=True)


def _ledger_write(d, lines):
    (d / "pipeline.ledger").write_bytes(b"".join(lines))


def _forge_entry(d):
    """An extra entry signed with the attacker's key, chained correctly."""
    from flipguard.integrity import load_private_key
    from flipguard.integrity._manifest import sign_body

    lines = _ledger_lines(d)
    doc = json.loads(lines[-1])
    doc.pop("signature")
    doc["seq"] = len(lines)
    doc["prev"] = hashlib.sha256(lines[-1].rstrip(b"\n")).hexdigest()
    doc["step"] = "forged"
    evil = load_private_key(d / "evil" / "flipguard.key")
    from flipguard.integrity import key_id

    doc["key_id"] = key_id(evil)
    signed = sign_body(doc, evil)
    _ledger_write(d, lines + [canonical_json(signed) + b"\n"])


def _snap_of_entry(d, seq=0, side="output") -> Path:
    m = json.loads(_ledger_lines(d)[seq])[side]["manifest"]
    return d / "pipeline.ledger.snapshots" / m["snapshot"]["file"]


# Each case: (id, attacker action, command, expected exit, text the output must contain).
FILE_CASES = [
    *[(f"flip-{rid}-to-{to or 'empty'}", _set_label(rid, to), "verify", 1, "label(s) changed")
      for rid, to in [(101, "cat"), (102, "cat"), (103, "dog"), (104, "bird"), (105, "cat"), (106, "2"),
                      (107, "false"), (115, "dog"), (116, "bird"), (103, "bird"), (105, "dog"), (116, "cat")]],
    *[(f"null-word-{i}-{j}", _set_label(108 + i, NULL_WORDS[j]), "verify", 1, "label(s) changed")
      for i in range(len(NULL_WORDS)) for j in range(len(NULL_WORDS)) if i != j and (j == 6 or i == 6 or j == i + 1)],
    ("case-Cat", _set_label(101, "Cat"), "verify", 1, "label(s) changed"),
    ("case-DOG", _set_label(102, "DOG"), "verify", 1, "label(s) changed"),
    ("space-before", _set_label(103, " cat"), "verify", 1, "label(s) changed"),
    ("space-after", _set_label(103, "cat "), "verify", 1, "label(s) changed"),
    ("one-to-1.0", _set_label(106, "1.0"), "verify", 1, "label(s) changed"),
    ("one-to-01", _set_label(106, "01"), "verify", 1, "label(s) changed"),
    ("true-to-True", _set_label(107, "True"), "verify", 1, "label(s) changed"),
    ("quoted-null-to-empty", _set_label(110, '""'), "verify", 1, "label(s) changed"),
    ("swap-two-labels", _swap_labels(102, 103), "verify", 1, "2 label(s) changed"),
    ("add-row", _append_line("117,1.0,q,cat"), "verify", 1, "1 row(s) added"),
    ("remove-row", _drop_row(105), "verify", 1, "1 row(s) removed"),
    ("duplicate-row", _append_line("103,2.5,c,cat"), "verify", 1, "id(s) duplicated"),
    ("duplicate-id-other-label", _append_line("103,2.5,c,dog"), "verify", 1, "id(s) duplicated"),
    ("change-id", _change_id(104, 904), "verify", 1, "row(s) added"),
    ("id-with-space", _change_id(104, "104 "), "verify", 1, "row(s) added"),
    ("id-to-text", _change_id(104, "x104"), "verify", 1, "row(s) added"),
    ("header-only", lambda d: _set_lines(d, _lines(d)[:1]), "verify", 1, "row(s) removed"),
    ("sealed-column-edit", _set_f1(104, "9.9"), "verify", 1, "sealed column 'f1' changed"),
    ("sealed-column-1.0", _set_f1(104, "3.50"), "verify", 1, "sealed column 'f1' changed"),
    ("second-label-column", _second_label_column, "verify", 2, "appear more than once"),
    ("rename-label-column", _rename_header("label", "lbl"), "verify", 2, "not found"),
    ("rename-id-column", _rename_header("id", "ident"), "verify", 2, "not found"),
    ("empty-data-file", lambda d: (d / "data.csv").write_bytes(b""), "verify", 2, "cannot read as CSV"),
    ("mix-and-match-other-dataset", _copy_other_seal, "verify", 1, "seals dataset 'other-dataset', not 'data.csv'"),
    ("mix-and-match-same-rows", _copy_else_seal, "verify", 1, "seals dataset 'else.csv', not 'data.csv'"),
    ("ledger-output-seal-as-standalone", _ledger_seal_out, "verify", 1, "embedded in a ledger entry"),
    ("ledger-input-seal-as-standalone", _ledger_seal_in_poisoned, "verify", 1, "embedded in a ledger entry"),
    ("rollback-with-ledger", _rollback, "verify-ledger", 1, "rollback: the seal of 'data.csv'"),
    ("freeze-old-version", _rollback, "verify-ledger", 1, "a newer version is being withheld"),
    ("old-seal-new-data", lambda d: [shutil.copy(d / "old" / f"data.csv{s}", d / f"data.csv{s}")
                                     for s in (".flipguard.json", ".flipguard.snapshot")],
     "verify", 1, "label(s) changed"),
    ("resigned-with-attacker-key", _resign_with("evil"), "verify", 1, "not by the public key given"),
    *[(f"manifest-field-{'-'.join(map(str, path))}", _edit_manifest(_set(path, value)), "verify", code, text)
      for path, value, code, text in [
          (("name",), "other.csv", 1, "signature does not match"),
          (("version",), 99, 1, "signature does not match"),
          (("purpose",), "ledger-output", 1, "signature does not match"),
          (("created",), "2099-01-01T00:00:00.000000Z", 1, "signature does not match"),
          (("source",), "elsewhere.csv", 1, "signature does not match"),
          (("label_type",), "integer", 1, "signature does not match"),
          (("tool",), "flipguard 9.9", 1, "signature does not match"),
          (("columns",), [], 1, "signature does not match"),
          (("commitment", "root"), "0" * 64, 1, "signature does not match"),
          (("snapshot", "sha256"), "0" * 64, 1, "signature does not match"),
          (("snapshot", "file"), "other.snapshot", 1, "signature does not match"),
          (("key_id",), "0123456789abcdef", 1, "not by the public key given"),
          (("signature", "value"), "A" * 86 + "==", 1, "signature does not match"),
          (("label",), "f2", 1, "signature does not match"),
          (("id_type",), "string", 1, "signature does not match"),
          (("rows",), 15, 2, "class counts do not add up"),
          (("kind",), "flipguard.other", 2, "kind is"),
          (("format_version",), 3, 2, "format_version 3 is not supported"),
          (("snapshot", "file"), "../../etc/passwd", 2, "plain file name"),
          (("signature", "algorithm"), "rsa", 2, "ed25519 only"),
      ]],
    ("manifest-class-counts", _edit_manifest(lambda doc: doc["classes"][0].update(count=doc["classes"][0]["count"] + 1)
                                             or doc["classes"][1].update(count=doc["classes"][1]["count"] - 1)),
     "verify", 1, "signature does not match"),
    ("manifest-format-1", _edit_manifest(_set(("format_version",), 1)), "verify", 2, "format_version 1 was written"),
    ("manifest-pretty-printed", lambda d: (d / "data.csv.flipguard.json").write_text(
        json.dumps(json.loads((d / "data.csv.flipguard.json").read_text()), indent=1, sort_keys=True)),
     "verify", 2, "not in canonical form"),
    ("manifest-truncated", lambda d: (d / "data.csv.flipguard.json").write_bytes(
        (d / "data.csv.flipguard.json").read_bytes()[:100]), "verify", 2, "not valid JSON"),
    ("manifest-deleted", lambda d: (d / "data.csv.flipguard.json").unlink(), "verify", 2, "no such file"),
    ("manifest-duplicate-key", lambda d: (d / "data.csv.flipguard.json").write_bytes(
        (d / "data.csv.flipguard.json").read_bytes().replace(b'{"classes"', b'{"classes":[],"classes"', 1)),
     "verify", 2, "duplicate key"),
    *[(f"manifest-bit-{off}", _flip_byte(lambda d: d / "data.csv.flipguard.json", off), "verify", None, "")
      for off in (1, 40, 200, 400, 700, -30, -3)],
    *[(f"snapshot-bit-{off}", _flip_byte(_snapshot, off), "verify", 2, "does not match the manifest")
      for off in (0, 10, 100, 300, -10, -1)],
    ("snapshot-truncated", lambda d: _snapshot(d).write_bytes(_snapshot(d).read_bytes()[:50]), "verify", 2,
     "does not match the manifest"),
    ("snapshot-deleted", lambda d: _snapshot(d).unlink(), "verify", 2, "no such file"),
    ("snapshot-swapped-with-old", lambda d: shutil.copy(d / "old" / "data.csv.flipguard.snapshot", _snapshot(d)),
     "verify", 2, "does not match the manifest"),
    ("snapshot-fifo", lambda d: (_snapshot(d).unlink(), os.mkfifo(_snapshot(d))), "verify", 2, "FIFO"),
    ("snapshot-dev-zero", lambda d: (_snapshot(d).unlink(), os.symlink("/dev/zero", _snapshot(d))), "verify", 2,
     "device"),
    ("snapshot-symlink-to-old", lambda d: (_snapshot(d).unlink(),
                                           os.symlink(d / "old" / "data.csv.flipguard.snapshot", _snapshot(d))),
     "verify", 2, "does not match the manifest"),
]

LEDGER_CASES = [
    *[(f"entry-field-{'-'.join(map(str, path))}", _edit_entry(seq, _set(path, value)), "ledger", 1,
       "signature does not match")
      for seq, path, value in [
          (0, ("step",), "innocent"), (0, ("user",), "alice"), (0, ("host",), "ci-1"),
          (0, ("time",), "2020-01-01T00:00:00.000000Z"), (0, ("expect_label_changes",), 5),
          (0, ("changes", "changed"), 0), (0, ("input", "source"), "x.csv"), (1, ("step",), "x"),
          (1, ("expect_label_changes",), None), (0, ("expect_changes", "allowed"), [["101", "dog"], ["102", "cat"]]),
          (0, ("expect_changes",), None), (0, ("script",), {"path": "a.py", "sha256": "0" * 64}),
          (0, ("label",), "f2"),
      ]],
    ("entry-removed-first", lambda d: _ledger_write(d, _ledger_lines(d)[1:]), "ledger", 1, "sequence number"),
    ("entries-reordered", lambda d: _ledger_write(d, _ledger_lines(d)[::-1]), "ledger", 1, "hash link"),
    ("entry-duplicated", lambda d: _ledger_write(d, _ledger_lines(d) + _ledger_lines(d)[-1:]), "ledger", 1,
     "sequence number"),
    ("entry-forged-other-key", _forge_entry, "ledger", 1, "not by the public key given"),
    ("tail-cut-with-head", lambda d: _ledger_write(d, _ledger_lines(d)[:1]), "ledger-head", 1,
     "entries were removed from the end"),
    ("partial-last-line", lambda d: (d / "pipeline.ledger").write_bytes((d / "pipeline.ledger").read_bytes()[:-30]),
     "ledger", 1, "last line is incomplete"),
    ("ledger-snapshot-deleted", lambda d: _snap_of_entry(d).unlink(), "ledger", 1, "is missing"),
    ("ledger-snapshot-modified", _flip_byte(_snap_of_entry, 20), "ledger", 1, "was modified"),
    ("ledger-snapshot-swapped", lambda d: shutil.copy(_snap_of_entry(d, 0, "input"), _snap_of_entry(d)), "ledger",
     1, "was modified"),
    ("ledger-snapshot-fifo", lambda d: (_snap_of_entry(d).unlink(), os.mkfifo(_snap_of_entry(d))), "ledger", 1,
     "FIFO"),
    ("show-recomputes-lie", _edit_entry(0, _set(("changes", "changed"), 0)), "show", 1,
     "the snapshots show 1 changed"),
]




def _run_case(cli, d, command):
    with _no_hang():
        if command == "verify":
            return _verify(cli, d)
        if command == "verify-ledger":
            return _verify(cli, d, "--ledger", d / "pipeline.ledger")
        if command == "ledger":
            return _ledger_verify(cli, d)
        if command == "ledger-head":
            head = hashlib.sha256(_ledger_lines_before(d)[-1].rstrip(b"\n")).hexdigest()
            return _ledger_verify(cli, d, "--head", head)
        if command == "show":
            return cli("ledger", "show", d / "pipeline.ledger")
    raise AssertionError(command)


_BEFORE: dict = {}


def _ledger_lines_before(d):
    return _BEFORE[d]


def test_the_world_is_clean(w, cli):
    assert _verify(cli, w).exit_code == 0
    r = _verify(cli, w, "--ledger", w / "pipeline.ledger")
    assert r.exit_code == 0 and "match the ledger's latest seal of 'data.csv'" in r.stdout, r.stdout
    assert _ledger_verify(cli, w).exit_code == 0
    assert cli("ledger", "show", w / "pipeline.ledger").exit_code == 0


@pytest.mark.parametrize("case", FILE_CASES + LEDGER_CASES, ids=[c[0] for c in FILE_CASES + LEDGER_CASES])
def test_tampering_is_prevented_or_detected(w, cli, case):
    _, act, command, code, text = case
    _BEFORE[w] = _ledger_lines(w)
    act(w)
    r = _run_case(cli, w, command)
    out = r.stdout + r.stderr
    assert "Traceback" not in out
    if code is None:  # a flipped manifest bit: refused (2) or a signature finding (1), never accepted
        assert r.exit_code in (1, 2), out
    else:
        assert r.exit_code == code, out
        assert text in out, out
    if r.exit_code == 2:
        assert r.stdout == "" and r.stderr.startswith("Error: ") and r.stderr.count("\n") == 1, out


def test_same_file_name_without_name_is_out_of_scope(w, cli):
    """Documented limit (docs/threat-model.md): two datasets both called data.csv, sealed without
    --name, share the default name, so one's file and seal pass for the other.  Naming them
    (as other/ is, --name other-dataset) is what binds a seal to one of them."""
    for suffix in ("", ".flipguard.json", ".flipguard.snapshot"):
        shutil.copy(w / "same" / f"data.csv{suffix}", w / f"data.csv{suffix}")
    assert _verify(cli, w).exit_code == 0
    _copy_other_seal(w)
    assert _verify(cli, w).exit_code == 1


def test_there_are_enough_tampering_cases():
    assert len(FILE_CASES) + len(LEDGER_CASES) >= 100


# -- a compromised pipeline step ----------------------------------------------------------
def _step(cli, d, output_rows, *declare):
    (d / "out.csv").write_text(_csv_text(output_rows))
    return cli("ledger", "append", d / "pipeline.ledger", "--step", "normalise", "--input", d / "data.csv",
               "--output", d / "out.csv", "--label", "label", "--id", "id", "--key", d / "keys" / "flipguard.key",
               *declare)


def _current_rows():
    return [(101, "0.5", "a", "dog")] + ROWS[1:]


STEP_CASES = [
    ("declared-0-changed-1", [("--expect-label-changes", "0")], {103: "dog"}, "declared label-preserving"),
    ("declared-1-changed-2", [("--expect-label-changes", "1")], {103: "dog", 104: "cat"}, "declared to change 1"),
    ("declared-row-attacker-picks-other", [("--expect-changes", "allow"), ("--expect-label-changes", "1")],
     {104: "cat"}, "outside its declaration"),
    ("declared-row-other-label", [("--expect-changes", "allow")], {102: "bird"}, "declared: cat"),
    ("declared-rows-plus-one", [("--expect-changes", "allow")], {102: "cat", 105: "dog"}, "id 105"),
    ("declared-null-word-collapse", [("--expect-changes", "allow")], {108: ""}, "id 108"),
]


@pytest.mark.parametrize("case", STEP_CASES, ids=[c[0] for c in STEP_CASES])
def test_compromised_step_is_detected_at_append_verify_and_show(w, cli, case):
    _, declare, flips, text = case
    (w / "allow.csv").write_text("id,label\n102,cat\n")
    args = [a for opt, v in declare for a in (opt, w / "allow.csv" if v == "allow" else v)]
    rows = [(r[0], r[1], r[2], flips.get(r[0], r[3])) for r in _current_rows()]
    r = _step(cli, w, rows, *args)
    assert r.exit_code == 1 and text in r.stdout, r.stdout + r.stderr
    r = _ledger_verify(cli, w)
    assert r.exit_code == 1 and text in r.stdout, r.stdout
    r = cli("ledger", "show", w / "pipeline.ledger")
    assert r.exit_code == 1 and text in r.stdout, r.stdout


def test_declared_step_that_keeps_its_declaration_is_clean(w, cli):
    (w / "allow.csv").write_text("id,label\n0102,cat\n105.0,dog\n105,cat\n")  # ids as any integer spelling
    rows = [(r[0], r[1], r[2], {102: "cat", 105: "cat"}.get(r[0], r[3])) for r in _current_rows()]
    r = _step(cli, w, rows, "--expect-changes", w / "allow.csv")
    assert r.exit_code == 0, r.stdout + r.stderr
    assert _ledger_verify(cli, w).exit_code == 0
    assert cli("ledger", "show", w / "pipeline.ledger").exit_code == 0


def test_step_changing_the_label_type_is_a_finding(w, cli, tmp_path):
    a = tmp_path / "a.parquet"
    b = tmp_path / "b.parquet"
    pq.write_table(pa.table({"id": [1, 2, 3], "label": [0, 1, 1]}), a)
    pq.write_table(pa.table({"id": [1, 2, 3], "label": ["0", "1", "1"]}), b)
    r = cli("ledger", "append", w / "t.ledger", "--step", "export", "--input", a, "--output", b, "--label", "label",
            "--id", "id", "--key", w / "keys" / "flipguard.key", "--expect-label-changes", "0")
    assert r.exit_code == 1
    assert "changed the label column's type from integer to string" in r.stdout


# -- typed columns: a type change is a finding, a narrower integer is not -----------------------
TYPE_CASES = [
    ("int-to-string", pa.array([0, 1, 2, 1]), pa.array(["0", "1", "2", "1"]), "sealed as integer, now string"),
    ("int-to-double", pa.array([0, 1, 2, 1]), pa.array([0.0, 1.0, 2.0, 1.0]), "sealed as integer, now float64"),
    ("int-to-decimal", pa.array([0, 1, 2, 1]), pa.array([0, 1, 2, 1]).cast(pa.decimal128(19, 0)),
     "sealed as integer, now decimal(scale=0)"),
    ("bool-to-string", pa.array([True, False, True, True]), pa.array(["true", "false", "true", "true"]),
     "sealed as boolean, now string"),
    ("float64-to-float32", pa.array([0.5, 1.5, 2.5, 1.5]), pa.array([0.5, 1.5, 2.5, 1.5], pa.float32()),
     "sealed as float64, now float32"),
    ("string-to-int", pa.array(["0", "1", "2", "1"]), pa.array([0, 1, 2, 1]), "sealed as string, now integer"),
    ("decimal-scale", pa.array([0, 1, 2, 1]).cast(pa.decimal128(19, 0)),
     pa.array([0, 1, 2, 1]).cast(pa.decimal128(20, 1)), "sealed as decimal(scale=0), now decimal(scale=1)"),
]

NARROWER = [
    ("int64-to-int32", pa.int32()), ("int64-to-int16", pa.int16()), ("int64-to-int8", pa.int8()),
    ("int64-to-uint8", pa.uint8()), ("int64-to-uint16", pa.uint16()),
]


def _typed(cli, tmp_path, sealed, current):
    data = tmp_path / "t.parquet"
    pq.write_table(pa.table({"id": pa.array([1, 2, 3, 4]), "label": sealed}), data)
    kp = tmp_path / "keys"
    assert cli("keygen", "--out", kp).exit_code == 0
    assert cli("seal", data, "--label", "label", "--id", "id", "--key", kp / "flipguard.key").exit_code == 0
    pq.write_table(pa.table({"id": pa.array([1, 2, 3, 4]), "label": current}), data)
    return cli("verify", data, "--pubkey", kp / "flipguard.pub")


@pytest.mark.parametrize("case", TYPE_CASES, ids=[c[0] for c in TYPE_CASES])
def test_label_type_change_is_a_finding(cli, tmp_path, case):
    _, sealed, current, text = case
    r = _typed(cli, tmp_path, sealed, current)
    assert r.exit_code == 1 and f"the label column 'label' changed type: {text}" in r.stdout, r.stdout + r.stderr
    diff = cli("diff", tmp_path / "t.parquet", tmp_path / "t.parquet", "--label", "label", "--id", "id")
    assert diff.exit_code == 0  # same file, same type


# -- harmless changes: no false alarm ---------------------------------------------------------
def _rewrite(fn):
    def go(d):
        text = (d / "data.csv").read_text()
        (d / "data.csv").write_bytes(fn(text))
    return go


def _rows_of(text):
    lines = text.splitlines()
    return lines[0], lines[1:]


def _reorder_columns(text):
    header, rows = _rows_of(text)
    order = [3, 2, 0, 1]
    split = [r.split(",") for r in [header] + rows]
    return ("\n".join(",".join(x[i] for i in order) for x in split) + "\n").encode()


def _shuffle(text):
    import random

    header, rows = _rows_of(text)
    random.Random(7).shuffle(rows)
    return ("\n".join([header] + rows) + "\n").encode()


def _ids(fn):
    def go(text):
        header, rows = _rows_of(text)
        return ("\n".join([header] + [fn(r.split(",", 1)[0]) + "," + r.split(",", 1)[1] for r in rows]) + "\n").encode()
    return go


def _quote_all(text):
    header, rows = _rows_of(text)
    q = [",".join(f'"{c}"' for c in r.split(",")) for r in [header] + rows]
    return ("\n".join(q) + "\n").encode()


def _pyarrow_rewrite(d):
    import pyarrow.csv as pacsv

    tbl = pacsv.read_csv(d / "data.csv", convert_options=pacsv.ConvertOptions(
        column_types={c: pa.string() for c in ("id", "f1", "f2", "label")}, strings_can_be_null=False,
        null_values=[]))
    pacsv.write_csv(tbl, d / "data.csv")


HARMLESS = [
    ("reverse-rows", _rewrite(lambda t: ("\n".join([_rows_of(t)[0]] + _rows_of(t)[1][::-1]) + "\n").encode())),
    ("shuffle-rows", _rewrite(_shuffle)),
    ("reorder-columns", _rewrite(_reorder_columns)),
    ("crlf", _rewrite(lambda t: t.replace("\n", "\r\n").encode())),
    ("bom", _rewrite(lambda t: b"\xef\xbb\xbf" + t.encode())),
    ("blank-lines", _rewrite(lambda t: t.replace("\n", "\n\n").encode())),
    ("trailing-blank-lines", _rewrite(lambda t: (t + "\n\n\n").encode())),
    ("no-final-newline", _rewrite(lambda t: t.rstrip("\n").encode())),
    ("crlf-bom-blank", _rewrite(lambda t: b"\xef\xbb\xbf" + t.replace("\n", "\r\n\r\n").encode())),
    ("ids-104.0", _rewrite(_ids(lambda i: i + ".0"))),
    ("ids-0104", _rewrite(_ids(lambda i: "0" + i))),
    ("ids-+104", _rewrite(_ids(lambda i: "+" + i))),
    ("ids-quoted", _rewrite(_ids(lambda i: f'"{i}"'))),
    ("quote-every-cell", _rewrite(_quote_all)),
    ("pyarrow-rewrite", _pyarrow_rewrite),
    ("unsealed-column-edited", _rewrite(lambda t: t.replace(",c,", ",zzz,").encode())),
    ("unsealed-column-removed", _rewrite(lambda t: ("\n".join(
        ",".join(c for i, c in enumerate(r.split(",")) if i != 2) for r in t.splitlines()) + "\n").encode())),
    ("unsealed-column-added", _rewrite(lambda t: ("\n".join(
        r + ("," + ("extra" if i == 0 else str(i))) for i, r in enumerate(t.splitlines())) + "\n").encode())),
    ("touch-and-chmod", lambda d: (os.utime(d / "data.csv", (0, 0)), os.chmod(d / "data.csv", 0o600))),
    ("manifest-rewritten-same-bytes", lambda d: (d / "data.csv.flipguard.json").write_bytes(
        (d / "data.csv.flipguard.json").read_bytes())),
    ("moved-folder", None),
    ("renamed-with-name", None),
    ("legit-reseal", None),
]


@pytest.mark.parametrize("case", HARMLESS, ids=[c[0] for c in HARMLESS])
def test_harmless_change_is_not_an_alarm(w, cli, case):
    name, act = case
    if act is not None:
        act(w)
        r = _verify(cli, w)
        assert r.exit_code == 0, r.stdout + r.stderr
        r = _verify(cli, w, "--ledger", w / "pipeline.ledger")
        assert r.exit_code == 0, r.stdout + r.stderr
    elif name == "moved-folder":
        moved = w / "moved"
        moved.mkdir()
        for suffix in ("", ".flipguard.json", ".flipguard.snapshot"):
            shutil.move(w / f"data.csv{suffix}", moved / f"data.csv{suffix}")
        r = cli("verify", moved / "data.csv", "--pubkey", w / "keys" / "flipguard.pub")
        assert r.exit_code == 0, r.stdout + r.stderr
    elif name == "renamed-with-name":
        shutil.move(w / "data.csv", w / "renamed.csv")
        r = cli("verify", w / "renamed.csv", "--manifest", w / "data.csv.flipguard.json", "--pubkey",
                w / "keys" / "flipguard.pub", "--name", "data.csv")
        assert r.exit_code == 0, r.stdout + r.stderr
    else:  # a legitimate relabelling, resealed: version 2, and the ledger does not call it a rollback
        _set_label(103, "dog")(w)
        r = cli("seal", w / "data.csv", "--label", "label", "--id", "id", "--key", w / "keys" / "flipguard.key",
                "--columns", "f1")
        assert r.exit_code == 0 and "version 2" in r.stdout
        r = _verify(cli, w, "--ledger", w / "pipeline.ledger")
        assert r.exit_code == 0 and "newer than the ledger's latest seal" in r.stdout, r.stdout


@pytest.mark.parametrize("case", NARROWER, ids=[c[0] for c in NARROWER])
def test_narrower_integer_types_are_not_an_alarm(cli, tmp_path, case):
    _, typ = case
    r = _typed(cli, tmp_path, pa.array([0, 1, 2, 1]), pa.array([0, 1, 2, 1], typ))
    assert r.exit_code == 0, r.stdout + r.stderr


PARQUET_HARMLESS = [
    ("row-groups", lambda t, p: pq.write_table(t, p, row_group_size=2)),
    ("zstd", lambda t, p: pq.write_table(t, p, compression="zstd")),
    ("dictionary-labels", lambda t, p: pq.write_table(t.set_column(1, "label", t.column("label").dictionary_encode()),
                                                      p)),
    ("large-string-labels", lambda t, p: pq.write_table(
        t.set_column(1, "label", t.column("label").cast(pa.large_string())), p)),
    ("int32-ids", lambda t, p: pq.write_table(t.set_column(0, "id", t.column("id").cast(pa.int32())), p)),
    ("columns-reordered", lambda t, p: pq.write_table(t.select(["label", "x", "id"]), p)),
    ("rows-reversed", lambda t, p: pq.write_table(t.take(pa.array(list(range(t.num_rows))[::-1])), p)),
]


@pytest.mark.parametrize("case", PARQUET_HARMLESS, ids=[c[0] for c in PARQUET_HARMLESS])
def test_harmless_parquet_rewrites_are_not_an_alarm(cli, tmp_path, case):
    _, rewrite = case
    t = pa.table({"id": pa.array([5, 6, 7, 8, 9]), "label": ["a", "b", "NA", "", "a"], "x": [1.0, 2, 3, 4, 5]})
    data = tmp_path / "p.parquet"
    pq.write_table(t, data)
    assert cli("keygen", "--out", tmp_path / "k").exit_code == 0
    assert cli("seal", data, "--label", "label", "--id", "id", "--key", tmp_path / "k" / "flipguard.key").exit_code == 0
    rewrite(t, data)
    r = cli("verify", data, "--pubkey", tmp_path / "k" / "flipguard.pub")
    assert r.exit_code == 0, r.stdout + r.stderr


def test_there_are_enough_harmless_cases():
    assert len(HARMLESS) + len(NARROWER) + len(PARQUET_HARMLESS) + 1 >= 25  # +1: the declared step above


# -- hostile input: exit 2, one line, every earlier file still valid -----------------------------
def _deep(n=100_000) -> bytes:
    return b"[" * n + b"]" * n + b"\n"


def _ledger_with_line(line: bytes):
    def go(d):
        (d / "pipeline.ledger").write_bytes((d / "pipeline.ledger").read_bytes() + line)
    return go


def _entry_edit_raw(edit):
    return _edit_entry(1, edit)


def _parquet(d, name, table):
    pq.write_table(table, d / name)
    return d / name


def _k(d):
    return d / "keys" / "flipguard.key"


def _p(d):
    return d / "keys" / "flipguard.pub"


HOSTILE = [
    ("deep-json-manifest", lambda d: (d / "deep.json").write_bytes(_deep()),
     lambda d: ("verify", d / "data.csv", "--manifest", d / "deep.json", "--pubkey", _p(d)), "nested more than"),
    ("deep-json-ledger-verify", _ledger_with_line(_deep()),
     lambda d: ("ledger", "verify", d / "pipeline.ledger", "--pubkey", _p(d)), "nested more than"),
    ("deep-json-ledger-show", _ledger_with_line(_deep()),
     lambda d: ("ledger", "show", d / "pipeline.ledger"), "nested more than"),
    ("deep-json-ledger-append", _ledger_with_line(_deep()),
     lambda d: ("ledger", "append", d / "pipeline.ledger", "--step", "s", "--input", d / "data.csv", "--output",
                d / "data.csv", "--label", "label", "--id", "id", "--key", _k(d)), "not appending"),
    ("deep-json-verify-ledger", _ledger_with_line(_deep()),
     lambda d: ("verify", d / "data.csv", "--pubkey", _p(d), "--ledger", d / "pipeline.ledger"), "nested more than"),
    ("transitions-5", _entry_edit_raw(_set(("changes", "transitions"), 5)),
     lambda d: ("ledger", "verify", d / "pipeline.ledger", "--pubkey", _p(d)), "transitions must be"),
    ("transitions-5-show", _entry_edit_raw(_set(("changes", "transitions"), 5)),
     lambda d: ("ledger", "show", d / "pipeline.ledger"), "transitions must be"),
    ("signature-5", _entry_edit_raw(_set(("signature",), 5)),
     lambda d: ("ledger", "verify", d / "pipeline.ledger", "--pubkey", _p(d)), "signature must be"),
    ("signature-not-base64", _entry_edit_raw(_set(("signature", "value"), "!!not base64!!")),
     lambda d: ("ledger", "verify", d / "pipeline.ledger", "--pubkey", _p(d)), "not canonical base64"),
    ("signature-short", _entry_edit_raw(_set(("signature", "value"), "AAAA")),
     lambda d: ("ledger", "show", d / "pipeline.ledger"), "64 bytes"),
    ("changes-changed-string", _entry_edit_raw(_set(("changes", "changed"), "1")),
     lambda d: ("ledger", "verify", d / "pipeline.ledger", "--pubkey", _p(d)), "non-negative integers"),
    ("parquet-list-ids", lambda d: _parquet(d, "l.parquet", pa.table({"id": [[1], [2]], "label": ["a", "b"]})),
     lambda d: ("seal", d / "l.parquet", "--label", "label", "--id", "id", "--key", _k(d)), "type list"),
    ("parquet-struct-labels", lambda d: _parquet(d, "s.parquet", pa.table({"id": [1, 2],
                                                                             "label": [{"a": 1}, {"a": 2}]})),
     lambda d: ("seal", d / "s.parquet", "--label", "label", "--id", "id", "--key", _k(d)), "type struct"),
    ("parquet-list-labels-diff", lambda d: _parquet(d, "s.parquet", pa.table({"id": [1, 2], "label": [[1], [2]]})),
     lambda d: ("diff", d / "s.parquet", d / "s.parquet", "--label", "label", "--id", "id"), "type list"),
    ("parquet-binary-ids-bad-utf8", lambda d: _parquet(d, "b.parquet", pa.table(
        {"id": pa.array([b"\xff\xfe", b"ok"], pa.binary()), "label": ["a", "b"]})),
     lambda d: ("seal", d / "b.parquet", "--label", "label", "--id", "id", "--key", _k(d)), "UTF-8"),
    ("csv-id-bad-utf8-seal", lambda d: (d / "u.csv").write_bytes(b"id,label\n1\xff,a\n2,b\n"),
     lambda d: ("seal", d / "u.csv", "--label", "label", "--id", "id", "--key", _k(d)), "UTF"),
    ("csv-id-bad-utf8-diff", lambda d: (d / "u.csv").write_bytes(b"id,label\n1\xff,a\n2,b\n"),
     lambda d: ("diff", d / "data.csv", d / "u.csv", "--label", "label", "--id", "id"), "UTF"),
    ("csv-label-bad-utf8-verify", lambda d: (d / "data.csv").write_bytes(
        (d / "data.csv").read_bytes().replace(b"bird", b"b\xffrd")),
     lambda d: ("verify", d / "data.csv", "--pubkey", _p(d)), "UTF"),
    ("duplicated-label-column-seal", lambda d: (d / "dup.csv").write_text("id,label,label\n1,a,b\n2,b,a\n"),
     lambda d: ("seal", d / "dup.csv", "--label", "label", "--id", "id", "--key", _k(d)), "more than once"),
    ("duplicated-label-column-parquet", lambda d: pq.write_table(
        pa.Table.from_arrays([pa.array([1, 2]), pa.array(["a", "b"]), pa.array(["b", "a"])],
                             names=["id", "label", "label"]), d / "dup.parquet"),
     lambda d: ("seal", d / "dup.parquet", "--label", "label", "--id", "id", "--key", _k(d)), "more than once"),
    ("fifo-as-data", lambda d: os.mkfifo(d / "fifo.csv"),
     lambda d: ("seal", d / "fifo.csv", "--label", "label", "--id", "id", "--key", _k(d)), "FIFO"),
    ("dev-zero-as-data", lambda d: None,
     lambda d: ("seal", "/dev/zero", "--label", "label", "--id", "id", "--key", _k(d), "--out", d / "z.json"),
     "device"),
    ("fifo-as-manifest", lambda d: os.mkfifo(d / "m.json"),
     lambda d: ("verify", d / "data.csv", "--manifest", d / "m.json", "--pubkey", _p(d)), "FIFO"),
    ("dev-zero-as-manifest", lambda d: None,
     lambda d: ("verify", d / "data.csv", "--manifest", "/dev/zero", "--pubkey", _p(d)), "device"),
    ("fifo-as-pubkey", lambda d: os.mkfifo(d / "k.pub"),
     lambda d: ("verify", d / "data.csv", "--pubkey", d / "k.pub"), "FIFO"),
    ("fifo-as-ledger", lambda d: os.mkfifo(d / "f.ledger"),
     lambda d: ("ledger", "verify", d / "f.ledger", "--pubkey", _p(d)), "FIFO"),
    ("fifo-as-ledger-append", lambda d: os.mkfifo(d / "f.ledger"),
     lambda d: ("ledger", "append", d / "f.ledger", "--step", "s", "--input", d / "data.csv", "--output",
                d / "data.csv", "--label", "label", "--id", "id", "--key", _k(d)), "not a regular file"),
    ("fifo-as-script", lambda d: os.mkfifo(d / "s.py"),
     lambda d: ("ledger", "append", d / "n.ledger", "--step", "s", "--input", d / "data.csv", "--output",
                d / "data.csv", "--label", "label", "--id", "id", "--key", _k(d), "--script", d / "s.py"), "FIFO"),
    ("ledger-symlink-append", lambda d: os.symlink(d / "target.ledger", d / "link.ledger"),
     lambda d: ("ledger", "append", d / "link.ledger", "--step", "s", "--input", d / "data.csv", "--output",
                d / "data.csv", "--label", "label", "--id", "id", "--key", _k(d)), "symbolic link"),
    ("ledger-symlink-verify", lambda d: os.symlink(d / "pipeline.ledger", d / "link.ledger"),
     lambda d: ("ledger", "verify", d / "link.ledger", "--pubkey", _p(d)), "symbolic link"),
    ("snapshot-folder-symlink", lambda d: (d / "elsewhere").mkdir() or os.symlink(d / "elsewhere",
                                                                                  d / "new.ledger.snapshots"),
     lambda d: ("ledger", "append", d / "new.ledger", "--step", "s", "--input", d / "data.csv", "--output",
                d / "data.csv", "--label", "label", "--id", "id", "--key", _k(d)), "symbolic link"),
    ("out-is-a-directory", lambda d: (d / "outdir").mkdir(),
     lambda d: ("seal", d / "data.csv", "--label", "label", "--id", "id", "--key", _k(d), "--out", d / "outdir"),
     "is a directory"),
    ("out-folder-missing", lambda d: None,
     lambda d: ("seal", d / "data.csv", "--label", "label", "--id", "id", "--key", _k(d), "--out",
                d / "nope" / "m.json"), "does not exist"),
    ("public-key-as-key", lambda d: None,
     lambda d: ("seal", d / "data.csv", "--label", "label", "--id", "id", "--key", _p(d), "--out", d / "x.json"),
     "is a public key"),
    ("expect-changes-not-integer", lambda d: (d / "bad.csv").write_text("id,label\nabc,dog\n"),
     lambda d: ("ledger", "append", d / "pipeline.ledger", "--step", "s", "--input", d / "data.csv", "--output",
                d / "data.csv", "--label", "label", "--id", "id", "--key", _k(d), "--expect-changes", d / "bad.csv"),
     "is not an integer"),
    ("expect-changes-no-id-column", lambda d: (d / "bad.csv").write_text("row,label\n1,dog\n"),
     lambda d: ("ledger", "append", d / "pipeline.ledger", "--step", "s", "--input", d / "data.csv", "--output",
                d / "data.csv", "--label", "label", "--id", "id", "--key", _k(d), "--expect-changes", d / "bad.csv"),
     "needs an 'id' column"),
    ("manifest-invalid-utf8", lambda d: (d / "bad.json").write_bytes(b"{\"a\":\"\xff\"}\n"),
     lambda d: ("verify", d / "data.csv", "--manifest", d / "bad.json", "--pubkey", _p(d)), "not valid UTF-8"),
    ("manifest-binary-garbage", lambda d: (d / "bad.json").write_bytes(os.urandom(64).replace(b"\xff", b"\x00")
                                                                       + b"\xff"),
     lambda d: ("verify", d / "data.csv", "--manifest", d / "bad.json", "--pubkey", _p(d)), "manifest"),
    ("manifest-empty", lambda d: (d / "bad.json").write_bytes(b""),
     lambda d: ("verify", d / "data.csv", "--manifest", d / "bad.json", "--pubkey", _p(d)), "empty file"),
    ("manifest-is-a-list", lambda d: (d / "bad.json").write_bytes(b"[1,2]\n"),
     lambda d: ("verify", d / "data.csv", "--manifest", d / "bad.json", "--pubkey", _p(d)), "not a JSON object"),
]


def _state(d) -> dict:
    """Every regular file under ``d`` with its SHA-256 (what must survive a refused command)."""
    out = {}
    for p in sorted(d.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(d))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.mark.parametrize("case", HOSTILE, ids=[c[0] for c in HOSTILE])
def test_hostile_input_is_one_line_exit_2_and_leaves_everything_valid(w, world, cli, case):
    _, prepare, command, text = case
    world_state = _state(world)
    prepare(w)
    before = _state(w)
    with _no_hang():
        r = cli(*command(w))
    assert r.exit_code == 2, r.stdout + r.stderr
    assert r.stdout == "" and r.stderr.startswith("Error: ") and r.stderr.count("\n") == 1, r.stderr
    assert text in r.stderr, r.stderr
    assert _state(w) == before  # nothing written, nothing replaced
    assert not (w / "target.ledger").exists() and not (w / "n.ledger.snapshots").exists()
    assert not list((w / "elsewhere").iterdir()) if (w / "elsewhere").exists() else True
    writes = command(w)[0] == "seal" or command(w)[:2] == ("ledger", "append")
    if writes and _state(w)["data.csv"] == world_state["data.csv"]:  # the earlier seal still verifies
        assert _verify(cli, w).exit_code == 0
    if writes and _state(w)["pipeline.ledger"] == world_state["pipeline.ledger"]:  # and so does the ledger
        assert _ledger_verify(cli, w).exit_code == 0


def test_hostile_list_is_long_enough():
    assert len(HOSTILE) >= 30


# -- writes: all or nothing ------------------------------------------------------------------
def test_failed_reseal_keeps_the_old_seal_valid(w, cli, monkeypatch):
    """The manifest's rename fails after the snapshot's: the old snapshot is put back."""
    old = _state(w)
    real = os.replace

    def failing(src, dst, *a, **k):
        if str(dst).endswith(".flipguard.json"):
            raise OSError(28, "No space left on device")
        return real(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", failing)
    _set_label(103, "dog")(w)
    r = cli("seal", w / "data.csv", "--label", "label", "--id", "id", "--key", _k(w), "--columns", "f1")
    monkeypatch.setattr(os, "replace", real)
    assert r.exit_code == 2 and "No space left on device" in r.stderr
    now = _state(w)
    assert {k: v for k, v in now.items() if k != "data.csv"} == {k: v for k, v in old.items() if k != "data.csv"}
    _set_label(103, "cat")(w)
    assert _verify(cli, w).exit_code == 0  # the old seal is intact


def test_refused_append_to_a_new_ledger_leaves_nothing(w, cli):
    r = cli("ledger", "append", w / "fresh.ledger", "--step", "s", "--input", w / "data.csv", "--output",
            w / "missing.csv", "--label", "label", "--id", "id", "--key", _k(w))
    assert r.exit_code == 2
    assert not (w / "fresh.ledger").exists() and not (w / "fresh.ledger.snapshots").exists()


def test_refused_append_to_a_broken_ledger_writes_no_snapshot(w, cli):
    store = w / "pipeline.ledger.snapshots"
    shutil.rmtree(store)
    _forge_entry(w)
    before = (w / "pipeline.ledger").read_bytes()
    r = cli("ledger", "append", w / "pipeline.ledger", "--step", "s", "--input", w / "data.csv", "--output",
            w / "data.csv", "--label", "label", "--id", "id", "--key", _k(w))
    assert r.exit_code == 2 and "fails verification, not appending" in r.stderr
    assert (w / "pipeline.ledger").read_bytes() == before and not store.exists()


def test_in_memory_seal_names_itself_and_verify_table_binds_the_name():
    from flipguard.integrity import verify_table

    key = generate_keypair()
    t = pa.table({"id": [1, 2], "y": ["a", "b"]})
    m, snap = seal_table(t, label="y", id="id", private_key=key, name="reviews", version=3)
    assert (m.name, m.version, m.purpose, m.label_type) == ("reviews", 3, "seal", "string")
    assert verify_table(t, m, key.public_key(), snapshot=snap, name="reviews").ok
    r = verify_table(t, m, key.public_key(), snapshot=snap, name="other")
    assert not r.ok and "seals dataset 'reviews', not 'other'" in r.findings[0]
