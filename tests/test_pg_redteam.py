"""Red team against the PostgreSQL audit trail, on the real server, with real roles.

Roles (created and dropped here, unique suffixes): a **non-superuser table
owner**, a **writer** with UPDATE only (plus SELECT to find rows), a read-only
**auditor** (``pg protect --reader``) who runs ``pg verify``, the ``NOLOGIN``
**audit role** that owns the trail, an **admin** that is a member of the audit
role but not a superuser (protects without the DDL guard), and the
**superuser** ``postgres``.  Every row of the PostgreSQL part of
``docs/threat-model.md`` is covered:

* ``PREVENTED``: what the owner, the writer and the auditor try against the
  trail, the triggers and the functions fails with ``insufficient_privilege``
  (the exact forging attack of issue 8 item 1 included), and leaves nothing;
* ``OWNER_NO_GUARD``: without the DDL guard the owner can switch the trigger
  off; every change made meanwhile is detected (seal, trail replay, trigger
  identity);
* ``SUPERUSER``: a superuser bypasses the trigger or rewrites history; the
  bypass is detected by the seal and the trail, the rewrite by the signed
  checkpoint;
* ``TEMPORARY``: labels flipped, committed and restored later are reported
  with their window;
* ``HARMLESS``: changes that must not alarm.

Verification runs as the auditor throughout.
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid

import pytest
from conftest import dsn_as as _dsn_as

from flipguard.integrity._pg import checkpoint, protect, protection_status, verify_postgres

pytestmark = pytest.mark.postgres

N_ROWS = 40



class Lab:
    """Roles, schemas, keys and connections shared by the module; tables made per scenario."""

    def __init__(self, dsn, tmp):
        import psycopg
        from psycopg import sql

        from flipguard.integrity import write_keypair

        self.sql = sql
        tag = uuid.uuid4().hex[:8]
        self.tag, self.dsn, self.tmp = tag, dsn, tmp
        self.owner, self.writer, self.auditor = f"fg_rt_owner_{tag}", f"fg_rt_writer_{tag}", f"fg_rt_aud_{tag}"
        self.admin, self.audit_role = f"fg_rt_admin_{tag}", f"fg_rt_auditrole_{tag}"
        self.data, self.trails, self.trails2 = f"fg_rt_data_{tag}", f"fg_rt_trails_{tag}", f"fg_rt_trails2_{tag}"
        self.su = psycopg.connect(dsn, autocommit=True)
        I = sql.Identifier  # noqa: E741, N806
        for role in (self.owner, self.writer, self.auditor, self.admin):
            self.su.execute(sql.SQL("CREATE ROLE {} LOGIN").format(I(role)))
        self.su.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(I(self.audit_role)))
        self.su.execute(sql.SQL("GRANT {} TO {}").format(I(self.audit_role), I(self.admin)))
        self.su.execute(sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(I(self.data), I(self.owner)))
        self.su.execute(sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(I(self.trails2), I(self.audit_role)))
        self.keys = write_keypair(tmp / "keys")
        self._conns = {}
        with self.connect(self.owner) as c:
            c.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}, {}, {}").format(
                I(self.data), I(self.writer), I(self.auditor), I(self.admin)))

    def connect(self, role, **extra):
        import psycopg

        return psycopg.connect(_dsn_as(self.dsn, role, **extra), autocommit=True)

    def conn(self, role):
        if role == "postgres":
            return self.su
        if role not in self._conns:
            self._conns[role] = self.connect(role)
        return self._conns[role]

    def dsn_of(self, role):
        return self.dsn if role == "postgres" else _dsn_as(self.dsn, role)

    def make_table(self, name, *, label_type="text", values=None, guard=True, seal=False):
        """A table owned by the owner, protected (by the superuser, or the admin without DDL guard)."""
        sql, I = self.sql, self.sql.Identifier  # noqa: E741, N806
        t = I(self.data, name)
        values = values or [("spam" if i % 2 else "ham") for i in range(1, N_ROWS + 1)]
        o = self.conn(self.owner)
        o.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, label {}, note text DEFAULT '', "
                          "score float8 DEFAULT 0)").format(t, sql.SQL(label_type)))
        with o.cursor() as cur:
            cur.executemany(sql.SQL("INSERT INTO {} (id, label) VALUES (%s, CAST(%s::text AS {}))").format(
                            t, sql.SQL(label_type)),
                            list(enumerate(values, 1)))
        o.execute(sql.SQL("GRANT SELECT, UPDATE ON {} TO {}").format(t, I(self.writer)))
        o.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(t, I(self.auditor)))
        full = f"{self.data}.{name}"
        schema = self.trails if guard else self.trails2
        if guard:
            st = protect(self.dsn, full, id="id", label="label", audit_role=self.audit_role, schema=schema,
                         readers=[self.auditor])
        else:
            o.execute(sql.SQL("GRANT TRIGGER ON {} TO {}").format(t, I(self.admin)))
            st = protect(self.dsn_of(self.admin), full, id="id", label="label", audit_role=self.audit_role,
                         schema=schema, readers=[self.auditor])
        assert st.protected and st.ddl_guard is guard
        tbl = Table(self, name, t, full, schema, st.trail)
        if seal:
            from flipguard.integrity import seal as do_seal

            res = do_seal(self.dsn, label="label", id="id", private_key=self.keys.private,
                          out=self.tmp / f"{name}.seal.json", table=full)
            tbl.manifest = res.manifest_path
        return tbl

    def close(self):
        sql, I = self.sql, self.sql.Identifier  # noqa: E741, N806
        for c in self._conns.values():
            with contextlib.suppress(Exception):
                c.close()
        su = self.su
        for schema in (self.data, self.trails, self.trails2):
            su.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(I(schema)))
        for role in (self.owner, self.writer, self.auditor, self.admin, self.audit_role):
            if su.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                su.execute(sql.SQL("DROP OWNED BY {}").format(I(role)))
                su.execute(sql.SQL("DROP ROLE {}").format(I(role)))
        su.close()


class Table:
    def __init__(self, lab, name, ident, full, schema, trail):
        self.lab, self.name, self.ident, self.full, self.schema = lab, name, ident, full, schema
        s, n = trail.split(".", 1)
        self.trail = lab.sql.Identifier(s, n)
        self.manifest = None
        self.checkpoints = lab.tmp / f"{name}.checkpoints"

    def run(self, role, stmt, params=None):
        """Run ``stmt`` ({t} = the table, {trail} = its trail) as ``role`` (autocommit)."""
        sql = self.lab.sql
        return self.lab.conn(role).execute(sql.SQL(stmt).format(t=self.ident, trail=self.trail), params)

    def label_of(self, i):
        return self.run("postgres", "SELECT label::text FROM {t} WHERE id = %s", (i,)).fetchone()[0]

    def checkpoint(self):
        res = checkpoint(self.lab.dsn_of(self.lab.auditor), self.full, self.lab.keys.private,
                         out=self.checkpoints, schema=self.schema)
        assert res.written, res.problems
        return res

    def verify(self, *, seal=True, checkpoints=True):
        kw = {}
        if seal and self.manifest is not None:
            kw.update(manifest=self.manifest, public_key=self.lab.keys.public)
        if checkpoints and self.checkpoints.exists():
            kw.update(checkpoints=self.checkpoints, public_key=self.lab.keys.public)
        return verify_postgres(self.lab.dsn_of(self.lab.auditor), self.full, schema=self.schema, **kw)


@pytest.fixture(scope="module")
def lab(pg_dsn, tmp_path_factory):
    lab = Lab(pg_dsn, tmp_path_factory.mktemp("redteam"))
    try:
        yield lab
    finally:
        lab.close()


# =========================================================================== PREVENTED
# (role, statement) pairs an attacker tries; each must fail with insufficient_privilege and change nothing.
_TRAIL_WRITES = [
    "INSERT INTO {trail} SELECT * FROM {trail}",
    "INSERT INTO {trail} (seq, op, n_rows, session_user_name, current_user_name, txid, logged_at, prev_hash, "
    "row_hash) VALUES (999, 'UPDATE', 0, 'x', 'x', 1, now(), '\\x00', '\\x00')",
    "UPDATE {trail} SET session_user_name = 'innocent'",
    "UPDATE {trail} SET new_labels = '{{ham}}'",
    "DELETE FROM {trail}",
    "DELETE FROM {trail} WHERE seq = (SELECT max(seq) FROM {trail})",
    "TRUNCATE {trail}",
    "ALTER TABLE {trail} DISABLE TRIGGER flipguard_append_only",
    "ALTER TABLE {trail} DISABLE TRIGGER ALL",
    "DROP TABLE {trail}",
    "GRANT UPDATE ON {trail} TO CURRENT_USER",
    "SELECT nextval('{trail_seq}')",
]
_OWNER_DDL = [
    "ALTER TABLE {t} DISABLE TRIGGER flipguard_audit_update",
    "ALTER TABLE {t} DISABLE TRIGGER flipguard_audit_insert",
    "ALTER TABLE {t} DISABLE TRIGGER flipguard_audit_delete",
    "ALTER TABLE {t} DISABLE TRIGGER flipguard_audit_truncate",
    "ALTER TABLE {t} DISABLE TRIGGER USER",
    "ALTER TABLE {t} DISABLE TRIGGER ALL",
    "ALTER TABLE {t} ENABLE REPLICA TRIGGER flipguard_audit_update",
    "ALTER TABLE {t} ENABLE ALWAYS TRIGGER flipguard_audit_update",
    "DROP TRIGGER flipguard_audit_update ON {t}",
    "DROP TRIGGER flipguard_audit_insert ON {t}",
    "DROP TRIGGER flipguard_audit_delete ON {t}",
    "DROP TRIGGER flipguard_audit_truncate ON {t}",
    "ALTER TRIGGER flipguard_audit_update ON {t} RENAME TO innocent",
    "ALTER TABLE {t} RENAME TO renamed",
    "ALTER TABLE {t} RENAME COLUMN label TO label_old",
    "ALTER TABLE {t} RENAME COLUMN id TO id_old",
    "ALTER TABLE {t} ALTER COLUMN label TYPE varchar(10)",
    "ALTER TABLE {t} DROP COLUMN label",
    "DROP TABLE {t}",
    # the exact forging attack of issue 8, item 1: it dies at its first statement
    "ALTER TABLE {t} DISABLE TRIGGER flipguard_audit_update; UPDATE {t} SET label = 'evil' WHERE id = 7; "
    "ALTER TABLE {t} ENABLE TRIGGER flipguard_audit_update; INSERT INTO {trail} SELECT * FROM {trail} LIMIT 1",
    "SET session_replication_role = replica",
    "DROP SCHEMA {trail_schema} CASCADE",
    "CREATE OR REPLACE FUNCTION {trail_fn}() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NULL; END'",
    "DROP FUNCTION {trail_fn}()",
    "ALTER FUNCTION {trail_fn}() OWNER TO CURRENT_USER",
    "SELECT {trail_schema}.{append_fn}('PROTECT', NULL)",
    "UPDATE {trail_schema}.protected SET active = false",
    "UPDATE {trail_schema}.protected SET identity = NULL",
    "UPDATE {trail_schema}.protected SET checkpoint_seq = NULL, checkpoint_hash = NULL",
    "SET ROLE {audit_role}",
    "DROP EVENT TRIGGER {guard}",
    "ALTER EVENT TRIGGER {guard} DISABLE",
]
_WRITER_EXTRA = [
    "TRUNCATE {t}",
    "DELETE FROM {t} WHERE id = 3",
    "INSERT INTO {t} (id, label) VALUES (1000, 'evil')",
    "CREATE TRIGGER flipguard_audit_zz AFTER UPDATE ON {t} FOR EACH STATEMENT EXECUTE FUNCTION {trail_fn}()",
]
PREVENTED = ([("owner", s) for s in _TRAIL_WRITES + _OWNER_DDL]
             + [("writer", s) for s in _TRAIL_WRITES + _OWNER_DDL + _WRITER_EXTRA]
             + [("auditor", s) for s in _TRAIL_WRITES[:8]])


@pytest.fixture(scope="module")
def fortress(lab):
    """One table protected by the superuser (DDL guard on), a recorded change, sealed and checkpointed."""
    tbl = lab.make_table("fortress", seal=True)
    tbl.run(lab.writer, "UPDATE {t} SET label = 'spam' WHERE id = 2")
    tbl.checkpoint()
    return tbl


@pytest.mark.parametrize(("who", "stmt"), PREVENTED, ids=[f"{w}:{s[:60]}" for w, s in PREVENTED])
def test_prevented(lab, fortress, who, stmt):
    import psycopg

    from flipguard.integrity._pg import guard_trigger_name

    role = {"owner": lab.owner, "writer": lab.writer, "auditor": lab.auditor}[who]
    sql = lab.sql
    schema, trail = fortress.trail.as_string(lab.su).split(".")
    text = (stmt.replace("{trail_schema}", schema).replace("{trail_fn}", f"{schema}.{trail[:-1]}_log\"")
            .replace("{append_fn}", f"{trail[:-1]}_append\"").replace("{audit_role}", lab.audit_role)
            .replace("{guard}", guard_trigger_name(fortress.schema))
            .replace("{trail_seq}", f"{schema}.{trail[:-1]}_seq\""))
    before = fortress.run("postgres", "SELECT count(*), max(seq) FROM {trail}").fetchone()
    conn = lab.conn(role)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        with conn.transaction(force_rollback=True):  # were it to succeed, nothing would stay
            conn.execute(sql.SQL(text).format(t=fortress.ident, trail=fortress.trail))
    assert fortress.run("postgres", "SELECT count(*), max(seq) FROM {trail}").fetchone() == before
    assert fortress.label_of(7) == "spam" and fortress.label_of(2) == "spam"


def test_prevented_left_everything_intact(lab, fortress):
    """After every attempt above (in any order), the fortress verifies clean apart from its one recorded change."""
    st = protection_status(lab.dsn_of(lab.auditor), fortress.full, schema=fortress.schema)
    assert st.protected and st.identity_ok and st.ddl_guard
    report = fortress.verify()
    assert report.ok_if_recorded, report.to_dict()
    assert report.chain_ok and report.checkpoints_checked == 1 and not report.problems
    assert [(c["id"], c["sealed"], c["current"], c["session_user"]) for c in report.explained] == [
        (2, "ham", "spam", lab.writer)]


def test_owner_cannot_forge_attribution(lab, fortress):
    """The owner may change labels, but the trail names the owner, whatever application_name claims."""
    with lab.connect(lab.owner, application_name="labeling-ui") as o:
        o.execute(lab.sql.SQL("UPDATE {} SET label = 'spam' WHERE id = 4").format(fortress.ident))
        try:
            report = fortress.verify()
            (row,) = [c for c in report.explained if c["id"] == 4]
            assert row["session_user"] == lab.owner and row["current_user"] == lab.owner
        finally:
            o.execute(lab.sql.SQL("UPDATE {} SET label = 'ham' WHERE id = 4").format(fortress.ident))


def test_owner_harmless_ddl_is_allowed(lab, fortress):
    """The guard stops only what touches the audit triggers or watched columns."""
    fortress.run(lab.owner, "CREATE INDEX ON {t} (note)")
    fortress.run(lab.owner, "ALTER TABLE {t} ADD COLUMN extra int")
    fortress.run(lab.owner, "ALTER TABLE {t} ALTER COLUMN note SET DEFAULT 'x'")
    fortress.run(lab.owner, "ALTER TABLE {t} DROP COLUMN extra")
    fortress.run(lab.owner, "ANALYZE {t}")
    assert protection_status(lab.dsn, fortress.full, schema=fortress.schema).identity_ok


# =========================================================================== bypass: detected
# Change kinds applied to distinct ids behind the trigger's back; each must be reported.
KINDS = {
    # kind: (statement, id whose change must be reported, how it must show)
    "flip_unseen": ("UPDATE {t} SET label = 'evil' WHERE id = 11", 11),
    "flip_seen": ("UPDATE {t} SET label = 'evil' WHERE id = 12", 12),
    "to_null": ("UPDATE {t} SET label = NULL WHERE id = 13", 13),
    "to_empty": ("UPDATE {t} SET label = '' WHERE id = 14", 14),
    "swap_to_other_class": ("UPDATE {t} SET label = CASE WHEN label = 'ham' THEN 'spam' ELSE 'ham' END "
                            "WHERE id = 15", 15),
    "delete": ("DELETE FROM {t} WHERE id = 16", 16),
    "insert": ("INSERT INTO {t} (id, label) VALUES (1016, 'spam')", 1016),
    "change_id": ("UPDATE {t} SET id = 1017 WHERE id = 17", 17),
    "trailing_space": ("UPDATE {t} SET label = label || ' ' WHERE id = 18", 18),
    "case_change": ("UPDATE {t} SET label = upper(label) WHERE id = 19", 19),
}
SEEN = (12,)  # ids changed legitimately (recorded) before the bypass


def _bypass(tbl, how, statements):
    """Apply ``statements`` with the trail switched off ``how``; return what the attacker's session did."""
    lab = tbl.lab
    if how == "owner_disable":  # owner, table protected without the DDL guard
        for s in statements:
            tbl.run(lab.owner, "ALTER TABLE {t} DISABLE TRIGGER USER; " + s + "; ALTER TABLE {t} ENABLE TRIGGER USER")
    elif how == "owner_replica_trigger":
        for s in statements:
            tbl.run(lab.owner, "ALTER TABLE {t} ENABLE REPLICA TRIGGER flipguard_audit_update; "
                               "ALTER TABLE {t} ENABLE REPLICA TRIGGER flipguard_audit_insert; "
                               "ALTER TABLE {t} ENABLE REPLICA TRIGGER flipguard_audit_delete; " + s + "; "
                               "ALTER TABLE {t} ENABLE TRIGGER USER")
    elif how == "superuser_disable":
        for s in statements:
            tbl.run("postgres", "ALTER TABLE {t} DISABLE TRIGGER USER; " + s + "; ALTER TABLE {t} ENABLE TRIGGER USER")
    elif how == "superuser_replica":
        su = lab.su
        with su.transaction():
            su.execute("SET LOCAL session_replication_role = replica")
            for s in statements:
                su.execute(lab.sql.SQL(s).format(t=tbl.ident, trail=tbl.trail))
    elif how == "superuser_drop_recreate":
        # drop the triggers, change, recreate identical triggers by hand
        defs = dict(tbl.run("postgres", "SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = "
                                        "%s::regclass AND tgname LIKE 'flipguard%%'",
                            (tbl.ident.as_string(lab.su),)).fetchall())
        for name in defs:
            tbl.run("postgres", f'DROP TRIGGER "{name}" ON {{t}}')
        for s in statements:
            tbl.run("postgres", s)
        for d in defs.values():
            lab.su.execute(d)
    elif how == "owner_drop_then_protect":  # no guard: owner drops, changes, the admin re-protects
        for name in ("flipguard_audit_update", "flipguard_audit_insert", "flipguard_audit_delete"):
            tbl.run(lab.owner, f'DROP TRIGGER "{name}" ON {{t}}')
        for s in statements:
            tbl.run(lab.owner, s)
        protect(lab.dsn_of(lab.admin), tbl.full, id="id", label="label", audit_role=lab.audit_role,
                schema=tbl.schema)
    else:  # pragma: no cover
        raise AssertionError(how)


