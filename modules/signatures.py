"""Serving signatures of the exported model: where a model takes its requests.

`serving_default` takes serialized tf.Examples (TF Serving, and TFMA, which slices on the raw
features the examples carry); `serving_image` takes encoded JPEG/PNG bytes (and, for a model
with a metadata branch, the task's model features, e.g. sex, age and site codes, -1 when
unknown) for REST clients. Both run the Transform graph before the network, so serving
decodes exactly as training did; both check each image against the image limits before
decoding it, and each request against the batch bound. Every probability is calibrated
(modules/calibration_graph.py) before any decision. A binary model returns the probability of the positive
class and a decision at the operating threshold; a model of K classes returns the K class
probabilities, the top class's code and name, and, when the task names urgent classes, their
summed probability and a decision at the operating threshold. A model with an
out-of-distribution guard (modules/ood.py) also returns `ood_score` and `in_distribution`
(0: the image is unlike the training images), from the same pass of the network at
orientation 0. `transform_features` shows
what the network sees; `slicing_features` derives the features the Evaluator slices on but
the raw examples lack (the buckets of bucketed numbers, such as the age bucket). `explain`
takes what `serving_image` takes and answers Grad-CAM heat maps (modules/gradcam.py), in a
function of its own so serving_default's graph stays as it was.
"""

from __future__ import annotations

import os

import tensorflow as tf
import tensorflow_transform as tft

from modules.artifacts import THRESHOLD_ASSET
from modules.augment import orient
from modules.calibration import CalibrationMap
from modules.calibration_graph import ServedCalibration
from modules.ood import Guard
from modules.gradcam import explain, explainable
from modules.preprocessing import transform
from modules.settings import ImageLimits
from modules.task import IMAGE_INPUT, METADATA_KEY, TaskSpec, bucket

EXAMPLES = tf.TensorSpec([None], tf.string, name="examples")
PREDICTION_KEY = "probability"  # binary: the positive class; K classes: the urgent ones
PROBABILITIES_KEY = "probabilities"  # K classes: each class's probability [B, K]
CLASS_ID_KEY = "class_id"  # K classes: the top class's code
CLASS_NAME_KEY = "class_name"  # ... and its name
DECISION_KEY = "decision"  # 1: refer the case as possibly positive (or urgent)
SLICING_FEATURES = "slicing_features"
EXPLAIN = "explain"  # Grad-CAM heat maps (modules/gradcam.py), for people, not for TFMA
UNSET_THRESHOLD = 0.5  # until ModelPackager writes the one chosen on evaluation data


class OperatingThreshold(tf.Module):
    """The decision threshold, read from a SavedModel asset when the model loads.

    The threshold is chosen after training, on evaluation data; the packaging step rewrites
    the asset in the copy that is pushed, so the serving graph never changes after training.
    """

    def __init__(self, asset_dir: str):
        super().__init__()
        path = os.path.join(asset_dir, THRESHOLD_ASSET)
        with open(path, "w") as f:
            f.write(f"{UNSET_THRESHOLD}\n")
        self.asset = tf.saved_model.Asset(path)
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.TextFileInitializer(
                self.asset, tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER,
                tf.string, tf.lookup.TextFileIndex.WHOLE_LINE),
            default_value="nan")

    @tf.function(input_signature=[])
    def __call__(self) -> tf.Tensor:
        return tf.strings.to_number(self.table.lookup(tf.constant(0, tf.int64)))


def raw_spec(task: TaskSpec) -> dict:
    """The raw features serving reads from serialized tf.Examples: the image and the model's
    metadata; metadata a client left out is missing, as in the data."""
    return {task.image_key: tf.io.FixedLenFeature([], tf.string),
            **{key: tf.io.FixedLenFeature([], tf.int64, default_value=task.missing)
               for key in task.model_features}}


def transform_examples(tft_layer, examples: tf.Tensor, task: TaskSpec,
                       limits: ImageLimits) -> dict:
    """Serialized tf.Examples through the Transform graph, exactly as serving runs it."""
    return transform(tft_layer, tf.io.parse_example(examples, raw_spec(task)), task, limits)


def predict(model, transformed: dict, tta: int, first: tf.Tensor | None = None) -> tf.Tensor:
    """The model's probabilities ([B, 1] binary, [B, K] otherwise), averaged over the first
    `tta` orientations.

    Test-time augmentation lives in the serving graph, so TF Serving, the Evaluator and every
    client get the same averaged score. The orientations run one after another: run side by
    side, as the graph would otherwise schedule them, each holds its own activations (8 at
    once took 1.7x the memory of one, B0 at 512 px, for no gain in speed). `first`:
    orientation 0's probabilities when the caller has them (the guard's pass computes them).
    """
    inputs = {name: transformed[name] for name in model.input_names}
    total = first
    for k in range(0 if first is None else 1, tta):
        with tf.control_dependencies([] if total is None else [total]):
            score = model({**inputs, IMAGE_INPUT: orient(inputs[IMAGE_INPUT], k)},
                          training=False)
        total = score if total is None else total + score
    return total / float(tta) if tta > 1 else total


