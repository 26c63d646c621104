"""Detectors: equality with cleanlab, the papers' properties, auto's targets, evidence, API."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer, load_digits, make_classification

from flipguard.attacks import make_flipper
from flipguard.detection import (
    AutoDetector,
    ConfidentLearning,
    KNNConsistency,
    LabelAudit,
    LabelAuditor,
    LabelSource,
    TrustedLabels,
    adjusted_probs,
    confident_joint,
    confident_learning_issues,
    detector_names,
    embed_2d,
    evaluate_detection,
    find_flipped_labels,
    knn_label_probs,
    load_rules,
    make_detector,
    model_quality,
    reference_source,
    roni_test,
    rule_sources,
    stack_weight,
)
from flipguard.exceptions import DataError, InvalidParameterError
from flipguard.metrics import detection_report
from flipguard.models import out_of_fold_proba, single_threaded


def oof(X, y, seed=0, model="logreg"):
    with single_threaded():
        return out_of_fold_proba(model, X, y, random_state=seed)


def flip(name, X, y, seed=0, **params):
    flipper = make_flipper(name, random_state=seed, **params)
    _, y_bad = flipper.fit_resample(X, y)
    return np.asarray(y_bad), flipper.flip_mask_


@pytest.fixture(scope="module")
def breast():
    return load_breast_cancer(return_X_y=True)


# -- package ------------------------------------------------------------------------------
def test_public_names_import_and_are_sorted():
    import flipguard.detection as det

    ns: dict = {}
    exec("from flipguard.detection import *", ns)  # noqa: S102 - the star import itself is tested
    assert set(det.__all__) <= set(ns)
    # The ordering of __all__ is checked for every package in test_public_api.py.
    assert {"auto", "confident_learning", "knn", "margin", "self_confidence", "disagreement",
            "trusted", "rules"} == set(detector_names())


def test_detectors_init_only_store_params_and_clone():
    for name in detector_names():
        det = make_detector(name)
        assert clone(det).get_params() == det.get_params()
    auditor = LabelAuditor(model="rf", method="knn", cv=3, random_state=4)
    assert clone(auditor).get_params() == auditor.get_params()
    assert not hasattr(auditor, "audit_")


# -- confident learning == cleanlab -------------------------------------------------------
def _cleanlab_mask(labels, probs):
    filt = pytest.importorskip("cleanlab.filter")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return filt.find_label_issues(labels, probs, n_jobs=1)


def _cases():
    X, y = load_breast_cancer(return_X_y=True)
    yield "binary balanced", X, flip("random", X, y, seed=1, rate=0.2)[0]
    X, y = make_classification(n_samples=1500, weights=[0.95], flip_y=0, random_state=2)
    yield "binary imbalanced", X, flip("random", X, y, seed=2, rate=0.03)[0]
    X, y = load_digits(return_X_y=True)
    yield "multi-class balanced", X, flip("random", X, y, seed=3, rate=0.15)[0]
    X, y = make_classification(n_samples=1500, n_classes=4, n_informative=6,
                               weights=[0.6, 0.25, 0.1, 0.05], random_state=4)
    yield "multi-class imbalanced", X, flip("targeted", X, y, seed=4, rate=0.3)[0]


@pytest.mark.parametrize("case", list(_cases()), ids=lambda c: c[0])
def test_confident_learning_flags_exactly_what_cleanlab_flags(case):
    _, X, y = case
    probs = oof(X, y)
    ours = confident_learning_issues(y, probs)
    assert ours.any()
    assert np.array_equal(ours, _cleanlab_mask(y, probs))
    assert np.array_equal(ConfidentLearning().audit(y, probs).flags, ours)


def test_confident_learning_matches_cleanlab_on_awkward_probabilities():
    rng = np.random.RandomState(0)
    for trial in range(12):
        K = 2 + trial % 5
        n = 50 + 37 * trial
        p = rng.dirichlet(np.ones(K) * 0.4, size=n)
        if trial % 3 == 0:
            p = np.round(p, 1) + 1e-3  # many ties
            p /= p.sum(axis=1, keepdims=True)
        if trial % 4 == 1:
            p = p.astype(np.float32)
        y = np.where(rng.rand(n) < 0.7, p.argmax(axis=1), rng.randint(0, K, n))
        if trial % 5 == 2:
            y[y == K - 1] = 0  # a class with no rows
        assert np.array_equal(confident_learning_issues(y, p), _cleanlab_mask(y, p)), trial


def test_confident_learning_recovers_errors_exactly_with_ideal_probabilities():
    """Northcutt et al. (2021), Thm. 1: with per-example perfect probabilities the
    confident joint is exact and pruning finds exactly the label errors."""
    rng = np.random.RandomState(0)
    true = rng.randint(0, 3, 900)
    observed = true.copy()
    wrong = rng.rand(900) < 0.15
    observed[wrong] = (true[wrong] + rng.randint(1, 3, wrong.sum())) % 3
    probs = np.full((900, 3), 0.05)
    probs[np.arange(900), true] = 0.9
    audit = ConfidentLearning().audit(observed, probs)
    assert np.array_equal(audit.flags, wrong)
    assert audit.estimated_flips == wrong.sum()
    assert np.array_equal(audit.suggested[wrong], true[wrong])
    # transitions: rows true class, columns observed label
    expected = np.zeros((3, 3), dtype=int)
    np.add.at(expected, (true, observed), 1)
    assert np.array_equal(audit.transitions, expected)


def test_confident_joint_is_calibrated_to_observed_counts(breast):
    X, y = breast
    y_bad, _ = flip("random", X, y, rate=0.2)
    joint, _ = confident_joint(y_bad, oof(X, y_bad))
    assert np.array_equal(joint.sum(axis=1), np.bincount(y_bad))


@pytest.mark.parametrize("name", ["auto", "confident_learning", "disagreement", "knn", "margin",
                                  "self_confidence", "trusted"])
def test_an_unflagged_row_is_suggested_its_own_label(breast, name):
    """``suggested`` names another class for flagged rows only (confident learning, kNN and the
    trusted model suggested their argmax for unflagged rows too: 17 unflagged rows of a table
    with 'suggested_label' unlike their label)."""
    X, y = breast
    y_bad, _ = flip("random", X, y, rate=0.15)
    probs = oof(X, y_bad)
    rows = np.random.RandomState(0).choice(len(y), 30, replace=False)
    trusted = TrustedLabels(X=X[rows], y=y[rows], rows=rows) if name == "trusted" else None
    audit = make_detector(name).audit(y_bad, probs, X=X, trusted=trusted, random_state=0)
    assert audit.flags.any() and not audit.flags.all()
    np.testing.assert_array_equal(audit.suggested_codes[~audit.flags], y_bad[~audit.flags])
    assert (audit.suggested_codes[audit.flags] != y_bad[audit.flags]).all()


# -- kNN (Paudice et al. 2018) ------------------------------------------------------------
def test_knn_flags_an_isolated_flip_and_suggests_the_neighbour_majority():
    rng = np.random.RandomState(0)
    X = np.vstack([rng.normal(0, 0.3, (40, 2)), rng.normal(5, 0.3, (40, 2))])
    y = np.repeat([0, 1], 40)
    y[[3, 50]] = [1, 0]
    audit = KNNConsistency(n_neighbors=5).audit(y, X=X)
    assert np.flatnonzero(audit.flags).tolist() == [3, 50]
    assert audit.suggested[[3, 50]].tolist() == [0, 1]
    assert audit.scores[3] == 1.0  # all five neighbours disagree
    assert set(np.round(audit.scores * 5, 9)) <= {0.0, 1.0, 2.0, 3.0, 4.0, 5.0}  # shares of k


def test_knn_probabilities_exclude_the_row_itself():
    X = np.array([[0.0], [0.1], [0.2], [10.0]])
    y = np.array([0, 0, 1, 1])
    p = knn_label_probs(X, y, 2, n_neighbors=2, prior=0.0, scale=False)
    # row 2 (label 1) sees only rows 0 and 1 (label 0), never itself
    assert p[2].tolist() == [1.0, 0.0]
    # nor its exact copies (tests/test_duplicates.py): rows 0-2 are one point, row 3 the other
    same = knn_label_probs(np.array([[0.0], [0.0], [0.0], [10.0]]), y, 2, n_neighbors=2, prior=0.0, scale=False)
    assert same[2].tolist() == [0.0, 1.0]


# -- auto -----------------------------------------------------------------------------------
def test_auto_never_flags_less_well_than_confident_learning_on_boundary_flips(breast):
    """Boundary flips look like genuine ambiguity; where the dataset test cannot
    establish an attack, auto falls back to confident learning's flags (Northcutt
    et al. 2021) on the same probabilities, so it does no worse than cleanlab."""
    X, y = breast
    y_bad, mask = flip("boundary", X, y, rate=0.1)
    probs = oof(X, y_bad)
    auto = find_flipped_labels(y_bad, probs, X=X, random_state=0)
    cl = find_flipped_labels(y_bad, probs, method="confident_learning")
    f_auto = detection_report(mask, auto.scores, auto.flags)
    f_cl = detection_report(mask, cl.scores, cl.flags)
    assert f_auto["f1"] >= f_cl["f1"] - 0.02
    assert f_auto["auroc"] > 0.8


def test_auto_estimate_is_close_on_random_flips(breast):
    X, y = breast
    y_bad, mask = flip("random", X, y, rate=0.2)
    audit = LabelAuditor(random_state=0).fit(X, y_bad).audit_
    assert audit.verdict["status"] == "poisoned"
    assert abs(audit.estimated_flips - mask.sum()) <= 0.25 * mask.sum()
    assert audit.verdict["clean_estimate_upper"] < 0.5 * mask.sum()
    assert audit.details["confident_estimate"] > 0
    assert audit.n_likely + audit.n_ambiguous == audit.n_flagged


def test_auto_does_not_flag_a_clean_minority_class_wholesale():
    X, y = make_classification(n_samples=3000, weights=[0.97], flip_y=0, class_sep=1.0, random_state=0)
    probs = oof(X, y)
    minority = y == 1
    assert minority.mean() < 0.04
    auto = find_flipped_labels(y, probs, X=X, random_state=0)
    raw = find_flipped_labels(y, probs, method="self_confidence", adjust=False)
    assert auto.flags[minority].mean() < 0.5
    assert auto.estimated_flip_rate < 0.03
    assert raw.flags[minority].mean() > auto.flags[minority].mean()  # what the adjustment prevents


def test_auto_is_not_silent_when_labels_are_inconsistent_with_the_features():
    """Labels unrelated to the features (what 50% random flips produce) are a
    finding: the verdict says so, and rows are still flagged and ranked."""
    rng = np.random.RandomState(0)
    X = rng.randn(800, 5)
    y = rng.randint(0, 2, 800)
    audit = LabelAuditor(model="logreg", random_state=0).fit(X, y).audit_
    assert audit.model_quality["usable"] is False
    assert audit.verdict["status"].startswith("labels inconsistent with features")
    assert audit.n_flagged > 0
    assert any("inconsistent" in w for w in audit.warnings)
    # the explicit methods still answer, with the chance warning attached
    cl = LabelAuditor(method="confident_learning", model="logreg", random_state=0).fit(X, y).audit_
    assert any("chance" in w for w in cl.warnings)


def test_model_quality_separates_chance_from_skill(breast):
    X, y = breast
    good = model_quality(y, oof(X, y))
    assert good["usable"] and good["auroc"] > 0.95 and good["balanced_accuracy"] > 0.9
    rng = np.random.RandomState(1)
    chance = model_quality(y, rng.dirichlet([1, 1], size=len(y)))
    assert not chance["usable"] and abs(chance["auroc"] - 0.5) < 0.1


def test_same_seed_same_audit(breast):
    X, y = breast
    y_bad, _ = flip("random", X, y, rate=0.1)
    a = LabelAuditor(random_state=3).fit(X, y_bad).audit_
    b = LabelAuditor(random_state=3).fit(X, y_bad).audit_
    assert np.array_equal(a.scores, b.scores) and np.array_equal(a.flags, b.flags)


def test_stack_weight_prefers_the_better_predictor():
    rng = np.random.RandomState(0)
    y = rng.randint(0, 2, 500)
    perfect = np.eye(2)[y] * 0.98 + 0.01
    noise = rng.dirichlet([1, 1], size=500)
    assert stack_weight(noise, perfect, y) == 1.0
    assert stack_weight(perfect, noise, y) == 0.0


def test_adjusted_probs_divide_by_class_thresholds():
    y = np.array([0, 0, 1, 1])
    p = np.array([[0.9, 0.1], [0.7, 0.3], [0.6, 0.4], [0.8, 0.2]])
    q = adjusted_probs(y, p)
    t = np.array([0.8, 0.3])
    expected = (p / t) / (p / t).sum(axis=1, keepdims=True)
    assert np.allclose(q, expected)


def test_robust_thresholds_come_from_the_undisputed_rows_of_each_class():
    y = np.array([0, 0, 1, 1, 1])
    p = np.array([[0.9, 0.1], [0.7, 0.3], [0.6, 0.4], [0.2, 0.8], [0.4, 0.6]])
    t = np.array([0.8, 0.7])  # class 1: rows 3, 4 agree (0.8, 0.6); row 2 (0.4) is disputed
    expected = (p / t) / (p / t).sum(axis=1, keepdims=True)
    assert np.allclose(adjusted_probs(y, p, robust=True), expected)
    # A class with no undisputed row, and an absent class, keep their probabilities.
    y2, p3 = np.array([0, 0, 1]), np.array([[0.9, 0.05, 0.05], [0.8, 0.1, 0.1], [0.7, 0.2, 0.1]])
    t2 = np.array([0.85, 1.0, 1.0])
    assert np.allclose(adjusted_probs(y2, p3, robust=True), (p3 / t2) / (p3 / t2).sum(axis=1, keepdims=True))


def test_robust_adjustment_keeps_the_ranking_when_flips_dominate_a_class():
    """20% random flips of a 95/5 table: most rows labelled with the rare class are flips.
    Their low confidence drags the plain threshold down and the adjustment hides them; judged
    against the class's undisputed rows they rank as well as the raw probabilities do."""
    from sklearn.datasets import make_classification
    from sklearn.metrics import roc_auc_score

    from flipguard.models import out_of_fold_proba

    X, y = make_classification(n_samples=2000, n_features=20, weights=[0.95], random_state=3)
    y_bad, mask = flip("random", X, y, rate=0.2)
    p = out_of_fold_proba("logreg", X, y_bad, random_state=0)
    rows = np.arange(len(y))
    auc = {name: roc_auc_score(mask, 1 - q[rows, y_bad]) for name, q in
           (("raw", p), ("plain", adjusted_probs(y_bad, p)), ("robust", adjusted_probs(y_bad, p, robust=True)))}
    assert auc["plain"] < auc["raw"] - 0.1
    assert auc["robust"] >= auc["raw"] - 0.02
    audit = AutoDetector(random_state=0).audit(y_bad, p)
    assert roc_auc_score(mask, audit.scores) >= auc["raw"] - 0.02


