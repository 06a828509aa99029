"""Batch scoring of the test shards, without a pipeline run: PredictionLogs as BulkInferrer
writes them become the submission CSV; the BulkInferrer's batch bound; unlabelled examples
validated in the SERVING environment; and the scoring switch."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from components.submission_writer import (SubmissionError, read_prediction_logs,
                                          submission_rows, write_submission)
from modules.task import TaskSpec
from pipeline.config import load_config, with_scoring_resolved
from pipeline.core.errors import ConfigError

BINARY = TaskSpec()
THREE = TaskSpec.model_validate({"label": {"classes": ["normal", "benign", "malignant"]}})


def prediction_log(name: str | None, outputs: dict[str, np.ndarray]) -> \
        prediction_log_pb2.PredictionLog:
    """One example's PredictionLog as tfx_bsl's predict handler writes it: the serialized
    example as a [1] string tensor, each output with a batch dimension of 1."""
    example = tf.train.Example()
    example.features.feature["patient_id"].int64_list.value.append(7)
    if name is not None:
        example.features.feature["image_name"].bytes_list.value.append(name.encode())
    log = prediction_log_pb2.PredictionLog()
    request = log.predict_log.request.inputs["examples"]
    request.dtype = tf.string.as_datatype_enum
    request.tensor_shape.dim.add().size = 1
    request.string_val.append(example.SerializeToString())
    for key, value in outputs.items():
        log.predict_log.response.outputs[key].CopyFrom(
            tf.make_tensor_proto(np.expand_dims(value, 0)))
    return log


def write_logs(folder: str, logs: list) -> str:
    """`logs` where BulkInferrer puts them: a gzipped TFRecord file in the artifact."""
    os.makedirs(folder)
    path = os.path.join(folder, "prediction_logs-00000-of-00001.gz")
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    return folder


def read_csv(path: str) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_binary_logs_become_image_name_target_rows_sorted_by_name(tmp_path):
    scores = {"ISIC_0000002": 0.91, "ISIC_0000000": 0.0012, "ISIC_0000001": 0.5}
    logs = [prediction_log(name, {"probability": np.array([p], np.float32),
                                  "decision": np.array([int(p >= 0.3)])})
            for name, p in scores.items()]
    folder = write_logs(str(tmp_path / "inference"), logs)
    rows = submission_rows(read_prediction_logs(folder), BINARY)
    path = str(tmp_path / "submission.csv")
    write_submission(rows, BINARY, path)
    table = read_csv(path)
    assert table[0] == ["image_name", "target"]
    assert [row[0] for row in table[1:]] == sorted(scores)
    for name, value in table[1:]:
        assert float(value) == pytest.approx(scores[name], rel=1e-5)


def test_a_multiclass_model_gets_one_probability_column_per_class(tmp_path):
    probabilities = np.array([0.2, 0.3, 0.5], np.float32)
    log = prediction_log("b.png", {"probabilities": probabilities,
                                   "class_id": np.array(2), "class_name": np.array(b"malignant")})
    rows = submission_rows([log, prediction_log("a.png", {"probabilities": probabilities[::-1]})],
                           THREE)
    path = str(tmp_path / "submission.csv")
    write_submission(rows, THREE, path)
    table = read_csv(path)
    assert table[0] == ["image_name", "normal", "benign", "malignant"]
    assert [row[0] for row in table[1:]] == ["a.png", "b.png"]
    np.testing.assert_allclose([float(v) for v in table[2][1:]], probabilities, rtol=1e-5)


def test_a_test_example_without_an_image_name_is_refused():
    log = prediction_log(None, {"probability": np.array([0.4], np.float32)})
    with pytest.raises(SubmissionError, match="without one 'image_name'"):
        submission_rows([log], BINARY)


def test_bulk_inferrer_asks_beam_for_batches_within_the_bound():
    from components.bulk_inferrer import Executor

    spec = Executor()._get_inference_spec(
        "/model", {"model_spec": '{"model_signature_name": ["serving_default"]}',
                   "max_batch": 48})
    assert spec.batch_parameters.max_batch_size == 48
    assert list(spec.saved_model_spec.signature_name) == ["serving_default"]


def test_unlabelled_examples_are_validated_without_the_label_but_with_its_domains(tmp_path):
    import pandas as pd
    import tensorflow_data_validation as tfdv

    from components.serving_validator import Executor
    from tests.helpers import load_schema

    def anomalies(sex: int) -> dict:
        statistics = tfdv.generate_statistics_from_dataframe(pd.DataFrame({
            "image": [b"jpeg"] * 3, "image_name": [b"a", b"b", b"c"], "patient_id": [1, 2, 3],
            "sex": [0, 1, sex], "age_approx": [30, 45, -1],
            "anatom_site_general_challenge": [0, 1, 2]}))
        out = str(tmp_path / f"sex{sex}")
        return dict(Executor()._Validate({"statistics": statistics, "schema": load_schema()},
                                         {"schema_diff_path": out}).anomaly_info)

    assert anomalies(sex=1) == {}  # no `target`, as in every test shard
    assert list(anomalies(sex=7)) == ["sex"]


@pytest.mark.parametrize("setting,found,expected", [
    ("auto", 4, True), ("auto", 0, False), (True, 4, True), (False, 4, False)])
def test_scoring_is_on_where_the_data_root_has_test_shards_unless_switched(setting, found,
                                                                           expected):
    config = load_config(None, [f"scoring.test_shards={str(setting).lower()}"])
    assert with_scoring_resolved(config, found).scoring.test_shards is expected


def test_scoring_switched_on_without_test_shards_or_above_the_serving_batch_is_refused():
    with pytest.raises(ConfigError, match="holds no test shards"):
        with_scoring_resolved(load_config(None, ["scoring.test_shards=true"]), 0)
    with pytest.raises(ConfigError, match="scoring.max_batch 2048 is above limits.batch"):
        load_config(None, ["scoring.max_batch=2048"])
