"""Reading audit inputs: the data (minus a reference-label column), trusted files, rules."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..data import from_table, read_table
from ..exceptions import DataError
from ._base import LabelSource, TrustedLabels, check_pred_probs
from ._rules import load_rules, reference_source, rule_sources

__all__ = ["audit_sources", "load_audit_data", "load_trusted", "match_trusted_ids", "read_features",
           "read_pred_probs"]


def load_audit_data(source, *, label: str, id: str | None = None,
                    reference_label: str | None = None, table: str | None = None,
                    text=None, sparse: bool | None = None, require_features: bool = True, keep=()):
    """Load data to audit; a reference-label column is kept out of the features.

    ``text`` names free-text column(s) turned into TF-IDF features; they
    stay sparse (``sparse=None`` means: sparse when there is a text column).
    Returns a :class:`~flipguard.data.LabeledDataset` whose ``table`` still
    holds every column (rules may refer to any of them).  ``require_features=False``
    accepts a table without feature columns (features come from a ``--features`` file).
    """
    texts = [text] if isinstance(text, str) else list(text or [])
    if sparse is None:
        sparse = bool(texts)
    tbl, fmt, where = read_table(source, table=table, id_column=id)
    if reference_label is not None and reference_label not in tbl.column_names:
        raise DataError(f"{where}: reference-label column '{reference_label}' not found "
                        f"(columns: {', '.join(tbl.column_names[:12])})")
    if reference_label is not None and reference_label == label:
        raise DataError("the reference-label column must differ from the label column")
    if reference_label is not None and reference_label in texts:
        raise DataError(f"{where}: column '{reference_label}' cannot be both the reference label and a "
                        "text column")
    if require_features and label in tbl.column_names and \
            not set(tbl.column_names) - {label, id, reference_label}:
        raise DataError(f"{where}: no feature columns besides the label and the id; an audit of "
                        "labels alone needs --pred-probs (out-of-fold probabilities) or --features")
    return from_table(tbl, label=label, id=id, text=texts or None, source=where, format=fmt, sparse=sparse,
                      require_features=require_features, keep=keep,
                      exclude=[reference_label] if reference_label is not None else [])


_NO_FEATURES = (" and the file has no feature columns to use them as extra examples: give their features, "
                "or only rows of the data")


def load_trusted(source, dataset, *, notes: list | None = None) -> TrustedLabels:
    """Read a file of verified rows (same columns as ``dataset``) into :class:`TrustedLabels`.

    Features are encoded exactly like the dataset's (numeric columns as
    numbers, one-hot columns against the dataset's categories; missing
    numbers take the dataset column's median).  When the dataset has an id
    column and the trusted file has it too, trusted rows are matched to
    data rows by id (``rows``); unmatched ones are extra verified examples.
    A file of just ids and verified labels (a reviewer's sheet) uses the
    matched rows' features, so every one of its ids must be in the data.

    Ids are matched as :func:`match_trusted_ids` describes (a CSV's ids are
    read as the text written, so ``00040`` stays ``00040`` for text ids).
    The same id twice with one label counts once (a note in ``notes``, a
    list to append to, or a :class:`UserWarning` without it); the same id
    with two different labels is an error.

    Text columns are encoded with the dataset's own TF-IDF vocabulary.

    Raises
    ------
    DataError
        Missing file or column, missing or unknown label values, missing
        ids, an id with two different labels, ids not in the data in a file
        without features, or an empty file.
    """
    tbl, _, where = _read_sheet(source, dataset)
    if tbl.num_rows == 0:
        raise DataError(f"{where}: no trusted rows")
    if dataset.label_name not in tbl.column_names:
        raise DataError(f"{where}: label column '{dataset.label_name}' not found in the trusted file")
    col = tbl.column(dataset.label_name)
    if col.null_count:
        raise DataError(f"{where}: {col.null_count} trusted row(s) have no label")
    y = _encode_like(col, dataset, where)
    by_id = dataset.id_name is not None and dataset.id_name in tbl.column_names
    try:
        X = _features_like(tbl, dataset, where)
    except _MissingFeatures as exc:
        # A reviewer's sheet of ids and verified labels: the matched rows' features are the data's.
        if not by_id:
            raise DataError(f"{exc}; a file of just ids and verified labels needs --id (the data's id "
                            "column, also in the file) to match its rows") from None
        X = None
    rows = None
    if by_id:
        kept, rows = match_trusted_ids(tbl.column(dataset.id_name), y, dataset, where=where,
                                       extras=X is not None, notes=notes)
        y = y[kept]
        if X is not None:
            X = X[kept]
    if X is None:
        X = dataset.X[rows]
        if hasattr(X, "toarray"):
            X = X.toarray()
    if getattr(dataset, "is_sparse", False):
        import scipy.sparse as sp

        X = sp.csr_matrix(X)
    return TrustedLabels(X=X, y=y, rows=rows)


def match_trusted_ids(ids, codes: np.ndarray, dataset, *, where: str, extras: bool = False,
                      notes: list | None = None, hint: str = _NO_FEATURES) -> tuple[np.ndarray, np.ndarray]:
    """Match verified rows to ``dataset``'s rows by id: the one rule ``--trusted`` follows in
    every command (and :func:`~flipguard.mitigation.clean_dataset` for ids and labels).

    ``ids`` (an Arrow or NumPy column) are read in the data's id type: when
    the data's ids are text, as text exactly as written (``00040`` is not
    ``40``); when they are integers, text ids that are all integers are
    integers (``0040``, ``40.0`` and `` 40`` are 40: the integrity layer's rule,
    :func:`flipguard.integrity._columns.integer_text_ids`, after trimming spaces).

    Returns ``(kept, rows)``: the positions of the verified rows kept (an
    id given twice with the same label counts once, with a note in
    ``notes`` or a :class:`UserWarning`) and, for each, its position in the
    data or -1 (allowed only with ``extras``: rows with features that are
    extra verified examples).

    Raises
    ------
    DataError
        A missing id; an id given with two different labels (named, with
        both labels); without ``extras``, ids that are not in the data.
    """
    keys, shown = _comparable_ids(ids, dataset, where)
    codes = np.asarray(codes, dtype=np.int64)
    groups = pc.dictionary_encode(keys)
    inv = groups.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    n_groups = len(groups.dictionary)
    first = np.full(n_groups, len(inv), dtype=np.int64)
    np.minimum.at(first, inv, np.arange(len(inv), dtype=np.int64))
    if n_groups < len(inv):
        lo = np.full(n_groups, np.iinfo(np.int64).max, dtype=np.int64)
        hi = np.full(n_groups, -1, dtype=np.int64)
        np.minimum.at(lo, inv, codes)
        np.maximum.at(hi, inv, codes)
        bad = np.flatnonzero(lo != hi)
        if len(bad):
            named = []
            for g in bad[:5]:
                labels = dataset.classes[np.unique(codes[inv == g])]
                named.append(f"{shown[first[g]]} ({', '.join(map(str, labels.tolist()))})")
            raise DataError(f"{where}: {len(bad)} id(s) have two different verified labels: "
                            f"{', '.join(named)}{', ...' if len(bad) > 5 else ''}; keep one label per id")
        n_dup = len(inv) - n_groups
        _note(notes, f"{where}: {n_dup} duplicated trusted row(s) (same id and label) were counted once")
    kept = np.sort(first)
    data_keys = pa.array(dataset.ids) if dataset.ids.dtype != object else \
        pa.array(dataset.ids.astype(str).tolist(), type=pa.string())
    if data_keys.type != keys.type:
        try:
            data_keys = pc.cast(data_keys, keys.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            keys, data_keys = pc.cast(keys, pa.string()), pc.cast(data_keys, pa.string())
    pos = pc.index_in(keys.take(pa.array(kept)), value_set=data_keys)
    rows = pc.fill_null(pos, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    if not extras and (rows < 0).any():
        lost = shown[kept[rows < 0]]
        raise DataError(f"{where}: {int((rows < 0).sum())} trusted row(s) have ids that are not in "
                        f"{dataset.source} ({', '.join(map(str, lost[:5]))}{', ...' if len(lost) > 5 else ''})"
                        f"{hint}")
    return kept, rows


def audit_sources(dataset, *, rules=None, reference_label: str | None = None
                  ) -> tuple[list[LabelSource], list[str]]:
    """Label sources for ``dataset``: one per rule (a YAML path or list of rules) and one
    for a reference-label column.  Returns ``(sources, warnings)``."""
    sources: list[LabelSource] = []
    warns: list[str] = []
    if dataset.table is None and (rules is not None or reference_label is not None):
        raise DataError("rules and reference labels need the dataset's table (load it with flipguard.data.load)")
    if rules is not None:
        rule_list = load_rules(rules) if not isinstance(rules, list) or not rules \
            or isinstance(rules[0], dict) else rules
        sources.extend(rule_sources(dataset.table, rule_list, dataset.classes))
    if reference_label is not None:
        if reference_label not in dataset.table.column_names:
            raise DataError(f"{dataset.source}: reference-label column '{reference_label}' not found")
        src, unknown = reference_source(dataset.table.column(reference_label), dataset.classes,
                                        f"reference:{reference_label}")
        if unknown:
            warns.append(f"{unknown} value(s) of reference-label column '{reference_label}' are not "
                         "classes of the audited labels and were ignored")
        if not (src.expected >= 0).any():
            warns.append(f"reference-label column '{reference_label}' has no usable label")
        sources.append(src)
    return sources, warns


def read_pred_probs(source, dataset, *, id: str | None = None) -> np.ndarray:
    """Read out-of-fold probabilities computed elsewhere (``--pred-probs FILE``).

    The file (CSV or Parquet) has one column per class, named by the class
    value exactly as in the label column (``benign``, ``malignant``; ``0``,
    ``1``; ``true``, ``false``), and optionally the id column: with ``id``
    rows are matched to the data by id, otherwise by position.  Any other
    column is an error (so a misspelt class never goes unnoticed), except
    the label column, which is ignored.

    Returns
    -------
    ndarray of shape (n_samples, n_classes)
        Columns in the order of ``dataset.classes``.

    Raises
    ------
    DataError
        Missing or extra class columns, a row count or ids that do not match
        the data, values outside [0, 1], NaN, or rows that do not sum to 1
        (within 0.01).
    """
    tbl, _, where = read_table(source, id_column=id)
    names = tbl.column_names
    by_key = {_key(c): i for i, c in enumerate(dataset.classes.tolist())}
    cols: dict[int, str] = {}
    extra = []
    for name in names:
        if name == id or name == dataset.label_name:
            continue
        code = by_key.get(_key(name), by_key.get(str(name).lower()))
        if code is None:
            extra.append(name)
        else:
            cols[code] = name
    classes = [str(_py(c)) for c in dataset.classes.tolist()]
    if extra:
        index = [c for c in extra if not str(c).strip() or str(c).startswith("Unnamed: ")]
        hint = (f"; {index[0]!r} looks like a pandas index written with the file: write it with index=False"
                if index else "")
        raise DataError(f"{where}: column(s) {', '.join(repr(str(c)) for c in extra[:6])} are not classes of "
                        f"label column '{dataset.label_name}' (expected one column per class: "
                        f"{', '.join(classes[:12])}{', and the id column' if id else ''}){hint}")
    absent = [classes[k] for k in range(dataset.n_classes) if k not in cols]
    if absent:
        raise DataError(f"{where}: no probability column for class(es) {', '.join(absent[:12])} "
                        f"(one column per class of label column '{dataset.label_name}')")
    P = np.column_stack([_numeric(tbl.column(cols[k]), where, cols[k]) for k in range(dataset.n_classes)])
    P = _align(tbl, P, dataset, id, where, "probabilities")
    return check_pred_probs(P, len(P), where=where)


def read_features(source, dataset, *, id: str | None = None, notes: list | None = None) -> np.ndarray:  # noqa: A002
    """Read features computed elsewhere (``--features FILE``: embeddings from an image or text
    model, say) to judge the labels by instead of the data's own columns.

    Every numeric column but the id (and the label, if present) is a feature,
    and a column of numeric vectors (list or fixed-size list per row, as
    embeddings are stored) is one feature per dimension, as in the data
    (:func:`flipguard.data._load.expand_vector_columns`); rows are matched to
    the data by ``id`` when given, otherwise by position.
    Unique integers in a column named like an identifier (pandas' unnamed
    index, ``idx``, ...) are row numbers, not embedding dimensions: left out,
    and named in ``notes`` (a list to append to) when given.

    Returns
    -------
    ndarray of shape (n_samples, n_features), float64
    """
    from ..data._load import expand_vector_columns

    tbl, _, where = read_table(source, id_column=id)
    tbl, imputed = expand_vector_columns(tbl, where, skip=(id, dataset.label_name))
    if notes is not None:
        notes.extend(imputed)
    cols = [c for c in tbl.column_names if c not in (id, dataset.label_name)]
    if not cols:
        raise DataError(f"{where}: no feature columns (only the id/label columns)")
    non_numeric = [c for c in cols if not (pa.types.is_integer(tbl.schema.field(c).type)
                                           or pa.types.is_floating(tbl.schema.field(c).type)
                                           or pa.types.is_boolean(tbl.schema.field(c).type))]
    if non_numeric:
        raise DataError(f"{where}: feature column(s) {', '.join(non_numeric[:6])} are not numeric "
                        "(--features takes numbers only, e.g. embeddings)")
    from ..data._leaks import is_row_identifier

    values = {c: _numeric(tbl.column(c), where, c) for c in cols}
    ids_like = [c for c in cols if is_row_identifier(values[c], c, tbl.column(c).null_count > 0)]
    if ids_like and len(ids_like) < len(cols):
        cols = [c for c in cols if c not in ids_like]
        if notes is not None:
            notes.extend(f"{where}: column '{c}' looks like a row identifier and is not used as a feature"
                         for c in ids_like)
    F = np.column_stack([values[c] for c in cols])
    F = _align(tbl, F, dataset, id, where, "features")
    if not np.all(np.isfinite(F)):
        bad = np.flatnonzero(~np.isfinite(F).all(axis=1))
        raise DataError(f"{where}: {len(bad)} row(s) have missing or non-finite features "
                        f"(first: data row {int(bad[0])})")
    return F


# -- helpers ---------------------------------------------------------------------------
class _MissingFeatures(DataError):
    """The trusted file lacks feature columns of the data."""


def _numeric(col, where: str, name: str) -> np.ndarray:
    try:
        return pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise DataError(f"{where}: column '{name}' is not numeric") from None


def _align(tbl: pa.Table, values: np.ndarray, dataset, id: str | None, where: str, what: str) -> np.ndarray:
    """Rows of ``values`` in the data's row order: by the id column, or by position."""
    if id is None:
        if tbl.num_rows != dataset.n_samples:
            raise DataError(f"{where}: {tbl.num_rows} rows of {what} for {dataset.n_samples} data rows "
                            "(rows are matched by position; give --id to match them by id)")
        return values
    if id not in tbl.column_names:
        raise DataError(f"{where}: id column '{id}' not found (columns: {', '.join(tbl.column_names[:12])})")
    col = tbl.column(id)
    if pc.count_distinct(col).as_py() != tbl.num_rows or col.null_count:
        raise DataError(f"{where}: id column '{id}' has missing or duplicated values")
    pos = _match_ids(col, dataset.ids)  # position in the data of each file row, -1 if absent
    found = np.full(dataset.n_samples, -1, dtype=np.int64)
    found[pos[pos >= 0]] = np.flatnonzero(pos >= 0)
    if (found < 0).any():
        lost = dataset.ids[found < 0]
        raise DataError(f"{where}: {int((found < 0).sum())} data row(s) have no {what} "
                        f"(ids {', '.join(map(str, lost[:5]))}{', ...' if len(lost) > 5 else ''})")
    return values[found]


