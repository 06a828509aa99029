"""The whole pipeline through `medtfx run`, as a user runs it: ML Metadata records every
component, the summary and `medtfx history` say what happened, the pushed model serves test
examples, and the cache reuses exactly what no code change touched.

The runs import a copy of the project's code (tests/helpers.py code_copy), so that a test
can edit it as a developer would."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from pipeline.results.mlmd import find_run, node_name, open_store
from pipeline.serving.warmup import CLIENT_SIGNATURES, read_requests, request_inputs
from tests.helpers import (BLESS_ANY, FAST_RUN, REPO, code_copy, medtfx, open_in_chromium,
                           shard_records)

pytestmark = pytest.mark.slow

COMPONENTS = ["ImportExampleGen", "TaskSchema", "latest_blessed_model_resolver",
              "StatisticsGen", "ExampleValidator", "DataGate", "Transform", "Trainer",
              "Evaluator", "ModelPackager", "Pusher",
              # the sample's test shards, validated and scored (scoring.test_shards: auto)
              "TestExampleGen", "TestStatisticsGen", "TestExampleValidator", "TestDataGate",
              "BulkInferrer", "SubmissionWriter"]


def run(data: str, work, *extra: str, env: dict | None = None, status: int = 0) -> dict:
    result = medtfx("run", "--data-root", data, "--work-dir", str(work), *FAST_RUN, *extra,
                    env=env)
    assert result.returncode == status, result.stdout + result.stderr
    assert result.stderr == ""
    return {"stdout": result.stdout,
            "summary": json.loads((work / "run_summary.json").read_text())}


def versions(work) -> list[str]:
    return sorted(os.listdir(work / "serving"))


def progress_lines(stdout: str) -> dict[str, str]:
    """Each component's progress line, by component."""
    return {name: line for line in stdout.splitlines() for name in COMPONENTS
            if f"] {name} " in line}


def edit(code: dict, *path: str) -> None:
    """A change a developer might make: a comment at the end of a file."""
    with open(os.path.join(code["root"], *path), "a") as f:
        f.write("\n# edited by a test\n")


@pytest.fixture(scope="module")
def code(tmp_path_factory) -> dict:
    return code_copy(tmp_path_factory.mktemp("code"))


@pytest.fixture(scope="module")
def first_run(tiny_data, tmp_path_factory, code) -> dict:
    work = tmp_path_factory.mktemp("e2e") / "work"
    temp = tmp_path_factory.mktemp("system-temp")
    return {"work": work, "temp": temp,
            **run(tiny_data, work, *BLESS_ANY, env={**code["env"], "TMPDIR": str(temp)})}


def test_every_component_ran_and_is_recorded_in_ml_metadata(first_run):
    store = open_store(str(first_run["work"] / "metadata.sqlite"))
    executions = store.get_executions_by_context(find_run(store, "medtfx-melanoma").id)
    states = {node_name(store, e.id)[1]: e.last_known_state for e in executions}
    assert sorted(states) == sorted(COMPONENTS)
    assert set(states.values()) == {3}  # COMPLETE
    for name in COMPONENTS:
        assert name in first_run["stdout"]  # progress per component


def test_a_run_leaves_no_files_in_the_system_temp_dir(first_run):
    """A shared machine's temp dir outlives the run: TFX's per-stage build of itself once
    left 46 MB there for each Beam stage."""
    left = [os.path.join(folder, name) for folder, _, names in os.walk(first_run["temp"])
            for name in names]
    assert left == []


def test_summary_reports_blessing_push_slices_and_timings(first_run, tiny_data):
    summary = first_run["summary"]
    assert summary["blessed"] is True
    assert summary["pushed_model"].startswith(str(first_run["work"] / "serving"))
    held_out = sum(int(name.split("-")[1].split(".")[0]) for name in os.listdir(tiny_data)
                   if name[:7] in ("train12", "train13", "train14"))
    assert summary["metrics"]["overall"]["example_count"] == held_out
    overall = summary["metrics"]["overall"]
    assert overall["auc_ci"][0] <= overall["auc"] <= overall["auc_ci"][1]
    families = {name.split(" = ")[0] for name in summary["metrics"] if name != "overall"}
    assert families == {"sex", "age", "anatomic site"}  # slices by the task's names
    assert "anatomic site = torso & sex = female" in summary["metrics"]
    assert sorted(summary["components"]) == sorted(COMPONENTS)
    assert summary["splits"]["evaluation"] == ["train12", "train13", "train14"]
    assert "BLESSED" in first_run["stdout"]


