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


# --- start-up weight -------------------------------------------------------------------------

_PROBE = """
import atexit, sys
heavy = ("sklearn", "matplotlib", "pandas", "scipy", "psycopg", "jinja2")
atexit.register(lambda: sys.__stderr__.write(
    "\\nLOADED=" + ",".join(m for m in heavy if m in sys.modules) + "\\n"))
from flipguard.cli import main
main(sys.argv[1:])
"""


def _heavy_modules_loaded(*args, cwd=None) -> tuple[int, list[str]]:
    """Run ``flipguard ARGS`` in a fresh interpreter; the heavy modules it imported."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _PROBE, *map(str, args)], capture_output=True, text=True,
                          timeout=120, cwd=cwd)
    line = [x for x in proc.stderr.splitlines() if x.startswith("LOADED=")]
    assert line, proc.stderr
    loaded = line[-1].removeprefix("LOADED=")
    return proc.returncode, [m for m in loaded.split(",") if m]


@pytest.mark.parametrize("args", [
    ["--version"], ["--help"], ["keygen", "--help"], ["seal", "--help"], ["verify", "--help"],
    ["diff", "--help"], ["ledger", "--help"], ["ledger", "verify", "--help"], ["pg", "--help"],
    ["pg", "protect", "--help"], ["attack", "--help"], ["assess", "--help"], ["audit", "--help"],
    ["clean", "--help"], ["certify", "--help"], ["demo", "--help"],
])
def test_help_and_version_load_no_heavy_library(args):
    code, loaded = _heavy_modules_loaded(*args)
    assert code == 0 and loaded == [], (args, loaded)


def test_integrity_commands_load_no_heavy_library(tmp_path):
    """keygen, seal, verify, diff and the ledger train nothing, so they never load scikit-learn.

    (pandas may appear here: pyarrow's own ``ChunkedArray.to_numpy`` imports it when installed;
    ``diff`` uses scipy for its class-balance test.)
    """
    data = tmp_path / "d.csv"
    data.write_text("id,x,label\n1,0.5,a\n2,1.5,b\n3,2.5,a\n")
    edited = tmp_path / "e.csv"
    edited.write_text("id,x,label\n1,0.5,a\n2,1.5,a\n3,2.5,a\n")
    runs = [
        (["keygen", "--out", tmp_path / "keys"], 0),
        (["seal", data, "--label", "label", "--id", "id", "--key", tmp_path / "keys" / "flipguard.key"], 0),
        (["verify", data, "--pubkey", tmp_path / "keys" / "flipguard.pub"], 0),
        (["diff", data, edited, "--label", "label", "--id", "id"], 1),
        (["ledger", "append", tmp_path / "p.ledger", "--step", "edit", "--input", data, "--output", edited,
          "--label", "label", "--id", "id", "--key", tmp_path / "keys" / "flipguard.key"], 0),
        (["ledger", "verify", tmp_path / "p.ledger", "--pubkey", tmp_path / "keys" / "flipguard.pub"], 0),
    ]
    for args, expected in runs:
        code, loaded = _heavy_modules_loaded(*args, cwd=tmp_path)
        loaded = [m for m in loaded if m not in ("pandas", "scipy")]
        assert (code, loaded) == (expected, []), (args, code, loaded)


def test_static_name_lists_match_the_registries():
    """The light lists the CLI shows in --help are exactly what the registries hold."""
    from flipguard import _names
    from flipguard.attacks import flipper_names
    from flipguard.integrity._snapshot import SECRET_ENV
    from flipguard.mitigation import CLEAN_MODES, strategy_names
    from flipguard.models import MODEL_NAMES

    assert sorted(_names.ATTACK_NAMES) == flipper_names()
    assert sorted(_names.MITIGATION_NAMES) == strategy_names()
    assert _names.CLEAN_MODES == tuple(CLEAN_MODES)
    assert _names.MODEL_NAMES is MODEL_NAMES
    assert _names.SECRET_ENV == SECRET_ENV


def test_debug_is_accepted_after_the_command(cli, tmp_path):
    from flipguard.cli import main
    from flipguard.exceptions import DataError

    args = ["attack", str(tmp_path / "none.csv"), "--label", "y", "--rate", "0.1", "--out", str(tmp_path / "o.csv")]
    r = cli(*args)
    assert (r.exit_code, r.stderr) == (2, f"Error: {tmp_path / 'none.csv'}: no such file\n")
    with pytest.raises(DataError):
        main(args + ["--debug"])
    with pytest.raises(DataError):
        main(args[:2] + ["--debug"] + args[2:])
