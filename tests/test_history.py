"""`medtfx history`: the runs in a work dir's ML Metadata, and a served model's lineage back to
its data files, from a store written here the way LocalDagRunner writes one, for what the
tiny runs cannot show (spans, an ensemble, a baseline, failed components, changed data
files). tests/test_pipeline_e2e.py reads what two real `medtfx run`s recorded."""

from __future__ import annotations

import json
import os

import pytest
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2 as mlmd
from tfx.utils import io_utils

from pipeline.cli.main import main
from pipeline.results.history import list_runs, resolve_span_pattern, trace_version
from pipeline.results.history_text import lineage_lines, run_lines
from pipeline.results.gate import EvaluationConfig
from pipeline.results.mlmd import open_store
from pipeline.results.packaging import PackagerSettings
from modules.task import TaskSpec

COMPLETE, CACHED, FAILED = (mlmd.Execution.COMPLETE, mlmd.Execution.CACHED,
                            mlmd.Execution.FAILED)


class RecordedRuns:
    """Writes runs into an ML Metadata store as LocalDagRunner records them: a pipeline_run
    context per run, a node context per component, and events keyed by input/output name."""

    def __init__(self, path: str):
        config = mlmd.ConnectionConfig()
        config.sqlite.filename_uri = path
        config.sqlite.connection_mode = mlmd.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
        self.store = metadata_store.MetadataStore(config)
        self.nodes: dict[str, int] = {}

    def run(self, name: str) -> int:
        run_type = self.store.put_context_type(mlmd.ContextType(name="pipeline_run"))
        return self.store.put_contexts([mlmd.Context(type_id=run_type, name=name)])[0]

    def artifact(self, type_name: str, uri: str, **custom) -> mlmd.Artifact:
        properties = {"span": mlmd.INT, "version": mlmd.INT, "split_names": mlmd.STRING}
        artifact_type = mlmd.ArtifactType(
            name=type_name, properties=properties if type_name == "Examples" else {})
        artifact = mlmd.Artifact(type_id=self.store.put_artifact_type(artifact_type), uri=uri)
        for name, value in custom.items():
            target = (artifact.properties if name == "split_names"
                      else artifact.custom_properties)[name]
            if isinstance(value, str):
                target.string_value = value
            elif isinstance(value, float):
                target.double_value = value
            else:
                target.int_value = value
        return artifact

    def execute(self, run: int, component: str, inputs: dict | None = None,
                outputs: dict | None = None, state=COMPLETE, **properties) -> dict:
        """Records one execution; `outputs` are new artifacts, or earlier ones for a
        CACHED execution. Returns the outputs as stored."""
        execution = mlmd.Execution(type_id=self.store.put_execution_type(
            mlmd.ExecutionType(name=component.split("_")[0])), last_known_state=state)
        for name, value in properties.items():
            execution.custom_properties[name].string_value = value
        execution_id = self.store.put_executions([execution])[0]
        outputs = {key: a if a.id else self.store.get_artifacts_by_id(
            self.store.put_artifacts([a]))[0] for key, a in (outputs or {}).items()}
        self.store.put_events([
            mlmd.Event(artifact_id=a.id, execution_id=execution_id, type=kind,
                       path=mlmd.Event.Path(steps=[mlmd.Event.Path.Step(key=key),
                                                   mlmd.Event.Path.Step(index=0)]))
            for kind, side in ((mlmd.Event.INPUT, inputs or {}), (mlmd.Event.OUTPUT, outputs))
            for key, a in side.items()])
        if component not in self.nodes:
            node_type = self.store.put_context_type(mlmd.ContextType(name="node"))
            self.nodes[component] = self.store.put_contexts(
                [mlmd.Context(type_id=node_type, name=f"medtfx-melanoma.{component}")])[0]
        self.store.put_attributions_and_associations([], [
            mlmd.Association(execution_id=execution_id, context_id=context)
            for context in (run, self.nodes[component])])
        return outputs


def write_shards(root, names: list[str]) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"records")


SPLITS = ["train00", "train01"]
PATTERNS = {name: f"span-{{SPAN}}/{name}-*.tfrec" for name in SPLITS}


