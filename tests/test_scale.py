"""The Ray engine against a real local Ray instance (2 CPUs): cross-engine seal/verify, exact
localisation, identical confident-learning flags, a killed worker retried with the same result.

One Ray instance for the module, shut down at its end (other modules start their own).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
from test_engine import make_lake, noisy_lake, set_labels

from flipguard.data._partitioned import discover
from flipguard.detection import audit_partitioned
from flipguard.engine import LocalEngine
from flipguard.exceptions import DataError
from flipguard.integrity import generate_keypair
from flipguard.integrity._lake import seal_lake, verify_lake


@pytest.fixture(scope="module")
def ray_session():
    import ray

    started = not ray.is_initialized()
    if started:
        os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
        ray.init(num_cpus=2, object_store_memory=300 * 1024 ** 2, include_dashboard=False, log_to_driver=False,
                 logging_level="ERROR")
    yield ray
    if started:
        ray.shutdown()


def _rows(report):
    d = report.to_dict()
    return {k: d[k] for k in ("partitions", "changed", "added", "removed", "duplicated", "findings")}


def test_seal_with_either_engine_verifies_with_the_other_reporting_the_same_rows(ray_session, tmp_path):
    root = make_lake(tmp_path / "lake")
    key = generate_keypair()
    by_ray = seal_lake(root, label="y", id="rid", private_key=key, engine="ray", out=tmp_path / "ray.json")
    by_local = seal_lake(root, label="y", id="rid", private_key=key, out=tmp_path / "local.json")
    assert by_ray.engine["engine"] == "ray" and by_ray.engine["workers"] == 2
    assert [(p["name"], p["rows"]) for p in by_ray.manifest["partitions"]] == \
        [(p["name"], p["rows"]) for p in by_local.manifest["partitions"]]
    assert by_ray.manifest["classes"] == by_local.manifest["classes"]
    assert verify_lake(root, tmp_path / "ray.json", key.public_key()).ok
    assert verify_lake(root, tmp_path / "local.json", key.public_key(), engine="ray").ok

    target = os.path.join(root, "year=2020", "part-2.parquet")
    before = pq.read_table(target).column("y").to_pylist()
    rows = [0, 17, 499]
    new = ["dog" if before[r] != "dog" else "cat" for r in rows]
    set_labels(target, rows, new)
    os.remove(os.path.join(root, "year=2021", "part-3.csv"))

    reports = [verify_lake(root, tmp_path / "ray.json", key.public_key()),
               verify_lake(root, tmp_path / "ray.json", key.public_key(), engine="ray"),
               verify_lake(root, tmp_path / "local.json", key.public_key(), engine="ray"),
               verify_lake(root, tmp_path / "local.json", key.public_key())]
    first = _rows(reports[0])
    assert all(_rows(r) == first for r in reports[1:])
    assert reports[0].changed == {"partition": ["year=2020/part-2.parquet"] * 3, "row": rows,
                                  "id": [1000 + r for r in rows], "sealed": [before[r] for r in rows], "current": new}
    assert first["partitions"]["snapshots_read"] == ["year=2020/part-2.parquet", "year=2021/part-3.csv"]
    assert first["partitions"]["removed"] == ["year=2021/part-3.csv"]


def test_ray_audit_gives_exactly_the_local_engines_flags(ray_session, tmp_path, cli):
    root, _ = noisy_lake(tmp_path / "lake", parts=3, rows=700)
    local = audit_partitioned(root, label="y", id="rid", out=tmp_path / "local", random_state=5)
    remote = audit_partitioned(root, label="y", id="rid", out=tmp_path / "ray", random_state=5, engine="ray")
    a, b = pq.read_table(tmp_path / "local"), pq.read_table(tmp_path / "ray")
    assert a.equals(b)
    assert a.column("flagged").to_numpy(zero_copy_only=False).sum() == local.n_flagged > 0
    for k in ("n_flagged", "estimated_flips", "thresholds", "joint", "partitions", "top"):
        assert getattr(local, k) == getattr(remote, k), k
    # training on a sample (data larger than max_train_rows): still identical across engines
    s_local = audit_partitioned(root, label="y", out=tmp_path / "s1", random_state=5, max_train_rows=900)
    s_ray = audit_partitioned(root, label="y", out=tmp_path / "s2", random_state=5, max_train_rows=900,
                              engine="ray")
    assert not s_local.exact_training and s_local.train_rows <= 900 and s_ray.joint == s_local.joint
    assert pq.read_table(tmp_path / "s1").equals(pq.read_table(tmp_path / "s2"))
    # the CLI on Ray: same summary as the local engine
    r = cli("audit", root, "--label", "y", "--id", "rid", "--method", "confident_learning", "--seed", "5",
            "--engine", "ray", "--json", "--out", tmp_path / "cli")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["engine"]["engine"] == "ray" and doc["joint"] == local.joint and doc["n_flagged"] == local.n_flagged


def test_incremental_training_on_ray_gives_exactly_the_local_engines_result(ray_session, tmp_path, cli):
    """Fold models learnt by partial_fit over the partitions (one task per fold): identical on both engines."""
    root, _ = noisy_lake(tmp_path / "lake", parts=3, rows=600)
    kw = dict(label="y", id="rid", random_state=7, training="incremental", epochs=2)
    local = audit_partitioned(root, out=tmp_path / "local", **kw)
    remote = audit_partitioned(root, out=tmp_path / "ray", engine="ray", **kw)
    assert remote.engine["engine"] == "ray" and remote.training == local.training == "incremental"
    assert pq.read_table(tmp_path / "local").equals(pq.read_table(tmp_path / "ray"))
    for k in ("n_flagged", "estimated_flips", "thresholds", "joint", "partitions", "top", "train_rows"):
        assert getattr(local, k) == getattr(remote, k), k
    assert local.n_flagged > 0


def test_a_killed_worker_is_retried_by_ray_with_an_identical_result(ray_session, tmp_path):
    from flipguard.engine._ray import RayEngine
    from flipguard.integrity._lake import _seal_task

    root = make_lake(tmp_path / "lake", parts=3, csv_part=False)
    parts = list(discover(root).partitions)
    marker = str(tmp_path / "killed-once")
    victim = parts[1].name

    def crash_once(part, shared):  # pickled by value: dies the first time it sees the victim partition
        if part.name == victim and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)
        return _seal_task(part, shared)

    def shared(staging):
        os.makedirs(staging)
        return {"name": "lake", "version": 1, "label": "y", "id": "rid", "columns": [], "secret": None,
                "created": "2025-01-01T00:00:00.000000Z", "staging": staging, "partition_key": b"\x07" * 32}

    retried = RayEngine(max_retries=2).map(crash_once, parts, shared=shared(str(tmp_path / "a")))
    assert os.path.exists(marker)  # the worker really died once
    expected = LocalEngine().map(_seal_task, parts, shared=shared(str(tmp_path / "b")))
    assert retried == expected
    assert sorted(os.listdir(tmp_path / "a")) == sorted(os.listdir(tmp_path / "b"))


def test_ray_batches_consecutive_items_into_a_few_tasks_per_worker_keeping_item_order(ray_session):
    from flipguard.engine._ray import RayEngine, batches

    def _task_of(item, shared):  # pickled by value: which Ray task ran this item
        import ray

        from flipguard.exceptions import DataError as Err

        if item == shared:
            raise Err(f"partition p{item}: cannot read")
        return item * 10, ray.get_runtime_context().get_task_id()

    assert [list(r) for r in batches(7, 3)] == [[0, 1, 2], [3, 4], [5, 6]]
    assert [list(r) for r in batches(2, 8)] == [[0], [1]] and batches(0, 4) == []
    out = RayEngine(workers=2, tasks_per_worker=2).map(_task_of, range(11), shared=-1)
    assert [v for v, _ in out] == [i * 10 for i in range(11)]
    tasks = [t for _, t in out]
    first_seen = list(dict.fromkeys(tasks))  # 2 workers x 2 tasks, consecutive items in one task
    assert [first_seen.index(t) for t in tasks] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3]
    per_item = RayEngine(workers=2, tasks_per_worker=100).map(_task_of, range(5), shared=-1)
    assert len({t for _, t in per_item}) == 5
    assert RayEngine(workers=2).map(_task_of, [], shared=-1) == []
    # the first flipguard error in item order is raised, as by the local engine
    with pytest.raises(DataError, match="^partition p7: cannot read$"):
        RayEngine(workers=2, tasks_per_worker=2).map(_task_of, range(11), shared=7)


def test_unreadable_partition_on_ray_is_named_in_one_line_and_nothing_is_written(ray_session, tmp_path, cli):
    root = make_lake(tmp_path / "lake", parts=3, csv_part=False)
    with open(os.path.join(root, "year=2020", "part-2.parquet"), "wb") as fh:
        fh.write(b"not parquet at all")
    key = generate_keypair()
    with pytest.raises(DataError, match=r"^partition year=2020/part-2.parquet: cannot read as PARQUET"):
        seal_lake(root, label="y", id="rid", private_key=key, engine="ray")
    assert sorted(os.listdir(tmp_path)) == ["lake"]
    r = cli("audit", root, "--label", "y", "--engine", "ray", "--method", "confident_learning")
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1
    assert r.stderr.startswith("Error: partition year=2020/part-2.parquet: cannot read as PARQUET")
    assert sorted(os.listdir(tmp_path)) == ["lake"]


def test_a_label_of_another_type_in_one_partition_is_refused_on_ray_before_anything_is_written(ray_session,
                                                                                                 tmp_path, cli):
    """The partition tasks report their label's type; the driver refuses a mix (int64 beside string here),
    and an audit --out inside the folder, before any task runs."""
    import pyarrow as pa

    root = make_lake(tmp_path / "lake", parts=3, csv_part=False)
    target = os.path.join(root, "year=2021", "part-1.parquet")
    t = pq.read_table(target)
    codes = pa.array([("cat", "dog", "fox").index(v) for v in t.column("y").to_pylist()])
    pq.write_table(t.set_column(t.schema.get_field_index("y"), "y", codes), target)
    message = ("partition year=2021/part-1.parquet: label column 'y' is int64, but string in "
               "year=2020/part-0.parquet; a label column must have one type in every partition")
    with pytest.raises(DataError, match=f"^{message}"):
        seal_lake(root, label="y", id="rid", private_key=generate_keypair(), engine="ray")
    r = cli("audit", root, "--label", "y", "--id", "rid", "--engine", "ray")
    assert r.exit_code == 2 and r.stderr.startswith(f"Error: {message}") and len(r.stderr.splitlines()) == 1
    r = cli("audit", root, "--label", "y", "--engine", "ray", "--out", os.path.join(root, "audit"))
    assert r.exit_code == 2 and r.stderr.startswith(f"Error: --out {root}/audit is inside DATA {root}: ")
    assert sorted(os.listdir(tmp_path)) == ["lake"]


def test_diff_on_ray_equals_the_local_engine(ray_session, tmp_path, cli):
    import shutil

    from flipguard.integrity import diff_lake

    old = make_lake(tmp_path / "v1", parts=3, csv_part=False)
    shutil.copytree(old, tmp_path / "v2")
    target = tmp_path / "v2" / "year=2021" / "part-1.parquet"
    rows = [i for i, v in enumerate(pq.read_table(target).column("y").to_pylist()) if v != "fox"][:3]
    set_labels(target, rows, ["fox"] * 3)
    local = diff_lake(old, tmp_path / "v2", label="y", id="rid").to_dict()
    remote = diff_lake(old, tmp_path / "v2", label="y", id="rid", engine="ray").to_dict()
    assert remote.pop("engine")["engine"] == "ray" and local.pop("engine")["engine"] == "local"
    assert local == remote and local["partitions"]["changed"] == ["year=2021/part-1.parquet"]


def test_assess_on_ray_gives_the_same_runs_as_in_process(ray_session):
    from flipguard.assess import assess
    from flipguard.data import load

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4))
    ds = load((X, (X[:, 0] + X[:, 1] > 0).astype(int)))
    kw = dict(strategies=["random"], rates=[0.2], seeds=1, views=None)
    local = assess(ds, **kw).to_dict()
    remote = assess(ds, engine="ray", **kw).to_dict()
    strip = [{k: v for k, v in r.items() if k != "fit_seconds"} for r in local["runs"]]
    assert strip == [{k: v for k, v in r.items() if k != "fit_seconds"} for r in remote["runs"]]
    assert [(r["strategy"], r["seed"]) for r in strip] == [("none", 0), ("random", 0)]
