"""Reading just the columns a seal needs, exactly, with clear errors for absent or ambiguous ones.

**Exact reading.**  CSV columns are read as the text written in the file:
no type inference and no null words, so ``NA``, ``N/A``, ``null``, ``NaN``
and the empty cell are five different labels (``1`` and ``1.0`` are two).
The byte-order mark, CRLF line ends and blank lines do not change a value.
Ids follow one rule (:func:`flipguard.integrity._columns.integer_text_ids`):
when every id is an integer written as text (``104``, ``0104``, ``104.0``)
ids are integers, otherwise exact text.  Parquet and database columns keep
their types; a seal records the label column's type family.

A column name that appears twice (a second label column appended by hand:
one reader takes the first, another the last) is an input error.  Local
files that are not regular files (FIFOs, devices) are refused before they
are opened, so nothing hangs or fills memory.
"""

from __future__ import annotations

import os
import stat

import numpy as np
import pyarrow as pa

from .._arrow import from_numpy
from ..data._read import _is_url, _open_url, check_columns, detect_format, is_postgres, read_table
from ..data._read import check_unique as _check_unique
from ..exceptions import DataError, InvalidParameterError

__all__: list[str] = []

#: The id of rows sealed without an id column: each row's 0-based position in its file.
ROW_ID = "(row)"


def is_local_path(source) -> bool:
    """A local file path (where a default manifest path next to it makes sense)."""
    if isinstance(source, os.PathLike):
        return True
    return isinstance(source, str) and not _is_url(source) and not is_postgres(source)


def describe(source) -> str:
    if isinstance(source, pa.Table):
        return "<arrow table>"
    return os.fspath(source) if isinstance(source, (str, os.PathLike)) else f"<{type(source).__name__}>"


def default_name(source, table: str | None = None) -> str | None:
    """The dataset name a seal gets without ``--name``: the table, else the file's name.

    ``None`` for in-memory tables (give a name).
    """
    if table:
        return table
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if not isinstance(source, str) or is_postgres(source):
        return None
    path = source.split("?", 1)[0].rstrip("/") if _is_url(source) else os.path.normpath(source)
    return os.path.basename(path) or source


def check_regular(path: str) -> None:
    """Refuse FIFOs, devices and sockets given as data (reading them would hang or never end)."""
    try:
        st = os.stat(path)
    except OSError:
        return  # the reader reports a missing file in its own words
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        kind = "a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode) else "a device or socket"
        raise DataError(f"{path}: is {kind}, not a data file")


def _csv_delimiter(name: str) -> str:
    return "\t" if name.lower().endswith(".tsv") else ","


def _csv_header(src, name: str) -> list[str]:
    import pyarrow.csv as pacsv

    try:
        with pacsv.open_csv(src, parse_options=pacsv.ParseOptions(delimiter=_csv_delimiter(name)),
                            convert_options=pacsv.ConvertOptions(column_types={}, strings_can_be_null=False,
                                                                 null_values=[])) as reader:
            return reader.schema.names
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{name}: cannot read as CSV: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _read_csv_exact(source: str, wanted: list[str] | None, label: str | None,
                    id_column: str | None = None) -> tuple[pa.Table, list[str]]:
    """Every wanted column as text exactly as written (the label dictionary-encoded).

    The ``id_column`` becomes int64 when every id is an integer written as text.
    """
    import pyarrow.csv as pacsv

    if label is not None and label == id_column:
        raise InvalidParameterError(f"--label and --id must be different columns (both are '{label}')")
    if _is_url(source):
        with _open_url(source) as fh:
            names = _csv_header(fh, source)
    else:
        names = _csv_header(source, source)
    cols = names if wanted is None else wanted
    _check_unique(names, cols, source)
    check_columns(names, cols, source)
    types = {c: pa.string() for c in cols}
    if label is not None and label in types:
        types[label] = pa.dictionary(pa.int32(), pa.string())
    options = dict(
        parse_options=pacsv.ParseOptions(delimiter=_csv_delimiter(source)),
        convert_options=pacsv.ConvertOptions(include_columns=cols, column_types=types, strings_can_be_null=False,
                                             quoted_strings_can_be_null=False, null_values=[]))
    try:
        if _is_url(source):
            with _open_url(source) as f:
                tbl = pacsv.read_csv(f, **options)
        else:
            tbl = pacsv.read_csv(source, **options)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, OSError, UnicodeDecodeError) as exc:
        msg = _first_line(exc)
        if "UTF8" in msg or "UTF-8" in msg:
            msg += " (flipguard reads CSV as UTF-8 text)"
        raise DataError(f"{source}: cannot read as CSV: {msg}") from None
    if id_column is not None and id_column in tbl.column_names:
        from ._columns import integer_text_ids

        i = tbl.column_names.index(id_column)
        tbl = tbl.set_column(i, id_column, integer_text_ids(tbl.column(i)))
    return tbl, names


