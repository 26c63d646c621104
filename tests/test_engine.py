"""Partitioned datasets and the in-process engine: discovery, lake seal/verify, partitioned audit, CLI.

The Ray engine is tested against these same functions in ``test_scale.py``.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flipguard.data._partitioned import discover, is_partitioned, read_partition
from flipguard.detection import audit_partitioned
from flipguard.engine import LocalEngine, get_engine
from flipguard.exceptions import DataError, IntegrityError, InvalidParameterError
from flipguard.integrity import generate_keypair, write_keypair
from flipguard.integrity._lake import merkle_root, seal_lake, verify_lake


def make_lake(root, *, parts=4, rows=500, seed=0, classes=("cat", "dog", "fox"), csv_part=True):
    """A hive-partitioned folder: Parquet files under year=... folders, one CSV, plus files that are not data."""
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    start = 0
    for i in range(parts):
        sub = os.path.join(root, f"year={2020 + i % 2}")
        os.makedirs(sub, exist_ok=True)
        X = rng.normal(size=(rows, 3))
        y = np.digitize(X[:, 0] + 0.3 * X[:, 1], [-0.4, 0.4])
        t = pa.table({"rid": np.arange(start, start + rows), "f0": X[:, 0], "f1": X[:, 1], "f2": X[:, 2],
                      "y": np.array(classes)[y]})
        start += rows
        if csv_part and i == parts - 1:
            import pyarrow.csv as pacsv

            pacsv.write_csv(t, os.path.join(sub, f"part-{i}.csv"))
        else:
            pq.write_table(t, os.path.join(sub, f"part-{i}.parquet"))
    open(os.path.join(root, "_SUCCESS"), "w").close()
    os.makedirs(os.path.join(root, "_tmp"), exist_ok=True)
    open(os.path.join(root, "_tmp", "junk.parquet"), "wb").close()
    return root


def set_labels(path, rows, values):
    t = pq.read_table(path)
    y = t.column("y").to_pylist()
    for r, v in zip(rows, values):
        y[r] = v
    pq.write_table(t.set_column(t.schema.get_field_index("y"), "y", pa.array(y)), path)


# -- discovery -----------------------------------------------------------------------
def test_discover_lists_data_files_with_hive_keys_and_skips_sidecars(tmp_path):
    root = make_lake(tmp_path / "lake")
    ds = discover(root)
    assert ds.names == ["year=2020/part-0.parquet", "year=2020/part-2.parquet",
                        "year=2021/part-1.parquet", "year=2021/part-3.csv"]
    assert [p.keys for p in ds.partitions] == [{"year": "2020"}, {"year": "2020"}, {"year": "2021"}, {"year": "2021"}]
    assert is_partitioned(root) and not is_partitioned(str(tmp_path / "lake" / "year=2020" / "part-0.parquet"))
    assert is_partitioned("s3://bucket/lake/") and is_partitioned("s3://bucket/lake")  # no request made
    assert not is_partitioned("s3://bucket/lake/part-0.parquet") and not is_partitioned("postgresql://h/db")
    tbl = read_partition(ds.partitions[3], ["rid", "year", "y"], dictionary=["y"])
    assert tbl.column_names == ["rid", "year", "y"] and set(tbl.column("year").to_pylist()) == {"2021"}
    assert tbl.column("rid").to_pylist()[:2] == [1500, 1501]
    with pytest.raises(DataError, match=r"^partition year=2020/part-0.parquet: column\(s\) 'nope' not"):
        read_partition(ds.partitions[0], ["nope"])
    (tmp_path / "empty" / "_hidden").mkdir(parents=True)
    (tmp_path / "empty" / "_hidden" / "x.parquet").write_bytes(b"")
    with pytest.raises(DataError, match="no Parquet or CSV files"):
        discover(tmp_path / "empty")


def test_local_engine_keeps_item_order_and_reraises_flipguard_errors():
    assert LocalEngine(n_jobs=2).map(lambda x, k: x * k, range(7), shared=3) == [0, 3, 6, 9, 12, 15, 18]

    def fail_on_two(x, _):
        if x == 2:
            raise DataError("partition two: cannot read")
        return x

    with pytest.raises(DataError, match="^partition two: cannot read$"):
        LocalEngine().map(fail_on_two, [0, 1, 2, 3])
    with pytest.raises(InvalidParameterError, match="--engine must be one of local, ray"):
        get_engine("spark")
    with pytest.raises(InvalidParameterError, match="--ray-address needs --engine ray"):
        get_engine("local", ray_address="auto")


# -- lake seal / verify ----------------------------------------------------------------
def test_merkle_root_follows_rfc6962_and_every_leaf():
    import hashlib

    leaves = [{"name": f"p{i}", "rows": i, "manifest": "0" * 64} for i in range(3)]
    h = [hashlib.sha256(b"\x00" + __import__("flipguard.integrity._manifest", fromlist=["x"]).canonical_json(e)).digest()
         for e in leaves]
    left = hashlib.sha256(b"\x01" + h[0] + h[1]).digest()
    assert merkle_root(leaves) == hashlib.sha256(b"\x01" + left + h[2]).hexdigest()
    changed = [dict(leaves[0]), *leaves[1:]]
    changed[0]["rows"] = 9
    assert merkle_root(changed) != merkle_root(leaves)


def test_lake_verify_localises_changes_without_reading_untouched_snapshots(tmp_path):
    root = make_lake(tmp_path / "lake")
    key = generate_keypair()
    sealed = seal_lake(root, label="y", id="rid", private_key=key)
    assert sealed.manifest["rows"] == 2000 and len(sealed.manifest["partitions"]) == 4
    assert sealed.manifest["name"] == "lake" and sealed.manifest["version"] == 1
    assert verify_lake(root, public_key=key.public_key()).ok

    target = os.path.join(root, "year=2021", "part-1.parquet")
    before = pq.read_table(target).column("y").to_pylist()
    rows = [3, 250, 499]
    new = ["fox" if before[r] != "fox" else "cat" for r in rows]
    set_labels(target, rows, new)
    os.rename(os.path.join(root, "year=2020", "part-2.parquet"), os.path.join(root, "year=2020", "moved.parquet"))
    os.remove(os.path.join(root, "year=2020", "part-0.parquet"))
    pq.write_table(pa.table({"rid": [7], "y": ["cat"]}), os.path.join(root, "year=2021", "extra.parquet"))

    report = verify_lake(root, public_key=key.public_key())
    assert not report.ok
    assert report.partitions["changed"] == ["year=2021/part-1.parquet"]
    # the removed partition's snapshot is read to list its rows; untouched ones are not read
    assert report.partitions["snapshots_read"] == ["year=2020/part-0.parquet", "year=2021/part-1.parquet"]
    assert report.partitions["removed"] == ["year=2020/part-0.parquet"]
    assert report.partitions["added"] == ["year=2021/extra.parquet"]
    assert report.partitions["renamed"] == [{"from": "year=2020/part-2.parquet", "to": "year=2020/moved.parquet"}]
    assert report.partitions["intact"] == 1
    # rid 7 left the removed part-0 as 'fox' and came back in extra.parquet as 'cat': moved, label changed
    assert report.changed == {"partition": ["year=2021/part-1.parquet"] * 3 + ["year=2021/extra.parquet"],
                              "row": [*rows, 0], "id": [500 + r for r in rows] + [7],
                              "sealed": [before[r] for r in rows] + ["fox"], "current": [*new, "cat"]}
    assert report.moved["id"] == [7] and report.moved["from_partition"] == ["year=2020/part-0.parquet"]
    assert report.to_dict()["n_removed"] == 499
    # re-sealing bumps the version; the old manifest no longer matches the data
    again = seal_lake(root, label="y", id="rid", private_key=key)
    assert again.manifest["version"] == 2 and verify_lake(root, public_key=key.public_key()).ok


def test_lake_seal_without_id_uses_row_positions_and_refuses_tampered_store(tmp_path):
    root = make_lake(tmp_path / "lake", parts=2, csv_part=False)
    key = generate_keypair()
    res = seal_lake(root, label="y", private_key=key, out=tmp_path / "seal" / "lake.json")
    target = os.path.join(root, "year=2021", "part-1.parquet")
    before = pq.read_table(target).column("y").to_pylist()
    set_labels(target, [10], ["cat" if before[10] != "cat" else "dog"])
    rep = verify_lake(root, tmp_path / "seal" / "lake.json", key.public_key())
    assert rep.changed["row"] == [10] and rep.changed["id"] == [10]
    other = generate_keypair()
    bad = verify_lake(root, tmp_path / "seal" / "lake.json", other.public_key())
    assert not bad.signature.valid and "not by the public key given" in bad.findings[0]
    # editing a partition manifest in the store is caught by its digest in the signed root
    part_manifest = res.store / f"{res.manifest['partitions'][0]['manifest']}.json"
    part_manifest.write_bytes(part_manifest.read_bytes().replace(b'"rows":500', b'"rows":501'))
    with pytest.raises(IntegrityError, match="was modified"):
        verify_lake(root, tmp_path / "seal" / "lake.json", key.public_key())


def test_unreadable_partition_is_named_and_nothing_is_written(tmp_path, cli):
    root = make_lake(tmp_path / "lake", parts=3, csv_part=False)
    with open(os.path.join(root, "year=2021", "part-1.parquet"), "wb") as fh:
        fh.write(b"PAR1 not really parquet")
    key = generate_keypair()
    with pytest.raises(DataError, match=r"^partition year=2021/part-1.parquet: cannot read as PARQUET"):
        seal_lake(root, label="y", id="rid", private_key=key)
    assert sorted(os.listdir(tmp_path)) == ["lake"]
    with pytest.raises(DataError, match=r"^partition year=2021/part-1.parquet: cannot read as PARQUET"):
        audit_partitioned(root, label="y", id="rid")
    assert sorted(os.listdir(tmp_path)) == ["lake"]
    r = cli("keygen", "--out", tmp_path / "keys")
    assert r.exit_code == 0
    r = cli("seal", root, "--label", "y", "--id", "rid", "--key", tmp_path / "keys" / "flipguard.key")
    assert r.exit_code == 2
    assert r.stderr.startswith("Error: partition year=2021/part-1.parquet: cannot read as PARQUET")
    assert len(r.stderr.strip().splitlines()) == 1
    assert sorted(os.listdir(tmp_path)) == ["keys", "lake"]


def test_a_stray_text_file_in_a_lake_is_named_with_how_to_skip_it(tmp_path, cli):
    root = make_lake(tmp_path / "lake", parts=2, csv_part=False)
    with open(os.path.join(root, "README.txt"), "w") as fh:
        fh.write("labels of 2021, do not edit\n")
    key = generate_keypair()
    with pytest.raises(DataError, match=r"^partition README.txt: column\(s\) 'rid', 'y' not all found \(every "
                                        r".*\.txt file below the folder is a partition; .* start their names with _"):
        seal_lake(root, label="y", id="rid", private_key=key)
    os.rename(os.path.join(root, "README.txt"), os.path.join(root, "_README.txt"))
    assert seal_lake(root, label="y", id="rid", private_key=key).manifest["rows"] > 0


# -- partitioned audit ---------------------------------------------------------------
def noisy_lake(root, *, parts=3, rows=800, seed=1, rate=0.12):
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    flipped = {}
    for i in range(parts):
        X = rng.normal(size=(rows, 4))
        y = np.digitize(X[:, 0] + 0.5 * X[:, 1], [-0.5, 0.5])
        flip = rng.random(rows) < rate
        y_obs = y.copy()
        y_obs[flip] = (y[flip] + rng.integers(1, 3, flip.sum())) % 3
        flipped[f"p{i}.parquet"] = flip
        pq.write_table(pa.table({"rid": np.arange(i * rows, (i + 1) * rows), **{f"f{j}": X[:, j] for j in range(4)},
                                 "y": np.array(["a", "b", "c"])[y_obs]}), os.path.join(root, f"p{i}.parquet"))
    return root, flipped


def read_audit(out):
    return pq.read_table(out)  # the folder as one dataset, partitions in name order


def test_partitioned_confident_learning_equals_the_single_array_computation(tmp_path):
    """The merged thresholds/joint/top-k give exactly the flags of confident learning on all rows at once."""
    from flipguard.detection import confident_joint, confident_learning_issues

    root, flipped = noisy_lake(tmp_path / "lake")
    res = audit_partitioned(root, label="y", id="rid", out=tmp_path / "out", random_state=3)
    assert res.exact_training and res.train_rows == 2400 and res.n_samples == 2400
    tbl = read_audit(tmp_path / "out")
    labels = np.array([res.classes.index(v) for v in tbl.column("label").to_pylist()])
    probs = np.asarray(tbl.column("probs").to_pylist())
    flags = tbl.column("flagged").to_numpy(zero_copy_only=False)
    np.testing.assert_array_equal(flags, confident_learning_issues(labels, probs))
    joint, _ = confident_joint(labels, probs)
    assert res.joint == joint.tolist() and res.n_flagged == int(flags.sum())
    assert res.estimated_flips == int(joint.sum() - np.trace(joint))
    # it finds flips: precision well above the 12% base rate
    truth = np.concatenate([flipped[f"p{i}.parquet"] for i in range(3)])
    assert truth[flags].mean() > 0.6 and flags.sum() > 100
    assert [p["name"] for p in res.partitions] == ["p0.parquet", "p1.parquet", "p2.parquet"]
    # same seed, same result; another seed, other folds
    again = audit_partitioned(root, label="y", id="rid", out=tmp_path / "out", random_state=3)
    assert again.to_dict()["joint"] == res.joint and again.n_flagged == res.n_flagged
    folds = read_audit(tmp_path / "out").column("fold").to_numpy()
    audit_partitioned(root, label="y", id="rid", out=tmp_path / "out2", random_state=4)
    assert not np.array_equal(folds, read_audit(tmp_path / "out2").column("fold").to_numpy())


def test_incremental_training_learns_from_every_row_one_partition_at_a_time(tmp_path, monkeypatch):
    """partial_fit streamed over partitions: every row learnt from, flips found (5x the base rate)."""
    from flipguard.detection import _partitioned

    root, flipped = noisy_lake(tmp_path / "lake")
    res = audit_partitioned(root, label="y", id="rid", out=tmp_path / "inc", random_state=3,
                            training="incremental", epochs=100)
    assert res.training == "incremental" and res.exact_training and res.train_rows == 2400
    assert res.model.startswith("logreg (softmax MLPClassifier")
    flags = read_audit(tmp_path / "inc").column("flagged").to_numpy(zero_copy_only=False)
    truth = np.concatenate([flipped[f"p{i}.parquet"] for i in range(3)])
    assert flags.sum() > 150 and truth[flags].mean() > 0.6 and flags[truth].mean() > 0.75  # as the batch fit
    # auto samples while the sample is small; streams when the sample's features would exceed the limit
    small = audit_partitioned(root, label="y", out=tmp_path / "a1", random_state=3, max_train_rows=900)
    assert small.training == "sample" and not small.exact_training and small.train_rows <= 900
    monkeypatch.setattr(_partitioned, "_SAMPLE_BYTES_LIMIT", 900 * 4 * 8 - 1)
    big = audit_partitioned(root, label="y", id="rid", out=tmp_path / "a2", random_state=3, max_train_rows=900,
                            epochs=100)
    assert big.training == "incremental" and big.joint == res.joint and big.n_flagged == res.n_flagged
    # every row fits the sample: one batch fit on all rows, whatever the limit
    assert audit_partitioned(root, label="y", out=tmp_path / "a3", random_state=3).training == "sample"


def test_incremental_training_needs_a_partial_fit_model_and_is_refused_on_a_single_file(tmp_path, cli):
    root, _ = noisy_lake(tmp_path / "lake", parts=2, rows=300)
    with pytest.raises(InvalidParameterError, match=r"needs a model that learns with partial_fit.*got rf$"):
        audit_partitioned(root, label="y", model="rf", training="incremental", out=tmp_path / "x")
    with pytest.raises(InvalidParameterError, match="--training must be one of auto, sample, incremental"):
        audit_partitioned(root, label="y", training="stream", out=tmp_path / "x")
    assert sorted(os.listdir(tmp_path)) == ["lake"]
    from sklearn.linear_model import SGDClassifier

    res = audit_partitioned(root, label="y", model=SGDClassifier(loss="log_loss"), training="incremental",
                            epochs=3, out=tmp_path / "sgd")
    assert res.training == "incremental" and res.model == "SGDClassifier"
    r = cli("audit", root, "--label", "y", "--method", "confident_learning", "--training", "incremental", "--json",
            "--out", tmp_path / "cli")
    assert r.exit_code == 0, r.stderr
    import json

    assert json.loads(r.stdout)["training"] == "incremental"
    r = cli("audit", os.path.join(root, "p0.parquet"), "--label", "y", "--training", "incremental")
    assert r.exit_code == 2 and r.stderr.strip() == (
        "Error: --training and --max-train-rows apply to partitioned datasets (a folder or prefix of files); "
        "a single file is audited on all its rows")


def test_partitioned_audit_cli_local(tmp_path, cli):
    root, _ = noisy_lake(tmp_path / "lake", parts=2, rows=400)
    r = cli("audit", root, "--label", "y", "--id", "rid", "--method", "confident_learning", "--json",
            "--out", tmp_path / "res")
    assert r.exit_code == 0, r.stderr
    import json

    doc = json.loads(r.stdout)
    assert doc["n_samples"] == 800 and doc["engine"]["engine"] == "local"
    assert sorted(os.listdir(tmp_path / "res")) == ["_audit.json", "p0.parquet", "p1.parquet"]
    r = cli("audit", root, "--label", "y", "--method", "knn")
    assert r.exit_code == 2 and "not available on a partitioned dataset" in r.stderr


def test_diff_of_two_partitioned_versions_names_partitions_rows_and_shape(tmp_path, cli):
    import shutil

    from flipguard.integrity import diff_lake

    old = make_lake(tmp_path / "v1", parts=3, csv_part=False)
    new = tmp_path / "v2"
    shutil.copytree(old, new)
    target = new / "year=2020" / "part-0.parquet"
    labels = pq.read_table(target).column("y").to_pylist()
    cats = [i for i, v in enumerate(labels) if v == "cat"][:12]
    set_labels(target, cats, ["dog"] * len(cats))
    os.remove(new / "year=2021" / "part-1.parquet")
    pq.write_table(pa.table({"rid": [1], "y": ["fox"]}), new / "year=2021" / "part-9.parquet")
    rep = diff_lake(old, new, label="y", id="rid")
    assert rep.partitions == {"identical": 1, "changed": ["year=2020/part-0.parquet"],
                              "added": ["year=2021/part-9.parquet"], "removed": ["year=2021/part-1.parquet"]}
    assert rep.changed["row"] == cats and set(rep.changed["partition"]) == {"year=2020/part-0.parquet"}
    assert rep.transitions == [{"from": "cat", "to": "dog", "count": 12}]
    assert rep.shape["verdict"] in ("concentrated", "single_pair")
    r = cli("diff", old, new, "--label", "y", "--id", "rid", "--json")
    assert r.exit_code == 1
    import json

    assert json.loads(r.stdout)["n_changed"] == 12
    assert cli("diff", old, old, "--label", "y", "--id", "rid").exit_code == 0


def test_a_local_lake_seal_runs_a_thread_per_core_it_may_use_at_most_eight():
    """Seal, verify and diff tasks release the GIL, so "local" threads them; the process's CPU affinity
    (a container's or taskset's share), not the host's core count, and never more than 8 partitions in memory."""
    from flipguard.integrity._lake import MAX_LOCAL_THREADS, _engine

    cores = os.sched_getaffinity(0)
    assert _engine("local", None).workers == min(len(cores), MAX_LOCAL_THREADS) == min(len(cores), 8)
    mine = LocalEngine(n_jobs=1)
    assert _engine(mine, None) is mine
    os.sched_setaffinity(0, {min(cores)})
    try:
        assert _engine("local", None).workers == 1
    finally:
        os.sched_setaffinity(0, cores)


