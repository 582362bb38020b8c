"""The Tuner's search (components/training/tuner.py) without training: its space, its seeded order
(the first trial being the config's values), and its refusal to read the test split."""
import types

import pytest

from components.training import tuner as tuner_module
from components.training.hparams import HParams


def _first_values(tmp_path, start, trials=4, fixed=()):
    tuner = tuner_module.DigitsTuner(start, max_trials=trials, fixed=fixed, directory=str(tmp_path),
                                     project_name="t", overwrite=True)
    oracle, drawn = tuner.oracle, []
    for n in range(trials):
        trial = oracle.create_trial(f"tuner{n}")
        drawn.append(dict(trial.hyperparameters.values))
        oracle.update_trial(trial.trial_id, {"val_accuracy": 0.5})
        oracle.end_trial(trial)
    return drawn


def test_the_space_is_the_training_and_epochs_are_capped_by_the_config():
    space = tuner_module.search_space(HParams(epochs=9, learning_rate=0.0007))
    assert {hp.name for hp in space.space} == {"learning_rate", "lr_schedule", "batch_size", "augment_shift", "epochs",
                                               "network"}
    assert space.get("epochs") == 9
    assert space.get("network") == "mlp 128,128"  # recorded, not searched: the result is for this network
    (rate,) = [hp for hp in space.space if hp.name == "learning_rate"]
    assert 0.0007 in rate.values and rate.default == 0.0007  # the config's own value is a candidate


def test_a_field_set_explicitly_is_not_searched():
    space = tuner_module.search_space(HParams(), fixed=("batch_size",))
    assert "batch_size" not in {hp.name for hp in space.space}


def test_the_search_is_seeded_and_starts_from_the_config(tmp_path):
    start = HParams(seed=5)
    first = _first_values(tmp_path / "a", start)
    assert first == _first_values(tmp_path / "b", start)  # the same seed: the same trials
    assert first != _first_values(tmp_path / "c", HParams(seed=6))
    assert first[0] == {"learning_rate": start.learning_rate, "lr_schedule": start.lr_schedule,
                        "batch_size": start.batch_size, "augment_shift": start.augment_shift, "epochs": start.epochs,
                        "network": "mlp 128,128"}
    assert len({tuple(sorted(values.items())) for values in first}) == len(first)  # no trial repeated


@pytest.mark.parametrize("train, evaluation", [
    (["/x/Split-train/*"], ["/x/Split-test/*"]),
    (["/x/Split-train/*", "/x/Split-test/*"], ["/x/Split-eval/*"]),
    (["/x/Split-train/*", "/x/Split-eval/*"], ["/x/Split-eval/*"]),
])
def test_tuner_fn_refuses_the_test_split_and_unheld_out_eval(train, evaluation):
    fn_args = types.SimpleNamespace(train_files=train, eval_files=evaluation, custom_config={})
    with pytest.raises(ValueError, match="never reads the test split|needs eval held out"):
        tuner_module.tuner_fn(fn_args)
