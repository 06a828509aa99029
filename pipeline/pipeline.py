"""The medtfx pipeline, built from one config. Runners add only paths and connections."""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

# TFX's modules rather than its public `tfx.v1` namespace: importing `tfx.v1` loads the
# Vertex AI client with its extensions, about 6 s of every run, wanted only for Vertex
# training (imported where chosen).
from tfx.components import ExampleValidator, Pusher, Trainer, Transform
from tfx.dsl.components.base import executor_spec
from tfx.dsl.components.base.base_node import BaseNode
from tfx.dsl.components.common.resolver import Resolver
from tfx.dsl.input_resolution.strategies.latest_blessed_model_strategy import (
    LatestBlessedModelStrategy)
from tfx.orchestration.data_types import RuntimeParameter
from tfx.orchestration.pipeline import Pipeline
from tfx.proto import (bulk_inferrer_pb2, example_gen_pb2, pusher_pb2, trainer_pb2,
                       transform_pb2)
from tfx.types import Channel, standard_artifacts

from components import serving_pusher
from components.bulk_inferrer import BulkInferrer
from components.data_gate import DataGate
from components.ensemble import Ensemble
from components.evaluator import Evaluator
from components.example_gen import ImportExampleGen
from components.model_packager import ModelPackager
from components.serving_validator import ServingExampleValidator
from components.statistics_gen import StatisticsGen
from components.submission_writer import SubmissionWriter
from components.task_schema import TaskSchema
from modules.settings import RunSettings
from pipeline.core.beam import PIPELINE_STAGES
from pipeline.config import PipelineConfig
from pipeline.data.shards import (TEST_SHARDS_PATTERN, TEST_SPLIT, Shard, SplitPlan,
                                  ensemble_splits)
from pipeline.data.spans import span_input_pattern
from pipeline.eval_config import build_eval_config
from pipeline.results.packaging import PackagerSettings
from pipeline.core.fingerprint import code_fingerprint

PREPROCESSING_MODULE = "modules.preprocessing"
TRAINER_MODULE = "modules.trainer"
EVALUATION_MODULE = "modules.evaluation"
EVALUATOR_EXECUTOR = "components.evaluator"
PREPROCESSING_FN = f"{PREPROCESSING_MODULE}.preprocessing_fn"
RUN_FN = f"{TRAINER_MODULE}.run_fn"
SERVING_SIGNATURE = "serving_default"  # serialized tf.Examples in, as the test shards hold


def shard_pattern(config: PipelineConfig, index: int) -> str:
    """Train shard `index` under the data root, in the newest span when there are spans."""
    pattern = Shard("", "train", index, 0).pattern
    return span_input_pattern(pattern) if config.data.spans else pattern


def default_train_args(config: PipelineConfig,
                       train: tuple[int, ...] | None = None) -> trainer_pb2.TrainArgs:
    """The training splits (the plan's, or an ensemble member's) and steps."""
    train = config.split_plan.train if train is None else train
    return trainer_pb2.TrainArgs(splits=SplitPlan.names(train),
                               num_steps=config.trainer.train_steps)


def run_settings(config: PipelineConfig, member: int | None = None,
                 code_of: str = TRAINER_MODULE) -> RunSettings:
    """Everything run_fn reads: the trainer section, the task (keys, classes, metadata and
    the buckets its slicing signature derives), the serving limits, the ensemble member it
    trains (if any), and the code fingerprint that keeps the cache honest."""
    return RunSettings(**config.trainer.model_dump(), task=config.task,
                       limits=config.limits, ensemble_member=member,
                       code=code_fingerprint(code_of))


def packager_settings(config: PipelineConfig) -> PackagerSettings:
    """What ModelPackager needs from the config."""
    plan = config.split_plan
    return PackagerSettings(
        pipeline_name=config.pipeline_name, backbone=config.trainer.backbone,
        image_size=config.trainer.image_size,
        splits={role: plan.names(getattr(plan, role))
                for role in ("train", "validation", "evaluation")},
        task=config.task, target_sensitivity=config.evaluation.target_sensitivity,
        gate=config.evaluation, ood=config.trainer.ood, serving=config.serving,
        code=code_fingerprint("components.model_packager"),
        **config.model_card.model_dump())


@dataclasses.dataclass
class _Data:
    """The data components: examples in, statistics checked against the schema."""
    example_gen: ImportExampleGen
    schema_gen: BaseNode  # TaskSchema
    statistics_gen: StatisticsGen
    example_validator: ExampleValidator
    gate: BaseNode  # DataGate

    @property
    def components(self) -> list:
        return [self.example_gen, self.schema_gen, self.statistics_gen,
                self.example_validator, self.gate]


