"""``flipguard monitor``: folder, S3 prefix, PostgreSQL table, kill -9 and restart, Prometheus file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from flipguard.monitor import LabelMonitor

ROOT = Path(__file__).resolve().parents[1]
CENTRES = np.random.RandomState(99).normal(0, 2.2, (3, 4))
NAMES = np.array(["ant", "bee", "cat"])


def table(n, seed, start_id=0, swap_rate=0.0):
    """Three Gaussian classes; ``swap_rate`` of the smaller of ant/cat swapped each way (shares kept)."""
    rng = np.random.RandomState(seed)
    y = rng.randint(0, 3, n)
    X = CENTRES[y] + rng.normal(0, 1, (n, 4))
    lab = NAMES[y].copy()
    if swap_rate:
        a, c = np.flatnonzero(y == 0), np.flatnonzero(y == 2)
        k = int(round(swap_rate * min(len(a), len(c))))
        lab[rng.choice(a, k, replace=False)] = "cat"
        lab[rng.choice(c, k, replace=False)] = "ant"
    cols = {"row_id": np.arange(start_id, start_id + n)}
    cols.update({f"x{j}": X[:, j] for j in range(4)})
    cols["kind"] = lab
    return pa.table(cols)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    path = tmp_path_factory.mktemp("ref") / "reference.parquet"
    pq.write_table(table(600, seed=1, start_id=10**6), path)
    return path


def write_batches(folder: Path, n_batches: int, attack_from: int | None = None, first: int = 0, fmt="csv"):
    folder.mkdir(parents=True, exist_ok=True)
    for b in range(first, first + n_batches):
        tbl = table(150, seed=100 + b, start_id=1000 * b,
                    swap_rate=0.3 if attack_from is not None and b >= attack_from else 0.0)
        path = folder / f"batch_{b:03d}.{fmt}"
        part = folder / f".{path.name}.part"  # what a careful producer does: write, then rename
        (pacsv.write_csv if fmt == "csv" else pq.write_table)(tbl, part)
        os.replace(part, path)


def args(source, state, reference, *extra):
    return ["monitor", str(source), "--label", "kind", "--id", "row_id", "--reference", str(reference),
            "--state", str(state), *map(str, extra)]


def test_folder_alarm_json_lines_exit_codes_and_each_file_once(cli, tmp_path, reference):
    folder = tmp_path / "incoming"
    write_batches(folder, 8, attack_from=5)
    state = tmp_path / "m.state"
    res = cli(*args(folder, state, reference, "--json", "--report", tmp_path / "r.html"))
    assert res.exit_code == 1, res.stderr
    lines = [json.loads(x) for x in res.stdout.splitlines()]
    assert [x["batch"] for x in lines] == [f"batch_{b:03d}.csv" for b in range(8)]
    assert all({"batch", "rows", "alarm", "score", "suspects"} <= x.keys() for x in lines)
    assert not any(x["alarm"] for x in lines[:5])
    first = next(x for x in lines if x["alarm"])
    assert {first["pair"]["true_class"], first["pair"]["labelled_as"]} == {"ant", "cat"}
    assert first["start_batch"] == "batch_005.csv"
    assert first["suggested_labels"] and all(s["suggested_label"] in ("ant", "cat")
                                              for s in first["suggested_labels"][:10])
    assert "<img" in (tmp_path / "r.html").read_text()
    # nothing new: nothing processed, no alarm in this run
    again = cli(*args(folder, state, reference, "--json"))
    assert again.exit_code == 0 and again.stdout == ""
    # one new clean file (named between old ones): only it is processed
    pacsv.write_csv(table(150, seed=7), folder / "batch_004b.csv")
    (folder / ".batch_009.csv.part").write_text("half a file")
    res = cli(*args(folder, state, reference, "--json"))
    assert [json.loads(x)["batch"] for x in res.stdout.splitlines()] == ["batch_004b.csv"]
    assert LabelMonitor.load(state).n_batches_ == 9


def test_bad_input_exits_2_and_writes_nothing(cli, tmp_path, reference):
    folder = tmp_path / "in"
    write_batches(folder, 2)
    state = tmp_path / "s.state"
    res = cli("monitor", folder, "--label", "kind", "--state", state)
    assert res.exit_code == 2 and res.stderr == "Error: the first run needs --reference (no --state file yet)\n"
    assert not state.exists()
    res = cli(*args(tmp_path / "nope", state, reference))
    assert res.exit_code == 2 and res.stderr == f"Error: {tmp_path / 'nope'}: no such folder\n"
    assert cli(*args(folder, state, reference)).exit_code == 0
    raw = bytearray(state.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # inside the stored arrays
    state.write_bytes(bytes(raw))
    res = cli(*args(folder, state, reference))
    assert res.exit_code == 2 and res.stderr.startswith("Error: ") and "state" in res.stderr
    res = cli(*args(folder, tmp_path / "t.state", reference, "--label", "x0"))
    assert res.exit_code == 2


def test_prometheus_file_parses_with_prometheus_client(cli, tmp_path, reference):
    from prometheus_client.parser import text_string_to_metric_families

    folder = tmp_path / "in"
    write_batches(folder, 7, attack_from=4, fmt="parquet")
    prom = tmp_path / "flipguard.prom"
    res = cli(*args(folder, tmp_path / "m.state", reference, "--metrics", prom))
    assert res.exit_code == 1
    fams = {f.name: f for f in text_string_to_metric_families(prom.read_text())}
    value = lambda name: [s.value for s in fams[name].samples]  # noqa: E731
    assert value("flipguard_monitor_batches") == [7.0]
    assert value("flipguard_monitor_alarms")[0] >= 1
    stats = {(s.labels["true_class"], s.labels["labelled_as"]): s.value
             for s in fams["flipguard_monitor_statistic"].samples}
    assert len(stats) == 3 * 2 + 1 and ("any", "any") in stats
    assert all(s.labels["source"] == str(folder) for s in fams["flipguard_monitor_statistic"].samples)


@pytest.mark.slow
def test_kill_9_and_restart_processes_every_batch_exactly_once(tmp_path, reference):
    """A real process killed mid-run with SIGKILL, then restarted: same final state as one clean run."""
    folder = tmp_path / "in"
    write_batches(folder, 24, attack_from=12)
    state = tmp_path / "k.state"
    cmd = [sys.executable, "-m", "flipguard", *args(folder, state, reference, "--json")]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    seen = [proc.stdout.readline() for _ in range(4)]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL and all(seen)
    done_before = LabelMonitor.load(state, with_extra=True)[1]["done"]["files"]
    assert 4 <= len(done_before) < 24  # killed mid-run, after at least the batches it printed
    rerun = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert rerun.returncode == 1, rerun.stderr
    resumed = [json.loads(x)["batch"] for x in rerun.stdout.splitlines()]
    assert resumed == [f"batch_{b:03d}.csv" for b in range(len(done_before), 24)]
    killed, extra = LabelMonitor.load(state, with_extra=True)
    assert extra["done"]["files"] == [f"batch_{b:03d}.csv" for b in range(24)]

    from flipguard.monitor import FolderSource, watch_once

    straight, _ = watch_once(FolderSource(str(folder)), tmp_path / "straight.state", label="kind",
                             reference=reference, id="row_id",
                             monitor_params={"expected_run_length": 1000.0, "min_flip_rate": 0.1})
    assert killed.n_batches_ == straight.n_batches_ == 24
    assert np.array_equal(killed.statistic_, straight.statistic_)
    assert killed.history_ == straight.history_ and killed.alarms_ == straight.alarms_


@pytest.mark.postgres
def test_postgres_table_new_rows_by_id_and_since_column(cli, pg_dsn, tmp_path, reference):
    import psycopg
    from psycopg import sql

    name = f"fg_monitor_{uuid.uuid4().hex[:8]}"
    ident = sql.Identifier(name)

    def insert(tbl, stamp):
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            rows = list(zip(*[tbl.column(c).to_pylist() for c in tbl.column_names], strict=True))
            with conn.cursor() as cur:
                cur.executemany(sql.SQL("INSERT INTO {} (row_id, x0, x1, x2, x3, kind, added) "
                                        "VALUES (%s, %s, %s, %s, %s, %s, %s)").format(ident),
                                [(*r, stamp) for r in rows])

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE TABLE {} (row_id bigint PRIMARY KEY, x0 float8, x1 float8, x2 float8, "
                             "x3 float8, kind text, added timestamptz)").format(ident))
    try:
        insert(table(300, seed=3, start_id=0), "2026-01-01T00:00:00Z")
        state = tmp_path / "pg.state"
        base = ["monitor", pg_dsn, "--table", name, "--label", "kind", "--id", "row_id",
                "--reference", reference, "--state", state, "--json"]
        res = cli(*base, "--batch-rows", 150)
        assert res.exit_code == 0, res.stderr
        assert [json.loads(x)["batch"] for x in res.stdout.splitlines()] == ["row_id 0..149", "row_id 150..299"]
        for b in range(4):
            insert(table(150, seed=50 + b, start_id=1000 + 150 * b, swap_rate=0.35), f"2026-01-0{b + 2}T00:00:00Z")
        res = cli(*base, "--batch-rows", 150)
        lines = [json.loads(x) for x in res.stdout.splitlines()]
        assert res.exit_code == 1 and len(lines) == 4 and lines[0]["batch"] == "row_id 1000..1149"
        alarm = next(x for x in lines if x["alarm"])
        assert {alarm["pair"]["true_class"], alarm["pair"]["labelled_as"]} == {"ant", "cat"}
        assert cli(*base).stdout == ""  # nothing new
        # --since-column: a new state, all rows up to now in one batch, then only the newer ones
        since = ["monitor", pg_dsn, "--table", name, "--label", "kind", "--since-column", "added",
                 "--reference", reference, "--state", tmp_path / "since.state", "--json"]
        first = [json.loads(x) for x in cli(*since).stdout.splitlines()]
        assert len(first) == 1 and first[0]["rows"] == 900
        insert(table(100, seed=9, start_id=5000), "2026-02-01T00:00:00Z")
        second = [json.loads(x) for x in cli(*since).stdout.splitlines()]
        assert len(second) == 1 and second[0]["rows"] == 100 and "2026-02-01" in second[0]["batch"]
        res = cli("monitor", pg_dsn, "--label", "kind", "--reference", reference, "--state", tmp_path / "x")
        assert res.exit_code == 2 and res.stderr == "Error: a postgresql:// SOURCE needs --table\n"
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(ident))


@pytest.mark.slow
def test_follow_polls_until_interrupted(tmp_path, reference):
    folder = tmp_path / "in"
    write_batches(folder, 2)
    cmd = [sys.executable, "-m", "flipguard", *args(folder, tmp_path / "f.state", reference, "--json",
                                                    "--follow", "--interval", "0.2")]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    try:
        got = [json.loads(proc.stdout.readline())["batch"] for _ in range(2)]
        write_batches(folder, 1, first=2)
        got.append(json.loads(proc.stdout.readline())["batch"])
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert got == ["batch_000.csv", "batch_001.csv", "batch_002.csv"]
    assert proc.returncode == 0


# -- bad input: refused before any work, never consuming an alarm -------------------------------------
def one_error_line(res) -> str:
    """The single ``Error:`` line of a refused run (no traceback, nothing else on stderr)."""
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in res.stderr, res.stderr
    return lines[0]


def snapshot(*paths) -> dict:
    """Bytes of every file under ``paths`` (files or folders), to show a refused run touched nothing."""
    out = {}
    for p in map(Path, paths):
        for f in ([p] if p.is_file() else sorted(x for x in p.rglob("*") if x.is_file())):
            out[str(f)] = f.read_bytes()
    return out


def bad_batch(path: Path, kind: str) -> None:
    """A batch file the monitor cannot judge."""
    tbl = table(150, seed=77, start_id=90_000)
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "semicolon":
        pacsv.write_csv(tbl, path, pacsv.WriteOptions(delimiter=";"))
    elif kind == "missing_column":
        pacsv.write_csv(tbl.drop_columns(["x2"]), path)
    elif kind == "text_feature":
        pacsv.write_csv(tbl.set_column(1, "x0", pa.array([f"{v:.3f}cm" for v in tbl.column("x0").to_pylist()])),
                        path)
    else:  # pragma: no cover - a typo in a test
        raise AssertionError(kind)


@pytest.fixture
def pending_alarm(cli, tmp_path, reference):
    """A state that has seen two clean batches, with an attacked batch waiting: a run processing it alarms."""
    folder = tmp_path / "in"
    write_batches(folder, 2)
    state = tmp_path / "m.state"
    assert cli(*args(folder, state, reference)).exit_code == 0
    write_batches(folder, 1, first=2, attack_from=2)
    return folder, state


@pytest.mark.parametrize("case", ["report=reference", "metrics=state", "report=state", "report=batch",
                                  "metrics=new batch name", "metrics=source folder", "report=metrics",
                                  "report=link to reference"])
def test_output_that_is_an_input_is_refused_before_any_work(cli, tmp_path, reference, pending_alarm, case):
    folder, state = pending_alarm
    ref_copy = tmp_path / "ref.parquet"  # a reference the test may see overwritten, not the shared one
    ref_copy.write_bytes(Path(reference).read_bytes())
    (tmp_path / "link.html").symlink_to(ref_copy)
    out = {"report=reference": ["--report", ref_copy], "metrics=state": ["--metrics", state],
           "report=state": ["--report", state], "report=batch": ["--report", folder / "batch_001.csv"],
           "metrics=new batch name": ["--metrics", folder / "batch_009.csv"],
           "metrics=source folder": ["--metrics", folder],
           "report=metrics": ["--report", tmp_path / "x.out", "--metrics", tmp_path / "x.out"],
           "report=link to reference": ["--report", tmp_path / "link.html"]}[case]
    before = snapshot(folder, state, ref_copy)
    res = cli(*args(folder, state, ref_copy, *out))
    assert res.exit_code == 2 and res.stdout == ""
    line = one_error_line(res)
    assert line.startswith(f"Error: {out[0]} ")
    assert snapshot(folder, state, ref_copy) == before  # inputs untouched, the pending batch not consumed
    assert not (tmp_path / "x.out").exists()
    # the same run with harmless outputs goes ahead and raises the alarm that was waiting
    res = cli(*args(folder, state, ref_copy, "--report", tmp_path / "r.html", "--metrics", tmp_path / "m.prom"))
    assert res.exit_code == 1 and "ALARM batch_002.csv" in res.stdout


@pytest.mark.parametrize("opt, where, message", [
    ("--metrics", "missing/m.prom", "does not exist"),
    ("--report", "missing/r.html", "does not exist"),
    ("--report", "adir", "is a directory"),
    ("--metrics", "adir", "is a directory"),
])
def test_unusable_output_path_is_refused_before_the_batches(cli, tmp_path, reference, pending_alarm, opt, where,
                                                             message):
    folder, state = pending_alarm
    (tmp_path / "adir").mkdir()
    before = snapshot(folder, state)
    res = cli(*args(folder, state, reference, opt, tmp_path / where))
    assert res.exit_code == 2 and res.stdout == ""
    assert message in one_error_line(res)
    assert snapshot(folder, state) == before and not (tmp_path / "missing").exists()
    assert list((tmp_path / "adir").iterdir()) == []
    assert cli(*args(folder, state, reference)).exit_code == 1  # the alarm was still there to raise


def test_bad_batch_after_an_alarm_exits_1_keeps_the_metrics_and_is_retried(cli, tmp_path, reference):
    from prometheus_client.parser import text_string_to_metric_families

    folder = tmp_path / "in"
    write_batches(folder, 3, attack_from=2)  # batch_002 alarms
    bad_batch(folder / "batch_003.csv", "text_feature")
    write_batches(folder, 1, first=4)
    state, prom = tmp_path / "m.state", tmp_path / "m.prom"
    res = cli(*args(folder, state, reference, "--json", "--metrics", prom, "--report", tmp_path / "r.html"))
    assert res.exit_code == 1  # the alarm is not lost to the bad file after it
    assert [json.loads(x)["alarm"] for x in res.stdout.splitlines()] == [False, False, True]
    line = one_error_line(res)
    assert "batch_003.csv" in line and "'x0' is not numeric" in line and "alarm" in line
    done = LabelMonitor.load(state, with_extra=True)[1]["done"]["files"]
    assert done == ["batch_000.csv", "batch_001.csv", "batch_002.csv"]  # never the bad batch (nor beyond it)
    samples = {f.name: f.samples[0].value for f in text_string_to_metric_families(prom.read_text())}
    assert samples["flipguard_monitor_alarm"] == 1.0 and samples["flipguard_monitor_batches"] == 3.0
    assert (tmp_path / "r.html").exists()
    # the next run stops at the same batch: exit 2, nothing processed, state and metrics untouched
    before = snapshot(state, prom)
    res = cli(*args(folder, state, reference, "--json", "--metrics", prom))
    assert res.exit_code == 2 and res.stdout == ""
    assert "batch_003.csv" in one_error_line(res) and snapshot(state, prom) == before
    # once the file is fixed, the run carries on with it and the batch after it
    write_batches(folder, 1, first=3)
    res = cli(*args(folder, state, reference, "--json"))
    assert [json.loads(x)["batch"] for x in res.stdout.splitlines()] == ["batch_003.csv", "batch_004.csv"]


def test_bad_batch_without_alarm_exits_2_and_saves_the_batches_before_it(cli, tmp_path, reference):
    folder = tmp_path / "in"
    write_batches(folder, 2)
    bad_batch(folder / "batch_002.csv", "missing_column")
    state, prom = tmp_path / "m.state", tmp_path / "m.prom"
    res = cli(*args(folder, state, reference, "--metrics", prom))
    assert res.exit_code == 2
    line = one_error_line(res)
    assert "batch_002.csv" in line and "'x2' not found" in line and "2 batch(es) before it are saved" in line
    assert LabelMonitor.load(state, with_extra=True)[1]["done"]["files"] == ["batch_000.csv", "batch_001.csv"]
    assert "flipguard_monitor_batches{" in prom.read_text()


@pytest.mark.parametrize("kind", ["empty", "semicolon", "missing_column", "text_feature"])
def test_first_run_refused_at_its_first_batch_writes_nothing(cli, tmp_path, reference, kind):
    folder = tmp_path / "in"
    folder.mkdir()
    bad_batch(folder / "batch_000.csv", kind)
    write_batches(folder, 1, first=1)
    state, prom = tmp_path / "m.state", tmp_path / "m.prom"
    res = cli(*args(folder, state, reference, "--metrics", prom, "--report", tmp_path / "r.html"))
    assert res.exit_code == 2 and res.stdout == ""
    assert "batch_000.csv" in one_error_line(res)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # no state, no metrics, no report
    if kind == "semicolon":
        assert "';'-separated" in res.stderr


def test_state_that_is_a_folder_or_not_a_state_file(cli, tmp_path, reference):
    folder = tmp_path / "in"
    write_batches(folder, 1)
    res = cli(*args(folder, tmp_path, reference))
    assert res.exit_code == 2 and "is a directory" in one_error_line(res)
    text = tmp_path / "notes.state"
    text.write_text("pid,x\n1,2\n")
    res = cli(*args(folder, text, reference))
    line = one_error_line(res)
    assert res.exit_code == 2 and "not a flipguard monitor state file" in line and "pickle" not in line
    assert text.read_text() == "pid,x\n1,2\n"


def test_text_mode_says_when_there_is_nothing_new(cli, tmp_path, reference):
    folder = tmp_path / "in"
    folder.mkdir()
    state = tmp_path / "m.state"
    res = cli(*args(folder, state, reference))
    assert res.exit_code == 0 and res.stdout == f"no batches in {folder} yet\n"
    write_batches(folder, 1)
    res = cli(*args(folder, state, reference))
    assert res.exit_code == 0 and res.stdout.startswith("ok batch_000.csv") and "no new" not in res.stdout
    res = cli(*args(folder, state, reference))
    assert res.exit_code == 0 and res.stdout == f"no new batches in {folder} since the last run\n"
    assert cli(*args(folder, state, reference, "--json")).stdout == ""  # JSON lines: one per batch, none here


def test_batch_rows_is_refused_for_a_folder(cli, tmp_path, reference):
    folder = tmp_path / "in"
    write_batches(folder, 1)
    res = cli(*args(folder, tmp_path / "m.state", reference, "--batch-rows", 10))
    assert res.exit_code == 2 and "--batch-rows only applies to a postgresql:// SOURCE" in one_error_line(res)
    assert not (tmp_path / "m.state").exists()
