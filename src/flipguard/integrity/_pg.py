"""A tamper-evident audit trail of label changes inside PostgreSQL, out of the table owner's reach.

:func:`protect` installs, on one table, **statement-level** triggers with
transition tables that append every ``INSERT``, ``DELETE``, ``TRUNCATE`` and
every ``UPDATE`` that changes the label or the id column to an append-only,
hash-chained audit table ``<audit schema>.<trail>``: **one chain step per
statement**, holding the id and label of every row it changed (parallel
``text[]`` arrays, so per-row attribution is kept), ``session_user``, the role
in effect, ``application_name``, ``inet_client_addr()``, the transaction id
and ``clock_timestamp()``; ``row_hash = sha256(prev_hash || content)`` where
``content`` is a canonical ``jsonb`` text of the step.

Labels and ids are recorded as **canonical text** computed inside the trigger
function under settings pinned on the function itself (``extra_float_digits
= 3``: shortest exact float text; ``DateStyle``, ``TimeZone``,
``IntervalStyle``, ``bytea_output`` fixed), so no session setting of the
writer changes what is recorded.  Numerics are exact, booleans ``true`` /
``false``.

Who owns what (see ``docs/postgres.md``):

* the **audit role** (default ``flipguard_auditor``, ``NOLOGIN``) owns the
  audit schema, the registry, every trail, its sequence and every function;
  the table owner must not be a member of it (:func:`protect` refuses);
* the trigger function is ``SECURITY DEFINER`` (runs as the audit role) with
  ``search_path = pg_catalog, pg_temp``; nobody else has any privilege on the
  trail, and a guard trigger on the trail refuses every ``UPDATE``,
  ``DELETE`` and ``TRUNCATE``, and every ``INSERT`` not made by the audit role
  itself (so a wrongly granted ``INSERT`` cannot forge a link);
* no privileged code (the trigger, :func:`protect`, :func:`verify_postgres`)
  runs code of the table owner's: a value of a type that is not built-in is
  turned into text by its output function, never by a ``::text`` cast the
  owner may have created, and only texts are compared (see :func:`_column_text`);
* when a superuser runs :func:`protect`, a **DDL guard** (an event trigger)
  makes any statement that disables, drops, recreates or renames the audit
  triggers, changes the table's id/label columns or its inheritance, fail
  unless it comes from a superuser or a member of the audit role, and a
  ``table_rewrite`` event trigger refuses ``ALTER COLUMN ... TYPE ... USING``
  rewrites of a protected table: the owner cannot switch the trail off;
* the registry records the **identity** of the triggers, the trigger function
  and the watched columns (oids and definition hashes); :func:`verify_postgres`
  reports any difference (dropped and recreated triggers included);
* :func:`checkpoint` signs the chain head (Ed25519) and records it outside the
  database; :func:`verify_postgres` checks the trail against every recorded
  checkpoint, so a superuser's rewrite of history before a checkpoint is caught.

References
----------
.. [1] Schneier, B., & Kelsey, J. (1999). Secure audit logs to support computer
   forensics. ACM Transactions on Information and System Security, 2(2), 159-176.
.. [2] Crosby, S. A., & Wallach, D. S. (2009). Efficient data structures for
   tamper-evident logging. USENIX Security Symposium (signed commitments to
   the head of a hash-chained log).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from ..data._postgres import (
    TableRef,
    connect,
    import_psycopg,
    pg_snapshot,
    redact_dsn,
    resolve_table,
)
from ..exceptions import DataError, IntegrityError, InvalidParameterError

__all__ = [
    "AUDIT_ROLE",
    "AUDIT_SCHEMA",
    "PgCheckpoint",
    "PgProtection",
    "PgVerifyReport",
    "checkpoint",
    "protect",
    "protection_status",
    "unprotect",
    "verify_postgres",
]

#: Default schema that holds the registry, every trail and the functions.
AUDIT_SCHEMA = "flipguard_audit"
#: Default role that owns the audit schema and everything in it.
AUDIT_ROLE = "flipguard_auditor"
#: ``prev_hash`` of a trail's first row.
GENESIS = b"\x00" * 32
#: Names of the triggers installed on a protected table (statement-level, with transition tables).
TABLE_TRIGGERS = ("flipguard_audit_insert", "flipguard_audit_update", "flipguard_audit_delete",
                  "flipguard_audit_truncate")
_MIN_SERVER = 110000  # built-in sha256(), EXECUTE FUNCTION
_LIST_LIMIT = 1000
#: Settings pinned on the trigger function and on verify's session: the canonical text of a value.
CANONICAL_SETTINGS = (("extra_float_digits", "3"), ("DateStyle", "ISO, YMD"), ("TimeZone", "UTC"),
                      ("IntervalStyle", "iso_8601"), ("bytea_output", "hex"))
_GUARD_TAGS = ("ALTER TABLE", "DROP TABLE", "CREATE TRIGGER", "DROP TRIGGER", "ALTER TRIGGER",
               "DROP SCHEMA", "ALTER SCHEMA", "DROP OWNED", "ALTER FUNCTION", "DROP FUNCTION",
               "CREATE FUNCTION", "ALTER TYPE", "DROP TYPE", "ALTER DOMAIN", "DROP DOMAIN",
               # a child table (CREATE TABLE ... INHERITS) changes what reads of the table return; REVOKE can
               # take from the audit role the SELECT its TRUNCATE trigger reads the removed rows with
               "CREATE TABLE", "CREATE FOREIGN TABLE", "ALTER FOREIGN TABLE", "REVOKE")
#: Identity keys holding the values of an enum type of a watched column (``{pg_enum oid: label}``):
#: adding a value changes no row and is allowed; renaming one relabels every row that holds it.
_ENUM_KEYS = ("label_enum", "id_enum")


# --------------------------------------------------------------------------- results
@dataclass
class PgProtection:
    """Where a table's protection stands (``flipguard pg status``).

    ``protected`` is true only when the registry entry is active, the triggers
    exist and are enabled, the trigger function exists and the recorded
    identity (trigger and function oids and definitions, watched columns)
    still matches the catalog.
    """

    table: str
    protected: bool
    registered: bool = False
    audit_schema: str | None = None
    audit_role: str | None = None
    ddl_guard: bool = False
    id_column: str | None = None
    label_column: str | None = None
    trail: str | None = None
    installed_at: str | None = None
    installed_by: str | None = None
    triggers: dict[str, str] = field(default_factory=dict)
    identity_ok: bool | None = None
    identity_changes: list[str] = field(default_factory=list)
    n_events: int = 0
    head_seq: int | None = None
    head_hash: str | None = None
    last_event_at: str | None = None
    changed: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PgVerifyReport:
    """Result of :func:`verify_postgres`: the seal check cross-checked with the audit trail.

    ``explained`` lists changes since the seal that the trail records (with who
    and when: a difference from the seal all the same, so ``ok`` is false;
    ``ok_if_recorded`` accepts them); ``unexplained`` lists changes it does not
    (the trigger was bypassed: the worst case); ``trail_mismatches`` lists
    places where the trail and the table disagree even without a seal;
    ``chain_errors`` lists trail rows whose hash or link is wrong, or that
    differ from a signed checkpoint; ``temporary_changes`` lists labels that
    were changed and later restored by another transaction, with the window
    they were wrong in (recorded, so ``ok_if_recorded`` accepts them, but
    ``ok`` does not: a training run in between read them); ``duplicate_ids``
    lists ids held by more than one row of the table (the trail cannot tell
    such rows apart: a finding, with what the trail records of them).
    """

    table: str
    trail: str | None
    protection: dict[str, Any]
    n_events: int = 0
    head_seq: int | None = None
    head_hash: str | None = None
    chain_ok: bool = True
    chain_errors: list[dict[str, Any]] = field(default_factory=list)
    checkpoints_checked: int = 0
    seal_checked: bool = False
    seal_ok: bool | None = None
    seal: dict[str, Any] | None = None
    explained: list[dict[str, Any]] = field(default_factory=list)
    unexplained: list[dict[str, Any]] = field(default_factory=list)
    n_unexplained: int = 0
    trail_mismatches: list[dict[str, Any]] = field(default_factory=list)
    n_trail_mismatches: int = 0
    temporary_changes: list[dict[str, Any]] = field(default_factory=list)
    n_temporary_changes: int = 0
    duplicate_ids: list[dict[str, Any]] = field(default_factory=list)
    n_duplicate_ids: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Nothing differs from the seal, no label was temporarily changed, and the trail is intact."""
        return self.ok_if_recorded and self.seal_ok is not False and not self.temporary_changes

    @property
    def ok_if_recorded(self) -> bool:
        """Like :attr:`ok`, but changes the trail records (permanent or temporary) are fine."""
        signature_ok = not self.seal_checked or bool((self.seal or {}).get("signature", {}).get("valid"))
        return (self.chain_ok and not self.unexplained and not self.trail_mismatches
                and not self.duplicate_ids and not self.problems and signature_ok)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ok"] = self.ok
        out["ok_if_recorded"] = self.ok_if_recorded
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)


# --------------------------------------------------------------------------- names and SQL
def _sql():
    import_psycopg()
    from psycopg import sql

    return sql


def trail_name(ref: TableRef) -> str:
    """Audit table name for ``ref``: a readable prefix plus a hash of the exact names (<= 51 chars)."""
    readable = re.sub(r"[^a-z0-9_]+", "_", f"{ref.schema}_{ref.name}".lower()).strip("_")[:40] or "t"
    digest = hashlib.sha256(f"{ref.schema}\x00{ref.name}".encode()).hexdigest()[:10]
    return f"{readable}_{digest}"


def _check_name(value: str, what: str) -> str:
    if not isinstance(value, str) or not value or len(value.encode()) > 63 or "\x00" in value:
        raise InvalidParameterError(f"{what} must be a PostgreSQL name of 1 to 63 bytes, got {value!r}")
    return value


def _canon(v: dict[str, str]) -> str:
    """SQL text of a step's canonical content; ``v`` maps field -> SQL expression (variable or column)."""
    # arrays enter as their text form (array_out: every element quoted and escaped as needed, NULL
    # elements as an unquoted NULL): unambiguous, independent of session settings, and cheaper than jsonb
    return ("pg_catalog.jsonb_build_array({seq}, {op}, ({old_ids})::text, "
            "({new_ids})::text, ({old_labels})::text, "
            "({new_labels})::text, {sess}, {usr}, {app}, {addr}, {txid}, "
            "pg_catalog.to_char({at} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), "
            "{detail})::text").format(**v)


_CANON_COLUMNS = _canon(dict(seq="seq", op="op", old_ids="old_ids", new_ids="new_ids", old_labels="old_labels",
                             new_labels="new_labels", sess="session_user_name", usr="current_user_name",
                             app="application_name", addr="client_addr", txid="txid", at="logged_at",
                             detail="detail"))
_CANON_VARS = _canon(dict(seq="v_seq", op="p_op", old_ids="p_old_ids", new_ids="p_new_ids",
                          old_labels="p_old_labels", new_labels="p_new_labels", sess="v_sess", usr="v_usr",
                          app="v_app", addr="v_addr", txid="v_txid", at="v_at", detail="p_detail"))
_GENESIS_SQL = "'\\x" + GENESIS.hex() + "'::bytea"


def _fn_settings() -> str:
    sql = _sql()
    # row_security = off: a row-level security policy of the owner's on the table (whose expression would run
    # as the audit role when the TRUNCATE branch reads it) makes the read fail instead of being evaluated
    parts = ["SET search_path = pg_catalog, pg_temp", "SET row_security = off"]
    for name, value in CANONICAL_SETTINGS:
        parts.append(f"SET {name} = " + sql.Literal(value).as_string(None))
    return " ".join(parts)


class _Names:
    """Every object name for one protected table, composed once with psycopg.sql."""

    def __init__(self, conn, ref: TableRef, trail: str, id_col: str, label_col: str,
                 schema: str = AUDIT_SCHEMA) -> None:
        sql = _sql()
        self.ref, self.trail, self.schema_name = ref, trail, schema
        self.table = ref.ident
        self.trail_ident = sql.Identifier(schema, trail)
        self.seq_ident = sql.Identifier(schema, f"{trail}_seq")
        self.log_fn = sql.Identifier(schema, f"{trail}_log")
        self.append_fn = sql.Identifier(schema, f"{trail}_append")
        self.registry = sql.Identifier(schema, "protected")
        self.reject_fn = sql.Identifier(schema, "reject_change")
        self.identity_fn = sql.Identifier(schema, "identity")
        self.guard_fn = sql.Identifier(schema, "ddl_guard")
        self.rewrite_guard_fn = sql.Identifier(schema, "rewrite_guard")
        self.schema = sql.Identifier(schema)
        self.id_col, self.label_col = id_col, label_col
        self.id = sql.Identifier(id_col)
        self.label = sql.Identifier(label_col)
        self.s = {  # SQL text fragments for PL/pgSQL bodies
            "trail": self.trail_ident.as_string(conn),
            "seq_lit": sql.Literal(self.seq_ident.as_string(conn)).as_string(conn),
            "registry": self.registry.as_string(conn),
            "trail_lit": sql.Literal(trail).as_string(conn),
            "id": self.id.as_string(conn),
            "label": self.label.as_string(conn),
            "table": self.table.as_string(conn),
        }


def _column_text(conn, relid: int, col: str) -> tuple[str, int | None]:
    """``(SQL text of the canonical text of column col, the column's type oid)``.

    ``col::text`` looks the conversion up in ``pg_cast``, and whoever owns a type may ``CREATE CAST
    (its_type AS text) WITH FUNCTION its_function``: a privileged reader (the audit role's trigger, a
    superuser's ``protect``, the auditor's ``verify``) would run the owner's code, which may lie (a constant
    hides every change) or, as the audit role, rewrite the trail.  Only a superuser may create a cast
    between two built-in types, so a column whose type is built-in (``pg_catalog``; a domain counts as
    its base type, whose cast ``::text`` uses) keeps ``::text`` (booleans ``true``/``false``, ``char(n)``
    without its padding, as always).  Any other type (an enum, an array or domain of one, a composite or
    range type) is converted by its **output function**, as ``COPY`` does: ``pg_catalog.concat`` calls it
    and never looks at ``pg_cast``; the text is what ``::text`` gave before any cast was created (an
    enum's label), and a NULL stays NULL (``num_nulls``: ``concat`` would make it ``''``).  Only
    ``pg_catalog`` functions and operators appear, so no operator of the owner's is picked either.
    """
    sql = _sql()
    row = conn.execute("""
        SELECT a.atttypid::int8,
               (WITH RECURSIVE d(oid, typtype, nsp, base) AS (
                  SELECT t.oid, t.typtype, t.typnamespace, t.typbasetype FROM pg_catalog.pg_type t
                  WHERE t.oid = a.atttypid
                  UNION ALL
                  SELECT t.oid, t.typtype, t.typnamespace, t.typbasetype
                  FROM d JOIN pg_catalog.pg_type t ON t.oid = d.base WHERE d.typtype = 'd')
                SELECT d.nsp = 'pg_catalog'::regnamespace FROM d WHERE d.typtype <> 'd')
        FROM pg_catalog.pg_attribute a WHERE a.attrelid = %s AND a.attname = %s AND NOT a.attisdropped""",
        (relid, col)).fetchone()
    ident = sql.Identifier(col).as_string(conn)
    if row is not None and row[1]:
        return f"({ident})::text", int(row[0])
    return (f"(CASE WHEN pg_catalog.num_nulls({ident}) OPERATOR(pg_catalog.=) 0 "
            f"THEN pg_catalog.concat({ident}) END)"), (int(row[0]) if row is not None else None)


