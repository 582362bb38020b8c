"""TFX's Tuner in the pipeline on small data and a tiny budget: the Trainer trains with its best values, a
later run without --tune reuses them without tuning, a value the user set explicitly wins, the summary says
which value came from where, and tuning never reads the test split."""
import dataclasses
import json
import os

import pytest
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from components.artifact_files import read_json
from components.training.model import HPARAMS_FILE
from pipeline.config import PipelineConfig
from pipeline.runs import console, local_runner, outcomes, run_summary
from tests.conftest import SMALL_RUN

TRIALS = 2


def _store(config):
    connection = metadata_store_pb2.ConnectionConfig()
    connection.sqlite.filename_uri = config.metadata_path
    return metadata_store.MetadataStore(connection)


def _hparams(config, summary):
    return read_json(run_summary.node_outputs(config, "Trainer", summary.run_id)["model_run"], HPARAMS_FILE)


@pytest.fixture(scope="module")
def tuned_runs(tmp_path_factory):
    """A --tune run (2 trials of at most 2 epochs), then one without --tune whose --batch-size is explicit."""
    root = tmp_path_factory.mktemp("tuning")
    config = PipelineConfig(pipeline_root=str(root / "root"), serving_dir=str(root / "serving"),
                            data_root=str(root / "data"), tune=True, tune_trials=TRIALS, **SMALL_RUN)
    shown = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(console, "show", shown.append)  # what a quiet `digits run` prints
        first = local_runner.run(config)
    flagged = dataclasses.replace(config, tune=False, batch_size=48, explicit=(("batch_size", "--batch-size"),))
    second = local_runner.run(flagged)
    return config, first, second, shown


def test_the_tuner_ran_and_the_trainer_used_its_best_values(tuned_runs):
    config, first, _, shown = tuned_runs
    states = {c.node_id: c.state for c in first.components}
    assert states["Tuner"] == "COMPLETE" and states["Trainer"] == "COMPLETE"
    assert "latest_hyperparameters_resolver" not in states  # the Tuner feeds the Trainer directly
    with open(os.path.join(run_summary.node_outputs(config, "Tuner", first.run_id)["best_hyperparameters"],
                           "best_hyperparameters.txt")) as f:
        best = json.load(f)["values"]
    assert set(best) == {"learning_rate", "lr_schedule", "batch_size", "augment_shift", "epochs", "network"}
    assert best.pop("network") == "mlp 128,128"  # what the result was tuned for, not a value the Trainer takes
    assert 1 <= best["epochs"] <= SMALL_RUN["epochs"]  # the epoch at which val_accuracy peaked
    used = _hparams(config, first)
    for name, value in best.items():
        assert used[name] == {"value": value, "source": "tuned"}, name
    assert used["hidden_units"] == {"value": [128, 128], "source": "default"}  # the architecture is not tuned
    trial_lines = [line for line in shown if line.startswith("  Tuner trial ")]
    assert [line.split(":")[0] for line in trial_lines] == [f"  Tuner trial {n}/{TRIALS}" for n in (1, 2)]
    assert all(" -> val_accuracy 0." in line for line in trial_lines), trial_lines
    assert first.verdict["hparams"] == used
    assert f"epochs {best['epochs']} (tuned)" in first.render()
    with open(first.report_path) as f:
        assert f"<th>epochs</th><td>{best['epochs']} (tuned)</td>" in f.read()  # the report's hyper-parameters


def test_tuning_reads_train_and_eval_never_test(tuned_runs):
    config, first, _, _ = tuned_runs
    store = _store(config)
    (tuner,) = store.get_executions_by_context(
        store.get_context_by_type_and_name("node", f"{config.pipeline_name}.Tuner").id)
    assert json.loads(tuner.custom_properties["train_args"].string_value) == {"splits": ["train"]}
    assert json.loads(tuner.custom_properties["eval_args"].string_value) == {"splits": ["eval"]}


def test_a_later_run_reuses_the_tuned_result_and_an_explicit_flag_wins(tuned_runs, tmp_path):
    config, first, second, _ = tuned_runs
    states = {c.node_id: c.state for c in second.components}
    assert "Tuner" not in states and states["latest_hyperparameters_resolver"] == "COMPLETE"
    assert states["Trainer"] == "COMPLETE"  # a new batch size: trained again, with the tuned rest
    tuned, used = _hparams(config, first), _hparams(config, second)
    assert used["batch_size"] == {"value": 48, "source": "--batch-size"}
    for name in ("learning_rate", "lr_schedule", "augment_shift", "epochs"):
        assert used[name] == tuned[name], name
    assert "batch_size 48 (--batch-size)" in second.render()
    written = outcomes.write(str(tmp_path), second.run_id, "pushed", second)
    with open(written) as f:
        assert json.load(f)["hparams"]["batch_size"]["source"] == "--batch-size"


def test_without_any_tuned_result_the_trainer_trains_on_the_config(pipeline_run):
    """The shared run's resolver found no HyperParameters in a fresh ML Metadata: the config's values."""
    config, summary = pipeline_run
    assert {c.node_id: c.state for c in summary.components}["latest_hyperparameters_resolver"] == "COMPLETE"
    used = _hparams(config, summary)
    assert {origin["source"] for origin in used.values()} <= {"default", "config"}
    assert used["epochs"] == {"value": SMALL_RUN["epochs"], "source": "config"}
