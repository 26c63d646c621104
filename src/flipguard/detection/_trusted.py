"""Evidence from a small set of verified labels: a trusted model and a batched RONI test."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from numbers import Integral

import numpy as np
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning

from .._validation import HasMethods, Interval, StrOptions
from ..exceptions import DataError
from ..models import MODEL_NAMES, make_model, predict_scores, single_threaded
from ._base import BaseDetector, TrustedLabels, _Findings, _Inputs, is_sparse, register

__all__ = ["RoniResult", "TrustedModel", "roni_test", "trusted_model_probs", "verified_neighbour_flags"]

_SEED_MAX = np.iinfo(np.int32).max


def trusted_model_probs(X: np.ndarray, trusted: TrustedLabels, n_classes: int, *, model="logreg",
                        cv: int = 5, rng=None) -> np.ndarray:
    """Probabilities for every data row from a model fitted on the trusted rows only.

    Data rows that are themselves trusted rows get cross-fitted predictions
    (a model that did not see them), so their own verified label never
    leaks into their score.

    Returns
    -------
    ndarray of shape (n_samples, n_classes)
    """
    rng = np.random.RandomState(0) if rng is None else rng
    tX, ty = trusted.X, trusted.y
    if len(np.unique(ty)) < 2:
        raise DataError("the trusted set has a single class; a trusted model needs at least two")
    est = _fit(make_model(model, random_state=rng.randint(_SEED_MAX), sparse=is_sparse(tX)), tX, ty)
    probs = predict_scores(est, X, n_classes)
    rows, _ = trusted.in_data()
    if len(rows):
        in_data = np.asarray(trusted.rows) >= 0
        folds = _folds(len(ty), cv, rng)
        for f in range(folds.max() + 1):
            test = (folds == f) & in_data
            train = folds != f
            if not test.any() or len(np.unique(ty[train])) < 2:
                continue
            est_f = _fit(make_model(model, random_state=rng.randint(_SEED_MAX), sparse=is_sparse(tX)),
                         tX[train], ty[train])
            probs[np.asarray(trusted.rows)[test]] = predict_scores(est_f, tX[test], n_classes)
    return probs


@dataclass
class RoniResult:
    """Outcome of :func:`roni_test`.

    Attributes
    ----------
    groups : list of ndarray
        Row positions of each tested group.
    impact : ndarray of shape (n_groups,)
        Mean log-loss on the trusted rows with the group in the training data
        minus without it: **positive = the group's labels do harm** (the
        group is rejected).
    base_loss : float
        Mean trusted log-loss of the model trained on every untrusted row.
    """

    groups: list
    impact: np.ndarray
    base_loss: float

    @property
    def rejected(self) -> np.ndarray:
        return self.impact > 0


def roni_test(X: np.ndarray, labels: np.ndarray, trusted: TrustedLabels, groups, n_classes: int, *,
              model="logreg", max_fit_samples: int = 20_000, rng=None) -> RoniResult:
    """Reject On Negative Impact, one refit per *group* of candidate rows.

    The model is trained on the untrusted rows with their observed labels,
    then once more without each group; the change in log-loss on the trusted
    rows is the group's impact.  Testing groups (e.g. a region whose labels
    were flipped together) instead of single rows keeps the number of refits
    small and catches self-consistent flips that a single-row test cannot
    see, since each flipped row is supported by its flipped neighbours.
    Training sets above ``max_fit_samples`` rows are subsampled (seeded),
    always keeping the group's rows in the "with" fit.

    References
    ----------
    .. [1] B. Nelson, M. Barreno, F. J. Chi, A. D. Joseph, B. I. P. Rubinstein,
       U. Saini, C. Sutton, J. D. Tygar, K. Xia. "Exploiting Machine Learning
       to Subvert Your Spam Filter". USENIX LEET 2008 (the RONI defence).
    """
    rng = np.random.RandomState(0) if rng is None else rng
    n = len(labels)
    pool = np.ones(n, dtype=bool)
    rows, _ = trusted.in_data()
    pool[rows] = False
    candidates = np.flatnonzero(pool)
    if len(candidates) > max_fit_samples:
        base_rows = np.sort(rng.choice(candidates, size=max_fit_samples, replace=False))
    else:
        base_rows = candidates
    seed = rng.randint(_SEED_MAX)
    tX, ty = trusted.X, trusted.y

    def loss(train_rows) -> float:
        y_fit = labels[train_rows]
        if len(np.unique(y_fit)) < 2:
            return float("inf")
        est = _fit(make_model(model, random_state=seed, sparse=is_sparse(X)), X[train_rows], y_fit)
        p = predict_scores(est, tX, n_classes)
        return float(-np.mean(np.log(np.clip(p[np.arange(len(ty)), ty], 1e-6, 1.0))))

    base_loss = loss(base_rows)
    impact = np.zeros(len(groups))
    for g, members in enumerate(groups):  # one refit per group, not per row
        members = np.asarray(members)
        with_g = np.union1d(base_rows, members[pool[members]])
        without_g = np.setdiff1d(base_rows, members, assume_unique=False)
        impact[g] = loss(with_g) - loss(without_g)
    return RoniResult(groups=list(groups), impact=impact, base_loss=base_loss)


def candidate_groups(X: np.ndarray, labels: np.ndarray, suggested: np.ndarray, candidates: np.ndarray,
                     *, max_groups: int, min_group_size: int, rng) -> list[np.ndarray]:
    """Split candidate rows into groups of one flip direction and one region.

    Candidates are first split by (observed label, suggested label), then
    each part by k-means on standardised features into at most
    ``len(part) // min_group_size`` regions; ``max_groups`` caps the total
    (spread over the parts in proportion to their size).
    """
    cand = np.asarray(candidates)
    if len(cand) == 0:
        return []
    if is_sparse(X):
        from sklearn.utils.sparsefuncs import mean_variance_axis

        mu, var = mean_variance_axis(X.tocsr(), axis=0)
        sd = np.sqrt(var)
    else:
        mu = X.mean(axis=0)
        sd = X.std(axis=0)
    sd[sd == 0] = 1.0
    pair = labels[cand] * (int(max(labels.max(), suggested.max())) + 1) + suggested[cand]
    parts = [cand[pair == v] for v in np.unique(pair)]
    groups: list[np.ndarray] = []
    for part in parts:
        share = max(1, int(round(max_groups * len(part) / len(cand))))
        k = int(max(1, min(share, len(part) // max(1, min_group_size))))
        if k == 1:
            groups.append(np.sort(part))
            continue
        Z = ((X[part].toarray() if is_sparse(X) else X[part]) - mu) / sd  # one small group, dense
        km = KMeans(n_clusters=k, n_init=3, random_state=rng.randint(_SEED_MAX)).fit(Z)
        for c in range(k):
            members = part[km.labels_ == c]
            if len(members):
                groups.append(np.sort(members))
    return groups


@register("trusted")
class TrustedModel(BaseDetector):
    """Use a small set of verified labels: a trusted model plus a RONI test of suspect groups.

    1. A model fitted on the trusted rows only predicts every data row
       (cross-fitted for data rows that are trusted rows).  Rows it assigns
       to another class are *candidates*.
    2. Candidates are grouped by flip direction and region (k-means), and
       each group gets a Reject-On-Negative-Impact test (Nelson et al.,
       2008): retrain the base model without the group and see whether its
       log-loss on the trusted rows improves.  Groups whose labels do harm
       are flagged.
    3. Trusted rows that are part of the data are direct evidence: flagged
       when their observed label differs from the verified one, never
       flagged otherwise.

    This is the answer to *self-consistent* flips (``ClusterFlip``): a whole
    region relabelled together looks clean to out-of-fold confidence and to
    neighbour votes, because every flipped row is supported by its flipped
    neighbours; a model that never saw the poisoned labels is not fooled.

    Score: ``(1 - p_trusted[given] + rejected) / 2``, where ``rejected`` is 1
    for rows in a group the RONI test rejected; trusted rows in the data
    score 1 (flipped) or 0 (verified).  Higher = more likely flipped.
    Suggested label: the trusted model's prediction (the verified label for
    trusted rows).  Needs ``X`` and ``trusted``.

    Parameters
    ----------
    model : str or scikit-learn classifier, default="logreg"
        Used for the trusted model and for the RONI refits.
    roni : bool, default=True
        Run the RONI test; without it every candidate is flagged.
    max_groups : int, default=24
        At most this many RONI groups (refits).
    min_group_size : int, default=5
        Candidates per k-means region, at least.
    max_fit_samples : int, default=20_000
        RONI refits use at most this many rows (a seeded subsample).
    cv : int, default=5
        Folds for the cross-fitted predictions of trusted rows in the data.
    random_state : int, RandomState instance or None, default=None

    References
    ----------
    .. [1] B. Nelson et al. "Exploiting Machine Learning to Subvert Your Spam
       Filter". USENIX LEET, 2008 (Reject On Negative Impact).
    .. [2] B. Frenay, M. Verleysen. "Classification in the Presence of Label
       Noise: a Survey". IEEE TNNLS 25(5), 2014 (trusted / verified subsets).
    """

    _parameter_constraints = {
        "model": [StrOptions(set(MODEL_NAMES)), HasMethods(["fit", "predict"])],
        "roni": ["boolean"],
        "max_groups": [Interval(Integral, 1, None, closed="left")],
        "min_group_size": [Interval(Integral, 1, None, closed="left")],
        "max_fit_samples": [Interval(Integral, 10, None, closed="left")],
        "cv": [Interval(Integral, 2, None, closed="left")],
        "random_state": ["random_state"],
    }
    needs_pred_probs = False
    needs_X = True
    needs_trusted = True

    def __init__(self, *, model="logreg", roni=True, max_groups=24, min_group_size=5,
                 max_fit_samples=20_000, cv=5, random_state=None):
        self.model = model
        self.roni = roni
        self.max_groups = max_groups
        self.min_group_size = min_group_size
        self.max_fit_samples = max_fit_samples
        self.cv = cv
        self.random_state = random_state

    def _audit(self, inputs: _Inputs) -> _Findings:
        ev = trusted_evidence(inputs, model=self.model, roni=self.roni, max_groups=self.max_groups,
                              min_group_size=self.min_group_size,
                              max_fit_samples=self.max_fit_samples, cv=self.cv)
        return _Findings(scores=ev.scores, flags=ev.flags, suggested=ev.suggested,
                         components={"trusted": ev.scores}, quality_probs=ev.probs,
                         quality_name=f"{_name(self.model)} on {inputs.trusted.n_samples} trusted rows",
                         details=ev.details, warnings=ev.warnings)


@dataclass
class _TrustedEvidence:
    probs: np.ndarray
    scores: np.ndarray
    flags: np.ndarray
    suggested: np.ndarray
    rejected: np.ndarray     # rows in RONI-rejected groups
    verified_rows: np.ndarray
    verified_codes: np.ndarray
    details: dict
    warnings: list


def trusted_evidence(inputs: _Inputs, *, model, roni, max_groups, min_group_size, max_fit_samples,
                     cv, n_null_groups: int = 8, main_flags=None) -> _TrustedEvidence:
    """The trusted model's probabilities and RONI-rejected rows.

    Two safeguards keep trusted rows from doing harm:

    * **A calibrated cut-off.**  Besides the candidate groups, ``n_null_groups``
      groups of the same (median) size are drawn from rows nobody disputes;
      a candidate group is rejected only when its impact exceeds every null
      group's, so a clean group is rejected with probability at most
      ``1 / (n_null_groups + 1)`` (a permutation-style test; Good 2005).
    * **A fallback judged on the trusted rows.**  With ``main_flags`` (the
      rows the main evidence flags) and at least 5 trusted rows in the data,
      the trusted model's disputes are judged on what the user is after, the
      flags' F1 on the verified rows (out-of-sample for both: the trusted
      model is cross-fitted there).  They are added when the union of both
      flag sets has a higher F1 on the verified rows than the main flags
      alone, catches at least two verified flips the main flags miss, and
      the share of flipped rows among the verified rows it adds is
      convincingly above half the main flags' F1 there
      (:func:`_adds_to_f1`); otherwise they are not used and
      ``details["trusted_fallback"]`` says why.  With ``main_flags`` and
      fewer than 5 trusted rows in the data (verified rows added from
      elsewhere) that cannot be judged, and the disputes are not used either.
      Without ``main_flags`` (the ``trusted`` method) RONI tests them group
      by group.
    """
    labels, K, X, trusted, rng = inputs.labels, inputs.n_classes, inputs.X, inputs.trusted, inputs.rng
    n = len(labels)
    rows = np.arange(n)
    warns = []
    if len(np.unique(trusted.y)) >= 2:
        probs = trusted_model_probs(X, trusted, K, model=model, cv=cv, rng=rng)
        pred = np.argmax(probs, axis=1)
    else:  # no model from one class: the verified rows themselves are the only evidence
        probs = np.zeros((n, K))
        probs[rows, labels] = 1.0
        pred = labels.copy()
        warns.append("the trusted rows all have one class, so no trusted model was fitted; "
                     "only the trusted rows themselves are checked")
    candidates = np.flatnonzero(pred != labels)
    v_rows, v_codes = trusted.in_data()
    is_verified = np.zeros(n, dtype=bool)
    is_verified[v_rows] = True
    candidates = candidates[~is_verified[candidates]]
    rejected = np.zeros(n, dtype=bool)
    details = {"trusted_rows": trusted.n_samples, "trusted_rows_in_data": len(v_rows),
               "candidates": len(candidates)}
    if main_flags is not None and len(v_rows) >= 5 and len(np.unique(trusted.y)) >= 2:
        truth = v_codes != labels[v_rows]
        main_v = np.asarray(main_flags)[v_rows]
        union_v = main_v | (pred[v_rows] != labels[v_rows])
        f_main, f_union = _f1(truth, main_v), _f1(truth, union_v)
        added = union_v & ~main_v
        new = int(np.count_nonzero(truth & added))
        new_precision = new / max(1, int(added.sum()))
        details["trusted_model_on_verified"] = {"f1_main": round(f_main, 4),
                                                "f1_with_trusted_model": round(f_union, 4),
                                                "flips_only_it_catches": new,
                                                "precision_of_its_additions": round(new_precision, 4)}
        roni = False
        if f_union > f_main + 1e-12 and new >= 2 and _adds_to_f1(new, int(added.sum()), f_main):
            rejected[candidates] = True
            details["trusted_preferred"] = (
                f"adding the trusted model's disputes raises the F1 on the verified rows from {f_main:.2f} "
                f"to {f_union:.2f} (out-of-sample): every row it disputes is flagged")
        else:
            details["trusted_fallback"] = (
                f"adding the trusted model's disputes would not raise the F1 on the verified rows enough "
                f"({f_main:.2f} -> {f_union:.2f}, {new} more verified flips caught; out-of-sample): they "
                "were not used")
        candidates = candidates[:0]
    elif main_flags is not None:
        # ``auto`` adds the trusted model's disputes only where the verified rows show they help;
        # with fewer than 5 of them in the data that cannot be judged, and RONI's cut-off alone
        # flagged clean rows (breast cancer, 30 verified rows not in the data: 26 flags, no flip)
        roni = False
        details["trusted_fallback"] = (
            f"{len(v_rows)} of the trusted rows are rows of the data (at least 5 are needed to judge whether "
            "the trusted model's disputes help, out-of-sample): its disputes were not used")
        candidates = candidates[:0]
    if roni and len(candidates):
        groups = candidate_groups(X, labels, pred, candidates, max_groups=max_groups,
                                  min_group_size=min_group_size, rng=rng)
        quiet = np.flatnonzero(~is_verified & (pred == labels))
        size = int(np.median([len(g) for g in groups])) if groups else 0
        null = [np.sort(rng.choice(quiet, size=size, replace=False))
                for _ in range(n_null_groups)] if 0 < size <= len(quiet) else []
        result = roni_test(X, labels, trusted, list(groups) + null, K, model=model,
                           max_fit_samples=max_fit_samples, rng=rng)
        impact = result.impact[: len(groups)]
        cutoff = max(0.0, float(result.impact[len(groups):].max())) if null else 0.0
        bad = impact > cutoff
        for g, b in zip(groups, bad):
            if b:
                rejected[g] = True
        details.update({"roni_groups": len(groups), "roni_rejected_groups": int(bad.sum()),
                        "roni_rejected_rows": int(rejected.sum()), "roni_null_groups": len(null),
                        "roni_cutoff": round(cutoff, 6)})
    elif not roni:
        rejected[candidates] = True
    scores = (1.0 - probs[rows, labels] + rejected) / 2.0
    flags = rejected.copy()
    direct = v_codes != labels[v_rows]
    scores[v_rows] = direct.astype(float)
    flags[v_rows] = direct
    suggested = np.where(flags, pred, labels)  # an unflagged row keeps its label
    suggested[v_rows] = v_codes
    details["trusted_rows_flipped"] = int(direct.sum())
    return _TrustedEvidence(probs=probs, scores=scores, flags=flags, suggested=suggested,
                            rejected=rejected, verified_rows=v_rows, verified_codes=v_codes,
                            details=details, warnings=warns)


def _f1(truth: np.ndarray, flags: np.ndarray) -> float:
    tp = int(np.count_nonzero(truth & flags))
    denom = int(truth.sum() + flags.sum())
    return 2.0 * tp / denom if denom else 1.0


def _adds_to_f1(hits: int, added: int, f1: float, confidence: float = 0.8) -> bool:
    """Does adding a set whose verified rows show ``hits`` flips in ``added`` raise an F1 of ``f1``?

    Adding flags of precision ``p`` raises F1 exactly when ``p > F1 / 2``
    (Lipton, Elkan & Naryanaswamy 2014: the F1-optimal threshold is half
    the optimal F1).  On a few verified rows ``p`` is uncertain, so its
    one-sided ``confidence`` Clopper-Pearson lower bound must clear it.
    """
    from scipy.stats import binomtest

    if added == 0 or hits == 0:
        return False
    low = binomtest(hits, added).proportion_ci(confidence_level=2 * confidence - 1, method="exact").low
    return bool(low > f1 / 2.0)


def verified_neighbour_flags(X, labels: np.ndarray, v_rows: np.ndarray, v_codes: np.ndarray, *,
                             main_flags=None, n_neighbors=(1, 3, 5)) -> tuple[np.ndarray, dict]:
    """Rows whose nearest verified rows with the same observed label were mostly flipped.

    The verified rows in the data are ground truth about *where* labels were
    flipped: among the ``k`` verified rows nearest to row ``i`` that carry
    ``i``'s observed label, the share whose verified label differs is a
    nearest-neighbour estimate of the local flip rate for that label (Cover
    & Hart 1967), from verified labels only; row ``i`` is flagged when it
    exceeds one half.  Flips of one label in one region -- a flipped
    cluster (:class:`~flipguard.attacks.ClusterFlip`), a targeted class
    pair -- are what it finds; scattered random flips have no flipped
    verified neighbours and are left to the main evidence.

    ``k`` is chosen among ``n_neighbors`` on the verified rows themselves:
    each is predicted by the *other* verified rows (leave-one-out), and the
    ``k`` whose flags, added to ``main_flags`` (the main evidence's, all
    False when not given), give the best F1 on the verified rows wins.  The
    rule is applied only when that F1 is higher than the main flags' alone,
    it catches at least two verified flips they miss, and the precision of
    the verified rows it adds is convincingly above half the main flags' F1
    (:func:`_adds_to_f1`); otherwise nothing is
    flagged (``details`` says which and why): trusted rows never make the
    flags worse on the rows where the truth is known.

    Returns
    -------
    flags : ndarray of bool, shape (n_samples,)
    details : dict
    """
    from sklearn.neighbors import NearestNeighbors
    from sklearn.preprocessing import StandardScaler

    n = len(labels)
    none = np.zeros(n, dtype=bool)
    flipped = v_codes != labels[v_rows]
    info = {"verified_rows": int(len(v_rows)), "verified_flipped": int(flipped.sum())}
    if flipped.sum() < 2 or is_sparse(X):
        info["used"] = False
        info["why"] = ("fewer than two verified flips" if flipped.sum() < 2 else
                       "sparse features: no Euclidean neighbourhoods")
        return none, info
    Z = StandardScaler().fit_transform(X)
    Zv = Z[v_rows]
    ks = [int(k) for k in np.atleast_1d(n_neighbors)]
    kmax = max(ks)
    by_class = {}
    for c in np.unique(labels[v_rows]):  # one pass per observed class, vectorised over its rows
        mine = np.flatnonzero(labels[v_rows] == c)
        if len(mine) < 2:
            continue
        nn = NearestNeighbors(n_neighbors=min(kmax + 1, len(mine))).fit(Zv[mine])
        loo = flipped[mine][nn.kneighbors(Zv[mine], return_distance=False)[:, 1:]]  # drop each row itself
        by_class[c] = (mine, nn, loo)
    main_v = np.zeros(len(v_rows), dtype=bool) if main_flags is None else np.asarray(main_flags)[v_rows]
    f_main = _f1(flipped, main_v)
    best = None
    for k in ks:
        hit = np.zeros(len(v_rows), dtype=bool)
        for mine, _, loo in by_class.values():
            hit[mine] = loo[:, :k].mean(axis=1) > 0.5
        caught = int(np.count_nonzero(hit & flipped & ~main_v))  # verified flips only the rule catches
        added = int(np.count_nonzero(hit & ~main_v))
        f1 = _f1(flipped, main_v | hit)
        if best is None or f1 > best[0] + 1e-12:
            best = (f1, k, caught, int(hit.sum()), caught / max(1, added), added)
    f1, k, caught, n_hit, new_precision, added = best
    info.update({"k": k, "loo_flagged": n_hit, "loo_caught_beyond_main": caught,
                 "loo_precision_of_additions": round(new_precision, 4), "f1_main": round(f_main, 4),
                 "f1_with_rule": round(f1, 4)})
    if caught < 2 or f1 <= f_main + 1e-12 or not _adds_to_f1(caught, added, f_main):
        info["used"] = False
        info["why"] = (f"leave-one-out on the verified rows: the rule caught {caught} of {int(flipped.sum())} "
                       f"flips the main evidence misses, and the F1 there would go from {f_main:.2f} to {f1:.2f} "
                       f"with precision {new_precision:.2f} among the rows it adds (needs at least 2, a "
                       "higher F1 and a precision convincingly above half that F1)")
        return none, info
    flags = none.copy()
    for c, (mine, nn, _) in by_class.items():
        rows_c = np.flatnonzero(labels == c)
        idx = nn.kneighbors(Z[rows_c], n_neighbors=min(k, len(mine)), return_distance=False)
        flags[rows_c] = flipped[mine][idx].mean(axis=1) > 0.5
    flags[v_rows] = False  # the verified rows speak for themselves
    info["used"] = True
    info["flagged"] = int(flags.sum())
    return flags, info


def _fit(est, X, y):
    with warnings.catch_warnings(), single_threaded():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, y)
    return est


def _folds(n: int, cv: int, rng) -> np.ndarray:
    k = int(max(2, min(cv, n)))
    order = rng.permutation(n)
    folds = np.empty(n, dtype=np.int64)
    folds[order] = np.arange(n) % k
    return folds


def _name(model) -> str:
    return model if isinstance(model, str) else type(model).__name__
