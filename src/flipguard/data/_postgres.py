"""Reading PostgreSQL tables and queries into Arrow, from one consistent snapshot.

Rows travel as ``COPY (SELECT ...) TO STDOUT (FORMAT csv)`` and are parsed by
pyarrow's multi-threaded CSV reader with an explicit Arrow type per column,
chosen from the column's PostgreSQL type (so a ``text`` label ``"1"`` stays a
string and a ``boolean`` stays a boolean).  On the 2-core test machine this
reads 1.2M rows x 7 columns in 1.8-2.8 s where a cursor ``fetchall`` turned
into Arrow takes 4.9-7.6 s (``benchmarks/bench_pg_trigger.py``).

Every read runs inside a ``REPEATABLE READ READ ONLY`` transaction, so it sees
one snapshot of the database and cannot modify it, whatever the query says.
:func:`pg_snapshot` keeps that transaction open for several reads (the
PostgreSQL audit verifier reads a table and its audit trail in the same
snapshot).

psycopg 3 is an optional dependency: ``pip install 'flipguard[postgres]'``.
Identifiers are always composed with :mod:`psycopg.sql`, never by string
formatting.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from ..exceptions import DataError

__all__ = [
    "PgSnapshot",
    "TableRef",
    "connect",
    "import_psycopg",
    "pg_snapshot",
    "read_postgres",
    "redact_dsn",
]

_INSTALL_HINT = "pip install 'flipguard[postgres]'"

# PostgreSQL type OID -> Arrow type.  Anything not listed is read as its text form.
_BOOL, _INT8, _INT2, _INT4, _TEXT, _OID = 16, 20, 21, 23, 25, 26
_NAME, _CHAR, _BPCHAR, _VARCHAR = 19, 18, 1042, 1043
_FLOAT4, _FLOAT8, _NUMERIC = 700, 701, 1700
_DATE, _TIMESTAMP, _TIMESTAMPTZ = 1082, 1114, 1184

_ARROW_TYPES = {
    _BOOL: pa.bool_(),
    _INT2: pa.int16(),
    _INT4: pa.int32(),
    _INT8: pa.int64(),
    _OID: pa.int64(),
    _FLOAT4: pa.float32(),
    _FLOAT8: pa.float64(),
    _TEXT: pa.string(),
    _VARCHAR: pa.string(),
    _BPCHAR: pa.string(),
    _NAME: pa.string(),
    _CHAR: pa.string(),
    _DATE: pa.date32(),
    _TIMESTAMP: pa.timestamp("us"),
    _TIMESTAMPTZ: pa.timestamp("us", tz="UTC"),
}

#: Session settings that make the CSV text unambiguous for the Arrow parser.
_SESSION_SETUP = ("SET client_encoding = 'UTF8'; SET DateStyle = 'ISO, YMD'; "
                  "SET TimeZone = 'UTC'; SET extra_float_digits = 3; SET IntervalStyle = 'iso_8601'")


def import_psycopg():
    """The ``psycopg`` module, or a :class:`DataError` naming the extra to install."""
    try:
        import psycopg
    except ImportError:
        raise DataError(f"PostgreSQL support needs psycopg 3: {_INSTALL_HINT}") from None
    return psycopg


def redact_dsn(dsn: str) -> str:
    """``dsn`` with any password replaced by ``***`` (URL and ``key=value`` forms)."""
    clean = re.sub(r"(://[^:/@\s]*):[^@\s]*@", r"\1:***@", dsn)
    return re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]+)", r"\1***", clean, flags=re.I)


def _scrub(message: str, dsn: str) -> str:
    """First line of a driver message, with the DSN's password removed wherever it appears."""
    text = message.strip().splitlines()[0] if message.strip() else "unknown error"
    text = text.replace(dsn, redact_dsn(dsn))
    for secret in _passwords(dsn):
        text = text.replace(secret, "***")
    return redact_dsn(text)


