"""Seal and verify a partitioned dataset (a folder or prefix of files) at lake scale.

Layout (``DATA`` a folder or prefix)::

    DATA.flipguard.json          the signed root manifest (kind "flipguard.lake-seal")
    DATA.flipguard.parts/        per-partition manifests and snapshots, content-addressed:
        <sha256>.json            an ordinary seal manifest of one partition
        <sha256>.snapshot        its label snapshot

Each partition (data file) is sealed on its own with :func:`seal_table`, as a
task of an :mod:`~flipguard.engine` (in-process or Ray), so a worker holds one
partition at a time.  The root manifest lists every partition's name, row
count and the SHA-256 of its manifest, and a Merkle root over those leaves
(RFC 6962 hashing: ``leaf = SHA-256(0x00 || canonical JSON)``, ``node =
SHA-256(0x01 || left || right)``), signed with the sealing key.

The sealing key never leaves the process that runs :func:`seal_lake`: the
workers sign their partition manifests with a fresh one-seal Ed25519 key whose
public half the root manifest records.  What binds a partition manifest is its
SHA-256 in the signed root, not that signature.

Verification checks the root's signature and Merkle root, then each partition
as a task: the partition manifest's digest must match its leaf; the current
id and label columns are hashed into the partition's row commitment and, when
it equals the sealed one, the partition is intact and its snapshot is never
read.  Only a partition whose commitment differs has its snapshot read, and
:func:`verify_table` then names its rows.  Files present but not sealed are
*added*, sealed but absent *removed* (their rows are read from their snapshots),
and an added file with exactly a removed one's content *renamed*.

Rows are identified by the ``--id`` column, or without one by their 0-based
position in their file (the id column of the partition manifests is then
``(row)``).  With ``--id`` the rows that left a partition and the rows that
entered one are matched by id across partitions (:func:`_merge_rows`): moved
rows, label changes on the way, and ids duplicated by a copied partition.
"""

from __future__ import annotations

import base64
import hashlib
import os
import posixpath
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .._arrow import from_numpy, string_array, to_numpy
from .._io import atomic_write_bytes
from ..data._partitioned import (
    Partition,
    PartitionedDataset,
    check_label_types,
    describe_others,
    discover,
    label_kind_text,
    read_partition,
)
from ..data._partitioned import local_root as _local_root
from ..data._read import _is_url
from ..exceptions import DataError, IntegrityError, InvalidParameterError
from ._columns import (
    Ids,
    block_rows_for,
    code_dtype,
    commit,
    dense_keys,
    label_codes,
    normalize_ids,
    reconcile,
    type_family,
)
from ._files import read_bytes, refuse_symlink, regular_file_or_absent
from ._keys import key_id, load_private_key, load_public_key
from ._manifest import Manifest, SignatureCheck, canonical_json, check_signature, sign_body, strict_json
from ._source import ROW_ID, with_row_ids
from ._stats import label_text
from ._verify import SignedFindings

__all__ = ["LakeDiffReport", "LakeSealResult", "LakeVerifyReport", "diff_lake", "is_lake_manifest", "merkle_root",
           "seal_lake", "verify_lake"]

LAKE_KIND = "flipguard.lake-seal"
LAKE_FORMAT_VERSION = 1
MERKLE_SCHEME = "rfc6962-sha256"


# -- Merkle tree ----------------------------------------------------------------
def _leaf(entry: dict) -> bytes:
    return hashlib.sha256(b"\x00" + canonical_json(entry)).digest()


def merkle_root(entries: list[dict]) -> str:
    """RFC 6962 Merkle tree hash over the partition entries (in manifest order)."""
    level = [_leaf(e) for e in entries]
    if not level:
        return hashlib.sha256(b"").hexdigest()

    def mth(nodes):
        if len(nodes) == 1:
            return nodes[0]
        k = 1 << ((len(nodes) - 1).bit_length() - 1)  # largest power of two < n
        return hashlib.sha256(b"\x01" + mth(nodes[:k]) + mth(nodes[k:])).digest()

    return mth(level).hex()


# -- paths ------------------------------------------------------------------------
def default_lake_manifest(source: str) -> Path:
    if _is_url(source):
        raise InvalidParameterError(f"{source} is a URL: give the manifest path (--out / --manifest)")
    return Path(_local_root(source) + ".flipguard.json")


def _store_for(manifest_path: Path) -> Path:
    name = manifest_path.name
    base = name[:-len(".json")] if name.endswith(".json") else name
    return manifest_path.with_name(base + ".parts")


def default_lake_name(root: str) -> str:
    """A partitioned dataset's default name: the last component of its folder (resolved) or prefix.

    A local folder is named by ``Path.resolve().name``, so ``seal .`` inside
    ``L5/`` and ``verify L5`` from its parent agree on ``L5``, as do ``L5/.``
    and ``./L5/``; a symbolic link is named after the folder it points to.
    """
    if not _is_url(os.fspath(root)):
        resolved = Path(os.fspath(root) or ".").resolve()
        return resolved.name or str(resolved)
    return posixpath.basename(os.fspath(root).replace("\\", "/").rstrip("/")) or os.fspath(root)


#: Largest root manifest read (about 5 million partitions); anything bigger is not one of ours.
MAX_ROOT_BYTES = 1 << 30
#: Largest partition manifest read (a seal manifest is a few KB, more with many classes).
MAX_PART_MANIFEST_BYTES = 64 << 20


def _read_small(path: Path, what: str, limit: int) -> bytes:
    """:func:`read_bytes` (regular files only, opened without blocking: a FIFO or ``/dev/zero``
    is one error line, never a hang) with a size cap checked before anything is read."""
    try:
        size = os.stat(path).st_size
    except OSError:
        size = 0  # read_bytes names what is wrong (missing, a dangling link, ...)
    if size > limit:
        raise IntegrityError(f"{what} {path}: {size} bytes, more than any flipguard manifest ({limit}); "
                             "not a flipguard manifest")
    return read_bytes(path, what)


def _previous_version(manifest_path: Path, name: str, key: Ed25519PrivateKey) -> int:
    """The version of the seal being replaced, by the single-file rule (``_seal._next_version``):
    a root manifest at ``manifest_path`` of the same dataset ``name`` whose signature checks out
    with this ``key``; 0 otherwise (none, unreadable, another dataset's, another key's, forged),
    so a planted manifest saying version 424242 cannot push the next seal's version."""
    if not os.path.lexists(manifest_path):
        return 0
    try:
        doc = _parse_root(_read_small(manifest_path, "manifest", MAX_ROOT_BYTES), f"manifest {manifest_path}")
    except IntegrityError:
        return 0
    if doc["name"] != name or not check_signature(doc, key.public_key(), "the manifest").valid:
        return 0
    return int(doc["version"])


def is_lake_manifest(path) -> bool:
    """True when ``path`` is a root manifest of a partitioned seal (cheap: looks at the kind).

    Read through :func:`read_bytes`' guard (regular files only, no blocking open)."""
    try:
        if os.stat(path).st_size > MAX_ROOT_BYTES:
            return False
        head = read_bytes(path, "manifest")[:4096]
    except (OSError, IntegrityError):
        return False
    return b'"kind":"' + LAKE_KIND.encode() + b'"' in head


# -- per-partition tasks ------------------------------------------------------------
#: Most threads a local lake seal, verify or diff runs (one partition in memory each).
MAX_LOCAL_THREADS = 8


def _engine(engine, ray_address):
    """The engine of a lake seal, verify or diff: ``"local"`` means one thread per core.

    Their tasks read Parquet, hash and compress with the GIL released (pyarrow,
    hashlib and numpy), so two threads on two cores seal 10M rows in 0.59 s
    instead of 0.76 s and verify in 0.42 s instead of 0.59 s (docs/performance.md).
    Each thread holds one partition at a time, so the threads are the cores this
    process may use, at most :data:`MAX_LOCAL_THREADS` (memory grows with them).
    An :class:`~flipguard.engine.Engine` instance is used as it is
    (``LocalEngine(n_jobs=16)`` for more threads).
    """
    from ..engine import get_engine
    from ..engine._base import available_cores

    if engine in (None, "local") and ray_address is None:
        return get_engine("local", workers=min(available_cores(), MAX_LOCAL_THREADS))
    return get_engine(engine, ray_address=ray_address)


