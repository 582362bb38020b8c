"""One pipeline run for bench/pipeline_bench.py, in its own process (so its peak RSS is its own): takes
`digits run`'s config flags, runs the pipeline locally and prints one line "BENCH {json}" with the
per-component times, the test accuracy, what was pushed, the Trainer's serving model of this run and the
hyper-parameters it used (the run report's copy of its hparams.json)."""
import json
import os
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipeline import config  # noqa: E402
from pipeline.runs import local_runner, run_summary  # noqa: E402


def main(argv):
    pipeline_config = config.from_sources(argv)
    summary = local_runner.run(pipeline_config)
    outputs = run_summary.node_outputs(pipeline_config, "Trainer", summary.run_id)
    serving_model = os.path.join(outputs["model"], "Format-Serving") if "model" in outputs else None
    print("BENCH " + json.dumps({
        "components": [[c.node_id, c.state, c.seconds] for c in summary.components],
        "accuracy": summary.verdict.get("accuracy"), "blessed": summary.verdict.get("blessed"),
        "pushed": summary.pushed, "pushed_path": summary.pushed_path, "trainer_model": serving_model,
        "hparams": summary.verdict.get("hparams")}), flush=True)  # the Trainer's hparams.json, via the report


if __name__ == "__main__":
    main(sys.argv[1:])
