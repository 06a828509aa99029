"""What a pipeline run did, read back from ML Metadata and the Evaluator's output."""

from __future__ import annotations

import json
import os

from modules.artifacts import SUBMISSION_FILE, SUBMISSION_TYPE, VALIDATION_FILE
from pipeline.config import PipelineConfig, to_dict
from pipeline.core.files import write_json
from pipeline.core.workdir import WorkDir
from modules.task import TaskSpec
from pipeline.results.calibration import (calibration_sentence, calibration_summary,
                                         served_calibration)
from pipeline.results.classes import balanced_majority, per_class
from pipeline.ops.gallery import explained
from pipeline.results.eval_results import (CLASS_OF, NOT_VERIFIED, SliceResult, failed_checks,
                                           load_evaluation, operating_threshold,
                                           rate_intervals, shown, unverified_slice)
from pipeline.results.mlmd import find_run, node_name, open_store, outputs_by_type
from pipeline.results.report_ood import guard_line, guard_summary
from pipeline.serving.load_check import FAILURE_PROPERTY

REPORTED_INTERVALS = ("auc", "auc_pr", "specificity_at_sensitivity",
                      "sensitivity_at_specificity", "ece", "brier_score")


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def slice_summary(result: SliceResult, threshold: float | None,
                  task: TaskSpec | None = None) -> dict:
    """A slice's metrics, intervals, baseline, its rates at the operating threshold and the
    majority-class rate, the accuracy to beat; for three or more classes, each class's
    metrics and the confusion matrix of the top class."""
    out: dict = {name: _round(value) for name, value in result.metrics.items()
                 if CLASS_OF not in name}
    out.update(positives=result.positives, negatives=result.negatives, gated=result.gated,
               majority_rate=_round(result.majority_rate))
    for name in REPORTED_INTERVALS:
        if name in result.intervals:
            out[f"{name}_ci"] = [_round(v) for v in result.intervals[name]]
    if "auc" in result.baseline:
        out["baseline_auc"] = _round(result.baseline["auc"])
        out["auc_change"] = _round(result.changes.get("auc"))
    if result.confusion and task is not None:
        out["classes"] = {row.pop("class"): {k: _round(v) if isinstance(v, float) else v
                                             for k, v in row.items()}
                          for row in per_class(result, task)}
        out["confusion_matrix"] = [[int(v) for v in row] for row in result.confusion]
        out["balanced_majority_rate"] = _round(balanced_majority(len(task.label.classes)))
    matrix = result.at(threshold) if threshold is not None else None
    if matrix is not None:
        rates = {"sensitivity": _round(matrix.sensitivity),
                 "specificity": _round(matrix.specificity),
                 **{f"{name}_ci": [_round(v) for v in ci]
                    for name, ci in rate_intervals(matrix).items()},
                 "precision": _round(matrix.precision), "accuracy": _round(matrix.accuracy),
                 "f1": _round(matrix.f1),
                 "confusion": {"tp": matrix.tp, "fp": matrix.fp, "tn": matrix.tn,
                               "fn": matrix.fn}}
        if "classes" in out:  # the urgent rule's rates, beside the top class's accuracy
            out["urgent_rule"] = rates
        else:
            out.update(rates)
    return out


