"""Where a task's data comes from as published: the `source:` section of the config.

`tfrecord` reads shards in the SIIM-ISIC layout as they are. `folders` (ROOT/<split>/<class>/
images, the Kermany release), `csv` (a folder of images and CSV tables joined on an id:
SPR, CelebA, DDSM as its notebook prepared it) and `dicom` (a hospital's export: DICOM
files at any depth, e.g. one folder per study or series, labelled by a CSV) are imported
into shards of that layout first (pipeline/data/importer.py), so every later stage reads
one format.

The dicom layout is the csv layout with DICOM instances for images: the same `images`,
`labels`, `tables`, `partition` and `unlabelled` keys, a label table joined on the file
(its path below `images`) or on the SOPInstanceUID (`id_is: SOPInstanceUID`), and each
file's header as one more table, whose attributes `dicom.columns` reads as metadata. The
group is PatientID unless `group` says otherwise. Pixels become 8-bit PNGs at import
(pipeline/data/dicom.py), as `dicom.voi_window` and `dicom.frames` say.
"""

from __future__ import annotations

import re

from pydantic import Field, model_validator

from modules.settings_base import Settings

LAYOUTS = ("tfrecord", "folders", "csv", "dicom")
# What a published split is used for: fit on, select epochs on, gate on (never trained
# on), or score without labels (written as testNN shards).
ROLES = ("train", "validation", "evaluation", "unlabelled")
ON_BAD = ("stop", "quarantine")
# What a table's id names: a file below the images folder, or (dicom layout) the instance
# with that SOPInstanceUID wherever it lies.
ID_KINDS = ("file", "SOPInstanceUID")
WINDOWS = ("file", "minmax")  # or [center, width]
FRAMES = ("refuse", "first")


class GroupRule(Settings):
    """What keeps one patient's images together: a column of one of the CSV tables or a
    DICOM attribute (PatientID by default in the dicom layout), a regex over the file name
    (its match is the id, e.g. Kermany's 'person(\\d+)_'), or, with neither, the image
    alone."""

    column: str | None = None
    regex: str | None = None

    @model_validator(mode="after")
    def _one_rule(self) -> GroupRule:
        if self.column and self.regex:
            raise ValueError("group: give a column or a regex, not both")
        if self.regex:
            try:
                pattern = re.compile(self.regex)
            except re.error as err:
                raise ValueError(f"group: regex {self.regex!r} does not compile: {err}") from None
            if pattern.groups < 1:
                raise ValueError(f"group: regex {self.regex!r} needs a group, e.g. "
                                 r"'person(\d+)_'")
        return self


class Columns(Settings):
    """Fields of a table (or a DICOM header) read as the task's metadata."""

    # Columns read as metadata: CSV column (or DICOM keyword) -> the task's feature key.
    columns: dict[str, str] = Field(default_factory=dict)
    # A categorical column's published values -> the task's value names, e.g. CelebA's
    # {"Young": {"-1": "no", "1": "yes"}}; unmapped values are matched by name.
    values: dict[str, dict[str, str]] = Field(default_factory=dict)


class Table(Columns):
    """A CSV file joined to the images on an id column."""

    file: str  # relative to the data root
    id_column: str
    # How an id names its image file, relative to the images folder: "{}" when the id is
    # the file name (CelebA's 000001.jpg), "{:06d}.png" for SPR's integer ids.
    id_format: str = "{}"
    # "SOPInstanceUID" (dicom layout): the id is the instance's UID, not a file name.
    id_is: str = "file"
    # A label table's published split, when no partition table says it per image
    # (DDSM's train_df_model_K.csv and test_df_model_K.csv).
    split: str = "train"
    # A label table's own images folder, when its ids name files there rather than in the
    # source's `images` (DDSM: train rows name files in images/, test rows in test_images/).
    images: str | None = None


class DicomSettings(Columns):
    """The dicom layout's header metadata and its conversion of pixels to 8 bits.

    `columns` maps DICOM keywords to the task's keys, e.g. {PatientSex: sex, PatientAge:
    age}; PatientAge ("045Y", "006M", "010W", "003D") is read in whole years. `values`
    maps coded attributes to the task's value names, e.g. {PatientSex: {M: male, F:
    female}}; a value left unmapped ("O") is missing unless the task names it."""

    # 8 bits from the modality values (after Rescale Slope/Intercept): "file" (the file's
    # first Window Center/Width, else its first VOI LUT, else the image's own range),
    # "minmax" (the image's own range), or [center, width] for every file, e.g. [40, 400]
    # for CT soft tissue. MONOCHROME1 is inverted after the window; colour is kept as RGB.
    voi_window: str | tuple[float, float] = "file"
    # A multi-frame instance (cine, volume, tomosynthesis): "refuse" names it as a problem,
    # "first" imports its first frame.
    frames: str = "refuse"

    @model_validator(mode="after")
    def _known(self) -> DicomSettings:
        if isinstance(self.voi_window, str) and self.voi_window not in WINDOWS:
            raise ValueError(f"voi_window {self.voi_window!r} is not one of "
                             f"{', '.join(WINDOWS)} or [center, width]")
        if isinstance(self.voi_window, tuple) and self.voi_window[1] < 1:
            raise ValueError(f"voi_window width {self.voi_window[1]:g} must be at least 1")
        if self.frames not in FRAMES:
            raise ValueError(f"frames {self.frames!r} is not one of {', '.join(FRAMES)}")
        return self


