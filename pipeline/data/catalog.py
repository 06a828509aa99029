"""What a dataset in its published layout holds, before any image is read: each image's
file, published split, label, group and metadata, from the folder names and CSV tables.

Every problem found here names the file or the CSV row (a row without its file, a file
without a row, a label outside the classes, a duplicate id); the importer stops on them or
quarantines them. Files that are not data (macOS and Finder litter) are skipped and counted.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import re

from modules.errors import MedtfxError
from modules.task import Categorical, TaskSpec
from pipeline.data.sources import SourceConfig, Table

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


class DataImportError(MedtfxError):
    """The published data cannot be imported; the message names the first problem, and
    `details` every one (the command line prints the first ten)."""

    def __init__(self, message: str, details: list[str] | None = None):
        super().__init__(message)
        self.details = details or []


@dataclasses.dataclass
class Item:
    path: str  # relative to the data root: the record's image_name
    split: str  # the published split
    label: int | None  # class code; None for unlabelled images
    group: str = ""  # the patient (or image) the record belongs to
    metadata: dict[str, int] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Problem:
    where: str  # file, or file:row
    what: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


@dataclasses.dataclass
class Catalog:
    items: list[Item]
    problems: list[Problem]
    skipped: int  # files that are not data
    dropped: int = 0  # labelled images of a class the label map drops


DROPPED = -1  # _label: the row's class is one the label map leaves out


def build_catalog(data_root: str, source: SourceConfig, task: TaskSpec) -> Catalog:
    """The images and their labels, splits, groups and metadata, by the source's layout."""
    skip = [re.compile(p) for p in source.skip]
    reader = _folders if source.layout == "folders" else _tables
    catalog = reader(data_root, source, task, skip)
    for item in catalog.items:
        item.group = item.group or _group(item, source)
    catalog.items.sort(key=lambda i: i.path)
    return catalog


def _listing(data_root: str, folder: str, skip: list[re.Pattern]) -> tuple[list[str], int]:
    """Files under `folder` (relative to the data root, sorted) that are not skipped; and
    how many were skipped."""
    files, skipped = [], 0
    for parent, dirs, names in os.walk(os.path.join(data_root, folder)):
        dirs.sort()
        for name in names:
            path = os.path.relpath(os.path.join(parent, name), data_root)
            if any(p.search(path) for p in skip):
                skipped += 1
            else:
                files.append(path)
    return sorted(files), skipped


def _folders(data_root: str, source: SourceConfig, task: TaskSpec,
             skip: list[re.Pattern]) -> Catalog:
    """ROOT/<folder>/<split>/<class>/<image>: split and class from the path."""
    classes = task.label.classes

    def has_splits(release: str) -> bool:
        return any(os.path.isdir(os.path.join(data_root, release, s)) for s in source.splits)

    # The data root may be the release folder itself (chest_xray/ given as the root).
    release = "" if has_splits("") else source.folder
    base = os.path.join(data_root, release)
    depth = len(release.split(os.sep)) if release else 0
    if not has_splits(release):
        raise DataImportError(f"{data_root}: no split folder ({', '.join(source.splits)}) "
                                f"in {os.path.join(data_root, source.folder)} or the root")
    items, problems, skipped = [], [], 0
    for split in sorted(os.listdir(base)):
        if not os.path.isdir(os.path.join(base, split)) or split not in source.splits:
            continue  # e.g. Kermany's nested duplicate chest_xray/chest_xray
        files, skipped_here = _listing(data_root, os.path.join(release, split), skip)
        skipped += skipped_here
        for path in files:
            parts = path.split(os.sep)
            if len(parts) != depth + 3:
                problems.append(Problem(path, f"not in a class folder of {split}/"))
                continue
            folder = parts[depth + 1]
            name = source.class_folders.get(folder, folder)
            if name not in classes:
                problems.append(Problem(path, f"class folder {folder!r} is not among the "
                                        f"classes {', '.join(classes)}"))
                continue
            items.append(Item(path, split, classes.index(name)))
    return Catalog(items, problems, skipped)


def _rows(data_root: str, table: Table, needed: list[str]) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) of a CSV, headers and cells stripped (published files carry a BOM
    and padded cells); a header without a `needed` column is refused."""
    path = os.path.join(data_root, table.file)
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f, skipinitialspace=True)
        header = [h.strip() for h in reader.fieldnames or []]
        needed = [table.id_column, *table.columns, *needed]
        missing = [c for c in needed if c not in header]
        if missing:
            raise DataImportError(f"{table.file}: no column(s) {', '.join(missing)}; the header "
                             f"has {', '.join(header)}")
        reader.fieldnames = header
        return [(line, {k: (v or "").strip() for k, v in row.items() if k})
                for line, row in enumerate(reader, start=2)]


def _file_of(table: Table, images: str, value: str) -> str:
    """The image a CSV id names, relative to the data root."""
    number = "d}" in table.id_format  # "{:06d}.png": the id is a number
    name = table.id_format.format(int(float(value)) if number else value)
    return os.path.normpath(os.path.join(images, name))


def _keyed(data_root: str, table: Table, images: str, problems: list[Problem],
           needed: list[str]) -> dict[str, tuple[int, dict[str, str]]]:
    """A table's rows by the file each names; malformed and duplicate ids are problems."""
    rows: dict[str, tuple[int, dict[str, str]]] = {}
    for line, row in _rows(data_root, table, needed):
        where = f"{table.file}:{line}"
        try:
            path = _file_of(table, images, row[table.id_column])
        except ValueError:
            problems.append(Problem(where, f"id {row[table.id_column]!r} is not a number"))
            continue
        if path in rows:
            problems.append(Problem(where, f"duplicate id {row[table.id_column]!r} (first "
                                    f"on line {rows[path][0]})"))
            continue
        rows[path] = (line, row)
    return rows