BYPASSES = ["owner_disable", "owner_replica_trigger", "owner_drop_then_protect", "superuser_disable",
            "superuser_replica", "superuser_drop_recreate"]


@pytest.fixture(scope="module")
def bypassed(lab):
    """For each way of switching the trail off, a sealed and checkpointed table with every KIND applied."""
    out = {}
    for how in BYPASSES:
        tbl = lab.make_table(f"bypass_{how}", guard=how.startswith("superuser"), seal=True)
        for i in SEEN:
            tbl.run(lab.writer, f"UPDATE {{t}} SET label = 'spam' WHERE id = {i}")
        tbl.checkpoint()
        _bypass(tbl, how, [s for s, _ in KINDS.values()])
        out[how] = (tbl, tbl.verify())
    return out


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("how", BYPASSES)
def test_bypassed_change_is_detected(lab, bypassed, how, kind):
    tbl, report = bypassed[how]
    rid = KINDS[kind][1]
    assert not report.ok and not report.ok_if_recorded
    unexplained = {c["id"] for c in report.unexplained}
    assert rid in unexplained, (kind, report.to_dict())
    assert all(c["id"] not in unexplained for c in report.explained)
    if kind == "flip_seen":  # visible from the trail alone, without the seal
        ids = {m["id"] for m in tbl.verify(seal=False).trail_mismatches}
        assert str(rid) in ids


