"""Confident learning over a partitioned dataset, one task per partition, merged exactly.

Passes (each a map over partitions on the chosen engine; each task holds one
partition, so a worker needs memory for its largest partition, not the data):

1. **scan**: row and class counts per partition (the label column only).
2. **sample**: every row gets a fold in ``0..cv-1`` from a hash of its
   features and ``random_state`` (:func:`flipguard.models.hash_folds`), so
   folds do not depend on the engine, the worker or the other partitions, and
   exact copies of a row share a fold wherever they are (a copy in another
   fold's training rows would teach that model the row's label, flipped or
   not; docs/detection.md, "Copies of a row are the row").  A sample of at
   most ``max_train_rows`` rows (all rows when the data is smaller), seeded by
   ``(random_state, SHA-256 of the partition name)``, is collected.
3. **fit**: one task per fold fits the model on the rows of the other folds,
   in one of two ways (``training=``):

   * ``"sample"``: a batch fit on the seeded sample of pass 2 (every row when
     the data has at most ``max_train_rows``);
   * ``"incremental"``: pass 2 is skipped; the fold's task streams the
     partitions itself, one at a time, first into a ``StandardScaler``
     (``partial_fit``) and then, for ``epochs`` sweeps in a seeded order, into
     an estimator's ``partial_fit`` (``logreg`` becomes a softmax
     ``MLPClassifier`` without hidden layer: the same multinomial logistic
     model and loss, learnt by stochastic gradient descent [2]_ with Adam
     [3]_).  Every row of the other folds is learnt from while the task holds
     one partition, so memory per worker is bounded by the largest partition,
     not the data or a sample.

   A row is only ever predicted by the model of its own fold, which never saw
   it: probabilities stay out-of-fold in both ways.
4. **thresholds**: per partition, the sum and count of ``p[y = k, k]`` per
   class; merged in partition order into ``t_k = sum / count``.
5. **joint**: per partition, the confident joint counts (integers, merged by
   summing), then calibrated once (Northcutt et al. 2021, eq. 3); also a
   4096-bin histogram of the margins ``p_j - p_k`` of every (label ``k``,
   class ``j``) cell, merged by summing.
6. **prune**: the merged histogram gives each cell the bin holding its
   ``count``-th largest margin; per partition, the rows in or above that bin
   (at most ``count``) come back, and the global top ``count`` of every cell is
   chosen on the driver with ties broken by (partition, row): exactly the
   global selection, with about ``count`` candidates per cell on the driver.
7. **write**: per partition, the per-row results (score, flag, suggested
   label, fold) written as Parquet under the output folder; each task gets only
   its own partition's selected rows.

The probabilities are recomputed in passes 4-7 from the fitted fold models
(cheap next to reading) instead of being kept, so no pass holds more than one
partition and a retried task recomputes the same numbers.  Results are the
same on every engine: the merges run on the driver in partition order.

References
----------
.. [1] C. Northcutt, L. Jiang, I. Chuang. "Confident Learning: Estimating
   Uncertainty in Dataset Labels". JAIR 70, 1373-1411, 2021.
.. [2] L. Bottou. "Large-Scale Machine Learning with Stochastic Gradient
   Descent". COMPSTAT 2010, 177-186.
.. [3] D. Kingma, J. Ba. "Adam: A Method for Stochastic Optimization". ICLR 2015.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .._arrow import type_family
from ..data._partitioned import (
    AUDIT_SUMMARY,
    Partition,
    check_label_types,
    discover,
    label_kind_text,
    local_root,
    read_partition,
)
from ..engine import get_engine
from ..exceptions import DataError, InvalidParameterError
from ._confident import _prune_counts, calibrate_confident_joint

__all__ = ["PartitionedAudit", "audit_partitioned"]

#: cleanlab's fuzzy-comparison tolerance (as in ``detection/_confident.py``).
_EPS = 1e-6


def _partition_seed(seed: int, name: str) -> np.random.SeedSequence:
    h = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "little")
    return np.random.SeedSequence([int(seed) & 0xFFFFFFFF, h & 0xFFFFFFFF, h >> 32])


def _label_text(col: pa.ChunkedArray, where: str) -> tuple[list[str], np.ndarray]:
    """``(values, codes)``: distinct label values as text and one code per row (numpy, no per-row strings)."""
    if col.null_count:
        raise DataError(f"{where}: label column has {col.null_count} missing value(s)")
    if not pa.types.is_dictionary(col.type):
        col = pc.dictionary_encode(col if pa.types.is_string(col.type) or pa.types.is_large_string(col.type)
                                   else pc.cast(col, pa.string()))
    col = col.unify_dictionaries() if col.num_chunks > 1 else col
    if col.num_chunks == 0 or len(col) == 0:
        return [], np.zeros(0, np.int64)
    dictionary = col.chunk(0).dictionary
    values = pc.cast(dictionary, pa.string()).to_pylist()
    codes = np.concatenate([ch.indices.to_numpy(zero_copy_only=False) for ch in col.chunks]).astype(np.int64)
    return values, codes


def _codes(col: pa.ChunkedArray, classes: list[str], where: str) -> np.ndarray:
    values, local = _label_text(col, where)
    index = {c: i for i, c in enumerate(classes)}
    lut = np.array([index.get(v, -1) for v in values], dtype=np.int64)
    codes = lut[local] if len(local) else local
    if (codes < 0).any():
        raise DataError(f"{where}: label values appeared that the scan did not see (data changed during the run?)")
    return codes


def _reject_continuous_classes(classes: list[str], n: int, family: str | None, all_csv: bool, source: str,
                               label: str) -> None:
    """The single-file audit's check (:func:`flipguard.data._load._reject_continuous`) on the merged
    classes: a numeric label (a numeric column, or a CSV column of numbers, which a single-file audit
    reads as numbers) that is a measurement or an identifier, not classes."""
    from ..data._load import _reject_continuous

    numeric = family is not None and (family == "integer" or family.startswith(("float", "decimal")))
    if not (numeric or (family == "string" and all_csv)) or not classes:
        return
    try:
        values = pc.cast(pa.array(classes, pa.string()), pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return  # text that is not all numbers: class names
    _reject_continuous(values, n, source, label)


def _is_int(schema, name: str) -> bool:
    """Is column ``name`` of a scanned schema (``[(name, type string), ...]``) an integer column?"""
    return any(n == name and t.startswith(("int", "uint")) for n, t in schema)


def _features_matrix(tbl: pa.Table, features: list[str], where: str) -> np.ndarray:
    cols = []
    for f in features:
        c = tbl.column(f)
        if not (pa.types.is_integer(c.type) or pa.types.is_floating(c.type) or pa.types.is_boolean(c.type)):
            raise DataError(f"{where}: feature column '{f}' is {c.type}, not numeric (partitioned audits use "
                            "numeric columns: store it as numbers, or pick columns with "
                            "audit_partitioned(features=[...]))")
        cols.append(c.to_numpy().astype(np.float64, copy=False))
    X = np.column_stack(cols) if cols else np.zeros((tbl.num_rows, 0))
    if np.isnan(X).any():
        raise DataError(f"{where}: feature columns have missing values")
    return X


def _folds(part: Partition, X: np.ndarray, shared: dict) -> tuple[np.ndarray, np.random.Generator]:
    """Each row's fold, from its features' hash (copies of a row share it, in any partition), and
    the partition's sampling generator."""
    from ..models import hash_folds

    _, sample_ss = _partition_seed(shared["seed"], part.name).spawn(2)
    return hash_folds(X, shared["cv"], int(shared["seed"]) & 0xFFFFFFFF), np.random.default_rng(sample_ss)


