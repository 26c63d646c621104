"""Binomial CUSUM charts with a threshold that bounds the false-alarm rate.

Each chart watches one count per batch: ``x`` suspects out of ``n`` rows.
Under "no flipping" the suspect rate is at most ``p0`` (calibrated on the
reference set); under the alternative it is ``p1 > p0``.  Page's CUSUM
(Page, 1954) accumulates the log-likelihood ratio of the two binomials::

    S_t = max(0, S_{t-1} + x_t log(p1/p0) + (n_t - x_t) log((1-p1)/(1-p0)))

and alarms when ``S_t >= h``.  Because ``exp(S_t)`` is the largest
likelihood ratio over every window ending at ``t`` and, when the true rate
is ``<= p0``, each such ratio has expectation ``<= 1``, Ville's inequality
gives ``P(S_t >= h) <= exp(-h)`` at every clean batch (Lorden, 1971: the
average run length to a false alarm is at least ``exp(h)``).  With ``m``
charts watched together, ``h = log(m * ARL)`` keeps the expected number of
false alarms at most one per ``ARL`` clean batches -- a bound, not an
approximation, as long as ``p0`` is not below the true clean rate (hence
the upper confidence bound used for ``p0``).

That condition is why ``p0`` is never capped below the measured rate: a
minority class whose clean rows look like another class more often than not
(clean suspect rate 0.6, say) needs ``p0 >= 0.6``.  Capping it (an earlier
version clipped it at 0.5) makes every clean batch push the chart up and
breaks the bound (about 30 times the stated false-alarm rate at 95:5).  When
the clean rate is so high that no design rate above it is plausible, the
chart is switched off instead (``LabelMonitor.active_``) and the monitor says
so; an upper bound of a rate with no trials at all is 1 (nothing known), which
switches its chart off too.

References
----------
E. S. Page (1954). Continuous inspection schemes. Biometrika 41, 100-115.
G. Lorden (1971). Procedures for reacting to a change in distribution.
Annals of Mathematical Statistics 42, 1897-1908.
A. Wald (1945). Sequential tests of statistical hypotheses. Annals of
Mathematical Statistics 16, 117-186.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import beta

__all__ = ["cusum_step", "log_ratio_weights", "pooled_upper_rate", "threshold_for_arl", "upper_rate"]


def threshold_for_arl(expected_run_length: float, n_charts: int) -> float:
    """``h = log(n_charts * ARL)``: at most one false alarm per ``ARL`` clean batches over all charts."""
    return float(math.log(max(float(expected_run_length), 1.0) * max(int(n_charts), 1)))


def upper_rate(successes: np.ndarray, trials: np.ndarray, confidence: float = 0.95,
               floor: float = 1e-4) -> np.ndarray:
    """One-sided upper confidence bound of a binomial rate (Jeffreys interval), at least ``floor``."""
    s = np.asarray(successes, dtype=np.float64)
    n = np.asarray(trials, dtype=np.float64)
    ub = beta.ppf(confidence, s + 0.5, np.maximum(n - s, 0.0) + 0.5)
    ub = np.where(n > 0, ub, 1.0)  # no trials: nothing is known about the rate
    return np.clip(ub, floor, 1.0 - floor)


def pooled_upper_rate(successes: np.ndarray, trials: np.ndarray, confidence: float = 0.99,
                      floor: float = 1e-4) -> np.ndarray:
    """Upper confidence bounds of many related binomial rates, shrunk towards their common rate.

    Empirical Bayes (beta-binomial): a Beta prior is fitted to all the rates by
    the method of moments (its strength capped at the median number of trials,
    so it never outweighs one rate's own data), then each rate's bound is the
    ``confidence`` quantile of its posterior.  A rate seen 0 times in 70 trials
    no longer gets the wide bound of 70 trials alone when dozens of similar
    rates were measured too; a rate with many hits keeps a high bound.
    """
    s = np.asarray(successes, dtype=np.float64)
    n = np.asarray(trials, dtype=np.float64)
    if len(s) < 6 or n.sum() == 0:
        return upper_rate(s, n, confidence, floor)
    m = min(max(s.sum() / n.sum(), 1e-6), 1.0 - 1e-6)
    ok = n > 0
    r = s[ok] / n[ok]
    var = np.var(r) - np.mean(m * (1 - m) / n[ok])
    kappa = m * (1 - m) / var - 1 if var > 0 else np.inf
    kappa = float(np.clip(kappa, 1.0, np.median(n[ok])))
    ub = beta.ppf(confidence, m * kappa + s, (1 - m) * kappa + np.maximum(n - s, 0.0))
    ub = np.where(n > 0, ub, 1.0)
    # Shrinkage may pull a sparse rate's bound below its own (unpooled) bound; never below its
    # own point estimate, which the false-alarm bound needs to cover.
    ub = np.maximum(ub, np.where(n > 0, s / np.maximum(n, 1.0), 0.0))
    return np.clip(ub, floor, 1.0 - floor)


def log_ratio_weights(p0: np.ndarray, p1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-suspect and per-other-row log-likelihood-ratio weights ``(log(p1/p0), log((1-p1)/(1-p0)))``."""
    p0 = np.asarray(p0, dtype=np.float64)
    p1 = np.asarray(p1, dtype=np.float64)
    return np.log(p1 / p0), np.log1p(-p1) - np.log1p(-p0)


def cusum_step(stat: np.ndarray, x: np.ndarray, n: np.ndarray, w_hit: np.ndarray,
               w_miss: np.ndarray) -> np.ndarray:
    """One CUSUM update for every chart at once (vectorised over charts)."""
    x = np.asarray(x, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    return np.maximum(0.0, stat + x * w_hit + (n - x) * w_miss)
