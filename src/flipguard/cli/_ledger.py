"""``flipguard ledger append | verify | show``: a tamper-evident record of pipeline steps."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ._app import app
from ._common import JsonOpt, LabelOpt, TableOpt, console, err_console, finish_report, print_json
from ._integrity import IdReq, KeyOpt, LimitOpt, _txt, say

ledger_app = typer.Typer(
    help="Provenance ledger: append-only, hash-chained, signed record of which step changed which labels.",
    no_args_is_help=True,
)
app.add_typer(ledger_app, name="ledger")

LedgerArg = Annotated[Path, typer.Argument(help="Ledger file (JSON lines).", show_default=False)]


@ledger_app.command("append")
def append_cmd(
    ledger: LedgerArg,
    step: Annotated[str, typer.Option("--step", help="Name of the pipeline step.", show_default=False)],
    input: Annotated[str, typer.Option("--input", "-i", help="The step's input data.",
                                       show_default=False)],
    output: Annotated[str, typer.Option("--output", "-o", help="The step's output data.", show_default=False)],
    label: LabelOpt,
    id: IdReq,
    key: KeyOpt,
    script: Annotated[Path | None, typer.Option("--script", help="Script that ran the step (SHA-256 recorded).")] = None,
    expect_label_changes: Annotated[int | None, typer.Option(
        "--expect-label-changes", min=0,
        help="Labels this step is meant to change (0: label-preserving); any other count is a finding.")] = None,
    expect_changes: Annotated[Path | None, typer.Option(
        "--expect-changes", show_default=False,
        help="CSV of the rows this step may change: column id (and label: the new label allowed); "
             "any other change is a finding.")] = None,
    table: TableOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Seal a step's input and output and append a signed entry to the ledger.

    Records both seals, the script's SHA-256, user, host, time and the previous
    entry's hash; label snapshots go to LEDGER.snapshots/.  Exit 1 (the entry is
    still recorded) when the step changed a different number of labels than
    --expect-label-changes declares, changed a row (or gave it a label)
    that the --expect-changes file does not list, added a row that file does
    not list (a declared step adds no labelled rows; removing rows is
    allowed; an id changed with its label is a removal plus an addition),
    or read an input whose
    labels differ from what an earlier step sealed as its output of the same
    name (the file was edited between the two steps).

    Example:

        flipguard ledger append pipeline.ledger --step dedupe --input raw.csv --output clean.csv \\
            --label sentiment --id review_id --script dedupe.py --key keys/flipguard.key --expect-label-changes 0
    """
    from ..integrity import ledger_append

    result = ledger_append(ledger, step=step, input=input, output=output, label=label, id=id, private_key=key,
                           script=script, expect_label_changes=expect_label_changes, table=table,
                           expect_changes=expect_changes)
    if json_out:
        print_json(result.to_dict())
    else:
        d = result.to_dict()
        ch = d["changes"]
        say(f"Entry #{result.seq} '{step}' appended to {ledger}: {d['rows_input']} -> {d['rows_output']} "
                      f"rows, {ch['changed']} label(s) changed, {ch['added']} added, {ch['removed']} removed")
        say(f"  head: {result.hash}")
        for f in result.findings:
            say(f"[bold red]FINDING[/]: {f}")
    if not result.ok:
        raise typer.Exit(1)


