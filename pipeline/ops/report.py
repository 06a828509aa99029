"""`medtfx report`: one self-contained HTML page on a run, for a person deciding whether to
trust the model: the verdict and why, curves overall and per slice, calibration, the
confusion matrix at the operating threshold, the slice table with intervals, the comparison
with the last blessed model, and the data's statistics and anomalies."""

from __future__ import annotations

import collections
import html
import json

from modules.task import TaskSpec
from pipeline.config import PipelineConfig, load_config_dict
from pipeline.core.workdir import WorkDir
from pipeline.results.eval_results import (SLICE_AND, SLICE_IS, Matrix, SliceResult,
                                           load_evaluation)
from pipeline.results.anomalies import describe_anomalies
from pipeline.results.classes import balanced_majority, per_class
from pipeline.results.forest import ForestRow, forest_plot, forest_rows, gap
from pipeline.ops.gallery import GALLERY_STYLE, evaluated_inputs, gallery_html
from pipeline.results.mlmd import find_run, open_store, outputs_by_type
from pipeline.results.report_calibration import calibration_section
from pipeline.results.report_ood import guard_section
from pipeline.results.statistics import SplitStats, load_statistics
from pipeline.ops.summary import failed_check
from pipeline.results.svg import line_chart

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; }
h1 { margin-bottom: 0; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; }
.verdict { display: inline-block; padding: .3em .8em; border-radius: 4px; color: #fff;
           font-weight: bold; } .blessed { background: #2a7d3a; } .rejected { background: #b3261e; }
table { border-collapse: collapse; margin: .5em 0; } td, th { border: 1px solid #ddd;
        padding: .25em .6em; text-align: right; } th { background: #f4f4f4; }
td:first-child, th:first-child { text-align: left; } tr.fail td { background: #fde8e6; }
tr.ungated td { color: #888; } .charts { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; } figcaption { font-weight: 600; }
.tick, .legend, .axis { font-size: 11px; fill: #333; } .axis { text-anchor: middle; }
"""


def _fmt(value, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _interval(result: SliceResult, name: str) -> str:
    ci = result.intervals.get(name)
    return f"{ci[0]:.3f}–{ci[1]:.3f}" if ci else ""


def _roc(curve: list[Matrix]) -> list[tuple[float, float]]:
    points = {(1 - m.specificity, m.sensitivity) for m in curve
              if m.specificity is not None and m.sensitivity is not None}
    return sorted(points)


def _pr(curve: list[Matrix]) -> list[tuple[float, float]]:
    points = {(m.sensitivity, m.precision) for m in curve
              if m.sensitivity is not None and m.precision is not None}
    return sorted(points)


def _table(header: list[str], rows: list[tuple[str, list[str]]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(f'<tr class="{cls}">' + "".join(f"<td>{html.escape(c)}</td>" for c in cells)
                   + "</tr>" for cls, cells in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _verdict(summary: dict) -> str:
    if summary["blessed"] and summary["pushed_model"]:
        return ('<p><span class="verdict blessed">BLESSED</span> pushed to '
                f'<code>{html.escape(summary["pushed_model"])}</code></p>')
    verdict = "BLESSED, NOT PUSHED" if summary["blessed"] else "NOT BLESSED"
    return f'<p><span class="verdict rejected">{verdict}</span> nothing pushed.</p>'


def _failed_checks(summary: dict) -> str:
    if not summary["failed_checks"]:
        return ""
    checks = "".join(f"<li>{html.escape(failed_check(c))}</li>"
                     for c in summary["failed_checks"])
    return f"<p>Failed checks:</p><ul>{checks}</ul>"


def _forest(slices: dict[str, SliceResult], summary: dict, config: PipelineConfig
            ) -> tuple[str, list[ForestRow]]:
    """The forest plot and its rows (the slice table shows their gaps to overall)."""
    task, evaluation = config.task, config.evaluation
    failed = {c.get("slice") for c in summary["failed_checks"]}
    rows = forest_rows(slices, summary["operating_threshold"],
                       "AUC" if task.binary else "macro AUC",
                       lambda r: evaluation.slice_auc_bound(r.family) if task.binary else None,
                       failed)
    at = ("" if summary["operating_threshold"] is None else
          f"; sensitivity and specificity at the operating threshold "
          f"{summary['operating_threshold']:.3f}")
    caption = (f"Slices: estimate and 95% interval{at}. Dashed: overall; red tick: the "
               "slice's AUC bound; grey: too small to gate; red: a failed check.")
    return forest_plot(rows, caption), rows


def _rate(row: ForestRow, overall: ForestRow, rate: str) -> list[str]:
    """A rate at the operating threshold with its Wilson interval, and its gap to overall."""
    estimate = row.estimates.get(rate)
    if estimate is None:
        return ["", ""]
    difference = gap(row, overall, rate)
    return [f"{_fmt(estimate.value)} {_span(estimate.interval)}".strip(),
            "" if row is overall or difference is None else f"{difference:+.3f}"]


def _slice_rows(slices: dict[str, SliceResult], forest: list[ForestRow], summary: dict,
                task: TaskSpec) -> str:
    threshold = summary["operating_threshold"]
    rows = []
    for row, (name, r) in zip(forest, slices.items()):
        m = r.metrics
        at = r.at(threshold) if threshold is not None else None
        cls = "fail" if row.failed else "" if r.gated else "ungated"
        rows.append((cls, [
            name, f"{int(m.get('example_count') or 0)}", f"{r.positives}",
            _fmt(m.get("auc")), _interval(r, "auc"), _fmt(row.bound),
            _fmt(r.baseline.get("auc")), _fmt(r.changes.get("auc"), 4),
            *_rate(row, forest[0], "sensitivity"), *_rate(row, forest[0], "specificity"),
            _fmt(at.precision if at else None), _fmt(at.accuracy if at else None),
            _fmt(r.majority_rate), _fmt(at.f1 if at else None), "yes" if r.gated else "no"]))
    return _table(["slice", "examples", task.label.positive, "AUC", "95% interval", "bound",
                   "baseline AUC", "change", "sensitivity (95%)", "vs overall",
                   "specificity (95%)", "vs overall", "precision", "accuracy",
                   "majority class", "F1", "gated"], rows)


def _curves(slices: dict[str, SliceResult], task: TaskSpec) -> str:
    overall = slices["overall"]
    roc = [("this model", _roc(overall.curve))]
    if overall.baseline_curve:
        roc.append(("last blessed model", _roc(overall.baseline_curve)))
    what = "overall" if task.binary else f"{task.flagged} against the rest"
    charts = [line_chart(f"ROC, {what}", roc, "1 - specificity", "sensitivity", diagonal=True),
              line_chart(f"Precision-recall, {what}", [("this model", _pr(overall.curve))],
                         "recall", "precision")]
    families: dict[str, list[str]] = collections.defaultdict(list)
    for name, result in slices.items():
        if name != "overall" and result.gated:
            families[SLICE_AND.join(p.split(SLICE_IS)[0] for p in name.split(SLICE_AND))
                     ].append(name)
    for family, names in families.items():
        series = [(", ".join(p.split(SLICE_IS)[1] for p in n.split(SLICE_AND))
                   + f" (AUC {_fmt(slices[n].metrics.get('auc'))}, {slices[n].positives} "
                   f"{task.label.positive})", _roc(slices[n].curve)) for n in names]
        charts.append(line_chart(f"ROC by {family} (gated slices)", series, "1 - specificity",
                                 "sensitivity", diagonal=True))
    return f'<div class="charts">{"".join(charts)}</div>'


def _classes(slices: dict[str, SliceResult], task: TaskSpec) -> str:
    """Three or more classes: each class's metrics with intervals, the confusion matrix as a
    heat map (shaded by the share of the actual class), per-class ROC curves and a table
    of the slices."""
    overall = slices["overall"]
    rows = [("", [r["class"], f"{r['examples']}"]
             + [f"{_fmt(r[m])} {_span(r.get(m + '_ci'))}".strip() for m in ("recall",
                                                                          "precision", "auc")]
             + [_fmt(r.get("baseline_recall"))]) for r in per_class(overall, task)]
    table = _table(["class", "examples", "recall (95% interval)", "precision", "AUC one vs rest",
                    "baseline recall"], rows)
    names = task.label.classes
    cells = []
    for name, row in zip(names, overall.confusion):
        total = sum(row) or 1
        cells.append(f"<tr><th>{html.escape(name)}</th>" + "".join(
            f'<td style="background: rgba(42,125,58,{v / total:.2f})">{int(v)}</td>'
            for v in row) + "</tr>")
    heat = ("<table><tr><th>actual \\ predicted</th>"
            + "".join(f"<th>{html.escape(n)}</th>" for n in names) + "</tr>"
            + "".join(cells) + "</table>")
    roc = line_chart("ROC per class, one vs rest",
                     [(n, _roc(overall.class_curves.get(n, []))) for n in names],
                     "1 - specificity", "sensitivity", diagonal=True)
    slice_rows = [("", [name, f"{int(r.metrics.get('example_count') or 0)}",
                        _fmt(r.metrics.get("auc")), _fmt(r.metrics.get("accuracy")),
                        _fmt(r.majority_rate), _fmt(r.metrics.get("balanced_accuracy"))])
                  for name, r in slices.items()]
    return (f"<p>Accuracy {_fmt(overall.metrics.get('accuracy'))}; always answering the "
            f"majority class scores {_fmt(overall.majority_rate)}. Balanced accuracy (mean "
            f"recall) {_fmt(overall.metrics.get('balanced_accuracy'))}; the majority class "
            f"scores {_fmt(balanced_majority(len(names)))}.</p>" + table
            + f'<div class="charts">{heat}{roc}</div>'
            + _table(["slice", "examples", "macro AUC", "accuracy", "majority class",
                      "balanced accuracy"], slice_rows))


def _span(ci: list[float] | tuple[float, float] | None) -> str:
    return f"({ci[0]:.3f}–{ci[1]:.3f})" if ci else ""


def auc_headline(overall: SliceResult, task: TaskSpec) -> str:
    """The overall AUC with its interval where it has one (a macro AUC has none)."""
    auc = f"{_fmt(overall.metrics.get('auc'))} {_span(overall.intervals.get('auc'))}".strip()
    return (f"{'' if task.binary else 'Macro '}AUC {auc} on "
            f"{int(overall.metrics.get('example_count') or 0)} held-out examples"
            + (f"; AUC-PR {_fmt(overall.metrics.get('auc_pr'))}" if task.binary else "") + ".")


def _calibration(overall: SliceResult, task: TaskSpec) -> str:
    points = [(b.predictions / b.count, b.labels / b.count) for b in overall.calibration]
    chart = line_chart("Calibration, overall", [("observed rate per bucket", points)],
                       "mean predicted probability", f"observed {task.label.positive} rate",
                       diagonal=True, points=True)
    rows = [("", [f"{b.low:.1f}–{b.high:.1f}", f"{int(b.count)}", _fmt(b.predictions / b.count),
                  _fmt(b.labels / b.count)]) for b in overall.calibration]
    ratio = overall.metrics.get("calibration")
    return (f"<p>Sum of predictions over sum of labels: {_fmt(ratio)} (1 is calibrated).</p>"
            f'<div class="charts">{chart}'
            + _table(["predicted", "examples", "mean prediction", "observed rate"], rows)
            + "</div>")


def _confusion(overall: SliceResult, threshold: float | None, task: TaskSpec) -> str:
    m = overall.at(threshold) if threshold is not None else None
    positive = task.flagged
    negative = task.negative if task.binary else "any other class"
    if not task.binary and not task.urgent_ids:
        return "<p>No operating rule: the model answers its top class (task label.urgent).</p>"
    if m is None:
        return (f"<p>No operating threshold: the evaluation shards hold no {positive} "
                "case.</p>")
    table = _table(["", f"predicted {positive}", f"predicted {negative}"], [
        ("", [positive, f"{int(m.tp)}", f"{int(m.fn)}"]),
        ("", [negative, f"{int(m.fp)}", f"{int(m.tn)}"])])
    return (f"<p>At the operating threshold {threshold:.3f}: sensitivity "
            f"{_fmt(m.sensitivity)}, specificity {_fmt(m.specificity)}, precision "
            f"{_fmt(m.precision)}, F1 {_fmt(m.f1)}, accuracy {_fmt(m.accuracy)} (always "
            f"answering the commoner class: {_fmt(overall.majority_rate)}).</p>{table}")


def _data(summary: dict, stats: dict[str, SplitStats], anomalies: list[str],
          task: TaskSpec) -> str:
    role_rows = []
    counted = [1] if task.binary else range(len(task.label.classes))
    for role, splits in summary["splits"].items():
        examples = sum(stats[s].examples for s in splits)
        counts = [sum(stats[s].positives(task.label.key, code) for s in splits)
                  for code in counted]
        role_rows.append(("", [role, ", ".join(splits), f"{examples}", *map(str, counts)]
                          + ([_fmt(counts[0] / examples if examples else None)]
                             if task.binary else [])))
    class_header = ([task.label.positive, "share"] if task.binary else task.label.classes)
    features: dict[str, list] = collections.defaultdict(list)
    for split_stats in stats.values():
        for name, feature in split_stats.features.items():
            features[name].append(feature)
    feature_rows = []
    for name, parts in sorted(features.items()):
        missing = sum(p.missing for p in parts)
        if parts[0].kind == "categorical":
            counts = collections.Counter()
            for p in parts:
                counts.update(p.values)
            detail = ", ".join(f"{v}: {c}" for v, c in counts.most_common(8))
        else:
            detail = (f"min {_fmt(min(p.low for p in parts), 0)}, max "
                      f"{_fmt(max(p.high for p in parts), 0)}")
        feature_rows.append(("", [name, parts[0].kind, f"{missing}", detail]))
    found = ("".join(f"<li>{html.escape(a)}</li>" for a in anomalies)
             if anomalies else "<li>none: every shard matches the schema</li>")
    return (_table(["role", "shards", "examples", *class_header], role_rows)
            + _table(["feature", "kind", "missing", "values (all shards)"], feature_rows)
            + f"<h3>Anomalies against the schema</h3><ul>{found}</ul>")


def render_report(summary: dict, config: PipelineConfig, slices: dict[str, SliceResult],
                  stats: dict[str, SplitStats], anomalies: list[str], gallery: str = "",
                  extra: tuple[tuple[str, str], ...] = ()) -> str:
    """The page; `extra`: (heading, HTML) sections at the end, such as the monitoring of
    logged requests."""
    overall, task = slices["overall"], config.task
    components = _table(["component", "seconds"], [("", [n, f"{s:.1f}"])
                                                   for n, s in summary["components"].items()])
    baseline = ("<p>No earlier blessed model: this is the first, judged on the bounds alone.</p>"
                if not overall.baseline else
                f"<p>Last blessed model: AUC {_fmt(overall.baseline.get('auc'))}; this model "
                f"{_fmt(overall.metrics.get('auc'))} (change "
                f"{_fmt(overall.changes.get('auc'), 4)}; allowed drop "
                f"{config.evaluation.max_auc_drop:g} overall, "
                f"{config.evaluation.max_slice_auc_drop:g} per gated slice).</p>")
    picture, forest = _forest(slices, summary, config)
    sections = [
        f"<h1>{html.escape(config.pipeline_name)}</h1>",
        f"<p>Run {html.escape(summary['run_id'])} on <code>"
        f"{html.escape(summary['data_root'])}</code>.</p>",
        _verdict(summary),
        f"<p>{html.escape(auc_headline(overall, task))}</p>",
        picture,
        _failed_checks(summary),
    ]
    if task.binary:
        sections += [
            "<h2>Slices</h2>",
            f"<p>Gated slices (at least {config.evaluation.min_slice_positives} "
            f"{task.label.positive} and {config.evaluation.min_slice_negatives} "
            f"{task.negative}) need AUC at least {config.evaluation.slice_auc_threshold:g} "
            f"(per family: {html.escape(json.dumps(config.evaluation.slice_auc_thresholds))});"
            " smaller slices are shown grey and do not gate.</p>",
            _slice_rows(slices, forest, summary, task)]
    else:
        sections += ["<h2>Classes</h2>", _classes(slices, task)]
    sections += ["<h2>Comparison with the last blessed model</h2>", baseline]
    if overall.curve:
        sections += ["<h2>Curves</h2>", _curves(slices, task)]
    sections += ["<h2>Operating point</h2>",
                 _confusion(overall, summary["operating_threshold"], task)]
    if gallery:
        sections += ["<h2>Gallery</h2>", gallery]
    sections += ["<h2>Calibration</h2>", calibration_section(summary, task.binary)
                 + (_calibration(overall, config.task) if task.binary else "")]
    sections += ["<h2>Out-of-distribution guard</h2>", guard_section(summary)]
    sections += ["<h2>Data</h2>", _data(summary, stats, anomalies, config.task),
                 "<h2>Components</h2>", components]
    for heading, body in extra:
        sections += [f"<h2>{html.escape(heading)}</h2>", body]
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>medtfx report: "
            f"{html.escape(summary['run_id'])}</title><style>{STYLE}{GALLERY_STYLE}</style>"
            "</head><body>"
            + "\n".join(sections) + "</body></html>")


def write_report(work: WorkDir, out_path: str | None = None,
                 extra: tuple[tuple[str, str], ...] = ()) -> str:
    """The report of the run in WORK/run_summary.json, written beside it (or to out_path),
    with the `extra` sections at the end."""
    with open(work.summary) as f:
        summary = json.load(f)
    config = load_config_dict(summary["config"])
    store = open_store(work.metadata)
    run = find_run(store, config.pipeline_name, summary["run_id"])
    executions = store.get_executions_by_context(run.id)
    outputs = outputs_by_type(store, executions)
    evaluation = config.evaluation
    slices = load_evaluation(outputs["ModelEvaluation"][0].uri, config.task,
                             evaluation.min_slice_positives, evaluation.min_slice_negatives)
    splits = sorted({s for names in summary["splits"].values() for s in names})
    stats = load_statistics(outputs["ExampleStatistics"][0].uri, splits)
    anomalies = describe_anomalies(outputs["ExampleAnomalies"][0].uri, splits)
    evaluated = evaluated_inputs(store, executions, summary["splits"]["evaluation"])
    gallery = (gallery_html(*evaluated, config, slices, summary["operating_threshold"])
               if evaluated else "")
    page = render_report(summary, config, slices, stats, anomalies, gallery, extra)
    out_path = out_path or work.path("report.html")
    with open(out_path, "w") as f:
        f.write(page)
    return out_path
