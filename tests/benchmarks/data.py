"""Synthetic releases for the benchmark: one folder per spec, written once on every core with
a line of progress every few seconds, and reused while the spec is the same."""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import struct
import threading
import time

from pipeline.sample.synth import MANIFEST, SynthSpec, generate

PROGRESS_SECONDS = 15.0


def data_key(spec: SynthSpec) -> str:
    """A folder name that says what the release is and changes with any field of the spec."""
    fields = json.dumps(dataclasses.asdict(spec), sort_keys=True)
    digest = hashlib.sha256(fields.encode()).hexdigest()[:10]
    return (f"synth-{spec.size}px-{spec.images}x{spec.train_shards}-"
            f"{spec.n_test}x{spec.test_shards}-{digest}")


def written_spec(path: str) -> dict | None:
    """The spec in the manifest of a complete release at `path`, else None."""
    try:
        with open(os.path.join(path, MANIFEST)) as f:
            manifest = json.load(f)
    except FileNotFoundError:
        return None
    files = [s["file"] for s in manifest["train"] + manifest["test"]]
    if not all(os.path.exists(os.path.join(path, name)) for name in files):
        return None
    return manifest["spec"]


def count_records(path: str) -> int:
    """Whole TFRecords in a file that may still be being written: reads the length fields
    only (8-byte length, 4-byte CRC, data, 4-byte CRC)."""
    count = 0
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        while True:
            head = f.read(8)
            if len(head) < 8:
                return count
            end = f.tell() + 4 + struct.unpack("<Q", head)[0] + 4
            if end > size:
                return count
            f.seek(end)
            count += 1


def _staged_records(path: str) -> int:
    """Records written so far into generate()'s hidden staging folder (files move out of it
    when all are written)."""
    count = 0
    for name in glob.glob(os.path.join(path, ".synth-*", "*.tfrec")):
        try:
            count += count_records(name)
        except FileNotFoundError:
            pass
    return count


def _report_progress(path: str, total: int, done: threading.Event) -> None:
    start = time.time()
    while not done.wait(PROGRESS_SECONDS):
        print(f"  generating: {_staged_records(path):,} of {total:,} images, "
              f"{time.time() - start:.0f} s")


def make_data(root: str, spec: SynthSpec) -> str:
    """The release `spec` describes, in a folder under `root` named by the spec: reused when
    it is complete and its manifest holds the same spec, else generated.
    Folders of other specs stay as they are."""
    path = os.path.join(root, data_key(spec))
    expected = json.loads(json.dumps(dataclasses.asdict(spec)))
    if written_spec(path) == expected:
        print(f"reusing {spec.images + spec.n_test:,} images of {spec.size} px in {path}")
        return path
    total = spec.images + spec.n_test
    print(f"generating {total:,} images of {spec.size} px ({spec.train_shards} train shards, "
          f"{spec.test_shards} test shards) in {path}")
    start, done = time.time(), threading.Event()
    watcher = threading.Thread(target=_report_progress, args=(path, total, done), daemon=True)
    watcher.start()
    try:
        generate(path, spec)  # on every core when it takes more than ~30 s
    finally:
        done.set()
        watcher.join()
    print(f"  generated {total:,} images in {time.time() - start:.0f} s")
    return path
