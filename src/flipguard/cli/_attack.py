"""``flipguard attack``: write a poisoned copy of a dataset and the list of flipped rows."""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from .._names import ATTACK_NAMES
from ..exceptions import FlipguardError, InvalidParameterError
from ._app import app
from ._common import (
    DataArg,
    IdOpt,
    JsonOpt,
    KeepOpt,
    LabelOpt,
    SeedOpt,
    TableOpt,
    TextOpt,
    arrow_values,
    check_csv_output,
    check_output_file,
    check_outputs,
    class_value,
    console,
    load_data,
    note,
    output_format,
    print_json,
)

#: CLI option -> flipper parameter name (only passed when given).
_STRATEGY_OPTIONS = {"source": "source", "target": "target", "surrogate": "model", "mode": "mode",
                     "n_clusters": "n_clusters", "kind": "kind", "pairs": "pairs"}


@app.command("attack")
def attack_cmd(
    data: DataArg,
    label: LabelOpt,
    strategy: Annotated[str, typer.Option("--strategy", "-s",
                                          help="Attack: " + ", ".join(ATTACK_NAMES) + ".")] = "random",
    rate: Annotated[str | None, typer.Option(
        "--rate", "-r", help="Fraction of rows to flip (0.2), or per class (malignant=0.3,benign=0.1).")] = None,
    n_flips: Annotated[int | None, typer.Option("--n-flips", "-n", help="Exact number of rows to flip.")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Poisoned copy: .csv, .tsv (tab-separated), .csv.gz, "
                                      ".csv.bz2 (compressed) or .parquet; default: the input's format.",
                                      show_default=False)] = ...,
    flips: Annotated[Path | None, typer.Option("--flips", help="Also write the flipped rows: row, id, original, new.")] = None,
    seed: SeedOpt = 0,
    id: IdOpt = None,  # noqa: A002
    table: TableOpt = None,
    text: TextOpt = None,
    keep: KeepOpt = None,
    source: Annotated[str | None, typer.Option(help="targeted/cluster: class whose rows are flipped.")] = None,
    target: Annotated[str | None, typer.Option(help="targeted/cluster: class they become.")] = None,
    surrogate: Annotated[str | None, typer.Option(help="boundary/entropy/alfa: surrogate model name.")] = None,
    mode: Annotated[str | None, typer.Option(help="boundary: 'least' or 'most' confident rows first.")] = None,
    n_clusters: Annotated[int | None, typer.Option("--n-clusters", help="cluster: k-means clusters per class.")] = None,
    kind: Annotated[str | None, typer.Option(help="noise_matrix: 'symmetric' or 'pair'.")] = None,
    pairs: Annotated[str | None, typer.Option(
        "--pairs", help="noise_matrix --kind pair: which class becomes which, e.g. cat=dog,dog=cat "
                        "(default: each class becomes the next, in numeric order or order of first "
                        "appearance).", show_default=False)] = None,
    json_out: JsonOpt = False,
) -> None:
    """Flip labels on purpose (red-team) and record exactly which rows changed.

    Features are never touched; the copy keeps every column and the label
    column's type.  The input is never modified.

    Example:

        flipguard attack reviews.csv --label sentiment --strategy targeted \\
            --source positive --target negative --rate 0.2 --out poisoned.csv --flips flips.csv
    """
    import numpy as np
    import pyarrow as pa

    from .._io import atomic_group
    from ..attacks import make_flipper
    from ..data import write_table
    from ..data._rewrite import label_spellings, rewrite_csv

    if strategy not in ATTACK_NAMES:  # named first: a typo'd strategy is the first thing to fix
        raise InvalidParameterError(f"Unknown attack strategy {strategy!r}; choose one of "
                                    f"{', '.join(sorted(ATTACK_NAMES))}.")
    if (rate is None) == (n_flips is None):
        raise InvalidParameterError("give exactly one of --rate and --n-flips")
    if n_flips is not None and n_flips < 0:
        raise InvalidParameterError(f"--n-flips must be a count >= 0; got {n_flips}")
    check_outputs(data, ("--out", out), ("--flips", flips))
    out_fmt = output_format(out, "csv")
    if flips is not None:
        if not Path(flips).suffix:  # only --out may leave its format to the input
            raise InvalidParameterError(f"--flips {flips}: give the file an extension (.csv, .tsv, .txt, "
                                        ".csv.gz, .csv.bz2 or .parquet)")
        output_format(flips, "csv", "--flips")
    check_output_file(out, "--out")
    check_output_file(flips, "--flips")
    ds = load_data(data, label=label, id=id, table=table, text=text, keep=keep)
    if ds.format != "csv":  # a CSV input is copied as its own bytes (rewrite_csv)
        check_csv_output(ds.table, out, "--out", output_format(out, ds.format))
    source, target = (c if class_value(c, ds) is None else class_value(c, ds) for c in (source, target))
    given = {"source": source, "target": target, "surrogate": surrogate, "mode": mode,
             "n_clusters": n_clusters, "kind": kind, "pairs": _parse_pairs(pairs, ds) if pairs is not None else None}
    params = {_STRATEGY_OPTIONS[opt]: value for opt, value in given.items() if value is not None}
    budget = {"n_flips": n_flips} if n_flips is not None else {"rate": _parse_rate(rate, ds)}
    _check_strategy_fits(strategy, budget, ds)
    try:
        flipper = make_flipper(strategy, random_state=seed, **budget, **params)
        _, y_labels = flipper.fit_resample(ds.X, ds.labels())
    except FlipguardError as exc:
        raise type(exc)(in_cli_words(str(exc), strategy, "--n-flips" if n_flips is not None else "--rate")) \
            from None
    codes = ds.encode_labels(np.asarray(y_labels, dtype=ds.classes.dtype))
    rows = flipper.flipped_indices_
    warnings = _zero_flip_warnings(rate, budget.get("rate"), rows, strategy, ds)

    out_fmt = output_format(out, ds.format)
    with atomic_group():  # both files, or neither
        if not (ds.format == "csv" and out_fmt == "csv"
                and rewrite_csv(data, out, label=ds.label_name, codes_before=ds.y, codes_after=codes)):
            write_table(ds.to_table(codes), out, out_fmt)
        if flips is not None:
            flips_fmt = output_format(flips, "csv", "--flips")
            # A CSV flip list of a CSV input writes boolean labels as the input writes them (True, TRUE
            # or 1, not pyarrow's true); other labels are written as they are read.
            spelled = label_spellings(data, label=ds.label_name, codes=ds.y) \
                if ds.format == "csv" and flips_fmt == "csv" and ds.classes.dtype.kind == "b" else None
            if spelled is not None:
                original = pa.array([spelled[int(c)] for c in ds.y[rows]], type=pa.string())
                new = pa.array([spelled[int(c)] for c in codes[rows]], type=pa.string())
            else:
                original, new = arrow_values(ds.classes[ds.y[rows]]), arrow_values(ds.classes[codes[rows]])
            write_table(pa.table({"row": rows, "id": arrow_values(ds.ids[rows]), "original": original,
                                 "new": new}), flips, flips_fmt)
    for text in warnings:
        note(f"warning: {text}")

    transitions = _transitions(ds, ds.y[rows], codes[rows])
    result = {"input": ds.source, "output": str(out), "format": out_fmt, "strategy": strategy,
              "n_rows": ds.n_samples, "n_flipped": int(len(rows)),
              "flip_rate": len(rows) / ds.n_samples, "seed": seed,
              "transitions": transitions, "flips_file": str(flips) if flips else None, "warnings": warnings}
    if json_out:
        print_json(result)
        return
    console.print(f"[bold]{strategy}[/] flipped [bold]{len(rows)}[/] of {ds.n_samples} labels "
                  f"({len(rows) / ds.n_samples:.1%}) -> {out} ({out_fmt})")
    t = Table("from", "to", "rows", title="Label transitions")
    for tr in transitions:
        t.add_row(str(tr["from"]), str(tr["to"]), str(tr["count"]))
    console.print(t)
    if flips is not None:
        console.print(f"flipped rows listed in {flips}")