# -- trusted rows and RONI ----------------------------------------------------------------------
def test_trusted_rows_catch_the_cluster_attack(breast):
    X, y = breast
    # the draw this test was written for: 57 rows (0.1 of 569, then rounded to nearest), the unsalted stream
    y_bad, mask = flip("cluster", X, y, n_flips=57, seed=np.random.RandomState(0))
    rng = np.random.RandomState(100)
    rows = np.sort(rng.choice(len(y), size=int(0.05 * len(y)), replace=False))
    trusted = TrustedLabels(X=X[rows], y=y[rows], rows=rows)
    blind = evaluate_detection((X, y_bad), mask, random_state=0)
    helped = evaluate_detection((X, y_bad), mask, trusted=trusted, random_state=0)
    assert helped["recall"] >= 0.8
    assert helped["recall"] > blind["recall"] + 0.2


def test_trusted_rows_in_the_data_are_direct_evidence(breast):
    X, y = breast
    y_bad = y.copy()
    y_bad[[0, 1]] = 1 - y_bad[[0, 1]]
    rows = np.array([0, 1, 2, 3])
    trusted = TrustedLabels(X=X[rows], y=y[rows], rows=rows)
    probs = oof(X, y_bad)
    for method in ("auto", "trusted"):
        audit = find_flipped_labels(y_bad, probs, method=method, X=X, trusted=trusted, random_state=0)
        assert audit.flags[[0, 1]].all() and not audit.flags[[2, 3]].any()
        assert audit.suggested[[0, 1]].tolist() == y[[0, 1]].tolist()


