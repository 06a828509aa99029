"""Spans, arrivals, incoming checks, the quarantine and the retrain lock, without running the
pipeline."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import tensorflow as tf

from modules import features as F
from modules.settings import ImageLimits
from pipeline.config import load_config
from pipeline.data import spans
from pipeline.data.incoming import QUARANTINE_REPORT, Verdict, check_incoming, quarantine
from pipeline.data.shards import shard_filename
from pipeline.core.files import AlreadyExistsError
from pipeline.core.lock import LockedError
from pipeline.ops.retrain import register, retrain_lock, wait_until_settled
from tests.helpers import REPO, medtfx
from tests.test_input_checks import rewrite_record


def write_shard(folder, index: int, records: list[bytes]) -> str:
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, shard_filename("train", index, len(records)))
    with tf.io.TFRecordWriter(path) as writer:
        for record in records:
            writer.write(record)
    return path


def arrival(data_root, number: int, shards: dict[int, list[bytes]]) -> None:
    for index, records in shards.items():
        write_shard(spans.arrival_dir(str(data_root), number), index, records)


def read(path) -> list[bytes]:
    return [r.numpy() for r in tf.data.TFRecordDataset(str(path))]


@pytest.mark.parametrize("window, expected", [("latest", [3]), ("all", [1, 2, 3]), (2, [2, 3])])
def test_the_window_picks_arrivals(window, expected):
    assert spans.window_of([1, 2, 3], window) == expected


def test_a_span_concatenates_each_shard_over_the_window_into_valid_tfrecords(tmp_path):
    arrival(tmp_path, 1, {0: [b"a0", b"a1"], 1: [b"b0"]})
    arrival(tmp_path, 2, {0: [b"c0"]})  # shard 1 did not come this time
    span = spans.build_span(str(tmp_path), 2, "all", train_shards=2)
    assert read(os.path.join(span, "train00-3.tfrec")) == [b"a0", b"a1", b"c0"]
    assert read(os.path.join(span, "train01-1.tfrec")) == [b"b0"]
    with open(os.path.join(span, spans.SPAN_MANIFEST)) as f:
        manifest = json.load(f)
    assert manifest["arrivals"] == [1, 2]
    assert manifest["shards"]["train00"] == ["arrivals/1/train00-2.tfrec",
                                             "arrivals/2/train00-1.tfrec"]
    assert spans.list_spans(str(tmp_path)) == [2]
    assert spans.latest_span_dir(str(tmp_path)) == span


def test_a_span_missing_a_shard_is_refused_and_an_existing_span_never_replaced(tmp_path):
    arrival(tmp_path, 1, {0: [b"a"]})
    with pytest.raises(spans.SpanError, match="span 1 would lack train01"):
        spans.build_span(str(tmp_path), 1, "all", train_shards=2)
    assert spans.list_spans(str(tmp_path)) == []
    arrival(tmp_path, 1, {1: [b"b"]})
    spans.build_span(str(tmp_path), 1, "all", train_shards=2)
    with pytest.raises(AlreadyExistsError, match="already exists"):
        spans.build_span(str(tmp_path), 1, "latest", train_shards=2)
    assert read(tmp_path / "span-1" / "train00-1.tfrec") == [b"a"]


def test_incoming_files_outside_the_layout_are_rejected_with_a_reason(tmp_path):
    paths = [str(tmp_path / name) for name in
             ("notes.txt", "test00-3.tfrec", "train20-3.tfrec", "train01-2.tfrec",
              "train01-4.tfrec")]
    for path in paths:
        open(path, "wb").close()
    verdicts = {os.path.basename(v.path): v.problems
                for v in check_incoming(paths, "unused", 15, None, {}, ImageLimits())}
    assert "not a labelled shard" in verdicts["notes.txt"][0]
    assert "not a labelled shard" in verdicts["test00-3.tfrec"][0]
    assert "beyond data.train_shards (15)" in verdicts["train20-3.tfrec"][0]
    assert "a second file for train01" in verdicts["train01-2.tfrec"][0]
    assert verdicts["train01-2.tfrec"] == verdicts["train01-4.tfrec"]


def test_quarantine_moves_files_with_a_report_and_never_mixes_batches(tmp_path):
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    (incoming / "train00-1.tfrec").write_bytes(b"broken")
    first = quarantine([Verdict(str(incoming / "train00-1.tfrec"), ("cut short",))],
                       str(tmp_path / "q"))
    (incoming / "train00-1.tfrec").write_bytes(b"again")
    second = quarantine([Verdict(str(incoming / "train00-1.tfrec"), ("cut short",))],
                        str(tmp_path / "q"))
    assert first != second and list(incoming.iterdir()) == []
    assert open(os.path.join(first, "train00-1.tfrec"), "rb").read() == b"broken"
    assert open(os.path.join(second, "train00-1.tfrec"), "rb").read() == b"again"
    with open(os.path.join(first, QUARANTINE_REPORT)) as f:
        assert json.load(f) == {"files": {"train00-1.tfrec": ["cut short"]}}


def test_a_batch_that_would_leave_a_span_incomplete_is_not_registered(tmp_path, tiny_data):
    """The good files stay in the incoming folder; nothing is half-registered."""
    import shutil

    from pipeline.core.console import Console

    incoming = tmp_path / "incoming"
    incoming.mkdir()
    for name in sorted(n for n in os.listdir(tiny_data) if n.startswith("train"))[:3]:
        shutil.copy(os.path.join(tiny_data, name), incoming / name)
    config = load_config(None, ["data.spans=true", "retrain.settle_seconds=0"])
    before = sorted(os.listdir(incoming))
    with pytest.raises(spans.SpanError, match="the new span would lack"):
        register(str(incoming), str(tmp_path / "data"), str(tmp_path / "q"), config,
                 Console(None, verbose=True))
    assert sorted(os.listdir(incoming)) == before
    assert spans.list_arrivals(str(tmp_path / "data")) == []


def test_a_file_still_being_written_is_neither_taken_nor_quarantined(tmp_path, tiny_data):
    import shutil
    import time

    from pipeline.core.console import Console

    incoming = tmp_path / "incoming"
    incoming.mkdir()
    for name in sorted(n for n in os.listdir(tiny_data) if n.startswith("train")):
        shutil.copy(os.path.join(tiny_data, name), incoming / name)
    finished = time.time() - 120  # every file but one finished two minutes ago
    uploading = sorted(incoming.iterdir())[4]
    for path in incoming.iterdir():
        if path != uploading:
            os.utime(path, (finished, finished))
    data = uploading.read_bytes()
    uploading.write_bytes(data[:len(data) // 3])  # a third of it has arrived
    config = load_config(None, ["data.spans=true", "retrain.settle_seconds=60"])
    with pytest.raises(spans.SpanError, match=f"would lack {uploading.name[:7]}"):
        register(str(incoming), str(tmp_path / "data"), str(tmp_path / "q"), config,
                 Console(None, verbose=True))
    assert uploading.read_bytes() == data[:len(data) // 3]  # untouched
    assert not (tmp_path / "q").exists()  # and not quarantined as a cut-short file


def test_watch_survives_a_failed_run_and_runs_the_span_again_after_growing_pauses(
        tmp_path, tiny_data):
    import shutil

    from pipeline.core.console import Console
    from pipeline.ops.retrain import retrain

    incoming = tmp_path / "incoming"
    incoming.mkdir()
    for name in sorted(n for n in os.listdir(tiny_data) if n.startswith("train")):
        shutil.copy(os.path.join(tiny_data, name), incoming / name)
    config = load_config(None, ["data.spans=true", "retrain.settle_seconds=0",
                                "retrain.poll_seconds=0.01"])
    outcomes = [RuntimeError("No space left on device"), RuntimeError("still full"), None]
    pauses = []

    def run() -> int:
        outcome = outcomes.pop(0)
        if outcome is None:
            raise KeyboardInterrupt  # ends the watch once the third run starts
        raise outcome

    lines = []
    console = Console(None, verbose=True)
    console.say = lambda text="", end="\n": lines.append(text)
    with pytest.raises(KeyboardInterrupt):
        retrain(str(incoming), str(tmp_path / "data"), str(tmp_path / "q"), config, console,
                run, watch=True, sleep=pauses.append)
    assert outcomes == [] and pauses == [0.01, 0.02]  # three runs, pauses doubling
    assert spans.list_spans(str(tmp_path / "data")) == [1]  # registered once, kept
    assert sum("registered span 1" in line for line in lines) == 1
    assert any("span 1 failed (RuntimeError: No space left on device)" in line
               for line in lines)
    assert sum("running span 1 again" in line for line in lines) == 2


def test_a_file_delivered_twice_is_registered_once_and_a_patient_keeps_their_fold(
        tmp_path, tiny_data):
    import shutil

    from pipeline.sample.synth import SynthSpec, generate
    from pipeline.core.console import Console

    incoming, data = tmp_path / "incoming", tmp_path / "data"
    incoming.mkdir()
    config = load_config(None, ["data.spans=true", "retrain.settle_seconds=0"])

    def deliver(folder: str) -> list[str]:
        names = sorted(n for n in os.listdir(folder) if n.startswith("train"))
        for name in names:
            shutil.copy(os.path.join(folder, name), incoming / name)
        return names

    def register_all():
        return register(str(incoming), str(data), str(tmp_path / "q"), config,
                        Console(None, verbose=True))

    deliver(tiny_data)
    assert register_all().span == 1
    deliver(tiny_data)  # the same delivery again (or a crash before incoming was cleared)
    again = register_all()
    assert again.span is None and os.listdir(incoming) == []
    assert spans.list_arrivals(str(data)) == [1]

    later = str(tmp_path / "later")
    generate(later, SynthSpec(images=300, size=32, seed=8, malignant_share=0.3,
                              first_patient=10_000))
    evaluated = sorted(spans.file_patients(glob_one(data / "arrivals" / "1", "train13")))[0]
    moved = glob_one(later, "train00")  # fold 0 trains; train13 is fold 4, which gates
    rewrite_record(moved, 0, lambda f: f[F.PATIENT_KEY].int64_list.value.__setitem__(
        0, evaluated))
    deliver(later)
    done = register_all()
    assert done.span == 2 and len(done.accepted) == 14
    ((verdict),) = done.quarantined
    assert os.path.basename(verdict.path) == os.path.basename(moved)
    assert verdict.problems == (f"patient {evaluated} is in fold 0 here but in fold 4 "
                                "(train13) in arrival 1: one patient's images stay in one "
                                "fold",)


def glob_one(folder, prefix: str) -> str:
    (path,) = [os.path.join(folder, n) for n in os.listdir(folder) if n.startswith(prefix)]
    return path


def test_one_retrain_per_data_root_and_the_lock_dies_with_its_holder(tmp_path):
    with retrain_lock(str(tmp_path)):
        with pytest.raises(LockedError,
                           match=f"another medtfx retrain \\(pid {os.getpid()}\\)"):
            with retrain_lock(str(tmp_path)):
                pass
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pipeline.ops.retrain import "
         "retrain_lock; retrain_lock(sys.argv[1]).__enter__(); print('held', flush=True); "
         "time.sleep(600)", str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(LockedError, match=f"pid {holder.pid}"):
            with retrain_lock(str(tmp_path)):
                pass
    finally:
        holder.kill()  # SIGKILL: no chance to clean up
        holder.wait()
    with retrain_lock(str(tmp_path)):  # the kernel released it; the file left behind is no lock
        assert (tmp_path / ".medtfx-retrain.lock").read_text() == str(os.getpid())


def test_a_second_run_on_a_work_dir_in_use_is_refused_with_the_holders_pid(
        tmp_path, tiny_data, capfd):
    from pipeline.cli.main import main

    work = tmp_path / "work"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pipeline.core.lock import FolderLock; "
         "FolderLock(sys.argv[1], '.medtfx-run.lock', 'run').__enter__(); "
         "print('held', flush=True); time.sleep(600)", str(work)],
        stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline() == "held\n"
        assert main(["run", "--data-root", tiny_data, "--work-dir", str(work)]) == 1
    finally:
        holder.kill()
        holder.wait()
    out = capfd.readouterr().out
    assert f"another medtfx run (pid {holder.pid}) is using {work}" in out
    assert not (work / "pipeline").exists()


def test_watch_waits_until_files_stop_changing(tmp_path):
    clock = {"polls": 0}
    path = tmp_path / "train00-1.tfrec"

    def sleep(seconds):  # an upload that grows for three polls, then stops
        clock["polls"] += 1
        if clock["polls"] <= 3:
            with open(path, "ab") as f:
                f.write(b"x")

    path.write_bytes(b"")
    files = wait_until_settled(str(tmp_path), poll_seconds=0, settle_seconds=0, sleep=sleep)
    assert files == [str(path)] and clock["polls"] >= 4 and path.read_bytes() == b"xxx"


def test_retrain_refuses_a_missing_incoming_folder_and_a_bad_window(tmp_path):
    result = medtfx("retrain", "--incoming", str(tmp_path / "nope"), "--data-root",
                    str(tmp_path / "data"))
    assert result.returncode == 2 and "incoming folder does not exist" in result.stderr
    (tmp_path / "in").mkdir()
    result = medtfx("retrain", "--incoming", str(tmp_path / "in"), "--data-root",
                    str(tmp_path / "data"), "--set", "window=0")
    assert result.returncode == 2 and "data.window 0 must be" in result.stderr


def test_watch_stops_cleanly_on_ctrl_c_and_releases_the_lock(tmp_path):
    import signal
    import time

    (tmp_path / "in").mkdir()
    command = [os.path.join(os.path.dirname(sys.executable), "medtfx"), "retrain", "--watch",
               "--incoming", str(tmp_path / "in"), "--data-root", str(tmp_path / "data"),
               "--work-dir", str(tmp_path / "work"), "--set", "retrain.poll_seconds=0.2"]
    # A shell that starts jobs in the background (no job control) makes them ignore SIGINT,
    # and Python then installs no KeyboardInterrupt handler: give Ctrl-C back its default.
    watcher = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, preexec_fn=lambda: signal.signal(signal.SIGINT,
                                                                           signal.SIG_DFL))
    lock = tmp_path / "data" / ".medtfx-retrain.lock"
    deadline = time.monotonic() + 120
    while not (lock.exists() and lock.read_text()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert lock.read_text() == str(watcher.pid)
    watcher.send_signal(signal.SIGINT)
    out, err = watcher.communicate(timeout=60)
    assert watcher.returncode == 130, out + err
    assert "watching" in out and "stopped" in out and err == ""
    with retrain_lock(str(tmp_path / "data")):  # released
        pass
