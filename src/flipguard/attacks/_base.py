"""The flipper protocol: ``fit_resample(X, y) -> (X, y_poisoned)`` plus exactly which rows changed.

Modelled on imbalanced-learn's samplers: the public :meth:`BaseFlipper.fit_resample`
validates parameters and data, resolves the budget, and calls the subclass's
private ``_flip`` hook, which only picks rows and their new label codes.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils import check_array, check_random_state
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import _check_feature_names_in, check_is_fitted, validate_data

from .._registry import Registry
from .._validation import Interval, validate_params
from ..exceptions import DataError, InvalidParameterError

__all__ = ["BaseFlipper", "Budget", "FLIPPERS", "flipper_names", "make_flipper", "register"]

#: name -> flipper class; filled by :func:`register`.
FLIPPERS = Registry("attack strategy", "strategy_name")
register = FLIPPERS.register
flipper_names = FLIPPERS.names


def make_flipper(name: str, **params) -> "BaseFlipper":
    """An unfitted flipper by registry name, e.g. ``make_flipper("random", rate=0.2)``."""
    return FLIPPERS.make(name, **params)


class Budget:
    """How many labels to flip: a total, or a count per class (label code order)."""

    def __init__(self, total: int, per_class: np.ndarray | None = None):
        self.total = int(total)
        self.per_class = per_class

    def __repr__(self) -> str:
        return f"Budget(total={self.total}, per_class={self.per_class})"


class BaseFlipper(BaseEstimator):
    """Base class of every label-flipping attack.

    Parameters shared by all flippers
    ---------------------------------
    rate : float in (0, 1] or dict, default=0.1
        Fraction of rows to flip, rounded down to whole rows
        (``floor(rate * n)``); a dict ``{label: fraction in [0, 1]}`` flips
        that fraction of each named class.  Ignored when ``n_flips`` is given.
    n_flips : int or dict, default=None
        Exact number of rows to flip; a dict ``{label: count}`` per class
        (whole numbers >= 0).
    random_state : int, RandomState instance or None, default=None
        Seeds every random choice; the same seed flips the same rows.  An int
        is salted first (:func:`attack_rng`), so the attack does not pick the
        rows a scikit-learn split seeded alike puts in one split; a
        ``RandomState`` is used as given.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Label values seen in ``y``.
    flip_mask_ : ndarray of bool, shape (n_samples,)
        True where the label was flipped.
    flipped_indices_ : ndarray of int
        Sorted row positions of the flipped labels.
    original_labels_ : ndarray
        Label each flipped row had before, aligned with ``flipped_indices_``.
    new_labels_ : ndarray
        Label each flipped row has now, aligned with ``flipped_indices_``;
        always different from ``original_labels_``.
    n_flips_ : int
        Number of flipped labels.
    sampling_strategy_ : dict
        ``{label: number of rows flipped away from it}`` (imbalanced-learn's
        name for what a sampler did per class).
    n_features_in_ : int
        Number of columns of ``X`` (when ``X`` is 2-D).
    feature_names_in_ : ndarray of str
        Column names of ``X`` when it is a pandas DataFrame with string names.

    Notes
    -----
    A flipper is an imbalanced-learn sampler (``fit_resample``) that never
    changes the number of rows or the features; it passes imbalanced-learn's
    ``parametrize_with_checks`` sampler checks (``tests/test_attacks.py``).
    ``y`` may be a 1-D array, a list, a pandas Series or DataFrame column, a
    column vector or a one-hot indicator matrix; it comes back in the same
    form.
    """

    _parameter_constraints: dict = {
        "rate": [Interval(Real, 0, 1, closed="right"), dict, None],
        "n_flips": [Interval(Integral, 0, None, closed="left"), dict, None],
        "random_state": ["random_state"],
    }
    #: Whether ``_flip`` uses the features (otherwise X may be anything row-indexable).
    _needs_X = False
    strategy_name = "base"

    def __init__(self, *, rate=0.1, n_flips=None, random_state=None):
        self.rate = rate
        self.n_flips = n_flips
        self.random_state = random_state

    def __sklearn_tags__(self):
        """A sampler's tags: imbalanced-learn's (when installed) so its checks and pipelines know it."""
        tags = super().__sklearn_tags__()
        try:
            from imblearn.utils._tags import InputTags, SamplerTags, Tags
        except ImportError:  # imbalanced-learn is optional
            tags.target_tags.required = True
            return tags
        out = Tags(estimator_type="sampler", target_tags=tags.target_tags, transformer_tags=None,
                   regressor_tags=None, classifier_tags=None, sampler_tags=SamplerTags())
        out.target_tags.required = True
        out.input_tags = InputTags(two_d_array=True, dataframe=True, sparse=True,
                                   string=not self._needs_X, allow_nan=not self._needs_X)
        return out

    # -- public ------------------------------------------------------------
    def fit(self, X, y):
        """Choose the flips (same as :meth:`fit_resample`) and return ``self``.

        The flipped rows are in ``flip_mask_`` / ``flipped_indices_``; use
        :meth:`fit_resample` to get the poisoned labels themselves.
        """
        self.fit_resample(X, y)
        return self

    def get_feature_names_out(self, input_features=None):
        """Feature names of the output: the input's, since a flipper never touches features."""
        check_is_fitted(self, "n_features_in_")
        return _check_feature_names_in(self, input_features)

    def fit_resample(self, X, y):
        """Flip labels of ``y``; ``X`` is returned unchanged.

        Returns
        -------
        X : as given
        y_poisoned : same container type and shape as ``y`` (ndarray, list,
            pandas Series or DataFrame, column vector, one-hot matrix)
        """
        validate_params(self)
        if y is None:
            raise DataError("requires y to be passed, but the target y is None: flipping needs labels")
        if X is not None and not self._needs_X:
            # Checked, not converted: X comes back as given (strings and NaN allowed).
            check_array(X, accept_sparse=True, dtype=None, ensure_all_finite=False)
        if X is not None and (hasattr(X, "shape") and len(X.shape) == 2 or hasattr(X, "columns")):
            validate_data(self, X, skip_check_array=True, reset=True)  # n_features_in_, feature_names_in_
        y_values = _as_1d(y)
        n = len(y_values)
        if self._needs_X:
            # Sparse input (scipy or pandas sparse columns) is densified: these attacks compute
            # distances or fit surrogate models that expect dense features.
            X_arr = check_array(X, dtype=np.float64, accept_sparse=["csr", "csc", "coo"])
            if hasattr(X_arr, "toarray"):
                X_arr = X_arr.toarray()
        else:
            X_arr = X
        if X is not None and _n_rows(X) != n:
            raise DataError(f"X has {_n_rows(X)} rows but y has {n} labels")
        classes, codes = np.unique(y_values, return_inverse=True)
        codes = codes.astype(np.int64)
        if len(classes) < 2:
            raise DataError("y has 1 class (a single class); flipping needs at least two")
        self.classes_ = classes
        rng = attack_rng(self.random_state)
        budget = self._resolve_budget(codes, len(classes))
        rows, new = self._flip(X_arr, codes, len(classes), budget, rng)
        rows = np.asarray(rows, dtype=np.int64)
        new = np.asarray(new, dtype=np.int64)
        order = np.argsort(rows, kind="stable")
        rows, new = rows[order], new[order]
        if len(np.unique(rows)) != len(rows) or np.any(new == codes[rows]):
            raise RuntimeError(f"{type(self).__name__} produced an invalid flip set")  # a bug
        poisoned = codes.copy()
        poisoned[rows] = new
        self.flip_mask_ = poisoned != codes
        self.flipped_indices_ = rows
        self.original_labels_ = classes[codes[rows]]
        self.new_labels_ = classes[new]
        self.n_flips_ = int(len(rows))
        away = np.bincount(codes[rows], minlength=len(classes))
        self.sampling_strategy_ = {_py(c): int(k) for c, k in zip(classes, away)}
        return X, _restore(y, classes[poisoned])

    # -- for subclasses ----------------------------------------------------
    def _flip(self, X, y, n_classes: int, budget: Budget, rng):  # pragma: no cover - abstract
        """Return ``(rows, new_codes)``: which rows to flip and their new label codes."""
        raise NotImplementedError

    def _resolve_budget(self, y: np.ndarray, n_classes: int, eligible: np.ndarray | None = None) -> Budget:
        """Turn ``rate``/``n_flips`` into a :class:`Budget` over ``eligible`` rows (default all)."""
        counts = np.bincount(y if eligible is None else y[eligible], minlength=n_classes)
        n = int(counts.sum())
        spec = self.n_flips if self.n_flips is not None else self.rate
        if spec is None:
            raise InvalidParameterError(f"{type(self).__name__}: give rate or n_flips")
        if isinstance(spec, dict):
            per = np.zeros(n_classes, dtype=np.int64)
            named: dict[int, object] = {}
            for label, amount in spec.items():
                idx = np.flatnonzero(self.classes_ == np.asarray(label, dtype=self.classes_.dtype))
                if len(idx) == 0:
                    raise InvalidParameterError(f"{type(self).__name__}: budget names class {label!r}, "
                                                f"which is not in y (classes: {', '.join(map(str, self.classes_))})")
                c = int(idx[0])
                if c in named:  # e.g. {"0": 0.5, 0: 0.2}: two keys for one class
                    raise InvalidParameterError(f"{type(self).__name__}: the budget names class "
                                                f"{_py(self.classes_[c])!r} twice ({named[c]!r} and {label!r}); "
                                                "give each class one amount")
                named[c] = label
                if self.n_flips is not None:
                    per[c] = self._class_count(label, amount)
                else:
                    per[c] = flips_for_rate(self._class_rate(label, amount), counts[c])
                if per[c] > counts[c]:
                    raise InvalidParameterError(f"{type(self).__name__}: cannot flip {per[c]} rows of class "
                                                f"{label!r}, which has {counts[c]}")
            return Budget(int(per.sum()), per)
        total = int(spec) if self.n_flips is not None else flips_for_rate(float(spec), n)
        if total > n:
            raise InvalidParameterError(f"{type(self).__name__}: cannot flip {total} of {n} eligible rows")
        return Budget(total)

    def _class_rate(self, label, amount) -> float:
        """A per-class ``rate`` value, checked: a fraction in [0, 1] (0: none of that class)."""
        ok = isinstance(amount, Real) and not isinstance(amount, bool) and math.isfinite(float(amount)) \
            and 0.0 <= float(amount) <= 1.0
        if not ok:
            raise InvalidParameterError(f"{type(self).__name__}: the rate of class {_py(label)!r} must be a "
                                        f"fraction in [0, 1]; got {_py(amount)!r}")
        return float(amount)

    def _class_count(self, label, amount) -> int:
        """A per-class ``n_flips`` value, checked: a whole number >= 0 (2.0 is 2; 2.7 is refused)."""
        if isinstance(amount, bool) or not isinstance(amount, Real) or not math.isfinite(float(amount)) \
                or float(amount) != int(amount) or int(amount) < 0:
            raise InvalidParameterError(f"{type(self).__name__}: n_flips of class {_py(label)!r} must be a "
                                        f"whole number of rows >= 0; got {_py(amount)!r}")
        return int(amount)


