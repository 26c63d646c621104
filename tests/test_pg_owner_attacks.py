"""What a table owner (not a superuser) can still try against a protected table, on the real server.

Red-team findings, each reproduced with real roles: an **owner** of the data
schema and table, a **writer** with DML only, a read-only **reader** who runs
``pg verify``, the ``NOLOGIN`` **audit role**, an **admin** that is a member
of the audit role but not a superuser (protects without the DDL guard), and
the superuser ``postgres``, who protects with the DDL guard.

1. the owner's ``CREATE CAST (its_type AS text)`` (or operator) must never run
   inside the audit role's trigger, ``protect`` or ``verify``;
2. ``ALTER COLUMN ... TYPE ... USING`` rewrites labels without firing a
   trigger: refused by the guard, even to the same type;
3. inheritance: writes through a parent, rows of a child: refused;
4. a ``TRUNCATE`` then re-insert with a flipped label, restored later, is a
   temporary change with its window, as with ``DELETE``;
5. changes made while unprotected are reported when protected again;
6. recorded changes of timestamp, numeric and float labels are explained, not
   called a bypass because their texts differ.

Roles, schemas and event triggers are dropped at the end, whatever happened.
"""

from __future__ import annotations

import contextlib
import uuid

import pytest
from conftest import dsn_as as _dsn_as

from flipguard.integrity._pg import guard_trigger_name, protect, protection_status, unprotect, verify_postgres

pytestmark = pytest.mark.postgres