def test_a_missing_column_is_named_with_the_columns_the_partition_has(tmp_path):
    """Reading only the columns asked (ParquetFile, no pandas) must not shrink the list shown to the user."""
    lake = make_lake(tmp_path / "lake", parts=2)
    part = discover(str(lake)).partitions[0]
    with pytest.raises(DataError, match=r"partition year=2020/part-0.parquet: column\(s\) 'nope' not found "
                                        r"\(columns: rid, f0, f1, f2, y, year\)$"):
        read_partition(part, ["rid", "nope"], dictionary=["y"])
    assert read_partition(part, ["y", "year", "rid"], dictionary=["y"]).column_names == ["y", "year", "rid"]


def test_copies_of_a_row_in_other_partitions_share_its_fold(tmp_path):
    """A partitioned audit draws each row's fold from its features' hash: a row copied into
    another file (ingested twice), flipped in both copies, is never learnt from its own copy,
    so the audit still finds it; the folds of distinct rows stay uniform."""
    from flipguard.models import hash_folds

    root, _ = noisy_lake(tmp_path / "lake", rate=0.0)
    a = pq.read_table(os.path.join(root, "p0.parquet"))
    rng = np.random.default_rng(0)
    rows = np.sort(rng.choice(a.num_rows, 150, replace=False))
    copy = a.take(pa.array(rows))
    y = np.array(copy.column("y").to_pylist())
    flipped = np.array([{"a": "b", "b": "c", "c": "a"}[v] for v in y])
    copy = copy.set_column(copy.schema.get_field_index("y"), "y", pa.array(flipped))
    copy = copy.set_column(0, "rid", pa.array(np.arange(10_000, 10_000 + len(rows))))
    pq.write_table(copy, os.path.join(root, "p9.parquet"))  # the copies, flipped
    labels_a = np.array(a.column("y").to_pylist())
    labels_a[rows] = flipped  # ... and the originals flipped the same way
    set_labels(os.path.join(root, "p0.parquet"), np.arange(a.num_rows), labels_a)
    # Gradient boosting learns single rows: with random folds it learnt each flipped label from
    # its copy and found 18 % of these flips (a linear model barely notices a copy).
    res = audit_partitioned(root, label="y", id="rid", out=tmp_path / "out", random_state=3, model="hgb")
    tbl = read_audit(tmp_path / "out")
    folds = tbl.column("fold").to_numpy()
    flags = tbl.column("flagged").to_numpy(zero_copy_only=False)
    n = a.num_rows
    np.testing.assert_array_equal(folds[rows], folds[-len(rows):])  # p0 first, p9 last
    recall = flags[np.r_[rows, np.arange(len(folds) - len(rows), len(folds))]].mean()
    assert recall > 0.8, recall
    assert res.n_samples == 3 * n + len(rows)
    X = rng.normal(size=(20_000, 4))
    counts = np.bincount(hash_folds(X, 5, 3), minlength=5)
    assert np.all(np.abs(counts - 4000) < 4 * np.sqrt(4000 * 0.8))
    assert not np.array_equal(hash_folds(X, 5, 3), hash_folds(X, 5, 4))


