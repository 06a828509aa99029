"""`medtfx retrain`: takes labelled files from an incoming folder, registers the good ones
as the next span, quarantines the rest, and runs the pipeline on the new span.

Incoming files are copied into the data root before they are removed from the incoming
folder, so a crash at any point leaves every file in one place or two, never in none.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Callable

from pipeline.config import PipelineConfig
from pipeline.data import incoming as inc
from pipeline.data import spans
from pipeline.data.shards import SHARD_RE
from pipeline.core.console import Console
from pipeline.core.lock import FolderLock
from pipeline.core.workdir import WorkDir
from pipeline.ops.run import run_pipeline

LOCK_FILE = ".medtfx-retrain.lock"
MAX_RETRY_PAUSE = 3600.0  # --watch: the longest wait before a failed span runs again


@dataclasses.dataclass(frozen=True)
class Registration:
    span: int | None  # None: nothing was accepted
    accepted: tuple[str, ...]
    quarantined: tuple[inc.Verdict, ...]
    quarantine_dir: str | None


def retrain_lock(data_root: str) -> FolderLock:
    """One retrain per data root."""
    return FolderLock(data_root, LOCK_FILE, "retrain")


def register(incoming: str, data_root: str, quarantine_root: str, config: PipelineConfig,
             console: Console) -> Registration:
    """Checks every settled incoming file; the good ones become the next span. A file
    changed within `retrain.settle_seconds` is left where it is for a later run."""
    data = config.data
    spans.build_missing_spans(data_root, data.window, data.train_shards)
    files, writing = inc.split_settled(inc.list_incoming(incoming),
                                       config.retrain.settle_seconds)
    if writing:
        console.say(f"medtfx: {len(writing)} files changed in the last "
                    f"{config.retrain.settle_seconds:g} s (still being written?) are left "
                    "for a later run")
    arrivals = {n: spans.arrival_record(data_root, n) for n in spans.list_arrivals(data_root)}
    for path, number in inc.registered_before(files, arrivals).items():
        console.say(f"medtfx: {os.path.basename(path)} is already registered (arrival "
                    f"{number}); removed from the incoming folder")
        os.remove(path)  # the arrival holds the same bytes
        files.remove(path)
    if not files:
        return Registration(None, (), (), None)
    existing = spans.list_spans(data_root)
    previous = spans.span_dir(data_root, existing[-1]) if existing else None
    console.say(f"medtfx: checking {len(files)} incoming files"
                + (f" against span {existing[-1]}" if previous else ""))
    verdicts = inc.check_incoming(files, config.schema_path, data.train_shards, previous,
                                  config.retrain.drift, config.limits)
    moves = inc.fold_moves([v.path for v in verdicts if v.accepted], arrivals,
                           data.train_shards, data.folds)
    verdicts = [moves.get(v.path, v) for v in verdicts]
    rejected = tuple(v for v in verdicts if not v.accepted)
    accepted = tuple(v.path for v in verdicts if v.accepted)
    folder = inc.quarantine(list(rejected), quarantine_root) if rejected else None
    for verdict in rejected:
        console.say(f"        quarantined {os.path.basename(verdict.path)}: "
                    f"{verdict.problems[0]}")
    if not accepted:
        return Registration(None, (), rejected, folder)
    _check_window(data_root, accepted, config)
    arrival = spans.add_arrival(data_root, list(accepted))
    for path in accepted:
        os.remove(path)  # now held by the arrival
    spans.build_span(data_root, arrival, data.window, data.train_shards)
    return Registration(arrival, accepted, rejected, folder)


def _check_window(data_root: str, accepted: tuple[str, ...], config: PipelineConfig) -> None:
    """Refuses, before anything is copied, a span that would lack shards."""
    data = config.data
    arrivals = spans.list_arrivals(data_root)
    new = max(arrivals, default=0) + 1
    present = {int(SHARD_RE.match(os.path.basename(p))["index"]) for p in accepted}
    for number in spans.window_of(arrivals + [new], data.window)[:-1]:
        present |= set(spans.arrival_shards(spans.arrival_dir(data_root, number)))
    missing = [f"train{i:02d}" for i in range(data.train_shards) if i not in present]
    if missing:
        raise spans.SpanError(
            f"the new span would lack {', '.join(missing)} (window {data.window!r}); the "
            f"accepted files stay in the incoming folder; nothing was registered")


def retrain(incoming: str, data_root: str, quarantine_root: str, config: PipelineConfig,
            console: Console, run: Callable[[], int], watch: bool = False,
            sleep: Callable[[float], None] = time.sleep) -> int:
    """Registers what has arrived and runs `run` on each new span; with `watch`, keeps
    waiting for files that stop changing, and runs a span whose run failed again after a
    pause that doubles (until new files arrive: their span holds the failed one's data
    too). Returns the exit status: 1 when files were quarantined and none registered."""
    with retrain_lock(data_root):
        failed_span, pause = None, config.retrain.poll_seconds
        while True:
            if watch and failed_span is None:
                console.say(f"medtfx: watching {incoming} (Ctrl-C stops)")
                wait_until_settled(incoming, config.retrain.poll_seconds,
                                   config.retrain.settle_seconds)
            done = register(incoming, data_root, quarantine_root, config, console)
            if done.quarantine_dir:
                console.say(f"medtfx: {len(done.quarantined)} files quarantined in "
                            f"{done.quarantine_dir} (report: quarantine-report.json)")
            if done.span is not None:
                span = done.span
                console.say(f"medtfx: registered span {span} ({len(done.accepted)} files) "
                            f"in {data_root}")
                if not watch:
                    return run()
            elif failed_span is not None:
                span = failed_span
                console.say(f"medtfx: running span {span} again")
            else:
                console.say("medtfx: no new span registered")
                if not watch:
                    return 1 if done.quarantined else 0
                continue
            if _run_or_report(run, span, console) is None:
                failed_span = span
                sleep(pause)
                pause = min(2 * pause, MAX_RETRY_PAUSE)
            else:
                failed_span, pause = None, config.retrain.poll_seconds


def _run_or_report(run: Callable[[], int], span: int, console: Console) -> int | None:
    """`run`'s exit status, or None when it raised: --watch reports the failure (the
    traceback goes to the log) and keeps watching rather than ending."""
    try:
        return run()
    except Exception as err:  # noqa: BLE001 -- reported here, retried by the caller
        logging.getLogger("medtfx").exception("the run on span %d failed", span)
        console.say(f"medtfx: the run on span {span} failed ({type(err).__name__}: "
                    f"{str(err).splitlines()[0] if str(err) else ''}); it will run again")
        return None


def import_arrival(incoming: str, data_root: str, imports_dir: str, config: PipelineConfig,
                   console: Console) -> str | None:
    """Labelled images arriving in the task's published layout, imported into shards that
    `register` then takes as incoming files (links in a folder of their own, beside the
    import's manifest and quarantine list); None while a published file is still being
    written. Returning patients keep the shard an earlier arrival gave them, and the same
    images import to the same bytes, so an arrival registered before is recognised."""
    from pipeline.data.importer import imported
    from pipeline.data.shards import list_shards

    paths = [os.path.join(parent, name) for parent, _, names in os.walk(incoming)
             for name in names]
    _, writing = inc.split_settled(paths, config.retrain.settle_seconds)
    if writing:
        console.say(f"medtfx: {len(writing)} files in {incoming} changed in the last "
                    f"{config.retrain.settle_seconds:g} s (still being written?): nothing "
                    "imported; run again later")
        return None
    pinned = {int(patient): shard for number in spans.list_arrivals(data_root)
              for patient, shard in spans.arrival_record(data_root, number)["patients"].items()}
    shards_dir = imported(incoming, imports_dir, config, console.say, pinned)
    arrival = os.path.join(shards_dir, "arrival")
    os.makedirs(arrival, exist_ok=True)
    for shard in list_shards(shards_dir, "train"):
        link = os.path.join(arrival, os.path.basename(shard.path))
        if not os.path.exists(link):
            os.link(shard.path, link)
    return arrival


def wait_until_settled(incoming: str, poll_seconds: float, settle_seconds: float,
                       sleep: Callable[[float], None] = time.sleep) -> list[str]:
    """Blocks until the incoming folder holds files that have not changed for
    `settle_seconds` (an upload has finished); returns them."""
    last, since = None, time.monotonic()
    while True:
        files = inc.list_incoming(incoming)
        state = [(p, os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in files]
        if state != last:
            last, since = state, time.monotonic()
        elif files and time.monotonic() - since >= settle_seconds:
            return files
        sleep(poll_seconds)


def run_retrain(config: PipelineConfig, incoming: str, data_root: str, quarantine_root: str,
                work: WorkDir, console: Console, register_only: bool = False,
                watch: bool = False, strict: bool = False) -> int:
    """`medtfx retrain`: a published layout's new images imported first, then `retrain`,
    each new span run through the pipeline unless `register_only`."""
    def train() -> int:
        return 0 if register_only else run_pipeline(config, data_root, work, console, strict)

    run_config = config
    if config.source.imported:
        incoming = import_arrival(incoming, data_root, work.imports, config, console)
        if incoming is None:
            return 0
        run_config = config.model_copy(deep=True)
        run_config.retrain.settle_seconds = 0  # our own shards, written whole
    try:
        return retrain(incoming, data_root, quarantine_root, run_config, console, train,
                       watch=watch)
    except KeyboardInterrupt:
        console.say("medtfx: stopped; incoming files not yet registered are untouched")
        return 130