@pytest.mark.parametrize("how", BYPASSES)
def test_bypass_leaves_a_table_level_finding_when_it_can(lab, bypassed, how):
    """Dropped and recreated triggers are a finding on their own (identity or PROTECT record)."""
    tbl, report = bypassed[how]
    text = " ".join(report.problems)
    if how == "superuser_drop_recreate":
        assert "dropped and recreated" in text
    elif how == "owner_drop_then_protect":
        assert ("recreated dropped trigger(s) flipguard_audit_insert, flipguard_audit_update, "
                "flipguard_audit_delete") in text
    else:  # switched off and on again: only the data shows it (above); the trail itself is intact
        assert report.chain_ok


# =========================================================================== superuser rewrites history
def _rechain(tbl):
    """Recompute every hash of the trail as a superuser would after editing it (guards disabled)."""
    from flipguard.integrity._pg import _CANON_COLUMNS, GENESIS

    su, sql = tbl.lab.su, tbl.lab.sql
    prev = GENESIS
    for seq, content in su.execute(sql.SQL("SELECT seq, " + _CANON_COLUMNS + " FROM {} ORDER BY seq").format(
            tbl.trail)).fetchall():
        h = hashlib.sha256(prev + content.encode()).digest()
        su.execute(sql.SQL("UPDATE {} SET prev_hash = %s, row_hash = %s WHERE seq = %s").format(tbl.trail),
                   (prev, h, seq))
        prev = h


