"""Label-flipping clients against Flower defences, on Flower's simulation engine.

Datasets bundled with scikit-learn (no download): digits (3 -> 8),
breast cancer (malignant -> benign) and wine (class 0 -> 1).  For each
dataset and partition (iid, Dirichlet alpha 0.5), ONE simulation runs the
no-attacker FedAvg baseline and every defence at 10 / 20 / 40 % malicious
clients (nested attacker sets: the 10 % are among the 20 %, ...), so Ray
starts once per (dataset, partition).  Prints one row per (dataset,
partition, malicious, defence) with the final-round source recall, the
points of it lost against the baseline, attack success, accuracy and
detection precision / recall, a markdown table (for docs/federated.md),
and writes figures (source recall per round) and the JSON of every
simulation into ``--out``.

Usage::

    .venv/bin/python benchmarks/bench_federated.py --quick       # digits only, 40 %, 10 rounds
    .venv/bin/python benchmarks/bench_federated.py --out bench-fl  # the full grid (about 30 min on 2 busy cores)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _machine import machine  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

DEFENCES = ("fedavg", "krum", "median", "trimmed_mean", "lfighter", "tolpegin", "fltrust")


def datasets(quick: bool):
    from sklearn.datasets import load_breast_cancer, load_digits, load_wine

    X, y = load_digits(return_X_y=True)
    out = [("digits", X, y, 3, 8)]
    if not quick:
        bc = load_breast_cancer()
        out.append(("breast_cancer", bc.data, bc.target, 0, 1))  # 0 = malignant -> 1 = benign
        X, y = load_wine(return_X_y=True)
        out.append(("wine", X, y, 0, 1))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="digits only, 40 %% malicious, 10 rounds")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 20; 10 with --quick)")
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--out", default="bench-federated", help="directory for JSON and figures")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default=None, help="comma-separated dataset-partition tags to run "
                        "(e.g. wine-iid,digits-dirichlet); default: all")
    parser.add_argument("--defences", default=",".join(DEFENCES), help="comma-separated defences")
    parser.add_argument("--table", action="store_true", help="only print the table of the JSON files in --out")
    args = parser.parse_args()
    out = Path(args.out)
    if args.table:
        print_table(summarize(sorted(out.glob("*-*.json"))))
        return

    from flipguard.attacks import TargetedFlip
    from flipguard.federated import simulate
    from flipguard.report._federated import federated_figure

    rounds = args.rounds or (10 if args.quick else 20)
    fractions = (0.4,) if args.quick else (0.1, 0.2, 0.4)
    out.mkdir(parents=True, exist_ok=True)
    only = set(args.only.split(",")) if args.only else None
    print(machine())
    print(f"{args.clients} clients, {rounds} rounds, logreg clients (2 local epochs), defences {args.defences}")
    rows = []
    for name, X, y, src, tgt in datasets(args.quick):
        for partition in ("iid", "dirichlet"):
            if only is not None and f"{name}-{partition}" not in only:
                continue
            t0 = time.perf_counter()
            res = simulate(X, y, attack=TargetedFlip(source=src, target=tgt, rate=1.0), n_clients=args.clients,
                           malicious=fractions, partition=partition, alpha=0.5, rounds=rounds,
                           defences=args.defences.split(","), random_state=args.seed, dataset=name)
            secs = time.perf_counter() - t0
            tag = f"{name}-{partition}"
            (out / f"{tag}.json").write_text(res.to_json(indent=1))
            for frac in fractions:
                sub = res.subset(frac)
                fig = federated_figure(sub)
                fig.suptitle(f"{name}, {partition}, {frac:.0%} malicious")
                fig.savefig(out / f"{tag}-{int(frac * 100)}.png", dpi=110, facecolor="white")
            base = res.baseline.final
            rows += summarize([out / f"{tag}.json"])
            print(f"{tag}: baseline source recall {base.source_recall:.3f}, accuracy {base.accuracy:.3f}; "
                  f"{len(res.runs)} runs x {rounds} rounds in {secs:.0f} s", flush=True)
    print_table(rows)
    print(f"\nload average at the end: {machine().rsplit('load average', 1)[1]}")


def summarize(paths) -> list[dict]:
    """One row per attacked run of each simulation JSON: final-round metrics and recall lost vs the baseline."""
    rows = []
    for path in paths:
        doc = json.loads(Path(path).read_text())
        s, base = doc["settings"], doc["runs"][0]
        for r in doc["runs"][1:]:
            rows.append({"dataset": s["dataset"], "partition": s["partition"], "rounds": s["rounds"],
                         "malicious": r["malicious"], "defence": r["defence"], "accuracy": r["accuracy"],
                         "source_recall": r["source_recall"], "lost": base["source_recall"] - r["source_recall"],
                         "attack_success_rate": r["attack_success_rate"],
                         "detection_precision": r["detection_precision"], "detection_recall": r["detection_recall"],
                         "baseline_source_recall": base["source_recall"]})
    return rows


def print_table(rows) -> None:
    def c(x):
        return "-" if x is None else f"{x:.2f}"

    print()
    print("| dataset | partition | rounds | malicious | defence | source recall | lost vs baseline | attack success "
          "| accuracy | det. precision | det. recall |")
    print("|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['dataset']} | {r['partition']} | {r['rounds']} | {r['malicious']:.0%} | {r['defence']} | "
              f"{c(r['source_recall'])} | {r['lost'] * 100:+.0f} pts | {c(r['attack_success_rate'])} | "
              f"{c(r['accuracy'])} | {c(r['detection_precision'])} | {c(r['detection_recall'])} |")


if __name__ == "__main__":
    main()
