"""Serving signatures of the exported model: where a model takes its requests.

`serving_default` takes serialized tf.Examples (TF Serving, and TFMA, which slices on the raw
features the examples carry), runs the Transform graph before the network, so serving
decodes exactly as training did, and returns the probability of melanoma and a decision at
the operating threshold. `slicing_features` derives the features the Evaluator slices on but
the raw examples lack (the age bucket).
"""

from __future__ import annotations

import os

import tensorflow as tf
import tensorflow_transform as tft

from modules import features as F

EXAMPLES = tf.TensorSpec([None], tf.string, name="examples")
PREDICTION_KEY = "probability"
DECISION_KEY = "decision"  # 1: refer the lesion as possibly malignant
IMAGE_SPEC = {F.IMAGE_KEY: tf.io.FixedLenFeature([], tf.string)}
THRESHOLD_ASSET = "operating_threshold.txt"
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


def transform_examples(tft_layer, examples: tf.Tensor) -> dict:
    """Serialized tf.Examples through the Transform graph, exactly as serving runs it."""
    return tft_layer(tf.io.parse_example(examples, IMAGE_SPEC))


def make_signatures(model, tf_transform_output: tft.TFTransformOutput,
                    age_boundaries: list[int], asset_dir: str) -> dict:
    """Signatures for `model.save`; attaches the Transform layer and the threshold so the
    model tracks them."""
    model.tft_layer = tf_transform_output.transform_features_layer()
    model.operating_threshold = OperatingThreshold(asset_dir)
    age_spec = {F.AGE_KEY: tf.io.FixedLenFeature([], tf.int64, default_value=F.MISSING)}

    @tf.function(input_signature=[EXAMPLES])
    def serve_examples(examples):
        transformed = transform_examples(model.tft_layer, examples)
        probability = model(transformed, training=False)
        decision = tf.cast(probability >= model.operating_threshold(), tf.int64)
        return {PREDICTION_KEY: probability, DECISION_KEY: decision}

    @tf.function(input_signature=[EXAMPLES])
    def slicing_features(examples):
        ages = tf.io.parse_example(examples, age_spec)[F.AGE_KEY]
        return {F.AGE_BUCKET_KEY: F.age_bucket(ages, age_boundaries)}

    return {
        "serving_default": serve_examples.get_concrete_function(),
        "slicing_features": slicing_features.get_concrete_function(),
    }