# -- tasks -----------------------------------------------------------------------------
def _scan_task(part: Partition, shared: dict) -> dict:
    cols = [shared["label"], *([shared["id"]] if shared["id"] else [])]
    tbl = read_partition(part, cols, dictionary=[shared["label"]])
    label_type = tbl.column(shared["label"]).type
    values, codes = _label_text(tbl.column(shared["label"]), f"partition {part.name}")
    counts = np.bincount(codes, minlength=len(values)) if len(codes) else np.zeros(len(values), int)
    schema = None
    if shared["features"] is None:
        if part.format == "parquet" and "://" not in part.path:
            import pyarrow.parquet as pq

            try:
                types = pq.read_schema(part.path)
            except (OSError, pa.ArrowException) as exc:
                raise DataError(f"partition {part.name}: cannot read as PARQUET: {exc}") from None
        else:
            types = read_partition(part, None).schema
        schema = [(n, str(types.field(n).type)) for n in types.names] + [(k, "string") for k in part.keys]
    return {"name": part.name, "rows": tbl.num_rows, "classes": {v: int(n) for v, n in zip(values, counts) if n},
            "schema": schema, "label_type": type_family(label_type), "label_arrow": label_kind_text(label_type)}


def _read(part: Partition, shared: dict) -> tuple[np.ndarray, np.ndarray, pa.Table]:
    where = f"partition {part.name}"
    cols = [shared["label"], *([shared["id"]] if shared["id"] else []), *shared["features"]]
    tbl = read_partition(part, cols, dictionary=[shared["label"]])
    return _features_matrix(tbl, shared["features"], where), _codes(tbl.column(shared["label"]),
                                                                      shared["classes"], where), tbl


