"""LabelMonitor (sequential test, pair and start, feature drift, exact state), stream attacks, guarded learning."""

from __future__ import annotations

import numpy as np
import pytest

from flipguard.exceptions import DataError, IntegrityError, InvalidParameterError
from flipguard.monitor import (
    GuardedLearner,
    LabelMonitor,
    compare_prequential,
    iter_batches,
    make_stream_attack,
)


def blobs(n, k=3, d=4, seed=0, shift=0.0):
    """``k`` Gaussian classes (centres 3 sd apart on a simplex-ish layout), labels as strings."""
    rng = np.random.RandomState(seed)
    centres = np.random.RandomState(99).normal(0, 2.2, (k, d))
    y = rng.randint(0, k, n)
    X = centres[y] + rng.normal(0, 1, (n, d)) + shift
    return X, np.array(["ant", "bee", "cat", "dog", "eel"][:k])[y]


@pytest.fixture(scope="module")
def fitted():
    X, y = blobs(600, seed=1)
    return LabelMonitor(random_state=0).fit(X, y)


def _run(mon, attack, n_batches, batch_size=150, seed=2, shift=0.0):
    X, y = blobs(6000, seed=seed, shift=shift)
    out = []
    for i, (xb, yb, _) in enumerate(iter_batches(X, y, batch_size=batch_size, n_batches=n_batches, random_state=seed)):
        if attack is not None:
            yb, _ = attack.poison(yb, i)
        out.append(mon.update(xb, yb))
    return out


def test_clean_stream_stays_below_the_stated_false_alarm_rate(fitted):
    """Lorden/Ville bound: at most one false alarm per expected_run_length clean batches, on average."""
    mon = LabelMonitor(expected_run_length=10, random_state=0).fit(*blobs(600, seed=1))
    verdicts = _run(mon, None, 150, batch_size=100)
    alarms = sum(v.alarm for v in verdicts)
    assert alarms <= 150 / 10  # the bound; a miscalibrated null would exceed it
    default = _run(fitted.reset(), None, 150, batch_size=100)
    assert not any(v.alarm for v in default)
    assert all(v.status == "no_alarm" and v.suspects <= 3 * v.expected_suspects + 3 for v in default)


def test_class_share_preserving_swap_is_caught_with_its_pair_and_start(fitted):
    mon = fitted.reset()
    swap = make_stream_attack("swap", a="ant", b="cat", rate=0.2, start=30, random_state=0)
    verdicts = _run(mon, swap, 40)
    first = next(v for v in verdicts if v.alarm)
    assert 30 <= first.index <= 33
    assert set(first.pair) == {"ant", "cat"}
    assert 28 <= first.start_index <= 31
    assert first.cause == "label_flipping" and not first.feature_drift
    # the label mix is unchanged, so a class-share test sees nothing
    assert min(v.label_shift_pvalue for v in verdicts[30:]) > 0.001
    assert not any(v.alarm for v in verdicts[:30])
    flipped_rows = [v for v in verdicts[30:] if v.alarm]
    assert all(set(v.pair) == {"ant", "cat"} for v in flipped_rows)


def test_suspects_name_the_flipped_rows_and_their_true_label(fitted):
    mon = fitted.reset()
    X, y = blobs(200, seed=5)
    att = make_stream_attack("targeted", source="bee", target="dog", rate=0.5, start=0) \
        if "dog" in y else make_stream_attack("targeted", source="bee", target="ant", rate=0.5, start=0)
    yp, mask = att.poison(y, 0)
    v = mon.update(X, yp, ids=np.arange(1000, 1200))
    caught = np.isin(np.flatnonzero(mask), v.suspect_rows).mean()
    assert caught > 0.8
    assert (v.suggested_labels[np.isin(v.suspect_rows, np.flatnonzero(mask))] == "bee").mean() > 0.9
    assert np.array_equal(v.suspect_ids, v.suspect_rows + 1000)
    assert np.all(np.diff(v.suspect_scores) <= 0)  # most suspicious first
    d = v.to_dict()
    assert d["suspects"] == len(d["suspect_list"]) and isinstance(d["score"], float)


