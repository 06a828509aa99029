"""`medtfx compile-kfp`: the compiled file is a PipelineSpec of the same pipeline as the local
run, with the image, parameters and resources from the config, and it compiles offline.

The golden file tests/golden/kubeflow-pipeline.yaml holds the whole compiled spec. After an
intended change to the pipeline, refresh it and review the diff:

    MEDTFX_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_kubeflow_compile.py -k golden
"""

from __future__ import annotations

import difflib
import json
import os
import shutil
import subprocess

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from pipeline.config import load_config
from tests.helpers import FINGERPRINTED, REPO, medtfx, require_capability
from tests.kubeflow_helpers import KUBEFLOW_SET, set_args

GOLDEN = os.path.join(REPO, "tests", "golden", "kubeflow-pipeline.yaml")
# The golden file outlives edits to the code of FINGERPRINTED (pipeline/core/fingerprint.py).
ENTRYPOINT = ["python", "-m", "pipeline.kubeflow_entrypoint"]
DATAFLOW = ["--runner=DataflowRunner", "--project=medtfx-test", "--region=europe-west4",
            "--temp_location=gs://medtfx-test/tmp",
            "--sdk_container_image=registry.example/medtfx:test"]
COMPILE_SET = KUBEFLOW_SET + [
    f"kubeflow.beam_args={json.dumps(DATAFLOW)}",
    "kubeflow.resources={Trainer: {cpu: 8, memory: 30Gi, accelerator_type: NVIDIA_TESLA_T4, "
    "accelerator_count: 1}, Transform: {cpu: 4, memory: 16G}, ImportExampleGen: {memory: 8Gi}, "
    "Evaluator: {cpu: 8, memory: 16Gi, accelerator_type: NVIDIA_L4, accelerator_count: 1}, "
    "BulkInferrer: {cpu: 8, memory: 16Gi, accelerator_type: NVIDIA_L4, accelerator_count: 1}}",
    "scoring.test_shards=true",  # auto is off where the data root is a runtime parameter
]


