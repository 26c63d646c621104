"""CLI tests of keygen, seal, verify and diff: exit codes, exact error lines, the docs walk-through."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def keys(tmp_path, cli):
    r = cli("keygen", "--out", tmp_path / "keys")
    assert r.exit_code == 0, r.stderr
    return tmp_path / "keys" / "flipguard.key", tmp_path / "keys" / "flipguard.pub"


@pytest.fixture
def sealed_csv(tmp_path, cli, keys, breast_cancer_csv):
    r = cli("seal", breast_cancer_csv, "--label", "diagnosis", "--id", "patient_id", "--key", keys[0])
    assert r.exit_code == 0, r.stderr
    return breast_cancer_csv, Path(str(breast_cancer_csv) + ".flipguard.json")


def _edit_csv(path: Path, ids_to_label: dict) -> None:
    """Rewrite some rows' diagnosis by hand, as a person with write access would."""
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines[1:], start=1):
        pid = line.split(",", 1)[0]
        if pid in ids_to_label:
            lines[i] = line.rsplit(",", 1)[0] + f',"{ids_to_label[pid]}"'
    path.write_text("\n".join(lines) + "\n")


# -- keygen ---------------------------------------------------------------------------
def test_keygen_output_never_shows_key_material(tmp_path, cli):
    r = cli("keygen", "--out", tmp_path / "k")
    assert r.exit_code == 0
    private = (tmp_path / "k" / "flipguard.key").read_text()
    body = "".join(private.splitlines()[1:-1])
    assert body not in r.stdout and "PRIVATE" not in r.stdout
    assert re.search(r"key id [0-9a-f]{16}", r.stdout)
    assert stat.S_IMODE(os.stat(tmp_path / "k" / "flipguard.key").st_mode) == 0o600


def test_keygen_refuses_to_overwrite(tmp_path, cli, keys):
    before = keys[0].read_bytes()
    r = cli("keygen", "--out", tmp_path / "keys")
    assert r.exit_code == 2
    assert r.stderr == (f"Error: {keys[0]} and {keys[1]} already exist; pass --force "
                        "to replace the key pair\n")
    assert keys[0].read_bytes() == before
    assert cli("keygen", "--out", tmp_path / "keys", "--force").exit_code == 0
    assert keys[0].read_bytes() != before


def test_keygen_refuses_an_empty_out_and_a_folder_in_the_keys_place(tmp_path, cli, monkeypatch):
    """`--out ""` wrote the pair into the current folder; a folder where flipguard.key goes gave
    Python's "[Errno 21] Is a directory" with a temporary file's name."""
    monkeypatch.chdir(tmp_path)
    r = cli("keygen", "--out", "")
    assert r.exit_code == 2 and r.stderr == "Error: --out is empty; give the folder for the key pair (e.g. --out keys/)\n"
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "k" / "flipguard.key").mkdir(parents=True)
    r = cli("keygen", "--out", tmp_path / "k", "--force")
    assert r.exit_code == 2
    assert r.stderr == f"Error: {tmp_path / 'k' / 'flipguard.key'} is a folder; remove it or choose another --out\n"
    assert sorted(p.name for p in (tmp_path / "k").iterdir()) == ["flipguard.key"]


def test_private_key_with_mode_0644_is_refused(tmp_path, cli, keys, breast_cancer_csv):
    os.chmod(keys[0], 0o644)
    r = cli("seal", breast_cancer_csv, "--label", "diagnosis", "--id", "patient_id", "--key", keys[0])
    assert r.exit_code == 2
    assert r.stderr == (f"Error: private key {keys[0]} is readable by group or others (mode 0644); "
                        f"refusing to use it. Fix: chmod 600 {keys[0]}\n")
    assert not Path(str(breast_cancer_csv) + ".flipguard.json").exists()


# -- seal / verify ----------------------------------------------------------------------
def test_verify_clean_exits_0(cli, keys, sealed_csv):
    data, manifest = sealed_csv
    r = cli("verify", data, "--pubkey", keys[1])
    assert r.exit_code == 0, r.stdout + r.stderr
    assert r.stdout.startswith(f"OK: all 569 sealed labels of {data} match (manifest {manifest}, "
                               "'breast_cancer.csv' version 1, sealed ")


