"""The synthetic dataset: public layout, triple stratification, determinism, stated AUC."""

from __future__ import annotations

import collections
import glob
import io
import math
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from modules import features as F
from modules.errors import MedtfxError
from pipeline.data.shards import list_shards
from pipeline.data.synth import SynthSpec, _draw_patients, best_auc, generate, lesion_masks
from tests.helpers import medtfx, shard_records

TRAIN_KEYS = {F.IMAGE_KEY, F.IMAGE_NAME_KEY, F.PATIENT_KEY, F.SEX_KEY, F.AGE_KEY, F.SITE_KEY,
              F.DIAGNOSIS_KEY, F.LABEL_KEY}
TEST_KEYS = TRAIN_KEYS - {F.DIAGNOSIS_KEY, F.LABEL_KEY}


def read_examples(path: str) -> list[tf.train.Example]:
    return [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(path)]


def value(example: tf.train.Example, key: str):
    feature = example.features.feature[key]
    kind = feature.WhichOneof("kind")
    values = getattr(feature, kind).value
    assert len(values) == 1, f"{key} must be scalar"
    return kind, values[0]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("synth"))
    generate(root, SynthSpec(images=3000, size=16, seed=3))
    return root


def test_files_follow_the_public_layout(dataset):
    shards = list_shards(dataset)
    assert [s.split_name for s in shards if s.kind == "train"] == [f"train{i:02d}"
                                                                   for i in range(15)]
    assert [s.split_name for s in shards if s.kind == "test"] == [f"test{i:02d}"
                                                                  for i in range(4)]
    for shard in shards:
        examples = read_examples(shard.path)
        assert len(examples) == shard.count  # the number in the name is the record count
        for example in examples:
            keys = set(example.features.feature)
            assert keys == (TRAIN_KEYS if shard.kind == "train" else TEST_KEYS)
            for key in keys:
                kind, _ = value(example, key)
                assert kind == ("bytes_list" if key in (F.IMAGE_KEY, F.IMAGE_NAME_KEY)
                                else "int64_list")


def test_codes_stay_in_their_domains_with_minus_one_for_missing(dataset):
    seen = collections.defaultdict(set)
    for path in glob.glob(os.path.join(dataset, "train*.tfrec")):
        for example in read_examples(path):
            for key in (F.SEX_KEY, F.SITE_KEY, F.DIAGNOSIS_KEY, F.LABEL_KEY):
                seen[key].add(value(example, key)[1])
    assert seen[F.SEX_KEY] <= {-1, 0, 1}
    assert seen[F.SITE_KEY] <= set(range(-1, len(F.SITES))) and -1 in seen[F.SITE_KEY]
    assert seen[F.LABEL_KEY] == {0, 1}
    assert seen[F.DIAGNOSIS_KEY] <= set(range(len(F.DIAGNOSES)))


def test_triple_stratification(dataset):
    patients_in = collections.defaultdict(set)
    images_of = collections.Counter()
    per_shard = []
    for shard in list_shards(dataset):
        malignant = images = 0
        for example in read_examples(shard.path):
            patient = value(example, F.PATIENT_KEY)[1]
            patients_in[patient].add(shard.split_name)
            images_of[(shard.split_name, patient)] += 1
            images += 1
            if shard.kind == "train":
                malignant += value(example, F.LABEL_KEY)[1]
        if shard.kind == "train":
            per_shard.append((shard.split_name, malignant, images))

    # 1. Every patient lives in exactly one shard (train and test alike).
    assert all(len(shards) == 1 for shards in patients_in.values())
    # 2. The malignant count is the same in every train shard, to within two.
    malignant = [m for _, m, _ in per_shard]
    assert max(malignant) - min(malignant) <= 2, per_shard
    # 3. Each shard has the same number of patients with 1, 2, ... N images, to within one.
    by_count = collections.defaultdict(collections.Counter)
    for (shard, _), count in images_of.items():
        if shard.startswith("train"):
            by_count[count][shard] += 1
    for count, shards in by_count.items():
        counts = [shards.get(f"train{i:02d}", 0) for i in range(15)]
        assert max(counts) - min(counts) <= 1, (count, counts)


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    spec = SynthSpec(images=60, size=16, seed=11)
    for name in ("a", "b"):
        generate(str(tmp_path / name), spec)
    generate(str(tmp_path / "c"), SynthSpec(images=60, size=16, seed=12))
    files = sorted(os.listdir(tmp_path / "a"))
    assert files == sorted(os.listdir(tmp_path / "b"))
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    shard = next(n for n in files if n.startswith("train00"))
    other = next(n for n in os.listdir(tmp_path / "c") if n.startswith("train00"))
    assert (tmp_path / "a" / shard).read_bytes() != (tmp_path / "c" / other).read_bytes()


