"""Label monitoring over time: detection delay, false alarms, a class-share test, guarded online learning.

Part 1 -- detection.  Three data sets (scikit-learn's breast cancer and
digits, and a generated four-topic text corpus turned into TF-IDF features),
each split into a reference set (trusted: 40 %; 25 % of the 12,000 texts)
and a stream pool (batches drawn without replacement, the pool reshuffled
when used up).  Streams of
200 batches; from batch 100 on, one of three attacks: random flips of 10 % of
every batch, 20 % of one class relabelled as another (targeted), and a swap of
20 % between two classes (class shares unchanged).  For each stream: the
batch of the first alarm of :class:`flipguard.monitor.LabelMonitor`
(defaults: one false alarm per 1,000 clean batches, design flip rate 0.1),
and of a chi-square test of the batch's class shares against the reference
at the same per-batch false-alarm rate (alpha = 0.001) -- the label-drift
check of the usual monitoring tools.  Delay = first alarm batch - 100 (0: the
first poisoned batch raised it).

Part 2 -- false alarms.  Long clean streams (no attack) per data set, alarms counted.

Part 3 -- guarded online learning.  Breast cancer, standardised with the
reference's statistics, SGDClassifier (log loss, constant step 0.05) learning
batch by batch (50 rows), 20 % of the benign rows labelled malignant from
batch 100.  Prequential (test-then-train) accuracy on the true labels, mean
over batches 100-199: unattacked, attacked, attacked with GuardedLearner.

Usage::

    .venv/bin/python benchmarks/bench_monitor.py            # 3 seeds, 3 x 1,000 clean batches
    .venv/bin/python benchmarks/bench_monitor.py --quick    # 1 seed, 3 x 200 clean batches
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _machine import machine  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
from scipy.stats import chisquare
from sklearn.model_selection import train_test_split
from threadpoolctl import threadpool_limits

from flipguard.monitor import LabelMonitor, compare_prequential, iter_batches, make_stream_attack

START, N_BATCHES = 100, 200


def text_corpus(n=12000, seed=0):
    """Four topics; each document mixes its topic's words with shared words (TF-IDF, 300 terms)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    rng = np.random.RandomState(seed)
    topics = [[f"{t}{i}" for i in range(40)] for t in ("sport", "tech", "food", "travel")]
    common = [f"word{i}" for i in range(300)]
    y = rng.randint(0, 4, n)
    docs = []
    for c in y:
        k = rng.randint(20, 40)
        n_topic = rng.binomial(k, 0.35)
        other = rng.randint(0, 4)
        words = list(rng.choice(topics[c], n_topic)) + list(rng.choice(common, k - n_topic - 2)) \
            + list(rng.choice(topics[other], 2))
        docs.append(" ".join(words))
    X = TfidfVectorizer(max_features=300).fit_transform(docs).toarray()
    return X, np.array(["sport", "tech", "food", "travel"])[y]


def datasets():
    from sklearn.datasets import load_breast_cancer, load_digits

    bc = load_breast_cancer()
    dg = load_digits()
    tx, ty = text_corpus()
    return {
        "breast_cancer": (bc.data, np.where(bc.target == 0, "malignant", "benign"), 100, 0.4),
        "digits": (dg.data, dg.target, 200, 0.4),
        "text_tfidf": (tx, ty, 200, 0.25),
    }


def attacks(y, seed):
    classes, counts = np.unique(y, return_counts=True)
    big, small = classes[np.argsort(-counts)[:2]]
    return {
        "random 10%": make_stream_attack("random", rate=0.1, start=START, random_state=seed),
        "targeted 20%": make_stream_attack("targeted", source=big, target=small, rate=0.2, start=START,
                                           random_state=seed),
        "swap 20%": make_stream_attack("swap", a=big, b=small, rate=0.2, start=START, random_state=seed),
    }


def run_stream(mon, ref_shares, classes, X, y, batch_size, attack, n_batches, seed):
    mon.reset()
    first_mon = first_chi = None
    alarms_pre = chi_pre = 0
    pair = start = None
    for i, (xb, yb, _) in enumerate(iter_batches(X, y, batch_size=batch_size, n_batches=n_batches,
                                                 random_state=seed)):
        if attack is not None:
            yb, _ = attack.poison(yb, i)
        v = mon.update(xb, yb)
        counts = np.array([(yb == c).sum() for c in classes])
        chi_alarm = chisquare(counts, ref_shares * len(yb)).pvalue < 1e-3
        pre = attack is None or i < START
        if v.alarm and pre:
            alarms_pre += 1
        if chi_alarm and pre:
            chi_pre += 1
        if not pre and v.alarm and first_mon is None:
            first_mon, pair, start = i, v.pair, v.start_index
        if not pre and chi_alarm and first_chi is None:
            first_chi = i
    return first_mon, first_chi, alarms_pre, chi_pre, pair, start


