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
    assert info["n_flipped"] == int(0.2 * 569) and info["format"] == fmt
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
        (["--strategy", "nope"], "Unknown attack strategy 'nope'"),  # named before the missing budget
        (["--rate", "0.1", "--n-flips", "3"], "give exactly one of --rate and --n-flips"),
        (["--rate", "abc"], "--rate must be a number or class=rate pairs"),
        (["--rate", "cancer=0.1"], "--rate names class 'cancer'"),
        (["--rate", "1.5"], "--rate must be a fraction in (0, 1] (0.2 flips 20% of the rows); got 1.5"),
        (["--n-flips", "100000"], "cannot flip 100000 of 569 eligible rows"),
        (["--strategy", "random", "--source", "benign", "--rate", "0.1"],
         "Attack strategy 'random' does not take --source; it takes --n-flips, --rate, --seed."),
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


# --- messages in the user's words (exact text, as sqlite-utils tests its CLI) ----------------

def _error(cli, *args) -> str:
    r = cli(*args)
    assert r.exit_code == 2 and r.stdout == "" and r.stderr.count("\n") == 1, r
    return r.stderr


def test_cli_errors_name_flags_not_python_parameters(cli, tmp_path, breast_cancer_csv):
    out = tmp_path / "p.csv"
    base = ("attack", breast_cancer_csv, "--label", "diagnosis", "--out", out)
    assert _error(cli, *base, "--rate", "5") == \
        "Error: --rate must be a fraction in (0, 1] (0.2 flips 20% of the rows); got 5. For a number of rows use --n-flips\n"
    assert _error(cli, *base, "--rate", "malignant=2") == \
        "Error: --rate: 'malignant=2' must give a fraction in (0, 1] of class 'malignant'\n"
    assert _error(cli, *base, "--rate", "0.1", "--kind", "pair") == \
        "Error: Attack strategy 'random' does not take --kind; it takes --n-flips, --rate, --seed.\n"
    assert _error(cli, *base, "--n-flips", "-3") == "Error: --n-flips must be a count >= 0; got -3\n"
    assert not out.exists()
    a = ("assess", breast_cancer_csv, "--label", "diagnosis", "--out", tmp_path / "a")
    assert _error(cli, *a, "--holdout", "2") == "Error: --holdout must be in (0, 1); got 2.0\n"
    assert _error(cli, *a, "--validation", "0") == "Error: --validation must be in (0, 1); got 0.0\n"
    assert _error(cli, *a, "--mitigate", "nuke") == ("Error: --mitigate 'nuke' is not a mitigation; choose from "
                                                     "drop, relabel, weight, loss_correction, blind_drop\n")
    # ... and every name that message lists is one --help mentions.
    help_text = " ".join(cli("assess", "--help").stdout.split())
    for name in ("drop", "relabel", "weight", "loss_correction", "blind_drop"):
        assert name in help_text


def test_library_messages_are_rewritten_for_the_command():
    from flipguard.cli._words import in_user_words

    assert in_user_words("The 'n_partitions' parameter of PartitionAggregationClassifier must be an int in "
                         "the range [1, inf). Got 0 instead.", "certify") == \
        "--partitions must be an int in the range [1, inf); got 0"
    assert in_user_words("TrustedModel needs a trusted set of verified labels (trusted=...)", "audit") == \
        "--method trusted needs a trusted set of verified labels (--trusted)"
    assert in_user_words("keys exist; pass --force (force=True) to replace the key pair", "keygen") == \
        "keys exist; pass --force to replace the key pair"
    assert in_user_words("Attack strategy 'cluster' has no parameter(s) kind; it takes model, n_clusters, "
                         "n_flips, random_state, rate, source, target.", "attack") == \
        ("Attack strategy 'cluster' does not take --kind; it takes --n-clusters, --n-flips, --rate, --seed, "
         "--source, --surrogate, --target.")
    assert in_user_words("holdout_size=0.25 and validation_size=0.99 leave 1 training row(s) of 178", "assess") == \
        "--holdout 0.25 and --validation 0.99 leave 1 training row(s) of 178"
    # The library's own wording is kept for Python users and for names the command does not have.
    assert in_user_words("holdout_size must be in (0, 1). Got 2 instead.", None) == \
        "holdout_size must be in (0, 1). Got 2 instead."
    assert in_user_words("column 'rate' not found", "attack") == "column 'rate' not found"


