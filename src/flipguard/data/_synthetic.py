"""Synthetic data sets, seeded."""

from __future__ import annotations

import numpy as np

from ..exceptions import InvalidParameterError
from ._dataset import LabeledDataset

__all__ = ["make_sentiment_reviews"]


def make_sentiment_reviews(n_samples: int = 1000, *, separation: float = 4.0,
                           separable: bool = True, random_state=None) -> LabeledDataset:
    """Customer reviews as two numeric features, negative and positive sentiment.

    The demonstration data of the seed documents: each review is encoded as two
    numbers (think of two TF-IDF or embedding directions, ``"polarity"`` and
    ``"intensity"``); one Gaussian cluster is negative, the other positive.

    Parameters
    ----------
    n_samples : int, default=1000
        Number of reviews, split as evenly as possible between the two classes.
    separation : float, default=4.0
        Distance between the two cluster centres, in standard deviations.
    separable : bool, default=True
        Mirror the few points that fall on the wrong side of the midline, so
        the classes are linearly separable (at any ``separation > 0``).
    random_state : int, RandomState instance or None, default=None
        Seed; the same seed gives the same reviews.

    Returns
    -------
    LabeledDataset
        Labels ``"negative"`` / ``"positive"``, features ``polarity`` and
        ``intensity``, ids ``0 .. n_samples - 1``.

    Examples
    --------
    >>> from flipguard.data import make_sentiment_reviews
    >>> ds = make_sentiment_reviews(200, random_state=0)
    >>> ds.class_counts()
    {'negative': 100, 'positive': 100}
    """
    if not (isinstance(n_samples, (int, np.integer)) and n_samples >= 4):
        raise InvalidParameterError(f"n_samples must be an int >= 4. Got {n_samples!r} instead.")
    if not separation > 0:
        raise InvalidParameterError(f"separation must be > 0. Got {separation!r} instead.")
    from sklearn.utils import check_random_state

    rng = check_random_state(random_state)
    y = np.zeros(n_samples, dtype=np.int64)
    y[n_samples // 2 + n_samples % 2:] = 1
    rng.shuffle(y)
    sign = np.where(y == 1, 1.0, -1.0)
    # Distance along the discriminating direction and position along the boundary.
    along = rng.normal(separation / 2.0, 1.0, n_samples)
    if separable:
        along = np.abs(along)
    across = rng.normal(0.0, 1.5, n_samples)
    # Rotate 30 degrees so neither raw feature alone separates the classes.
    theta = np.deg2rad(30.0)
    u = np.array([np.cos(theta), np.sin(theta)])
    v = np.array([-np.sin(theta), np.cos(theta)])
    X = (sign * along)[:, None] * u + across[:, None] * v + np.array([0.5, 0.5])
    return LabeledDataset(
        X=X, y=y, classes=np.array(["negative", "positive"], dtype=object),
        ids=np.arange(n_samples), feature_names=["polarity", "intensity"],
        label_name="sentiment", id_name=None, source="make_sentiment_reviews",
        format="arrays", encoding={"polarity": "numeric", "intensity": "numeric"},
    )
