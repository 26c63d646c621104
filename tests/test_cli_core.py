"""`flipguard attack` and `flipguard assess` on real files of scikit-learn's breast-cancer data."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from flipguard.data import load


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_attack_writes_poisoned_copy_and_flip_list(cli, tmp_path, request, fmt):
    src = request.getfixturevalue(f"breast_cancer_{fmt}")
    before = _digest(src)
    out, flips = tmp_path / f"poisoned.{fmt}", tmp_path / "flips.csv"
    r = cli("attack", src, "--label", "diagnosis", "--id", "patient_id", "--strategy", "random",
            "--rate", "0.2", "--seed", "7", "--out", out, "--flips", flips, "--json")
    assert r.exit_code == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["n_flipped"] == round(0.2 * 569) and info["format"] == fmt
    assert _digest(src) == before  # input untouched

    orig = load(str(src), label="diagnosis", id="patient_id")
    pois = load(str(out), label="diagnosis", id="patient_id")
    np.testing.assert_array_equal(pois.X, orig.X)  # features never change
    np.testing.assert_array_equal(pois.ids, orig.ids)
    changed = np.flatnonzero(pois.y != orig.y)
    listing = pacsv.read_csv(flips).to_pydict()
    assert listing["row"] == changed.tolist()
    assert listing["id"] == orig.ids[changed].tolist()
    assert listing["original"] == orig.labels()[changed].tolist()
    assert listing["new"] == pois.labels()[changed].tolist()
    assert sum(t["count"] for t in info["transitions"]) == len(changed)

    # Same seed, same flips.
    again = tmp_path / f"again.{fmt}"
    cli("attack", src, "--label", "diagnosis", "--rate", "0.2", "--seed", "7", "--out", again)
    assert load(str(again), label="diagnosis").y.tolist() == pois.y.tolist()


def test_attack_targeted_per_class_rate_and_format_switch(cli, tmp_path, breast_cancer_csv):
    out = tmp_path / "p.parquet"
    r = cli("attack", breast_cancer_csv, "--label", "diagnosis", "--strategy", "targeted",
            "--source", "malignant", "--target", "benign", "--n-flips", "50", "--out", out, "--json")
    assert r.exit_code == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["transitions"] == [{"from": "malignant", "to": "benign", "count": 50}]
    assert pq.read_table(out).num_rows == 569


def test_attack_errors(cli, tmp_path, breast_cancer_csv):
    cases = [
        (["--strategy", "nope", "--rate", "0.1"], "Unknown attack strategy 'nope'"),
        (["--rate", "0.1", "--n-flips", "3"], "give exactly one of --rate and --n-flips"),
        (["--rate", "abc"], "--rate must be a number or class=rate pairs"),
        (["--rate", "cancer=0.1"], "--rate names class 'cancer'"),
        (["--rate", "1.5"], "The 'rate' parameter of RandomFlip must be a float in the range (0.0, 1.0]"),
        (["--n-flips", "100000"], "cannot flip 100000 of 569 eligible rows"),
        (["--strategy", "random", "--source", "benign", "--rate", "0.1"], "Attack strategy 'random' has no parameter(s) source"),
    ]
    for extra, message in cases:
        r = cli("attack", breast_cancer_csv, "--label", "diagnosis", *extra, "--out", tmp_path / "x.csv")
        assert r.exit_code == 2, (extra, r)
        assert r.stderr.startswith("Error: ") and message in r.stderr, (extra, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "x.csv").exists()
    r = cli("attack", breast_cancer_csv, "--label", "diagnosis", "--rate", "0.1", "--out", breast_cancer_csv)
    assert r.exit_code == 2 and "is the input file" in r.stderr


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_assess_cli_on_breast_cancer(cli, tmp_path, request, fmt):
    src = request.getfixturevalue(f"breast_cancer_{fmt}")
    out = tmp_path / "rep"
    r = cli("assess", src, "--label", "diagnosis", "--id", "patient_id", "--strategies", "random,targeted",
            "--rates", "0.1,0.3", "--seeds", "2", "--out", out, "--json", "--n-jobs", "1")
    assert r.exit_code == 0, r.stderr
    d = json.loads(r.stdout)
    assert {(s["strategy"], s["rate"]) for s in d["summary"]} == \
        {("none", 0.0), ("random", 0.1), ("random", 0.3), ("targeted", 0.1), ("targeted", 0.3)}
    assert (out / "report.html").stat().st_size > 10_000
    assert json.loads((out / "assessment.json").read_text())["summary"] == d["summary"]
    # Random flipping hurts the poisoned validation score far more than the truth.
    row = next(s for s in d["summary"] if (s["strategy"], s["rate"]) == ("random", 0.3))
    assert row["illusion_gap"]["mean"] < -0.1


def test_assess_table_output_and_bad_rates(cli, tmp_path, breast_cancer_csv):
    r = cli("assess", breast_cancer_csv, "--label", "diagnosis", "--strategies", "random", "--rates", "0.2",
            "--seeds", "1", "--out", tmp_path / "o", "--no-report", "-j", "1")
    assert r.exit_code == 0, r.stderr
    assert "illusion gap" in r.stdout and "random" in r.stdout
    assert not (tmp_path / "o" / "report.html").exists()
    r = cli("assess", breast_cancer_csv, "--label", "diagnosis", "--rates", "x,y", "--out", tmp_path / "p")
    assert r.exit_code == 2 and "--rates: expected comma-separated numbers" in r.stderr


@pytest.mark.parametrize("command", ["attack", "assess", "demo"])
def test_help_has_an_example(cli, command):
    r = cli(command, "--help")
    assert r.exit_code == 0 and "Example" in r.stdout
