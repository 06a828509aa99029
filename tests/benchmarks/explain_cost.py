"""What the `explain` signature costs: the Trainer's export, and a request against
serving_image's.

    .venv/bin/python -m tests.benchmarks.explain_cost [--set trainer.backbone=efficientnet_b0]

Builds the config's network (weights none) at its image size, saves it as the Trainer exports
it with and without `explain` (twice each, alternating, so a warm cache favours neither),
then times 50 single-image requests of each signature of the saved model. serving_default
itself is not timed: its graph is the same either way (tests/test_gradcam.py).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time


def timed(call, repeat: int) -> float:
    """Mean seconds of `call` over `repeat` runs, after five to warm up."""
    for _ in range(5):
        call()
    start = time.perf_counter()
    for _ in range(repeat):
        call()
    return (time.perf_counter() - start) / repeat


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    args = parser.parse_args(argv)
    import tensorflow as tf
    import tensorflow_transform as tft
    import tf_keras as keras

    from modules.signatures import EXPLAIN, make_signatures
    from modules.trainer import build
    from pipeline.config import load_config
    from pipeline.data.synth import SynthSpec, generate
    from pipeline.pipeline import run_settings
    from tests.helpers import run_transform, shard_records

    settings = run_settings(load_config(None, ["trainer.weights=none", *args.set]))
    with tempfile.TemporaryDirectory(prefix="explain-cost-") as root:
        data = os.path.join(root, "data")
        generate(data, SynthSpec(images=60, size=settings.image_size, train_shards=15))
        records = shard_records(data, "train00-*.tfrec")
        run_transform(records, settings.image_size, os.path.join(root, "transform"))
        transform = tft.TFTransformOutput(os.path.join(root, "transform"))
        for attempt in range(2):
            for explain in (False, True):
                keras.utils.set_random_seed(0)
                model = build(settings)
                signatures = make_signatures(model, transform, settings.task, root,
                                             tta=settings.tta, limits=settings.limits)
                if not explain:
                    del signatures[EXPLAIN]
                path = os.path.join(root, f"model-{attempt}-{explain}")
                start = time.perf_counter()
                model.save(path, save_format="tf", signatures=signatures,
                           save_traces=False, include_optimizer=False)
                print(f"{settings.backbone} at {settings.image_size} px, save "
                      f"{'with' if explain else 'without'} explain: "
                      f"{time.perf_counter() - start:.1f} s", flush=True)
        loaded = tf.saved_model.load(path)
        image = tf.train.Example.FromString(records[0]).features.feature[
            settings.task.image_key].bytes_list.value[0]
        inputs = {settings.task.image_key: tf.constant([image])}
        wanted = loaded.signatures["serving_image"].structured_input_signature[1]
        inputs.update({key: tf.constant([settings.task.missing], tf.int64)
                       for key in wanted if key != settings.task.image_key})
        for name in ("serving_image", EXPLAIN):
            seconds = timed(lambda: loaded.signatures[name](**inputs), 50)
            print(f"{name}: {seconds * 1000:.1f} ms for one image", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