def _parse_rate(text: str, ds):
    if "=" not in text:
        try:
            value = float(text)
        except ValueError:
            raise InvalidParameterError(f"--rate must be a number or class=rate pairs, got {text!r}") from None
        if not 0.0 < value <= 1.0:
            raise InvalidParameterError(f"--rate must be a fraction in (0, 1] (0.2 flips 20% of the rows); "
                                        f"got {text}. For a number of rows use --n-flips")
        return value
    spec = {}
    # Comma-separated class=rate pairs, read as one CSV record so a class containing a comma can be
    # quoted: '"b, x y"=0.5,a=0.1'.  The rate follows the last '=' (a class may contain '=').
    for part in next(csv.reader([text], skipinitialspace=True)):
        name, eq, value = part.rpartition("=")
        if not eq:
            raise InvalidParameterError(f"--rate: expected class=rate pairs, got {part.strip()!r} in {text!r}")
        name = name if class_value(name, ds) is not None else name.strip()
        cls = class_value(name, ds)
        if cls is None:
            raise InvalidParameterError(f"--rate names class {name!r}, which is not in column "
                                        f"'{ds.label_name}' (classes: {', '.join(repr(str(c)) for c in ds.classes)}; "
                                        "quote a class containing a comma: '\"a, b\"=0.3')")
        if cls in spec:
            raise InvalidParameterError(f"--rate gives class {name!r} twice; give each class one rate")
        try:
            spec[cls] = float(value)
        except ValueError:
            raise InvalidParameterError(f"--rate: {value!r} is not a number (in {part!r})") from None
        if not 0.0 < spec[cls] <= 1.0:
            raise InvalidParameterError(f"--rate: {part.strip()!r} must give a fraction in (0, 1] of class "
                                        f"{name!r}")
    return spec