def _passwords(dsn: str) -> list[str]:
    found = re.findall(r"://[^:/@\s]*:([^@\s]+)@", dsn)
    found += [m.strip("'") for m in re.findall(r"password\s*=\s*('(?:[^'\\]|\\.)*'|[^\s&]+)", dsn, flags=re.I)]
    return [s for s in found if s and s != "***"]


def connect(dsn: str, *, autocommit: bool = True, connect_timeout: int = 10):
    """Open a psycopg connection with flipguard's session settings.

    Connection failures become one :class:`DataError` line that never shows the password.
    """
    psycopg = import_psycopg()
    try:
        conn = psycopg.connect(dsn, autocommit=True, connect_timeout=connect_timeout)
    except psycopg.Error as exc:
        raise DataError(f"cannot connect to {redact_dsn(dsn)}: {_scrub(str(exc), dsn)}") from None
    try:
        conn.execute(_SESSION_SETUP)
    except psycopg.Error as exc:
        conn.close()
        raise DataError(f"{redact_dsn(dsn)}: cannot set up the session: {_scrub(str(exc), dsn)}") from None
    conn.autocommit = autocommit
    return conn


@dataclass(frozen=True)
class TableRef:
    """A resolved table: schema and name exactly as stored in the catalog."""

    schema: str
    name: str
    kind: str = "r"
    oid: int | None = None

    @property
    def ident(self):
        """The table as a schema-qualified :class:`psycopg.sql.Identifier`."""
        from psycopg import sql

        return sql.Identifier(self.schema, self.name)

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}"


def _quoted_parts(table: str) -> list[tuple[str, bool]] | None:
    """``table`` written with SQL double quotes, as ``[(text, quoted), ...]`` (one or two parts).

    ``None`` when the name holds no ``"`` or does not parse as one or two SQL
    identifiers joined by a dot: such a name is then taken as written (see
    :func:`resolve_table`), so ``we"ird table; DROP TABLE x`` stays a name.
    """
    if '"' not in table:
        return None
    parts, pos = [], 0
    token = re.compile(r'"((?:[^"]|"")+)"|([^."]+)')
    while True:
        m = token.match(table, pos)
        if m is None:
            return None
        if m.group(1) is not None:
            parts.append((m.group(1).replace('""', '"'), True))
        else:
            parts.append((m.group(2), False))
        pos = m.end()
        if pos == len(table):
            break
        if table[pos] != "." or pos + 1 == len(table):
            return None
        pos += 1
    return parts if len(parts) <= 2 else None


