"""``flipguard federated simulate``: input it must refuse before any work, and inputs it must accept.

One tiny simulation (4 clients, 1 round, 1 epoch) for the boolean label; every
other test stops before Flower starts.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

BASE = ["--clients", "4", "--malicious", "0.25", "--rounds", "2", "--epochs", "1", "--defence", "fedavg"]


@pytest.fixture
def no_work(monkeypatch):
    """Make reading the data or simulating fail loudly: a refused command must do neither."""
    import flipguard.data
    import flipguard.federated

    def boom(*args, **kwargs):
        raise AssertionError("the command did work before refusing its input")

    monkeypatch.setattr(flipguard.data, "load", boom)
    monkeypatch.setattr(flipguard.federated, "simulate", boom)


def one_error_line(res, start: str) -> None:
    assert res.exit_code == 2, (res.exit_code, res.stderr)
    assert res.stdout == ""
    assert res.stderr.startswith(start), res.stderr
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr


# -- output paths ---------------------------------------------------------------------------------
@pytest.mark.parametrize("alias", ["same", "dot", "symlink"])
def test_a_report_that_is_the_input_file_is_refused_and_the_input_untouched(cli, breast_cancer_csv, tmp_path,
                                                                           monkeypatch, no_work, alias):
    monkeypatch.chdir(tmp_path)
    victim = tmp_path / "victim.csv"
    victim.write_bytes(breast_cancer_csv.read_bytes())
    before = victim.read_bytes()
    report = {"same": "victim.csv", "dot": "./victim.csv", "symlink": "link.csv"}[alias]
    if alias == "symlink":
        (tmp_path / "link.csv").symlink_to(victim)
    res = cli("federated", "simulate", "victim.csv", "--label", "diagnosis", *BASE, "--report", report)
    one_error_line(res, "Error: --report ")
    assert "is the input file" in res.stderr
    assert victim.read_bytes() == before


@pytest.mark.parametrize("where, message", [
    ("missing/fl.html", "folder {tmp}/missing does not exist"),
    ("afolder", "is a folder; give a file name"),
    ("breast_cancer.csv/fl.html", "breast_cancer.csv is not a folder"),
])
def test_a_report_path_that_cannot_be_written_is_refused_before_the_simulation(cli, breast_cancer_csv, tmp_path,
                                                                              no_work, where, message):
    (tmp_path / "afolder").mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    res = cli("federated", "simulate", breast_cancer_csv, "--label", "diagnosis", *BASE,
              "--report", tmp_path / where)
    one_error_line(res, f"Error: --report {tmp_path / where}")
    assert message.format(tmp=tmp_path) in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not (tmp_path / "missing").exists()


# -- names ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("extra", [["--attack", "nope"], ["--attack", "nope", "--rate", "0.2"]])
def test_an_unknown_attack_is_named_before_asking_for_its_rate(cli, breast_cancer_csv, no_work, extra):
    res = cli("federated", "simulate", breast_cancer_csv, "--label", "diagnosis", *BASE, *extra)
    one_error_line(res, "Error: --attack nope is not an attack; choose from ")
    for name in ("random", "targeted", "noise_matrix", "boundary", "entropy", "cluster", "alfa"):
        assert name in res.stderr


# -- classes too small to split ---------------------------------------------------------------------
@pytest.fixture
def wine_csv(tmp_path):
    """Wine with an id column and string classes a, b, c; ``keep`` rows of class c survive."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    from sklearn.datasets import load_wine

    def make(keep: int):
        X, y = load_wine(return_X_y=True)
        rows = np.concatenate([np.flatnonzero(y != 2), np.flatnonzero(y == 2)[:keep]])
        cols = {"id": np.arange(len(rows))}
        cols.update({f"f{j}": X[rows, j] for j in range(X.shape[1])})
        cols["cls"] = np.array(["a", "b", "c"])[y[rows]]
        path = tmp_path / f"wine_{keep}.csv"
        pacsv.write_csv(pa.table(cols), path)
        return path

    return make


