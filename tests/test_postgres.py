"""Reading PostgreSQL tables and queries (real server; fixture ``pg_dsn``)."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid

import numpy as np
import pyarrow as pa
import pytest

from flipguard.data import load, read_table
from flipguard.data._postgres import pg_snapshot, read_postgres, redact_dsn
from flipguard.exceptions import DataError

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg(pg_dsn):
    """An autocommit connection and a schema of this test's own, dropped afterwards."""
    import psycopg
    from psycopg import sql

    schema = f"fg_read_{uuid.uuid4().hex[:10]}"
    conn = psycopg.connect(pg_dsn, autocommit=True)
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield conn, schema
    finally:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
        conn.close()


def _create(conn, schema, name, columns_sql, rows_sql):
    from psycopg import sql

    ident = sql.Identifier(schema, name)
    conn.execute(sql.SQL("CREATE TABLE {} (").format(ident) + sql.SQL(columns_sql) + sql.SQL(")"))
    if rows_sql:
        conn.execute(sql.SQL("INSERT INTO {} ").format(ident) + sql.SQL(rows_sql))
    return f"{schema}.{name}"


def test_types_map_faithfully(pg, pg_dsn):
    conn, schema = pg
    t = _create(conn, schema, "typed", """
        i2 smallint, i4 integer, i8 bigint, f4 real, f8 double precision, n numeric(10, 2), nu numeric,
        tx text, vc varchar(10), ch char(3), b boolean, d date, ts timestamp, tz timestamptz, u uuid, j jsonb,
        label text""", """VALUES
        (1, 2, 9007199254740993, 1.5, 0.1, 12.34, 1.25, 'NA', '', 'ab', true, '2024-02-29',
         '2024-01-02 03:04:05.123456', '2024-01-02 03:04:05+02', '00000000-0000-0000-0000-000000000001',
         '{"k": [1, 2]}', '1'),
        (NULL, NULL, NULL, 'NaN', 'Infinity', NULL, NULL, NULL, NULL, NULL, false, NULL, NULL, NULL, NULL,
         NULL, '0'),
        (3, 4, -5, -0.0, -1e300, -0.5, 3, E'line1\\nline2, "quoted"', 'x', 'y', NULL, '1999-12-31',
         '1970-01-01', '1970-01-01 00:00:00+00', NULL, 'null', '1')""")
    tbl = read_postgres(pg_dsn, table=t)
    types = dict(zip(tbl.column_names, tbl.schema.types))
    assert types == {
        "i2": pa.int16(), "i4": pa.int32(), "i8": pa.int64(), "f4": pa.float32(), "f8": pa.float64(),
        "n": pa.decimal128(10, 2), "nu": pa.string(), "tx": pa.string(), "vc": pa.string(), "ch": pa.string(),
        "b": pa.bool_(), "d": pa.date32(), "ts": pa.timestamp("us"), "tz": pa.timestamp("us", tz="UTC"),
        "u": pa.string(), "j": pa.string(), "label": pa.string(),
    }
    rows = tbl.to_pylist()
    assert rows[0]["i8"] == 9007199254740993  # exact: not through a float
    assert rows[0]["f8"] == 0.1 and rows[0]["n"] == decimal.Decimal("12.34")
    assert rows[0]["tx"] == "NA" and rows[0]["vc"] == ""  # "NA" is text, '' is not NULL
    assert rows[1]["tx"] is None and rows[1]["i2"] is None
    assert rows[0]["ch"] == "ab " and rows[0]["b"] is True and rows[1]["b"] is False and rows[2]["b"] is None
    assert np.isnan(rows[1]["f4"]) and rows[1]["f8"] == np.inf and rows[2]["f8"] == -1e300
    assert rows[2]["tx"] == 'line1\nline2, "quoted"'
    assert rows[0]["d"] == dt.date(2024, 2, 29)
    assert rows[0]["ts"] == dt.datetime(2024, 1, 2, 3, 4, 5, 123456)
    assert rows[0]["tz"].astimezone(dt.timezone.utc) == dt.datetime(2024, 1, 2, 1, 4, 5, tzinfo=dt.timezone.utc)
    assert rows[0]["u"] == "00000000-0000-0000-0000-000000000001"
    assert rows[0]["j"] == '{"k": [1, 2]}' and rows[2]["j"] == "null"
    assert [r["label"] for r in rows] == ["1", "0", "1"]  # text labels stay strings
    # unconstrained numeric: its exact text (a float would merge 0.1 and 0.1000000000000000000001)
    assert [r["nu"] for r in rows] == ["1.25", None, "3"]


