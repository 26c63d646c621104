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
    KeepOpt,
    LabelOpt,
    RayAddressOpt,
    SeedOpt,
    TableOpt,
    TextOpt,
    check_outputs,
    console,
    dropped_columns_text,
    err_console,
    fmt,
    note,
    note_dropped_columns,
    refuse_overwrite,
)

_FORMATS = ("table", "json", "csv")


@app.command("audit")
def audit_cmd(
    data: DataArg,
    label: LabelOpt,
    id: IdOpt = None,
    model: Annotated[str, typer.Option(
        "--model", "-m", help="auto (a stack chosen by out-of-fold log-loss), logreg, linsvm, rf, hgb, "
                              "knn or mlp; a named model's 'poisoned' must also hold on the other "
                              "candidates when they fit the labels better.")] = "auto",
    method: Annotated[str, typer.Option(
        "--method", help="auto, confident_learning, self_confidence, margin, knn, disagreement, "
                         "trusted or rules.")] = "auto",
    text: TextOpt = None,
    keep: KeepOpt = None,
    pred_probs: Annotated[Path | None, typer.Option(
        "--pred-probs", help="CSV/Parquet of out-of-fold probabilities from any model: one column per "
                             "class, named by the class value; matched by --id, else by row. "
                             "No model is trained; DATA may then hold only ids and labels.",
        show_default=False)] = None,
    features: Annotated[Path | None, typer.Option(
        "--features", help="CSV/Parquet of numeric features computed elsewhere (embeddings) to judge "
                           "the labels by instead of DATA's columns; matched by --id, else by row.",
        show_default=False)] = None,
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
        "--fail-above", help="Exit 1 when the estimated flip rate exceeds RATE (e.g. 0.05) and the "
                             "estimate is more than clean labels would give (its 95th percentile). Under a "
                             "boundary verdict the estimate is a lower bound: gate on --fail-on too.")] = None,
    fail_on: Annotated[list[str] | None, typer.Option(
        "--fail-on", help="Exit 1 when the verdict is one of these: poisoned, inconclusive, inconsistent "
                          "(repeatable or comma-separated), whatever the estimate.",
        show_default=False)] = None,
    report: Annotated[Path | None, typer.Option(
        "--report", help="Write an HTML audit page.")] = None,
    top: Annotated[int, typer.Option("--top", help="Suspects shown by --format table.")] = 20,
    cv: Annotated[int, typer.Option("--cv", help="Folds for the out-of-fold probabilities.")] = 5,
    seed: SeedOpt = 0,
    table: TableOpt = None,
    engine: EngineOpt = "local",
    ray_address: RayAddressOpt = None,
    training: Annotated[str, typer.Option(
        "--training", help="Partitioned datasets: how fold models learn from more rows than --max-train-rows: "
                           "sample (fit on a seeded sample), incremental (partial_fit streamed over every "
                           "partition) or auto (incremental only when the sample's features would exceed "
                           "1 GiB).")] = "auto",
    max_train_rows: Annotated[int, typer.Option(
        "--max-train-rows", help="Partitioned datasets: rows of the training sample.")] = 1_000_000,
    json_out: JsonOpt = False,
) -> None:
    """Find labels that look flipped: a score per row, how many, which class pairs.

    Out-of-fold probabilities of --model (so no row is judged by a model that
    saw its label), or your own (--pred-probs), are combined with neighbour
    votes and any independent evidence (--trusted, --rules,
    --reference-label).  Free-text columns need --text.  Exit 1 with
    --fail-above when the estimated flip rate is higher and beyond what clean
    labels would give, or with --fail-on when the verdict is one named; 2 on
    bad input.

    Example:

        flipguard audit reviews.csv --label sentiment --id review_id \\
            --text review --format json --fail-above 0.05 --fail-on poisoned \\
            --report audit.html
    """
    import warnings

    if json_out and output_format not in ("table", "json"):
        raise InvalidParameterError(f"--json and --format {output_format} conflict (--json means "
                                    "--format json); give only one of them")
    if json_out:
        output_format = "json"
    if output_format not in _FORMATS:
        raise InvalidParameterError(f"--format must be one of {', '.join(_FORMATS)}; got {output_format!r}")
    if model != "auto" and model not in MODEL_NAMES:
        raise InvalidParameterError(f"Unknown model {model!r}; choose one of auto, {', '.join(MODEL_NAMES)}.")
    if fail_above is not None and not 0 <= fail_above <= 1:
        raise InvalidParameterError(f"--fail-above must be a rate in [0, 1]; got {fail_above}")
    fail_verdicts = _fail_verdicts(fail_on)
    if top < 0:
        raise InvalidParameterError(f"--top must be 0 or more; got {top}")
    if cv < 2:
        raise InvalidParameterError(f"--cv must be at least 2 (folds); got {cv}")
    from . import _scale

    if _scale.is_partitioned_source(data, table):  # a folder or prefix: confident learning per partition
        refuse_overwrite(data, out, "--out")
        if fail_verdicts:
            raise InvalidParameterError("--fail-on needs the dataset verdict of a single-table audit; a "
                                        "partitioned dataset is audited by confident learning per "
                                        "partition: gate it with --fail-above")
        _scale.refuse_single_table_options({
            "--trusted": trusted, "--pred-probs": pred_probs, "--features": features, "--text": text,
            "--keep": keep, "--rules": rules, "--reference-label": reference_label, "--report": report,
            "--format csv": output_format == "csv" or None})
        return _scale.audit(data, label=label, id=id, model=model, method=method, cv=cv, seed=seed, out=out,
                            top=top, fail_above=fail_above, json_out=output_format == "json", engine=engine,
                            ray_address=ray_address, training=training, max_train_rows=max_train_rows)
    _scale.note_single(engine, ray_address)
    if training != "auto" or max_train_rows != 1_000_000:
        raise InvalidParameterError("--training and --max-train-rows apply to partitioned datasets (a folder or "
                                    "prefix of files); a single file is audited on all its rows")

    check_outputs([data, trusted, pred_probs, features, rules], ("--out", out), ("--report", report))
    claims = {".parquet": "parquet", ".pq": "parquet", ".parq": "parquet", ".csv": "csv", ".tsv": "csv",
              ".json": "json", ".jsonl": "json"}.get(out.suffix.lower()) if out is not None else None
    if claims and output_format in ("json", "csv") and claims != output_format:
        raise InvalidParameterError(f"--format {output_format} writes {output_format.upper()}, but --out {out} "
                                    f"names a {claims} file: change the extension, or use --format table "
                                    "to write the per-row table as CSV or Parquet")
    if out is not None and output_format == "table":
        from ._common import output_format as format_of

        out_fmt = format_of(out, "csv")  # an unsupported extension is refused before the work
    from ..detection import audit_dataset, detector_names, load_trusted
    from ..detection._io import audit_sources, load_audit_data, read_features, read_pred_probs

    if method not in detector_names():
        raise InvalidParameterError(f"Unknown detection method {method!r}; choose one of "
                                    f"{', '.join(detector_names())}.")
    if method == "rules" and rules is None and reference_label is None:
        raise InvalidParameterError("--method rules needs --rules FILE or --reference-label COLUMN")
    if fail_verdicts and method != "auto":
        raise InvalidParameterError(f"--fail-on needs the dataset verdict, which only --method auto gives "
                                    f"(got --method {method}); gate on --fail-above instead")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with _status("Loading data"):
            ds = load_audit_data(data, label=label, id=id, reference_label=reference_label, table=table,
                                 text=text, require_features=features is None and pred_probs is None,
                                 keep=keep or ())
            note_dropped_columns(ds, leaks=False)  # the audit's own warnings name them
            dropped = dropped_columns_text(ds)  # a note on stderr, and among the warnings of JSON/HTML
            probs = read_pred_probs(pred_probs, ds, id=id) if pred_probs is not None else None
            if probs is not None and model != "auto":
                note(f"note: --model {model} is not used: --pred-probs gives the probabilities")
            feature_notes: list[str] = []
            feats = read_features(features, ds, id=id, notes=feature_notes) if features is not None else None
            if feats is not None and trusted is not None:
                raise InvalidParameterError("--trusted cannot be combined with --features (the trusted "
                                            "rows would need the same embeddings)")
            trusted_notes: list[str] = []
            trusted_rows = load_trusted(trusted, ds, notes=trusted_notes) if trusted is not None else None
            sources, source_warnings = audit_sources(ds, rules=rules, reference_label=reference_label)
        with _status(f"Auditing {ds.n_samples} labels"):
            audit = audit_dataset(ds, method=method, model=model, cv=cv, trusted=trusted_rows,
                                  sources=sources, random_state=seed, pred_probs=probs, features=feats)
        audit.warnings.extend(trusted_notes + source_warnings + feature_notes)
        notes = list(audit.warnings)  # for stderr: the dropped columns are a note there already
        if dropped:
            audit.warnings.append(dropped)
        model_desc = f"probabilities from {pred_probs}" if pred_probs is not None else \
            f"model {audit.model_quality.get('model') or model}" + (" (auto)" if model == "auto" else "")
        if report is not None:
            from ..report import write_report
            from ..report._audit import audit_sections

            write_report(report, audit_sections(audit, ds), title=f"Label audit of {ds.source}",
                         subtitle=f"label column '{ds.label_name}', method {audit.method}, {model_desc}")
        if out is not None and output_format == "table":
            from ..data import write_table

            write_table(audit.to_table(), out, out_fmt)
    notes += [f"{w.category.__name__}: {str(w.message).strip().splitlines()[0]}" for w in caught
              if str(w.message).strip()]

    # a closed stdout (| head) is absorbed by main()'s stdout: the files are written, the exit code is ours
    if output_format == "json":
        _emit(audit.to_json(rows=True) + "\n", out)
    elif output_format == "csv":
        _emit_csv(audit, out)
    else:
        _print_table(audit, ds, top)
        if out is not None:
            console.print(f"per-row results written to {out}")
        if report is not None:
            console.print(f"audit report written to {report}")
    for w in dict.fromkeys(notes):
        err_console.print(f"[yellow]warning:[/] {w}", soft_wrap=True)
    status = str(audit.verdict.get("status", ""))
    why = _gate(audit, status, fail_above, fail_verdicts)
    if why is not None:
        if output_format == "table":
            err_console.print(why)
        raise typer.Exit(1)


