"""The one typed configuration of a medtfx pipeline, loaded from YAML with --set overrides.

`--set trainer.image_size=64` names a field by its path; a field name that is unique across
sections may be given alone (`--set image_size=64`). Values are parsed as YAML, so
`--set validation_fold=null` and `--set age_buckets=[40,60]` work.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import types
import typing
from typing import Any

import yaml

from pipeline.data.shards import SplitPlan, ensemble_splits, plan_splits
from pipeline.errors import ConfigError

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(os.path.dirname(__file__), "configs")
DEFAULT_CONFIG = os.path.join(CONFIG_DIR, "default.yaml")


@dataclasses.dataclass
class DataConfig:
    # Labelled shards of the public layout: train00 ... train{train_shards-1}.
    train_shards: int = 15
    # Folds are contiguous blocks of whole shards (patients never straddle a split).
    folds: int = 5
    eval_fold: int = 4  # gates the model in the Evaluator
    validation_fold: int | None = 3  # picks epochs/checkpoints; null: reuse eval_fold
    # true: the data root holds numbered spans, span-N/trainNN-COUNT.tfrec, and each run
    # reads the newest (ImportExampleGen `span-{SPAN}` patterns).
    spans: bool = False
    # Which arrivals of labelled data a new span holds (`medtfx retrain`): "latest", "all",
    # or the last K. The span is built when it is registered, so every orchestrator reads
    # the window as one span; no span-range resolver is needed.
    window: int | str = "all"


@dataclasses.dataclass
class AugmentConfig:
    """Random changes to training images (the Trainer's input_fn only; never at serving).

    Dermoscopy has no up or left, so lesions get every flip and quarter turn; chest X-rays
    have a left and a right: switch flips and turns off for them.
    """

    enabled: bool = True
    flip_left_right: bool = True  # each flip drawn on its own, per image
    flip_up_down: bool = True
    quarter_turns: bool = True
    rotation: float = 15.0  # degrees, uniform in [-rotation, rotation]
    shear: float = 5.0  # degrees
    zoom: float = 0.1  # scale uniform in [1 - zoom, 1 + zoom]
    shift: float = 0.1  # fraction of the side, each axis
    brightness: float = 0.1  # added, uniform in [-brightness, brightness]
    contrast: float = 0.1  # factor uniform in [1 - contrast, 1 + contrast]
    saturation: float = 0.1  # factor uniform in [1 - saturation, 1 + saturation]


@dataclasses.dataclass
class TrainerConfig:
    # efficientnet_b0-b7, efficientnet_v2_b0-b3/s, densenet121/169/201, resnet50, vgg16/19,
    # inception_v3, pneumonia_cnn, xray_sex_cnn, or hub:<tfhub.dev handle or local dir>.
    backbone: str = "efficientnet_b0"
    weights: str = "imagenet"  # "imagenet", "none", or a local weights file
    image_size: int = 64
    metadata: bool = False  # fuse sex, age and anatomic site with the image features
    batch_size: int = 32  # per replica; the global batch is this times the replicas
    epochs: int = 5
    train_steps: int | None = None  # null: epochs over the training shards
    eval_steps: int | None = None  # null: the whole validation fold
    # The notebook's schedule: ramp from lr_start to learning_rate (the peak, per replica:
    # it scales with the replicas), sustain, then decay by lr_decay an epoch to lr_min.
    learning_rate: float = 1e-4
    lr_start: float = 5e-6
    lr_min: float = 1e-6
    lr_ramp_epochs: float = 5.0
    lr_sustain_epochs: float = 0.0
    lr_decay: float = 0.8
    dropout: float = 0.2
    label_smoothing: float = 0.05
    # "weights": each example weighted by the inverse of its class's share, inside the
    # dataset (Keras cannot drop weights that are part of the data); "sampling": batches
    # drawn half malignant, half benign; "none".
    class_balance: str = "weights"
    # Two-stage fine-tuning: `frozen_epochs` with the backbone frozen (head only), then the
    # top `unfreeze_fraction` of the backbone's layers train at learning_rate *
    # finetune_lr_scale. frozen_epochs 0 trains everything from the start.
    frozen_epochs: int = 0
    unfreeze_fraction: float = 1.0
    finetune_lr_scale: float = 0.1
    # The weights of the epoch with the best validation AUC are restored before export;
    # training stops after `early_stopping_patience` epochs without a better one (null: never).
    early_stopping_patience: int | None = 3
    # Backbone BatchNorm momentum; null keeps the backbone's (0.99). Training from scratch
    # for a few hundred steps needs a faster one, or inference statistics lag the weights.
    batchnorm_momentum: float | None = None
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    shuffle_buffer: int = 2048  # examples; a shard holds ~2200 at full scale
    # Test-time augmentation in the serving graph: the mean over the first `tta` of the 8
    # flips/quarter turns (1: off). Only for tasks whose images have no orientation.
    tta: int = 1
    # Start from the last blessed model's weights when there is one (continuous retraining).
    # Off by default: a baseline that changes the Trainer's inputs defeats the cache, so a
    # repeated run would retrain.
    warm_start: bool = False
    # K-fold ensemble: train one model per fold of the non-evaluation shards and serve their
    # average (0: one model, validated on data.validation_fold).
    ensemble_folds: int = 0
    mixed_precision: bool = True  # float16 on GPUs, bfloat16 on TPUs; CPUs stay float32
    seed: int = 42


@dataclasses.dataclass
class EvaluationConfig:
    """What blesses a model (every check must hold) and what is reported beside it."""

    auc_threshold: float = 0.75  # overall AUC lower bound
    max_auc_drop: float = 0.01  # overall AUC against the last blessed model
    slice_auc_threshold: float = 0.65  # AUC lower bound on every gated slice
    # Per slice family, e.g. {"sex": 0.7, "sex*anatom_site_general_challenge": 0.6}.
    slice_auc_thresholds: dict[str, float] = dataclasses.field(default_factory=dict)
    max_slice_auc_drop: float = 0.05  # any gated slice against the last blessed model
    # A slice is gated only with this many malignant and benign examples; smaller ones
    # are reported but cannot block a model on a handful of cases.
    min_slice_positives: int = 10
    min_slice_negatives: int = 10
    # The decision threshold shipped with the model is the highest one that reaches
    # target_sensitivity on the evaluation fold; specificity there must reach
    # min_specificity (null: reported, not gated).
    target_sensitivity: float = 0.9
    min_specificity: float | None = None
    report_specificity: float = 0.8  # sensitivity is also reported at this specificity
    # Slice families: a list of features each; two features make a cross (sex x site).
    # Every family is gated and must occur in the data: add [source] for the 70k release.
    slices: list[list[str]] = dataclasses.field(default_factory=lambda: [
        ["sex"], ["age_bucket"], ["anatom_site_general_challenge"],
        ["sex", "anatom_site_general_challenge"]])
    age_buckets: list[int] = dataclasses.field(default_factory=lambda: [30, 45, 60, 75])
    confidence_intervals: bool = True  # TFMA jackknife over 20 sample partitions, 95%


@dataclasses.dataclass
class ModelCardConfig:
    """The parts of each pushed model's card that a run cannot measure."""

    intended_use: str = (
        "Decision support for melanoma screening: ranks dermoscopic images of skin lesions "
        "so that a clinician reviews the likeliest malignant first, and refers those at or "
        "above the operating threshold. Not a diagnosis; not for use without a clinician.")
    limitations: list[str] = dataclasses.field(default_factory=lambda: [
        "Evaluated retrospectively on held-out shards of the training release only; "
        "performance on other cameras, clinics and populations is unknown.",
        "Anatomic-site and demographic codes follow the release's own encoding.",
    ])


@dataclasses.dataclass
class ServingConfig:
    # Pushed versions kept in the serving directory (the oldest go first); `medtfx
    # rollback` can return to any of them.
    keep_versions: int = 5


@dataclasses.dataclass
class RetrainConfig:
    """`medtfx retrain`: checks of incoming files before they become a span."""
    # Per-file drift bound against the previous span, per feature: Jensen-Shannon
    # divergence for age, L-infinity distance for the categorical codes. The defaults suit
    # shards of a few dozen records, whose sampling noise alone reached 0.5 (age) and 0.3
    # (sex) on the synthetic data; shards of thousands of records take bounds near 0.1.
    drift: dict[str, float] = dataclasses.field(default_factory=lambda: {
        "age_approx": 0.6, "sex": 0.4, "anatom_site_general_challenge": 0.4,
        "target": 0.4})
    poll_seconds: float = 30.0  # --watch: how often the incoming folder is listed
    settle_seconds: float = 60.0  # --watch: files unchanged this long are complete


@dataclasses.dataclass
class BeamConfig:
    # multi_processing uses every core for Beam components; in_memory starts faster on
    # small data.
    direct_running_mode: str = "multi_processing"
    direct_num_workers: int = 0  # 0: one per core

    def pipeline_args(self) -> list[str]:
        return [f"--direct_running_mode={self.direct_running_mode}",
                f"--direct_num_workers={self.direct_num_workers}"]


@dataclasses.dataclass
class ResourcesConfig:
    """Limits of one task's container; unset fields are left to the platform."""
    cpu: float | None = None  # cores
    memory: str | None = None  # a Kubernetes quantity: 32Gi, 16G, 512Mi
    # Vertex AI: a machine accelerator (NVIDIA_TESLA_T4, NVIDIA_L4, ...); Kubeflow
    # Pipelines: the node resource to request (nvidia.com/gpu).
    accelerator_type: str | None = None
    accelerator_count: int = 0


@dataclasses.dataclass
class VertexTrainingConfig:
    """Runs the Trainer as a Vertex AI custom job: its task only launches and waits."""
    project: str = ""
    region: str = ""
    machine_type: str = "n1-standard-8"  # "cloud-tpu" with a TPU accelerator
    accelerator_type: str | None = None  # NVIDIA_TESLA_T4, NVIDIA_L4, TPU_V2, TPU_V3, ...
    accelerator_count: int = 0


@dataclasses.dataclass
class KubeflowConfig:
    """`medtfx compile-kfp` only: where the compiled pipeline runs and reads and writes."""
    image: str = ""  # the image kubeflow/Dockerfile builds, as pushed: REGISTRY/medtfx:TAG
    project_dir: str = "/medtfx"  # where that Dockerfile puts the project in the image
    pipeline_root: str = ""  # gs://BUCKET/PATH: artifacts of every run
    data_root: str = ""  # gs://...: the default of the data_root runtime parameter
    serving_dir: str = ""  # gs://...: where the Pusher puts blessed models
    # Beam arguments of every Beam component, e.g. --runner=DataflowRunner --project=...
    # --region=... --temp_location=gs://... --sdk_container_image=IMAGE; empty: the
    # `beam:` section's DirectRunner settings, inside each task's container.
    beam_args: list[str] = dataclasses.field(default_factory=list)
    # By component id (ImportExampleGen, Transform, Trainer, ...) or by component class
    # name, which covers every component of that class (e.g. several Trainers).
    resources: dict[str, ResourcesConfig] = dataclasses.field(default_factory=dict)
    vertex_training: VertexTrainingConfig | None = None  # null: train inside the task


@dataclasses.dataclass
class PipelineConfig:
    pipeline_name: str = "medtfx-melanoma"
    schema: str = "schema/schema.pbtxt"  # relative to the repository
    enable_cache: bool = True
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    trainer: TrainerConfig = dataclasses.field(default_factory=TrainerConfig)
    evaluation: EvaluationConfig = dataclasses.field(default_factory=EvaluationConfig)
    model_card: ModelCardConfig = dataclasses.field(default_factory=ModelCardConfig)
    beam: BeamConfig = dataclasses.field(default_factory=BeamConfig)
    serving: ServingConfig = dataclasses.field(default_factory=ServingConfig)
    retrain: RetrainConfig = dataclasses.field(default_factory=RetrainConfig)
    kubeflow: KubeflowConfig = dataclasses.field(default_factory=KubeflowConfig)

    @functools.cached_property
    def split_plan(self) -> SplitPlan:
        """Which shards train, validate and evaluate; derived once, checked at load."""
        data = self.data
        return plan_splits(data.train_shards, data.folds, data.eval_fold, data.validation_fold)

    @property
    def schema_path(self) -> str:
        return self.schema if os.path.isabs(self.schema) else os.path.join(REPO_ROOT,
                                                                           self.schema)


def load_config(path: str | None = None, overrides: list[str] = ()) -> PipelineConfig:
    """The config in `path` (default: the repo's default.yaml) with KEY=VALUE overrides."""
    path = path or DEFAULT_CONFIG
    try:
        with open(path) as f:
            raw = yaml.safe_load(f) or {}
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config: {err.strerror}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of fields")
    for override in overrides:
        key, value = _parse_override(override)
        _set_path(raw, resolve_key(key), value)
    config = _build(PipelineConfig, raw, os.path.basename(path))
    data = config.data
    plan = config.split_plan  # an impossible fold plan fails here, at load
    if config.trainer.ensemble_folds:
        ensemble_splits(plan, config.trainer.ensemble_folds)
    _check_trainer(config.trainer, os.path.basename(path))
    if config.serving.keep_versions < 1:
        raise ConfigError(f"{os.path.basename(path)}: serving.keep_versions "
                          f"{config.serving.keep_versions} must be at least 1")
    window = data.window
    if not (window in ("all", "latest") or (isinstance(window, int) and window >= 1)):
        raise ConfigError(f"{os.path.basename(path)}: data.window {window!r} must be "
                          "\"latest\", \"all\" or a number of arrivals (at least 1)")
    return config


CLASS_BALANCE = ("weights", "sampling", "none")


def _check_trainer(trainer: TrainerConfig, where: str) -> None:
    """Settings whose types are right but whose values cannot train."""
    problems = []
    if trainer.class_balance not in CLASS_BALANCE:
        problems.append(f"class_balance {trainer.class_balance!r} is not one of "
                        f"{', '.join(CLASS_BALANCE)}")
    if not 1 <= trainer.tta <= 8:
        problems.append(f"tta {trainer.tta} must be 1 (off) to 8 orientations")
    if not 0 <= trainer.frozen_epochs < trainer.epochs:
        problems.append(f"frozen_epochs {trainer.frozen_epochs} must leave some of the "
                        f"{trainer.epochs} epochs to fine-tune")
    if not 0 < trainer.unfreeze_fraction <= 1:
        problems.append(f"unfreeze_fraction {trainer.unfreeze_fraction} must be in (0, 1]")
    if problems:
        raise ConfigError(f"{where}: trainer: " + "; ".join(problems))


def load_config_dict(raw: dict) -> PipelineConfig:
    """A config from its dict form (as run_summary.json records it)."""
    return _build(PipelineConfig, raw, "recorded config")


def _parse_override(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE")
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {text!r}: value is not valid YAML: {err}") from err


def _field_paths(cls: type, prefix: str = "") -> list[str]:
    paths = []
    for field in dataclasses.fields(cls):
        hint = typing.get_type_hints(cls)[field.name]
        if dataclasses.is_dataclass(hint):
            paths += _field_paths(hint, f"{prefix}{field.name}.")
        else:
            paths.append(prefix + field.name)
    return paths


def resolve_key(key: str) -> str:
    """A full dotted field path for `key`, which may be a unique leaf name."""
    paths = _field_paths(PipelineConfig)
    if key in paths:
        return key
    matches = [p for p in paths if p.rsplit(".", 1)[-1] == key]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ConfigError(f"--set {key}: ambiguous, use one of {', '.join(matches)}")
    raise ConfigError(f"--set {key}: no such config field; fields: {', '.join(paths)}")


def _set_path(raw: dict, path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = raw
    for name in parents:
        node = node.setdefault(name, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{path}: {name} is not a section")
    node[leaf] = value


def _build(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(raw) - names
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}; "
                          f"known: {', '.join(sorted(names))}")
    values = {}
    for name, value in raw.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = _build(hint, value, f"{where}: {name}")
        else:
            values[name] = _check_type(value, hint, f"{where}: {name}")
    return cls(**values)


def _check_type(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _check_type(value, option, where)
            except ConfigError as err:
                errors.append(err)
        if len(errors) == 1:  # X | None: say what is wrong with the X
            raise errors[0]
        raise ConfigError(f"{where}: {value!r} is not {_type_name(hint)}")
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_check_type(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        key_type, item = typing.get_args(hint)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {_check_type(k, key_type, where): _check_type(v, item, f"{where}[{k}]")
                for k, v in value.items()}
    if hint is type(None):
        if value is not None:
            raise ConfigError(f"{where}: expected null")
        return None
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: expected {_type_name(hint)}, got {value!r}")
    return value


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint))


def to_dict(config: PipelineConfig) -> dict:
    return dataclasses.asdict(config)
