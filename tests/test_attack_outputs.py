"""What `flipguard attack` (and assess, demo) write: files that are what their names say, all of
them or none, and warnings and errors in the CLI's words.  Real files in tmp_path, through the
real entry point."""

from __future__ import annotations

import bz2
import gzip
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

SPECIES = np.array(["setosa", "versicolor", "virginica"])


def _iris_rows():
    from sklearn.datasets import load_iris

    data = load_iris()
    return data.data, SPECIES[data.target]


def _iris_text(path, sep: str):
    """scikit-learn's iris written by hand with ``sep``, numbers with one decimal (3.0, not 3)."""
    X, y = _iris_rows()
    lines = [sep.join(["rid", "sepal_length", "sepal_width", "petal_length", "petal_width", "species"])]
    lines += [sep.join([str(1000 + i), *(f"{v:.1f}" for v in X[i]), y[i]]) for i in range(len(y))]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def iris_tsv(tmp_path):
    return _iris_text(tmp_path / "iris.tsv", "\t")


@pytest.fixture
def iris_csv(tmp_path):
    return _iris_text(tmp_path / "iris.csv", ",")


def _attack(cli, src, *extra, label="species"):
    return cli("attack", src, "--label", label, "--id", "rid", "--seed", "3", *extra)


def _error(r) -> str:
    assert r.exit_code == 2 and r.stdout == "" and r.stderr.count("\n") == 1, r
    return r.stderr


# --- 1. a file is what its name says ---------------------------------------------------------

def test_gz_outputs_are_gzip_and_hold_the_same_bytes_as_the_plain_copy(cli, tmp_path, iris_csv):
    plain = tmp_path / "plain.csv"
    assert _attack(cli, iris_csv, "--rate", "0.2", "--out", plain).exit_code == 0
    out, flips = tmp_path / "o.csv.gz", tmp_path / "f.csv.gz"
    r = _attack(cli, iris_csv, "--rate", "0.2", "--out", out, "--flips", flips)
    assert r.exit_code == 0, r.stderr
    assert out.read_bytes()[:2] == b"\x1f\x8b" and flips.read_bytes()[:2] == b"\x1f\x8b"
    assert gzip.decompress(out.read_bytes()) == plain.read_bytes()  # the byte-preserving edit, compressed
    log = pacsv.read_csv(flips)  # pyarrow decompresses by the name, as flipguard's reader does
    assert log.num_rows == 30 and log.column_names == ["row", "id", "original", "new"]


def test_a_gz_input_is_edited_in_its_own_bytes_and_bz2_is_bz2(cli, tmp_path, iris_csv):
    src = tmp_path / "in.csv.gz"
    src.write_bytes(gzip.compress(iris_csv.read_bytes()))
    plain, packed = tmp_path / "plain.csv", tmp_path / "o.csv.bz2"
    assert _attack(cli, iris_csv, "--rate", "0.2", "--out", plain).exit_code == 0
    r = _attack(cli, src, "--rate", "0.2", "--out", packed)
    assert r.exit_code == 0, r.stderr
    assert packed.read_bytes()[:3] == b"BZh"
    assert bz2.decompress(packed.read_bytes()) == plain.read_bytes()


def test_parquet_input_to_gz_and_tsv_outputs(cli, tmp_path, iris_csv):
    src = tmp_path / "iris.parquet"
    pq.write_table(pacsv.read_csv(iris_csv), src)
    for name in ("o.csv.gz", "o.tsv"):
        r = _attack(cli, src, "--rate", "0.2", "--out", tmp_path / name)
        assert r.exit_code == 0, r.stderr
    assert (tmp_path / "o.csv.gz").read_bytes()[:2] == b"\x1f\x8b"
    first = (tmp_path / "o.tsv").read_text().splitlines()[1]
    assert first.count("\t") == 5 and "," not in first
    back = pacsv.read_csv(tmp_path / "o.tsv", parse_options=pacsv.ParseOptions(delimiter="\t"))
    gz = pacsv.read_csv(tmp_path / "o.csv.gz")
    assert back.column_names == gz.column_names == pacsv.read_csv(iris_csv).column_names
    assert back.column("species").to_pylist() == gz.column("species").to_pylist()
    assert sum(a != b for a, b in zip(back.column("species").to_pylist(),
                                      pacsv.read_csv(iris_csv).column("species").to_pylist())) == 30


