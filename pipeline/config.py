"""The one typed configuration of a medtfx pipeline, loaded from YAML with --set overrides.

`--set trainer.image_size=64` names a field by its path; a field name that is unique across
sections may be given alone (`--set image_size=64`). Values are parsed as YAML, so
`--set validation_fold=2` and `--set slices=[[sex],[age_bucket]]` work.
"""

from __future__ import annotations

import difflib
import functools
import os
import typing
import warnings
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError

from modules.settings_base import Settings
from modules.settings import ImageLimits, TrainerSettings
from modules.task import TaskSpec
from pipeline.core.beam import BeamConfig
from pipeline.data.shards import SplitPlan, ensemble_splits, plan_splits
from pipeline.data.sources import SourceConfig
from pipeline.core.errors import ConfigError
from pipeline.kubeflow_config import KubeflowConfig
from pipeline.results.gate import EvaluationConfig
from pipeline.results.packaging import ModelCardConfig
from pipeline.serving.settings import ServingConfig

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(os.path.dirname(__file__), "configs")
DEFAULT_CONFIG = os.path.join(CONFIG_DIR, "default.yaml")


class DataConfig(Settings):
    # Labelled shards of the public layout: train00 ... train{train_shards-1}.
    train_shards: int = 15
    # Folds are contiguous blocks of whole shards (patients never straddle a split).
    folds: int = 5
    eval_fold: int = 4  # gates the model in the Evaluator
    validation_fold: int | None = 3  # picks epochs/checkpoints; null is refused (shards.py)
    # true: the data root holds numbered spans, span-N/trainNN-COUNT.tfrec, and each run
    # reads the newest (ImportExampleGen `span-{SPAN}` patterns).
    spans: bool = False
    # Which arrivals of labelled data a new span holds (`medtfx retrain`): "latest", "all",
    # or the last K. The span is built when it is registered, so every orchestrator reads
    # the window as one span; no span-range resolver is needed.
    window: int | str = "all"


class ScoringConfig(Settings):
    """Batch scoring of the release's unlabelled test shards (testNN-COUNT.tfrec, at the
    data root, also with spans) by the model just blessed: TFX's BulkInferrer writes
    PredictionLogs, SubmissionWriter the submission CSV the run summary names."""

    # auto: on when the data root holds test shards, which `medtfx run` looks for; a
    # compiled Kubeflow pipeline cannot look into its runtime data root, so there auto is
    # off and a release with test shards sets true.
    test_shards: bool | Literal["auto"] = "auto"
    # Examples per model call. Beam would grow batches towards 10,000 (a 512 px batch of
    # 1,000 is 3 GB of pixels before the network), and serving refuses more than
    # limits.batch.
    max_batch: int = Field(default=64, ge=1)


class RetrainConfig(Settings):
    """`medtfx retrain`: checks of incoming files before they become a span."""
    # Per-file drift bound against the previous span, per feature: Jensen-Shannon
    # divergence for age, L-infinity distance for the categorical codes. The defaults suit
    # shards of a few dozen records, whose sampling noise alone reached 0.5 (age) and 0.3
    # (sex) on the synthetic data; shards of thousands of records take bounds near 0.1.
    drift: dict[str, float] = Field(default_factory=lambda: {
        "age_approx": 0.6, "sex": 0.4, "anatom_site_general_challenge": 0.4,
        "target": 0.4})
    poll_seconds: float = 30.0  # --watch: how often the incoming folder is listed
    settle_seconds: float = 60.0  # --watch: files unchanged this long are complete


class MonitorConfig(Settings):
    """`medtfx monitor`: how far a window of served requests may lie from what the model
    was trained and evaluated on (pipeline/monitor/). Metadata features use the bounds of
    `retrain.drift`, with TFDV's comparators, as arrivals do."""

    # Population stability index of each image statistic (size, aspect, brightness,
    # contrast, grey and one-channel shares) against the training fold, and of the scores
    # against the evaluation fold's: below 0.1 is read as stable, above 0.25 as a shift.
    max_psi: float = Field(default=0.25, gt=0)
    # The share of positive decisions against the evaluation fold's, as an absolute change.
    max_decision_change: float = Field(default=0.15, gt=0, le=1)
    # The share the model's own out-of-distribution guard flags (it flags about 1% of
    # in-distribution images by construction).
    max_ood_share: float = Field(default=0.05, gt=0, le=1)
    min_requests: int = Field(default=100, ge=1)  # fewer images in a window are not judged
    reference_images: int = Field(default=1000, ge=10)  # training records measured


