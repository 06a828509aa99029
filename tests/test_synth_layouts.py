"""The synthetic datasets in the published layouts: trees, names, CSV headers and join keys as
the real downloads have them, their quirks, determinism, and the CLI's refusals."""

from __future__ import annotations

import csv
import os
import re

import pytest
from PIL import Image

from modules.errors import MedtfxError
from pipeline.sample.layouts import LayoutSpec, generate_layout
from tests.helpers import medtfx

# Spelled out here from CelebA's list_attr_celeba, not read from the generator.
CELEBA_HEADER = (
    "image_id,5_o_Clock_Shadow,Arched_Eyebrows,Attractive,Bags_Under_Eyes,Bald,Bangs,Big_Lips,"
    "Big_Nose,Black_Hair,Blond_Hair,Blurry,Brown_Hair,Bushy_Eyebrows,Chubby,Double_Chin,"
    "Eyeglasses,Goatee,Gray_Hair,Heavy_Makeup,High_Cheekbones,Male,Mouth_Slightly_Open,"
    "Mustache,Narrow_Eyes,No_Beard,Oval_Face,Pale_Skin,Pointy_Nose,Receding_Hairline,"
    "Rosy_Cheeks,Sideburns,Smiling,Straight_Hair,Wavy_Hair,Wearing_Earrings,Wearing_Hat,"
    "Wearing_Lipstick,Wearing_Necklace,Wearing_Necktie,Young")
IMAGES = 60


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict[str, str]:
    out = {}
    for task in ("pneumonia", "chest-xray-sex", "celeba", "ddsm"):
        out[task] = str(tmp_path_factory.mktemp(task))
        manifest = generate_layout(out[task], LayoutSpec(task, images=IMAGES, size=32, seed=3))
        assert manifest["files"] == len(files_under(out[task]))
        assert sum(sum(c.values()) for c in manifest["counts"].values()) == IMAGES
    return out


def files_under(root: str) -> list[str]:
    return sorted(os.path.relpath(os.path.join(folder, name), root)
                  for folder, _, names in os.walk(root) for name in names)


def read_csv(path: str) -> tuple[str, list[list[str]]]:
    with open(path, newline="") as f:
        header, *rows = f.read().splitlines()
    return header, list(csv.reader(rows))


def test_pneumonia_tree_names_and_patients(roots):
    root = roots["pneumonia"]
    images = [p.split(os.sep) for p in files_under(root)
              if p.startswith("chest_xray" + os.sep) and p.count(os.sep) == 3
              and p.endswith(".jpeg")]
    assert {(split, cls) for _, split, cls, _ in images} == {
        (s, c) for s in ("train", "val", "test") for c in ("NORMAL", "PNEUMONIA")}
    patients: dict[str, set[str]] = {}
    for _, split, cls, name in images:
        if cls == "NORMAL":
            assert re.fullmatch(r"(NORMAL2-)?IM-\d{4}-0001\.jpeg", name), name
        else:
            match = re.fullmatch(r"person(\d+)_(bacteria|virus)_\d+\.jpeg", name)
            assert match, name
            patients.setdefault(split, set()).add(match.group(1))
    assert not patients["train"] & patients["test"] and not patients["val"] & patients["train"]
    assert len(patients["train"]) < sum(1 for i in images if i[1:3] == ["train", "PNEUMONIA"])
    val = [cls for _, split, cls, _ in images if split == "val"]
    assert val.count("NORMAL") == val.count("PNEUMONIA") == 4
    modes = set()
    for parts in images:
        with Image.open(os.path.join(root, *parts)) as image:
            assert image.format == "JPEG" and image.height == 32
            assert 1.05 <= image.width / image.height <= 1.65
            modes.add(image.mode)
    assert modes == {"L", "RGB"}


def test_pneumonia_quirks_of_the_zip(roots):
    root = roots["pneumonia"]
    files = files_under(root)
    nested = [p for p in files if p.startswith(os.path.join("chest_xray", "chest_xray", ""))]
    assert nested
    for path in nested:
        original = os.path.join(root, "chest_xray", path.split(os.sep, 2)[2])
        with open(original, "rb") as a, open(os.path.join(root, path), "rb") as b:
            assert a.read() == b.read()
    junk = [p for p in files if p.startswith("__MACOSX" + os.sep)]
    assert junk and all(os.path.basename(p).startswith("._") for p in junk)
    with pytest.raises(Image.UnidentifiedImageError):
        Image.open(os.path.join(root, junk[0]))
    assert os.path.join("chest_xray", ".DS_Store") in files


def test_chest_xray_sex_csvs_join_by_key(roots):
    root = roots["chest-xray-sex"]
    train = sorted(os.listdir(os.path.join(root, "kaggle", "kaggle", "train")))
    test = sorted(os.listdir(os.path.join(root, "kaggle", "kaggle", "test")))
    assert all(re.fullmatch(r"\d{6}\.png", n) for n in train + test)
    assert set(os.listdir(root)) == {"kaggle", "train_gender.csv", "train_age.csv",
                                     "sample_submission_gender.csv"}
    header, gender = read_csv(os.path.join(root, "train_gender.csv"))
    assert header == "imageId,gender"
    assert all(str(int(i)) == i for i, _ in gender)  # no zero padding in the CSV
    assert sorted(f"{int(i):06d}.png" for i, _ in gender) == train
    assert {g for _, g in gender} == {"0", "1"}
    header, age = read_csv(os.path.join(root, "train_age.csv"))
    assert header == "imageId,age"
    assert {i for i, _ in age} == {i for i, _ in gender}
    assert all(18 <= int(a) <= 90 for _, a in age)
    ids = [int(i) for i, _ in gender]
    assert ids != sorted(ids) and ids != [int(i) for i, _ in age]  # join by key, not row
    header, submission = read_csv(os.path.join(root, "sample_submission_gender.csv"))
    assert header == "imageId,gender"
    assert sorted(f"{int(i):06d}.png" for i, _ in submission) == test


