"""What a dataset in its published layout holds, before any image is read: each image's
file, published split, label, group and metadata, from the folder names, CSV tables and
DICOM headers (read without their pixel data).

Every problem found here names the file or the CSV row (a row without its file, a file
without a row, a label outside the classes, a duplicate id, an unreadable DICOM header);
the importer stops on them or quarantines them. Files that are not data (macOS and Finder
litter; in the dicom layout, files that are not DICOM) are skipped and counted.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import re

from modules.errors import MedtfxError
from modules.task import Categorical, TaskSpec
from pipeline.data import dicom
from pipeline.data.misplaced import misplaced, releases_below
from pipeline.data.sources import Columns, SourceConfig, Table

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


def list_files(data_root: str, folder: str, skip: list[re.Pattern]) -> tuple[list[str], int]:
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
        found = releases_below(data_root, source.splits)
        raise DataImportError(
            f"{data_root}: no split folder ({', '.join(source.splits)}) in "
            f"{os.path.join(data_root, source.folder)} or the root"
            + (f"; {found} holds them: set --set source.folder={found}" if found else ""))
    items, problems, skipped = [], [], 0
    for split in sorted(os.listdir(base)):
        if not os.path.isdir(os.path.join(base, split)) or split not in source.splits:
            continue  # e.g. Kermany's nested duplicate chest_xray/chest_xray
        files, skipped_here = list_files(data_root, os.path.join(release, split), skip)
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


@dataclasses.dataclass
class _Images:
    """The images a layout's tables name: the files below the images folder, and (dicom)
    each instance's header and which instance has which SOPInstanceUID."""
    folder: str
    files: list[str]
    headers: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)
    uids: dict[str, str] = dataclasses.field(default_factory=dict)

    def file_of(self, table: Table, value: str) -> str | None:
        """The image a CSV id names, relative to the data root (None: no instance has that
        SOPInstanceUID)."""
        if table.id_is == "SOPInstanceUID":
            return self.uids.get(value)
        number = "d}" in table.id_format  # "{:06d}.png": the id is a number
        name = table.id_format.format(int(float(value)) if number else value)
        folder = self.folder if table.images is None else table.images
        return os.path.normpath(os.path.join(folder, name))


def _keyed(data_root: str, table: Table, images: _Images, problems: list[Problem],
           needed: list[str], complete: bool = False) -> dict[str, tuple[int, dict[str, str]]]:
    """A table's rows by the file each names; malformed and duplicate ids are problems, and
    so, in a `complete` table (labels), is a row without its image."""
    rows: dict[str, tuple[int, dict[str, str]]] = {}
    existing, absent = set(images.files), []
    for line, row in _rows(data_root, table, needed):
        where, value = f"{table.file}:{line}", row[table.id_column]
        try:
            path = images.file_of(table, value)
        except ValueError:
            problems.append(Problem(where, f"id {value!r} is not a number"))
            continue
        if complete and path not in existing:
            absent += [path] if path else []
            problems.append(Problem(where, f"no image {path} for id {value!r}" if path else
                                    f"no image below {images.folder} has SOPInstanceUID "
                                    f"{value!r}"))
            continue
        if path in rows:
            problems.append(Problem(where, f"duplicate id {value!r} (first on line "
                                    f"{rows[path][0]})"))
            continue
        if path:
            rows[path] = (line, row)
    if len(absent) > len(rows):  # most rows: the images folder is off, say so once
        folder = images.folder if table.images is None else table.images
        raise DataImportError(misplaced(data_root, folder, table.file, table.images is not None,
                                        [os.path.relpath(p, folder) for p in absent],
                                        len(rows)))
    return rows


def _images(data_root: str, folder: str, source: SourceConfig,
            skip: list[re.Pattern]) -> tuple[list[str], int]:
    """The files below `folder` that may be images, and how many others were skipped: every
    file in the csv layout (a stray one is named if a row names it), DICOM files in the
    dicom layout."""
    files, skipped = list_files(data_root, folder, skip)
    if source.layout != "dicom":
        return files, skipped
    instances = [p for p in files if dicom.is_instance(os.path.join(data_root, p))]
    return instances, skipped + len(files) - len(instances)


def _dicom_headers(data_root: str, images: _Images, unlabelled: list[str],
                   source: SourceConfig, problems: list[Problem]) -> None:
    """Each instance's header attributes that the config reads (metadata, group, UID), and
    the instance each SOPInstanceUID names; an unreadable file is a problem."""
    try:
        keywords = dicom.header_keywords(list(source.dicom.columns), source.group.column)
    except dicom.DicomError as err:
        raise DataImportError(str(err)) from None
    for path in images.files + unlabelled:
        try:
            images.headers[path] = dicom.header(os.path.join(data_root, path), keywords)
        except dicom.DicomError as err:
            problems.append(Problem(path, str(err)))
            continue
        uid = images.headers[path]["SOPInstanceUID"]
        if uid in images.uids:
            problems.append(Problem(path, f"SOPInstanceUID {uid} is also "
                                    f"{images.uids[uid]}'s (the same image twice)"))
            del images.headers[path]
        elif uid:
            images.uids[uid] = path


