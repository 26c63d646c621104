"""``flipguard keygen | seal | verify | diff``: signed label seals and row-exact checks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from .._names import SECRET_ENV
from ..exceptions import InvalidParameterError
from ..integrity._source import ROW_ID
from ..integrity._stats import label_text as _txt
from ._app import app
from ._common import (
    DataArg,
    EngineOpt,
    JsonOpt,
    LabelOpt,
    RayAddressOpt,
    TableOpt,
    console,
    finish_report,
    print_json,
    split_list,
)

IdReq = Annotated[str, typer.Option("--id", help="Column of unique row ids.", show_default=False)]
IdPos = Annotated[str | None, typer.Option(
    "--id", show_default=False,
    help="Column of unique row ids (default: each row's position in the file, so inserted, deleted or "
         "reordered rows show as changes; a database table needs its key column).")]
KeyOpt = Annotated[Path, typer.Option("--key", "-k", help="Private key file (flipguard keygen).",
                                      show_default=False)]
PubOpt = Annotated[Path, typer.Option("--pubkey", "-p", help="Public key file of the signer (flipguard.pub).",
                                      show_default=False)]
SecretOpt = Annotated[Path | None, typer.Option(
    "--secret-file", help=f"Secret of a private seal (mode 0600); default: ${SECRET_ENV}.")]
LimitOpt = Annotated[int, typer.Option("--limit", help="Rows shown per table (JSON lists all).", min=0)]


def say(text: str) -> None:
    """One line of output, never wrapped mid-sentence (tests and scripts grep it)."""
    console.print(text, soft_wrap=True)


@app.command("keygen")
def keygen_cmd(
    out: Annotated[str, typer.Option("--out", "-o", help="Directory for flipguard.key and flipguard.pub.",
                                     show_default=False)],
    force: Annotated[bool, typer.Option("--force", help="Replace an existing key pair.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Create an Ed25519 key pair for sealing labels.

    Writes DIR/flipguard.key (private, mode 0600: keep it where data writers
    cannot read it) and DIR/flipguard.pub (give it to whoever verifies).
    Refuses to overwrite existing keys unless --force.

    Example:

        flipguard keygen --out keys/
    """
    from ..integrity import write_keypair

    if not out.strip():
        raise InvalidParameterError("--out is empty; give the folder for the key pair (e.g. --out keys/)")
    paths = write_keypair(out, force=force)
    if json_out:
        print_json(paths.to_dict())
        return
    say(f"Key pair written, key id [bold]{paths.key_id}[/]")
    say(f"  private: {paths.private} (mode 0600; never share it)")
    say(f"  public:  {paths.public}")


