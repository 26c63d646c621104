"""Diff: label changes between two versions of a dataset, and the shape of those changes.

Core API (in memory)::

    report = diff_tables(old_table, new_table, label="y", id="row_id")
    report.changes.shape["reading"]   # concentrated in one class pair, or spread out?

``diff(old_source, new_source, label=, id=)`` reads only the id and label
columns of two files, URLs or tables.  No manifest or key is involved: diff
answers "what changed and does it look like an attack", verify answers "is
this still what was sealed".
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pyarrow as pa

from ..exceptions import InvalidParameterError
from ._columns import class_counts, drop_unused, label_codes, normalize_ids, type_family
from ._compare import LabelChanges, Side, compare
from ._source import ROW_ID, check_columns, check_positional, read_keyed

__all__ = ["DiffReport", "diff", "diff_tables"]


@dataclass(frozen=True)
class DiffReport:
    """Label changes from ``old`` to ``new`` (see :class:`LabelChanges`, ``before`` = old).

    Attributes
    ----------
    old, new : str
        The two versions compared.
    label, id : str
        Column names.
    changes : LabelChanges
        Changed, added, removed and duplicated rows, class counts, class-to-class
        ``transitions``, balance drift test and the ``shape`` reading.
    findings : list of str
    """

    old: str
    new: str
    label: str
    id: str
    changes: LabelChanges
    findings: list = field(default_factory=list)
    label_type: dict = field(default_factory=dict)

    @property
    def identical(self) -> bool:
        """Same labels row by row, and the label column's type family unchanged."""
        return self.changes.identical and self.label_type.get("old") == self.label_type.get("new")

    def to_dict(self) -> dict:
        return {"identical": self.identical, "old": self.old, "new": self.new, "label": self.label,
                "id": self.id, "findings": list(self.findings), "label_type": dict(self.label_type),
                **self.changes.to_dict("old", "new")}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False, default=str)


def _side(tbl: pa.Table, label: str, id: str, where: str) -> Side:
    ids = normalize_ids(tbl.column(id), what=f"{where}: id column '{id}'")
    values, codes = label_codes(tbl.column(label))
    values, codes, counts = drop_unused(values, codes, class_counts(codes, len(values)))
    return Side(ids, codes, values, counts=counts)


def diff_tables(old: pa.Table, new: pa.Table, *, label: str, id: str,
                old_name: str = "old", new_name: str = "new") -> DiffReport:
    """Compare the labels of two in-memory tables row by row (matched by id).

    Returns
    -------
    DiffReport

    Examples
    --------
    >>> import pyarrow as pa
    >>> from flipguard.integrity import diff_tables
    >>> old = pa.table({"id": [1, 2, 3, 4], "y": ["a", "b", "a", "b"]})
    >>> new = pa.table({"id": [4, 3, 2, 1], "y": ["b", "b", "b", "a"]})
    >>> r = diff_tables(old, new, label="y", id="id")
    >>> r.changes.changed["id"], r.changes.changed["before"], r.changes.changed["after"]
    ([3], ['a'], ['b'])
    """
    if label == id:
        raise InvalidParameterError(f"label and id must be different columns (both are '{label}')")
    check_columns(old.column_names, [id, label], old_name)
    check_columns(new.column_names, [id, label], new_name)
    changes, _ = compare(_side(old, label, id, old_name), _side(new, label, id, new_name))
    findings = changes.findings("old", "new")
    types = {"old": type_family(old.column(label).type), "new": type_family(new.column(label).type)}
    if types["old"] != types["new"]:
        findings.append(f"the label column '{label}' changed type: {types['old']} -> {types['new']}")
    return DiffReport(old_name, new_name, label, id, changes, findings, types)


def diff(old, new, *, label: str, id: str | None, table: str | None = None,
         query: str | None = None) -> DiffReport:
    """Compare the labels of two files, URLs or tables (only id and label columns are read).

    ``id=None`` (files only) matches rows by their 0-based position: an inserted or
    deleted row then shifts every row after it."""
    if id is None:
        check_positional(old, table, query)
        check_positional(new, table, query)
        id = ROW_ID  # noqa: A001
    old_tbl, old_where = read_keyed(old, id, [], label=label, table=table, query=query)
    new_tbl, new_where = read_keyed(new, id, [], label=label, table=table, query=query)
    return diff_tables(old_tbl, new_tbl, label=label, id=id, old_name=old_where, new_name=new_where)
