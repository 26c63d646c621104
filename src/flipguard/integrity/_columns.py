"""Columnar building blocks of seal, verify and diff: label codes, ids, block commitments, alignment.

Everything here is vectorised over whole Arrow buffers or numpy arrays; no
Python loop runs per row.  Label values are compared through their canonical
text (``pyarrow.compute.cast(..., string)``: ``1`` -> ``"1"``, ``True`` ->
``"true"``), so a label column whose Arrow type changes between two reads
(a CSV edited by hand) still compares value by value; a missing label is ``None``.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .._arrow import from_numpy, to_numpy, type_family  # noqa: F401 - type_family is used from here
from ..exceptions import DataError

__all__: list[str] = []

#: Commitment schemes: unkeyed (public manifests) and keyed (``--private``).
SCHEME_PLAIN = "sha256-blocks-v1"
SCHEME_KEYED = "hmac-sha256-blocks-v1"
MAX_BLOCKS = 4096
MIN_BLOCK_ROWS = 1 << 16


# -- column types -------------------------------------------------------------
def check_scalar(t: pa.DataType, what: str) -> None:
    """Refuse nested column types (list, struct, map, union): a label or id is one value."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_nested(t) or pa.types.is_union(t):
        raise DataError(f"{what} has type {t}; flipguard seals one scalar value per row "
                        "(text, integer, boolean, float or decimal)")


# -- labels -----------------------------------------------------------------
def _text_values(arr: pa.Array) -> list[str | None]:
    """Distinct values (a small dictionary) as canonical text; ``None`` for missing."""
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        return arr.to_pylist()
    try:
        return pc.cast(arr, pa.string()).to_pylist()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return [None if v is None else str(v) for v in arr.to_pylist()]


def _canonical(v: str | None):
    return (v is None, v or "")


def label_codes(col: pa.ChunkedArray | pa.Array, classes: list | None = None
                ) -> tuple[list[str | None], np.ndarray]:
    """A label column -> ``(values, codes)``: label values as text and one code per row.

    ``values[codes[i]]`` is row ``i``'s label as text (``None`` when missing).
    Without ``classes``, ``values`` is in canonical order (text order, missing
    last).  With ``classes`` (a sealed class list), ``values`` starts with
    ``classes`` so known labels get their sealed codes and new ones follow.
    Either way ``values`` may list a dictionary value no row uses; see
    :func:`drop_unused`.

    Dictionary columns (Parquet read with ``read_dictionary``) are mapped chunk
    by chunk through one small lookup table per distinct dictionary, straight
    into a preallocated array of the narrowest unsigned type: one pass, no
    per-row strings.  Integer and boolean columns are coded with numpy;
    anything else is hash-encoded by Arrow first.
    """
    if isinstance(col, pa.Array):
        col = pa.chunked_array([col], type=col.type)
    t = col.type
    check_scalar(t, "the label column")
    if classes is None and (pa.types.is_integer(t) or pa.types.is_boolean(t)) and col.null_count == 0:
        return _integer_codes(col)
    if not pa.types.is_dictionary(t):
        if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_integer(t)
                or pa.types.is_boolean(t) or pa.types.is_binary(t)):
            col = pc.cast(col, pa.string())
        col = pc.dictionary_encode(col)
    return _dictionary_codes(col, classes)


def _integer_codes(col: pa.ChunkedArray):
    n = len(col)
    if n == 0:
        return [], np.zeros(0, np.uint8)
    if pa.types.is_boolean(col.type):
        v = to_numpy(pc.cast(col, pa.int8()))
        return ["false", "true"], v.view(np.uint8)
    v = to_numpy(col)
    lo, hi = int(v.min()), int(v.max())
    if hi - lo < (1 << 20):
        counts = np.bincount((v - lo).astype(np.intp), minlength=hi - lo + 1)
        present = np.flatnonzero(counts) + lo
    else:
        present = np.unique(v)
    text = [str(int(x)) for x in present]
    order = sorted(range(len(text)), key=lambda i: text[i])
    dtype = code_dtype(len(text))
    rank = np.empty(len(text), dtype=dtype)
    rank[order] = np.arange(len(text))
    if hi - lo < (1 << 20):
        lut = np.zeros(hi - lo + 1, dtype=dtype)
        lut[present - lo] = rank
        codes = lut[v - lo]
    else:
        codes = rank[np.searchsorted(present, v)]
    return [text[i] for i in order], codes


