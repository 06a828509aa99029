"""run_fn on a tiny dataset, called the way TFX's Trainer executor calls it."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from modules import features as F
from modules.artifacts import VALIDATION_FILE
from modules.augment import orient
from modules.calibration import CalibrationMap
from modules.callbacks import BestEpoch
from modules.export import keras_path
from modules.inputs import balanced_batches, class_weights
from modules.model import ModelConfigError, load_weights
from modules.schedule import RampSustainDecay
from modules.settings import TrainerSettings
from modules.signatures import predict
from modules.strategy import choose_strategy
from modules.task import METADATA_KEY
from modules.trainer import build, run_fn, schedule_steps, stages, warm_start
from pipeline.config import load_config
from pipeline.pipeline import run_settings
from tests.helpers import serve_both_ways, shard_records, trainer_fn_args, write_trainer_inputs

def train(data: str, root, overrides: list[str], base_model: str | None = None) -> dict:
    """run_fn on the tiny dataset as the Trainer executor calls it; returns its outputs."""
    write_trainer_inputs(data, root)
    fn_args, config = trainer_fn_args(root, overrides, base_model)
    run_fn(fn_args)
    return {"model": fn_args.serving_model_dir, "run": fn_args.model_run_dir,
            "artifact": str(root / "model"), "config": config}


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory) -> dict:
    return train(tiny_data, tmp_path_factory.mktemp("trainer"), [])


@pytest.fixture(scope="module")
def warm_tta(tiny_data, tmp_path_factory, trained) -> dict:
    """A second model warm-started from the first, with TTA, balanced sampling and a
    frozen first epoch."""
    return train(tiny_data, tmp_path_factory.mktemp("warm"),
                 ["tta=4", "class_balance=sampling", "frozen_epochs=1", "warm_start=true"],
                 base_model=trained["artifact"])


def test_exported_model_scores_unlabelled_test_examples(trained, tiny_data):
    model = tf.saved_model.load(trained["model"])
    records = shard_records(tiny_data, "test00-*.tfrec")
    assert F.LABEL_KEY not in tf.train.Example.FromString(records[0]).features.feature
    scores = model.signatures["serving_default"](examples=tf.constant(records))["probability"]
    assert scores.shape == (len(records), 1)
    assert np.all((scores.numpy() >= 0) & (scores.numpy() <= 1))


def test_slicing_signature_buckets_ages_and_marks_missing(trained):
    model = tf.saved_model.load(trained["model"])

    def example(age: int) -> bytes:
        return tf.train.Example(features=tf.train.Features(feature={
            F.AGE_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[age]))
        })).SerializeToString()

    ages = [5, 30, 44, 45, 74, 75, 90, -1]
    buckets = model.signatures["slicing_features"](examples=tf.constant(
        [example(a) for a in ages]))[F.AGE_BUCKET_KEY].numpy().tolist()
    assert trained["config"].task.numeric[0].buckets == [30, 45, 60, 75]
    assert buckets == [0, 1, 1, 2, 3, 4, 4, -1]


def test_trains_exactly_the_configured_steps_and_logs_for_tensorboard(trained):
    with open(os.path.join(trained["artifact"], VALIDATION_FILE)) as f:
        assert json.load(f)["steps_run"] == 4
    assert any("events.out.tfevents" in name for _, _, files in os.walk(trained["run"])
               for name in files)


def test_steps_come_from_example_counts_unless_given():
    assert schedule_steps(None, train_examples=1000, batch_size=32, epochs=5) == (5, 31)
    assert schedule_steps(20, train_examples=0, batch_size=32, epochs=5) == (5, 4)
    assert schedule_steps(3, train_examples=0, batch_size=32, epochs=5) == (3, 1)


def test_learning_rate_ramps_sustains_and_decays_per_step():
    lr = RampSustainDecay(start=1e-5, peak=1e-3, minimum=1e-6, ramp_steps=10,
                          sustain_steps=5, decay=0.5, steps_per_epoch=10)
    values = [float(lr(step)) for step in (0, 5, 10, 14, 15, 25, 35)]
    assert values[0] == pytest.approx(1e-5)
    assert values[1] == pytest.approx((1e-5 + 1e-3) / 2)
    assert values[2] == values[3] == pytest.approx(1e-3)
    assert values[4] == pytest.approx(1e-3)
    assert values[5] == pytest.approx((1e-3 - 1e-6) * 0.5 + 1e-6)  # one epoch of decay
    assert values[6] == pytest.approx((1e-3 - 1e-6) * 0.25 + 1e-6)


def encoded_images(records: list[bytes]) -> list[bytes]:
    return [tf.train.Example.FromString(r).features.feature[F.IMAGE_KEY].bytes_list.value[0]
            for r in records]


@pytest.mark.parametrize("which", ["trained", "warm_tta"])
def test_serving_image_and_serving_default_give_the_same_score(which, request, tiny_data):
    model = tf.saved_model.load(request.getfixturevalue(which)["model"])
    records = shard_records(tiny_data, "test00-*.tfrec")[:16]
    from_examples = model.signatures["serving_default"](examples=tf.constant(records))
    from_images = model.signatures["serving_image"](
        image=tf.constant(encoded_images(records)))
    np.testing.assert_allclose(from_images["probability"], from_examples["probability"],
                               atol=1e-5)
    np.testing.assert_array_equal(from_images["decision"], from_examples["decision"])


def test_tta_averages_the_keras_model_over_orientations(warm_tta, tiny_data):
    model = tf.saved_model.load(warm_tta["model"])
    records = tf.constant(shard_records(tiny_data, "test00-*.tfrec")[:8])
    served = model.signatures["serving_default"](examples=records)["probability"].numpy()
    transformed = model.signatures["transform_features"](examples=records)
    net = build(run_settings(warm_tta["config"]))
    load_weights(net, keras_path(warm_tta["model"]))
    mean = np.mean([net({F.IMAGE_KEY: orient(transformed[F.IMAGE_KEY], k)}).numpy()
                    for k in range(4)], axis=0)
    # the served score is the mean's calibration (the map the Trainer fitted on it)
    np.testing.assert_allclose(served[:, 0], recorded_map(warm_tta).apply(mean[:, 0]),
                               atol=1e-5)


def test_tta_prediction_is_the_mean_over_exact_orientations():
    images = keras.Input((8, 8, 3), name=F.IMAGE_KEY)
    net = keras.Model(images, keras.layers.Dense(1)(keras.layers.Flatten()(images)))
    x = tf.random.stateless_uniform([3, 8, 8, 3], [4, 2])
    single = predict(net, {F.IMAGE_KEY: x, METADATA_KEY: tf.zeros([3, 1])}, tta=1)
    averaged = predict(net, {F.IMAGE_KEY: x}, tta=8)
    expected = np.mean([net(orient(x, k)).numpy() for k in range(8)], axis=0)
    np.testing.assert_allclose(averaged, expected, atol=1e-6)
    np.testing.assert_allclose(single, net(x), atol=1e-6)
    assert not np.allclose(averaged, single, atol=1e-3)  # orientation matters to this net


def test_warm_start_begins_from_the_base_models_weights(trained):
    cfg = run_settings(trained["config"])
    fresh = build(cfg)
    used = warm_start(fresh, trained["model"], member=None)
    assert used == keras_path(trained["model"])
    base = build(cfg)
    load_weights(base, keras_path(trained["model"]))
    for a, b in zip(fresh.get_weights(), base.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert warm_start(build(cfg), None, member=None) is None


def test_warm_start_from_another_backbone_says_how_to_go_on(trained):
    cfg = run_settings(trained["config"]).model_copy(update={"backbone": "densenet121"})
    with pytest.raises(ModelConfigError, match="warm_start=false"):
        warm_start(build(cfg), trained["model"], member=None)


def test_best_validation_epoch_is_recorded_with_the_model(trained):
    with open(os.path.join(trained["artifact"], VALIDATION_FILE)) as f:
        recorded = json.load(f)
    assert recorded["strategy"] == "default strategy" and recorded["replicas"] == 1
    assert 1 <= recorded["best_epoch"] <= recorded["epochs_run"] == 2
    assert len(recorded["labels"]) == len(recorded["scores"]) > 0


def test_best_epoch_restores_the_best_weights_and_stops_on_patience():
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    best = BestEpoch("val_auc", patience=2)
    best.set_model(model)
    for epoch, auc in enumerate([0.6, 0.8, 0.7, 0.75]):
        model.layers[0].kernel.assign([[float(epoch)]])
        best.on_epoch_end(epoch, {"val_auc": auc})
    assert best.stopped and model.stop_training and best.best_epoch == 2
    best.restore()
    np.testing.assert_array_equal(model.get_weights()[0], [[1.0]])


def test_two_stage_fine_tuning_freezes_then_unfreezes_at_a_lower_rate():
    cfg = TrainerSettings(frozen_epochs=2, unfreeze_fraction=0.3, finetune_lr_scale=0.1)
    assert stages(cfg, 5) == [(2, 0.0, 1.0), (3, 0.3, 0.1)]
    assert stages(cfg.model_copy(update={"frozen_epochs": 0}), 5) == [(5, 1.0, 1.0)]
    assert stages(cfg, 2) == [(1, 0.0, 1.0), (1, 0.3, 0.1)]  # short runs keep a second stage


def test_class_weights_balance_the_classes_with_mean_one():
    benign, malignant = class_weights([900, 100], ["benign", "malignant"])
    assert malignant / benign == pytest.approx(9.0)
    assert (900 * benign + 100 * malignant) / 1000 == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no example of malignant"):
        class_weights([10, 0], ["benign", "malignant"])


def test_class_weights_of_five_classes_give_each_class_the_same_total_weight():
    counts = [870, 40, 40, 25, 25]  # DDSM's shares
    weights = class_weights(counts, ["normal", "bc", "bm", "mc", "mm"])
    assert [c * w for c, w in zip(counts, weights)] == pytest.approx([200.0] * 5)
    with pytest.raises(ValueError, match="no example of mc"):
        class_weights([10, 5, 5, 0, 2], ["normal", "bc", "bm", "mc", "mm"])


def test_the_strategy_on_a_cpu_machine_is_the_default_in_float32(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.delenv("TPU_NAME", raising=False)
    strategy, name = choose_strategy(mixed_precision=True)
    assert name == "default strategy" and strategy.num_replicas_in_sync == 1
    assert keras.mixed_precision.global_policy().name == "float32"


def test_balanced_sampling_draws_half_malignant_batches_from_rare_positives():
    labels = np.array([1] + [0] * 49)  # 2% malignant, like the 2020 release
    raw = tf.data.Dataset.from_tensor_slices(({"x": labels}, labels)).batch(10)
    batches = list(balanced_batches(raw, batch_size=64, seed=1, classes=2).take(20)
                   .as_numpy_iterator())
    share = np.mean([label for _, label in batches])
    assert all(len(label) == 64 for _, label in batches)
    assert 0.4 < share < 0.6


def test_balanced_sampling_draws_every_class_evenly():
    labels = np.array([0] * 80 + [1] * 10 + [2] * 6 + [3] * 4)
    raw = tf.data.Dataset.from_tensor_slices(({"x": labels}, labels)).batch(10)
    drawn = np.concatenate([label for _, label in balanced_batches(
        raw, batch_size=100, seed=1, classes=4).take(10).as_numpy_iterator()])
    assert np.bincount(drawn, minlength=4) / len(drawn) == pytest.approx([0.25] * 4, abs=0.05)


def test_a_multiclass_model_serves_class_probabilities_names_and_the_urgent_rule(
        trained, tiny_data, tmp_path):
    """Five classes through the same Transform graph: both signatures return each class's
    probability, the top class's code and name, and the urgent classes' summed probability
    with a decision; TTA averages the five-class outputs."""
    import tensorflow_transform as tft

    from modules.export import export_model

    config = load_config(None, ["image_size=32", "backbone=pneumonia_cnn", "tta=2",
                                'classes=[normal, bc, bm, mc, mm]', "urgent=[mc, mm]"])
    settings = run_settings(config)
    model = build(settings)
    assert model.output_shape == (None, 5)
    transform = tft.TFTransformOutput(os.path.join(os.path.dirname(trained["artifact"]),
                                                   "transform"))
    export_model(model, transform, settings, str(tmp_path / "Format-Serving"))
    served = tf.saved_model.load(str(tmp_path / "Format-Serving"))
    records = shard_records(tiny_data, "test00-*.tfrec")[:8]
    out = served.signatures["serving_default"](examples=tf.constant(records))
    probabilities = out["probabilities"].numpy()
    assert probabilities.shape == (8, 5)
    np.testing.assert_allclose(probabilities.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(out["class_id"], probabilities.argmax(1))
    assert [n.decode() for n in out["class_name"].numpy()] == [
        config.task.label.classes[k] for k in probabilities.argmax(1)]
    np.testing.assert_allclose(out["probability"][:, 0], probabilities[:, 3:].sum(1),
                               rtol=1e-5)
    np.testing.assert_array_equal(out["decision"][:, 0], probabilities[:, 3:].sum(1) >= 0.5)
    from_images = served.signatures["serving_image"](image=tf.constant(encoded_images(records)))
    np.testing.assert_allclose(from_images["probabilities"], probabilities, atol=1e-5)


def calibrated_by_hand(served, net, records: list[bytes], tta: int,
                       fitted: CalibrationMap) -> np.ndarray:
    """`fitted` (numpy) applied to the network's own TTA-averaged probabilities."""
    transformed = served.signatures["transform_features"](examples=tf.constant(records))
    raw = predict(net, transformed, tta).numpy()
    return fitted.apply(raw[:, 0] if raw.shape[1] == 1 else raw)


