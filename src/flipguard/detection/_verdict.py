"""Is this dataset poisoned, and which rows? A label-noise model fitted to out-of-fold probabilities.

The two questions are answered separately, each with a stated error rate:

* **Dataset level** (:func:`fit_noise_model`, :class:`NoiseFit`).  Two models
  of the observed labels given out-of-sample class probabilities ``q``:

  - *clean* (H0): ``P(observed = k | x) = pi_k(x)`` with
    ``pi = normalise(q ** a)``, a temperature-calibrated version of ``q``
    (Guo et al. 2017) -- the labels are what the features predict, up to
    the model's over- or under-confidence;
  - *flipped* (H1): ``P(observed = k | x) = sum_j pi_j(x) T[j, k]``, the
    same calibrated posterior seen through a class-conditional flip matrix
    ``T`` (rows = true class), fitted by EM as in Dawid & Skene (1979) with
    the model as the prior of the true class.

  A temperature changes every row's confidence smoothly in logit space;
  flips add mass that does not depend on how sure the features are.  The
  likelihood-ratio statistic therefore measures whether the observed
  disagreement is *shaped* like flips (labels that contradict confident
  predictions more often than any calibration of the model allows) and
  not merely larger.  Its null distribution is a parametric bootstrap
  under H0 (labels redrawn from ``pi``; Efron & Tibshirani 1993), so the
  false-alarm rate ``alpha`` is stated, not assumed.  The same bootstrap
  gives the flip estimate one would see on clean labels.

* **Row level** (:func:`fdr_selection`).  Under H1 each row gets the
  posterior probability that its label was flipped; one minus it is the
  local false-discovery rate (Efron et al. 2001).  Flagging the rows of
  smallest lfdr while their running mean stays below ``fdr`` controls the
  Bayesian false-discovery rate (Sun & Cai 2007; Storey 2003), the
  posterior analogue of Benjamini & Hochberg (1995).  The expected number
  of flips is the sum of the posteriors, which is the off-diagonal mass of
  the fitted joint at the EM fixed point.

* **Boundary band** (:func:`boundary_test`).  Flips placed on the
  decision boundary (each row near it moved to the other side) leave the
  confident rows alone, so the likelihood ratio above does not see them;
  they invert the labels of a band of *uncertain* rows instead.  Under H0
  the number of uncertain rows whose label is not the calibrated model's
  most probable class is a sum of independent Bernoulli variables with
  known means; an inverted band gives more such rows than any calibration
  of the model allows.  One-sided Monte Carlo test (Besag & Clifford 1989).

Identifiability: from features and labels alone, random class-conditional
flips can only be told from genuine ambiguity where the clean classes are
well separated (the "anchor point" assumption of Liu & Tao 2016 and
Patrini et al. 2017, implicit in confident learning too).  Where a model
absorbs the flips into soft probabilities the test loses power and says
"inconclusive", never "clean".

References
----------
.. [1] A. P. Dawid, A. M. Skene. "Maximum likelihood estimation of observer
   error-rates using the EM algorithm". Applied Statistics 28(1), 1979.
.. [2] C. Guo, G. Pleiss, Y. Sun, K. Q. Weinberger. "On calibration of
   modern neural networks". ICML 2017 (temperature scaling).
.. [3] B. Efron, R. Tibshirani, J. D. Storey, V. Tusher. "Empirical Bayes
   analysis of a microarray experiment". JASA 96, 2001 (local fdr).
.. [4] Y. Benjamini, Y. Hochberg. "Controlling the false discovery rate".
   JRSS B 57(1), 1995.
.. [5] W. Sun, T. T. Cai. "Oracle and adaptive compound decision rules for
   false discovery rate control". JASA 102, 2007.
.. [6] C. Northcutt, L. Jiang, I. Chuang. "Confident Learning: Estimating
   Uncertainty in Dataset Labels". JAIR 70, 2021.
.. [7] T. Liu, D. Tao. "Classification with noisy labels by importance
   reweighting". IEEE TPAMI 38(3), 2016.
.. [8] J. Besag, P. Clifford. "Generalized Monte Carlo significance
   tests". Biometrika 76(4), 1989.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["BoundaryTest", "NoiseFit", "boundary_test", "confident_count_null", "f1_selection", "fdr_selection",
           "fit_noise_model"]

_EPS = 1e-6
_A_BOUNDS = (0.05, 20.0)


def _log_q(q: np.ndarray) -> np.ndarray:
    q = np.clip(np.asarray(q, dtype=np.float64), _EPS, None)
    return np.log(q / q.sum(axis=1, keepdims=True))


def _row_max(z: np.ndarray) -> np.ndarray:
    """Row maxima.  numpy reduces along a short last axis slowly (a (5000, 2) array: 280 us
    against 13 us for a loop over its columns), and the bootstrap refits call this thousands
    of times."""
    if z.shape[1] > 32:
        return z.max(axis=1)
    m = z[:, 0].copy()
    for k in range(1, z.shape[1]):
        np.maximum(m, z[:, k], out=m)
    return m


def _row_sum(e: np.ndarray) -> np.ndarray:
    """Row sums, as a matrix-vector product (3-4x faster than ``sum(axis=1)`` on few columns)."""
    return e @ np.ones(e.shape[1])


def _tempered(lq: np.ndarray, a: float) -> np.ndarray:
    z = a * lq
    z -= _row_max(z)[:, None]
    e = np.exp(z)
    return e / _row_sum(e)[:, None]


def _newton_a(lq: np.ndarray, r: np.ndarray, a: float, steps: int = 3) -> float:
    """Maximise ``sum_ij r_ij log pi_ij(a)`` over the inverse temperature ``a`` (concave in ``a``)."""
    target = float(np.einsum("ij,ij->", r, lq))
    for _ in range(steps):
        pi = _tempered(lq, a)
        m = np.einsum("ij,ij->i", pi, lq)
        v = np.einsum("ij,ij->i", pi, lq * lq) - m * m
        w = _row_sum(r)
        grad = target - float(w @ m)
        hess = -float(w @ v)
        if hess > -1e-12:
            break
        step = grad / hess
        a = float(np.clip(a - step, *_A_BOUNDS))
        if abs(step) < 1e-4 * a:
            break
    return a


def _fit_h0(lq, labels, a0=1.0):
    n = len(labels)
    r = np.zeros_like(lq)
    r[np.arange(n), labels] = 1.0
    a = _newton_a(lq, r, a0, steps=20)
    pi = _tempered(lq, a)
    ll = float(np.log(np.clip(pi[np.arange(n), labels], 1e-300, None)).sum())
    return a, pi, ll


def _fit_h1(lq, labels, K, a0, max_iter=100, tol=1e-7, min_diag=0.5):
    n = len(labels)
    a = a0
    T = np.full((K, K), 0.05 / max(K - 1, 1))
    np.fill_diagonal(T, 0.95)
    onehot = np.zeros((n, K))
    onehot[np.arange(n), labels] = 1.0
    ll_old = -np.inf
    pi = _tempered(lq, a)
    it = 0
    for it in range(max_iter):
        lik = pi * T[:, labels].T          # (n, K): pi_ij T[j, y_i]
        tot = _row_sum(lik)
        ll = float(np.log(np.clip(tot, 1e-300, None)).sum())
        r = lik / np.clip(tot, 1e-300, None)[:, None]
        # M-step: T[j, k] = sum_{i: y_i = k} r_ij / sum_i r_ij
        num = r.T @ onehot
        den = num.sum(axis=1, keepdims=True)
        T = num / np.clip(den, 1e-300, None)
        # Flips are a minority of every true class (diagonal dominance, as in confident learning).
        d = np.diagonal(T).copy()
        low = d < min_diag
        if low.any():
            off = T.copy()
            np.fill_diagonal(off, 0.0)
            scale = np.where(low, (1 - min_diag) / np.clip(off.sum(axis=1), 1e-300, None), 1.0)
            T = off * scale[:, None]
            np.fill_diagonal(T, np.where(low, min_diag, d))
        a = _newton_a(lq, r, a, steps=1)
        pi = _tempered(lq, a)
        if ll - ll_old < tol * max(1.0, abs(ll)):
            break
        ll_old = ll
    lik = pi * T[:, labels].T
    tot = _row_sum(lik)
    ll = float(np.log(np.clip(tot, 1e-300, None)).sum())
    r = lik / np.clip(tot, 1e-300, None)[:, None]
    return a, T, pi, r, ll, it + 1


@dataclass
class NoiseFit:
    """Outcome of :func:`fit_noise_model`.

    Attributes
    ----------
    posterior : ndarray of shape (n_samples,)
        Posterior probability that each row's label was flipped (H1).
    true_posterior : ndarray of shape (n_samples, K)
        Posterior of each row's true class under H1.
    transition : ndarray of shape (K, K)
        Fitted ``T[true, observed]``.
    inverse_temperature_clean, inverse_temperature : float
        ``a`` under H0 and H1.
    statistic : float
        Likelihood-ratio statistic ``2 (ll1 - ll0)`` on the bootstrap rows.
    p_value : float
        Parametric-bootstrap p-value of the statistic under clean labels.
    estimated_flips : float
        Sum of the posteriors over every row (the calibrated estimate).
    clean_estimate, clean_estimate_upper : float
        Mean and 95th percentile of the same estimate on labels redrawn
        under H0 (what clean labels would give), scaled to every row.
    n_fit, n_bootstrap : int
        Rows used for the fit and the number of bootstrap draws.
    extra : dict
        ``power``: share of draws with ``power_rate`` random flips added to
        H0 labels that the test flags (at its bootstrap critical value);
        ``power_targeted``: the same with ``targeted_rate`` of the smallest
        class moved to the largest (``targeted``: rate, source and target
        class codes, rows moved at the table's size);
        ``comparable_estimate``: the estimate on the bootstrap's rows, scaled
        to every row, to set against ``clean_estimate`` at one size (the
        estimate on clean labels grows as the rows it is fitted on shrink);
        ``critical_statistic``; ``bootstrap_rows``.
    """

    posterior: np.ndarray
    true_posterior: np.ndarray
    transition: np.ndarray
    inverse_temperature_clean: float
    inverse_temperature: float
    statistic: float
    p_value: float
    estimated_flips: float
    clean_estimate: float
    clean_estimate_upper: float
    n_fit: int
    n_bootstrap: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def excess(self) -> float:
        """Flips beyond what clean labels give: the estimate on the bootstrap's rows or, when
        larger, on every row (conservative), less the clean labels' estimate at the bootstrap's
        size."""
        return max(self.estimated_flips, self.extra.get("comparable_estimate", self.estimated_flips)) \
            - self.clean_estimate

    def summary(self) -> dict[str, Any]:
        return {
            "test": "likelihood ratio, flips vs temperature-calibrated clean labels "
                    "(parametric bootstrap)",
            "statistic": round(float(self.statistic), 4),
            "p_value": float(self.p_value),
            "estimated_flips": round(float(self.estimated_flips), 2),
            "clean_estimate": round(float(self.clean_estimate), 2),
            "clean_estimate_upper": round(float(self.clean_estimate_upper), 2),
            "inverse_temperature_clean": round(float(self.inverse_temperature_clean), 4),
            "inverse_temperature": round(float(self.inverse_temperature), 4),
            "transition": np.round(self.transition, 4).tolist(),
            "n_fit": int(self.n_fit),
            "n_bootstrap": int(self.n_bootstrap),
            "power_at_10pct_random_flips": self.extra.get("power"),
            "power_at_targeted_flips": self.extra.get("power_targeted"),
        }


def fit_noise_model(labels: np.ndarray, probs: np.ndarray, *, n_bootstrap: int = 19,
                    n_power: int = 8, power_rate: float = 0.1, targeted_rate: float = 0.3,
                    max_fit_samples: int = 20_000, max_bootstrap_samples: int | None = None,
                    rng=None) -> NoiseFit:
    """Fit the clean (H0) and flipped (H1) label models and test H0 against H1.

    Parameters
    ----------
    labels : ndarray of int, shape (n_samples,)
    probs : ndarray of shape (n_samples, K)
        Out-of-sample class probabilities (out-of-fold, leave-one-out).
    n_bootstrap : int, default=19
        Parametric-bootstrap draws under H0 for the p-value (19 draws give
        p-values down to 0.05).
    n_power : int, default=10
        Draws under H0 with ``power_rate`` random flips added, to measure
        the test's power: a "clean" verdict needs a test that would have
        seen such flips.
    power_rate : float, default=0.1
    targeted_rate : float, default=0.3
        The power is also measured against a targeted attack: this share of
        the smallest class's rows moved to the largest class (the attack a
        fraud or diagnosis label invites: positives relabelled negative).
        Random flips of 10 % of a large table are thousands of rows; 30 % of
        a 1 % class is 0.3 % of the rows, and a test that sees the first can
        be blind to the second.  Simulated with its own generator (seeded
        from ``rng``'s state, which it does not advance), so adding it moved
        no other figure.
    max_fit_samples : int, default=20_000
        Fit the parameters on a seeded subsample of at most this many rows;
        posteriors are then computed for every row.
    max_bootstrap_samples : int, optional
        Rows per bootstrap refit; the observed statistic is recomputed on
        the same subsample so both are compared at one size.  Default:
        ``max(2_000, 10_000 // K)`` (a refit costs rows x classes; a binary
        table of 25,000 rows with 3 % label errors was rejected by 2 of 6
        seeds at 2,000 rows and by 5 of 6 at 5,000).
    rng : numpy RandomState

    Returns
    -------
    NoiseFit
    """
    rng = np.random.RandomState(0) if rng is None else rng
    labels = np.asarray(labels, dtype=np.int64)
    n, K = probs.shape
    lq_all = _log_q(probs)
    fit_rows = np.arange(n) if n <= max_fit_samples else np.sort(rng.choice(n, max_fit_samples, replace=False))
    lq, y = lq_all[fit_rows], labels[fit_rows]
    a0, _, ll0 = _fit_h0(lq, y)
    a1, T, _, _, ll1, _ = _fit_h1(lq, y, K, a0)
    # Posteriors for every row with the fitted parameters.
    pi_all = _tempered(lq_all, a1)
    lik = pi_all * T[:, labels].T
    r_all = lik / np.clip(lik.sum(axis=1, keepdims=True), 1e-300, None)
    post = 1.0 - r_all[np.arange(n), labels]
    est = float(post.sum())

    # Parametric bootstrap under H0 on a subsample of at most max_bootstrap_samples rows.
    if max_bootstrap_samples is None:
        max_bootstrap_samples = max(2_000, 10_000 // K)
    m = min(len(fit_rows), max_bootstrap_samples)
    sub = np.arange(len(fit_rows)) if m == len(fit_rows) else np.sort(rng.choice(len(fit_rows), m, replace=False))
    lq_s, y_s = lq[sub], y[sub]
    rows = np.arange(m)
    if m == len(fit_rows):
        stat_obs = max(0.0, 2.0 * (ll1 - ll0))
        est_cmp = est
    else:
        # The estimate is biased upward by the fitted flip matrix's K(K-1) free entries, and
        # the more so the fewer rows it is fitted on: compare with the null's at one size.
        stat_obs, r_s = _statistic(lq_s, y_s, K, a0)
        est_cmp = float((1.0 - r_s[rows, y_s]).sum()) * n / m
    cum = np.cumsum(_tempered(lq_s, a0), axis=1)

    def draw(rate: float) -> np.ndarray:
        ys = np.minimum((rng.random_sample(m)[:, None] > cum).sum(axis=1), K - 1)
        if rate > 0:
            hit = rng.random_sample(m) < rate
            shift = rng.randint(1, K, size=m)
            ys = np.where(hit, (ys + shift) % K, ys)
        return ys

    null_stats, null_ests = [], []
    for _ in range(n_bootstrap):
        ys = draw(0.0)
        stat, r = _statistic(lq_s, ys, K, a0)
        null_stats.append(stat)
        null_ests.append(float((1.0 - r[rows, ys]).sum()) * n / m)
    null_stats = np.asarray(null_stats)
    null_ests = np.asarray(null_ests) if null_ests else np.zeros(1)
    critical = float(np.max(null_stats)) if len(null_stats) else np.inf
    tie = 1e-6 * max(1.0, abs(stat_obs))
    p_value = float((1 + np.count_nonzero(null_stats >= stat_obs - tie)) / (n_bootstrap + 1))
    hits = 0
    for _ in range(n_power):
        ys = draw(power_rate)
        hits += _statistic(lq_s, ys, K, a0)[0] > critical + tie
    power = hits / n_power if n_power else float("nan")
    # Power against a targeted attack on the smallest class, with a generator of its own.
    counts = np.bincount(y_s, minlength=K)
    src = int(np.argmin(np.where(counts > 0, counts, np.iinfo(np.int64).max)))
    dst = int(np.argmax(np.where(np.arange(K) == src, -1, counts)))
    t_rng = np.random.RandomState(int(rng.get_state()[1][0]))
    t_hits = 0
    for _ in range(n_power):
        ys = np.minimum((t_rng.random_sample(m)[:, None] > cum).sum(axis=1), K - 1)
        ys = np.where((ys == src) & (t_rng.random_sample(m) < targeted_rate), dst, ys)
        t_hits += _statistic(lq_s, ys, K, a0)[0] > critical + tie
    power_targeted = t_hits / n_power if n_power else float("nan")
    return NoiseFit(posterior=post, true_posterior=r_all, transition=T,
                    inverse_temperature_clean=a0, inverse_temperature=a1,
                    statistic=float(stat_obs), p_value=p_value, estimated_flips=est,
                    clean_estimate=float(null_ests.mean()),
                    clean_estimate_upper=float(np.quantile(null_ests, 0.95)),
                    n_fit=len(fit_rows), n_bootstrap=int(n_bootstrap),
                    extra={"power": power, "power_rate": power_rate, "power_targeted": power_targeted,
                           "targeted": {"rate": targeted_rate, "source": src, "target": dst,
                                        "rows": int(round(targeted_rate * counts[src] * n / m))},
                           "comparable_estimate": est_cmp,
                           "critical_statistic": critical, "bootstrap_rows": int(m)})


def confident_count_null(probs: np.ndarray, inverse_temperature: float, *, n_draws: int = 19,
                         max_rows: int = 20_000, rng=None) -> tuple[float, float]:
    """What confident learning's count of label issues is on clean labels: its mean and 95th
    percentile over labels drawn from the tempered evidence (the likelihood-ratio test's H0).

    On a table where the classes overlap, the count includes the model's own errors (a clean
    ``make_classification`` table with out-of-fold accuracy 0.85 gives about 220 "issues" in
    2,000 rows); this is the figure to read it against.  The draws use a seeded subsample of
    at most ``max_rows`` rows, scaled to the whole table.  Flips the model absorbed into its
    probabilities raise this expectation too, so a count near it is no evidence either way.
    """
    from ._confident import confident_joint

    rng = np.random.RandomState(0) if rng is None else rng
    n, K = probs.shape
    rows = np.arange(n) if n <= max_rows else np.sort(rng.choice(n, max_rows, replace=False))
    cum = np.cumsum(_tempered(_log_q(probs[rows]), inverse_temperature), axis=1)
    counts = []
    for _ in range(n_draws):
        ys = np.minimum((rng.random_sample(len(rows))[:, None] > cum).sum(axis=1), K - 1)
        joint, _ = confident_joint(ys, probs[rows])
        counts.append(float(joint.sum() - np.trace(joint)) * n / len(rows))
    return float(np.mean(counts)), float(np.quantile(counts, 0.95))


def _statistic(lq, y, K, a0, max_iter=25):
    b0, _, l0 = _fit_h0(lq, y, a0)
    _, _, _, r, l1, _ = _fit_h1(lq, y, K, b0, max_iter=max_iter, tol=1e-6)
    return max(0.0, 2.0 * (l1 - l0)), r


def fdr_selection(posterior: np.ndarray, fdr: float) -> np.ndarray:
    """Rows flagged with Bayesian false-discovery rate at most ``fdr``.

    Sort rows by local fdr ``1 - posterior`` and keep the longest prefix
    whose mean lfdr is at most ``fdr`` (Sun & Cai 2007; the posterior
    analogue of Benjamini & Hochberg 1995).  Its expected share of clean
    rows is at most ``fdr`` when the posteriors are calibrated.
    """
    post = np.asarray(posterior, dtype=np.float64)
    order = np.argsort(-post, kind="stable")
    lfdr = 1.0 - post[order]
    running = np.cumsum(lfdr) / np.arange(1, len(lfdr) + 1)
    ok = np.flatnonzero(running <= fdr + 1e-12)
    mask = np.zeros(len(post), dtype=bool)
    if len(ok):
        mask[order[: ok[-1] + 1]] = True
    return mask


def f1_selection(posterior: np.ndarray) -> np.ndarray:
    """Rows flagged to maximise the expected F1 given calibrated posteriors.

    Top-``m`` rows by posterior, ``m`` maximising the plug-in expected F1
    ``2 sum_{top m} p / (m + sum_all p)`` (Jansche 2007; Nan, Chai, Lee &
    Chieu 2012, "Optimizing F-measure: a tale of two approaches"; the
    optimal cut-off is half the attainable F1, Lipton et al. 2014).
    """
    post = np.asarray(posterior, dtype=np.float64)
    order = np.argsort(-post, kind="stable")
    cum = np.cumsum(post[order])
    m = np.arange(1, len(post) + 1)
    f1 = 2.0 * cum / (m + post.sum())
    mask = np.zeros(len(post), dtype=bool)
    if len(post) and f1.max() > 0:
        mask[order[: int(np.argmax(f1)) + 1]] = True
    return mask


@dataclass
class BoundaryTest:
    """Outcome of :func:`boundary_test`.

    Attributes
    ----------
    rows : ndarray of bool, shape (n_samples,)
        Uncertain rows (calibrated top probability below ``band``) whose
        label is not the calibrated model's most probable class.
    observed, expected : float
        Their number and its expectation under clean labels (on the rows
        tested: every row, or a seeded subsample).
    excess : float
        ``observed - expected``, scaled to every row: the number of labels in
        the band that calibration does not explain.
    p_value : float
        One-sided Monte Carlo p-value of ``observed`` under clean labels.
    n_band : int
        Uncertain rows tested.
    """

    rows: np.ndarray
    observed: float
    expected: float
    excess: float
    p_value: float
    n_band: int

    def summary(self) -> dict[str, Any]:
        return {"test": "labels of uncertain rows against the calibrated model's most probable class "
                        "(Monte Carlo, one-sided)",
                "observed": round(float(self.observed), 2), "expected": round(float(self.expected), 2),
                "excess": round(float(self.excess), 2), "p_value": float(self.p_value),
                "n_band": int(self.n_band)}


def boundary_test(labels: np.ndarray, probs: np.ndarray, inverse_temperature: float, *, band: float = 0.8,
                  n_draws: int = 999, max_samples: int = 20_000, rng=None) -> BoundaryTest:
    """Do the uncertain rows disagree with the model more often than calibration allows?

    ``pi = normalise(probs ** a)`` is the temperature-calibrated model (``a``
    fitted under clean labels, :func:`fit_noise_model`).  Among the rows
    whose top calibrated probability is below ``band``, count those whose
    label is not the top class: under clean labels each does so with
    probability ``1 - max(pi)``, independently, so the count's null
    distribution is a Poisson-binomial, sampled ``n_draws`` times (Besag &
    Clifford 1989).  Boundary flips -- labels of rows near the decision
    boundary moved to the other side (:class:`~flipguard.attacks.BoundaryFlip`;
    Biggio et al. 2011) -- invert the band and push the count up; random
    flips of confident rows do not (temperature scaling absorbs them into a
    lower ``a``, which lowers the count).

    Parameters
    ----------
    labels : ndarray of int, shape (n_samples,)
    probs : ndarray of shape (n_samples, K)
        Out-of-sample probabilities.
    inverse_temperature : float
        ``a`` of the clean-label fit (``NoiseFit.inverse_temperature_clean``).
    band : float, default=0.8
        Rows whose calibrated top probability is below this are "uncertain".
    n_draws : int, default=999
    max_samples : int, default=20_000
        Test on a seeded subsample of at most this many rows; ``excess`` is
        scaled to every row and ``rows`` covers every row.
    rng : numpy RandomState
    """
    rng = np.random.RandomState(0) if rng is None else rng
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    pi = _tempered(_log_q(probs), float(inverse_temperature))
    top = np.argmax(pi, axis=1)
    pmax = pi[np.arange(n), top]
    uncertain = pmax < band
    rows = uncertain & (top != labels)
    sub = np.arange(n) if n <= max_samples else np.sort(rng.choice(n, max_samples, replace=False))
    q = 1.0 - pmax[sub][uncertain[sub]]
    observed = float(np.count_nonzero(rows[sub]))
    expected = float(q.sum())
    exceed = 0
    for start in range(0, n_draws, 64):  # chunks keep the draws' memory small
        k = min(64, n_draws - start)
        draws = (rng.random_sample((k, len(q))) < q).sum(axis=1)
        exceed += int(np.count_nonzero(draws >= observed))
    p_value = (1 + exceed) / (n_draws + 1)
    return BoundaryTest(rows=rows, observed=observed, expected=expected,
                        excess=(observed - expected) * n / len(sub), p_value=float(p_value),
                        n_band=int(len(q)))


def anchor_flip_rates(probs: np.ndarray, quantile: float = 0.97) -> np.ndarray:
    """Class-conditional flip rates read off the rows each class is surest of.

    ``T[s, t]`` is the mean probability of ``t`` over the rows whose
    probability of ``s`` is in its top ``1 - quantile``: where the clean
    classes have "anchor points" (rows certainly of one class), a model fitted
    to labels of which a share ``rho`` of class ``s`` was moved to ``t``
    predicts about ``rho`` for ``t`` there (Patrini et al. 2017, who take the
    97th percentile for robustness; Menon et al. 2015 for the binary case).
    Flips near the boundary leave the anchors alone; a targeted attack that
    moves rows of ``s`` anywhere in its region raises ``T[s, t]``.

    References
    ----------
    .. [1] G. Patrini, A. Rozza, A. K. Menon, R. Nock, L. Qu. "Making deep
       neural networks robust to label noise: a loss correction approach".
       CVPR 2017.
    .. [2] A. K. Menon, B. van Rooyen, C. S. Ong, R. C. Williamson. "Learning
       from corrupted binary labels via class-probability estimation". ICML
       2015.
    """
    probs = np.asarray(probs, dtype=np.float64)
    K = probs.shape[1]
    T = np.zeros((K, K))
    for s in range(K):
        anchors = probs[:, s] >= np.quantile(probs[:, s], quantile)
        T[s] = probs[anchors].mean(axis=0)
    return T


def band_replication(labels: np.ndarray, single_models, *, band: float = 0.8,
                     level: float = 0.025) -> dict[str, Any] | None:
    """Is the boundary band's excess also there in a single model's own calibrated probabilities?

    The band test (:func:`boundary_test`) takes the audit's evidence, a pool
    of models (the stack, and the neighbours mixed in), as calibrated up to one
    temperature.  A linear pool of calibrated forecasts is not calibrated
    (Ranjan & Gneiting 2010): where its members disagree -- the uncertain rows
    the band test reads -- a pool can be overconfident in a way no single
    temperature removes, and clean labels then look like flips moved across
    the boundary (measured on a clean 5-class table, docs/detection.md).
    Labels moved across the boundary are there whatever model reads them, so
    each single model of ``single_models`` (``(rows, {name: probs})``, the
    audit's candidates on the rows they were scored on) gets the same test
    with its own clean-label temperature; the excess counts as evidence only
    when one of them rejects at ``level`` too.  Requiring both can only lower
    the false-alarm rate.  Returns ``None`` when there is no single model to
    ask.

    References
    ----------
    .. [1] R. Ranjan, T. Gneiting. "Combining probability forecasts". JRSS B
       72(1), 2010.
    """
    if single_models is None:
        return None
    rows, probs = single_models
    if not probs:
        return None
    y = np.asarray(labels, dtype=np.int64)[rows]
    p_values = {}
    for name, q in probs.items():
        a, _, _ = _fit_h0(_log_q(q), y)
        p_values[name] = float(boundary_test(y, q, a, band=band, rng=np.random.RandomState(0)).p_value)
    return {"p_values": p_values, "level": float(level),
            "replicated": bool(any(v <= level for v in p_values.values()))}


def misfit_replication(labels: np.ndarray, probs: np.ndarray, alternatives, *, level: float = 0.025,
                       min_effect: float = 0.005, n_bootstrap: int = 39, band: float = 0.8,
                       band_min_effect: float = 0.01, z: float = 2.33,
                       rng=None) -> dict[str, Any] | None:
    """Are the dataset tests' excesses also there in evidence that fits the labels better?

    The likelihood-ratio test (:func:`fit_noise_model`) takes the evidence as
    what clean labels look like, up to one temperature.  A model too simple
    for the data (a linear model on classes made of several clusters) is
    confidently wrong in whole regions, and no temperature removes that: the
    test reads the model's own errors as flips.  Measured on 17 clean tables
    (docs/detection.md): ``--model logreg`` was called poisoned on 5, at the
    smallest p-value the bootstrap reaches, against a stated rate of 5 %.

    A misspecified model is one that other models beat at predicting the
    same labels out of sample.  The model's ``probs`` and the
    ``alternatives`` (``(rows, {name: probs})``, out-of-fold probabilities on
    the rows ``rows``) are stacked with the convex weights of least log-loss
    (:func:`flipguard.models.stack_weights`, as ``model="auto"`` does).  When
    the stack's log-loss is lower than the model's by ``z`` standard errors
    of the paired per-row difference (one-sided 1 %; Diebold & Mariano 1995
    compare forecasts this way), the model is *outfitted*, and its excess
    counts only if the stack's own likelihood ratio rejects at ``level`` with
    an excess of at least ``min_effect`` of its rows (and 3), and the band
    test's (:func:`boundary_test`) only if the stack's own band test rejects
    with an excess of at least ``band_min_effect`` of its rows: flips are
    there whatever model reads them, one model's errors are not.  The stack, not
    the single best alternative: single models too simple or too jumpy for a
    table reject on its clean labels as well (neighbours on clean Gaussian
    quantiles, gradient boosting on a clean 5-class table; measured), and a
    pool reads them best (docs/detection.md).  When the model is not
    outfitted both tests stand (``replicated`` and ``band_replicated`` are
    True).  Returns ``None`` when there is nothing to compare with.

    The price: flips that a flexible model learns (a flipped cluster it
    carves out) lower its log-loss and hide from the stack's test, so a
    simple model that saw them is outvoted and the verdict is
    ``inconclusive`` instead of ``poisoned``; the flags do not depend on it.

    References
    ----------
    .. [1] F. X. Diebold, R. S. Mariano. "Comparing predictive accuracy".
       Journal of Business & Economic Statistics 13(3), 1995.
    """
    from ..models import stack_weights

    if alternatives is None:
        return None
    rows, alts = alternatives
    if not alts:
        return None
    rows = np.asarray(rows)
    y = np.asarray(labels, dtype=np.int64)[rows]
    m = len(rows)
    idx = np.arange(m)
    own = np.asarray(probs, dtype=np.float64)[rows]
    names = ["model", *alts]
    members = [own, *(np.asarray(q, dtype=np.float64) for q in alts.values())]
    weights = stack_weights(members, y)
    stack = sum(w * q for w, q in zip(weights, members))
    # Per-row log-loss of the model minus the stack's: > 0 where the stack predicts better.
    d = np.log(np.clip(stack[idx, y], _EPS, 1.0)) - np.log(np.clip(own[idx, y], _EPS, 1.0))
    gain = float(d.mean())
    se = float(d.std(ddof=1) / np.sqrt(m)) if m > 1 else float("inf")
    out: dict[str, Any] = {
        "weights": {k: round(float(w), 2) for k, w in zip(names, weights)},
        "log_loss_gain": round(gain, 4), "standard_error": round(se, 4), "rows": int(m),
        "level": float(level), "outfitted": bool(gain > z * se)}
    out["replicated"] = out["band_replicated"] = True
    if out["outfitted"]:
        rng = rng if rng is not None else np.random.RandomState(0)
        fit = fit_noise_model(y, stack, n_bootstrap=n_bootstrap, rng=rng)
        excess = fit.excess
        bt = boundary_test(y, stack, fit.inverse_temperature_clean, band=band, rng=rng)
        out.update(p_value=float(fit.p_value), excess=round(float(excess), 1),
                   band_p_value=float(bt.p_value), band_excess=round(float(bt.excess), 1))
        out["replicated"] = bool(fit.p_value <= level and excess >= max(3.0, min_effect * m))
        out["band_replicated"] = bool(bt.p_value <= level and bt.excess >= max(3.0, band_min_effect * m))
    return out
