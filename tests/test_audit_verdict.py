"""The audit's verdict (issue 7): a dataset-level test with a stated false-alarm rate,
row flags with a controlled false-discovery rate, never silent, trusted rows that do
not hurt, ``model="auto"``, and the verdict in JSON, CSV and the CLI table."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from sklearn.datasets import load_breast_cancer

from flipguard.attacks import make_flipper
from flipguard.detection import (
    LabelAuditor,
    TrustedLabels,
    boundary_test,
    f1_selection,
    fdr_selection,
    find_flipped_labels,
    fit_noise_model,
)
from flipguard.metrics import detection_report
from flipguard.models import select_model, stack_weights


def _calibrated(n, seed, spread=3.0):
    """True clean posteriors with varied confidence, and labels drawn from them."""
    rng = np.random.RandomState(seed)
    z = rng.normal(0, spread, n)
    p1 = 1.0 / (1.0 + np.exp(-z))
    probs = np.column_stack([1 - p1, p1])
    y = (rng.random_sample(n) < p1).astype(np.int64)
    return probs, y, rng


@pytest.fixture(scope="module")
def breast():
    return load_breast_cancer(return_X_y=True)


# -- the statistics ------------------------------------------------------------------
def test_fdr_selection_keeps_the_running_mean_lfdr_below_the_target():
    """Sun & Cai (2007): flag the rows of smallest local fdr while their mean stays <= q."""
    post = np.array([0.99, 0.2, 0.95, 0.85, 0.5, 0.0])
    assert np.flatnonzero(fdr_selection(post, 0.1)).tolist() == [0, 2, 3]   # mean lfdr 0.07
    assert np.flatnonzero(fdr_selection(post, 0.01)).tolist() == [0]
    assert not fdr_selection(np.zeros(5), 0.1).any()


def test_f1_selection_maximises_the_plug_in_expected_f1():
    post = np.array([0.9, 0.8, 0.1, 0.05])
    # E[F1](m) = 2 * sum_top_m / (m + 1.85): m=1 0.63, m=2 0.89, m=3 0.79
    assert np.flatnonzero(f1_selection(post)).tolist() == [0, 1]


def test_dataset_test_keeps_its_false_alarm_rate_on_clean_labels():
    """Labels drawn from the (calibrated) probabilities: the bootstrap test at
    alpha = 0.05 should rarely call them poisoned (parametric-bootstrap null)."""
    alarms = 0
    reps = 12
    for seed in range(reps):
        probs, y, rng = _calibrated(300, seed)
        fit = fit_noise_model(y, probs, rng=rng, n_power=0)
        alarms += fit.p_value <= 0.05
    assert alarms <= 3  # expected 0.6; P(>3 | p=0.05, n=12) < 0.003


def test_dataset_test_sees_random_flips_and_estimates_their_number():
    probs, y, rng = _calibrated(1000, 7)
    flipped = rng.random_sample(len(y)) < 0.15
    noisy = np.where(flipped, 1 - y, y)
    fit = fit_noise_model(noisy, probs, rng=rng, n_power=0)
    assert fit.p_value <= 0.05
    assert abs(fit.estimated_flips - flipped.sum()) <= 0.25 * flipped.sum()
    assert fit.clean_estimate_upper < 0.5 * flipped.sum()


def _ten_classes(seed, n=5000, K=10, rate=0.0):
    """A 10-class model of varied confidence, clean labels drawn from it, then random flips."""
    rng = np.random.RandomState(seed)
    z = rng.normal(0, 1.0, (n, K))
    z[np.arange(n), rng.randint(0, K, n)] += rng.uniform(0.5, 6.0, n)
    probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    y = np.minimum((rng.random_sample(n)[:, None] > np.cumsum(probs, axis=1)).sum(axis=1), K - 1)
    hit = rng.random_sample(n) < rate
    y[hit] = (y[hit] + rng.randint(1, K, hit.sum())) % K
    return probs, y, hit


def test_the_clean_estimate_shrinks_with_the_rows_it_is_fitted_on():
    """The flip estimate on clean labels comes from a fitted K x K flip matrix, so it is
    larger the fewer rows it is fitted on; the bootstrap runs on a subsample, and the
    estimate it is compared with is taken at the same size (``comparable_estimate``)."""
    probs, y, _ = _ten_classes(0, rate=0.05)
    small = fit_noise_model(y, probs, max_bootstrap_samples=1000, n_power=0, rng=np.random.RandomState(1))
    large = fit_noise_model(y, probs, max_bootstrap_samples=5000, n_power=0, rng=np.random.RandomState(1))
    assert small.clean_estimate > 1.5 * large.clean_estimate
    assert large.extra["comparable_estimate"] == large.estimated_flips      # every row: one size
    assert small.extra["comparable_estimate"] != small.estimated_flips


def test_a_significant_likelihood_ratio_with_a_real_effect_is_a_poisoned_verdict():
    """5 % random flips of calibrated 10-class labels: the bootstrap test rejects and the
    implied flips exceed the clean expectation by more than min_effect, so the verdict is
    poisoned.  Until 2026-12-01 the estimate also had to exceed the 95th percentile of
    clean labels' estimate taken on a 2,000-row subsample (inflated by the small size), and
    two of these three tables were called inconclusive with "no significant sign of flips
    (p = 0.03)" (cleanlab's CIFAR-10 probabilities with 5 % flips added, too).  The same
    tables with clean labels are not called poisoned."""
    for seed in range(3):
        probs, y, hit = _ten_classes(seed, rate=0.05)
        audit = find_flipped_labels(y, probs, random_state=0)
        assert audit.verdict["status"] == "poisoned", audit.verdict["reason"]
        assert "no significant sign" not in audit.verdict["reason"]
        assert abs(audit.estimated_flips - hit.sum()) <= 0.25 * hit.sum()
        probs, y, _ = _ten_classes(seed)
        assert find_flipped_labels(y, probs, random_state=0).verdict["status"] != "poisoned"


def test_likely_flipped_rows_keep_roughly_their_false_discovery_rate():
    """With calibrated clean posteriors and random flips, the FDR-controlled set's
    share of clean rows stays near the target 10% (mean over seeds)."""
    fdps = []
    for seed in range(4):
        probs, y, rng = _calibrated(1500, 100 + seed, spread=4.0)
        flipped = rng.random_sample(len(y)) < 0.2
        noisy = np.where(flipped, 1 - y, y)
        audit = find_flipped_labels(noisy, probs, random_state=seed, fdr=0.1)
        likely = audit.likely & audit.flags
        assert likely.sum() > 50
        fdps.append(1.0 - flipped[likely].mean())
    assert np.mean(fdps) <= 0.15


def test_boundary_test_keeps_its_false_alarm_rate_on_clean_labels():
    """Labels drawn from the calibrated model: the uncertain rows disagree with the top
    class exactly as often as calibration says (Monte Carlo null, Besag & Clifford 1989)."""
    alarms = 0
    reps = 40
    for seed in range(reps):
        probs, y, rng = _calibrated(400, 200 + seed)
        alarms += boundary_test(y, probs, 1.0, n_draws=199, rng=rng).p_value <= 0.025
    assert alarms <= 4  # expected 1; P(>4 | p=0.025, n=40) < 0.003


def test_boundary_test_sees_an_inverted_band_that_the_likelihood_ratio_misses():
    """Boundary flips (Biggio et al. 2011): labels of the rows nearest the boundary moved to
    the other side.  The confident rows are untouched, so the flip model has nothing to fit,
    but the uncertain rows now disagree with the model far more than calibration allows."""
    probs, y, rng = _calibrated(2000, 11)
    margin = np.abs(probs[:, 1] - 0.5)
    band = margin < np.quantile(margin, 0.15)
    moved = np.where(band, (probs[:, 1] < 0.5).astype(np.int64), y)  # each band row to the far side
    bt = boundary_test(moved, probs, 1.0, rng=rng)
    assert bt.p_value <= 0.01 and bt.excess > 0.05 * len(y)
    assert bt.rows.sum() >= bt.observed and bt.rows[band].all()  # every moved row is named
    fit = fit_noise_model(moved, probs, rng=rng, n_power=0)
    assert fit.p_value > 0.05  # the likelihood ratio alone would have said nothing


@pytest.mark.parametrize("model", ["logreg", "knn", "hgb"])
def test_boundary_test_stays_quiet_on_clean_real_data_whatever_the_model(breast, model):
    """Real models are not calibrated like the simulation; the temperature absorbs most of it,
    and on clean labels the band test does not fire for linear, neighbour or boosted models."""
    from sklearn.datasets import load_wine

    from flipguard.detection._verdict import _fit_h0, _log_q
    from flipguard.models import out_of_fold_proba

    for X, y in (breast, load_wine(return_X_y=True)):
        probs = out_of_fold_proba(model, X, y, random_state=0)
        a0 = _fit_h0(_log_q(probs), y)[0]
        assert boundary_test(y, probs, a0, rng=np.random.RandomState(0)).p_value > 0.025


def test_boundary_flips_are_called_poisoned_and_found_better_than_confident_learning(breast):
    from cleanlab.filter import find_label_issues

    X, y = breast
    flipper = make_flipper("boundary", rate=0.15, random_state=0)
    _, y_bad = flipper.fit_resample(X, y)
    auditor = LabelAuditor(model="logreg", random_state=0).fit(X, y_bad, embed=False)
    audit = auditor.audit_
    assert audit.verdict["status"] == "poisoned" and "boundary_band" in audit.verdict["rejected_by"]
    mask = flipper.flip_mask_
    ours = detection_report(mask, audit.scores, audit.flags)["f1"]
    theirs = detection_report(mask, audit.scores, find_label_issues(y_bad, auditor.pred_probs_))["f1"]
    assert ours >= theirs + 0.1
    bit = 1 << list(audit.reason_names).index("boundary")
    assert ((audit.reason_codes & bit) > 0).sum() > 0


def test_verified_neighbours_find_a_flipped_cluster_and_stay_out_of_random_flips():
    """A flipped region shows in the verified rows that fall in it: their nearest-neighbour
    flip rate (Cover & Hart 1967) finds the region; added to other flags it is used only where
    leave-one-out on the verified rows shows it helps, so it does not lower their F1."""
    from flipguard.detection import verified_neighbour_flags

    rng = np.random.RandomState(3)
    X = rng.normal(size=(1200, 2))
    y = (X[:, 0] > 0).astype(np.int64)
    region = (X[:, 0] > 0.5) & (X[:, 1] > 0.5)
    y_bad = np.where(region, 0, y)
    v_rows = np.sort(rng.choice(1200, 80, replace=False))
    flags, info = verified_neighbour_flags(X, y_bad, v_rows, y[v_rows])
    assert info["used"]
    found = flags | np.isin(np.arange(1200), v_rows[y_bad[v_rows] != y[v_rows]])
    assert (found & region).sum() >= 0.8 * region.sum()
    assert (flags & ~region).sum() <= 0.2 * flags.sum()
    random = rng.random_sample(1200) < 0.1
    y_rand = np.where(random, 1 - y, y)
    main = random & (rng.random_sample(1200) < 0.9)  # main evidence catching most of them
    flags, info = verified_neighbour_flags(X, y_rand, v_rows, y[v_rows], main_flags=main)
    f1 = lambda f: 2 * (f & random).sum() / (f.sum() + random.sum())  # noqa: E731
    assert f1(main | flags) >= f1(main) - 0.02  # used only where it helps on the verified rows
    # verified labels equal to the observed ones: no flip to learn from, nothing flagged
    flags, info = verified_neighbour_flags(X, y_rand, v_rows, y_rand[v_rows], main_flags=main)
    assert not info["used"] and not flags.any()


# -- verdicts on real data --------------------------------------------------------------
def test_clean_breast_cancer_is_not_called_poisoned_and_flags_little(breast):
    X, y = breast
    calls = []
    for seed in range(2):
        audit = LabelAuditor(model="logreg", random_state=seed).fit(X, y).audit_
        calls.append(audit.verdict["status"])
        assert audit.flags.mean() <= 0.03
        assert audit.estimated_flip_rate < 0.05  # --fail-above 0.05 stays quiet
        assert audit.verdict["clean_estimate_upper"] >= 0
    assert calls.count("poisoned") <= 1  # a 5% false-alarm rate, twice


def test_heavy_random_flips_are_never_silent(breast):
    """40% random flips (Northcutt et al. 2021's confident learning still ranks
    them well): the audit flags rows and its F1 is far from zero."""
    X, y = breast
    flipper = make_flipper("random", rate=0.4, random_state=0)
    _, y_bad = flipper.fit_resample(X, y)
    audit = LabelAuditor(model="logreg", random_state=0).fit(X, y_bad).audit_
    report = detection_report(flipper.flip_mask_, audit.scores, audit.flags)
    assert audit.n_flagged > 0.1 * len(y)
    assert report["f1"] > 0.5 and report["auroc"] > 0.8


def test_trusted_rows_do_not_lower_f1_on_random_flips(breast):
    """Where the trusted model is the weaker judge (judged on the verified rows
    themselves), its disputes are not used: 5% trusted rows cost no F1."""
    X, y = breast
    flipper = make_flipper("random", rate=0.1, random_state=1)
    _, y_bad = flipper.fit_resample(X, y)
    rows = np.sort(np.random.RandomState(5).choice(len(y), 28, replace=False))
    trusted = TrustedLabels(X=X[rows], y=y[rows], rows=rows)
    blind = LabelAuditor(model="logreg", random_state=0).fit(X, y_bad)
    helped = LabelAuditor(model="logreg", random_state=0).fit(X, y_bad, trusted=trusted,
                                                              pred_probs=blind.pred_probs_).audit_
    f_blind = detection_report(flipper.flip_mask_, blind.audit_.scores, blind.audit_.flags)["f1"]
    f_help = detection_report(flipper.flip_mask_, helped.scores, helped.flags)["f1"]
    assert f_help >= f_blind - 0.02
    assert "trusted_clean_rows_flagged" in helped.details
    if (y_bad[rows] != y[rows]).any():
        assert helped.verdict["status"] == "poisoned"


def test_verified_rows_from_outside_the_data_add_no_flags_they_cannot_vouch_for(breast):
    """30 verified rows that are not rows of the audited table: whether the trusted model's
    disputes help cannot be judged on them, so ``auto`` does not add them (RONI's cut-off
    added 26 flags and no flip on breast cancer, 194 false ones on digits)."""
    X, y = breast
    outside = np.random.RandomState(3).choice(len(y), 30, replace=False)
    inside = np.setdiff1d(np.arange(len(y)), outside)
    flipper = make_flipper("random", rate=0.1, random_state=1)
    _, y_bad = flipper.fit_resample(X[inside], y[inside])
    blind = LabelAuditor(model="logreg", random_state=0).fit(X[inside], y_bad, embed=False)
    helped = LabelAuditor(model="logreg", random_state=0).fit(
        X[inside], y_bad, trusted=TrustedLabels(X=X[outside], y=y[outside]), embed=False).audit_
    assert helped.details["trusted_rows_in_data"] == 0
    assert "were not used" in helped.details["trusted_fallback"]
    assert not (helped.reason_codes & (1 << helped.reason_names.index("trusted_roni"))).any()
    np.testing.assert_array_equal(helped.flags, blind.audit_.flags)


def test_a_model_the_neighbour_vote_replaces_is_said_to_be_replaced(breast):
    """--model knn on breast cancer with 10 % flips: the 20-neighbour vote has the better Brier
    score and takes the whole stack weight, so the named model does not shape the flags; the
    audit says so (a user comparing --model knn and --model mlp saw identical flags and no word)."""
    X, y = breast
    # the draw this test was written for: 57 rows, the unsalted stream of seed 1
    _, y_bad = make_flipper("random", n_flips=57, random_state=np.random.RandomState(1)).fit_resample(X, y)
    said = "so they replaced them"
    knn = LabelAuditor(model="knn", random_state=0).fit(X, y_bad, embed=False).audit_
    assert knn.details["knn_weight"] == 1.0 and any(said in w for w in knn.warnings)
    logreg = LabelAuditor(model="logreg", random_state=0).fit(X, y_bad, embed=False).audit_
    assert logreg.details["knn_weight"] < 1.0 and not any(said in w for w in logreg.warnings)


# -- model="auto" -----------------------------------------------------------------------
def test_select_model_stacks_towards_a_flexible_model_on_non_linear_data():
    rng = np.random.RandomState(0)
    X = rng.uniform(-1, 1, (600, 2))
    y = ((X[:, 0] * X[:, 1]) > 0).astype(int)  # XOR: no linear model can fit it
    choice = select_model(X, y, random_state=0)
    weights = dict(zip(choice["members"], choice["weights"]))
    assert abs(sum(choice["weights"]) - 1) < 1e-9 and all(w > 0 for w in choice["weights"])
    assert weights.get("logreg", 0.0) <= 0.2  # the linear member is (almost) weighed out
    assert "log-loss" in choice["reason"] and choice["pred_probs"].shape == (600, 2)
    probs = choice["pred_probs"]
    stack_loss = -np.mean(np.log(np.clip(probs[np.arange(600), y], 1e-6, 1)))
    assert stack_loss <= min(v["log_loss"] for v in choice["candidates"].values() if v["log_loss"]) + 1e-4


def test_stack_weights_never_lose_to_a_member():
    """Breiman's stack with convex weights contains every member (a vertex of the simplex),
    so its log-loss is at most the best member's, and it mixes when the members err apart."""
    rng = np.random.RandomState(1)
    y = rng.randint(0, 3, 500)
    truth = np.eye(3)[y]
    a = np.where(rng.rand(500, 1) < 0.5, truth, 1 / 3) * 0.9 + 0.1 / 3  # right on half the rows
    b = np.where(rng.rand(500, 1) < 0.5, truth, 1 / 3) * 0.9 + 0.1 / 3  # right on another half
    w = stack_weights([a, b], y)
    loss = lambda p: -np.mean(np.log(p[np.arange(500), y]))  # noqa: E731
    assert loss(w[0] * a + w[1] * b) <= min(loss(a), loss(b)) + 1e-12
    assert 0 < w[0] < 1


