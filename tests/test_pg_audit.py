"""The PostgreSQL audit trail: protect, privileges, bypass and tamper detection (real server)."""

from __future__ import annotations

import threading
import uuid

import pytest
from conftest import dsn_as as _dsn_as

from flipguard.exceptions import DataError
from flipguard.integrity._pg import (
    TABLE_TRIGGERS,
    protect,
    protection_status,
    unprotect,
    verify_postgres,
)

pytestmark = pytest.mark.postgres

WEIRD_TABLE = 'we"ird table; DROP TABLE x'
WEIRD_LABEL = 'label "col"'
WEIRD_ID = "id; --"



@pytest.fixture
def env(pg_dsn, monkeypatch):
    """A schema with a weird-named labelled table (and a canary table ``x``), a writer role, an audit role and
    audit schema of its own (``FLIPGUARD_AUDIT_SCHEMA`` / ``_ROLE`` for the CLI); all dropped after."""
    import psycopg
    from psycopg import sql

    tag = uuid.uuid4().hex[:10]
    schema, writer = f"fg_audit_{tag}", f"fg_writer_{tag}"
    audit_schema, audit_role = f"fg_trails_{tag}", f"fg_auditor_{tag}"
    monkeypatch.setenv("FLIPGUARD_AUDIT_SCHEMA", audit_schema)
    monkeypatch.setenv("FLIPGUARD_AUDIT_ROLE", audit_role)
    admin = psycopg.connect(pg_dsn, autocommit=True)
    table = sql.Identifier(schema, WEIRD_TABLE)
    admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    admin.execute(sql.SQL("CREATE TABLE {} (a int)").format(sql.Identifier(schema, "x")))
    admin.execute(sql.SQL("CREATE TABLE {t} ({id} int PRIMARY KEY, {label} text, feature float8)").format(
        t=table, id=sql.Identifier(WEIRD_ID), label=sql.Identifier(WEIRD_LABEL)))
    admin.execute(sql.SQL("INSERT INTO {} SELECT g, CASE WHEN g % 2 = 0 THEN 'spam' ELSE 'ham' END, g "
                          "FROM generate_series(1, 20) g").format(table))
    admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(writer)))
    admin.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), sql.Identifier(writer)))
    admin.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {}").format(table, sql.Identifier(writer)))

    class Env:
        pass

    e = Env()
    e.admin, e.schema, e.writer, e.table = admin, schema, writer, table
    e.name = f"{schema}.{WEIRD_TABLE}"
    e.label, e.id = sql.Identifier(WEIRD_LABEL), sql.Identifier(WEIRD_ID)
    e.writer_dsn = _dsn_as(pg_dsn, writer, application_name="labeling-ui")
    e.audit_schema, e.audit_role = audit_schema, audit_role
    e.audit = {"audit_role": audit_role, "schema": audit_schema}
    try:
        yield e
    finally:
        try:
            unprotect(pg_dsn, e.name, drop_trail=True, schema=audit_schema)
        finally:
            admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
            admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(audit_schema)))
            for role in (writer, audit_role):
                if admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                    admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
                    admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
            admin.close()


def _trail(e, status):
    from psycopg import sql

    schema, name = status.trail.split(".", 1)
    return sql.Identifier(schema, name)


