"""TF Serving warm-up requests: what a pushed model carries so that its first client request
is answered at full speed.

TF Serving replays `assets.extra/tf_serving_warmup_requests` (PredictionLog records) when it
loads a version, before the version takes traffic; without it, the first request pays for
the lazy initialisation of the graph (kernels, the Transform graph's tables, the threshold
asset). The requests hold a few real examples of the evaluation data, one PredictRequest per
signature that clients call, built from the model's own SignatureDefs so that a model with
or without a metadata branch gets the inputs its `serving_image` takes.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2
from tfx.types import artifact_utils
from tfx.types.artifact import Artifact

from modules.errors import MedtfxError
from modules.records import record_dataset
from modules.signatures import EXAMPLES
from modules.task import TaskSpec

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
# The signatures TF Serving's clients call: serialized tf.Examples, and encoded images with
# the model features. transform_features and slicing_features serve TFMA and debugging.
CLIENT_SIGNATURES = ("serving_default", "serving_image")
SERVE_TAG = "serve"


def evaluation_records(examples: Artifact, splits: list[str], count: int) -> list[bytes]:
    """The first `count` serialized tf.Examples of the evaluation splits, in split order, so
    that packaging the same model on the same data writes the same requests."""
    files = [path for split in splits
             for path in sorted(tf.io.gfile.glob(os.path.join(
                 artifact_utils.get_split_uri([examples], split), "*")))]
    records = [r.numpy() for r in record_dataset(files).take(count)]
    if not records:
        raise MedtfxError(f"no examples in the evaluation splits {', '.join(splits)} of "
                          f"{examples.uri}: no warm-up requests can be written")
    return records


def serving_meta_graph(model_dir: str) -> meta_graph_pb2.MetaGraphDef:
    """The meta graph TF Serving loads (tag `serve`), read from saved_model.pb alone."""
    saved_model = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(os.path.join(model_dir, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    for meta_graph in saved_model.meta_graphs:
        if SERVE_TAG in meta_graph.meta_info_def.tags:
            return meta_graph
    raise MedtfxError(f"{model_dir}: no meta graph tagged {SERVE_TAG!r}")


def _feature_values(examples: list[tf.train.Example], key: str, dtype: tf.DType,
                    missing: int) -> list:
    """Feature `key` of each example, as a client sends it: int64 codes (missing: the
    task's missing code) or bytes (required)."""
    values = []
    for index, example in enumerate(examples):
        feature = example.features.feature.get(key)
        if dtype == tf.string:
            if feature is None or not feature.bytes_list.value:
                raise MedtfxError(f"evaluation example {index} has no {key!r}: no "
                                  "warm-up request can be built")
            values.append(feature.bytes_list.value[0])
        else:
            values.append(feature.int64_list.value[0] if feature is not None
                          and feature.int64_list.value else missing)
    return values


def build_requests(model_dir: str, records: list[bytes],
                   task: TaskSpec) -> list[prediction_log_pb2.PredictionLog]:
    """One PredictRequest per client signature of the model in `model_dir`, each holding
    every record: the serialized examples for an `examples` input, else the feature of the
    same name read from each example."""
    examples = [tf.train.Example.FromString(r) for r in records]
    signatures = serving_meta_graph(model_dir).signature_def
    logs = []
    for name in CLIENT_SIGNATURES:
        request = predict_pb2.PredictRequest()
        request.model_spec.signature_name = name
        for key, info in signatures[name].inputs.items():
            dtype = tf.dtypes.as_dtype(info.dtype)
            values = (records if key == EXAMPLES.name
                      else _feature_values(examples, key, dtype, task.missing))
            request.inputs[key].CopyFrom(tf.make_tensor_proto(values, dtype=dtype))
        logs.append(prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request)))
    return logs


def write_requests(model_dir: str, logs: list[prediction_log_pb2.PredictionLog]) -> str:
    """Writes the warm-up file into the model's assets.extra; returns its path."""
    path = os.path.join(model_dir, WARMUP_FILE)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path) as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    return path


def read_requests(model_dir: str) -> list[predict_pb2.PredictRequest]:
    """The PredictRequests of a model's warm-up file, as TF Serving replays them."""
    path = os.path.join(model_dir, WARMUP_FILE)
    return [prediction_log_pb2.PredictionLog.FromString(r.numpy()).predict_log.request
            for r in tf.data.TFRecordDataset(path)]


def request_inputs(request: predict_pb2.PredictRequest) -> dict[str, np.ndarray]:
    """A request's inputs as arrays, by input name."""
    return {key: tf.make_ndarray(proto) for key, proto in request.inputs.items()}
