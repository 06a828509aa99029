"""`medtfx compile-kfp`: the same pipeline compiled for Kubeflow Pipelines / Vertex AI."""

from __future__ import annotations

import argparse
import sys
import time

from pipeline.cli import common
from pipeline.core.errors import ConfigError
from pipeline.core.console import Console


def add_parser(commands: argparse._SubParsersAction) -> None:
    kfp = commands.add_parser(
        "compile-kfp", help="compile the pipeline for Kubeflow Pipelines / Vertex AI Pipelines",
        description="Compiles the pipeline with KubeflowV2DagRunner into a PipelineSpec YAML "
        "file for the kfp client or Vertex AI Pipelines. The image, the pipeline root, the "
        "data and serving locations, Beam arguments, per-task resources and optional Vertex "
        "AI training come from the config's kubeflow: section. Needs no network and no "
        "credentials. See kubeflow/README.md.")
    common.add_config_options(kfp, "--set kubeflow.image=REGISTRY/medtfx:TAG")
    kfp.add_argument("--output", help="the file to write, ending in .yaml "
                     "(default: PIPELINE_NAME.yaml)")
    common.add_verbose(kfp)
    kfp.set_defaults(command=command)


def command(args: argparse.Namespace) -> int:
    from pipeline.kubeflow_config import check_kubeflow_config

    config = common.load_config_or_say(args)
    if config is None:
        return common.EXIT_USAGE
    try:
        check_kubeflow_config(config.kubeflow, config.pipeline_name)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return common.EXIT_USAGE
    output = args.output or f"{config.pipeline_name}.yaml"
    if not output.endswith((".yaml", ".yml")):
        print(f"error: --output {output}: must end in .yaml, the format the kfp client and "
              "Vertex AI read", file=sys.stderr)
        return common.EXIT_USAGE

    def body(console: Console) -> int:
        from pipeline.kubeflow_runner import compile_pipeline  # imports TFX

        started = time.monotonic()
        try:
            compiled = compile_pipeline(config, output)
        except ConfigError as err:
            console.say(f"error: {err}")
            return common.EXIT_USAGE
        tasks = compiled.spec["root"]["dag"]["tasks"]
        console.say(f"medtfx: compiled {len(tasks)} tasks to {output} in "
                    f"{time.monotonic() - started:.1f} s")
        console.say(f"        image {config.kubeflow.image}; pipeline root "
                    f"{config.kubeflow.pipeline_root}")
        for name, default in compiled.parameters.items():
            console.say(f"        runtime parameter {name}, default: {default}")
        return 0

    return common.guarded(common.temp_log("compile-kfp"), args.verbose, body)