def test_auditor_reports_the_models_it_stacked(breast):
    X, y = breast
    auditor = LabelAuditor(random_state=0).fit(X[:300], y[:300])
    q = auditor.audit_.model_quality
    assert q["selected_by"] == "auto" and "log-loss" in q["selection"]
    assert set(q["members"]) <= {"logreg", "knn", "hgb"} and abs(sum(q["weights"]) - 1) < 1e-9
    if len(q["members"]) > 1:
        assert q["model"].startswith("stack(") and hasattr(auditor.model_used_, "estimators")
    else:
        assert q["model"] == auditor.model_used_ == q["members"][0]


# -- outputs ----------------------------------------------------------------------------
def test_verdict_fields_in_json_and_rows(breast):
    X, y = breast
    flipper = make_flipper("random", rate=0.2, random_state=0)
    _, y_bad = flipper.fit_resample(X, y)
    audit = LabelAuditor(model="logreg", random_state=0).fit(X, y_bad).audit_
    d = json.loads(audit.to_json())
    v = d["verdict"]
    assert {"status", "reason", "alpha", "p_value", "fdr", "estimated_flips", "clean_estimate",
            "clean_estimate_upper", "confident_estimate", "n_likely", "n_ambiguous"} <= set(v)
    assert v["status"] == "poisoned" and v["p_value"] <= v["alpha"]
    assert d["n_likely"] + d["n_ambiguous"] == d["n_flagged"] == v["n_likely"] + v["n_ambiguous"]
    assert v["estimated_flips"] == d["estimated_flips"]
    rows = d["rows"]
    assert all(r["reasons"] for r in rows if r["flagged"])
    assert not any(r["reasons"] or r["likely"] for r in rows if not r["flagged"])
    names = {n for r in rows for n in r["reasons"].split(";") if n}
    assert names <= set(audit.reason_names) and "confident_learning" in names


