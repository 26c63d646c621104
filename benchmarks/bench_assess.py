"""Benchmark (c) of the core issue: an `assess` sweep, 4 strategies x 5 rates x 3 seeds, logreg.

Run:  .venv/bin/python benchmarks/bench_assess.py [--sizes 10000,100000] [--n-jobs 2]
Prints one line per size: rows, runs, wall seconds, seconds per run.
"""

from __future__ import annotations

import argparse
import time

from _machine import machine  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
from sklearn.datasets import make_classification

from flipguard.assess import assess
from flipguard.data import load

STRATEGIES = ("random", "targeted", "boundary", "cluster")
RATES = (0.05, 0.1, 0.2, 0.3, 0.4)


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
