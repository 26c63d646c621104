"""The audit of a file sorted by label with a row number in it, and what the column checks cost.

A preprocessing step (or an attacker who controls one) that sorts the rows by label
and writes a row number -- pandas' ``to_csv`` writes its index unless told not to --
lets every model read the observed labels, flips included, off that column.  For each
table and attack the flipped labels are written four ways and audited as ``flipguard
audit FILE --label target`` does (``load`` + ``audit_dataset``, defaults):

* ``shuffled``: no row number, rows in their original order (the reference);
* ``sorted+index``: sorted by the observed label, pandas' index written;
* ``sorted+index --keep``: the same file with the index kept as a feature (what every
  version before the checks did);
* ``sorted+seq``: sorted, with a sequence number with gaps (``ticket``: 1000, 1007, ...) instead.

It prints the verdict and F1 of each, then times the checks on 1M rows x 20 features
(``from_table`` with the checks, and with an explicit feature list, which skips them).
Figures go to docs/performance.md ("Columns that carry the label") by hand.

Usage::

    python benchmarks/bench_row_order.py            # about 3 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine  # noqa: E402

ATTACKS = [("random 10%", "random", {"rate": 0.1}), ("targeted 30%", "targeted", {"rate": 0.3}),
           ("random 40%", "random", {"rate": 0.4})]


def tables():
    from sklearn import datasets as D

    for name, loader in (("breast-cancer", D.load_breast_cancer), ("digits", D.load_digits),
                         ("wine", D.load_wine)):
        X, y = loader(return_X_y=True)
        yield name, X, y


def audit_file(path, keep=()):
    from flipguard.data import load
    from flipguard.detection import audit_dataset

    ds = load(path, label="target", keep=keep)
    return audit_dataset(ds, random_state=0, embed=False)


def f1(flags, truth) -> float:
    return 2 * np.count_nonzero(flags & truth) / max(1, flags.sum() + truth.sum())


def quality(seed: int) -> None:
    import pandas as pd

    from flipguard.attacks import make_flipper

    print("| data | attack | true flips | shuffled | sorted+index | sorted+index --keep | sorted+seq |")
    print("|---|---|---:|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, X, y in tables():
            for aname, strategy, params in ATTACKS:
                flipper = make_flipper(strategy, random_state=seed, **params)
                _, y_bad = flipper.fit_resample(X, y)
                truth = np.asarray(flipper.flip_mask_)
                df = pd.DataFrame(X, columns=[f"x{j}" for j in range(X.shape[1])])
                df["target"] = np.asarray(y_bad)
                order = np.argsort(df["target"].to_numpy(), kind="stable")
                srt = df.iloc[order].reset_index(drop=True)
                t_sorted = truth[order]
                df.to_csv(f"{tmp}/plain.csv", index=False)
                srt.to_csv(f"{tmp}/sorted.csv")  # index written
                srt.insert(0, "ticket", 1000 + 7 * np.arange(len(srt)))
                srt.to_csv(f"{tmp}/seq.csv", index=False)
                cells = []
                for key, path, keep, t in (("shuffled", "plain", (), truth), ("sorted+index", "sorted", (), t_sorted),
                                           ("keep", "sorted", ("",), t_sorted), ("seq", "seq", (), t_sorted)):
                    a = audit_file(f"{tmp}/{path}.csv", keep)
                    cells.append(f"{a.verdict.get('status', '')[:12]}, F1 {f1(a.flags, t):.2f}")
                print(f"| {name} | {aname} | {truth.sum()} | " + " | ".join(cells) + " |", flush=True)


def cost() -> None:
    import pyarrow as pa

    from flipguard.data._load import from_table

    rng = np.random.default_rng(0)
    n = 1_000_000
    cols = {f"x{i}": rng.normal(size=n) for i in range(20)}
    cols["row_id"] = rng.permutation(n)
    cols["label"] = rng.integers(0, 4, n)
    tbl = pa.table(cols)
    names = [f"x{i}" for i in range(20)]
    best = {"checks": 9e9, "explicit": 9e9}
    for _ in range(3):
        t = time.perf_counter()
        ds = from_table(tbl, label="label")
        best["checks"] = min(best["checks"], time.perf_counter() - t)
        t = time.perf_counter()
        from_table(tbl, label="label", features=names)
        best["explicit"] = min(best["explicit"], time.perf_counter() - t)
    assert ds.encoding["row_id"].startswith("dropped: row identifier")
    print(f"\n1M rows x 20 float features + a row id, best of 3: encoding with the checks "
          f"{best['checks']:.3f} s, with an explicit feature list (no checks) {best['explicit']:.3f} s "
          f"(checks {best['checks'] - best['explicit']:.3f} s)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    print(machine())
    warnings.simplefilter("ignore")
    quality(args.seed)
    cost()


if __name__ == "__main__":
    main()
