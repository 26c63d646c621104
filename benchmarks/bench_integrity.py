"""Benchmark: seal and verify a 10M-row Parquet file against the read floor.

For each id kind (int64, UUID strings) the script writes a Parquet file of
``--rows`` rows (id, a string label with 4 classes, 10 float64 feature
columns; about 0.9 GB for int64 ids) in a temporary directory, then runs each
step in a fresh subprocess, ``--repeat`` times, interleaved:

* ``floor``   pyarrow reads the id and label columns (``pq.read_table(columns=...)``)
* ``floor_dict``  the same with the label as a dictionary (``read_dictionary``), as seal and verify read it
* ``seal``    ``flipguard.integrity.seal`` (read, code labels, hash, write snapshot + manifest)
* ``verify``  ``flipguard.integrity.verify`` on the unchanged file (the fast path)
* ``verify_flipped``  verify after 1 000 labels were flipped in memory (fast path, findings)
* ``verify_shuffled`` verify after the rows were shuffled in memory (the id-join fallback)

The last two time ``verify_table`` only (the data is prepared outside the
timer).  Each step reports wall seconds, CPU seconds (``time.process_time``,
all threads) and the subprocess's peak resident memory (``VmHWM``, falling
back to ``getrusage``); ratios are medians over the repeats divided by the
floor's median in the same run (plus the ratio of the fastest runs and of CPU
time, which shared, loaded machines disturb less).

Usage::

    python benchmarks/bench_integrity.py                 # 10M rows, int64 and UUID ids
    python benchmarks/bench_integrity.py --rows 1000000 --repeat 5 --ids int64
    python benchmarks/bench_integrity.py --quick           # 1M rows, 3 repeats
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STEPS = ("floor", "floor_dict", "seal", "verify", "verify_flipped", "verify_shuffled")


def make_file(path: Path, n: int, ids: str, seed: int = 0) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    if ids == "int64":
        id_col = pa.array(np.arange(n, dtype=np.int64))
    else:  # random version-4-style UUID text, built with numpy (no per-row Python)
        raw = rng.integers(0, 256, (n, 16), dtype=np.uint8)
        hexd = np.frombuffer(b"0123456789abcdef", np.uint8)
        h = np.empty((n, 32), np.uint8)
        h[:, 0::2], h[:, 1::2] = hexd[raw >> 4], hexd[raw & 15]
        s = np.full((n, 36), ord("-"), np.uint8)
        for dst, src in (((0, 8), (0, 8)), ((9, 13), (8, 12)), ((14, 18), (12, 16)), ((19, 23), (16, 20)),
                         ((24, 36), (20, 32))):
            s[:, dst[0]:dst[1]] = h[:, src[0]:src[1]]
        offsets = np.arange(0, 36 * (n + 1), 36, dtype=np.int32)
        id_col = pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(s.tobytes()))
    cols = {"id": id_col}
    for j in range(10):
        cols[f"f{j}"] = rng.standard_normal(n)
    cols["label"] = pa.array(np.array(["bird", "cat", "dog", "fish"])[rng.integers(0, 4, n)])
    pq.write_table(pa.table(cols), path)


def run_step(step: str, data: str, work: str) -> dict:
    """Run one step in this process; returns seconds and peak RSS."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from flipguard.integrity import load_manifest, seal, verify, verify_table
    from flipguard.integrity._verify import read_snapshot_file

    key = os.path.join(work, "keys", "flipguard.key")
    pub = os.path.join(work, "keys", "flipguard.pub")
    manifest = os.path.join(work, "data.flipguard.json")
    extra = {}
    if step in ("floor", "floor_dict"):
        t, c = time.perf_counter(), time.process_time()
        pq.read_table(data, columns=["id", "label"], read_dictionary=["label"] if step == "floor_dict" else None)
        seconds, cpu = time.perf_counter() - t, time.process_time() - c
    elif step == "seal":
        t, c = time.perf_counter(), time.process_time()
        seal(data, label="label", id="id", private_key=key, out=manifest)
        seconds, cpu = time.perf_counter() - t, time.process_time() - c
    elif step == "verify":
        t, c = time.perf_counter(), time.process_time()
        report = verify(data, manifest, pub)
        seconds, cpu = time.perf_counter() - t, time.process_time() - c
        extra = {"ok": report.ok, "aligned_by": report.changes.aligned_by}
    else:
        tbl = pq.read_table(data, columns=["id", "label"], read_dictionary=["label"])
        rng = np.random.default_rng(1)
        if step == "verify_flipped":
            labels = tbl.column("label").combine_chunks()
            rows = rng.choice(len(labels), 1000, replace=False)
            idx = labels.indices.to_numpy().copy()
            idx[rows] = (idx[rows] + 1) % len(labels.dictionary)
            tbl = tbl.set_column(1, "label", pa.DictionaryArray.from_arrays(pa.array(idx), labels.dictionary))
        else:
            tbl = tbl.take(pa.array(rng.permutation(tbl.num_rows)))
        m = load_manifest(manifest)
        snap, _ = read_snapshot_file(m, manifest)
        from flipguard.integrity import load_public_key

        k = load_public_key(pub)
        t, c = time.perf_counter(), time.process_time()
        report = verify_table(tbl, m, k, snapshot=snap)
        seconds, cpu = time.perf_counter() - t, time.process_time() - c
        extra = {"ok": report.ok, "aligned_by": report.changes.aligned_by,
                 "n_changed": report.changes.n_changed}
    return {"step": step, "seconds": seconds, "cpu_seconds": cpu, "peak_rss_mib": peak_rss_mib(), **extra}