def test_tsv_to_tsv_edits_only_the_flipped_label_fields(cli, tmp_path, iris_tsv):
    out, flips = tmp_path / "o.tsv", tmp_path / "f.tsv"
    r = _attack(cli, iris_tsv, "--rate", "0.2", "--out", out, "--flips", flips, "--json")
    assert r.exit_code == 0, r.stderr
    before, after = iris_tsv.read_text().split("\n"), out.read_text().split("\n")
    assert len(before) == len(after) and before[0] == after[0]
    changed = [i - 1 for i, (a, b) in enumerate(zip(before, after)) if a != b]
    log = pacsv.read_csv(flips, parse_options=pacsv.ParseOptions(delimiter="\t"))
    assert changed == log.column("row").to_pylist() and len(changed) == 30
    for i in changed:  # every field but the label is byte for byte the input's ("3.0" stays "3.0")
        assert before[i + 1].split("\t")[:-1] == after[i + 1].split("\t")[:-1]
        assert after[i + 1].split("\t")[-1] == log.column("new")[changed.index(i)].as_py()
    assert "\t3.0\t" in out.read_text()


def test_csv_to_tsv_is_tab_separated(cli, tmp_path, iris_csv):
    out = tmp_path / "o.tsv"
    assert _attack(cli, iris_csv, "--rate", "0.2", "--out", out).exit_code == 0
    lines = out.read_text().splitlines()
    assert all(ln.count("\t") == 5 and "," not in ln for ln in lines)
    assert pacsv.read_csv(out, parse_options=pacsv.ParseOptions(delimiter="\t")).num_rows == 150


def test_write_table_follows_the_name_for_every_command():
    """The shared writer (attack --flips, certify --out, audit, clean --log) compresses by name."""
    import tempfile

    from flipguard.data import read_table, write_table

    tbl = pa.table({"row": [0, 1, 2], "name": ["a b", "c,d", "e"]})
    with tempfile.TemporaryDirectory() as d:
        for name, magic in (("t.csv.gz", b"\x1f\x8b"), ("t.csv.bz2", b"BZh"), ("t.tsv", b"\"row\"\t\"name\"")):
            path = os.path.join(d, name)
            write_table(tbl, path)
            with open(path, "rb") as fh:
                assert fh.read(len(magic)) == magic, name
            back, fmt, _ = read_table(path)
            assert fmt == "csv" and back.to_pylist() == tbl.to_pylist(), name


def test_an_output_name_the_reader_would_misread_is_refused(cli, tmp_path, iris_csv):
    out = tmp_path / "o.tsv.gz"
    assert _error(_attack(cli, iris_csv, "--rate", "0.2", "--out", out)) == \
        f"Error: --out {out}: unsupported output format '.gz'; use .csv or .parquet\n"
    assert list(tmp_path.iterdir()) == [iris_csv]


# --- 2. a rate that flips nothing ----------------------------------------------------------------

def test_a_rate_that_rounds_to_zero_flips_warns_and_copies(cli, tmp_path, iris_csv):
    out = tmp_path / "o.csv"
    r = _attack(cli, iris_csv, "--rate", "0.001", "--out", out, "--json")
    assert r.exit_code == 0
    text = ("--rate 0.001 rounds to 0 flips on this data (150 rows): nothing was flipped and the output is "
            "a copy of the input")
    assert r.stderr == f"warning: {text}\n"
    info = json.loads(r.stdout)
    assert info["n_flipped"] == 0 and info["warnings"] == [text]
    assert out.read_bytes() == iris_csv.read_bytes()
    r = _attack(cli, iris_csv, "--rate", "0.01", "--out", out, "--json")  # 1.5 rounds to 2: no warning
    assert r.exit_code == 0 and r.stderr == "" and json.loads(r.stdout)["warnings"] == []


def test_a_per_class_rate_that_rounds_to_zero_warns_for_that_class(cli, tmp_path, iris_csv):
    r = _attack(cli, iris_csv, "--rate", "setosa=0.001,virginica=0.2", "--out", tmp_path / "o.csv")
    assert r.exit_code == 0
    assert r.stderr == ("warning: --rate setosa=0.001 rounds to 0 flips of class 'setosa' (50 rows): none of "
                        "its labels was flipped\n")


