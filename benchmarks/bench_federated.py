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
simulation into ``--out``.  ``--seeds 0,1,2`` repeats every simulation
with other seeds (other split, partition, attackers and training order);
the summary then gives the mean over seeds beside each seed's row.  Each
row also says which share of the clients' source-class rows the attackers
held ("src share") and their share of all client rows, which is their
weight in FedAvg ("FedAvg weight"), and their share of rows x local SGD
steps ("rows x steps": a client with more rows also takes more steps, so
this is closer to its pull on FedAvg's mean): an attack whose attackers
hold few source rows, or are small clients, cannot bite, whatever the
defence.  Attackers are drawn among the clients holding source rows
(``simulate(attacker_pool="source")``, as in Jebreel et al.'s code).

Usage::

    .venv/bin/python benchmarks/bench_federated.py --quick       # digits only, 40 %, 10 rounds
    .venv/bin/python benchmarks/bench_federated.py --out bench-fl  # the full grid, 20 rounds, seed 0
    .venv/bin/python benchmarks/bench_federated.py --out bench-fl --seeds 1,2 --defences fedavg,lfighter
    .venv/bin/python benchmarks/bench_federated.py --out bench-fl --table   # tables of every saved JSON
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _machine import machine  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

DEFENCES = ("fedavg", "krum", "median", "trimmed_mean", "lfighter", "tolpegin", "fltrust")
DATASETS = ("digits", "breast_cancer", "wine")


def _order(item):
    """Sort key for table cells keyed (dataset, partition, ...): datasets as run, iid before Dirichlet."""
    key = item[0]
    ds = DATASETS.index(key[0]) if key[0] in DATASETS else len(DATASETS)
    return (ds, key[1] != "iid", *key[2:])


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
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    parser.add_argument("--epochs", type=int, default=5, help="local epochs per round (default 5)")
    parser.add_argument("--only", default=None, help="comma-separated dataset-partition tags to run "
                        "(e.g. wine-iid,digits-dirichlet); default: all")
    parser.add_argument("--defences", default=",".join(DEFENCES), help="comma-separated defences")
    parser.add_argument("--table", action="store_true", help="only print the table of the JSON files in --out")
    args = parser.parse_args()
    out = Path(args.out)
    if args.table:
        rows = summarize(sorted(out.glob("*-s*.json")))
        print_table(rows)
        print_wide(rows)
        print_means(rows)
        print_bar(rows)
        return

    import matplotlib.pyplot as plt

    from flipguard.attacks import TargetedFlip
    from flipguard.federated import simulate
    from flipguard.report._federated import federated_figure

    rounds = args.rounds or (10 if args.quick else 20)
    fractions = (0.4,) if args.quick else (0.1, 0.2, 0.4)
    out.mkdir(parents=True, exist_ok=True)
    only = set(args.only.split(",")) if args.only else None
    print(machine())
    seeds = [int(x) for x in args.seeds.split(",")]
    print(f"{args.clients} clients, {rounds} rounds, logreg clients ({args.epochs} local epochs), "
          f"defences {args.defences}, seeds {seeds}")
    rows = []
    for seed in seeds:
        for name, X, y, src, tgt in datasets(args.quick):
            for partition in ("iid", "dirichlet"):
                if only is not None and f"{name}-{partition}" not in only:
                    continue
                t0 = time.perf_counter()
                res = simulate(X, y, attack=TargetedFlip(source=src, target=tgt, rate=1.0),
                               n_clients=args.clients, malicious=fractions, partition=partition, alpha=0.5,
                               rounds=rounds, epochs=args.epochs, defences=args.defences.split(","),
                               random_state=seed, dataset=name)
                secs = time.perf_counter() - t0
                tag = f"{name}-{partition}-s{seed}"
                (out / f"{tag}.json").write_text(res.to_json(indent=1))
                for frac in fractions:
                    fig = federated_figure(res.subset(frac))
                    fig.suptitle(f"{name}, {partition}, {frac:.0%} malicious, seed {seed}")
                    fig.savefig(out / f"{tag}-{int(frac * 100)}.png", dpi=110, facecolor="white")
                    plt.close(fig)
                base = res.baseline.final
                rows += summarize([out / f"{tag}.json"])
                print(f"{tag}: baseline source recall {base.source_recall:.3f}, accuracy {base.accuracy:.3f}; "
                      f"{len(res.runs)} runs x {rounds} rounds in {secs:.0f} s; {machine().rsplit(';', 1)[1]}",
                      flush=True)
    print_table(rows)
    print_wide(rows)
    print_means(rows)
    print_bar(rows)
    print(f"\nload average at the end: {machine().rsplit('load average', 1)[1]}")


def summarize(paths) -> list[dict]:
    """One row per attacked run of each simulation JSON: final-round metrics and recall lost vs the baseline."""
    rows = []
    for path in paths:
        doc = json.loads(Path(path).read_text())
        s, base = doc["settings"], doc["runs"][0]
        src_rows = s.get("client_source_rows")
        for r in doc["runs"][1:]:
            attackers = r["per_round"]["malicious"][-1]
            share = None if not src_rows else sum(src_rows[a] for a in attackers) / max(1, sum(src_rows))
            weight = sum(s["client_rows"][a] for a in attackers) / sum(s["client_rows"])
            work = _local_work(s)
            work_share = sum(work[a] for a in attackers) / sum(work)
            pr = r["per_round"]
            active = [i for i, m in enumerate(pr["malicious"]) if m]
            rows.append({"dataset": s["dataset"], "partition": s["partition"], "rounds": s["rounds"],
                         "seed": s["seed"], "malicious": r["malicious"], "defence": r["defence"],
                         "accuracy": r["accuracy"], "source_recall": r["source_recall"],
                         "lost": base["source_recall"] - r["source_recall"],
                         "attack_success_rate": r["attack_success_rate"],
                         "detection_precision": r["detection_precision"], "detection_recall": r["detection_recall"],
                         "baseline_source_recall": base["source_recall"], "attackers_source_share": share,
                         "attackers_weight": weight, "attackers_work": work_share,
                         "detection_precision_rounds": _mean([pr["detection_precision"][i] for i in active]),
                         "detection_recall_rounds": _mean([pr["detection_recall"][i] for i in active])})
    return rows


def _local_work(settings) -> list[float]:
    """Each client's rows x local SGD steps per round: how far its update moves FedAvg's weighted mean.

    FedAvg weights a client by its rows, and a client with more rows also
    takes more steps (epochs x batches), so a small client's pull on the
    global model grows with the square of its rows, not linearly.
    """
    bs, ep = settings.get("batch_size", 16), settings.get("epochs", 5)
    return [n * ep * -(-n // bs) for n in settings["client_rows"]]


def _c(x, fmt="{:.2f}"):
    return "-" if x is None else fmt.format(x)


def print_table(rows) -> None:
    print()
    print("| dataset | partition | seed | rounds | malicious | src share | defence | source recall | lost vs baseline "
          "| attack success | accuracy | det. precision | det. recall |")
    print("|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['dataset']} | {r['partition']} | {r['seed']} | {r['rounds']} | {r['malicious']:.0%} | "
              f"{_c(r['attackers_source_share'])} | {r['defence']} | {_c(r['source_recall'])} | "
              f"{r['lost'] * 100:+.1f} pts | {_c(r['attack_success_rate'])} | {_c(r['accuracy'])} | "
              f"{_c(r['detection_precision'])} | {_c(r['detection_recall'])} |")


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def print_wide(rows) -> None:
    """One row per (dataset, partition, seed, malicious): every defence's source recall, (precision / recall)."""
    from collections import defaultdict

    cells = defaultdict(dict)
    order = []
    for r in rows:
        cells[(r["dataset"], r["partition"], r["seed"], r["malicious"])][r["defence"]] = r
        if r["defence"] not in order:
            order.append(r["defence"])
    print()
    print("| data | split | seed | mal. | src share | baseline | " + " | ".join(order) + " |")
    print("|---|---|---:|---:|---:|---:|" + "---:|" * len(order))
    for (ds, part, seed, mal), by in sorted(cells.items(), key=_order):
        ref = next(iter(by.values()))
        out = []
        for name in order:
            r = by.get(name)
            if r is None:
                out.append("")
                continue
            cell = _c(r["source_recall"])
            if r["detection_recall"] is not None or r["detection_precision"] is not None:
                cell += f" ({_c(r['detection_precision'])}/{_c(r['detection_recall'])})"
            out.append(cell)
        split = "iid" if part == "iid" else "Dir 0.5"
        print(f"| {ds} | {split} | {seed} | {mal:.0%} | {_c(ref['attackers_source_share'])} | "
              f"{_c(ref['baseline_source_recall'])} | " + " | ".join(out) + " |")


def print_means(rows) -> None:
    """Points of source recall lost vs the baseline, mean over seeds (worst seed in brackets), per defence."""
    from collections import defaultdict

    cells = defaultdict(lambda: defaultdict(list))
    order = []
    for r in rows:
        cells[(r["dataset"], r["partition"], r["malicious"])][r["defence"]].append(r["lost"] * 100)
        if r["defence"] not in order:
            order.append(r["defence"])
    print()
    print("| data | split | mal. | seeds | " + " | ".join(order) + " |")
    print("|---|---|---:|---:|" + "---:|" * len(order))
    for (ds, part, mal), by in sorted(cells.items(), key=_order):
        n = max(len(v) for v in by.values())
        out = [("" if not v else f"{v[0]:+.0f}" if len(v) == 1 else f"{sum(v) / len(v):+.0f} ({max(v):+.0f})")
               for v in (by.get(name, []) for name in order)]
        split = "iid" if part == "iid" else "Dir 0.5"
        print(f"| {ds} | {split} | {mal:.0%} | {n} | " + " | ".join(out) + " |")


def print_bar(rows) -> None:
    """The issue's bar per (dataset, partition, malicious): FedAvg's loss, LFighter's loss and detection.

    Every figure per seed, then the mean over seeds; detection in the final
    round (the issue's definition) and, in the last column, averaged over
    every round in which the attackers flipped, over all seeds.
    """
    from collections import defaultdict

    cells = defaultdict(lambda: defaultdict(list))
    for r in rows:
        cells[(r["dataset"], r["partition"], r["malicious"])][r["defence"]].append(r)
    print()
    print("| dataset | partition | malicious | seeds | baseline | src share | FedAvg weight | rows x steps "
          "| FedAvg lost | LFighter lost | LFighter det. precision | LFighter det. recall "
          "| LFighter det. P / R, mean of rounds |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (ds, part, mal), by in sorted(cells.items(), key=_order):
        fa, lf = by.get("fedavg", []), by.get("lfighter", [])
        if not fa and not lf:
            continue
        ref = fa or lf
        seeds = ",".join(str(r["seed"]) for r in ref)

        def each(runs, key, scale=1.0, fmt="{:.2f}"):
            vals = [None if r[key] is None else r[key] * scale for r in runs]
            if not vals:
                return "-"
            mean = _mean(vals)
            return " / ".join(_c(v, fmt) for v in vals) + (f" (mean {_c(mean, fmt)})" if len(vals) > 1 else "")

        print(f"| {ds} | {part} | {mal:.0%} | {seeds} | {each(ref, 'baseline_source_recall')} | "
              f"{each(ref, 'attackers_source_share')} | {each(ref, 'attackers_weight')} | "
              f"{each(ref, 'attackers_work')} | {each(fa, 'lost', 100, '{:+.1f}')} | "
              f"{each(lf, 'lost', 100, '{:+.1f}')} | {each(lf, 'detection_precision')} | "
              f"{each(lf, 'detection_recall')} | {_c(_mean([r['detection_precision_rounds'] for r in lf]))} / "
              f"{_c(_mean([r['detection_recall_rounds'] for r in lf]))} |")


if __name__ == "__main__":
    main()
