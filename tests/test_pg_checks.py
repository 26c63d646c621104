"""``pg protect`` / ``pg verify`` on the real server: unique ids, enum label types, readers, NULL labels.

Each test builds its own tables in a schema owned by a **non-superuser table
owner**; the superuser ``postgres`` protects them (DDL guard on) unless said
otherwise, and a read-only **reader** verifies.
"""

from __future__ import annotations

import contextlib
import uuid

import pytest
from conftest import dsn_as as _dsn_as

from flipguard.integrity._pg import protect, protection_status, verify_postgres

pytestmark = pytest.mark.postgres



class Lab:
    def __init__(self, dsn, tmp):
        import psycopg
        from psycopg import sql

        from flipguard.integrity import write_keypair

        tag = uuid.uuid4().hex[:8]
        self.dsn, self.tmp, self.sql = dsn, tmp, sql
        self.owner, self.reader, self.admin = f"fg_ck_owner_{tag}", f"fg_ck_reader_{tag}", f"fg_ck_admin_{tag}"
        self.audit_role, self.data, self.trails = f"fg_ck_auditrole_{tag}", f"fg_ck_data_{tag}", f"fg_ck_trails_{tag}"
        self.su = psycopg.connect(dsn, autocommit=True)
        for role in (self.owner, self.reader, self.admin):
            self.su.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        self.su.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(self.audit_role)))
        self.su.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(self.audit_role), sql.Identifier(self.admin)))
        self.su.execute(sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(sql.Identifier(self.data),
                                                                             sql.Identifier(self.owner)))
        self.keys = write_keypair(tmp / "keys")
        self.o = psycopg.connect(_dsn_as(dsn, self.owner), autocommit=True)
        self.audit = {"audit_role": self.audit_role, "schema": self.trails}
        self.extra = []

    def dsn_of(self, role):
        return _dsn_as(self.dsn, role)

    def run(self, conn, stmt, params=None):
        return conn.execute(self.sql.SQL(stmt).format(data=self.sql.Identifier(self.data)), params)

    def seal(self, table):
        from flipguard.integrity import seal

        return seal(self.dsn, label="y", id="id", private_key=self.keys.private,
                    out=self.tmp / f"{table}.seal.json", table=f"{self.data}.{table}").manifest_path

    def new_role(self, suffix):
        role = f"{self.owner}_{suffix}"
        self.su.execute(self.sql.SQL("CREATE ROLE {} LOGIN").format(self.sql.Identifier(role)))
        self.extra.append(role)
        return role

    def close(self):
        sql = self.sql
        with contextlib.suppress(Exception):
            self.o.close()
        for schema in (self.data, self.trails):
            self.su.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        for role in (self.owner, self.reader, self.admin, self.audit_role, *self.extra):
            if self.su.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                self.su.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
                self.su.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
        self.su.close()


@pytest.fixture(scope="module")
def lab(pg_dsn, tmp_path_factory):
    lab = Lab(pg_dsn, tmp_path_factory.mktemp("pgchecks"))
    try:
        yield lab
    finally:
        lab.close()


def _load(lab, table, ddl, n=20, label_type="text"):
    """``table`` created by the owner with ``ddl`` columns, ``n`` rows: id 100000+i, 'malignant' for i % 3 == 0."""
    lab.run(lab.o, f"CREATE TABLE {{data}}.{table} ({ddl})")
    lab.run(lab.o, f"INSERT INTO {{data}}.{table} (id, y) SELECT g, (CASE WHEN g %% 3 = 0 THEN 'malignant' "
                   f"ELSE 'benign' END)::{label_type} FROM generate_series(100000, 100000 + %s) g", (n - 1,))
    return f"{lab.data}.{table}"


