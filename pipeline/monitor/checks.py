"""The checks of a window of logged requests against the served model's reference, one
value and one bound each: no labels needed, so they speak before any reader complains.

- image statistics (pipeline/monitor/image_stats.py) against the training fold: PSI;
- metadata codes against the training fold: TFDV's drift comparators with the bounds of
  `retrain.drift` (L-infinity for codes, Jensen-Shannon for numbers), as arrivals are judged;
- the served scores against the evaluation fold's: PSI; the share of positive decisions
  against the evaluation fold's share at the same threshold;
- the share the model's own out-of-distribution guard flags (`in_distribution` = 0).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from pipeline.config import PipelineConfig
from pipeline.monitor.distances import (histogram_quantile_edges, psi, psi_of_samples, regroup,
                                        shares)
from pipeline.monitor.image_stats import CONTINUOUS, SHARES, image_features
from pipeline.monitor.reference import Reference
from pipeline.monitor.request_log import LoggedImage

PROBABILITY, DECISION, IN_DISTRIBUTION = "probability", "decision", "in_distribution"


@dataclasses.dataclass(frozen=True)
class Observation:
    """What the checks need of one logged image: its statistics (None: it does not
    decode), metadata and answer; not its bytes, so a window of any size fits in memory."""

    image: dict[str, float] | None
    metadata: dict[str, int]
    outputs: dict[str, list[float]]
    time: str | None


def observe(logged: LoggedImage) -> Observation:
    return Observation(image_features(logged.image), logged.metadata, logged.outputs,
                       logged.time)


@dataclasses.dataclass(frozen=True)
class Check:
    name: str  # what is compared, e.g. "image brightness", "metadata sex"
    measure: str  # "PSI", "L-infinity", "change in share", ...
    value: float | None  # None: the window lacks what the check needs
    bound: float
    note: str = ""  # why there is no value, or what moved most

    @property
    def drifted(self) -> bool:
        return self.value is not None and self.value > self.bound


def run_checks(window: list[Observation], reference: Reference, config: PipelineConfig,
               schema_file: str) -> list[Check]:
    monitor = config.monitor
    return (_image_checks(window, reference, monitor.max_psi, monitor.max_ood_share)
            + _metadata_checks(window, reference, config, schema_file)
            + _prediction_checks(window, reference, monitor.max_psi, monitor.max_decision_change)
            + [_ood_check(window, monitor.max_ood_share)])


def _image_checks(window: list[Observation], reference: Reference, bound: float,
                  max_undecodable: float) -> list[Check]:
    measured = [w.image for w in window if w.image is not None]
    undecodable = len(window) - len(measured)
    checks = [Check("images that do not decode", "share", undecodable / max(len(window), 1),
                    max_undecodable)]
    for name in CONTINUOUS + SHARES:
        label = f"image {name.replace('_', ' ')}"
        if not measured:
            checks.append(Check(label, "PSI", None, bound, "no image decodes"))
            continue
        ref = np.array([r[name] for r in reference.images])
        now = np.array([m[name] for m in measured])
        checks.append(Check(label, "PSI", psi_of_samples(ref, now), bound,
                            f"mean {now.mean():.3g} against {ref.mean():.3g}"))
    return checks


def _metadata_checks(window: list[Observation], reference: Reference, config: PipelineConfig,
                     schema_file: str) -> list[Check]:
    """TFDV's drift comparators on the model features the requests carried."""
    import pandas as pd
    import tensorflow_data_validation as tfdv

    task, bounds = config.task, config.retrain.drift
    sent = [key for key in task.model_features if key in bounds
            and any(key in w.metadata for w in window)]
    checks = [Check(f"metadata {key}", "drift", None, bounds[key], "not sent")
              for key in task.model_features if key in bounds and key not in sent]
    if not sent:
        return checks
    schema = tfdv.load_schema_text(schema_file)
    kept = [f for f in schema.feature if f.name in sent]
    del schema.feature[:]
    schema.feature.extend(kept)
    for feature in schema.feature:
        comparator = feature.drift_comparator
        (comparator.infinity_norm if feature.int_domain.is_categorical
         else comparator.jensen_shannon_divergence).threshold = bounds[feature.name]
    options = tfdv.StatsOptions(schema=schema)
    now = pd.DataFrame({key: [w.metadata.get(key, task.missing) for w in window]
                        for key in sent})
    then = pd.DataFrame({key: reference.metadata[key] for key in sent})
    anomalies = tfdv.validate_statistics(
        tfdv.generate_statistics_from_dataframe(now, stats_options=options), schema,
        environment="SERVING",
        previous_statistics=tfdv.generate_statistics_from_dataframe(then,
                                                                    stats_options=options))
    for info in anomalies.drift_skew_info:
        for measured in info.drift_measurements:
            measure = ("L-infinity" if measured.type == measured.L_INFTY
                       else "Jensen-Shannon")
            checks.append(Check(f"metadata {info.path.step[0]}", measure, measured.value,
                                measured.threshold))
    return sorted(checks, key=lambda c: c.name)


def _prediction_checks(window: list[Observation], reference: Reference, bound: float,
                       max_change: float) -> list[Check]:
    scores = np.array([w.outputs[PROBABILITY][0] for w in window if PROBABILITY in w.outputs])
    if not len(scores) or reference.score_counts is None:
        note = "no probability in the answers" if not len(scores) else "no evaluation"
        return [Check("score distribution", "PSI", None, bound, note)]
    edges = histogram_quantile_edges(reference.score_counts, reference.score_upper)
    checks = [Check("score distribution", "PSI",
                    psi(regroup(reference.score_counts, reference.score_upper, edges),
                        shares(scores, edges)), bound,
                    f"median {np.median(scores):.3g}")]
    decisions = np.array([w.outputs[DECISION][0] for w in window if DECISION in w.outputs])
    if len(decisions) and reference.decision_share is not None:
        share = float(decisions.mean())
        checks.append(Check("positive decisions", "change in share",
                            abs(share - reference.decision_share), max_change,
                            f"{share:.3f} of the window against {reference.decision_share:.3f}"
                            " of the evaluation fold"))
    return checks


def _ood_check(window: list[Observation], bound: float) -> Check:
    flags = [w.outputs[IN_DISTRIBUTION][0] for w in window if IN_DISTRIBUTION in w.outputs]
    if not flags:
        return Check("out-of-distribution share", "share", None, bound,
                     "the answers carry no in_distribution")
    return Check("out-of-distribution share", "share",
                 float(np.mean([flag == 0 for flag in flags])), bound)