# -- Ray engine: joining a cluster fails fast, and a run's stderr stays quiet --------------
def _flipguard_subprocess(*args, timeout: float = 300):
    """``python -m flipguard ARGS`` in a fresh process (Ray imported there first), without the Ray settings
    other tests put in the environment.  Returns (CompletedProcess, seconds)."""
    import subprocess
    import sys
    import time

    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "RAY_py_gcs_connect_timeout_s",
                        "RAY_NUM_REDIS_GET_RETRIES")}
    env["NO_COLOR"] = "1"
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "flipguard", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=timeout)
    return done, time.monotonic() - start


def _closed_port() -> int:
    import socket

    with socket.socket() as s:  # on every interface: Ray dials this node's address for 127.0.0.1
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


def test_an_unreachable_ray_address_fails_at_once_with_one_line_and_writes_nothing(tmp_path):
    """Ray retried 127.0.0.1:1 for minutes (killed by timeout at 120 s, only Ray's log lines on stderr)."""
    pytest.importorskip("ray")
    root = make_lake(tmp_path / "lake", parts=2, rows=50, csv_part=False)
    kp = write_keypair(tmp_path / "keys")
    address = f"127.0.0.1:{_closed_port()}"
    out = tmp_path / "seal.json"
    done, seconds = _flipguard_subprocess("seal", root, "--label", "y", "--id", "rid", "--key", kp.private,
                                          "--out", out, "--engine", "ray", "--ray-address", address, timeout=180)
    print(f"unreachable --ray-address failed after {seconds:.1f} s")
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [done.stderr.strip()], done.stderr  # one line, no Ray log lines
    assert done.stderr.startswith(f"Error: --ray-address {address}: cannot join a Ray cluster there (")
    assert "refused" in done.stderr and "Traceback" not in done.stderr
    assert not out.exists() and done.stdout == ""

    # ``auto`` with no cluster on this machine (or a stale record of one): the same kind of line, at once
    done, seconds = _flipguard_subprocess("seal", root, "--label", "y", "--id", "rid", "--key", kp.private,
                                          "--out", out, "--engine", "ray", "--ray-address", "auto", timeout=180)
    print(f"--ray-address auto without a cluster failed after {seconds:.1f} s")
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [done.stderr.strip()], done.stderr
    assert done.stderr.startswith("Error: --ray-address auto: cannot join a Ray cluster there (")
    assert not out.exists()


