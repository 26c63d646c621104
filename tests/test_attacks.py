"""Label-flipping attacks: the flipper protocol for every registered strategy, and each attack's own claim."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer, make_classification
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

import flipguard.attacks as attacks
from flipguard.attacks import (
    FLIPPERS,
    ALFAFlip,
    BoundaryFlip,
    ClusterFlip,
    EntropyFlip,
    NoiseMatrixFlip,
    RandomFlip,
    TargetedFlip,
    flipper_names,
    make_flipper,
)
from flipguard.data import make_sentiment_reviews
from flipguard.exceptions import DataError, FlipguardError, InvalidParameterError
from flipguard.models import make_model, single_threaded

ALL = flipper_names()
MULTICLASS = [name for name in ALL if name != "alfa"]  # ALFA is binary by definition
#: Strategies whose choice of rows depends on the seed only through the surrogate's subsample.
SURROGATE = {"boundary", "entropy"}


@pytest.fixture(scope="module")
def reviews():
    ds = make_sentiment_reviews(300, random_state=0)
    return ds.X, ds.labels(ds.y).astype(str)  # string labels "negative" / "positive"


@pytest.fixture(scope="module")
def three():
    X, y = make_classification(n_samples=300, n_features=6, n_informative=4, n_redundant=0,
                               n_classes=3, n_clusters_per_class=1, random_state=0)
    return X, y


def _fit(name, X, y, **params):
    flipper = make_flipper(name, **params)
    X_out, y_out = flipper.fit_resample(X, y)
    return flipper, X_out, y_out


def _source_count(y) -> int:
    """Rows of TargetedFlip's default source class (the least frequent; ties: the first)."""
    _, counts = np.unique(y, return_counts=True)
    return int(counts.min())


# -- the registry and the package --------------------------------------------------------------
def test_registry_holds_every_strategy_and_all_is_sorted():
    assert ALL == ["alfa", "boundary", "cluster", "entropy", "noise_matrix", "random", "targeted"]
    assert attacks.__all__ == sorted(attacks.__all__)
    namespace: dict = {}
    exec("from flipguard.attacks import *", namespace)
    assert {"ALFAFlip", "BoundaryFlip", "ClusterFlip", "EntropyFlip", "NoiseMatrixFlip"} <= set(namespace)
    assert FLIPPERS["alfa"] is ALFAFlip and FLIPPERS["noise_matrix"] is NoiseMatrixFlip


def test_unknown_strategy_and_unknown_parameter():
    with pytest.raises(InvalidParameterError) as exc:
        make_flipper("lasers")
    assert str(exc.value) == ("Unknown attack strategy 'lasers'; choose one of alfa, boundary, cluster, "
                              "entropy, noise_matrix, random, targeted.")
    with pytest.raises(InvalidParameterError, match="Attack strategy 'cluster' has no parameter\\(s\\) mode"):
        make_flipper("cluster", mode="least")


@pytest.mark.parametrize("name", ALL)
def test_clone_round_trips_parameters(name):
    flipper = make_flipper(name, rate=0.2, random_state=3)
    assert clone(flipper).get_params() == flipper.get_params()


# -- the protocol, for every strategy ----------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_same_seed_same_flips(name, reviews):
    X, y = reviews
    a, _, ya = _fit(name, X, y, rate=0.1, random_state=7)
    b, _, yb = _fit(name, X, y, rate=0.1, random_state=7)
    np.testing.assert_array_equal(a.flipped_indices_, b.flipped_indices_)
    np.testing.assert_array_equal(ya, yb)


@pytest.mark.parametrize("name", ALL)
def test_different_seeds_usually_flip_different_rows(name, reviews):
    X, y = reviews
    # boundary/entropy only use the seed for the surrogate's subsample: make it matter.
    extra = {"max_fit_samples": 60} if name in SURROGATE else {}
    sets = {tuple(_fit(name, X, y, rate=0.1, random_state=s, **extra)[0].flipped_indices_)
            for s in range(5)}
    assert len(sets) >= 2


