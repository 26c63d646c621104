"""Reading PostgreSQL safely and losslessly, and what `pg verify` reports (real server; red-team findings).

Each test reproduces a defect found by the red team: a query that committed and
wrote through the read-only reader, numeric labels read through float64 (or
failing on NaN), an owner's cast run by the reader, an explained-change count
capped at 1000, a `--json` verdict that disagreed with the exit code, a
dotted table name that hid a real schema.table, and an unprotect example that
named the table owner.
"""

from __future__ import annotations

import json
import uuid

import pytest
from conftest import dsn_as

from flipguard.data._postgres import read_postgres, redact_dsn
from flipguard.exceptions import DataError

pytestmark = pytest.mark.postgres


@pytest.fixture
def pgx(pg_dsn):
    """An autocommit superuser connection, a schema of this test's own and a tag for other names; all dropped."""
    import psycopg
    from psycopg import sql

    tag = uuid.uuid4().hex[:10]
    schema = f"fg_reads_{tag}"
    conn = psycopg.connect(pg_dsn, autocommit=True)
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))

    class X:
        pass

    x = X()
    x.conn, x.schema, x.tag, x.sql, x.roles = conn, schema, tag, sql, []
    x.ident = lambda name: sql.Identifier(schema, name)
    try:
        yield x
    finally:
        try:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        finally:
            for role in x.roles:
                if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                    conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
                    conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
            conn.close()


@pytest.fixture
def keys(tmp_path):
    from flipguard.integrity import write_keypair

    return write_keypair(tmp_path / "keys")


@pytest.fixture
def protected(pgx, pg_dsn, monkeypatch):
    """A factory of protected tables ``(id int PRIMARY KEY, label <type>)`` in an audit schema of this test's own."""
    from flipguard.integrity._pg import protect, unprotect

    audit_schema, audit_role = f"fg_reads_trails_{pgx.tag}", f"fg_reads_auditor_{pgx.tag}"
    monkeypatch.setenv("FLIPGUARD_AUDIT_SCHEMA", audit_schema)
    monkeypatch.setenv("FLIPGUARD_AUDIT_ROLE", audit_role)
    made = []

    def make(name, label_type, values_sql):
        pgx.conn.execute(pgx.sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, label " + label_type + ")").format(
            pgx.ident(name)))
        pgx.conn.execute(pgx.sql.SQL("INSERT INTO {} " + values_sql).format(pgx.ident(name)))
        full = f"{pgx.schema}.{name}"
        protect(pg_dsn, full, id="id", label="label", audit_role=audit_role, schema=audit_schema)
        made.append(full)
        return full

    try:
        yield make
    finally:
        try:
            for full in made:
                unprotect(pg_dsn, full, drop_trail=True, schema=audit_schema)
        finally:
            pgx.conn.execute(pgx.sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(pgx.sql.Identifier(audit_schema)))
            pgx.roles.append(audit_role)


def _bypass(pgx, statement, *args):
    """Run ``statement`` ({t} = nothing; names are pre-composed) as a superuser with the triggers silenced."""
    with pgx.conn.transaction():
        pgx.conn.execute("SET LOCAL session_replication_role = replica")
        pgx.conn.execute(statement, args or None)


def _seal(cli, pg_dsn, table, keys, out):
    res = cli("seal", pg_dsn, "--table", table, "--label", "label", "--id", "id", "--key", keys.private,
              "--out", out)
    assert res.exit_code == 0, res.stderr
    return out


