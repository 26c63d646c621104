"""Regression tests for defects of the attack and assess layers a reviewer reproduced: seeded
attacks that picked a scikit-learn split's test rows, the boundary view's thinning, repeated sweep
values, budget rounding and validation, CSV spelling (BOM, booleans), the terminal spread, the
headline's share wording, ``--flips`` names and quoted per-class rates.  Small data, fast."""

from __future__ import annotations

import json
import re
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold, train_test_split

from flipguard.assess import assess
from flipguard.attacks import NoiseMatrixFlip, RandomFlip, make_flipper
from flipguard.data import make_sentiment_reviews
from flipguard.exceptions import InvalidParameterError

SEEDED_BY_PERMUTATION = ["random", "targeted", "noise_matrix", "cluster"]


def _error(r) -> str:
    assert r.exit_code == 2 and r.stdout == "" and r.stderr.count("\n") == 1, r
    return r.stderr


@pytest.fixture(scope="module")
def reviews():
    return make_sentiment_reviews(300, random_state=0)


@pytest.fixture
def reviews_csv(tmp_path, reviews):
    import pandas as pd

    d = pd.DataFrame(reviews.X, columns=list(reviews.feature_names))
    d["sentiment"] = reviews.labels(reviews.y)
    path = tmp_path / "reviews.csv"
    d.to_csv(path, index=False)
    return path


# -- 1. a seeded attack is independent of a split seeded alike -------------------------------
def test_random_flip_is_not_the_test_split_of_the_same_seed():
    y = np.array([0, 1] * 200)
    for s in range(10):
        f = RandomFlip(rate=0.2, random_state=s).fit(None, y)
        _, test = train_test_split(np.arange(400), test_size=0.25, random_state=s)
        share = f.flip_mask_[test].sum() / f.n_flips_
        assert 0.1 <= share <= 0.4, (s, share)  # an independent draw puts about 25 % there


@pytest.mark.parametrize("name", SEEDED_BY_PERMUTATION)
def test_every_permutation_strategy_is_independent_of_split_seeds(name):
    X = np.random.RandomState(99).randn(400, 3)
    y = np.array([0, 1] * 200)
    shares = []
    for s in range(4):
        f = make_flipper(name, rate=0.2, random_state=s).fit(X, y)
        _, test = train_test_split(np.arange(400), test_size=0.25, random_state=s)
        shares.append(f.flip_mask_[test].sum() / f.n_flips_)
        for _, fold in KFold(4, shuffle=True, random_state=s).split(X):
            assert f.flip_mask_[fold].sum() < f.n_flips_  # never one fold's rows
    assert all(0.05 <= v <= 0.5 for v in shares), shares


def test_random_state_instance_is_used_as_given():
    y = np.array([0, 1] * 50)
    f = RandomFlip(n_flips=10, random_state=np.random.RandomState(5)).fit(None, y)
    assert f.flipped_indices_.tolist() == sorted(np.random.RandomState(5).choice(100, 10, replace=False))
    a = RandomFlip(n_flips=10, random_state=5).fit(None, y)
    b = RandomFlip(n_flips=10, random_state=5).fit(None, y)
    assert a.flipped_indices_.tolist() == b.flipped_indices_.tolist()  # still one stream per seed
    assert a.flipped_indices_.tolist() != f.flipped_indices_.tolist()


# -- 2. the boundary view samples flipped and unflipped rows within their caps --------------
def test_view_rows_never_ask_for_more_rows_than_exist():
    from flipguard.assess._runner import _view_rows

    rng = np.random.RandomState(0)
    for n_hit in (0, 5, 50, 70, 80, 95, 100):
        flipped = np.zeros(100, dtype=bool)
        flipped[rng.choice(100, n_hit, replace=False)] = True
        keep = _view_rows(flipped, 60, np.random.RandomState(1))
        assert len(keep) == 60 and len(np.unique(keep)) == 60
        hit = int(flipped[keep].sum())
        assert hit == min(n_hit, max(30, 60 - (100 - n_hit)))  # half each, the other kind fills
    few = _view_rows(np.ones(40, dtype=bool), 60, np.random.RandomState(1))
    assert few.tolist() == list(range(40))


def test_boundary_view_with_few_unflipped_rows_does_not_crash_and_samples_at_random():
    from flipguard.assess._runner import _boundary_view

    rng = np.random.RandomState(0)
    X = rng.randn(200, 2)
    y = (X[:, 0] > 0).astype(int)
    y_pois = y.copy()
    y_pois[:160] = 1 - y_pois[:160]  # 80 % flipped, the first rows in row order
    clean = LogisticRegression().fit(X, y)
    pois = LogisticRegression().fit(X, y_pois)
    ds = SimpleNamespace(n_features=2, feature_names=["a", "b"], classes=np.array([0, 1]))
    view = _boundary_view(ds, X, y, y_pois, clean, pois, X, y, "random", 0.8, "logreg",
                          resolution=8, max_points=100, seed=0)
    assert len(view.points) == 100 and view.n_rows == 200 and view.n_flipped == 160
    assert view.flip_mask.sum() == 60  # 100 - 40 unflipped rows (all of them)
    kept = {tuple(p) for p in view.points[view.flip_mask]}
    first = {tuple(p) for p in X[:60]}
    assert kept != first  # a random sample of the flipped rows, not the first ones


