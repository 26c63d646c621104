"""Shared fixtures: real PostgreSQL, a real headless browser, the CLI, small real data."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
from dataclasses import dataclass

import numpy as np
import pytest

REQUIRE_PG = os.environ.get("FLIPGUARD_REQUIRE_PG") == "1"
PG_DSN = os.environ.get("FLIPGUARD_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


def run_cli(*args) -> CliResult:
    """Run ``flipguard ARGS`` in-process through the real entry point (error boundary included)."""
    from flipguard.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return CliResult(code, out.getvalue(), err.getvalue())


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(scope="session")
def pg_dsn():
    """DSN of the real PostgreSQL server; skips (or fails under FLIPGUARD_REQUIRE_PG=1) if unreachable."""
    try:
        import psycopg
    except ImportError:
        if REQUIRE_PG:
            pytest.fail("FLIPGUARD_REQUIRE_PG=1 but psycopg is not installed")
        pytest.skip("psycopg not installed (pip install 'flipguard[postgres]')")
    try:
        with psycopg.connect(PG_DSN, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any connection failure means "no server"
        if REQUIRE_PG:
            pytest.fail(f"FLIPGUARD_REQUIRE_PG=1 but PostgreSQL at {PG_DSN} is unreachable: {exc}")
        pytest.skip(f"no PostgreSQL server reachable at {PG_DSN}: {exc}")
    return PG_DSN


@pytest.fixture(scope="session")
def chromium():
    """Path of a headless-capable Chromium binary; skips when none is installed."""
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no chromium binary on PATH (apt-get install chromium)")


def dsn_as(dsn: str, user: str, **extra) -> str:
    """``dsn`` logging in as ``user`` (no password: the test server trusts local roles)."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(dsn)
    params.update(user=user, **extra)
    params.pop("password", None)
    return make_conninfo(**params)


def dom_after_script(chromium: str, page: str, script: str, workdir, name: str, width: int = 1280) -> str:
    """The DOM of ``page`` (HTML text) after ``script`` ran on load, in headless Chromium at
    ``width`` pixels: how the report tests measure what a reader's browser lays out."""
    import subprocess

    path = workdir / f"{name}.html"
    path.write_text(page.replace("</body>", "<script>window.addEventListener('load', function () {"
                                 + script + "});</script></body>"), encoding="utf-8")
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={workdir / ('profile-' + name)}", f"--window-size={width},1200",
           "--virtual-time-budget=10000", "--dump-dom", path.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert "data-" in proc.stdout, proc.stderr[-2000:]
    return proc.stdout


@pytest.fixture(scope="session")
def breast_cancer_frame():
    """scikit-learn's bundled breast-cancer data as an Arrow table with string labels and an id."""
    import pyarrow as pa
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    cols = {"patient_id": np.arange(1000, 1000 + len(data.target))}
    for j, name in enumerate(data.feature_names):
        cols[name.replace(" ", "_")] = data.data[:, j]
    cols["diagnosis"] = np.where(data.target == 0, "malignant", "benign")
    return pa.table(cols)


@pytest.fixture
def breast_cancer_csv(tmp_path, breast_cancer_frame):
    import pyarrow.csv as pacsv

    path = tmp_path / "breast_cancer.csv"
    pacsv.write_csv(breast_cancer_frame, path)
    return path


@pytest.fixture
def breast_cancer_parquet(tmp_path, breast_cancer_frame):
    import pyarrow.parquet as pq

    path = tmp_path / "breast_cancer.parquet"
    pq.write_table(breast_cancer_frame, path)
    return path


@contextlib.contextmanager
def no_hang(seconds=20):
    """Fail a block that blocks (a read of a FIFO, say) with TimeoutError after ``seconds``."""
    import signal

    def boom(*_):
        raise TimeoutError("the command hung")
    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
