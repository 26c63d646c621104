"""Input and output hygiene of the commands that read a table: options a folder cannot honour,
outputs that would clobber an input, duplicated column names, text that is not UTF-8, columns
a CSV cannot hold, columns left out of the features, and embeddings in a --features file.

Every bad input is one ``Error:`` line on stderr, exit 2, nothing written and the input untouched."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

LABEL = "diagnosis"
DUPLICATED = ("readers disagree on which one counts (some take the first, some the last), so flipguard "
              "refuses to guess: rename or remove the extra column")


def _one_line_error(res, message: str) -> None:
    assert res.exit_code == 2, (res.stdout, res.stderr)
    assert res.stderr == f"Error: {message}\n"
    assert res.stdout == ""


def _csv(path, table: pa.Table):
    pacsv.write_csv(table, path)
    return path


def _bytes(paths) -> dict:
    return {p: p.read_bytes() for p in paths}


@pytest.fixture
def cancer(tmp_path, breast_cancer_frame):
    return _csv(tmp_path / "bc.csv", breast_cancer_frame)


@pytest.fixture
def verified(tmp_path, breast_cancer_frame):
    """A reviewer's sheet: ids and verified labels of 20 rows."""
    return _csv(tmp_path / "tr.csv", breast_cancer_frame.select(["patient_id", LABEL]).slice(0, 20))


def _vectors(n: int = 240, d: int = 6, flip_rate: float = 0.1, seed: int = 0):
    """Three seeded Gaussian blobs in ``d`` dimensions, ``flip_rate`` of the labels moved to the next
    class: ``(ids, labels, X float32)``."""
    rng = np.random.RandomState(seed)
    truth = np.arange(n) % 3
    X = (rng.normal(size=(n, d)) + 4.0 * np.eye(3, d)[truth]).astype(np.float32)
    y = truth.copy()
    flipped = rng.choice(n, int(flip_rate * n), replace=False)
    y[flipped] = (y[flipped] + 1) % 3
    return np.arange(7000, 7000 + n), np.array(["cat", "dog", "fox"])[y], X


def _list_column(X: np.ndarray, fixed: bool = False) -> pa.Array:
    arr = pa.FixedSizeListArray.from_arrays(pa.array(X.ravel()), X.shape[1])
    return arr if fixed else arr.cast(pa.list_(pa.float32()))


# -- 1. a folder (partitioned dataset) refuses what it cannot honour ------------------------------
@pytest.fixture
def folder(tmp_path, breast_cancer_frame):
    root = tmp_path / "lake"
    root.mkdir()
    pq.write_table(breast_cancer_frame.slice(0, 300), root / "a.parquet")
    pq.write_table(breast_cancer_frame.slice(300), root / "b.parquet")
    return root


def test_folder_audit_refuses_every_single_table_option_it_was_given(cli, folder, tmp_path):
    res = cli("audit", folder, "--label", LABEL, "--id", "patient_id", "--trusted", tmp_path / "tr_missing.csv",
              "--pred-probs", tmp_path / "pp.csv", "--features", tmp_path / "nonexist.csv",
              "--rules", tmp_path / "nonexist.yaml", "--text", "nope", "--report", tmp_path / "r.html", "--json")
    _one_line_error(res, "--trusted, --pred-probs, --features, --text, --rules, --report are not supported on a "
                         "partitioned dataset (a folder or prefix of files, audited by confident learning per "
                         "partition on its numeric columns); audit a single file for them")
    assert not (tmp_path / "r.html").exists()
    assert not (tmp_path / "lake.flipguard-audit").exists()


@pytest.mark.parametrize("option", [("--keep", "mean_radius"), ("--reference-label", "mean_radius"),
                                    ("--format", "csv")])
def test_folder_audit_refuses_one_option(cli, folder, option):
    res = cli("audit", folder, "--label", LABEL, *option)
    name = "--format csv" if option[0] == "--format" else option[0]
    _one_line_error(res, f"{name} is not supported on a partitioned dataset (a folder or prefix of files, "
                         "audited by confident learning per partition on its numeric columns); audit a single "
                         "file for it")


