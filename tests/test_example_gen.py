"""ImportExampleGen's copying executor: every split holds its input shards' records byte for
byte and in order, uncompressed and readable by TFX's readers; a damaged shard fails the
component naming the file and the record; the executor's code is in its cache key."""

from __future__ import annotations

import glob
import json
import os
import shutil
import struct

import pytest
from tfx.components.util import tfxio_utils
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_artifacts
from tfx.utils import proto_utils
from tfx_bsl.tfxio import dataset_options

from components.example_gen import Executor
from components.tfrecord_copy import CHUNK_BYTES, DamagedRecordError, copy_records
from modules.errors import MedtfxError
from pipeline.config import load_config
from pipeline.data.shards import TEST_SHARDS_PATTERN, TEST_SPLIT
from pipeline.core.fingerprint import code_fingerprint
from tests.helpers import beam_context, shard_records

TRAIN_SPLITS = [f"train{i:02d}" for i in range(15)]
ONE_TEST_SPLIT = example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(
    splits=[example_gen_pb2.SplitConfig.Split(name=TEST_SPLIT, hash_buckets=1)]))


def run_executor(input_base: str, root, splits: dict[str, str],
                 output_config: example_gen_pb2.Output) -> standard_artifacts.Examples:
    """The executor on `splits` (name: pattern), with the properties TFX's driver passes."""
    examples = standard_artifacts.Examples()
    examples.uri = str(root / "examples")
    input_config = example_gen_pb2.Input(splits=[example_gen_pb2.Input.Split(
        name=name, pattern=pattern) for name, pattern in splits.items()])
    Executor(beam_context(str(root / "tmp"))).Do({}, {"examples": [examples]}, {
        "input_base": input_base, "input_config": proto_utils.proto_to_json(input_config),
        "output_config": proto_utils.proto_to_json(output_config),
        "output_data_format": example_gen_pb2.FORMAT_TF_EXAMPLE,
        "output_file_format": example_gen_pb2.FORMAT_TFRECORDS_GZIP})
    return examples


def tfx_read(examples: standard_artifacts.Examples, split: str) -> list[bytes]:
    """A split's records as TFX's readers (tfx-bsl, given the artifact) see them."""
    tfxio = tfxio_utils.get_split_tfxio([examples], split, ["test"], raw_record_column_name="raw")
    options = dataset_options.RecordBatchesOptions(batch_size=1000, shuffle=False, num_epochs=1)
    return [record for batch in tfxio.RecordBatches(options)
            for (record,) in batch.column("raw").to_pylist()]


def file_bytes(paths: list[str]) -> bytes:
    content = b""
    for path in paths:
        with open(path, "rb") as f:
            content += f.read()
    return content


def test_every_split_is_a_verbatim_uncompressed_copy_of_its_shard(tiny_data, tmp_path):
    examples = run_executor(tiny_data, tmp_path,
                            {name: f"{name}-*.tfrec" for name in TRAIN_SPLITS},
                            example_gen_pb2.Output())

    assert artifact_utils.decode_split_names(examples.split_names) == TRAIN_SPLITS
    for split in TRAIN_SPLITS:
        written = glob.glob(os.path.join(examples.uri, f"Split-{split}", "*"))
        assert len(written) == 1 and not written[0].endswith(".gz"), written
        assert file_bytes(written) == file_bytes(glob.glob(
            os.path.join(tiny_data, f"{split}-*.tfrec"))), split
        assert tfx_read(examples, split) == shard_records(tiny_data, f"{split}-*.tfrec"), split


