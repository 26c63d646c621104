"""Feature columns that would blind a model-based audit: row identifiers and columns carrying the label.

An audit judges each label by what a model learns from the *other* columns.
A column that encodes the observed label itself -- a row number in a file
sorted by label (``df.sort_values("label").to_csv(...)`` writes the index
too), an auto-increment id or a load timestamp in such a file -- lets every
model learn the observed labels, flips included, and the audit then finds
nothing: on breast cancer with 10 % random flips, sorted by label, one index
column takes the default audit from F1 0.93 to 0 and its verdict to
"consistent with clean labels".  Sorting is also something an attacker who
controls a preprocessing step can do on purpose.

Two checks, both on the encoded columns:

* :func:`is_row_identifier` -- unique integers in a column named like an
  identifier (``id``, ``user_id``, ``idx``, ``row_number``, ``index``,
  pandas' unnamed index).  Never a feature: dropped.
* :func:`determines_label` -- the observed label is a step function of the
  column: ordered by the column, the rows fall into at most ``2 K`` runs of
  one label (``K`` classes), up to a tolerance of 0.1 % of the rows.  When the
  column also follows the row order (a position, a sequence number, a load
  time of a label-sorted file) it is dropped; otherwise it is kept and
  named, because a label defined by a rule on that column (``adult = age >=
  18``) looks the same as a copy of the label.
"""

from __future__ import annotations

import re

import numpy as np

__all__ = ["CLEAN_WEIGHT_COLUMN", "DETERMINES", "determines_label", "follows_row_order", "is_row_identifier", "label_columns",
           "leak_notes", "looks_like_id_name"]

#: The column ``flipguard clean --mode weight`` adds: weights made from the audit of the labels, so
#: never a feature of a later audit or model (they would tell it which labels were suspected).
CLEAN_WEIGHT_COLUMN = "flipguard_weight"

#: The suffix of ``LabeledDataset.encoding`` for a kept column that determines the observed label.
DETERMINES = "; determines the observed label on its own"

#: Both checks need at least this many rows (on fewer, chance separations are common).
MIN_ROWS = 50
#: The label check runs on at most this many rows (a seeded sample keeps the row order).
SAMPLE_ROWS = 20_000
#: Rows a near-determining column may get wrong, as a share of the rows checked.
TOLERANCE = 0.001

_ID_NAME = re.compile(r"(?i)(|#|index|idx|level_0|unnamed:\s*\d+|id|key|no|nr|num|number|seq|sequence|serial|"
                      r"row(_?(id|idx|num|no|nr|number|index))?|"
                      r".*[_\s.\-](id|idx|index|no|nr|num|number|seq|key))")
_CAMEL_ID = re.compile(r".*[a-z0-9]I[dD]")


def looks_like_id_name(name: str) -> bool:
    """``id``, ``user_id``, ``userId``, ``row_number``, ``index``, pandas' unnamed index (``""``,
    ``"Unnamed: 0"``); not ``paid`` or ``valid``."""
    return bool(_ID_NAME.fullmatch(name.strip()) or _CAMEL_ID.fullmatch(name.strip()))


def is_row_identifier(values: np.ndarray, name: str, has_missing: bool) -> bool:
    """Unique integers in a column named like an identifier (:func:`looks_like_id_name`).

    Unique consecutive integers under another name (``x = 0 .. n-1``) are
    not taken for an identifier: a day number is a feature too.  When they
    number the rows of a label-sorted file, :func:`determines_label` and
    :func:`follows_row_order` catch them."""
    n = len(values)
    if n < MIN_ROWS or has_missing or not looks_like_id_name(name):
        return False
    if not np.all(np.isfinite(values)) or not np.array_equal(values, np.round(values)):
        return False
    return len(np.unique(values)) == n


def sample_rows(n: int) -> np.ndarray:
    """The rows both checks look at: all of them, or a seeded sample in row order."""
    if n <= SAMPLE_ROWS:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, SAMPLE_ROWS, replace=False))


def determines_label(key: np.ndarray, y: np.ndarray, n_classes: int) -> bool:
    """Is the observed label (codes ``y``) a step function of ``key``, up to 0.1 % of the rows?

    Rows ordered by ``key``; rows with equal keys form a group that should
    carry one label (rows outside the group's majority count as errors),
    and the groups' majority labels may change at most ``2 * n_classes - 1``
    times (two more per tolerated error).  Every class needs at least 5
    rows, the tolerance is at most 5 % of the smallest class, and the step
    function must name more than one class, or a column would "determine" a
    label that is nearly constant.
    """
    n = len(y)
    counts = np.bincount(y, minlength=n_classes)
    present = counts[counts > 0]
    if n < MIN_ROWS or len(present) < 2 or present.min() < 5:
        return False
    tol = int(min(TOLERANCE * n, 0.05 * present.min()))
    order = np.argsort(key, kind="stable")
    k, yy = key[order], y[order]
    start = np.empty(n, dtype=bool)
    start[0] = True
    np.not_equal(k[1:], k[:-1], out=start[1:])
    group = np.cumsum(start) - 1
    n_groups = int(group[-1]) + 1
    if n_groups < 2:
        return False
    table = np.bincount(group * n_classes + yy, minlength=n_groups * n_classes).reshape(n_groups, n_classes)
    errors = n - int(table.max(axis=1).sum())
    if errors > tol:
        return False
    majority = table.argmax(axis=1)
    runs = 1 + int(np.count_nonzero(majority[1:] != majority[:-1]))
    return 2 <= runs <= 2 * n_classes + 2 * tol


def follows_row_order(key: np.ndarray, n_classes: int) -> bool:
    """Does the column rise (or fall) with the row position, as a sequence number or a load time
    does?  It must also take more than ``2 * n_classes`` values: a copy of the label in a file
    sorted by label rises with the rows too, but it is a copy, not a position."""
    d = np.diff(key)
    if not len(d) or not np.any(d != 0) or not (np.all(d >= 0) or np.all(d <= 0)):
        return False
    return 1 + int(np.count_nonzero(d)) > 2 * n_classes


def label_columns(encoding: dict) -> list[str]:
    """Columns used as features that determine the observed label on their own."""
    return [c for c, how in encoding.items() if str(how).endswith(DETERMINES)]


def leak_notes(encoding: dict) -> list[str]:
    """One sentence per column these checks left out or marked, for stderr and reports."""
    out = []
    for col, how in encoding.items():
        how = str(how)
        name = f"column '{col}'" if col.strip() else "the unnamed column (an index written by pandas' to_csv)"
        flag = col if col.strip() and " " not in col else repr(col)
        if how.startswith("dropped: row identifier"):
            out.append(f"{name} looks like a row identifier ({how.split('(', 1)[1][:-1]}) and is not used as "
                       f"a feature; --id {flag} reports rows by it, --keep {flag} uses it anyway")
        elif how.startswith("dropped: weights of flipguard clean"):
            out.append(f"{name} holds the weights of an earlier `flipguard clean --mode weight`, made from "
                       f"the labels' audit: it is not used as a feature (--keep {flag} uses it anyway)")
        elif how.startswith("dropped: rises with the row order"):
            out.append(f"{name} rises with the row order and the observed label changes with it (the file "
                       "looks sorted by label): a model would read every label, flips included, off that "
                       f"column, so it is not used as a feature (--keep {flag} uses it anyway)")
        elif how.endswith(DETERMINES):
            out.append(f"{name} on its own determines the observed label: if it is a copy of the label or "
                       "was made from it, the flips it carries are invisible to any model that uses it; if "
                       "the label is a rule on this column, that is expected")
    return out