def _rows(e, status, where="TRUE"):
    from psycopg import sql

    cur = e.admin.execute(sql.SQL(
        "SELECT seq, op, u.oi AS old_id, u.ni AS new_id, u.ol AS old_label, u.nl AS new_label, session_user_name, "
        "current_user_name, application_name, client_addr, txid, logged_at FROM {} LEFT JOIN LATERAL "
        "unnest(old_ids, new_ids, old_labels, new_labels) WITH ORDINALITY AS u(oi, ni, ol, nl, k) ON true "
        "WHERE " + where + " ORDER BY seq, k").format(
            _trail(e, status)))
    names = [d.name for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def test_protect_is_idempotent_and_survives_weird_names(env, pg_dsn):
    from psycopg import sql

    first = protect(pg_dsn, env.name, id=WEIRD_ID, label=WEIRD_LABEL, **env.audit)
    assert first.protected and first.n_events == 1
    assert "trigger flipguard_audit_update" in first.changed
    second = protect(pg_dsn, env.name, id=WEIRD_ID, label=WEIRD_LABEL, **env.audit)
    assert second.changed == [] and second.n_events == 1  # nothing to do, no new trail row
    n = env.admin.execute(sql.SQL("SELECT tgname, count(*) FROM pg_trigger WHERE tgrelid = {}::regclass "
                                  "GROUP BY tgname").format(sql.Literal(env.table.as_string(env.admin)))).fetchall()
    assert dict(n) == {name: 1 for name in TABLE_TRIGGERS}
    # the canary survived every statement that used the table's name
    assert env.admin.execute(sql.SQL("SELECT count(*) FROM {}").format(
        sql.Identifier(env.schema, "x"))).fetchone()[0] == 0
    with pytest.raises(DataError, match=r"already protected with --id id; -- --label label \"col\""):
        protect(pg_dsn, env.name, id="feature", label=WEIRD_LABEL, **env.audit)


def test_protect_bad_columns(env, pg_dsn, cli):
    from flipguard.data._postgres import redact_dsn

    res = cli("pg", "protect", pg_dsn, "--table", env.name, "--id", WEIRD_ID, "--label", "lbl")
    assert res.exit_code == 2
    assert res.stderr == (f"Error: {redact_dsn(pg_dsn)}: label column 'lbl' not found in table {env.name} "
                          f"(columns: {WEIRD_ID}, {WEIRD_LABEL}, feature)\n")
    res = cli("pg", "status", pg_dsn, "--table", f"{env.schema}.nope")
    assert res.exit_code == 2 and res.stderr == f"Error: {redact_dsn(pg_dsn)}: table '{env.schema}.nope' not found\n"
    import psycopg
    from psycopg import sql

    with psycopg.connect(pg_dsn, autocommit=True) as admin:  # dropped with the schema
        admin.execute(sql.SQL("CREATE VIEW {} AS SELECT 1 AS id, 'a' AS label").format(sql.Identifier(env.schema, "v")))
    res = cli("pg", "protect", pg_dsn, "--table", f"{env.schema}.v", "--id", "id", "--label", "label")
    assert res.exit_code == 2
    assert res.stderr == f"Error: {redact_dsn(pg_dsn)}: '{env.schema}.v' is a view; this needs a table\n"


def test_writer_changes_are_recorded_with_who_and_when(env, pg_dsn):
    import psycopg
    from psycopg import sql

    status = protect(pg_dsn, env.name, id=WEIRD_ID, label=WEIRD_LABEL, **env.audit)
    with psycopg.connect(env.writer_dsn, autocommit=True) as w:
        w.execute(sql.SQL("UPDATE {t} SET {l} = 'spam' WHERE {i} IN (1, 3)").format(t=env.table, l=env.label,
                                                                                   i=env.id))
        w.execute(sql.SQL("UPDATE {t} SET feature = -1 WHERE {i} = 2").format(t=env.table, i=env.id))  # not a label
        w.execute(sql.SQL("UPDATE {t} SET {l} = {l} WHERE {i} = 4").format(t=env.table, l=env.label, i=env.id))
        w.execute(sql.SQL("INSERT INTO {t} VALUES (100, 'ham', 0)").format(t=env.table))
        w.execute(sql.SQL("DELETE FROM {t} WHERE {i} = 5").format(t=env.table, i=env.id))
        w.execute(sql.SQL("UPDATE {t} SET {i} = 200 WHERE {i} = 6").format(t=env.table, i=env.id))
        writer_txid = w.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()[0]
    rows = _rows(env, status, "op <> 'PROTECT'")
    assert [(r["op"], r["old_id"], r["new_id"], r["old_label"], r["new_label"]) for r in rows] == [
        ("UPDATE", "1", "1", "ham", "spam"),  # one statement: one chain step, both rows kept
        ("UPDATE", "3", "3", "ham", "spam"),
        ("INSERT", None, "100", None, "ham"),
        ("DELETE", "5", None, "ham", None),
        ("UPDATE", "6", "200", "spam", "spam"),
    ]
    for r in rows:
        assert r["session_user_name"] == env.writer and r["current_user_name"] == env.writer
        assert r["application_name"] == "labeling-ui" and r["client_addr"] == "127.0.0.1"
    assert rows[0]["seq"] == rows[1]["seq"] < rows[2]["seq"]
    assert rows[0]["txid"] == rows[1]["txid"] < rows[2]["txid"] < writer_txid
    assert rows[0]["logged_at"] <= rows[1]["logged_at"] <= rows[-1]["logged_at"]
    report = verify_postgres(pg_dsn, env.name, schema=env.audit_schema)
    assert report.ok, report.to_dict()


def test_set_role_is_recorded_as_current_user(env, pg_dsn):
    import psycopg
    from psycopg import sql

    status = protect(pg_dsn, env.name, id=WEIRD_ID, label=WEIRD_LABEL, **env.audit)
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        c.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(env.writer)))
        c.execute(sql.SQL("UPDATE {t} SET {l} = 'x' WHERE {i} = 1").format(t=env.table, l=env.label, i=env.id))
    (row,) = _rows(env, status, "op = 'UPDATE'")
    assert row["session_user_name"] == "postgres" and row["current_user_name"] == env.writer


