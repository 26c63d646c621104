"""Library-level tests of keys, seals, verify and diff (flipguard.integrity)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from flipguard.exceptions import DataError, IntegrityError, InvalidParameterError
from flipguard.integrity import (
    Manifest,
    diff_tables,
    generate_keypair,
    key_id,
    load_manifest,
    load_private_key,
    load_public_key,
    seal,
    seal_table,
    verify,
    verify_table,
    write_keypair,
)

KEY = generate_keypair()
PUB = KEY.public_key()


def small(n=8, ids=None, labels=None):
    ids = list(range(100, 100 + n)) if ids is None else ids
    n = len(ids)
    labels = ["a", "b"] * (n // 2) + ["a"] * (n % 2) if labels is None else labels
    return pa.table({"id": ids, "x": np.arange(len(ids), dtype=float), "y": labels})


# -- public API shape -------------------------------------------------------------
def test_star_import_and_sorted_all():
    from flipguard import integrity

    ns = {}
    exec("from flipguard.integrity import *", ns)  # noqa: S102
    assert set(integrity.__all__) <= set(ns)
    assert integrity.__all__ == sorted(integrity.__all__)


def test_integrity_package_does_not_import_sklearn():
    root = Path(__import__("flipguard.integrity", fromlist=["x"]).__file__).parent
    for path in root.glob("*.py"):
        assert "sklearn" not in path.read_text(), path.name


# -- keys -------------------------------------------------------------------------
def test_keygen_modes_and_key_id(tmp_path):
    paths = write_keypair(tmp_path / "k")
    assert stat.S_IMODE(os.stat(paths.private).st_mode) == 0o600
    assert paths.key_id == key_id(load_public_key(paths.public)) == key_id(load_private_key(paths.private))
    assert len(paths.key_id) == 16 and int(paths.key_id, 16) >= 0
    assert b"PRIVATE KEY" in paths.private.read_bytes() and b"PUBLIC KEY" in paths.public.read_bytes()


def test_keygen_refuses_overwrite_and_force_replaces(tmp_path):
    first = write_keypair(tmp_path)
    with pytest.raises(IntegrityError, match="already exist"):
        write_keypair(tmp_path)
    assert key_id(load_public_key(first.public)) == first.key_id  # untouched
    second = write_keypair(tmp_path, force=True)
    assert second.key_id != first.key_id
    assert stat.S_IMODE(os.stat(second.private).st_mode) == 0o600


def test_private_key_readable_by_others_is_refused(tmp_path):
    paths = write_keypair(tmp_path)
    os.chmod(paths.private, 0o644)
    with pytest.raises(IntegrityError) as exc:
        load_private_key(paths.private)
    assert str(exc.value) == (f"private key {paths.private} is readable by group or others (mode 0644); "
                              f"refusing to use it. Fix: chmod 600 {paths.private}")
    os.chmod(paths.private, 0o640)
    with pytest.raises(IntegrityError, match="mode 0640"):
        load_private_key(paths.private)


def test_public_key_file_given_as_private_key_and_vice_versa(tmp_path):
    paths = write_keypair(tmp_path)
    with pytest.raises(IntegrityError, match="that is a private key"):
        load_public_key(paths.private)
    with pytest.raises(IntegrityError) as exc:  # the public key's mode 0644 is not what is wrong
        load_private_key(paths.public)
    assert str(exc.value) == (f"{paths.public} is a public key; signing needs the private key "
                              f"(--key {paths.private} from flipguard keygen, not the .pub file)")


# -- seal ---------------------------------------------------------------------------
def test_manifest_is_canonical_signed_and_binds_the_seal():
    m, snap = seal_table(small(), label="y", id="id", private_key=KEY, source="s.csv")
    raw = m.to_bytes()
    doc = json.loads(raw)
    assert raw == json.dumps(doc, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    assert doc["format_version"] == 2 and doc["kind"] == "flipguard.seal"
    assert (doc["name"], doc["version"], doc["purpose"], doc["label_type"]) == ("s.csv", 1, "seal", "string")
    assert doc["label"] == "y" and doc["id"] == "id" and doc["rows"] == 8 and doc["source"] == "s.csv"
    assert doc["classes"] == [{"label": "a", "count": 4}, {"label": "b", "count": 4}]
    assert doc["key_id"] == key_id(KEY)
    import hashlib

    assert doc["snapshot"]["sha256"] == hashlib.sha256(snap).hexdigest()
    assert m.verify_signature(PUB).valid
    assert Manifest.from_bytes(raw).doc == m.doc


def test_seal_ignores_row_order_and_other_columns():
    t = small()
    m, snap = seal_table(t, label="y", id="id", private_key=KEY)
    shuffled = t.take(pa.array([5, 3, 0, 7, 1, 2, 6, 4]))
    other = shuffled.set_column(1, "x", pa.array(np.full(8, -1.0)))
    r = verify_table(other, m, PUB, snapshot=snap)
    assert r.ok and r.findings == [] and r.changes.aligned_by == "id"


def test_seal_refuses_duplicated_and_missing_ids():
    with pytest.raises(DataError, match=r"id column 'id' has 1 duplicated value\(s\) \(e.g. 101\)"):
        seal_table(small(ids=[100, 101, 101, 102]), label="y", id="id", private_key=KEY)
    with pytest.raises(DataError, match=r"has 1 duplicated value\(s\) \(e.g. u1\)"):
        seal_table(small(ids=["u1", "u2", "u1", "u3"]), label="y", id="id", private_key=KEY)
    with pytest.raises(DataError, match="missing value"):
        seal_table(small(ids=[1, None, 3, 4]), label="y", id="id", private_key=KEY)
    with pytest.raises(DataError, match=r"column\(s\) 'nope' not found"):
        seal_table(small(), label="nope", id="id", private_key=KEY)
    with pytest.raises(InvalidParameterError, match="must be different"):
        seal_table(small(), label="id", id="id", private_key=KEY)


def test_sealed_labels_keep_missing_values_and_int_labels():
    t = pa.table({"id": [1, 2, 3], "y": pa.array([0, None, 1], pa.int64())})
    m, snap = seal_table(t, label="y", id="id", private_key=KEY)
    assert m.class_counts == {"0": 1, "1": 1, None: 1}
    r = verify_table(t.set_column(1, "y", pa.array([0, 1, 1])), m, PUB, snapshot=snap)
    assert r.changes.changed == {"row": [1], "id": [2], "before": [None], "after": ["1"]}


# -- verify ----------------------------------------------------------------------
def test_verify_reports_every_kind_of_change_exactly():
    t = small(6, labels=["a", "b", "a", "b", "a", "b"])  # ids 100..105
    m, snap = seal_table(t, label="y", id="id", private_key=KEY)
    cur = pa.table({"id": [105, 104, 103, 102, 200, 200], "x": [0.0] * 6, "y": ["b", "a", "a", "a", "a", "c"]})
    r = verify_table(cur, m, PUB, snapshot=snap)
    c = r.changes
    assert not r.ok and c.aligned_by == "id"
    assert c.changed == {"row": [2], "id": [103], "before": ["b"], "after": ["a"]}
    assert c.removed == {"row": [0, 1], "id": [100, 101], "label": ["a", "b"]}
    assert c.added == {"row": [4, 5], "id": [200, 200], "label": ["a", "c"]}
    assert c.duplicated == {"id": [200], "count": [2]}
    assert r.findings == ["1 label(s) changed (1 b -> a)", "2 row(s) added (ids not in the sealed data)",
                          "2 row(s) removed (ids of the sealed data missing)",
                          "1 id(s) duplicated in the current data"]


def test_verify_exact_changes_small_example():
    t = pa.table({"id": [1, 2, 3, 4], "y": ["cat", "dog", "cat", "dog"]})
    m, snap = seal_table(t, label="y", id="id", private_key=KEY)
    cur = pa.table({"id": [4, 3, 2, 5], "y": ["dog", "dog", "dog", "cat"]})
    c = verify_table(cur, m, PUB, snapshot=snap).changes
    assert c.changed == {"row": [1], "id": [3], "before": ["cat"], "after": ["dog"]}
    assert c.added == {"row": [3], "id": [5], "label": ["cat"]}
    assert c.removed == {"row": [0], "id": [1], "label": ["cat"]}
    assert c.class_counts() == [{"label": "cat", "before": 2, "after": 1, "change": -1},
                                {"label": "dog", "before": 2, "after": 3, "change": 1}]
    assert c.transitions.tolist() == [[0, 1], [0, 0]]


def test_verify_fast_path_when_order_unchanged():
    t = small(10)
    m, snap = seal_table(t, label="y", id="id", private_key=KEY)
    cur = t.set_column(2, "y", pa.array(["a", "b"] * 4 + ["b", "b"]))
    c = verify_table(cur, m, PUB, snapshot=snap).changes
    assert c.aligned_by == "position"
    assert c.changed == {"row": [8], "id": [108], "before": ["a"], "after": ["b"]}


def test_verify_string_ids_and_new_label_value():
    t = pa.table({"uid": ["k1", "k2", "k3"], "y": [True, False, True]})
    m, snap = seal_table(t, label="y", id="uid", private_key=KEY)
    cur = pa.table({"uid": ["k3", "k1", "k2"], "y": ["true", "true", "maybe"]})
    c = verify_table(cur, m, PUB, snapshot=snap).changes
    assert c.changed == {"row": [2], "id": ["k2"], "before": ["false"], "after": ["maybe"]}
    assert "maybe" in c.classes


def test_verify_sealed_feature_columns():
    t = pa.table({"id": [1, 2, 3], "f": [0.5, float("nan"), 2.0], "g": ["u", "v", "w"], "y": ["a", "b", "a"]})
    m, snap = seal_table(t, label="y", id="id", private_key=KEY, columns=["f"])
    assert verify_table(t.set_column(2, "g", pa.array(["z", "z", "z"])), m, PUB, snapshot=snap).ok
    cur = pa.table({"id": [3, 2, 1], "f": [2.0, float("nan"), 0.75], "g": ["u", "v", "w"], "y": ["a", "b", "a"]})
    r = verify_table(cur, m, PUB, snapshot=snap)
    assert not r.ok
    assert r.columns["f"] == {"row": [2], "id": [1], "before": [0.5], "after": [0.75]}
    assert r.findings == ["1 value(s) of sealed column 'f' changed"]


def test_verify_wrong_key_reports_both_key_ids():
    m, snap = seal_table(small(), label="y", id="id", private_key=KEY)
    other = generate_keypair()
    r = verify_table(small(), m, other.public_key(), snapshot=snap)
    assert not r.ok and not r.signature.valid and r.changes is None
    assert r.signature.signed_by == key_id(KEY) and r.signature.checked_with == key_id(other)
    assert key_id(KEY) in r.findings[0] and key_id(other) in r.findings[0]
    with pytest.raises(IntegrityError):
        r.check()


def test_verify_rejects_forged_manifest_and_swapped_snapshot():
    m, snap = seal_table(small(), label="y", id="id", private_key=KEY)
    forged = Manifest(doc={**m.doc, "rows": 9})
    assert not verify_table(small(), forged, PUB, snapshot=snap).signature.valid
    _, other_snap = seal_table(small(labels=["b"] * 8), label="y", id="id", private_key=KEY)
    with pytest.raises(IntegrityError, match="does not match the manifest"):
        verify_table(small(), m, PUB, snapshot=other_snap)
    with pytest.raises(IntegrityError, match="does not match the manifest"):
        verify_table(small(), m, PUB, snapshot=snap[:-10])


def test_verify_other_dataset_is_a_data_error():
    m, snap = seal_table(small(), label="y", id="id", private_key=KEY)
    with pytest.raises(DataError, match="manifest of another dataset"):
        verify_table(pa.table({"id": [1], "label": ["a"]}), m, PUB, snapshot=snap)


def test_verify_missing_ids_are_findings():
    m, snap = seal_table(small(4), label="y", id="id", private_key=KEY)
    cur = pa.table({"id": [100, None, 102, 103], "x": [0.0] * 4, "y": ["a", "b", "a", "b"]})
    r = verify_table(cur, m, PUB, snapshot=snap)
    assert not r.ok
    assert r.findings[-1] == "1 row(s) have no id (rows 1)"
    assert r.changes.removed["id"] == [101]


# -- private mode -------------------------------------------------------------------
SECRET = b"0123456789abcdef0123456789abcdef"


def test_private_seal_reveals_no_labels():
    labels = ["malignant", "benign"] * 20
    t = pa.table({"id": list(range(40)), "y": labels})
    m, snap = seal_table(t, label="y", id="id", private_key=KEY, secret=SECRET)
    raw = m.to_bytes()
    assert m.private and m.class_counts is None
    assert b"malignant" not in raw and b"benign" not in raw
    assert b"malignant" not in snap and b"benign" not in snap
    assert m.commitment["scheme"] == "hmac-sha256-blocks-v1"
    public_m, _ = seal_table(t, label="y", id="id", private_key=KEY)
    assert public_m.commitment["root"] != m.commitment["root"]  # keyed: not recomputable without the secret
    assert verify_table(t, m, PUB, snapshot=snap, secret=SECRET).ok
    cur = t.set_column(1, "y", pa.array(["benign"] + labels[1:]))
    r = verify_table(cur, m, PUB, snapshot=snap, secret=SECRET)
    assert r.changes.changed == {"row": [0], "id": [0], "before": ["malignant"], "after": ["benign"]}
    with pytest.raises(IntegrityError, match="the seal is private; give its secret"):
        verify_table(t, m, PUB, snapshot=snap)
    with pytest.raises(IntegrityError, match="not the one this private seal was made with"):
        verify_table(t, m, PUB, snapshot=snap, secret=b"x" * 32)


def test_padme_padding_hides_exact_size():
    from flipguard.integrity._snapshot import padme

    assert padme(1000) >= 1000 and padme(1000) - 1000 < 0.13 * 1000
    assert len({padme(n) for n in range(100_000, 101_000)}) < 20


# -- files --------------------------------------------------------------------------
def test_seal_and_verify_files_csv_and_parquet(tmp_path, breast_cancer_frame):
    kp = write_keypair(tmp_path / "keys")
    for name, write in (("d.csv", pacsv.write_csv), ("d.parquet", pq.write_table)):
        data = tmp_path / name
        write(breast_cancer_frame, data)
        res = seal(data, label="diagnosis", id="patient_id", private_key=kp.private)
        assert res.manifest_path == Path(str(data) + ".flipguard.json")
        assert res.snapshot_path == Path(str(data) + ".flipguard.snapshot")
        assert res.manifest.class_counts == {"benign": 357, "malignant": 212}
        assert verify(data, public_key=kp.public).ok
    loaded = load_manifest(tmp_path / "d.csv.flipguard.json")
    assert loaded.label == "diagnosis" and loaded.rows == 569


def test_seal_never_overwrites_the_data(tmp_path):
    kp = write_keypair(tmp_path / "keys")
    data = tmp_path / "d.json"
    pacsv.write_csv(small(), data)
    with pytest.raises(InvalidParameterError, match="is the data file itself"):
        seal(str(data), label="y", id="id", private_key=kp.private, out=data)
    with pytest.raises(InvalidParameterError, match="not a local file"):
        seal("s3://bucket/key.csv", label="y", id="id", private_key=kp.private)


# -- diff ------------------------------------------------------------------------------
def _versions(n, rng, flips):
    y = np.where(rng.random(n) < 0.5, "cat", "dog").astype(object)
    old = pa.table({"id": np.arange(n), "y": y.tolist()})
    y2 = y.copy()
    for rows, new in flips:
        y2[rows] = new
    return old, pa.table({"id": np.arange(n), "y": y2.tolist()})


def test_diff_targeted_relabelling_reads_as_concentrated():
    """Biggio et al. (2012): a targeted flip moves one source class to one target class."""
    rng = np.random.default_rng(0)
    y = np.array(["a", "b", "c"] * 100, dtype=object)
    new = y.copy()
    new[np.flatnonzero(y == "a")[:40]] = "c"
    r = diff_tables(pa.table({"id": np.arange(300), "y": y.tolist()}),
                    pa.table({"id": np.arange(300), "y": new.tolist()}), label="y", id="id")
    s = r.changes.shape
    assert s["verdict"] == "concentrated" and s["p_value"] < 1e-6
    assert s["top_pair"] == {**s["top_pair"], "from": "a", "to": "c", "count": 40, "share": 1.0}
    assert s["reading"].startswith("Concentrated: 40 of 40 changes (100%) turned 'a' -> 'c'")
    del rng


def test_diff_random_relabelling_reads_as_spread():
    """Noisy-completely-at-random flips (Frenay & Verleysen 2014) spread across pairs."""
    rng = np.random.default_rng(1)
    n = 3000
    y = rng.choice(np.array(["a", "b", "c"], dtype=object), n)
    new = y.copy()
    rows = rng.choice(n, 300, replace=False)
    for r_ in rows:
        new[r_] = rng.choice([c for c in ("a", "b", "c") if c != y[r_]])
    r = diff_tables(pa.table({"id": np.arange(n), "y": y.tolist()}),
                    pa.table({"id": np.arange(n), "y": new.tolist()}), label="y", id="id")
    assert r.changes.n_changed == 300
    assert r.changes.shape["verdict"] == "spread" and r.changes.shape["p_value"] > 0.01
    assert not r.changes.balance["drifted"]


def test_a_suggestive_lean_is_not_read_as_random():
    """5 of 6 changes one way (p = 0.02): not significant at 0.01, but not "consistent with random" either."""
    from flipguard.integrity._stats import change_shape

    lean = change_shape(np.array([[0, 5], [1, 0]]), np.array([212, 357]), ["malignant", "benign"])
    assert 0.01 < lean["p_value"] < 0.05 and lean["verdict"] == "spread"
    assert lean["reading"].startswith("Not clearly concentrated: 5 of the 6 changes (83%) turned 'malignant' -> "
                                      "'benign', against 37% expected")
    assert "consistent with random" not in lean["reading"]
    even = change_shape(np.array([[0, 3], [3, 0]]), np.array([212, 357]), ["malignant", "benign"])
    assert even["reading"].startswith("Spread across classes") and even["p_value"] > 0.05


def test_diff_balance_drift_and_too_few():
    old, new = _versions(200, np.random.default_rng(2), [(slice(0, 3), "cat")])
    r = diff_tables(old, new, label="y", id="id")
    assert r.changes.shape["verdict"] in ("too_few", "none")
    y = ["cat"] * 500 + ["dog"] * 500
    r = diff_tables(pa.table({"id": np.arange(1000), "y": y}),
                    pa.table({"id": np.arange(1000), "y": ["dog"] * 1000}), label="y", id="id")
    assert r.changes.balance["drifted"] and r.changes.balance["p_value"] < 1e-10
    assert r.changes.balance["largest_shift"]["label"] in ("cat", "dog")


def test_diff_report_json_uses_old_new_names():
    old = pa.table({"id": [1, 2], "y": ["a", "b"]})
    new = pa.table({"id": [1, 2], "y": ["b", "b"]})
    d = json.loads(diff_tables(old, new, label="y", id="id").to_json())
    assert d["changed"] == {"row": [0], "id": [1], "old": ["a"], "new": ["b"]}
    assert d["class_counts"][0] == {"label": "a", "old": 1, "new": 0, "change": -1}
    assert d["identical"] is False


@pytest.mark.parametrize("values,new", [(["True", "False"], "maybe"), (["0", "1"], "x"), (["1", "2"], "2.5")])
def test_hand_edit_that_changes_csv_type_inference_reports_one_row(tmp_path, values, new):
    """A CSV label column read as text: an edit that would change inferred types touches one row only."""
    kp = write_keypair(tmp_path / "keys")
    data = tmp_path / "d.csv"
    data.write_text("id,y\n" + "".join(f"{i},{values[i % 2]}\n" for i in range(20)))
    seal(data, label="y", id="id", private_key=kp.private)
    lines = data.read_text().splitlines()
    lines[5] = f"4,{new}"
    data.write_text("\n".join(lines) + "\n")
    c = verify(data, public_key=kp.public).changes
    assert c.changed == {"row": [4], "id": [4], "before": [values[0]], "after": [new]}
    assert c.n_added == c.n_removed == 0