def _vector_folder(tmp_path, with_numbers: bool):
    ids, y, X = _vectors()
    root = tmp_path / ("mixed" if with_numbers else "emb")
    root.mkdir()
    cols = {"img_id": ids, "animal": y, "embedding": _list_column(X)}
    if with_numbers:
        cols.update({f"x{j}": X[:, j].astype(np.float64) for j in range(X.shape[1])})
    tbl = pa.table(cols)
    pq.write_table(tbl.slice(0, 120), root / "a.parquet")
    pq.write_table(tbl.slice(120), root / "b.parquet")
    return root


@pytest.mark.parametrize("extra", [(), ("--features", "embedding")])
def test_folder_with_only_an_embedding_column_says_embeddings_are_not_read_there(cli, tmp_path, extra):
    root = _vector_folder(tmp_path, with_numbers=False)
    res = cli("audit", root, "--label", "animal", "--id", "img_id", *extra)
    if extra:  # --features names a file: a folder refuses it
        assert res.exit_code == 2 and res.stderr.startswith("Error: --features is not supported on a partitioned")
        return
    _one_line_error(res, "partition a.parquet: column(s) 'embedding' hold vectors (embeddings), which a "
                         "partitioned audit does not read yet (it uses one number per column); audit a single "
                         "file, or store one number per column")
    assert not (tmp_path / "emb.flipguard-audit").exists()


def test_folder_with_an_embedding_beside_numbers_is_audited_and_says_the_embedding_is_unused(cli, tmp_path):
    root = _vector_folder(tmp_path, with_numbers=True)
    res = cli("audit", root, "--label", "animal", "--id", "img_id", "--json")
    assert res.exit_code == 0, res.stderr
    assert ("warning: partition a.parquet: column(s) 'embedding' hold vectors (embeddings), which a partitioned "
            "audit does not read yet (it uses one number per column): not used as features\n") in res.stderr
    assert json.loads(res.stdout)["n_samples"] == 240


# -- 2. no output may clobber an input or another output -------------------------------------------
def test_audit_out_that_is_the_trusted_file_is_refused_and_the_file_kept(cli, cancer, verified):
    before = _bytes([cancer, verified])
    res = cli("audit", cancer, "--label", LABEL, "--id", "patient_id", "--trusted", verified,
              "--out", verified, "--format", "csv")
    _one_line_error(res, f"--out {verified} is the input file; flipguard never modifies its input")
    assert _bytes([cancer, verified]) == before


@pytest.mark.parametrize("option", ["--pred-probs", "--features", "--rules"])
def test_audit_report_that_is_an_input_file_is_refused(cli, cancer, tmp_path, option):
    other = tmp_path / "other.csv"
    other.write_text("whatever\n")
    res = cli("audit", cancer, "--label", LABEL, option, other, "--report", other)
    _one_line_error(res, f"--report {other} is the input file; flipguard never modifies its input")
    assert other.read_text() == "whatever\n"


def test_audit_report_and_out_naming_one_file_is_refused(cli, cancer, tmp_path):
    target = tmp_path / "r.html"
    res = cli("audit", cancer, "--label", LABEL, "--report", target, "--out", target, "--format", "csv")
    _one_line_error(res, f"--out and --report name the same file {target}; give two files")
    assert not target.exists()


def test_audit_refuses_an_unknown_out_extension_before_the_work(cli, cancer, tmp_path):
    res = cli("audit", cancer, "--label", LABEL, "--out", tmp_path / "rows.xlsx")
    _one_line_error(res, f"--out {tmp_path / 'rows.xlsx'}: unsupported output format '.xlsx'; use .csv or .parquet")


def test_certify_out_that_is_the_test_file_is_refused(cli, cancer, tmp_path, breast_cancer_frame):
    test = _csv(tmp_path / "test.csv", breast_cancer_frame.slice(0, 50))
    before = _bytes([test])
    res = cli("certify", cancer, "--label", LABEL, "--test", test, "--out", test)
    _one_line_error(res, f"--out {test} is the input file; flipguard never modifies its input")
    assert _bytes([test]) == before


# -- 3. duplicated column names ----------------------------------------------------------------------
def _with_header(src, dst, rename: dict[int, str]):
    lines = src.read_text().split("\n")
    header = lines[0].split(",")
    for i, name in rename.items():
        header[i] = f'"{name}"'
    dst.write_text("\n".join([",".join(header), *lines[1:]]))
    return dst