def test_verify_lists_exact_rows_edited_by_hand(cli, keys, sealed_csv):
    data, manifest = sealed_csv
    before = data.read_text()
    _edit_csv(data, {"1003": "benign", "1010": "benign"})
    assert data.read_text() != before
    r = cli("verify", data, "--manifest", manifest, "--pubkey", keys[1])
    assert r.exit_code == 1
    assert r.stdout.startswith(f"TAMPERED: {data} differs from its seal")
    assert "2 label(s) changed (2 malignant -> benign)" in r.stdout
    assert re.search(r"│ 3\s+│ 1003\s+│ malignant\s+│ benign\s+│", r.stdout)
    assert re.search(r"│ 10\s+│ 1010\s+│ malignant\s+│ benign\s+│", r.stdout)
    j = json.loads(cli("verify", data, "--pubkey", keys[1], "--json").stdout)
    assert j["ok"] is False
    assert j["changed"] == {"row": [3, 10], "id": [1003, 1010], "sealed": ["malignant", "malignant"],
                            "current": ["benign", "benign"]}
    assert j["class_counts"] == [{"label": "benign", "sealed": 357, "current": 359, "change": 2},
                                 {"label": "malignant", "sealed": 212, "current": 210, "change": -2}]


def test_empty_and_space_padded_labels_stay_visible(cli, keys, sealed_csv):
    """Labels are exact text: '' and 'benign ' are labels of their own and must not print as nothing or 'benign'."""
    data, manifest = sealed_csv
    _edit_csv(data, {"1003": "", "1010": "benign "})
    r = cli("verify", data, "--manifest", manifest, "--pubkey", keys[1])
    assert r.exit_code == 1
    assert "2 label(s) changed (1 malignant -> <empty>, 1 malignant -> 'benign ')" in r.stdout
    assert re.search(r"│ 3\s+│ 1003\s+│ malignant\s+│ <empty>\s+│", r.stdout)
    assert re.search(r"│ 10\s+│ 1010\s+│ malignant\s+│ 'benign '\s+│", r.stdout)
    j = json.loads(cli("verify", data, "--pubkey", keys[1], "--json").stdout)
    assert j["changed"]["current"] == ["", "benign "]  # the JSON keeps the exact text


def test_verify_added_removed_duplicated_rows(tmp_path, cli, keys, sealed_csv):
    data, manifest = sealed_csv
    lines = data.read_text().splitlines()
    header, rows = lines[0], lines[1:]
    dup = rows[5]
    rows = rows[1:]  # remove patient 1000
    rows.append("9999" + dup[dup.index(","):])  # add a new patient
    rows.append(dup)  # duplicate patient 1005
    data.write_text("\n".join([header] + rows[::-1]) + "\n")  # and reverse the order
    j = json.loads(cli("verify", data, "--manifest", manifest, "--pubkey", keys[1], "--json").stdout)
    assert j["aligned_by"] == "id"
    assert j["removed"]["id"] == [1000] and j["added"]["id"] == [9999]
    assert j["duplicated"] == {"id": [1005], "count": [2]}
    assert j["n_changed"] == 0
    r = cli("verify", data, "--manifest", manifest, "--pubkey", keys[1])
    assert r.exit_code == 1
    assert "1 row(s) added" in r.stdout and "1 row(s) removed" in r.stdout and "1 id(s) duplicated" in r.stdout


def test_reordered_rows_and_other_columns_pass(cli, keys, sealed_csv):
    data, manifest = sealed_csv
    tbl = pacsv.read_csv(data)
    tbl = tbl.take(pa.array(np.random.default_rng(0).permutation(tbl.num_rows)))
    tbl = tbl.set_column(1, tbl.column_names[1], pa.array(np.zeros(tbl.num_rows)))
    pacsv.write_csv(tbl, data)
    r = cli("verify", data, "--manifest", manifest, "--pubkey", keys[1])
    assert r.exit_code == 0, r.stdout