@pytest.mark.parametrize("name", ALL)
def test_flipped_labels_differ_and_attributes_agree(name, reviews):
    X, y = reviews
    flipper, _, y_bad = _fit(name, X, y, rate=0.2, random_state=0)
    y_bad = np.asarray(y_bad)
    changed = y_bad != y
    np.testing.assert_array_equal(flipper.flip_mask_, changed)
    np.testing.assert_array_equal(flipper.flipped_indices_, np.flatnonzero(changed))
    np.testing.assert_array_equal(flipper.original_labels_, y[flipper.flipped_indices_])
    np.testing.assert_array_equal(flipper.new_labels_, y_bad[flipper.flipped_indices_])
    assert np.all(flipper.original_labels_ != flipper.new_labels_)
    assert flipper.n_flips_ == int(changed.sum()) > 0
    assert list(flipper.classes_) == ["negative", "positive"]


@pytest.mark.parametrize("name", ALL)
def test_exact_n_flips(name, reviews):
    X, y = reviews
    for k in (0, 1, 37):
        flipper, _, y_bad = _fit(name, X, y, n_flips=k, random_state=0)
        assert int((np.asarray(y_bad) != y).sum()) == k == flipper.n_flips_


@pytest.mark.parametrize("name", ALL)
def test_rate_is_a_fraction_of_the_rows(name, reviews):
    X, y = reviews
    flipper, _, _ = _fit(name, X, y, rate=0.15, random_state=0)
    pool = _source_count(y) if name == "targeted" else len(y)  # targeted: a fraction of the source class
    assert flipper.n_flips_ == round(0.15 * pool)


@pytest.mark.parametrize("name", ALL)
def test_rate_one_flips_every_eligible_row(name, reviews):
    X, y = reviews
    flipper, _, _ = _fit(name, X, y, rate=1.0, random_state=0)
    assert flipper.n_flips_ == (_source_count(y) if name == "targeted" else len(y))


@pytest.mark.parametrize("name", ALL)
def test_budget_larger_than_the_data(name, reviews):
    X, y = reviews
    n = _source_count(y) if name == "targeted" else len(y)
    with pytest.raises(InvalidParameterError) as exc:
        make_flipper(name, n_flips=n + 1).fit_resample(X, y)
    assert str(exc.value) == f"{FLIPPERS[name].__name__}: cannot flip {n + 1} of {n} eligible rows"


@pytest.mark.parametrize("name", [n for n in ALL if n != "targeted"])
def test_per_class_budget_dict(name, reviews):
    X, y = reviews
    flipper, _, y_bad = _fit(name, X, y, n_flips={"negative": 12, "positive": 3}, random_state=0)
    orig = flipper.original_labels_
    assert (orig == "negative").sum() == 12 and (orig == "positive").sum() == 3
    flipper, _, _ = _fit(name, X, y, rate={"positive": 0.1}, random_state=0)
    n_pos = int((y == "positive").sum())
    assert flipper.n_flips_ == round(0.1 * n_pos)
    assert set(flipper.original_labels_) == {"positive"}


@pytest.mark.parametrize("name", [n for n in MULTICLASS if n != "targeted"])
def test_per_class_budget_dict_three_classes(name, three):
    X, y = three
    flipper, _, y_bad = _fit(name, X, y, n_flips={0: 5, 2: 9}, random_state=1)
    assert np.bincount(flipper.original_labels_, minlength=3).tolist() == [5, 0, 9]
    assert np.all(y_bad[flipper.flipped_indices_] != y[flipper.flipped_indices_])


def test_targeted_rejects_a_per_class_dict(reviews):
    X, y = reviews
    with pytest.raises(InvalidParameterError, match="not a per-class dict"):
        TargetedFlip(n_flips={"negative": 3}).fit_resample(X, y)


def test_budget_naming_an_absent_class(reviews):
    X, y = reviews
    with pytest.raises(InvalidParameterError, match="budget names class 'neutral', which is not in y"):
        RandomFlip(n_flips={"neutral": 3}).fit_resample(X, y)


@pytest.mark.parametrize("name", ALL)
def test_X_is_returned_unchanged_as_the_same_object(name, reviews):
    X, y = reviews
    before = X.copy()
    y_in = y.copy()
    X_out, _ = make_flipper(name, rate=0.1, random_state=0).fit_resample(X, y_in)
    assert X_out is X
    np.testing.assert_array_equal(X, before)
    np.testing.assert_array_equal(y_in, y)  # the caller's labels are not modified either