def test_a_ray_address_is_checked_before_ray_init():
    from flipguard.engine._ray import check_reachable, join_target

    assert join_target("ray://head") == ("head", 10001) and join_target("ray://head:2") == ("head", 2)
    assert join_target("anyscale://somewhere") is None  # other client protocols are left to Ray
    for bad in ("ray://head:port", "ray://"):
        with pytest.raises(InvalidParameterError, match="not a Ray client address"):
            join_target(bad)
    with pytest.raises(InvalidParameterError, match=r"unknown host 'no-such-host\.invalid'"):
        check_reachable("ray://no-such-host.invalid:10001")

    import socket

    # a port whose accept queue is full: the connection is neither accepted nor refused
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(0)
        port = srv.getsockname()[1]
        held = []
        try:
            for _ in range(4):
                c = socket.socket()
                c.setblocking(False)
                c.connect_ex(("127.0.0.1", port))
                held.append(c)
            with pytest.raises(InvalidParameterError,
                               match=rf"^--ray-address ray://127.0.0.1:{port}: cannot join a Ray cluster there "
                                     rf"\(no answer from 127.0.0.1:{port} within 0.5 s\)$"):
                check_reachable(f"ray://127.0.0.1:{port}", timeout=0.5)
        finally:
            for c in held:
                c.close()