def _tables(data_root: str, source: SourceConfig, task: TaskSpec,
            skip: list[re.Pattern]) -> Catalog:
    """A folder of images and CSV tables joined on an id."""
    problems: list[Problem] = []
    labels: dict[str, tuple[Table, int, dict[str, str]]] = {}
    for table in source.labels:
        folder = source.images if table.images is None else table.images
        for path, (line, row) in _keyed(data_root, table, folder, problems,
                                        [source.label_column]).items():
            if path in labels:
                problems.append(Problem(f"{table.file}:{line}", f"{path} is labelled in "
                                        f"{labels[path][0].file} too"))
            else:
                labels[path] = (table, line, row)
    files, skipped = [], 0
    for folder in sorted({source.images if t.images is None else t.images
                          for t in source.labels}):
        found, skipped_here = _listing(data_root, folder, skip)
        files, skipped = files + found, skipped + skipped_here
    unrowed = [p for p in files if p not in labels]
    tables = ", ".join(t.file for t in source.labels)
    problems += [Problem(p, f"image without a row in {tables}") for p in unrowed
                 if p.lower().endswith(IMAGE_SUFFIXES)]
    skipped += sum(not p.lower().endswith(IMAGE_SUFFIXES) for p in unrowed)
    existing = set(files)
    partition = (_keyed(data_root, source.partition, source.images, problems,
                        [source.partition_column]) if source.partition else {})
    extra = [(table, _keyed(data_root, table, source.images, problems, []))
             for table in source.tables]
    items, dropped = [], 0
    for path, (table, line, row) in labels.items():
        where = f"{table.file}:{line}"
        if path not in existing:
            problems.append(Problem(where, f"no image {path} for id {row[table.id_column]!r}"))
            continue
        label = _label(row, source, task)
        if label == DROPPED:
            dropped += 1
            continue
        if label is None:
            problems.append(Problem(where, f"{source.label_column} "
                                    f"{row.get(source.label_column)!r} is not one of "
                                    f"{', '.join(source.label_values)}"))
            continue
        split = table.split
        if source.partition:
            if path not in partition:
                problems.append(Problem(where, f"{path} has no row in {source.partition.file}"))
                continue
            partition_line, partition_row = partition[path]
            split = partition_row[source.partition_column]
            if source.splits and split not in source.splits:
                problems.append(Problem(f"{source.partition.file}:{partition_line}", f"{path}: "
                                        f"partition {split!r} is not one of "
                                        f"{', '.join(source.splits)}"))
                continue
        item = Item(path, split, label)
        for joined, found in [(table, row), *((t, rows.get(path, (0, {}))[1])
                                              for t, rows in extra)]:
            item.metadata.update(_metadata(found, joined, task))
            if source.group.column and not item.group:
                item.group = found.get(source.group.column, "")
        items.append(item)
    if source.unlabelled:
        unlabelled, skipped_here = _listing(data_root, source.unlabelled, skip)
        skipped += skipped_here
        items += [Item(p, "unlabelled", None) for p in unlabelled]
    return Catalog(items, problems, skipped, dropped)


def _label(row: dict[str, str], source: SourceConfig, task: TaskSpec) -> int | None:
    """The row's class code; DROPPED for a value the map sends to null; None for a value
    the map does not know."""
    value = row.get(source.label_column, "")
    if value not in source.label_values:  # "1.0" in a float column means "1"
        try:
            value = str(int(float(value)))
        except ValueError:
            return None
    if value not in source.label_values:
        return None
    name = source.label_values[value]
    if not name:
        return DROPPED
    return task.label.classes.index(name) if name in task.label.classes else None


def _metadata(row: dict[str, str], table: Table, task: TaskSpec) -> dict[str, int]:
    """The task's features among a row's mapped columns, as int64 codes; an empty cell or a
    value outside a categorical's names is missing (the schema then reports the share)."""
    values = {}
    for column, key in table.columns.items():
        feature = task.metadata.get(key)
        text = row.get(column, "")
        if feature is None:
            continue  # e.g. the group column
        if isinstance(feature, Categorical):
            name = table.values.get(column, {}).get(text, text)
            values[key] = feature.values.index(name) if name in feature.values else task.missing
        else:
            try:
                values[key] = int(float(text))
            except ValueError:
                values[key] = task.missing
    return values


def _group(item: Item, source: SourceConfig) -> str:
    """The patient an image belongs to: a regex match on its file name, or the image."""
    if source.group.regex:
        match = re.search(source.group.regex, os.path.basename(item.path))
        if match:
            return match.group(1)
    return item.path