def test_feature_drift_is_reported_apart_from_label_flipping(fitted):
    mon = fitted.reset()
    drifted = _run(mon, None, 3, shift=2.5)
    assert all(v.feature_drift for v in drifted)
    assert drifted[0].cause in ("feature_drift", "feature_drift_and_label_alarm")
    mon.reset()
    clean = _run(mon, None, 10)
    assert sum(v.feature_drift for v in clean) <= 1


def test_state_restores_exactly_and_detects_edits(fitted, tmp_path):
    mon = fitted.reset()
    att = make_stream_attack("random", rate=0.15, start=3)
    X, y = blobs(3000, seed=7)
    batches = list(iter_batches(X, y, batch_size=100, n_batches=12, random_state=0))
    for i, (xb, yb, _) in enumerate(batches[:6]):
        mon.update(xb, att.poison(yb, i)[0], name=f"b{i}")
    path = tmp_path / "m.state"
    mon.save(path, extra={"files": ["a.csv"]})
    back, extra = LabelMonitor.load(path, with_extra=True)
    assert extra == {"files": ["a.csv"]}
    assert np.array_equal(back.statistic_, mon.statistic_) and back.history_ == mon.history_
    for i, (xb, yb, _) in enumerate(batches[6:], start=6):
        yp = att.poison(yb, i)[0]
        a, b = mon.update(xb, yp, name=f"b{i}"), back.update(xb, yp, name=f"b{i}")
        assert a.to_dict() == b.to_dict()
    assert back.drift_detected == mon.drift_detected
    # an edited record (JSON part) is refused as well as damaged arrays
    import json

    with np.load(path, allow_pickle=False) as z:
        members = {k: z[k] for k in z.files}
    doc = json.loads(bytes(members["__meta__"]).decode())
    doc["meta"]["extra"]["files"] = []
    members["__meta__"] = np.frombuffer(json.dumps(doc).encode(), dtype=np.uint8)
    edited = tmp_path / "edited.state"
    with open(edited, "wb") as fh:
        np.savez(fh, **members)
    with pytest.raises(IntegrityError, match="digest mismatch"):
        LabelMonitor.load(edited)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError):
        LabelMonitor.load(path)


def test_parameters_are_checked_with_a_fix_it_message():
    with pytest.raises(InvalidParameterError, match="'expected_run_length' parameter of LabelMonitor"):
        LabelMonitor(expected_run_length=0).fit(*blobs(100))
    with pytest.raises(InvalidParameterError, match="not fitted"):
        LabelMonitor().update(np.zeros((2, 4)), ["ant", "bee"])


def test_unknown_labels_are_counted_not_judged(fitted):
    mon = fitted.reset()
    X, _ = blobs(20, seed=3)
    v = mon.update(X, np.array(["zebra"] * 20), ids=np.arange(100, 120))
    # Nothing judged, but the batch is a finding: an attacker could hide flips behind an unseen spelling.
    assert (v.status, v.rows, v.judged, v.unknown_labels, v.missing_labels) == ("unknown_labels", 20, 0, 20, 0)
    assert v.finding and not v.alarm
    assert v.unknown_values == [{"value": "zebra", "rows": 20, "looks_like": None}]
    assert v.unknown_ids.tolist() == list(range(100, 120)) and v.missing_ids.tolist() == []