def test_a_file_without_an_id_column_is_sealed_by_row_position(tmp_path, cli, keys, breast_cancer_frame):
    """No --id: each row is identified by its position.  An edited label is named exactly; a
    deleted row shifts the rest, which can never pass; Parquet the same; a database table,
    whose rows have no stable order, needs --id (one line, exit 2, nothing written)."""
    frame = breast_cancer_frame.drop_columns(["patient_id"])
    data = tmp_path / "no_ids.csv"
    pacsv.write_csv(frame, data)
    r = cli("seal", data, "--label", "diagnosis", "--key", keys[0])
    assert r.exit_code == 0, r.stderr
    assert "rows identified by their position" in r.stdout
    manifest = json.loads(Path(str(data) + ".flipguard.json").read_text())
    assert manifest["id"] == "(row)" and manifest["rows"] == frame.num_rows
    assert cli("verify", data, "--pubkey", keys[1]).exit_code == 0
    labels = frame.column("diagnosis").to_pylist()
    edited = frame.set_column(frame.column_names.index("diagnosis"), "diagnosis",
                              pa.array(["benign" if i == 7 else v for i, v in enumerate(labels)]))
    assert labels[7] == "malignant"
    pacsv.write_csv(edited, data)
    j = json.loads(cli("verify", data, "--pubkey", keys[1], "--json").stdout)
    assert j["ok"] is False
    assert j["changed"] == {"row": [7], "id": [7], "sealed": ["malignant"], "current": ["benign"]}
    pacsv.write_csv(frame.slice(1), data)  # the first row deleted: every later row moves up one
    r = cli("verify", data, "--pubkey", keys[1])
    assert r.exit_code == 1 and "1 row(s) removed" in r.stdout
    original = tmp_path / "original.csv"
    pacsv.write_csv(frame, original)
    d = json.loads(cli("diff", original, data, "--label", "diagnosis", "--json").stdout)
    assert d["identical"] is False and d["aligned_by"] == "id"
    assert d["removed"]["id"] == [frame.num_rows - 1]  # the last position is gone
    pq_path = tmp_path / "no_ids.parquet"
    import pyarrow.parquet as pq

    pq.write_table(frame, pq_path)
    assert cli("seal", pq_path, "--label", "diagnosis", "--key", keys[0]).exit_code == 0
    pq.write_table(edited, pq_path)
    j = json.loads(cli("verify", pq_path, "--pubkey", keys[1], "--json").stdout)
    assert j["changed"]["row"] == [7]
    out = tmp_path / "db.flipguard.json"
    r = cli("seal", "postgresql://postgres@127.0.0.1/test", "--table", "labels", "--label", "diagnosis",
            "--key", keys[0], "--out", out)
    assert r.exit_code == 2 and not out.exists()
    assert r.stderr.strip().splitlines() == [
        "Error: a database table's rows have no stable order, so their position cannot identify them: "
        "give its key column with --id"]


def test_wrong_key_exits_1_with_both_key_ids(tmp_path, cli, keys, sealed_csv):
    data, manifest = sealed_csv
    cli("keygen", "--out", tmp_path / "other")
    r = cli("verify", data, "--manifest", manifest, "--pubkey", tmp_path / "other" / "flipguard.pub")
    assert r.exit_code == 1
    signer = json.loads(manifest.read_text())["key_id"]
    m = re.search(r"public key given: ([0-9a-f]{16})", r.stdout)
    assert m and m.group(1) != signer
    assert r.stdout.splitlines()[0] == (f"SIGNATURE INVALID: the manifest was signed by key {signer}, "
                                        f"not by the public key given ({m.group(1)})")


def test_edited_manifest_signature_fails(cli, keys, sealed_csv):
    data, manifest = sealed_csv
    doc = json.loads(manifest.read_text())
    doc["classes"][0]["count"] += 1
    doc["classes"][1]["count"] -= 1
    manifest.write_bytes(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode() + b"\n")
    r = cli("verify", data, "--manifest", manifest, "--pubkey", keys[1])
    assert r.exit_code == 1
    assert r.stdout.splitlines()[0] == ("SIGNATURE INVALID: the manifest's signature does not match its "
                                        "contents: it was modified after signing")


