"""`medtfx data import`: a dataset in its published layout to shards of the layout the
pipeline reads (trainNN-COUNT.tfrec, testNN-COUNT.tfrec for unlabelled images).

The published split is honoured through the config's fold plan: what a release calls test
fills the evaluation fold's shards, its validation set the validation fold's (a role the
release lacks is carved from its training images). Within a role, whole groups are dealt
to shards so that each has the same label mix and group-size mix (within one). Images keep
their published bytes (DICOM files become 8-bit PNGs). The heavy part, reading and checking
every image and writing the shards, is a Beam pipeline; the plan is made first from names
(and DICOM headers) alone, so the same files give the same shards.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os

from modules.settings import ImageLimits
from modules.task import TaskSpec
from pipeline.core.beam import DATA_IMPORT
from pipeline.data.catalog import Catalog, DataImportError, Item, Problem, build_catalog
from pipeline.data.shards import SplitPlan
from pipeline.data.sources import SourceConfig
from pipeline.core.files import staged_dir, write_json

IMPORT_MANIFEST = "import-manifest.json"
QUARANTINE = "quarantine.csv"


@dataclasses.dataclass(frozen=True)
class Placed:
    """An item and the shard it goes to: ("train", 3) or ("test", 0)."""
    item: Item
    kind: str
    index: int


def role_shards(plan: SplitPlan, splits: dict[str, str]) -> dict[str, tuple[int, ...]]:
    """The train shards each role fills; a role no published split maps to is carved from
    the training images."""
    roles = set(splits.values()) | {"train"}
    shards = {role: getattr(plan, role) for role in ("train", "validation", "evaluation")}
    for role in ("validation", "evaluation"):
        if role not in roles:
            shards["train"] = tuple(sorted(shards["train"] + shards.pop(role)))
    return shards


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def deal(groups: list[list[Item]], n_shards: int) -> list[list[Item]]:
    """Whole groups to `n_shards` shards: largest groups first, each to the shard holding
    the fewest of its label so far, then the fewest images; ties by a hash of the group,
    so the result depends on the files alone."""
    shards: list[list[Item]] = [[] for _ in range(n_shards)]
    by_label: list[collections.Counter] = [collections.Counter() for _ in range(n_shards)]

    def group_label(group: list[Item]) -> int:
        return max(-1 if i.label is None else i.label for i in group)

    order = sorted(groups, key=lambda g: (-len(g), -group_label(g), _digest(g[0].group)))
    for group in order:
        label = group_label(group)
        target = min(range(n_shards), key=lambda s: (by_label[s][label], len(shards[s]), s))
        shards[target] += group
        by_label[target][label] += len(group)
    return shards


def plan_shards(items: list[Item], source: SourceConfig, plan: SplitPlan,
                pinned: dict[int, int] | None = None) -> list[Placed]:
    """Every item's shard; unlabelled images go to testNN shards. `pinned` (an arrival's
    import) keeps a returning patient in the shard an earlier arrival put them in, and
    allows shards left empty; without it every shard must get a group."""
    roles = role_shards(plan, source.splits)
    by_role: dict[str, dict[str, list[Item]]] = collections.defaultdict(dict)
    placed = []
    for item in items:
        role = "unlabelled" if item.label is None else source.splits.get(item.split, "train")
        if pinned and item.label is not None and group_id(item.group) in pinned:
            placed.append(Placed(item, "train", pinned[group_id(item.group)]))
        else:
            by_role[role].setdefault(item.group, []).append(item)
    for role, groups in sorted(by_role.items()):
        indices = (tuple(range(min(source.test_shards, len(groups))))
                   if role == "unlabelled" else roles[role])
        if len(groups) < len(indices) and pinned is None:
            raise DataImportError(f"the {role} images form {len(groups)} groups, too few to fill "
                               f"{len(indices)} shards; lower data.train_shards or data.folds")
        kind = "test" if role == "unlabelled" else "train"
        for index, shard in zip(indices, deal(list(groups.values()), len(indices))):
            placed += [Placed(item, kind, index) for item in shard]
    return placed


def group_id(group: str) -> int:
    """A group's int64 id: 60 bits of a digest of its name, so that the same patient has the
    same id in every import (an arrival imported next month included)."""
    return int(_digest(group)[:15], 16)


def check_problems(problems: list[Problem], on_bad: str) -> None:
    if problems and on_bad == "stop":
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise DataImportError(
            f"{problems[0]}{more}; nothing was written (--on-bad quarantine imports the "
            "rest and lists every problem)", [str(p) for p in problems])


def import_dataset(data_root: str, out_dir: str, source: SourceConfig, task: TaskSpec,
                   plan: SplitPlan, limits: ImageLimits, beam_args: list[str],
                   pinned: dict[int, int] | None = None) -> dict:
    """Writes the shards of the dataset under `data_root` to `out_dir`, which must not exist
    or be empty, and returns the manifest written beside them. `pinned`: see plan_shards."""
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        raise DataImportError(f"{out_dir}: not empty; the import writes a new folder")
    catalog = build_catalog(data_root, source, task)
    check_problems(catalog.problems, source.on_bad)
    if os.path.isdir(out_dir):
        os.rmdir(out_dir)  # empty: staged_dir renames a complete folder into its place
    with staged_dir(out_dir) as staging:
        placed = plan_shards(catalog.items, source, plan, pinned)
        from pipeline.data.import_beam import write_shards

        elements = [(p.kind, p.index, p.item.path, p.item.label, group_id(p.item.group),
                     p.item.metadata) for p in placed]
        written, bad = write_shards(elements, data_root, staging, task, limits, beam_args,
                                    source.dicom if source.layout == "dicom" else None)
        check_problems(bad, source.on_bad)
        if pinned is None:
            _check_complete(placed, written)
        problems = catalog.problems + bad
        if problems:
            _write_quarantine(os.path.join(staging, QUARANTINE), problems)
        manifest = _manifest(catalog, placed, written, problems)
        write_json(os.path.join(staging, IMPORT_MANIFEST), manifest)
    return manifest


def _check_complete(placed: list[Placed], written: dict[str, int]) -> None:
    """Every planned shard was written: one whose images were all quarantined would leave
    a hole the pipeline's split patterns cannot match."""
    present = {name.split("-")[0] for name in written}
    lost = sorted({f"{p.kind}{p.index:02d}" for p in placed} - present)
    if lost:
        raise DataImportError(f"shard(s) {', '.join(lost)} lost every image to quarantine; "
                           "fix the images or lower data.train_shards")


