"""Each notebook's task runs end to end from its dataset as published: `medtfx run --config
pipeline/configs/<task>.yaml --data-root DIR` imports the folders or CSVs, trains, and is
blessed or refused by the task's own gate; the served model takes the published files."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from pipeline.config import CONFIG_DIR
from pipeline.sample.layouts import LayoutSpec, generate_layout
from tests.helpers import medtfx

pytestmark = pytest.mark.slow

# Small and fast: five shards, 32 px, the small CNN from scratch.
TINY = ["train_shards=5", "folds=5", "eval_fold=4", "validation_fold=3", "image_size=32",
        "backbone=pneumonia_cnn", "weights=none", "frozen_epochs=0", "epochs=4",
        "batch_size=16", "learning_rate=0.003", "lr_ramp_epochs=1", "lr_sustain_epochs=2",
        "batchnorm_momentum=0.9", "early_stopping_patience=null",
        "direct_running_mode=in_memory", "direct_num_workers=1"]


def run_task(task: str, data: str, work: str, *extra: str):
    args = ["run", "--config", os.path.join(CONFIG_DIR, f"{task}.yaml"), "--data-root", data,
            "--work-dir", work]
    for override in [*TINY, *extra]:
        args += ["--set", override]
    return medtfx(*args)


def finished(result, work: str) -> dict:
    assert result.returncode == 0, result.stdout + result.stderr
    with open(os.path.join(work, "run_summary.json")) as f:
        return json.load(f)


def judged_by_its_gate(summary: dict) -> None:
    """Blessed and pushed exactly when no check failed; every failed check is named."""
    assert summary["blessed"] == (summary["failed_checks"] == [])
    assert (summary["pushed_model"] is not None) == summary["blessed"]
    assert all(c["metric"] and c["slice"] for c in summary["failed_checks"])


@pytest.fixture(scope="module")
def pneumonia(tmp_path_factory):
    root = tmp_path_factory.mktemp("pneumonia")
    data, work = str(root / "data"), str(root / "work")
    generate_layout(data, LayoutSpec("pneumonia", images=240, size=48, seed=5))
    result = run_task("pneumonia", data, work)
    return data, work, result, finished(result, work)


def test_pneumonia_runs_from_the_kermany_folders(pneumonia):
    data, work, result, summary = pneumonia
    judged_by_its_gate(summary)
    assert "importing" in result.stdout and "folders layout" in result.stdout
    assert summary["classes"] == ["normal", "pneumonia"]
    overall = summary["metrics"]["overall"]
    assert overall["auc"] > 0.7
    # The held-out set is the release's test/ folder, whole.
    published_test = sum(name.endswith(".jpeg") for _, _, names in
                         os.walk(os.path.join(data, "chest_xray", "test")) for name in names)
    assert overall["example_count"] == published_test
    assert overall["sensitivity"] >= summary["target_sensitivity"]


def test_a_second_run_reuses_the_import_while_the_files_are_unchanged(pneumonia):
    data, work, first, _ = pneumonia
    again = run_task("pneumonia", data, work)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "reusing the import" in again.stdout and "importing" not in again.stdout


def test_chest_xray_sex_runs_from_the_spr_csvs_and_serves_a_16_bit_png(tmp_path):
    data, work = str(tmp_path / "data"), str(tmp_path / "work")
    generate_layout(data, LayoutSpec("chest-xray-sex", images=260, size=48, seed=6))
    summary = finished(run_task("chest-xray-sex", data, work, "slice_auc_threshold=0.6",
                                "min_slice_positives=3", "min_slice_negatives=3"), work)
    judged_by_its_gate(summary)
    assert summary["metrics"]["overall"]["auc"] > 0.7
    assert any(name.startswith("age = ") for name in summary["metrics"]), summary["metrics"]
    if summary["blessed"]:
        model = tf.saved_model.load(summary["pushed_model"])
        folder = os.path.join(data, "kaggle", "kaggle", "test")
        sixteen = [n for n in sorted(os.listdir(folder))
                   if open(os.path.join(folder, n), "rb").read(25)[24] == 16]
        with open(os.path.join(folder, sixteen[0]), "rb") as f:
            scored = model.signatures["serving_image"](image=tf.constant([f.read()]))
        assert 0.0 <= float(np.ravel(scored["probability"])[0]) <= 1.0


def test_celeba_runs_from_the_attribute_tables_with_its_slices(tmp_path):
    data, work = str(tmp_path / "data"), str(tmp_path / "work")
    generate_layout(data, LayoutSpec("celeba", images=260, size=40, seed=7))
    summary = finished(run_task("celeba", data, work, "slice_auc_threshold=0.6",
                                "min_slice_positives=3", "min_slice_negatives=3"), work)
    judged_by_its_gate(summary)
    names = set(summary["metrics"])
    assert {"young = yes", "young = no", "eyeglasses = yes", "eyeglasses = no"} <= names
    # The published partition: 2 is the evaluation set.
    with open(os.path.join(data, "list_eval_partition.csv")) as f:
        held_out = sum(line.rstrip().endswith(",2") for line in f)
    assert summary["metrics"]["overall"]["example_count"] == held_out


@pytest.fixture(scope="module")
def ddsm(tmp_path_factory):
    """The DDSM notebook's CSVs and PNGs (87% normal); a trained five-class model (gated
    without recall floors: the tiny evaluation fold holds two or three images of each rare
    class), and one that never learned (learning rate 0) from the same import."""
    root = tmp_path_factory.mktemp("ddsm")
    data = str(root / "data")
    generate_layout(data, LayoutSpec("ddsm", images=500, size=48, seed=3))
    runs = {}
    for name, extra in (("trained", ["epochs=5", "learning_rate=0.005", "min_class_recall=0"]),
                        ("untrained", ["epochs=1", "learning_rate=0", "lr_start=0",
                                       "lr_min=0"])):
        work = str(root / name)
        result = run_task("ddsm", data, work, *extra)
        runs[name] = (work, result, finished(result, work))
    return data, runs


def test_ddsm_five_classes_are_evaluated_class_by_class(ddsm):
    data, runs = ddsm
    work, result, summary = runs["trained"]
    judged_by_its_gate(summary)
    overall = summary["metrics"]["overall"]
    classes = summary["classes"]
    assert len(classes) == 5 and list(overall["classes"]) == classes
    for metrics in overall["classes"].values():
        assert {"recall", "precision", "auc", "examples"} <= set(metrics)
    matrix = np.array(overall["confusion_matrix"])  # rows: actual class; columns: predicted
    assert matrix.shape == (5, 5) and matrix.sum() == overall["example_count"]
    assert [m["examples"] for m in overall["classes"].values()] == matrix.sum(1).tolist()
    # The baseline: what always answering the majority class scores.
    assert overall["majority_rate"] == pytest.approx(matrix.sum(1).max() / matrix.sum(),
                                                     abs=1e-4)
    assert overall["balanced_majority_rate"] == pytest.approx(0.2)
    assert overall["auc"] is not None and overall["balanced_accuracy"] is not None
    assert overall["accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum(), abs=1e-4)
    # The held-out set is the test CSV's images, whole.
    with open(os.path.join(data, "data", "test_df_model_0.csv")) as f:
        assert overall["example_count"] == len(f.readlines()) - 1
    assert "macro AUC" in result.stdout and "recall by class" in result.stdout
    # calibrated K-class probabilities, with the top-label ECE of the evaluation fold
    assert summary["calibration"]["method"] in ("temperature_bias", "temperature")
    assert summary["calibration"]["evaluation_ece"] == overall["ece"]
    assert overall["ece_ci"][0] <= overall["ece"] <= overall["ece_ci"][1]
    assert "        calibration: temperature scaling" in result.stdout
    # The urgent rule: malignant calcification or mass, at the target sensitivity.
    assert summary["urgent"] == ["malignant_calcification", "malignant_mass"]
    assert overall["urgent_rule"]["sensitivity"] >= summary["target_sensitivity"]


def test_the_pushed_ddsm_model_names_the_class_of_a_published_png(ddsm):
    """Packaged with the urgent rule's threshold, warm-up requests and the load check; the
    served model takes a PNG as published and answers with the class's name."""
    data, runs = ddsm
    _, _, summary = runs["trained"]
    assert summary["blessed"] and summary["pushed_model"], summary["failed_checks"]
    served = tf.saved_model.load(summary["pushed_model"])
    with open(os.path.join(data, "data", "test_df_model_0.csv")) as f:
        rows = [line.rstrip().split(",") for line in f.readlines()[1:6]]
    images = [open(os.path.join(data, "test_images", row[3]), "rb").read() for row in rows]
    out = served.signatures["serving_image"](image=tf.constant(images))
    assert out["probabilities"].shape == (5, 5)
    names = [n.decode() for n in out["class_name"].numpy()]
    assert set(names) <= set(summary["classes"])
    threshold = summary["operating_threshold"]
    np.testing.assert_array_equal(out["decision"].numpy()[:, 0],
                                  out["probability"].numpy()[:, 0] >= threshold)
    with open(os.path.join(summary["pushed_model"], "assets.extra", "model_card.md")) as f:
        card = f.read()
    assert "## Classes" in card and "| actual \\ predicted |" in card
    assert os.path.exists(os.path.join(summary["pushed_model"], "assets.extra",
                                       "tf_serving_warmup_requests"))


