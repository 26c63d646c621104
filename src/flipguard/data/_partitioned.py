"""Partitioned datasets: a folder or fsspec prefix of Parquet/CSV files read as one dataset.

A **partition** is one data file under the root; its **name** is the file's
path relative to the root, with ``/`` separators (``year=2024/part-0.parquet``),
so names do not depend on where the lake is mounted.  Hive-style ``key=value``
folders become string columns of every row below them.  Files and folders
whose name starts with ``_`` or ``.`` (``_SUCCESS``, ``_delta_log``, ``.crc``)
and flipguard's own outputs (seal sidecars and stores, and a folder of audit
results: one holding the ``_audit.json`` an audit writes) are not data.

``discover(..., strict=True)`` is what seal, verify and diff use: it looks at
the folder as ``pyarrow.dataset`` and ``pandas.read_parquet`` do (they read
every file whose path has no component starting with ``.`` or ``_``, whatever
its suffix, and follow symbolic links), so nothing those readers would read can
stay out of a seal unseen.  Partitions are still chosen by suffix (a file
renamed ``part-3.keep`` is not one); every other file or link those readers
would try to read, a Parquet file without a suffix included, is listed in
``others`` (the caller refuses it at seal and reports it at verify), and audit
results are never skipped by what their ``_audit.json`` says: the seal lists
their files in ``files``, sealed byte for byte (see :func:`discover`).

A row is identified by its partition and its 0-based position in that file
(``row``), or by an ``--id`` column.  Positions stay stable as long as the file
is not rewritten; partitions added, removed or renamed are reported by name.

Example::

    ds = discover("lake/")                       # or "s3://bucket/prefix/"
    [p.name for p in ds.partitions]
    tbl = ds.read(ds.partitions[0], ["row_id", "label"], dictionary=["label"])
"""

from __future__ import annotations

import json
import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from .._arrow import from_numpy, string_array
from ..exceptions import DataError
from ._read import _CSV_SUFFIXES, _PARQUET_SUFFIXES, _is_url, _open_url, check_columns, read_parquet_file

__all__ = ["Partition", "PartitionedDataset", "discover", "is_partitioned"]

#: Suffixes of files flipguard writes next to data; never read as partitions.
_SIDECARS = (".flipguard.json", ".flipguard.snapshot")

#: The summary a partitioned audit writes into its output folder; a folder below a dataset's
#: root that holds one (with an audit summary's content) is audit output, not data.
AUDIT_SUMMARY = "_audit.json"


@dataclass(frozen=True)
class Partition:
    """One data file of a partitioned dataset.

    Attributes
    ----------
    name : str
        Path relative to the dataset root, ``/``-separated (stable across mounts).
    path : str
        Where to read it: a local path or an fsspec URL.
    format : str
        ``"parquet"`` or ``"csv"``.
    keys : dict
        Hive ``key=value`` pairs of the folders above the file.
    """

    name: str
    path: str
    format: str
    keys: dict = field(default_factory=dict)


@dataclass(frozen=True)
class PartitionedDataset:
    """A folder or prefix of data files read as one dataset (see the module docstring)."""

    root: str
    partitions: tuple[Partition, ...]
    #: strict discovery only: ``(name, why)`` of files and links that readers may read but that are
    #: not partitions (no data suffix and not Parquet by content, links to folders, FIFOs, ...)
    others: tuple[tuple[str, str], ...] = ()
    #: strict discovery only: ``(name, path)`` of the files sealed by their bytes, not read as rows
    files: tuple[tuple[str, str], ...] = ()

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.partitions]

    def __len__(self) -> int:
        return len(self.partitions)

    def read(self, part: Partition, columns: list[str] | None = None, *,
             dictionary: list[str] | None = None) -> pa.Table:
        """Read ``columns`` (all when ``None``) of one partition; hive keys are columns too.

        Raises :class:`DataError` naming the partition when it cannot be read or
        lacks a column.
        """
        return read_partition(part, columns, dictionary=dictionary)


def is_partitioned(source) -> bool:
    """True for a local folder, or a URL naming a prefix: ending in ``/``, or whose last part has no file suffix."""
    if isinstance(source, PartitionedDataset):
        return True
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if not isinstance(source, str) or source.startswith(("postgresql://", "postgres://")):
        return False
    if _is_url(source):  # decided from the name alone: no request to the store
        last = source.rstrip("/").rsplit("/", 1)[-1]
        return source.endswith("/") or _format(last) is None and "." not in last
    return os.path.isdir(source)


