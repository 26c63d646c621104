"""The audit on tables the detection grid does not name (issue 7 checks it on data it keeps to itself).

Nine tables that ship with scikit-learn or that it generates: iris; diabetes with its
target split at the median; moons; circles; Hastie et al.'s 10-dimensional sphere;
Gaussian quantiles (3 classes); 300 rows of digits; breast cancer with one malignant row
in six kept (a 14 % minority); a 5-class ``make_classification`` with 2 clusters per
class.  Attacks: none, random 10 and 40 %, targeted 30 %.  Each cell is
``bench_detection.run_cell`` (flipguard's defaults, with 5 % trusted rows, and cleanlab
on logistic-regression and gradient-boosting out-of-fold probabilities), seeds 0 and 1
by default.  It prints one line per seed-cell, then a table of means per cell and the
mean F1 over the attacked cells.  Figures go to docs/performance.md ("Beyond the grid")
by hand.

Usage::

    python benchmarks/bench_beyond_grid.py                  # about 10 minutes on 2 cores
    python benchmarks/bench_beyond_grid.py --data mc-5class --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import bench_detection as bd  # noqa: E402
from _machine import machine  # noqa: E402

ATTACKS = [("no flips", None, {}), ("random 10%", "random", {"rate": 0.1}),
           ("random 40%", "random", {"rate": 0.4}), ("targeted 30%", "targeted", {"rate": 0.3})]


def tables():
    from sklearn import datasets as D

    X, y = D.load_iris(return_X_y=True)
    yield "iris", X, y
    X, t = D.load_diabetes(return_X_y=True)
    yield "diabetes-bin", X, (t > np.median(t)).astype(int)
    X, y = D.make_moons(1500, noise=0.3, random_state=0)
    yield "moons", X, y
    X, y = D.make_circles(1500, noise=0.15, factor=0.5, random_state=0)
    yield "circles", X, y
    X, y = D.make_hastie_10_2(3000, random_state=0)
    yield "hastie", X, (y > 0).astype(int)
    X, y = D.make_gaussian_quantiles(n_samples=2000, n_features=6, n_classes=3, random_state=0)
    yield "gquant", X, y
    X, y = D.load_digits(return_X_y=True)
    rows = np.random.RandomState(0).choice(len(y), 300, replace=False)
    yield "digits300", X[rows], y[rows]
    X, y = D.load_breast_cancer(return_X_y=True)
    keep = (y == 1) | (np.arange(len(y)) % 6 == 0)
    yield "breast-imb", X[keep], y[keep]
    X, y = D.make_classification(3000, 30, n_informative=10, n_classes=5, n_clusters_per_class=2,
                                 class_sep=0.8, random_state=7)
    yield "mc-5class", X, y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--data", nargs="*", help="only these tables (names as printed)")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    print(f"Machine: {machine()}", flush=True)
    means, attacked = [], []
    for name, X, y in tables():
        if args.data and name not in args.data:
            continue
        for aname, strategy, params in ATTACKS:
            runs = []
            for seed in args.seeds:
                r = bd.run_cell(X, y, strategy, params, seed)
                runs.append(r)
                fg, tr = r["flipguard"], r["flipguard+trusted"]
                cl, ch = r["cleanlab-logreg"], r["cleanlab-hgb"]
                print(f"{name:12s} {aname:12s} s{seed} true {r['true_flips']:5d} | fg F1 {fg['f1']:.3f} share "
                      f"{fg['flagged_share']:.3f} est {fg['estimated']:5d} {fg['verdict'][:14]:14s} | +tr F1 "
                      f"{tr['f1']:.3f} | cl-lr F1 {cl['f1']:.3f} share {cl['flagged_share']:.3f} | cl-hgb F1 "
                      f"{ch['f1']:.3f} share {ch['flagged_share']:.3f} | {fg['model']}", flush=True)

            def mean(who, key="f1"):
                return float(np.mean([r[who][key] for r in runs]))

            row = (name, aname, "/".join(r["flipguard"]["verdict"][:12] for r in runs), mean("flipguard"),
                   mean("flipguard+trusted"), mean("cleanlab-logreg"), mean("cleanlab-hgb"),
                   mean("flipguard", "flagged_share"), mean("cleanlab-logreg", "flagged_share"),
                   mean("cleanlab-hgb", "flagged_share"),
                   "/".join(str(r["flipguard"]["estimated"]) for r in runs), runs[0]["true_flips"])
            means.append(row)
            if strategy is not None:
                attacked.append(row[3:7])
    print("\n| data | attack | verdicts | F1 fg | +trusted | cl-logreg | cl-hgb | "
          "flagged fg / cl-logreg / cl-hgb | est. fg / true |")
    print("|---|---|---|---:|---:|---:|---:|---|---|")
    for r in means:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.3f} | {r[4]:.3f} | {r[5]:.3f} | {r[6]:.3f} | "
              f"{r[7]:.3f} / {r[8]:.3f} / {r[9]:.3f} | {r[10]} / {r[11]} |")
    if attacked:
        m = np.mean(attacked, axis=0)
        print(f"\nmean F1 over {len(attacked)} attacked cells: flipguard {m[0]:.3f}, +trusted {m[1]:.3f}, "
              f"cl-logreg {m[2]:.3f}, cl-hgb {m[3]:.3f}")


if __name__ == "__main__":
    main()