def _dictionary_codes(col: pa.ChunkedArray, classes: list | None):
    chunks = [ch for ch in col.chunks if len(ch)]
    dicts: list[pa.Array] = []
    which = []
    for ch in chunks:  # distinct dictionaries (a few per file), compared cheaply
        if not dicts or not (ch.dictionary is dicts[-1] or ch.dictionary.equals(dicts[-1])):
            dicts.append(ch.dictionary)
        which.append(len(dicts) - 1)
    texts = [_text_values(d) for d in dicts]
    seen = dict.fromkeys(v for t in texts for v in t)
    if any(ch.indices.null_count for ch in chunks):
        seen[None] = None
    if classes is None:
        values = sorted(seen, key=_canonical)
    else:
        values = list(classes) + [v for v in seen if v not in set(classes)]
    index = {v: i for i, v in enumerate(values)}
    dtype = code_dtype(len(values))
    null_code = index.get(None, 0)
    luts = [np.array([index[v] for v in t] + [null_code], dtype=dtype) for t in texts]
    codes = np.empty(len(col), dtype=dtype)
    pos = 0
    for ch, w in zip(chunks, which):
        idx = ch.indices
        if idx.null_count:
            idx = pc.fill_null(idx, -1)
        n = len(ch)
        np.take(luts[w], to_numpy(idx), out=codes[pos:pos + n])
        pos += n
    return values, codes


def class_counts(codes: np.ndarray, n_classes: int) -> np.ndarray:
    """Rows per code; a few vectorised equality counts when classes are few (no int64 copy)."""
    if n_classes <= 16 and codes.dtype.itemsize == 1:
        return np.array([np.count_nonzero(codes == c) for c in range(n_classes)], dtype=np.int64)
    return np.bincount(codes, minlength=n_classes)[:n_classes].astype(np.int64) if len(codes) \
        else np.zeros(n_classes, np.int64)


def drop_unused(values: list, codes: np.ndarray, counts: np.ndarray):
    """Drop values no row uses (a Parquet dictionary may list more); one gather only if needed."""
    present = counts > 0
    if present.all():
        return values, codes, counts
    dtype = code_dtype(int(present.sum()))
    lut = (np.cumsum(present) - 1).astype(dtype)
    return [v for v, p in zip(values, present) if p], lut[codes], counts[present]


def map_codes(values: list[str | None], codes: np.ndarray, classes: list[str | None]):
    """Codes over ``values`` -> codes over ``classes``, appending values ``classes`` lacks.

    Returns ``(extended_classes, codes)``; no pass over the rows when ``values``
    already starts with ``classes`` (``label_codes(col, classes)`` output).
    """
    if values[:len(classes)] == list(classes):
        return list(values), codes
    extended = list(classes)
    index = {v: i for i, v in enumerate(extended)}
    for v in values:
        if v not in index:
            index[v] = len(extended)
            extended.append(v)
    lut = np.array([index[v] for v in values] or [0], dtype=code_dtype(len(extended)))
    return extended, (lut[codes] if len(codes) else codes.astype(lut.dtype))


def code_dtype(n_classes: int) -> np.dtype:
    """The narrowest little-endian unsigned type that holds ``n_classes`` codes."""
    if n_classes <= 1 << 8:
        return np.dtype("<u1")
    if n_classes <= 1 << 16:
        return np.dtype("<u2")
    return np.dtype("<u4")


