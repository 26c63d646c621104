"""Figures of an assessment, drawn with matplotlib's object API on the Agg canvas.

Nothing here touches ``matplotlib.pyplot`` or global rc settings: every figure
is a fresh :class:`matplotlib.figure.Figure` rendered by
:class:`~matplotlib.backends.backend_agg.FigureCanvasAgg`, so drawing a report
never changes the caller's plotting state.  The functions only draw numbers
they are given; they compute no metric.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter

from ..exceptions import InvalidParameterError
from ._html import Image

__all__ = [
    "boundary_figure",
    "class_colors",
    "confusion_figure",
    "figure_to_image",
    "illusion_gap_figure",
    "metric_curves_figure",
    "strategy_colors",
]

DPI = 144
CSS_DPI = 96
INK = "#1d2430"
MUTED = "#5b6472"
BAD = "#b42318"


# -- helpers ----------------------------------------------------------------
def text(value: Any, max_len: int | None = None) -> str:
    """``value`` as matplotlib-safe text: ``$`` never starts mathtext; long names get an ellipsis."""
    s = str(value).replace("\n", " ")
    if max_len is not None and len(s) > max_len:
        s = s[: max_len - 1] + "\u2026"
    return s.replace("$", r"\$")


def pct(rate: float) -> str:
    """A flip rate as a percentage: 0.05 -> '5%', 0.125 -> '12.5%'."""
    return f"{rate * 100:.4g}%"


def class_colors(n: int) -> list[tuple]:
    """``n`` distinguishable colours (tab10, tab20, then an evenly sampled turbo map)."""
    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["turbo"](x) for x in np.linspace(0.05, 0.95, n)]


def strategy_colors(strategies: Sequence[str]) -> dict[str, tuple]:
    """One fixed colour per strategy, the same in every figure; ``"none"`` is grey."""
    others = [s for s in strategies if s != "none"]
    palette = class_colors(max(len(others), 1))
    colors = {s: palette[i] for i, s in enumerate(others)}
    colors["none"] = (0.45, 0.45, 0.45, 1.0)
    return colors


def _legend_cols(labels: Sequence[str], fontsize: float, width_in: float) -> int:
    """How many legend columns fit across ``width_in`` inches (rough text-width estimate)."""
    widest = max((len(lab) for lab in labels), default=1)
    entry_pt = widest * fontsize * 0.56 + 3.2 * fontsize + 8
    return max(1, min(len(labels), int(width_in * 72 * 0.95 // entry_pt)))


def _style(ax) -> None:
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.spines["left"].set_color("#9aa3af")
    ax.spines["bottom"].set_color("#9aa3af")
    ax.tick_params(colors=INK, labelsize=9)
    ax.grid(True, color="#e6e8ec", linewidth=0.8)
    ax.set_axisbelow(True)


def figure_to_image(fig: Figure, alt: str, caption: str | None = None, *, dpi: int = DPI) -> Image:
    """Render ``fig`` to PNG with the Agg canvas and wrap it as an :class:`Image`.

    The image is displayed at the figure's size (96 CSS pixels per inch) and
    rendered at ``dpi`` so it stays sharp on high-density screens.
    """
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    # bbox_inches="tight" grows the canvas to every label, so nothing is clipped (a long
    # y-label of a heatmap, a legend outside the axes); the display width follows the PNG.
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white", metadata={"Software": None},
                bbox_inches="tight", pad_inches=0.06)
    png = buf.getvalue()
    width_px = int.from_bytes(png[16:20], "big")  # IHDR width
    width = int(round(width_px / dpi * CSS_DPI))
    return Image(png, alt=alt, caption=caption, width=width)


# -- decision boundaries ----------------------------------------------------
def boundary_figure(view, *, max_points: int = 4000) -> Figure:
    """Clean and poisoned decision regions side by side, training rows on top.

    ``view`` is a :class:`flipguard.assess.BoundaryView`.  Regions are filled
    contours of each class's indicator on the grid (so no spurious bands
    appear between non-adjacent label codes).  Points are coloured by the
    label each model was trained on: true labels on the left, poisoned labels
    on the right; flipped rows are black-edged crosses in both panels.  When
    there are more than ``max_points`` unflipped rows, an evenly spaced
    subset of them is drawn (every flipped row is always drawn).
    """
    gx, gy = np.asarray(view.grid_x, dtype=float), np.asarray(view.grid_y, dtype=float)
    grids = [np.asarray(view.clean_grid), np.asarray(view.poisoned_grid)]
    shape = (gy.shape[0], gx.shape[0]) if gx.ndim == 1 else gx.shape
    for name, g in zip(("clean_grid", "poisoned_grid"), grids):
        if g.shape != shape:
            raise InvalidParameterError(
                f"BoundaryView.{name} must have shape (len(grid_y), len(grid_x)) = {shape}; got {g.shape}.")
    points = np.asarray(view.points, dtype=float)
    y_true, y_pois = np.asarray(view.y_true), np.asarray(view.y_poisoned)
    flip = y_true != y_pois
    codes = [int(a.max()) for a in (y_true, y_pois, *grids) if a.size]
    k = max([len(view.class_names), *(c + 1 for c in codes)])
    colors = np.array(class_colors(k))
    names = list(view.class_names) + [str(i) for i in range(len(view.class_names), k)]

    calm = np.flatnonzero(~flip)
    if len(calm) > max_points:
        calm = calm[np.linspace(0, len(calm) - 1, max_points).astype(int)]
    flipped = np.flatnonzero(flip)
    n_drawn = len(calm) + len(flipped)
    size = float(np.clip(4000.0 / max(n_drawn, 1), 5.0, 36.0))

    # The requested rate and the training rows actually flipped (a targeted attack's rate
    # applies to one class, so "at 20%" may flip 7% of the rows).
    n_rows = view.n_rows or len(y_true)
    n_flipped = view.n_flipped if view.n_flipped is not None else int(flip.sum())
    flipped_note = (f"no training row flipped (0 of {n_rows:,})" if n_flipped == 0 else
                    f"{n_flipped:,} of {n_rows:,} training rows flipped")
    fig = Figure(figsize=(10.5, 5.5), layout="constrained")
    axes = fig.subplots(1, 2, sharex=True, sharey=True)
    panels = [
        (axes[0], grids[0], y_true,
         f"Clean model (true labels)\nclean-holdout accuracy {view.clean_holdout_accuracy:.3f}"),
        (axes[1], grids[1], y_pois,
         f"Poisoned model ({text(view.strategy, 24)} at {pct(view.rate)})\n{flipped_note}\n"
         f"clean-holdout accuracy {view.poisoned_holdout_accuracy:.3f}"),
    ]
    for ax, grid, labels, title in panels:
        for c in np.unique(grid):
            ind = (grid == c).astype(float)
            ax.contourf(gx, gy, ind, levels=[0.5, 1.5], colors=[colors[int(c)]], alpha=0.22)
            ax.contour(gx, gy, ind, levels=[0.5], colors=[INK], linewidths=0.7, alpha=0.6)
        if len(calm):
            ax.scatter(points[calm, 0], points[calm, 1], c=colors[labels[calm]], s=size,
                       marker="o", edgecolors="white", linewidths=0.3, zorder=3)
        if len(flipped):
            ax.scatter(points[flipped, 0], points[flipped, 1], c=colors[labels[flipped]],
                       s=size * 2.6 + 12, marker="X", edgecolors="black", linewidths=0.8, zorder=4)
        ax.set_title(title, fontsize=10.5, color=INK)
        ax.set_xlim(float(np.min(gx)), float(np.max(gx)))
        ax.set_ylim(float(np.min(gy)), float(np.max(gy)))
        ax.set_xlabel(text(view.axis_names[0], 40) if len(view.axis_names) > 0 else "", fontsize=9.5)
        _style(ax)
        ax.grid(False)
    axes[0].set_ylabel(text(view.axis_names[1], 40) if len(view.axis_names) > 1 else "", fontsize=9.5)

    shown = min(k, 20)
    handles = [Line2D([], [], marker="o", linestyle="", markerfacecolor=colors[i], markeredgecolor="white",
                      markersize=8, label=text(names[i], 24)) for i in range(shown)]
    if k > shown:
        handles.append(Line2D([], [], linestyle="", label=f"\u2026 {k - shown} more classes"))
    handles.append(Line2D([], [], marker="X", linestyle="", markerfacecolor="#cccccc",
                          markeredgecolor="black", markersize=9,
                          label=f"flipped row ({len(flipped)})"))
    fig.legend(handles=handles, loc="outside lower center", frameon=False, fontsize=9,
               ncol=_legend_cols([h.get_label() for h in handles], 9, fig.get_figwidth()))
    return fig


# -- metric curves ----------------------------------------------------------
def _band(ax, x, mean, std, color, **kw):
    x, mean, std = map(np.asarray, (x, mean, std))
    ax.plot(x, mean, color=color, **kw)
    if np.any(std > 0):
        ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.13, linewidth=0)


def _series(rows, strategy, baseline):
    """Rows of one strategy sorted by rate, with the no-attack baseline as the rate-0 point."""
    pts = sorted((r for r in rows if r["strategy"] == strategy), key=lambda r: r["rate"])
    if baseline is not None and (not pts or pts[0]["rate"] > 0):
        pts = [baseline, *pts]
    return pts


def _flipped_share(row: Mapping) -> float:
    """The share of rows a setting actually flipped (mean over seeds); the requested rate if unknown."""
    share = row.get("flip_rate", {}).get("mean")
    if share is None or not np.isfinite(share):
        return float(row["rate"])
    return float(share)


def metric_curves_figure(rows: Sequence[Mapping], model: str,
                         colors: Mapping[str, tuple]) -> Figure:
    """Accuracy and F1 of the poisoned model against the share of rows flipped, one line per strategy.

    ``rows`` are :meth:`flipguard.assess.Assessment.summary` rows of one
    model.  The x axis is the share of rows each setting actually flipped
    (``flip_rate``, mean over seeds), not the requested rate: a targeted
    attack at 30 % that flips 11 % of the rows sits at 11 %.  Left:
    clean-holdout accuracy (solid) and poisoned-validation accuracy (dashed),
    mean with a +-1 std band over seeds.  Right: macro F1 on the clean
    holdout.  The no-attack baseline, when present, is the 0 % point of
    every line.
    """
    baseline = next((r for r in rows if r["strategy"] == "none"), None)
    strategies = [s for s in dict.fromkeys(r["strategy"] for r in rows) if s != "none"]
    fig = Figure(figsize=(10.5, 4.3), layout="constrained")
    ax_acc, ax_f1 = fig.subplots(1, 2)
    for s in strategies:
        pts = sorted(_series(rows, s, baseline), key=lambda p: (_flipped_share(p), p["rate"]))
        x = [_flipped_share(p) for p in pts]
        c = colors.get(s, INK)
        _band(ax_acc, x, [p["poisoned_holdout_accuracy"]["mean"] for p in pts],
              [p["poisoned_holdout_accuracy"]["std"] for p in pts], c, marker="o", markersize=4.5, lw=1.8)
        _band(ax_acc, x, [p["poisoned_validation_accuracy"]["mean"] for p in pts],
              [p["poisoned_validation_accuracy"]["std"] for p in pts], c, marker="s", markersize=3.5,
              markerfacecolor="white", lw=1.5, linestyle="--")
        _band(ax_f1, x, [p["poisoned_holdout_f1"]["mean"] for p in pts],
              [p["poisoned_holdout_f1"]["std"] for p in pts], c, marker="o", markersize=4.5, lw=1.8)
    if baseline is not None:
        ax_acc.axhline(baseline["clean_holdout_accuracy"]["mean"], color="#9aa3af", lw=1, ls=":")
        ax_f1.axhline(baseline["poisoned_holdout_f1"]["mean"], color="#9aa3af", lw=1, ls=":")
    for ax, ylabel, title in (
            (ax_acc, "accuracy", f"Accuracy of the poisoned model \u2014 {text(model, 30)}"),
            (ax_f1, "macro F1 on the clean holdout", f"Macro F1 on the clean holdout \u2014 {text(model, 30)}")):
        _style(ax)
        ax.set_title(title, fontsize=10.5, color=INK)
        ax.set_xlabel("share of rows actually flipped (mean over seeds)", fontsize=9.5)
        ax.set_ylabel(ylabel, fontsize=9.5)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: pct(v)))
        top = max((_flipped_share(r) for r in rows), default=0.0) or 0.1
        ax.set_xlim(-0.03 * top, 1.06 * top)  # always from 0 %, so a single rate reads naturally
    handles = [Line2D([], [], color=colors.get(s, INK), lw=2.2, label=text(s, 24)) for s in strategies]
    handles += [Line2D([], [], color=INK, lw=1.8, marker="o", markersize=4.5, label="clean holdout (the truth)"),
                Line2D([], [], color=INK, lw=1.5, ls="--", marker="s", markersize=3.5,
                       markerfacecolor="white", label="poisoned validation (what the victim sees)")]
    if baseline is not None:
        handles.append(Line2D([], [], color="#9aa3af", lw=1, ls=":", label="no attack"))
    fig.legend(handles=handles, loc="outside lower center", frameon=False, fontsize=9,
               ncol=_legend_cols([h.get_label() for h in handles], 9, fig.get_figwidth()))
    return fig


# -- illusion gap -----------------------------------------------------------
def illusion_gap_figure(rows: Sequence[Mapping], models: Sequence[str],
                        colors: Mapping[str, tuple]) -> Figure:
    """The illusion gap (validation minus clean-holdout accuracy) per strategy and rate.

    Grouped bars, one panel per model, error bars of +-1 std over seeds.
    Bars above the zero line mean the poisoned validation split flatters the
    model.  Bars are grouped by the requested rate.  Rows of the no-attack
    baseline, of rate 0 and of settings that flipped no row (``flip_rate``
    mean 0: their gap is the baseline's, not an attack's) are left out.
    """
    attacked = [r for r in rows if r["strategy"] != "none" and r["rate"] > 0 and _flipped_share(r) > 0]
    strategies = list(dict.fromkeys(r["strategy"] for r in attacked))
    rates = sorted({r["rate"] for r in attacked})
    n_models = max(len(models), 1)
    ncols = min(n_models, 3)
    nrows = -(-n_models // ncols)
    width_in = 10.5
    fig = Figure(figsize=(width_in, 3.9 * nrows + 0.7), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharey=True, squeeze=False)).ravel()
    n_s = max(len(strategies), 1)
    bar_w = 0.8 / n_s
    annotate = len(strategies) * len(rates) <= 24
    # A value label is ~0.45 in wide; on narrower bars it is turned upright so neighbours never overlap.
    bar_in = (width_in / ncols - 0.8) / max(len(rates) + 2 * max(0.0, (3 - len(rates)) / 2), 1) * bar_w
    upright = bar_in < 0.5
    by_key = {(r["strategy"], r["rate"], r["model"]): r for r in attacked}
    for ax, model in zip(axes, models):
        _style(ax)
        ax.grid(False, axis="x")
        for j, s in enumerate(strategies):
            xs, means, stds = [], [], []
            for i, rate in enumerate(rates):
                r = by_key.get((s, rate, model))
                if r is None:
                    continue
                xs.append(i - 0.4 + bar_w * (j + 0.5))
                means.append(r["illusion_gap"]["mean"])
                stds.append(r["illusion_gap"]["std"])
            if not xs:
                continue
            err = stds if any(v > 0 for v in stds) else None
            ax.bar(xs, means, width=bar_w * 0.92, color=colors.get(s, INK), yerr=err,
                   error_kw={"elinewidth": 0.9, "capsize": 2.5, "ecolor": INK}, zorder=3)
            if annotate:
                for x, m, sd in zip(xs, means, stds):
                    tip = m + sd if m >= 0 else m - sd
                    ax.annotate(f"{round(m, 3) + 0.0:+.3f}", (x, tip), xytext=(0, 3 if m >= 0 else -3),
                                textcoords="offset points", ha="center", rotation=90 if upright else 0,
                                va="bottom" if m >= 0 else "top", fontsize=7.5, color=INK)
        ax.axhline(0, color=INK, lw=1)
        ax.set_xticks(range(len(rates)), [pct(r) for r in rates])
        extra = max(0.0, (3 - len(rates)) / 2)  # few rates: keep the bars from getting very wide
        ax.set_xlim(-0.6 - extra, len(rates) - 0.4 + extra)
        ax.set_xlabel("requested flip rate (targeted: share of one class)", fontsize=9.5)
        ax.set_title(f"Illusion gap \u2014 {text(model, 30)}", fontsize=10.5, color=INK)
    for ax in axes[len(models):]:
        ax.set_visible(False)
    lo, hi = axes[0].get_ylim()
    span = max(hi - lo, 0.02)
    lo, hi = min(lo, -0.1 * span), max(hi, 0.1 * span)
    for ax in axes[:len(models)]:
        room = 0.3 if upright and annotate else 0.08  # upright labels need headroom
        ax.set_ylim(lo - (room if lo < 0 else 0.06) * span, hi + room * span)
        ax.axhspan(0, hi + room * span, color=BAD, alpha=0.045, zorder=0)
        ax.text(0.01, 0.98, "validation flatters the model \u2191", transform=ax.transAxes, ha="left",
                va="top", fontsize=8.5, color=BAD)
        ax.text(0.01, 0.02, "validation is pessimistic \u2193", transform=ax.transAxes, ha="left",
                va="bottom", fontsize=8.5, color=MUTED)
    for ax in axes[::ncols]:
        ax.set_ylabel("validation acc. \u2212 clean-holdout acc.", fontsize=9.5)
    handles = [Patch(color=colors.get(s, INK), label=text(s, 24)) for s in strategies]
    if handles:
        fig.legend(handles=handles, loc="outside lower center", frameon=False, fontsize=9,
                   ncol=_legend_cols([h.get_label() for h in handles], 9, fig.get_figwidth()))
    return fig


# -- confusion matrices -----------------------------------------------------
def confusion_figure(matrices: Sequence[Any], titles: Sequence[str], class_names: Sequence[str],
                     ylabels: Sequence[str] | None = None) -> Figure:
    """Confusion matrices side by side (rows: label in the split, columns: prediction).

    Cell colour is the row-normalised share (so a small class is as readable
    as a large one); the number in the cell is the count.  Counts are
    written when there are at most 15 classes.
    """
    mats = [np.asarray(m, dtype=float) for m in matrices]
    k = mats[0].shape[0] if mats else 0
    names = list(class_names) if len(class_names) == k else [str(i) for i in range(k)]
    n = max(len(mats), 1)
    max_name = max((len(str(c)) for c in names), default=1)
    rotate = k > 4 or max_name > 8
    name_in = min(max_name, 18) * 0.068 + 0.45          # tick labels and axis label, inches
    panel = float(np.clip(0.36 * k + 1.5, 2.4, 4.6))
    panel = min(panel, (10.5 - 1.0) / n - name_in)
    below = (name_in * 0.72 if rotate else 0.35) + 0.3  # x tick labels and axis label
    fig = Figure(figsize=(n * (panel + name_in) + 1.0, panel + below + 0.55), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(mats), squeeze=False)).ravel()
    show_counts = k <= 15
    fs = 9 if k <= 6 else 8 if k <= 10 else 6.5
    ticks = [text(c, 18) for c in names]
    im = None
    for idx, (ax, m, title) in enumerate(zip(axes, mats, titles)):
        rows = m.sum(axis=1, keepdims=True)
        share = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
        im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1, interpolation="nearest", aspect="equal")
        if show_counts:
            for i in range(k):
                for j in range(k):
                    ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", fontsize=fs,
                            color="white" if share[i, j] > 0.55 else INK)
        ax.set_xticks(range(k), ticks, fontsize=8.5, rotation=45 if rotate else 0,
                      ha="right" if rotate else "center", rotation_mode="anchor")
        ax.set_yticks(range(k), ticks, fontsize=8.5)
        ax.set_xlabel("predicted", fontsize=9.5)
        ax.set_ylabel(ylabels[idx] if ylabels else "label", fontsize=9.5)
        ax.set_title(title, fontsize=10, color=INK)
        ax.tick_params(length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
    if im is not None:
        cb = fig.colorbar(im, ax=list(axes), shrink=0.8, pad=0.02)
        cb.set_label("share of the row", fontsize=8.5)
        cb.ax.tick_params(labelsize=8)
        cb.outline.set_visible(False)
    return fig