def _check_strategy_fits(strategy: str, budget: dict, ds) -> None:
    """Refuse, in the command's words and before any work, what a strategy cannot do with this data."""
    if strategy == "alfa" and ds.n_classes != 2:  # assess says it the same way
        raise InvalidParameterError(
            f"ALFA attacks binary classifiers, but {ds.source} has {ds.n_classes} classes "
            f"({', '.join(map(str, ds.classes[:6]))}{', ...' if ds.n_classes > 6 else ''}); use another "
            "strategy or keep two classes")
    if strategy == "targeted" and isinstance(budget.get("rate"), dict):
        raise InvalidParameterError("--strategy targeted flips rows of one class (--source): give --rate as one "
                                    "fraction of that class, not class=rate pairs")


#: A flipper class's name opening a library message ("RandomFlip: ...").
_CLASS_PREFIX = re.compile(r"^[A-Z]\w*Flip: ")
#: A Python keyword argument in a message (kind='pair').
_KWARG = re.compile(r"\b(\w+)=(['\"]?)([\w.-]*)\2")
#: A numpy scalar's repr (np.int64(2), np.str_('a')).
_NP_SCALAR = re.compile(r"\bnp\.\w+\(([^()]*)\)")
#: A budget too large for the data ("cannot flip 570 of 569 eligible rows").
_CANNOT_FLIP = re.compile(r"cannot flip (\d+) .*$")


def in_cli_words(message: str, strategy: str, budget_flag: str) -> str:
    """A flipper's message for a CLI user: ``--strategy NAME:`` for the class name opening it,
    flags for keyword arguments (``kind='pair'`` -> ``--kind pair``, from the attack entry of the
    CLI's word table), ``budget_flag`` for "the budget" (and after a budget too large for the
    data), plain values for numpy reprs.  The error boundary then applies
    :func:`flipguard.cli._words.in_user_words` as for every command."""
    from ._words import FLAGS

    flags = {**FLAGS["*"], **FLAGS["attack"]}
    message = _CLASS_PREFIX.sub(f"--strategy {strategy}: ", message)
    message = _KWARG.sub(lambda m: f"{flags[m.group(1)]} {m.group(3)}" if m.group(1) in flags else m.group(0),
                         message)
    message = message.replace("the budget", budget_flag)
    if budget_flag not in message:
        message = _CANNOT_FLIP.sub(lambda m: f"{m.group(0)} ({budget_flag} {m.group(1)})", message)
    return _NP_SCALAR.sub(r"\1", message)


def _zero_flip_warnings(text: str | None, rate, rows, strategy: str, ds) -> list[str]:
    """What to say when a --rate flipped nothing (in all, or of a class it names): the output is then
    the input, which a sweep may want but a typo (0.0001 for 0.01) does not."""
    import numpy as np

    from ..attacks._base import flips_for_rate

    if rate is None:
        return []
    if not isinstance(rate, dict):
        if len(rows):
            return []
        if flips_for_rate(rate, ds.n_samples) == 0:
            return [f"--rate {text} rounds to 0 flips on this data ({ds.n_samples} rows): nothing was flipped "
                    "and the output is a copy of the input"]
        return [f"--strategy {strategy} at --rate {text} flipped no rows: the output is a copy of the input"]
    away = np.bincount(ds.y[rows], minlength=ds.n_classes)
    counts = np.bincount(ds.y, minlength=ds.n_classes)
    out = []
    for cls, value in rate.items():
        code = int(np.flatnonzero(ds.classes == cls)[0])
        if away[code] == 0:
            why = "rounds to 0 flips" if flips_for_rate(value, counts[code]) == 0 else "flipped none"
            out.append(f"--rate {cls}={value:g} {why} of class '{cls}' ({counts[code]} rows): none of its "
                       "labels was flipped")
    return out


def _parse_pairs(text: str, ds) -> dict:
    out = {}
    for part in text.split(","):
        # A class written with spaces (' benign ') is taken as written; otherwise spaces around '=' go.
        src, sep, dst = (t if class_value(t, ds) is not None else t.strip() for t in part.partition("="))
        if not sep or not src or not dst:
            raise InvalidParameterError(f"--pairs: expected source=target pairs, got {part.strip()!r}")
        for name in (src, dst):
            if class_value(name, ds) is None:
                raise InvalidParameterError(f"--pairs names class {name!r}, which is not in column "
                                            f"'{ds.label_name}' (classes: {', '.join(map(str, ds.classes))})")
        if class_value(src, ds) in out:
            raise InvalidParameterError(f"--pairs gives class {src!r} twice; each class becomes one other class")
        out[class_value(src, ds)] = class_value(dst, ds)
    return out


def _transitions(ds, old, new) -> list[dict]:
    import numpy as np

    k = ds.n_classes
    counts = np.bincount(old * k + new, minlength=k * k).reshape(k, k)
    return [{"from": ds.classes[i].item() if hasattr(ds.classes[i], "item") else ds.classes[i],
             "to": ds.classes[j].item() if hasattr(ds.classes[j], "item") else ds.classes[j],
             "count": int(counts[i, j])}
            for i, j in zip(*np.nonzero(counts))]
