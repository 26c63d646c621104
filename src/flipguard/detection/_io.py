"""Reading audit inputs: the data (minus a reference-label column), trusted files, rules."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..data import from_table, read_table
from ..exceptions import DataError
from ._base import LabelSource, TrustedLabels
from ._rules import load_rules, reference_source, rule_sources

__all__ = ["audit_sources", "load_audit_data", "load_trusted"]


def load_audit_data(source, *, label: str, id: str | None = None,
                    reference_label: str | None = None, table: str | None = None):
    """Load data to audit; a reference-label column is kept out of the features.

    Returns a :class:`~flipguard.data.LabeledDataset` whose ``table`` still
    holds every column (rules may refer to any of them).
    """
    tbl, fmt, where = read_table(source, table=table)
    if reference_label is not None and reference_label not in tbl.column_names:
        raise DataError(f"{where}: reference-label column '{reference_label}' not found "
                        f"(columns: {', '.join(tbl.column_names[:12])})")
    if reference_label is not None and reference_label == label:
        raise DataError("the reference-label column must differ from the label column")
    features = None
    if reference_label is not None:
        features = [c for c in tbl.column_names if c not in (label, id, reference_label)]
    return from_table(tbl, label=label, id=id, features=features, source=where, format=fmt)


def load_trusted(source, dataset) -> TrustedLabels:
    """Read a file of verified rows (same columns as ``dataset``) into :class:`TrustedLabels`.

    Features are encoded exactly like the dataset's (numeric columns as
    numbers, one-hot columns against the dataset's categories; missing
    numbers take the dataset column's median).  When the dataset has an id
    column and the trusted file has it too, trusted rows are matched to
    data rows by id (``rows``); unmatched ones are extra verified examples.

    Raises
    ------
    DataError
        Missing file or column, unknown label values, a text feature (TF-IDF
        features cannot be re-encoded), or an empty file.
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
    X = _features_like(tbl, dataset, where)
    rows = None
    if dataset.id_name is not None and dataset.id_name in tbl.column_names:
        rows = _match_ids(tbl.column(dataset.id_name), dataset.ids)
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


# -- helpers ---------------------------------------------------------------------------
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
    names = tbl.column_names
    n = tbl.num_rows
    out = np.empty((n, dataset.n_features), dtype=np.float64)
    missing = []
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
        elif "=" in fname and str(dataset.encoding.get(prefix, "")).startswith("one-hot"):
            col, cat = fname.split("=", 1)
            if col not in names:
                missing.append(col)
                continue
            c = pc.cast(tbl.column(col), pa.string())
            out[:, j] = np.asarray(pc.fill_null(pc.equal(c, cat), False).to_numpy(zero_copy_only=False),
                                   dtype=np.float64)
        else:  # TF-IDF terms of a text column: the vectoriser is not kept
            raise DataError(f"{where}: trusted rows cannot be encoded like feature '{fname}' "
                            "(text columns are not supported with --trusted)")
    if missing:
        uniq = list(dict.fromkeys(missing))
        raise DataError(f"{where}: trusted file lacks feature column(s) {', '.join(uniq[:12])}")
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
