"""Streams of labelled batches and label-flipping attacks on them.

A stream attack is a small seeded object with ``poison(y, batch)``: it flips
labels of batch number ``batch`` (from ``start`` on) and returns the poisoned
labels and exactly which rows changed.  Each batch gets its own random
generator derived from ``(random_state, batch)``, so a batch is poisoned the
same way whatever happened before it (a restarted stream replays exactly).
"""

from __future__ import annotations

from collections.abc import Iterator
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state

from .._registry import Registry
from .._validation import Interval, validate_params
from ..exceptions import DataError, InvalidParameterError

__all__ = [
    "BaseStreamAttack",
    "BurstStreamFlip",
    "RandomStreamFlip",
    "STREAM_ATTACKS",
    "SwapStreamFlip",
    "TargetedStreamFlip",
    "iter_batches",
    "make_stream_attack",
]

STREAM_ATTACKS = Registry("stream attack", "attack_name")


def make_stream_attack(name: str, **params) -> BaseStreamAttack:
    """A stream attack by name: ``random``, ``burst``, ``targeted`` or ``swap``."""
    return STREAM_ATTACKS.make(name, **params)


class BaseStreamAttack(BaseEstimator):
    """Base of the stream attacks: flips labels of batches ``start, start+1, ...``.

    Parameters
    ----------
    rate : float in (0, 1], default=0.1
        Fraction of the rows concerned (each attack says which) that are flipped.
    start : int, default=0
        First poisoned batch (0-based).
    stop : int or None, default=None
        First batch no longer poisoned (``None``: never stops).
    random_state : int or None, default=0
        Seed; the same seed poisons the same rows of the same batch.
    """

    _parameter_constraints: dict = {
        "rate": [Interval(Real, 0, 1, closed="right")],
        "start": [Interval(Integral, 0, None, closed="left")],
        "stop": [Interval(Integral, 0, None, closed="left"), None],
        "random_state": [Interval(Integral, 0, None, closed="left"), None],
    }

    def __init__(self, *, rate=0.1, start=0, stop=None, random_state=0):
        self.rate = rate
        self.start = start
        self.stop = stop
        self.random_state = random_state

    def active(self, batch: int) -> bool:
        """Whether batch number ``batch`` is poisoned."""
        return batch >= self.start and (self.stop is None or batch < self.stop)

    def poison(self, y, batch: int, classes=None) -> tuple[np.ndarray, np.ndarray]:
        """``(y_poisoned, flip_mask)`` for batch number ``batch``; a flipped label always changes.

        ``classes`` are the stream's classes (e.g. the monitor's ``classes_``): the labels a
        ``random`` flip may write, also into a batch where only one class occurs.
        """
        validate_params(self)
        y = np.asarray(y)
        mask = np.zeros(len(y), dtype=bool)
        if not self.active(int(batch)) or len(y) == 0:
            return y.copy(), mask
        seed = 0 if self.random_state is None else int(self.random_state)
        rng = np.random.default_rng([seed, int(batch)])
        rows, new = self._flip(y, rng) if classes is None else self._flip(y, rng, classes=np.asarray(classes))
        out = y.copy()
        out[rows] = new
        mask[rows] = True
        if np.any(out[mask] == y[mask]):
            raise RuntimeError(f"{type(self).__name__} produced an unchanged flip")  # a bug
        return out, mask

    def _flip(self, y, rng):  # pragma: no cover - abstract
        raise NotImplementedError


def _classes(y, classes=None):
    """The classes a flip may write: the stream's (given), else those of the batch."""
    found = np.unique(y) if classes is None else np.unique(np.r_[np.asarray(classes), np.unique(y)])
    if len(found) < 2:
        raise DataError("a stream attack needs at least two classes: this batch has one; give the stream's "
                        "classes (make_stream_attack('random', classes=...), or poison(y, t, classes=...))")
    return found


