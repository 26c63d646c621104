"""Clean-holdout accuracy before and after each mitigation, and the cost of certification.

Part 1 trains on poisoned labels and scores on a clean holdout, for every
mitigation strategy with the no-harm guard (as shipped) and without it, next
to the plain model and "blind drop" (drop every flagged row, no caps, no
guard: naive sanitisation).  Scenarios: random and targeted flips, a
boundary attack, real data (breast cancer), and two imbalanced sets with a
3% minority (flips swamping the minority; clean labels with unreliable flags).

Part 2 times Deep Partition Aggregation: hashing ids into partitions (vectorised
vs one ``hashlib.blake2b`` call per row) and fitting/certifying an ensemble.

Usage::

    .venv/bin/python benchmarks/bench_mitigation.py            # everything
    .venv/bin/python benchmarks/bench_mitigation.py --quick    # smaller data, fewer scenarios
    .venv/bin/python benchmarks/bench_mitigation.py --part 1   # accuracy table only
"""

from __future__ import annotations

import argparse
import hashlib
import time
import uuid

import numpy as np
from _machine import machine  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
from sklearn.datasets import load_breast_cancer, make_classification
from sklearn.model_selection import train_test_split

from flipguard.attacks import make_flipper
from flipguard.mitigation import (
    PartitionAggregationClassifier,
    evaluate_mitigation,
    hash_ids,
)

STRATEGIES = ("drop", "relabel", "weight", "loss_correction")


# -- part 1: accuracy --------------------------------------------------------------------
def scenarios(quick: bool):
    n = 3000 if quick else 6000

    def synth(weights=None, sep=1.0, seed=0, n_rows=n, n_informative=5):
        X, y = make_classification(n_rows, n_features=10, n_informative=n_informative, n_redundant=0,
                                   weights=weights, class_sep=sep, flip_y=0.0, random_state=seed)
        return train_test_split(X, y, test_size=1 / 3, stratify=y, random_state=seed)

    def attack(name, y, X, **kw):
        return make_flipper(name, random_state=0, **kw).fit_resample(X, y)[1]

    Xtr, Xh, ytr, yh = synth()
    yield "random 30%", "logreg", Xtr, attack("random", ytr, Xtr, rate=0.3), Xh, yh
    yield "targeted 40% (1 -> 0)", "logreg", Xtr, attack("targeted", ytr, Xtr, source=1, target=0,
                                                         rate=0.4), Xh, yh
    yield "boundary 20%", "logreg", Xtr, attack("boundary", ytr, Xtr, rate=0.2), Xh, yh
    bc = load_breast_cancer()
    Xtr2, Xh2, ytr2, yh2 = train_test_split(bc.data, bc.target, test_size=1 / 3, stratify=bc.target,
                                            random_state=0)
    yield "breast cancer, random 20%", "logreg", Xtr2, attack("random", ytr2, Xtr2, rate=0.2), Xh2, yh2
    Xtr3, Xh3, ytr3, yh3 = synth(weights=[0.97, 0.03], sep=1.5, seed=1, n_rows=int(n * 1.5))
    yield "3% minority, random 10%", "logreg", Xtr3, attack("random", ytr3, Xtr3, rate=0.1), Xh3, yh3
    if not quick:
        Xtr4, Xh4, ytr4, yh4 = synth(weights=[0.97, 0.03], sep=0.6, seed=0, n_rows=4000, n_informative=4)
        yield "3% minority, clean labels (knn)", "knn", Xtr4, ytr4, Xh4, yh4


