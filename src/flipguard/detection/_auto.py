"""The default detector: a dataset verdict with a stated false-alarm rate, and row flags with a controlled FDR."""

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
    best_other,
    model_quality,
    register,
)
from ._confident import _prune_by_noise_rate, confident_joint, confident_learning_issues
from ._knn import knn_label_probs, knn_neighbours
from ._ranking import adjusted_probs, margin_scores
from ._rules import source_votes
from ._trusted import trusted_evidence, verified_neighbour_flags
from ._verdict import (
    anchor_flip_rates,
    band_replication,
    boundary_test,
    confident_count_null,
    f1_selection,
    fdr_selection,
    fit_noise_model,
    misfit_replication,
)

__all__ = ["REASONS", "AutoDetector", "stack_weight"]


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


#: Names of the per-row reasons (bit ``i`` of :attr:`LabelAudit.reason_codes` is ``REASONS[i]``).
REASONS = (
    "noise_model",         # posterior flip probability in the FDR-controlled set
    "confident_learning",  # confident learning's prune-by-noise-rate rule
    "neighbours",          # the nearest neighbours' majority is another class
    "trusted_verified",    # a verified label differs from the observed one
    "trusted_roni",        # in a group whose labels hurt the trusted rows (RONI)
    "rules",               # a rule or a reference labeller expects another class
    "expected_f1",         # in the expected-F1-optimal set of a dataset judged poisoned
    "boundary",            # an uncertain row on the other side of the boundary, in a band judged inverted
    "verified_neighbours", # its nearest verified rows with the same observed label were mostly flipped
    "retrained",           # flagged once the model was retrained without the band test's suspects
)
_BIT = {name: np.uint16(1 << i) for i, name in enumerate(REASONS)}

#: Verdict strings of :attr:`LabelAudit.verdict` (``"status"``).
POISONED = "poisoned"
CLEAN = "consistent with clean labels"
INCONCLUSIVE = "inconclusive"
INCONSISTENT = "labels inconsistent with features: possible heavy poisoning"


