"""The config's kubeflow: section (`medtfx compile-kfp` only) and its checks, made before
TFX is imported (which takes seconds), so that a compile with a missing or unusable setting
fails at once."""

from __future__ import annotations

import re

from pydantic import Field

from modules.settings_base import Settings
from pipeline.core.errors import ConfigError


PIPELINE_NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,127}")
QUANTITY_RE = re.compile(r"(?P<number>\d+(\.\d+)?)(?P<unit>[KMGT]i?)?")
UNIT_BYTES = {None: 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
              "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
LOCATIONS = ("pipeline_root", "data_root", "serving_dir")


class ResourcesConfig(Settings):
    """Limits of one task's container; unset fields are left to the platform."""
    cpu: float | None = None  # cores
    memory: str | None = None  # a Kubernetes quantity: 32Gi, 16G, 512Mi
    # Vertex AI: a machine accelerator (NVIDIA_TESLA_T4, NVIDIA_L4, ...); Kubeflow
    # Pipelines: the node resource to request (nvidia.com/gpu).
    accelerator_type: str | None = None
    accelerator_count: int = 0


class VertexTrainingConfig(Settings):
    """Runs the Trainer as a Vertex AI custom job: its task only launches and waits."""
    project: str = ""
    region: str = ""
    machine_type: str = "n1-standard-8"  # "cloud-tpu" with a TPU accelerator
    accelerator_type: str | None = None  # NVIDIA_TESLA_T4, NVIDIA_L4, TPU_V2, TPU_V3, ...
    accelerator_count: int = 0
    # Machines training together (MultiWorkerMirroredStrategy), the chief included, each
    # with the machine and accelerators above; trainer.batch_size is per replica.
    workers: int = 1


class KubeflowConfig(Settings):
    """`medtfx compile-kfp` only: where the compiled pipeline runs and reads and writes."""
    image: str = ""  # the image kubeflow/Dockerfile builds, as pushed: REGISTRY/medtfx:TAG
    project_dir: str = "/medtfx"  # where that Dockerfile puts the project in the image
    pipeline_root: str = ""  # gs://BUCKET/PATH: artifacts of every run
    data_root: str = ""  # gs://...: the default of the data_root runtime parameter
    serving_dir: str = ""  # gs://...: where the Pusher puts blessed models
    # Raw Beam arguments of every Beam component; empty (the usual): the ones the `beam:`
    # section builds for its runner (kubeflow/README.md: Dataflow, Flink, Spark, Dask).
    beam_args: list[str] = Field(default_factory=list)
    # By component id (ImportExampleGen, Transform, Trainer, ...) or by component class
    # name, which covers every component of that class (e.g. several Trainers).
    resources: dict[str, ResourcesConfig] = Field(default_factory=dict)
    vertex_training: VertexTrainingConfig | None = None  # null: train inside the task


def check_kubeflow_config(kubeflow: KubeflowConfig, pipeline_name: str) -> None:
    """The settings a compiled pipeline cannot run without."""
    if not PIPELINE_NAME_RE.fullmatch(pipeline_name):
        raise ConfigError(f"pipeline_name {pipeline_name!r}: Kubeflow needs lowercase "
                          "letters, digits and '-' ([a-z0-9][a-z0-9-]{0,127})")
    if not kubeflow.image:
        raise ConfigError("kubeflow.image is not set: set it to the image built from "
                          "kubeflow/Dockerfile (--set kubeflow.image=REGISTRY/medtfx:TAG)")
    for field in LOCATIONS:
        location = getattr(kubeflow, field)
        if not location:
            raise ConfigError(f"kubeflow.{field} is not set: set it in the config's kubeflow: "
                              f"section or with --set kubeflow.{field}=gs://BUCKET/PATH")
        if not location.startswith("gs://"):
            raise ConfigError(
                f"kubeflow.{field} {location!r}: TFX components read and write it through "
                "TensorFlow, which here (TF 2.21) has only the gs:// remote filesystem "
                "(no s3:// or MinIO); use gs://BUCKET/PATH")
    for key, limits in kubeflow.resources.items():
        check_resources(limits, f"kubeflow.resources: {key}")
    vertex = kubeflow.vertex_training
    if vertex is not None:
        if not (vertex.project and vertex.region):
            raise ConfigError("kubeflow.vertex_training needs project and region")
        if vertex.accelerator_count and not vertex.accelerator_type:
            raise ConfigError("kubeflow.vertex_training: accelerator_count needs an "
                              "accelerator_type")
        if vertex.workers < 1:
            raise ConfigError(f"kubeflow.vertex_training: workers {vertex.workers} must be "
                              "at least 1")
        if vertex.workers > 1 and (vertex.accelerator_type or "").startswith("TPU"):
            raise ConfigError("kubeflow.vertex_training: workers > 1 with a TPU: the Trainer "
                              "trains on one TPU host (TPUStrategy); set workers: 1")


def check_resources(limits: ResourcesConfig, where: str) -> None:
    if limits.cpu is not None and limits.cpu <= 0:
        raise ConfigError(f"{where}: cpu must be positive, got {limits.cpu:g}")
    if limits.memory is not None:
        memory_gigabytes(limits.memory, where)
    if limits.accelerator_count < 0:
        raise ConfigError(f"{where}: accelerator_count must not be negative")
    if limits.accelerator_count and not limits.accelerator_type:
        raise ConfigError(f"{where}: accelerator_count needs an accelerator_type")


def memory_gigabytes(quantity: str, where: str) -> float:
    """A Kubernetes quantity in GB (10^9 bytes), the unit of a ResourceSpec's memory_limit."""
    match = QUANTITY_RE.fullmatch(quantity)
    if not match:
        raise ConfigError(f"{where}: memory {quantity!r} is not a Kubernetes quantity such "
                          "as 32Gi or 16G")
    return float(match["number"]) * UNIT_BYTES[match["unit"]] / 1e9