# -- ids --------------------------------------------------------------------
@dataclass
class Ids:
    """Row ids: ``kind="int64"`` (numpy, or Arrow chunks until :meth:`numpy` is needed) or
    ``kind="string"`` (an Arrow chunked string array).

    Ids stay in the chunks they were read in: no copy of what may be hundreds
    of megabytes unless an operation needs one contiguous array.
    """

    kind: str
    values: object  # np.ndarray or pa.ChunkedArray (int64); pa.ChunkedArray (string / large_string)

    def __len__(self) -> int:
        return len(self.values)

    def numpy(self) -> np.ndarray:
        """Integer ids as one int64 array (concatenated once, then kept)."""
        if not isinstance(self.values, np.ndarray):
            self.values = to_numpy(self.values)
        return self.values

    def arrow(self):
        if self.kind == "int64":
            return from_numpy(self.values) if isinstance(self.values, np.ndarray) else self.values
        return self.values

    def chunked(self) -> pa.ChunkedArray:
        a = self.arrow()
        return a if isinstance(a, pa.ChunkedArray) else pa.chunked_array([a])

    def as_string(self) -> "Ids":
        if self.kind == "string":
            return self
        return Ids("string", pc.cast(self.chunked(), pa.large_string()))

    def take(self, positions: np.ndarray) -> list:
        """Python values at ``positions`` (for reports: only changed rows)."""
        positions = np.asarray(positions, dtype=np.int64)
        if len(positions) == 0:
            return []
        if self.kind == "int64" and isinstance(self.values, np.ndarray):
            return self.values[positions].tolist()
        return take_chunked(self.values, positions).to_pylist()


def take_chunked(col: pa.ChunkedArray, positions: np.ndarray) -> pa.Array:
    """``col[positions]`` in that order, taking from each chunk separately.

    Arrow's own ``ChunkedArray.take`` first concatenates every chunk (a copy of
    the whole column); this copies only the values taken.
    """
    positions = np.asarray(positions, dtype=np.int64)
    chunks = [ch for ch in col.chunks if len(ch)]
    if len(positions) == 0:
        return pa.nulls(0, col.type)
    if len(chunks) <= 1:
        return (chunks[0] if chunks else pa.nulls(0, col.type)).take(from_numpy(positions))
    starts = np.cumsum([0] + [len(ch) for ch in chunks])
    which = np.searchsorted(starts, positions, side="right") - 1
    if len(chunks) < 2**15:  # numpy's stable sort of int16 is a radix sort: linear
        which = which.astype(np.int16)
    order = np.argsort(which, kind="stable")
    bounds = np.searchsorted(which[order], np.arange(len(chunks) + 1))
    pieces = []
    for c in range(len(chunks)):
        sel = order[bounds[c]:bounds[c + 1]]
        if len(sel):
            pieces.append(chunks[c].take(from_numpy(positions[sel] - starts[c])))
    grouped = pa.concat_arrays(pieces)
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    return grouped.take(from_numpy(inverse))


def normalize_ids(col: pa.ChunkedArray | pa.Array, *, what: str) -> Ids:
    """An id column -> :class:`Ids` (integers as int64, everything else as text)."""
    if isinstance(col, pa.Array):
        col = pa.chunked_array([col], type=col.type)
    check_scalar(col.type, what)
    if col.null_count:
        raise DataError(f"{what} has {col.null_count} missing value(s); every row needs an id")
    t = col.type
    try:
        if pa.types.is_dictionary(t):
            col = pc.cast(col, t.value_type)
            t = t.value_type
        if pa.types.is_floating(t) or pa.types.is_decimal(t):
            try:  # 104.0 is id 104 (see docs/integrity.md, "How ids are read")
                col, t = pc.cast(col, pa.int64()), pa.int64()
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                pass
        if pa.types.is_integer(t):
            try:
                return Ids("int64", col if pa.types.is_int64(t) else pc.cast(col, pa.int64()))
            except pa.ArrowInvalid:  # uint64 beyond int64: compare as text
                pass
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            return Ids("string", col)
        return Ids("string", pc.cast(col, pa.large_string()))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{what} cannot be read as text ({first}); ids must be integers or UTF-8 text") from None


_INTEGER_TEXT = r"^[+-]?[0-9]+(\.0*)?$"


def integer_text_ids(col: pa.ChunkedArray):
    """CSV ids: text as it is, unless *every* id is an integer written as text.

    Then they are integers: ``"0104"``, ``"104"``, ``"104.0"`` and ``"+104"``
    are all id 104, so a CSV re-exported with leading zeros or a float id
    column does not look like every row was replaced.  One vectorised regex
    test over the column; a column with any other id stays exact text.
    Returns an int64 or the original string chunked array.
    """
    if len(col) == 0:
        return col
    head = col.slice(0, 1024)
    if not pc.all(pc.match_substring_regex(head, _INTEGER_TEXT)).as_py():  # cheap early exit (UUIDs...)
        return col
    if not pc.all(pc.match_substring_regex(col, _INTEGER_TEXT)).as_py():
        return col
    digits = pc.replace_substring_regex(pc.replace_substring_regex(col, r"\.0*$", ""), r"^\+", "")
    try:
        return pc.cast(digits, pa.int64())
    except pa.ArrowInvalid:  # beyond int64: keep the text
        return col