class Lab:
    def __init__(self, dsn, tmp):
        import psycopg
        from psycopg import sql

        from flipguard.integrity import write_keypair

        tag = uuid.uuid4().hex[:8]
        self.dsn, self.tmp, self.sql = dsn, tmp, sql
        self.owner, self.writer, self.reader = f"fg_oa_owner_{tag}", f"fg_oa_writer_{tag}", f"fg_oa_reader_{tag}"
        self.admin, self.audit_role = f"fg_oa_admin_{tag}", f"fg_oa_auditrole_{tag}"
        self.data, self.trails, self.trails2 = f"fg_oa_data_{tag}", f"fg_oa_trails_{tag}", f"fg_oa_trails2_{tag}"
        self.roles = [self.owner, self.writer, self.reader, self.admin, self.audit_role]
        self.su = psycopg.connect(dsn, autocommit=True)
        self._conns: dict[str, object] = {}
        I = sql.Identifier  # noqa: E741, N806
        try:
            for role in (self.owner, self.writer, self.reader, self.admin):
                self.su.execute(sql.SQL("CREATE ROLE {} LOGIN").format(I(role)))
            self.su.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(I(self.audit_role)))
            self.su.execute(sql.SQL("GRANT {} TO {}").format(I(self.audit_role), I(self.admin)))
            self.su.execute(sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(I(self.data), I(self.owner)))
            self.su.execute(sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(I(self.trails2), I(self.audit_role)))
            self.keys = write_keypair(tmp / "keys")
            # PUBLIC may use the data schema: a function of the owner's can then log who ran it
            self.run(self.owner, "GRANT USAGE ON SCHEMA {data} TO PUBLIC")
            self.run(self.owner, "CREATE TABLE {data}.ran_as (who text, what text)")
            self.run(self.owner, "GRANT INSERT ON {data}.ran_as TO PUBLIC")
        except BaseException:
            self.close()
            raise

    def conn(self, role):
        import psycopg

        if role == "postgres":
            return self.su
        if role not in self._conns:
            self._conns[role] = psycopg.connect(_dsn_as(self.dsn, role), autocommit=True)
        return self._conns[role]

    def dsn_of(self, role):
        return self.dsn if role == "postgres" else _dsn_as(self.dsn, role)

    def run(self, role, stmt, params=None):
        """``stmt`` as ``role`` ({data} = the data schema)."""
        return self.conn(role).execute(self.sql.SQL(stmt).format(data=self.sql.Identifier(self.data)), params)

    def table(self, name, label_type="text", values=None, *, guard=True, protected=True, seal=False):
        """``{data}.name (id int PRIMARY KEY, label <label_type>, note text)`` of the owner, 10 rows, protected."""
        values = values or ["spam" if i % 2 else "ham" for i in range(1, 11)]
        self.run(self.owner, f"CREATE TABLE {{data}}.{name} (id int PRIMARY KEY, label {label_type}, "
                             "note text DEFAULT '')")
        with self.conn(self.owner).cursor() as cur:
            cur.executemany(self.sql.SQL(f"INSERT INTO {{}}.{name} (id, label) VALUES (%s, CAST(%s::text AS "
                                         f"{label_type}))").format(self.sql.Identifier(self.data)),
                            list(enumerate(values, 1)))
        self.run(self.owner, f"GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON {{data}}.{name} TO {self.writer}")
        self.run(self.owner, f"GRANT SELECT ON {{data}}.{name} TO {self.reader}")
        full = f"{self.data}.{name}"
        if seal:
            from flipguard.integrity import seal as do_seal

            self.manifest = do_seal(self.dsn, label="label", id="id", private_key=self.keys.private,
                                    out=self.tmp / f"{name}.seal.json", table=full).manifest_path
        if protected:
            self.protect(full, guard=guard)
        return full

    def protect(self, full, *, guard=True):
        if guard:
            return protect(self.dsn, full, id="id", label="label", audit_role=self.audit_role, schema=self.trails,
                           readers=[self.reader])
        self.run(self.owner, f"GRANT TRIGGER ON {full} TO {self.admin}")
        return protect(self.dsn_of(self.admin), full, id="id", label="label", audit_role=self.audit_role,
                       schema=self.trails2, readers=[self.reader])

    def verify(self, full, *, guard=True, **kw):
        return verify_postgres(self.dsn_of(self.reader), full, schema=self.trails if guard else self.trails2, **kw)

    def trail_rows(self, full, *, guard=True):
        st = protection_status(self.dsn, full, schema=self.trails if guard else self.trails2)
        s, n = st.trail.split(".", 1)
        return self.su.execute(self.sql.SQL("SELECT op, old_ids, new_ids, old_labels, new_labels FROM {} "
                                            "ORDER BY seq").format(self.sql.Identifier(s, n))).fetchall()

    def ran_as(self):
        return self.run("postgres", "SELECT who, what FROM {data}.ran_as").fetchall()

    def close(self):
        sql, su = self.sql, self.su
        for c in self._conns.values():
            with contextlib.suppress(Exception):
                c.close()
        for schema in (self.trails, self.trails2):
            with contextlib.suppress(Exception):
                su.execute(sql.SQL("DROP EVENT TRIGGER IF EXISTS {}").format(
                    sql.Identifier(guard_trigger_name(schema))))
        for schema in (self.data, self.trails, self.trails2):
            with contextlib.suppress(Exception):
                su.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        for role in self.roles:
            with contextlib.suppress(Exception):
                if su.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                    su.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
                    su.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
        su.close()


@pytest.fixture(scope="module")
def lab(pg_dsn, tmp_path_factory):
    lab = Lab(pg_dsn, tmp_path_factory.mktemp("owner_attacks"))
    try:
        yield lab
    finally:
        lab.close()


# =========================================================================== 1. the owner's cast or operator
# The owner's function logs who runs it, then returns a constant: run as the audit role it could as well
# have disabled the trail's guard and deleted its rows (the red team did); returning 'ham' for every value
# hides every change from a trail or a verify that converts labels with ::text.
_SPY = """
CREATE FUNCTION {data}.spy(v {data}.%(t)s) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO %(data)s.ran_as VALUES (current_user, 'cast');
  RETURN 'ham';
END $$;
CREATE FUNCTION {data}.spy_eq(a {data}.%(t)s, b {data}.%(t)s) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO %(data)s.ran_as VALUES (current_user, 'operator');
  RETURN true;
END $$;
CREATE CAST ({data}.%(t)s AS text) WITH FUNCTION {data}.spy({data}.%(t)s);
CREATE OPERATOR {data}.= (LEFTARG = {data}.%(t)s, RIGHTARG = {data}.%(t)s, FUNCTION = {data}.spy_eq);
CREATE OPERATOR {data}.<> (LEFTARG = {data}.%(t)s, RIGHTARG = {data}.%(t)s, FUNCTION = {data}.spy_eq)
"""