def _table_texts(conn, n: _Names):
    """``SELECT <id text> AS rid, <label text> AS lab FROM ONLY <table>`` (composed), safe for any column type.

    ``ONLY``: rows of a child table (inheritance) are not the protected table's; :func:`protect` refuses a
    table with children and the DDL guard refuses adding one, but without the guard they are not read.
    """
    sql = _sql()
    id_text, _ = _column_text(conn, n.ref.oid, n.id_col)
    label_text, _ = _column_text(conn, n.ref.oid, n.label_col)
    return sql.SQL("SELECT " + id_text + " AS rid, " + label_text + " AS lab FROM ONLY {tbl}").format(tbl=n.table)


def guard_trigger_name(schema: str) -> str:
    """Name of the event trigger (database-wide) that guards the tables of one audit schema."""
    digest = hashlib.sha256(schema.encode()).hexdigest()[:12]
    return f"flipguard_guard_{digest}"


def rewrite_trigger_name(schema: str) -> str:
    """Name of the ``table_rewrite`` event trigger that refuses rewriting the tables of one audit schema."""
    return "flipguard_rewrite_" + guard_trigger_name(schema).removeprefix("flipguard_guard_")


def _chain_declare(txid_expr: str) -> str:
    return f"""
  v_txid bigint := {txid_expr};
  v_holder bigint;
  v_last bigint;
  v_prev bytea;
  v_seq bigint;
  v_at timestamptz;
  v_sess text := session_user;
  v_usr text;
  v_app text := current_setting('application_name', true);
  v_addr text := host(inet_client_addr());"""


def _chain_append(n: _Names) -> str:
    """PL/pgSQL statements appending one step (fields in ``p_*`` variables) to the chain."""
    s = n.s
    return f"""
  -- one writer extends the chain at a time: the first audited statement of a
  -- transaction locks the registry row until commit
  SELECT chain_txid INTO v_holder FROM {s['registry']} WHERE trail = {s['trail_lit']};
  IF NOT FOUND THEN
    RAISE EXCEPTION 'flipguard: audit registry entry % is missing', {s['trail_lit']}
      USING ERRCODE = 'object_not_in_prerequisite_state';
  END IF;
  IF v_holder IS DISTINCT FROM v_txid THEN
    -- the UPDATE takes the row lock (a later writer waits for this one's commit, then re-reads the row)
    UPDATE {s['registry']} SET chain_txid = v_txid,
        (checkpoint_seq, checkpoint_hash) = (SELECT seq, row_hash FROM {s['trail']} ORDER BY seq DESC LIMIT 1)
      WHERE trail = {s['trail_lit']};
  END IF;
  -- a fresh snapshot, taken after the lock: sees every committed step of the chain
  SELECT seq, row_hash INTO v_last, v_prev FROM {s['trail']} ORDER BY seq DESC LIMIT 1;
  v_prev := coalesce(v_prev, {_GENESIS_SQL});
  v_usr := current_setting('role');
  IF v_usr IS NULL OR v_usr = 'none' THEN v_usr := session_user; END IF;
  v_seq := nextval({s['seq_lit']}::regclass);
  v_at := clock_timestamp();
  INSERT INTO {s['trail']} (seq, op, n_rows, old_ids, new_ids, old_labels, new_labels, session_user_name,
      current_user_name, application_name, client_addr, txid, logged_at, detail, prev_hash, row_hash)
  VALUES (v_seq, p_op, coalesce(cardinality(coalesce(p_old_ids, p_new_ids)), 0), p_old_ids, p_new_ids,
      p_old_labels, p_new_labels, v_sess, v_usr, v_app, v_addr,
      v_txid, v_at, p_detail, v_prev,
      sha256(v_prev || convert_to({_CANON_VARS}, 'UTF8')));"""


def _append_body(n: _Names, txid_expr: str) -> str:
    """PL/pgSQL body of ``<trail>_append(p_op, p_detail)`` (PROTECT / UNPROTECT rows)."""
    return f"""
DECLARE{_chain_declare(txid_expr)}
  p_old_ids text[]; p_new_ids text[]; p_old_labels text[]; p_new_labels text[];
BEGIN{_chain_append(n)}
END
"""


def _log_body(n: _Names, txid_expr: str, texts: dict[str, Any]) -> str:
    """PL/pgSQL body of the statement-level trigger function ``<trail>_log()``.

    Transition tables ``fg_old`` / ``fg_new`` hold the statement's rows; an
    UPDATE's old and new rows are paired by position (both tuplestores are
    filled row by row, together) and only pairs whose id or label text changed
    are recorded.  A statement that changes no label or id writes nothing.

    ``texts`` holds the conversion of each watched column to text chosen for its type at
    :func:`protect` (see :func:`_column_text`) and the type oids it was chosen for.  Every statement
    first checks that the columns still have those types: a column retyped since (possible without the
    DDL guard) would be converted by a stale choice, maybe through a cast its new type's owner wrote, so
    the write fails until ``pg protect`` runs again.  Only texts are compared, with ``pg_catalog``
    operators (``search_path`` is pinned): no operator of the owner's type runs.

    ``TRUNCATE`` (a ``BEFORE`` trigger) records the ids and labels of every row it removes in ``detail``
    (``ids``, ``labels``: JSON arrays, ``null`` for a NULL), read as the audit role (``protect`` grants it
    ``SELECT`` on the two columns; if it may not read them, the step records no rows): otherwise a flip
    made by truncating and re-inserting, restored the same way later, leaves no window the trail can show.
    """
    s = n.s
    lit = _sql().Literal
    id_lit, label_lit = lit(n.id_col).as_string(None), lit(n.label_col).as_string(None)
    idt, labt = texts["id"], texts["label"]
    return f"""
DECLARE{_chain_declare(txid_expr)}
  p_op text := TG_OP;
  p_old_ids text[]; p_new_ids text[]; p_old_labels text[]; p_new_labels text[];
  p_detail jsonb;
BEGIN
  IF (SELECT pg_catalog.count(*) FROM pg_catalog.pg_attribute a
      WHERE a.attrelid OPERATOR(pg_catalog.=) TG_RELID AND NOT a.attisdropped
        AND ((a.attname OPERATOR(pg_catalog.=) {id_lit}
              AND a.atttypid OPERATOR(pg_catalog.=) {int(texts['id_type'])}::oid)
          OR (a.attname OPERATOR(pg_catalog.=) {label_lit}
              AND a.atttypid OPERATOR(pg_catalog.=) {int(texts['label_type'])}::oid))) <> 2 THEN
    RAISE EXCEPTION 'flipguard: watched column % or % of %.% was renamed, dropped or retyped since pg protect; the trail cannot record it: run pg protect again',
      {id_lit}, {label_lit}, TG_TABLE_SCHEMA, TG_TABLE_NAME USING ERRCODE = 'object_not_in_prerequisite_state';
  END IF;
  IF TG_OP = 'UPDATE' THEN
    SELECT array_agg({idt}), array_agg({labt}) INTO p_old_ids, p_old_labels FROM fg_old;
    SELECT array_agg({idt}), array_agg({labt}) INTO p_new_ids, p_new_labels FROM fg_new;
    IF p_old_ids IS NULL OR (p_old_ids IS NOT DISTINCT FROM p_new_ids
                             AND p_old_labels IS NOT DISTINCT FROM p_new_labels) THEN
      RETURN NULL;  -- no id or label changed: nothing to record, no lock taken
    END IF;
    SELECT array_agg(u.oi ORDER BY u.k), array_agg(u.ni ORDER BY u.k), array_agg(u.ol ORDER BY u.k),
           array_agg(u.nl ORDER BY u.k)
      INTO p_old_ids, p_new_ids, p_old_labels, p_new_labels
      FROM unnest(p_old_ids, p_new_ids, p_old_labels, p_new_labels) WITH ORDINALITY AS u(oi, ni, ol, nl, k)
      WHERE u.oi IS DISTINCT FROM u.ni OR u.ol IS DISTINCT FROM u.nl;
  ELSIF TG_OP = 'INSERT' THEN
    SELECT array_agg({idt}), array_agg({labt}) INTO p_new_ids, p_new_labels FROM fg_new;
    IF p_new_ids IS NULL THEN RETURN NULL; END IF;
  ELSIF TG_OP = 'DELETE' THEN
    SELECT array_agg({idt}), array_agg({labt}) INTO p_old_ids, p_old_labels FROM fg_old;
    IF p_old_ids IS NULL THEN RETURN NULL; END IF;
  ELSE
    IF TG_WHEN = 'BEFORE' AND pg_catalog.has_schema_privilege(TG_TABLE_SCHEMA, 'USAGE')
       AND pg_catalog.has_column_privilege(TG_RELID, {id_lit}, 'SELECT')
       AND pg_catalog.has_column_privilege(TG_RELID, {label_lit}, 'SELECT') THEN
      -- in detail, not in old_ids/old_labels: a TRUNCATE step stays one step of no row for earlier readers
      SELECT array_agg({idt}), array_agg({labt}) INTO p_old_ids, p_old_labels FROM ONLY {s['table']};
      p_detail := jsonb_build_object('table', TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME,
                                     'ids', coalesce(to_jsonb(p_old_ids), '[]'::jsonb),
                                     'labels', coalesce(to_jsonb(p_old_labels), '[]'::jsonb));
      p_old_ids := NULL; p_old_labels := NULL;
    ELSE
      p_detail := jsonb_build_object('table', TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME);
    END IF;
  END IF;{_chain_append(n)}
  RETURN NULL;
END
"""


def _reject_body(audit_role: str) -> str:
    role = _sql().Literal(audit_role).as_string(None)
    return f"""
BEGIN
  IF TG_OP = 'INSERT' AND current_user = {role} THEN
    RETURN NEW;  -- the audit role's own functions append
  END IF;
  RAISE EXCEPTION 'flipguard audit trail %.% is append-only: % is not allowed',
    TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP USING ERRCODE = 'insufficient_privilege';
END
"""


def _identity_sql(schema: str, audit_role: str) -> str:
    """Body of ``<schema>.identity(relid, trail, id_attnum, label_attnum)``: what must not change.

    Keys added over time are present only when they say something (``inherits`` only for a table in an
    inheritance tree, ``audit_reads`` only when the audit role may read the watched columns), so that the
    identity of a table protected by an earlier flipguard stays what it recorded.
    """
    lit = _sql().Literal(schema).as_string(None)
    role = _sql().Literal(audit_role).as_string(None)
    return f"""
SELECT pg_catalog.jsonb_build_object(
  'table', (SELECT pg_catalog.jsonb_build_array(n.nspname, c.relname, c.relkind::text)
            FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
            WHERE c.oid = p_relid),
  'columns', (SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_array(a.attnum, a.attname,
                       pg_catalog.format_type(a.atttypid, a.atttypmod), a.attisdropped) ORDER BY a.attnum)
              FROM pg_catalog.pg_attribute a WHERE a.attrelid = p_relid AND a.attnum IN (p_id_att, p_label_att)),
  'triggers', (SELECT pg_catalog.jsonb_object_agg(t.tgname, pg_catalog.jsonb_build_array(
                        t.oid::int8, t.tgenabled::text, pg_catalog.md5(pg_catalog.pg_get_triggerdef(t.oid))))
               FROM pg_catalog.pg_trigger t WHERE t.tgrelid = p_relid AND t.tgname LIKE 'flipguard\\_audit\\_%'),
  'function', (SELECT pg_catalog.jsonb_build_array(p.oid::int8, pg_catalog.md5(p.prosrc
                        || coalesce(p.proconfig::text, '') || p.prosecdef::text
                        || p.proowner::regrole::text))
               FROM pg_catalog.pg_proc p
               WHERE p.oid = pg_catalog.to_regprocedure(pg_catalog.quote_ident({lit}) || '.'
                                                      || pg_catalog.quote_ident(p_trail || '_log') || '()')))
  -- the values of an enum type behind a watched column (directly, through a domain or an array): ALTER TYPE
  -- ... RENAME VALUE relabels every row and fires no trigger.  Only present for enum columns, so the identity
  -- of any other table is what it always was.
  || coalesce((
    SELECT pg_catalog.jsonb_object_agg(s.k, s.m) FROM (
      SELECT CASE WHEN a.attnum = p_label_att THEN 'label_enum' ELSE 'id_enum' END AS k,
             (WITH RECURSIVE ty(oid) AS (
                SELECT a.atttypid
                UNION
                SELECT v.x FROM ty JOIN pg_catalog.pg_type t ON t.oid = ty.oid
                  CROSS JOIN LATERAL (VALUES (t.typbasetype), (t.typelem)) v(x) WHERE v.x <> 0)
              SELECT pg_catalog.jsonb_object_agg(e.oid::text, e.enumlabel) FROM pg_catalog.pg_enum e
              WHERE e.enumtypid IN (SELECT ty.oid FROM ty)) AS m
      FROM pg_catalog.pg_attribute a
      WHERE a.attrelid = p_relid AND a.attnum IN (p_id_att, p_label_att) AND NOT a.attisdropped) s
    WHERE s.m IS NOT NULL), '{{}}'::jsonb)
  -- inheritance parents and children (ALTER TABLE ... INHERIT, CREATE TABLE ... INHERITS, ATTACH PARTITION):
  -- a write through a parent fires no statement trigger of the child, a child's rows are read with the table
  || coalesce((
    SELECT pg_catalog.jsonb_build_object('inherits', pg_catalog.jsonb_agg(pg_catalog.jsonb_build_array(
             i.inhparent::int8, i.inhrelid::int8) ORDER BY i.inhparent, i.inhrelid))
    FROM pg_catalog.pg_inherits i WHERE i.inhrelid = p_relid OR i.inhparent = p_relid
    HAVING pg_catalog.count(*) > 0), '{{}}'::jsonb)
  -- the audit role may read the watched columns (its TRUNCATE trigger records the rows it removes)
  || CASE WHEN pg_catalog.has_schema_privilege({role}, (SELECT c.relnamespace FROM pg_catalog.pg_class c
                                                        WHERE c.oid = p_relid), 'USAGE')
               AND pg_catalog.has_column_privilege({role}, p_relid, p_id_att, 'SELECT')
               AND pg_catalog.has_column_privilege({role}, p_relid, p_label_att, 'SELECT')
          THEN '{{"audit_reads": true}}'::jsonb ELSE '{{}}'::jsonb END
"""


