"""One pipeline run for bench/pipeline_bench.py, in its own process (so its peak RSS is its own): takes
`digits run`'s config flags, runs the pipeline locally and prints one line "BENCH {json}" with the
per-component times, the test accuracy, what was pushed, and the Trainer's outputs of this run (the
serving model's directory and, when the Trainer wrote one, its hparams.json)."""
import json
import os
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ml_metadata.proto import metadata_store_pb2  # noqa: E402
from tfx import v1 as tfx  # noqa: E402

from pipeline import config  # noqa: E402
from pipeline.runs import local_runner, run_summary  # noqa: E402

HPARAMS_FILE = "hparams.json"


def trainer_outputs(pipeline_config):
    """{output key: artifact URI} of the newest run's Trainer execution (run or cached)."""
    connection = tfx.orchestration.metadata.sqlite_metadata_connection_config(pipeline_config.metadata_path)
    store = run_summary._store(connection)
    run = run_summary._latest_run(store)
    trainer = {context.id for context in store.get_contexts_by_type("node") if context.name.endswith(".Trainer")}
    executions = {e.id for e in store.get_executions_by_context(run.id)}
    executions &= {e.id for context in trainer for e in store.get_executions_by_context(context)}
    outputs = {}
    for event in store.get_events_by_execution_ids(sorted(executions)):
        if event.type in (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT):
            key = event.path.steps[0].key if event.path.steps else ""
            outputs[key] = store.get_artifacts_by_id([event.artifact_id])[0].uri
    return outputs


def main(argv):
    pipeline_config = config.from_sources(argv)
    summary = local_runner.run(pipeline_config)
    outputs = trainer_outputs(pipeline_config)
    serving_model = os.path.join(outputs["model"], "Format-Serving") if "model" in outputs else None
    hparams_path = os.path.join(outputs.get("model_run", ""), HPARAMS_FILE)
    hparams = None
    if os.path.exists(hparams_path):
        with open(hparams_path) as f:
            hparams = json.load(f)
    print("BENCH " + json.dumps({
        "components": [[c.node_id, c.state, c.seconds] for c in summary.components],
        "accuracy": summary.verdict.get("accuracy"), "blessed": summary.verdict.get("blessed"),
        "pushed": summary.pushed, "pushed_path": summary.pushed_path, "trainer_model": serving_model,
        "hparams": hparams}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