def test_unsupported_output_format_is_refused_before_any_work(cli, tmp_path, breast_cancer_csv):
    out = tmp_path / "p.xlsx"
    assert _error(cli, "attack", breast_cancer_csv, "--label", "diagnosis", "--rate", "0.1", "--out", out) == \
        f"Error: --out {out}: unsupported output format '.xlsx'; use .csv or .parquet\n"
    assert _error(cli, "attack", breast_cancer_csv, "--label", "diagnosis", "--rate", "0.1", "--out",
                  tmp_path / "p.csv", "--flips", tmp_path / "f.json") == \
        f"Error: --flips {tmp_path / 'f.json'}: unsupported output format '.json'; use .csv or .parquet\n"
    assert list(tmp_path.iterdir()) == [breast_cancer_csv]


def test_infinite_feature_values_are_reported(cli, tmp_path):
    src = tmp_path / "inf.csv"
    rows = ["x,z,y"] + [f"{i % 7},{i},{'a' if i % 2 else 'b'}" for i in range(40)]
    rows[5] = "inf,4,a"
    rows[9] = "-inf,8,a"
    src.write_text("\n".join(rows) + "\n")
    r = cli("attack", src, "--label", "y", "--rate", "0.1", "--out", tmp_path / "o.csv", "--json")
    assert r.exit_code == 0, r.stderr
    assert r.stderr == ("note: column 'x' has 2 infinite value(s); they were treated as missing and replaced "
                        "by the column's median 3\n")


def test_attack_keeps_the_input_csv_dialect(cli, tmp_path):
    """Only the flipped rows' label fields change; quoting, number and boolean spellings stay."""
    src = tmp_path / "in.csv"
    lines = ['id,"name",score,flag,label'] + [
        f'{i},"item {i}",{i / 4:.2f},{"true" if i % 3 else "false"},{"spam" if i % 2 else chr(34) + "ham" + chr(34)}'
        for i in range(60)]
    src.write_text("\r\n".join(lines) + "\r\n")
    out, flips = tmp_path / "out.csv", tmp_path / "flips.csv"
    r = cli("attack", src, "--label", "label", "--id", "id", "--rate", "0.2", "--seed", "1", "--out", out,
            "--flips", flips, "--json")
    assert r.exit_code == 0, r.stderr
    before, after = src.read_bytes().split(b"\r\n"), out.read_bytes().split(b"\r\n")
    assert len(before) == len(after)
    changed = [i - 1 for i, (a, b) in enumerate(zip(before, after)) if a != b]
    assert changed == pacsv.read_csv(flips).column("row").to_pylist() and len(changed) == 12
    for i in changed:
        a, b = before[i + 1].split(b","), after[i + 1].split(b",")
        assert a[:4] == b[:4] and {a[4], b[4]} == {b"spam", b'"ham"'}
    assert load(str(out), label="label").X.tolist() == load(str(src), label="label").X.tolist()


def test_help_texts_fit_80_columns_and_speak_plainly():
    import os
    import subprocess
    import sys

    from flipguard.cli._register import COMMANDS

    env = {**os.environ, "COLUMNS": "80", "TERM": "xterm"}
    commands = sorted(set(COMMANDS) - {"ledger", "pg"}) + ["ledger append", "ledger verify", "pg protect"]
    for command in commands:
        text = subprocess.run([sys.executable, "-m", "flipguard", *command.split(), "--help"], env=env,
                              capture_output=True, text=True, timeout=120).stdout
        assert "Example" in text, command
        assert "<bool>" not in text and "{data}" not in text and "BOOLEAN" not in text, command
        example = text.split("Example:")[1].split("╭")[0].splitlines()
        for line in example:  # every example line is indented: none wrapped to the margin
            assert not line.strip() or line.startswith("     flipguard") or line.startswith("         --") \
                or line.startswith("         "), (command, line)
    demo = subprocess.run([sys.executable, "-m", "flipguard", "demo", "--help"], env=env, capture_output=True,
                          text=True, timeout=120).stdout
    assert "seeds'" not in demo and "synthetic customer reviews" in " ".join(demo.split())