def _guard_body(schema: str, audit_role: str) -> str:
    sql = _sql()
    reg = sql.Identifier(schema, "protected").as_string(None)
    reg_lit = sql.Literal(reg).as_string(None)
    ident = sql.Identifier(schema, "identity").as_string(None)
    role = sql.Literal(audit_role).as_string(None)
    enum_keys = "ARRAY[" + ", ".join(sql.Literal(k).as_string(None) for k in (*_ENUM_KEYS, "audit_reads")) + "]::text[]"
    return f"""
DECLARE
  r record;
  v_now jsonb;
  v_admin boolean;
BEGIN
  -- an administrator (superuser or audit role member): pg protect / unprotect
  v_admin := coalesce((SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = session_user), false)
             OR pg_catalog.pg_has_role(session_user, {role}, 'MEMBER');
  IF pg_catalog.to_regclass({reg_lit}) IS NULL THEN
    RETURN;
  END IF;
  FOR r IN EXECUTE 'SELECT trail, relid, table_schema, table_name, id_attnum, label_attnum, identity, '
           || 'seen_identity FROM '
           || {reg_lit} || ' WHERE active' LOOP
    v_now := {ident}(r.relid, r.trail, r.id_attnum, r.label_attnum);
    CONTINUE WHEN v_now IS NOT DISTINCT FROM r.identity;
    -- CREATE TABLE can only touch a protected table by inheriting from it, REVOKE only by taking the audit
    -- role's SELECT: a difference of anything else was there before this statement, not made by it
    IF tg_tag IN ('CREATE TABLE', 'CREATE FOREIGN TABLE') THEN
      CONTINUE WHEN v_now->'inherits' IS NOT DISTINCT FROM r.identity->'inherits';
    ELSIF tg_tag = 'REVOKE' THEN
      CONTINUE WHEN v_now ? 'audit_reads' OR NOT r.identity ? 'audit_reads';
    END IF;
    IF r.identity IS NOT NULL AND (v_now - {enum_keys}) = (r.identity - {enum_keys})
       AND coalesce(v_now->'label_enum', '{{}}') @> coalesce(r.identity->'label_enum', '{{}}')
       AND coalesce(v_now->'id_enum', '{{}}') @> coalesce(r.identity->'id_enum', '{{}}')
       AND (v_now ? 'audit_reads' OR NOT r.identity ? 'audit_reads') THEN
      -- values added to an enum type (ALTER TYPE ... ADD VALUE): no row changes; remember them, so that
      -- renaming one of them later is refused too (likewise SELECT granted to the audit role)
      EXECUTE 'UPDATE ' || {reg_lit} || ' SET identity = $1 WHERE trail = $2' USING v_now, r.trail;
      CONTINUE;
    END IF;
    IF v_admin THEN
      -- an administrator's change (pg verify reports it until pg protect records it): remember it, so that
      -- it does not make every later statement of everyone else fail; only a further change does
      EXECUTE 'UPDATE ' || {reg_lit} || ' SET seen_identity = $1 WHERE trail = $2' USING v_now, r.trail;
      CONTINUE;
    END IF;
    CONTINUE WHEN v_now IS NOT DISTINCT FROM r.seen_identity;
    RAISE EXCEPTION 'flipguard: % changes % of protected table %.%; only a superuser or a member of role % may (pg unprotect first)',
      tg_tag, CASE WHEN (v_now - {enum_keys}) = (r.identity - {enum_keys})
                        AND (v_now ? 'audit_reads' OR NOT r.identity ? 'audit_reads')
                   THEN 'the values of the enum type of a watched column (renaming a value relabels every row)'
                   WHEN (v_now - {enum_keys}) = (r.identity - {enum_keys})
                   THEN 'the audit role''s SELECT on the watched columns (its TRUNCATE trigger reads them)'
                   WHEN v_now->'inherits' IS DISTINCT FROM r.identity->'inherits'
                   THEN 'the inheritance (a parent or child table: writes through a parent fire no trigger) of'
                   ELSE 'the audit triggers or watched columns' END,
      r.table_schema, r.table_name, {role} USING ERRCODE = 'insufficient_privilege';
  END LOOP;
EXCEPTION WHEN undefined_table OR undefined_function THEN
  RETURN;  -- the registry or identity function was dropped by a concurrent pg unprotect --drop-trail
END
"""


def _rewrite_guard_body(schema: str, audit_role: str) -> str:
    """Body of ``<schema>.rewrite_guard()``, run by the ``table_rewrite`` event trigger.

    ``ALTER TABLE t ALTER COLUMN label TYPE text USING (CASE WHEN id = 2 THEN 'spam' ELSE label END)``
    rewrites labels without firing a row or statement trigger, and to the same type it changes nothing
    the identity holds.  PostgreSQL reports which table is rewritten and why, not which column: any
    rewrite of a protected table that recomputes a column (reason bit 4, ``AT_REWRITE_COLUMN_REWRITE``)
    is refused unless an administrator runs it.  Rewrites that copy rows unchanged (``SET LOGGED``,
    ``SET ACCESS METHOD``) or fill a new column (``ADD COLUMN ... DEFAULT random()``) are left alone.
    """
    sql = _sql()
    reg_lit = sql.Literal(sql.Identifier(schema, "protected").as_string(None)).as_string(None)
    role = sql.Literal(audit_role).as_string(None)
    return f"""
DECLARE
  r record;
BEGIN
  IF (pg_catalog.pg_event_trigger_table_rewrite_reason() & 4) = 0
     OR pg_catalog.to_regclass({reg_lit}) IS NULL
     OR coalesce((SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = session_user), false)
     OR pg_catalog.pg_has_role(session_user, {role}, 'MEMBER') THEN
    RETURN;
  END IF;
  FOR r IN EXECUTE 'SELECT table_schema, table_name FROM ' || {reg_lit} || ' WHERE active AND relid = $1'
           USING pg_catalog.pg_event_trigger_table_rewrite_oid() LOOP
    RAISE EXCEPTION 'flipguard: % rewrites protected table %.% (a column type change recomputes every row without firing a trigger); only a superuser or a member of role % may (pg unprotect first)',
      tg_tag, r.table_schema, r.table_name, {role} USING ERRCODE = 'insufficient_privilege';
  END LOOP;
EXCEPTION WHEN undefined_table THEN
  RETURN;  -- the registry was dropped by a concurrent pg unprotect --drop-trail
END
"""


# --------------------------------------------------------------------------- helpers
def _server_check(conn, where: str) -> None:
    if conn.info.server_version < _MIN_SERVER:
        raise DataError(f"{where}: the audit trail needs PostgreSQL 11 or newer "
                        f"(server is {conn.info.server_version})")


def _txid_expr(conn) -> str:
    if conn.info.server_version >= 130000:
        return "pg_current_xact_id()::text::bigint"
    return "txid_current()"


def _columns(conn, ref: TableRef, cols: dict[str, str], where: str) -> dict[str, int]:
    """Check the id and label columns exist; their attnums."""
    rows = conn.execute(
        "SELECT attname, attnum FROM pg_catalog.pg_attribute WHERE attrelid = %s AND attnum > 0 "
        "AND NOT attisdropped ORDER BY attnum", (ref.oid,)).fetchall()
    names = dict(rows)
    for role, col in cols.items():
        if not isinstance(col, str) or not col:
            raise InvalidParameterError(f"give the {role} column (--{role})")
        if col not in names:
            raise DataError(f"{where}: {role} column '{col}' not found in table {ref} "
                            f"(columns: {', '.join(names)})")
    if cols.get("id") == cols.get("label"):
        raise InvalidParameterError("the id and label columns must differ")
    return {role: names[col] for role, col in cols.items()}


def _check_unique_id(conn, ref: TableRef, id_col: str, attnum: int, where: str) -> None:
    """The id column must be unique (primary key, unique constraint or a unique index on exactly it).

    The trail tells rows apart by their id: with two rows of one id it cannot say which one changed.
    A partial or expression index does not count; ``INCLUDE`` columns do not matter.
    """
    unique = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = %s AND i.indisunique "
        "AND i.indisvalid AND i.indnkeyatts = 1 AND i.indkey[0] = %s AND i.indpred IS NULL "
        "AND i.indexprs IS NULL)", (ref.oid, attnum)).fetchone()[0]
    if not unique:
        raise DataError(f"{where}: id column '{id_col}' of {ref} has no primary key or unique constraint; the trail "
                        f"tells rows apart by their id: add one on exactly that column (ALTER TABLE ... ADD PRIMARY "
                        f"KEY or ADD UNIQUE), then protect")
    nullable, has_null = conn.execute(
        "SELECT NOT a.attnotnull, EXISTS (SELECT 1 FROM pg_catalog.pg_constraint c WHERE c.conrelid = %s "
        "AND c.contype = 'p' AND c.conkey = ARRAY[a.attnum]) FROM pg_catalog.pg_attribute a "
        "WHERE a.attrelid = %s AND a.attnum = %s", (ref.oid, ref.oid, attnum)).fetchone()
    if nullable and not has_null:  # a UNIQUE id may still be NULL, any number of times
        raise DataError(f"{where}: id column '{id_col}' of {ref} allows NULL; a unique constraint lets any number "
                        f"of rows have no id, and the trail cannot tell them apart: make it NOT NULL (ALTER TABLE "
                        f"... ALTER COLUMN {id_col} SET NOT NULL), then protect")


def _grant_readers(conn, n: _Names, ref: TableRef, audit_role: str, readers: list[str], where: str) -> list[str]:
    """Give each reader what ``pg verify`` / ``pg status`` / ``pg checkpoint`` read; what was new.

    Runs as the administrator: ``USAGE`` on the audit schema, ``SELECT`` on the registry and the
    trail, ``EXECUTE`` on the identity function (granted by the audit role, their owner), and
    ``USAGE`` on the table's schema and ``SELECT`` on the table (granted by the administrator).
    """
    sql = _sql()
    changed = []
    table_schema = sql.Identifier(ref.schema)
    for reader in readers:
        had = conn.execute(
            "SELECT pg_catalog.has_schema_privilege(%(r)s, %(s)s, 'USAGE') "
            "AND pg_catalog.has_table_privilege(%(r)s, %(reg)s::regclass, 'SELECT') "
            "AND pg_catalog.has_table_privilege(%(r)s, %(trail)s::regclass, 'SELECT') "
            "AND pg_catalog.has_function_privilege(%(r)s, %(fn)s::regprocedure, 'EXECUTE') "
            "AND pg_catalog.has_schema_privilege(%(r)s, %(ts)s, 'USAGE') "
            "AND pg_catalog.has_table_privilege(%(r)s, %(t)s::oid, 'SELECT')",
            {"r": reader, "s": n.schema_name, "reg": n.registry.as_string(conn),
             "trail": n.trail_ident.as_string(conn),
             "fn": n.identity_fn.as_string(conn) + "(oid, text, int2, int2)",
             "ts": ref.schema, "t": ref.oid}).fetchone()[0]
        r = sql.Identifier(reader)
        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(audit_role)))
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(n.schema, r))
        conn.execute(sql.SQL("GRANT SELECT ON {}, {} TO {}").format(n.registry, n.trail_ident, r))
        conn.execute(sql.SQL("GRANT EXECUTE ON FUNCTION {}(oid, text, int2, int2) TO {}").format(n.identity_fn, r))
        conn.execute("RESET ROLE")
        # only what is missing (PUBLIC may have it already); a non-superuser administrator may lack the
        # grant option, and PostgreSQL then only warns: checked below
        if not conn.execute("SELECT pg_catalog.has_schema_privilege(%s, %s, 'USAGE')",
                            (reader, ref.schema)).fetchone()[0]:
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(table_schema, r))
        if not conn.execute("SELECT pg_catalog.has_table_privilege(%s, %s::oid, 'SELECT')",
                            (reader, ref.oid)).fetchone()[0]:
            conn.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(n.table, r))
        ok = conn.execute("SELECT pg_catalog.has_schema_privilege(%s, %s, 'USAGE') "
                          "AND pg_catalog.has_table_privilege(%s, %s::oid, 'SELECT')",
                          (reader, ref.schema, reader, ref.oid)).fetchone()[0]
        if not ok:
            raise DataError(f"{where}: cannot give reader '{reader}' SELECT on table {ref} (pg verify reads it): "
                            f"this role may not grant it; as the table's owner: GRANT USAGE ON SCHEMA "
                            f"{table_schema.as_string(conn)} TO {r.as_string(conn)}; GRANT SELECT ON "
                            f"{n.table.as_string(conn)} TO {r.as_string(conn)}")
        if not had:
            changed.append(f"read access for {reader} (trail, registry, table)")
    return changed


def _registry_exists(conn, schema: str) -> bool:
    sql = _sql()
    return conn.execute("SELECT pg_catalog.to_regclass(%s) IS NOT NULL",
                        (sql.Identifier(schema, "protected").as_string(conn),)).fetchone()[0]


def _registry_row(conn, ref: TableRef, schema: str) -> dict[str, Any] | None:
    sql = _sql()
    if not _registry_exists(conn, schema):
        return None
    cur = conn.execute(sql.SQL(
        "SELECT trail, relid::int8, table_schema, table_name, id_column, label_column, id_attnum, label_attnum, "
        "active, installed_at, installed_by, checkpoint_seq, checkpoint_hash, identity, audit_role "
        "FROM {} WHERE relid = %s").format(sql.Identifier(schema, "protected")), (ref.oid,))
    row = cur.fetchone()
    if row is None:
        return None
    return dict(zip([d.name for d in cur.description], row))


def _triggers(conn, oid: int) -> dict[str, str]:
    """Our triggers on table ``oid`` -> ``"enabled"``, ``"disabled"``, ``"replica only"`` or ``"always"``."""
    states = {"O": "enabled", "D": "disabled", "R": "replica only", "A": "always"}
    rows = conn.execute("SELECT tgname, tgenabled::text FROM pg_catalog.pg_trigger "
                        "WHERE tgrelid = %s AND tgname LIKE 'flipguard\\_audit\\_%%'", (oid,)).fetchall()
    return {name: states.get(state, state) for name, state in rows}


def _function_exists(conn, ident) -> bool:
    return conn.execute("SELECT pg_catalog.to_regproc(%s) IS NOT NULL",
                        (ident.as_string(conn),)).fetchone()[0]


def _identity(conn, n: _Names, reg: dict) -> dict | None:
    if not _function_exists(conn, n.identity_fn):
        return None
    sql = _sql()
    return conn.execute(sql.SQL("SELECT {}(%s::oid, %s, %s::int2, %s::int2)").format(n.identity_fn),
                        (reg["relid"], reg["trail"], reg["id_attnum"], reg["label_attnum"])).fetchone()[0]