@pytest.mark.parametrize("name", ALL)
def test_containers_keep_their_type(name, reviews):
    X, y = reviews
    as_list = y.tolist()
    _, out = make_flipper(name, n_flips=10, random_state=0).fit_resample(X, as_list)
    assert isinstance(out, list) and all(isinstance(v, str) for v in out)
    assert sum(a != b for a, b in zip(out, as_list)) == 10

    series = pd.Series(y, index=np.arange(1000, 1000 + len(y)), name="sentiment")
    _, out = make_flipper(name, n_flips=10, random_state=0).fit_resample(pd.DataFrame(X), series)
    assert isinstance(out, pd.Series)
    assert out.name == "sentiment" and out.dtype == series.dtype
    assert out.index.equals(series.index)
    assert int((out != series).sum()) == 10
    np.testing.assert_array_equal(series.to_numpy(), y)  # the input Series is untouched

    codes = (y == "positive").astype(np.int32)
    _, out = make_flipper(name, n_flips=10, random_state=0).fit_resample(X, codes)
    assert isinstance(out, np.ndarray) and out.dtype == np.int32


@pytest.mark.parametrize("name", ALL)
def test_invalid_rate_uses_the_sklearn_template(name, reviews):
    X, y = reviews
    cls = FLIPPERS[name]
    with pytest.raises(InvalidParameterError) as exc:
        cls(rate=1.5).fit_resample(X, y)
    assert str(exc.value) == (f"The 'rate' parameter of {cls.__name__} must be a float in the range "
                              "(0.0, 1.0], an instance of 'dict' or None. Got 1.5 instead.")
    assert isinstance(exc.value, (FlipguardError, ValueError))


@pytest.mark.parametrize("cls, params, fragment", [
    (NoiseMatrixFlip, {"kind": "diagonal"}, "The 'kind' parameter of NoiseMatrixFlip must be a str among"),
    (BoundaryFlip, {"mode": "middle"}, "The 'mode' parameter of BoundaryFlip must be a str among"),
    (BoundaryFlip, {"model": "forest"}, "The 'model' parameter of BoundaryFlip must be a str among"),
    (EntropyFlip, {"max_fit_samples": 1}, "The 'max_fit_samples' parameter of EntropyFlip must be an int "
                                          "in the range [2, inf). Got 1 instead."),
    (ClusterFlip, {"n_clusters": 0}, "The 'n_clusters' parameter of ClusterFlip must be an int in the "
                                     "range [1, inf). Got 0 instead."),
    (ALFAFlip, {"model": "rf"}, "The 'model' parameter of ALFAFlip must be a str among"),
    (ALFAFlip, {"max_iter": 0}, "The 'max_iter' parameter of ALFAFlip must be an int in the range "
                                "[1, inf). Got 0 instead."),
])
def test_invalid_strategy_parameters(cls, params, fragment, reviews):
    X, y = reviews
    with pytest.raises(InvalidParameterError) as exc:
        cls(**params).fit_resample(X, y)
    assert str(exc.value).startswith(fragment)


@pytest.mark.parametrize("name", ALL)
def test_usable_inside_an_imblearn_pipeline(name, reviews):
    from imblearn.pipeline import Pipeline

    X, y = reviews
    pipe = Pipeline([("flip", make_flipper(name, rate=0.1, random_state=0)),
                     ("clf", LogisticRegression())])
    pipe.fit(X, y)
    flipper = pipe.named_steps["flip"]
    assert flipper.n_flips_ == (round(0.1 * _source_count(y)) if name == "targeted" else 30)
    # The classifier saw the poisoned labels, and prediction does not resample.
    assert set(pipe.predict(X)) <= {"negative", "positive"}
    assert len(pipe.predict(X)) == len(y)


@pytest.mark.parametrize("name", ["boundary", "entropy", "cluster", "alfa"])
def test_feature_based_attacks_check_X(name, reviews):
    X, y = reviews
    with pytest.raises(DataError, match="X has 299 rows but y has 300 labels"):
        make_flipper(name).fit_resample(X[:-1], y)


