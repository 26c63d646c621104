"""Watching a store: new batch files in a folder or bucket prefix, new rows of a PostgreSQL table.

:func:`watch_once` processes every batch not yet seen, in order, each exactly
once: after each batch the monitor's statistics *and* the record of what has
been processed are written together, atomically, into one state file.  A
process killed at any moment (``kill -9`` included) leaves the state of the
last completed batch; started again, it continues with the next one, so no
batch is lost or counted twice.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..exceptions import DataError, FlipguardError, InvalidParameterError
from ._monitor import BatchVerdict, LabelMonitor

__all__ = ["BatchFailed", "BatchSource", "FolderSource", "PostgresSource", "open_source", "watch_once",
           "write_metrics"]

_BATCH_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".parquet", ".pq", ".parq")


class BatchFailed(DataError):
    """A batch could not be read or judged; :func:`watch_once` stopped before it.

    The state holds every batch processed before it (saved after each), never
    this one, so the next run tries it again.  ``monitor`` is the monitor as
    saved (``None`` if nothing has been saved yet), ``verdicts`` the verdicts of
    the batches this call processed, ``batch`` the failing batch's name (or
    ``None`` when the source failed to list the next batch) and ``reason`` the
    message of the underlying error.
    """

    def __init__(self, message: str, *, reason: str, batch: str | None, monitor: LabelMonitor | None,
                 verdicts: list[BatchVerdict]):
        super().__init__(message)
        self.reason, self.batch, self.monitor, self.verdicts = reason, batch, monitor, verdicts


@dataclass
class Batch:
    name: str
    table: pa.Table
    mark: Any  # what the state records once the batch is done (file name, or last key value)


class BatchSource:
    """Where batches come from; ``pending(done)`` lists what is not processed yet, in order.

    ``description`` is the source as given (for messages); ``identity`` names it
    whatever the spelling (a state file belongs to one identity).
    """

    description: str = ""

    @property
    def identity(self) -> str:
        return self.description

    def check(self) -> None:
        """Raise :class:`DataError` if the source cannot be read (before any state is written)."""

    def pending(self, done: dict[str, Any]):  # pragma: no cover - abstract
        raise NotImplementedError

    @staticmethod
    def record(done: dict[str, Any], mark) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class FolderSource(BatchSource):
    """CSV/Parquet batch files in a local folder or an fsspec prefix (``s3://bucket/incoming/``).

    Files are processed in name order, each once (by name).  Names starting with
    ``.`` or ``_`` are ignored, so a producer can write ``.part`` files and rename
    them when complete.
    """

    def __init__(self, location: str):
        self.location = location.rstrip("/") if "://" in location else os.path.abspath(location)
        self.description = location

    @property
    def identity(self) -> str:
        """The folder's resolved path (links followed), or the URL normalised: ``./in/``, ``in`` and
        ``/data/in`` are one source; ``S3://bucket//incoming/`` is ``s3://bucket/incoming``."""
        return _source_key(self.location)

    def _names(self) -> list[str]:
        if "://" not in self.location:
            if not os.path.isdir(self.location):
                raise DataError(f"{self.description}: no such folder")
            names = os.listdir(self.location)
        else:
            try:
                import fsspec
            except ImportError:  # pragma: no cover - depends on the environment
                raise DataError(f"cannot list {self.location}: needs fsspec (pip install 'flipguard[s3]')") from None
            try:
                fs, path = fsspec.core.url_to_fs(self.location)
                fs.invalidate_cache()
                if not fs.isdir(path):
                    raise DataError(f"{self.description}: no such folder or prefix")
                names = [posixpath.basename(p.rstrip("/")) for p in fs.ls(path, detail=False)]
            except (ImportError, ValueError) as exc:
                raise DataError(f"cannot list {self.location}: {exc}") from None
        return sorted(n for n in names if n.lower().endswith(_BATCH_SUFFIXES) and not n.startswith((".", "_")))

    def check(self) -> None:
        self._names()

    def _path(self, name: str) -> str:
        return f"{self.location}/{name}" if "://" in self.location else os.path.join(self.location, name)

    def pending(self, done: dict[str, Any]):
        from ..data import read_table

        seen = set(done.get("files", []))
        for name in self._names():
            if name not in seen:
                yield Batch(name, read_table(self._path(name))[0], name)

    @staticmethod
    def record(done: dict[str, Any], mark) -> None:
        done.setdefault("files", []).append(mark)


class PostgresSource(BatchSource):
    """New rows of a PostgreSQL table: those whose ``key`` column exceeds the last one processed.

    ``key`` is the id column (rows arrive with increasing ids) or a
    ``--since-column`` (e.g. an insertion timestamp).  Each poll reads the new
    rows in one ``REPEATABLE READ`` snapshot, ordered by the key; ``max_rows``
    caps a batch.  A row committed later with a key below one already
    processed is not seen (use a key assigned at commit time when writers race).
    """

    def __init__(self, dsn: str, table: str, key: str, max_rows: int | None = None):
        from ..data._postgres import redact_dsn

        self.dsn, self.table, self.key, self.max_rows = dsn, table, key, max_rows
        self.description = f"{redact_dsn(dsn)} table {table}"

    def check(self) -> None:
        from ..data._postgres import import_psycopg, pg_snapshot

        import_psycopg()  # a DataError naming the extra when psycopg is missing
        from psycopg import sql

        with pg_snapshot(self.dsn) as snap:
            ref = snap.resolve(self.table)
            names = [c.name for c in snap.conn.execute(
                sql.SQL("SELECT * FROM {} LIMIT 0").format(ref.ident)).description or []]
        if self.key not in names:
            raise DataError(f"{self.description}: column '{self.key}' not found (columns: {', '.join(names)})")

    def pending(self, done: dict[str, Any]):
        from psycopg import sql

        from ..data._postgres import pg_snapshot

        last = done.get("last")
        while True:
            with pg_snapshot(self.dsn) as snap:
                ref = snap.resolve(self.table)
                key = sql.Identifier(self.key)
                where = sql.SQL("WHERE {} > {}").format(key, sql.Literal(last)) if last is not None else sql.SQL("")
                limit = sql.SQL("LIMIT {}").format(sql.Literal(int(self.max_rows))) if self.max_rows else sql.SQL("")
                src = sql.SQL("(SELECT * FROM {} {} ORDER BY {} {}) AS flipguard_new").format(
                    ref.ident, where, key, limit)
                tbl = snap.read_select(src, where=self.description)
            if tbl.num_rows == 0:
                return
            keys = tbl.column(self.key)
            if keys.null_count:
                raise DataError(f"{self.description}: column '{self.key}' has missing values; "
                                "new rows are found by it, so it must always be set")
            lo, hi = pc.min(keys).as_py(), pc.max(keys).as_py()
            mark = hi.isoformat() if hasattr(hi, "isoformat") else hi
            lo_text = lo.isoformat() if hasattr(lo, "isoformat") else lo
            yield Batch(f"{self.key} {lo_text}..{mark}", tbl, mark)
            last = mark
            if not self.max_rows:
                return

    @staticmethod
    def record(done: dict[str, Any], mark) -> None:
        done["last"] = mark


def _source_key(location: str) -> str:
    """A local folder's real path (resolved from the current folder), or a URL with its scheme in lower
    case and its path without ``.``, repeated or trailing slashes."""
    if "://" not in location:
        return os.path.normcase(os.path.realpath(location))
    scheme, rest = location.split("://", 1)
    rest = posixpath.normpath("/" + rest).lstrip("/") if rest.strip("/") else ""
    return f"{scheme.lower()}://{rest}"


def open_source(source: str, *, table: str | None = None, id: str | None = None,  # noqa: A002
                since_column: str | None = None, max_rows: int | None = None) -> BatchSource:
    """A :class:`FolderSource` or, for a ``postgresql://`` DSN, a :class:`PostgresSource`."""
    from ..data._read import is_postgres

    if is_postgres(source):
        if table is None:
            raise InvalidParameterError("a postgresql:// SOURCE needs --table")
        key = since_column or id
        if key is None:
            raise InvalidParameterError("a postgresql:// SOURCE needs --id or --since-column to find new rows")
        return PostgresSource(source, table, key, max_rows=max_rows)
    if table is not None or since_column is not None:
        raise InvalidParameterError("--table and --since-column only apply to a postgresql:// SOURCE")
    if max_rows is not None:
        raise InvalidParameterError("--batch-rows only applies to a postgresql:// SOURCE: a batch file is "
                                    "always processed whole, one file per batch")
    return FolderSource(source)


# -- encoding batches like the reference -------------------------------------
def _columns_plan(ds) -> dict[str, str]:
    return {c: how for c, how in ds.encoding.items() if not str(how).startswith("dropped")}


def _encode_batch(tbl: pa.Table, plan: dict[str, str], feature_names: list[str], label: str,
                  id_col: str | None, means: np.ndarray, where: str, *, missing_counts: dict | None = None):
    """Features aligned with the reference's columns, labels and ids of one batch.

    Missing and infinite values of a numeric column are imputed with the reference's mean and counted
    (in ``missing_counts``, column -> rows) so that a column emptied by a producer or an attacker is
    seen: a numeric column with no finite value at all in a non-empty batch is refused like a missing
    column (``DataError`` naming every such column).
    """
    names = tbl.column_names
    for col in [label, *([id_col] if id_col else []), *plan]:
        if col not in names:
            sep = next((c for c in (";", "\t", "|") if len(names) == 1 and c in names[0]), None)
            if sep is not None:
                raise DataError(f"{where}: column '{col}' not found: the file has a single column, so it "
                                f"looks {sep!r}-separated; write batch files comma-separated like the reference")
            raise DataError(f"{where}: column '{col}' not found (columns: {', '.join(names)})")
    n = tbl.num_rows
    pos = {f: j for j, f in enumerate(feature_names)}
    X = np.zeros((n, len(feature_names)))
    empty: list[str] = []
    for col, how in plan.items():
        arr = tbl.column(col)
        if pa.types.is_dictionary(arr.type):
            arr = pc.cast(arr, arr.type.value_type)
        if str(how).startswith("one-hot"):
            values = np.asarray(pc.fill_null(pc.cast(arr, pa.string()), "\x00").to_numpy(zero_copy_only=False))
            for j, f in enumerate(feature_names):
                if f.startswith(col + "="):
                    X[:, j] = values == f[len(col) + 1:]
            continue
        t = arr.type
        if pa.types.is_temporal(t):
            arr = pc.cast(pc.cast(arr, pa.timestamp("s")) if pa.types.is_date(t) else arr, pa.int64())
        try:
            v = pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise DataError(f"{where}: column '{col}' is not numeric as in the reference") from None
        j = pos[col]
        bad = ~np.isfinite(v)  # null, NaN or +-inf: none of them is a value the reference model can use
        if n and bad.all():
            empty.append(col)
            continue
        if missing_counts is not None and bad.any():
            missing_counts[col] = int(bad.sum())
        v[bad] = means[j]
        X[:, j] = v
    if empty:
        shown = ", ".join(f"'{c}'" for c in empty[:10]) + (f" and {len(empty) - 10} more" if len(empty) > 10 else "")
        raise DataError(f"{where}: {len(empty)} feature column(s) have no value in this batch (every value "
                        f"missing, NaN or infinite): {shown}; the monitor cannot judge the rows without them, "
                        "as with a missing column")
    labels = tbl.column(label)
    if pa.types.is_dictionary(labels.type):
        labels = pc.cast(labels, labels.type.value_type)
    ids = np.asarray(tbl.column(id_col).to_numpy(zero_copy_only=False)) if id_col else np.arange(n)
    return X, labels, ids


_IMPUTED = re.compile(r"numeric \((?:(\d+) infinite and )?(\d+) missing imputed")


def _reference_missing(plan: dict[str, str]) -> dict[str, int]:
    """Rows of each numeric reference column that were missing or infinite (from the load notes)."""
    out = {}
    for col, how in plan.items():
        m = _IMPUTED.match(str(how))
        if m:
            out[col] = int(m.group(1) or 0) + int(m.group(2))
    return out


def _missing_drift(counts: dict[str, int], n_rows: int, ref_missing: dict[str, int], n_ref: int,
                   alpha: float) -> dict[str, float]:
    """Columns whose share of missing values in the batch is far above the reference's.

    One-sided exact binomial test of the batch's missing count against the upper 99 % Jeffreys bound
    of the reference's missing share (Bonferroni over the columns with missing values), at ``alpha``.
    """
    from scipy.stats import binom

    from ._sequential import upper_rate

    if not counts or n_rows == 0:
        return {}
    cols = sorted(counts)
    k = np.array([counts[c] for c in cols], dtype=np.float64)
    q = upper_rate(np.array([ref_missing.get(c, 0) for c in cols], dtype=np.float64),
                   np.full(len(cols), float(n_ref)), confidence=0.99)
    p = binom.sf(k - 1, n_rows, q) * len(cols)
    return {c: float(kk / n_rows) for c, kk, pp in zip(cols, k, p) if pp < alpha}


def _fingerprint(ds) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(ds.X).tobytes())
    h.update("\x00".join(map(str, ds.labels().tolist())).encode())
    return h.hexdigest()