def test_truncated_manifest_exits_2(cli, keys, sealed_csv):
    data, manifest = sealed_csv
    manifest.write_bytes(manifest.read_bytes()[:200])
    r = cli("verify", data, "--manifest", manifest, "--pubkey", keys[1])
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.startswith(f"Error: manifest {manifest}: not valid JSON (")
    assert r.stderr.endswith("; corrupt or truncated\n") and r.stderr.count("\n") == 1


def test_reformatted_manifest_exits_2(cli, keys, sealed_csv):
    data, manifest = sealed_csv
    manifest.write_text(json.dumps(json.loads(manifest.read_text()), indent=2))
    r = cli("verify", data, "--manifest", manifest, "--pubkey", keys[1])
    assert r.exit_code == 2
    assert r.stderr == (f"Error: manifest {manifest}: not in canonical form (the file was edited or re-formatted "
                        "after sealing; a manifest must be byte-for-byte as flipguard wrote it)\n")


def test_truncated_or_missing_snapshot_exits_2(cli, keys, sealed_csv):
    data, manifest = sealed_csv
    snap = Path(str(data) + ".flipguard.snapshot")
    original = snap.read_bytes()
    snap.write_bytes(original[:-7])
    r = cli("verify", data, "--manifest", manifest, "--pubkey", keys[1])
    assert r.exit_code == 2
    assert r.stderr == (f"Error: snapshot {snap}: does not match the manifest ({len(original) - 7} bytes, "
                        "SHA-256 differs); the snapshot was modified, truncated or replaced\n")
    snap.unlink()
    r = cli("verify", data, "--manifest", manifest, "--pubkey", keys[1])
    assert r.exit_code == 2
    assert r.stderr == f"Error: snapshot {snap}: no such file (it belongs next to manifest {manifest})\n"


def test_manifest_of_another_dataset_exits_2(tmp_path, cli, keys, sealed_csv):
    _, manifest = sealed_csv
    other = tmp_path / "other.csv"
    other.write_text("id,label,x\n1,a,0.5\n2,b,0.7\n")
    r = cli("verify", other, "--manifest", manifest, "--pubkey", keys[1])
    assert r.exit_code == 1  # bound to another dataset's name: refused before any data is read
    assert r.stdout == (f"REFUSED: manifest {manifest} cannot vouch for {other}\n"
                        "  - the manifest seals dataset 'breast_cancer.csv', not 'other.csv' (a seal of another "
                        "dataset copied here?); if the data was renamed, pass --name 'breast_cancer.csv'\n")
    r = cli("verify", other, "--manifest", manifest, "--pubkey", keys[1], "--name", "breast_cancer.csv")
    assert r.exit_code == 2
    assert r.stderr == (f"Error: {other}: column(s) 'patient_id', 'diagnosis' not found (columns: id, label, x); "
                        "the manifest seals columns 'patient_id' (id) and 'diagnosis' (label) of "
                        f"{tmp_path / 'breast_cancer.csv'} -- is it the manifest of another dataset?\n")


def test_missing_data_and_missing_manifest_exit_2(tmp_path, cli, keys):
    # the data is named, not the manifest path derived from it
    r = cli("verify", tmp_path / "nope.csv", "--pubkey", keys[1])
    assert r.exit_code == 2
    assert r.stderr == f"Error: {tmp_path / 'nope.csv'}: no such file or folder\n"
    r = cli("seal", tmp_path / "nope.csv", "--label", "y", "--id", "id", "--key", keys[0])
    assert r.exit_code == 2
    assert r.stderr == f"Error: {tmp_path / 'nope.csv'}: no such file or folder\n"
    # data present, manifest missing: the manifest is named
    (tmp_path / "there.csv").write_text("id,y\n1,a\n2,b\n")
    r = cli("verify", tmp_path / "there.csv", "--pubkey", keys[1])
    assert (r.exit_code, r.stderr) == (2, f"Error: manifest {tmp_path / 'there.csv'}.flipguard.json: no such file\n")