def test_cli_table_shows_verdict_split_and_model(cli, tmp_path, breast_cancer_frame):
    res = cli("audit", _csv(tmp_path, breast_cancer_frame), "--label", "diagnosis", "--id", "patient_id",
              "--top", "5")
    assert res.exit_code == 0, res.stderr
    assert "verdict:" in res.stdout and "likely flipped" in res.stdout and "ambiguous" in res.stdout
    assert "model chosen:" in res.stdout


def test_cli_fail_above_exits_1_when_labels_are_inconsistent_with_features(cli, tmp_path):
    rng = np.random.RandomState(0)
    table = pa.table({"a": rng.randn(400), "b": rng.randn(400),
                      "y": rng.choice(["x", "z"], 400).tolist()})
    path = tmp_path / "noise.csv"
    pacsv.write_csv(table, path)
    res = cli("audit", path, "--label", "y", "--model", "logreg", "--fail-above", "0.5", "--format", "json")
    assert res.exit_code == 1, res.stderr
    out = json.loads(res.stdout)
    assert out["verdict"]["status"].startswith("labels inconsistent with features")
    assert out["n_flagged"] > 0


def _csv(tmp_path, table):
    path = tmp_path / "data.csv"
    pacsv.write_csv(table, path)
    return path


def _breast_csv(tmp_path, y):
    X, _ = load_breast_cancer(return_X_y=True)
    cols = {f"f{i}": X[:, i] for i in range(X.shape[1])}
    return _csv(tmp_path, pa.table({**cols, "y": np.where(y == 1, "benign", "malignant").tolist()}))


def test_cli_fail_on_poisoned_gates_a_verdict_whose_estimate_is_only_a_lower_bound(cli, tmp_path, breast):
    """Boundary flips: the band test calls the data poisoned, but its count is a lower bound,
    so a CI gate on the estimate alone passes an attacked table; --fail-on poisoned does not."""
    X, y = breast
    _, y_bad = make_flipper("boundary", rate=0.15, random_state=0).fit_resample(X, y)
    path = _breast_csv(tmp_path, y_bad)
    args = ("audit", path, "--label", "y", "--model", "logreg", "--format", "json")
    rate_only = cli(*args, "--fail-above", "0.1")
    out = json.loads(rate_only.stdout)
    assert out["verdict"]["status"] == "poisoned" and out["estimated_flip_rate"] < 0.1
    assert rate_only.exit_code == 0, rate_only.stderr
    assert "note: the verdict is 'poisoned' and the run passes --fail-above 10.0%" in rate_only.stderr
    assert "--fail-on poisoned fails on the verdict itself" in rate_only.stderr
    gated = cli(*args, "--fail-above", "0.1", "--fail-on", "poisoned")
    assert gated.exit_code == 1, gated.stderr
    table = cli("audit", path, "--label", "y", "--model", "logreg", "--fail-on", "inconclusive,poisoned")
    assert table.exit_code == 1 and "verdict: poisoned (--fail-on poisoned)" in table.stderr


def test_a_stray_class_value_keeps_the_verdict_and_the_gate(cli, tmp_path, breast):
    """One typo row (a class with fewer rows than folds) in a table with 20 % random flips: the
    other rows' audit still gives the verdict, the likely/ambiguous split and per-row reasons, so
    --fail-on poisoned still fails; the stray row is flagged for review, never "likely"."""
    X, y = breast
    _, y_bad = make_flipper("random", rate=0.2, random_state=0).fit_resample(X, y)
    labels = np.where(y_bad == 1, "benign", "malignant").astype(object)
    labels[7] = "unicorn"
    cols = {f"f{i}": X[:, i] for i in range(X.shape[1])}
    path = _csv(tmp_path, pa.table({**cols, "y": labels.tolist()}))
    res = cli("audit", path, "--label", "y", "--model", "logreg", "--format", "json", "--fail-on", "poisoned")
    assert res.exit_code == 1, res.stderr
    out = json.loads(res.stdout)
    assert out["verdict"]["status"] == "poisoned"
    assert out["details"]["rare_classes"] == {"unicorn": 1}
    stray = out["rows"][7]
    assert stray["flagged"] and not stray["likely"] and stray["reasons"] == "class_too_small"
    others = [r for i, r in enumerate(out["rows"]) if r["flagged"] and i != 7]
    assert others and all(r["reasons"] and "class_too_small" not in r["reasons"] for r in others)
    assert out["n_likely"] > 0.5 * int((y_bad != y).sum())


