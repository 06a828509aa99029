"""The gate on the sample data, with the default config: a good model is blessed and pushed;
with one anatomic site's signal removed it is not, and the summary names that site."""

from __future__ import annotations

import json

import pytest

from pipeline.sample.synth import SynthSpec, generate
from tests.helpers import medtfx

pytestmark = pytest.mark.slow

LOWER_EXTREMITY = "anatomic site = lower extremity"


def run_default(data: str, work, *extra: str) -> dict:
    result = medtfx("run", "--data-root", data, "--work-dir", str(work), *extra)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads((work / "run_summary.json").read_text())


def test_a_good_model_on_the_sample_data_is_blessed_and_pushed(tmp_path):
    data = str(tmp_path / "data")
    generate(data, SynthSpec())  # the sample dataset `make run` generates
    summary = run_default(data, tmp_path / "work")
    assert summary["blessed"], summary["failed_checks"]
    assert summary["pushed_model"] and summary["failed_checks"] == []
    overall = summary["metrics"]["overall"]
    assert overall["auc_ci"][0] < overall["auc"] < overall["auc_ci"][1]
    assert overall["sensitivity"] >= summary["target_sensitivity"]


def test_a_site_without_signal_blocks_the_model_and_is_named(tmp_path):
    data = str(tmp_path / "data")
    generate(data, SynthSpec(site_signal=(("lower extremity", 0.0),)))
    # 48 px keeps the lesions' signal at half the training time of the default 64.
    summary = run_default(data, tmp_path / "work", "--set", "image_size=48")
    assert not summary["blessed"] and summary["pushed_model"] is None
    failed = {(c["metric"], c["slice"]) for c in summary["failed_checks"]}
    assert ("auc", LOWER_EXTREMITY) in failed
    assert summary["metrics"][LOWER_EXTREMITY]["gated"]
    other_sites = [name for name, m in summary["metrics"].items()
                   if name.startswith("anatomic site = ") and "&" not in name
                   and name != LOWER_EXTREMITY and m["gated"]]
    assert other_sites and all((("auc", name) not in failed) for name in other_sites), failed