def recorded_map(trained_model: dict) -> CalibrationMap:
    """The calibration map run_fn recorded in the model's validation file."""
    with open(os.path.join(trained_model["artifact"], VALIDATION_FILE)) as f:
        recorded = json.load(f)["calibration"]
    return CalibrationMap(recorded["method"], recorded["temperature"], recorded["bias"],
                          recorded["reason"])


def test_both_signatures_serve_the_validation_folds_calibration_map(trained, tiny_data):
    """The map run_fn fitted on the validation fold (and recorded with its ECE before and
    after) is stored in the SavedModel, and serving_default and serving_image both return
    it applied to the network's probability (TTA: test_tta_averages_...)."""
    with open(os.path.join(trained["artifact"], VALIDATION_FILE)) as f:
        recorded = json.load(f)["calibration"]
    assert recorded["method"] == "platt", recorded["reason"]
    for when in ("before", "after"):  # the fold's ECE and reliability bins, both ways
        assert 0 <= recorded[f"ece_{when}"] <= 1
        assert sum(n for _, _, n in recorded[f"reliability_{when}"]) == recorded["examples"]
    served = tf.saved_model.load(trained["model"])
    assert served.calibration.temperature.numpy() == pytest.approx(recorded["temperature"])
    assert served.calibration.bias.numpy() == pytest.approx(recorded["bias"], abs=1e-6)
    settings = run_settings(trained["config"])
    net = build(settings)
    load_weights(net, keras_path(trained["model"]))
    records = shard_records(tiny_data, "test00-*.tfrec")[:16]
    expected = calibrated_by_hand(served, net, records, settings.tta, recorded_map(trained))
    by_example, by_image = serve_both_ways(trained["model"], records, metadata=False)
    np.testing.assert_allclose(by_example[:, 0], expected, atol=1e-5)
    np.testing.assert_allclose(by_image[:, 0], expected, atol=1e-5)


