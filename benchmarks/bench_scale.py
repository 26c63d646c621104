"""Benchmark: audit and seal/verify of a partitioned dataset, in-process and on Ray (1 and 2 workers).

Writes ``--rows`` rows (default 10M) x ``--features`` float32 features (20),
an int64 id and a string label (4 classes, 10% of labels flipped at random)
into ``--files`` Parquet files (40) in a temporary folder, one file at a time.
Each step then runs in a **fresh subprocess**:

* ``floor``        pyarrow reads the id and label columns of every partition (the read floor of seal/verify;
  ``pq.ParquetFile(...).read``, which, unlike ``pq.read_table``, does not import pandas)
* ``floor_all``    pyarrow reads every column of every partition (the read floor of one audit pass)
* ``floor_engine`` the same read as ``floor``, run by the engine itself (its threads, or Ray tasks
  on fresh workers batched as seal's are): what any work on that engine pays before flipguard's
  own, fresh worker processes importing pyarrow included
* ``seal`` / ``verify``  :func:`flipguard.integrity.seal_lake` / ``verify_lake`` (intact data: no snapshot read)
* ``audit``        :func:`flipguard.detection.audit_partitioned` (confident learning, logreg, 5 folds,
  fold models fitted on a ``--max-train-rows`` sample, default 1M)
* ``audit_inc``    the same with ``training="incremental"``: each fold model learns from every row by
  ``partial_fit`` streamed over the partitions (one epoch), so no task holds more than one partition

with ``--engine local`` (``local``: as a user gets it, one thread per core for
seal/verify; ``local1``: one thread) and with Ray at 1 and 2 workers (a fresh local Ray
instance with that many CPUs).  Ray's start-up is reported apart, in two
figures: ``ray.init`` returning, and every worker process answering a no-op
task (``ray.init`` returns before its worker processes have booted; a step
timed from there would include Ray's own worker start-up).  The step's time
starts once the workers answer; it includes what flipguard's tasks cost in a
fresh worker (importing pyarrow, numpy and flipguard; since 505c0c7 seal and
verify no longer import pandas through pyarrow, which cost 0.3-0.4 s per worker).  ``--warm`` runs floor, seal and verify a
second time in the same process (and Ray instance) and reports that run too:
imports done and workers warm, what a long-lived driver pays.  ``--tasks-per-worker`` sets the Ray engine's
batching (default: the engine's, 4; a large value gives one task per
partition).  Each step reports wall seconds and **peak memory per worker**: the subprocess's
``VmHWM`` for the local engine and the floors; for Ray, the largest
``VmHWM`` over the Ray worker processes (read by tasks run on every worker
after the step) next to the driver's.

Usage::

    python benchmarks/bench_scale.py                    # 10M rows, 40 files
    python benchmarks/bench_scale.py --rows 1000000 --quick
    python benchmarks/bench_scale.py --rows 40000000 --steps seal,verify,audit --engines local,ray2
    python benchmarks/bench_scale.py --rows 10000000 --steps audit_inc --dir /tmp/lake10m
    python benchmarks/bench_scale.py --steps floor,seal,verify --engines local,ray1,ray2 --warm --dir /tmp/lake10m
    python benchmarks/bench_scale.py --steps seal,verify --engines ray2 --ray-address 127.0.0.1:6379 --dir /tmp/lake10m
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# "local" is what a user gets from --engine local (lake seal/verify/diff: one thread per core);
# "local1" is the local engine held to one thread.
ENGINES = {"local": ("local", None), "local1": ("local", 1), "ray1": ("ray", 1), "ray2": ("ray", 2)}


def make_lake(root: Path, rows: int, files: int, features: int, seed: int = 0) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    w = rng.normal(size=features).astype(np.float32)
    root.mkdir(parents=True, exist_ok=True)
    classes = pa.array(["bird", "cat", "dog", "fox"])
    per = -(-rows // files)
    start = 0
    for i in range(files):
        n = min(per, rows - start)
        X = rng.normal(size=(n, features)).astype(np.float32)
        score = X @ w
        y = np.digitize(score, np.quantile(score, [0.25, 0.5, 0.75]))
        flip = rng.random(n) < 0.10
        y[flip] = (y[flip] + rng.integers(1, 4, flip.sum())) % 4
        cols = {"id": pa.array(np.arange(start, start + n, dtype=np.int64))}
        cols.update({f"f{j}": pa.array(X[:, j]) for j in range(features)})
        cols["label"] = pa.DictionaryArray.from_arrays(pa.array(y.astype(np.int32)), classes)
        sub = root / f"shard={i % 4}"
        sub.mkdir(exist_ok=True)
        pq.write_table(pa.table(cols), sub / f"part-{i:04d}.parquet")
        start += n


def _peak_kib() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _ray_worker_peaks(workers: int) -> list[int]:
    """VmHWM of the Ray worker processes (tasks spread over every worker, each reports its process)."""
    import ray

    @ray.remote(num_cpus=1)
    def peak():
        time.sleep(0.3)
        return os.getpid(), _peak_kib()

    seen = {}
    for pid, kib in ray.get([peak.remote() for _ in range(4 * workers)]):
        seen[pid] = max(seen.get(pid, 0), kib)
    return sorted(seen.values())


def _workers_ready(workers: int) -> None:
    """Return once ``workers`` distinct Ray worker processes have each run a no-op task."""
    import ray

    @ray.remote(num_cpus=1)
    def pid():
        time.sleep(0.02)  # keeps one worker from answering for all
        return os.getpid()

    seen: set = set()
    while len(seen) < workers:
        seen.update(ray.get([pid.remote() for _ in range(workers)]))


def run_step(step: str, engine: str, root: str, work: str, max_train_rows: str = "1000000",
             warm: str = "0", tasks_per_worker: str = "0", ray_address: str = "") -> dict:
    """One step in this (fresh) process; returns figures as a dict."""
    import pyarrow.parquet as pq

    from flipguard.data._partitioned import discover

    kind, workers = ENGINES[engine]
    ray_start = ray_ready = 0.0
    if kind == "ray":
        import ray

        os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
        t = time.perf_counter()
        if ray_address:  # join a running cluster as a driver, as --ray-address does
            ray.init(address=ray_address, log_to_driver=False, logging_level="ERROR")
        else:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                     object_store_memory=1 << 30)
        ray_start = time.perf_counter() - t
        _workers_ready(workers)
        ray_ready = time.perf_counter() - t
    from flipguard.engine import get_engine

    if kind == "ray" and int(tasks_per_worker):
        from flipguard.engine._ray import RayEngine

        eng = RayEngine(workers=workers, tasks_per_worker=int(tasks_per_worker), progress=False)
    elif kind == "local" and workers is None:
        eng = "local"  # the library's own default for each step
    else:
        eng = get_engine(kind, workers=workers, progress=False)
    key_path = Path(work) / "keys" / "flipguard.key"
    out: dict = {}
    times = []
    for _ in range(2 if int(warm) and step in ("floor", "floor_engine", "seal", "verify") else 1):
        t0 = time.perf_counter()
        c0 = time.process_time()
        _run(step, eng, root, work, key_path, max_train_rows, engine, pq, discover, out)
        times.append((time.perf_counter() - t0, time.process_time() - c0))
    (wall, cpu), warm_run = times[0], times[1:]  # "seconds" is the first (cold) run, as without --warm
    if warm_run:
        out.update(warm_seconds=round(warm_run[0][0], 3), warm_cpu_seconds=round(warm_run[0][1], 3))
    out.update(step=step, engine=engine, seconds=round(wall, 3), cpu_seconds=round(cpu, 3),
               driver_peak_mib=round(_peak_kib() / 1024, 1), ray_start_seconds=round(ray_start, 2),
               ray_workers_ready_seconds=round(ray_ready, 2),
               tasks_per_worker=getattr(eng, "tasks_per_worker", None))
    if kind == "ray":
        peaks = _ray_worker_peaks(workers)
        out["worker_peak_mib"] = round(max(peaks) / 1024, 1)
        import ray

        ray.shutdown()
    else:
        out["worker_peak_mib"] = out["driver_peak_mib"]
    return out


def _floor_task(part, shared) -> int:
    """The engine floor's task: read a partition's id and label columns, as seal and verify do."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(part.path, read_dictionary=["label"]).read(columns=["id", "label"]).num_rows