def test_cli_fail_above_does_not_page_on_a_count_clean_labels_give(cli, tmp_path):
    """Overlapping classes (out-of-fold accuracy about 0.75): confident learning disputes over 20 %
    of *clean* labels, and clean labels this uncertain give as many.  --fail-above 0.05 must not
    page on that count (the issue's first complaint); it says so on stderr, and the verdict is
    still there to gate on with --fail-on inconclusive."""
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=2000, n_features=20, n_informative=4, class_sep=0.4,
                               flip_y=0, random_state=4)
    path = _csv(tmp_path, pa.table({**{f"f{i}": X[:, i] for i in range(20)}, "y": y}))
    args = ("audit", path, "--label", "y", "--model", "logreg", "--fail-above", "0.05")
    res = cli(*args, "--format", "json")
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)
    v = out["verdict"]
    assert out["estimated_flip_rate"] > 0.05 and v["status"] == "inconclusive"
    assert out["estimated_flips"] <= v["clean_estimate_upper"]
    assert "does not fail the run" in res.stderr and f"up to {v['clean_estimate_upper']}" in res.stderr
    gated = cli(*args, "--fail-on", "inconclusive")
    assert gated.exit_code == 1 and "verdict: inconclusive (--fail-on inconclusive)" in gated.stderr
    # 40 % of one class flipped: on labels this uncertain the count may stay in the clean range;
    # the run is then never silent: it fails, or says why it does not and what the verdict is
    rng = np.random.RandomState(0)
    bad = y.copy()
    bad[(y == 0) & (rng.random_sample(len(y)) < 0.4)] = 1
    (tmp_path / "bad").mkdir()
    path2 = _csv(tmp_path / "bad", pa.table({**{f"f{i}": X[:, i] for i in range(20)}, "y": bad}))
    res2 = cli("audit", path2, "--label", "y", "--model", "logreg", "--fail-above", "0.05", "--format", "json")
    out2 = json.loads(res2.stdout)
    assert out2["verdict"]["status"] != "consistent with clean labels"
    assert res2.exit_code == 1 or ("does not fail the run" in res2.stderr
                                   and out2["verdict"]["status"] == "inconclusive")


def test_cli_fail_on_stays_quiet_on_clean_labels_and_refuses_bad_values(cli, tmp_path, breast):
    X, y = breast
    path = _breast_csv(tmp_path, y)
    ok = cli("audit", path, "--label", "y", "--model", "logreg", "--fail-on", "poisoned", "--format", "json")
    assert ok.exit_code == 0, ok.stderr
    assert json.loads(ok.stdout)["verdict"]["status"] != "poisoned"
    for extra in (("--fail-on", "dirty"), ("--fail-on", "poisoned", "--method", "confident_learning")):
        out = tmp_path / "rows.csv"
        bad = cli("audit", path, "--label", "y", *extra, "--format", "csv", "--out", out)
        assert bad.exit_code == 2 and not out.exists()
        lines = bad.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error:") and "--fail-on" in lines[0], bad.stderr


def test_retraining_without_the_band_suspects_finds_more_boundary_flips():
    """Once the band test rejects, the model is retrained without its suspects and every
    row re-scored out of sample (one step of iterative trimmed-loss minimisation, Shen &
    Sanghavi 2019): the boundary moves back and more of the moved labels are found."""
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=2000, n_features=20, n_informative=5, n_clusters_per_class=1,
                               flip_y=0, random_state=1)
    flipper = make_flipper("boundary", rate=0.15, random_state=0)
    _, y_bad = flipper.fit_resample(X, y)
    mask = flipper.flip_mask_
    auditor = LabelAuditor(model="logreg", random_state=0).fit(X, y_bad, embed=False)
    audit = auditor.audit_
    assert "boundary_band" in audit.verdict["rejected_by"]
    assert audit.details["retrained_flags"] > 0
    bit = 1 << list(audit.reason_names).index("retrained")
    assert ((audit.reason_codes & bit) > 0).sum() == audit.details["retrained_flags"]
    # The same probabilities without a model to retrain (pred_probs given): no second pass.
    once = LabelAuditor(model="logreg", random_state=0).fit(X, y_bad, pred_probs=auditor.pred_probs_,
                                                            embed=False).audit_
    assert "retrained_flags" not in once.details
    ours = detection_report(mask, audit.scores, audit.flags)["f1"]
    assert ours >= detection_report(mask, once.scores, once.flags)["f1"] + 0.05
    # Clean labels: the band test does not reject, so nothing is retrained.
    clean = LabelAuditor(model="logreg", random_state=0).fit(X, y, embed=False).audit_
    assert "retrained_flags" not in clean.details


def test_retrain_reveals_only_a_significant_rise_in_the_count():
    """The retrained count must exceed the first by RETRAIN_Z standard errors of the two
    posterior sums (variance sum(p(1-p)) each) and the verdict's practical floor."""
    from flipguard.detection._auto import RETRAIN_Z, retrain_reveals

    rng = np.random.RandomState(0)
    post = rng.beta(0.2, 2.0, 2000)
    same = retrain_reveals(post, post.copy(), floor=10)
    assert not same["revealed"] and same["estimate_before"] == same["estimate_after"]
    se = retrain_reveals(post, post, floor=0)["standard_error"]
    assert se == pytest.approx(np.sqrt(2 * np.sum(post * (1 - post))), rel=1e-3)
    # Rows whose posterior rises to 1: a rise of k flips, against RETRAIN_Z * se.
    order = np.argsort(post)
    for k, expected in ((int(0.5 * RETRAIN_Z * se), False), (int(3 * RETRAIN_Z * se), True)):
        raised = post.copy()
        raised[order[:k]] = 1.0
        gain = raised.sum() - post.sum()
        out = retrain_reveals(post, raised, floor=3)
        assert out["revealed"] is expected, (k, gain, out)
    # Significant, but fewer flips than a verdict needs: not revealed.
    raised = post.copy()
    raised[order[:int(3 * RETRAIN_Z * se)]] = 1.0
    assert not retrain_reveals(post, raised, floor=raised.sum() - post.sum() + 1)["revealed"]


@pytest.fixture(scope="module")
def digits_attacked():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    out = {}
    for name, params in (("targeted", {"rate": 0.3}), ("random", {"rate": 0.1})):
        flipper = make_flipper(name, random_state=1, **params)
        _, y_bad = flipper.fit_resample(X, y)
        auditor = LabelAuditor(random_state=1).fit(X, y_bad, embed=False)
        once = LabelAuditor(random_state=1).fit(X, y_bad, pred_probs=auditor.pred_probs_, embed=False).audit_
        out[name] = (flipper.flip_mask_, auditor.audit_, once)
    return out


def test_retraining_after_the_likelihood_ratio_counts_flips_the_model_absorbed(digits_attacked):
    """A targeted attack (30 % of the smallest digit moved to the largest) is partly learnt by
    the out-of-fold models, which then count too few flips.  Retrained without the rows
    flagged (Shen & Sanghavi 2019), they count more, significantly: those flags are added
    and the estimate moves toward the truth."""
    mask, audit, once = digits_attacked["targeted"]
    assert audit.verdict["rejected_by"] == ["likelihood_ratio"]
    info = audit.details["retrain"]
    assert info["after"] == "likelihood_ratio" and info["revealed"], info
    assert info["estimate_after"] > info["estimate_before"]
    truth = int(mask.sum())
    assert abs(audit.estimated_flips - truth) < abs(once.estimated_flips - truth)
    bit = 1 << list(audit.reason_names).index("retrained")
    assert ((audit.reason_codes & bit) > 0).sum() == audit.details["retrained_flags"] > 0
    assert "retrained without the" in audit.verdict["reason"]
    assert detection_report(mask, audit.scores, audit.flags)["f1"] >= \
        detection_report(mask, once.scores, once.flags)["f1"] + 0.05
    # With pred_probs there is no model to retrain: no second pass.
    assert "retrain" not in once.details