def summarize_run(metadata_path: str, config: PipelineConfig) -> dict:
    """The run_summary.json content of the newest run of the config's pipeline."""
    evaluation = config.evaluation
    store = open_store(metadata_path)
    run = find_run(store, config.pipeline_name)
    if run is None:
        raise LookupError(f"{metadata_path}: no run of pipeline {config.pipeline_name}")
    executions = store.get_executions_by_context(run.id)
    components = {node_name(store, e.id)[1]: round(
        (e.last_update_time_since_epoch - e.create_time_since_epoch) / 1000, 1)
        for e in sorted(executions, key=lambda e: e.id)}
    outputs = outputs_by_type(store, executions)

    blessed = any(a.custom_properties["blessed"].int_value == 1
                  for a in outputs.get("ModelBlessing", []))
    pushed = [a for a in outputs.get("PushedModel", [])
              if a.custom_properties["pushed"].int_value == 1]
    evaluations = outputs.get("ModelEvaluation", [])
    slices = (load_evaluation(evaluations[0].uri, config.task, evaluation.min_slice_positives,
                              evaluation.min_slice_negatives) if evaluations else {})
    overall = slices.get("overall")
    threshold = (operating_threshold(overall.curve, evaluation.target_sensitivity)
                 if overall else None)
    metrics = {name: {**slice_summary(result, threshold, config.task),
                      **_auc_bound(name, result, config)}
               for name, result in slices.items()}
    training = training_summary(outputs.get("Model", []))
    return {
        "run_id": run.name,
        "blessed": blessed,
        "pushed_model": pushed[0].custom_properties["pushed_destination"].string_value
        if pushed else None,
        "operating_threshold": _round(threshold),
        "target_sensitivity": evaluation.target_sensitivity,
        "classes": config.task.label.classes,
        "urgent": config.task.label.urgent,
        "metrics": metrics,
        "failed_checks": ((failed_checks(evaluations[0].uri, config.task)
                           if evaluations else [])
                          + load_check_failures(outputs.get("Model", []))),
        "components": components,
        "training": training,
        "calibration": calibration_summary(served_calibration(training), overall),
        "explained": explained(outputs.get("Model", [])),  # it has Grad-CAM heat maps
        **submission_summary(outputs.get(SUBMISSION_TYPE, [])),
        "ood": guard_summary(training, metrics, outputs.get(SUBMISSION_TYPE, [])),
    }


def _auc_bound(name: str, result: SliceResult, config: PipelineConfig) -> dict:
    """The AUC a binary model must reach on the slice, where the gate bounds it."""
    if not config.task.binary or not (name == "overall" or result.gated):
        return {}
    evaluation = config.evaluation
    return {"auc_bound": evaluation.auc_threshold if name == "overall"
            else evaluation.slice_auc_bound(result.family)}


def load_check_failures(models: list) -> list[dict]:
    """The failed load check of each model ModelPackager refused to package
    (pipeline/serving/load_check.py): a blessed model that is not pushed says why."""
    return [json.loads(m.custom_properties[FAILURE_PROPERTY].string_value)
            for m in models if FAILURE_PROPERTY in m.custom_properties]


def submission_summary(submissions: list) -> dict:
    """`submission`: the path of the run's submission CSV (None when the run scored no test
    shards), and `scored`: its rows."""
    written = [a for a in submissions if "examples" in a.custom_properties]
    if not written:
        return {"submission": None, "scored": 0}
    return {"submission": os.path.join(written[0].uri, SUBMISSION_FILE),
            "scored": written[0].custom_properties["examples"].int_value}


def training_summary(models: list) -> dict:
    """What each trained model's run recorded beside it (best epoch, strategy; for an
    ensemble the out-of-fold AUC), keyed by the model's directory name."""
    out = {}
    for model in sorted(models, key=lambda a: a.uri):
        path = os.path.join(model.uri, VALIDATION_FILE)
        if not os.path.exists(path):
            continue
        with open(path) as f:
            recorded = json.load(f)
        out[_producer(model.uri)] = {k: v for k, v in recorded.items()
                                     if k not in ("labels", "scores")}
    return out


def _producer(uri: str) -> str:
    """`Trainer_fold1` from PIPELINE_ROOT/Trainer_fold1/model/7."""
    return os.path.basename(os.path.dirname(os.path.dirname(uri.rstrip("/"))))


def record_run(config: PipelineConfig, data_root: str, work: WorkDir) -> dict:
    """Writes WORK/run_summary.json for the run just finished and returns it."""
    plan = config.split_plan
    summary = {**summarize_run(work.metadata, config),
               "data_root": data_root,
               "splits": {role: plan.names(getattr(plan, role))
                          for role in ("train", "validation", "evaluation")},
               "config": to_dict(config)}
    write_json(work.summary, summary)
    return summary


def _interval(metrics: dict, name: str) -> str:
    ci = metrics.get(f"{name}_ci")
    return f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""