def test_one_output_split_holds_every_test_shard_in_order(tiny_data, tmp_path):
    examples = run_executor(tiny_data, tmp_path, {TEST_SPLIT: TEST_SHARDS_PATTERN},
                            ONE_TEST_SPLIT)

    assert artifact_utils.decode_split_names(examples.split_names) == [TEST_SPLIT]
    written = sorted(glob.glob(os.path.join(examples.uri, f"Split-{TEST_SPLIT}", "*")))
    shards = sorted(glob.glob(os.path.join(tiny_data, TEST_SHARDS_PATTERN)))
    assert len(written) == len(shards) == 4
    assert file_bytes(written) == file_bytes(shards)
    assert tfx_read(examples, TEST_SPLIT) == shard_records(tiny_data, TEST_SHARDS_PATTERN)


def test_an_output_config_that_would_split_files_is_refused(tiny_data, tmp_path):
    two = example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(splits=[
        example_gen_pb2.SplitConfig.Split(name="train", hash_buckets=2),
        example_gen_pb2.SplitConfig.Split(name="eval", hash_buckets=1)]))
    with pytest.raises(MedtfxError, match="output_config names 2 splits .train, eval.; give "
                                          "none .a split per input split. or one"):
        run_executor(tiny_data, tmp_path, {"train": "train*.tfrec"}, two)


def record_offsets(path: str) -> list[int]:
    """Where each record of a TFRecord file starts."""
    with open(path, "rb") as f:
        content = f.read()
    offsets, at = [], 0
    while at < len(content):
        offsets.append(at)
        at += 12 + struct.unpack_from("<Q", content, at)[0] + 4
    return offsets


def flip_byte(path: str, at: int) -> None:
    with open(path, "r+b") as f:
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0xFF]))


@pytest.mark.parametrize("damage, message", [
    (lambda path, starts: flip_byte(path, starts[3] + 12 + 40),
     "record 3: its data fails its checksum"),
    (lambda path, starts: flip_byte(path, starts[2] + 1),
     "record 2: its length fails its checksum"),
    (lambda path, starts: os.truncate(path, starts[5] + 30),
     "record 5: the file ends inside its data"),
    (lambda path, starts: os.truncate(path, starts[4] - 2),
     "record 3: the file ends before its data checksum"),
    (lambda path, starts: os.truncate(path, starts[4] + 5),
     "record 4: the file ends inside its header"),
])
def test_a_damaged_shard_fails_naming_the_file_and_the_record(tiny_data, tmp_path, damage,
                                                              message):
    (shard,) = glob.glob(os.path.join(tiny_data, "train03-*.tfrec"))
    damaged = str(tmp_path / "data" / os.path.basename(shard))
    os.makedirs(os.path.dirname(damaged))
    shutil.copy(shard, damaged)
    damage(damaged, record_offsets(damaged))

    with pytest.raises(DamagedRecordError) as raised:
        run_executor(str(tmp_path / "data"), tmp_path, {"train03": "train03-*.tfrec"},
                     example_gen_pb2.Output())
    assert f"{damaged}: {message}" in str(raised.value)
    assert len(str(raised.value).splitlines()) == 1


def test_a_record_larger_than_a_chunk_is_copied_whole(tmp_path):
    import tensorflow as tf

    records = [b"a", os.urandom(2 * CHUNK_BYTES + 123), b"", b"b" * 1000]
    source = str(tmp_path / "big.tfrec")
    with tf.io.TFRecordWriter(source) as writer:
        for record in records:
            writer.write(record)
    assert copy_records(source, str(tmp_path / "copy")) == len(records)
    assert file_bytes([str(tmp_path / "copy")]) == file_bytes([source])


def test_the_executors_fingerprint_reaches_both_example_gens(tmp_path):
    from pipeline.pipeline import create_pipeline

    config = load_config(None, ["scoring.test_shards=true"])
    pipeline = create_pipeline(config, data_root="/data", pipeline_root=str(tmp_path),
                               serving_dir=str(tmp_path / "serving"))
    nodes = {node.id: node for node in pipeline.components}
    for name in ("ImportExampleGen", "TestExampleGen"):
        custom = json.loads(nodes[name].exec_properties["custom_config"])
        assert custom["custom_config"]["value"] == {
            "code": code_fingerprint("components.example_gen")}, name