def test_label_and_id_the_same_csv_column_exit_2(tmp_path, cli, keys, breast_cancer_csv):
    """A CSV whose --id and --label name one column: one line, exit 2, nothing written (was a traceback)."""
    before = sorted(p.name for p in breast_cancer_csv.parent.iterdir())
    line = "Error: --label and --id must be different columns (both are 'diagnosis')\n"
    for args in (("seal", breast_cancer_csv, "--key", keys[0]),
                 ("diff", breast_cancer_csv, breast_cancer_csv),
                 ("ledger", "append", tmp_path / "l.ledger", "--step", "s", "-i", breast_cancer_csv,
                  "-o", breast_cancer_csv, "--key", keys[0])):
        r = cli(*args, "--label", "diagnosis", "--id", "diagnosis")
        assert (r.exit_code, r.stderr) == (2, line), args
    assert sorted(p.name for p in breast_cancer_csv.parent.iterdir()) == before
    assert not (tmp_path / "l.ledger").exists()


def test_seal_url_needs_out(cli, keys):
    r = cli("seal", "s3://bucket/data.csv", "--label", "y", "--id", "id", "--key", keys[0])
    assert r.exit_code == 2
    assert r.stderr == "Error: s3://bucket/data.csv is not a local file: give the manifest path (--out / out=)\n"


