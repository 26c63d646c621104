"""The default detector: every available piece of evidence, one combined vote."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np

from .._validation import HasMethods, Interval, StrOptions
from ..exceptions import DataError
from ..models import MODEL_NAMES
from ._base import (
    BaseDetector,
    _Findings,
    _Inputs,
    model_quality,
    quality_warning,
    register,
)
from ._confident import confident_joint
from ._knn import knn_label_probs
from ._ranking import adjusted_probs, margin_scores
from ._rules import source_votes
from ._trusted import trusted_evidence

__all__ = ["AutoDetector", "stack_weight"]


def stack_weight(probs: np.ndarray, other: np.ndarray, labels: np.ndarray,
                 grid: np.ndarray | None = None) -> float:
    """Weight ``w`` of ``other`` in ``(1 - w) * probs + w * other`` minimising the Brier score.

    Both inputs must be out-of-sample predictions (out-of-fold, leave-one-out),
    so the choice is a linear stack in the sense of Wolpert (1992) and
    Breiman (1996, "Stacked regressions").  Ties go to the smaller weight.
    """
    grid = np.linspace(0.0, 1.0, 11) if grid is None else np.asarray(grid)
    rows = np.arange(len(labels))
    pp = np.einsum("ij,ij->i", probs, probs).sum()
    oo = np.einsum("ij,ij->i", other, other).sum()
    po = np.einsum("ij,ij->i", probs, other).sum()
    pg = probs[rows, labels].sum()
    og = other[rows, labels].sum()
    # sum_i ||p_w - onehot||^2 = sum ||p_w||^2 - 2 sum p_w[given] + n, expanded in w.
    brier = [(1 - w) ** 2 * pp + 2 * w * (1 - w) * po + w ** 2 * oo - 2 * ((1 - w) * pg + w * og)
             for w in grid]
    return float(grid[int(np.argmin(np.round(brier, 9)))])


@register("auto")
class AutoDetector(BaseDetector):
    """Combine every available piece of evidence into one vote per row; flag where it is outvoted.

    The evidence, each an estimate of the row's true class:

    1. **Model**: the out-of-fold probabilities (``pred_probs``).
    2. **Neighbours** (when ``X`` is given and there are at most
       ``knn_max_samples`` rows): leave-one-out label frequencies of the
       ``n_neighbors`` nearest rows (Paudice et al., 2018).  Model and
       neighbours are averaged with the weight that minimises the Brier
       score of the mix on the observed labels (a linear stack; both are
       out-of-sample), so neighbours count where they predict well and fade
       where the features are mostly noise.
    3. The mix is **class-adjusted**: each class's probability is divided by
       the class's mean self-confidence (confident learning's per-class
       threshold), so a rare class the model is unsure about is judged
       against its own typical confidence and not flagged wholesale.
    4. **Trusted rows** (``trusted``): candidates the trusted model disputes
       are RONI-tested in groups (see :class:`TrustedModel`); in groups the
       test rejects, the model/neighbour vote, which was formed from the
       poisoned labels, is replaced by the trusted model's.  Trusted rows in
       the data vote with their verified label.
    5. **Rules and a reference labeller** (``sources``): each source adds a
       vote of weight ``rule_weight`` / ``reference_weight`` for the label
       it expects.

    A row is flagged when another class gets more of the combined vote than
    its label; that class is the suggested label.  The estimated number of
    flips is the number of flagged rows, and ``transitions`` counts them by
    (suggested, observed) pair.

    Unlike confident learning, which only counts rows that pass a per-class
    confidence threshold, this also counts flips near the decision boundary
    (confident learning's main blind spot).  The price: rows that are
    genuinely ambiguous (overlapping classes) are counted too.  The audit
    reports confident learning's more conservative count as
    ``details["confident_estimate"]``; a large gap between the two means
    much of the estimate sits in ambiguous territory.  When the model's
    out-of-fold predictions are no better than chance (see
    :func:`~flipguard.detection.model_quality`), the model and neighbour
    votes are withheld, only independent evidence can flag rows, and a
    warning says so.

    Score: ``(v[best other] - v[given] + 1) / 2`` of the combined vote ``v``
    (a normalised margin in ``[0, 1]``); above 0.5 means flagged.  Higher =
    more likely flipped.

    Parameters
    ----------
    n_neighbors : int, default=20
        Neighbours per row for the neighbour vote.
    knn_max_samples : int, default=30_000
        Skip the neighbour vote above this many rows (exact neighbour search
        is quadratic in the number of rows).
    knn_weight : float in [0, 1] or "stack", default="stack"
        Weight of the neighbour vote; ``"stack"`` picks it by Brier score.
    trusted_model : str or scikit-learn classifier, default="logreg"
        Model fitted on trusted rows and used for the RONI refits.
    roni : bool, default=True
        RONI-test the trusted model's candidates (without it, every row the
        trusted model disputes takes the trusted model's vote).
    rule_weight : float, default=1.0
        Vote weight of each rule that applies to a row (the model/neighbour
        vote weighs 1).
    reference_weight : float, default=0.5
        Vote weight of the reference labeller.
    random_state : int, RandomState instance or None, default=None
        Seeds the RONI grouping and refits.

    References
    ----------
    .. [1] C. Northcutt, L. Jiang, I. Chuang. "Confident Learning: Estimating
       Uncertainty in Dataset Labels". JAIR 70, 2021.
    .. [2] A. Paudice, L. Munoz-Gonzalez, E. C. Lupu. "Label Sanitization
       against Label Flipping Poisoning Attacks". ECML PKDD Workshops, 2018.
    .. [3] B. Nelson et al. "Exploiting Machine Learning to Subvert Your Spam
       Filter". USENIX LEET, 2008 (RONI).
    .. [4] L. Breiman. "Stacked regressions". Machine Learning 24, 1996.

    Examples
    --------
    >>> import numpy as np
    >>> from flipguard.detection import AutoDetector
    >>> true = np.repeat([0, 1], 50)
    >>> probs = np.where(true[:, None] == [0, 1], 0.9, 0.1)  # out-of-fold, say
    >>> labels = true.copy()
    >>> labels[[3, 60]] = [1, 0]  # two flipped labels
    >>> audit = AutoDetector().audit(labels, probs)
    >>> audit.flags.nonzero()[0].tolist(), audit.estimated_flips, audit.suggested[[3, 60]].tolist()
    ([3, 60], 2, [0, 1])
    """

    _parameter_constraints = {
        "n_neighbors": [Interval(Integral, 1, None, closed="left")],
        "knn_max_samples": [Interval(Integral, 0, None, closed="left")],
        "knn_weight": [Interval(Real, 0, 1, closed="both"), StrOptions({"stack"})],
        "trusted_model": [StrOptions(set(MODEL_NAMES)), HasMethods(["fit", "predict"])],
        "roni": ["boolean"],
        "rule_weight": [Interval(Real, 0, None, closed="left")],
        "reference_weight": [Interval(Real, 0, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(self, *, n_neighbors=20, knn_max_samples=30_000, knn_weight="stack",
                 trusted_model="logreg", roni=True, rule_weight=1.0, reference_weight=0.5,
                 random_state=None):
        self.n_neighbors = n_neighbors
        self.knn_max_samples = knn_max_samples
        self.knn_weight = knn_weight
        self.trusted_model = trusted_model
        self.roni = roni
        self.rule_weight = rule_weight
        self.reference_weight = reference_weight
        self.random_state = random_state

    def _audit(self, inputs: _Inputs) -> _Findings:
        labels, K, n = inputs.labels, inputs.n_classes, inputs.n_samples
        rows = np.arange(n)
        p = np.asarray(inputs.pred_probs, dtype=np.float64)
        components = {"model": 1.0 - p[rows, labels]}
        details: dict = {}
        warns: list[str] = []

        # 1-2. model, plus neighbours where affordable.
        mix = p
        if inputs.X is not None and 1 < n <= self.knn_max_samples and self.knn_weight != 0:
            pk = knn_label_probs(inputs.X, labels, K, n_neighbors=self.n_neighbors)
            w = stack_weight(p, pk, labels) if self.knn_weight == "stack" else float(self.knn_weight)
            mix = (1.0 - w) * p + w * pk
            components["knn"] = 1.0 - pk[rows, labels]
            details["knn_weight"] = w
        elif inputs.X is not None and n > self.knn_max_samples:
            details["knn_weight"] = None
            details["knn_skipped"] = f"{n} rows > knn_max_samples={self.knn_max_samples}"
        base_quality = model_quality(labels, p)
        quality = base_quality if mix is p else model_quality(labels, mix)
        details["ensemble_quality"] = {k: quality[k] for k in ("accuracy", "balanced_accuracy", "auroc")}
        joint, _ = confident_joint(labels, mix)
        details["confident_estimate"] = int(joint.sum() - np.trace(joint))

        # 3. class adjustment; withheld when the evidence is no better than chance.
        usable = base_quality["usable"] or quality["usable"]
        if usable:
            vote = adjusted_probs(labels, mix)
        else:
            vote = np.full((n, K), 1.0 / K)
            warns.append(quality_warning({**quality, "model": "the model"})
                         + " No row is flagged on the model's evidence.")
        weight = np.ones(n)

        # 4. trusted rows.
        if inputs.trusted is not None and inputs.X is None:
            raise DataError("trusted rows need the features X of the audited rows")
        if inputs.trusted is not None:
            ev = trusted_evidence(inputs, model=self.trusted_model, roni=self.roni, max_groups=24,
                                  min_group_size=5, max_fit_samples=20_000, cv=5)
            vote[ev.rejected] = ev.probs[ev.rejected]
            onehot = np.zeros((len(ev.verified_rows), K))
            onehot[np.arange(len(ev.verified_rows)), ev.verified_codes] = 1.0
            vote[ev.verified_rows] = onehot
            components["trusted"] = ev.scores
            details.update(ev.details)
            warns.extend(ev.warnings)

        # 5. rules and reference labellers.
        if inputs.sources:
            votes, total = source_votes(inputs.sources, n, K, self.rule_weight, self.reference_weight)
            vote = (vote * weight[:, None] + votes) / (weight + total)[:, None]
            agree = votes[rows, labels]
            components["evidence"] = np.where(total > 0, (total - agree) / np.where(total > 0, total, 1), 0)

        margin, other = margin_scores(labels, vote)
        flags = margin > 1e-12
        excess = int(flags.sum()) - details["confident_estimate"]
        if usable and excess > max(0.25 * details["confident_estimate"], 0.01 * n):
            warns.append(f"{excess} of the {int(flags.sum())} flagged rows are ones the model is not "
                         f"confident about (confident learning counts {details['confident_estimate']}): "
                         "flips placed near the decision boundary, or labels that are genuinely "
                         "ambiguous for this model. Review them, try a more flexible --model, or add "
                         "trusted rows to tell the two apart.")
        suggested = np.where(flags, other, labels)
        scores = (margin + 1.0) / 2.0
        return _Findings(scores=scores, flags=flags, suggested=suggested, components=components,
                         warnings=warns, quality_usable=bool(usable), quality=base_quality,
                         details=details)