def data_components(config: PipelineConfig, data_root: str | RuntimeParameter) -> _Data:
    # One split per shard: folds are sets of whole files, which a glob pattern per fold
    # could not express in general, and downstream components pick splits by role.
    example_gen = ImportExampleGen(
        input_base=data_root,
        input_config=example_gen_pb2.Input(splits=[
            example_gen_pb2.Input.Split(name=f"train{i:02d}", pattern=shard_pattern(config, i))
            for i in range(config.data.train_shards)]),
        code=code_fingerprint("components.example_gen"))
    schema_gen = TaskSchema(schema_file=config.schema_path, label_key=config.task.label.key,
                            classes=len(config.task.label.classes),
                            code=code_fingerprint("components.task_schema"))
    return _Data(example_gen, schema_gen,
                 *validation_components(example_gen, schema_gen, ExampleValidator))


def validation_components(example_gen: ImportExampleGen, schema_gen: BaseNode,
                          validator: Callable[..., BaseNode],
                          prefix: str = "") -> tuple[StatisticsGen, BaseNode, BaseNode]:
    """Statistics of every split, checked against the schema by the component `validator`
    makes, and the gate that stops the run on an anomaly; ids start with `prefix`."""
    statistics_gen = StatisticsGen(
        examples=example_gen.outputs["examples"], schema=schema_gen.outputs["schema"],
        code=code_fingerprint("components.statistics_gen")).with_id(f"{prefix}StatisticsGen")
    example_validator = validator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"],
    ).with_id(f"{prefix}ExampleValidator")
    gate = DataGate(anomalies=example_validator.outputs["anomalies"],
                    code=code_fingerprint("components.data_gate")).with_id(f"{prefix}DataGate")
    return statistics_gen, example_validator, gate


def transform_component(config: PipelineConfig, data: _Data) -> Transform:
    transform = Transform(
        examples=data.example_gen.outputs["examples"],
        schema=data.schema_gen.outputs["schema"],
        preprocessing_fn=PREPROCESSING_FN,
        materialize=False,
        disable_statistics=True,  # post-transform statistics would decode every image
        splits_config=transform_pb2.SplitsConfig(analyze=SplitPlan.names(
            config.split_plan.train)),
        custom_config={"image_size": config.trainer.image_size,
                       "task": config.task.model_dump(),
                       "code": code_fingerprint(PREPROCESSING_MODULE)})
    transform.add_upstream_node(data.gate)
    return transform


def training_components(config: PipelineConfig, data: _Data,
                        transform: Transform, resolver: Resolver,
                        train_args: RuntimeParameter | None,
                        vertex_training: dict | None) -> tuple[list, Channel]:
    """The Trainer, or one Trainer per fold and the Ensemble; and the model to evaluate."""
    trainer_class = Trainer
    if vertex_training:
        from tfx.extensions.google_cloud_ai_platform.trainer import component as vertex
        trainer_class = vertex.Trainer

    def trainer(train: tuple[int, ...], validation: tuple[int, ...],
                member: int | None = None) -> Trainer:
        return trainer_class(
            run_fn=RUN_FN,
            examples=data.example_gen.outputs["examples"],
            transform_graph=transform.outputs["transform_graph"],
            schema=data.schema_gen.outputs["schema"],
            base_model=resolver.outputs["model"] if config.trainer.warm_start else None,
            # A per-run TrainArgs would give every ensemble member the same splits.
            train_args=(train_args if train_args is not None and member is None
                        else default_train_args(config, train)),
            eval_args=trainer_pb2.EvalArgs(splits=SplitPlan.names(validation),
                                           num_steps=config.trainer.eval_steps),
            custom_config={**run_settings(config, member).model_dump(),
                           **(vertex_training or {})})

    plan = config.split_plan
    if not config.trainer.ensemble_folds:
        single = trainer(plan.train, plan.validation)
        return [single], single.outputs["model"]
    trainers = [trainer(train, validation, k).with_id(f"Trainer_fold{k}")
                for k, (train, validation)
                in enumerate(ensemble_splits(plan, config.trainer.ensemble_folds))]
    ensemble = Ensemble([t.outputs["model"] for t in trainers],
                        transform.outputs["transform_graph"],
                        run_settings(config, code_of="components.ensemble").model_dump_json())
    return [*trainers, ensemble], ensemble.outputs["model"]


def evaluator_code() -> str:
    """The Evaluator's project code, its metrics module and its executor, as the one
    fingerprint its eval config carries (the one property of TFX's Evaluator free to)."""
    return "+".join(code_fingerprint(m) for m in (EVALUATION_MODULE, EVALUATOR_EXECUTOR))