def test_the_ddsm_report_shows_classes_the_confusion_heat_map_and_per_class_roc(ddsm):
    _, runs = ddsm
    work, _, summary = runs["trained"]
    result = medtfx("report", "--work-dir", work)
    assert result.returncode == 0, result.stdout + result.stderr
    with open(os.path.join(work, "report.html")) as f:
        page = f.read()
    assert "<h2>Classes</h2>" in page and "ROC per class, one vs rest" in page
    assert "actual \\ predicted" in page and "rgba(42,125,58," in page  # the heat map
    for name in summary["classes"]:
        assert f"<td>{name}</td>" in page or f"<th>{name}</th>" in page
    assert "always answering the majority class" in page


def test_a_ddsm_model_that_never_learned_is_refused_by_recall_and_the_baseline(ddsm):
    _, runs = ddsm
    _, result, summary = runs["untrained"]
    assert not summary["blessed"] and summary["pushed_model"] is None
    failed = {check["metric"] for check in summary["failed_checks"]}
    assert "balanced_accuracy_over_majority" in failed
    assert any(metric.startswith("recall on class ") for metric in failed)
    assert "recall on class " in result.stdout and "NOT BLESSED" in result.stdout


def test_a_ddsm_binary_variant_runs_by_changing_only_the_label_map(ddsm, tmp_path):
    data, _ = ddsm
    work = str(tmp_path / "work")
    result = run_task(
        "ddsm", data, work,
        'label_values={"0": null, "1": null, "2": benign, "3": null, "4": malignant}',
        "classes=[benign, malignant]", "positive=malignant", "urgent=[]")
    summary = finished(result, work)
    judged_by_its_gate(summary)
    assert summary["classes"] == ["benign", "malignant"]
    assert "classes" not in summary["metrics"]["overall"]  # the binary summary
    assert "images of classes the label map drops left out" in result.stdout
    with open(os.path.join(data, "data", "test_df_model_0.csv")) as f:
        masses = sum(line.rstrip().split(",")[-1] in ("2", "4") for line in f)
    assert summary["metrics"]["overall"]["example_count"] == masses
