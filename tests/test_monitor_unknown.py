"""``flipguard monitor``: labels the reference never saw or missing labels are findings; one source, any spelling."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from flipguard.monitor import LabelMonitor
from flipguard.monitor._watch import FolderSource, _source_key, open_source, watch_once

CLASSES = np.array(["benign", "malignant"])


def table(n_benign: int, n_malignant: int, seed: int, start_id: int, labels=None) -> pa.Table:
    """Two well separated classes; ``labels`` replaces the label column (a list, ``None`` = missing)."""
    rng = np.random.RandomState(seed)
    y = np.r_[np.zeros(n_benign, int), np.ones(n_malignant, int)]
    X = np.c_[3.0 * y, -3.0 * y] + rng.normal(0, 1, (len(y), 2))
    lab = CLASSES[y].tolist() if labels is None else labels
    return pa.table({"patient_id": np.arange(start_id, start_id + len(y)), "a": X[:, 0], "b": X[:, 1],
                     "diagnosis": pa.array(lab, type=pa.string() if labels is None else None)})


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    path = tmp_path_factory.mktemp("ref") / "ref.parquet"
    pq.write_table(table(200, 200, seed=1, start_id=10**6), path)
    return path


def args(source, state, reference, *extra):
    return ["monitor", str(source), "--label", "diagnosis", "--id", "patient_id", "--reference", str(reference),
            "--state", str(state), *map(str, extra)]


RELABELLED = [1020, 1021, 1022, 1023, 1024, 1025, 1026, 1027, 1028, 1029, 1030, 1031, 1032, 1033, 1034, 1035]
BLANK = [2000, 2003, 2006, 2009, 2012, 2015, 2018, 2021, 2024, 2027]


def write_attacked_batches(folder: Path) -> None:
    """batch_200 clean; 201: 16 of 18 malignant rows relabelled 'Benign'; 202: 10 labels missing;
    203: every label recoded to 0/1.  38 rows each."""
    folder.mkdir(parents=True, exist_ok=True)
    pacsv.write_csv(table(20, 18, seed=2, start_id=0), folder / "batch_200.csv")
    lab = ["benign"] * 20 + ["Benign"] * 16 + ["malignant"] * 2
    pacsv.write_csv(table(20, 18, seed=3, start_id=1000, labels=lab), folder / "batch_201.csv")
    lab = [None if i % 3 == 0 and i < 30 else ("benign" if i < 20 else "malignant") for i in range(38)]
    pacsv.write_csv(table(20, 18, seed=4, start_id=2000, labels=lab), folder / "batch_202.csv")
    lab = [0] * 20 + [1] * 18
    pacsv.write_csv(table(20, 18, seed=5, start_id=3000, labels=lab), folder / "batch_203.csv")


def test_unknown_and_missing_labels_are_findings_in_text_output(cli, tmp_path, reference):
    folder = tmp_path / "in"
    write_attacked_batches(folder)
    state = tmp_path / "m.state"
    res = cli(*args(folder, state, reference))
    assert res.exit_code == 1, res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("ok batch_200.csv: 38 rows, ")
    assert lines[1].startswith("UNKNOWN LABELS batch_201.csv: 38 rows (22 judged), ")
    assert ("; 16 rows with a label the reference never saw: 'Benign' x16 (= 'benign' but for case/spaces), "
            "ids 1020, 1021, 1022, 1023, 1024, ... (11 more)") in lines[1]
    assert "without a label" not in lines[1]
    assert lines[2].startswith("UNKNOWN LABELS batch_202.csv: 38 rows (28 judged), ")
    assert lines[2].endswith("; 10 rows without a label, ids 2000, 2003, 2006, 2009, 2012, ... (5 more)")
    assert lines[3].startswith("UNKNOWN LABELS batch_203.csv: 38 rows (0 judged), ")
    assert "no row could be judged; 38 rows with a label the reference never saw: '0' x20, '1' x18, ids 3000" \
        in lines[3]
    # Reported once: the next run has nothing new and exits 0.
    again = cli(*args(folder, state, reference))
    assert again.exit_code == 0 and again.stdout == f"no new batches in {folder} since the last run\n"


def test_unknown_and_missing_labels_in_json_report_and_metrics(cli, tmp_path, reference):
    from prometheus_client.parser import text_string_to_metric_families

    folder = tmp_path / "in"
    write_attacked_batches(folder)
    report, prom = tmp_path / "r.html", tmp_path / "m.prom"
    res = cli(*args(folder, tmp_path / "m.state", reference, "--json", "--report", report, "--metrics", prom))
    assert res.exit_code == 1, res.stderr
    out = {d["batch"]: d for d in map(json.loads, res.stdout.splitlines())}
    keys = ("rows", "judged", "status", "alarm", "finding", "unknown_labels", "missing_labels")
    assert [tuple(out[b][k] for k in keys) for b in sorted(out)] == [
        (38, 38, "no_alarm", False, False, 0, 0),
        (38, 22, "unknown_labels", False, True, 16, 0),
        (38, 28, "unknown_labels", False, True, 0, 10),
        (38, 0, "unknown_labels", False, True, 38, 0),
    ]
    b201, b202, b203 = out["batch_201.csv"], out["batch_202.csv"], out["batch_203.csv"]
    assert b201["unknown_values"] == [{"value": "Benign", "rows": 16, "looks_like": "benign"}]
    assert b201["unknown_label_ids"] == RELABELLED and b201["missing_label_ids"] == []
    assert b202["unknown_values"] == [] and b202["missing_label_ids"] == BLANK
    assert b203["unknown_values"] == [{"value": "0", "rows": 20, "looks_like": None},
                                      {"value": "1", "rows": 18, "looks_like": None}]
    assert b203["unknown_label_ids"] == list(range(3000, 3038))
    html = report.read_text()
    assert "Labels not judged" in html and "batch_201.csv" in html and "Benign" in html
    assert "3 batch(es) with unknown or missing labels" in html
    fams = {f.name: f.samples[0].value for f in text_string_to_metric_families(prom.read_text())}
    assert fams["flipguard_monitor_findings"] == 3 and fams["flipguard_monitor_finding"] == 1
    assert fams["flipguard_monitor_alarm"] == 0 and fams["flipguard_monitor_last_unknown_labels"] == 38
    assert fams["flipguard_monitor_last_missing_labels"] == 0


def test_clean_batches_stay_ok_with_exit_0(cli, tmp_path, reference):
    folder = tmp_path / "in"
    folder.mkdir()
    for b in range(3):
        pacsv.write_csv(table(20, 18, seed=10 + b, start_id=100 * b), folder / f"batch_{b}.csv")
    res = cli(*args(folder, tmp_path / "m.state", reference, "--json"))
    assert res.exit_code == 0, res.stderr
    lines = [json.loads(x) for x in res.stdout.splitlines()]
    assert [(d["status"], d["finding"], d["rows"], d["judged"]) for d in lines] == [("no_alarm", False, 38, 38)] * 3


def test_empty_batch_is_a_finding_not_fine(cli, tmp_path, reference):
    folder = tmp_path / "in"
    folder.mkdir()
    pq.write_table(table(0, 0, seed=1, start_id=0), folder / "batch_0.parquet")
    res = cli(*args(folder, tmp_path / "m.state", reference))
    assert res.exit_code == 1, res.stderr
    assert res.stdout.startswith("inconclusive batch_0.parquet: 0 rows, ")
    assert res.stdout.rstrip().endswith("the batch has no rows, nothing could be judged")


def test_a_finding_before_a_bad_batch_keeps_exit_1(cli, tmp_path, reference):
    folder = tmp_path / "in"
    write_attacked_batches(folder)
    (folder / "batch_300.csv").write_text("patient_id,a\n1,2\n")  # no label column
    res = cli(*args(folder, tmp_path / "m.state", reference, "--json"))
    assert res.exit_code == 1 and len(res.stdout.splitlines()) == 4
    assert res.stderr == (f"Error: {folder}: batch_300.csv: column 'diagnosis' not found (columns: patient_id, a) "
                          "(stopped there: the 4 batch(es) before it are saved, it is read again on the next run; "
                          "exit 1: this run raised an alarm or another finding)\n")


def test_integer_classes_missing_and_unseen_values(cli, tmp_path):
    """A 0/1 reference: blank labels are missing (not the text ''), 2 is an unknown value (kept an int)."""
    ref = tmp_path / "ref.csv"
    t = table(100, 100, seed=1, start_id=0)
    pacsv.write_csv(t.set_column(3, "diagnosis", pa.array([0] * 100 + [1] * 100)), ref)
    folder = tmp_path / "in"
    folder.mkdir()
    lab = [0] * 10 + [None] * 3 + [2] * 2 + [1] * 15
    pacsv.write_csv(table(15, 15, seed=2, start_id=500, labels=lab), folder / "batch_0.csv")
    res = cli(*args(folder, tmp_path / "m.state", ref, "--json"))
    assert res.exit_code == 1, res.stderr
    d = json.loads(res.stdout)
    assert (d["rows"], d["judged"], d["unknown_labels"], d["missing_labels"]) == (30, 25, 2, 3)
    assert d["unknown_values"] == [{"value": 2, "rows": 2, "looks_like": None}]
    assert d["missing_label_ids"] == [510, 511, 512] and d["unknown_label_ids"] == [513, 514]


# -- one source, any spelling --------------------------------------------------------------------------
def test_same_folder_under_other_spellings_is_one_source(cli, tmp_path, reference, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "in"
    folder.mkdir()
    pacsv.write_csv(table(20, 18, seed=2, start_id=0), folder / "batch_0.csv")
    (tmp_path / "link").symlink_to(folder)
    assert cli(*args("in", "r.state", reference)).exit_code == 0
    for spelling in ("./in/", str(folder), str(folder) + "/", "link", "in/../in"):
        res = cli(*args(spelling, "r.state", reference))
        assert res.exit_code == 0 and res.stdout == f"no new batches in {spelling} since the last run\n", \
            (spelling, res.stderr)
    pacsv.write_csv(table(20, 18, seed=3, start_id=100), folder / "batch_1.csv")
    res = cli(*args(str(folder), "r.state", reference, "--json"))
    assert [json.loads(x)["batch"] for x in res.stdout.splitlines()] == ["batch_1.csv"]
    assert cli(*args("./in", "r.state", reference, "--json")).stdout == ""  # processed once, whatever the name
    assert LabelMonitor.load(tmp_path / "r.state").n_batches_ == 2
    other = tmp_path / "other"
    other.mkdir()
    res = cli(*args("other", "r.state", reference))
    assert res.exit_code == 2
    assert res.stderr == (f"Error: --state r.state belongs to source 'in' ({folder}), not 'other' ({other}); "
                          "use one state file per source\n")


def _make_legacy(state: Path) -> None:
    """Rewrite a state as an older flipguard wrote it: the source as given, no resolved key."""
    mon, extra = LabelMonitor.load(state, with_extra=True)
    extra.pop("source_key")
    mon.save(state, extra)


def test_state_of_an_older_version_is_accepted_when_it_resolves_to_the_same_folder(cli, tmp_path, reference,
                                                                                  monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "in"
    folder.mkdir()
    pacsv.write_csv(table(20, 18, seed=2, start_id=0), folder / "batch_0.csv")
    state = tmp_path / "r.state"
    assert cli(*args("in", state, reference)).exit_code == 0
    _make_legacy(state)
    assert "source_key" not in LabelMonitor.load(state, with_extra=True)[1]
    # From another folder (cron's), 'in' is another folder: refused, saying why and what to do.
    elsewhere = tmp_path / "home"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    res = cli(*args(folder, state, reference))
    assert res.exit_code == 2 and res.stdout == ""
    assert res.stderr == (
        f"Error: --state {state} belongs to source 'in', recorded as given by an older flipguard; from the "
        f"current folder that is {elsewhere / 'in'}, not {folder}. Run once from the folder where the state "
        "was created (that records the full path), or use one state file per source\n")
    # From the folder it was created in, any spelling is accepted, and the state then records the full path...
    monkeypatch.chdir(tmp_path)
    res = cli(*args(folder, state, reference))
    assert res.exit_code == 0 and "no new batches" in res.stdout, res.stderr
    extra = LabelMonitor.load(state, with_extra=True)[1]
    assert extra["source_key"] == os.path.realpath(folder) and extra["source"] == "in"
    # ... so the cron job with the absolute path works from anywhere.
    monkeypatch.chdir(elsewhere)
    pacsv.write_csv(table(20, 18, seed=3, start_id=100), folder / "batch_1.csv")
    res = cli(*args(folder, state, reference, "--json"))
    assert res.exit_code == 0 and [json.loads(x)["batch"] for x in res.stdout.splitlines()] == ["batch_1.csv"]


def test_legacy_state_through_the_python_api(tmp_path, reference, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "in"
    folder.mkdir()
    pacsv.write_csv(table(20, 18, seed=2, start_id=0), folder / "batch_0.csv")
    state = tmp_path / "r.state"
    watch_once(FolderSource("in"), state, label="diagnosis", id="patient_id", reference=reference)
    _make_legacy(state)
    pacsv.write_csv(table(20, 18, seed=3, start_id=100), folder / "batch_1.csv")
    mon, verdicts = watch_once(open_source(str(folder) + "/"), state, label="diagnosis", id="patient_id")
    assert [v.batch for v in verdicts] == ["batch_1.csv"] and mon.n_batches_ == 2
    assert LabelMonitor.load(state, with_extra=True)[1]["source_key"] == os.path.realpath(folder)


def test_bucket_prefixes_are_normalised_not_resolved():
    assert _source_key("S3://bucket//incoming/") == "s3://bucket/incoming"
    assert FolderSource("s3://bucket/incoming/").identity == FolderSource("s3://bucket/./incoming").identity \
        == "s3://bucket/incoming"
    assert FolderSource("s3://bucket/incoming").identity != FolderSource("s3://bucket/incoming2").identity
    assert FolderSource("s3://bucket/").identity == "s3://bucket"
