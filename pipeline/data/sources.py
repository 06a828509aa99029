"""Where a task's data comes from as published: the `source:` section of the config.

`tfrecord` reads shards in the SIIM-ISIC layout as they are. `folders` (ROOT/<split>/<class>/
images, the Kermany release) and `csv` (a folder of images and CSV tables joined on an id:
SPR, CelebA, DDSM as its notebook prepared it) are imported into shards of that layout
first (pipeline/data/importer.py), so every later stage reads one format.
"""

from __future__ import annotations

import re

from pydantic import Field, model_validator

from modules.section import Settings

LAYOUTS = ("tfrecord", "folders", "csv")
# What a published split is used for: fit on, select epochs on, gate on (never trained
# on), or score without labels (written as testNN shards).
ROLES = ("train", "validation", "evaluation", "unlabelled")
ON_BAD = ("stop", "quarantine")


class GroupRule(Settings):
    """What keeps one patient's images together: a column of one of the CSV tables, a regex
    over the file name (its match is the id, e.g. Kermany's 'person(\\d+)_'), or, with
    neither, the image alone."""

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


class Table(Settings):
    """A CSV file joined to the images on an id column."""

    file: str  # relative to the data root
    id_column: str
    # How an id names its image file, relative to the images folder: "{}" when the id is
    # the file name (CelebA's 000001.jpg), "{:06d}.png" for SPR's integer ids.
    id_format: str = "{}"
    # Columns read as metadata: CSV column -> the task's feature key.
    columns: dict[str, str] = Field(default_factory=dict)
    # A categorical column's published values -> the task's value names, e.g. CelebA's
    # {"Young": {"-1": "no", "1": "yes"}}; unmapped values are matched by name.
    values: dict[str, dict[str, str]] = Field(default_factory=dict)
    # A label table's published split, when no partition table says it per image
    # (DDSM's train_df_model_K.csv and test_df_model_K.csv).
    split: str = "train"
    # A label table's own images folder, when its ids name files there rather than in the
    # source's `images` (DDSM: train rows name files in images/, test rows in test_images/).
    images: str | None = None


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
    # csv: the folder holding the labelled images (every image below it needs a row), the
    # label tables and column, and the label map: what each label value means (CSV value ->
    # class name, e.g. {"-1": female, "1": male}). Values may share a class (merged) or map
    # to null (dropped: their images are left out and counted): DDSM's six models are six
    # maps over one release.
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
    # csv: a folder of unlabelled images to score (SPR's kaggle/kaggle/test), as testNN.
    unlabelled: str = ""
    group: GroupRule = Field(default_factory=GroupRule)
    # Images whose names match are not data: the zips' macOS metadata and Finder files.
    skip: list[str] = Field(default_factory=lambda: [
        r"(^|/)__MACOSX/", r"(^|/)\._", r"(^|/)\.DS_Store$", r"(^|/)Thumbs\.db$"])
    # An image that does not decode, a row without its file, a file without a row, a label
    # outside the classes, a duplicate id: "stop" names them and writes nothing;
    # "quarantine" lists them in WORK/.../quarantine.csv and imports the rest.
    on_bad: str = "stop"
    test_shards: int = 4  # testNN shards of unlabelled images

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
        if self.layout == "csv":
            missing = [name for name in ("labels", "label_column", "label_values")
                       if not getattr(self, name)]
            if missing:
                problems.append(f"the csv layout needs {', '.join(missing)}")
            if self.partition and not self.partition_column:
                problems.append("partition needs partition_column")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def imported(self) -> bool:
        return self.layout != "tfrecord"
