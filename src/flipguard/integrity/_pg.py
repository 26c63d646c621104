"""A tamper-evident audit trail of label changes inside PostgreSQL.

:func:`protect` installs, on one table, PL/pgSQL triggers that append every
``INSERT``, ``DELETE``, ``TRUNCATE`` and every ``UPDATE`` that changes the
label or the id column to an append-only, hash-chained audit table
``flipguard_audit.<trail>``.  Each audit row records the old and new id and
label (as ``jsonb``, so types survive), ``session_user``, the role in effect
(``current_user`` at the time of the change, or ``SET ROLE``),
``application_name``, ``inet_client_addr()``, the transaction id and
``clock_timestamp()``, and stores ``row_hash = sha256(prev_hash || content)``
where ``content`` is a canonical ``jsonb`` text of the row.  The chain is
extended by one writer at a time: the first audited change of a transaction
takes the row lock of the table's registry entry (held until commit), so
concurrent writers queue, and a ``REPEATABLE READ`` writer that would fork the
chain gets a serialisation error instead.

Privileges: the trigger function is ``SECURITY DEFINER`` (owned by the role
that ran :func:`protect`, with a fixed ``search_path``); the audit schema is not
usable by ``PUBLIC``; ``UPDATE``, ``DELETE`` and ``TRUNCATE`` on the trail are
revoked from everyone, its owner included, and blocked by triggers that raise.
So a role that may write the labels cannot touch the trail.  A superuser or the
table's owner can still disable triggers: :func:`verify_postgres` is what
catches that, by comparing the table (and its signed seal) with the trail in
one snapshot.  See ``docs/postgres.md``.

References
----------
.. [1] Schneier, B., & Kelsey, J. (1999). Secure audit logs to support computer
   forensics. ACM Transactions on Information and System Security, 2(2), 159-176.
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
from ..exceptions import DataError, InvalidParameterError

__all__ = [
    "AUDIT_SCHEMA",
    "PgProtection",
    "PgVerifyReport",
    "protect",
    "protection_status",
    "unprotect",
    "verify_postgres",
]

#: Schema that holds the registry, every trail and the trigger functions.
AUDIT_SCHEMA = "flipguard_audit"
#: ``prev_hash`` of a trail's first row.
GENESIS = b"\x00" * 32
#: Names of the triggers installed on a protected table.
TABLE_TRIGGERS = ("flipguard_audit_row", "flipguard_audit_update", "flipguard_audit_truncate")
_TRAIL_TRIGGERS = ("flipguard_append_only", "flipguard_no_truncate")
_MIN_SERVER = 110000  # built-in sha256(), EXECUTE FUNCTION
_LIST_LIMIT = 1000


# --------------------------------------------------------------------------- results
@dataclass
class PgProtection:
    """Where a table's protection stands (``flipguard pg status``).

    ``protected`` is true only when the registry entry is active, the three
    triggers exist and are enabled, and the trigger function exists.
    """

    table: str
    protected: bool
    registered: bool = False
    id_column: str | None = None
    label_column: str | None = None
    trail: str | None = None
    installed_at: str | None = None
    installed_by: str | None = None
    triggers: dict[str, str] = field(default_factory=dict)
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
    ``ok_if_recorded`` accepts them); ``unexplained`` lists changes it does not (the trigger was
    bypassed: the worst case); ``trail_mismatches`` lists places where the
    trail and the table disagree even without a seal; ``chain_errors`` lists
    trail rows whose hash or link is wrong.  ``ok`` is true only when all are
    empty, the protection is in place and the seal (if given) verifies.
    """

    table: str
    trail: str | None
    protection: dict[str, Any]
    n_events: int = 0
    head_seq: int | None = None
    head_hash: str | None = None
    chain_ok: bool = True
    chain_errors: list[dict[str, Any]] = field(default_factory=list)
    seal_checked: bool = False
    seal_ok: bool | None = None
    seal: dict[str, Any] | None = None
    explained: list[dict[str, Any]] = field(default_factory=list)
    unexplained: list[dict[str, Any]] = field(default_factory=list)
    n_unexplained: int = 0
    trail_mismatches: list[dict[str, Any]] = field(default_factory=list)
    n_trail_mismatches: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Nothing differs from the seal and the trail is intact and consistent with the table."""
        return self.ok_if_recorded and self.seal_ok is not False

    @property
    def ok_if_recorded(self) -> bool:
        """Like :attr:`ok`, but changes since the seal are fine when the trail records every one of them."""
        signature_ok = not self.seal_checked or bool((self.seal or {}).get("signature", {}).get("valid"))
        return (self.chain_ok and not self.unexplained and not self.trail_mismatches
                and not self.problems and signature_ok)

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


def _canon(v: dict[str, str]) -> str:
    """SQL text of a row's canonical content; ``v`` maps field -> SQL expression (variable or column)."""
    return ("pg_catalog.jsonb_build_array({seq}, {op}, {old_id}, {new_id}, {old_label}, {new_label}, "
            "{sess}, {usr}, {app}, {addr}, {txid}, "
            "pg_catalog.to_char({at} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), "
            "{detail})::text").format(**v)