def identity_changes(before: dict | None, now: dict | None) -> list[str]:
    """What differs between two identities (``<schema>.identity(...)`` values), in words."""
    if before is None or now is None:
        return [] if before == now else ["the recorded identity of the protection is missing"]
    out = []
    if before.get("table") != now.get("table"):
        out.append(f"table renamed or dropped ({before.get('table')} -> {now.get('table')})")
    if before.get("columns") != now.get("columns"):
        out.append(f"watched columns changed ({before.get('columns')} -> {now.get('columns')})")
    bt, nt = before.get("triggers") or {}, now.get("triggers") or {}
    for name in sorted(set(bt) | set(nt)):
        b, a = bt.get(name), nt.get(name)
        if b == a:
            continue
        if a is None:
            out.append(f"trigger {name} dropped")
        elif b is None:
            out.append(f"trigger {name} added")
        elif b[0] != a[0]:
            out.append(f"trigger {name} dropped and recreated (oid {b[0]} -> {a[0]})")
        elif b[2] != a[2]:
            out.append(f"trigger {name} definition changed")
        else:
            out.append(f"trigger {name} state changed ({b[1]} -> {a[1]})")
    bf, nf = before.get("function"), now.get("function")
    if bf != nf:
        if nf is None:
            out.append("trigger function dropped")
        elif bf is None or bf[0] != nf[0]:
            out.append("trigger function dropped and recreated")
        else:
            out.append("trigger function replaced (body, settings, security or owner changed)")
    if before.get("inherits") != now.get("inherits"):
        out.append("the table's inheritance changed (a parent or child table added or removed: writes "
                   "through a parent fire no trigger of the table, a child's rows are read with it)")
    if before.get("audit_reads") and not now.get("audit_reads"):
        out.append("the audit role's SELECT on the watched columns was revoked (TRUNCATE steps no longer "
                   "record the rows they remove)")
    for key, what, values in (("label_enum", "label", "labels"), ("id_enum", "id", "ids")):
        renamed = enum_renames(before, now, key)
        gone = sorted(label for oid, label in (before.get(key) or {}).items() if oid not in (now.get(key) or {}))
        if renamed:
            out.append(f"the {what}'s enum type was altered: {values} renamed ("
                       + ", ".join(f"{_fmt(a)} -> {_fmt(b)}" for a, b in renamed.items())
                       + "), which changes every row holding them without firing a trigger")
        if gone and before.get("columns") == now.get("columns"):
            out.append(f"the {what}'s enum type lost values ({', '.join(_fmt(v) for v in gone)})")
    return out


def enum_renames(before: dict | None, now: dict | None, key: str = "label_enum") -> dict[str, str]:
    """``{old label: new label}`` for every value of a watched column's enum type renamed between two identities.

    Values are matched by their ``pg_enum`` oid, which ``ALTER TYPE ... RENAME VALUE`` keeps; values
    added since (``ADD VALUE``) change no row and are not listed.
    """
    b, a = (before or {}).get(key) or {}, (now or {}).get(key) or {}
    return {b[oid]: a[oid] for oid in sorted(b, key=int) if oid in a and a[oid] != b[oid]}


def _head(conn, trail_ident) -> tuple[int, int | None, str | None, str | None]:
    sql = _sql()
    row = conn.execute(sql.SQL(
        "SELECT (SELECT count(*) FROM {t}), h.seq, h.row_hash, h.logged_at FROM "
        "(SELECT 1) one LEFT JOIN (SELECT seq, row_hash, logged_at FROM {t} ORDER BY seq DESC LIMIT 1) h "
        "ON true").format(t=trail_ident)).fetchone()
    n, seq, h, at = row
    return int(n), seq, (bytes(h).hex() if h is not None else None), (at.isoformat() if at else None)


def _canonical_session(conn) -> None:
    for name, value in CANONICAL_SETTINGS:
        conn.execute("SELECT pg_catalog.set_config(%s, %s, true)", (name, value))


# --------------------------------------------------------------------------- protect / unprotect / status
@contextlib.contextmanager
def _admin_transaction(dsn: str, action: str, table: str):
    """One transaction holding flipguard's advisory lock: commit on success, roll back on any error.

    Server errors become one :class:`DataError` line, ``"<dsn>: cannot <action> <table>: ..."``.
    """
    psycopg = import_psycopg()
    where = redact_dsn(dsn)
    conn = connect(dsn, autocommit=False)
    try:
        conn.execute("SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('flipguard_audit'))")
        yield conn
        conn.commit()
    except psycopg.Error as exc:
        conn.rollback()
        raise DataError(f"{where}: cannot {action} {table}: {_msg(exc)}") from None
    except BaseException:
        conn.rollback()
        raise
    finally:
        conn.close()


def protect(dsn: str, table: str, *, id: str, label: str, audit_role: str = AUDIT_ROLE,  # noqa: A002
            schema: str = AUDIT_SCHEMA, readers: list[str] | tuple[str, ...] = ()) -> PgProtection:
    """Install (idempotently) the audit trail on ``table``: an administrator's act.

    Parameters
    ----------
    dsn : str
        ``postgresql://`` connection string of an **administrator**: a
        superuser (then the DDL guard is installed too), or a role that is a
        member of ``audit_role``, may create the schema, and owns the table or
        holds ``TRIGGER`` on it (then there is no DDL guard: the owner can
        still disable the triggers, which :func:`verify_postgres` detects).
    table : str
        Table to protect, optionally ``"schema.table"`` (a plain table).
    id, label : str
        The id column (rows are identified by it in the trail) and the label column.
    audit_role : str, default="flipguard_auditor"
        Role that owns the trail; created ``NOLOGIN`` if missing.  The table's
        owner must not be a member of it.
    schema : str, default="flipguard_audit"
        Schema of the registry and trails, owned by ``audit_role``.
    readers : list of str
        Roles given what ``pg verify``, ``pg status`` and ``pg checkpoint``
        read, as a read-only auditor: ``USAGE`` on the audit schema, ``SELECT``
        on the registry and the trail, ``USAGE`` on the table's schema and
        ``SELECT`` on the table.  A grant this call adds is listed in
        ``changed`` (``"read access for ROLE ..."``) and recorded in a
        ``PROTECT`` row.

    Returns
    -------
    PgProtection
        The status afterwards; ``changed`` lists what this call created or
        repaired (empty when the table was already fully protected).

    Raises
    ------
    DataError
        Unknown table or column, an id column without a primary key or
        unique constraint (a unique index on exactly that column counts), a
        server older than PostgreSQL 11, a table owner that is a member of the
        audit role, an audit schema owned by another role, a table already
        protected with other columns, or a reader this role may not give
        ``SELECT`` on the table.
    """
    where = redact_dsn(dsn)
    _check_name(audit_role, "--audit-role")
    _check_name(schema, "--audit-schema")
    for r in readers:
        _check_name(r, "--reader")
    with _admin_transaction(dsn, "protect", table) as conn:
        _server_check(conn, where)
        ref = resolve_table(conn, table, where=where, kinds="rp")
        if ref.kind != "r":
            raise DataError(f"{where}: {ref} is a partitioned table; protect each partition "
                            "(statement triggers on the parent do not see writes made to a partition directly)")
        inherits = conn.execute(
            "SELECT pg_catalog.string_agg(CASE WHEN i.inhrelid = %s THEN 'a child of ' || i.inhparent::regclass::text "
            "ELSE 'the parent of ' || i.inhrelid::regclass::text END, ', ') FROM pg_catalog.pg_inherits i "
            "WHERE i.inhrelid = %s OR i.inhparent = %s", (ref.oid, ref.oid, ref.oid)).fetchone()[0]
        if inherits:
            raise DataError(f"{where}: {ref} is {inherits}: a table that inherits or is inherited from cannot be "
                            "protected (a write through a parent fires no statement trigger of the child, and a "
                            "child's rows are read with its parent); ALTER TABLE ... NO INHERIT first")
        attnums = _columns(conn, ref, {"id": id, "label": label}, where)
        changed = _install(conn, ref, id, label, attnums, audit_role, schema, list(readers), where)
    status = protection_status(dsn, table, schema=schema)
    status.changed = changed
    return status


def _prepare_role(conn, audit_role: str, schema: str, ref: TableRef, where: str) -> tuple[bool, list[str]]:
    """Create the audit role if needed and check who may do what; ``(is_superuser, changed)``."""
    sql = _sql()
    changed: list[str] = []
    is_super = conn.execute("SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user").fetchone()[0]
    exists = conn.execute("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %s", (audit_role,)).fetchone()
    if not exists:
        try:
            conn.execute("SAVEPOINT mkrole")
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(audit_role)))
        except import_psycopg().errors.InsufficientPrivilege:
            conn.execute("ROLLBACK TO SAVEPOINT mkrole")
            raise DataError(f"{where}: audit role '{audit_role}' does not exist and this role may not create "
                            f"it; as a superuser: CREATE ROLE {audit_role} NOLOGIN") from None
        changed.append(f"audit role {audit_role}")
    owner, owner_in_audit, owner_super = conn.execute(
        "SELECT r.rolname, pg_catalog.pg_has_role(c.relowner, %s, 'MEMBER'), r.rolsuper "
        "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_roles r ON r.oid = c.relowner WHERE c.oid = %s",
        (audit_role, ref.oid)).fetchone()
    if owner_in_audit and not owner_super:
        raise DataError(f"{where}: the owner of {ref} ({owner}) is a member of audit role '{audit_role}' and "
                        "could rewrite the trail; use an audit role the table owner is not a member of")
    if not is_super and not conn.execute("SELECT pg_catalog.pg_has_role(current_user, %s, 'MEMBER')",
                                         (audit_role,)).fetchone()[0]:
        raise DataError(f"{where}: pg protect is an administrator's act: run it as a superuser or as a member "
                        f"of audit role '{audit_role}'")
    nsp_owner = conn.execute("SELECT pg_catalog.pg_get_userbyid(nspowner) FROM pg_catalog.pg_namespace "
                             "WHERE nspname = %s", (schema,)).fetchone()
    if nsp_owner is None:
        conn.execute(sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(sql.Identifier(schema),
                                                                          sql.Identifier(audit_role)))
        changed.append(f"schema {schema}")
    elif nsp_owner[0] != audit_role:
        raise DataError(f"{where}: audit schema '{schema}' belongs to role '{nsp_owner[0]}', not to audit role "
                        f"'{audit_role}'; give --audit-role {nsp_owner[0]} or another --audit-schema")
    return bool(is_super), changed


