"""``flipguard monitor``: watch batches as they arrive, alarm when labels start being flipped."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import Annotated

import typer

from .._json import to_jsonable
from ..exceptions import InvalidParameterError
from ._app import app
from ._common import IdOpt, LabelOpt, TableOpt, check_parent_folder, console, err_console, fmt


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
    a killed run resumes exactly where it stopped.  A batch that cannot be
    read or judged stops the run there (it is read again next time).  Rows
    whose label is not one of the reference's classes, or is missing, cannot
    be judged: they are counted, named and make the batch a finding
    ("unknown_labels").  Class shares far from the reference's are a finding
    ("label_shift"); a batch the monitor cannot judge (no rows, or labels whose
    flips no chart can see: charts switched off at the first run, with a
    warning) is "inconclusive", a finding too.  Exit 1 when this run raised an
    alarm or a finding (even if a later batch was bad), 0 otherwise, 2 on bad input.

    Example:

        flipguard monitor s3://labels/incoming/ --label y --id row_id \\
            --reference trusted.parquet --state labels.state --json \\
            --metrics flipguard.prom
    """
    from rich.markup import escape

    from ..monitor._monitor import BlindChartWarning
    from ..monitor._watch import BatchFailed, FolderSource, open_source, watch_once, write_metrics

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
    # Every path is checked before any batch is read or any state written: an unusable output found
    # after the batches would otherwise consume their alarms (the state has moved past them).
    _check_paths(state=state, reference=reference, report=report, metrics=metrics,
                 folder=src.location if isinstance(src, FolderSource) and "://" not in src.location else None)
    first_run = not state.exists()
    flagged = False  # an alarm, unknown or missing labels, a label shift, or an inconclusive batch
    warned: set[str] = set()

    def say_warnings(caught) -> None:
        for w in caught:  # once per run, even with --follow: a blind chart stays blind
            text = str(w.message).strip()
            if text and text not in warned:
                warned.add(text)
                sys.stdout.flush()
                err_console.print(f"[yellow]warning:[/] {escape(text)}", soft_wrap=True)

    def emit(v) -> None:
        nonlocal flagged
        flagged |= v.finding
        if json_out:
            sys.stdout.write(json.dumps(_line(v)) + "\n")
            sys.stdout.flush()
        else:
            _print_line(v)

    def write_outputs(mon) -> None:
        if metrics is not None:
            write_metrics(metrics, mon, source=src.description)
        if report is not None:
            _write_report(report, mon, src.description)

    params = {"expected_run_length": expected_run_length, "min_flip_rate": min_flip_rate}
    # With --follow, Ctrl-C / SIGTERM only set a flag: the run stops at the next safe point (between
    # batches, or by abandoning a read pyarrow cancels), never inside model code that may hold worker
    # threads, so the process always exits promptly and the state stays exactly-once.
    stop = threading.Event()
    previous = {}
    processed = polls = 0
    if follow:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda signum, frame: stop.set())
    try:
        while not stop.is_set():
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", BlindChartWarning)
                    try:
                        mon, verdicts = watch_once(src, state, label=label, reference=reference, id=id,
                                                   monitor_params=params, on_verdict=emit)
                    finally:
                        say_warnings([w for w in caught if issubclass(w.category, BlindChartWarning)])
                        for w in caught:  # any other warning goes where it would have gone
                            if not issubclass(w.category, BlindChartWarning):
                                warnings.showwarning(w.message, w.category, w.filename, w.lineno)
            except BatchFailed as exc:
                processed += len(exc.verdicts)
                if exc.verdicts and exc.monitor is not None:
                    write_outputs(exc.monitor)  # the batches processed before the bad one, alarms included
                _batch_failed(exc, processed, flagged)
            except Exception as exc:
                if stop.is_set() and type(exc).__name__ == "ArrowCancelled":
                    break  # a read cancelled by the signal: that batch was not counted and runs next time
                raise
            if not verdicts and not json_out and polls == 0:  # with --follow: said once, not every poll
                console.print(f"no batches in {src.description} yet" if first_run
                              else f"no new batches in {src.description} since the last run")
            processed += len(verdicts)
            polls += 1
            write_outputs(mon)
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
    raise typer.Exit(1 if flagged else 0)