def test_single_class_is_a_data_error():
    with pytest.raises(DataError, match="single class"):
        RandomFlip().fit_resample(None, np.zeros(10))


# -- targeted ----------------------------------------------------------------------------------
def test_targeted_only_moves_source_to_target(three):
    X, y = three
    flipper, _, y_bad = _fit("targeted", X, y, source=2, target=0, rate=0.5, random_state=0)
    assert set(flipper.original_labels_) == {2} and set(flipper.new_labels_) == {0}
    assert flipper.n_flips_ == round(0.5 * (y == 2).sum())
    np.testing.assert_array_equal(y_bad[y != 2], y[y != 2])


# -- noise_matrix ------------------------------------------------------------------------------
def test_noise_matrix_counts_follow_T(three):
    X, y = three
    T = np.array([[0.7, 0.2, 0.1],
                  [0.0, 1.0, 0.0],
                  [0.25, 0.25, 0.5]])
    flipper, _, y_bad = _fit("noise_matrix", X, y, T=T, random_state=0)
    counts = np.zeros((3, 3), dtype=int)
    np.add.at(counts, (y, np.asarray(y_bad)), 1)
    np.fill_diagonal(counts, 0)
    n_c = np.bincount(y)  # 100 per class
    expected = np.rint(T * n_c[:, None]).astype(int)
    np.fill_diagonal(expected, 0)
    np.testing.assert_array_equal(counts, expected)
    np.testing.assert_array_equal(flipper.transition_counts_, expected)
    np.testing.assert_allclose(flipper.transition_matrix_, T, atol=0.01)


def test_noise_matrix_symmetric_and_pair(three):
    X, y = three
    flipper, _, _ = _fit("noise_matrix", X, y, kind="symmetric", rate=0.3, random_state=0)
    # Each class of 100 loses 30 rows, 15 to each of the other two classes.
    expected = np.full((3, 3), 15)
    np.fill_diagonal(expected, 0)
    np.testing.assert_array_equal(flipper.transition_counts_, expected)
    flipper, _, _ = _fit("noise_matrix", X, y, kind="pair", rate=0.3, random_state=0)
    assert flipper.transition_counts_.tolist() == [[0, 30, 0], [0, 0, 30], [30, 0, 0]]
    pairs = set(zip(flipper.original_labels_.tolist(), flipper.new_labels_.tolist()))
    assert pairs == {(0, 1), (1, 2), (2, 0)}


def test_noise_matrix_rejects_bad_matrices(three):
    X, y = three
    with pytest.raises(InvalidParameterError) as exc:
        NoiseMatrixFlip(T=np.eye(2)).fit_resample(X, y)
    assert str(exc.value) == ("NoiseMatrixFlip: T has shape (2, 2) but y has 3 classes (0, 1, 2); "
                              "give a 3 x 3 matrix in sorted label order")
    bad = np.eye(3)
    bad[1] = [0.5, 0.4, 0.0]
    with pytest.raises(InvalidParameterError, match="row 1 \\(class 1\\) sums to 0.9"):
        NoiseMatrixFlip(T=bad).fit_resample(X, y)


# -- boundary and entropy ----------------------------------------------------------------------
def test_boundary_least_picks_less_confident_rows_than_most(reviews):
    X, y = reviews
    least, _, _ = _fit("boundary", X, y, mode="least", n_flips=30, random_state=0)
    most, _, _ = _fit("boundary", X, y, mode="most", n_flips=30, random_state=0)
    m = least.margins_
    everything = np.arange(len(y))
    assert m[least.flipped_indices_].max() <= m[np.setdiff1d(everything, least.flipped_indices_)].min()
    assert m[most.flipped_indices_].min() >= m[np.setdiff1d(everything, most.flipped_indices_)].max()
    assert m[least.flipped_indices_].mean() < m[most.flipped_indices_].mean()


def test_boundary_new_label_is_the_surrogates_runner_up(three):
    X, y = three
    flipper, _, _ = _fit("boundary", X, y, n_flips=40, random_state=0)
    proba = flipper.surrogate_.predict_proba(X)
    proba[np.arange(len(y)), y] = -1
    np.testing.assert_array_equal(flipper.new_labels_, proba.argmax(axis=1)[flipper.flipped_indices_])


