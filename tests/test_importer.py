"""`medtfx data import` on datasets in their published layouts (pipeline/sample/layouts.py
writes them, quirks included): what lands in which shard, what is joined to what, and what
happens to bad input."""

from __future__ import annotations

import collections
import csv
import os
import re
import shutil

import pytest
import tensorflow as tf

from pipeline.config import CONFIG_DIR, load_config
from pipeline.data.importer import QUARANTINE, DataImportError, import_dataset
from pipeline.data.shards import list_shards
from pipeline.sample.layouts import LayoutSpec, generate_layout
from tests.helpers import medtfx


def config_for(name: str, *overrides: str):
    return load_config(os.path.join(CONFIG_DIR, f"{name}.yaml"),
                       ["train_shards=5", "folds=5", "eval_fold=4", "validation_fold=3",
                        *overrides])


def run_import(root: str, out: str, config) -> dict:
    return import_dataset(root, out, config.source, config.task, config.split_plan,
                          config.limits, config.beam.pipeline_args())


def records(out: str) -> dict[str, list[dict]]:
    """Each shard's records as {feature: value}, by shard file name."""
    shards = {}
    for shard in list_shards(out):
        rows = []
        for raw in tf.data.TFRecordDataset(shard.path):
            features = tf.train.Example.FromString(raw.numpy()).features.feature
            rows.append({key: (f.bytes_list.value[0] if f.bytes_list.value
                               else f.int64_list.value[0]) for key, f in features.items()})
        shards[os.path.basename(shard.path)] = rows
    return shards


def split_of(name: str) -> str:
    return name.split("-")[0]


@pytest.fixture(scope="module")
def kermany(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("kermany") / "data")
    generate_layout(root, LayoutSpec("pneumonia", images=150, size=32, seed=3))
    out = str(tmp_path_factory.mktemp("kermany-shards") / "shards")
    config = config_for("pneumonia")
    return root, out, config, run_import(root, out, config)


def test_kermany_patients_never_straddle_shards_and_test_is_only_evaluated(kermany):
    root, out, config, manifest = kermany
    shards = records(out)
    where = collections.defaultdict(set)
    for name, rows in shards.items():
        for row in rows:
            image = row["image_name"].decode()
            person = re.search(r"person(\d+)_", image)
            where[person.group(1) if person else image].add(split_of(name))
            evaluated = split_of(name) in config.split_plan.names(config.split_plan.evaluation)
            assert evaluated == image.startswith("chest_xray/test/"), image
            assert row["target"] == (1 if "/PNEUMONIA/" in image else 0), image
    assert all(len(splits) == 1 for splits in where.values())
    assert sum(len(rows) for rows in shards.values()) == 150 == manifest["images"]
    # The zip's nested copy, __MACOSX and .DS_Store files are not data.
    assert not any(r["image_name"].startswith(b"chest_xray/chest_xray") for rows in
                   shards.values() for r in rows)
    assert manifest["skipped"] == 2  # the .DS_Store files inside chest_xray/{train,test}


def test_kermany_shards_share_the_label_mix_and_keep_the_published_bytes(kermany):
    root, out, config, _ = kermany
    shards = records(out)
    train = [rows for name, rows in shards.items()
             if split_of(name) in config.split_plan.names(config.split_plan.train)]
    shares = [sum(r["target"] for r in rows) / len(rows) for rows in train]
    assert max(shares) - min(shares) < 0.15, shares
    row = next(iter(shards.values()))[0]
    with open(os.path.join(root, row["image_name"].decode()), "rb") as f:
        assert f.read() == row["image"]


def test_the_same_files_give_the_same_shards(kermany, tmp_path):
    root, out, config, _ = kermany
    again = str(tmp_path / "again")
    run_import(root, again, config)
    for name in os.listdir(out):
        with open(os.path.join(out, name), "rb") as a, open(os.path.join(again, name), "rb") as b:
            assert a.read() == b.read(), name


