"""The report's forest plot of the slices, and the rates at the operating threshold with their
Wilson intervals in the summary and beside overall."""

from __future__ import annotations

import html
import re

import pytest

from pipeline.results.gate import EvaluationConfig
from pipeline.results.eval_results import Matrix, SliceResult
from pipeline.results.forest import forest_plot, forest_rows, gap
from pipeline.results.intervals import wilson
from pipeline.ops.summary import slice_summary


def result(auc: float, interval, tp, fp, tn, fn, gated=True, family=("sex",)) -> SliceResult:
    return SliceResult(metrics={"auc": auc, "example_count": float(tp + fp + tn + fn)},
                       intervals={"auc": interval}, positives=tp + fn, negatives=tn + fp,
                       gated=gated, family=family,
                       curve=[Matrix(0.4, tp, fp, tn, fn)])


@pytest.fixture
def slices() -> dict[str, SliceResult]:
    return {"overall": result(0.86, (0.80, 0.92), 45, 60, 340, 5, family=()),
            "sex = female": result(0.61, (0.52, 0.70), 18, 40, 160, 7),
            "anatomic site = torso": result(0.90, (0.84, 0.96), 27, 20, 180, 3,
                                            family=("anatom_site_general_challenge",)),
            "anatomic site = oral": result(0.40, (0.05, 0.85), 1, 1, 10, 1, gated=False,
                                           family=("anatom_site_general_challenge",)),
            # TFMA orders a cross's features by name, not as the config lists them.
            "anatomic site = torso & sex = male": result(
                0.7, (0.6, 0.8), 12, 10, 90, 3, family=("anatom_site_general_challenge", "sex"))}


def rows_of(slices, failed=frozenset({"sex = female"})):
    cfg = EvaluationConfig(slice_auc_threshold=0.65,
                           slice_auc_thresholds={"anatom_site_general_challenge": 0.7,
                                                 "sex*anatom_site_general_challenge": 0.5})
    return forest_rows(slices, 0.4, "AUC", lambda r: cfg.slice_auc_bound(r.family),
                       set(failed))


def test_each_gated_slice_gets_its_familys_bound_and_ungated_ones_none(slices):
    rows = {row.name: row for row in rows_of(slices)}
    assert rows["sex = female"].bound == 0.65
    assert rows["anatomic site = torso"].bound == 0.7
    assert rows["anatomic site = torso & sex = male"].bound == 0.5
    assert rows["anatomic site = oral"].bound is None and not rows["anatomic site = oral"].gated
    assert rows["overall"].bound is None and rows["overall"].gated
    assert rows["sex = female"].failed and not rows["anatomic site = torso"].failed


def test_sensitivity_and_specificity_carry_wilson_intervals_and_gaps_to_overall(slices):
    rows = {row.name: row for row in rows_of(slices)}
    female = rows["sex = female"].estimates
    assert female["sensitivity"].value == pytest.approx(18 / 25)
    assert female["sensitivity"].interval == pytest.approx(wilson(18 / 25, 25))
    assert female["specificity"].interval == pytest.approx(wilson(160 / 200, 200))
    assert gap(rows["sex = female"], rows["overall"], "sensitivity") == pytest.approx(
        18 / 25 - 45 / 50)
    assert gap(rows["overall"], rows["overall"], "AUC") == 0


def test_the_plot_draws_every_slice_its_interval_the_bounds_and_the_overall_line(slices):
    svg = forest_plot(rows_of(slices), "Slices")
    names = re.findall(r'text-anchor="end" fill="[^"]+"[^>]*>([^<]+)<', svg)
    assert [html.unescape(n) for n in names] == list(slices)
    assert svg.count('class="estimate"') == 5 * 3  # AUC, sensitivity, specificity
    assert svg.count('class="bound"') == 3  # the gated slices, not overall or the tiny one
    assert svg.count('stroke-dasharray') == 3  # the overall value in each panel
    assert 'fill="#b3261e">sex = female' in svg and 'fill="#aaa">anatomic site = oral' in svg
    # The AUC axis reaches down to the lowest interval (0.05) so no interval is clipped.
    assert ">0.00<" in svg


def test_a_slice_far_below_its_bound_lies_left_of_the_bound_tick(slices):
    svg = forest_plot(rows_of(slices), "Slices")
    female = svg.split("sex = female")[0].count("<text")  # labels come first
    ticks = re.findall(r'class="bound" x1="([\d.]+)"', svg)
    estimates = re.findall(r'class="estimate" x="([\d.]+)"', svg)
    assert female and float(estimates[1]) + 3 < float(ticks[0])


def test_the_summary_gives_each_slices_rates_with_intervals(slices):
    out = slice_summary(slices["sex = female"], 0.4)
    assert out["sensitivity_ci"] == [round(v, 4) for v in wilson(18 / 25, 25)]
    assert out["specificity_ci"] == [round(v, 4) for v in wilson(0.8, 200)]