def test_assess_with_more_than_3000_training_rows_and_few_unflipped():
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=5400, n_features=2, n_informative=2, n_redundant=0,
                               random_state=0)
    a = assess((X, y), strategies=["random"], rates=[0.6], seeds=1, views="auto", n_jobs=1, verbose=False)
    (view,) = a.views
    assert view.n_rows > 3000 and len(view.points) == 3000
    assert view.flip_mask.sum() == 3000 - (view.n_rows - view.n_flipped)  # every unflipped row kept


# -- 3. repeated strategies and rates are run once --------------------------------------------
def test_assess_runs_a_repeated_rate_or_strategy_once(reviews):
    with pytest.warns(UserWarning) as caught:
        a = assess(reviews, strategies=["random", "random"], rates=[0.1, 0.1], seeds=1, views=None,
                   n_jobs=1, verbose=False)
    said = [str(w.message) for w in caught]
    assert "strategies repeat random: each is run once" in said and "rates repeat 0.1: each is run once" in said
    assert a.config["strategies"] == ["random"] and a.config["rates"] == [0.1]
    assert [r["n_seeds"] for r in a.summary()] == [1, 1]
    assert len(a.runs) == 2


def test_cli_assess_repeated_values_are_not_extra_seeds(cli, reviews_csv, tmp_path):
    r = cli("assess", reviews_csv, "--label", "sentiment", "--strategies", "random,cluster,random",
            "--rates", "0.1,0.1", "--seeds", "1", "--out", tmp_path / "a", "--no-report", "-j", "1")
    assert r.exit_code == 0, r
    assert "note: --strategies repeats random; each is run once" in r.stderr
    assert "note: --rates repeats 0.1; each is run once" in r.stderr
    doc = json.loads((tmp_path / "a" / "assessment.json").read_text())
    assert {s["n_seeds"] for s in doc["summary"]} == {1} and len(doc["summary"]) == 3
    assert "± 0.000" not in r.stdout


# -- 4. budgets are rounded down ------------------------------------------------------------
def test_rate_budgets_round_down():
    y = np.array([0, 1] * 5)
    assert RandomFlip(rate=0.15, random_state=0).fit(None, y).n_flips_ == 1   # 1.5 -> 1
    assert RandomFlip(rate=0.25, random_state=0).fit(None, y).n_flips_ == 2   # 2.5 -> 2
    assert RandomFlip(rate=0.35, random_state=0).fit(None, y).n_flips_ == 3   # 3.5 -> 3 (was 4)
    assert RandomFlip(rate=0.29, random_state=0).fit(None, np.array([0, 1] * 50)).n_flips_ == 29  # not 28
    per = RandomFlip(rate={0: 0.5, 1: 0.7}, random_state=0).fit(None, np.array([0, 1] * 5))
    assert per.sampling_strategy_ == {0: 2, 1: 3}                            # 2.5 -> 2, 3.5 -> 3
    pair = NoiseMatrixFlip(kind="pair", pairs={0: 1}, rate=0.25, random_state=0).fit(None, np.repeat([0, 1, 2], 10))
    assert pair.n_flips_ == 2                                                # 2.5 of the 10 paired rows


def test_cli_rate_that_rounds_down_to_zero_warns(cli, tmp_path, reviews_csv):
    r = cli("attack", reviews_csv, "--label", "sentiment", "--rate", "0.003", "--out", tmp_path / "p.csv")
    assert r.exit_code == 0, r  # 0.9 of a row: no flip (rounding to nearest flipped one)
    assert "warning: --rate 0.003 rounds to 0 flips on this data (300 rows)" in r.stderr


# -- 5. per-class budgets are validated -----------------------------------------------------
@pytest.mark.parametrize("params, words", [
    ({"rate": {0: -0.5}}, "the rate of class 0 must be a fraction in [0, 1]; got -0.5"),
    ({"rate": {0: float("nan")}}, "the rate of class 0 must be a fraction in [0, 1]; got nan"),
    ({"rate": {1: 1.5}}, "the rate of class 1 must be a fraction in [0, 1]; got 1.5"),
    ({"n_flips": {0: -3}}, "n_flips of class 0 must be a whole number of rows >= 0; got -3"),
    ({"n_flips": {0: 2.7}}, "n_flips of class 0 must be a whole number of rows >= 0; got 2.7"),
    ({"n_flips": {0: float("inf")}}, "n_flips of class 0 must be a whole number of rows >= 0; got inf"),
])
def test_per_class_budgets_are_validated(params, words):
    with pytest.raises(InvalidParameterError) as exc:
        RandomFlip(random_state=0, **params).fit(None, np.array([0, 1] * 10))
    assert str(exc.value) == f"RandomFlip: {words}"


