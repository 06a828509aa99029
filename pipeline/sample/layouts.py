"""Small synthetic datasets in the published download layouts of four public datasets (Kermany
pneumonia, SPR chest X-ray sex, CelebA, the DDSM notebook's CSVs), for the tests and demos of
an importer. Folders, names, CSV headers and the quirks of the real downloads are reproduced;
each picture carries a label signal that a small CNN learns at 32-64 px (pipeline/sample/render.py). The
manifest is returned, not written, so the tree holds only what the real download holds."""

from __future__ import annotations

import csv
import dataclasses
import io
import os
from typing import Callable

import numpy as np

from modules.errors import MedtfxError
from pipeline.sample.synth import staging_in
from pipeline.sample.render import encode, render_chest, render_face, render_mammogram

TASKS = ("pneumonia", "chest-xray-sex", "celeba", "ddsm")
DEFAULT_SIZE = {"pneumonia": 64, "chest-xray-sex": 64, "celeba": 178, "ddsm": 299}
CELEBA_ASPECT = 218 / 178  # height over width of the aligned CelebA images
DDSM_CLASSES = ("normal", "benign calcification", "benign mass", "malignant calcification",
                "malignant mass")
DDSM_SHARES = (48596, 2103, 1911, 1463, 1812)  # the notebook's train set
# The 40 CelebA attributes in the file's order, with a share near the real one and who has
# it. Male, Young and Eyeglasses are drawn as exact shares (Young and Eyeglasses nearer even
# than in CelebA, so that each group is large enough to slice); No_Beard follows the beard.
CELEBA_ATTRIBUTES = (
    ("5_o_Clock_Shadow", 0.11, "male"), ("Arched_Eyebrows", 0.27, "female"),
    ("Attractive", 0.51, "all"), ("Bags_Under_Eyes", 0.2, "all"), ("Bald", 0.02, "male"),
    ("Bangs", 0.15, "all"), ("Big_Lips", 0.24, "all"), ("Big_Nose", 0.23, "all"),
    ("Black_Hair", 0.24, "all"), ("Blond_Hair", 0.15, "all"), ("Blurry", 0.05, "all"),
    ("Brown_Hair", 0.21, "all"), ("Bushy_Eyebrows", 0.14, "all"), ("Chubby", 0.06, "all"),
    ("Double_Chin", 0.05, "all"), ("Eyeglasses", 0.22, "drawn"), ("Goatee", 0.06, "male"),
    ("Gray_Hair", 0.04, "all"), ("Heavy_Makeup", 0.39, "female"),
    ("High_Cheekbones", 0.45, "all"), ("Male", 0.42, "drawn"),
    ("Mouth_Slightly_Open", 0.48, "all"), ("Mustache", 0.04, "male"),
    ("Narrow_Eyes", 0.12, "all"), ("No_Beard", 0.83, "derived"), ("Oval_Face", 0.28, "all"),
    ("Pale_Skin", 0.04, "all"), ("Pointy_Nose", 0.28, "all"),
    ("Receding_Hairline", 0.08, "all"), ("Rosy_Cheeks", 0.07, "female"),
    ("Sideburns", 0.06, "male"), ("Smiling", 0.48, "all"), ("Straight_Hair", 0.21, "all"),
    ("Wavy_Hair", 0.32, "all"), ("Wearing_Earrings", 0.19, "female"),
    ("Wearing_Hat", 0.05, "all"), ("Wearing_Lipstick", 0.47, "female"),
    ("Wearing_Necklace", 0.12, "female"), ("Wearing_Necktie", 0.07, "male"),
    ("Young", 0.75, "drawn"),
)
MIN_IMAGES = 24


@dataclasses.dataclass(frozen=True)
class LayoutSpec:
    task: str
    images: int = 400  # all splits together
    size: int | None = None  # None: DEFAULT_SIZE of the task
    seed: int = 0

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; known: {', '.join(TASKS)}")
        if self.images < MIN_IMAGES:
            raise ValueError(f"--images must be at least {MIN_IMAGES}, got {self.images}")
        if self.size is not None and self.size < 16:
            raise ValueError(f"--size must be at least 16 px, got {self.size}")

    @property
    def side(self) -> int:
        return self.size or DEFAULT_SIZE[self.task]


def generate_layout(out_dir: str, spec: LayoutSpec) -> dict:
    """Writes the dataset into `out_dir` (absent or empty) and returns its manifest: images
    per split and class, files written, and the quirks added. Files appear only when all are
    written."""
    if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or os.listdir(out_dir)):
        raise MedtfxError(f"{out_dir}: already holds files (or is not a directory); not "
                          "writing into it")
    rng = np.random.default_rng(spec.seed)
    with staging_in(out_dir) as root:
        manifest = WRITERS[spec.task](root, spec, rng)
        files = sum(len(names) for _, _, names in os.walk(root))
    return {"task": spec.task, "out": out_dir, "spec": dataclasses.asdict(spec),
            "files": files, **manifest}