@pytest.fixture
def recorded(tmp_path) -> dict:
    """Three runs: span 3 read and a model trained; a two-fold ensemble on the cached data,
    blessed against the first model and pushed as version 7; a run stopped by DataGate."""
    data = tmp_path / "data"
    write_shards(data, ["span-2/train00-3.tfrec", "span-2/train01-3.tfrec",
                        "span-3/train00-4.tfrec", "span-3/train01-5.tfrec"])
    work = tmp_path / "work"
    work.mkdir()
    runs = RecordedRuns(str(work / "metadata.sqlite"))
    p = str(work / "pipeline")
    fingerprint = "\n".join(io_utils.generate_fingerprint(
        name, str(data / pattern.replace("{SPAN}", "3"))) for name, pattern in PATTERNS.items())
    input_config = json.dumps({"splits": [{"name": n, "pattern": p}
                                          for n, p in PATTERNS.items()]})

    first = runs.run("r1")
    examples = runs.execute(first, "ImportExampleGen", outputs={"examples": runs.artifact(
        "Examples", f"{p}/examples/1", span=3, split_names=json.dumps(SPLITS),
        input_fingerprint=fingerprint)}, input_base=str(data), input_config=input_config)
    graph = runs.execute(first, "Transform", examples, {
        "transform_graph": runs.artifact("TransformGraph", f"{p}/transform_graph/2")})
    baseline = runs.execute(first, "Trainer", {**examples, **graph},
                            {"model": runs.artifact("Model", f"{p}/Trainer/model/3")})

    second = runs.run("r2")
    runs.execute(second, "ImportExampleGen", outputs=examples, state=CACHED,
                 input_base=str(data), input_config=input_config)
    runs.execute(second, "Transform", examples, graph, state=CACHED)
    members = {f"model_{k}": runs.execute(
        second, f"Trainer_fold{k}", {**examples, **graph, "base_model": baseline["model"]},
        {"model": runs.artifact("Model", f"{p}/Trainer_fold{k}/model/{4 + k}")})["model"]
        for k in range(2)}
    ensemble = runs.execute(second, "Ensemble", {**members, **graph},
                            {"model": runs.artifact("Model", f"{p}/Ensemble/model/6")})
    evaluated = runs.execute(
        second, "Evaluator", {**ensemble, **examples, "baseline_model": baseline["model"]},
        {"blessing": runs.artifact("ModelBlessing", f"{p}/blessing/7", blessed=1,
                                   baseline_model_id=baseline["model"].id),
         "evaluation": runs.artifact("ModelEvaluation", f"{p}/evaluation/7")})
    settings = PackagerSettings(
        pipeline_name="medtfx-melanoma", backbone="pneumonia_cnn", image_size=32, splits={},
        task=TaskSpec(), target_sensitivity=0.9,
        gate=EvaluationConfig(min_slice_positives=1, min_slice_negatives=1)).parameter()
    packaged = runs.execute(second, "ModelPackager", {**ensemble, **evaluated}, {
        "packaged_model": runs.artifact("Model", f"{p}/packaged_model/8", packaged=1,
                                        operating_threshold=0.25)}, settings=settings)
    runs.execute(second, "Pusher", {"model": packaged["packaged_model"],
                                    "model_blessing": evaluated["blessing"]},
                 {"pushed_model": runs.artifact("PushedModel", f"{p}/pushed_model/9", pushed=1,
                                                pushed_version="7",
                                                pushed_destination=str(work / "serving/7"))})

    third = runs.run("r3")
    runs.execute(third, "ImportExampleGen", outputs=examples, state=CACHED,
                 input_base=str(data), input_config=input_config)
    runs.execute(third, "DataGate", state=FAILED)
    return {"work": work, "data": data, "baseline": baseline["model"].id,
            "ensemble": ensemble["model"].id}


def test_span_pattern_fills_the_span_as_example_gen_does():
    resolve = resolve_span_pattern
    assert resolve("span-{SPAN}/train00-*.tfrec", 12, None) == "span-12/train00-*.tfrec"
    assert resolve("span-{SPAN:3}/train00-*.tfrec", 4, None) == "span-004/train00-*.tfrec"
    assert resolve("train00-*.tfrec", 0, None) == "train00-*.tfrec"  # today's flat layout


