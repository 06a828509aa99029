"""Ensemble: the fold models of a K-fold run as one serving model that averages them.

Each fold's Trainer validated on shards the others trained on; the Ensemble component
reports the out-of-fold AUC over all of them (every shard outside the evaluation fold scored
by the one model that never saw it), fits the ensemble's calibration map on those same
out-of-fold scores (each member's own; the map is applied to their average, which a member's
score on an unseen case stands for) and exports one SavedModel whose signatures average the
members, so the Evaluator, the Pusher and every client see a single model. Its
out-of-distribution guard is the first member's detector on that member's features: one
member's features answer "is this image of the trained kind" as well as the average, and
its threshold stays set on the fold that member never trained on. The component's
spec has one input per fold, which both LocalDagRunner and the Kubeflow compiler handle.
"""

from __future__ import annotations

import json
import os

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras
from scipy.stats import rankdata
from tfx import types
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter
from tfx.utils import path_utils

from modules.artifacts import VALIDATION_FILE
from modules.calibration import calibration_record, fit_calibration
from modules.export import export_model, keras_path
from modules.model import load_weights
from modules.ood import Guard, OodDetector, detector_path, guarded_network
from modules.settings import RunSettings
from modules.trainer import build

MEMBER_PREFIX = "model_"
OOF_AUC = "oof_auc"


def rank_auc(labels: list[int], scores: list[float]) -> float | None:
    """ROC AUC by the rank-sum formula, ties counted half; None without both classes."""
    labels_array = np.asarray(labels)
    positives = int(labels_array.sum())
    negatives = len(labels_array) - positives
    if not positives or not negatives:
        return None
    ranks = rankdata(scores)
    return float((ranks[labels_array == 1].sum() - positives * (positives + 1) / 2)
                 / (positives * negatives))


def score_auc(labels: list[int], scores: list) -> float | None:
    """The AUC of validation scores as run_fn records them: a binary model's probabilities,
    or, per example, the K class probabilities, whose AUC is the mean one-vs-rest AUC."""
    matrix = np.asarray(scores, dtype=float)
    if matrix.ndim == 1:
        return rank_auc(labels, scores)
    codes = np.asarray(labels)
    aucs = [rank_auc((codes == k).astype(int).tolist(), matrix[:, k].tolist())
            for k in range(matrix.shape[1])]
    aucs = [auc for auc in aucs if auc is not None]
    return float(np.mean(aucs)) if aucs else None


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict: dict, output_dict: dict, exec_properties: dict) -> None:
        settings = RunSettings.model_validate_json(exec_properties["settings"])
        member_keys = sorted((k for k in input_dict if k.startswith(MEMBER_PREFIX)),
                             key=lambda k: int(k[len(MEMBER_PREFIX):]))
        members, labels, scores, fold_aucs = [], [], [], []
        for key in member_keys:
            uri = input_dict[key][0].uri
            net = build(settings)
            load_weights(net, keras_path(path_utils.serving_model_path(uri)))
            net._name = f"member_{len(members)}"  # layer names must be unique in the ensemble
            members.append(net)
            with tf.io.gfile.GFile(os.path.join(uri, VALIDATION_FILE)) as f:
                fold = json.load(f)
            labels += fold["labels"]
            scores += fold["scores"]
            fold_aucs.append(score_auc(fold["labels"], fold["scores"]))

        first = members[0]
        inputs = {name: keras.Input(shape=tensor.shape[1:], name=name)
                  for name, tensor in zip(first.input_names, first.inputs)}
        # The first member's features ride along for the guard: every member runs once.
        first_score, first_features = guarded_network(first)(inputs)
        average = keras.layers.Average(name=first.output_names[0])(
            [first_score, *(net(inputs) for net in members[1:])])
        ensemble = keras.Model(inputs, average, name=f"medtfx_ensemble_{len(members)}")

        model = types.artifact_utils.get_single_instance(output_dict["model"])
        transform_output = tft.TFTransformOutput(input_dict["transform_graph"][0].uri)
        detector = detector_path(input_dict[member_keys[0]][0].uri)
        guard = (Guard(keras.Model(inputs, [average, first_features]),
                       OodDetector.load(detector)) if tf.io.gfile.exists(detector) else None)
        # on the out-of-fold scores
        calibration = fit_calibration(labels, scores, settings.calibration_class_bias)
        export_model(ensemble, transform_output, settings,
                     path_utils.serving_model_dir(model.uri), members=members, guard=guard,
                     calibration=calibration)
        oof_auc = score_auc(labels, scores)
        with tf.io.gfile.GFile(os.path.join(model.uri, VALIDATION_FILE), "w") as f:
            json.dump({OOF_AUC: oof_auc, "fold_aucs": fold_aucs, "examples": len(labels),
                       "calibration": calibration_record(labels, scores, calibration)}, f)
        if oof_auc is not None:
            model.set_float_custom_property(OOF_AUC, oof_auc)
        model.set_int_custom_property("ensemble_members", len(members))


def Ensemble(models: list[types.BaseChannel], transform_graph: types.BaseChannel,
             settings: str) -> base_component.BaseComponent:
    """The component averaging `models` (one Trainer output per fold)."""
    spec_class = type("EnsembleSpec", (ComponentSpec,), {
        "PARAMETERS": {"settings": ExecutionParameter(type=str)},
        "INPUTS": {**{f"{MEMBER_PREFIX}{k}": ChannelParameter(type=standard_artifacts.Model)
                      for k in range(len(models))},
                   "transform_graph": ChannelParameter(type=standard_artifacts.TransformGraph)},
        "OUTPUTS": {"model": ChannelParameter(type=standard_artifacts.Model)},
    })
    component_class = type("Ensemble", (base_component.BaseComponent,), {
        "SPEC_CLASS": spec_class,
        "EXECUTOR_SPEC": executor_spec.ExecutorClassSpec(Executor),
        "__module__": __name__,
    })
    spec = spec_class(settings=settings, transform_graph=transform_graph,
                      model=types.Channel(type=standard_artifacts.Model),
                      **{f"{MEMBER_PREFIX}{k}": channel for k, channel in enumerate(models)})
    return component_class(spec=spec)