def resolve_table(conn, table: str, *, where: str = "", kinds: str = "rpvmf") -> TableRef:
    """Find ``table`` in the catalog: ``name``, ``schema.name``, or either with SQL quoting.

    The rule lets the user reach every table, whatever its name holds:

    * ``schema.name`` is schema ``schema``, table ``name`` when that table
      exists (exact, then case-folded as PostgreSQL folds unquoted names);
      only if it does not is the whole text tried as a table name of its own
      along the ``search_path`` (a table literally named ``schema.name``).
      With several dots, every split is tried; more than one hit is ambiguous.
    * Double quotes work as in SQL: ``"s.tv"`` is the table literally named
      ``s.tv`` (on the ``search_path``), ``s."s.tv"`` the one in schema ``s``;
      a quoted part is matched exactly, never case-folded.
    * A name that does not parse as quoted identifiers (``we"ird table; DROP
      TABLE x``) is just a name: it is never executed as SQL.

    Raises :class:`DataError` if there is no such table or the name is ambiguous.
    """
    if not isinstance(table, str) or not table.strip():
        raise DataError(f"{where}: give a table name")
    query = """
        SELECT n.nspname, c.relname, c.relkind::text, pg_catalog.pg_table_is_visible(c.oid), c.oid::int8
        FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = ANY(%s) AND c.relname = %s AND (%s::text IS NULL OR n.nspname = %s)
    """

    def find(candidates: list[tuple[tuple[str, bool] | None, tuple[str, bool]]]) -> TableRef | None:
        """The one table among ``candidates`` ((schema part or None, name part)): exact, then folded."""
        for fold in (False, True):
            hits = []
            for schema_part, name_part in candidates:
                schema = None if schema_part is None else (
                    schema_part[0].lower() if fold and not schema_part[1] else schema_part[0])
                name = name_part[0].lower() if fold and not name_part[1] else name_part[0]
                rows = conn.execute(query, (list(kinds), name, schema, schema)).fetchall()
                hits += [r for r in rows if schema is not None or r[3]]
            hits = list(dict.fromkeys(hits))
            if len(hits) == 1:
                return TableRef(hits[0][0], hits[0][1], hits[0][2], hits[0][4])
            if len(hits) > 1:
                names = ", ".join(_quoted_name(h[0], h[1]) for h in hits)
                raise DataError(f"{where}: table name '{table}' is ambiguous ({names}); "
                                "write the one you mean with SQL double quotes")
        return None

    parts = _quoted_parts(table)
    found = None
    if parts is not None:
        found = find([(parts[0], parts[1])] if len(parts) == 2 else [(None, parts[0])])
    if found is None:
        splits = [((table[:i], False), (table[i + 1:], False))
                  for i, ch in enumerate(table) if ch == "." and 0 < i < len(table) - 1]
        found = (splits and find(splits)) or find([(None, (table, False))])
    if found is not None:
        return found
    if set(kinds) != set("rpvmf"):  # say what it is when it exists but is not of the kinds wanted
        try:
            other = resolve_table(conn, table, where=where)
        except DataError:
            other = None
        if other is not None:
            kind = {"v": "a view", "m": "a materialized view", "f": "a foreign table",
                    "r": "a table", "p": "a partitioned table"}.get(other.kind, f"of kind {other.kind!r}")
            raise DataError(f"{where}: '{table}' is {kind}; this needs a table")
    raise DataError(f"{where}: table '{table}' not found")


def _quoted_name(schema: str, name: str) -> str:
    """``schema.name`` with a part quoted as SQL would need it to be read back by :func:`resolve_table`."""
    def part(p: str) -> str:
        return '"' + p.replace('"', '""') + '"' if ("." in p or p.startswith('"')) else p
    return f"{part(schema)}.{part(name)}"


