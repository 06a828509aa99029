"""Checks of the config's kubeflow: section, made before TFX is imported (which takes
seconds), so that a compile with a missing or unusable setting fails at once."""

from __future__ import annotations

import re

from pipeline.config import PipelineConfig, ResourcesConfig
from pipeline.errors import ConfigError

PIPELINE_NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,127}")
QUANTITY_RE = re.compile(r"(?P<number>\d+(\.\d+)?)(?P<unit>[KMGT]i?)?")
UNIT_BYTES = {None: 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
              "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
LOCATIONS = ("pipeline_root", "data_root", "serving_dir")


def check_kubeflow_config(config: PipelineConfig) -> None:
    """The settings a compiled pipeline cannot run without."""
    if not PIPELINE_NAME_RE.fullmatch(config.pipeline_name):
        raise ConfigError(f"pipeline_name {config.pipeline_name!r}: Kubeflow needs lowercase "
                          "letters, digits and '-' ([a-z0-9][a-z0-9-]{0,127})")
    kubeflow = config.kubeflow
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
