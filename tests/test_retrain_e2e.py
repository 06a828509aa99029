"""Continuous retraining end to end: span 1, then more data as span 2 (warm-started,
compared with span 1's model, pushed), then a batch of corrupted and drifted files that
never reaches the pipeline, while serving keeps the last good model."""

from __future__ import annotations

import glob
import json
import os
import shutil

import pytest
import tensorflow as tf

from tests.helpers import BLESS_ANY, FAST_RUN, medtfx

pytestmark = pytest.mark.slow


def labelled_batch(folder: str, seed: int) -> list[str]:
    """A hospital's delivery: 15 labelled shards in the public layout, nothing else."""
    from pipeline.sample.synth import SynthSpec, generate

    generate(folder, SynthSpec(images=300, size=32, seed=seed, malignant_share=0.3,
                               test_shards=1, first_patient=10_000 * seed))  # new patients
    for path in glob.glob(os.path.join(folder, "*")):
        if not os.path.basename(path).startswith("train"):
            os.remove(path)
    return sorted(glob.glob(os.path.join(folder, "train*.tfrec")))


def retrain(incoming, data, work, *extra: str):
    return medtfx("retrain", "--incoming", str(incoming), "--data-root", str(data),
                  "--work-dir", str(work), *FAST_RUN, *BLESS_ANY,
                  "--set", "retrain.settle_seconds=0",  # the test writes files whole
                  *extra, timeout=1500)


def summary(work) -> dict:
    with open(os.path.join(work, "run_summary.json")) as f:
        return json.load(f)


def versions(work) -> list[str]:
    return sorted(os.listdir(os.path.join(work, "serving")), key=int)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("retrain")
    return {"incoming": root / "incoming", "data": root / "data", "work": root / "work",
            "root": root}


@pytest.fixture(scope="module")
def span1(site) -> dict:
    delivered = labelled_batch(str(site["incoming"]), seed=7)
    result = retrain(site["incoming"], site["data"], site["work"])
    assert result.returncode == 0, result.stdout + result.stderr
    return {"result": result, "delivered": delivered, "summary": summary(site["work"]),
            "versions": versions(site["work"])}


@pytest.fixture(scope="module")
def span2(site, span1) -> dict:
    labelled_batch(str(site["incoming"]), seed=8)
    result = retrain(site["incoming"], site["data"], site["work"])
    assert result.returncode == 0, result.stdout + result.stderr
    return {"result": result, "summary": summary(site["work"]),
            "versions": versions(site["work"])}


def test_span_1_is_registered_trained_and_pushed(site, span1):
    assert "registered span 1 (15 files)" in span1["result"].stdout
    assert span1["result"].stderr == ""
    assert os.listdir(site["incoming"]) == []  # taken in, none left behind
    span = site["data"] / "span-1"
    for delivered in span1["delivered"]:
        name = os.path.basename(delivered)
        assert (span / name).exists() and (site["data"] / "arrivals" / "1" / name).exists()
    assert span1["summary"]["blessed"] and len(span1["versions"]) == 1
    assert "baseline_auc" not in span1["summary"]["metrics"]["overall"]
    assert span1["summary"]["data_root"] == str(span)
    trained = next(iter(span1["summary"]["training"].values()))
    assert trained["warm_start_from"] is None  # nothing blessed before


def test_span_2_holds_both_arrivals_and_its_model_starts_from_span_1s(site, span1, span2):
    span = site["data"] / "span-2"
    with open(span / "medtfx-span.json") as f:
        assert json.load(f)["arrivals"] == [1, 2]  # window "all"
    counts = {name.split("-")[0]: int(name.split("-")[1].split(".")[0])
              for name in os.listdir(span) if name.endswith(".tfrec")}
    records = sum(1 for _ in tf.data.TFRecordDataset(sorted(map(str, span.glob("*.tfrec")))))
    assert records == sum(counts.values()) == 600
    assert span2["summary"]["data_root"] == str(span)
    trained = next(iter(span2["summary"]["training"].values()))
    assert trained["warm_start_from"] is not None
    assert os.path.basename(trained["warm_start_from"]) == "model.keras"
    overall = span2["summary"]["metrics"]["overall"]  # compared with span 1's model
    assert 0 <= overall["baseline_auc"] <= 1 and overall["auc_change"] is not None
    assert span2["summary"]["blessed"]
    assert span2["versions"][:-1] == span1["versions"] and len(span2["versions"]) == 2