def _raw_public(key: Ed25519PublicKey) -> str:
    return base64.b64encode(key.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def _read(part: Partition, label: str, id: str | None, columns: list[str]) -> pa.Table:  # noqa: A002
    """The id, label and sealed columns of a partition, read exactly (CSV as written text, see
    :func:`read_partition`), with row positions as ids without ``id``."""
    tbl = read_partition(part, [*([id] if id else []), label, *columns], dictionary=[label], exact=True,
                         id_column=id)
    return tbl if id else with_row_ids(tbl)


def _seal_task(part: Partition, shared: dict) -> dict:
    """Seal one partition: write its manifest and snapshot to the staging folder."""
    from ._seal import seal_table

    label, id_, columns = shared["label"], shared["id"], shared["columns"]
    tbl = _read(part, label, id_, columns)
    key = Ed25519PrivateKey.from_private_bytes(shared["partition_key"])
    try:
        manifest, snap = seal_table(tbl, label=label, id=id_ or ROW_ID, private_key=key, columns=columns,
                                    source=part.name, secret=shared["secret"], snapshot_name="{sha256}.snapshot",
                                    created=shared["created"], name=f"{shared['name']}/{part.name}",
                                    version=shared["version"])
    except DataError as exc:
        msg = str(exc)
        raise DataError(msg if msg.startswith(f"partition {part.name}") else f"partition {msg}") from None
    staging = Path(shared["staging"])
    data = manifest.to_bytes()
    digest = hashlib.sha256(data).hexdigest()
    atomic_write_bytes(staging / manifest.snapshot["file"], snap)
    atomic_write_bytes(staging / f"{digest}.json", data)
    return {"name": part.name, "rows": manifest.rows, "manifest": digest,
            "classes": manifest.class_counts, "snapshot_bytes": len(snap), "label_type": manifest.label_type,
            "label_arrow": label_kind_text(tbl.column(label).type)}


def _current_root(tbl: pa.Table, pm: Manifest) -> str | None:
    """The partition's commitment root recomputed from current data; ``None`` when it cannot match."""
    if pm.private or pm.columns or type_family(tbl.column(pm.label).type) != pm.label_type:
        return None  # the full comparison reads the snapshot (and names a changed label type)
    classes = list(pm.class_counts or {})
    ids = normalize_ids(tbl.column(pm.id), what=f"id column '{pm.id}'")
    values, codes = label_codes(tbl.column(pm.label), classes)
    if len(ids) != pm.rows:
        return None
    if len(values) > len(classes) and codes.size and int(codes.max()) >= len(classes):
        return None  # a label value the seal never had
    c = pm.commitment
    width = code_dtype(len(classes))
    if width.itemsize != c["code_bytes"] or block_rows_for(len(ids)) != c["block_rows"]:
        return None
    return commit(ids, codes.astype(width, copy=False), width, block_rows=c["block_rows"])[1]


def _load_part_manifest(store: str, digest: str, name: str) -> Manifest:
    path = Path(store) / f"{digest}.json"
    if not os.path.lexists(path):
        raise IntegrityError(f"partition {name}: its sealed manifest {path} is missing")
    try:
        data = _read_small(path, "sealed manifest", MAX_PART_MANIFEST_BYTES)
    except IntegrityError as exc:
        raise IntegrityError(f"partition {name}: {exc}") from None
    if hashlib.sha256(data).hexdigest() != digest:
        raise IntegrityError(f"partition {name}: its sealed manifest {path} was modified "
                             "(SHA-256 differs from the signed root manifest)")
    return Manifest.from_bytes(data, where=f"manifest {path}")


def _check_part_manifest(pm: Manifest, entry: dict, shared: dict) -> Ed25519PublicKey:
    """The partition manifest must be this seal's (signed by its partition key, same name and version)."""
    pub = Ed25519PublicKey.from_public_bytes(base64.b64decode(shared["partition_public"]))
    name = entry["name"]
    if (not pm.verify_signature(pub).valid or pm.rows != entry["rows"] or pm.source != name
            or pm.name != f"{shared['name']}/{name}" or pm.version != shared["version"]):
        raise IntegrityError(f"partition {name}: its sealed manifest does not belong to this seal")
    return pub


def _open_snapshot(shared: dict, pm: Manifest, name: str):
    """The partition's sealed snapshot, checked against its manifest and decoded; errors name the
    partition and the snapshot file (missing, truncated, modified, wrong secret)."""
    from ._verify import open_snapshot

    snap_path = Path(shared["store"]) / pm.snapshot["file"]
    if not os.path.lexists(snap_path):
        raise IntegrityError(f"partition {name}: snapshot {snap_path} is missing")
    try:  # regular files only: a FIFO or a link to /dev/zero is refused, never read
        data = read_bytes(snap_path, "snapshot")
    except IntegrityError as exc:
        raise IntegrityError(f"partition {name}: {exc}") from None
    return open_snapshot(pm, data, secret=shared["secret"], where=f"partition {name}: snapshot {snap_path}")


def _verify_task(item: tuple, shared: dict) -> dict:
    """Verify one partition; read its snapshot only when its commitment differs.

    An added partition (not in the seal) returns its rows, to be matched by id
    against the rows that left other partitions (:func:`_merge_rows`).
    """
    from ._verify import verify_table

    part, entry = item
    label, id_, columns = shared["label"], shared["id"], shared["columns"]
    tbl = _read(part, label, id_, columns)
    if entry is None:  # not sealed: added, or renamed from a removed partition
        for cand in shared["removed"]:
            pm = _load_part_manifest(shared["store"], cand["manifest"], cand["name"])
            try:
                if pm.rows == tbl.num_rows and _current_root(tbl, pm) == pm.commitment["root"]:
                    return {"name": part.name, "status": "renamed", "rows": tbl.num_rows,
                            "renamed_from": cand["name"], "snapshot_read": False,
                            "sealed_counts": pm.class_counts, "current_counts": pm.class_counts}
            except DataError:
                continue
        rows, counts = _table_rows(tbl, label, id_ or ROW_ID, f"partition {part.name}")
        return {"name": part.name, "status": "added", "rows": tbl.num_rows, "renamed_from": None,
                "snapshot_read": False, "entered": rows, "current_counts": counts}
    pm = _load_part_manifest(shared["store"], entry["manifest"], part.name)
    pub = _check_part_manifest(pm, entry, shared)
    try:
        if _current_root(tbl, pm) == pm.commitment["root"]:
            return {"name": part.name, "status": "intact", "rows": tbl.num_rows, "snapshot_read": False,
                    "sealed_counts": pm.class_counts, "current_counts": pm.class_counts}
    except DataError:
        pass  # missing or null ids: the full comparison names the rows
    snap = _open_snapshot(shared, pm, part.name)
    report = verify_table(tbl, pm, pub, snapshot=snap, secret=shared["secret"], source=part.name,
                          name=f"{shared['name']}/{part.name}")
    ch = report.changes
    # the row-level lines are rewritten for the whole dataset once rows are matched across partitions
    row_lines = {f for f in ch.findings("sealed", "current") if not f.startswith("no id of")}
    return {"name": part.name, "status": "changed" if report.findings else "intact", "rows": tbl.num_rows,
            "snapshot_read": True, "findings": [f for f in report.findings if f not in row_lines],
            "changed": {"row": ch.changed["row"], "id": ch.changed["id"], "before": ch.changed["before"],
                        "after": ch.changed["after"]},
            "entered": _list_rows(ch.added), "left": _list_rows(ch.removed), "duplicated": dict(ch.duplicated),
            "sealed_counts": {r["label"]: r["before"] for r in ch.class_counts() if r["before"]},
            "current_counts": {r["label"]: r["after"] for r in ch.class_counts() if r["after"]},
            "columns": {n: {"row": c["row"], "id": c["id"], "sealed": c["before"], "current": c["after"]}
                        for n, c in report.columns.items()}}


def _removed_task(entry: dict, shared: dict) -> dict:
    """The sealed rows of a partition that is gone, from its snapshot (read only because it is gone)."""
    name = entry["name"]
    pm = _load_part_manifest(shared["store"], entry["manifest"], name)
    _check_part_manifest(pm, entry, shared)
    snap = _open_snapshot(shared, pm, name)
    labels = np.array(snap.classes, dtype=object)[snap.codes.astype(np.int64)]
    return {"name": name, "left": {"row": np.arange(snap.rows, dtype=np.int64), "id": _id_array(snap.ids),
                                   "label": labels},
            "sealed_counts": {c: int(n) for c, n in zip(snap.classes, snap.class_counts) if n}}


# -- rows that left one partition or entered another ------------------------------------
def _id_array(ids: Ids) -> pa.Array:
    a = ids.arrow()
    return a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a


def _table_rows(tbl: pa.Table, label: str, id_col: str, where: str) -> tuple[dict, dict]:
    """Every row of ``tbl`` as arrays (``row``, ``id``, ``label``) and its class counts.

    Ids are read as everywhere else (:func:`normalize_ids`: ``0104`` in a CSV
    is 104); a row without an id keeps a null id, which matches nothing.
    """
    values, codes = label_codes(tbl.column(label))
    codes = codes.astype(np.int64, copy=False)
    labels = np.array(values, dtype=object)[codes]
    counts = np.bincount(codes, minlength=len(values)) if len(codes) else np.zeros(len(values), np.int64)
    col = tbl.column(id_col)
    what = f"{where}: id column '{id_col}'"
    if col.null_count:
        valid = np.asarray(to_numpy(pc.is_valid(col)), dtype=bool)
        ids = _id_array(normalize_ids(col.filter(from_numpy(valid)), what=what))
        idx = np.ascontiguousarray(np.cumsum(valid) - 1, dtype=np.int64)
        ids = ids.take(pa.Array.from_buffers(pa.int64(), len(idx), [
            pa.py_buffer(np.packbits(valid, bitorder="little")), pa.py_buffer(idx)]))
    else:
        ids = _id_array(normalize_ids(col, what=what))
    return ({"row": np.arange(tbl.num_rows, dtype=np.int64), "id": ids, "label": labels},
            {v: int(n) for v, n in zip(values, counts) if n})


def _list_rows(d: dict) -> dict:
    """``{"row", "id", "label"}`` lists (a :class:`LabelChanges` field) as arrays.

    Built without ``pa.array``, which imports pandas (0.3 s in every fresh Ray worker).
    """
    ids = d["id"]
    if ids and isinstance(ids[0], str):
        id_arr = string_array(ids)
    else:
        id_arr = from_numpy(np.asarray(ids, dtype=np.int64))
    labels = np.empty(len(d["label"]), dtype=object)
    labels[:] = d["label"]
    return {"row": np.asarray(d["row"], dtype=np.int64), "id": id_arr, "label": labels}


def _ids(arr: pa.Array) -> Ids:
    if pa.types.is_integer(arr.type):
        return Ids("int64", to_numpy(arr.cast(pa.int64())))
    return Ids("string", pa.chunked_array([arr]))


def _valid(arr: pa.Array) -> np.ndarray:
    return np.flatnonzero(np.asarray(to_numpy(pc.is_valid(arr)), dtype=bool)) if arr.null_count \
        else np.arange(len(arr))


class _Pool:
    """Rows gathered from several partitions, concatenated into arrays."""

    def __init__(self, items: list[tuple[str, dict]]):
        items = [(n, p) for n, p in items if len(p["row"])]
        self.names = [n for n, _ in items]
        self.part = np.repeat(np.arange(len(items)), [len(p["row"]) for _, p in items]).astype(np.int64)
        self.row = np.concatenate([p["row"] for _, p in items]) if items else np.zeros(0, np.int64)
        ids = [p["id"] for _, p in items]
        if ids and all(pa.types.is_integer(a.type) or pa.types.is_null(a.type) for a in ids):
            self.id = pa.concat_arrays([a.cast(pa.int64()) for a in ids])
        elif ids:
            self.id = pa.concat_arrays([a.cast(pa.large_string()) for a in ids])
        else:
            self.id = from_numpy(np.zeros(0, np.int64))
        self.label = np.concatenate([p["label"] for _, p in items]) if items else np.zeros(0, dtype=object)

    def __len__(self) -> int:
        return len(self.row)

    def partitions(self, pos: np.ndarray) -> list:
        return np.array(self.names, dtype=object)[self.part[pos]].tolist() if len(pos) else []

    def ids(self, pos: np.ndarray) -> list:
        return self.id.take(from_numpy(pos)).to_pylist() if len(pos) else []

    def labels(self, pos: np.ndarray) -> np.ndarray:
        return self.label[pos]


def _occurrence(keys: np.ndarray) -> np.ndarray:
    """For each key, how many equal keys come before it (0 for the first occurrence)."""
    order = np.argsort(keys, kind="stable")
    sk = keys[order]
    start = np.ones(len(sk), dtype=bool)
    start[1:] = sk[1:] != sk[:-1]
    first = np.maximum.accumulate(np.where(start, np.arange(len(sk)), 0))
    rank = np.empty(len(sk), dtype=np.int64)
    rank[order] = np.arange(len(sk)) - first
    return rank


def _match(left: _Pool, entered: _Pool) -> tuple[np.ndarray, np.ndarray]:
    """Positions ``(e, l)`` of rows that left one partition and entered another with the same id.

    The k-th row with an id among those that left pairs with the k-th among
    those that entered (ids are unique in the dataset, so k is 0); null ids
    never match.  One sort of the candidates, no per-row Python.
    """
    lv, ev = _valid(left.id), _valid(entered.id)
    if not len(lv) or not len(ev):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    (kl, ke), _ = dense_keys(*reconcile(_ids(left.id.take(from_numpy(lv))), _ids(entered.id.take(from_numpy(ev)))))
    kl, ke = kl.astype(np.int64), ke.astype(np.int64)
    rl, re_ = _occurrence(kl), _occurrence(ke)
    width = int(max(rl.max(), re_.max())) + 1
    cl, ce = kl * width + rl, ke * width + re_
    order = np.argsort(cl, kind="stable")
    pos = np.minimum(np.searchsorted(cl[order], ce), len(cl) - 1)
    hit = cl[order][pos] == ce
    return ev[hit], lv[order[pos[hit]]]


def _probe_task(part: Partition, shared: dict) -> dict:
    """How often each probed id occurs in one partition (reads its id column only, never a snapshot)."""
    id_ = shared["id"]
    col = read_partition(part, [id_], exact=True, id_column=id_).column(id_)
    if col.null_count:
        col = col.filter(pc.is_valid(col))
    empty = np.zeros(0, np.int64)
    if not len(col):
        return {"name": part.name, "hit": empty, "count": empty}
    ids = normalize_ids(col, what=f"partition {part.name}: id column '{id_}'")
    (kp, kt), size = dense_keys(*reconcile(_ids(shared["probe"]), ids))
    counts = np.bincount(kt, minlength=size)[kp]
    hit = np.flatnonzero(counts)
    return {"name": part.name, "hit": hit, "count": counts[hit]}


def _duplicates_elsewhere(entered: _Pool, cand: np.ndarray, probe) -> tuple[np.ndarray, np.ndarray]:
    """Which rows ``cand`` of ``entered`` have an id that another current partition also holds.

    ``probe(ids)`` runs :func:`_probe_task` over every current partition.
    Returns a mask over ``cand`` and the number of current rows with each one's id.
    """
    keep = cand[np.isin(cand, _valid(entered.id))]
    mask, total_of = np.zeros(len(cand), dtype=bool), np.zeros(len(cand), dtype=np.int64)
    if not len(keep):
        return mask, total_of
    (keys,), _ = dense_keys(_ids(entered.id.take(from_numpy(keep))))
    _, first, inv = np.unique(keys, return_index=True, return_inverse=True)
    results = probe(entered.id.take(from_numpy(keep[first])))
    total = np.zeros(len(first), dtype=np.int64)
    own = {}
    for r in results:
        np.add.at(total, r["hit"], r["count"])
        own[r["name"]] = r
    elsewhere = np.zeros(len(keep), dtype=bool)
    part = entered.part[keep]
    for p in np.unique(part):  # one vectorised step per source partition
        sel = part == p
        mine = np.zeros(len(first), dtype=np.int64)
        r = own.get(entered.names[p])
        if r is not None:
            mine[r["hit"]] = r["count"]
        elsewhere[sel] = total[inv[sel]] > mine[inv[sel]]
    at = np.searchsorted(cand, keep)
    mask[at] = elsewhere
    total_of[at] = total[inv]
    return mask, total_of


def _codes(labels: np.ndarray, classes: list) -> np.ndarray:
    """Positions in ``classes`` (text values, ``None`` = missing) of an object array of labels."""
    codes = np.zeros(len(labels), dtype=np.int64)
    null = np.equal(labels, None)
    text = [c for c in classes if c is not None]
    order = np.argsort(np.array(text, dtype=str)) if text else np.zeros(0, np.int64)
    where = np.array([i for i, c in enumerate(classes) if c is not None], dtype=np.int64)[order] if text else order
    if (~null).any():
        codes[~null] = where[np.searchsorted(np.array(text, dtype=str)[order], labels[~null].astype(str))]
    if null.any():
        codes[null] = classes.index(None)
    return codes


def _merge_rows(inside: list[tuple[str, dict]], left: list[tuple[str, dict]], entered: list[tuple[str, dict]],
                dups: list[tuple[str, dict]], *, by_id: bool, probe, before: str, after: str) -> dict:
    """Row-level differences of a partitioned dataset, rows matched by id across partitions.

    ``inside``: label changes found inside partitions (``row``, ``id``,
    ``before``, ``after`` lists); ``left`` / ``entered``: rows that left a
    partition (removed from it, or all rows of a removed one) and rows that
    entered one (added to it, or all rows of an added one), as arrays;
    ``dups``: ids duplicated inside a partition.  With ``by_id``, a row that
    left one partition and entered another is *moved* (listed in ``changed``
    too when its label differs), an entered row whose id another current
    partition holds is a duplicated id, the rest are added and removed.
    Without ``by_id`` (ids are row positions) nothing is matched.
    """
    out_pool, in_pool = _Pool(left), _Pool(entered)
    e_pos, l_pos = _match(out_pool, in_pool) if by_id else (np.zeros(0, np.int64),) * 2
    moved_before, moved_after = out_pool.labels(l_pos), in_pool.labels(e_pos)
    relabel = np.not_equal(moved_before, moved_after).astype(bool)
    changed = {"partition": [], "row": [], "id": [], before: [], after: []}
    for name, c in inside:
        changed["partition"] += [name] * len(c["row"])
        changed["row"] += c["row"]
        changed["id"] += c["id"]
        changed[before] += c["before"]
        changed[after] += c["after"]
    rl = e_pos[relabel]
    changed["partition"] += in_pool.partitions(rl)
    changed["row"] += in_pool.row[rl].tolist()
    changed["id"] += in_pool.ids(rl)
    changed[before] += moved_before[relabel].tolist()
    changed[after] += moved_after[relabel].tolist()
    moved = {"id": in_pool.ids(e_pos), "from_partition": out_pool.partitions(l_pos),
             "from_row": out_pool.row[l_pos].tolist(), "partition": in_pool.partitions(e_pos),
             "row": in_pool.row[e_pos].tolist(), before: moved_before.tolist(), after: moved_after.tolist()}
    rest_in = np.setdiff1d(np.arange(len(in_pool)), e_pos)
    rest_out = np.setdiff1d(np.arange(len(out_pool)), l_pos)
    duplicated = {"partition": [], "id": [], "count": []}
    for name, d in dups:
        duplicated["partition"] += [name] * len(d["id"])
        duplicated["id"] += d["id"]
        duplicated["count"] += d["count"]
    if by_id and len(rest_in):
        dup, count = _duplicates_elsewhere(in_pool, rest_in, probe)
        if dup.any():  # one entry per (partition, id)
            d_pos, d_count = rest_in[dup], count[dup]
            (keys,), size = dense_keys(_ids(in_pool.id.take(from_numpy(d_pos))))
            _, first = np.unique(in_pool.part[d_pos] * max(size, 1) + keys, return_index=True)
            first = np.sort(first)
            duplicated["partition"] += in_pool.partitions(d_pos[first])
            duplicated["id"] += in_pool.ids(d_pos[first])
            duplicated["count"] += d_count[first].tolist()
            rest_in = rest_in[~dup]
    added = {"partition": in_pool.partitions(rest_in), "row": in_pool.row[rest_in].tolist(),
             "id": in_pool.ids(rest_in), "label": in_pool.labels(rest_in).tolist()}
    removed = {"partition": out_pool.partitions(rest_out), "row": out_pool.row[rest_out].tolist(),
               "id": out_pool.ids(rest_out), "label": out_pool.labels(rest_out).tolist()}
    return {"changed": changed, "moved": moved, "added": added, "removed": removed, "duplicated": duplicated,
            "n_relabelled_moves": int(relabel.sum())}


def _transition_list(before: list, after: list) -> list[dict]:
    """``[{"from", "to", "count"}]`` of label pairs, largest first."""
    from ._stats import transition_list

    if not before:
        return []
    classes = sorted(set(before) | set(after), key=lambda v: (v is None, v or ""))
    k = len(classes)
    src = _codes(np.array(before, dtype=object), classes)
    dst = _codes(np.array(after, dtype=object), classes)
    return transition_list(np.bincount(src * k + dst, minlength=k * k).reshape(k, k), classes)


def _row_findings(m: dict, transitions: list, *, by_id: bool, before: str, after: str) -> list[str]:
    """One line per kind of row-level difference; the counts are the lengths of the lists reported."""
    out = []
    n = len(m["changed"]["row"])
    if n:
        pairs = ", ".join(f"{t['count']} {label_text(t['from'])} -> {label_text(t['to'])}" for t in transitions[:3])
        out.append(f"{n} label(s) changed ({pairs})")
    n = len(m["moved"]["id"])
    if n:
        k = m["n_relabelled_moves"]
        out.append(f"{n} row(s) moved to another partition (" +
                   (f"{k} of them with a changed label)" if k else "labels unchanged)"))
    n = len(m["added"]["row"])
    if n:
        out.append(f"{n} row(s) added" + (f" (ids not in the {before} data)" if by_id else ""))
    n = len(m["removed"]["row"])
    if n:
        out.append(f"{n} row(s) removed" + (f" (ids of the {before} data missing)" if by_id else ""))
    n = len(m["duplicated"]["id"])
    if n:
        out.append(f"{n} id(s) duplicated in the {after} data")
    return out




def _class_counts(sealed: list[dict | None], current: list[dict | None], before: str, after: str,
                  test: bool = True):
    """Summed class counts (none when a partition's are unknown) and, with ``test``, the balance test."""
    from ._stats import balance_drift

    if any(c is None for c in sealed + current):
        return [], {}
    totals_b: dict = {}
    totals_a: dict = {}
    for side, totals in ((sealed, totals_b), (current, totals_a)):
        for counts in side:
            for c, n in counts.items():
                totals[c] = totals.get(c, 0) + int(n)
    classes = sorted(set(totals_b) | set(totals_a), key=lambda v: (v is None, v or ""))
    b = np.array([totals_b.get(c, 0) for c in classes], dtype=np.int64)
    a = np.array([totals_a.get(c, 0) for c in classes], dtype=np.int64)
    rows = [{"label": c, before: int(x), after: int(y), "change": int(y) - int(x)} for c, x, y in zip(classes, b, a)]
    return rows, (balance_drift(b, a, classes) if test else {})


NO_ID_NOTE = ("rows are identified by their position in their file (sealed without --id), so rows cannot be "
              "matched across partitions: a row moved to another partition shows as removed and added; "
              "give --id to match them")


# -- results ---------------------------------------------------------------------------
@dataclass(frozen=True)
class LakeSealResult:
    """What :func:`seal_lake` wrote: the root manifest and the partition store."""

    manifest: dict
    manifest_path: Path
    store: Path
    engine: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        m = self.manifest
        return {"manifest": str(self.manifest_path), "store": str(self.store), "name": m["name"],
                "version": m["version"], "source": m["source"],
                "rows": m["rows"], "partitions": len(m["partitions"]), "merkle_root": m["merkle"]["root"],
                "key_id": m["key_id"], "label": m["label"], "id": m["id"], "private": m["private"],
                "classes": m["classes"], "files": [f["name"] for f in m.get("files", [])], "engine": self.engine}


@dataclass(frozen=True)
class LakeVerifyReport(SignedFindings):
    """Outcome of :func:`verify_lake`.

    Attributes
    ----------
    ok : bool (property)
        Signature valid and no partition changed, added, removed or renamed.
    partitions : dict
        ``intact`` (count), ``changed``, ``added``, ``removed`` (lists of names),
        ``renamed`` (``[{"from", "to"}]``), ``snapshots_read`` (names: the
        changed and removed partitions' snapshots, every one with ``--columns``
        or ``--private``).
    changed, added, removed, duplicated : dict of lists
        Row-exact differences over all partitions; every list is aligned and
        carries ``partition`` next to ``row`` and ``id``.  With ``--id``, rows
        are matched by id across partitions: a row of an added partition whose
        id another partition holds is a ``duplicated`` id (``count`` = current
        rows with it), not an added row.
    moved : dict of lists
        Rows (matched by id) that left one partition and entered another:
        ``id``, ``from_partition``, ``from_row``, ``partition``, ``row``,
        ``sealed``, ``current``.  Those whose label differs are in ``changed``
        too (under their current partition and row).
    class_counts, balance, transitions
        Class counts sealed and current over all partitions, their
        chi-square balance test, and the label pairs of ``changed``.
    notes : list of str
        What the report cannot say (rows sealed without ``--id`` are not
        matched across partitions).
    files : dict
        Files below the folder that are not partitions: ``sealed`` and
        ``intact`` (counts of those the seal covers by their bytes, audit
        results an earlier flipguard wrote inside the folder), ``changed``
        and ``removed`` (names), ``unread`` (``[{"name", "why"}]``: files and
        links readers may read that are neither partitions nor sealed, e.g. a
        link to a folder or a file without a data suffix).  Each is a finding.
    """

    source: str
    manifest: dict
    signature: SignatureCheck
    partitions: dict = field(default_factory=dict)
    changed: dict = field(default_factory=dict)
    added: dict = field(default_factory=dict)
    removed: dict = field(default_factory=dict)
    duplicated: dict = field(default_factory=dict)
    columns: dict = field(default_factory=dict)
    findings: list = field(default_factory=list)
    engine: dict = field(default_factory=dict)
    moved: dict = field(default_factory=dict)
    class_counts: list = field(default_factory=list)
    balance: dict = field(default_factory=dict)
    transitions: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    files: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"ok": self.ok, "source": self.source, "manifest": self.manifest, "files": self.files,
                "signature": self.signature.to_dict(), "findings": list(self.findings), "notes": list(self.notes),
                "partitions": self.partitions, "n_changed": len(self.changed.get("row", [])),
                "n_moved": len(self.moved.get("id", [])),
                "n_added": len(self.added.get("row", [])), "n_removed": len(self.removed.get("row", [])),
                "n_duplicated": len(self.duplicated.get("id", [])),
                "changed": self.changed, "moved": self.moved, "added": self.added, "removed": self.removed,
                "duplicated": self.duplicated, "columns": self.columns, "class_counts": self.class_counts,
                "transitions": self.transitions, "balance": self.balance, "engine": self.engine}

    def to_json(self, indent: int | None = 2) -> str:
        import json

        return json.dumps(self.to_dict(), indent=indent, allow_nan=False, default=str)


