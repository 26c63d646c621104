"""The data layer: every source type, encodings, label vocabularies and every bad input."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from sklearn.svm import LinearSVC

from flipguard.data import load, make_sentiment_reviews, write_table
from flipguard.exceptions import DataError, FlipguardError


def _small_table():
    return pa.table({
        "rid": [10, 11, 12, 13, 14, 15],
        "amount": [1.0, 2.5, None, 4.0, 5.0, 6.0],
        "colour": ["red", "blue", "red", "green", "blue", "red"],
        "flag": [True, False, True, False, True, False],
        "label": ["fraud", "ok", "ok", "fraud", "ok", "ok"],
    })


def test_load_table_encodes_columns_and_keeps_vocabulary():
    ds = load(_small_table(), label="label", id="rid")
    assert ds.classes.tolist() == ["fraud", "ok"]
    assert ds.y.tolist() == [0, 1, 1, 0, 1, 1]
    assert ds.ids.tolist() == [10, 11, 12, 13, 14, 15]
    assert ds.feature_names == ["amount", "colour=blue", "colour=green", "colour=red", "flag"]
    # The missing amount is imputed with the median of the others (4.0) and recorded.
    assert ds.X[2, 0] == 4.0
    assert "imputed" in ds.encoding["amount"]
    assert ds.encoding["colour"].startswith("one-hot")
    np.testing.assert_array_equal(ds.X[:, 1:4].sum(axis=1), 1.0)
    assert ds.labels().tolist() == ["fraud", "ok", "ok", "fraud", "ok", "ok"]
    assert ds.class_counts() == {"fraud": 2, "ok": 4}


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_load_files_round_trip_through_write_table(tmp_path, fmt):
    tbl = _small_table()
    path = tmp_path / f"d.{fmt}"
    write_table(tbl, path)
    ds = load(str(path), label="label", id="rid")
    assert ds.format == fmt and ds.n_samples == 6 and ds.source == str(path)
    flipped = ds.y.copy()
    flipped[0] = 1
    out = tmp_path / f"p.{fmt}"
    write_table(ds.to_table(flipped), out)
    back = load(str(out), label="label", id="rid")
    assert back.labels().tolist() == ["ok", "ok", "ok", "fraud", "ok", "ok"]
    assert back.table.schema.field("label").type == ds.table.schema.field("label").type
    np.testing.assert_array_equal(back.X, ds.X)


def test_load_dataframe_and_arrays_and_int_bool_labels():
    df = pd.DataFrame({"a": [0.1, 0.2, 0.3, 0.4], "b": [1, 2, 3, 4], "y": [True, False, True, False]})
    ds = load(df, label="y")
    assert ds.classes.tolist() == [False, True] and ds.format == "dataframe"
    ds2 = load((np.arange(8).reshape(4, 2), np.array([3, 7, 3, 7])))
    assert ds2.classes.tolist() == [3, 7] and ds2.y.tolist() == [0, 1, 0, 1]
    assert ds2.feature_names == ["x0", "x1"]


def test_text_column_becomes_tfidf_features():
    tbl = pa.table({
        "review": ["great product love it", "terrible waste of money", "love love love",
                   "awful terrible", "great value", "waste"],
        "sentiment": ["pos", "neg", "pos", "neg", "pos", "neg"],
    })
    ds = load(tbl, label="sentiment", text="review")
    assert "review:love" in ds.feature_names and "review:terrible" in ds.feature_names
    assert ds.encoding["review"].startswith("tfidf")
    j = ds.feature_names.index("review:love")
    assert ds.X[2, j] > 0 and ds.X[1, j] == 0


def test_high_cardinality_string_column_is_dropped_and_recorded():
    n = 200
    tbl = pa.table({"uuid": [f"id-{i}" for i in range(n)], "x": np.arange(n, dtype=float),
                    "y": np.arange(n) % 2})
    ds = load(tbl, label="y")
    assert ds.feature_names == ["x"]
    assert ds.encoding["uuid"].startswith("dropped")


def test_several_text_columns_and_sparse_features():
    tbl = pa.table({
        "title": ["good", "bad", "good", "bad", "fine", "poor"],
        "review": ["great product love it", "terrible waste of money", "love love love",
                   "awful terrible", "great value", "waste"],
        "price": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        "sentiment": ["pos", "neg", "pos", "neg", "pos", "neg"],
    })
    dense = load(tbl, label="sentiment", text=["review", "title"])
    sparse = load(tbl, label="sentiment", text=["review", "title"], sparse=True)
    assert not dense.is_sparse and sparse.is_sparse and sparse.X.format == "csr"
    assert np.array_equal(sparse.X.toarray(), dense.X)
    assert dense.feature_names[0] == "price"
    assert {f.split(":")[0] for f in dense.feature_names[1:]} == {"review", "title"}
    assert set(dense.vectorizers) == {"review", "title"}
    with pytest.raises(DataError, match="text column 'body' not found"):
        load(tbl, label="sentiment", text=["review", "body"])
    with pytest.raises(DataError, match="text column 'sentiment' is also the label column"):
        load(tbl, label="sentiment", text="sentiment")


def test_dropped_free_text_is_listed_and_the_error_names_text():
    from flipguard.data import dropped_text_columns

    n = 200
    tbl = pa.table({"note": [f"note number {i}" for i in range(n)], "x": np.arange(n, dtype=float),
                    "y": np.arange(n) % 2})
    assert dropped_text_columns(load(tbl, label="y")) == [("note", 200)]
    assert dropped_text_columns(load(tbl, label="y", text="note")) == []
    with pytest.raises(DataError) as exc:
        load(tbl.select(["note", "y"]), label="y")
    assert str(exc.value) == ("<arrow table>: no usable feature column (note: dropped: 200 distinct "
                              "strings); for free text use --text note (text='note' in Python)")


@pytest.mark.parametrize("values, message", [
    ([0.5, 1.25, 2.0, 3.5] * 10, "looks continuous (4 distinct numbers, e.g. 0.5)"),
    (list(range(40)), "looks continuous or like an identifier (40 distinct values in 40 rows)"),
])
def test_continuous_labels_are_refused(values, message):
    tbl = pa.table({"x": np.arange(len(values), dtype=float), "y": values})
    with pytest.raises(DataError, match=re.escape(message)):
        load(tbl, label="y")


def test_many_classes_with_enough_rows_each_are_labels():
    y = np.repeat(np.arange(30), 5)  # 30 classes x 5 rows: a class label, not a measurement
    x = np.random.default_rng(0).normal(size=150)  # not a row number: that would carry the sorted label
    ds = load(pa.table({"x": x, "y": y}), label="y")
    assert ds.n_classes == 30
    ds = load(pa.table({"x": np.arange(6, dtype=float), "y": [0.0, 1.0, 2.0] * 2}), label="y")
    assert ds.classes.tolist() == [0.0, 1.0, 2.0]


def test_dataset_repr_is_a_short_summary():
    n = 1000
    tbl = pa.table({"id": np.arange(n), "x": np.arange(n, dtype=float), "colour": ["red", "blue"] * (n // 2),
                    "note": [f"n{i}" for i in range(n)], "y": ["a", "b", "c", "d"] * (n // 4)})
    text = repr(load(tbl, label="y", id="id"))
    assert text == ("LabeledDataset: 1000 rows x 3 features (dense) from <arrow table> (table)\n"
                    "  label 'y': 4 classes (a 250, b 250, c 250, d 250)\n"
                    "  ids: 'id'\n"
                    "  columns: numeric: x; one-hot: colour; dropped: note (1000 distinct strings)")


@pytest.mark.parametrize("command", ["attack", "assess", "clean", "certify"])
def test_cli_notes_a_dropped_free_text_column(cli, tmp_path, command):
    n = 60
    path = tmp_path / "d.csv"
    rng = np.random.RandomState(0)
    x = rng.normal(size=n)
    pacsv.write_csv(pa.table({"x": x, "comment": [f"comment {i}" for i in range(n)],
                              "y": np.where(x > 0, "p", "n")}), path)
    extra = {"attack": ["--rate", "0.1", "--out", str(tmp_path / "p.csv")],
             "assess": ["--rates", "0.1", "--seeds", "1", "--out", str(tmp_path / "rep")],
             "clean": ["--out", str(tmp_path / "c.csv")],
             "certify": ["--partitions", "3"]}[command]
    r = cli(command, path, "--label", "y", "--text", "nope", *extra)
    assert r.exit_code == 2 and "text column 'nope' not found" in r.stderr
    if command in ("attack", "certify"):
        r = cli(command, path, "--label", "y", *extra)
        assert r.exit_code == 0, r.stderr
        assert ("note: column 'comment' (60 distinct strings) is not used as a feature; if it is "
                "free text, add --text comment\n") in r.stderr


# -- bad input: one clear FlipguardError naming file and column ------------------
def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.csv: no such file"):
        load(str(tmp_path / "nope.csv"), label="y")


def test_unreadable_parquet(tmp_path):
    p = tmp_path / "broken.parquet"
    p.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataError, match=r"broken\.parquet: cannot read as PARQUET"):
        load(str(p), label="y")


def test_label_column_absent():
    with pytest.raises(DataError, match=r"label column 'target' not found \(columns: rid, amount"):
        load(_small_table(), label="target")


def test_nan_and_empty_labels_are_counted_with_rows(tmp_path):
    p = tmp_path / "holes.csv"
    p.write_text("x,y\n1,a\n2,\n3,b\n4,\n5,a\n")
    with pytest.raises(DataError, match=r"label column 'y' has 2 missing/NaN value\(s\) \(rows 1, 3; 0-based\)"):
        load(str(p), label="y")
    tbl = pa.table({"x": [1.0, 2.0, 3.0], "y": [0.0, float("nan"), 1.0]})
    with pytest.raises(DataError, match=r"1 missing/NaN value\(s\) \(rows 1;"):
        load(tbl, label="y")


def test_single_class():
    with pytest.raises(DataError, match=r"single class \('ok'\); at least two are needed"):
        load(pa.table({"x": [1, 2, 3], "y": ["ok", "ok", "ok"]}), label="y")


def test_no_usable_feature_column():
    tbl = pa.table({"id": [1, 2, 3, 4], "y": ["a", "b", "a", "b"]})
    with pytest.raises(DataError, match="no usable feature column"):
        load(tbl, label="y", id="id")


def test_duplicate_ids():
    tbl = pa.table({"id": [1, 2, 2, 3], "x": [1.0, 2.0, 3.0, 4.0], "y": ["a", "b", "a", "b"]})
    with pytest.raises(DataError, match=r"id column 'id' has 1 duplicated value\(s\) \(e\.g\. 2\)"):
        load(tbl, label="y", id="id")


def test_missing_feature_and_id_columns():
    with pytest.raises(DataError, match=r"id column 'key' not found"):
        load(_small_table(), label="label", id="key")
    with pytest.raises(DataError, match=r"feature column\(s\) nope not found"):
        load(_small_table(), label="label", features=["amount", "nope"])


def test_all_data_errors_are_flipguard_errors():
    assert issubclass(DataError, FlipguardError) and issubclass(DataError, ValueError)


# -- the demonstration data ------------------------------------------------------
def test_sentiment_reviews_are_seeded_balanced_and_linearly_separable():
    a = make_sentiment_reviews(1000, random_state=3)
    b = make_sentiment_reviews(1000, random_state=3)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.y, b.y)
    assert a.class_counts() == {"negative": 500, "positive": 500}
    assert a.feature_names == ["polarity", "intensity"]
    svm = LinearSVC(C=1e4, max_iter=200_000).fit(a.X, a.y)
    assert svm.score(a.X, a.y) == 1.0
    # Without the mirroring step, close clusters overlap: not separable.
    c = make_sentiment_reviews(1000, separation=1.0, separable=False, random_state=3)
    assert LinearSVC(C=1e4, max_iter=200_000).fit(c.X, c.y).score(c.X, c.y) < 1.0


# -- CLI bad input: exit 2, one line, nothing written ------------------------------
@pytest.fixture
def bad_inputs(tmp_path):
    holes = tmp_path / "holes.csv"
    holes.write_text("x,y\n1,a\n2,\n3,b\n")
    one = tmp_path / "one.csv"
    one.write_text("x,y\n1,a\n2,a\n3,a\n")
    dup = tmp_path / "dup.csv"
    dup.write_text("id,x,y\n1,1,a\n1,2,b\n2,3,a\n")
    nofeat = tmp_path / "nofeat.csv"
    nofeat.write_text("id,y\n1,a\n2,b\n")
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"\x00\x01not parquet")
    return {
        "missing file": ([str(tmp_path / "none.csv"), "--label", "y"], "none.csv: no such file"),
        "missing column": ([str(holes), "--label", "z"], "label column 'z' not found"),
        "nan labels": ([str(holes), "--label", "y"], "has 1 missing/NaN value(s) (rows 1; 0-based)"),
        "one class": ([str(one), "--label", "y"], "has a single class ('a')"),
        "duplicate ids": ([str(dup), "--label", "y", "--id", "id"], "id column 'id' has 1 duplicated"),
        "no features": ([str(nofeat), "--label", "y", "--id", "id"], "no usable feature column"),
        "unreadable": ([str(garbage), "--label", "y"], "cannot read as PARQUET"),
    }


@pytest.mark.parametrize("case", ["missing file", "missing column", "nan labels", "one class",
                                  "duplicate ids", "no features", "unreadable"])
@pytest.mark.parametrize("command", ["attack", "assess"])
def test_cli_bad_input_exit_2_one_line(cli, tmp_path, bad_inputs, case, command):
    args, message = bad_inputs[case]
    out = tmp_path / "out"
    extra = ["--rate", "0.1", "--out", str(out / "p.csv")] if command == "attack" else ["--out", str(out)]
    before = {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    r = cli(command, *args, *extra)
    assert r.exit_code == 2, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert not out.exists()
    assert {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before
