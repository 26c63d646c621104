"""``flipguard audit`` end to end: the done-when test, outputs, evidence options, bad input."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from flipguard.attacks import make_flipper

LABEL = "diagnosis"


def _poison(frame: pa.Table, strategy: str, seed: int = 0, **params):
    """The frame with its label column attacked; returns (table, flip mask)."""
    features = np.column_stack([frame.column(c).to_numpy() for c in frame.column_names
                                if c not in ("patient_id", LABEL)])
    y = np.asarray(frame.column(LABEL).to_pylist(), dtype=object)
    flipper = make_flipper(strategy, random_state=seed, **params)
    _, y_bad = flipper.fit_resample(features, y)
    idx = frame.schema.get_field_index(LABEL)
    return frame.set_column(idx, LABEL, pa.array(list(y_bad))), flipper.flip_mask_


def _write(tmp_path, table: pa.Table, name: str = "data.csv"):
    path = tmp_path / name
    pacsv.write_csv(table, path)
    return path


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def poisoned_csv(tmp_path, breast_cancer_frame):
    table, mask = _poison(breast_cancer_frame, "random", rate=0.2, seed=0)
    return _write(tmp_path, table), mask


def test_done_when_estimate_and_top_suspects(cli, poisoned_csv):
    """20% seeded random flips on breast cancer: the estimate is within 25% of the
    truth and the 50 top suspects are at least 90% truly flipped."""
    path, mask = poisoned_csv
    before = _digest(path)
    res = cli("audit", path, "--label", LABEL, "--id", "patient_id", "--format", "json")
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)
    n_true = int(mask.sum())
    assert abs(out["estimated_flips"] - n_true) <= 0.25 * n_true
    rows = out["rows"]
    assert [r["row"] for r in rows] == list(range(len(mask)))
    assert [r["id"] for r in rows[:3]] == [1000, 1001, 1002]
    top = sorted(rows, key=lambda r: -r["score"])[:50]
    assert np.mean([mask[r["row"]] for r in top]) >= 0.9
    assert {t["from"] for t in out["transitions"]} <= {"malignant", "benign"}
    assert sum(t["count"] for t in out["transitions"]) == out["estimated_flips"]
    assert out["n_flagged"] == sum(r["flagged"] for r in rows)
    assert out["model_quality"]["usable"] is True and 0.5 < out["model_quality"]["accuracy"] < 1
    assert set(rows[0]) == {"row", "id", "label", "suggested_label", "score", "flagged", "likely", "reasons"}
    assert _digest(path) == before  # the input is never modified


def test_csv_output_is_the_per_row_table(cli, poisoned_csv, tmp_path):
    path, mask = poisoned_csv
    out = tmp_path / "suspects.csv"
    res = cli("audit", path, "--label", LABEL, "--format", "csv", "--out", out)
    assert res.exit_code == 0, res.stderr
    assert res.stdout == ""
    table = pacsv.read_csv(out)
    assert table.column_names == ["row", "id", "label", "suggested_label", "score", "flagged",
                                  "likely", "reasons"]
    assert table.num_rows == len(mask)
    assert table.column("row").to_pylist() == list(range(len(mask)))


def test_table_output_and_fail_above(cli, poisoned_csv):
    path, _ = poisoned_csv
    res = cli("audit", path, "--label", LABEL, "--top", "5", "--fail-above", "0.05")
    assert res.exit_code == 1
    assert "labels flagged" in res.stdout and "Top 5 suspects" in res.stdout
    assert "exceeds --fail-above" in res.stderr
    ok = cli("audit", path, "--label", LABEL, "--format", "json", "--fail-above", "0.5")
    assert ok.exit_code == 0


def test_html_report(cli, poisoned_csv, tmp_path):
    path, _ = poisoned_csv
    report = tmp_path / "audit.html"
    res = cli("audit", path, "--label", LABEL, "--id", "patient_id", "--report", report)
    assert res.exit_code == 0, res.stderr
    html = report.read_text()
    for heading in ("Audit summary", "Score distribution", "Estimated transitions",
                    "Flagged rows in two dimensions", "Top 50 suspects"):
        assert heading in html
    assert "mean_radius" in html and "data:image/png;base64," in html
    assert "<script" not in html


@pytest.mark.browser
def test_html_report_renders_in_chromium(cli, poisoned_csv, tmp_path, chromium):
    import subprocess

    path, _ = poisoned_csv
    report = tmp_path / "audit.html"
    assert cli("audit", path, "--label", LABEL, "--report", report).exit_code == 0
    shot = tmp_path / "shot.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1100,1600", report.as_uri()], check=True, timeout=120,
                   capture_output=True)
    from matplotlib.image import imread

    img = imread(shot)
    assert img.shape[0] > 500 and img[..., :3].std() > 0.05  # not blank


def test_trusted_file_catches_the_cluster_attack(cli, breast_cancer_frame, tmp_path):
    table, mask = _poison(breast_cancer_frame, "cluster", rate=0.1, seed=0)
    data = _write(tmp_path, table)
    rng = np.random.RandomState(7)
    rows = np.sort(rng.choice(table.num_rows, size=int(0.05 * table.num_rows), replace=False))
    trusted = _write(tmp_path, breast_cancer_frame.take(pa.array(rows)), "trusted.csv")
    res = cli("audit", data, "--label", LABEL, "--id", "patient_id", "--trusted", trusted,
              "--format", "json")
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)
    flagged = np.array([r["flagged"] for r in out["rows"]])
    assert (flagged & mask).sum() / mask.sum() >= 0.8
    assert out["details"]["trusted_rows_in_data"] == len(rows)
    blind = json.loads(cli("audit", data, "--label", LABEL, "--format", "json").stdout)
    blind_flags = np.array([r["flagged"] for r in blind["rows"]])
    assert (blind_flags & mask).sum() < (flagged & mask).sum()
    # the verified rows' own count, with its interval, in the JSON and on the table
    v = out["verdict"]["verified_estimate"]
    assert v["verified"] == len(rows) and v["flips_low"] <= mask.sum() <= v["flips_high"]
    shown = cli("audit", data, "--label", LABEL, "--id", "patient_id", "--trusted", trusted)
    line = next(x for x in shown.stdout.splitlines() if x.startswith("verified rows: "))
    assert f"{v['flipped']} of {len(rows)} carry another label" in line and "random sample" in line


def test_a_sheet_of_ids_and_verified_labels_is_enough(cli, breast_cancer_frame, tmp_path):
    """What a review produces: the ids of rows someone checked and their verified labels.  The
    matched rows' features are the data's, so the audit gives the same flags and verdict as with
    the full rows; an id the data lacks cannot be used without features (one line, exit 2)."""
    table, mask = _poison(breast_cancer_frame, "cluster", rate=0.1, seed=0)
    data = _write(tmp_path, table)
    rows = np.sort(np.random.RandomState(7).choice(table.num_rows, size=int(0.05 * table.num_rows),
                                                   replace=False))
    full = _write(tmp_path, breast_cancer_frame.take(pa.array(rows)), "trusted.csv")
    sheet = _write(tmp_path, breast_cancer_frame.take(pa.array(rows)).select(["patient_id", LABEL]), "sheet.csv")
    args = ("audit", data, "--label", LABEL, "--id", "patient_id", "--format", "json")
    a = json.loads(cli(*args, "--trusted", full).stdout)
    b = cli(*args, "--trusted", sheet)
    assert b.exit_code == 0, b.stderr
    b = json.loads(b.stdout)
    assert [r["flagged"] for r in a["rows"]] == [r["flagged"] for r in b["rows"]]
    assert a["verdict"]["status"] == b["verdict"]["status"]
    assert b["verdict"]["verified_estimate"]["verified"] == len(rows)
    stray = breast_cancer_frame.take(pa.array(rows)).select(["patient_id", LABEL])
    stray = stray.set_column(0, "patient_id", pa.array(np.arange(len(rows)) + 90_000))
    bad = cli(*args, "--trusted", _write(tmp_path, stray, "stray.csv"))
    assert bad.exit_code == 2 and bad.stdout == ""
    assert bad.stderr.strip().splitlines() == [
        f"Error: {tmp_path / 'stray.csv'}: {len(rows)} trusted row(s) have ids that are not in {data} "
        "(90000, 90001, 90002, 90003, 90004, ...) and the file has no feature columns to use them as extra "
        "examples: give their features, or only rows of the data"]


def test_rules_and_reference_label(cli, breast_cancer_frame, tmp_path):
    radius = breast_cancer_frame.column("mean_radius").to_numpy()
    y = np.asarray(breast_cancer_frame.column(LABEL).to_pylist(), dtype=object)
    big = np.flatnonzero((radius > 20) & (y == "malignant"))[:4]
    y_bad = y.copy()
    y_bad[big] = "benign"
    second = y.copy()
    errs = np.setdiff1d(np.arange(len(y)), big)[:3]
    second[errs] = np.where(second[errs] == "benign", "malignant", "benign")  # the second labeller errs
    table = breast_cancer_frame.set_column(breast_cancer_frame.schema.get_field_index(LABEL), LABEL,
                                           pa.array(list(y_bad)))
    table = table.append_column("second_opinion", pa.array(list(second)))
    data = _write(tmp_path, table)
    rules = tmp_path / "rules.yaml"
    rules.write_text("- name: large tumours are malignant\n  when: mean_radius > 20\n  label: malignant\n")
    res = cli("audit", data, "--label", LABEL, "--id", "patient_id", "--rules", rules,
              "--reference-label", "second_opinion", "--format", "json")
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)
    by_rule = {d["id"] for d in out["disagreements"] if d["source"] == "large tumours are malignant"}
    assert by_rule == {1000 + int(i) for i in big}
    by_ref = {d["row"] for d in out["disagreements"] if d["source"] == "reference:second_opinion"}
    assert set(big) | set(errs) == by_ref
    flagged = {r["row"] for r in out["rows"] if r["flagged"]}
    assert set(big) <= flagged
    kinds = {e["name"]: e["kind"] for e in out["evidence"]}
    assert kinds == {"large tumours are malignant": "rule", "reference:second_opinion": "reference"}


def test_reference_column_is_not_a_feature(breast_cancer_frame, tmp_path):
    from flipguard.detection._io import load_audit_data

    table = breast_cancer_frame.append_column("second_opinion", breast_cancer_frame.column(LABEL))
    path = _write(tmp_path, table)
    ds = load_audit_data(str(path), label=LABEL, id="patient_id", reference_label="second_opinion")
    assert "second_opinion" not in " ".join(ds.feature_names)
    assert "second_opinion" in ds.table.column_names


@pytest.mark.parametrize("args, message", [
    (("missing.csv", "--label", LABEL), "missing.csv: no such file"),
    (("{data}", "--label", "nope"), "label column 'nope' not found"),
    (("{one}", "--label", "y"), "label column 'y' has a single class ('a'); at least two are needed"),
    (("{data}", "--label", LABEL, "--method", "magic"),
     ("Unknown detection method 'magic'; choose one of auto, confident_learning, disagreement, knn, "
      "margin, rules, self_confidence, trusted.")),
    (("{data}", "--label", LABEL, "--model", "svm"),
     "Unknown model 'svm'; choose one of auto, logreg, linsvm, rf, hgb, knn, mlp."),
    (("{data}", "--label", LABEL, "--format", "xml"), "--format must be one of table, json, csv; got 'xml'"),
    (("{data}", "--label", LABEL, "--rules", "{bad_rules}"), "rule 'r': cannot evaluate 'nope > 1'"),
    (("{data}", "--label", LABEL, "--trusted", "{bad_trusted}"),
     "trusted label value(s) maybe are not classes of"),
    (("{data}", "--label", LABEL, "--reference-label", "ghost"), "reference-label column 'ghost' not found"),
])
def test_bad_input_is_one_line_and_exit_2(cli, tmp_path, breast_cancer_frame, args, message):
    data = _write(tmp_path, breast_cancer_frame)
    one = _write(tmp_path, pa.table({"x": [1.0, 2.0, 3.0], "y": ["a", "a", "a"]}), "one.csv")
    bad_rules = tmp_path / "rules.yaml"
    bad_rules.write_text("- {name: r, when: 'nope > 1', label: malignant}\n")
    bad_trusted = _write(tmp_path, breast_cancer_frame.slice(0, 3).set_column(
        breast_cancer_frame.schema.get_field_index(LABEL), LABEL, pa.array(["maybe"] * 3)), "t.csv")
    names = {"data": data, "one": one, "bad_rules": bad_rules, "bad_trusted": bad_trusted}
    argv = [a.format(**names) if "{" in a else a for a in args]
    if argv[0] == "missing.csv":
        argv[0] = str(tmp_path / "missing.csv")
    res = cli("audit", *argv)
    assert res.exit_code == 2
    assert res.stderr.startswith("Error: ") and res.stderr.count("\n") == 1
    assert message in res.stderr
    assert res.stdout == ""


def test_gate_and_seed_options_are_checked(cli, poisoned_csv):
    """`--fail-on "$UNSET"` used to gate on nothing and pass; --seed -1 leaked numpy's wording."""
    path, _ = poisoned_csv
    res = cli("audit", path, "--label", LABEL, "--fail-on", "")
    assert (res.exit_code, res.stderr) == (2, "Error: --fail-on needs a verdict: poisoned, inconclusive or "
                                              "inconsistent\n")
    res = cli("audit", path, "--label", LABEL, "--seed", "-1")
    assert res.exit_code == 2 and "Invalid value for '--seed': -1 is not in the range" in res.stderr
    assert res.stderr.count("\n") == 1