def test_a_bad_image_stops_the_import_by_name_or_is_quarantined(kermany, tmp_path):
    root, _, config, _ = kermany
    copy = str(tmp_path / "data")
    shutil.copytree(root, copy)
    broken = "chest_xray/train/PNEUMONIA/person1_virus_1.jpeg"
    if not os.path.exists(os.path.join(copy, broken)):
        broken = sorted(os.listdir(os.path.join(copy, "chest_xray/train/PNEUMONIA")))[0]
        broken = f"chest_xray/train/PNEUMONIA/{broken}"
    with open(os.path.join(copy, broken), "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 not really a jpeg")
    os.makedirs(os.path.join(copy, "chest_xray/train/COVID"))
    shutil.copy(os.path.join(copy, broken.replace("PNEUMONIA", "NORMAL").rsplit("/", 1)[0],
                             sorted(os.listdir(os.path.join(copy, "chest_xray/train/NORMAL"))
                                    )[0]), os.path.join(copy, "chest_xray/train/COVID/x.jpeg"))
    stopped = str(tmp_path / "stopped")
    with pytest.raises(DataImportError) as err:
        run_import(copy, stopped, config)
    assert "chest_xray/train/COVID/x.jpeg: class folder 'COVID'" in str(err.value)
    assert not os.path.exists(stopped)

    kept = str(tmp_path / "kept")
    manifest = run_import(copy, kept, config_for("pneumonia", "source.on_bad=quarantine"))
    with open(os.path.join(kept, QUARANTINE)) as f:
        listed = {row["file"]: row["problem"] for row in csv.DictReader(f)}
    assert "image does not decode" in listed[broken]
    assert "COVID" in listed["chest_xray/train/COVID/x.jpeg"]
    assert manifest["images"] == 149 and manifest["quarantined"] == 2


@pytest.fixture(scope="module")
def spr(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("spr") / "data")
    generate_layout(root, LayoutSpec("chest-xray-sex", images=100, size=32, seed=1))
    out = str(tmp_path_factory.mktemp("spr-shards") / "shards")
    return root, out, run_import(root, out, config_for("chest-xray-sex"))


def table(root: str, name: str) -> dict[int, str]:
    with open(os.path.join(root, name)) as f:
        return {int(row["imageId"]): row for row in csv.DictReader(f)}


def test_spr_labels_and_ages_are_joined_by_id_and_test_images_are_unlabelled(spr):
    root, out, manifest = spr
    genders, ages = table(root, "train_gender.csv"), table(root, "train_age.csv")
    shards = records(out)
    labelled = [r for name, rows in shards.items() if name.startswith("train") for r in rows]
    assert len(labelled) == len(genders)
    for row in labelled:
        image_id = int(os.path.basename(row["image_name"].decode()).removesuffix(".png"))
        assert row["target"] == int(genders[image_id]["gender"])
        assert row["age"] == int(ages[image_id]["age"])
    test = [r for name, rows in shards.items() if name.startswith("test") for r in rows]
    assert test and all("target" not in r for r in test)
    assert all(r["image_name"].startswith(b"kaggle/kaggle/test/") for r in test)
    sixteen_bit = [r for r in labelled if r["image"][24] == 16]  # PNG bit depth
    assert sixteen_bit, "16-bit PNGs are stored as published"


def test_spr_table_problems_are_named_by_file_and_line(spr, tmp_path):
    root, _, _ = spr
    copy = str(tmp_path / "data")
    shutil.copytree(root, copy)
    with open(os.path.join(copy, "train_gender.csv"), "a") as f:
        f.write("99999,1\n")  # a row without its file
        f.write("0,1\n")  # a duplicate id
    lines = open(os.path.join(copy, "train_gender.csv")).read().splitlines()
    first = lines[1].split(",")[0]
    lines[1] = f"{first},7"  # a label outside the classes
    with open(os.path.join(copy, "train_gender.csv"), "w") as f:
        f.write("\n".join(lines) + "\n")
    stray = os.path.join(copy, "kaggle/kaggle/train/777777.png")
    shutil.copy(os.path.join(copy, "kaggle/kaggle/train", f"{int(first):06d}.png"), stray)
    with pytest.raises(DataImportError) as err:
        run_import(copy, str(tmp_path / "out"), config_for("chest-xray-sex"))
    message = "\n".join(err.value.details)
    n = len(lines)
    assert f"train_gender.csv:{n - 1}: no image kaggle/kaggle/train/099999.png" in message
    assert f"train_gender.csv:{n}: duplicate id '0'" in message
    assert "train_gender.csv:2: gender '7' is not one of 0, 1" in message
    assert "kaggle/kaggle/train/777777.png: image without a row in train_gender.csv" in message


