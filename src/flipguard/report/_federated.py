"""Report sections for a :class:`flipguard.federated.FederatedResult`.

Figures of source-class recall, attack success and global accuracy per
round, one line per defence and the no-attacker baseline dashed in black;
a table of the final round; who each defence suspected.  Everything is read
from the result; nothing is computed here.  This module does not import
Flower (a result is a plain dataclass).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ._figures import INK, class_colors, figure_to_image, text
from ._html import Section, Table, write_report

__all__ = ["federated_figure", "federated_sections", "write_federated_report"]

_PANELS = (("source_recall", "Source-class recall"), ("attack_success_rate", "Attack success rate"),
           ("accuracy", "Global accuracy"))


def _cell(x, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def federated_figure(result, metrics: Sequence[str] = ("source_recall", "attack_success_rate")) -> Figure:
    """One panel per metric, value per round: a line per defence, the baseline dashed black."""
    titles = dict(_PANELS)
    metrics = [m for m in metrics if any(v is not None for r in result.runs for v in r.series(m))]
    if not metrics:
        metrics = ["accuracy"]
    defences = [r for r in result.runs[1:]]
    colors = class_colors(max(len(defences), 1))
    fig = Figure(figsize=(5.2 * len(metrics), 3.9), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    base = result.baseline
    for ax, m in zip(axes, metrics):
        xs = [r.round for r in base.rounds]
        ax.plot(xs, base.series(m), linestyle="--", color=INK, linewidth=2.0, label="baseline (no attackers)")
        for color, run in zip(colors, defences):
            label = run.defence if len({r.malicious for r in defences}) <= 1 else \
                f"{run.defence} ({run.malicious:.0%})"
            ax.plot([r.round for r in run.rounds], run.series(m), marker="o", markersize=3.5, linewidth=1.6,
                    color=color, label=text(label))
        ax.set_title(titles.get(m, m))
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="best")
    return fig


def federated_sections(result) -> list[Section]:
    """The report's sections: setting, figures per round, final-round table, suspects."""
    s = result.settings
    fractions = s["malicious"] if isinstance(s["malicious"], list) else [s["malicious"]]
    pair = f"{s['source']} \u2192 {s['target']}" if s.get("source") and s.get("target") else "no source/target pair"
    part = s["partition"] + (f" (Dirichlet alpha {s['alpha']})" if s.get("alpha") else "")
    setting = [
        f"{s['n_clients']} clients, {part}; malicious: "
        f"{' / '.join(f'{m:.0%}' for m in fractions)} (at most clients {', '.join(map(str, s['malicious_clients'])) or 'none'}) using the "
        f"{s['attack'] or '-'} attack ({pair}) from round {s['attack_from']}; {s['rounds']} rounds of "
        f"{s['model']} with {s['epochs']} local epochs; seed {s['seed']}.",
        f"Scored after every round on a clean test split of {s['n_test']} rows that no client holds. "
        "Source recall: source-class test rows predicted as the source class. Attack success: the same rows "
        "predicted as the target class. The dashed black line is FedAvg without attackers.",
    ]
    rows = []
    base = result.baseline.final
    for r in result.runs:
        f = r.final
        drop = None if f.source_recall is None or base.source_recall is None else base.source_recall - f.source_recall
        rows.append([r.defence, f"{r.malicious:.0%}", _cell(f.accuracy), _cell(f.source_recall),
                     _cell(drop), _cell(f.attack_success_rate), _cell(f.detection_precision),
                     _cell(f.detection_recall)])
    final = Table(["defence", "malicious", "accuracy", "source recall", "recall lost vs baseline",
                   "attack success", "detection precision", "detection recall"], rows,
                  caption="Final round")
    sus_rows = []
    for r in result.runs[1:]:
        if r.rounds and r.rounds[0].suspects is not None:
            for m in r.rounds:
                sus_rows.append([r.defence, m.round, ", ".join(map(str, m.suspects)) or "none",
                                 _cell(m.detection_precision), _cell(m.detection_recall)])
    sections = [
        Section("Setting", paragraphs=setting),
        Section("Per round", images=[
            figure_to_image(federated_figure(result), alt="Source-class recall and attack success rate per round "
                            "for every defence, with the no-attacker baseline",
                            caption="Source-class recall and attack success per round."),
            figure_to_image(federated_figure(result, ("accuracy",)), alt="Global accuracy per round",
                            caption="Global accuracy per round."),
        ], tables=[final]),
    ]
    if sus_rows:
        sections.append(Section("Suspected clients", paragraphs=[
            "Clients each defence left out of the aggregate, by round, with the precision and recall of the "
            "malicious clients found (lfighter and tolpegin always name a minority, also without attackers)."],
            tables=[Table(["defence", "round", "suspected clients", "precision", "recall"], sus_rows,
                          collapsible=True, summary="Suspects per round")]))
    return sections


def write_federated_report(path: str | os.PathLike, result, *, title: str = "Label flipping in federated "
                           "learning") -> Path:
    """Write the report of ``result`` as one self-contained HTML file, atomically."""
    sub = result.settings.get("dataset")
    return write_report(path, federated_sections(result), title=title, subtitle=str(sub) if sub else None)