def test_roni_rejects_the_flipped_region_and_accepts_clean_rows():
    """Nelson et al. (2008): a training group with negative impact on held-out
    verified data is rejected; harmless data is not."""
    rng = np.random.RandomState(0)
    X = np.vstack([rng.normal(-2, 1, (300, 2)), rng.normal(2, 1, (300, 2))])
    y = np.repeat([0, 1], 300)
    region = np.flatnonzero((y == 1) & (X[:, 0] > 3))  # the far side of class 1, relabelled 0
    y_bad = y.copy()
    y_bad[region] = 0
    trusted_rows = rng.choice(600, 40, replace=False)
    trusted = TrustedLabels(X=X[trusted_rows], y=y[trusted_rows], rows=None)
    clean = rng.choice(np.setdiff1d(np.flatnonzero(y == 1), region), len(region), replace=False)
    result = roni_test(X, y_bad, trusted, [region, clean], 2)
    assert result.impact[0] > 0 and result.rejected[0]
    assert result.impact[1] <= 0


# -- rules and reference labels ----------------------------------------------------------------
def test_rules_from_yaml_flag_violations_with_the_rule_name(tmp_path, breast):
    pa = pytest.importorskip("pyarrow")
    X, y = breast
    names = ["radius", "texture"]
    table = pa.table({"radius": X[:, 0], "texture": X[:, 1], "diagnosis": np.where(y == 0, "m", "b")})
    path = tmp_path / "rules.yaml"
    path.write_text("- name: huge tumours are malignant\n  when: radius > 20\n  label: m\n")
    rules = load_rules(path)
    assert rules[0].name == "huge tumours are malignant"
    sources = rule_sources(table, rules, np.array(["b", "m"], dtype=object))
    codes = (np.where(y == 0, "m", "b") == "m").astype(int)
    codes_bad = codes.copy()
    big = np.flatnonzero(X[:, 0] > 20)[:3]
    codes_bad[big] = 0  # claim benign
    audit = find_flipped_labels(codes_bad, oof(X[:, :2], codes_bad), X=X[:, :2], sources=sources,
                                classes=np.array(["b", "m"], dtype=object))
    assert audit.flags[big].all()
    listed = {d["row"] for d in audit.disagreements}
    assert set(big) <= listed
    assert all(d["source"] == "huge tumours are malignant" for d in audit.disagreements)
    assert audit.evidence[0]["n_applicable"] == int((X[:, 0] > 20).sum())
    assert names  # columns named above are the rule's vocabulary


