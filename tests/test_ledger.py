"""Provenance ledger: chained, signed entries; removed/edited/reordered entries, rollbacks and
compromised label-preserving steps are all caught."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from flipguard.exceptions import IntegrityError
from flipguard.integrity import ledger_append, show_ledger, verify_ledger, write_keypair


def _csv(path: Path, labels: list[str], ids=None) -> Path:
    ids = list(range(1, len(labels) + 1)) if ids is None else ids
    pacsv.write_csv(pa.table({"rid": ids, "f": [0.5] * len(labels), "y": labels}), path)
    return path


@pytest.fixture
def setup(tmp_path):
    kp = write_keypair(tmp_path / "keys")
    raw = _csv(tmp_path / "raw.csv", ["a", "b", "a", "b", "a", "b"])
    clean = _csv(tmp_path / "clean.csv", ["a", "b", "a", "b", "a", "b"], ids=[6, 5, 4, 3, 2, 1][::-1])
    train = _csv(tmp_path / "train.csv", ["a", "b", "a", "a"], ids=[1, 2, 3, 4])
    return tmp_path, kp, raw, clean, train


def _two_steps(tmp_path, kp, raw, clean, train):
    ledger = tmp_path / "p.ledger"
    r0 = ledger_append(ledger, step="clean", input=raw, output=clean, label="y", id="rid",
                       private_key=kp.private, expect_label_changes=0)
    r1 = ledger_append(ledger, step="split", input=clean, output=train, label="y", id="rid",
                       private_key=kp.private)
    return ledger, r0, r1


def test_append_verify_show(setup):
    tmp_path, kp, *_ = setup
    ledger, r0, r1 = _two_steps(*setup)
    assert r0.ok and r1.ok and (r0.seq, r1.seq) == (0, 1)
    lines = ledger.read_bytes().splitlines()
    e0, e1 = json.loads(lines[0]), json.loads(lines[1])
    assert e0["prev"] == "0" * 64
    import hashlib

    assert e1["prev"] == hashlib.sha256(lines[0]).hexdigest() == r0.hash
    assert e1["changes"] == {"changed": 1, "added": 0, "removed": 2, "duplicated": 0,
                             "transitions": [{"from": "b", "to": "a", "count": 1}]}
    assert e0["input"]["manifest"]["rows"] == 6 and e0["user"] and e0["host"]
    rep = verify_ledger(ledger, kp.public)
    assert rep.ok and rep.findings == [] and rep.head == r1.hash
    show = show_ledger(ledger, kp.public)
    assert show.ok
    rec = show.entries[1]["recomputed"]
    assert rec["changed"] == {"row": [3], "id": [4], "input": ["b"], "output": ["a"]}
    assert rec["removed"]["id"] == [5, 6]
    assert len(list((tmp_path / "p.ledger.snapshots").iterdir())) == 2  # raw == clean labels: one snapshot


def test_script_hash_recorded(setup):
    tmp_path, kp, raw, clean, _ = setup
    script = tmp_path / "clean.py"
    script.write_text("print('clean')\n")
    r = ledger_append(tmp_path / "l", step="clean", input=raw, output=clean, label="y", id="rid",
                      private_key=kp.private, script=script)
    import hashlib

    assert r.entry["script"] == {"path": str(script), "sha256": hashlib.sha256(script.read_bytes()).hexdigest()}


def test_label_preserving_step_that_changes_labels_is_caught(setup, cli):
    """A compromised preprocessing script: declared to keep labels, it flipped one."""
    tmp_path, kp, raw, _, _ = setup
    bad = _csv(tmp_path / "bad.csv", ["a", "b", "a", "b", "b", "b"])
    ledger = tmp_path / "p.ledger"
    r = cli("ledger", "append", ledger, "--step", "normalise", "--input", raw, "--output", bad, "--label", "y",
            "--id", "rid", "--key", kp.private, "--expect-label-changes", "0")
    assert r.exit_code == 1
    finding = ("entry #0: step 'normalise' was declared label-preserving (0 changes) but changed 1 label(s) "
               "(1 a -> b): check the script that ran it")
    assert f"FINDING: {finding}" in r.stdout
    r = cli("ledger", "verify", ledger, "--pubkey", kp.public)
    assert r.exit_code == 1 and f"  - {finding}" in r.stdout
    r = cli("ledger", "show", ledger, "--pubkey", kp.public)
    assert r.exit_code == 1 and "changed ids: 5 (a->b)" in r.stdout and finding in r.stdout
    j = json.loads(cli("ledger", "show", ledger, "--json").stdout)
    assert j["findings"] == [finding] and j["entries"][0]["recomputed"]["n_changed"] == 1


def _rewrite(ledger: Path, lines: list[bytes]) -> None:
    ledger.write_bytes(b"".join(line + b"\n" for line in lines))


def test_labels_changed_between_two_steps_are_caught(setup, cli):
    """The file a step wrote and the next step read was edited in between: append and verify both say so."""
    tmp_path, kp, raw, clean, train = setup
    ledger = tmp_path / "p.ledger"
    ledger_append(ledger, step="clean", input=raw, output=clean, label="y", id="rid", private_key=kp.private)
    # the same labels in another row order and with another feature value: not a finding
    pacsv.write_csv(pa.table({"rid": [6, 5, 4, 3, 2, 1], "f": [9.0] * 6, "y": ["b", "a", "b", "a", "b", "a"]}),
                    clean)
    r = ledger_append(ledger, step="split", input=clean, output=train, label="y", id="rid", private_key=kp.private)
    assert r.findings == []
    copy = _csv(tmp_path / "train2.csv", ["a", "b", "a", "a"])
    r = ledger_append(ledger, step="copy", input=train, output=copy, label="y", id="rid", private_key=kp.private)
    assert r.findings == []
    _csv(train, ["a", "a", "a", "a", "b"], ids=[1, 2, 3, 4, 7])  # id 2 flipped, id 7 slipped in
    r = ledger_append(ledger, step="fit", input=train, output=train, label="y", id="rid", private_key=kp.private,
                      expect_label_changes=0)
    assert len(r.findings) == 1
    assert r.findings[0].startswith("entry #3 ('fit'): its input 'train.csv' is not what entry #1 ('split') sealed "
                                    "as its output: 1 label(s) changed (1 b -> a); 1 row(s) added")
    assert "(e.g. id 2: b -> a)" in r.findings[0]
    rep = verify_ledger(ledger, kp.public)
    assert rep.findings == r.findings
    res = cli("ledger", "verify", ledger, "--pubkey", kp.public)
    assert res.exit_code == 1 and "is not what entry #1 ('split') sealed as its output" in res.stdout
    assert show_ledger(ledger, kp.public).findings == r.findings


def test_show_names_an_expect_changes_declaration(setup, cli, monkeypatch):
    from flipguard.cli._common import console

    monkeypatch.setattr(console, "width", 200)  # one line per table row
    tmp_path, kp, raw, clean, _ = setup
    (tmp_path / "allowed.csv").write_text("rid,y\n2,a\n4,a\n")
    ledger = tmp_path / "p.ledger"
    ledger_append(ledger, step="fix", input=raw, output=clean, label="y", id="rid", private_key=kp.private,
                  expect_changes=tmp_path / "allowed.csv")
    res = cli("ledger", "show", ledger, "--pubkey", kp.public)
    assert res.exit_code == 0 and "2 id(s) in allowed.csv" in res.stdout


def test_removed_entry_is_caught(setup, cli):
    _, kp, _, _, train = setup
    ledger, *_ = _two_steps(*setup)
    ledger_append(ledger, step="third", input=train, output=train, label="y", id="rid", private_key=kp.private)
    lines = ledger.read_bytes().splitlines()
    _rewrite(ledger, [lines[0], lines[2]])
    r = cli("ledger", "verify", ledger, "--pubkey", kp.public)
    assert r.exit_code == 1
    assert ("  - entry #1 ('third') carries sequence number 2 at position 1: entries were removed, inserted or "
            "reordered") in r.stdout
    assert ("  - entry #1 ('third'): the hash link to the previous entry is broken (an entry before it was "
            "removed, edited or reordered)") in r.stdout
    _rewrite(ledger, lines[1:])  # the first entry removed
    assert cli("ledger", "verify", ledger, "--pubkey", kp.public).exit_code == 1


def test_edited_entry_is_caught(setup, cli):
    _, kp, *_ = setup
    ledger, *_ = _two_steps(*setup)
    lines = ledger.read_bytes().splitlines()
    doc = json.loads(lines[1])
    doc["changes"]["changed"] = 0  # hide the label change
    doc["changes"]["transitions"] = []
    lines[1] = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    _rewrite(ledger, lines)
    r = cli("ledger", "verify", ledger, "--pubkey", kp.public)
    assert r.exit_code == 1
    assert r.stdout.splitlines()[1] == ("  - entry #1 ('split')'s signature does not match its contents: it was "
                                        "modified after signing")
    # also without a key, show recomputes from the snapshots and sees the lie
    r = cli("ledger", "show", ledger)
    assert r.exit_code == 1
    assert "the snapshots show 1 changed, 0 added, 2 removed rows but the entry recorded 0, 0, 2" in r.stdout


def test_a_reformatted_entry_is_a_finding_not_unreadable_input(setup, cli, tmp_path):
    """An editor or ``jq`` re-spacing an entry (``"step": "split"``) edited it: exit 1 with the entry
    named, as for any other edit; it used to be exit 2, 'unusable input', which CI routes elsewhere.
    Appending to it is still refused."""
    _, kp, raw, clean, train = setup
    ledger, *_ = _two_steps(*setup)
    lines = ledger.read_bytes().splitlines()
    for last in (True, False):  # the last entry has no hash link after it: only canonical form tells
        edited = list(lines)
        i = 1 if last else 0
        edited[i] = json.dumps(json.loads(edited[i]), sort_keys=True).encode()  # ", " and ": "
        _rewrite(ledger, edited)
        for command in ("verify", "show"):
            r = cli("ledger", command, ledger, "--pubkey", kp.public)
            assert r.exit_code == 1, (command, r.stderr)
            assert (f"entry #{i} ('{'split' if last else 'clean'}'): not in canonical form (the line was edited "
                    "or re-formatted after it was written)") in r.stdout
        with pytest.raises(IntegrityError, match="fails verification, not appending: entry #"):
            ledger_append(ledger, step="more", input=train, output=train, label="y", id="rid",
                          private_key=kp.private)
    _rewrite(ledger, lines)
    assert verify_ledger(ledger, kp.public).ok


def test_reordered_entries_are_caught(setup, cli):
    _, kp, *_ = setup
    ledger, *_ = _two_steps(*setup)
    lines = ledger.read_bytes().splitlines()
    _rewrite(ledger, lines[::-1])
    r = cli("ledger", "verify", ledger, "--pubkey", kp.public, "--json")
    assert r.exit_code == 1
    findings = json.loads(r.stdout)["findings"]
    assert any("carries sequence number 1 at position 0" in f for f in findings)
    assert any("hash link to the previous entry is broken" in f for f in findings)


def test_truncated_tail_needs_the_head_hash(setup, cli):
    _, kp, *_ = setup
    ledger, r0, r1 = _two_steps(*setup)
    ledger.write_bytes(ledger.read_bytes().splitlines(keepends=True)[0])
    assert cli("ledger", "verify", ledger, "--pubkey", kp.public).exit_code == 0  # a valid shorter chain
    r = cli("ledger", "verify", ledger, "--pubkey", kp.public, "--head", r1.hash[:16])
    assert r.exit_code == 1
    assert (f"  - no entry has head hash {r1.hash[:12]}...: entries were removed from the end of the ledger "
            "(or it is another ledger)") in r.stdout
    assert cli("ledger", "verify", ledger, "--pubkey", kp.public, "--head", r0.hash).exit_code == 0


def test_partial_last_line_and_garbage_are_caught(setup, cli):
    tmp_path, kp, *_ = setup
    ledger, *_ = _two_steps(*setup)
    data = ledger.read_bytes()
    ledger.write_bytes(data[:-40])
    r = cli("ledger", "verify", ledger, "--pubkey", kp.public)
    assert r.exit_code == 1 and "the last line is incomplete" in r.stdout
    with pytest.raises(IntegrityError, match="fails verification, not appending"):
        ledger_append(ledger, step="x", input=tmp_path / "raw.csv", output=tmp_path / "raw.csv", label="y",
                      id="rid", private_key=kp.private)
    assert ledger.read_bytes() == data[:-40]  # nothing appended to a broken ledger


def test_wrong_key_is_caught(setup, cli, tmp_path):
    _, kp, *_ = setup
    ledger, *_ = _two_steps(*setup)
    other = write_keypair(tmp_path / "other")
    r = cli("ledger", "verify", ledger, "--pubkey", other.public)
    assert r.exit_code == 1 and f"was signed by key {kp.key_id}, not by the public key given ({other.key_id})" \
        in r.stdout
    with pytest.raises(IntegrityError, match="fails verification"):
        ledger_append(ledger, step="x", input=tmp_path / "raw.csv", output=tmp_path / "raw.csv", label="y",
                      id="rid", private_key=other.private)


def test_missing_snapshot_is_caught(setup, cli):
    tmp_path, kp, *_ = setup
    ledger, *_ = _two_steps(*setup)
    victim = next((tmp_path / "p.ledger.snapshots").iterdir())
    victim.unlink()
    assert cli("ledger", "verify", ledger, "--pubkey", kp.public).exit_code == 1
    r = cli("ledger", "show", ledger, "--pubkey", kp.public)
    assert r.exit_code == 1 and f"snapshot {victim} is missing" in r.stdout


def test_rollback_of_data_and_manifest_is_caught(tmp_path, cli):
    """The attacker restores an old data file together with its (genuine, older) seal."""
    kp = write_keypair(tmp_path / "keys")
    data = _csv(tmp_path / "data.csv", ["a", "a", "b", "b"])
    old_manifest = tmp_path / "old.json"
    assert cli("seal", data, "--label", "y", "--id", "rid", "--key", kp.private, "--out", old_manifest).exit_code == 0
    raw = _csv(tmp_path / "raw.csv", ["a", "a", "b", "b"])
    _csv(data, ["a", "b", "b", "b"])  # the relabelling step (declared: 1 change) rewrites data.csv
    ledger = tmp_path / "p.ledger"
    assert cli("ledger", "append", ledger, "--step", "relabel", "--input", raw, "--output", data, "--label", "y",
               "--id", "rid", "--key", kp.private, "--expect-label-changes", "1").exit_code == 0
    new_manifest = tmp_path / "new.json"
    assert cli("seal", data, "--label", "y", "--id", "rid", "--key", kp.private, "--out", new_manifest).exit_code == 0
    r = cli("ledger", "verify", ledger, "--pubkey", kp.public, "--manifest", new_manifest)
    assert r.exit_code == 0 and "match the ledger's latest seal" in r.stdout
    r = cli("ledger", "verify", ledger, "--pubkey", kp.public, "--manifest", old_manifest)
    assert r.exit_code == 1
    assert "  - rollback: the seal of 'data.csv' (version 1, sealed " in r.stdout
    assert "is older than the ledger's latest seal of it (entry #0 'relabel', output" in r.stdout


def test_verify_with_a_pinned_ledger_head_catches_a_rollback_hidden_by_cutting_the_ledger(tmp_path, cli):
    """The attacker restores old data and its seal *and* cuts the ledger's last entry: the shorter
    chain verifies and vouches for the old seal, unless the head recorded earlier is given."""
    from flipguard.integrity import verify_ledger

    kp = write_keypair(tmp_path / "keys")
    raw = _csv(tmp_path / "raw.csv", ["a", "a", "b", "b"])
    data = _csv(tmp_path / "data.csv", ["a", "a", "b", "b"])
    ledger = tmp_path / "p.ledger"
    step = ("--label", "y", "--id", "rid", "--key", kp.private)
    assert cli("ledger", "append", ledger, "--step", "ingest", "--input", raw, "--output", data, *step).exit_code == 0
    old_manifest = tmp_path / "old.json"
    assert cli("seal", data, "--label", "y", "--id", "rid", "--key", kp.private, "--out", old_manifest).exit_code == 0
    _csv(data, ["a", "b", "b", "b"])
    assert cli("ledger", "append", ledger, "--step", "relabel", "--input", raw, "--output", data, *step,
               "--expect-label-changes", "1").exit_code == 0
    head = verify_ledger(ledger, kp.public).head
    _csv(data, ["a", "a", "b", "b"])  # the rollback, and the evidence cut off
    ledger.write_bytes(ledger.read_bytes().splitlines(keepends=True)[0])
    args = ("verify", data, "--manifest", old_manifest, "--pubkey", kp.public, "--ledger", ledger)
    quiet = cli(*args)
    assert quiet.exit_code == 0 and "only detected with a head recorded earlier" in quiet.stdout + quiet.stderr
    pinned = cli(*args, "--ledger-head", head)
    assert pinned.exit_code == 1 and "removed from the end" in pinned.stdout, pinned.stdout
    assert cli("verify", data, "--manifest", old_manifest, "--pubkey", kp.public,
               "--ledger-head", head).exit_code == 2  # --ledger-head without --ledger


def _append_worker(args):
    ledger, key, data, i = args
    ledger_append(ledger, step=f"w{i}", input=data, output=data, label="y", id="rid", private_key=key)


def test_concurrent_appenders_keep_a_valid_chain(setup):
    tmp_path, kp, raw, *_ = setup
    ledger = tmp_path / "c.ledger"
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(4) as pool:
        pool.map(_append_worker, [(ledger, kp.private, raw, i) for i in range(12)])
    rep = verify_ledger(ledger, kp.public)
    assert rep.ok, rep.findings
    assert sorted(e["step"] for e in rep.entries) == sorted(f"w{i}" for i in range(12))
    assert [e["seq"] for e in rep.entries] == list(range(12))


def test_ledger_errors_are_one_line(tmp_path, cli):
    kp = write_keypair(tmp_path / "keys")
    r = cli("ledger", "verify", tmp_path / "nope.ledger", "--pubkey", kp.public)
    assert r.exit_code == 2 and r.stderr == f"Error: ledger {tmp_path / 'nope.ledger'}: no such file\n"
    data = _csv(tmp_path / "d.csv", ["a", "b"])
    r = cli("ledger", "append", tmp_path / "l", "--step", "s", "--input", data, "--output", data, "--label", "y",
            "--id", "rid", "--key", kp.private, "--script", tmp_path / "missing.py")
    assert r.exit_code == 2 and r.stderr == f"Error: script {tmp_path / 'missing.py'}: no such file\n"
    assert not (tmp_path / "l").exists()