def reconcile(a: Ids, b: Ids) -> tuple[Ids, Ids]:
    """Two id columns in one comparable representation (text when their kinds differ)."""
    if a.kind == b.kind == "int64":
        return a, b
    a, b = a.as_string(), b.as_string()
    if a.values.type != b.values.type:
        a = Ids("string", pc.cast(a.values, pa.large_string()))
        b = Ids("string", pc.cast(b.values, pa.large_string()))
    return a, b


def ids_equal(a: Ids, b: Ids) -> bool:
    """Same ids in the same order (one vectorised comparison, whatever the chunking)."""
    if len(a) != len(b):
        return False
    a, b = reconcile(a, b)
    if a.kind == "int64" and isinstance(a.values, np.ndarray) and isinstance(b.values, np.ndarray):
        return bool(np.array_equal(a.values, b.values))
    return bool(a.chunked().equals(b.chunked()))


def duplicated(ids: Ids, limit: int = 5) -> tuple[int, list]:
    """``(number of duplicated id values, a few examples)``; ``(0, [])`` when ids are unique.

    No hashing of every id in the common cases: strictly increasing integer
    ids (one pass), integer ids in a dense range (a bincount), string ids
    whose 64-bit fingerprints are distinct (one sort of integers).
    """
    n = len(ids)
    if n < 2:
        return 0, []
    if ids.kind == "int64":
        v = ids.numpy()
        if bool(np.all(v[1:] > v[:-1])):
            return 0, []
        lo, hi = int(v.min()), int(v.max())
        if hi - lo <= 4 * n + 1024:
            counts = np.bincount(v - lo, minlength=hi - lo + 1)
            dups = np.flatnonzero(counts > 1)
            return len(dups), (dups[:limit] + lo).tolist()
        s = np.sort(v)
        dups = np.unique(s[1:][s[1:] == s[:-1]])
        return len(dups), dups[:limit].tolist()
    fp = fingerprints(ids)
    if fp is not None:
        s = np.sort(fp)
        if not bool(np.any(s[1:] == s[:-1])):
            return 0, []  # distinct fingerprints => distinct ids
    (keys,), size = dense_keys(ids, exact=True)
    counts = np.bincount(keys, minlength=size)
    dup_keys = counts > 1
    if not dup_keys.any():
        return 0, []
    first = np.flatnonzero(dup_keys[keys])
    _, where = np.unique(keys[first], return_index=True)
    return int(dup_keys.sum()), ids.take(first[np.sort(where)][:limit])


def _string_chunks(col: pa.ChunkedArray) -> list[tuple[np.ndarray, memoryview]]:
    """``(offsets, data)`` of each non-empty chunk: offsets absolute into data, length ``len + 1``."""
    out = []
    large = pa.types.is_large_string(col.type)
    for ch in col.chunks:
        if len(ch) == 0:
            continue
        bufs = ch.buffers()
        off = np.frombuffer(bufs[1], dtype=np.int64 if large else np.int32)[ch.offset:ch.offset + len(ch) + 1]
        data = memoryview(bufs[2]) if bufs[2] is not None else memoryview(b"")
        out.append((off, data))
    return out


_M1 = np.uint64(0xFF51AFD7ED558CCD)
_S33 = np.uint64(33)
_WORD_KEYS = [np.uint64((0x9E3779B97F4A7C15 * (2 * j + 3)) % 2**64 | 1) for j in range(9)]