# =========================================================================== 1. ids must be unique
@pytest.mark.parametrize(("ddl", "index"), [
    ("id int, y text", None),
    ("id int, y text", "CREATE INDEX ON {data}.t (id)"),
    ("id int, y text", "CREATE UNIQUE INDEX ON {data}.t (id) WHERE id > 100005"),
    ("id int, y text", "CREATE UNIQUE INDEX ON {data}.t (id, y)"),
    ("id int, y text", "CREATE UNIQUE INDEX ON {data}.t ((id + 0))"),
])
def test_protect_refuses_an_id_column_that_is_not_unique(lab, cli, ddl, index):
    from flipguard.data._postgres import redact_dsn

    lab.run(lab.o, "DROP TABLE IF EXISTS {data}.t")
    full = _load(lab, "t", ddl)
    if index:
        lab.run(lab.o, index)
    res = cli("pg", "protect", lab.dsn, "--table", full, "--id", "id", "--label", "y", "--audit-role", lab.audit_role,
              "--audit-schema", lab.trails)
    assert res.exit_code == 2, res.stdout
    assert res.stderr == (f"Error: {redact_dsn(lab.dsn)}: id column 'id' of {full} has no primary key or unique "
                          "constraint; the trail tells rows apart by their id: add one on exactly that column "
                          "(ALTER TABLE ... ADD PRIMARY KEY or ADD UNIQUE), then protect\n")
    assert not protection_status(lab.dsn, full, schema=lab.trails).registered  # nothing was installed


@pytest.mark.parametrize("unique", ["PRIMARY KEY", "UNIQUE", "INDEX"])
def test_protect_accepts_a_primary_key_a_unique_constraint_or_a_unique_index(lab, unique):
    name = "u_" + unique.split()[0].lower()
    full = _load(lab, name, f"id int {'NOT NULL ' + unique if unique != 'INDEX' else 'NOT NULL'}, y text")
    if unique == "INDEX":
        lab.run(lab.o, f"CREATE UNIQUE INDEX ON {{data}}.{name} (id) INCLUDE (y)")
    assert protect(lab.dsn, full, id="id", label="y", **lab.audit).protected


@pytest.mark.parametrize("unique", ["UNIQUE", "INDEX"])
def test_protect_refuses_a_unique_id_that_may_be_null(lab, cli, unique):
    """UNIQUE lets any number of rows have a NULL id, which the trail cannot tell apart."""
    from flipguard.data._postgres import redact_dsn

    name = "n_" + unique.lower()
    full = _load(lab, name, f"id int {unique if unique != 'INDEX' else ''}, y text")
    if unique == "INDEX":
        lab.run(lab.o, f"CREATE UNIQUE INDEX ON {{data}}.{name} (id)")
    res = cli("pg", "protect", lab.dsn, "--table", full, "--id", "id", "--label", "y", "--audit-role", lab.audit_role,
              "--audit-schema", lab.trails)
    assert res.exit_code == 2, res.stdout
    assert res.stderr.startswith(f"Error: {redact_dsn(lab.dsn)}: id column 'id' of {full} allows NULL; ")
    assert "SET NOT NULL" in res.stderr and res.stderr.count("\n") == 1
    assert not protection_status(lab.dsn, full, schema=lab.trails).registered


