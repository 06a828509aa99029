"""What `medtfx predict` shows and writes: one record per file, printed as a table line as
soon as its request is answered, and written as CSV or JSON (by the file's suffix).

A record has the same fields in every format: `file`; for a binary model the flagged class's
`probability`, the `decision` (the flagged class's name, or the other class's) and the
`threshold`; for a model of K classes the top `class`, its `class_probability`, each class's
`p_<name>`, and when the model has an operating rule for urgent classes their summed
`urgent_probability`, the `decision` and the `threshold`; for a model with an
out-of-distribution guard its `ood_score` and `in_distribution` (0: the image is unlike the
training images, whatever its probability says); `error` for a file not scored.
"""

from __future__ import annotations

import csv
import io
import os

from pipeline.files import write_json, write_text
from pipeline.serving.model import ServedModel
from pipeline.serving.predict import Prediction

_HEADINGS = {"class_probability": "probability", "urgent_probability": "urgent"}


def fields(model: ServedModel) -> list[str]:
    """A record's fields for this model, in order."""
    if model.binary:
        answer = ["probability", "decision", "threshold"]
    else:
        answer = ["class", "class_probability", *(f"p_{name}" for name in model.classes)]
        if model.threshold is not None:
            answer += ["urgent_probability", "decision", "threshold"]
    if model.guarded:
        answer += ["ood_score", "in_distribution"]
    return ["file", *answer, "error"]


def record(prediction: Prediction, model: ServedModel) -> dict:
    """The fields of one file's answer; None where it has no value (every answer of a file
    that failed)."""
    p = prediction
    decision = {1: model.flagged, 0: model.negative}.get(p.decision)
    values = {"file": p.file, "error": p.error or None, "decision": decision,
              "threshold": None if p.error else model.threshold,
              "probability" if model.binary else "urgent_probability": p.probability,
              "ood_score": p.ood_score, "in_distribution": p.in_distribution}
    if p.probabilities:
        values.update({"class": p.class_name, "class_probability": max(p.probabilities)},
                      **{f"p_{n}": v for n, v in zip(model.classes, p.probabilities)})
    return {name: values.get(name) for name in fields(model)}


class Table:
    """Fixed-width lines for the terminal: every field but the per-class probabilities,
    which the file written with --out holds."""

    def __init__(self, model: ServedModel, files: list[str]):
        self.columns = [f for f in fields(model) if f != "error" and not f.startswith("p_")]
        words = {"file": files, "class": model.classes, "decision": [model.flagged,
                                                                     model.negative]}
        self.widths = {c: max([len(_HEADINGS.get(c, c)), *map(len, words.get(c, []))])
                       for c in self.columns}

    def header(self) -> str:
        return self._line({c: _HEADINGS.get(c, c) for c in self.columns})

    def line(self, values: dict) -> str:
        if values["error"]:
            return f"{values['file']:<{self.widths['file']}}  error: {values['error']}"
        return self._line({c: f"{v:.4f}" if isinstance(v, float) else str(v)
                           for c, v in values.items() if c in self.widths})

    def _line(self, cells: dict) -> str:
        return "  ".join(f"{cells[c]:<{self.widths[c]}}" for c in self.columns).rstrip()


def write_records(path: str, model: ServedModel, records: list[dict]) -> None:
    """JSON ({"model": its directory, "predictions": the records}, null for no value) when
    `path` ends in .json, else CSV (empty cells for no value); written whole or not at
    all."""
    path = os.path.abspath(path)
    if path.lower().endswith(".json"):
        write_json(path, {"model": model.path, "predictions": records})
        return
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=fields(model), lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    write_text(path, text.getvalue())


def summary(records: list[dict], passed_over: int, model: ServedModel,
            out: str | None) -> str:
    """The last line: how many files were scored and failed, by which model, and where
    the records were written."""
    failed = sum(1 for r in records if r["error"])
    line = f"medtfx: {len(records) - failed} scored, {failed} failed, by {model.path}"
    if passed_over:
        line += (f"; {passed_over} other file{'s' if passed_over > 1 else ''} in the "
                 "folders passed over")
    return line + (f"; written to {out}" if out else "")