def _gate(audit, status: str, fail_above: float | None, fail_verdicts) -> str | None:
    """Why the run fails (exit 1), or None.

    ``--fail-above`` acts on an estimate only when it is more than clean labels would give (its
    95th percentile ``clean_estimate_upper``) or the verdict is ``poisoned``: on a table whose
    classes overlap, confident learning's count is large on clean labels too, and gating on it
    would page on clean data.  Such a count is reported on stderr, not silently dropped."""
    if fail_above is not None and status.startswith("labels inconsistent"):
        return f"verdict: {status} (--fail-above {fail_above:.1%})"
    if _VERDICT_KEYS.get(status) in fail_verdicts:
        return f"verdict: {status} (--fail-on {_VERDICT_KEYS[status]})"
    if fail_above is None:
        return None
    if audit.estimated_flip_rate <= fail_above:
        if status == "poisoned":
            err_console.print(
                f"note: the verdict is 'poisoned' and the run passes --fail-above {fail_above:.1%} on its "
                f"estimate ({audit.estimated_flip_rate:.1%}) alone; the estimate counts the flips the model "
                "disputes, and a model trained on moved labels learns part of them, so more may be flipped "
                "(--fail-on poisoned fails on the verdict itself)", soft_wrap=True)
        return None
    upper = audit.verdict.get("clean_estimate_upper")
    if status != "poisoned" and upper is not None and audit.estimated_flips <= upper:
        err_console.print(
            f"note: estimated flip rate {audit.estimated_flip_rate:.1%} exceeds --fail-above "
            f"{fail_above:.1%}, but clean labels this uncertain give as many (up to {upper}), so it "
            f"proves nothing either way and does not fail the run; the verdict is '{status}' "
            "(--fail-on inconclusive gates on it)", soft_wrap=True)
        return None
    return f"estimated flip rate {audit.estimated_flip_rate:.1%} exceeds --fail-above {fail_above:.1%}"


