"""The detector protocol, its registry, and the independent evidence detectors can use.

A detector is a small scikit-learn-style object: parameters in ``__init__``,
one public method :meth:`BaseDetector.audit` that checks the inputs and calls
the subclass's private ``_audit`` hook, and a :class:`~flipguard.detection.LabelAudit`
back.  Detectors are registered under a name (``--method`` on the command line).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from numbers import Real
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from threadpoolctl import threadpool_limits

from .._registry import Registry
from .._validation import Interval, validate_params
from ..exceptions import DataError
from ._audit import LabelAudit

__all__ = [
    "DETECTORS",
    "BaseDetector",
    "LabelSource",
    "TrustedLabels",
    "detector_names",
    "make_detector",
    "model_quality",
    "register",
]

#: name -> detector class; filled by :func:`register`.
DETECTORS = Registry("detection method", "detector_name")
register = DETECTORS.register
detector_names = DETECTORS.names


def make_detector(name: str, **params) -> BaseDetector:
    """An unconfigured detector by registry name, e.g. ``make_detector("knn", n_neighbors=10)``."""
    return DETECTORS.make(name, **params)


# -- independent evidence ---------------------------------------------------------
@dataclass
class TrustedLabels:
    """A small set of rows whose labels were verified by a trusted party.

    Attributes
    ----------
    X : ndarray of shape (n_trusted, n_features)
        Features of the trusted rows, encoded like the audited data.
    y : ndarray of int, shape (n_trusted,)
        Verified label codes.
    rows : ndarray of int, shape (n_trusted,) or None
        Position of each trusted row in the audited data, ``-1`` for a trusted
        row that is not part of it (None: none of them is).  Trusted rows
        that are part of the data are direct evidence: their observed label
        either matches the verified one or was flipped.
    """

    X: np.ndarray
    y: np.ndarray
    rows: np.ndarray | None = None

    @property
    def n_samples(self) -> int:
        return len(self.y)

    def in_data(self) -> tuple[np.ndarray, np.ndarray]:
        """``(positions in the data, verified codes)`` of the trusted rows that are in the data."""
        if self.rows is None:
            return np.array([], dtype=np.int64), np.array([], dtype=np.int64)
        rows = np.asarray(self.rows, dtype=np.int64)
        keep = rows >= 0
        return rows[keep], np.asarray(self.y, dtype=np.int64)[keep]


@dataclass
class LabelSource:
    """An independent opinion about the labels: a business rule or a second labeller.

    Attributes
    ----------
    name : str
        Shown in reports next to every disagreement (the rule's name, or
        ``"reference:<column>"``).
    expected : ndarray of int, shape (n_samples,)
        The label code the source expects for each row, ``-1`` where it has no opinion.
    kind : {"rule", "reference", "trusted"}
        A rule applies to the rows its condition selects; a reference
        labeller has an opinion on every row it labelled; ``"trusted"`` is
        the verified label of a trusted row that is part of the data (listed
        in a :class:`LabelAudit`'s evidence, never passed as a source).
    """

    name: str
    expected: np.ndarray
    kind: str = "rule"


# -- inputs -------------------------------------------------------------------------
@dataclass
class _Inputs:
    """Checked inputs handed to a detector's ``_audit`` hook."""

    labels: np.ndarray
    pred_probs: np.ndarray | None
    X: np.ndarray | None
    n_classes: int
    trusted: TrustedLabels | None
    sources: list[LabelSource]
    rng: np.random.RandomState
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_samples(self) -> int:
        return len(self.labels)


@dataclass
class _Findings:
    """What a detector's ``_audit`` hook returns; :class:`BaseDetector` fills the rest."""

    scores: np.ndarray
    flags: np.ndarray
    suggested: np.ndarray
    estimated_flips: int | None = None
    transitions: np.ndarray | None = None
    components: dict[str, np.ndarray] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    quality_probs: np.ndarray | None = None
    quality_name: str | None = None
    quality_usable: bool | None = None
    quality: dict[str, Any] | None = None
    details: dict[str, Any] = field(default_factory=dict)
    verdict: dict[str, Any] | None = None
    likely: np.ndarray | None = None
    reason_codes: np.ndarray | None = None
    reason_names: list[str] | None = None


def check_labels(labels, n_classes: int | None = None) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise DataError(f"labels must be 1-D, got shape {arr.shape}")
    if len(arr) == 0:
        raise DataError("labels is empty")
    if arr.dtype.kind not in "iub":
        if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise DataError("labels must be integer codes 0 .. K-1 (encode string labels first, "
                            "e.g. with flipguard.data.load or numpy.unique(..., return_inverse=True))")
    arr = arr.astype(np.int64, copy=False)
    if arr.min() < 0:
        raise DataError("labels must be integer codes 0 .. K-1; got a negative code")
    if n_classes is not None and arr.max() >= n_classes:
        raise DataError(f"labels has code {int(arr.max())} but pred_probs has only {n_classes} columns")
    return arr


#: How far a row of probabilities may stray from summing to 1 (and a value from [0, 1]) and still
#: be read as probabilities: published out-of-fold probabilities carry rounding of float32
#: softmaxes (IMDB's in Northcutt et al.'s label-errors release sum to 1.00002).  Beyond it the
#: input is refused (scores or logits, not probabilities).
PROBS_SUM_TOLERANCE = 0.01


def check_pred_probs(pred_probs, n_samples: int, *, where: str = "pred_probs") -> np.ndarray:
    """Out-of-fold probabilities as a float array of shape (n_samples, K), rows summing to 1.

    Rows within :data:`PROBS_SUM_TOLERANCE` of summing to 1 (values within it of [0, 1]) are
    clipped and renormalised; arrays within [0, 1] whose rows sum to 1 within 1e-5 (float32
    rounding) are returned untouched, so ``confident_learning`` flags exactly what cleanlab
    flags on the same array.
    """
    p = np.asarray(pred_probs)
    if p.ndim != 2 or p.shape[0] != n_samples:
        raise DataError(f"{where} must have shape (n_samples, n_classes) = ({n_samples}, K); "
                        f"got {p.shape}")
    if p.shape[1] < 2:
        raise DataError(f"{where} needs at least two columns (classes)")
    if p.dtype.kind != "f":
        p = p.astype(np.float64)
    if not np.all(np.isfinite(p)):
        bad = np.flatnonzero(~np.isfinite(p).all(axis=1))
        raise DataError(f"{where}: {len(bad)} row(s) have missing or non-finite probabilities "
                        f"(first: data row {int(bad[0])})")
    lo, hi = float(p.min()), float(p.max())
    if lo < -PROBS_SUM_TOLERANCE or hi > 1 + PROBS_SUM_TOLERANCE:
        raise DataError(f"{where}: probabilities must be in [0, 1] (found {lo:g} .. {hi:g}; "
                        "scores or logits need a softmax first)")
    sums = p.sum(axis=1)
    off = np.abs(sums - 1.0)
    if off.max() > PROBS_SUM_TOLERANCE:
        r = int(np.argmax(off))
        raise DataError(f"{where}: each row's probabilities must sum to 1; data row {r} sums to "
                        f"{sums[r]:.4g} ({int((off > PROBS_SUM_TOLERANCE).sum())} such row(s))")
    if lo < 0 or hi > 1 or off.max() > 1e-5:
        p = np.clip(p, 0.0, None)
        p = p / p.sum(axis=1, keepdims=True)
    return p


def check_features(X, what: str = "X"):
    """Features as a float64 ndarray, or a CSR matrix when ``X`` is scipy-sparse (kept sparse:
    TF-IDF features of a large corpus do not fit in memory densely).  Rejects NaN/inf."""
    if is_sparse(X):
        Xa = X.tocsr().astype(np.float64)
        values = Xa.data
    else:
        Xa = np.asarray(X, dtype=np.float64)
        values = Xa
    if not np.all(np.isfinite(values)):
        raise DataError(f"{what} contains NaN or infinite values")
    return Xa


def is_sparse(X) -> bool:
    """True for scipy sparse matrices and arrays."""
    return not isinstance(X, np.ndarray) and hasattr(X, "tocsr")


#: One-sided 1% critical value of the standard normal distribution.
_Z_USABLE = 2.33


def model_quality(labels: np.ndarray, probs: np.ndarray, *, model: str | None = None,
                  cv: int | None = None) -> dict[str, Any]:
    """How well out-of-fold predictions agree with the observed labels.

    Returns ``model``, ``cv``, ``accuracy``, ``balanced_accuracy``, ``chance``
    (``1/K``, the balanced accuracy of guessing), ``auroc`` (macro one-vs-rest
    area under the ROC curve of the probabilities, 0.5 = chance), and
    ``usable``.

    The labels are the observed, possibly flipped ones, so even a perfect
    model scores below 1 on flipped data (accuracy about ``1 - rate`` under
    random flips).  Accuracy and balanced accuracy depend on the 0.5
    threshold, which a model trained on imbalanced data rarely crosses for
    the rare class; the AUROC does not, so usability is judged from it: the
    model is *usable* for auditing when its AUROC beats 0.5 by at least 0.05
    and significantly: by ``2.33`` standard errors of the AUROC of a useless
    model (a one-sided test at the 1% level; standard error
    ``sqrt((n1 + n0 + 1) / (12 n1 n0))``, Hanley & McNeil 1982, for the
    smallest class against the rest).  Below that it cannot tell a flipped
    label from a hard one.  ``weak`` is True for a usable model with an
    AUROC below 0.6.
    """
    n_classes = probs.shape[1]
    pred = np.argmax(probs, axis=1)
    counts = np.bincount(labels, minlength=n_classes)
    hits = np.bincount(labels[pred == labels], minlength=n_classes)
    present = np.flatnonzero(counts > 0)
    recall = hits[present] / counts[present]
    aucs = []
    for c in present:
        pos = labels == c
        aucs.append(_auroc(pos, probs[:, c]))
        if n_classes == 2:
            break  # both columns give the same AUROC
    auroc = float(np.mean(aucs))
    n1 = int(counts[present].min())
    n0 = int(len(labels) - n1)
    se = float(np.sqrt((n1 + n0 + 1) / (12.0 * n1 * n0))) if n0 > 0 else 1.0
    usable = bool(auroc - 0.5 >= max(0.05, _Z_USABLE * se))
    return {
        "model": model,
        "cv": cv,
        "accuracy": float(np.mean(pred == labels)),
        "balanced_accuracy": float(recall.mean()),
        "chance": 1.0 / len(present),
        "auroc": auroc,
        "usable": usable,
        "weak": bool(usable and auroc < 0.6),
    }


def _auroc(positive: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve from the Mann-Whitney rank sum (ties get average ranks)."""
    from scipy.stats import rankdata

    n1 = int(np.count_nonzero(positive))
    n0 = len(positive) - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def flags_transitions(labels: np.ndarray, suggested: np.ndarray, flags: np.ndarray,
                      n_classes: int) -> np.ndarray:
    """``transitions[true, observed]`` counting flagged rows as ``suggested -> observed``
    and every other row as correctly labelled."""
    true = np.where(flags, suggested, labels)
    return np.bincount(true * n_classes + labels, minlength=n_classes * n_classes) \
        .reshape(n_classes, n_classes).astype(np.int64)


def best_other(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """For each row, the most probable class other than its label."""
    masked = np.array(probs, dtype=np.float64, copy=True)
    masked[np.arange(len(labels)), labels] = -np.inf
    return np.argmax(masked, axis=1)


# -- the protocol ---------------------------------------------------------------------
class BaseDetector(BaseEstimator):
    """Base class of every label-flip detector.

    Subclasses declare ``_parameter_constraints``, store parameters in
    ``__init__`` and implement ``_audit(inputs) -> _Findings``.  Class
    attributes ``needs_pred_probs``, ``needs_X`` and ``needs_trusted`` say
    which inputs a detector cannot work without.
    """

    _parameter_constraints: dict = {}
    detector_name = "base"
    needs_pred_probs = True
    needs_X = False
    needs_trusted = False

    def audit(self, labels, pred_probs=None, *, X=None, trusted: TrustedLabels | None = None,
              sources=(), classes=None, ids=None, quality: dict | None = None,
              random_state=None, refit=None, single_models=None, alternatives=None) -> LabelAudit:
        """Audit ``labels``.

        Parameters
        ----------
        labels : array-like of int, shape (n_samples,)
            Observed label codes ``0 .. K-1``.
        pred_probs : array-like of shape (n_samples, K), optional
            Out-of-sample predicted probabilities (each row predicted by a model
            that did not see it, e.g. :func:`flipguard.models.out_of_fold_proba`).
        X : array-like of shape (n_samples, n_features), optional
            Features, for detectors that look at neighbourhoods or refit models.
        trusted : TrustedLabels, optional
            Rows with verified labels.
        sources : sequence of LabelSource
            Independent opinions (rules, a second labeller).
        classes, ids : array-like, optional
            The user's label values (for codes) and row ids, kept on the result.
        quality : dict, optional
            Model-quality facts to record (``model``, ``cv``) along with the
            figures computed from ``pred_probs``.
        random_state : int, RandomState instance or None
            Seeds any random choice the detector makes (overrides its own
            ``random_state`` parameter when given).
        refit : callable, optional
            ``refit(drop, labels=None)`` returns out-of-sample probabilities
            like ``pred_probs`` from the same model trained without the rows of
            the boolean mask ``drop`` (or ``None``), on ``labels`` (codes) instead
            of the audited labels when given (:class:`LabelAuditor` passes one).
            A detector may use it to re-score once it has found an attack, or
            to rehearse one before it calls labels clean.  Its
            attribute ``seconds``, when set, is the projected cost of one call.
        single_models : tuple (rows, dict), optional
            Out-of-fold probabilities of single models (name -> array of
            shape (len(rows), K)) on the rows ``rows``, when ``pred_probs``
            pools several (:class:`LabelAuditor` passes its candidates'); a
            detector may check that evidence replicates in one of them.
        alternatives : callable, optional
            ``alternatives()`` returns ``(rows, {name: probs})``: out-of-fold
            probabilities of *other* models on the rows ``rows``, when
            ``pred_probs`` come from one named model (:class:`LabelAuditor`
            passes the ``model="auto"`` candidates; computed only when a
            detector calls it).  A detector may check that evidence read off
            the named model is also there in a model that fits the labels
            better.

        Returns
        -------
        LabelAudit
        """
        validate_params(self)
        # Our own matrix work is small; BLAS threads only fight other processes
        # (and the OpenMP pools of models) on a busy machine.
        with threadpool_limits(limits=1, user_api="blas"):
            inputs = self._check(labels, pred_probs, X, trusted, sources, classes, random_state)
            if refit is not None:
                inputs.extra["refit"] = refit
            if single_models is not None:
                inputs.extra["single_models"] = single_models
            if alternatives is not None:
                inputs.extra["alternatives"] = alternatives
            found = self._audit(inputs)
            return self._assemble(inputs, found, classes, ids, quality)

    # -- for subclasses --------------------------------------------------------------
    def _audit(self, inputs: _Inputs) -> _Findings:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- plumbing ----------------------------------------------------------------------
    def _check(self, labels, pred_probs, X, trusted, sources, classes, random_state) -> _Inputs:
        name = type(self).__name__
        if pred_probs is None and self.needs_pred_probs:
            raise DataError(f"{name} needs out-of-fold predicted probabilities (pred_probs)")
        if X is None and self.needs_X:
            raise DataError(f"{name} needs the features X")
        if trusted is None and self.needs_trusted:
            raise DataError(f"{name} needs a trusted set of verified labels (trusted=...)")
        labels = check_labels(labels)
        n = len(labels)
        p = None
        if pred_probs is not None:
            p = check_pred_probs(pred_probs, n)
            if labels.max() >= p.shape[1]:
                raise DataError(f"labels has code {int(labels.max())} but pred_probs has only "
                                f"{p.shape[1]} columns")
        n_classes = p.shape[1] if p is not None else (len(classes) if classes is not None
                                                         else int(labels.max()) + 1)
        if classes is not None and len(classes) != n_classes:
            raise DataError(f"classes has {len(classes)} values but there are {n_classes} classes")
        if np.count_nonzero(np.bincount(labels, minlength=n_classes)) < 2:
            raise DataError("labels has a single class; auditing needs at least two")
        Xa = None
        if X is not None:
            Xa = check_features(X)
            if Xa.ndim != 2 or Xa.shape[0] != n:
                raise DataError(f"X must be 2-D with one row per label; got shape {Xa.shape} "
                                f"for {n} labels")
        if trusted is not None:
            tX = check_features(trusted.X, "trusted.X")
            ty = check_labels(trusted.y)
            if tX.ndim != 2 or tX.shape[0] != len(ty):
                raise DataError("trusted.X must be 2-D with one row per trusted label")
            if Xa is not None and tX.shape[1] != Xa.shape[1]:
                raise DataError(f"trusted rows have {tX.shape[1]} features but the data has {Xa.shape[1]}")
            if ty.max() >= n_classes:
                raise DataError(f"trusted labels have code {int(ty.max())} but there are only {n_classes} classes")
            rows = None
            if trusted.rows is not None:
                rows = np.asarray(trusted.rows, dtype=np.int64)
                if rows.shape != ty.shape or rows.max(initial=-1) >= n:
                    raise DataError("trusted.rows must give one data position (or -1) per trusted row")
            trusted = TrustedLabels(X=tX, y=ty, rows=rows)
        checked = []
        for s in sources:
            exp = np.asarray(s.expected, dtype=np.int64)
            if exp.shape != labels.shape:
                raise DataError(f"label source {s.name!r} must give one expected code per row")
            if exp.max(initial=-1) >= n_classes:
                raise DataError(f"label source {s.name!r} expects a class that is not in the data")
            checked.append(LabelSource(s.name, exp, s.kind))
        seed = random_state if random_state is not None else getattr(self, "random_state", None)
        return _Inputs(labels=labels, pred_probs=p, X=Xa, n_classes=int(n_classes), trusted=trusted,
                       sources=checked, rng=check_random_state(seed))

    def _assemble(self, inputs: _Inputs, found: _Findings, classes, ids, quality) -> LabelAudit:
        labels, K = inputs.labels, inputs.n_classes
        flags = np.asarray(found.flags, dtype=bool)
        suggested = np.asarray(found.suggested, dtype=np.int64)
        transitions = found.transitions if found.transitions is not None \
            else flags_transitions(labels, suggested, flags, K)
        estimated = int(found.estimated_flips) if found.estimated_flips is not None \
            else int(transitions.sum() - np.trace(transitions))
        probs = found.quality_probs if found.quality_probs is not None else inputs.pred_probs
        mq = dict(quality or {})
        if probs is not None:
            own = found.quality_probs is not None  # the detector judged with its own predictions
            computed = found.quality if found.quality is not None and not own \
                else model_quality(labels, probs)
            extra = {k: v for k, v in mq.items() if k not in ("model", "cv")}
            mq = {**computed, "model": found.quality_name if own else mq.get("model"),
                  "cv": None if own else mq.get("cv"), **extra}
            if found.quality_usable is not None:
                mq["usable"] = bool(found.quality_usable)
        warns = list(found.warnings)
        if mq.get("usable") is False and not any("chance" in w for w in warns):
            warns.append(quality_warning(mq))
        elif mq.get("weak"):
            warns.append(f"{mq.get('model') or 'the model'}'s out-of-fold predictions are weak "
                         f"(AUROC {mq['auroc']:.2f} against the observed labels): the flip estimate "
                         "mixes flipped labels with rows the model itself gets wrong. A stronger "
                         "--model or independent evidence (--trusted, --rules) would sharpen it.")
        verdict = dict(found.verdict or {})
        targeted = (verdict.get("boundary") or {}).get("targeted")
        if targeted:
            warns.extend(targeted_warnings(targeted, classes))
            if classes is not None:  # the verdict speaks the user's labels, as the rest of the audit
                verdict["boundary"] = {**verdict["boundary"], "targeted": {**targeted, "attacks": [
                    {**a, "source": classes[a["source"]], "target": classes[a["target"]]}
                    for a in targeted["attacks"]]}}
        rehearsal = verdict.get("rehearsal")
        if rehearsal and classes is not None:  # the rehearsed move named by the user's labels too
            verdict["rehearsal"] = {**rehearsal, "source": classes[rehearsal["source"]],
                                    "target": classes[rehearsal["target"]]}
        sources = list(inputs.sources)
        if inputs.trusted is not None and len(inputs.trusted.in_data()[0]):
            rows, verified = inputs.trusted.in_data()
            expected = np.full(len(labels), -1, dtype=np.int64)
            expected[rows] = verified
            sources.append(LabelSource("trusted rows", expected, "trusted"))
        evidence, disagreements = summarise_sources(labels, sources)
        return LabelAudit(
            method=self.detector_name, labels=labels, scores=np.asarray(found.scores, dtype=np.float64),
            flags=flags, suggested_codes=suggested, estimated_flips=estimated,
            transitions=np.asarray(transitions, dtype=np.int64),
            classes=None if classes is None else np.asarray(classes),
            ids=None if ids is None else np.asarray(ids),
            model_quality=mq, warnings=warns, evidence=evidence, disagreements=disagreements,
            components=found.components, params=_plain_params(self.get_params()),
            details=dict(found.details), verdict=verdict,
            likely=None if found.likely is None else np.asarray(found.likely, dtype=bool),
            reason_codes=None if found.reason_codes is None else np.asarray(found.reason_codes),
            reason_names=list(found.reason_names or []),
        )


def targeted_warnings(targeted: dict, classes) -> list[str]:
    """One warning per targeted attack the boundary band's footprint points to, with class names."""
    def name(code):
        return str(code if classes is None else classes[code])

    return [f"the boundary band looks like the footprint of a targeted {name(a['source'])} -> "
            f"{name(a['target'])} attack: the rows the model is surest are {name(a['source'])} lean "
            f"{a['anchor_rate']:.0%} toward {name(a['target'])} ({a['reverse_rate']:.0%} the other way). "
            f"Look for flips among rows labelled {name(a['target'])}; the "
            f"{a['band_rows_not_flagged']} uncertain rows labelled {name(a['source'])} that the model "
            f"now calls {name(a['target'])} were not flagged: they are more likely clean rows the "
            f"attack moved the model across than flips, so do not relabel them without review."
            for a in targeted["attacks"]]


def quality_warning(quality: dict) -> str:
    """The warning for a model too weak to judge labels."""
    name = quality.get("model") or "the model"
    return (f"{name}'s out-of-fold predictions agree with the labels hardly better than chance "
            f"(AUROC {quality['auroc']:.2f}, balanced accuracy {quality['balanced_accuracy']:.2f}, "
            f"chance {quality['chance']:.2f}): it cannot tell a flipped label from a hard one, so "
            "its flags and flip estimate mean little. Try another --model, more features, or "
            "independent evidence (--trusted, --rules, --reference-label).")


def summarise_sources(labels: np.ndarray, sources) -> tuple[list[dict], list[dict]]:
    """Per-source counts and the (row, source, expected) disagreements, row order."""
    evidence, rows, names, expected = [], [], [], []
    for s in sources:
        applies = s.expected >= 0
        differ = applies & (s.expected != labels)
        evidence.append({"name": s.name, "kind": s.kind, "n_applicable": int(applies.sum()),
                         "n_disagree": int(differ.sum())})
        r = np.flatnonzero(differ)
        rows.append(r)
        names.append(np.full(len(r), len(names)))
        expected.append(s.expected[r])
    if not rows:
        return evidence, []
    r = np.concatenate(rows)
    which = np.concatenate(names)
    exp = np.concatenate(expected)
    order = np.lexsort((which, r))
    src = [s.name for s in sources]
    return evidence, [{"row": int(a), "source": src[b], "expected": int(c)}
                      for a, b, c in zip(r[order], which[order], exp[order])]


def _plain_params(params: dict) -> dict:
    out = {}
    for k, v in params.items():
        if isinstance(v, (str, int, float, bool)) or v is None:
            out[k] = v
        elif isinstance(v, (list, tuple)) and all(isinstance(x, (str, int, float)) for x in v):
            out[k] = list(v)
        else:
            out[k] = type(v).__name__ if not isinstance(v, np.random.RandomState) else "RandomState"
    return out


#: Shared constraint for the random_state parameter.
RANDOM_STATE = ["random_state"]
#: A fraction in [0, 1].
FRACTION = [Interval(Real, 0, 1, closed="both")]
