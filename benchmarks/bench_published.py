"""The audit on published out-of-fold probabilities with human-verified label errors.

Northcutt, Athalye & Mueller ("Pervasive label errors in test sets destabilize machine
learning benchmarks", NeurIPS 2021 Datasets and Benchmarks) released cross-validated
predicted probabilities for the test sets of MNIST, CIFAR-10, 20 Newsgroups and IMDB
(and larger ones), with the given labels and five Mechanical Turk votes on every row
that confident learning flagged in 2021.  A row counts here as a **verified error**
when fewer than 3 of its 5 workers chose the given label.  Only the 2021 candidates
were voted on, so the verified count is a lower bound of the true number of errors,
and a flag outside those candidates is unverified, not wrong.

Nothing is downloaded: give the path of a local clone of
https://github.com/cleanlab/label-errors (``--label-errors DIR``).  For each data set
the script audits the labels as published (``flipguard.detection.find_flipped_labels``
with its defaults, probabilities only) against cleanlab's ``find_label_issues`` on the
same probabilities, then the same labels with 5 % random flips and with 30 % of one
class moved to another added on top (the probabilities stay those of a model that saw
the published labels: a label file tampered with after the model was trained).
Figures go to docs/performance.md ("Published out-of-fold probabilities") by hand.

Usage::

    git clone https://github.com/cleanlab/label-errors /data/label-errors   # once, by you
    python benchmarks/bench_published.py --label-errors /data/label-errors
    FLIPGUARD_LABEL_ERRORS=/data/label-errors make bench      # with every other benchmark
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine  # noqa: E402

SETS = {  # name: (probabilities, labels, mturk votes, index file mapping the votes' ids to rows)
    "mnist": ("mnist_test_set_pyx.npy", "mnist_test_set_original_labels.npy", "mnist_mturk.json", None),
    "cifar10": ("cifar10_test_set_pyx.npy", "cifar10_test_set_original_labels.npy", "cifar10_mturk.json",
                None),
    "20news": ("20news_test_set_pyx.npy", "20news_test_set_original_labels.npy", "20news_mturk.json", None),
    "imdb": ("imdb_test_set_pyx.npy", "imdb_test_set_original_labels.npy", "imdb_mturk.json",
             "dataset_indexing/imdb_test_set_index_to_filename.json"),
}


def load(root: Path, name: str):
    probs, labels, votes, index = SETS[name]
    p = np.load(root / "cross_validated_predicted_probabilities" / probs).astype(np.float64)
    y = np.load(root / "original_test_labels" / labels).astype(np.int64)
    rows = json.loads((root / "mturk" / votes).read_text())
    ids = [r["id"] for r in rows if r["mturk"]["given"] < 3]
    if index is not None:  # IMDB's votes name files ("test/neg/10003_3"), the arrays are by position
        where = {f: i for i, f in enumerate(json.loads((root / index).read_text()))}
        ids = [where[i.removeprefix("test/") + ".txt"] for i in ids]
    verified = np.zeros(len(y), bool)
    verified[np.asarray(ids, dtype=np.int64)] = True
    return p, y, verified


def attacked(y: np.ndarray, K: int, attack: str, rng) -> tuple[np.ndarray, np.ndarray]:
    y = y.copy()
    if attack == "random 5%":
        hit = rng.random_sample(len(y)) < 0.05
        y[hit] = (y[hit] + rng.randint(1, K, hit.sum())) % K
    else:  # targeted 30%: class 0 -> class 1
        src = np.flatnonzero(y == 0)
        hit = np.zeros(len(y), bool)
        hit[rng.choice(src, int(0.3 * len(src)), replace=False)] = True
        y[hit] = 1
    return y, hit


def run(p, y, truth, verified):
    from cleanlab.filter import find_label_issues

    from flipguard.detection import find_flipped_labels

    t0 = time.perf_counter()
    a = find_flipped_labels(y, p, random_state=0)
    seconds = time.perf_counter() - t0
    pc = np.clip(p, 0, None)
    pc /= pc.sum(axis=1, keepdims=True)  # cleanlab refuses IMDB's 1.00001
    cl = find_label_issues(y, pc)

    def f1(flags):  # against the injected flips and the verified errors (a lower bound of the truth)
        tp = np.sum(flags & truth)
        return 2 * tp / max(flags.sum() + truth.sum(), 1)

    v = a.verdict
    return {"verdict": v["status"], "rejected_by": v.get("rejected_by", []),
            "estimate": round(float(a.estimated_flips), 1), "clean_estimate": v.get("clean_estimate"),
            "clean_estimate_upper": v.get("clean_estimate_upper"),
            "flagged": int(a.flags.sum()), "flagged_verified": int(np.sum(a.flags & verified)),
            "cl_flagged": int(cl.sum()), "cl_flagged_verified": int(np.sum(cl & verified)),
            "f1": round(float(f1(a.flags)), 3), "cl_f1": round(float(f1(cl)), 3), "seconds": round(seconds, 2)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--label-errors", type=Path, default=os.environ.get("FLIPGUARD_LABEL_ERRORS"),
                    help="a local clone of github.com/cleanlab/label-errors "
                         "(default: $FLIPGUARD_LABEL_ERRORS)")
    ap.add_argument("--data", nargs="*", default=list(SETS), choices=list(SETS))
    ap.add_argument("--json", type=Path, help="write the records here too")
    args = ap.parse_args(argv)
    if args.label_errors is None:  # `make bench` runs every benchmark without arguments
        print("bench_published: skipped, no clone of cleanlab/label-errors given "
              "(--label-errors DIR or FLIPGUARD_LABEL_ERRORS); nothing is downloaded")
        return 0
    args.label_errors = Path(args.label_errors)
    warnings.filterwarnings("ignore")
    print(machine())
    records = []
    head = ("| data | rows | classes | accuracy | labels | verified errors | verdict | estimate (clean) | "
            "flagged (verified) | cleanlab flagged (verified) | F1 fg / cl | s |")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for name in args.data:
        p, y, verified = load(args.label_errors, name)
        K = p.shape[1]
        acc = float(np.mean(p.argmax(axis=1) == y))
        for attack in ("as published", "random 5%", "targeted 30%"):
            if attack == "as published":
                ys, hit = y, np.zeros(len(y), bool)
            else:
                ys, hit = attacked(y, K, attack, np.random.RandomState(0))
            r = run(p, ys, hit | verified, verified & ~hit)
            r.update(data=name, rows=len(y), classes=K, accuracy=round(acc, 3), labels=attack,
                     verified_errors=int(verified.sum()), injected=int(hit.sum()))
            records.append(r)
            truth = f"{r['verified_errors']}" + (f" + {r['injected']} injected" if r["injected"] else "")
            f1 = f"{r['f1']:.3f} / {r['cl_f1']:.3f}"
            print(f"| {name} | {len(y)} | {K} | {acc:.3f} | {attack} | {truth} | {r['verdict']} | "
                  f"{r['estimate']:.0f} ({r['clean_estimate']:.0f}, up to {r['clean_estimate_upper']:.0f}) | "
                  f"{r['flagged']} ({r['flagged_verified']}) | {r['cl_flagged']} ({r['cl_flagged_verified']}) | "
                  f"{f1} | {r['seconds']:.1f} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(records, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