def test_a_failed_join_is_not_tried_again_by_describe(monkeypatch):
    """seal/verify call ``describe()`` in a ``finally``: it joined again, doubling the wait."""
    pytest.importorskip("ray")  # imported here with Ray's defaults, so this process keeps them
    from flipguard.engine import _ray

    calls = []

    def refuse(address, timeout=None):
        calls.append(address)
        raise InvalidParameterError(f"--ray-address {address}: cannot join a Ray cluster there (refused)")

    monkeypatch.setattr(_ray, "check_reachable", refuse)
    eng = get_engine("ray", ray_address="ray://head:10001", progress=False)
    for attempt in (lambda: eng.map(str, [1]), eng.describe, lambda: eng.workers):
        with pytest.raises(InvalidParameterError, match=r"^--ray-address ray://head:10001: cannot join"):
            attempt()
    assert calls == ["ray://head:10001"]
    eng.close()


def test_a_port_that_answers_but_is_not_a_ray_head_fails_within_a_minute(tmp_path):
    """Ray's defaults try such an address 20 times for 36 s each; flipguard joins with 2 tries of ~14 s."""
    pytest.importorskip("ray")
    import socket
    import threading

    srv = socket.socket()
    srv.bind(("0.0.0.0", 0))
    srv.listen(8)
    port = srv.getsockname()[1]
    conns = []
    stop = threading.Event()

    def accept():  # accept and say nothing, like a service that is not Ray's GCS
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conns.append(srv.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    root = make_lake(tmp_path / "lake", parts=2, rows=50, csv_part=False)
    kp = write_keypair(tmp_path / "keys")
    try:
        done, seconds = _flipguard_subprocess("seal", root, "--label", "y", "--id", "rid", "--key", kp.private,
                                              "--out", tmp_path / "s.json", "--engine", "ray",
                                              "--ray-address", f"127.0.0.1:{port}", timeout=240)
    finally:
        stop.set()
        t.join()
        for c in conns:
            c.close()
        srv.close()
    print(f"a listening non-Ray port failed after {seconds:.1f} s")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()  # one line: Ray's C++ "Failed to connect to GCS" lines held back
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"Error: --ray-address 127.0.0.1:{port}: cannot join a Ray cluster there ("), lines
    assert not (tmp_path / "s.json").exists()


