"""``flipguard clean``: a cleaned copy of a dataset and a log of every change."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from .._io import atomic_write_text
from .._names import CLEAN_MODES, MODEL_NAMES
from ..exceptions import InvalidParameterError
from ._app import app
from ._common import (
    DataArg,
    IdOpt,
    JobsOpt,
    JsonOpt,
    KeepOpt,
    LabelOpt,
    SeedOpt,
    TableOpt,
    TextOpt,
    check_csv_output,
    check_outputs,
    console,
    dropped_columns_text,
    err_console,
    fmt,
    load_data,
    output_format,
    print_json,
)

#: Changed rows shown in the terminal summary.
SHOWN = 10


@app.command("clean")
def clean_cmd(
    data: DataArg,
    label: LabelOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Cleaned copy (CSV or Parquet; default: the input's format).",
                                      show_default=False)] = ...,
    id: IdOpt = None,
    mode: Annotated[str, typer.Option("--mode", help="drop: remove suspects; relabel: give them the suggested "
                                                     "label; weight: keep all rows, add a flipguard_weight column.")
                    ] = "drop",
    trusted: Annotated[str | None, typer.Option(
        "--trusted", help="Verified labels: a file with DATA's columns, or just the --id and --label "
                          "columns. Verified rows are never cleaned and are corrected where DATA disagrees.")
    ] = None,
    model: Annotated[str, typer.Option(
        "--model", "-m", help="auto (chosen by out-of-fold log-loss, as audit does), logreg, linsvm, rf, hgb, "
                              "knn or mlp.")] = "auto",
    log: Annotated[Path | None, typer.Option(
        "--log", help="Write every change: row, id, old_label, new_label, action, score (.csv, .parquet or .json).")
                   ] = None,
    no_guard: Annotated[bool, typer.Option(
        "--no-guard", help="Clean even if cleaning does not help on held-out folds.")] = False,
    seed: SeedOpt = 0,
    table: TableOpt = None,
    text: TextOpt = None,
    keep: KeepOpt = None,
    n_jobs: JobsOpt = 1,
    json_out: JsonOpt = False,
) -> None:
    """Write a cleaned copy of a dataset: suspected flips dropped, relabelled or down-weighted.

    Labels are audited exactly as `flipguard audit` does with the same
    --model and --seed (same flagged rows, same estimate); at most the
    estimated number of flips per class is dropped or relabelled (--mode weight:
    each class loses that much weight, spread over its suspect rows).  The cleaning is kept
    only if, on held-out folds, balanced accuracy does not drop and accuracy
    drops by no more than two standard errors (the folds' labels may be
    flipped too, so a correct fix can count as an error); otherwise the copy
    equals the input and the summary says why.  The input is never modified.

    Example:

        flipguard clean reviews.csv --label sentiment --id review_id \\
            --mode relabel --out reviews.clean.csv --log changes.csv
    """
    from ..data import write_table
    from ..mitigation import clean_dataset, cleaned_table
    from ..mitigation._strategies import accepts_sample_weight

    if mode not in CLEAN_MODES:
        raise InvalidParameterError(f"--mode must be one of {', '.join(CLEAN_MODES)}; got {mode!r}")
    if model != "auto" and model not in MODEL_NAMES:
        raise InvalidParameterError(f"--model must be one of auto, {', '.join(MODEL_NAMES)}; got {model!r}")
    if mode == "weight" and model != "auto" and not accepts_sample_weight(model):
        raise InvalidParameterError(f"--mode weight needs a model whose training accepts sample weights; "
                                    f"{model} does not (use --mode drop or relabel, or another --model)")
    check_outputs([data, trusted], ("--out", out), ("--log", log))
    output_format(out, "csv")
    if log is not None and not str(log).lower().endswith(".json"):
        output_format(log, "csv", "--log")
    ds = load_data(data, label=label, id=id, table=table, text=text, keep=keep)
    if ds.format != "csv":  # a CSV input is copied as its own bytes (rewrite_csv)
        check_csv_output(ds.table, out, "--out", output_format(out, ds.format))
    trusted_notes: list[str] = []
    verified = _read_trusted(trusted, ds, trusted_notes) if trusted is not None else None
    cleaned, changes = clean_dataset(ds, mode=mode, trusted=verified, model=model, guard=not no_guard,
                                     random_state=seed, n_jobs=n_jobs)
    changes.warnings[:0] = trusted_notes
    out_fmt = output_format(out, ds.format)
    if not (ds.format == "csv" and out_fmt == "csv" and _rewrite(data, out, ds, changes)):
        write_table(cleaned_table(cleaned, changes), out, out_fmt)
    if log is not None:
        _write_log(changes, log)

    result = {"input": ds.source, "output": str(out), "format": out_fmt, "n_rows_out": cleaned.n_samples,
              **changes.summary(), "log": str(log) if log else None, "seed": seed}
    dropped = dropped_columns_text(ds)  # a note on stderr too
    if dropped:
        result["warnings"] = [*result["warnings"], dropped]
    if json_out:
        print_json(result)
        return
    _render(changes, result, ds)


def _rewrite(data, out, ds, changes) -> bool:
    """Edit a copy of the input CSV: only changed label fields, dropped lines, the weight column."""
    import numpy as np

    from ..data._rewrite import rewrite_csv
    from ..mitigation import WEIGHT_COLUMN

    after = ds.y.copy()
    keep = np.ones(ds.n_samples, dtype=bool)
    dropped = changes.actions == "dropped"
    keep[changes.rows[dropped]] = False
    moved = ~dropped & (changes.actions != "reweighted")
    if moved.any():
        after[changes.rows[moved]] = ds.encode_labels(np.asarray(list(changes.new_labels[moved]),
                                                                 dtype=ds.classes.dtype))
    add = (WEIGHT_COLUMN, changes.weights) if changes.weights is not None else None
    return rewrite_csv(data, out, label=ds.label_name, codes_before=ds.y, codes_after=after,
                       keep=None if keep.all() else keep, add_column=add)


def _read_trusted(path: str, ds, notes: list[str]):
    """Verified rows, read and matched exactly as ``flipguard audit --trusted`` does
    (:func:`flipguard.detection.load_trusted`): a file with the data's columns (rows matched by
    id, others are extra examples), or just the id and label columns (every id in the data)."""
    from ..data import read_table
    from ..detection import load_trusted

    if ds.id_name is None:
        names = read_table(path)[0].column_names
        missing = [c for c, how in ds.encoding.items() if not str(how).startswith("dropped") and c not in names]
        if missing:
            raise InvalidParameterError(f"--trusted {path} lacks the data's feature column(s) "
                                        f"{', '.join(missing[:5])}; to match verified labels by id, give --id")
    return load_trusted(path, ds, notes=notes)


def _write_log(changes, path: Path) -> None:
    if str(path).lower().endswith(".json"):
        from .._json import to_jsonable

        atomic_write_text(path, json.dumps(to_jsonable(changes.to_dict(rows=True)), indent=2) + "\n")
    else:
        from ..data import write_table

        write_table(changes.to_table(), path, output_format(path, "csv", "--log"))


def _render(changes, result: dict, ds) -> None:
    verb = {"drop": "dropped", "relabel": "relabelled", "weight": "down-weighted"}[changes.mode]
    n_main = {"drop": changes.n_dropped, "relabel": changes.n_relabelled,
              "weight": changes.n_reweighted}[changes.mode]
    console.print(f"[bold]{changes.mode}[/]: {n_main} of {changes.n_rows} rows {verb}"
                  + (f", {changes.n_verified} corrected from trusted labels" if changes.n_verified else "")
                  + f" -> {result['output']} ({result['format']}, {result['n_rows_out']} rows)")
    style = "yellow" if changes.fallback else "green"
    console.print(f"[{style}]{changes.reason}[/]")
    if changes.model:
        console.print(f"model trained: {changes.model}", soft_wrap=True)
    a = changes.audit
    if a:
        q = a.get("model_quality", {})
        console.print(f"audit: {a['n_flagged']} flagged, about {a['estimated_flips']} flipped labels estimated "
                      f"(out-of-fold balanced accuracy {fmt(q.get('balanced_accuracy'))})")
    if len(changes.rows):
        import numpy as np

        weighted = changes.weights is not None
        t = Table("row", "id", "label", "weight" if weighted else "new label", "action", "score",
                  title=f"Changes ({min(SHOWN, len(changes.rows))} most suspicious of {len(changes.rows)})")
        order = np.argsort(-np.nan_to_num(changes.scores, nan=-1.0), kind="stable")[:SHOWN]
        for i in order:
            new = changes.new_labels[i]
            if weighted and changes.actions[i] == "reweighted":
                cell = fmt(float(changes.weights[changes.rows[i]]))
            else:
                cell = "-" if new is None else str(new)
            t.add_row(str(changes.rows[i]), str(changes.ids[i]), str(changes.old_labels[i]),
                      cell, changes.actions[i], fmt(float(changes.scores[i])))
        console.print(t)
    for w in changes.warnings:
        err_console.print(f"[yellow]warning:[/] {w}", soft_wrap=True)
    if result["log"]:
        console.print(f"every change listed in {result['log']}")