def test_writer_cannot_touch_the_trail_or_the_trigger(env, pg_dsn):
    import psycopg
    from psycopg import sql

    status = protect(pg_dsn, env.name, id=WEIRD_ID, label=WEIRD_LABEL, **env.audit)
    trail = _trail(env, status)
    with psycopg.connect(env.writer_dsn, autocommit=True) as w:
        w.execute(sql.SQL("UPDATE {t} SET {l} = 'spam' WHERE {i} = 1").format(t=env.table, l=env.label, i=env.id))
        for stmt in ("UPDATE {} SET new_labels = '{{ham}}'", "DELETE FROM {}", "TRUNCATE {}",
                     "INSERT INTO {} SELECT * FROM {}"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied for schema"):
                w.execute(sql.SQL(stmt).format(trail, trail))
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="must be owner of table"):
            w.execute(sql.SQL("ALTER TABLE {} DISABLE TRIGGER flipguard_audit_update").format(env.table))
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="session_replication_role"):
            w.execute("SET session_replication_role = replica")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            w.execute(sql.SQL("DROP TRIGGER flipguard_audit_update ON {}").format(env.table))
    # even an admin who wrongly grants the writer everything on the trail cannot make it rewrite history
    env.admin.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(env.audit_schema),
                                                                         sql.Identifier(env.writer)))
    env.admin.execute(sql.SQL("GRANT ALL ON {} TO {}").format(trail, sql.Identifier(env.writer)))
    with psycopg.connect(env.writer_dsn, autocommit=True) as w:
        for stmt in ("UPDATE {} SET new_labels = '{{ham}}'", "DELETE FROM {}", "TRUNCATE {}",
                     "INSERT INTO {} SELECT * FROM {}"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="is append-only"):
                w.execute(sql.SQL(stmt).format(trail, trail))
    # and neither can the superuser that installed it, without first disabling the guard
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="is append-only: DELETE is not allowed"):
        env.admin.execute(sql.SQL("DELETE FROM {}").format(trail))
    assert [r["new_label"] for r in _rows(env, status, "op = 'UPDATE'")] == ["spam"]
    assert verify_postgres(pg_dsn, env.name, schema=env.audit_schema).ok