@pytest.mark.parametrize("kind", ["enum", "enum_array", "domain_over_enum"])
@pytest.mark.parametrize("when", ["before_protect", "after_protect"])
def test_owner_cast_to_text_never_runs_as_the_audit_role(lab, kind, when):
    """CREATE CAST (owner_type AS text): the trigger, protect and verify use the type's output function."""
    name = f"cast_{kind}_{when}"
    typ = f"{name}_t"
    lab.run(lab.owner, f"CREATE TYPE {{data}}.{typ} AS ENUM ('ham', 'spam')")
    label_type, cast_type, values = f"{lab.data}.{typ}", typ, None
    if kind == "enum_array":
        cast_type, label_type = f"{typ}[]", f"{lab.data}.{typ}[]"
        values = ["{spam}" if i % 2 else "{ham}" for i in range(1, 11)]
    elif kind == "domain_over_enum":
        lab.run(lab.owner, f"CREATE DOMAIN {{data}}.{name}_d AS {{data}}.{typ}")
        label_type = f"{lab.data}.{name}_d"
    spy = (_SPY.replace("spy", f"spy_{name}") % {"t": cast_type, "data": lab.data}).split(";\nCREATE")
    stmts = [spy[0]] + ["CREATE" + s for s in spy[1:]]
    if when == "before_protect":
        for s in stmts:
            lab.run(lab.owner, s)
    full = lab.table(name, label_type, values)
    if when == "after_protect":
        for s in stmts:  # CREATE FUNCTION / CAST / OPERATOR touch nothing the guard watches
            lab.run(lab.owner, s)
    flip = f"ARRAY['spam']::{label_type}" if kind == "enum_array" else "'spam'"
    lab.run(lab.writer, f"UPDATE {full} SET label = {flip} WHERE id = 2")
    lab.run(lab.writer, f"UPDATE {full} SET label = label WHERE id = 4")  # no change: nothing to record
    lab.run(lab.writer, f"DELETE FROM {full} WHERE id = 3")
    report = lab.verify(full)
    lab.protect(full)  # again, as the superuser
    status = protection_status(lab.dsn_of(lab.reader), full, schema=lab.trails)
    assert lab.ran_as() == []  # nobody ran the owner's code: not the audit role, the reader, the superuser
    steps = [r for r in lab.trail_rows(full) if r[0] != "PROTECT"]
    new = "{spam}" if kind == "enum_array" else "spam"
    old = "{ham}" if kind == "enum_array" else "ham"
    assert steps == [("UPDATE", ["2"], ["2"], [old], [new]), ("DELETE", ["3"], None, [new], None)]
    assert status.protected and report.ok_if_recorded, report.to_dict()
    assert not report.trail_mismatches and not report.chain_errors


def test_owner_cast_does_not_hide_a_bypassed_change(lab):
    """A superuser bypass (replica mode) is still a final-state mismatch although the owner's cast says 'ham'."""
    name = "cast_hide"
    lab.run(lab.owner, f"CREATE TYPE {{data}}.{name}_t AS ENUM ('ham', 'spam')")
    full = lab.table(name, f"{lab.data}.{name}_t")
    spy = (_SPY.replace("spy", f"spy_{name}") % {"t": f"{name}_t", "data": lab.data}).split(";\nCREATE")
    for s in [spy[0]] + ["CREATE" + s for s in spy[1:]]:
        lab.run(lab.owner, s)
    lab.run(lab.writer, f"UPDATE {full} SET label = 'spam' WHERE id = 2")
    with lab.su.transaction():
        lab.su.execute("SET LOCAL session_replication_role = replica")
        lab.su.execute(f"UPDATE {full} SET label = 'ham' WHERE id = 2")
    report = lab.verify(full)
    assert [m["id"] for m in report.trail_mismatches] == ["2"], report.to_dict()
    assert lab.ran_as() == []


