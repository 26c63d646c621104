"""Impact assessment: what a label-flipping attack does to a model, measured honestly.

The experiment follows the threat model of the seed documents:

1. set aside a clean, stratified **holdout** — the authentic data the model
   will meet in the world;
2. poison the rest (the **store**) as an attacker poisons a stored dataset:
   one attack over all of it;
3. split the poisoned store into **train** and **validation**, as the victim
   would, and train a model on the poisoned training labels (and, for
   reference, one on the clean training labels);
4. score both models on the poisoned validation split (what the victim sees)
   and on the clean holdout (the truth).  The **illusion gap** is the poisoned
   model's validation accuracy minus its clean-holdout accuracy.

For a given seed the holdout and the train/validation split are the same rows
for every attack, so strategies are compared on identical splits.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
import zlib
from collections.abc import Iterable, Sequence

import numpy as np
from joblib import Parallel, delayed
from sklearn.dummy import DummyClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split

from ..attacks import FLIPPERS, make_flipper
from ..data import LabeledDataset, load
from ..exceptions import DataError, InvalidParameterError
from ..metrics import classification_report, illusion_gap
from ..models import make_model, model_name, single_threaded
from ._result import Assessment, BoundaryView, RunResult

__all__ = ["assess", "derive_seed"]

BASELINE = "none"


def derive_seed(*parts) -> int:
    """A stable 31-bit seed from ints, floats and strings (same on every process and run)."""
    words = []
    for p in parts:
        if isinstance(p, str):
            words.append(zlib.crc32(p.encode()))
        elif isinstance(p, float):
            words.append(int(round(p * 1_000_000)))
        else:
            words.append(int(p))
    return int(np.random.SeedSequence(words).generate_state(1)[0] >> 1)


def assess(
    data,
    *,
    strategies: Sequence[str] = ("random",),
    rates: Sequence[float] = (0.1, 0.2, 0.3),
    seeds: int | Sequence[int] = 3,
    models: Sequence = ("logreg",),
    holdout_size: float = 0.25,
    validation_size: float = 0.25,
    attack_params: dict[str, dict] | None = None,
    views: str | Iterable[tuple[str, float, str]] | None = "auto",
    detect: bool = False,
    detect_method: str = "auto",
    mitigate: Sequence[str] = (),
    n_jobs: int | None = None,
    verbose: bool | None = None,
    engine=None,
    ray_address: str | None = None,
) -> Assessment:
    """Sweep attacks x rates x seeds x models and measure the damage and the illusion gap.

    Parameters
    ----------
    data : LabeledDataset or tuple (X, y)
    strategies : sequence of str, default=("random",)
        Registered attack names (:data:`flipguard.attacks.FLIPPERS`).
    rates : sequence of float, default=(0.1, 0.2, 0.3)
        Attack budgets as fractions (of the store, or of the source class for
        ``targeted``).
    seeds : int or sequence of int, default=3
        ``n`` means seeds ``0 .. n-1``; each seed draws a new holdout, split,
        attack and model initialisation.
    models : sequence of str or classifiers, default=("logreg",)
        Victim models: names (``logreg``, ``linsvm``, ``rf``, ``hgb``, ``knn``,
        ``mlp``) or scikit-learn classifiers.
    holdout_size, validation_size : float, default=0.25
        Clean holdout fraction of all rows; validation fraction of the store.
    attack_params : dict, optional
        Extra parameters per strategy, e.g. ``{"targeted": {"source": "fraud"}}``.
    views : "auto", list of (strategy, rate, model) or None, default="auto"
        Decision-boundary pictures to compute for the report; ``"auto"`` draws
        each strategy at the rate nearest 0.2 for each model (first seed).
    detect : bool, default=False
        Also run label-flip detection on each attacked store and score it
        against the true flips (``extras["detection"]``).
    mitigate : sequence of str, default=()
        Mitigation strategies whose clean-holdout accuracy is reported next to
        the unmitigated model (``extras["mitigation"]``).
    n_jobs : int, optional
        Parallel workers (joblib); BLAS is pinned to one thread per worker.
    verbose : bool or None, default=None
        Show a progress bar with the time remaining on stderr.  ``None``
        shows it only when stderr is an interactive terminal (so scripts,
        notebooks' captured output and CI logs stay quiet); ``True`` always,
        ``False`` never.
    engine : {"local", "ray"} or Engine, optional
        ``"ray"`` runs each (seed, attack, rate) task as a Ray task (the data
        goes to Ray's object store once; see :func:`flipguard.engine.get_engine`)
        instead of joblib; ``n_jobs`` is then ignored.  Results are identical.
    ray_address : str, optional
        With ``engine="ray"``: ``"auto"`` or ``"ray://host:10001"`` to join a cluster.

    Returns
    -------
    Assessment

    Examples
    --------
    >>> from flipguard.data import make_sentiment_reviews
    >>> from flipguard.assess import assess
    >>> ds = make_sentiment_reviews(400, random_state=0)
    >>> a = assess(ds, strategies=["random"], rates=[0.2], seeds=1, views=None)
    >>> row = a.find("random", 0.2)
    >>> round(row["flip_rate"]["mean"], 2)
    0.2
    """
    t0 = time.perf_counter()
    ds = data if isinstance(data, LabeledDataset) else load(data)
    strategies = _unique(list(strategies), "strategies")
    rates = _unique([float(r) for r in rates], "rates")
    seed_list = list(range(seeds)) if isinstance(seeds, (int, np.integer)) else \
        _unique([int(s) for s in seeds], "seeds")
    models = list(models)
    attack_params = dict(attack_params or {})
    _check(ds, strategies, rates, seed_list, models, holdout_size, validation_size, attack_params)
    coded = {s: _params_in_codes(ds, s, p) for s, p in attack_params.items()}  # the flippers see codes
    model_names = _unique_names(models)
    view_set = _plan_views(views, strategies, rates, model_names)

    splits = {s: _split(ds, s, holdout_size, validation_size) for s in seed_list}
    tasks = [(s, BASELINE, 0.0) for s in seed_list]
    tasks += [(s, st, r) for s in seed_list for st in strategies for r in rates]

    def run(task):
        seed, strategy, rate = task
        return _run_task(ds, splits[seed], seed, strategy, rate, models, model_names,
                         coded.get(strategy, {}), view_set, seed_list[0], detect, detect_method,
                         tuple(mitigate))

    parallel = n_jobs not in (None, 1)
    outputs = []
    if engine not in (None, "local") or ray_address is not None:  # Ray tasks: one per (seed, attack, rate)
        from ..engine import get_engine

        eng = get_engine(engine, ray_address=ray_address,
                         progress=sys.stderr.isatty() if verbose is None else bool(verbose))
        shared = {"ds": ds, "splits": splits, "models": models, "model_names": model_names,
                  "attack_params": coded, "view_set": view_set, "view_seed": seed_list[0],
                  "detect": detect, "detect_method": detect_method, "mitigate": tuple(mitigate)}
        try:
            outputs = eng.map(_engine_task, tasks, shared=shared, desc=f"{len(tasks)} runs")
        finally:
            eng.close()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if outputs:
            gen = iter(())
        elif parallel:
            gen = Parallel(n_jobs=n_jobs, return_as="generator_unordered")(
                delayed(_pinned)(run, t) for t in tasks)
        else:
            gen = (run(t) for t in tasks)
        show = sys.stderr.isatty() if verbose is None else bool(verbose)
        outputs = outputs or list(_with_progress(gen, len(tasks), show,
                                                  f"{len(tasks)} runs x {len(models)} model(s)"))

    baseline = {(o["seed"], m): o["models"][m] for o in outputs if o["strategy"] == BASELINE
                for m in model_names}
    runs, built_views = [], []
    for o in sorted(outputs, key=lambda o: (o["seed"], o["strategy"] != BASELINE,
                                            _order(strategies, o["strategy"]), o["rate"])):
        split = splits[o["seed"]]
        y_val_seen = o["y_store_poisoned"][split["val"]]
        y_hold = ds.y[split["holdout"]]
        for m in model_names:
            clean_pred = baseline[(o["seed"], m)]
            pois_pred = o["models"][m]
            clean = {"poisoned_validation": _report(ds, y_val_seen, clean_pred["val"]),
                     "clean_holdout": _report(ds, y_hold, clean_pred["holdout"])}
            pois = {"poisoned_validation": _report(ds, y_val_seen, pois_pred["val"]),
                    "clean_holdout": _report(ds, y_hold, pois_pred["holdout"])}
            extras = {"note": o["note"]} if o.get("note") else {}
            if o.get("detection") is not None:
                extras["detection"] = o["detection"]
            if pois_pred.get("mitigation"):
                extras["mitigation"] = pois_pred["mitigation"]
            runs.append(RunResult(
                strategy=o["strategy"], rate=o["rate"], seed=o["seed"], model=m,
                n_train=len(split["train"]), n_validation=len(split["val"]),
                n_holdout=len(split["holdout"]), n_flipped=o["n_flipped"],
                flip_rate=o["n_flipped"] / len(split["store"]),
                clean_model=clean, poisoned_model=pois,
                illusion_gap=illusion_gap(pois["poisoned_validation"]["accuracy"],
                                          pois["clean_holdout"]["accuracy"]),
                fit_seconds=pois_pred["seconds"], extras=extras,
            ))
        built_views.extend(o["views"])
    return Assessment(
        dataset={"source": ds.source, "n_samples": ds.n_samples, "n_features": ds.n_features,
                 "classes": [str(c) for c in ds.classes], "label": ds.label_name,
                 "class_counts": ds.class_counts()},
        config={"strategies": strategies, "rates": rates, "seeds": seed_list, "models": model_names,
                "holdout_size": holdout_size, "validation_size": validation_size,
                "attack_params": attack_params, "detect": detect, "mitigate": list(mitigate)},
        runs=runs, views=built_views, seconds=time.perf_counter() - t0,
    )


# -- planning ----------------------------------------------------------------
def _check(ds, strategies, rates, seeds, models, holdout_size, validation_size, attack_params):
    for s in strategies:
        if s not in FLIPPERS:
            raise InvalidParameterError(f"Unknown attack strategy {s!r}; choose one of "
                                        f"{', '.join(sorted(FLIPPERS))}.")
    for s in attack_params:
        if s not in strategies:
            raise InvalidParameterError(f"attack_params names {s!r}, which is not among the strategies")
    if not strategies or not rates or not seeds or not models:
        raise InvalidParameterError("give at least one strategy, rate, seed and model")
    for r in rates:
        if not 0.0 < r <= 1.0:
            raise InvalidParameterError(f"rates must be in (0, 1]. Got {r} instead.")
    for name, v in (("holdout_size", holdout_size), ("validation_size", validation_size)):
        if not 0.0 < v < 1.0:
            raise InvalidParameterError(f"{name} must be in (0, 1). Got {v} instead.")
    for m in models:
        make_model(m)  # raises a clear error for unknown names
    if "alfa" in strategies and ds.n_classes != 2:  # said before any work, with the data's class names
        raise InvalidParameterError(
            f"ALFA attacks binary classifiers, but {ds.source} has {ds.n_classes} classes "
            f"({', '.join(map(str, ds.classes[:6]))}{', ...' if ds.n_classes > 6 else ''}); use another "
            "strategy or keep two classes")
    # the sizes train_test_split gives (test = ceil(size * n)): each split needs a row per class
    n_hold = math.ceil(holdout_size * ds.n_samples)
    n_val = math.ceil(validation_size * (ds.n_samples - n_hold))
    n_train = ds.n_samples - n_hold - n_val
    for name, size in (("holdout", n_hold), ("training", n_train), ("validation", n_val)):
        if size < ds.n_classes:
            raise InvalidParameterError(
                f"holdout_size={holdout_size:g} and validation_size={validation_size:g} leave {size} {name} "
                f"row(s) of {ds.n_samples}; each split needs at least one row per class ({ds.n_classes})")
    counts = np.bincount(ds.y, minlength=ds.n_classes)
    if counts.min() < 4:
        small = ds.classes[np.argmin(counts)]
        small = small.item() if hasattr(small, "item") else small
        raise DataError(f"{ds.source}: class {small!r} has {counts.min()} row(s); assessment needs "
                        "at least 4 per class to split holdout, train and validation")


def _params_in_codes(ds: LabeledDataset, strategy: str, params: dict) -> dict:
    """``params`` of one strategy with its classes (``source``, ``target``, ``pairs``) given as the
    data's labels turned into the label codes the flippers see; a value that is no class is refused
    before any work, with the data's classes."""
    def code(value, name):
        if value is None:
            return None
        hits = [i for i, c in enumerate(ds.classes.tolist()) if c == value]  # a few classes, not rows
        if not hits:
            raise InvalidParameterError(
                f"attack_params[{strategy!r}][{name!r}] = {value!r} is not a class of {ds.source}; classes: "
                f"{', '.join(map(str, ds.classes[:8]))}{', ...' if ds.n_classes > 8 else ''}")
        return hits[0]

    out = dict(params)
    for name in ("source", "target"):
        if name in out:
            out[name] = code(out[name], name)
    if out.get("pairs") is not None:
        pairs = list(out["pairs"].items() if isinstance(out["pairs"], dict) else out["pairs"])
        if all(isinstance(p, (tuple, list)) and len(p) == 2 for p in pairs):  # else the flipper says what is wrong
            out["pairs"] = [(code(a, "pairs"), code(b, "pairs")) for a, b in pairs]
    return out


def _unique(values: list, what: str) -> list:
    """``values`` without repeats, in their order; a repeat is said (a ``UserWarning``), since each
    (seed, strategy, rate) is one run and a repeated one would be averaged in as an extra seed."""
    unique = list(dict.fromkeys(values))
    if len(unique) < len(values):
        repeated = list(dict.fromkeys(v for i, v in enumerate(values) if v in values[:i]))
        warnings.warn(f"{what} repeat {', '.join(f'{v:g}' if isinstance(v, float) else str(v) for v in repeated)}: "
                      "each is run once", UserWarning, stacklevel=3)
    return unique


def _unique_names(models) -> list[str]:
    names, seen = [], {}
    for m in models:
        n = model_name(m)
        seen[n] = seen.get(n, 0) + 1
        names.append(n if seen[n] == 1 else f"{n}#{seen[n]}")
    return names


def _plan_views(views, strategies, rates, model_names) -> set:
    if views is None:
        return set()
    if views == "auto":
        rate = min(rates, key=lambda r: (round(abs(r - 0.2), 9), r))
        return {(s, rate, m) for s in strategies for m in model_names}
    return {(s, float(r), m) for s, r, m in views}


def _split(ds: LabeledDataset, seed: int, holdout_size: float, validation_size: float) -> dict:
    idx = np.arange(ds.n_samples)
    store, holdout = train_test_split(idx, test_size=holdout_size, stratify=ds.y,
                                      random_state=derive_seed(seed, "holdout"))
    store = np.sort(store)
    pos = np.arange(len(store))
    train_pos, val_pos = train_test_split(pos, test_size=validation_size, stratify=ds.y[store],
                                          random_state=derive_seed(seed, "validation"))
    return {"store": store, "holdout": np.sort(holdout),
            "train": np.sort(train_pos), "val": np.sort(val_pos)}


def _order(strategies, s):
    return strategies.index(s) if s in strategies else -1


# -- one task: flip once, fit every model ------------------------------------
def _pinned(fn, task):
    with single_threaded():
        return fn(task)


def _engine_task(task, shared):
    """One (seed, strategy, rate) task on an engine worker (:mod:`flipguard.engine`)."""
    seed, strategy, rate = task
    with warnings.catch_warnings(), single_threaded():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return _run_task(shared["ds"], shared["splits"][seed], seed, strategy, rate, shared["models"],
                         shared["model_names"], shared["attack_params"].get(strategy, {}), shared["view_set"],
                         shared["view_seed"], shared["detect"], shared["detect_method"], shared["mitigate"])


def _run_task(ds, split, seed, strategy, rate, models, model_names, params, view_set, view_seed,
              detect, detect_method, mitigate):
    X_store, y_store = ds.X[split["store"]], ds.y[split["store"]]
    if strategy == BASELINE:
        y_pois, n_flipped = y_store.copy(), 0
    else:
        flipper = make_flipper(strategy, rate=rate, random_state=derive_seed(seed, strategy, rate),
                               **params)
        _, y_pois = flipper.fit_resample(X_store, y_store)
        y_pois = np.asarray(y_pois, dtype=np.int64)
        n_flipped = int(flipper.n_flips_)
    tr, va = split["train"], split["val"]
    X_hold = ds.X[split["holdout"]]
    out = {"seed": seed, "strategy": strategy, "rate": rate, "n_flipped": n_flipped,
           "y_store_poisoned": y_pois, "models": {}, "views": [], "detection": None, "note": None}
    left = np.unique(y_pois[tr])
    if left.size < 2:  # e.g. targeted at rate 1 on two classes: no classifier trains on one class
        only = ds.classes[left[0]]
        out["note"] = (f"{strategy} at {rate * 100:g}% left one class ({str(only)!r}) in the poisoned training labels: "
                       "the victim model is taken to predict it for every row; no detection or mitigation")
    for model, name in zip(models, model_names):
        t = time.perf_counter()
        if left.size < 2:
            est = DummyClassifier(strategy="most_frequent")  # what any model learns from one class
        else:
            est = make_model(model, random_state=derive_seed(seed, "model", name))
        est.fit(X_store[tr], y_pois[tr])
        res = {"val": est.predict(X_store[va]), "holdout": est.predict(X_hold),
               "seconds": time.perf_counter() - t}
        if mitigate and strategy != BASELINE and left.size >= 2:
            res["mitigation"] = _mitigate(ds, X_store[tr], y_pois[tr], X_hold, ds.y[split["holdout"]],
                                          mitigate, model, derive_seed(seed, "mitigate", name))
        out["models"][name] = res
        # A decision-boundary picture needs two dimensions: none for a single feature.
        if (strategy, rate, name) in view_set and seed == view_seed and ds.n_features >= 2:
            clean = make_model(model, random_state=derive_seed(seed, "model", name))
            clean.fit(X_store[tr], y_store[tr])
            out["views"].append(_boundary_view(ds, X_store[tr], y_store[tr], y_pois[tr], clean, est,
                                               X_hold, ds.y[split["holdout"]], strategy, rate, name,
                                               seed=seed))
    if detect and strategy != BASELINE and left.size >= 2:
        out["detection"] = _detect(X_store, y_pois, y_pois != y_store, detect_method,
                                   models[0], derive_seed(seed, "detect"))
    return out


def _report(ds, y_true, y_pred) -> dict:
    return classification_report(y_true, y_pred, ds.n_classes, ds.classes)


def _detect(X, y_seen, is_flipped, method, model, seed):
    from ..detection import evaluate_detection

    return evaluate_detection((X, y_seen), is_flipped, method=method, model=model, random_state=seed)


def _mitigate(ds, X_train, y_train, X_hold, y_hold, strategies, model, seed):
    from ..mitigation import evaluate_mitigation

    return evaluate_mitigation(X_train, y_train, X_hold, y_hold, strategies=list(strategies),
                               model=model, random_state=seed)


# -- decision-boundary pictures ---------------------------------------------
#: Training rows a boundary view keeps at most (a seeded random sample beyond that).
VIEW_MAX_ROWS = 3000


def _view_rows(flipped: np.ndarray, max_points: int, rng: np.random.RandomState) -> np.ndarray:
    """Sorted positions of the rows a boundary view keeps.

    Every row when there are at most ``max_points``.  Otherwise a seeded random sample of
    ``max_points`` rows in which flipped and unflipped rows are each sampled up to their caps:
    each kind gets ``max_points // 2`` places, or all its rows when it has fewer, and the other
    kind fills the places left, so neither is asked for more rows than it has.
    """
    n = len(flipped)
    if n <= max_points:
        return np.arange(n)
    hit, rest = np.flatnonzero(flipped), np.flatnonzero(~flipped)
    half = max_points // 2
    n_hit = min(len(hit), max(half, max_points - len(rest)))
    n_rest = min(len(rest), max_points - n_hit)
    return np.sort(np.concatenate([rng.choice(hit, n_hit, replace=False),
                                   rng.choice(rest, n_rest, replace=False)]))


def _boundary_view(ds, X_tr, y_clean, y_pois, clean, poisoned, X_hold, y_hold, strategy, rate, name,
                   resolution: int = 160, max_points: int = VIEW_MAX_ROWS, seed: int = 0) -> BoundaryView:
    if ds.n_features == 2:
        pts, to_model, axes = X_tr, (lambda G: G), list(ds.feature_names)
        projection = "the two features"
    else:
        from sklearn.decomposition import PCA
        from sklearn.preprocessing import StandardScaler

        # Standardise first: on raw features the component with the largest unit (an
        # area in the thousands next to ratios near 0.1) takes the whole picture and the
        # points bunch in a corner.
        scaler = StandardScaler().fit(X_tr)
        pca = PCA(n_components=2, random_state=0).fit(scaler.transform(X_tr))
        pts = pca.transform(scaler.transform(X_tr))
        to_model = (lambda G: scaler.inverse_transform(pca.inverse_transform(G)))
        axes = ["PCA 1", "PCA 2"]
        projection = "the first two principal components of the standardised features"
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    pad = (hi - lo) * 0.08 + 1e-9
    gx = np.linspace(lo[0] - pad[0], hi[0] + pad[0], resolution)
    gy = np.linspace(lo[1] - pad[1], hi[1] + pad[1], resolution)
    GX, GY = np.meshgrid(gx, gy)
    grid = to_model(np.column_stack([GX.ravel(), GY.ravel()]))
    keep = _view_rows(y_clean != y_pois, max_points, np.random.RandomState(derive_seed(seed, "view", name)))
    return BoundaryView(
        title=f"{strategy} at {rate:.0%} — {name}", strategy=strategy, rate=rate, model=name,
        axis_names=axes, class_names=[str(c) for c in ds.classes], points=pts[keep],
        y_true=y_clean[keep], y_poisoned=y_pois[keep], grid_x=gx, grid_y=gy,
        clean_grid=clean.predict(grid).reshape(GX.shape),
        poisoned_grid=poisoned.predict(grid).reshape(GX.shape),
        clean_holdout_accuracy=float(np.mean(clean.predict(X_hold) == y_hold)),
        poisoned_holdout_accuracy=float(np.mean(poisoned.predict(X_hold) == y_hold)),
        n_rows=int(len(pts)), n_flipped=int(np.count_nonzero(y_clean != y_pois)), projection=projection,
    )


# -- progress ----------------------------------------------------------------
def _with_progress(gen, total: int, show: bool, what: str = "runs"):
    if not show:
        yield from gen
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(file=sys.stderr)
    with Progress(TextColumn(f"assessing {what}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("eta"), TimeRemainingColumn(), console=console, transient=True) as bar:
        job = bar.add_task("runs", total=total)
        for item in gen:
            bar.advance(job)
            yield item