def test_corrupted_and_drifted_files_are_quarantined_and_serving_keeps_the_last_model(
        site, span2):
    from pipeline.sample.synth import SynthSpec, generate

    batch = site["root"] / "batch3"
    generate(str(batch), SynthSpec(images=300, size=32, seed=9, malignant_share=0.3))
    corrupt = sorted(batch.glob("train02-*.tfrec"))[0]
    drifted = sorted(batch.glob("train06-*.tfrec"))[0]
    data = corrupt.read_bytes()
    (site["incoming"] / corrupt.name).write_bytes(data[:len(data) // 2])  # cut short
    with tf.io.TFRecordWriter(str(site["incoming"] / drifted.name)) as writer:
        for record in tf.data.TFRecordDataset(str(drifted)):
            example = tf.train.Example.FromString(record.numpy())
            feature = example.features.feature
            feature["sex"].int64_list.value[:] = [1]  # a clinic of one sex, 40 years older
            feature["age_approx"].int64_list.value[:] = [
                min(120, feature["age_approx"].int64_list.value[0] + 40)]
            writer.write(example.SerializeToString())

    result = retrain(site["incoming"], site["data"], site["work"])
    assert result.returncode == 1, result.stdout + result.stderr
    assert "no new span registered" in result.stdout
    assert not (site["data"] / "span-3").exists()
    assert versions(site["work"]) == span2["versions"]  # still the last good model
    assert os.listdir(site["incoming"]) == []
    (folder,) = (site["data"] / "quarantine").iterdir()
    with open(folder / "quarantine-report.json") as f:
        report = json.load(f)["files"]
    assert set(report) == {corrupt.name, drifted.name}
    assert "not a readable TFRecord file" in report[corrupt.name][0]
    assert any("sex: The Linfty distance" in p for p in report[drifted.name])
    assert any("age_approx: The approximate Jensen-Shannon" in p for p in report[drifted.name])
    assert (folder / corrupt.name).read_bytes() == data[:len(data) // 2]  # kept as it came
    shutil.rmtree(batch)


def test_rollback_serves_span_1s_model_again_without_deleting_any(site, span1, span2):
    before = versions(site["work"])
    result = medtfx("rollback", "--work-dir", str(site["work"]))
    assert result.returncode == 0, result.stdout + result.stderr
    after = versions(site["work"])
    assert after[:-1] == before and int(after[-1]) > int(before[-1])
    restored = os.path.join(site["work"], "serving", after[-1])
    original = os.path.join(site["work"], "serving", span1["versions"][0])
    for name in ("saved_model.pb", os.path.join("assets", "operating_threshold.txt")):
        with open(os.path.join(restored, name), "rb") as a, \
                open(os.path.join(original, name), "rb") as b:
            assert a.read() == b.read(), name


def test_history_lists_each_span_and_traces_span_2s_model_to_both_arrivals(site, span1,
                                                                           span2):
    result = medtfx("history", "--work-dir", str(site["work"]), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    runs = json.loads(result.stdout)["runs"]
    assert [r["spans"] for r in runs] == [[1], [2]]  # span 3 never reached the pipeline
    assert [r["pushed_version"] for r in runs] == [span1["versions"][0],
                                                  span2["versions"][-1]]
    result = medtfx("history", "--work-dir", str(site["work"]), "--json", "--version",
                    span2["versions"][-1])
    assert result.returncode == 0, result.stdout + result.stderr
    lineage = json.loads(result.stdout)
    (source,) = lineage["data"]
    assert source["span"] == 2 and source["input_base"] == str(site["data"])
    files = sorted(f for split in source["splits"] for f in split["files"])
    assert files == sorted(str(p) for p in (site["data"] / "span-2").glob("train*.tfrec"))
    assert lineage["baseline"] is not None  # span 1's model, which it warm-started from
    with open(site["data"] / "span-2" / "medtfx-span.json") as f:
        assert json.load(f)["arrivals"] == [1, 2]