def _bypass_update(env, new_label: str, row_id: int, how: str) -> None:
    from psycopg import sql

    c = env.admin
    update = sql.SQL("UPDATE {t} SET {l} = {v} WHERE {i} = {r}").format(
        t=env.table, l=env.label, v=sql.Literal(new_label), i=env.id, r=sql.Literal(row_id))
    if how == "disable":
        c.execute(sql.SQL("ALTER TABLE {} DISABLE TRIGGER flipguard_audit_update").format(env.table))
        c.execute(update)
        c.execute(sql.SQL("ALTER TABLE {} ENABLE TRIGGER flipguard_audit_update").format(env.table))
    else:
        with c.transaction():
            c.execute("SET LOCAL session_replication_role = replica")
            c.execute(update)


@pytest.mark.parametrize("how", ["disable", "replica"])
def test_bypassed_trigger_is_reported(env, pg_dsn, cli, how):
    status = protect(pg_dsn, env.name, id=WEIRD_ID, label=WEIRD_LABEL, **env.audit)
    _bypass_update(env, "spam", 1, how)
    # id 1 has no trail row at all: without a seal nothing says what its label was (see the seal tests)
    assert verify_postgres(pg_dsn, env.name, schema=env.audit_schema).ok
    # a bypassed change to an id the trail has seen is caught from the trail alone
    from psycopg import sql

    env.admin.execute(sql.SQL("UPDATE {t} SET {l} = 'ham' WHERE {i} = 2").format(t=env.table, l=env.label,
                                                                                 i=env.id))
    _bypass_update(env, "evil", 2, how)
    report = verify_postgres(pg_dsn, env.name, schema=env.audit_schema)
    assert [(m["id"], m["kind"], m["expected"], m["actual"]) for m in report.trail_mismatches] == [
        ("2", "final_state", 'label "ham"', 'label "evil"')]
    res = cli("pg", "verify", pg_dsn, "--table", env.name)
    assert res.exit_code == 1 and "UNRECORDED CHANGES" in res.stdout and "evil" in res.stdout
    # a recorded change that does not start where the trail left off is a gap
    env.admin.execute(sql.SQL("UPDATE {t} SET {l} = 'spam' WHERE {i} = 2").format(t=env.table, l=env.label,
                                                                                  i=env.id))
    report = verify_postgres(pg_dsn, env.name, schema=env.audit_schema)
    kinds = [(m["id"], m["kind"], m["expected"], m["actual"]) for m in report.trail_mismatches]
    assert kinds == [("2", "gap", 'label "ham"', 'label "evil"')]
    assert status.trail == report.trail


def test_disabled_trigger_is_a_finding_and_protect_reenables_it_on_record(env, pg_dsn, cli):
    from psycopg import sql

    protect(pg_dsn, env.name, id=WEIRD_ID, label=WEIRD_LABEL, **env.audit)
    env.admin.execute(sql.SQL("ALTER TABLE {} DISABLE TRIGGER flipguard_audit_insert").format(env.table))
    res = cli("pg", "status", pg_dsn, "--table", env.name)
    assert res.exit_code == 1 and "disabled" in res.stdout
    assert "no trail registered" not in res.stdout
    wrong = cli("pg", "status", pg_dsn, "--table", env.name, "--audit-schema", "fg_not_the_audit_schema")
    assert wrong.exit_code == 1 and "protected:" in wrong.stdout
    assert ("flipguard triggers are installed but schema fg_not_the_audit_schema has no trail registered for this "
            "table: another --audit-schema") in " ".join(wrong.stdout.split())
    report = verify_postgres(pg_dsn, env.name, schema=env.audit_schema)
    assert report.problems == [f"table {env.name} is not protected: trigger(s) flipguard_audit_insert disabled"]
    again = protect(pg_dsn, env.name, id=WEIRD_ID, label=WEIRD_LABEL, **env.audit)
    assert again.protected and again.changed == ["re-enabled trigger flipguard_audit_insert (was disabled)"]
    report = verify_postgres(pg_dsn, env.name, schema=env.audit_schema)
    assert len(report.problems) == 1 and "re-enabled trigger(s) flipguard_audit_insert" in report.problems[0]


