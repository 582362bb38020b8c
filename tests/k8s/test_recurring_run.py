"""`digits schedule` with the real kfp client against a small stand-in for the KFP v2beta1 REST API
that answers the calls kfp 2.5 makes (healthz, experiments list/create, recurringruns create) and
records what it was sent."""
from __future__ import annotations

import http.server
import json
import socket
import threading
import urllib.parse

import kfp
import pytest

from pipeline.schedule import recurring_run

SPEC = {
    "pipelineInfo": {"name": "digits"},
    "root": {"dag": {"tasks": {"Trainer": {"taskInfo": {"name": "Trainer"}, "componentRef": {"name": "Trainer"}}}}},
    "components": {"Trainer": {"executorLabel": "Trainer_executor"}},
    "deploymentSpec": {"executors": {"Trainer_executor": {"container": {"image": "img:1"}}}},
    "schemaVersion": "2.1.0",
    "sdkVersion": "tfx-1.16.0",
    "defaultPipelineRoot": "gs://bucket/root",
}


class FakeKfp(http.server.BaseHTTPRequestHandler):
    """Just enough of ml-pipeline's REST API; ``server.experiments`` is its state."""

    def _reply(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        self.server.requests.append(("GET", url.path, urllib.parse.parse_qs(url.query)))
        if url.path == "/apis/v2beta1/healthz":
            return self._reply({"multi_user": False})
        if url.path == "/apis/v2beta1/experiments":
            wanted = json.loads(urllib.parse.parse_qs(url.query)["filter"][0])["predicates"][0]["stringValue"]
            return self._reply({"experiments": [e for e in self.server.experiments if e["display_name"] == wanted]})
        self.send_error(404)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(("POST", self.path, body))
        if self.path == "/apis/v2beta1/experiments":
            experiment = dict(body, experiment_id=f"exp-{len(self.server.experiments) + 1}")
            self.server.experiments.append(experiment)
            return self._reply(experiment)
        if self.path == "/apis/v2beta1/recurringruns":
            return self._reply(dict(body, recurring_run_id="rr-1", status="ENABLED"))
        self.send_error(404)

    def log_message(self, *args):
        pass


@pytest.fixture
def kfp_server(monkeypatch, tmp_path):
    # A kfp context file in the user's home would change which calls the client makes.
    monkeypatch.setattr(kfp.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "no-context.json"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeKfp)
    server.requests, server.experiments = [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "digits_pipeline.json"
    path.write_text(json.dumps(SPEC))
    return path


def endpoint(server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def posts(server, path):
    return [body for method, url, body in server.requests if method == "POST" and url == path]


def test_creates_the_experiment_and_a_daily_recurring_run(kfp_server, spec_file, capsys):
    argv = ["--kfp-endpoint", endpoint(kfp_server), "--spec", str(spec_file)]
    assert recurring_run.main(argv) == 0
    [experiment] = posts(kfp_server, "/apis/v2beta1/experiments")
    assert experiment["display_name"] == "digits"
    [run] = posts(kfp_server, "/apis/v2beta1/recurringruns")
    assert run["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * *"}}
    assert int(run["max_concurrency"]) == 1  # int64: JSON may carry it as a string
    assert run["no_catchup"] is True and run["mode"] == "ENABLE"
    assert run["experiment_id"] == "exp-1" and run["display_name"] == "digits-recurring"
    assert run["service_account"] == recurring_run.SERVICE_ACCOUNT == "digits-pipeline"
    assert run["pipeline_spec"] == SPEC  # the compiled spec, inline and unchanged
    assert "recurring run digits-recurring (rr-1)" in capsys.readouterr().out


def test_reuses_an_existing_experiment_and_takes_the_schedule_override(kfp_server, spec_file, monkeypatch):
    kfp_server.experiments.append({"experiment_id": "exp-7", "display_name": "nightly"})
    monkeypatch.setenv("DIGITS_KFP_EXPERIMENT", "nightly")
    argv = ["--kfp-endpoint", endpoint(kfp_server), "--spec", str(spec_file), "--schedule", "30 1 * * 1-5"]
    assert recurring_run.main(argv) == 0
    assert posts(kfp_server, "/apis/v2beta1/experiments") == []
    [run] = posts(kfp_server, "/apis/v2beta1/recurringruns")
    assert run["trigger"]["cron_schedule"]["cron"] == "0 30 1 * * 1-5" and run["experiment_id"] == "exp-7"


def test_unreachable_endpoint_is_one_line_naming_it(spec_file, capsys):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    assert recurring_run.main(["--kfp-endpoint", closed, "--spec", str(spec_file)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and closed in err
    assert "kubectl port-forward -n kubeflow svc/ml-pipeline 8888:8888" in err


def test_missing_spec_says_to_compile_first(tmp_path, capsys):
    from pipeline import cli

    assert cli.main(["schedule", "--spec", str(tmp_path / "nope.json")]) == 1
    assert "run 'make kfp'" in capsys.readouterr().err


def test_job_file_is_refused_with_the_right_file_named(kfp_server, tmp_path, capsys):
    job = tmp_path / "digits_pipeline_job.json"
    job.write_text(json.dumps({"displayName": "digits", "pipelineSpec": SPEC, "runtimeConfig": {}}))
    assert recurring_run.main(["--kfp-endpoint", endpoint(kfp_server), "--spec", str(job)]) == 1
    assert "digits_pipeline.json" in capsys.readouterr().err and kfp_server.requests == []


def test_bad_schedule_is_a_config_error(spec_file, capsys):
    with pytest.raises(SystemExit) as exit_:
        recurring_run.main(["--schedule", "0 3 * *", "--spec", str(spec_file)])
    assert exit_.value.code == 2
    assert "schedule must be a 5-field cron expression" in capsys.readouterr().err
