"""``flipguard pg``: protect a PostgreSQL table's labels with an audit trail, and verify it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._app import app
from ._common import JsonOpt, console, finish_report, print_json

pg_app = typer.Typer(
    help="Protect PostgreSQL label columns: audit trigger, hash-chained trail, verify against a seal.",
    no_args_is_help=True,
)
app.add_typer(pg_app, name="pg")

DsnArg = Annotated[str, typer.Argument(help="postgresql://user@host:port/database", show_default=False)]
PgTableOpt = Annotated[str, typer.Option("--table", "-t", help="Table, optionally schema.table.",
                                         show_default=False)]
SchemaOpt = Annotated[str, typer.Option("--audit-schema", envvar="FLIPGUARD_AUDIT_SCHEMA",
                                        help="Schema of the registry and the trails.")]


@pg_app.command("protect")
def protect_cmd(
    dsn: DsnArg,
    table: PgTableOpt,
    id: Annotated[str, typer.Option("--id", help="Column of unique row ids.", show_default=False)],  # noqa: A002
    label: Annotated[str, typer.Option("--label", "-l", help="Label column to watch.", show_default=False)],
    audit_role: Annotated[str, typer.Option(
        "--audit-role", envvar="FLIPGUARD_AUDIT_ROLE", help="NOLOGIN role that owns the trail (created if missing); the table owner must "
        "not be a member of it.")] = "flipguard_auditor",
    audit_schema: SchemaOpt = "flipguard_audit",
    reader: Annotated[list[str] | None, typer.Option(
        "--reader", help="Role given what `pg verify` reads: the trail, the registry and SELECT on the table "
        "(repeat for several).",
        show_default=False)] = None,
    json_out: JsonOpt = False,
) -> None:
    """Install (idempotently) an audit trail that records every label change.

    An administrator's act: run it as a superuser (which also installs the DDL
    guard that stops the table owner from disabling or dropping the triggers)
    or as a member of the audit role. Every INSERT, DELETE, TRUNCATE and every
    UPDATE of the label or id column is appended, one hash-chained step per
    statement, to <audit-schema>.<trail>, owned by the audit role, with who
    (session and current user, application, client address), when and the
    transaction id. Grant label writers DML on the table only.

    Example:

        flipguard pg protect postgresql://admin@db/ml --table public.reviews --id review_id \\
            --label sentiment --reader auditor
    """
    from ..integrity._pg import protect

    status = protect(dsn, table, id=id, label=label, audit_role=audit_role, schema=audit_schema,
                     readers=reader or [])
    if json_out:
        print_json(status.to_dict())
        return
    grants = [c for c in status.changed if c.startswith("read access for ")]
    if status.changed and len(grants) == len(status.changed):
        console.print(f"{status.table} was already protected; granted:")
        for item in grants:
            console.print(f"  + {item}")
    elif status.changed:
        console.print(f"Protected {status.table} (label {status.label_column}, id {status.id_column}).")
        for item in status.changed:
            console.print(f"  + {item}")
    else:
        console.print(f"{status.table} was already protected; nothing changed.")
    console.print(f"Audit trail: {status.trail} ({status.n_events} rows), owned by role {status.audit_role}.")
    if not status.ddl_guard:
        console.print("[yellow]No DDL guard[/] (needs a superuser): the table owner can still disable the "
                      "triggers; pg verify detects it.")


@pg_app.command("unprotect")
def unprotect_cmd(
    dsn: DsnArg,
    table: PgTableOpt,
    drop_trail: Annotated[bool, typer.Option(
        "--drop-trail",
        help="Also drop the audit trail (default: keep it, append-only, with an UNPROTECT row).")] = False,
    audit_schema: SchemaOpt = "flipguard_audit",
    json_out: JsonOpt = False,
) -> None:
    """Remove the audit triggers and functions from a table.

    The trail is kept by default, so the history survives and protecting the
    table again continues the same chain; --drop-trail deletes it. An
    administrator's act, like protect: a superuser (or a member of the audit
    role); the table owner cannot remove the protection.

    Example:

        flipguard pg unprotect postgresql://admin@db/ml --table public.reviews
    """
    from ..integrity._pg import unprotect

    status = unprotect(dsn, table, drop_trail=drop_trail, schema=audit_schema)
    if json_out:
        print_json(status.to_dict())
        return
    if not status.changed:
        console.print(f"{status.table} was not protected; nothing changed.")
        return
    console.print(f"Unprotected {status.table}.")
    for item in status.changed:
        console.print(f"  - {item}")
    if status.trail:
        console.print(f"Audit trail kept: {status.trail} ({status.n_events} rows).")


@pg_app.command("status")
def status_cmd(dsn: DsnArg, table: PgTableOpt, audit_schema: SchemaOpt = "flipguard_audit",
               json_out: JsonOpt = False) -> None:
    """Show whether a table is protected, its triggers and the head of its trail.

    Exit 0 when fully protected, 1 otherwise.  Keep the printed anchor
    (SEQ:HASH) somewhere else: `pg verify --anchor` then detects a trail
    rewritten even by a superuser.

    Example:

        flipguard pg status postgresql://owner@db/ml --table public.reviews --json
    """
    from ..integrity._pg import protection_status

    st = protection_status(dsn, table, schema=audit_schema)
    if json_out:
        out = st.to_dict()
        out["anchor"] = f"{st.head_seq}:{st.head_hash}" if st.head_hash else None
        print_json(out)
    else:
        lines = [("table", st.table), ("protected", "yes" if st.protected else "[bold red]no[/]")]
        if st.registered:
            lines += [("label / id", f"{st.label_column} / {st.id_column}"),
                      ("trail", f"{st.trail} ({st.n_events} rows, last at {st.last_event_at or '-'})"),
                      ("installed", f"{st.installed_at} by {st.installed_by}"),
                      ("audit role", st.audit_role),
                      ("DDL guard", "yes" if st.ddl_guard else "[yellow]no[/] (needs a superuser)")]
            for change in st.identity_changes:
                lines.append(("[bold red]changed[/]", change))
            if st.head_hash:
                lines.append(("anchor", f"{st.head_seq}:{st.head_hash}"))
        for name in sorted(st.triggers):
            state = st.triggers[name]
            lines.append((f"trigger {name}", state if state == "enabled" else f"[bold red]{state}[/]"))
        if st.triggers and not st.registered:
            lines.append(("note", f"flipguard triggers are installed but schema {audit_schema} has no trail "
                                  "registered for this table: another --audit-schema (or FLIPGUARD_AUDIT_SCHEMA)?"))
        for key, value in lines:
            console.print(f"{key + ':':<34} {value}", soft_wrap=True)
    if not st.protected:
        raise typer.Exit(1)


@pg_app.command("verify")
def verify_cmd(
    dsn: DsnArg,
    table: PgTableOpt,
    manifest: Annotated[Path | None, typer.Option(
        "--manifest", "-m", help="Seal manifest of the table (flipguard seal).")] = None,
    pubkey: Annotated[Path | None, typer.Option("--pubkey", help="Public key that signed the manifest.")] = None,
    anchor: Annotated[str | None, typer.Option(
        "--anchor", help="SEQ:HASH from an earlier `pg status`, kept outside the database.")] = None,
    checkpoint: Annotated[Path | None, typer.Option(
        "--checkpoint", help="Checkpoint file written by `pg checkpoint` (needs --pubkey).")] = None,
    audit_schema: SchemaOpt = "flipguard_audit",
    secret_file: Annotated[Path | None, typer.Option(
        "--secret-file", help="Secret of a private seal (or $FLIPGUARD_SECRET).")] = None,
    allow_recorded: Annotated[bool, typer.Option(
        "--allow-recorded", help="Exit 0 when every change since the seal is recorded in the trail.")] = False,
    name: Annotated[str | None, typer.Option(
        "--name", help="Dataset name the seal was made for (default: the table, as `seal --table` named it).")] = None,
    limit: Annotated[int, typer.Option(
        "--limit", help="Rows shown per list (counts are always exact; --json for the lists).", min=0)] = 20,
    json_out: JsonOpt = False,
) -> None:
    """Check a table against its seal, its signed checkpoints and its audit trail, in one snapshot.

    Reports changes the trail explains (who, when), changes it does not (the
    trigger was bypassed: disabled, or session_replication_role = replica),
    labels flipped and later restored (with the window they were wrong in),
    replaced triggers, a broken hash chain and a trail that no longer matches
    a signed checkpoint.  Without --manifest only the trail is checked.
    Exit 0 clean, 1 a finding (any change since the seal or temporary change,
    unless --allow-recorded and the trail records them all), 2 bad input.
    With --json, "ok" is what the exit code says (0 <=> true) and "ok_strict"
    says whether nothing changed at all (what "ok" is without --allow-recorded).

    Example:

        flipguard pg verify postgresql://auditor@db/ml --table public.reviews \\
            --manifest reviews.seal.json --pubkey keys/flipguard.pub
    """
    from ..exceptions import InvalidParameterError
    from ..integrity._pg import verify_postgres

    if manifest is not None and pubkey is None:
        raise InvalidParameterError("give --manifest and --pubkey together")
    if checkpoint is not None and pubkey is None:
        raise InvalidParameterError("give --checkpoint and --pubkey together")
    if pubkey is not None and manifest is None and checkpoint is None:
        raise InvalidParameterError("--pubkey needs --manifest or --checkpoint")
    secret = None
    if manifest is not None:
        from ..integrity import read_secret

        secret = read_secret(secret_file)
    report = verify_postgres(dsn, table, manifest=manifest, public_key=pubkey, anchor=anchor, secret=secret,
                             checkpoints=checkpoint, schema=audit_schema, name=name)
    passed = report.ok_if_recorded if allow_recorded else report.ok
    if json_out:
        # "ok" must mean what the exit code means; the report's own "ok" (nothing changed since
        # the seal, recorded or not) stays available as "ok_strict"
        out = report.to_dict()
        out.update(ok=passed, ok_strict=report.ok, allow_recorded=allow_recorded,
                   n_explained=_n_explained(report))
        print_json(out)
        if not passed:
            raise typer.Exit(1)
        return
    finish_report(report, False, lambda r: _render_verify(r, passed, limit), ok=passed)


def _n_explained(r) -> int:
    """How many changes since the seal the trail explains: the true count, not the listed ones.

    The report lists at most a fixed number of explained changes (``_LIST_LIMIT`` in
    ``integrity/_pg.py``) and counts only the unexplained; every change the seal found is one or
    the other, so the count is the seal's changed + added + removed rows minus the unexplained.
    """
    n = getattr(r, "n_explained", None)
    if isinstance(n, int) and not isinstance(n, bool):
        return n
    if not r.explained:
        return 0
    seal = r.seal or {}
    total = sum(int(seal.get(k) or 0) for k in ("n_changed", "n_added", "n_removed"))
    return max(len(r.explained), total - int(r.n_unexplained or 0))


def _more(total: int, shown: int) -> None:
    """The line that says a list was cut at --limit."""
    if total > shown:
        console.print(f"  ... ({total - shown} more; --limit N, or --json)")


def _render_verify(r, passed: bool, limit: int = 20) -> None:
    console.print(f"Table {r.table}; trail {r.trail or '-'} ({r.n_events} rows).")
    for problem in r.problems:
        console.print(f"[bold red]PROBLEM[/] {problem}")
    if r.checkpoints_checked:
        console.print(f"Signed checkpoints checked: {r.checkpoints_checked}.")
    if r.chain_ok:
        console.print("Hash chain: intact.")
    else:
        console.print(f"[bold red]Hash chain BROKEN[/] ({len(r.chain_errors)} row(s)):")
        for e in r.chain_errors[:limit]:
            console.print(f"  row {e['seq']}: {e['reason']}")
        _more(len(r.chain_errors), min(limit, len(r.chain_errors)))
    if r.duplicate_ids:
        console.print(f"[bold red]DUPLICATED IDS[/]: {r.n_duplicate_ids} id(s) held by more than one row; the "
                      "trail tells rows apart by their id:")
        for d in r.duplicate_ids[:limit]:
            console.print(f"  {d['message']}", soft_wrap=True)
        _more(max(r.n_duplicate_ids, len(r.duplicate_ids)), min(limit, len(r.duplicate_ids)))
    if r.trail_mismatches:
        console.print(f"[bold red]UNRECORDED CHANGES[/]: the table and the trail disagree at "
                      f"{r.n_trail_mismatches} place(s) (trigger bypassed):")
        for m in r.trail_mismatches[:limit]:
            console.print(f"  {m['message']}")
        _more(max(r.n_trail_mismatches, len(r.trail_mismatches)), min(limit, len(r.trail_mismatches)))
    if r.temporary_changes:
        console.print(f"[bold red]TEMPORARY CHANGES[/]: {r.n_temporary_changes} label(s) changed and later "
                      "restored by another transaction (recorded):")
        for m in r.temporary_changes[:limit]:
            console.print(f"  {m['message']}", soft_wrap=True)
        _more(max(r.n_temporary_changes, len(r.temporary_changes)), min(limit, len(r.temporary_changes)))
    if r.seal_checked:
        seal = r.seal or {}
        console.print(f"Seal: {'verified, no change' if r.seal_ok else seal.get('summary', '')}")
        if r.unexplained:
            console.print(f"[bold red]UNEXPLAINED CHANGES[/] since the seal: {r.n_unexplained} row(s) changed "
                          "with no record in the audit trail (trigger bypassed):")
            for c in r.unexplained[:limit]:
                console.print(f"  id {c['id']}: {_change(c)}: {c.get('explanation', '')}", soft_wrap=True)
            _more(max(r.n_unexplained, len(r.unexplained)), min(limit, len(r.unexplained)))
        if r.explained:
            n_explained = _n_explained(r)
            console.print(f"Changes since the seal recorded by the trail: {n_explained} row(s):")
            for c in r.explained[:limit]:
                role = "" if c.get("current_user") == c.get("session_user") else f" as {c.get('current_user')}"
                app, client = c.get("application_name") or "", c.get("client_addr") or "local"
                dup = " (duplicated id: its recorded insert)" if c.get("duplicate_id") else ""
                console.print(f"  id {c['id']}: {_change(c)} by {c.get('session_user')}{role} "
                              f"(application '{app}', client {client}, txid {c.get('txid')}) at {c.get('at')}{dup}",
                              soft_wrap=True)
            _more(n_explained, min(limit, len(r.explained)))
    console.print("[bold green]OK[/]" if passed else "[bold red]FINDINGS[/] (exit 1)")


@pg_app.command("checkpoint")
def checkpoint_cmd(
    dsn: DsnArg,
    table: PgTableOpt,
    key: Annotated[Path, typer.Option("--key", help="Ed25519 private key (flipguard keygen).",
                                      show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Checkpoint file to append to (created if missing).",
                                      show_default=False)],
    audit_schema: SchemaOpt = "flipguard_audit",
    json_out: JsonOpt = False,
) -> None:
    """Sign the head of a table's audit trail and record it outside the database.

    Checks the hash chain and every checkpoint already in --out first; appends
    one signed line (database, trail, head seq and hash, number of rows,
    trigger identity, time, key id). Keep the file where the database's
    superusers cannot write: `pg verify --checkpoint FILE --pubkey PUB` then
    catches any rewrite of the trail up to the latest checkpoint.
    Exit 0 written, 1 the trail no longer matches (nothing written), 2 bad input.

    Example:

        flipguard pg checkpoint postgresql://auditor@db/ml --table public.reviews \\
            --key keys/flipguard.key --out reviews.checkpoints
    """
    from ..integrity._pg import checkpoint

    result = checkpoint(dsn, table, key, out=out, schema=audit_schema)
    if json_out:
        print_json(result.to_dict())
    elif result.written:
        c = result.checkpoint["checkpoint"]
        console.print(f"Checkpoint of {result.table}: seq {c['head_seq']} hash {c['head_hash']} "
                      f"({c['n_events']} trail rows), signed by {c['key_id']}, appended to {result.out}.")
    else:
        console.print(f"[bold red]NOT SIGNED[/]: the trail of {result.table} does not match:")
        for p in result.problems:
            console.print(f"  {p}", soft_wrap=True)
    if not result.written:
        raise typer.Exit(1)


def _label(value) -> str:
    """A label as file ``verify`` shows it (``<missing>`` for NULL), quoted so '' and 'x ' stay visible."""
    from ._integrity import _txt

    return _txt(value) if value is None else repr(value)


def _change(c) -> str:
    if c.get("kind") == "added":
        return f"added with label {_label(c.get('current'))}"
    if c.get("kind") == "removed":
        return f"removed (label was {_label(c.get('sealed'))})"
    return f"{_label(c.get('sealed'))} -> {_label(c.get('current'))}"