_REARM = ("ALTER TABLE {trail} ENABLE ALWAYS TRIGGER flipguard_append_only; "
          "ALTER TABLE {trail} ENABLE ALWAYS TRIGGER flipguard_no_truncate")

REWRITES = {
    "reattribute": "UPDATE {trail} SET session_user_name = 'innocent', current_user_name = 'innocent' "
                   "WHERE op = 'UPDATE'",
    "change_recorded_label": "UPDATE {trail} SET new_labels = array_fill('ham'::text, ARRAY[n_rows]) "
                             "WHERE op = 'UPDATE'",
    "delete_step": "DELETE FROM {trail} WHERE seq = (SELECT min(seq) FROM {trail} WHERE op = 'UPDATE')",
    # issue 8 item 1 as a superuser: a forged step blaming an innocent writer, slipped in before the head
    "forge_step_item1": "UPDATE {trail} SET seq = seq + 100 WHERE op <> 'PROTECT'; "
                        "INSERT INTO {trail} SELECT seq - 100, op, n_rows, old_ids, new_ids, old_labels, "
                        "array_fill('evil'::text, ARRAY[n_rows]), 'innocent', 'innocent', application_name, "
                        "client_addr, txid, logged_at, detail, prev_hash, row_hash FROM {trail} "
                        "WHERE op = 'UPDATE' ORDER BY seq LIMIT 1",
    "renumber": "UPDATE {trail} SET seq = seq + 5 WHERE op <> 'PROTECT'",
    "truncate_and_rebuild": "CREATE TEMP TABLE keep AS SELECT * FROM {trail} WHERE op = 'PROTECT'; TRUNCATE {trail}; "
                            "INSERT INTO {trail} SELECT * FROM keep; DROP TABLE keep",
    "shift_time": "UPDATE {trail} SET logged_at = logged_at - interval '1 day' WHERE op = 'UPDATE'",
    "drop_txid": "UPDATE {trail} SET txid = 1 WHERE op = 'UPDATE'",
}


