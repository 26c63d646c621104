"""Profile: where Ray's seal/verify time goes (CPU per process, per-task cost, a fresh worker's first partition).

Starts a local Ray instance with ``--workers`` CPUs in its own temporary folder
and, on a partitioned dataset (e.g. the lake ``bench_scale.py --dir`` keeps),

1. **cold**: seals once with fresh workers, recording inside every task when it
   started, how long importing flipguard's task module took, and how long each
   partition took (the first partition of a worker also pays pyarrow's lazy
   import of pandas);
2. **warm**: then, for each ``--tasks-per-worker`` value, seals and verifies
   again and sums the CPU time (``/proc/PID/stat``) of every process of this
   Ray instance, by role: the driver, the raylet, the worker processes and
   Ray's other daemons.  CPU time, unlike wall time, does not depend on what
   else the machine runs, so the per-task cost shows even under load.

Usage::

    python benchmarks/profile_ray_seal.py /tmp/lake10m/lake --workers 2 --tasks-per-worker 1000000,4
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def _procs() -> dict:
    out = {}
    for e in os.listdir("/proc"):
        if not e.isdigit():
            continue
        try:
            with open(f"/proc/{e}/cmdline", "rb") as fh:
                cmd = fh.read()
            with open(f"/proc/{e}/stat") as fh:
                f = fh.read().rsplit(") ", 1)[1].split()
            out[int(e)] = (cmd, int(f[1]), (int(f[11]) + int(f[12])) / TICK)
        except (OSError, IndexError):
            continue
    return out


def _cpu_by_role(temp: str) -> dict:
    procs = _procs()
    session = {pid for pid, (cmd, _, _) in procs.items() if temp.encode() in cmd}
    acc: dict = {}
    for pid, (cmd, ppid, cpu) in procs.items():
        if pid == os.getpid():
            role = "driver"
        elif pid in session or ppid in session:
            argv = [a.decode(errors="replace") for a in cmd.split(b"\0") if a]
            if argv and argv[0].startswith("ray::"):
                role = "workers" if "IDLE" in argv[0] or "run_" in argv[0] else "ray daemons"
            elif argv and argv[0].endswith("raylet"):
                role = "raylet"
            else:
                role = "ray daemons"  # gcs, log monitor, agents
        else:
            continue
        acc[role] = acc.get(role, 0.0) + cpu
    return acc


def _timed_seal(item, shared):  # pickled by value into the workers
    import os
    import time

    t = time.time()
    import flipguard.integrity._lake as lake

    t1 = time.time()
    r = lake._seal_task(item, shared)
    return {"pid": os.getpid(), "start": t, "imported": t1, "end": time.time(), "result": r}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("lake")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tasks-per-worker", default="1000000,4")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    import ray
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from flipguard.data._partitioned import discover
    from flipguard.engine._ray import RayEngine
    from flipguard.integrity import generate_keypair
    from flipguard.integrity._lake import seal_lake, verify_lake

    temp = tempfile.mkdtemp(prefix="fgprof-", dir="/tmp")  # short: Ray's socket paths
    work = Path(tempfile.mkdtemp(prefix="fgprof-work-"))
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             object_store_memory=1 << 30, _temp_dir=temp)
    try:
        ds = discover(args.lake)
        (work / "staging").mkdir()
        shared = {"name": "lake", "version": 1, "label": "label", "id": "id", "columns": [], "secret": None,
                  "created": "2026-01-01T00:00:00.000000Z", "staging": str(work / "staging"),
                  "partition_key": Ed25519PrivateKey.generate().private_bytes_raw()}
        t0 = time.time()
        out = RayEngine(workers=args.workers, progress=False).map(_timed_seal, list(ds.partitions), shared=shared)
        wall = time.time() - t0
        print(f"cold seal of {len(out)} partitions on {args.workers} fresh worker(s): {wall:.2f} s")
        for pid in sorted({o["pid"] for o in out}):
            mine = sorted((o for o in out if o["pid"] == pid), key=lambda o: o["start"])
            per = [o["end"] - o["imported"] for o in mine]
            print(f"  worker {pid}: first task began {mine[0]['start'] - t0:.2f} s after the map, import "
                  f"{mine[0]['imported'] - mine[0]['start']:.2f} s, first partition {per[0]:.2f} s, then "
                  f"{len(per) - 1} partitions at median {sorted(per[1:])[len(per[1:]) // 2] * 1000:.0f} ms" if len(per) > 1
                  else f"  worker {pid}: 1 partition {per[0]:.2f} s")
        key = generate_keypair()
        for tpw in [int(x) for x in args.tasks_per_worker.split(",")]:
            eng = RayEngine(workers=args.workers, tasks_per_worker=tpw, progress=False)
            seal_lake(args.lake, label="label", id="id", private_key=key, out=work / "lake.json", engine=eng)
            rows = []
            for _ in range(args.repeat):
                before, t = _cpu_by_role(temp), time.perf_counter()
                seal_lake(args.lake, label="label", id="id", private_key=key, out=work / "lake.json", engine=eng)
                assert verify_lake(args.lake, work / "lake.json", key.public_key(), engine=eng).ok
                wall = time.perf_counter() - t
                after = _cpu_by_role(temp)
                rows.append((wall, {k: after.get(k, 0) - before.get(k, 0) for k in after}))
            wall, cpu = sorted(rows, key=lambda r: r[0])[len(rows) // 2]
            n_tasks = 2 * min(len(ds.partitions), tpw * args.workers)
            print(f"warm seal+verify, {n_tasks} Ray tasks ({tpw} per worker): wall {wall:.2f} s (median of "
                  f"{args.repeat}), CPU " + ", ".join(f"{k} {v:.2f} s" for k, v in sorted(cpu.items()))
                  + f", total {sum(cpu.values()):.2f} s")
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    main()