_CANON_COLUMNS = _canon(dict(seq="seq", op="op", old_id="old_id", new_id="new_id", old_label="old_label",
                             new_label="new_label", sess="session_user_name", usr="current_user_name",
                             app="application_name", addr="client_addr", txid="txid", at="logged_at",
                             detail="detail"))
_CANON_VARS = _canon(dict(seq="v_seq", op="p_op", old_id="p_old_id", new_id="p_new_id",
                          old_label="p_old_label", new_label="p_new_label", sess="v_sess", usr="v_usr",
                          app="v_app", addr="v_addr", txid="v_txid", at="v_at", detail="p_detail"))
_GENESIS_SQL = "'\\x" + GENESIS.hex() + "'::bytea"


class _Names:
    """Every object name for one protected table, composed once with psycopg.sql."""

    def __init__(self, conn, ref: TableRef, trail: str, id_col: str, label_col: str) -> None:
        sql = _sql()
        self.ref, self.trail = ref, trail
        self.table = ref.ident
        self.trail_ident = sql.Identifier(AUDIT_SCHEMA, trail)
        self.seq_ident = sql.Identifier(AUDIT_SCHEMA, f"{trail}_seq")
        self.log_fn = sql.Identifier(AUDIT_SCHEMA, f"{trail}_log")
        self.append_fn = sql.Identifier(AUDIT_SCHEMA, f"{trail}_append")
        self.registry = sql.Identifier(AUDIT_SCHEMA, "protected")
        self.reject_fn = sql.Identifier(AUDIT_SCHEMA, "reject_change")
        self.schema = sql.Identifier(AUDIT_SCHEMA)
        self.id_col, self.label_col = id_col, label_col
        self.id = sql.Identifier(id_col)
        self.label = sql.Identifier(label_col)
        self.s = {  # SQL text fragments for PL/pgSQL bodies
            "trail": self.trail_ident.as_string(conn),
            "seq_lit": sql.Literal(self.seq_ident.as_string(conn)).as_string(conn),
            "registry": self.registry.as_string(conn),
            "trail_lit": sql.Literal(trail).as_string(conn),
            "append_fn": self.append_fn.as_string(conn),
            "id": self.id.as_string(conn),
            "label": self.label.as_string(conn),
        }


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
    """PL/pgSQL statements appending one row (fields in ``p_*`` variables) to the chain."""
    s = n.s
    return f"""
  -- one writer extends the chain at a time: the first audited change of a
  -- transaction locks the registry row until commit
  SELECT chain_txid INTO v_holder FROM {s['registry']} WHERE trail = {s['trail_lit']};
  IF NOT FOUND THEN
    RAISE EXCEPTION 'flipguard: audit registry entry % is missing', {s['trail_lit']}
      USING ERRCODE = 'object_not_in_prerequisite_state';
  END IF;
  IF v_holder IS DISTINCT FROM v_txid THEN
    -- the checkpoint is a trail row known to exist: the newest one this statement's
    -- snapshot sees (older than the lock if it had to wait, which is still a true row)
    UPDATE {s['registry']} SET chain_txid = v_txid,
        (checkpoint_seq, checkpoint_hash) = (SELECT seq, row_hash FROM {s['trail']} ORDER BY seq DESC LIMIT 1)
      WHERE trail = {s['trail_lit']};
  END IF;
  -- a fresh snapshot, taken after the lock: sees every committed row of the chain
  SELECT seq, row_hash INTO v_last, v_prev FROM {s['trail']} ORDER BY seq DESC LIMIT 1;
  v_prev := coalesce(v_prev, {_GENESIS_SQL});
  v_usr := current_setting('role');
  IF v_usr IS NULL OR v_usr = 'none' THEN v_usr := session_user; END IF;
  v_seq := nextval({s['seq_lit']}::regclass);
  v_at := clock_timestamp();
  INSERT INTO {s['trail']} (seq, op, old_id, new_id, old_label, new_label, session_user_name,
      current_user_name, application_name, client_addr, txid, logged_at, detail, prev_hash, row_hash)
  VALUES (v_seq, p_op, p_old_id, p_new_id, p_old_label, p_new_label, v_sess, v_usr, v_app, v_addr,
      v_txid, v_at, p_detail, v_prev,
      sha256(v_prev || convert_to({_CANON_VARS}, 'UTF8')));"""


def _append_body(n: _Names, txid_expr: str) -> str:
    """PL/pgSQL body of ``<trail>_append(p_op, p_old_id, p_new_id, p_old_label, p_new_label, p_detail)``."""
    return f"""
DECLARE{_chain_declare(txid_expr)}
BEGIN{_chain_append(n)}
END
"""


