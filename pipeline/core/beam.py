"""The config's beam: section: which Beam runner the Beam stages (ImportExampleGen,
StatisticsGen, Transform, Evaluator, BulkInferrer, `medtfx data import`) run on, and the
arguments each runner needs, built in one place (`BeamConfig.pipeline_args`).

Checked at load, so that a run with a missing endpoint, project or master fails before any
stage starts; a stage that a runner is known not to run is refused when the stage's caller
asks for its arguments.
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field, model_validator

from modules.settings_base import Settings
from pipeline.core.errors import ConfigError
from pipeline.core.fingerprint import REPO_ROOT

# The Beam stages, by the names the refusals below and their messages use.
IMPORT_EXAMPLE_GEN, STATISTICS_GEN, TRANSFORM, EVALUATOR, BULK_INFERRER = (
    "ImportExampleGen", "StatisticsGen", "Transform", "Evaluator", "BulkInferrer")
PIPELINE_STAGES = (IMPORT_EXAMPLE_GEN, STATISTICS_GEN, TRANSFORM, EVALUATOR, BULK_INFERRER)
DATA_IMPORT = "medtfx data import"

Runner = Literal["direct", "portable", "dask", "dataflow", "flink", "spark"]
# The DirectRunner's workers are this interpreter, which has the project and TFX. Given no
# flag that says the workers carry their dependencies, TFX builds a source package of itself
# for each Beam stage (3.6 s, and 46 MB left in the temp dir) and Beam stages it; given
# --setup_file, Beam builds the project's (1.1 s a stage). The DirectRunner reads no image.
DIRECT_WORKERS = "this-interpreter"
# Beam 2.77 does not register DaskRunner by its short name.
DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"

# Stage and runner pairs that do not run, with what was found (tests/test_beam_runners.py).
# Beam 2.77's DaskRunner translates only Create, ParDo, GroupByKey and Flatten to dask bags:
# beam.io.Read, which every tfx-bsl reader uses, becomes an empty step. ImportExampleGen
# (file names through Create and a map) and Transform (in place, no Beam job) run there.
_DASK_READ = "Beam's DaskRunner (2.77) does not translate beam.io.Read, so "
UNSUPPORTED: dict[tuple[str, str], str] = {
    ("dask", STATISTICS_GEN): _DASK_READ + "reading the splits fails (AttributeError: "
                              "'NoneType' object has no attribute '__dask_keys__')",
    ("dask", EVALUATOR): _DASK_READ + "the examples it evaluates cannot be read (the "
                         "tfx-bsl reader StatisticsGen fails in)",
    ("dask", BULK_INFERRER): _DASK_READ + "the test shards it scores cannot be read (the "
                             "tfx-bsl reader StatisticsGen fails in)",
}


class BeamConfig(Settings):
    """Beam arguments of every Beam stage, from a runner name and its typed settings."""

    runner: Runner = "direct"
    # direct: one process unless told otherwise. Measured on 2 cores (`make bench`, the
    # siim-isic-512 pipeline on 2,400 images at 512 px): every stage was faster in one
    # process than on 2 worker processes (ImportExampleGen 0.3 s against 6.0, StatisticsGen
    # 3.6 against 11.0, the Evaluator 139 against 209, BulkInferrer 222 against 250) and the
    # model's stages took half the memory: each worker loads TensorFlow and the model, which
    # already uses every core in one process. multi_processing: one process per core (0).
    direct_running_mode: Literal["in_memory", "multi_threading",
                                 "multi_processing"] = "in_memory"
    direct_num_workers: int = 1
    # portable, flink, spark: a Beam job service (host:port). portable needs one; flink
    # and spark without one start Beam's job-server jar, which Beam fetches from Maven.
    job_endpoint: str = ""
    # Where the job's Python workers run: LOOPBACK in the submitting process (a local job
    # service only), EXTERNAL a worker pool at environment_config (host:port; the
    # Kubernetes pattern: a `--worker_pool` sidecar of each Flink or Spark worker),
    # PROCESS the command in environment_config ({"command": "/opt/apache/beam/boot"}),
    # DOCKER sdk_container_image. null: LOOPBACK for portable, DOCKER for flink and spark.
    environment_type: Literal["LOOPBACK", "EXTERNAL", "PROCESS", "DOCKER"] | None = None
    environment_config: str = ""
    # The workers' image (DOCKER, Dataflow); kubeflow/Dockerfile's image carries Beam's
    # boot program and the project. "": Beam's own SDK image, which installs setup_file.
    sdk_container_image: str = ""
    # Staged to the job's workers, which install the project from it (relative: to the
    # repository, or to kubeflow.project_dir in a compiled pipeline); null stages nothing.
    setup_file: str | None = "setup.py"
    dask_client_address: str = ""  # dask: the scheduler, tcp://HOST:8786
    project: str = ""  # dataflow: the Google Cloud project
    region: str = ""  # dataflow: e.g. europe-west4
    temp_location: str = ""  # dataflow: gs://BUCKET/tmp
    flink_master: str = ""  # flink without a job_endpoint: the JobManager, HOST:8081
    spark_master_url: str = ""  # spark without a job_endpoint: spark://HOST:7077
    extra_args: list[str] = Field(default_factory=list)  # appended as given

    @model_validator(mode="after")
    def _check_runner(self) -> BeamConfig:
        missing = [name for name in _NEEDS[self.runner](self) if not getattr(self, name)]
        if missing:
            raise ValueError(f"runner {self.runner} needs {' and '.join(missing)} "
                             f"(--set beam.{missing[0]}=...)")
        if self.runner in ("flink", "spark") and self.environment_type == "LOOPBACK":
            raise ValueError(f"runner {self.runner}: environment_type LOOPBACK runs workers "
                             "in the submitting process, which the cluster cannot reach; use "
                             "DOCKER, EXTERNAL or PROCESS")
        if self.environment_type in ("EXTERNAL", "PROCESS") and not self.environment_config:
            raise ValueError(f"environment_type {self.environment_type} needs "
                             "environment_config (EXTERNAL: the worker pool's host:port; "
                             "PROCESS: {\"command\": ...})")
        if self.runner == "dataflow" and not self.temp_location.startswith("gs://"):
            raise ValueError(f"temp_location {self.temp_location!r}: Dataflow needs gs://")
        return self

    def pipeline_args(self, *stages: str, root: str = REPO_ROOT) -> list[str]:
        """The Beam arguments of `stages` on this runner, refusing a stage it cannot run.
        `root`: where the repository is, for a relative setup_file."""
        for stage in stages:
            reason = UNSUPPORTED.get((self.runner, stage))
            if reason:
                raise ConfigError(f"beam.runner={self.runner}: {stage} cannot run on it: "
                                  f"{reason}")
        if self.runner == "direct":
            args = [f"--direct_running_mode={self.direct_running_mode}",
                    f"--direct_num_workers={self.direct_num_workers}",
                    f"--sdk_container_image={DIRECT_WORKERS}"]
        elif self.runner == "dask":
            args = [f"--runner={DASK_RUNNER}", f"--dask_client_address={self.dask_client_address}"]
        elif self.runner == "dataflow":
            args = ["--runner=DataflowRunner", f"--project={self.project}",
                    f"--region={self.region}", f"--temp_location={self.temp_location}",
                    *self._staging(root)]
        else:
            args = [*self._job_service(), *self._environment(), *self._staging(root)]
        return args + self.extra_args

    def _job_service(self) -> list[str]:
        """portable, flink, spark: a running job service, or the runner's own job server."""
        if self.job_endpoint:
            return ["--runner=PortableRunner", f"--job_endpoint={self.job_endpoint}"]
        if self.runner == "flink":
            return ["--runner=FlinkRunner", f"--flink_master={self.flink_master}"]
        return ["--runner=SparkRunner", f"--spark_master_url={self.spark_master_url}"]

    def _environment(self) -> list[str]:
        kind = self.environment_type or ("LOOPBACK" if self.runner == "portable" else "DOCKER")
        config = [f"--environment_config={self.environment_config}"] \
            if self.environment_config else []
        return [f"--environment_type={kind}", *config]

    def _staging(self, root: str) -> list[str]:
        """What the workers run: the image, and the project as a source package."""
        args = [f"--sdk_container_image={self.sdk_container_image}"] \
            if self.sdk_container_image else []
        if self.setup_file:
            args.append(f"--setup_file={os.path.join(root, self.setup_file)}")
        return args


# The settings each runner cannot run without (flink and spark: a master or a job service).
_NEEDS = {
    "direct": lambda c: [],
    "dask": lambda c: ["dask_client_address"],
    "portable": lambda c: ["job_endpoint"],
    "dataflow": lambda c: ["project", "region", "temp_location"],
    "flink": lambda c: [] if c.job_endpoint else ["flink_master"],
    "spark": lambda c: [] if c.job_endpoint else ["spark_master_url"],
}