def fingerprints(ids: Ids, max_bytes: int = 64, chunk_rows: int = 1 << 17) -> np.ndarray | None:
    """A 64-bit fingerprint per string id, vectorised (``None`` if an id is longer than ``max_bytes``).

    Each id is zero-padded to whole 64-bit words; the fingerprint is its
    length and its words, each times a distinct odd constant, summed modulo
    2**64 and passed through MurmurHash3's 64-bit finaliser.  Zero padding adds
    nothing, so an id's fingerprint does not depend on the other ids.  Not a
    cryptographic hash and never trusted alone: equal ids always have equal
    fingerprints, so *distinct* fingerprints prove ids distinct, and every
    match made through fingerprints is re-checked on the ids themselves.
    """
    if ids.kind != "string":
        return None
    pieces = _string_chunks(ids.values)
    if not pieces:
        return np.zeros(0, np.uint64)
    longest = max(int(np.diff(off).max()) for off, _ in pieces)
    if longest > max_bytes:
        return None
    width = max(1, -(-longest // 8)) * 8
    cols = np.arange(width)
    out = []
    for off, data in pieces:
        buf = np.frombuffer(data, dtype=np.uint8)
        off = off.astype(np.int64)
        lens = np.diff(off)
        fixed = bool(np.all(lens == lens[0]))
        for start in range(0, len(lens), chunk_rows):
            stop = min(start + chunk_rows, len(lens))
            m = stop - start
            pad = np.zeros((m, width), dtype=np.uint8)
            if fixed:
                pad[:, :lens[0]] = buf[off[start]:off[stop]].reshape(m, int(lens[0]))
            else:
                inside = cols[None, :] < lens[start:stop, None]
                pad[inside] = buf[(off[start:stop, None] + cols[None, :])[inside]]
            words = pad.view(np.uint64)
            h = lens[start:stop].astype(np.uint64) * _WORD_KEYS[-1]
            for j in range(words.shape[1]):
                h += words[:, j] * _WORD_KEYS[j]
            h ^= h >> _S33
            h *= _M1
            h ^= h >> _S33
            out.append(h)
    return np.concatenate(out)


def _same_strings(a: pa.ChunkedArray, pa_pos: np.ndarray, b: pa.ChunkedArray, pb_pos: np.ndarray,
                  batch: int = 1 << 22) -> bool:
    """``a[pa_pos[i]] == b[pb_pos[i]]`` for every ``i`` (in batches, to bound memory)."""
    for start in range(0, len(pa_pos), batch):
        x = take_chunked(a, pa_pos[start:start + batch])
        y = take_chunked(b, pb_pos[start:start + batch])
        if not x.equals(y):
            return False
    return True


def dense_keys(*columns: Ids, exact: bool = False) -> tuple[list[np.ndarray], int]:
    """Map the ids of one or more columns to shared dense keys ``0 .. size-1``.

    Equal ids get equal keys and different ids different keys.  Integer ids in
    a compact range are offset.  String ids are keyed by their 64-bit
    fingerprints (one sort of integers), then every id is compared with the
    representative of its key; only if two distinct ids share a fingerprint
    (or ``exact=True``, or ids are long) does Arrow hash every string
    (``dictionary_encode``), which is exact but several times slower.
    Returns one key array per column and ``size``.
    """
    if all(c.kind == "int64" for c in columns):
        nonempty = [c.numpy() for c in columns if len(c)]
        if not nonempty:
            return [np.zeros(0, np.int32) for _ in columns], 0
        lo = min(int(v.min()) for v in nonempty)
        hi = max(int(v.max()) for v in nonempty)
        total = sum(len(v) for v in nonempty)
        if hi - lo <= 4 * total + 1024:
            kt = np.int32 if hi - lo < 2**31 - 1 else np.int64
            keys = []
            for c in columns:
                k = np.empty(len(c), dtype=kt)
                np.subtract(c.numpy(), lo, out=k, casting="unsafe")
                keys.append(k)
            return keys, hi - lo + 1
        arrays = [c.chunked() for c in columns]
    else:
        cols = [c.as_string() for c in columns]
        if len({c.values.type for c in cols}) > 1:
            cols = [Ids("string", pc.cast(c.values, pa.large_string())) for c in cols]
        arrays = [c.values for c in cols]
        if not exact:
            keyed = _fingerprint_keys(cols)
            if keyed is not None:
                return keyed
    typ = arrays[0].type
    encoded = pc.dictionary_encode(pa.chunked_array([ch for a in arrays for ch in a.chunks], type=typ))
    size = max((len(ch.dictionary) for ch in encoded.chunks), default=0)
    flat = [to_numpy(ch.indices) for ch in encoded.chunks]
    allk = np.concatenate(flat) if flat else np.zeros(0, np.int32)
    keys, pos = [], 0
    for c in columns:
        keys.append(allk[pos:pos + len(c)])
        pos += len(c)
    return keys, size


def _fingerprint_keys(cols: list[Ids]) -> tuple[list[np.ndarray], int] | None:
    """Dense keys from 64-bit fingerprints (one argsort), then an exact check of every id.

    Rows sharing a fingerprint share a key; each row is then compared with its
    key's representative row on the ids themselves (in batches).  Any mismatch
    (two distinct ids with one fingerprint, by chance or by design) returns
    ``None`` and the caller falls back to exact hashing.
    """
    fps = [fingerprints(c) for c in cols]
    if any(f is None for f in fps):
        return None
    lengths = [len(f) for f in fps]
    fp = np.concatenate(fps)
    del fps
    order = np.argsort(fp)
    sfp = fp[order]
    del fp
    start = np.empty(len(sfp), dtype=bool)
    start[:1] = True
    np.not_equal(sfp[1:], sfp[:-1], out=start[1:])
    del sfp
    kt = np.int32 if len(order) < 2**31 - 1 else np.int64
    group = np.cumsum(start, dtype=kt) - 1
    size = int(group[-1]) + 1 if len(group) else 0
    keys = np.empty(len(order), dtype=kt)
    keys[order] = group
    rep = order[start][group]  # representative row of each sorted position's key
    others = ~start
    allids = pa.chunked_array([ch for c in cols for ch in c.values.chunks], type=cols[0].values.type)
    if others.any() and not _same_strings(allids, order[others], allids, rep[others]):
        return None
    bounds = np.cumsum([0] + lengths)
    return [keys[bounds[i]:bounds[i + 1]] for i in range(len(cols))], size


# -- commitments ------------------------------------------------------------
def block_rows_for(n_rows: int) -> int:
    """Rows per commitment block: 65 536, doubled until there are at most 4 096 blocks."""
    rows = MIN_BLOCK_ROWS
    while n_rows > rows * MAX_BLOCKS:
        rows *= 2
    return rows


def commit(ids: Ids, codes: np.ndarray, code_width: np.dtype, *, block_rows: int,
           mac_key: bytes | None = None) -> tuple[list[str], str]:
    """Block digests and a root over every ``(id, label code)`` pair, in row order.

    Block ``k`` covers rows ``[k * block_rows, (k + 1) * block_rows)``: SHA-256
    (HMAC-SHA-256 under ``mac_key`` for private manifests, so low-entropy labels
    cannot be guessed back from the digests) of a header, the block's ids
    (int64 little-endian; for string ids the int64 byte lengths, then the UTF-8
    bytes), and its label codes (``code_width`` bytes each).  The root hashes
    the block digests.  Whole buffers go to hashlib (which releases the GIL),
    never one row at a time, and the result does not depend on how the data
    was chunked when read.
    """
    n = len(ids)
    kind = ids.kind.encode()
    codes = np.ascontiguousarray(codes, dtype=code_width)
    if ids.kind == "int64":
        idv = np.ascontiguousarray(ids.numpy(), dtype="<i8")
    else:
        pieces = _string_chunks(ids.values)
        starts = np.cumsum([0] + [len(off) - 1 for off, _ in pieces])

    def new():
        return hmac.new(mac_key, digestmod=hashlib.sha256) if mac_key else hashlib.sha256()

    digests = []
    for start in range(0, max(n, 1), block_rows):
        stop = min(start + block_rows, n)
        h = new()
        h.update(b"flipguard-block\0" + kind + struct.pack("<QQB", start, stop - start, code_width.itemsize))
        if ids.kind == "int64":
            h.update(memoryview(idv[start:stop]))
        else:
            parts = []
            c = int(np.searchsorted(starts, start, side="right")) - 1 if n else 0
            while n and c < len(pieces) and starts[c] < stop:
                off, data = pieces[c]
                lo, hi = max(start, starts[c]) - starts[c], min(stop, starts[c + 1]) - starts[c]
                parts.append((off[lo:hi + 1], data))
                c += 1
            for off, _ in parts:
                h.update(memoryview(np.diff(off).astype("<i8")))
            for off, data in parts:
                h.update(data[int(off[0]):int(off[-1])])
        h.update(memoryview(codes[start:stop]))
        digests.append(h.digest())
    root = new()
    root.update(b"flipguard-root\0" + struct.pack("<QQ", n, block_rows))
    for d in digests:
        root.update(d)
    return [d.hex() for d in digests], root.hexdigest()
