"""The assessment report states its numbers truthfully: requested rate and share of rows
actually flipped, settings that flipped nothing, missing values, spreads of zero."""

from __future__ import annotations

import html as htmllib
import json
import re

import numpy as np
import pytest

from flipguard.report import assessment_sections, write_assessment_report


def _text(page: str) -> str:
    """The report's visible text: images, styles and tags removed, entities decoded."""
    page = re.sub(r"<style.*?</style>", "", page, flags=re.S)
    page = re.sub(r'src="data:[^"]*"', "", page)
    return htmllib.unescape(re.sub(r"<[^>]+>", " ", page))


def _cells(page: str) -> list[str]:
    return [htmllib.unescape(re.sub(r"<[^>]+>", "", c)).strip()
            for c in re.findall(r"<td[^>]*>(.*?)</td>", page, flags=re.S)]


@pytest.fixture(scope="module")
def iris():
    from sklearn.datasets import load_iris

    d = load_iris()
    return d.data, d.target


@pytest.fixture(scope="module")
def mixed(iris, tmp_path_factory):
    """Iris, 2 seeds: a rate that flips no row (0.1% of 112 rows) next to a real one, with a
    targeted attack (its rate applies to one class) and detection (AUROC undefined without flips)."""
    from flipguard.assess import assess

    a = assess(iris, strategies=["random", "targeted", "boundary"], rates=[0.001, 0.3], seeds=2,
               models=["logreg"], detect=True, views=[("targeted", 0.3, "logreg"), ("random", 0.001, "logreg")],
               n_jobs=1, verbose=False)
    path = write_assessment_report(a, tmp_path_factory.mktemp("mixed") / "report.html")
    return a, path, path.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def idle(iris, tmp_path_factory):
    """Only a rate that flips no row at all."""
    from flipguard.assess import assess

    a = assess(iris, strategies=["random"], rates=[0.001], seeds=2, models=["logreg"], detect=True,
               n_jobs=1, verbose=False)
    path = write_assessment_report(a, tmp_path_factory.mktemp("idle") / "report.html")
    return a, path, path.read_text(encoding="utf-8")


# -- 1. requested rate and actual share ------------------------------------------------------
def test_targeted_settings_state_the_rate_and_the_share_of_rows_flipped(mixed):
    a, _, page = mixed
    text = _text(page)
    row = a.find("targeted", 0.3)
    share = row["flip_rate"]["mean"]
    assert 0 < share < 0.2  # targeted at 30% of one class flips far fewer than 30% of the rows
    label = f"targeted at 30% ({share:.1%} of rows flipped)"
    assert label in text                                    # detection table, confusion caption, view caption
    assert f"{label} \u2014 logreg, first seed:" in text    # the boundary caption names the real share
    # Every place that names an attack setting also says what it flipped.
    for m in re.finditer(r"\b(random|targeted|boundary) at (\d+(?:\.\d+)?)%", text):
        before = text[max(0, m.start() - 300):m.start()]
        if re.search(r"[Ff]lipped no row[^:]*:(?:[^.]|\.\d)*$", before):  # listed as flipping nothing
            continue
        after = text[m.end():m.end() + 40]
        assert after.startswith(" (") and ("of rows flipped" in after or "flipped no row" in after), \
            (m.group(0), after)
    # The numbers table keeps the requested rate and the actual share side by side.
    cells = _cells(page)
    i = next(k for k in range(len(cells) - 4) if cells[k:k + 2] == ["targeted", "30%"])
    assert cells[i + 4] == f"{share:.1%}"


def test_headline_names_requested_rate_and_share(mixed):
    a, _, page = mixed
    text = _text(page)
    worst = max((r for r in a.summary() if r["strategy"] != "none" and r["flip_rate"]["mean"] > 0),
                key=lambda r: r["accuracy_drop"]["mean"])
    share = worst["flip_rate"]["mean"]
    rate = f"{worst['rate'] * 100:.4g}%"
    assert (f"Most damaging setting: {worst['strategy']} at {rate} ({share:.1%} of rows flipped), "
            f"where clean-holdout accuracy went from") in text


