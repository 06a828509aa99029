"""Folds of whole shards and the three roles they play."""

import pytest

from pipeline.data.shards import SHARD_RE, ensemble_splits, plan_splits
from pipeline.core.errors import ConfigError


def test_default_plan_keeps_roles_apart_and_uses_every_shard():
    plan = plan_splits(15, folds=5, eval_fold=4, validation_fold=3)
    assert plan.train == tuple(range(9))
    assert plan.validation == (9, 10, 11)
    assert plan.evaluation == (12, 13, 14)
    assert plan.describe() == ("train on train00-08, validate on train09-11, "
                               "evaluate on train12-14")


@pytest.mark.parametrize("folds, eval_fold, validation_fold", [
    (3, 0, 1), (3, 1, 2), (5, 2, 0), (15, 14, 13), (4, 3, 0)])
def test_roles_never_share_a_shard(folds, eval_fold, validation_fold):
    plan = plan_splits(15, folds, eval_fold, validation_fold)
    assert not set(plan.train) & set(plan.evaluation)
    assert not set(plan.train) & set(plan.validation)
    assert sorted(set(plan.train) | set(plan.validation) | set(plan.evaluation)) == list(
        range(15))


def test_folds_are_contiguous_blocks_of_near_equal_size():
    sizes = [len(plan_splits(15, 4, f, (f + 1) % 4).evaluation) for f in range(4)]
    assert sorted(sizes) == [3, 4, 4, 4]


@pytest.mark.parametrize("kwargs, message", [
    (dict(folds=1, eval_fold=0, validation_fold=1), "folds must be between"),
    (dict(folds=5, eval_fold=5, validation_fold=1), "eval_fold must be in 0..4"),
    (dict(folds=5, eval_fold=4, validation_fold=None),
     r"null would select the model on the evaluation fold .* other than eval_fold \(4\)"),
    (dict(folds=5, eval_fold=2, validation_fold=2), "must differ"),
    (dict(folds=2, eval_fold=0, validation_fold=1), "no shard to train on"),
])
def test_impossible_plans_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        plan_splits(15, **kwargs)


def test_shard_names():
    assert SHARD_RE.match("train00-2182.tfrec")["count"] == "2182"
    assert SHARD_RE.match("test15-687.tfrec")["kind"] == "test"
    assert SHARD_RE.match("train00.tfrec") is None
    assert SHARD_RE.match("train00-12.tfrecord") is None


def test_ensemble_folds_cover_every_non_evaluation_shard_once_out_of_fold():
    plan = plan_splits(15, 5, eval_fold=4, validation_fold=3)
    members = ensemble_splits(plan, 3)
    validated = [s for _, validation in members for s in validation]
    assert sorted(validated) == list(range(12))  # each shard out of fold exactly once
    for train, validation in members:
        assert not set(train) & set(validation) and not set(train) & set(plan.evaluation)
        assert len(validation) == 4


def test_an_ensemble_needs_two_members_and_no_more_than_the_shards():
    plan = plan_splits(15, 5, eval_fold=4, validation_fold=3)
    with pytest.raises(ConfigError, match="between 2 and the 12 shards"):
        ensemble_splits(plan, 13)
    with pytest.raises(ConfigError, match="ensemble_folds"):
        ensemble_splits(plan, 1)
