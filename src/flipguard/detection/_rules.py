"""Redundant label verification: business rules and a second, independent labeller."""

from __future__ import annotations

import os
from dataclasses import dataclass
from numbers import Real
from typing import Any

import numpy as np

from .._validation import Interval
from ..exceptions import DataError
from ._base import BaseDetector, LabelSource, _Findings, _Inputs, register

__all__ = ["Rule", "RuleEvidence", "load_rules", "reference_source", "rule_sources"]


@dataclass(frozen=True)
class Rule:
    """``when`` the condition holds, the label must be ``label``.

    Attributes
    ----------
    when : str
        A pandas expression over the table's columns, evaluated with
        :meth:`pandas.DataFrame.eval` (``"amount > 10000 and country == 'XX'"``;
        backquote column names with spaces: ```mean radius` > 20``).
    label : label value
        The label every selected row must have, in the user's vocabulary.
    name : str
        Shown next to every disagreement.
    """

    when: str
    label: Any
    name: str


def load_rules(source) -> list[Rule]:
    """Read rules from a YAML file (or a list of dicts).

    The file holds a list (or ``{"rules": [...]}``) of mappings with keys
    ``when`` (required), ``label`` (required) and ``name`` (optional)::

        - name: huge tumours are malignant
          when: "mean_radius > 25"
          label: malignant

    Raises
    ------
    DataError
        Missing file, bad YAML, or a rule without ``when``/``label``.
    """
    if isinstance(source, (str, os.PathLike)):
        yaml = _import("yaml", "pyyaml")
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise DataError(f"{path}: no such rules file")
        try:
            with open(path, encoding="utf-8") as fh:
                raw = yaml.safe_load(fh)
        except yaml.YAMLError as exc:
            first = str(exc).strip().splitlines()[0]
            raise DataError(f"{path}: not valid YAML ({first})") from None
        where = path
    else:
        raw, where = source, "rules"
    if isinstance(raw, dict) and "rules" in raw:
        raw = raw["rules"]
    if not isinstance(raw, list) or not raw:
        raise DataError(f"{where}: expected a non-empty list of rules "
                        "({when: <condition>, label: <value>, name: <text>})")
    rules = []
    for i, item in enumerate(raw, start=1):
        if not isinstance(item, dict) or "when" not in item or "label" not in item:
            raise DataError(f"{where}: rule {i} needs 'when' and 'label' keys")
        unknown = sorted(set(item) - {"when", "label", "name"})
        if unknown:
            raise DataError(f"{where}: rule {i} has unknown key(s) {', '.join(unknown)} "
                            "(allowed: when, label, name)")
        if not isinstance(item["when"], str) or not item["when"].strip():
            raise DataError(f"{where}: rule {i}: 'when' must be a non-empty expression string")
        rules.append(Rule(when=item["when"], label=item["label"],
                          name=str(item.get("name") or f"rule {i}")))
    return rules


def rule_sources(table, rules, classes) -> list[LabelSource]:
    """One :class:`LabelSource` per rule: the rule's label code where its condition holds.

    Parameters
    ----------
    table : pyarrow.Table or pandas.DataFrame
        The audited table (all columns, input row order).
    rules : list of Rule
    classes : array-like
        The label values, in code order.
    """
    pd = _import("pandas", "pandas")
    df = table if isinstance(table, pd.DataFrame) else table.to_pandas()
    out = []
    for rule in rules:
        code = _label_code(rule.label, classes, f"rule {rule.name!r}")
        try:
            hit = df.eval(rule.when)
        except Exception as exc:  # noqa: BLE001 - pandas raises many types for a bad expression
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataError(f"rule {rule.name!r}: cannot evaluate {rule.when!r}: {msg}") from None
        if np.ndim(hit) == 0 or len(hit) != len(df):
            raise DataError(f"rule {rule.name!r}: {rule.when!r} is not a per-row condition")
        mask = pd.Series(hit).fillna(False).to_numpy()
        if mask.dtype != bool:
            raise DataError(f"rule {rule.name!r}: {rule.when!r} does not give true/false per row")
        out.append(LabelSource(rule.name, np.where(mask, code, -1).astype(np.int64), kind="rule"))
    return out


