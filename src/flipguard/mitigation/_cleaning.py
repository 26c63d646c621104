"""``clean_dataset``: a cleaned copy of a :class:`~flipguard.data.LabeledDataset` and a change log."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from .._json import to_jsonable
from ..data import LabeledDataset
from ..data._leaks import CLEAN_WEIGHT_COLUMN
from ..detection import TrustedLabels
from ..exceptions import DataError, InvalidParameterError
from ..models import MODEL_NAMES
from ._robust import DEFAULT_DETECTOR, RobustClassifier

__all__ = ["CLEAN_MODES", "CleaningLog", "WEIGHT_COLUMN", "clean_dataset", "cleaned_table"]

#: Modes of :func:`clean_dataset` (the row-level strategies of :class:`RobustClassifier`).
CLEAN_MODES = ("drop", "relabel", "weight")
#: Column added by ``mode="weight"`` to the cleaned table.
WEIGHT_COLUMN = CLEAN_WEIGHT_COLUMN  # "flipguard_weight"


@dataclass(eq=False)
class CleaningLog:
    """What :func:`clean_dataset` changed, row by row, and why.

    Attributes
    ----------
    mode : {"drop", "relabel", "weight"}
    rows : ndarray of int
        Positions (0-based, in the input) of the changed rows, input order.
    ids : ndarray
        Their ids.
    old_labels : ndarray
        Their labels before cleaning.
    new_labels : ndarray of object
        Their labels after cleaning (None for a dropped row; unchanged for a
        down-weighted one).
    actions : ndarray of str
        ``"dropped"``, ``"relabelled"``, ``"reweighted"`` or ``"verified"``
        (a trusted label that differed from the data's label: always
        corrected, whatever the mode and the guard).
    scores : ndarray of float
        The audit's suspicion score of each changed row (higher = more
        suspicious; NaN where there was no audit).
    weights : ndarray of float or None
        ``mode="weight"``: the weight of **every** input row.
    n_rows : int
        Rows in the input.
    fallback : bool
        True when the guard refused the cleaning (only verified labels changed).
    reason : str
        The guard's decision, in words.
    audit : dict
        Summary of the audit (method, flagged, estimated flips, model quality).
    guard : dict or None
        Guard scores (see :attr:`RobustClassifier.guard_scores_`).
    warnings : list of str
    model : str
        The model trained for the guard and the cleaning (with
        ``model="auto"``: the audit's choice, e.g. ``"stack(0.5 knn+0.5 hgb)"``).
    """

    mode: str
    rows: np.ndarray
    ids: np.ndarray
    old_labels: np.ndarray
    new_labels: np.ndarray
    actions: np.ndarray
    scores: np.ndarray
    weights: np.ndarray | None
    n_rows: int
    fallback: bool
    reason: str
    audit: dict[str, Any] = field(default_factory=dict)
    guard: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    model: str = ""

    def _count(self, action: str) -> int:
        return int(np.count_nonzero(self.actions == action))

    @property
    def n_dropped(self) -> int:
        return self._count("dropped")

    @property
    def n_relabelled(self) -> int:
        return self._count("relabelled")

    @property
    def n_reweighted(self) -> int:
        return self._count("reweighted")

    @property
    def n_verified(self) -> int:
        return self._count("verified")

    def to_table(self) -> pa.Table:
        """One row per change: ``row, id, old_label, new_label, action, score`` (+ ``weight``)."""
        cols = {
            "row": pa.array(self.rows, type=pa.int64()),
            "id": _arrow(self.ids),
            "old_label": _arrow(self.old_labels),
            "new_label": _arrow(self.new_labels),
            "action": pa.array(self.actions.tolist(), type=pa.string()),
            "score": pa.array(self.scores, type=pa.float64()),
        }
        if self.weights is not None:
            cols["weight"] = pa.array(self.weights[self.rows], type=pa.float64())
        return pa.table(cols)

    def summary(self) -> dict[str, Any]:
        return {
            "mode": self.mode, "n_rows": self.n_rows, "n_changed": len(self.rows),
            "n_dropped": self.n_dropped, "n_relabelled": self.n_relabelled,
            "n_reweighted": self.n_reweighted, "n_verified": self.n_verified,
            "fallback": self.fallback, "reason": self.reason, "audit": self.audit,
            "guard": self.guard, "warnings": list(self.warnings), "model": self.model,
        }

    def to_dict(self, rows: bool = True) -> dict[str, Any]:
        out = self.summary()
        if rows:
            out["changes"] = self.to_table().to_pylist()
        return to_jsonable(out)

    def to_json(self, rows: bool = True, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(rows=rows), indent=indent)


def clean_dataset(dataset: LabeledDataset, mode: str = "drop", *, trusted=None, model="logreg",
                  detector=DEFAULT_DETECTOR, guard: bool = True, max_fraction: float = 0.5,
                  cv: int = 5, random_state=None, n_jobs=None) -> tuple[LabeledDataset, CleaningLog]:
    """A cleaned copy of ``dataset`` and a log of every change.

    Audits the labels and drops, relabels or down-weights the suspects exactly
    as :class:`RobustClassifier` would (same caps, same no-harm guard: when
    cleaning does not help on held-out data, nothing but verified labels
    changes and ``log.fallback`` is True).

    Parameters
    ----------
    dataset : LabeledDataset
    mode : {"drop", "relabel", "weight"}, default="drop"
        ``"drop"`` removes suspects, ``"relabel"`` gives them the audit's
        suggested label, ``"weight"`` keeps every row and puts a weight per
        row in ``log.weights`` (:func:`cleaned_table` adds it as a
        ``flipguard_weight`` column).
    trusted : TrustedLabels, dict, pyarrow Table or LabeledDataset, optional
        Verified labels: a :class:`~flipguard.detection.TrustedLabels` (e.g.
        from :func:`flipguard.detection.load_trusted`: rows of the data by
        position, plus extra verified rows), or labels matched to
        ``dataset`` by id: a mapping ``{id: label}``, or a table / dataset
        with the dataset's id and label columns.  Verified rows of the data
        are never cleaned, and one whose label differs from the data's is
        corrected (action ``"verified"``) in every mode; extra verified rows
        inform the audit and judge the guard (20 or more).
    model : str or classifier, default="logreg"
        ``"auto"`` lets the audit choose the model (as ``flipguard audit``
        does by default) and trains that one: a single member as the audit
        built it, a stack as the same soft-voting ensemble of its members
        with its weights (:func:`flipguard.models.auto_model`).  In
        ``mode="weight"`` a stack cannot be trained with sample weights
        (scikit-learn's ``VotingClassifier`` does not route them to its
        members' pipelines): the strongest member that takes them of them (largest stacking weight) is
        trained instead, or ``logreg`` if none does, and ``log.warnings``
        says so.
        ``log.model`` names the model trained.
    detector : str or detector, default="auto"
    guard : bool, default=True
    max_fraction : float, default=0.5
    cv : int, default=5
    random_state : int, RandomState instance or None
    n_jobs : int or None

    Returns
    -------
    cleaned : LabeledDataset
        Dropped rows removed / labels replaced; unchanged rows, ids and
        features as in the input (``mode="weight"``: the input with verified
        corrections only).
    log : CleaningLog

    Examples
    --------
    >>> from flipguard.data import make_sentiment_reviews
    >>> from flipguard.mitigation import clean_dataset
    >>> ds = make_sentiment_reviews(400, random_state=0)
    >>> cleaned, log = clean_dataset(ds, mode="relabel", random_state=0)
    >>> cleaned.n_samples == ds.n_samples and log.mode == "relabel"
    True
    """
    if not isinstance(dataset, LabeledDataset):
        raise DataError(f"clean_dataset needs a LabeledDataset (flipguard.data.load); "
                        f"got {type(dataset).__name__}")
    if mode not in CLEAN_MODES:
        raise InvalidParameterError(f"mode must be one of {', '.join(CLEAN_MODES)}; got {mode!r}")
    if mode == "weight" and dataset.table is not None and WEIGHT_COLUMN in dataset.table.column_names:
        raise DataError(_HAS_WEIGHTS)  # said before the audit, not after it
    n = dataset.n_samples
    y = dataset.y.copy()
    warnings: list[str] = []
    verified_rows, verified_codes, extra = _match_trusted(trusted, dataset, warnings)
    wrong = verified_rows[y[verified_rows] != verified_codes]
    y_fixed = y.copy()
    y_fixed[verified_rows] = verified_codes
    for_clf = None
    if len(verified_rows) or extra is not None:
        eX, ey = extra if extra is not None else (np.empty((0, dataset.n_features)), np.empty(0, np.int64))
        for_clf = TrustedLabels(X=np.vstack([dataset.X[verified_rows], eX]),
                                y=np.concatenate([verified_codes, ey]),
                                rows=np.concatenate([verified_rows, np.full(len(ey), -1)]))

    # The same audit ``flipguard audit`` runs (same model, method, folds and seed), so the
    # cleaning acts on the numbers the audit reports.
    from ..detection import audit_dataset

    # A class with fewer rows than folds (a stray value) is set aside by the audit and its rows
    # flagged for review; the other rows are audited and cleaned as usual.
    audit = audit_dataset(dataset, method=detector, model=model, cv=cv, trusted=for_clf,
                          random_state=random_state, n_jobs=n_jobs, embed=False)
    trained = model if isinstance(model, str) else type(model).__name__
    if model == "auto":  # train the model the audit chose
        model, trained = _audit_model(audit, mode, random_state, warnings, labels=y_fixed,
                                      sparse=not isinstance(dataset.X, np.ndarray) and hasattr(dataset.X, "tocsr"))
    clf = RobustClassifier(model, strategy=mode, detector=detector, guard=guard,
                           max_fraction=max_fraction, cv=cv, random_state=random_state, n_jobs=n_jobs)
    clf.fit(dataset.X, y_fixed, trusted=for_clf, audit=audit)
    rare = audit.details.get("rare_classes") or {}
    if rare:
        unjudged = np.asarray(audit.details.get("unjudged_rows", []), dtype=np.int64)
        warnings.append(
            "left as they are, for review: the " + ", ".join(f"{n} row(s) of class '{c}'" for c, n in rare.items())
            + f" (ids {', '.join(map(str, dataset.ids[unjudged[:5]]))}{' ...' if len(unjudged) > 5 else ''}),"
            " too few to judge out-of-fold (a stray value or a typo?)")
    scores = clf.audit_.scores if clf.audit_ is not None else np.full(n, np.nan)

    action = np.full(n, "", dtype=object)
    new_codes = y_fixed.copy()
    keep = np.ones(n, dtype=bool)
    action[wrong] = "verified"
    weights = None
    if not clf.fallback_:
        if mode == "drop":
            keep[clf.dropped_] = False
            action[clf.dropped_] = "dropped"
        elif mode == "relabel":
            new_codes[clf.relabelled_] = clf.new_labels_  # codes: clf was fitted on codes
            action[clf.relabelled_] = "relabelled"
        else:
            weights = np.asarray(clf.sample_weight_, dtype=np.float64)
    if mode == "weight" and weights is None:
        weights = np.ones(n)
    if weights is not None:
        action[(weights < 1.0) & (action == "")] = "reweighted"

    rows = np.flatnonzero(action != "")
    new_labels = dataset.classes[new_codes[rows]].astype(object)
    new_labels[action[rows] == "dropped"] = None
    audit = {}
    if clf.audit_ is not None:
        a = clf.audit_
        audit = {"method": a.method, "n_flagged": a.n_flagged, "estimated_flips": int(a.estimated_flips),
                 "model_quality": dict(a.model_quality), "warnings": list(a.warnings)}
    log = CleaningLog(
        mode=mode, rows=rows, ids=dataset.ids[rows], old_labels=dataset.classes[y[rows]],
        new_labels=new_labels, actions=action[rows].astype(str), scores=np.asarray(scores)[rows],
        weights=weights, n_rows=n, fallback=bool(clf.fallback_), reason=clf.reason_, audit=audit,
        guard=clf.guard_scores_, warnings=warnings, model=trained,
    )
    cleaned = dataset.with_labels(new_codes)
    if not keep.all():
        cleaned = cleaned.subset(keep)
    return cleaned, log


def _audit_model(audit, mode: str, random_state, warnings: list[str], *, sparse: bool = False,
                 labels=None):
    """-> (estimator, name): the model ``model="auto"`` chose in ``audit``, rebuilt to be trained.

    One member is built as the audit built it (``hgb`` with early stopping); several are the
    same soft-voting stack of the members with their weights (as
    :func:`flipguard.models.auto_model`).  Two exceptions, said in ``warnings``:

    * ``mode="weight"``: a ``VotingClassifier`` cannot route sample weights to its members'
      pipelines, so the stack's strongest member (largest weight) that takes sample weights
      is trained (``logreg`` if none does);
    * a label with a single row (a stray value the audit set aside): ``hgb`` trains without
      early stopping, whose stratified validation split needs two rows of every class.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier, VotingClassifier
    from sklearn.utils import check_random_state

    from ..models import auto_model_name, make_model
    from ._strategies import accepts_sample_weight

    quality = (audit.model_quality or {}) if audit is not None else {}
    members = list(quality.get("members") or [])
    weights = [float(w) for w in (quality.get("weights") or [1.0] * len(members))]
    if not members:  # an audit without a model choice: what the audit used
        name = quality.get("model")
        members, weights = ([name], [1.0]) if name in MODEL_NAMES else (["logreg"], [1.0])
    chosen = auto_model_name(members, weights)
    if mode == "weight" and len(members) > 1:
        ok = [(w, i) for i, (m, w) in enumerate(zip(members, weights)) if accepts_sample_weight(m)]
        best = members[max(ok)[1]] if ok else "logreg"
        warnings.append(f"the audit chose {chosen}; a stack cannot be trained with sample weights, so its "
                        f"strongest member that takes them, {best}, is the weighted model")
        members, weights = [best], [1.0]
    elif mode == "weight" and not accepts_sample_weight(members[0]):
        warnings.append(f"the audit chose {members[0]}, which takes no sample weights; logreg is the weighted model")
        members, weights = ["logreg"], [1.0]
    stray = labels is not None and len(labels) and np.bincount(np.asarray(labels, dtype=np.int64)).min() < 2
    if stray and "hgb" in members:
        warnings.append("hgb trains without early stopping here: a label with a single row cannot be split "
                        "for its validation set")

    def member(m):
        return HistGradientBoostingClassifier(early_stopping=not stray) if m == "hgb" else m

    name = auto_model_name(members, weights)
    if len(members) == 1:
        return (member(members[0]), name) if members[0] == "hgb" else (members[0], name)
    rs = check_random_state(random_state if isinstance(random_state, (int, np.integer)) else None)
    est = [(m, make_model(member(m), random_state=rs.randint(np.iinfo(np.int32).max), sparse=sparse))
           for m in members]
    return VotingClassifier(est, voting="soft", weights=weights), name


_HAS_WEIGHTS = (f"the data already has a column '{WEIGHT_COLUMN}' (the weights of an earlier clean in weight "
                "mode): clean the original data, or drop or rename that column")


def cleaned_table(cleaned: LabeledDataset, log: CleaningLog) -> pa.Table:
    """The cleaned data as a table with every input column (plus ``flipguard_weight`` for weights)."""
    tbl = cleaned.to_table()
    if log.weights is not None:
        if WEIGHT_COLUMN in tbl.column_names:
            raise DataError(_HAS_WEIGHTS)
        tbl = tbl.append_column(WEIGHT_COLUMN, pa.array(log.weights, type=pa.float64()))
    return tbl


def _match_trusted(trusted, ds: LabeledDataset, warnings: list[str]):
    """-> (positions in ``ds`` of verified rows, their verified codes, extra rows ``(X, codes)`` or None)."""
    empty = np.array([], dtype=np.int64)
    if trusted is None:
        return empty, empty, None
    if isinstance(trusted, TrustedLabels):
        y_t = np.asarray(trusted.y, dtype=np.int64)
        rows = np.full(len(y_t), -1, dtype=np.int64) if trusted.rows is None \
            else np.asarray(trusted.rows, dtype=np.int64)
        if len(y_t) and (y_t.min() < 0 or y_t.max() >= ds.n_classes):
            raise DataError(f"trusted label codes must be in 0 .. {ds.n_classes - 1}")
        inside = rows >= 0
        extra = None
        if (~inside).any():
            X_t = np.asarray(trusted.X, dtype=np.float64)
            if X_t.ndim != 2 or X_t.shape[1] != ds.n_features:
                raise DataError(f"trusted rows must have the data's {ds.n_features} encoded features")
            extra = (X_t[~inside], y_t[~inside])
        return rows[inside], y_t[inside], extra
    if isinstance(trusted, dict):
        t_ids = np.array(list(trusted.keys()), dtype=object)
        t_labels = np.array(list(trusted.values()), dtype=object)
    else:
        if isinstance(trusted, LabeledDataset):
            t_ids, t_labels = trusted.ids, trusted.labels()
        elif isinstance(trusted, pa.Table):
            if ds.id_name is None:
                raise DataError("trusted labels are matched by id: load the data with an id column")
            for col in (ds.id_name, ds.label_name):
                if col not in trusted.column_names:
                    raise DataError(f"the trusted table has no column '{col}' "
                                    f"(columns: {', '.join(trusted.column_names)})")
            t_ids = trusted.column(ds.id_name)
            t_labels = trusted.column(ds.label_name).to_numpy(zero_copy_only=False)
        else:
            raise DataError(f"trusted must be a dict {{id: label}}, a pyarrow Table, a LabeledDataset "
                            f"or TrustedLabels; got {type(trusted).__name__}")
    if len(t_ids) == 0:
        return empty, empty, None
    from ..detection._io import match_trusted_ids  # the rule of every --trusted

    as_objects = np.asarray(t_labels, dtype=object)
    n_missing = int(np.count_nonzero(np.equal(as_objects, None) | (as_objects != as_objects)))  # None, NaN
    if n_missing:
        raise DataError(f"trusted labels: {n_missing} trusted row(s) have no label")
    codes = ds.encode_labels(_like(np.asarray(t_labels), ds.classes))
    kept, rows = match_trusted_ids(t_ids, codes, ds, where="trusted labels", notes=warnings,
                                   hint="; give only ids of the data")
    return rows, codes[kept], None


def _like(values: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Trusted label values in the dtype of the dataset's classes (CSV may read "1" for 1)."""
    if classes.dtype == object:
        return values.astype(object)
    try:
        return values.astype(classes.dtype)
    except (TypeError, ValueError):
        raise DataError(f"trusted labels {values[:3].tolist()} are not values of the label "
                        f"column (classes: {', '.join(map(str, classes))})") from None


def _py(value):
    return value.item() if hasattr(value, "item") else value


def _arrow(values) -> pa.Array:
    values = np.asarray(values)
    return pa.array(values.tolist() if values.dtype == object else values)
