"""Arrow <-> numpy on raw buffers (flipguard._arrow): same values as pyarrow, no pandas import."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pytest

from flipguard._arrow import from_numpy, string_array, to_numpy

TYPES = [pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(), pa.uint32(), pa.uint64(),
         pa.float32(), pa.float64(), pa.bool_()]


@pytest.mark.parametrize("typ", TYPES, ids=str)
def test_to_numpy_equals_pyarrow_on_slices_and_chunks(typ):
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 100, 1000)
    arr = pa.array(raw % 2 == 0) if pa.types.is_boolean(typ) else pa.array(raw).cast(typ)
    for piece in (arr, arr.slice(3), arr.slice(13, 77), arr.slice(0, 0), arr.slice(999)):
        got = to_numpy(piece)
        want = piece.to_numpy(zero_copy_only=False)
        assert got.dtype == want.dtype and np.array_equal(got, want)
    chunked = pa.chunked_array([arr.slice(5, 10), arr.slice(1, 3), arr.slice(500)], type=typ)
    assert np.array_equal(to_numpy(chunked), chunked.to_numpy())
    assert to_numpy(pa.chunked_array([], type=typ)).dtype == chunked.to_numpy().dtype


def test_to_numpy_falls_back_for_nulls_and_text():
    with_null = pa.array([1, None, 3], pa.int64())
    assert np.array_equal(to_numpy(with_null), with_null.to_numpy(zero_copy_only=False), equal_nan=True)
    assert to_numpy(pa.array(["a", "b"])).tolist() == ["a", "b"]


@pytest.mark.parametrize("dtype", ["i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f4", "f8", "bool"])
def test_from_numpy_equals_pa_array(dtype):
    values = (np.arange(37) % 3 == 0) if dtype == "bool" else np.arange(37).astype(dtype)
    for v in (values, values[::3], values[5:6], values[:0]):
        got = from_numpy(v)
        assert got.equals(pa.array(v)), dtype
        assert np.array_equal(to_numpy(got), v)


def test_string_array():
    arr = string_array(["year=2024", "", "é"])
    assert arr.equals(pa.array(["year=2024", "", "é"])) and arr.validate(full=True) is None


def test_a_lake_seal_and_verify_never_import_pandas(tmp_path):
    """Every fresh Ray worker would pay pandas' import (0.3 s) before its first partition."""
    import pyarrow.parquet as pq

    lake = tmp_path / "lake" / "region=eu"
    lake.mkdir(parents=True)
    for i in range(3):
        pq.write_table(pa.table({"id": pa.array(np.arange(i * 50, i * 50 + 50)),
                                 "y": pa.array(["a", "b"] * 25)}), lake / f"part-{i}.parquet")
    root, manifest = str(tmp_path / "lake"), str(tmp_path / "seal" / "root.json")

    def run(code: str) -> list[str]:
        script = textwrap.dedent(f"""
            import sys
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
            from cryptography.hazmat.primitives.serialization import load_pem_private_key
            from flipguard.integrity import seal_lake, verify_lake
            root, manifest, pem = {root!r}, {manifest!r}, {str(tmp_path / "key.pem")!r}
        """) + textwrap.dedent(code) + "\nprint('pandas' in sys.modules)\n"
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return out.stdout.split()

    assert run("""
        from cryptography.hazmat.primitives import serialization as s
        key = Ed25519PrivateKey.generate()
        open(pem, "wb").write(key.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption()))
        seal_lake(root, label="y", id="id", private_key=key, out=manifest)
        print(len(verify_lake(root, manifest, key.public_key()).findings))
    """) == ["0", "False"]
    part = lake / "part-1.parquet"
    tbl = pq.read_table(part)
    pq.write_table(tbl.set_column(1, "y", pa.array(["b"] + tbl.column("y").to_pylist()[1:])), part)
    changed = run("""
        report = verify_lake(root, manifest, load_pem_private_key(open(pem, "rb").read(), None).public_key())
        print(report.to_dict()["changed"]["id"])
    """)
    assert changed == ["[50]", "False"], "the changed row is named, and pandas is never imported"