def _fs(url: str):
    try:
        from fsspec.core import url_to_fs
    except ImportError:  # pragma: no cover - depends on the environment
        raise DataError(f"cannot open {url}: reading URLs needs fsspec and the filesystem's package "
                        "(pip install 'flipguard[s3]' for s3://)") from None
    try:
        return url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise DataError(f"cannot open {url}: {exc}") from None


def _format(name: str) -> str | None:
    lower = name.lower()
    if lower.endswith(_SIDECARS):
        return None
    if lower.endswith(_PARQUET_SUFFIXES):
        return "parquet"
    if lower.endswith(_CSV_SUFFIXES):
        return "csv"
    return None


def _hidden(rel: str) -> bool:
    return any(part.startswith(("_", ".")) or part.endswith(".flipguard.parts")
               for part in rel.split("/"))


def is_audit_summary(data: bytes) -> bool:
    """Are ``data`` the bytes of the ``_audit.json`` a partitioned audit writes?"""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return False
    return (isinstance(doc, dict) and str(doc.get("method", "")).startswith("confident_learning")
            and {"n_flagged", "estimated_flips", "joint", "partitions", "out"} <= set(doc))


def _audit_dirs(rels: list[tuple[str, str]], read) -> list[str]:
    """The folders (relative names, ``/``-terminated) below the root that hold audit output: an
    ``_audit.json`` whose content is an audit summary.  ``read(path)`` returns a file's bytes."""
    out = []
    for rel, path in rels:
        head, _, tail = rel.rpartition("/")
        if tail == AUDIT_SUMMARY and head:  # the root itself is what was asked for: never skipped
            try:
                if is_audit_summary(read(path)):
                    out.append(head + "/")
            except OSError:
                continue
    return out


def local_root(source) -> str:
    """A local folder's path as given, or resolved when its last component is ``.`` or ``..``.

    ``flipguard seal .`` (or ``audit .``) inside a folder must name its outputs
    after the folder (``L5`` -> ``../L5.flipguard.json``), exactly as ``seal L5``
    from its parent does.
    """
    root = os.fspath(source).rstrip("/\\")
    if os.path.basename(root) in ("", ".", ".."):
        return str(Path(os.fspath(source) or ".").resolve())
    return root


def label_kind_text(t: pa.DataType) -> str:
    """A label column's Arrow type as a reader sees it (a dictionary column's value type)."""
    return str(t.value_type if pa.types.is_dictionary(t) else t)


def check_label_types(label: str, found: list[tuple[str, str, str]]) -> str | None:
    """One label type in every partition: ``found`` is ``(partition, type family, Arrow type)`` per
    partition; returns the family (``None`` when no partition has a typed label column).

    Label values are compared as text across partitions, so a column that is
    ``int64`` in one file and ``double`` or ``string`` in another would merge
    ``1``, ``1.0`` and ``"1"`` silently (or keep them apart): refused, naming the
    partitions and both types.  Types of one family are one type: every integer
    width (``int32`` and ``int64`` give the same text), and text however stored
    (``string``, ``large_string``, dictionary-encoded; every CSV partition is
    read as text).  Floats of different widths are not (``float32`` 0.1 is not
    ``float64`` 0.1), nor decimals of different scales.  A column of nulls only
    (type ``null``) has no values to disagree.
    """
    first = None
    for name, family, text in found:
        if family == "null":
            continue
        if first is None:
            first = (name, family, text)
        elif family != first[1]:
            csv = any(_format(n) == "csv" for n in (name, first[0]))
            raise DataError(f"partition {name}: label column '{label}' is {text}, but {first[2]} in "
                            f"{first[0]}; a label column must have one type in every partition (integer "
                            "widths may differ" + ("; a CSV partition's columns are read as text" if csv else "")
                            + "): rewrite the partitions with one label type")
    return None if first is None else first[1]


def _keys(rel: str) -> dict:
    keys = {}
    for part in rel.split("/")[:-1]:
        if "=" in part:
            k, v = part.split("=", 1)
            if k:
                keys[k] = v
    return keys


