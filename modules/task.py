"""The task spec: what one dataset's records hold and mean (the `task:` section of the config).

The image key, the label and its classes in order, the group key that keeps a patient's
images together, and the metadata the records carry: categorical codes with the names of
their values, numeric features with their range. The Transform graph, the model, the
serving signatures, the schema check, the slices and every report read it, so a new
dataset is a new spec and no new code. Defaults are the SIIM-ISIC melanoma TFRecords
(modules/features.py).
"""

from __future__ import annotations

from pydantic import Field, model_validator

from modules import features as F
from modules.settings_base import Settings

RESIZE_POLICIES = ("stretch", "pad", "crop")
# The Transform graph's outputs, the model's inputs: the decoded image, and the model
# features as one float vector.
IMAGE_INPUT = "image"
METADATA_KEY = "metadata"


def bucket_names(boundaries: list[int]) -> list[str]:
    """Names of the buckets `bucket` returns: index i names bucket i."""
    edges = [None, *boundaries, None]
    return [f"<{hi}" if lo is None else f"{lo}+" if hi is None else f"{lo}-{hi - 1}"
            for lo, hi in zip(edges[:-1], edges[1:])]


def bucket(values, boundaries: list[int], missing: int):
    """Bucket index of each value (an int64 tensor) for `boundaries`; `missing` stays."""
    import tensorflow as tf

    edges = tf.constant(sorted(boundaries), dtype=tf.int64)
    index = tf.searchsorted(edges, tf.cast(values, tf.int64), side="right", out_type=tf.int64)
    return tf.where(values == missing, tf.constant(missing, tf.int64), index)


class Categorical(Settings):
    """An int64 code per record; code i names `values[i]`; `missing` marks no value."""

    key: str
    name: str = ""  # for people: "anatomic site"; default: the key
    values: list[str]
    # Open: a release may hold codes beyond `values` (the melanoma files' tables are
    # pandas.factorize output per release). Such codes pass validation, are named
    # "code N", and reach the model as "unknown". Closed: the schema refuses them.
    open: bool = False

    @property
    def label(self) -> str:
        return self.name or self.key

    def value_name(self, code: int, missing: int) -> str:
        if code == missing:
            return "missing"
        return self.values[code] if 0 <= code < len(self.values) else f"code {code}"


class Numeric(Settings):
    """An int64 number per record in [min, max]; `missing` marks no value."""

    key: str
    name: str = ""
    min: float
    max: float
    # Slicing: boundaries of the buckets the Evaluator slices on, as feature `bucket_key`
    # (default: KEY_bucket), derived in the model's `slicing_features` signature.
    buckets: list[int] = Field(default_factory=list)
    bucket_key: str = ""

    @property
    def label(self) -> str:
        return self.name or self.key

    @property
    def slice_key(self) -> str:
        return self.bucket_key or f"{self.key}_bucket"

    def bucket_names(self) -> list[str]:
        """Names of the buckets: index i names bucket i ('<30', '30-44', ..., '75+')."""
        return bucket_names(self.buckets)


class Label(Settings):
    key: str = F.LABEL_KEY
    # Class names in code order: code i is classes[i]. Declared, never inferred from folder
    # names (alphabetical order made "Male" class 0 in the CelebA notebook).
    classes: list[str] = Field(default_factory=lambda: ["benign", "malignant"])
    # A binary task scores the probability of this class; it must be code 1.
    positive: str = "malignant"
    # A task of three or more classes: the classes its operating rule flags (DDSM's
    # malignant ones). Their summed probability is scored like a binary model's, with a
    # threshold chosen for the target sensitivity; empty: no rule, the top class only.
    urgent: list[str] = Field(default_factory=list)


