"""The whole pipeline through `medtfx run`, as a user runs it: ML Metadata records every
component, the summary says what happened, and the pushed model serves test examples."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from pipeline.data.synth import SynthSpec, generate
from pipeline.results.mlmd import find_run, node_name, open_store
from tests.helpers import BLESS_ANY, FAST_RUN, REPO, medtfx, open_in_chromium, shard_records

pytestmark = pytest.mark.slow

COMPONENTS = ["ImportExampleGen", "ImportSchemaGen", "latest_blessed_model_resolver",
              "StatisticsGen", "ExampleValidator", "DataGate", "Transform", "Trainer",
              "Evaluator", "ModelPackager", "Pusher"]


def run(data: str, work, *extra: str) -> dict:
    result = medtfx("run", "--data-root", data, "--work-dir", str(work), *FAST_RUN, *extra)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    return {"stdout": result.stdout,
            "summary": json.loads((work / "run_summary.json").read_text())}


def versions(work) -> list[str]:
    return sorted(os.listdir(work / "serving"))


@pytest.fixture(scope="module")
def first_run(tiny_data, tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("e2e") / "work"
    return {"work": work, **run(tiny_data, work, *BLESS_ANY)}


def test_every_component_ran_and_is_recorded_in_ml_metadata(first_run):
    store = open_store(str(first_run["work"] / "metadata.sqlite"))
    executions = store.get_executions_by_context(find_run(store, "medtfx-melanoma").id)
    states = {node_name(store, e.id)[1]: e.last_known_state for e in executions}
    assert sorted(states) == sorted(COMPONENTS)
    assert set(states.values()) == {3}  # COMPLETE
    for name in COMPONENTS:
        assert name in first_run["stdout"]  # progress per component


def test_summary_reports_blessing_push_slices_and_timings(first_run, tiny_data):
    summary = first_run["summary"]
    assert summary["blessed"] is True
    assert summary["pushed_model"].startswith(str(first_run["work"] / "serving"))
    held_out = sum(int(name.split("-")[1].split(".")[0]) for name in os.listdir(tiny_data)
                   if name[:7] in ("train12", "train13", "train14"))
    assert summary["metrics"]["overall"]["example_count"] == held_out
    assert 0 <= summary["metrics"]["overall"]["auc"] <= 1
    families = {name.split("=")[0] for name in summary["metrics"] if name != "overall"}
    assert families == {"sex", "age_bucket", "anatom_site_general_challenge"}
    assert sorted(summary["components"]) == sorted(COMPONENTS)
    assert summary["splits"]["evaluation"] == ["train12", "train13", "train14"]
    assert "BLESSED" in first_run["stdout"]


def test_pushed_model_scores_serialized_examples_from_a_test_shard(first_run, tiny_data):
    model = tf.saved_model.load(first_run["summary"]["pushed_model"])
    records = shard_records(tiny_data, "test01-*.tfrec")
    scores = model.signatures["serving_default"](examples=tf.constant(records))["probability"]
    assert scores.shape == (len(records), 1)
    assert np.all((scores.numpy() >= 0) & (scores.numpy() <= 1))


def test_rerun_reuses_finished_work_and_pushes_nothing_new(first_run, tiny_data):
    before = versions(first_run["work"])
    again = run(tiny_data, first_run["work"], *BLESS_ANY)
    lines = {name: line for line in again["stdout"].splitlines() for name in COMPONENTS
             if f"] {name} " in line}
    for name in COMPONENTS[:COMPONENTS.index("Trainer") + 1]:
        if name != "latest_blessed_model_resolver":
            assert "(cached)" in lines[name], lines[name]
    # The Evaluator runs again (the first model is now the baseline); the same model is
    # still the one serving, at the same version.
    assert again["summary"]["pushed_model"] == first_run["summary"]["pushed_model"]
    assert versions(first_run["work"]) == before


def test_a_model_below_the_bar_is_not_pushed_and_the_failed_check_is_named(first_run,
                                                                           tiny_data):
    before = versions(first_run["work"])
    strict = run(tiny_data, first_run["work"], *BLESS_ANY, "--set", "auc_threshold=0.99")
    summary = strict["summary"]
    assert summary["blessed"] is False and summary["pushed_model"] is None
    assert {"metric": "auc", "slice": "overall", "bound": {"at_least": 0.99},
            "value": summary["metrics"]["overall"]["auc"]} in summary["failed_checks"]
    assert "NOT BLESSED" in strict["stdout"] and "auc on overall" in strict["stdout"]
    assert versions(first_run["work"]) == before


def test_report_renders_in_chromium_and_names_failed_checks(first_run):
    """Runs after the strict run above: the report is of a model that was not blessed."""
    from PIL import Image
    from selenium.webdriver.common.by import By

    result = medtfx("report", "--work-dir", str(first_run["work"]))
    assert result.returncode == 0, result.stdout + result.stderr
    page = first_run["work"] / "report.html"
    screenshot = os.path.join(REPO, "work", "test-artifacts", "report.png")
    driver = open_in_chromium(page.as_uri(), screenshot)
    try:
        assert driver.title.startswith("medtfx report")
        assert "NOT BLESSED" in driver.find_element(By.CLASS_NAME, "verdict").text
        assert "auc on overall" in driver.find_element(By.TAG_NAME, "ul").text
        charts = driver.find_elements(By.CSS_SELECTOR, "svg.chart")
        captions = [c.text for c in driver.find_elements(By.TAG_NAME, "figcaption")]
        assert captions[:2] == ["ROC, overall", "Precision-recall, overall"]
        assert "Calibration, overall" in captions
        assert all(c.size["width"] > 200 and c.size["height"] > 200 for c in charts)
        assert driver.find_elements(By.CSS_SELECTOR, "svg.chart polyline")
        headings = [h.text for h in driver.find_elements(By.TAG_NAME, "h2")]
        assert headings[:3] == ["Slices", "Comparison with the last blessed model", "Curves"]
        assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    finally:
        driver.quit()
    pixels = np.asarray(Image.open(screenshot).convert("L"), dtype=float)
    assert pixels.shape[0] > 2000 and pixels.std() > 10  # a long page, not a blank one


def test_pushed_model_decides_at_the_threshold_and_carries_its_model_card(first_run,
                                                                          tiny_data):
    pushed = first_run["summary"]["pushed_model"]
    with open(os.path.join(pushed, "assets", "operating_threshold.txt")) as f:
        threshold = float(f.read())
    assert threshold == pytest.approx(first_run["summary"]["operating_threshold"], abs=1e-4)
    model = tf.saved_model.load(pushed)
    out = model.signatures["serving_default"](
        examples=tf.constant(shard_records(tiny_data, "test02-*.tfrec")))
    np.testing.assert_array_equal(out["decision"].numpy(),
                                  (out["probability"].numpy() >= threshold).astype(np.int64))
    with open(os.path.join(pushed, "assets.extra", "model_card.md")) as f:
        card = f.read()
    for section in ("## Intended use", "## Data", "## Operating point",
                    "## Metrics per slice (95% intervals)", "## Limitations"):
        assert section in card
    assert "| overall |" in card and "anatom_site_general_challenge=" in card


def test_other_releases_run_through_unchanged(tmp_path):
    """The 70k release (source, no diagnosis), 48 px shards, and grayscale JPEGs."""
    data = str(tmp_path / "data")
    generate(data, SynthSpec(images=300, size=48, seed=9, release="70k",
                             grayscale_share=0.3, malignant_share=0.3))
    outcome = run(data, tmp_path / "work", *BLESS_ANY, "--set",
                  "slices=[[sex], [source], [sex, anatom_site_general_challenge]]")
    assert outcome["summary"]["blessed"] is True
    assert {"source=0", "source=1", "source=2"} <= set(outcome["summary"]["metrics"])
    model = tf.saved_model.load(outcome["summary"]["pushed_model"])
    records = shard_records(data, "test00-*.tfrec")
    scores = model.signatures["serving_default"](examples=tf.constant(records))["probability"]
    assert scores.shape == (len(records), 1)