def test_trigger_function_pins_search_path_and_refuses_a_retyped_column(lab):
    """Without the guard the owner can retype a watched column: the stale trigger refuses to record it wrongly."""
    import psycopg

    name = "retype_noguard"
    lab.run(lab.owner, f"CREATE TYPE {{data}}.{name}_t AS ENUM ('ham', 'spam')")
    full = lab.table(name, "text", guard=False)
    spy = (_SPY.replace("spy", f"spy_{name}") % {"t": f"{name}_t", "data": lab.data}).split(";\nCREATE")
    for s in [spy[0]] + ["CREATE" + s for s in spy[1:]]:
        lab.run(lab.owner, s)
    lab.run(lab.owner, f"ALTER TABLE {full} ALTER COLUMN label TYPE {lab.data}.{name}_t "
                       f"USING label::text::{lab.data}.{name}_t")
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="pg protect"):
        lab.run(lab.writer, f"UPDATE {full} SET label = 'spam' WHERE id = 2")
    assert lab.ran_as() == []
    config = lab.run("postgres", "SELECT proconfig FROM pg_proc WHERE prosecdef AND pronamespace = %s::regnamespace",
                     (lab.trails2,)).fetchall()
    assert config and all("search_path=pg_catalog, pg_temp" in c[0] for c in config)
    report = lab.verify(full, guard=False)
    assert not report.ok_if_recorded and any("watched columns changed" in p for p in report.problems)
    assert lab.ran_as() == []


# =========================================================================== 2. ALTER COLUMN ... TYPE ... USING
@pytest.mark.parametrize("stmt", [
    "ALTER TABLE {t} ALTER COLUMN label TYPE text USING (CASE WHEN id = 2 THEN 'spam' ELSE label END)",
    "ALTER TABLE {t} ALTER COLUMN note TYPE text USING (note || ''), "
    "ALTER COLUMN label TYPE text USING (CASE WHEN id = 2 THEN 'spam' ELSE label END)",
    "ALTER TABLE {t} ALTER COLUMN id TYPE int USING (CASE WHEN id = 2 THEN 20 ELSE id END)",
    "ALTER TABLE {t} ALTER COLUMN id TYPE bigint",
])
def test_guard_refuses_rewriting_a_watched_column(lab, stmt):
    import psycopg

    name = f"rewrite_{abs(hash(stmt)) % 10**8}"
    full = lab.table(name)
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="protected table"):
        lab.run(lab.owner, stmt.replace("{t}", full))
    rows = lab.run("postgres", f"SELECT id, label FROM {full} ORDER BY id").fetchall()
    assert rows == [(i, "spam" if i % 2 else "ham") for i in range(1, 11)]
    assert lab.verify(full).ok


def test_guard_allows_ddl_that_rewrites_no_watched_column(lab):
    full = lab.table("rewrite_ok")
    lab.run(lab.owner, f"ALTER TABLE {full} ADD COLUMN r float8 DEFAULT random()")  # a rewrite, new column
    lab.run(lab.owner, f"ALTER TABLE {full} ALTER COLUMN note TYPE varchar")  # binary coercible: no rewrite
    lab.run(lab.owner, f"ALTER TABLE {full} SET UNLOGGED")  # a rewrite copying rows unchanged
    assert protection_status(lab.dsn, full, schema=lab.trails).protected


