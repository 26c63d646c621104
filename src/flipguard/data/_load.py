"""``flipguard.data.load``: any supported source -> :class:`LabeledDataset`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..exceptions import DataError
from ._dataset import LabeledDataset
from ._read import read_table

__all__ = ["encode_labels", "load"]

#: A string column with at most this many distinct values (and at most half as
#: many as there are rows) is one-hot encoded; wider ones are dropped.
MAX_CATEGORIES = 50


def load(
    source,
    label: str | None = None,
    *,
    id: str | None = None,  # noqa: A002 - matches the CLI's --id
    features: Sequence[str] | None = None,
    text: str | None = None,
    table: str | None = None,
    query: str | None = None,
    max_categories: int = MAX_CATEGORIES,
    text_max_features: int = 300,
) -> LabeledDataset:
    """Load labelled data from a file, URL, table, data frame or arrays.

    Parameters
    ----------
    source : str, path, pyarrow.Table, pandas.DataFrame or tuple (X, y)
        A CSV or Parquet path, any fsspec URL (``s3://bucket/key.parquet``), a
        ``postgresql://`` DSN (with ``table`` or ``query``), an Arrow table, a
        pandas data frame, or a pair of arrays ``(X, y)``.
    label : str
        Name of the label column (not needed for ``(X, y)``).  Labels may be
        integers, strings or booleans; every output of flipguard speaks these values.
    id : str, optional
        Column of unique row identifiers.  Without it, ids are 0-based row positions.
    features : sequence of str, optional
        Feature columns to use.  Default: every column but the label, id and text ones.
    text : str, optional
        A free-text column turned into TF-IDF features (``text_max_features`` terms).
    table, query : str, optional
        For PostgreSQL sources: the table to read or a query.
    max_categories : int, default=50
        String columns with at most this many distinct values are one-hot encoded;
        wider string columns are dropped (and the choice recorded in ``encoding``).

    Returns
    -------
    LabeledDataset

    Raises
    ------
    DataError
        Missing file, unreadable format, absent column, missing labels, a single
        class, no usable feature column, or duplicated ids.

    Examples
    --------
    >>> from flipguard.data import load
    >>> import numpy as np
    >>> ds = load((np.eye(4), np.array(["spam", "ham", "spam", "ham"])))
    >>> ds.classes.tolist(), ds.y.tolist()
    (['ham', 'spam'], [1, 0, 1, 0])
    """
    if isinstance(source, tuple):
        return _from_arrays(*source) if len(source) == 2 else _bad_tuple()
    tbl, fmt, where = read_table(source, table=table, query=query)
    if label is None:
        raise DataError(f"{where}: name the label column (label=...)")
    return from_table(tbl, label=label, id=id, features=features, text=text, source=where,
                      format=fmt, max_categories=max_categories,
                      text_max_features=text_max_features)


def _bad_tuple():
    raise DataError("array input must be a pair (X, y)")


def from_table(tbl: pa.Table, *, label: str, id: str | None = None, features=None, text=None,
               source: str = "<arrow table>", format: str = "table",
               max_categories: int = MAX_CATEGORIES, text_max_features: int = 300) -> LabeledDataset:
    """Build a :class:`LabeledDataset` from an Arrow table (see :func:`load`)."""
    names = tbl.column_names
    for role, col in (("label", label), ("id", id), ("text", text)):
        if col is not None and col not in names:
            raise DataError(f"{source}: {role} column '{col}' not found (columns: {_list(names)})")
    if tbl.num_rows == 0:
        raise DataError(f"{source}: no rows")

    classes, y = encode_labels(tbl.column(label), source=source, label=label)
    ids = _ids(tbl, id, source)

    if features is not None:
        missing = [f for f in features if f not in names]
        if missing:
            raise DataError(f"{source}: feature column(s) {_list(missing)} not found "
                            f"(columns: {_list(names)})")
        feature_cols = [f for f in features if f not in (label, id, text)]
    else:
        feature_cols = [c for c in names if c not in (label, id, text)]

    blocks, fnames, encoding = [], [], {}
    for col in feature_cols:
        block, cols, how = _encode_column(tbl.column(col), col, max_categories)
        encoding[col] = how
        if block is not None:
            blocks.append(block)
            fnames.extend(cols)
    if text is not None:
        block, cols = _tfidf(tbl.column(text), text, text_max_features, source)
        blocks.append(block)
        fnames.extend(cols)
        encoding[text] = f"tfidf ({len(cols)} terms)"
    if not blocks:
        raise DataError(f"{source}: no usable feature column "
                        f"({'; '.join(f'{c}: {h}' for c, h in encoding.items()) or 'only label/id columns'})")
    X = np.ascontiguousarray(np.hstack(blocks) if len(blocks) > 1 else blocks[0], dtype=np.float64)
    return LabeledDataset(X=X, y=y, classes=classes, ids=ids, feature_names=fnames,
                          label_name=label, id_name=id, source=source, format=format,
                          encoding=encoding, table=tbl)


def encode_labels(col: pa.ChunkedArray, *, source: str = "<data>", label: str = "label"):
    """Label column -> ``(classes, codes)``; rejects missing labels and single-class data."""
    if isinstance(col, pa.ChunkedArray) and pa.types.is_dictionary(col.type):
        col = pc.cast(col, col.type.value_type)
    missing = pc.is_null(col, nan_is_null=True) if pa.types.is_floating(col.type) else pc.is_null(col)
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        missing = pc.or_(missing, pc.equal(pc.utf8_trim_whitespace(col), ""))
        missing = pc.fill_null(missing, True)
    n_missing = pc.sum(missing).as_py() or 0
    if n_missing:
        rows = np.flatnonzero(missing.to_numpy(zero_copy_only=False))[:5].tolist()
        more = ", ..." if n_missing > len(rows) else ""
        raise DataError(f"{source}: label column '{label}' has {n_missing} missing/NaN value(s) "
                        f"(rows {', '.join(map(str, rows))}{more}; 0-based)")
    if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)
            or pa.types.is_boolean(col.type) or pa.types.is_string(col.type)
            or pa.types.is_large_string(col.type)):
        raise DataError(f"{source}: label column '{label}' has type {col.type}; "
                        "labels must be integers, strings or booleans")
    values = col.to_numpy(zero_copy_only=False)
    if values.dtype.kind in "OUS":
        encoded = pc.dictionary_encode(col).combine_chunks()
        dictionary = encoded.dictionary.to_numpy(zero_copy_only=False)
        order = np.argsort(dictionary, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        classes = dictionary[order].astype(object)
        y = rank[encoded.indices.to_numpy()].astype(np.int64)
    else:
        classes, y = np.unique(values, return_inverse=True)
        y = y.astype(np.int64)
    if len(classes) < 2:
        raise DataError(f"{source}: label column '{label}' has a single class "
                        f"({getattr(classes[0], 'item', lambda: classes[0])()!r}); at least two are needed")
    return classes, y


def _ids(tbl: pa.Table, id: str | None, source: str) -> np.ndarray:
    if id is None:
        return np.arange(tbl.num_rows, dtype=np.int64)
    col = tbl.column(id)
    if col.null_count:
        raise DataError(f"{source}: id column '{id}' has {col.null_count} missing value(s)")
    if pc.count_distinct(col).as_py() != tbl.num_rows:
        values = col.to_numpy(zero_copy_only=False)
        uniq, counts = np.unique(values, return_counts=True)
        dups = uniq[counts > 1]
        raise DataError(f"{source}: id column '{id}' has {len(dups)} duplicated value(s) "
                        f"(e.g. {_list(map(str, dups[:3]))})")
    values = col.to_numpy(zero_copy_only=False)
    return values.astype(object) if values.dtype.kind in "OUS" else values


def _encode_column(col: pa.ChunkedArray, name: str, max_categories: int):
    """One input column -> (2-D float block or None, feature names, description)."""
    t = col.type
    if pa.types.is_dictionary(t):
        col, t = pc.cast(col, t.value_type), t.value_type
    n = len(col)
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) \
            or pa.types.is_temporal(t):
        if pa.types.is_temporal(t):
            col = pc.cast(pc.cast(col, pa.timestamp("s")) if pa.types.is_date(t) else col, pa.int64())
        values = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
        values[~np.isfinite(values)] = np.nan
        n_nan = int(np.isnan(values).sum())
        if n_nan == n:
            return None, [], "dropped: all values missing"
        how = "numeric"
        if n_nan:
            median = float(np.nanmedian(values))
            values[np.isnan(values)] = median
            how = f"numeric ({n_nan} missing imputed with median {median:g})"
        return values[:, None], [name], how
    if pa.types.is_boolean(t):
        values = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
        values[np.isnan(values)] = 0.0
        return values[:, None], [name], "bool"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        n_unique = pc.count_distinct(col).as_py()
        if n_unique > max_categories or n_unique > max(2, n // 2):
            return None, [], f"dropped: {n_unique} distinct strings (pass it as text= for free text)"
        encoded = pc.dictionary_encode(col).combine_chunks()
        cats = encoded.dictionary.to_numpy(zero_copy_only=False)
        order = np.argsort(cats.astype(str), kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        idx = encoded.indices.to_numpy(zero_copy_only=False)
        block = np.zeros((n, len(cats)), dtype=np.float64)
        valid = ~np.isnan(idx.astype(np.float64)) if idx.dtype.kind == "f" else np.ones(n, bool)
        rows = np.flatnonzero(valid)
        block[rows, rank[idx[valid].astype(np.int64)]] = 1.0
        return block, [f"{name}={c}" for c in cats[order]], f"one-hot ({len(cats)} categories)"
    return None, [], f"dropped: unsupported type {t}"


def _tfidf(col: pa.ChunkedArray, name: str, max_features: int, source: str):
    from sklearn.feature_extraction.text import TfidfVectorizer

    docs = pc.fill_null(pc.cast(col, pa.string()), "").to_pylist()
    vec = TfidfVectorizer(max_features=max_features, sublinear_tf=True)
    try:
        M = vec.fit_transform(docs)
    except ValueError as exc:
        raise DataError(f"{source}: text column '{name}' gives no TF-IDF features ({exc})") from None
    return M.toarray(), [f"{name}:{t}" for t in vec.get_feature_names_out()]


def _from_arrays(X, y) -> LabeledDataset:
    X = np.asarray(X)
    y = np.asarray(y)
    if X.ndim != 2 or y.ndim != 1 or X.shape[0] != y.shape[0]:
        raise DataError(f"X must be 2-D and y 1-D with one label per row "
                        f"(got X {X.shape}, y {y.shape})")
    try:
        X = X.astype(np.float64)
    except (TypeError, ValueError):
        raise DataError("X must be numeric") from None
    if not np.all(np.isfinite(X)):
        raise DataError("X contains NaN or infinite values")
    classes, codes = encode_labels(pa.chunked_array([pa.array(y.tolist() if y.dtype == object else y)]),
                                   source="<arrays>")
    return LabeledDataset(X=X, y=codes, classes=classes, ids=np.arange(len(y)),
                          feature_names=[f"x{j}" for j in range(X.shape[1])],
                          encoding={"X": "numeric"})


def _list(items) -> str:
    items = list(items)
    shown = ", ".join(map(str, items[:12]))
    return shown + (f", ... ({len(items)} in all)" if len(items) > 12 else "")