def discover(source, *, strict: bool = False, sealed_files=None) -> PartitionedDataset:
    """List the data files of a folder or fsspec prefix, sorted by name.

    ``strict`` (seal, verify, diff): see the module docstring and
    :func:`_discover_strict`.  ``sealed_files`` (verify): the names a seal
    recorded as files sealed by their bytes; they alone are kept out of the
    partitions, whatever the folder holds now (the decision comes from the
    signed manifest, never from a file an attacker can write).

    Raises
    ------
    DataError
        No such folder, or no Parquet/CSV file below it.
    """
    if isinstance(source, PartitionedDataset):
        return source
    if strict:
        return _discover_strict(os.fspath(source), sealed_files)
    root = os.fspath(source)
    rels: list[tuple[str, str]] = []  # (name, path)
    if _is_url(root):
        fs, base = _fs(root)
        protocol = root.split("://", 1)[0]
        try:
            found = fs.find(base)
        except FileNotFoundError:
            raise DataError(f"{root}: no such folder or prefix") from None
        except OSError as exc:
            raise DataError(f"{root}: cannot list ({exc})") from None
        base = base.rstrip("/")
        for p in found:
            rel = p[len(base):].lstrip("/") if p.startswith(base) else posixpath.basename(p)
            rels.append((rel, f"{protocol}://{p}"))
        read = lambda url: fs.cat_file(url.split("://", 1)[1])  # noqa: E731
    else:
        if not os.path.isdir(root):
            raise DataError(f"{root}: no such folder" if not os.path.exists(root)
                            else f"{root}: not a folder")
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for f in filenames:
                full = os.path.join(dirpath, f)
                rels.append((os.path.relpath(full, root).replace(os.sep, "/"), full))
        read = lambda path: Path(path).read_bytes()  # noqa: E731
    audit_out = tuple(_audit_dirs(rels, read))  # an audit's results written inside the data: not data
    parts = []
    for rel, path in sorted(rels):
        fmt = _format(rel)
        if fmt is None or _hidden(rel) or rel.startswith(audit_out):
            continue
        parts.append(Partition(rel, path, fmt, _keys(rel)))
    if not parts:
        raise DataError(f"{root}: no Parquet or CSV files found (a partitioned dataset is a folder "
                        "or prefix of .parquet/.csv files)")
    return PartitionedDataset(root, tuple(parts))


#: The prefixes ``pyarrow.dataset`` skips in every path component (its ``ignore_prefixes`` default),
#: and so do ``pandas.read_parquet`` and Spark: a path with one of them is not data to any reader.
READER_IGNORED_PREFIXES = (".", "_")

_PARQUET_MAGIC = b"PAR1"


def _reader_hidden(rel: str) -> bool:
    """Does ``pyarrow.dataset`` skip ``rel`` (a component starting with ``.`` or ``_``)?"""
    return any(part.startswith(READER_IGNORED_PREFIXES) for part in rel.split("/"))


def _own_output(rel: str) -> bool:
    """A name flipguard gives its own outputs: a seal sidecar, or a file in a ``*.flipguard.parts`` store."""
    return rel.lower().endswith(_SIDECARS) or any(p.endswith(".flipguard.parts") for p in rel.split("/")[:-1])


def _not_regular(mode: int) -> str:
    import stat

    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe), not a regular file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device, not a regular file"
    if stat.S_ISSOCK(mode):
        return "a socket, not a regular file"
    return "not a regular file"


