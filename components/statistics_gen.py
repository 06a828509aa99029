"""StatisticsGen in one TFDV pass over every split.

The pipeline has one split per shard (15 for the melanoma release), and TFX's StatisticsGen
builds a separate TFDV graph for each: on 2 cores its Beam graph construction and per-stage
start-up cost about 3.5 s a split, 57 s for 300 tiny images. Here every split is read into
one collection keyed by its name and TFDV computes all of them as slices of one graph
(11 s for the same images). The records are read inside that graph's first stage, from
the file names: a Beam Flatten of one read per split would hold every record in memory
in the DirectRunner (measured: +450 MiB for 150 MB more records), and the peak would grow
with the release. The output is what TFX's executor writes, split for split:
`Split-<name>/FeatureStats.pb`, each holding the one dataset of that split, so
ExampleValidator, the DataGate and the model card read it unchanged
(tests/test_statistics_gen.py compares the two).
"""

from __future__ import annotations

import os

import apache_beam as beam
import tensorflow_data_validation as tfdv
from tfx import types
from tfx.components.statistics_gen import executor as tfx_executor
from tfx.dsl.components.base import base_beam_component, base_beam_executor, executor_spec
from tfx.dsl.io import fileio
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter
from tfx.utils import io_utils

from pipeline.data.named_statistics import GenerateStatisticsByName, by_name
from pipeline.results.statistics import STATS_FILE


def split_files(examples: types.Artifact, splits: list[str]) -> list[tuple[str, str]]:
    """(split, file) for every record file of `splits`, in split order."""
    return [(split, path) for split in splits for path in sorted(fileio.glob(os.path.join(
        artifact_utils.get_split_uri([examples], split), "*")))]


class Executor(base_beam_executor.BaseBeamExecutor):
    """StatisticsGen's inputs, outputs and artifact properties; the statistics of every
    split from one GenerateStatisticsByName."""

    def Do(self, input_dict: dict, output_dict: dict, exec_properties: dict) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        examples = artifact_utils.get_single_instance(input_dict["examples"])
        splits = artifact_utils.decode_split_names(examples.split_names)
        statistics = artifact_utils.get_single_instance(output_dict["statistics"])
        statistics.split_names = artifact_utils.encode_split_names(splits)
        statistics.span = examples.span
        statistics.set_json_value_custom_property(
            tfx_executor.SAMPLE_RATE_BY_SPLIT_PROPERTY_NAME, {split: 1.0 for split in splits})
        schema = io_utils.SchemaReader().read(io_utils.get_only_uri_in_dir(
            artifact_utils.get_single_uri(input_dict["schema"])))
        all_splits_file = os.path.join(self._get_tmp_dir(), "statistics-by-split.pb")

        with self._make_beam_pipeline() as pipeline:
            _ = (pipeline
                 | "Files" >> beam.Create(split_files(examples, splits))
                 | "Statistics" >> GenerateStatisticsByName(tfdv.StatsOptions(schema=schema))
                 | "Write" >> tfdv.WriteStatisticsToBinaryFile(all_splits_file))
        for split, split_statistics in by_name(tfdv.load_stats_binary(all_splits_file),
                                               splits).items():
            folder = artifact_utils.get_split_uri([statistics], split)
            fileio.makedirs(folder)
            with fileio.open(os.path.join(folder, STATS_FILE), "wb") as f:
                f.write(split_statistics.SerializeToString())


class StatisticsGenSpec(ComponentSpec):
    """TFX's StatisticsGen inputs and output, with the executor's code fingerprint."""
    PARAMETERS = {"code": ExecutionParameter(type=str)}
    INPUTS = {"examples": ChannelParameter(type=standard_artifacts.Examples),
              "schema": ChannelParameter(type=standard_artifacts.Schema)}
    OUTPUTS = {"statistics": ChannelParameter(type=standard_artifacts.ExampleStatistics)}


class StatisticsGen(base_beam_component.BaseBeamComponent):
    """`code`: the fingerprint of this executor's code (pipeline/core/fingerprint.py)."""
    SPEC_CLASS = StatisticsGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)

    def __init__(self, examples: types.BaseChannel, schema: types.BaseChannel, code: str):
        super().__init__(spec=StatisticsGenSpec(
            examples=examples, schema=schema, code=code,
            statistics=types.Channel(type=standard_artifacts.ExampleStatistics)))
