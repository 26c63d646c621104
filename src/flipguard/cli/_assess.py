"""``flipguard assess``: sweep attacks over a dataset and report damage and illusion gap."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from .._io import atomic_group, atomic_write_text
from .._names import ASSESS_MITIGATIONS
from ..exceptions import InvalidParameterError
from ._app import app
from ._common import (
    DataArg,
    EngineOpt,
    IdOpt,
    JobsOpt,
    JsonOpt,
    KeepOpt,
    LabelOpt,
    RayAddressOpt,
    TableOpt,
    TextOpt,
    check_output_folder,
    class_value,
    console,
    err_console,
    fmt,
    load_data,
    note,
    parse_floats,
    print_json,
    signed,
    split_list,
)

if TYPE_CHECKING:
    from ..assess import Assessment


@app.command("assess")
def assess_cmd(
    data: DataArg,
    label: LabelOpt,
    model: Annotated[str, typer.Option("--model", "-m", help="Victim model(s), comma-separated: "
                                       "logreg, linsvm, rf, hgb, knn, mlp.")] = "logreg",
    strategies: Annotated[str, typer.Option("--strategies", "-s", help="Attacks, comma-separated.")]
    = "random,targeted,boundary,cluster",
    rates: Annotated[str, typer.Option("--rates", "-r", help="Flip rates, comma-separated.")] = "0.1,0.2,0.3",
    seeds: Annotated[int, typer.Option("--seeds", help="Number of seeds (repetitions).", min=1)] = 3,
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for report.html and assessment.json.")]
    = Path("flipguard-assess"),
    holdout: Annotated[float, typer.Option(help="Clean holdout fraction.")] = 0.25,
    validation: Annotated[float, typer.Option(help="Validation fraction of the poisoned store.")] = 0.25,
    detect: Annotated[bool, typer.Option("--detect", help="Also score label-flip detection against the true flips.")] = False,
    mitigate: Annotated[str | None, typer.Option(help="Mitigations to compare, comma-separated: drop, relabel, "
                                                 "weight, loss_correction, or blind_drop (drop every flagged "
                                                 "row: the naive baseline).")] = None,
    report: Annotated[bool, typer.Option("--report/--no-report", help="Write report.html.")] = True,
    id: IdOpt = None,  # noqa: A002
    table: TableOpt = None,
    text: TextOpt = None,
    keep: KeepOpt = None,
    source: Annotated[str | None, typer.Option(help="targeted/cluster: class whose rows are flipped "
                                               "(targeted default: the smallest class).")] = None,
    target: Annotated[str | None, typer.Option(help="targeted/cluster: class they become "
                                               "(targeted default: the largest other class).")] = None,
    n_jobs: JobsOpt = -1,
    engine: EngineOpt = "local",
    ray_address: RayAddressOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Measure what label flipping does to a model, as the victim sees it and in truth.

    Every model is scored on the poisoned validation split (what the victim sees)
    and on a clean holdout (the truth). The illusion gap is validation accuracy minus clean-holdout accuracy of the
    poisoned model: positive means the poisoned validation split flatters it.

    Example:

        flipguard assess data.csv --label diagnosis --model logreg,hgb \\
            --strategies random,cluster --rates 0.1,0.2,0.3 --seeds 3 --out report/
    """
    from ..assess import assess

    chosen = split_list(mitigate, "--mitigate") if mitigate else []
    unknown = [m for m in chosen if m not in ASSESS_MITIGATIONS]
    if unknown:
        raise InvalidParameterError(f"--mitigate {unknown[0]!r} is not a mitigation; choose from "
                                    f"{', '.join(ASSESS_MITIGATIONS[:-1])}")
    if out.exists() and not out.is_dir():
        raise InvalidParameterError(f"--out {out} is a file; assess writes a folder (report.html and "
                                    "assessment.json): give a folder name")
    check_output_folder(out, "--out", output_files(report))
    chosen_strategies = _once(split_list(strategies, "--strategies"), "--strategies")
    chosen_rates = _once(parse_floats(rates, "--rates"), "--rates")
    given = {name: value for name, value in (("source", source), ("target", target)) if value is not None}
    takers = [s for s in chosen_strategies if s in ("targeted", "cluster")]
    if given and not takers:
        raise InvalidParameterError(f"--{next(iter(given))} applies to the targeted and cluster attacks; "
                                    "add one of them to --strategies")
    ds = load_data(data, label=label, id=id, table=table, text=text, keep=keep)
    for name, value in given.items():
        if class_value(value, ds) is None:
            raise InvalidParameterError(f"--{name} {value!r} is not a class of {ds.source}; classes: "
                                        f"{', '.join(map(str, ds.classes[:8]))}{', ...' if ds.n_classes > 8 else ''}")
    if source is not None and source == target:
        raise InvalidParameterError(f"--source and --target are the same class ({source!r})")
    params = {s: {name: class_value(value, ds) for name, value in given.items()} for s in takers} if given else None
    result = assess(
        ds, strategies=chosen_strategies, rates=chosen_rates, attack_params=params,
        seeds=seeds, models=split_list(model, "--model"), holdout_size=holdout,
        validation_size=validation, detect=detect,
        mitigate=chosen, views="auto" if report else None,  # the boundary views only feed the report
        n_jobs=n_jobs, verbose=False if json_out else None, engine=engine, ray_address=ray_address,
    )
    written = write_outputs(result, out, report=report, title=f"flipguard assessment — {ds.source}")
    for text in result.warnings():
        note(f"warning: {text.replace('rate ', '--rates ', 1) if text.startswith('rate ') else text}")
    if json_out:
        print_json({**result.to_dict(), "outputs": written})
        return
    render_summary(result)
    for path in written.values():
        console.print(f"wrote {path}")


