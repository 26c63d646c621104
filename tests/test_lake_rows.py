"""Lake verify/diff name rows of whole added, removed and moved partitions (matched by id across
partitions), seals of ``.`` are named after the folder, and the lake text output matches the file's."""

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