def _sample_task(part: Partition, shared: dict) -> dict:
    X, y, _ = _read(part, shared)
    folds, rng = _folds(part, X, shared)
    m = shared["quota"][part.name]
    idx = np.arange(len(y)) if m >= len(y) else np.sort(rng.choice(len(y), size=m, replace=False))
    return {"X": X[idx], "y": y[idx], "fold": folds[idx]}


def _fit_task(fold: int, shared: dict):
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    from ..models import make_model, single_threaded

    train = shared["fold"] != fold
    est = make_model(shared["model"], random_state=shared["model_seeds"][fold])
    with warnings.catch_warnings(), single_threaded():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(shared["X"][train], shared["y"][train])
    return est


#: ``training="auto"`` streams (incremental) instead of sampling when the sample's feature matrix
#: (``max_train_rows`` x features x 8 bytes) would exceed this: it must fit in one worker.
_SAMPLE_BYTES_LIMIT = 1 << 30

TRAINING_MODES = ("auto", "sample", "incremental")


def incremental_model(model, random_state):
    """``(estimator with partial_fit, scale)`` for incremental training, or an error naming what works.

    ``"logreg"`` is learnt as ``MLPClassifier(hidden_layer_sizes=())`` on standardised features: no
    hidden layer, so the same multinomial logistic model and log-loss, fitted by Adam in mini-batches [3]_.
    (``SGDClassifier(loss="log_loss")`` is one-vs-rest: it cannot represent a class lying between two
    others, e.g. the middle of ordered classes, so its probabilities are worse there.)  A classifier
    with ``partial_fit`` is used as given (cloned, seeded, no scaling added).
    """
    from ..models import make_model

    if isinstance(model, str) and model == "logreg":
        from sklearn.neural_network import MLPClassifier

        # no hidden layer: multinomial logistic regression (softmax), learnt by Adam in mini-batches of 1000
        # rows (200-row batches with step 0.01 left enough jitter in the weights to inflate confident
        # learning's flip estimate from 10.4% to 13.8% on 2M rows with 10% flips; these settings: 11.2%)
        return MLPClassifier(hidden_layer_sizes=(), batch_size=1000, learning_rate_init=0.005,
                             random_state=random_state), True
    if isinstance(model, str) or not hasattr(model, "partial_fit"):
        name = model if isinstance(model, str) else type(model).__name__
        raise InvalidParameterError(f"--training incremental needs a model that learns with partial_fit: logreg "
                                    f"(learnt as a softmax MLPClassifier without hidden layer) or a scikit-learn "
                                    f"classifier with partial_fit (SGDClassifier, MultinomialNB, ...); got {name}")
    return make_model(model, random_state=random_state), False


def _fit_incremental_task(fold: int, shared: dict):
    """Fit fold ``fold``'s model by streaming every partition through ``partial_fit``, one at a time."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from ..models import single_threaded

    seed = shared["model_seeds"][fold]
    est, scale = incremental_model(shared["model"], seed)
    parts = shared["partitions"]
    classes = np.arange(len(shared["classes"]))

    def training_rows(part):
        X, y, _ = _read(part, shared)
        keep = _folds(part, X, shared)[0] != fold
        return X[keep], y[keep]

    with warnings.catch_warnings(), single_threaded():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.filterwarnings("ignore", message="Got `batch_size`")  # a partition smaller than one batch
        scaler = None
        if scale:
            scaler = StandardScaler()
            for part in parts:
                X, _ = training_rows(part)
                if len(X):
                    scaler.partial_fit(X)
        order_rng = np.random.default_rng(seed)
        for _ in range(shared["epochs"]):
            for i in order_rng.permutation(len(parts)):  # a seeded partition order per sweep
                X, y = training_rows(parts[i])
                if len(y):
                    est.partial_fit(scaler.transform(X) if scaler is not None else X, y, classes=classes)
    return make_pipeline(scaler, est) if scaler is not None else est


def _oof(part: Partition, shared: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, pa.Table]:
    from ..models import predict_scores, single_threaded

    X, y, tbl = _read(part, shared)
    folds, _ = _folds(part, X, shared)
    K = len(shared["classes"])
    p = np.zeros((len(y), K))
    with single_threaded():
        for f, est in enumerate(shared["models"]):
            rows = np.flatnonzero(folds == f)
            if len(rows):
                p[rows] = predict_scores(est, X[rows], K)
    return p, y, folds, tbl


def _threshold_task(part: Partition, shared: dict) -> tuple[np.ndarray, np.ndarray]:
    p, y, _, _ = _oof(part, shared)
    K = p.shape[1]
    sums = np.array([p[y == k, k].sum() for k in range(K)])  # one vectorised pass per class
    return sums, np.bincount(y, minlength=K)


def _guess(p: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Confident true-class guess per row, ``-1`` if none (as ``detection.confident_joint``)."""
    above = p >= thresholds - _EPS
    n_above = above.sum(axis=1)
    guess = np.where(n_above > 1, p.argmax(axis=1), above.argmax(axis=1))
    guess[n_above == 0] = -1
    return guess


