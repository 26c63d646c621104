"""``flipguard demo``: the seed documents' sentiment scenario, end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..exceptions import InvalidParameterError
from ._app import app
from ._assess import output_files, render_summary, write_outputs
from ._common import JobsOpt, JsonOpt, check_output_folder, console, print_json

DEMO_STRATEGIES = ("random", "targeted", "cluster", "alfa")
DEMO_RATES = (0.1, 0.2, 0.3)
DEMO_MODELS = ("logreg", "hgb")


@app.command("demo")
def demo_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for report.html.")] = Path("flipguard-demo"),
    n_samples: Annotated[int, typer.Option("--n-samples", help="Number of synthetic reviews.", min=100)] = 2000,
    seeds: Annotated[int, typer.Option("--seeds", help="Repetitions per cell.", min=1)] = 3,
    n_jobs: JobsOpt = -1,
    json_out: JsonOpt = False,
) -> None:
    """Run a complete example on made-up data and write a report (under a minute on 2 cores).

    The data are 2,000 synthetic customer reviews, each reduced to two numbers,
    labelled positive or negative.  The demo flips 10%, 20% and 30% of the
    labels in four ways (at random, one class into the other, whole clusters,
    and ALFA, which picks the flips that hurt most), trains a logistic
    regression and a gradient-boosting model on each poisoned copy, and shows
    the gap between what a poisoned validation split says about the model and
    what clean data says.  Nothing is downloaded.

    Example:

        flipguard demo --out flipguard-demo/
    """
    from ..assess import assess
    from ..data import make_sentiment_reviews

    if out.exists() and not out.is_dir():  # said before the work, as assess says it
        raise InvalidParameterError(f"--out {out} is a file; demo writes a folder (report.html and "
                                    "assessment.json): give a folder name")
    check_output_folder(out, "--out", output_files(True))
    ds = make_sentiment_reviews(n_samples, random_state=0)
    result = assess(ds, strategies=DEMO_STRATEGIES, rates=DEMO_RATES, seeds=seeds, models=DEMO_MODELS,
                    views=[(s, 0.2, m) for s in DEMO_STRATEGIES for m in DEMO_MODELS],
                    n_jobs=n_jobs, verbose=False if json_out else None)
    written = write_outputs(result, out, report=True,
                            title="flipguard demo — label flipping on customer-review sentiment")
    verdict = illusion_verdict(result)
    if json_out:
        print_json({**result.to_dict(), "verdict": verdict, "outputs": written})
        return
    render_summary(result)
    console.print()
    console.print(verdict["text"])
    console.print(f"\nreport: {written['report']}")


def illusion_verdict(result) -> dict:
    """The seeds' point in numbers: coherent flips fool validation, random ones do not."""
    cluster = result.find("cluster", 0.2, "hgb")["illusion_gap"]["mean"]
    rnd = result.find("random", 0.2, "hgb")["illusion_gap"]["mean"]
    shown = cluster >= 0.05 and rnd <= 0.0
    text = (f"Gradient boosting at 20% flips: cluster attack illusion gap {cluster:+.3f} "
            f"(validation flatters the model), random flipping {rnd:+.3f}. ")
    text += ("A flexible model learns coherent flips as truth: poisoned validation data cannot reveal "
             "the attack; only clean data can." if shown else
             "The illusion did not show on this run.")
    return {"cluster_gap_hgb_20": cluster, "random_gap_hgb_20": rnd, "illusion_shown": shown, "text": text}
