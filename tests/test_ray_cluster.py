"""A real multi-node Ray cluster on this machine: ``ray start --head`` plus a second node that joins it.

The fixture starts both nodes with ``ray start --block`` as subprocesses (each in its own process group,
with its own short temporary directory, so other Ray users of this machine are not touched), and the
tests run seal/verify and the confident-learning audit through ``--engine ray --ray-address HOST:PORT``
(the head's GCS address, the form docs/scale.md gives for joining a cluster).  Results must equal the
local engine's.  Teardown stops the nodes by their process groups and then checks that no process of
this cluster is left (anything still running with the cluster's temporary directory on its command line
is killed by pid and the test fails).  ``ray stop`` is never used: it would stop every Ray on the machine.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pyarrow.parquet as pq
import pytest
from test_engine import make_lake, noisy_lake, set_labels

from flipguard.detection import audit_partitioned
from flipguard.integrity import write_keypair
from flipguard.integrity._lake import seal_lake, verify_lake

pytest.importorskip("ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_cmd() -> list[str]:
    exe = os.path.join(os.path.dirname(sys.executable), "ray")
    return [exe] if os.path.exists(exe) else [sys.executable, "-m", "ray.scripts.scripts"]


def _cluster_pids(marker: str) -> list[int]:
    """Processes whose command line or environment names this cluster's temporary directory."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmd = fh.read()
            if marker.encode() in cmd:
                pids.append(int(entry))
                continue
            with open(f"/proc/{entry}/environ", "rb") as fh:
                if marker.encode() in fh.read():
                    pids.append(int(entry))
        except OSError:  # gone, or not ours to read
            continue
    return pids


def _start(args: list[str], log: str, env: dict, until: str, timeout: float = 90.0) -> subprocess.Popen:
    fh = open(log, "wb")
    proc = subprocess.Popen(_ray_cmd() + args, stdout=fh, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    fh.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(log, "rb") as f:
            text = f.read().decode(errors="replace")
        if until in text:
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    _stop([proc])
    raise RuntimeError(f"ray {' '.join(args[:2])} did not start: {text[-1500:]}")


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in reversed(procs):  # workers first, then the head
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)  # the group this test created for the node
            except ProcessLookupError:
                pass
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def ray_cluster():
    """``(address, n_nodes)`` of a two-node Ray cluster, stopped (and checked gone) at the end."""
    import ray

    if ray.is_initialized():  # a Ray instance left by another module would shadow the address
        ray.shutdown()
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    temp = tempfile.mkdtemp(prefix="fgray-", dir="/tmp")  # short: Ray's socket paths must stay < 108 bytes
    env = {**os.environ, "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0", "FLIPGUARD_TEST_RAY_CLUSTER": temp,
           "RAY_USAGE_STATS_ENABLED": "0"}
    port = _free_port()
    common = ["--num-cpus", "1", "--object-store-memory", str(100 * 1024 ** 2), "--block", "--disable-usage-stats"]
    procs = []
    try:
        procs.append(_start(["start", "--head", "--port", str(port), "--node-ip-address", "127.0.0.1",
                             "--temp-dir", temp, "--include-dashboard", "false", *common],
                            os.path.join(temp, "head.log"), env, "Ray runtime started"))
        address = f"127.0.0.1:{port}"
        procs.append(_start(["start", "--address", address, "--node-ip-address", "127.0.0.1", *common],
                            os.path.join(temp, "worker.log"), env, "Ray runtime started"))
        running = _cluster_pids(temp)
        assert len(running) >= 4, running  # the detector below sees this cluster (2 nodes: gcs, raylets, ...)
        yield address, 2
    finally:
        if ray.is_initialized():
            ray.shutdown()
        _stop(procs)
        left = _cluster_pids(temp)
        for pid in left:  # only processes of this cluster: they carry its temporary directory
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(temp, ignore_errors=True)
        assert not left, f"Ray processes left behind after stopping the cluster: {left}"


def test_seal_verify_and_audit_on_a_two_node_cluster_equal_the_local_engine(ray_cluster, tmp_path, cli):
    address, nodes = ray_cluster
    root = make_lake(tmp_path / "lake", parts=4, csv_part=False)
    keys = write_keypair(tmp_path / "keys")
    on_cluster = seal_lake(root, label="y", id="rid", private_key=keys.private, engine="ray", ray_address=address,
                           out=tmp_path / "cluster.json")
    assert on_cluster.engine == {"engine": "ray", "workers": nodes, "address": address}
    local = seal_lake(root, label="y", id="rid", private_key=keys.private, out=tmp_path / "local.json")
    assert [(p["name"], p["rows"]) for p in on_cluster.manifest["partitions"]] == \
        [(p["name"], p["rows"]) for p in local.manifest["partitions"]]

    target = os.path.join(root, "year=2021", "part-1.parquet")
    before = pq.read_table(target).column("y").to_pylist()
    rows = [3, 250]
    set_labels(target, rows, ["fox" if before[r] != "fox" else "cat" for r in rows])
    # the CLI joins the cluster by its address; a seal made on the cluster, checked against the local engine
    r = cli("verify", root, "--manifest", tmp_path / "cluster.json", "--pubkey", keys.public, "--engine", "ray",
            "--ray-address", address, "--json")
    assert r.exit_code == 1, r.stderr
    remote = json.loads(r.stdout)
    expected = verify_lake(root, tmp_path / "local.json", keys.public).to_dict()
    for k in ("changed", "added", "removed", "duplicated"):
        assert remote[k] == expected[k], k
    assert remote["changed"]["row"] == rows and remote["changed"]["id"] == [500 + r for r in rows]
    assert remote["partitions"]["snapshots_read"] == ["year=2021/part-1.parquet"]

    lake, _ = noisy_lake(tmp_path / "noisy", parts=3, rows=500)
    a = audit_partitioned(lake, label="y", id="rid", out=tmp_path / "a-local", random_state=2)
    b = audit_partitioned(lake, label="y", id="rid", out=tmp_path / "a-cluster", random_state=2, engine="ray",
                          ray_address=address)
    assert b.engine == {"engine": "ray", "workers": nodes, "address": address}
    assert pq.read_table(tmp_path / "a-local").equals(pq.read_table(tmp_path / "a-cluster"))
    assert (a.joint, a.n_flagged, a.thresholds) == (b.joint, b.n_flagged, b.thresholds) and a.n_flagged > 0
