"""The self-contained HTML report: content, escaping, self-containment, a real browser render."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from markupsafe import Markup

from flipguard.assess import Assessment, BoundaryView, RunResult
from flipguard.exceptions import InvalidParameterError
from flipguard.report import (
    Section,
    Table,
    assessment_sections,
    render_report,
    write_assessment_report,
    write_report,
)

EVIL = "<script>alert(1)</script>"


# -- a hand-made assessment ---------------------------------------------------
def _cr(acc: float, f1: float, cm, names) -> dict:
    """A classification_report-shaped dict with chosen numbers."""
    return {"accuracy": acc, "precision": f1, "recall": f1, "f1": f1,
            "per_class": {n: {"precision": f1, "recall": f1, "f1": f1, "support": 10} for n in names},
            "confusion_matrix": cm}


def _cm(k: int, correct: int, wrong: int) -> list[list[int]]:
    m = np.full((k, k), wrong // max(k - 1, 1), dtype=int)
    np.fill_diagonal(m, correct)
    return m.tolist()


def _numbers(strategy: str, rate: float, seed: int) -> tuple[float, float]:
    """(poisoned validation accuracy, poisoned clean-holdout accuracy) of a run."""
    if strategy == "none":
        return 0.95, 0.95
    if strategy == "boundary" and rate == max(RATES):
        return 0.97 + 0.01 * (seed % 2), 0.81 + 0.01 * (seed % 2)   # the largest illusion: +0.16
    return 0.9 - rate * 0.5 + 0.002 * seed, 0.93 - rate * 0.3 + 0.002 * seed


RATES = (0.1, 0.3)


def make_assessment(*, strategies=("random", "boundary"), rates=RATES, seeds=(0, 1), models=("logreg",),
                    classes=("neg", "pos"), views=1, baseline=True, source="reviews.csv") -> Assessment:
    k = len(classes)
    runs = []
    plan = ([("none", 0.0)] if baseline else []) + [(s, r) for s in strategies for r in rates]
    for model in models:
        for strategy, rate in plan:
            for seed in seeds:
                val, hold = _numbers(strategy, rate, seed)
                runs.append(RunResult(
                    strategy=strategy, rate=rate, seed=seed, model=model, n_train=300, n_validation=100,
                    n_holdout=134, n_flipped=int(round(400 * rate)), flip_rate=rate,
                    clean_model={"poisoned_validation": _cr(0.9, 0.9, _cm(k, 40, 8), classes),
                                 "clean_holdout": _cr(0.95, 0.95, _cm(k, 60, 6), classes)},
                    poisoned_model={"poisoned_validation": _cr(val, val - 0.01, _cm(k, 45, 5), classes),
                                    "clean_holdout": _cr(hold, hold - 0.02, _cm(k, 55, 12), classes)},
                    illusion_gap=val - hold, fit_seconds=0.01))
    rng = np.random.default_rng(0)
    vs = []
    for i in range(views):
        pts = rng.normal(size=(120, 2))
        y_true = (pts[:, 0] > 0).astype(int) % k
        y_pois = y_true.copy()
        y_pois[:15] = (y_pois[:15] + 1) % k
        gx, gy = np.linspace(-3, 3, 50), np.linspace(-2.5, 2.5, 40)
        GX, GY = np.meshgrid(gx, gy)
        clean = (GX > 0).astype(int) % k
        pois = (GX > 0.6 * GY).astype(int) % k
        if k > 2:  # paint more classes into the grid
            clean = (np.floor((GX + 3) / 6 * k).clip(0, k - 1)).astype(int)
            pois = (np.floor((GY + 2.5) / 5 * k).clip(0, k - 1)).astype(int)
        vs.append(BoundaryView(
            title=f"view {i}", strategy=strategies[0] if strategies else "none", rate=rates[0], model=models[0],
            axis_names=["PCA 1", "PCA 2"], class_names=list(classes), points=pts, y_true=y_true,
            y_poisoned=y_pois, grid_x=gx, grid_y=gy, clean_grid=clean, poisoned_grid=pois,
            clean_holdout_accuracy=0.95, poisoned_holdout_accuracy=0.88))
    return Assessment(
        dataset={"source": source, "n_samples": 534, "n_features": 7, "classes": list(classes),
                 "label": "sentiment"},
        config={"strategies": list(strategies), "rates": list(rates), "seeds": list(seeds)},
        runs=runs, views=vs, seconds=1.5)


def _titles(sections):
    return [s.title for s in sections]


def _imgs(html: str) -> list[str]:
    return re.findall(r'<img src="([^"]*)"', html)


# -- content -----------------------------------------------------------------
@pytest.fixture(scope="module")
def sections():
    return assessment_sections(make_assessment())


@pytest.fixture(scope="module")
def full_html(sections, tmp_path_factory):
    path = tmp_path_factory.mktemp("rep") / "out" / "report.html"
    written = write_report(path, sections, title="Impact of flips")
    assert written == path
    return path.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def evil_report(tmp_path_factory):
    """A report whose class names, source and title carry HTML."""
    a = make_assessment(classes=("benign", EVIL), source='"><img src=x onerror=alert(2)>')
    return write_assessment_report(a, tmp_path_factory.mktemp("evil") / "report.html", title=f"Title {EVIL}")


def test_sections_in_reading_order(sections):
    assert _titles(sections) == ["Headline", "Decision boundaries", "Metrics against flip rate", "Illusion gap",
                                 "Confusion matrices", "Numbers"]
    assert [s.anchor for s in sections] == ["headline", "boundaries", "metrics", "illusion-gap", "confusion",
                                            "numbers"]
    by = {s.title: s for s in sections}
    assert len(by["Decision boundaries"].images) == 1
    assert len(by["Metrics against flip rate"].images) == 1          # one per model
    assert len(by["Confusion matrices"].images) == 3                # none, random, boundary
    summary, details, config = by["Numbers"].tables
    assert len(summary.rows) == 5 and len(details.rows) == 10
    assert details.collapsible and config.collapsible and not summary.collapsible


def test_headline_names_the_largest_illusion(full_html):
    # boundary at 30%: validation 0.975 (mean of 0.97, 0.98), holdout 0.815, gap +0.160
    assert ("Under the boundary attack (30% of the training and validation labels flipped), "
            "validation said 0.975, the clean holdout says 0.815: an illusion of +0.160 (mean of 2 seeds).") in full_html
    assert 'class="finding alarm"' in full_html
    assert "Largest illusion gap</div>" in full_html  # far outside the noise band
    for fact in ("reviews.csv", "534", "sentiment", "2: neg, pos", "random, boundary, plus the no-attack baseline",
                 "10%, 30%", "train 300, poisoned validation 100, clean holdout 134 rows"):
        assert fact in full_html, fact


def test_numbers_table_has_mean_and_std(full_html):
    # random at 10%, seeds 0 and 1: validation 0.850, 0.852 -> mean 0.851, std 0.001
    assert "0.851 \u00b1 0.001" in full_html
    # the flattering gap is highlighted
    assert '<span class="pos">+0.160 \u00b1 0.000</span>' in full_html
    assert full_html.count("<details>") == 2
    assert "Every run (10)" in full_html


def test_report_is_self_contained(full_html):
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", full_html, re.I)
    assert "<script" not in full_html.lower()
    assert "<link" not in full_html.lower()
    assert "@import" not in full_html and "url(" not in full_html
    srcs = _imgs(full_html)
    assert len(srcs) == 6  # 1 boundary + 1 curves + 1 gap + 3 confusion
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    # every table-of-contents link points at a section of the page
    for target in re.findall(r'href="#([^"]+)"', full_html):
        assert f'id="{target}"' in full_html


def test_html_in_names_is_escaped(evil_report):
    html = evil_report.read_text()
    assert EVIL not in html
    assert "<script" not in html.lower()
    assert "onerror=alert(2)>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&#34;&gt;&lt;img src=x onerror=alert(2)&gt;" in html


# -- edge cases --------------------------------------------------------------
def test_single_rate_single_seed_no_baseline_no_views(tmp_path):
    a = make_assessment(rates=(0.3,), seeds=(7,), views=0, baseline=False)
    sections = assessment_sections(a)
    assert _titles(sections) == ["Headline", "Metrics against flip rate", "Illusion gap", "Confusion matrices",
                                 "Numbers"]
    html = render_report(sections, title="t")
    assert not re.search(r"\d \u00b1 \d", html)  # no spread anywhere
    assert "One seed (7), so no spread." in html
    assert "an illusion of +0.160." in html and "(mean of" not in html
    assert "no-attack baseline" not in html


def test_only_baseline(tmp_path):
    a = make_assessment(strategies=(), views=0)
    sections = assessment_sections(a)
    assert _titles(sections) == ["Headline", "Confusion matrices", "Numbers"]
    html = render_report(sections, title="t")
    assert "Only the clean baseline was run" in html
    assert "none (no-attack baseline only)" in html


def test_ten_classes_with_long_names_and_two_models(tmp_path):
    classes = tuple(f"digit number {i} with a rather long descriptive class name" for i in range(10))
    a = make_assessment(classes=classes, models=("logreg", "knn"), strategies=("random",), seeds=(0,), views=1)
    sections = assessment_sections(a)
    by = {s.title: s for s in sections}
    assert len(by["Metrics against flip rate"].images) == 2
    path = write_report(tmp_path / "digits.html", sections, title="digits")
    html = path.read_text()
    assert classes[9] in html  # full names in the headline, figures truncate
    assert "random at 30% (knn)" in html or "random at 30% (logreg)" in html


# -- the generic writer -------------------------------------------------------
def test_sections_compose_and_anchors_are_unique(sections, tmp_path):
    extra = [Section("Notes", paragraphs=["a < b"]), Section("Notes", html=Markup("<p><b>bold</b></p>")),
             Section("Audit", tables=[Table(["Row", "Score"], [[1, Markup("<i>0.9</i>")], ["<x>", 0.1]],
                                            caption="suspects")])]
    html = write_report(tmp_path / "r.html", [*sections, *extra],
                        title="combined", subtitle="sub").read_text()
    assert 'id="notes"' in html and 'id="notes-2"' in html and 'id="audit"' in html
    assert "a &lt; b" in html and "<b>bold</b>" in html
    assert "<i>0.9</i>" in html and "&lt;x&gt;" in html
    assert html.index('id="numbers"') < html.index('id="audit"')


def test_bad_arguments_raise_clear_errors(tmp_path):
    with pytest.raises(InvalidParameterError, match=r"sections\[1\] must be a flipguard.report.Section; got str"):
        write_report(tmp_path / "r.html", [Section("ok"), "not a section"], title="t")
    with pytest.raises(InvalidParameterError, match="is a directory; give a file name such as"):
        write_report(tmp_path, [Section("ok")], title="t")
    with pytest.raises(InvalidParameterError, match="assessment must be a flipguard.assess.Assessment; got dict"):
        assessment_sections({})
    empty = make_assessment()
    empty.runs = []
    with pytest.raises(InvalidParameterError, match="The assessment has no runs"):
        assessment_sections(empty)
    with pytest.raises(InvalidParameterError, match="Table align must have one of"):
        render_report([Section("x", tables=[Table(["a", "b"], [[1, 2]], align="l")])], title="t")


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "r.html"
    path.write_text("old")
    with pytest.raises(InvalidParameterError):
        write_report(path, [Section("ok"), 3], title="t")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]
    write_report(path, [Section("ok")], title="new")
    assert "<title>new</title>" in path.read_text()


def test_drawing_never_imports_pyplot():
    code = textwrap.dedent("""
        import sys
        sys.path.insert(0, %r)
        from test_report import make_assessment
        from flipguard.report import assessment_sections, render_report
        a = make_assessment(strategies=("random",), rates=(0.3,), seeds=(0,), views=1)
        render_report(assessment_sections(a), title="t")  # all four kinds of figure
        assert "matplotlib.pyplot" not in sys.modules, "pyplot was imported"
        print("ok")
    """) % str(__import__("pathlib").Path(__file__).parent)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


# -- a real assessment, a real browser ---------------------------------------
def test_real_assessment_report(tmp_path):
    from flipguard.assess import assess
    from flipguard.data import make_sentiment_reviews

    a = assess(make_sentiment_reviews(300, random_state=0), strategies=["random"], rates=[0.2], seeds=1,
               models=["logreg"], views="auto")
    html = write_assessment_report(a, tmp_path / "real.html").read_text()
    row = a.find("random", 0.2)
    assert f"{row['poisoned_holdout_accuracy']['mean']:.3f}" in html
    assert f"{row['illusion_gap']['mean']:+.3f}" in html
    assert 'id="boundaries"' in html and len(_imgs(html)) == 5


@pytest.mark.browser
def test_renders_in_headless_chromium(chromium, evil_report, tmp_path):
    from matplotlib.image import imread

    report = evil_report
    shot = tmp_path / "shot.png"
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2400", f"--screenshot={shot}",
           report.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.exists(), proc.stderr[-2000:]
    img = imread(shot)[..., :3]
    assert img.shape[:2] == (2400, 1280)
    pixels = (img.reshape(-1, 3) * 255).round().astype(np.uint8)
    n_colours = len(np.unique(pixels[::7], axis=0))
    non_white = float(np.mean(np.any(pixels < 245, axis=1)))
    assert n_colours > 200, n_colours          # text, header, figures: far from a blank page
    assert 0.15 < non_white < 0.95, non_white
    # the header band has the stylesheet's colour (#17263d), so the inline CSS was applied
    header = pixels.reshape(2400, 1280, 3)[20, 640].astype(int)
    assert np.abs(header - [0x17, 0x26, 0x3D]).max() <= 3, header


# -- issue 12: honest headline, every model's confusion matrices, sampled views ---------------
def _with(a: Assessment, strategy: str, val: float, hold: float, flip_rate: float | None = None) -> Assessment:
    for r in a.runs:
        if r.strategy == strategy:
            r.poisoned_model["poisoned_validation"]["accuracy"] = val
            r.poisoned_model["clean_holdout"]["accuracy"] = hold
            r.illusion_gap = val - hold
            if flip_rate is not None:
                r.flip_rate = flip_rate
    return a


def test_a_gap_within_noise_is_not_an_alarm(tmp_path):
    a = make_assessment(strategies=("random",), rates=(0.2,))
    _with(a, "random", 0.902, 0.900)
    html = write_assessment_report(a, tmp_path / "r.html").read_text()
    assert "Largest illusion gap (within noise)" in html and 'class="finding alarm"' not in html
    assert "No attack clearly made the poisoned validation split look better than the truth" in html
    assert "is within noise" in html and "-0.000" not in html


def test_headline_rate_is_the_share_of_rows_flipped(tmp_path):
    a = make_assessment(strategies=("targeted",), rates=(0.3,))
    _with(a, "targeted", 0.97, 0.80, flip_rate=0.12)
    html = write_assessment_report(a, tmp_path / "r.html").read_text()
    assert ("Under the targeted attack (rate 30%, which flipped 12.0% of the training and validation "
            "labels (the rate applies to the source class))") in html


def test_confusion_matrices_for_every_model_summed_over_seeds(tmp_path):
    a = make_assessment(models=("logreg", "hgb"), seeds=(0, 1, 2))
    sections = {s.title: s for s in assessment_sections(a)}
    conf = sections["Confusion matrices"]
    assert len(conf.images) == 2 * 3  # models x (baseline, random, boundary)
    assert all("3 seeds summed" in img.caption for img in conf.images)
    assert {img.alt.split(" model")[0].split()[-1] for img in conf.images} == {"logreg", "hgb"}


def test_boundary_view_standardises_before_pca_and_says_when_it_samples(tmp_path):
    import pyarrow as pa

    from flipguard.assess import assess
    from flipguard.data import from_table

    rng = np.random.default_rng(0)
    n = 6000
    y = rng.integers(0, 2, n)
    area = 1000 + 300 * rng.normal(size=n)        # a large unit, uninformative
    ratio = 0.1 + 0.02 * y + 0.01 * rng.normal(size=n)  # a small unit, informative
    other = y + rng.normal(size=n)
    ds = from_table(pa.table({"area": area, "ratio": ratio, "other": other, "y": y}), label="y")
    a = assess(ds, strategies=["random"], rates=[0.2], seeds=1, models=["logreg"], views="auto", n_jobs=1)
    v = a.views[0]
    assert v.projection == "the first two principal components of the standardised features"
    # Standardised: neither axis swamps the other (raw PCA would put ~all variance on "area").
    spread = np.std(v.points, axis=0)
    assert spread.max() / spread.min() < 3
    assert v.n_rows == 3375 > len(v.points) and v.n_flipped >= int(v.flip_mask.sum()) > 0
    sec = {s.title: s for s in assessment_sections(a)}["Decision boundaries"]
    assert re.search(r"a sample of [\d,]+ of the 3,375 training rows is drawn", sec.images[0].caption), \
        sec.images[0].caption


def test_png_canvas_includes_every_label():
    """bbox_inches='tight': a long y-label widens the picture instead of being cut off."""
    from flipguard.report._figures import confusion_figure, figure_to_image

    fig = confusion_figure([[[5, 1], [2, 7]]], ["t"], ["a", "b"], ylabels=["a very long label " * 3])
    img = figure_to_image(fig, alt="x")
    assert img.width > round(fig.get_figwidth() * 96)  # the label made the picture wider


# -- no clipped text at 1,400 px in a real browser ---------------------------------------------
_CHECK_JS = r"""
(function () {
  function describe(el) {
    var t = (el.textContent || "").trim().replace(/\s+/g, " ").slice(0, 50);
    return el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") + " '" + t + "'";
  }
  function scrolls(el) {  // inside a box the reader can scroll sideways: not clipped
    for (var p = el.parentElement; p; p = p.parentElement) {
      if (/(auto|scroll)/.test(getComputedStyle(p).overflowX) && p.scrollWidth > p.clientWidth + 1) return p;
    }
    return null;
  }
  var out = [], vw = document.documentElement.clientWidth;
  var all = document.body.getElementsByTagName("*");
  for (var i = 0; i < all.length; i++) {
    var el = all[i], cs = getComputedStyle(el), r = el.getBoundingClientRect();
    if (cs.display === "none" || cs.visibility === "hidden" || (r.width === 0 && r.height === 0)) continue;
    if (r.right > vw + 1) out.push("past the window edge: " + describe(el));
    if (/(hidden|clip)/.test(cs.overflowX) && el.scrollWidth > el.clientWidth + 1) out.push("clipped: " + describe(el));
    var s = scrolls(el);
    if (s && el.tagName === "TABLE") out.push("needs sideways scrolling: " + describe(el));
  }
  document.body.setAttribute("data-clipped", JSON.stringify(out));
  document.body.setAttribute("data-width", String(vw));
})();
"""


def clipped_elements(chromium, html_path, tmp_path, width: int = 1400) -> tuple[int, list[str]]:
    """Elements whose text is cut off or sticks out, per their bounding boxes in headless Chromium."""
    import html as htmllib
    import json

    from conftest import dom_after_script

    dom = dom_after_script(chromium, html_path.read_text(encoding="utf-8"), _CHECK_JS, tmp_path,
                           html_path.stem + ".probe", width)
    found = re.search(r'data-clipped="([^"]*)"', dom)
    vw = re.search(r'data-width="(\d+)"', dom)
    assert found and vw, dom[-2000:]
    return int(vw.group(1)), json.loads(htmllib.unescape(found.group(1)))


@pytest.mark.browser
@pytest.mark.slow
def test_no_clipped_text_at_1400px_demo_and_audit_reports(chromium, tmp_path):
    import pyarrow as pa
    from sklearn.datasets import load_breast_cancer

    from flipguard.assess import assess
    from flipguard.attacks import ClusterFlip

    # The demo's report (its own data, strategies and models, at a reduced size).
    from flipguard.cli._demo import DEMO_MODELS, DEMO_RATES, DEMO_STRATEGIES
    from flipguard.data import from_table, make_sentiment_reviews
    from flipguard.detection import audit_dataset
    from flipguard.report._audit import audit_sections

    a = assess(make_sentiment_reviews(300, random_state=0), strategies=DEMO_STRATEGIES, rates=DEMO_RATES,
               seeds=1, models=DEMO_MODELS, views=[(s, 0.2, m) for s in DEMO_STRATEGIES for m in DEMO_MODELS],
               n_jobs=1)
    demo = write_assessment_report(a, tmp_path / "demo.html", title="flipguard demo")
    page = demo.read_text(encoding="utf-8")
    assert ") (" not in page  # "attack (30% of the training labels flipped) (hgb)" read as two asides
    # An audit of all 30 breast-cancer features with long names (the widest suspects table).
    bc = load_breast_cancer()
    cols = {name: bc.data[:, j] for j, name in enumerate(bc.feature_names)}
    y = np.where(bc.target == 0, "malignant", "benign")
    _, y_bad = ClusterFlip(rate=0.15, random_state=0).fit_resample(bc.data, y)
    ds = from_table(pa.table({**cols, "patient_id": np.arange(1000, 1000 + len(y)), "diagnosis": y_bad}),
                    label="diagnosis", id="patient_id")
    audit = audit_dataset(ds, model="logreg", random_state=0)
    report = write_report(tmp_path / "audit.html", audit_sections(audit, ds), title="Label audit")
    for path in (demo, report):
        width, problems = clipped_elements(chromium, path, tmp_path)
        assert width > 1300, width
        assert problems == [], (path.name, problems[:10])
    # The probe does find overflow: the same audit report in a 700 px window has a table too wide.
    _, narrow = clipped_elements(chromium, report, tmp_path, width=700)
    assert any("suspects" in p or "row" in p for p in narrow), narrow[:5]


def test_an_audit_with_no_flips_draws_its_transition_matrix_white():
    """The transition heatmap's colour is a count of flips starting at 0: with none estimated
    it was drawn mid-red (matplotlib widened an all-zero range to -0.1..0.1), a clean table's
    report showing a sea of red under "estimated flips"."""
    import io

    from matplotlib.image import imread

    from flipguard.detection import LabelAuditor
    from flipguard.report._audit import _transitions

    rng = np.random.default_rng(0)
    centers = rng.normal(scale=6, size=(4, 5))
    y = rng.integers(0, 4, 400)
    X = centers[y] + rng.normal(size=(400, 5))
    audit = LabelAuditor(model="logreg", random_state=0).fit(X, y, embed=False).audit_
    t = np.asarray(audit.transitions)
    assert t.sum() - np.trace(t) == 0
    png = imread(io.BytesIO(_transitions(audit, ["a", "b", "c", "d"]).images[0].data))
    rgb = png[..., :3]
    red = (rgb[..., 0] > 0.8) & (rgb[..., 1] < 0.6) & (rgb[..., 2] < 0.6)
    assert red.mean() < 0.01, red.mean()
    flipped = y.copy()
    flipped[:40] = (y[:40] + 1) % 4
    audit = LabelAuditor(model="logreg", random_state=0).fit(X, flipped, embed=False).audit_
    png = imread(io.BytesIO(_transitions(audit, ["a", "b", "c", "d"]).images[0].data))
    rgb = png[..., :3]
    assert ((rgb[..., 0] > 0.5) & (rgb[..., 1] < 0.3) & (rgb[..., 2] < 0.3)).mean() > 0.01  # flips are red