def test_retraining_after_random_flips_keeps_the_first_flags(digits_attacked):
    """Random flips sit where the model is sure and are not learnt: the retrained count does not
    rise, and the sharper retrained models' extra disputes are not added."""
    mask, audit, once = digits_attacked["random"]
    assert "likelihood_ratio" in audit.verdict["rejected_by"]
    info = audit.details["retrain"]
    assert not info["revealed"], info
    assert "retrained_flags" not in audit.details
    assert np.array_equal(audit.flags, once.flags)
    assert audit.estimated_flips == once.estimated_flips


def test_band_retrain_passes_fit_the_time_budget():
    """Extra band passes are spent while the model selection's projected refit cost fits
    RETRAIN_BUDGET; at least one pass, at most RETRAIN_STEPS; a named model (no projection)
    gets them all."""
    from types import SimpleNamespace

    from flipguard.detection._auto import RETRAIN_BUDGET, RETRAIN_STEPS, AutoDetector

    def steps(seconds):
        refit = lambda drop: None  # noqa: E731
        if seconds is not None:
            refit.seconds = seconds
        return AutoDetector._retrain_steps(SimpleNamespace(extra={"refit": refit}))

    assert steps(None) == RETRAIN_STEPS
    assert steps(RETRAIN_BUDGET / 10) == RETRAIN_STEPS
    assert steps(RETRAIN_BUDGET / 2.5) == 2
    assert steps(RETRAIN_BUDGET * 0.8) == 1 and steps(RETRAIN_BUDGET * 4) == 1


def test_no_retrain_beyond_retrain_max_samples():
    """The retrain pass refits every fold's model: not spent on more rows than
    ``retrain_max_samples`` (the 1M-row audit stays within its budget)."""
    X, y = load_breast_cancer(return_X_y=True)
    _, y_bad = make_flipper("random", rate=0.1, random_state=0).fit_resample(X, y)
    audit = LabelAuditor(model="logreg", method_params={"retrain_max_samples": 100},
                         random_state=0).fit(X, y_bad, embed=False).audit_
    assert "likelihood_ratio" in audit.verdict["rejected_by"] and "retrain" not in audit.details
    full = LabelAuditor(model="logreg", random_state=0).fit(X, y_bad, embed=False).audit_
    assert "retrain" in full.details


def test_confident_count_null_matches_the_count_on_clean_labels():
    """Labels drawn from calibrated probabilities are clean by construction; confident
    learning still counts the rows whose label is not the most probable class.  The null
    says how many, so that count is not read as flips."""
    from flipguard.detection import confident_count_null
    from flipguard.detection._confident import confident_joint

    inside = 0
    for seed in range(5):
        probs, y, rng = _calibrated(4000, seed, spread=1.5)
        joint, _ = confident_joint(y, probs)
        observed = joint.sum() - np.trace(joint)
        mean, upper = confident_count_null(probs, 1.0, rng=rng)
        assert observed > 0.05 * len(y)  # overlapping classes: many clean "issues"
        assert abs(observed - mean) <= 0.15 * mean
        inside += observed <= upper
    assert inside >= 4


def test_clean_overlapping_table_reports_the_count_clean_labels_give(cli, tmp_path):
    """A clean table whose classes overlap (out-of-fold accuracy below 0.85): confident
    learning's count is large, and the verdict says clean labels give as many."""
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=2000, n_features=20, n_informative=4, class_sep=0.4, flip_y=0,
                               random_state=4)
    audit = LabelAuditor(model="logreg", random_state=0).fit(X, y, embed=False).audit_
    v = audit.verdict
    assert v["status"] != "poisoned" and audit.estimated_flips > 0.05 * len(y)
    assert v["clean_estimate"] == v["confident_clean_estimate"]
    assert v["clean_estimate_upper"] >= audit.estimated_flips >= 0.7 * v["clean_estimate"]
    assert "prove nothing either way" in v["reason"]
    path = _csv(tmp_path, pa.table({**{f"f{i}": X[:, i] for i in range(X.shape[1])}, "y": y}))
    res = cli("audit", path, "--label", "y", "--model", "logreg")
    assert res.exit_code == 0, res.stderr
    assert "clean labels this uncertain give about" in res.stdout


# -- the verified rows' own estimate --------------------------------------------------
def test_verified_sample_interval_covers_the_true_number_of_flips():
    """Clopper-Pearson is exact: over random samples of verified rows its 95% interval, scaled to the
    data, covers the true number of flips at least 95% of the time (here: in 190 of 200 draws or more),
    and the stratified estimate is unbiased (its mean is within 3% of the truth)."""
    from flipguard.detection._auto import verified_sample_estimate

    rng = np.random.RandomState(0)
    n, K = 4000, 3
    true = rng.randint(0, K, n)
    flip = rng.random_sample(n) < 0.12
    labels = np.where(flip, (true + 1 + rng.randint(0, K - 1, n)) % K, true)
    model = np.diag(np.bincount(labels, minlength=K)).astype(np.int64)  # a model that sees no flip
    covered, estimates = 0, []
    for _ in range(200):
        rows = np.sort(rng.choice(n, 120, replace=False))
        summary, transitions = verified_sample_estimate(labels, rows, true[rows], K, model)
        covered += summary["flips_low"] <= flip.sum() <= summary["flips_high"]
        estimates.append(summary["flips"])
        assert transitions.sum(axis=0).tolist() == np.bincount(labels, minlength=K).tolist()
        assert summary["flips"] == transitions.sum() - np.trace(transitions)
    assert covered >= 190
    assert abs(np.mean(estimates) - flip.sum()) <= 0.03 * flip.sum()


def test_verified_rows_picked_from_the_flags_are_read_within_flagged_and_unflagged_rows():
    """Reviewing the audit's own suspects is the natural workflow, and their flip rate is not everyone's:
    scaled to every row it read 11 flips in 20 reviewed suspects as 1,318 flips in 2,000 rows (300 true).
    Post-stratified by the flags (Cochran 1977, ch. 5) the estimate is unbiased again; with no verified
    row among the unflagged rows nothing is extrapolated; a random sample is read as before."""
    from flipguard.detection._auto import verified_estimate_text, verified_sample_estimate

    rng = np.random.RandomState(0)
    n, K = 4000, 2
    true = rng.randint(0, K, n)
    flip = rng.random_sample(n) < 0.08
    labels = np.where(flip, 1 - true, true)
    flags = np.where(flip, rng.random_sample(n) < 0.7, rng.random_sample(n) < 0.05)  # an audit's flags
    model = np.diag(np.bincount(labels, minlength=K)).astype(np.int64)  # a model that sees no flip
    truth = int(flip.sum())
    estimates, naive = [], []
    for _ in range(100):
        rows = np.r_[rng.choice(np.flatnonzero(flags), 40, replace=False),
                     rng.choice(np.flatnonzero(~flags), 40, replace=False)]
        v, transitions = verified_sample_estimate(labels, rows, true[rows], K, model, flags=flags)
        assert v["sample"]["selected"] and v["sample"]["extrapolated"].startswith("within")
        assert v["flips_low"] <= v["flips"] <= v["flips_high"]
        assert transitions.sum(axis=0).tolist() == np.bincount(labels, minlength=K).tolist()
        estimates.append(v["flips"])
        naive.append(verified_sample_estimate(labels, rows, true[rows], K, model)[0]["flips"])
    assert abs(np.mean(estimates) - truth) <= 0.05 * truth
    assert np.mean(naive) > 2 * truth  # what reading them as a random sample gave
    assert "not a random sample" in verified_estimate_text(v)

    suspects = rng.choice(np.flatnonzero(flags), 30, replace=False)
    v, transitions = verified_sample_estimate(labels, suspects, true[suspects], K, model, flags=flags)
    assert not v["used"] and v["flips"] == v["model_estimate"] and transitions is model
    assert v["sample"]["extrapolated"].startswith("no verified row among the unflagged rows")
    assert "the estimate keeps the model's count" in verified_estimate_text(v)

    random_rows = np.sort(rng.choice(n, 120, replace=False))
    v, _ = verified_sample_estimate(labels, random_rows, true[random_rows], K, model, flags=flags)
    before, _ = verified_sample_estimate(labels, random_rows, true[random_rows], K, model)
    assert not v["sample"]["selected"]
    assert {k: v[k] for k in before if k != "sample"} == {k: before[k] for k in before if k != "sample"}


