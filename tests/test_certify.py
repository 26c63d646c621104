"""Deep Partition Aggregation: partitioning, the certified radius, brute-force attacks, the CLI.

Levine & Feizi, "Deep Partition Aggregation: Provable Defenses against General
Poisoning Attacks", ICLR 2021: a prediction with radius r survives any r label
flips.  The tests attack the trained ensemble exhaustively (tiny data) and
adversarially (larger data) to check the claim, and check the bound is tight.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from sklearn.datasets import make_blobs, make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.tree import DecisionTreeClassifier

from flipguard.exceptions import InvalidParameterError
from flipguard.mitigation import (
    Certificate,
    PartitionAggregationClassifier,
    certified_radius,
    certify,
    hash_ids,
    partition_of,
)
from flipguard.models import make_model, single_threaded


# -- partitioning by id hash ------------------------------------------------------
def test_hash_is_pinned_and_text_form_based():
    # Pinned values: a change of hash function would silently re-partition every dataset.
    assert partition_of([101, 102, 103, 104], 3).tolist() == [2, 1, 1, 2]
    assert hash_ids(np.array([1, 2])).tolist() == [5416585191857775343, 5601306485723227952]
    # An id hashes by its text form: int 17, "17", b"17" and a large_string "17" agree.
    h = hash_ids(np.array([17]))
    assert hash_ids(np.array(["17"], dtype=object)) == h
    assert hash_ids(pa.array([b"17"])) == h
    assert hash_ids(pa.array(["17"], type=pa.large_string())) == h
    assert hash_ids(pa.chunked_array([["a", "17"], ["b"]]))[1] == h


def test_hash_depends_on_key_and_every_byte():
    ids = np.array([f"customer-{i:08d}-with-a-long-suffix" for i in range(2000)], dtype=object)
    a, b = hash_ids(ids), hash_ids(ids, hash_key="other")
    assert len(np.unique(a)) == len(ids)  # ids differing only in middle bytes still differ
    assert np.mean(a == b) == 0.0
    assert hash_ids(np.array(["ab", "ab\x00"], dtype=object)).tolist()[0] != \
        hash_ids(np.array(["ab\x00"], dtype=object)).tolist()[0]  # the length is mixed in


def test_partitions_are_balanced_and_row_order_free():
    ids = np.arange(50_000) * 7 + 3
    part = partition_of(ids, 10)
    counts = np.bincount(part, minlength=10)
    assert counts.min() > 4700 and counts.max() < 5300
    perm = np.random.RandomState(0).permutation(len(ids))
    assert np.array_equal(partition_of(ids[perm], 10), part[perm])


def test_partition_of_rejects_bad_arguments():
    with pytest.raises(InvalidParameterError, match="n_partitions must be an int >= 1. Got 0 instead."):
        partition_of([1, 2], 0)
    with pytest.raises(InvalidParameterError, match="hash_key must be a str, bytes or int"):
        hash_ids([1, 2], hash_key=1.5)


# -- the radius formula -------------------------------------------------------------
@pytest.mark.parametrize("votes, pred, radius", [
    ([7, 3], 0, 2),      # 7-3 = 4 -> 2 flips leave 5:5, a tie class 0 wins
    ([3, 7], 1, 1),      # class 0 wins ties, so class 1 needs one more vote of margin
    ([5, 5], 0, 0),
    ([4, 4, 2], 0, 0),
    ([2, 4, 4], 1, 0),
    ([3, 5, 0], 1, 0),   # one flip: 4:4 and class 0 takes the tie
    ([0, 6, 1], 1, 2),   # 2 flips: 2:4:1 or 0:4:3; 3 flips: 3:3:1 -> class 0
    ([0, 0, 9], 2, 4),
])
def test_certified_radius_exact_values(votes, pred, radius):
    p, r = certified_radius(np.array([votes]))
    assert (p[0], r[0]) == (pred, radius)


def _winner_after_moves(votes, moves):
    v = list(votes)
    for src, dst in moves:
        v[src] -= 1
        v[dst] += 1
    return int(np.argmax(v))


def test_certified_radius_matches_exhaustive_vote_moves():
    """Every way of moving <= r votes keeps the winner; some way of moving r + 1 changes it."""
    for n_classes, k in ((2, 5), (2, 6), (3, 5), (3, 4)):
        for votes in itertools.product(range(k + 1), repeat=n_classes):
            if sum(votes) != k:
                continue
            (pred,), (r,) = certified_radius(np.array([votes]))
            pairs = [(s, d) for s in range(n_classes) for d in range(n_classes) if s != d]
            for m in range(r + 1):
                for moves in itertools.product(pairs, repeat=m):
                    v = list(votes)
                    ok = True
                    for s, d in moves:
                        ok &= v[s] > 0
                        v[s] -= 1
                        v[d] += 1
                    if ok:
                        assert _winner_after_moves(votes, moves) == pred, (votes, moves)
            # Tightness: move r + 1 votes from the winner to its strongest rival.
            adj = [votes[c] + (c < pred) if c != pred else -1 for c in range(n_classes)]
            rival = int(np.argmax(adj))
            assert _winner_after_moves(votes, [(pred, rival)] * (r + 1)) != pred, votes


# -- the ensemble ---------------------------------------------------------------------
def _flip_labels(y, rows, new):
    y2 = y.copy()
    y2[list(rows)] = new
    return y2


@pytest.mark.parametrize("n_classes, n_train, seed, estimator", [
    (2, 14, 1, LogisticRegression()),
    (3, 12, 4, DecisionTreeClassifier(random_state=0)),
])
def test_exhaustive_flips_never_change_certified_predictions(n_classes, n_train, seed, estimator):
    """Tiny data: try every set of <= r flipped labels (every new label) and refit the whole model."""
    X, y = make_blobs(n_train + 12, centers=n_classes, cluster_std=1.0, random_state=seed)
    Xtr, ytr, Xte = X[:n_train], y[:n_train], X[n_train:]
    ids = np.arange(100, 100 + n_train)
    clf = PartitionAggregationClassifier(estimator, n_partitions=5, random_state=0).fit(Xtr, ytr, ids=ids)
    cert = clf.certify(Xte)
    base = cert.predictions
    assert cert.max_radius == 2  # the largest radius 5 partitions allow
    tried = 0
    for m in (1, 2):
        covered = cert.radii >= m
        for rows in itertools.combinations(range(n_train), m):
            choices = [[c for c in range(n_classes) if c != ytr[i]] for i in rows]
            for new in itertools.product(*choices):
                ytr2 = _flip_labels(ytr, rows, new)
                pred = PartitionAggregationClassifier(estimator, n_partitions=5, random_state=0) \
                    .fit(Xtr, ytr2, ids=ids).predict(Xte)
                assert np.array_equal(pred[covered], base[covered]), (rows, new)
                tried += 1
    n_alt = n_classes - 1
    assert tried == n_train * n_alt + n_train * (n_train - 1) // 2 * n_alt ** 2


def _one_flip_to_vote(Xp, yp, x, dst, estimator):
    """A row of the partition whose flip to ``dst`` makes its model vote ``dst`` at ``x`` (or None).

    Tries the rows nearest to ``x`` first.
    """
    order = np.argsort(((Xp - x) ** 2).sum(axis=1), kind="stable")
    for i in order:
        if yp[i] == dst:
            continue
        y2 = yp.copy()
        y2[i] = dst
        if len(np.unique(y2)) == 1:
            vote = y2[0]
        else:
            with single_threaded():
                vote = make_model(estimator, random_state=0).fit(Xp, y2).predict(x[None, :])[0]
        if vote == dst:
            return i
    return None


def _adversarial_flips(clf, X, y, ids, x, estimator):
    """The strongest attack the certificate allows, as a list of single-label flips.

    Each flip turns one partition voting for the predicted class into a vote
    for its strongest rival (ties towards the smaller index count).  Returns
    ``(rival, rows)``: flipping the first ``m`` rows to ``rival`` moves ``m``
    votes; partitions no single flip can turn are left out.
    """
    votes = clf.vote_counts(x[None, :])[0]
    (pred,), _ = certified_radius(votes[None, :])
    adj = np.array([votes[c] + (c < pred) if c != pred else -1 for c in range(len(votes))])
    rival = int(np.argmax(adj))
    part = partition_of(ids, clf.n_partitions)
    flips = []
    for p, model in enumerate(clf.estimators_):
        if model is None:
            continue
        vote = model if isinstance(model, int) else model.predict(x[None, :])[0]
        if vote != pred:
            continue
        rows = np.flatnonzero(part == p)
        i = _one_flip_to_vote(X[rows], y[rows], x, rival, estimator)
        if i is not None:
            flips.append(rows[i])
    return rival, flips


def _attacked_prediction(estimator, k, X, y, ids, x, rival, rows):
    y2 = y.copy()
    y2[rows] = rival
    assert int((y2 != y).sum()) == len(rows)
    return PartitionAggregationClassifier(estimator, n_partitions=k, random_state=0) \
        .fit(X, y2, ids=ids).predict(x[None, :])[0]


def test_adversarial_flips_with_one_nearest_neighbour_are_exactly_tight():
    """1-NN partitions flip their vote with one flip: r flips never win, r + 1 always do."""
    X, y = make_classification(320, n_features=4, n_informative=3, n_redundant=0, flip_y=0.1,
                               random_state=1)
    Xtr, ytr, Xte = X[:300], y[:300], X[300:]
    ids = np.array([f"row-{i}" for i in range(300)], dtype=object)
    knn = KNeighborsClassifier(n_neighbors=1)
    clf = PartitionAggregationClassifier(knn, n_partitions=9).fit(Xtr, ytr, ids=ids)
    cert = clf.certify(Xte)
    assert len(np.unique(cert.radii)) >= 3
    for x, pred, r in zip(Xte, cert.predictions, cert.radii):
        rival, rows = _adversarial_flips(clf, Xtr, ytr, ids, x, knn)
        assert len(rows) >= r + 1  # 1-NN: every partition voting for pred can be turned
        assert _attacked_prediction(knn, 9, Xtr, ytr, ids, x, rival, rows[:r]) == pred
        assert _attacked_prediction(knn, 9, Xtr, ytr, ids, x, rival, rows[:r + 1]) != pred


def test_adversarial_flips_with_logreg_respect_radius_and_sometimes_break_at_r_plus_1():
    X, y = make_classification(150, n_features=3, n_informative=2, n_redundant=0, class_sep=0.6,
                               random_state=4)
    Xtr, ytr, Xte = X[:90], y[:90], X[90:150:6]
    ids = np.arange(90)
    est = LogisticRegression()
    clf = PartitionAggregationClassifier(est, n_partitions=15, random_state=0).fit(Xtr, ytr, ids=ids)
    cert = clf.certify(Xte)
    attacked = broken = 0
    for x, pred, r in zip(Xte, cert.predictions, cert.radii):
        rival, rows = _adversarial_flips(clf, Xtr, ytr, ids, x, est)
        m = min(r, len(rows))
        assert _attacked_prediction(est, 15, Xtr, ytr, ids, x, rival, rows[:m]) == pred
        if len(rows) > r:
            attacked += 1
            broken += int(_attacked_prediction(est, 15, Xtr, ytr, ids, x, rival, rows[:r + 1]) != pred)
    assert broken >= 1
    assert attacked >= broken


def test_row_order_does_not_matter_and_votes_count_partitions():
    X, y = make_classification(400, random_state=0)
    ids = np.arange(400) + 10_000
    a = PartitionAggregationClassifier(n_partitions=8, random_state=0).fit(X, y, ids=ids)
    perm = np.random.RandomState(1).permutation(400)
    b = PartitionAggregationClassifier(n_partitions=8, random_state=0).fit(X[perm], y[perm], ids=ids[perm])
    va, vb = a.vote_counts(X), b.vote_counts(X)
    assert np.array_equal(va, vb)
    assert np.all(va.sum(axis=1) == 8)
    assert np.allclose(a.predict_proba(X).sum(axis=1), 1.0)
    assert np.array_equal(a.predict(X), a.classes_[np.argmax(a.predict_proba(X), axis=1)])


def test_single_class_partitions_vote_and_empty_ones_abstain():
    X = np.array([[0.0], [0.1], [5.0], [5.1], [9.0]])
    y = np.array(["a", "a", "b", "b", "b"])
    clf = PartitionAggregationClassifier(n_partitions=12, random_state=0).fit(X, y)
    assert clf.n_empty_partitions_ == 12 - int(np.count_nonzero(clf.partition_sizes_))
    assert clf.n_empty_partitions_ >= 7
    assert clf.partition_sizes_.sum() == 5
    singles = [m for m in clf.estimators_ if isinstance(m, int)]
    votes = clf.vote_counts(X)
    assert np.all(votes.sum(axis=1) == 12 - clf.n_empty_partitions_)
    # Single-class partitions vote their class for every point.
    assert np.all(votes >= np.bincount(singles, minlength=2)[None, :])
    cert = clf.certify(X, y)
    assert any("empty" in w for w in cert.warnings)
    assert any("rows per partition model" in w for w in cert.warnings)


def test_ties_go_to_the_smaller_class():
    X = np.zeros((4, 1))
    y = np.array([1, 0, 1, 0])

    def splits_by_class(c):
        p = partition_of(np.array(c), 2)
        return p[0] == p[2] and p[1] == p[3] and p[0] != p[1]

    # ids putting the two class-1 rows in one partition and the class-0 rows in the other
    ids = np.array(next(c for c in itertools.permutations(range(40), 4) if splits_by_class(c)))
    clf = PartitionAggregationClassifier(n_partitions=2).fit(X, y, ids=ids)
    assert clf.vote_counts(X[:1]).tolist() == [[1, 1]]
    assert clf.predict(X[:1]).tolist() == [0]
    assert clf.certify(X[:1]).radii.tolist() == [0]


def test_certificate_curve_and_serialisation():
    X, y = make_classification(500, random_state=2)
    cert = certify(X[:400], y[:400], X[400:], y[400:], n_partitions=11, random_state=0,
                   test_ids=np.arange(400, 500))
    assert isinstance(cert, Certificate)
    curve = cert.curve()
    assert curve[0]["fraction_certified"] == 1.0
    assert curve[-1]["radius"] == cert.max_radius + 1 and curve[-1]["fraction_certified"] == 0.0
    acc = [p["certified_accuracy"] for p in curve]
    assert all(a >= b for a, b in itertools.pairwise(acc))
    assert cert.max_radius <= 11 // 2
    clf = PartitionAggregationClassifier(n_partitions=11, random_state=0).fit(X[:400], y[:400])
    assert acc[0] == pytest.approx(np.mean(clf.predict(X[400:]) == y[400:]))
    for p in curve:
        assert p["certified_accuracy"] == pytest.approx(cert.certified_accuracy(p["radius"]))
        assert p["fraction_certified"] == pytest.approx(cert.fraction_certified(p["radius"]))
    d = json.loads(cert.to_json())
    assert d["rows"]["id"][:2] == [400, 401] and len(d["rows"]["radius"]) == 100
    assert d["median_radius"] == cert.median_radius
    assert "rows" not in cert.to_dict(rows=False)


def test_parallel_fit_matches_sequential():
    X, y = make_classification(300, random_state=5)
    rf = RandomForestClassifier(n_estimators=5)
    a = PartitionAggregationClassifier(rf, n_partitions=4, random_state=3).fit(X, y)
    b = PartitionAggregationClassifier(rf, n_partitions=4, random_state=3, n_jobs=2).fit(X, y)
    c = PartitionAggregationClassifier(rf, n_partitions=4, random_state=4).fit(X, y)
    assert np.array_equal(a.vote_counts(X), b.vote_counts(X))
    assert not np.array_equal(a.predict_proba(X), c.predict_proba(X))  # the seed reaches the forests


def test_invalid_parameters_raise_our_error():
    X, y = make_classification(50, random_state=0)
    with pytest.raises(InvalidParameterError, match="The 'n_partitions' parameter of "
                       "PartitionAggregationClassifier must be an int in the range"):
        PartitionAggregationClassifier(n_partitions=0).fit(X, y)
    with pytest.raises(ValueError, match="ids has 3 values but X has 50 rows"):
        PartitionAggregationClassifier(n_partitions=3).fit(X, y, ids=[1, 2, 3])


def test_sklearn_estimator_checks():
    from sklearn.utils.estimator_checks import check_estimator

    results = check_estimator(PartitionAggregationClassifier(n_partitions=3, random_state=0), on_fail=None)
    failed = [(r["check_name"], str(r["exception"])[:200]) for r in results if r["status"] == "failed"]
    assert failed == []


# -- the CLI -------------------------------------------------------------------------------
def test_cli_certify_holdout_table_and_out(cli, breast_cancer_csv, tmp_path):
    before = breast_cancer_csv.read_bytes()
    out = tmp_path / "radii.csv"
    r = cli("certify", breast_cancer_csv, "--label", "diagnosis", "--id", "patient_id",
            "--partitions", "9", "--out", out)
    assert r.exit_code == 0, r.stderr
    assert "Certified accuracy vs label flips" in r.stdout and "median radius" in r.stdout
    radii = pacsv.read_csv(out)
    assert radii.column_names == ["row", "id", "label", "prediction", "radius"]
    assert 90 <= radii.num_rows <= 140  # about 20% of 569, by a hash of the id
    assert set(radii.column("label").to_pylist()) == {"benign", "malignant"}
    assert max(radii.column("radius").to_pylist()) <= 4
    # row and id refer to the same input rows
    assert [i - 1000 for i in radii.column("id").to_pylist()] == radii.column("row").to_pylist()
    assert breast_cancer_csv.read_bytes() == before


def test_cli_warnings_are_one_line_each(cli, breast_cancer_csv):
    """The default 50 partitions of ~450 rows warn; the warning was hard-wrapped at 80 columns onto two
    stderr lines, so grep and CI logs kept half of it."""
    r = cli("certify", breast_cancer_csv, "--label", "diagnosis", "--id", "patient_id")
    assert r.exit_code == 0, r.stderr
    line = next(ln for ln in r.stderr.splitlines() if "rows per partition" in ln)
    assert line.startswith("warning: 50 partitions of ") and line.endswith("give stronger models but smaller radii")


def test_cli_certify_json_with_test_file_and_seed(cli, breast_cancer_csv, breast_cancer_parquet):
    r = cli("certify", breast_cancer_csv, "--label", "diagnosis", "--partitions", "5",
            "--test", breast_cancer_parquet, "--json", "--seed", "3")
    assert r.exit_code == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["n_train"] == 569 and d["n_test"] == 569 and d["n_partitions"] == 5
    assert d["curve"][0]["radius"] == 0 and d["accuracy"] > 0.9
    assert d["max_radius"] <= 2
    again = json.loads(cli("certify", breast_cancer_csv, "--label", "diagnosis", "--partitions", "5",
                           "--test", breast_cancer_parquet, "--json", "--seed", "3").stdout)
    assert again == d


def test_cli_certify_bad_input(cli, breast_cancer_csv, tmp_path):
    r = cli("certify", breast_cancer_csv, "--label", "diagnosis", "--partitions", "0")
    assert (r.exit_code, r.stderr) == (2, "Error: --partitions must be at least 1; got 0\n")
    r = cli("certify", breast_cancer_csv, "--label", "diagnosis", "--model", "svm")
    assert (r.exit_code, r.stderr) == (2, ("Error: --model must be one of logreg, linsvm, rf, hgb, knn, "
                                           "mlp; got 'svm'\n"))
    r = cli("certify", tmp_path / "missing.csv", "--label", "diagnosis")
    assert (r.exit_code, r.stderr) == (2, f"Error: {tmp_path / 'missing.csv'}: no such file\n")
    bad = tmp_path / "test.csv"
    pacsv.write_csv(pa.table({"patient_id": [1], "diagnosis": ["benign"]}), bad)
    r = cli("certify", breast_cancer_csv, "--label", "diagnosis", "--test", bad)
    assert r.exit_code == 2 and r.stderr.startswith(f"Error: {bad}: column(s) mean_radius, ")
    r = cli("certify", breast_cancer_csv, "--label", "diagnosis", "--out", breast_cancer_csv)
    assert (r.exit_code, r.stderr) == (2, (f"Error: --out {breast_cancer_csv} is the input file; "
                                           "flipguard never modifies its input\n"))


def _flip_rows(table: pa.Table, rows, label: str = "diagnosis") -> pa.Table:
    y = np.asarray(table.column(label).to_pylist(), dtype=object)
    y[rows] = np.where(y[rows] == "benign", "malignant", "benign")
    return table.set_column(table.schema.get_field_index(label), label, pa.array(y.tolist()))


def _radii(cli, path, tmp_path, name, *extra):
    out = tmp_path / name
    r = cli("certify", path, "--label", "diagnosis", "--id", "patient_id", "--partitions", "25",
            "--out", out, *extra)
    assert r.exit_code == 0, r.stderr
    t = pacsv.read_csv(out)
    return dict(zip(t.column("id").to_pylist(), zip(t.column("prediction").to_pylist(),
                                                     t.column("radius").to_pylist())))


def test_flipping_r_training_labels_never_changes_a_prediction_certified_at_r(cli, breast_cancer_frame,
                                                                               tmp_path):
    """The certificate holds for the CLI's whole pipeline, not only the ensemble: the rows held
    out and the feature columns must not depend on the labels.  A label-sorted file with a
    row-number column `t` (dropped from the features while it follows the labels) and a
    stratified holdout broke it: 2 flips changed a prediction certified at radius 3, and one
    flip reshuffled 85 of 114 test rows."""
    frame = breast_cancer_frame.sort_by([("diagnosis", "ascending")])
    frame = frame.append_column("t", pa.array(np.arange(frame.num_rows)))
    path = tmp_path / "sorted.csv"
    pacsv.write_csv(frame, path)
    before = _radii(cli, path, tmp_path, "before.csv")
    ids = np.asarray(frame.column("patient_id").to_pylist())
    training = [i for i in ids if i not in before]
    for r, flipped in ((1, training[:1]), (2, training[5:7])):
        path2 = tmp_path / f"flip{r}.csv"
        pacsv.write_csv(_flip_rows(frame, np.flatnonzero(np.isin(ids, flipped))), path2)
        after = _radii(cli, path2, tmp_path, f"after{r}.csv")
        assert after.keys() == before.keys()  # the same rows held out
        for i, (pred, radius) in before.items():
            assert abs(after[i][1] - radius) <= r
            if radius >= r:
                assert after[i][0] == pred, (i, r)


def test_rows_to_certify_may_all_have_one_class(cli, breast_cancer_csv, breast_cancer_frame, tmp_path):
    one = tmp_path / "benign.csv"
    rows = np.flatnonzero(np.asarray(breast_cancer_frame.column("diagnosis").to_pylist()) == "benign")[:7]
    pacsv.write_csv(breast_cancer_frame.take(pa.array(rows)), one)
    r = cli("certify", breast_cancer_csv, "--label", "diagnosis", "--partitions", "5", "--test", one, "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["n_test"] == 7


def test_cli_classes_missing_a_label_of_the_data_is_one_line(cli, breast_cancer_csv, tmp_path):
    out = tmp_path / "r.csv"
    r = cli("certify", breast_cancer_csv, "--label", "diagnosis", "--id", "patient_id", "--classes", "benign,cat",
            "--out", out)
    assert r.exit_code == 2 and not out.exists()
    assert r.stderr == "Error: --classes 'benign,cat' lacks label(s) of the data: malignant (name every label of " \
                       "the task)\n"
