"""Bad input ends with one line naming the file (and record), a non-zero exit, and no earlier
result overwritten."""

from __future__ import annotations

import glob
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from modules import features as F
from modules.settings import ImageLimits
from pipeline.cli.main import main
from pipeline.data.input_checks import check_shard
from pipeline.data.shards import list_shards
from tests.helpers import FAST_RUN, medtfx


def rewrite_record(path: str, index: int, change) -> str:
    """Applies `change` to record `index` of a shard in place; returns its image_name."""
    records = [r.numpy() for r in tf.data.TFRecordDataset(path)]
    example = tf.train.Example.FromString(records[index])
    change(example.features.feature)
    records[index] = example.SerializeToString()
    with tf.io.TFRecordWriter(path) as writer:
        for record in records:
            writer.write(record)
    return example.features.feature[F.IMAGE_NAME_KEY].bytes_list.value[0].decode()


def shard(root: str, index: int) -> str:
    return glob.glob(os.path.join(root, f"train{index:02d}-*.tfrec"))[0]


def no_image(root: str) -> tuple[str, str]:
    name = rewrite_record(shard(root, 3), 2, lambda f: f.pop(F.IMAGE_KEY))
    return shard(root, 3), f"record 2 ({name}): no 'image' feature"


def broken_image(root: str) -> tuple[str, str]:
    def corrupt(feature):
        feature[F.IMAGE_KEY].bytes_list.value[:] = [b"\xff\xd8\xff\xe0 not really a jpeg"]

    name = rewrite_record(shard(root, 5), 1, corrupt)
    return shard(root, 5), f"record 1 ({name}): image does not decode"


def decompression_bomb(root: str) -> tuple[str, str]:
    from tests.test_preprocessing import bomb

    def swap(feature):
        feature[F.IMAGE_KEY].bytes_list.value[:] = [bomb()]

    name = rewrite_record(shard(root, 6), 4, swap)
    return shard(root, 6), (f"record 4 ({name}): image declares 12000 x 12000 pixels, above "
                            "limits.image_pixels (40000000)")


def not_a_tfrecord(root: str) -> tuple[str, str]:
    with open(shard(root, 7), "w") as f:
        f.write("image_name,patient_id,target\nISIC_0000001,1,0\n")
    return shard(root, 7), "not a readable TFRecord file"


def wrong_count(root: str) -> tuple[str, str]:
    path = shard(root, 0)
    renamed = path.replace(".tfrec", "0.tfrec")  # train00-20.tfrec -> train00-200.tfrec
    os.rename(path, renamed)
    return renamed, "the file name says"


def missing_shard(root: str) -> tuple[str, str]:
    os.remove(shard(root, 14))
    return root, "expected train shards train00..train14"


def no_shards(root: str) -> tuple[str, str]:
    for path in glob.glob(os.path.join(root, "*.tfrec")):
        os.remove(path)
    return root, "no train shards"


def missing_root(root: str) -> tuple[str, str]:
    shutil.rmtree(root)
    return root, "data root does not exist"


@pytest.mark.parametrize("damage", [no_image, broken_image, decompression_bomb,
                                    not_a_tfrecord, wrong_count, missing_shard, no_shards,
                                    missing_root])
def test_bad_input_is_named_in_one_line_and_nothing_is_overwritten(damage, tiny_data,
                                                                   tmp_path, capfd):
    """`medtfx run` in this process (the console script calls the same `main`): the checks
    stop it before TensorFlow's start-up would matter."""
    data = str(tmp_path / "data")
    shutil.copytree(tiny_data, data)
    culprit, message = damage(data)
    work = tmp_path / "work"
    (work / "serving" / "1").mkdir(parents=True)
    (work / "serving" / "1" / "saved_model.pb").write_bytes(b"an earlier pushed model")
    (work / "run_summary.json").write_text('{"earlier": "run"}')
    capfd.readouterr()  # TensorFlow's start-up in this process, before the command

    status = main(["run", "--data-root", data, "--work-dir", str(work), *FAST_RUN])

    out = capfd.readouterr()
    assert status == 1
    errors = [line for line in out.out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out.out
    assert culprit in errors[0] and message in errors[0], errors[0]
    assert out.err == ""
    assert (work / "run_summary.json").read_text() == '{"earlier": "run"}'
    assert os.listdir(work / "serving") == ["1"]
    assert not (work / "pipeline").exists()  # stopped before any component ran


def test_a_16_bit_png_passes_the_checks(tiny_data, tmp_path):
    """Radiology exports 16-bit PNGs; the checks decode them as the Transform graph does."""
    from tests.test_preprocessing import png16

    data = str(tmp_path / "data")
    shutil.copytree(tiny_data, data)

    def deepen(feature):
        ramp = np.linspace(0, 65535, 32 * 32).astype(np.uint16).reshape(32, 32)
        feature[F.IMAGE_KEY].bytes_list.value[:] = [png16(ramp)]

    rewrite_record(shard(data, 0), 0, deepen)
    assert check_shard(list_shards(data, kind="train")[0], ImageLimits()) is None


def test_unknown_config_field_is_a_usage_error(tmp_path):
    result = medtfx("run", "--work-dir", str(tmp_path), "--set", "image_sise=64")
    assert result.returncode == 2
    assert "image_sise: no such config field" in result.stderr


def test_every_command_has_help():
    for command in (["--help"], ["run", "--help"], ["data", "--help"],
                    ["data", "synth", "--help"], ["history", "--help"]):
        result = medtfx(*command)
        assert result.returncode == 0 and "usage: medtfx" in result.stdout
