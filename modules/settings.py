"""The Trainer's settings: the `trainer:` section of the pipeline config, owned here beside
the code that reads them.

The config loads these models from YAML (so an unknown or misspelt key fails at load, with
the field's path), the pipeline hands them to `run_fn` through the Trainer's custom_config,
and `run_fn` rebuilds the same typed object from it.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from modules.settings_base import Settings
from modules.task import TaskSpec

CLASS_BALANCE = ("weights", "sampling", "none")


class ImageLimits(Settings):
    """Bounds on an untrusted image, checked before it is decoded (a 140 KB PNG can declare
    12000 x 12000 pixels and take 2 GB to decode): in the Transform graph, and so at
    serving and in training, and in the input checks. A serving request also has a batch
    bound."""

    image_bytes: int = 50 * 2**20  # encoded bytes of one image
    image_pixels: int = 40_000_000  # width x height its header declares (6000 x 6000 fits)
    batch: int = 1024  # images in one serving request (TFMA sends up to 1000)

    @model_validator(mode="after")
    def _positive(self) -> ImageLimits:
        bad = [f"{name} {value} must be at least 1" for name, value in self
               if value < 1]
        if bad:
            raise ValueError("; ".join(bad))
        return self


class AugmentSettings(Settings):
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

    @model_validator(mode="after")
    def _invertible(self) -> AugmentSettings:
        if not (abs(self.zoom) < 1 and abs(self.shear) < 90):
            raise ValueError(f"augment zoom {self.zoom} must be below 1 and shear "
                             f"{self.shear} below 90 degrees")
        return self


class OodSettings(Settings):
    """The out-of-distribution guard (modules/ood.py): fitted after training on the pooled
    features of at most `max_images` training images (no augmentation), its threshold the
    `quantile` of the scores of as many validation images."""

    enabled: bool = True
    max_images: int = 4000  # bounds the fit's pass over each fold at scale
    quantile: float = 0.99  # about 1 - quantile of validation-like images are flagged

    @model_validator(mode="after")
    def _usable(self) -> OodSettings:
        problems = []
        if self.max_images < 2:
            problems.append(f"max_images {self.max_images} must be at least 2")
        if not 0 < self.quantile < 1:
            problems.append(f"quantile {self.quantile} must be between 0 and 1")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class TrainerSettings(Settings):
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
    augment: AugmentSettings = Field(default_factory=AugmentSettings)
    ood: OodSettings = Field(default_factory=OodSettings)  # the out-of-distribution guard
    shuffle_buffer: int = 2048  # examples; a shard holds ~2200 at full scale
    # Test-time augmentation in the serving graph: the mean over the first `tta` of the 8
    # flips/quarter turns (1: off). Only for tasks whose images have no orientation.
    tta: int = 1
    # Calibration (modules/calibration.py) of three or more classes: false, temperature
    # scaling, which keeps each case's top class; true, a bias per class beside it, which
    # brings back the class priors that class weights moved but may change the top class
    # (DDSM sample: ECE 0.050 against 0.030, balanced accuracy 0.509 against 0.460).
    calibration_class_bias: bool = False
    # Start from the last blessed model's weights when there is one (continuous retraining).
    # Off by default: a baseline that changes the Trainer's inputs defeats the cache, so a
    # repeated run would retrain.
    warm_start: bool = False
    # K-fold ensemble: train one model per fold of the non-evaluation shards and serve their
    # average (0: one model, validated on data.validation_fold).
    ensemble_folds: int = 0
    mixed_precision: bool = True  # float16 on GPUs, bfloat16 on TPUs; CPUs stay float32
    seed: int = 42

    @model_validator(mode="after")
    def _can_train(self) -> TrainerSettings:
        """Settings whose types are right but whose values cannot train."""
        problems = []
        if self.class_balance not in CLASS_BALANCE:
            problems.append(f"class_balance {self.class_balance!r} is not one of "
                            f"{', '.join(CLASS_BALANCE)}")
        if not 1 <= self.tta <= 8:
            problems.append(f"tta {self.tta} must be 1 (off) to 8 orientations")
        if not 0 <= self.frozen_epochs < self.epochs:
            problems.append(f"frozen_epochs {self.frozen_epochs} must leave some of the "
                            f"{self.epochs} epochs to fine-tune")
        if not 0 < self.unfreeze_fraction <= 1:
            problems.append(f"unfreeze_fraction {self.unfreeze_fraction} must be in (0, 1]")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class RunSettings(TrainerSettings):
    """What one Trainer's run_fn reads from its custom_config: the trainer section and what
    else that Trainer needs."""

    task: TaskSpec = Field(default_factory=TaskSpec)  # keys, classes, metadata, buckets
    limits: ImageLimits = Field(default_factory=ImageLimits)  # the serving batch bound
    ensemble_member: int | None = None  # the fold this Trainer trains, in an ensemble
    code: str = ""  # the code fingerprint: keeps TFX's cache honest (pipeline/core/fingerprint.py)

    @classmethod
    def from_custom_config(cls, custom_config: dict) -> RunSettings:
        """The settings among a custom_config's entries (Vertex AI adds its own)."""
        return cls.model_validate({k: v for k, v in custom_config.items()
                                   if k in cls.model_fields})
