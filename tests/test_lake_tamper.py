"""Red team against sealed folders (lakes): nothing pandas, ``pyarrow.dataset`` or a per-file reader
would read from a sealed folder can change, appear or disappear without ``verify`` reporting it
(exit 1), and every input flipguard cannot use is one ``Error:`` line, exit 2, never a hang.

Each test is one reproduced attack: a forged ``_audit.json`` hiding a folder, files and links readers
see that flipguard did not, CSV null words merged, FIFOs and ``/dev/zero`` in place of manifests and
snapshots, ``--ledger``/``--table`` silently dropped for a folder, a label that is both a hive key
and a column, and a seal version pushed by a replaced seal that was not this dataset's or this key's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import no_hang as _no_hang

from flipguard.integrity._manifest import canonical_json


@pytest.fixture
def keys(tmp_path, cli):
    r = cli("keygen", "--out", tmp_path / "keys")
    assert r.exit_code == 0, r.stderr
    return tmp_path / "keys" / "flipguard.key", tmp_path / "keys" / "flipguard.pub"




def _pq(path: Path, cols: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(cols), path)


def _lake(tmp_path: Path) -> Path:
    lake = tmp_path / "lake"
    _pq(lake / "part-0.parquet", {"id": [1, 2, 3], "y": ["cat", "dog", "cat"]})
    return lake


def _seal(cli, keys, data, *extra) -> None:
    r = cli("seal", data, "--label", "y", "--id", "id", "--key", keys[0], *extra)
    assert r.exit_code == 0, r.stdout + r.stderr


def _verify(cli, keys, data, *extra):
    with _no_hang():
        return cli("verify", data, "--pubkey", keys[1], *extra)


def _one_line(r, *texts) -> None:
    assert r.exit_code == 2, r.stdout + r.stderr
    assert r.stdout == "" and r.stderr.startswith("Error: ") and r.stderr.count("\n") == 1, r.stderr
    for t in texts:
        assert t in r.stderr, r.stderr


def _pandas_rows(lake: Path) -> int:
    import pandas as pd

    return len(pd.read_parquet(lake))


# -- 1. a forged _audit.json hides nothing --------------------------------------------------------
FORGED_SUMMARY = ('{"method":"confident_learning","n_flagged":0,"estimated_flips":0,"joint":[],"partitions":[],'
                  '"out":"x"}')


def test_a_forged_audit_summary_added_after_the_seal_hides_no_folder(tmp_path, cli, keys):
    lake = _lake(tmp_path)
    _seal(cli, keys, lake)
    _pq(lake / "extra" / "part-9.parquet", {"id": [1, 8], "y": ["dog", "dog"]})
    (lake / "extra" / "_audit.json").write_text(FORGED_SUMMARY)
    assert _pandas_rows(lake) == 5
    r = _verify(cli, keys, lake, "--json")
    assert r.exit_code == 1, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert doc["partitions"]["added"] == ["extra/part-9.parquet"]
    assert any("extra/part-9.parquet" in f for f in doc["findings"])
    assert doc["n_duplicated"] == 1 and doc["n_added"] == 1  # id 1 is a second row; id 8 is new


def test_audit_results_inside_a_folder_at_seal_are_sealed_byte_for_byte(tmp_path, cli, keys):
    """A folder an earlier flipguard's audit wrote into the data is not read as rows, but its files
    are sealed by their bytes: changing, adding to or removing from it is a finding."""
    lake = _lake(tmp_path)
    _pq(lake / "extra" / "part-9.parquet", {"row": [0], "score": [0.5]})
    (lake / "extra" / "_audit.json").write_text(FORGED_SUMMARY)
    r = cli("seal", lake, "--label", "y", "--id", "id", "--key", keys[0], "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["files"] == ["extra/part-9.parquet"]
    assert _verify(cli, keys, lake).exit_code == 0
    _pq(lake / "extra" / "part-9.parquet", {"id": [1, 8], "y": ["dog", "dog"]})
    r = _verify(cli, keys, lake, "--json")
    assert r.exit_code == 1
    doc = json.loads(r.stdout)
    assert doc["files"]["changed"] == ["extra/part-9.parquet"]
    assert "1 file(s) sealed by their bytes changed: extra/part-9.parquet" in doc["findings"]
    # a file added beside them is read as a partition: the signed manifest, not the folder, decides
    _pq(lake / "extra" / "part-9.parquet", {"row": [0], "score": [0.5]})
    _pq(lake / "extra" / "part-10.parquet", {"id": [11], "y": ["dog"]})
    doc = json.loads(_verify(cli, keys, lake, "--json").stdout)
    assert doc["partitions"]["added"] == ["extra/part-10.parquet"] and doc["files"]["changed"] == []
    (lake / "extra" / "part-10.parquet").unlink()
    (lake / "extra" / "part-9.parquet").unlink()
    r = _verify(cli, keys, lake)
    assert r.exit_code == 1 and "1 file(s) sealed by their bytes removed or replaced: extra/part-9.parquet" in r.stdout


# -- 2. partitions readers see but flipguard did not ----------------------------------------------
def test_a_symlinked_folder_is_refused_at_seal_and_a_finding_at_verify(tmp_path, cli, keys):
    lake = _lake(tmp_path)
    _pq(tmp_path / "evil" / "p.parquet", {"id": [2, 9], "y": ["cat", "cat"]})
    _seal(cli, keys, lake)
    os.symlink("../evil", lake / "evil")
    assert _pandas_rows(lake) == 5
    r = _verify(cli, keys, lake)
    assert r.exit_code == 1, r.stdout + r.stderr
    assert "evil (a symbolic link to a folder" in r.stdout
    r = cli("seal", lake, "--label", "y", "--id", "id", "--key", keys[0])
    _one_line(r, "evil (a symbolic link to a folder", "not partitions flipguard reads")


def test_a_parquet_file_without_a_suffix_is_named(tmp_path, cli, keys):
    lake = _lake(tmp_path)
    _seal(cli, keys, lake)
    _pq(lake / "part-2", {"id": [1, 7], "y": ["dog", "dog"]})
    assert _pandas_rows(lake) == 5
    r = _verify(cli, keys, lake, "--json")
    assert r.exit_code == 1
    doc = json.loads(r.stdout)
    assert doc["files"]["unread"] == [{"name": "part-2", "why": "Parquet data without a .parquet suffix"}]
    assert "part-2 (Parquet data without a .parquet suffix)" in doc["findings"][-1]
    r = cli("seal", lake, "--label", "y", "--id", "id", "--key", keys[0])
    _one_line(r, "part-2 (Parquet data without a .parquet suffix)")
    (lake / "part-2").rename(lake / "part-2.parquet")
    _seal(cli, keys, lake)
    assert _verify(cli, keys, lake).exit_code == 0


@pytest.mark.parametrize("name, plant, why", [
    ("notes", lambda p: p.write_text("hello\n"), "no .parquet/.csv suffix"),
    ("fifo.parquet", lambda p: os.mkfifo(p), "a FIFO"),
    ("gone", lambda p: os.symlink("nowhere", p), "a symbolic link to nothing"),
    ("x.flipguard.json", lambda p: pq.write_table(pa.table({"id": [5], "y": ["cat"]}), p), "Parquet data under a name"),
])
def test_other_files_readers_may_read_are_named(tmp_path, cli, keys, name, plant, why):
    lake = _lake(tmp_path)
    _seal(cli, keys, lake)
    plant(lake / name)
    r = _verify(cli, keys, lake)
    assert r.exit_code == 1 and f"{name} ({why}" in r.stdout, r.stdout + r.stderr
    with _no_hang():
        r = cli("seal", lake, "--label", "y", "--id", "id", "--key", keys[0])
    _one_line(r, f"{name} ({why}")


def test_hidden_files_and_flipguards_own_outputs_are_not_data(tmp_path, cli, keys):
    lake = _lake(tmp_path)
    (lake / "_SUCCESS").write_text("")
    (lake / ".crc").write_text("x")
    _pq(lake / "_tmp" / "p.parquet", {"id": [9], "y": ["cat"]})
    _seal(cli, keys, lake)
    (lake / "part-0.parquet.flipguard.json").write_text("{}\n")
    assert _verify(cli, keys, lake).exit_code == 0


# -- 3. CSV partitions are read as exact text -------------------------------------------------------
@pytest.mark.parametrize("new", ["N/A", "null", "", "NaN"])
def test_csv_null_words_are_distinct_labels_in_a_folder(tmp_path, cli, keys, new):
    lake = tmp_path / "lc"
    lake.mkdir()
    (lake / "a.csv").write_text("id,y\n1,cat\n2,NA\n3,dog\n")
    _seal(cli, keys, lake)
    (lake / "a.csv").write_text(f"id,y\n1,cat\n2,{new}\n3,dog\n")
    r = _verify(cli, keys, lake, "--json")
    assert r.exit_code == 1, r.stdout
    doc = json.loads(r.stdout)
    assert doc["changed"]["id"] == [2] and doc["changed"]["sealed"] == ["NA"] and doc["changed"]["current"] == [new]


def test_csv_ids_are_read_as_a_single_csv_seal_reads_them(tmp_path, cli, keys):
    """``0104`` is id 104 in one partition and in the other; a text id stays text."""
    lake = tmp_path / "ids"
    lake.mkdir()
    (lake / "a.csv").write_text("id,y\n0104,cat\n105,dog\n")
    (lake / "b.csv").write_text("id,y\nx-1,cat\n")
    _seal(cli, keys, lake)
    (lake / "a.csv").write_text("id,y\n104,cat\n105.0,dog\n")
    assert _verify(cli, keys, lake).exit_code == 0


# -- 4. FIFOs and /dev/zero in place of seal files --------------------------------------------------
def _store(lake: Path) -> Path:
    return Path(str(lake) + ".flipguard.parts")


def _root(lake: Path) -> Path:
    return Path(str(lake) + ".flipguard.json")


def _swap_fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def _swap_zero(path: Path) -> None:
    path.unlink()
    os.symlink("/dev/zero", path)


def _edit_label(lake: Path) -> None:
    _pq(lake / "part-0.parquet", {"id": [1, 2, 3], "y": ["dog", "dog", "cat"]})


@pytest.mark.parametrize("case, prepare, text", [
    ("root-fifo", lambda lake: _swap_fifo(_root(lake)), "is a FIFO"),
    ("root-dev-zero", lambda lake: _swap_zero(_root(lake)), "is a device"),
    ("part-manifest-fifo", lambda lake: _swap_fifo(next(_store(lake).glob("*.json"))), "is a FIFO"),
    ("part-manifest-dev-zero", lambda lake: _swap_zero(next(_store(lake).glob("*.json"))), "is a device"),
    ("snapshot-fifo", lambda lake: (_edit_label(lake), _swap_fifo(next(_store(lake).glob("*.snapshot")))),
     "is a FIFO"),
    ("snapshot-dev-zero", lambda lake: (_edit_label(lake), _swap_zero(next(_store(lake).glob("*.snapshot")))),
     "is a device"),
])
def test_fifos_and_devices_in_a_lake_seal_are_one_line_never_a_hang(tmp_path, cli, keys, case, prepare, text):
    lake = _lake(tmp_path)
    _seal(cli, keys, lake)
    prepare(lake)
    _one_line(_verify(cli, keys, lake), text)


@pytest.mark.parametrize("swap", [_swap_fifo, _swap_zero])
def test_seal_with_a_fifo_or_device_at_the_manifest_path_is_refused(tmp_path, cli, keys, swap):
    lake = _lake(tmp_path)
    _seal(cli, keys, lake)
    swap(_root(lake))
    with _no_hang():
        r = cli("seal", lake, "--label", "y", "--id", "id", "--key", keys[0])
    if swap is _swap_fifo:
        _one_line(r, "is a FIFO")
    else:  # a link is replaced, never written through: the new seal stands where the link was
        assert r.exit_code == 0, r.stderr
        assert _root(lake).is_file() and not _root(lake).is_symlink()
        assert json.loads(_root(lake).read_text())["version"] == 1


def test_a_partition_store_that_is_a_link_is_refused(tmp_path, cli, keys):
    lake = _lake(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", _store(lake))
    r = cli("seal", lake, "--label", "y", "--id", "id", "--key", keys[0])
    _one_line(r, "is a symbolic link")
    assert not list((tmp_path / "elsewhere").iterdir())


# -- 5. options that cannot apply to a folder are refused ------------------------------------------
def test_verify_of_a_folder_refuses_ledger_and_table(tmp_path, cli, keys):
    lake = _lake(tmp_path)
    _seal(cli, keys, lake)
    r = _verify(cli, keys, lake, "--ledger", tmp_path / "nonexistent")
    _one_line(r, "--ledger is not supported for a folder")
    r = _verify(cli, keys, lake, "--table", "labels")
    _one_line(r, "--table is for a postgresql:// DSN, not a folder")
    r = cli("seal", lake, "--label", "y", "--key", keys[0], "--table", "labels")
    _one_line(r, "--table is for a postgresql:// DSN, not a folder")
    r = cli("seal", lake, "--label", "y", "--key", keys[0], "--columns", "all")
    _one_line(r, "--columns all is not supported for a folder")


# -- 6. a label that is a hive key and a column in the file ----------------------------------------
def test_a_label_that_is_both_a_folder_key_and_a_column_is_refused(tmp_path, cli, keys):
    hive = tmp_path / "hive"
    _pq(hive / "y=a" / "part-0.parquet", {"id": [1, 2], "y": ["a", "a"]})
    _pq(hive / "y=b" / "part-0.parquet", {"id": [3, 4]})
    r = cli("seal", hive, "--label", "y", "--id", "id", "--key", keys[0])
    _one_line(r, "partition y=a/part-0.parquet: column 'y' is both a folder key (y=a/) and a column in the file")
    # sealed while the files hold no label column, then one is written into a file: not INTACT
    _pq(hive / "y=a" / "part-0.parquet", {"id": [1, 2]})
    _seal(cli, keys, hive)
    _pq(hive / "y=a" / "part-0.parquet", {"id": [1, 2], "y": ["b", "b"]})
    _one_line(_verify(cli, keys, hive), "is both a folder key")


# -- 7. the version of the seal being replaced counts only if it is this dataset's, by this key ---
def test_lake_seal_version_follows_the_single_file_rule(tmp_path, cli, keys):
    lake = _lake(tmp_path)

    def version(*extra):
        r = cli("seal", lake, "--label", "y", "--id", "id", "--key", keys[0], "--json", *extra)
        assert r.exit_code == 0, r.stderr
        return json.loads(r.stdout)["version"]

    assert version() == 1
    assert version() == 2
    assert version("--name", "other") == 1  # the seal replaced was another dataset's
    assert version() == 1
    assert cli("keygen", "--out", tmp_path / "k2").exit_code == 0
    r = cli("seal", lake, "--label", "y", "--id", "id", "--key", tmp_path / "k2" / "flipguard.key")
    assert r.exit_code == 0
    assert version() == 1  # the seal replaced was another key's
    doc = json.loads(_root(lake).read_text())
    doc["version"] = 424242  # forged: the signature no longer checks out
    _root(lake).write_bytes(canonical_json(doc) + b"\n")
    assert version() == 1
    assert version() == 2


def test_diff_of_two_folders_names_other_files_and_compares_audit_results_by_bytes(tmp_path, cli):
    a, b = _lake(tmp_path), tmp_path / "b"
    _pq(b / "part-0.parquet", {"id": [1, 2, 3], "y": ["cat", "dog", "cat"]})
    for d in (a, b):
        _pq(d / "res" / "p0.parquet", {"row": [0], "score": [0.5]})
        (d / "res" / "_audit.json").write_text(FORGED_SUMMARY)
    assert cli("diff", a, b, "--label", "y", "--id", "id").exit_code == 0
    _pq(b / "res" / "p0.parquet", {"id": [9], "y": ["dog"]})
    r = cli("diff", a, b, "--label", "y", "--id", "id", "--json")
    assert r.exit_code == 1 and json.loads(r.stdout)["files"]["changed"] == ["res/p0.parquet"]
    _pq(b / "part-2", {"id": [7], "y": ["dog"]})
    _one_line(cli("diff", a, b, "--label", "y", "--id", "id"), "part-2 (Parquet data without a .parquet suffix)")