@pytest.fixture(scope="module")
def rewritten(lab):
    out = {}
    for name, stmt in REWRITES.items():
        tbl = lab.make_table(f"rewrite_{name}")
        tbl.run(lab.writer, "UPDATE {t} SET label = 'spam' WHERE id IN (2, 4)")
        tbl.run(lab.writer, "UPDATE {t} SET label = 'ham' WHERE id = 1")
        tbl.checkpoint()
        su = lab.su
        tbl.run("postgres", "ALTER TABLE {trail} DISABLE TRIGGER USER")
        for s in stmt.split("; "):
            su.execute(lab.sql.SQL(s).format(trail=tbl.trail))
        _rechain(tbl)
        schema = lab.sql.Identifier(tbl.schema, "protected")
        su.execute(lab.sql.SQL("UPDATE {} SET checkpoint_seq = NULL, checkpoint_hash = NULL").format(schema))
        tbl.run("postgres", _REARM)
        out[name] = (tbl.verify(checkpoints=False, seal=False), tbl.verify(seal=False))
    return out


@pytest.mark.parametrize("name", sorted(REWRITES))
def test_superuser_rewrite_is_caught_by_the_signed_checkpoint(rewritten, name):
    inside, with_checkpoint = rewritten[name]
    assert inside.chain_ok  # the recomputed chain is consistent on its own...
    assert not with_checkpoint.chain_ok and not with_checkpoint.ok  # ...but not with the signed checkpoint
    assert any("checkpoint 1" in e["reason"] for e in with_checkpoint.chain_errors)


def test_superuser_replaces_trigger_function_and_fixes_registry(lab):
    """A replaced function body with the registry's identity rewritten to match: the checkpoint still knows."""
    from psycopg.types.json import Jsonb

    from flipguard.integrity._pg import _identity, _Names, _registry_row

    tbl = lab.make_table("replace_fn")
    tbl.checkpoint()
    fn = tbl.trail.as_string(lab.su)[:-1] + '_log"'
    src = lab.su.execute(f"SELECT prosrc FROM pg_proc WHERE oid = '{fn}()'::regprocedure").fetchone()[0]
    lab.su.execute(lab.sql.SQL("CREATE OR REPLACE FUNCTION " + fn + "() RETURNS trigger LANGUAGE plpgsql "
                               "SECURITY DEFINER AS {}").format(lab.sql.Literal(
                                   src.replace("BEGIN", "BEGIN IF TG_OP = 'UPDATE' THEN RETURN NULL; END IF;", 1))))
    from flipguard.data._postgres import resolve_table

    ref = resolve_table(lab.su, tbl.full)
    reg = _registry_row(lab.su, ref, tbl.schema)
    n = _Names(lab.su, ref, reg["trail"], "id", "label", tbl.schema)
    lab.su.execute(lab.sql.SQL("UPDATE {} SET identity = %s").format(lab.sql.Identifier(tbl.schema, "protected")),
                   (Jsonb(_identity(lab.su, n, reg)),))
    tbl.run(lab.writer, "UPDATE {t} SET label = 'evil' WHERE id = 5")  # now unrecorded
    assert protection_status(lab.dsn, tbl.full, schema=tbl.schema).identity_ok  # the registry was fixed...
    report = tbl.verify()
    assert not report.ok_if_recorded
    assert any("changed since signed checkpoint 1" in p and "trigger function replaced" in p
               for p in report.problems), report.problems


