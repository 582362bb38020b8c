"""The Kubeflow Pipelines v2 spec that `digits kfp` compiles, checked against the TFX pipeline it
came from: every node a task with a real executor, the same dependencies, one image, the Beam
preset's arguments, object-store locations, the baseline's source, and nothing that points at this
machine."""
from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
import sysconfig

import pytest
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2
from tfx.dsl.components.base import executor_spec
from tfx.dsl.components.common import resolver

from components.data import example_gen
from components.evaluation.served_baseline import ServedBaseline
from pipeline import kubeflow_v2_runner
from pipeline.config import PipelineConfig
from tests.quiet_output import clean_env, noise_lines

REPO = pathlib.Path(__file__).resolve().parents[2]
PRESETS = {
    "direct": dict(beam_direct_workers=4),
    "dataflow": dict(beam_preset="dataflow", dataflow_project="digits-test", beam_args=("--max_num_workers=3",)),
    "flink": dict(beam_preset="flink", flink_master="flink-jobmanager:8081",
                  flink_environment_config="localhost:50000"),
}
# The presets with the default baseline (TFX's resolver), and one with the served model as baseline,
# the form the open-source Kubeflow Pipelines backend can run (it has no resolver tasks).
SERVED = "flink+serving-dir"
VARIANTS = {**PRESETS, SERVED: dict(PRESETS["flink"], baseline="serving-dir")}
RESOLVER_TASKS = ["latest_blessed_model_resolver-model-blessing-resolver", "latest_blessed_model_resolver-model-resolver"]


class Compiled:
    def __init__(self, config: PipelineConfig, out: pathlib.Path):
        self.config = config
        job_path, spec_path = kubeflow_v2_runner.compile_pipeline(config, str(out))
        self.job = json.loads(pathlib.Path(job_path).read_text())
        self.spec = json.loads(pathlib.Path(spec_path).read_text())
        self.pipeline = kubeflow_v2_runner.kfp_pipeline(config)  # the object the spec was compiled from
        self.tasks = self.spec["root"]["dag"]["tasks"]
        self.executors = self.spec["deploymentSpec"]["executors"]

    def container(self, task: str) -> dict:
        component = self.spec["components"][self.tasks[task]["componentRef"]["name"]]
        return self.executors[component["executorLabel"]]["container"]


@pytest.fixture(scope="module")
def compile_variant(tmp_path_factory):
    """Compiles each variant once for the whole module."""
    done = {}

    def get(name: str) -> Compiled:
        if name not in done:
            config = PipelineConfig(kfp_pipeline_root="gs://test-bucket/root", kfp_serving_dir="s3://models/serving",
                                    pipeline_image="registry.example/digits-pipeline:test", **VARIANTS[name])
            done[name] = Compiled(config, tmp_path_factory.mktemp("kfp"))
        return done[name]
    return get


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def compiled(request, compile_variant) -> Compiled:
    return compile_variant(request.param)


@pytest.fixture(scope="module")
def served(compile_variant) -> Compiled:
    return compile_variant(SERVED)


def task_ids(node) -> list:
    """The tasks TFX's Kubeflow v2 compiler makes of a node: a latest-blessed-model resolver
    becomes a ModelBlessing query and a Model query; any other node one task of its own id."""
    if isinstance(node, resolver.Resolver):
        return [f"{node.id}-model-blessing-resolver", f"{node.id}-model-resolver"]
    return [node.id]


def producer_task(node) -> str:
    """The task downstream nodes depend on: for the resolver, the one that outputs the model."""
    return task_ids(node)[-1]


def test_both_files_parse_as_strict_pipeline_specs(compiled):
    assert set(compiled.job) >= {"displayName", "pipelineSpec", "runtimeConfig"}
    for spec in (compiled.job["pipelineSpec"], compiled.spec):
        json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec(), ignore_unknown_fields=False)
    bare = dict(compiled.spec)
    assert bare.pop("defaultPipelineRoot") == compiled.config.kfp_pipeline_root
    assert bare == compiled.job["pipelineSpec"]  # the same spec, unwrapped
    assert compiled.spec["schemaVersion"] == "2.1.0"  # the only version current KFP API servers accept
    assert compiled.spec["pipelineInfo"]["name"] == compiled.config.pipeline_name


def test_every_node_is_a_task_whose_component_has_an_executor(compiled):
    expected = {task for node in compiled.pipeline.components for task in task_ids(node)}
    assert set(compiled.tasks) == expected
    for name, task in compiled.tasks.items():
        component = compiled.spec["components"].get(task["componentRef"]["name"])
        assert component is not None, name
        assert component["executorLabel"] in compiled.executors, name