def test_verify_reports_a_duplicated_id_with_its_recorded_insert_not_a_bypass(lab, cli):
    """The issue's repro, after the owner drops the primary key of a protected table."""
    full = _load(lab, "dup", "id int PRIMARY KEY, y text", n=10)
    protect(lab.dsn, full, id="id", label="y", readers=[lab.reader], **lab.audit)
    manifest = lab.seal("dup")
    lab.run(lab.o, "ALTER TABLE {data}.dup DROP CONSTRAINT dup_pkey")  # the guard allows it: no watched fact
    lab.run(lab.o, "INSERT INTO {data}.dup VALUES (100002, 'benign')")  # 100002 exists, 'malignant'
    txid, seq = lab.su.execute(lab.sql.SQL("SELECT txid, seq FROM {} WHERE op = 'INSERT'").format(
        lab.sql.Identifier(*protection_status(lab.dsn, full, schema=lab.trails).trail.split(".")))).fetchone()
    report = verify_postgres(lab.dsn_of(lab.reader), full, manifest, lab.keys.public, schema=lab.trails)
    assert report.trail_mismatches == [] and report.n_duplicate_ids == 1
    (dup,) = report.duplicate_ids
    assert dup["id"] == "100002" and dup["rows"] == 2 and dup["labels"] == ["benign", "malignant"]
    assert dup["message"].startswith(
        f'duplicated id 100002: 2 rows in the table (label "benign", label "malignant"); the trail records 1 '
        f'arrival(s): INSERT of label "benign" (row {seq}, by {lab.owner}, txid {txid}, ')
    assert dup["message"].endswith("consistent with the trail; it cannot tell these rows apart: give the id "
                                   "column a unique constraint again")
    # the seal compares one of the two rows ('malignant' -> 'benign'): the recorded insert explains it
    assert report.unexplained == []
    assert [(c["id"], c["sealed"], c["current"], c["session_user"], c["txid"], c["duplicate_id"])
            for c in report.explained] == [(100002, "malignant", "benign", lab.owner, txid, True)]
    assert not report.ok and not report.ok_if_recorded  # a duplicated id is a finding all the same
    res = cli("pg", "verify", lab.dsn_of(lab.reader), "--table", full, "--audit-schema", lab.trails,
              "--allow-recorded")
    assert res.exit_code == 1
    assert "DUPLICATED IDS: 1 id(s) held by more than one row" in res.stdout
    assert "duplicated id 100002" in res.stdout and "UNRECORDED CHANGES" not in res.stdout

    # a third row of the id, inserted behind the trigger's back: more rows than the trail explains
    with lab.su.transaction():
        lab.su.execute("SET LOCAL session_replication_role = replica")
        lab.run(lab.su, "INSERT INTO {data}.dup VALUES (100002, 'benign')")
    report = verify_postgres(lab.dsn_of(lab.reader), full, manifest, lab.keys.public, schema=lab.trails)
    (dup,) = report.duplicate_ids
    assert {c["id"] for c in report.unexplained} == {100002} and report.explained == []
    assert all(c["explanation"] == dup["message"] for c in report.unexplained)
    assert dup["rows"] == 3 and dup["message"].endswith(
        "3 rows where the recorded inserts and deletes leave 1 (plus one from before the protection): rows "
        "inserted or deleted with the trigger bypassed")


# =========================================================================== 2. enum label types
def _enum_table(lab, name):
    lab.run(lab.o, f"CREATE TYPE {{data}}.{name}_t AS ENUM ('benign', 'malignant')")
    return _load(lab, name, f"id int PRIMARY KEY, y {lab.data}.{name}_t", label_type=f"{lab.data}.{name}_t")


SWAP = ["ALTER TYPE {data}.%s_t RENAME VALUE 'benign' TO 'tmp'",
        "ALTER TYPE {data}.%s_t RENAME VALUE 'malignant' TO 'benign'",
        "ALTER TYPE {data}.%s_t RENAME VALUE 'tmp' TO 'malignant'"]


def test_guard_refuses_the_owner_renaming_an_enum_label_but_allows_adding_one(lab):
    import psycopg

    full = _enum_table(lab, "enumg")
    protect(lab.dsn, full, id="id", label="y", readers=[lab.reader], **lab.audit)
    manifest = lab.seal("enumg")
    with pytest.raises(psycopg.errors.InsufficientPrivilege,
                       match="ALTER TYPE changes the values of the enum type of a watched column"):
        lab.run(lab.o, SWAP[0] % "enumg")
    assert lab.run(lab.su, "SELECT count(*) FROM {data}.enumg WHERE y = 'benign'").fetchone()[0] == 14
    # ADD VALUE changes no row: allowed, and remembered so that renaming the new value is refused too
    lab.run(lab.o, "ALTER TYPE {data}.enumg_t ADD VALUE 'unsure'")
    lab.run(lab.o, "UPDATE {data}.enumg SET y = 'unsure' WHERE id = 100001")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        lab.run(lab.o, "ALTER TYPE {data}.enumg_t RENAME VALUE 'unsure' TO 'malignant2'")
    st = protection_status(lab.dsn_of(lab.reader), full, schema=lab.trails)
    assert st.protected and st.identity_ok, st.identity_changes
    report = verify_postgres(lab.dsn_of(lab.reader), full, manifest, lab.keys.public, schema=lab.trails)
    assert report.ok_if_recorded and not report.problems, report.to_dict()
    assert [(c["id"], c["sealed"], c["current"]) for c in report.explained] == [(100001, "benign", "unsure")]