def test_lineage_of_an_ensemble_reaches_its_span_files_and_flags_a_changed_one(recorded):
    data = recorded["data"]
    (data / "span-3/train01-5.tfrec").write_bytes(b"records, rewritten since")
    lineage = trace_version(open_store(str(recorded["work"] / "metadata.sqlite")), "7")

    assert lineage.recorded_by == ["r2"] and lineage.operating_threshold == 0.25
    assert [(s.component, s.run_id) for s in lineage.trained] == [
        ("Trainer_fold0", "r2"), ("Trainer_fold1", "r2"), ("Ensemble", "r2")]
    assert lineage.trained[-1].artifact_id == recorded["ensemble"]
    # Cached in r2: the producers are the executions of r1 that computed them.
    assert (lineage.transform.component, lineage.transform.run_id) == ("Transform", "r1")
    (source,) = lineage.data
    assert (source.examples.component, source.examples.run_id) == ("ImportExampleGen", "r1")
    assert (source.span, source.split_names, source.input_base) == (3, SPLITS, str(data))
    assert [(s.name, s.pattern, s.files, s.unchanged) for s in source.splits] == [
        ("train00", PATTERNS["train00"], [str(data / "span-3/train00-4.tfrec")], True),
        ("train01", PATTERNS["train01"], [str(data / "span-3/train01-5.tfrec")], False)]
    assert (lineage.baseline.artifact_id, lineage.baseline.component) == (
        recorded["baseline"], "Trainer")

    text = "\n".join(lineage_lines(lineage))
    assert "serving version 7" in text and "pushed by run r2" in text
    assert (f"train01 {PATTERNS['train01']}: {data / 'span-3/train01-5.tfrec'} "
            "(changed since ImportExampleGen read them)") in text
    assert f"baseline Model {recorded['baseline']}" in text


def test_runs_are_listed_oldest_first_with_their_outcome(recorded):
    runs = list_runs(open_store(str(recorded["work"] / "metadata.sqlite")))
    assert [r.run_id for r in runs] == ["r1", "r2", "r3"]
    assert [r.spans for r in runs] == [[3], [3], [3]]
    assert (runs[0].model_id, runs[0].blessed, runs[0].pushed_version) == (None, None, None)
    assert (runs[1].model_id, runs[1].model_cached, runs[1].blessed) == (
        recorded["ensemble"], False, True)
    assert (runs[1].pushed_version, runs[1].operating_threshold) == ("7", 0.25)
    assert runs[2].failed == ["DataGate"] and runs[2].model_id is None

    lines = run_lines(runs)
    assert len(lines) == 4 and lines[0].split() == [
        "run", "span", "model", "blessed", "pushed", "AUC", "threshold"]
    assert lines[2].split() == ["r2", "3", str(recorded["ensemble"]), "(trained)", "yes", "7",
                                "-", "0.250"]
    assert lines[3].endswith("failed: DataGate")
    assert lines[0].index("blessed") == lines[2].index("yes")  # columns line up


def test_history_prints_json_for_scripts(recorded, capfd):
    assert main(["history", "--work-dir", str(recorded["work"]), "--json"]) == 0
    runs = json.loads(capfd.readouterr().out)["runs"]
    assert [(r["run_id"], r["pushed_version"]) for r in runs] == [
        ("r1", None), ("r2", "7"), ("r3", None)]
    assert main(["history", "--work-dir", str(recorded["work"]), "--version", "7",
                 "--json"]) == 0
    lineage = json.loads(capfd.readouterr().out)
    assert lineage["data"][0]["splits"][0]["files"] == [
        str(recorded["data"] / "span-3/train00-4.tfrec")]


def test_spans_registered_but_never_trained_are_listed(recorded, capfd):
    """Span 2 was registered and never run; span 3's second run trained a model."""
    work, data = str(recorded["work"]), str(recorded["data"])
    assert main(["history", "--work-dir", work, "--data-root", data]) == 0
    assert capfd.readouterr().out.splitlines()[-1] == (
        f"medtfx: registered in {data} but never trained: span 2")
    assert main(["history", "--work-dir", work, "--data-root", data, "--json"]) == 0
    assert json.loads(capfd.readouterr().out)["untrained_spans"] == [2]


def test_an_unknown_version_is_one_line_naming_the_pushed_ones(recorded, capfd):
    assert main(["history", "--work-dir", str(recorded["work"]), "--version", "8"]) == 1
    out = capfd.readouterr()
    assert out.out == "error: no push recorded serving version 8; pushed versions: 7\n"


def test_a_work_dir_without_a_store_is_one_line(tmp_path, capfd):
    assert main(["history", "--work-dir", str(tmp_path)]) == 1
    out = capfd.readouterr()
    assert out.err == (f"error: {tmp_path / 'metadata.sqlite'}: no ML Metadata store "
                       "(run `medtfx run` first)\n")
    assert out.out == "" and not os.listdir(tmp_path)