# =========================================================================== 1. a query cannot write
def test_query_cannot_commit_and_write(pgx, pg_dsn):
    """The describe step used to go out as simple-protocol text: `) x; COMMIT; DELETE ...` ran the DELETE."""
    victim = pgx.ident("victim")
    pgx.conn.execute(pgx.sql.SQL("CREATE TABLE {} (a int)").format(victim))
    pgx.conn.execute(pgx.sql.SQL("INSERT INTO {} VALUES (1)").format(victim))
    name = f"{pgx.schema}.victim"
    for payload in (f"SELECT 1 AS a) x; COMMIT; DELETE FROM {name}; SELECT * FROM (SELECT 1 AS a",
                    f"SELECT 1 AS a) x; COMMIT; DELETE FROM {name}; SELECT * FROM (SELECT 1 AS a -- ",
                    f"SELECT 1 AS a; COMMIT; DELETE FROM {name}",
                    f"SELECT 1 AS a\n) AS y) TO STDOUT; COMMIT; DELETE FROM {name}; COPY (SELECT (1"):
        with pytest.raises(DataError) as exc:
            read_postgres(pg_dsn, query=payload)
        assert "\n" not in str(exc.value)
        assert pgx.conn.execute(pgx.sql.SQL("SELECT count(*) FROM {}").format(victim)).fetchone()[0] == 1, payload
    with pytest.raises(DataError, match="give one SELECT statement"):
        read_postgres(pg_dsn, query=f"SELECT 1 AS a) x; DELETE FROM {name}; SELECT * FROM (SELECT 1 AS a")
    pgx.conn.execute(pgx.sql.SQL("CREATE SEQUENCE {}").format(pgx.ident("seq")))
    with pytest.raises(DataError, match=r"cannot execute setval\(\) in a read-only transaction"):  # still READ ONLY
        read_postgres(pg_dsn, query=f"SELECT setval('{pgx.schema}.seq', 5) AS a")
    assert pgx.conn.execute(pgx.sql.SQL("SELECT count(*) FROM {}").format(victim)).fetchone()[0] == 1


def test_query_ending_with_a_line_comment(pgx, pg_dsn):
    """`... -- comment` used to swallow the closing parenthesis: "syntax error at end of input"."""
    tbl = read_postgres(pg_dsn, query="SELECT 1 AS a, 'x' AS b -- the label")
    assert tbl.to_pydict() == {"a": [1], "b": ["x"]}
    tbl = read_postgres(pg_dsn, query="SELECT g AS a FROM generate_series(1, 3) g  -- last line;\n")
    assert tbl.column("a").to_pylist() == [1, 2, 3]


# =========================================================================== 2. numeric labels, lossless
def test_numeric_values_read_losslessly(pg_dsn):
    tbl = read_postgres(pg_dsn, query="""
        SELECT v::numeric AS free, v::numeric(50, 2) AS wide, v::numeric(30, 22) AS fine,
               v::numeric(30, 6) AS fits
        FROM (VALUES ('0.1'), ('0.1000000000000000000001'), (NULL)) AS x(v)""")
    import pyarrow as pa

    assert tbl.schema.field("free").type == pa.string()  # was float64: the two values below were one
    assert tbl.column("free").to_pylist() == ["0.1", "0.1000000000000000000001", None]
    assert tbl.schema.field("wide").type == pa.string()  # p > 38: was float64, 1.2345678901234568e+43
    assert tbl.column("wide").to_pylist() == ["0.10", "0.10", None]
    # scale > 6: Arrow would print 0.0000000000 as "0E-10"; the text stays PostgreSQL's
    assert tbl.schema.field("fine").type == pa.string()
    assert tbl.column("fine").to_pylist() == ["0.1000000000000000000000", "0.1000000000000000000001", None]
    assert tbl.schema.field("fits").type == pa.decimal128(30, 6)
    assert [str(v) if v is not None else None for v in tbl.column("fits").to_pylist()] == [
        "0.100000", "0.100000", None]
    small = read_postgres(pg_dsn, query="SELECT v::numeric(12, 10) AS n FROM (VALUES ('0'), ('-1e-10')) x(v)")
    assert small.column("n").to_pylist() == ["0.0000000000", "-0.0000000001"]
    big = read_postgres(pg_dsn, query="SELECT 12345678901234567890123456789012345678901234.5::numeric(50,2) AS w")
    assert big.column("w").to_pylist() == ["12345678901234567890123456789012345678901234.50"]
    nan = read_postgres(pg_dsn, query="SELECT v::numeric(6, 2) AS n FROM (VALUES ('1.5'), ('NaN'), (NULL)) x(v)")
    assert nan.schema.field("n").type == pa.string() and nan.column("n").to_pylist() == ["1.50", "NaN", None]
    nulls = read_postgres(pg_dsn, query="SELECT v AS n FROM (VALUES (1), (NULL), (NULL)) x(v)")
    assert nulls.column("n").to_pylist() == [1, None, None]  # one column: a NULL row is an empty CSV line
    empty = read_postgres(pg_dsn, query="SELECT 1.5::numeric(6, 2) AS n WHERE false")
    assert empty.schema.field("n").type == pa.decimal128(6, 2) and empty.num_rows == 0


