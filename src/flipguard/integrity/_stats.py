"""Statistics of label changes: class-balance drift and the shape of class-to-class transitions.

Two questions are asked of every comparison (verify, diff, ledger):

* **Did the class balance drift?**  A chi-square test of homogeneity on the
  2 x K table of class counts before and after (Pearson's test,
  ``scipy.stats.chi2_contingency``).
* **Are the changes concentrated in one class pair?**  Under *spread-out*
  relabelling (random flipping or annotation noise: Frénay & Verleysen,
  "Classification in the presence of label noise: a survey", IEEE TNNLS 2014,
  call it noisy-completely-at-random), a changed row's old class follows the
  old class distribution and its new class is any of the other classes with
  equal probability.  A targeted attack (Biggio, Nelson & Laskov, "Poisoning
  attacks against support vector machines", ICML 2012; Xiao et al.,
  "Adversarial label flips attack on support vector machines", ECAI 2012)
  moves one source class to one target class instead.  The off-diagonal
  transition counts are tested against the spread-out expectation with a
  chi-square goodness-of-fit test (``scipy.stats.chisquare``), and the
  largest pair with an exact one-sided binomial test (``scipy.stats.binomtest``,
  Bonferroni-corrected for the number of pairs).
"""

from __future__ import annotations

import functools
import unicodedata

import numpy as np

__all__: list[str] = []

ALPHA = 0.01
MIN_CHANGES = 5


def _escape(text: str) -> str:
    """``repr``-style, with every character a reader could not see or tell apart escaped."""
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ch == "\\" or ch == "'":
            out.append("\\" + ch)
        elif ch == " " or (ch.isprintable() and cat[0] not in "MZC"):
            out.append(ch)
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return "'" + "".join(out) + "'"


def _plain(text: str) -> bool:
    """Text that prints as exactly what it is: no padding, nothing invisible, nothing that composes."""
    if text != text.strip() or not text.isprintable():  # Cc, Cf, Cs, Co, Cn, Zl, Zp, Zs but ' ' (NBSP...)
        return False
    if text.isascii():
        return True
    # combining marks (NFD 'e' + U+0301 looks like NFC 'e\u0301'), non-NFC text, spaces other than ' '
    return unicodedata.is_normalized("NFC", text) and not any(
        unicodedata.category(ch)[0] in "MZ" and ch != " " for ch in text)


@functools.lru_cache(maxsize=1 << 16)
def _label_text_str(text: str) -> str:
    if text == "":
        return "<empty>"
    return text if _plain(text) else _escape(text)


def label_text(c) -> str:
    """A label as reports print it: ``<missing>`` for a null, ``<empty>`` for '', escaped when not plain.

    Labels are compared as exact text, so ``'benign '``, ``'dog\u200b'`` (a
    zero-width space), an NFD ``'cafe\u0301'`` and ``''`` are labels of their
    own; printed bare they would look like ``benign``, ``dog``, ``café`` and
    nothing.  Any label with leading or trailing whitespace, a control,
    format (Cf: zero-width, BOM, bidi), separator other than ' ' (NBSP) or
    unassigned character, a combining mark, or that is not in Unicode NFC, is
    shown quoted, with those characters escaped (``'dog\u200b'``).  Cached per
    distinct label (see :func:`label_texts` for a whole column).
    """
    if c is None:
        return "<missing>"
    return _label_text_str(c if isinstance(c, str) else str(c))


def label_texts(values) -> list[str]:
    """:func:`label_text` of each value, computed once per distinct value."""
    values = list(values)
    try:
        memo = {v: label_text(v) for v in dict.fromkeys(values)}
    except TypeError:  # unhashable values: one at a time
        return [label_text(v) for v in values]
    return [memo[v] for v in values]


def balance_drift(before: np.ndarray, after: np.ndarray, classes: list) -> dict:
    """Chi-square test of homogeneity of the class counts ``before`` vs ``after``."""
    before = np.asarray(before, dtype=np.int64)
    after = np.asarray(after, dtype=np.int64)
    nb, na = int(before.sum()), int(after.sum())
    out = {"test": "chi-square test of homogeneity (class counts before vs after)",
           "statistic": 0.0, "dof": 0, "p_value": 1.0, "drifted": False, "largest_shift": None}
    if nb == 0 or na == 0:
        return out
    pb, pa_ = before / nb, after / na
    k = int(np.argmax(np.abs(pa_ - pb)))
    out["largest_shift"] = {"label": classes[k], "before": float(pb[k]), "after": float(pa_[k])}
    keep = (before + after) > 0
    if keep.sum() < 2 or np.array_equal(before, after):
        return out
    from scipy import stats

    res = stats.chi2_contingency(np.vstack([before[keep], after[keep]]), correction=False)
    out.update(statistic=float(res.statistic), dof=int(res.dof), p_value=float(res.pvalue),
               drifted=bool(res.pvalue < ALPHA))
    return out


