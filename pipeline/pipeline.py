"""The medtfx pipeline, built from one config. Runners add only paths and connections."""

from __future__ import annotations

import dataclasses
import json

from tfx import v1 as tfx
from tfx.dsl.components.base import executor_spec
from tfx.orchestration.data_types import RuntimeParameter
from tfx.proto import example_gen_pb2, transform_pb2

from components import serving_pusher
from components.data_gate import DataGate
from components.ensemble import Ensemble
from components.model_packager import ModelPackager
from pipeline.config import PipelineConfig
from pipeline.data.shards import Shard, SplitPlan, ensemble_splits
from pipeline.data.spans import span_pattern
from pipeline.eval_config import build_eval_config
from pipeline.fingerprint import code_fingerprint

PREPROCESSING_MODULE = "modules.preprocessing"
TRAINER_MODULE = "modules.trainer"
PREPROCESSING_FN = f"{PREPROCESSING_MODULE}.preprocessing_fn"
RUN_FN = f"{TRAINER_MODULE}.run_fn"


def shard_pattern(config: PipelineConfig, index: int) -> str:
    """Train shard `index` under the data root, in the newest span when there are spans."""
    pattern = Shard("", "train", index, 0).pattern
    return span_pattern(pattern) if config.data.spans else pattern


def default_train_args(config: PipelineConfig,
                       train: tuple[int, ...] | None = None) -> tfx.proto.TrainArgs:
    """The training splits (the plan's, or an ensemble member's) and steps."""
    train = config.split_plan.train if train is None else train
    return tfx.proto.TrainArgs(splits=SplitPlan.names(train),
                               num_steps=config.trainer.train_steps)


def trainer_custom_config(config: PipelineConfig, member: int | None = None) -> dict:
    """Everything run_fn reads: the trainer section, the age buckets its slicing signature
    needs, the ensemble member it trains (if any), and the code fingerprint that keeps the
    cache honest."""
    return {**dataclasses.asdict(config.trainer), "age_buckets": config.evaluation.age_buckets,
            "ensemble_member": member, "code": code_fingerprint(TRAINER_MODULE)}


def packager_settings(config: PipelineConfig) -> str:
    """What ModelPackager needs from the config, as the JSON parameter it takes."""
    plan, evaluation = config.split_plan, config.evaluation
    return json.dumps({
        "pipeline_name": config.pipeline_name,
        "backbone": config.trainer.backbone,
        "image_size": config.trainer.image_size,
        "splits": {role: plan.names(getattr(plan, role))
                   for role in ("train", "validation", "evaluation")},
        "age_buckets": evaluation.age_buckets,
        "target_sensitivity": evaluation.target_sensitivity,
        "gate": {"auc_threshold": evaluation.auc_threshold,
                 "slice_auc_threshold": evaluation.slice_auc_threshold,
                 "slice_auc_thresholds": evaluation.slice_auc_thresholds,
                 "min_slice_positives": evaluation.min_slice_positives,
                 "min_slice_negatives": evaluation.min_slice_negatives,
                 "max_auc_drop": evaluation.max_auc_drop,
                 "max_slice_auc_drop": evaluation.max_slice_auc_drop,
                 "min_specificity": evaluation.min_specificity},
        **dataclasses.asdict(config.model_card),
        "code": code_fingerprint("components.model_packager"),
    })


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
    plan = config.split_plan

    # One split per shard: folds are sets of whole files, which a glob pattern per fold
    # could not express in general, and downstream components pick splits by role.
    example_gen = tfx.components.ImportExampleGen(
        input_base=data_root,
        input_config=example_gen_pb2.Input(splits=[
            example_gen_pb2.Input.Split(name=f"train{i:02d}", pattern=shard_pattern(config, i))
            for i in range(config.data.train_shards)]))

    schema_gen = tfx.components.ImportSchemaGen(schema_file=config.schema_path)
    statistics_gen = tfx.components.StatisticsGen(
        examples=example_gen.outputs["examples"], schema=schema_gen.outputs["schema"])
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"])
    data_gate = DataGate(anomalies=example_validator.outputs["anomalies"],
                         code=code_fingerprint("components.data_gate"))

    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"],
        schema=schema_gen.outputs["schema"],
        preprocessing_fn=PREPROCESSING_FN,
        materialize=False,
        disable_statistics=True,  # post-transform statistics would decode every image
        splits_config=transform_pb2.SplitsConfig(analyze=SplitPlan.names(plan.train)),
        custom_config={"image_size": config.trainer.image_size,
                       "code": code_fingerprint(PREPROCESSING_MODULE)})
    transform.add_upstream_node(data_gate)

    model_resolver = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id("latest_blessed_model_resolver")

    trainer_class = (tfx.extensions.google_cloud_ai_platform.Trainer if vertex_training
                     else tfx.components.Trainer)

    def trainer(train: tuple[int, ...], validation: tuple[int, ...],
                member: int | None = None) -> tfx.components.Trainer:
        return trainer_class(
            run_fn=RUN_FN,
            examples=example_gen.outputs["examples"],
            transform_graph=transform.outputs["transform_graph"],
            schema=schema_gen.outputs["schema"],
            base_model=model_resolver.outputs["model"] if config.trainer.warm_start else None,
            # A per-run TrainArgs would give every ensemble member the same splits.
            train_args=(train_args if train_args is not None and member is None
                        else default_train_args(config, train)),
            eval_args=tfx.proto.EvalArgs(splits=SplitPlan.names(validation),
                                         num_steps=config.trainer.eval_steps),
            custom_config={**trainer_custom_config(config, member), **(vertex_training or {})})

    if config.trainer.ensemble_folds:
        trainers = [trainer(train, validation, k).with_id(f"Trainer_fold{k}")
                    for k, (train, validation)
                    in enumerate(ensemble_splits(plan, config.trainer.ensemble_folds))]
        ensemble = Ensemble([t.outputs["model"] for t in trainers],
                            transform.outputs["transform_graph"],
                            json.dumps({**trainer_custom_config(config),
                                       "code": code_fingerprint("components.ensemble")}))
        trained = [*trainers, ensemble]
        model = ensemble.outputs["model"]
    else:
        trained = [trainer(plan.train, plan.validation)]
        model = trained[0].outputs["model"]

    evaluator = tfx.components.Evaluator(
        examples=example_gen.outputs["examples"],
        example_splits=SplitPlan.names(plan.evaluation),
        model=model,
        baseline_model=model_resolver.outputs["model"],
        schema=schema_gen.outputs["schema"],
        eval_config=build_eval_config(config.evaluation))

    packager = ModelPackager(
        model=model,
        evaluation=evaluator.outputs["evaluation"],
        blessing=evaluator.outputs["blessing"],
        statistics=statistics_gen.outputs["statistics"],
        settings=packager_settings(config))

    pusher = tfx.components.Pusher(
        model=packager.outputs["packaged_model"],
        model_blessing=evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=serving_dir)),
        custom_config={"keep_versions": config.serving.keep_versions,
                       "code": code_fingerprint("components.serving_pusher")},
        custom_executor_spec=executor_spec.ExecutorClassSpec(serving_pusher.Executor))

    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=pipeline_root,
        components=[example_gen, schema_gen, statistics_gen, example_validator, data_gate,
                    transform, model_resolver, *trained, evaluator, packager, pusher],
        enable_cache=config.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=beam_pipeline_args or config.beam.pipeline_args())