def within_batch(inputs: tf.Tensor, max_batch: int) -> tf.Tensor:
    """`inputs` [B, ...], once B is checked against the serving batch bound."""
    batch = tf.shape(inputs, out_type=tf.int64)[0]
    check = tf.debugging.Assert(batch <= max_batch, [tf.strings.format(
        "a request of {} images, above limits.batch ({})", (batch, max_batch))])
    with tf.control_dependencies([check]):
        return tf.identity(inputs)


def make_signatures(model, tf_transform_output: tft.TFTransformOutput, task: TaskSpec,
                    asset_dir: str, tta: int, limits: ImageLimits,
                    guard: Guard | None = None,
                    calibration: CalibrationMap | None = None) -> dict:
    """Signatures for `model.save`; attaches the Transform layer, the calibration map (the
    identity when none is given), the threshold and the out-of-distribution detector so the
    model tracks them. Each request is checked against `limits.batch`, each image against
    the image limits."""
    model.tft_layer = tf_transform_output.transform_features_layer()
    model.calibration = ServedCalibration(calibration or CalibrationMap(), task.binary)
    model.operating_threshold = OperatingThreshold(asset_dir)
    if guard is not None:
        model.ood_detector = guard.detector
    bucketed_spec = {n.key: tf.io.FixedLenFeature([], tf.int64, default_value=task.missing)
                     for n in task.bucketed}

    names = tf.constant(task.label.classes)

    def decide(probability: tf.Tensor) -> dict:
        decision = tf.cast(probability >= model.operating_threshold(), tf.int64)
        return {PREDICTION_KEY: probability, DECISION_KEY: decision}

    def respond(transformed: dict) -> dict:
        """The answer, with `ood_score` and `in_distribution` when the model has a guard."""
        first, guarded = guard(transformed) if guard is not None else (None, {})
        probabilities = model.calibration(predict(model, transformed, tta, first))
        return {**classify(probabilities), **guarded}

    def classify(probabilities: tf.Tensor) -> dict:
        if task.binary:
            return decide(probabilities)
        top = tf.argmax(probabilities, axis=-1)
        out = {PROBABILITIES_KEY: probabilities, CLASS_ID_KEY: top,
               CLASS_NAME_KEY: tf.gather(names, top)}
        if task.urgent_ids:
            out.update(decide(tf.reduce_sum(tf.gather(probabilities, task.urgent_ids, axis=-1),
                                            axis=-1, keepdims=True)))
        return out

    @tf.function(input_signature=[EXAMPLES])
    def serve_examples(examples):
        return respond(transform_examples(model.tft_layer,
                                          within_batch(examples, limits.batch), task, limits))

    uses_metadata = METADATA_KEY in model.input_names
    image_specs = [tf.TensorSpec([None], tf.string, name=task.image_key)] + (
        [tf.TensorSpec([None], tf.int64, name=key) for key in task.model_features]
        if uses_metadata else [])

    def image_request(image, metadata) -> dict:
        image = within_batch(image, limits.batch)
        missing = tf.fill(tf.shape(image), tf.constant(task.missing, tf.int64))
        return {task.image_key: image,
                **{key: metadata[i] if metadata else missing
                   for i, key in enumerate(task.model_features)}}

    @tf.function(input_signature=image_specs)
    def serve_images(image, *metadata):
        return respond(transform(model.tft_layer, image_request(image, metadata), task, limits))

    @tf.function(input_signature=image_specs)
    def explain_images(image, *metadata):
        raw = image_request(image, metadata)
        return explain(model, transform(model.tft_layer, raw, task, limits),
                       raw[task.image_key], task)

    @tf.function(input_signature=[EXAMPLES])
    def transform_features(examples):
        return transform_examples(model.tft_layer, examples, task, limits)

    # The functions, not their concrete functions: a concrete function traced over a
    # multi-worker model's distributed variables cannot be saved.
    signatures = {"serving_default": serve_examples, "serving_image": serve_images,
                  "transform_features": transform_features}
    if explainable(model):  # a separate function: serving_default's graph is untouched
        signatures[EXPLAIN] = explain_images
    if bucketed_spec:
        @tf.function(input_signature=[EXAMPLES])
        def slicing_features(examples):
            values = tf.io.parse_example(examples, bucketed_spec)
            return {n.slice_key: bucket(values[n.key], n.buckets, task.missing)
                    for n in task.bucketed}

        signatures[SLICING_FEATURES] = slicing_features
    return signatures
