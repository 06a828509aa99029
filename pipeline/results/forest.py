"""The report's first picture, a forest plot of the slices: each slice's AUC with its 95%
interval against the bound it must reach, and its sensitivity and specificity at the
operating threshold with Wilson intervals, beside the overall value. The slice that is low,
how sure that is and where its bound sits show at a glance; the table below has the numbers.
"""

from __future__ import annotations

import dataclasses
import html
import math

from pipeline.results.eval_results import SliceResult, rate_intervals

Interval = tuple[float, float]
LABEL_WIDTH, PANEL_WIDTH, ROW, TOP = 300, 230, 17, 44
GATED, FAILED, UNGATED, BOUND = "#1f77b4", "#b3261e", "#aaa", "#b3261e"


@dataclasses.dataclass(frozen=True)
class Estimate:
    value: float | None
    interval: Interval | None = None


@dataclasses.dataclass(frozen=True)
class ForestRow:
    name: str
    estimates: dict[str, Estimate]  # by panel title
    gated: bool = True
    failed: bool = False
    bound: float | None = None  # the AUC the slice must reach (gated slices only)


def forest_rows(slices: dict[str, SliceResult], threshold: float | None, auc_title: str,
                bound_of, failed: set[str]) -> list[ForestRow]:
    """A row per slice, overall first; `bound_of(result)` is the AUC bound of a gated slice
    (None where none applies), `failed` the slices a check failed on."""
    rows = []
    for name, result in slices.items():
        estimates = {auc_title: Estimate(result.metrics.get("auc"),
                                         result.intervals.get("auc"))}
        matrix = result.at(threshold) if threshold is not None else None
        if matrix is not None:
            intervals = rate_intervals(matrix)
            for rate in ("sensitivity", "specificity"):
                estimates[rate] = Estimate(getattr(matrix, rate), intervals.get(rate))
        overall = name == "overall"
        gated = overall or result.gated
        rows.append(ForestRow(name, estimates, gated, name in failed,
                              bound_of(result) if gated and not overall else None))
    return rows


def gap(row: ForestRow, overall: ForestRow, panel: str) -> float | None:
    """How far a slice's estimate lies from the overall one (negative: below)."""
    mine, all_ = row.estimates.get(panel), overall.estimates.get(panel)
    if mine is None or all_ is None or mine.value is None or all_.value is None:
        return None
    return mine.value - all_.value


def _colour(row: ForestRow) -> str:
    return FAILED if row.failed else GATED if row.gated else UNGATED


def _domain(rows: list[ForestRow], panel: str, bounds: bool) -> tuple[float, float]:
    """From a tenth below the lowest interval, estimate or (with `bounds`) bound, to 1."""
    lows = [1.0]
    for row in rows:
        estimate = row.estimates.get(panel)
        if estimate is not None and estimate.value is not None:
            lows.append(estimate.interval[0] if estimate.interval else estimate.value)
        if bounds and row.bound is not None:
            lows.append(row.bound)
    low = max(0.0, math.floor(min(lows) * 10 - 1e-9) / 10)
    return (low, 1.0) if low < 1.0 else (0.9, 1.0)


def forest_plot(rows: list[ForestRow], caption: str) -> str:
    """Panels side by side sharing the slice labels; a dashed line at the overall value,
    a red tick at each gated slice's bound, ungated slices grey, failed ones red."""
    panels = list(dict.fromkeys(p for row in rows for p in row.estimates))
    width = LABEL_WIDTH + PANEL_WIDTH * len(panels)
    height = TOP + ROW * len(rows) + 14
    parts = [f'<svg class="forest" width="{width}" height="{height}" role="img" '
             f'aria-label="{html.escape(caption)}">']
    for i, row in enumerate(rows):
        y = TOP + ROW * i + ROW / 2
        colour = _colour(row)
        weight = ' font-weight="bold"' if i == 0 else ""
        parts.append(f'<text x="{LABEL_WIDTH - 8}" y="{y + 4:.1f}" class="tick" '
                     f'text-anchor="end" fill="{colour}"{weight}>{html.escape(row.name)}</text>')
    for k, panel in enumerate(panels):
        parts += _panel(rows, panel, LABEL_WIDTH + PANEL_WIDTH * k, first=k == 0)
    parts.append("</svg>")
    return (f'<figure class="forest"><figcaption>{html.escape(caption)}</figcaption>'
            f'{"".join(parts)}</figure>')


def _panel(rows: list[ForestRow], panel: str, left: float, first: bool) -> list[str]:
    low, high = _domain(rows, panel, bounds=first)
    inner = PANEL_WIDTH - 50
    x = lambda v: left + 20 + (min(max(v, low), high) - low) / (high - low) * inner  # noqa: E731
    bottom = TOP + ROW * len(rows)
    parts = [f'<text x="{left + 20 + inner / 2}" y="14" class="axis">{html.escape(panel)}</text>',
             f'<rect x="{left + 20}" y="{TOP - 4}" width="{inner}" height="{bottom - TOP + 8}" '
             'fill="#fafafa" stroke="#ddd"/>']
    for tick in (low, (low + high) / 2, high):
        parts.append(f'<text x="{x(tick):.1f}" y="{TOP - 10}" class="tick" '
                     f'text-anchor="middle">{tick:.2f}</text>')
    overall = rows[0].estimates.get(panel) if rows else None
    if overall is not None and overall.value is not None:
        parts.append(f'<line x1="{x(overall.value):.1f}" y1="{TOP - 4}" '
                     f'x2="{x(overall.value):.1f}" y2="{bottom + 4}" stroke="#555" '
                     'stroke-dasharray="4 3"/>')
    for i, row in enumerate(rows):
        y = TOP + ROW * i + ROW / 2
        colour = _colour(row)
        estimate = row.estimates.get(panel)
        if first and row.bound is not None:
            parts.append(f'<line class="bound" x1="{x(row.bound):.1f}" y1="{y - 6:.1f}" '
                         f'x2="{x(row.bound):.1f}" y2="{y + 6:.1f}" stroke="{BOUND}" '
                         'stroke-width="2"/>')
        if estimate is None or estimate.value is None:
            continue
        if estimate.interval:
            parts.append(f'<line x1="{x(estimate.interval[0]):.1f}" y1="{y:.1f}" '
                         f'x2="{x(estimate.interval[1]):.1f}" y2="{y:.1f}" '
                         f'stroke="{colour}" stroke-width="1.5"/>')
        parts.append(f'<rect class="estimate" x="{x(estimate.value) - 3:.1f}" '
                     f'y="{y - 3:.1f}" width="6" height="6" fill="{colour}"/>')
    return parts
