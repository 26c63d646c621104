"""The result of every detector: :class:`LabelAudit`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._json import to_jsonable

__all__ = ["LabelAudit"]


@dataclass(eq=False)
class LabelAudit:
    """Which labels look flipped, how many, between which classes, and what they should be.

    Every detector returns one (see :func:`flipguard.detection.find_flipped_labels`
    and :class:`flipguard.detection.LabelAuditor`).  Arrays are aligned with the
    audited rows, in input order; labels are integer codes ``0 .. K-1`` and
    ``classes`` maps them back to the user's values.

    Attributes
    ----------
    method : str
        Registry name of the detector that produced the audit (``"auto"``,
        ``"confident_learning"``, ...).
    labels : ndarray of int, shape (n_samples,)
        The observed (possibly flipped) label codes that were audited.
    scores : ndarray of float, shape (n_samples,)
        Suspicion score in ``[0, 1]``: **higher = more likely flipped**.  Only
        the order is meaningful across detectors; each detector documents
        its own score.
    flags : ndarray of bool, shape (n_samples,)
        True for rows the detector calls flipped.
    suggested_codes : ndarray of int, shape (n_samples,)
        The most likely true label code of every row.  Always different from
        ``labels`` where ``flags`` is True; may differ on unflagged rows too
        (a weaker suspicion).  :attr:`suggested` gives the same in the
        user's label values.
    estimated_flips : int
        Estimated number of flipped labels in the data.  Not always equal to
        ``flags.sum()``: confident learning, for instance, flags fewer rows
        than it estimates are wrong.
    transitions : ndarray of int, shape (n_classes, n_classes)
        ``transitions[i, j]`` is the estimated number of rows whose **true**
        class is ``i`` and whose **observed** label is ``j`` (rows = true
        class, columns = observed label; the off-diagonal entries are flips
        "from i to j" and sum to ``estimated_flips``; each column sums to
        the observed count of that label).
    classes : ndarray or None
        The user's label values for codes ``0 .. K-1`` (None: codes are used).
    ids : ndarray or None
        Row identifiers (None: 0-based row positions).
    model_quality : dict
        How well the out-of-fold predictions that judged the labels agree
        with the observed labels: ``model``, ``cv``, ``accuracy``,
        ``balanced_accuracy``, ``chance`` (balanced accuracy of guessing,
        ``1/K``) and ``usable`` (False when the model is too weak to judge
        labels: its flags and estimate are then withheld and a warning says so).
    warnings : list of str
        Anything the user should know before trusting the audit.
    evidence : list of dict
        One summary per independent source of labels (``--rules`` rules, a
        reference labeller's column, a trusted set): ``name``, ``kind``,
        ``n_applicable``, ``n_disagree``.
    disagreements : list of dict
        One entry per (row, source) where an independent source disagrees
        with the observed label: ``row``, ``source``, ``expected`` (code).
    components : dict of str to ndarray
        The per-row scores a combined detector combined (``"model"``,
        ``"knn"``, ``"trusted"``, ``"evidence"``...), each higher = more suspicious.
    embedding : ndarray of shape (n_samples, 2) or None
        2-D coordinates of every row for plotting (raw features when there
        are two, else the first two principal components), set by
        :class:`~flipguard.detection.LabelAuditor` and the CLI.
    embedding_axes : list of str
        Names of the two embedding axes.
    params : dict
        The detector's parameters, for the record.
    verdict : dict
        The dataset-level answer (``method="auto"``; empty for detectors
        without one): ``status`` (``"poisoned"``, ``"consistent with clean
        labels"``, ``"inconclusive"`` or ``"labels inconsistent with
        features: possible heavy poisoning"``), ``reason`` (one sentence),
        ``alpha`` (the test's false-alarm rate), ``p_value``, ``fdr`` (target
        false-discovery rate of the likely-flipped rows),
        ``estimated_flips``, ``clean_estimate`` / ``clean_estimate_upper``
        (mean and 95th percentile of the estimate on clean labels),
        ``confident_estimate``, ``n_likely``, ``n_ambiguous`` and the
        noise model's parameters.
    likely : ndarray of bool or None
        Flagged rows in the FDR-controlled *likely flipped* set; flagged
        rows outside it are *ambiguous* (None: the detector makes no split).
    reason_codes : ndarray of uint16 or None
        Per row, a bit set of the evidence that flagged it: bit ``i`` is
        ``reason_names[i]`` (see :meth:`reasons`).
    reason_names : list of str
        Names of the reason bits.
    details : dict
        Detector-specific facts (e.g. ``"confident_estimate"``: confident
        learning's more conservative flip count; which evidence was used).
    """

    method: str
    labels: np.ndarray
    scores: np.ndarray
    flags: np.ndarray
    suggested_codes: np.ndarray
    estimated_flips: int
    transitions: np.ndarray
    classes: np.ndarray | None = None
    ids: np.ndarray | None = None
    model_quality: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    evidence: list[dict[str, Any]] = field(default_factory=list)
    disagreements: list[dict[str, Any]] = field(default_factory=list)
    components: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    embedding: np.ndarray | None = field(default=None, repr=False)
    embedding_axes: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    verdict: dict[str, Any] = field(default_factory=dict)
    likely: np.ndarray | None = field(default=None, repr=False)
    reason_codes: np.ndarray | None = field(default=None, repr=False)
    reason_names: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        """A one-screen summary, never the per-row arrays."""
        names = self.label_values(np.arange(self.n_classes))
        pairs = ", ".join(f"{t['from']}->{t['to']} {t['count']}" for t in self.transition_list()[:4])
        more = ", ..." if len(self.transition_list()) > 4 else ""
        q = self.model_quality or {}
        quality = (f"model {q.get('model')}: out-of-fold accuracy {q['accuracy']:.3f}, "
                   f"AUROC {q['auroc']:.3f}" if "accuracy" in q and "auroc" in q else "model: -")
        lines = [
            f"LabelAudit(method={self.method!r}): {self.n_flagged} of {self.n_samples} rows flagged, "
            f"estimated flips {self.estimated_flips} ({self.estimated_flip_rate:.1%})",
            f"  classes: {', '.join(map(str, names[:8]))}{', ...' if self.n_classes > 8 else ''}",
            f"  estimated flips (true->observed): {pairs + more or 'none'}",
            f"  {quality}",
        ]
        if self.evidence:
            lines.append("  evidence: " + ", ".join(f"{e['name']} ({e['n_disagree']} disagree)"
                                                    for e in self.evidence[:4]))
        lines.extend(f"  warning: {w[:160]}{'...' if len(w) > 160 else ''}" for w in self.warnings[:3])
        if len(self.warnings) > 3:
            lines.append(f"  ... {len(self.warnings) - 3} more warning(s)")
        return "\n".join(lines)

    # -- sizes ----------------------------------------------------------------
    @property
    def n_samples(self) -> int:
        return len(self.labels)

    @property
    def n_classes(self) -> int:
        return int(self.transitions.shape[0])

    @property
    def n_flagged(self) -> int:
        return int(np.count_nonzero(self.flags))

    @property
    def estimated_flip_rate(self) -> float:
        """``estimated_flips / n_samples``."""
        return float(self.estimated_flips / self.n_samples) if self.n_samples else 0.0

    @property
    def n_likely(self) -> int:
        """Flagged rows in the FDR-controlled *likely flipped* set (all flagged rows without a split)."""
        return self.n_flagged if self.likely is None else int(np.count_nonzero(self.likely & self.flags))

    @property
    def n_ambiguous(self) -> int:
        """Flagged rows outside the *likely flipped* set."""
        return self.n_flagged - self.n_likely

    def reasons(self) -> np.ndarray:
        """Per row, the evidence that flagged it as ``"a;b"`` (empty string for unflagged rows).

        Built once per distinct bit set, so it stays vectorised on millions of rows."""
        n = self.n_samples
        if self.reason_codes is None or not self.reason_names:
            return np.where(np.asarray(self.flags, dtype=bool), self.method, "").astype(object)
        codes = np.where(np.asarray(self.flags, dtype=bool), np.asarray(self.reason_codes, dtype=np.int64), 0)
        uniq, inverse = np.unique(codes, return_inverse=True)
        text = np.array([";".join(name for i, name in enumerate(self.reason_names) if c >> i & 1)
                         for c in uniq.tolist()], dtype=object)
        return text[inverse.reshape(n)] if n else np.array([], dtype=object)

    # -- rankings ---------------------------------------------------------------
    def ranking(self) -> np.ndarray:
        """Every row position, most suspicious first (ties keep input order)."""
        return np.argsort(-self.scores, kind="stable")

    @property
    def flagged_indices(self) -> np.ndarray:
        """Positions of the flagged rows, most suspicious first."""
        rows = np.flatnonzero(self.flags)
        return rows[np.argsort(-self.scores[rows], kind="stable")]

    def top(self, k: int) -> np.ndarray:
        """Positions of the ``k`` most suspicious rows, most suspicious first."""
        return self.ranking()[: max(0, int(k))]

    # -- vocabulary -------------------------------------------------------------
    def label_values(self, codes) -> np.ndarray:
        """The user's label values for ``codes`` (the codes themselves without ``classes``)."""
        codes = np.asarray(codes)
        return codes if self.classes is None else np.asarray(self.classes)[codes]

    @property
    def suggested(self) -> np.ndarray:
        """The most likely true label of every row, in the user's label values
        (:attr:`suggested_codes` holds the integer codes)."""
        return self.label_values(self.suggested_codes)

    @property
    def observed(self) -> np.ndarray:
        """The audited labels in the user's label values (:attr:`labels` holds the codes)."""
        return self.label_values(self.labels)

    def row_ids(self) -> np.ndarray:
        return np.arange(self.n_samples) if self.ids is None else np.asarray(self.ids)

    def transition_list(self) -> list[dict[str, Any]]:
        """Off-diagonal transitions with a non-zero count, largest first:
        ``[{"from": true value, "to": observed value, "count": n}, ...]``."""
        t = np.asarray(self.transitions)
        i, j = np.nonzero(t)
        keep = i != j
        i, j = i[keep], j[keep]
        order = np.lexsort((j, i, -t[i, j]))
        names = self.label_values(np.arange(self.n_classes))
        return [{"from": _py(names[a]), "to": _py(names[b]), "count": int(t[a, b])}
                for a, b in zip(i[order], j[order])]

    # -- output -----------------------------------------------------------------
    def to_table(self):
        """Per-row results as a :class:`pyarrow.Table` in input order:
        ``row, id, label, suggested_label, score, flagged, likely, reasons``
        (``likely``: flagged and in the FDR-controlled likely-flipped set;
        ``reasons``: the evidence that flagged the row, ``;``-separated)."""
        import pyarrow as pa

        def col(values):
            values = np.asarray(values)
            return pa.array(values.tolist() if values.dtype == object else values)

        return pa.table({
            "row": pa.array(np.arange(self.n_samples, dtype=np.int64)),
            "id": col(self.row_ids()),
            "label": col(self.label_values(self.labels)),
            "suggested_label": col(self.suggested),
            "score": pa.array(np.asarray(self.scores, dtype=np.float64)),
            "flagged": pa.array(np.asarray(self.flags, dtype=bool)),
            "likely": pa.array(np.asarray(self.flags, dtype=bool) if self.likely is None
                               else np.asarray(self.likely & self.flags, dtype=bool)),
            "reasons": pa.array(self.reasons().tolist(), type=pa.string()),
        })

    def to_arrow(self):
        """Per-row results as a :class:`pyarrow.Table` (same as :meth:`to_table`)."""
        return self.to_table()

    def to_pandas(self):
        """Per-row results as a :class:`pandas.DataFrame` (``row, id, label,
        suggested_label, score, flagged, likely, reasons``; pandas is imported only here)."""
        return self.to_table().to_pandas()

    def rows(self) -> list[dict[str, Any]]:
        """Per-row results as a list of dicts (see :meth:`to_table`)."""
        return self.to_table().to_pylist()

    def summary(self) -> dict[str, Any]:
        """Everything but the per-row table, as plain JSON-ready values."""
        ids = self.row_ids()
        return to_jsonable({
            "method": self.method,
            "n_rows": self.n_samples,
            "n_flagged": self.n_flagged,
            "n_likely": self.n_likely,
            "n_ambiguous": self.n_ambiguous,
            "verdict": self.verdict,
            "estimated_flips": int(self.estimated_flips),
            "estimated_flip_rate": self.estimated_flip_rate,
            "classes": None if self.classes is None else list(self.label_values(np.arange(self.n_classes))),
            "transitions": self.transition_list(),
            "model_quality": self.model_quality,
            "warnings": list(self.warnings),
            "evidence": self.evidence,
            "disagreements": [
                {"row": int(d["row"]), "id": _py(ids[d["row"]]), "source": d["source"],
                 "label": _py(self.label_values(self.labels[d["row"]])),
                 "expected": _py(self.label_values(d["expected"]))}
                for d in self.disagreements
            ],
            "params": self.params,
            "details": self.details,
        })

    def to_dict(self, rows: bool = True) -> dict[str, Any]:
        """:meth:`summary` plus, with ``rows=True``, ``"rows"``: every row as
        ``{row, id, label, suggested_label, score, flagged, likely, reasons}`` in input order."""
        out = self.summary()
        if rows:
            out["rows"] = to_jsonable(self.rows())
        return out

    def to_json(self, rows: bool = True, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(rows=rows), indent=indent)


def _py(value):
    return value.item() if hasattr(value, "item") else value