def test_verified_rows_replace_a_count_they_contradict_and_leave_one_they_allow(breast):
    """Boundary flips are absorbed by the model (its count is a lower bound); 5% verified rows drawn at
    random say how many there are.  Random flips the model counts well keep the model's estimate."""
    X, y = breast
    rows = np.sort(np.random.RandomState(0).choice(len(y), 28, replace=False))
    trusted = TrustedLabels(X=X[rows], y=y[rows], rows=rows)
    flipper = make_flipper("boundary", rate=0.15, random_state=0)
    _, y_bad = flipper.fit_resample(X, y)
    audit = LabelAuditor(random_state=0).fit(X, y_bad, trusted=trusted, embed=False).audit_
    v, truth = audit.verdict["verified_estimate"], int(flipper.flip_mask_.sum())
    assert v["used"] and v["flipped"] == int((y_bad[rows] != y[rows]).sum()) > 0
    assert abs(audit.estimated_flips - truth) < abs(v["model_estimate"] - truth)
    assert v["flips_low"] <= truth <= v["flips_high"]

    flipper = make_flipper("random", rate=0.1, random_state=1)
    _, y_bad = flipper.fit_resample(X, y)
    audit = LabelAuditor(random_state=0).fit(X, y_bad, trusted=trusted, embed=False).audit_
    v = audit.verdict["verified_estimate"]
    assert not v["used"] and audit.estimated_flips == v["model_estimate"]
    assert v["flips_low"] <= audit.estimated_flips <= v["flips_high"]


# -- a targeted attack's footprint in the boundary band ---------------------------------

def test_anchor_flip_rates_recover_a_class_conditional_flip_matrix():
    """Patrini et al. (2017): where every class has anchor points (rows certainly of it), the
    probabilities of the *noisy* labels at a class's anchors are that class's row of the flip
    matrix -- for two classes and for three."""
    from flipguard.detection._verdict import anchor_flip_rates

    clean, _, _ = _calibrated(5000, 0, spread=8.0)
    T = np.array([[0.75, 0.25], [0.03, 0.97]])
    assert np.allclose(anchor_flip_rates(clean @ T), T, atol=0.01)
    rng = np.random.RandomState(1)
    logits = rng.normal(0, 6, (6000, 3))
    clean3 = np.exp(logits - logits.max(axis=1, keepdims=True))
    clean3 /= clean3.sum(axis=1, keepdims=True)
    T3 = np.array([[0.8, 0.0, 0.2], [0.0, 1.0, 0.0], [0.05, 0.1, 0.85]])
    assert np.allclose(anchor_flip_rates(clean3 @ T3), T3, atol=0.02)
    # No flips: the anchors are (almost) pure.
    assert anchor_flip_rates(clean)[~np.eye(2, dtype=bool)].max() < 0.01


def test_backward_correction_undoes_a_one_sided_flip_matrix():
    """``q = p @ T`` for the flip matrix of one class moved to another; the correction is
    ``q @ inv(T)`` (Patrini et al. 2017), so it gives back ``p``."""
    from flipguard.detection._auto import backward_corrected

    clean, _, _ = _calibrated(1000, 2)
    T = np.array([[0.8, 0.2], [0.0, 1.0]])
    back = backward_corrected(clean @ T, [{"source": 0, "target": 1, "anchor_rate": 0.2}])
    assert np.allclose(back, clean, atol=1e-9)
    # A rate the matrix cannot be inverted stably for leaves the evidence alone.
    assert backward_corrected(clean, [{"source": 0, "target": 1, "anchor_rate": 0.6}]) is clean


def _overlapping_table():
    from sklearn.datasets import make_classification

    return make_classification(n_samples=2000, n_features=20, n_informative=4, class_sep=0.4, flip_y=0,
                               random_state=4)


def test_a_targeted_attack_is_named_and_its_victims_are_not_flagged():
    """30 % of class 0 moved to 1 on a table whose classes overlap: the poisoned model leans
    toward 1, so the uncertain band fills with *clean* rows of 0 that it now calls 1, and the
    band test rejects.  Flagging them would suggest relabelling clean rows as the attacker's
    target.  The anchors of class 0 lean toward 1 and not back: the audit names a 0 -> 1
    attack, flags no row labelled 0 outside the FDR-controlled set, and finds the flips far
    better than confident learning on the same probabilities, which flags those victims."""
    from cleanlab.filter import find_label_issues

    X, y = _overlapping_table()
    flipper = make_flipper("targeted", rate=0.3, source=0, target=1, random_state=0)
    _, y_bad = flipper.fit_resample(X, y)
    mask = flipper.flip_mask_
    auditor = LabelAuditor(random_state=0).fit(X, y_bad, embed=False)
    audit = auditor.audit_
    v = audit.verdict
    assert v["status"] == "poisoned" and "boundary_band" in v["rejected_by"]
    attacks = v["boundary"]["targeted"]["attacks"]
    assert [(a["source"], a["target"]) for a in attacks] == [(0, 1)]
    assert attacks[0]["anchor_rate"] >= 3 * attacks[0]["reverse_rate"]
    assert v["boundary"]["targeted"]["band_rows_not_flagged"] > 0
    assert "footprint of a targeted attack" in v["reason"]
    assert any("targeted 0 -> 1 attack" in w for w in audit.warnings)
    assert not (audit.flags & (y_bad == 0) & ~audit.likely).any()
    ours = detection_report(mask, audit.scores, audit.flags)
    theirs = detection_report(mask, audit.scores, find_label_issues(y_bad, auditor.pred_probs_))
    assert ours["precision"] >= theirs["precision"] + 0.2 and ours["f1"] >= theirs["f1"] + 0.1


def test_symmetric_boundary_flips_are_not_read_as_a_targeted_attack():
    """Boundary flips in both directions leave the anchors alone: the band's rows stay flagged."""
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=2000, n_features=20, n_informative=5, n_clusters_per_class=1,
                               flip_y=0, random_state=1)
    flipper = make_flipper("boundary", rate=0.15, random_state=0)
    _, y_bad = flipper.fit_resample(X, y)
    audit = LabelAuditor(random_state=0).fit(X, y_bad, embed=False).audit_
    assert "boundary_band" in audit.verdict["rejected_by"]
    assert "targeted" not in audit.verdict["boundary"]
    assert not any("targeted" in w for w in audit.warnings)


def test_cli_names_a_targeted_attack_with_the_users_labels(cli, tmp_path):
    X, y = _overlapping_table()
    names = np.where(y == 0, "fraud", "legit")
    _, y_bad = make_flipper("targeted", rate=0.3, source="fraud", target="legit",
                            random_state=0).fit_resample(X, names)
    path = _csv(tmp_path, pa.table({**{f"f{i}": X[:, i] for i in range(X.shape[1])},
                                    "label": np.asarray(y_bad).tolist()}))
    res = cli("audit", path, "--label", "label", "--format", "json")
    assert res.exit_code == 0, res.stderr
    d = json.loads(res.stdout)
    attack = d["verdict"]["boundary"]["targeted"]["attacks"][0]
    assert (attack["source"], attack["target"]) == ("fraud", "legit")
    assert any("targeted fraud -> legit attack" in w for w in d["warnings"])
    table = cli("audit", path, "--label", "label")
    assert "targeted fraud -> legit attack" in table.stdout + table.stderr


# -- the band's excess must be there in a single model ----------------------------------