def test_unconstrained_numeric_label_change_is_caught(pgx, pg_dsn, cli, keys, tmp_path, protected):
    """0.1 -> 0.1000000000000000000001 with the trigger bypassed: both verifiers used to say "no change"."""
    t = protected("free", "numeric", "VALUES (1, 0.1), (2, 0.2), (3, 0.3)")
    manifest = _seal(cli, pg_dsn, t, keys, tmp_path / "free.seal.json")
    _bypass(pgx, pgx.sql.SQL("UPDATE {} SET label = 0.1000000000000000000001 WHERE id = 1").format(
        pgx.ident("free")))
    res = cli("verify", pg_dsn, "--table", t, "--manifest", manifest, "--pubkey", keys.public, "--json")
    assert res.exit_code == 1, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    assert doc["n_changed"] == 1
    res = cli("pg", "verify", pg_dsn, "--table", t, "--manifest", manifest, "--pubkey", keys.public, "--json")
    assert res.exit_code == 1, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    assert [(c["id"], c["sealed"], c["current"]) for c in doc["unexplained"]] == [
        (1, "0.1", "0.1000000000000000000001")]


def test_wide_numeric_label_change_is_caught(pgx, pg_dsn, cli, keys, tmp_path, protected):
    """numeric(50, 2) was read as float64: a change in the 20th digit was invisible."""
    t = protected("wide", "numeric(50, 2)", "VALUES (1, 12345678901234567890123456789012345678901234.50), (2, 1)")
    manifest = _seal(cli, pg_dsn, t, keys, tmp_path / "wide.seal.json")
    _bypass(pgx, pgx.sql.SQL("UPDATE {} SET label = label + 1 WHERE id = 1").format(pgx.ident("wide")))
    res = cli("pg", "verify", pg_dsn, "--table", t, "--manifest", manifest, "--pubkey", keys.public, "--json")
    assert res.exit_code == 1, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    assert [c["current"] for c in doc["unexplained"]] == ["12345678901234567890123456789012345678901235.50"]


def test_a_fine_numeric_label_change_is_explained(pgx, pg_dsn, cli, keys, tmp_path, protected):
    """numeric(12, 10) was read as decimal128: "0E-10" in the seal's report, "0.0000000000" in the trail."""
    t = protected("fine", "numeric(12, 10)", "VALUES (1, 0.0000000001), (2, 0.5)")
    manifest = _seal(cli, pg_dsn, t, keys, tmp_path / "fine.seal.json")
    pgx.conn.execute(pgx.sql.SQL("UPDATE {} SET label = 0 WHERE id = 1").format(pgx.ident("fine")))  # recorded
    res = cli("pg", "verify", pg_dsn, "--table", t, "--manifest", manifest, "--pubkey", keys.public, "--json",
              "--allow-recorded")
    doc = json.loads(res.stdout)
    assert [(c["sealed"], c["current"]) for c in doc["explained"]] == [("0.0000000001", "0.0000000000")], doc
    assert doc["unexplained"] == [] and res.exit_code == 0


