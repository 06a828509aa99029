"""The medtfx pipeline, built from one config. Runners add only paths and connections."""

from __future__ import annotations

import dataclasses
import hashlib
import os

from tfx import v1 as tfx
from tfx.dsl.components.base import executor_spec
from tfx.orchestration.data_types import RuntimeParameter
from tfx.proto import example_gen_pb2, transform_pb2

from components import serving_pusher
from components.data_gate import DataGate
from pipeline.config import PipelineConfig
from pipeline.eval_config import build_eval_config
from pipeline.shards import SplitPlan, plan_splits

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES_DIR = os.path.join(REPO_ROOT, "modules")
PREPROCESSING_FN = "modules.preprocessing.preprocessing_fn"
RUN_FN = "modules.trainer.run_fn"


def split_plan(config: PipelineConfig) -> SplitPlan:
    data = config.data
    return plan_splits(data.train_shards, data.folds, data.eval_fold, data.validation_fold)


def schema_path(config: PipelineConfig) -> str:
    return config.schema if os.path.isabs(config.schema) else os.path.join(REPO_ROOT,
                                                                           config.schema)


def modules_fingerprint() -> str:
    """Changes whenever code under modules/ changes. User code is referenced by dotted
    path (nothing to upload), so the cache would not see an edit without this."""
    digest = hashlib.sha256()
    for name in sorted(os.listdir(MODULES_DIR)):
        if name.endswith(".py"):
            with open(os.path.join(MODULES_DIR, name), "rb") as f:
                digest.update(name.encode() + f.read())
    return digest.hexdigest()[:16]


def default_train_args(config: PipelineConfig) -> tfx.proto.TrainArgs:
    return tfx.proto.TrainArgs(splits=SplitPlan.names(split_plan(config).train),
                               num_steps=config.trainer.train_steps)


def trainer_custom_config(config: PipelineConfig) -> dict:
    """Everything run_fn reads: the trainer section, the age buckets its slicing signature
    needs, and the code fingerprint that keeps the cache honest."""
    return {**dataclasses.asdict(config.trainer), "age_buckets": config.evaluation.age_buckets,
            "code": modules_fingerprint()}


def create_pipeline(config: PipelineConfig, *, data_root: str | RuntimeParameter,
                    pipeline_root: str, serving_dir: str, metadata_connection_config=None,
                    beam_pipeline_args: list[str] | None = None,
                    train_args: RuntimeParameter | None = None,
                    vertex_training: dict | None = None) -> tfx.dsl.Pipeline:
    """Every component of the pipeline, wired; writes nothing.

    Orchestrators that take values per run pass RuntimeParameters for `data_root` and
    `train_args` (TrainArgs as JSON). `vertex_training`, custom_config entries for
    tfx.extensions.google_cloud_ai_platform, makes the Trainer a Vertex AI custom job.
    """
    plan = split_plan(config)

    # One split per shard: folds are sets of whole files, which a glob pattern per fold
    # could not express in general, and downstream components pick splits by role.
    example_gen = tfx.components.ImportExampleGen(
        input_base=data_root,
        input_config=example_gen_pb2.Input(splits=[
            example_gen_pb2.Input.Split(name=f"train{i:02d}", pattern=f"train{i:02d}-*.tfrec")
            for i in range(config.data.train_shards)]))

    schema_gen = tfx.components.ImportSchemaGen(schema_file=schema_path(config))
    statistics_gen = tfx.components.StatisticsGen(
        examples=example_gen.outputs["examples"], schema=schema_gen.outputs["schema"])
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"])
    data_gate = DataGate(anomalies=example_validator.outputs["anomalies"])

    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"],
        schema=schema_gen.outputs["schema"],
        preprocessing_fn=PREPROCESSING_FN,
        materialize=False,
        disable_statistics=True,  # post-transform statistics would decode every image
        splits_config=transform_pb2.SplitsConfig(analyze=SplitPlan.names(plan.train)),
        custom_config={"image_size": config.trainer.image_size, "code": modules_fingerprint()})
    transform.add_upstream_node(data_gate)

    trainer_class = (tfx.extensions.google_cloud_ai_platform.Trainer if vertex_training
                     else tfx.components.Trainer)
    trainer = trainer_class(
        run_fn=RUN_FN,
        examples=example_gen.outputs["examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        train_args=train_args or default_train_args(config),
        eval_args=tfx.proto.EvalArgs(splits=SplitPlan.names(plan.validation),
                                     num_steps=config.trainer.eval_steps),
        custom_config={**trainer_custom_config(config), **(vertex_training or {})})

    model_resolver = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id("latest_blessed_model_resolver")

    evaluator = tfx.components.Evaluator(
        examples=example_gen.outputs["examples"],
        example_splits=SplitPlan.names(plan.evaluation),
        model=trainer.outputs["model"],
        baseline_model=model_resolver.outputs["model"],
        schema=schema_gen.outputs["schema"],
        eval_config=build_eval_config(config.evaluation))

    pusher = tfx.components.Pusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=serving_dir)),
        custom_executor_spec=executor_spec.ExecutorClassSpec(serving_pusher.Executor))

    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=pipeline_root,
        components=[example_gen, schema_gen, statistics_gen, example_validator, data_gate,
                    transform, trainer, model_resolver, evaluator, pusher],
        enable_cache=config.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=beam_pipeline_args or config.beam.pipeline_args())