def _install(conn, ref: TableRef, id_col: str, label_col: str, attnums: dict[str, int], audit_role: str,
             schema: str, readers: list[str], where: str) -> list[str]:
    sql = _sql()
    is_super, changed = _prepare_role(conn, audit_role, schema, ref, where)
    reg = _registry_row(conn, ref, schema)
    if reg is None and _registry_exists(conn, schema):
        # same name as a table that was dropped and re-created: take its trail over
        orphan = conn.execute(sql.SQL(
            "SELECT trail FROM {} WHERE trail = %s "
            "AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = relid)").format(
                sql.Identifier(schema, "protected")), (trail_name(ref),)).fetchone()
        if orphan:
            conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(audit_role)))
            conn.execute(sql.SQL("UPDATE {} SET relid = %s WHERE trail = %s").format(
                sql.Identifier(schema, "protected")), (ref.oid, orphan[0]))
            conn.execute("RESET ROLE")
            reg = _registry_row(conn, ref, schema)
    if reg is not None and reg["active"] and (reg["id_column"], reg["label_column"]) != (id_col, label_col):
        raise DataError(f"{where}: table {ref} is already protected with --id {reg['id_column']} "
                        f"--label {reg['label_column']}; run 'flipguard pg unprotect' first")
    if reg is not None and reg.get("audit_role") not in (None, audit_role):
        raise DataError(f"{where}: table {ref} is protected by audit role '{reg['audit_role']}'")
    _check_unique_id(conn, ref, id_col, attnums["id"], where)
    trail = reg["trail"] if reg is not None else trail_name(ref)
    n = _Names(conn, ref, trail, id_col, label_col, schema)
    drift: list[str] = []
    if reg is not None and reg["active"] and reg.get("identity") is not None:
        drift = identity_changes(reg["identity"], _identity(conn, n, reg))
    texts: dict[str, Any] = {}
    for role, col in (("id", id_col), ("label", label_col)):
        texts[role], texts[f"{role}_type"] = _column_text(conn, ref.oid, col)
    # protected again after an unprotect: what changed meanwhile, against the trail's last word
    unprotected = _unprotected_changes(conn, n, where) if reg is not None and not reg["active"] else None

    # everything in the audit schema is created by, and belongs to, the audit role
    conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(audit_role)))
    conn.execute(sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC").format(n.schema))
    conn.execute(sql.SQL("""
        CREATE TABLE IF NOT EXISTS {reg} (
            trail text PRIMARY KEY,
            relid oid UNIQUE NOT NULL,
            table_schema text NOT NULL,
            table_name text NOT NULL,
            id_column text NOT NULL,
            label_column text NOT NULL,
            id_attnum int2 NOT NULL,
            label_attnum int2 NOT NULL,
            active boolean NOT NULL,
            installed_at timestamptz NOT NULL,
            installed_by text NOT NULL,
            audit_role text NOT NULL,
            identity jsonb,
            chain_txid bigint,
            checkpoint_seq bigint,
            checkpoint_hash bytea) WITH (fillfactor = 50)""").format(reg=n.registry))
    # the identity an administrator's DDL left, which the guard then lets everyone else's DDL live with
    conn.execute(sql.SQL("ALTER TABLE {reg} ADD COLUMN IF NOT EXISTS seen_identity jsonb").format(reg=n.registry))
    conn.execute(sql.SQL("REVOKE ALL ON {} FROM PUBLIC").format(n.registry))
    conn.execute(sql.SQL(
        "CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql "
        "SET search_path = pg_catalog, pg_temp AS {body}").format(
            fn=n.reject_fn, body=sql.Literal(_reject_body(audit_role))))
    conn.execute(sql.SQL(
        "CREATE OR REPLACE FUNCTION {fn}(p_relid oid, p_trail text, p_id_att int2, p_label_att int2) "
        "RETURNS jsonb LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS {body}").format(
            fn=n.identity_fn, body=sql.Literal(_identity_sql(schema, audit_role))))

    # the trail itself: append-only, appended only by the audit role's functions
    fresh = reg is None or not reg["active"]
    existed = conn.execute("SELECT pg_catalog.to_regclass(%s) IS NOT NULL",
                           (n.trail_ident.as_string(conn),)).fetchone()[0]
    if not existed:
        changed.append("trail")
        conn.execute(sql.SQL("""
            CREATE TABLE {t} (
                seq bigint PRIMARY KEY,
                op text NOT NULL,
                n_rows integer NOT NULL,
                old_ids text[], new_ids text[], old_labels text[], new_labels text[],
                session_user_name text NOT NULL,
                current_user_name text NOT NULL,
                application_name text,
                client_addr text,
                txid bigint NOT NULL,
                logged_at timestamptz NOT NULL,
                detail jsonb,
                prev_hash bytea NOT NULL,
                row_hash bytea NOT NULL)""").format(t=n.trail_ident))
        for col in ("old_ids", "new_ids", "old_labels", "new_labels"):  # no pglz on the hot path
            conn.execute(sql.SQL("ALTER TABLE {t} ALTER COLUMN {c} SET STORAGE EXTERNAL").format(
                t=n.trail_ident, c=sql.Identifier(col)))
        conn.execute(sql.SQL("CREATE SEQUENCE IF NOT EXISTS {s} OWNED BY {t}.seq").format(
            s=n.seq_ident, t=n.trail_ident))
    conn.execute(sql.SQL("REVOKE ALL ON {t} FROM PUBLIC").format(t=n.trail_ident))
    conn.execute(sql.SQL("REVOKE UPDATE, DELETE, TRUNCATE ON {t} FROM CURRENT_USER").format(t=n.trail_ident))
    conn.execute(sql.SQL("REVOKE ALL ON SEQUENCE {s} FROM PUBLIC").format(s=n.seq_ident))
    trail_oid = conn.execute("SELECT pg_catalog.to_regclass(%s)::oid::int8",
                             (n.trail_ident.as_string(conn),)).fetchone()[0]
    have = {r[0] for r in conn.execute("SELECT tgname FROM pg_catalog.pg_trigger WHERE tgrelid = %s",
                                       (trail_oid,)).fetchall()}
    if "flipguard_append_only" not in have:
        conn.execute(sql.SQL("CREATE TRIGGER flipguard_append_only BEFORE INSERT OR UPDATE OR DELETE ON {t} "
                             "FOR EACH ROW EXECUTE FUNCTION {fn}()").format(t=n.trail_ident, fn=n.reject_fn))
    if "flipguard_no_truncate" not in have:
        conn.execute(sql.SQL("CREATE TRIGGER flipguard_no_truncate BEFORE TRUNCATE ON {t} "
                             "FOR EACH STATEMENT EXECUTE FUNCTION {fn}()").format(t=n.trail_ident, fn=n.reject_fn))
    conn.execute(sql.SQL("ALTER TABLE {t} ENABLE ALWAYS TRIGGER flipguard_append_only").format(t=n.trail_ident))
    conn.execute(sql.SQL("ALTER TABLE {t} ENABLE ALWAYS TRIGGER flipguard_no_truncate").format(t=n.trail_ident))

    # registry entry
    if reg is None:
        conn.execute(sql.SQL(
            "INSERT INTO {reg} (trail, relid, table_schema, table_name, id_column, label_column, id_attnum, "
            "label_attnum, active, installed_at, installed_by, audit_role) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, "
            "true, clock_timestamp(), session_user, %s)").format(reg=n.registry),
            (trail, ref.oid, ref.schema, ref.name, id_col, label_col, attnums["id"], attnums["label"], audit_role))
        changed.append("registry")
    elif not reg["active"]:
        conn.execute(sql.SQL(
            "UPDATE {reg} SET active = true, table_schema = %s, table_name = %s, id_column = %s, "
            "label_column = %s, id_attnum = %s, label_attnum = %s, installed_at = clock_timestamp(), "
            "installed_by = session_user, audit_role = %s WHERE trail = %s").format(reg=n.registry),
            (ref.schema, ref.name, id_col, label_col, attnums["id"], attnums["label"], audit_role, trail))
        changed.append("registry")

    # functions: the appender (PROTECT/UNPROTECT rows) and the statement-level trigger function
    fn_missing = not (_function_exists(conn, n.append_fn) and _function_exists(conn, n.log_fn))
    settings = sql.SQL(_fn_settings())
    conn.execute(sql.SQL(
        "CREATE OR REPLACE FUNCTION {fn}(p_op text, p_detail jsonb) RETURNS void LANGUAGE plpgsql "
        "SECURITY DEFINER {settings} AS {body}").format(
            fn=n.append_fn, settings=settings, body=sql.Literal(_append_body(n, _txid_expr(conn)))))
    conn.execute(sql.SQL(
        "CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER {settings} "
        "AS {body}").format(fn=n.log_fn, settings=settings, body=sql.Literal(_log_body(n, _txid_expr(conn), texts))))
    conn.execute(sql.SQL("REVOKE ALL ON FUNCTION {}() FROM PUBLIC").format(n.log_fn))
    conn.execute(sql.SQL("REVOKE ALL ON FUNCTION {}(text, jsonb) FROM PUBLIC").format(n.append_fn))
    if fn_missing:
        changed.append("functions")
    conn.execute("RESET ROLE")
    changed += _grant_readers(conn, n, ref, audit_role, readers, where)

    # triggers on the protected table (created by the administrator, executing the audit role's function)
    states = _triggers(conn, ref.oid)
    reenabled = [name for name, state in states.items() if state != "enabled" and name in TABLE_TRIGGERS]
    recreated: list[str] = []
    definitions = {
        "flipguard_audit_insert": "AFTER INSERT ON {t} REFERENCING NEW TABLE AS fg_new",
        "flipguard_audit_update": "AFTER UPDATE ON {t} REFERENCING OLD TABLE AS fg_old NEW TABLE AS fg_new",
        "flipguard_audit_delete": "AFTER DELETE ON {t} REFERENCING OLD TABLE AS fg_old",
        # BEFORE: the rows a TRUNCATE removes are still there to be recorded
        "flipguard_audit_truncate": "BEFORE TRUNCATE ON {t}",
    }
    for name in states:
        if name not in definitions:  # a look-alike trigger planted on the table
            conn.execute(sql.SQL("DROP TRIGGER {} ON {}").format(sql.Identifier(name), n.table))
            changed.append(f"dropped foreign trigger {name}")
    old_truncate = conn.execute(
        "SELECT pg_catalog.pg_get_triggerdef(oid) NOT LIKE '%%BEFORE TRUNCATE%%' FROM pg_catalog.pg_trigger "
        "WHERE tgrelid = %s AND tgname = 'flipguard_audit_truncate'", (ref.oid,)).fetchone()
    if old_truncate is not None and old_truncate[0]:
        # installed by an earlier flipguard (AFTER TRUNCATE: recorded no rows): replaced, not a finding
        conn.execute(sql.SQL("DROP TRIGGER flipguard_audit_truncate ON {}").format(n.table))
        del states["flipguard_audit_truncate"]
        fresh_truncate = True
    else:
        fresh_truncate = False
    # the TRUNCATE trigger reads the rows it removes as the audit role: SELECT on the two columns (an
    # administrator that may not grant it gets a warning and TRUNCATE steps record no rows)
    if not conn.execute("SELECT pg_catalog.has_schema_privilege(%s, %s, 'USAGE') "
                        "AND pg_catalog.has_column_privilege(%s, %s::oid, %s, 'SELECT') "
                        "AND pg_catalog.has_column_privilege(%s, %s::oid, %s, 'SELECT')",
                        (audit_role, ref.schema, audit_role, ref.oid, id_col, audit_role, ref.oid,
                         label_col)).fetchone()[0]:
        conn.execute("SAVEPOINT grant_audit")
        try:
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(
                sql.Identifier(ref.schema), sql.Identifier(audit_role)))
            conn.execute(sql.SQL("GRANT SELECT ({}, {}) ON {} TO {}").format(
                n.id, n.label, n.table, sql.Identifier(audit_role)))
            conn.execute("RELEASE SAVEPOINT grant_audit")
        except import_psycopg().Error:
            conn.execute("ROLLBACK TO SAVEPOINT grant_audit")
    for name, definition in definitions.items():
        if name not in states:
            conn.execute(sql.SQL("CREATE TRIGGER {name} ").format(name=sql.Identifier(name)) + sql.SQL(
                definition + " FOR EACH STATEMENT EXECUTE FUNCTION {fn}()").format(t=n.table, fn=n.log_fn))
            if fresh_truncate and name == "flipguard_audit_truncate":
                changed.append(f"trigger {name} updated (records the rows a TRUNCATE removes)")
                continue
            changed.append(f"trigger {name}")
            if not fresh:
                recreated.append(name)
        elif states[name] != "enabled":
            conn.execute(sql.SQL("ALTER TABLE {t} ENABLE TRIGGER {name}").format(
                t=n.table, name=sql.Identifier(name)))
            changed.append(f"re-enabled trigger {name} (was {states[name]})")

    # the DDL guard: only a superuser may create an event trigger
    guard = guard_trigger_name(schema)
    if is_super:
        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(audit_role)))
        conn.execute(sql.SQL(
            "CREATE OR REPLACE FUNCTION {fn}() RETURNS event_trigger LANGUAGE plpgsql SECURITY DEFINER "
            "SET search_path = pg_catalog, pg_temp AS {body}").format(
                fn=n.guard_fn, body=sql.Literal(_guard_body(schema, audit_role))))
        conn.execute(sql.SQL("REVOKE ALL ON FUNCTION {}() FROM PUBLIC").format(n.guard_fn))
        conn.execute("RESET ROLE")
        have_guard = conn.execute("SELECT evttags FROM pg_catalog.pg_event_trigger WHERE evtname = %s",
                                  (guard,)).fetchone()
        if have_guard is not None and set(have_guard[0] or ()) != set(_GUARD_TAGS):
            # installed by an earlier flipguard that watched fewer commands (ALTER TYPE: enum renames)
            conn.execute(sql.SQL("DROP EVENT TRIGGER {}").format(sql.Identifier(guard)))
        if have_guard is None or set(have_guard[0] or ()) != set(_GUARD_TAGS):
            conn.execute(sql.SQL("CREATE EVENT TRIGGER {} ON ddl_command_end WHEN TAG IN ({}) "
                                 "EXECUTE FUNCTION {}()").format(
                sql.Identifier(guard), sql.SQL(", ").join(sql.Literal(t) for t in _GUARD_TAGS), n.guard_fn))
            changed.append("DDL guard" if have_guard is None else "DDL guard updated (watches more commands)")
        conn.execute(sql.SQL("ALTER EVENT TRIGGER {} ENABLE ALWAYS").format(sql.Identifier(guard)))
        rewrite = rewrite_trigger_name(schema)
        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(audit_role)))
        conn.execute(sql.SQL(
            "CREATE OR REPLACE FUNCTION {fn}() RETURNS event_trigger LANGUAGE plpgsql SECURITY DEFINER "
            "SET search_path = pg_catalog, pg_temp AS {body}").format(
                fn=n.rewrite_guard_fn, body=sql.Literal(_rewrite_guard_body(schema, audit_role))))
        conn.execute(sql.SQL("REVOKE ALL ON FUNCTION {}() FROM PUBLIC").format(n.rewrite_guard_fn))
        conn.execute("RESET ROLE")
        if conn.execute("SELECT 1 FROM pg_catalog.pg_event_trigger WHERE evtname = %s", (rewrite,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE EVENT TRIGGER {} ON table_rewrite EXECUTE FUNCTION {}()").format(
                sql.Identifier(rewrite), n.rewrite_guard_fn))
            changed.append("DDL guard: table rewrites")
        conn.execute(sql.SQL("ALTER EVENT TRIGGER {} ENABLE ALWAYS").format(sql.Identifier(rewrite)))

    # record what the protection looks like now; a difference from the last record is evidence
    conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(audit_role)))
    reg_now = _registry_row(conn, ref, schema)
    identity = _identity(conn, n, reg_now)
    if drift and not changed:
        changed.append("re-recorded identity")
    if identity != reg_now["identity"]:
        from psycopg.types.json import Jsonb

        conn.execute(sql.SQL("UPDATE {} SET identity = %s, seen_identity = NULL WHERE trail = %s").format(
            n.registry), (Jsonb(identity), trail))
    if changed:
        detail = {"event": "protect", "table": str(ref), "id_column": id_col, "label_column": label_col,
                  "fresh": fresh, "reenabled": reenabled, "recreated": recreated, "identity_drift": drift,
                  "changed": changed, "ddl_guard": is_super}
        if unprotected is not None:
            detail["unprotected"] = unprotected
        _append_event(conn, n, "PROTECT", detail)
    conn.execute("RESET ROLE")
    return changed


def _unprotected_changes(conn, n: _Names, where: str) -> dict[str, Any] | None:
    """What changed while the table was unprotected: the table against the trail's last word, per id.

    Run by :func:`protect` when it protects a table again whose trail it kept (``pg unprotect``): the trail
    then starts a fresh baseline, so without this a label changed meanwhile would be accepted silently.
    Only ids the trail records can be compared (a row it never saw has no last word).  The result goes
    into the ``PROTECT`` row (``detail.unprotected``) and :func:`verify_postgres` reports it when rows
    differ.  ``None`` when there is no trail to compare with.
    """
    psycopg = import_psycopg()
    sql = _sql()
    if not conn.execute("SELECT pg_catalog.to_regclass(%s) IS NOT NULL",
                        (n.trail_ident.as_string(conn),)).fetchone()[0]:
        return None
    conn.execute("SAVEPOINT unprotected")
    try:
        _canonical_session(conn)
        rows = conn.execute(sql.SQL(_TRANSITIONS + """
            , last AS (
              SELECT DISTINCT ON (rid) rid, ap, a, trunc_epoch FROM tr ORDER BY rid, seq DESC, ord DESC, k DESC
            ), expect AS (
              SELECT l.rid, (l.ap AND l.trunc_epoch = cur.trunc_epoch) AS present, l.a FROM last l, cur
            ), cur_rows AS ({tbl})
            SELECT e.rid, e.present, e.a, c.rid IS NOT NULL, c.lab, count(*) OVER ()
            FROM expect e LEFT JOIN cur_rows c ON c.rid = e.rid
            WHERE e.present IS DISTINCT FROM (c.rid IS NOT NULL) OR (e.present AND e.a IS DISTINCT FROM c.lab)
            ORDER BY e.rid LIMIT %s""").format(t=n.trail_ident, tbl=_table_texts(conn, n)),
            (_LIST_LIMIT,)).fetchall()
        since = conn.execute(sql.SQL("SELECT pg_catalog.max(logged_at) FROM {t} WHERE op = 'UNPROTECT'").format(
            t=n.trail_ident)).fetchone()[0]
        conn.execute("RELEASE SAVEPOINT unprotected")
    except psycopg.Error as exc:  # e.g. an administrator that may not read the table
        conn.execute("ROLLBACK TO SAVEPOINT unprotected")
        return {"checked": False, "reason": _msg(exc)}
    return {"checked": True, "since": since.isoformat() if since is not None else None,
            "n_differ": rows[0][5] if rows else 0,
            "differ": [{"id": r[0], "trail": [r[1], r[2] if r[1] else None], "table": [r[3], r[4] if r[3] else None]}
                       for r in rows]}