def test_70k_release_carries_source_and_no_diagnosis(tmp_path):
    generate(str(tmp_path), SynthSpec(images=60, size=16, release="70k"))
    example = read_examples(glob.glob(str(tmp_path / "train00-*.tfrec"))[0])[0]
    keys = set(example.features.feature)
    assert F.SOURCE_KEY in keys and F.DIAGNOSIS_KEY not in keys and F.LABEL_KEY in keys


def test_grayscale_share_writes_single_channel_jpegs(tmp_path):
    generate(str(tmp_path), SynthSpec(images=60, size=24, grayscale_share=1.0))
    example = read_examples(glob.glob(str(tmp_path / "train03-*.tfrec"))[0])[0]
    image = Image.open(io.BytesIO(value(example, F.IMAGE_KEY)[1]))
    assert image.format == "JPEG" and image.mode == "L" and image.size == (24, 24)


def test_refuses_to_overwrite_existing_shards(tmp_path):
    generate(str(tmp_path), SynthSpec(images=60, size=16))
    before = {n: (tmp_path / n).read_bytes() for n in os.listdir(tmp_path)}
    with pytest.raises(MedtfxError, match="not overwriting"):
        generate(str(tmp_path), SynthSpec(images=60, size=16, seed=5))
    assert before == {n: (tmp_path / n).read_bytes() for n in os.listdir(tmp_path)}


def test_best_auc_follows_from_the_generator():
    phi = lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2)))  # noqa: E731
    clean = best_auc(SynthSpec(signal=1.0, site_signal=(), label_noise=0.0))
    assert clean["image"] == pytest.approx(phi(2 / math.sqrt(2)), abs=1e-4)
    noisy = best_auc(SynthSpec(signal=1.0, site_signal=(), label_noise=0.2))
    assert noisy["image"] == pytest.approx(0.5 + 0.8 * (phi(math.sqrt(2)) - 0.5), abs=1e-4)
    removed = best_auc(SynthSpec(site_signal=(("torso", 0.0),)))
    assert removed["per_site"]["torso"] == 0.5
    assert removed["image_and_metadata"] > removed["image"]  # age and site add information


def test_stated_auc_matches_the_latent_attributes_of_drawn_lesions():
    """An ideal reader sums the four attributes; its AUC on drawn lesions is the stated one."""
    spec = SynthSpec(images=40000)
    lesions = [lesion for patient in _draw_patients(spec, spec.images,
                                                    np.random.default_rng(0), 0, 0)
               for lesion in patient]
    score = np.array([sum(lesion.attributes) for lesion in lesions])
    target = np.array([lesion.target for lesion in lesions])
    ranks = np.argsort(np.argsort(score)) + 1
    positives = target == 1
    auc = (ranks[positives].sum() - positives.sum() * (positives.sum() + 1) / 2) / (
        positives.sum() * (~positives).sum())
    assert auc == pytest.approx(best_auc(spec)["image"], abs=0.01)


def test_synth_command(tmp_path):
    result = medtfx("data", "synth", "--out", str(tmp_path / "d"), "--images", "45",
                    "--size", "16", "--site-signal", "torso=0")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "wrote 15 train shards (45 images)" in result.stdout
    assert "best attainable AUC" in result.stdout
    assert result.stderr == ""  # TensorFlow's start-up chatter went to the log
    # Another process, the same bytes (protobuf's map order changes between processes).
    generate(str(tmp_path / "here"), SynthSpec(images=45, size=16, site_signal=(("torso", 0.0),)))
    for name in os.listdir(tmp_path / "here"):
        assert (tmp_path / "here" / name).read_bytes() == (tmp_path / "d" / name).read_bytes()
    bad = medtfx("data", "synth", "--out", str(tmp_path / "e"), "--images", "3")
    assert bad.returncode == 2 and "--images must be at least 30" in bad.stdout


def test_each_labelled_images_lesion_mask_covers_the_dark_lesion_drawn(tiny_data):
    """lesion_masks, which the Grad-CAM lesion-overlap benchmark reads, draws the outline of
    the lesion each stored image shows: its pixels are darker than the skin around them."""
    masks = lesion_masks(tiny_data)
    assert len(masks) == 300
    for record in shard_records(tiny_data, "train0[0-1]-*.tfrec"):
        feature = tf.train.Example.FromString(record).features.feature
        name = feature[F.IMAGE_NAME_KEY].bytes_list.value[0].decode()
        image = np.asarray(Image.open(io.BytesIO(feature[F.IMAGE_KEY].bytes_list.value[0]))
                           .convert("L"), dtype=float) / 255
        inside = masks[name] > 0.5
        assert inside.shape == image.shape and 0.02 < inside.mean() < 0.6
        midway = (image[inside].mean() + image[~inside].mean()) / 2
        assert image[inside].mean() < image[~inside].mean() - 0.15, name
        assert np.mean((image < midway) == inside) > 0.97, name  # the same outline
