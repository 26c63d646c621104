"""Trusted sheets (``--trusted FILE``, ``load_trusted``, ``clean_dataset(trusted=...)``): one rule
for reading and matching verified labels in every command.  Duplicated ids count once (with a
note), an id with two labels, a missing label and an id the data lacks are one-line errors (exit 2,
nothing written), and ids are read in the data's id type (text exactly as written)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from flipguard.data import load
from flipguard.detection import load_trusted
from flipguard.detection._io import match_trusted_ids
from flipguard.exceptions import DataError
from flipguard.mitigation import clean_dataset

LABEL = "diagnosis"
# Rows whose verified label differs from the one in the data (the data is flipped there).
FLIPPED = [3, 10, 17, 40, 77]


@pytest.fixture
def poisoned(tmp_path, breast_cancer_frame):
    """breast cancer as CSV (ids 1000..) with the labels of FLIPPED rows flipped; the true labels."""
    truth = np.asarray(breast_cancer_frame.column(LABEL).to_pylist(), dtype=object)
    observed = truth.copy()
    observed[FLIPPED] = np.where(truth[FLIPPED] == "benign", "malignant", "benign")
    path = tmp_path / "data.csv"
    pacsv.write_csv(breast_cancer_frame.set_column(breast_cancer_frame.schema.get_field_index(LABEL), LABEL,
                                                   pa.array(observed.tolist())), path)
    return path, truth


def _sheet(tmp_path, lines: list[str], name: str = "sheet.csv"):
    path = tmp_path / name
    path.write_text("\n".join(["patient_id,diagnosis", *lines]) + "\n")
    return path


def _sheet_rows(truth, rows) -> list[str]:
    return [f"{1000 + i},{truth[i]}" for i in rows]


def _one_line_error(r) -> str:
    assert r.exit_code == 2 and r.stdout == "" and r.stderr.count("\n") == 1, r
    assert "Traceback" not in r.stderr
    return r.stderr


REVIEWED = sorted(set(range(0, 60, 2)) | set(FLIPPED))  # 33 distinct rows, all 5 flipped rows among them


def test_exact_duplicate_rows_count_once_with_a_note(cli, poisoned, tmp_path):
    path, truth = poisoned
    once = _sheet(tmp_path, _sheet_rows(truth, REVIEWED), "once.csv")
    twice = _sheet(tmp_path, _sheet_rows(truth, REVIEWED) + _sheet_rows(truth, REVIEWED[:2]), "twice.csv")
    args = ("audit", path, "--label", LABEL, "--id", "patient_id", "--json", "--seed", "0")
    a = cli(*args, "--trusted", once)
    b = cli(*args, "--trusted", twice)
    assert a.exit_code == b.exit_code == 0, (a.stderr, b.stderr)
    a, b_out = json.loads(a.stdout), json.loads(b.stdout)
    note = f"{twice}: 2 duplicated trusted row(s) (same id and label) were counted once"
    assert note in b_out["warnings"] and not any("duplicated" in w for w in a["warnings"])
    assert f"warning: {note}" in b.stderr
    assert b_out["details"]["trusted_rows_in_data"] == len(REVIEWED) == a["details"]["trusted_rows_in_data"]
    assert b_out["verdict"]["verified_estimate"]["verified"] == len(REVIEWED)
    assert [r["flagged"] for r in a["rows"]] == [r["flagged"] for r in b_out["rows"]]

    out = tmp_path / "clean.csv"
    r = cli("clean", path, "--label", LABEL, "--id", "patient_id", "--trusted", twice, "--out", out,
            "--json", "--seed", "0")
    assert r.exit_code == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["warnings"][0] == note
    assert res["n_verified"] == len(FLIPPED)  # each flipped row corrected once


def test_an_id_with_two_labels_is_refused_by_audit_and_clean(cli, poisoned, tmp_path):
    path, truth = poisoned
    other = "benign" if truth[4] == "malignant" else "malignant"
    sheet = _sheet(tmp_path, _sheet_rows(truth, REVIEWED) + [f"1004,{other}"])
    expected = (f"Error: {sheet}: 1 id(s) have two different verified labels: "
                f"1004 ({', '.join(sorted([truth[4], other]))}); keep one label per id\n")
    out, log = tmp_path / "clean.csv", tmp_path / "log.csv"
    assert _one_line_error(cli("audit", path, "--label", LABEL, "--id", "patient_id", "--trusted", sheet,
                               "--out", tmp_path / "rows.csv", "--format", "csv")) == expected
    for mode in ("drop", "relabel"):
        assert _one_line_error(cli("clean", path, "--label", LABEL, "--id", "patient_id", "--trusted", sheet,
                                   "--mode", mode, "--out", out, "--log", log)) == expected
    assert not out.exists() and not log.exists() and not (tmp_path / "rows.csv").exists()


def test_an_empty_label_cell_is_the_same_error_in_audit_and_clean(cli, poisoned, tmp_path):
    path, truth = poisoned
    sheet = _sheet(tmp_path, _sheet_rows(truth, [0, 1]) + ["1002,"])
    before = path.read_bytes()
    out = tmp_path / "clean.csv"
    expected = f"Error: {sheet}: 1 trusted row(s) have no label\n"
    assert _one_line_error(cli("audit", path, "--label", LABEL, "--id", "patient_id", "--trusted", sheet)) \
        == expected
    assert _one_line_error(cli("clean", path, "--label", LABEL, "--id", "patient_id", "--trusted", sheet,
                               "--out", out)) == expected
    assert not out.exists() and path.read_bytes() == before


def test_unknown_ids_are_the_same_error_in_audit_and_clean(cli, poisoned, tmp_path):
    path, truth = poisoned
    sheet = _sheet(tmp_path, _sheet_rows(truth, [0, 1, 2]) + ["99001,benign", "99002,benign"])
    expected = (f"Error: {sheet}: 2 trusted row(s) have ids that are not in {path} (99001, 99002) and the "
                "file has no feature columns to use them as extra examples: give their features, or only "
                "rows of the data\n")
    out = tmp_path / "clean.csv"
    assert _one_line_error(cli("audit", path, "--label", LABEL, "--id", "patient_id", "--trusted", sheet)) \
        == expected
    assert _one_line_error(cli("clean", path, "--label", LABEL, "--id", "patient_id", "--trusted", sheet,
                               "--out", out, "--json")) == expected
    assert not out.exists()


def test_zero_padded_text_ids_match_as_written(cli, breast_cancer_frame, tmp_path):
    """Parquet data with text ids "00040": a CSV sheet's "00040" is that row, "40" is not."""
    n = breast_cancer_frame.num_rows
    table = breast_cancer_frame.set_column(0, "patient_id", pa.array([f"{i:05d}" for i in range(n)]))
    pq.write_table(table, tmp_path / "data.parquet")
    truth = table.column(LABEL).to_pylist()
    rows = list(range(40, 100, 3))
    good = _sheet(tmp_path, [f"{i:05d},{truth[i]}" for i in rows], "good.csv")
    r = cli("audit", tmp_path / "data.parquet", "--label", LABEL, "--id", "patient_id", "--trusted", good,
            "--json", "--seed", "0")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["details"]["trusted_rows_in_data"] == len(rows)
    bare = _sheet(tmp_path, [f"{i},{truth[i]}" for i in rows], "bare.csv")
    err = _one_line_error(cli("clean", tmp_path / "data.parquet", "--label", LABEL, "--id", "patient_id",
                              "--trusted", bare, "--out", tmp_path / "o.parquet"))
    assert err.startswith(f"Error: {bare}: {len(rows)} trusted row(s) have ids that are not in "
                          f"{tmp_path / 'data.parquet'} (40, 43, 46, 49, 52, ...)")