def test_native_stderr_held_drops_what_a_failed_block_wrote_and_keeps_the_rest(capfd):
    from flipguard.engine._ray import native_stderr_held

    with native_stderr_held():
        os.write(2, b"kept\n")
    with pytest.raises(RuntimeError):
        with native_stderr_held():
            os.write(2, b"dropped\n")
            raise RuntimeError("join failed")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "kept\nafter\n"


def test_joining_sets_rays_connect_knobs_only_while_ray_is_imported():
    import subprocess
    import sys

    script = ("import os\n"
              "from flipguard.engine._ray import JOIN_KNOBS, _import_ray\n"
              "ray = _import_ray(join=True)\n"
              "import ray._private.ray_constants as rc\n"
              "print(rc.NUM_REDIS_GET_RETRIES, ray._raylet.Config.py_gcs_connect_timeout_s(),\n"
              "      sorted(k for k in JOIN_KNOBS if k in os.environ))\n")
    pytest.importorskip("ray")
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_py_gcs_connect_timeout_s", "RAY_NUM_REDIS_GET_RETRIES")}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2", "8", "[]"]  # Ray's defaults: 20 tries, 30 s; the environment as it was


def test_an_ordinary_ray_run_prints_nothing_on_stderr_but_its_result(tmp_path):
    """Every --engine ray command printed Ray's two-line FutureWarning about RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO."""
    pytest.importorskip("ray")
    root = make_lake(tmp_path / "lake", parts=2, rows=50, csv_part=False)
    kp = write_keypair(tmp_path / "keys")
    done, _ = _flipguard_subprocess("seal", root, "--label", "y", "--id", "rid", "--key", kp.private,
                                    "--out", tmp_path / "seal.json", "--engine", "ray", timeout=300)
    assert done.returncode == 0, done.stderr
    assert "FutureWarning" not in done.stderr and "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO" not in done.stderr
    assert "Warning" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert (tmp_path / "seal.json").exists()