@pytest.mark.parametrize("command", [("audit",), ("clean", "--out", "OUT"), ("certify",)])
@pytest.mark.parametrize("name", ["mean_radius", LABEL])
def test_a_duplicated_column_is_one_error_line(cli, cancer, tmp_path, command, name):
    dup = _with_header(cancer, tmp_path / "dup.csv", {2: name})
    out = tmp_path / "out.csv"
    res = cli(*(str(out) if c == "OUT" else c for c in command), dup, "--label", LABEL, "--id", "patient_id")
    _one_line_error(res, f"{dup}: column(s) '{name}' appear more than once; {DUPLICATED}")
    assert not out.exists()


@pytest.mark.parametrize("command", [("audit",), ("clean", "--out", "OUT")])
def test_a_trusted_sheet_with_a_duplicated_column_is_one_error_line(cli, cancer, tmp_path, command):
    sheet = tmp_path / "tr_dup.csv"
    sheet.write_text("patient_id,diagnosis,diagnosis\n1000,malignant,malignant\n1001,malignant,benign\n")
    out = tmp_path / "out.csv"
    res = cli(*(str(out) if c == "OUT" else c for c in command), cancer, "--label", LABEL, "--id", "patient_id",
              "--trusted", sheet)
    _one_line_error(res, f"{sheet}: column(s) 'diagnosis' appear more than once; {DUPLICATED}")
    assert not out.exists()


def test_a_features_file_with_a_duplicated_column_is_one_error_line(cli, cancer, tmp_path):
    feats = tmp_path / "feat_dup.csv"
    rng = np.random.RandomState(0)
    rows = "\n".join(f"{i},{a:.4f},{b:.4f}" for i, a, b in zip(range(1000, 1569), rng.rand(569), rng.rand(569)))
    feats.write_text(f"patient_id,e0,e0\n{rows}\n")
    res = cli("audit", cancer, "--label", LABEL, "--id", "patient_id", "--features", feats)
    _one_line_error(res, f"{feats}: column(s) 'e0' appear more than once; {DUPLICATED}")


# -- 4. text that is not UTF-8 ------------------------------------------------------------------------
def _latin1(tmp_path, breast_cancer_frame, column: str, every_column: bool = False):
    """The breast-cancer table (a few columns, or ``every_column``) written as latin-1, with an accented
    value in ``column``."""
    tbl = breast_cancer_frame.select(["patient_id", "mean_radius", "mean_texture", "mean_area", LABEL])
    if every_column:
        tbl = breast_cancer_frame
    if column == "patient_id":
        tbl = tbl.set_column(0, "patient_id", pa.array([f"P\u00e9{i}" for i in range(tbl.num_rows)]))
    elif column == LABEL:
        lab = np.array(tbl.column(LABEL).to_pylist(), dtype=object)
        lab[lab == "benign"] = "b\u00e9nin"
        tbl = tbl.set_column(tbl.column_names.index(LABEL), LABEL, pa.array(lab.tolist()))
    else:
        tbl = tbl.append_column(column, pa.array([f"caf\u00e9 {i % 3}" for i in range(tbl.num_rows)]))
    path = tmp_path / f"latin1_{column}.csv"
    buf = pa.BufferOutputStream()
    pacsv.write_csv(tbl, buf)
    path.write_bytes(buf.getvalue().to_pybytes().decode("utf-8").encode("latin-1"))
    return path


@pytest.mark.parametrize("column,role", [(LABEL, "label"), ("patient_id", "id")])
@pytest.mark.parametrize("command", ["audit", "clean", "certify"])
def test_a_label_or_id_column_that_is_not_utf8_is_refused_and_nothing_is_written(
        cli, tmp_path, breast_cancer_frame, column, role, command):
    data = _latin1(tmp_path, breast_cancer_frame, column)
    outs = {"audit": ["--report", tmp_path / "r.html", "--json"],
            "clean": ["--out", tmp_path / "cc.csv", "--log", tmp_path / "l.csv"],
            "certify": ["--out", tmp_path / "radii.csv"]}[command]
    res = cli(command, data, "--label", LABEL, "--id", "patient_id", *outs)
    _one_line_error(res, f"{data}: {role} column '{column}' is not UTF-8 text (flipguard reads CSV as UTF-8 "
                         "text): save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)")
    assert sorted(p.name for p in tmp_path.iterdir()) == [data.name]


