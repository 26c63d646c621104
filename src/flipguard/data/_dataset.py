"""The object every layer of flipguard passes around: :class:`LabeledDataset`."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa

__all__ = ["LabeledDataset"]


@dataclass(frozen=True, eq=False)
class LabeledDataset:
    """Features, integer-coded labels and everything needed to speak the user's vocabulary.

    Attributes
    ----------
    X : ndarray or scipy.sparse.csr_matrix of shape (n_samples, n_features), float64
        Model-ready features (numeric columns as they are, categorical columns
        one-hot encoded, text columns as TF-IDF weights); sparse when loaded
        with ``sparse=True``.
    y : ndarray of shape (n_samples,), int64
        Label codes ``0 .. n_classes - 1``; ``classes[y]`` gives the original values.
    classes : ndarray of shape (n_classes,)
        The original label values, sorted.
    ids : ndarray of shape (n_samples,)
        Row identifiers: the id column's values, or the 0-based row position
        when no id column was given.
    feature_names : list of str
        One name per column of ``X`` (``"colour=red"`` for one-hot columns).
    label_name : str
        Name of the label column.
    id_name : str or None
        Name of the id column, if one was given.
    source : str
        Where the data came from (path, URL or a description).
    format : {"csv", "parquet", "table", "dataframe", "arrays", "postgresql"}
        The input's format; a poisoned copy is written in the same one.
    encoding : dict
        How each input column became features (``{"column": "numeric" |
        "one-hot" | "tfidf" | "bool" | "dropped: <reason>"}``) and any imputation.
    table : pyarrow.Table or None
        The table as read, so a poisoned or cleaned copy keeps every column.
    vectorizers : dict of str to TfidfVectorizer
        The fitted TF-IDF vectoriser of each text column, so other rows (a
        trusted file) can be encoded with the same vocabulary.
    """

    X: np.ndarray
    y: np.ndarray
    classes: np.ndarray
    ids: np.ndarray
    feature_names: list[str]
    label_name: str = "label"
    id_name: str | None = None
    source: str = "<arrays>"
    format: str = "arrays"
    encoding: dict[str, Any] = field(default_factory=dict)
    table: pa.Table | None = field(default=None, repr=False)
    vectorizers: dict[str, Any] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        """A one-screen summary (sizes, classes, encodings), never the arrays."""
        kind = "sparse" if self.is_sparse else "dense"
        counts = self.class_counts()
        shown = ", ".join(f"{c!s} {n}" for c, n in list(counts.items())[:8])
        more = f", ... ({len(counts)} classes)" if len(counts) > 8 else ""
        how: dict[str, list[str]] = {}
        for col, desc in self.encoding.items():
            desc = str(desc)
            if desc.startswith("dropped: "):
                how.setdefault("dropped", []).append(f"{col} ({desc[len('dropped: '):]})")
            else:
                how.setdefault(desc.split(" (")[0], []).append(col)
        encoded = "; ".join(f"{k}: {_names(v)}" for k, v in how.items())
        return "\n".join([
            f"LabeledDataset: {self.n_samples} rows x {self.n_features} features ({kind}) "
            f"from {self.source} ({self.format})",
            f"  label '{self.label_name}': {self.n_classes} classes ({shown}{more})",
            f"  ids: {repr(self.id_name) if self.id_name else 'row positions'}",
            f"  columns: {encoded or '-'}",
        ])

    @property
    def is_sparse(self) -> bool:
        """True when ``X`` is a scipy sparse matrix."""
        return not isinstance(self.X, np.ndarray) and hasattr(self.X, "tocsr")

    # -- sizes -------------------------------------------------------------
    @property
    def n_samples(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])

    @property
    def n_classes(self) -> int:
        return int(len(self.classes))

    def __len__(self) -> int:
        return self.n_samples

    # -- label vocabulary --------------------------------------------------
    def labels(self, codes: np.ndarray | None = None) -> np.ndarray:
        """Original label values for ``codes`` (default: the dataset's own labels)."""
        return self.classes[self.y if codes is None else np.asarray(codes)]

    def encode_labels(self, values) -> np.ndarray:
        """Codes of original label values; raises :class:`DataError` for unknown values."""
        from ..exceptions import DataError

        values = np.asarray(values)
        codes = np.searchsorted(self.classes, values)
        codes = np.clip(codes, 0, len(self.classes) - 1)
        bad = self.classes[codes] != values
        if np.any(bad):
            unknown = sorted({str(v) for v in values[bad]})[:5]
            raise DataError(
                f"label value(s) {', '.join(unknown)} are not classes of {self.source} "
                f"(classes: {', '.join(map(str, self.classes))})"
            )
        return codes.astype(np.int64)

    def class_counts(self, codes: np.ndarray | None = None) -> dict[Any, int]:
        counts = np.bincount(self.y if codes is None else codes, minlength=self.n_classes)
        return {_py(c): int(n) for c, n in zip(self.classes, counts)}

    # -- derived datasets --------------------------------------------------
    def with_labels(self, y_new: np.ndarray) -> "LabeledDataset":
        """A copy with other label codes (features, ids and source unchanged)."""
        y_new = np.asarray(y_new, dtype=np.int64)
        if y_new.shape != self.y.shape:
            raise ValueError("y_new must have one code per row")
        return replace(self, y=y_new)

    def subset(self, rows: np.ndarray) -> "LabeledDataset":
        """Rows ``rows`` (indices or boolean mask) as a new dataset."""
        rows = np.asarray(rows)
        table = self.table.take(pa.array(np.flatnonzero(rows) if rows.dtype == bool else rows)) if self.table is not None else None
        return replace(self, X=self.X[rows], y=self.y[rows], ids=self.ids[rows], table=table)

    def to_table(self, y: np.ndarray | None = None) -> pa.Table:
        """The input table with its label column replaced by the labels ``y`` (codes).

        The label column keeps its Arrow type, so a poisoned CSV/Parquet copy
        reads back exactly like the original.
        """
        from ._read import replace_label_column

        if self.table is None:
            cols = {name: self.X[:, j] for j, name in enumerate(self.feature_names)}
            table = pa.table({**({self.id_name: self.ids} if self.id_name else {}), **cols,
                              self.label_name: self.labels()})
        else:
            table = self.table
        return replace_label_column(table, self.label_name, self.labels(y))


def _names(cols: list[str], limit: int = 6) -> str:
    shown = ", ".join(cols[:limit])
    return shown + (f", ... ({len(cols)})" if len(cols) > limit else "")


def _py(value):
    """numpy scalar -> plain Python value (for JSON and dict keys)."""
    return value.item() if hasattr(value, "item") else value