def test_seal_columns_all(tmp_path, cli, keys):
    data = tmp_path / "d.csv"
    data.write_text("id,a,label,b\n1,x,cat,0.5\n2,y,dog,1.5\n")
    r = cli("seal", data, "--label", "label", "--id", "id", "--key", keys[0], "--columns", "all", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["columns"] == ["a", "b"]  # every column but id and label, in file order
    data.write_text("id,a,label,b\n1,x,cat,0.5\n2,y,dog,1.50\n")  # CSV is text: 1.50 is not 1.5
    r = cli("verify", data, "--pubkey", keys[1], "--json")
    assert r.exit_code == 1 and json.loads(r.stdout)["findings"] == ["1 value(s) of sealed column 'b' changed"]


def test_seal_with_a_public_key_says_so(tmp_path, cli, keys):
    data = tmp_path / "d.csv"
    data.write_text("id,label\n1,cat\n")
    r = cli("seal", data, "--label", "label", "--id", "id", "--key", keys[1])
    assert r.exit_code == 2
    assert r.stderr == (f"Error: {keys[1]} is a public key; signing needs the private key "
                        f"(--key {keys[0]} from flipguard keygen, not the .pub file)\n")
    assert not (tmp_path / "d.csv.flipguard.json").exists()


def test_reseal_counts_versions_and_verify_reports_them(tmp_path, cli, keys):
    data = tmp_path / "d.csv"
    data.write_text("id,label\n1,cat\n2,dog\n")
    r = cli("seal", data, "--label", "label", "--id", "id", "--key", keys[0])
    assert r.stdout.startswith(f"Sealed 2 rows of {data} as 'd.csv' version 1 ")
    r = cli("seal", data, "--label", "label", "--id", "id", "--key", keys[0], "--name", "reviews")
    assert "as 'reviews' version 1 " in r.stdout  # another name: its own version line
    r = cli("seal", data, "--label", "label", "--id", "id", "--key", keys[0], "--name", "reviews")
    assert "as 'reviews' version 2 " in r.stdout
    r = cli("seal", data, "--label", "label", "--id", "id", "--key", keys[0], "--name", "reviews",
            "--dataset-version", "7")
    assert "as 'reviews' version 7 " in r.stdout
    r = cli("verify", data, "--pubkey", keys[1], "--name", "reviews")
    assert r.exit_code == 0 and "'reviews' version 7" in r.stdout
    assert cli("verify", data, "--pubkey", keys[1]).exit_code == 1  # default name d.csv


def test_seal_columns_and_parquet(tmp_path, cli, keys, breast_cancer_parquet):
    out = tmp_path / "bc.json"
    r = cli("seal", breast_cancer_parquet, "--label", "diagnosis", "--id", "patient_id", "--key", keys[0],
            "--columns", "mean_radius,mean_texture", "--out", out, "--json")
    assert r.exit_code == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["columns"] == ["mean_radius", "mean_texture"] and info["snapshot"] == str(tmp_path / "bc.snapshot")
    import pyarrow.parquet as pq

    tbl = pq.read_table(breast_cancer_parquet)
    radius = tbl.column("mean_radius").to_numpy().copy()
    radius[7] += 1.0
    tbl = tbl.set_column(tbl.schema.get_field_index("mean_radius"), "mean_radius", pa.array(radius))
    tbl = tbl.set_column(tbl.schema.get_field_index("mean_area"), "mean_area", pa.array(np.zeros(tbl.num_rows)))
    pq.write_table(tbl, breast_cancer_parquet)
    j = json.loads(cli("verify", breast_cancer_parquet, "-m", out, "-p", keys[1], "--json").stdout)
    assert j["ok"] is False and j["n_changed"] == 0
    assert j["columns"]["mean_radius"]["id"] == [1007] and j["columns"]["mean_texture"]["id"] == []
    assert j["findings"] == ["1 value(s) of sealed column 'mean_radius' changed"]


def test_private_seal_cli(tmp_path, cli, keys, breast_cancer_csv, monkeypatch):
    secret = tmp_path / "seal.secret"
    secret.write_text("c0ffee" * 8 + "\n")
    os.chmod(secret, 0o600)
    r = cli("seal", breast_cancer_csv, "-l", "diagnosis", "--id", "patient_id", "--key", keys[0], "--private")
    assert r.exit_code == 2
    assert r.stderr == ("Error: --private needs a secret: --secret-file FILE or the FLIPGUARD_SECRET "
                        "environment variable (e.g. openssl rand -hex 32)\n")
    r = cli("seal", breast_cancer_csv, "-l", "diagnosis", "--id", "patient_id", "--key", keys[0], "--private",
            "--secret-file", secret)
    assert r.exit_code == 0, r.stderr
    manifest = Path(str(breast_cancer_csv) + ".flipguard.json")
    snapshot = Path(str(breast_cancer_csv) + ".flipguard.snapshot")
    for blob in (manifest.read_bytes(), snapshot.read_bytes()):
        assert b"malignant" not in blob and b"benign" not in blob
        # The class count 357 must not appear as a number (hex digests may contain the digits by chance).
        assert not re.search(rb"(?<![0-9A-Za-z])357(?![0-9A-Za-z])", blob)
    r = cli("verify", breast_cancer_csv, "--pubkey", keys[1])
    assert r.exit_code == 2
    assert r.stderr == (f"Error: snapshot {snapshot}: the seal is private; give its secret "
                        "(--secret-file FILE or $FLIPGUARD_SECRET)\n")
    monkeypatch.setenv("FLIPGUARD_SECRET", "c0ffee" * 8)
    assert cli("verify", breast_cancer_csv, "--pubkey", keys[1]).exit_code == 0
    monkeypatch.setenv("FLIPGUARD_SECRET", "wrong-secret-but-long-enough")
    r = cli("verify", breast_cancer_csv, "--pubkey", keys[1])
    assert r.exit_code == 2 and "not the one this private seal was made with" in r.stderr
    os.chmod(secret, 0o644)
    r = cli("verify", breast_cancer_csv, "--pubkey", keys[1], "--secret-file", secret)
    assert r.exit_code == 2 and "readable by group or others (mode 0644)" in r.stderr


# -- diff -------------------------------------------------------------------------------
def test_diff_cli_targeted_and_identical(tmp_path, cli, breast_cancer_frame):
    old, new = tmp_path / "v1.csv", tmp_path / "v2.csv"
    pacsv.write_csv(breast_cancer_frame, old)
    y = np.array(breast_cancer_frame.column("diagnosis").to_pylist(), dtype=object)
    y[np.flatnonzero(y == "malignant")[:30]] = "benign"
    pacsv.write_csv(breast_cancer_frame.set_column(31, "diagnosis", pa.array(y.tolist())), new)
    r = cli("diff", old, new, "--label", "diagnosis", "--id", "patient_id")
    assert r.exit_code == 1
    assert "Concentrated: 30 of 30 changes (100%) turned 'malignant' -> 'benign'" in r.stdout
    j = json.loads(cli("diff", old, new, "--label", "diagnosis", "--id", "patient_id", "--json").stdout)
    assert j["n_changed"] == 30 and j["transitions"] == [{"from": "malignant", "to": "benign", "count": 30}]
    assert j["shape"]["verdict"] == "concentrated" and j["balance"]["p_value"] < 0.5
    r = cli("diff", old, old, "--label", "diagnosis", "--id", "patient_id")
    assert r.exit_code == 0 and r.stdout.startswith("Identical labels: 569 rows")


def test_every_command_has_help_with_example(cli):
    for cmd in (["keygen"], ["seal"], ["verify"], ["diff"], ["ledger", "append"], ["ledger", "verify"],
                ["ledger", "show"]):
        r = cli(*cmd, "--help")
        assert r.exit_code == 0 and "Example" in r.stdout and "flipguard " + cmd[0] in r.stdout, cmd


# -- the documented walk-through -----------------------------------------------------------
def _blocks(md: str, tag: str) -> str:
    m = re.search(rf"<!-- {tag} -->\s*```(?:sh|bash|console)\n(.*?)```", md, re.DOTALL)
    assert m, f"docs/integrity.md lacks the {tag} block"
    return m.group(1)


@pytest.mark.skipif(shutil.which("sed") is None, reason="needs sed")
@pytest.mark.parametrize("doc", ["docs/integrity.md", "README.md"])
def test_docs_walkthrough_runs_as_written(tmp_path, cli, monkeypatch, doc):
    """Run the walk-through of docs/integrity.md and README.md exactly as printed, checking each exit code.

    ``flipguard`` lines run in-process through the real entry point (same argv,
    shell-split); other lines (sed) run in bash.
    """
    import shlex

    md = (REPO / doc).read_text()
    monkeypatch.delenv("FLIPGUARD_SECRET", raising=False)
    monkeypatch.chdir(tmp_path)
    subprocess.run(["bash", "-euo", "pipefail", "-c", _blocks(md, "walkthrough-setup")], check=True)
    outputs = []
    for line in _blocks(md, "walkthrough").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = re.search(r"#\s*exit (\d)", line)
        expect = int(m.group(1)) if m else 0
        cmd = line.split("  #")[0].strip()
        if cmd.startswith("flipguard "):
            r = cli(*shlex.split(cmd)[1:])
            code, out = r.exit_code, r.stdout + r.stderr
        else:
            p = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, check=False)
            code, out = p.returncode, p.stdout + p.stderr
        assert code == expect, f"{cmd!r} exited {code}, expected {expect}:\n{out}"
        outputs.append((cmd, out))
    verify_out = next(out for cmd, out in outputs if cmd.startswith("flipguard verify"))
    assert re.search(r"│ 3\s+│ 104\s+│ negative\s+│ positive", verify_out)
    append_out = next(out for cmd, out in outputs if cmd.startswith("flipguard ledger append"))
    assert "declared label-preserving (0 changes) but changed 1 label(s) (1 positive -> negative)" in append_out
    show_out = next(out for cmd, out in outputs if cmd.startswith("flipguard ledger show"))
    assert "changed ids: 105 (positive->negative)" in show_out


def test_walkthrough_binary_entry_point(tmp_path):
    """The installed ``flipguard`` script itself (one subprocess) runs keygen."""
    exe = Path(sys.executable).parent / "flipguard"
    if not exe.exists():
        pytest.skip("flipguard console script not installed next to the interpreter")
    p = subprocess.run([str(exe), "keygen", "--out", str(tmp_path / "k")], capture_output=True, text=True,
                       check=False)
    assert p.returncode == 0 and "key id" in p.stdout