def test_load_from_table_with_text_labels(pg, pg_dsn):
    conn, schema = pg
    t = _create(conn, schema, "reviews", "review_id bigint PRIMARY KEY, x1 float8, x2 integer, colour text, "
                "sentiment text",
                "SELECT g, g * 0.5, g % 3, CASE WHEN g % 2 = 0 THEN 'red' ELSE 'blue' END, "
                "CASE WHEN g % 4 = 0 THEN 'neg' ELSE 'pos' END FROM generate_series(1, 40) g")
    ds = load(pg_dsn, label="sentiment", id="review_id", table=t)
    assert ds.format == "postgresql" and ds.n_samples == 40
    assert ds.classes.tolist() == ["neg", "pos"]
    assert ds.ids.tolist() == list(range(1, 41))
    assert ds.feature_names == ["x1", "x2", "colour=blue", "colour=red"]
    assert "password" not in ds.source and t in ds.source
    sep = "&" if "?" in pg_dsn else "?"
    ds = load(f"{pg_dsn}{sep}password=hunter22", label="sentiment", table=t)  # trust auth ignores it
    assert "hunter22" not in ds.source and "password=***" in ds.source


def test_query_and_columns(pg, pg_dsn):
    conn, schema = pg
    t = _create(conn, schema, "q", "id int, label text, x float8",
                "SELECT g, CASE WHEN g < 5 THEN 'a' ELSE 'b' END, g FROM generate_series(1, 10) g")
    tbl = read_postgres(pg_dsn, query=f"SELECT id, label FROM {t} WHERE id > 7 ORDER BY id;  ")
    assert tbl.to_pydict() == {"id": [8, 9, 10], "label": ["b", "b", "b"]}
    tbl = read_postgres(pg_dsn, table=t, columns=["label", "id"])
    assert tbl.column_names == ["label", "id"] and tbl.num_rows == 10
    tbl, fmt, where = read_table(pg_dsn, table=t, columns=["x"])
    assert fmt == "postgresql" and tbl.column_names == ["x"]


def test_empty_table_keeps_its_schema(pg, pg_dsn):
    conn, schema = pg
    t = _create(conn, schema, "empty", "id bigint, label text", None)
    tbl = read_postgres(pg_dsn, table=t)
    assert tbl.num_rows == 0 and tbl.schema == pa.schema([("id", pa.int64()), ("label", pa.string())])


def test_weird_names_are_identifiers_not_sql(pg, pg_dsn):
    conn, schema = pg
    canary = _create(conn, schema, "x", "a int", "VALUES (1)")
    t = _create(conn, schema, 'we"ird table; DROP TABLE x', '"label ""col""" text, "Id" int, "x; --" float8',
                "VALUES ('a', 1, 0.5), ('b', 2, 1.5)")
    tbl = read_postgres(pg_dsn, table=t, columns=['label "col"'])
    assert tbl.to_pydict() == {'label "col"': ["a", "b"]}
    ds = load(pg_dsn, label='label "col"', id="Id", table=t)
    assert ds.classes.tolist() == ["a", "b"] and ds.feature_names == ["x; --"]
    assert read_postgres(pg_dsn, table=canary).num_rows == 1  # still there


def test_unqualified_and_case_folded_names(pg, pg_dsn):
    conn, schema = pg
    _create(conn, schema, "mixed", "id int", "VALUES (1)")
    assert read_postgres(pg_dsn, table=f"{schema.upper()}.MIXED").num_rows == 1
    tbl = read_postgres(pg_dsn, table="pg_catalog.pg_am", columns=["amname"])  # a catalog table
    assert "btree" in tbl.column("amname").to_pylist()