class PgSnapshot:
    """Reads from one ``REPEATABLE READ READ ONLY`` transaction: every read sees the same state.

    Obtain one with :func:`pg_snapshot`.  ``conn`` is the underlying psycopg
    connection for callers that need other queries inside the same snapshot.
    """

    def __init__(self, conn, dsn: str) -> None:
        self.conn = conn
        self.dsn = dsn

    @property
    def where(self) -> str:
        return redact_dsn(self.dsn)

    def resolve(self, table: str, kinds: str = "rpvmf") -> TableRef:
        """The catalog's :class:`TableRef` for ``table`` (see :func:`resolve_table`)."""
        return resolve_table(self.conn, table, where=self.where, kinds=kinds)

    def read(self, *, table: str | TableRef | None = None, query: str | None = None,
             columns: list[str] | None = None) -> pa.Table:
        """Read a table or the result of a query into an Arrow table (see :func:`read_postgres`)."""
        from psycopg import sql

        if (table is None) == (query is None):
            raise DataError(f"{self.where}: give exactly one of table= (--table) or query= (--query)")
        if table is not None:
            ref = table if isinstance(table, TableRef) else self.resolve(table)
            source, where = ref.ident, f"{self.where} table {ref}"
        else:
            text = query.strip().rstrip(";").strip() if isinstance(query, str) else ""
            if not text:
                raise DataError(f"{self.where}: the query is empty")
            # newlines around the query: a trailing `-- comment` ends at the newline instead of
            # swallowing the closing parenthesis
            source, where = sql.SQL("(\n{}\n) AS flipguard_q").format(sql.SQL(text)), f"{self.where} query"
        return self.read_select(source, where=where, columns=columns)

    def read_select(self, source, *, where: str, columns: list[str] | None = None) -> pa.Table:
        """Read ``SELECT columns FROM source`` where ``source`` is a composed SQL relation.

        ``source`` may hold a caller's query text, so nothing built from it is
        sent through the simple query protocol unchecked: the describe step
        runs as a prepared statement and the ``COPY`` text is parsed as one
        first (:meth:`_one_statement`).  Both refuse several statements, so a
        query cannot ``COMMIT`` the ``READ ONLY`` transaction and write after it.
        """
        psycopg = import_psycopg()
        from psycopg import sql

        try:
            cur = self.conn.execute(sql.SQL("SELECT * FROM {} LIMIT 0").format(source), prepare=True)
            described = list(cur.description or [])
        except psycopg.Error as exc:
            raise DataError(f"{where}: {_statement_message(exc, self.dsn)}") from None
        names = [c.name for c in described]
        dups = sorted({n for n in names if names.count(n) > 1})
        if dups:
            raise DataError(f"{where}: duplicated column name(s) {', '.join(dups)}; alias them in the query")
        if columns is not None:
            missing = [c for c in columns if c not in names]
            if missing:
                raise DataError(f"{where}: column '{missing[0]}' not found (columns: {', '.join(names)})")
            by_name = {c.name: c for c in described}
            described = [by_name[c] for c in columns]
        if not described:
            raise DataError(f"{where}: no columns to read")
        exprs, schema, decimals = [], [], {}
        for col in described:
            arrow_type, decimal_type = _column_plan(col)
            exprs.append(sql.SQL("{} AS {}").format(sql.Identifier(col.name), sql.Identifier(col.name)))
            schema.append(pa.field(col.name, arrow_type))
            if decimal_type is not None:
                decimals[col.name] = decimal_type
        copy_sql = sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT (FORMAT csv)").format(
            sql.SQL(", ").join(exprs), source)
        self._one_statement(copy_sql, where)
        tbl = self._copy_to_arrow(copy_sql, pa.schema(schema), where)
        for name, decimal_type in decimals.items():
            i = tbl.schema.get_field_index(name)
            tbl = tbl.set_column(i, name, _numeric_column(tbl.column(i), decimal_type))
        return tbl

    def _one_statement(self, statement, where: str) -> None:
        """Refuse ``statement`` unless the server parses it as exactly one statement.

        psycopg sends ``COPY`` through the simple query protocol, which runs
        every statement of the text.  Parsing the same bytes first as an
        unnamed prepared statement (extended protocol; nothing is executed)
        fails with "cannot insert multiple commands" when there are several.
        """
        psycopg = import_psycopg()
        from psycopg import pq

        res = self.conn.pgconn.prepare(b"", statement.as_bytes(self.conn))
        if res.status != pq.ExecStatus.COMMAND_OK:
            text = res.error_message.decode("utf-8", "replace").strip()
            text = text.split(":", 1)[1].strip() if text.startswith(("ERROR:", "FATAL:")) else text
            exc = psycopg.errors.SyntaxError(text)
            raise DataError(f"{where}: {_statement_message(exc, self.dsn)}")

    def _copy_to_arrow(self, copy_sql, schema: pa.Schema, where: str) -> pa.Table:
        psycopg = import_psycopg()
        names = schema.names
        has_text = any(pa.types.is_string(t) for t in schema.types)
        try:
            with self.conn.cursor().copy(copy_sql) as copy:
                stream = _CopyReader(copy)
                try:
                    tbl = pacsv.read_csv(
                        stream,
                        read_options=pacsv.ReadOptions(column_names=names, block_size=1 << 22),
                        # a one-column row holding NULL is an empty line: it is a row, not nothing
                        parse_options=pacsv.ParseOptions(newlines_in_values=has_text,
                                                         ignore_empty_lines=False),
                        convert_options=pacsv.ConvertOptions(
                            column_types=dict(zip(names, schema.types)),
                            null_values=[""], strings_can_be_null=True,
                            quoted_strings_can_be_null=False,
                            true_values=["t"], false_values=["f"]),
                    )
                except pa.ArrowInvalid as exc:
                    if stream.n_bytes == 0:
                        tbl = schema.empty_table()
                    else:
                        raise DataError(f"{where}: {_arrow_message(exc, names)}") from None
        except psycopg.Error as exc:
            raise DataError(f"{where}: {_scrub(_pg_message(exc), self.dsn)}") from None
        return tbl.cast(schema) if tbl.schema != schema else tbl


