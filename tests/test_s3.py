"""``s3://`` sources through fsspec/s3fs, against a local moto server on loopback (never a real cloud)."""

from __future__ import annotations

import socket

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from flipguard.data import load, read_table, write_table
from flipguard.exceptions import DataError

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

BUCKET = "flipguard-test"


@pytest.fixture(scope="module")
def moto_endpoint():
    """A moto S3 server on 127.0.0.1 (a free port), for this module only."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3(moto_endpoint, monkeypatch, tmp_path):
    """An empty bucket on the moto server; fsspec and botocore both pointed at it, no real credentials.

    The endpoint goes to s3fs through fsspec's configuration (what ``FSSPEC_S3_ENDPOINT_URL``
    sets when fsspec is imported) and to botocore through ``AWS_ENDPOINT_URL``, so nothing
    can reach AWS even if one of the two were ignored.
    """
    import fsspec
    import s3fs

    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setitem(fsspec.config.conf, "s3", {"endpoint_url": moto_endpoint})
    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem(endpoint_url=moto_endpoint)
    assert fs.endpoint_url == moto_endpoint
    if fs.exists(BUCKET):
        fs.rm(BUCKET, recursive=True)
    fs.mkdir(BUCKET)
    yield fs
    fs.rm(BUCKET, recursive=True)
    s3fs.S3FileSystem.clear_instance_cache()


def _put(fs, key: str, local) -> str:
    fs.put(str(local), f"{BUCKET}/{key}")
    return f"s3://{BUCKET}/{key}"


def test_load_csv_and_parquet_from_s3(s3, breast_cancer_csv, breast_cancer_parquet, breast_cancer_frame):
    csv_url = _put(s3, "data/bc.csv", breast_cancer_csv)
    pq_url = _put(s3, "data/bc.parquet", breast_cancer_parquet)
    local = load(breast_cancer_parquet, label="diagnosis", id="patient_id")
    for url, fmt in ((csv_url, "csv"), (pq_url, "parquet")):
        ds = load(url, label="diagnosis", id="patient_id")
        assert ds.format == fmt and ds.source == url
        assert ds.classes.tolist() == ["benign", "malignant"]
        assert ds.n_samples == breast_cancer_frame.num_rows == len(local.y)
        assert (ds.y == local.y).all() and (ds.ids == local.ids).all()
        assert abs(ds.X - local.X).max() < 1e-9


def test_write_poisoned_copy_back_to_s3(s3, breast_cancer_parquet):
    import numpy as np

    from flipguard.attacks import make_flipper

    url = _put(s3, "clean.parquet", breast_cancer_parquet)
    ds = load(url, label="diagnosis", id="patient_id")
    flipper = make_flipper("random", rate=0.1, random_state=0)
    _, y_poisoned = flipper.fit_resample(ds.X, ds.y)
    for name in ("poisoned.parquet", "poisoned.csv"):
        out = f"s3://{BUCKET}/out/{name}"
        write_table(ds.to_table(y_poisoned), out)
        back = load(out, label="diagnosis", id="patient_id")
        assert (back.ids == ds.ids).all()
        changed = back.labels() != ds.labels()
        assert changed.sum() == len(flipper.flipped_indices_) == int(0.1 * ds.n_samples)  # rounded down
        assert np.flatnonzero(changed).tolist() == sorted(flipper.flipped_indices_.tolist())
    assert sorted(s3.ls(f"{BUCKET}/out")) == [f"{BUCKET}/out/poisoned.csv", f"{BUCKET}/out/poisoned.parquet"]
    assert read_table(url)[0].equals(pq.read_table(breast_cancer_parquet))  # the input is untouched


def test_missing_object_is_a_clear_error(s3, cli, tmp_path):
    url = f"s3://{BUCKET}/nope.csv"
    with pytest.raises(DataError) as exc:
        load(url, label="y")
    assert str(exc.value) == f"{url}: no such file"
    res = cli("attack", url, "--label", "y", "--rate", "0.1", "--out", tmp_path / "out.csv")
    assert res.exit_code == 2 and res.stderr == f"Error: {url}: no such file\n"


def test_seal_and_verify_an_s3_object(s3, cli, tmp_path):
    """The integrity CLI works on an object in a bucket: seal, verify clean, flip one label, verify again."""
    tbl = pa.table({"id": list(range(50)), "x": [float(i) for i in range(50)],
                    "label": ["cat" if i % 3 else "dog" for i in range(50)]})
    local = tmp_path / "pets.csv"
    pacsv.write_csv(tbl, local)
    url = _put(s3, "pets.csv", local)
    assert cli("keygen", "--out", tmp_path / "keys").exit_code == 0
    manifest = tmp_path / "pets.seal.json"
    res = cli("seal", url, "--label", "label", "--id", "id", "--key", tmp_path / "keys" / "flipguard.key",
              "--out", manifest)
    assert res.exit_code == 0, res.stderr
    verify = ("verify", url, "--manifest", manifest, "--pubkey", tmp_path / "keys" / "flipguard.pub")
    res = cli(*verify)
    assert res.exit_code == 0, res.stdout + res.stderr
    flipped = tbl.set_column(2, "label", pa.array(["cat"] + tbl.column("label").to_pylist()[1:]))  # was "dog"
    write_table(flipped, url)
    res = cli(*verify, "--json")
    assert res.exit_code == 1
    import json

    out = json.loads(res.stdout)
    assert out["ok"] is False and out["changed"]["id"] == [0]
    assert out["changed"]["sealed"] == ["dog"] and out["changed"]["current"] == ["cat"]