def _append_event(conn, n: _Names, op: str, detail: dict) -> None:
    from psycopg.types.json import Jsonb

    sql = _sql()
    conn.execute(sql.SQL("SELECT {fn}(%s, %s)").format(fn=n.append_fn), (op, Jsonb(detail)))


def unprotect(dsn: str, table: str, *, drop_trail: bool = False, schema: str = AUDIT_SCHEMA) -> PgProtection:
    """Remove the triggers and functions :func:`protect` installed on ``table`` (an administrator's act).

    By default the audit trail is kept (append-only, its guard triggers still
    in place) and gets a final ``UNPROTECT`` row, so the history of who changed
    which label survives and protecting the table again continues the same
    chain.  ``drop_trail=True`` drops the trail too (and the DDL guard, the
    registry and the audit schema when no other table is protected).
    Unprotecting a table that is not protected does nothing.
    """
    psycopg = import_psycopg()
    sql = _sql()
    where = redact_dsn(dsn)
    _check_name(schema, "--audit-schema")
    with _admin_transaction(dsn, "unprotect", table) as conn:
        ref = resolve_table(conn, table, where=where, kinds="rp")
        reg = _registry_row(conn, ref, schema)
        changed: list[str] = []
        if reg is None:
            return _finish_unprotect(dsn, table, schema, changed)
        role = sql.Identifier(reg["audit_role"])
        for name in _triggers(conn, ref.oid):
            conn.execute(sql.SQL("DROP TRIGGER IF EXISTS {name} ON {t}").format(
                name=sql.Identifier(name), t=ref.ident))
            changed.append(f"dropped trigger {name}")
        n = _Names(conn, ref, reg["trail"], reg["id_column"], reg["label_column"], schema)
        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(role))
        if not drop_trail and reg["active"] and _function_exists(conn, n.append_fn):
            _append_event(conn, n, "UNPROTECT", {"event": "unprotect", "table": str(ref)})
        conn.execute(sql.SQL("DROP FUNCTION IF EXISTS {}()").format(n.log_fn))
        conn.execute(sql.SQL("DROP FUNCTION IF EXISTS {}(text, jsonb)").format(n.append_fn))
        if drop_trail:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(n.trail_ident))
            conn.execute(sql.SQL("DELETE FROM {} WHERE trail = %s").format(n.registry), (reg["trail"],))
            changed.append("dropped trail")
            left = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(n.registry)).fetchone()[0]
            if left == 0:
                conn.execute("RESET ROLE")
                conn.execute(sql.SQL("DROP EVENT TRIGGER IF EXISTS {}").format(
                    sql.Identifier(guard_trigger_name(schema))))
                conn.execute(sql.SQL("DROP EVENT TRIGGER IF EXISTS {}").format(
                    sql.Identifier(rewrite_trigger_name(schema))))
                conn.execute(sql.SQL("SET LOCAL ROLE {}").format(role))
                conn.execute(sql.SQL("DROP TABLE {}").format(n.registry))
                for fn in (sql.SQL("{}()").format(n.reject_fn), sql.SQL("{}()").format(n.guard_fn),
                           sql.SQL("{}()").format(n.rewrite_guard_fn),
                           sql.SQL("{}(oid, text, int2, int2)").format(n.identity_fn)):
                    conn.execute(sql.SQL("DROP FUNCTION IF EXISTS ") + fn)
                conn.execute("SAVEPOINT drop_schema")
                try:
                    conn.execute(sql.SQL("DROP SCHEMA {}").format(n.schema))
                except psycopg.errors.DependentObjectsStillExist:
                    conn.execute("ROLLBACK TO SAVEPOINT drop_schema")
        elif reg["active"]:
            conn.execute(sql.SQL("UPDATE {} SET active = false WHERE trail = %s").format(n.registry),
                         (reg["trail"],))
            changed.append("deactivated (trail kept)")
        conn.execute("RESET ROLE")
    return _finish_unprotect(dsn, table, schema, changed)


def _finish_unprotect(dsn, table, schema, changed):
    status = protection_status(dsn, table, schema=schema)
    status.changed = changed
    return status


def protection_status(dsn: str, table: str, *, schema: str = AUDIT_SCHEMA) -> PgProtection:
    """Registry entry, trigger states, identity and trail head of ``table`` (read-only)."""
    psycopg = import_psycopg()
    where = redact_dsn(dsn)
    _check_name(schema, "--audit-schema")
    with pg_snapshot(dsn) as snap:
        try:
            ref = snap.resolve(table, kinds="rp")
            _check_readable(snap.conn, ref, schema, where)
            return _status(snap.conn, ref, schema)
        except psycopg.Error as exc:
            raise DataError(f"{where}: cannot read the protection of {table}: {_msg(exc)}") from None


def _status(conn, ref: TableRef, schema: str) -> PgProtection:
    reg = _registry_row(conn, ref, schema)
    triggers = _triggers(conn, ref.oid)
    if reg is None:
        return PgProtection(table=str(ref), protected=False, triggers=triggers, audit_schema=schema)
    n = _Names(conn, ref, reg["trail"], reg["id_column"], reg["label_column"], schema)
    trail_exists = conn.execute("SELECT pg_catalog.to_regclass(%s) IS NOT NULL",
                                (n.trail_ident.as_string(conn),)).fetchone()[0]
    n_events, head_seq, head_hash, last_at = _head(conn, n.trail_ident) if trail_exists else (0, None, None, None)
    functions = _function_exists(conn, n.log_fn) and _function_exists(conn, n.append_fn)
    identity = _identity(conn, n, reg)
    drift = identity_changes(reg["identity"], identity) if reg["active"] else []
    guard = conn.execute("SELECT evtenabled::text FROM pg_catalog.pg_event_trigger WHERE evtname = %s",
                         (guard_trigger_name(schema),)).fetchone()
    protected = (reg["active"] and trail_exists and functions and set(triggers) == set(TABLE_TRIGGERS)
                 and all(state in ("enabled", "always") for state in triggers.values()) and not drift)
    return PgProtection(
        table=str(ref), protected=bool(protected), registered=True, audit_schema=schema,
        audit_role=reg["audit_role"], ddl_guard=guard is not None and guard[0] in ("O", "A"),
        id_column=reg["id_column"], label_column=reg["label_column"], trail=f"{schema}.{reg['trail']}",
        installed_at=reg["installed_at"].isoformat() if reg["installed_at"] else None,
        installed_by=reg["installed_by"], triggers=triggers, identity_ok=not drift, identity_changes=drift,
        n_events=n_events, head_seq=head_seq, head_hash=head_hash, last_event_at=last_at)


def _msg(exc) -> str:
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    if primary:
        return primary
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --------------------------------------------------------------------------- signed checkpoints
@dataclass
class PgCheckpoint:
    """Result of :func:`checkpoint`: the signed record, or why none was written."""

    table: str
    written: bool
    out: str | None = None
    checkpoint: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def checkpoint(dsn: str, table: str, private_key, *, out, schema: str = AUDIT_SCHEMA) -> PgCheckpoint:
    """Sign the head of ``table``'s audit trail (Ed25519) and append it to the checkpoint file ``out``.

    The trail is checked first, in the same snapshot: the hash chain must be
    intact and every checkpoint already in ``out`` must still hold (the new
    one extends them), otherwise nothing is written and ``problems`` says why.
    The record names the database, audit schema, trail and table, the head
    ``seq`` and ``row_hash``, the number of trail rows and the identity of the
    triggers; keep the file where the database's superusers cannot write:
    :func:`verify_postgres` with ``checkpoints=out`` then detects any rewrite of
    the trail up to the latest checkpoint, whoever made it.
    """
    from ._keys import key_id, load_private_key
    from ._pg_seal import append_checkpoint, load_checkpoints, sign_checkpoint

    psycopg = import_psycopg()
    where = redact_dsn(dsn)
    _check_name(schema, "--audit-schema")
    key = load_private_key(private_key) if not hasattr(private_key, "sign") else private_key
    from pathlib import Path

    out = Path(out)
    marks = load_checkpoints(out, key.public_key()) if out.exists() or out.is_symlink() else []
    with pg_snapshot(dsn) as snap:
        try:
            _canonical_session(snap.conn)
            ref = snap.resolve(table, kinds="rp")
            _check_readable(snap.conn, ref, schema, where)
            status = _status(snap.conn, ref, schema)
            result = PgCheckpoint(table=str(ref), written=False)
            reg = _registry_row(snap.conn, ref, schema)
            if reg is None or status.head_seq is None:
                raise DataError(f"{where}: table {ref} has no audit trail in schema {schema} (pg protect first)")
            n = _Names(snap.conn, ref, reg["trail"], reg["id_column"], reg["label_column"], schema)
            report = PgVerifyReport(table=str(ref), trail=status.trail, protection={})
            _check_chain(snap.conn, n, reg, None, report)
            _check_checkpoints(snap.conn, n, ref, reg, marks, report)
            result.problems = [f"row {e['seq']}: {e['reason']}" for e in report.chain_errors] + report.problems
            if result.problems:
                return result
            body = {
                "kind": "flipguard.pg-checkpoint", "format_version": 1,
                "database": snap.conn.execute("SELECT current_database()").fetchone()[0],
                "audit_schema": schema, "trail": reg["trail"], "table": str(ref),
                "head_seq": status.head_seq, "head_hash": status.head_hash, "n_events": status.n_events,
                "identity": _identity(snap.conn, n, reg),
                "created": snap.conn.execute(
                    "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', "
                    "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')").fetchone()[0],
                "key_id": key_id(key),
            }
        except psycopg.Error as exc:
            raise DataError(f"{where}: cannot checkpoint {table}: {_msg(exc)}") from None
    record = sign_checkpoint(body, key)
    append_checkpoint(out, record)
    result.written, result.out, result.checkpoint = True, str(out), record
    return result


# --------------------------------------------------------------------------- verify
def verify_postgres(dsn: str, table: str, manifest=None, public_key=None, *, anchor: str | None = None,
                    secret: bytes | None = None, checkpoints=None, schema: str = AUDIT_SCHEMA,
                    name: str | None = None) -> PgVerifyReport:
    """Check ``table`` against its seal, its signed checkpoints and its audit trail, all in one snapshot.

    The table, the audit trail and the registry are read in one ``REPEATABLE
    READ READ ONLY`` transaction, with the canonical text settings of the
    trigger function.  Checks, in order:

    1. the protection is in place: registry active, triggers present and
       enabled, and their identity (trigger and function oids and definition
       hashes, watched columns) equal to what :func:`protect` recorded; a
       ``PROTECT`` row that had to re-enable or recreate a trigger is a finding;
    2. the hash chain: every step's ``row_hash`` is ``sha256(prev_hash ||
       content)`` and ``prev_hash`` the previous step's hash (the first step's
       is 32 zero bytes); ``anchor`` (``"SEQ:HEX"``) and every checkpoint in
       ``checkpoints`` (a file written by :func:`checkpoint`, signatures checked
       with ``public_key``) still hold, and the trigger identity has not changed
       since the latest checkpoint without a ``PROTECT`` row saying so;
    3. the trail agrees with the table: replaying it per id gives every row's
       current label, and each recorded change starts where the previous one
       ended (a gap means a change was made with the trigger bypassed);
    4. temporary changes: a label changed by one transaction and restored by a
       later one is listed with the window it was wrong in;
    5. with ``manifest`` and ``public_key``: the seal is verified and every row
       that changed since is looked up in the trail: explained or unexplained.

    Returns
    -------
    PgVerifyReport
    """
    psycopg = import_psycopg()
    where = redact_dsn(dsn)
    _check_name(schema, "--audit-schema")
    anchor_pair = _parse_anchor(anchor) if anchor else None
    marks = None
    if checkpoints is not None:
        if public_key is None:
            raise InvalidParameterError("checking checkpoints needs the signer's public key (--pubkey)")
        from ._pg_seal import load_checkpoints

        marks = load_checkpoints(checkpoints, public_key)
        if not marks:  # a truncated file must not pass as "checked"
            raise IntegrityError(f"checkpoint file {checkpoints} holds no checkpoint (empty or truncated): "
                                 "there is nothing to check the trail against")
    with pg_snapshot(dsn) as snap:
        try:
            _canonical_session(snap.conn)
            ref = snap.resolve(table, kinds="rp")
            # from here on every name is schema-qualified: no function or operator of a schema the table's
            # owner may create in is picked by the auditor's queries
            snap.conn.execute("SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true)")
            _check_readable(snap.conn, ref, schema, where)
            status = _status(snap.conn, ref, schema)
            report = PgVerifyReport(table=str(ref), trail=status.trail, protection=status.to_dict(),
                                    n_events=status.n_events, head_seq=status.head_seq,
                                    head_hash=status.head_hash)
            if not status.registered:
                report.problems.append(f"table {ref} is not protected (no audit trail registered in "
                                       f"schema {schema})")
                if manifest is not None:
                    _check_seal(snap, ref, manifest, public_key, report, None, secret, name)
                return report
            reg = _registry_row(snap.conn, ref, schema)
            n = _Names(snap.conn, ref, reg["trail"], reg["id_column"], reg["label_column"], schema)
            _protection_problems(status, report)
            trail_ok = snap.conn.execute("SELECT pg_catalog.to_regclass(%s) IS NOT NULL",
                                         (n.trail_ident.as_string(snap.conn),)).fetchone()[0]
            if not trail_ok:
                report.problems.append(f"audit trail {status.trail} is missing")
                if manifest is not None:
                    _check_seal(snap, ref, manifest, public_key, report, None, secret, name)
                return report
            _check_readable(snap.conn, ref, schema, where, columns=(n.id_col, n.label_col))
            # values of the label's enum type renamed since protect: every row holding them changed
            renames = enum_renames(reg["identity"], _identity(snap.conn, n, reg)) if reg["active"] else {}
            _check_chain(snap.conn, n, reg, anchor_pair, report)
            if marks is not None:
                _check_checkpoints(snap.conn, n, ref, reg, marks, report)
            _check_replay(snap.conn, n, report, renames)
            _check_temporary(snap.conn, n, report)
            if manifest is not None:
                _check_seal(snap, ref, manifest, public_key, report, n, secret, name, renames)
        except psycopg.Error as exc:
            raise DataError(f"{where}: cannot verify {table}: {_msg(exc)}") from None
    return report