# -- root manifest -------------------------------------------------------------------------
_ROOT_FIELDS = {"format_version", "kind", "name", "version", "created", "source", "label", "id", "columns", "rows", "classes",
                "partitions", "merkle", "store", "partition_key", "private", "key_id", "tool", "signature"}


def _parse_root(data: bytes, where: str) -> dict:
    if not data:
        raise IntegrityError(f"{where}: empty file (not a flipguard manifest)")
    doc = strict_json(data, where)

    def bad(msg):
        raise IntegrityError(f"{where}: {msg} (corrupt or not a flipguard lake manifest)")

    if not isinstance(doc, dict) or doc.get("kind") != LAKE_KIND:
        bad(f"kind must be {LAKE_KIND!r}")
    if doc.get("format_version") != LAKE_FORMAT_VERSION:
        raise IntegrityError(f"{where}: lake manifest format_version {doc.get('format_version')!r} is not "
                             f"supported (this flipguard reads version {LAKE_FORMAT_VERSION})")
    if set(doc) not in (_ROOT_FIELDS, _ROOT_FIELDS | {"files"}):
        bad("unexpected or missing fields")
    parts = doc["partitions"]
    if not (isinstance(parts, list) and all(
            isinstance(p, dict) and set(p) == {"name", "rows", "manifest"} and isinstance(p["name"], str)
            and isinstance(p["rows"], int) and isinstance(p["manifest"], str) and len(p["manifest"]) == 64
            for p in parts)):
        bad("partitions must be a list of {name, rows, manifest}")
    if not (isinstance(doc["name"], str) and doc["name"]):
        bad("name must be a non-empty string")
    if not (isinstance(doc["version"], int) and not isinstance(doc["version"], bool) and doc["version"] >= 1):
        bad("version must be an integer >= 1")
    if len({p["name"] for p in parts}) != len(parts):
        bad("a partition is listed twice")
    files = doc.get("files", [])
    if not (isinstance(files, list) and files and all(
            isinstance(f, dict) and set(f) == {"name", "bytes", "sha256"} and isinstance(f["name"], str)
            and isinstance(f["bytes"], int) and isinstance(f["sha256"], str) and len(f["sha256"]) == 64
            for f in files)) and "files" in doc:
        bad("files must be a non-empty list of {name, bytes, sha256}")
    if len({f["name"] for f in files} | {p["name"] for p in parts}) != len(files) + len(parts):
        bad("a file is listed twice")
    if sum(p["rows"] for p in parts) != doc["rows"]:
        bad("partition rows do not add up to rows")
    if not (isinstance(doc["store"], str) and doc["store"] and "/" not in doc["store"] and doc["store"] not in (".", "..")):
        bad("store must be a folder name next to the manifest")
    if canonical_json(doc) + b"\n" != data:
        raise IntegrityError(f"{where}: not in canonical form (the file was edited or re-formatted after sealing)")
    return doc