#: Bins of the margin histograms (margins lie in [-1, 1]).
_BINS = 4096
#: Most classes a partitioned audit takes: its K x K x _BINS int64 histograms are 512 MiB at 128.
MAX_CLASSES = 128


def _margin_bins(margin: np.ndarray) -> np.ndarray:
    """Histogram bin of each margin; the same formula in every task, so bin choices are consistent."""
    return np.clip(((margin + 1.0) * (_BINS / 2)).astype(np.int64), 0, _BINS - 1)


def _joint_task(part: Partition, shared: dict) -> tuple[np.ndarray, np.ndarray]:
    """Confident-joint counts and, per (label k, class j) cell, a histogram of margins ``p_j - p_k``."""
    p, y, _, _ = _oof(part, shared)
    K = p.shape[1]
    guess = _guess(p, shared["thresholds"])
    sure = guess >= 0
    joint = np.bincount(guess[sure] * K + y[sure], minlength=K * K).reshape(K, K).T
    hist = np.zeros((K, K, _BINS), dtype=np.int64)
    for k in range(K):
        rows = np.flatnonzero(y == k)
        for j in range(K):
            if j != k and len(rows):
                hist[k, j] = np.bincount(_margin_bins(p[rows, j] - p[rows, k]), minlength=_BINS)
    return joint, hist


def _candidate_task(part: Partition, shared: dict) -> dict:
    """Per (label k, class j) cell: this partition's rows in or above the cell's cut-off bin (the bin
    holding the cell's ``count``-th largest margin over all partitions), at most ``count`` of them."""
    p, y, _, _ = _oof(part, shared)
    pcm = shared["prune_counts"]
    K = p.shape[1]
    out = {}
    for k in range(K):
        if shared["label_counts"][k] <= shared["min_examples_per_class"]:
            continue
        rows = np.flatnonzero(y == k)
        for j in range(K):
            count = int(pcm[j, k])
            if j == k or count <= 0 or not len(rows):
                continue
            margin = p[rows, j] - p[rows, k]
            top = np.flatnonzero(_margin_bins(margin) >= shared["cutoff_bins"][k, j])
            if count < len(top):
                top = top[np.argpartition(-margin[top], count - 1)[:count]]
            out[(k, j)] = (margin[top], rows[top])
    return out


def _write_task(item: tuple[Partition, np.ndarray], shared: dict) -> dict:
    """Per-row results of one partition; ``item`` is the partition and its selected rows (sent with the
    task, so a worker receives its own partition's selection, never the whole dataset's)."""
    import pyarrow.parquet as pq

    part, sel = item
    p, y, folds, tbl = _oof(part, shared)
    n = len(y)
    flags = np.zeros(n, dtype=bool)
    if len(sel):
        flags[sel] = True
    bumped = p.copy()
    bumped[np.arange(n), y] += _EPS
    flags[bumped.argmax(axis=1) == y] = False
    given = p[np.arange(n), y]
    other = p.copy()
    other[np.arange(n), y] = -np.inf
    suggested = np.where(flags, other.argmax(axis=1), y)  # an unflagged row keeps its label
    classes = pa.array(shared["classes"], pa.string())
    cols = {"row": pa.array(np.arange(n, dtype=np.int64))}
    if shared["id"]:
        cols[shared["id"]] = tbl.column(shared["id"])
    cols.update({
        "label": pa.DictionaryArray.from_arrays(pa.array(y.astype(np.int32)), classes),
        "suggested": pa.DictionaryArray.from_arrays(pa.array(suggested.astype(np.int32)), classes),
        "score": pa.array(1.0 - given), "flagged": pa.array(flags), "fold": pa.array(folds.astype(np.int16)),
        "probs": pa.FixedSizeListArray.from_arrays(pa.array(p.ravel()), p.shape[1]),
    })
    target = Path(shared["staging"]) / (os.path.splitext(part.name)[0] + ".parquet")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    pq.write_table(pa.table(cols), tmp)
    os.replace(tmp, target)
    flagged = np.flatnonzero(flags)
    top = flagged[np.argsort(-(1.0 - given[flagged]), kind="stable")[:shared["top"]]]
    ids = tbl.column(shared["id"]).take(pa.array(top)).to_pylist() if shared["id"] else top.tolist()
    return {"name": part.name, "rows": n, "flagged": int(flags.sum()),
            "top": [{"partition": part.name, "row": int(r), "id": i, "label": int(y[r]),
                     "suggested": int(suggested[r]), "score": float(1.0 - given[r])} for r, i in zip(top, ids)]}


