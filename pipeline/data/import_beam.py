"""The Beam half of `medtfx data import`: read and check every image, build its record,
and write each shard (records sorted by image name, so the same files give the same bytes).

It runs on whichever Beam runner the config's beam section names, like the other Beam
stages. An image that does not decode or breaks the image limits comes back as a problem
naming its file; the caller stops or quarantines.
"""

from __future__ import annotations

import json
import os

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from modules.settings import ImageLimits
from modules.task import TaskSpec
from pipeline.data.catalog import Problem
from pipeline.data.shards import SHARD_RE, shard_filename

_BAD_FILE = ".import-problems.json"


class _ToExample(beam.DoFn):
    """(kind, index, path, label, group, metadata) -> ((kind, index), (path, record)), or
    a problem on the "bad" output."""

    def __init__(self, data_root: str, task: dict, limits: dict):
        self._data_root, self._task, self._limits = data_root, task, limits

    def setup(self):
        from pipeline.data.input_checks import image_checker

        self.task = TaskSpec.model_validate(self._task)
        self.check = image_checker(ImageLimits.model_validate(self._limits))

    def process(self, element):
        import tensorflow as tf

        from pipeline.data.input_checks import image_problem

        kind, index, path, label, group, metadata = element
        with tf.io.gfile.GFile(os.path.join(self._data_root, path), "rb") as f:
            encoded = f.read()
        problem = image_problem(encoded, self.check)
        if problem:
            yield beam.pvalue.TaggedOutput("bad", (path, problem))
            return
        yield (kind, index), (path, _example(self.task, encoded, path, label, group, metadata))


def _example(task: TaskSpec, encoded: bytes, path: str, label: int | None, group: int,
             metadata: dict[str, int]) -> bytes:
    import tensorflow as tf

    def ints(v: int) -> tf.train.Feature:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))

    def raw(v: bytes) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))

    features = {task.image_key: raw(encoded), task.image_name_key: raw(path.encode()),
                task.group_key: ints(group),
                **{key: ints(metadata.get(key, task.missing)) for key in task.metadata}}
    if label is not None:
        features[task.label.key] = ints(label)
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString(
        deterministic=True)  # map order is otherwise per process


def _write_shard(keyed, out_dir: str) -> str:
    import tensorflow as tf

    (kind, index), records = keyed
    records = sorted(records)
    path = os.path.join(out_dir, shard_filename(kind, index, len(records)))
    with tf.io.TFRecordWriter(path) as writer:
        for _, record in records:
            writer.write(record)
    return path


def _write_problems(problems: list, out_dir: str) -> None:
    with open(os.path.join(out_dir, _BAD_FILE), "w") as f:
        json.dump(sorted(problems), f)


def write_shards(elements: list[tuple], data_root: str, out_dir: str, task: TaskSpec,
                 limits: ImageLimits,
                 beam_args: list[str]) -> tuple[dict[str, int], list[Problem]]:
    """Writes the shards of `elements`, (kind, index, path, label, group id, metadata)
    each, to `out_dir`; returns each shard's record count by file name, and the images
    that could not be used."""
    with beam.Pipeline(options=PipelineOptions(beam_args)) as pipeline:
        results = (pipeline
                   | beam.Create(elements, reshuffle=False)
                   | beam.ParDo(_ToExample(data_root, task.model_dump(), limits.model_dump())
                                ).with_outputs("bad", main="good"))
        _ = (results.good | beam.GroupByKey()
             | beam.Map(_write_shard, out_dir=out_dir))
        _ = (results.bad | beam.combiners.ToList()
             | beam.Map(_write_problems, out_dir=out_dir))
    bad_file = os.path.join(out_dir, _BAD_FILE)
    with open(bad_file) as f:
        problems = [Problem(path, what) for path, what in json.load(f)]
    os.remove(bad_file)
    written = {}
    for name in sorted(os.listdir(out_dir)):
        match = SHARD_RE.match(name)
        if match:
            written[name] = int(match["count"])
    return written, problems