def _tool() -> str:
    from .. import __version__

    return f"flipguard {__version__}"


def refuse_others(ds: PartitionedDataset) -> None:
    """Seal and diff refuse a folder holding files or links that readers may read but flipguard
    does not read as partitions: they would be data nobody checked (see ``discover(strict=True)``)."""
    if ds.others:
        raise DataError(f"{ds.root}: {len(ds.others)} file(s) or link(s) below the folder are not partitions "
                        f"flipguard reads, but other readers (pandas, pyarrow.dataset) may read them: "
                        f"{describe_others(ds.others)}; give data files a .parquet/.csv suffix, move the "
                        "others out, or start their names with _ or . (readers skip those)")


def _file_digest(path: str, name: str) -> dict:
    """``{"bytes", "sha256"}`` of a file sealed by its bytes (audit results inside a folder), read in
    blocks through a non-blocking, regular-files-only open (never a FIFO's endless wait)."""
    h, n = hashlib.sha256(), 0
    try:
        if _is_url(path):
            from ..data._read import _open_url

            with _open_url(path) as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
                    n += len(block)
        else:
            import stat

            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
            with os.fdopen(fd, "rb", buffering=0) as fh:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise DataError(f"file {name}: not a regular file")
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
                    n += len(block)
    except OSError as exc:
        raise DataError(f"file {name}: cannot read ({exc.strerror or exc})") from None
    return {"bytes": n, "sha256": h.hexdigest()}