def test_bad_rules_are_one_clear_error(tmp_path):
    pa = pytest.importorskip("pyarrow")
    table = pa.table({"x": [1.0, 2.0], "y": ["a", "b"]})
    classes = np.array(["a", "b"], dtype=object)
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("- when: [unclosed\n")
    with pytest.raises(DataError, match="not valid YAML"):
        load_rules(bad_yaml)
    with pytest.raises(DataError, match="rule 1 needs 'when' and 'label'"):
        load_rules([{"when": "x > 1"}])
    with pytest.raises(DataError, match="no such rules file"):
        load_rules(tmp_path / "missing.yaml")
    with pytest.raises(DataError, match=r"rule 'r': cannot evaluate 'nope > 1'"):
        rule_sources(table, load_rules([{"when": "nope > 1", "label": "a", "name": "r"}]), classes)
    with pytest.raises(DataError, match="label 'c' is not a class"):
        rule_sources(table, load_rules([{"when": "x > 1", "label": "c"}]), classes)


def test_reference_source_ignores_missing_and_unknown_values():
    src, unknown = reference_source(["a", None, "b", "zzz", "a"], np.array(["a", "b"], dtype=object),
                                    "reference:second")
    assert src.expected.tolist() == [0, -1, 1, -1, 0]
    assert unknown == 1 and src.kind == "reference"