def test_verify_names_an_enum_rename_as_the_cause(lab, cli):
    """A superuser (whom the guard lets through) swaps 'benign' and 'malignant': every row flips, no trigger fires."""
    full = _enum_table(lab, "enums")
    protect(lab.dsn, full, id="id", label="y", readers=[lab.reader], **lab.audit)
    manifest = lab.seal("enums")
    lab.run(lab.o, "UPDATE {data}.enums SET y = 'malignant' WHERE id = 100001")  # recorded, seen by the trail
    for stmt in SWAP:
        lab.run(lab.su, stmt % "enums")
    cause = ('the label\'s enum type was altered: labels renamed ("benign" -> "malignant", "malignant" -> "benign"), '
             "which changes every row holding them without firing a trigger")
    st = protection_status(lab.dsn_of(lab.reader), full, schema=lab.trails)
    assert not st.protected and st.identity_changes == [cause]
    report = verify_postgres(lab.dsn_of(lab.reader), full, manifest, lab.keys.public, schema=lab.trails)
    assert report.problems == [f"table {full} is not protected: {cause}"]
    assert len(report.unexplained) == 19 and report.explained == []  # every row but the one flipped and back
    assert all(c["explanation"].endswith(
        f"the label's enum type was altered (value {c['sealed']!r} renamed to {c['current']!r}; ALTER TYPE ... "
        "RENAME VALUE fires no trigger)") for c in report.unexplained)
    assert [m["message"] for m in report.trail_mismatches] == [
        'id "100001": the trail\'s last change (row 2, UPDATE) leaves it at label "malignant" but the table has '
        'label "benign": the label\'s enum type was altered (value "malignant" renamed to "benign"), which fires '
        "no trigger"]
    res = cli("pg", "verify", lab.dsn_of(lab.reader), "--table", full, "--audit-schema", lab.trails)
    assert res.exit_code == 1 and "labels renamed" in res.stdout


# =========================================================================== 3. readers
def test_reader_gets_select_on_the_table_and_protect_says_so(lab, cli):
    from psycopg import sql

    reader = lab.new_role("rd")  # a role no other test gave anything
    full = _load(lab, "rd", "id int PRIMARY KEY, y text")
    args = ["--table", full, "--id", "id", "--label", "y", "--audit-role", lab.audit_role,
            "--audit-schema", lab.trails]
    assert cli("pg", "protect", lab.dsn, *args).exit_code == 0
    res = cli("pg", "verify", lab.dsn_of(reader), "--table", full, "--audit-schema", lab.trails)
    assert res.exit_code == 2 and res.stderr.count("\n") == 1
    assert res.stderr.endswith(f"role '{reader}' may not read audit schema {lab.trails} (no USAGE): as an "
                               f"administrator: flipguard pg protect ... --table {full} --reader {reader}\n")
    res = cli("pg", "protect", lab.dsn, *args, "--reader", reader)
    assert res.exit_code == 0
    assert res.stdout.startswith(f"{full} was already protected; granted:\n  + read access for {reader} "
                                 "(trail, registry, table)\n"), res.stdout
    res = cli("pg", "verify", lab.dsn_of(reader), "--table", full, "--audit-schema", lab.trails)
    assert res.exit_code == 0, res.stdout + res.stderr
    res = cli("pg", "protect", lab.dsn, *args, "--reader", reader)
    assert res.exit_code == 0 and res.stdout.startswith(f"{full} was already protected; nothing changed.")
    # the grant is on record in the trail
    trail = protection_status(lab.dsn, full, schema=lab.trails).trail
    details = [r[0] for r in lab.su.execute(sql.SQL("SELECT detail FROM {} WHERE op = 'PROTECT' ORDER BY seq").format(
        sql.Identifier(*trail.split(".")))).fetchall()]
    assert [d["changed"][-1] for d in details][1:] == [f"read access for {reader} (trail, registry, table)"]
    # without SELECT on the table: one clear line, exit 2
    lab.run(lab.o, f"REVOKE SELECT ON {{data}}.rd FROM {reader}")
    res = cli("pg", "verify", lab.dsn_of(reader), "--table", full, "--audit-schema", lab.trails)
    assert res.exit_code == 2 and res.stderr.count("\n") == 1
    assert res.stderr.endswith(f"role '{reader}' may not read table {full} (no SELECT on it), which pg verify "
                               f"compares with the trail: as an administrator: flipguard pg protect ... --table "
                               f"{full} --reader {reader} (grants it), or GRANT SELECT ON {full} TO "
                               f"{reader}\n")