def test_celeba_partition_is_honoured_and_attributes_become_codes(tmp_path):
    root = str(tmp_path / "data")
    generate_layout(root, LayoutSpec("celeba", images=100, size=24, seed=2))
    config = config_for("celeba")
    out = str(tmp_path / "shards")
    run_import(root, out, config)
    with open(os.path.join(root, "list_eval_partition.csv")) as f:
        partition = {row["image_id"]: row["partition"] for row in csv.DictReader(f)}
    with open(os.path.join(root, "list_attr_celeba.csv")) as f:
        attributes = {row["image_id"]: row for row in csv.DictReader(f)}
    plan = config.split_plan
    role = {**{s: "0" for s in plan.names(plan.train)},
            **{s: "1" for s in plan.names(plan.validation)},
            **{s: "2" for s in plan.names(plan.evaluation)}}
    for name, rows in records(out).items():
        for row in rows:
            image = os.path.basename(row["image_name"].decode())
            assert partition[image] == role[split_of(name)], (image, name)
            assert row["target"] == (attributes[image]["Male"] == "1")
            assert row["young"] == (attributes[image]["Young"] == "1")
            assert row["eyeglasses"] == (attributes[image]["Eyeglasses"] == "1")


def test_the_command_names_problems_in_one_line_and_exits_non_zero(kermany, tmp_path):
    root, _, _, _ = kermany
    copy = str(tmp_path / "data")
    shutil.copytree(root, copy)
    os.makedirs(os.path.join(copy, "chest_xray/test/UNKNOWN"))
    with open(os.path.join(copy, "chest_xray/test/UNKNOWN/a.jpeg"), "wb") as f:
        f.write(b"x")
    result = medtfx("data", "import", "--config", os.path.join(CONFIG_DIR, "pneumonia.yaml"),
                    "--data-root", copy, "--out", str(tmp_path / "out"))
    assert result.returncode == 1
    assert "chest_xray/test/UNKNOWN/a.jpeg: class folder 'UNKNOWN'" in result.stdout
    assert not os.path.exists(tmp_path / "out")


def test_labelled_images_arriving_in_the_published_layout_become_a_span_once(tmp_path):
    incoming, data = str(tmp_path / "incoming"), str(tmp_path / "data")
    generate_layout(incoming, LayoutSpec("pneumonia", images=60, size=24, seed=4))
    os.makedirs(data)
    args = ["retrain", "--config", os.path.join(CONFIG_DIR, "pneumonia.yaml"), "--incoming",
            incoming, "--data-root", data, "--work-dir", str(tmp_path / "work"),
            "--register-only", "--set", "retrain.settle_seconds=0", "--set", "train_shards=5"]
    first = medtfx(*args)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "importing" in first.stdout and os.path.isdir(os.path.join(data, "span-1"))
    patients = collections.defaultdict(set)
    for name, rows in records(os.path.join(data, "span-1")).items():
        for row in rows:
            patients[row["patient_id"]].add(split_of(name))
    assert sum(len(rows) for rows in records(os.path.join(data, "span-1")).values()) == 60
    assert all(len(shards) == 1 for shards in patients.values())

    again = medtfx(*args)  # the same images: recognised, no second span
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already registered" in again.stdout
    assert not os.path.exists(os.path.join(data, "span-2"))


def test_the_data_root_may_be_the_release_folder_itself(kermany, tmp_path):
    root, out, config, manifest = kermany
    inner = run_import(os.path.join(root, "chest_xray"), str(tmp_path / "inner"), config)
    assert inner["shards"] == manifest["shards"]
    with pytest.raises(DataImportError, match="no split folder"):
        run_import(str(tmp_path), str(tmp_path / "none"), config)