def reference_source(values, classes, name: str) -> tuple[LabelSource, int]:
    """A second labeller's column as a :class:`LabelSource`.

    Parameters
    ----------
    values : pyarrow array / chunked array or array-like
        The reference labels, one per row.
    classes : array-like
        The audited labels' values, in code order.
    name : str

    Missing values and values that are not classes of the audited labels
    mean "no opinion".  Returns ``(source, n_unknown)`` where ``n_unknown``
    counts non-missing values that are not known classes.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    col = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(
        np.asarray(values).tolist())
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if pa.types.is_dictionary(col.type):
        col = pc.cast(col, col.type.value_type)
    if pa.types.is_floating(col.type):
        col = pc.if_else(pc.is_nan(col), pa.scalar(None, col.type), col)
    encoded = pc.dictionary_encode(col)
    dictionary = encoded.dictionary.to_pylist()
    lookup = {_key(c): i for i, c in enumerate(np.asarray(classes).tolist())}
    mapping = np.array([lookup.get(_key(v), -1) for v in dictionary] + [-1], dtype=np.int64)
    idx = encoded.indices.fill_null(len(dictionary)).to_numpy(zero_copy_only=False).astype(np.int64)
    codes = mapping[idx]
    unknown = int(np.count_nonzero((codes < 0) & (idx < len(dictionary))))
    return LabelSource(name, codes, kind="reference"), unknown


@register("rules")
class RuleEvidence(BaseDetector):
    """Flag rows where an independent label source disagrees with the label.

    Redundant verification: business rules (``--rules``) and a second
    labeller (``--reference-label``) are compared with the observed labels.
    No model is involved.

    Score: the weighted share of the sources with an opinion on the row that
    disagree with its label (rules weigh ``rule_weight``, a reference
    labeller ``reference_weight``); 0 where no source has an opinion.
    Flags: rows where the disagreeing weight exceeds the agreeing weight.
    Suggested label: the label the disagreeing sources expect (the most
    weighted one).  ``method="auto"`` uses the same sources as one part of
    its combined evidence.

    Parameters
    ----------
    rule_weight : float, default=1.0
    reference_weight : float, default=0.5
    """

    _parameter_constraints = {
        "rule_weight": [Interval(Real, 0, None, closed="left")],
        "reference_weight": [Interval(Real, 0, None, closed="left")],
    }
    needs_pred_probs = False

    def __init__(self, *, rule_weight=1.0, reference_weight=0.5):
        self.rule_weight = rule_weight
        self.reference_weight = reference_weight

    def _audit(self, inputs: _Inputs) -> _Findings:
        if not inputs.sources:
            raise DataError("method 'rules' needs rules or a reference-label column")
        votes, weight = source_votes(inputs.sources, inputs.n_samples, inputs.n_classes,
                                     self.rule_weight, self.reference_weight)
        labels = inputs.labels
        rows = np.arange(len(labels))
        agree = votes[rows, labels]
        masked = votes.copy()
        masked[rows, labels] = -1.0
        other = np.argmax(masked, axis=1)
        against = weight - agree
        scores = np.where(weight > 0, against / np.where(weight > 0, weight, 1.0), 0.0)
        flags = masked[rows, other] > agree
        suggested = np.where(flags, other, labels)
        return _Findings(scores=scores, flags=flags, suggested=suggested,
                         components={"evidence": scores})


def source_votes(sources, n: int, n_classes: int, rule_weight: float,
                 reference_weight: float) -> tuple[np.ndarray, np.ndarray]:
    """Weighted votes ``(n, K)`` of the sources and the total weight per row."""
    votes = np.zeros((n, n_classes))
    rows = np.arange(n)
    for s in sources:
        w = rule_weight if s.kind == "rule" else reference_weight
        has = s.expected >= 0
        np.add.at(votes, (rows[has], s.expected[has]), w)
    return votes, votes.sum(axis=1)


def _label_code(value, classes, what: str) -> int:
    classes = np.asarray(classes)
    for i, c in enumerate(classes.tolist()):
        if c == value and type(c) is not bool or (isinstance(c, bool) and c is value):
            return i
    for i, c in enumerate(classes.tolist()):
        if _key(c) == _key(value):
            return i
    raise DataError(f"{what}: label {value!r} is not a class of the data "
                    f"(classes: {', '.join(map(str, classes.tolist()))})")


def _key(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _import(module: str, package: str):
    try:
        return __import__(module)
    except ImportError:
        raise DataError(f"rules need the '{package}' package: pip install 'flipguard[rules]'") from None