@STREAM_ATTACKS.register("random")
class RandomStreamFlip(BaseStreamAttack):
    """Flip ``rate`` of every poisoned batch's rows to a uniformly chosen other class.

    With ``start > 0`` this is the "flip rate that switches on" of a stream.
    The other classes are the stream's: ``classes`` (or ``poison(..., classes=)``,
    which :func:`prequential_evaluation` passes), else those present in the
    batch (a batch of one class then cannot be flipped: ``DataError``).
    """

    _parameter_constraints: dict = {**BaseStreamAttack._parameter_constraints, "classes": ["array-like", None]}

    def __init__(self, *, rate=0.1, start=0, stop=None, classes=None, random_state=0):
        super().__init__(rate=rate, start=start, stop=stop, random_state=random_state)
        self.classes = classes

    def _flip(self, y, rng, classes=None):
        classes = _classes(y, self.classes if classes is None else classes)
        k = int(round(self.rate * len(y)))
        rows = rng.choice(len(y), size=k, replace=False)
        codes = np.searchsorted(classes, y[rows])
        shift = rng.integers(1, len(classes), size=k)
        return rows, classes[(codes + shift) % len(classes)]


@STREAM_ATTACKS.register("burst")
class BurstStreamFlip(RandomStreamFlip):
    """Random flips in bursts: ``burst_length`` poisoned batches every ``period`` batches from ``start``."""

    _parameter_constraints: dict = {
        **RandomStreamFlip._parameter_constraints,
        "burst_length": [Interval(Integral, 1, None, closed="left")],
        "period": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, *, rate=0.1, start=0, stop=None, burst_length=5, period=20, classes=None, random_state=0):
        super().__init__(rate=rate, start=start, stop=stop, classes=classes, random_state=random_state)
        self.burst_length = burst_length
        self.period = period

    def active(self, batch: int) -> bool:
        return super().active(batch) and (batch - self.start) % self.period < self.burst_length


@STREAM_ATTACKS.register("targeted")
class TargetedStreamFlip(BaseStreamAttack):
    """Relabel ``rate`` of the rows of class ``source`` as ``target`` in every poisoned batch."""

    def __init__(self, *, source=None, target=None, rate=0.2, start=0, stop=None, random_state=0):
        super().__init__(rate=rate, start=start, stop=stop, random_state=random_state)
        self.source = source
        self.target = target

    def _flip(self, y, rng, classes=None):
        if self.source is None or self.target is None or self.source == self.target:
            raise InvalidParameterError("TargetedStreamFlip needs two different classes source= and target=")
        rows = np.flatnonzero(y == self.source)
        k = int(round(self.rate * len(rows)))
        rows = rng.choice(rows, size=k, replace=False)
        return rows, np.full(k, self.target, dtype=y.dtype)


@STREAM_ATTACKS.register("swap")
class SwapStreamFlip(BaseStreamAttack):
    """Swap labels between classes ``a`` and ``b``: as many ``a -> b`` as ``b -> a`` flips.

    ``rate`` of the smaller of the two classes is flipped each way, so every
    class keeps exactly its count: a label-distribution test sees nothing.
    """

    def __init__(self, *, a=None, b=None, rate=0.2, start=0, stop=None, random_state=0):
        super().__init__(rate=rate, start=start, stop=stop, random_state=random_state)
        self.a = a
        self.b = b

    def _flip(self, y, rng, classes=None):
        if self.a is None or self.b is None or self.a == self.b:
            raise InvalidParameterError("SwapStreamFlip needs two different classes a= and b=")
        ra, rb = np.flatnonzero(y == self.a), np.flatnonzero(y == self.b)
        k = int(round(self.rate * min(len(ra), len(rb))))
        ra, rb = rng.choice(ra, size=k, replace=False), rng.choice(rb, size=k, replace=False)
        return np.r_[ra, rb], np.r_[np.full(k, self.b, dtype=y.dtype), np.full(k, self.a, dtype=y.dtype)]


def iter_batches(X, y, *, batch_size: int, n_batches: int, random_state=None) -> Iterator[tuple]:
    """``(X_batch, y_batch, rows)`` for ``n_batches`` batches drawn from a finite pool.

    The pool is shuffled and cut into batches; when it runs out it is reshuffled
    (sampling without replacement within each pass), so a long stream can come
    from a small data set.  ``rows`` are the pool positions of the batch.
    """
    X, y = np.asarray(X), np.asarray(y)
    n = len(y)
    if batch_size < 1 or batch_size > n:
        raise InvalidParameterError(f"batch_size must be between 1 and the pool size {n}; got {batch_size}")
    rng = check_random_state(random_state)
    order, pos = rng.permutation(n), 0
    for _ in range(int(n_batches)):
        if pos + batch_size > n:
            order, pos = rng.permutation(n), 0
        rows = order[pos:pos + batch_size]
        pos += batch_size
        yield X[rows], y[rows], rows