def _file_findings(ds: PartitionedDataset, sealed: list[dict]) -> tuple[dict, list[str]]:
    """Files sealed by their bytes that changed or are gone, and files or links below the folder
    that readers may read but that are neither partitions nor sealed files: each a finding."""
    now = dict(ds.files)
    changed, missing = [], []
    for f in sealed:
        if f["name"] not in now:
            missing.append(f["name"])
        elif _file_digest(now[f["name"]], f["name"]) != {"bytes": f["bytes"], "sha256": f["sha256"]}:
            changed.append(f["name"])
    info = {"sealed": len(sealed), "intact": len(sealed) - len(changed) - len(missing), "changed": changed,
            "removed": missing, "unread": [{"name": n, "why": why} for n, why in ds.others]}
    findings = []
    if changed:
        findings.append(f"{len(changed)} file(s) sealed by their bytes changed: " + ", ".join(changed[:10]))
    if missing:
        findings.append(f"{len(missing)} file(s) sealed by their bytes removed or replaced: " + ", ".join(missing[:10]))
    if ds.others:
        findings.append(f"{len(ds.others)} file(s) or link(s) not sealed and not read as partitions, which other "
                        f"readers (pandas, pyarrow.dataset) may read: {describe_others(ds.others)}")
    return info, findings