def test_assess_warns_about_runs_that_flipped_nothing(cli, tmp_path, iris_csv):
    r = cli("assess", iris_csv, "--label", "species", "--id", "rid", "--strategies", "random",
            "--rates", "0.001,0.2", "--seeds", "2", "--out", tmp_path / "a", "--no-report", "-j", "1", "--json")
    assert r.exit_code == 0, r.stderr
    assert r.stderr == ("warning: --rates 0.001 flipped 0 rows with random in 2 of 2 seed(s) (the rate rounds "
                        "to 0 flips of the rows it applies to): those runs measure no attack\n")
    d = json.loads(r.stdout)
    assert {run["n_flipped"] for run in d["runs"] if run["rate"] == 0.001} == {0}
    # the JSON and assessment.json carry the warning too, in the library's words
    assert d["warnings"] == [r.stderr[len("warning: --rates "):].rstrip("\n").join(["rate ", ""])]
    assert json.loads((tmp_path / "a" / "assessment.json").read_text())["warnings"] == d["warnings"]


# --- 3. all outputs or none ----------------------------------------------------------------------

def test_an_unwritable_flips_path_is_refused_before_the_copy_is_written(cli, tmp_path, iris_csv):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    out, flips = tmp_path / "o.csv", blocker / "f.csv"
    assert _error(_attack(cli, iris_csv, "--rate", "0.1", "--out", out, "--flips", flips)) == \
        f"Error: --flips {flips}: {blocker} is a file, not a folder\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "iris.csv"]


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc, where no file can be created")
def test_a_folder_where_no_file_can_be_created_is_refused_up_front(cli, tmp_path, iris_csv):
    out = tmp_path / "o.csv"
    r = _attack(cli, iris_csv, "--rate", "0.1", "--out", out, "--flips", "/proc/f.csv")
    assert _error(r).startswith("Error: --flips /proc/f.csv: cannot create files in /proc (")
    assert ".tmp" not in r.stderr and not out.exists()


def test_a_failure_writing_the_second_output_removes_the_first(cli, tmp_path, iris_csv, monkeypatch):
    """Up-front checks cannot foresee a full disk: the outputs are renamed into place together."""
    import errno

    from flipguard.data import _read

    real = _read._write

    def failing(tbl, dst, *args, **kwargs):
        if ".f.csv." in str(dst):
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real(tbl, dst, *args, **kwargs)

    monkeypatch.setattr(_read, "_write", failing)
    out, flips = tmp_path / "o.csv", tmp_path / "f.csv"
    assert _error(_attack(cli, iris_csv, "--rate", "0.1", "--out", out, "--flips", flips)) == \
        f"Error: cannot write {flips}: No space left on device\n"
    assert list(tmp_path.iterdir()) == [iris_csv]  # no copy, no log, no temporary file


def test_atomic_group_renames_all_or_nothing(tmp_path):
    from flipguard._io import atomic_group, atomic_write_text
    from flipguard.exceptions import OutputError

    (tmp_path / "b.txt").mkdir()  # os.replace onto a folder fails only at the end
    with pytest.raises(OutputError, match=r"^cannot write .*b\.txt: it is a folder$"):
        with atomic_group():
            atomic_write_text(tmp_path / "a.txt", "first")
            atomic_write_text(tmp_path / "b.txt", "second")
            assert not (tmp_path / "a.txt").exists()  # nothing appears before the end
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.txt"]
    with atomic_group():
        atomic_write_text(tmp_path / "a.txt", "first")
    assert (tmp_path / "a.txt").read_text() == "first"


def test_assess_refuses_a_folder_where_its_report_goes(cli, tmp_path, iris_csv):
    out = tmp_path / "hz"
    (out / "report.html").mkdir(parents=True)
    assert _error(cli("assess", iris_csv, "--label", "species", "--strategies", "random", "--rates", "0.2",
                      "--seeds", "1", "--out", out)) == \
        (f"Error: --out {out}: {out / 'report.html'} is a folder, where the file report.html goes; remove or "
         "rename it, or give another --out\n")
    assert [p.name for p in out.iterdir()] == ["report.html"]