def test_per_class_whole_float_count_is_accepted():
    f = RandomFlip(n_flips={0: 2.0, 1: np.int64(1)}, random_state=0).fit(None, np.array([0, 1] * 10))
    assert f.sampling_strategy_ == {0: 2, 1: 1}


# -- 6. a CSV with a byte order mark is edited in place --------------------------------------
def test_bom_csv_keeps_its_bytes_except_the_flipped_labels(cli, tmp_path):
    src = tmp_path / "fmt_bom.csv"
    with open(src, "w", encoding="utf-8-sig", newline="") as fh:
        fh.write("id,name,x,label\n")
        for i in range(40):
            fh.write(f'{i},"Smith, J{i}",1e3,{"yes" if i % 2 else "no"}\n')
    out = tmp_path / "p.csv"
    r = cli("attack", src, "--label", "label", "--id", "id", "--rate", "0.2", "--out", out)
    assert r.exit_code == 0, r
    before, after = src.read_bytes(), out.read_bytes()
    assert after.startswith(b"\xef\xbb\xbfid,name,x,label\n")
    old_lines, new_lines = before.split(b"\n"), after.split(b"\n")
    changed = [i for i, (a, b) in enumerate(zip(old_lines, new_lines)) if a != b]
    assert len(old_lines) == len(new_lines) and len(changed) == 8
    for i in changed:
        assert old_lines[i].rsplit(b",", 1)[0] == new_lines[i].rsplit(b",", 1)[0]  # "Smith, J3",1e3 kept


# -- 7. the flip list spells boolean labels as the input does --------------------------------
def test_flips_file_uses_the_inputs_boolean_spelling(cli, tmp_path):
    src = tmp_path / "b.csv"
    src.write_text("x,ok\n" + "".join(f"{i},{'True' if i % 3 else 'False'}\n" for i in range(30)))
    flips = tmp_path / "flips.csv"
    r = cli("attack", src, "--label", "ok", "--rate", "0.3", "--out", tmp_path / "p.csv", "--flips", flips)
    assert r.exit_code == 0, r
    text = flips.read_text()
    assert "True" in text and "False" in text
    assert "true" not in text and "false" not in text


# -- 8. the terminal table shows the spread of drop and gap ----------------------------------
def test_terminal_summary_shows_spread_of_drop_and_gap(cli, reviews_csv, tmp_path):
    r = cli("assess", reviews_csv, "--label", "sentiment", "--strategies", "random", "--rates", "0.1",
            "--seeds", "2", "--out", tmp_path / "a", "--no-report", "-j", "1")
    assert r.exit_code == 0, r
    row = next(line for line in r.stdout.splitlines() if "random" in line)
    assert row.count("±") == 4, row  # validation, holdout, acc drop, illusion gap
    assert re.search(r"[+-]\d\.\d{3} ± \d\.\d{3}\s*│\s*[+-]\d\.\d{3} ± \d\.\d{3}", row), row


# -- 9. the headline says what the flipped share is a share of --------------------------------
def test_headline_share_names_training_and_validation_rows():
    from flipguard.report._assessment import _flipped_text

    same = _flipped_text({"rate": 0.2, "strategy": "random", "flip_rate": {"mean": 0.2}})
    assert same == "20% of the training and validation labels flipped"
    other = _flipped_text({"rate": 0.3, "strategy": "targeted", "flip_rate": {"mean": 0.12}})
    assert "flipped 12.0% of the training and validation labels" in other
    assert "of the training labels" not in same + other


# -- 10. --flips needs an extension -----------------------------------------------------------
def test_flips_without_extension_exits_2(cli, tmp_path, reviews_csv):
    r = cli("attack", reviews_csv, "--label", "sentiment", "--rate", "0.1", "--out", tmp_path / "p.csv",
            "--flips", tmp_path / "flips")
    assert "--flips" in _error(r) and "extension" in r.stderr
    assert not (tmp_path / "flips").exists() and not (tmp_path / "p.csv").exists()


# -- 11. per-class --rate names a class containing a comma by quoting it ----------------------
def test_per_class_rate_quotes_a_class_with_a_comma(cli, tmp_path):
    src = tmp_path / "c.csv"
    src.write_text("x,cls\n" + "".join(f'{i},{"a" if i % 2 else chr(34) + "b, x y" + chr(34)}\n'
                                       for i in range(40)))
    r = cli("attack", src, "--label", "cls", "--rate", '"b, x y"=0.5', "--out", tmp_path / "p.csv", "--json")
    assert r.exit_code == 0, r
    doc = json.loads(r.stdout)
    assert doc["transitions"] == [{"from": "b, x y", "to": "a", "count": 10}]
    bad = cli("attack", src, "--label", "cls", "--rate", "b=0.5", "--out", tmp_path / "q.csv")
    assert "(classes: 'a', 'b, x y'" in _error(bad)


def test_rate_helpers_do_not_warn_on_unique_values(reviews):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        assess(reviews, strategies=["random"], rates=[0.1], seeds=[0], views=None, n_jobs=1, verbose=False)