def test_task_dependencies_are_the_pipeline_upstream_nodes(compiled):
    for node in compiled.pipeline.components:
        expected = sorted(producer_task(upstream) for upstream in node.upstream_nodes)
        for task in task_ids(node):
            if task.endswith("-model-resolver"):  # fed by the blessing query, as an input artifact
                producer = compiled.tasks[task]["inputs"]["artifacts"]["input"]["taskOutputArtifact"]["producerTask"]
                assert producer == task_ids(node)[0]
            assert sorted(compiled.tasks[task].get("dependentTasks", [])) == expected, task
    assert "ExampleValidator" in compiled.tasks["Transform"]["dependentTasks"]  # anomalies stop the run first
    assert "SpanValidator" in compiled.tasks["Transform"]["dependentTasks"]  # so do bad spans
    assert "SpanValidator" in compiled.tasks["ExampleValidator"]["dependentTasks"]  # naming the span first
    # the Pusher needs the InfraValidator's blessing as well as the Evaluator's; it runs after the Evaluator
    assert {"Evaluator", "InfraValidator"} <= set(compiled.tasks["Pusher"]["dependentTasks"])
    assert "Evaluator" in compiled.tasks["InfraValidator"]["dependentTasks"]


def test_every_container_runs_the_pipeline_image(compiled):
    containers = [executor["container"] for executor in compiled.executors.values() if "container" in executor]
    queries = [node for node in compiled.pipeline.components if isinstance(node, resolver.Resolver)]
    assert len(containers) == len(compiled.pipeline.components) - len(queries)  # all but the resolver's queries
    assert {container["image"] for container in containers} == {compiled.config.pipeline_image}


def test_the_baseline_comes_from_the_configured_source(compiled):
    """latest-blessed: two resolver executors (ML Metadata queries that only Vertex AI runs) feed the
    Evaluator; serving-dir: no resolver anywhere, the served baseline's container task feeds it."""
    resolvers = sorted(label for label, executor in compiled.executors.items() if "resolver" in executor)
    baseline_input = compiled.tasks["Evaluator"]["inputs"]["artifacts"]["baseline_model"]["taskOutputArtifact"]
    if compiled.config.baseline == "serving-dir":
        assert resolvers == [] and not [task for task in compiled.tasks if "resolver" in task]
        assert baseline_input == {"producerTask": "served_model_baseline", "outputArtifactKey": "baseline"}
    else:
        assert compiled.config.baseline == "latest-blessed"
        assert resolvers == [f"{task}_executor" for task in RESOLVER_TASKS]
        assert set(RESOLVER_TASKS) <= set(compiled.tasks)
        assert baseline_input == {"producerTask": RESOLVER_TASKS[-1], "outputArtifactKey": "model"}


def test_served_baseline_is_a_container_task_reading_the_kfp_serving_dir(served):
    nodes = [node for node in served.pipeline.components if isinstance(node, ServedBaseline)]
    assert [node.id for node in nodes] == ["served_model_baseline"]
    task = served.tasks["served_model_baseline"]
    assert task["inputs"]["parameters"]["model_dir"]["runtimeValue"]["constant"] == "s3://models/serving/mnist"
    assert "dependentTasks" not in task  # it needs nothing upstream: it runs at the start of the run
    assert "served_model_baseline" in served.tasks["Evaluator"]["dependentTasks"]
    container = served.container("served_model_baseline")
    assert container["image"] == served.config.pipeline_image
    assert container["command"] == ["python", "-m", "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"]
    assert container["args"][:2] == ["--executor_class_path", "components.evaluation.served_baseline.Executor"]
    assert served.container("Evaluator")["args"][:2] == ["--executor_class_path",
                                                         "components.evaluation.evaluator.Executor"]
    # Its output depends on the serving directory, which Kubeflow's cache key does not see: never cached,
    # as ExampleGen (the spans of the data root), while every other task keeps the pipeline's caching.
    assert task["cachingOptions"] == {"enableCache": False}
    never = {"served_model_baseline", "MnistExampleGen"}
    assert {name: t.get("cachingOptions") for name, t in served.tasks.items()} \
        == {name: {"enableCache": name not in never} for name in served.tasks}


def test_beam_components_get_the_preset_arguments(compiled):
    beam_nodes = [node.id for node in compiled.pipeline.components
                  if isinstance(getattr(node, "executor_spec", None), executor_spec.BeamExecutorSpec)]
    assert {"MnistExampleGen", "StatisticsGen", "Transform", "Evaluator"} <= set(beam_nodes)
    expected = list(compiled.config.beam_pipeline_args)
    for node_id in beam_nodes:
        container = compiled.container(node_id)
        commands = [container["args"]]
        if "lifecycle" in container:  # ExampleGen's driver runs before the executor with the same args
            commands.append(container["lifecycle"]["preCacheCheck"]["args"])
        for args in commands:
            after_inputs = args.index("--json_serialized_inputs_spec_args") + 2
            assert args[after_inputs:] == expected, node_id