def part1(quick: bool) -> None:
    print("\n## Clean-holdout accuracy after mitigation (guarded = as shipped)\n")
    print("| scenario | model | plain acc | blind drop | strategy | guarded: acc (Δ) | bal. acc Δ | kept? |"
          " unguarded: acc Δ |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, model, Xtr, ytr, Xh, yh in scenarios(quick):
        t0 = time.perf_counter()
        g = evaluate_mitigation(Xtr, ytr, Xh, yh, model=model, strategies=("none", "blind_drop") + STRATEGIES,
                                random_state=0)
        u = evaluate_mitigation(Xtr, ytr, Xh, yh, model=model, strategies=STRATEGIES, guard=False,
                                random_state=0)
        base, blind = g["none"], g["blind_drop"]
        for i, s in enumerate(STRATEGIES):
            r, ru = g[s], u[s]
            lead = (f"| {name} | {model} | {base['accuracy']:.4f} | {blind['accuracy'] - base['accuracy']:+.4f} |"
                    if i == 0 else "| | | | |")
            if r["skipped"]:
                print(f"{lead} {s} | skipped ({r['reason']}) | | | |")
                continue
            kept = "fell back" if r["fallback"] else "kept"
            uacc = ("fell back" if ru["fallback"] else f"{ru['accuracy'] - base['accuracy']:+.4f}")
            print(f"{lead} {s} | {r['accuracy']:.4f} ({r['accuracy'] - base['accuracy']:+.4f}) | "
                  f"{r['balanced_accuracy'] - base['balanced_accuracy']:+.4f} | {kept} | {uacc} |")
        print(f"<!-- {name}: {time.perf_counter() - t0:.1f} s -->")
    print("\n'unguarded' keeps the caps (estimated flips per class, at most half a class) and the "
          "transition-matrix check but skips the held-out comparison; 'fell back' there means one of "
          "those refused.")


# -- part 2: certification cost ---------------------------------------------------------------
def part2(quick: bool) -> None:
    print("\n## Deep Partition Aggregation: cost\n")
    n_ids = 200_000 if quick else 1_000_000
    ints = np.arange(n_ids, dtype=np.int64) * 7 + 1_000_003
    uuids = np.array([str(uuid.UUID(int=int(i) * 2654435761)) for i in range(n_ids)], dtype=object)
    print(f"| hashing {n_ids:,} ids (object arrays, as loaded) | seconds |\n|---|---|")
    for label, ids in (("integer ids, vectorised (best of 3)", ints), ("UUID strings, vectorised (best of 3)", uuids)):
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            hash_ids(ids)
            best = min(best, time.perf_counter() - t0)
        print(f"| {label} | {best:.3f} |")
    base = hashlib.blake2b(key=b"flipguard", digest_size=8)
    for label, ids in (("integer ids", ints), ("UUID strings", uuids)):
        t0 = time.perf_counter()
        out = []
        for v in ids.tolist():  # the per-row alternative the vectorised hash replaces
            h = base.copy()
            h.update(str(v).encode())
            out.append(h.digest())
        np.frombuffer(b"".join(out), dtype="<u8")
        print(f"| {label}, one hashlib.blake2b call per row | {time.perf_counter() - t0:.3f} |")

    n = 20_000 if quick else 100_000
    X, y = make_classification(n + 2000, n_features=20, n_informative=10, class_sep=1.5, random_state=0)
    ids = np.arange(n)
    from flipguard.models import make_model

    single = make_model("logreg").fit(X[:n], y[:n])
    print(f"\nOne logreg on all {n:,} rows: holdout accuracy {np.mean(single.predict(X[n:]) == y[n:]):.3f}")
    PartitionAggregationClassifier("logreg", n_partitions=4, n_jobs=2).fit(X[:2000], y[:2000])  # warm the pool
    print(f"\n| DPA on {n:,} rows x 20 features, logreg | fit s | certify 2,000 rows s | "
          "certified acc r=0 / r=5 / r=10 / r=20 |\n|---|---|---|---|")
    for k, jobs in ((50, 1), (50, 2), (500, 1), (500, 2)):
        clf = PartitionAggregationClassifier("logreg", n_partitions=k, random_state=0, n_jobs=jobs)
        t0 = time.perf_counter()
        clf.fit(X[:n], y[:n], ids=ids)
        t_fit = time.perf_counter() - t0
        t0 = time.perf_counter()
        cert = clf.certify(X[n:], y[n:])
        t_cert = time.perf_counter() - t0
        accs = " / ".join(f"{cert.certified_accuracy(r):.3f}" for r in (0, 5, 10, 20))
        print(f"| k={k}, n_jobs={jobs} | {t_fit:.2f} | {t_cert:.2f} | {accs} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller data, fewer scenarios")
    ap.add_argument("--part", type=int, choices=(1, 2), help="run one part only")
    args = ap.parse_args()
    print(f"Machine: {machine()}")
    t0 = time.perf_counter()
    if args.part in (None, 1):
        part1(args.quick)
    if args.part in (None, 2):
        part2(args.quick)
    print(f"\nTotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