def test_pushed_model_scores_serialized_examples_from_a_test_shard(first_run, tiny_data):
    model = tf.saved_model.load(first_run["summary"]["pushed_model"])
    records = shard_records(tiny_data, "test01-*.tfrec")
    scores = model.signatures["serving_default"](examples=tf.constant(records))["probability"]
    assert scores.shape == (len(records), 1)
    assert np.all((scores.numpy() >= 0) & (scores.numpy() <= 1))


def test_a_submission_csv_scores_every_test_image_and_the_summary_names_it(first_run,
                                                                          tiny_data):
    summary = first_run["summary"]
    path = summary["submission"]
    assert path.startswith(str(first_run["work"] / "pipeline" / "SubmissionWriter"))
    with open(path, newline="") as f:
        header, *rows = list(csv.reader(f))
    assert header == ["image_name", "target"]
    names = [tf.train.Example.FromString(r).features.feature["image_name"]
             .bytes_list.value[0].decode() for r in shard_records(tiny_data, "test*.tfrec")]
    assert len(rows) == len(names) == summary["scored"]
    assert [name for name, _ in rows] == sorted(names)
    scores = np.array([float(score) for _, score in rows])
    assert np.all((scores >= 0) & (scores <= 1)) and scores.std() > 0
    assert f"medtfx: scored {len(rows)} test images: {path}" in first_run["stdout"]
    # The same scores as the pushed model gives those examples itself.
    model = tf.saved_model.load(summary["pushed_model"])
    records = shard_records(tiny_data, "test00-*.tfrec")
    served = model.signatures["serving_default"](examples=tf.constant(records))["probability"]
    by_name = dict(rows)
    for record, score in zip(records, served.numpy()[:, 0]):
        name = tf.train.Example.FromString(record).features.feature["image_name"]
        assert float(by_name[name.bytes_list.value[0].decode()]) == pytest.approx(score,
                                                                                   abs=1e-5)


def test_rerun_reuses_finished_work_and_pushes_nothing_new(first_run, tiny_data, code):
    """An edit no component runs (the report) leaves the cache alone."""
    before = versions(first_run["work"])
    edit(code, "pipeline", "ops", "report.py")
    again = run(tiny_data, first_run["work"], *BLESS_ANY, env=code["env"])
    first_run["second"] = again
    lines = progress_lines(again["stdout"])
    for name in COMPONENTS[:COMPONENTS.index("Trainer") + 1]:
        if name != "latest_blessed_model_resolver":
            assert "(cached)" in lines[name], lines[name]
    # The Evaluator runs again (the first model is now the baseline); the same model is
    # still the one serving, at the same version.
    assert again["summary"]["pushed_model"] == first_run["summary"]["pushed_model"]
    assert versions(first_run["work"]) == before