def part_detection(data, seeds, n_clean):
    rows, clean_rows = [], []
    for name, (X, y, bs, ref_share) in data.items():
        Xr, Xp, yr, yp = train_test_split(X, y, train_size=ref_share, stratify=y, random_state=0)
        t = time.perf_counter()
        mon = LabelMonitor().fit(Xr, yr)
        fit_s = time.perf_counter() - t
        classes, counts = np.unique(yr, return_counts=True)
        shares = counts / counts.sum()
        for seed in seeds:
            for aname, att in attacks(y, seed).items():
                t = time.perf_counter()
                fm, fc, pre, cpre, pair, start = run_stream(mon, shares, classes, Xp, yp, bs, att, N_BATCHES, seed)
                per_batch = (time.perf_counter() - t) / N_BATCHES
                rows.append(dict(data=name, attack=aname, seed=seed, delay=None if fm is None else fm - START,
                                 chi_delay=None if fc is None else fc - START, false_pre=pre, chi_false_pre=cpre,
                                 pair=pair, start=start, ms=per_batch * 1e3))
                print(f"{name:14s} {aname:13s} seed {seed}: monitor delay {rows[-1]['delay']}, pair {pair}, "
                      f"start {start}; chi-square delay {rows[-1]['chi_delay']}; pre-attack false alarms "
                      f"{pre} / chi {cpre}; {per_batch * 1e3:.1f} ms/batch", flush=True)
        t = time.perf_counter()
        _, _, fa, cfa, _, _ = run_stream(mon, shares, classes, Xp, yp, bs, None, n_clean, 1000)
        clean_rows.append(dict(data=name, batches=n_clean, alarms=fa, chi_alarms=cfa, fit_s=fit_s,
                               ms=(time.perf_counter() - t) / n_clean * 1e3, n_ref=len(yr), batch=bs,
                               K=len(classes), h=mon.threshold_))
        print(f"{name:14s} clean x {n_clean}: {fa} false alarms (chi-square {cfa}); reference {len(yr)} rows, "
              f"{len(classes)} classes, fit {fit_s:.1f} s, threshold {mon.threshold_:.2f}", flush=True)
    return rows, clean_rows


def part_guard():
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import SGDClassifier

    bc = load_breast_cancer()
    X, y = bc.data, np.where(bc.target == 0, "malignant", "benign")
    Xr, Xp, yr, yp = train_test_split(X, y, train_size=0.4, stratify=y, random_state=0)
    mu, sd = Xr.mean(0), Xr.std(0)
    Xr, Xp = (Xr - mu) / sd, (Xp - mu) / sd
    mon = LabelMonitor().fit(Xr, yr)
    att = make_stream_attack("targeted", source="benign", target="malignant", rate=0.2, start=START)
    est = SGDClassifier(loss="log_loss", learning_rate="constant", eta0=0.05, random_state=0)
    runs = compare_prequential(est, Xp, yp, attack=att, monitor=mon, batch_size=50, n_batches=N_BATCHES)
    out = {k: (r.mean_accuracy(1, START), r.mean_accuracy(START)) for k, r in runs.items()}
    for k, (a, b) in out.items():
        print(f"guard: {k:9s} accuracy before attack {a:.3f}, during attack {b:.3f}; quarantined "
              f"{runs[k].quarantined.sum()} rows; first alarm {runs[k].alarms[:1]}", flush=True)
    gap = runs["attacked"].illusion_gap[START:]
    print(f"guard: attacked illusion gap (stream-label minus true-label accuracy) mean {np.nanmean(gap):+.3f}")
    return runs, out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--report", help="write the guarded-learning time series as an HTML report")
    a = ap.parse_args()
    print(machine(), flush=True)
    seeds = [0] if a.quick else [0, 1, 2]
    n_clean = 200 if a.quick else 1000
    with threadpool_limits(1):
        t0 = time.perf_counter()
        rows, clean = part_detection(datasets(), seeds, n_clean)
        runs, _ = part_guard()
    delays = [r["delay"] for r in rows if r["delay"] is not None]
    detected = sum(r["delay"] is not None for r in rows)
    chi_detected = sum(r["chi_delay"] is not None for r in rows)
    clean_batches = sum(c["batches"] for c in clean) + sum(START for _ in rows)
    false_alarms = sum(c["alarms"] for c in clean) + sum(r["false_pre"] for r in rows)
    chi_false = sum(c["chi_alarms"] for c in clean) + sum(r["chi_false_pre"] for r in rows)
    print("\n| data | attack | detected | median delay | max delay | chi-square detected | chi-square median delay |")
    print("|---|---|---|---|---|---|---|")
    for d in dict.fromkeys(r["data"] for r in rows):
        for at in dict.fromkeys(r["attack"] for r in rows):
            sel = [r for r in rows if r["data"] == d and r["attack"] == at]
            dl = [r["delay"] for r in sel if r["delay"] is not None]
            cl = [r["chi_delay"] for r in sel if r["chi_delay"] is not None]
            print(f"| {d} | {at} | {len(dl)}/{len(sel)} | {np.median(dl) if dl else '-'} | "
                  f"{max(dl) if dl else '-'} | {len(cl)}/{len(sel)} | {np.median(cl) if cl else '-'} |")
    print(f"\nmonitor: {detected}/{len(rows)} attacks detected, median delay {np.median(delays)} batches, "
          f"max {max(delays) if delays else '-'}; chi-square: {chi_detected}/{len(rows)}")
    print(f"false alarms: monitor {false_alarms} in {clean_batches} clean batches; chi-square {chi_false}")
    print(f"total {time.perf_counter() - t0:.0f} s")
    if a.report:
        from flipguard.report import prequential_sections, write_report

        write_report(a.report, prequential_sections(runs), title="Guarded online learning under a targeted flip")


if __name__ == "__main__":
    main()
