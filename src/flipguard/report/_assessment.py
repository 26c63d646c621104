"""Report sections for an :class:`flipguard.assess.Assessment`.

Everything drawn or written here is read from the assessment (its runs, its
:meth:`~flipguard.assess.Assessment.summary` and its boundary views); no model
is fitted and no metric is computed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from markupsafe import Markup

from ..exceptions import InvalidParameterError
from ._figures import (
    boundary_figure,
    confusion_figure,
    figure_to_image,
    illusion_gap_figure,
    metric_curves_figure,
    pct,
    strategy_colors,
)
from ._html import Section, Table, write_report

__all__ = ["assessment_sections", "write_assessment_report"]


# -- formatting ---------------------------------------------------------------
#: What a cell or a sentence shows where there is no value (never "nan" or "None").
MISSING = "\u2013"


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and bool(np.isfinite(x))


def _num(x: float | None, digits: int = 3) -> str:
    if not _finite(x):
        return MISSING
    return f"{round(x, digits) + 0.0:.{digits}f}"  # + 0.0: never "-0.000"


def _signed(x: float | None, digits: int = 3) -> str:
    if not _finite(x):
        return MISSING
    return f"{round(x, digits) + 0.0:+.{digits}f}"


def gap_noise(row: Mapping, n_validation: int, n_holdout: int) -> float:
    """Two standard errors of a mean illusion gap: the binomial sampling error of the two
    accuracies on splits of this size, or the spread over seeds if larger.  A gap inside
    it is not evidence that validation flattered (or wronged) the model."""
    seeds = max(int(row.get("n_seeds", 1)), 1)
    pv, ph = row["poisoned_validation_accuracy"]["mean"], row["poisoned_holdout_accuracy"]["mean"]
    binom = np.sqrt(pv * (1 - pv) / max(n_validation, 1) + ph * (1 - ph) / max(n_holdout, 1))
    spread = row["illusion_gap"].get("std", 0.0) or 0.0
    return float(2.0 * max(binom, spread) / np.sqrt(seeds))


def _share(row: Mapping) -> float | None:
    """Mean share of the poisoned rows (training and validation splits) the attack flipped."""
    share = row.get("flip_rate", {}).get("mean")
    return float(share) if _finite(share) else None


def _flipped_any(row: Mapping) -> bool:
    """False for a setting whose attack changed no label in any seed (its numbers are the baseline's)."""
    share = _share(row)
    return share is None or share > 0


def _share_text(row: Mapping) -> str:
    """The share of rows actually flipped, e.g. '7.5% of rows flipped' or 'flipped no row'."""
    share = _share(row)
    if share is None:
        return ""
    if share == 0:
        return "flipped no row"
    return f"{share:.1%} of rows flipped"


def _flipped_text(row: Mapping) -> str:
    """The attack's budget and the share of the attacked rows (training and validation splits
    together, the poisoned store; not the training split alone) it actually flipped."""
    share = _share(row)
    if share is None or round(share, 3) == round(row["rate"], 3):  # the same when printed
        return f"{pct(row['rate'])} of the training and validation labels flipped"
    return (f"rate {pct(row['rate'])}, which flipped {share:.1%} of the training and validation labels"
            + (" (the rate applies to the source class)" if row["strategy"] == "targeted" else ""))


def _attack_settings(params: Mapping[str, Mapping]) -> str:
    """'targeted: source positive, target negative' for the parameters an assessment gave its attacks
    (class pairs as 'cat → dog')."""
    def value(v) -> str:
        pairs = list(v.items()) if isinstance(v, Mapping) else v
        if isinstance(pairs, (list, tuple)) and pairs and all(
                isinstance(p, (list, tuple)) and len(p) == 2 for p in pairs):
            return ", ".join(f"{a} → {b}" for a, b in pairs)
        return str(v)

    parts = [f"{strategy}: {', '.join(f'{k} {value(v)}' for k, v in p.items())}"
             for strategy, p in params.items() if p]
    return "; ".join(parts)


def _stat(s: Mapping[str, float], n_seeds: int, signed: bool = False) -> str:
    f = _signed if signed else _num
    mean, std = s.get("mean"), s.get("std")
    if n_seeds <= 1 or not _finite(mean) or not _finite(std):
        return f(mean)
    return f"{f(mean)} \u00b1 {_num(std)}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _listing(items: Sequence[Any], limit: int = 12) -> str:
    items = [str(i) for i in items]
    if len(items) > limit:
        return ", ".join(items[:limit]) + f", \u2026 and {len(items) - limit} more"
    return ", ".join(items)


def _key(x: float | None) -> float:
    """A sort key that puts a missing value last."""
    return float(x) if _finite(x) else float("-inf")


def _is_attack(row: Mapping[str, Any]) -> bool:
    return row["strategy"] != "none" and row["rate"] > 0


def _label(row: Mapping[str, Any], with_model: bool, note: str = "") -> str:
    """A setting as the requested rate and the share it flipped: 'targeted at 20% (7.5% of rows flipped)'."""
    s = f"{row['strategy']} at {pct(row['rate'])}"
    extra = [t for t in (_share_text(row) if _is_attack(row) else "", note) if t]
    if with_model:  # 'random at 30% (knn), 30.0% of rows flipped'
        return ", ".join([f"{s} ({row['model']})", *extra])
    return f"{s} ({'; '.join(extra)})" if extra else s


# -- what the assessment holds -----------------------------------------------
class _Facts:
    """Orders and names read once from an assessment (no metric is computed)."""

    def __init__(self, assessment):
        runs = assessment.runs
        self.assessment = assessment
        strategies = list(dict.fromkeys(r.strategy for r in runs))
        self.strategies = (["none"] if "none" in strategies else []) + [s for s in strategies if s != "none"]
        self.models = list(dict.fromkeys(r.model for r in runs))
        self.rates = sorted({r.rate for r in runs})
        self.seeds = sorted({r.seed for r in runs})
        order_s = {s: i for i, s in enumerate(self.strategies)}
        order_m = {m: i for i, m in enumerate(self.models)}
        self.summary = sorted(assessment.summary(),
                              key=lambda r: (order_m[r["model"]], order_s[r["strategy"]], r["rate"]))
        self.colors = strategy_colors(self.strategies)
        self.classes = [str(c) for c in assessment.dataset.get("classes", [])]
        self.attacked = [r for r in self.summary if _is_attack(r)]
        #: Attack settings that changed at least one label; the others are no attack's effect.
        self.effective = [r for r in self.attacked if _flipped_any(r)]
        self.idle = [r for r in self.attacked if not _flipped_any(r)]

    def row(self, strategy: str, rate: float, model: str) -> Mapping[str, Any] | None:
        return next((r for r in self.summary if (r["strategy"], r["rate"], r["model"]) == (strategy, rate, model)),
                    None)

    def class_names(self, report: Mapping[str, Any], k: int) -> list[str]:
        if len(self.classes) == k:
            return self.classes
        per_class = list(report.get("per_class", {}))
        return per_class if len(per_class) == k else [str(i) for i in range(k)]


#: Unflipped training rows drawn in a decision-boundary picture (more make a solid blob).
BOUNDARY_POINTS = 2000


# -- sections -----------------------------------------------------------------
def _headline(f: _Facts) -> Section:
    a = f.assessment
    ds = a.dataset
    multi_model = len(f.models) > 1
    paragraphs: list[str] = []
    stats: list[tuple[str, str, str, str]] = []  # label, value, note, css class
    finding, alarm = "", False

    base = [r for r in f.summary if not _is_attack(r)]
    if f.effective:
        # Settings that flipped no label are left out: their numbers are the baseline's, no attack's.
        worst_gap = max(f.effective, key=lambda r: _key(r["illusion_gap"]["mean"]))
        worst_drop = max(f.effective, key=lambda r: _key(r["accuracy_drop"]["mean"]))
        g = worst_gap["illusion_gap"]["mean"]
        seeds = worst_gap["n_seeds"]
        over = f" (mean of {seeds} seeds)" if seeds > 1 else ""
        model_note = f"{worst_gap['model']}, " if multi_model else ""  # one parenthesis: "(hgb, 30% ...)"
        first_run = a.runs[0]
        noise = gap_noise(worst_gap, first_run.n_validation, first_run.n_holdout)
        within = abs(g) <= noise
        if g > 0 and within:
            finding = (f"No attack clearly made the poisoned validation split look better than the truth: "
                       f"the largest illusion gap, {_signed(g)} for "
                       f"{_label(worst_gap, multi_model, over.strip(' ()'))}, "
                       f"is within noise (±{_num(noise)}: two standard errors for splits of this size "
                       f"and {seeds} seed(s)).")
        elif g > 0:
            alarm = True
            finding = (f"Under the {worst_gap['strategy']} attack ({model_note}{_flipped_text(worst_gap)}), "
                       f"validation said {_num(worst_gap['poisoned_validation_accuracy']['mean'])}, "
                       f"the clean holdout says {_num(worst_gap['poisoned_holdout_accuracy']['mean'])}: "
                       f"an illusion of {_signed(g)}{over}.")
        else:
            finding = (f"No attack made the poisoned validation split look better than the truth: the "
                       f"largest illusion gap is {_signed(g)} for "
                       f"{_label(worst_gap, multi_model, over.strip(' ()'))}.")
        d = worst_drop["accuracy_drop"]["mean"]
        paragraphs.append(
            f"Most damaging setting: {_label(worst_drop, multi_model)}, where clean-holdout accuracy went "
            f"from {_num(worst_drop['clean_holdout_accuracy']['mean'])} (model trained on the true labels) to "
            f"{_num(worst_drop['poisoned_holdout_accuracy']['mean'])} (model trained on the poisoned labels), "
            f"a drop of {_num(d)}.")
        stats.append(("Largest illusion gap" + (" (within noise)" if within else ""), _signed(g),
                      f"{_label(worst_gap, multi_model)}; noise ±{_num(noise)}",
                      "pos" if g > 0 and not within else ""))
        stats.append(("Largest accuracy drop", _num(d),
                      f"{_label(worst_drop, multi_model)}: {_num(worst_drop['clean_holdout_accuracy']['mean'])} "
                      f"\u2192 {_num(worst_drop['poisoned_holdout_accuracy']['mean'])}", "pos" if d > 0 else ""))
    elif f.attacked:
        finding = ("No attack setting flipped a label, so there is no attack effect to report: "
                   f"{_listing([_label(r, multi_model) for r in f.idle])}.")
    else:
        finding = "Only the clean baseline was run (no attack), so there is no illusion gap to report."
    if f.idle and f.effective:
        idle = [_label(r, multi_model).replace(" (flipped no row)", "").replace(", flipped no row", "")
                for r in f.idle]
        paragraphs.append(f"{'These settings' if len(idle) > 1 else 'This setting'} flipped no row and "
                          f"{'are' if len(idle) > 1 else 'is'} left out of the comparisons: {_listing(idle)}.")
    for text in dict.fromkeys(r.extras["note"] for r in a.runs if r.extras.get("note")):
        paragraphs.append(f"{text[0].upper()}{text[1:]}.")  # an attack that left one class
    if base:
        b = base[0]
        stats.append(("Clean-model holdout accuracy", _num(b["clean_holdout_accuracy"]["mean"]),
                      f"{b['model']}, trained on the true labels", ""))
        if not f.attacked:
            paragraphs.append(
                f"Validation accuracy {_num(b['poisoned_validation_accuracy']['mean'])}, clean-holdout accuracy "
                f"{_num(b['poisoned_holdout_accuracy']['mean'])} ({b['model']}).")
    elif f.summary:
        b = f.summary[0]
        stats.append(("Clean-model holdout accuracy", _num(b["clean_holdout_accuracy"]["mean"]),
                      f"{b['model']}, trained on the true labels", ""))
    stats.append(("Runs", str(len(a.runs)), f"in {a.seconds:.1f} s" if a.seconds else "", ""))

    first = a.runs[0] if a.runs else None
    attacks = [s for s in f.strategies if s != "none"]
    baseline_note = ", plus the no-attack baseline" if "none" in f.strategies else ""
    n_classes = len(f.classes)
    facts = [
        ("Dataset", str(ds.get("source", "(unknown)"))),
        ("Label column", str(ds.get("label", ""))),
        ("Rows", f"{ds['n_samples']:,}" if "n_samples" in ds else ""),
        ("Features", f"{ds['n_features']:,}" if "n_features" in ds else ""),
        ("Classes", f"{n_classes}: {_listing(f.classes)}" if n_classes else ""),
        ("Strategies", _listing(attacks) + baseline_note if attacks else "none (no-attack baseline only)"),
        ("Flip rates", _listing([pct(r) for r in f.rates if r > 0])
         + (" requested (the share of rows each setting flipped is in Numbers)" if f.attacked else "")),
        ("Attack settings", _attack_settings(a.config.get("attack_params") or {})),
        ("Seeds", _listing(f.seeds)),
        ("Models", _listing(f.models)),
        ("Splits", f"train {first.n_train:,}, poisoned validation {first.n_validation:,}, "
                   f"clean holdout {first.n_holdout:,} rows" if first else ""),
    ]
    html = Markup('<p class="finding{}">{}</p>\n').format(" alarm" if alarm else "", finding)
    html += Markup('<div class="stats">\n')
    for label, value, note, cls in stats:
        html += Markup('<div class="stat"><div class="label">{}</div><div class="value {}">{}</div>'
                       '<div class="note">{}</div></div>\n').format(label, cls, value, note)
    html += Markup("</div>\n")
    for p in paragraphs:
        html += Markup("<p>{}</p>\n").format(p)
    html += Markup('<dl class="facts">\n')
    for k, v in facts:
        if v:
            html += Markup("<dt>{}</dt><dd>{}</dd>\n").format(k, v)
    html += Markup("</dl>\n")
    return Section("Headline", html=html, anchor="headline")


def _boundary_section(f: _Facts) -> Section:
    images = []
    for v in f.assessment.views:
        n_flip = int(v.flip_mask.sum())
        where = (f"in the plane of {v.projection}" if v.projection else
                 "in the plane of the first two principal components"
                 if any("pca" in str(n).lower() for n in v.axis_names) else "in the plane of the two features")
        n_rows = v.n_rows or len(v.y_true)
        n_flipped = v.n_flipped if v.n_flipped is not None else n_flip
        drawn = min(len(v.y_true), BOUNDARY_POINTS + n_flip)
        if n_flipped == 0:
            sample = (f"the attack flipped none of the {n_rows:,} training rows, so both models were trained "
                      "on the same labels")
        elif n_rows > drawn:
            sample = (f"a sample of {drawn:,} of the {n_rows:,} training rows is drawn ({n_flip:,} of them "
                      f"flipped, of {n_flipped:,} flipped in all)")
        else:
            sample = f"{n_flipped:,} of the {n_rows:,} training rows are flipped"
        row = f.row(v.strategy, v.rate, v.model)
        setting = _label(row, False) if row is not None else f"{v.strategy} at {pct(v.rate)}"
        images.append(figure_to_image(
            boundary_figure(v, max_points=BOUNDARY_POINTS),
            alt=f"Decision regions of the clean and the poisoned {v.model} model, {v.strategy} at {pct(v.rate)}",
            caption=f"{setting} \u2014 {v.model}, first seed: {sample}; shown {where}."))
    return Section(
        "Decision boundaries",
        paragraphs=["Left: the model trained on the true labels. Right: the same model trained on the poisoned "
                    "labels. Shaded regions are the predicted classes; each point is a training row coloured by "
                    "the label that model was trained on, and crosses mark the rows the attack flipped. "
                    "\u201cat 20%\u201d is the requested flip rate (a targeted attack applies it to one class); "
                    "the share of rows flipped is the mean over seeds of the training and validation rows, "
                    "the counts in the panel title and the caption are the training rows of the picture."],
        images=images, anchor="boundaries")


def _idle_note(f: _Facts) -> str:
    if not f.idle:
        return ""
    names = _listing(list(dict.fromkeys(f"{r['strategy']} at {pct(r['rate'])}" for r in f.idle)))
    return f" Flipped no row, so not an attack's effect: {names}."


def _curves_section(f: _Facts) -> Section:
    images = []
    for m in f.models:
        rows = [r for r in f.summary if r["model"] == m]
        images.append(figure_to_image(
            metric_curves_figure(rows, m, f.colors),
            alt=f"Accuracy and F1 against the share of rows flipped for {m}",
            caption=f"{m}: solid lines are measured on the clean holdout, dashed lines on the poisoned "
                    f"validation split; " + (f"bands are \u00b11 standard deviation over {len(f.seeds)} seeds."
                                             if len(f.seeds) > 1 else "one seed, so no spread is shown.")
                    + (" Points sit at the share of rows each setting actually flipped, so a setting that "
                       "flipped no row sits at 0% with the baseline." if f.idle else "")))
    return Section(
        "Metrics against flip rate",
        paragraphs=["How the poisoned model degrades as more labels are flipped. The x axis is the share of "
                    "rows each attack actually flipped (training and validation splits, mean over seeds), "
                    "not the requested rate: a targeted attack applies its rate to one class, so it flips "
                    "fewer rows than it asks for. The distance between a dashed line and the solid line of "
                    "the same colour is the illusion gap."],
        images=images, anchor="metrics")


def _gap_section(f: _Facts) -> Section:
    img = figure_to_image(
        illusion_gap_figure(f.summary, f.models, f.colors),
        alt="Illusion gap per strategy and requested flip rate",
        caption="Bars: mean illusion gap over seeds, grouped by the requested flip rate (the share of rows "
                "each setting actually flipped is in Numbers); whiskers: \u00b11 standard deviation"
                + (" (one seed: no whiskers)." if len(f.seeds) == 1 else ".") + _idle_note(f))
    return Section(
        "Illusion gap",
        paragraphs=["Illusion gap = accuracy on the poisoned validation split (what the victim sees) minus "
                    "accuracy on the clean holdout (the truth). Positive: validation flatters the poisoned "
                    "model, so the damage goes unnoticed. Negative: validation looks worse than the model "
                    "really is."],
        images=[img], anchor="illusion-gap")


def _confusion_section(f: _Facts) -> Section | None:
    images = []
    for model, s in ((m, s) for m in f.models for s in f.strategies):
        runs = [r for r in f.assessment.runs if r.strategy == s and r.model == model]
        if not runs:
            continue
        top = max(r.rate for r in runs)
        at_top = [r for r in runs if r.rate == top]
        run = at_top[0]
        # Summed over every seed: one matrix per model and strategy covers all runs.
        val = _summed(r.poisoned_model["poisoned_validation"] for r in at_top)
        hold = _summed(r.poisoned_model["clean_holdout"] for r in at_top)
        seeds_note = f"{len(at_top)} seeds summed" if len(at_top) > 1 else f"seed {run.seed}"
        k = len(val["confusion_matrix"])
        names = f.class_names(hold, k)
        baseline = s == "none" or top == 0
        row = f.row(s, top, model)
        what = ("no attack (baseline)" if baseline else _label(row, False) if row is not None
                else f"{s} at {pct(top)}")
        trained = ("the true labels" if baseline or (row is not None and not _flipped_any(row))
                   else "the poisoned labels")
        fig = confusion_figure(
            [val["confusion_matrix"], hold["confusion_matrix"]],
            [f"Poisoned validation (what the victim sees)\naccuracy {_num(val['accuracy'])}",
             f"Clean holdout (the truth)\naccuracy {_num(hold['accuracy'])}"],
            names, ylabels=["label in the validation split (poisoned)", "true label"])
        images.append(figure_to_image(
            fig, alt=f"Confusion matrices of the poisoned {model} model, {what}",
            caption=f"{what}: {model} trained on {trained}, {seeds_note}. Rows: label in the "
                    f"split; columns: prediction; colour: share of the row."))
    if not images:
        return None
    return Section(
        "Confusion matrices",
        paragraphs=["For each model and strategy at its highest flip rate (counts summed over every seed): the "
                    "poisoned model on "
                    "the poisoned validation split and on the clean holdout. Cells off the diagonal on the "
                    "right that look right on the left are errors the victim cannot see."],
        images=images, anchor="confusion")


def _summed(reports) -> dict:
    """Confusion matrices added up over runs, with the accuracy of the sum."""
    m = None
    for rep in reports:
        cm = np.asarray(rep["confusion_matrix"], dtype=np.int64)
        m = cm if m is None else m + cm
        names = rep.get("per_class") or {}
    total = int(m.sum())
    return {"confusion_matrix": m.tolist(), "accuracy": float(np.trace(m) / total) if total else float("nan"),
            "per_class": names}


def _tables_section(f: _Facts) -> Section:
    columns = ["Strategy", "Rate", "Model", "Seeds", "Flipped", "Clean model holdout acc.",
               "Poisoned validation acc.", "Poisoned holdout acc.", "Poisoned holdout F1", "Accuracy drop",
               "Illusion gap"]
    rows = []
    for r in f.summary:
        n = r["n_seeds"]
        gap = _stat(r["illusion_gap"], n, signed=True)
        # A highlighted cell carries markup, which the table counts towards its wrap threshold:
        # the outer span keeps the value and its spread on one line.
        gap_cell = Markup('<span style="white-space: nowrap"><span class="pos">{}</span></span>').format(gap) \
            if _is_attack(r) and _flipped_any(r) and _finite(r["illusion_gap"]["mean"]) \
            and r["illusion_gap"]["mean"] > 0 else gap
        share = _share(r)
        rows.append([r["strategy"], pct(r["rate"]), r["model"], n,
                     MISSING if share is None else f"{share:.1%}",
                     _stat(r["clean_holdout_accuracy"], n), _stat(r["poisoned_validation_accuracy"], n),
                     _stat(r["poisoned_holdout_accuracy"], n), _stat(r["poisoned_holdout_f1"], n),
                     _stat(r["accuracy_drop"], n, signed=True), gap_cell])
    spread = ("Mean \u00b1 standard deviation over seeds." if len(f.seeds) > 1
              else f"One seed ({f.seeds[0]}), so no spread.")
    summary = Table(columns, rows, caption=f"{spread} Rate: the requested flip rate (a targeted attack "
                                           "applies it to one class). Flipped: share of the rows the attack "
                                           "reached (training and validation splits) whose label it actually "
                                           "changed, mean over seeds. Accuracy drop: clean model minus "
                                           "poisoned model on the clean holdout." + _idle_note(f),
                    align="lllrrrrrrrr")
    run_cols = ["Strategy", "Rate", "Seed", "Model", "Train", "Validation", "Holdout", "Flipped",
                "Clean model holdout acc.", "Poisoned validation acc.", "Poisoned holdout acc.",
                "Poisoned holdout F1", "Illusion gap", "Fit s"]
    order_s = {s: i for i, s in enumerate(f.strategies)}
    order_m = {m: i for i, m in enumerate(f.models)}
    runs = sorted(f.assessment.runs, key=lambda r: (order_m[r.model], order_s[r.strategy], r.rate, r.seed))
    run_rows = [[r.strategy, pct(r.rate), r.seed, r.model, f"{r.n_train:,}", f"{r.n_validation:,}",
                 f"{r.n_holdout:,}", f"{r.n_flipped:,}", _num(r.clean_model["clean_holdout"]["accuracy"]),
                 _num(r.validation_accuracy), _num(r.holdout_accuracy),
                 _num(r.poisoned_model["clean_holdout"]["f1"]), _signed(r.illusion_gap), f"{r.fit_seconds:.2f}"]
                for r in runs]
    details = Table(run_cols, run_rows, collapsible=True,
                    summary=f"Every run ({len(run_rows)}): one row per strategy, rate, seed and model",
                    align="llrl" + "r" * 10)
    tables = [summary, details]
    config = f.assessment.config or {}
    if config:
        cfg_rows = [[str(k), v if isinstance(v, str) else json.dumps(v, default=str)]
                    for k, v in config.items()]
        tables.append(Table(["Setting", "Value"], cfg_rows, collapsible=True,
                            summary="Configuration of the assessment", align="ll"))
    return Section("Numbers", tables=tables, anchor="numbers")


def _defence_section(f: _Facts) -> Section | None:
    """Detection scored against the true flips, and clean-holdout accuracy after mitigation."""
    rows = [r for r in f.assessment.summary() if _is_attack(r)]
    det_rows = [r for r in rows if "detection" in r]
    mit_rows = [r for r in rows if "mitigation" in r]
    if not det_rows and not mit_rows:
        return None
    tables, paragraphs = [], []
    if det_rows:
        metrics = ["precision", "recall", "f1", "auroc", "average_precision", "precision_at_true_count"]
        heads = ["Precision", "Recall", "F1", "AUROC", "Avg. precision", "Precision @ true count"]
        tables.append(Table(
            ["Attack", *heads, "Estimated / true flip rate"],
            [[_label(r, len(f.models) > 1), *(_num(r["detection"].get(m, {}).get("mean")) for m in metrics),
              f"{_num(r['detection'].get('estimated_flip_rate', {}).get('mean'))} / {_num(_share(r))}"]
             for r in det_rows],
            caption="Label-flip detection on each attacked store, scored against the rows the attack "
                    "really flipped (mean over seeds). \u2013: no value (a ranking score needs at least "
                    "one flipped and one clean row)."))
        paragraphs.append("Detection runs without ground truth, as on a real dataset; the true flips are "
                          "used only to score it.")
    if mit_rows:
        names = list(mit_rows[0]["mitigation"])
        tables.append(Table(
            ["Attack", "No mitigation", *names],
            [[_label(r, len(f.models) > 1), _num(r["poisoned_holdout_accuracy"]["mean"]),
              *(f"{_num(r['mitigation'][n]['accuracy']['mean'])} ({_signed(r['mitigation'][n]['gain']['mean'])})"
                for n in names)] for r in mit_rows],
            caption="Clean-holdout accuracy of the poisoned model with each mitigation "
                    "(gain over no mitigation in brackets)."))
    return Section("Detection and mitigation", paragraphs=paragraphs, tables=tables, anchor="defences")


# -- public ---------------------------------------------------------------------
def assessment_sections(assessment) -> list[Section]:
    """The report sections of an assessment, in reading order.

    Parameters
    ----------
    assessment : flipguard.assess.Assessment

    Returns
    -------
    list of Section
        Headline (dataset, what was run, the largest illusion gap in words);
        decision boundaries (one figure per boundary view, omitted when there
        are none); metrics against flip rate (one figure per model) and the
        illusion gap (both omitted when no attack flipped a row); confusion
        matrices (each model and strategy at its highest rate, summed over seeds);
        the numbers (summary table, every run and the configuration folded).
        Combine them with other sections and pass them to
        :func:`flipguard.report.write_report`.
    """
    from ..assess._result import Assessment

    if not isinstance(assessment, Assessment):
        raise InvalidParameterError(
            f"assessment must be a flipguard.assess.Assessment; got {type(assessment).__name__}.")
    if not assessment.runs:
        raise InvalidParameterError("The assessment has no runs; there is nothing to report.")
    f = _Facts(assessment)
    sections = [_headline(f)]
    if assessment.views:
        sections.append(_boundary_section(f))
    if f.effective:  # settings that flipped no row have no curve or gap of their own
        sections.append(_curves_section(f))
        sections.append(_gap_section(f))
    for extra in (_confusion_section(f), _defence_section(f)):
        if extra is not None:
            sections.append(extra)
    sections.append(_tables_section(f))
    return sections


def write_assessment_report(assessment, path: str | os.PathLike, *,
                            title: str = "Label-flipping impact assessment",
                            subtitle: str | None = None) -> Path:
    """Write the HTML report of ``assessment`` to ``path`` (atomically).

    Parameters
    ----------
    assessment : flipguard.assess.Assessment
    path : str or path-like
    title : str, default="Label-flipping impact assessment"
    subtitle : str, default=None
        Defaults to the dataset source.

    Returns
    -------
    pathlib.Path
    """
    sections = assessment_sections(assessment)
    if subtitle is None:
        src = assessment.dataset.get("source")
        subtitle = f"Dataset: {src}" if src else None
    return write_report(path, sections, title=title, subtitle=subtitle)