def test_edited_or_deleted_trail_rows_break_the_chain(env, pg_dsn, cli):
    from psycopg import sql

    status = protect(pg_dsn, env.name, id=WEIRD_ID, label=WEIRD_LABEL, **env.audit)
    for i in (1, 3, 5, 7):
        env.admin.execute(sql.SQL("UPDATE {t} SET {l} = 'spam' WHERE {i} = {r}").format(
            t=env.table, l=env.label, i=env.id, r=sql.Literal(i)))
    trail = _trail(env, status)
    anchor = protection_status(pg_dsn, env.name, schema=env.audit_schema)
    assert verify_postgres(pg_dsn, env.name, schema=env.audit_schema, anchor=f"{anchor.head_seq}:{anchor.head_hash}").ok
    c = env.admin
    c.execute(sql.SQL("ALTER TABLE {} DISABLE TRIGGER flipguard_append_only").format(trail))
    seqs = [r["seq"] for r in _rows(env, status, "op = 'UPDATE'")]
    # a superuser quietly rewrites who made change #2, and removes change #3
    c.execute(sql.SQL("UPDATE {} SET session_user_name = 'someone_else' WHERE seq = %s").format(trail), (seqs[1],))
    c.execute(sql.SQL("DELETE FROM {} WHERE seq = %s").format(trail), (seqs[2],))
    c.execute(sql.SQL("ALTER TABLE {} ENABLE ALWAYS TRIGGER flipguard_append_only").format(trail))
    report = verify_postgres(pg_dsn, env.name, schema=env.audit_schema)
    assert not report.chain_ok
    assert [(e["seq"], e["reason"].split(" (")[0]) for e in report.chain_errors] == [
        (seqs[1], "row content does not match its hash"),
        (seqs[3], "prev_hash does not match the previous row"),
        (seqs[2], "checkpoint row is missing"),  # the last row before the latest writer's transaction
    ]
    res = cli("pg", "verify", pg_dsn, "--table", env.name, "--json")
    assert res.exit_code == 1
    import json

    out = json.loads(res.stdout)
    assert out["ok"] is False and out["chain_ok"] is False and len(out["chain_errors"]) == 3


def test_rewritten_chain_is_caught_by_the_anchor(env, pg_dsn, cli):
    """A superuser who recomputes every hash leaves a consistent chain; an anchor kept elsewhere still differs."""
    import hashlib

    from psycopg import sql

    from flipguard.integrity._pg import _CANON_COLUMNS

    status = protect(pg_dsn, env.name, id=WEIRD_ID, label=WEIRD_LABEL, **env.audit)
    env.admin.execute(sql.SQL("UPDATE {t} SET {l} = 'spam' WHERE {i} = 1").format(t=env.table, l=env.label,
                                                                                 i=env.id))
    res = cli("pg", "status", pg_dsn, "--table", env.name, "--json")
    import json

    anchor = json.loads(res.stdout)["anchor"]
    trail = _trail(env, status)
    c = env.admin
    c.execute(sql.SQL("ALTER TABLE {} DISABLE TRIGGER flipguard_append_only").format(trail))
    c.execute(sql.SQL("UPDATE {} SET session_user_name = 'someone_else' WHERE op = 'UPDATE'").format(trail))
    prev = b"\x00" * 32
    for seq, content in c.execute(sql.SQL("SELECT seq, " + _CANON_COLUMNS + " FROM {} ORDER BY seq").format(
            trail)).fetchall():
        h = hashlib.sha256(prev + content.encode()).digest()
        c.execute(sql.SQL("UPDATE {} SET prev_hash = %s, row_hash = %s WHERE seq = %s").format(trail),
                  (prev, h, seq))
        prev = h
    c.execute(sql.SQL("UPDATE {} SET checkpoint_hash = NULL, checkpoint_seq = NULL").format(
        sql.Identifier(env.audit_schema, "protected")))
    assert verify_postgres(pg_dsn, env.name, schema=env.audit_schema).chain_ok  # internally consistent again...
    res = cli("pg", "verify", pg_dsn, "--table", env.name, "--anchor", anchor)
    assert res.exit_code == 1 and "anchor hash differs" in res.stdout  # ...but not with the anchor
    res = cli("pg", "verify", pg_dsn, "--table", env.name, "--anchor", "12:zz")
    assert res.exit_code == 2
    assert res.stderr == "Error: --anchor must be SEQ:SHA256HEX (from 'flipguard pg status'), got '12:zz'\n"