# =========================================================================== 3. inheritance
def test_protect_refuses_a_table_with_a_parent_or_a_child(lab):
    from flipguard.exceptions import DataError

    lab.run(lab.owner, "CREATE TABLE {data}.inh_parent (id int PRIMARY KEY, label text, note text)")
    child = lab.table("inh_child", protected=False)
    lab.run(lab.owner, f"ALTER TABLE {child} INHERIT {{data}}.inh_parent")
    with pytest.raises(DataError, match="inherit"):
        lab.protect(child)
    with pytest.raises(DataError, match="inherit"):
        lab.protect(f"{lab.data}.inh_parent")


@pytest.mark.parametrize("stmt", [
    "ALTER TABLE {t} INHERIT {data}.inh2_parent",
    "CREATE TABLE {data}.inh2_kid () INHERITS ({t})",
    "ALTER TABLE {data}.inh2_parts ATTACH PARTITION {t} FOR VALUES FROM (0) TO (1000)",
])
def test_guard_refuses_inheritance_involving_a_protected_table(lab, stmt):
    import psycopg

    name = f"inh2_{abs(hash(stmt)) % 10**8}"
    lab.run(lab.owner, "CREATE TABLE IF NOT EXISTS {data}.inh2_parent (id int, label text, note text)")
    lab.run(lab.owner, "CREATE TABLE IF NOT EXISTS {data}.inh2_parts (id int, label text, note text) "
                       "PARTITION BY RANGE (id)")
    full = lab.table(name)
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="protected table"):
        lab.run(lab.owner, stmt.replace("{t}", full))
    n = lab.run("postgres", "SELECT count(*) FROM pg_inherits WHERE inhrelid = %s::regclass "
                            "OR inhparent = %s::regclass", (full, full)).fetchone()[0]
    assert n == 0


def test_without_the_guard_inheritance_is_detected_and_reads_use_only(lab):
    """Unguarded: a child of the protected table is an identity change; its rows are not read as the table's."""
    full = lab.table("inh3", guard=False)
    lab.run(lab.owner, f"CREATE TABLE {{data}}.inh3_kid () INHERITS ({full})")
    lab.run(lab.owner, "INSERT INTO {data}.inh3_kid VALUES (2, 'spam', '')")
    report = lab.verify(full, guard=False)
    assert any("inherit" in p for p in report.problems), report.problems
    assert not report.trail_mismatches and not report.duplicate_ids


# =========================================================================== 4. TRUNCATE
def test_truncate_reinsert_then_restore_is_a_temporary_change(lab):
    full = lab.table("trunc_tmp")
    w = lab.conn(lab.writer)
    with w.transaction():
        w.execute(f"CREATE TEMP TABLE k AS SELECT * FROM {full}")
        w.execute(f"TRUNCATE {full}")
        w.execute(f"INSERT INTO {full} SELECT id, CASE WHEN id = 2 THEN 'spam' ELSE label END, note FROM k")
    with w.transaction():
        w.execute(f"TRUNCATE {full}")
        w.execute(f"INSERT INTO {full} SELECT * FROM k")
        w.execute("DROP TABLE k")
    report = lab.verify(full)
    assert [(c["id"], c["interim"], c["restored"]) for c in report.temporary_changes] == [
        ("2", 'label "spam"', 'label "ham"')], report.to_dict()
    assert not report.ok and report.ok_if_recorded, report.to_dict()
    assert not report.trail_mismatches


def test_truncate_records_the_rows_it_removes(lab):
    full = lab.table("trunc_rows")
    lab.run(lab.writer, f"TRUNCATE {full}")
    st = protection_status(lab.dsn, full, schema=lab.trails)
    s, n = st.trail.split(".", 1)
    steps = lab.su.execute(lab.sql.SQL("SELECT n_rows, old_ids, detail FROM {} WHERE op = 'TRUNCATE'").format(
        lab.sql.Identifier(s, n))).fetchall()
    assert len(steps) == 1 and steps[0][:2] == (0, None)  # still one step of no row for older readers
    detail = steps[0][2]
    removed = sorted(zip(map(int, detail["ids"]), detail["labels"]))
    assert removed == [(i, "spam" if i % 2 else "ham") for i in range(1, 11)]
    report = lab.verify(full)
    assert report.ok and not report.trail_mismatches, report.to_dict()


