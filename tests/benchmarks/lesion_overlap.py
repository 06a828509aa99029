"""Do the Grad-CAM maps point at the lesion? The share of the heat inside it, on the sample.

    .venv/bin/python -m tests.benchmarks.lesion_overlap [--backbone pneumonia_cnn]
        [--size 64] [--epochs 3] [--images 4000] [--set trainer.FIELD=VALUE ...]

Generates the sample (`medtfx data synth`, whose generator knows each lesion's outline:
pipeline/data/synth.py lesion_masks), trains the config's network on folds 0-2 (default
config: the pneumonia notebook's CNN at 64 px, 3 epochs; no augmentation), and maps the
evaluation fold (train12-14) with modules/gradcam.py, the code the `explain` signature runs.
Prints the evaluation AUC and, over all images and over the malignant ones: the lesion's
share of the image (what a map spreading heat evenly would score), the share of each map's
heat inside the lesion, and that of the fold's mean map (a fixed centre prior: lesions sit
near the centre, so a map must beat this to show it follows each lesion).
"""

from __future__ import annotations

import argparse
import glob
import os
import tempfile

import numpy as np


def read_fold(data: str, shards: range, size: int) -> tuple:
    """(images [N, size, size, 3] as the Transform graph decodes them, labels, names)."""
    import tensorflow as tf

    from modules import features as F
    from modules.preprocessing import decode_images

    paths = [p for i in shards for p in glob.glob(os.path.join(data, f"train{i:02d}-*.tfrec"))]
    spec = {F.IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
            F.LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
            F.IMAGE_NAME_KEY: tf.io.FixedLenFeature([], tf.string)}
    parsed = [tf.io.parse_example(batch, spec)
              for batch in tf.data.TFRecordDataset(sorted(paths)).batch(256)]
    images = np.concatenate([decode_images(p[F.IMAGE_KEY], size).numpy() for p in parsed])
    labels = np.concatenate([p[F.LABEL_KEY].numpy() for p in parsed])
    names = [n.decode() for p in parsed for n in p[F.IMAGE_NAME_KEY].numpy()]
    return images, labels, names


def train(settings, images: np.ndarray, labels: np.ndarray):
    import tf_keras as keras

    from modules.trainer import build, compile_model

    keras.utils.set_random_seed(settings.seed)
    steps = len(images) // settings.batch_size
    model = build(settings)
    compile_model(model, settings, steps, 1.0)
    model.fit({"image": images}, labels.astype(np.float32), batch_size=settings.batch_size,
              epochs=settings.epochs, shuffle=True, verbose=2)
    return model


def heat_maps(model, images: np.ndarray, task) -> np.ndarray:
    """Each image's map at its size, as `explain` answers it."""
    import tensorflow as tf

    from modules.gradcam import class_activation_maps, to_image_size

    size, maps = images.shape[1], []
    for start in range(0, len(images), 128):
        cams, _ = class_activation_maps(model, {"image": tf.constant(images[start:start + 128])},
                                        task)
        maps.append(to_image_size(cams, size, size, size, "stretch").numpy())
    return np.concatenate(maps)


def inside_share(heat: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """The share of each map's heat on the lesion (NaN for a map with no heat)."""
    total = heat.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (heat * masks).sum(axis=(1, 2)) / total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default=None, help="default: the config's")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=None, help="default: the config's")
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    args = parser.parse_args(argv)
    from sklearn.metrics import roc_auc_score

    from pipeline.config import load_config
    from pipeline.data.synth import SynthSpec, generate, lesion_masks
    from pipeline.pipeline import run_settings

    overrides = [f"trainer.image_size={args.size}", *args.set,
                 *([f"trainer.backbone={args.backbone}"] if args.backbone else []),
                 *([f"trainer.epochs={args.epochs}"] if args.epochs else [])]
    settings = run_settings(load_config(None, overrides))
    with tempfile.TemporaryDirectory(prefix="lesion-overlap-") as data:
        generate(data, SynthSpec(images=args.images, size=args.size))
        model = train(settings, *read_fold(data, range(0, 9), args.size)[:2])
        images, labels, names = read_fold(data, range(12, 15), args.size)
        masks = lesion_masks(data)
    lesion = np.stack([masks[name] > 0.5 for name in names]).astype(np.float32)
    scores = model.predict({"image": images}, verbose=0).ravel()
    heat = heat_maps(model, images, settings.task)
    mean_map = np.broadcast_to(heat.mean(axis=0), heat.shape)
    print(f"{settings.backbone} at {args.size} px, {settings.epochs} epochs, "
          f"{args.images} images; evaluation fold {len(images)} images, "
          f"AUC {roc_auc_score(labels, scores):.3f}")
    for label, chosen in (("all", labels >= 0), ("malignant", labels == 1)):
        per_map = inside_share(heat[chosen], lesion[chosen])
        print(f"{label:>9} ({chosen.sum()}): lesion share of the image "
              f"{lesion[chosen].mean():.3f}; heat inside the lesion "
              f"{np.nanmean(per_map):.3f} (median {np.nanmedian(per_map):.3f}, "
              f"{np.isnan(per_map).sum()} maps without heat); the fold's mean map "
              f"{np.nanmean(inside_share(mean_map[chosen], lesion[chosen])):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