def test_truncate_is_recorded_and_replayed(env, pg_dsn):
    import psycopg
    from psycopg import sql

    status = protect(pg_dsn, env.name, id=WEIRD_ID, label=WEIRD_LABEL, **env.audit)
    env.admin.execute(sql.SQL("GRANT TRUNCATE ON {} TO {}").format(env.table, sql.Identifier(env.writer)))
    with psycopg.connect(env.writer_dsn, autocommit=True) as w:
        w.execute(sql.SQL("TRUNCATE {}").format(env.table))
        w.execute(sql.SQL("INSERT INTO {} VALUES (1, 'spam', 0), (2, 'ham', 0)").format(env.table))
    ops = [r["op"] for r in _rows(env, status)]
    assert ops == ["PROTECT", "TRUNCATE", "INSERT", "INSERT"]
    assert verify_postgres(pg_dsn, env.name, schema=env.audit_schema).ok
    # a row slipped in behind the trigger's back after the TRUNCATE
    with env.admin.transaction():
        env.admin.execute("SET LOCAL session_replication_role = replica")
        env.admin.execute(sql.SQL("INSERT INTO {} VALUES (3, 'spam', 0)").format(env.table))
    report = verify_postgres(pg_dsn, env.name, schema=env.audit_schema)
    assert [(m["id"], m["expected"]) for m in report.trail_mismatches] == [("3", "absent (table truncated)")]


def test_unprotect_keeps_the_trail_and_protect_continues_it(env, pg_dsn, cli):
    from psycopg import sql

    protect(pg_dsn, env.name, id=WEIRD_ID, label=WEIRD_LABEL, **env.audit)
    env.admin.execute(sql.SQL("UPDATE {t} SET {l} = 'spam' WHERE {i} = 1").format(t=env.table, l=env.label,
                                                                                 i=env.id))
    res = cli("pg", "unprotect", pg_dsn, "--table", env.name)
    assert res.exit_code == 0 and "Audit trail kept" in res.stdout
    st = protection_status(pg_dsn, env.name, schema=env.audit_schema)
    assert not st.protected and st.registered and st.triggers == {} and st.n_events == 3
    # changes while unprotected are not recorded, and verify says the table is not protected
    env.admin.execute(sql.SQL("UPDATE {t} SET {l} = 'zzz' WHERE {i} = 1").format(t=env.table, l=env.label,
                                                                                i=env.id))
    report = verify_postgres(pg_dsn, env.name, schema=env.audit_schema)
    assert not report.ok and report.chain_ok
    assert "not protected" in report.problems[0]
    again = protect(pg_dsn, env.name, id=WEIRD_ID, label=WEIRD_LABEL, **env.audit)
    assert again.protected and again.n_events == 4  # same chain, one new PROTECT row
    # a fresh protection starts a new baseline, but what changed while nothing recorded is named
    report = verify_postgres(pg_dsn, env.name, schema=env.audit_schema)
    assert not report.ok and any("unprotected from" in p for p in report.problems), report.problems
    res = cli("pg", "unprotect", pg_dsn, "--table", env.name, "--drop-trail", "--json")
    assert res.exit_code == 0
    import json

    out = json.loads(res.stdout)
    assert out["registered"] is False and "dropped trail" in out["changed"]
    left = env.admin.execute(
        "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = %s AND p.proname LIKE %s", (env.audit_schema, again.trail.split(".")[1] + "%",)).fetchone()
    assert left[0] == 0
    assert env.admin.execute("SELECT to_regclass(%s)", (again.trail,)).fetchone()[0] is None
    res = cli("pg", "unprotect", pg_dsn, "--table", env.name)
    assert res.exit_code == 0 and "was not protected" in res.stdout