def _batch_failed(exc, processed: int, alarmed: bool) -> None:
    """End the run at a batch that could not be processed: one ``Error:`` line on stderr.

    The state holds the batches before it (that one is retried on the next run).  Exit 2, unless
    this run raised an alarm (or another finding) before the failure: then exit 1, so the alarm is
    never lost to a bad later batch (cron and systemd see the alarm code; the metrics file was written).
    """
    from ..exceptions import DataError

    msg = exc.reason
    if processed:
        msg += (f" (stopped there: the {processed} batch(es) before it are saved, it is read again on the "
                f"next run{'; exit 1: this run raised an alarm or another finding' if alarmed else ''})")
    if not alarmed:
        raise DataError(msg)
    sys.stdout.flush()
    sys.stderr.write(f"Error: {msg}\n")
    sys.stderr.flush()
    raise typer.Exit(1)


def _check_paths(*, state: Path, reference: str | None, report: Path | None, metrics: Path | None,
                 folder: str | None) -> None:
    """Refuse, before any work, a state or output path that cannot be written or would overwrite an input.

    ``folder`` is the local source folder (``None`` for a bucket prefix or a table).
    """
    from ..data._read import is_postgres
    from ..monitor._watch import _BATCH_SUFFIXES

    def same(a, b) -> bool:
        try:
            if os.path.exists(a) and os.path.exists(b):
                return os.path.samefile(a, b)
        except OSError:
            pass
        return os.path.realpath(a) == os.path.realpath(b)

    def batch_of_source(path: Path) -> bool:
        """Whether ``path`` is (or would be read as) a batch file of the source folder."""
        if folder is None:
            return False
        home = os.path.realpath(folder)
        for where in (os.path.abspath(path), os.path.realpath(path)):  # the name given, and a link's target
            name = os.path.basename(where)
            if (os.path.realpath(os.path.dirname(where)) == home and name.lower().endswith(_BATCH_SUFFIXES)
                    and not name.startswith((".", "_"))):
                return True
        if not os.path.isfile(path):
            return False
        try:
            entries = list(os.scandir(folder))
        except OSError:
            return False
        return any(e.name.lower().endswith(_BATCH_SUFFIXES) and not e.name.startswith((".", "_"))
                   and same(path, e.path) for e in entries)

    if state.is_dir():
        raise InvalidParameterError(f"--state {state} is a directory; give a file name such as "
                                    f"{state / 'monitor.state'}")
    ancestor = state.absolute().parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InvalidParameterError(f"--state {state}: {ancestor} is not a folder")
    if batch_of_source(state):
        raise InvalidParameterError(f"--state {state} is a batch file of SOURCE (or would be read as one); "
                                    "keep the state outside the source folder or give it another name")
    ref_local = reference is not None and not is_postgres(reference) and "://" not in reference
    outputs = [(opt, path) for opt, path in (("--report", report), ("--metrics", metrics)) if path is not None]
    for opt, path in outputs:
        inputs = [("the state file (--state)", state)]
        if ref_local:
            inputs.append(("the reference (--reference)", Path(reference)))
        if folder is not None:
            inputs.append(("the source folder (SOURCE)", Path(folder)))
        for what, other in inputs:
            if same(path, other):
                raise InvalidParameterError(f"{opt} {path} is {what}; flipguard never overwrites its inputs")
        if batch_of_source(path):
            raise InvalidParameterError(f"{opt} {path} is a batch file of SOURCE (or would be read as one); "
                                        "flipguard never overwrites its inputs")
        if path.is_dir():
            default = "report.html" if opt == "--report" else "flipguard.prom"
            raise InvalidParameterError(f"{opt} {path} is a directory; give a file name such as {path / default}")
        check_parent_folder(path, opt)
    if len(outputs) == 2 and same(report, metrics):
        raise InvalidParameterError(f"--report and --metrics are the same file ({report}); give two file names")


_MAX_IDS = 1000  # ids of rows with unknown or missing labels per JSON line (the counts are exact)


def _line(v) -> dict:
    d = v.to_dict(rows=False)
    out = {k: d[k] for k in ("batch", "rows", "judged", "alarm", "finding", "status", "score", "suspects",
                             "expected_suspects", "feature_drift", "feature_pvalue", "label_shift_pvalue",
                             "cause", "unknown_labels", "missing_labels", "unknown_values", "label_shift",
                             "label_shares", "blind_pairs", "missing_features")}
    out["unknown_label_ids"] = to_jsonable(v.unknown_ids[:_MAX_IDS].tolist())
    out["missing_label_ids"] = to_jsonable(v.missing_ids[:_MAX_IDS].tolist())
    if v.alarm:
        out["pair"] = {"true_class": d["pair"][0], "labelled_as": d["pair"][1]}
        out["pairs"] = d["pairs"]
        out["start_batch"] = d["start_batch"]
        sl = v.to_dict(rows=True)["suspect_list"]
        out["suggested_labels"] = [{"id": s["id"], "suggested_label": s["suggested_label"], "score": s["score"]}
                                   for s in sl]
    return out