@pytest.mark.parametrize("keep", [1, 2])
def test_a_class_too_small_to_split_is_named_with_its_row_count(cli, wine_csv, keep):
    path = wine_csv(keep)
    before = path.read_bytes()
    res = cli("federated", "simulate", path, "--label", "cls", "--id", "id", *BASE)
    assert res.exit_code == 2 and res.stdout == ""
    assert res.stderr == (f"Error: class 'c' has {keep} row(s); every class needs at least 3 rows to split "
                          "into clients and a test set\n")
    assert path.read_bytes() == before


def test_three_rows_per_class_are_what_the_stratified_splits_need():
    """Two rows of a class can break the root-set split (one of them went to the test split); three never do."""
    from flipguard.exceptions import InvalidParameterError
    from flipguard.federated._simulate import MIN_CLASS_ROWS, check_class_sizes, split_rows

    assert MIN_CLASS_ROWS == 3
    three = np.repeat([0, 1, 2, 3], [3, 3, 40, 90])
    check_class_sizes(np.arange(4), three)
    for seed in range(60):
        rest, test, root = split_rows(three, random_state=seed)
        assert sorted(np.concatenate([rest, test, root]).tolist()) == list(range(len(three)))
        assert len(root) > 0 and set(three[test]) == {0, 1, 2, 3}
    two = np.repeat([0, 1, 2], [2, 50, 50])
    with pytest.raises(InvalidParameterError, match=r"^class '0' has 2 row\(s\); every class needs at least 3"):
        check_class_sizes(np.arange(3), two)
    failed = 0
    for seed in range(20):
        try:
            split_rows(two, random_state=seed)
        except ValueError:
            failed += 1
    assert failed == 20  # so the check is needed, not only cautious
    with pytest.raises(InvalidParameterError, match=r"the test split \(2 of 9 rows\) cannot hold a row of each "
                                                    r"of the 3 classes"):
        check_class_sizes(np.arange(3), np.repeat([0, 1, 2], 3))


# -- a boolean label -----------------------------------------------------------------------------------
@pytest.fixture
def bool_csv(tmp_path, breast_cancer_frame):
    """Breast cancer with the label written true/false (malignant = true)."""
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    t = breast_cancer_frame
    i = t.column_names.index("diagnosis")
    malignant = pc.equal(t.column("diagnosis"), "malignant")
    path = tmp_path / "bool.csv"
    pacsv.write_csv(t.set_column(i, "diagnosis", malignant), path)
    assert b",true\n" in path.read_bytes() and b",false\n" in path.read_bytes()
    return path


def test_a_boolean_label_matches_source_and_target_in_any_case(cli, bool_csv, tmp_path):
    report = tmp_path / "fl.html"
    res = cli("federated", "simulate", bool_csv, "--label", "diagnosis", "--id", "patient_id", "--clients", "4",
              "--malicious", "0.25", "--rounds", "1", "--epochs", "1", "--defence", "fedavg",
              "--source", "true", "--target", "FALSE", "--json", "--report", report)
    assert res.exit_code == 0, res.stderr
    s = json.loads(res.stdout)["settings"]
    assert s["source"] == "True" and s["target"] == "False"
    assert s["attack_params"]["source"] == "True" and s["attack_params"]["target"] == "False"
    assert len(s["malicious_clients"]) == 1
    (attacker,) = s["malicious_clients"]
    assert s["flipped_rows"][str(attacker)] == s["client_source_rows"][attacker] > 0  # every source row flipped
    assert report.stat().st_size > 0


def test_a_boolean_label_still_refuses_a_class_it_does_not_have(cli, bool_csv):
    res = cli("federated", "simulate", bool_csv, "--label", "diagnosis", "--id", "patient_id", *BASE,
              "--source", "yes", "--target", "false")
    one_error_line(res, "Error: --source 'yes' is not a class of the label column (classes: False, True)")