def test_a_non_superuser_admin_that_cannot_grant_select_says_so(lab, cli):
    full = _load(lab, "rd2", "id int PRIMARY KEY, y text")
    lab.run(lab.o, f"GRANT TRIGGER ON {{data}}.rd2 TO {lab.admin}")
    lab.run(lab.o, f"GRANT USAGE ON SCHEMA {{data}} TO {lab.admin}")
    res = cli("pg", "protect", lab.dsn_of(lab.admin), "--table", full, "--id", "id", "--label", "y",
              "--audit-role", lab.audit_role, "--audit-schema", lab.trails, "--reader", lab.reader)
    assert res.exit_code == 2 and res.stderr.count("\n") == 1
    assert (f"cannot give reader '{lab.reader}' SELECT on table {full} (pg verify reads it): this role may not "
            f"grant it; as the table's owner: GRANT USAGE ON SCHEMA") in res.stderr
    assert not protection_status(lab.dsn, full, schema=lab.trails).registered  # rolled back


# =========================================================================== 4. NULL labels
def test_null_labels_print_as_missing(lab, cli):
    full = _load(lab, "nul", "id int PRIMARY KEY, y text")
    protect(lab.dsn, full, id="id", label="y", readers=[lab.reader], **lab.audit)
    manifest = lab.seal("nul")
    lab.run(lab.o, "UPDATE {data}.nul SET y = NULL WHERE id = 100001")  # recorded
    lab.run(lab.o, "UPDATE {data}.nul SET y = 'malignant' WHERE id = 100000")  # recorded, then bypassed:
    with lab.su.transaction():
        lab.su.execute("SET LOCAL session_replication_role = replica")
        lab.run(lab.su, "UPDATE {data}.nul SET y = NULL WHERE id IN (100000, 100004)")
    res = cli("pg", "verify", lab.dsn_of(lab.reader), "--table", full, "--audit-schema", lab.trails,
              "--manifest", manifest, "--pubkey", lab.keys.public)
    assert res.exit_code == 1
    assert "None" not in res.stdout and "null" not in res.stdout
    assert "id 100001: 'benign' -> <missing> by " in res.stdout
    assert "id 100004: 'benign' -> <missing>: no change to this row is recorded" in res.stdout
    assert ('id "100000": the trail\'s last change (row 3, UPDATE) leaves it at label "malignant" but the table '
            "has label <missing>: changed with the trigger bypassed") in res.stdout


def test_protect_again_updates_a_guard_installed_by_an_older_flipguard(lab):
    """An event trigger that does not watch ALTER TYPE (as installed before) is replaced by protect."""
    import psycopg
    from psycopg import sql

    from flipguard.integrity._pg import guard_trigger_name

    full = _enum_table(lab, "enumu")
    protect(lab.dsn, full, id="id", label="y", **lab.audit)
    guard, fn = sql.Identifier(guard_trigger_name(lab.trails)), sql.Identifier(lab.trails, "ddl_guard")
    lab.su.execute(sql.SQL("DROP EVENT TRIGGER {}").format(guard))
    lab.su.execute(sql.SQL("CREATE EVENT TRIGGER {} ON ddl_command_end WHEN TAG IN ('ALTER TABLE') "
                           "EXECUTE FUNCTION {}()").format(guard, fn))
    with lab.o.transaction(force_rollback=True):  # the old guard lets the owner's rename through
        lab.run(lab.o, SWAP[0] % "enumu")
    st = protect(lab.dsn, full, id="id", label="y", **lab.audit)
    assert st.changed == ["DDL guard updated (watches more commands)"] and st.protected
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        lab.run(lab.o, SWAP[0] % "enumu")
