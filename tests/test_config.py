"""The typed config: YAML in the repo, --set overrides, clear errors."""

import pytest

from pipeline.config import DEFAULT_CONFIG, load_config, load_config_dict, to_dict
from pipeline.core.errors import ConfigError


def test_default_config_loads_and_is_typed():
    config = load_config()
    assert config.trainer.backbone == "pneumonia_cnn"
    assert isinstance(config.trainer.learning_rate, float)
    assert config.data.validation_fold == 3


def test_overrides_by_leaf_name_and_by_path():
    config = load_config(DEFAULT_CONFIG, ["image_size=48", "trainer.train_steps=20",
                                          "validation_fold=2", "slices=[[sex]]",
                                          "learning_rate=1"])
    assert config.trainer.image_size == 48
    assert config.trainer.train_steps == 20
    assert config.data.validation_fold == 2
    assert config.evaluation.slices == [["sex"]]
    assert config.trainer.learning_rate == 1.0 and isinstance(config.trainer.learning_rate,
                                                              float)


@pytest.mark.parametrize("override, message", [
    ("image_size=big", "trainer: image_size: expected int, got 'big'"),
    ("imagesize=64", "no such config field"),
    ("image_size", "expected KEY=VALUE"),
    ("flip_up_down=3", "expected bool"),
    ("rotation=wide", "trainer: augment: rotation: expected float"),
    ("slices=30", "expected a list"),
    ("slices=[[sexx]]", "slices: sexx not among the task's slice features"),
])
def test_bad_overrides_name_the_field(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


@pytest.mark.parametrize("override, message", [
    ("trainer.backbon=x", "--set trainer.backbon: no such config field; did you mean "
                          "trainer.backbone?"),
    ("backbon=x", "--set backbon: no such config field; did you mean trainer.backbone?"),
    ("imagesize=64", "--set imagesize: no such config field; did you mean source.images, "
                     "trainer.image_size?"),
    ("zzzz=1", "--set zzzz: no such config field; none is close (top level: beam, data, "),
])
def test_a_misspelt_key_names_the_closest_fields_not_every_field(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert str(err.value).startswith(message)
    assert len(str(err.value)) < 250  # not the 170 field names


def test_unknown_fields_in_a_file_are_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("trainer:\n  backbone: densenet121\n  epoch: 3\n")
    with pytest.raises(ConfigError, match=r"c.yaml: trainer: unknown field\(s\) epoch; "
                       r"did you mean epochs\?$"):
        load_config(str(path))
    path.write_text("trainer:\n  zzz: 3\n")
    with pytest.raises(ConfigError, match=r"trainer: unknown field\(s\) zzz; known: "):
        load_config(str(path))


def test_a_run_recorded_with_the_retired_interval_switch_still_reads_back():
    """`medtfx report` on a run from before the intervals were computed from the
    Evaluator's output; in a file or --set the field is unknown, as any other."""
    recorded = to_dict(load_config(None, ["image_size=48"]))
    recorded["evaluation"]["confidence_intervals"] = False
    assert load_config_dict(recorded).trainer.image_size == 48
    assert recorded["evaluation"]["confidence_intervals"] is False  # the record is untouched
    with pytest.raises(ConfigError, match="no such config field"):
        load_config(None, ["confidence_intervals=false"])


def test_an_impossible_fold_plan_is_a_config_error():
    with pytest.raises(ConfigError, match="validation_fold and eval_fold must differ"):
        load_config(None, ["validation_fold=4"])


@pytest.mark.parametrize("override, message", [
    ("class_balance=oversample", "class_balance 'oversample' is not one of"),
    ("tta=9", "tta 9 must be 1"),
    ("frozen_epochs=5", "frozen_epochs 5 must leave some"),
    ("unfreeze_fraction=0", "unfreeze_fraction 0.0 must be in"),
    ("ensemble_folds=1", "ensemble_folds must be between 2"),
])
def test_trainer_settings_that_cannot_train_are_refused(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["epochs=5", override])