def _check_readable(conn, ref: TableRef, schema: str, where: str, columns: tuple[str, ...] = ()) -> None:
    """One clear line when this role may not read what ``pg verify`` reads (not a driver error mid-way)."""
    user = conn.execute("SELECT current_user").fetchone()[0]
    hint = f"as an administrator: flipguard pg protect ... --table {ref} --reader {user}"
    if not columns:
        nsp = conn.execute("SELECT NOT pg_catalog.has_schema_privilege(oid, 'USAGE') FROM pg_catalog.pg_namespace "
                           "WHERE nspname = %s", (schema,)).fetchone()
        if nsp is not None and nsp[0]:
            raise DataError(f"{where}: role '{user}' may not read audit schema {schema} (no USAGE): {hint}")
        sql = _sql()
        reg = sql.Identifier(schema, "protected").as_string(conn)
        if conn.execute("SELECT pg_catalog.to_regclass(%s) IS NOT NULL AND NOT "
                        "pg_catalog.has_table_privilege(pg_catalog.to_regclass(%s), 'SELECT')",
                        (reg, reg)).fetchone()[0]:
            raise DataError(f"{where}: role '{user}' may not read the audit registry {schema}.protected: {hint}")
        row = _registry_row(conn, ref, schema) if nsp is not None else None
        if row is not None:
            trail = sql.Identifier(schema, row["trail"]).as_string(conn)
            if conn.execute("SELECT pg_catalog.to_regclass(%s) IS NOT NULL AND NOT "
                            "pg_catalog.has_table_privilege(pg_catalog.to_regclass(%s), 'SELECT')",
                            (trail, trail)).fetchone()[0]:
                raise DataError(f"{where}: role '{user}' may not read the audit trail {schema}.{row['trail']}: {hint}")
        return
    readable = conn.execute(
        "SELECT pg_catalog.has_table_privilege(%s::oid, 'SELECT') OR "
        "(SELECT bool_and(pg_catalog.has_column_privilege(%s::oid, c, 'SELECT')) FROM unnest(%s::text[]) c)",
        (ref.oid, ref.oid, list(columns))).fetchone()[0]
    if not readable:
        raise DataError(f"{where}: role '{user}' may not read table {ref} (no SELECT on it), which pg verify "
                        f"compares with the trail: {hint} (grants it), or GRANT SELECT ON {ref} TO {user}")


def _parse_anchor(anchor: str) -> tuple[int, str]:
    m = re.fullmatch(r"\s*(\d+)\s*:\s*([0-9a-fA-F]{64})\s*", anchor)
    if not m:
        raise InvalidParameterError(f"--anchor must be SEQ:SHA256HEX (from 'flipguard pg status'), got {anchor!r}")
    return int(m.group(1)), m.group(2).lower()


def _protection_problems(status: PgProtection, report: PgVerifyReport) -> None:
    if status.protected:
        return
    reasons = []
    missing = [t for t in TABLE_TRIGGERS if t not in status.triggers]
    off = [f"{t} {s}" for t, s in sorted(status.triggers.items()) if s not in ("enabled", "always")]
    if missing:
        reasons.append("missing trigger(s) " + ", ".join(missing))
    if off:
        reasons.append("trigger(s) " + ", ".join(off))
    if status.identity_changes and not missing and not off:
        reasons.append("; ".join(status.identity_changes))
    if not reasons:
        reasons.append("protection removed (unprotect) or its functions are missing")
    report.problems.append(f"table {status.table} is not protected: " + "; ".join(reasons))


def _check_chain(conn, n: _Names, reg: dict, anchor, report: PgVerifyReport) -> None:
    sql = _sql()
    rows = conn.execute(sql.SQL(
        "SELECT seq, op, content_ok, link_ok FROM ("
        " SELECT seq, op,"
        "  row_hash = pg_catalog.sha256(prev_hash || pg_catalog.convert_to(" + _CANON_COLUMNS + ", 'UTF8'))"
        "   AS content_ok,"
        "  prev_hash = coalesce(lag(row_hash) OVER (ORDER BY seq), " + _GENESIS_SQL + ") AS link_ok"
        " FROM {t}) c WHERE NOT content_ok OR NOT link_ok ORDER BY seq LIMIT %s").format(t=n.trail_ident),
        (_LIST_LIMIT,)).fetchall()
    for seq, op, content_ok, link_ok in rows:
        reasons = []
        if not content_ok:
            reasons.append("row content does not match its hash (row edited)")
        if not link_ok:
            reasons.append("prev_hash does not match the previous row (rows deleted, inserted or edited)")
        report.chain_errors.append({"seq": seq, "op": op, "reason": "; ".join(reasons)})
    if reg.get("checkpoint_seq") is not None:
        row = conn.execute(sql.SQL("SELECT row_hash FROM {t} WHERE seq = %s").format(t=n.trail_ident),
                           (reg["checkpoint_seq"],)).fetchone()
        if row is None:
            report.chain_errors.append({"seq": reg["checkpoint_seq"], "op": None,
                                        "reason": "checkpoint row is missing (trail rows deleted)"})
        elif bytes(row[0]) != bytes(reg["checkpoint_hash"]):
            report.chain_errors.append({"seq": reg["checkpoint_seq"], "op": None,
                                        "reason": "checkpoint row hash changed (trail rewritten)"})
    if anchor is not None:
        seq, hexhash = anchor
        row = conn.execute(sql.SQL("SELECT row_hash FROM {t} WHERE seq = %s").format(t=n.trail_ident),
                           (seq,)).fetchone()
        if row is None:
            report.chain_errors.append({"seq": seq, "op": None, "reason": "anchor row is missing"})
        elif bytes(row[0]).hex() != hexhash:
            report.chain_errors.append({"seq": seq, "op": None,
                                        "reason": "anchor hash differs (trail rewritten since the anchor)"})
    first = conn.execute(sql.SQL("SELECT op FROM {t} ORDER BY seq LIMIT 1").format(t=n.trail_ident)).fetchone()
    if first is not None and first[0] != "PROTECT":
        report.chain_errors.append({"seq": None, "op": first[0],
                                    "reason": "the trail does not start with its PROTECT row"})
    report.chain_ok = not report.chain_errors


def _check_checkpoints(conn, n: _Names, ref: TableRef, reg: dict, marks: list[dict],
                       report: PgVerifyReport) -> None:
    """Every signed checkpoint must still hold: same head hash at its seq, same number of steps up to it."""
    sql = _sql()
    database = conn.execute("SELECT current_database()").fetchone()[0]
    for i, m in enumerate(marks, 1):
        if (m["database"], m["audit_schema"], m["trail"]) != (database, n.schema_name, n.trail):
            raise InvalidParameterError(
                f"checkpoint {i} is for trail {m['audit_schema']}.{m['trail']} in database {m['database']}, "
                f"not {n.schema_name}.{n.trail} in {database} (table {ref}): wrong --checkpoint file")
        row = conn.execute(sql.SQL("SELECT (SELECT row_hash FROM {t} WHERE seq = %s), "
                                   "(SELECT count(*) FROM {t} WHERE seq <= %s)").format(t=n.trail_ident),
                           (m["head_seq"], m["head_seq"])).fetchone()
        when = f"signed checkpoint {i} ({m['created']}, seq {m['head_seq']})"
        if row[0] is None:
            report.chain_errors.append({"seq": m["head_seq"], "op": None,
                                        "reason": f"the head of {when} is missing: trail rows deleted"})
        elif bytes(row[0]).hex() != m["head_hash"]:
            report.chain_errors.append({"seq": m["head_seq"], "op": None,
                                        "reason": f"hash differs from {when}: the trail was rewritten before it"})
        elif int(row[1]) != m["n_events"]:
            report.chain_errors.append({"seq": m["head_seq"], "op": None,
                                        "reason": f"{row[1]} trail rows up to {when}, it recorded "
                                                  f"{m['n_events']}: rows deleted or inserted"})
    report.checkpoints_checked = len(marks)
    if marks:
        last = marks[-1]
        now = _identity(conn, n, reg)
        if identity_changes(last["identity"], now):  # (values added to an enum type change no row)
            protects = conn.execute(sql.SQL("SELECT count(*) FROM {t} WHERE op = 'PROTECT' AND seq > %s").format(
                t=n.trail_ident), (last["head_seq"],)).fetchone()[0]
            if not protects:
                report.problems.append(
                    f"the audit triggers changed since signed checkpoint {len(marks)} ({last['created']}) with "
                    "no PROTECT record: " + "; ".join(identity_changes(last["identity"], now)))
    report.chain_ok = not report.chain_errors


# Replaying the trail: every recorded row becomes per-id transitions (present, label) -> (present, label).
# An UPDATE that changes the id is a removal of the old id and an arrival of the new one; within one
# statement every removal comes before every arrival.  Only steps since the latest fresh PROTECT (first
# protection, or after an UNPROTECT) count; trunc_epoch counts the TRUNCATEs so far.  A TRUNCATE that
# recorded the rows it removed (flipguard >= this version) is a removal of each of them, in the epoch
# before its own; one that did not only starts a new epoch.
_TRANSITIONS = """
WITH ev AS (
  SELECT seq, op, old_ids, new_ids, old_labels, new_labels, txid, logged_at, session_user_name, detail,
         sum((op = 'TRUNCATE')::int) OVER w AS trunc_epoch,
         sum((op = 'PROTECT' AND coalesce((detail->>'fresh')::boolean, false))::int) OVER w AS prot_epoch
  FROM {t} WINDOW w AS (ORDER BY seq)
), cur0 AS (
  SELECT max(prot_epoch) AS prot_epoch, max(trunc_epoch) AS trunc_epoch FROM ev
), cur AS (
  SELECT cur0.*, (SELECT coalesce(min(ev.trunc_epoch), 0) FROM ev WHERE ev.prot_epoch = cur0.prot_epoch)
           AS start_trunc
  FROM cur0
), rws AS (  -- a TRUNCATE that recorded its rows removes each of them, at the end of the epoch it closes
  SELECT ev.seq, ev.op,
         ev.trunc_epoch - (ev.op = 'TRUNCATE')::int AS trunc_epoch, u.k, u.oi, u.ni, u.ol, u.nl
  FROM ev CROSS JOIN LATERAL (
         SELECT * FROM unnest(ev.old_ids, ev.new_ids, ev.old_labels, ev.new_labels)
           WITH ORDINALITY AS u(oi, ni, ol, nl, k) WHERE ev.op <> 'TRUNCATE'
         UNION ALL
         SELECT t.oi, NULL::text, t.ol, NULL::text, t.k
         FROM ROWS FROM (jsonb_array_elements_text(ev.detail->'ids'),
                         jsonb_array_elements_text(ev.detail->'labels')) WITH ORDINALITY AS t(oi, ol, k)
         WHERE ev.op = 'TRUNCATE') u
  WHERE ev.op IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE') AND ev.prot_epoch = (SELECT prot_epoch FROM cur)
), tr AS (
  SELECT seq, 0 AS ord, k, op, trunc_epoch,
         (CASE WHEN op = 'INSERT' THEN ni ELSE oi END) COLLATE "C" AS rid,
         op <> 'INSERT' AS bp, ol AS b,
         op = 'INSERT' OR (op = 'UPDATE' AND oi = ni) AS ap, nl AS a
  FROM rws WHERE (CASE WHEN op = 'INSERT' THEN ni ELSE oi END) IS NOT NULL
  UNION ALL
  SELECT seq, 1, k, op, trunc_epoch, ni COLLATE "C", false, NULL::text, true, nl
  FROM rws WHERE op = 'UPDATE' AND oi IS DISTINCT FROM ni AND ni IS NOT NULL
)
"""


def _check_replay(conn, n: _Names, report: PgVerifyReport, renames: dict[str, str] | None = None) -> None:
    """Replay the trail per id: gaps between recorded changes, and the final state against the table.

    Ids held by more than one row of the table are not replayed (the trail cannot tell their rows
    apart) but listed in ``report.duplicate_ids`` with what the trail records of them.  ``renames``
    (``{old: new}`` values of the label's enum type renamed since protect) names the cause of a
    difference it explains.
    """
    sql = _sql()
    t = n.trail_ident
    tbl = _table_texts(conn, n)
    conn.execute("SELECT pg_catalog.set_config('work_mem', '256MB', true)")
    dups = _duplicate_ids(conn, n, tbl, report)
    rows = conn.execute(sql.SQL(_TRANSITIONS + """
        , chk AS (
          SELECT tr.*, lag(ap) OVER p AS prev_ap, lag(a) OVER p AS prev_a,
                 lag(trunc_epoch) OVER p AS prev_epoch, lag(seq) OVER p AS prev_seq
          FROM tr WINDOW p AS (PARTITION BY rid ORDER BY seq, ord, k)
        ), gaps AS (
          SELECT 'gap'::text AS kind, rid, seq, op, bp AS s1, b AS v1, prev_ap AS s2, prev_a AS v2, prev_seq
          FROM chk, cur
          WHERE (prev_seq IS NOT NULL AND prev_epoch = chk.trunc_epoch
                 AND (bp IS DISTINCT FROM prev_ap OR (bp AND b IS DISTINCT FROM prev_a)))
             OR (prev_seq IS NOT NULL AND prev_epoch <> chk.trunc_epoch AND bp)
             OR (prev_seq IS NULL AND chk.trunc_epoch > cur.start_trunc AND bp)
        ), last AS (
          SELECT DISTINCT ON (rid) rid, seq, op, ap, a, trunc_epoch FROM tr ORDER BY rid, seq DESC, ord DESC, k DESC
        ), expect AS (
          SELECT l.*, (l.ap AND l.trunc_epoch = cur.trunc_epoch) AS present FROM last l, cur
        ), cur_rows AS ({tbl}
        ), finals AS (
          SELECT 'final'::text AS kind, e.rid, e.seq, e.op, e.present AS s1, e.a AS v1,
                 (c.rid IS NOT NULL) AS s2, c.lab AS v2, NULL::bigint AS prev_seq
          FROM expect e LEFT JOIN cur_rows c ON c.rid = e.rid
          WHERE (e.present IS DISTINCT FROM (c.rid IS NOT NULL) OR (e.present AND e.a IS DISTINCT FROM c.lab))
            -- removed by a TRUNCATE that recorded it, yet in the table: listed below with no INSERT since
            AND NOT (e.op = 'TRUNCATE' AND c.rid IS NOT NULL)
        )
        (SELECT *, count(*) OVER () FROM gaps WHERE rid <> ALL(%s::text[]) ORDER BY seq LIMIT %s)
        UNION ALL
        (SELECT *, count(*) OVER () FROM finals WHERE rid <> ALL(%s::text[]) ORDER BY seq LIMIT %s)
        UNION ALL
        SELECT 'state', NULL, NULL, NULL, trunc_epoch > start_trunc, NULL, NULL, NULL, NULL, 0 FROM cur
        """).format(t=t, tbl=tbl), (dups, _LIST_LIMIT, dups, _LIST_LIMIT)).fetchall()
    counts = {"gap": 0, "final": 0}
    truncated = False
    for kind, rid, seq, op, s1, v1, s2, v2, prev_seq, cnt in rows:
        if kind == "state":
            truncated = bool(s1)
            continue
        counts[kind] = cnt
        if kind == "gap":
            expected = _state(s2, v2) if prev_seq is not None else "absent (after a TRUNCATE)"
            report.trail_mismatches.append({
                "id": rid, "kind": "gap", "seq": seq, "op": op, "previous_seq": prev_seq,
                "expected": expected, "actual": _state(s1, v1),
                "message": f"trail row {seq} ({op}) starts from {_state(s1, v1)} but the trail left id "
                           f"{_fmt(rid)} at {expected}: a change in between was not recorded (trigger bypassed)"})
        else:
            cause = "changed with the trigger bypassed"
            if s1 and s2 and v1 in (renames or {}) and renames[v1] == v2:
                cause = (f"the label's enum type was altered (value {_fmt(v1)} renamed to {_fmt(v2)}), "
                         "which fires no trigger")
            report.trail_mismatches.append({
                "id": rid, "kind": "final_state", "seq": seq, "op": op,
                "expected": _state(s1, v1), "actual": _state(s2, v2),
                "message": f"id {_fmt(rid)}: the trail's last change (row {seq}, {op}) leaves it at "
                           f"{_state(s1, v1)} but the table has {_state(s2, v2)}: {cause}"})
    n_strays = 0
    if truncated:
        strays = conn.execute(sql.SQL(_TRANSITIONS + """
            , cur_rows AS ({tbl})
            SELECT c.rid, c.lab, count(*) OVER () FROM cur_rows c, cur
            WHERE NOT EXISTS (SELECT 1 FROM tr WHERE tr.rid = c.rid AND tr.trunc_epoch = cur.trunc_epoch)
              AND c.rid <> ALL(%s::text[])
            LIMIT %s""").format(t=t, tbl=tbl), (dups, _LIST_LIMIT)).fetchall()
        for rid, lab, cnt in strays:
            n_strays = cnt
            report.trail_mismatches.append({
                "id": rid, "kind": "final_state", "seq": None, "op": None,
                "expected": "absent (table truncated)", "actual": _state(True, lab),
                "message": f"id {_fmt(rid)} is in the table but the trail records no INSERT since the last "
                           "TRUNCATE: inserted with the trigger bypassed"})
    report.n_trail_mismatches = counts["gap"] + counts["final"] + n_strays
    _notes_from_protect_events(conn, n, report)