def test_a_feature_column_that_is_not_utf8_is_left_out_with_a_note(cli, tmp_path, breast_cancer_frame):
    data = _latin1(tmp_path, breast_cancer_frame, "remark")
    before = data.read_bytes()
    res = cli("clean", data, "--label", LABEL, "--id", "patient_id", "--out", tmp_path / "cc.csv", "--json")
    assert res.exit_code == 0, res.stderr
    said = "column(s) not used as features: 'remark' (not UTF-8 text; flipguard reads CSV as UTF-8)"
    assert res.stderr.count(f"note: {said}\n") == 1
    assert said in json.loads(res.stdout)["warnings"]
    assert data.read_bytes() == before
    # the copy keeps the latin-1 bytes of the column it did not use (only labels or rows change)
    assert "caf\u00e9 0".encode("latin-1") in (tmp_path / "cc.csv").read_bytes()


# -- 5. columns a CSV cannot hold ---------------------------------------------------------------------
@pytest.fixture
def embedded(tmp_path):
    ids, y, X = _vectors()
    path = tmp_path / "emb_data.parquet"
    pq.write_table(pa.table({"img_id": ids, "animal": y, "embedding": _list_column(X, fixed=True)}), path)
    return path


@pytest.mark.parametrize("command", [
    ("clean", "--log", "SIDE"),
    ("attack", "--rate", "0.1", "--flips", "SIDE"),
])
def test_a_list_column_to_csv_is_refused_before_anything_is_written(cli, embedded, tmp_path, command):
    out, side = tmp_path / "out.csv", tmp_path / "side.csv"
    res = cli(command[0], embedded, "--label", "animal", "--id", "img_id", "--out", out,
              *(str(side) if c == "SIDE" else c for c in command[1:]))
    _one_line_error(res, f"--out {out}: column 'embedding' is a list column; CSV cannot hold it: write .parquet")
    assert not out.exists() and not side.exists()


def test_a_list_column_to_parquet_is_kept(cli, embedded, tmp_path):
    res = cli("attack", embedded, "--label", "animal", "--id", "img_id", "--rate", "0.1",
              "--out", tmp_path / "out.parquet")
    assert res.exit_code == 0, res.stderr
    out = pq.read_table(tmp_path / "out.parquet")
    assert out.column("embedding").equals(pq.read_table(embedded).column("embedding"))


def test_write_table_refuses_a_list_column_as_csv(tmp_path):
    from flipguard.data import write_table
    from flipguard.exceptions import DataError

    tbl = pa.table({"id": [1, 2], "v": pa.array([[1.0, 2.0], [3.0, 4.0]])})
    with pytest.raises(DataError, match=r"column 'v' is a list column; CSV cannot hold it: write \.parquet"):
        write_table(tbl, tmp_path / "t.csv")
    assert list(tmp_path.iterdir()) == []


# -- 6. columns left out of the features are named -----------------------------------------------------
@pytest.fixture
def odd_columns(tmp_path):
    """An embedding DATA can use, beside columns it cannot: missing vectors, lists of strings, lists of
    lists, a struct and bytes."""
    ids, y, X = _vectors()
    n = len(ids)
    with_gaps = [None if i % 100 == 0 else row for i, row in enumerate(X.tolist())]
    path = tmp_path / "odd.parquet"
    pq.write_table(pa.table({
        "img_id": ids, "animal": y, "embedding": _list_column(X),
        "emb_gaps": pa.array(with_gaps, pa.list_(pa.float32())),
        "tags": pa.array([["a", "b"]] * n, pa.list_(pa.string())),
        "nested": pa.array([[[1.0]]] * n, pa.list_(pa.list_(pa.float64()))),
        "meta": pa.array([{"x": 1}] * n, pa.struct([("x", pa.int64())])),
        "raw": pa.array([b"\xe9"] * n, pa.binary()),
    }), path)
    return path


ODD_NOTE = ("column(s) not used as features: 'emb_gaps' (3 missing vector(s)); 'tags' (unsupported type "
            "list<element: string>); 'nested' (unsupported type list<element: list<element: double>>); 'meta' "
            "(unsupported type struct<x: int64>); 'raw' (unsupported type binary)")