def flips_for_rate(rate: float, n: int) -> int:
    """Rows a ``rate`` flips of ``n``: ``floor(rate * n)``, rounded **down** (never more than the
    rate), with a tolerance for binary floating point (0.29 of 100 is 29, not 28)."""
    return int(math.floor(float(rate) * int(n) + 1e-9))


#: Mixed into an integer seed before any attack draws from it (see :func:`attack_rng`).
_SEED_SALT = 0x66_6C_69_70  # "flip"


def attack_rng(random_state) -> np.random.RandomState:
    """The random stream an attack draws from.

    An integer seed is not used as is: ``RandomState(seed).choice(n, k, replace=False)`` is
    ``RandomState(seed).permutation(n)[:k]``, the very permutation scikit-learn's
    ``train_test_split`` / ``ShuffleSplit`` / ``KFold(shuffle=True)`` take their test rows from
    with the same seed, so an attack and a victim's split seeded alike would flip exactly the
    rows that land in one split.  The seed is therefore mixed with a fixed salt
    (``SeedSequence([seed, salt])``): still one stream per seed, independent of any
    ``RandomState(seed)`` elsewhere.  A ``RandomState`` instance is used as given, ``None`` is
    NumPy's global stream (scikit-learn's convention).
    """
    if isinstance(random_state, Integral) and not isinstance(random_state, bool):
        state = np.random.SeedSequence([int(random_state), _SEED_SALT]).generate_state(1)[0]
        return np.random.RandomState(int(state))
    return check_random_state(random_state)