def _py(value):
    return value.item() if hasattr(value, "item") else value


def _encode_like(col, dataset, where: str) -> np.ndarray:
    """Label codes of a trusted label column in the dataset's vocabulary (vectorised)."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if pa.types.is_dictionary(col.type):
        col = pc.cast(col, col.type.value_type)
    encoded = pc.dictionary_encode(col)
    lookup = {_key(c): i for i, c in enumerate(dataset.classes.tolist())}
    distinct = encoded.dictionary.to_pylist()
    codes = np.array([lookup.get(_key(v), -1) for v in distinct], dtype=np.int64)
    if (codes < 0).any():
        bad = [str(v) for v, c in zip(distinct, codes) if c < 0][:5]
        raise DataError(f"{where}: trusted label value(s) {', '.join(bad)} are not classes of "
                        f"{dataset.source} (classes: {', '.join(map(str, dataset.classes.tolist()))})")
    return codes[encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)]


def _key(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)).lower()
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _features_like(tbl: pa.Table, dataset, where: str) -> np.ndarray:
    from ..data._load import text_docs

    names = tbl.column_names
    n = tbl.num_rows
    out = np.empty((n, dataset.n_features), dtype=np.float64)
    missing = []
    tfidf = {}
    vectors: dict = {}
    for col, vec in getattr(dataset, "vectorizers", {}).items():
        if col not in names:
            missing.append(col)
            continue
        M = vec.transform(text_docs(tbl.column(col))).toarray()
        tfidf.update({f"{col}:{t}": M[:, k] for k, t in enumerate(vec.get_feature_names_out())})
    for j, fname in enumerate(dataset.feature_names):
        prefix = fname.split("=", 1)[0]
        if fname in dataset.encoding:
            if fname not in names:
                missing.append(fname)
                continue
            c = tbl.column(fname)
            if pa.types.is_temporal(c.type):
                c = pc.cast(pc.cast(c, pa.timestamp("s")) if pa.types.is_date(c.type) else c, pa.int64())
            try:
                vals = pc.cast(c, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                raise DataError(f"{where}: trusted column '{fname}' is not numeric like the data's") from None
            bad = ~np.isfinite(vals)
            if bad.any():
                vals[bad] = float(np.median(dataset.X[:, j]))
            out[:, j] = vals
        elif fname in tfidf:
            out[:, j] = tfidf[fname]
        elif "=" in fname and str(dataset.encoding.get(prefix, "")).startswith("one-hot"):
            col, cat = fname.split("=", 1)
            if col not in names:
                missing.append(col)
                continue
            c = pc.cast(tbl.column(col), pa.string())
            out[:, j] = np.asarray(pc.fill_null(pc.equal(c, cat), False).to_numpy(zero_copy_only=False),
                                   dtype=np.float64)
        elif fname.endswith("]") and str(dataset.encoding.get(fname[:fname.rfind("[")], "")).startswith("vector"):
            col, dim = fname[:fname.rfind("[")], int(fname[fname.rfind("[") + 1:-1])
            if col not in names:
                missing.append(col)
                continue
            if col not in vectors:
                from ..data._load import _encode_vectors

                block, cols, how = _encode_vectors(tbl.column(col).combine_chunks(), col)
                width = sum(1 for f in dataset.feature_names if f.startswith(f"{col}["))
                if block is None or block.shape[1] != width:
                    raise DataError(f"{where}: trusted column '{col}' is not a vector of {width} numbers like "
                                    f"the data's ({how if block is None else f'{block.shape[1]} dimensions'})")
                vectors[col] = block
            out[:, j] = vectors[col][:, dim]
        elif fname.split(":", 1)[0] in missing:
            continue
        else:
            raise DataError(f"{where}: trusted rows cannot be encoded like feature '{fname}'")
    if missing:
        uniq = list(dict.fromkeys(missing))
        raise _MissingFeatures(f"{where}: trusted file lacks feature column(s) {', '.join(uniq[:12])}")
    return out


def _match_ids(col, ids: np.ndarray) -> np.ndarray:
    t_ids = np.asarray(col.to_pylist(), dtype=object if ids.dtype == object else None)
    if ids.dtype != object:
        try:
            t_ids = t_ids.astype(ids.dtype)
        except (TypeError, ValueError):
            return np.full(len(t_ids), -1, dtype=np.int64)
    else:
        t_ids = t_ids.astype(str).astype(object)
        ids = ids.astype(str).astype(object)
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    pos = np.searchsorted(sorted_ids, t_ids)
    pos = np.clip(pos, 0, len(ids) - 1)
    hit = sorted_ids[pos] == t_ids
    return np.where(hit, order[pos], -1).astype(np.int64)


def _read_sheet(source, dataset):
    """``read_table`` for a trusted sheet; a CSV's id column is read as the text written."""
    import os

    from ..data._read import detect_format, is_postgres

    dictionary = None
    if dataset.id_name is not None and isinstance(source, (str, os.PathLike)) \
            and not is_postgres(os.fspath(source)) and detect_format(os.fspath(source)) == "csv":
        dictionary = [dataset.id_name]
    return read_table(source, dictionary=dictionary)


