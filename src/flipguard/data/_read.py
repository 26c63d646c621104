"""Reading and writing tables: CSV and Parquet files, fsspec URLs, Arrow and pandas.

Everything becomes a :class:`pyarrow.Table` first; :func:`flipguard.data.load`
turns the table into a :class:`~flipguard.data.LabeledDataset`.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .._io import atomic_path
from ..exceptions import DataError

__all__ = ["ReadTable", "check_unique", "csv_dialect", "detect_format", "read_table", "replace_label_column",
           "write_table"]

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


@dataclass(frozen=True)
class ReadTable:
    """A table already read from ``where`` (and perhaps reshaped, e.g. embeddings expanded):
    :func:`read_table` returns it as it is, so messages still name the file."""

    table: pa.Table
    format: str
    where: str


def check_unique(names: list[str], wanted: list[str], where: str) -> None:
    """One-line :class:`DataError` naming the ``wanted`` columns that appear more than once in ``names``."""
    counts = Counter(names)
    twice = [c for c in dict.fromkeys(wanted) if counts[c] > 1]
    if twice:
        raise DataError(f"{where}: column(s) {', '.join(repr(c) for c in twice)} appear more than once; "
                        "readers disagree on which one counts (some take the first, some the last), "
                        "so flipguard refuses to guess: rename or remove the extra column")


def read_table(source, *, table: str | None = None, query: str | None = None,
               columns: list[str] | None = None,
               dictionary: list[str] | None = None,
               id_column: str | None = None) -> tuple[pa.Table, str, str]:
    """Read ``source`` into an Arrow table.

    ``dictionary`` names columns to return dictionary-encoded: Parquet string
    columns via ``read_dictionary`` (no per-row strings are built, much faster
    for a label column with a few classes); CSV columns are read as
    dictionary-encoded *text*, exactly as written (no type inference, so a
    hand-edited value cannot change how the other rows read).  A CSV's
    ``id_column`` is read as text and kept as written unless every id is an
    integer written plainly (:func:`csv_ids`: ``00040`` stays ``00040``, and
    every file with ids reads them by this one rule); other formats keep their
    stored types.

    Returns ``(table, format, description)`` where ``format`` is one of
    ``"csv"``, ``"parquet"``, ``"table"``, ``"dataframe"``, ``"postgresql"``.

    A file or table with a column name twice is refused (:func:`check_unique`; only the
    ``columns`` asked for, when given); CSV columns that are not UTF-8 text come back as
    ``binary`` (:func:`flipguard.data.load` refuses them as labels or ids).
    """
    as_text = [id_column] if id_column is not None else None
    try:
        tbl, fmt, where = _read_any(source, table=table, query=query, columns=columns, dictionary=dictionary,
                                    as_text=as_text)
    except DataError as exc:
        if not as_text or "invalid UTF8" not in str(exc):
            raise
        # ids that are not UTF-8: read as inferred (bytes), so the loader names the column and the fix
        tbl, fmt, where = _read_any(source, table=table, query=query, columns=columns, dictionary=dictionary)
    check_unique(tbl.column_names, columns or tbl.column_names, where)
    if fmt == "csv" and id_column in tbl.column_names:
        tbl = tbl.set_column(tbl.column_names.index(id_column), id_column, csv_ids(tbl.column(id_column)))
    return tbl, fmt, where


def csv_ids(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """A CSV id column read as text: integers when every id is one written plainly (``40``,
    ``-3``), else the text as written, so ``00040`` comes back as ``00040`` in every output and
    joins back to the file (type inference made it 40)."""
    import pyarrow.compute as pc

    if len(col) and pa.types.is_string(col.type) and not col.null_count \
            and pc.all(pc.match_substring_regex(col, r"^-?(0|[1-9][0-9]{0,17})$")).as_py():
        return pc.cast(col, pa.int64())  # at most 18 digits: always within int64
    return col


def _read_any(source, *, table, query, columns, dictionary, as_text=None) -> tuple[pa.Table, str, str]:
    if isinstance(source, ReadTable):
        return _select(source.table, columns, source.where), source.format, source.where
    if isinstance(source, pa.Table):
        return _select(source, columns, "<arrow table>"), "table", "<arrow table>"
    if type(source).__name__ == "DataFrame" and hasattr(source, "columns"):
        tbl = pa.Table.from_pandas(source, preserve_index=False)
        return _select(tbl, columns, "<dataframe>"), "dataframe", "<dataframe>"
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
                return _read_stream(fh, fmt, source, columns, dictionary, as_text), fmt, source
        except FileNotFoundError:
            raise DataError(f"{source}: no such file") from None
    if not os.path.exists(source):
        raise DataError(f"{source}: no such file")
    if os.path.isdir(source) and fmt != "parquet":
        raise DataError(f"{source}: is a directory, not a CSV or Parquet file")
    return _read_stream(source, fmt, source, columns, dictionary, as_text), fmt, source


def _select(tbl: pa.Table, columns: list[str] | None, where: str) -> pa.Table:
    if not columns:
        return tbl
    check_unique(tbl.column_names, columns, where)
    check_columns(tbl.column_names, columns, where)
    return tbl.select(columns)


def _redact(dsn: str, table: str | None) -> str:
    """A DSN without its password, for messages and reports."""
    from ._postgres import (
        redact_dsn,  # also hides ?password=... and key=value passwords
    )

    clean = redact_dsn(dsn)
    return f"{clean} table {table}" if table else clean


def _read_stream(src, fmt: str, name: str, columns: list[str] | None,
                 dictionary: list[str] | None = None, as_text: list[str] | None = None) -> pa.Table:
    try:
        if fmt == "parquet":
            if isinstance(src, str) and os.path.isdir(src):
                return pq.read_table(src, columns=columns, read_dictionary=dictionary or None)
            tbl, names = read_parquet_file(src, columns, dictionary, where=name)
            check_columns(names, columns or [], name)
            return tbl
        delimiter = "\t" if name.lower().endswith(".tsv") else ","
        return pacsv.read_csv(
            src,
            parse_options=pacsv.ParseOptions(delimiter=delimiter),
            convert_options=pacsv.ConvertOptions(
                strings_can_be_null=True, include_columns=columns,
                column_types={**{c: pa.string() for c in as_text or []},
                              **{c: pa.dictionary(pa.int32(), pa.string()) for c in dictionary or []}}),
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


def read_parquet_file(src, columns: list[str] | None = None, dictionary: list[str] | None = None,
                      where: str | None = None) -> tuple[pa.Table, list[str]]:
    """One Parquet file (path or file object): ``(table of the columns found, in the order asked; all column names)``.

    ``pq.ParquetFile``, not ``pq.read_table``: the latter imports ``pyarrow.dataset``
    and through it pandas, 0.3 s in every fresh process and Ray worker.  Unlike
    ``read_table`` it ignores a column the file lacks, so the caller names it.
    ``dictionary`` columns are read dictionary-encoded where they are flat
    (``read_dictionary`` refuses a nested column; that one is read as it is and
    refused by the caller for its type).  A column asked for that the file holds twice is
    refused (:func:`check_unique`, naming ``where``).
    """
    try:
        pf = pq.ParquetFile(src, read_dictionary=dictionary or None)
    except KeyError:
        pf = pq.ParquetFile(src)
    names = pf.schema_arrow.names
    if columns is None:
        return pf.read(), names
    found = [c for c in dict.fromkeys(columns) if c in names]
    check_unique(names, found, where or (src if isinstance(src, str) else "Parquet file"))
    return pf.read(columns=found).select(found), names


def csv_dialect(path) -> tuple[str, str | None]:
    """``(delimiter, compression)`` a CSV file's name implies, exactly as :func:`read_table` reads
    it: a tab for ``.tsv``, else a comma; ``"gzip"`` for ``.gz``, ``"bz2"`` for ``.bz2``, else ``None``."""
    lower = os.fspath(path).lower()
    compression = "gzip" if lower.endswith(".gz") else "bz2" if lower.endswith(".bz2") else None
    return ("\t" if lower.endswith(".tsv") else ","), compression


def write_table(tbl: pa.Table, target, fmt: str | None = None) -> str:
    """Write ``tbl`` to ``target`` (path or URL) as CSV or Parquet, atomically for local files.

    ``fmt`` defaults to the one the target's name implies.  A CSV target's name also sets its
    dialect (:func:`csv_dialect`): ``.tsv`` is tab-separated, ``.gz`` and ``.bz2`` are
    compressed, so the file is what its name says and :func:`read_table` reads it back.
    Returns the format used.  A column CSV cannot hold (a list, struct or map; bytes that are
    not UTF-8) is refused before anything is written (:class:`DataError`).
    """
    target = os.fspath(target)
    fmt = fmt if fmt in ("csv", "parquet") else detect_format(target)
    if fmt == "csv":
        check_csv_writable(tbl, target)
    delimiter, compression = csv_dialect(target) if fmt == "csv" else (",", None)
    if _is_url(target):
        with _open_url(target, "wb") as fh:
            _write(tbl, pa.PythonFile(fh, mode="w"), fmt, delimiter, compression)
        return fmt
    with atomic_path(target) as tmp:
        _write(tbl, str(tmp), fmt, delimiter, compression)
    return fmt


def _write(tbl: pa.Table, dst, fmt: str, delimiter: str = ",", compression: str | None = None) -> None:
    if fmt == "parquet":
        pq.write_table(tbl, dst)
        return
    options = pacsv.WriteOptions(quoting_style="needed", delimiter=delimiter)
    if compression is None:
        pacsv.write_csv(tbl, dst, write_options=options)
        return
    with pa.CompressedOutputStream(dst, compression) as stream:
        pacsv.write_csv(tbl, stream, write_options=options)


def csv_unwritable(tbl: pa.Table) -> list[tuple[str, str]]:
    """``[(column, kind), ...]``: columns a CSV file cannot hold (``"list"``, ``"struct"``, ``"map"``;
    ``"not UTF-8 text"`` for bytes)."""
    out = []
    for field in tbl.schema:
        t = field.type.value_type if pa.types.is_dictionary(field.type) else field.type
        if pa.types.is_nested(t):
            out.append((field.name, "struct" if pa.types.is_struct(t) else "map" if pa.types.is_map(t) else "list"))
        elif pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
            if not pa.types.is_fixed_size_binary(t) and is_utf8(tbl.column(field.name)):
                continue  # bytes that happen to be text: written as they are
            out.append((field.name, "not UTF-8 text"))
    return out


def is_utf8(col) -> bool:
    """Do the bytes of a binary column decode as UTF-8 text (vectorised: Arrow's validating cast)?"""
    try:
        pc.cast(col, pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    return True


def check_csv_writable(tbl: pa.Table, where: str) -> None:
    """:class:`DataError` (one line, starting with ``where``) when ``tbl`` has a column CSV cannot
    hold (see :func:`csv_unwritable`)."""
    bad = csv_unwritable(tbl)
    if len(bad) == 1:
        c, kind = bad[0]
        what = "holds bytes that are not UTF-8 text" if kind == "not UTF-8 text" else f"is a {kind} column"
        raise DataError(f"{where}: column '{c}' {what}; CSV cannot hold it: write .parquet")
    if bad:
        cols = ", ".join(f"'{c}' ({kind})" for c, kind in bad[:12]) + (f", ... ({len(bad)} in all)"
                                                                         if len(bad) > 12 else "")
        raise DataError(f"{where}: CSV cannot hold columns {cols}: write .parquet")


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
