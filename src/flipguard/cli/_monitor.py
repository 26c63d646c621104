"""``flipguard monitor``: watch batches as they arrive, alarm when labels start being flipped."""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer

from ..exceptions import InvalidParameterError
from ._app import app
from ._common import IdOpt, LabelOpt, TableOpt, console, fmt


@app.command("monitor")
def monitor_cmd(
    source: Annotated[str, typer.Argument(
        help="Folder or fsspec prefix (s3://bucket/incoming/) of CSV/Parquet batch files, "
             "or a postgresql:// DSN with --table.", show_default=False)],
    label: LabelOpt,
    state: Annotated[Path, typer.Option(
        "--state", help="State file (created on the first run, updated atomically after every batch).",
        show_default=False)],
    reference: Annotated[str | None, typer.Option(
        "--reference", help="Trusted labelled data with the same columns (needed on the first run; "
                            "checked against the state afterwards).")] = None,
    id: IdOpt = None,
    table: TableOpt = None,
    since_column: Annotated[str | None, typer.Option(
        "--since-column", help="PostgreSQL: find new rows by this column instead of --id.")] = None,
    batch_rows: Annotated[int | None, typer.Option(
        "--batch-rows", help="PostgreSQL: at most this many new rows per batch.")] = None,
    json_out: Annotated[bool, typer.Option(
        "--json", help="Print one JSON object per processed batch (JSON lines).")] = False,
    follow: Annotated[bool, typer.Option("--follow", help="Keep polling for new batches until interrupted.")] = False,
    interval: Annotated[float, typer.Option("--interval", help="Seconds between polls with --follow.")] = 60.0,
    metrics: Annotated[Path | None, typer.Option(
        "--metrics", help="Prometheus text-format file for node_exporter's textfile collector.")] = None,
    report: Annotated[Path | None, typer.Option("--report", help="Write an HTML page of the time series.")] = None,
    expected_run_length: Annotated[float, typer.Option(
        "--expected-run-length", help="Expected clean batches between two false alarms (first run only).")] = 1000.0,
    min_flip_rate: Annotated[float, typer.Option(
        "--min-flip-rate", help="Share of a class's rows flipped that the test is tuned for (first run only).")]
    = 0.1,
) -> None:
    """Judge each new batch of labelled rows; alarm when labels start disagreeing with the reference.

    Every batch not yet in --state is processed once, in name order (files)
    or key order (table rows); the state is saved atomically after each, so
    a killed run resumes exactly where it stopped.  Exit 1 when this run
    raised an alarm, 0 otherwise, 2 on bad input.

    Example:

        flipguard monitor s3://labels/incoming/ --label y --id row_id \\
            --reference trusted.parquet --state labels.state --json \\
            --metrics flipguard.prom
    """
    from ..monitor._watch import open_source, watch_once, write_metrics

    if interval <= 0:
        raise InvalidParameterError(f"--interval must be > 0 seconds; got {interval}")
    if batch_rows is not None and batch_rows < 1:
        raise InvalidParameterError(f"--batch-rows must be >= 1; got {batch_rows}")
    if expected_run_length < 1:
        raise InvalidParameterError(f"--expected-run-length must be >= 1; got {expected_run_length}")
    if not 0 < min_flip_rate < 1:
        raise InvalidParameterError(f"--min-flip-rate must be in (0, 1); got {min_flip_rate}")
    if metrics is not None:
        try:
            import prometheus_client  # noqa: F401
        except ImportError:
            raise InvalidParameterError("--metrics needs prometheus_client (pip install 'flipguard[monitor]')") \
                from None
    src = open_source(source, table=table, id=id, since_column=since_column, max_rows=batch_rows)
    alarmed = False

    def emit(v) -> None:
        nonlocal alarmed
        alarmed |= v.alarm
        if json_out:
            sys.stdout.write(json.dumps(_line(v)) + "\n")
            sys.stdout.flush()
        else:
            _print_line(v)

    params = {"expected_run_length": expected_run_length, "min_flip_rate": min_flip_rate}
    # With --follow, Ctrl-C / SIGTERM only set a flag: the run stops at the next safe point (between
    # batches, or by abandoning a read pyarrow cancels), never inside model code that may hold worker
    # threads, so the process always exits promptly and the state stays exactly-once.
    stop = threading.Event()
    previous = {}
    if follow:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda signum, frame: stop.set())
    try:
        while not stop.is_set():
            try:
                mon, _ = watch_once(src, state, label=label, reference=reference, id=id, monitor_params=params,
                                    on_verdict=emit)
            except Exception as exc:
                if stop.is_set() and type(exc).__name__ == "ArrowCancelled":
                    break  # a read cancelled by the signal: that batch was not counted and runs next time
                raise
            if metrics is not None:
                write_metrics(metrics, mon, source=src.description)
            if report is not None:
                _write_report(report, mon, src.description)
            if not follow:
                break
            stop.wait(interval)
    except KeyboardInterrupt:
        stop.set()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if stop.is_set() and not json_out:
        console.print("Interrupted; the state is saved up to the last completed batch.")
    raise typer.Exit(1 if alarmed else 0)


def _line(v) -> dict:
    d = v.to_dict(rows=False)
    out = {k: d[k] for k in ("batch", "rows", "alarm", "status", "score", "suspects", "expected_suspects",
                             "feature_drift", "feature_pvalue", "label_shift_pvalue", "cause", "unknown_labels")}
    if v.alarm:
        out["pair"] = {"true_class": d["pair"][0], "labelled_as": d["pair"][1]}
        out["pairs"] = d["pairs"]
        out["start_batch"] = d["start_batch"]
        sl = v.to_dict(rows=True)["suspect_list"]
        out["suggested_labels"] = [{"id": s["id"], "suggested_label": s["suggested_label"], "score": s["score"]}
                                   for s in sl]
    return out


def _print_line(v) -> None:
    head = f"{v.batch}: {v.rows} rows, {v.suspects} suspects (clean <= {v.expected_suspects:.1f}), " \
           f"score {fmt(v.score, 2)}"
    if v.alarm:
        a, b = v.pair
        console.print(f"[bold red]ALARM[/] {head}: rows that look like {a!s} labelled {b!s} "
                      f"since batch {v.start_batch}" + (" (inputs drifted too)" if v.feature_drift else ""))
    elif v.status == "inconclusive":
        console.print(f"[yellow]inconclusive[/] {head}: no row could be judged")
    else:
        console.print(f"ok {head}" + ("; [yellow]inputs drifted[/]" if v.feature_drift else ""))


def _write_report(path: Path, mon, description: str) -> None:
    from ..report import monitor_sections, write_report

    write_report(path, monitor_sections(mon), title=f"Label monitor of {description}",
                 subtitle=f"{mon.n_batches_} batches, {len(mon.alarms_)} alarm(s)")