def test_audit_names_the_columns_it_left_out_on_stderr_and_in_its_warnings(cli, odd_columns):
    res = cli("audit", odd_columns, "--label", "animal", "--id", "img_id", "--model", "logreg", "--json")
    assert res.exit_code == 0, res.stderr
    assert res.stderr.count(ODD_NOTE) == 1
    assert f"note: {ODD_NOTE}\n" in res.stderr
    assert ODD_NOTE in json.loads(res.stdout)["warnings"]


def test_certify_names_the_columns_it_left_out(cli, odd_columns):
    res = cli("certify", odd_columns, "--label", "animal", "--id", "img_id", "--partitions", "5", "--json")
    assert res.exit_code == 0, res.stderr
    assert f"note: {ODD_NOTE}\n" in res.stderr
    assert ODD_NOTE in json.loads(res.stdout)["warnings"]


def test_a_csv_column_with_no_value_is_named_as_all_missing(cli, tmp_path, breast_cancer_frame):
    tbl = breast_cancer_frame.select(["patient_id", "mean_radius", "mean_texture", LABEL])
    data = _csv(tmp_path / "empty_col.csv", tbl.append_column("later", pa.nulls(tbl.num_rows, pa.string())))
    res = cli("attack", data, "--label", LABEL, "--id", "patient_id", "--rate", "0.1", "--out", tmp_path / "p.csv")
    assert res.exit_code == 0, res.stderr
    assert "note: column(s) not used as features: 'later' (all values missing)\n" in res.stderr


# -- 7. embeddings stored as one list per row in a --features file -------------------------------------
@pytest.mark.parametrize("fixed", [False, True])
def test_features_file_with_a_list_column_audits_like_the_same_column_in_data(cli, tmp_path, fixed):
    ids, y, X = _vectors()
    in_data = tmp_path / "data.parquet"
    pq.write_table(pa.table({"img_id": ids, "animal": y, "embedding": _list_column(X)}), in_data)
    labels = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"img_id": ids, "animal": y}), labels)
    feats = tmp_path / "emb.parquet"
    order = np.random.RandomState(1).permutation(len(ids))  # matched by id, in any order
    pq.write_table(pa.table({"img_id": ids[order], "embedding": _list_column(X[order], fixed)}), feats)

    args = ("--label", "animal", "--id", "img_id", "--model", "logreg", "--json")
    by_file = cli("audit", labels, *args, "--features", feats)
    by_data = cli("audit", in_data, *args)
    assert by_file.exit_code == 0, by_file.stderr
    assert by_data.exit_code == 0, by_data.stderr
    a, b = json.loads(by_file.stdout), json.loads(by_data.stdout)
    assert a["n_flagged"] > 0
    assert [r["flagged"] for r in a["rows"]] == [r["flagged"] for r in b["rows"]]
    assert [r["score"] for r in a["rows"]] == pytest.approx([r["score"] for r in b["rows"]], abs=1e-9)


def test_features_file_with_missing_vectors_is_one_error_line(cli, tmp_path):
    ids, y, X = _vectors()
    labels = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"img_id": ids, "animal": y}), labels)
    feats = tmp_path / "emb.parquet"
    rows = [None if i == 5 else r for i, r in enumerate(X.tolist())]
    pq.write_table(pa.table({"img_id": ids, "embedding": pa.array(rows, pa.list_(pa.float32()))}), feats)
    res = cli("audit", labels, "--label", "animal", "--id", "img_id", "--features", feats)
    _one_line_error(res, f"{feats}: vector column 'embedding' cannot be used as features (1 missing vector(s))")


def test_certify_test_file_whose_label_is_not_utf8_is_refused(cli, cancer, tmp_path, breast_cancer_frame):
    test = _latin1(tmp_path, breast_cancer_frame, LABEL, every_column=True)
    res = cli("certify", cancer, "--label", LABEL, "--id", "patient_id", "--test", test,
              "--out", tmp_path / "radii.csv")
    _one_line_error(res, f"{test}: label column '{LABEL}' is not UTF-8 text (flipguard reads CSV as UTF-8 "
                         "text): save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)")
    assert not (tmp_path / "radii.csv").exists()