@app.command("seal")
def seal_cmd(
    data: DataArg,
    label: LabelOpt,
    key: KeyOpt,
    id: IdPos = None,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Manifest path (default: DATA.flipguard.json; required for URLs and DSNs).")] = None,
    columns: Annotated[str | None, typer.Option(
        "--columns", help="Feature columns to seal too, comma-separated, or 'all' (every column but id and label).")] = None,
    name: Annotated[str | None, typer.Option(
        "--name", help="Dataset name the seal is bound to (default: the table, else the file's name).",
        show_default=False)] = None,
    dataset_version: Annotated[int | None, typer.Option(
        "--dataset-version", min=1, show_default=False,
        help="Version number to record (default: one more than the seal being replaced, else 1).")] = None,
    private: Annotated[bool, typer.Option(
        "--private", help="Reveal no labels without the secret (encrypted snapshot, keyed commitments).")] = False,
    secret_file: SecretOpt = None,
    table: TableOpt = None,
    engine: EngineOpt = "local",
    ray_address: RayAddressOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Seal a dataset's labels in a signed manifest (and a label snapshot beside it).

    Reads only the id, label and --columns columns (CSV as exact text).  Row
    order and other columns do not matter to a seal with --id; without one,
    rows are identified by their position in the file.  The seal names its
    dataset (--name) and version; verify refuses it for any other dataset.
    Writes MANIFEST and MANIFEST's .snapshot sidecar
    (DATA.flipguard.json / DATA.flipguard.snapshot by default), both or neither.

    Example:

        flipguard seal reviews.csv --label sentiment --id review_id --key keys/flipguard.key
    """
    from ..integrity import seal
    from . import _scale

    _scale.refuse_missing(data)
    _refuse_table_with_folder(data, table)
    cols = ("all" if columns.strip() == "all" else split_list(columns, "--columns")) if columns is not None else None
    secret = _secret(private, secret_file)
    if _scale.is_partitioned_source(data, table):  # a folder or prefix: one task per partition (docs/scale.md)
        if cols == "all":  # refused, never passed on as the column names 'a', 'l', 'l'
            raise InvalidParameterError("--columns all is not supported for a folder (a partitioned dataset): "
                                        "name the columns to seal (--columns a,b)")
        return _scale.seal(data, label=label, id=id, key=key, out=out, columns=cols, secret=secret, name=name,
                           version=dataset_version, engine=engine, ray_address=ray_address, json_out=json_out)
    _scale.note_single(engine, ray_address)
    result = seal(data, label=label, id=id, private_key=key, out=out, columns=cols, secret=secret, table=table,
                  name=name, version=dataset_version)
    if json_out:
        print_json(result.to_dict())
        return
    m = result.manifest
    ident = "rows identified by their position" if m.id == ROW_ID else f"id '{m.id}'"
    say(f"Sealed {m.rows} rows of {m.source} as '{m.name}' version {m.version} (label '{m.label}', {ident}"
                  + (f", columns {', '.join(m.columns)}" if m.columns else "") + f") with key {m.key_id}"
                  + (" [bold](private)[/]" if m.private else ""))
    if m.id == ROW_ID:
        say("  no --id: verify matches rows by position, so an inserted, deleted or reordered row shows "
            "as changes from there on; give --id when the data has a key column")
    say(f"  manifest: {result.manifest_path}")
    say(f"  snapshot: {result.snapshot_path}")
    if m.class_counts is not None:
        say("  classes:  " + ", ".join(f"{_txt(c)} {n}" for c, n in m.class_counts.items()))


def _refuse_table_with_folder(data: str, table: str | None) -> None:
    """``--table`` names a database table of a DSN; with a folder it would be dropped (or read the
    folder as one file): refused, naming both."""
    if table is None:
        return
    from ..data._partitioned import is_partitioned

    if is_partitioned(data):
        raise InvalidParameterError(f"--table is for a postgresql:// DSN, not a folder: {data} is a partitioned "
                                    "dataset (a folder or prefix of files); drop --table")


def _secret(private: bool, secret_file: Path | None) -> bytes | None:
    if not private:
        if secret_file is not None:
            raise InvalidParameterError("--secret-file is for private seals: add --private")
        return None
    from ..integrity import read_secret

    secret = read_secret(secret_file)
    if secret is None:
        raise InvalidParameterError(f"--private needs a secret: --secret-file FILE or the {SECRET_ENV} "
                                    "environment variable (e.g. openssl rand -hex 32)")
    return secret


@app.command("verify")
def verify_cmd(
    data: DataArg,
    pubkey: PubOpt,
    manifest: Annotated[Path | None, typer.Option(
        "--manifest", "-m", help="Manifest to check against (default: DATA.flipguard.json).")] = None,
    secret_file: SecretOpt = None,
    name: Annotated[str | None, typer.Option(
        "--name", help="Dataset name the seal must be for (default: the table, else the file's name).",
        show_default=False)] = None,
    ledger: Annotated[Path | None, typer.Option(
        "--ledger", help="Ledger to check the seal against: an older seal than its latest of this dataset "
                         "is refused (rollback, freeze).", show_default=False)] = None,
    ledger_head: Annotated[str | None, typer.Option(
        "--ledger-head", help="The ledger's head hash recorded earlier (ledger verify prints it): entries cut "
                              "from the ledger's end are detected only against it.", show_default=False)] = None,
    table: TableOpt = None,
    engine: EngineOpt = "local",
    ray_address: RayAddressOpt = None,
    limit: LimitOpt = 50,
    json_out: JsonOpt = False,
) -> None:
    """Check data against its signed seal and list every row that differs.

    Exit 0 when every sealed label (and sealed column) matches; exit 1 with
    every changed, added, removed and duplicated row, and the class-count
    changes, when they do not -- or when the label column changed type, the
    manifest's signature fails, it was signed by another key, it seals
    another dataset (--name), it is a seal copied out of a ledger, or (with
    --ledger) it is older than the ledger's latest seal; exit 2 for unusable input.

    Example:

        flipguard verify reviews.csv --manifest reviews.csv.flipguard.json --pubkey keys/flipguard.pub
    """
    from ..integrity import read_secret, verify
    from . import _scale

    _scale.refuse_missing(data)
    _refuse_table_with_folder(data, table)
    secret = read_secret(secret_file)
    if _scale.is_partitioned_source(data, table):  # a folder or prefix: one task per partition (docs/scale.md)
        from ..integrity._lake import verify_lake

        if ledger is not None:  # refused, never dropped: a rollback check that did not run must not pass
            raise InvalidParameterError(f"--ledger is not supported for a folder (a partitioned dataset): {data} "
                                        "was sealed per partition, and ledgers record single files; verify the "
                                        "folder without --ledger")

        rep = verify_lake(data, manifest, pubkey, secret=secret, name=name, engine=engine, ray_address=ray_address)
        return finish_report(rep, json_out, lambda r: render_lake_verify(r, limit=limit))
    _scale.note_single(engine, ray_address)
    if ledger_head is not None and ledger is None:
        raise InvalidParameterError("--ledger-head needs --ledger (the ledger whose head it is)")
    report = verify(data, manifest, pubkey, secret=secret, table=table, name=name, ledger=ledger,
                    ledger_head=ledger_head)
    finish_report(report, json_out, lambda r: render_verify(r, limit=limit))


def render_verify(report, *, limit: int = 50) -> None:
    """Print a VerifyReport: a verdict line, findings, then one table per kind of difference."""
    m = report.manifest
    where = f"manifest {m['path']}" if m.get("path") else "the manifest"
    if _refused(report.signature, where, report.source, report.findings, report.notes,
                compared=report.changes is not None):
        return
    if report.ok:
        say(f"[bold green]OK[/]: all {m['rows']} sealed labels of {report.source} match "
                      f"({where}, '{m['name']}' version {m['version']}, sealed {m['created']} by key {m['key_id']})")
        for n in report.notes:
            say(f"  note: {n}")
        return
    say(f"[bold red]TAMPERED[/]: {report.source} differs from its seal "
                  f"({where}, sealed {m['created']} by key {m['key_id']})")
    _say_findings(report.findings, report.notes)
    if report.changes is not None:
        render_changes(report.changes, "sealed", "current", limit=limit)
    for name, c in report.columns.items():
        if c["row"]:
            _table(f"Sealed column '{name}' changed", ["row", "id", "sealed", "current"],
                   zip(c["row"], c["id"], c["before"], c["after"]), len(c["row"]), limit)


def _say_findings(findings, notes=()) -> None:
    """A report's findings as "  - ..." lines, then its notes."""
    for f in findings:
        say(f"  - {f}")
    for n in notes:
        say(f"  note: {n}")


def _refused(sig, where: str, source: str, findings, notes, *, compared: bool) -> bool:
    """The verdicts that end a verify report before any row: a signature that does not check out,
    or (nothing ``compared``) a seal that cannot vouch for this data (another dataset's, say)."""
    if not sig.valid:
        say(f"[bold red]SIGNATURE INVALID[/]: {sig.reason}")
        say(f"  manifest signed by key {sig.signed_by}; public key given: {sig.checked_with}")
        return True
    if compared or not findings:
        return False
    say(f"[bold red]REFUSED[/]: {where} cannot vouch for {source}")
    _say_findings(findings, notes)
    return True


def render_changes(ch, before: str, after: str, *, limit: int = 50) -> None:
    """Tables of a LabelChanges: changed, added, removed, duplicated rows; class counts; shape."""
    if ch.n_changed:
        c = ch.changed
        _table(f"Changed labels ({ch.n_changed})", ["row", "id", before, after],
               zip(c["row"], c["id"], c["before"], c["after"]), ch.n_changed, limit)
    if ch.n_added:
        a = ch.added
        _table(f"Added rows ({ch.n_added})", ["row", "id", "label"], zip(a["row"], a["id"], a["label"]),
               ch.n_added, limit)
    if ch.n_removed:
        r = ch.removed
        _table(f"Removed rows ({ch.n_removed}; row = position in the {before} data)", ["row", "id", "label"],
               zip(r["row"], r["id"], r["label"]), ch.n_removed, limit)
    if ch.n_duplicated:
        d = ch.duplicated
        _table(f"Duplicated ids ({ch.n_duplicated})", ["id", "rows with it"], zip(d["id"], d["count"]),
               ch.n_duplicated, limit)
    if len(ch.duplicated_before["id"]):
        d = ch.duplicated_before
        _table(f"Duplicated ids in the {before} data", ["id", "rows with it"], zip(d["id"], d["count"]),
               len(d["id"]), limit)
    t = Table("label", before, after, "change", title="Class counts")
    for row in ch.class_counts():
        t.add_row(_txt(row["label"]), str(row["before"]), str(row["after"]), f"{row['change']:+d}")
    console.print(t)
    b = ch.balance
    if b["dof"]:
        say(f"Class balance: chi-square {b['statistic']:.2f} (dof {b['dof']}), p = {b['p_value']:.3g}"
                      + (" -- [bold]drifted[/]" if b["drifted"] else " -- no significant drift"))
    if ch.n_changed:
        from ..integrity._stats import transition_list

        t = Table("from", "to", "rows", title="Label transitions")
        for tr in transition_list(ch.transitions, ch.classes):
            t.add_row(_txt(tr["from"]), _txt(tr["to"]), str(tr["count"]))
        console.print(t)
        say(ch.shape["reading"])


def _table(title: str, header: list[str], rows, total: int, limit: int) -> None:
    t = Table(*header, title=title)
    for i, row in enumerate(rows):
        if i >= limit:
            break
        t.add_row(*(_txt(v) for v in row))
    console.print(t)
    if total > limit:
        say(f"  ... and {total - limit} more (--limit N, or --json for all)")


@app.command("diff")
def diff_cmd(
    old: Annotated[str, typer.Argument(help="Earlier version (path, URL or DSN).", show_default=False)],
    new: Annotated[str, typer.Argument(help="Later version (path, URL or DSN).", show_default=False)],
    label: LabelOpt,
    id: IdPos = None,
    table: TableOpt = None,
    engine: EngineOpt = "local",
    ray_address: RayAddressOpt = None,
    limit: LimitOpt = 50,
    json_out: JsonOpt = False,
) -> None:
    """Label changes between two versions of a dataset, and whether they look targeted.

    Lists every changed, added and removed row, the class-to-class transition
    counts, a class-balance drift test and a plain reading of the changes'
    shape: concentrated in one source->target pair (a targeted attack's
    signature) or spread across classes.  Exit 0 when the labels are
    identical, 1 when they differ.

    Example:

        flipguard diff reviews-v1.csv reviews-v2.csv --label sentiment --id review_id
    """
    from ..integrity import diff
    from . import _scale

    _refuse_table_with_folder(old, table)
    _refuse_table_with_folder(new, table)
    folders = (_scale.is_partitioned_source(old, table), _scale.is_partitioned_source(new, table))
    if all(folders):
        return _lake_diff(old, new, label=label, id=id, engine=engine, ray_address=ray_address, limit=limit,
                          json_out=json_out)
    if any(folders):  # one folder and one file: say which path is missing, or that they cannot be compared
        _scale.refuse_folder_and_file(*((old, new) if folders[0] else (new, old)))
    _scale.note_single(engine, ray_address)
    report = diff(old, new, label=label, id=id, table=table)
    if json_out:
        print_json(report.to_dict())
    else:
        ch = report.changes
        if report.identical:
            say(f"[bold green]Identical labels[/]: {ch.n_before} rows of {report.old} and "
                          f"{ch.n_after} of {report.new}")
        else:
            say(f"[bold]{report.old} -> {report.new}[/]: " + "; ".join(report.findings))
            render_changes(ch, "old", "new", limit=limit)
    if not report.identical:
        raise typer.Exit(1)


# -- a folder or prefix of files (a lake): integrity/_lake.py --------------------------------
def _engine_text(info: dict) -> str:
    return f"engine {info.get('engine')}, {info.get('workers')} worker(s)"


def render_lake_verify(rep, *, limit: int = 50) -> None:
    """Print a LakeVerifyReport: verdict, findings, partitions, then one table per kind of difference."""
    m, p = rep.manifest, rep.partitions
    where = f"manifest {m['path']}"
    if _refused(rep.signature, where, rep.source, rep.findings, (), compared=bool(p)):
        return
    if rep.ok:
        say(f"[bold green]INTACT[/]: {rep.source} matches its seal ('{m['name']}' version {m['version']}, "
            f"{m['partitions']} partitions, {m['rows']} rows, key {m['key_id']}; {_engine_text(rep.engine)})")
        return
    say(f"[bold red]TAMPERED[/]: {rep.source} differs from its seal ({where}, "
        f"'{m['name']}' version {m['version']}, sealed {m['created']} by key {m['key_id']})")
    _say_findings(rep.findings, rep.notes)
    why = " (seals with --columns or --private compare every partition with its snapshot)" \
        if m["columns"] or m["private"] else ""
    say(f"  partitions: {p['intact']} intact, {len(p['changed'])} changed, {len(p['added'])} added, "
        f"{len(p['removed'])} removed, {len(p['renamed'])} renamed; snapshots read: {len(p['snapshots_read'])} "
        f"of {m['partitions']}{why}")
    _lake_tables(rep, "sealed", "current", limit)
    for name, c in rep.columns.items():
        _table(f"Sealed column '{name}' changed ({len(c['row'])})", ["partition", "row", "id", "sealed", "current"],
               zip(c["partition"], c["row"], c["id"], c["sealed"], c["current"]), len(c["row"]), limit)
    _lake_counts(rep.class_counts, rep.balance, "sealed", "current")


def _lake_tables(rep, before: str, after: str, limit: int) -> None:
    """Changed, moved, added, removed rows and duplicated ids of a lake verify or diff."""
    c, mv, a, r, d = rep.changed, rep.moved, rep.added, rep.removed, rep.duplicated
    n = len(c["row"])
    if n:
        _table(f"Changed labels ({n})", ["partition", "row", "id", before, after],
               zip(c["partition"], c["row"], c["id"], c[before], c[after]), n, limit)
    n = len(mv.get("id", []))
    if n:
        _table(f"Rows moved to another partition ({n})", ["id", "from partition", "row", "to partition", "row",
                                                          before, after],
               zip(mv["id"], mv["from_partition"], mv["from_row"], mv["partition"], mv["row"], mv[before],
                   mv[after]), n, limit)
    for title, rows in ((f"Added rows ({len(a['row'])})", a),
                        (f"Removed rows ({len(r['row'])}; row = position in the {before} partition)", r)):
        if rows["row"]:
            _table(title, ["partition", "row", "id", "label"],
                   zip(rows["partition"], rows["row"], rows["id"], rows["label"]), len(rows["row"]), limit)
    n = len(d["id"])
    if n:
        _table(f"Duplicated ids ({n})", ["partition", "id", "rows with it"], zip(d["partition"], d["id"], d["count"]),
               n, limit)


def _lake_counts(class_counts: list, balance: dict, before: str, after: str) -> None:
    if not class_counts:
        return
    t = Table("label", before, after, "change", title="Class counts (all partitions)")
    for row in class_counts:
        t.add_row(_txt(row["label"]), str(row[before]), str(row[after]), f"{row['change']:+d}")
    console.print(t)
    if balance.get("dof"):
        say(f"Class balance: chi-square {balance['statistic']:.2f} (dof {balance['dof']}), "
            f"p = {balance['p_value']:.3g}" + (" -- [bold]drifted[/]" if balance["drifted"] else
                                               " -- no significant drift"))


def _lake_diff(old, new, *, label, id, engine, ray_address, limit, json_out) -> None:  # noqa: A002
    from ..integrity._lake import diff_lake

    rep = diff_lake(old, new, label=label, id=id, engine=engine, ray_address=ray_address)
    p = rep.partitions
    if json_out:
        print_json(rep.to_dict())
    elif rep.identical:
        say(f"[bold green]Identical labels[/]: {p['identical']} partitions of {rep.old} and {rep.new} "
            f"({_engine_text(rep.engine)})")
    else:
        say(f"[bold]{rep.old} -> {rep.new}[/]: {p['identical']} partitions identical, {len(p['changed'])} "
            f"changed, {len(p['added'])} added, {len(p['removed'])} removed ({_engine_text(rep.engine)})")
        _say_findings(rep.findings, rep.notes)
        _lake_tables(rep, "old", "new", limit)
        _lake_counts(rep.class_counts, rep.balance, "old", "new")
        if rep.transitions:
            t = Table("from", "to", "rows", title="Label transitions (all partitions)")
            for tr in rep.transitions[:20]:
                t.add_row(_txt(tr["from"]), _txt(tr["to"]), str(tr["count"]))
            console.print(t)
            say(rep.shape["reading"])
    if not rep.identical:
        raise typer.Exit(1)
