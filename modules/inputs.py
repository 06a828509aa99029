"""The Trainer's input pipeline: where encoded examples become training batches.

Images arrive encoded; batches of examples are parsed and run through the Transform graph in
parallel tf.data calls, so decoding overlaps training and nothing decoded is written to
disk. Class balancing and the draws of each image's augmentation happen here and only here
(the training step applies the draws, modules/augment.py): the Transform graph is also the
serving graph and must stay deterministic.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from tfx.components.trainer.fn_args_utils import DataAccessor
from tfx_bsl.public import tfxio

from modules.augment import AUGMENT_KEY, draw
from modules.preprocessing import transform
from modules.records import record_dataset
from modules.settings import RunSettings
from modules.task import IMAGE_INPUT


def count_labels(file_patterns: list[str], label_key: str, classes: int = 2) -> list[int]:
    """Examples of each class code in the TFRecords; parses only the label."""
    files = [f for pattern in file_patterns for f in tf.io.gfile.glob(pattern)]
    spec = {label_key: tf.io.FixedLenFeature([], tf.int64)}
    labels = record_dataset(files, num_parallel_reads=4) \
        .batch(1024).map(lambda r: tf.io.parse_example(r, spec)[label_key])
    counts = np.zeros(classes, np.int64)
    for batch in labels.as_numpy_iterator():
        counts += np.bincount(batch, minlength=classes)[:classes]
    return counts.tolist()


def class_weights(counts: list[int], names: list[str]) -> tuple[float, ...]:
    """Inverse class shares, scaled so the mean weight over the data is 1 (the learning rate
    keeps its meaning)."""
    absent = [name for name, count in zip(names, counts) if not count]
    if absent:
        raise ValueError(f"the training shards hold no example of {', '.join(absent)} "
                         f"(counts {dict(zip(names, counts))}): every class is needed to "
                         "train a classifier")
    total = sum(counts)
    return tuple(total / (len(counts) * float(count)) for count in counts)


def balanced_batches(raw: tf.data.Dataset, batch_size: int, seed: int,
                     classes: int) -> tf.data.Dataset:
    """Batches drawn evenly from each class out of an endless stream of raw examples."""
    examples = raw.unbatch()
    by_class = [examples.filter(lambda _, label, c=c: tf.reduce_all(tf.equal(label, c))).repeat()
                for c in range(classes)]
    return tf.data.Dataset.sample_from_datasets(by_class, [1.0 / classes] * classes,
                                                seed=seed) \
        .batch(batch_size, drop_remainder=True)


def input_fn(file_pattern: list[str], data_accessor: DataAccessor,
             tf_transform_output: tft.TFTransformOutput, batch_size: int, *,
             training: bool, settings: RunSettings,
             weights: tuple[float, ...] | None = None,
             drop_remainder: bool = False) -> tf.data.Dataset:
    """Batches of (transformed features, label[, weight]): the float label of a binary
    task, the one-hot label of a multi-class one (label smoothing needs it).

    Training data repeats, shuffles, carries each image's augmentation draws per
    `settings.augment` (AUGMENT_KEY) and, with `weights`, each example's class weight as a
    third element: a weight inside the dataset is one Keras cannot silently drop (the
    notebooks' class_weight array was ignored).
    """
    seed, task = settings.seed, settings.task
    sampling = training and settings.class_balance == "sampling"
    dataset = data_accessor.tf_dataset_factory(
        file_pattern,
        tfxio.TensorFlowDatasetOptions(
            batch_size=batch_size, label_key=task.label.key, shuffle=training,
            shuffle_seed=seed, shuffle_buffer_size=settings.shuffle_buffer,
            num_epochs=None if training else 1,
            drop_final_batch=training or drop_remainder),
        tf_transform_output.raw_metadata.schema)
    if sampling:
        dataset = balanced_batches(dataset, batch_size, seed, len(task.label.classes))
    tft_layer = tf_transform_output.transform_features_layer()
    augment = settings.augment if training and settings.augment.enabled else None

    def prepare(index: tf.Tensor, batch: tuple) -> tuple:
        raw, label = batch
        features = transform(tft_layer, raw, task, settings.limits)
        if augment:
            seed_pair = tf.stack([tf.constant(seed, tf.int64), index])
            features[AUGMENT_KEY] = draw(tf.shape(features[IMAGE_INPUT])[0],
                                         settings.image_size, seed_pair, augment)
        code = tf.cast(tf.reshape(label, [-1]), tf.int32)
        target = (tf.cast(code, tf.float32) if task.binary
                  else tf.one_hot(code, len(task.label.classes)))
        if weights is None or sampling:
            return features, target
        return features, target, tf.gather(tf.constant(weights), code)

    # Several workers (MultiWorkerMirroredStrategy) split each global batch among them:
    # every worker reads and decodes all examples and keeps its share, so batches, their
    # order and their augmentation are those of one worker (sharding by file would save
    # the decoding, but each worker would then draw batches of its own).
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = \
        tf.data.experimental.AutoShardPolicy.DATA
    return dataset.enumerate().map(prepare, num_parallel_calls=tf.data.AUTOTUNE) \
        .prefetch(tf.data.AUTOTUNE).with_options(options)
