"""The Beam half of `medtfx data import`: the images of each shard are read, checked and
written one at a time (records sorted by image name, so the same files give the same bytes;
only names travel through the shuffle, never image bytes, so memory stays flat on a
release of large PNGs).

It runs on whichever Beam runner the config's beam section names, like the other Beam
stages. A DICOM file is converted to an 8-bit PNG here, one file at a time on the workers
(pipeline/data/dicom.py). An image that does not decode or breaks the image limits, or a
DICOM file that does not convert, comes back as a problem naming its file; the caller
stops or quarantines.
"""

from __future__ import annotations

import json
import os

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from modules.settings import ImageLimits
from modules.task import TaskSpec
from pipeline.data.catalog import Problem
from pipeline.data.dicom import DicomError, to_png
from pipeline.data.shards import SHARD_RE, shard_filename
from pipeline.data.sources import DicomSettings

_BAD_FILE = ".import-problems.json"


class _WriteShard(beam.DoFn):
    """((kind, index), elements) -> the shard file, written one image at a time so that no
    worker holds more than one image; each unusable image goes to the "bad" output."""

    def __init__(self, data_root: str, out_dir: str, task: dict, limits: dict,
                 dicom: dict | None):
        self._data_root, self._out_dir = data_root, out_dir
        self._task, self._limits, self._dicom = task, limits, dicom

    def setup(self):
        from pipeline.data.input_checks import image_checker

        self.task = TaskSpec.model_validate(self._task)
        self.check = image_checker(ImageLimits.model_validate(self._limits))
        self.dicom = None if self._dicom is None else DicomSettings.model_validate(self._dicom)

    def _encoded(self, path: str) -> tuple[bytes, str | None]:
        """The image's bytes as the shard stores them (a DICOM file as PNG), or why not."""
        import tensorflow as tf

        with tf.io.gfile.GFile(os.path.join(self._data_root, path), "rb") as f:
            data = f.read()
        if self.dicom is None:
            return data, None
        try:
            return to_png(data, self.dicom), None
        except DicomError as err:
            return b"", str(err)

    def process(self, keyed):
        import tensorflow as tf

        from pipeline.data.input_checks import image_problem

        (kind, index), elements = keyed
        partial = os.path.join(self._out_dir, f".{kind}{index:02d}.partial")
        count = 0
        with tf.io.TFRecordWriter(partial) as writer:
            for path, label, group, metadata in sorted(elements, key=lambda e: e[0]):
                encoded, problem = self._encoded(path)
                problem = problem or image_problem(encoded, self.check)
                if problem:
                    yield beam.pvalue.TaggedOutput("bad", (path, problem))
                    continue
                writer.write(_example(self.task, encoded, path, label, group, metadata))
                count += 1
        if count:
            tf.io.gfile.rename(partial, os.path.join(self._out_dir,
                                                     shard_filename(kind, index, count)))
        else:
            tf.io.gfile.remove(partial)  # every image of the shard was unusable


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


def _write_problems(problems: list, out_dir: str) -> None:
    with open(os.path.join(out_dir, _BAD_FILE), "w") as f:
        json.dump(sorted(problems), f)


def write_shards(elements: list[tuple], data_root: str, out_dir: str, task: TaskSpec,
                 limits: ImageLimits, beam_args: list[str],
                 dicom: DicomSettings | None = None) -> tuple[dict[str, int], list[Problem]]:
    """Writes the shards of `elements`, (kind, index, path, label, group id, metadata)
    each, to `out_dir`; returns each shard's record count by file name, and the images
    that could not be used. With `dicom`, the files are DICOM, stored as PNG."""
    with beam.Pipeline(options=PipelineOptions(beam_args)) as pipeline:
        results = (pipeline
                   | beam.Create([((kind, index), rest) for kind, index, *rest in elements],
                                 reshuffle=False)
                   | beam.GroupByKey()
                   | beam.ParDo(_WriteShard(data_root, out_dir, task.model_dump(),
                                            limits.model_dump(),
                                            dicom and dicom.model_dump())).with_outputs("bad"))
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