def test_history_of_two_runs_matches_their_summaries_and_reaches_the_shards(first_run,
                                                                          tiny_data):
    summaries = [first_run["summary"], first_run["second"]["summary"]]
    work = first_run["work"]
    result = medtfx("history", "--work-dir", str(work), "--json")
    assert result.returncode == 0 and result.stderr == "", result.stdout + result.stderr
    runs = json.loads(result.stdout)["runs"]
    assert [r["run_id"] for r in runs] == [s["run_id"] for s in summaries]
    for record, summary in zip(runs, summaries):
        assert record["spans"] == [0]
        assert record["blessed"] is summary["blessed"] is True
        assert record["pushed_destination"] == summary["pushed_model"]
        assert record["pushed_version"] == os.path.basename(summary["pushed_model"])
        assert record["auc"] == pytest.approx(summary["metrics"]["overall"]["auc"], abs=1e-4)
        assert record["operating_threshold"] == pytest.approx(summary["operating_threshold"],
                                                              abs=1e-4)
    assert runs[1]["model_id"] == runs[0]["model_id"]
    assert (runs[0]["model_cached"], runs[1]["model_cached"]) == (False, True)

    version = runs[0]["pushed_version"]
    result = medtfx("history", "--work-dir", str(work), "--version", version, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    lineage = json.loads(result.stdout)
    assert lineage["recorded_by"] == [r["run_id"] for r in runs]
    assert [s["component"] for s in lineage["trained"]] == ["Trainer"]
    assert lineage["trained"][0]["artifact_id"] == runs[0]["model_id"]
    assert lineage["transform"]["component"] == "Transform"
    assert lineage["baseline"] is None  # the first blessed model had none
    (source,) = lineage["data"]
    assert source["input_base"] == tiny_data and source["span"] == 0
    files = [f for split in source["splits"] for f in split["files"]]
    assert sorted(files) == sorted(os.path.join(tiny_data, name)
                                   for name in os.listdir(tiny_data)
                                   if name.startswith("train"))
    assert all(split["unchanged"] for split in source["splits"])


def test_a_model_below_the_bar_is_not_pushed_and_the_failed_check_is_named(first_run,
                                                                           tiny_data, code):
    before = versions(first_run["work"])
    strict = run(tiny_data, first_run["work"], *BLESS_ANY, "--set", "auc_threshold=0.99",
                 "--set", "min_accuracy_over_majority=1", "--set", "max_ece=0.001",
                 "--strict", env=code["env"], status=3)  # documented: 3 is "not blessed"
    summary = strict["summary"]
    assert summary["blessed"] is False and summary["pushed_model"] is None
    overall = summary["metrics"]["overall"]
    assert {"metric": "auc", "slice": "overall", "bound": {"at_least": 0.99},
            "value": overall["auc"]} in summary["failed_checks"]
    assert {"metric": "accuracy_over_majority", "slice": "overall", "bound": {"at_least": 1},
            "value": overall["accuracy_over_majority"]} in summary["failed_checks"]
    assert {"metric": "ece", "slice": "overall", "bound": {"at_most": 0.001},
            "value": overall["ece"]} in summary["failed_checks"]
    assert overall["accuracy_over_majority"] == pytest.approx(
        overall["accuracy"] - overall["majority_rate"], abs=2e-4)
    assert "NOT BLESSED" in strict["stdout"] and "auc on overall" in strict["stdout"]
    assert "ece on overall: " in strict["stdout"] and "(must be at most 0.001)" in strict["stdout"]
    assert versions(first_run["work"]) == before
    assert summary["submission"] is None and "medtfx: scored" not in strict["stdout"]


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
        assert captions[0].startswith("Slices: estimate and 95% interval")
        assert captions[1:3] == ["ROC, overall", "Precision-recall, overall"]
        # The first screen: the verdict, the headline and the forest plot, one row a slice.
        forest = driver.find_element(By.CSS_SELECTOR, "svg.forest")
        assert forest.location["y"] < 300 and forest.size["height"] > 17 * len(
            first_run["summary"]["metrics"])
        assert len(forest.find_elements(By.CSS_SELECTOR, "rect.estimate")) >= len(
            first_run["summary"]["metrics"])
        assert "Calibration, overall" in captions
        assert any(c.startswith("Reliability on the validation fold") for c in captions)
        assert all(c.size["width"] > 200 and c.size["height"] > 200 for c in charts)
        assert driver.find_elements(By.CSS_SELECTOR, "svg.chart polyline")
        headings = [h.text for h in driver.find_elements(By.TAG_NAME, "h2")]
        assert headings[:3] == ["Slices", "Comparison with the last blessed model", "Curves"]
        # The gallery: cases with their image and heat map, embedded in the page itself.
        cases = driver.find_elements(By.CSS_SELECTOR, "figure.case")
        assert "Gallery" in headings and cases
        for image in driver.find_elements(By.CSS_SELECTOR, "figure.case img"):
            assert image.get_attribute("src").startswith("data:image/png;base64,")
            assert image.get_property("naturalWidth") == 32  # decoded: the sample's size
        assert all("score" in c.text for c in cases)
        assert not driver.find_elements(By.CSS_SELECTOR, "[src]:not([src^='data:']), link")
        assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    finally:
        driver.quit()
    pixels = np.asarray(Image.open(screenshot).convert("L"), dtype=float)
    assert pixels.shape[0] > 2000 and pixels.std() > 10  # a long page, not a blank one


def test_an_edited_component_reruns_with_what_follows_it_and_nothing_before(first_run,
                                                                          tiny_data, code):
    """Runs after the strict run: with the second run's settings again, only the edited
    ModelPackager and what takes its model (the Pusher, and the test shards' scoring) run;
    the same model keeps serving."""
    before = versions(first_run["work"])
    edit(code, "components", "model_packager.py")
    again = run(tiny_data, first_run["work"], *BLESS_ANY, env=code["env"])
    lines = progress_lines(again["stdout"])
    rerun = {name for name, line in lines.items() if "(cached)" not in line}
    assert rerun == {"latest_blessed_model_resolver", "ModelPackager", "Pusher",
                     "BulkInferrer", "SubmissionWriter"}, lines
    assert again["summary"]["pushed_model"] == first_run["summary"]["pushed_model"]
    assert versions(first_run["work"]) == before


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
    assert "| overall |" in card and "anatomic site = " in card


def test_the_pushed_model_is_calibrated_as_the_summary_and_its_card_say(first_run):
    """The map fitted on the validation fold is the one in the pushed SavedModel; the
    summary (its lines and run_summary.json) and the model card state it with the
    evaluation fold's ECE and Brier score inside their intervals."""
    summary = first_run["summary"]
    calibration = summary["calibration"]
    assert calibration == {**calibration, **{key: summary["training"]["Trainer"][
        "calibration"][key] for key in ("method", "reason", "examples")}}
    model = tf.saved_model.load(summary["pushed_model"])
    assert model.calibration.temperature.numpy() == pytest.approx(calibration["temperature"],
                                                                  abs=1e-4)
    overall = summary["metrics"]["overall"]
    for name in ("ece", "brier_score"):
        assert calibration[f"evaluation_{name}"] == overall[name]
        low, high = overall[f"{name}_ci"]
        assert low <= overall[name] <= high
    assert "        calibration: " in first_run["stdout"]
    with open(os.path.join(summary["pushed_model"], "assets.extra", "model_card.md")) as f:
        assert f"ECE {overall['ece']:.3f}" in f.read()


def test_pushed_model_carries_warm_up_requests_that_replay(first_run, tiny_data):
    """TF Serving's warm-up file: the first evaluation examples, one request per client
    signature, each answered by the SavedModel with a row per example."""
    pushed = first_run["summary"]["pushed_model"]
    requests = read_requests(pushed)
    assert [r.model_spec.signature_name for r in requests] == list(CLIENT_SIGNATURES)
    records = list(request_inputs(requests[0])["examples"])
    # serving.warmup_examples: ImportExampleGen copies the evaluation shards verbatim
    assert records == shard_records(tiny_data, "train12-*.tfrec", limit=4)
    model = tf.saved_model.load(pushed)
    for request in requests:
        inputs = request_inputs(request)
        out = model.signatures[request.model_spec.signature_name](
            **{key: tf.constant(value) for key, value in inputs.items()})
        assert out["probability"].shape == out["decision"].shape == (len(records), 1)


def test_a_model_that_fails_the_load_check_is_not_pushed_and_the_summary_says_why(
        first_run, tiny_data, code):
    """A load check that cannot finish in time stands for any model that does not load
    or answer: only ModelPackager and the Pusher run again, and nothing is pushed."""
    before = versions(first_run["work"])
    failed = run(tiny_data, first_run["work"], *BLESS_ANY, "--set",
                 "load_check_timeout=0.01", "--strict", env=code["env"], status=3)
    summary = failed["summary"]
    assert summary["blessed"] is True and summary["pushed_model"] is None
    reason = "the model did not load and answer within 0.01 s (serving.load_check_timeout)"
    assert summary["failed_checks"] == [
        {"metric": "load check", "signature": None, "reason": reason}]
    assert "medtfx: BLESSED, but nothing pushed. Failed checks:" in failed["stdout"]
    assert f"load check: {reason}" in failed["stdout"]
    assert versions(first_run["work"]) == before


def test_the_guards_flags_are_counted_on_the_evaluation_fold_and_the_test_shards(first_run):
    """The Evaluator's ood_flagged, the Submission's in_distribution.csv (submission.csv
    keeps Kaggle's two columns) and the summary line all count the served model's flags."""
    summary = first_run["summary"]
    guard = summary["ood"]
    assert guard["train_images"] > 0 and 0 < guard["threshold"]
    assert guard["evaluation_flagged"] == summary["metrics"]["overall"]["ood_flagged"]
    with open(os.path.join(os.path.dirname(summary["submission"]), "in_distribution.csv"),
              newline="") as f:
        header, *rows = list(csv.reader(f))
    assert header == ["image_name", "ood_score", "in_distribution"]
    assert len(rows) == guard["test_images"] == summary["scored"]
    flagged = sum(1 for *_, inside in rows if inside == "0")
    assert guard["test_flagged"] == round(flagged / len(rows), 4)
    assert "out-of-distribution guard (threshold" in first_run["stdout"]
