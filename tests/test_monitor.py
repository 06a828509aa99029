"""`medtfx monitor`: logged requests in both forms against the served model's reference.

TF Serving cannot be installed here, so the logs are built from the served model's own
answers on the sample's test shards: unshifted (the BulkInferrer's PredictionLogs, and JSON
lines of serving_image requests) and shifted on purpose (brighter images, another site mix,
chest X-rays sent to the melanoma model); each shift must be named by its check.
"""

from __future__ import annotations

import base64
import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from tensorflow_serving.apis import prediction_log_pb2

from pipeline.data.synth import SynthSpec, generate
from pipeline.data.synth_render import encode, render_chest
from pipeline.monitor.distances import psi_of_samples
from pipeline.monitor.request_log import (JsonLinesLog, RequestLogError, read_logs,
                                          read_records)
from pipeline.config import load_config
from tests.helpers import BLESS_ANY, FAST_RUN, medtfx

TASK = load_config(None).task
SITE = "anatom_site_general_challenge"


def test_psi_is_near_zero_for_one_distribution_and_large_for_a_shifted_one():
    rng = np.random.default_rng(0)
    reference = rng.normal(120, 20, 2000)
    assert psi_of_samples(reference, rng.normal(120, 20, 400)) < 0.1
    assert psi_of_samples(reference, rng.normal(170, 20, 400)) > 1.0
    # A reference of one value (every training image 32 px): other values are a shift.
    assert psi_of_samples(np.full(100, 32.0), np.full(50, 32.0)) < 1e-6
    assert psi_of_samples(np.full(100, 32.0), np.full(50, 64.0)) > 1.0


def png(seed: int) -> bytes:
    return encode(np.random.default_rng(seed).random((8, 8, 3)), "PNG")


def test_a_json_lines_log_reads_back_images_metadata_and_answers(tmp_path):
    log = JsonLinesLog(str(tmp_path), "serving_image", TASK.image_key, version="7")
    log.write([png(1), png(2)], [{"sex": 1}, {"sex": 0}],
              {"probability": np.array([[0.25], [0.75]]), "decision": np.array([[0], [1]]),
               "class_name": np.array([b"benign", b"malignant"])})
    log.close()
    read = list(read_logs(str(tmp_path), TASK))
    assert [r.image for r in read] == [png(1), png(2)]
    assert [r.metadata for r in read] == [{"sex": 1}, {"sex": 0}]
    assert read[1].outputs == {"probability": [0.75], "decision": [1.0]}
    assert read[0].time is not None


def test_the_columnar_rest_form_of_serving_default_reads_too(tmp_path):
    example = tf.train.Example(features=tf.train.Features(feature={
        TASK.image_key: tf.train.Feature(bytes_list=tf.train.BytesList(value=[png(3)])),
        "sex": tf.train.Feature(int64_list=tf.train.Int64List(value=[1]))}))
    entry = {"request": {"inputs": {"examples": [
                 {"b64": base64.b64encode(example.SerializeToString()).decode()}]}},
             "response": {"outputs": {"probability": [[0.5]]}}}
    (tmp_path / "proxy.jsonl").write_text(json.dumps(entry) + "\n")
    [read] = read_logs(str(tmp_path), TASK)
    assert read.image == png(3) and read.metadata == {"sex": 1}
    assert read.outputs == {"probability": [0.5]}


def test_a_line_that_is_not_a_logged_request_is_named_by_file_and_line(tmp_path):
    (tmp_path / "proxy.jsonl").write_text('{"request": {"instances": []}, "response": {}}\n'
                                          "{not json\n")
    with pytest.raises(RequestLogError, match=r"proxy.jsonl: line 1: not a logged predict"):
        list(read_logs(str(tmp_path), TASK))


# ----- against a served model -----------------------------------------------------------

@pytest.fixture(scope="module")
def served(tmp_path_factory) -> dict:
    """A run on 600 labelled 32 px images with 400 test images: windows of a few hundred
    requests, as a monitor reads them, not a handful whose noise alone moves the numbers."""
    data = str(tmp_path_factory.mktemp("monitor-data"))
    generate(data, SynthSpec(images=600, test_images=400, size=32, seed=11,
                             malignant_share=0.3))
    work = tmp_path_factory.mktemp("monitor") / "work"
    result = medtfx("run", "--data-root", data, "--work-dir", str(work), *FAST_RUN,
                    *BLESS_ANY)
    assert result.returncode == 0, result.stdout + result.stderr
    from pipeline.serving.model import find_model, load_model

    model = load_model(find_model(None, str(work / "serving")), TASK)
    tests = [tf.train.Example.FromString(r) for path in sorted(os.listdir(data))
             if path.startswith("test") for r in read_records(os.path.join(data, path))]
    return {"work": work, "data": data, "model": model, "tests": tests}


def image_and_codes(example: tf.train.Example) -> tuple[bytes, dict[str, int]]:
    features = example.features.feature
    return (features[TASK.image_key].bytes_list.value[0],
            {key: features[key].int64_list.value[0] for key in TASK.model_features})