#: ``--fail-on`` keywords of the verdict statuses (``AutoDetector``'s ``verdict["status"]``).
_VERDICT_KEYS = {"poisoned": "poisoned", "inconclusive": "inconclusive",
                 "labels inconsistent with features: possible heavy poisoning": "inconsistent"}


def _fail_verdicts(values: list[str] | None) -> set[str]:
    """The ``--fail-on`` keywords, each checked (repeatable and comma-separated forms)."""
    if any(not value.strip(" ,") for value in values or []):  # `--fail-on "$UNSET"` would gate on nothing
        raise InvalidParameterError("--fail-on needs a verdict: poisoned, inconclusive or inconsistent")
    chosen = {v.strip().lower() for value in values or [] for v in value.split(",") if v.strip()}
    unknown = sorted(chosen - set(_VERDICT_KEYS.values()))
    if unknown:
        raise InvalidParameterError(f"--fail-on takes poisoned, inconclusive or inconsistent; got "
                                    f"{', '.join(map(repr, unknown))}")
    return chosen


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
    v = audit.verdict
    if v:
        console.print(f"verdict: [bold]{v['status']}[/] - {v['reason']}")
        console.print(f"flagged: {audit.n_likely} likely flipped (false-discovery rate <= {v['fdr']:.0%}), "
                      f"{audit.n_ambiguous} ambiguous; estimated flips {v['estimated_flips']} "
                      f"(clean labels would give about {v['clean_estimate']}, up to "
                      f"{v['clean_estimate_upper']}; false-alarm rate {v['alpha']:.0%})")
    if q.get("selection"):
        console.print(f"model chosen: {q.get('model')} - {q['selection']}")
    conf = audit.details.get("confident_estimate")
    if conf is not None:
        clean = audit.verdict.get("confident_clean_estimate") if audit.verdict else None
        console.print(f"confident-learning estimate: {conf}"
                      + (f" (clean labels this uncertain give about {clean})" if clean is not None else ""))
    if audit.verdict and audit.verdict.get("verified_estimate"):
        from ..detection._auto import verified_estimate_text

        console.print(f"verified rows: {verified_estimate_text(audit.verdict['verified_estimate'])}")
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
        reasons = audit.reasons()
        likely = audit.likely if audit.likely is not None else audit.flags
        t = Table("row", ds.id_name or "id", "label", "suggested", "score", "flagged", "why",
                  title=f"Top {len(shown)} suspects")
        for r in shown:
            t.add_row(str(r), str(ids[r]), str(audit.label_values(audit.labels[r])),
                      str(audit.suggested[r]),
                      f"{audit.scores[r]:.3f}" if math.isfinite(audit.scores[r]) else "-",
                      ("likely" if likely[r] else "ambiguous") if audit.flags[r] else "",
                      str(reasons[r]).replace(";", ", "))
        console.print(t)