def offline() -> tuple[str, ...]:
    """A command prefix that takes the network away (a network namespace of its own)."""
    tried = (subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
             if shutil.which("unshare") else None)
    require_capability(tried is not None and tried.returncode == 0,
                       "`unshare -n` to take the network away (" + (
                           "no unshare command: util-linux" if tried is None else
                           tried.stderr.strip() or "refused: it needs root") + ")")
    return ("unshare", "-n")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict:
    """`medtfx compile-kfp` run without network and without any credentials."""
    out = tmp_path_factory.mktemp("kfp")
    env = {"PATH": os.environ["PATH"], "HOME": str(out), "TMPDIR": str(out),
           # the code under test when it is not the installed copy (a git worktree)
           **{k: v for k, v in os.environ.items() if k == "PYTHONPATH"}}
    result = medtfx("compile-kfp", "--output", str(out / "pipeline.yaml"),
                    *set_args(COMPILE_SET), wrapper=offline(), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    text = (out / "pipeline.yaml").read_text()
    return {"text": text, "spec": yaml.safe_load(text), "stdout": result.stdout}


@pytest.fixture(scope="module")
def config():
    return load_config(None, COMPILE_SET)


@pytest.fixture(scope="module")
def local_pipeline(config):
    from pipeline.pipeline import create_pipeline

    return create_pipeline(config, data_root="/data", pipeline_root="/root",
                           serving_dir="/serving")


def tasks(spec: dict) -> dict:
    return spec["root"]["dag"]["tasks"]


def executor(spec: dict, task: str) -> dict:
    label = spec["components"][tasks(spec)[task]["componentRef"]["name"]]["executorLabel"]
    return spec["deploymentSpec"]["executors"][label]


def test_the_compiled_file_parses_into_kfps_pipeline_spec(compiled, config, local_pipeline):
    spec = json_format.ParseDict(compiled["spec"], pipeline_spec_pb2.PipelineSpec())
    assert spec.schema_version == "2.1.0"
    assert spec.pipeline_info.name == config.pipeline_name
    assert spec.default_pipeline_root == "gs://medtfx-test/root"
    # The resolver compiles to two query tasks.
    assert f"compiled {len(local_pipeline.components) + 1} tasks" in compiled["stdout"]


def test_tasks_and_dependencies_are_those_of_the_local_pipeline(compiled, local_pipeline):
    """The resolver compiles to two query tasks; every other component to one task that
    waits for exactly its upstream components."""
    from tfx.dsl.components.common.resolver import Resolver

    def task_names(node) -> list[str]:
        if isinstance(node, Resolver):
            return [f"{node.id}-model-blessing-resolver", f"{node.id}-model-resolver"]
        return [node.id]

    def as_dependency(node) -> str:
        return task_names(node)[-1]

    compiled_tasks = tasks(compiled["spec"])
    assert sorted(compiled_tasks) == sorted(
        name for node in local_pipeline.components for name in task_names(node))
    for node in local_pipeline.components:
        if isinstance(node, Resolver):
            continue
        assert sorted(compiled_tasks[node.id].get("dependentTasks", [])) == sorted(
            as_dependency(upstream) for upstream in node.upstream_nodes), node.id
    assert "DataGate" in compiled_tasks["Transform"]["dependentTasks"]  # the data gate holds
    assert "Evaluator" in compiled_tasks["Pusher"]["dependentTasks"]
    assert {"TestDataGate", "ModelPackager", "Evaluator"} <= set(
        compiled_tasks["BulkInferrer"]["dependentTasks"])  # a blessed model, checked data


def test_every_container_runs_the_image_with_medtfx_entrypoint_and_importable_code(
        compiled, local_pipeline):
    from tfx.utils import import_utils

    spec = compiled["spec"]
    containers = {name: executor(spec, name)["container"] for name in tasks(spec)
                  if "container" in executor(spec, name)}
    assert len(containers) == len(local_pipeline.components) - 1  # all but the resolver
    for name, container in containers.items():
        assert container["image"] == "registry.example/medtfx:test", name
        assert container["command"] == ENTRYPOINT, name
        args = container["args"]
        assert args[-len(DATAFLOW):] == DATAFLOW, name  # Beam arguments reach every task
        executor_class = args[args.index("--executor_class_path") + 1]
        assert import_utils.import_class_by_path(executor_class), name
    assert containers["DataGate"]["args"][1] == "components.data_gate.DataGate_Executor"
    assert containers["Pusher"]["args"][1] == "components.serving_pusher.Executor"
    assert containers["ModelPackager"]["args"][1] == \
        "components.model_packager.ModelPackager_Executor"
    assert containers["TestExampleValidator"]["args"][1] == "components.serving_validator.Executor"
    assert containers["BulkInferrer"]["args"][1] == "components.bulk_inferrer.Executor"
    driver = containers["ImportExampleGen"]["lifecycle"]["preCacheCheck"]
    assert driver["args"][-len(DATAFLOW):] == DATAFLOW


def test_user_code_is_referenced_by_dotted_path_and_paths_point_into_the_image(compiled):
    from tfx.utils import import_utils

    spec = compiled["spec"]
    constants = {
        (name, parameter): source["runtimeValue"]["constant"]
        for name, task in tasks(spec).items()
        for parameter, source in task.get("inputs", {}).get("parameters", {}).items()
        if "runtimeValue" in source}
    assert constants[("Transform", "preprocessing_fn")] == "modules.preprocessing.preprocessing_fn"
    assert constants[("Trainer", "run_fn")] == "modules.trainer.run_fn"
    for user_code in (("Transform", "preprocessing_fn"), ("Trainer", "run_fn")):
        module, function = constants[user_code].rsplit(".", 1)
        assert callable(import_utils.import_func_from_module(module, function))
    assert constants[("Evaluator", "module_path")] == "modules.evaluation"
    assert callable(import_utils.import_func_from_module("modules.evaluation",
                                                         "custom_extractors"))
    assert not {p for _, p in constants if p == "module_file"}  # nothing to upload
    assert constants[("TaskSchema", "schema_file")] == "/medtfx/schema/melanoma.pbtxt"
    destination = json.loads(constants[("Pusher", "push_destination")])
    assert destination["filesystem"]["base_directory"] == "gs://medtfx-test/serving"


def test_data_root_and_train_args_are_runtime_parameters_with_defaults(compiled, config):
    from tfx import v1 as tfx

    spec = compiled["spec"]
    declared = spec["root"]["inputDefinitions"]["parameters"]
    assert sorted(declared) == ["data_root", "train_args"]
    assert declared["data_root"] == {"parameterType": "STRING", "isOptional": True,
                                     "defaultValue": "gs://medtfx-test/melanoma-512"}
    train_args = json_format.Parse(declared["train_args"]["defaultValue"],
                                   tfx.proto.TrainArgs())
    assert list(train_args.splits) == config.split_plan.names(config.split_plan.train)
    consumers = {(name, parameter): source["componentInputParameter"]
                 for name, task in tasks(spec).items()
                 for parameter, source in task.get("inputs", {}).get("parameters", {}).items()
                 if "componentInputParameter" in source}
    assert consumers == {("ImportExampleGen", "input_base"): "data_root",
                         ("TestExampleGen", "input_base"): "data_root",
                         ("Trainer", "train_args"): "train_args"}


def test_train_steps_reach_the_train_args_default(tmp_path):
    from pipeline.kubeflow_runner import compile_pipeline

    compiled = compile_pipeline(load_config(None, KUBEFLOW_SET + ["train_steps=1500"]),
                                str(tmp_path / "p.yaml"))
    assert json.loads(compiled.parameters["train_args"])["num_steps"] == 1500


def test_resources_are_set_per_task_from_the_config(compiled):
    spec = compiled["spec"]
    resources = {name: executor(spec, name).get("container", {}).get("resources")
                 for name in tasks(spec)}
    assert resources.pop("Trainer") == {
        "cpuLimit": 8.0, "resourceCpuLimit": "8",
        "memoryLimit": pytest.approx(30 * 2**30 / 1e9), "resourceMemoryLimit": "30Gi",
        "accelerator": {"type": "NVIDIA_TESLA_T4", "resourceType": "NVIDIA_TESLA_T4",
                        "count": "1", "resourceCount": "1"}}
    assert resources.pop("Transform") == {"cpuLimit": 4.0, "resourceCpuLimit": "4",
                                          "memoryLimit": 16.0, "resourceMemoryLimit": "16G"}
    for scorer in ("Evaluator", "BulkInferrer"):  # the model's stages, on a GPU each
        assert resources.pop(scorer) == {
            "cpuLimit": 8.0, "resourceCpuLimit": "8",
            "memoryLimit": pytest.approx(16 * 2**30 / 1e9), "resourceMemoryLimit": "16Gi",
            "accelerator": {"type": "NVIDIA_L4", "resourceType": "NVIDIA_L4",
                            "count": "1", "resourceCount": "1"}}
    # TFX's own compiler would drop these (platform_config of a file-based ExampleGen).
    # The key is also the class name of the TestExampleGen, which gets them too.
    for example_gen in ("ImportExampleGen", "TestExampleGen"):
        assert resources.pop(example_gen) == {"memoryLimit": pytest.approx(8.589934592),
                                              "resourceMemoryLimit": "8Gi"}
    assert set(resources.values()) == {None}


def test_a_resources_key_names_a_component_or_every_component_of_a_class():
    """K-fold trainers have ids of their own; the class name covers them all."""
    from types import SimpleNamespace

    from pipeline.kubeflow_config import KubeflowConfig, ResourcesConfig
    from pipeline.kubeflow_runner import set_resources

    class Trainer:
        def __init__(self, id):
            self.id = id

    folds = SimpleNamespace(components=[Trainer("Trainer.fold0"), Trainer("Trainer.fold1")])
    spec = {"components": {f.id: {"executorLabel": f.id} for f in folds.components},
            "deploymentSpec": {"executors": {f.id: {"container": {}}
                                             for f in folds.components}}}
    set_resources(spec, folds, KubeflowConfig(resources={
        "Trainer": ResourcesConfig(accelerator_type="nvidia.com/gpu", accelerator_count=2),
        "Trainer.fold1": ResourcesConfig(cpu=0.5)}))
    fold0, fold1 = (spec["deploymentSpec"]["executors"][f.id]["container"]["resources"]
                    for f in folds.components)
    assert fold0 == {"accelerator": {"type": "nvidia.com/gpu", "resourceType": "nvidia.com/gpu",
                                     "count": "2", "resourceCount": "2"}}
    assert fold1 == {"cpuLimit": 0.5, "resourceCpuLimit": "0.5"}  # the later key wins


@pytest.mark.parametrize("resources, message", [
    ("{Trainr: {cpu: 2}}", "kubeflow.resources: Trainr: no such component; components: "
                           "ImportExampleGen, TaskSchema"),
    ("{latest_blessed_model_resolver: {cpu: 2}}", "latest_blessed_model_resolver runs no "
                                                  "container"),
])
def test_resources_for_what_is_not_a_container_task_are_refused(tmp_path, resources, message):
    from pipeline.core.errors import ConfigError
    from pipeline.kubeflow_runner import compile_pipeline

    config = load_config(None, KUBEFLOW_SET + [f"kubeflow.resources={resources}"])
    with pytest.raises(ConfigError, match=message):
        compile_pipeline(config, str(tmp_path / "p.yaml"))
    assert not (tmp_path / "p.yaml").exists()


def test_an_ensemble_compiles_to_one_trainer_task_per_fold_and_an_ensemble_task(tmp_path):
    """Each fold's model is its own input of the Ensemble task (no UnionChannel, which the
    KFP compiler cannot express), and the folds keep their own TrainArgs."""
    from tfx import v1 as tfx

    from pipeline.kubeflow_runner import compile_pipeline

    config = load_config(None, KUBEFLOW_SET + ["trainer.ensemble_folds=3"])
    compiled = compile_pipeline(config, str(tmp_path / "p.yaml"))
    spec = compiled.spec
    folds = [f"Trainer_fold{k}" for k in range(3)]
    assert set(folds) | {"Ensemble"} <= set(tasks(spec))
    assert "Trainer" not in tasks(spec)
    assert sorted(tasks(spec)["Ensemble"]["dependentTasks"]) == sorted(folds + ["Transform"])
    assert executor(spec, "Ensemble")["container"]["args"][1] == "components.ensemble.Executor"
    assert tasks(spec)["Evaluator"]["inputs"]["artifacts"]["model"]["taskOutputArtifact"] == {
        "producerTask": "Ensemble", "outputArtifactKey": "model"}
    assert list(compiled.parameters) == ["data_root"]
    splits = []
    for fold in folds:
        constant = tasks(spec)[fold]["inputs"]["parameters"]["train_args"]["runtimeValue"]
        splits.append(tuple(json_format.Parse(constant["constant"],
                                              tfx.proto.TrainArgs()).splits))
    assert len(set(splits)) == 3


def test_with_spans_example_gen_reads_the_newest_span_of_the_data_root(tmp_path):
    """The window lives in the span (built at registration), so no span-range resolver,
    which KubeflowV2DagRunner cannot compile, is needed."""
    from pipeline.kubeflow_runner import compile_pipeline

    compiled = compile_pipeline(load_config(None, KUBEFLOW_SET + ["data.spans=true"]),
                                str(tmp_path / "p.yaml"))
    parameters = tasks(compiled.spec)["ImportExampleGen"]["inputs"]["parameters"]
    input_config = json.loads(parameters["input_config"]["runtimeValue"]["constant"])
    assert [s["pattern"] for s in input_config["splits"]] == [
        f"span-{{SPAN}}/train{i:02d}-*.tfrec" for i in range(15)]
    assert parameters["input_base"] == {"componentInputParameter": "data_root"}


def test_vertex_training_makes_the_trainer_a_custom_job_on_the_same_image(tmp_path):
    from tfx.v1.extensions import google_cloud_ai_platform as cloud

    from pipeline.kubeflow_runner import compile_pipeline

    vertex = ("kubeflow.vertex_training={project: medtfx-test, region: us-central1, "
              "machine_type: cloud-tpu, accelerator_type: TPU_V3, accelerator_count: 8}")
    compiled = compile_pipeline(load_config(None, KUBEFLOW_SET + [vertex]),
                                str(tmp_path / "p.yaml"))
    trainer = executor(compiled.spec, "Trainer")["container"]
    assert trainer["args"][1] == "tfx.extensions.google_cloud_ai_platform.trainer.executor." \
                                 "GenericExecutor"
    inputs = tasks(compiled.spec)["Trainer"]["inputs"]["parameters"]
    custom_config = trainer_custom_config(compiled.spec)
    assert custom_config[cloud.ENABLE_VERTEX_KEY] is True
    assert custom_config[cloud.VERTEX_REGION_KEY] == "us-central1"
    assert custom_config[cloud.TRAINING_ARGS_KEY] == {
        "project": "medtfx-test",
        "job_spec": {"worker_pool_specs": [{
            "machine_spec": {"machine_type": "cloud-tpu", "accelerator_type": "TPU_V3",
                             "accelerator_count": 8},
            "replica_count": 1,
            "container_spec": {"image_uri": "registry.example/medtfx:test"}}]}}
    assert custom_config["backbone"] == "pneumonia_cnn"  # run_fn's settings still there
    assert inputs["run_fn"]["runtimeValue"]["constant"] == "modules.trainer.run_fn"


def test_vertex_training_on_two_workers_adds_a_worker_pool_of_the_same_machine(tmp_path):
    """Vertex AI gives pool 0 the chief's TF_CONFIG and pool 1 the workers': with it, the
    Trainer trains with MultiWorkerMirroredStrategy (tests/test_multiworker.py)."""
    from tfx.v1.extensions import google_cloud_ai_platform as cloud

    from pipeline.kubeflow_runner import compile_pipeline

    vertex = ("kubeflow.vertex_training={project: medtfx-test, region: us-central1, "
              "accelerator_type: NVIDIA_TESLA_T4, accelerator_count: 1, workers: 2}")
    compiled = compile_pipeline(load_config(None, KUBEFLOW_SET + [vertex]),
                                str(tmp_path / "p.yaml"))
    pools = trainer_custom_config(compiled.spec)[cloud.TRAINING_ARGS_KEY]["job_spec"][
        "worker_pool_specs"]
    machine = {"machine_type": "n1-standard-8", "accelerator_type": "NVIDIA_TESLA_T4",
               "accelerator_count": 1}
    image = {"image_uri": "registry.example/medtfx:test"}
    assert pools == [{"machine_spec": machine, "replica_count": 1, "container_spec": image},
                     {"machine_spec": machine, "replica_count": 1, "container_spec": image}]


def trainer_custom_config(spec: dict) -> dict:
    parameters = tasks(spec)["Trainer"]["inputs"]["parameters"]
    return json.loads(parameters["custom_config"]["runtimeValue"]["constant"])


def test_vertex_ai_sdk_accepts_the_file_and_a_per_run_parameter(compiled, tmp_path):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import aiplatform

    path = tmp_path / "pipeline.yaml"
    path.write_text(compiled["text"])
    job = aiplatform.PipelineJob(
        display_name="medtfx", template_path=str(path), project="medtfx-test",
        location="europe-west4", credentials=AnonymousCredentials(),
        parameter_values={"data_root": "gs://medtfx-test/melanoma-768"})
    runtime = job._gca_resource.runtime_config
    assert runtime.gcs_output_directory == "gs://medtfx-test/root"
    assert dict(runtime.parameter_values) == {"data_root": "gs://medtfx-test/melanoma-768"}
    with pytest.raises(ValueError, match="train_steps is not found"):
        aiplatform.PipelineJob(
            display_name="medtfx", template_path=str(path), project="medtfx-test",
            location="europe-west4", credentials=AnonymousCredentials(),
            parameter_values={"train_steps": 5})


def test_golden_file(compiled):
    from pipeline.core.fingerprint import code_fingerprint

    text = compiled["text"]
    for entry in FINGERPRINTED:
        text = text.replace(code_fingerprint(entry), "<code fingerprint>")
    if os.environ.get("MEDTFX_UPDATE_GOLDEN"):
        os.makedirs(os.path.dirname(GOLDEN), exist_ok=True)
        with open(GOLDEN, "w") as f:
            f.write(text)
    with open(GOLDEN) as f:
        golden = f.read()
    if text != golden:
        diff = "".join(list(difflib.unified_diff(
            golden.splitlines(True), text.splitlines(True), "golden", "compiled"))[:80])
        pytest.fail("the compiled pipeline differs from tests/golden/kubeflow-pipeline.yaml; "
                    "if intended, refresh it with MEDTFX_UPDATE_GOLDEN=1 (see this module's "
                    f"docstring) and review the diff:\n{diff}")


@pytest.mark.parametrize("overrides, message", [
    ([], "kubeflow.image is not set"),
    (KUBEFLOW_SET[:1], "kubeflow.pipeline_root is not set"),
    (KUBEFLOW_SET + ["kubeflow.pipeline_root=s3://bucket/root"],
     "kubeflow.pipeline_root 's3://bucket/root': TFX components read and write it through "
     "TensorFlow"),
    (KUBEFLOW_SET + ["kubeflow.serving_dir=minio://mlpipeline/serving"], "use gs://"),
    (KUBEFLOW_SET + ["pipeline_name=Medtfx_Melanoma"], "pipeline_name 'Medtfx_Melanoma': "
                                                       "Kubeflow needs lowercase"),
    (KUBEFLOW_SET + ["kubeflow.resources={Trainer: {memory: 30GB}}"],
     "kubeflow.resources: Trainer: memory '30GB' is not a Kubernetes quantity"),
    (KUBEFLOW_SET + ["kubeflow.resources={Trainer: {accelerator_count: 1}}"],
     "accelerator_count needs an accelerator_type"),
    (KUBEFLOW_SET + ["kubeflow.vertex_training={project: p}"],
     "kubeflow.vertex_training needs project and region"),
    (KUBEFLOW_SET + ["kubeflow.vertex_training={project: p, region: r, workers: 0}"],
     "kubeflow.vertex_training: workers 0 must be at least 1"),
    (KUBEFLOW_SET + ["kubeflow.vertex_training={project: p, region: r, workers: 2, "
                     "machine_type: cloud-tpu, accelerator_type: TPU_V3, "
                     "accelerator_count: 8}"],
     "workers > 1 with a TPU"),
])
def test_settings_it_cannot_compile_with_are_one_line_usage_errors(tmp_path, overrides,
                                                                   message):
    output = tmp_path / "p.yaml"
    result = medtfx("compile-kfp", "--output", str(output), *set_args(overrides))
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1
    assert not output.exists()


def test_output_must_be_yaml_and_help_explains_the_command(tmp_path):
    result = medtfx("compile-kfp", "--output", str(tmp_path / "p.json"), *set_args(KUBEFLOW_SET))
    assert result.returncode == 2 and "must end in .yaml" in result.stderr
    result = medtfx("compile-kfp", "--help")
    assert result.returncode == 0 and "KubeflowV2DagRunner" in result.stdout


def test_the_unshare_wrapper_really_cuts_the_network():
    """Guards the offline compile above: with the wrapper, not even a name resolves."""
    code = "import socket; socket.getaddrinfo('pypi.org', 443)"
    result = subprocess.run([*offline(), "python3", "-c", code], capture_output=True, text=True)
    assert result.returncode != 0 and "gaierror" in result.stderr