def _once(values: list, flag: str) -> list:
    """``values`` without repeats (order kept), with a ``note:`` naming what repeated: a repeated
    strategy or rate would otherwise be run again and averaged in as an extra seed."""
    unique = list(dict.fromkeys(values))
    if len(unique) < len(values):
        repeated = list(dict.fromkeys(v for i, v in enumerate(values) if v in values[:i]))
        note(f"note: {flag} repeats {', '.join(f'{v:g}' if isinstance(v, float) else v for v in repeated)}; "
             "each is run once")
    return unique


def output_files(report: bool) -> tuple[str, ...]:
    """The files :func:`write_outputs` writes in its folder."""
    return ("assessment.json", "report.html") if report else ("assessment.json",)


def write_outputs(result: Assessment, out: Path, *, report: bool, title: str) -> dict[str, str]:
    """Write assessment.json (and report.html) in ``out``: both files or, on an error, neither
    (nor the folder, when this call created it)."""
    created = not out.exists()
    try:
        with atomic_group():
            return _write_outputs(result, out, report=report, title=title)
    except BaseException:
        if created:
            import contextlib
            import shutil

            with contextlib.suppress(OSError):
                shutil.rmtree(out)
        raise


def _write_outputs(result: Assessment, out: Path, *, report: bool, title: str) -> dict[str, str]:
    out.mkdir(parents=True, exist_ok=True)
    written = {"json": str(out / "assessment.json")}
    atomic_write_text(out / "assessment.json", result.to_json())
    if report:
        from ..report import write_assessment_report

        path = out / "report.html"
        if sys.stderr.isatty():
            with err_console.status(f"writing {path} (figures for {len(result.runs)} runs)..."):
                written["report"] = str(write_assessment_report(result, path, title=title))
        else:
            written["report"] = str(write_assessment_report(result, path, title=title))
    return written


#: Below this terminal width the summary uses short headers and puts detection and
#: mitigation columns in a second table, so no row wraps at 80 columns.
WIDE = 120