def test_notes_say_what_an_option_or_a_column_did_not_do(cli, poisoned_csv, tmp_path):
    """A named --model with --pred-probs is not used; a string column with one value per row is
    most likely an id, so the note says --id first."""
    path, _ = poisoned_csv
    ids = pacsv.read_csv(path).column("patient_id").to_pylist()
    table = pacsv.read_csv(path)
    table = table.set_column(0, "patient_id", pa.array([f"P{i:04d}" for i in ids]))
    data = _write(tmp_path, table, "ids.csv")
    res = cli("audit", data, "--label", LABEL, "--format", "json")
    assert res.exit_code == 0, res.stderr
    assert ("note: column 'patient_id' (569 distinct strings, one per row) is not used as a feature; if it "
            "identifies the rows, give --id patient_id; if it is free text, add --text patient_id") in res.stderr
    probs = tmp_path / "probs.csv"
    pacsv.write_csv(pa.table({"benign": [0.5] * 569, "malignant": [0.5] * 569}), probs)
    res = cli("audit", data, "--label", LABEL, "--pred-probs", probs, "--model", "hgb", "--format", "json")
    assert res.exit_code == 0 and "note: --model hgb is not used: --pred-probs gives the probabilities" in res.stderr
    res = cli("audit", data, "--label", LABEL, "--pred-probs", probs, "--format", "json")
    assert res.exit_code == 0 and "is not used: --pred-probs" not in res.stderr