@register("auto")
class AutoDetector(BaseDetector):
    """Two questions, answered separately: is the dataset poisoned, and which rows?

    The evidence about each row's true class:

    1. **Model**: the out-of-fold probabilities (``pred_probs``).
    2. **Neighbours** (when ``X`` is given and there are at most
       ``knn_max_samples`` rows): leave-one-out label frequencies of the
       ``n_neighbors`` nearest rows (Paudice et al., 2018), averaged with the
       model with the weight that minimises the Brier score (a linear
       stack; both are out-of-sample).

    **Dataset verdict.**  Two tests, each at level ``alpha / 2`` (Bonferroni),
    so the verdict's false-alarm rate is ``alpha``:

    * a likelihood-ratio test (:func:`~flipguard.detection.fit_noise_model`)
      of "the labels are what the (temperature-calibrated) evidence
      predicts" against "... seen through a class-conditional flip matrix",
      with a parametric-bootstrap null: flips of rows the model is sure
      about (random, class-pair, targeted);
    * a boundary-band test (:func:`~flipguard.detection.boundary_test`): do
      the uncertain rows carry a label other than the model's most probable
      class more often than calibration allows?  Flips placed on the
      decision boundary invert that band and leave the confident rows alone.

    A test's rejection must replicate: the band's excess in one of the
    pooled evidence's single models (:func:`band_replication`), and, when
    the probabilities come from one model the caller named and a stack with
    the other candidates predicts the labels significantly better out of
    fold, both tests' excess in that stack (:func:`misfit_replication`,
    ``verdict["model_misfit"]``): a model too simple for the data is
    confidently wrong in whole regions, which no temperature removes.

    ``verdict["status"]`` is

    * ``"poisoned"``: a test rejects *and* the flips it implies exceed the
      clean-label expectation by at least ``min_effect`` (band test:
      ``band_min_effect``) of the rows and 3 rows, statistical and practical
      significance; or verified (trusted)
      rows in the data carry other labels.  ``verdict["rejected_by"]``
      names the test(s);
    * ``"consistent with clean labels"``: neither test rejects, the
      likelihood-ratio test had power (it flags 10% random flips added to
      labels drawn from the clean model in at least 80% of simulations, and
      so a targeted attack moving 30% of the smallest class to the largest),
      a rehearsal of that attack with the model refitted on it was seen
      (:meth:`_rehearse`, when ``refit`` is given), and confident learning disputes at most ``max(1% of the rows, the
      clean-label estimate's 95th percentile)`` labels: a dataset whose
      model confidently disagrees with more labels is never called clean;
    * ``"inconclusive"``: no rejection but too little power to call the
      labels clean (e.g. the model absorbed the flips into soft
      probabilities), or a rejection by fewer rows than ``min_effect``;
    * ``"labels inconsistent with features: possible heavy poisoning"``:
      the evidence agrees with the labels hardly better than chance
      (:func:`~flipguard.detection.model_quality`).  Heavy flipping causes
      exactly this, so it is a finding, not a reason to abstain.

    **Row flags.**  Every row gets the posterior probability that its label
    was flipped under the fitted flip model (``components["posterior"]``);
    *likely flipped* rows are the largest set whose mean local fdr is at
    most ``fdr`` (Bayesian FDR control, Sun & Cai 2007; cf. Benjamini &
    Hochberg 1995).  Rows are flagged when they are likely flipped, or
    when confident learning's thresholds single them out (Northcutt et al.
    2021; it never goes silent under heavy noise): on the model's own
    probabilities (exactly cleanlab's flags) unless the dataset is judged
    poisoned; then on the model/neighbour mix, together with the set
    maximising the expected F1 given the posteriors (Nan et al. 2012)
    when the likelihood ratio rejected, and the band's rows on the other
    side of the boundary when the band test did, as recall matters once
    an attack is established.  Once a test rejects and the model is
    flipguard's to refit, every fold's model is trained again without the
    flagged rows and every row judged again (iterative trimmed-loss
    minimisation, Shen & Sanghavi 2019): after a band rejection up to
    ``RETRAIN_STEPS`` times (fewer when the model selection projects a
    refit to cost more than a third of ``RETRAIN_BUDGET``), adding the new
    flags; after a likelihood-ratio
    rejection once, kept only when the retrained models count significantly
    more flips (:func:`retrain_reveals`): flips the first model had
    absorbed.  A *targeted* attack (rows of class ``s``
    moved to ``t`` anywhere in ``s``'s region) also fills the band, with
    clean rows of ``s`` that the poisoned model now calls ``t``: when the
    rows the model is surest are ``s`` lean toward ``t`` and not back
    (:func:`targeted_footprint`, the anchors of Patrini et al. 2017), rows
    labelled ``s`` that it calls ``t`` are not flagged unless the FDR set
    holds them, the scores are backward-corrected for that flip rate
    (:func:`backward_corrected`) and a warning names the attack
    (``verdict["boundary"]["targeted"]``).  Flagged rows outside the FDR-controlled set
    are *ambiguous* (``likely`` is False).  Trusted rows in the data
    override with their verified label; the trusted model's disputes are
    added only when they raise the F1 on the verified rows themselves
    (out-of-sample), and so are rows whose nearest verified rows of the
    same observed label were mostly flipped
    (:func:`~flipguard.detection.verified_neighbour_flags`, validated the
    same way); rule violations are flagged too; ``reason_codes`` records
    which evidence flagged each row.

    **Estimate.**  For a dataset judged poisoned by the likelihood ratio,
    ``estimated_flips`` is the sum of the posteriors (the flip model's
    expected number of flips; calibrated: its mean on labels drawn from the
    clean model is reported as ``verdict["clean_estimate"]``; the retrained
    models' sum when retraining revealed absorbed flips); the band
    test adds its excess (``verdict["boundary"]["excess"]``).  Flips that
    moved a label *towards* what the features predict cannot be counted by
    any evidence from the features.  Under any other verdict the flip model
    may have been blind to flips the model absorbed, and the estimate (and
    ``transitions``) is confident learning's calibrated count, never more
    alarmist than cleanlab's; ``details["confident_estimate"]`` always holds
    it and ``verdict["noise_model"]["estimated_flips"]`` the posterior sum.
    ``verdict["clean_estimate"]`` (and ``_upper``, the 95th percentile) is
    always what the *reported* estimate would be on clean labels: the
    posterior sum's under H0, or confident learning's count on labels drawn
    from the tempered evidence (:func:`confident_count_null`; kept as
    ``verdict["confident_clean_estimate"]``), which on overlapping classes
    is far from zero.

    Score: one minus the class-adjusted probability of the given label
    under the combined evidence (:func:`adjusted_probs` with ``robust=True``:
    each class judged against its undisputed rows' mean confidence); rows flagged by
    independent evidence (trusted rows, rules) are lifted to at least 0.5
    + half their score.  Higher = more likely flipped.

    Parameters
    ----------
    n_neighbors : int, default=20
        Neighbours per row for the neighbour vote.
    knn_max_samples : int, default=30_000
        Skip the neighbour vote above this many rows.
    knn_weight : float in [0, 1] or "stack", default="stack"
        Weight of the neighbour vote; ``"stack"`` picks it by Brier score.
    alpha : float in (0, 1), default=0.05
        False-alarm rate of the dataset verdict.
    fdr : float in (0, 1), default=0.1
        Target false-discovery rate of the *likely flipped* rows.
    n_bootstrap : int, default=39
        Bootstrap draws for the likelihood-ratio test (at least
        ``2/alpha - 1``, so its p-value can reach ``alpha / 2``).
    band : float in (0, 1], default=0.8
        Rows whose calibrated top probability is below this are the
        "uncertain" rows of the boundary-band test.
    min_effect : float in [0, 1), default=0.005
        Practical significance: a test's rejection makes the verdict
        "poisoned" only when the flips it implies exceed the clean-label
        expectation by at least this share of the rows (and 3 rows).
    band_min_effect : float in [0, 1), default=0.01
        The same for the boundary-band test, whose excess must be at least
        this share of the rows: it depends on the shape of the model's
        calibration among its *uncertain* rows, where real models are least
        reliably calibrated (a gradient-boosting model's steps made a clean
        linear table show an excess of 0.7% of the rows at p = 0.011).
    retrain_max_samples : int, default=30_000
        The retrain pass (every fold's model fitted a second time, without
        the flagged rows) runs up to this many rows; beyond, its cost (a
        second fit of every model) is not spent.
    trusted_model : str or scikit-learn classifier, default="logreg"
        Model fitted on trusted rows and used for the RONI refits.
    roni : bool, default=True
        RONI-test the trusted model's candidates.
    rule_weight : float, default=1.0
        Vote weight of each rule that applies to a row (the evidence weighs 1).
    reference_weight : float, default=0.5
        Vote weight of the reference labeller.
    random_state : int, RandomState instance or None, default=None

    References
    ----------
    .. [1] C. Northcutt, L. Jiang, I. Chuang. "Confident Learning: Estimating
       Uncertainty in Dataset Labels". JAIR 70, 2021.
    .. [2] Y. Benjamini, Y. Hochberg. "Controlling the false discovery rate".
       JRSS B 57(1), 1995.
    .. [3] W. Sun, T. T. Cai. "Oracle and adaptive compound decision rules for
       false discovery rate control". JASA 102, 2007.
    .. [4] A. P. Dawid, A. M. Skene. "Maximum likelihood estimation of observer
       error-rates using the EM algorithm". Applied Statistics 28, 1979.
    .. [5] A. Paudice, L. Munoz-Gonzalez, E. C. Lupu. "Label Sanitization
       against Label Flipping Poisoning Attacks". ECML PKDD Workshops, 2018.
    .. [6] B. Nelson et al. "Exploiting Machine Learning to Subvert Your Spam
       Filter". USENIX LEET, 2008 (RONI).
    .. [7] Y. Nan, K. M. Chai, W. S. Lee, H. L. Chieu. "Optimizing F-measure:
       a tale of two approaches". ICML 2012.

    Examples
    --------
    >>> import numpy as np
    >>> from flipguard.detection import AutoDetector
    >>> true = np.repeat([0, 1], 50)
    >>> probs = np.where(true[:, None] == [0, 1], 0.9, 0.1)  # out-of-fold, say
    >>> labels = true.copy()
    >>> labels[[3, 60]] = [1, 0]  # two flipped labels
    >>> audit = AutoDetector(random_state=0).audit(labels, probs)
    >>> audit.flags.nonzero()[0].tolist(), audit.suggested_codes[[3, 60]].tolist()
    ([3, 60], [0, 1])
    """

    _parameter_constraints = {
        "n_neighbors": [Interval(Integral, 1, None, closed="left")],
        "knn_max_samples": [Interval(Integral, 0, None, closed="left")],
        "knn_weight": [Interval(Real, 0, 1, closed="both"), StrOptions({"stack"})],
        "alpha": [Interval(Real, 0, 1, closed="neither")],
        "fdr": [Interval(Real, 0, 1, closed="neither")],
        "n_bootstrap": [Interval(Integral, 1, None, closed="left")],
        "band": [Interval(Real, 0, 1, closed="right")],
        "min_effect": [Interval(Real, 0, 1, closed="left")],
        "band_min_effect": [Interval(Real, 0, 1, closed="left")],
        "retrain_max_samples": [Interval(Integral, 0, None, closed="left")],
        "trusted_model": [StrOptions(set(MODEL_NAMES)), HasMethods(["fit", "predict"])],
        "roni": ["boolean"],
        "rule_weight": [Interval(Real, 0, None, closed="left")],
        "reference_weight": [Interval(Real, 0, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(self, *, n_neighbors=20, knn_max_samples=30_000, knn_weight="stack", alpha=0.05,
                 fdr=0.1, n_bootstrap=39, band=0.8, min_effect=0.005, band_min_effect=0.01,
                 retrain_max_samples=30_000, trusted_model="logreg", roni=True,
                 rule_weight=1.0, reference_weight=0.5, random_state=None):
        self.n_neighbors = n_neighbors
        self.knn_max_samples = knn_max_samples
        self.knn_weight = knn_weight
        self.alpha = alpha
        self.fdr = fdr
        self.n_bootstrap = n_bootstrap
        self.band = band
        self.min_effect = min_effect
        self.band_min_effect = band_min_effect
        self.retrain_max_samples = retrain_max_samples
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
        reasons = np.zeros(n, dtype=np.uint16)

        # 1-2. model, plus neighbours where affordable.
        mix = p
        pk = None
        if inputs.X is not None and 1 < n <= self.knn_max_samples and self.knn_weight != 0:
            neigh = inputs.extra.get("neighbours")
            if neigh is None:  # found once per X: a retrain pass or a rehearsal judges other labels
                neigh = inputs.extra["neighbours"] = knn_neighbours(inputs.X, n_neighbors=self.n_neighbors)
            pk = knn_label_probs(inputs.X, labels, K, neighbours=neigh)
            w = stack_weight(p, pk, labels) if self.knn_weight == "stack" else float(self.knn_weight)
            mix = (1.0 - w) * p + w * pk
            components["knn"] = 1.0 - pk[rows, labels]
            details["knn_weight"] = w
            if w >= 1.0 - 1e-9:
                warns.append(f"the {self.n_neighbors} nearest neighbours' labels predicted the labels better than "
                             "the model's out-of-fold probabilities (Brier score), so they replaced them: the "
                             "flags rest on the neighbours alone, whatever --model says (--method "
                             "confident_learning judges by the model alone)")
        elif inputs.X is not None and n > self.knn_max_samples:
            details["knn_weight"] = None
            details["knn_skipped"] = f"{n} rows > knn_max_samples={self.knn_max_samples}"
        base_quality = model_quality(labels, p)
        quality = base_quality if mix is p else model_quality(labels, mix)
        details["ensemble_quality"] = {k: quality[k] for k in ("accuracy", "balanced_accuracy", "auroc")}
        usable = bool(base_quality["usable"] or quality["usable"])

        # Dataset level: flips vs clean labels, with a bootstrap null.
        fit = fit_noise_model(labels, mix, n_bootstrap=self.n_bootstrap, rng=inputs.rng)
        bt = boundary_test(labels, mix, fit.inverse_temperature_clean, band=self.band, rng=inputs.rng)
        post = fit.posterior
        components["posterior"] = post
        joint, _ = confident_joint(labels, mix)
        cl_estimate = int(joint.sum() - np.trace(joint))
        details["confident_estimate"] = cl_estimate
        cl_clean, cl_clean_upper = confident_count_null(mix, fit.inverse_temperature_clean, rng=inputs.rng)

        # Row level: FDR-controlled posterior set; confident learning never goes silent.
        likely = fdr_selection(post, self.fdr)
        cl_flags = _prune_by_noise_rate(labels, mix, joint, 1.0, 1)
        reasons[likely] |= _BIT["noise_model"]
        reasons[cl_flags] |= _BIT["confident_learning"]

        v_rows, v_codes = (inputs.trusted.in_data() if inputs.trusted is not None
                           else (np.array([], dtype=np.int64), np.array([], dtype=np.int64)))
        verified_flipped = int(np.count_nonzero(v_codes != labels[v_rows]))
        power = fit.extra.get("power", float("nan"))
        t_power = fit.extra.get("power_targeted", float("nan"))
        t_info = fit.extra.get("targeted", {})
        t_text = (f"{t_info.get('rate', 0.3):.0%} of the smallest class moved to the largest (about "
                  f"{t_info.get('rows', 0)} rows)")
        # Two tests, each at alpha / 2 (Bonferroni): the false-alarm rate of the verdict is alpha.
        level = self.alpha / 2.0
        # Practical significance too: a verdict of poisoning needs more unexplained labels than
        # min_effect of the rows (and at least 3), or a handful of odd rows would page a team.
        floor = max(3.0, self.min_effect * n)
        # The bootstrap p-value is the test; the effect is the estimate's excess over what clean
        # labels give, both taken at the bootstrap's size (the estimate shrinks toward a middle
        # value on fewer rows: clean counts rise, flips are missed) or, conservatively, the
        # estimate on every row against clean labels at the bootstrap's size; the larger one.
        lr_excess = fit.excess
        lr_significant = bool(usable and fit.p_value <= level)
        lr_reject = lr_significant and lr_excess >= floor
        band_significant = bool(usable and bt.p_value <= level)
        band_floor = max(3.0, self.band_min_effect * n)
        band_reject = band_significant and bt.excess >= band_floor
        replication = None
        if band_significant:
            # The evidence pools several models; the excess must be there in one of them alone.
            singles = inputs.extra.get("single_models")
            if singles is None and mix is not p:
                singles = (rows, {"model": p})
            replication = band_replication(labels, singles, band=self.band, level=level)
        unreplicated = replication is not None and not replication["replicated"]
        if unreplicated:
            band_significant = band_reject = False
        misfit = None
        if (lr_reject or band_reject) and inputs.extra.get("alternatives") is not None:
            # One named model's confident errors (a model too simple for the data) look like
            # flips to the tests; evidence that fits the labels better must see them too.
            misfit = misfit_replication(labels, p, inputs.extra["alternatives"](), level=level,
                                        min_effect=self.min_effect, n_bootstrap=self.n_bootstrap,
                                        band=self.band, band_min_effect=self.band_min_effect,
                                        rng=inputs.rng)
            if misfit is not None:  # None: no other model fitted (budget, input)
                misfit["dropped"] = [t for t, gone in (
                    ("likelihood_ratio", lr_reject and not misfit["replicated"]),
                    ("boundary_band", band_reject and not misfit["band_replicated"])) if gone]
        outfitted = bool(misfit and misfit["dropped"])
        if outfitted:
            lr_reject = lr_reject and misfit["replicated"]
            band_reject = band_reject and misfit["band_replicated"]
            # The flip model's posteriors read this model's own errors as flips: no row is
            # "likely flipped" at a stated false-discovery rate on their word.
            likely = np.zeros(n, dtype=bool)
            reasons &= np.uint16(~_BIT["noise_model"] & 0xFFFF)
        # What a clean verdict needs before the rehearsal (power, and no more disputes than clean
        # labels this uncertain give).
        could_be_clean = bool(np.isfinite(power) and power >= 0.8 and not (np.isfinite(t_power) and t_power < 0.8)
                              and cl_estimate <= max(fit.clean_estimate_upper, 0.01 * n) and not unreplicated)
        rehearsal = boundary_rehearsal = None
        if verified_flipped:
            status = POISONED
            why = (f"{verified_flipped} of {len(v_rows)} verified (trusted) rows in the data carry "
                   "another label than the verified one")
        elif not usable:
            status = INCONSISTENT
            why = ("the evidence agrees with the labels hardly better than chance "
                   f"(AUROC {quality['auroc']:.2f}): heavy flipping does this, and so do features "
                   "that do not predict the label")
        elif lr_reject or band_reject:
            status = POISONED
            parts = []
            if lr_reject:
                parts.append(f"labels contradict confident predictions more often than any calibration of "
                             f"the model allows (likelihood-ratio test, bootstrap p = {fit.p_value:.3f} <= "
                             f"{level:g}), by about {lr_excess:.0f} flips more than clean labels this "
                             f"uncertain give, where a verdict needs {floor:.0f}")
            if band_reject:
                parts.append(f"{bt.observed:.0f} of {bt.n_band} uncertain rows carry a label other than the "
                             f"model's most probable class where calibration expects {bt.expected:.0f} "
                             f"(p = {bt.p_value:.3f} <= {level:g}): labels near the decision boundary look "
                             f"moved to its other side (at least {max(bt.excess, 0):.0f} of them; flips the "
                             "model learnt are not counted)")
            why = "; and ".join(parts) + f" (each test at alpha/2; false-alarm rate {self.alpha:g})"
        elif outfitted:
            status = INCONCLUSIVE
            why = _misfit_reason(misfit)
        elif unreplicated and not lr_significant:
            # Significant evidence no single model repeats is not a finding of poisoning, and not
            # an absence of one either: boundary flips that one model learnt look like this.
            status = INCONCLUSIVE
            why = ("no verdict either way: the boundary test rejects on the combined evidence but no single "
                   "model repeats it, so it is not read as flips, nor are flips ruled out (boundary flips "
                   "that one model learns look like this); check the flagged rows near the boundary by hand, "
                   "or add --trusted rows")
        elif lr_significant or band_significant:
            status = INCONCLUSIVE
            extra, need, share = ((lr_excess, floor, self.min_effect)
                                  if lr_significant else (bt.excess, band_floor, self.band_min_effect))
            why = (f"a few labels contradict the model more than calibration allows (p = "
                   f"{min(fit.p_value if lr_significant else 1.0, bt.p_value if band_significant else 1.0):.3f}), "
                   f"but about {max(extra, 0):.0f} of them, fewer than the {need:.0f} rows "
                   f"({share:.1%}) a verdict of poisoning needs: check the flagged rows by hand")
        elif could_be_clean and (rehearsal := self._rehearse(inputs, level)) is not None \
                and not rehearsal["seen"]:
            # The simulations above hold the model fixed; retrained on a moved share of a class,
            # the models may learn it as they learn the labels, and the test then cannot see it.
            status = INCONCLUSIVE
            why = (f"no significant sign of flips (p = {fit.p_value:.2f}), but a rehearsal of a targeted "
                   f"attack went unseen: {rehearsal['rows']} rows ({REHEARSAL_RATE:.0%}) of the smallest "
                   f"class moved to the largest and the models retrained on them, the test gave p = "
                   f"{rehearsal['p_value']:.2f} (the simulations that hold the model fixed see it in "
                   f"{t_power:.0%}): the models learn such a move as part of the labels, so an attack like it "
                   f"could hide from the tests here ("
                   + (f"{rehearsal['moved_flagged']} of its {rehearsal['rows']} rows were flagged, so it would "
                      f"show as disputed labels: the model confidently disputes {cl_estimate} here"
                      if 2 * rehearsal["moved_flagged"] >= rehearsal["rows"] else
                      f"only {rehearsal['moved_flagged']} of its {rehearsal['rows']} rows were flagged; the "
                      f"model confidently disputes {cl_estimate} labels here")
                   + "); check the smallest class's rows, or add --trusted rows")
        elif could_be_clean and (boundary_rehearsal := self._rehearse_boundary(inputs, level)) is not None \
                and not boundary_rehearsal["seen"]:
            # Flips placed where the model is unsure are the ones a retrained model learns: the
            # power simulations cannot see that; a rehearsal can (the one-draw logic as above).
            status = INCONCLUSIVE
            why = (f"no significant sign of flips (p = {fit.p_value:.2f}), but a rehearsal of a boundary "
                   f"attack went unseen: {boundary_rehearsal['rows']} rows ({BOUNDARY_REHEARSAL_RATE:.0%}) a "
                   "linear model is least sure about moved to its runner-up class and the models retrained on "
                   f"them, the tests gave p = {min(boundary_rehearsal['p_value'], boundary_rehearsal['band_p_value']):.2f}"
                   f" ({boundary_rehearsal['moved_flagged']} of the moved rows flagged): the models learn such "
                   "flips as part of the labels, so an attack like it could hide here; check the rows near the "
                   "boundary by hand, or add --trusted rows")
        elif could_be_clean:
            status = CLEAN
            why = (f"no sign of flips at false-alarm rate {self.alpha:g} (p = {fit.p_value:.2f}; the "
                   f"test flags 10% random flips in {power:.0%} of simulations, and {t_text} in "
                   f"{t_power:.0%}"
                   + (f"; a rehearsal of that attack, {rehearsal['rows']} rows moved and the models "
                      f"retrained on them, was seen (p = {rehearsal['p_value']:.3f})" if rehearsal else "")
                   + (f"; so was a rehearsed boundary attack, {boundary_rehearsal['rows']} rows a linear "
                      "model is least sure about moved to its runner-up class (p = "
                      f"{min(boundary_rehearsal['p_value'], boundary_rehearsal['band_p_value']):.3f})"
                      if boundary_rehearsal else "")
                   + f") and the model confidently disputes only {cl_estimate} labels; flips "
                   "moved in coherent regions (a cluster relabelled) can still hide")
        elif np.isfinite(power) and power >= 0.8 and np.isfinite(t_power) and t_power < 0.8:
            # Power against thousands of random flips says nothing about a few dozen moved out of
            # a rare class (fraud relabelled legitimate): no "clean" verdict the test could not back.
            status = INCONCLUSIVE
            why = (f"no significant sign of flips (p = {fit.p_value:.2f}), but the test would see a "
                   f"targeted attack, {t_text}, in only {t_power:.0%} of simulations (10% random flips in "
                   f"{power:.0%}); the model confidently disputes {cl_estimate} labels ({cl_estimate / n:.1%}, "
                   f"clean labels this uncertain give about {cl_clean:.0f}, up to {cl_clean_upper:.0f}): "
                   "check the smallest class's rows, or add --trusted rows")
        else:
            status = INCONCLUSIVE
            low_power = not (np.isfinite(power) and power >= 0.8)
            disputes = (f"the model confidently disputes {cl_estimate} labels ({cl_estimate / n:.1%})"
                        + (f", about what clean labels this uncertain give (about {cl_clean:.0f}, up to "
                           f"{cl_clean_upper:.0f}), so they prove nothing either way" if cl_estimate <= cl_clean_upper else
                           f", more than clean labels this uncertain give (about {cl_clean:.0f}, up to "
                           f"{cl_clean_upper:.0f})"))
            why = (f"no significant sign of flips (p = {fit.p_value:.2f}), but "
                   + (f"the test has little power here (it flags 10% random flips in {power:.0%} of "
                      f"simulations), and {disputes}" if low_power else disputes)
                   + "; flips the model absorbed into its probabilities cannot be ruled out")

        if outfitted and status != INCONCLUSIVE:
            why += "; " + _misfit_reason(misfit)
        if unreplicated:
            why += (f"; the uncertain rows disagree with the pooled evidence more than its calibration "
                    f"allows (p = {bt.p_value:.3f}) but with no single model's own (smallest p = "
                    f"{min(replication['p_values'].values()):.3f}): a pool of models is not calibrated where "
                    "they disagree, so that is not read as flips moved across the boundary")
        targeted = None
        retrained_transitions = None
        band_rows = bt.rows
        band_excess = max(bt.excess, 0.0)
        if lr_reject or band_reject:
            # A test found the attack: recall matters.  Confident learning on the evidence mix
            # and the FDR-controlled set always vote; the expected-F1-optimal posterior set where
            # the flip model saw the attack; the inverted band's rows where that test did.
            flags = cl_flags | likely
            if lr_reject:
                f1set = f1_selection(post)
                reasons[f1set & ~likely & ~cl_flags] |= _BIT["expected_f1"]
                flags |= f1set
            if band_reject:
                # A targeted attack (rows of s anywhere in its region moved to t) pulls the model
                # toward t, and the band then fills with clean rows of s it now calls t: the
                # attack's victims, not its flips.  The anchors tell the two apart.
                targeted, victims = targeted_footprint(labels, mix, p, bt.rows)
                if targeted:
                    # Rows labelled s that the model calls t are explained by the attack's pull:
                    # not flagged unless the flip model's FDR-controlled set holds them.
                    dropped = flags & victims & ~likely
                    flags &= ~dropped
                    reasons[dropped] = 0
                    targeted["flags_withdrawn"] = int(np.count_nonzero(dropped))
                band_rows = bt.rows & ~victims  # victims: labelled s where the model now says t
                # The victims' share of the band's excess is the attack's pull, not flips.
                band_excess *= np.count_nonzero(band_rows) / max(1, np.count_nonzero(bt.rows))
                if targeted:
                    why += (f"; {targeted['band_rows_not_flagged']} of the band's rows carry a class "
                            "the model now assigns to another while the rows it is surest of in that "
                            "class lean toward the other: the footprint of a targeted attack, whose "
                            "flips sit inside the source class's region; those band rows are likely "
                            "its clean victims and are not flagged (the warning names the classes)")
                reasons[band_rows] |= _BIT["boundary"]
                flags |= band_rows
                # Retrained without the suspects, the models move their boundary back and
                # disagree with more of the moved labels; again while that finds new ones.
                added, passes, most = np.zeros(n, dtype=bool), 0, self._retrain_steps(inputs)
                while passes < most:
                    again = self._retrain_pass(inputs, flags)
                    if again is None:
                        break
                    passes += 1
                    new = again.flags & ~victims & ~flags
                    if not new.any():
                        break
                    added |= new
                    flags |= new
                if passes:
                    reasons[added] |= _BIT["retrained"]
                    details["retrained_flags"] = int(np.count_nonzero(added))
                    details["retrain"] = {"after": "boundary_band", "passes": passes}
            elif lr_reject:
                # Flips a model absorbed (a targeted share of a class, a coherent region) lower
                # its count; retrained without the suspects it counts them.  Random flips it
                # did not absorb: the count stays, and so do the flags.
                again = self._retrain_pass(inputs, flags)
                if again is not None:
                    info = retrain_reveals(post, again.components["posterior"], floor)
                    new = again.flags & ~flags if info["revealed"] else np.zeros(n, dtype=bool)
                    info.update(suspects=int(np.count_nonzero(flags)), flags_added=int(np.count_nonzero(new)))
                    details["retrain"] = {"after": "likelihood_ratio", **info}
                    if info["revealed"]:
                        reasons[new] |= _BIT["retrained"]
                        details["retrained_flags"] = info["flags_added"]
                        flags |= new
                        if "likelihood_ratio" in again.verdict.get("rejected_by", []):
                            retrained_transitions = again.transitions
                        why += (f"; retrained without the {info['suspects']} flagged rows, the models count "
                                f"about {info['estimate_after']:.0f} flips where they counted "
                                f"{info['estimate_before']:.0f} (more than {RETRAIN_Z:g} standard errors): "
                                f"flips the first models had learnt, {info['flags_added']} more rows flagged")
        else:
            # No (or no conclusive) sign of an attack in the evidence (verified rows may still prove
            # one; they speak for themselves below): confident learning on the model's own
            # probabilities, exactly cleanlab's flags, never silent and no more alarmist.
            cl_model = cl_flags if mix is p else confident_learning_issues(labels, p)
            reasons[:] = np.where(cl_model, _BIT["confident_learning"], 0) | (reasons & _BIT["noise_model"])
            flags = likely | cl_model

        # Class-adjusted vote: scores and suggested labels.
        vote = adjusted_probs(labels, mix, robust=True)
        if targeted:
            vote = backward_corrected(vote, targeted["attacks"])
        _, other = margin_scores(labels, vote)
        post_other = best_other(fit.true_posterior, labels)
        suggested = np.where(flags, np.where(likely, post_other, other), labels)
        scores = 1.0 - vote[rows, labels]
        if pk is not None:
            reasons[flags & (np.argmax(pk, axis=1) != labels)] |= _BIT["neighbours"]

        # Trusted rows: RONI-tested groups, and the verified rows themselves.
        untrusted_flags = flags.copy()  # what the audit flags without them: how suspects would be picked
        if inputs.trusted is not None and inputs.X is None:
            raise DataError("trusted rows need the features X of the audited rows")
        if inputs.trusted is not None:
            ev = trusted_evidence(inputs, model=self.trusted_model, roni=self.roni, max_groups=24,
                                  min_group_size=5, max_fit_samples=20_000, cv=5,
                                  main_flags=flags.copy())
            details.update(ev.details)
            warns.extend(ev.warnings)
            components["trusted"] = ev.scores
            roni_rows = ev.rejected & ~flags
            flags |= ev.rejected
            reasons[ev.rejected] |= _BIT["trusted_roni"]
            suggested[roni_rows] = np.argmax(ev.probs[roni_rows], axis=1)
            scores[ev.rejected] = np.maximum(scores[ev.rejected], 0.5 + 0.5 * scores[ev.rejected])
            if len(v_rows) >= 5:
                near, info = verified_neighbour_flags(inputs.X, labels, v_rows, v_codes, main_flags=flags)
                details["verified_neighbours"] = info
                new = near & ~flags
                flags |= near
                reasons[near] |= _BIT["verified_neighbours"]
                top_other = np.argmax(np.where(np.arange(K) == labels[:, None], -1.0, mix), axis=1)
                suggested[new] = top_other[new]
                scores[near] = np.maximum(scores[near], 0.5 + 0.5 * scores[near])
            if len(v_rows):
                clean_v = v_codes == labels[v_rows]
                details["trusted_clean_rows_flagged"] = int(np.count_nonzero(flags[v_rows][clean_v]))
                details["trusted_clean_rows"] = int(np.count_nonzero(clean_v))
                details["trusted_flip_rate"] = round(verified_flipped / len(v_rows), 4)
                direct = ~clean_v
                flags[v_rows] = direct
                likely[v_rows] = direct
                reasons[v_rows] = np.where(direct, _BIT["trusted_verified"], 0).astype(np.uint16)
                suggested[v_rows] = np.where(direct, v_codes, labels[v_rows])
                scores[v_rows] = direct.astype(float)

        # Rules and reference labellers: a violated rule is evidence on its own.
        if inputs.sources:
            votes, total = source_votes(inputs.sources, n, K, self.rule_weight, self.reference_weight)
            combined = (vote + votes) / (1.0 + total)[:, None]
            margin, src_other = margin_scores(labels, combined)
            ruled = (margin > 1e-12) & (total > 0) & (votes[rows, labels] < total)
            new = ruled & ~flags
            flags |= ruled
            reasons[ruled] |= _BIT["rules"]
            suggested[new] = src_other[new]
            scores[ruled] = np.maximum(scores[ruled], 0.5 + 0.5 * scores[ruled])
            agree = votes[rows, labels]
            components["evidence"] = np.where(total > 0, (total - agree) / np.where(total > 0, total, 1), 0)

        suggested = np.where(flags & (suggested == labels), other, suggested)
        likely &= flags
        # Calibrated when an attack is established; otherwise the flip model may have been
        # blind (absorbed flips), and confident learning's count is the reading to act on.
        if status == POISONED:
            estimate = (fit.estimated_flips if lr_reject else float(cl_estimate)) \
                + (band_excess if band_reject else 0.0)
        else:
            estimate = float(cl_estimate)
        if status == INCONSISTENT:
            warns.append("labels are inconsistent with the features: possible heavy poisoning (or "
                         "features that do not predict the label). Rows are still ranked and flagged "
                         "with confident learning's per-class thresholds; verify a sample by hand, "
                         "or add --trusted rows.")
        verdict = {
            "status": status,
            "reason": why,
            "alpha": float(self.alpha),
            "fdr": float(self.fdr),
            "p_value": float(fit.p_value),
            "power_at_10pct_random_flips": None if not np.isfinite(power) else float(power),
            "power_at_targeted_flips": None if not np.isfinite(t_power) else float(t_power),
            "estimated_flips": int(round(estimate)),
            # What the reported estimate would be on clean labels: the posterior sum's when the
            # likelihood ratio gave it, confident learning's count's otherwise.
            "clean_estimate": int(round(fit.clean_estimate if lr_reject else cl_clean)),
            "clean_estimate_upper": int(round(fit.clean_estimate_upper if lr_reject else cl_clean_upper)),
            "confident_estimate": cl_estimate,
            "confident_clean_estimate": int(round(cl_clean)),
            "confident_clean_estimate_upper": int(round(cl_clean_upper)),
            "n_likely": int(np.count_nonzero(likely)),
            "n_ambiguous": int(np.count_nonzero(flags & ~likely)),
            "noise_model": fit.summary(),
            "boundary": {**bt.summary(), **({"targeted": targeted} if targeted else {}),
                         **({"replication": replication} if replication is not None else {})},
            **({"model_misfit": misfit} if misfit is not None else {}),
            **({"rehearsal": rehearsal} if rehearsal is not None else {}),
            **({"boundary_rehearsal": boundary_rehearsal} if boundary_rehearsal is not None else {}),
            "rejected_by": [t for t, r in (("likelihood_ratio", lr_reject), ("boundary_band", band_reject)) if r],
        }
        transitions = (retrained_transitions if retrained_transitions is not None
                       else _transitions(fit, labels, K, lr_reject, joint))
        if band_reject and bt.observed > 0:
            # The band's excess, spread over its rows' (true = model's top class, observed) pairs.
            top = np.argmax(mix, axis=1)
            band_counts = np.zeros((K, K))
            kept = band_rows if band_rows.any() else bt.rows
            np.add.at(band_counts, (top[kept], labels[kept]), band_excess / kept.sum())
            transitions = _add_off_diagonal(transitions, band_counts)
        if len(v_rows):
            verdict["verified_estimate"], transitions = verified_sample_estimate(labels, v_rows, v_codes, K,
                                                                                 transitions,
                                                                                 flags=untrusted_flags)
        verdict["estimated_flips"] = int(transitions.sum() - np.trace(transitions))
        return _Findings(scores=scores, flags=flags, suggested=suggested, components=components,
                         warnings=warns, quality_usable=usable, quality=base_quality,
                         details=details, estimated_flips=verdict["estimated_flips"],
                         transitions=transitions,
                         verdict=verdict, likely=likely, reason_codes=reasons,
                         reason_names=list(REASONS))


    def _rehearse(self, inputs: _Inputs, level: float) -> dict | None:
        """Rehearse a targeted attack before calling labels clean; None when no refit is at hand.

        :func:`~flipguard.detection.fit_noise_model` measures the test's power against
        ``REHEARSAL_RATE`` of the smallest class moved to the largest with the model's
        probabilities held fixed: an upper bound, since a model retrained on the moved labels
        learns part of the move (a share of a class moved inside a well separated cluster
        becomes a calibrated mixture there, which no calibration test can tell from clean
        labels).  The rehearsal makes that move on the audited labels (seeded from the audit's
        generator without advancing it), refits the same model on them (``refit``, within
        ``retrain_max_samples`` rows) and audits again: "seen" when the likelihood-ratio or
        the band test rejects at ``level``, or the audit says poisoned.  One draw, so an
        attack the tests see with power ``q`` goes unseen with probability ``1 - q``: then
        the verdict is inconclusive, which is what a power below 80 % gives too.
        """
        refit = inputs.extra.get("refit")
        n, K, labels = inputs.n_samples, inputs.n_classes, inputs.labels
        if refit is None or n > self.retrain_max_samples:
            return None
        counts = np.bincount(labels, minlength=K)
        src = int(np.argmin(np.where(counts > 0, counts, np.iinfo(np.int64).max)))
        dst = int(np.argmax(np.where(np.arange(K) == src, -1, counts)))
        k = int(round(REHEARSAL_RATE * counts[src]))
        if k < 1 or src == dst:
            return None
        rng = np.random.RandomState(int(inputs.rng.get_state()[1][1]))
        moved = rng.choice(np.flatnonzero(labels == src), size=k, replace=False)
        y = labels.copy()
        y[moved] = dst
        return {"source": src, "target": dst, **self._audit_moved(inputs, y, moved, rng, level)}

    def _audit_moved(self, inputs: _Inputs, y: np.ndarray, moved: np.ndarray, rng, level: float) -> dict:
        """A rehearsal's second half: refit the model on the moved labels ``y``, audit them again and
        say whether the move was seen (a test rejects at ``level``, or the audit says poisoned)."""
        probs = np.asarray(inputs.extra["refit"](None, labels=y), dtype=np.float64)
        again = self._audit(_Inputs(labels=y, pred_probs=probs, X=inputs.X, n_classes=inputs.n_classes,
                                    trusted=None, sources=[], rng=rng, extra=_same_rows(inputs)))
        v = again.verdict
        p_lr, p_band = float(v["p_value"]), float(v["boundary"]["p_value"])
        return {"rows": int(len(moved)), "status": v["status"], "p_value": p_lr, "band_p_value": p_band,
                "moved_flagged": int(np.count_nonzero(again.flags[moved])),
                "seen": bool(v["status"] == POISONED or min(p_lr, p_band) <= level)}

    def _rehearse_boundary(self, inputs: _Inputs, level: float) -> dict | None:
        """Rehearse a boundary attack before calling labels clean; None when no refit is at hand.

        ``BOUNDARY_REHEARSAL_RATE`` of the rows, those a logistic-regression surrogate fitted
        on the audited labels is least sure about, move to its runner-up class
        (:class:`flipguard.attacks.BoundaryFlip`: the least-confident flips of Biggio et al.,
        ACML 2011, and Xiao et al., ECAI 2012; on sparse or absent features, the rows nearest
        the audited evidence's own decision boundary).  The model is refitted on the moved
        labels and the labels audited again; "seen" as in :meth:`_rehearse`.  A retrained
        model moves its boundary to fit such flips, so the power simulations (model held
        fixed) overstate what the tests see; a clean verdict needs the rehearsal seen, else
        the verdict is inconclusive.
        """
        refit = inputs.extra.get("refit")
        n, labels = inputs.n_samples, inputs.labels
        k = int(round(BOUNDARY_REHEARSAL_RATE * n))
        if refit is None or n > self.retrain_max_samples or k < 1:
            return None
        seed = int(inputs.rng.get_state()[1][2])
        X = inputs.X
        if X is not None and not hasattr(X, "tocsr") and np.ndim(X) == 2 and np.shape(X)[1] > 0:
            from ..attacks import BoundaryFlip

            flipper = BoundaryFlip(n_flips=k, random_state=seed)
            y = np.asarray(flipper.fit_resample(np.asarray(X, dtype=np.float64), labels)[1], dtype=np.int64)
            moved = np.asarray(flipper.flipped_indices_, dtype=np.int64)
        else:
            probs = np.asarray(inputs.pred_probs, dtype=np.float64)
            order = np.argsort(-probs, axis=1, kind="stable")
            top, second = order[:, 0], order[:, 1]
            margin = probs[np.arange(n), top] - probs[np.arange(n), second]
            agree = np.flatnonzero(labels == top)
            if len(agree) <= k:
                return None
            moved = agree[np.argsort(margin[agree], kind="stable")[:k]]
            y = labels.copy()
            y[moved] = second[moved]
        return self._audit_moved(inputs, y, moved, np.random.RandomState(seed), level)

    @staticmethod
    def _retrain_steps(inputs: _Inputs) -> int:
        """Passes after a band rejection: ``RETRAIN_STEPS``, fewer when one refit is projected
        to cost more than a share of ``RETRAIN_BUDGET`` (the model selection's own timing); at
        least one."""
        seconds = getattr(inputs.extra.get("refit"), "seconds", None)
        if not seconds:
            return RETRAIN_STEPS
        return int(max(1, min(RETRAIN_STEPS, RETRAIN_BUDGET // seconds)))

    def _retrain_pass(self, inputs: _Inputs, suspects: np.ndarray) -> _Findings | None:
        """A second audit on probabilities from the same model retrained without ``suspects``
        (``inputs.extra["refit"]``), or None when no refit is available (or affordable: more
        rows than ``retrain_max_samples``).

        Boundary flips are the ones a model learns: they sit where it is unsure,
        so it moves its boundary to fit them and then agrees with most of them.
        Trained without the rows the band test found, every fold's model puts the
        boundary back nearer where clean labels have it, and a second pass (every
        row still judged by models that never saw it) finds more of the moved
        labels: one step of iterative trimmed-loss minimisation (Shen & Sanghavi,
        ICML 2019: refit on the rows that look clean, re-score every row).  Only
        after a test has rejected, and after the likelihood ratio only kept when
        :func:`retrain_reveals` says so: random flips in confident regions are
        found without it, and re-scoring them adds the clean rows a sharper
        model doubts (measured in docs/detection.md).
        """
        refit = inputs.extra.get("refit")
        if (refit is None or not suspects.any() or suspects.all()
                or inputs.n_samples > self.retrain_max_samples):
            return None
        probs = np.asarray(refit(suspects), dtype=np.float64)
        again = _Inputs(labels=inputs.labels, pred_probs=probs, X=inputs.X, n_classes=inputs.n_classes,
                        trusted=None, sources=[], rng=inputs.rng, extra=_same_rows(inputs))
        return self._audit(again)


def _same_rows(inputs: _Inputs) -> dict:
    """What a second audit of the same rows reuses (their neighbours); never ``refit``, so it
    does not retrain or rehearse again."""
    return {"neighbours": inputs.extra["neighbours"]} if "neighbours" in inputs.extra else {}


#: Share of the smallest class the rehearsal moves to the largest before a clean verdict.
REHEARSAL_RATE = 0.3
#: Share of the rows the boundary rehearsal moves across the model's decision boundary (the
#: rate of the random-flip power check).
BOUNDARY_REHEARSAL_RATE = 0.1
#: Retrain passes at most after a band rejection (each one refits every fold's model).
RETRAIN_STEPS = 3
#: Seconds the extra band passes may be projected to take (``model="auto"``'s time budget).
RETRAIN_BUDGET = 15.0
#: The retrained count must exceed the first by this many standard errors (one-sided, about 2.3%).
RETRAIN_Z = 2.0


def _misfit_reason(misfit: dict) -> str:
    others = " and ".join(k for k, w in misfit["weights"].items() if k != "model" and w > 0)
    tests = " and ".join(t.replace("_", " ") for t in misfit["dropped"])
    tests += " tests" if len(misfit["dropped"]) > 1 else " test"
    return (f"the labels look flipped to the {tests} on this model's probabilities, but a stack with {others} predicts "
            f"these labels better out of fold (log-loss lower by {misfit['log_loss_gain']:.3f} per row on "
            f"{misfit['rows']:,} rows) and sees no such excess (p = {misfit['p_value']:.3f}, band p = "
            f"{misfit['band_p_value']:.3f}): the model fits this data worse than the stack, and its confident "
            "errors are not read as flips (model auto reads such a stack; flips that a flexible model "
            "learns, such as a relabelled cluster, could hide behind this)")


def retrain_reveals(posterior: np.ndarray, retrained_posterior: np.ndarray, floor: float) -> dict:
    """Did retraining without the suspects reveal flips the first model had absorbed?

    The flip model's count is a sum of per-row posteriors, whose variance
    is ``sum(p * (1 - p))`` (independent Bernoulli rows).  A model that
    learnt part of an attack (a targeted share of one class, a coherent
    flipped region) counts too few flips; refitted without the rows already
    flagged, it stops learning them and its count rises (iterative
    trimmed-loss minimisation, Shen & Sanghavi, ICML 2019).  Random flips
    it never learnt: the count stays, and the second pass's extra flags
    would be the clean rows a sharper model now disputes.  The rise must
    exceed ``RETRAIN_Z`` standard errors of the difference (the two
    variances summed, conservative for two counts on the same rows) and the
    verdict's practical ``floor``.
    """
    before, after = float(posterior.sum()), float(retrained_posterior.sum())
    se = float(np.sqrt(np.sum(posterior * (1.0 - posterior))
                       + np.sum(retrained_posterior * (1.0 - retrained_posterior))))
    gain = after - before
    return {"estimate_before": round(before, 1), "estimate_after": round(after, 1),
            "standard_error": round(se, 2),
            "revealed": bool(gain >= max(floor, RETRAIN_Z * se))}


#: A class's anchors must lean at least this much toward another class, and at least
#: ``TARGETED_RATIO`` times more than that class's anchors lean back, for the band's
#: excess to be read as the footprint of a targeted attack.
TARGETED_MIN_RATE = 0.10
TARGETED_RATIO = 3.0


def targeted_footprint(labels: np.ndarray, mix: np.ndarray, probs: np.ndarray,
                       band_rows: np.ndarray) -> tuple[dict | None, np.ndarray]:
    """The targeted attack read off the anchors, and the rows its pull explains: labelled ``s``,
    called ``t`` by the model, for a one-sided ``s -> t``; ``(None, no rows)`` when the anchors
    show no one-sided flipping.

    The boundary band test (:func:`~flipguard.detection.boundary_test`) counts
    uncertain rows whose label is not the model's class.  Boundary flips put
    those rows there themselves.  A *targeted* attack that moves rows of class
    ``s`` to ``t`` anywhere in ``s``'s region does it indirectly: the model,
    fitted to the poisoned labels, leans toward ``t`` and now calls ``t`` some
    clean rows of ``s`` near the boundary -- the band fills with the attack's
    victims, labelled ``s``, while the flips, labelled ``t``, sit inside
    ``s``'s region.  Flagging those victims would suggest relabelling clean
    ``s`` rows as ``t``: finishing the attacker's work.

    The two are told apart by the anchors (:func:`anchor_flip_rates`;
    Patrini et al. 2017): flips spread over ``s``'s region leave the rows
    the model is surest are ``s`` predicted ``t`` with about the flip rate,
    while boundary flips leave the anchors alone.  When the anchors of ``s``
    lean toward ``t`` by at least ``TARGETED_MIN_RATE`` and ``TARGETED_RATIO``
    times more than ``t``'s lean back, band rows labelled ``s`` that the
    model calls ``t`` are not flagged -- by the band, the retrain pass or
    confident learning -- unless the flip model's FDR-controlled set holds
    them.  Where a small class has no clean anchors (the model is never sure
    of it) its lean is the model's and not an attack's, and boundary flips
    into that class go unflagged: measured in docs/detection.md.
    """
    K = probs.shape[1]
    T = anchor_flip_rates(probs)
    one_sided = (T >= TARGETED_MIN_RATE) & (T >= TARGETED_RATIO * T.T) & ~np.eye(K, dtype=bool)
    if not one_sided.any():
        return None, np.zeros(len(labels), dtype=bool)
    other = best_other(mix, labels)
    mirror = one_sided[labels, other]
    victims = band_rows & mirror
    attacks = [{"source": int(s), "target": int(t), "anchor_rate": round(float(T[s, t]), 4),
                "reverse_rate": round(float(T[t, s]), 4),
                "band_rows_not_flagged": int(np.count_nonzero(victims & (labels == s) & (other == t)))}
               for s, t in zip(*np.nonzero(one_sided))]
    return {"attacks": attacks, "band_rows_not_flagged": int(np.count_nonzero(victims))}, mirror


def backward_corrected(probs: np.ndarray, attacks: list[dict]) -> np.ndarray:
    """``probs`` of the poisoned labels turned into probabilities of the clean class, for the
    one-sided flips ``attacks`` (``source``, ``target``, ``anchor_rate``).

    With ``T[s, t] = rate`` (``T[s, s] = 1 - rate``, identity elsewhere) the
    model of the poisoned labels predicts ``q = p @ T``, so ``p = q @ inv(T)``,
    clipped at 0 and renormalised: the backward correction of Patrini et al.
    (CVPR 2017).  A clean row of ``s`` the attack's pull made look like ``t``
    gets its ``s`` back; a flipped row labelled ``t`` loses the share of ``t``
    the flips lent it, so it ranks higher.
    """
    K = probs.shape[1]
    T = np.eye(K)
    for a in attacks:
        T[a["source"], a["target"]] += a["anchor_rate"]
        T[a["source"], a["source"]] -= a["anchor_rate"]
    if np.diag(T).min() <= 0.5:  # not invertible in a stable way: leave the evidence as it is
        return probs
    p = np.clip(probs @ np.linalg.inv(T), 0.0, None)
    return p / np.maximum(p.sum(axis=1, keepdims=True), 1e-12)


def verified_sample_estimate(labels: np.ndarray, v_rows: np.ndarray, v_codes: np.ndarray, K: int,
                             transitions: np.ndarray, confidence: float = 0.95,
                             flags: np.ndarray | None = None) -> tuple[dict, np.ndarray]:
    """The flips implied by the verified rows, read as a random sample of the data, and their range.

    Returns ``(summary, transitions)``.  ``summary`` holds the verified and
    flipped counts, the flip rate with its exact (Clopper-Pearson) ``confidence``
    interval and those scaled to every row (``flips``, ``flips_low``,
    ``flips_high``), the model's count (``model_estimate``, from the
    ``[true, observed]`` counts ``transitions``) and whether the sample's
    count replaces it (``used``).  It does when the model's count lies outside
    the interval: the count is then inconsistent with direct evidence (a
    flipped cluster or boundary the model absorbed makes it a lower bound; an
    overlapping table's own errors make it too high).  The returned
    transitions are then the sample's, estimated per observed class: the rows
    observed with label ``k`` split by the true labels of the verified rows
    observed with ``k`` (a stratified estimate; a class with no verified row
    keeps the model's column); otherwise ``transitions`` unchanged.

    **Rows picked by the audit are not a random sample.**  The natural workflow
    is to verify the audit's own suspects, and their flip rate, scaled to every
    row, counts the suspects' rate as everyone's (20 reviewed suspects, 11
    flipped, read as 1,318 flips in 2,000 rows where 300 were).  With the
    audit's ``flags`` (as it flags without the verified rows: their own
    evidence flags every verified row that carries another label, which would
    make any sample look picked), the share of flagged rows among the verified ones is
    tested against the share among all rows (two-sided binomial test at
    ``SAMPLE_SELECTION_LEVEL``); when they differ, the sample is
    post-stratified: the rate is estimated and scaled within the flagged and
    the unflagged rows separately (each stratum's interval at ``confidence``
    Bonferroni-split over the two), which is unbiased when the verified rows
    are a random sample *within* each stratum (Cochran, *Sampling
    Techniques*, 1977, ch. 5).  A stratum without a verified row cannot be
    estimated, and then the verified rows are not extrapolated at all
    (``used`` is False and ``sample["extrapolated"]`` says why).
    """
    from scipy.stats import binomtest

    from ._confident import _round_preserving_sum

    m, n = len(v_rows), len(labels)
    observed = labels[v_rows]
    k = int(np.count_nonzero(v_codes != observed))
    model_count = int(transitions.sum() - np.trace(transitions))
    sample = _sample_selection(flags, v_rows)
    strata = (np.asarray(flags, dtype=np.int64) if sample["selected"] else np.zeros(n, dtype=np.int64))
    n_strata = int(strata.max()) + 1
    level = 1.0 - (1.0 - confidence) / n_strata
    out = np.zeros((K, K))
    low = high = 0
    v_strata = strata[v_rows]
    sample["extrapolated"] = "within the flagged and the unflagged rows separately" if n_strata > 1 else \
        "as a random sample"
    for s in range(n_strata):
        in_s, vs = strata == s, v_strata == s
        m_s = int(np.count_nonzero(vs))
        if m_s == 0:
            sample["extrapolated"] = (f"no verified row among the {'flagged' if s else 'unflagged'} rows, so "
                                      "their flip rate cannot be estimated from the verified ones")
            break
        k_s = int(np.count_nonzero(v_codes[vs] != observed[vs]))
        ci = binomtest(k_s, m_s).proportion_ci(confidence_level=level, method="exact")
        n_s = int(np.count_nonzero(in_s))
        low, high = low + int(np.floor(ci.low * n_s)), high + int(np.ceil(ci.high * n_s))
        totals = np.bincount(labels[in_s], minlength=K)
        counts = np.zeros((K, K))
        np.add.at(counts, (v_codes[vs], observed[vs]), 1.0)
        share = totals / np.maximum(np.bincount(labels, minlength=K), 1)  # the stratum's part of each class
        col = counts.sum(axis=0)
        out += np.where(col > 0, totals * counts / np.where(col > 0, col, 1.0), transitions * share)
    if sample["extrapolated"].startswith("no verified row"):
        strat, used, low, high, flips = transitions, False, 0, 0, model_count
    else:
        strat = np.column_stack([_round_preserving_sum(out[:, c]) for c in range(K)]).astype(np.int64)
        flips = int(strat.sum() - np.trace(strat))
        used = not low <= model_count <= high
    summary = {"verified": int(m), "flipped": k, "rate": k / m,
               "rate_low": low / n, "rate_high": high / n, "confidence": confidence,
               "flips": flips, "flips_low": low, "flips_high": high,
               "model_estimate": model_count, "used": used, "sample": sample}
    if not sample["selected"]:
        ci = binomtest(k, m).proportion_ci(confidence_level=confidence, method="exact")
        summary.update(rate_low=float(ci.low), rate_high=float(ci.high))
    return summary, (strat if used else transitions)


#: Two-sided p-value below which verified rows whose flagged share differs from the data's are read
#: as picked by the audit (not a random sample) and post-stratified.
SAMPLE_SELECTION_LEVEL = 0.01


def _sample_selection(flags: np.ndarray | None, v_rows: np.ndarray) -> dict:
    """Whether the verified rows look picked by the audit: their flagged share against everyone's."""
    if flags is None or not len(v_rows):
        return {"selected": False}
    flags = np.asarray(flags, dtype=bool)
    share, m = float(flags.mean()), len(v_rows)
    hits = int(np.count_nonzero(flags[v_rows]))
    if share in (0.0, 1.0):
        return {"selected": False, "flagged_share": share, "verified_flagged_share": hits / m}
    from scipy.stats import binomtest

    p = float(binomtest(hits, m, share).pvalue)
    return {"selected": bool(p <= SAMPLE_SELECTION_LEVEL), "p_value": p, "flagged_share": share,
            "verified_flagged_share": hits / m}


def verified_estimate_text(v: dict) -> str:
    """One sentence for the CLI and the report: what the verified rows say about the number of flips."""
    head = f"{v['flipped']} of {v['verified']} carry another label than the verified one"
    sample = v.get("sample") or {}
    if sample.get("selected"):
        head += (f"; they are not a random sample of the data: {sample['verified_flagged_share']:.0%} of them "
                 f"are flagged rows, against {sample['flagged_share']:.0%} of all rows (p = "
                 f"{sample['p_value']:.3g})")
        if not sample.get("extrapolated", "").startswith("within"):
            return (head + f", and {sample['extrapolated']}: the estimate keeps the model's count "
                    f"({v['model_estimate']})")
        text = (head + f"; read within the flagged and the unflagged rows separately, about {v['flips']} "
                f"flips in the data ({v['flips_low']}-{v['flips_high']})")
    else:
        text = (head + f": {v['rate']:.1%} ({v['confidence']:.0%} interval {v['rate_low']:.1%}-"
                f"{v['rate_high']:.1%}), about {v['flips']} flips in the data ({v['flips_low']}-"
                f"{v['flips_high']}) if they are a random sample")
    if v["used"]:
        return (text + f"; the estimate uses them, because the model's count ({v['model_estimate']}) "
                "lies outside that range")
    return text + f"; the model's estimate ({v['model_estimate']}) lies within it"


def _transitions(fit, labels, K, from_posteriors, joint) -> np.ndarray:
    """Estimated ``[true, observed]`` counts: the expected counts under the flip model
    (posteriors summed by observed label), rounded preserving each observed total, when the
    likelihood ratio found the attack; confident learning's calibrated joint otherwise."""
    if not from_posteriors:
        return joint.T.astype(np.int64)
    from ._confident import _round_preserving_sum

    exp = np.zeros((K, K))
    for k in range(K):  # K passes, each vectorised over the rows labelled k
        exp[:, k] = fit.true_posterior[labels == k].sum(axis=0)
    return np.column_stack([_round_preserving_sum(exp[:, k]) for k in range(K)]).astype(np.int64)


def _add_off_diagonal(transitions: np.ndarray, extra: np.ndarray) -> np.ndarray:
    """``[true, observed]`` counts with ``extra`` expected flips moved off the diagonal, each observed
    column keeping its total (the rows are observed with that label either way)."""
    from ._confident import _round_preserving_sum

    out = transitions.astype(np.float64).copy()
    extra = extra.copy()
    np.fill_diagonal(extra, 0.0)
    out += extra
    out[np.diag_indices_from(out)] -= extra.sum(axis=0)
    out = np.maximum(out, 0.0)
    totals = transitions.sum(axis=0)
    cols = [_round_preserving_sum(out[:, k] * (totals[k] / out[:, k].sum() if out[:, k].sum() else 0.0))
            for k in range(out.shape[1])]
    return np.column_stack(cols).astype(np.int64)