def test_unknown_and_missing_labels_are_named_apart_with_look_alikes(fitted):
    mon = fitted.reset()
    X, y = blobs(40, seed=4)
    y = y.astype(object)
    y[[3, 7, 8]] = "Ant "   # a look-alike of 'ant'
    y[[5]] = 0              # recoded
    y[[10]] = None
    y[[11]] = float("nan")
    y[[12]] = "  "
    v = mon.update(X, y, ids=np.arange(500, 540))
    assert (v.rows, v.judged, v.unknown_labels, v.missing_labels) == (40, 33, 4, 3)
    assert v.status == "unknown_labels" and v.finding and not v.alarm
    assert v.unknown_values == [{"value": "Ant ", "rows": 3, "looks_like": "ant"},
                                {"value": "0", "rows": 1, "looks_like": None}]
    assert v.unknown_rows.tolist() == [3, 5, 7, 8] and v.unknown_ids.tolist() == [503, 505, 507, 508]
    assert v.missing_rows.tolist() == [10, 11, 12] and v.missing_ids.tolist() == [510, 511, 512]
    d = v.to_dict()
    assert (d["rows"], d["judged"], d["unknown_labels"], d["missing_labels"], d["finding"]) == (40, 33, 4, 3, True)
    assert d["unknown_label_ids"] == [503, 505, 507, 508] and d["missing_label_ids"] == [510, 511, 512]
    assert mon.history_[-1]["judged"] == 33 and mon.history_[-1]["unknown_values"][0]["looks_like"] == "ant"
    # float labels: NaN is missing, not a value; a clean batch is still "no_alarm" and not a finding
    Xr, yr = blobs(600, seed=1)
    codes = np.searchsorted(np.array(["ant", "bee", "cat"]), yr).astype(float)
    num = LabelMonitor(random_state=0).fit(Xr, codes)
    yb = codes[:30].copy()
    yb[[2, 4]] = np.nan
    v = num.update(Xr[:30], yb)
    assert (v.status, v.rows, v.judged, v.unknown_labels, v.missing_labels) == ("unknown_labels", 30, 28, 0, 2)
    v = num.update(Xr[30:60], codes[30:60])
    assert (v.status, v.finding, v.rows, v.judged, v.unknown_values) == ("no_alarm", False, 30, 30, [])
    empty = num.update(np.zeros((0, 4)), np.zeros(0))
    assert (empty.status, empty.finding, empty.rows, empty.judged) == ("inconclusive", True, 0, 0)


def test_stream_attacks_are_seeded_and_do_what_they_say():
    y = np.array(["a"] * 50 + ["b"] * 30 + ["c"] * 20)
    swap = make_stream_attack("swap", a="a", b="c", rate=0.2, start=2, random_state=3)
    assert not swap.poison(y, 1)[1].any()
    yp, mask = swap.poison(y, 2)
    assert mask.sum() == 8 and all((yp == c).sum() == (y == c).sum() for c in "abc")
    assert np.array_equal(swap.poison(y, 2)[0], yp) and not np.array_equal(swap.poison(y, 3)[0], yp)
    tgt = make_stream_attack("targeted", source="b", target="a", rate=0.5)
    yp, mask = tgt.poison(y, 0)
    assert set(y[mask]) == {"b"} and set(yp[mask]) == {"a"} and mask.sum() == 15
    burst = make_stream_attack("burst", rate=0.1, start=10, burst_length=2, period=5)
    assert [burst.active(i) for i in range(9, 17)] == [False, True, True, False, False, False, True, True]
    rnd = make_stream_attack("random", rate=0.1)
    yp, mask = rnd.poison(y, 0)
    assert mask.sum() == 10 and np.all(yp[mask] != y[mask])
    with pytest.raises(InvalidParameterError, match="Unknown stream attack"):
        make_stream_attack("nope")


