"""Reading and writing tables: CSV and Parquet files, fsspec URLs, Arrow and pandas.

Everything becomes a :class:`pyarrow.Table` first; :func:`flipguard.data.load`
turns the table into a :class:`~flipguard.data.LabeledDataset`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .._io import atomic_path
from ..exceptions import DataError

__all__ = ["detect_format", "read_table", "replace_label_column", "write_table"]

_PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
_CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".tsv", ".txt")


def _is_url(source: str) -> bool:
    return "://" in source and not source.startswith("file://")


def is_postgres(source) -> bool:
    return isinstance(source, str) and source.startswith(("postgresql://", "postgres://"))


def detect_format(path: str) -> str:
    """``"parquet"`` or ``"csv"`` from a file name; sniffs the magic bytes when unsure."""
    lower = path.lower()
    if lower.endswith(_PARQUET_SUFFIXES):
        return "parquet"
    if lower.endswith(_CSV_SUFFIXES):
        return "csv"
    if not _is_url(path) and os.path.isfile(path):
        with open(path, "rb") as fh:
            if fh.read(4) == b"PAR1":
                return "parquet"
    return "csv"


def _open_url(url: str, mode: str = "rb"):
    try:
        import fsspec
    except ImportError:  # pragma: no cover - depends on the environment
        raise DataError(
            f"cannot open {url}: reading URLs needs fsspec and the filesystem's package "
            "(pip install 'flipguard[s3]' for s3://)"
        ) from None
    try:
        return fsspec.open(url, mode)
    except (ImportError, ValueError) as exc:
        raise DataError(f"cannot open {url}: {exc}") from None


def read_table(source, *, table: str | None = None, query: str | None = None,
               columns: list[str] | None = None,
               dictionary: list[str] | None = None) -> tuple[pa.Table, str, str]:
    """Read ``source`` into an Arrow table.

    ``dictionary`` names columns to return dictionary-encoded: Parquet string
    columns via ``read_dictionary`` (no per-row strings are built, much faster
    for a label column with a few classes); CSV columns are read as
    dictionary-encoded *text*, exactly as written (no type inference, so a
    hand-edited value cannot change how the other rows read).

    Returns ``(table, format, description)`` where ``format`` is one of
    ``"csv"``, ``"parquet"``, ``"table"``, ``"dataframe"``, ``"postgresql"``.
    """
    if isinstance(source, pa.Table):
        return (source.select(columns) if columns else source), "table", "<arrow table>"
    if type(source).__name__ == "DataFrame" and hasattr(source, "columns"):
        tbl = pa.Table.from_pandas(source, preserve_index=False)
        return (tbl.select(columns) if columns else tbl), "dataframe", "<dataframe>"
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if not isinstance(source, str):
        raise DataError(f"cannot read data from a {type(source).__name__}; give a path, URL, "
                        "pyarrow Table, pandas DataFrame or (X, y) arrays")
    if is_postgres(source):
        from ._postgres import read_postgres

        return read_postgres(source, table=table, query=query, columns=columns), "postgresql", _redact(source, table)
    fmt = detect_format(source)
    if _is_url(source):
        try:
            with _open_url(source) as fh:
                return _read_stream(fh, fmt, source, columns, dictionary), fmt, source
        except FileNotFoundError:
            raise DataError(f"{source}: no such file") from None
    if not os.path.exists(source):
        raise DataError(f"{source}: no such file")
    if os.path.isdir(source) and fmt != "parquet":
        raise DataError(f"{source}: is a directory, not a CSV or Parquet file")
    return _read_stream(source, fmt, source, columns, dictionary), fmt, source


def _redact(dsn: str, table: str | None) -> str:
    """A DSN without its password, for messages and reports."""
    from ._postgres import (
        redact_dsn,  # also hides ?password=... and key=value passwords
    )

    clean = redact_dsn(dsn)
    return f"{clean} table {table}" if table else clean


def _read_stream(src, fmt: str, name: str, columns: list[str] | None,
                 dictionary: list[str] | None = None) -> pa.Table:
    try:
        if fmt == "parquet":
            if isinstance(src, str) and os.path.isdir(src):
                return pq.read_table(src, columns=columns, read_dictionary=dictionary or None)
            tbl, names = read_parquet_file(src, columns, dictionary)
            check_columns(names, columns or [], name)
            return tbl
        delimiter = "\t" if name.lower().endswith(".tsv") else ","
        return pacsv.read_csv(
            src,
            parse_options=pacsv.ParseOptions(delimiter=delimiter),
            convert_options=pacsv.ConvertOptions(
                strings_can_be_null=True, include_columns=columns,
                column_types={c: pa.dictionary(pa.int32(), pa.string()) for c in dictionary or []}),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, OSError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{name}: cannot read as {fmt.upper()}: {first}") from None


def check_columns(available: list[str], wanted: list[str], where: str, hint: str = "") -> None:
    """One-line :class:`DataError` naming the ``wanted`` columns ``available`` lacks (and a few it has)."""
    missing = [c for c in wanted if c not in available]
    if missing:
        shown = ", ".join(available[:12]) + (f", ... ({len(available)} in all)" if len(available) > 12 else "")
        raise DataError(f"{where}: column(s) {', '.join(repr(c) for c in missing)} not found "
                        f"(columns: {shown}){hint}")


def read_parquet_file(src, columns: list[str] | None = None,
                      dictionary: list[str] | None = None) -> tuple[pa.Table, list[str]]:
    """One Parquet file (path or file object): ``(table of the columns found, in the order asked; all column names)``.

    ``pq.ParquetFile``, not ``pq.read_table``: the latter imports ``pyarrow.dataset``
    and through it pandas, 0.3 s in every fresh process and Ray worker.  Unlike
    ``read_table`` it ignores a column the file lacks, so the caller names it.
    ``dictionary`` columns are read dictionary-encoded where they are flat
    (``read_dictionary`` refuses a nested column; that one is read as it is and
    refused by the caller for its type).
    """
    try:
        pf = pq.ParquetFile(src, read_dictionary=dictionary or None)
    except KeyError:
        pf = pq.ParquetFile(src)
    names = pf.schema_arrow.names
    if columns is None:
        return pf.read(), names
    found = [c for c in dict.fromkeys(columns) if c in names]
    return pf.read(columns=found).select(found), names


def write_table(tbl: pa.Table, target, fmt: str | None = None) -> str:
    """Write ``tbl`` to ``target`` (path or URL) as CSV or Parquet, atomically for local files.

    ``fmt`` defaults to the one the target's name implies.  Returns the format used.
    """
    target = os.fspath(target)
    fmt = fmt if fmt in ("csv", "parquet") else detect_format(target)
    if _is_url(target):
        with _open_url(target, "wb") as fh:
            _write(tbl, fh, fmt)
        return fmt
    with atomic_path(target) as tmp:
        _write(tbl, str(tmp), fmt)
    return fmt


def _write(tbl: pa.Table, dst, fmt: str) -> None:
    if fmt == "parquet":
        pq.write_table(tbl, dst)
    else:
        pacsv.write_csv(tbl, dst, write_options=pacsv.WriteOptions(quoting_style="needed"))


def replace_label_column(tbl: pa.Table, label: str, values: np.ndarray) -> pa.Table:
    """``tbl`` with column ``label`` replaced by ``values``, keeping the column's Arrow type."""
    idx = tbl.schema.get_field_index(label)
    old_type = tbl.schema.field(idx).type
    arr = pa.array(values.tolist() if values.dtype == object else values)
    if arr.type != old_type:
        base_type = old_type.value_type if pa.types.is_dictionary(old_type) else old_type
        arr = pc.cast(arr, base_type)
        if pa.types.is_dictionary(old_type):
            # pandas writes a category with the narrowest index (int8); keep it when it fits.
            try:
                arr = arr.dictionary_encode().cast(old_type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                arr = arr.dictionary_encode()
    return tbl.set_column(idx, tbl.schema.field(idx).with_type(arr.type), arr)


def as_path(p) -> Path:
    return Path(os.fspath(p))
