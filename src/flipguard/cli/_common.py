"""Option types and output helpers shared by every command, so flags behave the same everywhere."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from ..exceptions import InvalidParameterError


def _width() -> int | None:
    """Terminal width on a terminal; a wide page when piped, so tables stay readable in CI logs."""
    if sys.stdout.isatty():
        return None
    return max(int(os.environ.get("COLUMNS", "0") or 0), 200)


#: stdout; a reader that goes away (``| head``) is absorbed by the stdout :func:`flipguard.cli.main` installs.
console = Console(highlight=False, width=_width())
#: stderr: one message, one line (no hard wrap at the terminal width), so grep and CI logs keep it whole.
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

DataArg = Annotated[str, typer.Argument(help="CSV or Parquet path, fsspec URL (s3://...) or postgresql:// DSN.",
                                        show_default=False)]
LabelOpt = Annotated[str, typer.Option("--label", "-l", help="Name of the label column.", show_default=False)]
IdOpt = Annotated[str | None, typer.Option("--id", help="Column of unique row ids (default: row position).")]
TableOpt = Annotated[str | None, typer.Option("--table", help="Table to read where the data is a postgresql:// DSN.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of tables.")]
ModelOpt = Annotated[str, typer.Option("--model", "-m",
                                       help="logreg, linsvm, rf, hgb, knn or mlp.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed; the same seed gives the same result.",
                                      min=0, max=2**32 - 1)]
def _jobs(value: int) -> int:
    if value == 0:  # joblib's convention: -1 all cores, -2 all but one; 0 means nothing
        raise typer.BadParameter("0 workers cannot run anything: give 1 or more, or -1 for all cores")
    return value


JobsOpt = Annotated[int, typer.Option("--n-jobs", "-j", help="Parallel workers (-1: all cores).", callback=_jobs)]
EngineOpt = Annotated[str, typer.Option(
    "--engine", help="Where partitioned datasets (a folder or prefix of files) are processed: local (this "
                     "process; seal, verify and diff use a thread per core) or ray (pip install "
                     "'flipguard\\[ray]').")]
RayAddressOpt = Annotated[str | None, typer.Option(
    "--ray-address", help="With --engine ray: HOST:6379 (the head's address, as 'ray start --head' prints it), "
                          "'auto' or ray://host:10001 to join a cluster (default: start a local Ray instance "
                          "sized to this machine).", show_default=False)]
TextOpt = Annotated[list[str] | None, typer.Option(
    "--text", help="Free-text column turned into TF-IDF features (repeat for several columns).",
    show_default=False)]


KeepOpt = Annotated[list[str] | None, typer.Option(
    "--keep", help="Use this column as a feature even if it looks like a row identifier or rises with a "
                   "label-sorted row order (both are left out by default; repeat for several columns).",
    show_default=False)]


def load_data(data, *, label: str, id: str | None = None, table: str | None = None,
              text: list[str] | None = None, keep: list[str] | None = None, **kwargs):
    """:func:`flipguard.data.load` for a command, plus a note on stderr for each string
    column dropped as too wide to one-hot encode (so free text is never ignored silently)."""
    from ..data import load

    ds = load(data, label=label, id=id, table=table, text=text or None, keep=keep or (), **kwargs)
    note_dropped_columns(ds)
    return ds


#: Notes about the input, printed when the command has finished (see :func:`flush_notes`).
_NOTES: list[str] = []


def note(text: str) -> None:
    """A line for stderr about the input, held back until the command finishes, so a command
    that then fails on bad input still prints one ``Error:`` line and nothing else."""
    if text not in _NOTES:
        _NOTES.append(text)


def flush_notes(print_them: bool = True) -> None:
    """Print the held-back notes (after a command ran), or drop them (after an error)."""
    if print_them:
        for text in _NOTES:
            err_console.print(text, soft_wrap=True)
    _NOTES.clear()


def _token_like(ds, col: str) -> bool:
    """No value of the column holds a space: row ids look so, free text does not."""
    import pyarrow.compute as pc

    if ds.table is None or col not in ds.table.column_names:
        return False
    values = ds.table.column(col)
    if hasattr(values.type, "value_type"):  # dictionary-encoded
        values = pc.cast(values, values.type.value_type)
    return not pc.any(pc.match_substring_regex(values, r"\s")).as_py()


def note_dropped_columns(ds, *, leaks: bool = True) -> None:
    """One ``note:`` line on stderr per string column the features left out, and (``leaks``) one per
    column left out or marked because it carries the observed label (an audit reports those among
    its warnings instead)."""
    from ..data import dropped_text_columns
    from ..data._leaks import leak_notes

    if leaks:
        for text in leak_notes(ds.encoding):
            note(f"warning: {text}")
    for col, n in dropped_text_columns(ds):
        if n == ds.n_samples and ds.id_name != col and _token_like(ds, col):  # one word per row: an id
            note(f"note: column '{col}' ({n} distinct strings, one per row) is not used as a feature; if it "
                 f"identifies the rows, give --id {col}; if it is free text, add --text {col}")
        else:
            note(f"note: column '{col}' ({n} distinct strings) is not used as a feature; if it is free text, "
                 f"add --text {col}")
    dropped = dropped_columns_text(ds)
    if dropped:
        note(f"note: {dropped}")
    for col, how in ds.encoding.items():
        how = str(how)
        if " infinite and " in how:  # see data._load._encode_column
            n_inf, rest = how.split(";")[0].split("(", 1)[1].split(" infinite and ", 1)
            note(f"note: column '{col}' has {n_inf} infinite value(s); they were treated as missing and "
                 f"replaced by the column's median {rest.rsplit(' ', 1)[-1][:-1]}")


def dropped_columns_text(ds) -> str | None:
    """One sentence naming the columns left out of the features for what they hold and why
    (:func:`flipguard.data.dropped_columns`), or ``None``: a ``note:`` on stderr and, for a
    command whose JSON has ``warnings``, one of them."""
    from ..data._load import dropped_columns

    dropped = dropped_columns(ds)
    if not dropped:
        return None
    return ("column(s) not used as features: "
            + "; ".join(f"'{col}' ({why})" for col, why in dropped))


def check_csv_output(tbl, path, opt: str, fmt: str) -> None:
    """Refuse, before any work is written, a CSV output (``fmt``) of a table with a column CSV
    cannot hold (an embedding's list, a struct, bytes that are not UTF-8)."""
    if fmt != "csv":
        return
    from ..data._read import check_csv_writable

    check_csv_writable(tbl, f"{opt} {path}")


def print_json(obj: Any) -> None:
    from .._json import to_jsonable

    sys.stdout.write(json.dumps(to_jsonable(obj), indent=2) + "\n")


def finish_report(report, json_out: bool, render, *, ok: bool | None = None) -> None:
    """Print ``report`` as JSON or with ``render(report)``, then exit 1 unless it passed (``ok``, default ``report.ok``)."""
    if json_out:
        print_json(report.to_dict())
    else:
        render(report)
    if not (report.ok if ok is None else ok):
        raise typer.Exit(1)


def split_list(text: str | None, what: str) -> list[str]:
    items = [t.strip() for t in (text or "").split(",") if t.strip()]
    if not items:
        raise InvalidParameterError(f"{what}: give at least one value (comma-separated)")
    return items


def parse_floats(text: str, what: str) -> list[float]:
    try:
        return [float(t) for t in split_list(text, what)]
    except ValueError:
        raise InvalidParameterError(f"{what}: expected comma-separated numbers, got {text!r}") from None


def fmt(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{round(x, digits) + 0.0:.{digits}f}"  # + 0.0: never "-0.000"


def signed(x: float | None, digits: int = 3) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    return f"{round(x, digits) + 0.0:+.{digits}f}"


def refuse_overwrite(data: str, path, opt: str) -> None:
    """Refuse an output path that is the input file (flipguard never modifies its input)."""
    from ..data._read import is_postgres

    if path is None or is_postgres(data) or "://" in str(data):
        return
    if os.path.exists(data) and os.path.exists(path) and os.path.samefile(data, path):
        raise InvalidParameterError(f"{opt} {path} is the input file; flipguard never modifies its input")


def check_outputs(inputs, *outputs) -> None:
    """Refuse, before any work, output paths that would clobber something: an input (``inputs``:
    a path or a list of them), an existing folder, or the file another option already names.
    ``outputs`` are ``(option, path)`` pairs; ``None`` paths are skipped."""
    seen: dict[str, str] = {}
    for opt, path in outputs:
        if path is None:
            continue
        for data in ([inputs] if isinstance(inputs, (str, os.PathLike)) else inputs):
            if data is not None:
                refuse_overwrite(str(data), path, opt)
        if os.path.isdir(path):
            raise InvalidParameterError(f"{opt} {path} is a folder; give a file name")
        key = os.path.realpath(path)
        if key in seen:
            raise InvalidParameterError(f"{seen[key]} and {opt} name the same file {path}; give two files")
        seen[key] = opt


def check_parent_folder(path, opt: str) -> None:
    """Refuse an output file whose folder is missing, not a folder, or not writable: said before the
    work, not after it."""
    parent = Path(path).absolute().parent
    if not parent.exists():
        raise InvalidParameterError(f"{opt} {path}: folder {parent} does not exist")
    if not parent.is_dir():
        raise InvalidParameterError(f"{opt} {path}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InvalidParameterError(f"{opt} {path}: folder {parent} is not writable")


def check_output_file(path, opt: str) -> None:
    """Refuse, before any work, an output file that cannot be written: a folder, a name under a
    file, or a folder where no file can be created (tried with a probe file, removed at once; a
    missing folder is created when the output is written, so its nearest existing parent is tried)."""
    if path is None:
        return
    if os.path.isdir(path):
        raise InvalidParameterError(f"{opt} {path} is a folder; give a file name")
    _check_can_create_in(Path(path).absolute().parent, opt, path)


def check_output_folder(folder, opt: str, files: tuple[str, ...] = ()) -> None:
    """Refuse, before any work, an output folder (created if missing) that cannot hold ``files``:
    the folder is a file, one of ``files`` in it is a folder, or no file can be created there."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InvalidParameterError(f"{opt} {folder} is a file; give a folder name")
    for name in files:
        if (folder / name).is_dir():
            raise InvalidParameterError(f"{opt} {folder}: {folder / name} is a folder, where the file {name} "
                                        "goes; remove or rename it, or give another --out")
    _check_can_create_in(folder.absolute(), opt, folder)


def _check_can_create_in(folder: Path, opt: str, shown) -> None:
    import tempfile

    existing = folder
    while not _exists(existing) and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise InvalidParameterError(f"{opt} {shown}: {existing} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".flipguard-probe.", dir=existing)
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise InvalidParameterError(f"{opt} {shown}: cannot create files in {existing} ({why})") from None
    os.close(fd)
    os.unlink(probe)


def _exists(path: Path) -> bool:
    try:
        return os.path.lexists(path)
    except OSError:
        return False


def class_value(text: str | None, ds):
    """The class of ``ds`` that ``text`` names as a user types it (``str`` of the class; for a
    boolean label also ``true``/``false`` in any case, as a CSV writes them), or ``None``."""
    if text is None:
        return None
    for c in ds.classes:
        if str(c) == text:
            return c
    low = text.strip().lower()
    if ds.classes.dtype.kind == "b" and low in ("true", "false"):
        return next((c for c in ds.classes if bool(c) == (low == "true")), None)
    return None


def output_format(path, default: str, opt: str = "--out") -> str:
    """``"csv"`` or ``"parquet"`` from an output name; ``default`` (the input's format) when it has no
    extension.  Any other extension (``.xlsx``, ``.json``) is refused: flipguard writes CSV or Parquet.
    A CSV name's dialect (``.tsv``: tabs; ``.csv.gz``, ``.csv.bz2``: compressed) is the writer's
    (:func:`flipguard.data._read.csv_dialect`), so every name accepted here reads back as written."""
    from ..data._read import _CSV_SUFFIXES, _PARQUET_SUFFIXES, detect_format

    name = str(path).lower()
    if name.endswith(_PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(_CSV_SUFFIXES):
        return "csv"
    suffix = os.path.splitext(os.path.basename(name))[1]
    if suffix:
        raise InvalidParameterError(f"{opt} {path}: unsupported output format '{suffix}'; "
                                    "use .csv or .parquet")
    return default if default in ("csv", "parquet") else detect_format(str(path))


def arrow_values(values):
    """A numpy array (object arrays included) as a pyarrow Array."""
    import numpy as np
    import pyarrow as pa

    values = np.asarray(values)
    return pa.array(values.tolist() if values.dtype == object else values)
