"""What the out-of-distribution guard costs and catches on the sample: run_fn as the Trainer
runs it on the generated melanoma sample (the default config: 64 px, 3 epochs of the small
CNN), then the guard's fit seconds, serving_image's latency with and without the guard
(the same weights exported both ways), and the share of the evaluation fold and of the
other tasks' pictures flagged. Prints one JSON object.

    PYTHONPATH=. nice -n 19 python -m tests.benchmarks.ood --out /tmp/ood-bench
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time

import tensorflow as tf
import tensorflow_transform as tft

from modules import features as F
from modules.artifacts import VALIDATION_FILE
from modules.export import export_model, keras_path
from modules.model import load_weights
from modules.ood import IN_DISTRIBUTION_KEY
from modules.trainer import build, run_fn
from pipeline.data.synth import SynthSpec, generate
from pipeline.pipeline import run_settings
from tests.helpers import REPO, run_transform, shard_records, trainer_fn_args, write_examples
from tests.test_ood import EVALUATION_SHARDS, other_tasks

SAMPLE = ["image_size=64", "batch_size=32", "epochs=3", "train_steps=null"]


def prepare(root: str, images: int) -> None:
    """The sample's shards and the Trainer's inputs (examples, 64 px transform, schema)."""
    generate(os.path.join(root, "data"), SynthSpec(images=images, size=64))
    write_examples(os.path.join(root, "data"), root)
    run_transform(shard_records(os.path.join(root, "data"), "train0[0-8]-*.tfrec"), 64,
                  os.path.join(root, "transform"))
    os.makedirs(os.path.join(root, "schema"))
    shutil.copy(os.path.join(REPO, "schema", "melanoma.pbtxt"), os.path.join(root, "schema"))


def latencies(guarded, bare, images: list[bytes], batch: int, repeats: int = 30
              ) -> dict[str, float]:
    """Median seconds of one serving_image request of `batch` images, guarded and not,
    the two asked in turn (after a warm-up) so that the machine's load falls on both."""
    request = tf.constant(images[:batch])
    times: dict[str, list[float]] = {"guarded": [], "unguarded": []}
    for _ in range(repeats + 1):
        for name, signature in (("guarded", guarded), ("unguarded", bare)):
            start = time.perf_counter()
            signature(image=request)
            times[name].append(time.perf_counter() - start)
    return {name: round(statistics.median(seconds[1:]), 4) for name, seconds in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="a folder for the run (its data and "
                        "transform are reused)")
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--others", type=int, default=200, help="pictures of each other task")
    args = parser.parse_args()
    root = args.out
    if not os.path.exists(os.path.join(root, "schema")):  # prepared by an earlier call
        prepare(root, args.images)
    for done in ("model", "model_run", "work", "unguarded"):
        shutil.rmtree(os.path.join(root, done), ignore_errors=True)
    fn_args, config = trainer_fn_args(root, SAMPLE)
    start = time.monotonic()
    run_fn(fn_args)
    trainer_seconds = time.monotonic() - start
    with open(os.path.join(root, "model", VALIDATION_FILE)) as f:
        guard = json.load(f)["ood"]

    settings = run_settings(config)
    unguarded = build(settings)
    load_weights(unguarded, keras_path(fn_args.serving_model_dir))
    bare_dir = os.path.join(root, "unguarded")
    export_model(unguarded, tft.TFTransformOutput(os.path.join(root, "transform")),
                 settings.model_copy(update={"ood": settings.ood.model_copy(
                     update={"enabled": False})}), bare_dir)
    guarded = tf.saved_model.load(fn_args.serving_model_dir).signatures
    bare = tf.saved_model.load(bare_dir).signatures["serving_image"]

    records = shard_records(os.path.join(root, "data"), EVALUATION_SHARDS)
    images = [tf.train.Example.FromString(r).features.feature[F.IMAGE_KEY].bytes_list.value[0]
              for r in records]
    flags = tf.concat([guarded["serving_default"](examples=tf.constant(records[i:i + 256]))[
        IN_DISTRIBUTION_KEY] for i in range(0, len(records), 256)], 0).numpy()
    others = {kind: round(1 - float(guarded["serving_image"](image=tf.constant(pictures))[
        IN_DISTRIBUTION_KEY].numpy().mean()), 4)
        for kind, pictures in other_tasks(args.others).items()}
    print(json.dumps({
        "trainer_seconds": round(trainer_seconds, 1), "guard": guard,
        "serving_image_seconds": {f"batch {batch}": latencies(
            guarded["serving_image"], bare, images, batch) for batch in (1, 32, 256)},
        "evaluation_fold": {"images": len(flags),
                            "flagged": round(1 - float(flags.mean()), 4)},
        "other_tasks_flagged": others}, indent=1))


if __name__ == "__main__":
    main()