def _comparable_ids(col, dataset, where: str) -> tuple[pa.Array, np.ndarray]:
    """Trusted ids in the data's id type (an Arrow array) and as the user wrote them (for messages)."""
    from ..integrity._columns import integer_text_ids

    if not isinstance(col, (pa.Array, pa.ChunkedArray)):
        values = np.asarray(col, dtype=object).tolist()
        try:
            col = pa.array(values, from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):  # mixed types: compare as text
            col = pa.array([None if v is None else str(v) for v in values], type=pa.string())
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if pa.types.is_dictionary(col.type):
        col = pc.cast(col, col.type.value_type)
    if col.null_count:
        raise DataError(f"{where}: {col.null_count} trusted row(s) have no id")
    shown = np.asarray(col.to_pylist(), dtype=object)
    kind = dataset.ids.dtype.kind
    try:
        if kind in "iu":
            if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
                # spaces around a number do not make it text (the data's CSV reader ignores them too)
                col = integer_text_ids(pa.chunked_array([pc.utf8_trim_whitespace(col)])).combine_chunks()
            elif pa.types.is_floating(col.type) or pa.types.is_decimal(col.type):
                col = pc.cast(col, pa.int64())  # 104.0 is id 104 (an integer id column read as floats)
            if pa.types.is_integer(col.type):
                return pc.cast(col, pa.int64()), shown
        elif kind == "f" and (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
            return pc.cast(col, pa.float64()), shown
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    return pc.cast(col, pa.string()), shown  # text ids: exactly as written


def _note(notes: list | None, text: str) -> None:
    if notes is None:
        import warnings

        warnings.warn(text, UserWarning, stacklevel=3)
    else:
        notes.append(text)
