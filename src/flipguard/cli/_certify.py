"""``flipguard certify``: certified accuracy against label flips (Deep Partition Aggregation)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from .._names import MODEL_NAMES
from ..exceptions import DataError, InvalidParameterError
from ._app import app
from ._common import (
    DataArg,
    IdOpt,
    JobsOpt,
    JsonOpt,
    KeepOpt,
    LabelOpt,
    ModelOpt,
    SeedOpt,
    TableOpt,
    TextOpt,
    arrow_values,
    check_outputs,
    console,
    dropped_columns_text,
    err_console,
    fmt,
    load_data,
    output_format,
    print_json,
)

#: Share of DATA held out as the test set when no --test file is given.
HOLDOUT = 0.2


@app.command("certify")
def certify_cmd(
    data: DataArg,
    label: LabelOpt,
    id: IdOpt = None,
    partitions: Annotated[int, typer.Option("--partitions", "-k",
                                            help="Number of partitions (one model each); radii are at most k/2.")] = 50,
    model: ModelOpt = "logreg",
    test: Annotated[str | None, typer.Option(
        "--test", help="Rows to certify (same columns as DATA). Default: 20% of DATA, chosen by a seeded hash "
                 "of each row's id (never by label).")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Write per-row radii: row, id, label, prediction, radius (CSV or Parquet).")] = None,
    classes: Annotated[str | None, typer.Option(
        "--classes", help="Every label of the task, comma-separated (e.g. 'benign,malignant'): the certificate "
                          "then covers flips to these labels exactly. Default: any label, a label absent "
                          "from DATA assumed to win ties (at most one flip smaller).")] = None,
    seed: SeedOpt = 0,
    table: TableOpt = None,
    text: TextOpt = None,
    keep: KeepOpt = None,
    n_jobs: JobsOpt = 1,
    json_out: JsonOpt = False,
) -> None:
    """Certify predictions against label flipping (Deep Partition Aggregation).

    Training rows are split into K partitions by a hash of their id and one
    model is trained per partition; the majority vote's certified radius r
    says the prediction cannot change unless more than r training labels are
    flipped (Levine & Feizi, ICLR 2021).  Reports certified accuracy: the
    share of test rows predicted correctly with radius >= r, for each r.

    Example:

        flipguard certify patients.csv --label diagnosis --id patient_id \\
            --partitions 25 --out radii.csv
    """
    import pyarrow as pa

    from ..data import write_table
    from ..mitigation import PartitionAggregationClassifier

    if model not in MODEL_NAMES:
        raise InvalidParameterError(f"--model must be one of {', '.join(MODEL_NAMES)}; got {model!r}")
    if partitions < 1:
        raise InvalidParameterError(f"--partitions must be at least 1; got {partitions}")
    check_outputs([data, test], ("--out", out))
    if out is not None:
        output_format(out, "csv")  # an unsupported extension is refused before the work
    split = _train_test(data, test, label, id, table, seed, text, keep)
    task_classes = None if classes is None else _parse_classes(classes, split["y_train"])
    clf = PartitionAggregationClassifier(model, n_partitions=partitions, random_state=seed,
                                         n_jobs=n_jobs, classes=task_classes)
    clf.fit(split["X_train"], split["y_train"], ids=split["ids_train"])
    cert = clf.certify(split["X_test"], split["y_test"], ids=split["ids_test"])

    if out is not None:
        write_table(pa.table({
            "row": split["rows_test"], "id": arrow_values(split["ids_test"]),
            "label": arrow_values(cert.y_true), "prediction": arrow_values(cert.predictions),
            "radius": cert.radii,
        }), out, output_format(out, "csv"))

    result = {"input": split["source"], "test": split["test_source"], "n_train": split["n_train"],
              "n_test": cert.n_samples, "seed": seed, **cert.to_dict(rows=False),
              "out": str(out) if out else None,
              "classes": None if task_classes is None else arrow_values(clf.classes_).to_pylist(),
              "assumes_unseen_class": bool(clf.assumes_unseen_class_)}
    if split["dropped"]:  # a note on stderr too
        result["warnings"] = [*result["warnings"], split["dropped"]]
    if json_out:
        print_json(result)
        return
    _render(cert, result)


def _train_test(data, test, label, id, table, seed, text=None, keep=None) -> dict:
    """Training and test arrays, encoded the same way."""
    import numpy as np
    import pyarrow as pa

    from ..data import from_table, read_table
    from ..data._load import encode_labels, refuse_bytes

    # What the partitions train on must not depend on the labels, or flipping a few of them could
    # change the features (a label-sorted row-number column dropped, then kept) and with them
    # every vote: the certificate would not hold.  Same for the held-out rows below.
    ds = load_data(data, label=label, id=id, table=table, text=text, keep=keep, label_blind=True)
    if test is None:
        from ..mitigation._hashing import hash_ids

        # A keyed hash of each row's id (its position without --id), another key than the
        # partitions': the rows held out do not depend on the labels (a stratified split moved 85
        # of 114 test rows when one training label flipped).
        te_mask = hash_ids(ds.ids, f"flipguard-holdout-{seed}") % np.uint64(1_000_000) \
            < np.uint64(HOLDOUT * 1_000_000)
        tr, te = np.flatnonzero(~te_mask), np.flatnonzero(te_mask)
        if len(tr) < 2 or len(te) < 1:
            raise DataError(f"{ds.source}: {ds.n_samples} rows are too few to hold out a {HOLDOUT:.0%} test "
                            "set; give --test FILE")
        labels = ds.labels()
        return {"X_train": ds.X[tr], "y_train": labels[tr], "ids_train": ds.ids[tr],
                "X_test": ds.X[te], "y_test": labels[te], "ids_test": ds.ids[te], "rows_test": te,
                "n_train": len(tr), "source": ds.source, "dropped": dropped_columns_text(ds),
                "test_source": f"{HOLDOUT:.0%} of {ds.source} held out by a hash of each row's id "
                               f"(seed {seed}; not by label)"}
    # Encode training and test rows together so one-hot columns line up.
    test_tbl, test_fmt, where = read_table(test)
    names = ds.table.column_names
    missing = [c for c in names if c not in test_tbl.column_names]
    if missing:
        raise DataError(f"{where}: column(s) {', '.join(missing)} of {ds.source} not found")
    for role, col in (("label", label), ("id", id)):  # text that is not UTF-8: said as such
        if col is not None and col in test_tbl.column_names:
            refuse_bytes(test_tbl.column(col), role, col, where, test_fmt)
    if label in test_tbl.column_names:  # its own row numbers in an error, not the joined table's
        encode_labels(test_tbl.column(label), source=where, label=label, min_classes=1)
    try:
        both = pa.concat_tables([ds.table, test_tbl.select(names)], promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise DataError(f"{where}: columns do not match {ds.source} ({str(exc).splitlines()[0]})") from None
    # The columns the training data's own encoding used (identifiers and label-sorted
    # sequence columns stay out, as they did there).
    features = [c for c, how in ds.encoding.items()
                if not str(how).startswith("dropped") and c not in (text or ())]
    full = from_table(both, label=label, features=features, text=text, source=f"{ds.source} + {where}")
    n = ds.n_samples
    labels = full.labels()
    test_ids = test_tbl.column(id).to_numpy(zero_copy_only=False) if id else np.arange(test_tbl.num_rows)
    return {"X_train": full.X[:n], "y_train": labels[:n], "ids_train": ds.ids,
            "X_test": full.X[n:], "y_test": labels[n:], "ids_test": test_ids,
            "rows_test": np.arange(test_tbl.num_rows), "n_train": n, "source": ds.source,
            "test_source": where, "dropped": dropped_columns_text(ds)}


def _parse_classes(text: str, labels):
    """``--classes a,b,c`` as values of the label column's type (checked by the classifier to hold
    every training label)."""
    import numpy as np

    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise InvalidParameterError("--classes needs at least one label, comma-separated")
    labels = np.asarray(labels)
    try:
        if labels.dtype.kind == "b":
            lookup = {"true": True, "false": False, "1": True, "0": False}
            return np.array([lookup[p.lower()] for p in parts])
        if labels.dtype.kind in "iuf":
            return np.array(parts).astype(labels.dtype)
    except (KeyError, ValueError):
        raise InvalidParameterError(f"--classes {text!r}: not values of the label column "
                                    f"(type {labels.dtype})") from None
    out = np.array(parts, dtype=object).astype(labels.dtype) if labels.dtype.kind in "US" \
        else np.array(parts, dtype=object)
    missing = [str(v) for v in np.unique(labels) if v not in set(out.tolist())]
    if missing:
        raise InvalidParameterError(f"--classes {text!r} lacks label(s) of the data: {', '.join(missing)} "
                                    "(name every label of the task)")
    return out


def _radii_to_show(max_radius: int) -> list[int]:
    import numpy as np

    if max_radius <= 15:
        return list(range(max_radius + 2))
    picks = set(range(6)) | {round(v) for v in np.linspace(6, max_radius + 1, 8)}
    return sorted(picks)


def _render(cert, result: dict) -> None:
    k = cert.n_partitions
    console.print(f"[bold]Deep Partition Aggregation[/]: {k} partitions x {cert.estimator}, "
                  f"{result['n_train']} training rows, {cert.n_samples} test rows ({result['test']})")
    curve = {p["radius"]: p for p in cert.curve()}
    t = Table("radius r", "certified accuracy", "certified", "", title="Certified accuracy vs label flips")
    for r in _radii_to_show(cert.max_radius):
        p = curve[r]
        acc = p["certified_accuracy"]
        bar = "█" * round(20 * (acc or 0.0))
        t.add_row(str(r), fmt(acc), f"{p['fraction_certified']:.1%}", bar)
    console.print(t)
    console.print(f"accuracy (r = 0): {fmt(cert.certified_accuracy(0))}   "
                  f"median radius: {cert.median_radius:g}   max radius: {cert.max_radius} "
                  f"(at most {k // 2} with {k} partitions)")
    console.print("A prediction with radius r cannot change unless more than r training labels are flipped"
                  + (" (to any label: one absent from the data is assumed to win ties; --classes lists the "
                     "task's labels)." if result.get("assumes_unseen_class") else
                     f" (to any of the {len(result['classes'])} classes given)."), soft_wrap=True)
    for w in cert.warnings:
        err_console.print(f"[yellow]warning:[/] {w}")
    if result["out"]:
        console.print(f"per-row radii written to {result['out']}")