def read_columns(source, columns: list[str] | None, *, dictionary: list[str] | None = None,
                 table: str | None = None, query: str | None = None,
                 id_column: str | None = None) -> tuple[pa.Table, str]:
    """``(table, description)`` holding only ``columns`` (in that order) of ``source``.

    ``columns=None`` reads every column.  CSV is read exactly (see the module
    docstring); ``dictionary`` names the label column, ``id_column`` the id
    column (integer ids written as text become integers).
    """
    wanted = None if columns is None else list(dict.fromkeys(columns))
    label = dictionary[0] if dictionary else None
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if isinstance(source, str) and not is_postgres(source):
        if not _is_url(source):
            check_regular(source)
            if not os.path.exists(source):
                raise DataError(f"{source}: no such file")
        fmt = detect_format(source)
        if fmt == "csv":
            if os.path.isdir(source):
                raise DataError(f"{source}: is a directory, not a CSV or Parquet file")
            tbl, _ = _read_csv_exact(source, wanted, label, id_column)
            return (tbl if wanted is None else tbl.select(wanted)), source
        names = available_columns(source)
        if names is not None and wanted is not None:
            _check_unique(names, wanted, source)
            check_columns(names, wanted, source)
        if names is not None and wanted is None:
            _check_unique(names, names, source)
    try:
        tbl, _, where = read_table(source, table=table, query=query, columns=wanted, dictionary=dictionary)
    except (DataError, KeyError) as exc:
        available = available_columns(source)
        if available is not None and wanted is not None:
            check_columns(available, wanted, describe(source))
        if isinstance(exc, KeyError):
            raise DataError(f"{describe(source)}: {exc.args[0] if exc.args else exc}") from None
        raise
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise DataError(f"{describe(source)}: cannot read: {_first_line(exc)}") from None
    if wanted is None:
        _check_unique(tbl.column_names, tbl.column_names, where)
        return tbl, where
    _check_unique(tbl.column_names, wanted, where)
    check_columns(tbl.column_names, wanted, where)
    return tbl.select(wanted), where


def available_columns(source) -> list[str] | None:
    """Column names of a local CSV/Parquet file or an in-memory table, cheaply; ``None`` if unknown."""
    if isinstance(source, pa.Table):
        return source.column_names
    if hasattr(source, "columns") and type(source).__name__ == "DataFrame":
        return [str(c) for c in source.columns]
    if not is_local_path(source):
        return None
    path = os.fspath(source)
    if not os.path.isfile(path):
        return None
    try:
        if detect_format(path) == "parquet":
            import pyarrow.parquet as pq

            return pq.read_schema(path).names
        return _csv_header(path, path)
    except (pa.ArrowException, OSError, ValueError, DataError):
        return None


def with_row_ids(tbl: pa.Table) -> pa.Table:
    """``tbl`` with :data:`ROW_ID` (each row's 0-based position) as its first column."""
    if ROW_ID in tbl.column_names:
        raise DataError(f"a column is named {ROW_ID!r}, the name flipguard gives row positions: rename it")
    return tbl.add_column(0, ROW_ID, from_numpy(np.arange(tbl.num_rows, dtype=np.int64)))


def check_positional(source, table: str | None, query: str | None, option: str = "--id") -> None:
    """Rows of a database table have no stable order: their position cannot identify them."""
    if table is not None or query is not None or (isinstance(source, str) and is_postgres(source)):
        raise DataError(f"a database table's rows have no stable order, so their position cannot identify "
                        f"them: give its key column with {option}")


def read_keyed(source, id: str, columns: list[str] | None, *, label: str,  # noqa: A002
               table: str | None = None, query: str | None = None) -> tuple[pa.Table, str]:
    """:func:`read_columns` of ``[id, label, *columns]``; with ``id`` :data:`ROW_ID` the id is
    each row's position (``columns=None``: every column of the source after id and label)."""
    if id != ROW_ID:
        wanted = None if columns is None else [id, label, *columns]
        tbl, where = read_columns(source, wanted, dictionary=[label], table=table, query=query, id_column=id)
        if columns is None:
            check_columns(tbl.column_names, [id, label], where)
            tbl = tbl.select([id, label, *(c for c in tbl.column_names if c not in (id, label))])
        return tbl, where
    wanted = None if columns is None else [label, *columns]
    tbl, where = read_columns(source, wanted, dictionary=[label], table=table, query=query)
    if columns is None:
        check_columns(tbl.column_names, [label], where)
        tbl = tbl.select([label, *(c for c in tbl.column_names if c != label)])
    return with_row_ids(tbl), where