def test_boundary_panel_title_counts_the_rows_it_shows(mixed):
    from flipguard.report._figures import boundary_figure

    a, _, _ = mixed
    v = next(v for v in a.views if v.strategy == "targeted")
    fig = boundary_figure(v)
    title = fig.axes[1].get_title()
    assert "Poisoned model (targeted at 30%)" in title
    assert f"{v.n_flipped} of {v.n_rows} training rows flipped" in title
    assert "30% flipped" not in title


def test_metrics_figure_plots_the_share_actually_flipped(mixed):
    from flipguard.report._figures import metric_curves_figure

    a, _, _ = mixed
    rows = a.summary()
    fig = metric_curves_figure(rows, "logreg", {"random": "C0", "targeted": "C1", "boundary": "C2"})
    ax = fig.axes[0]
    assert ax.get_xlabel() == "share of rows actually flipped (mean over seeds)"
    targeted = [line for line in ax.get_lines() if line.get_color() == "C1"]
    assert targeted
    expected = sorted([0.0] + [r["flip_rate"]["mean"] for r in rows if r["strategy"] == "targeted"])
    for line in targeted:
        np.testing.assert_allclose(sorted(line.get_xdata()), expected)
    assert max(line.get_xdata().max() for line in targeted) < 0.2  # not at the requested 30%


def test_gap_figure_is_labelled_as_the_requested_rate_and_skips_settings_that_flipped_nothing(mixed):
    from flipguard.report._figures import illusion_gap_figure

    a, _, _ = mixed
    fig = illusion_gap_figure(a.summary(), ["logreg"], {"random": "C0", "targeted": "C1", "boundary": "C2"})
    ax = fig.axes[0]
    assert ax.get_xlabel().startswith("requested flip rate")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["30%"]  # 0.1% flipped no row: no bar


# -- 2. settings that flipped nothing, missing values -----------------------------------------
def test_a_setting_that_flipped_nothing_is_not_an_attack_effect(mixed):
    a, _, page = mixed
    text = _text(page)
    assert a.find("random", 0.001)["flip_rate"]["mean"] == 0  # the premise: 0.1% of 112 rows is no row
    assert "random at 0.1% (flipped no row)" in text
    assert re.search(r"These settings flipped no row and are left out of the comparisons: [^.]*random at 0\.1%",
                     text)
    headline = _text(re.search(r'<section class="card" id="headline">(.*?)</section>', page, re.S).group(1))
    assert "Most damaging setting" in headline and "Largest illusion gap" in headline
    assert "0.1%" not in headline.split("left out of the comparisons")[0]  # never the largest gap or drop
    # The view of a setting that flipped nothing says so instead of "0.1% flipped".
    assert "random at 0.1% (flipped no row) \u2014 logreg, first seed: the attack flipped none of the" in text


def test_only_settings_that_flipped_nothing(idle):
    a, _, page = idle
    text = _text(page)
    assert "No attack setting flipped a label, so there is no attack effect to report: " \
           "random at 0.1% (flipped no row)." in text
    for absent in ("Most damaging setting", "Largest illusion gap", "Largest accuracy drop"):
        assert absent not in text
    titles = [s.title for s in assessment_sections(a)]
    assert "Illusion gap" not in titles and "Metrics against flip rate" not in titles


def test_missing_values_show_a_dash_never_nan(idle):
    a, _, page = idle
    row = a.find("random", 0.001)
    assert np.isnan(row["detection"]["auroc"]["mean"])  # the premise: AUROC needs a flipped row
    cells = _cells(page)
    assert not [c for c in cells if re.search(r"\b(nan|NaN|None|null|inf)\b", c)]  # "none" is a strategy
    i = cells.index("random at 0.1% (flipped no row)")
    det = cells[i + 1:i + 8]  # precision, recall, F1, AUROC, avg. precision, precision@k, estimated/true
    assert det[3:6] == ["\u2013"] * 3, det
    assert not re.search(r"\bnan\b", _text(page))


