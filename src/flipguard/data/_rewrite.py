"""Rewrite a CSV file in place of re-serialising it: only what changed is touched.

``flipguard attack`` and ``flipguard clean`` change a few labels of a file.
Writing the whole table back through a CSV writer re-quotes strings, reformats
numbers and booleans, and a ``git diff`` of the copy shows every line changed.
:func:`rewrite_csv` copies the input's bytes and edits only the label field of
the rows whose label changed (and drops rows, or appends a column, when asked),
so every other byte -- quoting, number formatting, line endings, a UTF-8
byte order mark -- is the input's own.  A new label is written exactly as that label is written
elsewhere in the same file.

Only local CSV files (``.csv``, ``.tsv``, ``.txt``; gzip or bz2 compressed as
``.gz``/``.bz2``) whose rows are one line each qualify, and only when the
output's name implies the same delimiter (a ``.tsv`` to a ``.tsv``).  The output
is compressed as its own name says, whatever the input's compression.  Callers
fall back to a normal write otherwise (``rewrite_csv`` returns False).
"""

from __future__ import annotations

import bz2
import gzip
import os

import numpy as np

from .._io import atomic_path
from ._read import csv_dialect

__all__ = ["label_spellings", "rewrite_csv"]

_MAX_BYTES = 2 << 30  # beyond this a streaming writer is the better tool
_BOM = b"\xef\xbb\xbf"


def rewrite_csv(src, dst, *, label: str, codes_before: np.ndarray, codes_after: np.ndarray | None = None,
                keep: np.ndarray | None = None, add_column: tuple[str, np.ndarray] | None = None) -> bool:
    """Write ``src`` to ``dst`` with only the changed label fields edited.

    Parameters
    ----------
    src, dst : path
        Input CSV (never modified) and output path (written atomically).
    label : str
        Label column name (as in the header).
    codes_before, codes_after : ndarray of int, shape (n_rows,)
        Label codes per data row before and after; rows where they differ get
        the text of the new label.  ``codes_after=None`` changes no label.
    keep : ndarray of bool, optional
        Rows to keep (others are dropped).
    add_column : (name, values), optional
        A column appended to every kept row (values formatted with ``repr``-free
        ``str``; floats with up to 6 significant digits).

    Returns
    -------
    bool
        False (and nothing written) when the file does not qualify: not a local
        CSV or TSV file, an output whose name implies another delimiter, a quoted
        field spanning lines, a header without ``label``, or a row count different
        from ``len(codes_before)``.
    """
    src, dst = os.fspath(src), os.fspath(dst)
    if "://" in dst:
        return False
    parsed = _parse(src, label, len(codes_before), csv_dialect(dst)[0])
    if parsed is None:
        return False
    bom, lines, trailing, col, data_idx, sep = parsed
    out_compression = csv_dialect(dst)[1]

    changed = np.flatnonzero(codes_before != codes_after) if codes_after is not None else np.array([], int)
    spellings: dict[int, bytes] = {}
    if len(changed):
        # How each class is written in this file: the text of its first row.
        wanted = set(np.unique(codes_after[changed]).tolist())
        for code in wanted:
            first = np.flatnonzero(codes_before == code)
            if not len(first):
                return False
            span = _field(lines[data_idx[first[0]]], col, sep)
            if span is None:
                return False
            spellings[code] = lines[data_idx[first[0]]][span[0]:span[1]]
        for r in changed:
            i = data_idx[r]
            span = _field(lines[i], col, sep)
            if span is None:
                return False
            lines[i] = lines[i][:span[0]] + spellings[int(codes_after[r])] + lines[i][span[1]:]

    if add_column is not None:
        name, values = add_column
        cells = [_cell(v) for v in np.asarray(values)]
        lines[0] = _append(lines[0], name.encode(), sep)
        for r, i in enumerate(data_idx):
            lines[i] = _append(lines[i], cells[r], sep)
    if keep is not None:
        drop = set(data_idx[~np.asarray(keep, dtype=bool)].tolist())
        lines = [ln for i, ln in enumerate(lines) if i not in drop]
    out = bom + b"\n".join(lines) + (b"\n" if trailing else b"")
    with atomic_path(dst) as tmp:
        with _open(tmp, out_compression, "wb") as fh:
            fh.write(out)
    return True


def label_spellings(src, *, label: str, codes: np.ndarray) -> dict[int, str] | None:
    """How each class is written in the CSV file ``src``: ``{code: text}``, the (unquoted) label
    field of the class's first row, for every code in ``codes`` (one per data row).  ``None`` when
    the file does not qualify for :func:`rewrite_csv`."""
    parsed = _parse(os.fspath(src), label, len(codes))
    if parsed is None:
        return None
    _, lines, _, col, data_idx, sep = parsed
    codes = np.asarray(codes)
    out = {}
    for code in np.unique(codes).tolist():
        first = int(np.flatnonzero(codes == code)[0])
        span = _field(lines[data_idx[first]], col, sep)
        if span is None:
            return None
        out[int(code)] = _unquote(lines[data_idx[first]][span[0]:span[1]]).decode("utf-8", "replace")
    return out


