"""``flipguard clean``: cleaned copies, change logs, trusted labels, bad input, untouched input."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from flipguard.attacks import RandomFlip


@pytest.fixture
def poisoned_csv(tmp_path, breast_cancer_frame):
    """The breast-cancer table with 15% of its diagnoses flipped (and the truth kept aside)."""
    labels = np.asarray(breast_cancer_frame.column("diagnosis").to_pylist(), dtype=object)
    _, bad = RandomFlip(rate=0.15, random_state=0).fit_resample(None, labels)
    idx = breast_cancer_frame.schema.get_field_index("diagnosis")
    tbl = breast_cancer_frame.set_column(idx, "diagnosis", pa.array(bad.tolist()))
    path = tmp_path / "poisoned.csv"
    pacsv.write_csv(tbl, path)
    return path, labels, bad


@pytest.mark.parametrize("mode", ["drop", "relabel", "weight"])
def test_clean_writes_copy_and_log_and_leaves_input_alone(cli, poisoned_csv, tmp_path, mode):
    path, truth, bad = poisoned_csv
    before = path.read_bytes()
    out, log = tmp_path / f"clean.{mode}.parquet", tmp_path / "log.csv"
    r = cli("clean", path, "--label", "diagnosis", "--id", "patient_id", "--mode", mode,
            "--out", out, "--log", log)
    assert r.exit_code == 0, r.stderr
    assert path.read_bytes() == before
    cleaned = pq.read_table(out)
    changes = pacsv.read_csv(log)
    assert changes.column_names[:6] == ["row", "id", "old_label", "new_label", "action", "score"]
    rows = np.asarray(changes.column("row").to_pylist())
    assert np.array_equal(np.asarray(changes.column("id").to_pylist()), rows + 1000)
    assert np.array_equal(np.asarray(changes.column("old_label").to_pylist(), dtype=object), bad[rows])
    if mode == "drop":
        assert set(changes.column("action").to_pylist()) == {"dropped"}
        assert cleaned.num_rows == 569 - len(rows)
        assert changes.column("new_label").null_count == len(rows)
        assert not set(cleaned.column("patient_id").to_pylist()) & set(rows + 1000)
        assert np.mean(bad[rows] != truth[rows]) > 0.8
        assert f"drop: {len(rows)} of 569 rows dropped" in r.stdout
    elif mode == "relabel":
        assert cleaned.num_rows == 569
        new = np.asarray(cleaned.column("diagnosis").to_pylist(), dtype=object)
        assert np.array_equal(new[rows], np.asarray(changes.column("new_label").to_pylist(), dtype=object))
        assert np.mean(new == truth) > np.mean(bad == truth) + 0.1
    else:
        assert cleaned.column_names[-1] == "flipguard_weight"
        w = np.asarray(cleaned.column("flipguard_weight").to_pylist())
        flipped = bad != truth
        assert w[flipped].mean() < w[~flipped].mean() - 0.3
        assert np.allclose(np.asarray(changes.column("weight").to_pylist()), w[rows])
    # Every column of the input survives, in order.
    assert cleaned.column_names[:32] == pacsv.read_csv(path).column_names


def test_clean_json_and_json_log(cli, poisoned_csv, tmp_path):
    path, _, _ = poisoned_csv
    out, log = tmp_path / "clean.csv", tmp_path / "log.json"
    r = cli("clean", path, "--label", "diagnosis", "--mode", "relabel", "--out", out, "--log", log, "--json")
    assert r.exit_code == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["mode"] == "relabel" and d["n_relabelled"] > 40 and not d["fallback"]
    assert d["format"] == "csv" and d["n_rows_out"] == 569 and d["log"] == str(log)
    assert d["guard"]["on"] == "cv" and d["audit"]["method"] == "auto"
    logged = json.loads(log.read_text())
    assert len(logged["changes"]) == d["n_changed"]
    assert {c["action"] for c in logged["changes"]} == {"relabelled"}
    again = json.loads(cli("clean", path, "--label", "diagnosis", "--mode", "relabel", "--out", out,
                           "--json").stdout)
    assert again["reason"] == d["reason"]  # same seed, same result


def test_clean_with_trusted_labels(cli, poisoned_csv, tmp_path, breast_cancer_frame):
    path, truth, bad = poisoned_csv
    wrong = np.flatnonzero(bad != truth)[:6]
    trusted = tmp_path / "verified.csv"
    pacsv.write_csv(pa.table({"patient_id": (wrong + 1000).tolist(), "diagnosis": truth[wrong].tolist()}),
                    trusted)
    out, log = tmp_path / "clean.csv", tmp_path / "log.csv"
    r = cli("clean", path, "--label", "diagnosis", "--id", "patient_id", "--trusted", trusted,
            "--out", out, "--log", log)
    assert r.exit_code == 0, r.stderr
    changes = pacsv.read_csv(log).to_pylist()
    verified = sorted(c["row"] for c in changes if c["action"] == "verified")
    assert verified == sorted(wrong.tolist())
    cleaned = pacsv.read_csv(out)
    ids = np.asarray(cleaned.column("patient_id").to_pylist())
    labels = np.asarray(cleaned.column("diagnosis").to_pylist(), dtype=object)
    for i in wrong:  # kept, and corrected
        assert labels[ids == i + 1000][0] == truth[i]
    assert "6 corrected from trusted labels" in r.stdout
    # A trusted file with the data's columns works without --id (extra verified examples).
    full = tmp_path / "verified_full.csv"
    pacsv.write_csv(breast_cancer_frame.slice(0, 60), full)
    r = cli("clean", path, "--label", "diagnosis", "--trusted", full, "--out", out, "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["guard"]["on"] == "trusted"


def test_clean_bad_input_exits_2_with_one_line(cli, poisoned_csv, tmp_path):
    path, _, _ = poisoned_csv
    out = tmp_path / "clean.csv"

    def run(*args):
        r = cli("clean", *args)
        assert r.exit_code == 2 and r.stdout == "" and r.stderr.count("\n") == 1, r
        return r.stderr

    assert run(path, "--label", "diagnosis", "--mode", "burn", "--out", out) == \
        "Error: --mode must be one of drop, relabel, weight; got 'burn'\n"
    assert run(path, "--label", "diagnosis", "--model", "svm", "--out", out) == \
        "Error: --model must be one of logreg, linsvm, rf, hgb, knn, mlp; got 'svm'\n"
    assert run(path, "--label", "nope", "--out", out).startswith(
        f"Error: {path}: label column 'nope' not found (columns: patient_id, ")
    assert run(tmp_path / "missing.csv", "--label", "diagnosis", "--out", out) == \
        f"Error: {tmp_path / 'missing.csv'}: no such file\n"
    assert run(path, "--label", "diagnosis", "--out", path) == \
        f"Error: --out {path} is the input file; flipguard never modifies its input\n"
    assert run(path, "--label", "diagnosis", "--out", out, "--log", path) == \
        f"Error: --log {path} is the input file; flipguard never modifies its input\n"
    assert run(path, "--label", "diagnosis", "--mode", "weight", "--model", "knn", "--out", out) == \
        "Error: --mode weight needs a model whose training accepts sample weights; knn does not " \
        "(use --mode drop or relabel, or another --model)\n"
    ids_only = tmp_path / "verified.csv"
    pacsv.write_csv(pa.table({"patient_id": [1000], "diagnosis": ["benign"]}), ids_only)
    assert run(path, "--label", "diagnosis", "--trusted", ids_only, "--out", out).startswith(
        f"Error: --trusted {ids_only} lacks the data's feature column(s) mean_radius, ")
    unknown = tmp_path / "verified2.csv"
    pacsv.write_csv(pa.table({"patient_id": [5], "diagnosis": ["benign"]}), unknown)
    assert run(path, "--label", "diagnosis", "--id", "patient_id", "--trusted", unknown, "--out", out) == \
        f"Error: none of the 1 trusted ids are ids of {path}\n"
    assert not out.exists()  # nothing half-written


def test_clean_help_has_an_example(cli):
    r = cli("clean", "--help")
    assert r.exit_code == 0 and "flipguard clean reviews.csv" in r.stdout
    r = cli("certify", "--help")
    assert r.exit_code == 0 and "flipguard certify patients.csv" in r.stdout