class SourceConfig(Settings):
    layout: str = "tfrecord"
    # Split folders (folders layout) or partition values (csv layout) -> role. Kermany:
    # {train: train, val: validation, test: evaluation}; CelebA: {"0": train, "1":
    # validation, "2": evaluation}.
    splits: dict[str, str] = Field(default_factory=dict)
    # folders: ROOT/<folder>/<split>/<class>/*; the class folder names are the class names
    # unless mapped here (folder -> class).
    folder: str = ""
    class_folders: dict[str, str] = Field(default_factory=dict)
    # csv, dicom: the folder holding the labelled images (every image below it needs a
    # row), the label tables and column, and the label map: what each label value means
    # (CSV value -> class name, e.g. {"-1": female, "1": male}). Values may share a class
    # (merged) or map to null (dropped: their images are left out and counted): DDSM's six
    # models are six maps over one release.
    images: str = ""
    labels: list[Table] = Field(default_factory=list)
    label_column: str = ""
    label_values: dict[str, str | None] = Field(default_factory=dict)
    # csv: more tables joined on the id (metadata such as SPR's train_age.csv), and the
    # table whose `partition_column` names each image's published split (CelebA's
    # list_eval_partition.csv). Without one, every labelled image is in split "train".
    tables: list[Table] = Field(default_factory=list)
    partition: Table | None = None
    partition_column: str = ""
    # csv, dicom: a folder of unlabelled images to score (SPR's kaggle/kaggle/test), as
    # testNN shards.
    unlabelled: str = ""
    group: GroupRule = Field(default_factory=GroupRule)
    dicom: DicomSettings = Field(default_factory=DicomSettings)
    # Images whose names match are not data: the zips' macOS metadata and Finder files.
    skip: list[str] = Field(default_factory=lambda: [
        r"(^|/)__MACOSX/", r"(^|/)\._", r"(^|/)\.DS_Store$", r"(^|/)Thumbs\.db$"])
    # An image that does not decode, a row without its file, a file without a row, a label
    # outside the classes, a duplicate id: "stop" names them and writes nothing;
    # "quarantine" lists them in WORK/.../quarantine.csv and imports the rest.
    on_bad: str = "stop"
    test_shards: int = 4  # testNN shards of unlabelled images

    @model_validator(mode="before")
    @classmethod
    def _patient_groups(cls, data):
        """A DICOM instance names its patient: PatientID groups unless `group` is given."""
        if isinstance(data, dict) and data.get("layout") == "dicom" and "group" not in data:
            return {**data, "group": {"column": "PatientID"}}
        return data

    @model_validator(mode="after")
    def _complete(self) -> SourceConfig:
        problems = []
        if self.layout not in LAYOUTS:
            problems.append(f"layout {self.layout!r} is not one of {', '.join(LAYOUTS)}")
        if self.on_bad not in ON_BAD:
            problems.append(f"on_bad {self.on_bad!r} is not one of {', '.join(ON_BAD)}")
        bad_roles = sorted(set(self.splits.values()) - set(ROLES))
        if bad_roles:
            problems.append(f"splits: roles {bad_roles} are not among {', '.join(ROLES)}")
        if self.layout in ("csv", "dicom"):
            missing = [name for name in ("labels", "label_column", "label_values")
                       if not getattr(self, name)]
            if missing:
                problems.append(f"the {self.layout} layout needs {', '.join(missing)}")
            if self.partition and not self.partition_column:
                problems.append("partition needs partition_column")
        tables = [*self.labels, *self.tables, *([self.partition] if self.partition else [])]
        for table in tables:
            if table.id_is not in ID_KINDS:
                problems.append(f"{table.file}: id_is {table.id_is!r} is not one of "
                                f"{', '.join(ID_KINDS)}")
            elif table.id_is == "SOPInstanceUID" and self.layout != "dicom":
                problems.append(f"{table.file}: id_is SOPInstanceUID needs the dicom layout")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def imported(self) -> bool:
        return self.layout != "tfrecord"
