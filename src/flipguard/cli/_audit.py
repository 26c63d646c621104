"""``flipguard audit``: which labels of a dataset look flipped, without ground truth."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from .._names import MODEL_NAMES
from ..exceptions import InvalidParameterError
from ._app import app
from ._common import (
    DataArg,
    EngineOpt,
    IdOpt,
    JsonOpt,
    LabelOpt,
    ModelOpt,
    RayAddressOpt,
    SeedOpt,
    TableOpt,
    console,
    err_console,
    fmt,
    refuse_overwrite,
)

_FORMATS = ("table", "json", "csv")


@app.command("audit")
def audit_cmd(
    data: DataArg,
    label: LabelOpt,
    id: IdOpt = None,
    model: ModelOpt = "logreg",
    method: Annotated[str, typer.Option(
        "--method", help="auto, confident_learning, self_confidence, margin, knn, disagreement, "
                         "trusted or rules.")] = "auto",
    trusted: Annotated[Path | None, typer.Option(
        "--trusted", help="CSV/Parquet of verified rows (same columns); matched to the data by --id.")] = None,
    rules: Annotated[Path | None, typer.Option(
        "--rules", help="YAML list of {when: <pandas condition>, label: <value>, name: <text>}.")] = None,
    reference_label: Annotated[str | None, typer.Option(
        "--reference-label", help="Column holding a second, independent labeller's labels.")] = None,
    output_format: Annotated[str, typer.Option(
        "--format", "-f", help="table (summary + top suspects), json (one object) or csv (every row).")] = "table",
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Write the json/csv output to FILE instead of stdout; with --format table, "
                            "write the per-row table (CSV or Parquet by extension).")] = None,
    fail_above: Annotated[float | None, typer.Option(
        "--fail-above", help="Exit 1 when the estimated flip rate exceeds RATE (e.g. 0.05).")] = None,
    report: Annotated[Path | None, typer.Option(
        "--report", help="Write an HTML audit page.")] = None,
    top: Annotated[int, typer.Option("--top", help="Suspects shown by --format table.")] = 20,
    cv: Annotated[int, typer.Option("--cv", help="Folds for the out-of-fold probabilities.")] = 5,
    seed: SeedOpt = 0,
    table: TableOpt = None,
    engine: EngineOpt = "local",
    ray_address: RayAddressOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Find labels that look flipped: a score per row, how many, which class pairs.

    Out-of-fold probabilities of --model (so no row is judged by a model that
    saw its label) are combined with neighbour votes and any independent
    evidence (--trusted, --rules, --reference-label).  Exit 1 with
    --fail-above when the estimated flip rate is higher; 2 on bad input.

    Example:

        flipguard audit reviews.csv --label sentiment --id review_id \\
            --format json --fail-above 0.05 --report audit.html
    """
    from ..detection import audit_dataset, detector_names, load_trusted
    from ..detection._io import audit_sources, load_audit_data

    if json_out:
        output_format = "json"
    if output_format not in _FORMATS:
        raise InvalidParameterError(f"--format must be one of {', '.join(_FORMATS)}; got {output_format!r}")
    if method not in detector_names():
        raise InvalidParameterError(f"Unknown detection method {method!r}; choose one of "
                                    f"{', '.join(detector_names())}.")
    if model not in MODEL_NAMES:
        raise InvalidParameterError(f"Unknown model {model!r}; choose one of {', '.join(MODEL_NAMES)}.")
    if fail_above is not None and not 0 <= fail_above <= 1:
        raise InvalidParameterError(f"--fail-above must be a rate in [0, 1]; got {fail_above}")
    if top < 0 or cv < 2:
        raise InvalidParameterError("--top must be >= 0 and --cv >= 2")
    for path, opt in ((out, "--out"), (report, "--report")):
        refuse_overwrite(data, path, opt)
    from . import _scale

    if _scale.is_partitioned_source(data, table):  # a folder or prefix: confident learning per partition
        return _scale.audit(data, label=label, id=id, model=model, method=method, cv=cv, seed=seed, out=out,
                            top=top, fail_above=fail_above, json_out=output_format == "json", engine=engine,
                            ray_address=ray_address)
    _scale.note_single(engine, ray_address)

    with _status("Loading data"):
        ds = load_audit_data(data, label=label, id=id, reference_label=reference_label, table=table)
        trusted_rows = load_trusted(trusted, ds) if trusted is not None else None
        sources, source_warnings = audit_sources(ds, rules=rules, reference_label=reference_label)
    with _status(f"Auditing {ds.n_samples} labels"):
        audit = audit_dataset(ds, method=method, model=model, cv=cv, trusted=trusted_rows,
                              sources=sources, random_state=seed)
    audit.warnings.extend(source_warnings)

    if report is not None:
        from ..report import write_report
        from ..report._audit import audit_sections

        write_report(report, audit_sections(audit, ds), title=f"Label audit of {ds.source}",
                     subtitle=f"label column '{ds.label_name}', method {audit.method}, model {model}")

    if output_format == "json":
        text = audit.to_json(rows=True) + "\n"
        _emit(text, out)
    elif output_format == "csv":
        _emit_csv(audit, out)
    else:
        _print_table(audit, ds, top)
        if out is not None:
            from ..data import write_table

            write_table(audit.to_table(), out, "parquet" if str(out).lower().endswith(
                (".parquet", ".pq", ".parq")) else "csv")
            console.print(f"per-row results written to {out}")
        if report is not None:
            console.print(f"audit report written to {report}")
    for w in audit.warnings:
        err_console.print(f"[yellow]warning:[/] {w}")
    if fail_above is not None and audit.estimated_flip_rate > fail_above:
        if output_format == "table":
            err_console.print(f"estimated flip rate {audit.estimated_flip_rate:.1%} exceeds "
                              f"--fail-above {fail_above:.1%}")
        raise typer.Exit(1)


