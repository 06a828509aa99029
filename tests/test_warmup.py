"""TF Serving warm-up requests and the load check before push (pipeline/serving/): requests
built from evaluation examples replay against the exported model, and a model that does
not load or answer is refused with the reason."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from modules import features as F
from modules.task import TaskSpec
from pipeline.ops.summary import failed_check, summary_lines
from pipeline.serving.load_check import FailedLoad, check_model, run_requests
from pipeline.serving.warmup import (CLIENT_SIGNATURES, WARMUP_FILE, build_requests,
                                     evaluation_records, read_requests, request_inputs,
                                     write_requests)
from tests.helpers import write_examples
from tests.test_trainer import train

EVALUATION = ["train12", "train13", "train14"]


@pytest.fixture(scope="module")
def records(tiny_data, tmp_path_factory) -> list[bytes]:
    """Four evaluation examples, read from an Examples artifact as ExampleGen writes it."""
    examples = write_examples(tiny_data, tmp_path_factory.mktemp("examples"))
    return evaluation_records(examples, EVALUATION, 4)


@pytest.fixture(scope="module")
def exported(tiny_data, tmp_path_factory) -> str:
    """A model with the metadata branch: serving_image takes the image and its codes."""
    return train(tiny_data, tmp_path_factory.mktemp("metadata-model"), ["metadata=true"])["model"]


def packaged(model_dir: str, records: list[bytes], target) -> str:
    """A copy of the model with its warm-up requests, as ModelPackager writes them."""
    shutil.copytree(model_dir, target)
    write_requests(str(target), build_requests(str(target), records, TaskSpec()))
    return str(target)


def test_evaluation_records_are_the_first_of_the_evaluation_shards(records, tiny_data):
    first = tf.data.TFRecordDataset(
        sorted(tf.io.gfile.glob(os.path.join(tiny_data, "train12-*.tfrec")))).take(4)
    assert records == [r.numpy() for r in first]


def test_warm_up_requests_replay_against_the_saved_model(exported, records, tmp_path):
    model_dir = packaged(exported, records, tmp_path / "model")
    requests = read_requests(model_dir)
    assert [r.model_spec.signature_name for r in requests] == list(CLIENT_SIGNATURES)
    task = TaskSpec()
    examples = [tf.train.Example.FromString(r).features.feature for r in records]
    default, image = (request_inputs(r) for r in requests)
    assert list(default["examples"]) == records
    assert set(image) == {F.IMAGE_KEY, *task.model_features}
    assert list(image[F.IMAGE_KEY]) == [e[F.IMAGE_KEY].bytes_list.value[0] for e in examples]
    for key in task.model_features:
        assert list(image[key]) == [e[key].int64_list.value[0] for e in examples]

    model = tf.saved_model.load(model_dir)
    outputs = [model.signatures[r.model_spec.signature_name](
        **{k: tf.constant(v) for k, v in request_inputs(r).items()}) for r in requests]
    for out in outputs:
        assert out["probability"].shape == out["decision"].shape == (len(records), 1)
    np.testing.assert_allclose(outputs[0]["probability"], outputs[1]["probability"], atol=1e-5)


def test_the_load_check_passes_a_model_that_answers_every_request(exported, records,
                                                                  tmp_path):
    assert check_model(packaged(exported, records, tmp_path / "model"), 300) is None


def test_a_model_whose_variables_are_corrupt_does_not_pass(exported, records, tmp_path):
    model_dir = packaged(exported, records, tmp_path / "model")
    variables = os.path.join(model_dir, "variables", "variables.data-00000-of-00001")
    size = os.path.getsize(variables)
    with open(variables, "wb") as f:
        f.write(b"\0" * size)  # same size, no longer the saved weights
    failure = check_model(model_dir, 300)
    assert failure is not None and failure.signature is None
    assert failure.reason.startswith("the model does not load: DataLossError:"), failure
    assert "\n" not in failure.reason


class TinyModel(tf.Module):
    """A model with medtfx's client signatures whose serving_image answers `answer`."""

    def __init__(self, answer):
        super().__init__()
        self.answer = answer

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_examples(self, examples):
        rows = tf.shape(examples)[:1]
        return {"probability": tf.fill(tf.concat([rows, [1]], 0), 0.5)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=F.IMAGE_KEY)])
    def serve_images(self, image):
        return self.answer(image)


def saved(answer, records: list[bytes], folder) -> str:
    """`TinyModel(answer)` saved with warm-up requests for `records`."""
    module = TinyModel(answer)
    tf.saved_model.save(module, str(folder), signatures={
        "serving_default": module.serve_examples.get_concrete_function(),
        "serving_image": module.serve_images.get_concrete_function()})
    write_requests(str(folder), build_requests(str(folder), records, TaskSpec()))
    return str(folder)


def failing_assertion(image):
    check = tf.debugging.Assert(tf.size(image) < 0, ["the image branch is broken"])
    with tf.control_dependencies([check]):
        return {"probability": tf.zeros([tf.size(image), 1])}


def test_a_signature_that_fails_is_named_with_the_ops_complaint(records, tmp_path):
    failure = check_model(saved(failing_assertion, records, tmp_path / "model"), 300)
    assert failure == FailedLoad("serving_image", failure.reason)
    assert "assertion failed: [the image branch is broken]" in failure.reason
    assert failed_check(failure.as_check()).startswith(
        "load check of serving_image: InvalidArgumentError: assertion failed")


@pytest.mark.parametrize("answer, reason", [
    (lambda image: {"probability": tf.zeros([1, 1])},
     "output 'probability' has shape [1, 1] for 4 examples"),
    (lambda image: {"probability": tf.fill([tf.size(image), 1], np.nan)},
     "output 'probability' is not finite"),
], ids=["one row for the batch", "not finite"])
def test_an_answer_without_a_finite_row_per_example_does_not_pass(answer, reason, records,
                                                                  tmp_path):
    assert run_requests(saved(answer, records, tmp_path / "model")) == FailedLoad(
        "serving_image", reason)


def test_a_model_without_warm_up_requests_does_not_pass(records, tmp_path):
    model_dir = saved(failing_assertion, records, tmp_path / "model")
    os.remove(os.path.join(model_dir, WARMUP_FILE))
    failure = run_requests(model_dir)
    assert failure.signature is None
    assert failure.reason.startswith("the warm-up requests do not read: NotFoundError")


def test_a_blessed_model_that_fails_the_load_check_is_reported_as_not_pushed():
    check = FailedLoad(None, "the model does not load: DataLossError: checksum").as_check()
    summary = {"metrics": {}, "blessed": True, "pushed_model": None,
               "failed_checks": [check], "training": {}, "classes": ["benign", "malignant"]}
    assert summary_lines(summary)[-2:] == [
        "medtfx: BLESSED, but nothing pushed. Failed checks:",
        "        load check: the model does not load: DataLossError: checksum"]
