"""`medtfx history` as text: the runs in columns, and a served version's lineage."""

from __future__ import annotations

from pipeline.results.history import Lineage, RunRecord, Step


def _yes_no(value: bool | None) -> str:
    return "-" if value is None else "yes" if value else "no"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def run_lines(runs: list[RunRecord]) -> list[str]:
    """A header and one line per run, in columns."""
    if not runs:
        return ["medtfx: no pipeline runs recorded"]
    rows = [["run", "span", "model", "blessed", "pushed", "AUC", "threshold"]]
    notes = [""]
    for run in runs:
        model = ("-" if run.model_id is None else
                 f"{run.model_id} ({'cached' if run.model_cached else 'trained'})")
        rows.append([run.run_id, ",".join(str(s) for s in run.spans) or "-", model,
                     _yes_no(run.blessed), run.pushed_version or "-", _number(run.auc),
                     _number(run.operating_threshold)])
        notes.append(f"failed: {', '.join(run.failed)}" if run.failed else "")
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join([*(cell.ljust(width) for cell, width in zip(row, widths)), note]).rstrip()
            for row, note in zip(rows, notes)]


def _step_lines(label: str, step: Step) -> list[str]:
    """An artifact and the execution that produced it."""
    return [f"  {label}{step.artifact_type} {step.artifact_id} {step.uri}",
            f"    <- {step.component} (execution {step.execution_id}, run {step.run_id})"]


def lineage_lines(lineage: Lineage) -> list[str]:
    """A serving version's lineage, from the push to the data files."""
    first, *later = lineage.recorded_by
    lines = [f"medtfx: serving version {lineage.version} ({lineage.destination})",
             f"        pushed by run {first}"
             + (f"; found serving by run {', '.join(later)}" if later else ""),
             *_step_lines("", lineage.pushed), *_step_lines("packaged ", lineage.packaged),
             f"    operating threshold {_number(lineage.operating_threshold)}"]
    for step in lineage.trained:
        lines += _step_lines("trained ", step)
    if lineage.transform:
        lines += _step_lines("", lineage.transform)
    for data in lineage.data:
        lines += _step_lines("", data.examples)
        lines.append(f"    span {data.span}"
                     + (f", version {data.version}" if data.version is not None else "")
                     + f", splits {' '.join(data.split_names)}; read from {data.input_base}")
        for split in data.splits:
            files = ", ".join(split.files) or "no file matches now"
            if split.unchanged is False:
                files += " (changed since ImportExampleGen read them)"
            lines.append(f"      {split.name} {split.pattern}: {files}")
    lines += (_step_lines("baseline ", lineage.baseline) if lineage.baseline else
              ["  baseline: none (no blessed model before it)"])
    return lines
