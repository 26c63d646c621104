"""Columns that carry the observed label: row identifiers, label-sorted sequences, copies.

The failure they prevent, measured: breast cancer with 10 % random flips,
sorted by label and written with pandas' default ``to_csv`` (index
included), took the default audit from F1 0.93 to 0.00 and its verdict
to "consistent with clean labels": every model learnt the observed labels,
flips included, from the row number.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer

from flipguard.data import load
from flipguard.data._leaks import determines_label, follows_row_order, is_row_identifier, looks_like_id_name


@pytest.fixture(scope="module")
def sorted_flipped():
    """Breast cancer, 10 % of labels flipped at random, rows sorted by the observed label."""
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    rng = np.random.default_rng(1)
    flip = rng.random(len(y)) < 0.10
    y = np.where(flip, 1 - y.to_numpy(), y.to_numpy())
    df = X.copy()
    df["target"] = y
    df["_flipped"] = flip
    df = df.sort_values("target", kind="stable").reset_index(drop=True)
    return df.drop(columns="_flipped"), df["_flipped"].to_numpy()


def _f1(flags, truth) -> float:
    return 2 * np.count_nonzero(flags & truth) / (flags.sum() + truth.sum())


# -- the checks ----------------------------------------------------------------------------
def test_row_identifier_is_unique_integers_under_an_id_name():
    rng = np.random.default_rng(0)
    n = 200
    gaps = np.sort(rng.choice(10_000, n, replace=False)).astype(float)
    assert is_row_identifier(gaps, "customer_id", False)
    assert is_row_identifier(gaps, "", False)  # pandas' unnamed index
    assert is_row_identifier(rng.permutation(n).astype(float), "idx", False)
    assert not is_row_identifier(gaps, "income", False)  # unique integers under a feature's name
    assert not is_row_identifier(np.arange(n, dtype=float), "day", False)  # a day number is a feature
    dup = np.arange(n, dtype=float)
    dup[5] = 6
    assert not is_row_identifier(dup, "id", False)
    assert not is_row_identifier(np.arange(n) + 0.5, "id", False)  # not integers
    assert not is_row_identifier(np.arange(n, dtype=float), "id", True)  # had missing values
    assert not is_row_identifier(np.arange(30, dtype=float), "id", False)  # too few rows to tell


@pytest.mark.parametrize("name, expected", [
    ("id", True), ("ID", True), ("user_id", True), ("userId", True), ("row_number", True),
    ("Unnamed: 0", True), ("index", True), ("", True), ("idx", True), ("order_no", True), ("seq", True),
    ("paid", False), ("valid", False), ("idle_time", False), ("width", False),
])
def test_id_names(name, expected):
    assert looks_like_id_name(name) is expected


def test_determines_label_sees_step_functions_and_nothing_else():
    rng = np.random.default_rng(0)
    n = 2000
    y = np.repeat([0, 1, 2], [700, 800, 500])
    assert determines_label(np.arange(n, dtype=float), y, 3)  # a position in a label-sorted file
    assert determines_label(y * 10.0 + 3, y, 3)  # a copy of the label
    shuffled = rng.permutation(n)
    assert not determines_label(shuffled.astype(float), y, 3)  # a position in a shuffled file
    assert not determines_label(rng.integers(0, 2, n).astype(float), y, 3)  # an unrelated binary column
    near = np.arange(n, dtype=float)
    near[[10, 900]] = near[[900, 10]]  # two rows out of place: within 0.1 %
    assert determines_label(near, y, 3)
    far = np.arange(n, dtype=float)
    swap = rng.choice(n, 40, replace=False)
    far[swap] = far[rng.permutation(swap)]  # 2 % out of place
    assert not determines_label(far, y, 3)


def test_a_rare_class_is_not_determined_by_chance():
    """With 0.1 % positives, any column 'explains' 99.9 % of the rows; that is not a leak."""
    rng = np.random.default_rng(0)
    n = 20_000
    y = np.zeros(n, dtype=np.int64)
    y[rng.choice(n, 20, replace=False)] = 1
    assert not determines_label(rng.normal(size=n), y, 2)
    assert not determines_label(np.arange(n, dtype=float), y, 2)  # a row number, rows not sorted
    few = np.zeros(n, dtype=np.int64)
    few[rng.choice(n, 2, replace=False)] = 1  # fewer than 5 rows of a class: no verdict either way
    assert not determines_label(np.arange(n, dtype=float), few, 2)


def test_follows_row_order():
    rising = np.repeat(np.arange(10.0), 2)  # ties allowed: several rows per load second
    assert follows_row_order(rising, 2)
    assert follows_row_order(rising[::-1], 2)
    wobble = rising.copy()
    wobble[[3, 7]] = wobble[[7, 3]]
    assert not follows_row_order(wobble, 2)
    assert not follows_row_order(np.ones(20), 2)
    assert not follows_row_order(np.repeat([0.0, 1.0], 10), 2)  # a sorted copy of the label


# -- loading -------------------------------------------------------------------------------
def test_load_drops_identifiers_and_sorted_sequences_and_marks_copies(tmp_path, sorted_flipped):
    df, _ = sorted_flipped
    n = len(df)
    df = df.copy()
    df.insert(0, "ticket", 1000 + 7 * np.arange(n))  # a sequence with gaps, rising with the rows
    df["loaded_at"] = pd.date_range("2024-01-01", periods=n, freq="37s")
    df["target_code"] = df["target"] * 2 + 1
    path = tmp_path / "sorted.csv"
    df.to_csv(path)  # pandas writes its index as an unnamed first column
    ds = load(path, label="target")
    assert ds.encoding[""].startswith("dropped: row identifier (unique integers 0 to 568)")
    assert ds.encoding["ticket"].startswith("dropped: rises with the row order")
    assert ds.encoding["loaded_at"].startswith("dropped: rises with the row order")
    assert ds.encoding["target_code"] == "numeric; determines the observed label on its own"
    assert ds.encoding["mean radius"] == "numeric"
    assert "target_code" in ds.feature_names and "ticket" not in ds.feature_names
    assert ds.X.shape[1] == 31  # 30 measurements + the copy
    kept = load(path, label="target", keep=["ticket"])
    assert "ticket" in kept.feature_names
    assert kept.encoding["ticket"].endswith("determines the observed label on its own")  # kept, still named
    chosen = load(path, label="target", features=["", "mean radius"])  # an explicit choice is obeyed
    assert chosen.feature_names == ["", "mean radius"]


def test_load_leaves_ordinary_tables_alone(tmp_path):
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    df = X.copy()
    df["target"] = y
    df.insert(0, "id", np.arange(len(df)))
    path = tmp_path / "bc.csv"
    df.to_csv(path, index=False)
    ds = load(path, label="target", id="id")  # the id named as such is no feature anyway
    assert all(how == "numeric" for how in ds.encoding.values())
    plain = load(path, label="target")
    assert plain.encoding["id"].startswith("dropped: row identifier")
    assert sum(how == "numeric" for how in plain.encoding.values()) == 30


# -- the audit -----------------------------------------------------------------------------
def test_audit_of_a_label_sorted_file_with_its_index_finds_the_flips(tmp_path, cli, sorted_flipped):
    df, truth = sorted_flipped
    path = tmp_path / "sorted.csv"
    df.to_csv(path)
    before = path.read_bytes()
    res = cli("audit", path, "--label", "target", "--format", "json")
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["verdict"]["status"] == "poisoned"
    flags = np.array([r["flagged"] for r in out["rows"]])
    assert _f1(flags, truth) >= 0.8
    assert any("unnamed column" in w and "row identifier" in w for w in out["warnings"])
    assert path.read_bytes() == before
    # --keep puts the index back: the flips disappear, and the verdict says why it cannot tell.
    kept = json.loads(cli("audit", path, "--label", "target", "--format", "json", "--keep", "").stdout)
    assert np.array([r["flagged"] for r in kept["rows"]]).sum() <= 5
    assert kept["verdict"]["status"] == "inconclusive"
    assert kept["verdict"]["label_columns"] == [""]


def test_a_copy_of_the_label_never_gets_a_clean_verdict(tmp_path, cli, sorted_flipped):
    df, _ = sorted_flipped
    df = df.assign(target_copy=df["target"] * 2 + 1).sample(frac=1.0, random_state=0)
    path = tmp_path / "copy.csv"
    df.to_csv(path, index=False)
    res = cli("audit", path, "--label", "target", "--format", "json")
    assert res.exit_code == 0, res.stderr
    verdict = json.loads(res.stdout)["verdict"]
    assert verdict["status"] == "inconclusive"
    assert verdict["label_columns"] == ["target_copy"]
    assert "target_copy" in verdict["reason"]
    gated = cli("audit", path, "--label", "target", "--fail-on", "inconclusive")
    assert gated.exit_code == 1


def test_other_commands_say_what_they_left_out(tmp_path, cli, sorted_flipped):
    df, _ = sorted_flipped
    path = tmp_path / "sorted.csv"
    df.to_csv(path)
    res = cli("assess", path, "--label", "target", "--strategies", "random", "--rates", "0.1", "--seeds", "1",
              "--out", tmp_path / "assess", "--no-report", "--json")
    assert res.exit_code == 0, res.stderr
    assert "looks like a row identifier" in res.stderr
    bad = cli("audit", path, "--label", "target", "--keep", "nope")
    assert bad.exit_code == 2
    assert "keep column 'nope' not found" in bad.stderr


def test_a_partitioned_audit_leaves_out_integer_columns_named_like_ids(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from flipguard.detection._partitioned import audit_partitioned

    rng = np.random.default_rng(0)
    root = tmp_path / "lake"
    root.mkdir()
    for i in range(2):
        X = rng.normal(size=(300, 3))
        y = np.where(X[:, 0] > 0, "a", "b")
        pq.write_table(pa.table({"record_id": np.arange(i * 300, (i + 1) * 300), "x0": X[:, 0], "x1": X[:, 1],
                                 "x2": X[:, 2], "y": y}), root / f"p{i}.parquet")
    res = audit_partitioned(root, label="y", out=tmp_path / "out", random_state=0)
    assert any("record_id" in w and "row identifiers" in w for w in res.warnings)
    named = audit_partitioned(root, label="y", id="record_id", out=tmp_path / "out2", random_state=0)
    assert not any("row identifiers" in w for w in named.warnings)
    assert named.n_flagged == res.n_flagged  # the same three features either way


def test_an_embeddings_file_with_its_index_written_does_not_feed_the_row_number(tmp_path, cli, sorted_flipped):
    """--features FILE written by pandas (index included) beside a label-sorted data file: the
    index would number the sorted rows; it is left out and named."""
    df, truth = sorted_flipped
    data = tmp_path / "labels.csv"
    df[["target"]].to_csv(data, index=False)
    emb = tmp_path / "emb.csv"
    df.drop(columns="target").to_csv(emb)  # 30 "embedding" dimensions + pandas' index
    res = cli("audit", data, "--label", "target", "--features", emb, "--format", "json")
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)
    assert any("looks like a row identifier" in w for w in out["warnings"])
    flags = np.array([r["flagged"] for r in out["rows"]])
    assert _f1(flags, truth) >= 0.8 and out["verdict"]["status"] == "poisoned"
