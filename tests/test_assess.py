"""Impact assessment: the experiment follows the threat, and its numbers mean what they say."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from flipguard.assess import Assessment, assess
from flipguard.assess._runner import _split
from flipguard.data import load, make_sentiment_reviews
from flipguard.exceptions import DataError, InvalidParameterError


@pytest.fixture(scope="module")
def reviews():
    return make_sentiment_reviews(600, random_state=1)


@pytest.fixture(scope="module")
def small(reviews):
    return assess(reviews, strategies=["random", "targeted"], rates=[0.1, 0.3], seeds=2,
                  models=["logreg", "knn"], views="auto")


def test_every_cell_is_run_with_a_clean_baseline(small):
    cells = {(r.strategy, r.rate, r.seed, r.model) for r in small.runs}
    expected = {(s, r, seed, m) for s in ["random", "targeted"] for r in [0.1, 0.3]
                for seed in [0, 1] for m in ["logreg", "knn"]}
    expected |= {("none", 0.0, seed, m) for seed in [0, 1] for m in ["logreg", "knn"]}
    assert cells == expected
    for r in small.runs:
        if r.strategy == "none":
            assert r.n_flipped == 0 and r.clean_model == r.poisoned_model


def test_illusion_gap_is_validation_minus_holdout_of_the_poisoned_model(small):
    for r in small.runs:
        v = r.poisoned_model["poisoned_validation"]["accuracy"]
        h = r.poisoned_model["clean_holdout"]["accuracy"]
        assert r.illusion_gap == pytest.approx(v - h)
        assert r.accuracy_drop == pytest.approx(r.clean_model["clean_holdout"]["accuracy"] - h)


def test_flip_rate_and_split_sizes(small, reviews):
    for r in small.runs:
        assert r.n_train + r.n_validation + r.n_holdout == reviews.n_samples
        if r.strategy == "random":
            assert r.flip_rate == pytest.approx(r.rate, abs=1 / (r.n_train + r.n_validation))
        if r.strategy == "targeted":  # rate is a fraction of the source class (half the store)
            assert r.flip_rate == pytest.approx(r.rate / 2, abs=0.01)


def test_holdout_is_clean_and_splits_are_disjoint(reviews):
    sp = _split(reviews, 0, 0.25, 0.25)
    store, hold = sp["store"], sp["holdout"]
    assert len(np.intersect1d(store, hold)) == 0
    assert len(store) + len(hold) == reviews.n_samples
    assert len(np.intersect1d(sp["train"], sp["val"])) == 0
    assert len(sp["train"]) + len(sp["val"]) == len(store)
    # Stratified: class shares of the holdout match the data.
    assert abs(reviews.y[hold].mean() - reviews.y.mean()) < 0.02


def test_random_flips_show_up_in_the_poisoned_validation_split(small):
    # What the victim sees: a model scored against flipped validation labels
    # cannot exceed 1 - (fraction flipped in validation) by much; the clean holdout is higher.
    row = small.find("random", 0.3, "logreg")
    assert row["poisoned_validation_accuracy"]["mean"] < 0.8
    assert row["poisoned_holdout_accuracy"]["mean"] > 0.9
    assert row["illusion_gap"]["mean"] < -0.15


def test_same_seed_same_result_and_parallel_equals_serial(reviews):
    kw = dict(strategies=["random"], rates=[0.2], seeds=[4, 5], models=["logreg"], views=None)
    a, b = assess(reviews, **kw), assess(reviews, n_jobs=2, **kw)
    da, db = a.to_dict(), b.to_dict()
    for d in (da, db):
        d.pop("seconds")
        for r in d["runs"]:
            r.pop("fit_seconds")
    assert da == db


def test_summary_aggregates_mean_and_spread(small):
    row = small.find("random", 0.1, "knn")
    accs = [r.holdout_accuracy for r in small.runs
            if (r.strategy, r.rate, r.model) == ("random", 0.1, "knn")]
    assert row["n_seeds"] == 2
    assert row["poisoned_holdout_accuracy"]["mean"] == pytest.approx(np.mean(accs))
    assert row["poisoned_holdout_accuracy"]["std"] == pytest.approx(np.std(accs, ddof=1))


def test_views_for_the_report(small):
    assert {(v.strategy, v.rate, v.model) for v in small.views} == \
        {(s, 0.1, m) for s in ["random", "targeted"] for m in ["logreg", "knn"]}
    v = small.views[0]
    assert v.clean_grid.shape == (len(v.grid_y), len(v.grid_x)) == v.poisoned_grid.shape
    assert v.points.shape[1] == 2 and v.flip_mask.any()
    assert v.axis_names == ["polarity", "intensity"]


def test_high_dimensional_views_use_pca(breast_cancer_frame):
    ds = load(breast_cancer_frame, label="diagnosis", id="patient_id")
    a = assess(ds, strategies=["random"], rates=[0.2], seeds=1, models=["logreg"])
    assert a.views[0].axis_names == ["PCA 1", "PCA 2"]


def test_to_json_is_plain_json(small):
    d = json.loads(small.to_json())
    assert set(d) == {"dataset", "config", "seconds", "warnings", "summary", "runs"}
    assert d["dataset"]["classes"] == ["negative", "positive"]
    assert d["warnings"] == []  # every run flipped rows and kept two classes
    assert isinstance(small, Assessment)


def test_bad_parameters(reviews):
    with pytest.raises(InvalidParameterError, match="Unknown attack strategy 'nope'"):
        assess(reviews, strategies=["nope"])
    with pytest.raises(InvalidParameterError, match=r"rates must be in \(0, 1\]. Got 1.5"):
        assess(reviews, rates=[1.5])
    with pytest.raises(InvalidParameterError, match="Unknown model 'gpt'"):
        assess(reviews, models=["gpt"])
    tiny = load((np.arange(20.0).reshape(10, 2), np.array([0] * 8 + [1] * 2)))
    with pytest.raises(DataError, match="class 1 has 2 row"):
        assess(tiny)


def test_splits_too_small_for_the_classes_are_refused_before_any_work(cli, tmp_path, reviews):
    """--holdout 0.99 used to end in scikit-learn's traceback; -j 0 in joblib's."""
    with pytest.raises(InvalidParameterError, match=r"holdout_size=0.999 and validation_size=0.25 leave 0 training "
                                                    r"row\(s\) of 600; each split needs at least one row per class"):
        assess(reviews, holdout_size=0.999)
    with pytest.raises(InvalidParameterError, match="leave 1 validation row"):
        assess(reviews, holdout_size=0.5, validation_size=0.001)
    path = tmp_path / "r.parquet"
    pq.write_table(reviews.to_table(), path)
    for args in (("--holdout", "0.999"), ("--validation", "0.999"), ("-j", "0")):
        r = cli("assess", path, "--label", reviews.label_name, *args, "--out", tmp_path / "out")
        assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, (args, r.stderr)
    assert not (tmp_path / "out").exists()


def test_every_model_trains_on_a_tiny_split():
    """Five training rows: fewer than knn's 15 neighbours and too few for the MLP's early-stopping split."""
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0, 1, (40, 3)), rng.normal(3, 1, (40, 3))])
    ds = load((X, np.repeat([0, 1], 40)))
    a = assess(ds, strategies=["random"], rates=[0.2], seeds=1, holdout_size=0.9, validation_size=0.5,
               models=["logreg", "knn", "mlp", "hgb", "rf", "linsvm"], views=None)
    n_train = len(_split(ds, a.config["seeds"][0], 0.9, 0.5)["train"])
    assert n_train < 15
    assert {r.model for r in a.runs} == {"logreg", "knn", "mlp", "hgb", "rf", "linsvm"}


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_small_data_estimators_match_scikit_learn_where_it_can_fit():
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier

    from flipguard._estimators import CappedKNeighborsClassifier, SmallDataMLPClassifier

    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(200, 4)), rng.integers(0, 3, 200)
    ours, theirs = CappedKNeighborsClassifier(15).fit(X, y), KNeighborsClassifier(15).fit(X, y)
    np.testing.assert_array_equal(ours.predict_proba(X), theirs.predict_proba(X))
    np.testing.assert_array_equal(ours.kneighbors()[1], theirs.kneighbors()[1])
    kw = dict(hidden_layer_sizes=(8,), max_iter=50, early_stopping=True, random_state=0)
    np.testing.assert_array_equal(SmallDataMLPClassifier(**kw).fit(X, y).predict_proba(X),
                                  MLPClassifier(**kw).fit(X, y).predict_proba(X))
    # too few rows: scikit-learn refuses, ours trains without the split and keeps its parameter
    with pytest.raises(ValueError):
        MLPClassifier(**kw).fit(X[:6], np.array([0, 0, 1, 1, 2, 2]))
    small = SmallDataMLPClassifier(**kw).fit(X[:6], np.array([0, 0, 1, 1, 2, 2]))
    assert small.early_stopping and small.predict(X[:6]).shape == (6,)
    assert CappedKNeighborsClassifier(15).fit(X[:4], y[:4]).predict_proba(X).shape == (200, len(np.unique(y[:4])))


def test_detection_and_mitigation_are_scored_against_the_truth(cli, tmp_path, breast_cancer_csv):
    out = tmp_path / "rep"
    r = cli("assess", breast_cancer_csv, "--label", "diagnosis", "--strategies", "random", "--rates", "0.2",
            "--seeds", "1", "--detect", "--mitigate", "drop,relabel", "--out", out, "--json", "-j", "1")
    assert r.exit_code == 0, r.stderr
    d = json.loads(r.stdout)
    row = next(s for s in d["summary"] if s["strategy"] == "random")
    # Random flips on breast-cancer data are easy to find: detection must beat chance clearly.
    assert row["detection"]["auroc"]["mean"] > 0.9
    assert set(row["mitigation"]) == {"drop", "relabel"}
    run = next(x for x in d["runs"] if x["strategy"] == "random")
    gain = run["extras"]["mitigation"]["drop"]["accuracy"] - run["poisoned_model"]["clean_holdout"]["accuracy"]
    assert row["mitigation"]["drop"]["gain"]["mean"] == pytest.approx(gain)
    html = (out / "report.html").read_text()
    assert "Detection and mitigation" in html and "Precision @ true count" in html


def test_results_convert_to_arrow_and_pandas():
    from flipguard.assess import assess
    from flipguard.data import make_sentiment_reviews
    from flipguard.exceptions import InvalidParameterError
    from flipguard.mitigation import PartitionAggregationClassifier

    a = assess(make_sentiment_reviews(200, random_state=0), strategies=["random"], rates=[0.2], seeds=2,
               views=None, n_jobs=1)
    runs = a.to_arrow()
    assert runs.num_rows == len(a.runs) == 4
    assert runs.column("illusion_gap").to_pylist() == [r.illusion_gap for r in a.runs]
    summary = a.to_pandas("summary")
    row = summary[(summary.strategy == "random")].iloc[0]
    assert row["illusion_gap_mean"] == pytest.approx(a.find("random", 0.2)["illusion_gap"]["mean"])
    with pytest.raises(InvalidParameterError):
        a.to_arrow("nope")
    ds = make_sentiment_reviews(300, random_state=0)
    labels = ds.labels()
    clf = PartitionAggregationClassifier("logreg", n_partitions=5, random_state=0).fit(ds.X[:200], labels[:200])
    cert = clf.certify(ds.X[200:], labels[200:])
    df = cert.to_pandas()
    assert list(df.columns) == ["row", "id", "label", "prediction", "radius"] and len(df) == 100
    assert set(df["prediction"]) <= set(labels) and df["radius"].tolist() == cert.radii.tolist()
    # Predictions speak the user's label values (classes_), never integer codes.
    from flipguard.mitigation import RobustClassifier

    robust = RobustClassifier("logreg", random_state=0).fit(ds.X[:200], labels[:200])
    assert set(robust.predict(ds.X[200:])) <= {"negative", "positive"} == set(robust.classes_)


def test_attack_params_name_classes_by_label(reviews):
    """The docstring's ``{"targeted": {"source": "fraud"}}`` failed: the flippers saw label codes, so a
    class given by its label was 'not in y (classes: 0, 1)'.  At rate 0.95 almost every row of the
    source class flips to the target, so the poisoned model forgets the source class."""
    pos, neg = (str(c) for c in reviews.classes[::-1])
    runs = {}
    for source, target in ((pos, neg), (neg, pos)):
        a = assess(reviews, strategies=["targeted"], rates=[0.95], seeds=1, views=None,
                   attack_params={"targeted": {"source": source, "target": target}})
        run = next(r for r in a.runs if r.strategy == "targeted")
        runs[source] = run
        store = run.n_train + run.n_validation
        assert run.n_flipped == pytest.approx(0.95 * store * np.mean(reviews.labels() == source), abs=3)
        per_class = run.poisoned_model["clean_holdout"]["per_class"]
        assert per_class[source]["recall"] < 0.1 < per_class[target]["recall"]
        assert a.to_dict()["config"]["attack_params"] == {"targeted": {"source": source, "target": target}}
    pairs = assess(reviews, strategies=["noise_matrix"], rates=[0.2], seeds=1, views=None,
                   attack_params={"noise_matrix": {"kind": "pair", "pairs": {pos: neg}}})
    assert next(r for r in pairs.runs if r.strategy == "noise_matrix").n_flipped > 0
    with pytest.raises(InvalidParameterError, match=r"\['source'\] = 'fraud' is not a class of .*; classes: "):
        assess(reviews, strategies=["targeted"], attack_params={"targeted": {"source": "fraud"}})


def test_cli_source_and_target_steer_the_targeted_and_cluster_attacks(cli, tmp_path, breast_cancer_csv):
    out = tmp_path / "rep"
    r = cli("assess", breast_cancer_csv, "--label", "diagnosis", "--strategies", "targeted,cluster,random",
            "--rates", "0.95", "--seeds", "1", "--source", "benign", "--target", "malignant", "--out", out,
            "--json", "-j", "1")
    assert r.exit_code == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["config"]["attack_params"] == {s: {"source": "benign", "target": "malignant"}
                                            for s in ("targeted", "cluster")}
    for strategy in ("targeted", "cluster"):  # almost every benign row became malignant
        run = next(x for x in d["runs"] if x["strategy"] == strategy)
        assert run["poisoned_model"]["clean_holdout"]["per_class"]["benign"]["recall"] < 0.1, strategy
    assert "targeted: source benign, target malignant" in (out / "report.html").read_text()
    for args, words in ((("--strategies", "targeted", "--source", "fraud"), "--source 'fraud' is not a class"),
                        (("--strategies", "random", "--target", "benign"), "--target applies to the targeted"),
                        (("--strategies", "targeted", "--source", "benign", "--target", "benign"),
                         "--source and --target are the same class")):
        bad = cli("assess", breast_cancer_csv, "--label", "diagnosis", *args, "--out", tmp_path / "bad")
        assert bad.exit_code == 2 and words in bad.stderr and bad.stderr.count("\n") == 1, bad.stderr
        assert not (tmp_path / "bad").exists()


def test_an_attack_that_leaves_one_class_is_measured_not_a_traceback(cli, tmp_path, breast_cancer_csv):
    """Targeted at rate 1 on two classes leaves one class in the poisoned training labels; the victim
    model failed to train and assess ended in scikit-learn's traceback.  The victim now predicts the one
    class it was shown, which is what the attack achieves, and the run says so."""
    out = tmp_path / "rep"
    r = cli("assess", breast_cancer_csv, "--label", "diagnosis", "--strategies", "targeted,random", "--rates", "1.0",
            "--seeds", "1", "--source", "malignant", "--detect", "--mitigate", "drop", "--out", out, "--json",
            "-j", "1")
    assert r.exit_code == 0, r.stderr
    assert "targeted at 100% left one class ('benign')" in r.stderr and "Traceback" not in r.stderr
    d = json.loads(r.stdout)
    run = next(x for x in d["runs"] if x["strategy"] == "targeted")
    holdout = run["poisoned_model"]["clean_holdout"]
    assert holdout["per_class"]["malignant"]["recall"] == 0.0 and holdout["per_class"]["benign"]["recall"] == 1.0
    assert "left one class" in run["extras"]["note"] and "mitigation" not in run["extras"]
    other = next(x for x in d["runs"] if x["strategy"] == "random")  # rate 1 of random keeps both classes
    assert "note" not in other["extras"] and "mitigation" in other["extras"]
    assert d["warnings"] == [run["extras"]["note"]]
    assert "Targeted at 100% left one class (&#39;benign&#39;)" in (out / "report.html").read_text()
