"""What ModelPackager is handed: one typed settings object the definition builds from the
config (pipeline/pipeline.py) and the component, the model card and `medtfx history` read
back. It travels as TFX's one string parameter, validated at both ends."""

from __future__ import annotations

from pydantic import Field

from modules.settings import OodSettings
from modules.settings_base import Settings
from modules.task import TaskSpec
from pipeline.results.gate import GATE_BOUNDS, EvaluationConfig
from pipeline.serving.settings import ServingConfig


class ModelCardConfig(Settings):
    """The parts of each pushed model's card that a run cannot measure."""

    intended_use: str = (
        "Decision support for melanoma screening: ranks dermoscopic images of skin lesions "
        "so that a clinician reviews the likeliest malignant first, and refers those at or "
        "above the operating threshold. Not a diagnosis; not for use without a clinician.")
    limitations: list[str] = Field(default_factory=lambda: [
        "Evaluated retrospectively on held-out shards of the training release only; "
        "performance on other cameras, clinics and populations is unknown.",
        "Anatomic-site and demographic codes follow the release's own encoding.",
    ])


class PackagerSettings(ModelCardConfig):
    """The model's identity and data, the gate it passed, the card's own text, the guard
    it carries and the checks before a push."""

    pipeline_name: str
    backbone: str
    image_size: int
    splits: dict[str, list[str]]  # by role: train, validation, evaluation
    task: TaskSpec
    target_sensitivity: float
    gate: EvaluationConfig
    ood: OodSettings | None = None  # the out-of-distribution guard, for the card
    serving: ServingConfig = Field(default_factory=ServingConfig)
    code: str = ""  # the component's code fingerprint, for TFX's cache

    def parameter(self) -> str:
        """The component's parameter: this as JSON, the gate by its bounds alone and the
        serving checks without the Pusher's setting, so a setting the packager does not
        read (the report's gallery, the versions kept) leaves TFX's cache alone."""
        return self.model_dump_json(exclude={
            "gate": set(EvaluationConfig.model_fields) - set(GATE_BOUNDS),
            "serving": {"keep_versions"}})
