"""Reading audit inputs: the data (minus a reference-label column), trusted files, rules."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..data import from_table, read_table
from ..exceptions import DataError
from ._base import LabelSource, TrustedLabels, check_pred_probs
from ._rules import load_rules, reference_source, rule_sources

__all__ = ["audit_sources", "load_audit_data", "load_trusted", "read_features", "read_pred_probs"]


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
    tbl, fmt, where = read_table(source, table=table)
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


def load_trusted(source, dataset) -> TrustedLabels:
    """Read a file of verified rows (same columns as ``dataset``) into :class:`TrustedLabels`.

    Features are encoded exactly like the dataset's (numeric columns as
    numbers, one-hot columns against the dataset's categories; missing
    numbers take the dataset column's median).  When the dataset has an id
    column and the trusted file has it too, trusted rows are matched to
    data rows by id (``rows``); unmatched ones are extra verified examples.

    Text columns are encoded with the dataset's own TF-IDF vocabulary.

    Raises
    ------
    DataError
        Missing file or column, unknown label values, or an empty file.
    """
    tbl, _, where = read_table(source)
    if tbl.num_rows == 0:
        raise DataError(f"{where}: no trusted rows")
    if dataset.label_name not in tbl.column_names:
        raise DataError(f"{where}: label column '{dataset.label_name}' not found in the trusted file")
    col = tbl.column(dataset.label_name)
    if col.null_count:
        raise DataError(f"{where}: {col.null_count} trusted row(s) have no label")
    y = _encode_like(col, dataset, where)
    rows = None
    if dataset.id_name is not None and dataset.id_name in tbl.column_names:
        rows = _match_ids(tbl.column(dataset.id_name), dataset.ids)
    try:
        X = _features_like(tbl, dataset, where)
    except _MissingFeatures as exc:
        # A reviewer's sheet of ids and verified labels: the matched rows' features are the data's.
        if rows is None:
            raise DataError(f"{exc}; a file of just ids and verified labels needs --id (the data's id "
                            "column, also in the file) to match its rows") from None
        if (rows < 0).any():
            lost = tbl.column(dataset.id_name).to_numpy(zero_copy_only=False)[rows < 0]
            raise DataError(f"{where}: {int((rows < 0).sum())} trusted row(s) have ids that are not in "
                            f"{dataset.source} ({', '.join(map(str, lost[:5]))}{', ...' if len(lost) > 5 else ''}) "
                            "and the file has no feature columns to use them as extra examples: give "
                            "their features, or only rows of the data") from None
        X = dataset.X[rows]
        if hasattr(X, "toarray"):
            X = X.toarray()
    if getattr(dataset, "is_sparse", False):
        import scipy.sparse as sp

        X = sp.csr_matrix(X)
    return TrustedLabels(X=X, y=y, rows=rows)


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
    tbl, _, where = read_table(source)
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
        raise DataError(f"{where}: column(s) {', '.join(extra[:6])} are not classes of label column "
                        f"'{dataset.label_name}' (expected one column per class: {', '.join(classes[:12])}"
                        f"{', and the id column' if id else ''})")
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

    Every numeric column but the id (and the label, if present) is a feature;
    rows are matched to the data by ``id`` when given, otherwise by position.
    Unique integers in a column named like an identifier (pandas' unnamed
    index, ``idx``, ...) are row numbers, not embedding dimensions: left out,
    and named in ``notes`` (a list to append to) when given.

    Returns
    -------
    ndarray of shape (n_samples, n_features), float64
    """
    tbl, _, where = read_table(source)
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