def _parse(src: str, label: str, n: int, out_delimiter: str | None = None):
    """``(bom, lines, trailing, label column, data line positions, separator)`` of a local one-line-
    per-row CSV file with ``n`` data rows and a ``label`` column, or None when it does not qualify
    (or, given ``out_delimiter``, when the file's delimiter differs)."""
    base = src.lower().removesuffix(".gz").removesuffix(".bz2")
    if "://" in src or not base.endswith((".csv", ".tsv", ".txt")) or not os.path.isfile(src) \
            or os.path.getsize(src) > _MAX_BYTES:
        return None
    delimiter, compression = csv_dialect(src)
    if out_delimiter is not None and delimiter != out_delimiter:
        return None
    sep = delimiter.encode()
    try:
        with _open(src, compression) as fh:
            raw = fh.read(_MAX_BYTES + 1)
    except (OSError, EOFError):  # not really compressed: the reader would have failed too
        return None
    if len(raw) > _MAX_BYTES:
        return None
    # A UTF-8 byte order mark (Excel's "CSV UTF-8") is kept as it is, ahead of the edited bytes.
    bom = _BOM if raw.startswith(_BOM) else b""
    raw = raw[len(bom):]
    lines = raw.split(b"\n")
    trailing = lines[-1] == b""
    if trailing:
        lines.pop()
    if not lines:
        return None
    header_fields = _fields(lines[0], sep)
    if header_fields is None:
        return None
    names = [_unquote(lines[0][a:b]).decode("utf-8", "replace") for a, b in header_fields]
    if label not in names:
        return None
    col = names.index(label)
    data_idx = _nonempty(lines)
    if len(data_idx) != n or raw.count(b'"') % 2:
        return None
    return bom, lines, trailing, col, data_idx, sep


def _open(path, compression: str | None, mode: str = "rb"):
    if compression == "gzip" and mode == "wb":
        # No file name (it would be the temporary one) and no time stamp in the header: the same
        # input gives the same bytes, as pyarrow's gzip writer does.
        return _GzipWriter(path)
    if compression == "gzip":
        return gzip.open(path, mode)
    if compression == "bz2":
        return bz2.open(path, mode)
    return open(path, mode)


class _GzipWriter(gzip.GzipFile):
    def __init__(self, path):
        self._raw = open(path, "wb")  # noqa: SIM115 - closed in close()
        super().__init__(filename="", mode="wb", fileobj=self._raw, mtime=0)

    def close(self):
        try:
            super().close()
        finally:
            self._raw.close()


def _nonempty(lines: list[bytes]) -> np.ndarray:
    lengths = np.fromiter((len(ln.strip(b"\r")) for ln in lines), dtype=np.int64, count=len(lines))
    idx = np.flatnonzero(lengths)
    return idx[idx > 0]


def _append(line: bytes, cell: bytes, sep: bytes = b",") -> bytes:
    if line.endswith(b"\r"):
        return line[:-1] + sep + cell + b"\r"
    return line + sep + cell


def _cell(v) -> bytes:
    if isinstance(v, (float, np.floating)):
        return (f"{float(v):.6g}").encode()
    return str(v).encode()


def _unquote(b: bytes) -> bytes:
    b = b.strip()
    if len(b) >= 2 and b[:1] == b'"' and b[-1:] == b'"':
        return b[1:-1].replace(b'""', b'"')
    return b


def _fields(line: bytes, sep: bytes = b",") -> list[tuple[int, int]] | None:
    """Byte spans of the ``sep``-separated fields of one CSV line (quotes respected); None if malformed."""
    spans, start, i, n = [], 0, 0, len(line)
    end = n - 1 if line.endswith(b"\r") else n
    in_quotes = False
    while i < end:
        c = line[i:i + 1]
        if in_quotes:
            if c == b'"':
                if line[i + 1:i + 2] == b'"':
                    i += 2
                    continue
                in_quotes = False
        elif c == b'"':
            in_quotes = True
        elif c == sep:
            spans.append((start, i))
            start = i + 1
        i += 1
    if in_quotes:
        return None
    spans.append((start, end))
    return spans


def _field(line: bytes, col: int, sep: bytes = b",") -> tuple[int, int] | None:
    spans = _fields(line, sep)
    if spans is None or col >= len(spans):
        return None
    return spans[col]