with warnings.catch_warnings():
    # `schema` is the config's own key; BaseModel.schema() is pydantic v1 API, unused here.
    warnings.filterwarnings("ignore", message='Field name "schema"')

    class PipelineConfig(Settings):
        pipeline_name    : str = "medtfx-melanoma"
        schema: str = "schema/melanoma.pbtxt"  # relative to the repository
        enable_cache: bool = True
        task: TaskSpec = Field(default_factory=TaskSpec)
        source: SourceConfig = Field(default_factory=SourceConfig)
        data: DataConfig = Field(default_factory=DataConfig)
        trainer: TrainerSettings = Field(default_factory=TrainerSettings)
        evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
        model_card: ModelCardConfig = Field(default_factory=ModelCardConfig)
        beam: BeamConfig = Field(default_factory=BeamConfig)
        serving: ServingConfig = Field(default_factory=ServingConfig)
        scoring: ScoringConfig = Field(default_factory=ScoringConfig)
        limits: ImageLimits = Field(default_factory=ImageLimits)
        retrain: RetrainConfig = Field(default_factory=RetrainConfig)
        monitor: MonitorConfig = Field(default_factory=MonitorConfig)
        kubeflow: KubeflowConfig = Field(default_factory=KubeflowConfig)

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
    where = os.path.basename(path)
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
    config = _validate(raw, where)
    plan = config.split_plan  # an impossible fold plan fails here, at load
    if config.trainer.ensemble_folds:
        ensemble_splits(plan, config.trainer.ensemble_folds)
    if config.serving.keep_versions < 1:
        raise ConfigError(f"{where}: serving.keep_versions {config.serving.keep_versions} "
                          "must be at least 1")
    if not 1 <= config.serving.warmup_examples <= config.limits.batch:
        raise ConfigError(f"{where}: serving.warmup_examples {config.serving.warmup_examples} "
                          f"must be at least 1 and at most limits.batch ({config.limits.batch})")
    _check_slices(config, where)
    for section in ("evaluation", "scoring"):
        batch = getattr(config, section).max_batch
        if batch > config.limits.batch:
            raise ConfigError(f"{where}: {section}.max_batch {batch} is above limits.batch "
                              f"({config.limits.batch}), the most a model call takes")
    classes = config.task.label.classes
    mapped = {name for name in config.source.label_values.values() if name}
    if config.source.label_values and mapped != set(classes):
        raise ConfigError(f"{where}: source: label_values map to {sorted(mapped)}, but "
                          f"task: label: classes are {classes}: every value maps to a class "
                          "or to null (dropped), and every class needs a value")
    unknown = sorted(set(config.evaluation.class_recall_floors) - set(classes))
    if unknown:
        raise ConfigError(f"{where}: evaluation: class_recall_floors: {', '.join(unknown)} "
                          f"not among the classes ({', '.join(config.task.label.classes)})")
    window = config.data.window
    if not (window in ("all", "latest") or (isinstance(window, int) and window >= 1)):
        raise ConfigError(f"{where}: data.window {window!r} must be \"latest\", \"all\" or "
                          "a number of arrivals (at least 1)")
    return config


def with_scoring_resolved(config: PipelineConfig, test_shards: int) -> PipelineConfig:
    """The config with scoring.test_shards true or false, given how many test shards the
    data root holds; true with none is refused, since the run could not score anything."""
    setting = config.scoring.test_shards
    if setting is True and not test_shards:
        raise ConfigError("scoring.test_shards is true, but the data root holds no test "
                          "shards (testNN-COUNT.tfrec)")
    scoring = config.scoring.model_copy(
        update={"test_shards": test_shards > 0 if setting == "auto" else setting})
    return config.model_copy(update={"scoring": scoring})


def _check_slices(config: PipelineConfig, where: str) -> None:
    """Every slice feature is one the task names; a typo would otherwise surface as a
    missing slice after training."""
    task = config.task
    known = [c.key for c in task.categorical] + [n.slice_key for n in task.bucketed]
    unknown = sorted({f for family in config.evaluation.slices for f in family} - set(known))
    if unknown:
        raise ConfigError(f"{where}: evaluation: slices: {', '.join(unknown)} not among the "
                          f"task's slice features ({', '.join(known) or 'none'})")


