"""Time every label-flipping attack on binary ``make_classification`` data.

Every attack but ALFA runs at 10k, 100k and 1M rows x 20 features; ALFA
(a linear program over 2n variables per iteration) at 1k and 5k rows.
Each cell is the best of ``--repeat`` runs of ``fit_resample`` at rate 0.1.

Usage::

    .venv/bin/python benchmarks/bench_attacks.py            # full table
    .venv/bin/python benchmarks/bench_attacks.py --quick    # 10k rows only (smoke test)
"""

from __future__ import annotations

import argparse
import time

from _machine import machine  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
from sklearn.datasets import make_classification

from flipguard.attacks import flipper_names, make_flipper

SIZES = (10_000, 100_000, 1_000_000)
ALFA_SIZES = (1_000, 5_000)
N_FEATURES = 20


def make_data(n_rows: int, seed: int = 0):
    return make_classification(n_samples=n_rows, n_features=N_FEATURES, n_informative=10,
                               n_redundant=4, n_classes=2, flip_y=0.0, random_state=seed)


def time_attack(name: str, X, y, repeat: int) -> float:
    best = float("inf")
    for r in range(repeat):
        flipper = make_flipper(name, rate=0.1, random_state=r)
        t0 = time.perf_counter()
        flipper.fit_resample(X, y)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k rows (ALFA 1k) only")
    parser.add_argument("--repeat", type=int, default=1, help="runs per cell; the best is reported")
    args = parser.parse_args()
    sizes = SIZES[:1] if args.quick else SIZES
    alfa_sizes = ALFA_SIZES[:1] if args.quick else ALFA_SIZES
    print(machine())
    print(f"{'rows':>10}  {'attack':<13} {'seconds':>8}")
    for n in sizes:
        X, y = make_data(n)
        for name in flipper_names():
            if name == "alfa":
                continue
            print(f"{n:>10,}  {name:<13} {time_attack(name, X, y, args.repeat):>8.3f}", flush=True)
    for n in alfa_sizes:
        X, y = make_data(n)
        print(f"{n:>10,}  {'alfa':<13} {time_attack('alfa', X, y, args.repeat):>8.3f}", flush=True)


if __name__ == "__main__":
    main()