def _duplicate_ids(conn, n: _Names, tbl, report: PgVerifyReport) -> list[str]:
    """Ids held by several rows of the table, each reported with what the trail records of it; their texts.

    The trail replays one state per id, so it cannot follow such rows; it can still count them.  Since
    :func:`protect` needs a unique id column, at most one row of an id predates the protection (none
    after a ``TRUNCATE``): rows beyond that and the recorded arrivals minus removals were written with
    the trigger bypassed.
    """
    sql = _sql()
    found = conn.execute(sql.SQL("""
        WITH cur_rows AS ({tbl})
        SELECT rid, count(*), array_agg(lab ORDER BY lab), count(*) OVER () FROM cur_rows
        GROUP BY rid HAVING count(*) > 1 ORDER BY rid LIMIT %s""").format(tbl=tbl), (_LIST_LIMIT,)).fetchall()
    if not found:
        return []
    ids = [r[0] for r in found]
    events = conn.execute(sql.SQL(_TRANSITIONS + """
        SELECT tr.rid, tr.seq, tr.op, tr.bp, tr.ap, tr.a, tr.trunc_epoch, cur.trunc_epoch, cur.start_trunc,
               e.session_user_name, e.txid, e.logged_at, e.current_user_name, e.application_name, e.client_addr
        FROM tr JOIN {t} e USING (seq), cur WHERE tr.rid = ANY(%s) ORDER BY tr.seq, tr.ord, tr.k""").format(
            t=n.trail_ident), (ids,)).fetchall()
    by_id: dict[str, list] = {}
    for e in events:
        by_id.setdefault(e[0], []).append(e)
    state = conn.execute(sql.SQL(_TRANSITIONS + "SELECT trunc_epoch > start_trunc FROM cur").format(
        t=n.trail_ident)).fetchone()
    truncated = bool(state and state[0])
    for rid, n_rows, labels, total in found:
        report.n_duplicate_ids = total
        now = [e for e in by_id.get(rid, []) if e[6] == e[7]]  # since the last TRUNCATE
        arrivals = [e for e in now if e[4] and not e[3]]
        net = sum(bool(e[4]) for e in now) - sum(bool(e[3]) for e in now)
        before = n_rows - net  # rows of this id present before the trail's first step (0 or 1 if all recorded)
        recorded = "; ".join(f"{e[2]} of {_state(True, e[5])} (row {e[1]}, by {e[9]}, txid {e[10]}, "
                             f"{e[11].isoformat()})" for e in arrivals[:5])
        recorded = (f"the trail records {len(arrivals)} arrival(s): {recorded}" if arrivals
                    else "the trail records no INSERT of it")
        consistent = 0 <= before <= (0 if truncated else 1)
        if not consistent:
            verdict = (f"{n_rows} rows where the recorded inserts and deletes leave {max(net, 0)}"
                       f"{'' if truncated else ' (plus one from before the protection)'}: rows inserted or "
                       "deleted with the trigger bypassed")
        else:
            verdict = ("consistent with the trail; it cannot tell these rows apart: give the id column a "
                       "unique constraint again")
        report.duplicate_ids.append({
            "id": rid, "rows": n_rows, "labels": labels, "consistent": consistent,
            "recorded": [{"seq": e[1], "op": e[2], "label": e[5], "session_user": e[9], "current_user": e[12],
                          "application_name": e[13], "client_addr": e[14], "txid": e[10],
                          "at": e[11].isoformat()} for e in arrivals],
            "message": f"duplicated id {rid}: {n_rows} rows in the table ("
                       + ", ".join(_state(True, v) for v in labels) + f"); {recorded}; {verdict}"})
    return ids


def _check_temporary(conn, n: _Names, report: PgVerifyReport) -> None:
    """Labels changed by one transaction and restored by a later one: the window they were wrong in.

    Per id, the trail's changes are grouped by transaction (a change reverted
    inside its own transaction was never visible to anyone else and is not
    reported); a transaction that leaves a row as it was before an earlier
    transaction's change closes a window opened by that change.
    """
    sql = _sql()
    rows = conn.execute(sql.SQL(_TRANSITIONS + """
        , tx AS (
          SELECT tr.rid, tr.seq, tr.ord, tr.k, tr.bp, tr.b, tr.ap, tr.a, ev.txid, ev.logged_at,
                 ev.session_user_name AS who
          FROM tr JOIN ev USING (seq)
        ), runs AS (  -- the chain lock makes each transaction's steps contiguous: one run per (id, txid)
          SELECT rid, txid, seq, logged_at, who,
                 first_value(bp) OVER w AS bp, first_value(b) OVER w AS b,
                 last_value(ap) OVER w AS ap, last_value(a) OVER w AS a,
                 last_value(seq) OVER w AS last_seq, last_value(logged_at) OVER w AS t_last,
                 row_number() OVER w AS rn
          FROM tx
          WINDOW w AS (PARTITION BY rid, txid ORDER BY seq, ord, k
                       ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
        ), steps AS (  -- what each transaction did to each id, when it made a difference
          SELECT rid, txid, seq AS first_seq, last_seq, logged_at AS t_first, t_last, who, bp, b, ap, a
          FROM runs
          WHERE rn = 1 AND (bp, CASE WHEN bp THEN b END) IS DISTINCT FROM (ap, CASE WHEN ap THEN a END)
        ), moves AS (  -- per (id, state): a transaction left it (kind 0) or entered it (kind 1)
          SELECT rid, first_seq AS at_seq, 0 AS kind, bp AS sp, CASE WHEN bp THEN b END AS sv,
                 first_seq AS e_seq, t_first AS e_at, who, txid, ap AS p1, CASE WHEN ap THEN a END AS v1
          FROM steps
          UNION ALL
          SELECT rid, first_seq, 1, ap, CASE WHEN ap THEN a END, last_seq, t_last, who, txid, NULL, NULL
          FROM steps
        ), back AS (  -- an id leaves and enters a given state alternately: entering it right after
                      -- leaving it closes the window the leaving opened
          SELECT m.*, lag(kind) OVER w AS pk, lag(e_seq) OVER w AS i_seq, lag(e_at) OVER w AS i_at,
                 lag(who) OVER w AS i_who, lag(txid) OVER w AS i_txid, lag(p1) OVER w AS i_p1,
                 lag(v1) OVER w AS i_v1
          FROM moves m WINDOW w AS (PARTITION BY rid, sp, sv ORDER BY at_seq, kind)
        )
        SELECT rid, sp, sv, i_p1, i_v1, i_seq, i_at, i_who, i_txid, e_seq, e_at, who, txid, count(*) OVER ()
        FROM back WHERE kind = 1 AND pk = 0
        ORDER BY i_seq, rid LIMIT %s""").format(t=n.trail_ident),
        (_LIST_LIMIT,)).fetchall()
    for (rid, p0, v0, p1, v1, from_seq, from_at, from_who, from_txid, to_seq, to_at, to_who, to_txid,
         total) in rows:
        report.n_temporary_changes = total
        report.temporary_changes.append({
            "id": rid, "restored": _state(p0, v0), "interim": _state(p1, v1),
            "from_seq": from_seq, "from": from_at.isoformat(), "from_session_user": from_who, "from_txid": from_txid,
            "to_seq": to_seq, "to": to_at.isoformat(), "to_session_user": to_who, "to_txid": to_txid,
            "seconds": (to_at - from_at).total_seconds(),
            "message": f"id {_fmt(rid)} was {_state(p1, v1)} instead of {_state(p0, v0)} from {from_at.isoformat()} "
                       f"(txid {from_txid}, {from_who}) to {to_at.isoformat()} (txid {to_txid}, {to_who}): "
                       "anything that read the table in between saw it"})


def _notes_from_protect_events(conn, n: _Names, report: PgVerifyReport) -> None:
    """A PROTECT row that repaired the protection is evidence the trail was off or replaced for a while."""
    sql = _sql()
    rows = conn.execute(sql.SQL(
        "SELECT seq, logged_at, session_user_name, detail FROM {t} WHERE op = 'PROTECT' "
        "AND (jsonb_array_length(coalesce(detail->'reenabled', '[]'::jsonb)) > 0 "
        "     OR jsonb_array_length(coalesce(detail->'recreated', '[]'::jsonb)) > 0 "
        "     OR jsonb_array_length(coalesce(detail->'identity_drift', '[]'::jsonb)) > 0 "
        "     OR coalesce((detail->'unprotected'->>'n_differ')::int, 0) > 0) ORDER BY seq").format(
            t=n.trail_ident)).fetchall()
    for seq, at, who, detail in rows:
        gap = detail.get("unprotected") or {}
        if gap.get("n_differ"):
            shown = "; ".join(f"id {_fmt(d['id'])}: {_state(*d['trail'])} in the trail, {_state(*d['table'])} in the "
                              "table" for d in gap["differ"][:20])
            more = f"; and {gap['n_differ'] - 20} more" if gap["n_differ"] > 20 else ""
            report.problems.append(
                f"trail row {seq}: table {n.ref} was unprotected from {gap.get('since')} to {at.isoformat()} "
                f"({who} protected it again): {gap['n_differ']} label(s) differ from the trail's last word "
                f"({shown}{more}); changed while nothing was recording")
            if not (detail.get("reenabled") or detail.get("recreated") or detail.get("identity_drift")):
                continue
        what = []
        if detail.get("reenabled"):
            what.append(f"re-enabled trigger(s) {', '.join(detail['reenabled'])}")
        if detail.get("recreated"):
            what.append(f"recreated dropped trigger(s) {', '.join(detail['recreated'])}")
        if detail.get("identity_drift") and not detail.get("reenabled") and not detail.get("recreated"):
            what.append("found the protection changed (" + "; ".join(detail["identity_drift"]) + ")")
        report.problems.append(
            f"trail row {seq}: {who} {' and '.join(what)} at {at.isoformat()}: the trail was not recording "
            "for a while, changes made meanwhile were not recorded")


def _state(present, label) -> str:
    if not present:
        return "absent"
    return "label <missing>" if label is None else f"label {_fmt(label)}"


def _fmt(value) -> str:
    return json.dumps(value, default=str, ensure_ascii=False)


def _check_seal(snap, ref: TableRef, manifest, public_key, report: PgVerifyReport, n: _Names | None,
                secret: bytes | None = None, name: str | None = None,
                renames: dict[str, str] | None = None) -> None:
    """Verify the seal on the table read in this snapshot and explain its findings with the trail."""
    from ._pg_seal import _text as _text_id
    from ._pg_seal import explain_changes, seal_changes

    report.seal_checked = True
    seal_report, changes = seal_changes(snap, ref, manifest, public_key, secret, name)
    report.seal = seal_report
    report.seal_ok = bool(seal_report.get("ok"))
    if not seal_report.get("signature", {}).get("valid", True):
        report.problems.append("the manifest's signature is not valid for this public key: "
                               + "; ".join(seal_report.get("findings", [])))
        return
    if not seal_report.get("ok") and not changes and seal_report.get("findings"):
        report.problems.extend(seal_report["findings"])  # refused (another dataset's seal) or unreadable
        return
    if n is None:
        report.unexplained = [{**c, "explanation": "no audit trail"} for c in changes[:_LIST_LIMIT]]
        report.n_unexplained = len(changes)
        return
    sealed = seal_report.get("manifest", {})
    if (sealed.get("label"), sealed.get("id")) != (n.label_col, n.id_col):
        report.problems.append(f"the seal covers label '{sealed.get('label')}' / id '{sealed.get('id')}' but the "
                               f"trail watches label '{n.label_col}' / id '{n.id_col}': changes cannot be "
                               "explained")
        report.unexplained = [{**c, "explanation": "the trail watches other columns"}
                              for c in changes[:_LIST_LIMIT]]
        report.n_unexplained = len(changes)
        return
    # an id held by several rows: the seal compares one of them, the trail cannot tell them apart;
    # what the trail records of the id (listed in duplicate_ids) is the explanation
    dups = {d["id"]: d for d in report.duplicate_ids}
    explained, unexplained = [], []
    for c in [c for c in changes if _text_id(c["id"]) in dups]:
        d = dups[_text_id(c["id"])]
        if d["consistent"] and d["recorded"]:
            explained.append({**c, **{k: v for k, v in d["recorded"][-1].items() if k != "label"},
                              "n_recorded": len(d["recorded"]), "duplicate_id": True})
        else:
            unexplained.append({**c, "duplicate_id": True, "explanation": d["message"]})
    more_explained, more_unexplained = explain_changes(
        snap.conn, n, [c for c in changes if _text_id(c["id"]) not in dups], renames)
    explained += more_explained
    unexplained += more_unexplained
    report.explained = explained[:_LIST_LIMIT]
    report.unexplained = unexplained[:_LIST_LIMIT]
    report.n_unexplained = len(unexplained)