def _ids(ids, n: int = 5) -> str:
    shown = ", ".join(str(i) for i in ids[:n].tolist())
    return shown + (f", ... ({len(ids) - n} more)" if len(ids) > n else "")


def _label_problems_text(v) -> str:
    """``; 16 rows with a label the reference never saw: 'Benign' x16 (...) ids ...; 10 rows without a label``."""
    from ..monitor._monitor import short_value

    parts = []
    if v.unknown_labels:
        vals = []
        for u in v.unknown_values:
            alike = "" if u.get("looks_like") is None else f" (= {short_value(u['looks_like'])} but for case/spaces)"
            vals.append(f"{short_value(u['value'])} x{u['rows']}{alike}")
        listed = sum(u["rows"] for u in v.unknown_values)
        more = f", {v.unknown_labels - listed} more rows with other values" if listed < v.unknown_labels else ""
        parts.append(f"{v.unknown_labels} row{'s' if v.unknown_labels != 1 else ''} with a label the reference "
                     f"never saw: {', '.join(vals)}{more}, ids {_ids(v.unknown_ids)}")
    if v.missing_labels:
        parts.append(f"{v.missing_labels} row{'s' if v.missing_labels != 1 else ''} without a label, "
                     f"ids {_ids(v.missing_ids)}")
    return "".join(f"; {p}" for p in parts)


def _print_line(v) -> None:
    from rich.markup import escape

    def say(line: str) -> None:
        console.print(line, soft_wrap=True)  # one line per batch, however long: log files are read by line

    counted = f"{v.rows} rows" + (f" ({v.judged} judged)" if v.judged != v.rows else "")
    head = escape(f"{v.batch}: {counted}, {v.suspects} suspects (clean <= {v.expected_suspects:.1f}), "
                  f"score {fmt(v.score, 2)}")
    problems = escape(_label_problems_text(v))
    from ..monitor._monitor import short_value

    drifted = "; [yellow]inputs drifted[/]" if v.feature_drift else ""
    if v.missing_features:
        cols = ", ".join(f"{short_value(c)} {s:.0%} missing" for c, s in list(v.missing_features.items())[:10])
        drifted += escape(f" ({cols})")
    if v.alarm:
        a, b = v.pair
        say(f"[bold red]ALARM[/] {head}: rows that look like {escape(str(a))} labelled {escape(str(b))} "
            f"since batch {escape(str(v.start_batch))}" + (" (inputs drifted too)" if v.feature_drift else "")
            + problems)
    elif v.status == "unknown_labels":
        none = "; no row could be judged" if v.judged == 0 else ""
        say(f"[bold red]UNKNOWN LABELS[/] {head}{none}{problems}" + drifted)
    elif v.status == "label_shift":
        shares = ", ".join(f"{short_value(s['label'])} {s['share']:.0%} (reference {s['reference_share']:.0%})"
                           for s in v.label_shares)
        say(f"[bold red]LABEL SHIFT[/] {head}: class shares differ from the reference's "
            f"(p = {v.label_shift_pvalue:.2g}): {escape(shares)}" + drifted)
    elif v.status == "inconclusive" and v.rows == 0:
        say(f"[yellow]inconclusive[/] {head}: the batch has no rows, nothing could be judged")
    elif v.status == "inconclusive":
        blind = ", ".join(f"{short_value(a)} labelled {short_value(b)}" for a, b in v.blind_pairs[:10])
        say(f"[yellow]inconclusive[/] {head}: the monitor cannot see flips of {escape(blind)} (their charts "
            "were switched off when the reference was fitted)" + drifted)
    else:
        say(f"ok {head}" + drifted)


def _write_report(path: Path, mon, description: str) -> None:
    from ..report import monitor_sections, write_report

    flagged = sum(1 for h in mon.history_ if h.get("status") in ("unknown_labels", "inconclusive")
                  or h.get("unknown_labels") or h.get("missing_labels"))
    write_report(path, monitor_sections(mon), title=f"Label monitor of {description}",
                 subtitle=f"{mon.n_batches_} batches, {len(mon.alarms_)} alarm(s), "
                          f"{flagged} batch(es) with unknown or missing labels")