def peak_rss_mib() -> float:
    """This process's peak resident memory.

    ``VmHWM`` from /proc (reset by exec, unlike ``ru_maxrss``, which a child
    inherits from the parent it was forked from); ``getrusage`` elsewhere.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> dict:
    import numpy
    import pyarrow

    cpu = "?"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as fh:
        mem_gib = int(fh.readline().split()[1]) / 2**20
    return {"nproc": os.cpu_count(), "cpu": cpu, "ram_gib": round(mem_gib, 1),
            "python": platform.python_version(), "numpy": numpy.__version__, "pyarrow": pyarrow.__version__,
            "load_average": os.getloadavg()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--ids", default="int64,uuid", help="comma-separated: int64, uuid")
    ap.add_argument("--quick", action="store_true", help="1,000,000 rows, 3 repeats (a few minutes)")
    ap.add_argument("--step", help=argparse.SUPPRESS)
    ap.add_argument("--make", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.rows, args.repeat = 1_000_000, 3
    if args.step:
        print(json.dumps(run_step(args.step, args.data, args.work)))
        return
    if args.make:
        make_file(Path(args.data), args.rows, args.make)
        return

    from flipguard.integrity import write_keypair

    print(json.dumps({"machine": machine()}))
    results = {}
    for kind in args.ids.split(","):
        with tempfile.TemporaryDirectory(prefix="fg-bench-") as work:
            data = os.path.join(work, "data.parquet")
            t = time.perf_counter()
            subprocess.run([sys.executable, __file__, "--make", kind, "--rows", str(args.rows), "--data", data],
                           check=True)
            size = os.path.getsize(data)
            print(f"# {kind}: wrote {args.rows} rows, {size / 1e6:.0f} MB in {time.perf_counter() - t:.1f} s",
                  file=sys.stderr)
            write_keypair(os.path.join(work, "keys"))
            runs = {s: [] for s in STEPS}
            subprocess.run([sys.executable, __file__, "--step", "seal", "--data", data, "--work", work],
                           check=True, capture_output=True)  # the manifest the verify steps need
            for _ in range(args.repeat):
                for step in STEPS:
                    out = subprocess.run([sys.executable, __file__, "--step", step, "--data", data, "--work", work],
                                         check=True, capture_output=True, text=True)
                    runs[step].append(json.loads(out.stdout))
            floor = statistics.median(r["seconds"] for r in runs["floor"])
            floor_min = min(r["seconds"] for r in runs["floor"])
            floor_cpu = statistics.median(r["cpu_seconds"] for r in runs["floor"])
            summary = {}
            for step, rs in runs.items():
                med = statistics.median(r["seconds"] for r in rs)
                best = min(r["seconds"] for r in rs)
                summary[step] = {"median_s": round(med, 3), "min_s": round(best, 3),
                                 "runs_s": [round(r["seconds"], 3) for r in rs],
                                 "ratio_to_floor": round(med / floor, 2), "ratio_of_mins": round(best / floor_min, 2),
                                 "cpu_median_s": round(statistics.median(r["cpu_seconds"] for r in rs), 3),
                                 "cpu_ratio": round(statistics.median(r["cpu_seconds"] for r in rs) / floor_cpu, 2),
                                 "peak_rss_mib": round(max(r["peak_rss_mib"] for r in rs)),
                                 **{k: v for k, v in rs[-1].items()
                                    if k not in ("step", "seconds", "cpu_seconds", "peak_rss_mib")}}
            snap = os.path.join(work, "data.flipguard.snapshot")
            results[kind] = {"rows": args.rows, "file_mb": round(size / 1e6), "snapshot_mb":
                             round(os.path.getsize(snap) / 1e6, 1), "steps": summary}
            print(json.dumps({kind: results[kind]}))
    print(json.dumps({"load_average_after": os.getloadavg()}))


if __name__ == "__main__":
    main()