def seal_lake(source, *, label: str, id: str | None = None, private_key, columns: list[str] | None = None,  # noqa: A002
              out=None, secret: bytes | None = None, engine="local", ray_address: str | None = None,
              created: str | None = None, name: str | None = None, version: int | None = None) -> LakeSealResult:
    """Seal the labels of a partitioned dataset: one signed root over per-partition seals.

    Parameters
    ----------
    source : str or path
        A folder or fsspec prefix of Parquet/CSV files (see :mod:`flipguard.data`).
    label : str
        Label column.
    id : str, optional
        Unique-id column (unique within each partition).  Without it rows are
        identified by their position in their file.
    private_key : Ed25519PrivateKey or path
        The sealing key; it stays in this process (workers use a one-seal key).
    columns : list of str, optional
        Feature columns sealed as well.
    out : path, optional
        Root manifest path (default ``DATA.flipguard.json``); the partition
        store is ``<out without .json>.parts/`` next to it.
    secret : bytes, optional
        Private seal (see :func:`seal_table`).
    engine : {"local", "ray"} or Engine, default="local"
        ``"local"`` runs one thread per core (see :func:`_engine`).
    ray_address : str, optional
        See :func:`flipguard.engine.get_engine`.
    created : str, optional
        Timestamp to record.
    name : str, optional
        The dataset's name (default: the folder's or prefix's last component).
        Partition seals are named ``NAME/<partition>``; verifying under another
        name is refused.
    version : int, optional
        Dataset version (default: one more than the root manifest being replaced, else 1).

    Returns
    -------
    LakeSealResult

    Raises
    ------
    DataError
        A partition cannot be read or lacks a column, or the label column has
        another type in one partition than in the others (integer widths aside;
        see :func:`flipguard.data._partitioned.check_label_types`): named, nothing is written.
    """
    from ._seal import now_utc

    key = private_key if isinstance(private_key, Ed25519PrivateKey) else load_private_key(private_key)
    columns = list(columns or [])
    if id is not None and id == label:
        raise InvalidParameterError(f"--label and --id must be different columns (both are '{label}')")
    ds = discover(source, strict=True)
    refuse_others(ds)
    manifest_path = Path(out) if out is not None else default_lake_manifest(ds.root)
    store = _store_for(manifest_path)
    regular_file_or_absent(manifest_path, "manifest")  # a FIFO or folder there: one line, never a hang
    refuse_symlink(store, "partition store")  # its files are written into it: never somewhere a link points
    if store.exists() and not store.is_dir():
        raise IntegrityError(f"partition store {store}: exists and is not a folder")
    created = created or now_utc()
    name = name if name is not None else default_lake_name(ds.root)
    if not isinstance(name, str) or not name.strip():
        raise InvalidParameterError("--name must be a non-empty dataset name")
    if version is None:
        version = _previous_version(manifest_path, name, key) + 1
    sealed_files = [{"name": n, **_file_digest(p, n)} for n, p in ds.files]
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InvalidParameterError(f"--dataset-version must be an integer >= 1. Got {version!r} instead.")
    eng = _engine(engine, ray_address)
    part_key = Ed25519PrivateKey.generate()
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{store.name}.", suffix=".tmp", dir=manifest_path.parent))
    try:
        from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

        shared = {"name": name, "version": version, "label": label, "id": id, "columns": columns, "secret": secret, "created": created,
                  "staging": str(staging),
                  "partition_key": part_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())}
        results = eng.map(_seal_task, list(ds.partitions), shared=shared, desc="sealing partitions")
        # one label type in the whole dataset, as a single file's seal records one (nothing is written yet)
        check_label_types(label, [(r["name"], r["label_type"], r["label_arrow"]) for r in results])
        entries = [{"name": r["name"], "rows": r["rows"], "manifest": r["manifest"]} for r in results]
        classes = None
        if secret is None:
            totals: dict = {}
            for r in results:
                for c, n in r["classes"].items():
                    totals[c] = totals.get(c, 0) + n
            classes = [{"label": c, "count": int(totals[c])}
                       for c in sorted(totals, key=lambda v: (v is None, v or ""))]
        body = {
            "format_version": LAKE_FORMAT_VERSION, "kind": LAKE_KIND, "name": name, "version": version,
            "created": created,
            "source": os.fspath(ds.root), "label": label, "id": id, "columns": columns,
            "rows": int(sum(e["rows"] for e in entries)), "classes": classes, "partitions": entries,
            "merkle": {"scheme": MERKLE_SCHEME, "root": merkle_root(entries), "leaves": len(entries)},
            "store": store.name, "partition_key": _raw_public(part_key.public_key()),
            "private": secret is not None, "key_id": key_id(key), "tool": _tool(),
        }
        if sealed_files:  # only then: a manifest without them stays readable by earlier versions
            body["files"] = sealed_files
        doc = sign_body(body, key)
        store.mkdir(parents=True, exist_ok=True)
        for f in staging.iterdir():
            os.replace(f, store / f.name)
        atomic_write_bytes(manifest_path, canonical_json(doc) + b"\n")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        info = eng.describe()
        eng.close()
    return LakeSealResult(doc, manifest_path, store, info)


