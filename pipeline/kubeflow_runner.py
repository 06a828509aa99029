"""Compiles the pipeline for Kubeflow Pipelines and Vertex AI Pipelines (KubeflowV2DagRunner).

The counterpart of local_runner: it adds only the image, the locations, Beam arguments,
per-task resources and the runtime parameters; every component comes from
pipeline.create_pipeline. Compiling needs no network and no credentials and writes only
the output file: user code is referenced by dotted path and lives in the image.
"""

from __future__ import annotations

import dataclasses
import posixpath

import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2
from tfx import v1 as tfx
from tfx import version as tfx_version
from tfx.orchestration.data_types import RuntimeParameter
from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner

from pipeline.core.beam import PIPELINE_STAGES
from pipeline.config import PipelineConfig
from pipeline.core.errors import ConfigError
from pipeline.kubeflow_config import (
    KubeflowConfig,
    ResourcesConfig,
    check_kubeflow_config,
    memory_gigabytes,
)
from pipeline.kubeflow_entrypoint import COMMAND as ENTRYPOINT_COMMAND
from pipeline.pipeline import create_pipeline, default_train_args

DATA_ROOT_PARAMETER = "data_root"
TRAIN_ARGS_PARAMETER = "train_args"
ResourceSpec = pipeline_spec_pb2.PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec


@dataclasses.dataclass(frozen=True)
class CompiledPipeline:
    path: str
    spec: dict  # the PipelineSpec, as written
    parameters: dict[str, str]  # runtime parameter name: default value


def compile_pipeline(config: PipelineConfig, output: str) -> CompiledPipeline:
    """Writes the PipelineSpec YAML that the kfp client and Vertex AI Pipelines submit."""
    kubeflow = config.kubeflow
    check_kubeflow_config(config.kubeflow, config.pipeline_name)
    parameters = runtime_parameters(config)
    pipeline = create_pipeline(
        in_image(config), data_root=parameters[DATA_ROOT_PARAMETER],
        pipeline_root=kubeflow.pipeline_root, serving_dir=kubeflow.serving_dir,
        beam_pipeline_args=kubeflow.beam_args or config.beam.pipeline_args(
            *PIPELINE_STAGES, root=kubeflow.project_dir),
        train_args=parameters.get(TRAIN_ARGS_PARAMETER),
        vertex_training=vertex_training_config(kubeflow))
    # Every container task runs TFX's executor entrypoint through medtfx's, which ends
    # the task without the interpreter's teardown (pipeline/kubeflow_entrypoint.py).
    runner = kubeflow_v2_dag_runner.KubeflowV2DagRunner(
        kubeflow_v2_dag_runner.KubeflowV2DagRunnerConfig(
            default_image=kubeflow.image, default_commands=ENTRYPOINT_COMMAND,
            use_pipeline_spec_2_1=True))  # the schema KFP 2 backends and Vertex AI read
    spec = runner.run(pipeline, write_out=False)["pipelineSpec"]
    # A PipelineSpec file carries no runtime config: the root and the parameter defaults
    # go where the kfp client and Vertex AI look for them.
    spec["defaultPipelineRoot"] = kubeflow.pipeline_root
    declared = spec["root"]["inputDefinitions"]["parameters"]
    for name, parameter in parameters.items():
        declared[name].update(defaultValue=parameter.default, isOptional=True)
    set_resources(spec, pipeline, kubeflow)
    with open(output, "w") as f:
        f.write(f"# {config.pipeline_name}: compiled by `medtfx compile-kfp` with tfx "
                f"{tfx_version.__version__} KubeflowV2DagRunner.\n"
                f"# Runtime parameters (defaults under root.inputDefinitions): "
                f"{', '.join(parameters)}.\n")
        yaml.safe_dump(spec, f, sort_keys=True)
    return CompiledPipeline(output, spec, {n: p.default for n, p in parameters.items()})