def test_checkpoint_refuses_to_sign_a_rewritten_trail(lab, tmp_path, cli):
    tbl = lab.make_table("resign")
    tbl.run(lab.writer, "UPDATE {t} SET label = 'spam' WHERE id = 2")
    tbl.checkpoint()
    tbl.run("postgres", "ALTER TABLE {trail} DISABLE TRIGGER USER")
    tbl.run("postgres", "UPDATE {trail} SET session_user_name = 'innocent' WHERE op = 'UPDATE'")
    _rechain(tbl)
    tbl.run("postgres", _REARM)
    before = tbl.checkpoints.read_bytes()
    res = cli("pg", "checkpoint", lab.dsn_of(lab.auditor), "--table", tbl.full, "--key", lab.keys.private,
              "--out", tbl.checkpoints, "--audit-schema", tbl.schema)
    assert res.exit_code == 1 and "NOT SIGNED" in res.stdout and "checkpoint 1" in res.stdout
    assert tbl.checkpoints.read_bytes() == before


# =========================================================================== temporary poisoning
TEMPORARY = {
    # name: (list of (role, statement) each its own transaction, id, restored label, interim label)
    "writer_flip_revert": ([("writer", "UPDATE {t} SET label = 'spam' WHERE id = 2"),
                            ("writer", "UPDATE {t} SET label = 'ham' WHERE id = 2")], 2, "ham", "spam"),
    "owner_flip_revert": ([("owner", "UPDATE {t} SET label = 'ham' WHERE id = 3"),
                           ("owner", "UPDATE {t} SET label = 'spam' WHERE id = 3")], 3, "spam", "ham"),
    "two_people": ([("writer", "UPDATE {t} SET label = 'ham' WHERE id = 5"),
                    ("owner", "UPDATE {t} SET label = 'spam' WHERE id = 5")], 5, "spam", "ham"),
    "three_hops": ([("writer", "UPDATE {t} SET label = 'x' WHERE id = 6"),
                    ("writer", "UPDATE {t} SET label = 'y' WHERE id = 6"),
                    ("writer", "UPDATE {t} SET label = 'ham' WHERE id = 6")], 6, "ham", "x"),
    "to_null_and_back": ([("writer", "UPDATE {t} SET label = NULL WHERE id = 8"),
                          ("writer", "UPDATE {t} SET label = 'ham' WHERE id = 8")], 8, "ham", None),
    "in_a_batch": ([("writer", "UPDATE {t} SET label = 'spam' WHERE id BETWEEN 20 AND 24"),
                    ("writer", "UPDATE {t} SET label = 'ham' WHERE id = 22")], 22, "ham", "spam"),
    "delete_reinsert": ([("owner", "DELETE FROM {t} WHERE id = 9"),
                         ("owner", "INSERT INTO {t} (id, label) VALUES (9, 'spam')")], 9, "spam", "absent"),
    "case_only": ([("writer", "UPDATE {t} SET label = 'HAM' WHERE id = 10"),
                   ("writer", "UPDATE {t} SET label = 'ham' WHERE id = 10")], 10, "ham", "HAM"),
}


@pytest.fixture(scope="module")
def temporary(lab):
    tbl = lab.make_table("temporary", seal=True)
    role = {"writer": lab.writer, "owner": lab.owner}
    for steps, *_ in TEMPORARY.values():
        for who, stmt in steps:
            tbl.run(role[who], stmt)
    return tbl, tbl.verify()


@pytest.mark.parametrize("name", sorted(TEMPORARY))
def test_temporary_poisoning_is_reported_with_its_window(temporary, name):
    _tbl, report = temporary
    _steps, rid, restored, interim = TEMPORARY[name]
    hits = [m for m in report.temporary_changes if m["id"] == str(rid)]
    assert hits, report.temporary_changes
    m = hits[0]
    assert m["restored"] == f'label "{restored}"'
    assert m["interim"] == ("absent" if interim == "absent" else "label <missing>" if interim is None
                            else f'label "{interim}"')
    assert m["from"] <= m["to"] and m["from_txid"] < m["to_txid"] and m["seconds"] >= 0
    assert not report.ok and report.ok_if_recorded  # recorded: accepted with --allow-recorded only


def test_temporary_poisoning_cli(lab, temporary, cli):
    tbl, _ = temporary
    res = cli("pg", "verify", lab.dsn_of(lab.auditor), "--table", tbl.full, "--audit-schema", tbl.schema)
    assert res.exit_code == 1 and "TEMPORARY CHANGES" in res.stdout and 'id "2" was label "spam"' in res.stdout
    res = cli("pg", "verify", lab.dsn_of(lab.auditor), "--table", tbl.full, "--audit-schema", tbl.schema,
              "--allow-recorded")
    assert res.exit_code == 0