def test_errors_are_one_clear_line(pg, pg_dsn):
    conn, schema = pg
    t = _create(conn, schema, "t", "id int, label text", "VALUES (1, 'a')")
    where = redact_dsn(pg_dsn)
    with pytest.raises(DataError, match=r"^.*: give exactly one of table= \(--table\) or query= \(--query\)$"):
        read_postgres(pg_dsn)
    with pytest.raises(DataError, match="give exactly one"):
        read_postgres(pg_dsn, table=t, query="SELECT 1")
    with pytest.raises(DataError) as exc:
        read_postgres(pg_dsn, table=f"{schema}.nope")
    assert str(exc.value) == f"{where}: table '{schema}.nope' not found"
    with pytest.raises(DataError) as exc:
        read_postgres(pg_dsn, table=t, columns=["id", "colour"])
    assert str(exc.value) == f"{where} table {t}: column 'colour' not found (columns: id, label)"
    with pytest.raises(DataError, match=r'query: column "nope" does not exist$'):
        read_postgres(pg_dsn, query="SELECT nope FROM pg_class")
    with pytest.raises(DataError, match="duplicated column name"):
        read_postgres(pg_dsn, query="SELECT 1 AS a, 2 AS a")
    with pytest.raises(DataError, match="the query is empty"):
        read_postgres(pg_dsn, query=" ; ")
    with pytest.raises(DataError, match="exactly one"):
        load(pg_dsn, label="label")


def test_queries_run_read_only(pg, pg_dsn):
    conn, schema = pg
    conn.execute(f"CREATE SEQUENCE {schema}.s")
    with pytest.raises(DataError, match=r"cannot execute nextval\(\) in a read-only transaction"):
        read_postgres(pg_dsn, query=f"SELECT nextval('{schema}.s') AS n")
    assert conn.execute(f"SELECT last_value, is_called FROM {schema}.s").fetchone() == (1, False)


def test_connection_failure_hides_the_password(pg_dsn):
    bad = "postgresql://someone:s3cr3t-pw@127.0.0.1:1/nodb"
    with pytest.raises(DataError) as exc:
        read_postgres(bad, table="t")
    msg = str(exc.value)
    assert msg.startswith("cannot connect to postgresql://someone:***@127.0.0.1:1/nodb: ")
    assert "s3cr3t-pw" not in msg and "\n" not in msg
    with pytest.raises(DataError) as exc:  # a malformed DSN whose error message would echo it
        read_postgres("postgresql://u:s3cr3t-pw@[broken/x", table="t")
    assert "s3cr3t-pw" not in str(exc.value)
    with pytest.raises(DataError) as exc:
        read_postgres("host=127.0.0.1 port=1 user=u password=s3cr3t-pw dbname=x", table="t")
    assert "s3cr3t-pw" not in str(exc.value) and "password=***" in str(exc.value)


def test_snapshot_sees_one_state(pg, pg_dsn):
    """Two reads in one snapshot agree even when another session commits in between."""
    conn, schema = pg
    t = _create(conn, schema, "t", "id int, label text", "SELECT g, 'a' FROM generate_series(1, 5) g")
    with pg_snapshot(pg_dsn) as snap:
        first = snap.read(table=t)
        conn.execute(f"UPDATE {t} SET label = 'b'")
        conn.execute(f"INSERT INTO {t} VALUES (6, 'b')")
        second = snap.read(table=t, columns=["label"])
        n = snap.conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
    assert first.column("label").to_pylist() == ["a"] * 5 == second.column("label").to_pylist()
    assert n == 5
    assert read_postgres(pg_dsn, table=t).num_rows == 6


def test_cli_attack_reads_postgres(pg, pg_dsn, cli, tmp_path):
    conn, schema = pg
    t = _create(conn, schema, "train", "id int PRIMARY KEY, x1 float8, x2 float8, y text",
                "SELECT g, g * 0.1, (g % 7) * 1.0, CASE WHEN g % 2 = 0 THEN 'spam' ELSE 'ham' END "
                "FROM generate_series(1, 60) g")
    out = tmp_path / "poisoned.csv"
    res = cli("attack", pg_dsn, "--table", t, "--label", "y", "--id", "id", "--rate", "0.2",
              "--out", out, "--seed", "1")
    assert res.exit_code == 0, res.stderr
    import pyarrow.csv as pacsv

    poisoned = pacsv.read_csv(out)
    original = read_postgres(pg_dsn, table=t)
    changed = np.array(poisoned.column("y").to_pylist()) != np.array(original.column("y").to_pylist())
    assert changed.sum() == 12
    res = cli("attack", pg_dsn, "--table", f"{schema}.missing", "--label", "y", "--rate", "0.2", "--out",
              tmp_path / "x.csv")
    assert res.exit_code == 2
    assert res.stderr == f"Error: {redact_dsn(pg_dsn)}: table '{schema}.missing' not found\n"
