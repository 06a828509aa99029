"""Where a dataset's files are when the configured folder does not hold them: a layout one
folder off (CelebA's own zip unpacks to img_align_celeba/, the common download to
img_align_celeba/img_align_celeba/; a Kermany release unpacked into a folder of its own) is
then said in one line naming the setting to change, rather than a line per file."""

from __future__ import annotations

import collections
import os


def misplaced(data_root: str, folder: str, table: str, own_folder: bool, names: list[str],
              found: int) -> str:
    """The line for a table whose `names` (relative to `folder`) are missing while `found`
    others are there: the folder below `data_root` that holds the most of them, and the
    setting that points the table there (source.images, or the table's own `images`)."""
    setting = f"source.labels {table} images" if own_folder else "source.images"
    said = (f"{setting}: {folder or '.'} holds {found} of the {len(names) + found} images "
            f"{table} names")
    holds = _folders_holding(data_root, names)
    if not holds:
        return f"{said}, and no folder below {data_root} holds the others"
    best, count = max(holds.items(), key=lambda kv: (kv[1], -len(kv[0]), kv[0]))
    fix = (f"set images: {best or '.'} on {table} in the config" if own_folder else
           f"set --set source.images={best or '.'}")
    return f"{said}, {best or '.'} holds {count}; {fix}"


def _folders_holding(data_root: str, names: list[str]) -> collections.Counter:
    """How many of `names` each folder below `data_root` holds (a name may have folders
    of its own: "a/b.jpg" is held by F when F/a/b.jpg exists)."""
    wanted: dict[str, list[str]] = collections.defaultdict(list)
    for name in names:
        wanted[os.path.basename(name)].append(os.path.normpath(name))
    holds: collections.Counter = collections.Counter()
    for parent, dirs, files in os.walk(data_root):
        dirs.sort()
        for file in files:
            path = os.path.relpath(os.path.join(parent, file), data_root)
            for name in wanted.get(file, []):
                if path == name or path.endswith(os.sep + name):
                    holds[path[:len(path) - len(name)].rstrip(os.sep)] += 1
    return holds


def releases_below(data_root: str, splits: list[str], depth: int = 3) -> str | None:
    """The shallowest folder below `data_root` (at most `depth` down, relative to it) that
    holds one of the `splits` folders; None when none does. macOS's __MACOSX copies are
    not releases."""
    level = [""]
    for _ in range(depth):
        below = []
        for folder in level:
            path = os.path.join(data_root, folder)
            below += [os.path.join(folder, d) for d in sorted(os.listdir(path))
                      if d != "__MACOSX" and os.path.isdir(os.path.join(path, d))]
        for folder in below:
            if any(os.path.isdir(os.path.join(data_root, folder, s)) for s in splits):
                return folder
        level = below
    return None