def _local_head(path: str) -> bytes:
    """The first 4 bytes of a regular file, opened without blocking (``b""`` when unreadable)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return b""
    try:
        return os.read(fd, 4)
    except OSError:
        return b""
    finally:
        os.close(fd)


def _walk_strict(root: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]], list[tuple[str, str]]]:
    """``(files, odd, hidden)`` below a local folder, as a reader sees it.

    ``files``: regular files ``(name, path)`` (a link to a file counts as the
    file: readers follow it); ``odd``: ``(name, why)`` of links to folders
    (not followed here: a link can point anywhere, even at an ancestor),
    dangling links, FIFOs, devices and sockets; ``hidden``: files whose own
    name starts with ``.``/``_`` in a visible folder (``_audit.json`` is one).
    Folders whose name starts with ``.``/``_`` are not entered: readers skip them.
    """
    import stat

    files, odd, hidden = [], [], []
    stack = [("", root)]
    while stack:
        prefix, folder = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            raise DataError(f"{folder}: cannot list ({exc.strerror or exc})") from None
        for e in entries:
            rel = prefix + e.name
            if e.name.startswith(READER_IGNORED_PREFIXES):
                if not e.is_dir(follow_symlinks=False):
                    hidden.append((rel, e.path))
                continue
            try:
                st = os.stat(e.path)  # follows a link: readers do
            except OSError:
                odd.append((rel, "a symbolic link to nothing" if e.is_symlink() else "cannot be read"))
                continue
            if stat.S_ISDIR(st.st_mode):
                if e.is_symlink():
                    odd.append((rel, "a symbolic link to a folder, which readers follow and flipguard does not"))
                else:
                    stack.append((rel + "/", e.path))
            elif stat.S_ISREG(st.st_mode):
                files.append((rel, e.path))
            else:
                odd.append((rel, _not_regular(st.st_mode)))
    return files, odd, hidden


def _discover_strict(root: str, sealed_files) -> PartitionedDataset:
    """Every file a reader of ``root`` would read, sorted into partitions, sealed files and others.

    A file with a data suffix is a partition.  Every other file or link a
    reader would read is an *other*, named with why: a file without a data
    suffix (Parquet by its magic bytes or not), a seal sidecar or store file
    holding Parquet (named like flipguard's output, read by readers as data),
    a link to a folder or to nothing, a FIFO or device.  Flipguard's own
    outputs that are not Parquet are skipped (readers fail on them loudly).
    With ``sealed_files`` (verify) exactly those names are sealed files; without (seal, diff) the regular files of a folder
    holding an audit's ``_audit.json`` are, so results an earlier flipguard
    wrote into the data are covered byte for byte rather than skipped.
    """
    if _is_url(root):
        fs, base = _fs(root)
        protocol = root.split("://", 1)[0]
        try:
            found = sorted(fs.find(base))
        except FileNotFoundError:
            raise DataError(f"{root}: no such folder or prefix") from None
        except OSError as exc:
            raise DataError(f"{root}: cannot list ({exc})") from None
        base = base.rstrip("/")
        files, odd, hidden = [], [], []
        for p in found:
            rel = p[len(base):].lstrip("/") if p.startswith(base) else posixpath.basename(p)
            (hidden if _reader_hidden(rel) else files).append((rel, f"{protocol}://{p}"))

        def head(url):
            try:
                return fs.cat_file(url.split("://", 1)[1], start=0, end=4)
            except OSError:
                return b""

        def read(url):
            return fs.cat_file(url.split("://", 1)[1])
    else:
        if not os.path.isdir(root):
            raise DataError(f"{root}: no such folder" if not os.path.exists(root) else f"{root}: not a folder")
        files, odd, hidden = _walk_strict(root)
        head = _local_head

        def read(path):
            from ..integrity._files import read_bytes

            return read_bytes(path, "audit summary", follow_symlinks=False)
    if sealed_files is None:
        audit_out = tuple(_audit_dirs([(r, p) for r, p in hidden if r.rpartition("/")[2] == AUDIT_SUMMARY],
                                      _guarded(read)))
        as_bytes = {rel for rel, _ in files if rel.startswith(audit_out)} if audit_out else set()
    else:
        as_bytes = set(sealed_files)
    parts, others, sealed = [], list(odd), []
    for rel, path in files:
        if rel in as_bytes:
            sealed.append((rel, path))
            continue
        fmt = None if _own_output(rel) else _format(rel)
        if fmt is not None:
            parts.append(Partition(rel, path, fmt, _keys(rel)))
        elif head(path) == _PARQUET_MAGIC:
            others.append((rel, "Parquet data under a name flipguard gives its own outputs" if _own_output(rel)
                           else "Parquet data without a .parquet suffix"))
        elif not _own_output(rel):
            others.append((rel, "no .parquet/.csv suffix"))
    if not parts:
        raise DataError(f"{root}: no Parquet or CSV files found (a partitioned dataset is a folder "
                        "or prefix of .parquet/.csv files)")
    return PartitionedDataset(root, tuple(sorted(parts, key=lambda p: p.name)), tuple(sorted(others)),
                              tuple(sorted(sealed)))


def _guarded(read):
    """``read`` with any refusal (a FIFO, a link) turned into :class:`OSError`, as :func:`_audit_dirs` expects."""
    from ..exceptions import IntegrityError

    def inner(path):
        try:
            return read(path)
        except IntegrityError as exc:
            raise OSError(str(exc)) from None
    return inner


def describe_others(others, limit: int = 10) -> str:
    """``a (why), b (why), ... (N in all)`` for :attr:`PartitionedDataset.others`."""
    shown = ", ".join(f"{n} ({why})" for n, why in others[:limit])
    return shown + (f", ... ({len(others)} in all)" if len(others) > limit else "")


def read_partition(part: Partition, columns: list[str] | None = None, *,
                   dictionary: list[str] | None = None, exact: bool = False,
                   id_column: str | None = None) -> pa.Table:
    """One partition's ``columns`` (hive keys included) as an Arrow table; errors name the partition.

    ``exact`` (seal, verify, diff): a CSV partition is read exactly as a
    single CSV file is sealed (:func:`flipguard.integrity._source._read_csv_exact`:
    every column as the text written, no null words, so ``NA``, ``N/A`` and
    the empty cell stay distinct labels; ``id_column`` becomes integers only
    when every id is an integer written as text), and a wanted column that is
    both a hive folder key and a column inside the file is refused: the path's
    value would hide whatever the file says, and readers disagree on which wins.
    Every engine's tasks call this one function, so seals and verifies agree
    across engines.
    """
    import pyarrow.csv as pacsv

    wanted = None if columns is None else list(dict.fromkeys(columns))
    file_cols = None if wanted is None else [c for c in wanted if c not in part.keys]
    dictionary = [c for c in dictionary or [] if file_cols is None or c in file_cols]

    def read(src) -> tuple[pa.Table, list[str]]:
        """The table and the file's column names."""
        if part.format == "parquet":  # without pandas (see read_parquet_file); a missing column is named below
            return read_parquet_file(src, file_cols, dictionary)
        if exact:
            from ..integrity._source import _read_csv_exact

            return _read_csv_exact(src, file_cols, dictionary[0] if dictionary else None, id_column)
        delimiter = "\t" if part.name.lower().endswith(".tsv") else ","
        tbl = pacsv.read_csv(src, parse_options=pacsv.ParseOptions(delimiter=delimiter),
                             convert_options=pacsv.ConvertOptions(
                                 strings_can_be_null=True, include_columns=file_cols,
                                 column_types={c: pa.dictionary(pa.int32(), pa.string()) for c in dictionary}))
        return tbl, tbl.column_names

    def missing():
        return DataError(f"partition {part.name}: column(s) "
                         f"{', '.join(repr(c) for c in file_cols or [])} not all found (every "
                         f"{'/'.join(_PARQUET_SUFFIXES + _CSV_SUFFIXES)} file below the folder is a partition; "
                         "move other files out, or start their names with _ or . to skip them)")

    try:
        if exact and part.format == "csv":  # the exact reader opens a URL itself (header, then data)
            tbl, names = read(part.path)
        elif _is_url(part.path):
            with _open_url(part.path) as fh:
                tbl, names = read(fh)
        else:
            if exact:
                _refuse_non_regular(part)
            tbl, names = read(part.path)
    except FileNotFoundError:
        raise DataError(f"partition {part.name}: no such file (removed while reading?)") from None
    except DataError as exc:  # the exact CSV reader names the path: name the partition instead
        msg = str(exc)
        if msg.startswith(f"{part.path}: column(s)") and "not found" in msg:
            raise missing() from None
        raise DataError(f"partition {part.name}: {msg.removeprefix(f'{part.path}: ')}") from None
    except (KeyError, pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, OSError,
            UnicodeDecodeError) as exc:
        text = str(exc).strip()
        if "FieldRef" in text or isinstance(exc, KeyError):
            raise missing() from None
        first = text.splitlines()[0] if text else type(exc).__name__
        raise DataError(f"partition {part.name}: cannot read as {part.format.upper()}: {first}") from None
    if exact and wanted is not None:
        both = [k for k in part.keys if k in wanted and k in names]
        if both:
            raise DataError(f"partition {part.name}: column '{both[0]}' is both a folder key "
                            f"({both[0]}={part.keys[both[0]]}/) and a column in the file; readers disagree on "
                            "which one counts, so flipguard refuses to guess: drop the column from the file or "
                            "rename the folder")
    for k, v in part.keys.items():
        if (wanted is None or k in wanted) and k not in tbl.column_names:
            tbl = tbl.append_column(k, pa.DictionaryArray.from_arrays(
                from_numpy(np.zeros(tbl.num_rows, np.int32)), string_array([v])))
    if wanted is not None:
        check_columns([*names, *(k for k in part.keys if k not in names)], wanted, f"partition {part.name}")
        tbl = tbl.select(wanted)
    return tbl


def _refuse_non_regular(part: Partition) -> None:
    """A partition that is not a regular file (a FIFO swapped in after listing) would hang the reader."""
    import stat

    try:
        st = os.stat(part.path)
    except OSError:
        return  # the reader names a missing file
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"partition {part.name}: is {_not_regular(st.st_mode)}")