def imported(data_root: str, imports_dir: str, config, say,
             pinned: dict[int, int] | None = None) -> str:
    """The shards of the published data under `data_root`, imported into `imports_dir` on
    first use and reused while the files, the source, the task and the fold plan are
    unchanged; returns their folder. `pinned`: see plan_shards."""
    key = _fingerprint(data_root, config, pinned)
    out_dir = os.path.join(imports_dir, key)
    if os.path.exists(os.path.join(out_dir, IMPORT_MANIFEST)):
        say(f"medtfx: reusing the import of {data_root} in {out_dir}")
        return out_dir
    say(f"medtfx: importing {data_root} ({config.source.layout} layout) into {out_dir}")
    manifest = import_dataset(data_root, out_dir, config.source, config.task,
                              config.split_plan, config.limits,
                              config.beam.pipeline_args(DATA_IMPORT), pinned)
    say(describe(manifest, out_dir))
    return out_dir


def describe(manifest: dict, out_dir: str) -> str:
    line = (f"medtfx: imported {manifest['images']:,} images of {manifest['groups']:,} groups "
            f"into {len(manifest['shards'])} shards; {manifest['skipped']} non-image files "
            "skipped")
    if manifest.get("dropped"):
        line += f"; {manifest['dropped']:,} images of classes the label map drops left out"
    if manifest["quarantined"]:
        line += (f"; {manifest['quarantined']} problem(s) quarantined, listed in "
                 f"{os.path.join(out_dir, QUARANTINE)}")
    return line


def _fingerprint(data_root: str, config, pinned: dict[int, int] | None) -> str:
    """A digest of what an import depends on: every file's name, size and modification
    time, and the settings that shape the shards."""
    digest = hashlib.sha256(json.dumps([
        config.source.model_dump(), config.task.model_dump(), config.limits.model_dump(),
        dataclasses.asdict(config.split_plan), sorted((pinned or {}).items())],
        sort_keys=True).encode())
    for parent, dirs, names in os.walk(data_root):
        dirs.sort()
        for name in sorted(names):
            stat = os.stat(os.path.join(parent, name))
            digest.update(f"{os.path.relpath(os.path.join(parent, name), data_root)}\0"
                          f"{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _write_quarantine(path: str, problems: list[Problem]) -> None:
    import csv

    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "problem"])
        writer.writerows([p.where, p.what] for p in problems)


def _manifest(catalog: Catalog, placed: list[Placed], written: dict[str, int],
              problems: list[Problem]) -> dict:
    by_split = collections.Counter(p.item.split for p in placed)
    return {"shards": written, "images": sum(written.values()),
            "published_splits": dict(sorted(by_split.items())),
            "groups": len({p.item.group for p in placed}),
            "skipped": catalog.skipped, "dropped": catalog.dropped,
            "quarantined": len(problems)}