def test_chest_xray_sex_writes_some_16_bit_pngs(roots):
    folder = os.path.join(roots["chest-xray-sex"], "kaggle", "kaggle")
    depths = {}
    for split in ("train", "test"):
        for name in os.listdir(os.path.join(folder, split)):
            path = os.path.join(folder, split, name)
            with open(path, "rb") as f:
                header = f.read(26)
            assert header[25] == 0  # IHDR colour type: grayscale
            depths[path] = header[24]  # IHDR bit depth
    deep = [p for p, d in depths.items() if d == 16]
    assert set(depths.values()) == {8, 16} and 0.1 <= len(deep) / len(depths) <= 0.3
    with Image.open(deep[0]) as image:
        assert image.mode == "I;16" and image.getextrema()[1] > 255


def test_celeba_tree_and_csvs(roots):
    root = roots["celeba"]
    names = sorted(os.listdir(os.path.join(root, "img_align_celeba", "img_align_celeba")))
    assert names == [f"{i:06d}.jpg" for i in range(1, IMAGES + 1)]
    header, rows = read_csv(os.path.join(root, "list_attr_celeba.csv"))
    assert header == CELEBA_HEADER
    assert [r[0] for r in rows] == names
    assert {v for r in rows for v in r[1:]} == {"-1", "1"}
    columns = header.split(",")
    for attribute, low, high in (("Male", 0.35, 0.5), ("Young", 0.2, 0.8),
                                 ("Eyeglasses", 0.2, 0.8)):
        share = sum(r[columns.index(attribute)] == "1" for r in rows) / len(rows)
        assert low <= share <= high, (attribute, share)
    header, partition = read_csv(os.path.join(root, "list_eval_partition.csv"))
    assert header == "image_id,partition"
    assert [r[0] for r in partition] == names
    assert [r[1] for r in partition] == sorted(r[1] for r in partition)  # contiguous, as real
    assert [r[1] for r in partition].count("0") == round(0.8 * IMAGES)
    with Image.open(os.path.join(root, "img_align_celeba", "img_align_celeba", names[0])) as im:
        assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (32, 39))


def test_celeba_default_size_is_the_published_one(tmp_path):
    generate_layout(str(tmp_path), LayoutSpec("celeba", images=24))
    path = tmp_path / "img_align_celeba" / "img_align_celeba" / "000024.jpg"
    with Image.open(path) as image:
        assert image.size == (178, 218)


def test_ddsm_csvs_and_images(roots):
    root = roots["ddsm"]
    seen = set()
    for split, folder, pattern, mode in (("train", "images", r"c\d+\.png", "L"),
                                         ("test", "test_images", r"img\d+\.png", "RGB")):
        header, rows = read_csv(os.path.join(root, "data", f"{split}_df_model_0.csv"))
        assert header == ",id,class,filename,y"
        assert [r[0] for r in rows] == [str(i) for i in range(len(rows))]
        for _, _, cls, filename, y in rows:
            # relative to the split's folder, as the notebook's flow_from_dataframe reads it
            assert re.fullmatch(pattern, filename) and cls == y and cls in "01234"
            with Image.open(os.path.join(root, folder, filename)) as image:
                assert (image.format, image.mode, image.size) == ("PNG", mode, (32, 32))
        listed = sorted(r[3] for r in rows)
        assert listed == sorted(os.listdir(os.path.join(root, folder)))
        seen |= {r[2] for r in rows}
        if split == "train":  # the smaller test split keeps one of each class
            assert 0.75 <= [r[2] for r in rows].count("0") / len(rows) <= 0.9
    assert seen == set("01234")


@pytest.mark.parametrize("task", ["pneumonia", "chest-xray-sex", "celeba", "ddsm"])
def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, task):
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        generate_layout(str(tmp_path / name), LayoutSpec(task, images=24, size=32, seed=seed))
    files = files_under(str(tmp_path / "a"))
    assert files == files_under(str(tmp_path / "b"))
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
               for f in files)
    assert any(not (tmp_path / "c" / f).exists()
               or (tmp_path / "a" / f).read_bytes() != (tmp_path / "c" / f).read_bytes()
               for f in files)


def test_refuses_a_directory_that_holds_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(MedtfxError, match="already holds files"):
        generate_layout(str(tmp_path), LayoutSpec("ddsm", images=24, size=32))
    assert os.listdir(tmp_path) == ["notes.txt"]


def test_synth_command_writes_a_layout_and_refuses_a_full_directory(tmp_path):
    out = tmp_path / "d"
    result = medtfx("data", "synth", "--task", "ddsm", "--out", str(out), "--images", "30",
                    "--size", "32", "--seed", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(f"wrote 32 files in the ddsm layout to {out}: train ")
    assert result.stdout.count("\n") == 1 and result.stderr == ""
    # Another process, the same bytes.
    generate_layout(str(tmp_path / "here"), LayoutSpec("ddsm", images=30, size=32, seed=2))
    assert all((out / f).read_bytes() == (tmp_path / "here" / f).read_bytes()
               for f in files_under(str(out)))

    again = medtfx("data", "synth", "--task", "ddsm", "--out", str(out))
    assert again.returncode == 1
    assert again.stdout == f"error: {out}: already holds files (or is not a directory); not " \
        "writing into it\n"
    wrong = medtfx("data", "synth", "--task", "celeba", "--out", str(tmp_path / "e"),
                   "--label-noise", "0.1")
    assert wrong.returncode == 2
    assert wrong.stdout == "error: --label-noise applies to --task melanoma only\n"
