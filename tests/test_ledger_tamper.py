"""Red-team reproductions: relabelling by re-keying a row inside a declared step, tail truncation
of the ledger, type changes of sealed feature columns, and labels that differ only invisibly."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flipguard.integrity import (
    generate_keypair,
    ledger_append,
    seal_table,
    show_ledger,
    verify_ledger,
    verify_table,
    write_keypair,
)
from flipguard.integrity._ledger import rollback_check
from flipguard.integrity._stats import label_text, label_texts

KEY = generate_keypair()
PUB = KEY.public_key()


def _write(path: Path, rows: list[tuple]) -> Path:
    path.write_text("review_id,sentiment\n" + "".join(f"{i},{y}\n" for i, y in rows))
    return path


@pytest.fixture
def keys(tmp_path):
    return write_keypair(tmp_path / "keys")


# -- 1. a "label-preserving" step that adds rows -----------------------------------------
def _append(tmp_path, keys, out_rows, **kw):
    inp = _write(tmp_path / "in.csv", [(101, "positive"), (105, "positive")])
    out = _write(tmp_path / "out.csv", out_rows)
    return ledger_append(tmp_path / "p.ledger", step="clean", input=inp, output=out, label="sentiment",
                         id="review_id", private_key=keys.private, **kw)


def test_id_rename_with_new_label_breaks_label_preserving_declaration(tmp_path, keys):
    r = _append(tmp_path, keys, [(101, "positive"), (1105, "negative")], expect_label_changes=0)
    assert r.entry["changes"]["changed"] == 0 and r.entry["changes"]["added"] == 1
    assert not r.ok
    (f,) = r.findings
    assert "declared label-preserving" in f and "added 1 row(s)" in f and "id 1105 (negative)" in f
    assert "id 105 (positive) was removed and id 1105 (negative) added in its place" in f
    for rep in (verify_ledger(tmp_path / "p.ledger", keys.public), show_ledger(tmp_path / "p.ledger", keys.public)):
        assert not rep.ok and any("id 1105 (negative)" in x for x in rep.findings), rep.findings


def test_added_row_with_any_label_breaks_label_preserving_declaration(tmp_path, keys):
    r = _append(tmp_path, keys, [(101, "positive"), (105, "positive"), (107, "positive")],
                expect_label_changes=0)
    assert not r.ok and "id 107 (positive, not declared)" in r.findings[0]
    assert not verify_ledger(tmp_path / "p.ledger", keys.public).ok


def test_removed_rows_are_allowed_in_a_label_preserving_step(tmp_path, keys):
    r = _append(tmp_path, keys, [(101, "positive")], expect_label_changes=0)
    assert r.ok and r.entry["changes"]["removed"] == 1
    assert verify_ledger(tmp_path / "p.ledger", keys.public).ok
    assert show_ledger(tmp_path / "p.ledger", keys.public).ok


def test_expect_changes_file_must_list_added_rows(tmp_path, keys):
    dec = tmp_path / "dec.csv"
    dec.write_text("id,label\n101,negative\n")
    r = _append(tmp_path, keys, [(101, "negative"), (1105, "negative")], expect_changes=dec)
    assert not r.ok and any("id 1105 (negative)" in f and "not declared" in f for f in r.findings), r.findings
    assert not verify_ledger(tmp_path / "p.ledger", keys.public).ok
    # declared: the added row and its label are listed
    dec.write_text("id,label\n101,negative\n1105,negative\n")
    (tmp_path / "p.ledger").unlink()
    r = _append(tmp_path, keys, [(101, "negative"), (1105, "negative")], expect_changes=dec)
    assert r.ok, r.findings
    assert verify_ledger(tmp_path / "p.ledger", keys.public).ok
    # listed id, another label
    dec.write_text("id,label\n101,negative\n1105,positive\n")
    (tmp_path / "p.ledger").unlink()
    r = _append(tmp_path, keys, [(101, "negative"), (1105, "negative")], expect_changes=dec)
    assert not r.ok and "declared: positive" in r.findings[0]


def test_no_declaration_records_added_rows_without_a_finding(tmp_path, keys):
    r = _append(tmp_path, keys, [(101, "positive"), (1105, "negative")])
    assert r.ok and verify_ledger(tmp_path / "p.ledger", keys.public).ok


def test_cli_id_rename_is_exit_1_in_append_and_verify(tmp_path, keys, cli):
    inp = _write(tmp_path / "in.csv", [(101, "positive"), (105, "positive")])
    out = _write(tmp_path / "out.csv", [(101, "positive"), (1105, "negative")])
    r = cli("ledger", "append", tmp_path / "p.ledger", "--step", "clean", "--input", inp, "--output", out,
            "--label", "sentiment", "--id", "review_id", "--key", keys.private, "--expect-label-changes", "0")
    assert r.exit_code == 1 and "FINDING" in r.stdout and "1105" in r.stdout
    r = cli("ledger", "verify", tmp_path / "p.ledger", "--pubkey", keys.public)
    assert r.exit_code == 1 and "1105" in r.stdout


# -- 2. cutting the ledger's tail ----------------------------------------------------------
def test_truncation_is_only_detected_against_a_pinned_head(tmp_path, keys, cli):
    a = _write(tmp_path / "a.csv", [(1, "x"), (2, "y")])
    b = _write(tmp_path / "b.csv", [(1, "x"), (2, "x")])
    ledger = tmp_path / "p.ledger"
    r0 = ledger_append(ledger, step="s0", input=a, output=a, label="sentiment", id="review_id",
                       private_key=keys.private, expect_label_changes=0)
    r1 = ledger_append(ledger, step="s1", input=a, output=b, label="sentiment", id="review_id",
                       private_key=keys.private)
    r = cli("ledger", "verify", ledger, "--pubkey", keys.public)
    assert r.exit_code == 0
    assert f"head: {r1.hash} (entry #1, 2 entries)" in r.stdout
    assert "tail truncation is only detected with --head" in r.stderr
    ledger.write_bytes(ledger.read_bytes().splitlines(keepends=True)[0])
    r = cli("ledger", "verify", ledger, "--pubkey", keys.public)
    assert r.exit_code == 0 and f"head: {r0.hash} (entry #0, 1 entries)" in r.stdout
    assert "tail truncation is only detected with --head" in r.stderr
    r = cli("ledger", "verify", ledger, "--pubkey", keys.public, "--head", r1.hash)
    assert r.exit_code == 1 and "removed from the end" in r.stdout
    assert "tail truncation" not in r.stderr
    help_text = cli("ledger", "verify", "--help").stdout
    assert "--head" in help_text and "cut from the end" in " ".join(help_text.split())


def test_rollback_check_with_pinned_head_catches_truncation(tmp_path, keys):
    a = _write(tmp_path / "a.csv", [(1, "x"), (2, "y")])
    b = _write(tmp_path / "b.csv", [(1, "x"), (2, "x")])
    ledger = tmp_path / "p.ledger"
    ledger_append(ledger, step="s0", input=a, output=a, label="sentiment", id="review_id",
                  private_key=keys.private, input_name="data", output_name="data")
    r1 = ledger_append(ledger, step="s1", input=a, output=b, label="sentiment", id="review_id",
                       private_key=keys.private, input_name="data", output_name="data")
    m = json.loads(ledger.read_bytes().splitlines()[0])["output"]["manifest"]
    from flipguard.integrity import load_public_key
    from flipguard.integrity._manifest import Manifest

    pub = load_public_key(keys.public)
    ledger.write_bytes(ledger.read_bytes().splitlines(keepends=True)[0])
    findings, notes = rollback_check(ledger, Manifest(doc=m), pub, None)
    assert findings == [] and any("--head" in n for n in notes)
    findings, _ = rollback_check(ledger, Manifest(doc=m), pub, None, head=r1.hash)
    assert findings and "removed from the end" in findings[0]


# -- 3. sealed feature columns keep their type ---------------------------------------------
CASES = {
    "int -> zero-padded text": ([1, 2], pa.array(["01", "2"]), "integer", "string"),
    "float -> text": ([1.0, 2.0], pa.array(["1", "2"]), "float64", "string"),
    "int -> float": ([1, 2], pa.array([1.0, 2.0]), "integer", "float64"),
    "int -> bool": ([1, 0], pa.array([True, False]), "integer", "boolean"),
    "float64 -> float32": ([1.5, 2.0], pa.array([1.5, 2.0], pa.float32()), "float64", "float32"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_sealed_column_type_change_is_a_finding(case):
    sealed, current, ta, tb = CASES[case]
    t = pa.table({"id": [1, 2], "y": ["a", "b"], "z": sealed})
    m, snap = seal_table(t, label="y", id="id", private_key=KEY, columns=["z"])
    r = verify_table(t.set_column(2, "z", current), m, PUB, snapshot=snap)
    assert not r.ok
    c = r.columns["z"]
    assert c["type"] == {"sealed": ta, "current": tb}
    assert c["row"] == [0, 1] and c["before"] == list(t.column("z").to_pylist())
    assert any("sealed column 'z'" in f for f in r.findings)


@pytest.mark.parametrize("current", [pa.array([1, 2], pa.int32()), pa.array([1, 2], pa.uint8())])
def test_sealed_column_narrowed_integer_is_not_a_change(current):
    t = pa.table({"id": [1, 2], "y": ["a", "b"], "z": [1, 2]})
    m, snap = seal_table(t, label="y", id="id", private_key=KEY, columns=["z"])
    assert verify_table(t.set_column(2, "z", current), m, PUB, snapshot=snap).ok


def test_sealed_column_string_storage_is_not_a_change():
    t = pa.table({"id": [1, 2], "y": ["a", "b"], "z": ["u", "v"]})
    m, snap = seal_table(t, label="y", id="id", private_key=KEY, columns=["z"])
    for cur in (pa.array(["u", "v"], pa.large_string()), pa.array(["u", "v"]).dictionary_encode()):
        assert verify_table(t.set_column(2, "z", cur), m, PUB, snapshot=snap).ok
    r = verify_table(t.set_column(2, "z", pa.array(["u", "w"], pa.large_string())), m, PUB, snapshot=snap)
    assert not r.ok and r.columns["z"]["row"] == [1] and "type" not in r.columns["z"]


def test_sealed_column_wide_integers_compare_exactly():
    big = 2**63 - 1
    t = pa.table({"id": [1, 2], "y": ["a", "b"], "z": pa.array([big, 5], pa.uint64())})
    m, snap = seal_table(t, label="y", id="id", private_key=KEY, columns=["z"])
    r = verify_table(t.set_column(2, "z", pa.array([big, -5], pa.int64())), m, PUB, snapshot=snap)
    assert not r.ok and r.columns["z"]["row"] == [1]
    r = verify_table(t.set_column(2, "z", pa.array([big - 1, 5], pa.int64())), m, PUB, snapshot=snap)
    assert not r.ok and r.columns["z"]["row"] == [0]


def test_cli_parquet_column_rewritten_as_text_is_exit_1(tmp_path, cli, keys):
    (tmp_path / "F").mkdir()
    data = tmp_path / "F" / "d.parquet"
    pq.write_table(pa.table({"id": [1, 2], "y": ["a", "b"], "z": [1, 2]}), data)
    r = cli("seal", data, "--label", "y", "--id", "id", "--columns", "z", "--key", keys.private)
    assert r.exit_code == 0, r.stderr
    pq.write_table(pa.table({"id": [1, 2], "y": ["a", "b"], "z": ["01", "2"]}), data)
    r = cli("verify", data, "--pubkey", keys.public)
    assert r.exit_code == 1 and "sealed column 'z' changed type: sealed as integer, now string" in r.stdout
    r = cli("verify", data, "--pubkey", keys.public, "--json")
    assert json.loads(r.stdout)["columns"]["z"]["type"] == {"sealed": "integer", "current": "string"}


# -- 4. labels that differ invisibly ---------------------------------------------------------
@pytest.mark.parametrize("label, shown", [
    ("dog\u200b", "'dog\\u200b'"),
    (unicodedata.normalize("NFD", "caf\u00e9"), "'cafe\\u0301'"),
    ("d\u200dog", "'d\\u200dog'"),
    ("dog\x07", "'dog\\x07'"),
    ("\u00a0dog", "'\\xa0dog'"),
    ("dog ", "'dog '"),
    ("\ufeffdog", "'\\ufeffdog'"),
    ("do\u0261", "do\u0261"),  # a printable letter in NFC is itself
    ("caf\u00e9", "caf\u00e9"),
    ("\u732b", "\u732b"),
    ("dog", "dog"),
    ("", "<empty>"),
    (None, "<missing>"),
])
def test_label_text_escapes_invisible_differences(label, shown):
    assert label_text(label) == shown
    assert label_texts([label, label, "dog"]) == [shown, shown, "dog"]


def test_zero_width_label_change_is_visible_in_diff(tmp_path, cli):
    a = _write(tmp_path / "a.csv", [(1, "dog"), (2, "cat")])
    b = _write(tmp_path / "b.csv", [(1, "dog\u200b"), (2, "cat")])
    r = cli("diff", a, b, "--label", "sentiment", "--id", "review_id")
    assert r.exit_code == 1
    assert "1 dog -> 'dog\\u200b'" in r.stdout
