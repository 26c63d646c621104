"""``flipguard.data.load``: any supported source -> :class:`LabeledDataset`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..exceptions import DataError
from ._dataset import LabeledDataset
from ._leaks import (
    CLEAN_WEIGHT_COLUMN,
    DETERMINES,
    determines_label,
    follows_row_order,
    is_row_identifier,
    sample_rows,
)
from ._read import check_unique, read_table

__all__ = ["dropped_columns", "dropped_text_columns", "encode_labels", "expand_vector_columns", "load"]

#: A string column with at most this many distinct values (and at most half as
#: many as there are rows) is one-hot encoded; wider ones are dropped.
MAX_CATEGORIES = 50

#: An integer label with more distinct values than this, and fewer than
#: ``MIN_ROWS_PER_CLASS`` rows per value on average, looks like a measurement
#: or an identifier, not a class label.
MAX_LABEL_CLASSES = 20
MIN_ROWS_PER_CLASS = 5


def load(
    source,
    label: str | None = None,
    *,
    id: str | None = None,  # noqa: A002 - matches the CLI's --id
    features: Sequence[str] | None = None,
    text: str | Sequence[str] | None = None,
    table: str | None = None,
    query: str | None = None,
    max_categories: int = MAX_CATEGORIES,
    text_max_features: int = 300,
    sparse: bool = False,
    keep: Sequence[str] = (),
    label_blind: bool = False,
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
        Feature columns to use.  Default: every column but the label, id and
        text ones, and but columns that would let a model read the observed
        labels off the row order: a row identifier (unique integers in a
        column named like an id, such as ``user_id``, ``idx`` or the index
        pandas writes), or a column that rises with the row order
        and determines the observed label on its own (a sequence number or
        load time of a file sorted by label).  Both are recorded in
        ``encoding`` as ``"dropped: ..."``.  A column that determines the
        label without following the row order is kept and marked
        (``"...; determines the observed label on its own"``): it may be a
        copy of the label, or the rule that defines it.
    text : str or sequence of str, optional
        Free-text column(s), each turned into TF-IDF features (at most
        ``text_max_features`` terms each, named ``"column:term"``).  A string
        column that is not named here and has too many distinct values to
        be one-hot encoded is dropped; :func:`dropped_text_columns` lists them.
    table, query : str, optional
        For PostgreSQL sources: the table to read or a query.
    max_categories : int, default=50
        String columns with at most this many distinct values are one-hot encoded;
        wider string columns are dropped (and the choice recorded in ``encoding``).
    text_max_features : int, default=300
        Vocabulary size of each text column's TF-IDF.
    sparse : bool, default=False
        Return ``X`` as a :class:`scipy.sparse.csr_matrix` (TF-IDF stays
        sparse; numeric and one-hot columns are stored alongside).  The
        detection API (:class:`~flipguard.detection.LabelAuditor`,
        :func:`~flipguard.detection.audit_dataset`) accepts it as is.
    keep : sequence of str, default=()
        Columns used as features even when they look like a row identifier or
        follow a label-sorted row order (see ``features``).
    label_blind : bool, default=False
        Choose the features without looking at the labels: a column that
        follows a label-sorted row order is marked, not dropped (what
        ``flipguard certify`` trains on must not change when labels flip).

    Returns
    -------
    LabeledDataset

    Raises
    ------
    DataError
        Missing file, unreadable format, absent column, missing labels, a single
        class, a label column that looks continuous (non-integer numbers, or
        more than 20 distinct integers with fewer than 5 rows each on
        average), no usable feature column, or duplicated ids.

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
    tbl, fmt, where = read_table(source, table=table, query=query, id_column=id)
    if label is None:
        raise DataError(f"{where}: name the label column (label=...)")
    return from_table(tbl, label=label, id=id, features=features, text=text, source=where,
                      format=fmt, max_categories=max_categories,
                      text_max_features=text_max_features, sparse=sparse, keep=keep,
                      label_blind=label_blind)


def _bad_tuple():
    raise DataError("array input must be a pair (X, y)")


def from_table(tbl: pa.Table, *, label: str, id: str | None = None, features=None, text=None,
               source: str = "<arrow table>", format: str = "table",
               max_categories: int = MAX_CATEGORIES, text_max_features: int = 300,
               sparse: bool = False, require_features: bool = True, keep=(),
               exclude=(), label_blind: bool = False) -> LabeledDataset:
    """Build a :class:`LabeledDataset` from an Arrow table (see :func:`load`).

    ``require_features=False`` accepts a table with no usable feature column
    (``X`` then has no columns: features come from elsewhere, e.g. embeddings).
    ``exclude`` names columns that are never features (a reference label).
    ``label_blind=True`` chooses the features without looking at the labels: a column
    that determines the observed labels is marked but kept (a certificate against label
    flips must train on columns that flipped labels cannot change).
    """
    names = tbl.column_names
    texts = _text_columns(text)
    for role, cols in (("label", [label]), ("id", [id]), ("text", texts), ("keep", list(keep))):
        for col in cols:
            if col is not None and col not in names:
                raise DataError(f"{source}: {role} column '{col}' not found (columns: {_list(names)})")
    for col in texts:
        if col in (label, id):
            raise DataError(f"{source}: text column '{col}' is also the {'label' if col == label else 'id'} column")
    check_unique(names, names if features is None else [label, id, *texts, *features], source)
    for role, cols in (("label", [label]), ("id", [id]), ("text", texts)):
        for col in cols:
            if col is not None:
                refuse_bytes(tbl.column(col), role, col, source, format)
    if tbl.num_rows == 0:
        raise DataError(f"{source}: no rows")

    classes, y = encode_labels(tbl.column(label), source=source, label=label)
    ids = _ids(tbl, id, source)

    reserved = (label, id, *texts, *exclude)
    if features is not None:
        missing = [f for f in features if f not in names]
        if missing:
            raise DataError(f"{source}: feature column(s) {_list(missing)} not found "
                            f"(columns: {_list(names)})")
        feature_cols = [f for f in features if f not in reserved]
    else:
        feature_cols = [c for c in names if c not in reserved]

    blocks, fnames, encoding, vectorizers = [], [], {}, {}
    rows = sample_rows(tbl.num_rows)
    for col in feature_cols:
        block, cols, how = _encode_column(tbl.column(col), col, max_categories, format)
        if features is None and block is not None:
            block, how = _guard_column(tbl.column(col), col, block, how, y[rows], len(classes), rows,
                                       keep=col in keep, label_blind=label_blind)
        encoding[col] = how
        if block is not None:
            blocks.append(block)
            fnames.extend(cols)
    for col in texts:
        block, cols, vec = _tfidf(tbl.column(col), col, text_max_features, source)
        blocks.append(block if sparse else block.toarray())
        fnames.extend(cols)
        encoding[col] = f"tfidf ({len(cols)} terms)"
        vectorizers[col] = vec
    if not blocks and not require_features:
        blocks = [np.empty((tbl.num_rows, 0))]
    if not blocks:
        wide = [c for c, how in encoding.items() if str(how).startswith("dropped") and "distinct strings" in how]
        hint = (f"; for free text use --text {wide[0]} (text='{wide[0]}' in Python)" if wide else "")
        guarded = [c for c, how in encoding.items()
                   if str(how).startswith(("dropped: row identifier", "dropped: rises with the row order"))]
        if guarded:
            hint += f"; to use {guarded[0]!r} anyway: --keep {guarded[0]} (keep=[{guarded[0]!r}] in Python)"
        raise DataError(f"{source}: no usable feature column "
                        f"({'; '.join(f'{c}: {h}' for c, h in encoding.items()) or 'only label/id columns'})"
                        f"{hint}")
    if sparse:
        import scipy.sparse as sp

        X = sp.hstack([b if sp.issparse(b) else sp.csr_matrix(b) for b in blocks], format="csr",
                      dtype=np.float64)
    else:
        X = np.ascontiguousarray(np.hstack(blocks) if len(blocks) > 1 else blocks[0], dtype=np.float64)
    return LabeledDataset(X=X, y=y, classes=classes, ids=ids, feature_names=fnames,
                          label_name=label, id_name=id, source=source, format=format,
                          encoding=encoding, table=tbl, vectorizers=vectorizers)


def _guard_column(col: pa.ChunkedArray, name: str, block: np.ndarray, how: str, y_rows: np.ndarray,
                  n_classes: int, rows: np.ndarray, *, keep: bool = False, label_blind: bool = False):
    """``(block, how)``; ``(None, "dropped: ...")`` for a column that would let a model read the
    observed labels off the row order, unless ``keep``; ``how`` marked when the column determines
    the observed label and stays (:mod:`flipguard.data._leaks`)."""
    if not keep and name == CLEAN_WEIGHT_COLUMN:
        return None, "dropped: weights of flipguard clean --mode weight (made from the labels' audit)"
    if not keep and block.shape[1] == 1 and is_row_identifier(block[:, 0], name, col.null_count > 0):
        return None, (f"dropped: row identifier (unique integers {block[:, 0].min():.0f} to "
                      f"{block[:, 0].max():.0f})")
    sample = block[rows]
    key = sample[:, 0] if block.shape[1] == 1 else np.argmax(sample, axis=1) + sample.any(axis=1)
    if not determines_label(key, y_rows, n_classes):
        return block, how
    if not keep and not label_blind and block.shape[1] == 1 and follows_row_order(key, n_classes):
        return None, ("dropped: rises with the row order and determines the observed label "
                      "(a row number or load time of a label-sorted file)")
    return block, f"{how}{DETERMINES}"


def refuse_bytes(col: pa.ChunkedArray, role: str, name: str, source: str, format: str) -> None:
    """A label, id or text column of bytes: in a CSV, text that is not UTF-8 (say so, not "binary")."""
    t = col.type.value_type if pa.types.is_dictionary(col.type) else col.type
    if not (pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t)):
        return
    if format == "csv":
        raise DataError(f"{source}: {role} column '{name}' is not UTF-8 text (flipguard reads CSV as UTF-8 "
                        "text): save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)")
    must = {"label": "labels must be integers, strings or booleans", "id": "ids must be integers or text",
            "text": "a text column must hold strings"}[role]
    raise DataError(f"{source}: {role} column '{name}' holds bytes ({t}), not text; {must}")


#: How ``encoding`` describes a column left out because of what it is; the row-identifier and
#: label-sorted-sequence drops (warnings) and wide string columns (their own note) are said elsewhere.
_SAID_ELSEWHERE = ("dropped: row identifier", "dropped: rises with the row order", "dropped: weights of flipguard clean")


def dropped_columns(dataset: LabeledDataset) -> list[tuple[str, str]]:
    """``[(column, why), ...]``: columns left out of the features for what they hold (missing or
    ragged vectors, a type that is not numbers or text, bytes that are not UTF-8, every value
    missing); not the wide string columns (:func:`dropped_text_columns`) nor the columns that would
    reveal the label (:mod:`flipguard.data._leaks`)."""
    out = []
    for col, how in dataset.encoding.items():
        how = str(how)
        if how.startswith("dropped: ") and not how.startswith(_SAID_ELSEWHERE) \
                and not how.endswith(" distinct strings"):
            out.append((col, how[len("dropped: "):]))
    return out


def dropped_text_columns(dataset: LabeledDataset) -> list[tuple[str, int]]:
    """``[(column, n_distinct), ...]``: string columns dropped because they have too many
    distinct values to one-hot encode (free text, or identifiers) and were not passed as
    ``text``."""
    out = []
    for col, how in dataset.encoding.items():
        how = str(how)
        if how.startswith("dropped: ") and how.endswith(" distinct strings"):
            out.append((col, int(how.split()[1])))
    return out


def _text_columns(text) -> list[str]:
    if text is None:
        return []
    cols = [text] if isinstance(text, str) else list(text)
    return list(dict.fromkeys(cols))


def encode_labels(col: pa.ChunkedArray, *, source: str = "<data>", label: str = "label", min_classes: int = 2):
    """Label column -> ``(classes, codes)``; rejects missing labels and (with the default
    ``min_classes``) single-class data: rows to certify may all have one class."""
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
        _reject_continuous(classes, len(y), source, label)
    if len(classes) < min_classes:
        raise DataError(f"{source}: label column '{label}' has a single class "
                        f"({getattr(classes[0], 'item', lambda: classes[0])()!r}); at least two are needed")
    return classes, y


def _reject_continuous(classes: np.ndarray, n: int, source: str, label: str) -> None:
    """A numeric label column that is a measurement, not classes: say so and how to fix it."""
    if classes.dtype.kind == "f" and not np.all(classes == np.round(classes)):
        frac = classes[classes != np.round(classes)]
        raise DataError(f"{source}: label column '{label}' looks continuous ({len(classes)} distinct "
                        f"numbers, e.g. {frac[0]:g}); flipguard needs class labels: name the class "
                        "column with --label, or bin the values into classes first")
    if classes.dtype.kind in "iuf" and len(classes) > MAX_LABEL_CLASSES \
            and n < MIN_ROWS_PER_CLASS * len(classes):
        raise DataError(f"{source}: label column '{label}' looks continuous or like an identifier "
                        f"({len(classes)} distinct values in {n} rows); flipguard needs class labels: "
                        "name the class column with --label, or bin the values into classes first")


def _ids(tbl: pa.Table, id: str | None, source: str) -> np.ndarray:
    if id is None:
        return np.arange(tbl.num_rows, dtype=np.int64)
    col = tbl.column(id)
    _id_type(col, id, source)
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


def _id_type(col: pa.ChunkedArray, id: str, source: str) -> None:  # noqa: A002
    t = col.type.value_type if pa.types.is_dictionary(col.type) else col.type
    if pa.types.is_nested(t):
        raise DataError(f"{source}: id column '{id}' has type {t}; ids must be integers or text")


def _encode_column(col: pa.ChunkedArray, name: str, max_categories: int, format: str = "table"):
    """One input column -> (2-D float block or None, feature names, description)."""
    t = col.type
    if pa.types.is_dictionary(t):
        col, t = pc.cast(col, t.value_type), t.value_type
    n = len(col)
    if pa.types.is_null(t):  # a CSV column with no value at all
        return None, [], "dropped: all values missing"
    if (pa.types.is_binary(t) or pa.types.is_large_binary(t)) and format == "csv":
        return None, [], "dropped: not UTF-8 text; flipguard reads CSV as UTF-8"
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) \
            or pa.types.is_temporal(t):
        if pa.types.is_temporal(t):
            col = pc.cast(pc.cast(col, pa.timestamp("s")) if pa.types.is_date(t) else col, pa.int64())
        values = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
        n_inf = int(np.isinf(values).sum())
        values[~np.isfinite(values)] = np.nan
        n_nan = int(np.isnan(values).sum())
        if n_nan == n:
            return None, [], "dropped: all values missing"
        how = "numeric"
        if n_nan:
            median = float(np.nanmedian(values))
            values[np.isnan(values)] = median
            how = f"numeric ({n_nan} missing imputed with median {median:g})"
            if n_inf:  # said apart: an infinity is usually a bug upstream, not a gap
                how = (f"numeric ({n_inf} infinite and {n_nan - n_inf} missing imputed with "
                       f"median {median:g})")
        return values[:, None], [name], how
    if pa.types.is_boolean(t):
        values = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
        values[np.isnan(values)] = 0.0
        return values[:, None], [name], "bool"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        n_unique = pc.count_distinct(col).as_py()
        if n_unique > max_categories or n_unique > max(2, n // 2):
            return None, [], f"dropped: {n_unique} distinct strings"
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
    if (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)) and \
            (pa.types.is_integer(t.value_type) or pa.types.is_floating(t.value_type)):
        return _encode_vectors(col.combine_chunks(), name)
    return None, [], f"dropped: unsupported type {t}"


def _encode_vectors(arr: pa.Array, name: str):
    """A column of numeric vectors (an embedding stored as a list per row) -> one feature per
    dimension, ``name[0]``, ``name[1]``, ...; vectors of different lengths, or missing ones, are
    not features (a missing value inside a vector takes that dimension's median)."""
    n = len(arr)
    if arr.null_count:
        return None, [], f"dropped: {arr.null_count} missing vector(s)"
    lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
    d = int(lengths[0]) if n else 0
    if d == 0 or (lengths != d).any():
        return None, [], "dropped: vectors of different lengths"
    values = pc.list_flatten(arr).to_numpy(zero_copy_only=False).astype(np.float64).reshape(n, d)
    bad = ~np.isfinite(values)
    how = f"vector ({d} dimensions)"
    if bad.any():
        values[bad] = np.nan
        empty = bad.all(axis=0)  # a dimension with no value at all: 0 (nanmedian would warn)
        medians = np.zeros(values.shape[1])
        if not empty.all():
            medians[~empty] = np.nanmedian(values[:, ~empty], axis=0)
        values[bad] = np.broadcast_to(medians, values.shape)[bad]
        how = f"vector ({d} dimensions; {int(bad.sum())} missing or infinite values imputed with medians)"
    return values, [f"{name}[{j}]" for j in range(d)], how


def expand_vector_columns(tbl: pa.Table, where: str, skip=()) -> tuple[pa.Table, list[str]]:
    """``tbl`` with each column of numeric vectors (list or fixed-size list per row, as embeddings
    are stored) replaced by one float64 column per dimension, ``name[0]``, ``name[1]``, ...
    (:func:`_encode_vectors`, as :func:`load` encodes them), and notes on values imputed.

    Columns in ``skip`` stay as they are.  A vector column that cannot be expanded (missing
    vectors, vectors of different lengths) is a :class:`DataError` naming it.
    """
    notes: list[str] = []
    names: list[str] = []
    arrays: list = []
    for name in tbl.column_names:
        t = tbl.schema.field(name).type
        if name in skip or not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)) \
                or not (pa.types.is_integer(t.value_type) or pa.types.is_floating(t.value_type)):
            names.append(name)  # not a vector of numbers: the caller judges it
            arrays.append(tbl.column(name))
            continue
        block, cols, how = _encode_vectors(tbl.column(name).combine_chunks(), name)
        if block is None:
            raise DataError(f"{where}: vector column '{name}' cannot be used as features "
                            f"({how.removeprefix('dropped: ')})")
        if "imputed" in how:
            notes.append(f"{where}: column '{name}': {how}")
        names.extend(cols)
        arrays.extend(np.ascontiguousarray(block.T))
    check_unique(names, names, where)
    return pa.table(arrays, names=names), notes


def _tfidf(col: pa.ChunkedArray, name: str, max_features: int, source: str):
    """A text column -> (sparse CSR TF-IDF block, feature names, fitted vectoriser)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(max_features=max_features, sublinear_tf=True, dtype=np.float64)
    try:
        M = vec.fit_transform(text_docs(col))
    except ValueError as exc:
        raise DataError(f"{source}: text column '{name}' gives no TF-IDF features ({exc})") from None
    return M.tocsr(), [f"{name}:{t}" for t in vec.get_feature_names_out()], vec


def text_docs(col) -> list[str]:
    """A column's values as documents (missing values are empty documents)."""
    if isinstance(col, pa.ChunkedArray) and pa.types.is_dictionary(col.type):
        col = pc.cast(col, col.type.value_type)
    return pc.fill_null(pc.cast(col, pa.string()), "").to_pylist()


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
