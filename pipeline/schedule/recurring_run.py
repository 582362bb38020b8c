"""Schedules the compiled pipeline as a Kubeflow Pipelines recurring run.

    make kfp && digits schedule                          # daily at 03:00 UTC, experiment 'digits'
    digits schedule --schedule "30 1 * * 1" --kfp-endpoint http://localhost:8888
    digits schedule --help

Needs the KFP API server, e.g. ``kubectl port-forward -n kubeflow svc/ml-pipeline 8888:8888``.
The spec (digits_pipeline.json, from ``digits kfp``) travels inline in the recurring run, so each
scheduled run uses exactly the spec compiled here; one run at a time, and no backfill of runs
missed while the schedule was paused.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from typing import Any, Optional, Sequence

from pipeline import config as config_lib
from pipeline.config import PipelineConfig

DEFAULT_SPEC = os.path.join("build", "kfp", "digits_pipeline.json")
PORT_FORWARD = "kubectl port-forward -n kubeflow svc/ml-pipeline 8888:8888"


class ScheduleError(RuntimeError):
    """The recurring run could not be created; the message says why and what to do."""


def _load_spec(spec_path: str) -> dict:
    """The bare PipelineSpec, checked against the proto before anything is sent."""
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    if not os.path.exists(spec_path):
        raise ScheduleError(f"{spec_path} does not exist; run 'make kfp' (or 'digits kfp') first")
    with open(spec_path) as f:
        spec = json.load(f)
    if "pipelineSpec" in spec:
        raise ScheduleError(f"{spec_path} is a PipelineJob (TFX's job file); pass the bare spec, digits_pipeline.json")
    try:
        json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec())
    except json_format.ParseError as error:
        raise ScheduleError(f"{spec_path} is not a Kubeflow PipelineSpec ({error}); recompile with 'make kfp'") from None
    return spec


def _unreachable(endpoint: str, error: BaseException) -> ScheduleError:
    reason = getattr(error, "reason", None) or error
    return ScheduleError(
        f"cannot reach the Kubeflow Pipelines API at {endpoint} ({type(reason).__name__}); start "
        f"'{PORT_FORWARD}' or set --kfp-endpoint / DIGITS_KFP_ENDPOINT")


def _api_call(endpoint: str, what: str, call, *args, **kwargs) -> Any:
    """Runs one client call, turning transport and API failures into one-line ScheduleErrors."""
    import kfp_server_api
    import urllib3

    try:
        return call(*args, **kwargs)
    except (urllib3.exceptions.HTTPError, ConnectionError) as error:
        raise _unreachable(endpoint, error) from None
    except TimeoutError:
        raise ScheduleError(f"the Kubeflow Pipelines API at {endpoint} did not pass its health check; "
                            f"is {endpoint} the ml-pipeline service ('{PORT_FORWARD}')?") from None
    except kfp_server_api.ApiException as error:
        detail = " ".join(str(error.body or "").split())[:300]
        raise ScheduleError(f"the Kubeflow Pipelines API at {endpoint} refused to {what}: "
                            f"{error.status} {error.reason} {detail}".rstrip()) from None


# The Kubernetes account the runs' pods use: k8s/overlays/prod's digits-pipeline, which may start
# InfraValidator's serving pods (k8s/components/infra-validation; tests/k8s checks the two agree).
SERVICE_ACCOUNT = "digits-pipeline"


def schedule(config: PipelineConfig, spec_path: str = DEFAULT_SPEC) -> Any:
    """Gets or creates ``config.kfp_experiment`` and creates the recurring run in it; returns the
    server's V2beta1RecurringRun."""
    import kfp
    import yaml

    spec = _load_spec(spec_path)
    endpoint = config.kfp_endpoint
    client = _api_call(endpoint, "answer", kfp.Client, host=endpoint)  # the client checks /healthz here
    experiment = _api_call(endpoint, f"create the experiment {config.kfp_experiment!r}",
                           client.create_experiment, name=config.kfp_experiment)
    name = spec["pipelineInfo"]["name"]
    with tempfile.TemporaryDirectory() as scratch:
        # kfp 2.5's client reads a package only from .yaml/.zip/.tar.gz; JSON is YAML, so the spec
        # goes through unchanged.
        package = os.path.join(scratch, "pipeline.yaml")
        with open(package, "w") as f:
            yaml.safe_dump(spec, f, sort_keys=True)
        return _api_call(
            endpoint, "create the recurring run", client.create_recurring_run,
            experiment_id=experiment.experiment_id,
            job_name=f"{name}-recurring",
            description=f"{name} at '{config.schedule}' UTC (cron '{config.kfp_cron}'), compiled spec {spec_path}",
            cron_expression=config.kfp_cron,
            max_concurrency=1,
            no_catchup=True,
            pipeline_package_path=package,
            service_account=SERVICE_ACCOUNT,
        )


def main(argv: Optional[Sequence[str]] = None, prog: str = "digits schedule") -> int:
    config, args = config_lib.command_line(
        prog, "Create a Kubeflow Pipelines recurring run of the compiled pipeline (digits kfp) at --schedule.", argv,
        lambda parser: parser.add_argument(
            "--spec", default=DEFAULT_SPEC,
            help=f"The compiled PipelineSpec (default: {DEFAULT_SPEC}, written by 'make kfp')."))
    try:
        run = schedule(config, args.spec)
    except ScheduleError as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return 1
    print(f"recurring run {run.display_name} ({run.recurring_run_id}) in experiment {config.kfp_experiment!r}: "
          f"cron '{config.kfp_cron}' UTC, at most one run at a time, no catch-up")
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m pipeline.schedule.recurring_run"))