def _column_plan(col) -> tuple[pa.DataType, pa.DataType | None]:
    """(Arrow type the CSV text is parsed as, decimal type to convert it to afterwards) for one column.

    Every column is selected as it is: ``COPY`` writes each value with its
    type's output function, never through a cast, so an owner's ``CREATE
    CAST (its_type AS text) WITH FUNCTION ...`` is not run by whoever reads
    (``::text`` would run it, as the reading role, possibly a superuser).

    ``numeric`` is read losslessly.  Its canonical text (exact, scale kept)
    is parsed as a string; a ``numeric(p, s)`` with p <= 38 and s <= 6
    becomes ``decimal128(p, s)`` afterwards (see :func:`_numeric_column`)
    unless a value is ``NaN`` or an infinity, which no decimal holds.
    Unconstrained ``numeric`` and p > 38 stay text: float64 would make
    ``0.1`` and ``0.1000000000000000000001`` (or any two values past the
    17th digit) the same label.  So does s > 6: Arrow writes such a decimal
    in exponent form (``0E-10`` for ``0.0000000000``), and a label's text
    must be the one PostgreSQL (and so the audit trail) gives it.
    """
    oid = col.type_code
    if oid == _NUMERIC:
        p, s = col.precision, col.scale
        if p is not None and s is not None and 0 < p <= 38 and 0 <= s <= min(p, _MAX_PLAIN_SCALE):
            return pa.string(), pa.decimal128(p, s)
        return pa.string(), None
    return _ARROW_TYPES.get(oid, pa.string()), None


#: Largest scale whose decimals Arrow writes as plain text (``0.000000``; ``0E-7`` beyond).
_MAX_PLAIN_SCALE = 6

#: numeric values no decimal can hold (infinities since PostgreSQL 14).
_NOT_DECIMAL = ("NaN", "Infinity", "-Infinity")  # a tuple: pa.array at import would load pandas