def test_integer_ids_match_zero_padded_and_float_text(poisoned, tmp_path):
    """Integer data ids: "01003", "1003.0", "+1003" and " 1003 " all name id 1003 (the integrity
    layer's rule; spaces around a number are ignored, as the data's CSV reader ignores them)."""
    path, truth = poisoned
    ds = load(path, label=LABEL, id="patient_id")
    sheet = _sheet(tmp_path, [f"01003,{truth[3]}", f"1005.0,{truth[5]}", f"+1007,{truth[7]}",
                              f" 1009 ,{truth[9]}"])
    t = load_trusted(sheet, ds)
    assert t.rows.tolist() == [3, 5, 7, 9]
    assert ds.classes[t.y].tolist() == [truth[3], truth[5], truth[7], truth[9]]
    assert np.array_equal(t.X, ds.X[[3, 5, 7, 9]])
    # One non-integer id keeps every id text: none matches, named as written.
    mixed = _sheet(tmp_path, [f"01003,{truth[3]}", f"P7,{truth[7]}"], "mixed.csv")
    with pytest.raises(DataError, match=r"2 trusted row\(s\) have ids that are not in .* \(01003, P7\)"):
        load_trusted(mixed, ds)


def test_load_trusted_api_notes_and_warnings(poisoned, tmp_path):
    path, truth = poisoned
    ds = load(path, label=LABEL, id="patient_id")
    sheet = _sheet(tmp_path, _sheet_rows(truth, [5, 1, 5, 2, 1, 5]))
    notes: list[str] = []
    t = load_trusted(sheet, ds, notes=notes)
    assert t.rows.tolist() == [5, 1, 2]  # first occurrences, in the sheet's order
    assert notes == [f"{sheet}: 3 duplicated trusted row(s) (same id and label) were counted once"]
    with pytest.warns(UserWarning, match="3 duplicated trusted row"):
        load_trusted(sheet, ds)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_trusted(_sheet(tmp_path, _sheet_rows(truth, [5, 1]), "clean.csv"), ds)  # no note, no warning
    # A sheet with the data's columns: duplicated ids of extra rows count once too.
    full = pa.table({"patient_id": [90001, 90001, 1004],
                     **{c: [1.0, 1.0, 2.0] for c in ds.table.column_names if c not in ("patient_id", LABEL)},
                     LABEL: ["benign", "benign", truth[4]]})
    t = load_trusted(full, ds, notes=notes)
    assert t.rows.tolist() == [-1, 4] and t.X.shape == (2, ds.n_features)


