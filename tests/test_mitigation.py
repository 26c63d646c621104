"""Mitigation: forward loss correction, RobustClassifier and its no-harm guard, clean_dataset."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from sklearn.datasets import make_classification
from sklearn.metrics import log_loss

from flipguard.attacks import RandomFlip, TargetedFlip
from flipguard.data import make_sentiment_reviews
from flipguard.detection import LabelAudit
from flipguard.exceptions import DataError, InvalidParameterError
from flipguard.mitigation import (
    ForwardCorrectedLogisticRegression,
    RobustClassifier,
    clean_dataset,
    cleaned_table,
    evaluate_mitigation,
)
from flipguard.models import make_model


def test_public_api_is_alphabetised_and_importable():
    import flipguard.mitigation as m

    assert m.__all__ == sorted(m.__all__)
    ns: dict = {}
    exec("from flipguard.mitigation import *", ns)  # noqa: S102 - the star import is what is tested
    assert all(name in ns for name in m.__all__)


# -- forward loss correction (Patrini et al., CVPR 2017) -------------------------------
def _symmetric(K, rho):
    T = np.full((K, K), rho / (K - 1))
    np.fill_diagonal(T, 1 - rho)
    return T


def _noisy(y, T, rng):
    """Draw an observed label for each true label from row T[y]."""
    u = rng.rand(len(y))
    return (u[:, None] > np.cumsum(T[y], axis=1)).sum(axis=1)


def test_forward_correction_with_identity_is_logistic_regression():
    X, y = make_classification(300, n_features=5, n_classes=3, n_informative=3, random_state=0)
    ours = ForwardCorrectedLogisticRegression().fit(X, y)
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    ref = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, tol=1e-10)).fit(X, y)
    assert np.abs(ours.predict_proba(X) - ref.predict_proba(X)).max() < 1e-4
    assert np.allclose(ours.predict_noisy_proba(X), ours.predict_proba(X))


@pytest.mark.parametrize("seed", [0, 1])
def test_forward_correction_recovers_clean_accuracy_under_known_symmetric_noise(seed):
    """Patrini et al., Thm 2: the corrected loss on noisy labels is minimised by the clean posterior.

    Four classes, half of the labels moved uniformly to another class.
    """
    K, n = 4, 2000
    X, y = make_classification(n + 4000, n_features=10, n_informative=6, n_classes=K,
                               n_clusters_per_class=1, class_sep=1.5, random_state=seed)
    T = _symmetric(K, 0.5)
    noisy = _noisy(y[:n], T, np.random.RandomState(seed))
    assert 0.45 < np.mean(noisy != y[:n]) < 0.55
    plain = make_model("logreg").fit(X[:n], noisy)
    fixed = ForwardCorrectedLogisticRegression(T).fit(X[:n], noisy)
    Xh, yh = X[n:], y[n:]
    acc_plain = np.mean(plain.predict(Xh) == yh)
    acc_fixed = np.mean(fixed.predict(Xh) == yh)
    assert acc_fixed > acc_plain + 0.01
    # Its probabilities estimate the clean posterior, the plain model's the noisy one.
    assert log_loss(yh, fixed.predict_proba(Xh)) < 0.6 * log_loss(yh, plain.predict_proba(Xh))


def test_forward_correction_undoes_one_sided_flips():
    X, y = make_classification(4400, n_features=10, n_informative=5, random_state=3)
    T = np.array([[1.0, 0.0], [0.4, 0.6]])  # 40% of class 1 observed as 0
    noisy = _noisy(y, T, np.random.RandomState(3))
    n = 400
    plain = make_model("logreg").fit(X[:n], noisy[:n])
    fixed = ForwardCorrectedLogisticRegression(T).fit(X[:n], noisy[:n])
    assert np.mean(fixed.predict(X[n:]) == y[n:]) > np.mean(plain.predict(X[n:]) == y[n:]) + 0.05


def test_forward_correction_rejects_bad_transition():
    X, y = make_classification(50, random_state=0)
    with pytest.raises(InvalidParameterError, match=r"transition must be a \(2, 2\) matrix T\[true, observed\]; "
                                                    r"got shape \(3, 3\)"):
        ForwardCorrectedLogisticRegression(np.eye(3)).fit(X, y)
    with pytest.raises(InvalidParameterError, match="non-negative finite probabilities"):
        ForwardCorrectedLogisticRegression([[1.2, -0.2], [0, 1]]).fit(X, y)


# -- RobustClassifier ----------------------------------------------------------------------
class _StubDetector:
    """A detector whose flags are given: exercises the caps without depending on a real detector."""

    def __init__(self, flags, suggested, transitions, scores=None):
        self.flags, self.suggested, self.transitions, self.scores = flags, suggested, transitions, scores

    def audit(self, labels, pred_probs=None, **kwargs):
        scores = self.scores if self.scores is not None else self.flags.astype(float)
        return LabelAudit(method="stub", labels=labels, scores=scores, flags=self.flags,
                          suggested_codes=self.suggested, estimated_flips=int(self.transitions.sum()
                                                                        - np.trace(self.transitions)),
                          transitions=self.transitions)


def _imbalanced(seed=0, n=2000):
    X, y = make_classification(2 * n, n_features=6, n_informative=4, n_redundant=0, weights=[0.97, 0.03],
                               class_sep=0.6, flip_y=0.0, random_state=seed)
    return X[:n], y[:n], X[n:], y[n:]


def test_caps_never_touch_more_than_the_estimated_flips_of_a_class_nor_trusted_rows():
    X, y, _, _ = _imbalanced()
    minority = np.flatnonzero(y == 1)
    flags = y == 1  # a detector that blames every minority row
    # ... but estimates only 5 minority rows are really majority ones.
    transitions = np.array([[np.sum(y == 0), 5], [0, np.sum(y == 1) - 5]])
    det = _StubDetector(flags, 1 - y, transitions, scores=np.linspace(0, 1, len(y)))
    trusted = minority[-2:]  # the two most suspicious minority rows are verified
    for strategy in ("drop", "relabel"):
        clf = RobustClassifier(strategy=strategy, detector=det, guard=False, random_state=0)
        clf.fit(X, y, trusted=trusted)
        changed = clf.dropped_ if strategy == "drop" else clf.relabelled_
        assert len(changed) == 5 and set(changed) <= set(minority) and not set(changed) & set(trusted)
        # the most suspicious untrusted ones
        assert sorted(changed) == sorted(minority[-7:-2])
    # An estimate larger than half the class is capped at max_fraction of it.
    big = np.array([[np.sum(y == 0), np.sum(y == 1)], [0, 0]])
    clf = RobustClassifier(strategy="drop", detector=_StubDetector(flags, 1 - y, big), guard=False,
                           max_fraction=0.5, random_state=0).fit(X, y)
    assert clf.n_dropped_ == np.sum(y == 1) // 2
    w = RobustClassifier(strategy="weight", detector=_StubDetector(flags, 1 - y, transitions,
                                                                   scores=np.linspace(0, 1, len(y))),
                         guard=False, random_state=0).fit(X, y)
    assert np.sum(1 - w.sample_weight_[y == 1]) == pytest.approx(5.0)
    assert np.all(w.sample_weight_[y == 0] == 1.0)


def test_imbalanced_minority_blind_cleaning_hurts_and_the_guard_falls_back():
    """3% minority, clean labels, a k-NN model: flags on the minority are unreliable."""
    X, y, Xh, yh = _imbalanced(seed=0)
    res = evaluate_mitigation(X, y, Xh, yh, model="knn", strategies=("none", "blind_drop"), random_state=0)
    assert res["blind_drop"]["n_dropped"] > 0
    assert res["blind_drop"]["balanced_accuracy"] < res["none"]["balanced_accuracy"] - 0.02  # the harm
    plain = make_model("knn").fit(X, y).predict(Xh)
    for strategy in ("drop", "relabel"):
        clf = RobustClassifier("knn", strategy=strategy, random_state=0).fit(X, y)
        assert clf.fallback_ and clf.reason_.startswith(f"fell back to the plain knn: {strategy} did not help")
        assert clf.n_dropped_ == clf.n_relabelled_ == 0 and clf.proposed_
        assert np.array_equal(clf.predict(Xh), plain)
        unguarded = RobustClassifier("knn", strategy=strategy, guard=False, random_state=0).fit(X, y)
        assert not unguarded.fallback_
        assert np.mean(unguarded.predict(Xh) == yh) <= np.mean(plain == yh)


def test_imbalanced_minority_full_of_flips_guard_keeps_what_helps_and_refuses_what_hurts():
    """Random flips swamp a 3% class (389 of its 492 observed rows are flipped majority rows).

    Relabelling the suspects of an eager detector (``self_confidence``: every
    row whose class-adjusted prediction is another class) blindly costs many
    points of holdout accuracy (many majority rows are turned into minority
    ones); the guard sees the significant accuracy drop on held-out folds and
    falls back.  Dropping or down-weighting the default detector's suspects
    helps and is kept.  (The default ``auto`` detector is no longer eager
    enough to cause the relabelling harm.)
    """
    det = "self_confidence"
    X, y = make_classification(6000, n_features=10, n_informative=5, weights=[0.97, 0.03],
                               class_sep=1.5, flip_y=0.0, random_state=1)
    Xtr, ytr, Xh, yh = X[:4000], y[:4000], X[4000:], y[4000:]
    _, yb = RandomFlip(rate=0.1, random_state=0).fit_resample(Xtr, ytr)
    plain_pred = make_model("logreg").fit(Xtr, yb).predict(Xh)
    plain = np.mean(plain_pred == yh)
    blind = RobustClassifier(strategy="relabel", detector=det, guard=False, random_state=0).fit(Xtr, yb)
    assert np.mean(blind.predict(Xh) == yh) < plain - 0.03  # the harm
    guarded = RobustClassifier(strategy="relabel", detector=det, random_state=0).fit(Xtr, yb)
    assert guarded.fallback_ and "relabel did not help" in guarded.reason_
    g = guarded.guard_scores_
    assert g["mitigated"]["accuracy"] < g["plain"]["accuracy"] - g["allowed_drop"]["accuracy"]
    assert np.array_equal(guarded.predict(Xh), plain_pred)
    for strategy in ("drop", "weight"):
        clf = RobustClassifier(strategy=strategy, random_state=0).fit(Xtr, yb)  # the default detector
        assert not clf.fallback_, clf.reason_
        assert np.mean(clf.predict(Xh) == yh) >= plain
    drop = RobustClassifier(strategy="drop", random_state=0).fit(Xtr, yb)
    assert drop.n_dropped_ > 100 and np.mean(yb[drop.dropped_] != ytr[drop.dropped_]) > 0.3


def test_weak_model_cleaning_costs_no_accuracy():
    rng = np.random.RandomState(0)
    X = rng.randn(2000, 8)
    y = (X[:, 0] + 2.5 * rng.randn(2000) > 0).astype(int)  # barely predictable
    Xtr, ytr, Xh, yh = X[:1000], y[:1000], X[1000:], y[1000:]
    _, yb = RandomFlip(rate=0.1, random_state=0).fit_resample(Xtr, ytr)
    plain = np.mean(make_model("logreg").fit(Xtr, yb).predict(Xh) == yh)
    for strategy in ("drop", "relabel", "weight", "loss_correction"):
        clf = RobustClassifier(strategy=strategy, random_state=0).fit(Xtr, yb)
        acc = np.mean(clf.predict(Xh) == yh)
        assert acc >= plain - 0.005, (strategy, clf.reason_)
        assert clf.fallback_ or clf.guard_scores_["mitigated"]["accuracy"] >= clf.guard_scores_["plain"]["accuracy"]


def test_targeted_attack_is_mitigated_by_every_strategy():
    X, y = make_classification(3000, n_features=10, n_informative=5, random_state=0)
    Xtr, ytr, Xh, yh = X[:2000], y[:2000], X[2000:], y[2000:]
    _, yb = TargetedFlip(source=1, target=0, rate=0.4, random_state=0).fit_resample(Xtr, ytr)
    res = evaluate_mitigation(Xtr, yb, Xh, yh, random_state=0)
    assert list(res) == ["none", "drop", "relabel", "weight", "loss_correction"]
    for name in ("drop", "relabel", "weight", "loss_correction"):
        assert not res[name]["fallback"], res[name]["reason"]
        assert res[name]["delta_accuracy"] > 0.03, name
    assert res["loss_correction"]["accuracy"] > 0.8
    assert res["drop"]["n_dropped"] > 200 and res["relabel"]["n_relabelled"] > 200


def test_loss_correction_with_a_known_matrix_matches_the_estimator():
    X, y = make_classification(800, random_state=4)
    T = np.array([[0.8, 0.2], [0.2, 0.8]])
    clf = RobustClassifier(strategy="loss_correction", transition=T, guard=False, random_state=0).fit(X, y)
    assert np.allclose(clf.transition_, T)
    ref = ForwardCorrectedLogisticRegression(T).fit(X, y)
    assert np.allclose(clf.predict_proba(X), ref.predict_proba(X))


def test_trusted_extra_rows_judge_the_guard():
    X, y = make_classification(1600, n_features=10, n_informative=5, random_state=5)
    Xtr, ytr = X[:1000], y[:1000]
    _, yb = TargetedFlip(source=1, target=0, rate=0.4, random_state=0).fit_resample(Xtr, ytr)
    clf = RobustClassifier(strategy="relabel", random_state=0).fit(Xtr, yb, trusted=(X[1000:1100], y[1000:1100]))
    assert clf.guard_scores_["on"] == "trusted" and not clf.fallback_
    assert "the trusted rows" in clf.reason_
    with pytest.raises(DataError, match=r"trusted labels \['7'\] are not classes of y \(0, 1\)"):
        RobustClassifier().fit(Xtr, yb, trusted=(X[:2], np.array([7, 7])))
    with pytest.raises(DataError, match="a trusted mask needs one value per row"):
        RobustClassifier().fit(Xtr, yb, trusted=np.ones(3, dtype=bool))


def test_same_seed_same_model_and_string_labels():
    ds = make_sentiment_reviews(500, separation=2.0, random_state=0)
    _, yb = RandomFlip(rate=0.2, random_state=0).fit_resample(ds.X, ds.labels())
    a = RobustClassifier(strategy="drop", random_state=3).fit(ds.X, yb)
    b = RobustClassifier(strategy="drop", random_state=3).fit(ds.X, yb)
    assert np.array_equal(a.dropped_, b.dropped_) and a.reason_ == b.reason_
    assert set(a.predict(ds.X)) <= {"negative", "positive"}
    assert a.predict_proba(ds.X).shape == (500, 2)


def test_parameter_errors():
    X, y = make_classification(100, random_state=0)
    with pytest.raises(InvalidParameterError, match="strategy='weight' needs an estimator whose fit accepts "
                                                    "sample_weight; knn does not. Use 'drop' or 'relabel'."):
        RobustClassifier("knn", strategy="weight").fit(X, y)
    with pytest.raises(InvalidParameterError, match="The 'strategy' parameter of RobustClassifier must be"):
        RobustClassifier(strategy="burn").fit(X, y)
    with pytest.raises(InvalidParameterError, match="Unknown detection method 'nope'"):
        RobustClassifier(detector="nope").fit(X, y)
    with pytest.raises(InvalidParameterError, match="Unknown mitigation strategy 'burn'"):
        evaluate_mitigation(X, y, X, y, strategies=("burn",))


def test_too_few_rows_fall_back():
    X = np.arange(10, dtype=float)[:, None]
    y = np.array([0] * 8 + [1] * 2)
    clf = RobustClassifier(random_state=0).fit(X, y)
    assert clf.fallback_ and "too few rows to audit (smallest class has 2" in clf.reason_
    assert clf.audit_ is None


def test_evaluate_mitigation_skips_weight_for_models_without_sample_weight():
    X, y = make_classification(400, random_state=0)
    res = evaluate_mitigation(X[:300], y[:300], X[300:], y[300:], model="knn",
                              strategies=("none", "weight"), random_state=0)
    assert res["weight"]["skipped"] and res["weight"]["accuracy"] is None
    assert res["weight"]["reason"] == "knn does not accept sample weights"
    assert res["none"]["delta_accuracy"] == 0.0


@pytest.mark.parametrize("est", [ForwardCorrectedLogisticRegression(),
                                 RobustClassifier(cv=2, guard_cv=2, random_state=0)],
                         ids=["forward", "robust"])
def test_sklearn_estimator_checks(est):
    from sklearn.utils.estimator_checks import check_estimator

    # A weight of 2 is not a repeated row for RobustClassifier: its audit judges rows unweighted, so a
    # copy of a row is evidence twice and a weight-2 row once (the flags, hence the model, differ).
    expected = {"check_sample_weight_equivalence_on_dense_data": "the audit is unweighted"} \
        if isinstance(est, RobustClassifier) else {}
    results = check_estimator(est, on_fail=None, expected_failed_checks=expected)
    failed = [(r["check_name"], str(r["exception"])[:200]) for r in results if r["status"] == "failed"]
    assert failed == []
    if isinstance(est, RobustClassifier):  # fit takes sample_weight, so scikit-learn checks it
        passed = {r["check_name"] for r in results if r["status"] == "passed"}
        assert passed >= {"check_sample_weights_shape", "check_sample_weights_not_an_array",
                          "check_sample_weights_not_overwritten", "check_all_zero_sample_weights_error"}


# -- clean_dataset ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def poisoned_reviews():
    ds = make_sentiment_reviews(600, separation=2.0, random_state=0)
    _, yb = RandomFlip(rate=0.2, random_state=0).fit_resample(ds.X, ds.y)
    return ds, ds.with_labels(yb)


def test_clean_dataset_modes(poisoned_reviews):
    truth, bad = poisoned_reviews
    flipped = bad.y != truth.y
    dropped, log = clean_dataset(bad, mode="drop", random_state=0)
    assert not log.fallback and log.n_dropped > 60
    assert dropped.n_samples == 600 - log.n_dropped
    assert np.mean(flipped[log.rows]) > 0.85
    assert not np.isin(dropped.ids, log.ids).any()
    assert all(v is None for v in log.new_labels)

    relabelled, log = clean_dataset(bad, mode="relabel", random_state=0)
    assert relabelled.n_samples == 600 and log.n_relabelled > 60
    assert np.array_equal(relabelled.labels()[log.rows], log.new_labels.astype(str))
    assert np.mean(relabelled.y == truth.y) > np.mean(bad.y == truth.y) + 0.08

    weighted, log = clean_dataset(bad, mode="weight", random_state=0)
    assert np.array_equal(weighted.y, bad.y) and log.weights.shape == (600,)
    assert log.weights[flipped].mean() < log.weights[~flipped].mean() - 0.3
    tbl = cleaned_table(weighted, log)
    assert tbl.column_names[-1] == "flipguard_weight"
    assert np.allclose(tbl.column("flipguard_weight").to_numpy(), log.weights)
    d = json.loads(log.to_json())
    assert d["n_reweighted"] == log.n_reweighted and len(d["changes"]) == len(log.rows)
    assert set(log.to_table().column_names) == {"row", "id", "old_label", "new_label", "action", "score",
                                                 "weight"}


def test_clean_dataset_trusted_labels_are_corrected_and_protected(poisoned_reviews):
    truth, bad = poisoned_reviews
    wrong = np.flatnonzero(bad.y != truth.y)[:5]
    right = np.flatnonzero(bad.y == truth.y)[:5]
    trusted = {int(bad.ids[i]): truth.labels()[i] for i in np.concatenate([wrong, right])}
    cleaned, log = clean_dataset(bad, mode="drop", trusted=trusted, random_state=0)
    verified = log.rows[log.actions == "verified"]
    assert sorted(verified) == sorted(wrong)
    assert set(np.concatenate([wrong, right])) <= set(cleaned.ids)  # never dropped
    assert np.array_equal(cleaned.labels()[np.searchsorted(cleaned.ids, wrong)], truth.labels()[wrong])
    assert log.warnings == []
    # an id that is not in the data is an error, as in ``audit --trusted``: never dropped silently
    with pytest.raises(DataError, match=r"trusted labels: 1 trusted row\(s\) have ids that are not in "
                                        r"make_sentiment_reviews \(-5\); give only ids of the data"):
        clean_dataset(bad, trusted={**trusted, -5: "positive"})


def test_clean_dataset_errors(poisoned_reviews):
    _, bad = poisoned_reviews
    with pytest.raises(InvalidParameterError, match="mode must be one of drop, relabel, weight; got 'burn'"):
        clean_dataset(bad, mode="burn")
    with pytest.raises(DataError, match="clean_dataset needs a LabeledDataset"):
        clean_dataset(pa.table({"a": [1]}))
    with pytest.raises(DataError, match="trusted labels .* are not values of the label column"):
        clean_dataset(_int_labelled(), trusted={0: "cat"})


def _int_labelled():
    from flipguard.data import load

    X, y = make_classification(60, random_state=0)
    return load((X, y))


def test_sample_weight_reaches_every_model_trained():
    """``fit(X, y, sample_weight=w)`` raised TypeError, so a user's weights could not go through a
    Pipeline or GridSearchCV.  They now reach the guard's models and the final one (times the weight
    strategy's own weights); the audit stays unweighted."""
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.utils.class_weight import compute_sample_weight

    from flipguard.mitigation._strategies import fit_model

    X, y, Xh, yh = _imbalanced(seed=0)
    balanced = compute_sample_weight("balanced", y)
    # a fallback trains the plain model: with the weights, exactly as fit_model does
    few = RobustClassifier("logreg", random_state=0).fit(X[:20], y[:20], sample_weight=balanced[:20])
    assert few.fallback_
    same = fit_model("logreg", X[:20], y[:20], balanced[:20], random_state=None)
    assert np.allclose(few.estimator_.predict_proba(Xh), same.predict_proba(Xh))
    for strategy in ("drop", "relabel", "weight", "loss_correction"):
        plain = RobustClassifier("logreg", strategy=strategy, guard=False, random_state=0).fit(X, y)
        weighted = RobustClassifier("logreg", strategy=strategy, guard=False, random_state=0).fit(
            X, y, sample_weight=balanced)
        # the same audit, so the same plan; the weights move the model toward the 3 % class
        assert np.array_equal(plain.audit_.flags, weighted.audit_.flags), strategy
        assert (np.mean(weighted.predict(Xh)[yh == 1] == 1) > np.mean(plain.predict(Xh)[yh == 1] == 1)), strategy
        if strategy == "weight":  # sample_weight_ is what the mitigation gave, not times the user's weights
            assert np.array_equal(weighted.sample_weight_, plain.sample_weight_)
            assert weighted.sample_weight_.max() <= 1.0 < balanced.max()
    search = GridSearchCV(make_pipeline(StandardScaler(), RobustClassifier("logreg", random_state=0)),
                          {"robustclassifier__strategy": ["drop", "relabel"]}, cv=2)
    search.fit(X, y, robustclassifier__sample_weight=balanced)  # scikit-learn's fit-parameter routing
    assert search.best_params_["robustclassifier__strategy"] in ("drop", "relabel")
    with pytest.raises(InvalidParameterError, match="sample_weight needs an estimator whose fit accepts it; knn"):
        RobustClassifier("knn").fit(X, y, sample_weight=balanced)
    with pytest.raises(ValueError, match="[Nn]egative"):
        RobustClassifier("logreg").fit(X, y, sample_weight=-balanced)
