"""Serving signatures of the exported model: where a model takes its requests.

`serving_default` takes serialized tf.Examples (TF Serving, and TFMA, which slices on the raw
features the examples carry) and runs the Transform graph before the network, so serving
decodes exactly as training did. `slicing_features` derives the features the Evaluator slices
on but the raw examples lack (the age bucket).
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_transform as tft

from modules import features as F

EXAMPLES = tf.TensorSpec([None], tf.string, name="examples")
PREDICTION_KEY = "probability"
IMAGE_SPEC = {F.IMAGE_KEY: tf.io.FixedLenFeature([], tf.string)}


def transform_examples(tft_layer, examples: tf.Tensor) -> dict:
    """Serialized tf.Examples through the Transform graph, exactly as serving runs it."""
    return tft_layer(tf.io.parse_example(examples, IMAGE_SPEC))


def make_signatures(model, tf_transform_output: tft.TFTransformOutput,
                    age_boundaries: list[int]) -> dict:
    """Signatures for `model.save`; attaches the Transform layer so the model tracks it."""
    model.tft_layer = tf_transform_output.transform_features_layer()
    age_spec = {F.AGE_KEY: tf.io.FixedLenFeature([], tf.int64, default_value=F.MISSING)}

    @tf.function(input_signature=[EXAMPLES])
    def serve_examples(examples):
        transformed = transform_examples(model.tft_layer, examples)
        return {PREDICTION_KEY: model(transformed, training=False)}

    @tf.function(input_signature=[EXAMPLES])
    def slicing_features(examples):
        ages = tf.io.parse_example(examples, age_spec)[F.AGE_KEY]
        return {F.AGE_BUCKET_KEY: F.age_bucket(ages, age_boundaries)}

    return {
        "serving_default": serve_examples.get_concrete_function(),
        "slicing_features": slicing_features.get_concrete_function(),
    }