@pytest.mark.parametrize("classes", [["benign", "malignant"], ["normal", "bc", "bm", "mc", "mm"]])
def test_an_exported_calibration_map_is_applied_before_the_threshold(classes, trained,
                                                                     tiny_data, tmp_path):
    """A given map (Platt for two classes, temperature and class biases for five) in both
    signatures: the probabilities are the map of the network's, the decision is taken on
    them."""
    import tensorflow_transform as tft

    from modules.export import export_model

    config = load_config(None, ["image_size=32", "backbone=pneumonia_cnn", "tta=2",
                                f"classes=[{', '.join(classes)}]"]
                         + ([] if len(classes) == 2 else ["urgent=[mc, mm]"]))
    settings = run_settings(config)
    net = build(settings)
    fitted = (CalibrationMap("platt", temperature=0.4, bias=-1.5) if len(classes) == 2
              else CalibrationMap("temperature_bias", temperature=0.3,
                                  bias=(0.0, -1.0, 0.5, 1.0, -2.0)))
    transform = tft.TFTransformOutput(os.path.join(os.path.dirname(trained["artifact"]),
                                                   "transform"))
    export_model(net, transform, settings, str(tmp_path / "Format-Serving"),
                 calibration=fitted)
    served = tf.saved_model.load(str(tmp_path / "Format-Serving"))
    records = shard_records(tiny_data, "test00-*.tfrec")[:8]
    expected = calibrated_by_hand(served, net, records, 2, fitted)
    key = "probability" if len(classes) == 2 else "probabilities"
    by_example = served.signatures["serving_default"](examples=tf.constant(records))
    by_image = served.signatures["serving_image"](image=tf.constant(encoded_images(records)))
    for out in (by_example, by_image):
        got = out[key].numpy()
        np.testing.assert_allclose(got[:, 0] if len(classes) == 2 else got, expected,
                                   atol=1e-5)
        urgent = got[:, 0] if len(classes) == 2 else got[:, 3:].sum(1)
        np.testing.assert_array_equal(out["decision"][:, 0], urgent >= 0.5)