def _typed_labels(lab: pa.ChunkedArray, classes: np.ndarray) -> np.ndarray:
    """Batch labels in the reference's type where they convert (CSV ints stay ints), else as text.

    Missing labels (null or NaN) come back as ``None`` (typed labels, object array) or ``""`` (text),
    which :meth:`LabelMonitor.update` counts as missing, apart from values the reference never saw.
    """
    if pa.types.is_floating(lab.type):  # NaN is a missing label, never the text 'nan'
        lab = pc.if_else(pc.is_nan(lab), pa.scalar(None, lab.type), lab)
    target = pa.array(classes.tolist()).type if len(classes) else pa.string()
    try:
        arr = pc.cast(lab, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        arr = None
    if arr is not None:
        if arr.null_count == 0:
            return np.asarray(arr.to_numpy(zero_copy_only=False))
        null = np.asarray(pc.is_null(arr).to_numpy(zero_copy_only=False), dtype=bool)
        out = np.empty(len(arr), dtype=object)
        out[~null] = np.asarray(pc.drop_null(arr).to_numpy(zero_copy_only=False))
        out[null] = None
        return out
    text = pc.fill_null(pc.cast(lab, pa.string()), "")
    return np.asarray(text.to_numpy(zero_copy_only=False)).astype(str)


def watch_once(source: BatchSource, state_path, *, label: str, reference=None, id: str | None = None,  # noqa: A002
               monitor_params: dict | None = None,
               on_verdict: Callable[[BatchVerdict], None] | None = None) -> tuple[LabelMonitor, list[BatchVerdict]]:
    """Process every pending batch of ``source`` once, saving the state after each.

    The first run (no state file yet) fits a :class:`LabelMonitor` on
    ``reference`` (a path/URL/DSN loaded with ``label`` and ``id``); later runs
    restore it from ``state_path`` and refuse a different reference, source or
    label column.  ``on_verdict`` is called after each batch's state is saved.

    A batch that cannot be read or judged (missing or non-numeric column,
    unreadable file) stops the call with :class:`BatchFailed`: the state then
    records exactly the batches processed before it, so the next call starts
    again with the failing batch.  The state file is first written once a batch
    has been processed (or, on a first run, once the source had nothing
    pending), so a call refused before any batch writes nothing.
    """
    from ..data import load

    state_path = os.fspath(state_path)
    if os.path.isdir(state_path):
        raise InvalidParameterError(f"--state {state_path} is a directory; give a file name such as "
                                    f"{os.path.join(state_path, 'monitor.state')}")
    source.check()
    ref_ds = load(reference, label=label, id=id) if reference is not None else None
    saved = os.path.exists(state_path)
    if saved:
        mon, extra = LabelMonitor.load(state_path, with_extra=True)
        blind = mon.blind_warning()
        if blind is not None:  # said at fit; said again on every run, since every such batch is inconclusive
            import warnings

            from ._monitor import BlindChartWarning

            warnings.warn(blind, BlindChartWarning, stacklevel=2)
        if extra.get("label") != label:
            raise InvalidParameterError(f"--state {state_path} was created for --label {extra.get('label')!r}, "
                                        f"not {label!r}")
        upgrade = _check_same_source(state_path, extra, source)
        if ref_ds is not None and _fingerprint(ref_ds) != extra.get("reference_sha256"):
            raise InvalidParameterError(f"--reference differs from the one --state {state_path} was created "
                                        "with; start a new state file to change the reference")
    else:
        if ref_ds is None:
            raise InvalidParameterError("the first run needs --reference (no --state file yet)")
        mon = LabelMonitor(**(monitor_params or {})).fit(ref_ds.X, ref_ds.labels())
        upgrade = False
        extra = {"label": label, "id": id, "source": source.description, "source_key": source.identity,
                 "reference": ref_ds.source,
                 "reference_sha256": _fingerprint(ref_ds), "plan": _columns_plan(ref_ds),
                 "feature_names": list(ref_ds.feature_names), "done": {}}
        # Not saved yet: the state is first written with the first processed batch, so a run refused
        # at its first batch (a bad file) leaves nothing behind.
    verdicts: list[BatchVerdict] = []
    pending = source.pending(extra["done"])
    while True:
        name = None
        touched = False  # whether the monitor's statistics may have been changed in memory
        try:
            batch = next(pending, None)
            if batch is None:
                break
            name = batch.name
            where = f"{source.description}: {batch.name}"
            counts: dict[str, int] = {}
            X, labels, ids = _encode_batch(batch.table, extra["plan"], extra["feature_names"], label,
                                           extra.get("id"), mon.mean_, where, missing_counts=counts)
            alpha = mon.drift_alpha if mon.drift_alpha is not None else 1.0 / float(mon.expected_run_length)
            drifted = _missing_drift(counts, batch.table.num_rows, _reference_missing(extra["plan"]),
                                     len(mon.reference_labels_), alpha)
            touched = True
            v = mon.update(X, _typed_labels(labels, mon.classes_), ids=ids, name=batch.name,
                           missing_features=drifted)
            done = {k: list(x) if isinstance(x, list) else x for k, x in extra["done"].items()}
            type(source).record(done, batch.mark)
            mon.save(state_path, {**extra, "done": done})  # statistics and progress together, atomically
        except (FlipguardError, OSError) as exc:
            if touched or not saved:  # the statistics in memory may include the failed batch: use the saved ones
                mon = LabelMonitor.load(state_path) if saved else None
            reason = str(exc).strip() or type(exc).__name__
            raise BatchFailed(reason, reason=reason, batch=name, monitor=mon, verdicts=verdicts) from exc
        extra["done"] = done
        saved = True
        verdicts.append(v)
        if on_verdict is not None:
            on_verdict(v)
    if not saved or (upgrade and not verdicts):
        # A first run with nothing pending: keep the fitted monitor for the next run.  An older state
        # (source as given) accepted from here: record the resolved source once, so that other
        # spellings and other working folders are accepted from now on.
        mon.save(state_path, extra)
    return mon, verdicts


def _check_same_source(state_path: str, extra: dict, source: BatchSource) -> bool:
    """Refuse a state file of another source; ``True`` if the state needs ``source_key`` recorded.

    States record the source's identity (a folder's resolved path, a normalised URL).  States written
    before that recorded the source as given; such a state is accepted when that spelling, resolved
    from the current folder, is the same source, and then gets the identity (written with the next save).
    """
    stored = extra.get("source")
    if "source_key" in extra:
        if extra["source_key"] == source.identity:
            return False
        where = "" if extra["source_key"] == stored else f" ({extra['source_key']})"
        here = "" if source.identity == source.description else f" ({source.identity})"
        raise InvalidParameterError(f"--state {state_path} belongs to source {stored!r}{where}, not "
                                    f"{source.description!r}{here}; use one state file per source")
    legacy = _source_key(stored) if isinstance(source, FolderSource) and isinstance(stored, str) else stored
    if legacy != source.identity:
        if isinstance(source, FolderSource) and isinstance(stored, str) and "://" not in stored \
                and not os.path.isabs(stored):
            raise InvalidParameterError(
                f"--state {state_path} belongs to source {stored!r}, recorded as given by an older flipguard; "
                f"from the current folder that is {legacy}, not {source.identity}. Run once from the folder where "
                "the state was created (that records the full path), or use one state file per source")
        raise InvalidParameterError(f"--state {state_path} belongs to source {stored!r}; "
                                    "use one state file per source")
    extra["source_key"] = source.identity
    return True


def write_metrics(path, mon: LabelMonitor, *, source: str = "") -> None:
    """Prometheus text-format file for node_exporter's textfile collector (written atomically).

    Uses ``prometheus_client`` (``pip install 'flipguard[monitor]'``).
    """
    try:
        from prometheus_client import CollectorRegistry, Gauge, write_to_textfile
    except ImportError:
        raise DataError("--metrics needs prometheus_client (pip install 'flipguard[monitor]')") from None
    reg = CollectorRegistry()
    lab = ["source"]
    g = lambda name, doc, extra=(): Gauge(name, doc, lab + list(extra), registry=reg)  # noqa: E731
    g("flipguard_monitor_batches", "Batches processed since the state was created.").labels(source).set(
        mon.n_batches_)
    g("flipguard_monitor_alarms", "Alarms raised since the state was created.").labels(source).set(len(mon.alarms_))
    last = mon.history_[-1] if mon.history_ else {}
    g("flipguard_monitor_alarm", "1 if the last batch raised an alarm.").labels(source).set(
        1.0 if last.get("status") == "alarm" else 0.0)
    g("flipguard_monitor_findings", "Batches that need a look (alarm, labels outside the reference's classes "
      "or missing, class shares unlike the reference's, inconclusive) since the state was created.").labels(source).set(
        sum(h.get("status") != "no_alarm" for h in mon.history_))
    g("flipguard_monitor_finding", "1 if the last batch needs a look (alarm, unknown or missing labels, "
      "label shift, inconclusive).").labels(source).set(1.0 if last and last.get("status") != "no_alarm" else 0.0)
    g("flipguard_monitor_last_unknown_labels", "Rows of the last batch with a label outside the reference's "
      "classes (not judged).").labels(source).set(last.get("unknown_labels", 0))
    g("flipguard_monitor_last_missing_labels", "Rows of the last batch without a label (not judged).").labels(
        source).set(last.get("missing_labels", 0))
    g("flipguard_monitor_feature_drift", "1 if the last batch's inputs differ from the reference.").labels(
        source).set(1.0 if last.get("feature_drift") else 0.0)
    g("flipguard_monitor_last_suspects", "Suspect labels in the last batch.").labels(source).set(
        last.get("suspects", 0))
    g("flipguard_monitor_threshold", "CUSUM alarm threshold (statistics below are divided by it).").labels(
        source).set(mon.threshold_)
    stat = g("flipguard_monitor_statistic", "CUSUM statistic / threshold per chart (>= 1 alarms).",
             ("true_class", "labelled_as"))
    classes = mon.classes_
    for (a, b), s in zip(mon.pairs_, mon.statistic_[:-1]):
        stat.labels(source, str(classes[a]), str(classes[b])).set(s / mon.threshold_)
    stat.labels(source, "any", "any").set(mon.statistic_[-1] / mon.threshold_)
    write_to_textfile(os.fspath(path), reg)
