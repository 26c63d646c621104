"""Row-exact comparison of two labellings of (roughly) the same rows.

The engine behind verify, diff and the ledger.  Rows are matched by id:

1. **Fast path** -- the current ids equal the sealed ids in the same order
   (one vectorised comparison): labels are compared position by position.
2. **Fallback** -- rows were reordered, added or removed: both id columns are
   mapped to shared dense integer keys (an offset for compact integer ids,
   Arrow's hash ``dictionary_encode`` otherwise; no sort) and matched through
   one scatter/gather, which also finds added, removed and duplicated ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .._arrow import from_numpy, to_numpy, type_family
from ._columns import Ids, class_counts, dense_keys, ids_equal, map_codes, reconcile, take_chunked
from ._stats import balance_drift, change_shape, label_text, transition_list

__all__ = ["LabelChanges"]


@dataclass(frozen=True)
class Side:
    """One labelling: ids, codes over ``classes``, and (optionally) original row numbers."""

    ids: Ids
    codes: np.ndarray
    classes: list
    rows: np.ndarray | None = None  # original 0-based row numbers when rows were dropped (missing ids)
    unique: bool = False  # ids known to be unique (a seal guarantees it)
    counts: np.ndarray | None = None  # class counts aligned with classes, when already known


@dataclass(frozen=True)
class Alignment:
    """How rows of ``after`` match rows of ``before``.

    ``a2b[i]`` is the ``before`` position of ``after`` row ``i`` (-1: added);
    ``None`` on the fast path, where row ``i`` matches row ``i``.
    """

    by: str  # "position" (fast path) or "id"
    a2b: np.ndarray | None
    all_matched: bool
    added: np.ndarray  # positions in after with an id before lacks
    removed: np.ndarray  # positions in before with an id after lacks
    dup_after: tuple[np.ndarray, np.ndarray]  # (first position, count) per duplicated id in after
    dup_before: tuple[np.ndarray, np.ndarray]

    def pairs(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(after_rows, before_rows)`` of matched rows; ``None`` on the fast path."""
        if self.a2b is None:
            return None
        if self.all_matched:
            return np.arange(len(self.a2b)), self.a2b
        rows = np.flatnonzero(self.a2b >= 0)
        return rows, self.a2b[rows]


_EMPTY = np.zeros(0, np.int64)