def test_the_ensemble_serves_the_map_fitted_on_its_out_of_fold_scores(trained, tiny_data,
                                                                      tmp_path):
    """The Ensemble executor fits its own map on the members' recorded validation scores
    (here one fold's twice over) and serves it applied to the members' average."""
    from tfx.types import standard_artifacts

    from components.ensemble import MEMBER_PREFIX, Executor
    from modules.calibration import fit_calibration

    def artifact(cls, uri: str):
        made = cls()
        made.uri = uri
        return made

    output = artifact(standard_artifacts.Model, str(tmp_path / "ensemble"))
    inputs = {f"{MEMBER_PREFIX}{k}": [artifact(standard_artifacts.Model, trained["artifact"])]
              for k in range(2)}
    inputs["transform_graph"] = [artifact(standard_artifacts.TransformGraph, os.path.join(
        os.path.dirname(trained["artifact"]), "transform"))]
    settings = run_settings(trained["config"])
    Executor().Do(inputs, {"model": [output]}, {"settings": settings.model_dump_json()})

    with open(os.path.join(trained["artifact"], VALIDATION_FILE)) as f:
        fold = json.load(f)
    with open(os.path.join(output.uri, VALIDATION_FILE)) as f:
        recorded = json.load(f)["calibration"]
    expected = fit_calibration(fold["labels"] * 2, fold["scores"] * 2)
    assert (recorded["method"], recorded["examples"]) == ("platt", 2 * len(fold["labels"]))
    assert recorded["temperature"] == pytest.approx(expected.temperature)
    assert recorded["bias"] == pytest.approx(expected.bias)
    serving = os.path.join(output.uri, "Format-Serving")
    served = tf.saved_model.load(serving)
    net = build(settings)
    load_weights(net, keras_path(trained["model"]))
    records = shard_records(tiny_data, "test00-*.tfrec")[:8]
    by_example, _ = serve_both_ways(serving, records, metadata=False)
    np.testing.assert_allclose(by_example[:, 0], calibrated_by_hand(
        served, net, records, settings.tta, expected), atol=1e-5)