def test_entropy_flips_the_most_uncertain_rows(three):
    X, y = three
    flipper, _, _ = _fit("entropy", X, y, n_flips=40, random_state=0)
    h = flipper.entropy_
    rest = np.setdiff1d(np.arange(len(y)), flipper.flipped_indices_)
    assert h[flipper.flipped_indices_].min() >= h[rest].max()


def test_surrogate_subsample_is_used_on_large_inputs():
    X, y = make_classification(n_samples=3000, n_features=5, random_state=0)
    flipper, _, _ = _fit("boundary", X, y, max_fit_samples=500, n_flips=50, random_state=0)
    assert flipper.surrogate_[0].n_samples_seen_ == 500  # the scaler of the logreg pipeline
    assert flipper.n_flips_ == 50 and len(flipper.margins_) == 3000  # every row scored
    again, _, _ = _fit("boundary", X, y, max_fit_samples=500, n_flips=50, random_state=0)
    np.testing.assert_array_equal(flipper.flipped_indices_, again.flipped_indices_)


# -- cluster -----------------------------------------------------------------------------------
def test_cluster_flips_whole_clusters_and_one_partial(reviews):
    X, y = reviews
    flipper, _, _ = _fit("cluster", X, y, n_clusters=5, rate=0.25, random_state=0)
    record = flipper.clusters_
    assert sum(c["n_flipped"] for c in record) == flipper.n_flips_ == 75
    assert all(c["n_flipped"] == c["size"] for c in record[:-1])
    assert 0 < record[-1]["n_flipped"] <= record[-1]["size"]
    assert all(c["new_label"] != c["label"] for c in record)


def test_cluster_partial_cluster_takes_rows_nearest_its_centroid(reviews):
    X, y = reviews
    # One class, one cluster: the flipped rows must be the ones nearest the class centre.
    flipper, _, _ = _fit("cluster", X, y, n_clusters=1, source="positive", n_flips=20, random_state=0)
    pos = np.flatnonzero(y == "positive")
    Z = (X - X.mean(axis=0)) / X.std(axis=0)
    d = ((Z[pos] - Z[pos].mean(axis=0)) ** 2).sum(axis=1)
    np.testing.assert_array_equal(flipper.flipped_indices_, np.sort(pos[np.argsort(d)[:20]]))


def test_cluster_source_and_target(three):
    X, y = three
    flipper, _, _ = _fit("cluster", X, y, source=1, target=2, rate=0.4, random_state=0)
    assert set(flipper.original_labels_) == {1} and set(flipper.new_labels_) == {2}
    assert flipper.n_flips_ == 39  # 40% of the 99 source rows (39.6), rounded down
    flipper, _, _ = _fit("cluster", X, y, target=0, n_flips=50, random_state=0)
    assert 0 not in set(flipper.original_labels_) and set(flipper.new_labels_) == {0}
    with pytest.raises(InvalidParameterError, match="ClusterFlip: source class 'cat' is not in y"):
        ClusterFlip(source="cat").fit_resample(X, y)


def test_cluster_default_destination_is_the_nearest_class():
    # Three classes on a line: clusters of the middle class may go either way,
    # but the outer classes' clusters must go to the middle one.
    rng = np.random.RandomState(0)
    centres = np.array([[-10.0, 0.0], [0.0, 0.0], [10.0, 0.0]])
    y = np.repeat([0, 1, 2], 100)
    X = centres[y] + rng.normal(0, 1, size=(300, 2))
    flipper, _, _ = _fit("cluster", X, y, n_clusters=3, rate=1.0, random_state=0)
    moved = set(zip(flipper.original_labels_.tolist(), flipper.new_labels_.tolist()))
    assert (0, 1) in moved and (2, 1) in moved
    assert (0, 2) not in moved and (2, 0) not in moved


def test_cluster_minibatch_branch_is_seeded(reviews, monkeypatch):
    import flipguard.attacks._cluster as cluster_module

    monkeypatch.setattr(cluster_module, "MINIBATCH_ABOVE", 100)  # both classes (150 rows) take it
    X, y = reviews
    a, _, _ = _fit("cluster", X, y, max_fit_samples=120, rate=0.3, random_state=4)
    b, _, _ = _fit("cluster", X, y, max_fit_samples=120, rate=0.3, random_state=4)
    assert a.n_flips_ == 90
    np.testing.assert_array_equal(a.flipped_indices_, b.flipped_indices_)
    assert a.clusters_ == b.clusters_