def test_a_nan_label_is_a_value_not_an_error(pgx, pg_dsn, cli, keys, tmp_path, protected):
    """A writer's 'NaN' in a numeric(6,2) label made every pg verify, seal and verify exit 2."""
    t = protected("nan", "numeric(6, 2)", "VALUES (1, 1.5), (2, 2.25), (3, 1.5)")
    manifest = _seal(cli, pg_dsn, t, keys, tmp_path / "nan.seal.json")
    pgx.conn.execute(pgx.sql.SQL("UPDATE {} SET label = 'NaN' WHERE id = 2").format(pgx.ident("nan")))  # recorded
    res = cli("pg", "verify", pg_dsn, "--table", t, "--manifest", manifest, "--pubkey", keys.public, "--json")
    assert res.exit_code == 1, res.stdout + res.stderr  # a change since the seal, not bad input
    doc = json.loads(res.stdout)
    assert [(c["id"], c["sealed"], c["current"]) for c in doc["explained"]] == [(2, "2.25", "NaN")]
    assert doc["unexplained"] == [] and doc["trail_mismatches"] == []
    res = cli("verify", pg_dsn, "--table", t, "--manifest", manifest, "--pubkey", keys.public, "--json")
    assert res.exit_code == 1, res.stdout + res.stderr
    assert json.loads(res.stdout)["n_changed"] == 1
    res = cli("seal", pg_dsn, "--table", t, "--label", "label", "--id", "id", "--key", keys.private,
              "--out", tmp_path / "nan2.seal.json")
    assert res.exit_code == 0, res.stderr
    res = cli("pg", "verify", pg_dsn, "--table", t, "--manifest", tmp_path / "nan2.seal.json", "--pubkey",
              keys.public)
    assert res.exit_code == 0, res.stdout + res.stderr


def test_reading_runs_no_user_defined_cast(pgx, pg_dsn, cli, keys, tmp_path):
    """`label::text` ran an owner's CREATE CAST (enum AS text) as the reader (a superuser): COPY TO PROGRAM."""
    owner = f"fg_reads_owner_{pgx.tag}"
    pgx.roles.append(owner)
    s = pgx.sql
    pgx.conn.execute(s.SQL("CREATE ROLE {} LOGIN").format(s.Identifier(owner)))
    pgx.conn.execute(s.SQL("GRANT CREATE, USAGE ON SCHEMA {} TO {}").format(s.Identifier(pgx.schema),
                                                                          s.Identifier(owner)))
    own = __import__("psycopg").connect(dsn_as(pg_dsn, owner), autocommit=True)
    try:
        own.execute(s.SQL("CREATE TYPE {} AS ENUM ('benign', 'malignant')").format(pgx.ident("diag")))
        own.execute(s.SQL("CREATE FUNCTION {f}(v {t}) RETURNS text LANGUAGE plpgsql AS "
                          "$$BEGIN RAISE EXCEPTION 'user-defined cast ran as %', current_user; END$$").format(
                              f=pgx.ident("diag_text"), t=pgx.ident("diag")))
        own.execute(s.SQL("CREATE CAST ({t} AS text) WITH FUNCTION {f}({t})").format(
            t=pgx.ident("diag"), f=pgx.ident("diag_text")))
        own.execute(s.SQL("CREATE TABLE {} (id int PRIMARY KEY, label {}, tags {}[])").format(
            pgx.ident("cases"), pgx.ident("diag"), pgx.ident("diag")))
        own.execute(s.SQL("INSERT INTO {} VALUES (1, 'benign', '{{benign}}'), (2, 'malignant', NULL), "
                          "(3, NULL, '{{malignant,benign}}')").format(pgx.ident("cases")))
    finally:
        own.close()
    t = f"{pgx.schema}.cases"
    import psycopg

    with pytest.raises(psycopg.errors.RaiseException, match="user-defined cast ran"):  # the trap is armed
        pgx.conn.execute(s.SQL("SELECT label::text FROM {}").format(pgx.ident("cases"))).fetchall()
    # the type's output function (what COPY uses, and format('%s', ...)) never runs the cast
    assert [r[0] for r in pgx.conn.execute(s.SQL("SELECT format('%s', label) FROM {} ORDER BY id").format(
        pgx.ident("cases"))).fetchall()] == ["benign", "malignant", ""]  # NB: format() turns NULL into ''
    tbl = read_postgres(pg_dsn, table=t)
    assert tbl.column("label").to_pylist() == ["benign", "malignant", None]
    assert tbl.column("tags").to_pylist() == ["{benign}", None, "{malignant,benign}"]
    res = cli("seal", pg_dsn, "--table", t, "--label", "label", "--id", "id", "--key", keys.private,
              "--out", tmp_path / "cases.seal.json")
    assert res.exit_code == 0, res.stderr