def test_fit_example_lines_breaks_before_options():
    from flipguard.cli._app import fit_example_lines

    doc = ("Do it.\n\nExample:\n\n    flipguard verify reviews.csv --manifest reviews.csv.flipguard.json "
           "--pubkey keys/flipguard.pub\n\nMore text that is long enough to pass the width limit of the "
           "example lines but is not an example.")
    assert fit_example_lines(doc).split("\n")[4:6] == [
        "    flipguard verify reviews.csv --manifest reviews.csv.flipguard.json \\",
        "        --pubkey keys/flipguard.pub"]
    assert fit_example_lines(doc).split("\n")[-1] == doc.split("\n")[-1]


def test_help_paragraphs_flow_and_examples_keep_their_lines():
    """typer's rich mode keeps a docstring's line breaks: a paragraph wrapped at 100 columns in the
    source showed a stray break at 80 ("... accuracy of the" / "poisoned model")."""
    import subprocess
    import sys

    from flipguard.cli._app import join_prose_lines

    doc = ("Short help.\n\nA paragraph wrapped\nin the source\nat any width.\nExit codes: 0 or\n2.\n\n"
           "Example:\n\n    flipguard x \\\n        --y 1\n\nItems:\n- one\n- two")
    assert join_prose_lines(doc).split("\n") == [
        "Short help.", "", "A paragraph wrapped in the source at any width. Exit codes: 0 or 2.", "", "Example:",
        "", "    flipguard x \\", "        --y 1", "", "Items:", "- one", "- two"]
    text = subprocess.run([sys.executable, "-m", "flipguard", "assess", "--help"], capture_output=True, text=True,
                          env={**__import__("os").environ, "COLUMNS": "80"}, timeout=120).stdout
    lines = [line.strip(" │") for line in text.splitlines()]
    assert "minus clean-holdout accuracy of the poisoned model: positive means the" in lines, text


def test_positional_arguments_show_their_help(cli):
    """typer < 0.21 (which Flower's extra pins) with click >= 8.3 dropped every argument's help text."""
    r = cli("audit", "--help")
    assert "CSV or Parquet path, fsspec URL" in " ".join(r.stdout.replace("│", " ").split()), r.stdout
    r = cli("diff", "--help")
    assert "Earlier version (path, URL or DSN)." in " ".join(r.stdout.replace("│", " ").split())


def test_summary_table_fits_80_columns_and_is_complete_when_wide(tmp_path):
    import io

    from rich.console import Console

    from flipguard.assess import assess
    from flipguard.cli import _assess, _common
    from flipguard.data import make_sentiment_reviews

    result = assess(make_sentiment_reviews(240, random_state=0), strategies=["random", "noise_matrix"],
                    rates=[0.3], seeds=1, models=["logreg"], views=None, detect=True,
                    mitigate=["drop", "blind_drop"], n_jobs=1)
    saved = _assess.console
    try:
        for width in (80, 200):
            buf = io.StringIO()
            _assess.console = Console(file=buf, width=width, highlight=False)
            _assess.render_summary(result)
            lines = buf.getvalue().splitlines()
            assert max(map(len, lines)) <= width
            body = [ln for ln in lines if "noise_matrix" in ln]
            if width == 80:  # one line per row, short headers, detection and mitigation stacked below
                assert len(body) == 2 and "val acc" in buf.getvalue() and "illusi" not in buf.getvalue()
            else:
                assert len(body) == 1 and "validation acc" in buf.getvalue() and "blind_drop" in buf.getvalue()
            assert "-0.000" not in buf.getvalue()
    finally:
        _assess.console = saved
    assert _common.fmt(-0.0001) == "0.000" and _common.signed(-0.0004) == "+0.000"


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


def _every_help():
    from flipguard.cli._register import COMMANDS  # light: names only

    return [["--version"], ["--help"], ["ledger", "verify", "--help"], ["pg", "protect", "--help"]] + \
        [[name, "--help"] for name in sorted(COMMANDS)]


@pytest.mark.parametrize("args", _every_help(), ids=" ".join)
def test_help_and_version_load_no_heavy_library(args):
    code, loaded = _heavy_modules_loaded(*args)
    assert code == 0 and loaded == [], (args, loaded)