def test_rules_method_needs_sources():
    with pytest.raises(DataError, match="needs rules or a reference-label column"):
        find_flipped_labels(np.array([0, 1, 0, 1]), method="rules")
    src = LabelSource("second", np.array([0, 0, -1, 1]), kind="reference")
    audit = find_flipped_labels(np.array([0, 1, 0, 1]), method="rules", sources=[src])
    assert audit.flags.tolist() == [False, True, False, False]
    assert audit.disagreements == [{"row": 1, "source": "second", "expected": 0}]


# -- result object ---------------------------------------------------------------------------------
def test_label_audit_speaks_the_users_vocabulary():
    labels = np.array([0, 0, 0, 1, 1, 1])
    probs = np.array([[.9, .1], [.8, .2], [.1, .9], [.2, .8], [.1, .9], [.7, .3]])
    audit = find_flipped_labels(labels, probs, method="self_confidence",
                                classes=np.array(["ham", "spam"], dtype=object),
                                ids=np.array([10, 11, 12, 13, 14, 15]))
    assert isinstance(audit, LabelAudit)
    d = json.loads(audit.to_json())
    assert {"n_rows", "n_flagged", "estimated_flips", "estimated_flip_rate", "transitions",
            "model_quality", "warnings", "rows"} <= set(d)
    assert d["n_rows"] == 6 and d["n_flagged"] == 2 and d["estimated_flips"] == 2
    assert d["transitions"] == [{"from": "ham", "to": "spam", "count": 1},
                                {"from": "spam", "to": "ham", "count": 1}]
    assert [r["row"] for r in d["rows"]] == list(range(6))
    assert d["rows"][2] == {"row": 2, "id": 12, "label": "ham", "suggested_label": "spam",
                            "score": d["rows"][2]["score"], "flagged": True, "likely": True,
                            "reasons": "self_confidence"}
    assert d["rows"][2]["score"] > 0.5 > d["rows"][0]["score"]
    assert audit.to_table().column_names == ["row", "id", "label", "suggested_label", "score", "flagged",
                                             "likely", "reasons"]
    assert sorted(audit.flagged_indices.tolist()) == [2, 5]