def summary_lines(summary: dict) -> list[str]:
    """A few lines: the headline metric, the operating point, the calibration, the weakest
    slice, every slice
    too small to gate, the verdict and, when not blessed, every failed check."""
    overall = summary["metrics"].get("overall", {})
    multiclass = "classes" in overall
    if overall.get("auc") is None:
        lines = ["medtfx: no evaluation metrics"]
    else:
        lines = [f"medtfx: {'macro ' if multiclass else ''}AUC {overall['auc']:.3f}"
                 f"{_interval(overall, 'auc')} overall on {int(overall['example_count'])} "
                 "held-out examples"]
    if multiclass:
        lines += _class_lines(overall)
    point = overall.get("urgent_rule", overall)
    if point.get("sensitivity") is not None:
        rule = (f" (flags {' or '.join(summary['urgent'])})" if multiclass else "")
        lines.append(f"        operating threshold {summary['operating_threshold']:.3f}{rule}: "
                     f"sensitivity {point['sensitivity']:.3f}, specificity "
                     f"{point['specificity']:.3f}, precision {shown(point['precision'])}, "
                     f"F1 {shown(point['f1'])}")
        if not multiclass:
            lines.append(f"        accuracy there {shown(overall['accuracy'])}; always "
                         f"answering the commoner class {shown(overall['majority_rate'])}")
    if summary.get("calibration"):
        lines.append(f"        calibration: {calibration_sentence(summary['calibration'])}")
    gated = [(name, m) for name, m in summary["metrics"].items()
             if name != "overall" and m.get("gated") and m.get("auc") is not None]
    if gated:
        name, m = min(gated, key=lambda s: s[1]["auc"])
        bound = f"bound {m['auc_bound']:g}; " if "auc_bound" in m else ""
        lines.append(f"        lowest gated slice: {name} AUC {m['auc']:.3f}"
                     f"{_interval(m, 'auc')} ({bound}{int(m['example_count'])} examples)")
    ungated = [] if multiclass else [
        unverified_slice(name, int(m.get("example_count") or 0), m["positives"],
                         summary["classes"][1], m.get("auc"), m.get("auc_ci"))
        for name, m in summary["metrics"].items() if name != "overall" and not m["gated"]]
    if ungated:
        lines.append(f"        {NOT_VERIFIED}, {len(ungated)} "
                     f"slice{'' if len(ungated) == 1 else 's'}:")
        lines += [f"          {line}" for line in ungated]
    for name, recorded in summary.get("training", {}).items():
        if recorded.get("oof_auc") is not None:
            lines.append(f"        {name}: out-of-fold AUC {recorded['oof_auc']:.3f} over "
                         f"{recorded['examples']} examples of {len(recorded['fold_aucs'])} "
                         "folds")
    if guard_line(summary):
        lines.append(guard_line(summary))
    if summary.get("explained"):
        lines.append("        heat maps: the model's explain signature (`medtfx predict "
                     "--explain DIR`; the worst misses in `medtfx report`)")
    if summary["blessed"] and summary.get("pushed_model"):
        lines.append(f"medtfx: BLESSED; serving model: {summary['pushed_model']}")
        if summary.get("submission"):
            lines.append(f"medtfx: scored {summary['scored']} test images: "
                         f"{summary['submission']}")
        return lines
    verdict = "BLESSED, but" if summary["blessed"] else "NOT BLESSED;"
    lines.append(f"medtfx: {verdict} nothing pushed. Failed checks:")
    return lines + [f"        {failed_check(c)}" for c in summary["failed_checks"]]


def failed_check(check: dict) -> str:
    """A failed check in one line: the load check's reason, or a metric against its bound:
    'auc on sex = female: 0.612 (must be at least 0.65)', 'recall on class
    malignant_mass (overall): 0.000 (must be at least 0.3)'."""
    if "reason" in check:
        where = f" of {check['signature']}" if check["signature"] else ""
        return f"{check['metric']}{where}: {check['reason']}"
    where = (f" ({check['slice']})" if " on class " in check["metric"]
             else f" on {check['slice']}")
    (side, bound), = check["bound"].items()
    return (f"{check['metric']}{where}: {shown(check['value'])} "
            f"(must be {side.replace('_', ' ')} {bound:g})")


def _class_lines(overall: dict) -> list[str]:
    """Accuracy beside what answering the majority class scores, and recall per class."""
    recalls = ", ".join(f"{name} {shown(m['recall'])}" for name, m in overall["classes"].items())
    return [f"        accuracy {shown(overall.get('accuracy'))} (always answering the "
            f"majority class: {shown(overall['majority_rate'])}); balanced accuracy "
            f"{shown(overall.get('balanced_accuracy'))} (majority class: "
            f"{shown(overall['balanced_majority_rate'])})",
            f"        recall by class: {recalls}"]