def select_top(scores: np.ndarray, y: np.ndarray, budget: Budget, eligible: np.ndarray | None = None) -> np.ndarray:
    """Rows with the highest ``scores`` within the budget (per class when it has one).

    Ties are broken by row order (stable), so the choice is deterministic.
    """
    scores = np.asarray(scores, dtype=np.float64)
    pool = np.arange(len(y)) if eligible is None else np.flatnonzero(eligible) \
        if np.asarray(eligible).dtype == bool else np.asarray(eligible)
    if budget.per_class is None:
        k = min(budget.total, len(pool))
        order = np.argsort(-scores[pool], kind="stable")[:k]
        return pool[order]
    chosen = []
    for c, k in enumerate(budget.per_class):
        if k <= 0:
            continue
        members = pool[y[pool] == c]
        order = np.argsort(-scores[members], kind="stable")[:k]
        chosen.append(members[order])
    return np.concatenate(chosen) if chosen else np.array([], dtype=np.int64)


def random_other_class(y: np.ndarray, n_classes: int, rng) -> np.ndarray:
    """For each code in ``y``, a uniformly random *different* class code."""
    return (y + rng.randint(1, n_classes, size=len(y))) % n_classes


def _n_rows(X) -> int:
    return X.shape[0] if hasattr(X, "shape") else len(X)