# =========================================================================== 5. unprotect, change, protect
def test_changes_while_unprotected_are_reported_after_protect_again(lab):
    full = lab.table("unprot")
    lab.run(lab.writer, f"UPDATE {full} SET label = 'spam' WHERE id = 2")  # the trail's last word: spam
    lab.run(lab.writer, f"UPDATE {full} SET label = 'spam' WHERE id = 4")
    lab.run(lab.writer, f"UPDATE {full} SET label = 'spam' WHERE id = 6")  # unchanged while unprotected
    unprotect(lab.dsn, full, schema=lab.trails)
    lab.run(lab.owner, f"UPDATE {full} SET label = 'ham' WHERE id = 2")
    lab.run(lab.owner, f"DELETE FROM {full} WHERE id = 4")
    lab.protect(full)
    report = lab.verify(full)
    assert not report.ok and not report.ok_if_recorded
    text = " ".join(report.problems)
    assert "unprotected from" in text and "2 label(s) differ from the trail's last word" in text, text
    assert 'id "2": label "spam" in the trail, label "ham" in the table' in text
    assert 'id "4": label "spam" in the trail, absent in the table' in text
    assert 'id "6"' not in text


def test_protect_again_without_a_change_is_clean(lab):
    full = lab.table("unprot_clean")
    lab.run(lab.writer, f"UPDATE {full} SET label = 'spam' WHERE id = 2")
    unprotect(lab.dsn, full, schema=lab.trails)
    lab.protect(full)
    report = lab.verify(full)
    assert report.ok, report.to_dict()


# =========================================================================== 6. typed labels explained
TYPED = {
    "timestamp": ("timestamp", "2031-05-05 01:02:03", "UPDATE {t} SET label = '2031-05-06 01:02:03.5' WHERE id = 2"),
    "timestamptz": ("timestamptz", "2031-05-05 01:02:03+00",
                    "UPDATE {t} SET label = '2031-05-05 01:02:03.25+02' WHERE id = 2"),
    "numeric": ("numeric", "0.5", "UPDATE {t} SET label = 1::numeric / 4 WHERE id = 2"),
    "numeric_scale": ("numeric", "0.25000000000000000000", "UPDATE {t} SET label = 0.75 WHERE id = 2"),
    "float8_nan": ("float8", "NaN", "UPDATE {t} SET label = 1e-5 WHERE id = 2"),
    "float8_inf": ("float8", "Infinity", "UPDATE {t} SET label = '-Infinity' WHERE id = 2"),
    "float8_small": ("float8", "1e-5", "UPDATE {t} SET label = 'NaN' WHERE id = 2"),
    "float4": ("float4", "1234567", "UPDATE {t} SET label = 3703701 WHERE id = 2"),
    "float4_fraction": ("float4", "0.1", "UPDATE {t} SET label = 0.3 WHERE id = 2"),
}


@pytest.mark.parametrize("case", sorted(TYPED))
def test_recorded_changes_of_typed_labels_are_explained(lab, case):
    typ, special, stmt = TYPED[case]
    values = [special if i == 2 else str(i) if typ.startswith(("float", "numeric")) else
              f"2030-01-0{i % 9 + 1} 00:00:00" for i in range(1, 11)]
    full = lab.table(f"typed_{case}", typ, values, seal=True)
    lab.run(lab.writer, stmt.replace("{t}", full))
    report = lab.verify(full, manifest=lab.manifest, public_key=lab.keys.public)
    assert report.unexplained == [], report.to_dict()
    assert [c["id"] for c in report.explained] == [2]
    assert report.ok_if_recorded, report.to_dict()