def _pneumonia(root: str, spec: LayoutSpec, rng: np.random.Generator) -> dict:
    tree = os.path.join(root, "chest_xray")
    n_test = max(4, round((spec.images - 8) / 9))
    plan = {"train": _allot(spec.images - 8 - n_test, (0.26, 0.74)), "val": [4, 4],
            "test": _allot(n_test, (0.375, 0.625))}
    normal_ids = iter(rng.choice(np.arange(1, 10000), sum(p[0] for p in plan.values()),
                                 replace=False))
    n_rgb = round(0.1 * spec.images)
    rgb = iter(_shuffled(rng, [spec.images - n_rgb, n_rgb]))
    next_patient, next_image = 1, {"bacteria": 1, "virus": 1}
    counts, patients, firsts = {}, {}, []
    for split, (n_normal, n_sick) in plan.items():
        names = [f"{'NORMAL2-' if rng.random() < 0.5 else ''}IM-{next(normal_ids):04d}-0001"
                 for _ in range(n_normal)]
        first_patient = next_patient
        while len(names) < n_normal + n_sick:
            kind = "bacteria" if rng.random() < 0.65 else "virus"
            for _ in range(min(int(rng.geometric(0.5)), n_normal + n_sick - len(names))):
                names.append(f"person{next_patient}_{kind}_{next_image[kind]}")
                next_image[kind] += 1
            next_patient += 1
        for index, name in enumerate(names):
            folder = "NORMAL" if index < n_normal else "PNEUMONIA"
            width = round(spec.side * rng.uniform(1.1, 1.6))
            sick = int(rng.integers(1, 4)) if folder == "PNEUMONIA" else 0
            picture = render_chest(int(rng.integers(2**31)), spec.side, width, opacities=sick)
            path = os.path.join(split, folder, f"{name}.jpeg")
            _write(tree, path, encode(picture, "JPEG", int(rng.integers(85, 96)),
                                      channels=3 if next(rgb) else 1))
            if index in (0, n_normal):
                firsts.append(path)
        counts[split] = {"NORMAL": n_normal, "PNEUMONIA": n_sick}
        patients[split] = next_patient - first_patient
    return {"counts": counts, "pneumonia_patients": patients,
            "quirks": {"rgb_jpeg": n_rgb, **_pneumonia_quirks(root, firsts)}}


def _pneumonia_quirks(root: str, paths: list[str]) -> dict:
    """The real zip's junk: a nested copy of the tree, macOS resource forks, Finder files."""
    for path in paths:
        with open(os.path.join(root, "chest_xray", path), "rb") as f:
            _write(root, os.path.join("chest_xray", "chest_xray", path), f.read())
        folder, name = os.path.split(path)
        _write(root, os.path.join("__MACOSX", "chest_xray", folder, f"._{name}"),
               APPLE_DOUBLE)
    ds_stores = ("", "train", os.path.join("test", "NORMAL"))
    for folder in ds_stores:
        _write(root, os.path.join("chest_xray", folder, ".DS_Store"), DS_STORE)
    return {"nested_copies": len(paths), "appledouble": len(paths), "ds_store": len(ds_stores)}