def test_integrity_commands_load_no_heavy_library(tmp_path):
    """keygen, seal, verify, diff and the ledger train nothing, so they never load scikit-learn.

    Nor pandas, which pyarrow imports on its first ``pa.array`` / ``to_numpy`` / ``pq.read_table``
    (0.3 s; flipguard/_arrow.py goes around it); ``diff`` and the ledger use scipy for their class-balance test.
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
        loaded = [m for m in loaded if not (m == "scipy" and args[0] in ("diff", "ledger"))]
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
    from flipguard.exceptions import DataError

    args = ["attack", str(tmp_path / "none.csv"), "--label", "y", "--rate", "0.1", "--out", str(tmp_path / "o.csv")]
    r = cli(*args)
    assert (r.exit_code, r.stderr) == (2, f"Error: {tmp_path / 'none.csv'}: no such file\n")
    for debug in (args + ["--debug"], args[:2] + ["--debug"] + args[2:]):
        r = cli(*debug)
        assert r.exit_code == 2 and f"{DataError.__name__}: {tmp_path / 'none.csv'}: no such file" in r.stderr


def _closed_stdout(*args, cwd):
    """Run ``flipguard ARGS`` with stdout a pipe whose reader is already gone (``| head`` that has
    exited): every print meets a broken pipe, deterministically."""
    import os
    import subprocess
    import sys

    r, w = os.pipe()
    os.close(r)
    try:
        return subprocess.run([sys.executable, "-m", "flipguard", *map(str, args)], stdout=w, stderr=subprocess.PIPE,
                              text=True, cwd=cwd, timeout=300)
    finally:
        os.close(w)


def test_a_closed_stdout_keeps_the_files_and_the_exit_code(tmp_path, breast_cancer_csv):
    """``flipguard attack ... | head -1`` exited 1 (typer's broken-pipe handler) although it had written
    its files; a finding must still exit 1 and a success 0, with nothing on stderr."""
    out, flips = tmp_path / "p.csv", tmp_path / "f.csv"
    for extra in ((), ("--json",)):
        proc = _closed_stdout("attack", breast_cancer_csv, "--label", "diagnosis", "--id", "patient_id", "--rate",
                              "0.1", "--out", out, "--flips", flips, *extra, cwd=tmp_path)
        assert (proc.returncode, proc.stderr) == (0, ""), extra
        assert out.stat().st_size > 0 and len(flips.read_text().splitlines()) == 57  # header + floor(56.9)
        out.unlink()
    keys = tmp_path / "keys"
    assert _closed_stdout("keygen", "--out", keys, cwd=tmp_path).returncode == 0
    assert _closed_stdout("seal", breast_cancer_csv, "--label", "diagnosis", "--id", "patient_id", "--key",
                          keys / "flipguard.key",
                          "--out", tmp_path / "m.json", cwd=tmp_path).returncode == 0
    rows = breast_cancer_csv.read_text().splitlines()
    rows[5] = rows[5].replace("malignant", "benign") if "malignant" in rows[5] else rows[5].replace("benign", "malignant")
    breast_cancer_csv.write_text("\n".join(rows) + "\n")
    proc = _closed_stdout("verify", breast_cancer_csv, "--manifest", tmp_path / "m.json", "--pubkey",
                          keys / "flipguard.pub", cwd=tmp_path)
    assert (proc.returncode, proc.stderr) == (1, "")


def test_attack_pairs_flag(cli, tmp_path, breast_cancer_csv):
    out = tmp_path / "p.csv"
    base = ("attack", breast_cancer_csv, "--label", "diagnosis", "--strategy", "noise_matrix", "--kind", "pair",
            "--rate", "0.5", "--out", out)
    r = cli(*base, "--pairs", "malignant=benign", "--json")
    assert r.exit_code == 0, r.stderr
    assert [(t["from"], t["to"]) for t in json.loads(r.stdout)["transitions"]] == [("malignant", "benign")]
    assert _error(cli, *base, "--pairs", "malignant=cat") == \
        "Error: --pairs names class 'cat', which is not in column 'diagnosis' (classes: benign, malignant)\n"
    assert _error(cli, *base, "--pairs", "malignant") == \
        "Error: --pairs: expected source=target pairs, got 'malignant'\n"


def test_a_mistyped_command_gets_one_suggestion(cli):
    r = cli("keys")
    assert r.exit_code == 2
    text = r.stdout + r.stderr
    assert text.count("Did you mean") == 1 and "keygen" in text


@pytest.mark.parametrize("args, says", [
    (("seal", "."), "flipguard seal: Missing option '--label'"),
    (("audit", "x.csv", "--labl", "y"), "flipguard audit: No such option '--labl'"),
    (("verify", "x.csv", "--manifest"), "Option '--manifest' requires an argument"),
    (("attak",), "No such command 'attak'"),
])
def test_usage_errors_are_one_line_and_exit_2(cli, args, says):
    """click frames usage errors over several lines; a CI log gets one, like every input error."""
    r = cli(*args)
    assert r.exit_code == 2
    assert r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("Error: ") and says in r.stderr, r.stderr


def test_exit_codes_of_commands_pass_through(cli, tmp_path):
    """Without click's standalone mode the entry point itself turns `typer.Exit(n)` into exit n."""
    assert cli("--version").exit_code == 0
    assert cli("keygen", "-h").exit_code == 0
    r = cli()  # no command: the help, exit 2 as click gives
    assert r.exit_code == 2 and "Usage" in r.stdout + r.stderr


def test_a_pandas_category_label_keeps_its_type_through_attack_and_clean(cli, tmp_path, breast_cancer_frame):
    """pandas writes a category with int8 indices; rewriting the label with int32 ones crashed
    attack and clean (ArrowInvalid: Field type did not match data type)."""
    import pyarrow as pa

    idx = breast_cancer_frame.schema.get_field_index("diagnosis")
    cat = pa.DictionaryArray.from_arrays(
        pa.array((np.array(breast_cancer_frame.column("diagnosis").to_pylist()) == "malignant").astype(np.int8)),
        pa.array(["benign", "malignant"]))
    data = tmp_path / "cat.parquet"
    pq.write_table(breast_cancer_frame.set_column(idx, "diagnosis", cat), data)
    for args in (("attack", data, "--label", "diagnosis", "--rate", "0.1", "--out", tmp_path / "a.parquet"),
                 ("clean", data, "--label", "diagnosis", "--model", "logreg", "--mode", "relabel", "--no-guard",
                  "--out", tmp_path / "c.parquet")):
        r = cli(*args)
        assert r.exit_code == 0, r.stderr
        assert pq.read_schema(args[-1]).field("diagnosis").type == pa.dictionary(pa.int8(), pa.string())
    flipped = pq.read_table(tmp_path / "a.parquet").column("diagnosis").to_pylist()
    assert sum(a != b for a, b in zip(flipped, breast_cancer_frame.column("diagnosis").to_pylist())) == 56


def test_outputs_that_would_clobber_something_are_refused_before_any_work(cli, tmp_path, breast_cancer_csv):
    """A folder given as a file, two options naming one file, a log format only known after the
    audit, an assess --out that is a file: one line, exit 2, nothing written (the poisoned copy
    used to be written before --flips failed, and --out == --flips kept only one of them)."""
    out = tmp_path / "o"
    out.mkdir()
    base = ("attack", breast_cancer_csv, "--label", "diagnosis", "--rate", "0.1")
    assert _error(cli, *base, "--out", out / "y.csv", "--flips", out) == \
        f"Error: --flips {out} is a folder; give a file name\n"
    assert _error(cli, *base, "--out", out / "x.csv", "--flips", out / "x.csv") == \
        f"Error: --out and --flips name the same file {out / 'x.csv'}; give two files\n"
    clean = ("clean", breast_cancer_csv, "--label", "diagnosis", "--model", "logreg", "--out", out / "c.csv")
    assert _error(cli, *clean, "--log", out / "c.xlsx") == \
        f"Error: --log {out / 'c.xlsx'}: unsupported output format '.xlsx'; use .csv or .parquet\n"
    assert _error(cli, *clean, "--log", out) == f"Error: --log {out} is a folder; give a file name\n"
    assert list(out.iterdir()) == []
    assert _error(cli, "assess", breast_cancer_csv, "--label", "diagnosis", "--strategies", "random",
                  "--rates", "0.1", "--seeds", "1", "--out", breast_cancer_csv) == \
        (f"Error: --out {breast_cancer_csv} is a file; assess writes a folder (report.html and "
         "assessment.json): give a folder name\n")


def test_attack_class_names_as_a_user_types_them(cli, tmp_path):
    """A boolean label written true/false is named that way; a class given twice in --pairs and
    an empty --pairs are refused instead of silently changing the attack."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=300)
    data = tmp_path / "b.csv"
    data.write_text("id,f,y\n" + "".join(f"{i},{v:.3f},{'true' if v > 0 else 'false'}\n" for i, v in enumerate(x)))
    r = cli("attack", data, "--label", "y", "--strategy", "targeted", "--source", "true", "--rate", "0.3",
            "--out", tmp_path / "o.csv", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["transitions"] == [{"from": True, "to": False, "count": int(round(0.3 * (x > 0).sum()))}]
    iris = tmp_path / "iris.csv"
    iris.write_text("a,species\n" + "".join(f"{i % 7},{['setosa', 'versicolor', 'virginica'][i % 3]}\n"
                                             for i in range(90)))
    pair = ("attack", iris, "--label", "species", "--strategy", "noise_matrix", "--kind", "pair", "--rate", "0.1",
            "--out", tmp_path / "p.csv", "--pairs")
    assert _error(cli, *pair, "setosa=versicolor,setosa=virginica") == \
        "Error: --pairs gives class 'setosa' twice; each class becomes one other class\n"
    assert _error(cli, *pair, "") == "Error: --pairs: expected source=target pairs, got ''\n"
    spaced = tmp_path / "spaced.csv"  # ' a ' and 'a' are two classes: each is taken as written
    spaced.write_text("x,y\n" + "".join(f"{i % 5},{[' a ', 'a', 'b'][i % 3]}\n" for i in range(90)))
    for given, source in ((" a =b", " a "), (" a=b", "a")):
        r = cli("attack", spaced, "--label", "y", "--strategy", "noise_matrix", "--kind", "pair", "--rate", "0.3",
                "--pairs", given, "--out", tmp_path / "s.csv", "--json")
        assert r.exit_code == 0, r.stderr
        assert {t["from"] for t in json.loads(r.stdout)["transitions"]} == {source}


def test_assess_on_a_single_feature_and_certify_names_the_test_files_row(cli, tmp_path, breast_cancer_frame):
    """assess crashed drawing a 2-D view of one feature (PCA with n_components=2); certify
    --test named a missing label by its row in the joined table."""
    one = tmp_path / "one.csv"
    pacsv.write_csv(breast_cancer_frame.select(["mean_radius", "diagnosis"]), one)
    r = cli("assess", one, "--label", "diagnosis", "--strategies", "random", "--rates", "0.1", "--seeds", "1",
            "--out", tmp_path / "as", "--json")
    assert r.exit_code == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "as").iterdir()) == ["assessment.json", "report.html"]
    train = tmp_path / "train.csv"
    pacsv.write_csv(breast_cancer_frame.slice(0, 400), train)
    test = breast_cancer_frame.slice(400)
    labels = test.column("diagnosis").to_pylist()
    labels[5] = None
    import pyarrow as pa

    test = test.set_column(test.schema.get_field_index("diagnosis"), "diagnosis", pa.array(labels))
    pacsv.write_csv(test, tmp_path / "test.csv")
    assert _error(cli, "certify", train, "--label", "diagnosis", "--partitions", "5", "--test", tmp_path / "test.csv") \
        .endswith("label column 'diagnosis' has 1 missing/NaN value(s) (rows 5; 0-based)\n")


def test_assess_names_alfas_two_class_limit_with_the_datas_classes(cli, tmp_path):
    iris = tmp_path / "iris.csv"
    iris.write_text("a,species\n" + "".join(f"{i % 7},{['setosa', 'versicolor', 'virginica'][i % 3]}\n"
                                             for i in range(90)))
    assert _error(cli, "assess", iris, "--label", "species", "--strategies", "alfa", "--rates", "0.1", "--seeds", "1",
                  "--out", tmp_path / "as") == \
        ("Error: ALFA attacks binary classifiers, but " + str(iris) + " has 3 classes (setosa, versicolor, "
         "virginica); use another strategy or keep two classes\n")
    assert not (tmp_path / "as").exists()