def test_band_replication_asks_each_single_model_with_its_own_temperature():
    """Labels drawn from a calibrated model: no single model sees an excess in its band.
    Labels of the band moved across the boundary: every model that reads them does."""
    from flipguard.detection._verdict import band_replication

    probs, y, _ = _calibrated(3000, 21)
    rng = np.random.RandomState(3)
    noisy = np.clip(probs + rng.normal(0, 0.03, probs.shape), 1e-3, None)
    noisy /= noisy.sum(axis=1, keepdims=True)
    models = (np.arange(len(y)), {"exact": probs, "noisy": noisy})
    clean = band_replication(y, models)
    assert clean["replicated"] is False and min(clean["p_values"].values()) > 0.025
    margin = np.abs(probs[:, 1] - 0.5)
    band = margin < np.quantile(margin, 0.1)
    moved = np.where(band, (probs[:, 1] < 0.5).astype(np.int64), y)
    assert band_replication(moved, models)["replicated"]
    # Rows: a subsample's models are read against the subsample's labels.
    sub = np.arange(0, len(y), 2)
    assert band_replication(moved, (sub, {"exact": probs[sub]}))["replicated"]
    assert band_replication(y, None) is None


def test_a_clean_table_whose_pooled_evidence_is_miscalibrated_is_not_called_poisoned():
    """A clean 5-class table (2 clusters per class, classes overlapping): the default stack's
    uncertain rows disagree with it more than its calibration allows (the band test alone
    rejects), but no single candidate model's own probabilities do.  Before the replication
    check this clean table was called poisoned with 38 % of its rows flagged."""
    from cleanlab.filter import find_label_issues
    from sklearn.datasets import make_classification

    X, y = make_classification(3000, 30, n_informative=10, n_classes=5, n_clusters_per_class=2,
                               class_sep=0.8, random_state=7)
    auditor = LabelAuditor(random_state=1).fit(X, y, embed=False)
    v = auditor.audit_.verdict
    assert v["status"] != "poisoned"
    assert v["boundary"]["p_value"] <= 0.025 and v["boundary"]["replication"]["replicated"] is False
    assert "no single model's own" in v["reason"]
    cleanlab = find_label_issues(y, auditor.pred_probs_).mean()
    assert auditor.audit_.flags.mean() <= cleanlab + 0.01


def test_misfit_replication_outvotes_a_model_that_is_confidently_wrong_in_a_region():
    """Clean labels drawn from known posteriors, read by a model that is confidently wrong in
    one region: its likelihood ratio rejects; a stack with a model that fits better does not,
    so the model's excess is not replicated.  Real flips are seen through both."""
    from flipguard.detection._verdict import misfit_replication

    probs, y, rng = _calibrated(3000, 5)
    region = (probs[:, 1] > 0.9) & (np.arange(len(y)) % 3 == 0)  # a third of the sure positives
    wrong = probs.copy()
    wrong[region] = wrong[region][:, ::-1]  # confidently the other class there
    assert fit_noise_model(y, wrong, n_bootstrap=39, rng=np.random.RandomState(0)).p_value <= 0.025
    rows = np.arange(len(y))
    clean = misfit_replication(y, wrong, (rows, {"exact": probs}), rng=np.random.RandomState(1))
    assert clean["outfitted"] and clean["log_loss_gain"] > 2.33 * clean["standard_error"]
    assert clean["replicated"] is False and clean["band_replicated"] is False
    assert clean["weights"]["exact"] > clean["weights"]["model"]
    # 10 % random flips: the better stack sees them too.
    flipped = y.copy()
    hit = rng.random_sample(len(y)) < 0.10
    flipped[hit] = 1 - flipped[hit]
    attacked = misfit_replication(flipped, wrong, (rows, {"exact": probs}), rng=np.random.RandomState(1))
    assert attacked["outfitted"] and attacked["replicated"] is True
    # A model the alternatives do not beat stands as it is: no second test.
    same = misfit_replication(y, probs, (rows, {"wrong": wrong}), rng=np.random.RandomState(1))
    assert same["outfitted"] is False and same["replicated"] and "p_value" not in same
    assert misfit_replication(y, probs, None) is None


def test_a_named_model_too_simple_for_clean_labels_is_not_called_poisoned():
    """Gaussian quantiles (3 classes in nested shells): a linear model is confidently wrong in
    whole shells and its likelihood ratio rejected the clean labels at the smallest p-value the
    bootstrap reaches (5 of 17 clean tables with --model logreg before this check); the stack
    of the other candidates fits better and sees nothing."""
    from sklearn.datasets import make_gaussian_quantiles

    X, y = make_gaussian_quantiles(n_samples=1000, n_features=4, n_classes=3, random_state=0)
    audit = LabelAuditor(model="logreg", random_state=0).fit(X, y, embed=False).audit_
    v = audit.verdict
    assert v["p_value"] <= 0.025  # the linear model's own test still rejects ...
    assert v["status"] == "inconclusive" and v["rejected_by"] == []  # ... but is not the verdict
    misfit = v["model_misfit"]
    assert misfit["outfitted"] and misfit["dropped"] == ["likelihood_ratio"]
    assert misfit["weights"]["model"] < 0.5 and misfit["p_value"] > 0.025
    assert "fits this data worse than the stack" in v["reason"]
    # Its flip posteriors are not trusted either: no row is "likely flipped" on their word;
    # the flags are confident learning's on the model's probabilities, all ambiguous.
    assert audit.n_likely == 0 and audit.flags.any()
    assert not (audit.reason_codes & (1 << audit.reason_names.index("noise_model"))).any()
    # model="auto" reads the stack itself: no second check, no field.
    assert "model_misfit" not in LabelAuditor(random_state=0).fit(X, y, embed=False).audit_.verdict


def test_a_named_model_that_fits_keeps_its_poisoned_verdict(breast):
    X, y = breast
    flipper = make_flipper("random", rate=0.1, random_state=0)
    _, y_bad = flipper.fit_resample(X, y)
    v = LabelAuditor(model="logreg", random_state=0).fit(X, y_bad, embed=False).audit_.verdict
    assert v["status"] == "poisoned" and "likelihood_ratio" in v["rejected_by"]
    assert v["model_misfit"]["dropped"] == []


def test_a_named_model_with_no_alternative_to_ask_keeps_its_verdict(breast):
    """When no other candidate could be fitted (time budget, input), there is nothing to compare
    with: the verdict is the named model's own, with no misfit record."""
    from flipguard.detection import AutoDetector

    X, y = breast
    _, y_bad = make_flipper("random", rate=0.1, random_state=0).fit_resample(X, y)
    probs = LabelAuditor(model="logreg", random_state=0).fit(X, y_bad, embed=False).pred_probs_
    det = AutoDetector(random_state=0)
    plain = det.audit(y_bad, probs, X=X)
    empty = det.audit(y_bad, probs, X=X, alternatives=lambda: (np.arange(len(y_bad)), {}))
    assert empty.verdict["status"] == plain.verdict["status"] == "poisoned"
    assert "model_misfit" not in empty.verdict
    assert np.array_equal(empty.flags, plain.flags)


# -- power against a targeted attack on a rare class ------------------------------------
def _rare(n: int, share: float, seed: int, spread: float = 1.0):
    """Calibrated binary probabilities whose positive class holds about ``share`` of the rows."""
    rng = np.random.RandomState(seed)
    logit = rng.normal(0.0, spread, n) + np.log(share / (1 - share))
    p1 = 1.0 / (1.0 + np.exp(-logit))
    y = (rng.random_sample(n) < p1).astype(np.int64)
    return np.column_stack([1 - p1, p1]), y, rng


def test_power_is_measured_against_moving_a_rare_class_too():
    """Power against 10 % random flips (400 rows) says little about 30 % of a 2 % class moved
    to the majority (about 20 uncertain rows): the second figure is measured, and lower."""
    probs, y, rng = _rare(4000, 0.01, 0)
    fit = fit_noise_model(y, probs, rng=rng)
    assert fit.extra["targeted"]["source"] == 1 and fit.extra["targeted"]["target"] == 0
    assert abs(fit.extra["targeted"]["rows"] - 0.3 * np.count_nonzero(y == 1)) <= 2
    assert fit.extra["power"] >= 0.8
    assert fit.extra["power_targeted"] < 0.5
    probs, y, rng = _rare(4000, 0.4, 1, spread=1.5)  # 30 % of the smaller class: hundreds of rows
    assert fit_noise_model(y, probs, rng=rng).extra["power_targeted"] >= 0.8