def test_match_trusted_ids_exact():
    ds = load(pa.table({"id": ["a", "b", "c", "d"], "x": [0.0, 1.0, 2.0, 3.0], "y": [0, 1, 0, 1]}),
              label="y", id="id")
    notes: list[str] = []
    kept, rows = match_trusted_ids(pa.array(["c", "a", "c", "z"]), np.array([0, 0, 0, 1]), ds, where="s",
                                   extras=True, notes=notes)
    assert kept.tolist() == [0, 1, 3] and rows.tolist() == [2, 0, -1]
    assert notes == ["s: 1 duplicated trusted row(s) (same id and label) were counted once"]
    with pytest.raises(DataError, match=r"^s: 2 id\(s\) have two different verified labels: "
                                        r"c \(0, 1\), a \(0, 1\); keep one label per id$"):
        match_trusted_ids(["c", "a", "c", "a"], np.array([0, 0, 1, 1]), ds, where="s")
    with pytest.raises(DataError, match=r"^s: 1 trusted row\(s\) have no id$"):
        match_trusted_ids(pa.array(["a", None]), np.array([0, 1]), ds, where="s")


def test_clean_dataset_api_follows_the_same_rule(poisoned):
    path, truth = poisoned
    ds = load(path, label=LABEL, id="patient_id")
    # Labels from a table (ids typed as text, zero-padded) with an exact duplicate: counted once.
    ids = ["01003", "01010", "01003", "01000"]
    tbl = pa.table({"patient_id": ids, LABEL: [truth[3], truth[10], truth[3], truth[0]]})
    cleaned, log = clean_dataset(ds, mode="relabel", trusted=tbl, random_state=0, model="logreg")
    assert log.warnings[0] == "trusted labels: 1 duplicated trusted row(s) (same id and label) were counted once"
    assert sorted(log.rows[log.actions == "verified"].tolist()) == [3, 10]
    assert cleaned.labels()[[3, 10]].tolist() == [truth[3], truth[10]]
    conflict = pa.table({"patient_id": [1003, 1003], LABEL: ["benign", "malignant"]})
    with pytest.raises(DataError, match=r"1003 \(benign, malignant\); keep one label per id"):
        clean_dataset(ds, trusted=conflict)
    with pytest.raises(DataError, match=r"^trusted labels: 1 trusted row\(s\) have no label$"):
        clean_dataset(ds, trusted={1003: None, 1004: "benign"})
    with pytest.raises(DataError, match=r"^trusted labels: 1 trusted row\(s\) have ids that are not in .* "
                                        r"\(99999\); give only ids of the data$"):
        clean_dataset(ds, trusted={1003: truth[3], 99999: "benign"})