def verify_lake(source, manifest_path=None, public_key=None, *, secret: bytes | None = None, engine="local",
                ray_address: str | None = None, name: str | None = None) -> LakeVerifyReport:
    """Verify a partitioned dataset against its root manifest (see the module docstring).

    Parameters
    ----------
    source : str or path
        The folder or prefix that was sealed (it may have moved: partitions are
        matched by their names relative to it).
    manifest_path : path, optional
        Root manifest (default ``DATA.flipguard.json``).
    public_key : Ed25519PublicKey or path
        The key the root must be signed with.
    secret : bytes, optional
        Needed for a private seal.
    engine, ray_address
        Where partitions are verified (a seal made by either engine verifies with either).
    name : str, optional
        The dataset's name (default: as :func:`seal_lake` derives it); a seal
        made for another name is refused (a finding, nothing else compared).

    Returns
    -------
    LakeVerifyReport
        Changed rows carry their partition name, row and id.
    """
    if public_key is None:
        raise IntegrityError("verify needs the signer's public key (--pubkey flipguard.pub)")
    key = public_key if isinstance(public_key, Ed25519PublicKey) else load_public_key(public_key)
    ds_root = os.fspath(source)
    manifest_path = Path(manifest_path) if manifest_path is not None else default_lake_manifest(ds_root)
    if manifest_path.is_dir():
        raise IntegrityError(f"manifest {manifest_path}: no such file")
    data = _read_small(manifest_path, "manifest", MAX_ROOT_BYTES)  # a FIFO or /dev/zero: one line, no hang
    doc = _parse_root(data, f"manifest {manifest_path}")
    info = {"path": str(manifest_path), "name": doc["name"], "version": doc["version"], "source": doc["source"], "created": doc["created"],
            "key_id": doc["key_id"], "rows": doc["rows"], "label": doc["label"], "id": doc["id"],
            "columns": doc["columns"], "private": doc["private"], "partitions": len(doc["partitions"]),
            "merkle_root": doc["merkle"]["root"]}
    sig = check_signature(doc, key, "the manifest")
    if not sig.valid:
        return LakeVerifyReport(ds_root, info, sig, findings=[sig.reason])
    name = name if name is not None else default_lake_name(ds_root)
    if doc["name"] != name:
        return LakeVerifyReport(ds_root, info, sig, findings=[
            f"the manifest seals dataset '{doc['name']}', not '{name}' (a seal of another dataset copied "
            f"here?); if the data was renamed, pass --name '{doc['name']}'"])
    if merkle_root(doc["partitions"]) != doc["merkle"]["root"] or doc["merkle"]["leaves"] != len(doc["partitions"]):
        raise IntegrityError(f"manifest {manifest_path}: Merkle root does not match its partitions")
    if doc["private"] and secret is None:
        raise IntegrityError(f"manifest {manifest_path}: the seal is private; give its secret "
                             "(--secret-file FILE or $FLIPGUARD_SECRET)")
    sealed_files = doc.get("files", [])
    ds = discover(ds_root, strict=True, sealed_files={f["name"] for f in sealed_files})
    files_info, file_findings = _file_findings(ds, sealed_files)
    store = manifest_path.with_name(doc["store"])
    sealed = {p["name"]: p for p in doc["partitions"]}
    current = set(ds.names)
    removed = [p for p in doc["partitions"] if p["name"] not in current]
    items = [(p, sealed.get(p.name)) for p in ds.partitions]
    shared = {"name": doc["name"], "version": doc["version"], "label": doc["label"], "id": doc["id"],
              "columns": doc["columns"], "secret": secret,
              "store": str(store), "partition_public": doc["partition_key"], "removed": removed}
    eng = _engine(engine, ray_address)
    try:
        results = eng.map(_verify_task, items, shared=shared, desc="verifying partitions")
        renamed = {r["renamed_from"] for r in results if r["status"] == "renamed"}
        gone = [p for p in removed if p["name"] not in renamed]
        # a removed partition's rows are read from its snapshot: it is gone, so it has changed
        gone_rows = eng.map(_removed_task, gone, shared=shared, desc="reading removed partitions") if gone else []
        by_id = doc["id"] is not None
        rows = _merge_rows(
            [(r["name"], r["changed"]) for r in results if r.get("changed")],
            sorted([(r["name"], r["left"]) for r in results if r.get("left")] +
                   [(r["name"], r["left"]) for r in gone_rows], key=lambda x: x[0]),
            [(r["name"], r["entered"]) for r in results if r.get("entered")],
            [(r["name"], r["duplicated"]) for r in results if r.get("duplicated")],
            by_id=by_id, before="sealed", after="current",
            probe=lambda ids: eng.map(_probe_task, list(ds.partitions), shared={"id": doc["id"], "probe": ids},
                                      desc="looking for duplicated ids"))
        info_engine = eng.describe()
    finally:
        eng.close()
    return _assemble(ds_root, info, sig, results, removed, gone_rows, rows, by_id, info_engine, files_info,
                     file_findings)


def _assemble(source, info, sig, results, removed, gone_rows, rows, by_id, engine_info, files_info=None,
              file_findings=()) -> LakeVerifyReport:
    renamed_from = {r["renamed_from"]: r["name"] for r in results if r["status"] == "renamed"}
    added_parts = [r for r in results if r["status"] == "added"]
    gone = [p for p in removed if p["name"] not in renamed_from]
    parts = {"intact": sum(r["status"] == "intact" for r in results),
             "changed": [r["name"] for r in results if r["status"] == "changed"],
             "added": [r["name"] for r in added_parts],
             "removed": [p["name"] for p in gone],
             "renamed": [{"from": a, "to": b} for a, b in renamed_from.items()],
             "snapshots_read": sorted([r["name"] for r in results if r["snapshot_read"]] +
                                      [r["name"] for r in gone_rows])}
    columns: dict = {}
    findings: list[str] = []
    for r in results:
        for name, c in (r.get("columns") or {}).items():
            if c["row"]:
                col = columns.setdefault(name, {"partition": [], "row": [], "id": [], "sealed": [], "current": []})
                col["partition"] += [r["name"]] * len(c["row"])
                for k in ("row", "id", "sealed", "current"):
                    col[k] += c[k]
        for f in r.get("findings") or []:
            findings.append(f"partition {r['name']}: {f}")
    transitions = _transition_list(rows["changed"]["sealed"], rows["changed"]["current"])
    findings += _row_findings(rows, transitions, by_id=by_id, before="sealed", after="current")
    class_counts, balance = _class_counts(
        [r.get("sealed_counts") for r in results if r["status"] != "added"] + [r["sealed_counts"] for r in gone_rows],
        [r.get("current_counts") for r in results], "sealed", "current", test=bool(findings))
    if findings and balance.get("drifted"):
        sh = balance["largest_shift"]
        findings.append(f"class balance drifted (chi-square p = {balance['p_value']:.2g}; "
                        f"{label_text(sh['label'])} {sh['before']:.1%} -> {sh['after']:.1%})")
    if parts["added"]:
        findings.append(f"{len(parts['added'])} partition(s) added ({sum(r['rows'] for r in added_parts)} rows): "
                        + ", ".join(parts["added"][:10]))
    if parts["removed"]:
        findings.append(f"{len(parts['removed'])} partition(s) removed ({sum(p['rows'] for p in gone)} rows): "
                        + ", ".join(parts["removed"][:10]))
    if parts["renamed"]:
        findings.append(f"{len(parts['renamed'])} partition(s) renamed (same ids and labels in the same order): " +
                        ", ".join(f"{x['from']} -> {x['to']}" for x in parts["renamed"][:10]))
    findings += file_findings
    notes = [NO_ID_NOTE] if not by_id and (rows["added"]["row"] or rows["removed"]["row"]) else []
    return LakeVerifyReport(source, info, sig, parts, rows["changed"], rows["added"], rows["removed"],
                            rows["duplicated"], columns, findings, engine_info, moved=rows["moved"],
                            class_counts=class_counts, balance=balance, transitions=transitions, notes=notes,
                            files=files_info or {})


# -- diff of two partitioned versions -------------------------------------------------------
def _diff_task(item: tuple, shared: dict) -> dict:
    """Diff one partition present in both versions (``diff_tables``); class counts for the merge."""
    from ._diff import diff_tables

    name, old_part, new_part = item
    label, id_ = shared["label"], shared["id"]
    old = _read(old_part, label, id_, [])
    new = _read(new_part, label, id_, [])
    rep = diff_tables(old, new, label=label, id=id_ or ROW_ID, old_name=f"old {name}", new_name=f"new {name}")
    ch = rep.changes
    # the row-level lines are rewritten for the whole dataset once rows are matched across partitions
    row_lines = {f for f in ch.findings("old", "new") if not f.startswith("no id of")}
    return {"name": name, "identical": rep.identical, "classes": list(ch.classes),
            "counts_before": ch.counts_before.tolist(), "counts_after": ch.counts_after.tolist(),
            "transitions": ch.transitions.tolist(),
            "changed": {"row": ch.changed["row"], "id": ch.changed["id"], "before": ch.changed["before"],
                        "after": ch.changed["after"]},
            "entered": _list_rows(ch.added), "left": _list_rows(ch.removed), "duplicated": dict(ch.duplicated),
            "findings": [f for f in rep.findings if f not in row_lines]}


def _rows_task(part: Partition, shared: dict) -> dict:
    """Every row (id, label) and the class counts of a partition only one version has."""
    tbl = _read(part, shared["label"], shared["id"], [])
    rows, counts = _table_rows(tbl, shared["label"], shared["id"] or ROW_ID, f"partition {part.name}")
    return {"name": part.name, "rows": tbl.num_rows, "payload": rows, "classes": counts}