def test_eight_concurrent_writers_keep_one_chain(env, pg_dsn):
    import psycopg
    from psycopg import sql

    protect(pg_dsn, env.name, id=WEIRD_ID, label=WEIRD_LABEL, **env.audit)
    errors = []

    def work(ids):
        try:
            with psycopg.connect(env.writer_dsn, autocommit=True) as w:
                for k in range(15):
                    for i in ids:
                        w.execute(sql.SQL("UPDATE {t} SET {l} = {v} WHERE {i} = {r}").format(
                            t=env.table, l=env.label, v=sql.Literal(f"v{k}"), i=env.id, r=sql.Literal(i)))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=([2 * k + 1, 2 * k + 2],)) for k in range(8)]  # 8 writers
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    report = verify_postgres(pg_dsn, env.name, schema=env.audit_schema)
    assert report.ok and report.n_events == 1 + 8 * 2 * 15  # nothing lost: one step per committed statement
    status = protection_status(pg_dsn, env.name, schema=env.audit_schema)
    from psycopg import sql as _sql

    n_rows = env.admin.execute(_sql.SQL("SELECT sum(n_rows) FROM {}").format(_trail(env, status))).fetchone()[0]
    assert n_rows == 8 * 2 * 15


def test_repeatable_read_writer_cannot_fork_the_chain(env, pg_dsn):
    import psycopg
    from psycopg import sql

    protect(pg_dsn, env.name, id=WEIRD_ID, label=WEIRD_LABEL, **env.audit)
    a = psycopg.connect(env.writer_dsn)
    a.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    try:
        a.execute("SELECT 1")  # snapshot taken
        env.admin.execute(sql.SQL("UPDATE {t} SET {l} = 'x' WHERE {i} = 1").format(t=env.table, l=env.label,
                                                                                  i=env.id))
        with pytest.raises(psycopg.errors.SerializationFailure):
            a.execute(sql.SQL("UPDATE {t} SET {l} = 'y' WHERE {i} = 2").format(t=env.table, l=env.label, i=env.id))
        a.rollback()
    finally:
        a.close()
    assert verify_postgres(pg_dsn, env.name, schema=env.audit_schema).ok


@pytest.fixture
def sealed(env, pg_dsn, tmp_path):
    """``env`` protected and sealed (through the generic seal, which reads PostgreSQL): (manifest, pubkey)."""
    from flipguard.integrity import seal, write_keypair

    protect(pg_dsn, env.name, id=WEIRD_ID, label=WEIRD_LABEL, **env.audit)
    keys = write_keypair(tmp_path / "keys")
    result = seal(pg_dsn, label=WEIRD_LABEL, id=WEIRD_ID, private_key=keys.private,
                  out=tmp_path / "table.seal.json", table=env.name)
    return result.manifest_path, keys.public


def test_pg_verify_clean_then_explains_recorded_changes(env, pg_dsn, sealed, cli):
    import json

    import psycopg
    from psycopg import sql

    manifest, pub = sealed
    res = cli("pg", "verify", pg_dsn, "--table", env.name, "--manifest", manifest, "--pubkey", pub)
    assert res.exit_code == 0, res.stdout + res.stderr
    assert "Seal: verified, no change" in res.stdout
    with psycopg.connect(env.writer_dsn, autocommit=True) as w:
        w.execute(sql.SQL("UPDATE {t} SET {l} = 'spam' WHERE {i} = 1").format(t=env.table, l=env.label, i=env.id))
        w.execute(sql.SQL("UPDATE {t} SET {l} = 'ham' WHERE {i} = 1").format(t=env.table, l=env.label, i=env.id))
        w.execute(sql.SQL("UPDATE {t} SET {l} = 'spam' WHERE {i} = 3").format(t=env.table, l=env.label, i=env.id))
        w.execute(sql.SQL("DELETE FROM {t} WHERE {i} = 5").format(t=env.table, i=env.id))
        w.execute(sql.SQL("INSERT INTO {t} VALUES (99, 'ham', 1)").format(t=env.table))
    report = verify_postgres(pg_dsn, env.name, manifest, pub, schema=env.audit_schema)
    assert report.seal_ok is False and report.unexplained == [] and not report.ok and report.ok_if_recorded
    got = sorted((c["id"], c["kind"], c["sealed"], c["current"], c["session_user"], c["application_name"])
                 for c in report.explained)
    assert got == [(3, "changed", "ham", "spam", env.writer, "labeling-ui"),
                   (5, "removed", "ham", None, env.writer, "labeling-ui"),
                   (99, "added", None, "ham", env.writer, "labeling-ui")]  # id 1 went back: no change
    res = cli("pg", "verify", pg_dsn, "--table", env.name, "--manifest", manifest, "--pubkey", pub, "--json")
    assert res.exit_code == 1
    out = json.loads(res.stdout)
    assert out["ok"] is False and out["ok_if_recorded"] is True and len(out["explained"]) == 3
    res = cli("pg", "verify", pg_dsn, "--table", env.name, "--manifest", manifest, "--pubkey", pub,
              "--allow-recorded")
    assert res.exit_code == 0 and env.writer in res.stdout


