"""Security promises as properties: every change is reported exactly, nothing else is; no manifest byte
can change unnoticed."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flipguard.exceptions import IntegrityError
from flipguard.integrity import Manifest, generate_keypair, seal_table, verify_table

KEY = generate_keypair()
PUB = KEY.public_key()
CLASSES = ["cat", "dog", "eel"]
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def datasets(draw):
    n = draw(st.integers(1, 30))
    string_ids = draw(st.booleans())
    if string_ids:
        ids = draw(st.lists(st.text(alphabet="abcdef0123-", min_size=1, max_size=12), min_size=n, max_size=n,
                            unique=True))
    else:
        ids = draw(st.lists(st.integers(-10**12, 10**12), min_size=n, max_size=n, unique=True))
    labels = draw(st.lists(st.sampled_from(CLASSES), min_size=n, max_size=n))
    other = draw(st.lists(st.floats(allow_nan=False, width=32), min_size=n, max_size=n))
    return pa.table({"id": ids, "other": other, "y": labels}), string_ids


def _fresh_id(tbl, string_ids, draw):
    existing = set(tbl.column("id").to_pylist())
    if string_ids:
        return draw(st.text(alphabet="xyz", min_size=1, max_size=8).filter(lambda v: v not in existing))
    return draw(st.integers(-10**12, 10**12).filter(lambda v: v not in existing))


def _verify(tbl, current):
    m, snap = seal_table(tbl, label="y", id="id", private_key=KEY)
    return verify_table(current, m, PUB, snapshot=snap)


def _nothing_else(c, *, changed=0, added=0, removed=0):
    assert (c.n_changed, c.n_added, c.n_removed, c.n_duplicated) == (changed, added, removed, 0)


@SETTINGS
@given(datasets(), st.data())
def test_single_label_change_is_reported_exactly(ds, data):
    tbl, _ = ds
    row = data.draw(st.integers(0, tbl.num_rows - 1))
    old = tbl.column("y")[row].as_py()
    new = data.draw(st.sampled_from([c for c in CLASSES + ["owl"] if c != old]))
    labels = tbl.column("y").to_pylist()
    labels[row] = new
    r = _verify(tbl, tbl.set_column(2, "y", pa.array(labels)))
    c = r.changes
    assert not r.ok
    assert c.changed == {"row": [row], "id": [tbl.column("id")[row].as_py()], "before": [old], "after": [new]}
    _nothing_else(c, changed=1)


@SETTINGS
@given(datasets(), st.data())
def test_inserted_row_is_reported_exactly(ds, data):
    tbl, string_ids = ds
    new_id = _fresh_id(tbl, string_ids, data.draw)
    at = data.draw(st.integers(0, tbl.num_rows))
    label = data.draw(st.sampled_from(CLASSES))
    row = pa.table({"id": pa.array([new_id], tbl.schema.field("id").type), "other": pa.array([0.0], tbl.schema.field("other").type),
                    "y": [label]})
    current = pa.concat_tables([tbl.slice(0, at), row, tbl.slice(at)])
    c = _verify(tbl, current).changes
    assert c.added == {"row": [at], "id": [new_id], "label": [label]}
    _nothing_else(c, added=1)


@SETTINGS
@given(datasets(), st.data())
def test_deleted_row_is_reported_exactly(ds, data):
    tbl, _ = ds
    at = data.draw(st.integers(0, tbl.num_rows - 1))
    current = pa.concat_tables([tbl.slice(0, at), tbl.slice(at + 1)])
    c = _verify(tbl, current).changes
    assert c.removed == {"row": [at], "id": [tbl.column("id")[at].as_py()], "label": [tbl.column("y")[at].as_py()]}
    _nothing_else(c, removed=1)


@SETTINGS
@given(datasets(), st.data())
def test_changed_id_is_reported_exactly(ds, data):
    tbl, string_ids = ds
    at = data.draw(st.integers(0, tbl.num_rows - 1))
    new_id = _fresh_id(tbl, string_ids, data.draw)
    ids = tbl.column("id").to_pylist()
    old_id, ids[at] = ids[at], new_id
    current = tbl.set_column(0, "id", pa.array(ids, tbl.schema.field("id").type))
    c = _verify(tbl, current).changes
    label = tbl.column("y")[at].as_py()
    assert c.removed == {"row": [at], "id": [old_id], "label": [label]}
    assert c.added == {"row": [at], "id": [new_id], "label": [label]}
    _nothing_else(c, added=1, removed=1)


@SETTINGS
@given(datasets(), st.data())
def test_duplicated_row_is_reported(ds, data):
    tbl, _ = ds
    at = data.draw(st.integers(0, tbl.num_rows - 1))
    current = pa.concat_tables([tbl, tbl.slice(at, 1)])
    c = _verify(tbl, current).changes
    assert c.duplicated == {"id": [tbl.column("id")[at].as_py()], "count": [2]}
    assert c.n_changed == c.n_removed == 0 and c.n_added == 0


@SETTINGS
@given(datasets(), st.data())
def test_reordering_and_unsealed_columns_are_not_reported(ds, data):
    tbl, _ = ds
    perm = data.draw(st.permutations(range(tbl.num_rows)))
    current = tbl.take(pa.array(perm, pa.int64()))
    current = current.set_column(1, "other", pa.array(np.arange(tbl.num_rows, dtype=np.float32)))
    r = _verify(tbl, current)
    assert r.ok and r.findings == []
    assert r.changes.identical


@settings(max_examples=25, deadline=None)
@given(datasets(), st.binary(min_size=16, max_size=40))
def test_private_seal_roundtrip_and_secrecy(ds, secret):
    tbl, _ = ds
    m, snap = seal_table(tbl, label="y", id="id", private_key=KEY, secret=secret)
    assert verify_table(tbl, m, PUB, snapshot=snap, secret=secret).ok
    visible = m.to_bytes().replace(m.doc["signature"]["value"].encode(), b"")  # base64 may spell "cat" by chance
    for c in CLASSES:
        assert c.encode() not in visible and f'"{c}"'.encode() not in snap


# -- every byte of a manifest ----------------------------------------------------------
def _small_manifest():
    tbl = pa.table({"id": [1, 2, 3, 4], "y": ["cat", "dog", "cat", "eel"]})
    return tbl, *seal_table(tbl, label="y", id="id", private_key=KEY, source="tiny.csv")


def test_every_bit_flip_of_a_manifest_is_rejected():
    """All 8 single-bit flips of every byte: the manifest fails to parse or its signature fails."""
    tbl, m, snap = _small_manifest()
    raw = m.to_bytes()
    assert verify_table(tbl, Manifest.from_bytes(raw), PUB, snapshot=snap).ok
    accepted = []
    for i in range(len(raw)):
        for bit in range(8):
            flipped = bytearray(raw)
            flipped[i] ^= 1 << bit
            try:
                fm = Manifest.from_bytes(bytes(flipped))
            except IntegrityError:
                continue
            if fm.verify_signature(PUB).valid:
                accepted.append((i, bit))
    assert accepted == []


@pytest.fixture
def fast_cli(cli, monkeypatch):
    """The real entry point (error boundary included), with typer's command tree built once, not per call."""
    import functools

    import typer.main

    monkeypatch.setattr(typer.main, "get_command", functools.lru_cache(maxsize=None)(typer.main.get_command))
    return cli


