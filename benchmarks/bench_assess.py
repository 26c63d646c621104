"""Benchmark (c) of the core issue: an `assess` sweep, 4 strategies x 5 rates x 3 seeds, logreg.

Run:  .venv/bin/python benchmarks/bench_assess.py [--sizes 10000,100000] [--n-jobs 2]
Prints one line per size: rows, runs, wall seconds, seconds per run.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
from sklearn.datasets import make_classification

from flipguard.assess import assess
from flipguard.data import load

STRATEGIES = ("random", "targeted", "boundary", "cluster")
RATES = (0.05, 0.1, 0.2, 0.3, 0.4)


def machine() -> str:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{os.cpu_count()} cores, {cpu}, {mem:.0f} GiB RAM, Python {platform.python_version()}, "
            f"numpy {np.__version__}, load {os.getloadavg()[0]:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--n-jobs", type=int, default=2)
    args = ap.parse_args()
    print(machine())
    print(f"{'rows':>8} {'runs':>5} {'seconds':>8} {'s/run':>7}")
    for n in [int(s) for s in args.sizes.split(",")]:
        X, y = make_classification(n_samples=n, n_features=20, n_informative=10, random_state=0)
        ds = load((X, y))
        t = time.perf_counter()
        result = assess(ds, strategies=STRATEGIES, rates=RATES, seeds=3, models=["logreg"],
                        views=None, n_jobs=args.n_jobs)
        dt = time.perf_counter() - t
        runs = len(result.runs)
        print(f"{n:>8} {runs:>5} {dt:>8.1f} {dt / runs:>7.2f}", flush=True)


if __name__ == "__main__":
    main()