def _log_body(n: _Names, txid_expr: str) -> str:
    """PL/pgSQL body of the trigger function ``<trail>_log()`` (the chain code inlined: no nested call)."""
    s = n.s
    return f"""
DECLARE{_chain_declare(txid_expr)}
  p_op text := TG_OP;
  p_old_id jsonb;
  p_new_id jsonb;
  p_old_label jsonb;
  p_new_label jsonb;
  p_detail jsonb;
BEGIN
  IF TG_OP = 'UPDATE' THEN
    p_old_id := to_jsonb(OLD.{s['id']}); p_new_id := to_jsonb(NEW.{s['id']});
    p_old_label := to_jsonb(OLD.{s['label']}); p_new_label := to_jsonb(NEW.{s['label']});
  ELSIF TG_OP = 'INSERT' THEN
    p_new_id := to_jsonb(NEW.{s['id']}); p_new_label := to_jsonb(NEW.{s['label']});
  ELSIF TG_OP = 'DELETE' THEN
    p_old_id := to_jsonb(OLD.{s['id']}); p_old_label := to_jsonb(OLD.{s['label']});
  ELSE
    p_detail := jsonb_build_object('table', TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME);
  END IF;{_chain_append(n)}
  RETURN NULL;
END
"""


_REJECT_BODY = """
BEGIN
  RAISE EXCEPTION 'flipguard audit trail %.% is append-only: % is not allowed',
    TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP USING ERRCODE = 'insufficient_privilege';
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


def _check_columns(conn, ref: TableRef, cols: dict[str, str], where: str) -> None:
    names = [r[0] for r in conn.execute(
        "SELECT attname FROM pg_catalog.pg_attribute WHERE attrelid = %s AND attnum > 0 "
        "AND NOT attisdropped ORDER BY attnum", (ref.oid,)).fetchall()]
    for role, col in cols.items():
        if not isinstance(col, str) or not col:
            raise InvalidParameterError(f"give the {role} column (--{role})")
        if col not in names:
            raise DataError(f"{where}: {role} column '{col}' not found in table {ref} "
                            f"(columns: {', '.join(names)})")
    if cols.get("id") == cols.get("label"):
        raise InvalidParameterError("the id and label columns must differ")


def _registry_exists(conn) -> bool:
    return conn.execute("SELECT pg_catalog.to_regclass(%s) IS NOT NULL",
                        (f'"{AUDIT_SCHEMA}"."protected"',)).fetchone()[0]


def _registry_row(conn, ref: TableRef) -> dict[str, Any] | None:
    if not _registry_exists(conn):
        return None
    cur = conn.execute(
        f'SELECT trail, relid::int8, table_schema, table_name, id_column, label_column, active, '
        f'installed_at, installed_by, checkpoint_seq, checkpoint_hash FROM "{AUDIT_SCHEMA}".protected '
        f"WHERE relid = %s", (ref.oid,))
    row = cur.fetchone()
    if row is None:
        return None
    return dict(zip([d.name for d in cur.description], row))


def _triggers(conn, oid: int) -> dict[str, str]:
    """Our triggers on table ``oid`` -> ``"enabled"``, ``"disabled"``, ``"replica only"`` or ``"always"``."""
    states = {"O": "enabled", "D": "disabled", "R": "replica only", "A": "always"}
    rows = conn.execute("SELECT tgname, tgenabled::text FROM pg_catalog.pg_trigger "
                        "WHERE tgrelid = %s AND tgname = ANY(%s)", (oid, list(TABLE_TRIGGERS))).fetchall()
    return {name: states.get(state, state) for name, state in rows}


def _function_exists(conn, ident) -> bool:
    return conn.execute("SELECT pg_catalog.to_regproc(%s) IS NOT NULL",
                        (ident.as_string(conn),)).fetchone()[0]


def _head(conn, trail_ident) -> tuple[int, int | None, str | None, str | None]:
    sql = _sql()
    row = conn.execute(sql.SQL(
        "SELECT (SELECT count(*) FROM {t}), h.seq, h.row_hash, h.logged_at FROM "
        "(SELECT 1) one LEFT JOIN (SELECT seq, row_hash, logged_at FROM {t} ORDER BY seq DESC LIMIT 1) h "
        "ON true").format(t=trail_ident)).fetchone()
    n, seq, h, at = row
    return int(n), seq, (bytes(h).hex() if h is not None else None), (at.isoformat() if at else None)


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


def protect(dsn: str, table: str, *, id: str, label: str) -> PgProtection:  # noqa: A002
    """Install (idempotently) the audit trail on ``table``.

    Parameters
    ----------
    dsn : str
        ``postgresql://`` connection string of a role that owns ``table`` (or a
        superuser) and may create a schema in the database.
    table : str
        Table to protect, optionally ``"schema.table"``.
    id, label : str
        The id column (rows are identified by it in the trail) and the label column.

    Returns
    -------
    PgProtection
        The status afterwards; ``changed`` lists what this call created or re-enabled
        (empty when the table was already fully protected).

    Raises
    ------
    DataError
        Unknown table or column, a server older than PostgreSQL 11, or a table
        already protected with other columns (unprotect it first).
    """
    where = redact_dsn(dsn)
    with _admin_transaction(dsn, "protect", table) as conn:
        _server_check(conn, where)
        ref = resolve_table(conn, table, where=where, kinds="rp")
        _check_columns(conn, ref, {"id": id, "label": label}, where)
        changed = _install(conn, ref, id, label, where)
    status = protection_status(dsn, table)
    status.changed = changed
    return status


def _install(conn, ref: TableRef, id_col: str, label_col: str, where: str) -> list[str]:
    sql = _sql()
    changed: list[str] = []
    reg = _registry_row(conn, ref)
    if reg is None and _registry_exists(conn):
        # same name as a table that was dropped and re-created: take its trail over
        orphan = conn.execute(
            f'SELECT trail, relid::int8 FROM "{AUDIT_SCHEMA}".protected WHERE trail = %s '
            "AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = relid)",
            (trail_name(ref),)).fetchone()
        if orphan:
            conn.execute(f'UPDATE "{AUDIT_SCHEMA}".protected SET relid = %s WHERE trail = %s',
                         (ref.oid, orphan[0]))
            reg = _registry_row(conn, ref)
    if reg is not None and reg["active"] and (reg["id_column"], reg["label_column"]) != (id_col, label_col):
        raise DataError(f"{where}: table {ref} is already protected with --id {reg['id_column']} "
                        f"--label {reg['label_column']}; run 'flipguard pg unprotect' first")
    trail = reg["trail"] if reg is not None else trail_name(ref)
    n = _Names(conn, ref, trail, id_col, label_col)

    # schema, registry and the shared append-only guard
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(n.schema))
    conn.execute(sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC").format(n.schema))
    conn.execute(sql.SQL("""
        CREATE TABLE IF NOT EXISTS {reg} (
            trail text PRIMARY KEY,
            relid oid UNIQUE NOT NULL,
            table_schema text NOT NULL,
            table_name text NOT NULL,
            id_column text NOT NULL,
            label_column text NOT NULL,
            active boolean NOT NULL,
            installed_at timestamptz NOT NULL,
            installed_by text NOT NULL,
            chain_txid bigint,
            checkpoint_seq bigint,
            checkpoint_hash bytea) WITH (fillfactor = 50)""").format(reg=n.registry))
    conn.execute(sql.SQL("REVOKE ALL ON {} FROM PUBLIC").format(n.registry))
    conn.execute(sql.SQL(
        "CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql "
        "SET search_path = pg_catalog, pg_temp AS {body}").format(fn=n.reject_fn, body=sql.Literal(_REJECT_BODY)))

    # the trail itself: append-only for everyone, its owner included
    fresh = reg is None or not reg["active"]
    existed = conn.execute("SELECT pg_catalog.to_regclass(%s) IS NOT NULL",
                           (n.trail_ident.as_string(conn),)).fetchone()[0]
    if not existed:
        changed.append("trail")
        conn.execute(sql.SQL("""
            CREATE TABLE {t} (
                seq bigint PRIMARY KEY,
                op text NOT NULL,
                old_id jsonb, new_id jsonb, old_label jsonb, new_label jsonb,
                session_user_name text NOT NULL,
                current_user_name text NOT NULL,
                application_name text,
                client_addr text,
                txid bigint NOT NULL,
                logged_at timestamptz NOT NULL,
                detail jsonb,
                prev_hash bytea NOT NULL,
                row_hash bytea NOT NULL)""").format(t=n.trail_ident))
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
        conn.execute(sql.SQL("CREATE TRIGGER flipguard_append_only BEFORE UPDATE OR DELETE ON {t} "
                             "FOR EACH ROW EXECUTE FUNCTION {fn}()").format(t=n.trail_ident, fn=n.reject_fn))
    if "flipguard_no_truncate" not in have:
        conn.execute(sql.SQL("CREATE TRIGGER flipguard_no_truncate BEFORE TRUNCATE ON {t} "
                             "FOR EACH STATEMENT EXECUTE FUNCTION {fn}()").format(t=n.trail_ident, fn=n.reject_fn))
    conn.execute(sql.SQL("ALTER TABLE {t} ENABLE ALWAYS TRIGGER flipguard_append_only").format(t=n.trail_ident))
    conn.execute(sql.SQL("ALTER TABLE {t} ENABLE ALWAYS TRIGGER flipguard_no_truncate").format(t=n.trail_ident))

    # registry entry
    if reg is None:
        conn.execute(sql.SQL(
            "INSERT INTO {reg} (trail, relid, table_schema, table_name, id_column, label_column, active, "
            "installed_at, installed_by) VALUES (%s, %s, %s, %s, %s, %s, true, clock_timestamp(), "
            "session_user)").format(reg=n.registry), (trail, ref.oid, ref.schema, ref.name, id_col, label_col))
        changed.append("registry")
    elif not reg["active"]:
        conn.execute(sql.SQL(
            "UPDATE {reg} SET active = true, table_schema = %s, table_name = %s, id_column = %s, "
            "label_column = %s, installed_at = clock_timestamp(), installed_by = session_user "
            "WHERE trail = %s").format(reg=n.registry), (ref.schema, ref.name, id_col, label_col, trail))
        changed.append("registry")

    # functions: the appender (chain logic) and the trigger function
    fn_missing = not (_function_exists(conn, n.append_fn) and _function_exists(conn, n.log_fn))
    conn.execute(sql.SQL(
        "CREATE OR REPLACE FUNCTION {fn}(p_op text, p_old_id jsonb, p_new_id jsonb, p_old_label jsonb, "
        "p_new_label jsonb, p_detail jsonb) RETURNS void LANGUAGE plpgsql SECURITY DEFINER "
        "SET search_path = pg_catalog, pg_temp AS {body}").format(
            fn=n.append_fn, body=sql.Literal(_append_body(n, _txid_expr(conn)))))
    conn.execute(sql.SQL(
        "CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER "
        "SET search_path = pg_catalog, pg_temp AS {body}").format(
            fn=n.log_fn, body=sql.Literal(_log_body(n, _txid_expr(conn)))))
    conn.execute(sql.SQL("REVOKE ALL ON FUNCTION {}() FROM PUBLIC").format(n.log_fn))
    conn.execute(sql.SQL("REVOKE ALL ON FUNCTION {}(text, jsonb, jsonb, jsonb, jsonb, jsonb) FROM PUBLIC").format(
        n.append_fn))
    if fn_missing:
        changed.append("functions")

    # triggers on the protected table
    states = _triggers(conn, ref.oid)
    reenabled = [name for name, state in states.items() if state != "enabled"]
    definitions = {
        "flipguard_audit_row": sql.SQL("AFTER INSERT OR DELETE ON {t} FOR EACH ROW EXECUTE FUNCTION {fn}()"),
        "flipguard_audit_update": sql.SQL(
            "AFTER UPDATE ON {t} FOR EACH ROW WHEN (OLD.{label} IS DISTINCT FROM NEW.{label} "
            "OR OLD.{id} IS DISTINCT FROM NEW.{id}) EXECUTE FUNCTION {fn}()"),
        "flipguard_audit_truncate": sql.SQL("AFTER TRUNCATE ON {t} FOR EACH STATEMENT EXECUTE FUNCTION {fn}()"),
    }
    for name, definition in definitions.items():
        if name not in states:
            conn.execute(sql.SQL("CREATE TRIGGER {name} ").format(name=sql.Identifier(name)) + definition.format(
                t=n.table, fn=n.log_fn, label=n.label, id=n.id))
            changed.append(f"trigger {name}")
        elif states[name] != "enabled":
            conn.execute(sql.SQL("ALTER TABLE {t} ENABLE TRIGGER {name}").format(
                t=n.table, name=sql.Identifier(name)))
            changed.append(f"re-enabled trigger {name} (was {states[name]})")

    if changed:
        detail = {"event": "protect", "table": str(ref), "id_column": id_col, "label_column": label_col,
                  "fresh": fresh, "reenabled": reenabled, "changed": changed}
        _append_event(conn, n, "PROTECT", detail)
    return changed


def _append_event(conn, n: _Names, op: str, detail: dict) -> None:
    from psycopg.types.json import Jsonb

    sql = _sql()
    conn.execute(sql.SQL("SELECT {fn}(%s, NULL, NULL, NULL, NULL, %s)").format(fn=n.append_fn),
                 (op, Jsonb(detail)))


def unprotect(dsn: str, table: str, *, drop_trail: bool = False) -> PgProtection:
    """Remove the triggers and functions :func:`protect` installed on ``table``.

    By default the audit trail is kept (append-only, its guard triggers still
    in place) and gets a final ``UNPROTECT`` row, so the history of who changed
    which label survives and protecting the table again continues the same
    chain.  ``drop_trail=True`` drops the trail too (and the whole
    ``flipguard_audit`` schema when no other table is protected).
    Unprotecting a table that is not protected does nothing.
    """
    psycopg = import_psycopg()
    sql = _sql()
    where = redact_dsn(dsn)
    with _admin_transaction(dsn, "unprotect", table) as conn:
        ref = resolve_table(conn, table, where=where, kinds="rp")
        reg = _registry_row(conn, ref)
        changed: list[str] = []
        for name in _triggers(conn, ref.oid):
            conn.execute(sql.SQL("DROP TRIGGER IF EXISTS {name} ON {t}").format(
                name=sql.Identifier(name), t=ref.ident))
            changed.append(f"dropped trigger {name}")
        if reg is not None:
            n = _Names(conn, ref, reg["trail"], reg["id_column"], reg["label_column"])
            if not drop_trail and reg["active"] and _function_exists(conn, n.append_fn):
                _append_event(conn, n, "UNPROTECT", {"event": "unprotect", "table": str(ref)})
            conn.execute(sql.SQL("DROP FUNCTION IF EXISTS {}()").format(n.log_fn))
            conn.execute(sql.SQL("DROP FUNCTION IF EXISTS {}(text, jsonb, jsonb, jsonb, jsonb, jsonb)").format(
                n.append_fn))
            if drop_trail:
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(n.trail_ident))
                conn.execute(sql.SQL("DELETE FROM {} WHERE trail = %s").format(n.registry), (reg["trail"],))
                changed.append("dropped trail")
                left = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(n.registry)).fetchone()[0]
                if left == 0:
                    conn.execute(sql.SQL("DROP TABLE {}").format(n.registry))
                    conn.execute(sql.SQL("DROP FUNCTION IF EXISTS {}()").format(n.reject_fn))
                    conn.execute("SAVEPOINT drop_schema")
                    try:
                        conn.execute(sql.SQL("DROP SCHEMA {}").format(n.schema))
                    except psycopg.errors.DependentObjectsStillExist:
                        conn.execute("ROLLBACK TO SAVEPOINT drop_schema")
            elif reg["active"]:
                conn.execute(sql.SQL("UPDATE {} SET active = false WHERE trail = %s").format(n.registry),
                             (reg["trail"],))
                changed.append("deactivated (trail kept)")
    status = protection_status(dsn, table)
    status.changed = changed
    return status


def protection_status(dsn: str, table: str) -> PgProtection:
    """Registry entry, trigger states and trail head of ``table`` (read-only)."""
    psycopg = import_psycopg()
    where = redact_dsn(dsn)
    with pg_snapshot(dsn) as snap:
        try:
            ref = snap.resolve(table, kinds="rp")
            return _status(snap.conn, ref)
        except psycopg.Error as exc:
            raise DataError(f"{where}: cannot read the protection of {table}: {_msg(exc)}") from None


def _status(conn, ref: TableRef) -> PgProtection:
    reg = _registry_row(conn, ref)
    triggers = _triggers(conn, ref.oid)
    if reg is None:
        return PgProtection(table=str(ref), protected=False, triggers=triggers)
    n = _Names(conn, ref, reg["trail"], reg["id_column"], reg["label_column"])
    trail_exists = conn.execute("SELECT pg_catalog.to_regclass(%s) IS NOT NULL",
                                (n.trail_ident.as_string(conn),)).fetchone()[0]
    n_events, head_seq, head_hash, last_at = _head(conn, n.trail_ident) if trail_exists else (0, None, None, None)
    functions = _function_exists(conn, n.log_fn) and _function_exists(conn, n.append_fn)
    protected = (reg["active"] and trail_exists and functions and len(triggers) == len(TABLE_TRIGGERS)
                 and all(state in ("enabled", "always") for state in triggers.values()))
    return PgProtection(
        table=str(ref), protected=bool(protected), registered=True, id_column=reg["id_column"],
        label_column=reg["label_column"], trail=f"{AUDIT_SCHEMA}.{reg['trail']}",
        installed_at=reg["installed_at"].isoformat() if reg["installed_at"] else None,
        installed_by=reg["installed_by"], triggers=triggers, n_events=n_events, head_seq=head_seq,
        head_hash=head_hash, last_event_at=last_at)


def _msg(exc) -> str:
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    if primary:
        return primary
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --------------------------------------------------------------------------- verify
def verify_postgres(dsn: str, table: str, manifest=None, public_key=None, *,
                    anchor: str | None = None, secret: bytes | None = None) -> PgVerifyReport:
    """Check ``table`` against its seal and its audit trail, all in one snapshot.

    The table, the audit trail and the registry are read in one ``REPEATABLE
    READ READ ONLY`` transaction.  Checks, in order:

    1. the protection is in place (registry active, triggers present and enabled);
    2. the hash chain: every row's ``row_hash`` is ``sha256(prev_hash ||
       content)`` and ``prev_hash`` is the previous row's hash (the first row's is
       32 zero bytes); the registry's checkpoint row and ``anchor`` (``"SEQ:HEX"``
       from an earlier ``flipguard pg status``) still hold;
    3. the trail agrees with the table: replaying the trail per id gives every
       row's current label, and each recorded change starts where the previous
       one ended (a gap means a change was made with the trigger bypassed);
    4. with ``manifest`` and ``public_key``: the seal is verified and every row
       that changed since is looked up in the trail: explained (who, when) or
       unexplained.  ``manifest`` is the manifest's path (its snapshot next to
       it), ``public_key`` a key or ``.pub`` path, ``secret`` the secret of a
       private seal.

    Returns
    -------
    PgVerifyReport
    """
    psycopg = import_psycopg()
    where = redact_dsn(dsn)
    anchor_pair = _parse_anchor(anchor) if anchor else None
    with pg_snapshot(dsn) as snap:
        try:
            ref = snap.resolve(table, kinds="rp")
            status = _status(snap.conn, ref)
            report = PgVerifyReport(table=str(ref), trail=status.trail, protection=status.to_dict(),
                                    n_events=status.n_events, head_seq=status.head_seq,
                                    head_hash=status.head_hash)
            if not status.registered:
                report.problems.append(f"table {ref} is not protected (no audit trail registered)")
                if manifest is not None:
                    _check_seal(snap, ref, manifest, public_key, report, None, secret)
                return report
            reg = _registry_row(snap.conn, ref)
            n = _Names(snap.conn, ref, reg["trail"], reg["id_column"], reg["label_column"])
            _protection_problems(status, report)
            trail_ok = status.trail is not None and snap.conn.execute(
                "SELECT pg_catalog.to_regclass(%s) IS NOT NULL", (n.trail_ident.as_string(snap.conn),)).fetchone()[0]
            if not trail_ok:
                report.problems.append(f"audit trail {status.trail} is missing")
                if manifest is not None:
                    _check_seal(snap, ref, manifest, public_key, report, None, secret)
                return report
            _check_chain(snap.conn, n, reg, anchor_pair, report)
            _check_replay(snap.conn, n, report)
            if manifest is not None:
                _check_seal(snap, ref, manifest, public_key, report, n, secret)
        except psycopg.Error as exc:
            raise DataError(f"{where}: cannot verify {table}: {_msg(exc)}") from None
    return report


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
    off = [f"{t} {s}" for t, s in status.triggers.items() if s not in ("enabled", "always")]
    if missing:
        reasons.append("missing trigger(s) " + ", ".join(missing))
    if off:
        reasons.append("trigger(s) " + ", ".join(off))
    if not reasons:
        reasons.append("protection removed (unprotect) or its functions are missing")
    report.problems.append(f"table {status.table} is not protected: " + "; ".join(reasons))


def _check_chain(conn, n: _Names, reg: dict, anchor, report: PgVerifyReport) -> None:
    sql = _sql()
    rows = conn.execute(sql.SQL(
        "SELECT seq, op, content_ok, link_ok, count(*) OVER () FROM ("
        " SELECT seq, op,"
        "  row_hash = pg_catalog.sha256(prev_hash || pg_catalog.convert_to(" + _CANON_COLUMNS + ", 'UTF8'))"
        "   AS content_ok,"
        "  prev_hash = coalesce(lag(row_hash) OVER (ORDER BY seq), " + _GENESIS_SQL + ") AS link_ok"
        " FROM {t}) c WHERE NOT content_ok OR NOT link_ok ORDER BY seq LIMIT %s").format(t=n.trail_ident),
        (_LIST_LIMIT,)).fetchall()
    for seq, op, content_ok, link_ok, _total in rows:
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


# Replaying the trail: every event becomes per-id transitions (present, label) -> (present, label).
# An UPDATE that changes the id is a removal of the old id and an arrival of the new one.
# Only events since the latest fresh PROTECT (first protection, or after an UNPROTECT) count;
# trunc_epoch counts the TRUNCATEs so far (after one, every id is absent).
_TRANSITIONS = """
WITH ev AS (
  SELECT seq, op, old_id, new_id, old_label, new_label,
         sum((op = 'TRUNCATE')::int) OVER w AS trunc_epoch,
         sum((op = 'PROTECT' AND coalesce((detail->>'fresh')::boolean, false))::int) OVER w AS prot_epoch
  FROM {t} WINDOW w AS (ORDER BY seq)
), cur0 AS (
  SELECT max(prot_epoch) AS prot_epoch, max(trunc_epoch) AS trunc_epoch FROM ev
), cur AS (
  SELECT cur0.*, (SELECT coalesce(min(ev.trunc_epoch), 0) FROM ev WHERE ev.prot_epoch = cur0.prot_epoch)
           AS start_trunc
  FROM cur0
), tr AS (
  SELECT seq, 0 AS ord, op, trunc_epoch,
         CASE WHEN op = 'INSERT' THEN new_id ELSE old_id END AS rid,
         op <> 'INSERT' AS bp, old_label AS b,
         op = 'INSERT' OR (op = 'UPDATE' AND old_id = new_id) AS ap, new_label AS a
  FROM ev
  WHERE op IN ('INSERT', 'UPDATE', 'DELETE') AND prot_epoch = (SELECT prot_epoch FROM cur)
    AND (CASE WHEN op = 'INSERT' THEN new_id ELSE old_id END) IS NOT NULL
  UNION ALL
  SELECT seq, 1, op, trunc_epoch, new_id, false, NULL::jsonb, true, new_label
  FROM ev
  WHERE op = 'UPDATE' AND old_id IS DISTINCT FROM new_id AND new_id IS NOT NULL
    AND prot_epoch = (SELECT prot_epoch FROM cur)
)
"""

def _check_replay(conn, n: _Names, report: PgVerifyReport) -> None:
    """Replay the trail per id: gaps between recorded changes, and the final state against the table."""
    sql = _sql()
    t = n.trail_ident
    tbl = sql.SQL("SELECT to_jsonb({id}) AS rid, to_jsonb({label}) AS lab FROM {tbl}").format(
        id=n.id, label=n.label, tbl=n.table)
    conn.execute("SET LOCAL work_mem = '256MB'")
    rows = conn.execute(sql.SQL(_TRANSITIONS + """
        , chk AS (
          SELECT tr.*, lag(ap) OVER p AS prev_ap, lag(a) OVER p AS prev_a,
                 lag(trunc_epoch) OVER p AS prev_epoch, lag(seq) OVER p AS prev_seq
          FROM tr WINDOW p AS (PARTITION BY rid ORDER BY seq, ord)
        ), gaps AS (
          SELECT 'gap'::text AS kind, rid, seq, op, bp AS s1, b AS v1, prev_ap AS s2, prev_a AS v2, prev_seq
          FROM chk, cur
          WHERE (prev_seq IS NOT NULL AND prev_epoch = chk.trunc_epoch
                 AND (bp IS DISTINCT FROM prev_ap OR (bp AND b IS DISTINCT FROM prev_a)))
             OR (prev_seq IS NOT NULL AND prev_epoch <> chk.trunc_epoch AND bp)
             OR (prev_seq IS NULL AND chk.trunc_epoch > cur.start_trunc AND bp)
        ), last AS (
          SELECT DISTINCT ON (rid) rid, seq, op, ap, a, trunc_epoch FROM tr ORDER BY rid, seq DESC, ord DESC
        ), expect AS (
          SELECT l.*, (l.ap AND l.trunc_epoch = cur.trunc_epoch) AS present FROM last l, cur
        ), cur_rows AS ({tbl}
        ), finals AS (
          SELECT 'final'::text AS kind, e.rid, e.seq, e.op, e.present AS s1, e.a AS v1,
                 (c.rid IS NOT NULL) AS s2, c.lab AS v2, NULL::bigint AS prev_seq
          FROM expect e LEFT JOIN cur_rows c ON c.rid = e.rid
          WHERE e.present IS DISTINCT FROM (c.rid IS NOT NULL) OR (e.present AND e.a IS DISTINCT FROM c.lab)
        )
        (SELECT *, count(*) OVER () FROM gaps ORDER BY seq LIMIT %s)
        UNION ALL
        (SELECT *, count(*) OVER () FROM finals ORDER BY seq LIMIT %s)
        UNION ALL
        SELECT 'state', NULL, NULL, NULL, trunc_epoch > start_trunc, NULL, NULL, NULL, NULL, 0 FROM cur
        """).format(t=t, tbl=tbl), (_LIST_LIMIT, _LIST_LIMIT)).fetchall()
    counts = {"gap": 0, "final": 0}
    truncated = False
    for kind, rid, seq, op, s1, v1, s2, v2, prev_seq, cnt in rows:
        if kind == "state":
            truncated = bool(s1)
            continue
        counts[kind] = cnt
        if kind == "gap":
            # a recorded change that does not start where the previous one for that id ended
            expected = _state(s2, v2) if prev_seq is not None else "absent (after a TRUNCATE)"
            report.trail_mismatches.append({
                "id": rid, "kind": "gap", "seq": seq, "op": op, "previous_seq": prev_seq,
                "expected": expected, "actual": _state(s1, v1),
                "message": f"trail row {seq} ({op}) starts from {_state(s1, v1)} but the trail left id "
                           f"{_fmt(rid)} at {expected}: a change in between was not recorded (trigger bypassed)"})
        else:
            # replaying the trail must give the table's current labels
            report.trail_mismatches.append({
                "id": rid, "kind": "final_state", "seq": seq, "op": op,
                "expected": _state(s1, v1), "actual": _state(s2, v2),
                "message": f"id {_fmt(rid)}: the trail's last change (row {seq}, {op}) leaves it at "
                           f"{_state(s1, v1)} but the table has {_state(s2, v2)}: changed with the trigger bypassed"})
    n_strays = 0
    if truncated:
        # after a TRUNCATE, every row must have arrived through a recorded INSERT
        strays = conn.execute(sql.SQL(_TRANSITIONS + """
            , cur_rows AS ({tbl})
            SELECT c.rid, c.lab, count(*) OVER () FROM cur_rows c, cur
            WHERE NOT EXISTS (SELECT 1 FROM tr WHERE tr.rid = c.rid AND tr.trunc_epoch = cur.trunc_epoch)
            LIMIT %s""").format(t=t, tbl=tbl), (_LIST_LIMIT,)).fetchall()
        for rid, lab, cnt in strays:
            n_strays = cnt
            report.trail_mismatches.append({
                "id": rid, "kind": "final_state", "seq": None, "op": None,
                "expected": "absent (table truncated)", "actual": _state(True, lab),
                "message": f"id {_fmt(rid)} is in the table but the trail records no INSERT since the last "
                           "TRUNCATE: inserted with the trigger bypassed"})
    report.n_trail_mismatches = counts["gap"] + counts["final"] + n_strays
    _notes_from_protect_events(conn, n, report)


def _notes_from_protect_events(conn, n: _Names, report: PgVerifyReport) -> None:
    """A PROTECT row that re-enabled a disabled trigger is evidence the trigger was off for a while."""
    sql = _sql()
    rows = conn.execute(sql.SQL(
        "SELECT seq, logged_at, session_user_name, detail FROM {t} WHERE op = 'PROTECT' "
        "AND jsonb_array_length(coalesce(detail->'reenabled', '[]'::jsonb)) > 0 ORDER BY seq").format(
            t=n.trail_ident)).fetchall()
    for seq, at, who, detail in rows:
        report.problems.append(
            f"trail row {seq}: {who} re-enabled trigger(s) {', '.join(detail['reenabled'])} at "
            f"{at.isoformat()}: they had been disabled, changes made meanwhile were not recorded")


def _state(present, label) -> str:
    if not present:
        return "absent"
    return f"label {_fmt(label)}"


def _fmt(value) -> str:
    return json.dumps(value, default=str, ensure_ascii=False)


def _check_seal(snap, ref: TableRef, manifest, public_key, report: PgVerifyReport, n: _Names | None,
                secret: bytes | None = None) -> None:
    """Verify the seal on the table read in this snapshot and explain its findings with the trail."""
    from ._pg_seal import explain_changes, seal_changes

    report.seal_checked = True
    seal_report, changes = seal_changes(snap, ref, manifest, public_key, secret)
    report.seal = seal_report
    report.seal_ok = bool(seal_report.get("ok"))
    if not seal_report.get("signature", {}).get("valid", True):
        report.problems.append("the manifest's signature is not valid for this public key: "
                               + "; ".join(seal_report.get("findings", [])))
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
    explained, unexplained = explain_changes(snap.conn, n, changes)
    report.explained = explained[:_LIST_LIMIT]
    report.unexplained = unexplained[:_LIST_LIMIT]
    report.n_unexplained = len(unexplained)