def test_assess_leaves_no_folder_when_writing_fails(cli, tmp_path, iris_csv, monkeypatch):
    from flipguard.cli import _assess

    def failing(result, out, **kwargs):  # the folder and the JSON were written; the report fails
        out.mkdir()
        _assess.atomic_write_text(out / "assessment.json", "{}")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_assess, "_write_outputs", failing)
    out = tmp_path / "new"
    r = cli("assess", iris_csv, "--label", "species", "--strategies", "random", "--rates", "0.2", "--seeds", "1",
            "--out", out, "-j", "1")
    assert r.exit_code == 2 and not out.exists()


def test_demo_refuses_a_file_as_out_before_any_work(cli, tmp_path):
    out = tmp_path / "afile"
    out.write_text("keep me")
    assert _error(cli("demo", "--out", out)) == \
        (f"Error: --out {out} is a file; demo writes a folder (report.html and assessment.json): give a "
         "folder name\n")
    assert out.read_text() == "keep me"


# --- 4. a class given twice -----------------------------------------------------------------------

def test_a_class_given_twice_in_rate_is_refused(cli, tmp_path, iris_csv):
    out = tmp_path / "o.csv"
    assert _error(_attack(cli, iris_csv, "--rate", "setosa=0.5,setosa=0.2", "--out", out)) == \
        "Error: --rate gives class 'setosa' twice; give each class one rate\n"
    assert not out.exists()


def test_the_library_refuses_two_keys_for_one_class():
    from flipguard.attacks import RandomFlip
    from flipguard.exceptions import InvalidParameterError

    with pytest.raises(InvalidParameterError, match=r"^RandomFlip: the budget names class 0 twice \('0' and 0\)"):
        RandomFlip(rate={"0": 0.5, 0: 0.2}).fit_resample(None, np.repeat([0, 1], 20))


# --- 5./6. errors in the user's words --------------------------------------------------------------

@pytest.mark.parametrize("extra, message", [
    (["--n-flips", "151"], "--strategy random: cannot flip 151 of 150 eligible rows (--n-flips 151)"),
    (["--strategy", "noise_matrix", "--pairs", "setosa=versicolor", "--rate", "0.1"],
     "--strategy noise_matrix: --pairs needs --kind pair"),
    (["--strategy", "noise_matrix", "--kind", "pair", "--pairs", "setosa=versicolor", "--rate", "virginica=0.1"],
     "--strategy noise_matrix: --rate names class 'virginica', which has no pair"),
    (["--strategy", "targeted", "--rate", "setosa=0.1"],
     "--strategy targeted flips rows of one class (--source): give --rate as one fraction of that class, "
     "not class=rate pairs"),
    (["--strategy", "targeted", "--source", "setosa", "--n-flips", "51"],
     "--strategy targeted: cannot flip 51 of 50 eligible rows (--n-flips 51)"),
])
def test_flipper_errors_name_flags_not_classes(cli, tmp_path, iris_csv, extra, message):
    out = tmp_path / "o.csv"
    assert _error(_attack(cli, iris_csv, *extra, "--out", out)) == f"Error: {message}\n"
    assert not out.exists()


def test_alfa_on_three_classes_is_said_as_assess_says_it(cli, tmp_path, iris_csv):
    assert _error(_attack(cli, iris_csv, "--strategy", "alfa", "--rate", "0.1", "--out", tmp_path / "o.csv")) == \
        (f"Error: ALFA attacks binary classifiers, but {iris_csv} has 3 classes (setosa, versicolor, virginica); "
         "use another strategy or keep two classes\n")


def test_the_python_api_keeps_its_own_words():
    from flipguard.attacks import NoiseMatrixFlip, RandomFlip
    from flipguard.exceptions import InvalidParameterError

    y = np.repeat([0, 1], 20)
    with pytest.raises(InvalidParameterError, match=r"^RandomFlip: cannot flip 41 of 40 eligible rows$"):
        RandomFlip(n_flips=41).fit_resample(None, y)
    with pytest.raises(InvalidParameterError, match=r"^NoiseMatrixFlip: pairs needs kind='pair'$"):
        NoiseMatrixFlip(pairs={0: 1}).fit_resample(None, y)


def test_unwritable_outputs_name_the_users_path_not_a_temporary_file(cli, tmp_path, iris_csv):
    r = _attack(cli, iris_csv, "--rate", "0.1", "--out", "/proc/nope.csv")
    if os.path.isdir("/proc/self"):
        assert _error(r).startswith("Error: --out /proc/nope.csv: cannot create files in /proc (")
    assert ".tmp" not in r.stderr and "Errno" not in r.stderr