# -- result ------------------------------------------------------------------------------
@dataclass
class PartitionedAudit:
    """Summary of :func:`audit_partitioned`; per-row results are in the Parquet folder ``out``.

    Attributes
    ----------
    n_samples, n_flagged, estimated_flips : int
        Rows, rows flagged by prune-by-noise-rate, off-diagonal mass of the calibrated joint.
    classes : list of str
        Label values; codes in ``joint`` and ``transitions`` follow this order.
    thresholds : list of float
        Per-class confident thresholds (mean self-confidence).
    joint : list of list of int
        Calibrated confident joint ``C[observed, true]``.
    transitions : list of dict
        ``{"from": true class, "to": observed label, "count"}`` off-diagonal, largest first.
    partitions : list of dict
        ``name``, ``rows``, ``flagged`` per partition.
    train_rows : int
        Rows the fold models learnt from (all rows when ``exact_training``; each fold
        model learns from the rows of the other folds).
    training : str
        ``"sample"`` (batch fit on a sample, or on all rows when they fit) or
        ``"incremental"`` (``partial_fit`` streamed over every partition).
    exact_training : bool
        Every row was learnt from (not a sample).
    out : str
        Folder of per-row results (one Parquet file per partition, same names).
    """

    source: str
    method: str
    model: str
    cv: int
    random_state: int
    n_samples: int
    n_flagged: int
    estimated_flips: int
    classes: list
    thresholds: list
    joint: list
    transitions: list
    partitions: list
    train_rows: int
    exact_training: bool
    out: str | None
    training: str = "sample"
    top: list = field(default_factory=list)
    engine: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)

    @property
    def estimated_flip_rate(self) -> float:
        return self.estimated_flips / self.n_samples if self.n_samples else 0.0

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["estimated_flip_rate"] = self.estimated_flip_rate
        return d

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False, default=str)


def _transition_list(joint: np.ndarray, classes: list) -> list[dict]:
    out = [{"from": classes[j], "to": classes[i], "count": int(joint[i, j])}
           for i in range(len(classes)) for j in range(len(classes)) if i != j and joint[i, j] > 0]
    return sorted(out, key=lambda t: -t["count"])


def default_audit_out(source: str) -> Path:
    """``DATA.flipguard-audit`` beside the folder: ``lake/`` -> ``lake.flipguard-audit``; ``.`` (or
    ``lake/.``) is named after the folder itself (``../lake.flipguard-audit``), as ``seal .`` is."""
    if "://" in source:
        raise InvalidParameterError(f"{source} is a URL: give the output folder (--out)")
    return Path(local_root(source) + ".flipguard-audit")


def check_audit_out(source, out) -> None:
    """Refuse an output folder inside the dataset (or the dataset itself), before any work: the next
    seal, verify or audit of the folder would otherwise read the per-row results as partitions."""
    if out is None or not isinstance(source, (str, os.PathLike)) or "://" in os.fspath(source) \
            or "://" in os.fspath(out) or not os.path.isdir(source):
        return
    root, target = Path(source).resolve(), Path(out).resolve()
    if target == root or root in target.parents:
        raise InvalidParameterError(
            f"--out {os.fspath(out)} is inside DATA {os.fspath(source)}: flipguard never writes into its input "
            "(the next seal or audit of the folder would read the results as partitions); choose a folder "
            f"outside it (default: {default_audit_out(os.fspath(source))})")