# =========================================================================== 3 and 4. pg verify's counts and verdict
def test_explained_count_is_not_capped(pgx, pg_dsn, cli, keys, tmp_path, protected):
    """2,500 recorded changes used to be reported as "1000 row(s)", with no n_explained in the JSON."""
    t = protected("many", "text", "SELECT g, 'ham' FROM generate_series(1, 4000) g")
    manifest = _seal(cli, pg_dsn, t, keys, tmp_path / "many.seal.json")
    pgx.conn.execute(pgx.sql.SQL("UPDATE {} SET label = 'spam' WHERE id <= 2400").format(pgx.ident("many")))
    pgx.conn.execute(pgx.sql.SQL("INSERT INTO {} SELECT g, 'spam' FROM generate_series(4001, 4100) g").format(
        pgx.ident("many")))
    args = ("pg", "verify", pg_dsn, "--table", t, "--manifest", manifest, "--pubkey", keys.public)
    res = cli(*args)
    assert res.exit_code == 1, res.stdout + res.stderr
    assert "Changes since the seal recorded by the trail: 2500 row(s):" in res.stdout
    assert "(2480 more; --limit N, or --json)" in res.stdout
    res = cli(*args, "--limit", "3")
    assert "(2497 more; --limit N, or --json)" in res.stdout
    assert len([line for line in res.stdout.splitlines() if line.startswith("  id ")]) == 3
    doc = json.loads(cli(*args, "--json").stdout)
    assert doc["n_explained"] == 2500 and doc["n_unexplained"] == 0


def test_json_ok_agrees_with_the_exit_code(pgx, pg_dsn, cli, keys, tmp_path, protected):
    """`--allow-recorded --json` printed "ok": false and exited 0."""
    t = protected("agree", "text", "SELECT g, 'ham' FROM generate_series(1, 10) g")
    manifest = _seal(cli, pg_dsn, t, keys, tmp_path / "agree.seal.json")
    pgx.conn.execute(pgx.sql.SQL("UPDATE {} SET label = 'spam' WHERE id = 3").format(pgx.ident("agree")))
    args = ("pg", "verify", pg_dsn, "--table", t, "--manifest", manifest, "--pubkey", keys.public, "--json")
    res = cli(*args, "--allow-recorded")
    doc = json.loads(res.stdout)
    assert res.exit_code == 0 and doc["ok"] is True, res.stdout
    assert doc["ok_strict"] is False and doc["ok_if_recorded"] is True and doc["allow_recorded"] is True
    res = cli(*args)
    doc = json.loads(res.stdout)
    assert res.exit_code == 1 and doc["ok"] is False and doc["ok_strict"] is False
    _bypass(pgx, pgx.sql.SQL("UPDATE {} SET label = 'spam' WHERE id = 4").format(pgx.ident("agree")))
    res = cli(*args, "--allow-recorded")
    doc = json.loads(res.stdout)
    assert res.exit_code == 1 and doc["ok"] is False and doc["n_unexplained"] == 1