def _status(message: str):
    import contextlib

    return err_console.status(message) if err_console.is_terminal else contextlib.nullcontext()


def _emit(text: str, out: Path | None) -> None:
    if out is None:
        typer.echo(text, nl=False)
    else:
        from .._io import atomic_write_text

        atomic_write_text(out, text)


def _emit_csv(audit, out: Path | None) -> None:
    import pyarrow.csv as pacsv

    tbl = audit.to_table()
    if out is not None:
        from ..data import write_table

        write_table(tbl, out, "csv")
        return
    buf = io.BytesIO()
    pacsv.write_csv(tbl, buf)
    typer.echo(buf.getvalue().decode("utf-8"), nl=False)


def _print_table(audit, ds, top: int) -> None:
    q = audit.model_quality
    console.print(f"[bold]{audit.n_flagged}[/] of {audit.n_samples} labels flagged; estimated flips "
                  f"[bold]{audit.estimated_flips}[/] ({audit.estimated_flip_rate:.1%}) by method "
                  f"{audit.method}")
    if q:
        console.print(f"model {q.get('model')}: out-of-fold accuracy {fmt(q.get('accuracy'))}, "
                      f"balanced accuracy {fmt(q.get('balanced_accuracy'))}, AUROC {fmt(q.get('auroc'))} "
                      "(against the observed labels)")
    conf = audit.details.get("confident_estimate")
    if conf is not None:
        console.print(f"confident-learning estimate (conservative): {conf}")
    if audit.transition_list():
        t = Table("true (suggested)", "observed", "rows", title="Estimated flips by class pair")
        for tr in audit.transition_list()[:20]:
            t.add_row(str(tr["from"]), str(tr["to"]), str(tr["count"]))
        console.print(t)
    if audit.evidence:
        t = Table("source", "kind", "applies to", "disagrees", title="Independent evidence")
        for e in audit.evidence:
            t.add_row(str(e["name"]), e["kind"], str(e["n_applicable"]), str(e["n_disagree"]))
        console.print(t)
    shown = audit.top(top)
    if len(shown):
        ids = audit.row_ids()
        t = Table("row", ds.id_name or "id", "label", "suggested", "score", "flagged",
                  title=f"Top {len(shown)} suspects")
        for r in shown:
            t.add_row(str(r), str(ids[r]), str(audit.label_values(audit.labels[r])),
                      str(audit.label_values(audit.suggested[r])),
                      f"{audit.scores[r]:.3f}" if math.isfinite(audit.scores[r]) else "-",
                      "yes" if audit.flags[r] else "")
        console.print(t)