def _py(v):
    return v.item() if hasattr(v, "item") else v


def _as_1d(y) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim == 2 and arr.shape[1] == 1:  # a column vector or one-column DataFrame
        arr = arr.ravel()
    elif arr.ndim == 2 and type_of_target(arr) == "multilabel-indicator":
        if not np.all(arr.sum(axis=1) == 1):
            raise DataError("Multilabel and multioutput targets are not supported: each row of a 2-D y "
                            "must be one-hot (exactly one 1)")
        arr = arr.argmax(axis=1)
    if arr.ndim != 1:
        raise DataError(f"Multilabel and multioutput targets are not supported: y must be 1-D, "
                        f"got shape {arr.shape}")
    # missing labels first: scikit-learn's type_of_target says only "Input contains NaN"
    if arr.dtype.kind == "f":
        missing = np.isnan(arr)
    elif arr.dtype.kind == "O":  # None, or a NaN (the only value unequal to itself)
        missing = np.asarray(np.equal(arr, None) | np.not_equal(arr, arr), dtype=bool)
    else:
        missing = np.zeros(len(arr), dtype=bool)
    if missing.any():
        where = np.flatnonzero(missing)
        raise DataError(f"y has {len(where)} missing label(s) (None/NaN) at rows "
                        f"{', '.join(map(str, where[:5]))}{', ...' if len(where) > 5 else ''} (0-based): "
                        "drop those rows or give them a label first")
    kind = type_of_target(arr) if arr.dtype.kind in "fiub" and len(arr) else "binary"
    if kind in ("continuous", "continuous-multioutput"):
        raise DataError("Unknown label type: y has continuous values; flipping needs class labels")
    return arr


def _restore(y_in, values: np.ndarray):
    """Return ``values`` in the container type and shape of ``y_in``."""
    if hasattr(y_in, "columns") and hasattr(y_in, "index"):  # pandas DataFrame
        arr = np.asarray(y_in)
        if arr.shape[1] == 1:
            return type(y_in)(values.reshape(-1, 1), index=y_in.index, columns=y_in.columns).astype(y_in.dtypes)
        return type(y_in)(_one_hot(values, arr), index=y_in.index, columns=y_in.columns)
    if hasattr(y_in, "iloc") and hasattr(y_in, "index"):  # pandas Series
        return type(y_in)(values, index=y_in.index, name=getattr(y_in, "name", None)).astype(y_in.dtype)
    if isinstance(y_in, list):
        if y_in and isinstance(y_in[0], (list, tuple)):
            return _restore(np.asarray(y_in), values).tolist()
        return values.tolist()
    arr = np.asarray(y_in)
    if arr.ndim == 2 and arr.shape[1] == 1:
        return values.reshape(-1, 1).astype(arr.dtype, copy=False)
    if arr.ndim == 2:
        return _one_hot(values, arr)
    return values.astype(arr.dtype, copy=False)


def _one_hot(codes: np.ndarray, like: np.ndarray) -> np.ndarray:
    out = np.zeros_like(like)
    out[np.arange(len(codes)), np.asarray(codes, dtype=np.int64)] = 1
    return out
