"""StatisticsGen, the schema and ExampleValidator on the pinned TFDV 1.16.1 and
ml-metadata 1.17.1, with Beam's multi-process runner (whose workers import TFDV before tfx),
and the gate that stops the pipeline on anomalies."""

from __future__ import annotations

import glob
import os
import shutil

import pytest
from tfx import v1 as tfx
from tfx.orchestration.pipeline import RunOptions

from components.data_gate import DataAnomaliesError
from pipeline.results.anomalies import describe_anomalies
from modules import features as F
from pipeline.config import load_config
from pipeline.pipeline import create_pipeline
from tests.test_input_checks import rewrite_record

pytestmark = pytest.mark.slow

def run_validation(data_root: str, work: str) -> None:
    """The pipeline's own components up to DataGate (a partial run) on `data_root`."""
    config = load_config(None, ["direct_running_mode=multi_processing", "direct_num_workers=2"])
    pipeline = create_pipeline(
        config, data_root=data_root, pipeline_root=os.path.join(work, "root"),
        serving_dir=os.path.join(work, "serving"),
        metadata_connection_config=tfx.orchestration.metadata
        .sqlite_metadata_connection_config(os.path.join(work, "metadata.sqlite")))
    tfx.orchestration.LocalDagRunner().run(pipeline, run_options=RunOptions(
        to_nodes=["DataGate"]))


def anomalies_dir(work: str) -> str:
    (path,) = glob.glob(os.path.join(work, "root", "ExampleValidator", "anomalies", "*"))
    return path


def test_an_out_of_domain_code_stops_the_pipeline_naming_only_its_shard_and_feature(
        tiny_data, tmp_path):
    data = str(tmp_path / "data")
    shutil.copytree(tiny_data, data)
    path = glob.glob(os.path.join(data, "train04-*.tfrec"))[0]
    rewrite_record(path, 0, lambda f: f[F.SEX_KEY].int64_list.value.__setitem__(0, 7))

    def release_codes(feature) -> None:
        """Codes beyond our sample's: another release's factorized source and diagnosis."""
        feature[F.SOURCE_KEY].int64_list.value[:] = [3]
        feature[F.DIAGNOSIS_KEY].int64_list.value[:] = [12]

    rewrite_record(glob.glob(os.path.join(data, "train07-*.tfrec"))[0], 0, release_codes)
    work = str(tmp_path / "work")

    with pytest.raises(DataAnomaliesError) as raised:
        run_validation(data, work)
    message = str(raised.value)
    assert message.startswith("data anomalies against the schema: train04: sex:")
    splits = [f"train{i:02d}" for i in range(15)]
    clean = [split for split in splits if split != "train04"]
    assert describe_anomalies(anomalies_dir(work), clean) == []  # the other 14 pass, train07 too
    stats = glob.glob(os.path.join(work, "root", "StatisticsGen", "statistics", "*", "Split-*"))
    assert sorted(os.path.basename(s) for s in stats) == [f"Split-{s}" for s in splits]
    assert not glob.glob(os.path.join(work, "root", "Transform"))
