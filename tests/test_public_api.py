"""Every public package re-exports its names with an alphabetised __all__; the CLI has a global --debug."""

from __future__ import annotations

import importlib

import pytest

import flipguard

PACKAGES = ["flipguard.data", "flipguard.attacks", "flipguard.assess", "flipguard.detection",
            "flipguard.mitigation", "flipguard.integrity", "flipguard.report", "flipguard.exceptions",
            "flipguard.models", "flipguard.metrics", "flipguard.engine",
            "flipguard.federated", "flipguard.monitor"]


@pytest.mark.parametrize("name", PACKAGES)
def test_star_import_and_sorted_all(name):
    module = importlib.import_module(name)
    assert list(module.__all__) == sorted(module.__all__)
    namespace: dict = {}
    exec(f"from {name} import *", namespace)  # noqa: S102 - the point of the test
    missing = [n for n in module.__all__ if n not in namespace]
    assert not missing


def test_version_and_typed_marker():
    from importlib.resources import files

    assert flipguard.__version__
    assert files("flipguard").joinpath("py.typed").is_file()


def test_version_option(cli):
    r = cli("--version")
    assert r.exit_code == 0 and r.stdout.strip() == f"flipguard {flipguard.__version__}"


def test_debug_shows_the_traceback(cli, tmp_path):
    r = cli("attack", tmp_path / "none.csv", "--label", "y", "--rate", "0.1", "--out", tmp_path / "o.csv")
    assert r.exit_code == 2 and "Traceback" not in r.stderr
    r = cli("--debug", "attack", tmp_path / "none.csv", "--label", "y", "--rate", "0.1", "--out", tmp_path / "o.csv")
    # the traceback, and still exit 2: a CI job run with --debug must not read bad input as a finding (1)
    assert r.exit_code == 2 and "Traceback" in r.stderr and "DataError: " in r.stderr


def test_atomic_outputs_follow_the_umask_and_leave_nothing_on_error(tmp_path):
    import os

    from flipguard._io import atomic_path, atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        atomic_write_text(tmp_path / "s.key", "secret", mode=0o600)
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "s.key").stat().st_mode & 0o777 == 0o600
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "b.txt") as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "s.key"]


def test_python_dash_m_runs_the_cli():
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "flipguard", "--version"], capture_output=True, text=True,
                       check=False)
    assert p.returncode == 0 and p.stdout.startswith("flipguard ")
    p = subprocess.run([sys.executable, "-m", "flipguard", "attack", "missing.csv", "--label", "y",
                        "--rate", "0.1", "--out", "x.csv"], capture_output=True, text=True, check=False)
    assert p.returncode == 2 and p.stderr == "Error: missing.csv: no such file\n"


def test_integrity_imports_neither_scikit_learn_nor_psycopg():
    """DESIGN.md: integrity/ needs no scikit-learn; psycopg stays an optional extra."""
    import subprocess
    import sys

    code = ("import sys, flipguard.integrity, flipguard.data; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'sklearn', 'psycopg'}))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert p.stdout.strip() == "[]"
