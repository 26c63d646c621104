"""The audit on two shapes real tables take: sorted by label with a row number, and duplicated rows.

**Sorted by label.** A preprocessing step (or an attacker who controls one) that sorts the rows by label
and writes a row number -- pandas' ``to_csv`` writes its index unless told not to --
lets every model read the observed labels, flips included, off that column.  For each
table and attack the flipped labels are written four ways and audited as ``flipguard
audit FILE --label target`` does (``load`` + ``audit_dataset``, defaults):

* ``shuffled``: no row number, rows in their original order (the reference);
* ``sorted+index``: sorted by the observed label, pandas' index written;
* ``sorted+index --keep``: the same file with the index kept as a feature (what every
  version before the checks did);
* ``sorted+seq``: sorted, with a sequence number with gaps (``ticket``: 1000, 1007, ...) instead.

**Duplicated rows.** Every row twice or three times; 10 % of the rows flipped either in
all their copies (an attacker who flips a record, or duplicates flipped ones) or each
copy on its own (noise), audited with ``LabelAuditor`` defaults.  ``--compare-with SRC``
runs the same on another checkout's ``src`` (e.g. a ``git worktree`` of the commit before
duplicate-aware folds) in a subprocess.

It prints the verdict and F1 of each, then times the column checks and
:func:`flipguard.models.duplicate_groups` on 1M rows x 20 features.  Figures go to
docs/performance.md ("Sorted tables and duplicated rows") by hand.

Usage::

    python benchmarks/bench_input_shapes.py            # about 6 minutes on 2 cores
    python benchmarks/bench_input_shapes.py --compare-with /tmp/base/src
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
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


def duplicated(seed: int) -> list[dict]:
    from sklearn import datasets as D

    from flipguard.detection import LabelAuditor

    out = []
    for name, loader in (("breast-cancer", D.load_breast_cancer), ("digits", D.load_digits),
                         ("wine", D.load_wine)):
        X, y = loader(return_X_y=True)
        K = len(np.unique(y))
        for mode in ("all copies", "each copy"):
            for copies in (2, 3):
                rng = np.random.default_rng(seed)
                Xd, yd = np.repeat(X, copies, axis=0), np.repeat(y, copies)
                flip = (np.repeat(rng.random(len(y)) < 0.1, copies) if mode == "all copies"
                        else rng.random(len(yd)) < 0.1)
                y_bad = np.where(flip, (yd + rng.integers(1, K, len(yd))) % K, yd)
                a = LabelAuditor(random_state=seed).fit(Xd, y_bad, embed=False).audit_
                out.append({"data": name, "mode": mode, "copies": copies, "true": int(flip.sum()),
                            "status": a.verdict.get("status", ""), "f1": f1(a.flags, flip),
                            "estimate": int(a.estimated_flips)})
    return out


def cost() -> None:
    import pyarrow as pa

    from flipguard.data._load import from_table
    from flipguard.models import duplicate_groups

    rng = np.random.default_rng(0)
    n = 1_000_000
    cols = {f"x{i}": rng.normal(size=n) for i in range(20)}
    cols["row_id"] = rng.permutation(n)
    cols["label"] = rng.integers(0, 4, n)
    tbl = pa.table(cols)
    names = [f"x{i}" for i in range(20)]
    best = {"checks": 9e9, "explicit": 9e9, "groups": 9e9, "groups_dup": 9e9}
    X = np.column_stack([cols[c] for c in names])
    Xd = X.copy()
    Xd[rng.choice(n, 1000)] = Xd[rng.choice(n, 1000)]
    for _ in range(3):
        t = time.perf_counter()
        ds = from_table(tbl, label="label")
        best["checks"] = min(best["checks"], time.perf_counter() - t)
        t = time.perf_counter()
        from_table(tbl, label="label", features=names)
        best["explicit"] = min(best["explicit"], time.perf_counter() - t)
        t = time.perf_counter()
        duplicate_groups(X)
        best["groups"] = min(best["groups"], time.perf_counter() - t)
        t = time.perf_counter()
        duplicate_groups(Xd)
        best["groups_dup"] = min(best["groups_dup"], time.perf_counter() - t)
    assert ds.encoding["row_id"].startswith("dropped: row identifier")
    print(f"\n1M rows x 20 float features + a row id, best of 3: encoding with the column checks "
          f"{best['checks']:.3f} s, with an explicit feature list (no checks) {best['explicit']:.3f} s "
          f"(checks {best['checks'] - best['explicit']:.3f} s); duplicate_groups {best['groups']:.3f} s "
          f"without duplicates, {best['groups_dup']:.3f} s with 1,000 copied rows")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compare-with", help="Another checkout's src folder: run the duplicated-rows part there too.")
    p.add_argument("--duplicates-json", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    warnings.simplefilter("ignore")
    if args.duplicates_json:  # the child process of --compare-with
        print(json.dumps(duplicated(args.seed)))
        return
    print(machine())
    quality(args.seed)
    rows = duplicated(args.seed)
    old = None
    if args.compare_with:
        env = {**os.environ, "PYTHONPATH": args.compare_with}
        res = subprocess.run([sys.executable, __file__, "--duplicates-json", "--seed", str(args.seed)],
                             env=env, capture_output=True, text=True, check=True)
        old = json.loads(res.stdout.strip().splitlines()[-1])
    print("\n| data | flipped | copies | true flips | verdict | F1 | estimate |" + (" before: verdict, F1, estimate |"
                                                                                    if old else ""))
    print("|---|---|---:|---:|---|---:|---:|" + ("---|" if old else ""))
    for i, r in enumerate(rows):
        line = (f"| {r['data']} | {r['mode']} | {r['copies']} | {r['true']} | {r['status'][:12]} | {r['f1']:.3f} | "
                f"{r['estimate']} |")
        if old:
            o = old[i]
            line += f" {o['status'][:12]}, {o['f1']:.3f}, {o['estimate']} |"
        print(line, flush=True)
    cost()


if __name__ == "__main__":
    main()
