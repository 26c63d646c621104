"""``flipguard monitor`` on an S3 prefix served by the moto server the other S3 tests use."""

from __future__ import annotations

import json

import pytest
from test_monitor_cli import args, reference, write_batches  # noqa: F401  (fixture and helpers)
from test_s3 import BUCKET, moto_endpoint, s3  # noqa: F401  (the moto server fixtures)

pytest.importorskip("s3fs")


def test_s3_prefix(s3, cli, tmp_path, reference):  # noqa: F811 - fixtures imported above
    local = tmp_path / "local"
    write_batches(local, 6, attack_from=3, fmt="parquet")
    for p in sorted(local.iterdir()):
        s3.put(str(p), f"{BUCKET}/incoming/{p.name}")
    s3.put(str(local / "batch_000.parquet"), f"{BUCKET}/elsewhere/batch_000.parquet")
    prefix = f"s3://{BUCKET}/incoming/"
    state = tmp_path / "s3.state"
    res = cli(*args(prefix, state, reference, "--json"))
    assert res.exit_code == 1, res.stderr
    lines = [json.loads(x) for x in res.stdout.splitlines()]
    assert [x["batch"] for x in lines] == [f"batch_{b:03d}.parquet" for b in range(6)]
    assert any(x["alarm"] for x in lines[3:]) and not any(x["alarm"] for x in lines[:3])
    s3.put(str(local / "batch_000.parquet"), f"{BUCKET}/incoming/batch_100.parquet")
    res = cli(*args(prefix, state, reference, "--json"))
    assert [json.loads(x)["batch"] for x in res.stdout.splitlines()] == ["batch_100.parquet"]