def _tables(data_root: str, source: SourceConfig, task: TaskSpec,
            skip: list[re.Pattern]) -> Catalog:
    """A folder of images and CSV tables joined on an id (csv), or of DICOM instances whose
    headers are one more table (dicom)."""
    problems: list[Problem] = []
    files, skipped = [], 0
    for folder in sorted({source.images if t.images is None else t.images
                          for t in source.labels}):
        found, skipped_here = _images(data_root, folder, source, skip)
        files, skipped = files + found, skipped + skipped_here
    unlabelled, skipped_here = (_images(data_root, source.unlabelled, source, skip)
                                if source.unlabelled else ([], 0))
    skipped += skipped_here
    images = _Images(source.images, files)
    is_dicom = source.layout == "dicom"
    if is_dicom:
        _dicom_headers(data_root, images, unlabelled, source, problems)
    labels: dict[str, tuple[Table, int, dict[str, str]]] = {}
    for table in source.labels:
        for path, (line, row) in _keyed(data_root, table, images, problems,
                                        [source.label_column], complete=True).items():
            if path in labels:
                problems.append(Problem(f"{table.file}:{line}", f"{path} is labelled in "
                                        f"{labels[path][0].file} too"))
            else:
                labels[path] = (table, line, row)
    unrowed = [p for p in files if p not in labels and (not is_dicom or p in images.headers)]
    tables = ", ".join(t.file for t in source.labels)
    problems += [Problem(p, f"image without a row in {tables}") for p in unrowed
                 if is_dicom or p.lower().endswith(IMAGE_SUFFIXES)]
    skipped += sum(not (is_dicom or p.lower().endswith(IMAGE_SUFFIXES)) for p in unrowed)
    partition = (_keyed(data_root, source.partition, images, problems,
                        [source.partition_column]) if source.partition else {})
    joined: list[tuple[Columns, dict]] = [
        (table, _keyed(data_root, table, images, problems, [])) for table in source.tables]
    if is_dicom:
        joined.append((source.dicom, {path: (0, row) for path, row in images.headers.items()}))
    items, dropped = [], 0
    for path, (table, line, row) in labels.items():
        where = f"{table.file}:{line}"
        if is_dicom and path not in images.headers:
            continue  # unreadable: named already
        label = _label(row, source, task)
        if label == DROPPED:
            dropped += 1
            continue
        if label is None:
            problems.append(Problem(where, f"{source.label_column} "
                                    f"{row.get(source.label_column)!r} is not one of "
                                    f"{', '.join(source.label_values)}"))
            continue
        split = _split(path, table, source, partition, problems, where)
        if split is not None:
            items.append(_joined(Item(path, split, label), [(table, {path: (line, row)}),
                                                            *joined], source, task))
    items += [_joined(Item(p, "unlabelled", None), joined, source, task) for p in unlabelled
              if not is_dicom or p in images.headers]
    return Catalog(items, problems, skipped, dropped)


def _split(path: str, table: Table, source: SourceConfig,
           partition: dict[str, tuple[int, dict[str, str]]], problems: list[Problem],
           where: str) -> str | None:
    """A labelled image's published split: its label table's, or its partition row's (None:
    a problem, recorded)."""
    if not source.partition:
        return table.split
    if path not in partition:
        problems.append(Problem(where, f"{path} has no row in {source.partition.file}"))
        return None
    line, row = partition[path]
    split = row[source.partition_column]
    if source.splits and split not in source.splits:
        problems.append(Problem(f"{source.partition.file}:{line}", f"{path}: partition "
                                f"{split!r} is not one of {', '.join(source.splits)}"))
        return None
    return split


def _joined(item: Item, joined: list[tuple[Columns, dict]], source: SourceConfig,
            task: TaskSpec) -> Item:
    """The item with the metadata and group of its rows in the joined tables."""
    for columns, rows in joined:
        found = rows.get(item.path, (0, {}))[1]
        item.metadata.update(metadata_codes(found, columns, task))
        if source.group.column and not item.group:
            item.group = found.get(source.group.column, "")
    return item


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


def metadata_codes(row: dict[str, str], table: Columns, task: TaskSpec) -> dict[str, int]:
    """The task's features among a row's mapped columns (a CSV row, or a DICOM header read
    by dicom.header: import and `medtfx predict` both map it here), as int64 codes; an empty
    cell or a value outside a categorical's names is missing (the schema then reports the
    share)."""
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