def _illusion_gap(strategy: str, seed: int) -> float:
    """Poisoned-validation minus clean-holdout accuracy of HGB (the seeds' experiment)."""
    ds = make_sentiment_reviews(2000, random_state=0)
    X_store, X_hold, y_store, y_hold = train_test_split(ds.X, ds.y, test_size=0.25, random_state=101,
                                                        stratify=ds.y)
    _, y_poisoned = make_flipper(strategy, rate=0.2, random_state=seed).fit_resample(X_store, y_store)
    X_tr, X_val, y_tr, y_val = train_test_split(X_store, y_poisoned, test_size=0.25, random_state=102)
    with single_threaded():  # OpenMP threads crawl on a busy 2-core machine; the result is the same
        model = HistGradientBoostingClassifier(random_state=0).fit(X_tr, y_tr)
    return model.score(X_val, y_val) - model.score(X_hold, y_hold)


def test_cluster_flips_create_the_illusion_of_high_validation_accuracy():
    """Coherent flips are learnable: a poisoned validation split flatters the model. Random flips are not."""
    assert _illusion_gap("cluster", seed=0) >= 0.05
    assert _illusion_gap("random", seed=0) <= 0.0


# -- alfa --------------------------------------------------------------------------------------
def test_alfa_is_binary_only(three):
    X, y = three
    with pytest.raises(InvalidParameterError) as exc:
        ALFAFlip().fit_resample(X, y)
    assert str(exc.value) == ("ALFAFlip: ALFA attacks binary classifiers, but y has 3 classes (0, 1, 2); "
                              "use another strategy or keep two classes")


def test_alfa_solves_the_relaxed_program(reviews):
    X, y = reviews
    flipper, _, _ = _fit("alfa", X, y, n_flips=30, random_state=0)
    assert 1 <= flipper.n_iter_ <= flipper.max_iter
    w = flipper.flip_weights_
    assert w.shape == (len(y),) and np.all((w >= 0) & (w <= 1))
    assert w.sum() <= 30 + 1e-6  # the budget constraint of the linear program
    # The rows flipped are those the program weighted most.
    rest = np.setdiff1d(np.arange(len(y)), flipper.flipped_indices_)
    assert w[flipper.flipped_indices_].min() >= w[rest].max()


def _clean_accuracy_after(strategy, X, y, rate, seed, victim):
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.3, random_state=seed, stratify=y)
    _, y_bad = make_flipper(strategy, rate=rate, random_state=seed + 100).fit_resample(X_tr, y_tr)
    return make_model(victim, random_state=0).fit(X_tr, y_bad).score(X_te, y_te)


@pytest.mark.parametrize("victim", ["logreg", "linsvm"])
@pytest.mark.parametrize("data, rate, margin", [("reviews", 0.2, 0.01), ("breast_cancer", 0.15, 0.05)])
def test_alfa_hurts_a_linear_model_more_than_random_flips(data, rate, margin, victim):
    """Xiao, Xiao & Eckert (2012): at equal budget ALFA hurts a linear model more than random flips."""
    if data == "reviews":
        ds = make_sentiment_reviews(1000, random_state=0)
        X, y = ds.X, ds.y
    else:
        X, y = load_breast_cancer(return_X_y=True)
    seeds = (0, 1, 2)
    with single_threaded():
        alfa = np.mean([_clean_accuracy_after("alfa", X, y, rate, s, victim) for s in seeds])
        rand = np.mean([_clean_accuracy_after("random", X, y, rate, s, victim) for s in seeds])
    assert alfa < rand - margin, (alfa, rand)


# --- library conventions: flippers are imbalanced-learn samplers with fit --------------------

from imblearn.utils.estimator_checks import parametrize_with_checks as imblearn_checks  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks as sklearn_checks  # noqa: E402

_ALFA_BINARY = ("ALFA (Xiao et al. 2012) attacks binary classifiers and refuses the checks' 3-class data "
                "with a clear error")