class TaskSpec(Settings):
    name: str = "melanoma"
    image_key: str = F.IMAGE_KEY
    image_name_key: str = F.IMAGE_NAME_KEY
    group_key: str = F.PATIENT_KEY  # int64; a group's images stay in one shard
    label: Label = Field(default_factory=Label)
    missing: int = F.MISSING
    categorical: list[Categorical] = Field(default_factory=lambda: [
        Categorical(key=F.SEX_KEY, values=list(F.SEXES)),
        Categorical(key=F.SITE_KEY, name="anatomic site", values=list(F.SITES)),
        Categorical(key=F.DIAGNOSIS_KEY, values=list(F.DIAGNOSES), open=True),
        Categorical(key=F.SOURCE_KEY, values=list(F.SOURCES), open=True),
    ])
    numeric: list[Numeric] = Field(default_factory=lambda: [
        Numeric(key=F.AGE_KEY, name="age", min=0, max=120, buckets=[30, 45, 60, 75],
                bucket_key=F.AGE_BUCKET_KEY)])
    # The metadata the model's metadata branch reads (trainer.metadata), in this order.
    model_features: list[str] = Field(
        default_factory=lambda: [F.SEX_KEY, F.AGE_KEY, F.SITE_KEY])
    # Non-square images to the square input: stretch, pad (keep aspect, zero borders) or
    # crop (the centre square). The Transform graph applies it, so serving does too.
    resize: str = "stretch"

    @model_validator(mode="after")
    def _consistent(self) -> TaskSpec:
        problems = []
        classes = self.label.classes
        if len(classes) < 2 or len(set(classes)) != len(classes):
            problems.append(f"label.classes {classes} must name two or more distinct classes")
        elif len(classes) == 2 and classes[1] != self.label.positive:
            problems.append(f"label.positive {self.label.positive!r} must be the second of "
                            f"label.classes {classes} (a binary model scores class 1)")
        if self.label.urgent and len(classes) == 2:
            problems.append("label.urgent is for three or more classes; a binary task flags "
                            "label.positive")
        unknown_urgent = [c for c in self.label.urgent if c not in classes]
        if unknown_urgent:
            problems.append(f"label.urgent {unknown_urgent} are not among label.classes")
        keys = [self.image_key, self.image_name_key, self.group_key, self.label.key,
                *(c.key for c in self.categorical), *(n.key for n in self.numeric)]
        duplicated = sorted({k for k in keys if keys.count(k) > 1})
        if duplicated:
            problems.append(f"feature keys used twice: {', '.join(duplicated)}")
        unknown = [k for k in self.model_features if k not in self.metadata]
        if unknown:
            problems.append(f"model_features {unknown} are not categorical or numeric "
                            "features of the task")
        problems += [f"numeric {n.key}: min {n.min} must be below max {n.max}"
                     for n in self.numeric if n.min >= n.max]
        if self.resize not in RESIZE_POLICIES:
            problems.append(f"resize {self.resize!r} is not one of {', '.join(RESIZE_POLICIES)}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def metadata(self) -> dict[str, Categorical | Numeric]:
        return {f.key: f for f in [*self.categorical, *self.numeric]}

    @property
    def binary(self) -> bool:
        return len(self.label.classes) == 2

    @property
    def urgent_ids(self) -> list[int]:
        """Codes of the classes a multi-class model's operating rule flags."""
        return [self.label.classes.index(c) for c in self.label.urgent]

    @property
    def flagged(self) -> str:
        """What a decision of 1 means, for people: 'malignant', or 'malignant calcification
        or malignant mass'."""
        return self.label.positive if self.binary else " or ".join(self.label.urgent)

    @property
    def negative(self) -> str:
        """The class a binary model's low scores name ("benign")."""
        return self.label.classes[0]

    @property
    def metadata_dim(self) -> int:
        """Width of the model's metadata vector: a one-hot plus a missing column per
        categorical, a scaled value plus a missing flag per numeric."""
        return sum(len(f.values) + 1 if isinstance(f, Categorical) else 2
                   for f in (self.metadata[k] for k in self.model_features))

    @property
    def bucketed(self) -> list[Numeric]:
        """Numeric features the Evaluator slices by bucket."""
        return [n for n in self.numeric if n.buckets]

    def slice_value(self, column: str, value) -> tuple[str, str]:
        """(feature, value) as people read them: ('anatomic site', 'lower extremity')."""
        for feature in self.categorical:
            if feature.key == column and isinstance(value, int):
                return feature.label, feature.value_name(value, self.missing)
        for feature in self.bucketed:
            if feature.slice_key == column and isinstance(value, int):
                names = feature.bucket_names()
                return feature.label, (names[value] if 0 <= value < len(names)
                                       else "missing")
        return column, str(value)
