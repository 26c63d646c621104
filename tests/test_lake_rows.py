"""Lake verify/diff name rows of whole added, removed and moved partitions (matched by id across
partitions), seals of ``.`` are named after the folder, and the lake text output matches the file's.
Outputs go beside a folder, never into it; a label has one type in every partition; errors name the
path at fault."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest


@pytest.fixture
def keys(tmp_path, cli):
    r = cli("keygen", "--out", tmp_path / "keys")
    assert r.exit_code == 0, r.stderr
    return tmp_path / "keys" / "flipguard.key", tmp_path / "keys" / "flipguard.pub"


def _lake(root: Path, frame: pa.Table) -> Path:
    """Breast cancer in 4 Parquet parts of 150, 150, 150 and 119 rows."""
    root.mkdir()
    for i in range(4):
        pq.write_table(frame.slice(i * 150, 150), root / f"part-{i}.parquet")
    return root


def _hive(root: Path, frame: pa.Table) -> Path:
    """The label lives in the folder name: diagnosis=benign/…, diagnosis=malignant/…, two files each."""
    for lab in ("benign", "malignant"):
        sub = frame.filter(pc.equal(frame.column("diagnosis"), lab)).drop_columns(["diagnosis"])
        (root / f"diagnosis={lab}").mkdir(parents=True)
        half = sub.num_rows // 2
        pq.write_table(sub.slice(0, half), root / f"diagnosis={lab}" / "part-0.parquet")
        pq.write_table(sub.slice(half), root / f"diagnosis={lab}" / "part-1.parquet")
    return root


def _seal(cli, keys, root, *extra):
    r = cli("seal", root, "--label", "diagnosis", *extra, "--key", keys[0])
    assert r.exit_code == 0, r.stderr
    return Path(str(root) + ".flipguard.parts")


def _json(cli, *args):
    r = cli(*args, "--json")
    assert r.exit_code == 1, r.stdout + r.stderr
    return json.loads(r.stdout)


def _counts_agree(doc):
    for k in ("changed", "added", "removed", "moved"):
        assert doc[f"n_{k}"] == len(doc[k]["id"]), k
    assert doc["n_duplicated"] == len(doc["duplicated"]["id"])


def _ids(path) -> list:
    return pq.read_table(path).column("patient_id").to_pylist()


def test_a_copied_partition_is_duplicated_ids_read_from_data_not_snapshots(tmp_path, cli, keys, breast_cancer_frame):
    lake = _lake(tmp_path / "L1", breast_cancer_frame)
    store = _seal(cli, keys, lake, "--id", "patient_id")
    shutil.copy(lake / "part-0.parquet", lake / "part-0-copy.parquet")
    for snap in store.glob("*.snapshot"):  # no snapshot is needed: nothing sealed changed
        snap.unlink()
    doc = _json(cli, "verify", lake, "--pubkey", keys[1])
    _counts_agree(doc)
    assert doc["n_duplicated"] == 150 and doc["duplicated"]["id"] == _ids(lake / "part-0.parquet")
    assert set(doc["duplicated"]["partition"]) == {"part-0-copy.parquet"} and set(doc["duplicated"]["count"]) == {2}
    assert (doc["n_added"], doc["n_removed"], doc["n_changed"], doc["n_moved"]) == (0, 0, 0, 0)
    assert doc["partitions"]["added"] == ["part-0-copy.parquet"] and doc["partitions"]["snapshots_read"] == []
    assert doc["findings"] == ["150 id(s) duplicated in the current data",
                               "1 partition(s) added (150 rows): part-0-copy.parquet"]
    r = cli("verify", lake, "--pubkey", keys[1], "--limit", "2")
    assert r.exit_code == 1
    assert "  - 150 id(s) duplicated in the current data\n" in r.stdout
    assert "Duplicated ids (150)" in r.stdout and "... and 148 more" in r.stdout
    assert "snapshots read: 0 of 4\n" in r.stdout
    # an added partition with new ids: its rows are added rows
    pq.write_table(pa.table({"patient_id": [9001, 9002], "diagnosis": ["benign", "malignant"]}), lake / "new.parquet")
    doc = _json(cli, "verify", lake, "--pubkey", keys[1])
    _counts_agree(doc)
    assert doc["added"] == {"partition": ["new.parquet"] * 2, "row": [0, 1], "id": [9001, 9002],
                            "label": ["benign", "malignant"]}


def test_diff_lists_duplicated_ids_and_class_counts(tmp_path, cli, breast_cancer_frame):
    old = _lake(tmp_path / "old", breast_cancer_frame)
    new = tmp_path / "new"
    shutil.copytree(old, new)
    shutil.copy(new / "part-0.parquet", new / "part-0-copy.parquet")
    doc = _json(cli, "diff", old, new, "--label", "diagnosis", "--id", "patient_id")
    _counts_agree(doc)
    assert doc["n_duplicated"] == 150 and doc["duplicated"]["id"] == _ids(old / "part-0.parquet")
    part0 = pq.read_table(old / "part-0.parquet").column("diagnosis").to_pylist()
    assert doc["class_counts"] == [
        {"label": "benign", "old": 357, "new": 357 + part0.count("benign"), "change": part0.count("benign")},
        {"label": "malignant", "old": 212, "new": 212 + part0.count("malignant"), "change": part0.count("malignant")}]


def test_a_removed_partition_lists_its_sealed_rows_reading_only_its_snapshot(tmp_path, cli, keys,
                                                                             breast_cancer_frame):
    lake = _lake(tmp_path / "L1", breast_cancer_frame)
    ids, labels = _ids(lake / "part-3.parquet"), pq.read_table(lake / "part-3.parquet").column("diagnosis").to_pylist()
    _seal(cli, keys, lake, "--id", "patient_id")
    (lake / "part-3.parquet").unlink()
    doc = _json(cli, "verify", lake, "--pubkey", keys[1])
    _counts_agree(doc)
    assert doc["removed"] == {"partition": ["part-3.parquet"] * 119, "row": list(range(119)), "id": ids,
                              "label": labels}
    assert doc["partitions"]["snapshots_read"] == ["part-3.parquet"]
    assert doc["findings"] == ["119 row(s) removed (ids of the sealed data missing)",
                               "1 partition(s) removed (119 rows): part-3.parquet"]
    r = cli("verify", lake, "--pubkey", keys[1])
    assert "Removed rows (119;" in r.stdout
    assert "snapshots read: 1 of 4\n" in r.stdout


def test_a_partition_moved_to_another_hive_folder_is_label_changes(tmp_path, cli, keys, breast_cancer_frame):
    lake = _hive(tmp_path / "HL", breast_cancer_frame)
    old = tmp_path / "HL-old"
    shutil.copytree(lake, old)
    _seal(cli, keys, lake, "--id", "patient_id")
    src = lake / "diagnosis=malignant" / "part-1.parquet"
    moved_ids = _ids(src)
    assert len(moved_ids) == 106
    os.rename(src, lake / "diagnosis=benign" / "part-1m.parquet")
    for doc in (_json(cli, "verify", lake, "--pubkey", keys[1]),
                _json(cli, "diff", old, lake, "--label", "diagnosis", "--id", "patient_id")):
        _counts_agree(doc)
        before, after = ("sealed", "current") if "signature" in doc else ("old", "new")
        assert doc["changed"] == {"partition": ["diagnosis=benign/part-1m.parquet"] * 106, "row": list(range(106)),
                                  "id": moved_ids, before: ["malignant"] * 106, after: ["benign"] * 106}
        assert doc["moved"]["from_partition"] == ["diagnosis=malignant/part-1.parquet"] * 106
        assert doc["moved"]["id"] == moved_ids and doc["n_added"] == doc["n_removed"] == 0
        assert doc["transitions"] == [{"from": "malignant", "to": "benign", "count": 106}]
        assert doc["findings"][:2] == ["106 label(s) changed (106 malignant -> benign)",
                                       "106 row(s) moved to another partition (106 of them with a changed label)"]
    r = cli("verify", lake, "--pubkey", keys[1], "--limit", "1")
    assert "Changed labels (106)" in r.stdout and "Rows moved to another partition (106)" in r.stdout
    r = cli("diff", old, lake, "--label", "diagnosis", "--id", "patient_id")
    assert r.exit_code == 1 and "turned 'malignant' -> 'benign'" in r.stdout


def test_a_row_moved_with_its_label_is_moved_not_removed_and_added(tmp_path, cli, keys, breast_cancer_frame):
    lake = _lake(tmp_path / "L1", breast_cancer_frame)
    store = _seal(cli, keys, lake, "--id", "patient_id")
    p1, p2 = pq.read_table(lake / "part-1.parquet"), pq.read_table(lake / "part-2.parquet")
    row = p1.slice(7, 1)
    pq.write_table(pa.concat_tables([p1.slice(0, 7), p1.slice(8)]), lake / "part-1.parquet")
    pq.write_table(pa.concat_tables([p2, row]), lake / "part-2.parquet")
    doc = _json(cli, "verify", lake, "--pubkey", keys[1])
    _counts_agree(doc)
    label = row.column("diagnosis")[0].as_py()
    assert doc["moved"] == {"id": [1157], "from_partition": ["part-1.parquet"], "from_row": [7],
                            "partition": ["part-2.parquet"], "row": [150], "sealed": [label], "current": [label]}
    assert (doc["n_changed"], doc["n_added"], doc["n_removed"]) == (0, 0, 0)
    assert doc["findings"] == ["1 row(s) moved to another partition (labels unchanged)"]
    assert doc["partitions"]["snapshots_read"] == ["part-1.parquet", "part-2.parquet"]
    assert len(list(store.glob("*.snapshot"))) == 4


def test_without_id_rows_of_added_and_removed_partitions_are_counted_and_not_matched(tmp_path, cli, keys,
                                                                                    breast_cancer_frame):
    lake = _lake(tmp_path / "L1", breast_cancer_frame)
    _seal(cli, keys, lake)
    os.rename(lake / "part-3.parquet", lake / "part-3.keep")
    shutil.copy(lake / "part-0.parquet", lake / "part-0-copy.parquet")
    doc = _json(cli, "verify", lake, "--pubkey", keys[1])
    _counts_agree(doc)
    assert (doc["n_added"], doc["n_removed"], doc["n_duplicated"], doc["n_moved"]) == (150, 119, 0, 0)
    assert doc["added"]["id"] == list(range(150)) and set(doc["added"]["partition"]) == {"part-0-copy.parquet"}
    assert doc["findings"][:2] == ["150 row(s) added", "119 row(s) removed"]
    assert doc["notes"] and "cannot be matched across partitions" in doc["notes"][0]
    r = cli("verify", lake, "--pubkey", keys[1])
    assert "  note: rows are identified by their position in their file (sealed without --id)" in r.stdout


def test_a_seal_of_dot_is_named_after_the_folder(tmp_path, cli, keys, breast_cancer_frame, monkeypatch):
    lake = _lake(tmp_path / "L5", breast_cancer_frame)
    monkeypatch.chdir(lake)
    r = cli("seal", ".", "--label", "diagnosis", "--id", "patient_id", "--key", keys[0], "--out", "../L5.json",
            "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["name"] == "L5"
    r = cli("seal", ".", "--label", "diagnosis", "--id", "patient_id", "--key", keys[0], "--json")
    assert json.loads(r.stdout)["manifest"] == str(tmp_path / "L5.flipguard.json")
    assert sorted(os.listdir(lake)) == [f"part-{i}.parquet" for i in range(4)]
    monkeypatch.chdir(tmp_path)
    r = cli("verify", "L5", "--pubkey", keys[1], "--manifest", "L5.json")
    assert r.exit_code == 0 and r.stdout.startswith("INTACT: L5 matches its seal ('L5' version 1"), r.stdout
    assert cli("verify", "L5", "--pubkey", keys[1]).exit_code == 0
    assert cli("verify", "L5/.", "--pubkey", keys[1], "--manifest", "L5.json").exit_code == 0


def test_lake_text_names_sealed_columns_counts_snapshots_and_refuses_another_name(tmp_path, cli, keys,
                                                                                  breast_cancer_frame):
    lake = _lake(tmp_path / "L2", breast_cancer_frame)
    _seal(cli, keys, lake, "--id", "patient_id", "--columns", "mean_radius")
    t = pq.read_table(lake / "part-1.parquet")
    radius = t.column("mean_radius").to_pylist()
    sealed, radius[3] = radius[3], 99.0
    pq.write_table(t.set_column(t.schema.get_field_index("mean_radius"), "mean_radius", pa.array(radius)),
                   lake / "part-1.parquet")
    r = cli("verify", lake, "--pubkey", keys[1])
    assert r.exit_code == 1
    assert "  - partition part-1.parquet: 1 value(s) of sealed column 'mean_radius' changed\n" in r.stdout
    assert ("snapshots read: 4 of 4 (seals with --columns or --private compare every partition with its "
            "snapshot)\n") in r.stdout
    assert "Sealed column 'mean_radius' changed (1)" in r.stdout
    assert "99.0" in r.stdout and str(sealed) in r.stdout
    doc = _json(cli, "verify", lake, "--pubkey", keys[1])
    assert doc["columns"] == {"mean_radius": {"partition": ["part-1.parquet"], "row": [3], "id": [1153],
                                              "sealed": [sealed], "current": [99.0]}}
    # without --columns, only the changed partition's snapshot is read
    plain = _lake(tmp_path / "L3", breast_cancer_frame)
    _seal(cli, keys, plain, "--id", "patient_id")
    t = pq.read_table(plain / "part-2.parquet")
    y = t.column("diagnosis").to_pylist()
    y[0] = "benign" if y[0] == "malignant" else "malignant"
    pq.write_table(t.set_column(t.schema.get_field_index("diagnosis"), "diagnosis", pa.array(y)),
                   plain / "part-2.parquet")
    r = cli("verify", plain, "--pubkey", keys[1])
    assert r.exit_code == 1 and "snapshots read: 1 of 4\n" in r.stdout
    # a seal made for another dataset name: the single file's REFUSED wording, exit 1
    manifest = Path(str(plain) + ".flipguard.json")
    other = tmp_path / "other"
    shutil.copytree(plain, other)
    r = cli("verify", other, "--pubkey", keys[1], "--manifest", manifest)
    assert r.exit_code == 1
    assert r.stdout == (f"REFUSED: manifest {manifest} cannot vouch for {other}\n"
                        "  - the manifest seals dataset 'L3', not 'other' (a seal of another dataset copied "
                        "here?); if the data was renamed, pass --name 'L3'\n")
    assert np.isclose(sealed, breast_cancer_frame.column("mean_radius")[153].as_py())


# -- outputs beside the data, never in it; one label type; errors that name the path -----------------
def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _one_line(r, message: str) -> None:
    assert (r.exit_code, r.stdout, r.stderr) == (2, "", f"Error: {message}\n")


def test_an_audit_out_inside_the_folder_is_refused_and_audit_results_there_are_not_data(tmp_path, cli, keys,
                                                                                          breast_cancer_frame):
    """``audit L/ --out L/audit`` wrote its results into the data: the next seal sealed them as rows
    (569 -> 1138) and the next audit failed naming a healthy partition."""
    from flipguard.detection import audit_partitioned
    from flipguard.exceptions import InvalidParameterError

    lake = _lake(tmp_path / "L", breast_cancer_frame)
    before = _listing(lake)
    r = cli("audit", f"{lake}/", "--label", "diagnosis", "--id", "patient_id", "--out", lake / "audit")
    _one_line(r, f"--out {lake / 'audit'} is inside DATA {lake}/: flipguard never writes into its input (the next "
                 "seal or audit of the folder would read the results as partitions); choose a folder outside it "
                 f"(default: {lake}.flipguard-audit)")
    for out in (lake / "part-0.parquet" / "x", lake, lake / "sub" / ".." / "res"):
        assert cli("audit", lake, "--label", "diagnosis", "--out", out).exit_code == 2
        with pytest.raises(InvalidParameterError, match="is inside DATA"):
            audit_partitioned(lake, label="diagnosis", out=out)
    assert _listing(lake) == before and not list(tmp_path.glob("*.flipguard-audit"))
    # results an earlier flipguard wrote inside the folder (recognised by their _audit.json) are skipped
    r = cli("audit", lake, "--label", "diagnosis", "--id", "patient_id", "--out", tmp_path / "res")
    assert r.exit_code == 0, r.stderr
    shutil.copytree(tmp_path / "res", lake / "audit")
    r = cli("seal", lake, "--label", "diagnosis", "--id", "patient_id", "--key", keys[0], "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert (doc["rows"], doc["partitions"]) == (569, 4)
    assert cli("verify", lake, "--pubkey", keys[1]).exit_code == 0
    r = cli("audit", lake, "--label", "diagnosis", "--id", "patient_id", "--out", tmp_path / "res2", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["n_samples"] == 569
    # a file named _audit.json that is not an audit's summary does not hide the data beside it
    (lake / "audit" / "_audit.json").write_text("{}\n")
    r = cli("seal", lake, "--label", "diagnosis", "--id", "patient_id", "--key", keys[0])
    assert r.exit_code == 2 and r.stderr.startswith("Error: partition audit/part-0.parquet: column(s)")


def test_an_audit_of_dot_writes_beside_the_folder_named_after_it(tmp_path, cli, breast_cancer_frame, monkeypatch):
    """``audit .`` wrote ``..flipguard-audit`` inside the dataset."""
    lake = _lake(tmp_path / "L5", breast_cancer_frame)
    before = _listing(lake)
    monkeypatch.chdir(lake)
    r = cli("audit", ".", "--label", "diagnosis", "--id", "patient_id", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["out"] == str(tmp_path / "L5.flipguard-audit")
    assert _listing(lake) == before
    assert sorted(os.listdir(tmp_path / "L5.flipguard-audit")) == ["_audit.json"] + [f"part-{i}.parquet"
                                                                                    for i in range(4)]
    shutil.rmtree(tmp_path / "L5.flipguard-audit")
    monkeypatch.chdir(tmp_path)
    r = cli("audit", "L5/.", "--label", "diagnosis", "--id", "patient_id", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["out"] == str(tmp_path / "L5.flipguard-audit")
    assert _listing(lake) == before


def _typed_lake(root: Path, frame: pa.Table, types: list) -> Path:
    """Four partitions whose 0/1 label (1 = malignant) is stored as ``types[i]``."""
    root.mkdir()
    y = pc.cast(pc.equal(frame.column("diagnosis"), "malignant"), pa.int64())
    t = frame.set_column(frame.schema.get_field_index("diagnosis"), "diagnosis", y)
    for i, typ in enumerate(types):
        part = t.slice(i * 150, 150)
        lab = part.column("diagnosis")
        lab = pc.cast(pc.cast(lab, pa.float64()), pa.string()) if typ == "text-of-float" else pc.cast(lab, typ)
        pq.write_table(part.set_column(part.schema.get_field_index("diagnosis"), "diagnosis", lab),
                       root / f"part-{i}.parquet")
    return root


@pytest.mark.parametrize("odd, shown", [(pa.float64(), "double"), (pa.string(), "string"),
                                        (pa.float32(), "float")])
def test_a_label_stored_as_another_type_in_one_partition_is_refused_by_audit_and_seal(
        tmp_path, cli, keys, breast_cancer_frame, odd, shown):
    """int 1, float 1.0 and "1" were merged (or split) as text: the audit fitted on them, the seal
    sealed them and verified INTACT."""
    lake = _typed_lake(tmp_path / "M", breast_cancer_frame, [pa.int64(), pa.int64(), odd, pa.int64()])
    message = (f"partition part-2.parquet: label column 'diagnosis' is {shown}, but int64 in part-0.parquet; a "
               "label column must have one type in every partition (integer widths may differ): rewrite the "
               "partitions with one label type")
    _one_line(cli("audit", lake, "--label", "diagnosis", "--id", "patient_id"), message)
    _one_line(cli("seal", lake, "--label", "diagnosis", "--id", "patient_id", "--key", keys[0]), message)
    assert sorted(os.listdir(tmp_path)) == ["M", "keys"]


def test_integer_widths_are_one_label_type_and_a_changed_type_is_a_lake_verify_finding(
        tmp_path, cli, keys, breast_cancer_frame):
    lake = _typed_lake(tmp_path / "W", breast_cancer_frame, [pa.int64(), pa.int32(), pa.uint8(), pa.int16()])
    r = cli("audit", lake, "--label", "diagnosis", "--id", "patient_id", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["classes"] == ["0", "1"]
    _seal(cli, keys, lake, "--id", "patient_id")
    assert cli("verify", lake, "--pubkey", keys[1]).exit_code == 0
    # the same values rewritten as text in one partition: the single file's type finding, not INTACT
    t = pq.read_table(lake / "part-1.parquet")
    pq.write_table(t.set_column(t.schema.get_field_index("diagnosis"), "diagnosis",
                                pc.cast(t.column("diagnosis"), pa.string())), lake / "part-1.parquet")
    doc = _json(cli, "verify", lake, "--pubkey", keys[1])
    assert doc["findings"][0].startswith("partition part-1.parquet: the label column 'diagnosis' changed type: "
                                         "sealed as integer, now string")
    assert doc["n_changed"] == 0 and doc["partitions"]["changed"] == ["part-1.parquet"]


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_a_continuous_or_id_like_label_is_refused_by_a_partitioned_audit_as_by_a_single_file(
        tmp_path, cli, breast_cancer_frame, fmt):
    """``audit lake/ --label f1`` fitted 5 models with 6000 classes and failed allocating 1.07 TiB."""
    import pyarrow.csv as pacsv

    root = tmp_path / "C"
    root.mkdir()
    t = breast_cancer_frame.slice(0, 200)
    t = t.append_column("score", pa.array((np.arange(200) % 40 + 5) / 100))  # 0.05 ... 0.44
    t = t.append_column("code", pa.array(np.arange(200) % 50))  # 50 integer "classes" of 4 rows
    for i in range(2):
        part = t.slice(i * 100, 100)
        if fmt == "csv":
            pacsv.write_csv(part, root / f"part-{i}.csv")
        else:
            pq.write_table(part, root / f"part-{i}.parquet")
    single = tmp_path / f"one.{fmt}"
    (pacsv.write_csv if fmt == "csv" else pq.write_table)(t, single)
    for label, what in (("score", "looks continuous (40 distinct numbers, e.g. 0.05)"),
                        ("code", "looks continuous or like an identifier (50 distinct values in 200 rows)")):
        tail = ("; flipguard needs class labels: name the class column with --label, or bin the values into "
                "classes first")
        _one_line(cli("audit", root, "--label", label, "--id", "patient_id"), f"{root}: label column '{label}' "
                  f"{what}{tail}")
        r = cli("audit", single, "--label", label, "--id", "patient_id")
        assert r.exit_code == 2 and f"label column '{label}' {what}" in r.stderr  # the single file's words
    assert sorted(os.listdir(tmp_path)) == ["C", single.name]


def test_a_text_label_with_too_many_classes_is_refused_before_any_fit(tmp_path, cli, breast_cancer_frame):
    """A text label of 600 classes would need 600 x 600 x 4096 histogram counts (11 GiB) per task."""
    root = tmp_path / "T"
    root.mkdir()
    t = pa.concat_tables([breast_cancer_frame, breast_cancer_frame.slice(0, 31)])
    t = t.append_column("who", pa.array([f"user{i}" for i in range(600)]))
    for i in range(2):
        pq.write_table(t.slice(i * 300, 300), root / f"part-{i}.parquet")
    _one_line(cli("audit", root, "--label", "who", "--id", "patient_id"),
              f"{root}: the label column 'who' has 600 classes (e.g. user0, user1, user10, user100); a partitioned "
              "audit keeps a 4096-bin margin histogram per pair of classes (11.0 GiB per worker here) and takes at "
              "most 128 classes: is 'who' the label?")
    assert sorted(os.listdir(tmp_path)) == ["T"]


def test_seal_and_verify_of_a_missing_folder_name_it(tmp_path, cli):
    """``seal nonexist/`` said ``--out nonexist/.flipguard.json: folder nonexist does not exist`` and
    ``verify nonexist/`` ``manifest nonexist/.flipguard.json: no such file``."""
    keys = tmp_path / "keys"
    assert cli("keygen", "--out", keys).exit_code == 0
    gone = f"{tmp_path / 'nonexist'}/"
    _one_line(cli("seal", gone, "--label", "y", "--key", keys / "flipguard.key"), f"{gone}: no such file or folder")
    _one_line(cli("verify", gone, "--pubkey", keys / "flipguard.pub"), f"{gone}: no such file or folder")


def test_diff_of_a_folder_with_a_missing_path_or_a_file_says_which(tmp_path, cli, breast_cancer_frame):
    """It said ``Error: lake/: is a directory, not a CSV or Parquet file`` for both."""
    lake = _lake(tmp_path / "L", breast_cancer_frame)
    pq.write_table(breast_cancer_frame, tmp_path / "d.parquet")
    _one_line(cli("diff", f"{lake}/", tmp_path / "nonexist/", "--label", "diagnosis", "--id", "patient_id"),
              f"{tmp_path / 'nonexist'}: no such file or folder")
    _one_line(cli("diff", tmp_path / "gone.parquet", lake, "--label", "diagnosis"),
              f"{tmp_path / 'gone.parquet'}: no such file or folder")
    for old, new in ((lake, tmp_path / "d.parquet"), (tmp_path / "d.parquet", lake)):
        _one_line(cli("diff", old, new, "--label", "diagnosis", "--id", "patient_id"),
                  f"cannot compare {lake} (a folder of partitions) with {tmp_path / 'd.parquet'} (a single file "
                  "or table): give two folders, or two files")


def test_a_truncated_partition_snapshot_names_the_partition_and_the_file(tmp_path, cli, keys, breast_cancer_frame):
    """A truncated snapshot said ``Error: snapshot: does not match the manifest (30 bytes...)``."""
    lake = _lake(tmp_path / "L", breast_cancer_frame)
    store = _seal(cli, keys, lake, "--id", "patient_id")
    root = json.loads(Path(str(lake) + ".flipguard.json").read_text())
    snaps = {}
    for e in root["partitions"]:
        snaps[e["name"]] = store / json.loads((store / f"{e['manifest']}.json").read_text())["snapshot"]["file"]
    t = pq.read_table(lake / "part-2.parquet")
    y = t.column("diagnosis").to_pylist()
    y[0] = "benign" if y[0] == "malignant" else "malignant"
    pq.write_table(t.set_column(t.schema.get_field_index("diagnosis"), "diagnosis", pa.array(y)),
                   lake / "part-2.parquet")
    for name in ("part-2.parquet", "part-3.parquet"):
        snaps[name].write_bytes(snaps[name].read_bytes()[:30])
    tail = "does not match the manifest (30 bytes, SHA-256 differs); the snapshot was modified, truncated or replaced"
    _one_line(cli("verify", lake, "--pubkey", keys[1]), f"partition part-2.parquet: snapshot {snaps['part-2.parquet']}: "
              f"{tail}")
    pq.write_table(t, lake / "part-2.parquet")  # intact again: its snapshot is not read
    (lake / "part-3.parquet").unlink()  # a removed partition's snapshot is read for its rows
    _one_line(cli("verify", lake, "--pubkey", keys[1]), f"partition part-3.parquet: snapshot "
              f"{snaps['part-3.parquet']}: {tail}")
    snaps["part-3.parquet"].unlink()
    _one_line(cli("verify", lake, "--pubkey", keys[1]), f"partition part-3.parquet: snapshot "
              f"{snaps['part-3.parquet']} is missing")