def _expected_failures(estimator):
    if isinstance(estimator, ALFAFlip):
        return {name: _ALFA_BINARY for name in (
            "check_samplers_fit_resample", "check_samplers_sparse", "check_samplers_pandas",
            "check_samplers_pandas_sparse", "check_samplers_list", "check_samplers_multiclass_ova",
            "check_samplers_preserve_dtype", "check_samplers_sample_indices", "check_samplers_2d_target")}
    return {}


@imblearn_checks([make_flipper(name, random_state=0) for name in ALL],
                 expected_failed_checks=_expected_failures)
def test_flippers_pass_imbalanced_learn_sampler_checks(estimator, check):
    with single_threaded():
        check(estimator)


@sklearn_checks([RandomFlip(random_state=0), ClusterFlip(random_state=0)])
def test_flippers_pass_scikit_learn_estimator_checks(estimator, check):
    with single_threaded():
        check(estimator)


def test_fit_returns_self_and_records_what_fit_resample_does(reviews):
    X, y = reviews
    f = RandomFlip(rate=0.2, random_state=3)
    assert f.fit(X, y) is f
    g = RandomFlip(rate=0.2, random_state=3)
    g.fit_resample(X, y)
    assert f.flipped_indices_.tolist() == g.flipped_indices_.tolist()
    assert sum(f.sampling_strategy_.values()) == f.n_flips_ and f.n_features_in_ == X.shape[1]
    assert f.get_feature_names_out().tolist() == [f"x{i}" for i in range(X.shape[1])]


def test_flippers_work_inside_an_imbalanced_learn_pipeline(reviews):
    from imblearn.pipeline import make_pipeline

    X, y = reviews
    pipe = make_pipeline(RandomFlip(rate=0.4, random_state=0), LogisticRegression()).fit(X, y)
    assert pipe.score(X, y) < LogisticRegression().fit(X, y).score(X, y)


def test_pair_noise_follows_the_classes_own_order_or_the_given_pairs():
    """Han et al. (2018) pair flipping: each class goes to one partner, never alphabetically."""
    names = ["zero", "one", "two", "three"]
    y = np.array([names[i % 4] for i in range(400)], dtype=object)
    f = NoiseMatrixFlip(kind="pair", rate=0.2, random_state=0)
    f.fit_resample(None, y)
    assert set(zip(f.original_labels_, f.new_labels_)) == \
        {("zero", "one"), ("one", "two"), ("two", "three"), ("three", "zero")}
    f = NoiseMatrixFlip(kind="pair", pairs={"zero": "two"}, rate=0.5, random_state=0)
    f.fit_resample(None, y)
    assert set(zip(f.original_labels_, f.new_labels_)) == {("zero", "two")} and f.n_flips_ == 50
    f = NoiseMatrixFlip(kind="pair", pairs=[(3, 1)], n_flips=7, random_state=0)
    f.fit_resample(None, np.arange(40) % 4)
    assert set(zip(f.original_labels_.tolist(), f.new_labels_.tolist())) == {(3, 1)} and f.n_flips_ == 7
    with pytest.raises(InvalidParameterError, match="pairs names class 'ten'"):
        NoiseMatrixFlip(kind="pair", pairs={"ten": "one"}).fit_resample(None, y)
    with pytest.raises(InvalidParameterError, match="maps a class onto itself"):
        NoiseMatrixFlip(kind="pair", pairs={"one": "one"}).fit_resample(None, y)


@pytest.mark.parametrize("y", [np.array([0, 1, np.nan, 1, 0.0, 1]),
                               np.array(["a", "b", None, "a", "b", "a"], dtype=object),
                               np.array(["a", "b", float("nan"), "a", "b", "a"], dtype=object)],
                         ids=["float-nan", "object-none", "object-nan"])
def test_missing_labels_are_named_as_the_auditor_names_them(y):
    """A float NaN label reached scikit-learn's type_of_target first: a bare 'Input contains NaN'
    ValueError instead of flipguard's DataError with the rows."""
    from flipguard.exceptions import DataError

    with pytest.raises(DataError, match=r"y has 1 missing label\(s\) \(None/NaN\) at rows 2 \(0-based\)"):
        RandomFlip(rate=0.2, random_state=0).fit_resample(None, y)