def _chest_xray_sex(root: str, spec: LayoutSpec, rng: np.random.Generator) -> dict:
    n_test = max(4, spec.images // 5)
    n_train = spec.images - n_test
    # The test images have a sex too, only unwritten.
    males = np.concatenate([_shuffled(rng, _allot(n, (0.5, 0.5))) for n in (n_train, n_test)])
    deep = set(rng.choice(spec.images, round(0.2 * spec.images), replace=False).tolist())
    for image_id in range(spec.images):
        shadow = 0.0 if males[image_id] else rng.uniform(0.15, 0.35)
        picture = render_chest(int(rng.integers(2**31)), spec.side, spec.side,
                               breast_shadow=shadow)
        split = "train" if image_id < n_train else "test"
        _write(root, os.path.join("kaggle", "kaggle", split, f"{image_id:06d}.png"),
               encode(picture, "PNG", bits=16 if image_id in deep else 8))
    ages = rng.integers(18, 91, n_train)
    _write_csv(root, "train_gender.csv", ["imageId", "gender"],
               [[i, males[i]] for i in rng.permutation(n_train)])
    _write_csv(root, "train_age.csv", ["imageId", "age"],
               [[i, ages[i]] for i in rng.permutation(n_train)])
    _write_csv(root, "sample_submission_gender.csv", ["imageId", "gender"],
               [[i, 0] for i in range(n_train, spec.images)])
    n_male = int(males[:n_train].sum())
    return {"counts": {"train": {"female": n_train - n_male, "male": n_male},
                       "test": {"unlabelled": n_test}},
            "quirks": {"png16": len(deep), "csv_rows_shuffled": 2}}


def _celeba(root: str, spec: LayoutSpec, rng: np.random.Generator) -> dict:
    n = spec.images
    drawn = {name: _shuffled(rng, _allot(n, (1 - share, share)))
             for name, share, who in CELEBA_ATTRIBUTES if who == "drawn"}
    male = drawn["Male"]
    width = spec.side
    height = round(width * CELEBA_ASPECT)
    partition = np.repeat([0, 1, 2], _allot(n, (0.8, 0.1, 0.1)))
    rows = []
    for index in range(n):
        name = f"{index + 1:06d}.jpg"
        has = dict(zip((a[0] for a in CELEBA_ATTRIBUTES), _attributes(rng, drawn, index)))
        picture = render_face(int(rng.integers(2**31)), width, height, has["Male"],
                              has["Eyeglasses"], beard=not has["No_Beard"])
        _write(root, os.path.join("img_align_celeba", "img_align_celeba", name),
               encode(picture, "JPEG", 95))
        rows.append([name] + [1 if value else -1 for value in has.values()])
    _write_csv(root, "list_attr_celeba.csv", ["image_id"] + [a[0] for a in CELEBA_ATTRIBUTES],
               rows)
    _write_csv(root, "list_eval_partition.csv", ["image_id", "partition"],
               [[row[0], p] for row, p in zip(rows, partition)])
    counts = {split: {"female": int(np.sum((partition == p) & (male == 0))),
                      "male": int(np.sum((partition == p) & (male == 1)))}
              for p, split in enumerate(("train", "val", "test"))}
    return {"counts": counts, "attributes": {a: int(v.sum()) for a, v in drawn.items()},
            "quirks": {"nested_image_folder": 1}}


def _attributes(rng: np.random.Generator, drawn: dict, index: int) -> list[bool]:
    """One person's 40 attributes; the gendered ones only for the sex that has them."""
    male = bool(drawn["Male"][index])
    beard = male and rng.random() < 0.4
    values = []
    for name, share, who in CELEBA_ATTRIBUTES:
        if who == "derived":  # No_Beard
            values.append(not beard)
        elif who == "drawn":
            values.append(bool(drawn[name][index]))
        elif who == "all" or (who == "male") == male:
            values.append(rng.random() < share / (1 if who == "all" else 0.42 if male else 0.58))
        else:
            values.append(False)
    return values


def _ddsm(root: str, spec: LayoutSpec, rng: np.random.Generator) -> dict:
    n_test = max(len(DDSM_CLASSES), round(spec.images * 0.216))
    counts = {}
    for split, n, folder, stem, channels in (
            ("train", spec.images - n_test, "images", "c", 1),
            ("test", n_test, "test_images", "img", 3)):
        classes = _shuffled(rng, _allot(n, DDSM_SHARES))
        rows = []
        for number, finding in enumerate(classes):
            filename = f"{stem}{number}.png"  # relative to its folder, as the notebook reads
            picture = render_mammogram(int(rng.integers(2**31)), spec.side, int(finding))
            _write(root, f"{folder}/{filename}", encode(picture, "PNG", channels=channels))
            rows.append([number, number, finding, filename, finding])
        _write_csv(root, f"data/{split}_df_model_0.csv", ["", "id", "class", "filename", "y"],
                   rows)
        counts[split] = {name: int(np.sum(classes == c)) for c, name in enumerate(DDSM_CLASSES)}
    return {"counts": counts, "classes": dict(enumerate(DDSM_CLASSES)),
            "quirks": {"unnamed_index_column": 2, "rgb_test_images": n_test}}


def _allot(n: int, shares) -> list[int]:
    """`n` split in proportion to `shares` (largest remainder), every part at least one,
    taken from the largest part."""
    raw = np.asarray(shares, dtype=float) / sum(shares) * n
    parts = np.floor(raw).astype(int)
    parts[np.argsort(parts - raw, kind="stable")[:n - parts.sum()]] += 1
    for empty in np.flatnonzero(parts == 0):
        parts[empty] += 1
        parts[np.argmax(parts)] -= 1
    return [int(p) for p in parts]


def _shuffled(rng: np.random.Generator, parts: list[int]) -> np.ndarray:
    """Class codes 0, 1, ... repeated `parts` times each, in random order."""
    codes = np.repeat(np.arange(len(parts)), parts)
    rng.shuffle(codes)
    return codes


def _write(root: str, path: str, content: bytes) -> None:
    target = os.path.join(root, path)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target, "wb") as f:
        f.write(content)


def _write_csv(root: str, path: str, header: list[str], rows: list[list]) -> None:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([[int(v) if isinstance(v, np.integer) else v for v in row]
                      for row in rows])
    _write(root, path, text.getvalue().encode())


# An AppleDouble header (magic, version, filler, no entries) and a Finder .DS_Store's magic:
# not images, whatever their names say.
APPLE_DOUBLE = (b"\x00\x05\x16\x07\x00\x02\x00\x00" + b"Mac OS X        " + b"\x00\x00"
                ).ljust(4096, b"\x00")
DS_STORE = b"\x00\x00\x00\x01Bud1".ljust(6148, b"\x00")

WRITERS: dict[str, Callable[[str, LayoutSpec, np.random.Generator], dict]] = {
    "pneumonia": _pneumonia, "chest-xray-sex": _chest_xray_sex, "celeba": _celeba,
    "ddsm": _ddsm,
}
