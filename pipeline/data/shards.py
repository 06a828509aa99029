"""The public SIIM-ISIC "melanoma-NxN" file layout: shard names, listing, and folds.

Shards are named `trainNN-COUNT.tfrec` / `testNN-COUNT.tfrec`, where COUNT is the number of
records. Folds are sets of whole train shards, so a patient (always inside one shard) never
lands on both sides of a split.
"""

from __future__ import annotations

import dataclasses
import os
import re

from modules.errors import MedtfxError
from pipeline.core.errors import ConfigError

SHARD_RE = re.compile(r"^(?P<kind>train|test)(?P<index>\d{2,})-(?P<count>\d+)\.tfrec$")
# Every test shard, as a glob relative to the data root (ImportExampleGen reads them as one
# split: they are scored, never split into folds).
TEST_SHARDS_PATTERN = "test[0-9][0-9]*-[0-9]*.tfrec"
TEST_SPLIT = "test"


class DataLayoutError(MedtfxError):
    """The data root does not hold shards in the public layout."""


@dataclasses.dataclass(frozen=True)
class Shard:
    path: str
    kind: str  # "train" (labelled) or "test" (unlabelled)
    index: int
    count: int

    @property
    def split_name(self) -> str:
        """The ImportExampleGen split that holds exactly this shard."""
        return f"{self.kind}{self.index:02d}"

    @property
    def pattern(self) -> str:
        """A glob, relative to the data root, that matches this shard and no other."""
        return f"{self.kind}{self.index:02d}-*.tfrec"


def shard_filename(kind: str, index: int, count: int) -> str:
    return f"{kind}{index:02d}-{count}.tfrec"


def list_shards(data_root: str, kind: str | None = None) -> list[Shard]:
    """Shards under `data_root` sorted by kind and index; other files are ignored."""
    import tensorflow as tf  # gfile reads gs:// and s3:// roots too; slow to import

    if not tf.io.gfile.isdir(data_root):
        raise DataLayoutError(f"{data_root}: data root does not exist or is not a directory")
    shards = []
    for name in tf.io.gfile.listdir(data_root):
        match = SHARD_RE.match(name.rstrip("/"))
        if match and (kind is None or match["kind"] == kind):
            shards.append(Shard(os.path.join(data_root, name), match["kind"],
                                int(match["index"]), int(match["count"])))
    shards.sort(key=lambda s: (s.kind, s.index))
    _check_unique_indices(data_root, shards)
    return shards


def _check_unique_indices(data_root: str, shards: list[Shard]) -> None:
    seen: dict[str, str] = {}
    for shard in shards:
        if shard.split_name in seen:
            raise DataLayoutError(
                f"{data_root}: two shards share index {shard.split_name}: "
                f"{os.path.basename(seen[shard.split_name])} and {os.path.basename(shard.path)}")
        seen[shard.split_name] = shard.path


def fold_of(index: int, num_shards: int, num_folds: int) -> int:
    """Contiguous folds: 15 shards in 3 folds are 00-04, 05-09, 10-14."""
    return index * num_folds // num_shards


@dataclasses.dataclass(frozen=True)
class SplitPlan:
    """Which train shards the Trainer fits on, validates on, and the Evaluator gates on."""

    train: tuple[int, ...]
    validation: tuple[int, ...]
    evaluation: tuple[int, ...]

    @staticmethod
    def names(indices: tuple[int, ...]) -> list[str]:
        return [f"train{i:02d}" for i in indices]

    def describe(self) -> str:
        return (f"train on {_ranges(self.train)}, validate on {_ranges(self.validation)}, "
                f"evaluate on {_ranges(self.evaluation)}")


def plan_splits(num_shards: int, folds: int, eval_fold: int,
                validation_fold: int | None) -> SplitPlan:
    """Maps folds of whole shards to the three roles; the roles never share a shard."""
    if not 2 <= folds <= num_shards:
        raise ConfigError(f"folds must be between 2 and the shard count {num_shards}, "
                          f"got {folds}")
    if validation_fold is None:
        raise ConfigError(f"validation_fold: null would select the model on the evaluation "
                          f"fold that gates it; name a fold in 0..{folds - 1} other than "
                          f"eval_fold ({eval_fold})")
    for name, fold in (("eval_fold", eval_fold), ("validation_fold", validation_fold)):
        if not 0 <= fold < folds:
            raise ConfigError(f"{name} must be in 0..{folds - 1}, got {fold}")
    if validation_fold == eval_fold:
        raise ConfigError("validation_fold and eval_fold must differ: a model selected on "
                          "the data that gates it is graded on its own exam")
    roles: dict[str, list[int]] = {"train": [], "validation": [], "evaluation": []}
    for index in range(num_shards):
        fold = fold_of(index, num_shards, folds)
        role = ("evaluation" if fold == eval_fold else
                "validation" if fold == validation_fold else "train")
        roles[role].append(index)
    if not roles["train"]:
        raise ConfigError(f"{folds} folds leave no shard to train on")
    return SplitPlan(*(tuple(roles[r]) for r in ("train", "validation", "evaluation")))


def ensemble_splits(plan: SplitPlan, members: int) -> list[tuple[tuple[int, ...],
                                                                   tuple[int, ...]]]:
    """(train, validation) shards of each member of a K-fold ensemble: every shard outside
    the evaluation fold, in `members` contiguous blocks; member k validates on block k and
    trains on the rest, so each shard is out of fold for exactly one member."""
    pool = sorted((set(plan.train) | set(plan.validation)) - set(plan.evaluation))
    if not 2 <= members <= len(pool):
        raise ConfigError(f"ensemble_folds must be between 2 and the {len(pool)} shards "
                          f"outside the evaluation fold, got {members}")
    blocks = [tuple(s for j, s in enumerate(pool) if j * members // len(pool) == b)
              for b in range(members)]
    return [(tuple(s for s in pool if s not in block), block) for block in blocks]


def _ranges(indices: tuple[int, ...]) -> str:
    """(0, 1, 2, 5) -> 'train00-02, train05'."""
    parts: list[str] = []
    start = prev = None
    for i in list(indices) + [None]:
        if start is not None and (i is None or i != prev + 1):
            parts.append(f"train{start:02d}" if start == prev else f"train{start:02d}-{prev:02d}")
            start = None
        if i is not None and start is None:
            start = i
        prev = i
    return ", ".join(parts)