def test_preset_arguments_are_the_ones_asked_for(compiled):
    args = compiled.config.beam_pipeline_args
    preset = compiled.config.beam_preset
    if preset == "direct":
        assert args == ("--direct_running_mode=multi_processing", "--direct_num_workers=4")
    elif preset == "dataflow":
        assert args[0] == "--runner=DataflowRunner" and "--project=digits-test" in args
        assert "--temp_location=gs://test-bucket/root/beam-tmp" in args and args[-1] == "--max_num_workers=3"
    else:
        assert args[:2] == ("--runner=FlinkRunner", "--flink_master=flink-jobmanager:8081")


def test_locations_are_the_object_store_and_the_image(compiled):
    assert compiled.spec["defaultPipelineRoot"] == "gs://test-bucket/root"
    assert compiled.job["runtimeConfig"]["gcsOutputDirectory"] == "gs://test-bucket/root"

    def constant(task, name):
        return compiled.tasks[task]["inputs"]["parameters"][name]["runtimeValue"]["constant"]

    destination = json.loads(constant("Pusher", "push_destination"))
    assert destination["filesystem"]["base_directory"] == "s3://models/serving/mnist"
    assert constant("ImportSchemaGen", "schema_file") == "/opt/digits/components/schema/schema.pbtxt"
    assert constant("MnistExampleGen", "input_base") == "/usr/local/lib/python3.10/site-packages/mnist/data"
    # The spans: read from the data volume mounted in the pod, every sealed one (span_window 0).
    spans_config = example_gen._config({"custom_config": constant("MnistExampleGen", "custom_config")})
    assert (spans_config["data_root"], spans_config["span_window"]) == ("/data", 0)
    assert compiled.tasks["MnistExampleGen"]["cachingOptions"] == {"enableCache": False}


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def test_nothing_points_at_this_checkout_or_venv(compiled):
    local = {str(REPO), os.path.realpath(REPO), sys.prefix, os.path.realpath(sys.prefix),
             sysconfig.get_paths()["purelib"], os.getcwd()}
    for document in (compiled.job, compiled.spec):
        leaks = sorted({text for text in _strings(document) for path in local if path in text})
        assert leaks == []


def test_cli_compiles_and_prints_the_paths(tmp_path, capsys):
    from pipeline import cli

    assert cli.main(["kfp", "--output-dir", str(tmp_path), "--pipeline-image", "img:1",
                     "--pipeline-root", str(tmp_path / "root")]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / "digits_pipeline_job.json"), str(tmp_path / "digits_pipeline.json")]
    assert json.loads((tmp_path / "digits_pipeline.json").read_text())["deploymentSpec"]["executors"][
        "Trainer_executor"]["container"]["image"] == "img:1"


def test_cli_compiles_the_served_baseline_without_resolvers(tmp_path, capsys):
    from pipeline import cli

    assert cli.main(["kfp", "--output-dir", str(tmp_path), "--baseline", "serving-dir",
                     "--pipeline-root", str(tmp_path / "root")]) == 0
    spec = json.loads((tmp_path / "digits_pipeline.json").read_text())
    assert [label for label, executor in spec["deploymentSpec"]["executors"].items() if "resolver" in executor] == []
    assert spec["root"]["dag"]["tasks"]["served_model_baseline"]["inputs"]["parameters"]["model_dir"] == {
        "runtimeValue": {"constant": PipelineConfig().kfp_serving_dir + "/mnist"}}