# Fields that earlier runs recorded and the config no longer has; a recorded config drops
# them when it is read back (`medtfx report` on an earlier run). confidence_intervals
# turned TFMA's jackknife on or off; the intervals now cost the Evaluator nothing.
RETIRED_FIELDS = ("evaluation.confidence_intervals",)


def load_config_dict(raw: dict) -> PipelineConfig:
    """A config from its dict form (as run_summary.json records it), retired fields
    dropped."""
    current = dict(raw)
    for path in RETIRED_FIELDS:
        section, _, name = path.partition(".")
        if isinstance(current.get(section), dict):
            current[section] = {k: v for k, v in current[section].items() if k != name}
    return _validate(current, "recorded config")


def to_dict(config: PipelineConfig) -> dict:
    return config.model_dump()


def _parse_override(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE")
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {text!r}: value is not valid YAML: {err}") from err


def _field_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    paths = []
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            paths += _field_paths(field.annotation, f"{prefix}{name}.")
        else:
            paths.append(prefix + name)
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
    # Close to a whole path (trainer.backbon) or, written as a leaf, to a leaf (imagesize).
    leaf = key.rsplit(".", 1)[-1]
    near = closest(key, paths) + [p for p in paths if "." not in key and
                                  p.rsplit(".", 1)[-1] in closest(leaf, [p.rsplit(".", 1)[-1]
                                                                         for p in paths])]
    sections = sorted(PipelineConfig.model_fields)
    raise ConfigError(f"--set {key}: no such config field; " + (
        f"did you mean {', '.join(dict.fromkeys(near))}?" if near else
        f"none is close (top level: {', '.join(sections)})"))


def closest(name: str, names: list[str]) -> list[str]:
    """The few of `names` close to a misspelt `name` (difflib's ratio at least 0.75)."""
    return difflib.get_close_matches(name, names, n=3, cutoff=0.75)


def _set_path(raw: dict, path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = raw
    for name in parents:
        node = node.setdefault(name, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{path}: {name} is not a section")
    node[leaf] = value


def _validate(raw: dict, where: str) -> PipelineConfig:
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(describe_error(err, where)) from None


_EXPECTED = {"int": "int", "float": "float", "bool": "bool", "string": "str",
             "list": "a list", "dict": "a mapping", "model": "a mapping"}
_UNION_MEMBERS = ("int", "float", "bool", "str")  # pydantic names a union's member in loc


def describe_error(err: ValidationError, where: str) -> str:
    """The first problem pydantic found, as `FILE: section: field: what is wrong`."""
    errors = err.errors(include_url=False)
    unknown = [e for e in errors if e["type"] == "extra_forbidden"]
    if unknown:
        parent = unknown[0]["loc"][:-1]
        names = sorted(str(e["loc"][-1]) for e in unknown if e["loc"][:-1] == parent)
        known = sorted(_section(parent).model_fields)
        near = [match for name in names for match in closest(name, known)]
        return (f"{_place(where, parent)}unknown field(s) {', '.join(names)}; " + (
            f"did you mean {', '.join(dict.fromkeys(near))}?" if near else
            f"known: {', '.join(known)}"))
    loc = tuple(p for p in errors[0]["loc"] if p not in _UNION_MEMBERS)
    same = [e for e in errors if tuple(p for p in e["loc"] if p not in _UNION_MEMBERS) == loc]
    kinds = [_EXPECTED.get(e["type"].split("_")[0]) for e in same]
    if errors[0]["type"] == "value_error":
        problem = errors[0]["msg"].removeprefix("Value error, ")
    elif all(kinds):
        problem = f"expected {' or '.join(dict.fromkeys(kinds))}, got {errors[0]['input']!r}"
    else:
        problem = errors[0]["msg"]
    return f"{_place(where, loc)}{problem}"


def _place(where: str, loc: tuple) -> str:
    return ": ".join([where, *(str(part) for part in loc)]) + ": "


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The sections an annotation holds: X, X | None, dict[str, X]."""
    options = typing.get_args(annotation) or (annotation,)
    return [a for a in options if isinstance(a, type) and issubclass(a, BaseModel)]


def _section(loc: tuple) -> type[BaseModel]:
    """The section a location points into; keys of mappings are passed over."""
    model: type[BaseModel] = PipelineConfig
    for name in loc:
        field = model.model_fields.get(str(name))
        inner = _models_in(field.annotation) if field else []
        model = inner[0] if inner else model
    return model
