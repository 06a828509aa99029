"""The report's calibration section: the map the model ships, and its reliability diagram
before and after calibration.

"Before" exists only on the validation fold the map was fitted on: the served model answers
with calibrated probabilities alone (a second, uncalibrated output beside them would be one
more number for a client to read by mistake), so the fold's bins before and after come from
the fit's record in the validation file (modules/calibration.py). The evaluation fold, which
the map never saw, is shown as served: its ECE and Brier score with intervals, and, for a
binary model, TFMA's calibration buckets (report.py's table and chart below this section).
"""

from __future__ import annotations

import html

from pipeline.results.calibration import calibration_sentence, served_calibration
from pipeline.results.svg import line_chart


def _points(bins: list[list[float]]) -> list[tuple[float, float]]:
    return [(confidence, observed) for confidence, observed, _ in bins]


def reliability_chart(record: dict, binary: bool) -> str:
    """The validation fold's reliability before and after the map, on one chart."""
    series = [(f"{when} calibration (ECE {record[f'ece_{when}']:.3f})",
               _points(record[f"reliability_{when}"])) for when in ("before", "after")]
    what = "positive class" if binary else "top class"
    return line_chart(f"Reliability on the validation fold ({record['examples']} examples)",
                      series, f"mean predicted probability of the {what}",
                      "observed rate" if binary else "observed accuracy", diagonal=True,
                      points=True)


def calibration_section(summary: dict, binary: bool) -> str:
    """The map in one sentence; the validation fold's reliability before and after it
    (none for a model trained before calibration was fitted)."""
    record = served_calibration(summary.get("training", {}))
    entry = summary.get("calibration") or {}
    text = (f"<p>Probabilities: {html.escape(calibration_sentence(entry))}. ECE: the mean "
            "gap between predicted probability and observed rate over 10 equal-width bins "
            "(95% bootstrap interval); Brier: the mean squared error of the probabilities "
            "(95% normal interval).</p>")
    if record is not None and "reliability_before" in record:
        text += f'<div class="charts">{reliability_chart(record, binary)}</div>'
    if binary:  # report.py's buckets follow
        text += "<p>The evaluation fold, as the model serves it (calibrated):</p>"
    return text
