"""`medtfx predict`: a JPEG, a 16-bit PNG and DICOM files scored through the served model's
serving_image signature with the probability the evaluation path (serving_default on a
tf.Example carrying the same image) gives; a broken file named with its reason while the
others are scored; requests within the model's batch bound; the table, CSV and JSON; exit
codes. The models are exported untrained (what is checked does not depend on the weights)."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil

import numpy as np
import pydicom
import pytest
import tensorflow as tf
import tensorflow_transform as tft
from PIL import Image
from pydicom.data import get_testdata_file

from modules import features as F
from modules.artifacts import CARD_DIR, THRESHOLD_ASSET
from modules.export import export_model
from modules.trainer import build
from pipeline.cli import main
from pipeline.config import load_config
from pipeline.data import dicom
from pipeline.data.sources import DicomSettings
from pipeline.pipeline import run_settings
from pipeline.serving.model import ModelError, find_model, load_model
from pipeline.serving.output import fields, record
from pipeline.serving.predict import NothingToScoreError, find_images, predict, read_image
from tests.helpers import medtfx, run_transform, shard_records
from tests.test_dicom import instance, save

FIVE = ["classes=[normal, bc, bm, mc, mm]", "urgent=[mc, mm]"]
SKIP = load_config().source.skip
DICOM = DicomSettings()
TASK = load_config().task


def export(transform: str, target: str, overrides: list[str]) -> str:
    config = load_config(None, ["image_size=32", "backbone=pneumonia_cnn", *overrides])
    settings = run_settings(config)
    export_model(build(settings), tft.TFTransformOutput(transform), settings, target)
    return target


def shard_jpegs(data: str, count: int) -> list[bytes]:
    return [tf.train.Example.FromString(r).features.feature[F.IMAGE_KEY].bytes_list.value[0]
            for r in shard_records(data, "test00-*.tfrec")[:count]]


def image_example(data: bytes) -> bytes:
    """A record as import writes it for an image without metadata."""
    return tf.train.Example(features=tf.train.Features(feature={F.IMAGE_KEY: (
        tf.train.Feature(bytes_list=tf.train.BytesList(value=[data])))})).SerializeToString()


@pytest.fixture(scope="module")
def models(tiny_data, tmp_path_factory) -> dict:
    """A binary model with a metadata branch and a batch bound of 2, pushed to a serving
    directory with a model card and a threshold between its scores; a five-class model
    with urgent classes, as the Trainer exports it (no card)."""
    root = tmp_path_factory.mktemp("predict-models")
    transform = str(root / "transform")
    run_transform(shard_records(tiny_data, "train0[0-8]-*.tfrec"), 32, transform)
    version = str(root / "work" / "serving" / "1700000000")
    export(transform, version, ["metadata=true", "limits.batch=2", "warmup_examples=1",
                               "scoring.max_batch=2", "evaluation.max_batch=2"])
    cases = tf.constant([image_example(jpeg) for jpeg in shard_jpegs(tiny_data, 2)])
    scores = tf.saved_model.load(version).signatures["serving_default"](examples=cases)
    with open(os.path.join(version, "assets", THRESHOLD_ASSET), "w") as f:
        f.write(f"{np.median(scores['probability'])}\n")
    os.makedirs(os.path.join(version, CARD_DIR))
    with open(os.path.join(version, CARD_DIR, "model_card.json"), "w") as f:
        json.dump({"classes": {"names": ["benign", "malignant"], "positive": "malignant",
                               "negative": "benign"}}, f)
    return {"work": str(root / "work"), "version": version,
            "five": export(transform, str(root / "five"), ["tta=2", *FIVE])}


@pytest.fixture(scope="module")
def images(tiny_data, tmp_path_factory) -> str:
    """Three JPEGs of the test shards, a 16-bit PNG and two DICOM instances (one named
    without a suffix, as PACS exports name them) in a subfolder, a broken PNG, a DICOM
    instance without pixel data, and litter."""
    root = tmp_path_factory.mktemp("images")
    for i, jpeg in enumerate(shard_jpegs(tiny_data, 3)):
        (root / f"case{i}.jpg").write_bytes(jpeg)
    os.makedirs(root / "xray")
    gradient = np.linspace(0, 65535, 48 * 40).reshape(48, 40).astype(np.uint16)
    Image.fromarray(gradient).save(root / "xray" / "chest16.png")
    ct = get_testdata_file("CT_small.dcm", download=False)
    shutil.copy(ct, root / "xray" / "ct.dcm")
    shutil.copy(ct, root / "xray" / "IM000001")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    header_only = pydicom.dcmread(ct)
    del header_only.PixelData
    header_only.save_as(root / "xray" / "report.dcm")
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "xray" / "notes.txt").write_text("seen by Dr. X")
    return str(root)


def scored(images: str, *names: str) -> list[str]:
    return [os.path.join(images, name) for name in names]


GOOD = ("case0.jpg", "case1.jpg", "case2.jpg", "xray/IM000001", "xray/chest16.png",
        "xray/ct.dcm")


def test_folders_are_searched_recursively_past_litter(images, tmp_path):
    files, passed_over = find_images([images], SKIP)
    assert files == scored(images, "broken.png", *GOOD[:3], "xray/IM000001",
                           "xray/chest16.png", "xray/ct.dcm", "xray/report.dcm")
    assert passed_over == 2  # .DS_Store, notes.txt
    named, _ = find_images([os.path.join(images, "xray", "notes.txt")], SKIP)
    assert named == [os.path.join(images, "xray", "notes.txt")]  # named: scored or refused
    with pytest.raises(NothingToScoreError, match="no image files in"):
        find_images([str(tmp_path)], SKIP)


def test_jpeg_16_bit_png_and_dicom_score_as_the_evaluation_path_does(models, images):
    model = load_model(find_model(None, os.path.join(models["work"], "serving")),
                       load_config().task)
    assert model.path == models["version"] and model.metadata_inputs  # sent as missing
    files = scored(images, *GOOD)
    answers = list(predict(model, files, DICOM, TASK, batch=32))
    assert [a.file for a in answers] == files and not any(a.error for a in answers)

    with open(files[-1], "rb") as f:
        assert read_image(files[-1], DICOM, TASK) == (dicom.to_png(f.read(), DICOM), {})
    evaluated = [model.loaded.signatures["serving_default"](
        examples=tf.constant([image_example(read_image(path, DICOM, TASK)[0])]))
        for path in files]
    np.testing.assert_allclose([a.probability for a in answers],
                               [e["probability"][0, 0] for e in evaluated], atol=1e-6)
    assert [a.decision for a in answers] == [e["decision"][0, 0] for e in evaluated]
    assert {a.decision for a in answers[:3]} == {0, 1}  # the threshold lies between them
    assert answers[3].probability == answers[5].probability  # the DICOM, named either way
    assert answers[4].probability != answers[0].probability


def test_a_dicom_headers_sex_and_age_reach_the_model_as_import_maps_them(models, tmp_path):
    """The config's source.dicom.columns and values, as in the DICOM example of docs/data.md: a
    file whose header says F, 070Y is sent as female, 70; the same pixels without those
    attributes, and the same PNG sent as a file, as missing; and they score differently."""
    config = load_config(None, ["source.dicom.columns={PatientSex: sex, PatientAge: "
                                "age_approx}", "source.dicom.values={PatientSex: {M: male, "
                                "F: female}}"])
    pixels = np.random.default_rng(3).integers(0, 4096, (40, 48), dtype=np.uint16)
    told = instance("1.2.826.0.1.3680043.8.498.71", "P71", pixels)
    told.PatientSex, told.PatientAge = "F", "070Y"
    untold = instance("1.2.826.0.1.3680043.8.498.72", "P72", pixels)
    del untold.PatientSex, untold.PatientAge
    save(told, str(tmp_path), "told.dcm")
    save(untold, str(tmp_path), "untold.dcm")
    png, codes = read_image(str(tmp_path / "told.dcm"), config.source.dicom, config.task)
    assert codes == {"sex": config.task.metadata["sex"].values.index("female"),
                     "age_approx": 70}
    (tmp_path / "told.png").write_bytes(png)

    model = load_model(models["version"], config.task)
    sent, signature = [], model.signature
    model.signature = lambda **inputs: sent.append(inputs) or signature(**inputs)
    files = [str(tmp_path / name) for name in ("told.dcm", "untold.dcm", "told.png")]
    answers = list(predict(model, files, config.source.dicom, config.task, batch=1))
    missing = config.task.missing
    assert [{k: int(v[0]) for k, v in inputs.items() if k != "image"} for inputs in sent] == [
        {"sex": 1, "age_approx": 70, "anatom_site_general_challenge": missing},
        *2 * [{"sex": missing, "age_approx": missing, "anatom_site_general_challenge": missing}]]
    told_p, untold_p, png_p = (a.probability for a in answers)
    assert untold_p == png_p and told_p != untold_p


def test_a_broken_file_is_named_with_its_reason_and_the_rest_are_scored(models, images):
    model = load_model(models["version"], load_config().task)
    assert model.batch_limit == 2
    sizes = []
    signature = model.signature
    model.signature = lambda **inputs: sizes.append(len(inputs["image"])) or signature(
        **inputs)
    files = scored(images, "case0.jpg", "broken.png", "case1.jpg", "xray/report.dcm",
                   "xray/ct.dcm", "gone.jpg")
    answers = {os.path.basename(a.file): a for a in predict(model, files, DICOM, TASK, batch=8)}
    assert max(sizes) == 2  # --batch 8, the model's bound 2
    assert "PNG" in answers["broken.png"].error
    assert answers["report.dcm"].error == "no pixel data (SOP class CT Image Storage)"
    assert answers["gone.jpg"].error == "cannot read: No such file or directory"
    for name in ("case0.jpg", "case1.jpg", "ct.dcm"):
        assert not answers[name].error and 0 <= answers[name].probability <= 1


def test_a_five_class_model_gives_every_class_and_the_urgent_rule(models, images):
    task = load_config(None, FIVE).task
    model = load_model(models["five"], task)
    answers = list(predict(model, scored(images, *GOOD), DICOM, task, batch=4))
    rows = [record(a, model) for a in answers]
    classes = [f"p_{c}" for c in task.label.classes]
    assert fields(model) == ["file", "class", "class_probability", *classes,
                             "urgent_probability", "decision", "threshold", "error"]
    for row in rows:
        p = np.array([row[c] for c in classes])
        assert row["class"] == task.label.classes[p.argmax()]
        assert row["class_probability"] == p.max()
        assert row["urgent_probability"] == pytest.approx(p[3:].sum(), abs=1e-6)
        assert row["decision"] == ("mc or mm" if p[3:].sum() >= 0.5 else "any other class")
        assert row["threshold"] == 0.5 and row["error"] is None
    with pytest.raises(ModelError, match="answers 5 classes, the config's task names 2"):
        load_model(models["five"], load_config().task)


def test_the_command_prints_a_table_writes_csv_and_says_what_failed(models, images, tmp_path):
    """As a user runs it: the installed console script."""
    out = tmp_path / "scores.csv"
    failed = medtfx("predict", images, "--work-dir", models["work"], "--out", str(out))
    assert failed.returncode == 1, failed.stderr
    lines = failed.stdout.splitlines()
    assert lines[0].split() == ["file", "probability", "decision", "threshold"]
    assert any(line.startswith(os.path.join(images, "broken.png")) and " error: " in line
               for line in lines)
    assert lines[-1] == (f"medtfx: 6 scored, 2 failed, by {models['version']}; 2 other "
                         f"files in the folders passed over; written to {out}")
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["file", "probability", "decision", "threshold", "error"]
    assert len(rows) == 8 and sum(bool(r["error"]) for r in rows) == 2
    assert {r["decision"] for r in rows if not r["error"]} == {"benign", "malignant"}


def test_json_of_files_that_all_score_and_exit_statuses(models, images, tmp_path, capfd):
    out, files = tmp_path / "scores.json", scored(images, "case0.jpg", "xray/ct.dcm")
    serving = os.path.dirname(models["version"])
    assert main(["predict", *files, "--model", serving, "--out", str(out)]) == 0
    assert capfd.readouterr().out.splitlines()[-1].startswith("medtfx: 2 scored, 0 failed")
    with open(out) as f:
        written = json.load(f)
    assert written["model"] == models["version"]
    assert [r["file"] for r in written["predictions"]] == files
    assert list(written["predictions"][0]) == fields(load_model(models["version"],
                                                                load_config().task))
    os.makedirs(tmp_path / "empty")
    assert main(["predict", str(tmp_path / "empty"), "--model", serving]) == 1
    assert capfd.readouterr().out == f"error: no image files in {tmp_path / 'empty'}\n"
    with pytest.raises(SystemExit) as usage:
        main(["predict", *files, "--out", str(tmp_path / "scores.txt")])
    assert usage.value.code == 2 and "name a .csv or .json file" in capfd.readouterr().err


def test_explain_writes_an_overlay_per_scored_file_and_never_replaces_one(models, images,
                                                                         tmp_path, capfd):
    """--explain: one PNG per file scored, at the size the model decoded it, mirroring the
    subfolders; a second run into the same folder refuses before scoring, unless asked."""
    out = tmp_path / "overlays"
    files = scored(images, "case0.jpg", "broken.png", "xray/chest16.png", "xray/ct.dcm")
    assert main(["predict", *files, "--model", models["version"], "--explain", str(out)]) == 1
    said = capfd.readouterr().out.splitlines()
    assert said[-1] == f"medtfx: 3 heat map overlays written to {out}"
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == ["case0.jpg-explained.png", "xray/chest16.png-explained.png",
                       "xray/ct.dcm-explained.png"]
    for name, source in (("case0.jpg", files[0]), ("xray/chest16.png", files[2]),
                         ("xray/ct.dcm", files[3])):
        sent = read_image(source, DICOM, TASK)[0]
        overlay = Image.open(out / f"{name}-explained.png")
        assert overlay.mode == "RGB" and overlay.size == Image.open(io.BytesIO(sent)).size
    before = (out / "case0.jpg-explained.png").read_bytes()
    (out / "case0.jpg-explained.png").write_bytes(b"mine")
    assert main(["predict", files[0], "--model", models["version"], "--explain",
                 str(out)]) == 1
    assert capfd.readouterr().out == (
        f"error: {out / 'case0.jpg-explained.png'} already exists; not replacing: choose "
        "another --explain folder, or add --overwrite to replace them\n")
    assert (out / "case0.jpg-explained.png").read_bytes() == b"mine"
    assert main(["predict", files[0], "--model", models["version"], "--explain", str(out),
                 "--overwrite"]) == 0
    assert (out / "case0.jpg-explained.png").read_bytes() == before