def _numeric_column(col: pa.ChunkedArray, decimal_type: pa.DataType) -> pa.ChunkedArray:
    """A ``numeric(p, s)`` column read as text -> ``decimal_type``, or the text when a value is special.

    ``NaN`` is a value a writer may store in any numeric column: it must read
    as a label like any other (text ``"NaN"``), not fail every read with "not
    a valid decimal128 number".  Its text equals what the audit trail
    records, and a seal made while the column held decimals reports the
    label type change.  One vectorised membership test decides.
    """
    if pc.any(pc.is_in(col, value_set=pa.array(_NOT_DECIMAL, type=pa.string()))).as_py():
        return col
    try:
        return pc.cast(col, decimal_type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # not expected of numeric(p, s); text is exact
        return col


def _statement_message(exc, dsn: str) -> str:
    """A failed statement as one line; several statements in a query are named as such."""
    text = _scrub(_pg_message(exc), dsn)
    if "multiple commands" in text:
        return f"give one SELECT statement: a query may not hold several statements ({text})"
    return text


def _pg_message(exc) -> str:
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    return primary or str(exc)


def _arrow_message(exc: Exception, names: list[str]) -> str:
    text = str(exc).strip().splitlines()[0]
    m = re.search(r"column #(\d+)", text)
    if m and int(m.group(1)) < len(names):
        text = f"column '{names[int(m.group(1))]}': {text}"
    return f"cannot convert the rows read: {text}"


class _CopyReader(io.RawIOBase):
    """A readable stream over psycopg's ``Copy.read()`` (one row per call), for pyarrow."""

    def __init__(self, copy) -> None:
        super().__init__()
        self._copy = copy
        self._buf = bytearray()
        self._done = False
        self.n_bytes = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        # Rows are appended to one bytearray: keeping a list of psycopg's
        # memoryviews and joining them is several times slower.
        want = size if size is not None and size >= 0 else 1 << 62
        buf, read = self._buf, self._copy.read
        while len(buf) < want and not self._done:
            chunk = read()
            if not chunk:
                self._done = True
                break
            buf += chunk
        out = bytes(buf[:want])
        del buf[:want]
        self.n_bytes += len(out)
        return out

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


@contextlib.contextmanager
def pg_snapshot(dsn: str) -> Iterator[PgSnapshot]:
    """A :class:`PgSnapshot`: one ``REPEATABLE READ READ ONLY`` transaction, rolled back on exit.

    Examples
    --------
    >>> with pg_snapshot("postgresql://postgres@127.0.0.1/test") as snap:  # doctest: +SKIP
    ...     labels = snap.read(table="reviews", columns=["id", "label"])
    ...     trail = snap.conn.execute("SELECT count(*) FROM flipguard_audit.t").fetchone()
    """
    psycopg = import_psycopg()
    conn = connect(dsn, autocommit=False)
    try:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        yield PgSnapshot(conn, dsn)
    finally:
        with contextlib.suppress(Exception):
            conn.rollback()
        conn.close()


def read_postgres(dsn: str, table: str | None = None, query: str | None = None,
                  columns: list[str] | None = None) -> pa.Table:
    """Read a PostgreSQL table, or the result of a query, into a :class:`pyarrow.Table`.

    Parameters
    ----------
    dsn : str
        ``postgresql://user:password@host:port/database`` (any libpq connection string).
    table : str, optional
        Table, view or materialized view, optionally schema-qualified
        (``"schema.table"``).  Exact names, quotes and spaces included, are
        matched first; unquoted-style names are then matched case-insensitively.
    query : str, optional
        One ``SELECT`` (or ``VALUES``/``TABLE``/``WITH ...``) statement; runs
        read-only, and several statements are refused.
        Give exactly one of ``table`` and ``query``.
    columns : list of str, optional
        Read only these columns, in this order.

    Returns
    -------
    pyarrow.Table
        PostgreSQL types map to Arrow as: ``smallint/integer/bigint`` ->
        ``int16/int32/int64``; ``real/double precision`` -> ``float32/float64``;
        ``numeric(p, s)`` (p <= 38, s <= 6) -> ``decimal128(p, s)`` unless a value
        is ``NaN``/``Infinity``; unconstrained ``numeric``, p > 38, s > 6 or such a value ->
        its exact text as ``string`` (never through a float);
        ``text/varchar/char/name`` -> ``string``; ``boolean`` -> ``bool``;
        ``date`` -> ``date32``; ``timestamp`` -> ``timestamp[us]``;
        ``timestamptz`` -> ``timestamp[us, UTC]``; every other type -> its
        text form (the type's output function, never a cast) as ``string``.

    Raises
    ------
    DataError
        Neither or both of ``table`` and ``query``; unknown table or column; a
        failing query; an unreachable server (the message never shows the password).
    """
    where = redact_dsn(dsn)
    if (table is None) == (query is None):
        raise DataError(f"{where}: give exactly one of table= (--table) or query= (--query)")
    with pg_snapshot(dsn) as snap:
        return snap.read(table=table, query=query, columns=columns)