def test_bad_inputs_raise_one_clear_error():
    probs = np.array([[.9, .1], [.2, .8]])
    with pytest.raises(DataError, match="integer codes"):
        find_flipped_labels(np.array(["a", "b"]), probs)
    with pytest.raises(DataError, match="shape"):
        find_flipped_labels(np.array([0, 1, 1]), probs)
    with pytest.raises(DataError, match="single class"):
        find_flipped_labels(np.array([1, 1]), probs)
    with pytest.raises(DataError, match="needs the features X"):
        find_flipped_labels(np.array([0, 1]), method="knn")
    with pytest.raises(InvalidParameterError, match="Unknown detection method 'magic'"):
        find_flipped_labels(np.array([0, 1]), probs, method="magic")
    with pytest.raises(InvalidParameterError, match="has no parameter"):
        find_flipped_labels(np.array([0, 1]), probs, method="knn", frac_noise=0.5)
    with pytest.raises(InvalidParameterError, match="The 'n_neighbors' parameter of AutoDetector"):
        AutoDetector(n_neighbors=0).audit(np.array([0, 1]), probs)


def test_embed_2d_is_pca_of_standardised_features(breast):
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    X, _ = breast
    coords, axes = embed_2d(X)
    ref = PCA(2).fit_transform(StandardScaler().fit_transform(X))
    for j in range(2):
        assert abs(abs(np.corrcoef(coords[:, j], ref[:, j])[0, 1]) - 1) < 1e-8
    assert axes[0].startswith("PC1")
    two, names = embed_2d(X[:, :2], ["a", "b"])
    assert np.array_equal(two, X[:, :2]) and names == ["a", "b"]


def test_evaluate_detection_reports_against_the_truth(breast):
    X, y = breast
    y_bad, mask = flip("random", X, y, rate=0.2)
    r = evaluate_detection((X, y_bad), mask, random_state=0)
    assert {"precision", "recall", "f1", "auroc", "average_precision", "precision_at_true_count",
            "estimated_flips", "model_quality", "seconds"} <= set(r)
    assert r["f1"] > 0.8 and r["n_true_flips"] == mask.sum()
    with pytest.raises(InvalidParameterError, match="flip_mask"):
        evaluate_detection((X, y_bad), mask[:10])


@pytest.mark.parametrize("name", sorted(detector_names()) + ["LabelAuditor"])
def test_scikit_learn_parameter_checks(name):
    from sklearn.utils.estimator_checks import (
        check_get_params_invariance,
        check_no_attributes_set_in_init,
        check_parameters_default_constructible,
        check_set_params,
    )

    est = LabelAuditor() if name == "LabelAuditor" else make_detector(name)
    label = type(est).__name__
    check_no_attributes_set_in_init(label, est)
    check_parameters_default_constructible(label, est)
    check_get_params_invariance(label, est)
    check_set_params(label, est)
