"""The Trainer's run_fn: strategy, warm start, two-stage fine-tuning, best epoch, export.

Settings come from the pipeline config through custom_config (pipeline/pipeline.py
run_settings), rebuilt as modules/settings.py's RunSettings; the input pipeline is
modules/inputs.py, the network modules/model.py, the export modules/export.py.
"""

from __future__ import annotations

import json
import math
import os
import tempfile

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras
from absl import logging
from tfx.components.trainer.fn_args_utils import FnArgs

from modules.artifacts import VALIDATION_FILE
from modules.augment import AugmentedTraining
from modules.calibration import calibration_record, fit_calibration
from modules.callbacks import BestEpoch, TrainingProgress
from modules.export import export_model, keras_path
from modules.inputs import class_weights, count_labels, input_fn
from modules.model import ModelConfigError, build_model, load_weights, set_backbone_trainable
from modules.ood import Guard, detector_path, fit_detector
from modules.schedule import RampSustainDecay
from modules.settings import RunSettings, TrainerSettings
from modules.signatures import predict
from modules.strategy import choose_strategy, wait_for_workers


def schedule_steps(train_steps: int | None, train_examples: int, batch_size: int,
                   epochs: int) -> tuple[int, int]:
    """(epochs, steps per epoch): `train_steps` split over the epochs when given, else
    `epochs` full passes over the training examples."""
    if train_steps:
        epochs = min(epochs, train_steps)
        return epochs, max(1, train_steps // epochs)
    return epochs, max(1, train_examples // batch_size)


def build(settings: RunSettings) -> keras.Model:
    return build_model(settings.backbone, settings.weights, settings.image_size, settings.dropout,
                       batchnorm_momentum=settings.batchnorm_momentum,
                       metadata_dim=settings.task.metadata_dim if settings.metadata else 0,
                       classes=len(settings.task.label.classes))


def warm_start(model: keras.Model, base_model: str | None, member: int | None) -> str | None:
    """Loads the last blessed model's weights (the fold's own member for an ensemble fold);
    returns the file used, None when there is no base model."""
    if not base_model:
        return None
    path = keras_path(base_model, member)
    if member is not None and not tf.io.gfile.exists(path):
        path = keras_path(base_model)  # the base was one model: every fold starts from it
    try:
        load_weights(model, path)
    except ModelConfigError as err:
        raise ModelConfigError(f"{err}; to train this model from scratch instead, set "
                               "warm_start=false") from err
    logging.info("Warm start from %s", path)
    return path


def compile_model(model: keras.Model, settings: RunSettings, steps_per_epoch: int,
                  lr_scale: float) -> None:
    """Cross-entropy with label smoothing; the AUC the best epoch is chosen on is, for more
    than two classes, the mean of the one-vs-rest AUCs, which a model answering the
    majority class cannot win (accuracy can: 87% on DDSM)."""
    classes = len(settings.task.label.classes)
    schedule = RampSustainDecay(
        start=settings.lr_start * lr_scale, peak=settings.learning_rate * lr_scale,
        minimum=settings.lr_min * lr_scale,
        ramp_steps=math.ceil(settings.lr_ramp_epochs * steps_per_epoch),
        sustain_steps=math.ceil(settings.lr_sustain_epochs * steps_per_epoch),
        decay=settings.lr_decay, steps_per_epoch=steps_per_epoch)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=(keras.losses.BinaryCrossentropy(label_smoothing=settings.label_smoothing)
              if classes == 2 else
              keras.losses.CategoricalCrossentropy(label_smoothing=settings.label_smoothing)),
        metrics=[keras.metrics.AUC(name="auc") if classes == 2 else
                 keras.metrics.AUC(name="auc", multi_label=True, num_labels=classes)])


def stages(settings: TrainerSettings, epochs: int) -> list[tuple[int, float, float]]:
    """(epochs, backbone fraction trainable, learning-rate factor) per fine-tuning stage."""
    frozen = min(settings.frozen_epochs, epochs - 1)
    if not frozen:
        return [(epochs, 1.0, 1.0)]
    return [(frozen, 0.0, 1.0),
            (epochs - frozen, settings.unfreeze_fraction, settings.finetune_lr_scale)]


def validation_scores(model: keras.Model, dataset: tf.data.Dataset, tta: int = 1) -> dict:
    """Labels and scores of the restored model on the validation shards, for the
    out-of-fold AUC of an ensemble and the calibration fit: a class code and the positive
    class's probability each, or the K class probabilities for more than two classes. The
    score is the one the serving graph calibrates: the mean over `tta` orientations."""
    labels, scores = [], []
    for features, label in dataset:
        output = predict(model, features, tta).numpy()
        scores.append(output.ravel() if output.shape[-1] == 1 else output)
        label = label.numpy()
        labels.append(label.argmax(-1) if label.ndim > 1 else label.ravel())
    return {"labels": np.concatenate(labels).astype(int).tolist(),
            "scores": np.concatenate(scores).astype(float).tolist()}


def fit_guard(model: keras.Model, fn_args: FnArgs, validation: tf.data.Dataset,
              tf_transform_output: tft.TFTransformOutput, settings: RunSettings,
              batch_size: int) -> tuple[Guard | None, dict | None]:
    """The out-of-distribution guard of the restored model (modules/ood.py), on training
    images read as the validation fold is (no augmentation), and what its fit took; none
    when `trainer.ood.enabled` is off."""
    if not settings.ood.enabled:
        return None, None
    plain = input_fn(fn_args.train_files, fn_args.data_accessor, tf_transform_output,
                     batch_size, training=False, settings=settings)
    guard, stats = fit_detector(model, plain, validation, settings.ood.max_images,
                                settings.ood.quantile, batch_size)
    logging.info("Out-of-distribution guard: %s", stats)
    return guard, stats


def run_fn(fn_args: FnArgs) -> None:
    """TFX Trainer entry point."""
    settings = RunSettings.from_custom_config(fn_args.custom_config)
    keras.backend.clear_session()
    keras.utils.set_random_seed(settings.seed)
    strategy, strategy_name = choose_strategy(settings.mixed_precision)
    replicas = strategy.num_replicas_in_sync
    batch_size = settings.batch_size * replicas
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_graph_path)

    names = settings.task.label.classes
    counts = count_labels(fn_args.train_files, settings.task.label.key, len(names))
    epochs, steps_per_epoch = schedule_steps(fn_args.train_steps, sum(counts), batch_size,
                                             settings.epochs)
    weights = class_weights(counts, names) if settings.class_balance == "weights" else None
    logging.info("Training on %s examples: %d epochs of %d steps, global batch %d, class "
                 "balance %s %s", ", ".join(f"{n} {c}" for n, c in zip(names, counts)),
                 epochs, steps_per_epoch, batch_size, settings.class_balance, weights or "")

    static = strategy_name == "TPUStrategy"  # TPUs compile for one batch shape
    train = input_fn(fn_args.train_files, fn_args.data_accessor, tf_transform_output,
                     batch_size, training=True, settings=settings, weights=weights)
    validation = input_fn(fn_args.eval_files, fn_args.data_accessor, tf_transform_output,
                          batch_size, training=False, settings=settings, drop_remainder=static)
    validation_steps = fn_args.eval_steps or None

    with strategy.scope():
        model = build(settings)
        warm_start_from = warm_start(model, fn_args.base_model if settings.warm_start else None,
                                     settings.ensemble_member)
        trained = AugmentedTraining(model, settings.augment) if settings.augment.enabled else model
    best = BestEpoch("val_auc", settings.early_stopping_patience)
    callbacks = [best, keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir),
                 TrainingProgress(epochs, steps_per_epoch)]
    done = 0
    for stage_epochs, trainable, lr_factor in stages(settings, epochs):
        if best.stopped:
            break
        with strategy.scope():
            set_backbone_trainable(model, trainable)
            compile_model(trained, settings, steps_per_epoch, lr_factor * replicas)
        trained.fit(train, initial_epoch=done, epochs=done + stage_epochs,
                  steps_per_epoch=steps_per_epoch, validation_data=validation,
                  validation_steps=validation_steps, callbacks=callbacks, verbose=2)
        done += stage_epochs
    best.restore()
    guard, guard_stats = fit_guard(model, fn_args, validation, tf_transform_output, settings,
                                   batch_size)

    # Every worker exports and scores: under MultiWorkerMirroredStrategy reading a synced
    # variable (BatchNorm statistics, in a save or a forward pass) is a collective that all
    # workers must join. Only the chief writes the Trainer's outputs; the others export
    # into a local directory deleted at once.
    # The calibration map is fitted on the validation fold only, before the export that
    # stores it in the serving graph.
    chief = strategy.extended.should_checkpoint
    scores = validation_scores(model, validation.take(validation_steps or -1), settings.tta)
    calibration = fit_calibration(scores["labels"], scores["scores"],
                                  settings.calibration_class_bias)
    with tempfile.TemporaryDirectory() as scratch:
        export_model(model, tf_transform_output, settings, fn_args.serving_model_dir if chief
                     else os.path.join(scratch, "Format-Serving"), guard=guard,
                     calibration=calibration)
    if chief:
        scores.update(calibration=calibration_record(scores["labels"], scores["scores"],
                                                     calibration),
                      best_epoch=best.best_epoch, epochs_run=best.epochs_seen,
                      steps_run=int(trained.optimizer.iterations.numpy()),
                      best_val_auc=best.best, strategy=strategy_name, replicas=replicas,
                      warm_start_from=warm_start_from, ood=guard_stats)
        model_dir = os.path.dirname(fn_args.serving_model_dir.rstrip("/"))
        if guard is not None:  # the Ensemble's guard is its first member's
            guard.detector.save(detector_path(model_dir))
        with tf.io.gfile.GFile(os.path.join(model_dir, VALIDATION_FILE), "w") as f:
            json.dump(scores, f)
    # TFX's executor checks on every worker that the model exists: none returns before it.
    wait_for_workers(strategy)