def test_a_rare_class_nobody_could_check_is_not_called_clean():
    """1 % positives, classes overlapping, clean labels: the test could not see 30 % of the
    positives relabelled negative, so the verdict is 'inconclusive' and says why, never
    'consistent with clean labels'."""
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=6000, n_features=10, n_informative=6, weights=[0.99],
                               flip_y=0, class_sep=0.7, random_state=0)
    verdict = LabelAuditor(random_state=0).fit(X, y, embed=False).audit_.verdict
    assert verdict["status"] == "inconclusive"
    assert verdict["power_at_10pct_random_flips"] >= 0.8
    assert verdict["power_at_targeted_flips"] < 0.8
    assert "smallest class" in verdict["reason"]


def test_a_targeted_move_the_models_learn_is_never_called_clean():
    """Iris with 15 setosa rows relabelled versicolor: the models learn the move as a mixture
    inside the setosa cluster, so the test cannot see it (p = 0.7), while the simulation that
    holds the model fixed says it would (100 %).  The rehearsal retrains on such a move, misses
    it, and the verdict is 'inconclusive' (it was 'consistent with clean labels')."""
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    flipper = make_flipper("targeted", rate=0.3, random_state=np.random.RandomState(2))  # the draw this test was written for (a RandomState is used as given; an int seed is salted)
    _, y_bad = flipper.fit_resample(X, y)
    verdict = LabelAuditor(random_state=2).fit(X, y_bad, embed=False).audit_.verdict
    assert verdict["power_at_targeted_flips"] >= 0.8 and verdict["p_value"] > 0.5
    assert verdict["status"] == "inconclusive"
    r = verdict["rehearsal"]
    assert not r["seen"] and min(r["p_value"], r["band_p_value"]) > verdict["alpha"] / 2
    counts = np.bincount(y_bad)
    assert (r["source"], r["target"]) == (int(np.argmin(counts)), int(np.argmax(counts)))
    assert r["rows"] == round(0.3 * counts.min())
    assert 0 <= r["moved_flagged"] <= r["rows"] and f"of its {r['rows']} rows were flagged" in verdict["reason"]
    assert "rehearsal" in verdict["reason"] and "--trusted" in verdict["reason"]


def test_one_stray_row_does_not_switch_the_rehearsal_off():
    """Iris with one row relabelled 'unicorn' (a class of one row, set aside): the other rows
    still get the rehearsal.  It read 'consistent with clean labels' with no rehearsal when the
    set-aside path skipped it (and ``--fail-on inconclusive`` passed); the clean iris reads
    'inconclusive' because the rehearsed move goes unseen, and so must the one with a stray."""
    from sklearn.datasets import load_iris

    data = load_iris()
    X, names = data.data, data.target_names[data.target].astype(object)
    names[7] = "unicorn"
    audit = LabelAuditor(random_state=0).fit(X, names, embed=False).audit_
    verdict = audit.verdict
    assert audit.details["rare_classes"] == {"unicorn": 1} and audit.flags[7]
    r = verdict["rehearsal"]
    assert verdict["status"] == "inconclusive" and not r["seen"] and "rehearsal" in verdict["reason"]
    assert r["source"] in data.target_names and r["target"] in data.target_names  # named as labelled
    assert r["source"] != r["target"] and r["rows"] == 15


def test_a_clean_verdict_rests_on_rehearsals_it_saw():
    """'consistent with clean labels' only after both rehearsed attacks were seen: 30 % of the
    smallest class moved to the largest, and 10 % of the rows a linear model is least sure about
    moved to its runner-up class, the models retrained each time.  The rehearsals move no other
    figure (their generators are their own), and without a model to refit there are none."""
    from sklearn.datasets import make_blobs

    X, y = make_blobs(600, n_features=5, centers=3, cluster_std=1.0, random_state=0)
    auditor = LabelAuditor(random_state=1).fit(X, y, embed=False)
    verdict = auditor.audit_.verdict
    assert verdict["status"] == "consistent with clean labels"
    for r in (verdict["rehearsal"], verdict["boundary_rehearsal"]):
        assert r["seen"] and (r["status"] == "poisoned" or min(r["p_value"], r["band_p_value"]) <= 0.025)
    assert verdict["boundary_rehearsal"]["rows"] == 60
    assert "rehearsal of that attack" in verdict["reason"] and "rehearsed boundary attack" in verdict["reason"]
    # The same out-of-fold probabilities given from outside: no refit, no rehearsal, and the
    # dataset test's own figures are unchanged by it.
    given = LabelAuditor(random_state=1).fit(X, y, pred_probs=auditor.pred_probs_, embed=False).audit_
    assert "rehearsal" not in given.verdict and "boundary_rehearsal" not in given.verdict
    assert given.verdict["p_value"] == verdict["p_value"]
    assert given.verdict["power_at_targeted_flips"] == verdict["power_at_targeted_flips"]
    np.testing.assert_array_equal(given.flags, auditor.audit_.flags)
    np.testing.assert_array_equal(given.scores, auditor.audit_.scores)


def test_boundary_flips_the_models_learn_are_never_called_clean():
    """15 % boundary flips on a 10-class table were 'consistent with clean labels' in 3 of 3 seeds
    (the flips make the labels agree with a linear model; the power simulations hold the model
    fixed), while the same table's clean labels read inconclusive.  The rehearsed boundary attack
    goes unseen there, so the verdict is inconclusive and says why."""
    from sklearn.datasets import make_classification

    from flipguard.attacks import BoundaryFlip

    X, y = make_classification(1500, 15, n_informative=8, n_classes=10, class_sep=1.5, n_clusters_per_class=1,
                               flip_y=0, random_state=100)
    _, flipped = BoundaryFlip(rate=0.15, random_state=0).fit_resample(X, y)
    verdict = LabelAuditor(random_state=0).fit(X, flipped, embed=False).audit_.verdict
    assert verdict["status"] == "inconclusive"
    assert not verdict["boundary_rehearsal"]["seen"] and verdict["rehearsal"]["seen"]
    assert "a rehearsal of a boundary attack went unseen: 150 rows (10%)" in verdict["reason"]


def test_a_band_rejection_no_single_model_repeats_is_not_clean():
    """The band test rejected on the pooled evidence (p = 0.003) against 150 boundary flips; no
    single model repeated it, the rejection was dropped, and the verdict fell through to 'consistent
    with clean labels' with an estimate of 0.  It is now neither a finding nor an all-clear."""
    from sklearn.datasets import make_classification

    from flipguard.attacks import BoundaryFlip

    X, y = make_classification(1000, 8, n_informative=3, n_redundant=1, class_sep=0.6, n_clusters_per_class=2,
                               flip_y=0, random_state=100)
    _, flipped = BoundaryFlip(rate=0.15, random_state=0).fit_resample(X, y)
    verdict = LabelAuditor(random_state=0).fit(X, flipped, embed=False).audit_.verdict
    replication = verdict["boundary"]["replication"]
    assert verdict["boundary"]["p_value"] <= 0.025 and not replication["replicated"]
    assert verdict["status"] == "inconclusive"
    assert verdict["reason"].startswith("no verdict either way: the boundary test rejects on the combined evidence "
                                        "but no single model repeats it")


def test_arrays_get_the_loaders_rule_a_column_that_determines_the_label_is_never_clean():
    """The CLI never called labels clean that one column determines (a copy of the label, a row
    number of a label-sorted table); LabelAuditor on arrays did: the model reads the labels, flips
    included, off that column."""
    from sklearn.datasets import make_blobs

    X, y = make_blobs(600, n_features=5, centers=3, cluster_std=1.0, random_state=0)
    with_copy = np.column_stack([X, y * 1.0])
    verdict = LabelAuditor(random_state=1).fit(with_copy, y, embed=False).audit_.verdict
    assert verdict["status"] == "inconclusive" and verdict["label_columns"] == [5]
    assert verdict["reason"].startswith("feature column(s) 5 (0-based) determine the observed label on their own")
    assert LabelAuditor(random_state=1).fit(X, y, embed=False).audit_.verdict["status"] == \
        "consistent with clean labels"  # the same table without the copy