def json_window(served: dict, folder, images: list[bytes], codes: list[dict]) -> str:
    """The served model's answers to `images` through serving_image, logged as JSON lines
    in requests of 50."""
    model = served["model"]
    log = JsonLinesLog(str(folder), "serving_image", model.image_input)
    for start in range(0, len(images), 50):
        batch, batch_codes = images[start:start + 50], codes[start:start + 50]
        log.write(batch, batch_codes, model(batch, batch_codes))
    log.close()
    return str(folder)


def monitor(served: dict, logs: str, *extra: str) -> tuple[int, dict]:
    result = medtfx("monitor", "--logs", logs, "--work-dir", str(served["work"]), "--json",
                    *extra)
    assert result.returncode in (0, 3), result.stdout + result.stderr
    return result.returncode, json.loads(result.stdout)


def drifted(verdict: dict) -> set[str]:
    return {c["name"] for c in verdict["checks"] if c["drifted"]}


@pytest.mark.slow
def test_the_bulk_inferrers_prediction_logs_of_the_test_shards_pass(served):
    logs = next((served["work"] / "pipeline" / "BulkInferrer").rglob("prediction_logs*"))
    status, verdict = monitor(served, str(logs))
    assert (status, drifted(verdict)) == (0, set()), verdict
    assert verdict["images"] == 400 and verdict["judged"]
    measured = {c["name"] for c in verdict["checks"] if c["value"] is not None}
    assert {"image brightness", "metadata sex", f"metadata {SITE}", "score distribution",
            "positive decisions", "out-of-distribution share"} <= measured


@pytest.mark.slow
def test_an_unshifted_json_lines_window_passes(served, tmp_path):
    images, codes = zip(*map(image_and_codes, served["tests"]))
    status, verdict = monitor(served, json_window(served, tmp_path, list(images), list(codes)))
    assert (status, drifted(verdict)) == (0, set()), verdict


@pytest.mark.slow
def test_brighter_images_are_named_by_the_brightness_check(served, tmp_path):
    images, codes = zip(*map(image_and_codes, served["tests"]))
    brighter = []
    for image in images:
        pixels = np.asarray(Image.open(io.BytesIO(image)).convert("RGB"), float)
        out = io.BytesIO()
        Image.fromarray(np.clip(pixels + 70, 0, 255).astype(np.uint8)).save(out, "PNG")
        brighter.append(out.getvalue())
    logs = json_window(served, tmp_path / "logs", brighter, list(codes))
    status, verdict = monitor(served, logs)
    assert status == 3 and "image brightness" in drifted(verdict), verdict
    page = tmp_path / "report.html"
    result = medtfx("report", "--work-dir", str(served["work"]), "--logs", logs, "--out",
                    str(page))
    assert result.returncode == 0, result.stdout + result.stderr
    section = page.read_text().split("<h2>Monitoring</h2>")[1]
    assert '<tr class="fail"><td>image brightness</td>' in section


@pytest.mark.slow
def test_another_site_mix_is_named_by_the_site_check_in_prediction_logs(served, tmp_path):
    """serving_default requests, as a TF Serving log collector records them."""
    predict = served["model"].loaded.signatures["serving_default"]
    with tf.io.TFRecordWriter(str(tmp_path / "prediction_logs-0")) as writer:
        for example in served["tests"]:
            shifted = tf.train.Example()
            shifted.CopyFrom(example)
            shifted.features.feature[SITE].int64_list.value[:] = [0]  # every image one site
            examples = tf.constant([shifted.SerializeToString()])
            log = prediction_log_pb2.PredictionLog()
            log.predict_log.request.inputs["examples"].CopyFrom(tf.make_tensor_proto(examples))
            for name, value in predict(examples=examples).items():
                log.predict_log.response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
            writer.write(log.SerializeToString())
    status, verdict = monitor(served, str(tmp_path))
    assert status == 3 and f"metadata {SITE}" in drifted(verdict), verdict
    assert "image brightness" not in drifted(verdict)


@pytest.mark.slow
def test_chest_x_rays_logged_by_predict_are_named_and_history_lists_the_alert(served,
                                                                            tmp_path):
    folder = tmp_path / "xrays"
    folder.mkdir()
    for i in range(120):
        (folder / f"xray-{i:03d}.png").write_bytes(
            encode(render_chest(i, 32, 32), "PNG", channels=1))
    logs = tmp_path / "logs"
    scored = medtfx("predict", str(folder), "--work-dir", str(served["work"]), "--log",
                    str(logs))
    assert scored.returncode == 0, scored.stdout + scored.stderr
    status, verdict = monitor(served, str(logs))
    assert status == 3, verdict
    assert {"image grayscale", "image single channel",
            "out-of-distribution share"} <= drifted(verdict)
    history = medtfx("history", "--work-dir", str(served["work"]))
    assert "drift alert" in history.stdout and "image grayscale" in history.stdout