def render_summary(result: Assessment) -> None:
    """The summary table: full headers on a wide terminal (or when piped), compact at 80 columns."""
    rows = result.summary()
    with_detection = any("detection" in r.extras for r in result.runs)
    mitigations = list(result.config.get("mitigate") or [])
    wide = console.width >= WIDE
    title = (f"Impact of label flipping — {result.dataset['source']} "
             f"({result.dataset['n_samples']} rows, {len(result.config['seeds'])} seed(s))")
    if wide:
        heads = ["strategy", "rate", "model", "flipped", "validation acc\n(poisoned)",
                 "holdout acc\n(clean truth)", "acc drop", "illusion gap"]
    else:
        heads = ["attack", "model", "flipped", "val acc", "true acc", "drop", "gap"]
    t = Table(title=title)
    for col in heads:
        t.add_column(col, justify="left" if col in ("strategy", "model", "attack") else "right")
    extra = Table(title="Detection and mitigation (clean-holdout accuracy, gain vs no mitigation)") \
        if not wide and (with_detection or mitigations) else t
    if extra is not t:
        extra.add_column("attack")
        extra.add_column("model")
    if with_detection:
        extra.add_column("detect F1" if wide else "F1", justify="right")
        extra.add_column("AUROC", justify="right")
    for name in mitigations:
        extra.add_column(f"holdout acc\n{name}" if wide else name, justify="right")
    for r in rows:
        gap = r["illusion_gap"]["mean"]
        style = "bold red" if gap >= 0.05 else None
        rate = f"{r['rate'] * 100:.4g}%" if r["rate"] else "-"  # 0.001 is "0.1%", not "0%"
        attack = [r["strategy"], rate] if wide else [r["strategy"] + ("" if rate == "-" else f" {rate}")]
        cells = [*attack, r["model"], f"{r['flip_rate']['mean']:.1%}",
                 _pm(r["poisoned_validation_accuracy"], wide, r["n_seeds"]),
                 _pm(r["poisoned_holdout_accuracy"], wide, r["n_seeds"]),
                 _pm(r["accuracy_drop"], wide, r["n_seeds"], sign=True)]
        gap_text = _pm(r["illusion_gap"], wide, r["n_seeds"], sign=True)
        cells.append(f"[{style}]{gap_text}[/]" if style else gap_text)
        more = []
        if with_detection:
            d = r.get("detection", {})
            more += [fmt(d.get("f1", {}).get("mean")), fmt(d.get("auroc", {}).get("mean"))]
        for name in mitigations:
            m = r.get("mitigation", {}).get(name)
            if not m:
                more.append("-")
            else:
                gain = signed(m["gain"]["mean"])
                more.append(f"{fmt(m['accuracy']['mean'])} " + (f"({gain})" if wide else gain))
        if extra is t:
            t.add_row(*cells, *more)
        else:
            t.add_row(*cells)
            if more and r["strategy"] != "none":
                extra.add_row(attack[0], r["model"], *more)
    console.print(t)
    if extra is not t:
        console.print(extra)
    if wide:
        console.print(f"[dim]illusion gap = poisoned-validation accuracy - clean-holdout accuracy of the "
                      f"poisoned model; positive means validation flatters it. {result.seconds:.1f} s.[/]")
    else:
        console.print(f"[dim]val acc: on the poisoned validation split (what the victim sees); true acc: on a "
                      f"clean holdout; drop: true acc lost to the attack; gap = val acc - true acc (positive: "
                      f"validation flatters the model). Means over seeds. {result.seconds:.1f} s.[/]")


def _pm(stat: dict, wide: bool = True, n_seeds: int = 1, sign: bool = False) -> str:
    """Mean, and with several seeds its spread (also when it is 0: "0.972 ± 0.000", as in the report;
    ``sign``: "+0.012 ± 0.004" for a drop or a gap). A single seed shows the value alone; the compact
    table shows means only."""
    mean, std = (signed if sign else fmt)(stat["mean"]), fmt(stat.get("std"))  # "-": missing or not finite
    return f"{mean} ± {std}" if wide and n_seeds > 1 and "-" not in (mean, std) else mean