# =========================================================================== harmless: no alarm
HARMLESS = {
    "revert_in_one_transaction": "UPDATE {t} SET label = 'evil' WHERE id = 2; UPDATE {t} SET label = 'ham' "
                                 "WHERE id = 2",
    "same_value": "UPDATE {t} SET label = label",
    "non_label_column": "UPDATE {t} SET note = 'checked', score = score + 1",
    "id_to_itself": "UPDATE {t} SET id = id WHERE id < 10",
    "no_rows": "UPDATE {t} SET label = 'evil' WHERE false",
    "insert_delete_in_one_transaction": "INSERT INTO {t} (id, label) VALUES (5000, 'evil'); "
                                        "DELETE FROM {t} WHERE id = 5000",
    "swap_and_back_in_one_transaction": "UPDATE {t} SET label = CASE label WHEN 'ham' THEN 'spam' ELSE 'ham' END; "
                                        "UPDATE {t} SET label = CASE label WHEN 'ham' THEN 'spam' ELSE 'ham' END",
    "select_for_update": "SELECT * FROM {t} FOR UPDATE",
    "datestyle_and_timezone": "SET DateStyle = 'SQL, DMY'; SET TimeZone = 'Asia/Kathmandu'; "
                              "UPDATE {t} SET note = now()::text",
    "float_digits_session": "SET extra_float_digits = -15; UPDATE {t} SET score = 0.123456789",
    "owner_adds_index": "CREATE INDEX ON {t} (score)",
    "vacuum_analyze": "ANALYZE {t}",
}


@pytest.fixture(scope="module")
def calm(lab):
    tbl = lab.make_table("calm", seal=True)
    tbl.checkpoint()
    return tbl


@pytest.mark.parametrize("name", list(HARMLESS))
def test_harmless_change_does_not_alarm(lab, calm, name):
    conn = lab.connect(lab.owner)
    try:
        with conn.transaction():
            for s in HARMLESS[name].split("; "):
                conn.execute(lab.sql.SQL(s).format(t=calm.ident))
    finally:
        conn.close()
    report = calm.verify()
    assert report.ok, report.to_dict()


TYPED = {
    # label type: (initial labels, statements run by the writer with odd session settings, then the same
    # labels written back exactly)
    "float8": (["0.123456789", "1e-300", "-0.5", "3.141592653589793"],
               "SET extra_float_digits = -15; UPDATE {t} SET label = label * 1"),
    "float4": (["0.1", "16777216", "-2.5"], "SET extra_float_digits = 0; UPDATE {t} SET label = label + 0"),
    "numeric(12,4)": (["1.5000", "2.0001", "-3.0000"], "UPDATE {t} SET label = label + 0"),
    "int2": (["1", "2", "32000"], "UPDATE {t} SET label = label::int8"),
    "bool": (["true", "false", "true"], "UPDATE {t} SET label = label::text::boolean"),
    "date": (["2024-01-31", "1999-12-31", "2000-02-29"],
             "SET DateStyle = 'SQL, DMY'; SET TimeZone = 'Pacific/Chatham'; UPDATE {t} SET label = label + 0"),
    "timestamptz": (["2024-01-31 10:00:00+00", "1999-12-31 23:59:59.999999+00"],
                    "SET TimeZone = 'America/St_Johns'; SET DateStyle = 'German'; UPDATE {t} SET label = label"),
}


@pytest.mark.parametrize("label_type", list(TYPED))
def test_typed_labels_recorded_canonically(lab, label_type):
    """Writers' session settings change neither what is recorded nor the verdict (issue 8, item 11)."""
    values, stmt = TYPED[label_type]
    safe = label_type.split("(")[0]
    tbl = lab.make_table(f"typed_{safe}", label_type=label_type, values=values)
    conn = lab.connect(lab.writer)
    try:
        with conn.transaction():
            for s in stmt.split("; "):
                conn.execute(lab.sql.SQL(s).format(t=tbl.ident))
        # a real change, recorded under the writer's odd settings, must match the table exactly
        with conn.transaction():
            for s in stmt.split("; ")[:-1]:
                conn.execute(s)
            conn.execute(lab.sql.SQL("UPDATE {t} SET label = (SELECT label FROM {t} WHERE id = 2) "
                                     "WHERE id = 1").format(t=tbl.ident))
    finally:
        conn.close()
    report = tbl.verify()
    assert report.ok, report.to_dict()
    recorded = tbl.run("postgres", "SELECT new_labels FROM {trail} WHERE op = 'UPDATE'").fetchall()
    assert len(recorded) == 1
    truth = lab.conn(lab.auditor)
    truth.execute("SET extra_float_digits = 3; SET DateStyle = 'ISO, YMD'; SET TimeZone = 'UTC'")
    expected = truth.execute(lab.sql.SQL("SELECT label::text FROM {} WHERE id = 1").format(tbl.ident)).fetchone()[0]
    assert recorded[0][0] == [expected]