@pytest.mark.parametrize("how", ["disable", "replica"])
def test_pg_verify_reports_a_bypassed_change_loudly(env, pg_dsn, sealed, cli, how):
    manifest, pub = sealed
    _bypass_update(env, "spam", 1, how)  # a row the trail has never seen
    report = verify_postgres(pg_dsn, env.name, manifest, pub, schema=env.audit_schema)
    assert report.chain_ok and report.trail_mismatches == [] and report.explained == []
    assert [(c["id"], c["sealed"], c["current"]) for c in report.unexplained] == [(1, "ham", "spam")]
    assert report.unexplained[0]["explanation"] == ("no change to this row is recorded in the audit trail "
                                                    "(trigger bypassed)")
    res = cli("pg", "verify", pg_dsn, "--table", env.name, "--manifest", manifest, "--pubkey", pub,
              "--allow-recorded")
    assert res.exit_code == 1
    assert "UNEXPLAINED CHANGES" in res.stdout and "trigger bypassed" in res.stdout


def test_pg_verify_bad_inputs(env, pg_dsn, sealed, cli, tmp_path):
    from flipguard.integrity import write_keypair

    manifest, pub = sealed
    res = cli("pg", "verify", pg_dsn, "--table", env.name, "--manifest", manifest)
    assert res.exit_code == 2 and res.stderr == "Error: give --manifest and --pubkey together\n"
    res = cli("pg", "verify", pg_dsn, "--table", env.name, "--manifest", tmp_path / "nope.json", "--pubkey", pub)
    assert res.exit_code == 2 and res.stderr == f"Error: manifest {tmp_path / 'nope.json'}: no such file\n"
    other = write_keypair(tmp_path / "other")
    res = cli("pg", "verify", pg_dsn, "--table", env.name, "--manifest", manifest, "--pubkey", other.public)
    assert res.exit_code == 1 and "signature is not valid" in res.stdout


def test_pg_verify_refuses_a_seal_made_for_another_dataset(env, pg_dsn, tmp_path, cli):
    """Mix-and-match: a valid seal of another dataset is refused, as file ``verify`` refuses it."""
    from flipguard.integrity import seal, write_keypair

    protect(pg_dsn, env.name, id=WEIRD_ID, label=WEIRD_LABEL, **env.audit)
    keys = write_keypair(tmp_path / "keys")
    other = seal(pg_dsn, label=WEIRD_LABEL, id=WEIRD_ID, private_key=keys.private, name="public.other_table",
                 out=tmp_path / "other.seal.json", table=env.name)
    res = cli("pg", "verify", pg_dsn, "--table", env.name, "--manifest", other.manifest_path, "--pubkey", keys.public)
    assert res.exit_code == 1
    assert "seals dataset 'public.other_table'" in res.stdout
    res = cli("pg", "verify", pg_dsn, "--table", env.name, "--manifest", other.manifest_path, "--pubkey", keys.public,
              "--name", "public.other_table")
    assert res.exit_code == 0, res.stdout