def test_read_features_expands_vector_columns_in_the_python_api_too(tmp_path):
    """The library's read_features takes the usual embedding format, as the CLI does."""
    from flipguard.data import load
    from flipguard.detection._io import read_features

    rng = np.random.default_rng(0)
    E = rng.normal(size=(40, 3))
    ds = load(pa.table({"rid": np.arange(40), "x": rng.normal(size=40), "y": np.repeat(["a", "b"], 20)}),
              label="y", id="rid")
    path = tmp_path / "emb.parquet"
    pq.write_table(pa.table({"rid": np.arange(40)[::-1],
                             "embedding": pa.array(E[::-1].tolist(), pa.list_(pa.float32()))}), path)
    F = read_features(path, ds, id="rid")
    np.testing.assert_allclose(F, E.astype(np.float32), rtol=0, atol=0)  # aligned by id, one column per dim


def test_zero_padded_csv_ids_come_back_as_written(cli, tmp_path, breast_cancer_frame):
    """'00040' is read as text and every output names it so (type inference made it 40, which
    does not join back to the file); ids that are plain integers stay integers."""
    from flipguard.data import load

    padded = breast_cancer_frame.set_column(0, "patient_id", pa.array([f"{i:05d}" for i in range(569)]))
    path = _csv(tmp_path / "padded.csv", padded)
    assert pacsv.read_csv(path).column("patient_id").type == pa.int64()  # what inference would give
    ds = load(path, label=LABEL, id="patient_id")
    assert ds.ids[:3].tolist() == ["00000", "00001", "00002"]
    res = cli("audit", path, "--label", LABEL, "--id", "patient_id", "--format", "json")
    assert res.exit_code == 0, res.stderr
    assert [r["id"] for r in json.loads(res.stdout)["rows"][:2]] == ["00000", "00001"]
    res = cli("clean", path, "--label", LABEL, "--id", "patient_id", "--mode", "relabel",
              "--out", tmp_path / "c.csv", "--log", tmp_path / "log.csv", "--no-guard")
    assert res.exit_code == 0, res.stderr
    logged = pacsv.read_csv(tmp_path / "log.csv", convert_options=pacsv.ConvertOptions(
        column_types={"id": pa.string()})).column("id").to_pylist()
    assert logged and all(len(i) == 5 for i in logged)
    plain = load(_csv(tmp_path / "plain.csv", breast_cancer_frame), label=LABEL, id="patient_id")
    assert plain.ids.dtype.kind == "i" and plain.ids[0] == 1000


def test_an_embedding_dimension_without_any_value_is_zero_and_warns_nothing():
    """nanmedian over an all-NaN dimension printed numpy's 'All-NaN slice encountered'."""
    import warnings

    from flipguard.data._load import _encode_vectors

    nan = float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        block, names, how = _encode_vectors(pa.array([[1.0, nan], [2.0, nan], [4.0, nan]],
                                                     pa.list_(pa.float64())), "e")
    assert names == ["e[0]", "e[1]"] and block[:, 1].tolist() == [0.0, 0.0, 0.0]
    assert block[:, 0].tolist() == [1.0, 2.0, 4.0] and "3 missing or infinite values imputed" in how


def test_a_folder_without_numeric_columns_names_what_it_holds(cli, tmp_path):
    """The error pointed to --features, which a folder audit refuses."""
    root = tmp_path / "lake"
    root.mkdir()
    for i in range(2):
        pq.write_table(pa.table({"rid": list(range(i * 50, i * 50 + 50)), "txt": ["a b"] * 50,
                                 "y": ["p", "q"] * 25}), root / f"p{i}.parquet")
    res = cli("audit", root, "--label", "y", "--id", "rid")
    assert (res.exit_code, res.stderr) == (2, f"Error: {root}: no numeric feature column (partitioned audits "
                                              "use numeric columns; the partitions hold: txt)\n")


@pytest.mark.parametrize("fmt, name", [("csv", "rows.parquet"), ("json", "rows.csv"), ("csv", "rows.json")])
def test_an_out_extension_that_names_another_format_is_refused(cli, cancer, tmp_path, fmt, name):
    """--format csv --out rows.parquet wrote CSV into a .parquet file."""
    res = cli("audit", cancer, "--label", LABEL, "--format", fmt, "--out", tmp_path / name)
    assert res.exit_code == 2 and res.stderr.startswith(f"Error: --format {fmt} writes {fmt.upper()}, but --out ")
    assert not (tmp_path / name).exists()