@dataclass(frozen=True)
class LakeDiffReport:
    """Label changes between two versions of a partitioned dataset (partitions matched by name).

    Attributes
    ----------
    partitions : dict
        ``identical`` (count), ``changed``, ``added``, ``removed`` (names).
    changed, added, removed, duplicated : dict of lists
        Row-level differences with ``partition``.  With ``id``, rows are matched
        by id across partitions: the rows of an added or removed partition are
        listed as added / removed rows, or as ``moved`` when the other version
        has their id in another partition, or (added) as ``duplicated`` ids
        when another partition of the new version holds the id.
    moved : dict of lists
        ``id``, ``from_partition``, ``from_row``, ``partition``, ``row``, ``old``,
        ``new`` of rows that changed partition; those whose label changed are in
        ``changed`` too.
    transitions : list of dict
        Class-to-class changes summed over partitions (moved rows included);
        ``shape`` reads them (concentrated in one pair or spread), ``balance``
        tests the class counts, ``class_counts`` lists them.
    notes : list of str
        What the report cannot say (without ``id`` rows are not matched across partitions).
    files : dict
        Files that are not partitions (audit results written inside a folder by
        an earlier flipguard), compared by their bytes: ``identical`` (count),
        ``changed``, ``added``, ``removed`` (names); any difference is one.
    """

    old: str
    new: str
    label: str
    id: str | None
    partitions: dict
    changed: dict
    added: dict
    removed: dict
    transitions: list
    shape: dict
    balance: dict
    findings: list
    engine: dict = field(default_factory=dict)
    duplicated: dict = field(default_factory=lambda: {"partition": [], "id": [], "count": []})
    moved: dict = field(default_factory=dict)
    class_counts: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    files: dict = field(default_factory=dict)

    @property
    def identical(self) -> bool:
        p, f = self.partitions, self.files
        return not (p["changed"] or p["added"] or p["removed"] or f.get("changed") or f.get("added")
                    or f.get("removed"))

    def to_dict(self) -> dict:
        return {"identical": self.identical, "old": self.old, "new": self.new, "label": self.label, "id": self.id,
                "partitions": self.partitions, "n_changed": len(self.changed["row"]),
                "n_moved": len(self.moved.get("id", [])),
                "n_added": len(self.added["row"]), "n_removed": len(self.removed["row"]),
                "n_duplicated": len(self.duplicated["id"]),
                "changed": self.changed, "moved": self.moved, "added": self.added, "removed": self.removed,
                "duplicated": self.duplicated, "class_counts": self.class_counts,
                "transitions": self.transitions, "shape": self.shape, "balance": self.balance,
                "findings": list(self.findings), "notes": list(self.notes), "files": self.files,
                "engine": self.engine}

    def to_json(self, indent: int | None = 2) -> str:
        import json

        return json.dumps(self.to_dict(), indent=indent, allow_nan=False, default=str)


def diff_lake(old, new, *, label: str, id: str | None = None, engine="local",  # noqa: A002
              ray_address: str | None = None) -> LakeDiffReport:
    """Compare two versions of a partitioned dataset, partition by partition, on any engine.

    Partitions are matched by name; each pair is compared with
    :func:`diff_tables` as one task.  With ``id``, rows are then matched by
    id across partitions (see :class:`LakeDiffReport`): a row that changed
    partition is *moved*, and a label it changed on the way is a change.  The
    transitions and class counts are summed over partitions before the shape
    and balance tests, so the reading is the same as for the whole dataset at once.
    """
    from ._stats import balance_drift, change_shape, transition_list

    a, b = discover(old, strict=True), discover(new, strict=True)
    refuse_others(a)
    refuse_others(b)
    files = _diff_files(a, b)
    old_parts, new_parts = {p.name: p for p in a.partitions}, {p.name: p for p in b.partitions}
    both = [(n, old_parts[n], new_parts[n]) for n in sorted(old_parts) if n in new_parts]
    only_old = [old_parts[n] for n in sorted(old_parts) if n not in new_parts]
    only_new = [new_parts[n] for n in sorted(new_parts) if n not in old_parts]
    eng = _engine(engine, ray_address)
    try:
        shared = {"label": label, "id": id}
        pairs = eng.map(_diff_task, both, shared=shared, desc="comparing partitions")
        gone = eng.map(_rows_task, only_old, shared=shared, desc="removed partitions")
        came = eng.map(_rows_task, only_new, shared=shared, desc="added partitions")
        rows = _merge_rows(
            [(r["name"], r["changed"]) for r in pairs],
            sorted([(r["name"], r["left"]) for r in pairs] + [(r["name"], r["payload"]) for r in gone],
                   key=lambda x: x[0]),
            sorted([(r["name"], r["entered"]) for r in pairs] + [(r["name"], r["payload"]) for r in came],
                   key=lambda x: x[0]),
            [(r["name"], r["duplicated"]) for r in pairs], by_id=id is not None, before="old", after="new",
            probe=lambda ids: eng.map(_probe_task, list(b.partitions), shared={"id": id, "probe": ids},
                                      desc="looking for duplicated ids"))
        info = eng.describe()
    finally:
        eng.close()
    classes = sorted({c for r in pairs for c in r["classes"]} | {c for r in gone + came for c in r["classes"]},
                     key=lambda v: (v is None, v or ""))
    index = {c: i for i, c in enumerate(classes)}
    k = len(classes)
    trans = np.zeros((k, k), dtype=np.int64)
    before = np.zeros(k, dtype=np.int64)
    after = np.zeros(k, dtype=np.int64)
    for r in pairs:
        idx = np.array([index[c] for c in r["classes"]], dtype=np.int64)
        if len(idx):
            trans[np.ix_(idx, idx)] += np.asarray(r["transitions"], dtype=np.int64)
            before[idx] += np.asarray(r["counts_before"], dtype=np.int64)
            after[idx] += np.asarray(r["counts_after"], dtype=np.int64)
    for part_rows, side in ((gone, before), (came, after)):
        for r in part_rows:
            for c, n in r["classes"].items():
                side[index[c]] += n
    mv = rows["moved"]
    if mv["id"]:  # moved rows whose label changed: one more transition each
        src = _codes(np.array(mv["old"], dtype=object), classes)
        dst = _codes(np.array(mv["new"], dtype=object), classes)
        differ = src != dst
        np.add.at(trans, (src[differ], dst[differ]), 1)
    findings = [f"partition {r['name']}: {f}" for r in pairs for f in r["findings"] if "class balance" not in f]
    tlist = transition_list(trans, classes)
    findings += _row_findings(rows, tlist, by_id=id is not None, before="old", after="new")
    parts = {"identical": sum(r["identical"] for r in pairs),
             "changed": [r["name"] for r in pairs if not r["identical"]],
             "added": [r["name"] for r in came], "removed": [r["name"] for r in gone]}
    if parts["added"]:
        findings.append(f"{len(parts['added'])} partition(s) added ({sum(r['rows'] for r in came)} rows): "
                        + ", ".join(parts["added"][:10]))
    if parts["removed"]:
        findings.append(f"{len(parts['removed'])} partition(s) removed ({sum(r['rows'] for r in gone)} rows): "
                        + ", ".join(parts["removed"][:10]))
    balance = balance_drift(before, after, classes)
    if balance.get("drifted"):
        findings.append(f"class balance drifted (chi-square p = {balance['p_value']:.2g})")
    class_counts = [{"label": c, "old": int(x), "new": int(y), "change": int(y) - int(x)}
                    for c, x, y in zip(classes, before, after)]
    notes = [NO_ID_NOTE.replace("(sealed without --id)", "(compared without --id)")] \
        if id is None and (rows["added"]["row"] or rows["removed"]["row"]) else []
    for what in ("changed", "added", "removed"):
        if files[what]:
            findings.append(f"{len(files[what])} file(s) not read as partitions (audit results) {what}: "
                            + ", ".join(files[what][:10]))
    return LakeDiffReport(os.fspath(a.root), os.fspath(b.root), label, id, parts, rows["changed"], rows["added"],
                          rows["removed"], tlist, change_shape(trans, before, classes), balance, findings, info,
                          duplicated=rows["duplicated"], moved=rows["moved"], class_counts=class_counts, notes=notes,
                          files=files)


def _diff_files(a: PartitionedDataset, b: PartitionedDataset) -> dict:
    """Files of two versions that are not partitions (audit results inside a folder), compared by
    name and bytes: never skipped unseen, whatever their ``_audit.json`` says."""
    old, new = dict(a.files), dict(b.files)
    both = sorted(set(old) & set(new))
    changed = [n for n in both if _file_digest(old[n], n) != _file_digest(new[n], n)]
    return {"identical": len(both) - len(changed), "changed": changed,
            "added": sorted(set(new) - set(old)), "removed": sorted(set(old) - set(new))}