def test_a_bypassed_float_change_below_display_precision_is_detected(lab):
    """0.123456789 -> 0.1234567891 differs only beyond 15 digits: still a change, still caught."""
    tbl = lab.make_table("float_bypass", label_type="float8", values=["0.123456789"] * 3)
    tbl.run(lab.writer, "UPDATE {t} SET label = 0.5 WHERE id = 1")
    with lab.su.transaction():
        lab.su.execute("SET LOCAL session_replication_role = replica")
        lab.su.execute(lab.sql.SQL("UPDATE {} SET label = 0.50000000000000011 WHERE id = 1").format(tbl.ident))
    report = tbl.verify()
    assert [m["id"] for m in report.trail_mismatches] == ["1"]


# =========================================================================== bad input: exit 2, one line, nothing left
def test_checkpoint_and_verify_bad_inputs(lab, fortress, cli, tmp_path):
    import os

    from flipguard.integrity import write_keypair

    dsn, t, s = lab.dsn_of(lab.auditor), fortress.full, fortress.schema
    good = fortress.checkpoints.read_bytes()
    deep = tmp_path / "deep.checkpoints"
    deep.write_text("[" * 100_000 + "]" * 100_000 + "\n")
    edited = tmp_path / "edited.checkpoints"
    edited.write_bytes(good.replace(b'"head_seq":', b'"head_seq":1', 1))
    garbage = tmp_path / "garbage.checkpoints"
    garbage.write_bytes(b"\xff\xfe not json\n")
    fifo = tmp_path / "fifo.checkpoints"
    os.mkfifo(fifo)
    link = tmp_path / "link.checkpoints"
    link.symlink_to(fortress.checkpoints)
    empty = tmp_path / "empty.checkpoints"  # truncated by whoever can write where checkpoints are kept
    empty.write_bytes(b"")
    other = write_keypair(tmp_path / "other")
    pub = lab.keys.public
    cases = {
        "no pubkey": (["--checkpoint", fortress.checkpoints], "Error: give --checkpoint and --pubkey together"),
        "deep json": (["--checkpoint", deep, "--pubkey", pub], f"Error: checkpoint file {deep} line 1: not a JSON"),
        "edited": (["--checkpoint", edited, "--pubkey", pub], f"Error: checkpoint file {edited} line 1: the "
                                                              "signature is not valid"),
        "garbage": (["--checkpoint", garbage, "--pubkey", pub], f"Error: checkpoint file {garbage}: not UTF-8"),
        "fifo": (["--checkpoint", fifo, "--pubkey", pub], f"Error: checkpoint file {fifo}: is a FIFO"),
        "symlink": (["--checkpoint", link, "--pubkey", pub], f"Error: checkpoint file {link}: is a symbolic link"),
        "other key": (["--checkpoint", fortress.checkpoints, "--pubkey", other.public],
                      f"Error: checkpoint file {fortress.checkpoints} line 1: the signature is not valid"),
        "empty": (["--checkpoint", empty, "--pubkey", pub],
                  f"Error: checkpoint file {empty} holds no checkpoint (empty or truncated)"),
        "missing": (["--checkpoint", tmp_path / "nope", "--pubkey", pub],
                    f"Error: checkpoint file {tmp_path / 'nope'}: no such file"),
        "bad schema": (["--audit-schema", ""], "Error: --audit-schema must be a PostgreSQL name"),
        "pubkey alone": (["--pubkey", pub], "Error: --pubkey needs --manifest or --checkpoint"),
    }
    for name, (args, start) in cases.items():
        res = cli("pg", "verify", dsn, "--table", t, *args)
        assert res.exit_code == 2 and res.stderr.startswith(start), (name, res.stderr)
        assert res.stderr.count("\n") == 1, (name, res.stderr)
    wrong = lab.make_table("wrong_trail")
    res = cli("pg", "verify", dsn, "--table", wrong.full, "--audit-schema", s, "--checkpoint",
              fortress.checkpoints, "--pubkey", pub)
    assert res.exit_code == 2 and "wrong --checkpoint file" in res.stderr and res.stderr.count("\n") == 1
    # checkpoint: bad key, output at a directory, a link or a FIFO; nothing written, the good file untouched
    for args, start in (
        (["--key", tmp_path / "nokey", "--out", tmp_path / "new.ck"], "Error: private key"),
        (["--key", lab.keys.private, "--out", tmp_path], "Error: checkpoint file"),
        (["--key", lab.keys.private, "--out", link], "Error: checkpoint file"),
        (["--key", lab.keys.private, "--out", fifo], "Error: checkpoint file"),
        (["--key", lab.keys.private, "--out", edited], "Error: checkpoint file"),
    ):
        res = cli("pg", "checkpoint", dsn, "--table", t, "--audit-schema", s, *args)
        assert res.exit_code == 2 and res.stderr.startswith(start) and res.stderr.count("\n") == 1, res.stderr
    assert not (tmp_path / "new.ck").exists() and fortress.checkpoints.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["deep.checkpoints", "edited.checkpoints", "empty.checkpoints", "garbage.checkpoints", "fifo.checkpoints",
         "link.checkpoints", "other", "nokey"][:-1])
    res = cli("pg", "protect", lab.dsn, "--table", t, "--id", "id", "--label", "label", "--audit-role", "")
    assert res.exit_code == 2 and res.stderr.startswith("Error: --audit-role must be a PostgreSQL name")
    res = cli("pg", "protect", lab.dsn_of(lab.owner), "--table", t, "--id", "id", "--label", "label",
              "--audit-schema", s, "--audit-role", lab.audit_role)
    assert res.exit_code == 2 and "administrator's act" in res.stderr and res.stderr.count("\n") == 1