@ledger_app.command("verify")
def verify_cmd(
    ledger: LedgerArg,
    pubkey: Annotated[Path, typer.Option("--pubkey", "-p", help="Public key of the signer.", show_default=False)],
    manifest: Annotated[Path | None, typer.Option(
        "--manifest", "-m", help="A seal to check for rollback against the ledger's latest seal of its data.")] = None,
    head: Annotated[str | None, typer.Option(
        "--head", help="Head hash recorded earlier (12+ hex digits, from a place the attacker cannot write): "
                       "detects entries cut from the end, which nothing else can.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Check the ledger: every entry signed, chained, in order; declared changes kept; no rollback.

    Exit 1 on an edited, inserted, reordered or removed entry *before the
    last one*, a declared step that changed or added labels it did not
    declare, a missing snapshot, or (with --manifest) a seal older than the
    ledger's latest for that dataset.  Entries cut from the end leave a
    valid shorter chain: that is only detected with --head, a head hash
    recorded earlier.  Prints the head hash and the number of entries: keep
    them where the attacker cannot write (a CI log, a commit) and pass
    --head next time.

    Example:

        flipguard ledger verify pipeline.ledger --pubkey keys/flipguard.pub --head 3f2a9c0d1e4b5a67
    """
    from ..integrity import verify_ledger

    report = verify_ledger(ledger, pubkey, manifest=manifest, head=head)
    if json_out:
        print_json(report.to_dict())
    else:
        if report.ok:
            say(f"[bold green]OK[/]: {len(report.entries)} entries of {ledger} signed, chained and "
                          "as declared")
        else:
            say(f"[bold red]LEDGER PROBLEM[/]: {ledger}")
            for f in report.findings:
                say(f"  - {f}")
        for n in report.notes:
            say(f"  note: {n}")
        if report.head:
            n = report.to_dict()["n_entries"]
            say(f"  head: {report.head} (entry #{n - 1}, {n} entries)")
    if head is None:
        err_console.print("note: no --head given: entries cut from the end of the ledger leave a valid "
                          "shorter chain; tail truncation is only detected with --head HASH (record the head "
                          "printed now somewhere the attacker cannot write)", soft_wrap=True, markup=False)
    if not report.ok:
        raise typer.Exit(1)


@ledger_app.command("show")
def show_cmd(
    ledger: LedgerArg,
    pubkey: Annotated[Path | None, typer.Option("--pubkey", "-p", help="Also check signatures.")] = None,
    limit: LimitOpt = 10,
    json_out: JsonOpt = False,
) -> None:
    """Which step changed which labels, recomputed from the recorded snapshots.

    Exit 1 when a step changed labels it did not declare, labels changed
    between two steps, the chain is broken, or a snapshot is missing or
    disagrees with its entry.

    Example:

        flipguard ledger show pipeline.ledger --pubkey keys/flipguard.pub
    """
    from ..integrity import show_ledger

    report = show_ledger(ledger, pubkey)
    finish_report(report, json_out, lambda r: _render_show(r, limit))


def _render_show(report, limit: int) -> None:
    t = Table("#", "step", "rows", "changed", "added", "removed", "declared", "transitions",
              title=f"Ledger {report.path}")
    for e in report.entries:
        ch = _counts(e)
        trans = ", ".join(f"{_txt(x['from'])}->{_txt(x['to'])} {x['count']}" for x in ch["transitions"][:3])
        exp = e["expect_label_changes"]
        bad = exp is not None and exp != ch["changed"]
        t.add_row(str(e["seq"]), e["step"], f"{e['input']['rows']}->{e['output']['rows']}",
                  f"[bold red]{ch['changed']}[/]" if bad else str(ch["changed"]),
                  f"[bold red]{ch['added']}[/]" if exp is not None and ch["added"] else str(ch["added"]),
                  str(ch["removed"]), _declared(exp, e["expect_changes"]), trans or "-")
    console.print(t)
    for e in report.entries:
        script = f", script {e['script']['path']} (sha256 {e['script']['sha256'][:12]})" if e["script"] else ""
        say(f"#{e['seq']} {e['step']}: {e['input']['source']} -> {e['output']['source']}, "
                      f"{e['time'][:19].replace('T', ' ')} UTC by {e['user']}@{e['host']}{script}")
        rec = e.get("recomputed")
        if rec and rec["n_changed"]:
            c = rec["changed"]
            shown = ", ".join(f"{i} ({_txt(a)}->{_txt(b)})" for i, a, b in
                              list(zip(c["id"], c["input"], c["output"]))[:limit])
            more = f", ... {rec['n_changed'] - limit} more" if rec["n_changed"] > limit else ""
            say(f"   changed ids: {shown}{more}")
            say(f"   {rec['shape']['reading']}")
    for f in report.findings:
        say(f"[bold red]FINDING[/]: {f}")
    for n in report.notes:
        say(f"note: {n}")
    if report.head:
        say(f"head: {report.head}")


def _declared(count: int | None, ids: dict | None) -> str:
    """The table's "declared" cell: a count, the ids a --expect-changes file allows, both or neither."""
    parts = ([] if count is None else [str(count)]) + ([] if ids is None else [f"{ids['ids']} id(s) in {Path(ids['file']).name}"])
    return ", ".join(parts) or "-"


def _counts(e: dict) -> dict:
    rec = e.get("recomputed")
    if rec is None:
        return e["changes"]
    return {"changed": rec["n_changed"], "added": rec["n_added"], "removed": rec["n_removed"],
            "transitions": rec["transitions"]}