def _dups(keys: np.ndarray, size: int, seen: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(first position, count) of each key occurring more than once; no bincount when none does."""
    if len(keys) < 2 or (seen is not None and int(np.count_nonzero(seen)) == len(keys)):
        return _EMPTY, _EMPTY
    counts = np.bincount(keys, minlength=size)
    hit = counts[keys] > 1
    if not hit.any():
        return _EMPTY, _EMPTY
    pos = np.flatnonzero(hit)
    _, first = np.unique(keys[pos], return_index=True)
    first_pos = np.sort(pos[first])
    return first_pos, counts[keys[first_pos]]


def _seen(keys: np.ndarray, size: int) -> np.ndarray:
    seen = np.zeros(size, dtype=bool)
    seen[keys] = True
    return seen


def align(before: Side, after: Side) -> Alignment:
    """Match rows by id: one vectorised comparison when nothing moved, else one scatter/gather."""
    nb, na = len(before.ids), len(after.ids)
    if ids_equal(before.ids, after.ids):
        dup = (_EMPTY, _EMPTY)
        if not before.unique and na > 1:
            (keys,), size = dense_keys(after.ids)
            dup = _dups(keys, size, _seen(keys, size))
        return Alignment("position", None, True, _EMPTY, _EMPTY, dup, dup)
    b_ids, a_ids = reconcile(before.ids, after.ids)
    (kb, ka), size = dense_keys(b_ids, a_ids)
    pos_t = np.int32 if max(nb, na, size) < 2**31 - 1 else np.int64
    pos_b = np.full(size, -1, dtype=pos_t)
    pos_b[kb] = np.arange(nb, dtype=pos_t)
    a2b = pos_b[ka]
    del pos_b
    seen_a = _seen(ka, size)
    added = np.flatnonzero(a2b < 0)
    return Alignment(
        "id", a2b, all_matched=len(added) == 0, added=added,
        removed=np.flatnonzero(~seen_a[kb]),
        dup_after=_dups(ka, size, seen_a),
        dup_before=(_EMPTY, _EMPTY) if before.unique else _dups(kb, size, _seen(kb, size)))


@dataclass(frozen=True)
class LabelChanges:
    """Every difference between two labellings, row by row, with their statistics.

    Row numbers are 0-based positions in the data as read (the CSV line is
    ``row + 2`` with a header).  ``before``/``after`` mean sealed/current for
    :class:`VerifyReport` and old/new for :class:`DiffReport`.

    Attributes
    ----------
    classes : list
        Every label value seen on either side (text; ``None`` = missing).
    n_before, n_after : int
        Rows on each side.
    aligned_by : {"position", "id"}
        ``"position"`` when the ids were identical and in the same order.
    changed : dict of lists
        ``row``, ``id``, ``before``, ``after`` of each row whose label changed.
    added, removed : dict of lists
        ``row``, ``id``, ``label`` of rows whose id is only after / only before.
    duplicated, duplicated_before : dict of lists
        ``id``, ``count`` of ids occurring more than once after / before.
    counts_before, counts_after : ndarray
        Class counts, aligned with ``classes``.
    transitions : ndarray of shape (n_classes, n_classes)
        ``transitions[i, j]`` rows changed from ``classes[i]`` to ``classes[j]``.
    balance : dict
        Class-balance drift test (see :func:`flipguard.integrity._stats.balance_drift`).
    shape : dict
        Concentrated-or-spread reading of the transitions (``change_shape``).
    """

    classes: list
    n_before: int
    n_after: int
    aligned_by: str
    changed: dict
    added: dict
    removed: dict
    duplicated: dict
    duplicated_before: dict
    counts_before: np.ndarray
    counts_after: np.ndarray
    transitions: np.ndarray
    balance: dict = field(default_factory=dict)
    shape: dict = field(default_factory=dict)

    @property
    def n_changed(self) -> int:
        return len(self.changed["row"])

    @property
    def n_added(self) -> int:
        return len(self.added["row"])

    @property
    def n_removed(self) -> int:
        return len(self.removed["row"])

    @property
    def n_duplicated(self) -> int:
        return len(self.duplicated["id"])

    @property
    def identical(self) -> bool:
        """No label changed, no row added or removed, no id duplicated."""
        return not (self.n_changed or self.n_added or self.n_removed or self.n_duplicated
                    or len(self.duplicated_before["id"]))

    def class_counts(self) -> list[dict]:
        return [{"label": c, "before": int(b), "after": int(a), "change": int(a) - int(b)}
                for c, b, a in zip(self.classes, self.counts_before, self.counts_after)]

    def findings(self, before: str = "sealed", after: str = "current") -> list[str]:
        """One plain line per kind of difference."""
        out = []
        if self.n_before and self.n_after and self.n_added == self.n_after:
            out.append(f"no id of the {after} data is in the {before} data: is it the same dataset?")
        if self.n_changed:
            pairs = ", ".join(f"{t['count']} {label_text(t['from'])} -> {label_text(t['to'])}"
                              for t in transition_list(self.transitions, self.classes)[:3])
            out.append(f"{self.n_changed} label(s) changed ({pairs})")
        if self.n_added:
            out.append(f"{self.n_added} row(s) added (ids not in the {before} data)")
        if self.n_removed:
            out.append(f"{self.n_removed} row(s) removed (ids of the {before} data missing)")
        if self.n_duplicated:
            out.append(f"{self.n_duplicated} id(s) duplicated in the {after} data")
        if len(self.duplicated_before["id"]):
            out.append(f"{len(self.duplicated_before['id'])} id(s) duplicated in the {before} data")
        if self.balance.get("drifted"):
            s = self.balance["largest_shift"]
            out.append(f"class balance drifted (chi-square p = {self.balance['p_value']:.2g}; "
                       f"{label_text(s['label'])} {s['before']:.1%} -> {s['after']:.1%})")
        return out

    def to_dict(self, before: str = "before", after: str = "after") -> dict:
        ch = self.changed
        return {
            "aligned_by": self.aligned_by,
            f"rows_{before}": self.n_before, f"rows_{after}": self.n_after,
            "n_changed": self.n_changed, "n_added": self.n_added, "n_removed": self.n_removed,
            "n_duplicated": self.n_duplicated,
            "changed": {"row": ch["row"], "id": ch["id"], before: ch["before"], after: ch["after"]},
            "added": dict(self.added), "removed": dict(self.removed),
            "duplicated": dict(self.duplicated),
            **({f"duplicated_{before}": dict(self.duplicated_before)} if len(self.duplicated_before["id"]) else {}),
            "class_counts": [{"label": r["label"], before: r["before"], after: r["after"], "change": r["change"]}
                             for r in self.class_counts()],
            "transitions": transition_list(self.transitions, self.classes),
            "balance": self.balance, "shape": self.shape,
        }



def _rows(side: Side, positions: np.ndarray) -> list[int]:
    return (side.rows[positions] if side.rows is not None else positions).tolist()




def compare(before: Side, after: Side) -> tuple[LabelChanges, Alignment]:
    """Compare two labellings; returns the changes and how the rows were matched.

    On the fast path (same ids, same order) the cost is one id comparison and
    one label-code comparison; class counts come from ``before.counts`` and the
    changed rows, without another pass.
    """
    classes, after_codes = map_codes(after.classes, after.codes, before.classes)
    before_codes = before.codes
    k = len(classes)
    al = align(before, after)
    if al.by == "position":
        ch_a = ch_b = np.flatnonzero(before_codes != after_codes)
    elif al.all_matched:
        ch_a = np.flatnonzero(before_codes[al.a2b] != after_codes)
        ch_b = al.a2b[ch_a].astype(np.int64)
    else:
        rows_a, rows_b = al.pairs()
        differ = before_codes[rows_b] != after_codes[rows_a]
        ch_a, ch_b = rows_a[differ], rows_b[differ].astype(np.int64)
    labels = np.array(classes, dtype=object)
    old, new = before_codes[ch_b].astype(np.int64), after_codes[ch_a].astype(np.int64)
    transitions = np.bincount(old * k + new, minlength=k * k).reshape(k, k)
    counts_before = np.zeros(k, np.int64)
    counts_before[:len(before.classes)] = before.counts if before.counts is not None \
        else class_counts(before_codes, len(before.classes))
    if al.by == "position":
        counts_after = counts_before - transitions.sum(axis=1) + transitions.sum(axis=0)
    else:
        counts_after = class_counts(after_codes, k)
    added_labels = labels[after_codes[al.added]].tolist()
    removed_labels = labels[before_codes[al.removed]].tolist()
    changed_before, changed_after = labels[old].tolist(), labels[new].tolist()
    keep = (counts_before > 0) | (counts_after > 0)
    if not keep.all():  # values listed in a dictionary that no row uses
        classes = [c for c, kp in zip(classes, keep) if kp]
        counts_before, counts_after = counts_before[keep], counts_after[keep]
        transitions = transitions[np.ix_(keep, keep)]
    changes = LabelChanges(
        classes=classes, n_before=len(before_codes), n_after=len(after_codes), aligned_by=al.by,
        changed={"row": _rows(after, ch_a), "id": after.ids.take(ch_a),
                 "before": changed_before, "after": changed_after},
        added={"row": _rows(after, al.added), "id": after.ids.take(al.added), "label": added_labels},
        removed={"row": _rows(before, al.removed), "id": before.ids.take(al.removed), "label": removed_labels},
        duplicated={"id": after.ids.take(al.dup_after[0]), "count": al.dup_after[1].tolist()},
        duplicated_before={"id": before.ids.take(al.dup_before[0]), "count": al.dup_before[1].tolist()},
        counts_before=counts_before, counts_after=counts_after, transitions=transitions,
        balance=balance_drift(counts_before, counts_after, classes),
        shape=change_shape(transitions, counts_before, classes),
    )
    return changes, al


# -- feature columns -------------------------------------------------------------
def column_changes(before: pa.ChunkedArray, after: pa.ChunkedArray, al: Alignment,
                   before_side: Side, after_side: Side) -> dict:
    """Rows (matched by id) whose value in a sealed feature column changed.

    Values are compared as the typed values a reader gets, never through a
    lossy cast: like the label column, a column whose type family changed
    (``integer`` -> ``string``, ``float64`` -> ``float32``, ``integer`` ->
    ``boolean``, ...; :func:`flipguard._arrow.type_family`) has *every*
    matched row changed, and the result carries ``type``: ``{"sealed",
    "current"}``.  Storage that changes no value (``int64`` -> ``int32``,
    ``string`` -> ``large_string`` or dictionary-encoded text) is not a change.
    """
    pairs = al.pairs()
    if pairs is None:
        b, a = before, after
        rows_a = None
    else:
        rows_a, rows_b = pairs
        b = take_chunked(before, rows_b)
        a = take_chunked(after, rows_a)
    sealed_type, current_type = type_family(before.type), type_family(after.type)
    typed = {} if sealed_type == current_type else {"type": {"sealed": sealed_type, "current": current_type}}
    if len(b) == 0:
        return {"row": [], "id": [], "before": [], "after": [], **typed}
    if typed:  # another type: no value reads the same to a typed reader
        differ = np.arange(len(b))
    else:
        differ = _differ_same_family(_plain_values(b), _plain_values(a))
    pos_a = differ if rows_a is None else rows_a[differ]
    return {"row": _rows(after_side, pos_a), "id": after_side.ids.take(pos_a),
            "before": _take(b, differ), "after": _take(a, differ), **typed}


def _plain_values(col):
    """Dictionary-encoded values decoded (``type_family`` already treats them as their value type)."""
    if pa.types.is_dictionary(col.type):
        return pc.cast(col, col.type.value_type)
    return col


def _common_type(tb: pa.DataType, ta: pa.DataType) -> pa.DataType | None:
    """A type both sides convert to without changing any value (same type family), or None."""
    if tb == ta:
        return tb
    if pa.types.is_integer(tb) and pa.types.is_integer(ta):
        if pa.types.is_unsigned_integer(tb) and pa.types.is_unsigned_integer(ta):
            return pa.uint64()
        if tb == pa.uint64() or ta == pa.uint64():
            return pa.decimal128(20, 0)  # holds every int64 and every uint64
        return pa.int64()
    if pa.types.is_decimal(tb) and pa.types.is_decimal(ta):  # same scale (same family)
        return pa.decimal256(76, tb.scale)
    text = (pa.types.is_string, pa.types.is_large_string)
    if any(f(tb) for f in text) and any(f(ta) for f in text):
        return pa.large_string()
    binary = (pa.types.is_binary, pa.types.is_large_binary, pa.types.is_fixed_size_binary)
    if any(f(tb) for f in binary) and any(f(ta) for f in binary):
        return pa.large_binary()
    return None


def _differ_same_family(b, a) -> np.ndarray:
    """Positions whose values differ, two columns of one type family (no value-changing cast)."""
    common = _common_type(b.type, a.type)
    try:
        if common is None:
            raise pa.ArrowNotImplementedError("no common type")
        b, a = pc.cast(b, common), pc.cast(a, common)  # safe casts: a lossy one raises
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        # rare types (string_view, ...): compare the Python values, exactly
        bl, al_ = b.to_pylist(), a.to_pylist()
        return np.flatnonzero([not (x == y or (x != x and y != y)) or type(x) is not type(y)
                               for x, y in zip(bl, al_)])
    same = pc.fill_null(pc.equal(b, a), False)
    same = pc.or_(same, pc.and_(pc.is_null(b), pc.is_null(a)))
    if pa.types.is_floating(b.type):
        same = pc.or_(same, pc.fill_null(pc.and_(pc.is_nan(b), pc.is_nan(a)), False))
    return np.flatnonzero(~np.asarray(to_numpy(same), dtype=bool))


def _take(col, positions: np.ndarray) -> list:
    if not len(positions):
        return []
    return (take_chunked(col, positions) if isinstance(col, pa.ChunkedArray)
            else col.take(from_numpy(positions))).to_pylist()