def test_every_byte_change_of_a_manifest_file_fails_verify_cli(tmp_path, fast_cli):
    """Each byte of a manifest file replaced in turn: `flipguard verify` exits 1 or 2, never 0."""
    from flipguard.integrity import write_keypair

    cli = fast_cli

    kp = write_keypair(tmp_path / "keys")
    data = tmp_path / "tiny.csv"
    data.write_text("id,y\n1,cat\n2,dog\n3,cat\n4,eel\n")
    assert cli("seal", data, "--label", "y", "--id", "id", "--key", kp.private).exit_code == 0
    manifest = tmp_path / "tiny.csv.flipguard.json"
    raw = manifest.read_bytes()
    assert cli("verify", data, "--pubkey", kp.public).exit_code == 0
    codes = {}
    for i in range(len(raw)):
        flipped = bytearray(raw)
        flipped[i] = flipped[i] ^ 0x01 if chr(raw[i]).isalnum() else ord("x")
        manifest.write_bytes(bytes(flipped))
        r = cli("verify", data, "--pubkey", kp.public)
        codes[r.exit_code] = codes.get(r.exit_code, 0) + 1
        assert r.exit_code in (1, 2), (i, chr(raw[i]), r.stdout, r.stderr)
        assert r.stderr.count("\n") <= 1  # at most one clear error line, never a traceback
    assert set(codes) == {1, 2}


def test_manifest_rejects_duplicate_keys_and_nan():
    _, m, _ = _small_manifest()
    raw = m.to_bytes().decode()
    with pytest.raises(IntegrityError, match="duplicate key 'rows'"):
        Manifest.from_bytes(raw.replace('"rows":4', '"rows":4,"rows":4').encode())
    with pytest.raises(IntegrityError, match="NaN is not allowed"):
        Manifest.from_bytes(raw.replace('"rows":4', '"rows":NaN').encode())
    doc = json.loads(raw)
    doc["snapshot"]["file"] = "../../etc/passwd"
    with pytest.raises(IntegrityError, match="plain file name"):
        Manifest.from_dict(doc)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.text(max_size=20), min_size=1, max_size=25), st.data())
def test_id_keys_do_not_depend_on_chunking_or_neighbours(strings, data):
    """Equal ids get equal keys, different ids different keys, however the columns are chunked."""
    from flipguard.integrity._columns import Ids, dense_keys, fingerprints

    cut = data.draw(st.integers(0, len(strings)))
    chunked = Ids("string", pa.chunked_array([strings[:cut], strings[cut:]], pa.string()))
    alone = [fingerprints(Ids("string", pa.chunked_array([[s]], pa.string())))[0] for s in strings]
    assert fingerprints(chunked).tolist() == alone
    other = data.draw(st.lists(st.sampled_from(strings + ["zz", ""]), max_size=10))
    (ka, kb), _ = dense_keys(chunked, Ids("string", pa.chunked_array([other], pa.string())))
    key_of = {}
    for s, k in zip(strings + other, ka.tolist() + kb.tolist()):
        assert key_of.setdefault(s, k) == k
    assert len(set(key_of.values())) == len(key_of)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(max_size=6), min_size=1, max_size=30), st.data())
def test_take_chunked_matches_arrow_take(strings, data):
    from flipguard.integrity._columns import take_chunked

    cuts = sorted(data.draw(st.lists(st.integers(0, len(strings)), max_size=4)))
    bounds = [0, *cuts, len(strings)]
    col = pa.chunked_array([strings[a:b] for a, b in zip(bounds, bounds[1:])], pa.string())
    pos = data.draw(st.lists(st.integers(0, len(strings) - 1), max_size=40))
    assert take_chunked(col, np.array(pos, dtype=np.int64)).to_pylist() == [strings[i] for i in pos]