def runtime_parameters(config: PipelineConfig) -> dict[str, RuntimeParameter]:
    """What a user changes per run: the data, and TrainArgs (num_steps) as JSON, the only
    form in which KubeflowV2DagRunner takes a proto-valued parameter. An ensemble's members
    train on splits of their own, so it has no TrainArgs parameter."""
    parameters = {DATA_ROOT_PARAMETER: RuntimeParameter(
        name=DATA_ROOT_PARAMETER, ptype=str, default=config.kubeflow.data_root)}
    if not config.trainer.ensemble_folds:
        train_args = json_format.MessageToJson(default_train_args(config), indent=None,
                                               preserving_proto_field_name=True)
        parameters[TRAIN_ARGS_PARAMETER] = RuntimeParameter(
            name=TRAIN_ARGS_PARAMETER, ptype=str, default=train_args)
    return parameters


def in_image(config: PipelineConfig) -> PipelineConfig:
    """The config with repository paths resolved where the image holds the project."""
    if posixpath.isabs(config.schema):
        return config
    return config.model_copy(
        update={"schema": posixpath.join(config.kubeflow.project_dir, config.schema)})


def vertex_training_config(kubeflow: KubeflowConfig) -> dict | None:
    """Trainer custom_config entries that make it launch a Vertex AI custom job running
    the same image (tfx.extensions.google_cloud_ai_platform). With several workers, a
    second pool holds all but the chief: Vertex AI gives pool 0 the chief's TF_CONFIG and
    pool 1 the workers', and every replica runs the Trainer executor."""
    vertex = kubeflow.vertex_training
    if vertex is None:
        return None
    machine = {"machine_type": vertex.machine_type}
    if vertex.accelerator_count:
        machine.update(accelerator_type=vertex.accelerator_type,
                       accelerator_count=vertex.accelerator_count)
    pool = {"machine_spec": machine, "container_spec": {"image_uri": kubeflow.image}}
    pools = [{**pool, "replica_count": 1}]
    if vertex.workers > 1:
        pools.append({**pool, "replica_count": vertex.workers - 1})
    cloud = tfx.extensions.google_cloud_ai_platform
    return {
        cloud.ENABLE_VERTEX_KEY: True,
        cloud.VERTEX_REGION_KEY: vertex.region,
        cloud.TRAINING_ARGS_KEY: {"project": vertex.project,
                                  "job_spec": {"worker_pool_specs": pools}},
    }


def set_resources(spec: dict, pipeline: tfx.dsl.Pipeline, kubeflow: KubeflowConfig) -> None:
    """Container limits per task, set in the compiled spec rather than through
    with_platform_config: TFX 1.21's compiler drops the platform_config of a file-based
    ExampleGen, and this way every container task is treated alike."""
    executors = spec["deploymentSpec"]["executors"]
    for key, limits in kubeflow.resources.items():
        where = f"kubeflow.resources: {key}"
        matched = [c for c in pipeline.components if key in (c.id, type(c).__name__)]
        if not matched:
            raise ConfigError(f"{where}: no such component; components: "
                              f"{', '.join(c.id for c in pipeline.components)}")
        for component in matched:
            if component.id not in spec["components"]:  # a resolver: queries, no container
                raise ConfigError(f"{where}: {component.id} runs no container")
            executor = executors[spec["components"][component.id]["executorLabel"]]
            if limits.accelerator_count and isinstance(
                    component, tfx.extensions.google_cloud_ai_platform.Trainer):
                raise ConfigError(f"{where}: the Trainer runs as a Vertex AI custom job; "
                                  "give its accelerators in kubeflow.vertex_training")
            executor["container"]["resources"] = json_format.MessageToDict(
                resource_spec(limits, where))


def resource_spec(limits: ResourcesConfig, where: str) -> ResourceSpec:
    """Both field generations, as the kfp compiler writes them: resource_* for KFP 2
    backends, the numeric ones for Vertex AI and older backends."""
    spec = ResourceSpec()
    if limits.cpu is not None:
        spec.cpu_limit = limits.cpu
        spec.resource_cpu_limit = f"{limits.cpu:g}"
    if limits.memory is not None:
        spec.memory_limit = memory_gigabytes(limits.memory, where)
        spec.resource_memory_limit = limits.memory
    if limits.accelerator_count:
        spec.accelerator.type = spec.accelerator.resource_type = limits.accelerator_type
        spec.accelerator.count = limits.accelerator_count
        spec.accelerator.resource_count = str(limits.accelerator_count)
    return spec
