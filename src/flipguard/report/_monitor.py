"""Report sections of a label monitor and of prequential (test-then-train) runs: time series, alarms marked."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure

from ..monitor._monitor import short_value as _short
from ._figures import BAD, INK, MUTED, _style, class_colors, figure_to_image, text
from ._html import Section, Table

__all__ = ["monitor_figure", "monitor_sections", "prequential_figure", "prequential_sections"]


def monitor_figure(history, alarms) -> Figure:
    """CUSUM score (1 = threshold) and suspects vs the clean expectation per batch; alarms in red."""
    idx = np.array([h["index"] for h in history], dtype=float)
    score = np.array([h["score"] for h in history], dtype=float)
    sus = np.array([h["suspects"] for h in history], dtype=float)
    exp = np.array([h["expected_suspects"] for h in history], dtype=float)
    drift = np.array([bool(h["feature_drift"]) for h in history])
    fig = Figure(figsize=(8.0, 4.6))
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    ax1.plot(idx, score, color=INK, lw=1.3, label="CUSUM score (max over charts)")
    ax1.axhline(1.0, color=BAD, ls="--", lw=1, label="alarm threshold")
    ax2.plot(idx, sus, color=class_colors(2)[0], lw=1.2, label="suspects")
    ax2.plot(idx, exp, color=MUTED, lw=1, ls=":", label="clean upper bound")
    for k, a in enumerate(alarms):
        for ax in (ax1, ax2):
            ax.axvline(a["index"], color=BAD, lw=0.8, alpha=0.6, label="alarm" if (k == 0 and ax is ax1) else None)
    if len(alarms):
        ax1.axvspan(alarms[0]["start_index"] - 0.5, alarms[0]["index"] + 0.5, color=BAD, alpha=0.08,
                    label="first alarm: estimated start to detection")
    if drift.any():
        ax2.scatter(idx[drift], sus[drift], marker="x", color="#b54708", zorder=3, label="feature drift")
    ax1.set_ylabel("score", color=INK)
    ax2.set_ylabel("rows", color=INK)
    ax2.set_xlabel("batch", color=INK)
    for ax in (ax1, ax2):
        _style(ax)
        ax.legend(fontsize=8, frameon=False, loc="upper left")
    fig.tight_layout()
    return fig


def monitor_sections(mon) -> list[Section]:
    """Sections for a fitted :class:`~flipguard.monitor.LabelMonitor`: summary, time series, alarms."""
    hist, alarms = mon.history_, mon.alarms_
    summary = Table(["", ""], [
        ["batches", len(hist)], ["rows in batches", sum(h["rows"] for h in hist)],
        ["rows judged", sum(h.get("judged", h["rows"]) for h in hist)],  # states before 'judged': rows were judged
        ["rows with a label outside the reference's classes (not judged)",
         sum(h.get("unknown_labels", 0) for h in hist)],
        ["rows without a label (not judged)", sum(h.get("missing_labels", 0) for h in hist)],
        ["alarms", len(alarms)],
        ["batches whose class shares moved (label shift: a finding)", sum(bool(h.get("label_shift")) for h in hist)],
        ["batches with labels no chart can see (inconclusive)", sum(bool(h.get("blind_pairs")) for h in hist)],
        ["batches with feature drift", sum(bool(h["feature_drift"]) for h in hist)],
        ["charts (class pairs + all rows)", int(mon.active_.sum())],
        ["threshold (log of charts x expected run length)", f"{mon.threshold_:.2f}"],
        ["expected clean batches between false alarms", f"{mon.expected_run_length:g}"],
    ], align="lr")
    sections = [Section("Summary", paragraphs=[
        "Each batch's labels are compared with a reference model and the reference's nearest neighbours. "
        "Suspects are counted per class pair and accumulated by CUSUM charts whose clean rates were "
        "calibrated out of fold on the reference; the threshold bounds false alarms by one per "
        f"{mon.expected_run_length:g} clean batches."], tables=[summary])]
    flagged = [h for h in hist if h.get("unknown_labels") or h.get("missing_labels")
               or h.get("status") in ("unknown_labels", "inconclusive")]
    if flagged:
        rows = [[h["batch"], h["status"], h["rows"], h.get("judged", h["rows"]), h.get("unknown_labels", "?"),
                 h.get("missing_labels", "?"),
                 ", ".join(f"{_short(u['value'])} x{u['rows']}"
                           + (f" (= {_short(u['looks_like'])})" if u.get("looks_like") is not None else "")
                           for u in h.get("unknown_values", [])) or "-"] for h in flagged]
        sections.append(Section("Labels not judged", paragraphs=[
            "Rows whose label is not one of the reference's classes, or is missing, cannot be judged, so "
            "flips hidden there (a label relabelled to a new spelling, blanked or recoded) are invisible to "
            "the charts. Each batch below is a finding: check its labels. '(= x)' marks a value equal to "
            "the class x but for case or spaces."], tables=[Table(
                ["batch", "status", "rows", "judged", "unknown labels", "missing labels",
                 "unknown values (rows)"], rows, align="llrrrrl")]))
    shifted = [h for h in hist if h.get("label_shift") or h.get("blind_pairs")]
    if shifted:
        rows = [[h["batch"], h["status"], h["rows"],
                 f"{h['label_shift_pvalue']:.2g}" if h.get("label_shift_pvalue") is not None else "-",
                 ", ".join(f"{text(a)} -> {text(b)}" for a, b in h.get("blind_pairs") or []) or "-"]
                for h in shifted]
        sections.append(Section("Class shares and blind pairs", paragraphs=[
            "A batch whose class shares differ from the reference's beyond the monitor's level (an exact test "
            "per class) is a finding even when no chart alarms: relabelling every row of a rare class moves "
            "shares, not suspects. A blind pair is a class pair whose chart is switched off (its clean rate "
            "could not be calibrated on the reference) while the batch has rows with that label: flips into "
            "it cannot be seen, so the batch is inconclusive."], tables=[Table(
                ["batch", "status", "rows", "class-share p-value", "blind pairs (true -> labelled)"], rows,
                align="llrrl")]))
    if hist:
        sections.append(Section("Time series", images=[figure_to_image(
            monitor_figure(hist, alarms), alt="CUSUM score and suspect counts per batch with alarms marked",
            caption="Top: largest CUSUM statistic divided by the threshold. Bottom: suspects per batch and "
                    "the count expected on a clean batch (upper bound).")]))
    if alarms:
        rows = [[a["batch"], text(a["pair"][0]), text(a["pair"][1]), a["start_batch"], a.get("cause") or "-"]
                for a in alarms]
        sections.append(Section("Alarms", tables=[Table(
            ["batch", "rows that look like", "labelled as", "estimated start", "cause"], rows, align="lllll")]))
    return sections


def prequential_figure(runs: Mapping, alarm: int | None = None) -> Figure:
    """True-label accuracy of each run and the attacked run's illusion gap over batches."""
    fig = Figure(figsize=(8.0, 4.6))
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    colors = class_colors(max(len(runs), 1))
    start = None
    for (name, r), c in zip(runs.items(), colors):
        x = np.arange(len(r.accuracy_true))
        ax1.plot(x, r.accuracy_true, color=c, lw=1.1, label=f"{name}: accuracy on true labels")
        if r.attack_start is not None:
            start = r.attack_start
            if name != "guarded":
                ax2.plot(x, r.illusion_gap, color=c, lw=1.1, label=f"{name}: stream-label minus true-label accuracy")
    for ax in (ax1, ax2):
        if start is not None:
            ax.axvline(start, color=MUTED, ls="--", lw=1, label="attack starts" if ax is ax1 else None)
        if alarm is not None:
            ax.axvline(alarm, color=BAD, lw=1.2, label="first alarm" if ax is ax1 else None)
        _style(ax)
        ax.legend(fontsize=8, frameon=False, loc="lower left")
    ax1.set_ylabel("accuracy", color=INK)
    ax2.set_ylabel("illusion gap", color=INK)
    ax2.set_xlabel("batch (test, then train)", color=INK)
    fig.tight_layout()
    return fig


def prequential_sections(runs: Mapping) -> list[Section]:
    """Sections for :func:`~flipguard.monitor.compare_prequential` results."""
    guarded = runs.get("guarded")
    alarm = guarded.alarms[0] if guarded is not None and guarded.alarms else None
    start = next((r.attack_start for r in runs.values() if r.attack_start is not None), None)
    rows = []
    for name, r in runs.items():
        before = r.mean_accuracy(1, start) if start else r.mean_accuracy(1)
        after = r.mean_accuracy(start) if start else float("nan")
        rows.append([name, f"{before:.3f}", f"{after:.3f}", int(r.flipped.sum()), int(r.quarantined.sum())])
    return [Section("Online learning under attack", paragraphs=[
        "Prequential evaluation: every batch is predicted before the model learns it. The gap between "
        "accuracy on the stream's own (possibly flipped) labels and on the true labels is the streaming "
        "illusion gap."], images=[figure_to_image(prequential_figure(runs, alarm),
                                                  alt="prequential accuracy and illusion gap per batch")],
        tables=[Table(["run", "accuracy before attack", "accuracy during attack", "flipped rows",
                       "quarantined rows"], rows)])]