def audit_partitioned(source, *, label: str, id: str | None = None, features: list[str] | None = None,  # noqa: A002
                      model="logreg", cv: int = 5, random_state: int = 0, method: str = "confident_learning",
                      max_train_rows: int = 1_000_000, training: str = "auto", epochs: int = 1,
                      frac_noise: float = 1.0, min_examples_per_class: int = 1, out=None, top: int = 20,
                      engine="local", ray_address: str | None = None) -> PartitionedAudit:
    """Audit the labels of a partitioned dataset with confident learning, on any engine.

    Parameters
    ----------
    source : str or path
        Folder or fsspec prefix of Parquet/CSV files (a single file is one partition).
    label : str
        Label column.
    id : str, optional
        Id column copied into the per-row output.
    features : list of str, optional
        Numeric feature columns (default: every numeric column but label and id).
    model : str or classifier, default="logreg"
    cv : int, default=5
        Folds.
    random_state : int, default=0
        Seeds folds, sampling and models; the same seed gives the same flags on every engine.
    method : {"confident_learning", "auto"}
        ``auto`` runs confident learning here: the kNN and ensemble stages of the
        single-process ``auto`` need all rows in one process (documented in docs/scale.md).
    max_train_rows : int, default=1_000_000
        Rows sampled (seeded, proportionally per partition) to fit the fold models
        with ``training="sample"``.  When the data has at most this many rows every row is used.
    training : {"auto", "sample", "incremental"}, default="auto"
        How the fold models learn when the data is larger than one worker.
        ``"sample"``: a batch fit on a ``max_train_rows`` sample (held in one
        task).  ``"incremental"``: each fold's task streams every partition
        through ``partial_fit`` (``logreg`` is learnt as a softmax ``MLPClassifier``
        without hidden layer; or pass a classifier with ``partial_fit``),
        holding one partition at a time.  ``"auto"``: all rows
        in one batch fit when there are at most ``max_train_rows``; otherwise
        ``"incremental"`` when the model can learn incrementally and the sample's
        feature matrix (``max_train_rows`` x features x 8 bytes) would exceed
        1 GiB, else ``"sample"``.
    epochs : int, default=1
        Sweeps over the partitions with ``training="incremental"`` (a seeded
        partition order per sweep).
    frac_noise, min_examples_per_class
        As in :class:`flipguard.detection.ConfidentLearning`.
    out : path, optional
        Output folder of per-row Parquet files (default ``DATA.flipguard-audit`` beside
        the folder; ``.`` is named after the folder); written only when every pass
        succeeded.  A folder inside ``source`` is refused before anything is read.
    top : int, default=20
        Flagged rows with the highest scores kept in the summary.
    engine, ray_address
        See :func:`flipguard.engine.get_engine`.

    Returns
    -------
    PartitionedAudit

    Raises
    ------
    InvalidParameterError
        ``out`` inside the dataset, or an option out of range.
    DataError
        A partition cannot be read; the label column has different types in two
        partitions (integer widths aside), looks continuous or like an identifier
        (as for a single file), or has one class.

    References
    ----------
    .. [1] C. Northcutt, L. Jiang, I. Chuang. "Confident Learning: Estimating
       Uncertainty in Dataset Labels". JAIR 70, 2021.
    """

    if method not in ("confident_learning", "auto"):
        raise InvalidParameterError(f"--method {method} is not available on a partitioned dataset; use "
                                    "confident_learning (or auto, which runs confident learning there)")
    if not (isinstance(cv, int) and cv >= 2):
        raise InvalidParameterError(f"--cv must be an integer >= 2; got {cv!r}")
    if not (isinstance(max_train_rows, int) and max_train_rows >= 2):
        raise InvalidParameterError(f"--max-train-rows must be an integer >= 2; got {max_train_rows!r}")
    if training not in TRAINING_MODES:
        raise InvalidParameterError(f"--training must be one of {', '.join(TRAINING_MODES)}; got {training!r}")
    if not (isinstance(epochs, int) and epochs >= 1):
        raise InvalidParameterError(f"epochs must be an integer >= 1; got {epochs!r}")
    if training == "incremental":
        incremental_model(model, None)  # refuse a model without partial_fit before reading anything
    if not 0 < frac_noise <= 1:
        raise InvalidParameterError(f"frac_noise must be in (0, 1]; got {frac_noise!r}")
    single = isinstance(source, (str, os.PathLike)) and os.path.isfile(source)
    if single:
        ds = discover(os.path.dirname(os.path.abspath(source)))
        ds = type(ds)(ds.root, tuple(p for p in ds.partitions if os.path.samefile(p.path, source)))
    else:
        ds = discover(source)
    out_path = Path(out) if out is not None else default_audit_out(os.fspath(ds.root))
    if not single:  # a file's results may sit beside it (their _audit.json keeps them out of the folder's data)
        check_audit_out(ds.root, out_path)
    if out_path.exists() and not (out_path.is_dir() and ((out_path / AUDIT_SUMMARY).exists()
                                                         or not any(out_path.iterdir()))):
        raise InvalidParameterError(f"--out {out_path} exists and is not a flipguard audit folder; "
                                    "choose another path")
    eng = get_engine(engine, ray_address=ray_address)
    shared = {"label": label, "id": id, "features": list(features) if features else None, "seed": random_state,
              "cv": cv, "top": top}
    warnings_: list[str] = []
    staging = None
    try:
        scans = eng.map(_scan_task, ds.partitions, shared=shared, desc="scanning partitions")
        # one label type in every partition (values are merged as text), before anything is fitted
        label_family = check_label_types(label, [(s["name"], s["label_type"], s["label_arrow"]) for s in scans])
        if shared["features"] is None:
            skip = {label, id, *ds.partitions[0].keys}
            numeric = [n for n, t in scans[0]["schema"] if n not in skip and
                       (t.startswith(("int", "uint", "float", "double", "halffloat")) or t == "bool")]
            other = [n for n, t in scans[0]["schema"] if n not in skip and n not in numeric]
            if other:
                warnings_.append(f"non-numeric column(s) not used as features: {', '.join(other)}")
            from ..data._leaks import looks_like_id_name

            named_ids = [n for n in numeric if _is_int(scans[0]["schema"], n) and looks_like_id_name(n)]
            if named_ids:  # a row identifier is never evidence about a label (docs/detection.md)
                numeric = [n for n in numeric if n not in named_ids]
                warnings_.append(f"integer column(s) named like row identifiers not used as features: "
                                 f"{', '.join(named_ids)} (pass --id, or pick columns with "
                                 "audit_partitioned(features=[...]))")
            if not numeric:
                raise DataError(f"{ds.root}: no numeric feature column (partitioned audits use numeric "
                                f"columns; the partitions hold: {', '.join(other[:8]) or 'only the label and id'})")
            shared["features"] = numeric
        totals: dict = {}
        for s in scans:
            for c, n in s["classes"].items():
                totals[c] = totals.get(c, 0) + n
        classes = sorted(totals)
        N = sum(s["rows"] for s in scans)
        _reject_continuous_classes(classes, N, label_family, all(p.format == "csv" for p in ds.partitions),
                                   os.fspath(ds.root), label)
        if len(classes) < 2:
            raise DataError(f"{ds.root}: the label column '{label}' has {len(classes)} class(es); an audit needs two")
        if len(classes) > MAX_CLASSES:  # the margin histograms are K x K x 4096 counts per task
            gib = len(classes) ** 2 * _BINS * 8 / 2**30
            raise DataError(f"{ds.root}: the label column '{label}' has {len(classes)} classes (e.g. "
                            f"{', '.join(classes[:4])}); a partitioned audit keeps a {_BINS}-bin margin "
                            f"histogram per pair of classes ({gib:.1f} GiB per worker here) and takes at most "
                            f"{MAX_CLASSES} classes: is '{label}' the label?")
        shared["classes"] = classes
        mode = training
        if mode == "auto":
            can_stream = (isinstance(model, str) and model == "logreg") or \
                (not isinstance(model, str) and hasattr(model, "partial_fit"))
            big = max_train_rows * len(shared["features"]) * 8 > _SAMPLE_BYTES_LIMIT
            mode = "incremental" if N > max_train_rows and can_stream and big else "sample"
        model_seeds = np.random.default_rng(random_state).integers(0, 2**31 - 1, cv).tolist()
        if mode == "incremental":
            exact = True
            inc = {**shared, "partitions": list(ds.partitions), "model": model, "model_seeds": model_seeds,
                   "epochs": epochs}
            shared["models"] = eng.map(_fit_incremental_task, list(range(cv)), shared=inc,
                                       desc="fitting fold models (partial_fit over partitions)")
            train_rows = N
        else:
            exact = N <= max_train_rows
            shared["quota"] = {s["name"]: s["rows"] if exact else int(s["rows"] * max_train_rows // N)
                               for s in scans}
            samples = eng.map(_sample_task, ds.partitions, shared=shared, desc="sampling training rows")
            fit_data = {"X": np.concatenate([s["X"] for s in samples]),
                        "y": np.concatenate([s["y"] for s in samples]),
                        "fold": np.concatenate([s["fold"] for s in samples]), "model": model,
                        "model_seeds": model_seeds}
            del samples
            missing = [f for f in range(cv) if len(np.unique(fit_data["y"][fit_data["fold"] != f])) < 2]
            if missing:
                raise DataError(f"{ds.root}: too few rows to fit {cv} fold models (fold(s) {missing} see one class)")
            shared["models"] = eng.map(_fit_task, list(range(cv)), shared=fit_data, desc="fitting fold models")
            train_rows = len(fit_data["y"])
            del fit_data
        parts = list(ds.partitions)
        K = len(classes)
        stats = eng.map(_threshold_task, parts, shared=shared, desc="thresholds")
        sums = np.zeros(K)
        counts = np.zeros(K, dtype=np.int64)
        for s, c in stats:  # merged in partition order: the same floating-point sum on every engine
            sums += s
            counts += c
        thresholds = np.clip(np.where(counts > 0, sums / np.maximum(counts, 1), 2.0), 2 * _EPS, None)
        shared["thresholds"] = thresholds
        raw = np.zeros((K, K), dtype=np.int64)
        hist = np.zeros((K, K, _BINS), dtype=np.int64)
        for j, h in eng.map(_joint_task, parts, shared=shared, desc="confident joint"):
            raw += j
            hist += h
        np.fill_diagonal(raw, raw.diagonal().clip(min=1))
        joint = calibrate_confident_joint(raw, counts).astype(np.int64)
        pcm = _prune_counts(joint, min_examples_per_class, frac_noise)
        # the bin holding each cell's count-th largest margin: only rows in or above it can be selected,
        # so the driver receives about `count` candidates per cell, not `count` per partition
        above = np.cumsum(hist[:, :, ::-1], axis=2)[:, :, ::-1]  # rows with bin >= b
        want = pcm.T[:, :, None]  # pcm[j, k] rows to take from cell (label k, class j)
        cutoff = np.where((above >= np.maximum(want, 1)).any(axis=2),
                          _BINS - 1 - np.argmax((above >= np.maximum(want, 1))[:, :, ::-1], axis=2), 0)
        shared.update(prune_counts=pcm, label_counts=counts, min_examples_per_class=min_examples_per_class,
                      cutoff_bins=cutoff)
        cands = eng.map(_candidate_task, parts, shared=shared, desc="ranking candidates")
        selected: dict[str, list] = {p.name: [] for p in parts}
        for k in range(K):
            for j in range(K):
                count = int(pcm[j, k])
                if j == k or count <= 0:
                    continue
                m, pi, r = [], [], []
                for i, c in enumerate(cands):
                    if (k, j) in c:
                        m.append(c[(k, j)][0])
                        r.append(c[(k, j)][1])
                        pi.append(np.full(len(c[(k, j)][1]), i))
                if not m:
                    continue
                m, pi, r = np.concatenate(m), np.concatenate(pi), np.concatenate(r)
                order = np.lexsort((r, pi, -m))[:count]
                for i in np.unique(pi[order]):
                    selected[parts[i].name].append(r[order][pi[order] == i])
        rows_of = [(p, np.unique(np.concatenate(selected[p.name])) if selected[p.name] else np.zeros(0, np.int64))
                   for p in parts]
        del cands, selected
        out_path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.", suffix=".tmp", dir=out_path.parent))
        shared["staging"] = str(staging)
        written = eng.map(_write_task, rows_of, shared=shared, desc="writing per-row results")
        transitions = _transition_list(joint, classes)
        model_text = model if isinstance(model, str) else type(model).__name__
        if mode == "incremental" and model == "logreg":
            model_text = "logreg (softmax MLPClassifier without hidden layer, partial_fit)"
        tops = sorted((t for w in written for t in w["top"]), key=lambda t: -t["score"])[:top]
        for t in tops:
            t["label"], t["suggested"] = classes[t["label"]], classes[t["suggested"]]
        result = PartitionedAudit(
            source=os.fspath(ds.root), method="confident_learning" if method == "confident_learning"
            else "confident_learning (auto on a partitioned dataset)", model=model_text, cv=cv,
            random_state=random_state, n_samples=int(N), n_flagged=int(sum(w["flagged"] for w in written)),
            estimated_flips=int(joint.sum() - np.trace(joint)), classes=classes, thresholds=thresholds.tolist(),
            joint=joint.tolist(), transitions=transitions,
            partitions=[{"name": w["name"], "rows": w["rows"], "flagged": w["flagged"]} for w in written],
            train_rows=int(train_rows), exact_training=exact, out=str(out_path), training=mode, top=tops,
            engine=eng.describe(), warnings=warnings_)
        (staging / AUDIT_SUMMARY).write_text(result.to_json() + "\n")
        _replace_dir(staging, out_path)
        staging = None
        return result
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        eng.close()


def _replace_dir(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``, replacing an earlier output folder in (almost) one step."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
