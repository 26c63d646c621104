"""Report sections of a :class:`~flipguard.detection.LabelAudit`.

Everything drawn here is read from the audit (scores, flags, transitions,
the 2-D embedding computed by :mod:`flipguard.detection`) and from the
dataset's features; nothing is computed beyond formatting and plotting.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ._figures import BAD, INK, MUTED, class_colors, figure_to_image, text
from ._html import Section, Table

__all__ = ["audit_sections"]

#: Unflagged points drawn at most in the 2-D view (flagged ones are always drawn).
MAX_POINTS = 5000
#: Feature columns listed next to each suspect.
MAX_FEATURES = 6  # more would push the suspects table past a 1400 px page


def audit_sections(audit, dataset=None, *, top: int = 50) -> list[Section]:
    """Sections describing an audit: summary, score distribution, transitions,
    the 2-D view of flagged rows and the top suspects with their features.

    Parameters
    ----------
    audit : LabelAudit
    dataset : LabeledDataset, optional
        Supplies feature names and values for the suspects table.
    top : int, default=50
        Suspects listed.
    """
    names = [str(v) for v in audit.label_values(np.arange(audit.n_classes))]
    sections = [_summary(audit, names), _scores(audit), _transitions(audit, names)]
    if audit.embedding is not None:
        sections.append(_embedding(audit, names))
    sections.append(_suspects(audit, dataset, top))
    if audit.disagreements:
        sections.append(_disagreements(audit))
    return sections


def _summary(audit, names) -> Section:
    q = audit.model_quality or {}
    paras = []
    v = audit.verdict or {}
    if v:
        paras.append(f"Verdict: {v['status']}. {v['reason'][0].upper()}{v['reason'][1:]}.")
        paras.append(f"Flagged: {audit.n_likely} likely flipped (false-discovery rate at most "
                     f"{v['fdr']:.0%}) and {audit.n_ambiguous} ambiguous. Estimated flips "
                     f"{v['estimated_flips']}; clean labels would give about {v['clean_estimate']} "
                     f"(up to {v['clean_estimate_upper']}); the test's false-alarm rate is "
                     f"{v['alpha']:.0%}.")
    if v.get("verified_estimate"):
        from ..detection._auto import verified_estimate_text

        paras.append(f"Verified (trusted) rows: {verified_estimate_text(v['verified_estimate'])}.")
    if q.get("selection"):
        paras.append(f"Model chosen automatically: {q.get('model')} ({q['selection']}).")
    paras.append(
        (f"{audit.n_flagged} of {audit.n_samples} labels are flagged by method "
         f"'{audit.method}'. Estimated flipped labels: {audit.estimated_flips} "
         f"({audit.estimated_flip_rate:.1%} of the rows)."))
    if q:
        paras.append(
            f"Out-of-fold quality of {q.get('model') or 'the model'} against the observed labels: "
            f"accuracy {_num(q.get('accuracy'))}, balanced accuracy {_num(q.get('balanced_accuracy'))}, "
            f"AUROC {_num(q.get('auroc'))} (chance: balanced accuracy {_num(q.get('chance'))}, AUROC 0.5). "
            "The labels it is scored against are the audited ones, flips included.")
    if "confident_estimate" in audit.details:
        clean = v.get("confident_clean_estimate")
        paras.append(f"Confident learning's estimate: {audit.details['confident_estimate']} flipped labels"
                     + (f" (clean labels as uncertain as the model's evidence give about {clean})"
                        if clean is not None else "")
                     + ". A large gap between the two estimates means many suspects sit where the "
                     "classes overlap.")
    for w in audit.warnings:
        paras.append(f"Warning: {w}")
    rows = [[e["name"], e["kind"], e["n_applicable"], e["n_disagree"]] for e in audit.evidence]
    tables = [Table(["source", "kind", "rows it applies to", "disagreements"], rows,
                    caption="Independent evidence", align="llrr")] if rows else []
    return Section("Audit summary", paragraphs=paras, tables=tables)


def _scores(audit) -> Section:
    fig = Figure(figsize=(7.2, 3.2), layout="constrained")
    ax = fig.subplots()
    s = np.asarray(audit.scores, dtype=float)
    bins = np.linspace(0.0, 1.0, 41)
    ax.hist([s[~audit.flags], s[audit.flags]], bins=bins, stacked=True,
            color=["#9db4cf", BAD], label=["not flagged", "flagged"], edgecolor="white", linewidth=0.4)
    ax.set_yscale("log")
    ax.set_xlabel("suspicion score (higher = more likely flipped)", fontsize=9.5)
    ax.set_ylabel("rows (log scale)", fontsize=9.5)
    ax.legend(frameon=False, fontsize=9)
    ax.tick_params(labelsize=8.5, colors=INK)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    img = figure_to_image(fig, alt="Histogram of suspicion scores, flagged rows in red",
                          caption="Distribution of suspicion scores.")
    return Section("Score distribution", images=[img])


def _transitions(audit, names) -> Section:
    t = np.asarray(audit.transitions)
    k = t.shape[0]
    paras = [("Rows are the (estimated) true class, columns the observed label; off-diagonal "
              "cells are estimated flips from the row class to the column class.")]
    images = []
    if k <= 30:
        size = float(np.clip(0.45 * k + 2.2, 3.0, 8.0))
        fig = Figure(figsize=(size + 1.2, size), layout="constrained")
        ax = fig.subplots()
        off = t.astype(float).copy()
        np.fill_diagonal(off, np.nan)
        # Counts of flips: white is none (without vmin/vmax an all-zero matrix is drawn mid-red,
        # on a colour bar running from -0.1 to 0.1).
        top = float(np.nanmax(off)) if k > 1 else 0.0
        im = ax.imshow(off, cmap="Reds", interpolation="nearest", vmin=0.0, vmax=max(top, 1.0))
        if k <= 15:
            for i in range(k):
                for j in range(k):
                    dark = i != j and t[i, j] > 0.6 * max(top, 1.0)
                    ax.text(j, i, str(int(t[i, j])), ha="center", va="center", fontsize=8.5,
                            color="white" if dark else MUTED if i == j else INK)
        ticks = [text(c, 16) for c in names]
        ax.set_xticks(range(k), ticks, rotation=45 if k > 4 else 0, ha="right" if k > 4 else "center",
                      fontsize=8.5)
        ax.set_yticks(range(k), ticks, fontsize=8.5)
        ax.set_xlabel("observed label", fontsize=9.5)
        ax.set_ylabel("estimated true class", fontsize=9.5)
        fig.colorbar(im, ax=ax, shrink=0.8, label="estimated flips")
        images.append(figure_to_image(fig, alt="Estimated transition matrix",
                                      caption="Estimated flips by class pair (diagonal: kept labels)."))
    rows = [[tr["from"], tr["to"], tr["count"]] for tr in audit.transition_list()]
    tables = [Table(["true (estimated)", "observed", "rows"], rows or [["-", "-", 0]],
                    caption="Estimated flips by class pair", align="llr")]
    return Section("Estimated transitions", paragraphs=paras, images=images, tables=tables)


def _embedding(audit, names) -> Section:
    xy = np.asarray(audit.embedding, dtype=float)
    flags = np.asarray(audit.flags)
    colors = class_colors(audit.n_classes)
    keep = np.flatnonzero(~flags)
    if len(keep) > MAX_POINTS:
        keep = keep[np.linspace(0, len(keep) - 1, MAX_POINTS).astype(int)]
    flagged = np.flatnonzero(flags)
    fig = Figure(figsize=(7.2, 5.4), layout="constrained")
    ax = fig.subplots()
    for c in range(audit.n_classes):
        m = keep[audit.labels[keep] == c]
        ax.scatter(xy[m, 0], xy[m, 1], s=7, color=colors[c], alpha=0.35, linewidths=0)
        f = flagged[audit.labels[flagged] == c]
        ax.scatter(xy[f, 0], xy[f, 1], s=34, color=colors[c], marker="X", edgecolors="black",
                   linewidths=0.6)
    handles = [Line2D([], [], marker="o", linestyle="", color=colors[c], label=text(names[c], 20))
               for c in range(audit.n_classes)][:12]
    handles.append(Line2D([], [], marker="X", linestyle="", color="white", markeredgecolor="black",
                          label="flagged (colour: observed label)"))
    ax.legend(handles=handles, frameon=False, fontsize=8, loc="best")
    axes = audit.embedding_axes or ["", ""]
    ax.set_xlabel(text(axes[0], 60), fontsize=9.5)
    ax.set_ylabel(text(axes[1], 60), fontsize=9.5)
    ax.tick_params(labelsize=8.5)
    shown = f" ({len(keep)} of {int((~flags).sum())} unflagged rows drawn)" if (~flags).sum() > len(keep) else ""
    img = figure_to_image(fig, alt="Two-dimensional view of the rows with flagged rows marked",
                          caption="Rows in two dimensions, coloured by observed label; crosses are "
                                  f"flagged rows{shown}.")
    return Section("Flagged rows in two dimensions", images=[img])


def _suspects(audit, dataset, top: int) -> Section:
    order = audit.top(top)
    ids = audit.row_ids()
    feats: list[str] = []
    X = None
    if dataset is not None and getattr(dataset, "X", None) is not None \
            and dataset.X.shape[0] == audit.n_samples:
        feats = list(dataset.feature_names[:MAX_FEATURES])
        X = dataset.X
    cols = ["row", "id", "label", "suggested", "score", "flagged", "why"] + feats
    reasons = audit.reasons()
    likely = audit.likely if audit.likely is not None else audit.flags
    rows = []
    for r in order:
        row = [int(r), ids[r], audit.label_values(audit.labels[r]), audit.suggested[r],
               f"{audit.scores[r]:.3f}", ("likely" if likely[r] else "ambiguous") if audit.flags[r] else "",
               str(reasons[r]).replace(";", ", ")]
        if X is not None:
            row += [f"{X[r, j]:.4g}" for j in range(len(feats))]
        rows.append(row)
    paras = []
    if X is not None and dataset.n_features > MAX_FEATURES:
        paras.append(f"Showing the first {MAX_FEATURES} of {dataset.n_features} feature columns.")
    return Section(f"Top {len(order)} suspects", paragraphs=paras,
                   tables=[Table(cols, rows, caption="Most suspicious rows first",
                                 align="r" + "lll" + "rll" + "r" * len(feats))])


def _disagreements(audit) -> Section:
    ids = audit.row_ids()
    rows = [[d["row"], ids[d["row"]], d["source"], audit.label_values(audit.labels[d["row"]]),
             audit.label_values(d["expected"])] for d in audit.disagreements[:500]]
    more = len(audit.disagreements) - len(rows)
    paras = [f"{len(audit.disagreements)} disagreements between the labels and independent sources"
             + (f"; the first {len(rows)} are listed." if more > 0 else ".")]
    return Section("Disagreements with rules and reference labels", paragraphs=paras,
                   tables=[Table(["row", "id", "source", "label", "expected"], rows,
                                 caption="Disagreements", collapsible=len(rows) > 20, align="rllll")])


def _num(x) -> str:
    return "-" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.3f}"
