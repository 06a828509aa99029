"""The tables of docs/performance.md come from work/bench.json (tests/benchmarks/doc_tables.py):
on a small bench.json, each table lands between its markers with the machine and the date,
the prose around them stays, and a run fills only the tables it measured."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.benchmarks.doc_tables import fill, render
from tests.helpers import REPO

MACHINE = {"cores": 2, "usable_cores": 2, "cpu_model": "AMD EPYC", "memory_gib": 23.5,
           "python": "3.11.7", "tensorflow": "2.21.0"}


def row(name, value, floor, goal="lower", **extra):
    return {"name": name, "value": value, "floor": floor, "unit": "s",
            "ratio": value / floor if floor else None, "goal": goal, **extra}


FULL = {
    "mode": "full", "machine": MACHINE, "date": "2026-12-06", "seconds": 330.0,
    "load_average": {"start": [0.18, 1.2, 1.7], "end": [1.9, 1.5, 1.6]},
    "sizes": {"images": 5000, "epochs": 2, "images_512": 75,
              "overrides_512": ["weights=none", "batch_size=4"]},
    "rows": [row("input pipeline 64 px (img/s)", 14470.0, 19750.0, "higher"),
             row("StatisticsGen 64 px (s)", 1.5, 0.15),
             row("AUC with TTA 2, 994 evaluation images", 0.8702, 0.8666, "higher",
                 seconds_per_image=0.00069, cost=1.7),
             row("AUC with TTA 8, 994 evaluation images", 0.8721, 0.8666, "higher",
                 seconds_per_image=0.00259, cost=6.3),
             row("training efficientnet_b0 64 px (img/s)", 198.6, 214.7, "higher")],
    "components": {"64 px": {"seconds": {"Trainer": 27.9}, "peak_mib": {"Trainer": 1144.0},
                             "wall": 60.2},
                   "512 px": {"seconds": {"Trainer": 51.0}, "peak_mib": {"Trainer": 4019.0},
                              "wall": 120.0}},
}

DOC = """# Performance

Hand-written prose.

<!-- bench:stages:begin -->
old stage figures
<!-- bench:stages:end -->

More prose.

<!-- bench:input:begin -->
<!-- bench:input:end -->
<!-- bench:tta:begin -->
<!-- bench:tta:end -->

<!-- bench:scale:begin -->
the scale figures of an earlier --scale run
<!-- bench:scale:end -->
"""


def test_a_bench_run_fills_its_tables_with_the_machine_and_the_date():
    doc = fill(DOC, render(FULL, FULL["date"]))
    stages = doc.split("<!-- bench:stages:begin -->")[1].split("<!-- bench:stages:end -->")[0]
    assert "Measured 2026-12-06 by `make bench` on 2 of 2 cores (AMD EPYC), 23.5 GiB" in stages
    assert "load average 0.18 when it started and 1.90 when it ended" in stages
    assert "| StatisticsGen 64 px (s) | 1.5 | 0.15 | 10 | lower |" in stages
    assert "| Trainer | 27.9 / 1,144 | 51.0 / 4,019 |" in stages
    assert "TTA" not in stages and "input pipeline" not in stages  # tables of their own
    assert "| input pipeline 64 px (img/s) | 14,470 | 19,750 | 0.733 | higher |" in doc
    assert "| training efficientnet_b0 64 px (img/s) | 199 | 215 | 0.925 | higher |" in doc
    # TTA 1 is the baseline: its AUC is each row's floor, its time a row's over its cost
    assert "| 1 | 0.8666 | 0.41 | 1.0 |\n| 2 | 0.8702 | 0.69 | 1.7 |\n| 8 | 0.8721 | 2.59 | 6.3 |" in doc
    assert "old stage figures" not in doc
    assert doc.startswith("# Performance\n\nHand-written prose.") and "More prose." in doc
    assert "the scale figures of an earlier --scale run" in doc  # not this run's to change
    assert fill(doc, render(FULL, FULL["date"])) == doc


def test_a_scale_run_fills_only_the_scale_table():
    component = {"seconds": 184.6, "images": 598, "peak_mib": 4285.0, "failed": False,
                 "floor": {"seconds": 177.0}}
    scale = {**FULL, "mode": "scale", "rows": [
        row("Evaluator peak, 200/shard vs 50/shard (MiB)", 4285.0, 4251.0, "<= 1.2")],
        "scale": {"sizes": [{"label": "200/shard", "train_images": 3000, "test_images": 992,
                             "wall": 541.0, "components": {"Evaluator": component}}],
                  "b6": {"images": 96, "tta": 8, "failed": [], "seconds": 162.0,
                         "seconds_per_image": 1.69, "peak_mib": 3125.0,
                         "trainer_peak_mib": 8086.0},
                  "extrapolation": {"assumptions": ["linear in images"], "releases": {
                      "2020 release": {"stages": {"Evaluator": {"seconds": 10368.0,
                                                                "peak_mib": 4300.0}},
                                       "seconds": 142920.0, "peak_mib": 8090.0}}}}}
    doc = fill(DOC, render(scale, "2026-12-06"))
    assert "old stage figures" in doc
    assert "by `make bench ARGS=--scale`" in doc
    assert "| Evaluator | 598 | 184.6 | 4,285 | 177.0 | 1.04 |  |" in doc
    assert "| Evaluator | 2.9 h / 4.2 GiB |\n| whole run / largest peak | 39.7 h / 7.9 GiB |" in doc
    assert "peak 3,125 MiB, 162 s (1.69 s an image)" in doc
    assert "- linear in images" in doc


def test_a_quick_run_or_a_missing_marker_changes_nothing(tmp_path):
    assert render({**FULL, "mode": "quick"}, "2026-12-06") == {}
    with pytest.raises(ValueError, match="no <!-- bench:tta:begin -->"):
        fill(DOC.replace("<!-- bench:tta:begin -->", ""), render(FULL, "2026-12-06"))
    bench, doc = tmp_path / "bench.json", tmp_path / "performance.md"
    bench.write_text(json.dumps({**FULL, "mode": "quick"}))
    doc.write_text(DOC)
    subprocess.run([sys.executable, "-m", "tests.benchmarks.doc_tables", "--bench", str(bench),
                    "--doc", str(doc)], cwd=REPO, check=True, capture_output=True)
    assert doc.read_text() == DOC
