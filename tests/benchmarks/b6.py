"""The Evaluator on EfficientNet-B6 at 512 px with the config's TTA, on a fixed subset of the
scale release's evaluation fold: the model siim-isic-512.yaml gates, whose memory the B0 runs
cannot show.

Two pipeline runs, each in a watched child. The first is the pipeline itself up to the
Trainer (weights none, one step of batch 2: the model is exported by the project's own
run_fn and export path) on a small release cut from the scale release. The second starts from
a copy of the first's ML Metadata and holds TFX's Evaluator alone, with the project's eval
config and module: the B6 model, its examples and schema resolved from the first run. So the
Evaluator starts in a fresh process, as it would in its own container."""

from __future__ import annotations

import os

import tensorflow as tf
from tfx.dsl.components.common.resolver import Resolver
from tfx.dsl.input_resolution.strategies.latest_artifact_strategy import (
    LatestArtifactStrategy)
from tfx.orchestration import metadata
from tfx.orchestration.pipeline import Pipeline
from tfx.types import Channel, standard_artifacts

from components.evaluator import Evaluator
from modules.records import record_dataset
from pipeline.core.beam import PIPELINE_STAGES
from pipeline.config import PipelineConfig
from pipeline.data.shards import SplitPlan, list_shards, shard_filename
from pipeline.eval_config import build_eval_config
from pipeline.core.workdir import WorkDir
from pipeline.pipeline import EVALUATION_MODULE, evaluator_code
from tests.benchmarks.runs import CONFIG_512, run_pipeline
from tests.helpers import BLESS_ANY

EVAL_IMAGES = 96  # B6 at 512 px: ~0.18 s per image per orientation on one core here
OTHER_IMAGES = 4  # per training and validation shard: enough for a step of batch 2
OVERRIDES = ["backbone=efficientnet_b6", "weights=none", "batch_size=2", "train_steps=1",
             "epochs=1", "eval_steps=1", *BLESS_ANY[1::2]]


def cut_release(release: str, evaluation: tuple[int, ...], out: str) -> int:
    """The first records of each train shard of `release` into `out` (the evaluation
    shards share EVAL_IMAGES); returns the evaluation images written."""
    os.makedirs(out)
    written = 0
    for shard in list_shards(release, "train"):
        take = (EVAL_IMAGES // len(evaluation) if shard.index in evaluation
                else OTHER_IMAGES)
        records = [r.numpy() for r in record_dataset([shard.path]).take(take)]
        with tf.io.TFRecordWriter(os.path.join(
                out, shard_filename("train", shard.index, len(records)))) as writer:
            for record in records:
                writer.write(record)
        written += len(records) if shard.index in evaluation else 0
    return written


def evaluator_only(config: PipelineConfig, data_root: str, work: WorkDir) -> Pipeline:
    """TFX's Evaluator as the pipeline configures it, on the newest model, examples and
    schema in the store (no baseline: the model is evaluated once)."""
    resolver = Resolver(strategy_class=LatestArtifactStrategy,
                        examples=Channel(type=standard_artifacts.Examples),
                        schema=Channel(type=standard_artifacts.Schema),
                        model=Channel(type=standard_artifacts.Model)).with_id("trained_model")
    evaluator = Evaluator(
        examples=resolver.outputs["examples"],
        example_splits=SplitPlan.names(config.split_plan.evaluation),
        model=resolver.outputs["model"], schema=resolver.outputs["schema"],
        eval_config=build_eval_config(config.evaluation, config.task,
                                      evaluator_code()),
        module_path=EVALUATION_MODULE)
    return Pipeline(
        pipeline_name=config.pipeline_name, pipeline_root=work.pipeline_root,
        components=[resolver, evaluator], enable_cache=False,
        metadata_connection_config=metadata.sqlite_metadata_connection_config(work.metadata),
        beam_pipeline_args=config.beam.pipeline_args(*PIPELINE_STAGES))


def measure_b6(release: str, config: PipelineConfig, scratch: str) -> dict:
    """The B6 Evaluator's seconds, seconds per image and peak PSS (until it failed, if it
    did), the B6 Trainer's at batch 2 as a by-product, and the runs for the report."""
    data = os.path.join(scratch, "b6-data")
    images = cut_release(release, config.split_plan.evaluation, data)
    print(f"B6: {images} evaluation images cut from {release}")
    trained = run_pipeline(data, os.path.join(scratch, "b6-train"), OVERRIDES, CONFIG_512,
                           to_nodes=["Trainer"], keep_failed=True)
    runs, failed = {"B6 to Trainer": trained}, list(trained.failed)
    seconds = peak = None
    if not trained.failed:
        evaluated = run_pipeline(data, os.path.join(scratch, "b6-evaluate"), OVERRIDES,
                                 CONFIG_512, build=evaluator_only,
                                 metadata_from=trained.work, keep_failed=True)
        runs["B6 Evaluator"], failed = evaluated, evaluated.failed
        seconds, peak = evaluated.seconds["Evaluator"], evaluated.peak_mib["Evaluator"]
    return {"images": images, "tta": config.trainer.tta, "failed": failed,
            "seconds": seconds, "seconds_per_image": seconds and seconds / images,
            "peak_mib": peak, "trainer_seconds": trained.seconds.get("Trainer"),
            "trainer_peak_mib": trained.peak_mib.get("Trainer"), "runs": runs}