def _run(step, eng, root, work, key_path, max_train_rows, engine, pq, discover, out) -> None:
    if step == "floor_engine":
        from flipguard.engine import get_engine

        if eng == "local":  # as seal/verify run it: one thread per core
            eng = get_engine("local", workers=os.cpu_count() or 1, progress=False)
        out["rows"] = sum(eng.map(_floor_task, list(discover(root).partitions)))
    elif step in ("floor", "floor_all"):
        ds = discover(root)
        rows = 0
        for p in ds.partitions:
            cols = ["id", "label"] if step == "floor" else None
            rows += pq.ParquetFile(p.path, read_dictionary=["label"]).read(columns=cols).num_rows
        out["rows"] = rows
    elif step == "seal":
        from flipguard.integrity._lake import seal_lake

        res = seal_lake(root, label="label", id="id", private_key=key_path, out=Path(work) / "lake.json",
                        engine=eng)
        out["rows"] = res.manifest["rows"]
    elif step == "verify":
        from flipguard.integrity._lake import verify_lake

        rep = verify_lake(root, Path(work) / "lake.json", key_path.with_suffix(".pub"), engine=eng)
        assert rep.ok, rep.findings
        out["snapshots_read"] = len(rep.partitions["snapshots_read"])
    elif step in ("audit", "audit_inc"):
        from flipguard.detection import audit_partitioned

        res = audit_partitioned(root, label="label", id="id", engine=eng, out=Path(work) / f"{step}-{engine}",
                                random_state=0, max_train_rows=int(max_train_rows),
                                training="incremental" if step == "audit_inc" else "sample")
        out.update(flagged=res.n_flagged, estimated_flips=res.estimated_flips, train_rows=res.train_rows,
                   training=res.training)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--files", type=int, default=40)
    ap.add_argument("--features", type=int, default=20)
    ap.add_argument("--steps", default="floor,floor_all,seal,verify,audit")
    ap.add_argument("--engines", default="local,ray1,ray2")
    ap.add_argument("--quick", action="store_true", help="1M rows unless --rows is given")
    ap.add_argument("--dir", help="Keep the data here instead of a temporary folder (reused if present).")
    ap.add_argument("--json", help="Append the results as JSON lines to this file.")
    ap.add_argument("--max-train-rows", type=int, default=1_000_000, help="Sample size for the fold models.")
    ap.add_argument("--warm", action="store_true",
                    help="Run floor, seal and verify twice in the same process (and Ray instance); report the second run too.")
    ap.add_argument("--tasks-per-worker", type=int, default=0,
                    help="Ray engine batching (0: the engine's default; large: one task per partition).")
    ap.add_argument("--ray-address", default="",
                    help="Ray steps join this running cluster (HOST:PORT) instead of starting a local instance; "
                         "ray1/ray2 then mean 1/2 tasks in flight.")
    ap.add_argument("--_step", nargs=8, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._step:
        print(json.dumps(run_step(*args._step)))
        return
    if args.quick and "--rows" not in sys.argv:
        args.rows = 1_000_000
    sys.path.insert(0, str(Path(__file__).parent))
    from _machine import machine

    print(f"machine: {machine()}")
    tmp = tempfile.TemporaryDirectory(prefix="flipguard-scale-") if not args.dir else None
    base = Path(args.dir or tmp.name)
    root = base / "lake"
    if not root.exists():
        t = time.perf_counter()
        make_lake(root, args.rows, args.files, args.features)
        size = sum(f.stat().st_size for f in root.rglob("*.parquet"))
        print(f"data: {args.rows} rows x {args.features} float32 features in {args.files} Parquet files, "
              f"{size / 2**20:.0f} MiB, written in {time.perf_counter() - t:.1f} s")
    work = base / "work"
    (work / "keys").mkdir(parents=True, exist_ok=True)
    if not (work / "keys" / "flipguard.key").exists():
        from flipguard.integrity import write_keypair

        write_keypair(work / "keys", force=True)
    results = []
    for step in args.steps.split(","):
        for engine in (["local"] if step in ("floor", "floor_all") else args.engines.split(",")):
            load_before = os.getloadavg()[0]
            proc = subprocess.run([sys.executable, __file__, "--_step", step, engine, str(root), str(work),
                                   str(args.max_train_rows), str(int(args.warm)), str(args.tasks_per_worker), args.ray_address],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{step} {engine}: FAILED\n{proc.stderr[-2000:]}")
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            r.update(rows_total=args.rows, files=args.files, load_before=load_before, load=os.getloadavg()[0])
            results.append(r)
            print(f"{step:10s} {engine:6s} {r['seconds']:8.2f} s  cpu {r['cpu_seconds']:7.2f} s  "
                  f"peak/worker {r['worker_peak_mib']:7.1f} MiB  driver {r['driver_peak_mib']:7.1f} MiB"
                  + (f"  warm {r['warm_seconds']:.2f} s" if "warm_seconds" in r else "")
                  + (f"  ray start {r['ray_start_seconds']:.1f} s (workers ready {r['ray_workers_ready_seconds']:.1f} s)"
                     if engine != "local" else "")
                  + f"  load {r['load_before']:.1f} -> {r['load']:.1f}", flush=True)
            if args.json:
                with open(args.json, "a") as fh:
                    fh.write(json.dumps(r) + "\n")
    by = {(r["step"], r["engine"]): r for r in results}
    floor = by.get(("floor", "local"))
    for step in ("seal", "verify"):
        for eng in args.engines.split(","):
            if floor and (step, eng) in by:
                r = by[(step, eng)]
                own = by.get(("floor_engine", eng))
                print(f"{step} {eng} / read floor: {r['seconds'] / floor['seconds']:.2f}x"
                      + (f"  (warm: {r['warm_seconds'] / floor['warm_seconds']:.2f}x)"
                         if "warm_seconds" in r and "warm_seconds" in floor else "")
                      + (f"; / the engine's own floor: {r['seconds'] / own['seconds']:.2f}x" if own else ""))
    for step in ("seal", "verify", "audit", "audit_inc"):
        if (step, "local") in by and (step, "ray1") in by:
            print(f"{step}: Ray 1 worker / local = {by[(step, 'ray1')]['seconds'] / by[(step, 'local')]['seconds']:.2f}x")
        if (step, "ray1") in by and (step, "ray2") in by:
            print(f"{step}: Ray speed-up 1 -> 2 workers = {by[(step, 'ray1')]['seconds'] / by[(step, 'ray2')]['seconds']:.2f}x")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