def release_components(config: PipelineConfig, data: _Data, model: Channel,
                       resolver: Resolver, serving_dir: str) -> list:
    """The Evaluator's gate, packaging of a blessed model, and the push."""
    evaluator = Evaluator(
        examples=data.example_gen.outputs["examples"],
        example_splits=SplitPlan.names(config.split_plan.evaluation),
        model=model,
        baseline_model=resolver.outputs["model"],
        schema=data.schema_gen.outputs["schema"],
        eval_config=build_eval_config(config.evaluation, config.task, evaluator_code()),
        module_path=EVALUATION_MODULE)
    packager = ModelPackager(
        model=model,
        evaluation=evaluator.outputs["evaluation"],
        blessing=evaluator.outputs["blessing"],
        statistics=data.statistics_gen.outputs["statistics"],
        examples=data.example_gen.outputs["examples"],  # the warm-up requests' examples
        settings=packager_settings(config).parameter())
    pusher = Pusher(
        model=packager.outputs["packaged_model"],
        model_blessing=evaluator.outputs["blessing"],
        push_destination=pusher_pb2.PushDestination(
            filesystem=pusher_pb2.PushDestination.Filesystem(base_directory=serving_dir)),
        custom_config={"keep_versions": config.serving.keep_versions,
                       "code": code_fingerprint("components.serving_pusher")},
        custom_executor_spec=executor_spec.ExecutorClassSpec(serving_pusher.Executor))
    return [evaluator, packager, pusher]


def scoring_components(config: PipelineConfig, data_root: str | RuntimeParameter,
                       schema_gen: BaseNode, model: Channel, blessing: Channel) -> list:
    """The test shards, read apart from the training data (new test shards do not retrain
    the model) and validated as unlabelled data; their PredictionLogs from the blessed
    model; and the submission CSV."""
    example_gen = ImportExampleGen(
        input_base=data_root,
        input_config=example_gen_pb2.Input(splits=[example_gen_pb2.Input.Split(
            name=TEST_SPLIT, pattern=TEST_SHARDS_PATTERN)]),
        # One input split is otherwise hashed into `train` and `eval` (2:1).
        output_config=example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(
            splits=[example_gen_pb2.SplitConfig.Split(name=TEST_SPLIT, hash_buckets=1)])),
        code=code_fingerprint("components.example_gen"),
    ).with_id("TestExampleGen")
    validator = functools.partial(ServingExampleValidator,
                                  code=code_fingerprint("components.serving_validator"))
    validation = validation_components(example_gen, schema_gen, validator, prefix="Test")
    inferrer = BulkInferrer(
        examples=example_gen.outputs["examples"], model=model, model_blessing=blessing,
        data_spec=bulk_inferrer_pb2.DataSpec(example_splits=[TEST_SPLIT]),
        model_spec=bulk_inferrer_pb2.ModelSpec(model_signature_name=[SERVING_SIGNATURE]),
        max_batch=config.scoring.max_batch, code=code_fingerprint("components.bulk_inferrer"))
    inferrer.add_upstream_node(validation[-1])  # the test data's gate
    writer = SubmissionWriter(inference_result=inferrer.outputs["inference_result"],
                              blessing=blessing, task=config.task.model_dump_json(),
                              code=code_fingerprint("components.submission_writer"))
    return [example_gen, *validation, inferrer, writer]


def create_pipeline(config: PipelineConfig, *, data_root: str | RuntimeParameter,
                    pipeline_root: str, serving_dir: str, metadata_connection_config=None,
                    beam_pipeline_args: list[str] | None = None,
                    train_args: RuntimeParameter | None = None,
                    vertex_training: dict | None = None) -> Pipeline:
    """Every component of the pipeline, wired; writes nothing.

    Orchestrators that take values per run pass RuntimeParameters for `data_root` and
    `train_args` (TrainArgs as JSON). `vertex_training`, custom_config entries for
    tfx.extensions.google_cloud_ai_platform, makes the Trainer a Vertex AI custom job.
    The test shards are scored when scoring.test_shards is true: `auto` is for a runner that
    can look into the data root to decide (config.with_scoring_resolved), and off here.
    """
    data = data_components(config, data_root)
    transform = transform_component(config, data)
    resolver = Resolver(
        strategy_class=LatestBlessedModelStrategy,
        model=Channel(type=standard_artifacts.Model),
        model_blessing=Channel(type=standard_artifacts.ModelBlessing),
    ).with_id("latest_blessed_model_resolver")
    trained, model = training_components(config, data, transform, resolver, train_args,
                                         vertex_training)
    released = release_components(config, data, model, resolver, serving_dir)
    evaluator, packager, _ = released
    scoring = (scoring_components(config, data_root, data.schema_gen,
                                  packager.outputs["packaged_model"],
                                  evaluator.outputs["blessing"])
               if config.scoring.test_shards is True else [])
    return Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=pipeline_root,
        components=[*data.components, transform, resolver, *trained, *released, *scoring],
        enable_cache=config.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=beam_pipeline_args or config.beam.pipeline_args(*PIPELINE_STAGES))
