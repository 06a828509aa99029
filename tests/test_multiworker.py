"""run_fn on two workers: MultiWorkerMirroredStrategy between two processes on the loopback
address, with the TF_CONFIG Vertex AI gives its worker pools (a chief and a worker) and one
model directory for both (a Vertex AI job's replicas get the same output URIs), against one
worker with the same global batch.

Run as a module (`python -m tests.test_multiworker INPUTS OUT REPORT OVERRIDES`), this file
is one worker: run_fn as the Trainer executor calls it, then a report of what it did.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from modules.artifacts import VALIDATION_FILE
from tests.helpers import REPO, shard_records, trainer_fn_args, write_trainer_inputs

pytestmark = pytest.mark.slow  # three trainings and two TensorFlow start-ups: minutes

# Two workers at batch_size=8 draw the global batch of 16 that one worker draws at
# batch_size=16; the learning rate scales with the replicas, so one worker is given twice
# the rate. The X-ray sex CNN has no BatchNorm, which normalises over each replica's batch
# (8 examples, not 16) and so parts the runs by design; no dropout, whose masks are drawn
# per replica. The tests of run_fn on one worker (tests/test_trainer.py) use the default
# dropout and pneumonia_cnn, which has BatchNorm.
COMMON = ["backbone=xray_sex_cnn", "dropout=0", "lr_ramp_epochs=0",
          "early_stopping_patience=null"]
TWO_WORKERS = COMMON + ["batch_size=8", "learning_rate=0.001", "lr_min=0.0001"]
ONE_WORKER = COMMON + ["batch_size=16", "learning_rate=0.002", "lr_min=0.0002"]
# The same steps on the same batches differ only in the order of float32 sums (a gradient
# is the all-reduced sum of two half-batch gradients): observed up to 9e-8 in the weights
# and 6e-8 in the served probabilities. Each Adam step moves a weight by up to the learning
# rate (2e-3; biases moved 5e-3 to 7e-3 in the 4 steps), so 1e-5 is 100 times the rounding
# and 200 times below one step: a batch drawn differently would not pass.
TOLERANCE = 1e-5


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_worker(root, kind: str, cluster: dict) -> subprocess.Popen:
    """One worker process writing under root/two, with a TMPDIR of its own to show what it
    leaves behind."""
    scratch = root / f"tmp-{kind}"
    scratch.mkdir()
    tf_config = {"cluster": cluster, "task": {"type": kind, "index": 0}}
    env = {**os.environ, "PYTHONPATH": REPO, "TMPDIR": str(scratch),
           "TF_CONFIG": json.dumps(tf_config)}
    with open(root / f"{kind}.log", "w") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.test_multiworker", str(root / "inputs"),
             str(root / "two"), str(root / f"{kind}.json"), json.dumps(TWO_WORKERS)],
            env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def runs(tiny_data, tmp_path_factory) -> dict:
    """The two workers, and meanwhile the one-worker run in this process."""
    from modules.trainer import run_fn

    root = tmp_path_factory.mktemp("multiworker")
    write_trainer_inputs(tiny_data, root / "inputs")
    chief, worker = (f"127.0.0.1:{port}" for port in free_ports(2))
    cluster = {"chief": [chief], "worker": [worker]}
    processes = {kind: start_worker(root, kind, cluster) for kind in ("chief", "worker")}
    try:
        fn_args, config = trainer_fn_args(root / "inputs", ONE_WORKER, out=root / "one")
        run_fn(fn_args)
        deadline = time.monotonic() + 600
        for kind, process in processes.items():
            code = process.wait(max(1.0, deadline - time.monotonic()))
            assert code == 0, f"{kind}: exit {code}\n{(root / f'{kind}.log').read_text()[-4000:]}"
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
    return {"root": root, "config": config,
            "reports": {kind: json.loads((root / f"{kind}.json").read_text())
                        for kind in processes}}


def test_both_workers_run_every_step_and_see_the_same_validation_auc(runs):
    chief, worker = runs["reports"]["chief"], runs["reports"]["worker"]
    assert chief["steps"] == worker["steps"] == 4
    assert len(chief["validation_aucs"]) == 2
    assert chief["validation_aucs"] == worker["validation_aucs"]  # BestEpoch's, all-reduced


def test_only_the_chief_exports_and_the_worker_leaves_nothing_behind(runs):
    root = runs["root"]
    saved = [os.path.relpath(os.path.join(path, name), root) for run in ("one", "two")
             for path, _, files in os.walk(root / run) for name in files
             if name == "saved_model.pb"]
    assert sorted(saved) == ["one/model/Format-Serving/saved_model.pb",
                             "two/model/Format-Serving/saved_model.pb"]
    assert os.listdir(root / "tmp-worker") == []
    assert not [name for _, dirs, _ in os.walk(root / "two") for name in dirs
                if "workertemp" in name]  # Keras' TensorBoard callback's, for the worker
    with open(root / "two" / "model" / VALIDATION_FILE) as f:
        recorded = json.load(f)
    assert recorded["strategy"] == "MultiWorkerMirroredStrategy" and recorded["replicas"] == 2
    # TFX's executor checks on each worker, as run_fn returns, that the model exists.
    assert runs["reports"]["worker"]["model_exists_on_return"]


def test_the_exported_model_serves_what_one_worker_would_have_trained(runs, tiny_data):
    """Served probabilities and the network's weights of the two-worker model against the
    one-worker model's, within TOLERANCE."""
    import tensorflow as tf

    from modules.export import keras_path
    from modules.model import load_weights
    from modules.trainer import build
    from pipeline.pipeline import run_settings

    records = tf.constant(shard_records(tiny_data, "test0*.tfrec"))
    served, weights = {}, {}
    for run in ("one", "two"):
        model_dir = str(runs["root"] / run / "model" / "Format-Serving")
        served[run] = tf.saved_model.load(model_dir).signatures["serving_default"](
            examples=records)["probability"].numpy()
        net = build(run_settings(runs["config"]))
        load_weights(net, keras_path(model_dir))
        weights[run] = net.get_weights()
    assert served["two"].shape == (len(records), 1)
    assert np.all((served["two"] >= 0) & (served["two"] <= 1))
    np.testing.assert_allclose(served["two"], served["one"], rtol=0, atol=TOLERANCE)
    for two, one in zip(weights["two"], weights["one"]):
        np.testing.assert_allclose(two, one, rtol=0, atol=TOLERANCE)


def worker_main(inputs: str, out: str, report_file: str, overrides: list[str]) -> None:
    """One worker: run_fn, then a report of its steps, each epoch's validation AUC as it
    reported it, and whether the model exists when run_fn returns."""
    import tensorflow as tf

    from modules.progress import PROGRESS_FIELD, PROGRESS_LOGGER
    from modules.trainer import run_fn

    progress = []

    class Record(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            progress.append(getattr(record, PROGRESS_FIELD))

    logger = logging.getLogger(PROGRESS_LOGGER)
    logger.setLevel(logging.INFO)
    logger.addHandler(Record())
    fn_args, _ = trainer_fn_args(inputs, overrides, out=out)
    run_fn(fn_args)
    report = {"steps": progress[-1]["done"],
              "validation_aucs": [p["text"].split(", ")[1] for p in progress
                                  if p["epoch_end"]],
              "model_exists_on_return": tf.io.gfile.exists(fn_args.serving_model_dir)}
    with open(report_file, "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    worker_main(*sys.argv[1:4], json.loads(sys.argv[4]))
