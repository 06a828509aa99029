"""The Trainer's run_fn: input pipeline, fit, export.

Images arrive encoded; the input pipeline parses batches of examples and applies the
Transform graph in parallel tf.data calls, so decoding overlaps training and nothing
decoded is ever written to disk.
"""

from __future__ import annotations

import math
import os
import tempfile

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402
import tensorflow_transform as tft  # noqa: E402
import tf_keras as keras  # noqa: E402
from absl import logging  # noqa: E402
from tfx import v1 as tfx  # noqa: E402
from tfx_bsl.public import tfxio  # noqa: E402

from modules import features as F  # noqa: E402
from modules.augment import random_orientation  # noqa: E402
from modules.model import build_model  # noqa: E402
from modules.schedule import RampSustainDecay  # noqa: E402
from modules.signatures import make_signatures  # noqa: E402


def input_fn(file_pattern: list[str], data_accessor: tfx.components.DataAccessor,
             tf_transform_output: tft.TFTransformOutput, batch_size: int, *,
             training: bool, augment: bool = False, seed: int = 0) -> tf.data.Dataset:
    """Batches of ({image}, float label); training data repeats, shuffles and augments."""
    dataset = data_accessor.tf_dataset_factory(
        file_pattern,
        tfxio.TensorFlowDatasetOptions(
            batch_size=batch_size, label_key=F.LABEL_KEY, shuffle=training,
            shuffle_seed=seed, num_epochs=None if training else 1,
            drop_final_batch=training),
        tf_transform_output.raw_metadata.schema)
    transform = tf_transform_output.transform_features_layer()

    def apply_transform(index: tf.Tensor, batch: tuple) -> tuple:
        raw, label = batch
        images = transform(raw)[F.IMAGE_KEY]
        if augment:
            images = random_orientation(images, tf.stack([tf.constant(seed, tf.int64), index]))
        return {F.IMAGE_KEY: images}, tf.cast(label, tf.float32)

    return dataset.enumerate().map(apply_transform, num_parallel_calls=tf.data.AUTOTUNE) \
        .prefetch(tf.data.AUTOTUNE)


def count_examples(file_patterns: list[str]) -> int:
    files = [f for pattern in file_patterns for f in tf.io.gfile.glob(pattern)]
    records = tf.data.TFRecordDataset(files, compression_type="GZIP")
    return int(records.reduce(tf.constant(0, tf.int64), lambda n, _: n + 1))


def schedule_steps(train_steps: int | None, train_examples: int, batch_size: int,
                   epochs: int) -> tuple[int, int]:
    """(epochs, steps per epoch): `train_steps` split over the epochs when given, else
    `epochs` full passes over the training examples."""
    if train_steps:
        epochs = min(epochs, train_steps)
        return epochs, max(1, train_steps // epochs)
    return epochs, max(1, train_examples // batch_size)


def run_fn(fn_args: tfx.components.FnArgs) -> None:
    """TFX Trainer entry point; settings come from the pipeline config via custom_config."""
    cfg = fn_args.custom_config
    keras.backend.clear_session()
    keras.utils.set_random_seed(cfg["seed"])
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_graph_path)
    batch_size = cfg["batch_size"]

    train_examples = 0 if fn_args.train_steps else count_examples(fn_args.train_files)
    epochs, steps_per_epoch = schedule_steps(fn_args.train_steps, train_examples, batch_size,
                                             cfg["epochs"])
    logging.info("Training %d epochs of %d steps, batch %d", epochs, steps_per_epoch,
                 batch_size)

    train = input_fn(fn_args.train_files, fn_args.data_accessor, tf_transform_output,
                     batch_size, training=True, augment=cfg["augment"], seed=cfg["seed"])
    validation = input_fn(fn_args.eval_files, fn_args.data_accessor, tf_transform_output,
                          batch_size, training=False)

    model = build_model(cfg["backbone"], cfg["weights"], cfg["image_size"], cfg["dropout"],
                        batchnorm_momentum=cfg["batchnorm_momentum"])
    schedule = RampSustainDecay(
        start=cfg["lr_start"], peak=cfg["learning_rate"], minimum=cfg["lr_min"],
        ramp_steps=math.ceil(cfg["lr_ramp_epochs"] * steps_per_epoch),
        sustain_steps=math.ceil(cfg["lr_sustain_epochs"] * steps_per_epoch),
        decay=cfg["lr_decay"], steps_per_epoch=steps_per_epoch)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=keras.losses.BinaryCrossentropy(label_smoothing=cfg["label_smoothing"]),
        metrics=[keras.metrics.AUC(name="auc")])
    model.fit(train, epochs=epochs, steps_per_epoch=steps_per_epoch,
              validation_data=validation, validation_steps=fn_args.eval_steps or None,
              callbacks=[keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir)],
              verbose=2)

    with tempfile.TemporaryDirectory() as asset_dir:
        signatures = make_signatures(model, tf_transform_output, cfg["age_buckets"], asset_dir)
        model.save(fn_args.serving_model_dir, save_format="tf", signatures=signatures)
