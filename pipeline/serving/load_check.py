"""The load check before push: the packaged model is loaded in a fresh process the way TF
Serving loads it, and each warm-up request is run through its signature. A model that does
not load or answer is not pushed.

TFX's InfraValidator does this by starting a TF Serving container; these machines have no
Docker. The child process loads the `serve` meta graph into a session (which runs the asset
initialisers: the Transform graph's tables, the threshold), feeds each request to its
SignatureDef's tensors and checks that every output has one row per example and finite
values. A fresh process, because a model that loads only where a library happened to be
imported already (a custom op) would pass in the packager's process and fail in TF Serving.

`python -m pipeline.serving.load_check MODEL_DIR` is the child; its last line on stdout is a
JSON object, `{}` when every request was answered. This module imports TensorFlow only in
the child, so reading a run's summary does not load it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np

# The custom property of a packaged model that failed the check: its FailedLoad as JSON.
FAILURE_PROPERTY = "load_check_failure"
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclasses.dataclass(frozen=True)
class FailedLoad:
    """Why a model failed the check: the signature that did not answer (None: the model did
    not load) and one line of reason."""

    signature: str | None
    reason: str

    def as_check(self) -> dict:
        """The failed check as the run summary lists it."""
        return {"metric": "load check", "signature": self.signature, "reason": self.reason}


def complaint(err: BaseException) -> str:
    """What an exception says, in one line. A TensorFlow op error's message ends with the
    op's own complaint, under the trace of the node (`.message` leaves out the Python trace
    that str() adds); other errors say it first."""
    op_message = getattr(err, "message", None)
    lines = [line for line in str(op_message or err).splitlines()
             if line.strip() and not line[0].isspace()] or [""]
    return lines[-1] if op_message else lines[0]


def _one_line(err: BaseException) -> str:
    """An exception in one line: its type and what it says."""
    return f"{type(err).__name__}: {complaint(err)[:300]}"


def check_model(model_dir: str, timeout: float) -> FailedLoad | None:
    """Loads the model in `model_dir` in a fresh Python process and runs its warm-up
    requests; None when every signature answered, else why not."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
           # The child runs this copy of the code, whatever the current directory is.
           "PYTHONPATH": os.pathsep.join(p for p in (_ROOT, os.environ.get("PYTHONPATH"))
                                         if p)}
    try:
        done = subprocess.run([sys.executable, "-m", __name__, model_dir], env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return FailedLoad(None, f"the model did not load and answer within {timeout:g} s "
                          "(serving.load_check_timeout)")
    lines = done.stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        result = None
    if result is None:  # killed or crashed before it could say why
        said = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return FailedLoad(None, f"the loading process exited with status {done.returncode}: "
                          f"{said[:300]}")
    return FailedLoad(**result) if result else None


def _check_outputs(outputs: dict, batch: int) -> str | None:
    """Why a signature's outputs are not an answer for `batch` examples, or None."""
    for key, value in sorted(outputs.items()):
        if value.shape[:1] != (batch,):
            return f"output {key!r} has shape {list(value.shape)} for {batch} examples"
        if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            return f"output {key!r} is not finite"
    return None


def run_requests(model_dir: str) -> FailedLoad | None:
    """In this process: loads the model as TF Serving does and runs each warm-up request
    through its signature."""
    import tensorflow as tf

    from pipeline.serving.warmup import SERVE_TAG, read_requests, request_inputs

    try:
        requests = read_requests(model_dir)
    except (tf.errors.OpError, ValueError) as err:
        return FailedLoad(None, f"the warm-up requests do not read: {_one_line(err)}")
    if not requests:
        return FailedLoad(None, "the model carries no warm-up requests")
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        try:
            meta_graph = tf.compat.v1.saved_model.loader.load(session, [SERVE_TAG], model_dir)
        except Exception as err:  # any failure to load is the verdict, whatever its type
            return FailedLoad(None, f"the model does not load: {_one_line(err)}")
        for request in requests:
            name = request.model_spec.signature_name
            signature = meta_graph.signature_def.get(name)
            if signature is None:
                return FailedLoad(name, "the model has no such signature")
            inputs = request_inputs(request)
            if set(inputs) != set(signature.inputs):
                return FailedLoad(name, f"the request's inputs {sorted(inputs)} are not the "
                                  f"signature's {sorted(signature.inputs)}")
            try:
                outputs = session.run(
                    {key: t.name for key, t in signature.outputs.items()},
                    {signature.inputs[key].name: value for key, value in inputs.items()})
            except Exception as err:  # an op that fails on the request, whatever its type
                return FailedLoad(name, _one_line(err))
            wrong = _check_outputs(outputs, len(next(iter(inputs.values()))))
            if wrong:
                return FailedLoad(name, wrong)
    return None


if __name__ == "__main__":
    failure = run_requests(sys.argv[1])
    print(json.dumps(dataclasses.asdict(failure) if failure else {}))
    sys.exit(1 if failure else 0)