# -- 3. spreads ----------------------------------------------------------------------------------
def test_terminal_and_report_show_a_zero_spread_alike(mixed):
    from flipguard.cli._assess import _pm

    assert _pm({"mean": 0.9724, "std": 0.0}, True, 2) == "0.972 \u00b1 0.000"
    assert _pm({"mean": 0.9724, "std": 0.0}, True, 1) == "0.972"
    assert _pm({"mean": 0.9724, "std": 0.01}, False, 2) == "0.972"      # the compact table: means only
    assert _pm({"mean": float("nan"), "std": float("nan")}, True, 2) == "-"
    a, _, page = mixed
    cells = _cells(page)
    zero = [r for r in a.summary() if r["poisoned_validation_accuracy"]["std"] == 0]
    assert zero  # the premise: some setting has the same validation accuracy on both seeds
    for r in zero:
        assert _pm(r["poisoned_validation_accuracy"], True, r["n_seeds"]) in cells


def test_render_summary_shows_the_spread_of_several_seeds(mixed):
    from flipguard.cli._assess import render_summary
    from flipguard.cli._common import console

    a, _, _ = mixed
    with console.capture() as cap:
        render_summary(a)
    out = cap.get()
    if console.width >= 120:
        assert re.search(r"\d\.\d{3} \u00b1 0\.000", out), out
    assert "0.1%" in out and " 0% " not in out  # a 0.001 rate is not shown as 0%


# -- in a real browser ----------------------------------------------------------------------------
_PROBE = r"""
(function () {
  var out = {nan: [], wrapped: [], gaps: 0};
  var cells = document.querySelectorAll("td");
  for (var i = 0; i < cells.length; i++) {
    var td = cells[i], t = td.innerText.trim();
    if (/\b(nan|NaN|None|null|undefined|inf)\b/.test(t)) out.nan.push(t);  // "none" is a strategy
    if (t.indexOf("\u00b1") < 0) continue;
    var range = document.createRange();
    range.selectNodeContents(td);
    var rects = range.getClientRects(), lo = 1e9, hi = -1e9;
    for (var j = 0; j < rects.length; j++) {
      if (rects[j].width === 0) continue;
      lo = Math.min(lo, rects[j].top); hi = Math.max(hi, rects[j].top);
    }
    if (td.querySelector(".pos")) out.gaps++;
    if (hi - lo > 4) out.wrapped.push(t);
  }
  document.body.setAttribute("data-probe", JSON.stringify(out));
})();
"""


def _probe(chromium, page: str, tmp_path, name: str, width: int = 1280) -> dict:
    from conftest import dom_after_script

    dom = dom_after_script(chromium, page, _PROBE, tmp_path, name, width)
    found = re.search(r'data-probe="([^"]*)"', dom)
    assert found, dom[-2000:]
    return json.loads(htmllib.unescape(found.group(1)))


@pytest.mark.browser
def test_in_chromium_no_cell_says_nan_and_no_value_wraps_from_its_spread(chromium, mixed, idle, tmp_path):
    _, _, page = mixed
    seen = _probe(chromium, page, tmp_path, "mixed")
    assert seen["gaps"] > 0  # highlighted illusion gaps are in the table
    assert seen["wrapped"] == [] and seen["nan"] == [], seen
    _, _, idle_page = idle
    seen = _probe(chromium, idle_page, tmp_path, "idle")
    assert seen["nan"] == [], seen
    # The probe does see wrapping: without the nowrap wrapper the highlighted gaps break at 1280 px.
    bare = page.replace('<span style="white-space: nowrap">', "<span>")
    assert bare != page
    assert _probe(chromium, bare, tmp_path, "bare")["wrapped"], "the probe found no wrapped cell in the control"
