"""Reading just the columns a seal needs, with clear errors for absent ones."""

from __future__ import annotations

import os

import pyarrow as pa

from ..data._read import _is_url, detect_format, is_postgres, read_table
from ..exceptions import DataError

__all__: list[str] = []


def is_local_path(source) -> bool:
    """A local file path (where a default manifest path next to it makes sense)."""
    if isinstance(source, os.PathLike):
        return True
    return isinstance(source, str) and not _is_url(source) and not is_postgres(source)


def describe(source) -> str:
    if isinstance(source, pa.Table):
        return "<arrow table>"
    return os.fspath(source) if isinstance(source, (str, os.PathLike)) else f"<{type(source).__name__}>"


def read_columns(source, columns: list[str], *, dictionary: list[str] | None = None,
                 table: str | None = None, query: str | None = None) -> tuple[pa.Table, str]:
    """``(table, description)`` holding only ``columns`` (in that order) of ``source``."""
    wanted = list(dict.fromkeys(columns))
    try:
        tbl, _, where = read_table(source, table=table, query=query, columns=wanted, dictionary=dictionary)
    except (DataError, KeyError) as exc:
        available = available_columns(source)
        if available is not None:
            check_columns(available, wanted, describe(source))
        if isinstance(exc, KeyError):
            raise DataError(f"{describe(source)}: {exc.args[0] if exc.args else exc}") from None
        raise
    check_columns(tbl.column_names, wanted, where)
    return tbl.select(wanted), where


def check_columns(available: list[str], wanted: list[str], where: str, hint: str = "") -> None:
    missing = [c for c in wanted if c not in available]
    if missing:
        shown = ", ".join(available[:12]) + (f", ... ({len(available)} in all)" if len(available) > 12 else "")
        raise DataError(f"{where}: column(s) {', '.join(repr(c) for c in missing)} not found "
                        f"(columns: {shown}){hint}")


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
        import pyarrow.csv as pacsv

        delimiter = "\t" if path.lower().endswith(".tsv") else ","
        with pacsv.open_csv(path, parse_options=pacsv.ParseOptions(delimiter=delimiter)) as reader:
            return reader.schema.names
    except (pa.ArrowException, OSError, ValueError):
        return None