def transition_list(transitions: np.ndarray, classes: list) -> list[dict]:
    """Non-zero off-diagonal cells, largest first: ``[{"from", "to", "count"}]``."""
    src, dst = np.nonzero(transitions)
    order = np.lexsort((dst, src, -transitions[src, dst]))
    return [{"from": classes[int(src[i])], "to": classes[int(dst[i])], "count": int(transitions[src[i], dst[i]])}
            for i in order]


def change_shape(transitions: np.ndarray, before_counts: np.ndarray, classes: list) -> dict:
    """Concentrated in one class pair, or spread across classes?  (See the module docstring.)

    Returns a dict with ``verdict`` (``"none"``, ``"too_few"``, ``"single_pair"``,
    ``"concentrated"``, ``"uneven"`` or ``"spread"``), a plain-language
    ``reading``, the chi-square ``statistic``/``p_value`` and the ``top_pair``
    with its share, expected share and corrected binomial p-value.
    """
    transitions = np.asarray(transitions, dtype=np.int64)
    total = int(transitions.sum())
    out = {"total": total, "test": "chi-square goodness of fit of the off-diagonal transitions "
                                   "against relabelling spread across classes",
           "statistic": None, "p_value": None, "top_pair": None, "verdict": "none",
           "reading": "No label changed."}
    if total == 0:
        return out
    from scipy import stats

    k = len(classes)
    before_counts = np.asarray(before_counts, dtype=np.float64)
    sources = np.flatnonzero(before_counts > 0)
    src, dst = np.meshgrid(sources, np.arange(k), indexing="ij")
    cell = src != dst
    src, dst = src[cell], dst[cell]
    p_src = before_counts[src] / before_counts[sources].sum()
    expected_share = p_src / (k - 1)
    expected_share = expected_share / expected_share.sum()
    observed = transitions[src, dst]
    top = int(np.argmax(observed))
    top_count = int(observed[top])
    pair = (classes[int(src[top])], classes[int(dst[top])])
    share = top_count / total
    binom = stats.binomtest(top_count, total, float(expected_share[top]), alternative="greater")
    p_top = float(min(1.0, binom.pvalue * len(observed)))
    out["top_pair"] = {"from": pair[0], "to": pair[1], "count": top_count, "share": share,
                       "expected_share": float(expected_share[top]), "p_value": p_top}
    arrow = f"'{label_text(pair[0])}' -> '{label_text(pair[1])}'"
    if len(observed) < 2:
        out.update(verdict="single_pair",
                   reading=f"All {total} change(s) are {arrow}, the only possible pair here.")
        return out
    chi = stats.chisquare(observed, f_exp=expected_share * total)
    p = float(chi.pvalue)
    out.update(statistic=float(chi.statistic), p_value=p)
    if total < MIN_CHANGES:
        out.update(verdict="too_few", reading=f"Only {total} label change(s): too few to tell a targeted "
                                              f"attack from noise (largest pair {arrow}, {top_count}).")
    elif p < ALPHA and share >= 0.5 and p_top < ALPHA:
        out.update(verdict="concentrated", reading=(
            f"Concentrated: {top_count} of {total} changes ({share:.0%}) turned {arrow}, against "
            f"{expected_share[top]:.0%} expected if relabelling were spread across classes "
            f"(chi-square p = {p:.2g}). This is the signature of a targeted attack on one class pair."))
    elif p < ALPHA:
        out.update(verdict="uneven", reading=(
            f"Uneven: the {total} changes depart from a spread across classes (chi-square p = {p:.2g}) "
            f"without one dominant pair; the largest is {arrow} ({top_count}, {share:.0%})."))
    elif p < 0.05:  # suggestive, not significant at the reading's level: say which way it leans
        out.update(verdict="spread", reading=(
            f"Not clearly concentrated: {top_count} of the {total} changes ({share:.0%}) turned {arrow}, "
            f"against {expected_share[top]:.0%} expected if relabelling were spread across classes "
            f"(chi-square p = {p:.2g}, above the {ALPHA:g} this reading asks for): too few changes to call "
            "it targeted or random; look at the rows."))
    else:
        out.update(verdict="spread", reading=(
            f"Spread across classes: the {total} changes are consistent with random relabelling or "
            f"annotation noise (chi-square p = {p:.2g}); no class pair stands out."))
    return out