def test_guarded_learner_quarantines_flips_and_releases_on_review(fitted):
    from sklearn.linear_model import SGDClassifier

    att = make_stream_attack("targeted", source="ant", target="bee", rate=0.3, start=5)
    before = fitted.n_batches_
    learner = GuardedLearner(SGDClassifier(random_state=0), monitor=fitted)
    X, y = blobs(4000, seed=11)
    n_flipped = caught = 0
    for i, (xb, yb, _) in enumerate(iter_batches(X, y, batch_size=100, n_batches=15, random_state=0)):
        yp, mask = att.poison(yb, i)
        learner.partial_fit(xb, yp)
        n_flipped += mask.sum()
        caught += (learner.last_doubted_ & mask).sum()
    q = learner.quarantine_
    assert caught / n_flipped > 0.8
    assert (q.y == "bee").mean() > 0.5 and len(q) < 3 * n_flipped  # mostly the flipped rows
    assert any(v.alarm for v in learner.verdicts_) and not any(v.alarm for v in learner.verdicts_[:5])
    review = q.review()
    assert review[0].keys() == {"position", "batch", "label", "suggested", "reason"}
    n = len(q)
    learner.release([0, 1], labels="suggested")
    assert len(q) == n - 2
    learner.discard()
    assert len(q) == 0
    assert fitted.n_batches_ == before  # the guard works on a copy of the caller's monitor


def test_prequential_guard_keeps_accuracy_an_attack_takes():
    from sklearn.linear_model import SGDClassifier

    X, y = blobs(3000, k=2, seed=4)
    ref_X, ref_y = blobs(400, k=2, seed=5)
    mon = LabelMonitor(random_state=0).fit(ref_X, ref_y)
    att = make_stream_attack("targeted", source="ant", target="bee", rate=0.4, start=15)
    est = SGDClassifier(learning_rate="constant", eta0=0.05, random_state=0)
    runs = compare_prequential(est, X, y, attack=att, monitor=mon, batch_size=100, n_batches=40)
    clean, attacked, guarded = (runs[k].mean_accuracy(15) for k in ("clean", "attacked", "guarded"))
    assert attacked < clean - 0.03
    assert guarded > attacked + 0.02
    assert np.all(runs["clean"].illusion_gap[1:] == 0)  # no flips: stream labels are the true labels
    assert np.array_equal(runs["attacked"].illusion_gap, runs["attacked"].accuracy_stream
                          - runs["attacked"].accuracy_true, equal_nan=True)
    assert runs["guarded"].alarms and runs["guarded"].alarms[0] >= 15
    assert runs["clean"].flipped.sum() == 0 and runs["attacked"].flipped[15:].all()


@pytest.mark.browser
def test_time_series_report_renders_in_headless_chromium(chromium, fitted, tmp_path):
    import subprocess

    from matplotlib.image import imread
    from sklearn.linear_model import SGDClassifier

    from flipguard.report import monitor_sections, prequential_sections, write_report

    mon = fitted.reset()
    _run(mon, make_stream_attack("swap", a="ant", b="cat", rate=0.3, start=8), 14, batch_size=100)
    X, y = blobs(1500, seed=4)
    runs = compare_prequential(SGDClassifier(random_state=0), X, y, monitor=fitted, batch_size=100, n_batches=14,
                               attack=make_stream_attack("targeted", source="ant", target="bee", rate=0.4, start=7))
    page = tmp_path / "monitor.html"
    write_report(page, monitor_sections(mon) + prequential_sections(runs), title="Label monitor")
    html = page.read_text()
    assert html.count("<img") == 2 and "Alarms" in html and "estimated start" in html
    shot = tmp_path / "shot.png"
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1000,1800", f"--screenshot={shot}",
           page.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.exists(), proc.stderr[-2000:]
    pixels = (imread(shot)[..., :3].reshape(-1, 3) * 255).round().astype(np.uint8)
    assert len(np.unique(pixels[::7], axis=0)) > 100
    assert 0.05 < float(np.mean(np.any(pixels < 245, axis=1))) < 0.95


def test_a_file_that_is_not_a_state_is_refused_without_numpy_advice(tmp_path):
    text = tmp_path / "ref.csv"
    text.write_text("a,b\n1,2\n")
    with pytest.raises(IntegrityError, match="not a flipguard monitor state file") as info:
        LabelMonitor.load(text)
    assert "pickle" not in str(info.value)
    with pytest.raises(DataError, match="is a directory"):
        LabelMonitor.load(tmp_path)