def test_a_release_one_folder_down_is_said_in_one_line_naming_the_setting(kermany, tmp_path):
    """Kermany unpacked into a folder of its own (archive/chest_xray/...), beside macOS's
    __MACOSX copy: one line names where the split folders are and the setting."""
    root, out, config, manifest = kermany
    data = tmp_path / "data"
    shutil.copytree(os.path.join(root, "chest_xray"), data / "__MACOSX" / "chest_xray")
    shutil.copytree(os.path.join(root, "chest_xray"), data / "archive" / "chest_xray")
    result = medtfx("data", "import", "--config", os.path.join(CONFIG_DIR, "pneumonia.yaml"),
                    "--data-root", str(data), "--out", str(tmp_path / "out"))
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"error: {data}: no split folder (train, val, test) in {data / 'chest_xray'} or the "
        "root; archive/chest_xray holds them: set --set source.folder=archive/chest_xray"], \
        result.stdout + result.stderr
    assert not os.path.exists(tmp_path / "out")
    fixed = run_import(str(data), str(tmp_path / "fixed"),
                       config_for("pneumonia", "source.folder=archive/chest_xray"))
    assert fixed["shards"] == manifest["shards"]


def test_celeba_table_problems_name_the_table_and_line(tmp_path):
    root = str(tmp_path / "data")
    generate_layout(root, LayoutSpec("celeba", images=30, size=16, seed=2))
    path = os.path.join(root, "list_eval_partition.csv")
    lines = open(path).read().splitlines()
    lines[3] = lines[3].rsplit(",", 1)[0] + ",3"  # a partition the config does not map
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    with pytest.raises(DataImportError) as err:
        run_import(root, str(tmp_path / "out"), config_for("celeba"))
    assert ("list_eval_partition.csv:4: img_align_celeba/img_align_celeba/000003.jpg: "
            "partition '3' is not one of 0, 1, 2") in str(err.value)
    attributes = os.path.join(root, "list_attr_celeba.csv")
    text = open(attributes).read().replace("Male", "Gender", 1)
    with open(attributes, "w") as f:
        f.write(text)
    with pytest.raises(DataImportError, match="list_attr_celeba.csv: no column"):
        run_import(root, str(tmp_path / "out"), config_for("celeba"))


def test_celeba_images_one_folder_off_are_said_in_one_line_naming_the_setting(tmp_path):
    """The common download nests img_align_celeba/img_align_celeba/ (what the generator
    writes and celeba.yaml reads); CelebA's own zip unpacks to img_align_celeba/."""
    root = str(tmp_path / "data")
    generate_layout(root, LayoutSpec("celeba", images=30, size=16, seed=2))
    result = medtfx("data", "import", "--config", os.path.join(CONFIG_DIR, "celeba.yaml"),
                    "--data-root", root, "--out", str(tmp_path / "out"),
                    "--set", "source.images=img_align_celeba")
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "error: source.images: img_align_celeba holds 0 of the 30 images list_attr_celeba.csv "
        "names, img_align_celeba/img_align_celeba holds 30; set --set "
        "source.images=img_align_celeba/img_align_celeba"], result.stdout + result.stderr
    assert not os.path.exists(tmp_path / "out")

    nested = os.path.join(root, "img_align_celeba", "img_align_celeba")
    for name in os.listdir(nested)[:20]:  # the zip's layout, a few files left behind
        shutil.move(os.path.join(nested, name), os.path.join(root, "img_align_celeba", name))
    with pytest.raises(DataImportError) as err:
        run_import(root, str(tmp_path / "out"), config_for("celeba"))
    assert str(err.value) == (
        "source.images: img_align_celeba/img_align_celeba holds 10 of the 30 images "
        "list_attr_celeba.csv names, img_align_celeba holds 20; set --set "
        "source.images=img_align_celeba")
    assert not os.path.exists(tmp_path / "out")
