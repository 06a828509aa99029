"""Small inline SVG charts for the report: no scripts and nothing fetched, so the page is one
self-contained file that renders anywhere."""

from __future__ import annotations

import html

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
Series = tuple[str, list[tuple[float, float]]]


def line_chart(title: str, series: list[Series], x_label: str, y_label: str,
               diagonal: bool = False, size: int = 300, points: bool = False) -> str:
    """Curves on the unit square, one colour per series, with a legend below."""
    pad, inner = 40, size - 50
    x = lambda v: pad + v * inner  # noqa: E731
    y = lambda v: 10 + (1 - v) * inner  # noqa: E731
    parts = [f'<svg class="chart" width="{size}" height="{size + 18 * len(series) + 10}" '
             f'role="img" aria-label="{html.escape(title)}">',
             f'<rect x="{pad}" y="10" width="{inner}" height="{inner}" fill="#fff" '
             'stroke="#999"/>']
    for tick in (0, 0.25, 0.5, 0.75, 1):
        parts.append(f'<text x="{x(tick):.1f}" y="{size - 25}" class="tick">{tick:g}</text>')
        parts.append(f'<text x="{pad - 28}" y="{y(tick) + 4:.1f}" class="tick">{tick:g}</text>')
    if diagonal:
        parts.append(f'<line x1="{x(0)}" y1="{y(0)}" x2="{x(1)}" y2="{y(1)}" '
                     'stroke="#bbb" stroke-dasharray="4 3"/>')
    for i, (label, pts) in enumerate(series):
        colour = COLOURS[i % len(COLOURS)]
        if pts:
            path = " ".join(f"{x(px):.1f},{y(py):.1f}" for px, py in pts)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" '
                         'stroke-width="2"/>')
            if points:
                parts += [f'<circle cx="{x(px):.1f}" cy="{y(py):.1f}" r="3" fill="{colour}"/>'
                          for px, py in pts]
        ly = size + 4 + 18 * i
        parts.append(f'<rect x="{pad}" y="{ly}" width="12" height="12" fill="{colour}"/>'
                     f'<text x="{pad + 18}" y="{ly + 11}" class="legend">'
                     f'{html.escape(label)}</text>')
    parts.append(f'<text x="{pad + inner / 2}" y="{size - 8}" class="axis">'
                 f'{html.escape(x_label)}</text>')
    parts.append(f'<text x="12" y="{10 + inner / 2}" class="axis" '
                 f'transform="rotate(-90 12 {10 + inner / 2})">{html.escape(y_label)}</text>')
    parts.append("</svg>")
    return f'<figure><figcaption>{html.escape(title)}</figcaption>{"".join(parts)}</figure>'
