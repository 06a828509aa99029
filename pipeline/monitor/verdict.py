"""`medtfx monitor` as a use case: a window of logged requests against the served model's
reference, one line per check, and the verdict a scheduler acts on."""

from __future__ import annotations

import dataclasses
import html

from pipeline.config import PipelineConfig
from pipeline.monitor.checks import Check, observe, run_checks
from pipeline.monitor.reference import load_reference
from pipeline.monitor.request_log import log_files, read_logs
from pipeline.core.workdir import WorkDir


@dataclasses.dataclass(frozen=True)
class Verdict:
    version: str
    window: str  # which requests were read
    images: int
    checks: list[Check]
    judged: bool  # False: too few images in the window to judge

    @property
    def drifted(self) -> list[Check]:
        return [c for c in self.checks if c.drifted] if self.judged else []


def monitor(logs: str, work: WorkDir, config: PipelineConfig, version: str | None
            ) -> Verdict:
    files = log_files(logs)
    window = [observe(logged) for logged in read_logs(logs, config.task)]
    reference = load_reference(work, config, version)
    times = sorted(w.time for w in window if w.time)
    span = f", logged {times[0]} to {times[-1]}" if times else ""
    described = (f"{len(window)} images from {len(files)} log file"
                 f"{'' if len(files) == 1 else 's'} under {logs}{span}")
    judged = len(window) >= config.monitor.min_requests
    checks = (run_checks(window, reference, config, config.schema_path)
              if judged else [])
    return Verdict(reference.version, described, len(window), checks, judged)


def check_line(check: Check) -> str:
    """'DRIFT  image brightness: PSI 0.412 (bound 0.25; mean 171 against 122)'."""
    mark = "DRIFT" if check.drifted else "ok" if check.value is not None else "-"
    value = "not measured" if check.value is None else f"{check.measure} {check.value:.3f}"
    detail = "; ".join(p for p in (f"bound {check.bound:g}", check.note) if p)
    return f"  {mark:<6}{check.name}: {value} ({detail})"


def verdict_lines(verdict: Verdict, min_requests: int) -> list[str]:
    lines = [f"medtfx: monitoring serving version {verdict.version}: {verdict.window}"]
    if not verdict.judged:
        return lines + [f"medtfx: not judged: fewer than monitor.min_requests "
                        f"({min_requests}) images in the window"]
    lines += [check_line(c) for c in verdict.checks]
    drifted = verdict.drifted
    if drifted:
        lines.append(f"medtfx: DRIFT on {len(drifted)} check{'s' if len(drifted) > 1 else ''}"
                     f": {', '.join(c.name for c in drifted)}")
    else:
        lines.append(f"medtfx: no drift: {len(verdict.checks)} checks within their bounds")
    return lines


def verdict_json(verdict: Verdict) -> dict:
    return {"version": verdict.version, "window": verdict.window, "images": verdict.images,
            "judged": verdict.judged, "drift": bool(verdict.drifted),
            "checks": [{**dataclasses.asdict(c), "drifted": c.drifted}
                       for c in verdict.checks]}


def verdict_html(verdict: Verdict, min_requests: int) -> str:
    """The report's monitoring section: the window, then a row per check."""
    head = (f"<p>Serving version {html.escape(verdict.version)}: "
            f"{html.escape(verdict.window)}.</p>")
    if not verdict.judged:
        return head + (f"<p>Not judged: fewer than monitor.min_requests ({min_requests}) "
                       "images in the window.</p>")
    rows = "".join(
        f'<tr class="{"fail" if c.drifted else ""}"><td>{html.escape(c.name)}</td>'
        f"<td>{html.escape(c.measure)}</td><td>{'' if c.value is None else f'{c.value:.3f}'}"
        f"</td><td>{c.bound:g}</td><td>{html.escape(c.note)}</td></tr>"
        for c in verdict.checks)
    verdict_text = (f"drift on {', '.join(c.name for c in verdict.drifted)}"
                    if verdict.drifted else "no drift")
    return (head + f"<p>Verdict: {html.escape(verdict_text)}.</p><table><tr><th>check</th>"
            "<th>measure</th><th>value</th><th>bound</th><th>detail</th></tr>"
            f"{rows}</table>")