# =========================================================================== 5. dotted names
def test_dotted_names_reach_both_tables(pgx, pg_dsn, cli, keys, tmp_path):
    """A table literally named "s.tv" next to s.tv: `--table s.tv` was "ambiguous" and s.tv unreachable."""
    s, schema = pgx.sql, pgx.schema
    pgx.conn.execute(s.SQL("CREATE TABLE {} (id int, which text)").format(pgx.ident("tv")))
    pgx.conn.execute(s.SQL("INSERT INTO {} VALUES (1, 'plain')").format(pgx.ident("tv")))
    pgx.conn.execute(s.SQL("CREATE TABLE {} (id int, which text)").format(pgx.ident(f"{schema}.tv")))
    pgx.conn.execute(s.SQL("INSERT INTO {} VALUES (1, 'literal')").format(pgx.ident(f"{schema}.tv")))
    pgx.conn.execute(s.SQL("CREATE TABLE {} (which text)").format(pgx.ident("only.dotted")))
    pgx.conn.execute(s.SQL("INSERT INTO {} VALUES ('only')").format(pgx.ident("only.dotted")))
    from urllib.parse import quote

    from psycopg.conninfo import conninfo_to_dict

    p = conninfo_to_dict(pg_dsn)  # a URL: the CLI takes postgresql:// DSNs
    dsn = (f"postgresql://{p.get('user', 'postgres')}@{p.get('host', '127.0.0.1')}:{p.get('port', 5432)}/"
           f"{p.get('dbname', 'test')}?options={quote(f'-csearch_path={schema},public', safe='')}")

    def which(name):
        return read_postgres(dsn, table=name).column("which").to_pylist()

    assert which(f"{schema}.tv") == ["plain"]  # schema.table when that table exists
    assert which(f"{schema.upper()}.TV") == ["plain"]  # case-folded like unquoted SQL
    assert which(f'"{schema}.tv"') == ["literal"]  # SQL quoting: the literal name, on the search_path
    assert which(f'{schema}."{schema}.tv"') == ["literal"]
    assert which(f'"{schema}"."{schema}.tv"') == ["literal"]
    assert which(f'"{schema}".tv') == ["plain"]
    assert which("only.dotted") == ["only"]  # no schema "only": the literal name, as before
    assert which('"only.dotted"') == ["only"]
    with pytest.raises(DataError, match="not found"):
        read_postgres(dsn, table=f'"{schema.upper()}.TV"')  # a quoted name is not case-folded
    res = cli("seal", dsn, "--table", f"{schema}.tv", "--label", "which", "--id", "id", "--key", keys.private,
              "--out", tmp_path / "tv.seal.json", "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads((tmp_path / "tv.seal.json").read_text())["classes"] == [{"label": "plain", "count": 1}]
    # several dots, both splits real: ambiguous, and the message says how to pick one
    pgx.conn.execute(s.SQL("CREATE SCHEMA {}").format(s.Identifier(f"{schema}.a")))
    try:
        pgx.conn.execute(s.SQL("CREATE TABLE {} (which text)").format(s.Identifier(f"{schema}.a", "b")))
        pgx.conn.execute(s.SQL("CREATE TABLE {} (which text)").format(pgx.ident("a.b")))
        with pytest.raises(DataError, match=r"ambiguous .*; write the one you mean with SQL double quotes$"):
            read_postgres(dsn, table=f"{schema}.a.b")
        assert read_postgres(dsn, table=f'"{schema}.a".b').num_rows == 0
    finally:
        pgx.conn.execute(s.SQL("DROP SCHEMA {} CASCADE").format(s.Identifier(f"{schema}.a")))


def test_table_errors_stay_one_line(pgx, pg_dsn, cli, keys, tmp_path):
    where = redact_dsn(pg_dsn)
    for name in ('"unterminated', 'a."b"."c"', f'{pgx.schema}."nope"'):
        res = cli("seal", pg_dsn, "--table", name, "--label", "y", "--key", keys.private,
                  "--out", tmp_path / "x.seal.json")
        assert res.exit_code == 2 and res.stderr.startswith("Error: ") and res.stderr.count("\n") == 1, res.stderr
    with pytest.raises(DataError) as exc:
        read_postgres(pg_dsn, table=f'{pgx.schema}."nope"')
    assert str(exc.value) == f"{where}: table '{pgx.schema}.\"nope\"' not found"


# =========================================================================== 6. help
def test_unprotect_example_names_an_administrator(cli):
    res = cli("pg", "unprotect", "--help")
    assert res.exit_code == 0
    assert "postgresql://admin@db/ml" in res.stdout and "postgresql://owner@" not in res.stdout