@pytest.mark.parametrize("argv, message", [
    (["--kfp-pipeline-root", "bucket/root"], "kfp_pipeline_root must be an object-store URI"),
    (["--beam-preset", "dataflow"], "set --dataflow-project or DIGITS_DATAFLOW_PROJECT"),
    (["--data-source", "/data/mnist"], "Kubeflow's tasks cannot read"),
])
def test_bad_config_is_one_line_and_exit_2(argv, message, tmp_path, capsys):
    from pipeline import cli

    with pytest.raises(SystemExit) as exit_:  # as argparse ends a command on a bad flag
        cli.main(["kfp", "--output-dir", str(tmp_path), *argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("digits kfp: ")
    assert list(tmp_path.iterdir()) == []


def test_span_validator_and_evaluator_get_the_validation_limits_and_gate_of_the_config(tmp_path):
    config = PipelineConfig(kfp_pipeline_root="gs://test-bucket/root", kfp_serving_dir="s3://models/serving",
                            max_blank_share=0.02, max_label_share=0.7, drift_threshold=0.25, drift_stops_run=True)
    compiled = Compiled(config, tmp_path)
    parameters = compiled.tasks["SpanValidator"]["inputs"]["parameters"]
    values = {name: parameters[name]["runtimeValue"]["constant"] for name in
              ("max_blank_share", "max_saturated_share", "max_label_share", "drift_threshold", "drift_stops_run")}
    assert values == {"max_blank_share": 0.02, "max_saturated_share": 0.01, "max_label_share": 0.7,
                      "drift_threshold": 0.25, "drift_stops_run": 1}
    gate = json.loads(compiled.tasks["Evaluator"]["inputs"]["parameters"]["source_gate"]["runtimeValue"]["constant"])
    assert gate == {"mnist_floor": config.effective_mnist_floor, "max_accuracy_drop": config.max_accuracy_drop,
                    "max_new_data_drop": config.max_new_data_drop, "min_slice_examples": config.min_slice_examples,
                    "significance_level": config.significance_level}


def digits_kfp(tmp_path, *flags):
    """`digits kfp` started as from a new shell: (exit code, stdout, stderr)."""
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "kfp", "--output-dir", str(tmp_path / "kfp"),
                           "--pipeline-root", str(tmp_path / "root"), *flags], cwd=REPO, env=clean_env(),
                          capture_output=True, text=True, timeout=300)
    return done.returncode, done.stdout, done.stderr


def test_cli_prints_what_it_wrote_and_where_the_compilers_log_is(tmp_path):
    code, out, err = digits_kfp(tmp_path)
    assert code == 0, err
    assert out.splitlines() == [str(tmp_path / "kfp" / "digits_pipeline_job.json"),
                                str(tmp_path / "kfp" / "digits_pipeline.json")]
    assert noise_lines(err) == [] and len(err.splitlines()) == 1, err
    log_path = re.fullmatch(r"digits kfp: the compiler's log is in (.*) \(--verbose shows it here\)\n", err).group(1)
    assert re.fullmatch(re.escape(str(tmp_path / "root" / "logs")) + r"/kfp-\d{8}T\d{6}Z\.log", log_path)
    assert noise_lines(pathlib.Path(log_path).read_text()), "the libraries' output is in the log"


def test_cli_verbose_shows_the_compilers_output(tmp_path):
    code, out, err = digits_kfp(tmp_path, "--verbose")
    assert code == 0, err
    assert noise_lines(err) and "log is in" not in err and not (tmp_path / "root" / "logs").exists(), err
    assert out.splitlines()[-1] == str(tmp_path / "kfp" / "digits_pipeline.json")


def test_in_the_cluster_the_infra_validator_serves_with_the_real_tensorflow_serving_image(compiled):
    from components.infra.infra_validator_k8s import TF_SERVING_IMAGE

    spec = json.loads(compiled.tasks["InfraValidator"]["inputs"]["parameters"]["serving_spec"]["runtimeValue"]["constant"])
    assert spec["tensorflow_serving"]["image_name"] == TF_SERVING_IMAGE and spec["tensorflow_serving"]["tags"]
    assert "kubernetes" in spec and spec["model_name"] == compiled.config.model_name


def test_tuning_compiles_the_tuner_in_and_never_a_hyperparameters_resolver(compiled, tmp_path):
    """Kubeflow's open-source backend runs no resolver tasks, so a compiled run never reuses a tuned result;
    with --tune the Tuner is a container task before the Trainer, fed train with eval held out."""
    assert not [task for task in compiled.tasks if "hyperparameters" in task] and "Tuner" not in compiled.tasks
    if compiled.config.baseline != "serving-dir":
        return
    import dataclasses

    tuned = Compiled(dataclasses.replace(compiled.config, tune=True, tune_trials=3), tmp_path)
    assert "Tuner" in tuned.tasks["Trainer"]["dependentTasks"]
    assert not [task for task in tuned.tasks if "resolver" in task]
    assert tuned.tasks["Trainer"]["inputs"]["artifacts"]["hyperparameters"]["taskOutputArtifact"] == {
        "producerTask": "Tuner", "outputArtifactKey": "best_hyperparameters"}
    parameters = tuned.tasks["Tuner"]["inputs"]["parameters"]
    assert json.loads(parameters["custom_config"]["runtimeValue"]["constant"])["tune_trials"] == 3
    assert tuned.container("Tuner")["image"] == tuned.config.pipeline_image
