"""Any input to the audit: free text, sparse matrices, probabilities and embeddings computed
elsewhere, odd label columns; and the audit's rough edges (pipes, conflicting options,
result objects that behave like scikit-learn's and pandas')."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from flipguard.attacks import RandomFlip
from flipguard.data import load
from flipguard.detection import LabelAuditor, audit_dataset, find_flipped_labels
from flipguard.exceptions import DataError

LABEL = "diagnosis"
POSITIVE = "great excellent love wonderful perfect amazing".split()
NEGATIVE = "terrible awful hate boring poor disappointing".split()
NEUTRAL = "the film plot actor scene story movie time character director music ending".split()


def _write(tmp_path, table: pa.Table, name: str = "data.csv"):
    path = tmp_path / name
    if name.endswith(".parquet"):
        pq.write_table(table, path)
    else:
        pacsv.write_csv(table, path)
    return path


def _reviews(n: int = 240, flip_rate: float = 0.1, seed: int = 0):
    """Seeded reviews: a few sentiment words among neutral ones (sometimes a word of the other
    sentiment), then ``flip_rate`` of the labels flipped.  Returns (table, flip mask)."""
    rng = np.random.RandomState(seed)
    truth = np.where(np.arange(n) % 2 == 0, "positive", "negative")
    docs = []
    for lab in truth:
        own, other = (POSITIVE, NEGATIVE) if lab == "positive" else (NEGATIVE, POSITIVE)
        words = list(rng.choice(NEUTRAL, 8)) + list(rng.choice(own, 2)) + \
            (list(rng.choice(other, 1)) if rng.rand() < 0.3 else [])
        rng.shuffle(words)
        docs.append(" ".join(words))
    mask = np.zeros(n, bool)
    mask[rng.choice(n, int(flip_rate * n), replace=False)] = True
    observed = np.where(mask, np.where(truth == "positive", "negative", "positive"), truth)
    table = pa.table({"review_id": np.arange(5000, 5000 + n), "review": docs,
                      "length": np.array([len(d) for d in docs], dtype=np.int64), "sentiment": observed})
    return table, mask


@pytest.fixture
def reviews_csv(tmp_path):
    table, mask = _reviews()
    return _write(tmp_path, table, "reviews.csv"), mask


@pytest.fixture
def cancer_csv(tmp_path, breast_cancer_frame):
    return _write(tmp_path, breast_cancer_frame)


def _one_line_error(res, message: str) -> None:
    assert res.exit_code == 2, (res.stdout, res.stderr)
    assert res.stderr == f"Error: {message}\n"
    assert res.stdout == ""


# -- free text -----------------------------------------------------------------------------
def test_free_text_column_left_out_is_reported_with_the_fix(cli, reviews_csv):
    path, _ = reviews_csv
    res = cli("audit", path, "--label", "sentiment", "--id", "review_id", "--format", "json")
    assert res.exit_code == 0, res.stderr
    assert ("note: column 'review' (240 distinct strings) is not used as a feature; if it is free "
            "text, add --text review\n") in res.stderr


def test_only_free_text_is_an_error_naming_text(cli, tmp_path):
    table, _ = _reviews(40)
    path = _write(tmp_path, table.select(["review", "sentiment"]), "r.csv")
    res = cli("audit", path, "--label", "sentiment")
    _one_line_error(res, f"{path}: no usable feature column (review: dropped: 40 distinct strings); "
                         "for free text use --text review (text='review' in Python)")


def test_text_audit_finds_the_flipped_reviews(cli, reviews_csv):
    path, mask = reviews_csv
    res = cli("audit", path, "--label", "sentiment", "--id", "review_id", "--text", "review",
              "--format", "json")
    assert res.exit_code == 0, res.stderr
    assert "note:" not in res.stderr
    out = json.loads(res.stdout)
    flags = np.array([r["flagged"] for r in out["rows"]])
    scores = np.array([r["score"] for r in out["rows"]])
    assert len(np.unique(np.round(scores, 6))) > 100  # not a flat 0.500
    recall = (flags & mask).sum() / mask.sum()
    precision = (flags & mask).sum() / max(flags.sum(), 1)
    assert recall >= 0.8 and precision >= 0.5, (recall, precision)


@pytest.mark.parametrize("command", ["attack", "assess", "audit", "clean", "certify"])
def test_every_data_command_takes_text(cli, command):
    res = cli(command, "--help")
    assert res.exit_code == 0
    assert "--text" in res.stdout


def test_attack_and_certify_read_text(cli, reviews_csv, tmp_path):
    path, _ = reviews_csv
    out = tmp_path / "poisoned.csv"
    res = cli("attack", path, "--label", "sentiment", "--text", "review", "--strategy", "boundary",
              "--rate", "0.1", "--out", out, "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["n_flipped"] == 24
    assert pacsv.read_csv(out).column_names == ["review_id", "review", "length", "sentiment"]
    res = cli("certify", path, "--label", "sentiment", "--text", "review", "--partitions", "5", "--json")
    assert res.exit_code == 0, res.stderr
    missing = cli("attack", path, "--label", "sentiment", "--text", "body", "--rate", "0.1",
                  "--out", tmp_path / "x.csv")
    assert missing.exit_code == 2 and "text column 'body' not found" in missing.stderr


def test_load_text_columns_repeatable_and_sparse():
    table, _ = _reviews(60)
    table = table.append_column("title", pa.array([d.split()[0] + " title" for d in table.column("review").to_pylist()]))
    dense = load(table, label="sentiment", text=["review", "title"])
    sparse = load(table, label="sentiment", text=["review", "title"], sparse=True)
    assert isinstance(dense.X, np.ndarray) and sparse.is_sparse
    assert np.array_equal(sparse.X.toarray(), dense.X)
    assert dense.encoding["review"].startswith("tfidf") and dense.encoding["title"].startswith("tfidf")
    assert any(f.startswith("title:") for f in dense.feature_names)
    assert set(dense.vectorizers) == {"review", "title"}


# -- sparse matrices in the Python API -----------------------------------------------------------
def test_sparse_and_dense_give_the_same_flags():
    import scipy.sparse as sp

    table, mask = _reviews()
    ds_dense = load(table, label="sentiment", text="review")
    ds_sparse = load(table, label="sentiment", text="review", sparse=True)
    a = audit_dataset(ds_dense, random_state=0, embed=False)
    sparse_auditor = LabelAuditor(random_state=0).fit(ds_sparse.X, ds_sparse.y, embed=False)
    b = sparse_auditor.audit_
    # Given the same probabilities, the detectors treat sparse and dense X identically.
    X = ds_sparse.X
    for method in ("knn", "auto"):
        probs = None if method == "knn" else sparse_auditor.pred_probs_
        d = find_flipped_labels(ds_sparse.y, probs, method=method, X=X.toarray(), random_state=0)
        s = find_flipped_labels(ds_sparse.y, probs, method=method, X=sp.csc_matrix(X), random_state=0)
        assert d.n_flagged > 0 and np.array_equal(d.flags, s.flags), method
        assert np.allclose(d.scores, s.scores)
    # End to end the model scales sparse input without centring (same optimum, another solver
    # path): rows on the decision boundary may differ, and the stack's weights (a 0.1 grid) may
    # move one step (0.5/0.5 against 0.6/0.4 here), nothing else.
    assert a.n_flagged > 0
    assert (a.flags != b.flags).sum() <= 0.01 * len(mask)
    assert np.allclose(a.scores, b.scores, atol=0.05)
    assert abs((a.flags & mask).sum() - (b.flags & mask).sum()) <= 1


# -- probabilities and embeddings computed elsewhere ---------------------------------------------------
def test_pred_probs_file_reproduces_the_in_process_audit(cli, breast_cancer_frame, tmp_path):
    from flipguard.detection._io import load_audit_data

    table = breast_cancer_frame
    y = np.asarray(table.column(LABEL).to_pylist(), dtype=object)
    _, y_bad = RandomFlip(rate=0.15, random_state=1).fit_resample(np.zeros((len(y), 1)), y)
    table = table.set_column(table.schema.get_field_index(LABEL), LABEL, pa.array(list(y_bad)))
    data = _write(tmp_path, table)
    ds = load_audit_data(str(data), label=LABEL, id="patient_id")
    probs = LabelAuditor(random_state=0).fit(ds.X, ds.y).pred_probs_
    order = np.random.RandomState(3).permutation(len(y))  # the file's rows in another order
    cols = {"patient_id": ds.ids[order]}
    cols.update({str(c): probs[order, k] for k, c in enumerate(ds.classes)})
    probs_file = _write(tmp_path, pa.table(cols), "oof.csv")

    base = cli("audit", data, "--label", LABEL, "--id", "patient_id", "--format", "json")
    given = cli("audit", data, "--label", LABEL, "--id", "patient_id", "--pred-probs", probs_file,
                "--format", "json")
    assert base.exit_code == 0 and given.exit_code == 0, given.stderr
    a, b = json.loads(base.stdout), json.loads(given.stdout)
    assert [r["flagged"] for r in a["rows"]] == [r["flagged"] for r in b["rows"]]
    assert np.allclose([r["score"] for r in a["rows"]], [r["score"] for r in b["rows"]], atol=1e-9)
    assert a["estimated_flips"] == b["estimated_flips"] and a["n_flagged"] > 0
    assert b["model_quality"]["model"] == "pred_probs"


@pytest.mark.parametrize("columns, message", [
    ({"benign": [0.5] * 569}, "{p}: no probability column for class(es) malignant (one column per "
                              "class of label column 'diagnosis')"),
    ({"benign": [0.5] * 569, "malignant": [0.5] * 569, "cat": [0.0] * 569},
     "{p}: column(s) 'cat' are not classes of label column 'diagnosis' (expected one column per class: "
     "benign, malignant)"),
    ({"": list(range(569)), "benign": [0.5] * 569, "malignant": [0.5] * 569},
     "{p}: column(s) '' are not classes of label column 'diagnosis' (expected one column per class: "
     "benign, malignant); '' looks like a pandas index written with the file: write it with index=False"),
    ({"benign": [0.5] * 10, "malignant": [0.5] * 10},
     "{p}: 10 rows of probabilities for 569 data rows (rows are matched by position; give --id to "
     "match them by id)"),
    ({"benign": [0.7] * 569, "malignant": [0.5] * 569},
     "{p}: each row's probabilities must sum to 1; data row 0 sums to 1.2 (569 such row(s))"),
    ({"benign": [1.5] * 569, "malignant": [-0.5] * 569},
     "{p}: probabilities must be in [0, 1] (found -0.5 .. 1.5; scores or logits need a softmax first)"),
])
def test_bad_pred_probs_files(cli, cancer_csv, tmp_path, columns, message):
    p = _write(tmp_path, pa.table(columns), "probs.csv")
    res = cli("audit", cancer_csv, "--label", LABEL, "--pred-probs", p)
    _one_line_error(res, message.format(p=p))


def test_published_probabilities_with_float32_rounding_are_read(cli, cancer_csv, tmp_path):
    """Out-of-fold probabilities as published carry a softmax's float32 rounding (the IMDB
    probabilities of Northcutt et al.'s label-errors release sum to 1.00002, some values are
    1.00001): they are read, clipped and renormalised, and audit exactly as the exact ones do;
    the same offsets in the Python API too."""
    y = np.array([0 if v == "benign" else 1 for v in
                  pacsv.read_csv(cancer_csv).column(LABEL).to_pylist()])
    rng = np.random.RandomState(0)
    exact = np.clip(np.where(y == 1, 0.8, 0.2) + rng.normal(0, 0.15, len(y)), 0.0, 1.0)
    disputed = rng.choice(len(y), 30, replace=False)   # rows the model confidently disputes
    exact[disputed] = np.where(y[disputed] == 1, 0.02, 0.98)
    exact = np.column_stack([1 - exact, exact])
    rounded = exact * 1.00002          # rows sum to 1.00002; ones become 1.00002
    assert rounded.max() > 1
    for probs, name in ((exact, "exact.csv"), (rounded, "rounded.csv")):
        _write(tmp_path, pa.table({"benign": probs[:, 0], "malignant": probs[:, 1]}), name)
    a = cli("audit", cancer_csv, "--label", LABEL, "--pred-probs", tmp_path / "exact.csv", "--format", "json")
    b = cli("audit", cancer_csv, "--label", LABEL, "--pred-probs", tmp_path / "rounded.csv", "--format", "json")
    assert a.exit_code == 0 and b.exit_code == 0, b.stderr
    ja, jb = json.loads(a.stdout), json.loads(b.stdout)
    assert [r["flagged"] for r in ja["rows"]] == [r["flagged"] for r in jb["rows"]] and ja["n_flagged"] > 0
    assert np.allclose([r["score"] for r in ja["rows"]], [r["score"] for r in jb["rows"]], atol=1e-6)
    x, z = find_flipped_labels(y, exact, random_state=0), find_flipped_labels(y, rounded, random_state=0)
    assert np.array_equal(x.flags, z.flags) and x.estimated_flips == pytest.approx(z.estimated_flips)
    with pytest.raises(DataError, match=r"pred_probs: each row's probabilities must sum to 1; data row 0 sums to 1\.4"):
        find_flipped_labels(y, np.full((len(y), 2), 0.7), random_state=0)


def test_a_file_of_ids_and_labels_is_audited_by_its_pred_probs_alone(cli, breast_cancer_frame, tmp_path):
    """Published out-of-fold probabilities come without the images or texts they were computed
    from: a file holding only ids and labels, with --pred-probs, is audited by those
    probabilities alone, exactly as find_flipped_labels audits them; without --pred-probs
    (or with --trusted, which needs features) it is refused in one line."""
    y = np.asarray(breast_cancer_frame.column(LABEL).to_pylist(), dtype=object)
    _, y_bad = RandomFlip(rate=0.1, random_state=2).fit_resample(np.zeros((len(y), 1)), y)
    labels_only = pa.table({"patient_id": breast_cancer_frame.column("patient_id"), LABEL: list(y_bad)})
    data = _write(tmp_path, labels_only, "labels.csv")
    ds = load(str(_write(tmp_path, breast_cancer_frame.set_column(
        breast_cancer_frame.schema.get_field_index(LABEL), LABEL, pa.array(list(y_bad))))), label=LABEL,
        id="patient_id")
    probs = LabelAuditor(model="logreg", random_state=0).fit(ds.X, ds.y).pred_probs_
    cols = {"patient_id": ds.ids, **{str(c): probs[:, k] for k, c in enumerate(ds.classes)}}
    probs_file = _write(tmp_path, pa.table(cols), "oof.csv")

    report = tmp_path / "audit.html"
    res = cli("audit", data, "--label", LABEL, "--id", "patient_id", "--pred-probs", probs_file,
              "--format", "json", "--report", report)
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)
    html = report.read_text()
    assert "Audit summary" in html and "Top 50 suspects" in html and "<img" in html
    assert out["n_flagged"] > 0 and out["model_quality"]["model"] == "pred_probs"
    auditor = LabelAuditor(random_state=0).fit(None, ds.labels(), pred_probs=probs)   # the CLI's seed
    assert auditor.n_features_in_ == 0
    assert [r["flagged"] for r in out["rows"]] == auditor.audit_.flags.tolist()
    assert out["estimated_flips"] == pytest.approx(auditor.audit_.estimated_flips, abs=0.5)
    assert "knn" not in auditor.audit_.components  # no features, no neighbour votes
    with pytest.raises(DataError, match="needs X unless pred_probs"):
        LabelAuditor().fit(None, ds.labels())

    _one_line_error(cli("audit", data, "--label", LABEL, "--id", "patient_id"),
                    f"{data}: no feature columns besides the label and the id; an audit of labels "
                    "alone needs --pred-probs (out-of-fold probabilities) or --features")
    trusted = _write(tmp_path, labels_only.slice(0, 20), "trusted.csv")
    res = cli("audit", data, "--label", LABEL, "--id", "patient_id", "--pred-probs", probs_file,
              "--trusted", trusted)
    assert res.exit_code == 2 and res.stdout == "" and len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_pred_probs_by_id_must_cover_every_row(cli, cancer_csv, tmp_path):
    p = _write(tmp_path, pa.table({"patient_id": [1000, 1001], "benign": [0.5, 0.5],
                                   "malignant": [0.5, 0.5]}), "probs.csv")
    res = cli("audit", cancer_csv, "--label", LABEL, "--id", "patient_id", "--pred-probs", p)
    _one_line_error(res, f"{p}: 567 data row(s) have no probabilities (ids 1002, 1003, 1004, 1005, 1006, ...)")


def test_features_file_is_used_instead_of_the_columns(cli, breast_cancer_frame, tmp_path):
    """Embeddings computed elsewhere, in another row order, give exactly the audit of the same
    numbers held in the data file."""
    full = _write(tmp_path, breast_cancer_frame, "full.csv")
    labels_only = _write(tmp_path, breast_cancer_frame.select(["patient_id", LABEL]), "labels.csv")
    feats = breast_cancer_frame.drop_columns([LABEL])
    order = np.random.RandomState(5).permutation(feats.num_rows)
    emb = _write(tmp_path, feats.take(pa.array(order)), "emb.parquet")
    a = cli("audit", full, "--label", LABEL, "--id", "patient_id", "--format", "json")
    b = cli("audit", labels_only, "--label", LABEL, "--id", "patient_id", "--features", emb, "--format", "json")
    assert a.exit_code == 0 and b.exit_code == 0, b.stderr
    ra, rb = json.loads(a.stdout)["rows"], json.loads(b.stdout)["rows"]
    assert [r["flagged"] for r in ra] == [r["flagged"] for r in rb]
    assert np.allclose([r["score"] for r in ra], [r["score"] for r in rb], atol=1e-9)
    short = _write(tmp_path, feats.slice(0, 5), "short.csv")
    res = cli("audit", labels_only, "--label", LABEL, "--features", short)
    _one_line_error(res, f"{short}: 5 rows of features for 569 data rows (rows are matched by position; "
                         "give --id to match them by id)")


# -- label sanity -----------------------------------------------------------------------------
def test_continuous_label_is_refused_with_a_fix(cli, cancer_csv, tmp_path):
    res = cli("audit", cancer_csv, "--label", "mean_area")
    _one_line_error(res, f"{cancer_csv}: label column 'mean_area' looks continuous (539 distinct numbers, "
                         "e.g. 143.5); flipguard needs class labels: name the class column with --label, "
                         "or bin the values into classes first")
    ints = _write(tmp_path, pa.table({"x": np.arange(100.0), "y": np.arange(100)}), "ints.csv")
    res = cli("audit", ints, "--label", "y")
    _one_line_error(res, f"{ints}: label column 'y' looks continuous or like an identifier (100 distinct "
                         "values in 100 rows); flipguard needs class labels: name the class column with "
                         "--label, or bin the values into classes first")


def test_stray_class_is_reported_and_flagged_not_silenced(cli, breast_cancer_frame, tmp_path):
    y = breast_cancer_frame.column(LABEL).to_pylist()
    y[7] = "unicorn"
    table = breast_cancer_frame.set_column(breast_cancer_frame.schema.get_field_index(LABEL), LABEL,
                                           pa.array(y))
    data = _write(tmp_path, table)
    res = cli("audit", data, "--label", LABEL, "--id", "patient_id", "--format", "json")
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)
    rows = out["rows"]
    assert rows[7]["flagged"] and rows[7]["score"] == 1.0 and rows[7]["label"] == "unicorn"
    assert rows[7]["suggested_label"] in ("benign", "malignant")
    scores = [r["score"] for r in rows]
    assert len(set(np.round(scores, 6))) > 200  # the other rows are really judged
    assert out["details"]["rare_classes"] == {"unicorn": 1}
    assert out["model_quality"]["usable"] is True
    assert ("warning: class 'unicorn' (1 row) has fewer rows than the 5 folds and cannot be judged "
            "out-of-fold: its 1 row is flagged for review") in res.stderr
    # no raw library warning on stderr: every line is ours
    assert all(line.startswith(("warning:", "note:", " ")) or not line for line in res.stderr.splitlines())
    assert "UserWarning" not in res.stderr and "least populated" not in res.stderr


def test_too_few_rows_per_class_for_the_folds(cli, tmp_path):
    path = _write(tmp_path, pa.table({"x": np.arange(8.0), "y": ["a", "b"] * 4}), "tiny.csv")
    res = cli("audit", path, "--label", "y")
    _one_line_error(res, f"{path}: label column 'y' has fewer than two classes with at least 5 rows (one "
                         "per fold; counts: a 4, b 4); lower --cv or add rows")
    ok = cli("audit", path, "--label", "y", "--cv", "2", "--format", "json")
    assert ok.exit_code == 0, ok.stderr


# -- rough edges of the command ---------------------------------------------------------------
@pytest.mark.parametrize("args, message", [
    (("--cv", "1"), "--cv must be at least 2 (folds); got 1"),
    (("--top", "-1"), "--top must be 0 or more; got -1"),
    (("--json", "--format", "csv"), "--json and --format csv conflict (--json means --format json); "
                                    "give only one of them"),
    (("--method", "rules"), "--method rules needs --rules FILE or --reference-label COLUMN"),
])
def test_option_errors_name_the_option(cli, cancer_csv, args, message):
    _one_line_error(cli("audit", cancer_csv, "--label", LABEL, *args), message)


def test_out_file_is_written_when_stdout_is_closed(cancer_csv, tmp_path):
    """``audit --out rows.csv | head -1``: the file is written, the exit is clean, stderr is quiet."""
    out = tmp_path / "rows2.csv"
    script = (f"{sys.executable} -m flipguard audit {cancer_csv} --label {LABEL} --model logreg --top 569 "
              f"--out {out} | head -1; echo \"status=${{PIPESTATUS[0]}}\" >&2")
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.stderr.strip().splitlines()[-1] == "status=0", proc.stderr
    assert "Error" not in proc.stderr and "BrokenPipe" not in proc.stderr
    assert len(proc.stdout.splitlines()) == 1
    assert pacsv.read_csv(out).num_rows == 569


def test_broken_pipe_in_process_still_writes_and_exits_0(cancer_csv, tmp_path, monkeypatch):
    import io

    from flipguard.cli import main

    class Closed(io.StringIO):
        def write(self, s):
            raise BrokenPipeError(32, "Broken pipe")

    out = tmp_path / "rows.csv"
    monkeypatch.setattr(sys, "stdout", Closed())
    with pytest.raises(SystemExit) as exc:
        main(["audit", str(cancer_csv), "--label", LABEL, "--model", "logreg", "--out", str(out)])
    assert exc.value.code in (0, None)
    assert pacsv.read_csv(out).num_rows == 569


def test_trusted_rows_appear_as_independent_evidence(cli, breast_cancer_frame, tmp_path):
    y = breast_cancer_frame.column(LABEL).to_pylist()
    flipped = [3, 10]
    for r in flipped:
        y[r] = "benign" if y[r] == "malignant" else "malignant"
    table = breast_cancer_frame.set_column(breast_cancer_frame.schema.get_field_index(LABEL), LABEL, pa.array(y))
    data = _write(tmp_path, table)
    trusted = _write(tmp_path, breast_cancer_frame.take(pa.array(np.arange(0, 40))), "trusted.csv")
    report = tmp_path / "audit.html"
    res = cli("audit", data, "--label", LABEL, "--id", "patient_id", "--trusted", trusted,
              "--model", "logreg", "--report", report)
    assert res.exit_code == 0, res.stderr
    assert "Independent evidence" in res.stdout
    line = next(x for x in res.stdout.splitlines() if "trusted rows" in x)
    assert line.split()[1:5] == ["trusted", "rows", "│", "trusted"] or "40" in line
    assert "│ 40 " in line and "│ 2 " in line
    html = report.read_text()
    assert "Independent evidence" in html and "trusted rows" in html
    js = json.loads(cli("audit", data, "--label", LABEL, "--id", "patient_id", "--trusted", trusted,
                        "--model", "logreg", "--format", "json").stdout)
    ev = {e["name"]: e for e in js["evidence"]}
    assert ev["trusted rows"] == {"name": "trusted rows", "kind": "trusted", "n_applicable": 40,
                                  "n_disagree": 2}
    assert {d["row"] for d in js["disagreements"] if d["source"] == "trusted rows"} == set(flipped)


# -- result objects -----------------------------------------------------------------------------
def test_suggested_speaks_the_users_labels_and_converts_to_pandas_and_arrow():
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    names = np.array(["malignant", "benign"], dtype=object)[y]
    names[[0, 1]] = np.where(names[[0, 1]] == "benign", "malignant", "benign")
    audit = LabelAuditor(random_state=0).fit(X, names).audit_
    assert set(audit.suggested.tolist()) <= {"benign", "malignant"}
    assert audit.suggested_codes.dtype.kind == "i"
    assert np.array_equal(audit.classes[audit.suggested_codes], audit.suggested)
    assert audit.suggested[0] != names[0] and audit.flags[0]
    frame = audit.to_pandas()
    assert list(frame.columns)[:6] == ["row", "id", "label", "suggested_label", "score", "flagged"]
    assert list(frame.columns) == audit.to_table().column_names
    assert frame["suggested_label"].tolist() == audit.suggested.tolist()
    assert audit.to_arrow().equals(audit.to_table())


def test_reprs_fit_on_one_screen(breast_cancer_frame):
    ds = load(breast_cancer_frame, label=LABEL, id="patient_id")
    audit = audit_dataset(ds, random_state=0, embed=False)
    for text in (repr(ds), repr(audit)):
        assert len(text.splitlines()) <= 12 and max(map(len, text.splitlines())) <= 200
        assert "array(" not in text
    assert repr(ds).splitlines()[0].startswith("LabeledDataset: 569 rows x 30 features (dense)")
    assert "label 'diagnosis': 2 classes (benign 357, malignant 212)" in repr(ds)
    assert repr(audit).startswith(f"LabelAudit(method='auto'): {audit.n_flagged} of 569 rows flagged")


def test_auditor_inconclusive_when_no_class_can_be_judged():
    X = np.arange(12.0).reshape(6, 2)
    audit = LabelAuditor(random_state=0).fit(X, ["a", "b", "c", "a", "b", "c"]).audit_
    assert audit.n_flagged == 0 and np.isnan(audit.scores).all()
    assert "inconclusive" in audit.warnings[0]
    with pytest.raises(ValueError, match="looks continuous"):
        LabelAuditor().fit(X, [0.5, 1.5, 2.5, 0.1, 0.2, 0.3])


# -- scikit-learn's estimator checks (sparse input, one-sample fit, complex data, ...) -----------
def _checks():
    from sklearn.utils.estimator_checks import parametrize_with_checks

    # confident learning keeps the 40-odd fits quick; the auto detector's sparse path is
    # tested above (test_sparse_and_dense_give_the_same_flags).
    return parametrize_with_checks([LabelAuditor(model="logreg", method="confident_learning", random_state=0)])


@_checks()
def test_label_auditor_passes_sklearn_checks(estimator, check):
    check(estimator)


def test_a_class_written_two_ways_is_named_and_audited_without_a_crash(cli, breast_cancer_frame, tmp_path):
    """'Benign' for 30 rows and 'benign ' for one: the stray value is named with the class it
    resembles, the two spellings that both have rows are named as one class written two
    ways, and the retrain pass, which drops most of a small class's rows from training, still
    trains every model (it crashed with scikit-learn's 'least populated class' error)."""
    y = np.array(breast_cancer_frame.column(LABEL).to_pylist(), dtype=object)
    y[:30] = [v.capitalize() for v in y[:30]]
    y[40] = y[40] + " "
    table = breast_cancer_frame.set_column(breast_cancer_frame.schema.get_field_index(LABEL), LABEL,
                                           pa.array(list(y)))
    data = _write(tmp_path, table)
    res = cli("audit", data, "--label", LABEL, "--id", "patient_id", "--format", "json")
    assert res.exit_code == 0, res.stderr
    assert "Traceback" not in res.stderr
    stray = y[40]
    assert f"'{stray}' (1 row; '{stray.strip()}' but for spaces or case)" in res.stderr
    values, counts = np.unique(y[:30], return_counts=True)
    assert counts.max() >= 5 and counts.min() < 5  # one spelling judged, one too rare to judge
    for v, n in zip(values, counts):
        named = (f"'{v}' and '{v.lower()}' differ only in spaces or case" if n >= 5
                 else f"'{v}' ({n} rows; '{v.lower()}' but for spaces or case)")
        assert named in res.stderr, res.stderr
    assert "one class written two ways?" in json.dumps(json.loads(res.stdout)["warnings"])


def test_excluded_rows_never_leave_a_class_too_few_rows_to_train_on():
    """out_of_fold_proba(exclude=...) keeps a class's training rows when dropping its excluded
    ones would leave fewer than 2 in a fold (gradient boosting cannot split one row off)."""
    from flipguard.models import out_of_fold_proba

    rng = np.random.RandomState(0)
    X = rng.normal(size=(200, 3))
    y = np.r_[np.zeros(180, dtype=int), np.ones(20, dtype=int)]
    X[y == 1] += 3.0
    exclude = np.zeros(200, dtype=bool)
    exclude[181:] = True  # 19 of the 20 rows of class 1
    probs = out_of_fold_proba("hgb", X, y, exclude=exclude, random_state=0)
    assert probs.shape == (200, 2) and np.isfinite(probs).all()
    assert probs[y == 1, 1].mean() > 0.5  # class 1 was learnt: its rows were kept
    other = np.zeros(200, dtype=bool)
    other[:100] = True  # plenty of class 0 left: those rows stay out
    kept = out_of_fold_proba("logreg", X, y, exclude=other, random_state=0)
    full = out_of_fold_proba("logreg", X, y, random_state=0)
    assert not np.allclose(kept, full)


def test_missing_labels_are_named_not_a_type_error():
    """None in an object array (pandas' missing value in a string column) made numpy's sort
    raise TypeError; NaN in a float array was called "continuous".  Both name the rows."""
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    names = np.array(["setosa", "versicolor", "virginica"], dtype=object)[y]
    names[[3, 77]] = [None, np.nan]
    with pytest.raises(DataError, match=r"y has 2 missing label\(s\) \(None/NaN\) at rows 3, 77 \(0-based\)"):
        LabelAuditor(random_state=0).fit(X, names)
    floats = y.astype(float)
    floats[5] = np.nan
    with pytest.raises(DataError, match=r"y has 1 missing label\(s\) \(None/NaN\) at rows 5 "):
        LabelAuditor(random_state=0).fit(X, floats)


def test_an_embedding_column_of_vectors_is_one_feature_per_dimension(cli, tmp_path):
    """Embeddings are stored in Parquet as a list (or fixed-size list) of numbers per row: each
    dimension is a feature, for the audit and for trusted rows alike; vectors of different
    lengths are named and left out."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    flip = rng.random(len(y)) < 0.1
    y_bad = np.where(flip, (y + rng.integers(1, 10, len(y))) % 10, y)
    lists = pa.array(list(X.astype(np.float32)), type=pa.list_(pa.float32()))
    fixed = pa.FixedSizeListArray.from_arrays(pa.array(X.astype(np.float32).ravel()), 64)
    for name, col in (("lists.parquet", lists), ("fixed.parquet", fixed)):
        path = tmp_path / name
        pq.write_table(pa.table({"id": np.arange(len(y)), "embedding": col, "label": y_bad}), path)
        ds = load(path, label="label", id="id")
        assert ds.X.shape == (len(y), 64) and ds.feature_names[:2] == ["embedding[0]", "embedding[1]"]
        assert ds.encoding["embedding"] == "vector (64 dimensions)"
        np.testing.assert_allclose(ds.X, X.astype(np.float32))
    res = cli("audit", tmp_path / "lists.parquet", "--label", "label", "--id", "id", "--format", "json")
    assert res.exit_code == 0, res.stderr
    flagged = np.array([r["flagged"] for r in json.loads(res.stdout)["rows"]])
    assert 2 * (flagged & flip).sum() / (flagged.sum() + flip.sum()) > 0.85  # F1, as on the pixels
    rows = np.arange(0, len(y), 20)
    trusted = pa.table({"id": rows, "embedding": lists.take(pa.array(rows)), "label": y[rows]})
    pq.write_table(trusted, tmp_path / "trusted.parquet")
    res = cli("audit", tmp_path / "lists.parquet", "--label", "label", "--id", "id", "--trusted",
              tmp_path / "trusted.parquet", "--format", "json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["verdict"]["verified_estimate"]["verified"] == len(rows)
    ragged = pa.array([[1.0, 2.0]] * 50 + [[1.0]] * 50, type=pa.list_(pa.float64()))
    pq.write_table(pa.table({"v": ragged, "x": np.arange(100.0) % 7, "label": np.arange(100) % 2}),
                   tmp_path / "ragged.parquet")
    assert load(tmp_path / "ragged.parquet", label="label").encoding["v"] == "dropped: vectors of different lengths"
